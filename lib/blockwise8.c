/*
 * blockwise8.c - bitsandbytes' 8-bit blockwise codec with the dynamic map,
 * as double quantization uses it for the 4-bit absmax vector.
 *
 * The kernel is kQuantizeBlockwise<float, 256, 2, 0, General8bit>
 * (bnb-nf4.md section 4.3): per block, absmax = max |x| in f32, one GPU
 * reciprocal, x * inv, and the kernel's dQuantize() search over the
 * 256-entry code.  Under --use_fast_math subnormal operands and products
 * are flushed to zero.  The literal transcription of dQuantize() is the
 * reference; the fast paths (portable C, AVX-512, AVX2, picked as for
 * the 4-bit codecs) compute the same function without branches and are
 * compared with it by the unit tests.
 */
#include <math.h>
#include <string.h>

#include "peftio_private.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define Q8_X86	1
#include <immintrin.h>
#endif

enum { IMPL_REF, IMPL_PORTABLE, IMPL_AVX512, IMPL_AVX2 };

/*
 * Section 4.2: create_dynamic_map(signed=True) as torch builds it on x86
 * with its AVX2/AVX-512 linspace kernel (what files store as
 * nested_quant_map), as IEEE bits.
 */
static const union {
	uint32_t u[256];
	float	 f[256];
} dynamic_map = {{
	0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666,
	0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
	0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a,
	0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
	0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd,
	0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
	0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000,
	0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
	0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333,
	0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
	0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc,
	0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
	0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334,
	0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
	0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333,
	0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
	0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7,
	0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
	0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d,
	0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
	0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3,
	0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
	0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a,
	0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
	0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581,
	0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
	0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a,
	0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
	0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1,
	0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
	0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206,
	0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
	0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206,
	0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
	0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1,
	0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
	0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a,
	0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
	0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581,
	0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
	0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a,
	0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
	0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3,
	0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
	0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d,
	0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
	0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7,
	0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
	0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333,
	0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
	0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334,
	0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
	0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc,
	0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
	0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333,
	0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
	0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000,
	0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
	0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd,
	0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
	0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a,
	0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
	0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666,
	0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
}};

const float *
peftio_dynamic_map(void)
{
	return dynamic_map.f;
}

