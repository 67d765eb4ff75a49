/*
 * nf4-quant - quantize a checkpoint to bitsandbytes 4-bit NormalFloat
 * (or FP4) with blockwise absmax and double quantization, or to
 * LLM.int8, and back.
 *
 * The output is what transformers + bitsandbytes write with
 * save_pretrained() for a model loaded with load_in_4bit (or
 * load_in_8bit): same tensor names, dtypes, shapes and bytes, and a
 * quantization_config block in config.json.  The library does the work: this program plans, per
 * tensor, what becomes of it, and hands the plan to peftio_transform().
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli.h"

/* What becomes of a tensor planned PEFTIO_XF_CUSTOM. */
struct item {
	int			 quant;	/* else dequantized */
	int			 eight;	/* 8-bit (bw8), else 4-bit */
	int			 transpose; /* a Conv1D weight, [in, out] */
	struct peftio_bnb_out	 bo;	/* quantized: the plan */
	struct peftio_bnb_weight bw;	/* dequantized: the input weight */
	struct peftio_bnb8_weight bw8;	/* 8-bit: rows and columns */
	enum peftio_dtype	 dt;	/* dequantized: the output dtype */
	int			 ndim;	/* dequantized: the output shape */
	uint64_t		 shape[2];
};

struct opts {
	enum peftio_q4type	 type;
	int			 int8;		/* -t int8 */
	enum peftio_dtype	 storage;	/* bnb_4bit_quant_storage */
	uint64_t		 bs;
	int			 dq;
	int			 decode;
	int			 dtype;		/* -1: keep */
	const char		**incl, **excl;
	size_t			 nincl, nexcl;
	int			 allow_nonfinite;
	int			 index_only;
};

static struct opts O = { PEFTIO_Q4_NF4, 0, PEFTIO_U8, 64, 1, 0, -1, NULL,
	NULL, 0, 0, 0, 0 };
static struct cli_common C;

struct run {
	struct peftio_ckpt	*in;
	struct peftio_xf_item	*xi;
	struct item		*items;
	size_t			 n, nq;
	uint64_t		 in_bytes;
};

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-dfqv] [-t nf4|fp4|int8] [-b blocksize] "
	    "[--no-double-quant]\n"
	    "                 [--storage u8|bf16|f16|f32] "
	    "[--dtype f16|bf16|f32]\n"
	    "                 [--include glob] "
	    "[--exclude glob]\n"
	    "                 [--allow-nonfinite] [-j jobs] [-o output] "
	    "input\n"
	    "       %s --index-only [-dfqv] [options as above] -o outdir "
	    "indir\n", cli_progname, cli_progname);
	exit(status);
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

/* A Linear weight (what transformers quantizes), or one --include
 * names, unless --exclude does. */
static int
selected(const struct peftio_tensor_info *ti)
{
	if (!float_dtype(ti->dtype) || ti->numel == 0)
		return 0;
	if (peftio_glob_any(O.excl, O.nexcl, ti->name))
		return 0;
	return peftio_linear_weight(ti->name, ti->ndim) ||
	    peftio_glob_any(O.incl, O.nincl, ti->name);
}

/* Other float tensors: converted with --dtype. */
static void
plan_plain(struct run *r, size_t i)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);

	r->xi[i].act = PEFTIO_XF_COPY;
	if (O.dtype >= 0 && float_dtype(ti->dtype) &&
	    ti->dtype != (enum peftio_dtype)O.dtype) {
		r->xi[i].act = PEFTIO_XF_CONVERT;
		r->xi[i].dt = (enum peftio_dtype)O.dtype;
	}
}

/* ------------------------------------------------------------------ */
/* Quantize                                                            */

