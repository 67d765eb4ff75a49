/*
 * nf4.c - bitsandbytes' 4-bit blockwise codecs, NF4 and FP4.
 *
 * The scalar reference (peftio_q4_quantize_ref) transcribes the CUDA
 * kernel (bnb-nf4.md section 2) and is the specification: the kernel's
 * decision trees with its float literals, the GPU reciprocal, and the
 * flushing of subnormal operands and results that --use_fast_math
 * implies.  The production paths are branchless (portable C, and AVX-512
 * or AVX2 chosen at run time) and must give the same bytes on every
 * input; the unit tests compare them.
 *
 * Equivalences the fast paths rely on:
 *  - NF4: the tree is a binary search over 15 ascending thresholds with
 *    strict '>', so the code is the number of thresholds below x, and a
 *    NaN gets 0.
 *  - FP4: the magnitude tree is a binary search over 7 ascending
 *    thresholds; the rank r maps to the magnitude code {0,1,6,7,4,5,2,3}.
 *  - Flushing: the GPU flushes a subnormal element to zero before the
 *    multiply, and a subnormal product after it.  Both only change a code
 *    when the block's absmax is below about 2^-117 (or through the FP4
 *    sign bit, handled by testing both v and x against -FLT_MIN), so
 *    blocks with absmax >= 2^-100 skip the flush.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "peftio_private.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define Q4_X86	1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define FLT_MIN_BITS	0x00800000U	/* smallest normal float */
#define NOFLUSH_MIN	0x1p-100f	/* absmax from which flushing is moot */

enum { Q4_IMPL_REF, Q4_IMPL_PORTABLE, Q4_IMPL_AVX512, Q4_IMPL_AVX2 };

union f32tab16 {
	uint32_t u[16];
	float	 f[16];
};

/* Section 1.1: the NF4 code values. */
static const union f32tab16 nf4_code = {{
	0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0,
	0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
	0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
	0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000
}};

/* Section 1.2: FP4 (E2M1) divided by 12, index 8 stored as +0.0. */
static const union f32tab16 fp4_code = {{
	0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000,
	0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
	0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000,
	0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000
}};

/* Section 2 step 4: the NF4 thresholds t0..t14 (entry 15 unused). */
static const union f32tab16 nf4_thr = {{
	0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76,
	0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff,
	0x3df64863, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9,
	0x3f006d03, 0x3f248daf, 0x3f5c89d9, 0x7f800000
}};

/* Section 2 step 5: the FP4 magnitude thresholds (8..15 unused). */
static const union f32tab16 fp4_thr = {{
	0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555,
	0x3ed55556, 0x3f155550, 0x3f555555, 0x7f800000,
	0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000,
	0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000
}};

static pthread_once_t q4_impl_once = PTHREAD_ONCE_INIT;
static int q4_impl;		/* Q4_IMPL_*, see q4_impl_init() */

/* Little-endian loads and stores (safetensors byte order). */
static inline uint16_t
ld16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t
ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static inline void
st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void
st32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Exact f16 -> f32 widening, subnormals, Inf and NaN included. */
static inline float
f16_to_f32(uint16_t h)
{
	uint32_t s = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;

	if (e == 0x1f)
		return peftio_u2f(s | 0x7f800000U | m << 13);
	if (e != 0)
		return peftio_u2f(s | (e + 112) << 23 | m << 13);
	return peftio_u2f(s | peftio_f2u((float)m * 0x1p-24f));	/* exact */
}

/* Element i of a little-endian F32, F16 or BF16 array. */
static inline float
load_elem(enum peftio_dtype dt, const uint8_t *in, uint64_t i)
{
	switch (dt) {
	case PEFTIO_F32:
		return peftio_u2f(ld32(in + 4 * i));
	case PEFTIO_F16:
		return f16_to_f32(ld16(in + 2 * i));
	default:
		return peftio_u2f((uint32_t)ld16(in + 2 * i) << 16);
	}
}

/*
 * f32 -> bf16 and f16, round to nearest even, as the dequantization
 * kernel's (T) conversion; any NaN becomes the GPU's canonical 0x7fff.
 */
