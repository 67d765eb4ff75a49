/*
 * source.c - the bytes under the parsers: an input opened as a regular
 * file (to be mapped and read with pread, which never faults) or as a
 * stream (to be spooled into an anonymous file), what kind of file it
 * is, and the pages of a mapped input given back once read.  A stream
 * can also be spooled by a thread while its first tensors are used.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "reader_private.h"

/* The first 6 bytes of LONG1 0x1950a86a20f9469cfc6c, torch's magic
 * number, which the legacy format pickles first. */
static const unsigned char legacy_magic[] = {
	0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46
};

#define READS	"these tools read safetensors and PyTorch .bin " \
		"checkpoints, or a directory of them"

/*
 * Text: no byte but printable ASCII, white space and well-formed UTF-8
 * (a sequence cut at the end of the sample counts).  No safetensors
 * file starts so: its header length would be over 100 MB.
 */
static int
is_text(const unsigned char *p, size_t len)
{
	size_t i = 0, k, n;

	while (i < len) {
		if (p[i] >= 0x20 && p[i] < 0x7f) {
			i++;
			continue;
		}
		if (p[i] == '\t' || p[i] == '\n' || p[i] == '\r' ||
		    p[i] == '\f') {
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf)
			n = 1;
		else if (p[i] >= 0xe0 && p[i] <= 0xef)
			n = 2;
		else if (p[i] >= 0xf0 && p[i] <= 0xf4)
			n = 3;
		else
			return 0;
		for (k = 1; k <= n && i + k < len; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
		i += n + 1;
	}
	return 1;
}

/* What text it is: "a JSON file", "a YAML file" or "a text file". */
static const char *
text_kind(const unsigned char *p, size_t len)
{
	size_t i = 0, j;

	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	for (;;) {
		while (i < len && (p[i] == ' ' || p[i] == '\t' ||
		    p[i] == '\n' || p[i] == '\r' || p[i] == '\f'))
			i++;
		if (i < len && p[i] == '#') {	/* a YAML comment */
			while (i < len && p[i] != '\n')
				i++;
			continue;
		}
		break;
	}
	if (i < len && (p[i] == '{' || p[i] == '['))
		return "a JSON file";
	if (len - i >= 3 && memcmp(p + i, "---", 3) == 0)
		return "a YAML file";
	/* key: value */
	for (j = i; j < len && (p[j] == '_' || p[j] == '-' || p[j] == '.' ||
	    (p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z') ||
	    (p[j] >= '0' && p[j] <= '9')); j++)
		;
	if (j > i && j < len && p[j] == ':' &&
	    (j + 1 == len || p[j + 1] == ' ' || p[j + 1] == '\n' ||
	    p[j + 1] == '\r'))
		return "a YAML file";
	return "a text file";
}

int
peftio_sniff(const void *buf, size_t len, const char *label,
    struct peftio_error *err)
{
	const unsigned char *p = buf;

	/* A member first, as torch checks; or the end record of an empty
	 * archive, which no safetensors file can start with (its header
	 * would be over 100 MB), so that it is reported as what it is. */
	if (len >= 4 && (memcmp(p, "PK\3\4", 4) == 0 ||
	    memcmp(p, "PK\5\6", 4) == 0))
		return 1;
	if (len >= 8 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5 &&
	    memcmp(p + 2, legacy_magic, sizeof(legacy_magic)) == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: the legacy PyTorch format (torch.save before 1.6, or "
		    "with _use_new_zipfile_serialization=False) is not "
		    "supported: save it again with a current torch.save, or "
		    "as safetensors", label);
	if (len >= 8 && memcmp(p, "PYTORCH1", 8) == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: an archive of PyTorch's preview release (PYTORCH1) "
		    "is not supported", label);
	if (len >= 4 && memcmp(p, "GGUF", 4) == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: a GGUF file: " READS, label);
	/* Shorter than a length prefix: "too small" says more. */
	if (len >= 8 && is_text(p, len))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s, not a checkpoint: " READS, label,
		    text_kind(p, len));
	return 0;
}

void
peftio_drop_pages(const void *p, uint64_t n)
{
	uintptr_t a, b;
	long page;

	if (n == 0 || n > UINTPTR_MAX - (uintptr_t)p ||
	    (page = sysconf(_SC_PAGESIZE)) <= 0)
		return;
	a = (uintptr_t)p;
	b = a + (uintptr_t)n;
	a = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
	b &= ~((uintptr_t)page - 1);
	if (a < b)
		(void)madvise((void *)a, b - a, MADV_DONTNEED);
}

int
peftio_src_open(const char *path, const char *label, int *fdp, int *regular,
    uint64_t *size, struct peftio_error *err)
{
	struct stat sb;
	int fd, rc, is_stdin = strcmp(path, "-") == 0;

	if (is_stdin)
		fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	else
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return peftio_error_sys(err, "%s", label);
	if (fstat(fd, &sb) != 0)
		rc = peftio_error_sys(err, "%s", label);
	else if (S_ISDIR(sb.st_mode))
		rc = peftio_error_set(err, PEFTIO_EINVAL, "%s: is a directory",
		    label);
	else {
		*regular = S_ISREG(sb.st_mode) &&
		    (!is_stdin || lseek(fd, 0, SEEK_CUR) == 0);
		*size = *regular ? (uint64_t)sb.st_size : 0;
		*fdp = fd;
		return 0;
	}
	close(fd);
	return rc;
}

int
peftio_src_pread(int fd, void *buf, size_t len, uint64_t off)
{
	unsigned char *p = buf;
	ssize_t r;

	while (len > 0) {
		r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return 1;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

void *
peftio_src_map(int fd, uint64_t off, size_t len)
{
	void *p;

	p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, (off_t)off);
	return p == MAP_FAILED ? NULL : p;
}

int
peftio_src_spool(int fd, int sp, unsigned char *buf, size_t len,
    uint64_t max, uint64_t *got)
{
	long long r;
	size_t want;

	for (*got = 0; *got < max; *got += (uint64_t)r) {
		want = max - *got < len ? (size_t)(max - *got) : len;
		if ((r = peftio_read_all(fd, buf, want)) < 0)
			return -1;
		if (peftio_write_all(sp, buf, (size_t)r) != 0)
			return -2;
		if ((size_t)r < want) {
			*got += (uint64_t)r;
			break;
		}
		peftio_read_progress(*got + (uint64_t)r,
		    max == UINT64_MAX ? 0 : max, "standard input");
	}
	peftio_read_progress(*got, *got, NULL);
	return 0;
}

/* ------------------------------------------------------------------ */
/* A stream spooled in the background                                  */

#define SPOOL_STEP	(1u << 20)	/* bytes read at most at a time */
#define PIPE_WANT	(1 << 20)	/* pipe buffer asked for */

struct peftio_spool {
	pthread_t	 tid;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		 in, out;
	int		 wake[2];	/* written to stop the thread */
	uint64_t	 len, have;	/* bytes expected, bytes spooled */
	int		 state;		/* 0 copying, 1 done, -1 failed */
	int		 started;	/* the thread runs */
	int		 splice;	/* splice(2) has not been refused */
	char		*label;
	struct peftio_error err;
};

/* One read of at most n bytes: > 0, 0 at the end, -1 with errno, -2
 * when told to stop.  With buf NULL, the bytes go from the input
 * straight to the spool at off (splice(2): no copy through this
 * process); -1 with EINVAL when the input or the spool cannot. */
static ssize_t
spool_read(struct peftio_spool *s, void *buf, size_t n, uint64_t off)
{
	struct pollfd pf[2];
	loff_t o = (loff_t)off;
	ssize_t r;

	for (;;) {
		pf[0].fd = s->in;
		pf[0].events = POLLIN;
		pf[1].fd = s->wake[0];
		pf[1].events = POLLIN;
		pf[0].revents = pf[1].revents = 0;
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (pf[1].revents != 0)
			return -2;
		if (buf == NULL)
			r = splice(s->in, NULL, s->out, &o, n, SPLICE_F_MOVE);
		else
			r = read(s->in, buf, n);
		if (r >= 0 || errno != EINTR)
			return r;
	}
}

static void
spool_end(struct peftio_spool *s, int state)
{
	pthread_mutex_lock(&s->mu);
	s->state = state;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void *
spool_main(void *arg)
{
	struct peftio_spool *s = arg;
	unsigned char *buf;
	uint64_t have = 0;
	size_t want;
	ssize_t r;

	if ((buf = malloc(SPOOL_STEP)) == NULL) {
		peftio_error_set(&s->err, PEFTIO_ENOMEM, "%s: out of memory",
		    s->label);
		spool_end(s, -1);
		return NULL;
	}
	while (have < s->len) {
		want = (size_t)PEFTIO_MIN((uint64_t)SPOOL_STEP, s->len - have);
		/* Refused at once: not from a pipe, or not to this file. */
		if (s->splice && (r = spool_read(s, NULL, want, have)) == -1 &&
		    errno == EINVAL && have == 0)
			s->splice = 0;
		if (!s->splice)
			r = spool_read(s, buf, want, 0);
		if (r == -2)
			goto stopped;
		if (r < 0) {
			peftio_error_sys(&s->err, "%s: read error", s->label);
			goto failed;
		}
		if (r == 0) {
			peftio_error_set(&s->err, PEFTIO_EFORMAT,
			    "%s: input ended after %" PRIu64 " of %" PRIu64
			    " data bytes (truncated)", s->label, have, s->len);
			goto failed;
		}
		if (!s->splice && peftio_pwrite_all(s->out, buf, (size_t)r,
		    have) != 0) {
			peftio_error_sys(&s->err, "%s: spool file", s->label);
			goto failed;
		}
		have += (uint64_t)r;
		pthread_mutex_lock(&s->mu);
		s->have = have;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	}
	if ((r = spool_read(s, buf, 1, 0)) == -2)
		goto stopped;
	if (r < 0) {
		peftio_error_sys(&s->err, "%s: read error", s->label);
		goto failed;
	}
	if (r > 0) {
		peftio_error_set(&s->err, PEFTIO_EFORMAT,
		    "%s: bytes after the last tensor", s->label);
		goto failed;
	}
	free(buf);
	spool_end(s, 1);
	return NULL;
stopped:
	peftio_error_set(&s->err, PEFTIO_EIO, "%s: reading stopped",
	    s->label);
failed:
	free(buf);
	spool_end(s, -1);
	return NULL;
}

int
peftio_spool_start(struct peftio_spool **out, int in, int sp, uint64_t len,
    const char *label, struct peftio_error *err)
{
	struct peftio_spool *s;
	sigset_t all, old;
	int rc;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (s->label = strdup(label)) == NULL) {
		free(s);
		close(in);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", label);
	}
	s->in = in;
	s->out = sp;
	s->len = len;
	s->splice = 1;
	if (pipe2(s->wake, O_CLOEXEC) != 0) {
		rc = peftio_error_sys(err, "%s", label);
		close(in);
		free(s->label);
		free(s);
		return rc;
	}
#ifdef F_SETPIPE_SZ
	/* Fewer wake-ups of the writer and of this thread. */
	(void)fcntl(in, F_SETPIPE_SZ, PIPE_WANT);
#endif
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	/* Signals are for the caller's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&s->tid, NULL, spool_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		rc = peftio_error_sys(err, "%s: cannot start a thread", label);
		peftio_spool_free(s);
		return rc;
	}
	s->started = 1;
	*out = s;
	return 0;
}

int
peftio_spool_wait(struct peftio_spool *s, uint64_t end, int whole,
    struct peftio_error *err)
{
	int rc = 0;

	pthread_mutex_lock(&s->mu);
	while (s->state == 0 && (whole || s->have < end))
		pthread_cond_wait(&s->cv, &s->mu);
	if (whole ? s->state != 1 : s->have < end && s->state != 1) {
		*err = s->err;
		rc = err->code;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void
peftio_spool_free(struct peftio_spool *s)
{
	ssize_t r;

	if (s == NULL)
		return;
	if (s->started) {
		r = write(s->wake[1], "", 1);
		(void)r;
		pthread_join(s->tid, NULL);
	}
	close(s->wake[0]);
	close(s->wake[1]);
	close(s->in);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s->label);
	free(s);
}