static inline float
u2f(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* .ftz: a subnormal counts as a zero of its sign. */
static inline float
ftz(float x)
{
	return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x;
}

/* dQuantize<0> (csrc/kernels.cu), literal: section 4.3. */
static uint8_t
dquantize_ref(const float *code, float x)
{
	int pivot = 127, upper_pivot = 255, lower_pivot = 0, i;
	float lower = -1.0f, upper = 1.0f, val = code[pivot], mid;

	for (i = 64; i > 0; i >>= 1) {
		if (x > val) {
			lower_pivot = pivot;
			lower = val;
			pivot += i;
		} else {
			upper_pivot = pivot;
			upper = val;
			pivot -= i;
		}
		val = code[pivot];
	}
	if (upper_pivot == 255)
		upper = code[upper_pivot];
	if (lower_pivot == 0)
		lower = code[lower_pivot];
	if (x > val) {
		mid = (upper + val) * 0.5f;
		return (uint8_t)(x > mid ? upper_pivot : pivot);
	} else {
		mid = (lower + val) * 0.5f;
		return (uint8_t)(x < mid ? lower_pivot : pivot);
	}
}

/*
 * The fast paths use an equivalent form.  The search compares x with the
 * odd entries only (the inner nodes of a perfect binary tree over
 * 0..254) and ends on the even leaf p = 2m, m = #{odd j : x > code[j]},
 * provided those entries ascend.  The pivots it records are the leaf's
 * neighbours p - 1 and p + 1 (255 past the last leaf; lower_pivot stays
 * 0 for leaf 0), so after the two fix-ups lower = code[p - 1] and upper =
 * code[p + 1] (for p = 0 every answer is 0).
 */
static inline uint8_t
dq_leaf(const float *code, float x, int m)
{
	int p = 2 * m, other, take;
	float val = code[p], mid;

	other = x > val ? p + 1 : (p > 0 ? p - 1 : 0);
	mid = (code[other] + val) * 0.5f;
	take = x > val ? x > mid : x < mid;
	return (uint8_t)(take ? other : p);
}

/* The odd entries and +Inf after them; 0 unless they ascend. */
static int
odd_entries(const float *code, float *odd)
{
	int k;

	for (k = 0; k < 127; k++) {
		odd[k] = code[2 * k + 1];
		if (!(odd[k] == odd[k]) || (k > 0 && !(odd[k - 1] <= odd[k])))
			return 0;
	}
	odd[127] = INFINITY;
	return 1;
}

/*
 * The vector paths find m = #{k : odd[k] < y} in two rounds instead of
 * comparing y with all 127 entries.  odd[] ascends, so the k with
 * y > odd[k] are a prefix of 0..126 (empty for a NaN y).  The first
 * round counts the chunk ends odd[16 c + 15] below y (c < 7): with c of
 * them, the prefix holds 0..16 c - 1 and, for c < 7, not 16 c + 15.  The
 * second adds the entries of chunk c below y: odd[16 c + k], k < 15,
 * each fetched from a row of 8 by a lane permute.
 */
struct q8_search {
	float	end[7];			/* odd[16 c + 15] */
	float	chunk[15][8];		/* chunk[k][c] = odd[16 c + k] */
};

static void
q8_search_init(const float *odd, struct q8_search *t)
{
	int c, k;

	for (c = 0; c < 7; c++)
		t->end[c] = odd[16 * c + 15];
	for (k = 0; k < 15; k++)
		for (c = 0; c < 8; c++)
			t->chunk[k][c] = odd[16 * c + k];
}

/* The kernel's input to dQuantize: ftz(ftz(x[i] - sub) * inv). */
static inline float
scaled(const float *x, uint64_t i, float sub, float inv)
{
	float a = x[i] - sub, y;

	y = ftz(a) * inv;
	return ftz(y);
}

/* max |x[i] - sub| over [lo, hi): subnormals as 0, a NaN ignored. */
static float
absmax8(const float *x, uint64_t lo, uint64_t hi, float sub)
{
	float am = 0.0f, a;
	uint64_t i;

	for (i = lo; i < hi; i++) {
		a = x[i] - sub;
		a = fabsf(a);
		a = a < 0x1p-126f ? 0.0f : a;
		am = a > am ? a : am;
	}
	return am;
}

static void
q8_codes_ref(const float *code, const float *x, uint64_t lo, uint64_t hi,
    float sub, float inv, uint8_t *q)
{
	uint64_t i;

	for (i = lo; i < hi; i++)
		q[i] = dquantize_ref(code, scaled(x, i, sub, inv));
}

/* Portable: eight searches interleaved, without branches. */
#define Q8_LANES	8

static void
q8_codes_portable(const float *code, const float *odd, const float *x,
    uint64_t lo, uint64_t hi, float sub, float inv, uint8_t *q)
{
	float y[Q8_LANES];
	int m[Q8_LANES], step, k, n;
	uint64_t i;

	for (i = lo; i < hi; i += (uint64_t)n) {
		n = hi - i < Q8_LANES ? (int)(hi - i) : Q8_LANES;
		for (k = 0; k < Q8_LANES; k++) {
			y[k] = k < n ? scaled(x, i + (uint64_t)k, sub, inv) : 0;
			m[k] = 0;
		}
		/* m = #{odd[j] < y}: a search over 128 sorted entries. */
		for (step = 64; step > 0; step >>= 1)
			for (k = 0; k < Q8_LANES; k++)
				m[k] += y[k] > odd[m[k] + step - 1] ? step : 0;
		for (k = 0; k < n; k++)
			q[i + (uint64_t)k] = dq_leaf(code, y[k], m[k]);
	}
}

#ifdef Q8_X86
#define AVX512	__attribute__((target("avx512f")))
#define AVX2	__attribute__((target("avx2")))

/*
 * Counts all the odd entries below, then the leaf step, 16 at a time.
 * The two-round count of the AVX2 path would serve here too; this path
 * keeps the plain count until the unit tests (which compare every path
 * the CPU offers with the reference) have run it on AVX-512 hardware.
 */
static AVX512 void
q8_codes_avx512(const float *code, const float *odd, const float *x,
    uint64_t lo, uint64_t hi, float sub, float inv, uint8_t *q)
{
	const __m512i one = _mm512_set1_epi32(1);
	const __m512i absm = _mm512_set1_epi32(0x7fffffff);
	const __m512i fmin = _mm512_set1_epi32(0x00800000);
	uint8_t b[16];
	__m512 y, val, mid;
	__m512i m, p, other;
	__mmask16 len, gt, take;
	uint64_t i;
	int k;

	for (i = lo; i < hi; i += 16) {
		len = hi - i >= 16 ? 0xffff : (__mmask16)((1U << (hi - i)) - 1);
		y = _mm512_sub_ps(_mm512_maskz_loadu_ps(len, x + i),
		    _mm512_set1_ps(sub));
		y = _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(
		    _mm512_and_si512(_mm512_castps_si512(y), absm), fmin), y);
		y = _mm512_mul_ps(y, _mm512_set1_ps(inv));
		y = _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(
		    _mm512_and_si512(_mm512_castps_si512(y), absm), fmin), y);
		m = _mm512_setzero_si512();
		for (k = 0; k < 127; k++)
			m = _mm512_mask_add_epi32(m, _mm512_cmp_ps_mask(y,
			    _mm512_set1_ps(odd[k]), _CMP_GT_OQ), m, one);
		p = _mm512_add_epi32(m, m);
		val = _mm512_i32gather_ps(p, code, 4);
		gt = _mm512_cmp_ps_mask(y, val, _CMP_GT_OQ);
		other = _mm512_max_epi32(_mm512_sub_epi32(p, one),
		    _mm512_setzero_si512());
		other = _mm512_mask_add_epi32(other, gt, p, one);
		mid = _mm512_mul_ps(_mm512_add_ps(_mm512_i32gather_ps(other,
		    code, 4), val), _mm512_set1_ps(0.5f));
		take = _mm512_mask_cmp_ps_mask(gt, y, mid, _CMP_GT_OQ) |
		    _mm512_mask_cmp_ps_mask((__mmask16)~gt, y, mid,
		    _CMP_LT_OQ);
		p = _mm512_mask_mov_epi32(p, take, other);
		_mm_storeu_si128((void *)b, _mm512_cvtepi32_epi8(p));
		memcpy(q + i, b, hi - i >= 16 ? 16 : hi - i);
	}
}

