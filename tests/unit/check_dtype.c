/*
 * check_dtype.c - the dtype table and the f32 conversions.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

/* Value of a small float code by its definition (for comparisons). */
static double
small_value(unsigned code, int ebits, int mbits, int bias)
{
	unsigned e = (code >> mbits) & ((1u << ebits) - 1);
	unsigned m = code & ((1u << mbits) - 1);
	double s = (code >> (ebits + mbits)) & 1 ? -1.0 : 1.0;

	if (e == 0)
		return s * ldexp((double)m, 1 - bias - mbits);
	return s * ldexp((double)(m | (1u << mbits)), (int)e - bias - mbits);
}

START_TEST(test_names)
{
	static const char *const names[] = {
		"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2",
		"F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",
		"U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64",
		"U64"
	};
	static const unsigned bits[] = {
		8, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32,
		64, 64, 64, 64
	};
	int i;

	ck_assert_int_eq(PEFTIO_DTYPE_COUNT, 22);
	for (i = 0; i < PEFTIO_DTYPE_COUNT; i++) {
		ck_assert_str_eq(peftio_dtype_name(i), names[i]);
		ck_assert_int_eq(peftio_dtype_parse(names[i],
		    strlen(names[i])), i);
		ck_assert_uint_eq(peftio_dtype_bits(i), bits[i]);
	}
	ck_assert_ptr_null(peftio_dtype_name(PEFTIO_DTYPE_COUNT));
	ck_assert_ptr_null(peftio_dtype_name((enum peftio_dtype)-1));
	ck_assert_uint_eq(peftio_dtype_bits(PEFTIO_DTYPE_COUNT), 0);
	ck_assert_int_eq(peftio_dtype_parse("f32", 3), -1);
	ck_assert_int_eq(peftio_dtype_parse("U8 ", 3), -1);
	ck_assert_int_eq(peftio_dtype_parse("F128", 4), -1);
	ck_assert_int_eq(peftio_dtype_parse("F32", 2), -1);
	ck_assert_int_eq(peftio_dtype_parse("F32\0", 4), -1);
	ck_assert_int_eq(peftio_dtype_parse("", 0), -1);
	ck_assert_int_eq(peftio_dtype_parse(NULL, 0), -1);
	ck_assert_int_eq(peftio_dtype_parse("BF16xx", 4), PEFTIO_BF16);
}
END_TEST

START_TEST(test_torch_names)
{
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_F32), "float32");
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_BF16), "bfloat16");
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_F16), "float16");
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_F8_E4M3),
	    "float8_e4m3fn");
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_BOOL), "bool");
	ck_assert_str_eq(peftio_dtype_torch_name(PEFTIO_I8), "int8");
	ck_assert_ptr_null(peftio_dtype_torch_name(PEFTIO_F6_E2M3));
	ck_assert_ptr_null(peftio_dtype_torch_name(PEFTIO_DTYPE_COUNT));
	ck_assert_int_eq(peftio_dtype_parse_torch("bfloat16"), PEFTIO_BF16);
	ck_assert_int_eq(peftio_dtype_parse_torch("torch.float16"),
	    PEFTIO_F16);
	ck_assert_int_eq(peftio_dtype_parse_torch("float"), PEFTIO_F32);
	ck_assert_int_eq(peftio_dtype_parse_torch("torch.half"), PEFTIO_F16);
	ck_assert_int_eq(peftio_dtype_parse_torch("double"), PEFTIO_F64);
	ck_assert_int_eq(peftio_dtype_parse_torch("torch.int64"), PEFTIO_I64);
	ck_assert_int_eq(peftio_dtype_parse_torch("uint8"), PEFTIO_U8);
	ck_assert_int_eq(peftio_dtype_parse_torch("float8_e5m2"),
	    PEFTIO_F8_E5M2);
	ck_assert_int_eq(peftio_dtype_parse_torch("float32 "), -1);
	ck_assert_int_eq(peftio_dtype_parse_torch("torch."), -1);
	ck_assert_int_eq(peftio_dtype_parse_torch("F32"), -1);
	ck_assert_int_eq(peftio_dtype_parse_torch(NULL), -1);
}
END_TEST

