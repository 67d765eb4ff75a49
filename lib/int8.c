/*
 * int8.c - bitsandbytes' LLM.int8 row-wise codec: int8_vectorwise_quant
 * (the CUDA kernel kInt8VectorQuant<half, 1024, 0>, no outlier
 * threshold) and int8_vectorwise_dequant (bnb-nf4.md section 12).
 *
 * The weight is first rounded to float16 (Int8Params casts it; the
 * kernel takes only half).  Per row, absmax is the largest |x| of those
 * halves, kept as a float32 (SCB).  The kernel scales with
 * __fdividef(127.0f, absmax), which under --use_fast_math is 127 times
 * the GPU's approximate reciprocal (peftio_gpu_rcp), rounded once; each
 * code is __float2int_rn(x * scale), round half to even.  A row of
 * zeros has an infinite scale, 0 * inf is NaN and the conversion of NaN
 * gives 0.  Dequantization is int8 * SCB * 7.874015718698502e-3 in
 * float32, rounded after each product.
 */
#include <math.h>
#include <string.h>

#include "peftio_private.h"

/* The float32 value of the constant 1/127 in the dequant kernel. */
#define INT8_RECIP	7.874015718698502e-3f

static inline float
load_half(enum peftio_dtype dt, const unsigned char *p, uint64_t i)
{
	uint16_t h;
	uint32_t u;

	switch (dt) {
	case PEFTIO_F16:
		memcpy(&h, p + 2 * i, 2);
		return peftio_f16_to_f32(h);
	case PEFTIO_BF16:
		memcpy(&h, p + 2 * i, 2);
		return peftio_f16_to_f32(peftio_f32_to_f16(
		    peftio_bf16_to_f32(h)));
	default:
		memcpy(&u, p + 4 * i, 4);
		return peftio_f16_to_f32(peftio_f32_to_f16(peftio_u2f(u)));
	}
}

static inline int8_t
int8_code(float x, float scale)
{
	float v = x * scale;

	/* cvt.rni.s32.f32 of NaN is 0; |v| <= 127 for finite input. */
	if (isnan(v))
		return 0;
	if (v > 127.0f)
		v = 127.0f;
	else if (v < -127.0f)
		v = -127.0f;
	return (int8_t)rintf(v);
}

float
peftio_int8_scale(float absmax)
{
	return 127.0f * peftio_gpu_rcp(absmax);
}

int
peftio_int8_quantize(enum peftio_dtype dt, const void *in, uint64_t cols,
    uint64_t r0, uint64_t r1, int8_t *codes, float *scb)
{
	const unsigned char *p = in;
	uint64_t r, c, base;
	float am, v, scale;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return PEFTIO_EINVAL;
	for (r = r0; r < r1; r++) {
		base = r * cols;
		am = 0.0f;
		/* fmaxf drops a NaN, as the kernel's does. */
		for (c = 0; c < cols; c++) {
			v = fabsf(load_half(dt, p, base + c));
			am = fmaxf(am, v);
		}
		scb[r] = am;
		scale = peftio_int8_scale(am);
		for (c = 0; c < cols; c++)
			codes[base + c] = int8_code(load_half(dt, p, base + c),
			    scale);
	}
	return 0;
}

int
peftio_int8_dequantize(const int8_t *codes, const float *scb, uint64_t cols,
    uint64_t r0, uint64_t r1, enum peftio_dtype dt, void *out)
{
	unsigned char *o = out;
	float row[256];
	uint64_t r, c, k, n;
	size_t es;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return PEFTIO_EINVAL;
	es = peftio_dtype_bits(dt) / 8;
	for (r = r0; r < r1; r++) {
		for (c = 0; c < cols; c += n) {
			n = PEFTIO_MIN(cols - c, 256);
			for (k = 0; k < n; k++) {
				/* Two roundings, never one fused. */
				float t = (float)codes[r * cols + c + k] *
				    scb[r];

				row[k] = t * INT8_RECIP;
			}
			peftio_from_f32(dt, row, o + ((r - r0) * cols + c) * es,
			    n);
		}
	}
	return 0;
}

double
peftio_int8_bits_per_param(uint64_t cols)
{
	return cols == 0 ? 0.0 : 8.0 + 32.0 / (double)cols;
}
