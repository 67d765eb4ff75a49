/*
 * check_bnb.c - the bitsandbytes on-disk form: the quant_state blob
 * (written as Python writes it, read back, malformed blobs refused) and
 * the quantization_config block of config.json.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

/* What transformers + bitsandbytes store for a [128, 344] bf16 weight. */
static const char blob[] = "{\"quant_type\": \"nf4\", \"blocksize\": 64, "
    "\"dtype\": \"bfloat16\", \"shape\": [128, 344], \"nested_blocksize\": "
    "256, \"nested_dtype\": \"float32\", \"nested_offset\": "
    "0.051740068942308426}";

START_TEST(test_quant_state_roundtrip)
{
	struct peftio_error err;
	struct peftio_quant_state qs;
	char *json;
	size_t len;

	ck_assert_int_eq(peftio_quant_state_parse(blob, strlen(blob), &qs,
	    &err), 0);
	ck_assert_int_eq(qs.type, PEFTIO_Q4_NF4);
	ck_assert_uint_eq(qs.blocksize, 64);
	ck_assert_int_eq(qs.dtype, PEFTIO_BF16);
	ck_assert_int_eq(qs.ndim, 2);
	ck_assert_uint_eq(qs.numel, 128 * 344);
	ck_assert(qs.double_quant);
	ck_assert_uint_eq(qs.nested_blocksize, 256);
	ck_assert_float_eq(qs.nested_offset, 0.051740068942308426f);
	ck_assert_int_eq(peftio_quant_state_json(&qs, &json, &len, &err), 0);
	ck_assert_str_eq(json, blob);
	ck_assert_uint_eq(len, strlen(blob));
	free(json);
}
END_TEST

static const struct {
	const char	*json;
	const char	*msg;
} bad[] = {
	{ "", "not a JSON object" },
	{ "[]", "not a JSON object" },
	{ "{\"quant_type\": \"nf4\", \"quant_type\": \"nf4\"}",
	    "not a JSON object" },
	{ "{\"quant_type\": \"nf8\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64]}", "quant_type" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": "
	    "\"float16\", \"shape\": [64]}", "blocksize 48" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": -64, \"dtype\": "
	    "\"float16\", \"shape\": [64]}", "blocksize" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"int8\", \"shape\": [64]}", "dtype" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64, -1]}", "shape" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64.5]}", "shape" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [4294967296, 4294967296]}", "overflows" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}",
	    "at most 16" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"extra\": 1}", "unknown key" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"nested_blocksize\": 0, "
	    "\"nested_dtype\": \"float32\", \"nested_offset\": 0.5}",
	    "nested_blocksize" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"nested_blocksize\": 256, "
	    "\"nested_dtype\": \"float16\", \"nested_offset\": 0.5}",
	    "nested_dtype" },
	/* Found by fuzz_quant_state: an offset beyond float32's range was
	 * accepted and became Inf (and the blob written back was not
	 * JSON any more). */
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"nested_blocksize\": 256, "
	    "\"nested_dtype\": \"float32\", \"nested_offset\": 0.45e60}",
	    "nested_offset" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"nested_blocksize\": 256, "
	    "\"nested_dtype\": \"float32\", \"nested_offset\": -3.5e38}",
	    "nested_offset" },
	{ "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": "
	    "\"float16\", \"shape\": [64], \"nested_blocksize\": 256, "
	    "\"nested_dtype\": \"float32\", \"nested_offset\": \"0.5\"}",
	    "nested_offset" },
};

START_TEST(test_quant_state_bad)
{
	struct peftio_error err;
	struct peftio_quant_state qs;
	const char *j = bad[_i].json;

	ck_assert_int_eq(peftio_quant_state_parse(j, strlen(j), &qs, &err),
	    PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, bad[_i].msg) != NULL,
	    "case %d: '%s' lacks '%s'", _i, err.msg, bad[_i].msg);
	ck_assert_ptr_null(strchr(err.msg, '\n'));
}
END_TEST