START_TEST(test_is_float)
{
	int i, n = 0;

	for (i = 0; i < PEFTIO_DTYPE_COUNT; i++)
		n += peftio_dtype_is_float(i);
	ck_assert_int_eq(n, 6);
	ck_assert(peftio_dtype_is_float(PEFTIO_F64));
	ck_assert(peftio_dtype_is_float(PEFTIO_F8_E5M2));
	ck_assert(!peftio_dtype_is_float(PEFTIO_F8_E8M0));
	ck_assert(!peftio_dtype_is_float(PEFTIO_C64));
}
END_TEST

START_TEST(test_nbytes)
{
	uint64_t n = 0;

	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F32, 6, &n), 0);
	ck_assert_uint_eq(n, 24);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F4, 4, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F6_E3M2, 4, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F4, 3, &n),
	    PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F6_E2M3, 3, &n),
	    PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_U64, UINT64_MAX / 64 + 1,
	    &n), PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_U64, UINT64_MAX / 64, &n),
	    0);
	ck_assert_uint_eq(n, UINT64_MAX / 64 * 8);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_F32, 0, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(peftio_dtype_nbytes(PEFTIO_DTYPE_COUNT, 1, &n),
	    PEFTIO_EINVAL);
}
END_TEST

/* reliability.md section 4.3. */
START_TEST(test_bf16_golden)
{
	ck_assert_uint_eq(peftio_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
	ck_assert_uint_eq(peftio_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
	ck_assert_uint_eq(peftio_f32_to_bf16(FLT_MAX), 0x7f80);
	ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(0x7f7f0000)), 0x7f7f);
	ck_assert_uint_eq(peftio_f32_to_bf16(1e-40f), 0x0001);
	ck_assert_uint_eq(peftio_f32_to_bf16(-0.0f), 0x8000);
	ck_assert_uint_eq(peftio_f32_to_bf16(-FLT_MAX), 0xff80);
	ck_assert_uint_eq(peftio_f32_to_bf16(INFINITY), 0x7f80);
	ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(0x7fc00000)), 0x7fc0);
	/* NaN keeps its sign and stays NaN even with a low payload. */
	ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(0xff800001)), 0xffc0);
	ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(0x7f800001)), 0x7fc0);
	ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(0x7fffffff)), 0x7fff);
	ck_assert_uint_eq(peftio_f2u(peftio_bf16_to_f32(0x3f80)), 0x3f800000);
}
END_TEST

START_TEST(test_bf16_exhaustive)
{
	uint32_t h, back, m0, m1;
	float f;

	for (h = 0; h < 65536; h++) {
		f = peftio_bf16_to_f32((uint16_t)h);
		ck_assert_uint_eq(peftio_f2u(f), h << 16);
		back = peftio_f32_to_bf16(f);
		if ((h & 0x7fff) > 0x7f80) {
			ck_assert_msg((back & 0x7fff) > 0x7f80 &&
			    (back & 0x8000) == (h & 0x8000) && (back & 0x40),
			    "NaN %04x gave %04x", h, back);
			if (h & 0x40)
				ck_assert_uint_eq(back, h);
			continue;
		}
		ck_assert_msg(back == h, "%04x gave %04x", h, back);
		/* Midpoints to the next pattern: ties to even. */
		if ((h & 0x7fff) >= 0x7f80)
			continue;
		m0 = (h << 16) | 0x8000;
		ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(m0)),
		    (h & 1) ? h + 1 : h);
		ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(m0 - 1)), h);
		m1 = m0 + 1;
		ck_assert_uint_eq(peftio_f32_to_bf16(peftio_u2f(m1)), h + 1);
	}
}
END_TEST

