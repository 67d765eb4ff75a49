/*
 * fuzz_bnb8.c - 8-bit (LLM.int8) weights in a safetensors file: the
 * weight, its SCB and weight_format as transformers writes them.
 *
 * Every weight the lookup accepts has one scale a row in [0, 65504],
 * so its dequantized values are finite and at most 128/127 of the
 * row's scale in magnitude (bitsandbytes writes codes -127..127, but a
 * file may hold -128).
 */
#include <math.h>

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	struct peftio_bnb8_weight bw;
	const struct peftio_tensor_info *w, *s;
	const void *p;
	float *y, scale;
	uint64_t r, k;
	size_t i;
	int rc;

	if (peftio_ckpt_open_mem(&c, data, size, "fuzz.safetensors",
	    &err) != 0)
		return 0;
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		peftio_error_clear(&err);
		if ((rc = peftio_bnb8_lookup(c, i, &bw, &err)) < 0) {
			fuzz_check_error(rc, &err, "fuzz.safetensors");
			continue;
		}
		if (rc == 0)
			continue;
		w = peftio_ckpt_tensor(c, bw.weight);
		s = peftio_ckpt_tensor(c, bw.scb);
		FUZZ_ASSERT(bw.scb == i);
		FUZZ_ASSERT(w->dtype == PEFTIO_I8 && w->ndim == 2);
		FUZZ_ASSERT(bw.rows > 0 && bw.cols > 0);
		FUZZ_ASSERT(bw.rows * bw.cols == w->numel);
		FUZZ_ASSERT(s->dtype == PEFTIO_F32 && s->numel == bw.rows);
		if (w->numel > (1u << 20))
			continue;
		y = malloc(w->numel * sizeof(float));
		FUZZ_ASSERT(y != NULL);
		FUZZ_ASSERT(peftio_bnb8_dequantize(c, &bw, PEFTIO_F32, y, 1,
		    &err) == 0);
		FUZZ_ASSERT(peftio_ckpt_data(c, bw.scb, &p, &err) == 0);
		for (r = 0; r < bw.rows; r++) {
			memcpy(&scale, (const char *)p + r * 4, 4);
			for (k = 0; k < bw.cols; k++)
				FUZZ_ASSERT(isfinite(y[r * bw.cols + k]) &&
				    fabsf(y[r * bw.cols + k]) <=
				    scale * (128.0f / 127.0f) * 1.0001f);
		}
		free(y);
	}
	peftio_ckpt_close(c);
	return 0;
}
