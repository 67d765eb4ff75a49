/*
 * check_blockwise8.c - the 8-bit dynamic-map codec and double
 * quantization.  (The bitsandbytes CUDA sample is checked in
 * check_nf4.c, which reads tests/data/codec-sample.bin.)
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

/* bnb-nf4.md section 4.2: the table and its shape. */
START_TEST(test_dynamic_map)
{
	const float *c = peftio_dynamic_map();
	int i;

	ck_assert_uint_eq(peftio_f2u(c[0]), 0xbf7e3333U);	/* -0.99296875 */
	ck_assert_uint_eq(peftio_f2u(c[18]), 0xbf3d6666U);	/* the AVX2 linspace */
	ck_assert_uint_eq(peftio_f2u(c[64]), 0xbdc9eb85U);
	ck_assert_uint_eq(peftio_f2u(c[127]), 0);
	ck_assert_uint_eq(peftio_f2u(c[128]), 0x3513a3b7U);
	ck_assert_uint_eq(peftio_f2u(c[255]), 0x3f800000U);
	for (i = 1; i < 256; i++)
		ck_assert(c[i - 1] < c[i]);
	/* 127 negatives mirroring 127 positives. */
	for (i = 0; i < 127; i++)
		ck_assert_uint_eq(peftio_f2u(c[126 - i]),
		    peftio_f2u(c[128 + i]) | 0x80000000U);
}
END_TEST

/*
 * dQuantize (section 4.3) with absmax 1: every code value maps to
 * itself, and the midpoints between neighbours go to the final probe
 * of the search, which is not always the lower one.
 */
START_TEST(test_q8_codes)
{
	const float *c = peftio_dynamic_map();
	float x[512], am[2], mid;
	uint8_t q[512];
	int i, up = 0, down = 0;

	for (i = 0; i < 256; i++)
		x[i] = c[i];
	/* Block 2: the midpoints (256 entries), and 1.0 for the scale. */
	for (i = 0; i < 255; i++)
		x[256 + i] = (c[i] + c[i + 1]) * 0.5f;
	x[511] = 1.0f;
	peftio_q8_quantize(c, x, 512, 256, 0, 2, q, am);
	ck_assert_float_eq(am[0], 1.0f);
	ck_assert_float_eq(am[1], 1.0f);
	for (i = 0; i < 256; i++)
		ck_assert_uint_eq(q[i], (unsigned)i);
	for (i = 0; i < 255; i++) {
		mid = x[256 + i];
		ck_assert(q[256 + i] == i || q[256 + i] == i + 1);
		if (mid == c[i] || mid == c[i + 1])
			continue;
		if (q[256 + i] == i + 1)
			up++;
		else
			down++;
	}
	ck_assert_int_gt(up, 100);
	ck_assert_int_gt(down, 100);
	/* Out of range and special values. */
	x[0] = 2.0f;
	x[1] = -2.0f;
	x[2] = NAN;
	x[3] = -0.0f;
	x[4] = 1e-9f;
	x[5] = -0x1p-140f;	/* subnormal: flushed to zero */
	peftio_q8_quantize(c, x, 6, 256, 0, 1, q, am);
	ck_assert_float_eq(am[0], 2.0f);
	ck_assert_uint_eq(q[0], 255);
	ck_assert_uint_eq(q[1], 0);
	ck_assert_uint_eq(q[2], 0);
	ck_assert_uint_eq(q[3], 127);
	ck_assert_uint_eq(q[4], 127);
	ck_assert_uint_eq(q[5], 127);
}
END_TEST

START_TEST(test_q8_roundtrip)
{
	const float *c = peftio_dynamic_map();
	uint64_t seed = 5, n = 1000, nb = 4, i;
	float x[1000], y[1000], am[4];
	uint8_t q[1000];

	for (i = 0; i < n; i++)
		x[i] = tu_randn(&seed);
	peftio_q8_quantize(c, x, n, 256, 0, nb, q, am);
	peftio_q8_dequantize(c, q, am, n, 256, y);
	for (i = 0; i < n; i++) {
		ck_assert_uint_eq(peftio_f2u(y[i]), peftio_f2u(c[q[i]] * am[i / 256]));
		/* The dynamic map is within 0.6% of the block scale near 1. */
		ck_assert(fabsf(y[i] - x[i]) <= 0.05f * am[i / 256]);
	}
	/* Blocks one at a time give the same codes. */
	memset(y, 0, sizeof(y));
	for (i = 0; i < nb; i++)
		peftio_q8_quantize(c, x, n, 256, i, i + 1, q, am);
	peftio_q8_dequantize(c, q, am, n, 256, y);
	for (i = 0; i < n; i++)
		ck_assert_uint_eq(peftio_f2u(y[i]), peftio_f2u(c[q[i]] * am[i / 256]));
}
END_TEST

