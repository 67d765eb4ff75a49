/*
 * tuners.c - PEFT's other weight tuners: the type table, their
 * adapter_config.json and tensors, classified per module and checked
 * for rank and shape consistency (the merge itself: tuner_delta.c,
 * tuner_rotation.c; against the base: tuner_plan.c).
 *
 * Additive tuners (AdaLoRA, LoHa, LoKr, VeRA, RandLoRA, VB-LoRA, SHiRA,
 * C3A, DeLoRA, MiSS) give a delta that is added to the weight (or
 * subtracted to unmerge).  Rotation tuners (OFT, BOFT, HRA) multiply
 * each row of the weight by an orthogonal matrix, kept as a sequence of
 * stages (blocks on the diagonal, permutations, Householder
 * reflections, a scale per row) so that no in x in matrix is formed.
 * Tuners whose merge cannot be reproduced from the files are refused
 * with the reason.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tuners_private.h"

const struct tdesc peftio_tuner_descs[T_NTYPES] = {
	[T_ADALORA] = { "ADALORA", ".lora_", { "lora_A", "lora_B", "lora_E" },
	    { NULL }, 1, 0 },
	[T_LOHA] = { "LOHA", ".hada_", { "hada_w1_a", "hada_w1_b",
	    "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2" }, { NULL }, 0, 0 },
	[T_LOKR] = { "LOKR", ".lokr_", { "lokr_w1", "lokr_w1_a", "lokr_w1_b",
	    "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2" }, { NULL }, 0, 0 },
	[T_VERA] = { "VERA", "vera_", { "vera_lambda_b", "vera_lambda_d",
	    "vera_A", "vera_B" }, { "vera_A", "vera_B" }, 1, 0 },
	[T_OFT] = { "OFT", ".oft_", { "oft_R.weight" }, { NULL }, 0, 1 },
	[T_BOFT] = { "BOFT", ".boft_", { "boft_R", "boft_s" }, { NULL }, 0, 1 },
	[T_HRA] = { "HRA", ".hra_", { "hra_u" }, { NULL }, 0, 1 },
	[T_MISS] = { "MISS", ".miss_", { "miss_block" }, { NULL }, 0, 0 },
	[T_VBLORA] = { "VBLORA", "vblora_", { "vblora_logits_A",
	    "vblora_logits_B", "vblora_vector_bank" },
	    { "vblora_vector_bank" }, 1, 0 },
	[T_RANDLORA] = { "RANDLORA", "randlora_", { "randlora_lambda",
	    "randlora_gamma", "randlora_A", "randlora_B" },
	    { "randlora_A", "randlora_B" }, 1, 0 },
	[T_SHIRA] = { "SHIRA", ".shira_", { "shira_weight", "shira_indices" },
	    { NULL }, 0, 0 },
	[T_C3A] = { "C3A", ".c3a_", { "c3a_kernel" }, { NULL }, 0, 0 },
	[T_DELORA] = { "DELORA", ".delora_", { "delora_A", "delora_B",
	    "delora_lambda", "delora_w_norm" }, { NULL }, 0, 0 },
};

/* Types whose merge cannot be computed from the files, and why. */
static const struct { const char *type, *why; } refused[] = {
	{ "FOURIERFT", "the spectrum's frequency indices are drawn by "
	    "torch.randperm from random_loc_seed and are not saved in the "
	    "adapter" },
	{ "ROAD", "RoAd's grouped 2x2 rotations are not implemented" },
	{ "LN_TUNING", "LayerNorm tuning saves whole norm layers; merge them "
	    "as modules_to_save of a LoRA adapter" },
	{ "POLY", "Poly routes among several LoRA modules per task at run "
	    "time" },
	{ "XLORA", "X-LoRA mixes LoRA experts per token at run time" },
	{ "GRALORA", "GraLoRA's block-wise factors are not implemented" },
	{ "BONE", "Bone is MiSS's earlier name; convert the adapter to MISS "
	    "with PEFT first" },
	{ "WAVEFT", "WaveFT's wavelet coefficients are placed by torch's "
	    "random generator" },
	{ "OSF", "OSF changes the base weights' singular vectors in place" },
};


/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int
ends_with(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && memcmp(s + n - m, suf, m) == 0;
}

const struct peftio_tensor_info *
peftio_tuner_tinfo(const struct peftio_tuner *t, long idx)
{
	return peftio_ckpt_tensor(t->ck, (size_t)idx);
}

