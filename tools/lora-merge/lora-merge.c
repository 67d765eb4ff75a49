/*
 * lora-merge - merge PEFT adapters (LoRA, rsLoRA, DoRA, IA3, embeddings,
 * modules_to_save) into a base checkpoint, plain or bitsandbytes 4-bit,
 * with the results PEFT's merge_and_unload() and add_weighted_adapter()
 * give.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

enum action { COPY, CONVERT, MERGE, DEQUANT, REQUANT, REQUANT8, SKIP };

struct item {
	enum action		 act;
	size_t			 shard;
	enum peftio_dtype	 dt;		/* output dtype */
	int			 touched;	/* changed by the merge */
	int			 is_bnb;
	struct peftio_bnb_weight bw;
	int			 is_bnb8;
	struct peftio_bnb8_weight bw8;
	struct peftio_quant_state qs;		/* REQUANT: the new one */
	char			*qs_json;
	size_t			 qs_len;
};

struct opts {
	const char		*base;
	const char		**adapters;
	size_t			 nadapters;
	double			*weights;
	size_t			 nweights;
	int			 method;
	double			 density;
	int			 has_density;
	uint64_t		 seed;
	int			 unmerge;
	int			 dtype;		/* -1: keep */
	int			 requant;
	unsigned		 jobs;
	const char		*out;
	int			 force;
};

static struct opts O;

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-fqv] [-w w1,w2,...] [-m linear|cat|svd|ties|"
	    "dare_linear|dare_ties|magnitude_prune]\n"
	    "                  [--density d] [--seed n] [--unmerge] "
	    "[--dtype f16|bf16|f32] [--requant]\n"
	    "                  [--recipe file.yaml] [-j jobs] [-o output] "
	    "base adapter ...\n", cli_progname);
	exit(status);
}

