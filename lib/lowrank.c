/*
 * lowrank.c - the arithmetic of the merge: adapter tensors in f32,
 * products of LoRA factors B A computed in fixed blocks of rows over
 * the threads, and folded into a weight with PEFT's scaling, DoRA
 * norms and rounding through the adapter's dtype.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"

static int
is_16bit(enum peftio_dtype dt)
{
	return dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

/* Round n values through dt and back (what storing in dt does). */
void
peftio_round_through(enum peftio_dtype dt, float *w, uint64_t n)
{
	uint16_t tmp[256];
	uint64_t i, c;

	if (!is_16bit(dt))
		return;
	for (i = 0; i < n; i += c) {
		c = PEFTIO_MIN(n - i, 256);
		peftio_from_f32(dt, w + i, tmp, c);
		peftio_to_f32(dt, tmp, w + i, c);
	}
}


/* ------------------------------------------------------------------ */
/* Arithmetic                                                          */

int
peftio_adapter_load_f32(struct peftio_adapter *a, long idx, float **out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_adapter_tinfo(a, idx);
	const void *data;
	int rc;

	*out = NULL;
	if ((rc = peftio_ckpt_data(a->ck, (size_t)idx, &data, err)) != 0)
		return rc;
	if ((*out = malloc((ti->numel ? ti->numel : 1) * sizeof(float)))
	    == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: tensor '%s': out of memory", a->path, ti->name);
	return peftio_to_f32(ti->dtype, data, *out, ti->numel);
}

struct gemm_job {
	int		 trans;	/* C = A^T B^T (fan_in_fan_out, embeddings)
				 * instead of C = B A */
	const float	*a, *b;	/* A [r, ?], B [?, r] */
	uint64_t	 r, rows, cols;
	uint64_t	 row0, nrows; /* the block of rows to compute */
	float		*c;	/* the product, or NULL: fold it into w */
	/* The fold: rows of the delta, as op_lora() describes it. */
	struct peftio_merge *m;
	float		*w;
	float		 s, wt;
	enum peftio_dtype adt;
	const float	*mag;	/* DoRA magnitudes, or NULL */
	int		 nomem;
};

/*
 * w -/+= (d * s) * wt for an f32 adapter, in the order op_lora's steps
 * take (the weight's multiply only when it is not 1).  Written as fixed
 * runs of FOLD_RUN so that compilers vectorize it at -O2.
 */
#define FOLD_RUN	16

static void
fold_plain(float *restrict w, const float *restrict d, uint64_t n, float s,
    float wt, int unmerge)
{
	uint64_t i = 0, k;
	float sign = unmerge ? -1.0f : 1.0f;

	/* w - x is w + (-x) exactly, so one loop serves both signs. */
	if (wt == 1.0f) {
		for (; n - i >= FOLD_RUN; i += FOLD_RUN)
			for (k = 0; k < FOLD_RUN; k++)
				w[i + k] += sign * (d[i + k] * s);
		for (; i < n; i++)
			w[i] += sign * (d[i] * s);
		return;
	}
	for (; n - i >= FOLD_RUN; i += FOLD_RUN)
		for (k = 0; k < FOLD_RUN; k++)
			w[i + k] += sign * ((d[i + k] * s) * wt);
	for (; i < n; i++)
		w[i] += sign * ((d[i] * s) * wt);
}

/*
 * Fold n rows of a LoRA delta (from row r0) into w, which holds the
 * job's block of rows: scale, round through
 * the adapter's dtype, weight, then add (or subtract); with DoRA,
 * W' = m / ||W + dW||_row * (W + dW).
 */
static void
fold_rows(const struct gemm_job *j, uint64_t r0, uint64_t n, float *d)
{
	uint64_t i, k, cnt = n * j->cols;
	float *w = j->w + (r0 - j->row0) * j->cols, f;
	double ss;

	if (j->adt == PEFTIO_F32 && j->mag == NULL) {
		fold_plain(w, d, cnt, j->s, j->wt, j->m->o.unmerge);
		return;
	}
	for (i = 0; i < cnt; i++)
		d[i] *= j->s;
	peftio_round_through(j->adt, d, cnt);
	if (j->wt != 1.0f)
		for (i = 0; i < cnt; i++)
			d[i] *= j->wt;
	if (j->mag == NULL) {
		if (j->m->o.unmerge)
			for (i = 0; i < cnt; i++)
				w[i] -= d[i];
		else
			for (i = 0; i < cnt; i++)
				w[i] += d[i];
		return;
	}
	for (i = 0; i < n; i++) {
		float *row = w + i * j->cols;
		const float *drow = d + i * j->cols;

		ss = 0;
		for (k = 0; k < j->cols; k++) {
			row[k] += drow[k];
			ss += (double)row[k] * row[k];
		}
		f = j->mag[r0 + i] / (float)sqrt(ss);
		for (k = 0; k < j->cols; k++)
			row[k] *= f;
	}
}

static void
gemm_chunks(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct gemm_job *j = arg;
	uint64_t c, r0, n;
	float *dst, *tmp = NULL;

	if ((j->r != 0 && peftio_blas_ready(NULL) != 0) ||
	    (j->c == NULL && (tmp = peftio_scratch(&j->m->slots[slot],
	    ROW_CHUNK * j->cols * sizeof(float))) == NULL)) {
		j->nomem = 1;
		return;
	}
	for (c = b; c < e; c++) {
		r0 = j->row0 + c * ROW_CHUNK;
		n = PEFTIO_MIN(ROW_CHUNK, j->row0 + j->nrows - r0);
		dst = j->c != NULL ? j->c + (r0 - j->row0) * j->cols : tmp;
		if (j->r == 0)
			memset(dst, 0, n * j->cols * sizeof(float));
		else if (j->trans)	/* A [r, rows], B [cols, r] */
			peftio_sgemm(1, 1, n, j->cols, j->r, 1.0f, j->a + r0,
			    j->rows, j->b, j->r, 0.0f, dst, j->cols);
		else		/* B [rows, r], A [r, cols] */
			peftio_sgemm(0, 0, n, j->cols, j->r, 1.0f,
			    j->b + r0 * j->r, j->r, j->a, j->cols, 0.0f,
			    dst, j->cols);
		if (j->c == NULL)
			fold_rows(j, r0, n, dst);
	}
}

/* Run job j (with its product or fold set) over its block of rows. */
static int
run_gemm(const struct peftio_merge *m, struct gemm_job *j)
{
	j->nomem = 0;
	if (j->r != 0 && peftio_blas_reserve(m->o.nthreads, NULL) != 0)
		return PEFTIO_ENOMEM;
	peftio_parallel_slots(m->o.nthreads,
	    (j->nrows + ROW_CHUNK - 1) / ROW_CHUNK, 1, gemm_chunks, j);
	return j->nomem ? PEFTIO_ENOMEM : 0;
}

/* A job over all rows of the rows x cols product of A [r, ?], B [?, r]. */
static void
gemm_setup(struct gemm_job *j, struct peftio_merge *m, int trans,
    const float *a, const float *b, uint64_t r, uint64_t rows, uint64_t cols)
{
	memset(j, 0, sizeof(*j));
	j->m = m;
	j->trans = trans;
	j->a = a;
	j->b = b;
	j->r = r;
	j->rows = rows;
	j->cols = cols;
	j->nrows = rows;
}

/* c[rows, cols] = B A (or A^T B^T when trans), unscaled. */
static int
factor_product(struct peftio_merge *m, int trans, const float *a,
    const float *b, uint64_t r, uint64_t rows, uint64_t cols, float *c)
{
	struct gemm_job j;

	gemm_setup(&j, m, trans, a, b, r, rows, cols);
	j.c = c;
	return run_gemm(m, &j);
}

/* PEFT's get_delta_weight: transpose(B @ A, fifo) * s, in f32, cast to
 * lora_B's dtype. */
int
peftio_merge_lora_delta(struct peftio_merge *m, struct peftio_adapter *a,
    const struct lmod *md, const struct target *t, float *d,
    struct peftio_error *err)
{
	float *fa = NULL, *fb = NULL, s = (float)md->scale;
	uint64_t i, n = t->rows * t->cols;
	int rc;

	if ((rc = peftio_adapter_load_f32(a, md->a, &fa, err)) == 0 &&
	    (rc = peftio_adapter_load_f32(a, md->b, &fb, err)) == 0) {
		if (factor_product(m, md->embedding || md->fifo, fa, fb, md->r,
		    t->rows, t->cols, d) != 0)
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", t->name);
		else {
			for (i = 0; i < n; i++)
				d[i] *= s;
			peftio_round_through(peftio_adapter_tinfo(a,
			    md->b)->dtype, d, n);
		}
	}
	free(fa);
	free(fb);
	return rc;
}

/* Fold rows [row0, row0 + nrows) of a LoRA delta B A into w. */
int
peftio_merge_fold_block(struct peftio_merge *m, const struct target *t,
    int trans, const float *a, const float *b, uint64_t r, float s, float wt,
    enum peftio_dtype adt, const float *mag, float *w, uint64_t row0,
    uint64_t nrows, struct peftio_error *err)
{
	struct gemm_job j;

	gemm_setup(&j, m, trans, a, b, r, t->rows, t->cols);
	j.row0 = row0;
	j.nrows = nrows;
	j.w = w;
	j.s = s;
	j.wt = wt;
	j.adt = adt;
	j.mag = mag;
	if (run_gemm(m, &j) != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "tensor '%s': out of memory", t->name);
	return 0;
}