const char *
peftio_tuner_tname(const struct peftio_tuner *t, const struct tmod *m, int slot)
{
	return m->t[slot] >= 0 ? peftio_tuner_tinfo(t, m->t[slot])->name :
	    peftio_tuner_descs[t->type].slot[slot];
}

/* The values of tensor idx as doubles (freed by the caller). */
int
peftio_tuner_load_f64(const struct peftio_tuner *t, long idx, double **out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *x = peftio_tuner_tinfo(t, idx);
	const void *data;
	float *f;
	uint64_t i, n = x->numel ? x->numel : 1;
	int rc;

	*out = NULL;
	if ((rc = peftio_ckpt_data(t->ck, (size_t)idx, &data, err)) != 0)
		return rc;
	f = malloc(n * sizeof(float));
	*out = malloc(n * sizeof(double));
	if (f == NULL || *out == NULL) {
		free(f);
		free(*out);
		*out = NULL;
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: tensor '%s': out of memory", t->path, x->name);
	}
	if (x->dtype == PEFTIO_F64) {
		memcpy(*out, data, x->numel * sizeof(double));
		free(f);
		return 0;
	}
	if ((rc = peftio_to_f32(x->dtype, data, f, x->numel)) != 0) {
		free(f);
		free(*out);
		*out = NULL;
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': not a float tensor", t->path, x->name);
	}
	for (i = 0; i < x->numel; i++)
		(*out)[i] = f[i];
	free(f);
	return rc;
}

static int
tensor_err(const struct peftio_tuner *t, const struct tmod *m, int slot,
    const char *why, struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_EFORMAT, "%s: tensor '%s': %s",
	    t->path, peftio_tuner_tname(t, m, slot), why);
}

/*
 * Slots 2 and 3 of m from the adapter's shared pair (VeRA's projections,
 * RandLoRA's bases) unless the module has its own; PEFT regenerates
 * them when they are not saved, which cannot be reproduced here.
 */
static int
shared_pair(const struct peftio_tuner *t, struct tmod *m, const char *what,
    struct peftio_error *err)
{
	if (m->t[2] < 0)
		m->t[2] = t->shared[0];
	if (m->t[3] < 0)
		m->t[3] = t->shared[1];
	if (m->t[2] < 0 || m->t[3] < 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: the shared %s are not saved (save_projection = "
		    "false): PEFT regenerates them from torch's random "
		    "generator", t->path, what);
	return 0;
}

const struct peftio_tensor_info *
peftio_tuner_slot_info(const struct peftio_tuner *t, const struct tmod *m,
    int slot)
{
	return m->t[slot] >= 0 ? peftio_tuner_tinfo(t, m->t[slot]) : NULL;
}

/* Tensor slot of m has ndim dims; 0 for any of dims that is 0. */
int
peftio_tuner_want(const struct peftio_tuner *t, const struct tmod *m, int slot,
    int ndim, uint64_t d0, uint64_t d1, uint64_t d2,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *x = peftio_tuner_slot_info(t, m, slot);
	uint64_t d[3] = { d0, d1, d2 };
	char buf[160];
	int i;

	if (x == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': no %s tensor", t->path, m->name,
		    peftio_tuner_descs[t->type].slot[slot]);
	if (x->ndim != ndim)
		goto bad;
	for (i = 0; i < ndim && i < 3; i++)
		if (d[i] != 0 && x->shape[i] != d[i])
			goto bad;
	return 0;
bad:
	snprintf(buf, sizeof(buf), "shape does not fit the module's other "
	    "tensors (%d-D, expected %d-D)", x->ndim, ndim);
	return tensor_err(t, m, slot, buf, err);
}

/* ------------------------------------------------------------------ */
/* adapter_config.json                                                 */

static int
cfg_num(const char *cfgpath, json_t *cfg, const char *key, double dflt,
    double *out, struct peftio_error *err)
{
	json_t *v = json_object_get(cfg, key);

	*out = dflt;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return 0;
	}
	if (!json_is_number(v))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s is not a number", cfgpath, key);
	*out = json_number_value(v);
	if (!isfinite(*out))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s is not finite", cfgpath, key);
	return 0;
}

static int
cfg_int(const char *cfgpath, json_t *cfg, const char *key, double dflt,
    double lo, uint64_t *out, struct peftio_error *err)
{
	double v;
	int rc;

	if ((rc = cfg_num(cfgpath, cfg, key, dflt, &v, err)) != 0)
		return rc;
	if (!(v >= lo && v <= (double)MAX_DIM) || v != floor(v))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s = %g is not an integer from %g to %.0f", cfgpath,
		    key, v, lo, (double)MAX_DIM);
	*out = (uint64_t)v;
	return 0;
}