START_TEST(test_f16_exhaustive)
{
	uint32_t h, back;
	double want;
	float f, lo, hi, mid;

	for (h = 0; h < 65536; h++) {
		f = peftio_f16_to_f32((uint16_t)h);
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) {
			ck_assert(isnan(f));
			ck_assert_int_eq(!!signbit(f), !!(h & 0x8000));
			back = peftio_f32_to_f16(f);
			ck_assert_msg((back & 0x7c00) == 0x7c00 &&
			    (back & 0x3ff) != 0 && (back & 0x200) &&
			    (back & 0x8000) == (h & 0x8000), "NaN %04x", h);
			if (h & 0x200)
				ck_assert_uint_eq(back, h);
			continue;
		}
		if ((h & 0x7fff) == 0x7c00)
			want = (h & 0x8000) ? -INFINITY : INFINITY;
		else
			want = small_value(h, 5, 10, 15);
		ck_assert_msg((double)f == want && !!signbit(f) ==
		    !!(h & 0x8000), "f16 %04x", h);
		back = peftio_f32_to_f16(f);
		ck_assert_msg(back == h, "%04x gave %04x", h, back);
		/* Ties between h and h + 1 (same sign, finite). */
		if ((h & 0x7fff) >= 0x7bff)
			continue;
		lo = f;
		hi = peftio_f16_to_f32((uint16_t)(h + 1));
		mid = (float)(((double)lo + (double)hi) / 2);
		ck_assert((double)mid == ((double)lo + (double)hi) / 2);
		ck_assert_uint_eq(peftio_f32_to_f16(mid), (h & 1) ? h + 1 : h);
		ck_assert_uint_eq(peftio_f32_to_f16(nextafterf(mid, hi)),
		    h + 1);
		ck_assert_uint_eq(peftio_f32_to_f16(nextafterf(mid, lo)), h);
	}
}
END_TEST

START_TEST(test_f16_edges)
{
	ck_assert_uint_eq(peftio_f32_to_f16(1.0f), 0x3c00);
	ck_assert_uint_eq(peftio_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	ck_assert_uint_eq(peftio_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	ck_assert_uint_eq(peftio_f32_to_f16(0x1p-24f), 0x0001);
	ck_assert_uint_eq(peftio_f32_to_f16(0x1p-25f), 0x0000);
	ck_assert_uint_eq(peftio_f32_to_f16(-0x1p-25f), 0x8000);
	ck_assert_uint_eq(peftio_f32_to_f16(nextafterf(0x1p-25f, 1)), 0x0001);
	ck_assert_uint_eq(peftio_f32_to_f16(3 * 0x1p-25f), 0x0002);
	ck_assert_uint_eq(peftio_f32_to_f16(0x1p-14f), 0x0400);
	ck_assert_uint_eq(peftio_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);
	ck_assert_uint_eq(peftio_f32_to_f16(0x1p-14f - 0x1p-24f), 0x03ff);
	ck_assert_uint_eq(peftio_f32_to_f16(1e-30f), 0x0000);
	ck_assert_uint_eq(peftio_f32_to_f16(FLT_TRUE_MIN), 0x0000);
	ck_assert_uint_eq(peftio_f32_to_f16(65504.0f), 0x7bff);
	ck_assert_uint_eq(peftio_f32_to_f16(65519.996f), 0x7bff);
	ck_assert_uint_eq(peftio_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(peftio_f32_to_f16(-1e10f), 0xfc00);
	ck_assert_uint_eq(peftio_f32_to_f16(FLT_MAX), 0x7c00);
	ck_assert_uint_eq(peftio_f32_to_f16(INFINITY), 0x7c00);
	ck_assert_uint_eq(peftio_f32_to_f16(-INFINITY), 0xfc00);
	ck_assert_uint_eq(peftio_f32_to_f16(NAN) & 0x7e00, 0x7e00);
	ck_assert_uint_eq(peftio_f32_to_f16(peftio_u2f(0xff800001)), 0xfe00);
	ck_assert_uint_eq(peftio_f32_to_f16(-0.0f), 0x8000);
}
END_TEST

/* f32 -> f16 against a reference computed in double, over a sweep. */
START_TEST(test_f16_sweep)
{
	uint64_t s = 12345;
	uint32_t u, i, got, want;
	double a, m, q;
	int e;

	for (i = 0; i < 2000000; i++) {
		u = (uint32_t)tu_rand(&s);
		/* Concentrate on the exponents f16 can hold. */
		if (i & 1)
			u = (u & 0x80ffffff) | ((100 + (u >> 24) % 45) << 23);
		if ((u & 0x7f800000) == 0x7f800000)
			continue;
		a = fabs((double)peftio_u2f(u));
		if (a < 0x1p-14) {
			q = nearbyint(a * 0x1p24);
			want = (uint32_t)q;
		} else {
			/* a = m * 2^e, m in [0.5, 1) */
			m = frexp(a, &e);
			q = nearbyint(ldexp(m, 11)) - 1024;
			e--;
			if (q == 1024) {
				q = 0;
				e++;
			}
			want = e + 15 >= 31 ? 0x7c00 :
			    (uint32_t)((e + 15) << 10) | (uint32_t)q;
		}
		want |= (u >> 16) & 0x8000;
		got = peftio_f32_to_f16(peftio_u2f(u));
		ck_assert_msg(got == want, "%08x: %04x, want %04x", u, got,
		    want);
	}
}
END_TEST

START_TEST(test_f8e4m3)
{
	uint32_t v, back;
	float f, lo, hi, mid;

	for (v = 0; v < 256; v++) {
		f = peftio_f8e4m3_to_f32((uint8_t)v);
		if ((v & 0x7f) == 0x7f) {
			ck_assert(isnan(f));
			ck_assert_int_eq(!!signbit(f), !!(v & 0x80));
			ck_assert_uint_eq(peftio_f32_to_f8e4m3(f), v);
			continue;
		}
		ck_assert_msg((double)f == small_value(v, 4, 3, 7), "e4m3 %02x",
		    v);
		back = peftio_f32_to_f8e4m3(f);
		ck_assert_msg(back == v, "%02x gave %02x", v, back);
		if ((v & 0x7f) >= 0x7e)
			continue;
		lo = f;
		hi = peftio_f8e4m3_to_f32((uint8_t)(v + 1));
		mid = (lo + hi) / 2;
		ck_assert_uint_eq(peftio_f32_to_f8e4m3(mid),
		    (v & 1) ? v + 1 : v);
		ck_assert_uint_eq(peftio_f32_to_f8e4m3(nextafterf(mid, hi)),
		    v + 1);
		ck_assert_uint_eq(peftio_f32_to_f8e4m3(nextafterf(mid, lo)), v);
	}
	ck_assert(peftio_f8e4m3_to_f32(0x7e) == 448.0f);
	ck_assert(peftio_f8e4m3_to_f32(0x01) == 0x1p-9f);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(448.0f), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(464.0f), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(479.0f), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(480.0f), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(1e30f), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(INFINITY), 0x7e);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(-INFINITY), 0xfe);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(NAN), 0x7f);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(-NAN), 0xff);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(0x1p-10f), 0x00);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(nextafterf(0x1p-10f, 1)), 0x01);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(-0x1p-10f), 0x80);
	ck_assert_uint_eq(peftio_f32_to_f8e4m3(1e-30f), 0x00);
}
END_TEST

