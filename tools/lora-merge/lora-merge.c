/*
 * lora-merge - merge PEFT adapters (LoRA, rsLoRA, DoRA, IA3, embeddings,
 * modules_to_save, and PEFT's other weight tuners) into a base
 * checkpoint, plain or bitsandbytes 4-bit, with the results PEFT's
 * merge_and_unload() and add_weighted_adapter() give.  The library does
 * the work: this program plans, per tensor, what becomes of it, and
 * hands the plan to peftio_transform().
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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
	int			 allow_nonfinite;
};

static struct opts O;
static struct cli_common C;

struct run {
	struct peftio_ckpt	*in;
	struct peftio_merge_plan plan;
	struct peftio_merge	*m;
	struct peftio_merge_stream *ms;
};

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-fqv] [-w w1,w2,...] [-m linear|cat|svd|ties|"
	    "dare_linear|dare_ties|magnitude_prune]\n"
	    "                  [--density d] [--seed n] [--unmerge] "
	    "[--dtype f16|bf16|f32] [--requant]\n"
	    "                  [--allow-nonfinite] [--recipe file.yaml] "
	    "[-j jobs] [-o output]\n                  "
	    "base adapter ...\n", cli_progname);
	exit(status);
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
	if ((!r->plan.quantized && O.dtype < 0) ||
	    (r->plan.quantized && O.requant))
		return 0;
	return peftio_config_remove_quant(text, len, O.dtype, out, outlen,
	    err);
}

static void
report(void *ctx, const struct peftio_ckptw *w)
{
	struct run *r = ctx;

	cli_debug("%zu adapter(s), %zu base tensors changed%s%s",
	    O.nadapters, r->plan.nmerged, O.method ? ", combined with " : "",
	    O.method ? peftio_combine_name(O.method) : "");
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
	struct run r;
	size_t i;
	int rc = 0;

	memset(&r, 0, sizeof(r));
	ads = xcalloc(O.nadapters, sizeof(*ads));
	for (i = 0; i < O.nadapters && rc == 0; i++) {
		if ((rc = peftio_adapter_open(&ads[i], O.adapters[i], &err))
		    == 0 && peftio_adapter_fifo_ignored(ads[i]))
			cli_debug("%s: fan_in_fan_out is set, but the target "
			    "modules are Linear layers: ignored, as PEFT "
			    "does", O.adapters[i]);
	}
	if (rc == 0)
		rc = peftio_gpu_rcp_init(&err);
	if (rc == 0)
		rc = peftio_ckpt_open(&r.in, O.base, &err);
	if (rc == 0)
		rc = peftio_merge_plan_init(&r.plan, r.in, O.dtype, O.requant,
		    &err);
	memset(&mo, 0, sizeof(mo));
	mo.method = (enum peftio_combine)O.method;
	mo.weights = O.weights;
	mo.density = O.density;
	mo.seed = O.seed;
	mo.unmerge = O.unmerge;
	mo.nthreads = C.jobs;
	if (rc == 0)
		rc = peftio_merge_create(&r.m, ads, O.nadapters, &mo,
		    peftio_merge_plan_shape, &r.plan, &err);
	if (rc == 0)
		rc = peftio_merge_plan_apply(&r.plan, r.m, &err);
	if (rc == 0)
		rc = peftio_merge_stream_new(&r.ms, r.m, C.jobs,
		    O.allow_nonfinite, &err);
	if (rc == 0 && O.requant)
		rc = peftio_merge_plan_offsets(&r.plan, r.ms, C.jobs, &err);
	if (rc == 0)
		rc = peftio_transform(r.in, r.plan.xi, &Ops, &r, C.out,
		    C.force ? PEFTIO_W_FORCE : 0, &err);
	if (rc != 0)
		cli_error(&err);
	peftio_merge_stream_free(r.ms);
	peftio_merge_free(r.m);
	peftio_ckpt_close(r.in);
	for (i = 0; i < O.nadapters; i++)
		peftio_adapter_free(ads[i]);
	free(ads);
	peftio_merge_plan_free(&r.plan);
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
	if (cli_parse_double("--density", s, 0, 1, &O.density) != 0)
		return -1;
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
	if (C.out == NULL && r->output != NULL) {
		C.out = r->output;
		r->output = NULL;
	}
	peftio_recipe_free(r);	/* strings taken above stay allocated */
	return 0;
}

int
main(int argc, char *argv[])
{
	enum { OPT_DENSITY = 256, OPT_SEED, OPT_UNMERGE, OPT_DTYPE,
	    OPT_REQUANT, OPT_NONFINITE, OPT_RECIPE };
	static const struct option longopts[] = {
		{ "weights", required_argument, NULL, 'w' },
		{ "method", required_argument, NULL, 'm' },
		{ "density", required_argument, NULL, OPT_DENSITY },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "unmerge", no_argument, NULL, OPT_UNMERGE },
		{ "dtype", required_argument, NULL, OPT_DTYPE },
		{ "requant", no_argument, NULL, OPT_REQUANT },
		{ "allow-nonfinite", no_argument, NULL, OPT_NONFINITE },
		{ "recipe", required_argument, NULL, OPT_RECIPE },
		CLI_COMMON_LONG,
		{ NULL, 0, NULL, 0 }
	};
	const char *recipe = NULL;
	const char **inputs;
	size_t i;
	int ch, set_method = 0, set_dtype = 0, rc;

	cli_init("lora-merge");
	cli_common_init(&C);
	O.dtype = -1;
	O.density = 1.0;
	while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORT "m:w:", longopts,
	    NULL)) != -1) {
		if (cli_common_opt(&C, ch, optarg, usage))
			continue;
		switch (ch) {
		case 'm':
			if ((O.method = peftio_combine_parse(optarg)) < 0) {
				cli_warn("-m: unknown method '%s'", optarg);
				usage(CLI_EXIT_USAGE);
			}
			set_method = 1;
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
		case OPT_NONFINITE:
			O.allow_nonfinite = 1;
			break;
		case OPT_RECIPE:
			recipe = optarg;
			break;
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
	/* The base first: without -o, "-" as the base writes to "-". */
	inputs = xcalloc(O.nadapters + 1, sizeof(*inputs));
	inputs[0] = O.base;
	for (i = 0; i < O.nadapters; i++)
		inputs[i + 1] = O.adapters[i];
	rc = cli_common_output(&C, inputs, O.nadapters + 1, usage);
	free(inputs);
	return rc != 0 ? rc : run();
}
