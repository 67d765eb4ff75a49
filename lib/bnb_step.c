/*
 * bnb_step.c - one bitsandbytes weight as a step of a transform: what
 * quantizing (4-bit or LLM.int8) or dequantizing it writes, planned as
 * transformers does it (GPT-2's Conv1D weights transposed), declared,
 * computed into the transform's job slots, and checked by
 * peftio_transform_index().  nf4-quant is a table of these steps;
 * lora-merge --requant quantizes its merged weights with them.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* Values dequantized and written at a time (then rounded to the part
 * alignment): two pieces are held, not two tensors. */
#define DEQ_PIECE	(8u << 20)

/* Nested blocks (of 256 absmax) a thread double-quantizes at a time. */
#define DQ_GRAIN	64

/* The slot's buffers for a 4-bit weight: codes, absmax, and two for
 * double quantization; for an 8-bit weight: codes and SCB. */
enum { B_PACKED, B_ABSMAX, B_DQ };
enum { B8_CODES, B8_SCB };

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static int
nomem(struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
}

/* ------------------------------------------------------------------ */
/* Plans                                                               */

int
peftio_bnb_step_quantize(struct peftio_bnb_step *s, struct peftio_ckpt *c,
    size_t i, const struct peftio_bnb_quant_opts *o,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i);
	uint64_t shape[2];

	memset(s, 0, sizeof(*s));
	s->quant = 1;
	s->eight = o->eight;
	/* transformers transposes GPT-2's Conv1D weights to [out, in]
	 * when it quantizes them. */
	s->transpose = ti->ndim == 2 && peftio_conv1d_weight(ti->name);
	peftio_bnb_plan(&s->bo.qs, ti, o->type, o->blocksize,
	    o->double_quant, o->dtype >= 0 ? (enum peftio_dtype)o->dtype :
	    ti->dtype);
	s->bo.storage = o->storage;
	if (s->transpose) {
		s->bo.qs.shape[0] = ti->shape[1];
		s->bo.qs.shape[1] = ti->shape[0];
	}
	if (o->eight) {
		if (ti->ndim != 2)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': 8-bit quantization needs a 2-D "
			    "weight, not %d-D", peftio_ckpt_path(c), ti->name,
			    ti->ndim);
		s->bw8.rows = s->bo.qs.shape[0];
		s->bw8.cols = s->bo.qs.shape[1];
	} else if (peftio_bnb_storage_shape(o->storage, ti->numel, shape,
	    err) != 0) {
		peftio_error_prefix(err, "%s: tensor '%s'",
		    peftio_ckpt_path(c), ti->name);
		return err->code;
	}
	return 0;
}

void
peftio_bnb_step_dequantize(struct peftio_bnb_step *s, struct peftio_ckpt *c,
    const struct peftio_bnb_weight *bw, const struct peftio_bnb8_weight *bw8,
    int dtype)
{
	const char *name;

	memset(s, 0, sizeof(*s));
	if (bw8 != NULL) {
		s->eight = 1;
		s->bw8 = *bw8;
		s->dt = dtype >= 0 ? (enum peftio_dtype)dtype :
		    peftio_bnb8_dtype(c);
		name = peftio_ckpt_tensor(c, bw8->weight)->name;
		s->transpose = peftio_conv1d_weight(name);
		s->ndim = 2;
		s->shape[0] = s->transpose ? bw8->cols : bw8->rows;
		s->shape[1] = s->transpose ? bw8->rows : bw8->cols;
		return;
	}
	s->bw = *bw;
	s->dt = dtype >= 0 ? (enum peftio_dtype)dtype : bw->qs.dtype;
	name = peftio_ckpt_tensor(c, bw->weight)->name;
	s->transpose = bw->qs.ndim == 2 && peftio_conv1d_weight(name);
	s->ndim = bw->qs.ndim;
	memcpy(s->shape, bw->qs.shape, sizeof(s->shape));
	if (s->transpose) {
		s->shape[0] = bw->qs.shape[1];
		s->shape[1] = bw->qs.shape[0];
	}
}

void
peftio_bnb_step_free(struct peftio_bnb_step *s)
{
	peftio_bnb_out_free(&s->bo);
	free(s->absmax);
	s->absmax = NULL;
}

/* ------------------------------------------------------------------ */
/* The double-quantization offset                                      */

