/*
 * merge.c - the merge of one or several PEFT adapters into base weights
 * as PEFT computes it (Linear, Conv1D with fan_in_fan_out, Embedding,
 * DoRA, IA3, modules_to_save, lora_B.bias, the other tuners' plans).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"

/* ------------------------------------------------------------------ */
/* The merge plan                                                      */

static void	prep_free(struct prep *);

static int
add_op(struct peftio_merge *m, const char *target, struct op op)
{
	struct target *t = NULL;
	struct op *o;
	size_t i;

	for (i = 0; i < m->nt; i++)
		if (strcmp(m->t[i].name, target) == 0) {
			t = &m->t[i];
			break;
		}
	if (t == NULL) {
		t = realloc(m->t, (m->nt + 1) * sizeof(*t));
		if (t == NULL)
			return PEFTIO_ENOMEM;
		m->t = t;
		t = &m->t[m->nt];
		memset(t, 0, sizeof(*t));
		if ((t->name = strdup(target)) == NULL)
			return PEFTIO_ENOMEM;
		m->nt++;
	}
	o = realloc(t->ops, (t->nops + 1) * sizeof(*o));
	if (o == NULL)
		return PEFTIO_ENOMEM;
	t->ops = o;
	t->ops[t->nops++] = op;
	return 0;
}

static int
cmp_target(const void *a, const void *b)
{
	return strcmp(((const struct target *)a)->name,
	    ((const struct target *)b)->name);
}

static int
shape_err(struct peftio_adapter *a, long idx, const struct target *t,
    const char *what, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_adapter_tinfo(a, idx);
	char buf[128];
	size_t n = 0;
	int d;

	buf[0] = '\0';
	for (d = 0; d < ti->ndim && n < sizeof(buf) - 24; d++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%llu",
		    d ? ", " : "", (unsigned long long)ti->shape[d]);
	return peftio_error_set(err, PEFTIO_EMISMATCH,
	    "%s: tensor '%s': %s [%s] does not fit base tensor '%s' "
	    "[%llu, %llu]", a->path, ti->name, what, buf, t->name,
	    (unsigned long long)t->rows, (unsigned long long)t->cols);
}

