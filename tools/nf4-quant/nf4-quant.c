/*
 * nf4-quant - quantize a checkpoint to bitsandbytes 4-bit NormalFloat
 * (or FP4) with blockwise absmax and double quantization, and back.
 *
 * The output is what transformers + bitsandbytes write with
 * save_pretrained() for a model loaded with load_in_4bit: same tensor
 * names, dtypes, shapes and bytes, and a quantization_config block in
 * config.json.  The library does the work: this program plans, per
 * tensor, what becomes of it, and hands the plan to peftio_transform().
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* What becomes of a tensor planned PEFTIO_XF_CUSTOM. */
struct item {
	int			 quant;	/* else dequantized */
	struct peftio_bnb_out	 bo;	/* quantized: the plan */
	enum peftio_dtype	 dt;	/* dequantized: the output dtype */
};

struct opts {
	enum peftio_q4type	 type;
	uint64_t		 bs;
	int			 dq;
	int			 decode;
	int			 dtype;		/* -1: keep */
	const char		**incl, **excl;
	size_t			 nincl, nexcl;
	int			 allow_nonfinite;
	int			 index_only;
};

static struct opts O = { PEFTIO_Q4_NF4, 64, 1, 0, -1, NULL, NULL, 0, 0, 0,
	0 };
static struct cli_common C;