START_TEST(test_f8e5m2)
{
	uint32_t v, back;
	float f, lo, hi, mid;

	for (v = 0; v < 256; v++) {
		f = peftio_f8e5m2_to_f32((uint8_t)v);
		if ((v & 0x7c) == 0x7c && (v & 3) != 0) {
			ck_assert(isnan(f));
			back = peftio_f32_to_f8e5m2(f);
			ck_assert((back & 0x7c) == 0x7c && (back & 2) &&
			    (back & 0x80) == (v & 0x80));
			continue;
		}
		if ((v & 0x7f) == 0x7c)
			ck_assert(isinf(f));
		else
			ck_assert_msg((double)f == small_value(v, 5, 2, 15),
			    "e5m2 %02x", v);
		back = peftio_f32_to_f8e5m2(f);
		ck_assert_msg(back == v, "%02x gave %02x", v, back);
		if ((v & 0x7f) >= 0x7b)
			continue;
		lo = f;
		hi = peftio_f8e5m2_to_f32((uint8_t)(v + 1));
		mid = (lo + hi) / 2;
		ck_assert_uint_eq(peftio_f32_to_f8e5m2(mid),
		    (v & 1) ? v + 1 : v);
		ck_assert_uint_eq(peftio_f32_to_f8e5m2(nextafterf(mid, hi)),
		    v + 1);
		ck_assert_uint_eq(peftio_f32_to_f8e5m2(nextafterf(mid, lo)), v);
	}
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(57344.0f), 0x7b);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(61439.0f), 0x7b);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(61440.0f), 0x7c);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(-1e30f), 0xfc);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(INFINITY), 0x7c);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(0x1p-16f), 0x01);
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(0x1p-17f), 0x00);
	/* Rounded once from f32, not through f16. */
	ck_assert_uint_eq(peftio_f32_to_f8e5m2(1.125f + 0x1p-12f), 0x3d);
}
END_TEST

static const enum peftio_dtype float_types[] = {
	PEFTIO_F64, PEFTIO_F32, PEFTIO_F16, PEFTIO_BF16, PEFTIO_F8_E4M3,
	PEFTIO_F8_E5M2
};

