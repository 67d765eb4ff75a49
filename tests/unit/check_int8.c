/*
 * check_int8.c - LLM.int8: the row-wise codec against bitsandbytes' CUDA
 * int8_vectorwise_quant / _dequant (tests/data/int8/codec.safetensors,
 * written by make-int8-data.py), the 8-bit on-disk form (lookup of
 * good and malformed weights), bnb_4bit_quant_storage, GPT-2's Conv1D
 * helpers and the quantization_config of an 8-bit model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

#define CODEC	TEST_DATA "/int8/codec.safetensors"
#define NCASES	6

static const void *
tensor(struct peftio_ckpt *c, const char *name,
    const struct peftio_tensor_info **ti)
{
	struct peftio_error err;
	const void *p;
	long i = peftio_ckpt_find(c, name);

	ck_assert_msg(i >= 0, "%s: no tensor %s", CODEC, name);
	*ti = peftio_ckpt_tensor(c, (size_t)i);
	ck_assert_int_eq(peftio_ckpt_data(c, (size_t)i, &p, &err), 0);
	return p;
}

/* Every code, scale and dequantized value of the GPU's, bit for bit. */
START_TEST(test_codec_cases)
{
	const struct peftio_tensor_info *in, *cb, *scb, *dq;
	struct peftio_error err;
	struct peftio_ckpt *c;
	const void *x, *want_cb, *want_scb, *want_dq;
	char name[32];
	uint64_t rows, cols;
	int8_t *codes, *codes4;
	float *s, *s4, *y;
	int k = _i;

	ck_assert_int_eq(peftio_gpu_rcp_init(&err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&c, CODEC, &err), 0);
	snprintf(name, sizeof(name), "in.%d", k);
	x = tensor(c, name, &in);
	snprintf(name, sizeof(name), "%d.CB", k);
	want_cb = tensor(c, name, &cb);
	snprintf(name, sizeof(name), "%d.SCB", k);
	want_scb = tensor(c, name, &scb);
	snprintf(name, sizeof(name), "%d.dequant", k);
	want_dq = tensor(c, name, &dq);
	rows = in->shape[0];
	cols = in->shape[1];
	ck_assert_uint_eq(cb->numel, rows * cols);
	ck_assert_uint_eq(scb->numel, rows);
	codes = malloc(rows * cols);
	codes4 = malloc(rows * cols);
	s = malloc(rows * sizeof(float));
	s4 = malloc(rows * sizeof(float));
	y = malloc(rows * cols * sizeof(float));
	ck_assert_int_eq(peftio_int8_quantize(in->dtype, x, cols, 0, rows,
	    codes, s), 0);
	ck_assert_msg(memcmp(codes, want_cb, rows * cols) == 0,
	    "case %d: codes differ", k);
	ck_assert_msg(memcmp(s, want_scb, rows * sizeof(float)) == 0,
	    "case %d: SCB differs", k);
	/* Threads change nothing. */
	ck_assert_int_eq(peftio_bnb8_quantize(in->dtype, x, rows, cols,
	    codes4, s4, 4, &err), 0);
	ck_assert(memcmp(codes, codes4, rows * cols) == 0);
	ck_assert(memcmp(s, s4, rows * sizeof(float)) == 0);
	memcpy(s, want_scb, rows * sizeof(float));
	ck_assert_int_eq(peftio_int8_dequantize(want_cb, s, cols, 0, rows,
	    PEFTIO_F32, y), 0);
	ck_assert_msg(memcmp(y, want_dq, rows * cols * sizeof(float)) == 0,
	    "case %d: dequantized values differ", k);
	free(codes);
	free(codes4);
	free(s);
	free(s4);
	free(y);
	peftio_ckpt_close(c);
}
END_TEST

/*
 * The GPU's reciprocal is what makes the codes exact: with the IEEE
 * division some code of the committed cases differs (they were chosen
 * for that), so the test above is not passed by chance.
 */
START_TEST(test_codec_needs_gpu_rcp)
{
	const struct peftio_tensor_info *in, *cb;
	struct peftio_error err;
	struct peftio_ckpt *c;
	const int8_t *want;
	uint16_t *x;
	uint64_t r, j, cols, miss = 0;
	float am, v;

	ck_assert_int_eq(peftio_ckpt_open(&c, CODEC, &err), 0);
	/* Tensors in a file need not be aligned: copy. */
	x = malloc(2 * 40 * 64);
	memcpy(x, tensor(c, "in.5", &in), 2 * 40 * 64);
	want = tensor(c, "5.CB", &cb);
	ck_assert_int_eq(in->dtype, PEFTIO_F16);
	ck_assert_uint_eq(in->numel, 40 * 64);
	cols = in->shape[1];
	for (r = 0; r < in->shape[0]; r++) {
		am = 0.0f;
		for (j = 0; j < cols; j++)
			am = fmaxf(am, fabsf(peftio_f16_to_f32(x[r * cols + j])));
		for (j = 0; j < cols; j++) {
			v = peftio_f16_to_f32(x[r * cols + j]) * (127.0f / am);
			if ((int8_t)rintf(v) != want[r * cols + j])
				miss++;
		}
	}
	ck_assert_uint_gt(miss, 0);
	free(x);
	peftio_ckpt_close(c);
}
END_TEST

