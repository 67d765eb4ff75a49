/*
 * check_outfile.c - atomic output files and directories, and the
 * registry of temporary paths.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

#define W_TEST	PEFTIO_W_NOSYNC

static int
dir_entries(const char *dir)
{
	struct dirent *e;
	DIR *d;
	int n = 0;

	d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s", dir);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int
exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

static void
expect_file(const char *path, const char *content)
{
	size_t len;
	char *f;

	f = tu_read_file(path, &len);
	ck_assert_uint_eq(len, strlen(content));
	ck_assert_mem_eq(f, content, len);
	free(f);
}

static mode_t
current_umask(void)
{
	mode_t m = umask(022);

	umask(m);
	return m;
}

START_TEST(test_write_read)
{
	struct peftio_error err;
	const char *dir = tu_tmpdir();
	struct stat sb;
	size_t len;
	char *buf;

	ck_assert_int_eq(peftio_write_file(tu_path("f"), "hello", 5, W_TEST,
	    &err), 0);
	ck_assert_int_eq(dir_entries(dir), 1);
	ck_assert_int_eq(stat(tu_path("f"), &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 0777, 0666 & ~current_umask());
	ck_assert_int_eq(peftio_read_file(tu_path("f"), 100, &buf, &len, &err),
	    0);
	ck_assert_uint_eq(len, 5);
	ck_assert_str_eq(buf, "hello");
	free(buf);
	ck_assert_int_eq(peftio_read_file(tu_path("f"), 5, &buf, &len, &err),
	    0);
	free(buf);
	ck_assert_int_eq(peftio_read_file(tu_path("f"), 4, &buf, &len, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_null(buf);
	ck_assert_ptr_nonnull(strstr(err.msg, "larger than 4 bytes"));
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("f")));
	ck_assert_int_eq(peftio_read_file(tu_path("f"), 0, &buf, NULL, &err),
	    PEFTIO_EFORMAT);

	/* Empty, and larger than the first read. */
	ck_assert_int_eq(peftio_write_file(tu_path("e"), "", 0, W_TEST, &err),
	    0);
	ck_assert_int_eq(peftio_read_file(tu_path("e"), 0, &buf, &len, &err),
	    0);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(buf, "");
	free(buf);
	buf = malloc(300001);
	memset(buf, 'x', 300000);
	ck_assert_int_eq(peftio_write_file(tu_path("big"), buf, 300000,
	    W_TEST, &err), 0);
	free(buf);
	ck_assert_int_eq(peftio_read_file(tu_path("big"), 300000, &buf, &len,
	    &err), 0);
	ck_assert_uint_eq(len, 300000);
	ck_assert_uint_eq(strlen(buf), 300000);
	free(buf);
	ck_assert_int_eq(peftio_read_file(tu_path("big"), 299999, &buf, &len,
	    &err), PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_read_file(tu_path("big"), (size_t)-1, &buf,
	    &len, &err), 0);
	free(buf);

	ck_assert_int_eq(peftio_read_file(tu_path("none"), 10, &buf, &len,
	    &err), PEFTIO_EIO);
	ck_assert_int_eq(err.sys_errno, ENOENT);
	ck_assert_int_eq(peftio_read_file(dir, 10, &buf, &len, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));
}
END_TEST

START_TEST(test_exists_force)
{
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	tu_write_file(tu_path("f"), "old", 3);
	ck_assert_int_eq(peftio_write_file(tu_path("f"), "new", 3, W_TEST,
	    &err), PEFTIO_EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg,
	    "already exists (use -f to overwrite)"));
	expect_file(tu_path("f"), "old");
	ck_assert_int_eq(peftio_write_file(tu_path("f"), "newer", 5,
	    W_TEST | PEFTIO_W_FORCE, &err), 0);
	expect_file(tu_path("f"), "newer");
	/* A dangling symbolic link counts as existing. */
	ck_assert_int_eq(symlink("nowhere", tu_path("l")), 0);
	ck_assert_int_eq(peftio_write_file(tu_path("l"), "x", 1, W_TEST, &err),
	    PEFTIO_EEXIST);
	ck_assert_int_eq(dir_entries(dir), 2);
	/* Full synchronisation on the normal path. */
	ck_assert_int_eq(peftio_write_file(tu_path("s"), "sync", 4, 0, &err),
	    0);
	expect_file(tu_path("s"), "sync");
}
END_TEST

