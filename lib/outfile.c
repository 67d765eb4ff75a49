/*
 * outfile.c - atomic output files (directories: outdir.c).
 *
 * A file is written under a temporary name beside its destination
 * (DIR/.BASENAME.tmp.XXXXXX), then fchmod'ed, fsync'ed, closed and
 * renamed into place, and the directory is fsync'ed.  Without
 * PEFTIO_W_FORCE the rename never replaces a file (RENAME_NOREPLACE, or
 * link() and unlink()).  A directory is built the same way and swapped
 * into place.
 *
 * Every temporary path is recorded in a fixed table that
 * peftio_cleanup_temps() walks from a signal handler.  A file committed
 * inside a temporary directory stays in the table (as a "child") until
 * the directory is committed or removed, so that a signal at any moment
 * leaves neither the file nor the directory behind.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "outfile_private.h"

#define NSLOTS		1024
#define COPY_BUF	(4u << 20)
#define TMP_BASE_MAX	200	/* base name bytes kept in a temp name */

enum slot_kind {
	SLOT_FILE = 0,		/* temporary file, owned by an outfile */
	SLOT_DIR = 1,		/* temporary directory, of an outdir */
	SLOT_CHILD = 2		/* file committed inside a temp dir */
};

struct slot {
	_Atomic(char *)	path;
	atomic_int	kind;
};

static struct slot slots[NSLOTS];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ */
/* Full-length I/O                                                     */
/* ------------------------------------------------------------------ */

int
peftio_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
peftio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	uint64_t end;
	ssize_t n;

	if (PEFTIO_ADD_OVERFLOW(off, (uint64_t)len, &end) ||
	    end > (uint64_t)INT64_MAX) {
		errno = EFBIG;
		return -1;
	}
	while (len > 0) {
		n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

long long
peftio_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, p + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (long long)got;
}

/* ------------------------------------------------------------------ */
/* Direct writes                                                       */
/* ------------------------------------------------------------------ */

/*
 * The whole pages of a large write to a temporary file go through a
 * second descriptor opened with O_DIRECT: they are not copied into the
 * page cache to be written back at fsync (on a virtual machine that
 * copy costs more CPU time than most conversions), and they reach the
 * disk while the next tensor is computed.  A write is split at page
 * boundaries: the partial pages at either end go through the page
 * cache, the whole pages between straight from the caller's buffer
 * when it is aligned, or else through an aligned bounce buffer (one of
 * NBOUNCE of the process, so that two threads writing at once do not
 * wait for each other).  Every byte of a file is written once, so a
 * page is written either whole by one direct write or only through the
 * page cache, never both.  Where O_DIRECT is refused (tmpfs and some
 * network file systems, with EINVAL at open or at the first write) the
 * file is written through the page cache.
 */
#define DIRECT_MIN	(256u << 10)	/* less in whole pages: page cache */
#define BOUNCE_LEN	(16u << 20)
#define NBOUNCE		2

static pthread_mutex_t bounce_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bounce_free = PTHREAD_COND_INITIALIZER;
static void *bounce[NBOUNCE];
static int bounce_taken[NBOUNCE];
static unsigned bounce_users;

static uint64_t
direct_align(void)
{
	long p = sysconf(_SC_PAGESIZE);

	return p < 4096 ? 4096 : (uint64_t)p;
}

static void
direct_open(struct peftio_outfile *of)
{
#ifdef O_DIRECT
	if ((of->dfd = open(of->tmp, O_WRONLY | O_DIRECT | O_CLOEXEC)) < 0)
		return;
	pthread_mutex_lock(&bounce_lock);
	bounce_users++;
	pthread_mutex_unlock(&bounce_lock);
#endif
}

static void
direct_close(struct peftio_outfile *of)
{
	int k;

	if (of->dfd < 0)
		return;
	close(of->dfd);
	of->dfd = -1;
	pthread_mutex_lock(&bounce_lock);
	if (--bounce_users == 0)
		for (k = 0; k < NBOUNCE; k++) {
			free(bounce[k]);
			bounce[k] = NULL;
		}
	pthread_mutex_unlock(&bounce_lock);
}

/* A bounce buffer for this thread's write (NULL: out of memory), which
 * bounce_put() gives back. */
