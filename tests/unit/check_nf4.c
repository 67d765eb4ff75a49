/*
 * check_nf4.c - the 4-bit codecs and the GPU reciprocal.
 *
 * The fast paths are compared with the scalar reference
 * (peftio_q4_quantize_ref) on every implementation the CPU offers, and
 * the codec with a committed sample of bitsandbytes' CUDA outputs
 * (tests/data/codec-sample.bin, written by make-codec-sample.py).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

#define SAMPLE	TEST_DATA "/codec-sample.bin"
#define NIMPL	4	/* reference, portable, AVX-512, AVX2 */

static size_t
esize(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 ? 4 : 2;
}

/* Store f (exactly representable in dt) as element i of buf. */
static void
put(enum peftio_dtype dt, void *buf, uint64_t i, float f)
{
	uint16_t h;
	uint32_t u = peftio_f2u(f);

	if (dt == PEFTIO_F32)
		memcpy((uint8_t *)buf + 4 * i, &u, 4);
	else {
		h = dt == PEFTIO_BF16 ? (uint16_t)(u >> 16) :
		    peftio_f32_to_f16(f);
		memcpy((uint8_t *)buf + 2 * i, &h, 2);
	}
}

/* f rounded to dt (bf16 by truncation: any bf16 value will do). */
static float
to_dt(enum peftio_dtype dt, float f)
{
	if (dt == PEFTIO_BF16)
		return peftio_u2f(peftio_f2u(f) & 0xffff0000U);
	if (dt == PEFTIO_F16)
		return peftio_f16_to_f32(peftio_f32_to_f16(f));
	return f;
}

/* The next value of dt after f in direction dir (+1 or -1). */
static float
step(enum peftio_dtype dt, float f, int dir)
{
	uint16_t h;

	if (dt == PEFTIO_F32)
		return nextafterf(f, dir > 0 ? INFINITY : -INFINITY);
	if (dt == PEFTIO_BF16) {
		h = (uint16_t)(peftio_f2u(f) >> 16);
		h = (uint16_t)((h & 0x8000) ? (dir > 0 ? h - 1 : h + 1) :
		    (dir > 0 ? h + 1 : h - 1));
		return peftio_u2f((uint32_t)h << 16);
	}
	h = peftio_f32_to_f16(f);
	h = (uint16_t)((h & 0x8000) ? (dir > 0 ? h - 1 : h + 1) :
	    (dir > 0 ? h + 1 : h - 1));
	return peftio_f16_to_f32(h);
}

/*
 * Quantize with the reference, then with every other implementation the
 * CPU has, whole and split into random block ranges; all must agree.
 */
static void
quantize_all(enum peftio_q4type t, enum peftio_dtype dt, const void *in,
    uint64_t n, uint64_t bs, uint8_t *packed, float *absmax)
{
	uint64_t nb = (n + bs - 1) / bs, b0, b1, seed = n * 31 + bs;
	size_t pl = (n + 1) / 2;
	uint8_t *p2 = malloc(pl + 1);
	float *a2 = malloc(nb * sizeof(float) + 1);
	int impl, old;

	ck_assert_ptr_nonnull(p2);
	ck_assert_ptr_nonnull(a2);
	ck_assert_int_eq(peftio_q4_quantize_ref(t, dt, in, n, bs, 0, nb,
	    packed, absmax), 0);
	old = peftio_q4_impl_set(-1);
	for (impl = 1; impl < NIMPL; impl++) {
		if (peftio_q4_impl_set(impl) < 0)
			continue;
		memset(p2, 0xa5, pl);
		ck_assert_int_eq(peftio_q4_quantize(t, dt, in, n, bs, 0, nb,
		    p2, a2), 0);
		ck_assert_msg(memcmp(p2, packed, pl) == 0,
		    "impl %d: packed differs (type %d dtype %d bs %llu)", impl,
		    t, dt, (unsigned long long)bs);
		ck_assert_msg(memcmp(a2, absmax, nb * 4) == 0,
		    "impl %d: absmax differs", impl);
		memset(p2, 0xa5, pl);
		memset(a2, 0xa5, nb * 4);
		for (b0 = 0; b0 < nb; b0 = b1) {
			b1 = b0 + 1 + tu_rand(&seed) % 7;
			if (b1 > nb)
				b1 = nb;
			ck_assert_int_eq(peftio_q4_quantize(t, dt, in, n, bs,
			    b0, b1, p2, a2), 0);
		}
		ck_assert_msg(memcmp(p2, packed, pl) == 0,
		    "impl %d: split packed differs", impl);
		ck_assert_msg(memcmp(a2, absmax, nb * 4) == 0,
		    "impl %d: split absmax differs", impl);
		memset(a2, 0xa5, nb * 4);
		ck_assert_int_eq(peftio_q4_absmax(dt, in, n, bs, 0, nb, a2), 0);
		ck_assert_msg(memcmp(a2, absmax, nb * 4) == 0,
		    "impl %d: peftio_q4_absmax differs", impl);
		/* The absmax that also looks for NaN and Inf: the same
		 * values, and never "finite" when one is not. */
		memset(a2, 0xa5, nb * 4);
		if (peftio_q4_absmax_finite(dt, in, n, bs, 0, nb, a2))
			ck_assert_msg(peftio_first_nonfinite(dt, in, n) < 0,
			    "impl %d: a NaN or Inf not seen", impl);
		ck_assert_msg(memcmp(a2, absmax, nb * 4) == 0,
		    "impl %d: peftio_q4_absmax_finite differs", impl);
		/* Quantizing with those absmax known gives the same. */
		memset(p2, 0xa5, pl);
		ck_assert_int_eq(peftio_q4_quantize_known(t, dt, in, n, bs, 0,
		    nb, p2, a2), 0);
		ck_assert_msg(memcmp(p2, packed, pl) == 0,
		    "impl %d: packed with known absmax differs", impl);
		ck_assert_msg(memcmp(a2, absmax, nb * 4) == 0,
		    "impl %d: known absmax changed", impl);
	}
	peftio_q4_impl_set(old);
	free(p2);
	free(a2);
}