START_TEST(test_bad_dest)
{
	struct peftio_outfile of;
	struct peftio_error err;
	const char *dir = tu_tmpdir();
	char path[600];

	ck_assert_int_eq(peftio_write_file(dir, "x", 1, PEFTIO_W_FORCE, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));
	ck_assert_int_eq(peftio_write_file(tu_path("f/"), "x", 1, 0, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_write_file(tu_path("no/f"), "x", 1, 0, &err),
	    PEFTIO_EIO);
	ck_assert_int_eq(err.sys_errno, ENOENT);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("no/f")));
	ck_assert_int_eq(peftio_write_file("", "x", 1, 0, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(dir_entries(dir), 0);

	/* A long base name still gets a valid temporary name. */
	snprintf(path, sizeof(path), "%s/", dir);
	memset(path + strlen(path), 'n', 250);
	path[strlen(dir) + 1 + 250] = '\0';
	ck_assert_int_eq(peftio_outfile_open(&of, path, W_TEST, &err), 0);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "ab", 2, 0, &err), 0);
	ck_assert_int_eq(peftio_outfile_commit(&of, &err), 0);
	expect_file(path, "ab");
	ck_assert_int_eq(dir_entries(dir), 1);
}
END_TEST

START_TEST(test_outfile_abort)
{
	struct peftio_outfile of;
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(peftio_outfile_open(&of, tu_path("f"), W_TEST, &err),
	    0);
	ck_assert_ptr_nonnull(of.tmp);
	ck_assert_int_ge(of.slot, 0);
	ck_assert_int_eq(dir_entries(dir), 1);
	ck_assert_int_eq(strncmp(of.tmp, tu_path(".f.tmp."),
	    strlen(tu_path(".f.tmp."))), 0);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "xyz", 3, 10, &err), 0);
	peftio_outfile_abort(&of);
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_outfile_abort(&of);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "xyz", 3, 0, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_outfile_commit(&of, &err), PEFTIO_EINVAL);
	peftio_outfile_abort(NULL);

	/* Sparse writes in any order; commit twice. */
	ck_assert_int_eq(peftio_outfile_open(&of, tu_path("g"), W_TEST, &err),
	    0);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "cd", 2, 2, &err), 0);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "ab", 2, 0, &err), 0);
	ck_assert_int_eq(peftio_outfile_commit(&of, &err), 0);
	ck_assert_int_eq(peftio_outfile_commit(&of, &err), PEFTIO_EINVAL);
	peftio_outfile_abort(&of);
	expect_file(tu_path("g"), "abcd");
	ck_assert_int_eq(dir_entries(dir), 1);
}
END_TEST

/* What a signal handler does: only the registered temporaries go. */
/*
 * A file of odd size written in pieces out of order, large ones from
 * aligned and from unaligned buffers at unaligned offsets, one small
 * piece inside a page shared with its neighbours: the bytes read back
 * are the bytes written, whether the whole pages go through O_DIRECT
 * or (where the file system refuses it) through the page cache.
 */