static inline uint16_t
f32_to_bf16(float f)
{
	uint32_t u = peftio_f2u(f);

	if ((u & 0x7fffffffU) > 0x7f800000U)
		return 0x7fff;
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static inline uint16_t
f32_to_f16(float f)
{
	uint32_t u = peftio_f2u(f), a = u & 0x7fffffffU, r;
	uint16_t s = (uint16_t)((u >> 16) & 0x8000);

	if (a > 0x7f800000U)
		return 0x7fff;
	if (a >= 0x477ff000U)		/* 65520 and up round to Inf */
		return (uint16_t)(s | 0x7c00);
	if (a >= 0x38800000U) {		/* normal half */
		r = a - ((uint32_t)(127 - 15) << 23);
		r += 0xfff + ((r >> 13) & 1);
		return (uint16_t)(s | (r >> 13));
	}
	/* Subnormal half: adding 0.5 rounds to a multiple of 2^-24. */
	r = peftio_f2u(peftio_u2f(a) + 0.5f) - 0x3f000000U;
	return (uint16_t)(s | r);
}

/* --use_fast_math (.ftz): a subnormal counts as a zero of its sign. */
static inline float
ftz(float x)
{
	return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x;
}

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
static int
q4_check(enum peftio_dtype dt, const void *in, uint64_t n, uint64_t bs,
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

static int
q4_check_type(enum peftio_q4type t, const void *packed, uint64_t b0,
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

	if ((rc = q4_check(dt, in, n, bs, b0, b1, absmax, 1)) != 0 ||
	    (rc = q4_check_type(t, packed, b0, b1)) != 0)
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

/* ------------------------------------------------------------------ */
/* Portable branchless path                                            */
/* ------------------------------------------------------------------ */

#define CHUNK	32

/* Absolute-value bits of elements [lo, hi), NaN as 0, maximum. */
static float
absmax_portable(enum peftio_dtype dt, const uint8_t *in, uint64_t lo,
    uint64_t hi)
{
	uint32_t m = 0, a;
	uint64_t i;

	switch (dt) {
	case PEFTIO_F32:
		for (i = lo; i < hi; i++) {
			a = ld32(in + 4 * i) & 0x7fffffffU;
			a = a > 0x7f800000U ? 0 : a;
			m = a > m ? a : m;
		}
		break;
	case PEFTIO_BF16:
		for (i = lo; i < hi; i++) {
			a = ld16(in + 2 * i) & 0x7fffU;
			a = a > 0x7f80U ? 0 : a;
			m = a > m ? a : m;
		}
		m <<= 16;
		break;
	default:
		for (i = lo; i < hi; i++) {
			a = ld16(in + 2 * i) & 0x7fffU;
			a = a > 0x7c00U ? 0 : a;
			m = a > m ? a : m;
		}
		return f16_to_f32((uint16_t)m);
	}
	return m < FLT_MIN_BITS ? 0.0f : peftio_u2f(m);
}

/*
 * Codes of elements [lo, hi) of one block (lo even), a chunk at a time:
 * widen, flush subnormals, multiply, count the thresholds below, pack.
 * Fixed-length loops without branches, so the compiler can vectorize.
 */
static void
q4_codes_portable(enum peftio_q4type t, enum peftio_dtype dt,
    const uint8_t *in, uint64_t lo, uint64_t hi, float inv, uint8_t *packed)
{
	float v[CHUNK], x[CHUNK];
	uint32_t c[CHUNK], s[CHUNK];
	uint64_t i, len;
	unsigned j, k;

	for (i = lo; i < hi; i += len) {
		len = PEFTIO_MIN(CHUNK, hi - i);
		if (len == CHUNK && dt == PEFTIO_F32)
			for (j = 0; j < CHUNK; j++)
				v[j] = peftio_u2f(ld32(in + 4 * (i + j)));
		else if (len == CHUNK && dt == PEFTIO_BF16)
			for (j = 0; j < CHUNK; j++)
				v[j] = peftio_u2f((uint32_t)ld16(in + 2 * (i + j)) <<
				    16);
		else {
			for (j = 0; j < len; j++)
				v[j] = load_elem(dt, in, i + j);
			for (; j < CHUNK; j++)
				v[j] = 0.0f;	/* padding, section 2 step 7 */
		}
		for (j = 0; j < CHUNK; j++) {
			x[j] = fabsf(v[j]) < 0x1p-126f ? 0.0f : v[j];
			x[j] = x[j] * inv;
			c[j] = 0;
		}
		if (t == PEFTIO_Q4_NF4) {
			for (k = 0; k < 15; k++)
				for (j = 0; j < CHUNK; j++)
					c[j] += x[j] > nf4_thr.f[k];
		} else {
			for (j = 0; j < CHUNK; j++) {
				/* v flushed: x <= -FLT_MIN iff GPU x < 0. */
				s[j] = x[j] <= -0x1p-126f ? 8 : 0;
				x[j] = fabsf(x[j]);
			}
			for (k = 0; k < 7; k++)
				for (j = 0; j < CHUNK; j++)
					c[j] += x[j] > fp4_thr.f[k];
			/* Rank r to {0,1,6,7,4,5,2,3}: r ^ (r & 2) << 1. */
			for (j = 0; j < CHUNK; j++)
				c[j] = (c[j] ^ (c[j] & 2) << 1) | s[j];
		}
		for (j = 0; j < (len + 1) / 2; j++)
			packed[i / 2 + j] = (uint8_t)(c[2 * j] << 4 |
			    c[2 * j + 1]);
	}
}

/* ------------------------------------------------------------------ */
/* AVX-512                                                             */
/* ------------------------------------------------------------------ */

#ifdef Q4_X86
#define AVX512	__attribute__((target("avx512f")))
#define PREFETCH	4096	/* bytes ahead of the absmax pass */

static inline size_t
dt_size(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 ? 4 : 2;
}

static inline AVX512 __m512
ld16_avx512(enum peftio_dtype dt, const uint8_t *p)
{
	switch (dt) {
	case PEFTIO_F32:
		return _mm512_loadu_ps(p);
	case PEFTIO_F16:
		return _mm512_cvtph_ps(_mm256_loadu_si256((const void *)p));
	default:
		return _mm512_castsi512_ps(_mm512_slli_epi32(
		    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)p)),
		    16));
	}
}

