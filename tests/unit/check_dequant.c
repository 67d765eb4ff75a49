/*
 * check_dequant.c - dequantizing a 4-bit weight stored as bitsandbytes
 * stores it: the whole tensor, and part by part.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

/* Write weight "w" (n values, blocksize 64, NF4, with or without double
 * quantization) as bitsandbytes stores it, to path. */
static void
write_q4(const char *path, uint64_t n, int dq)
{
	struct peftio_quant_state qs;
	struct peftio_error err;
	struct peftio_ckptw *w;
	uint64_t nb = (n + 63) / 64, nn = (nb + 255) / 256, sh[2], s = 7, i;
	float *x = malloc(n * sizeof(float)), *am = malloc(nb * 4);
	float *nested = malloc(nn * 4), off;
	uint8_t *packed = malloc((n + 1) / 2), *q = malloc(nb);
	char *json;
	size_t jlen;

	for (i = 0; i < n; i++)
		x[i] = tu_randn(&s) * 0.02f;
	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, x, n,
	    64, 0, nb, packed, am), 0);
	memset(&qs, 0, sizeof(qs));
	qs.type = PEFTIO_Q4_NF4;
	qs.blocksize = 64;
	qs.dtype = PEFTIO_F32;
	qs.ndim = 1;
	qs.shape[0] = qs.numel = n;
	qs.double_quant = dq;
	qs.nested_blocksize = 256;
	qs.nested_dtype = PEFTIO_F32;
	if (dq) {
		peftio_dq_quantize(am, nb, 256, &off, q, nested);
		qs.nested_offset = off;
	}
	ck_assert_int_eq(peftio_quant_state_json(&qs, &json, &jlen, &err), 0);
	ck_assert_int_eq(peftio_ckptw_create(&w, path, 0, 1, NULL,
	    PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
#define DECL(name, dt, a) do { sh[0] = (a); ck_assert_msg( \
	peftio_ckptw_declare(w, 0, name, dt, 1, sh, &err) == 0, "%s", \
	err.msg); } while (0)
	DECL("w", PEFTIO_U8, (n + 1) / 2);
	DECL("w.absmax", dq ? PEFTIO_U8 : PEFTIO_F32, dq ? nb : nb * 1);
	DECL("w.quant_map", PEFTIO_F32, 16);
	DECL("w.quant_state.bitsandbytes__nf4", PEFTIO_U8, jlen);
	if (dq) {
		DECL("w.nested_absmax", PEFTIO_F32, nn);
		DECL("w.nested_quant_map", PEFTIO_F32, 256);
	}
#undef DECL
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "w", packed, (n + 1) / 2,
	    &err), 0);
	ck_assert_int_eq(dq ? peftio_ckptw_write(w, "w.absmax", q, nb, &err) :
	    peftio_ckptw_write(w, "w.absmax", am, nb * 4, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "w.quant_map",
	    peftio_q4_code(PEFTIO_Q4_NF4), 64, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w,
	    "w.quant_state.bitsandbytes__nf4", json, jlen, &err), 0);
	if (dq) {
		ck_assert_int_eq(peftio_ckptw_write(w, "w.nested_absmax",
		    nested, nn * 4, &err), 0);
		ck_assert_int_eq(peftio_ckptw_write(w, "w.nested_quant_map",
		    peftio_dynamic_map(), 1024, &err), 0);
	}
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	free(json);
	free(x);
	free(am);
	free(nested);
	free(packed);
	free(q);
}

/* Parts at every aligned start, of several lengths, give the same bytes
 * as the whole tensor; a misaligned part is refused. */
START_TEST(test_dequantize_parts)
{
	const int dq = _i;
	const uint64_t n = 3 * 16384 + 100;
	struct peftio_bnb_weight bw;
	struct peftio_error err;
	struct peftio_ckpt *c;
	uint16_t *whole = malloc(n * 2), *part = malloc(n * 2);
	uint64_t al, e0, len;
	size_t i;
	long k;

	tu_tmpdir();
	write_q4(tu_path("q.safetensors"), n, dq);
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path("q.safetensors"), &err),
	    0);
	for (i = 0; i < peftio_ckpt_count(c); i++)
		if ((k = peftio_bnb_lookup(c, i, &bw, &err)) != 0)
			break;
	ck_assert_int_eq(k, 1);
	al = peftio_bnb_part_align(&bw);
	ck_assert_uint_eq(al, dq ? 64 * 256 : 64);
	ck_assert_int_eq(peftio_bnb_dequantize(c, &bw, PEFTIO_BF16, whole, 3,
	    &err), 0);
	for (e0 = 0; e0 < n; e0 += al)
		for (len = al; len <= 2 * al + 100; len += al + 50) {
			uint64_t m = len < n - e0 ? len : n - e0;

			ck_assert_msg(peftio_bnb_dequantize_part(c, &bw,
			    PEFTIO_BF16, part, e0, m, 2, &err) == 0, "%s",
			    err.msg);
			ck_assert_mem_eq(part, whole + e0, m * 2);
		}
	ck_assert_int_eq(peftio_bnb_dequantize_part(c, &bw, PEFTIO_BF16, part,
	    32, 64, 1, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_bnb_dequantize_part(c, &bw, PEFTIO_BF16, part,
	    0, n + 1, 1, &err), PEFTIO_EINVAL);
	peftio_ckpt_close(c);
	tu_tmpdir_remove();
	free(whole);
	free(part);
}
END_TEST

Suite *dequant_suite(void);

Suite *dequant_suite(void)
{
	Suite *s = suite_create("dequant");
	TCase *tc = tcase_create("dequant");

	tcase_add_loop_test(tc, test_dequantize_parts, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
