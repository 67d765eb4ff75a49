/*
 * fuzz_adapter_config.c - PEFT adapters: adapter_config.json with the
 * adapter's tensors, and the merge planned and applied from them.
 *
 * The input is the text of adapter_config.json, optionally followed by
 * a NUL byte and the bytes of adapter_model.safetensors; without them a
 * built-in rank-2 LoRA on two projections is used.  An adapter that
 * opens is merged into a base whose shapes are derived from the
 * adapter's own tensors, alone and combined with itself, and every
 * tensor the merge touches is computed.
 */
#include "fuzz.h"

#define LABEL		"fuzz-adapter"
#define PREFIX		"base_model.model."
#define MAX_NUMEL	(1u << 16)	/* base tensors computed */

static unsigned char *builtin;
static size_t builtin_len;

/* A safetensors file with header json and datalen bytes of data. */
static unsigned char *
mkst(const char *json, size_t datalen, size_t *len)
{
	size_t n = strlen(json), i;
	unsigned char *p;

	*len = 8 + n + datalen;
	if ((p = calloc(1, *len)) == NULL)
		abort();
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(p + 8, json, n);
	for (i = 0; i < datalen; i++)
		p[8 + n + i] = (unsigned char)(i % 7 == 0 ? 0x3f : 0);
	return p;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	builtin = mkst("{"
	    "\"" PREFIX "model.layers.0.self_attn.q_proj.lora_A.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
	    "\"" PREFIX "model.layers.0.self_attn.q_proj.lora_B.weight\":"
	    "{\"dtype\":\"F32\",\"shape\":[6,2],\"data_offsets\":[32,80]},"
	    "\"" PREFIX "model.layers.0.self_attn.v_proj.lora_A.weight\":"
	    "{\"dtype\":\"BF16\",\"shape\":[2,4],\"data_offsets\":[80,96]},"
	    "\"" PREFIX "model.layers.0.self_attn.v_proj.lora_B.weight\":"
	    "{\"dtype\":\"BF16\",\"shape\":[4,2],\"data_offsets\":[96,112]}"
	    "}", 112, &builtin_len);
	return 0;
}

/* The adapter's own tensors, to derive the base's shapes from. */
static struct peftio_ckpt *ck;
static int transposed;

static const struct peftio_tensor_info *
find(const char *module, size_t len, const char *suffix)
{
	char name[1024];
	long i;

	if ((size_t)snprintf(name, sizeof(name), PREFIX "%.*s%s", (int)len,
	    module, suffix) >= sizeof(name))
		return NULL;
	if ((i = peftio_ckpt_find(ck, name)) < 0 &&
	    (i = peftio_ckpt_find(ck, name + strlen(PREFIX))) < 0)
		return NULL;
	return peftio_ckpt_tensor(ck, (size_t)i);
}

static int
shape2(int *ndim, uint64_t *shape, uint64_t rows, uint64_t cols)
{
	*ndim = 2;
	shape[0] = rows;
	shape[1] = cols;
	return 0;
}

/* A base that fits the adapter, as far as the adapter tells. */
static int
shape_of(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	const struct peftio_tensor_info *t, *a, *b;
	size_t n = strlen(name), m;
	int d;

	(void)arg;
	if ((t = find(name, n, "")) != NULL) {	/* a replacement */
		*ndim = t->ndim;
		for (d = 0; d < t->ndim; d++)
			shape[d] = t->shape[d];
		return 0;
	}
	if (n > 7 && strcmp(name + n - 7, ".weight") == 0) {
		m = n - 7;
		a = find(name, m, ".lora_A.weight");
		b = find(name, m, ".lora_B.weight");
		if (a != NULL && b != NULL && a->ndim == 2 && b->ndim == 2)
			return transposed ?
			    shape2(ndim, shape, a->shape[1], b->shape[0]) :
			    shape2(ndim, shape, b->shape[0], a->shape[1]);
		a = find(name, m, ".lora_embedding_A");
		b = find(name, m, ".lora_embedding_B");
		if (a != NULL && b != NULL && a->ndim == 2 && b->ndim == 2)
			return shape2(ndim, shape, a->shape[1], b->shape[0]);
		t = find(name, m, ".ia3_l");
		if (t != NULL && t->ndim == 2)
			return shape2(ndim, shape,
			    t->shape[0] == 1 && t->shape[1] != 1 ? 3 :
			    t->shape[0],
			    t->shape[1] == 1 && t->shape[0] != 1 ? 3 :
			    t->shape[1]);
		return -1;
	}
	if (n > 5 && strcmp(name + n - 5, ".bias") == 0) {
		m = n - 5;
		if ((t = find(name, m, ".lora_B.weight")) == NULL)
			t = find(name, m, ".ia3_l");
		if (t == NULL || t->ndim != 2)
			return -1;
		*ndim = 1;
		shape[0] = t->shape[0] == 1 ? t->shape[1] : t->shape[0];
		return 0;
	}
	return -1;
}