static unsigned
nibble(const uint8_t *packed, uint64_t i)
{
	return (i & 1) ? packed[i / 2] & 15 : packed[i / 2] >> 4;
}

/* ------------------------------------------------------------------ */

START_TEST(test_tables)
{
	/* bnb-nf4.md section 1. */
	static const uint32_t nf4[16] = {
		0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d,
		0xbe3d353f, 0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3,
		0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3,
		0x3f800000
	};
	static const uint32_t fp4[16] = {
		0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab,
		0x3f000000, 0x3e2aaaab, 0x3e800000, 0x00000000, 0xbbaaaaab,
		0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab,
		0xbe800000
	};
	const float *c;
	int i;

	c = peftio_q4_code(PEFTIO_Q4_NF4);
	for (i = 0; i < 16; i++)
		ck_assert_uint_eq(peftio_f2u(c[i]), nf4[i]);
	c = peftio_q4_code(PEFTIO_Q4_FP4);
	for (i = 0; i < 16; i++)
		ck_assert_uint_eq(peftio_f2u(c[i]), fp4[i]);
	ck_assert_ptr_null(peftio_q4_code((enum peftio_q4type)7));
	for (i = 0; i <= 8192; i++)
		ck_assert_int_eq(peftio_q4_blocksize_ok((uint64_t)i),
		    i == 32 || i == 64 || i == 128 || i == 256 || i == 512 ||
		    i == 1024 || i == 2048 || i == 4096);
}
END_TEST

START_TEST(test_bad_args)
{
	float f[4] = { 1, 2, 3, 4 }, am[4];
	uint8_t p[4];

	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, f, 4,
	    3, 0, 1, p, am), PEFTIO_EINVAL);	/* odd blocksize */
	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, f, 4,
	    2, 0, 3, p, am), PEFTIO_EINVAL);	/* past the last block */
	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_I32, f, 4,
	    2, 0, 2, p, am), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_q4_quantize((enum peftio_q4type)2, PEFTIO_F32,
	    f, 4, 2, 0, 2, p, am), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, f, 4,
	    2, 1, 1, NULL, NULL), 0);		/* empty range */
	ck_assert_int_eq(peftio_q4_absmax(PEFTIO_F32, f, 4, 0, 0, 1, am),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_q4_dequantize(NULL, p, am, 4, 2, 0, 2,
	    PEFTIO_F32, f), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_q4_dequantize(peftio_q4_code(PEFTIO_Q4_NF4),
	    p, am, 4, 2, 0, 2, PEFTIO_U8, f), PEFTIO_EINVAL);
}
END_TEST

/* The 5x4 matrix published with its real bnb CUDA output (section 3). */
START_TEST(test_published)
{
	static const float w[20] = {
		0.4767f, -0.2921f, 0.0787f, -0.1018f,
		-0.3453f, 0.3834f, -0.0107f, -0.4692f,
		-0.4072f, -0.2996f, -0.4942f, -0.2640f,
		0.0125f, 0.2962f, 0.3123f, -0.4705f,
		-0.1982f, -0.1545f, 0.3358f, -0.4086f
	};
	static const uint8_t want[10] = {
		242, 149, 30, 112, 18, 2, 125, 208, 52, 225
	};
	uint8_t p[10];
	float am;

	quantize_all(PEFTIO_Q4_NF4, PEFTIO_F32, w, 20, 64, p, &am);
	ck_assert_mem_eq(p, want, 10);
	ck_assert_float_eq(am, 0.4942f);
}
END_TEST

