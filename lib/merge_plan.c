/*
 * merge_plan.c - what merging adapters into a base writes for each base
 * tensor, as PEFT's merge_and_unload() leaves the model: merged tensors
 * in the base's dtype (or another), 4-bit and 8-bit weights dequantized
 * with their companions dropped, or with --requant quantized again
 * (those the merge leaves alone keep their bytes); and the transform
 * hooks that write it, a block of rows at a time.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

int
peftio_merge_plan_init(struct peftio_merge_plan *p, struct peftio_ckpt *base,
    int dtype, int requant, struct peftio_error *err)
{
	struct peftio_merge_item *it;
	size_t i;
	long nw;

	memset(p, 0, sizeof(*p));
	p->base = base;
	p->n = peftio_ckpt_count(base);
	p->dtype = dtype;
	p->requant = requant;
	p->xi = calloc(p->n + 1, sizeof(*p->xi));
	p->items = calloc(p->n + 1, sizeof(*p->items));
	p->bw = calloc(p->n + 1, sizeof(*p->bw));
	p->bw8 = calloc(p->n + 1, sizeof(*p->bw8));
	if (p->xi == NULL || p->items == NULL || p->bw == NULL ||
	    p->bw8 == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	/* 4-bit weights are dequantized, their companions not written. */
	if ((nw = peftio_bnb_group(base, p->xi, p->bw, p->bw8, err)) < 0)
		return (int)nw;
	for (i = 0; i < p->n; i++) {
		if (p->xi[i].act != PEFTIO_XF_CUSTOM)
			continue;
		it = &p->items[i];
		/* An 8-bit base does not record its dtype. */
		if (peftio_ckpt_tensor(base, i)->dtype == PEFTIO_I8)
			it->bw8 = &p->bw8[i];
		else
			it->bw = &p->bw[i];
		it->act = PEFTIO_MERGE_DEQUANT;
		it->dt = dtype >= 0 ? (enum peftio_dtype)dtype :
		    it->bw8 != NULL ? peftio_bnb8_dtype(base) :
		    p->bw[i].qs.dtype;
	}
	p->quantized = nw > 0;
	return 0;
}

int
peftio_merge_plan_shape(void *plan, const char *name, int *ndim,
    uint64_t *shape)
{
	struct peftio_merge_plan *p = plan;
	const struct peftio_tensor_info *ti;
	long i = peftio_ckpt_find(p->base, name);
	int d;

	if (i < 0 || p->xi[i].act == PEFTIO_XF_SKIP)
		return -1;
	if (p->items[i].bw != NULL) {
		*ndim = p->bw[i].qs.ndim;
		for (d = 0; d < *ndim; d++)
			shape[d] = p->bw[i].qs.shape[d];
		return 0;
	}
	ti = peftio_ckpt_tensor(p->base, (size_t)i);
	*ndim = ti->ndim;
	for (d = 0; d < ti->ndim; d++)
		shape[d] = ti->shape[d];
	return 0;
}

/* A 4-bit or 8-bit weight the merge leaves alone keeps its bytes. */
static void
keep_quantized(struct peftio_merge_plan *p, const struct peftio_merge_item *it)
{
	const struct peftio_bnb_weight *bw = it->bw;
	const struct peftio_bnb8_weight *bw8 = it->bw8;

	if (bw8 != NULL) {
		p->xi[bw8->weight].act = PEFTIO_XF_COPY;
		p->xi[bw8->scb].act = PEFTIO_XF_COPY;
		if (bw8->format >= 0)
			p->xi[bw8->format].act = PEFTIO_XF_COPY;
		return;
	}
	p->xi[bw->weight].act = PEFTIO_XF_COPY;
	p->xi[bw->quant_state].act = PEFTIO_XF_COPY;
	p->xi[bw->absmax].act = PEFTIO_XF_COPY;
	p->xi[bw->quant_map].act = PEFTIO_XF_COPY;
	if (bw->qs.double_quant) {
		p->xi[bw->nested_absmax].act = PEFTIO_XF_COPY;
		p->xi[bw->nested_quant_map].act = PEFTIO_XF_COPY;
	}
}

/* Quantized again as the base was: 4-bit with its quant_state (in the
 * merge's dtype), 8-bit as Int8Params does (PEFT re-quantizes a merged
 * Linear8bitLt that way). */
static void
plan_requant(struct peftio_merge_plan *p, struct peftio_merge_item *it)
{
	struct peftio_bnb_step *s = &it->step;

	it->act = PEFTIO_MERGE_REQUANT;
	s->quant = 1;
	if (it->bw8 != NULL) {
		s->eight = 1;
		s->bw8 = *it->bw8;
		s->bo.qs.dtype = it->dt;
		return;
	}
	s->bo.qs = it->bw->qs;
	if (p->dtype >= 0)
		s->bo.qs.dtype = (enum peftio_dtype)p->dtype;
}

