/*
 * tuners.c - PEFT's other weight tuners: their adapter_config.json and
 * tensors, and each module's merge as PEFT's merge_and_unload computes
 * it, in double precision.
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

#include <cblas.h>
#include <lapacke.h>

#include "peftio_private.h"

#define PEFT_PREFIX	"base_model.model."
#define MAX_DIM		(1ull << 32)
#define MAX_SLOTS	8
#define MAX_SHARED	2

enum ttype {
	T_ADALORA, T_LOHA, T_LOKR, T_VERA, T_OFT, T_BOFT, T_HRA, T_MISS,
	T_VBLORA, T_RANDLORA, T_SHIRA, T_C3A, T_DELORA, T_NTYPES
};

struct tdesc {
	const char	*type;		/* peft_type */
	const char	*marker;	/* part of every tensor name */
	const char	*slot[MAX_SLOTS];	/* tensor suffixes */
	const char	*shared[MAX_SHARED];	/* model-wide tensors */
	int		 fifo;		/* PEFT transposes for Conv1D */
	int		 rotation;
};

static const struct tdesc tdescs[T_NTYPES] = {
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

struct tmod {
	char		*name;		/* module path, no prefix */
	char		*target;	/* name + ".weight" */
	long		 t[MAX_SLOTS];	/* adapter tensor indices, or -1 */
	uint64_t	 r;
	double		 scale;
	uint64_t	 out, in;	/* set by the plan; in: all but the
					 * first dimension of the weight */
	uint64_t	 inch, kk;	/* a convolution's input channels and
					 * kernel size */
};

struct peftio_tuner {
	enum ttype	 type;
	const char	*path;		/* the adapter's, not owned */
	struct peftio_ckpt *ck;		/* not owned */
	int		 fifo;
	long		 shared[MAX_SHARED];
	struct tmod	*mods;
	size_t		 nmods;
	/* OFT */
	int		 coft, block_share, neumann;
	long		 nterms;
	double		 eps;
	uint64_t	 bs;		/* OFT, BOFT, C3A block size */
	/* HRA */
	int		 apply_gs;
	/* MiSS */
	int		 mini, bat;
	uint64_t	 mini_r;
	/* VB-LoRA */
	uint64_t	 topk;
	/* AdaLoRA lora_alpha, RandLoRA randlora_alpha */
	double		 alpha;
};

/* One step of a rotation, applied to each row x of the weight. */
enum skind {
	S_BLOCKS, S_GATHER, S_SCATTER, S_HOUSE, S_GS, S_ROWSCALE, S_BAT
};

struct stage {
	enum skind	 kind;
	uint64_t	 n, b;		/* S_BLOCKS: n blocks of b x b (n = 1
					 * shared by all); S_HOUSE, S_GS: n
					 * vectors */
	double		*m;		/* blocks, vectors or row scales */
	uint64_t	*perm;
	int		 reverse;	/* S_HOUSE: last vector first;
					 * S_BAT: unmerge (m holds B, then
					 * the inverses of I + B) */
};

struct peftio_tuner_prep {
	uint64_t	 rows, cols;
	int		 unmerge;
	float		*d;		/* additive: the delta, target layout */
	struct stage	*st;
	size_t		 nst;
	double		*x, *y;		/* a row, and scratch */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int
ends_with(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static const struct peftio_tensor_info *
ti(const struct peftio_tuner *t, long idx)
{
	return peftio_ckpt_tensor(t->ck, (size_t)idx);
}

static const char *
tname(const struct peftio_tuner *t, const struct tmod *m, int slot)
{
	return m->t[slot] >= 0 ? ti(t, m->t[slot])->name :
	    tdescs[t->type].slot[slot];
}

/* The values of tensor idx as doubles (freed by the caller). */
static int
load(const struct peftio_tuner *t, long idx, double **out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *x = ti(t, idx);
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
	    t->path, tname(t, m, slot), why);
}

static const struct peftio_tensor_info *
slot_info(const struct peftio_tuner *t, const struct tmod *m, int slot)
{
	return m->t[slot] >= 0 ? ti(t, m->t[slot]) : NULL;
}

/* Tensor slot of m has ndim dims; 0 for any of dims that is 0. */
static int
want(const struct peftio_tuner *t, const struct tmod *m, int slot, int ndim,
    uint64_t d0, uint64_t d1, uint64_t d2, struct peftio_error *err)
{
	const struct peftio_tensor_info *x = slot_info(t, m, slot);
	uint64_t d[3] = { d0, d1, d2 };
	char buf[160];
	int i;

	if (x == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': no %s tensor", t->path, m->name,
		    tdescs[t->type].slot[slot]);
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
		if (strcmp(type, tdescs[i].type) == 0)
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
	const struct tdesc *d = &tdescs[t->type];
	const char *full = ti(t, idx)->name, *name = full;
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
	const struct peftio_tensor_info *x = ti(t, idx);
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
		if ((rc = want(t, m, 4, 4, 0, 0, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 4);
		if ((rc = rank_is(t, m, 4, x->shape[0], err)) != 0 ||
		    (rc = rank_is(t, m, 4, x->shape[1], err)) != 0 ||
		    (rc = want(t, m, 5, 4, m->r, m->r, x->shape[2], err)) != 0)
			return rc;
		if (slot_info(t, m, 5)->shape[3] != x->shape[3])
			return tensor_err(t, m, 5, "its kernel differs from "
			    "hada_t1's", err);
		for (s = 0; s < 4; s++)
			if ((rc = want(t, m, s, 2, m->r, 0, 0, err)) != 0)
				return rc;
		if ((rc = want(t, m, 2, 2, m->r, slot_info(t, m, 0)->shape[1],
		    0, err)) != 0 ||
		    (rc = want(t, m, 3, 2, m->r, slot_info(t, m, 1)->shape[1],
		    0, err)) != 0)
			return rc;
		return 0;
	}
	for (s = 0; s < 4; s++)
		if ((rc = want(t, m, s, 2, 0, 0, 0, err)) != 0)
			return rc;
	x = slot_info(t, m, 0);
	if ((rc = rank_is(t, m, 0, x->shape[1], err)) != 0 ||
	    (rc = want(t, m, 1, 2, m->r, 0, 0, err)) != 0 ||
	    (rc = want(t, m, 2, 2, x->shape[0], m->r, 0, err)) != 0 ||
	    (rc = want(t, m, 3, 2, m->r, slot_info(t, m, 1)->shape[1], 0,
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
		if ((rc = want(t, m, 6, 4, m->r, m->r, 0, err)) != 0 ||
		    (rc = want(t, m, 4, 2, m->r, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 5, 2, m->r, 0, 0, err)) != 0)
			return rc;
	}
	for (s = 0; s < 2; s++) {	/* w1, then w2 */
		int full = 3 * s, fa = full + 1, fb = full + 2;

		if (m->t[full] >= 0) {
			if (m->t[fa] >= 0 || m->t[fb] >= 0)
				return tensor_err(t, m, full, "a full factor "
				    "and a low-rank pair for the same factor",
				    err);
			x = slot_info(t, m, full);
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
			    tdescs[T_LOKR].slot[m->t[fa] < 0 ? fa : fb]);
		if (s == 1 && m->t[6] >= 0)
			continue;	/* checked above */
		if ((rc = want(t, m, fa, 2, 0, 0, 0, err)) != 0 ||
		    (rc = want(t, m, fb, 2, 0, 0, 0, err)) != 0)
			return rc;
		a = slot_info(t, m, fa);
		b = slot_info(t, m, fb);
		if ((rc = rank_is(t, m, fa, a->shape[1], err)) != 0 ||
		    (rc = rank_is(t, m, fb, b->shape[0], err)) != 0)
			return rc;
	}
	return 0;
}

/* Block size of an OFT weight row of n = b (b - 1) / 2 elements. */
static uint64_t
oft_block(uint64_t n)
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
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = slot_info(t, m, 0)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = want(t, m, 1, 2, 0, m->r, 0, err)) != 0 ||
		    (rc = want(t, m, 2, 2, m->r, 1, 0, err)) != 0)
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
		if ((rc = want(t, m, 1, 1, 0, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 0, 1, 0, 0, 0, err)) != 0)
			return rc;
		m->r = slot_info(t, m, 1)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 1, "rank 0", err);
		if (m->t[2] < 0)
			m->t[2] = t->shared[0];
		if (m->t[3] < 0)
			m->t[3] = t->shared[1];
		if (m->t[2] < 0 || m->t[3] < 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: the shared projections vera_A and vera_B are "
			    "not saved (save_projection = false): PEFT "
			    "regenerates them from torch's random generator",
			    t->path);
		if ((rc = want(t, m, 2, 2, m->r, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 3, 2, 0, m->r, 0, err)) != 0)
			return rc;
		return 0;
	case T_OFT:
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 0);
		u = oft_block(x->shape[1]);
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
		if ((rc = want(t, m, 0, 4, 0, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 1, 2, 0, 1, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 0);
		if (x->shape[0] == 0 || x->shape[1] == 0 ||
		    x->shape[2] == 0 || x->shape[2] != x->shape[3])
			return tensor_err(t, m, 0, "not [factors, blocks, b, b]",
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
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = slot_info(t, m, 0)->shape[1];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		return 0;
	case T_MISS:
		if (t->bat) {	/* [out / r, r, r] */
			if ((rc = want(t, m, 0, 3, 0, 0, 0, err)) != 0)
				return rc;
			x = slot_info(t, m, 0);
			m->r = x->shape[2];
			if (m->r == 0 || x->shape[1] != m->r)
				return tensor_err(t, m, 0, "not [out / r, r, "
				    "r] for \"bat\"", err);
			return 0;
		}
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		m->r = slot_info(t, m, 0)->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if (t->mini && slot_info(t, m, 0)->shape[1] != t->mini_r)
			return tensor_err(t, m, 0, "not [r, mini_r]", err);
		return 0;
	case T_VBLORA:
		if (m->t[2] < 0)
			m->t[2] = t->shared[0];
		if (m->t[2] < 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: module '%s': no vblora_vector_bank tensor",
			    t->path, m->name);
		if ((rc = want(t, m, 2, 2, 0, 0, 0, err)) != 0)
			return rc;
		y = slot_info(t, m, 2);
		if ((rc = want(t, m, 0, 3, 0, 0, y->shape[0], err)) != 0)
			return rc;
		m->r = slot_info(t, m, 0)->shape[0];
		if (m->r == 0 || y->shape[0] == 0 || y->shape[1] == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = want(t, m, 1, 3, 0, m->r, y->shape[0], err)) != 0)
			return rc;
		if (t->topk == 0 || t->topk > y->shape[0])
			return tensor_err(t, m, 2, "topk is 0 or exceeds the "
			    "number of vectors", err);
		return 0;
	case T_RANDLORA:
		if (m->t[2] < 0)
			m->t[2] = t->shared[0];
		if (m->t[3] < 0)
			m->t[3] = t->shared[1];
		if (m->t[2] < 0 || m->t[3] < 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: the shared bases randlora_A and randlora_B "
			    "are not saved (save_projection = false): PEFT "
			    "regenerates them from torch's random generator",
			    t->path);
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 0);	/* lambda [r, bases] */
		m->r = x->shape[0];
		if (m->r == 0 || x->shape[1] == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		m->scale = t->alpha / (double)m->r;
		if ((rc = want(t, m, 1, 2, x->shape[1], 0, 0, err)) != 0 ||
		    (rc = want(t, m, 2, 3, 0, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 3, 3, 0, 0, 0, err)) != 0)
			return rc;
		y = slot_info(t, m, 2);
		if (y->shape[0] != m->r || (y->shape[1] != 1 &&
		    y->shape[1] < x->shape[1]) ||
		    y->shape[2] < slot_info(t, m, 1)->shape[1])
			return tensor_err(t, m, 2, "too small for the "
			    "module's lambda and gamma", err);
		y = slot_info(t, m, 3);
		if (y->shape[2] != m->r || y->shape[1] < x->shape[1])
			return tensor_err(t, m, 3, "too small for the "
			    "module's lambda", err);
		return 0;
	case T_SHIRA:
		if ((rc = want(t, m, 0, 1, 0, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 1, 2, 2, slot_info(t, m, 0)->shape[0], 0,
		    err)) != 0)
			return rc;
		x = slot_info(t, m, 1);
		if (x->dtype != PEFTIO_I32 && x->dtype != PEFTIO_I64)
			return tensor_err(t, m, 1, "indices are not I32 or I64",
			    err);
		return 0;
	case T_C3A:
		if ((rc = want(t, m, 0, 3, 0, 0, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 0);
		if (x->shape[0] == 0 || x->shape[1] == 0 || x->shape[2] == 0)
			return tensor_err(t, m, 0, "an empty kernel", err);
		if (t->bs != 0 && x->shape[2] != t->bs)
			return tensor_err(t, m, 0, "its block size does not "
			    "match block_size", err);
		return 0;
	case T_DELORA:
		if ((rc = want(t, m, 0, 2, 0, 0, 0, err)) != 0)
			return rc;
		x = slot_info(t, m, 0);
		m->r = x->shape[0];
		if (m->r == 0)
			return tensor_err(t, m, 0, "rank 0", err);
		if ((rc = want(t, m, 1, 2, 0, m->r, 0, err)) != 0 ||
		    (rc = want(t, m, 2, 1, 1, 0, 0, err)) != 0 ||
		    (rc = want(t, m, 3, 1, x->shape[1], 0, 0, err)) != 0)
			return rc;
		return 0;
	case T_NTYPES:
		break;
	}
	return rc;
}

static int
check_module(struct peftio_tuner *t, struct tmod *m, json_t *cfg,
    const char *cfgpath, struct peftio_error *err)
{
	int rc, s;

	if ((rc = check_shapes(t, m, cfg, cfgpath, err)) != 0)
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
	if (t->fifo && !tdescs[t->type].fifo)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: fan_in_fan_out with a %s adapter is not supported",
		    cfgpath, tdescs[t->type].type);
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
		if (strcmp(type, tdescs[k].type) == 0)
			t->type = (enum ttype)k;
	if (strcmp(type, tdescs[t->type].type) != 0) {
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
	return tdescs[t->type].type;
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

/* ------------------------------------------------------------------ */
/* The plan: the module against its base tensor                        */

/* a b == want, without overflow. */
static int
mul_is(uint64_t a, uint64_t b, uint64_t want)
{
	uint64_t p;

	return !PEFTIO_MUL_OVERFLOW(a, b, &p) && p == want;
}

static int
fit_err(const struct peftio_tuner *t, const struct tmod *m, int slot,
    struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_EMISMATCH,
	    "%s: tensor '%s' does not fit base tensor '%s' [%llu, %llu]",
	    t->path, tname(t, m, slot), m->target,
	    (unsigned long long)(t->fifo ? m->in : m->out),
	    (unsigned long long)(t->fifo ? m->out : m->in));
}

int
peftio_tuner_check(struct peftio_tuner *t, size_t i, int ndim,
    const uint64_t *shape, struct peftio_error *err)
{
	struct tmod *m = &t->mods[i];
	const struct peftio_tensor_info *x, *y;
	uint64_t a, b, nb;

	int conv = t->type == T_LOHA || t->type == T_LOKR ||
	    t->type == T_OFT || t->type == T_HRA, d;

	if (ndim != 2 && !(conv && (ndim == 3 || ndim == 4)))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: module '%s': base tensor '%s' is %d-D; only Linear "
		    "(2-D) weights%s are supported for %s", t->path, m->name,
		    m->target, ndim, conv ? " and convolutions" : "",
		    tdescs[t->type].type);
	m->out = t->fifo ? shape[1] : shape[0];
	m->in = t->fifo ? shape[0] : shape[1];
	m->inch = m->in;
	m->kk = 1;
	for (d = 2; d < ndim; d++)
		if (PEFTIO_MUL_OVERFLOW(m->kk, shape[d], &m->kk) ||
		    PEFTIO_MUL_OVERFLOW(m->in, shape[d], &m->in))
			return fit_err(t, m, 0, err);
	switch (t->type) {
	case T_ADALORA:
		if (slot_info(t, m, 0)->shape[1] != m->in)
			return fit_err(t, m, 0, err);
		if (slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_LOHA:
		if (m->t[4] >= 0) {	/* a [r, out], b [r, in], t's kernel */
			x = slot_info(t, m, 4);
			if (slot_info(t, m, 0)->shape[1] != m->out)
				return fit_err(t, m, 0, err);
			if (slot_info(t, m, 1)->shape[1] != m->inch)
				return fit_err(t, m, 1, err);
			if (!mul_is(x->shape[2], x->shape[3], m->kk))
				return fit_err(t, m, 4, err);
			return 0;
		}
		if (slot_info(t, m, 0)->shape[0] != m->out)
			return fit_err(t, m, 0, err);
		if (slot_info(t, m, 1)->shape[1] != m->in)
			return fit_err(t, m, 1, err);
		return 0;
	case T_LOKR:
		/* w1 [a, c], w2 [b, d]: out = a b, in = c d */
		x = slot_info(t, m, m->t[0] >= 0 ? 0 : 1);
		a = x->shape[0];
		x = slot_info(t, m, m->t[0] >= 0 ? 0 : 2);
		b = x->shape[1];
		if (m->t[6] >= 0) {	/* t2 [r, r, kh, kw] */
			x = slot_info(t, m, 6);
			if (!mul_is(a, slot_info(t, m, 4)->shape[1], m->out))
				return fit_err(t, m, 4, err);
			if (!mul_is(x->shape[2], x->shape[3], m->kk) ||
			    !mul_is(b, slot_info(t, m, 5)->shape[1], m->inch))
				return fit_err(t, m, 6, err);
			return 0;
		}
		y = slot_info(t, m, m->t[3] >= 0 ? 3 : 4);
		if (!mul_is(a, y->shape[0], m->out))
			return fit_err(t, m, m->t[3] >= 0 ? 3 : 4, err);
		y = slot_info(t, m, m->t[3] >= 0 ? 3 : 5);
		if (!mul_is(b, y->numel / y->shape[0], m->in))
			return fit_err(t, m, m->t[3] >= 0 ? 3 : 5, err);
		return 0;
	case T_VERA:
		if (slot_info(t, m, 0)->shape[0] != m->out)
			return fit_err(t, m, 0, err);
		if (slot_info(t, m, 2)->shape[1] < m->in)
			return fit_err(t, m, 2, err);
		if (slot_info(t, m, 3)->shape[0] < m->out)
			return fit_err(t, m, 3, err);
		return 0;
	case T_OFT:
		x = slot_info(t, m, 0);
		b = oft_block(x->shape[1]);
		if (m->in % b != 0 || (!t->block_share &&
		    !mul_is(x->shape[0], b, m->in)))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': %llu blocks of %llu do not "
			    "cover the %llu inputs of '%s'", t->path, x->name,
			    (unsigned long long)x->shape[0],
			    (unsigned long long)b, (unsigned long long)m->in,
			    m->target);
		return 0;
	case T_BOFT:
		x = slot_info(t, m, 0);
		if (!mul_is(x->shape[1], x->shape[2], m->in))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': %llu blocks of %llu do not "
			    "cover the %llu inputs of '%s'", t->path, x->name,
			    (unsigned long long)x->shape[1],
			    (unsigned long long)x->shape[2],
			    (unsigned long long)m->in, m->target);
		if (slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_HRA:
		if (slot_info(t, m, 0)->shape[0] != m->in)
			return fit_err(t, m, 0, err);
		return 0;
	case T_MISS:
		x = slot_info(t, m, 0);
		if (t->bat)
			return m->out % m->r != 0 || m->in % m->r != 0 ||
			    !mul_is(x->shape[0], m->r, m->out) ?
			    fit_err(t, m, 0, err) : 0;
		if (t->mini ? m->out % t->mini_r != 0 : x->shape[1] != m->out)
			return fit_err(t, m, 0, err);
		return 0;
	case T_VBLORA:
		x = slot_info(t, m, 0);
		y = slot_info(t, m, 1);
		nb = slot_info(t, m, 2)->shape[1];	/* vector length */
		if (!mul_is(x->shape[1], nb, m->in))
			return fit_err(t, m, 0, err);
		if (!mul_is(y->shape[0], nb, m->out))
			return fit_err(t, m, 1, err);
		return 0;
	case T_RANDLORA:
		a = PEFTIO_MIN(m->in, m->out);
		b = PEFTIO_MAX(m->in, m->out);
		x = slot_info(t, m, 0);
		nb = (a + m->r - 1) / m->r;
		if (x->shape[1] != nb)
			return fit_err(t, m, 0, err);
		if (slot_info(t, m, 1)->shape[1] != a)
			return fit_err(t, m, 1, err);
		if (slot_info(t, m, 2)->shape[2] < a)
			return fit_err(t, m, 2, err);
		if (slot_info(t, m, 3)->shape[0] < b)
			return fit_err(t, m, 3, err);
		return 0;
	case T_SHIRA:
		return 0;	/* indices are checked when loaded */
	case T_C3A:
		x = slot_info(t, m, 0);
		if (!mul_is(x->shape[0], x->shape[2], m->out) ||
		    !mul_is(x->shape[1], x->shape[2], m->in))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': blocks of %llu do not tile "
			    "base tensor '%s' [%llu, %llu]", t->path, x->name,
			    (unsigned long long)x->shape[2], m->target,
			    (unsigned long long)m->out,
			    (unsigned long long)m->in);
		return 0;
	case T_DELORA:
		if (slot_info(t, m, 0)->shape[1] != m->in)
			return fit_err(t, m, 0, err);
		if (slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_NTYPES:
		break;
	}
	return 0;
}

int
peftio_tuner_invertible(const struct peftio_tuner *t)
{
	(void)t;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Deltas                                                              */

/* c[m, n] = a[m, k] b[k, n], row-major, in double. */
static void
matmul(const double *a, const double *b, double *c, uint64_t m, uint64_t k,
    uint64_t n)
{
	if (m == 0 || n == 0)
		return;
	if (k == 0) {
		memset(c, 0, m * n * sizeof(double));
		return;
	}
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n,
	    (int)k, 1.0, a, (int)k, b, (int)n, 0.0, c, (int)n);
}

/*
 * LyCORIS's CP rebuild, einsum("i j k l, i p, j r -> p r k l", t, a, b):
 * t [r1, r2, kk], a [r1, np], b [r2, nq] give out [np, nq kk].
 */
static int
cp_rebuild(const double *t, const double *a, const double *b, uint64_t r1,
    uint64_t r2, uint64_t kk, uint64_t np, uint64_t nq, double *out)
{
	double *at, *tk, *tmp, *o;
	uint64_t i, j, k, q;
	int rc = 0;

	at = malloc(np * r1 * sizeof(double));
	tk = malloc(r1 * r2 * sizeof(double));
	tmp = malloc(r1 * nq * sizeof(double));
	o = malloc(np * nq * sizeof(double));
	if (at == NULL || tk == NULL || tmp == NULL || o == NULL) {
		rc = PEFTIO_ENOMEM;
		goto out;
	}
	for (i = 0; i < r1; i++)
		for (j = 0; j < np; j++)
			at[j * r1 + i] = a[i * np + j];
	for (k = 0; k < kk; k++) {
		for (i = 0; i < r1; i++)
			for (j = 0; j < r2; j++)
				tk[i * r2 + j] = t[(i * r2 + j) * kk + k];
		matmul(tk, b, tmp, r1, r2, nq);
		matmul(at, tmp, o, np, r1, nq);
		for (i = 0; i < np; i++)
			for (q = 0; q < nq; q++)
				out[(i * nq + q) * kk + k] = o[i * nq + q];
	}
out:
	free(at);
	free(tk);
	free(tmp);
	free(o);
	return rc;
}

/* Load up to 4 slots; the pointers of absent ones stay NULL. */
static int
load_slots(const struct peftio_tuner *t, const struct tmod *m, double **v,
    int n, struct peftio_error *err)
{
	int s, rc;

	for (s = 0; s < n; s++) {
		v[s] = NULL;
		if (m->t[s] >= 0 && peftio_dtype_is_float(ti(t,
		    m->t[s])->dtype) && (rc = load(t, m->t[s], &v[s], err)) != 0)
			return rc;
	}
	return 0;
}

static void
free_slots(double **v, int n)
{
	int s;

	for (s = 0; s < n; s++)
		free(v[s]);
}

/* A [r, L] matrix of VB-LoRA: softmax over the top-k logits of each
 * [nv] row, mixing the bank's [nv, L] vectors.  logits [g, nv] -> out
 * [g, L]. */
static int
vb_mix(const double *logits, uint64_t g, const double *bank, uint64_t nv,
    uint64_t len, uint64_t topk, double *out)
{
	uint64_t i, j, k, *idx;
	double *w, mx, sum;

	idx = malloc(topk * sizeof(*idx));
	w = malloc(topk * sizeof(*w));
	if (idx == NULL || w == NULL) {
		free(idx);
		free(w);
		return PEFTIO_ENOMEM;
	}
	for (i = 0; i < g; i++) {
		const double *l = logits + i * nv;

		/* top-k, largest first, lower index first among equals */
		for (k = 0; k < topk; k++) {
			uint64_t best = nv;

			for (j = 0; j < nv; j++) {
				uint64_t q;
				int used = 0;

				for (q = 0; q < k; q++)
					used |= idx[q] == j;
				if (!used && (best == nv || l[j] > l[best]))
					best = j;
			}
			idx[k] = best;
		}
		mx = l[idx[0]];
		for (sum = 0, k = 0; k < topk; k++)
			sum += (w[k] = exp(l[idx[k]] - mx));
		for (j = 0; j < len; j++) {
			double s = 0;

			for (k = 0; k < topk; k++)
				s += w[k] / sum * bank[idx[k] * len + j];
			out[i * len + j] = s;
		}
	}
	free(idx);
	free(w);
	return 0;
}

/* The delta [out, in] of module m, in double. */
static int
delta(const struct peftio_tuner *t, const struct tmod *m, double *d,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *x, *y;
	uint64_t out = m->out, in = m->in, r = m->r, i, j, k, a, b, c, e;
	double *v[MAX_SLOTS] = { NULL }, *p = NULL, *q = NULL;
	int rc;

	if ((rc = load_slots(t, m, v, MAX_SLOTS, err)) != 0)
		goto out;
	switch (t->type) {
	case T_ADALORA:	/* B (A * E) * scaling / ranknum */
		for (k = 0; k < r; k++)
			for (j = 0; j < in; j++)
				v[0][k * in + j] *= v[2][k];
		matmul(v[1], v[0], d, out, r, in);
		for (i = 0; i < out * in; i++)
			d[i] *= m->scale;
		break;
	case T_LOHA:	/* (w1a w1b) * (w2a w2b) * alpha / r */
		if ((p = malloc(out * in * sizeof(double))) == NULL)
			goto nomem;
		if (m->t[4] >= 0) {	/* cp(t1, w1a, w1b) * cp(t2, ...) */
			if (cp_rebuild(v[4], v[0], v[1], r, r, m->kk, out,
			    m->inch, d) != 0 || cp_rebuild(v[5], v[2], v[3],
			    r, r, m->kk, out, m->inch, p) != 0)
				goto nomem;
		} else {
			matmul(v[0], v[1], d, out, r, in);
			matmul(v[2], v[3], p, out, r, in);
		}
		for (i = 0; i < out * in; i++)
			d[i] = d[i] * p[i] * m->scale;
		break;
	case T_LOKR:	/* kron(w1, w2) * alpha / r */
		x = slot_info(t, m, m->t[0] >= 0 ? 0 : 1);
		a = x->shape[0];
		c = out / a;
		b = in / (m->t[0] >= 0 ? x->shape[1] :
		    slot_info(t, m, 2)->shape[1]);
		e = in / b;	/* w1 is [a, e], w2 [c, b] */
		if ((p = malloc(a * e * sizeof(double))) == NULL ||
		    (q = malloc(c * b * sizeof(double))) == NULL)
			goto nomem;
		if (m->t[0] >= 0)
			memcpy(p, v[0], a * e * sizeof(double));
		else
			matmul(v[1], v[2], p, a, r, e);
		if (m->t[3] >= 0)
			memcpy(q, v[3], c * b * sizeof(double));
		else if (m->t[6] >= 0) {
			if (cp_rebuild(v[6], v[4], v[5], r, r, m->kk, c,
			    b / m->kk, q) != 0)
				goto nomem;
		} else
			matmul(v[4], v[5], q, c, r, b);
		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] = p[(i / c) * e + j / b] *
				    q[(i % c) * b + j % b] * m->scale;
		break;
	case T_VERA:	/* (lambda_b B[:out]) (lambda_d A[:, :in]) */
		x = slot_info(t, m, 2);
		y = slot_info(t, m, 3);
		if ((p = malloc(out * r * sizeof(double))) == NULL ||
		    (q = malloc(r * in * sizeof(double))) == NULL)
			goto nomem;
		for (i = 0; i < out; i++)
			for (k = 0; k < r; k++)
				p[i * r + k] = v[0][i] * v[3][i * y->shape[1] + k];
		for (k = 0; k < r; k++)
			for (j = 0; j < in; j++)
				q[k * in + j] = v[1][k] * v[2][k * x->shape[1] + j];
		matmul(p, q, d, out, r, in);
		break;
	case T_RANDLORA: {
		/* B' [max, nb r] with column b r + i = B[:, b, i]; A'
		 * [r nb, min] with row i nb + b = lambda[i, b] A[i, b or 0,
		 * :] gamma[b, :]; M = B' A' [max, min]; the delta is M or
		 * its transpose, times randlora_alpha / r. */
		uint64_t mn = PEFTIO_MIN(in, out), mx = PEFTIO_MAX(in, out);
		uint64_t nb = slot_info(t, m, 0)->shape[1], kk, nk;
		const struct peftio_tensor_info *ta = slot_info(t, m, 2);
		const struct peftio_tensor_info *tb = slot_info(t, m, 3);
		double *mm;

		nk = nb * r;
		if ((p = malloc(mx * nk * sizeof(double))) == NULL ||
		    (q = malloc(nk * mn * sizeof(double))) == NULL)
			goto nomem;
		for (i = 0; i < mx; i++)
			for (kk = 0; kk < nk; kk++)
				p[i * nk + kk] = v[3][(i * tb->shape[1] +
				    kk / r) * tb->shape[2] + kk % r];
		for (kk = 0; kk < nk; kk++) {
			uint64_t ia = kk / nb, ba = kk % nb;
			const double *arow = v[2] + (ia * ta->shape[1] +
			    (ta->shape[1] == 1 ? 0 : ba)) * ta->shape[2];

			for (j = 0; j < mn; j++)
				q[kk * mn + j] = v[0][ia * nb + ba] * arow[j] *
				    v[1][ba * mn + j];
		}
		if (mn == in) {
			matmul(p, q, d, mx, nk, in);
			for (i = 0; i < out * in; i++)
				d[i] *= m->scale;
			break;
		}
		if ((mm = malloc(mx * mn * sizeof(double))) == NULL)
			goto nomem;
		matmul(p, q, mm, mx, nk, mn);
		for (i = 0; i < mx; i++)	/* M [in, out] */
			for (j = 0; j < mn; j++)
				d[j * in + i] = mm[i * mn + j] * m->scale;
		free(mm);
		break;
	}
	case T_VBLORA: {
		uint64_t len = slot_info(t, m, 2)->shape[1];
		uint64_t nv = slot_info(t, m, 2)->shape[0];
		uint64_t ti_ = in / len, to = out / len;

		/* A [r, in]: rows of logits_A [r, ti, nv] mixed */
		if ((p = malloc(r * in * sizeof(double))) == NULL ||
		    (q = malloc(to * r * len * sizeof(double))) == NULL)
			goto nomem;
		if (vb_mix(v[0], r * ti_, v[2], nv, len, t->topk, p) != 0 ||
		    vb_mix(v[1], to * r, v[2], nv, len, t->topk, q) != 0)
			goto nomem;
		/* B [out, r]: B[t L + l, k] = q[(t r + k) L + l] */
		{
			double *bm = malloc(out * r * sizeof(double));

			if (bm == NULL)
				goto nomem;
			for (i = 0; i < out; i++)
				for (k = 0; k < r; k++)
					bm[i * r + k] = q[((i / len) * r + k) *
					    len + i % len];
			matmul(bm, p, d, out, r, in);
			free(bm);
		}
		break;
	}
	case T_SHIRA: {
		const struct peftio_tensor_info *ix = slot_info(t, m, 1);
		const void *data;
		uint64_t n = slot_info(t, m, 0)->shape[0];

		if ((rc = peftio_ckpt_data(t->ck, (size_t)m->t[1], &data,
		    err)) != 0)
			goto out;
		memset(d, 0, out * in * sizeof(double));
		for (k = 0; k < n; k++) {
			int64_t ri, ci;

			if (ix->dtype == PEFTIO_I32) {
				int32_t u[2];

				memcpy(&u[0], (const char *)data + 4 * k, 4);
				memcpy(&u[1], (const char *)data + 4 * (n + k),
				    4);
				ri = u[0];
				ci = u[1];
			} else {
				memcpy(&ri, (const char *)data + 8 * k, 8);
				memcpy(&ci, (const char *)data + 8 * (n + k),
				    8);
			}
			if (ri < 0 || ci < 0 || (uint64_t)ri >= out ||
			    (uint64_t)ci >= in) {
				rc = peftio_error_set(err, PEFTIO_EMISMATCH,
				    "%s: tensor '%s': index (%lld, %lld) is "
				    "outside base tensor '%s' [%llu, %llu]",
				    t->path, ix->name, (long long)ri,
				    (long long)ci, m->target,
				    (unsigned long long)out,
				    (unsigned long long)in);
				goto out;
			}
			d[(uint64_t)ri * in + (uint64_t)ci] += v[0][k];
		}
		break;
	}
	case T_C3A: {	/* block circulant: w[m, n, (t - l) mod b] / in */
		uint64_t bs = slot_info(t, m, 0)->shape[2];
		uint64_t nn = in / bs;

		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++) {
				uint64_t l = i % bs, tt = j % bs;

				d[i * in + j] = v[0][((i / bs) * nn + j / bs) *
				    bs + (tt + bs - l) % bs] / (double)in;
			}
		break;
	}
	case T_DELORA: {
		/* B diag(lambda / r / (|A_k| |B_:k|)) A * w_norm[None] */
		double *dg;

		if ((dg = malloc(r * sizeof(double))) == NULL)
			goto nomem;
		for (k = 0; k < r; k++) {
			double an = 0, bn = 0;

			for (j = 0; j < in; j++)
				an += v[0][k * in + j] * v[0][k * in + j];
			for (i = 0; i < out; i++)
				bn += v[1][i * r + k] * v[1][i * r + k];
			an = PEFTIO_MAX(sqrt(an), 1e-12);
			bn = PEFTIO_MAX(sqrt(bn), 1e-12);
			dg[k] = v[2][0] / (double)r / (an * bn);
		}
		for (i = 0; i < out; i++)
			for (k = 0; k < r; k++)
				v[1][i * r + k] *= dg[k];
		matmul(v[1], v[0], d, out, r, in);
		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] *= v[3][j];
		free(dg);
		break;
	}
	case T_MISS: {	/* W[o, k] += block[k mod r, o (mod mini_r)] */
		uint64_t w = slot_info(t, m, 0)->shape[1];

		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] = v[0][(j % r) * w +
				    (t->mini ? i % t->mini_r : i)];
		break;
	}
	default:
		break;
	}
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: module '%s': out of "
	    "memory", t->path, m->name);