START_TEST(test_codec_edges)
{
	float x[8] = { 0, 0, 0, 0, 1.0f, -2.0f, NAN, 0.5f }, s[2], y[8];
	int8_t q[8];

	ck_assert(isinf(peftio_int8_scale(0.0f)));
	ck_assert_float_eq(peftio_int8_scale(127.0f), 1.0f);
	ck_assert_int_eq(peftio_int8_quantize(PEFTIO_F32, x, 4, 0, 2, q, s),
	    0);
	/* A row of zeros: scale 0, codes 0 (0 * inf is NaN, coded 0). */
	ck_assert_float_eq(s[0], 0.0f);
	ck_assert_int_eq(q[0], 0);
	ck_assert_int_eq(q[3], 0);
	/* NaN is left out of the absmax and coded 0. */
	ck_assert_float_eq(s[1], 2.0f);
	ck_assert_int_eq(q[4], 64);	/* 63.5 rounds to even */
	ck_assert_int_eq(q[5], -127);
	ck_assert_int_eq(q[6], 0);
	ck_assert_int_eq(q[7], 32);
	ck_assert_int_eq(peftio_int8_dequantize(q, s, 4, 1, 2, PEFTIO_F32, y),
	    0);
	ck_assert_float_eq(y[1], -2.0f * 127.0f * 7.874015718698502e-3f);
	ck_assert_int_eq(peftio_int8_quantize(PEFTIO_I8, x, 4, 0, 1, q, s),
	    PEFTIO_EINVAL);
	/* The input is rounded to float16 first: 1 + 2^-12 becomes 1. */
	x[0] = 1.0f + 1.0f / 4096;
	x[1] = -1.0f;
	ck_assert_int_eq(peftio_int8_quantize(PEFTIO_F32, x, 2, 0, 1, q, s),
	    0);
	ck_assert_float_eq(s[0], 1.0f);
	ck_assert_double_eq(peftio_int8_bits_per_param(128), 8.25);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The on-disk form                                                    */

#define W	"m.up_proj"

/* A safetensors file in memory from a header and data. */
static unsigned char *
mkst(const char *hdr, const void *data, size_t n, size_t *len)
{
	size_t h = strlen(hdr);
	unsigned char *b = malloc(8 + h + n + 1);
	uint64_t hl = h;

	memcpy(b, &hl, 8);
	memcpy(b + 8, hdr, h);
	memcpy(b + 8 + h, data, n);
	*len = 8 + h + n;
	return b;
}

/*
 * The data: 8 codes (1..8), 2 scales (1 and 2, or NaN and 3 when
 * nonfinite), a weight_format byte (0, or 2 when fmt); len bytes of it.
 */
static const struct {
	const char	*hdr;
	size_t		 len;
	int		 nonfinite, fmt;
	int		 rc;		/* of looking up every tensor */
	const char	*msg;
} forms[] = {
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[8,16]},\"" W ".weight_format\":"
	    "{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]}}", 17,
	    0, 0, 1, NULL },
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]}}", 8, 0, 0, PEFTIO_EFORMAT,
	    "without its SCB" },
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[1],\"data_offsets\":[8,12]}}", 12, 0, 0, PEFTIO_EFORMAT,
	    "one per row" },
	{ "{\"" W ".weight\":{\"dtype\":\"U8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 0, 0, PEFTIO_EFORMAT,
	    "2-D I8" },
	{ "{\"" W ".SCB\":{\"dtype\":\"F32\",\"shape\":[2],"
	    "\"data_offsets\":[0,8]}}", 8, 0, 0, PEFTIO_EFORMAT,
	    "no 8-bit weight" },
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[0,4],"
	    "\"data_offsets\":[0,0]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[0],\"data_offsets\":[0,0]}}", 0, 0, 0, PEFTIO_EFORMAT,
	    "no values" },
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 1, 0, PEFTIO_EFORMAT,
	    "not finite" },
	{ "{\"" W ".weight\":{\"dtype\":\"I8\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,8]},\"" W ".SCB\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[8,16]},\"" W ".weight_format\":"
	    "{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]}}",
	    17, 0, 1, PEFTIO_EUNSUPPORTED, "not row-major" },
};