/* The value of the first pattern key matching module p, or dflt. */
static int
pattern(const char *cfgpath, json_t *pat, const char *p, double dflt,
    double *out, struct peftio_error *err)
{
	const char *key;
	json_t *v;
	int rc;

	*out = dflt;
	if (!json_is_object(pat))
		return 0;
	json_object_foreach(pat, key, v) {
		rc = peftio_lora_pattern_match(key, p);
		if (rc < 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: pattern '%s' is not supported", cfgpath,
			    key);
		if (rc == 1) {
			if (!json_is_number(v) ||
			    !isfinite(json_number_value(v)))
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: pattern '%s': value is not a number",
				    cfgpath, key);
			*out = json_number_value(v);
			return 0;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */

int
peftio_tuner_handles(const char *type)
{
	size_t i;

	for (i = 0; i < T_NTYPES; i++)
		if (strcmp(type, peftio_tuner_descs[i].type) == 0)
			return 1;
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (strcmp(type, refused[i].type) == 0)
			return 1;
	return 0;
}

static struct tmod *
get_mod(struct peftio_tuner *t, const char *name, size_t len)
{
	struct tmod *m;
	size_t i;
	int s;

	for (i = 0; i < t->nmods; i++)
		if (strlen(t->mods[i].name) == len &&
		    memcmp(t->mods[i].name, name, len) == 0)
			return &t->mods[i];
	if ((m = realloc(t->mods, (t->nmods + 1) * sizeof(*m))) == NULL)
		return NULL;
	t->mods = m;
	m = &t->mods[t->nmods];
	memset(m, 0, sizeof(*m));
	for (s = 0; s < MAX_SLOTS; s++)
		m->t[s] = -1;
	if ((m->name = strndup(name, len)) == NULL ||
	    (m->target = malloc(len + 8)) == NULL) {
		free(m->name);
		return NULL;
	}
	memcpy(m->target, name, len);
	memcpy(m->target + len, ".weight", 8);
	t->nmods++;
	return m;
}

static int
classify(struct peftio_tuner *t, long idx,
    int (*repl)(void *, const char *, size_t, long), void *arg,
    struct peftio_error *err)
{
	const struct tdesc *d = &peftio_tuner_descs[t->type];
	const char *full = peftio_tuner_tinfo(t, idx)->name, *name = full;
	size_t n, sl;
	struct tmod *m;
	int s;

	for (s = 0; s < MAX_SHARED && d->shared[s] != NULL; s++)
		if (strncmp(full, "base_model.", 11) == 0 &&
		    strcmp(full + 11, d->shared[s]) == 0) {
			t->shared[s] = idx;
			return 0;
		}
	if (strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0)
		name += strlen(PEFT_PREFIX);
	n = strlen(name);
	for (s = 0; s < MAX_SLOTS && d->slot[s] != NULL; s++) {
		sl = strlen(d->slot[s]);
		if (n <= sl + 1 || name[n - sl - 1] != '.' ||
		    !ends_with(name, d->slot[s]))
			continue;
		if ((m = get_mod(t, name, n - sl - 1)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		if (m->t[s] >= 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' appears twice", t->path, full);
		m->t[s] = idx;
		return 0;
	}
	if (strstr(name, d->marker) != NULL)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': unknown %s tensor", t->path, full,
		    d->type);
	if (ends_with(name, ".base_layer.weight") ||
	    ends_with(name, ".base_layer.bias")) {
		char buf[1024];
		size_t k = strlen(".base_layer");
		const char *dot = strrchr(name, '.');

		if (n >= sizeof(buf))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': name too long", t->path, full);
		snprintf(buf, sizeof(buf), "%.*s%s", (int)(dot - name - k),
		    name, dot);
		return repl(arg, buf, strlen(buf), idx);
	}
	if (ends_with(name, ".weight") || ends_with(name, ".bias"))
		return repl(arg, name, n, idx);	/* modules_to_save */
	return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
	    "%s: tensor '%s': unknown adapter tensor", t->path, full);
}

/* Every tensor the merge reads: float and finite. */
static int
check_values(struct peftio_tuner *t, long idx, int ints,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *x = peftio_tuner_tinfo(t, idx);
	const void *data;
	int rc;

	if (ints)	/* SHiRA's indices, checked by check_shapes() */
		return 0;
	if (!peftio_dtype_is_float(x->dtype))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': not a float tensor (%s)", t->path,
		    x->name, peftio_dtype_name(x->dtype));
	if ((rc = peftio_ckpt_data(t->ck, (size_t)idx, &data, err)) != 0)
		return rc;
	if (peftio_first_nonfinite(x->dtype, data, x->numel) >= 0)
		return peftio_error_set(err, PEFTIO_ENONFINITE,
		    "%s: tensor '%s': holds NaN or infinity", t->path,
		    x->name);
	return 0;
}

/* The rank and scale of module m from the config's r / alpha. */
static int
module_scale(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, double r0, double alpha0, struct peftio_error *err)
{
	double r, alpha;
	int rc;

	if ((rc = pattern(cfgpath, json_object_get(cfg, "rank_pattern"),
	    m->name, r0, &r, err)) != 0 ||
	    (rc = pattern(cfgpath, json_object_get(cfg, "alpha_pattern"),
	    m->name, alpha0, &alpha, err)) != 0)
		return rc;
	if (!(r >= 1 && r <= (double)MAX_DIM) || r != floor(r))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': r = %g is not a positive integer",
		    cfgpath, m->name, r);
	m->r = (uint64_t)r;
	m->scale = alpha / r;
	return 0;
}

/* The rank the tensors give (a factor's shape) must be the config's. */
static int
rank_is(struct peftio_tuner *t, struct tmod *m, int slot, uint64_t got,
    struct peftio_error *err)
{
	char buf[128];

	if (got == m->r)
		return 0;
	snprintf(buf, sizeof(buf), "rank %llu, but the config gives r = %llu",
	    (unsigned long long)got, (unsigned long long)m->r);
	return tensor_err(t, m, slot, buf, err);
}

static int
check_loha(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, double r0, double a0, struct peftio_error *err)
{
	const struct peftio_tensor_info *x;
	int rc, s;

	if ((rc = module_scale(t, m, cfg, cfgpath, r0, a0, err)) != 0)
		return rc;
	if (m->t[4] >= 0 || m->t[5] >= 0) {
		/* the effective Conv2d form: t [r, r, kh, kw], a [r, out],
		 * b [r, in] */
		if ((rc = peftio_tuner_want(t, m, 4, 4, 0, 0, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 4);
		if ((rc = rank_is(t, m, 4, x->shape[0], err)) != 0 ||
		    (rc = rank_is(t, m, 4, x->shape[1], err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 5, 4, m->r, m->r, x->shape[2],
		    err)) != 0)
			return rc;
		if (peftio_tuner_slot_info(t, m, 5)->shape[3] != x->shape[3])
			return tensor_err(t, m, 5, "its kernel differs from "
			    "hada_t1's", err);
		for (s = 0; s < 4; s++)
			if ((rc = peftio_tuner_want(t, m, s, 2, m->r, 0, 0,
			    err)) != 0)
				return rc;
		if ((rc = peftio_tuner_want(t, m, 2, 2, m->r,
		    peftio_tuner_slot_info(t, m, 0)->shape[1],
		    0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 3, 2, m->r,
		    peftio_tuner_slot_info(t, m, 1)->shape[1],
		    0, err)) != 0)
			return rc;
		return 0;
	}
	for (s = 0; s < 4; s++)
		if ((rc = peftio_tuner_want(t, m, s, 2, 0, 0, 0, err)) != 0)
			return rc;
	x = peftio_tuner_slot_info(t, m, 0);
	if ((rc = rank_is(t, m, 0, x->shape[1], err)) != 0 ||
	    (rc = peftio_tuner_want(t, m, 1, 2, m->r, 0, 0, err)) != 0 ||
	    (rc = peftio_tuner_want(t, m, 2, 2, x->shape[0], m->r, 0,
	    err)) != 0 ||
	    (rc = peftio_tuner_want(t, m, 3, 2, m->r, peftio_tuner_slot_info(t,
	    m, 1)->shape[1], 0,
	    err)) != 0)
		return rc;
	return 0;
}

static int
check_lokr(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, double r0, double a0, struct peftio_error *err)
{
	const struct peftio_tensor_info *a, *b, *x;
	int rc, s;

	if ((rc = module_scale(t, m, cfg, cfgpath, r0, a0, err)) != 0)
		return rc;
	if (m->t[6] >= 0) {
		/* the effective Conv2d form of w2: t2 [r, r, kh, kw],
		 * w2_a [r, out_k], w2_b [r, in_n] */
		if (m->t[3] >= 0)
			return tensor_err(t, m, 6, "with a full lokr_w2", err);
		if ((rc = peftio_tuner_want(t, m, 6, 4, m->r, m->r, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 4, 2, m->r, 0, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 5, 2, m->r, 0, 0, err)) != 0)
			return rc;
	}
	for (s = 0; s < 2; s++) {	/* w1, then w2 */
		int full = 3 * s, fa = full + 1, fb = full + 2;

		if (m->t[full] >= 0) {
			if (m->t[fa] >= 0 || m->t[fb] >= 0)
				return tensor_err(t, m, full, "a full factor "
				    "and a low-rank pair for the same factor",
				    err);
			x = peftio_tuner_slot_info(t, m, full);
			/* w2 of a convolution: [b, d, k...] */
			if (x->ndim < 2 || x->ndim > (s ? 4 : 2) ||
			    x->shape[0] == 0)
				return tensor_err(t, m, full, "not a matrix "
				    "(or, for lokr_w2, a kernel)", err);
			continue;
		}
		if (m->t[fa] < 0 || m->t[fb] < 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: module '%s': no %s tensor", t->path, m->name,
			    peftio_tuner_descs[T_LOKR].slot[m->t[fa] < 0 ? fa : fb]);
		if (s == 1 && m->t[6] >= 0)
			continue;	/* checked above */
		if ((rc = peftio_tuner_want(t, m, fa, 2, 0, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, fb, 2, 0, 0, 0, err)) != 0)
			return rc;
		a = peftio_tuner_slot_info(t, m, fa);
		b = peftio_tuner_slot_info(t, m, fb);
		if ((rc = rank_is(t, m, fa, a->shape[1], err)) != 0 ||
		    (rc = rank_is(t, m, fb, b->shape[0], err)) != 0)
			return rc;
	}
	return 0;
}

/* Block size of an OFT weight row of n = b (b - 1) / 2 elements. */
uint64_t
peftio_tuner_oft_block(uint64_t n)
{
	uint64_t b = (uint64_t)((1 + sqrt(1 + 8.0 * (double)n)) / 2);

	while (b > 1 && b * (b - 1) / 2 > n)
		b--;
	while (b * (b - 1) / 2 < n)
		b++;
	return b * (b - 1) / 2 == n ? b : 0;
}

static int
check_shapes(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, struct peftio_error *err)
{
	const struct peftio_tensor_info *x, *y;
	double r0, a0;
	uint64_t u;
	int rc = 0;

	switch (t->type) {
	case T_ADALORA:
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = peftio_tuner_slot_info(t, m, 0)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = peftio_tuner_want(t, m, 1, 2, 0, m->r, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 2, 2, m->r, 1, 0, err)) != 0)
			return rc;
		/* PEFT: W += B (A * E) * scaling / (ranknum + 1e-5), the
		 * rank number a float32 tensor. */
		m->scale = (t->alpha > 0 ? t->alpha : (double)m->r) /
		    (double)(float)((float)m->r + 1e-5f);
		return 0;
	case T_LOHA:
		if ((rc = cfg_num(cfgpath, cfg, "r", 8, &r0, err)) != 0 ||
		    (rc = cfg_num(cfgpath, cfg, "alpha", 8, &a0, err)) != 0)
			return rc;
		return check_loha(t, m, cfg, cfgpath, r0, a0, err);
	case T_LOKR:
		if ((rc = cfg_num(cfgpath, cfg, "r", 8, &r0, err)) != 0 ||
		    (rc = cfg_num(cfgpath, cfg, "alpha", 8, &a0, err)) != 0)
			return rc;
		return check_lokr(t, m, cfg, cfgpath, r0, a0, err);
	case T_VERA:
		if ((rc = peftio_tuner_want(t, m, 1, 1, 0, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 0, 1, 0, 0, 0, err)) != 0)
			return rc;
		m->r = peftio_tuner_slot_info(t, m, 1)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 1, "rank 0", err);
		if ((rc = shared_pair(t, m, "projections vera_A and vera_B",
		    err)) != 0)
			return rc;
		if ((rc = peftio_tuner_want(t, m, 2, 2, m->r, 0, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 3, 2, 0, m->r, 0, err)) != 0)
			return rc;
		return 0;
	case T_OFT:
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 0);
		u = peftio_tuner_oft_block(x->shape[1]);
		if (x->shape[0] == 0 || u < 2)
			return tensor_err(t, m, 0, "not [r, b (b - 1) / 2] for "
			    "a block size b", err);
		if (t->bs != 0 && u != t->bs)
			return tensor_err(t, m, 0, "its block size does not "
			    "match oft_block_size", err);
		if (t->block_share && x->shape[0] != 1)
			return tensor_err(t, m, 0, "block_share is set but it "
			    "holds several blocks", err);
		m->r = x->shape[0];
		return 0;
	case T_BOFT:
		if ((rc = peftio_tuner_want(t, m, 0, 4, 0, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 1, 2, 0, 1, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 0);
		if (x->shape[0] == 0 || x->shape[1] == 0 ||
		    x->shape[2] == 0 || x->shape[2] != x->shape[3])
			return tensor_err(t, m, 0,
			    "not [factors, blocks, b, b]",
			    err);
		if (t->bs != 0 && x->shape[2] != t->bs)
			return tensor_err(t, m, 0, "its block size does not "
			    "match boft_block_size", err);
		if (x->shape[0] > 1 && (x->shape[2] % 2 != 0 ||
		    x->shape[1] % (1ull << PEFTIO_MIN(x->shape[0] - 1, 62))
		    != 0))
			return tensor_err(t, m, 0, "its butterfly factors do "
			    "not fit its blocks", err);
		return 0;
	case T_HRA:
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = peftio_tuner_slot_info(t, m, 0)->shape[1];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		return 0;
	case T_MISS:
		if (t->bat) {	/* [out / r, r, r] */
			if ((rc = peftio_tuner_want(t, m, 0, 3, 0, 0, 0,
			    err)) != 0)
				return rc;
			x = peftio_tuner_slot_info(t, m, 0);
			m->r = x->shape[2];
			if (m->r == 0 || x->shape[1] != m->r)
				return tensor_err(t, m, 0, "not [out / r, r, "
				    "r] for \"bat\"", err);
			return 0;
		}
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = peftio_tuner_slot_info(t, m, 0)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if (t->mini && peftio_tuner_slot_info(t, m,
		    0)->shape[1] != t->mini_r)
			return tensor_err(t, m, 0, "not [r, mini_r]", err);
		return 0;
	case T_VBLORA:
		if (m->t[2] < 0)
			m->t[2] = t->shared[0];
		if (m->t[2] < 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: module '%s': no vblora_vector_bank tensor",
			    t->path, m->name);
		if ((rc = peftio_tuner_want(t, m, 2, 2, 0, 0, 0, err)) != 0)
			return rc;
		y = peftio_tuner_slot_info(t, m, 2);
		if ((rc = peftio_tuner_want(t, m, 0, 3, 0, 0, y->shape[0],
		    err)) != 0)
			return rc;
		m->r = peftio_tuner_slot_info(t, m, 0)->shape[0];
		if (m->r == 0 || y->shape[0] == 0 || y->shape[1] == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = peftio_tuner_want(t, m, 1, 3, 0, m->r, y->shape[0],
		    err)) != 0)
			return rc;
		if (t->topk == 0 || t->topk > y->shape[0])
			return tensor_err(t, m, 2, "topk is 0 or exceeds the "
			    "number of vectors", err);
		return 0;
	case T_RANDLORA:
		if ((rc = shared_pair(t, m, "bases randlora_A and randlora_B",
		    err)) != 0)
			return rc;
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 0);	/* lambda [r, bases] */
		m->r = x->shape[0];
		if (m->r == 0 || x->shape[1] == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		m->scale = t->alpha / (double)m->r;
		if ((rc = peftio_tuner_want(t, m, 1, 2, x->shape[1], 0, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 2, 3, 0, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 3, 3, 0, 0, 0, err)) != 0)
			return rc;
		y = peftio_tuner_slot_info(t, m, 2);
		if (y->shape[0] != m->r || (y->shape[1] != 1 &&
		    y->shape[1] < x->shape[1]) ||
		    y->shape[2] < peftio_tuner_slot_info(t, m, 1)->shape[1])
			return tensor_err(t, m, 2, "too small for the "
			    "module's lambda and gamma", err);
		y = peftio_tuner_slot_info(t, m, 3);
		if (y->shape[2] != m->r || y->shape[1] < x->shape[1])
			return tensor_err(t, m, 3, "too small for the "
			    "module's lambda", err);
		return 0;
	case T_SHIRA:
		if ((rc = peftio_tuner_want(t, m, 0, 1, 0, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 1, 2, 2,
		    peftio_tuner_slot_info(t, m, 0)->shape[0], 0,
		    err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 1);
		if (x->dtype != PEFTIO_I32 && x->dtype != PEFTIO_I64)
			return tensor_err(t, m, 1, "indices are not I32 or I64",
			    err);
		return 0;
	case T_C3A:
		if ((rc = peftio_tuner_want(t, m, 0, 3, 0, 0, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 0);
		if (x->shape[0] == 0 || x->shape[1] == 0 || x->shape[2] == 0)
			return tensor_err(t, m, 0, "an empty kernel", err);
		if (t->bs != 0 && x->shape[2] != t->bs)
			return tensor_err(t, m, 0, "its block size does not "
			    "match block_size", err);
		return 0;
	case T_DELORA:
		if ((rc = peftio_tuner_want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = peftio_tuner_slot_info(t, m, 0);
		m->r = x->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = peftio_tuner_want(t, m, 1, 2, 0, m->r, 0,
		    err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 2, 1, 1, 0, 0, err)) != 0 ||
		    (rc = peftio_tuner_want(t, m, 3, 1, x->shape[1], 0, 0,
		    err)) != 0)
			return rc;
		return 0;
	case T_NTYPES:
		break;
	}
	return rc;
}

/*
 * The tuners whose rank the tensors give (VeRA, HRA, MiSS, VB-LoRA,
 * RandLoRA, DeLoRA): a config that gives r (or a rank_pattern for the
 * module) must give a positive integer, and that rank; PEFT would not
 * build, nor load, the layer otherwise.  slot: the tensor that holds
 * the rank.
 */
static int
config_rank(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, int slot, struct peftio_error *err)
{
	json_t *v = json_object_get(cfg, "r");
	char buf[128];
	double r;
	int rc;

	if (v == NULL || json_is_null(v))
		return 0;
	if ((rc = cfg_num(cfgpath, cfg, "r", 0, &r, err)) != 0 ||
	    (rc = pattern(cfgpath, json_object_get(cfg, "rank_pattern"),
	    m->name, r, &r, err)) != 0)
		return rc;
	if (!(r >= 1 && r <= (double)MAX_DIM) || r != floor(r))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': r = %g is not a positive integer",
		    cfgpath, m->name, r);
	if ((uint64_t)r == m->r)
		return 0;
	snprintf(buf, sizeof(buf), "rank %llu, but the config gives r = %.0f",
	    (unsigned long long)m->r, r);
	return tensor_err(t, m, slot, buf, err);
}

static int
check_module(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, struct peftio_error *err)
{
	int rc, s;

	if ((rc = check_shapes(t, m, cfg, cfgpath, err)) != 0)
		return rc;
	switch (t->type) {
	case T_VERA:
		rc = config_rank(t, m, cfg, cfgpath, 1, err);
		break;
	case T_HRA:
	case T_MISS:
	case T_VBLORA:
	case T_RANDLORA:
	case T_DELORA:
		rc = config_rank(t, m, cfg, cfgpath, 0, err);
		break;
	default:
		break;
	}
	if (rc != 0)
		return rc;
	for (s = 0; s < MAX_SLOTS; s++)
		if (m->t[s] >= 0 && (rc = check_values(t, m->t[s],
		    t->type == T_SHIRA && s == 1, err)) != 0)
			return rc;
	return 0;
}

/* The config's type-wide settings. */
static int
load_config(struct peftio_tuner *t, json_t *cfg, const char *cfgpath,
    struct peftio_error *err)
{
	double v;
	json_t *j;
	int rc = 0;

	if ((rc = cfg_num(cfgpath, cfg, "fan_in_fan_out", 0, &v, err)) != 0)
		return rc;
	t->fifo = v != 0;
	if (t->fifo && !peftio_tuner_descs[t->type].fifo)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: fan_in_fan_out with a %s adapter is not supported",
		    cfgpath, peftio_tuner_descs[t->type].type);
	switch (t->type) {
	case T_ADALORA:
		return cfg_num(cfgpath, cfg, "lora_alpha", 8, &t->alpha, err);
	case T_OFT:
		if ((rc = cfg_num(cfgpath, cfg, "coft", 0, &v, err)) != 0)
			return rc;
		t->coft = v != 0;
		if ((rc = cfg_num(cfgpath, cfg, "block_share", 0, &v, err))
		    != 0)
			return rc;
		t->block_share = v != 0;
		if ((rc = cfg_num(cfgpath, cfg, "use_cayley_neumann", 1, &v,
		    err)) != 0)
			return rc;
		t->neumann = v != 0;
		if ((rc = cfg_num(cfgpath, cfg, "eps", 6e-5, &t->eps, err))
		    != 0)
			return rc;
		if ((rc = cfg_num(cfgpath, cfg, "num_cayley_neumann_terms", 5,
		    &v, err)) != 0)
			return rc;
		if (!(v >= 0 && v <= 64) || v != floor(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: num_cayley_neumann_terms = %g is not an "
			    "integer from 0 to 64", cfgpath, v);
		t->nterms = (long)v;
		return cfg_int(cfgpath, cfg, "oft_block_size", 0, 0, &t->bs,
		    err);
	case T_BOFT:
		if ((rc = cfg_int(cfgpath, cfg, "boft_block_size", 0, 0,
		    &t->bs, err)) != 0)
			return rc;
		return 0;
	case T_HRA:
		if ((rc = cfg_num(cfgpath, cfg, "apply_GS", 0, &v, err)) != 0)
			return rc;
		t->apply_gs = v != 0;
		return 0;
	case T_MISS:
		j = json_object_get(cfg, "init_weights");
		t->bat = json_is_string(j) &&
		    strcmp(json_string_value(j), "bat") == 0;
		t->mini = json_is_string(j) &&
		    strcmp(json_string_value(j), "mini") == 0;
		return cfg_int(cfgpath, cfg, "mini_r", 1, 1, &t->mini_r, err);
	case T_VBLORA:
		if ((rc = cfg_num(cfgpath, cfg, "save_only_topk_weights", 0,
		    &v, err)) != 0)
			return rc;
		if (v != 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: save_only_topk_weights is set: this form of "
			    "VB-LoRA adapter is not supported", cfgpath);
		return cfg_int(cfgpath, cfg, "topk", 2, 1, &t->topk, err);
	case T_RANDLORA:
		return cfg_num(cfgpath, cfg, "randlora_alpha", 640, &t->alpha,
		    err);
	case T_VERA:
		/* save_projection = false is found missing with the
		 * tensors. */
		return 0;
	case T_C3A:
		return cfg_int(cfgpath, cfg, "block_size", 0, 0, &t->bs, err);
	default:
		return 0;
	}
}

int
peftio_tuner_load(struct peftio_tuner **out, const char *type, json_t *cfg,
    const char *cfgpath, const char *path, struct peftio_ckpt *ck,
    int (*repl)(void *, const char *, size_t, long), void *arg,
    struct peftio_error *err)
{
	struct peftio_tuner *t;
	size_t i;
	int rc = 0, k;

	*out = NULL;
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (strcmp(type, refused[i].type) == 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: a %s adapter cannot be merged: %s", cfgpath,
			    type, refused[i].why);
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (k = 0; k < T_NTYPES; k++)
		if (strcmp(type, peftio_tuner_descs[k].type) == 0)
			t->type = (enum ttype)k;
	if (strcmp(type, peftio_tuner_descs[t->type].type) != 0) {
		free(t);
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: adapter type %s is not supported", cfgpath, type);
	}
	t->path = path;
	t->ck = ck;
	t->shared[0] = t->shared[1] = -1;
	if ((rc = load_config(t, cfg, cfgpath, err)) != 0)
		goto fail;
	for (i = 0; i < peftio_ckpt_count(ck) && rc == 0; i++)
		rc = classify(t, (long)i, repl, arg, err);
	for (i = 0; i < t->nmods && rc == 0; i++)
		rc = check_module(t, &t->mods[i], cfg, cfgpath, err);
	if (rc != 0)
		goto fail;
	*out = t;
	return 0;
fail:
	peftio_tuner_free(t);
	return rc;
}

void
peftio_tuner_free(struct peftio_tuner *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nmods; i++) {
		free(t->mods[i].name);
		free(t->mods[i].target);
	}
	free(t->mods);
	free(t);
}

const char *
peftio_tuner_type(const struct peftio_tuner *t)
{
	return peftio_tuner_descs[t->type].type;
}

size_t
peftio_tuner_nmodules(const struct peftio_tuner *t)
{
	return t->nmods;
}

const char *
peftio_tuner_module(const struct peftio_tuner *t, size_t i, uint64_t *rank)
{
	if (i >= t->nmods)
		return NULL;
	if (rank != NULL)
		*rank = t->mods[i].r;
	return t->mods[i].name;
}

const char *
peftio_tuner_target(const struct peftio_tuner *t, size_t i)
{
	return i < t->nmods ? t->mods[i].target : NULL;
}