static void *
bounce_get(int *k)
{
	void *p = NULL;

	pthread_mutex_lock(&bounce_lock);
	for (;;) {
		for (*k = 0; *k < NBOUNCE && bounce_taken[*k]; (*k)++)
			;
		if (*k < NBOUNCE)
			break;
		pthread_cond_wait(&bounce_free, &bounce_lock);
	}
	if (bounce[*k] == NULL && posix_memalign(&bounce[*k],
	    (size_t)direct_align(), BOUNCE_LEN) != 0)
		bounce[*k] = NULL;
	if ((p = bounce[*k]) != NULL)
		bounce_taken[*k] = 1;
	pthread_mutex_unlock(&bounce_lock);
	return p;
}

static void
bounce_put(int k)
{
	pthread_mutex_lock(&bounce_lock);
	bounce_taken[k] = 0;
	pthread_cond_signal(&bounce_free);
	pthread_mutex_unlock(&bounce_lock);
}

/* The whole pages [lo, hi) of a write of buf at off; *pos says how far
 * they were written directly, the rest is the caller's.  -1 on an
 * error other than a refusal of O_DIRECT. */
static int
direct_middle(struct peftio_outfile *of, const unsigned char *buf,
    uint64_t off, uint64_t lo, uint64_t hi, uint64_t *pos)
{
	const unsigned char *src;
	unsigned char *b = NULL;
	uint64_t a = direct_align();
	size_t n;
	ssize_t r;
	int k = 0, rc = 0;

	for (*pos = lo; *pos < hi && !__atomic_load_n(&of->dfail,
	    __ATOMIC_RELAXED); *pos += (uint64_t)r) {
		n = (size_t)PEFTIO_MIN(hi - *pos, (uint64_t)BOUNCE_LEN);
		src = buf + (*pos - off);
		if (((uintptr_t)src & (uintptr_t)(a - 1)) != 0) {
			if (b == NULL && (b = bounce_get(&k)) == NULL)
				break;	/* the rest through the page cache */
			memcpy(b, src, n);
			src = b;
		}
		r = pwrite(of->dfd, src, n, (off_t)*pos);
		if (r > 0)
			continue;
		if (r < 0 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r < 0 && (errno == EINVAL || errno == EOPNOTSUPP))
			__atomic_store_n(&of->dfail, 1, __ATOMIC_RELAXED);
		else {
			if (r == 0)
				errno = ENOSPC;
			rc = -1;
		}
		break;
	}
	if (b != NULL)
		bounce_put(k);
	return rc;
}

static int
direct_pwrite(struct peftio_outfile *of, const unsigned char *buf,
    size_t len, uint64_t off)
{
	uint64_t a = direct_align(), lo, hi, end, pos;

	if (PEFTIO_ADD_OVERFLOW(off, (uint64_t)len, &end) ||
	    end > (uint64_t)INT64_MAX - a)
		return peftio_pwrite_all(of->fd, buf, len, off);
	lo = (off + a - 1) & ~(a - 1);
	hi = end & ~(a - 1);
	if (hi <= lo || hi - lo < DIRECT_MIN)
		return peftio_pwrite_all(of->fd, buf, len, off);
	if (peftio_pwrite_all(of->fd, buf, (size_t)(lo - off), off) != 0 ||
	    direct_middle(of, buf, off, lo, hi, &pos) != 0)
		return -1;
	return peftio_pwrite_all(of->fd, buf + (pos - off),
	    (size_t)(end - pos), pos);
}

/* ------------------------------------------------------------------ */
/* The registry of temporary paths                                     */
/* ------------------------------------------------------------------ */

static int
slot_add(const char *path, enum slot_kind kind)
{
	char *copy;
	int i;

	if ((copy = strdup(path)) == NULL)
		return -1;
	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < NSLOTS; i++)
		if (atomic_load(&slots[i].path) == NULL) {
			atomic_store(&slots[i].kind, (int)kind);
			atomic_store(&slots[i].path, copy);
			pthread_mutex_unlock(&reg_lock);
			return i;
		}
	pthread_mutex_unlock(&reg_lock);
	free(copy);
	return -1;
}

int
peftio_temp_register(const char *path, int is_dir)
{
	return slot_add(path, is_dir ? SLOT_DIR : SLOT_FILE);
}

void
peftio_temp_unregister(int slot)
{
	char *p;

	if (slot < 0 || slot >= NSLOTS)
		return;
	pthread_mutex_lock(&reg_lock);
	p = atomic_exchange(&slots[slot].path, NULL);
	pthread_mutex_unlock(&reg_lock);
	free(p);
}

/* Is path inside a registered temporary directory? */
static int
in_temp_dir(const char *path)
{
	const char *d;
	size_t n;
	int i, found = 0;

	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < NSLOTS && !found; i++) {
		d = atomic_load(&slots[i].path);
		if (d == NULL || atomic_load(&slots[i].kind) != SLOT_DIR)
			continue;
		n = strlen(d);
		if (strncmp(path, d, n) == 0 && path[n] == '/')
			found = 1;
	}
	pthread_mutex_unlock(&reg_lock);
	return found;
}

