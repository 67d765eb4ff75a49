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
#include "report.h"

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
	int			 json;
};

static struct opts O = { PEFTIO_Q4_NF4, 0, PEFTIO_U8, 64, 1, 0, -1, NULL,
	NULL, 0, 0, 0, 0, 0 };
static struct cli_common C;
#define VERB	(O.decode ? "dequantized" : "quantized")

struct run {
	struct peftio_ckpt	*in;
	struct peftio_xf_item	*xi;
	struct peftio_bnb_step	*steps;	/* of PEFTIO_XF_CUSTOM tensors */
	struct peftio_bnb_buffers *buf;	/* reused from weight to weight */
	size_t			 n, nq;
	uint64_t		 in_bytes;
	uint64_t		 out_bytes;	/* of tensors, once written */
};

static void __attribute__((noreturn))
usage(int status)
{
	cli_usage(status);
}

/* ------------------------------------------------------------------ */
/* The hooks of the transform                                          */

static int
declare(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;

	return peftio_bnb_step_declare(x, i, r->xi[i].shard, &r->steps[i],
	    err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	const struct peftio_bnb_step *s = &r->steps[i];
	int rc;

	rc = peftio_bnb_step_compute(x, i, s, !O.allow_nonfinite, r->buf,
	    C.jobs, err);
	cli_quant_step_debug(ti, s, O.type, O.dq);
	r->in_bytes += ti->nbytes;
	return rc;
}

static int
expect(struct peftio_xf_check *chk, size_t i, void *ctx,
    struct peftio_error *err)
{
	struct run *r = ctx;

	return peftio_bnb_step_expect(chk, i, &r->steps[i], err);
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
		if (r->steps[i].quant) {
			qc.compute = r->steps[i].bo.qs.dtype;
			break;
		}
	return peftio_config_add_bnb(text, len, &qc, out, outlen, err);
}

/* The hooks' report (report.c): the totals with -v. */
static void
report(void *ctx, const struct peftio_ckptw *w)
{
	struct run *r = ctx;

	r->out_bytes = peftio_ckptw_tensor_bytes(w);
	cli_quant_written(r->in, r->nq, VERB, O.index_only, r->in_bytes,
	    r->out_bytes);
}

/* --json: what became of input tensor i. */
static const char *
action(void *ctx, size_t i)
{
	struct run *r = ctx;

	return cli_quant_action(&r->xi[i], &r->steps[i], O.type);
}

/* The line that ends a run, and the --json report. */
static int
summary(struct run *r, const char *input)
{
	cli_quant_summary(r->in, r->nq, VERB, O.index_only, input, C.out,
	    r->out_bytes);
	if (!O.json)
		return 0;
	return cli_json_print(cli_report_transform(r->in, C.out, action, r));
}

static const struct peftio_xf_ops Ops = {
	declare, compute, config, cli_xf_progress, report, expect, cli_note
};

static int
run(const char *input)
{
	struct peftio_bnb_quant_opts qo = { O.int8, O.type, O.bs, O.dq,
		O.storage, O.dtype };
	struct peftio_error err = { 0, 0, "" };
	struct run r;
	unsigned flags = C.force ? PEFTIO_W_FORCE : 0;
	size_t i;
	long rc;

	memset(&r, 0, sizeof(r));
	if ((rc = peftio_gpu_rcp_init(&err)) != 0)
		return cli_error(&err);
	cli_meter(NULL, 0);
	if ((rc = peftio_ckpt_open_stream(&r.in, input, &err)) != 0)
		return cli_error(&err);
	r.n = peftio_ckpt_count(r.in);
	r.xi = xcalloc(r.n + 1, sizeof(*r.xi));
	r.steps = xcalloc(r.n + 1, sizeof(*r.steps));
	if ((r.buf = peftio_bnb_buffers_new()) == NULL) {
		cli_warn("out of memory");
		exit(CLI_EXIT_ERROR);
	}
	/* What becomes of each tensor (bnb_step.c). */
	rc = peftio_bnb_steps_plan(r.in, O.decode, &qo, O.incl, O.nincl,
	    O.excl, O.nexcl, r.xi, r.steps, &err);
	if (rc >= 0) {
		r.nq = (size_t)rc;
		rc = 0;
	}
	if (rc == 0 && O.index_only) {
		cli_meter("tensors", 0);
		rc = peftio_transform_index(r.in, r.xi, &Ops, &r, C.out, flags,
		    &err);
	} else if (rc == 0) {
		/* With double quantization the quant_state blob holds the
		 * mean of the absmax values, and its length (which the
		 * header records) depends on it: a first pass. */
		if (!O.decode && O.dq) {
			cli_meter(NULL, r.nq);
			rc = peftio_bnb_steps_offsets(r.in, r.xi, r.steps,
			    !O.allow_nonfinite, r.buf, C.jobs, cli_xf_progress,
			    NULL, &err);
		}
		cli_meter(NULL, r.n);
		if (rc == 0)
			rc = peftio_transform(r.in, r.xi, &Ops, &r, C.out,
			    flags, &err);
	}
	if (rc != 0)
		cli_error(&err);
	else if (summary(&r, input) != 0)
		rc = 1;
	for (i = 0; i < r.n; i++)
		peftio_bnb_step_free(&r.steps[i]);
	peftio_bnb_buffers_free(r.buf);
	free(r.steps);
	free(r.xi);
	peftio_ckpt_close(r.in);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

enum { OPT_NODQ = 256, OPT_DTYPE, OPT_INCL, OPT_EXCL, OPT_NONFINITE,
    OPT_INDEX, OPT_STORAGE, OPT_JSON };

static const char *const synopsis[] = {
	"[-dfqv] [-t nf4|fp4|int8] [-b blocksize] [--no-double-quant]",
	"\t[--storage u8|bf16|f16|f32] [--dtype f16|bf16|f32]",
	"\t[--include glob] [--exclude glob]",
	"\t[--allow-nonfinite] [--json] [-j jobs] [-o output] input",
	"--index-only [-dfqv] [options as above] -o outdir indir",
	NULL
};

static const struct cli_opt optab[] = {
	CLI_GROUP("Quantization"),
	{ 't', "type", "nf4|fp4|int8", "4-bit NormalFloat (default), FP4 or "
	    "LLM.int8", NULL },
	{ 'b', "blocksize", "N", "values per absmax block, 32 to 4096 "
	    "(default 64)", NULL },
	{ OPT_NODQ, "no-double-quant", NULL, "keep the block maxima in f32, "
	    "not in 8 bits", NULL },
	{ OPT_STORAGE, "storage", "DTYPE", "pack the codes in u8 (default), "
	    "bf16, f16 or f32", "u8 bf16 f16 f32" },
	{ OPT_INCL, "include", "GLOB", "also quantize the tensors GLOB "
	    "matches", NULL },
	{ OPT_EXCL, "exclude", "GLOB", "never quantize the tensors GLOB "
	    "matches", NULL },
	{ OPT_NONFINITE, "allow-nonfinite", NULL, "quantize NaN and infinity "
	    "as bitsandbytes does", NULL },
	CLI_GROUP("Dequantization"),
	{ 'd', "dequantize", NULL, "dequantize a 4-bit or 8-bit checkpoint",
	    NULL },
	{ 'd', "decompress", NULL, NULL, NULL },
	CLI_GROUP("Output"),
	{ OPT_DTYPE, "dtype", "f16|bf16|f32", "the type of the float tensors "
	    "written", NULL },
	{ OPT_INDEX, "index-only", NULL, "write the rest of a model "
	    "converted shard by shard", NULL },
	{ OPT_JSON, "json", NULL, "print a JSON report on standard output",
	    NULL },
	CLI_END
};

int
main(int argc, char *argv[])
{
	static const struct cli_tool tool = { synopsis, optab, CLI_WRITER };
	uint64_t v;
	int ch, t, rc;

	cli_init("nf4-quant");
	cli_options(&tool);
	cli_common_init(&C);
	peftio_set_read_progress(cli_xf_progress, NULL);
	O.incl = xcalloc((size_t)argc + 1, sizeof(char *));
	O.excl = xcalloc((size_t)argc + 1, sizeof(char *));
	while ((ch = cli_getopt(argc, argv)) != -1) {
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
		case OPT_JSON:
			O.json = 1;
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
		cli_output_name("-o", C.out, usage);
		return run(argv[0]);
	}
	if ((rc = cli_common_output(&C, (const char *const *)argv, 1,
	    usage)) != 0)
		return rc;
	if (O.json && strcmp(C.out, "-") == 0) {
		cli_warn("--json prints on standard output: give -o a file "
		    "or a directory");
		usage(CLI_EXIT_USAGE);
	}
	return run(argv[0]);
}