out:
	free_slots(v, MAX_SLOTS);
	free(p);
	free(q);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Rotations                                                           */

static struct stage *
add_stage(struct peftio_tuner_prep *p, enum skind kind)
{
	struct stage *s = realloc(p->st, (p->nst + 1) * sizeof(*s));

	if (s == NULL)
		return NULL;
	p->st = s;
	s = &p->st[p->nst++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	return s;
}

/* x = a^-1 b for b x b matrices (row-major); 0, or -1 if singular. */
static int
solve(double *a, double *x, uint64_t b)
{
	lapack_int *piv = malloc(b * sizeof(*piv));
	int rc;

	if (piv == NULL)
		return -1;
	rc = LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)b, (lapack_int)b, a,
	    (lapack_int)b, piv, x, (lapack_int)b);
	free(piv);
	return rc == 0 ? 0 : -1;
}

static void
transpose_sq(double *a, uint64_t b)
{
	uint64_t i, j;
	double x;

	for (i = 0; i < b; i++)
		for (j = i + 1; j < b; j++) {
			x = a[i * b + j];
			a[i * b + j] = a[j * b + i];
			a[j * b + i] = x;
		}
}

/* OFT: the b x b rotation of each row of oft_R.weight. */
static int
oft_blocks(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct stage *s, struct peftio_error *err)
{
	const struct peftio_tensor_info *x = slot_info(t, m, 0);
	uint64_t b = oft_block(x->shape[1]), n = x->shape[0], blk, i, j, k;
	uint64_t ne = x->shape[1];
	double *v = NULL, *q, *pw = NULL, *tmp = NULL, *a = NULL, *e = NULL;
	long term;
	int rc;

	if ((rc = load(t, m->t[0], &v, err)) != 0)
		return rc;
	s->n = n;
	s->b = b;
	q = s->m = calloc(n * b * b, sizeof(double));
	pw = malloc(b * b * sizeof(double));
	tmp = malloc(b * b * sizeof(double));
	a = malloc(b * b * sizeof(double));
	e = malloc(b * b * sizeof(double));
	if (q == NULL || pw == NULL || tmp == NULL || a == NULL || e == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (blk = 0; blk < n; blk++) {
		double *vec = v + blk * ne, *r = q + blk * b * b;
		double *sk = a;

		/* coft: scale the skew matrix to norm eps / sqrt(n) at
		 * most (PEFT's _project_batch). */
		if (t->coft) {
			double nrm = 0, lim = t->eps / sqrt((double)n);

			for (k = 0; k < ne; k++)
				nrm += 2 * vec[k] * vec[k];
			nrm = sqrt(nrm);
			if (!(nrm <= lim))
				for (k = 0; k < ne; k++)
					vec[k] = lim * (vec[k] / nrm);
		}
		/* Q: the upper triangle row by row, minus its transpose */
		memset(sk, 0, b * b * sizeof(double));
		for (i = 0, k = 0; i < b; i++)
			for (j = i + 1; j < b; j++, k++) {
				sk[i * b + j] = vec[k];
				sk[j * b + i] = -vec[k];
			}
		memset(r, 0, b * b * sizeof(double));
		for (i = 0; i < b; i++)
			r[i * b + i] = 1;
		if (t->neumann) {
			/* PEFT's series: I + 2 Q + 2 Q^2 + 2 Q^3 + ... +
			 * 2 Q^(n-2) + Q^max(3, n-1) for n > 2 terms */
			if (t->nterms > 1)
				for (k = 0; k < b * b; k++)
					r[k] += 2 * sk[k];
			if (t->nterms > 2) {
				matmul(sk, sk, pw, b, b, b);
				for (k = 0; k < b * b; k++)
					r[k] += 2 * pw[k];
				for (term = 3; term < t->nterms - 1; term++) {
					matmul(pw, sk, tmp, b, b, b);
					memcpy(pw, tmp, b * b * sizeof(double));
					for (k = 0; k < b * b; k++)
						r[k] += 2 * pw[k];
				}
				matmul(pw, sk, tmp, b, b, b);
				for (k = 0; k < b * b; k++)
					r[k] += tmp[k];
			}
		} else {
			/* R (I + Q) = I - Q: (I - Q) R^T = I + Q */
			for (k = 0; k < b * b; k++) {
				double id = k % (b + 1) == 0 ? 1 : 0;

				e[k] = id - sk[k];
				r[k] = id + sk[k];
			}
			if (solve(e, r, b) != 0) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': I + Q is singular",
				    t->path, x->name);
				goto out;
			}
			transpose_sq(r, b);
		}
		if (unmerge) {	/* PEFT: torch.linalg.inv */
			memcpy(e, r, b * b * sizeof(double));
			memset(r, 0, b * b * sizeof(double));
			for (i = 0; i < b; i++)
				r[i * b + i] = 1;
			if (solve(e, r, b) != 0) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': the rotation is "
				    "singular: it cannot be unmerged",
				    t->path, x->name);
				goto out;
			}
		}
	}