/* Section 2 step 6: an all-zero block codes to 0 (-1.0) everywhere. */
START_TEST(test_zero_block)
{
	float in[128] = { 0 }, am[2], out[128];
	uint8_t p[64];
	int i, t;

	for (i = 64; i < 128; i++)
		in[i] = (i & 1) ? -0.0f : 0x1p-140f;	/* subnormal: 0 */
	for (t = 0; t < 2; t++) {
		quantize_all(t, PEFTIO_F32, in, 128, 64, p, am);
		for (i = 0; i < 64; i++)
			ck_assert_uint_eq(p[i], 0x00);
		ck_assert_uint_eq(peftio_f2u(am[0]), 0);
		ck_assert_uint_eq(peftio_f2u(am[1]), 0);
		ck_assert_int_eq(peftio_q4_dequantize(peftio_q4_code(t), p, am,
		    128, 64, 0, 2, PEFTIO_F32, out), 0);
		/* NF4 code 0 is -1.0; FP4 code 0 is +0.0. */
		for (i = 0; i < 128; i++)
			ck_assert_uint_eq(peftio_f2u(out[i]),
			    t == 0 ? 0x80000000U : 0);
	}
}
END_TEST

/* NaN: ignored by absmax, code 0 itself; Inf: scale 0 for its block. */
START_TEST(test_nonfinite)
{
	float in[64], am;
	uint8_t p[32];
	int i, t;

	for (t = 0; t < 2; t++) {
		for (i = 0; i < 64; i++)
			in[i] = (float)(i - 32) / 32.0f;
		in[5] = NAN;
		in[6] = -NAN;
		quantize_all(t, PEFTIO_F32, in, 64, 64, p, &am);
		ck_assert_float_eq(am, 1.0f);
		ck_assert_uint_eq(nibble(p, 5), 0);
		ck_assert_uint_eq(nibble(p, 6), 0);
		ck_assert_uint_eq(nibble(p, 63), t == 0 ? 15 : 3);
		ck_assert_uint_eq(nibble(p, 0), t == 0 ? 0 : 11);

		/* Section 8: absmax Inf, inv 0, Inf*0 NaN -> 0, x*0 -> 0. */
		in[9] = -INFINITY;
		quantize_all(t, PEFTIO_F32, in, 64, 64, p, &am);
		ck_assert(isinf(am) && am > 0);
		for (i = 0; i < 64; i++)
			ck_assert_uint_eq(nibble(p, (uint64_t)i),
			    i == 5 || i == 6 || i == 9 || t == 1 ? 0 : 7);

		/* All NaN: absmax 0, every code 0. */
		for (i = 0; i < 64; i++)
			in[i] = NAN;
		quantize_all(t, PEFTIO_F32, in, 64, 64, p, &am);
		ck_assert_uint_eq(peftio_f2u(am), 0);
		for (i = 0; i < 32; i++)
			ck_assert_uint_eq(p[i], 0);
	}
}
END_TEST

/*
 * The absmax pass that looks for NaN and Inf: for each implementation
 * and dtype, one NaN, +Inf or -Inf anywhere among finite values is
 * seen (0); all finite values are 1 on the AVX2 path, which tells.
 */
START_TEST(test_absmax_finite)
{
	static const enum peftio_dtype dts[] = { PEFTIO_F32, PEFTIO_F16,
	    PEFTIO_BF16 };
	static const float bad[] = { NAN, INFINITY, -INFINITY };
	float f[256], am[4];
	uint8_t in[1024];
	size_t d, k, pos, i;
	int impl, old;

	old = peftio_q4_impl_set(-1);
	for (impl = 1; impl < NIMPL; impl++) {
		if (peftio_q4_impl_set(impl) < 0)
			continue;
		for (d = 0; d < 3; d++) {
			for (i = 0; i < 256; i++)
				f[i] = (float)((int)i - 128) / 64.0f;
			peftio_from_f32(dts[d], f, in, 256);
			if (impl == 3)
				ck_assert_int_eq(peftio_q4_absmax_finite(dts[d],
				    in, 256, 64, 0, 4, am), 1);
			for (k = 0; k < 3; k++)
				for (pos = 0; pos < 256; pos += 37) {
					f[pos] = bad[k];
					peftio_from_f32(dts[d], f, in, 256);
					ck_assert_msg(!peftio_q4_absmax_finite(
					    dts[d], in, 256, 64, 0, 4, am),
					    "impl %d dtype %zu: %g at %zu not "
					    "seen", impl, d, (double)bad[k],
					    pos);
					f[pos] = 1.0f;
				}
		}
	}
	peftio_q4_impl_set(old);
}
END_TEST