static int
check_target(struct peftio_merge *m, struct target *t,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	uint64_t shape[PEFTIO_MAX_DIMS];
	const struct peftio_tensor_info *ti, *ta, *tb;
	struct peftio_adapter *a;
	struct lmod *md;
	struct op *op;
	size_t i, nrepl = 0;
	int ndim = 0, d, trans;

	a = m->ads[t->ops[0].ad];
	if (shape_of(arg, t->name, &ndim, shape) != 0) {
		op = &t->ops[0];
		return peftio_error_set(err, PEFTIO_ENOTFOUND,
		    "%s: module '%s': the base has no tensor '%s'", a->path,
		    op->kind == OP_REPL ? t->name : op->kind == OP_TUNER ?
		    peftio_tuner_module(a->tuner, op->mod, NULL) :
		    a->mods[op->mod].name, t->name);
	}
	t->ndim = ndim;
	t->numel = 1;
	for (d = 0; d < ndim; d++)
		t->numel *= shape[d];
	t->rows = ndim >= 1 ? shape[0] : 1;
	t->cols = ndim >= 1 ? t->numel / (shape[0] ? shape[0] : 1) : 1;
	for (i = 0; i < t->nops; i++) {
		op = &t->ops[i];
		a = m->ads[op->ad];
		md = op->kind == OP_REPL || op->kind == OP_TUNER ? NULL :
		    &a->mods[op->mod];
		switch (op->kind) {
		case OP_TUNER:
			if (peftio_tuner_check(a->tuner, op->mod, ndim, shape,
			    err) != 0)
				return err->code;
			break;
		case OP_REPL:
			ti = peftio_adapter_tinfo(a, op->idx);
			if (ti->ndim != ndim)
				return shape_err(a, op->idx, t, "replacement",
				    err);
			for (d = 0; d < ndim; d++)
				if (ti->shape[d] != shape[d])
					return shape_err(a, op->idx, t,
					    "replacement", err);
			nrepl++;
			break;
		case OP_LORA:
			ta = peftio_adapter_tinfo(a, md->a);
			tb = peftio_adapter_tinfo(a, md->b);
			trans = md->embedding || md->fifo;
			if (ndim != 2 || (trans ? ta->shape[1] != t->rows ||
			    tb->shape[0] != t->cols : tb->shape[0] != t->rows
			    || ta->shape[1] != t->cols))
				return shape_err(a, md->a, t, md->embedding ?
				    "lora_embedding_A" : "lora_A", err);
			if (md->mag >= 0 && md->fifo)
				return peftio_error_set(err,
				    PEFTIO_EUNSUPPORTED, "%s: module '%s': "
				    "DoRA with fan_in_fan_out is not "
				    "supported", a->path, md->name);
			break;
		case OP_BIAS:
			ti = peftio_adapter_tinfo(a, md->bias);
			if (ndim != 1 || ti->shape[0] != t->rows)
				return shape_err(a, md->bias, t, "lora_B.bias",
				    err);
			break;
		case OP_IA3W:
			ti = peftio_adapter_tinfo(a, md->ia3);
			if (ndim != 2)
				return shape_err(a, md->ia3, t, "ia3_l", err);
			/* After the fan_in_fan_out transpose: [n,1] scales
			 * rows, [1,n] columns. */
			if (md->fifo ? (md->ff ? ti->numel != t->rows :
			    ti->numel != t->cols) : (md->ff ?
			    ti->numel != t->cols : ti->numel != t->rows))
				return shape_err(a, md->ia3, t, "ia3_l", err);
			break;
		case OP_IA3B:
			ti = peftio_adapter_tinfo(a, md->ia3);
			if (ndim != 1 || ti->numel != t->rows)
				return shape_err(a, md->ia3, t, "ia3_l", err);
			break;
		}
	}
	if (nrepl > 1 && m->o.method != PEFTIO_COMBINE_NONE)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' is replaced by more than one adapter "
		    "(modules_to_save); a combination cannot hold both",
		    m->ads[t->ops[0].ad]->path, t->name);
	return 0;
}

static int
plan_adapter(struct peftio_merge *m, size_t ai,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[ai];
	int combo = m->o.method != PEFTIO_COMBINE_NONE;
	uint64_t shape[PEFTIO_MAX_DIMS];
	struct op op;
	size_t i;
	int ndim, rc = 0;

	if (a->type == PEFTIO_ADAPTER_IA3 && combo)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: IA3 adapters cannot be combined with -m (PEFT's "
		    "add_weighted_adapter is LoRA only)", a->path);
	if (a->type == PEFTIO_ADAPTER_IA3 && m->w[ai] != 1.0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: IA3 vectors scale weights; they cannot be weighted",
		    a->path);
	if (a->dora && (combo || m->o.unmerge))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: DoRA adapters %s", a->path, combo ?
		    "cannot be combined with -m (the magnitude vectors do "
		    "not combine)" : "cannot be unmerged: the row norms of "
		    "the original weight are lost in the merge");
	if (a->nrepls > 0 && m->o.unmerge)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s' replaces a base tensor "
		    "(modules_to_save): it cannot be unmerged", a->path,
		    peftio_adapter_tinfo(a, a->repls[0].idx)->name);
	if (a->tuner != NULL && m->w[ai] != 1.0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: a %s adapter cannot be weighted (weights are for "
		    "LoRA combinations)", a->path,
		    peftio_tuner_type(a->tuner));
	for (i = 0; i < a->nrepls && rc == 0; i++) {
		op.kind = OP_REPL;
		op.ad = ai;
		op.mod = 0;
		op.idx = a->repls[i].idx;
		rc = add_op(m, a->repls[i].target, op);
	}
	for (i = 0; a->tuner != NULL && rc == 0 &&
	    i < peftio_tuner_nmodules(a->tuner); i++) {
		op.kind = OP_TUNER;
		op.ad = ai;
		op.mod = i;
		op.idx = -1;
		rc = add_op(m, peftio_tuner_target(a->tuner, i), op);
	}
	for (i = 0; i < a->nmods && rc == 0; i++) {
		op.ad = ai;
		op.mod = i;
		op.idx = -1;
		if (a->type == PEFTIO_ADAPTER_IA3) {
			op.kind = OP_IA3W;
			rc = add_op(m, a->mods[i].target, op);
			ndim = 0;
			if (rc == 0 && !a->mods[i].ff &&
			    shape_of(arg, a->mods[i].btarget, &ndim,
			    shape) == 0) {
				op.kind = OP_IA3B;
				rc = add_op(m, a->mods[i].btarget, op);
			}
			continue;
		}
		op.kind = OP_LORA;
		rc = add_op(m, a->mods[i].target, op);
		if (rc == 0 && a->mods[i].bias >= 0) {
			if (combo)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: module '%s': lora_B.bias cannot be "
				    "combined with -m", a->path,
				    a->mods[i].name);
			op.kind = OP_BIAS;
			rc = add_op(m, a->mods[i].btarget, op);
		}
	}
	if (rc != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	return 0;
}