struct run {
	struct peftio_ckpt	*in;
	struct peftio_xf_item	*xi;
	struct item		*items;
	struct peftio_bnb_weight *bw;	/* dequantized: the input weights */
	size_t			 n, nq;
	uint64_t		 in_bytes;
};

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-dfqv] [-t nf4|fp4] [-b blocksize] [--no-double-quant]\n"
	    "                 [--dtype f16|bf16|f32] [--include glob] "
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
	size_t i;

	for (i = 0; i < r->n; i++) {
		ti = peftio_ckpt_tensor(r->in, i);
		if (strstr(ti->name, PEFTIO_BNB_QUANT_STATE) != NULL)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 4-bit quantized "
			    "(use -d to dequantize)", peftio_ckpt_path(r->in),
			    ti->name);
		if (selected(ti) && peftio_conv1d_weight(ti->name))
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: tensor '%s': a GPT-2 Conv1D weight ([in, out]) "
			    "cannot be quantized yet; leave it out with "
			    "--exclude", peftio_ckpt_path(r->in), ti->name);
		if (!selected(ti)) {
			plan_plain(r, i);
			continue;
		}
		r->xi[i].act = PEFTIO_XF_CUSTOM;
		r->items[i].quant = 1;
		peftio_bnb_plan(&r->items[i].bo.qs, ti, O.type, O.bs, O.dq,
		    O.dtype >= 0 ? (enum peftio_dtype)O.dtype : ti->dtype);
		r->nq++;
	}
	return 0;
}

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

	for (i = 0; i < r->n; i++) {
		if (r->xi[i].act != PEFTIO_XF_CUSTOM)
			continue;
		if ((rc = peftio_bnb_prepass(r->in, i, &r->items[i].bo,
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
	int rc;

	j->ctx = it;
	j->name = peftio_ckpt_tensor(r->in, i)->name;
	/* With double quantization the prepass looked for NaN and Inf. */
	if ((rc = peftio_bnb_quantize_tensor(r->in, i, &it->bo.qs,
	    xscratch(&j->buf[B_PACKED], (n + 1) / 2),
	    xscratch(&j->buf[B_ABSMAX], nb * sizeof(float)),
	    !O.dq && !O.allow_nonfinite, C.jobs, err)) != 0)
		return rc;
	return peftio_xf_submit(x, write_quant, err);
}

/* ------------------------------------------------------------------ */
/* Dequantize                                                          */

static int
plan_dequant(struct run *r, struct peftio_error *err)
{
	size_t i;
	long nw;

	if ((nw = peftio_bnb_group(r->in, r->xi, r->bw, err)) < 0)
		return (int)nw;
	r->nq = (size_t)nw;
	for (i = 0; i < r->n; i++)
		if (r->xi[i].act == PEFTIO_XF_COPY)
			plan_plain(r, i);
		else if (r->xi[i].act == PEFTIO_XF_CUSTOM)
			r->items[i].dt = O.dtype >= 0 ?
			    (enum peftio_dtype)O.dtype : r->bw[i].qs.dtype;
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
	uint64_t al = peftio_bnb_part_align(&r->bw[i]), e0, n;
	uint64_t piece = DEQ_PIECE > al ? DEQ_PIECE / al * al : al;
	struct peftio_xf_job *j;
	int rc = 0;

	for (e0 = 0; e0 < r->bw[i].qs.numel && rc == 0; e0 += n) {
		n = min_u64(piece, r->bw[i].qs.numel - e0);
		j = peftio_xf_slot(x);
		j->name = peftio_ckpt_tensor(r->in, i)->name;
		peftio_dtype_nbytes(it->dt, n, &j->len);
		if ((rc = peftio_bnb_dequantize_part(r->in, &r->bw[i], it->dt,
		    xscratch(&j->buf[0], j->len), e0, n, C.jobs, err)) == 0)
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

	if (it->quant)
		return peftio_bnb_declare(peftio_xf_writer(x),
		    r->xi[i].shard, name, &it->bo, err);
	return peftio_xf_declare(x, i, name, it->dt, r->bw[i].qs.ndim,
	    r->bw[i].qs.shape, err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	struct item *it = &r->items[i];
	int rc;

	if (it->quant) {
		rc = quantize_one(x, r, i, err);
		cli_debug("%s: %s %s -> %s%s", ti->name,
		    peftio_dtype_name(ti->dtype),
		    peftio_dtype_name(it->bo.qs.dtype),
		    peftio_q4type_name(O.type),
		    O.dq ? " + double quantization" : "");
	} else {
		rc = dequantize_one(x, r, i, err);
		cli_debug("%s: %s -> %s", ti->name,
		    peftio_q4type_name(r->bw[i].qs.type),
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

	if (it->quant)
		return peftio_bnb_expect(chk, i, name, &it->bo.qs, err);
	return peftio_xf_expect(chk, i, name, it->dt, r->bw[i].qs.ndim,
	    r->bw[i].qs.shape, err);
}

/* config.json: the quantization_config added, or removed with -d. */
static int
config(void *ctx, const char *text, size_t len, char **out, size_t *outlen,
    struct peftio_error *err)
{
	struct run *r = ctx;
	enum peftio_dtype compute_dt = PEFTIO_F32;
	size_t i;

	if (O.decode)
		return peftio_config_remove_quant(text, len, O.dtype, out,
		    outlen, err);
	for (i = 0; i < r->n; i++)
		if (r->items[i].quant) {
			compute_dt = r->items[i].bo.qs.dtype;
			break;
		}
	return peftio_config_add_quant(text, len, O.type, O.dq, compute_dt,
	    out, outlen, err);
}

static void
progress(void *ctx, uint64_t done, uint64_t total, const char *what)
{
	if (what != NULL)
		cli_progress(done, total, what);
	else
		cli_progress_end();
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
	declare, compute, config, progress, report, expect, cli_note
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
	if ((rc = peftio_ckpt_open(&r.in, input, &err)) != 0)
		return cli_error(&err);
	r.n = peftio_ckpt_count(r.in);
	r.xi = xcalloc(r.n + 1, sizeof(*r.xi));
	r.items = xcalloc(r.n + 1, sizeof(*r.items));
	r.bw = xcalloc(r.n + 1, sizeof(*r.bw));
	rc = O.decode ? plan_dequant(&r, &err) : peftio_check_unquantized(r.in, &err);
	if (rc == 0 && !O.decode)
		rc = plan_quant(&r, &err);
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
	free(r.bw);
	free(r.xi);
	peftio_ckpt_close(r.in);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int
main(int argc, char *argv[])
{
	enum { OPT_NODQ = 256, OPT_DTYPE, OPT_INCL, OPT_EXCL, OPT_NONFINITE,
	    OPT_INDEX };
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "blocksize", required_argument, NULL, 'b' },
		{ "no-double-quant", no_argument, NULL, OPT_NODQ },
		{ "decompress", no_argument, NULL, 'd' },
		{ "dequantize", no_argument, NULL, 'd' },
		{ "dtype", required_argument, NULL, OPT_DTYPE },
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
			if ((t = peftio_q4type_parse(optarg)) < 0) {
				cli_warn("-t: unknown type %s (use nf4 or fp4)",
				    optarg);
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