/* Odd n: the last low nibble codes the (T)0 padding (section 3). */
START_TEST(test_odd_padding)
{
	float in[67], am[2];
	uint8_t p[34];
	int i, t;

	for (t = 0; t < 2; t++) {
		for (i = 0; i < 67; i++)
			in[i] = (float)(i % 9) - 4.0f;
		in[64] = 4.0f;
		in[65] = -3.0f;
		in[66] = 4.0f;
		quantize_all(t, PEFTIO_F32, in, 67, 64, p, am);
		ck_assert_float_eq(am[0], 4.0f);
		ck_assert_float_eq(am[1], 4.0f);	/* its own absmax */
		ck_assert_uint_eq(p[33] & 15, t == 0 ? 7 : 0);
		ck_assert_uint_eq(p[33] >> 4, t == 0 ? 15 : 3);
		in[66] = 0.0f;			/* the tail block all zero */
		in[64] = in[65] = 0.0f;
		quantize_all(t, PEFTIO_F32, in, 67, 64, p, am);
		ck_assert_uint_eq(p[32], 0);
		ck_assert_uint_eq(p[33], 0);
	}
}
END_TEST

/* FP4 sign (section 2 step 5): x < 0 after .ftz flushing. */
START_TEST(test_fp4_sign)
{
	float in[64], am;
	uint8_t p[32];
	int i;

	for (i = 0; i < 64; i++)
		in[i] = 0.0f;
	in[0] = 0.5f;
	in[1] = -1e-4f;		/* tiny negative: code 8 */
	in[2] = -0.0f;		/* -0: code 0 */
	in[3] = -0x1p-130f;	/* subnormal negative: flushed, code 0 */
	in[4] = 1e-4f;		/* tiny positive: code 0 */
	in[5] = -0.5f;
	quantize_all(PEFTIO_Q4_FP4, PEFTIO_F32, in, 64, 64, p, &am);
	ck_assert_uint_eq(nibble(p, 1), 8);
	ck_assert_uint_eq(nibble(p, 2), 0);
	ck_assert_uint_eq(nibble(p, 3), 0);
	ck_assert_uint_eq(nibble(p, 4), 0);
	ck_assert_uint_eq(nibble(p, 5), 11);
	/* A product below the normal range is flushed to -0: code 0. */
	in[0] = 0x1p100f;
	in[1] = -0x1p-30f;	/* x = -2^-130 */
	in[5] = -0.5f;		/* x = -2^-101, normal: code 8 */
	quantize_all(PEFTIO_Q4_FP4, PEFTIO_F32, in, 64, 64, p, &am);
	ck_assert_uint_eq(nibble(p, 1), 0);
	ck_assert_uint_eq(nibble(p, 5), 8);
	/* A subnormal v is flushed before the multiply: x = -0, code 0. */
	in[0] = 0.01f;
	in[1] = -0x1p-127f;	/* v * inv would be -2^-120.4, normal */
	quantize_all(PEFTIO_Q4_FP4, PEFTIO_F32, in, 64, 64, p, &am);
	ck_assert_uint_eq(nibble(p, 1), 0);
}
END_TEST

/* Dequantize: dtype(code[nibble] * absmax); FP4 index 8 gives -0.0. */
START_TEST(test_dequantize)
{
	static const enum peftio_dtype dts[] = { PEFTIO_F32, PEFTIO_BF16,
	    PEFTIO_F16 };
	uint64_t seed = 7, n = 1001, bs = 64, nb = (n + bs - 1) / bs, i;
	uint8_t packed[501], out[1001 * 4], part[1001 * 4];
	float absmax[16], v, w;
	const float *code;
	size_t es;
	uint16_t h, want;
	int t, d;

	for (i = 0; i < sizeof(packed); i++)
		packed[i] = (uint8_t)tu_rand(&seed);
	for (i = 0; i < nb; i++)
		absmax[i] = fabsf(tu_randn(&seed)) * 0.05f;
	for (t = 0; t < 2; t++)
		for (d = 0; d < 3; d++) {
			code = peftio_q4_code(t);
			es = esize(dts[d]);
			memset(out, 0xa5, sizeof(out));
			ck_assert_int_eq(peftio_q4_dequantize(code, packed,
			    absmax, n, bs, 0, nb, dts[d], out), 0);
			for (i = 0; i < n; i++) {
				v = code[nibble(packed, i)];
				if (t == 1 && nibble(packed, i) == 8)
					v = -0.0f;
				v = v * absmax[i / bs];
				if (dts[d] == PEFTIO_F32) {
					memcpy(&w, out + 4 * i, 4);
					ck_assert_uint_eq(peftio_f2u(w), peftio_f2u(v));
					continue;
				}
				memcpy(&h, out + 2 * i, 2);
				want = dts[d] == PEFTIO_BF16 ?
				    peftio_f32_to_bf16(v) :
				    peftio_f32_to_f16(v);
				ck_assert_uint_eq(h, want);
			}
			/* Only the blocks asked for are written. */
			memset(part, 0xa5, sizeof(part));
			ck_assert_int_eq(peftio_q4_dequantize(code, packed,
			    absmax, n, bs, 3, 5, dts[d], part), 0);
			for (i = 0; i < n * es; i++)
				ck_assert_uint_eq(part[i], i >= 3 * bs * es &&
				    i < 5 * bs * es ? out[i] : 0xa5);
		}
}
END_TEST