static int
plan_quant(struct run *r, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct item *it;
	uint64_t shape[2];
	size_t i;
	int rc;

	if ((rc = peftio_check_unquantized(r->in, err)) != 0)
		return rc;
	for (i = 0; i < r->n; i++) {
		ti = peftio_ckpt_tensor(r->in, i);
		if (!selected(ti)) {
			plan_plain(r, i);
			continue;
		}
		it = &r->items[i];
		r->xi[i].act = PEFTIO_XF_CUSTOM;
		it->quant = 1;
		it->eight = O.int8;
		/* transformers transposes GPT-2's Conv1D weights to
		 * [out, in] when it quantizes them. */
		it->transpose = ti->ndim == 2 &&
		    peftio_conv1d_weight(ti->name);
		peftio_bnb_plan(&it->bo.qs, ti, O.type, O.bs, O.dq,
		    O.dtype >= 0 ? (enum peftio_dtype)O.dtype : ti->dtype);
		it->bo.storage = O.storage;
		if (it->transpose) {
			it->bo.qs.shape[0] = ti->shape[1];
			it->bo.qs.shape[1] = ti->shape[0];
		}
		if (O.int8) {
			if (ti->ndim != 2)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': 8-bit quantization "
				    "needs a 2-D weight, not %d-D",
				    peftio_ckpt_path(r->in), ti->name,
				    ti->ndim);
			it->bw8.rows = it->bo.qs.shape[0];
			it->bw8.cols = it->bo.qs.shape[1];
		} else if (peftio_bnb_storage_shape(O.storage, ti->numel,
		    shape, err) != 0) {
			peftio_error_prefix(err, "%s: tensor '%s'",
			    peftio_ckpt_path(r->in), ti->name);
			return err->code;
		}
		r->nq++;
	}
	return 0;
}

/* A Conv1D weight, transposed, in memory (the codec reads the others
 * from the file a piece at a time). */
static struct peftio_scratch Vals[2];

/*
 * With double quantization the quant_state blob holds the mean of the
 * absmax values, and its length (which the header records) depends on
 * that number; so a first pass computes every offset.  It reads each
 * weight once more but keeps nothing but one float per tensor.
 */
static int
prepass_offsets(struct run *r, struct peftio_error *err)
{
	size_t i;
	int rc;

	const void *v;
	uint64_t nb;
	float *am;
	uint8_t *pk;

	for (i = 0; i < r->n; i++) {
		struct item *it = &r->items[i];

		if (r->xi[i].act != PEFTIO_XF_CUSTOM || it->eight)
			continue;
		if (it->transpose) {
			nb = ceil_div(it->bo.qs.numel, it->bo.qs.blocksize);
			if ((rc = peftio_bnb_values(r->in, i, 1,
			    it->bo.qs.dtype, !O.allow_nonfinite, Vals, &v,
			    err)) != 0)
				return rc;
			pk = xmalloc((it->bo.qs.numel + 1) / 2);
			am = xmalloc(nb * sizeof(float));
			peftio_bnb_quantize_mem(&it->bo.qs, v, pk, am, C.jobs);
			it->bo.qs.nested_offset = peftio_dq_offset(am, nb);
			free(pk);
			free(am);
		} else if ((rc = peftio_bnb_prepass(r->in, i, &it->bo,
		    !O.allow_nonfinite, C.jobs, err)) != 0)
			return rc;
		peftio_ckpt_release(r->in, i);
		cli_progress(i, r->n, "scanning");
	}
	return 0;
}

/* The slot's buffers: codes, absmax, and two for double quantization. */
enum { B_PACKED, B_ABSMAX, B_DQ };

static int
write_quant(struct peftio_xf_job *j)
{
	struct item *it = j->ctx;

	return peftio_bnb_write(j->w, j->name, &it->bo, j->buf[B_PACKED].p,
	    j->buf[B_ABSMAX].p, &j->buf[B_DQ], &j->err);
}

static int
quantize_one(struct peftio_xf *x, struct run *r, size_t i,
    struct peftio_error *err)
{
	struct peftio_xf_job *j = peftio_xf_slot(x);
	struct item *it = &r->items[i];
	uint64_t n = it->bo.qs.numel, nb = ceil_div(n, O.bs);
	const void *v;
	int rc;