/* Absmax of len (a multiple of 32) elements, as absmax_portable(). */
static inline AVX512 float
absmax_avx512(enum peftio_dtype dt, const uint8_t *p, uint64_t len)
{
	const __m512i absm = _mm512_set1_epi32(0x7fffffff);
	const __m512i inf = _mm512_set1_epi32(0x7f800000);
	__m512i m0 = _mm512_setzero_si512(), m1 = m0, a0, a1;
	uint64_t j;
	size_t es = dt_size(dt);
	uintptr_t ahead;
	uint32_t m;

	for (j = 0; j < len; j += 32) {
		/* The hardware prefetcher alone leaves the loads waiting. */
		ahead = (uintptr_t)p + j * es + PREFETCH;
		_mm_prefetch((const char *)ahead, _MM_HINT_T0);
		if (es == 4)
			_mm_prefetch((const char *)(ahead + 64), _MM_HINT_T0);
		a0 = _mm512_and_si512(_mm512_castps_si512(
		    ld16_avx512(dt, p + j * es)), absm);
		a1 = _mm512_and_si512(_mm512_castps_si512(
		    ld16_avx512(dt, p + (j + 16) * es)), absm);
		m0 = _mm512_mask_max_epu32(m0,
		    _mm512_cmple_epu32_mask(a0, inf), m0, a0);
		m1 = _mm512_mask_max_epu32(m1,
		    _mm512_cmple_epu32_mask(a1, inf), m1, a1);
	}
	m = _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));
	return m < FLT_MIN_BITS ? 0.0f : peftio_u2f(m);
}

