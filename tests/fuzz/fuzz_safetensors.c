/*
 * fuzz_safetensors.c - the whole safetensors reader on small files.
 *
 * The input is a whole file, read three ways: from memory, as a
 * regular file (a memfd, so pread and mmap), and as a pipe (the
 * streaming reader that spools the data section).  The three must
 * agree on whether the file is valid, on its tensor list and on every
 * tensor's bytes.  Every tensor is then read in full (float dtypes
 * converted to f32), and the file, as a checkpoint, goes through the
 * bitsandbytes layer: each 4-bit weight found is dequantized.
 */
#include <sys/mman.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "fuzz.h"

#define LABEL	"fuzz.safetensors"
#define PIPE_MAX	(1u << 20)

static int memfd = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if ((memfd = memfd_create("fuzz", MFD_CLOEXEC)) < 0) {
		perror("memfd_create");
		abort();
	}
	return 0;
}

static void
write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		FUZZ_ASSERT(w > 0 || errno == EINTR);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		}
	}
}

/* Open the bytes as a regular file. */
static int
open_file(struct peftio_st **st, const uint8_t *data, size_t size,
    struct peftio_error *err)
{
	char path[64];

	FUZZ_ASSERT(ftruncate(memfd, 0) == 0);
	FUZZ_ASSERT(lseek(memfd, 0, SEEK_SET) == 0);
	write_all(memfd, data, size);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	return peftio_st_open(st, path, err);
}

/* Open the bytes as a pipe; *skipped when they do not fit in one. */
static int
open_pipe(struct peftio_st **st, const uint8_t *data, size_t size,
    int *skipped, struct peftio_error *err)
{
	char path[64];
	int p[2], rc;

	*st = NULL;
	*skipped = 0;
	FUZZ_ASSERT(pipe2(p, O_CLOEXEC) == 0);
	if (size > 65536 && (size > PIPE_MAX ||
	    fcntl(p[1], F_SETPIPE_SZ, PIPE_MAX) < 0)) {
		close(p[0]);
		close(p[1]);
		*skipped = 1;
		return 0;
	}
	write_all(p[1], data, size);
	close(p[1]);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
	rc = peftio_st_open(st, path, err);
	close(p[0]);
	return rc;
}

/* Same tensors, same bytes. */
static void
same(struct peftio_st *a, struct peftio_st *b)
{
	const struct peftio_tensor_info *x, *y;
	struct peftio_error err;
	const void *p, *q;
	size_t i;

	FUZZ_ASSERT(peftio_st_count(a) == peftio_st_count(b));
	FUZZ_ASSERT(peftio_st_meta_count(a) == peftio_st_meta_count(b));
	for (i = 0; i < peftio_st_count(a); i++) {
		x = peftio_st_tensor(a, i);
		y = peftio_st_tensor(b, i);
		FUZZ_ASSERT(strcmp(x->name, y->name) == 0);
		FUZZ_ASSERT(x->dtype == y->dtype && x->ndim == y->ndim);
		FUZZ_ASSERT(memcmp(x->shape, y->shape,
		    sizeof(x->shape[0]) * (size_t)x->ndim) == 0);
		FUZZ_ASSERT(x->offset == y->offset && x->nbytes == y->nbytes);
		FUZZ_ASSERT(peftio_st_data(a, i, &p, &err) == 0);
		FUZZ_ASSERT(peftio_st_data(b, i, &q, &err) == 0);
		FUZZ_ASSERT(memcmp(p, q, (size_t)x->nbytes) == 0);
	}
}

/* Read every tensor; convert the float ones. */
static void
read_all(struct peftio_st *st, const uint8_t *data, size_t size)
{
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	const unsigned char *p;
	unsigned char x = 0;
	float *f;
	size_t i;
	uint64_t k;

	for (i = 0; i < peftio_st_count(st); i++) {
		t = peftio_st_tensor(st, i);
		FUZZ_ASSERT(peftio_st_data(st, i, (const void **)&p, &err) == 0);
		FUZZ_ASSERT(t->nbytes <= size);
		/* The bytes are the file's own, at the offset it gives. */
		FUZZ_ASSERT(p >= data && p + t->nbytes <= data + size);
		for (k = 0; k < t->nbytes; k++)
			x ^= p[k];
		if (!peftio_dtype_is_float(t->dtype))
			continue;
		f = malloc(t->numel * sizeof(float) + 1);
		FUZZ_ASSERT(f != NULL);
		FUZZ_ASSERT(peftio_to_f32(t->dtype, p, f, t->numel) == 0);
		free(f);
		peftio_st_release(st, i);
	}
	FUZZ_ASSERT(peftio_st_data(st, i, (const void **)&p, &err) ==
	    PEFTIO_EINVAL);
	(void)x;
}

/* The file as a checkpoint: its 4-bit weights, dequantized. */
static void
bnb(const uint8_t *data, size_t size)
{
	static const enum peftio_dtype dts[] = {
		PEFTIO_F32, PEFTIO_F16, PEFTIO_BF16
	};
	struct peftio_error err;
	struct peftio_bnb_weight bw;
	struct peftio_ckpt *c;
	uint64_t nbytes;
	void *out;
	size_t i;
	int rc;

	if ((rc = peftio_ckpt_open_mem(&c, data, size, LABEL, &err)) != 0) {
		fuzz_check_error(rc, &err, LABEL);
		return;
	}
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		FUZZ_ASSERT(peftio_ckpt_find(c, peftio_ckpt_tensor(c,
		    i)->name) == (long)i);
		if ((rc = peftio_bnb_lookup(c, i, &bw, &err)) < 0) {
			fuzz_check_error(rc, &err, LABEL);
			continue;
		}
		if (rc == 0)
			continue;
		FUZZ_ASSERT(bw.quant_state == i);
		/* The packed codes exist, so the element count is small. */
		FUZZ_ASSERT(bw.qs.numel / 2 <= size);
		FUZZ_ASSERT(peftio_dtype_nbytes(dts[i % 3], bw.qs.numel,
		    &nbytes) == 0);
		out = malloc(nbytes + 1);
		FUZZ_ASSERT(out != NULL);
		FUZZ_ASSERT(peftio_bnb_dequantize(c, &bw, dts[i % 3], out, 1,
		    &err) == 0);
		free(out);
	}
	peftio_ckpt_close(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_st *m, *f, *p;
	int rm, rf, rp, skipped;

	rm = peftio_st_open_mem(&m, data, size, LABEL, &err);
	if (rm != 0)
		fuzz_check_error(rm, &err, LABEL);
	rf = open_file(&f, data, size, &err);
	if (rf != 0)
		fuzz_check_error(rf, &err, "/proc/self/fd/");
	rp = open_pipe(&p, data, size, &skipped, &err);
	if (rp != 0)
		fuzz_check_error(rp, &err, "/proc/self/fd/");
	FUZZ_ASSERT(rf == rm);
	FUZZ_ASSERT(skipped || rp == rm);
	if (rm == 0) {
		read_all(m, data, size);
		same(m, f);
		if (p != NULL)
			same(m, p);
		bnb(data, size);
	}
	peftio_st_close(m);
	peftio_st_close(f);
	peftio_st_close(p);
	return 0;
}
