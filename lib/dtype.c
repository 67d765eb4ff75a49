/*
 * dtype.c - the safetensors dtype table and exact conversions between
 * f32 and the small float formats (f16, bf16, f8 e4m3fn, f8 e5m2).
 *
 * The conversions of the 8- and 16-bit formats work on bit patterns with
 * integer arithmetic, so their results do not depend on the FPU
 * rounding mode, FTZ/DAZ or the compiler's floating point flags (f64 to
 * f32 is the hardware's conversion).  Rounding is to nearest, ties to
 * even.  A NaN stays a NaN: its sign is kept and it is made quiet.
 */
#include <stdint.h>
#include <string.h>

#include "peftio_private.h"

struct dtype_desc {
	const char	*name;
	const char	*torch;
	unsigned	 bits;
};

/*
 * In enum order.  F4's torch dtype float4_e2m1fn_x2 packs two values in
 * one element, so its torch shape differs from the safetensors shape
 * (the last dimension is halved); the name is listed for reference.
 */
static const struct dtype_desc dtypes[PEFTIO_DTYPE_COUNT] = {
	[PEFTIO_BOOL] =		{ "BOOL", "bool", 8 },
	[PEFTIO_F4] =		{ "F4", "float4_e2m1fn_x2", 4 },
	[PEFTIO_F6_E2M3] =	{ "F6_E2M3", NULL, 6 },
	[PEFTIO_F6_E3M2] =	{ "F6_E3M2", NULL, 6 },
	[PEFTIO_U8] =		{ "U8", "uint8", 8 },
	[PEFTIO_I8] =		{ "I8", "int8", 8 },
	[PEFTIO_F8_E5M2] =	{ "F8_E5M2", "float8_e5m2", 8 },
	[PEFTIO_F8_E4M3] =	{ "F8_E4M3", "float8_e4m3fn", 8 },
	[PEFTIO_F8_E8M0] =	{ "F8_E8M0", "float8_e8m0fnu", 8 },
	[PEFTIO_F8_E4M3FNUZ] =	{ "F8_E4M3FNUZ", "float8_e4m3fnuz", 8 },
	[PEFTIO_F8_E5M2FNUZ] =	{ "F8_E5M2FNUZ", "float8_e5m2fnuz", 8 },
	[PEFTIO_I16] =		{ "I16", "int16", 16 },
	[PEFTIO_U16] =		{ "U16", "uint16", 16 },
	[PEFTIO_F16] =		{ "F16", "float16", 16 },
	[PEFTIO_BF16] =		{ "BF16", "bfloat16", 16 },
	[PEFTIO_I32] =		{ "I32", "int32", 32 },
	[PEFTIO_U32] =		{ "U32", "uint32", 32 },
	[PEFTIO_F32] =		{ "F32", "float32", 32 },
	[PEFTIO_C64] =		{ "C64", "complex64", 64 },
	[PEFTIO_F64] =		{ "F64", "float64", 64 },
	[PEFTIO_I64] =		{ "I64", "int64", 64 },
	[PEFTIO_U64] =		{ "U64", "uint64", 64 },
};

/* The other names torch gives its dtypes (torch.float is float32...). */
static const struct {
	const char	*name;
	enum peftio_dtype dt;
} torch_aliases[] = {
	{ "float", PEFTIO_F32 },
	{ "half", PEFTIO_F16 },
	{ "double", PEFTIO_F64 },
	{ "long", PEFTIO_I64 },
	{ "int", PEFTIO_I32 },
	{ "short", PEFTIO_I16 },
	{ "cfloat", PEFTIO_C64 },
};

static int
dtype_ok(enum peftio_dtype dt)
{
	return (unsigned)dt < PEFTIO_DTYPE_COUNT;
}

const char *
peftio_dtype_name(enum peftio_dtype dt)
{
	return dtype_ok(dt) ? dtypes[dt].name : NULL;
}

int
peftio_dtype_parse(const char *name, size_t len)
{
	int i;

	if (name == NULL)
		return -1;
	for (i = 0; i < PEFTIO_DTYPE_COUNT; i++)
		if (strlen(dtypes[i].name) == len &&
		    memcmp(dtypes[i].name, name, len) == 0)
			return i;
	return -1;
}

const char *
peftio_dtype_torch_name(enum peftio_dtype dt)
{
	return dtype_ok(dt) ? dtypes[dt].torch : NULL;
}