/* Section 4.1: the offset is the mean summed in double, rounded once. */
START_TEST(test_dq_offset)
{
	float am[1000], off, nested[4], back[1000];
	uint8_t q[1000];
	double sum = 0;
	int i;

	/* A float accumulation would lose the small terms. */
	am[0] = 16777216.0f;
	for (i = 1; i < 1000; i++)
		am[i] = 1.0f;
	peftio_dq_quantize(am, 1000, 256, &off, q, nested);
	ck_assert_float_eq(off, (float)((16777216.0 + 999.0) / 1000.0));
	for (i = 0; i < 1000; i++)
		am[i] = 0.01f * (float)(i % 17 + 1);
	for (i = 0; i < 1000; i++)
		sum += am[i];
	peftio_dq_quantize(am, 1000, 256, &off, q, nested);
	/* The offset is torch's GPU mean (check_cudamean.c pins it to the
	 * H100's bits); it is within an ulp of the exact mean. */
	ck_assert_uint_eq(peftio_f2u(off), peftio_f2u(peftio_cuda_mean_f32(am, 1000)));
	ck_assert_int_le(abs((int)peftio_f2u(off) - (int)peftio_f2u((float)(sum / 1000.0))),
	    1);
	/* The 8-bit stage is the codec on absmax - offset. */
	{
		float a[1000], nest2[4];
		uint8_t q2[1000];

		for (i = 0; i < 1000; i++)
			a[i] = am[i] - off;
		peftio_q8_quantize(peftio_dynamic_map(), a, 1000, 256, 0, 4,
		    q2, nest2);
		ck_assert_mem_eq(q, q2, 1000);
		ck_assert_mem_eq(nested, nest2, sizeof(nest2));
	}
	peftio_dq_dequantize(peftio_dynamic_map(), q, nested, off, 1000, 256,
	    back);
	for (i = 0; i < 1000; i++) {
		float p = peftio_dynamic_map()[q[i]] * nested[i / 256];

		ck_assert_uint_eq(peftio_f2u(back[i]), peftio_f2u(p + off));
		ck_assert(fabsf(back[i] - am[i]) < 0.01f * nested[i / 256]);
	}
}
END_TEST

/* One block whose values are all equal: a = 0, codes 0, back to offset. */
START_TEST(test_dq_constant)
{
	float am[5] = { 0.25f, 0.25f, 0.25f, 0.25f, 0.25f }, off, nested[1];
	float back[5];
	uint8_t q[5];
	int i;

	peftio_dq_quantize(am, 5, 256, &off, q, nested);
	ck_assert_float_eq(off, 0.25f);
	ck_assert_uint_eq(peftio_f2u(nested[0]), 0);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(q[i], 0);
	peftio_dq_dequantize(peftio_dynamic_map(), q, nested, off, 5, 256,
	    back);
	for (i = 0; i < 5; i++)
		ck_assert_float_eq(back[i], 0.25f);
	/* With a given offset. */
	peftio_dq_quantize_offset(am, 5, 256, 0.5f, q, nested);
	ck_assert_float_eq(nested[0], 0.25f);
	for (i = 0; i < 5; i++)
		ck_assert_uint_eq(q[i], 0);	/* -1 -> code[0] = -0.99 */
}
END_TEST

/*
 * The fast paths (every implementation the CPU has) against the literal
 * dQuantize(): code values and midpoints with their neighbours, random
 * values, subnormals, non-finite values, several block lengths.
 */