out:
	free(v);
	free(pw);
	free(tmp);
	free(a);
	free(e);
	return rc;
}

/* BOFT's butterfly permutation of factor i (PEFT's
 * block_butterfly_perm(n, blocks / 2^i, b / 2, factors - 1)). */
static void
boft_perm(uint64_t n, uint64_t nblocks, uint64_t b, uint64_t i,
    uint64_t factors, uint64_t *perm)
{
	uint64_t bsz, r = b / 2, step, c, k, cnt, start, tt, *seq;

	for (k = 0; k < n; k++)
		perm[k] = k;
	if (factors <= 1)
		return;
	bsz = n / (nblocks >> i);
	step = bsz / r;
	if ((seq = malloc(step * sizeof(*seq))) == NULL)
		return;
	for (cnt = 0, c = 0; c < step; c += 2)
		seq[cnt++] = c;
	for (c = 1; c < step; c += 2)
		seq[cnt++] = c;
	for (start = 0; start + bsz <= n; start += bsz)
		for (k = 0; k < step; k++)
			for (tt = 0; tt < r; tt++)
				perm[start + k * r + tt] = start +
				    seq[k] * r + tt;
	free(seq);
}

static int
boft_stages(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	const struct peftio_tensor_info *x = slot_info(t, m, 0);
	uint64_t nf = x->shape[0], nblk = x->shape[1], b = x->shape[2];
	uint64_t f, blk, k, fi;
	double *v = NULL, *sv = NULL, *e = NULL, *rot = NULL;
	struct stage *s;
	int rc;

	if ((rc = load(t, m->t[0], &v, err)) != 0 ||
	    (rc = load(t, m->t[1], &sv, err)) != 0)
		goto out;
	if ((e = malloc(b * b * sizeof(double))) == NULL ||
	    (rot = malloc(nf * nblk * b * b * sizeof(double))) == NULL)
		goto nomem;
	/* Cayley of each block: S = (D - D^T) / 2, R = (I - S)(I + S)^-1,
	 * so (I - S) R^T = (I + S). */
	for (k = 0; k < nf * nblk; k++) {
		double *d = v + k * b * b, *r = rot + k * b * b;
		uint64_t i, j;

		for (i = 0; i < b; i++)
			for (j = 0; j < b; j++) {
				double sk = 0.5 * (d[i * b + j] - d[j * b + i]);
				double id = i == j ? 1 : 0;

				e[i * b + j] = id - sk;
				r[i * b + j] = id + sk;
			}
		if (solve(e, r, b) != 0) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': I + S is singular", t->path,
			    x->name);
			goto out;
		}
		transpose_sq(r, b);
		if (unmerge)	/* PEFT unmerges by the transpose */
			transpose_sq(r, b);
	}
	/* merge: x -> s * M_{nf-1} ... M_0 x, M_f = P_f B_f P_f^T;
	 * unmerge: x -> M_0^T ... M_{nf-1}^T x / s. */
	if (unmerge) {
		if ((s = add_stage(p, S_ROWSCALE)) == NULL)
			goto nomem;
		s->m = sv;
		sv = NULL;
		for (k = 0; k < p->rows; k++)
			s->m[k] = 1 / s->m[k];
	}
	for (fi = 0; fi < nf; fi++) {
		enum skind kinds[3] = { S_SCATTER, S_BLOCKS, S_GATHER };

		f = unmerge ? nf - 1 - fi : fi;
		for (k = 0; k < 3; k++) {
			if ((s = add_stage(p, kinds[k])) == NULL)
				goto nomem;
			if (kinds[k] == S_BLOCKS) {
				s->n = nblk;
				s->b = b;
				if ((s->m = malloc(nblk * b * b *
				    sizeof(double))) == NULL)
					goto nomem;
				for (blk = 0; blk < nblk * b * b; blk++)
					s->m[blk] = rot[f * nblk * b * b +
					    blk];
				continue;
			}
			if ((s->perm = malloc(p->cols * sizeof(uint64_t))) ==
			    NULL)
				goto nomem;
			boft_perm(p->cols, nblk, b, f, nf, s->perm);
		}
	}
	if (!unmerge) {
		if ((s = add_stage(p, S_ROWSCALE)) == NULL)
			goto nomem;
		s->m = sv;
		sv = NULL;
	}
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
out:
	free(v);
	free(sv);
	free(e);
	free(rot);
	return rc;
}

