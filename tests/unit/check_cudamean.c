/*
 * check_cudamean.c - peftio_cuda_mean_f32() against torch.mean() of
 * float32 CUDA tensors, measured with PyTorch 2.11 (CUDA 13.0) on an
 * H100 SXM (bench/cudamean/probe.py).  The inputs are regenerated here
 * bit for bit from the probe's counter-based splitmix64 stream
 * (bench/cudamean/cmgen.py); only the GPU's result bits are stored.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

float	peftio_cuda_mean_f32(const float *x, uint64_t n);

/*
 * Element i of the probe's input for (dist, seed): a splitmix64 output
 * taken as a float with a random 23-bit mantissa and
 *   dist 0: exponent -7..-4 (like bitsandbytes absmax values),
 *   dist 1: exponent -20..11 and a random sign,
 *   dist 2: exponent 10 (values in [1024, 2048), rounding-heavy sums).
 */
static void
cm_gen(int dist, uint64_t seed, uint64_t n, float *v)
{
	uint64_t i, z, s = seed * 4 + (uint64_t)dist;
	uint32_t man, ex, sign;

	for (i = 0; i < n; i++) {
		z = s * 0xD1B54A32D192ED03ULL + (i + 1) * 0x9E3779B97F4A7C15ULL;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		z ^= z >> 31;
		man = (uint32_t)(z & 0x7FFFFF);
		sign = 0;
		if (dist == 0)
			ex = 127 - 7 + (uint32_t)((z >> 23) & 3);
		else if (dist == 1) {
			ex = 127 - 20 + (uint32_t)((z >> 23) & 31);
			sign = (uint32_t)((z >> 28) & 1) << 31;
		} else
			ex = 127 + 10;
		v[i] = peftio_u2f(sign | ex << 23 | man);
	}
}

/* Per-n inputs (seed = n); GPU bits for dist 0, 1, 2. */
static const struct {
	uint32_t n;
	uint32_t bits[3];
} small_cases[] = {
	{ 1,    { 0x3ca4da69, 0xc140427d, 0x44effae0 } },
	{ 2,    { 0x3ce8128c, 0x3b996b9a, 0x44db29ec } },
	{ 3,    { 0x3d693b63, 0xbf88d277, 0x44cb9df8 } },
	{ 4,    { 0x3d5dd75d, 0xc42ce52c, 0x44af47ca } },
	{ 5,    { 0x3ce8bebd, 0xbba8a925, 0x44bf5375 } },
	{ 7,    { 0x3d3f173c, 0x43a22715, 0x44cf8d87 } },
	{ 31,   { 0x3d4087f3, 0x41c42794, 0x44bc4458 } },
	{ 32,   { 0x3d5967c0, 0xc372a66b, 0x44b1dc7c } },
	{ 33,   { 0x3d3c674e, 0x42a490ea, 0x44bdb006 } },
	{ 63,   { 0x3d0c2d5a, 0xc2d8df27, 0x44bfdf05 } },
	{ 64,   { 0x3d244721, 0xc213c2ba, 0x44c300e4 } },
	{ 65,   { 0x3d4a0c00, 0xc27bc58a, 0x44c329fc } },
	{ 100,  { 0x3d458077, 0xc244c939, 0x44c3e5eb } },
	{ 127,  { 0x3d2f7175, 0x4218e216, 0x44bf0cce } },	/* scalar */
	{ 128,  { 0x3d30c000, 0xc218ed98, 0x44c2e888 } },	/* float4 */
	{ 129,  { 0x3d41cf5f, 0xc206ba37, 0x44c29a6c } },
	{ 130,  { 0x3d3058ae, 0xc28062af, 0x44c0ce3d } },
	{ 131,  { 0x3d2a923b, 0x40832afe, 0x44c00502 } },
	{ 132,  { 0x3d207881, 0x428242a2, 0x44c0567c } },
	{ 255,  { 0x3d2e2266, 0xc22fbed1, 0x44bf029f } },
	{ 256,  { 0x3d309eb1, 0x426f4a84, 0x44c4ab84 } },
	{ 257,  { 0x3d1698cf, 0xc206a87b, 0x44c07388 } },
	{ 511,  { 0x3d324c1d, 0xc27522ee, 0x44c24a27 } },
	{ 512,  { 0x3d3ab0ed, 0x410ef474, 0x44c39d0d } },
	{ 513,  { 0x3d3676f7, 0xc24ae79e, 0x44c0e878 } },
	{ 1023, { 0x3d366440, 0xc106d902, 0x44bfd83f } },
	{ 1024, { 0x3d39ccf1, 0x41c386d4, 0x44c19429 } },
	{ 1025, { 0x3d344f9a, 0x4206f86c, 0x44be1bc6 } },
	{ 2047, { 0x3d33ccef, 0x40bab847, 0x44c1e814 } },	/* 256 lanes */
	{ 2048, { 0x3d3646aa, 0x41c5e281, 0x44bf6f5b } },	/* 512 lanes */
	{ 2049, { 0x3d357aaf, 0xbf8c9eec, 0x44c1dafe } },
	{ 2051, { 0x3d333778, 0x40f861c2, 0x44bf545e } },
	{ 2100, { 0x3d37a9b7, 0x407bcffc, 0x44bf6980 } },
};