	j->ctx = it;
	j->name = peftio_ckpt_tensor(r->in, i)->name;
	if (it->transpose) {
		if ((rc = peftio_bnb_values(r->in, i, 1, it->bo.qs.dtype,
		    !O.dq && !O.allow_nonfinite, Vals, &v, err)) != 0)
			return rc;
		peftio_bnb_quantize_mem(&it->bo.qs, v, xscratch(
		    &j->buf[B_PACKED], (n + 1) / 2), xscratch(
		    &j->buf[B_ABSMAX], nb * sizeof(float)), C.jobs);
		peftio_ckpt_release(r->in, i);
		return peftio_xf_submit(x, write_quant, err);
	}
	/* With double quantization the prepass looked for NaN and Inf. */
	if ((rc = peftio_bnb_quantize_tensor(r->in, i, &it->bo.qs,
	    xscratch(&j->buf[B_PACKED], (n + 1) / 2),
	    xscratch(&j->buf[B_ABSMAX], nb * sizeof(float)),
	    !O.dq && !O.allow_nonfinite, C.jobs, err)) != 0)
		return rc;
	return peftio_xf_submit(x, write_quant, err);
}

/* The slot's buffers for an 8-bit weight: codes and SCB. */
enum { B8_CODES, B8_SCB };

static int
write_quant8(struct peftio_xf_job *j)
{
	struct item *it = j->ctx;

	return peftio_bnb8_write(j->w, j->name, j->buf[B8_CODES].p,
	    j->buf[B8_SCB].p, it->bw8.rows, it->bw8.cols, &j->err);
}

/*
 * bitsandbytes' Int8Params: the weight (at --dtype, as transformers
 * loads it with that torch_dtype) cast to float16, row-wise absmax.
 */
static int
quantize_one8(struct peftio_xf *x, struct run *r, size_t i,
    struct peftio_error *err)
{
	struct peftio_xf_job *j = peftio_xf_slot(x);
	struct item *it = &r->items[i];
	uint64_t n = it->bw8.rows * it->bw8.cols;
	const void *v;
	int rc;

	j->ctx = it;
	j->name = peftio_ckpt_tensor(r->in, i)->name;
	if ((rc = peftio_bnb_values(r->in, i, it->transpose, it->bo.qs.dtype,
	    !O.allow_nonfinite, Vals, &v, err)) == 0)
		rc = peftio_bnb8_quantize(it->bo.qs.dtype, v, it->bw8.rows,
		    it->bw8.cols, xscratch(&j->buf[B8_CODES], n),
		    xscratch(&j->buf[B8_SCB], it->bw8.rows * sizeof(float)),
		    C.jobs, err);
	peftio_ckpt_release(r->in, i);
	if (rc != 0)
		return rc;
	return peftio_xf_submit(x, write_quant8, err);
}

/* ------------------------------------------------------------------ */
/* Dequantize                                                          */

static int
plan_dequant(struct run *r, struct peftio_error *err)
{
	struct peftio_bnb_weight bw;
	struct peftio_bnb8_weight bw8;
	struct item *it;
	size_t i;
	int rc;

	for (i = 0; i < r->n; i++)
		r->xi[i].act = PEFTIO_XF_COPY;
	for (i = 0; i < r->n; i++) {
		if ((rc = peftio_bnb8_lookup(r->in, i, &bw8, err)) < 0)
			return rc;
		if (rc > 0) {
			it = &r->items[bw8.weight];
			it->eight = 1;
			it->bw8 = bw8;
			it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
			    peftio_bnb8_dtype(r->in);
			it->transpose = peftio_conv1d_weight(
			    peftio_ckpt_tensor(r->in, bw8.weight)->name);
			it->ndim = 2;
			it->shape[0] = it->transpose ? bw8.cols : bw8.rows;
			it->shape[1] = it->transpose ? bw8.rows : bw8.cols;
			r->xi[bw8.weight].act = PEFTIO_XF_CUSTOM;
			r->xi[bw8.scb].act = PEFTIO_XF_SKIP;
			if (bw8.format >= 0)
				r->xi[bw8.format].act = PEFTIO_XF_SKIP;
			r->nq++;
			continue;
		}
		if ((rc = peftio_bnb_lookup(r->in, i, &bw, err)) < 0)
			return rc;
		if (rc == 0)
			continue;
		it = &r->items[bw.weight];
		it->bw = bw;
		it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype : bw.qs.dtype;
		it->transpose = bw.qs.ndim == 2 && peftio_conv1d_weight(
		    peftio_ckpt_tensor(r->in, bw.weight)->name);
		it->ndim = bw.qs.ndim;
		memcpy(it->shape, bw.qs.shape, sizeof(it->shape));
		if (it->transpose) {
			it->shape[0] = bw.qs.shape[1];
			it->shape[1] = bw.qs.shape[0];
		}
		r->xi[bw.weight].act = PEFTIO_XF_CUSTOM;
		r->xi[bw.quant_state].act = PEFTIO_XF_SKIP;
		r->xi[bw.absmax].act = PEFTIO_XF_SKIP;
		r->xi[bw.quant_map].act = PEFTIO_XF_SKIP;
		if (bw.qs.double_quant) {
			r->xi[bw.nested_absmax].act = PEFTIO_XF_SKIP;
			r->xi[bw.nested_quant_map].act = PEFTIO_XF_SKIP;
		}
		r->nq++;
	}
	for (i = 0; i < r->n; i++)
		if (r->xi[i].act == PEFTIO_XF_COPY)
			plan_plain(r, i);
	return 0;
}