/* As the GPU writes them: a NaN product canonical, subnormals flushed. */
START_TEST(test_dequantize_special)
{
	const float *code = peftio_q4_code(PEFTIO_Q4_NF4);
	float absmax[3] = { INFINITY, 0x1p-130f, 0x1p-124f }, out[6];
	uint16_t h[6];
	uint8_t packed[3] = { 0x7f, 0x0f, 0x87 };

	ck_assert_int_eq(peftio_q4_dequantize(code, packed, absmax, 6, 2, 0,
	    3, PEFTIO_F32, out), 0);
	ck_assert_uint_eq(peftio_f2u(out[0]), 0x7fffffffU);	/* 0 * Inf */
	ck_assert_uint_eq(peftio_f2u(out[1]), 0x7f800000U);
	ck_assert_uint_eq(peftio_f2u(out[2]), 0x80000000U);	/* absmax flushed */
	ck_assert_uint_eq(peftio_f2u(out[3]), 0);
	/* 0.0796 * 2^-124 is below the normal range: flushed to +0. */
	ck_assert_uint_eq(peftio_f2u(out[4]), 0);
	ck_assert_uint_eq(peftio_f2u(out[5]), 0);
	ck_assert_int_eq(peftio_q4_dequantize(code, packed, absmax, 6, 2, 0,
	    3, PEFTIO_BF16, h), 0);
	ck_assert_uint_eq(h[0], 0x7fff);
	ck_assert_uint_eq(h[1], 0x7f80);
	ck_assert_int_eq(peftio_q4_dequantize(code, packed, absmax, 6, 2, 0,
	    3, PEFTIO_F16, h), 0);
	ck_assert_uint_eq(h[0], 0x7fff);
	ck_assert_uint_eq(h[1], 0x7c00);
	ck_assert_uint_eq(h[2], 0x8000);
}
END_TEST

/*
 * Fast paths against the reference: random normal data, exact
 * thresholds and one unit in the last place around them, outliers,
 * subnormals, tiny and huge blocks, random bit patterns.
 */
