/*
 * fuzz_plan_config.c - dq-inspect --plan ADAPTER: an adapter_config.json
 * read for the method, rank, targets and sizes of a fine-tuning plan
 * (plan.c), and the plan computed from it over a small Llama layer.
 *
 * Whatever the input, a refused config is one error naming the file; an
 * accepted one gives a plan or one error (a size PEFT refuses on a
 * layer, a count too large), and a plan never trains more than it
 * counts.
 */
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct { const char *name; uint64_t r, c; } tab[] = {
		{ "model.embed_tokens.weight", 320, 64 },
		{ "model.layers.0.self_attn.q_proj.weight", 64, 64 },
		{ "model.layers.0.self_attn.k_proj.weight", 32, 64 },
		{ "model.layers.0.self_attn.v_proj.weight", 32, 64 },
		{ "model.layers.0.self_attn.o_proj.weight", 64, 64 },
		{ "model.layers.0.mlp.gate_proj.weight", 172, 64 },
		{ "model.layers.0.mlp.up_proj.weight", 172, 64 },
		{ "model.layers.0.mlp.down_proj.weight", 64, 172 },
		{ "model.layers.0.input_layernorm.weight", 64, 0 },
	};
	struct peftio_plan_tensor t[sizeof(tab) / sizeof(tab[0])];
	uint64_t shapes[2 * sizeof(tab) / sizeof(tab[0])];
	struct peftio_plan_opts o;
	struct peftio_plan p;
	struct peftio_error err;
	char *targets = NULL;
	size_t i, n = sizeof(tab) / sizeof(tab[0]);
	int rc;

	memset(&o, 0, sizeof(o));
	o.r = 8;
	o.virtual_tokens = 20;
	rc = peftio_plan_adapter_config((const char *)data, size, &o,
	    &targets, &err);
	if (rc != 0) {
		fuzz_check_error(rc, &err, "adapter_config.json");
		FUZZ_ASSERT(targets == NULL);
		return 0;
	}
	FUZZ_ASSERT(peftio_plan_method_name(o.method) != NULL);
	FUZZ_ASSERT(targets == NULL || (targets[0] != '\0' &&
	    strstr(targets, ",,") == NULL));
	for (i = 0; i < n; i++) {
		shapes[2 * i] = tab[i].r;
		shapes[2 * i + 1] = tab[i].c;
		t[i].name = tab[i].name;
		t[i].ndim = tab[i].c ? 2 : 1;
		t[i].shape = &shapes[2 * i];
		t[i].numel = tab[i].c ? tab[i].r * tab[i].c : tab[i].r;
		t[i].nbytes = 2 * t[i].numel;
		t[i].quantized = 0;
	}
	o.targets = targets;
	rc = peftio_plan_compute(&o, t, n, &p, &err);
	if (rc != 0)
		fuzz_check_error(rc, &err, NULL);
	else
		FUZZ_ASSERT(p.trainable_params <= p.all_params);
	free(targets);
	return 0;
}