static unsigned char *
form_data(int k)
{
	static const float sc[2] = { 1.0f, 2.0f };
	float bad[2] = { NAN, 3.0f };
	unsigned char *d = calloc(1, 17);
	int i;

	for (i = 0; i < 8; i++)
		d[i] = (unsigned char)(i + 1);
	memcpy(d + 8, forms[k].nonfinite ? bad : sc, 8);
	d[16] = forms[k].fmt ? 2 : 0;
	return d;
}

START_TEST(test_bnb8_lookup)
{
	struct peftio_bnb8_weight bw, found;
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *d, *buf;
	size_t len, i;
	float y[8];
	int rc, got = 0, nfound = 0;

	d = form_data(_i);
	buf = mkst(forms[_i].hdr, d, forms[_i].len, &len);
	ck_assert_int_eq(peftio_ckpt_open_mem(&c, buf, len, "t.safetensors",
	    &err), 0);
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		peftio_error_clear(&err);
		rc = peftio_bnb8_lookup(c, i, &bw, &err);
		if (rc < 0) {
			got = rc;
			ck_assert_msg(strstr(err.msg, forms[_i].msg) != NULL,
			    "form %d: message '%s' lacks '%s'", _i, err.msg,
			    forms[_i].msg);
			ck_assert_ptr_nonnull(strstr(err.msg, W));
		} else if (rc == 1) {
			found = bw;
			nfound++;
		}
	}
	if (forms[_i].rc == 1) {
		ck_assert_int_eq(got, 0);
		ck_assert_int_eq(nfound, 1);
		ck_assert_uint_eq(found.rows, 2);
		ck_assert_uint_eq(found.cols, 4);
		ck_assert_int_ge(found.format, 0);
		ck_assert_int_eq(peftio_bnb8_dequantize(c, &found, PEFTIO_F32,
		    y, 2, &err), 0);
		/* row 1: code 5 * 2.0 * (float)(1/127) */
		ck_assert_float_eq(y[4], 10.0f * 7.874015718698502e-3f);
		ck_assert_int_eq(peftio_bnb8_dequantize_part(c, &found,
		    PEFTIO_F32, y, 1, 2, 1, &err), PEFTIO_EINVAL);
		ck_assert_int_eq(peftio_bnb8_dequantize(c, &found, PEFTIO_I8,
		    y, 1, &err), PEFTIO_EINVAL);
	} else
		ck_assert_int_eq(got, forms[_i].rc);
	peftio_ckpt_close(c);
	free(buf);
	free(d);
}
END_TEST

/* ------------------------------------------------------------------ */

START_TEST(test_storage)
{
	struct peftio_error err;
	uint64_t shape[2];

	ck_assert_int_eq(peftio_bnb_storage_parse("bf16"), PEFTIO_BF16);
	ck_assert_int_eq(peftio_bnb_storage_parse("bfloat16"), PEFTIO_BF16);
	ck_assert_int_eq(peftio_bnb_storage_parse("f16"), PEFTIO_F16);
	ck_assert_int_eq(peftio_bnb_storage_parse("float32"), PEFTIO_F32);
	ck_assert_int_eq(peftio_bnb_storage_parse("u8"), PEFTIO_U8);
	ck_assert_int_eq(peftio_bnb_storage_parse("int8"), -1);
	/* [128, 344] as transformers stores it with bfloat16 storage */
	ck_assert_int_eq(peftio_bnb_storage_shape(PEFTIO_BF16, 128 * 344,
	    shape, &err), 0);
	ck_assert_uint_eq(shape[0], 11008);
	ck_assert_uint_eq(shape[1], 1);
	ck_assert_int_eq(peftio_bnb_storage_shape(PEFTIO_U8, 5, shape, &err),
	    0);
	ck_assert_uint_eq(shape[0], 3);
	ck_assert_int_eq(peftio_bnb_storage_shape(PEFTIO_F32, 18, shape, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "whole number"));
	ck_assert_int_eq(peftio_bnb_storage_shape(PEFTIO_I8, 8, shape, &err),
	    PEFTIO_EINVAL);
}
END_TEST

START_TEST(test_conv1d)
{
	const uint16_t in[6] = { 1, 2, 3, 4, 5, 6 };
	const uint16_t want[6] = { 1, 4, 2, 5, 3, 6 };
	uint16_t out[6];

	ck_assert(peftio_conv1d_weight("transformer.h.0.attn.c_attn.weight"));
	ck_assert(peftio_conv1d_weight("transformer.h.11.mlp.c_proj.weight"));
	ck_assert(!peftio_conv1d_weight("transformer.h.0.attn.c_attn.bias"));
	ck_assert(!peftio_conv1d_weight("model.layers.0.mlp.up_proj.weight"));
	peftio_transpose(in, out, 2, 3, sizeof(in[0]));
	ck_assert(memcmp(out, want, sizeof(out)) == 0);
}
END_TEST