START_TEST(test_fast_vs_ref)
{
	static const enum peftio_dtype dts[] = { PEFTIO_F32, PEFTIO_BF16,
	    PEFTIO_F16 };
	static const uint64_t bss[] = { 32, 64, 128, 4096, 34 };
	/* The decision thresholds of both types (section 2). */
	static const uint32_t thr[] = {
		0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec,
		0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64863, 0x3e5067e0,
		0x3e9582d4, 0x3ec753f9, 0x3f006d03, 0x3f248daf, 0x3f5c89d9,
		0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556,
		0x3f155550, 0x3f555555
	};
	enum peftio_dtype dt = dts[_i % 3];
	uint64_t n = 1 << 19, bs = bss[_i / 3], nb, i, b, seed = 99 + _i;
	void *in = malloc(n * 4);
	uint8_t *packed = malloc(n / 2 + 1);
	float *absmax = malloc(n * 4), a, v, scale;
	int kind, t, k;

	ck_assert_ptr_nonnull(in);
	ck_assert_ptr_nonnull(packed);
	ck_assert_ptr_nonnull(absmax);
	for (i = 0; i < n; i += bs) {
		kind = (int)(tu_rand(&seed) % 9);
		scale = kind == 5 ? 0x1p-120f : kind == 6 ? 0x1p-135f :
		    kind == 7 ? 0x1p120f : 0.02f * (1 + tu_rand(&seed) % 4);
		a = to_dt(dt, scale * 4);
		for (b = i; b < i + bs && b < n; b++) {
			switch (kind) {
			case 0:
			case 5:
			case 6:
			case 7:
				v = to_dt(dt, scale * tu_randn(&seed));
				break;
			case 1:		/* thresholds +-1 ulp at absmax 1 */
				k = (int)(tu_rand(&seed) % 22);
				v = peftio_u2f(thr[k]);
				v = to_dt(dt, v);
				if (tu_rand(&seed) % 3 != 0)
					v = step(dt, v,
					    tu_rand(&seed) % 2 ? 1 : -1);
				if (tu_rand(&seed) % 2)
					v = -v;
				break;
			case 2:		/* thresholds times a scale */
				k = (int)(tu_rand(&seed) % 22);
				v = to_dt(dt, peftio_u2f(thr[k]) * a);
				v = step(dt, v, (int)(tu_rand(&seed) % 3) - 1);
				if (tu_rand(&seed) % 2)
					v = -v;
				break;
			case 8:		/* normal data and subnormals */
				v = to_dt(dt, scale * tu_randn(&seed));
				if (tu_rand(&seed) % 4 == 0)
					v = to_dt(dt, v * 0x1p-126f);
				break;
			case 3:		/* random bits */
				if (dt == PEFTIO_F32)
					v = peftio_u2f((uint32_t)tu_rand(&seed));
				else if (dt == PEFTIO_BF16)
					v = peftio_u2f((uint32_t)tu_rand(&seed) <<
					    16);
				else
					v = peftio_f16_to_f32(
					    (uint16_t)tu_rand(&seed));
				break;
			default:	/* short fractions of the absmax */
				v = to_dt(dt, a * (float)(int)(tu_rand(&seed) %
				    49 - 24) / 24.0f);
				break;
			}
			put(dt, in, b, v);
		}
		if (kind == 1)
			put(dt, in, i, tu_rand(&seed) % 2 ? 1.0f : -1.0f);
		else if (kind == 2 || kind == 4)
			put(dt, in, i, a);
	}
	nb = (n + bs - 1) / bs;
	for (t = 0; t < 2; t++) {
		quantize_all(t, dt, in, n, bs, packed, absmax);
		/* And an odd length, with a partial last block. */
		quantize_all(t, dt, in, n - bs / 2 - 1, bs, packed, absmax);
	}
	(void)nb;
	free(in);
	free(packed);
	free(absmax);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The GPU reciprocal                                                   */

START_TEST(test_gpu_rcp)
{
	struct peftio_error err;
	float a, r;
	int e;

	ck_assert_int_eq(peftio_gpu_rcp_init(&err), 0);
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(0.0f)), 0x7f800000U);
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(-0.0f)), 0xff800000U);
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(0x1p-130f)), 0x7f800000U);
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(INFINITY)), 0);
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(-INFINITY)), 0x80000000U);
	ck_assert(isnan(peftio_gpu_rcp(NAN)));
	ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(0x1p127f)), 0);	/* flushed */
	ck_assert_float_eq(peftio_gpu_rcp(0x1p126f), 0x1p-126f);
	ck_assert_float_eq(peftio_gpu_rcp(0x1p-126f), 0x1p126f);
	/*
	 * Mantissas read from lib/data/rcp_delta.bin.gz: 0..4 have delta
	 * 0, 1449..1453 delta -1, 59442 and 59478 delta +1.  The delta
	 * depends only on the mantissa (section 11), in every binade.
	 */
	for (e = -100; e <= 100; e += 25) {
		a = ldexpf(peftio_u2f(0x3f800000U | 3), e);
		ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(a)), peftio_f2u(1.0f / a));
		a = ldexpf(peftio_u2f(0x3f800000U | 1449), e);
		r = 1.0f / a;
		ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(a)), peftio_f2u(r) - 1);
		ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(-a)), peftio_f2u(-r) - 1);
		a = ldexpf(peftio_u2f(0x3f800000U | 59442), e);
		r = 1.0f / a;
		ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(a)), peftio_f2u(r) + 1);
		a = ldexpf(peftio_u2f(0x3f800000U | 59478), e);
		ck_assert_uint_eq(peftio_f2u(peftio_gpu_rcp(a)), peftio_f2u(1.0f / a) + 1);
	}
	ck_assert_float_eq(peftio_gpu_rcp(1.0f), 1.0f);
	ck_assert_float_eq(peftio_gpu_rcp(2.0f), 0.5f);
}
END_TEST

/*
 * Every entry of the table as the library packed it: for each of the
 * 2^23 mantissas, the result differs from the correctly rounded
 * reciprocal by the delta read from lib/data/rcp_delta.bin.gz here.
 */
START_TEST(test_gpu_rcp_table)
{
	struct peftio_error err;
	signed char *d;
	gzFile gz;
	uint32_t m, bad = 0;
	float a;

	ck_assert_int_eq(peftio_gpu_rcp_init(&err), 0);
	ck_assert_ptr_nonnull(d = malloc(1U << 23));
	ck_assert_ptr_nonnull(gz = gzopen("../../lib/data/rcp_delta.bin.gz",
	    "rb"));
	ck_assert_int_eq(gzread(gz, d, 1U << 23), 1 << 23);
	gzclose(gz);
	for (m = 0; m < 1U << 23; m++) {
		a = peftio_u2f(0x3f800000U | m);
		if (peftio_f2u(peftio_gpu_rcp(a)) !=
		    peftio_f2u(1.0f / a) + (uint32_t)(int32_t)d[m])
			bad++;
	}
	free(d);
	ck_assert_uint_eq(bad, 0);
}
END_TEST

