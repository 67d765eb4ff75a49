/*
 * extractmodel.c - a LoRA adapter from a fine-tuned model: every
 * selected weight's difference from the base, its truncated SVD
 * (extract.c) in parallel, written as an adapter directory that PEFT
 * loads unchanged.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_write.h"

#define ADAPTER_FILE	"adapter_model.safetensors"
#define CONFIG_FILE	"adapter_config.json"
#define MODEL_CONFIG_MAX	(1u << 24)	/* largest config.json read */
/* Rows converted at a time when the base is subtracted. */
#define SUB_ROWS	64

struct item {
	size_t		 bi, ti;	/* index in base, in tuned */
	char		*module;	/* name without ".weight" */
	int		 embedding;	/* lora_embedding_A/B */
	uint64_t	 rows, cols;	/* of the weight */
	enum peftio_dtype bdt, tdt, odt;
	int		 zero;		/* delta is zero: skipped */
	struct peftio_lora_factors f;
	struct peftio_error err;
	const char	*errfile;	/* err's file, or NULL: tuned */
	int		 rc;
};

struct job {
	const struct peftio_extract_model_opts *o;
	const char	*base, *tuned;	/* paths, for messages */
	struct peftio_ckpt *b, *t;
	struct item	*items;
	/* o->progress: bytes of the tuned weights done, under lock. */
	pthread_mutex_t	 lock;
	uint64_t	 done, total;
};

