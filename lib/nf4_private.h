/*
 * nf4_private.h - what the 4-bit codec's files share: the code and
 * threshold tables and the scalar reference (nf4_ref.c), the portable
 * and x86 vector paths (nf4_simd.c), under the dispatch (nf4.c).  Not
 * installed.
 */
#ifndef PEFTIO_NF4_PRIVATE_H
#define PEFTIO_NF4_PRIVATE_H

#include <stdint.h>
#include <string.h>

#include "peftio_private.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define Q4_X86	1
#include <immintrin.h>
#endif


#define FLT_MIN_BITS	0x00800000U	/* smallest normal float */
#define NOFLUSH_MIN	0x1p-100f	/* absmax from which flushing is moot */

enum { Q4_IMPL_REF, Q4_IMPL_PORTABLE, Q4_IMPL_AVX512, Q4_IMPL_AVX2 };

union f32tab16 {
	uint32_t u[16];
	float	 f[16];
};

extern const union f32tab16 peftio_q4_nf4_code;
extern const union f32tab16 peftio_q4_fp4_code;
extern const union f32tab16 peftio_q4_nf4_thr;
extern const union f32tab16 peftio_q4_fp4_thr;


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

/* nf4_ref.c: argument checks of the quantize and absmax calls. */
int	peftio_q4_check_args(enum peftio_dtype dt, const void *in, uint64_t n,
	    uint64_t bs, uint64_t b0, uint64_t b1, const void *out, int even);
int	peftio_q4_check_type(enum peftio_q4type t, const void *packed,
	    uint64_t b0, uint64_t b1);
/* nf4_simd.c */
float	peftio_q4_absmax_portable(enum peftio_dtype dt, const uint8_t *in,
	    uint64_t lo, uint64_t hi);
void	peftio_q4_codes_portable(enum peftio_q4type t, enum peftio_dtype dt,
	    const uint8_t *in, uint64_t lo, uint64_t hi, float inv,
	    uint8_t *packed);
#ifdef Q4_X86
void	peftio_q4_blocks_avx512(enum peftio_q4type t, enum peftio_dtype dt,
	    const uint8_t *in, uint64_t bs, uint64_t b0, uint64_t b1,
	    uint8_t *packed, float *absmax);
void	peftio_q4_absmax_blocks_avx512(enum peftio_dtype dt, const uint8_t *in,
	    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax);
/* known: absmax holds the blocks' absmax already.  The absmax pass
 * returns 1 when every value it read is finite. */
void	peftio_q4_blocks_avx2(enum peftio_q4type t, enum peftio_dtype dt,
	    const uint8_t *in, uint64_t bs, uint64_t b0, uint64_t b1,
	    uint8_t *packed, float *absmax, int known);
int	peftio_q4_absmax_blocks_avx2(enum peftio_dtype dt, const uint8_t *in,
	    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax);
int	peftio_q4_have_avx2(void);
#endif

#endif /* PEFTIO_NF4_PRIVATE_H */