static AVX512 float
absmax8_avx512(const float *x, uint64_t lo, uint64_t hi, float sub)
{
	const __m512i absm = _mm512_set1_epi32(0x7fffffff);
	const __m512i inf = _mm512_set1_epi32(0x7f800000);
	__m512i m = _mm512_setzero_si512(), a;
	__mmask16 len;
	uint64_t i;
	uint32_t r;

	for (i = lo; i < hi; i += 16) {
		len = hi - i >= 16 ? 0xffff : (__mmask16)((1U << (hi - i)) - 1);
		a = _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(
		    _mm512_maskz_loadu_ps(len, x + i), _mm512_set1_ps(sub))),
		    absm);
		/* A NaN (above Inf as an integer) is left out. */
		m = _mm512_mask_max_epu32(m, len &
		    _mm512_cmple_epu32_mask(a, inf), m, a);
	}
	r = _mm512_reduce_max_epu32(m);
	return r < 0x00800000U ? 0.0f : u2f(r);
}

/* absmax8() of 8 lanes at a time, as absmax8_avx512(). */
static AVX2 float
absmax8_avx2(const float *x, uint64_t lo, uint64_t hi, float sub)
{
	const __m256i absm = _mm256_set1_epi32(0x7fffffff);
	const __m256i inf = _mm256_set1_epi32(0x7f800000);
	__m256i m = _mm256_setzero_si256(), a;
	__m128i h;
	uint64_t i;
	uint32_t r;
	float t;

	for (i = lo; i + 8 <= hi; i += 8) {
		a = _mm256_and_si256(_mm256_castps_si256(_mm256_sub_ps(
		    _mm256_loadu_ps(x + i), _mm256_set1_ps(sub))), absm);
		/* A NaN (above Inf as an integer) is left out. */
		m = _mm256_max_epu32(m, _mm256_andnot_si256(
		    _mm256_cmpgt_epi32(a, inf), a));
	}
	h = _mm_max_epu32(_mm256_castsi256_si128(m),
	    _mm256_extracti128_si256(m, 1));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
	r = (uint32_t)_mm_cvtsi128_si32(h);
	t = absmax8(x, i, hi, sub);
	return r < 0x00800000U || t > u2f(r) ? t : u2f(r);
}

