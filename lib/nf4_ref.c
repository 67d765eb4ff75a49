/*
 * nf4_ref.c - the 4-bit codecs' tables (bnb-nf4.md sections 1 and 2)
 * and the scalar reference that transcribes the CUDA kernel: the
 * specification the vector paths (nf4_simd.c) must match byte for
 * byte.
 */
#include <math.h>
#include <string.h>

#include "nf4_private.h"

/* Section 1.1: the NF4 code values. */
const union f32tab16 peftio_q4_nf4_code = {{
	0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0,
	0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
	0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
	0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000
}};

/* Section 1.2: FP4 (E2M1) divided by 12, index 8 stored as +0.0. */
const union f32tab16 peftio_q4_fp4_code = {{
	0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000,
	0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
	0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000,
	0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000
}};

/* Section 2 step 4: the NF4 thresholds t0..t14 (entry 15 unused). */
const union f32tab16 peftio_q4_nf4_thr = {{
	0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76,
	0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff,
	0x3df64863, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9,
	0x3f006d03, 0x3f248daf, 0x3f5c89d9, 0x7f800000
}};

/* Section 2 step 5: the FP4 magnitude thresholds (8..15 unused). */
const union f32tab16 peftio_q4_fp4_thr = {{
	0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555,
	0x3ed55556, 0x3f155550, 0x3f555555, 0x7f800000,
	0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000,
	0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000
}};

/* ------------------------------------------------------------------ */
/* The scalar reference                                                */
/* ------------------------------------------------------------------ */

/* dQuantizeNF4 (csrc/kernels.cu), literal. */
static uint8_t
nf4_tree(float x)
{
	if (x > 0.03979014977812767f)
		if (x > 0.3893125355243683f)
			if (x > 0.6427869200706482f)
				if (x > 0.8614784181118011f)
					return 15;
				else
					return 14;
			else if (x > 0.5016634166240692f)
				return 13;
			else
				return 12;
		else if (x > 0.2035212516784668f)
			if (x > 0.2920137718319893f)
				return 11;
			else
				return 10;
		else if (x > 0.1202552504837513f)
			return 9;
		else
			return 8;
	else if (x > -0.33967943489551544f)
		if (x > -0.13791173323988914f)
			if (x > -0.045525018125772476f)
				return 7;
			else
				return 6;
		else if (x > -0.23460740596055984f)
			return 5;
		else
			return 4;
	else if (x > -0.6106329262256622f)
		if (x > -0.4599952697753906f)
			return 3;
		else
			return 2;
	else if (x > -0.8480964004993439f)
		return 1;
	else
		return 0;
}

/* dQuantizeFP4 (csrc/kernels.cu), literal. */
static uint8_t
fp4_tree(float x)
{
	uint8_t sign = x < 0 ? 8 : 0;

	x = fabsf(x);
	if (x > 0.29166667f)
		if (x > 0.583333f)
			if (x > 0.8333333f)
				return 3 + sign;
			else
				return 2 + sign;
		else if (x > 0.4166667f)
			return 5 + sign;
		else
			return 4 + sign;
	else if (x > 0.0859375f)
		if (x > 0.20833333f)
			return 7 + sign;
		else
			return 6 + sign;
	else if (x > 0.00260417f)
		return 1 + sign;
	else
		return 0 + sign;
}

static inline uint8_t
q4_ref_code(enum peftio_q4type t, float v, float inv)
{
	float x = ftz(ftz(v) * inv);

	return t == PEFTIO_Q4_NF4 ? nf4_tree(x) : fp4_tree(x);
}

static float
absmax_ref(enum peftio_dtype dt, const uint8_t *in, uint64_t lo,
    uint64_t hi)
{
	float am = 0.0f, a;
	uint64_t i;

	for (i = lo; i < hi; i++) {
		a = fabsf(ftz(load_elem(dt, in, i)));
		if (a > am)		/* fmaxf: a NaN is ignored */
			am = a;
	}
	return am;
}

/* Arguments shared by the quantize and absmax entry points. */
int
peftio_q4_check_args(enum peftio_dtype dt, const void *in, uint64_t n, uint64_t bs,
    uint64_t b0, uint64_t b1, const void *out, int even)
{
	uint64_t nb;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return PEFTIO_EINVAL;
	if (bs == 0 || (even && bs % 2 != 0) || n > UINT64_MAX - bs)
		return PEFTIO_EINVAL;
	nb = (n + bs - 1) / bs;
	if (b0 > b1 || b1 > nb)
		return PEFTIO_EINVAL;
	if (b0 < b1 && (in == NULL || out == NULL))
		return PEFTIO_EINVAL;
	return PEFTIO_OK;
}

int
peftio_q4_check_type(enum peftio_q4type t, const void *packed, uint64_t b0,
    uint64_t b1)
{
	if (t != PEFTIO_Q4_NF4 && t != PEFTIO_Q4_FP4)
		return PEFTIO_EINVAL;
	if (b0 < b1 && packed == NULL)
		return PEFTIO_EINVAL;
	return PEFTIO_OK;
}

int
peftio_q4_quantize_ref(enum peftio_q4type t, enum peftio_dtype dt,
    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	const uint8_t *p = in;
	uint64_t b, i, lo, hi;
	float am, inv, v1;
	int rc;

	if ((rc = peftio_q4_check_args(dt, in, n, bs, b0, b1, absmax, 1)) != 0 ||
	    (rc = peftio_q4_check_type(t, packed, b0, b1)) != 0)
		return rc;
	for (b = b0; b < b1; b++) {
		lo = b * bs;
		hi = PEFTIO_MIN(n, lo + bs);
		am = absmax_ref(dt, p, lo, hi);
		absmax[b] = am;
		inv = peftio_gpu_rcp(am);
		for (i = lo; i < hi; i += 2) {
			/* An odd tail is padded with (T)0 (section 3). */
			v1 = i + 1 < hi ? load_elem(dt, p, i + 1) : 0.0f;
			packed[i / 2] = (uint8_t)(
			    q4_ref_code(t, load_elem(dt, p, i), inv) << 4 |
			    q4_ref_code(t, v1, inv));
		}
	}
	return PEFTIO_OK;
}