static int
float_dtype(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

static int
is_embedding_leaf(const char *l)
{
	static const char *const emb[] = {
		"embed_tokens", "wte", "wpe", "embed_in", "word_embeddings",
		"position_embeddings", "token_type_embeddings",
		"embed_positions", "shared"
	};
	size_t i;

	for (i = 0; i < sizeof(emb) / sizeof(emb[0]); i++)
		if (strcmp(l, emb[i]) == 0)
			return 1;
	return 0;
}

/* The test matrix seed of one weight: fixed, whatever the order. */
static uint64_t
name_seed(const char *s, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/*
 * delta = tuned - base in f32.  Each tensor's pages are dropped once
 * converted, so the memory held is one f32 delta per thread.  1 when
 * the delta is not zero, 0 when it is, -1 on error.
 */
static int
load_delta(const struct job *j, struct item *it, float *d, float *tmp)
{
	uint64_t n = it->cols, i, k, r, nr;
	const void *bd, *td;
	size_t bes = peftio_dtype_bits(it->bdt) / 8;
	int64_t bad;
	int nz = 0;

	if (peftio_ckpt_data(j->t, it->ti, &td, &it->err) != 0 ||
	    peftio_ckpt_data(j->b, it->bi, &bd, &it->err) != 0)
		return -1;
	/* A value that is not finite is reported against its file. */
	if ((bad = peftio_first_nonfinite(it->tdt, td, it->rows * n)) >= 0 ||
	    (bad = peftio_first_nonfinite(it->bdt, bd, it->rows * n)) >= 0) {
		it->errfile = peftio_first_nonfinite(it->tdt, td,
		    it->rows * n) >= 0 ? j->tuned : j->base;
		peftio_error_set(&it->err, PEFTIO_ENONFINITE,
		    "tensor %s.weight: element %lld is not finite (NaN or "
		    "Inf)", it->module, (long long)bad);
		return -1;
	}
	peftio_to_f32(it->tdt, td, d, it->rows * n);
	peftio_ckpt_release(j->t, it->ti);
	for (r = 0; r < it->rows; r += SUB_ROWS) {
		nr = PEFTIO_MIN(SUB_ROWS, it->rows - r);
		peftio_to_f32(it->bdt, (const char *)bd + r * n * bes, tmp,
		    nr * n);
		for (i = 0; i < nr * n; i++) {
			k = r * n + i;
			d[k] -= tmp[i];
			if (d[k] != 0.0f)
				nz = 1;
			if (!isfinite(d[k])) {
				peftio_error_set(&it->err, PEFTIO_ENONFINITE,
				    "tensor %s.weight: element %llu of the "
				    "difference from %s overflows", it->module,
				    (unsigned long long)k, j->base);
				return -1;
			}
		}
	}
	peftio_ckpt_release(j->b, it->bi);
	return nz;
}

/* Factors of d^T from those of d = B A: (B A)^T = A^T B^T. */
static int
transpose_factors(struct peftio_lora_factors *f)
{
	uint64_t r = f->rank, i, k;
	float *a, *b;

	if ((a = malloc(r * f->m * sizeof(float) + 1)) == NULL ||
	    (b = malloc(f->n * r * sizeof(float) + 1)) == NULL) {
		free(a);
		return -1;
	}
	for (i = 0; i < f->m; i++)		/* A' = B^T, r x m */
		for (k = 0; k < r; k++)
			a[k * f->m + i] = f->b[i * r + k];
	for (i = 0; i < r; i++)			/* B' = A^T, n x r */
		for (k = 0; k < f->n; k++)
			b[k * r + i] = f->a[i * f->n + k];
	free(f->a);
	free(f->b);
	f->a = a;
	f->b = b;
	i = f->m;
	f->m = f->n;
	f->n = i;
	return 0;
}

static void
extract_one(const struct job *j, struct item *it)
{
	uint64_t m = it->rows, n = it->cols;
	struct peftio_extract_opts x = j->o->x;
	float *d, *tmp;
	int nz;

	d = malloc(m * n * sizeof(float));
	tmp = malloc(PEFTIO_MIN(m, SUB_ROWS) * n * sizeof(float));
	if (d == NULL || tmp == NULL) {
		it->rc = peftio_error_set(&it->err, PEFTIO_ENOMEM,
		    "%s.weight: out of memory", it->module);
		goto out;
	}
	if ((nz = load_delta(j, it, d, tmp)) < 0) {
		it->rc = it->err.code;
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (nz == 0) {
		it->zero = 1;
		it->rc = 0;
		goto out;
	}
	x.seed = name_seed(it->module, j->o->x.seed);
	if ((it->rc = peftio_extract_lora(d, m, n, &x, &it->f,
	    &it->err)) != 0) {
		peftio_error_prefix(&it->err, "tensor %s.weight", it->module);
		goto out;
	}
	/* PEFT adds (B A)^T to an embedding. */
	if (it->embedding && transpose_factors(&it->f) != 0)
		it->rc = peftio_error_set(&it->err, PEFTIO_ENOMEM,
		    "%s.weight: out of memory", it->module);
out:
	free(d);
	free(tmp);
}

/* Tell o->progress that item it starts (it NULL: that one is done). */
static void
tell(struct job *j, const struct item *it, uint64_t bytes)
{
	if (j->o->progress == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	j->done += bytes;
	if (it != NULL)
		j->o->progress(j->o->progress_arg, j->done, j->total,
		    it->module);
	pthread_mutex_unlock(&j->lock);
}

static void
extract_range(void *arg, uint64_t b, uint64_t e)
{
	struct job *j = arg;

	for (; b < e; b++) {
		tell(j, &j->items[b], 0);
		extract_one(j, &j->items[b]);
		tell(j, NULL, peftio_ckpt_tensor(j->t, j->items[b].ti)->nbytes);
	}
}

/*
 * The base's _name_or_path (into *name_or_path, or NULL), and the two
 * config.json agree on the architecture.
 */
static int
same_arch(const struct job *j, char **name_or_path, struct peftio_error *err)
{
	const char *bdir = peftio_ckpt_dir(j->b), *tdir = peftio_ckpt_dir(j->t);
	static const char *const keys[] = { "architectures", "model_type" };
	struct peftio_error ignored;
	char path[4096], *bt = NULL, *tt = NULL;
	size_t len, i;
	json_t *bj = NULL, *tj = NULL, *v;
	int rc = 0;

	*name_or_path = NULL;
	if (bdir != NULL) {
		snprintf(path, sizeof(path), "%s/config.json", bdir);
		if (peftio_read_file(path, MODEL_CONFIG_MAX, &bt, &len,
		    &ignored) == 0)
			bj = json_loadb(bt, len, 0, NULL);
	}
	if (tdir != NULL) {
		snprintf(path, sizeof(path), "%s/config.json", tdir);
		if (peftio_read_file(path, MODEL_CONFIG_MAX, &tt, &len,
		    &ignored) == 0)
			tj = json_loadb(tt, len, 0, NULL);
	}
	if (bj != NULL && (v = json_object_get(bj, "_name_or_path")) != NULL &&
	    json_is_string(v) && json_string_length(v) > 0 &&
	    (*name_or_path = strndup(json_string_value(v),
	    json_string_length(v))) == NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (rc == 0 && bj != NULL && tj != NULL)
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			json_t *a = json_object_get(bj, keys[i]);
			json_t *b = json_object_get(tj, keys[i]);

			if (a != NULL && b != NULL && !json_equal(a, b)) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: different architectures (%s of "
				    "%s/config.json differs)", j->tuned,
				    keys[i], bdir);
				break;
			}
		}
	json_decref(bj);
	json_decref(tj);
	free(bt);
	free(tt);
	return rc;
}

/* 1 if tensor i of b and k of t hold the same values, 0 if not, -1 on
 * error; their pages are dropped afterwards. */
static int
same_values(struct peftio_ckpt *b, size_t i, struct peftio_ckpt *t, size_t k,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *bi = peftio_ckpt_tensor(b, i);
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(t, k);
	uint64_t es = peftio_dtype_bits(bi->dtype) / 8;
	uint64_t et = peftio_dtype_bits(ti->dtype) / 8, e;
	const void *bd, *td;
	float x, y;
	int same;

	if (peftio_ckpt_data(b, i, &bd, err) != 0 ||
	    peftio_ckpt_data(t, k, &td, err) != 0)
		return -1;
	if (bi->dtype == ti->dtype)
		same = memcmp(bd, td, bi->nbytes) == 0;
	else {
		for (e = 0; e < bi->numel; e++) {
			peftio_to_f32(bi->dtype, (const char *)bd + e * es,
			    &x, 1);
			peftio_to_f32(ti->dtype, (const char *)td + e * et,
			    &y, 1);
			if (x != y)
				break;
		}
		same = e == bi->numel;
	}
	peftio_ckpt_release(b, i);
	peftio_ckpt_release(t, k);
	return same;
}

/* Append name to the ", "-separated list *s of length *len. */
static int
list_add(char **s, size_t *len, const char *name, struct peftio_error *err)
{
	size_t n = strlen(name);
	char *p = realloc(*s, *len + n + 3);

	if (p == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	snprintf(p + *len, n + 3, "%s%s", *len ? ", " : "", name);
	*len += strlen(p + *len);
	*s = p;
	return 0;
}

static int
selected(const struct peftio_extract_model_opts *o, const char *module)
{
	if (o->select != NULL)
		return o->select(o->select_arg, module);
	return peftio_linear_module(module, strlen(module));
}

/* The two checkpoints hold the same tensors with the same shapes; the
 * selected 2-D float weights become items (*n of them). */
static int
plan(struct job *j, size_t *n, char **skipped, struct peftio_error *err)
{
	size_t nb = peftio_ckpt_count(j->b), nt = peftio_ckpt_count(j->t);
	size_t i, slen = 0;
	int rc;

	*n = 0;
	for (i = 0; i < nt; i++) {
		const char *tn = peftio_ckpt_tensor(j->t, i)->name;

		if (peftio_ckpt_find(j->b, tn) < 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor %s is missing from %s", j->tuned, tn,
			    j->base);
	}
	if ((j->items = calloc(nb + 1, sizeof(*j->items))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (i = 0; i < nb; i++) {
		const struct peftio_tensor_info *bi = peftio_ckpt_tensor(j->b,
		    i);
		const struct peftio_tensor_info *ti;
		long k = peftio_ckpt_find(j->t, bi->name);
		size_t len = strlen(bi->name);
		struct item *it;
		int d, same = 1;

		if (k < 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor %s is missing (present in %s)",
			    j->tuned, bi->name, j->base);
		ti = peftio_ckpt_tensor(j->t, (size_t)k);
		if (bi->ndim != ti->ndim)
			same = 0;
		for (d = 0; same && d < bi->ndim; d++)
			if (bi->shape[d] != ti->shape[d])
				same = 0;
		if (!same)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor %s: shape differs from %s", j->tuned,
			    bi->name, j->base);
		if (!float_dtype(bi->dtype) || !float_dtype(ti->dtype) ||
		    bi->numel == 0)
			continue;
		it = &j->items[*n];
		if (bi->ndim == 2 && len > 7 &&
		    strcmp(bi->name + len - 7, ".weight") == 0) {
			if ((it->module = strndup(bi->name, len - 7)) == NULL)
				return peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
			if (selected(j->o, it->module)) {
				(*n)++;
				it->bi = i;
				it->ti = (size_t)k;
				it->embedding = is_embedding_leaf(
				    peftio_module_leaf(it->module));
				it->rows = bi->shape[0];
				it->cols = bi->shape[1];
				it->bdt = bi->dtype;
				it->tdt = ti->dtype;
				it->odt = bi->dtype == PEFTIO_F16 ||
				    bi->dtype == PEFTIO_BF16 ? bi->dtype :
				    PEFTIO_F32;
				continue;
			}
			free(it->module);
			it->module = NULL;
		}
		/* Not extracted: say so if it changed. */
		if ((same = same_values(j->b, i, j->t, (size_t)k, err)) < 0)
			return err->code;
		if (!same && (rc = list_add(skipped, &slen, bi->name,
		    err)) != 0)
			return rc;
	}
	return 0;
}

/* Scale B so that PEFT's scale alpha/r gives back the truncated delta. */
static void
rescale(struct item *it, double alpha)
{
	double scale = alpha / (double)it->f.rank;
	float c = (float)(1.0 / scale);
	uint64_t i;

	if (scale == 1.0)
		return;
	for (i = 0; i < it->f.m * it->f.rank; i++)
		it->f.b[i] *= c;
}

/*
 * adapter_config.json: r, with a rank_pattern entry for every module of
 * another rank and, without a given alpha, an alpha_pattern entry
 * equal to that rank (PEFT's scale stays 1).  Its text keeps the form
 * adapter-extract has always written (jansson, no final newline).
 */
static int
config_text(const struct job *j, size_t n, uint64_t r, double alpha,
    const char *name_or_path, char **out, struct peftio_error *err)
{
	const char **mods = malloc((n + 1) * sizeof(*mods));
	json_t *rp = json_object(), *ap = json_object(), *c = NULL;
	size_t i, nm = 0;
	char *k;
	int oom = mods == NULL || rp == NULL || ap == NULL;

	for (i = 0; i < n && !oom; i++) {
		const struct item *it = &j->items[i];

		if (it->zero)
			continue;
		mods[nm++] = it->module;
		if (it->f.rank == r)
			continue;
		if ((k = peftio_adapter_pattern_key(it->module)) == NULL) {
			oom = 1;
			break;
		}
		json_object_set_new(rp, k,
		    json_integer((json_int_t)it->f.rank));
		/* alpha = rank keeps PEFT's scale at 1. */
		if (j->o->alpha <= 0.0)
			json_object_set_new(ap, k,
			    json_real((double)it->f.rank));
		free(k);
	}
	if (!oom) {
		c = peftio_adapter_lora_config(mods, nm, name_or_path, r, alpha,
		    rp, ap);
		rp = ap = NULL;
	}
	free(mods);
	json_decref(rp);
	json_decref(ap);
	*out = c != NULL ? json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS |
	    JSON_REAL_PRECISION(17)) : NULL;
	json_decref(c);
	if (*out == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	return 0;
}

static int
write_adapter(struct job *j, size_t n, uint64_t r, double alpha,
    const char *name_or_path, const char *out, struct peftio_error *err)
{
	const char *names[1] = { ADAPTER_FILE };
	struct peftio_ckptw *w = NULL;
	char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME], *cfg = NULL;
	uint64_t sa[2], sb[2];
	size_t i;
	int rc;

	rc = peftio_ckptw_create(&w, out, 1, 1, names, j->o->flags, err);
	for (i = 0; i < n && rc == 0; i++) {
		struct item *it = &j->items[i];

		if (it->zero)
			continue;
		if (j->o->alpha > 0.0)
			rescale(it, j->o->alpha);
		sa[0] = it->f.rank;
		sa[1] = it->f.n;
		sb[0] = it->f.m;
		sb[1] = it->f.rank;
		rc = peftio_ckptw_declare(w, 0, peftio_adapter_key(ka,
		    sizeof(ka), it->module, 0, it->embedding), it->odt, 2,
		    sa, err);
		if (rc == 0)
			rc = peftio_ckptw_declare(w, 0, peftio_adapter_key(kb,
			    sizeof(kb), it->module, 1, it->embedding), it->odt,
			    2, sb, err);
	}
	if (rc == 0)
		rc = peftio_ckptw_layout(w, err);
	for (i = 0; i < n && rc == 0; i++) {
		struct item *it = &j->items[i];

		if (it->zero)
			continue;
		rc = peftio_adapter_write_f32(w, peftio_adapter_key(ka,
		    sizeof(ka), it->module, 0, it->embedding), it->f.a,
		    it->f.rank * it->f.n, it->odt, err);
		if (rc == 0)
			rc = peftio_adapter_write_f32(w, peftio_adapter_key(kb,
			    sizeof(kb), it->module, 1, it->embedding),
			    it->f.b, it->f.m * it->f.rank, it->odt, err);
	}
	if (rc == 0)
		rc = config_text(j, n, r, alpha, name_or_path, &cfg, err);
	if (rc == 0)
		rc = peftio_ckptw_file(w, CONFIG_FILE, cfg, strlen(cfg), err);
	if (rc == 0)
		rc = peftio_ckptw_commit(w, err);
	peftio_ckptw_free(w);
	free(cfg);
	return rc;
}

int
peftio_extract_model(const char *base, const char *tuned,
    const char *adapter_dir, const struct peftio_extract_model_opts *o,
    uint64_t *nmodules, uint64_t *rank, struct peftio_error *err)
{
	struct job j;
	char *name_or_path = NULL, *skipped = NULL;
	size_t n = 0, i;
	uint64_t r = 0, nz = 0;
	int rc;

	memset(&j, 0, sizeof(j));
	pthread_mutex_init(&j.lock, NULL);
	j.o = o;
	j.base = base;
	j.tuned = tuned;
	if ((rc = peftio_ckpt_open(&j.b, base, err)) != 0 ||
	    (rc = peftio_ckpt_open(&j.t, tuned, err)) != 0 ||
	    (rc = same_arch(&j, &name_or_path, err)) != 0 ||
	    (rc = plan(&j, &n, &skipped, err)) != 0)
		goto out;
	if (skipped != NULL && o->skipped != NULL)
		o->skipped(o->report_arg, skipped);
	for (i = 0; i < n; i++)
		j.total += peftio_ckpt_tensor(j.t, j.items[i].ti)->nbytes;
	if ((rc = peftio_blas_reserve(o->jobs, err)) != 0) {
		peftio_error_prefix(err, "%s", tuned);
		goto out;
	}
	peftio_parallel_for(o->jobs, n, 1, extract_range, &j);
	if (o->progress != NULL)
		o->progress(o->progress_arg, j.total, j.total, NULL);
	for (i = 0; i < n; i++)
		if (j.items[i].rc != 0) {
			*err = j.items[i].err;
			peftio_error_prefix(err, "%s", j.items[i].errfile !=
			    NULL ? j.items[i].errfile : tuned);
			rc = err->code;
			goto out;
		}
	for (i = 0; i < n; i++) {
		if (j.items[i].zero)
			continue;
		nz++;
		if (o->x.rank != 0)
			r = o->x.rank;
		else if (j.items[i].f.rank > r)
			r = j.items[i].f.rank;
	}
	if (nz == 0) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no selected weight differs from %s", tuned, base);
		goto out;
	}
	if (o->report != NULL)
		for (i = 0; i < n; i++)
			o->report(o->report_arg, j.items[i].module,
			    j.items[i].zero ? NULL : &j.items[i].f);
	rc = write_adapter(&j, n, r, o->alpha > 0.0 ? o->alpha : (double)r,
	    name_or_path, adapter_dir, err);
	if (nmodules != NULL)
		*nmodules = nz;
	if (rank != NULL)
		*rank = r;
out:
	if (j.items != NULL)
		for (i = 0; i < n; i++) {
			free(j.items[i].module);
			peftio_lora_factors_free(&j.items[i].f);
		}
	free(j.items);
	free(skipped);
	free(name_or_path);
	peftio_ckpt_close(j.b);
	peftio_ckpt_close(j.t);
	pthread_mutex_destroy(&j.lock);
	return rc;
}