int
peftio_bnb_offset_mem(struct peftio_quant_state *qs, const void *vals,
    unsigned nthreads, struct peftio_error *err)
{
	uint64_t nb = ceil_div(qs->numel, qs->blocksize);
	uint8_t *packed;
	float *am;

	packed = malloc((qs->numel + 1) / 2);
	am = malloc(nb ? nb * sizeof(float) : 1);
	if (packed == NULL || am == NULL) {
		free(packed);
		free(am);
		return nomem(err);
	}
	peftio_bnb_quantize_mem(qs, vals, packed, am, nthreads);
	qs->nested_offset = peftio_dq_offset(am, nb);
	free(packed);
	free(am);
	return 0;
}

int
peftio_bnb_step_offset(struct peftio_bnb_step *s, struct peftio_ckpt *c,
    size_t i, int check, struct peftio_bnb_buffers *buf, unsigned nthreads,
    struct peftio_error *err)
{
	const void *v;
	int rc;

	if (!s->quant || s->eight || !s->bo.qs.double_quant)
		return 0;
	if (!s->transpose)
		rc = peftio_bnb_offset(c, i, &s->bo, s->absmax, check,
		    nthreads, buf, err);
	else if ((rc = peftio_bnb_values(c, i, 1, s->bo.qs.dtype, check,
	    buf->whole, &v, err)) == 0)
		rc = peftio_bnb_offset_mem(&s->bo.qs, v, nthreads, err);
	peftio_ckpt_release(c, i);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Declaring and checking                                              */

int
peftio_bnb_step_declare(struct peftio_xf *x, size_t i, size_t shard,
    struct peftio_bnb_step *s, struct peftio_error *err)
{
	const char *name = peftio_ckpt_tensor(peftio_xf_input(x), i)->name;

	if (s->quant && s->eight)
		return peftio_bnb8_declare(peftio_xf_writer(x), shard,
		    name, s->bw8.rows, s->bw8.cols, err);
	if (s->quant)
		return peftio_bnb_declare(peftio_xf_writer(x), shard, name,
		    &s->bo, err);
	return peftio_xf_declare(x, i, name, s->dt, s->ndim, s->shape, err);
}

int
peftio_bnb_step_expect(struct peftio_xf_check *chk, size_t i,
    const struct peftio_bnb_step *s, struct peftio_error *err)
{
	const char *name = peftio_ckpt_tensor(peftio_xf_check_input(chk),
	    i)->name;

	if (s->quant && s->eight)
		return peftio_bnb8_expect(chk, i, name, s->bw8.rows,
		    s->bw8.cols, err);
	if (s->quant)
		return peftio_bnb_expect(chk, i, name, &s->bo, err);
	return peftio_xf_expect(chk, i, name, s->dt, s->ndim, s->shape, err);
}

/* ------------------------------------------------------------------ */
/* Computing                                                           */

/* A 4-bit weight's codes, and its absmax as slot_dq() left them. */
static int
write_quant(struct peftio_xf_job *j)
{
	const struct peftio_bnb_step *s = j->ctx;

	if (!s->bo.qs.double_quant)
		return peftio_bnb_write_stored(j->w, j->name, &s->bo, j->data,
		    j->buf[B_ABSMAX].p, NULL, &j->err);
	return peftio_bnb_write_stored(j->w, j->name, &s->bo, j->data,
	    j->buf[B_DQ].p, j->buf[B_DQ + 1].p, &j->err);
}

static int
write_quant8(struct peftio_xf_job *j)
{
	const struct peftio_bnb_step *s = j->ctx;

	return peftio_bnb8_write(j->w, j->name, j->buf[B8_CODES].p,
	    j->buf[B8_SCB].p, s->bw8.rows, s->bw8.cols, &j->err);
}

struct dq {
	const struct peftio_quant_state *qs;
	const float	*absmax;
	uint64_t	 nb;
	uint8_t		*codes;
	float		*nested;
};

static void
dq_range(void *arg, uint64_t b, uint64_t e)
{
	struct dq *d = arg;

	peftio_dq_quantize_blocks(d->absmax, d->nb, d->qs->nested_blocksize,
	    d->qs->nested_offset, b, e, d->codes, d->nested);
}

/*
 * The double quantization of a 4-bit weight's absmax into the slot, by
 * the caller's threads with the offset found before (the one its
 * quant_state records), so that the writer only writes.
 */
static int
slot_dq(struct peftio_xf_job *j, const struct peftio_quant_state *qs,
    const float *absmax, unsigned nthreads, struct peftio_error *err)
{
	struct dq d;
	uint64_t nnb;

	if (!qs->double_quant)
		return 0;
	d.qs = qs;
	d.absmax = absmax;
	d.nb = ceil_div(qs->numel, qs->blocksize);
	nnb = ceil_div(d.nb, qs->nested_blocksize);
	d.codes = peftio_scratch(&j->buf[B_DQ], d.nb ? d.nb : 1);
	d.nested = peftio_scratch(&j->buf[B_DQ + 1], nnb ? nnb *
	    sizeof(float) : 1);
	if (d.codes == NULL || d.nested == NULL)
		return nomem(err);
	peftio_parallel_for(nthreads, nnb, DQ_GRAIN, dq_range, &d);
	return 0;
}

/* The codes and absmax of a 4-bit weight in a slot. */
static int
slot_quant(struct peftio_xf_job *j, const struct peftio_quant_state *qs,
    uint8_t **packed, float **absmax, struct peftio_error *err)
{
	uint64_t nb = ceil_div(qs->numel, qs->blocksize);

	/* The codes in memory as in the file: written with no copy. */
	*packed = peftio_scratch_placed(&j->buf[B_PACKED], (qs->numel + 1) / 2,
	    peftio_ckptw_start(j->w, j->name));
	j->data = *packed;
	*absmax = peftio_scratch(&j->buf[B_ABSMAX], nb * sizeof(float));
	return *packed == NULL || *absmax == NULL ? nomem(err) : 0;
}

int
peftio_bnb_step_quantize_mem(struct peftio_xf *x, const char *name,
    const struct peftio_bnb_step *s, const void *vals, unsigned nthreads,
    struct peftio_error *err)
{
	struct peftio_xf_job *j = peftio_xf_slot(x);
	uint64_t rows = s->bw8.rows, cols = s->bw8.cols;
	uint8_t *packed;
	float *absmax, *scb;
	int8_t *codes;
	int rc;