/*
 * The rank PEFT gives a's part of a combination: r, or the largest
 * value of rank_pattern when that is larger (a pattern that is not a
 * rank from 1 to 2^32 counts for nothing).
 */
static uint64_t
combo_rank(const struct peftio_adapter *a)
{
	uint64_t r = a->r;
	double v;
	size_t i;

	for (i = 0; i < a->rank.n; i++) {
		v = a->rank.p[i].v;
		if (v >= 1 && v <= MAX_RANK && v == floor(v) &&
		    (uint64_t)v > r)
			r = (uint64_t)v;
	}
	return r;
}

int
peftio_merge_create(struct peftio_merge **out,
    struct peftio_adapter *const *ads, size_t nads,
    const struct peftio_merge_opts *opts,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	struct peftio_merge *m;
	size_t i, j, k;
	int rc = 0;

	*out = NULL;
	if (nads == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "no adapter");
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->w = calloc(nads, sizeof(double))) == NULL) {
		free(m);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	m->ads = ads;
	m->nads = nads;
	m->o = *opts;
	m->o.weights = NULL;
	if (m->o.nthreads == 0)
		m->o.nthreads = 1;
	if ((m->slots = calloc(m->o.nthreads, sizeof(*m->slots))) == NULL ||
	    (m->prep = calloc(1, sizeof(*m->prep))) == NULL) {
		free(m->slots);
		free(m->w);
		free(m);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	for (i = 0; i < nads; i++)
		m->w[i] = opts->weights != NULL ? opts->weights[i] : 1.0;
	/* PEFT: a single adapter always combines as "linear". */
	if (nads == 1 && m->o.method != PEFTIO_COMBINE_NONE)
		m->o.method = PEFTIO_COMBINE_LINEAR;
	for (i = 0; i < nads && m->o.method != PEFTIO_COMBINE_NONE; i++)
		if (ads[i]->tuner != NULL) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: a %s adapter cannot be combined with -m "
			    "(PEFT's add_weighted_adapter combines LoRA "
			    "adapters only)", ads[i]->path,
			    peftio_tuner_type(ads[i]->tuner));
			goto fail;
		}
	if ((unsigned)m->o.method > PEFTIO_COMBINE_MAGNITUDE_PRUNE) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "unknown combination type");
		goto fail;
	}
	switch (m->o.method) {
	case PEFTIO_COMBINE_TIES:
	case PEFTIO_COMBINE_DARE_LINEAR:
	case PEFTIO_COMBINE_DARE_TIES:
	case PEFTIO_COMBINE_MAGNITUDE_PRUNE:
		if (!(m->o.density >= 0 && m->o.density <= 1)) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "density %g is not in [0, 1]", m->o.density);
			goto fail;
		}
		/* FALLTHROUGH */
	case PEFTIO_COMBINE_LINEAR:
		for (i = 1; i < nads; i++)
			if (combo_rank(ads[i]) != combo_rank(ads[0])) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: r = %llu differs from %s's r = %llu: "
				    "combination type %s needs equal ranks "
				    "(cat and svd do not)", ads[i]->path,
				    (unsigned long long)combo_rank(ads[i]),
				    ads[0]->path,
				    (unsigned long long)combo_rank(ads[0]),
				    peftio_combine_name(m->o.method));
				goto fail;
			}
		m->newr = combo_rank(ads[0]);
		break;
	case PEFTIO_COMBINE_CAT:
		for (i = 0; i < nads; i++)
			m->newr += combo_rank(ads[i]);
		break;
	case PEFTIO_COMBINE_SVD:
		for (i = 0; i < nads; i++)
			m->newr = PEFTIO_MAX(m->newr, combo_rank(ads[i]));
		break;
	case PEFTIO_COMBINE_NONE:
		break;
	}
	/* The combined adapter keeps adapters[0]'s config with
	 * r = lora_alpha = new rank, use_rslora included (PEFT 0.21). */
	m->newscale = 1.0f;
	if (m->o.method != PEFTIO_COMBINE_NONE && ads[0]->rslora)
		m->newscale = (float)((double)m->newr / sqrt((double)m->newr));
	for (i = 0; i < nads && rc == 0; i++)
		rc = plan_adapter(m, i, shape_of, arg, err);
	if (rc != 0)
		goto fail;
	for (i = 0; i < m->nt; i++)
		if ((rc = check_target(m, &m->t[i], shape_of, arg, err)) != 0)
			goto fail;
	/* Equal ranks per module for the factor-wise combinations. */
	if (m->o.method != PEFTIO_COMBINE_NONE &&
	    m->o.method != PEFTIO_COMBINE_CAT &&
	    m->o.method != PEFTIO_COMBINE_SVD)
		for (i = 0; i < m->nt; i++)
			for (j = 0, k = (size_t)-1; j < m->t[i].nops; j++) {
				struct op *op = &m->t[i].ops[j];

				if (op->kind != OP_LORA)
					continue;
				if (k != (size_t)-1 && ads[op->ad]->mods[
				    op->mod].r != ads[m->t[i].ops[k].ad]->mods[
				    m->t[i].ops[k].mod].r) {
					rc = peftio_error_set(err,
					    PEFTIO_EINVAL, "%s: module '%s': "
					    "ranks differ between adapters; "
					    "use -m cat or -m svd",
					    ads[op->ad]->path,
					    ads[op->ad]->mods[op->mod].name);
					goto fail;
				}
				k = j;
			}
	qsort(m->t, m->nt, sizeof(*m->t), cmp_target);
	*out = m;
	return 0;
