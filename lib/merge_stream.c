/*
 * merge_stream.c - a base checkpoint's tensor merged a block of rows at
 * a time: read (or dequantize) the base, convert to f32, fold the
 * adapters' change in, convert to the output dtype, and hand each block
 * to the caller.  Memory holds a block of the tensor, not all of it.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* Values converted per step of a worker: small enough to stay in cache. */
#define CONV_CHUNK	(64 * 1024)
/* f32 values of a block of rows: what is held of a tensor at a time. */
#define BLOCK_VALUES	(8u << 20)

/* Buffers reused from one tensor to the next. */
struct peftio_merge_stream {
	struct peftio_merge	*m;
	unsigned		 nthreads;
	int			 allow_nonfinite;
	struct peftio_scratch	 vals, deq, slot[PEFTIO_MAX_JOBS];
};

/* One block's conversion, shared by the threads. */
struct conv {
	struct peftio_merge_stream *s;
	struct peftio_ckpt	*in;	/* read tensor idx from here, */
	size_t			 idx;
	const void		*src;	/* or convert from memory */
	enum peftio_dtype	 sdt, ddt;
	uint64_t		 e0;	/* the block's first value */
	uint64_t		 n;	/* the block's values */
	float			*f;	/* the block in f32 */
	void			*dst;
	int			 check;	/* look for NaN and Inf in dst */
	int64_t			 bad;	/* atomic: the first found, or -1 */
	int			 rc;
	struct peftio_error	 err;
};

int
peftio_merge_stream_new(struct peftio_merge_stream **out,
    struct peftio_merge *m, unsigned nthreads, int allow_nonfinite,
    struct peftio_error *err)
{
	struct peftio_merge_stream *s = calloc(1, sizeof(*s));