/* 16 codes, one per 32-bit lane. */
static inline AVX512 __m512i
codes_avx512(enum peftio_q4type t, int flush, __m512 v, __m512 inv,
    __m512 thr, __m512i perm)
{
	const __m512 nmin = _mm512_set1_ps(-0x1p-126f);
	__m512i i, absv;
	__m512 x, a;
	__mmask16 m, s;

	if (flush) {
		absv = _mm512_and_si512(_mm512_castps_si512(v),
		    _mm512_set1_epi32(0x7fffffff));
		m = _mm512_cmplt_epu32_mask(absv, _mm512_set1_epi32(
		    FLT_MIN_BITS));
		v = _mm512_mask_mov_ps(v, m, _mm512_setzero_ps());
	}
	x = _mm512_mul_ps(v, inv);
	if (t == PEFTIO_Q4_NF4) {
		m = _mm512_cmp_ps_mask(x, _mm512_set1_ps(nf4_thr.f[7]),
		    _CMP_GT_OQ);
		i = _mm512_maskz_mov_epi32(m, _mm512_set1_epi32(8));
		m = _mm512_cmp_ps_mask(x, _mm512_permutexvar_ps(
		    _mm512_add_epi32(i, _mm512_set1_epi32(3)), thr),
		    _CMP_GT_OQ);
		i = _mm512_mask_add_epi32(i, m, i, _mm512_set1_epi32(4));
		m = _mm512_cmp_ps_mask(x, _mm512_permutexvar_ps(
		    _mm512_add_epi32(i, _mm512_set1_epi32(1)), thr),
		    _CMP_GT_OQ);
		i = _mm512_mask_add_epi32(i, m, i, _mm512_set1_epi32(2));
		m = _mm512_cmp_ps_mask(x, _mm512_permutexvar_ps(i, thr),
		    _CMP_GT_OQ);
		return _mm512_mask_add_epi32(i, m, i, _mm512_set1_epi32(1));
	}
	a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x),
	    _mm512_set1_epi32(0x7fffffff)));
	m = _mm512_cmp_ps_mask(a, _mm512_set1_ps(fp4_thr.f[3]), _CMP_GT_OQ);
	i = _mm512_maskz_mov_epi32(m, _mm512_set1_epi32(4));
	m = _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(
	    _mm512_add_epi32(i, _mm512_set1_epi32(1)), thr), _CMP_GT_OQ);
	i = _mm512_mask_add_epi32(i, m, i, _mm512_set1_epi32(2));
	m = _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(i, thr), _CMP_GT_OQ);
	i = _mm512_mask_add_epi32(i, m, i, _mm512_set1_epi32(1));
	i = _mm512_permutexvar_epi32(i, perm);
	/* Sign only for a normal negative v whose product stays normal. */
	s = _mm512_cmp_ps_mask(v, nmin, _CMP_LE_OQ);
	s = _mm512_mask_cmp_ps_mask(s, x, nmin, _CMP_LE_OQ);
	return _mm512_mask_or_epi32(i, s, i, _mm512_set1_epi32(8));
}

/* Byte k = lane 2k << 4 | lane 2k+1, for 16 lanes. */
static inline AVX512 __m128i
pack_avx512(__m512i c)
{
	return _mm512_cvtepi64_epi8(_mm512_or_si512(_mm512_slli_epi64(c, 4),
	    _mm512_srli_epi64(c, 32)));
}

static inline AVX512 void
block_avx512(enum peftio_q4type t, enum peftio_dtype dt, int flush,
    const uint8_t *p, uint64_t len, __m512 inv, __m512 thr, __m512i perm,
    uint8_t *out)
{
	size_t es = dt_size(dt);
	__m512i c0, c1;
	uint64_t j;

	for (j = 0; j < len; j += 32) {
		c0 = codes_avx512(t, flush, ld16_avx512(dt, p + j * es), inv,
		    thr, perm);
		c1 = codes_avx512(t, flush, ld16_avx512(dt, p + (j + 16) * es),
		    inv, thr, perm);
		_mm_storeu_si128((void *)(out + j / 2), _mm_unpacklo_epi64(
		    pack_avx512(c0), pack_avx512(c1)));
	}
}

/*
 * Full blocks [b0, b1); bs is a multiple of 32.  A group of blocks at a
 * time: the absmax reductions and reciprocals of a group do not wait on
 * each other.
 */
#define GROUP	16

static inline AVX512 void
blocks_avx512_t(enum peftio_q4type t, enum peftio_dtype dt,
    const uint8_t *in, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	const __m512 thr = _mm512_loadu_ps(t == PEFTIO_Q4_NF4 ?
	    nf4_thr.f : fp4_thr.f);
	/* FP4 magnitude code of each rank (section 2 step 5). */
	const __m512i perm = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0,
	    3, 2, 5, 4, 7, 6, 1, 0);
	size_t es = dt_size(dt);
	float inv[GROUP];
	uint64_t b, g, ng;

	for (g = b0; g < b1; g += ng) {
		ng = PEFTIO_MIN(GROUP, b1 - g);
		for (b = 0; b < ng; b++)
			absmax[g + b] = absmax_avx512(dt,
			    in + (g + b) * bs * es, bs);
		for (b = 0; b < ng; b++)
			inv[b] = peftio_gpu_rcp(absmax[g + b]);
		for (b = 0; b < ng; b++) {
			if (absmax[g + b] >= NOFLUSH_MIN)
				block_avx512(t, dt, 0, in + (g + b) * bs * es,
				    bs, _mm512_set1_ps(inv[b]), thr, perm,
				    packed + (g + b) * bs / 2);
			else
				block_avx512(t, dt, 1, in + (g + b) * bs * es,
				    bs, _mm512_set1_ps(inv[b]), thr, perm,
				    packed + (g + b) * bs / 2);
		}
	}
}

