/*
 * testutil.c - helpers shared by the unit test suites.
 */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static char tmpdir[256];

const char *
tu_tmpdir(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/peftio-unit.XXXXXX",
	    base != NULL && *base != '\0' ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	return tmpdir;
}

void
tu_tmpdir_remove(void)
{
	if (tmpdir[0] != '\0')
		tu_rmtree(tmpdir);
	tmpdir[0] = '\0';
}

const char *
tu_path(const char *name)
{
	static char ring[8][512];
	static int next;
	char *p = ring[next++ % 8];

	snprintf(p, sizeof(ring[0]), "%s/%s", tmpdir, name);
	return p;
}

void
tu_write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	ck_assert_msg(f != NULL, "cannot create %s", path);
	ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

void *
tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len != NULL)
		*len = (size_t)n;
	return buf;
}

static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb; (void)type; (void)ftw;
	return remove(path);
}

void
tu_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t
tu_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

float
tu_randn(uint64_t *s)
{
	double u1 = ((tu_rand(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (tu_rand(s) >> 11) / 9007199254740992.0;

	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int
tu_ckpt_shape(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	struct peftio_ckpt *c = arg;
	const struct peftio_tensor_info *ti;
	long i = peftio_ckpt_find(c, name);
	int d;

	if (i < 0)
		return -1;
	ti = peftio_ckpt_tensor(c, (size_t)i);
	*ndim = ti->ndim;
	for (d = 0; d < ti->ndim; d++)
		shape[d] = ti->shape[d];
	return 0;
}

float *
tu_tensor_f32(struct peftio_ckpt *c, const char *name, uint64_t *n)
{
	struct peftio_error err;
	const struct peftio_tensor_info *ti;
	const void *data;
	float *f;
	long i = peftio_ckpt_find(c, name);

	ck_assert_msg(i >= 0, "no tensor %s", name);
	ti = peftio_ckpt_tensor(c, (size_t)i);
	ck_assert_int_eq(peftio_ckpt_data(c, (size_t)i, &data, &err), 0);
	f = malloc(ti->numel * sizeof(float));
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(peftio_to_f32(ti->dtype, data, f, ti->numel), 0);
	*n = ti->numel;
	return f;
}

int
tu_under_sanitizer_or_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");

#if defined(__SANITIZE_ADDRESS__)
	return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return 1;
#endif
#endif
	/* valgrind preloads its vgpreload_*.so into the program it runs */
	return pre != NULL && strstr(pre, "vgpreload") != NULL;
}