	j->ctx = (void *)s;
	j->name = name;
	if (s->eight) {
		codes = peftio_scratch(&j->buf[B8_CODES], rows * cols);
		scb = peftio_scratch(&j->buf[B8_SCB], rows * sizeof(float));
		if (codes == NULL || scb == NULL)
			return nomem(err);
		if ((rc = peftio_bnb8_quantize(s->bo.qs.dtype, vals, rows,
		    cols, codes, scb, nthreads, err)) != 0)
			return rc;
		return peftio_xf_submit(x, write_quant8, err);
	}
	if ((rc = slot_quant(j, &s->bo.qs, &packed, &absmax, err)) != 0)
		return rc;
	peftio_bnb_quantize_mem(&s->bo.qs, vals, packed, absmax, nthreads);
	if ((rc = slot_dq(j, &s->bo.qs, absmax, nthreads, err)) != 0)
		return rc;
	return peftio_xf_submit(x, write_quant, err);
}

/*
 * Tensor i quantized.  A 4-bit weight stored as it is quantized is read
 * a piece at a time by the codec; a transposed one and an 8-bit one
 * (bitsandbytes' Int8Params: the weight cast to float16, row-wise
 * absmax) are whole in memory.
 */
static int
quantize(struct peftio_xf *x, size_t i, const struct peftio_bnb_step *s,
    int check, struct peftio_bnb_buffers *buf, unsigned nthreads,
    struct peftio_error *err)
{
	struct peftio_ckpt *c = peftio_xf_input(x);
	const char *name = peftio_ckpt_tensor(c, i)->name;
	struct peftio_xf_job *j;
	uint8_t *packed;
	float *absmax;
	const void *v;
	int rc;