/* Forget the committed children of the temporary directory dir. */
void
peftio_out_drop_children(const char *dir)
{
	size_t n = strlen(dir);
	char *p;
	int i;

	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < NSLOTS; i++) {
		p = atomic_load(&slots[i].path);
		if (p == NULL || atomic_load(&slots[i].kind) != SLOT_CHILD ||
		    strncmp(p, dir, n) != 0 || p[n] != '/')
			continue;
		atomic_store(&slots[i].path, NULL);
		free(p);
	}
	pthread_mutex_unlock(&reg_lock);
}

/*
 * Async-signal-safe: reads the table with atomic loads and calls only
 * unlink() and rmdir().  Files first, then directories, newest first
 * (a nested temporary directory is registered after its parent).
 */
void
peftio_cleanup_temps(void)
{
	char *p;
	int i;

	for (i = 0; i < NSLOTS; i++) {
		p = atomic_load(&slots[i].path);
		if (p != NULL && atomic_load(&slots[i].kind) != SLOT_DIR)
			(void)unlink(p);
	}
	for (i = NSLOTS - 1; i >= 0; i--) {
		p = atomic_load(&slots[i].path);
		if (p != NULL && atomic_load(&slots[i].kind) == SLOT_DIR)
			(void)rmdir(p);
	}
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void
read_umask(mode_t *mask)
{
	char line[128];
	unsigned long v;
	FILE *f;
	mode_t m;

	if ((f = fopen("/proc/self/status", "re")) != NULL) {
		while (fgets(line, sizeof(line), f) != NULL)
			if (sscanf(line, "Umask: %lo", &v) == 1) {
				fclose(f);
				*mask = (mode_t)v & 0777;
				return;
			}
		fclose(f);
	}
	m = umask(022);
	umask(m);
	*mask = m;
}

static mode_t the_umask;

static void
umask_once(void)
{
	read_umask(&the_umask);
}

mode_t
peftio_out_file_mode(mode_t base)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, umask_once);
	return base & ~the_umask;
}

/* Name of dest in messages. */
static const char *
show(const char *dest)
{
	return dest != NULL ? dest : "<stdout>";
}

/*
 * Split path into its directory ("." when there is none) and the
 * temporary name "DIR/.BASE.KIND.XXXXXX".  path must not end in '/'.
 */
char *
peftio_out_temp_name(const char *path, const char *kind)
{
	const char *slash = strrchr(path, '/'), *base;
	size_t dlen, blen, len;
	char *t;

	if (slash == NULL) {
		base = path;
		dlen = 0;
	} else {
		base = slash + 1;
		dlen = (size_t)(slash - path) + 1;	/* keep the slash */
	}
	blen = PEFTIO_MIN(strlen(base), (size_t)TMP_BASE_MAX);
	len = dlen + 1 + blen + 1 + strlen(kind) + 8;
	if ((t = malloc(len)) == NULL)
		return NULL;
	snprintf(t, len, "%.*s.%.*s.%s.XXXXXX", (int)dlen, path, (int)blen,
	    base, kind);
	return t;
}

/* The directory part of path, for fsync; "." when there is none. */
static char *
dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t n;
	char *d;

	if (slash == NULL)
		return strdup(".");
	n = slash == path ? 1 : (size_t)(slash - path);
	if ((d = malloc(n + 1)) == NULL)
		return NULL;
	memcpy(d, path, n);
	d[n] = '\0';
	return d;
}

int
peftio_out_fsync_dir(const char *dir)
{
	int fd, rc, saved;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	/* Some file systems cannot sync a directory; that is not an error. */
	if (rc != 0 && (saved == EINVAL || saved == EROFS))
		rc = 0;
	errno = saved;
	return rc;
}

int
peftio_out_fsync_parent(const char *path)
{
	char *d = dir_of(path);
	int rc;

	if (d == NULL) {
		errno = ENOMEM;
		return -1;
	}
	rc = peftio_out_fsync_dir(d);
	free(d);
	return rc;
}

/* An anonymous temporary file in $TMPDIR or /tmp. */
int
peftio_anon_file(void)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;

	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
#ifdef O_TMPFILE
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
#endif
	if ((size_t)snprintf(path, sizeof(path), "%s/.peftio-spool.XXXXXX",
	    dir) >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
		return -1;
	unlink(path);
	return fd;
}