/*
 * Prefixes of one long input per dist (seed 1000 + dist).  From 130561
 * on the sum is split over several blocks (global_reduce()).
 */
static const struct {
	uint32_t n;
	uint32_t bits[3];
} large_cases[] = {
	{ 130506,   { 0x3d33a07c, 0x3fc5dd7d, 0x44c006f5 } },	/* 1 block */
	{ 130567,   { 0x3d33a38f, 0x3fc554bf, 0x44c00783 } },	/* 16 */
	{ 131071,   { 0x3d33a43e, 0x3fcb2c74, 0x44c00a1e } },
	{ 131072,   { 0x3d33a3f9, 0x3fcc1bd2, 0x44c00a0f } },
	{ 131073,   { 0x3d33a3ca, 0x3fcc2275, 0x44c00a21 } },
	{ 131075,   { 0x3d33a377, 0x3fcc22ec, 0x44c00a10 } },
	{ 262141,   { 0x3d33df07, 0x3fdfee40, 0x44c0115e } },
	{ 262144,   { 0x3d33df21, 0x3fdfcf44, 0x44c01155 } },
	{ 1048573,  { 0x3d341b2b, 0x3f96df62, 0x44c00e56 } },
	{ 1048577,  { 0x3d341b47, 0x3f96df3e, 0x44c00e60 } },
	{ 4194301,  { 0x3d33fb0a, 0x3f2f0a12, 0x44c00815 } },	/* 512 */
	{ 4194304,  { 0x3d33fb06, 0x3f2f1002, 0x44c00816 } },
	{ 16777217, { 0x3d33f95f, 0x3e08073f, 0x44bfff96 } },	/* 528 */
};

#define NSMALL	(sizeof(small_cases) / sizeof(small_cases[0]))
#define NLARGE	(sizeof(large_cases) / sizeof(large_cases[0]))

START_TEST(test_cudamean_small)
{
	float x[2100];
	uint32_t n;
	size_t k;
	int d = _i;

	for (k = 0; k < NSMALL; k++) {
		n = small_cases[k].n;
		cm_gen(d, n, n, x);
		ck_assert_msg(peftio_f2u(peftio_cuda_mean_f32(x, n)) ==
		    small_cases[k].bits[d], "dist %d n %u: %08x, GPU %08x",
		    d, n, peftio_f2u(peftio_cuda_mean_f32(x, n)),
		    small_cases[k].bits[d]);
	}
}
END_TEST

START_TEST(test_cudamean_large)
{
	uint64_t nmax = large_cases[NLARGE - 1].n;
	float *x = malloc(nmax * sizeof(float));
	uint32_t n;
	size_t k;
	int d = _i;

	ck_assert_ptr_nonnull(x);
	cm_gen(d, 1000 + (uint64_t)d, nmax, x);
	for (k = 0; k < NLARGE; k++) {
		n = large_cases[k].n;
		ck_assert_msg(peftio_f2u(peftio_cuda_mean_f32(x, n)) ==
		    large_cases[k].bits[d], "dist %d n %u: %08x, GPU %08x",
		    d, n, peftio_f2u(peftio_cuda_mean_f32(x, n)),
		    large_cases[k].bits[d]);
	}
	free(x);
}
END_TEST

/* The generator is the probe's (cmgen.gen(d, 12345, 5) on the device). */
START_TEST(test_cudamean_gen)
{
	static const uint32_t want[3][5] = {
		{ 0x3ca3897c, 0x3d658df8, 0x3c0095d3, 0x3c96972d, 0x3c0cc865 },
		{ 0x376f68e8, 0x36d5944c, 0x4201a8cd, 0x3591118a, 0x4242835f },
		{ 0x44f2e074, 0x4494ae03, 0x44c52650, 0x44eff649, 0x449188d4 },
	};
	float v[5];
	int d, i;

	for (d = 0; d < 3; d++) {
		cm_gen(d, 12345, 5, v);
		for (i = 0; i < 5; i++)
			ck_assert_uint_eq(peftio_f2u(v[i]), want[d][i]);
	}
}
END_TEST

/* Exact cases: empty is NaN, constants and a single value come back. */
START_TEST(test_cudamean_exact)
{
	static float x[3000];
	int i;

	ck_assert(isnan(peftio_cuda_mean_f32(x, 0)));
	for (i = 0; i < 3000; i++)
		x[i] = 0.5f;
	ck_assert_uint_eq(peftio_f2u(peftio_cuda_mean_f32(x, 1)), peftio_f2u(0.5f));
	ck_assert_uint_eq(peftio_f2u(peftio_cuda_mean_f32(x, 128)), peftio_f2u(0.5f));
	ck_assert_uint_eq(peftio_f2u(peftio_cuda_mean_f32(x, 2048)), peftio_f2u(0.5f));
	x[0] = -3.25f;
	ck_assert_uint_eq(peftio_f2u(peftio_cuda_mean_f32(x, 1)), peftio_f2u(-3.25f));
}
END_TEST

Suite	*cudamean_suite(void);

Suite *cudamean_suite(void)
{
	Suite *s = suite_create("cudamean");
	TCase *tc = tcase_create("cudamean");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_cudamean_gen);
	tcase_add_test(tc, test_cudamean_exact);
	tcase_add_loop_test(tc, test_cudamean_small, 0, 3);
	tcase_add_loop_test(tc, test_cudamean_large, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}