fail:
	peftio_merge_free(m);
	return rc;
}

void
peftio_merge_free(struct peftio_merge *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nt; i++) {
		free(m->t[i].name);
		free(m->t[i].ops);
	}
	if (m->slots != NULL)
		for (i = 0; i < m->o.nthreads; i++)
			peftio_scratch_free(&m->slots[i]);
	free(m->slots);
	if (m->prep != NULL)
		prep_free(m->prep);
	free(m->prep);
	free(m->t);
	free(m->w);
	free(m);
}

static struct target *
find_target(const struct peftio_merge *m, const char *name)
{
	struct target key;

	key.name = (char *)(uintptr_t)name;
	return bsearch(&key, m->t, m->nt, sizeof(*m->t), cmp_target);
}

int
peftio_merge_touches(const struct peftio_merge *m, const char *name)
{
	return find_target(m, name) != NULL;
}

size_t
peftio_merge_count(const struct peftio_merge *m)
{
	return m->nt;
}

/* Load what op needs into p. */
static int
prep_op(struct peftio_merge *m, const struct op *op, struct pop *p,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[op->ad];
	const struct lmod *md = op->kind == OP_REPL || op->kind == OP_TUNER ?
	    NULL : &a->mods[op->mod];
	const struct target *t;
	uint64_t i;
	int rc = 0;

	switch (op->kind) {
	case OP_TUNER:
		t = m->prep->t;
		rc = peftio_tuner_prepare(a->tuner, op->mod, t->rows, t->cols,
		    m->o.unmerge, &p->tp, err);
		break;
	case OP_LORA:
		if ((rc = peftio_adapter_load_f32(a, md->a, &p->a, err)) == 0 &&
		    (rc = peftio_adapter_load_f32(a, md->b, &p->b,
		    err)) == 0 && md->mag >= 0)
			rc = peftio_adapter_load_f32(a, md->mag, &p->mag, err);
		break;
	case OP_BIAS:
		rc = peftio_adapter_load_f32(a, md->bias, &p->v, err);
		break;
	case OP_IA3W:
	case OP_IA3B:
		if ((rc = peftio_adapter_load_f32(a, md->ia3, &p->v,
		    err)) == 0 &&
		    m->o.unmerge)
			for (i = 0; i < peftio_adapter_tinfo(a,
			    md->ia3)->numel; i++)
				p->v[i] = p->v[i] + 1e-8f;
		break;
	default:
		break;
	}
	return rc;
}