static char *
str_cat(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 1;
	char *p = xmalloc(n);

	snprintf(p, n, "%s%s", a, b);
	return p;
}

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL && s[1] != '\0' ? s + 1 : path;
}

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static int
float_dtype(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

/* ------------------------------------------------------------------ */

struct ctx {
	struct peftio_ckpt	*in;
	struct item		*items;
	struct peftio_merge	*m;
};

static int
shape_of(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	struct ctx *c = arg;
	const struct peftio_tensor_info *ti;
	long i = peftio_ckpt_find(c->in, name);
	int d;

	if (i < 0 || c->items[i].act == SKIP)
		return -1;
	if (c->items[i].is_bnb) {
		*ndim = c->items[i].bw.qs.ndim;
		for (d = 0; d < *ndim; d++)
			shape[d] = c->items[i].bw.qs.shape[d];
		return 0;
	}
	ti = peftio_ckpt_tensor(c->in, (size_t)i);
	*ndim = ti->ndim;
	for (d = 0; d < ti->ndim; d++)
		shape[d] = ti->shape[d];
	return 0;
}

/* Buffers reused from one tensor to the next. */
static struct peftio_scratch Vals, Deq, ReqIn, Slot[PEFTIO_MAX_JOBS];

/* Values converted per step of a worker: small enough to stay in cache. */
#define CONV_CHUNK	(64 * 1024)
/* f32 values of a block of rows: what is held of a tensor at a time. */
#define BLOCK_VALUES	(8u << 20)

struct conv {
	struct peftio_ckpt	*in;	/* read tensor idx from here, */
	size_t			 idx;
	const void		*src;	/* or convert from memory */
	enum peftio_dtype	 sdt, ddt;
	uint64_t		 e0;	/* the block's first value */
	uint64_t		 n;	/* the block's values */
	float			*f;	/* the block in f32 */
	void			*dst;
	int			 rc;
	struct peftio_error	 err;
};

/* Values [b, e) of the block (in units of CONV_CHUNK) to f32. */
static void
to_f32_range(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct conv *cv = arg;
	size_t es = peftio_dtype_bits(cv->sdt) / 8;
	uint64_t i0, n;
	void *tmp = NULL;

	if (cv->src == NULL)
		tmp = xscratch(&Slot[slot], CONV_CHUNK * es);
	for (; b < e; b++) {
		i0 = b * CONV_CHUNK;
		n = min_u64(CONV_CHUNK, cv->n - i0);
		if (cv->src != NULL) {
			peftio_to_f32(cv->sdt, (const char *)cv->src +
			    (cv->e0 + i0) * es, cv->f + i0, n);
			continue;
		}
		if (peftio_ckpt_read(cv->in, cv->idx, (cv->e0 + i0) * es, tmp,
		    n * es, &cv->err) != 0) {
			cv->rc = -1;
			return;
		}
		peftio_to_f32(cv->sdt, tmp, cv->f + i0, n);
	}
}

/* Values [b, e) of the block from f32 to the output dtype. */
static void
from_f32_range(void *arg, uint64_t b, uint64_t e)
{
	struct conv *cv = arg;
	size_t es = peftio_dtype_bits(cv->ddt) / 8;
	uint64_t i0 = b * CONV_CHUNK, i1 = min_u64(e * CONV_CHUNK, cv->n);

	peftio_from_f32(cv->ddt, cv->f + i0, (char *)cv->dst + i0 * es,
	    i1 - i0);
}

/*
 * The merged (or dequantized, converted) values of tensor i in dtype dt,
 * a block of rows at a time, so that memory holds BLOCK_VALUES of the
 * tensor and not all of it: each block goes to the output writer as a
 * piece of the tensor, or, when whole is not NULL, into whole (the
 * complete tensor in dt, *nbytes long).  Both threads convert; the base
 * is read with pread(2) a chunk at a time.
 */
static int
compute(struct ctx *c, size_t i, enum peftio_dtype dt, struct peftio_ckptw *w,
    struct peftio_scratch *whole, uint64_t *nbytes, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c->in, i);
	struct item *it = &c->items[i];
	uint64_t n = it->is_bnb ? it->bw.qs.numel : ti->numel, nb, rows, cols;
	uint64_t r0, nr, brows;
	size_t des = peftio_dtype_bits(dt) / 8;
	struct cli_wjob *j;
	struct conv cv;
	int rc = 0;

	memset(&cv, 0, sizeof(cv));
	cv.in = c->in;
	cv.idx = i;
	cv.sdt = ti->dtype;
	cv.ddt = dt;
	peftio_dtype_nbytes(dt, n, nbytes);
	if (it->is_bnb) {
		/* Dequantize as bitsandbytes does, into the dtype the
		 * values will be stored in (what nf4-quant -d writes). */
		peftio_dtype_nbytes(dt, n, &nb);
		cv.src = xscratch(&Deq, nb);
		cv.sdt = dt;
		if ((rc = peftio_bnb_dequantize(c->in, &it->bw, dt,
		    (void *)cv.src, O.jobs, err)) != 0)
			return rc;
	} else if (it->is_bnb8) {
		/* int8_vectorwise_dequant, in the dtype of the result. */
		peftio_dtype_nbytes(dt, n, &nb);
		cv.src = xscratch(&Deq, nb);
		cv.sdt = dt;
		if ((rc = peftio_bnb8_dequantize(c->in, &it->bw8, dt,
		    (void *)cv.src, O.jobs, err)) != 0)
			return rc;
	}
	if (it->touched &&
	    (rc = peftio_merge_begin(c->m, ti->name, n, err)) != 0)
		return rc;
	/* Rows as the merge counts them: a 1-D tensor has one value each. */
	rows = it->is_bnb ? (it->bw.qs.ndim ? it->bw.qs.shape[0] : 1) :
	    ti->ndim ? ti->shape[0] : 1;
	if (rows == 0)
		rows = 1;
	cols = n / rows;
	brows = cols ? BLOCK_VALUES / cols / PEFTIO_MERGE_ROWS *
	    PEFTIO_MERGE_ROWS : rows;
	if (brows == 0)
		brows = PEFTIO_MERGE_ROWS;
	if (whole != NULL)
		xscratch(whole, *nbytes);
	for (r0 = 0; r0 < rows && rc == 0; r0 += nr) {
		nr = min_u64(brows, rows - r0);
		cv.e0 = r0 * cols;
		cv.n = nr * cols;
		cv.f = xscratch(&Vals, cv.n * sizeof(float));
		peftio_parallel_slots(O.jobs, (cv.n + CONV_CHUNK - 1) /
		    CONV_CHUNK, 1, to_f32_range, &cv);
		if ((rc = cv.rc) != 0) {
			*err = cv.err;
			break;
		}
		if (it->touched && (rc = peftio_merge_rows(c->m, cv.f, r0, nr,
		    dt, err)) != 0)
			break;
		if (whole != NULL)
			cv.dst = (char *)whole->p + cv.e0 * des;
		else {
			j = cli_writer_slot();
			j->w = w;
			j->name = ti->name;
			j->len = cv.n * des;
			cv.dst = xscratch(&j->buf[0], j->len);
		}
		peftio_parallel_for(O.jobs, (cv.n + CONV_CHUNK - 1) /
		    CONV_CHUNK, 1, from_f32_range, &cv);
		if (whole == NULL)
			rc = cli_writer_submit(cli_job_write, err);
	}
	peftio_merge_end(c->m);
	peftio_ckpt_release(c->in, i);
	return rc;
}