/* Compute one base tensor through the merge, if it is touched. */
static void
apply(struct peftio_merge *m, const char *target, enum peftio_dtype dt)
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
	if (numel > MAX_NUMEL)
		return;
	if ((w = calloc(numel + 1, sizeof(float))) == NULL)
		abort();
	for (d = 0; (uint64_t)d < numel && d < 64; d++)
		w[d] = (float)d / 8;
	if ((rc = peftio_merge_apply(m, target, w, numel, dt, &err)) != 0)
		fuzz_check_error(rc, &err, NULL);
	free(w);
}

static void
merge(struct peftio_adapter *a, int method, int unmerge)
{
	struct peftio_adapter *ads[2] = { a, a };
	struct peftio_merge_opts o;
	struct peftio_error err;
	struct peftio_merge *m;
	double w[2] = { 0.75, -0.5 };
	const char *mod;
	char t[1024];
	size_t i;
	int rc;

	memset(&o, 0, sizeof(o));
	o.method = (enum peftio_combine)method;
	o.weights = w;
	o.density = 0.5;
	o.seed = 1;
	o.unmerge = unmerge;
	o.nthreads = 1;
	rc = peftio_merge_create(&m, ads, method == 0 ? 1 : 2, &o, shape_of,
	    NULL, &err);
	if (rc != 0) {
		fuzz_check_error(rc, &err, NULL);
		return;
	}
	for (i = 0; i < peftio_adapter_nmodules(a); i++) {
		mod = peftio_adapter_module(a, i, NULL, NULL);
		FUZZ_ASSERT(mod != NULL);
		snprintf(t, sizeof(t), "%s.weight", mod);
		apply(m, t, i % 2 ? PEFTIO_BF16 : PEFTIO_F32);
		snprintf(t, sizeof(t), "%s.bias", mod);
		apply(m, t, PEFTIO_F32);
	}
	for (i = 0; i < peftio_ckpt_count(ck); i++) {
		mod = peftio_ckpt_tensor(ck, i)->name;
		if (strncmp(mod, PREFIX, strlen(PREFIX)) == 0)
			mod += strlen(PREFIX);
		apply(m, mod, PEFTIO_F16);
	}
	peftio_merge_free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_adapter *a;
	const unsigned char *model = builtin;
	const uint8_t *nul = memchr(data, '\0', size);
	size_t cfglen = size, modellen = builtin_len, i;
	uint64_t r;
	double scale;
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
	for (i = 0; i < peftio_adapter_nmodules(a); i++) {
		FUZZ_ASSERT(peftio_adapter_module(a, i, &r, &scale) != NULL);
		FUZZ_ASSERT(peftio_adapter_type(a) != PEFTIO_ADAPTER_LORA ||
		    r > 0);
	}
	FUZZ_ASSERT(peftio_adapter_module(a, i, &r, &scale) == NULL);
	FUZZ_ASSERT(peftio_ckpt_open_mem(&ck, model, modellen, "model",
	    &err) == 0);
	transposed = size % 2;
	merge(a, 0, 0);
	merge(a, 0, 1);
	merge(a, 1 + (int)(size % PEFTIO_COMBINE_MAGNITUDE_PRUNE), 0);
	peftio_ckpt_close(ck);
	ck = NULL;
	peftio_adapter_free(a);
	return 0;
}