/* rename() that never replaces an existing to. */
int
peftio_out_rename_noreplace(const char *from, const char *to, int is_dir)
{
	struct stat sb;

#ifdef RENAME_NOREPLACE
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
		return -1;
#endif
	if (!is_dir) {
		if (link(from, to) == 0) {
			(void)unlink(from);
			return 0;
		}
		if (errno == EEXIST)
			return -1;
	}
	/* Neither is supported here: check, then rename (not atomic). */
	if (lstat(to, &sb) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(from, to);
}

/* Copy the spool fd (from offset 0) to out. */
static int
copy_spool(int fd, int out, const char *name, struct peftio_error *err)
{
	char *buf;
	long long n;

	if (lseek(fd, 0, SEEK_SET) != 0)
		return peftio_error_sys(err, "%s: spool file", name);
	if ((buf = malloc(COPY_BUF)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    name);
	for (;;) {
		n = peftio_read_all(fd, buf, COPY_BUF);
		if (n < 0) {
			free(buf);
			return peftio_error_sys(err, "%s: spool file", name);
		}
		if (n == 0)
			break;
		if (peftio_write_all(out, buf, (size_t)n) != 0) {
			free(buf);
			return peftio_error_sys(err, "%s: write error", name);
		}
	}
	free(buf);
	return 0;
}

void
peftio_out_block_signals(sigset_t *old)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

void
peftio_out_restore_signals(const sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) != 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) != 0 && errno != ENOENT ? -1 : 0;
}

