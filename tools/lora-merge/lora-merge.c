/*
 * lora-merge - merge PEFT adapters (LoRA, rsLoRA, DoRA, IA3, embeddings,
 * modules_to_save, and PEFT's other weight tuners) into a base
 * checkpoint, plain or bitsandbytes 4-bit, with the results PEFT's
 * merge_and_unload() and add_weighted_adapter() give.  The library does
 * the work: this program plans, per tensor, what becomes of it, and
 * hands the plan to peftio_transform().
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

struct opts {
	struct peftio_merge_args m;	/* the merge, and -o */
	int			 allow_nonfinite;
	int			 json;
	const char		*save_adapter;	/* --save-adapter */
};

static struct opts O;
static struct cli_common C;

struct run {
	struct peftio_ckpt	*in;
	struct peftio_merge_plan plan;
	struct peftio_merge	*m;
	struct peftio_merge_stream *ms;
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

	return peftio_merge_plan_declare(x, i, &r->plan, err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	const struct peftio_merge_item *it = &r->plan.items[i];
	int rc;

	if (it->act == PEFTIO_MERGE_REQUANT)
		cli_debug("%s: merged and re-quantized%s", ti->name,
		    it->step.eight ? " to 8 bit" : "");
	if ((rc = peftio_merge_plan_compute(x, i, &r->plan, r->ms, C.jobs,
	    err)) != 0)
		return rc;
	if (it->act != PEFTIO_MERGE_REQUANT && it->touched)
		cli_debug("%s: merged (%s)", ti->name,
		    peftio_dtype_name(it->dt));
	return 0;
}

/* config.json: without the quantization_config of a dequantized base,
 * with the dtype of --dtype; else as it is. */
static int
config(void *ctx, const char *text, size_t len, char **out, size_t *outlen,
    struct peftio_error *err)
{
	struct run *r = ctx;