static void
write_pieces(const char *path, int refused)
{
	static const size_t cut[] = {	/* piece boundaries */
		0, 100, 4096 + 7, 1200000, 1200000 + 4096, 1200000 + 4200,
		3 * 1048576 + 1, 5 * 1048576 + 13
	};
	static const int order[] = { 3, 1, 5, 0, 6, 2, 4 };
	struct peftio_outfile of;
	struct peftio_error err;
	size_t n = cut[7], i, k, len;
	unsigned char *want, *src;
	void *aligned;
	char *got;
	int fd;

	want = malloc(n);
	ck_assert_ptr_nonnull(want);
	for (i = 0; i < n; i++)
		want[i] = (unsigned char)(i * 2654435761u >> 13);
	ck_assert_int_eq(posix_memalign(&aligned, 4096, n), 0);
	memcpy(aligned, want, n);
	ck_assert_int_eq(peftio_outfile_open(&of, path, W_TEST, &err), 0);
	/* Where O_DIRECT is accepted, the writer uses it. */
	fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(path);
		ck_assert_int_ge(of.dfd, 0);
	}
	/* What a refusal at the first direct write leaves. */
	if (refused)
		of.dfail = 1;
	for (k = 0; k < 7; k++) {
		i = (size_t)order[k];
		/* Odd pieces from a page-aligned copy, even ones from a
		 * buffer one byte off any alignment. */
		src = i % 2 ? (unsigned char *)aligned + cut[i] : want + cut[i];
		len = cut[i + 1] - cut[i];
		ck_assert_int_eq(peftio_outfile_pwrite(&of, src, len, cut[i],
		    &err), 0);
	}
	ck_assert_int_eq(peftio_outfile_commit(&of, &err), 0);
	got = tu_read_file(path, &len);
	ck_assert_uint_eq(len, n);
	ck_assert_mem_eq(got, want, n);
	free(got);
	free(aligned);
	free(want);
}

START_TEST(test_direct_pieces)
{
	struct stat sb;
	char path[64];

	tu_tmpdir();
	write_pieces(tu_path("pieces"), 0);
	write_pieces(tu_path("refused"), 1);
	/* tmpfs (which refuses O_DIRECT at open before Linux 6.6). */
	if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) &&
	    access("/dev/shm", W_OK) == 0) {
		snprintf(path, sizeof(path), "/dev/shm/peftio-unit.%ld",
		    (long)getpid());
		write_pieces(path, 0);
		unlink(path);
	}
}
END_TEST

START_TEST(test_cleanup_temps)
{
	struct peftio_outfile a, b;
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	tu_write_file(tu_path("keep"), "k", 1);
	ck_assert_int_eq(peftio_outfile_open(&a, tu_path("a"), W_TEST, &err),
	    0);
	ck_assert_int_eq(peftio_outfile_open(&b, tu_path("keep"),
	    W_TEST | PEFTIO_W_FORCE, &err), 0);
	ck_assert_int_eq(peftio_outfile_pwrite(&a, "1", 1, 0, &err), 0);
	ck_assert_int_eq(dir_entries(dir), 3);
	peftio_cleanup_temps();
	ck_assert_int_eq(dir_entries(dir), 1);
	expect_file(tu_path("keep"), "k");
	peftio_outfile_abort(&a);
	peftio_outfile_abort(&b);
	peftio_cleanup_temps();
	ck_assert_int_eq(dir_entries(dir), 1);
}
END_TEST

/* The registry itself: files, then directories, newest first. */
START_TEST(test_registry)
{
	const char *dir = tu_tmpdir();
	int s1, s2, s3, i, n, slots[2000];

	ck_assert_int_eq(mkdir(tu_path("d"), 0700), 0);
	ck_assert_int_eq(mkdir(tu_path("d/e"), 0700), 0);
	tu_write_file(tu_path("d/e/f"), "", 0);
	s1 = peftio_temp_register(tu_path("d"), 1);
	s2 = peftio_temp_register(tu_path("d/e"), 1);
	s3 = peftio_temp_register(tu_path("d/e/f"), 0);
	ck_assert_int_ge(s1, 0);
	ck_assert_int_ne(s1, s2);
	ck_assert_int_ne(s2, s3);
	peftio_cleanup_temps();
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_temp_unregister(s1);
	peftio_temp_unregister(s2);
	peftio_temp_unregister(s3);
	peftio_temp_unregister(-1);
	peftio_temp_unregister(1 << 20);

	/* A full table refuses, and frees up again. */
	for (n = 0; n < 2000; n++)
		if ((slots[n] = peftio_temp_register(tu_path("x"), 0)) < 0)
			break;
	ck_assert_int_lt(n, 2000);
	ck_assert_int_ge(n, 64);
	for (i = 0; i < n; i++)
		peftio_temp_unregister(slots[i]);
	s1 = peftio_temp_register(tu_path("x"), 0);
	ck_assert_int_ge(s1, 0);
	peftio_temp_unregister(s1);
}
END_TEST