/* Values dequantized and written at a time (then rounded to the part
 * alignment): two pieces are held, not two tensors. */
#define DEQ_PIECE	(8u << 20)

static int
dequantize_one(struct peftio_xf *x, struct run *r, size_t i,
    struct peftio_error *err)
{
	struct item *it = &r->items[i];
	uint64_t al, e0, n, piece, total;
	size_t es = peftio_dtype_bits(it->dt) / 8;
	struct peftio_xf_job *j;
	void *buf;
	int rc = 0;

	if (it->eight) {
		/* whole rows */
		al = it->bw8.cols;
		total = it->bw8.rows * it->bw8.cols;
	} else {
		al = peftio_bnb_part_align(&it->bw);
		total = it->bw.qs.numel;
	}
	piece = DEQ_PIECE > al ? DEQ_PIECE / al * al : al;
	if (it->transpose) {
		/* Back to GPT-2's [in, out]: the whole weight at once. */
		j = peftio_xf_slot(x);
		j->name = peftio_ckpt_tensor(r->in, i)->name;
		j->len = total * es;
		buf = xscratch(&Vals[0], j->len);
		rc = it->eight ? peftio_bnb8_dequantize(r->in, &it->bw8,
		    it->dt, buf, C.jobs, err) : peftio_bnb_dequantize(r->in,
		    &it->bw, it->dt, buf, C.jobs, err);
		if (rc == 0) {
			peftio_transpose(buf, xscratch(&j->buf[0], j->len),
			    it->shape[1], it->shape[0], es);
			rc = peftio_xf_submit(x, peftio_xf_job_write, err);
		}
		peftio_ckpt_release(r->in, i);
		return rc;
	}
	for (e0 = 0; e0 < total && rc == 0; e0 += n) {
		n = min_u64(piece, total - e0);
		j = peftio_xf_slot(x);
		j->name = peftio_ckpt_tensor(r->in, i)->name;
		peftio_dtype_nbytes(it->dt, n, &j->len);
		buf = xscratch(&j->buf[0], j->len);
		rc = it->eight ? peftio_bnb8_dequantize_part(r->in, &it->bw8,
		    it->dt, buf, e0 / al, n / al, C.jobs, err) :
		    peftio_bnb_dequantize_part(r->in, &it->bw, it->dt, buf,
		    e0, n, C.jobs, err);
		if (rc == 0)
			rc = peftio_xf_submit(x, peftio_xf_job_write, err);
	}
	peftio_ckpt_release(r->in, i);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The hooks of the transform                                          */

static int
declare(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	struct item *it = &r->items[i];
	const char *name = peftio_ckpt_tensor(r->in, i)->name;

	if (it->quant && it->eight)
		return peftio_bnb8_declare(peftio_xf_writer(x),
		    r->xi[i].shard, name, it->bw8.rows, it->bw8.cols, err);
	if (it->quant)
		return peftio_bnb_declare(peftio_xf_writer(x),
		    r->xi[i].shard, name, &it->bo, err);
	return peftio_xf_declare(x, i, name, it->dt, it->ndim, it->shape,
	    err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	struct item *it = &r->items[i];
	int rc;

	if (it->quant && it->eight) {
		rc = quantize_one8(x, r, i, err);
		cli_debug("%s: %s -> int8", ti->name,
		    peftio_dtype_name(ti->dtype));
	} else if (it->quant) {
		rc = quantize_one(x, r, i, err);
		cli_debug("%s: %s %s -> %s%s", ti->name,
		    peftio_dtype_name(ti->dtype),
		    peftio_dtype_name(it->bo.qs.dtype),
		    peftio_q4type_name(O.type),
		    O.dq ? " + double quantization" : "");
	} else {
		rc = dequantize_one(x, r, i, err);
		cli_debug("%s: %s -> %s", ti->name, it->eight ? "int8" :
		    peftio_q4type_name(it->bw.qs.type),
		    peftio_dtype_name(it->dt));
	}
	r->in_bytes += ti->nbytes;
	return rc;
}

static int
expect(struct peftio_xf_check *chk, size_t i, void *ctx,
    struct peftio_error *err)
{
	struct run *r = ctx;
	struct item *it = &r->items[i];
	const char *name = peftio_ckpt_tensor(r->in, i)->name;

	if (it->quant && it->eight)
		return peftio_bnb8_expect(chk, i, name, it->bw8.rows,
		    it->bw8.cols, err);
	if (it->quant)
		return peftio_bnb_expect(chk, i, name, &it->bo, err);
	return peftio_xf_expect(chk, i, name, it->dt, it->ndim, it->shape,
	    err);
}

/* config.json: the quantization_config added, or removed with -d. */
static int
config(void *ctx, const char *text, size_t len, char **out, size_t *outlen,
    struct peftio_error *err)
{
	struct run *r = ctx;
	struct peftio_bnb_config qc;
	size_t i;

	if (O.decode)
		return peftio_config_remove_quant(text, len, O.dtype, out,
		    outlen, err);
	qc.bits = O.int8 ? 8 : 4;
	qc.type = O.type;
	qc.double_quant = O.dq;
	qc.compute = PEFTIO_F32;
	qc.storage = O.storage;
	for (i = 0; i < r->n; i++)
		if (r->items[i].quant) {
			qc.compute = r->items[i].bo.qs.dtype;
			break;
		}
	return peftio_config_add_bnb(text, len, &qc, out, outlen, err);
}

static void
report(void *ctx, const struct peftio_ckptw *w)
{
	struct run *r = ctx;
	uint64_t out_bytes = peftio_ckptw_tensor_bytes(w);

	if (O.index_only)
		cli_debug("%zu shards checked (%zu tensors %s); %llu bytes of "
		    "tensors", peftio_ckpt_nshards(r->in), r->nq,
		    O.decode ? "dequantized" : "quantized",
		    (unsigned long long)out_bytes);
	else
		cli_debug("%zu of %zu tensors %s; %llu bytes of tensors in, "
		    "%llu out (%.1f%%)", r->nq, r->n,
		    O.decode ? "dequantized" : "quantized",
		    (unsigned long long)r->in_bytes,
		    (unsigned long long)out_bytes, r->in_bytes ?
		    100.0 * out_bytes / r->in_bytes : 100.0);
}

static const struct peftio_xf_ops Ops = {
	declare, compute, config, cli_xf_progress, report, expect, cli_note
};

static int
run(const char *input)
{
	struct peftio_error err = { 0, 0, "" };
	struct run r;
	unsigned flags = C.force ? PEFTIO_W_FORCE : 0;
	size_t i;
	int rc;

	memset(&r, 0, sizeof(r));
	if ((rc = peftio_gpu_rcp_init(&err)) != 0)
		return cli_error(&err);
	if ((rc = peftio_ckpt_open_stream(&r.in, input, &err)) != 0)
		return cli_error(&err);
	r.n = peftio_ckpt_count(r.in);
	r.xi = xcalloc(r.n + 1, sizeof(*r.xi));
	r.items = xcalloc(r.n + 1, sizeof(*r.items));
	rc = O.decode ? plan_dequant(&r, &err) : plan_quant(&r, &err);
	if (rc == 0 && O.index_only)
		rc = peftio_transform_index(r.in, r.xi, &Ops, &r, C.out, flags,
		    &err);
	else if (rc == 0) {
		if (!O.decode && O.dq)
			rc = prepass_offsets(&r, &err);
		if (rc == 0)
			rc = peftio_transform(r.in, r.xi, &Ops, &r, C.out,
			    flags, &err);
	}
	if (rc != 0)
		cli_error(&err);
	for (i = 0; i < r.n; i++)
		peftio_bnb_out_free(&r.items[i].bo);
	free(r.items);
	free(r.xi);
	peftio_ckpt_close(r.in);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int
main(int argc, char *argv[])
{
	enum { OPT_NODQ = 256, OPT_DTYPE, OPT_INCL, OPT_EXCL, OPT_NONFINITE,
	    OPT_INDEX, OPT_STORAGE };
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "blocksize", required_argument, NULL, 'b' },
		{ "no-double-quant", no_argument, NULL, OPT_NODQ },
		{ "decompress", no_argument, NULL, 'd' },
		{ "dequantize", no_argument, NULL, 'd' },
		{ "dtype", required_argument, NULL, OPT_DTYPE },
		{ "storage", required_argument, NULL, OPT_STORAGE },
		{ "include", required_argument, NULL, OPT_INCL },
		{ "exclude", required_argument, NULL, OPT_EXCL },
		{ "allow-nonfinite", no_argument, NULL, OPT_NONFINITE },
		{ "index-only", no_argument, NULL, OPT_INDEX },
		CLI_COMMON_LONG,
		{ NULL, 0, NULL, 0 }
	};
	uint64_t v;
	int ch, t, rc;

	cli_init("nf4-quant");
	cli_common_init(&C);
	O.incl = xcalloc((size_t)argc + 1, sizeof(char *));
	O.excl = xcalloc((size_t)argc + 1, sizeof(char *));
	while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORT "b:dt:",
	    longopts, NULL)) != -1) {
		if (cli_common_opt(&C, ch, optarg, usage))
			continue;
		switch (ch) {
		case 'b':
			if (cli_parse_u64("-b", optarg, 32, 4096, &v) != 0)
				usage(CLI_EXIT_USAGE);
			if (!peftio_q4_blocksize_ok(v)) {
				cli_warn("-b: blocksize must be 32, 64, 128, "
				    "256, 512, 1024, 2048 or 4096");
				usage(CLI_EXIT_USAGE);
			}
			O.bs = v;
			break;
		case 'd':
			O.decode = 1;
			break;
		case 't':
			O.int8 = strcmp(optarg, "int8") == 0;
			if (O.int8)
				break;
			if ((t = peftio_q4type_parse(optarg)) < 0) {
				cli_warn("-t: unknown type %s (use nf4, fp4 or "
				    "int8)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			O.type = (enum peftio_q4type)t;
			break;
		case OPT_NODQ:
			O.dq = 0;
			break;
		case OPT_DTYPE:
			if ((O.dtype = cli_parse_float_dtype("--dtype",
			    optarg)) < 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_STORAGE:
			if ((t = peftio_bnb_storage_parse(optarg)) < 0) {
				cli_warn("--storage: unknown dtype %s (use u8, "
				    "bf16, f16 or f32)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			O.storage = (enum peftio_dtype)t;
			break;
		case OPT_INCL:
			O.incl[O.nincl++] = optarg;
			break;
		case OPT_EXCL:
			O.excl[O.nexcl++] = optarg;
			break;
		case OPT_NONFINITE:
			O.allow_nonfinite = 1;
			break;
		case OPT_INDEX:
			O.index_only = 1;
			break;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1)
		usage(CLI_EXIT_USAGE);
	if (O.int8 && (O.storage != PEFTIO_U8 || !O.dq || O.bs != 64)) {
		cli_warn("-t int8: --storage, -b and --no-double-quant are "
		    "for 4-bit types");
		usage(CLI_EXIT_USAGE);
	}
	if (O.index_only) {
		if (C.out == NULL || strcmp(C.out, "-") == 0 ||
		    cli_ends_with(C.out, ".safetensors")) {
			cli_warn("--index-only writes into the directory of "
			    "the shards: use -o DIR");
			usage(CLI_EXIT_USAGE);
		}
		return run(argv[0]);
	}
	if ((rc = cli_common_output(&C, (const char *const *)argv, 1,
	    usage)) != 0)
		return rc;
	return run(argv[0]);
}