/* One instance per type pair, so the inner loops carry no switches. */
static AVX512 void
blocks_avx512(enum peftio_q4type t, enum peftio_dtype dt, const uint8_t *in,
    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *packed, float *absmax)
{
#define Q4_CASE(T, D)							\
	if (t == (T) && dt == (D)) {					\
		blocks_avx512_t((T), (D), in, bs, b0, b1, packed, absmax); \
		return;							\
	}
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_F32)
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_BF16)
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_F16)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_F32)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_BF16)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_F16)
#undef Q4_CASE
}

static AVX512 void
absmax_blocks_avx512(enum peftio_dtype dt, const uint8_t *in, uint64_t bs,
    uint64_t b0, uint64_t b1, float *absmax)
{
	size_t es = dt_size(dt);
	uint64_t b;

	for (b = b0; b < b1; b++)
		absmax[b] = absmax_avx512(dt, in + b * bs * es, bs);
}

/* ------------------------------------------------------------------ */
/* AVX2 (with F16C)                                                    */
/* ------------------------------------------------------------------ */

#define AVX2	__attribute__((target("avx2,f16c")))

static inline AVX2 __m256
ld8_avx2(enum peftio_dtype dt, const uint8_t *p)
{
	switch (dt) {
	case PEFTIO_F32:
		return _mm256_loadu_ps((const void *)p);
	case PEFTIO_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const void *)p));
	default:
		return _mm256_castsi256_ps(_mm256_slli_epi32(
		    _mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)p)),
		    16));
	}
}

/* Absmax of len (a multiple of 32) elements, as absmax_portable(). */
static inline AVX2 float
absmax_avx2(enum peftio_dtype dt, const uint8_t *p, uint64_t len)
{
	const __m256i absm = _mm256_set1_epi32(0x7fffffff);
	const __m256i inf = _mm256_set1_epi32(0x7f800000);
	__m256i m0 = _mm256_setzero_si256(), m1 = m0, a0, a1;
	__m128i h;
	size_t es = dt_size(dt);
	uintptr_t ahead;
	uint64_t j;
	uint32_t m;

	for (j = 0; j < len; j += 16) {
		ahead = (uintptr_t)p + j * es + PREFETCH;
		_mm_prefetch((const char *)ahead, _MM_HINT_T0);
		a0 = _mm256_and_si256(_mm256_castps_si256(
		    ld8_avx2(dt, p + j * es)), absm);
		a1 = _mm256_and_si256(_mm256_castps_si256(
		    ld8_avx2(dt, p + (j + 8) * es)), absm);
		/* A NaN (above Inf as an integer) counts as 0. */
		a0 = _mm256_andnot_si256(_mm256_cmpgt_epi32(a0, inf), a0);
		a1 = _mm256_andnot_si256(_mm256_cmpgt_epi32(a1, inf), a1);
		m0 = _mm256_max_epu32(m0, a0);
		m1 = _mm256_max_epu32(m1, a1);
	}
	m0 = _mm256_max_epu32(m0, m1);
	h = _mm_max_epu32(_mm256_castsi256_si128(m0),
	    _mm256_extracti128_si256(m0, 1));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
	m = (uint32_t)_mm_cvtsi128_si32(h);
	return m < FLT_MIN_BITS ? 0.0f : peftio_u2f(m);
}

