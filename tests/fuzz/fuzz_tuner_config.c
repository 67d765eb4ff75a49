/*
 * fuzz_tuner_config.c - PEFT's other tuners (tuners.c): an
 * adapter_config.json of any tuner type with the adapter's tensors,
 * and the merge and unmerge planned and applied from them.
 *
 * The input is the text of adapter_config.json, a NUL byte and the
 * bytes of adapter_model.safetensors; without the NUL, a built-in LoHa
 * module on v_proj is used.  The base is a small Llama layer: q_proj and
 * o_proj [64, 64], k_proj and v_proj [32, 64], up_proj and gate_proj
 * [172, 64], down_proj [64, 172], or [64, 64] for any other ".weight"
 * (its transpose when the input's length is odd); a replacement
 * (modules_to_save) has its own shape.
 */
#include "fuzz.h"

#define LABEL		"fuzz-tuner"
#define PREFIX		"base_model.model."
#define VP		PREFIX "model.layers.0.self_attn.v_proj."

static unsigned char *builtin;
static size_t builtin_len;
static struct peftio_ckpt *ck;
static int transposed;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char json[] = "{"
	    "\"" VP "hada_w1_a\":{\"dtype\":\"F32\",\"shape\":[32,2],"
	    "\"data_offsets\":[0,256]},"
	    "\"" VP "hada_w1_b\":{\"dtype\":\"F32\",\"shape\":[2,64],"
	    "\"data_offsets\":[256,768]},"
	    "\"" VP "hada_w2_a\":{\"dtype\":\"BF16\",\"shape\":[32,2],"
	    "\"data_offsets\":[768,896]},"
	    "\"" VP "hada_w2_b\":{\"dtype\":\"F32\",\"shape\":[2,64],"
	    "\"data_offsets\":[896,1408]}}";
	size_t n = strlen(json), i;

	(void)argc;
	(void)argv;
	builtin_len = 8 + n + 1408;
	if ((builtin = calloc(1, builtin_len)) == NULL)
		abort();
	for (i = 0; i < 8; i++)
		builtin[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(builtin + 8, json, n);
	for (i = 0; i < 1408; i++)
		builtin[8 + n + i] = (unsigned char)(i % 4 == 3 ? 0x3c : 0);
	return 0;
}

static int
shape_of(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	static const struct { const char *mod; uint64_t r, c; } tab[] = {
		{ "q_proj.weight", 64, 64 }, { "o_proj.weight", 64, 64 },
		{ "k_proj.weight", 32, 64 }, { "v_proj.weight", 32, 64 },
		{ "up_proj.weight", 172, 64 }, { "gate_proj.weight", 172, 64 },
		{ "down_proj.weight", 64, 172 },
	};
	const struct peftio_tensor_info *t;
	char full[1024];
	size_t n = strlen(name), i, m;
	long k;
	int d;

	(void)arg;
	if ((size_t)snprintf(full, sizeof(full), PREFIX "%s", name) <
	    sizeof(full) && ((k = peftio_ckpt_find(ck, full)) >= 0 ||
	    (k = peftio_ckpt_find(ck, name)) >= 0)) {	/* a replacement */
		t = peftio_ckpt_tensor(ck, (size_t)k);
		*ndim = t->ndim;
		for (d = 0; d < t->ndim; d++)
			shape[d] = t->shape[d];
		return 0;
	}
	if (n < 7 || strcmp(name + n - 7, ".weight") != 0)
		return -1;
	*ndim = 2;
	shape[0] = shape[1] = 64;
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		m = strlen(tab[i].mod);
		if (n >= m && strcmp(name + n - m, tab[i].mod) == 0) {
			shape[0] = transposed ? tab[i].c : tab[i].r;
			shape[1] = transposed ? tab[i].r : tab[i].c;
		}
	}
	return 0;
}

static void
apply(struct peftio_merge *m, const char *target)
{
	struct peftio_error err;
	uint64_t shape[PEFTIO_MAX_DIMS], numel = 1;
	float *w;
	int ndim, d, rc;

	if (!peftio_merge_touches(m, target))
		return;
	FUZZ_ASSERT(shape_of(NULL, target, &ndim, shape) == 0);
	for (d = 0; d < ndim; d++)
		if (__builtin_mul_overflow(numel, shape[d], &numel))
			return;
	if (numel > (1u << 16))
		return;
	if ((w = calloc(numel + 1, sizeof(float))) == NULL)
		abort();
	for (d = 0; (uint64_t)d < numel; d++)
		w[d] = (float)(d % 13) / 16;
	if ((rc = peftio_merge_apply(m, target, w, numel, PEFTIO_BF16,
	    &err)) != 0)
		fuzz_check_error(rc, &err, NULL);
	free(w);
}

static void
merge(struct peftio_adapter *a, int unmerge)
{
	struct peftio_merge_opts o;
	struct peftio_error err;
	struct peftio_merge *m;
	const char *mod;
	char t[1024];
	size_t i;
	int rc;

	memset(&o, 0, sizeof(o));
	o.unmerge = unmerge;
	o.nthreads = 1;
	if ((rc = peftio_merge_create(&m, &a, 1, &o, shape_of, NULL, &err))
	    != 0) {
		fuzz_check_error(rc, &err, NULL);
		return;
	}
	for (i = 0; i < peftio_adapter_nmodules(a); i++) {
		mod = peftio_adapter_module(a, i, NULL, NULL);
		FUZZ_ASSERT(mod != NULL);
		snprintf(t, sizeof(t), "%s.weight", mod);
		apply(m, t);
	}
	for (i = 0; i < peftio_ckpt_count(ck); i++) {
		mod = peftio_ckpt_tensor(ck, i)->name;
		if (strncmp(mod, PREFIX, strlen(PREFIX)) == 0)
			mod += strlen(PREFIX);
		apply(m, mod);
	}
	peftio_merge_free(m);
	/* -m stays LoRA's */
	o.method = PEFTIO_COMBINE_LINEAR;
	if (peftio_adapter_type(a) == PEFTIO_ADAPTER_TUNER) {
		FUZZ_ASSERT(peftio_merge_create(&m, &a, 1, &o, shape_of, NULL,
		    &err) == PEFTIO_EINVAL);
		fuzz_check_error(PEFTIO_EINVAL, &err, LABEL);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_adapter *a;
	const unsigned char *model = builtin;
	const uint8_t *nul = memchr(data, '\0', size);
	size_t cfglen = size, modellen = builtin_len;
	int rc;

	if (nul != NULL) {
		cfglen = (size_t)(nul - data);
		model = nul + 1;
		modellen = size - cfglen - 1;
	}
	rc = peftio_adapter_open_mem(&a, (const char *)data, cfglen, model,
	    modellen, LABEL, &err);
	if (rc != 0) {
		FUZZ_ASSERT(a == NULL);
		fuzz_check_error(rc, &err, rc == PEFTIO_ENOMEM ? NULL : LABEL);
		return 0;
	}
	FUZZ_ASSERT(peftio_adapter_module(a, peftio_adapter_nmodules(a), NULL,
	    NULL) == NULL);
	FUZZ_ASSERT(peftio_ckpt_open_mem(&ck, model, modellen, "model",
	    &err) == 0);
	transposed = size % 2;
	merge(a, 0);
	merge(a, 1);
	peftio_ckpt_close(ck);
	ck = NULL;
	peftio_adapter_free(a);
	return 0;
}
