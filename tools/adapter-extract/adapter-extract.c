/*
 * adapter-extract - extract a PEFT LoRA adapter from a fine-tuned model:
 * the truncated SVD of every weight delta, written as an adapter
 * directory that PEFT loads unchanged.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

/* The randomized SVD's defaults for --init. */
#define INIT_OVERSAMPLE		16
#define INIT_POWER_ITERS	4

struct opts {
	const char		*base;
	const char		*tuned;
	struct peftio_extract_opts x;
	int			 energy_mode;
	double			 alpha;
	int			 has_alpha;
	const char		**targets;
	size_t			 ntargets;
	const char		**excludes;
	size_t			 nexcludes;
	/* --init, --convert, --resize */
	int			 init;		/* method, or -1 */
	int			 convert, resize;
	const char		*residual;
	unsigned		 loftq_iter;
	int			 double_quant;
	int			 qtype;		/* -t */
	int			 quantize;	/* --quantize, or -1 */
	int			 json;
};

static struct opts O;
static struct cli_common C;

/* What the run did, for the summary line and --json (report.c). */
static struct cli_adapter_report R;

static void __attribute__((noreturn))
usage(int status)
{
	cli_usage(status);
}

/* Excluded by a --exclude, else chosen by a --target, else a Linear
 * layer (select.c). */
static int
selected(void *arg, const char *module)
{
	return peftio_module_selected(module, O.targets, O.ntargets,
	    O.excludes, O.nexcludes);
}

static void
skipped(void *arg, const char *names)
{
	cli_info("changed but not extracted (not targeted; use --target): %s",
	    names);
}

/* The summary line, and the report with --json (report.c). */
static int
finish(const char *mode, uint64_t in)
{
	return cli_adapter_finish(&R, mode, O.base, O.tuned, C.out, O.residual,
	    in, O.json);
}

static int
run(void)
{
	struct peftio_extract_model_opts xo;
	struct peftio_error err;
	uint64_t nmodules, r;

	memset(&xo, 0, sizeof(xo));
	xo.x = O.x;
	xo.alpha = O.has_alpha ? O.alpha : 0.0;
	xo.select = selected;
	xo.skipped = skipped;
	xo.report = cli_adapter_module;
	xo.report_arg = &R;
	xo.flags = C.force ? PEFTIO_W_FORCE : 0;
	xo.jobs = C.jobs;
	xo.progress = cli_adapter_progress;
	xo.progress_arg = &R;
	if (peftio_extract_model(O.base, O.tuned, C.out, &xo, &nmodules, &r,
	    &err) != 0)
		return cli_error(&err);
	cli_debug("%s: %llu modules, r %llu", C.out,
	    (unsigned long long)nmodules, (unsigned long long)r);
	R.nmodules = nmodules;
	R.rank = r;
	return finish("extract", R.in_bytes);
}

/* ------------------------------------------------------------------ */
/* --init, --convert, --resize: the library does the work              */

static int
run_init(void)
{
	struct peftio_init_model_opts io;
	struct peftio_error err;

	memset(&io, 0, sizeof(io));
	peftio_init_opts_init(&io.init);
	io.init.method = (enum peftio_init_method)O.init;
	io.init.rank = O.x.rank;
	io.alpha = O.has_alpha ? O.alpha : (double)O.x.rank;
	io.init.scale = io.alpha / (double)O.x.rank;
	io.init.exact = O.x.exact;
	io.init.oversample = O.x.oversample;
	io.init.power_iters = O.x.power_iters;
	io.init.seed = O.x.seed;
	io.init.loftq_iter = O.loftq_iter;
	io.init.double_quant = O.double_quant;
	io.init.qtype = (enum peftio_q4type)(O.quantize >= 0 ? O.quantize :
	    O.qtype);
	io.quantize = O.init == PEFTIO_INIT_LOFTQ ? -1 : O.quantize;
	io.select = selected;
	io.report = cli_adapter_module;
	io.report_arg = &R;
	io.flags = C.force ? PEFTIO_W_FORCE : 0;
	io.jobs = C.jobs;
	io.progress = cli_xf_progress;
	if (peftio_init_model(O.base, C.out, O.residual, &io, &err) != 0)
		return cli_error(&err);
	return finish("init", cli_ckpt_bytes(O.base));
}