	/* The offset's pass looked for NaN and Inf already. */
	if (!s->eight && s->bo.qs.double_quant)
		check = 0;
	if (s->eight || s->transpose) {
		if ((rc = peftio_bnb_values(c, i, s->transpose,
		    s->bo.qs.dtype, check, buf->whole, &v, err)) == 0)
			rc = peftio_bnb_step_quantize_mem(x, name, s, v,
			    nthreads, err);
		peftio_ckpt_release(c, i);
		return rc;
	}
	j = peftio_xf_slot(x);
	j->ctx = (void *)s;
	j->name = name;
	if ((rc = slot_quant(j, &s->bo.qs, &packed, &absmax, err)) != 0 ||
	    (rc = peftio_bnb_pass(c, i, &s->bo.qs, packed, absmax, s->absmax,
	    check, nthreads, buf, err)) != 0 ||
	    (rc = slot_dq(j, &s->bo.qs, absmax, nthreads, err)) != 0)
		return rc;
	return peftio_xf_submit(x, write_quant, err);
}

/* Tensor i dequantized, a piece at a time; a transposed weight (back to
 * GPT-2's [in, out]) whole. */
static int
dequantize(struct peftio_xf *x, size_t i, const struct peftio_bnb_step *s,
    struct peftio_bnb_buffers *buf, unsigned nthreads,
    struct peftio_error *err)
{
	struct peftio_ckpt *c = peftio_xf_input(x);
	const char *name = peftio_ckpt_tensor(c, i)->name;
	uint64_t al, e0, n, nb, piece, total;
	size_t es = peftio_dtype_bits(s->dt) / 8;
	struct peftio_xf_job *j;
	void *vals, *out;
	int rc = 0;

	if (s->eight) {
		/* whole rows */
		al = s->bw8.cols;
		total = s->bw8.rows * s->bw8.cols;
	} else {
		al = peftio_bnb_part_align(&s->bw);
		total = s->bw.qs.numel;
	}
	piece = DEQ_PIECE > al ? DEQ_PIECE / al * al : al;
	if (s->transpose) {
		j = peftio_xf_slot(x);
		j->name = name;
		if ((vals = peftio_scratch(&buf->whole[0], total * es)) == NULL)
			rc = nomem(err);
		else
			rc = s->eight ? peftio_bnb8_dequantize(c, &s->bw8,
			    s->dt, vals, nthreads, err) : peftio_bnb_dequantize(
			    c, &s->bw, s->dt, vals, nthreads, err);
		if (rc == 0 && (out = peftio_xf_job_buffer(j, 0, total * es)) ==
		    NULL)
			rc = nomem(err);
		if (rc == 0) {
			peftio_transpose(vals, out, s->shape[1], s->shape[0],
			    es);
			rc = peftio_xf_submit(x, peftio_xf_job_write, err);
		}
		peftio_ckpt_release(c, i);
		return rc;
	}
	for (e0 = 0; e0 < total && rc == 0; e0 += n) {
		n = PEFTIO_MIN(piece, total - e0);
		j = peftio_xf_slot(x);
		j->name = name;
		peftio_dtype_nbytes(s->dt, n, &nb);
		if ((vals = peftio_xf_job_buffer(j, e0 * es, nb)) == NULL)
			rc = nomem(err);
		else
			rc = s->eight ? peftio_bnb8_dequantize_part(c, &s->bw8,
			    s->dt, vals, e0 / al, n / al, nthreads, err) :
			    peftio_bnb_dequantize_part(c, &s->bw, s->dt, vals,
			    e0, n, nthreads, err);
		if (rc == 0)
			rc = peftio_xf_submit(x, peftio_xf_job_write, err);
	}
	peftio_ckpt_release(c, i);
	return rc;
}

int
peftio_bnb_step_compute(struct peftio_xf *x, size_t i,
    const struct peftio_bnb_step *s, int check, struct peftio_bnb_buffers *buf,
    unsigned nthreads, struct peftio_error *err)
{
	if (s->quant)
		return quantize(x, i, s, check, buf, nthreads, err);
	return dequantize(x, i, s, buf, nthreads, err);
}

/* ------------------------------------------------------------------ */
/* The steps of a whole model                                          */

/* A tensor not quantized or dequantized: a model float converted to
 * dtype (-1: kept), anything else copied. */
static void
plan_plain(struct peftio_ckpt *c, size_t i, int dtype,
    struct peftio_xf_item *xi)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i);

	xi->act = PEFTIO_XF_COPY;
	if (dtype >= 0 && peftio_dtype_is_model_float(ti->dtype) &&
	    ti->dtype != (enum peftio_dtype)dtype) {
		xi->act = PEFTIO_XF_CONVERT;
		xi->dt = (enum peftio_dtype)dtype;
	}
}