START_TEST(test_q8_fast_vs_ref)
{
	static const uint64_t bss[] = { 256, 64, 100, 7 };
	const float *c = peftio_dynamic_map();
	uint64_t n = 200000, bs = bss[_i], nb = (n + bs - 1) / bs, i, seed = 3;
	float *x = malloc(n * 4), *am0 = malloc(nb * 4), *am1 = malloc(nb * 4);
	uint8_t *q0 = malloc(n), *q1 = malloc(n);
	float v, sub = _i == 1 ? 0.0371f : 0.0f, odd[256];
	int impl, old, k, r;

	ck_assert_ptr_nonnull(x);
	for (i = 0; i < n; i++) {
		k = (int)(tu_rand(&seed) % 255);
		switch (tu_rand(&seed) % 6) {
		case 0:
			v = c[k];
			break;
		case 1:
			v = (c[k] + c[k + 1]) * 0.5f;
			break;
		case 2:
			v = tu_randn(&seed);
			break;
		case 3:
			v = tu_randn(&seed) * 0x1p-127f;
			break;
		case 4:
			r = (int)(tu_rand(&seed) % 8);
			v = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ?
			    -INFINITY : r == 3 ? -0.0f : r == 4 ? 1e30f :
			    c[k] * 1e-30f;
			break;
		default:
			v = (c[k] + c[k + 1]) * 0.5f;
			v = nextafterf(v, tu_rand(&seed) % 2 ? 2.0f : -2.0f);
			break;
		}
		/* Keep absmax 1 in most blocks so the values land as built. */
		x[i] = (i % bs == 0 && tu_rand(&seed) % 4 != 0) ? 1.0f + sub :
		    v + sub;
	}
	old = peftio_q4_impl_set(0);
	peftio_q8_quantize(c, x, n, bs, 0, nb, q0, am0);
	for (impl = 1; impl < 4; impl++) {
		if (peftio_q4_impl_set(impl) < 0)
			continue;
		memset(q1, 0xa5, n);
		peftio_q8_quantize(c, x, n, bs, 0, nb, q1, am1);
		ck_assert_msg(memcmp(q0, q1, n) == 0, "impl %d: codes", impl);
		ck_assert_msg(memcmp(am0, am1, nb * 4) == 0, "impl %d: absmax",
		    impl);
	}
	/* The double-quantization entry point: x - sub, blocks of bs. */
	peftio_q4_impl_set(0);
	peftio_dq_quantize_offset(x, n, bs, sub, q0, am0);
	for (impl = 1; impl < 4; impl++) {
		if (peftio_q4_impl_set(impl) < 0)
			continue;
		peftio_dq_quantize_offset(x, n, bs, sub, q1, am1);
		ck_assert_msg(memcmp(q0, q1, n) == 0, "impl %d: DQ", impl);
		ck_assert_mem_eq(am0, am1, nb * 4);
		/* The same in random ranges of blocks, the last one past
		 * the end. */
		memset(q1, 0xa5, n);
		memset(am1, 0xa5, nb * 4);
		for (i = 0; i < nb; i = r) {
			r = (int)(i + 1 + tu_rand(&seed) % 40);
			peftio_dq_quantize_blocks(x, n, bs, sub, i,
			    r >= (int)nb ? UINT64_MAX : (uint64_t)r, q1, am1);
		}
		ck_assert_msg(memcmp(q0, q1, n) == 0, "impl %d: DQ ranges",
		    impl);
		ck_assert_mem_eq(am0, am1, nb * 4);
	}
	/* A code whose odd entries do not ascend takes the literal path. */
	memcpy(odd, c, sizeof(odd));
	odd[101] = 0.5f;
	peftio_q4_impl_set(0);
	peftio_q8_quantize(odd, x, n, bs, 0, nb, q0, am0);
	peftio_q4_impl_set(old);
	peftio_q8_quantize(odd, x, n, bs, 0, nb, q1, am1);
	ck_assert_mem_eq(q0, q1, n);
	free(x);
	free(am0);
	free(am1);
	free(q0);
	free(q1);
}
END_TEST

/*
 * Values on every boundary of the search, in blocks of absmax 1 (so that
 * the scaled value is the value): each code entry (the odd ones are the
 * thresholds of the search), the midpoints of neighbours, the floats
 * next to each, and special values.
 */
static uint64_t
q8_edges(const float *c, float *x, uint64_t cap)
{
	static const float special[] = { 0.0f, -0.0f, 0x1p-140f, -0x1p-140f,
	    0x1p-126f, -0x1p-126f, 0x1p-149f, 1.0f, -1.0f, 0x1.000002p0f,
	    -0x1.000002p0f };
	uint64_t n = 0, i;
	float e[3];
	int k, j;

	for (k = 0; k < 256; k++)
		for (j = 0; j < 2; j++) {
			e[0] = j == 0 ? c[k] : (c[k] + c[k < 255 ? k + 1 : k]) *
			    0.5f;
			e[1] = nextafterf(e[0], -INFINITY);
			e[2] = nextafterf(e[0], INFINITY);
			for (i = 0; i < 3 && n < cap; i++) {
				if (n % 256 == 0)
					x[n++] = 1.0f;
				x[n++] = e[i];
			}
		}
	for (i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
		if (n % 256 == 0)
			x[n++] = 1.0f;
		x[n++] = special[i];
	}
	x[n++] = NAN;
	x[n++] = -NAN;
	/* A block of Inf: inv = 0, so 0 and NaN products. */
	for (; n % 256 != 0; n++)
		x[n] = n % 2 ? 0.5f : -0.25f;
	x[n++] = INFINITY;
	x[n++] = -INFINITY;
	x[n++] = -1.0f;
	x[n++] = 3.0f;
	for (; n % 256 != 0; n++)
		x[n] = n % 3 ? -0.0f : 0x1p-130f;
	return n;
}