static int
run_resize(void)
{
	struct peftio_resize_opts ro;
	struct peftio_error err;

	memset(&ro, 0, sizeof(ro));
	ro.x = O.x;
	ro.alpha = O.has_alpha ? O.alpha : 0.0;
	ro.report = cli_adapter_module;
	ro.report_arg = &R;
	ro.flags = C.force ? PEFTIO_W_FORCE : 0;
	cli_meter("modules", 0);
	ro.progress = cli_xf_progress;
	if (peftio_resize_adapter(O.base, C.out, &ro, &err) != 0)
		return cli_error(&err);
	return finish("resize", cli_ckpt_bytes(O.base));
}

static int
run_convert(void)
{
	struct peftio_resize_opts ro;
	struct peftio_error err;

	memset(&ro, 0, sizeof(ro));
	ro.flags = C.force ? PEFTIO_W_FORCE : 0;
	ro.progress = cli_xf_progress;
	cli_meter("modules", 0);
	if (peftio_convert_adapter_opts(O.base, O.tuned, C.out, &ro,
	    &err) != 0)
		return cli_error(&err);
	return finish("convert", cli_ckpt_bytes(O.tuned));
}

enum { OPT_ENERGY = 256, OPT_MAXRANK, OPT_MINRANK, OPT_ALPHA, OPT_TARGET,
    OPT_EXCLUDE, OPT_OVERSAMPLE, OPT_POWER, OPT_EXACT, OPT_SEED, OPT_INIT,
    OPT_RESIDUAL, OPT_CONVERT, OPT_RESIZE, OPT_LOFTQ_ITER, OPT_NO_DQ,
    OPT_QUANTIZE, OPT_NITER, OPT_JSON };

static const char *const synopsis[] = {
	"[-r rank | --energy f | --max-rank r [--min-rank r]]",
	"\t[--alpha a] [--target glob]... [--exclude glob]...",
	"\t[--oversample p] [--power-iters q] [--exact] [--seed n]",
	"\t[-fqv] [--json] [-j jobs] [-o adapter_dir] base tuned",
	"--init pissa|olora|loftq -r rank [--alpha a] [--exact]",
	"\t[--niter k] [--loftq-iter n] [--no-double-quant]",
	"\t[-t nf4|fp4] [--quantize nf4|fp4] [--target glob]...",
	"\t[--exclude glob]... [-j jobs] -o adapter_dir",
	"\t--residual model_dir base",
	"--convert -o adapter_dir init_adapter trained_adapter",
	"--resize (-r rank | --energy f [--max-rank r])",
	"\t[--alpha a] [--exact] -o adapter_dir adapter",
	NULL
};

static const struct cli_opt optab[] = {
	CLI_GROUP("Rank"),
	{ 'r', "rank", "N", "the rank of every module (default 16)", NULL },
	{ OPT_ENERGY, "energy", "F", "the least rank keeping a fraction F, "
	    "per module", NULL },
	{ OPT_MAXRANK, "max-rank", "N", "the cap for --energy (default 256)",
	    NULL },
	{ OPT_MINRANK, "min-rank", "N", "the floor for --energy (default 1)",
	    NULL },
	{ OPT_ALPHA, "alpha", "A", "write lora_alpha A (with a fixed rank)",
	    NULL },
	CLI_GROUP("Modules"),
	{ OPT_TARGET, "target", "NAME", "only the modules NAME matches "
	    "(repeatable)", NULL },
	{ OPT_EXCLUDE, "exclude", "NAME", "not the modules NAME matches "
	    "(repeatable)", NULL },
	CLI_GROUP("SVD"),
	{ OPT_OVERSAMPLE, "oversample", "P", "extra test vectors (default 8)",
	    NULL },
	{ OPT_POWER, "power-iters", "Q", "power iterations (default 2)",
	    NULL },
	{ OPT_NITER, "niter", "K", "the same as --power-iters", NULL },
	{ OPT_EXACT, "exact", NULL, "LAPACK's full SVD instead (slow)", NULL },
	{ OPT_SEED, "seed", "N", "seed of the test matrices (default 0)",
	    NULL },
	CLI_GROUP("Initialisation"),
	{ OPT_INIT, "init", "pissa|olora|loftq", "initialise an adapter "
	    "from base", NULL },
	{ OPT_RESIDUAL, "residual", "MODEL_DIR", "where --init writes the "
	    "new base", NULL },
	{ OPT_LOFTQ_ITER, "loftq-iter", "N", "alternations of LoftQ "
	    "(default 1)", NULL },
	{ OPT_NO_DQ, "no-double-quant", NULL, "keep the 4-bit absmax in f32",
	    NULL },
	{ 't', "type", "nf4|fp4", "the 4-bit type of LoftQ (default nf4)",
	    NULL },
	{ OPT_QUANTIZE, "quantize", "nf4|fp4", "write the new base in 4 bits "
	    "of this type", NULL },
	CLI_GROUP("Other modes"),
	{ OPT_CONVERT, "convert", NULL, "turn a trained PiSSA or OLoRA "
	    "adapter into LoRA", NULL },
	{ OPT_RESIZE, "resize", NULL, "lower the rank of an adapter", NULL },
	CLI_GROUP("Output"),
	{ 'o', "output", "ADAPTER_DIR", "the adapter directory to write",
	    NULL },
	{ OPT_JSON, "json", NULL, "print a JSON report on standard output",
	    NULL },
	CLI_END
};