/* MiSS "bat": W' = W + W_blk B_a + B_a for each r x r block of row
 * block a; unmerged by W = (W' - B_a) (I + B_a)^-1. */
static int
bat_stage(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	uint64_t r = m->r, nb = m->out / r, a, i, k;
	double *v = NULL, *e;
	struct stage *s;
	int rc;

	if ((rc = load(t, m->t[0], &v, err)) != 0)
		return rc;
	if ((s = add_stage(p, S_BAT)) == NULL ||
	    (s->m = malloc(2 * nb * r * r * sizeof(double))) == NULL ||
	    (e = malloc(r * r * sizeof(double))) == NULL) {
		free(v);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	s->n = nb;
	s->b = r;
	s->reverse = unmerge;
	memcpy(s->m, v, nb * r * r * sizeof(double));
	for (a = 0; unmerge && a < nb; a++) {
		double *inv = s->m + (nb + a) * r * r;

		for (k = 0; k < r * r; k++)
			e[k] = v[a * r * r + k] + (k % (r + 1) == 0 ? 1 : 0);
		memset(inv, 0, r * r * sizeof(double));
		for (i = 0; i < r; i++)
			inv[i * r + i] = 1;
		if (solve(e, inv, r) != 0) {
			free(e);
			free(v);
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': I + block is singular: it "
			    "cannot be unmerged", t->path,
			    ti(t, m->t[0])->name);
		}
	}
	free(e);
	free(v);
	return 0;
}