/* Devices and FIFOs are written in place, without -f. */
START_TEST(test_special_dest)
{
	struct peftio_error err;
	char buf[16];
	pid_t pid;
	ssize_t n;
	int fd, status;

	ck_assert_int_eq(peftio_write_file("/dev/null", "abc", 3, W_TEST,
	    &err), 0);
	tu_tmpdir();
	ck_assert_int_eq(mkfifo(tu_path("fifo"), 0600), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		fd = open(tu_path("fifo"), O_RDONLY);
		n = read(fd, buf, sizeof(buf));
		_exit(n == 3 && memcmp(buf, "abc", 3) == 0 ? 0 : 1);
	}
	ck_assert_int_eq(peftio_write_file(tu_path("fifo"), "abc", 3, W_TEST,
	    &err), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

static int
child_write_stdout(void)
{
	struct peftio_error err;

	signal(SIGPIPE, SIG_IGN);
	if (peftio_write_file("-", "to stdout", 9, W_TEST, &err) != 0)
		return strstr(err.msg, "<stdout>: write error") != NULL ? 2 : 1;
	return 0;
}

static int
run_child(int out, int (*fn)(void))
{
	int status;
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(out, STDOUT_FILENO);
		_exit(fn());
	}
	close(out);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

START_TEST(test_stdout)
{
	char buf[64];
	ssize_t n;
	int p[2], fd;

	/* A pipe: spooled, copied at commit. */
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(run_child(p[1], child_write_stdout), 0);
	n = read(p[0], buf, sizeof(buf));
	ck_assert_int_eq(n, 9);
	ck_assert_mem_eq(buf, "to stdout", 9);
	close(p[0]);

	/* A pipe with no reader: an error, not a crash. */
	ck_assert_int_eq(pipe(p), 0);
	close(p[0]);
	ck_assert_int_eq(run_child(p[1], child_write_stdout), 2);

	/* A regular file, and one opened for appending. */
	tu_tmpdir();
	fd = open(tu_path("o"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_eq(run_child(fd, child_write_stdout), 0);
	expect_file(tu_path("o"), "to stdout");
	fd = open(tu_path("o"), O_WRONLY | O_APPEND);
	ck_assert_int_eq(run_child(fd, child_write_stdout), 0);
	expect_file(tu_path("o"), "to stdoutto stdout");
	/* /dev/full */
	fd = open("/dev/full", O_WRONLY);
	if (fd >= 0)
		ck_assert_int_eq(run_child(fd, child_write_stdout), 2);
}
END_TEST

START_TEST(test_read_stdin)
{
	struct peftio_error err;
	size_t len;
	char *buf;
	int fd, saved;

	tu_tmpdir();
	tu_write_file(tu_path("in"), "input", 5);
	fd = open(tu_path("in"), O_RDONLY);
	saved = dup(STDIN_FILENO);
	dup2(fd, STDIN_FILENO);
	close(fd);
	ck_assert_int_eq(peftio_read_file("-", 100, &buf, &len, &err), 0);
	dup2(saved, STDIN_FILENO);
	close(saved);
	ck_assert_str_eq(buf, "input");
	free(buf);
}
END_TEST

START_TEST(test_io_loops)
{
	char buf[100000], back[100000];
	int p[2];
	long long n;
	pid_t pid;
	int status;

	memset(buf, 'q', sizeof(buf));
	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		_exit(peftio_write_all(p[1], buf, sizeof(buf)) == 0 ? 0 : 1);
	}
	close(p[1]);
	n = peftio_read_all(p[0], back, sizeof(back));
	ck_assert_int_eq(n, (long long)sizeof(back));
	ck_assert_int_eq(peftio_read_all(p[0], back, 10), 0);
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_mem_eq(buf, back, sizeof(buf));
	ck_assert_int_eq(peftio_pwrite_all(-1, buf, 1, 0), -1);
	ck_assert_int_eq(peftio_pwrite_all(1, buf, 1, UINT64_MAX), -1);
	ck_assert_int_eq(errno, EFBIG);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Output directories                                                  */
/* ------------------------------------------------------------------ */

static char *
child_path(const struct peftio_outdir *od, const char *name)
{
	static char p[4][1024];
	static int k;
	char *s = p[k++ % 4];

	snprintf(s, sizeof(p[0]), "%s/%s", od->tmp, name);
	return s;
}

START_TEST(test_outdir_commit)
{
	struct peftio_outdir od;
	struct peftio_error err;
	const char *dir = tu_tmpdir();
	struct stat sb;

	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out/"), W_TEST,
	    &err), 0);
	ck_assert_str_eq(od.dest, tu_path("out"));
	ck_assert_int_eq(strncmp(od.tmp, tu_path(".out.tmp."),
	    strlen(tu_path(".out.tmp."))), 0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "a"), "A", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "b"), "B", 1, 0,
	    &err), 0);
	ck_assert_int_eq(dir_entries(od.tmp), 2);
	ck_assert(!exists(tu_path("out")));
	ck_assert_int_eq(peftio_outdir_commit(&od, &err), 0);
	ck_assert_ptr_null(od.tmp);
	ck_assert_int_eq(dir_entries(dir), 1);
	expect_file(tu_path("out/a"), "A");
	expect_file(tu_path("out/b"), "B");
	ck_assert_int_eq(stat(tu_path("out"), &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 0777, 0777 & ~current_umask());
	peftio_outdir_abort(&od);
	expect_file(tu_path("out/a"), "A");
	/* Registry entries of the children are gone. */
	peftio_cleanup_temps();
	expect_file(tu_path("out/a"), "A");

	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"), W_TEST,
	    &err), PEFTIO_EEXIST);
	ck_assert_ptr_null(od.tmp);
	ck_assert_int_eq(peftio_outdir_open(&od, "-", W_TEST, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("x/y"), W_TEST,
	    &err), PEFTIO_EIO);
	ck_assert_int_eq(dir_entries(dir), 1);
	ck_assert_int_eq(peftio_outdir_commit(&od, &err), PEFTIO_EINVAL);
}
END_TEST