int
peftio_dtype_parse_torch(const char *name)
{
	size_t i;
	int d;

	if (name == NULL)
		return -1;
	if (strncmp(name, "torch.", 6) == 0)
		name += 6;
	for (d = 0; d < PEFTIO_DTYPE_COUNT; d++)
		if (dtypes[d].torch != NULL &&
		    strcmp(dtypes[d].torch, name) == 0)
			return d;
	for (i = 0; i < sizeof(torch_aliases) / sizeof(torch_aliases[0]); i++)
		if (strcmp(torch_aliases[i].name, name) == 0)
			return torch_aliases[i].dt;
	return -1;
}

int
peftio_dtype_parse_float(const char *name)
{
	static const struct {
		const char	*name;
		int		 dt;
	} tab[] = {
		{ "f32", PEFTIO_F32 }, { "float32", PEFTIO_F32 },
		{ "fp32", PEFTIO_F32 }, { "float", PEFTIO_F32 },
		{ "f16", PEFTIO_F16 }, { "float16", PEFTIO_F16 },
		{ "fp16", PEFTIO_F16 }, { "half", PEFTIO_F16 },
		{ "bf16", PEFTIO_BF16 }, { "bfloat16", PEFTIO_BF16 },
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(name, tab[i].name) == 0)
			return tab[i].dt;
	return -1;
}

unsigned
peftio_dtype_bits(enum peftio_dtype dt)
{
	return dtype_ok(dt) ? dtypes[dt].bits : 0;
}

/*
 * The scan tests fixed-size chunks with a branch-free loop of constant
 * trip count, which compilers vectorize even at -O2; the element is
 * located only in a chunk that has one.
 */
#define NF_CHUNK	1024

#define NONFINITE_SCAN(T, MASK, VAL) do {				\
	const unsigned char *b_ = src;					\
	uint64_t i_ = 0, k_;						\
	T v_, bad_;							\
									\
	for (; n - i_ >= NF_CHUNK; i_ += NF_CHUNK) {			\
		bad_ = 0;						\
		for (k_ = 0; k_ < NF_CHUNK; k_++) {			\
			memcpy(&v_, b_ + (i_ + k_) * sizeof(T), sizeof(T)); \
			bad_ |= (T)((v_ & (MASK)) == (VAL));		\
		}							\
		if (bad_ != 0)						\
			break;						\
	}								\
	for (; i_ < n; i_++) {						\
		memcpy(&v_, b_ + i_ * sizeof(T), sizeof(T));		\
		if ((v_ & (MASK)) == (VAL))				\
			return (int64_t)i_;				\
	}								\
	return -1;							\
} while (0)

int64_t
peftio_first_nonfinite(enum peftio_dtype dt, const void *src, uint64_t n)
{
	switch (dt) {
	case PEFTIO_F64:
		NONFINITE_SCAN(uint64_t, 0x7ff0000000000000ull,
		    0x7ff0000000000000ull);
	case PEFTIO_F32:
		NONFINITE_SCAN(uint32_t, 0x7f800000u, 0x7f800000u);
	case PEFTIO_F16:
		NONFINITE_SCAN(uint16_t, 0x7c00u, 0x7c00u);
	case PEFTIO_BF16:
		NONFINITE_SCAN(uint16_t, 0x7f80u, 0x7f80u);
	case PEFTIO_F8_E5M2:
		NONFINITE_SCAN(uint8_t, 0x7cu, 0x7cu);
	case PEFTIO_F8_E4M3:
		NONFINITE_SCAN(uint8_t, 0x7fu, 0x7fu);
	default:
		return -1;
	}
}

int
peftio_dtype_is_float(enum peftio_dtype dt)
{
	switch (dt) {
	case PEFTIO_F64:
	case PEFTIO_F32:
	case PEFTIO_F16:
	case PEFTIO_BF16:
	case PEFTIO_F8_E4M3:
	case PEFTIO_F8_E5M2:
		return 1;
	default:
		return 0;
	}
}