/* One more count where y > thr (a compare mask is -1). */
static inline AVX2 __m256i
q8_below_avx2(__m256i m, __m256 y, __m256 thr)
{
	return _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(y, thr,
	    _CMP_GT_OQ)));
}

/* The same, 8 at a time. */
static AVX2 void
q8_codes_avx2(const float *code, const float *odd,
    const struct q8_search *t, const float *x, uint64_t lo, uint64_t hi,
    float sub, float inv, uint8_t *q)
{
	const __m256i one = _mm256_set1_epi32(1);
	const __m256i absm = _mm256_set1_epi32(0x7fffffff);
	const __m256i fmin = _mm256_set1_epi32(0x00800000);
	int32_t r[8];
	__m256 y, val, mid, gt, take, end[7];
	__m256i c, m, p, other;
	uint64_t i;
	int k;

	for (k = 0; k < 7; k++)
		end[k] = _mm256_set1_ps(t->end[k]);
	for (i = lo; i + 8 <= hi; i += 8) {
		y = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(sub));
		y = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(
		    fmin, _mm256_and_si256(_mm256_castps_si256(y), absm)),
		    _mm256_castps_si256(y)));
		y = _mm256_mul_ps(y, _mm256_set1_ps(inv));
		y = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_cmpgt_epi32(
		    fmin, _mm256_and_si256(_mm256_castps_si256(y), absm)),
		    _mm256_castps_si256(y)));
		c = _mm256_setzero_si256();
		for (k = 0; k < 7; k++)
			c = q8_below_avx2(c, y, end[k]);
		m = _mm256_slli_epi32(c, 4);
		for (k = 0; k < 15; k++)
			m = q8_below_avx2(m, y, _mm256_permutevar8x32_ps(
			    _mm256_loadu_ps(t->chunk[k]), c));
		p = _mm256_add_epi32(m, m);
		val = _mm256_i32gather_ps(code, p, 4);
		gt = _mm256_cmp_ps(y, val, _CMP_GT_OQ);
		other = _mm256_max_epi32(_mm256_sub_epi32(p, one),
		    _mm256_setzero_si256());
		other = _mm256_blendv_epi8(other, _mm256_add_epi32(p, one),
		    _mm256_castps_si256(gt));
		mid = _mm256_mul_ps(_mm256_add_ps(_mm256_i32gather_ps(code,
		    other, 4), val), _mm256_set1_ps(0.5f));
		take = _mm256_blendv_ps(_mm256_cmp_ps(y, mid, _CMP_LT_OQ),
		    _mm256_cmp_ps(y, mid, _CMP_GT_OQ), gt);
		p = _mm256_blendv_epi8(p, other, _mm256_castps_si256(take));
		_mm256_storeu_si256((void *)r, p);
		for (k = 0; k < 8; k++)
			q[i + (uint64_t)k] = (uint8_t)r[k];
	}
	if (i < hi)
		q8_codes_portable(code, odd, x, i, hi, sub, inv, q);
}
#endif /* Q8_X86 */

/*
 * Blocks [b0, b1) of the n values x[i] - sub (sub = 0 for plain 8-bit
 * quantization, the offset for double quantization; the subtraction is
 * a separate f32 operation, as torch does it before the kernel runs).
 */
