/*
 * bnb_config.c - config.json's quantization_config: what transformers
 * writes for a bitsandbytes 4-bit or 8-bit model, what a checkpoint's
 * says it is, and its removal when a model is dequantized.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

static json_t *
load_object(const char *in, size_t inlen, struct peftio_error *err)
{
	json_error_t jerr;
	json_t *o;

	o = json_loadb(in, inlen, JSON_REJECT_DUPLICATES, &jerr);
	if (o == NULL) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "config.json: line %d: %s", jerr.line, jerr.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "config.json: not a JSON object");
		return NULL;
	}
	return o;
}

static int
dump_config(json_t *o, char **out, size_t *outlen, struct peftio_error *err)
{
	*out = peftio_json_pydumps(o, 2, 1, outlen);
	json_decref(o);
	if (*out == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "config.json: out of memory");
	return 0;
}

int
peftio_config_add_bnb(const char *in, size_t inlen,
    const struct peftio_bnb_config *c, char **out, size_t *outlen,
    struct peftio_error *err)
{
	int eight = c->bits == 8;
	const char *cname = peftio_dtype_torch_name(eight ? PEFTIO_F32 :
	    c->compute);
	const char *sname = peftio_dtype_torch_name(eight ? PEFTIO_U8 :
	    c->storage);
	json_t *o, *q;

	if (c->bits != 4 && c->bits != 8)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "quantization_config: %d bits", c->bits);
	if ((o = load_object(in, inlen, err)) == NULL)
		return err != NULL ? err->code : PEFTIO_EFORMAT;
	if ((q = json_object()) == NULL || cname == NULL || sname == NULL) {
		json_decref(q);
		json_decref(o);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "config.json: out of memory");
	}
	/* BitsAndBytesConfig.to_dict() in transformers 5.17 (13 keys);
	 * with load_in_8bit the 4-bit keys keep their defaults. */
	json_object_set_new(q, "_load_in_4bit", json_boolean(!eight));
	json_object_set_new(q, "_load_in_8bit", json_boolean(eight));
	json_object_set_new(q, "bnb_4bit_compute_dtype", json_string(cname));
	json_object_set_new(q, "bnb_4bit_quant_storage", json_string(sname));
	json_object_set_new(q, "bnb_4bit_quant_type", json_string(eight ?
	    "fp4" : peftio_q4type_name(c->type)));
	json_object_set_new(q, "bnb_4bit_use_double_quant",
	    json_boolean(!eight && c->double_quant));
	json_object_set_new(q, "llm_int8_enable_fp32_cpu_offload",
	    json_false());
	json_object_set_new(q, "llm_int8_has_fp16_weight", json_false());
	json_object_set_new(q, "llm_int8_skip_modules", json_null());
	json_object_set_new(q, "llm_int8_threshold", json_real(6.0));
	json_object_set_new(q, "load_in_4bit", json_boolean(!eight));
	json_object_set_new(q, "load_in_8bit", json_boolean(eight));
	json_object_set_new(q, "quant_method", json_string("bitsandbytes"));
	json_object_set_new(o, "quantization_config", q);
	return dump_config(o, out, outlen, err);
}

int
peftio_config_quant(const char *in, size_t inlen, char *method, size_t cap,
    int *bits, struct peftio_error *err)
{
	json_t *o, *q, *m;

	if (cap > 0)
		method[0] = '\0';
	*bits = 0;
	if ((o = load_object(in, inlen, err)) == NULL)
		return err != NULL ? err->code : PEFTIO_EFORMAT;
	if ((q = json_object_get(o, "quantization_config")) == NULL ||
	    json_is_null(q)) {
		json_decref(o);
		return 0;
	}
	m = json_is_object(q) ? json_object_get(q, "quant_method") : NULL;
	if (cap > 0)
		snprintf(method, cap, "%s", json_is_string(m) ?
		    json_string_value(m) : "unnamed");
	if (json_is_object(q)) {
		if (json_is_true(json_object_get(q, "load_in_4bit")) ||
		    json_is_true(json_object_get(q, "_load_in_4bit")))
			*bits = 4;
		else if (json_is_true(json_object_get(q, "load_in_8bit")) ||
		    json_is_true(json_object_get(q, "_load_in_8bit")))
			*bits = 8;
	}
	json_decref(o);
	return 1;
}

int
peftio_config_add_quant(const char *in, size_t inlen, enum peftio_q4type type,
    int double_quant, enum peftio_dtype compute, char **out, size_t *outlen,
    struct peftio_error *err)
{
	struct peftio_bnb_config c;

	c.bits = 4;
	c.type = type;
	c.double_quant = double_quant;
	c.compute = compute;
	c.storage = PEFTIO_U8;
	return peftio_config_add_bnb(in, inlen, &c, out, outlen, err);
}

int
peftio_config_remove_quant(const char *in, size_t inlen, int dt, char **out,
    size_t *outlen, struct peftio_error *err)
{
	const char *name;
	json_t *o;

	if ((o = load_object(in, inlen, err)) == NULL)
		return err != NULL ? err->code : PEFTIO_EFORMAT;
	json_object_del(o, "quantization_config");
	if (dt >= 0 && (name = peftio_dtype_torch_name(dt)) != NULL) {
		if (json_object_get(o, "torch_dtype") != NULL)
			json_object_set_new(o, "torch_dtype", json_string(name));
		if (json_object_get(o, "dtype") != NULL ||
		    json_object_get(o, "torch_dtype") == NULL)
			json_object_set_new(o, "dtype", json_string(name));
	}
	return dump_config(o, out, outlen, err);
}