int
peftio_dtype_is_model_float(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

int
peftio_dtype_nbytes(enum peftio_dtype dt, uint64_t n, uint64_t *out)
{
	uint64_t bits;

	if (!dtype_ok(dt))
		return PEFTIO_EINVAL;
	if (PEFTIO_MUL_OVERFLOW(n, (uint64_t)dtypes[dt].bits, &bits))
		return PEFTIO_EFORMAT;
	if (bits % 8 != 0)
		return PEFTIO_EFORMAT;
	if (out != NULL)
		*out = bits / 8;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Scalar conversions                                                  */
/* ------------------------------------------------------------------ */

/*
 * Round the finite, non-negative f32 bit pattern x to a float format
 * with mbits mantissa bits and exponent bias bias (subnormals
 * included), to nearest even.  The result is the format's magnitude
 * code (exponent << mbits | mantissa); it may be past the format's
 * largest finite value, which the caller handles.
 */
static uint32_t
round_small(uint32_t x, int mbits, int bias)
{
	uint32_t e = x >> 23, m, q, rem, half;
	int shift;

	if (e == 0)
		return 0;	/* f32 subnormals are far below every target */
	if ((int)e - 127 + bias >= 1) {
		/* Normal in the target: rebias, then round the low bits. */
		x -= (uint32_t)(127 - bias) << 23;
		shift = 23 - mbits;
		return (x + ((1u << (shift - 1)) - 1) + ((x >> shift) & 1)) >>
		    shift;
	}
	/* Subnormal: units of 2^(1 - bias - mbits). */
	m = (x & 0x7fffff) | 0x800000;
	shift = 151 - bias - mbits - (int)e;
	if (shift >= 25)
		return 0;
	q = m >> shift;
	rem = m & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1)))
		q++;
	return q;
}

float
peftio_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
	int sh;

	if (e == 0x1f) {
		if (m != 0)	/* NaN: keep the payload, make it quiet */
			return peftio_u2f(sign | 0x7fc00000 | (m << 13));
		return peftio_u2f(sign | 0x7f800000);
	}
	if (e != 0)
		return peftio_u2f(sign | ((e + 112) << 23) | (m << 13));
	if (m == 0)
		return peftio_u2f(sign);
	/* Subnormal: normalize. */
	sh = __builtin_clz(m) - 21;	/* bring bit 10 to the top */
	m = (m << sh) & 0x3ff;
	return peftio_u2f(sign | ((uint32_t)(113 - sh) << 23) | (m << 13));
}

uint16_t
peftio_f32_to_f16(float f)
{
	uint32_t u = peftio_f2u(f), sign = (u >> 16) & 0x8000, x = u & 0x7fffffff;

	if (x > 0x7f800000)
		return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
	if (x >= 0x477ff000)	/* 65520 and up round to Inf */
		return (uint16_t)(sign | 0x7c00);
	return (uint16_t)(sign | round_small(x, 10, 15));
}

float
peftio_bf16_to_f32(uint16_t h)
{
	return peftio_u2f((uint32_t)h << 16);
}

/*
 * Like PyTorch's round_to_nearest_even, except for NaN: PyTorch returns
 * the canonical 0x7fc0, here the sign and the top payload bits are kept
 * (as ggml does) and the quiet bit is set.
 */
static inline uint16_t
bf16_round(uint32_t u)
{
	uint32_t r = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
	uint32_t q = (u >> 16) | 0x40;

	return (uint16_t)((u & 0x7fffffff) > 0x7f800000 ? q : r);
}

uint16_t
peftio_f32_to_bf16(float f)
{
	return bf16_round(peftio_f2u(f));
}

/*
 * F8_E4M3 is OCP's E4M3FN: bias 7, no infinities, S.1111.111 is NaN,
 * the largest finite value 448 (0x7e).
 */
float
peftio_f8e4m3_to_f32(uint8_t v)
{
	uint32_t sign = (uint32_t)(v & 0x80) << 24;
	uint32_t e = (v >> 3) & 0xf, m = v & 7;
	int sh;

	if (e == 0xf && m == 7)
		return peftio_u2f(sign | 0x7fc00000);
	if (e != 0)
		return peftio_u2f(sign | ((e + 120) << 23) | (m << 20));
	if (m == 0)
		return peftio_u2f(sign);
	sh = __builtin_clz(m) - 28;	/* bring bit 3 to the top */
	m = (m << sh) & 7;
	return peftio_u2f(sign | ((uint32_t)(121 - sh) << 23) | (m << 20));
}

/*
 * Out-of-range values saturate: every finite value past 448 and both
 * infinities give +-448 (0x7e/0xfe), as NVIDIA's __NV_SATFINITE
 * conversion does.  torch's .to(torch.float8_e4m3fn) instead gives NaN
 * for |x| >= 480 and for Inf; the two agree on everything below 480.
 * NaN gives 0x7f with the sign kept.
 */