static void
q8_blocks(const float *code, const float *x, float sub, uint64_t n,
    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *q, float *absmax)
{
	struct q8_search t;
	float odd[128], am, inv;
	uint64_t b, lo, hi;
	int impl;

	impl = peftio_q4_impl_set(-1);
	if (impl != IMPL_REF && !odd_entries(code, odd))
		impl = IMPL_REF;
	if (impl == IMPL_AVX2)
		q8_search_init(odd, &t);
	for (b = b0; b < b1; b++) {
		lo = b * bs;
		hi = n - lo < bs ? n : lo + bs;
#ifdef Q8_X86
		if (impl == IMPL_AVX512)
			am = absmax8_avx512(x, lo, hi, sub);
		else if (impl == IMPL_AVX2)
			am = absmax8_avx2(x, lo, hi, sub);
		else
#endif
			am = absmax8(x, lo, hi, sub);
		absmax[b] = am;
		inv = peftio_gpu_rcp(am);
		switch (impl) {
#ifdef Q8_X86
		case IMPL_AVX512:
			q8_codes_avx512(code, odd, x, lo, hi, sub, inv, q);
			break;
		case IMPL_AVX2:
			q8_codes_avx2(code, odd, &t, x, lo, hi, sub, inv, q);
			break;
#endif
		case IMPL_REF:
			q8_codes_ref(code, x, lo, hi, sub, inv, q);
			break;
		default:
			q8_codes_portable(code, odd, x, lo, hi, sub, inv, q);
			break;
		}
	}
}

void
peftio_q8_quantize(const float *code, const float *x, uint64_t n,
    uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *q, float *absmax)
{
	if (code == NULL || bs == 0 || b0 >= b1 || n > UINT64_MAX - bs ||
	    b1 > (n + bs - 1) / bs)
		return;
	q8_blocks(code, x, 0.0f, n, bs, b0, b1, q, absmax);
}

/*
 * The GPU's product: subnormal operands and results flushed, a NaN
 * written as the canonical 0x7fffffff.
 */
static inline float
gpu_mul(float a, float b)
{
	float p = ftz(a) * ftz(b);

	if (isnan(p))
		return u2f(0x7fffffffU);
	return ftz(p);
}

/* kDequantizeBlockwise: code[q] * absmax in f32. */
void
peftio_q8_dequantize(const float *code, const uint8_t *q,
    const float *absmax, uint64_t n, uint64_t bs, float *out)
{
	uint64_t i;

	if (code == NULL || bs == 0)
		return;
	for (i = 0; i < n; i++)
		out[i] = gpu_mul(code[q[i]], absmax[i / bs]);
}

void
peftio_dq_quantize_blocks(const float *absmax, uint64_t nb, uint64_t nbs,
    float offset, uint64_t b0, uint64_t b1, uint8_t *qabsmax, float *nested)
{
	if (nb == 0 || nbs == 0 || nb > UINT64_MAX - nbs)
		return;
	b1 = PEFTIO_MIN(b1, (nb + nbs - 1) / nbs);
	if (b0 < b1)
		q8_blocks(dynamic_map.f, absmax, offset, nb, nbs, b0, b1,
		    qabsmax, nested);
}

void
peftio_dq_quantize_offset(const float *absmax, uint64_t nb, uint64_t nbs,
    float offset, uint8_t *qabsmax, float *nested)
{
	peftio_dq_quantize_blocks(absmax, nb, nbs, offset, 0, UINT64_MAX,
	    qabsmax, nested);
}

/*
 * Section 4.1: offset = absmax.mean() as PyTorch computes it on the GPU
 * that bitsandbytes quantizes with (its reduction order, cudamean.c),
 * then the 8-bit codec on absmax - offset in blocks of nbs.
 */
float
peftio_dq_offset(const float *absmax, uint64_t nb)
{
	return nb == 0 ? 0.0f : peftio_cuda_mean_f32(absmax, nb);
}

void
peftio_dq_quantize(const float *absmax, uint64_t nb, uint64_t nbs,
    float *offset, uint8_t *qabsmax, float *nested)
{
	*offset = peftio_dq_offset(absmax, nb);
	peftio_dq_quantize_offset(absmax, nb, nbs, *offset, qabsmax, nested);
}

/*
 * Section 4.4: the 8-bit dequantization kernel (f32 product, flushed),
 * then torch adds the offset as a separate f32 operation.
 */
void
peftio_dq_dequantize(const float *code, const uint8_t *qabsmax,
    const float *nested, float offset, uint64_t nb, uint64_t nbs,
    float *absmax)
{
	uint64_t j;
	float p;

	if (code == NULL || nbs == 0)
		return;
	for (j = 0; j < nb; j++) {
		p = gpu_mul(code[qabsmax[j]], nested[j / nbs]);
		absmax[j] = p + offset;
	}
}