int
peftio_merge_plan_apply(struct peftio_merge_plan *p,
    const struct peftio_merge *m, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_merge_item *it;
	size_t i;

	for (i = 0; i < p->n; i++) {
		it = &p->items[i];
		ti = peftio_ckpt_tensor(p->base, i);
		if (p->xi[i].act == PEFTIO_XF_SKIP)
			continue;
		it->touched = peftio_merge_touches(m, ti->name);
		p->nmerged += it->touched;
		if (it->bw != NULL || it->bw8 != NULL) {
			if (p->requant && !it->touched)
				keep_quantized(p, it);
			else if (p->requant)
				plan_requant(p, it);
			continue;
		}
		if (it->touched) {
			if (!peftio_dtype_is_model_float(ti->dtype))
				return peftio_error_set(err,
				    PEFTIO_EUNSUPPORTED, "%s: tensor '%s': %s "
				    "weights cannot be merged",
				    peftio_ckpt_path(p->base), ti->name,
				    peftio_dtype_name(ti->dtype));
			p->xi[i].act = PEFTIO_XF_CUSTOM;
			it->act = PEFTIO_MERGE_WRITE;
			it->dt = p->dtype >= 0 ? (enum peftio_dtype)p->dtype :
			    ti->dtype;
		} else if (p->dtype >= 0 &&
		    peftio_dtype_is_model_float(ti->dtype) &&
		    ti->dtype != (enum peftio_dtype)p->dtype) {
			p->xi[i].act = PEFTIO_XF_CONVERT;
			p->xi[i].dt = (enum peftio_dtype)p->dtype;
		}
	}
	if (p->requant && !p->quantized)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: --requant needs a 4-bit or 8-bit base",
		    peftio_ckpt_path(p->base));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Computing a tensor                                                  */

/* --requant: the whole merged tensor, to be quantized again. */
static void *
whole_buffer(void *arg, uint64_t offset, uint64_t nbytes)
{
	struct peftio_merge_plan *p = arg;

	return (char *)p->whole.p + offset;
}

/* The whole merged tensor i, in the dtype it is quantized from, into
 * p->whole. */
static int
merge_whole(struct peftio_merge_plan *p, struct peftio_merge_stream *ms,
    size_t i, struct peftio_error *err)
{
	const struct peftio_merge_item *it = &p->items[i];
	struct peftio_merge_out out = { whole_buffer, NULL, p };
	uint64_t nbytes;

	peftio_dtype_nbytes(it->step.bo.qs.dtype, it->bw8 != NULL ?
	    peftio_ckpt_tensor(p->base, i)->numel : it->bw->qs.numel, &nbytes);
	if (peftio_scratch(&p->whole, nbytes) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	return peftio_merge_stream_tensor(ms, p->base, i, it->bw, it->bw8,
	    it->step.bo.qs.dtype, &out, err);
}

int
peftio_merge_plan_offsets(struct peftio_merge_plan *p,
    struct peftio_merge_stream *ms, unsigned nthreads,
    peftio_progress_fn progress, void *ctx, struct peftio_error *err)
{
	struct peftio_merge_item *it;
	size_t i;
	int rc;

	for (i = 0; i < p->n; i++) {
		it = &p->items[i];
		if (it->act != PEFTIO_MERGE_REQUANT || it->step.eight ||
		    !it->step.bo.qs.double_quant)
			continue;
		if (progress != NULL)
			progress(ctx, i, p->n,
			    peftio_ckpt_tensor(p->base, i)->name);
		if ((rc = merge_whole(p, ms, i, err)) != 0 ||
		    (rc = peftio_bnb_offset_mem(&it->step.bo.qs, p->whole.p,
		    nthreads, err)) != 0)
			return rc;
	}
	if (progress != NULL)
		progress(ctx, p->n, p->n, NULL);
	return 0;
}

int
peftio_merge_plan_declare(struct peftio_xf *x, size_t i,
    struct peftio_merge_plan *p, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(p->base, i);
	struct peftio_merge_item *it = &p->items[i];

	if (it->act == PEFTIO_MERGE_REQUANT)
		return peftio_bnb_step_declare(x, i, p->xi[i].shard, &it->step,
		    err);
	/* an 8-bit weight's shape is its stored one */
	if (it->act == PEFTIO_MERGE_DEQUANT && it->bw != NULL)
		return peftio_xf_declare(x, i, ti->name, it->dt,
		    it->bw->qs.ndim, it->bw->qs.shape, err);
	return peftio_xf_declare(x, i, ti->name, it->dt, ti->ndim, ti->shape,
	    err);
}

/* Merged blocks go to the output writer, a job each. */
struct stream_out {
	struct peftio_xf	*x;
	const char		*name;
};

static void *
job_buffer(void *arg, uint64_t offset, uint64_t nbytes)
{
	struct stream_out *so = arg;
	struct peftio_xf_job *j = peftio_xf_slot(so->x);

	j->name = so->name;
	return peftio_xf_job_buffer(j, offset, nbytes);
}

static int
job_put(void *arg, struct peftio_error *err)
{
	struct stream_out *so = arg;

	return peftio_xf_submit(so->x, peftio_xf_job_write, err);
}

int
peftio_merge_plan_compute(struct peftio_xf *x, size_t i,
    struct peftio_merge_plan *p, struct peftio_merge_stream *ms,
    unsigned nthreads, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(p->base, i);
	struct peftio_merge_item *it = &p->items[i];
	struct stream_out so = { x, ti->name };
	struct peftio_merge_out out = { job_buffer, job_put, &so };
	int rc;

	if (it->act != PEFTIO_MERGE_REQUANT)
		return peftio_merge_stream_tensor(ms, p->base, i, it->bw,
		    it->bw8, it->dt, &out, err);
	if ((rc = merge_whole(p, ms, i, err)) != 0)
		return rc;
	return peftio_bnb_step_quantize_mem(x, ti->name, &it->step,
	    p->whole.p, nthreads, err);
}

void
peftio_merge_plan_free(struct peftio_merge_plan *p)
{
	size_t i;

	if (p->items != NULL)
		for (i = 0; i < p->n; i++)
			peftio_bnb_step_free(&p->items[i].step);
	peftio_scratch_free(&p->whole);
	free(p->items);
	free(p->bw);
	free(p->bw8);
	free(p->xi);
	memset(p, 0, sizeof(*p));
}