/* The largest float32 offset still fits. */
START_TEST(test_quant_state_flt_max)
{
	static const char j[] = "{\"quant_type\": \"fp4\", \"blocksize\": 32, "
	    "\"dtype\": \"float32\", \"shape\": [], \"nested_blocksize\": 256,"
	    " \"nested_dtype\": \"float32\", \"nested_offset\": "
	    "-3.4028234663852886e+38}";
	struct peftio_error err;
	struct peftio_quant_state qs;
	char *json;
	size_t len;

	ck_assert_int_eq(peftio_quant_state_parse(j, strlen(j), &qs, &err), 0);
	ck_assert_uint_eq(qs.numel, 1);
	ck_assert_int_eq(peftio_quant_state_json(&qs, &json, &len, &err), 0);
	ck_assert_str_eq(json, j);
	free(json);
}
END_TEST

START_TEST(test_config)
{
	static const char in[] = "{\"b\": 1, \"torch_dtype\": \"float32\", "
	    "\"a\": [1.5, null]}";
	struct peftio_error err;
	char *q, *d;
	size_t ql, dl;
	json_t *o;

	ck_assert_int_eq(peftio_config_add_quant(in, strlen(in),
	    PEFTIO_Q4_NF4, 1, PEFTIO_BF16, &q, &ql, &err), 0);
	ck_assert_uint_eq(strlen(q), ql);
	o = json_loads(q, 0, NULL);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o,
	    "quantization_config"), "bnb_4bit_quant_type")), "nf4");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o,
	    "quantization_config"), "bnb_4bit_compute_dtype")), "bfloat16");
	json_decref(o);
	ck_assert_int_eq(peftio_config_remove_quant(q, ql, PEFTIO_F16, &d, &dl,
	    &err), 0);
	ck_assert_str_eq(d, "{\n  \"a\": [\n    1.5,\n    null\n  ],\n"
	    "  \"b\": 1,\n  \"torch_dtype\": \"float16\"\n}\n");
	free(q);
	free(d);
	ck_assert_int_eq(peftio_config_add_quant("[1]", 3, PEFTIO_Q4_NF4, 1,
	    PEFTIO_BF16, &q, &ql, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "config.json"));
	ck_assert_int_eq(peftio_config_remove_quant("{\"a\": 1, \"a\": 2}", 16,
	    -1, &d, &dl, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "duplicate"));
}
END_TEST

/* What a config.json's quantization_config says. */
START_TEST(test_config_quant)
{
	static const struct {
		const char	*in;
		int		 rc;
		const char	*method;
		int		 bits;
	} t[] = {
		{ "{\"a\": 1}", 0, "", 0 },
		{ "{\"quantization_config\": null}", 0, "", 0 },
		{ "{\"quantization_config\": {\"quant_method\": \"gptq\", "
		    "\"bits\": 4}}", 1, "gptq", 0 },
		{ "{\"quantization_config\": {\"quant_method\": "
		    "\"bitsandbytes\", \"load_in_8bit\": true}}", 1,
		    "bitsandbytes", 8 },
		{ "{\"quantization_config\": {\"quant_method\": "
		    "\"bitsandbytes\", \"_load_in_4bit\": true}}", 1,
		    "bitsandbytes", 4 },
		{ "{\"quantization_config\": {}}", 1, "unnamed", 0 },
		{ "[1]", PEFTIO_EFORMAT, "", 0 },
	};
	struct peftio_error err;
	char method[32];
	size_t i;
	int bits;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bits = -1;
		ck_assert_int_eq(peftio_config_quant(t[i].in, strlen(t[i].in),
		    method, sizeof(method), &bits, &err), t[i].rc);
		ck_assert_str_eq(method, t[i].method);
		ck_assert_int_eq(bits, t[i].bits);
	}
}
END_TEST

Suite *bnb_suite(void);

Suite *bnb_suite(void)
{
	Suite *s = suite_create("bnb");
	TCase *tc = tcase_create("quant_state");

	tcase_add_test(tc, test_quant_state_roundtrip);
	tcase_add_loop_test(tc, test_quant_state_bad, 0,
	    (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_quant_state_flt_max);
	suite_add_tcase(s, tc);
	tc = tcase_create("config");
	tcase_add_test(tc, test_config);
	tcase_add_test(tc, test_config_quant);
	suite_add_tcase(s, tc);
	return s;
}