/* ------------------------------------------------------------------ */
/* 4-bit output (--requant)                                            */

struct qjob {
	enum peftio_q4type	 type;
	enum peftio_dtype	 dt;
	const void		*in;
	uint64_t		 n, bs;
	uint8_t			*packed;
	float			*absmax;
};

static void
quant_range(void *arg, uint64_t b, uint64_t e)
{
	struct qjob *j = arg;

	peftio_q4_quantize(j->type, j->dt, j->in, j->n, j->bs, b, e,
	    j->packed, j->absmax);
}

static int
requant_values(struct ctx *c, size_t i, uint8_t **packed, float **absmax,
    struct peftio_error *err)
{
	struct item *it = &c->items[i];
	struct qjob j;
	uint64_t nbytes, nb = ceil_div(it->qs.numel, it->qs.blocksize);
	int rc;

	if ((rc = compute(c, i, it->qs.dtype, NULL, &ReqIn, &nbytes,
	    err)) != 0)
		return rc;
	*packed = xmalloc((it->qs.numel + 1) / 2);
	*absmax = xmalloc(nb * sizeof(float));
	j.type = it->qs.type;
	j.dt = it->qs.dtype;
	j.in = ReqIn.p;
	j.n = it->qs.numel;
	j.bs = it->qs.blocksize;
	j.packed = *packed;
	j.absmax = *absmax;
	peftio_parallel_for(O.jobs, nb, 4096, quant_range, &j);
	return 0;
}

static int
declare_requant(struct ctx *c, struct peftio_ckptw *w, size_t i,
    struct peftio_error *err)
{
	struct item *it = &c->items[i];
	const struct peftio_bnb_weight *bw = &it->bw;
	size_t comp[5];
	const struct peftio_tensor_info *ti;
	uint64_t shape[1];
	size_t k, nc = 0;
	int rc;

	if ((rc = peftio_quant_state_json(&it->qs, &it->qs_json, &it->qs_len,
	    err)) != 0)
		return rc;
	comp[nc++] = bw->weight;
	comp[nc++] = bw->absmax;
	comp[nc++] = bw->quant_map;
	if (bw->qs.double_quant) {
		comp[nc++] = bw->nested_absmax;
		comp[nc++] = bw->nested_quant_map;
	}
	for (k = 0; k < nc && rc == 0; k++) {
		ti = peftio_ckpt_tensor(c->in, comp[k]);
		rc = peftio_ckptw_declare(w, it->shard, ti->name, ti->dtype,
		    ti->ndim, ti->shape, err);
	}
	ti = peftio_ckpt_tensor(c->in, bw->quant_state);
	shape[0] = it->qs_len;
	if (rc == 0)
		rc = peftio_ckptw_declare(w, it->shard, ti->name, PEFTIO_U8, 1,
		    shape, err);
	return rc;
}

static int
prepass_requant(struct ctx *c, size_t n, struct peftio_error *err)
{
	uint8_t *packed;
	float *am;
	uint64_t nb;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		struct item *it = &c->items[i];

		if (it->act != REQUANT || !it->qs.double_quant)
			continue;
		if ((rc = requant_values(c, i, &packed, &am, err)) != 0)
			return rc;
		nb = ceil_div(it->qs.numel, it->qs.blocksize);
		it->qs.nested_offset = peftio_dq_offset(am, nb);
		free(packed);
		free(am);
	}
	return 0;
}

static int
write_requant(struct ctx *c, struct peftio_ckptw *w, size_t i,
    struct peftio_error *err)
{
	struct item *it = &c->items[i];
	const struct peftio_bnb_weight *bw = &it->bw;
	uint64_t nb = ceil_div(it->qs.numel, it->qs.blocksize), nnb;
	uint8_t *packed, *q = NULL;
	float *am, *nested = NULL, off;
	const char *name = peftio_ckpt_tensor(c->in, bw->weight)->name;
	int rc;