	if ((*out = s) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	s->m = m;
	s->nthreads = nthreads;
	s->allow_nonfinite = allow_nonfinite;
	return 0;
}

void
peftio_merge_stream_free(struct peftio_merge_stream *s)
{
	size_t k;

	if (s == NULL)
		return;
	peftio_scratch_free(&s->vals);
	peftio_scratch_free(&s->deq);
	for (k = 0; k < PEFTIO_MAX_JOBS; k++)
		peftio_scratch_free(&s->slot[k]);
	free(s);
}

static void
conv_fail(struct conv *cv, const struct peftio_error *err)
{
	if (!__atomic_exchange_n(&cv->rc, -1, __ATOMIC_RELAXED))
		cv->err = *err;
}

/* Values [b, e) of the block (in units of CONV_CHUNK) to f32. */
static void
to_f32_range(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct conv *cv = arg;
	size_t es = peftio_dtype_bits(cv->sdt) / 8;
	struct peftio_error err;
	uint64_t i0, n;
	void *tmp = NULL;

	if (cv->src == NULL && (tmp = peftio_scratch(&cv->s->slot[slot],
	    CONV_CHUNK * es)) == NULL) {
		peftio_error_set(&err, PEFTIO_ENOMEM, "out of memory");
		conv_fail(cv, &err);
		return;
	}
	for (; b < e; b++) {
		i0 = b * CONV_CHUNK;
		n = PEFTIO_MIN(CONV_CHUNK, cv->n - i0);
		if (cv->src != NULL) {
			peftio_to_f32(cv->sdt, (const char *)cv->src +
			    (cv->e0 + i0) * es, cv->f + i0, n);
			continue;
		}
		if (peftio_ckpt_read(cv->in, cv->idx, (cv->e0 + i0) * es, tmp,
		    n * es, &err) != 0) {
			conv_fail(cv, &err);
			return;
		}
		peftio_to_f32(cv->sdt, tmp, cv->f + i0, n);
	}
}

/* Values [b, e) of the block from f32 to the output dtype, and the
 * first one not finite there when asked. */
static void
from_f32_range(void *arg, uint64_t b, uint64_t e)
{
	struct conv *cv = arg;
	size_t es = peftio_dtype_bits(cv->ddt) / 8;
	uint64_t i0 = b * CONV_CHUNK, i1 = PEFTIO_MIN(e * CONV_CHUNK, cv->n);
	int64_t k, cur;

	peftio_from_f32(cv->ddt, cv->f + i0, (char *)cv->dst + i0 * es,
	    i1 - i0);
	if (!cv->check || (k = peftio_first_nonfinite(cv->ddt,
	    (char *)cv->dst + i0 * es, i1 - i0)) < 0)
		return;
	k += (int64_t)i0;
	cur = __atomic_load_n(&cv->bad, __ATOMIC_RELAXED);
	while ((cur < 0 || k < cur) && !__atomic_compare_exchange_n(&cv->bad,
	    &cur, k, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* Rows as the merge counts them: a 1-D tensor has one value each. */
static uint64_t
row_count(int ndim, const uint64_t *shape)
{
	uint64_t rows = ndim ? shape[0] : 1;

	return rows == 0 ? 1 : rows;
}

/* Out of memory while merging tensor name of c: the file and the tensor. */
static int
tensor_nomem(struct peftio_ckpt *c, const char *name, struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_ENOMEM, "%s: tensor '%s': out of "
	    "memory", peftio_ckpt_path(c), name);
}

int
peftio_merge_stream_tensor(struct peftio_merge_stream *s,
    struct peftio_ckpt *c, size_t i, const struct peftio_bnb_weight *bw,
    const struct peftio_bnb8_weight *bw8, enum peftio_dtype dt,
    const struct peftio_merge_out *out, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i);
	uint64_t n = bw != NULL ? bw->qs.numel : ti->numel, nb, rows, cols;
	int quantized = bw != NULL || bw8 != NULL;
	uint64_t r0, nr, brows;
	size_t des = peftio_dtype_bits(dt) / 8;
	int touched = s->m != NULL && peftio_merge_touches(s->m, ti->name);
	int64_t bad;
	struct conv cv;
	int rc = 0;

	memset(&cv, 0, sizeof(cv));
	cv.s = s;
	cv.in = c;
	cv.idx = i;
	cv.sdt = ti->dtype;
	cv.ddt = dt;
	if (quantized) {
		/* Dequantize as bitsandbytes does, into the dtype the
		 * values will be stored in (what nf4-quant -d writes). */
		peftio_dtype_nbytes(dt, n, &nb);
		if ((cv.src = peftio_scratch(&s->deq, nb)) == NULL)
			return tensor_nomem(c, ti->name, err);
		cv.sdt = dt;
		rc = bw != NULL ? peftio_bnb_dequantize(c, bw, dt,
		    (void *)cv.src, s->nthreads, err) :
		    peftio_bnb8_dequantize(c, bw8, dt, (void *)cv.src,
		    s->nthreads, err);
		if (rc != 0)
			return rc;
	}
	if (touched && (rc = peftio_merge_begin(s->m, ti->name, n, err)) != 0)
		return rc;
	rows = bw != NULL ? row_count(bw->qs.ndim, bw->qs.shape) :
	    row_count(ti->ndim, ti->shape);
	cols = n / rows;
	brows = cols ? BLOCK_VALUES / cols / PEFTIO_MERGE_ROWS *
	    PEFTIO_MERGE_ROWS : rows;
	if (brows == 0)
		brows = PEFTIO_MERGE_ROWS;
	for (r0 = 0; r0 < rows && rc == 0; r0 += nr) {
		nr = PEFTIO_MIN(brows, rows - r0);
		cv.e0 = r0 * cols;
		cv.n = nr * cols;
		cv.f = peftio_scratch(&s->vals, cv.n * sizeof(float));
		cv.dst = cv.f != NULL ? out->buffer(out->arg, cv.e0 * des,
		    cv.n * des) : NULL;
		if (cv.dst == NULL) {
			rc = tensor_nomem(c, ti->name, err);
			break;
		}
		peftio_parallel_slots(s->nthreads, (cv.n + CONV_CHUNK - 1) /
		    CONV_CHUNK, 1, to_f32_range, &cv);
		if ((rc = cv.rc) != 0) {
			*err = cv.err;
			rc = err->code;
			break;
		}
		if (touched && (rc = peftio_merge_rows(s->m, cv.f, r0, nr, dt,
		    err)) != 0) {
			if (rc == PEFTIO_ENOMEM)
				tensor_nomem(c, ti->name, err);
			break;
		}
		/* A merge that overflows dt, or NaN from the adapter. */
		cv.check = touched && !s->allow_nonfinite;
		cv.bad = -1;
		peftio_parallel_for(s->nthreads, (cv.n + CONV_CHUNK - 1) /
		    CONV_CHUNK, 1, from_f32_range, &cv);
		if ((bad = cv.bad) >= 0) {
			rc = peftio_error_set(err, PEFTIO_ENONFINITE,
			    "%s: tensor '%s': element %llu of the merged "
			    "result is not finite (NaN or Inf); "
			    "--allow-nonfinite writes it anyway",
			    peftio_ckpt_path(c), ti->name,
			    (unsigned long long)(cv.e0 + (uint64_t)bad));
			break;
		}
		if (out->put != NULL)
			rc = out->put(out->arg, err);
	}
	if (touched)
		peftio_merge_end(s->m);
	peftio_ckpt_release(c, i);
	return rc;
}
