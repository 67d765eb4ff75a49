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

#include "nf4_private.h"

static pthread_once_t q4_impl_once = PTHREAD_ONCE_INIT;
static int q4_impl;		/* Q4_IMPL_*, see q4_impl_init() */

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
	else if (peftio_q4_have_avx2())
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
	if (impl == Q4_IMPL_AVX2 && !peftio_q4_have_avx2())
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
		return peftio_q4_nf4_code.f;
	case PEFTIO_Q4_FP4:
		return peftio_q4_fp4_code.f;
	}
	return NULL;
}

int
peftio_q4_blocksize_ok(uint64_t bs)
{
	return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0;
}

static int
q4_quantize(enum peftio_q4type t, enum peftio_dtype dt, const void *in,
    uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1, uint8_t *packed,
    float *absmax, int known)
{
	const uint8_t *p = in;
	uint64_t b = b0, lo, hi;
	float am, inv;
	int rc, impl;

	if ((rc = peftio_q4_check_args(dt, in, n, bs, b0, b1, absmax, 1)) != 0 ||
	    (rc = peftio_q4_check_type(t, packed, b0, b1)) != 0)
		return rc;
	impl = q4_impl_get();
	if (impl == Q4_IMPL_REF)
		return peftio_q4_quantize_ref(t, dt, in, n, bs, b0, b1, packed,
		    absmax);
#ifdef Q4_X86
	if (impl >= Q4_IMPL_AVX512 && bs % 32 == 0 && b < n / bs) {
		if (impl == Q4_IMPL_AVX512)
			peftio_q4_blocks_avx512(t, dt, p, bs, b, PEFTIO_MIN(b1, n / bs),
			    packed, absmax);
		else
			peftio_q4_blocks_avx2(t, dt, p, bs, b, PEFTIO_MIN(b1, n / bs),
			    packed, absmax, known);
		b = PEFTIO_MIN(b1, n / bs);
	}
#else
	(void)known;
#endif
	for (; b < b1; b++) {
		lo = b * bs;
		hi = PEFTIO_MIN(n, lo + bs);
		am = peftio_q4_absmax_portable(dt, p, lo, hi);
		absmax[b] = am;
		inv = peftio_gpu_rcp(am);
		peftio_q4_codes_portable(t, dt, p, lo, hi, inv, packed);
	}
	return PEFTIO_OK;
}

int
peftio_q4_quantize(enum peftio_q4type t, enum peftio_dtype dt,
    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	return q4_quantize(t, dt, in, n, bs, b0, b1, packed, absmax, 0);
}

int
peftio_q4_quantize_known(enum peftio_q4type t, enum peftio_dtype dt,
    const void *in, uint64_t n, uint64_t bs, uint64_t b0, uint64_t b1,
    uint8_t *packed, float *absmax)
{
	return q4_quantize(t, dt, in, n, bs, b0, b1, packed, absmax, 1);
}

/* Absmax of blocks [b0, b1); 1 when the path saw every value finite. */
static int
q4_absmax(enum peftio_dtype dt, const void *in, uint64_t n, uint64_t bs,
    uint64_t b0, uint64_t b1, float *absmax, int *finite)
{
	const uint8_t *p = in;
	uint64_t b = b0;
	int rc, impl;

	*finite = 0;
	if ((rc = peftio_q4_check_args(dt, in, n, bs, b0, b1, absmax, 0)) != 0)
		return rc;
#ifdef Q4_X86
	impl = q4_impl_get();
	if (impl >= Q4_IMPL_AVX512 && bs % 32 == 0 && b < n / bs) {
		if (impl == Q4_IMPL_AVX512)
			peftio_q4_absmax_blocks_avx512(dt, p, bs, b,
			    PEFTIO_MIN(b1, n / bs), absmax);
		else
			*finite = peftio_q4_absmax_blocks_avx2(dt, p, bs, b,
			    PEFTIO_MIN(b1, n / bs), absmax);
		b = PEFTIO_MIN(b1, n / bs);
	}
#else
	(void)impl;
#endif
	if (b < b1)
		*finite = 0;
	for (; b < b1; b++)
		absmax[b] = peftio_q4_absmax_portable(dt, p, b * bs,
		    PEFTIO_MIN(n, b * bs + bs));
	return PEFTIO_OK;
}

int
peftio_q4_absmax(enum peftio_dtype dt, const void *in, uint64_t n,
    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax)
{
	int finite;

	return q4_absmax(dt, in, n, bs, b0, b1, absmax, &finite);
}

int
peftio_q4_absmax_finite(enum peftio_dtype dt, const void *in, uint64_t n,
    uint64_t bs, uint64_t b0, uint64_t b1, float *absmax)
{
	int finite;

	return q4_absmax(dt, in, n, bs, b0, b1, absmax, &finite) == 0 &&
	    finite;
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