/* A [2, 3] f32 Conv1D weight as it is quantized: [3, 2] in bf16. */
START_TEST(test_values)
{
	static const float w[6] = { 1, 2, 3, 4, 5, 6.0039062f };
	struct peftio_scratch buf[2];
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *st;
	const uint16_t *v;
	const void *p;
	size_t len;
	uint16_t got[6];
	int k;

	memset(buf, 0, sizeof(buf));
	st = mkst("{\"h.0.attn.c_attn.weight\":{\"dtype\":\"F32\","
	    "\"shape\":[2,3],\"data_offsets\":[0,24]}}", w, sizeof(w), &len);
	ck_assert_int_eq(peftio_ckpt_open_mem(&c, st, len, "v.safetensors",
	    &err), 0);
	ck_assert_int_eq(peftio_bnb_values(c, 0, 1, PEFTIO_BF16, 1, buf, &p,
	    &err), 0);
	v = p;
	memcpy(got, v, sizeof(got));
	/* column-major of w, rounded to bf16 (6.0039 -> 6) */
	ck_assert_float_eq(peftio_bf16_to_f32(got[0]), 1.0f);
	ck_assert_float_eq(peftio_bf16_to_f32(got[1]), 4.0f);
	ck_assert_float_eq(peftio_bf16_to_f32(got[2]), 2.0f);
	ck_assert_float_eq(peftio_bf16_to_f32(got[5]), 6.0f);
	for (k = 0; k < 2; k++)
		peftio_scratch_free(&buf[k]);
	peftio_ckpt_close(c);
	free(st);
}
END_TEST

/* config.json of examples/tiny-llama gets transformers' own block. */
static void
config_equals(const struct peftio_bnb_config *qc, const char *ref)
{
	struct peftio_error err;
	char *in, *want, *out;
	size_t inlen, wantlen, outlen;

	in = tu_read_file("../../examples/tiny-llama/config.json", &inlen);
	want = tu_read_file(ref, &wantlen);
	ck_assert_int_eq(peftio_config_add_bnb(in, inlen, qc, &out, &outlen,
	    &err), 0);
	ck_assert_uint_eq(outlen, wantlen);
	ck_assert(memcmp(out, want, outlen) == 0);
	free(in);
	free(want);
	free(out);
}

START_TEST(test_config)
{
	struct peftio_bnb_config qc;
	struct peftio_error err;
	char m[64];
	int bits;
	const char *gptq = "{\"quantization_config\": {\"bits\": 4, "
	    "\"quant_method\": \"gptq\"}}";
	const char *b8 = "{\"quantization_config\": {\"load_in_8bit\": true, "
	    "\"quant_method\": \"bitsandbytes\"}}";

	memset(&qc, 0, sizeof(qc));
	qc.bits = 8;
	config_equals(&qc, TEST_DATA "/bnb-ref/int8.config.json");
	qc.bits = 4;
	qc.type = PEFTIO_Q4_NF4;
	qc.double_quant = 1;
	qc.compute = PEFTIO_BF16;
	qc.storage = PEFTIO_BF16;
	config_equals(&qc, TEST_DATA "/bnb-ref/nf4-dq1-bf16.config.json");
	ck_assert_int_eq(peftio_config_quant(gptq, strlen(gptq), m,
	    sizeof(m), &bits, &err), 1);
	ck_assert_str_eq(m, "gptq");
	ck_assert_int_eq(peftio_config_quant(b8, strlen(b8), m,
	    sizeof(m), &bits, &err), 1);
	ck_assert_str_eq(m, "bitsandbytes");
	ck_assert_int_eq(bits, 8);
	ck_assert_int_eq(peftio_config_quant("{}", 2, m, sizeof(m), &bits,
	    &err), 0);
	ck_assert_int_eq(peftio_config_quant("[", 1, m, sizeof(m), &bits,
	    &err), PEFTIO_EFORMAT);
}
END_TEST

Suite *int8_suite(void);

Suite *int8_suite(void)
{
	Suite *s = suite_create("int8");
	TCase *tc = tcase_create("codec");

	tcase_add_loop_test(tc, test_codec_cases, 0, NCASES);
	tcase_add_test(tc, test_codec_needs_gpu_rcp);
	tcase_add_test(tc, test_codec_edges);
	suite_add_tcase(s, tc);
	tc = tcase_create("form");
	tcase_add_loop_test(tc, test_bnb8_lookup, 0,
	    (int)(sizeof(forms) / sizeof(forms[0])));
	tcase_add_test(tc, test_storage);
	tcase_add_test(tc, test_conv1d);
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_config);
	suite_add_tcase(s, tc);
	return s;
}