int
main(int argc, char *argv[])
{
	static const struct cli_tool tool = { synopsis, optab, CLI_WRITER };
	int ch, has_rank = 0, has_energy = 0, has_max = 0, has_min = 0;
	int has_init_only = 0, modes, has_svd = 0, has_jobs = 0;

	cli_init("adapter-extract");
	cli_options(&tool);
	peftio_extract_opts_init(&O.x);
	cli_common_init(&C);
	peftio_set_read_progress(cli_xf_progress, NULL);
	O.targets = xmalloc((size_t)argc * sizeof(*O.targets));
	O.excludes = xmalloc((size_t)argc * sizeof(*O.excludes));
	O.init = -1;
	O.loftq_iter = 1;
	O.double_quant = 1;
	O.qtype = PEFTIO_Q4_NF4;
	O.quantize = -1;
	while ((ch = cli_getopt(argc, argv)) != -1) {
		has_jobs |= ch == 'j';
		if (cli_common_opt(&C, ch, optarg, usage))
			continue;
		switch (ch) {
		case 'r':
			O.x.rank = cli_opt_u64("-r", optarg, 1, 65536);
			has_rank = 1;
			break;
		case OPT_ENERGY:
			O.x.energy = cli_opt_double("--energy", optarg, 1e-9,
			    1.0);
			has_energy = 1;
			break;
		case OPT_MAXRANK:
			O.x.max_rank = cli_opt_u64("--max-rank", optarg, 1,
			    65536);
			has_max = 1;
			break;
		case OPT_MINRANK:
			O.x.min_rank = cli_opt_u64("--min-rank", optarg, 1,
			    65536);
			has_min = 1;
			break;
		case OPT_ALPHA:
			O.alpha = cli_opt_double("--alpha", optarg, 1e-30,
			    1e30);
			O.has_alpha = 1;
			break;
		case OPT_TARGET:
			O.targets[O.ntargets++] = optarg;
			break;
		case OPT_EXCLUDE:
			O.excludes[O.nexcludes++] = optarg;
			break;
		case OPT_OVERSAMPLE:
			O.x.oversample = cli_opt_u64("--oversample", optarg, 0,
			    4096);
			has_svd |= 1;
			break;
		case OPT_POWER:
			O.x.power_iters = (unsigned)cli_opt_u64("--power-iters",
			    optarg, 0, 64);
			has_svd |= 2;
			break;
		case OPT_EXACT:
			O.x.exact = 1;
			break;
		case OPT_SEED:
			O.x.seed = cli_opt_u64("--seed", optarg, 0, UINT64_MAX);
			break;
		case OPT_INIT:
			O.init = peftio_init_method_parse(optarg);
			cli_usage_if(O.init < 0, "--init: '%s' is not pissa, "
			    "olora or loftq", optarg);
			break;
		case OPT_RESIDUAL:
			O.residual = optarg;
			break;
		case OPT_CONVERT:
			O.convert = 1;
			break;
		case OPT_RESIZE:
			O.resize = 1;
			break;
		case OPT_LOFTQ_ITER:
			O.loftq_iter = (unsigned)cli_opt_u64("--loftq-iter",
			    optarg, 1, 1000);
			has_init_only = 1;
			break;
		case OPT_NO_DQ:
			O.double_quant = 0;
			has_init_only = 1;
			break;
		case 't':
		case OPT_QUANTIZE:
			cli_usage_if(peftio_q4type_parse(optarg) < 0,
			    "%s: '%s' is not nf4 or fp4",
			    ch == 't' ? "-t" : "--quantize", optarg);
			if (ch == 't')
				O.qtype = peftio_q4type_parse(optarg);
			else
				O.quantize = peftio_q4type_parse(optarg);
			has_init_only = 1;
			break;
		case OPT_NITER:
			O.x.power_iters = (unsigned)cli_opt_u64("--niter",
			    optarg, 0, 64);
			has_svd |= 2;
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
	if (C.out != NULL)
		cli_output_name("-o", C.out, usage);
	if (O.residual != NULL)
		cli_output_name("--residual", O.residual, usage);
	cli_usage_if(O.json && C.out != NULL && strcmp(C.out, "-") == 0,
	    "--json prints on standard output: give -o a directory");
	if (O.json)
		R.modules = json_array();
	modes = (O.init >= 0) + O.convert + O.resize;
	cli_usage_if(modes > 1, "--init, --convert and --resize exclude "
	    "each other");
	cli_usage_if((has_init_only || O.residual != NULL) && O.init < 0,
	    "--residual, --loftq-iter, --no-double-quant, -t and --quantize "
	    "go with --init");
	cli_usage_if(modes == 1 && C.out == NULL, "no output given: use -o "
	    "ADAPTER_DIR");
	if (O.init >= 0) {
		cli_usage_if(argc != 1 || !has_rank || O.residual == NULL ||
		    has_energy || has_max || has_min, "--init needs -r RANK, "
		    "-o ADAPTER_DIR, --residual MODEL_DIR and one base model");
		O.base = argv[0];
		/* A weight's spectrum is flatter than a fine-tuning
		 * delta's: more test vectors and power iterations. */
		if (!(has_svd & 1))
			O.x.oversample = INIT_OVERSAMPLE;
		if (!(has_svd & 2))
			O.x.power_iters = INIT_POWER_ITERS;
		/* One weight at a time unless asked: memory is per job. */
		if (!has_jobs)
			C.jobs = 1;
		if (strcmp(C.out, O.residual) == 0 ||
		    strcmp(C.out, O.base) == 0 ||
		    strcmp(O.residual, O.base) == 0) {
			cli_warn("%s: the outputs and the base must differ",
			    C.out);
			return CLI_EXIT_ERROR;
		}
		return run_init();
	}
	if (O.convert) {
		cli_usage_if(argc != 2 || has_rank || has_energy || has_max ||
		    has_min || O.has_alpha, "--convert takes two adapters and "
		    "no rank options");
		O.base = argv[0];
		O.tuned = argv[1];
		if (strcmp(C.out, O.base) == 0 || strcmp(C.out, O.tuned) == 0) {
			cli_warn("%s: the output would overwrite an input",
			    C.out);
			return CLI_EXIT_ERROR;
		}
		return run_convert();
	}
	if (O.resize) {
		cli_usage_if(argc != 1 || has_rank == (has_energy || has_max),
		    "--resize needs one adapter and either -r or "
		    "--energy/--max-rank");
		O.base = argv[0];
		if (!has_rank) {
			O.x.rank = 0;
			if (!has_energy)
				O.x.energy = 0.99;
		}
		if (strcmp(C.out, O.base) == 0) {
			cli_warn("%s: the output would overwrite an input",
			    C.out);
			return CLI_EXIT_ERROR;
		}
		return run_resize();
	}
	cli_usage_if(argc > 2, "too many arguments");
	cli_usage_if(argc != 2, NULL);
	O.base = argv[0];
	O.tuned = argv[1];
	cli_usage_if(has_rank && (has_energy || has_max || has_min), "-r "
	    "cannot be combined with --energy, --max-rank or --min-rank");
	cli_usage_if(has_min && !has_max && !has_energy, "--min-rank needs "
	    "--energy or --max-rank");
	if (has_energy || has_max) {
		O.energy_mode = 1;
		O.x.rank = 0;
		if (!has_energy)
			O.x.energy = 0.99;
		cli_usage_if(O.x.min_rank > O.x.max_rank, "--min-rank %llu "
		    "exceeds --max-rank %llu", (unsigned long long)O.x.min_rank,
		    (unsigned long long)O.x.max_rank);
	}
	cli_usage_if(O.energy_mode && O.has_alpha, "--alpha applies to a "
	    "fixed rank (-r)");
	cli_usage_if(C.out == NULL, "no output given: use -o ADAPTER_DIR");
	if (cli_check_clash(C.out, &O.base, 1) != 0 ||
	    cli_check_clash(C.out, &O.tuned, 1) != 0)
		return CLI_EXIT_ERROR;
	return run();
}