START_TEST(test_outdir_abort)
{
	struct peftio_outdir od;
	struct peftio_outfile of;
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"), W_TEST, &err),
	    0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "a"), "A", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(mkdir(child_path(&od, "sub"), 0700), 0);
	tu_write_file(child_path(&od, "sub/x"), "x", 1);
	ck_assert_int_eq(peftio_outfile_open(&of, child_path(&od, "b"), W_TEST,
	    &err), 0);
	peftio_outdir_abort(&od);
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_outfile_abort(&of);
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_outdir_abort(&od);
	peftio_outdir_abort(NULL);
}
END_TEST

START_TEST(test_outdir_replace)
{
	struct peftio_outdir od;
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(mkdir(tu_path("out"), 0755), 0);
	ck_assert_int_eq(mkdir(tu_path("out/sub"), 0755), 0);
	tu_write_file(tu_path("out/old.safetensors"), "o", 1);
	tu_write_file(tu_path("out/sub/x"), "x", 1);
	/* -f replaces only what holds nothing but checkpoint files. */
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"),
	    W_TEST | PEFTIO_W_FORCE, &err), PEFTIO_EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg, "out/sub, which is no "
	    "checkpoint file"));
	unlink(tu_path("out/sub/x"));
	rmdir(tu_path("out/sub"));
	tu_write_file(tu_path("out/notes.tex"), "n", 1);
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"),
	    W_TEST | PEFTIO_W_FORCE, &err), PEFTIO_EEXIST);
	unlink(tu_path("out/notes.tex"));
	tu_write_file(tu_path("out/config.json"), "{}", 2);
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"),
	    W_TEST | PEFTIO_W_FORCE, &err), 0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "new"), "N", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_outdir_commit(&od, &err), 0);
	ck_assert_int_eq(dir_entries(dir), 1);
	ck_assert_int_eq(dir_entries(tu_path("out")), 1);
	expect_file(tu_path("out/new"), "N");

	/* A file is never replaced by a directory, even with -f. */
	tu_write_file(tu_path("file"), "f", 1);
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("file"),
	    W_TEST | PEFTIO_W_FORCE, &err), PEFTIO_EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg, "is not a directory"));
	expect_file(tu_path("file"), "f");
	ck_assert_int_eq(dir_entries(dir), 2);

	/* Nor is a directory that gained a foreign file since open. */
	ck_assert_int_eq(mkdir(tu_path("ck"), 0755), 0);
	tu_write_file(tu_path("ck/config.json"), "{}", 2);
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("ck"),
	    W_TEST | PEFTIO_W_FORCE, &err), 0);
	tu_write_file(tu_path("ck/thesis.tex"), "t", 1);
	ck_assert_int_eq(peftio_outdir_commit(&od, &err), PEFTIO_EEXIST);
	expect_file(tu_path("ck/thesis.tex"), "t");
	unlink(tu_path("ck/thesis.tex"));
	unlink(tu_path("ck/config.json"));
	rmdir(tu_path("ck"));

	/* The destination appears before commit, without -f. */
	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("late"), W_TEST,
	    &err), 0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "a"), "A", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(mkdir(tu_path("late"), 0755), 0);
	ck_assert_int_eq(peftio_outdir_commit(&od, &err), PEFTIO_EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg, "already exists"));
	ck_assert_int_eq(dir_entries(tu_path("late")), 0);
	ck_assert_int_eq(dir_entries(dir), 3);
	ck_assert_int_eq(peftio_ckpt_dir_file("model.safetensors"), 1);
	ck_assert_int_eq(peftio_ckpt_dir_file("LICENSE"), 1);
	ck_assert_int_eq(peftio_ckpt_dir_file(".bashrc"), 0);
	ck_assert_int_eq(peftio_ckpt_dir_file("photo.jpg"), 0);
	ck_assert_int_eq(peftio_ckpt_dir_file("tokenizer.model.v3"), 1);
	ck_assert_int_eq(peftio_ckpt_dir_file("optimizer.pt"), 1);
	ck_assert_int_eq(peftio_ckpt_dir_file(".safetensors"), 0);
	ck_assert_int_eq(peftio_ckpt_dir_file("notes"), 0);
}
END_TEST