	if ((rc = requant_values(c, i, &packed, &am, err)) != 0)
		return rc;
	rc = peftio_ckptw_write(w, name, packed, (it->qs.numel + 1) / 2, err);
	if (rc == 0 && it->qs.double_quant) {
		nnb = ceil_div(nb, it->qs.nested_blocksize);
		q = xmalloc(nb);
		nested = xmalloc(nnb * sizeof(float));
		peftio_dq_quantize(am, nb, it->qs.nested_blocksize, &off, q,
		    nested);
		rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
		    bw->absmax)->name, q, nb, err);
		if (rc == 0)
			rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
			    bw->nested_absmax)->name, nested,
			    nnb * sizeof(float), err);
		if (rc == 0)
			rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
			    bw->nested_quant_map)->name, peftio_dynamic_map(),
			    256 * sizeof(float), err);
	} else if (rc == 0)
		rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
		    bw->absmax)->name, am, nb * sizeof(float), err);
	if (rc == 0)
		rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
		    bw->quant_map)->name, peftio_q4_code(it->qs.type),
		    16 * sizeof(float), err);
	if (rc == 0)
		rc = peftio_ckptw_write(w, peftio_ckpt_tensor(c->in,
		    bw->quant_state)->name, it->qs_json, it->qs_len, err);
	free(packed);
	free(am);
	free(q);
	free(nested);
	return rc;
}

/*
 * 8-bit output: the merged weight, in the dtype a plain merge writes
 * (--dtype, else the model's), quantized as Int8Params does (PEFT
 * re-quantizes a merged Linear8bitLt that way).
 */
static int
write_requant8(struct ctx *c, struct peftio_ckptw *w, size_t i,
    struct peftio_error *err)
{
	struct item *it = &c->items[i];
	const struct peftio_bnb8_weight *bw = &it->bw8;
	uint64_t nbytes;
	int8_t *codes;
	float *scb;
	int rc;

	if ((rc = compute(c, i, it->dt, NULL, &ReqIn, &nbytes, err)) != 0)
		return rc;
	codes = xmalloc(bw->rows * bw->cols);
	scb = xmalloc(bw->rows * sizeof(float));
	rc = peftio_bnb8_quantize(it->dt, ReqIn.p, bw->rows, bw->cols,
	    codes, scb, O.jobs, err);
	if (rc == 0)
		rc = peftio_bnb8_write(w, peftio_ckpt_tensor(c->in,
		    bw->weight)->name, codes, scb, bw->rows, bw->cols, err);
	free(codes);
	free(scb);
	return rc;
}

/* ------------------------------------------------------------------ */

static int
plan(struct ctx *c, size_t n, struct peftio_error *err)
{
	struct peftio_bnb_weight bw;
	struct peftio_bnb8_weight bw8;
	struct item *it;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		c->items[i].act = COPY;
		c->items[i].dt = peftio_ckpt_tensor(c->in, i)->dtype;
	}
	for (i = 0; i < n; i++) {
		if ((rc = peftio_bnb8_lookup(c->in, i, &bw8, err)) < 0)
			return rc;
		if (rc > 0) {
			it = &c->items[bw8.weight];
			it->is_bnb8 = 1;
			it->bw8 = bw8;
			it->act = DEQUANT;
			it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
			    peftio_bnb8_dtype(c->in);
			c->items[bw8.scb].act = SKIP;
			if (bw8.format >= 0)
				c->items[bw8.format].act = SKIP;
			continue;
		}
		if ((rc = peftio_bnb_lookup(c->in, i, &bw, err)) < 0)
			return rc;
		if (rc == 0)
			continue;
		it = &c->items[bw.weight];
		it->is_bnb = 1;
		it->bw = bw;
		it->act = DEQUANT;
		it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype : bw.qs.dtype;
		c->items[bw.quant_state].act = SKIP;
		c->items[bw.absmax].act = SKIP;
		c->items[bw.quant_map].act = SKIP;
		if (bw.qs.double_quant) {
			c->items[bw.nested_absmax].act = SKIP;
			c->items[bw.nested_quant_map].act = SKIP;
		}
	}
	return 0;
}