/* The batch form gives the bits of the single one, specials included. */
START_TEST(test_gpu_rcp_n)
{
	static const float special[] = { 0.0f, -0.0f, 0x1p-130f, -0x1p-149f,
	    INFINITY, -INFINITY, NAN, 0x1p127f, -0x1.fffffep127f, 0x1p126f,
	    0x1p-126f, 1.0f, -2.0f };
	float a[1000], r[1000];
	uint64_t seed = 11;
	size_t n, i;

	for (i = 0; i < 1000; i++)
		a[i] = i < 13 ? special[i] : peftio_u2f((uint32_t)tu_rand(&seed));
	/* Every length from 0, so that each batch starts at another entry. */
	for (n = 0; n <= 40; n++) {
		memset(r, 0xa5, sizeof(r));
		peftio_gpu_rcp_n(a + n, r, n);
		for (i = 0; i < n; i++)
			ck_assert_uint_eq(peftio_f2u(r[i]),
			    peftio_f2u(peftio_gpu_rcp(a[n + i])));
		ck_assert_uint_eq(peftio_f2u(r[n]), 0xa5a5a5a5U);
	}
	peftio_gpu_rcp_n(a, r, 1000);
	for (i = 0; i < 1000; i++)
		ck_assert_uint_eq(peftio_f2u(r[i]), peftio_f2u(peftio_gpu_rcp(a[i])));
}
END_TEST

/* ------------------------------------------------------------------ */
/* The committed sample of bitsandbytes' CUDA outputs                  */

struct sample {
	uint8_t	*buf;
	size_t	 len, pos;
};

static const void *
take(struct sample *s, size_t n)
{
	const void *p = s->buf + s->pos;

	ck_assert_msg(n <= s->len - s->pos, "codec-sample.bin truncated");
	s->pos += n;
	return p;
}

