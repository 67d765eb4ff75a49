/*
 * nf4_simd.c - the production paths of the 4-bit codecs: branchless
 * portable C, AVX-512 and AVX2 (with F16C).  nf4.c chooses one at run
 * time; each gives the bytes of the reference (nf4_ref.c).
 */
#include <math.h>
#include <string.h>

#include "nf4_private.h"

/* ------------------------------------------------------------------ */
/* Portable branchless path                                            */
/* ------------------------------------------------------------------ */

#define CHUNK	32

/* Absolute-value bits of elements [lo, hi), NaN as 0, maximum. */
float
peftio_q4_absmax_portable(enum peftio_dtype dt, const uint8_t *in, uint64_t lo,
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
void
peftio_q4_codes_portable(enum peftio_q4type t, enum peftio_dtype dt,
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
					c[j] += x[j] > peftio_q4_nf4_thr.f[k];
		} else {
			for (j = 0; j < CHUNK; j++) {
				/* v flushed: x <= -FLT_MIN iff GPU x < 0. */
				s[j] = x[j] <= -0x1p-126f ? 8 : 0;
				x[j] = fabsf(x[j]);
			}
			for (k = 0; k < 7; k++)
				for (j = 0; j < CHUNK; j++)
					c[j] += x[j] > peftio_q4_fp4_thr.f[k];
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

/* Absmax of len (a multiple of 32) elements, as peftio_q4_absmax_portable(). */
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
		m = _mm512_cmp_ps_mask(x, _mm512_set1_ps(peftio_q4_nf4_thr.f[7]),
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
	m = _mm512_cmp_ps_mask(a, _mm512_set1_ps(peftio_q4_fp4_thr.f[3]), _CMP_GT_OQ);
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
	    peftio_q4_nf4_thr.f : peftio_q4_fp4_thr.f);
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
		peftio_gpu_rcp_n(absmax + g, inv, ng);
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
AVX512 void
peftio_q4_blocks_avx512(enum peftio_q4type t, enum peftio_dtype dt, const uint8_t *in,
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

AVX512 void
peftio_q4_absmax_blocks_avx512(enum peftio_dtype dt, const uint8_t *in, uint64_t bs,
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

/*
 * The largest |value| of len (a multiple of 16) elements as f32 bits;
 * with nan0 a NaN counts as 0, else as what its bits say (above Inf).
 */
static inline AVX2 uint32_t
absbits_avx2(enum peftio_dtype dt, const uint8_t *p, uint64_t len, int nan0)
{
	const __m256i absm = _mm256_set1_epi32(0x7fffffff);
	const __m256i inf = _mm256_set1_epi32(0x7f800000);
	__m256i m0 = _mm256_setzero_si256(), m1 = m0, a0, a1;
	__m128i h;
	size_t es = dt_size(dt);
	uintptr_t ahead;
	uint64_t j;

	for (j = 0; j < len; j += 16) {
		ahead = (uintptr_t)p + j * es + PREFETCH;
		_mm_prefetch((const char *)ahead, _MM_HINT_T0);
		a0 = _mm256_and_si256(_mm256_castps_si256(
		    ld8_avx2(dt, p + j * es)), absm);
		a1 = _mm256_and_si256(_mm256_castps_si256(
		    ld8_avx2(dt, p + (j + 8) * es)), absm);
		if (nan0) {
			a0 = _mm256_andnot_si256(_mm256_cmpgt_epi32(a0, inf),
			    a0);
			a1 = _mm256_andnot_si256(_mm256_cmpgt_epi32(a1, inf),
			    a1);
		}
		m0 = _mm256_max_epu32(m0, a0);
		m1 = _mm256_max_epu32(m1, a1);
	}
	m0 = _mm256_max_epu32(m0, m1);
	h = _mm_max_epu32(_mm256_castsi256_si128(m0),
	    _mm256_extracti128_si256(m0, 1));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
	return (uint32_t)_mm_cvtsi128_si32(h);
}

/*
 * Absmax of len (a multiple of 32) elements, as peftio_q4_absmax_portable()
 * (a NaN counts as 0); with nonfinite, 1 is or'ed into it when one is
 * NaN or Inf.  A block is read once more only when it holds one: the
 * plain maximum of the bits is then Inf or above.
 */
static inline AVX2 float
absmax_avx2(enum peftio_dtype dt, const uint8_t *p, uint64_t len,
    int *nonfinite)
{
	uint32_t m = absbits_avx2(dt, p, len, 0);

	if (m >= 0x7f800000U) {
		if (nonfinite != NULL)
			*nonfinite = 1;
		m = absbits_avx2(dt, p, len, 1);
	}
	return m < FLT_MIN_BITS ? 0.0f : peftio_u2f(m);
}

/*
 * The thresholds of codes_avx2(), broadcast once per call of the block
 * loop: FP4's seven magnitude thresholds, and for NF4's search
 * threshold 7, thresholds 3 and 11 of the second step, 1, 5, 9, 13 of
 * the third (by code / 4) and the even ones of the last (by code / 2).
 */
struct q4_avx2_tables {
	__m256	fp4[7];
	__m256	t7, t3, t11, quarter, half;
};

/*
 * 8 codes, one per 32-bit lane: the number of thresholds below.  NF4
 * finds it by binary search (four comparisons, the thresholds of the
 * last two steps fetched with a lane permute) instead of counting
 * fifteen; the thresholds are sorted, so both give the same count.
 */
static inline AVX2 __m256i
codes_avx2(enum peftio_q4type t, int flush, __m256 v, __m256 inv,
    const struct q4_avx2_tables *tab)
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
		s = _mm256_cmp_ps(x, tab->t7, _CMP_GT_OQ);
		c = _mm256_and_si256(_mm256_castps_si256(s),
		    _mm256_set1_epi32(8));
		s = _mm256_cmp_ps(x, _mm256_blendv_ps(tab->t3, tab->t11, s),
		    _CMP_GT_OQ);
		c = _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(s),
		    _mm256_set1_epi32(4)));
		s = _mm256_cmp_ps(x, _mm256_permutevar8x32_ps(tab->quarter,
		    _mm256_srli_epi32(c, 2)), _CMP_GT_OQ);
		c = _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(s),
		    _mm256_set1_epi32(2)));
		s = _mm256_cmp_ps(x, _mm256_permutevar8x32_ps(tab->half,
		    _mm256_srli_epi32(c, 1)), _CMP_GT_OQ);
		return _mm256_sub_epi32(c, _mm256_castps_si256(s));
	}
	a = _mm256_and_ps(x, _mm256_castsi256_ps(
	    _mm256_set1_epi32(0x7fffffff)));
	for (k = 0; k < 7; k++)
		c = _mm256_sub_epi32(c, _mm256_castps_si256(
		    _mm256_cmp_ps(a, tab->fp4[k], _CMP_GT_OQ)));
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
    const uint8_t *p, uint64_t len, __m256 inv,
    const struct q4_avx2_tables *tab, uint8_t *out)
{
	const __m256i pairs = _mm256_set1_epi16(0x0110);	/* {16, 1} */
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	size_t es = dt_size(dt);
	__m256i c0, c1, c2, c3, b, w;
	uint64_t j;

	for (j = 0; j < len; j += 32) {
		c0 = codes_avx2(t, flush, ld8_avx2(dt, p + j * es), inv, tab);
		c1 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 8) * es),
		    inv, tab);
		c2 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 16) * es),
		    inv, tab);
		c3 = codes_avx2(t, flush, ld8_avx2(dt, p + (j + 24) * es),
		    inv, tab);
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
    uint8_t *packed, float *absmax, int known)
{
	const float *nt = peftio_q4_nf4_thr.f;
	struct q4_avx2_tables tab;
	size_t es = dt_size(dt);
	float inv[GROUP];
	uint64_t b, g, ng;
	int k;

	for (k = 0; k < 7; k++)
		tab.fp4[k] = _mm256_set1_ps(peftio_q4_fp4_thr.f[k]);
	tab.t7 = _mm256_set1_ps(nt[7]);
	tab.t3 = _mm256_set1_ps(nt[3]);
	tab.t11 = _mm256_set1_ps(nt[11]);
	tab.quarter = _mm256_setr_ps(nt[1], nt[5], nt[9], nt[13], 0, 0, 0, 0);
	tab.half = _mm256_setr_ps(nt[0], nt[2], nt[4], nt[6], nt[8], nt[10],
	    nt[12], nt[14]);
	for (g = b0; g < b1; g += ng) {
		ng = PEFTIO_MIN(GROUP, b1 - g);
		for (b = 0; !known && b < ng; b++)
			absmax[g + b] = absmax_avx2(dt,
			    in + (g + b) * bs * es, bs, NULL);
		peftio_gpu_rcp_n(absmax + g, inv, ng);
		for (b = 0; b < ng; b++) {
			if (absmax[g + b] >= NOFLUSH_MIN)
				block_avx2(t, dt, 0, in + (g + b) * bs * es,
				    bs, _mm256_set1_ps(inv[b]), &tab,
				    packed + (g + b) * bs / 2);
			else
				block_avx2(t, dt, 1, in + (g + b) * bs * es,
				    bs, _mm256_set1_ps(inv[b]), &tab,
				    packed + (g + b) * bs / 2);
		}
	}
}

AVX2 void
peftio_q4_blocks_avx2(enum peftio_q4type t, enum peftio_dtype dt, const uint8_t *in,
    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *packed, float *absmax,
    int known)
{
#define Q4_CASE(T, D)							\
	if (t == (T) && dt == (D)) {					\
		blocks_avx2_t((T), (D), in, bs, b0, b1, packed, absmax,	\
		    known);						\
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

AVX2 int
peftio_q4_absmax_blocks_avx2(enum peftio_dtype dt, const uint8_t *in, uint64_t bs,
    uint64_t b0, uint64_t b1, float *absmax)
{
	size_t es = dt_size(dt);
	uint64_t b;
	int nonfinite = 0;

	for (b = b0; b < b1; b++)
		absmax[b] = absmax_avx2(dt, in + b * bs * es, bs, &nonfinite);
	return !nonfinite;
}

/* AVX2 and F16C, with the OS saving the YMM state. */
int
peftio_q4_have_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && peftio_cpu_f16c();
}
#endif /* Q4_X86 */
