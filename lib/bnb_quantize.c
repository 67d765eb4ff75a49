/*
 * bnb_quantize.c - the bitsandbytes 4-bit form, writing direction:
 * quantize a checkpoint's tensor (or values in memory) with threads,
 * and declare and write a 4-bit weight with its companion tensors and
 * double quantization, in the key layout transformers' save_pretrained
 * gives a model loaded with load_in_4bit.  bnb.c reads that form back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* Blocks a worker reads and codes at a time. */
#define SUB_BLOCKS	1024
/* Blocks per thread chunk: large enough to amortize thread start-up. */
#define GRAIN_BLOCKS	4096
/* Bytes of a weight read in place that are given back at a time. */
#define VIEW_DROP	((uint64_t)16 << 20)

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

void
peftio_bnb_plan(struct peftio_quant_state *qs,
    const struct peftio_tensor_info *ti, enum peftio_q4type type,
    uint64_t blocksize, int double_quant, enum peftio_dtype dt)
{
	int d;

	memset(qs, 0, sizeof(*qs));
	qs->type = type;
	qs->blocksize = blocksize;
	qs->dtype = dt;
	qs->ndim = ti->ndim;
	for (d = 0; d < ti->ndim; d++)
		qs->shape[d] = ti->shape[d];
	qs->numel = ti->numel;
	qs->double_quant = double_quant;
	qs->nested_blocksize = 256;
	qs->nested_dtype = PEFTIO_F32;
}

/* ------------------------------------------------------------------ */
/* Threaded passes                                                     */

/*
 * A pass over one weight.  Each worker reads its blocks with pread(2),
 * SUB_BLOCKS at a time into buffers of its own, so the input is read
 * by every thread and coded while it is in cache; values stored in
 * another dtype than qs->dtype are rounded to it first (what
 * transformers does when it loads a checkpoint with another torch_dtype).
 */
struct pass {
	struct peftio_ckpt	*ck;
	size_t			 idx;
	const struct peftio_quant_state *qs;
	enum peftio_dtype	 sdt;	/* stored dtype */
	uint8_t			*packed;	/* NULL: absmax only */
	float			*absmax;
	const float		*known;	/* the absmax found before, or NULL */
	const unsigned char	*view;	/* the tensor in place, or NULL */
	int			 check;	/* look for NaN and Inf */
	int64_t			 bad;	/* the first one found, or -1 */
	int			 failed;
	int			 nomem;
	struct peftio_error	 err;	/* of the first read that failed */
	struct peftio_bnb_buffers *b;	/* each thread's */
};

/* The first non-finite value among the n values at p (element lo of the
 * tensor), folded into ps->bad. */
