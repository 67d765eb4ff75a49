/*
 * compare.c - the error of a tensor against a reference: a 4-bit or
 * 8-bit weight dequantized, or a plain tensor converted, against the
 * original, in parts that fit memory, summed over a fixed number of
 * pieces in threads so that the result does not depend on their number.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* Pieces of a part summed apart, then added in order. */
#define NPIECE	64

/* Values compared at a time: memory holds this much of a tensor. */
#define PART_VALUES	(8u << 20)

struct piece_job {
	const float		*x, *y;
	uint64_t		 n;
	struct peftio_stats	 piece[NPIECE];
};

static void
sum_pieces(void *arg, uint64_t b, uint64_t e)
{
	struct piece_job *j = arg;
	struct peftio_stats *s;
	uint64_t p, i, lo, hi;
	double x, y, d;

	for (p = b; p < e; p++) {
		s = &j->piece[p];
		lo = j->n * p / NPIECE;
		hi = j->n * (p + 1) / NPIECE;
		for (i = lo; i < hi; i++) {
			x = j->x[i];
			y = j->y[i];
			d = x - y;
			s->sxx += x * x;
			s->syy += y * y;
			s->sxy += x * y;
			s->sdd += d * d;
			if (fabs(d) > s->max_abs_error || isnan(d))
				s->max_abs_error = isnan(d) ? NAN : fabs(d);
		}
		s->n = hi - lo;
	}
}

void
peftio_stats_add(struct peftio_stats *a, const struct peftio_stats *b)
{
	a->sxx += b->sxx;
	a->syy += b->syy;
	a->sxy += b->sxy;
	a->sdd += b->sdd;
	if (b->max_abs_error > a->max_abs_error || isnan(b->max_abs_error))
		a->max_abs_error = isnan(a->max_abs_error) ? a->max_abs_error :
		    b->max_abs_error;
	a->n += b->n;
}

double
peftio_stats_rmse(const struct peftio_stats *s)
{
	return s->n ? sqrt(s->sdd / (double)s->n) : 0.0;
}

double
peftio_stats_snr_db(const struct peftio_stats *s)
{
	return 10.0 * log10(s->sxx / s->sdd);
}

double
peftio_stats_cosine(const struct peftio_stats *s)
{
	return s->sxy / sqrt(s->sxx * s->syy);
}

/* Sum x against y (n values) into st. */
static void
sum_part(struct piece_job *j, const float *x, const float *y, uint64_t n,
    unsigned nthreads, struct peftio_stats *st)
{
	size_t p;

	memset(j, 0, sizeof(*j));
	j->x = x;
	j->y = y;
	j->n = n;
	peftio_parallel_for(nthreads, NPIECE, 1, sum_pieces, j);
	for (p = 0; p < NPIECE; p++)
		peftio_stats_add(st, &j->piece[p]);
}