/* HRA: normalized columns of hra_u, or Gram-Schmidt with apply_GS. */
static int
hra_stages(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	uint64_t n = m->in, r = m->r, i, j, k;
	double *u = NULL, *w;
	struct stage *s;
	int rc;

	if ((rc = load(t, m->t[0], &u, err)) != 0)
		return rc;
	if ((s = add_stage(p, t->apply_gs ? S_GS : S_HOUSE)) == NULL ||
	    (w = s->m = malloc(r * n * sizeof(double))) == NULL) {
		free(u);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	s->n = r;
	s->reverse = unmerge && !t->apply_gs;
	/* w holds the vectors as rows: w[k, :] = u[:, k] */
	for (k = 0; k < r; k++)
		for (i = 0; i < n; i++)
			w[k * n + i] = u[i * r + k];
	for (k = 0; k < r; k++) {
		double nrm = 0;

		if (t->apply_gs)
			for (j = 0; j < k; j++) {
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += w[j * n + i] * w[k * n + i];
				for (i = 0; i < n; i++)
					w[k * n + i] -= dot * w[j * n + i];
			}
		for (i = 0; i < n; i++)
			nrm += w[k * n + i] * w[k * n + i];
		nrm = sqrt(nrm);
		for (i = 0; i < n; i++)
			w[k * n + i] /= nrm;
	}
	free(u);
	return 0;
}

static void
apply_stages(const struct peftio_tuner_prep *p, double *x, double *y,
    uint64_t row)
{
	uint64_t n = p->cols, i, j, k, blk;
	size_t si;

	for (si = 0; si < p->nst; si++) {
		const struct stage *s = &p->st[si];

		switch (s->kind) {
		case S_BLOCKS:
			for (blk = 0; blk < n / s->b; blk++) {
				const double *r = s->m + (s->n == 1 ? 0 :
				    blk) * s->b * s->b;
				const double *xb = x + blk * s->b;

				for (i = 0; i < s->b; i++) {
					double a = 0;

					for (j = 0; j < s->b; j++)
						a += r[i * s->b + j] * xb[j];
					y[blk * s->b + i] = a;
				}
			}
			memcpy(x, y, n * sizeof(double));
			break;
		case S_GATHER:	/* (P x)[i] = x[perm[i]] */
			for (i = 0; i < n; i++)
				y[i] = x[s->perm[i]];
			memcpy(x, y, n * sizeof(double));
			break;
		case S_SCATTER:	/* (P^T x)[perm[i]] = x[i] */
			for (i = 0; i < n; i++)
				y[s->perm[i]] = x[i];
			memcpy(x, y, n * sizeof(double));
			break;
		case S_HOUSE:	/* x <- x - 2 (x . u) u, in order */
			for (k = 0; k < s->n; k++) {
				const double *u = s->m + (s->reverse ?
				    s->n - 1 - k : k) * n;
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += x[i] * u[i];
				for (i = 0; i < n; i++)
					x[i] -= 2 * dot * u[i];
			}
			break;
		case S_GS:	/* x <- x - 2 U U^T x */
			memset(y, 0, n * sizeof(double));
			for (k = 0; k < s->n; k++) {
				const double *u = s->m + k * n;
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += x[i] * u[i];
				for (i = 0; i < n; i++)
					y[i] += dot * u[i];
			}
			for (i = 0; i < n; i++)
				x[i] -= 2 * y[i];
			break;
		case S_ROWSCALE:
			for (i = 0; i < n; i++)
				x[i] *= s->m[row];
			break;
		case S_BAT: {
			uint64_t b = s->b, a = row / b, ri = row % b;
			const double *bm = s->m + a * b * b;
			const double *inv = s->m + (s->n + a) * b * b;

			for (blk = 0; blk < n / b; blk++) {
				const double *xb = x + blk * b;

				for (j = 0; j < b; j++) {
					double acc = 0;

					if (s->reverse) {
						for (k = 0; k < b; k++)
							acc += (xb[k] -
							    bm[ri * b + k]) *
							    inv[k * b + j];
					} else {
						for (k = 0; k < b; k++)
							acc += xb[k] *
							    bm[k * b + j];
						acc += xb[j] + bm[ri * b + j];
					}
					y[blk * b + j] = acc;
				}
			}
			memcpy(x, y, n * sizeof(double));
			break;
		}
		}
	}
}

/* ------------------------------------------------------------------ */
/* Preparing and applying a module's merge                             */

void
peftio_tuner_prep_free(struct peftio_tuner_prep *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nst; i++) {
		free(p->st[i].m);
		free(p->st[i].perm);
	}
	free(p->st);
	free(p->d);
	free(p->x);
	free(p->y);
	free(p);
}