static void
scan_values(struct pass *ps, const void *p, uint64_t lo, uint64_t n)
{
	int64_t i, cur;

	if ((i = peftio_first_nonfinite(ps->qs->dtype, p, n)) < 0)
		return;
	i += (int64_t)lo;
	cur = __atomic_load_n(&ps->bad, __ATOMIC_RELAXED);
	while ((cur < 0 || i < cur) && !__atomic_compare_exchange_n(&ps->bad,
	    &cur, i, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void
pass_fail(struct pass *ps, const struct peftio_error *err)
{
	if (!__atomic_exchange_n(&ps->failed, 1, __ATOMIC_RELAXED))
		ps->err = *err;
}

/*
 * Values [lo, lo + n) of the weight in qs->dtype: where they lie in the
 * input when the pass has a view of it, else read (and rounded) into
 * the slot's buffers.  NULL after a failure, recorded in ps.
 */
static const void *
chunk_values(struct pass *ps, unsigned slot, uint64_t lo, uint64_t n)
{
	const struct peftio_quant_state *qs = ps->qs;
	size_t es = peftio_dtype_bits(ps->sdt) / 8;
	size_t des = peftio_dtype_bits(qs->dtype) / 8;
	struct peftio_error err;
	float *f;
	void *p, *q;

	if (ps->view != NULL)
		return ps->view + lo * es;
	if ((p = peftio_scratch(&ps->b->raw[slot], n * es)) == NULL)
		goto nomem;
	if (peftio_ckpt_read(ps->ck, ps->idx, lo * es, p, n * es, &err) != 0) {
		pass_fail(ps, &err);
		return NULL;
	}
	if (qs->dtype == ps->sdt)
		return p;
	f = peftio_scratch(&ps->b->vals[slot], n * sizeof(float));
	q = peftio_scratch(&ps->b->conv[slot], n * des);
	if (f == NULL || q == NULL)
		goto nomem;
	peftio_to_f32(ps->sdt, p, f, n);
	peftio_from_f32(qs->dtype, f, q, n);
	return q;
nomem:
	peftio_error_set(&err, PEFTIO_ENOMEM, "out of memory");
	pass_fail(ps, &err);
	return NULL;
}

/*
 * Values [lo, hi) of a view were used: when they end a window of
 * VIEW_DROP bytes, its pages are given back, so that the mapping does
 * not add the weight to the resident size.  A window at a time, not a
 * range: each madvise(2) interrupts the other CPUs to flush their TLBs.
 * Pages another thread still reads are mapped again when it does.
 */
static void
view_done(struct pass *ps, uint64_t lo, uint64_t hi)
{
	size_t es = peftio_dtype_bits(ps->sdt) / 8;
	uint64_t end = hi * es / VIEW_DROP * VIEW_DROP;

	if (end > lo * es && end >= VIEW_DROP)
		peftio_drop_pages(ps->view + end - VIEW_DROP, VIEW_DROP);
}

static void
pass_range(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct pass *ps = arg;
	const struct peftio_quant_state *qs = ps->qs;
	uint64_t bs = qs->blocksize, c, lo, n, nbk;
	const void *p;

	for (c = b; c < e; c += nbk) {
		nbk = PEFTIO_MIN(SUB_BLOCKS, e - c);
		lo = c * bs;
		n = PEFTIO_MIN(nbk * bs, qs->numel - lo);
		if ((p = chunk_values(ps, slot, lo, n)) == NULL)
			return;
		if (ps->packed == NULL) {
			/* The absmax pass sees most NaN and Inf itself. */
			if (!peftio_q4_absmax_finite(qs->dtype, p, n, bs, 0,
			    nbk, ps->absmax + c) && ps->check)
				scan_values(ps, p, lo, n);
			continue;
		}
		if (ps->check)
			scan_values(ps, p, lo, n);
		if (ps->known != NULL) {
			memcpy(ps->absmax + c, ps->known + c,
			    nbk * sizeof(float));
			peftio_q4_quantize_known(qs->type, qs->dtype, p, n, bs,
			    0, nbk, ps->packed + lo / 2, ps->absmax + c);
		} else
			peftio_q4_quantize(qs->type, qs->dtype, p, n, bs, 0,
			    nbk, ps->packed + lo / 2, ps->absmax + c);
	}
	if (ps->view != NULL)
		view_done(ps, b * bs, PEFTIO_MIN(e * bs, qs->numel));
}

struct peftio_bnb_buffers *
peftio_bnb_buffers_new(void)
{
	return calloc(1, sizeof(struct peftio_bnb_buffers));
}

void
peftio_bnb_buffers_free(struct peftio_bnb_buffers *b)
{
	size_t k;

	if (b == NULL)
		return;
	for (k = 0; k < PEFTIO_MAX_JOBS; k++) {
		peftio_scratch_free(&b->raw[k]);
		peftio_scratch_free(&b->vals[k]);
		peftio_scratch_free(&b->conv[k]);
	}
	peftio_scratch_free(&b->absmax);
	peftio_scratch_free(&b->whole[0]);
	peftio_scratch_free(&b->whole[1]);
	free(b);
}

int
peftio_bnb_pass(struct peftio_ckpt *c, size_t i,
    const struct peftio_quant_state *qs, uint8_t *packed, float *absmax,
    const float *known, int check, unsigned nthreads,
    struct peftio_bnb_buffers *b, struct peftio_error *err)
{
	struct pass ps;
	const void *view;
	int rc;

	memset(&ps, 0, sizeof(ps));
	ps.ck = c;
	ps.idx = i;
	ps.qs = qs;
	ps.sdt = peftio_ckpt_tensor(c, i)->dtype;
	ps.packed = packed;
	ps.absmax = absmax;
	ps.known = known;
	ps.check = check;
	ps.bad = -1;
	ps.b = b;
	/*
	 * The absmax pass reads the values where they lie, in the input's
	 * mapping: it does little with each, and a copy by pread(2) cost
	 * it as much again.  The other passes read pieces into buffers,
	 * the whole tensor asked for at once, not 2 x SUB_BLOCKS at a
	 * time by the workers' reads.
	 */
	if (packed == NULL && ps.sdt == qs->dtype && (rc =
	    peftio_ckpt_view(c, i, &view, err)) <= 0) {
		if (rc < 0)
			return rc;
		ps.view = view;
	} else
		peftio_ckpt_prefetch(c, i);
	peftio_parallel_slots(nthreads, ceil_div(qs->numel, qs->blocksize),
	    GRAIN_BLOCKS, pass_range, &ps);
	if (ps.view != NULL)
		peftio_drop_pages(ps.view, peftio_ckpt_tensor(c, i)->nbytes);
	if (ps.failed) {
		*err = ps.err;
		return err->code;
	}
	if (ps.bad >= 0)
		return peftio_error_set(err, PEFTIO_ENONFINITE,
		    "%s: tensor '%s': element %lld is not finite (NaN or Inf); "
		    "--allow-nonfinite quantizes it as bitsandbytes does",
		    peftio_ckpt_path(c), peftio_ckpt_tensor(c, i)->name,
		    (long long)ps.bad);
	return 0;
}

int
peftio_bnb_quantize_tensor(struct peftio_ckpt *c, size_t i,
    const struct peftio_quant_state *qs, uint8_t *packed, float *absmax,
    int check, unsigned nthreads, struct peftio_error *err)
{
	struct peftio_bnb_buffers *b;
	int rc;

	if ((b = peftio_bnb_buffers_new()) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_bnb_pass(c, i, qs, packed, absmax, NULL, check, nthreads, b,
	    err);
	peftio_bnb_buffers_free(b);
	return rc;
}

struct mem_pass {
	const struct peftio_quant_state *qs;
	const void	*vals;
	uint8_t		*packed;
	float		*absmax;
};

static void
mem_range(void *arg, uint64_t b, uint64_t e)
{
	struct mem_pass *mp = arg;

	peftio_q4_quantize(mp->qs->type, mp->qs->dtype, mp->vals,
	    mp->qs->numel, mp->qs->blocksize, b, e, mp->packed, mp->absmax);
}

void
peftio_bnb_quantize_mem(const struct peftio_quant_state *qs, const void *vals,
    uint8_t *packed, float *absmax, unsigned nthreads)
{
	struct mem_pass mp = { qs, vals, packed, absmax };

	peftio_parallel_for(nthreads, ceil_div(qs->numel, qs->blocksize),
	    GRAIN_BLOCKS, mem_range, &mp);
}

/* ------------------------------------------------------------------ */
/* Declaring and writing a 4-bit weight                                */

/* name + suffix (+ the quant type's name for the quant_state key). */
static char *
key(const char *name, const char *suffix, const char *type)
{
	size_t n = strlen(name) + strlen(suffix) + (type ? strlen(type) : 0)
	    + 1;
	char *k = malloc(n);

	if (k != NULL)
		snprintf(k, n, "%s%s%s", name, suffix, type ? type : "");
	return k;
}

static int
declare1(struct peftio_ckptw *w, size_t shard, const char *name,
    const char *suffix, const char *type, enum peftio_dtype dt,
    uint64_t len, struct peftio_error *err)
{
	char *k = key(name, suffix, type);
	int rc;

	if (k == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_ckptw_declare(w, shard, k, dt, 1, &len, err);
	free(k);
	return rc;
}

int
peftio_bnb_declare(struct peftio_ckptw *w, size_t shard, const char *name,
    struct peftio_bnb_out *bo, struct peftio_error *err)
{
	const struct peftio_quant_state *qs = &bo->qs;
	uint64_t n = qs->numel, nb = ceil_div(n, qs->blocksize), shape[2];
	int rc;

	free(bo->qs_json);
	bo->qs_json = NULL;
	if ((rc = peftio_quant_state_json(qs, &bo->qs_json, &bo->qs_len,
	    err)) != 0)
		return rc;
	/* U8, or bnb_4bit_quant_storage: the same bytes as other elements */
	if ((rc = peftio_bnb_storage_shape(bo->storage == PEFTIO_BOOL ?
	    PEFTIO_U8 : bo->storage, n, shape, err)) != 0)
		return rc;
	rc = peftio_ckptw_declare(w, shard, name, bo->storage == PEFTIO_BOOL ?
	    PEFTIO_U8 : bo->storage, 2, shape, err);
	if (rc == 0)
		rc = declare1(w, shard, name, PEFTIO_BNB_ABSMAX, NULL,
		    qs->double_quant ? PEFTIO_U8 : PEFTIO_F32, nb, err);
	if (rc == 0)
		rc = declare1(w, shard, name, PEFTIO_BNB_QUANT_MAP, NULL,
		    PEFTIO_F32, 16, err);
	if (rc == 0 && qs->double_quant)
		rc = declare1(w, shard, name, PEFTIO_BNB_NESTED_ABSMAX, NULL,
		    PEFTIO_F32, ceil_div(nb, qs->nested_blocksize), err);
	if (rc == 0 && qs->double_quant)
		rc = declare1(w, shard, name, PEFTIO_BNB_NESTED_QUANT_MAP,
		    NULL, PEFTIO_F32, 256, err);
	if (rc == 0)
		rc = declare1(w, shard, name, PEFTIO_BNB_QUANT_STATE,
		    peftio_q4type_name(qs->type), PEFTIO_U8, bo->qs_len, err);
	return rc;
}

static int
write1(struct peftio_ckptw *w, const char *name, const char *suffix,
    const char *type, const void *buf, size_t len, struct peftio_error *err)
{
	char *k = key(name, suffix, type);
	int rc;

	if (k == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_ckptw_write(w, k, buf, len, err);
	free(k);
	return rc;
}

int
peftio_bnb_write(struct peftio_ckptw *w, const char *name,
    const struct peftio_bnb_out *bo, const uint8_t *packed,
    const float *absmax, struct peftio_scratch tmp[2],
    struct peftio_error *err)
{
	const struct peftio_quant_state *qs = &bo->qs;
	uint64_t nb = ceil_div(qs->numel, qs->blocksize), nnb;
	float offset;

	if (!qs->double_quant)
		return peftio_bnb_write_stored(w, name, bo, packed, absmax,
		    NULL, err);
	nnb = ceil_div(nb, qs->nested_blocksize);
	if (peftio_scratch(&tmp[0], nb) == NULL ||
	    peftio_scratch(&tmp[1], nnb * sizeof(float)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	peftio_dq_quantize(absmax, nb, qs->nested_blocksize, &offset,
	    tmp[0].p, tmp[1].p);
	return peftio_bnb_write_stored(w, name, bo, packed, tmp[0].p,
	    tmp[1].p, err);
}

int
peftio_bnb_write_stored(struct peftio_ckptw *w, const char *name,
    const struct peftio_bnb_out *bo, const uint8_t *packed,
    const void *absmax, const float *nested, struct peftio_error *err)
{
	const struct peftio_quant_state *qs = &bo->qs;
	uint64_t n = qs->numel, nb = ceil_div(n, qs->blocksize), nnb;
	int rc;

	rc = peftio_ckptw_write(w, name, packed, (n + 1) / 2, err);
	if (rc == 0 && qs->double_quant) {
		nnb = ceil_div(nb, qs->nested_blocksize);
		rc = write1(w, name, PEFTIO_BNB_ABSMAX, NULL, absmax, nb, err);
		if (rc == 0)
			rc = write1(w, name, PEFTIO_BNB_NESTED_ABSMAX, NULL,
			    nested, nnb * sizeof(float), err);
		if (rc == 0)
			rc = write1(w, name, PEFTIO_BNB_NESTED_QUANT_MAP, NULL,
			    peftio_dynamic_map(), 256 * sizeof(float), err);
	} else if (rc == 0)
		rc = write1(w, name, PEFTIO_BNB_ABSMAX, NULL, absmax,
		    nb * sizeof(float), err);
	if (rc == 0)
		rc = write1(w, name, PEFTIO_BNB_QUANT_MAP, NULL,
		    peftio_q4_code(qs->type), 16 * sizeof(float), err);
	if (rc == 0)
		rc = write1(w, name, PEFTIO_BNB_QUANT_STATE,
		    peftio_q4type_name(qs->type), bo->qs_json, bo->qs_len, err);
	return rc;
}

void
peftio_bnb_out_free(struct peftio_bnb_out *bo)
{
	free(bo->qs_json);
	bo->qs_json = NULL;
}

int
peftio_bnb_values(struct peftio_ckpt *c, size_t i, int transpose,
    enum peftio_dtype dt, int check, struct peftio_scratch buf[2],
    const void **vals, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i);
	uint64_t n = ti->numel;
	const void *src;
	void *dst;
	float *f;
	int64_t bad;
	int rc;

	if ((ti->dtype != PEFTIO_F32 && ti->dtype != PEFTIO_F16 &&
	    ti->dtype != PEFTIO_BF16) || (dt != PEFTIO_F32 &&
	    dt != PEFTIO_F16 && dt != PEFTIO_BF16) ||
	    (transpose && ti->ndim != 2))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': not a float matrix to quantize",
		    peftio_ckpt_path(c), ti->name);
	if ((rc = peftio_ckpt_data(c, i, &src, err)) != 0)
		return rc;
	if (dt != ti->dtype) {
		if ((f = peftio_scratch(&buf[1], n * sizeof(float))) == NULL ||
		    (dst = peftio_scratch(&buf[0], n *
		    (peftio_dtype_bits(dt) / 8))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		peftio_to_f32(ti->dtype, src, f, n);
		peftio_from_f32(dt, f, dst, n);
		src = dst;
	}
	if (transpose) {
		if ((dst = peftio_scratch(&buf[1], n *
		    (peftio_dtype_bits(dt) / 8))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		peftio_transpose(src, dst, ti->shape[0], ti->shape[1],
		    peftio_dtype_bits(dt) / 8);
		src = dst;
	}
	if (check && (bad = peftio_first_nonfinite(dt, src, n)) >= 0)
		return peftio_error_set(err, PEFTIO_ENONFINITE,
		    "%s: tensor '%s': element %lld is not finite (NaN or "
		    "Inf); --allow-nonfinite quantizes it as bitsandbytes "
		    "does", peftio_ckpt_path(c), ti->name, (long long)bad);
	*vals = src;
	return 0;
}

int
peftio_bnb_offset(struct peftio_ckpt *c, size_t i, struct peftio_bnb_out *bo,
    float *keep, int check, unsigned nthreads, struct peftio_bnb_buffers *b,
    struct peftio_error *err)
{
	uint64_t nb = ceil_div(bo->qs.numel, bo->qs.blocksize);
	float *am = keep;
	int rc;

	if (am == NULL && (am = peftio_scratch(&b->absmax, nb ? nb *
	    sizeof(float) : 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = peftio_bnb_pass(c, i, &bo->qs, NULL, am, NULL, check,
	    nthreads, b, err)) == 0)
		bo->qs.nested_offset = peftio_dq_offset(am, nb);
	return rc;
}

int
peftio_bnb_prepass(struct peftio_ckpt *c, size_t i, struct peftio_bnb_out *bo,
    int check, unsigned nthreads, struct peftio_error *err)
{
	struct peftio_bnb_buffers *b;
	int rc;

	if ((b = peftio_bnb_buffers_new()) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_bnb_offset(c, i, bo, NULL, check, nthreads, b, err);
	peftio_bnb_buffers_free(b);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Checking shards written one at a time                               */

/* What in a 4-bit weight's quant_state the plan would not give. */
static const char *
qs_differs(const struct peftio_quant_state *got,
    const struct peftio_quant_state *want, char *buf, size_t len)
{
	if (got->blocksize != want->blocksize)
		snprintf(buf, len, "blocksize %llu, not %llu",
		    (unsigned long long)got->blocksize,
		    (unsigned long long)want->blocksize);
	else if (got->double_quant != want->double_quant)
		snprintf(buf, len, "%s double quantization",
		    got->double_quant ? "with" : "without");
	else if (got->double_quant &&
	    got->nested_blocksize != want->nested_blocksize)
		snprintf(buf, len, "nested blocksize %llu, not %llu",
		    (unsigned long long)got->nested_blocksize,
		    (unsigned long long)want->nested_blocksize);
	else if (got->dtype != want->dtype)
		snprintf(buf, len, "dtype %s, not %s",
		    peftio_dtype_torch_name(got->dtype),
		    peftio_dtype_torch_name(want->dtype));
	else if (got->ndim != want->ndim || memcmp(got->shape, want->shape,
	    (size_t)got->ndim * sizeof(got->shape[0])) != 0)
		snprintf(buf, len, "another shape");
	else
		return NULL;
	return buf;
}

int
peftio_bnb_expect(struct peftio_xf_check *chk, size_t i, const char *name,
    const struct peftio_bnb_out *bo, struct peftio_error *err)
{
	const struct peftio_quant_state *want = &bo->qs;
	enum peftio_dtype storage = bo->storage == PEFTIO_BOOL ? PEFTIO_U8 :
	    bo->storage;
	struct peftio_ckpt *out = peftio_xf_check_output(chk);
	struct peftio_bnb_weight bw;
	const char *why;
	char *k, buf[128];
	size_t parts[6], np = 4, p, w;
	long q;
	int rc;

	if ((k = key(name, PEFTIO_BNB_QUANT_STATE,
	    peftio_q4type_name(want->type))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	q = peftio_ckpt_find(out, k);
	free(k);
	if (q < 0) {
		if ((rc = peftio_xf_expect_name(chk, i, name, &w, err)) != 0)
			return rc;
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is not %s-quantized",
		    peftio_st_path(peftio_ckpt_shard(out,
		    peftio_ckpt_shard_of(out, w))), name,
		    peftio_q4type_name(want->type));
	}
	if ((rc = peftio_bnb_lookup(out, (size_t)q, &bw, err)) < 0)
		return rc;
	if ((why = qs_differs(&bw.qs, want, buf, sizeof(buf))) == NULL &&
	    bw.storage != storage) {
		snprintf(buf, sizeof(buf), "storage %s, not %s",
		    peftio_dtype_name(bw.storage), peftio_dtype_name(storage));
		why = buf;
	}
	if (why != NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' was quantized with other options (%s)",
		    peftio_st_path(peftio_ckpt_shard(out, peftio_ckpt_shard_of(
		    peftio_xf_check_input(chk), i))), name, why);
	parts[0] = bw.weight;
	parts[1] = bw.absmax;
	parts[2] = bw.quant_map;
	parts[3] = bw.quant_state;
	if (bw.qs.double_quant) {
		parts[np++] = bw.nested_absmax;
		parts[np++] = bw.nested_quant_map;
	}
	for (p = 0; p < np; p++)
		if ((rc = peftio_xf_expect_name(chk, i,
		    peftio_ckpt_tensor(out, parts[p])->name, NULL, err)) != 0)
			return rc;
	return 0;
}