/* 8 codes, one per 32-bit lane: the number of thresholds below. */
static inline AVX2 __m256i
codes_avx2(enum peftio_q4type t, int flush, __m256 v, __m256 inv,
    const __m256 *thr)
{
	const __m256 nmin = _mm256_set1_ps(-0x1p-126f);
	__m256i c = _mm256_setzero_si256(), r, absv;
	__m256 x, a, s;
	int k;

	if (flush) {
		absv = _mm256_and_si256(_mm256_castps_si256(v),
		    _mm256_set1_epi32(0x7fffffff));
		v = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(
		    _mm256_set1_epi32(FLT_MIN_BITS), absv),
		    _mm256_castps_si256(v)));
	}
	x = _mm256_mul_ps(v, inv);
	if (t == PEFTIO_Q4_NF4) {
		for (k = 0; k < 15; k++)
			c = _mm256_sub_epi32(c, _mm256_castps_si256(
			    _mm256_cmp_ps(x, thr[k], _CMP_GT_OQ)));
		return c;
	}
	a = _mm256_and_ps(x, _mm256_castsi256_ps(
	    _mm256_set1_epi32(0x7fffffff)));
	for (k = 0; k < 7; k++)
		c = _mm256_sub_epi32(c, _mm256_castps_si256(
		    _mm256_cmp_ps(a, thr[k], _CMP_GT_OQ)));
	/* Rank to code: {0,1,6,7,4,5,2,3} is r ^ (r & 2) << 1. */
	r = _mm256_xor_si256(c, _mm256_slli_epi32(_mm256_and_si256(c,
	    _mm256_set1_epi32(2)), 1));
	/* Sign only for a normal negative v whose product stays normal. */
	s = _mm256_and_ps(_mm256_cmp_ps(v, nmin, _CMP_LE_OQ),
	    _mm256_cmp_ps(x, nmin, _CMP_LE_OQ));
	return _mm256_or_si256(r, _mm256_and_si256(_mm256_castps_si256(s),
	    _mm256_set1_epi32(8)));
}

static inline AVX2 void
block_avx2(enum peftio_q4type t, enum peftio_dtype dt, int flush,
    const uint8_t *p, uint64_t len, __m256 inv, const __m256 *thr,
    uint8_t *out)
{
	const __m256i pairs = _mm256_set1_epi16(0x0110);	/* {16, 1} */
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	size_t es = dt_size(dt);
	__m256i c0, c1, c2, c3, b, w;
	uint64_t j;

	for (j = 0; j < len; j += 32) {
		c0 = codes_avx2(t, flush, ld8_avx2(dt, p + j * es), inv, thr);
		c1 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 8) * es),
		    inv, thr);
		c2 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 16) * es),
		    inv, thr);
		c3 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 24) * es),
		    inv, thr);
		/* 32 codes as bytes in element order, then byte pairs. */
		b = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1),
		    _mm256_packus_epi32(c2, c3));
		b = _mm256_permutevar8x32_epi32(b, order);
		w = _mm256_maddubs_epi16(b, pairs);
		w = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
		_mm_storeu_si128((void *)(out + j / 2),
		    _mm256_castsi256_si128(w));
	}
}

static inline AVX2 void
blocks_avx2_t(enum peftio_q4type t, enum peftio_dtype dt,
    const uint8_t *in, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	const float *tf = t == PEFTIO_Q4_NF4 ? nf4_thr.f : fp4_thr.f;
	size_t es = dt_size(dt);
	float inv[GROUP];
	__m256 thr[15];
	uint64_t b, g, ng;
	int k;

	for (k = 0; k < 15; k++)
		thr[k] = _mm256_set1_ps(tf[k]);
	for (g = b0; g < b1; g += ng) {
		ng = PEFTIO_MIN(GROUP, b1 - g);
		for (b = 0; b < ng; b++)
			absmax[g + b] = absmax_avx2(dt,
			    in + (g + b) * bs * es, bs);
		for (b = 0; b < ng; b++)
			inv[b] = peftio_gpu_rcp(absmax[g + b]);
		for (b = 0; b < ng; b++) {
			if (absmax[g + b] >= NOFLUSH_MIN)
				block_avx2(t, dt, 0, in + (g + b) * bs * es,
				    bs, _mm256_set1_ps(inv[b]), thr,
				    packed + (g + b) * bs / 2);
			else
				block_avx2(t, dt, 1, in + (g + b) * bs * es,
				    bs, _mm256_set1_ps(inv[b]), thr,
				    packed + (g + b) * bs / 2);
		}
	}
}

static AVX2 void
blocks_avx2(enum peftio_q4type t, enum peftio_dtype dt, const uint8_t *in,
    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *packed, float *absmax)
{
#define Q4_CASE(T, D)							\
	if (t == (T) && dt == (D)) {					\
		blocks_avx2_t((T), (D), in, bs, b0, b1, packed, absmax); \
		return;							\
	}
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_F32)
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_BF16)
	Q4_CASE(PEFTIO_Q4_NF4, PEFTIO_F16)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_F32)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_BF16)
	Q4_CASE(PEFTIO_Q4_FP4, PEFTIO_F16)