static uint64_t
take_u(struct sample *s, size_t n)
{
	const uint8_t *p = take(s, n);
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

struct sinput {
	enum peftio_dtype dt;
	int	 finite;
	uint64_t n;
	const void *data;
};

START_TEST(test_cuda_sample)
{
	static const enum peftio_dtype dtmap[] = { PEFTIO_F32, PEFTIO_F16,
	    PEFTIO_BF16 };
	struct sample s = { NULL, 0, 0 };
	struct sinput ins[64], *in;
	uint32_t ninputs, ncases, nb8, c, id, i, bs, nonfin = 0;
	uint64_t n, nb, nn, j, own_differ = 0, own_total = 0, deq = 0, dq = 0;
	int t, isdq, hasdeq, kind, impl;
	const uint8_t *packed, *qabsmax, *gdeq;
	const float *gabsmax_p, *gnested_p;
	float *am, *gam, *nested, *deqam, *gnested, off, goff;
	uint8_t *p, *q, *out;
	size_t es;

	impl = peftio_q4_impl_set(-1);
	if (_i > 0 && peftio_q4_impl_set(_i) < 0)
		return;			/* not on this CPU */
	s.buf = tu_read_file(SAMPLE, &s.len);
	ck_assert_mem_eq(take(&s, 8), "PQSAMPL1", 8);
	ninputs = (uint32_t)take_u(&s, 4);
	ncases = (uint32_t)take_u(&s, 4);
	nb8 = (uint32_t)take_u(&s, 4);
	ck_assert_uint_le(ninputs, 64);
	for (i = 0; i < ninputs; i++) {
		ins[i].dt = dtmap[take_u(&s, 1)];
		ins[i].finite = (int)take_u(&s, 1);
		take_u(&s, 2);
		ins[i].n = take_u(&s, 8);
		ins[i].data = take(&s, ins[i].n * esize(ins[i].dt));
	}
	for (c = 0; c < ncases; c++) {
		id = (uint32_t)take_u(&s, 4);
		i = (uint32_t)take_u(&s, 4);
		ck_assert_uint_lt(i, ninputs);
		in = &ins[i];
		t = (int)take_u(&s, 1);
		isdq = (int)take_u(&s, 1);
		hasdeq = (int)take_u(&s, 1);
		kind = (int)take_u(&s, 1);
		bs = (uint32_t)take_u(&s, 4);
		n = in->n;
		nb = (n + bs - 1) / bs;
		nn = (nb + 255) / 256;
		es = esize(in->dt);
		packed = take(&s, (n + 1) / 2);
		gabsmax_p = take(&s, nb * 4);
		gam = malloc(nb * 4);
		memcpy(gam, gabsmax_p, nb * 4);
		p = malloc((n + 1) / 2);
		am = malloc(nb * 4);
		ck_assert_int_eq(peftio_q4_quantize(t, in->dt, in->data, n, bs,
		    0, nb, p, am), 0);
		ck_assert_msg(memcmp(p, packed, (n + 1) / 2) == 0,
		    "case %u (kind %d): packed differs", id, kind);
		if (!in->finite)
			nonfin++;
		if (!isdq)
			ck_assert_msg(memcmp(am, gam, nb * 4) == 0,
			    "case %u: absmax differs", id);
		else {
			/* The 8-bit stage fed torch's own offset is exact. */
			dq++;
			goff = peftio_u2f((uint32_t)take_u(&s, 4));
			qabsmax = take(&s, nb);
			gnested_p = take(&s, nn * 4);
			gnested = malloc(nn * 4);
			memcpy(gnested, gnested_p, nn * 4);
			q = malloc(nb);
			nested = malloc(nn * 4);
			deqam = malloc(nb * 4);
			peftio_dq_quantize_offset(am, nb, 256, goff, q, nested);
			ck_assert_msg(memcmp(q, qabsmax, nb) == 0,
			    "case %u: DQ codes differ", id);
			ck_assert_msg(memcmp(nested, gnested, nn * 4) == 0,
			    "case %u: nested absmax differs", id);
			peftio_dq_dequantize(peftio_dynamic_map(), q, nested,
			    goff, nb, 256, deqam);
			ck_assert_msg(memcmp(deqam, gam, nb * 4) == 0,
			    "case %u: dequantized absmax differs", id);
			/* Our own mean may differ from torch's in the last
			 * bit; the codes only then, and rarely. */
			peftio_dq_quantize(am, nb, 256, &off, q, nested);
			for (j = 0; j < nb; j++)
				own_differ += q[j] != qabsmax[j];
			own_total += nb;
			if (peftio_f2u(off) == peftio_f2u(goff))
				ck_assert_mem_eq(q, qabsmax, nb);
			free(q);
			free(nested);
			free(deqam);
			free(gnested);
		}
		if (hasdeq) {
			deq++;
			gdeq = take(&s, n * es);
			out = malloc(n * es);
			ck_assert_int_eq(peftio_q4_dequantize(peftio_q4_code(t),
			    packed, gam, n, bs, 0, nb, in->dt, out), 0);
			ck_assert_msg(memcmp(out, gdeq, n * es) == 0,
			    "case %u: dequantized values differ", id);
			free(out);
		}
		free(p);
		free(am);
		free(gam);
	}
	ck_assert_uint_le(own_differ * 100, own_total);
	ck_assert_uint_ge(ncases, 60);
	ck_assert_uint_ge(dq, 20);
	ck_assert_uint_ge(deq, 10);
	ck_assert_uint_ge(nonfin, 1);

	/* bitsandbytes' 8-bit quantize_blockwise, blocksize 256. */
	for (c = 0; c < nb8; c++) {
		const float *x, *gab, *gd;
		const uint8_t *gq;
		float *xa, *ab, *d;

		n = take_u(&s, 8);
		nb = (n + 255) / 256;
		x = take(&s, n * 4);
		gq = take(&s, n);
		gab = take(&s, nb * 4);
		gd = take(&s, n * 4);
		xa = malloc(n * 4);
		ab = malloc(nb * 4);
		q = malloc(n);
		d = malloc(n * 4);
		memcpy(xa, x, n * 4);
		peftio_q8_quantize(peftio_dynamic_map(), xa, n, 256, 0, nb, q,
		    ab);
		ck_assert_mem_eq(q, gq, n);
		ck_assert_mem_eq(ab, gab, nb * 4);
		peftio_q8_dequantize(peftio_dynamic_map(), q, ab, n, 256, d);
		ck_assert_mem_eq(d, gd, n * 4);
		free(xa);
		free(ab);
		free(q);
		free(d);
	}
	ck_assert_uint_eq(s.pos, s.len);
	free(s.buf);
	peftio_q4_impl_set(impl);
}
END_TEST

Suite	*nf4_suite(void);

Suite *nf4_suite(void)
{
	Suite *s = suite_create("nf4");
	TCase *tc = tcase_create("nf4");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_tables);
	tcase_add_test(tc, test_bad_args);
	tcase_add_test(tc, test_published);
	tcase_add_test(tc, test_zero_block);
	tcase_add_test(tc, test_nonfinite);
	tcase_add_test(tc, test_absmax_finite);
	tcase_add_test(tc, test_odd_padding);
	tcase_add_test(tc, test_fp4_sign);
	tcase_add_test(tc, test_dequantize);
	tcase_add_test(tc, test_dequantize_special);
	tcase_add_loop_test(tc, test_fast_vs_ref, 0, 15);
	tcase_add_test(tc, test_gpu_rcp);
	tcase_add_test(tc, test_gpu_rcp_table);
	tcase_add_test(tc, test_gpu_rcp_n);
	tcase_add_loop_test(tc, test_cuda_sample, 0, NIMPL);
	suite_add_tcase(s, tc);
	return s;
}