static int
plan_merge(struct ctx *c, size_t n, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct item *it;
	size_t i;
	int hasq = 0;

	for (i = 0; i < n; i++) {
		it = &c->items[i];
		ti = peftio_ckpt_tensor(c->in, i);
		if (it->act == SKIP)
			continue;
		it->touched = peftio_merge_touches(c->m, ti->name);
		if (it->is_bnb) {
			hasq = 1;
			if (O.requant) {
				it->act = it->touched ? REQUANT : COPY;
				it->qs = it->bw.qs;
				if (O.dtype >= 0)
					it->qs.dtype =
					    (enum peftio_dtype)O.dtype;
				if (it->act == COPY) {
					/* untouched: weight and companions
					 * byte for byte */
					it->dt = ti->dtype;
					c->items[it->bw.quant_state].act = COPY;
					c->items[it->bw.absmax].act = COPY;
					c->items[it->bw.quant_map].act = COPY;
					if (it->bw.qs.double_quant) {
						c->items[it->bw.nested_absmax]
						    .act = COPY;
						c->items[it->bw.
						    nested_quant_map].act = COPY;
					}
				}
			}
			continue;
		}
		if (it->is_bnb8) {
			hasq = 1;
			if (O.requant) {
				it->act = it->touched ? REQUANT8 : COPY;
				if (it->act == COPY) {
					it->dt = ti->dtype;
					c->items[it->bw8.scb].act = COPY;
					if (it->bw8.format >= 0)
						c->items[it->bw8.format].act =
						    COPY;
				}
			}
			continue;
		}
		if (it->touched) {
			if (!float_dtype(ti->dtype))
				return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
				    "%s: tensor '%s': %s weights cannot be "
				    "merged", peftio_ckpt_path(c->in),
				    ti->name, peftio_dtype_name(ti->dtype));
			it->act = MERGE;
			it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
			    ti->dtype;
		} else if (O.dtype >= 0 && float_dtype(ti->dtype) &&
		    ti->dtype != (enum peftio_dtype)O.dtype) {
			it->act = CONVERT;
			it->dt = (enum peftio_dtype)O.dtype;
		}
	}
	if (O.requant && !hasq)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: --requant needs a 4-bit or 8-bit base",
		    peftio_ckpt_path(c->in));
	return 0;
}

static int
output_config(struct ctx *c, struct peftio_ckptw *w, int quantized,
    struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(c->in);
	char *path, *text = NULL, *out = NULL;
	size_t len, outlen;
	int rc;

	if (dir == NULL || (!quantized && O.dtype < 0) ||
	    (quantized && O.requant))
		return 0;
	path = str_cat(dir, "/config.json");
	if (access(path, F_OK) != 0) {
		free(path);
		return 0;
	}
	rc = peftio_read_file(path, 64u << 20, &text, &len, err);
	free(path);
	if (rc != 0)
		return rc;
	rc = peftio_config_remove_quant(text, len, O.dtype, &out, &outlen,
	    err);
	if (rc != 0)
		peftio_error_prefix(err, "%s/config.json", dir);
	else
		rc = peftio_ckptw_file(w, "config.json", out, outlen, err);
	free(text);
	free(out);
	return rc;
}

static int
write_one(struct ctx *c, struct peftio_ckptw *w, size_t i,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c->in, i);
	struct item *it = &c->items[i];
	struct cli_wjob *j = cli_writer_slot();
	uint64_t nb;
	int rc;

	switch (it->act) {
	case COPY:
		j->w = w;
		j->name = ti->name;
		j->in = c->in;
		j->idx = i;
		j->dt = ti->dtype;
		return cli_writer_submit(cli_job_copy, err);
	case CONVERT:
	case MERGE:
	case DEQUANT:
		if ((rc = compute(c, i, it->dt, w, NULL, &nb, err)) != 0)
			return rc;
		if (it->touched)
			cli_debug("%s: merged (%s)", ti->name,
			    peftio_dtype_name(it->dt));
		return 0;
	case REQUANT:
		cli_debug("%s: merged and re-quantized", ti->name);
		if ((rc = cli_writer_drain(err)) != 0)
			return rc;
		return write_requant(c, w, i, err);
	case REQUANT8:
		cli_debug("%s: merged and re-quantized to 8 bit", ti->name);
		if ((rc = cli_writer_drain(err)) != 0)
			return rc;
		return write_requant8(c, w, i, err);
	case SKIP:
		break;
	}
	return 0;
}