uint8_t
peftio_f32_to_f8e4m3(float f)
{
	uint32_t u = peftio_f2u(f), sign = (u >> 24) & 0x80, x = u & 0x7fffffff;
	uint32_t q;

	if (x > 0x7f800000)
		return (uint8_t)(sign | 0x7f);
	if (x >= 0x43e00000)	/* 448 and up */
		return (uint8_t)(sign | 0x7e);
	q = round_small(x, 3, 7);
	if (q > 0x7e)
		q = 0x7e;
	return (uint8_t)(sign | q);
}

/* F8_E5M2: IEEE-like, bias 15, with infinities; the top byte of an f16. */
float
peftio_f8e5m2_to_f32(uint8_t v)
{
	return peftio_f16_to_f32((uint16_t)((uint16_t)v << 8));
}

/* Rounded directly from f32 (not through f16, which would round twice);
 * 61440 and up give Inf. */
uint8_t
peftio_f32_to_f8e5m2(float f)
{
	uint32_t u = peftio_f2u(f), sign = (u >> 24) & 0x80, x = u & 0x7fffffff;

	if (x > 0x7f800000)
		return (uint8_t)(sign | 0x7e | ((x >> 21) & 1));
	if (x >= 0x47700000)
		return (uint8_t)(sign | 0x7c);
	return (uint8_t)(sign | round_small(x, 2, 15));
}

/* ------------------------------------------------------------------ */
/* Bulk conversions                                                    */
/* ------------------------------------------------------------------ */

/*
 * Loads and stores go through memcpy, so src and dst may have any
 * alignment.  The f32/bf16 loops convert blocks of BLK elements between
 * local arrays: a fixed trip count and no possible aliasing are what
 * gcc's default (very cheap) vectorizer cost model needs.  src and
 * dst must not overlap.
 */
#define BLK	16

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x)	__builtin_bswap16(x)
#define LE32(x)	__builtin_bswap32(x)
#define LE64(x)	__builtin_bswap64(x)
#else
#define LE16(x)	(x)
#define LE32(x)	(x)
#define LE64(x)	(x)
#endif

static inline uint16_t
ld16(const unsigned char *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return LE16(v);
}

static inline void
st16(unsigned char *p, uint16_t v)
{
	v = LE16(v);
	memcpy(p, &v, 2);
}

static void
bf16_to_f32_n(const unsigned char *s, float *d, uint64_t n)
{
	uint16_t h[BLK];
	uint32_t u[BLK];
	uint64_t i = 0;
	int j;

	for (; i + BLK <= n; i += BLK) {
		memcpy(h, s + 2 * i, sizeof(h));
		for (j = 0; j < BLK; j++)
			u[j] = (uint32_t)LE16(h[j]) << 16;
		memcpy(d + i, u, sizeof(u));
	}
	for (; i < n; i++) {
		u[0] = (uint32_t)ld16(s + 2 * i) << 16;
		memcpy(d + i, u, 4);
	}
}

static void
f32_to_bf16_n(const float *s, unsigned char *d, uint64_t n)
{
	uint16_t h[BLK];
	uint32_t u[BLK];
	uint64_t i = 0;
	int j;

	for (; i + BLK <= n; i += BLK) {
		memcpy(u, s + i, sizeof(u));
		for (j = 0; j < BLK; j++)
			h[j] = LE16(bf16_round(u[j]));
		memcpy(d + 2 * i, h, sizeof(h));
	}
	for (; i < n; i++) {
		memcpy(u, s + i, 4);
		st16(d + 2 * i, bf16_round(u[0]));
	}
}

/*
 * f16 through F16C where the CPU has it: vcvtph2ps and vcvtps2ph (round
 * to nearest even) give the same bits as the scalar conversions, NaN
 * payloads included, as long as MXCSR keeps subnormals (the default).
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#define HAVE_F16C_PATH	1
#define F16C	__attribute__((target("avx,f16c")))

static F16C uint64_t
f16_to_f32_f16c(const unsigned char *s, float *d, uint64_t n)
{
	uint64_t i;

	for (i = 0; i + 8 <= n; i += 8)
		_mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(
		    (const __m128i *)(const void *)(s + 2 * i))));
	return i;
}

static F16C uint64_t
f32_to_f16_f16c(const float *s, unsigned char *d, uint64_t n)
{
	uint64_t i;

	for (i = 0; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(void *)(d + 2 * i),
		    _mm256_cvtps_ph(_mm256_loadu_ps(s + i),
		    _MM_FROUND_TO_NEAREST_INT));
	return i;
}

static pthread_once_t f16c_once = PTHREAD_ONCE_INIT;
static int f16c_known;

/* F16C is CPUID.1:ECX bit 29 (not every compiler names it for
 * __builtin_cpu_supports); AVX there includes the OS's YMM support. */