/* Codes and absmax of every implementation the CPU has, as the literal's. */
static void
q8_same_as_ref(const float *code, const float *x, uint64_t n, uint64_t bs,
    float sub, const char *what)
{
	uint64_t nb = (n + bs - 1) / bs;
	float *am0 = malloc(nb * 4), *am1 = malloc(nb * 4);
	uint8_t *q0 = malloc(n), *q1 = malloc(n);
	uint64_t i;
	int impl, old = peftio_q4_impl_set(-1);

	ck_assert(am0 != NULL && am1 != NULL && q0 != NULL && q1 != NULL);
	peftio_q4_impl_set(0);
	if (sub == 0.0f)
		peftio_q8_quantize(code, x, n, bs, 0, nb, q0, am0);
	else
		peftio_dq_quantize_offset(x, n, bs, sub, q0, am0);
	for (impl = 1; impl < 4; impl++) {
		if (peftio_q4_impl_set(impl) < 0)
			continue;
		memset(q1, 0xa5, n);
		if (sub == 0.0f)
			peftio_q8_quantize(code, x, n, bs, 0, nb, q1, am1);
		else
			peftio_dq_quantize_offset(x, n, bs, sub, q1, am1);
		for (i = 0; i < n; i++)
			ck_assert_msg(q0[i] == q1[i], "%s, impl %d: x[%llu] = "
			    "%a: code %u, literal %u", what, impl,
			    (unsigned long long)i, (double)x[i], q1[i], q0[i]);
		ck_assert_msg(memcmp(am0, am1, nb * 4) == 0,
		    "%s, impl %d: absmax", what, impl);
	}
	peftio_q4_impl_set(old);
	free(am0);
	free(am1);
	free(q0);
	free(q1);
}

START_TEST(test_q8_edges)
{
	const float *dm = peftio_dynamic_map();
	float code[256], *x = malloc(4096 * 4), *y = malloc(4096 * 4);
	float *z = malloc(8 * 4096 * 4);
	uint64_t n, i;
	int k;

	ck_assert(x != NULL && y != NULL && z != NULL);
	n = q8_edges(dm, x, 4096 - 512);
	ck_assert_uint_le(n, 4096);
	q8_same_as_ref(dm, x, n, 256, 0.0f, "dynamic map");
	/* Each value alone in a block of 8, in lane 1 or lane 7. */
	for (i = 0; i < n; i++) {
		for (k = 0; k < 8; k++)
			z[8 * i + (uint64_t)k] = k == 0 ? 1.0f : 0.0f;
		z[8 * i + (i % 2 ? 7 : 1)] = x[i];
	}
	q8_same_as_ref(dm, z, 8 * n, 8, 0.0f, "one a block");
	/* The double-quantization path: the same values plus an offset. */
	for (i = 0; i < n; i++)
		y[i] = x[i] + 0.0625f;
	q8_same_as_ref(dm, y, n, 256, 0.0625f, "offset");
	/* Other scales: y = x * gpu_rcp(absmax) lands near 1 from both sides. */
	for (i = 0; i < n; i++)
		y[i] = x[i] * 3.3f;
	q8_same_as_ref(dm, y, n, 256, 0.0f, "scaled");
	/*
	 * A code whose odd entries repeat (plateaus of 8 equal entries):
	 * the search must count equal thresholds as the literal does.
	 */
	for (k = 0; k < 256; k++)
		code[k] = (float)((k - 128) / 8) / 16.0f;
	n = q8_edges(code, x, 4096 - 512);
	q8_same_as_ref(code, x, n, 256, 0.0f, "plateaus");
	/* Every entry equal but the last. */
	for (k = 0; k < 255; k++)
		code[k] = -0.5f;
	code[255] = 1.0f;
	n = q8_edges(code, x, 4096 - 512);
	q8_same_as_ref(code, x, n, 256, 0.0f, "flat");
	free(x);
	free(y);
	free(z);
}
END_TEST

Suite	*blockwise8_suite(void);

Suite *blockwise8_suite(void)
{
	Suite *s = suite_create("blockwise8");
	TCase *tc = tcase_create("blockwise8");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_dynamic_map);
	tcase_add_test(tc, test_q8_codes);
	tcase_add_test(tc, test_q8_roundtrip);
	tcase_add_test(tc, test_dq_offset);
	tcase_add_test(tc, test_dq_constant);
	tcase_add_loop_test(tc, test_q8_fast_vs_ref, 0, 4);
	tcase_add_test(tc, test_q8_edges);
	suite_add_tcase(s, tc);
	return s;
}