/* One element of dt at p, converted by the scalar functions. */
static float
scalar_to(enum peftio_dtype dt, const unsigned char *p)
{
	uint16_t h;
	double d;
	float f;

	switch (dt) {
	case PEFTIO_F64:
		memcpy(&d, p, 8);
		return (float)d;
	case PEFTIO_F32:
		memcpy(&f, p, 4);
		return f;
	case PEFTIO_F16:
		memcpy(&h, p, 2);
		return peftio_f16_to_f32(h);
	case PEFTIO_BF16:
		memcpy(&h, p, 2);
		return peftio_bf16_to_f32(h);
	case PEFTIO_F8_E4M3:
		return peftio_f8e4m3_to_f32(*p);
	default:
		return peftio_f8e5m2_to_f32(*p);
	}
}

static void
scalar_from(enum peftio_dtype dt, float f, unsigned char *p)
{
	uint16_t h;
	double d;

	switch (dt) {
	case PEFTIO_F64:
		d = f;
		memcpy(p, &d, 8);
		break;
	case PEFTIO_F32:
		memcpy(p, &f, 4);
		break;
	case PEFTIO_F16:
		h = peftio_f32_to_f16(f);
		memcpy(p, &h, 2);
		break;
	case PEFTIO_BF16:
		h = peftio_f32_to_bf16(f);
		memcpy(p, &h, 2);
		break;
	case PEFTIO_F8_E4M3:
		*p = peftio_f32_to_f8e4m3(f);
		break;
	default:
		*p = peftio_f32_to_f8e5m2(f);
		break;
	}
}

/* Bulk conversions agree with the scalar ones, at any alignment. */
START_TEST(test_bulk)
{
	static const uint64_t sizes[] = { 0, 1, 15, 16, 17, 33, 257 };
	enum peftio_dtype dt = float_types[_i];
	unsigned es = peftio_dtype_bits(dt) / 8;
	unsigned char *raw, *out, *exp;
	float *f, *g, *src;
	uint64_t s = 99, n, k;
	size_t z, off;
	uint32_t u;

	raw = malloc(257 * 8 + 3);
	out = malloc(257 * 8 + 3);
	exp = malloc(257 * 8 + 3);
	f = malloc(257 * sizeof(float) + 4);
	g = malloc(257 * sizeof(float) + 4);
	src = malloc(257 * sizeof(float));
	for (z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		n = sizes[z];
		for (off = 0; off < 3; off++) {
			for (k = 0; k < n * es; k++)
				raw[off + k] = (unsigned char)tu_rand(&s);
			ck_assert_int_eq(peftio_to_f32(dt, raw + off, f, n), 0);
			for (k = 0; k < n; k++) {
				float want = scalar_to(dt, raw + off + k * es);

				ck_assert(peftio_f2u(f[k]) == peftio_f2u(want) ||
				    (isnan(f[k]) && isnan(want)));
			}
			for (k = 0; k < n; k++) {
				u = (uint32_t)tu_rand(&s);
				if (k % 3 == 0)
					u = (u & 0x83ffffff) | 0x3c000000;
				src[k] = peftio_u2f(u);
			}
			ck_assert_int_eq(peftio_from_f32(dt, src, out + off, n),
			    0);
			for (k = 0; k < n; k++)
				scalar_from(dt, src[k], exp + k * es);
			ck_assert(n == 0 ||
			    memcmp(out + off, exp, n * es) == 0);
		}
	}
	ck_assert_int_eq(peftio_to_f32(PEFTIO_I32, raw, f, 1), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_from_f32(PEFTIO_U8, src, out, 1),
	    PEFTIO_EINVAL);
	free(raw);
	free(out);
	free(exp);
	free(f);
	free(g);
	free(src);
}
END_TEST

/* The bulk bf16 path handles NaN like the scalar one (select). */
START_TEST(test_bulk_bf16_nan)
{
	float src[40];
	uint16_t out[40];
	int i;

	for (i = 0; i < 40; i++)
		src[i] = peftio_u2f(i % 2 ? 0xff800001u + (uint32_t)i : 0x3f808000u);
	ck_assert_int_eq(peftio_from_f32(PEFTIO_BF16, src, out, 40), 0);
	for (i = 0; i < 40; i++)
		ck_assert_uint_eq(out[i], i % 2 ? 0xffc0 : 0x3f80);
}
END_TEST