/* A signal while a directory is built: nothing is left behind. */
START_TEST(test_outdir_signal)
{
	struct peftio_outdir od;
	struct peftio_outfile of;
	struct peftio_error err;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(peftio_outdir_open(&od, tu_path("out"), W_TEST, &err),
	    0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "a"), "A", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_write_file(child_path(&od, "c"), "C", 1,
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_outfile_open(&of, child_path(&od, "b"), W_TEST,
	    &err), 0);
	ck_assert_int_eq(peftio_outfile_pwrite(&of, "B", 1, 0, &err), 0);
	ck_assert_int_eq(dir_entries(od.tmp), 3);
	peftio_cleanup_temps();
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_outfile_abort(&of);
	peftio_outdir_abort(&od);
	ck_assert_int_eq(dir_entries(dir), 0);
}
END_TEST

/* A real signal handler in a child process. */
static void
on_signal(int sig)
{
	peftio_cleanup_temps();
	signal(sig, SIG_DFL);
	raise(sig);
}

START_TEST(test_signal_handler)
{
	struct peftio_outdir od;
	struct peftio_outfile of;
	struct peftio_error err;
	const char *dir = tu_tmpdir();
	int status;
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		signal(SIGTERM, on_signal);
		if (peftio_outdir_open(&od, tu_path("out"), W_TEST,
		    &err) != 0 || peftio_write_file(child_path(&od, "a"), "A",
		    1, W_TEST, &err) != 0 || peftio_outfile_open(&of,
		    tu_path("f"), W_TEST, &err) != 0)
			_exit(1);
		raise(SIGTERM);
		_exit(2);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	ck_assert_int_eq(dir_entries(dir), 0);
}
END_TEST