static int
run(void)
{
	struct peftio_error err = { 0, 0, "" };
	struct peftio_adapter **ads;
	struct peftio_merge_opts mo;
	struct peftio_ckptw *w = NULL;
	const struct peftio_tensor_info *ti;
	struct ctx c = { NULL, NULL, NULL };
	const char **names = NULL;
	size_t n = 0, i, s, nshards, nmerged = 0;
	uint64_t total = 0, done = 0;
	int rc, as_dir, quantized = 0;

	ads = calloc(O.nadapters, sizeof(*ads));
	if (ads == NULL)
		return CLI_EXIT_ERROR;
	for (i = 0; i < O.nadapters; i++)
		if ((rc = peftio_adapter_open(&ads[i], O.adapters[i], &err))
		    != 0)
			goto fail;
	if ((rc = peftio_gpu_rcp_init(&err)) != 0)
		goto fail;
	if ((rc = peftio_ckpt_open(&c.in, O.base, &err)) != 0)
		goto fail;
	n = peftio_ckpt_count(c.in);
	c.items = calloc(n + 1, sizeof(*c.items));
	if (c.items == NULL) {
		rc = peftio_error_set(&err, PEFTIO_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = plan(&c, n, &err)) != 0)
		goto fail;
	memset(&mo, 0, sizeof(mo));
	mo.method = (enum peftio_combine)O.method;
	mo.weights = O.weights;
	mo.density = O.density;
	mo.seed = O.seed;
	mo.unmerge = O.unmerge;
	mo.nthreads = O.jobs;
	if ((rc = peftio_merge_create(&c.m, ads, O.nadapters, &mo, shape_of,
	    &c, &err)) != 0)
		goto fail;
	if ((rc = plan_merge(&c, n, &err)) != 0)
		goto fail;
	for (i = 0; i < n; i++) {
		quantized |= c.items[i].is_bnb | c.items[i].is_bnb8;
		nmerged += c.items[i].touched;
	}
	if (O.requant && (rc = prepass_requant(&c, n, &err)) != 0)
		goto fail;

	as_dir = peftio_ckpt_dir(c.in) != NULL && strcmp(O.out, "-") != 0 &&
	    !ends_with(O.out, ".safetensors");
	nshards = as_dir ? peftio_ckpt_nshards(c.in) : 1;
	if (as_dir) {
		names = calloc(nshards, sizeof(char *));
		if (names == NULL) {
			rc = peftio_error_set(&err, PEFTIO_ENOMEM,
			    "out of memory");
			goto fail;
		}
		for (s = 0; s < nshards; s++)
			names[s] = base_name(peftio_ckpt_shard_name(c.in, s));
	}
	if ((rc = peftio_ckptw_create(&w, O.out, as_dir, nshards, names,
	    O.force ? PEFTIO_W_FORCE : 0, &err)) != 0 ||
	    (rc = cli_writer_start(&err)) != 0)
		goto fail;
	for (i = 0; i < n && rc == 0; i++) {
		struct item *it = &c.items[i];

		ti = peftio_ckpt_tensor(c.in, i);
		it->shard = as_dir ? peftio_ckpt_shard_of(c.in, i) : 0;
		total += ti->nbytes;
		switch (it->act) {
		case COPY:
		case CONVERT:
		case MERGE:
			rc = peftio_ckptw_declare(w, it->shard, ti->name,
			    it->dt, ti->ndim, ti->shape, &err);
			break;
		case DEQUANT:
			/* an 8-bit weight's shape is its stored one */
			rc = it->is_bnb8 ? peftio_ckptw_declare(w, it->shard,
			    ti->name, it->dt, ti->ndim, ti->shape, &err) :
			    peftio_ckptw_declare(w, it->shard, ti->name,
			    it->dt, it->bw.qs.ndim, it->bw.qs.shape, &err);
			break;
		case REQUANT:
			rc = declare_requant(&c, w, i, &err);
			break;
		case REQUANT8:
			rc = peftio_bnb8_declare(w, it->shard, ti->name,
			    it->bw8.rows, it->bw8.cols, &err);
			break;
		case SKIP:
			break;
		}
	}
	/* REQUANT declared the companions; do not write them as SKIPs. */
	if (rc == 0)
		rc = peftio_ckptw_layout(w, &err);
	for (i = 0; i < n && rc == 0; i++) {
		ti = peftio_ckpt_tensor(c.in, i);
		cli_progress(done, total, ti->name);
		rc = write_one(&c, w, i, &err);
		done += ti->nbytes;
	}
	cli_progress_end();
	if (rc == 0)
		rc = cli_writer_drain(&err);
	if (rc == 0 && as_dir)
		rc = output_config(&c, w, quantized, &err);
	if (rc == 0 && as_dir)
		rc = peftio_ckptw_copy_aux(w, peftio_ckpt_dir(c.in), &err);
	if (rc == 0)
		rc = peftio_ckptw_commit(w, &err);
	if (rc == 0 && cli_verbose >= 2)
		cli_debug("%zu adapter(s), %zu base tensors changed%s%s",
		    O.nadapters, nmerged, O.method ? ", combined with " : "",
		    O.method ? peftio_combine_name(O.method) : "");
fail:
	if (rc != 0)
		cli_error(&err);
	/* No write may run while the output is removed. */
	cli_writer_stop();
	peftio_ckptw_free(w);
	peftio_merge_free(c.m);
	peftio_ckpt_close(c.in);
	for (i = 0; i < O.nadapters; i++)
		peftio_adapter_free(ads[i]);
	free(ads);
	if (c.items != NULL)
		for (i = 0; i < n; i++)
			free(c.items[i].qs_json);
	free(c.items);
	free(names);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ------------------------------------------------------------------ */

static int
parse_weights(const char *s)
{
	const char *p = s;
	char *end;
	size_t n = 1;

	for (; *p != '\0'; p++)
		n += *p == ',';
	free(O.weights);
	O.weights = xmalloc(n * sizeof(double));
	O.nweights = 0;
	for (p = s;;) {
		errno = 0;
		O.weights[O.nweights] = strtod(p, &end);
		if (end == p || errno != 0 || !isfinite(O.weights[O.nweights])
		    || (*end != ',' && *end != '\0')) {
			cli_warn("-w: bad weight list '%s'", s);
			return -1;
		}
		O.nweights++;
		if (*end == '\0')
			return 0;
		p = end + 1;
	}
}

static int
parse_density(const char *s)
{
	char *end;

	errno = 0;
	O.density = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !(O.density >= 0) ||
	    O.density > 1) {
		cli_warn("--density: '%s' is not a number in [0, 1]", s);
		return -1;
	}
	O.has_density = 1;
	return 0;
}