int
peftio_compare_tensor(struct peftio_ckpt *c,
    const struct peftio_inspect_row *row, struct peftio_ckpt *orig,
    size_t k, unsigned nthreads, struct peftio_scratch tmp[3],
    struct peftio_stats *st, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(orig, k);
	const struct peftio_tensor_info *mine = peftio_ckpt_tensor(c,
	    row->idx);
	size_t es = peftio_dtype_bits(ti->dtype) / 8;
	size_t ms = row->quantized ? 0 : peftio_dtype_bits(mine->dtype) / 8;
	uint64_t al, part, e0, n;
	struct piece_job *j;
	float *x, *y;
	void *raw;
	int rc = 0;

	memset(st, 0, sizeof(*st));
	if (!peftio_dtype_is_float(ti->dtype) || ti->numel != row->params)
		return peftio_error_set(err, PEFTIO_EINVAL, "%s: tensor '%s': "
		    "%s with %llu elements does not fit the %s's %llu",
		    peftio_ckpt_path(orig), row->name,
		    peftio_dtype_name(ti->dtype),
		    (unsigned long long)ti->numel,
		    row->quantized ? "quantized weight" : "tensor",
		    (unsigned long long)row->params);
	part = PART_VALUES;
	if (row->quantized) {
		/* whole blocks, or whole rows of an 8-bit weight */
		al = row->int8 ? row->bw8.cols :
		    peftio_bnb_part_align(&row->bw);
		part = PART_VALUES > al ? PART_VALUES / al * al : al;
	}
	if ((j = malloc(sizeof(*j))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (e0 = 0; e0 < row->params; e0 += n) {
		n = row->params - e0 < part ? row->params - e0 : part;
		x = peftio_scratch(&tmp[0], n * sizeof(float));
		y = peftio_scratch(&tmp[1], n * sizeof(float));
		raw = peftio_scratch(&tmp[2], n * (es > ms ? es : ms));
		if (x == NULL || y == NULL || raw == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: tensor '%s': out of memory",
			    peftio_ckpt_path(c), row->name);
			break;
		}
		if (row->int8)
			rc = peftio_bnb8_dequantize_part(c, &row->bw8,
			    PEFTIO_F32, y, e0 / row->bw8.cols,
			    n / row->bw8.cols, nthreads, err);
		else if (row->quantized)
			rc = peftio_bnb_dequantize_part(c, &row->bw,
			    PEFTIO_F32, y, e0, n, nthreads, err);
		else if ((rc = peftio_ckpt_read(c, row->idx, e0 * ms, raw,
		    n * ms, err)) == 0)
			rc = peftio_to_f32(mine->dtype, raw, y, n);
		if (rc != 0 || (rc = peftio_ckpt_read(orig, k, e0 * es, raw,
		    n * es, err)) != 0 ||
		    (rc = peftio_to_f32(ti->dtype, raw, x, n)) != 0)
			break;
		sum_part(j, x, y, n, nthreads, st);
	}
	free(j);
	return rc;
}

int
peftio_inspect_compare(struct peftio_inspect *r, struct peftio_ckpt *orig,
    unsigned nthreads, const struct peftio_compare_ops *ops, void *ctx,
    struct peftio_compare_summary *sum)
{
	struct peftio_scratch tmp[3] = { { 0 } };
	struct peftio_inspect_row *row;
	struct peftio_error err;
	int plain = r->nquant == 0, bad = 0;
	size_t i, k;
	long found;

	memset(sum, 0, sizeof(*sum));
	memset(&r->cmp, 0, sizeof(r->cmp));
	r->compared = 0;
	for (i = 0; i < r->nrows; i++) {
		row = &r->rows[i];
		if (plain ? !peftio_dtype_is_float(peftio_ckpt_tensor(r->c,
		    row->idx)->dtype) : !row->quantized)
			continue;
		if (ops->progress != NULL)
			ops->progress(ctx, sum->candidates, plain ? r->nrows :
			    r->nquant, row->name);
		sum->candidates++;
		if ((found = peftio_ckpt_find(orig, row->name)) < 0) {
			if (sum->missing++ == 0)
				sum->first_missing = row->name;
			bad = 1;
			continue;
		}
		k = (size_t)found;
		peftio_error_clear(&err);
		if (peftio_compare_tensor(r->c, row, orig, k, nthreads, tmp,
		    &row->st, &err) != 0) {
			if (ops->failed != NULL)
				ops->failed(ctx, &err);
			bad = 1;
		} else {
			peftio_stats_add(&r->cmp, &row->st);
			row->compared = 1;
			r->compared++;
		}
		peftio_ckpt_release(orig, k);
		peftio_ckpt_release(r->c, row->idx);
	}
	if (ops->progress != NULL)
		ops->progress(ctx, sum->candidates, sum->candidates, NULL);
	for (i = 0; i < 3; i++)
		peftio_scratch_free(&tmp[i]);
	return bad;
}