#undef Q4_CASE
}

static AVX2 void
absmax_blocks_avx2(enum peftio_dtype dt, const uint8_t *in, uint64_t bs,
    uint64_t b0, uint64_t b1, float *absmax)
{
	size_t es = dt_size(dt);
	uint64_t b;

	for (b = b0; b < b1; b++)
		absmax[b] = absmax_avx2(dt, in + b * bs * es, bs);
}

/* AVX2 and F16C, with the OS saving the YMM state. */
static int
have_avx2(void)
{
	unsigned a, b, c, d;

	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	return (c >> 29) & 1;
}
#endif /* Q4_X86 */

/* ------------------------------------------------------------------ */
/* Dispatch and the public functions                                   */
/* ------------------------------------------------------------------ */

/* The best implementation this CPU runs, chosen once. */
static void
q4_impl_init(void)
{
	int impl = Q4_IMPL_PORTABLE;

#ifdef Q4_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		impl = Q4_IMPL_AVX512;
	else if (have_avx2())
		impl = Q4_IMPL_AVX2;
#endif
	__atomic_store_n(&q4_impl, impl, __ATOMIC_RELAXED);
}

static int
q4_impl_get(void)
{
	pthread_once(&q4_impl_once, q4_impl_init);
	return __atomic_load_n(&q4_impl, __ATOMIC_RELAXED);
}

int
peftio_q4_impl_set(int impl)
{
	int old = q4_impl_get();

	if (impl < 0)
		return old;
	if (impl > Q4_IMPL_AVX2)
		return -1;
#ifdef Q4_X86
	if (impl == Q4_IMPL_AVX512 && !__builtin_cpu_supports("avx512f"))
		return -1;
	if (impl == Q4_IMPL_AVX2 && !have_avx2())
		return -1;
#else
	if (impl >= Q4_IMPL_AVX512)
		return -1;
#endif
	__atomic_store_n(&q4_impl, impl, __ATOMIC_RELAXED);
	return old;
}

const float *
peftio_q4_code(enum peftio_q4type t)
{
	switch (t) {
	case PEFTIO_Q4_NF4:
		return nf4_code.f;
	case PEFTIO_Q4_FP4:
		return fp4_code.f;
	}
	return NULL;
}

int
peftio_q4_blocksize_ok(uint64_t bs)
{
	return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0;
}

int
peftio_q4_quantize(enum peftio_q4type t, enum peftio_dtype dt,
    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	const uint8_t *p = in;
	uint64_t b = b0, lo, hi;
	float am, inv;
	int rc, impl;

	if ((rc = q4_check(dt, in, n, bs, b0, b1, absmax, 1)) != 0 ||
	    (rc = q4_check_type(t, packed, b0, b1)) != 0)
		return rc;
	impl = q4_impl_get();
	if (impl == Q4_IMPL_REF)
		return peftio_q4_quantize_ref(t, dt, in, n, bs, b0, b1, packed,
		    absmax);
#ifdef Q4_X86
	if (impl >= Q4_IMPL_AVX512 && bs % 32 == 0 && b < n / bs) {
		if (impl == Q4_IMPL_AVX512)
			blocks_avx512(t, dt, p, bs, b, PEFTIO_MIN(b1, n / bs),
			    packed, absmax);
		else
			blocks_avx2(t, dt, p, bs, b, PEFTIO_MIN(b1, n / bs),
			    packed, absmax);
		b = PEFTIO_MIN(b1, n / bs);
	}
#endif
	for (; b < b1; b++) {
		lo = b * bs;
		hi = PEFTIO_MIN(n, lo + bs);
		am = absmax_portable(dt, p, lo, hi);
		absmax[b] = am;
		inv = peftio_gpu_rcp(am);
		q4_codes_portable(t, dt, p, lo, hi, inv, packed);
	}
	return PEFTIO_OK;
}