	*out = NULL;
	if ((!r->plan.quantized && O.m.dtype < 0) ||
	    (r->plan.quantized && O.m.requant))
		return 0;
	return peftio_config_remove_quant(text, len, O.m.dtype, out, outlen,
	    err);
}

static void
report(void *ctx, const struct peftio_ckptw *w)
{
	struct run *r = ctx;

	r->out_bytes = peftio_ckptw_tensor_bytes(w);
	cli_debug("%zu adapter(s), %zu base tensors changed%s%s",
	    O.m.nadapters, r->plan.nmerged,
	    O.m.method ? ", combined with " : "",
	    O.m.method ? peftio_combine_name(O.m.method) : "");
}

static const struct peftio_xf_ops Ops = {
	declare, compute, config, cli_xf_progress, report, NULL, cli_note
};

static int
run(void)
{
	struct peftio_error err = { 0, 0, "" };
	struct peftio_adapter **ads;
	struct peftio_merge_opts mo;
	struct peftio_ckptw *aw = NULL;
	struct run r;
	size_t i;
	int rc = 0;

	memset(&r, 0, sizeof(r));
	ads = xcalloc(O.m.nadapters, sizeof(*ads));
	for (i = 0; i < O.m.nadapters && rc == 0; i++) {
		if ((rc = peftio_adapter_open(&ads[i], O.m.adapters[i], &err))
		    == 0 && peftio_adapter_fifo_ignored(ads[i]))
			cli_debug("%s: fan_in_fan_out is set, but the target "
			    "modules are Linear layers: ignored, as PEFT "
			    "does", O.m.adapters[i]);
	}
	if (rc == 0)
		rc = peftio_gpu_rcp_init(&err);
	cli_meter(NULL, 0);
	if (rc == 0)
		rc = peftio_ckpt_open_stream(&r.in, O.m.base, &err);
	if (rc == 0)
		rc = peftio_merge_plan_init(&r.plan, r.in, O.m.dtype,
		    O.m.requant, &err);
	memset(&mo, 0, sizeof(mo));
	mo.method = (enum peftio_combine)O.m.method;
	mo.weights = O.m.weights;
	mo.density = O.m.density;
	mo.seed = O.m.seed;
	mo.unmerge = O.m.unmerge;
	mo.nthreads = C.jobs;
	if (rc == 0)
		rc = peftio_merge_create(&r.m, ads, O.m.nadapters, &mo,
		    peftio_merge_plan_shape, &r.plan, &err);
	/* The combined adapter waits, complete, for the merged model. */
	if (rc == 0 && O.save_adapter != NULL)
		rc = peftio_merge_save_adapter(r.m, O.save_adapter,
		    C.force ? PEFTIO_W_FORCE : 0, &aw, &err);
	if (rc == 0 && C.out != NULL) {
		rc = peftio_merge_plan_apply(&r.plan, r.m, &err);
		if (rc == 0)
			rc = peftio_merge_stream_new(&r.ms, r.m, C.jobs,
			    O.allow_nonfinite, &err);
		if (rc == 0 && O.m.requant) {
			cli_meter("tensors", 0);
			rc = peftio_merge_plan_offsets(&r.plan, r.ms, C.jobs,
			    cli_xf_progress, NULL, &err);
		}
		cli_meter(NULL, r.plan.n);
		if (rc == 0)
			rc = peftio_transform(r.in, r.plan.xi, &Ops, &r, C.out,
			    C.force ? PEFTIO_W_FORCE : 0, &err);
	}
	if (rc == 0 && aw != NULL) {
		if (C.out == NULL)
			r.out_bytes = peftio_ckptw_tensor_bytes(aw);
		rc = peftio_ckptw_commit(aw, &err);
		cli_debug("%s: the combined adapter", O.save_adapter);
	}
	peftio_ckptw_free(aw);
	if (rc != 0)
		cli_error(&err);
	else if (cli_merge_summary(&r.plan, O.m.base, O.m.nadapters, O.m.method,
	    C.out, O.save_adapter, r.out_bytes, O.json) != 0)
		rc = 1;
	peftio_merge_stream_free(r.ms);
	peftio_merge_free(r.m);
	peftio_ckpt_close(r.in);
	for (i = 0; i < O.m.nadapters; i++)
		peftio_adapter_free(ads[i]);
	free(ads);
	peftio_merge_plan_free(&r.plan);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ------------------------------------------------------------------ */

/*
 * --save-adapter needs a combination, names a directory, and is none
 * of the inputs, nor the merged model's output, nor inside it or
 * holding it.
 */
static int
check_save_adapter(const char *const *in, size_t nin)
{
	struct peftio_error err;

	cli_usage_if(O.m.method == PEFTIO_COMBINE_NONE, "--save-adapter needs "
	    "a combination type (-m)");
	cli_usage_if(O.save_adapter[0] == '\0' ||
	    strcmp(O.save_adapter, "-") == 0, "--save-adapter: an adapter is "
	    "a directory, not '%s'", O.save_adapter);
	peftio_error_clear(&err);
	if (peftio_outputs_overlap(O.save_adapter, C.out, &err) != 0)
		return cli_error(&err);
	return cli_check_clash(O.save_adapter, in, nin);
}

enum { OPT_DENSITY = 256, OPT_SEED, OPT_UNMERGE, OPT_DTYPE, OPT_REQUANT,
    OPT_NONFINITE, OPT_RECIPE, OPT_JSON, OPT_SAVE_ADAPTER };

static const char *const synopsis[] = {
	"[-fqv] [-w w1,w2,...] [-m method] [--density d] [--seed n]",
	"\t[--unmerge] [--dtype f16|bf16|f32] [--requant]",
	"\t[--allow-nonfinite] [--recipe file.yaml] [-j jobs]",
	"\t[--json] [-o output] [--save-adapter dir] base adapter ...",
	NULL
};

static const struct cli_opt optab[] = {
	CLI_GROUP("Merging"),
	{ 'm', "method", "METHOD", "combine the adapters first (linear, cat, "
	    "svd, ...)", "linear cat svd ties dare_linear dare_ties "
	    "magnitude_prune" },
	{ 'w', "weights", "W1,W2,...", "one weight per adapter (default 1)",
	    NULL },
	{ OPT_DENSITY, "density", "D", "fraction kept by ties, dare_* and "
	    "magnitude_prune", NULL },
	{ OPT_SEED, "seed", "N", "seed of the dare_* masks (default 0)",
	    NULL },
	{ OPT_UNMERGE, "unmerge", NULL, "subtract the adapters instead of "
	    "adding them", NULL },
	{ OPT_RECIPE, "recipe", "FILE", "take the choices from a recipe, "
	    "peftio-recipe(5)", NULL },
	CLI_GROUP("Output"),
	{ OPT_DTYPE, "dtype", "f16|bf16|f32", "the type of every float tensor "
	    "written", NULL },
	{ OPT_REQUANT, "requant", NULL, "re-quantize the merged weights of a "
	    "quantized base", NULL },
	{ OPT_NONFINITE, "allow-nonfinite", NULL, "write merged tensors that "
	    "hold NaN or infinity", NULL },
	{ OPT_SAVE_ADAPTER, "save-adapter", "DIR", "write the combination "
	    "(-m) as a PEFT adapter", NULL },
	{ OPT_JSON, "json", NULL, "print a JSON report on standard output",
	    NULL },
	CLI_END
};

int
main(int argc, char *argv[])
{
	static const struct cli_tool tool = { synopsis, optab, CLI_WRITER };
	const char *recipe = NULL;
	const char **inputs;
	size_t i;
	struct peftio_recipe *rcp = NULL;
	struct peftio_error err;
	int ch, rc;

	cli_init("lora-merge");
	cli_options(&tool);
	cli_common_init(&C);
	peftio_set_read_progress(cli_xf_progress, NULL);
	O.m.method = -1;
	O.m.dtype = -1;
	O.m.density = 1.0;
	while ((ch = cli_getopt(argc, argv)) != -1) {
		if (cli_common_opt(&C, ch, optarg, usage))
			continue;
		switch (ch) {
		case 'm':
			O.m.method = peftio_combine_parse(optarg);
			cli_usage_if(O.m.method < 0, "-m: unknown method '%s'",
			    optarg);
			break;
		case 'w':
			cli_usage_if(cli_parse_weights("-w", optarg,
			    &O.m.weights, &O.m.nweights) != 0, NULL);
			break;
		case OPT_DENSITY:
			O.m.density = cli_opt_double("--density", optarg, 0, 1);
			O.m.has_density = 1;
			break;
		case OPT_SEED:
			O.m.seed = cli_opt_u64("--seed", optarg, 0, UINT64_MAX);
			break;
		case OPT_UNMERGE:
			O.m.unmerge = 1;
			break;
		case OPT_DTYPE:
			O.m.dtype = cli_parse_float_dtype("--dtype", optarg);
			cli_usage_if(O.m.dtype < 0, NULL);
			break;
		case OPT_REQUANT:
			O.m.requant = 1;
			break;
		case OPT_NONFINITE:
			O.allow_nonfinite = 1;
			break;
		case OPT_RECIPE:
			recipe = optarg;
			break;
		case OPT_JSON:
			O.json = 1;
			break;
		case OPT_SAVE_ADAPTER:
			O.save_adapter = optarg;
			break;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc >= 1)
		O.m.base = argv[0];
	if (argc >= 2) {
		O.m.adapters = (const char **)(argv + 1);
		O.m.nadapters = (size_t)argc - 1;
	}
	/* What the command line left unset, from the recipe. */
	O.m.output = C.out;
	O.m.save_adapter = O.save_adapter;
	if (recipe != NULL && (peftio_recipe_load(recipe, &rcp, &err) != 0 ||
	    peftio_recipe_apply(rcp, recipe, &O.m, &err) != 0)) {
		cli_error(&err);
		cli_usage_if(err.code == PEFTIO_EINVAL, NULL);
		return CLI_EXIT_ERROR;
	}
	C.out = O.m.output;
	O.save_adapter = O.m.save_adapter;
	if (O.m.method < 0)
		O.m.method = PEFTIO_COMBINE_NONE;
	cli_usage_if(O.m.base == NULL || O.m.nadapters == 0,
	    argc == 1 || recipe != NULL ? "no adapter given" : NULL);
	cli_usage_if(O.m.weights != NULL && O.m.nweights != O.m.nadapters,
	    "-w: %zu weights for %zu adapters", O.m.nweights, O.m.nadapters);
	cli_usage_if(!O.m.has_density && (O.m.method == PEFTIO_COMBINE_TIES ||
	    O.m.method == PEFTIO_COMBINE_DARE_LINEAR ||
	    O.m.method == PEFTIO_COMBINE_DARE_TIES ||
	    O.m.method == PEFTIO_COMBINE_MAGNITUDE_PRUNE), "-m %s needs "
	    "--density", peftio_combine_name(O.m.method));
	/* The base first: without -o, "-" as the base writes to "-". */
	inputs = xcalloc(O.m.nadapters + 1, sizeof(*inputs));
	inputs[0] = O.m.base;
	for (i = 0; i < O.m.nadapters; i++)
		inputs[i + 1] = O.m.adapters[i];
	rc = O.save_adapter != NULL ? check_save_adapter(inputs,
	    O.m.nadapters + 1) : 0;
	/* With --save-adapter, a merged model only with -o. */
	if (rc == 0 && (O.save_adapter == NULL || C.out != NULL))
		rc = cli_common_output(&C, inputs, O.m.nadapters + 1, usage);
	free(inputs);
	cli_usage_if(rc == 0 && O.json && C.out != NULL &&
	    strcmp(C.out, "-") == 0, "--json prints on standard output: give "
	    "-o a file or a directory");
	rc = rc != 0 ? rc : run();
	peftio_recipe_free(rcp);
	return rc;
}