/* Bulk f16 conversions (vectorized where the CPU allows) agree with
 * the scalar ones on every f16 and on a sweep of f32 bit patterns. */
START_TEST(test_f16_bulk_sweep)
{
	enum { N = 1 << 16, STEP = 1021 };
	uint16_t *h = malloc(N * 2), *got = malloc(N * 2), *want = malloc(N * 2);
	float *f = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
	uint64_t u, k;

	for (k = 0; k < N; k++) {
		h[k] = (uint16_t)k;
		g[k] = peftio_f16_to_f32((uint16_t)k);
	}
	peftio_to_f32(PEFTIO_F16, h, f, N);
	ck_assert_mem_eq(f, g, N * sizeof(float));
	/* 4.2 million f32 patterns spread over the whole range */
	for (u = 0; u <= 0xffffffffull; u += (uint64_t)N * STEP) {
		for (k = 0; k < N; k++) {
			f[k] = peftio_u2f((uint32_t)(u + k * STEP));
			want[k] = peftio_f32_to_f16(f[k]);
		}
		peftio_from_f32(PEFTIO_F16, f, got, N);
		ck_assert_mem_eq(got, want, N * 2);
	}
	free(h);
	free(got);
	free(want);
	free(f);
	free(g);
}
END_TEST

/* The first NaN or Inf is found wherever it is: in a full chunk, at a
 * chunk's edge, in the tail; and not where there is none. */
START_TEST(test_first_nonfinite)
{
	static const uint64_t where[] = { 0, 1, 1023, 1024, 2047, 2500, 2999 };
	enum peftio_dtype dt = float_types[_i];
	const uint64_t n = 3000;
	size_t es = peftio_dtype_bits(dt) / 8, k, v;
	float *f = malloc(n * sizeof(float)), bad[2] = { NAN, INFINITY };
	unsigned char *buf = malloc(n * es);

	for (k = 0; k < n; k++)
		f[k] = (float)k * 0.001f - 1.0f;
	peftio_from_f32(dt, f, buf, n);
	ck_assert_int_eq(peftio_first_nonfinite(dt, buf, n), -1);
	ck_assert_int_eq(peftio_first_nonfinite(dt, buf, 0), -1);
	for (v = 0; v < 2; v++) {
		/* E4M3 has no infinity: an overflow saturates. */
		if (v == 1 && dt == PEFTIO_F8_E4M3)
			continue;
		for (k = 0; k < sizeof(where) / sizeof(where[0]); k++) {
			peftio_from_f32(dt, f, buf, n);
			peftio_from_f32(dt, &bad[v], buf + where[k] * es, 1);
			peftio_from_f32(dt, &bad[v], buf + (n - 1) * es, 1);
			ck_assert_int_eq(peftio_first_nonfinite(dt, buf, n),
			    (int64_t)where[k]);
			ck_assert_int_eq(peftio_first_nonfinite(dt, buf,
			    where[k]), -1);
		}
	}
	ck_assert_int_eq(peftio_first_nonfinite(PEFTIO_I32, buf, 1), -1);
	free(f);
	free(buf);
}
END_TEST

Suite *dtype_suite(void);

Suite *dtype_suite(void)
{
	Suite *s = suite_create("dtype");
	TCase *tc = tcase_create("dtype");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_torch_names);
	tcase_add_test(tc, test_is_float);
	tcase_add_test(tc, test_nbytes);
	tcase_add_test(tc, test_bf16_golden);
	tcase_add_test(tc, test_bf16_exhaustive);
	tcase_add_test(tc, test_f16_exhaustive);
	tcase_add_test(tc, test_f16_edges);
	tcase_add_test(tc, test_f16_sweep);
	tcase_add_test(tc, test_f8e4m3);
	tcase_add_test(tc, test_f8e5m2);
	tcase_add_loop_test(tc, test_bulk, 0,
	    (int)(sizeof(float_types) / sizeof(float_types[0])));
	tcase_add_test(tc, test_bulk_bf16_nan);
	tcase_add_test(tc, test_f16_bulk_sweep);
	tcase_add_loop_test(tc, test_first_nonfinite, 0,
	    (int)(sizeof(float_types) / sizeof(float_types[0])));
	suite_add_tcase(s, tc);
	return s;
}