static void
f16c_init(void)
{
	unsigned a, b, c, d;

	__builtin_cpu_init();
	__atomic_store_n(&f16c_known, __builtin_cpu_supports("avx") &&
	    __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1), __ATOMIC_RELAXED);
}

/* Asked once: CPUID traps to the hypervisor on a virtual machine, and
 * the conversions are called for every row piece. */
int
peftio_cpu_f16c(void)
{
	pthread_once(&f16c_once, f16c_init);
	return __atomic_load_n(&f16c_known, __ATOMIC_RELAXED);
}
#endif

static void
f16_to_f32_n(const unsigned char *s, float *d, uint64_t n)
{
	uint64_t i = 0;

#ifdef HAVE_F16C_PATH
	if (peftio_cpu_f16c())
		i = f16_to_f32_f16c(s, d, n);
#endif
	for (; i < n; i++)
		d[i] = peftio_f16_to_f32(ld16(s + 2 * i));
}

static void
f32_to_f16_n(const float *s, unsigned char *d, uint64_t n)
{
	uint64_t i = 0;

#ifdef HAVE_F16C_PATH
	if (peftio_cpu_f16c())
		i = f32_to_f16_f16c(s, d, n);
#endif
	for (; i < n; i++)
		st16(d + 2 * i, peftio_f32_to_f16(s[i]));
}

int
peftio_to_f32(enum peftio_dtype dt, const void *src, float *dst, uint64_t n)
{
	const unsigned char *s = src;
	uint64_t i, v64;
	uint32_t v32;
	double d;

	switch (dt) {
	case PEFTIO_F32:
		for (i = 0; i < n; i++) {
			memcpy(&v32, s + 4 * i, 4);
			v32 = LE32(v32);
			memcpy(dst + i, &v32, 4);
		}
		return 0;
	case PEFTIO_F64:
		for (i = 0; i < n; i++) {
			memcpy(&v64, s + 8 * i, 8);
			v64 = LE64(v64);
			memcpy(&d, &v64, 8);
			dst[i] = (float)d;
		}
		return 0;
	case PEFTIO_BF16:
		bf16_to_f32_n(s, dst, n);
		return 0;
	case PEFTIO_F16:
		f16_to_f32_n(s, dst, n);
		return 0;
	case PEFTIO_F8_E4M3:
		for (i = 0; i < n; i++)
			dst[i] = peftio_f8e4m3_to_f32(s[i]);
		return 0;
	case PEFTIO_F8_E5M2:
		for (i = 0; i < n; i++)
			dst[i] = peftio_f8e5m2_to_f32(s[i]);
		return 0;
	default:
		return PEFTIO_EINVAL;
	}
}

int
peftio_from_f32(enum peftio_dtype dt, const float *src, void *dst,
    uint64_t n)
{
	unsigned char *d = dst;
	uint64_t i, v64;
	uint32_t v32;
	double x;

	switch (dt) {
	case PEFTIO_F32:
		for (i = 0; i < n; i++) {
			memcpy(&v32, src + i, 4);
			v32 = LE32(v32);
			memcpy(d + 4 * i, &v32, 4);
		}
		return 0;
	case PEFTIO_F64:
		for (i = 0; i < n; i++) {
			x = src[i];
			memcpy(&v64, &x, 8);
			v64 = LE64(v64);
			memcpy(d + 8 * i, &v64, 8);
		}
		return 0;
	case PEFTIO_BF16:
		f32_to_bf16_n(src, d, n);
		return 0;
	case PEFTIO_F16:
		f32_to_f16_n(src, d, n);
		return 0;
	case PEFTIO_F8_E4M3:
		for (i = 0; i < n; i++)
			d[i] = peftio_f32_to_f8e4m3(src[i]);
		return 0;
	case PEFTIO_F8_E5M2:
		for (i = 0; i < n; i++)
			d[i] = peftio_f32_to_f8e5m2(src[i]);
		return 0;
	default:
		return PEFTIO_EINVAL;
	}
}