/* Apply op to rows [row0, row0 + nrows) of t, held in w. */
static int
op_rows(struct peftio_merge *m, const struct target *t, const struct op *op,
    const struct pop *p, float *w, uint64_t row0, uint64_t nrows,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[op->ad];
	const struct lmod *md = op->kind == OP_REPL || op->kind == OP_TUNER ?
	    NULL : &a->mods[op->mod];
	const struct peftio_tensor_info *ti;
	uint64_t i, j, k0 = row0 * t->cols, n = nrows * t->cols;
	const void *data;
	float s, d, wt = (float)m->w[op->ad];
	int rc, rowwise;

	switch (op->kind) {
	case OP_TUNER:
		peftio_tuner_rows(p->tp, w, row0, nrows);
		return 0;
	case OP_LORA:
		return peftio_merge_fold_block(m, t, md->embedding || md->fifo,
		    p->a, p->b, md->r, (float)md->scale, wt,
		    peftio_adapter_tinfo(a, md->b)->dtype, p->mag, w, row0,
		    nrows, err);
	case OP_REPL:
		ti = peftio_adapter_tinfo(a, op->idx);
		if ((rc = peftio_ckpt_data(a->ck, (size_t)op->idx, &data,
		    err)) != 0)
			return rc;
		return peftio_to_f32(ti->dtype, (const char *)data + k0 *
		    (peftio_dtype_bits(ti->dtype) / 8), w, n);
	case OP_BIAS:
		s = (float)md->scale;
		for (i = 0; i < n; i++) {
			d = p->v[k0 + i] * s;
			if (m->w[op->ad] != 1.0)
				d *= wt;
			w[i] = m->o.unmerge ? w[i] - d : w[i] + d;
		}
		return 0;
	case OP_IA3W:
	case OP_IA3B:
		rowwise = op->kind == OP_IA3B || (md->fifo ? md->ff : !md->ff);
		for (i = 0; i < nrows; i++)
			for (j = 0; j < t->cols; j++) {
				float l = rowwise ? p->v[row0 + i] : p->v[j];

				if (m->o.unmerge)
					w[i * t->cols + j] /= l;
				else
					w[i * t->cols + j] *= l;
			}
		return 0;
	default:
		return 0;
	}
}