int
peftio_tuner_prepare(const struct peftio_tuner *t, size_t i, uint64_t rows,
    uint64_t cols, int unmerge, struct peftio_tuner_prep **out,
    struct peftio_error *err)
{
	const struct tmod *m = &t->mods[i];
	struct peftio_tuner_prep *p;
	struct stage *s;
	enum peftio_dtype adt;
	double *d = NULL;
	uint64_t n = rows * cols, r, c;
	int rc = 0;

	*out = NULL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	p->rows = rows;
	p->cols = cols;
	p->unmerge = unmerge;
	if (tdescs[t->type].rotation || (t->type == T_MISS && t->bat)) {
		if ((p->x = malloc(cols * sizeof(double))) == NULL ||
		    (p->y = malloc(cols * sizeof(double))) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto out;
		}
		switch (t->type) {
		case T_OFT:
			if ((s = add_stage(p, S_BLOCKS)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
				goto out;
			}
			rc = oft_blocks(t, m, unmerge, s, err);
			break;
		case T_BOFT:
			rc = boft_stages(t, m, unmerge, p, err);
			break;
		case T_MISS:
			rc = bat_stage(t, m, unmerge, p, err);
			break;
		default:
			rc = hra_stages(t, m, unmerge, p, err);
			break;
		}
		goto out;
	}
	if ((d = malloc((n ? n : 1) * sizeof(double))) == NULL ||
	    (p->d = malloc((n ? n : 1) * sizeof(float))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: module '%s': "
		    "out of memory", t->path, m->name);
		goto out;
	}
	if ((rc = delta(t, m, d, err)) != 0)
		goto out;
	/* PEFT: transpose(delta, fan_in_fan_out), in float32, or in the
	 * adapter's dtype when that is 16-bit */
	for (r = 0; r < m->out; r++)
		for (c = 0; c < m->in; c++)
			p->d[t->fifo ? c * m->out + r : r * m->in + c] =
			    (float)d[r * m->in + c];
	adt = ti(t, m->t[0] >= 0 ? m->t[0] : m->t[1])->dtype;
	if (adt == PEFTIO_F16 || adt == PEFTIO_BF16)
		for (r = 0; r < n; r++) {
			uint16_t h;

			peftio_from_f32(adt, &p->d[r], &h, 1);
			peftio_to_f32(adt, &h, &p->d[r], 1);
		}
out:
	free(d);
	if (rc != 0) {
		peftio_tuner_prep_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void
peftio_tuner_rows(struct peftio_tuner_prep *p, float *w, uint64_t row0,
    uint64_t nrows)
{
	uint64_t i, j, n = nrows * p->cols;

	if (p->d != NULL) {
		const float *d = p->d + row0 * p->cols;

		if (p->unmerge)
			for (i = 0; i < n; i++)
				w[i] -= d[i];
		else
			for (i = 0; i < n; i++)
				w[i] += d[i];
		return;
	}
	for (i = 0; i < nrows; i++) {
		float *row = w + i * p->cols;

		for (j = 0; j < p->cols; j++)
			p->x[j] = row[j];
		apply_stages(p, p->x, p->y, row0 + i);
		for (j = 0; j < p->cols; j++)
			row[j] = (float)p->x[j];
	}
}

/* ------------------------------------------------------------------ */
/* Trainable parameters (dq-inspect --plan)                            */

/* LyCORIS's factorization of a dimension with decompose_factor -1:
 * m <= n, m n = dim, m + n smallest. */
static void
factorization(uint64_t dim, uint64_t *m, uint64_t *n)
{
	uint64_t a = 1, b = dim, na, nb;

	while (a < b) {
		for (na = a + 1; dim % na != 0; na++)
			;
		nb = dim / na;
		if (na + nb > 1 + dim)
			break;
		a = na;
		b = nb;
	}
	*m = PEFTIO_MIN(a, b);
	*n = PEFTIO_MAX(a, b);
}

int
peftio_tuner_plan_params(const char *method, uint64_t out, uint64_t in,
    uint64_t r, uint64_t *n)
{
	uint64_t x, y, ol, ok, im, inn;
	int bad = 0;

	*n = 0;
	bad |= PEFTIO_ADD_OVERFLOW(out, in, &x);
	if (strcmp(method, "loha") == 0) {	/* w1a, w1b, w2a, w2b */
		bad |= PEFTIO_MUL_OVERFLOW(x, 2 * r, n);
	} else if (strcmp(method, "lokr") == 0) {
		/* w1 [out_l, in_m] full; w2 full when r >= max / 2, else
		 * a pair of rank r */
		factorization(out, &ol, &ok);
		factorization(in, &im, &inn);
		bad |= PEFTIO_MUL_OVERFLOW(ol, im, &x);
		if (2 * r >= PEFTIO_MAX(ok, inn))
			bad |= PEFTIO_MUL_OVERFLOW(ok, inn, &y);
		else
			bad |= PEFTIO_MUL_OVERFLOW(ok + inn, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(x, y, n);
	} else if (strcmp(method, "adalora") == 0) {	/* A, B, E */
		bad |= PEFTIO_ADD_OVERFLOW(x, 1, &x);
		bad |= PEFTIO_MUL_OVERFLOW(x, r, n);
	} else if (strcmp(method, "vera") == 0) {	/* lambda_b, lambda_d */
		bad |= PEFTIO_ADD_OVERFLOW(out, r, n);
	} else if (strcmp(method, "hra") == 0) {	/* u [in, r] */
		bad |= PEFTIO_MUL_OVERFLOW(in, r, n);
	} else if (strcmp(method, "miss") == 0) {	/* block [r, out] */
		bad |= PEFTIO_MUL_OVERFLOW(out, r, n);
	} else if (strcmp(method, "delora") == 0) {	/* A, B, lambda */
		bad |= PEFTIO_MUL_OVERFLOW(x, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(y, 1, n);
	} else
		return PEFTIO_EINVAL;
	return bad ? PEFTIO_EFORMAT : 0;
}
