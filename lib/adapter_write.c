/*
 * adapter_write.c - writing a PEFT LoRA adapter: the keys of its
 * factors, the factors in the adapter's dtype, and adapter_config.json
 * as PEFT writes it for a plain LoRA.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_write.h"

#define PEFT_PREFIX	"base_model.model."

const char *
peftio_adapter_key(char *buf, size_t len, const char *module, int factor_b,
    int embedding)
{
	static const char *const part[2][2] = {
		{ "lora_A.weight", "lora_B.weight" },
		{ "lora_embedding_A", "lora_embedding_B" }
	};

	snprintf(buf, len, PEFT_PREFIX "%s.%s", module,
	    part[embedding != 0][factor_b != 0]);
	return buf;
}

int
peftio_adapter_write_f32(struct peftio_ckptw *w, const char *name,
    const float *x, uint64_t n, enum peftio_dtype dt,
    struct peftio_error *err)
{
	uint64_t nb;
	void *buf;
	int rc;

	if (dt == PEFTIO_F32)
		return peftio_ckptw_write(w, name, x, n * sizeof(float), err);
	if ((rc = peftio_dtype_nbytes(dt, n, &nb)) != 0)
		return peftio_error_set(err, rc, "%s: too large", name);
	if ((buf = malloc(nb + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	peftio_from_f32(dt, x, buf, n);
	rc = peftio_ckptw_write(w, name, buf, nb, err);
	free(buf);
	return rc;
}

const char *
peftio_module_leaf(const char *module)
{
	const char *s = strrchr(module, '.');

	return s != NULL ? s + 1 : module;
}

char *
peftio_adapter_pattern_key(const char *module)
{
	size_t n = strlen(module), i, j = 0;
	char *p = malloc(2 * n + 1);

	if (p == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (module[i] == '.')
			p[j++] = '\\';
		p[j++] = module[i];
	}
	p[j] = '\0';
	return p;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* alpha as PEFT keeps it: an integer when it is one. */
json_t *
peftio_json_num(double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		return json_integer((json_int_t)v);
	return json_real(v);
}

json_t *
peftio_adapter_lora_config(const char *const *modules, size_t n,
    const char *name_or_path, uint64_t r, double alpha, json_t *rank_pattern,
    json_t *alpha_pattern)
{
	json_t *c = json_object(), *tm = json_array();
	const char **leaves = malloc((n + 1) * sizeof(*leaves));
	size_t i;

	if (c == NULL || tm == NULL || leaves == NULL) {
		json_decref(c);
		json_decref(tm);
		json_decref(rank_pattern);
		json_decref(alpha_pattern);
		free(leaves);
		return NULL;
	}
	for (i = 0; i < n; i++)
		leaves[i] = peftio_module_leaf(modules[i]);
	qsort(leaves, n, sizeof(*leaves), cmp_str);
	for (i = 0; i < n; i++)
		if (i == 0 || strcmp(leaves[i], leaves[i - 1]) != 0)
			json_array_append_new(tm, json_string(leaves[i]));
	free(leaves);
	json_object_set_new(c, "peft_type", json_string("LORA"));
	json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
	json_object_set_new(c, "base_model_name_or_path",
	    name_or_path != NULL ? json_string(name_or_path) : json_null());
	json_object_set_new(c, "r", json_integer((json_int_t)r));
	json_object_set_new(c, "lora_alpha", peftio_json_num(alpha));
	json_object_set_new(c, "target_modules", tm);
	json_object_set_new(c, "rank_pattern",
	    rank_pattern != NULL ? rank_pattern : json_object());
	json_object_set_new(c, "alpha_pattern",
	    alpha_pattern != NULL ? alpha_pattern : json_object());
	json_object_set_new(c, "bias", json_string("none"));
	json_object_set_new(c, "fan_in_fan_out", json_false());
	json_object_set_new(c, "use_rslora", json_false());
	json_object_set_new(c, "use_dora", json_false());
	json_object_set_new(c, "lora_dropout", json_real(0.0));
	json_object_set_new(c, "inference_mode", json_true());
	json_object_set_new(c, "modules_to_save", json_null());
	json_object_set_new(c, "init_lora_weights", json_true());
	return c;
}