int
peftio_q4_absmax(enum peftio_dtype dt, const void *in, uint64_t n,
    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax)
{
	const uint8_t *p = in;
	uint64_t b = b0;
	int rc, impl;

	if ((rc = q4_check(dt, in, n, bs, b0, b1, absmax, 0)) != 0)
		return rc;
#ifdef Q4_X86
	impl = q4_impl_get();
	if (impl >= Q4_IMPL_AVX512 && bs % 32 == 0 && b < n / bs) {
		if (impl == Q4_IMPL_AVX512)
			absmax_blocks_avx512(dt, p, bs, b,
			    PEFTIO_MIN(b1, n / bs), absmax);
		else
			absmax_blocks_avx2(dt, p, bs, b,
			    PEFTIO_MIN(b1, n / bs), absmax);
		b = PEFTIO_MIN(b1, n / bs);
	}
#else
	(void)impl;
#endif
	for (; b < b1; b++)
		absmax[b] = absmax_portable(dt, p, b * bs,
		    PEFTIO_MIN(n, b * bs + bs));
	return PEFTIO_OK;
}

/* Elements [lo, hi) of a dequantized block from a 16-entry table. */
static void
deq_block32(const uint8_t *packed, uint64_t lo, uint64_t hi,
    const uint32_t *tab, uint8_t *o)
{
	uint64_t i = lo;
	unsigned c;

	if (i < hi && (i & 1)) {
		st32(o + 4 * i, tab[packed[i / 2] & 15]);
		i++;
	}
	for (; i + 1 < hi; i += 2) {
		c = packed[i / 2];
		st32(o + 4 * i, tab[c >> 4]);
		st32(o + 4 * i + 4, tab[c & 15]);
	}
	if (i < hi)
		st32(o + 4 * i, tab[packed[i / 2] >> 4]);
}

static void
deq_block16(const uint8_t *packed, uint64_t lo, uint64_t hi,
    const uint16_t *tab, uint8_t *o)
{
	uint64_t i = lo;
	unsigned c;

	if (i < hi && (i & 1)) {
		st16(o + 2 * i, tab[packed[i / 2] & 15]);
		i++;
	}
	for (; i + 1 < hi; i += 2) {
		c = packed[i / 2];
		st16(o + 2 * i, tab[c >> 4]);
		st16(o + 2 * i + 2, tab[c & 15]);
	}
	if (i < hi)
		st16(o + 2 * i, tab[packed[i / 2] >> 4]);
}

/*
 * CUDA's kDequantizeBlockwise: code[q] * absmax in f32 (a subnormal
 * operand or product flushed, a NaN product written as the GPU's
 * canonical 0x7fffffff), then converted to the output type.  The FP4
 * kernel decodes magnitude and sign separately, so a zero entry under a
 * set sign bit (FP4 index 8) comes out as -0.0.
 */
int
peftio_q4_dequantize(const float *code, const uint8_t *packed,
    const float *absmax, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
    enum peftio_dtype dt, void *out)
{
	uint8_t *o = out;
	uint32_t u[16];
	uint16_t h[16];
	float c[16], am;
	uint64_t b, lo, hi, nb;
	unsigned k;

	if (code == NULL || bs == 0 || n > UINT64_MAX - bs)
		return PEFTIO_EINVAL;
	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return PEFTIO_EINVAL;
	nb = (n + bs - 1) / bs;
	if (b0 > b1 || b1 > nb)
		return PEFTIO_EINVAL;
	if (b0 < b1 && (packed == NULL || absmax == NULL || out == NULL))
		return PEFTIO_EINVAL;
	for (k = 0; k < 16; k++) {
		c[k] = code[k];
		if (c[k] == 0.0f && (k & 8))
			c[k] = -0.0f;
	}
	for (b = b0; b < b1; b++) {
		am = ftz(absmax[b]);
		for (k = 0; k < 16; k++) {
			u[k] = peftio_f2u(c[k] * am);
			if ((u[k] & 0x7fffffffU) > 0x7f800000U)
				u[k] = 0x7fffffffU;
			else if ((u[k] & 0x7f800000U) == 0)
				u[k] &= 0x80000000U;
		}
		lo = b * bs;
		hi = PEFTIO_MIN(n, lo + bs);
		if (dt == PEFTIO_F32) {
			deq_block32(packed, lo, hi, u, o);
			continue;
		}
		if (dt == PEFTIO_F16)
			for (k = 0; k < 16; k++)
				h[k] = f32_to_f16(peftio_u2f(u[k]));
		else
			for (k = 0; k < 16; k++)
				h[k] = f32_to_bf16(peftio_u2f(u[k]));
		deq_block16(packed, lo, hi, h, o);
	}
	return PEFTIO_OK;
}