int
peftio_out_rmtree(const char *path)
{
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ */
/* Output files                                                        */
/* ------------------------------------------------------------------ */

static int
open_stdout(struct peftio_outfile *of, struct peftio_error *err)
{
	struct stat sb;
	int fl;

	if (fstat(STDOUT_FILENO, &sb) != 0)
		return peftio_error_sys(err, "<stdout>");
	fl = fcntl(STDOUT_FILENO, F_GETFL);
	/* A regular file at offset 0 takes pwrite() directly. */
	if (S_ISREG(sb.st_mode) && fl >= 0 && !(fl & O_APPEND) &&
	    lseek(STDOUT_FILENO, 0, SEEK_CUR) == 0) {
		of->fd = STDOUT_FILENO;
		return 0;
	}
	if ((of->fd = peftio_anon_file()) < 0)
		return peftio_error_sys(err,
		    "<stdout>: cannot create a spool file");
	of->spool = 1;
	return 0;
}

int
peftio_outfile_open(struct peftio_outfile *of, const char *dest,
    unsigned flags, struct peftio_error *err)
{
	struct stat sb;
	sigset_t old;
	size_t len;
	int fd, rc;

	of->fd = -1;
	of->dfd = -1;
	of->dfail = 0;
	of->dest = NULL;
	of->tmp = NULL;
	of->spool = 0;
	of->slot = -1;
	of->flags = flags;
	if (dest == NULL || *dest == '\0')
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "empty output file name");
	if (strcmp(dest, "-") == 0)
		return open_stdout(of, err);
	len = strlen(dest);
	if (dest[len - 1] == '/' ||
	    (stat(dest, &sb) == 0 && S_ISDIR(sb.st_mode)))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: is a directory", dest);
	if ((of->dest = strdup(dest)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", dest);
	if (stat(dest, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		/* A device or a FIFO: spooled, written in place at commit. */
		if ((of->fd = peftio_anon_file()) < 0) {
			rc = peftio_error_sys(err,
			    "%s: cannot create a spool file", dest);
			goto fail;
		}
		of->spool = 1;
		return 0;
	}
	if (lstat(dest, &sb) == 0) {
		if (!(flags & PEFTIO_W_FORCE)) {
			rc = peftio_error_set(err, PEFTIO_EEXIST,
			    "%s: already exists (use -f to overwrite)", dest);
			goto fail;
		}
	} else if (errno != ENOENT) {
		rc = peftio_error_sys(err, "%s", dest);
		goto fail;
	}
	if ((of->tmp = peftio_out_temp_name(dest, "tmp")) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    dest);
		goto fail;
	}
	/* No signal between the creation and the registration. */
	peftio_out_block_signals(&old);
	fd = mkostemp(of->tmp, O_CLOEXEC);
	if (fd >= 0)
		of->slot = peftio_temp_register(of->tmp, 0);
	peftio_out_restore_signals(&old);
	if (fd < 0) {
		rc = peftio_error_sys(err,
		    "%s: cannot create temporary file %s", dest, of->tmp);
		free(of->tmp);
		of->tmp = NULL;
		goto fail;
	}
	of->fd = fd;
	direct_open(of);
	return 0;
fail:
	peftio_outfile_abort(of);
	return rc;
}

int
peftio_outfile_pwrite(struct peftio_outfile *of, const void *buf,
    size_t len, uint64_t off, struct peftio_error *err)
{
	if (of->fd < 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: output is not open", show(of->dest));
	if ((of->dfd >= 0 ? direct_pwrite(of, buf, len, off) :
	    peftio_pwrite_all(of->fd, buf, len, off)) != 0)
		return peftio_error_sys(err, "%s: write error", show(of->dest));
	return 0;
}

static int
commit_stdout(struct peftio_outfile *of, struct peftio_error *err)
{
	int rc = 0;

	if (of->spool) {
		rc = copy_spool(of->fd, STDOUT_FILENO, "<stdout>", err);
		close(of->fd);
	} else {
		if (!(of->flags & PEFTIO_W_NOSYNC) &&
		    fsync(STDOUT_FILENO) != 0 && errno != EINVAL)
			rc = peftio_error_sys(err, "<stdout>: fsync");
		else
			(void)lseek(STDOUT_FILENO, 0, SEEK_END);
	}
	of->fd = -1;
	return rc;
}

static int
commit_device(struct peftio_outfile *of, struct peftio_error *err)
{
	int out, rc;

	if ((out = open(of->dest, O_WRONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		rc = peftio_error_sys(err, "%s", of->dest);
	} else {
		rc = copy_spool(of->fd, out, of->dest, err);
		if (close(out) != 0 && rc == 0)
			rc = peftio_error_sys(err, "%s: close", of->dest);
	}
	close(of->fd);
	of->fd = -1;
	return rc;
}

int
peftio_outfile_commit(struct peftio_outfile *of, struct peftio_error *err)
{
	int rc, fd, child = -1;

	if (of->fd < 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: output is not open", show(of->dest));
	if (of->dest == NULL) {
		rc = commit_stdout(of, err);
		goto done;
	}
	if (of->tmp == NULL) {
		rc = commit_device(of, err);
		goto done;
	}
	direct_close(of);
	fd = of->fd;
	of->fd = -1;
	if (fchmod(fd, peftio_out_file_mode(0666)) != 0) {
		rc = peftio_error_sys(err, "%s: chmod", of->dest);
		close(fd);
		goto done;
	}
	if (!(of->flags & PEFTIO_W_NOSYNC) && fsync(fd) != 0) {
		rc = peftio_error_sys(err, "%s: fsync", of->dest);
		close(fd);
		goto done;
	}
	if (close(fd) != 0) {
		rc = peftio_error_sys(err, "%s: close", of->dest);
		goto done;
	}
	/*
	 * A file inside a temporary directory stays registered under its
	 * final name; the name is added before the rename so that there
	 * is no moment when neither name is known.
	 */
	if (in_temp_dir(of->dest))
		child = slot_add(of->dest, SLOT_CHILD);
	if (of->flags & PEFTIO_W_FORCE)
		rc = rename(of->tmp, of->dest);
	else
		rc = peftio_out_rename_noreplace(of->tmp, of->dest, 0);
	if (rc != 0) {
		if (errno == EEXIST)
			rc = peftio_error_set(err, PEFTIO_EEXIST,
			    "%s: already exists (use -f to overwrite)",
			    of->dest);
		else
			rc = peftio_error_sys(err, "%s: cannot rename %s",
			    of->dest, of->tmp);
		peftio_temp_unregister(child);
		goto done;
	}
	free(of->tmp);		/* renamed: nothing to remove any more */
	of->tmp = NULL;
	if (!(of->flags & PEFTIO_W_NOSYNC) && peftio_out_fsync_parent(of->dest) != 0)
		rc = peftio_error_sys(err, "%s: fsync of the directory",
		    of->dest);
done:
	peftio_outfile_abort(of);
	return rc;
}

void
peftio_outfile_abort(struct peftio_outfile *of)
{
	if (of == NULL)
		return;
	direct_close(of);
	if (of->fd >= 0) {
		if (of->dest == NULL && !of->spool) {
			/* Direct to stdout: drop what was written. */
			(void)ftruncate(of->fd, 0);
		} else
			close(of->fd);
		of->fd = -1;
	}
	if (of->tmp != NULL) {
		(void)unlink(of->tmp);
		free(of->tmp);
		of->tmp = NULL;
	}
	peftio_temp_unregister(of->slot);
	of->slot = -1;
	free(of->dest);
	of->dest = NULL;
}