/* An output that is, holds or lies inside an input is refused. */
START_TEST(test_output_clash)
{
	struct peftio_error err;
	char in[4096], dir[4096], inner[4096], link[4096], other[4096];
	const char *ins[2];

	tu_tmpdir();
	snprintf(in, sizeof(in), "%s", tu_path("in.safetensors"));
	snprintf(dir, sizeof(dir), "%s", tu_path("model"));
	snprintf(inner, sizeof(inner), "%s", tu_path("model/x.safetensors"));
	snprintf(link, sizeof(link), "%s", tu_path("alias"));
	snprintf(other, sizeof(other), "%s", tu_path("out.safetensors"));
	tu_write_file(in, "x", 1);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	tu_write_file(inner, "y", 1);
	ck_assert_int_eq(symlink(in, link), 0);

	ins[0] = in;
	ins[1] = NULL;
	ck_assert_int_eq(peftio_output_clash(other, ins, 2, &err), 0);
	ck_assert_int_eq(peftio_output_clash("-", ins, 1, &err), 0);
	ck_assert_int_eq(peftio_output_clash(in, ins, 1, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "would overwrite the input"));
	ck_assert_int_eq(peftio_output_clash(link, ins, 1, &err),
	    PEFTIO_EINVAL);
	ins[0] = inner;
	ck_assert_int_eq(peftio_output_clash(dir, ins, 1, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "holds the input"));
	ins[0] = dir;
	snprintf(other, sizeof(other), "%s", tu_path("model/new/out"));
	ck_assert_int_eq(peftio_output_clash(other, ins, 1, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "lie inside the input"));
	ins[0] = "-";
	ck_assert_int_eq(peftio_output_clash(in, ins, 1, &err), 0);
}
END_TEST

/* Two outputs that need not exist: the same path or one inside the
 * other overlap, whatever the spelling; a prefix of a name does not. */
START_TEST(test_outputs_overlap)
{
	struct peftio_error err;
	char a[4096], b[4096], cwd[4096];

	tu_tmpdir();
	ck_assert_int_eq(mkdir(tu_path("d"), 0755), 0);
	snprintf(a, sizeof(a), "%s", tu_path("d/ad"));
	snprintf(b, sizeof(b), "%s", tu_path("d/ad2"));
	ck_assert_int_eq(peftio_outputs_overlap(a, b, &err), 0);
	ck_assert_int_eq(peftio_outputs_overlap(b, a, &err), 0);
	snprintf(b, sizeof(b), "%s", tu_path("d/./ad"));
	ck_assert_int_eq(peftio_outputs_overlap(a, b, &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "would overlap the output"));
	snprintf(b, sizeof(b), "%s", tu_path("d/ad/x/y.safetensors"));
	ck_assert_int_eq(peftio_outputs_overlap(a, b, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_outputs_overlap(b, a, &err), PEFTIO_EINVAL);
	snprintf(b, sizeof(b), "%s", tu_path("d/new/../ad//"));
	ck_assert_int_eq(peftio_outputs_overlap(b, a, &err), PEFTIO_EINVAL);
	/* A relative path against the working directory. */
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir(tu_path("d")), 0);
	ck_assert_int_eq(peftio_outputs_overlap("ad", a, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_outputs_overlap("./ad/m", "ad", &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_outputs_overlap("ad", "ad.safetensors",
	    &err), 0);
	ck_assert_int_eq(chdir(cwd), 0);
	ck_assert_int_eq(peftio_outputs_overlap(a, "-", &err), 0);
	ck_assert_int_eq(peftio_outputs_overlap(NULL, a, &err), 0);
}
END_TEST

Suite *outfile_suite(void);

Suite *outfile_suite(void)
{
	Suite *s = suite_create("outfile");
	TCase *tc = tcase_create("outfile");
	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);

	tcase_add_test(tc, test_write_read);
	tcase_add_test(tc, test_exists_force);
	tcase_add_test(tc, test_bad_dest);
	tcase_add_test(tc, test_outfile_abort);
	tcase_add_test(tc, test_cleanup_temps);
	tcase_add_test(tc, test_registry);
	tcase_add_test(tc, test_special_dest);
	tcase_add_test(tc, test_stdout);
	tcase_add_test(tc, test_read_stdin);
	tcase_add_test(tc, test_io_loops);
	tcase_add_test(tc, test_direct_pieces);
	tcase_add_test(tc, test_outdir_commit);
	tcase_add_test(tc, test_outdir_abort);
	tcase_add_test(tc, test_outdir_replace);
	tcase_add_test(tc, test_outdir_signal);
	tcase_add_test(tc, test_output_clash);
	tcase_add_test(tc, test_outputs_overlap);
	tcase_add_test(tc, test_signal_handler);
	suite_add_tcase(s, tc);
	return s;
}