/* Fill what the command line left unset from the recipe. */
static int
apply_recipe(const char *path, int set_method, int set_dtype)
{
	struct peftio_error err;
	struct peftio_recipe *r;
	size_t i;

	if (peftio_recipe_load(path, &r, &err) != 0)
		return cli_error(&err);
	if (O.base == NULL && r->base != NULL) {
		O.base = r->base;
		r->base = NULL;
	}
	if (O.nadapters == 0 && r->nadapters > 0) {
		O.adapters = xmalloc(r->nadapters * sizeof(char *));
		for (i = 0; i < r->nadapters; i++) {
			O.adapters[i] = r->adapters[i];
			r->adapters[i] = NULL;
		}
		O.nadapters = r->nadapters;
	}
	if (O.weights == NULL && r->has_weights) {
		O.weights = xmalloc(r->nadapters * sizeof(double));
		memcpy(O.weights, r->weights, r->nadapters * sizeof(double));
		O.nweights = r->nadapters;
	}
	if (!set_method && r->method != NULL &&
	    (O.method = peftio_combine_parse(r->method)) < 0) {
		cli_warn("%s: unknown method '%s'", path, r->method);
		peftio_recipe_free(r);
		return CLI_EXIT_USAGE;
	}
	if (!O.has_density && r->has_density) {
		O.density = r->density;
		O.has_density = 1;
	}
	if (O.seed == 0 && r->has_seed)
		O.seed = r->seed;
	if (!set_dtype && r->dtype != NULL &&
	    (O.dtype = cli_parse_float_dtype(path, r->dtype)) < 0) {
		peftio_recipe_free(r);
		return CLI_EXIT_USAGE;
	}
	O.unmerge |= r->unmerge;
	O.requant |= r->requant;
	if (O.out == NULL && r->output != NULL) {
		O.out = r->output;
		r->output = NULL;
	}
	peftio_recipe_free(r);	/* strings taken above stay allocated */
	return 0;
}