/* 4-bit and 8-bit weights dequantized, their companions not written. */
static long
plan_dequant(struct peftio_ckpt *c, int dtype, struct peftio_xf_item *xi,
    struct peftio_bnb_step *steps, struct peftio_error *err)
{
	size_t i, n = peftio_ckpt_count(c);
	struct peftio_bnb_weight *bw;
	struct peftio_bnb8_weight *bw8;
	long nw;

	bw = calloc(n + 1, sizeof(*bw));
	bw8 = calloc(n + 1, sizeof(*bw8));
	if (bw == NULL || bw8 == NULL) {
		free(bw);
		free(bw8);
		return nomem(err);
	}
	if ((nw = peftio_bnb_group(c, xi, bw, bw8, err)) >= 0)
		for (i = 0; i < n; i++) {
			if (xi[i].act == PEFTIO_XF_COPY)
				plan_plain(c, i, dtype, &xi[i]);
			else if (peftio_ckpt_tensor(c, i)->dtype == PEFTIO_I8)
				peftio_bnb_step_dequantize(&steps[i], c, NULL,
				    &bw8[i], dtype);
			else
				peftio_bnb_step_dequantize(&steps[i], c,
				    &bw[i], NULL, dtype);
		}
	free(bw);
	free(bw8);
	return nw;
}

long
peftio_bnb_steps_plan(struct peftio_ckpt *c, int decode,
    const struct peftio_bnb_quant_opts *o, const char *const *include,
    size_t ninclude, const char *const *exclude, size_t nexclude,
    struct peftio_xf_item *xi, struct peftio_bnb_step *steps,
    struct peftio_error *err)
{
	size_t i, n = peftio_ckpt_count(c);
	long nq = 0;
	int rc;

	if (decode)
		return plan_dequant(c, o->dtype, xi, steps, err);
	if ((rc = peftio_check_unquantized(c, err)) != 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (!peftio_quant_selected(peftio_ckpt_tensor(c, i), include,
		    ninclude, exclude, nexclude)) {
			plan_plain(c, i, o->dtype, &xi[i]);
			continue;
		}
		xi[i].act = PEFTIO_XF_CUSTOM;
		if ((rc = peftio_bnb_step_quantize(&steps[i], c, i, o,
		    err)) != 0)
			return rc;
		nq++;
	}
	return nq;
}

int
peftio_bnb_steps_offsets(struct peftio_ckpt *c,
    const struct peftio_xf_item *xi, struct peftio_bnb_step *steps,
    int check, struct peftio_bnb_buffers *buf, unsigned nthreads,
    peftio_progress_fn progress, void *progress_arg,
    struct peftio_error *err)
{
	size_t i, n = peftio_ckpt_count(c);
	uint64_t done = 0, total = 0, room = 0, need;
	struct peftio_bnb_step *s;
	int rc;

	/* The absmax found here are kept for the quantizing pass, as long
	 * as they take no more memory than the largest tensor. */
	for (i = 0; i < n; i++) {
		room = PEFTIO_MAX(room, peftio_ckpt_tensor(c, i)->nbytes);
		if (xi[i].act == PEFTIO_XF_CUSTOM && !steps[i].eight)
			total += peftio_ckpt_tensor(c, i)->nbytes;
	}
	for (i = 0; i < n; i++) {
		s = &steps[i];
		if (xi[i].act != PEFTIO_XF_CUSTOM || s->eight)
			continue;
		need = ceil_div(s->bo.qs.numel, s->bo.qs.blocksize) *
		    sizeof(float);
		if (s->quant && s->bo.qs.double_quant && !s->transpose &&
		    s->absmax == NULL && need > 0 && need <= room &&
		    (s->absmax = malloc(need)) != NULL)
			room -= need;
		if (progress != NULL)
			progress(progress_arg, done, total,
			    peftio_ckpt_tensor(c, i)->name);
		done += peftio_ckpt_tensor(c, i)->nbytes;
		if ((rc = peftio_bnb_step_offset(&steps[i], c, i, check, buf,
		    nthreads, err)) != 0)
			return rc;
	}
	if (progress != NULL)
		progress(progress_arg, total, total, NULL);
	return 0;
}