static void
prep_free(struct prep *pr)
{
	size_t j;

	if (pr->pops != NULL)
		for (j = 0; j < pr->t->nops; j++) {
			free(pr->pops[j].a);
			free(pr->pops[j].b);
			free(pr->pops[j].mag);
			free(pr->pops[j].v);
			peftio_tuner_prep_free(pr->pops[j].tp);
		}
	free(pr->pops);
	free(pr->ca);
	free(pr->cb);
	memset(pr, 0, sizeof(*pr));
}

int
peftio_merge_begin(struct peftio_merge *m, const char *name, uint64_t numel,
    struct peftio_error *err)
{
	const struct target *t = find_target(m, name);
	struct prep *pr = m->prep;
	size_t j;
	int rc = 0;

	prep_free(pr);
	if (t == NULL)
		return 0;
	if (numel != t->numel)
		return peftio_error_set(err, PEFTIO_EMISMATCH,
		    "tensor '%s': %llu values, the plan has %llu", name,
		    (unsigned long long)numel, (unsigned long long)t->numel);
	pr->t = t;
	if ((pr->pops = calloc(t->nops ? t->nops : 1, sizeof(*pr->pops))) ==
	    NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (m->o.method == PEFTIO_COMBINE_NONE) {
		for (j = 0; j < t->nops && rc == 0; j++)
			rc = prep_op(m, &t->ops[j], &pr->pops[j], err);
	} else if (rc == 0) {
		rc = peftio_combine_factors(m, t, pr, err);
		pr->comb = rc == 0;
		if (rc == 1)
			rc = 0;
	}
	if (rc != 0)
		prep_free(pr);
	return rc;
}

int
peftio_merge_rows(struct peftio_merge *m, float *w, uint64_t row0,
    uint64_t nrows, enum peftio_dtype round_dt, struct peftio_error *err)
{
	const struct prep *pr = m->prep;
	const struct target *t = pr->t;
	size_t j, prev = (size_t)-1;
	int rc = 0;

	if (t == NULL)
		return 0;
	if (row0 % ROW_CHUNK != 0 || row0 > t->rows ||
	    nrows > t->rows - row0 ||
	    (nrows % ROW_CHUNK != 0 && row0 + nrows != t->rows))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "tensor '%s': rows %llu+%llu are not a block of %u",
		    t->name, (unsigned long long)row0,
		    (unsigned long long)nrows, PEFTIO_MERGE_ROWS);
	if (m->o.method == PEFTIO_COMBINE_NONE) {
		for (j = 0; j < t->nops && rc == 0; j++) {
			/* PEFT stores each adapter's result in the
			 * weight's dtype before the next one. */
			if (prev != (size_t)-1 && t->ops[j].ad != prev)
				peftio_round_through(round_dt, w,
				    nrows * t->cols);
			prev = t->ops[j].ad;
			rc = op_rows(m, t, &t->ops[j], &pr->pops[j], w, row0,
			    nrows, err);
		}
		return rc;
	}
	for (j = 0; j < t->nops && rc == 0; j++)
		if (t->ops[j].kind == OP_REPL)
			rc = op_rows(m, t, &t->ops[j], &pr->pops[j], w, row0,
			    nrows, err);
	if (rc == 0 && pr->comb)
		rc = peftio_merge_fold_block(m, t, pr->ctrans, pr->ca, pr->cb,
		    pr->cr,
		    m->newscale, 1.0f, PEFTIO_F32, NULL, w, row0, nrows, err);
	return rc;
}

void
peftio_merge_end(struct peftio_merge *m)
{
	prep_free(m->prep);
}

int
peftio_merge_apply(struct peftio_merge *m, const char *name, float *w,
    uint64_t numel, enum peftio_dtype round_dt, struct peftio_error *err)
{
	int rc;

	if ((rc = peftio_merge_begin(m, name, numel, err)) == 0 &&
	    m->prep->t != NULL)
		rc = peftio_merge_rows(m, w, 0, m->prep->t->rows, round_dt,
		    err);
	peftio_merge_end(m);
	return rc;
}