int
main(int argc, char *argv[])
{
	enum { OPT_DENSITY = 256, OPT_SEED, OPT_UNMERGE, OPT_DTYPE,
	    OPT_REQUANT, OPT_RECIPE, OPT_HELP, OPT_VERSION };
	static const struct option longopts[] = {
		{ "weights", required_argument, NULL, 'w' },
		{ "method", required_argument, NULL, 'm' },
		{ "density", required_argument, NULL, OPT_DENSITY },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "unmerge", no_argument, NULL, OPT_UNMERGE },
		{ "dtype", required_argument, NULL, OPT_DTYPE },
		{ "requant", no_argument, NULL, OPT_REQUANT },
		{ "recipe", required_argument, NULL, OPT_RECIPE },
		{ "jobs", required_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	const char *recipe = NULL;
	uint64_t v;
	int ch, set_method = 0, set_dtype = 0, rc, i;

	cli_init("lora-merge");
	O.jobs = peftio_ncpus();
	O.dtype = -1;
	O.density = 1.0;
	while ((ch = getopt_long(argc, argv, "fj:m:o:qvw:", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'f':
			O.force = 1;
			break;
		case 'j':
			if (cli_parse_u64("-j", optarg, 0, 256, &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.jobs = v == 0 ? peftio_ncpus() : (unsigned)v;
			break;
		case 'm':
			if ((O.method = peftio_combine_parse(optarg)) < 0) {
				cli_warn("-m: unknown method '%s'", optarg);
				usage(CLI_EXIT_USAGE);
			}
			set_method = 1;
			break;
		case 'o':
			O.out = optarg;
			break;
		case 'q':
			cli_verbose = 0;
			break;
		case 'v':
			cli_verbose = cli_verbose < 1 ? 2 : cli_verbose + 1;
			break;
		case 'w':
			if (parse_weights(optarg) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_DENSITY:
			if (parse_density(optarg) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_SEED:
			if (cli_parse_u64("--seed", optarg, 0, UINT64_MAX,
			    &O.seed) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_UNMERGE:
			O.unmerge = 1;
			break;
		case OPT_DTYPE:
			if ((O.dtype = cli_parse_float_dtype("--dtype",
			    optarg)) < 0)
				usage(CLI_EXIT_USAGE);
			set_dtype = 1;
			break;
		case OPT_REQUANT:
			O.requant = 1;
			break;
		case OPT_RECIPE:
			recipe = optarg;
			break;
		case OPT_HELP:
			usage(CLI_EXIT_OK);
		case OPT_VERSION:
			printf("lora-merge (peftio) %s\n", peftio_version());
			return CLI_EXIT_OK;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc >= 1)
		O.base = argv[0];
	if (argc >= 2) {
		O.adapters = (const char **)(argv + 1);
		O.nadapters = (size_t)argc - 1;
	}
	if (recipe != NULL &&
	    (rc = apply_recipe(recipe, set_method, set_dtype)) != 0) {
		if (rc == CLI_EXIT_USAGE)
			usage(rc);
		return rc;
	}
	if (O.base == NULL || O.nadapters == 0) {
		if (argc == 1 || recipe != NULL)
			cli_warn("no adapter given");
		usage(CLI_EXIT_USAGE);
	}
	if (O.weights != NULL && O.nweights != O.nadapters) {
		cli_warn("-w: %zu weights for %zu adapters", O.nweights,
		    O.nadapters);
		usage(CLI_EXIT_USAGE);
	}
	if (!O.has_density && (O.method == PEFTIO_COMBINE_TIES ||
	    O.method == PEFTIO_COMBINE_DARE_LINEAR ||
	    O.method == PEFTIO_COMBINE_DARE_TIES ||
	    O.method == PEFTIO_COMBINE_MAGNITUDE_PRUNE)) {
		cli_warn("-m %s needs --density", peftio_combine_name(O.method));
		usage(CLI_EXIT_USAGE);
	}
	if (O.out == NULL) {
		cli_warn("no output given: use -o FILE, -o DIR or -o - for "
		    "standard output");
		usage(CLI_EXIT_USAGE);
	}
	if (strcmp(O.out, "-") == 0 && isatty(STDOUT_FILENO) && !O.force) {
		cli_warn("standard output is a terminal; not writing a "
		    "checkpoint there (use -f to force)");
		return CLI_EXIT_ERROR;
	}
	for (i = 0; (size_t)i < O.nadapters; i++)
		if (strcmp(O.adapters[i], O.out) == 0 ||
		    strcmp(O.base, O.out) == 0) {
			cli_warn("%s: the output would overwrite an input",
			    O.out);
			return CLI_EXIT_ERROR;
		}
	return run();
}
