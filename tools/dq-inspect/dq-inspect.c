/*
 * dq-inspect - what a checkpoint costs and what quantization did to it:
 * a per-tensor account of parameters, bytes and bits per parameter (with
 * the pieces of every 4-bit or 8-bit weight), the error of the quantized
 * weights against the original, a check of the stored checksums, and what a
 * fine-tuning method would train and need in memory.
 *
 * Only headers and the small quant_state blobs are read unless
 * --compare or --verify asks for the data.
 */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum format { FORMAT_HUMAN, FORMAT_JSON, FORMAT_YAML };

struct opts {
	enum format		 fmt;
	const char		*compare;
	int			 verify;
	int			 plan;		/* 0 when no --plan */
	struct peftio_plan_opts	 po;		/* its method, rank, ... */
	const char		*plan_adapter;	/* --plan ADAPTER */
	int			 r_set, targets_set;
	double			 alpha;
	unsigned		 jobs;
	int			 summary;	/* -s: totals only */
};

static struct opts options = {
	.fmt = FORMAT_HUMAN,
	.po = { .r = 8, .virtual_tokens = 20, .optimizer = PEFTIO_OPT_ADAMW },
	.alpha = 8.0,
	.jobs = 1
};

static struct peftio_ckpt *orig;	/* --compare */

static void __attribute__((noreturn))
usage(int status)
{
	cli_usage(status);
}

static int out_errno;		/* why writing standard output failed */

/* ------------------------------------------------------------------ */
/* --compare                                                           */

static void
compare_progress(void *ctx, uint64_t done, uint64_t total, const char *what)
{
	if (what != NULL)
		cli_progress(done, total, what);
	else
		cli_progress_end();
}

/* A tensor that cannot be compared or verified; the others are. */
static void
failed(void *ctx, const struct peftio_error *err)
{
	cli_error(err);
}

/* Compare, and say what could not be.  Nothing compared is an error. */
static int
compare(struct peftio_report *rp, const char *path)
{
	static const struct peftio_compare_ops ops = { compare_progress,
		failed };
	const struct peftio_inspect *in = peftio_report_inspect(rp);
	struct peftio_compare_summary sum;
	const char *op = peftio_ckpt_path(orig);
	int bad;

	cli_meter("tensors", 0);
	bad = peftio_report_compare(rp, orig, options.compare, options.jobs,
	    &ops, NULL, &sum);
	if (sum.candidates == 0)
		cli_warn("%s: nothing to compare: no floating-point or 4-bit "
		    "tensor", path);
	else if (in->compared == 0 && sum.missing == sum.candidates)
		cli_warn("%s: nothing to compare: no tensor name in common "
		    "with %s", path, op);
	else if (sum.missing == 1)
		cli_warn("%s: no tensor '%s' to compare with", op,
		    sum.first_missing);
	else if (sum.missing > 1)
		cli_warn("%s: no tensor '%s' to compare with, nor %zu more", op,
		    sum.first_missing, sum.missing - 1);
	if (in->compared == 0 && sum.candidates > 0 &&
	    sum.missing < sum.candidates)
		cli_warn("%s: nothing compared", path);
	return bad || in->compared == 0;
}

/* ------------------------------------------------------------------ */
/* --plan                                                              */

static int
plan(struct peftio_report *rp)
{
	struct peftio_error err;

	peftio_error_clear(&err);
	if (peftio_report_plan(rp, &options.po, options.alpha, &err) != 0)
		return cli_error(&err) != 0;
	return 0;
}

static int
inspect(const char *path, struct peftio_report_list *docs)
{
	struct peftio_report *rp;
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned flags = options.summary ? PEFTIO_REPORT_SUMMARY : 0;
	int bad = 0;

	peftio_error_clear(&err);
	if (peftio_ckpt_open(&c, path, &err) != 0)
		return cli_error(&err);
	cli_debug("%s: %zu tensors in %zu file(s)", path,
	    peftio_ckpt_count(c), peftio_ckpt_nshards(c));
	if (peftio_report_open(&rp, c, path, &err) != 0) {
		peftio_ckpt_close(c);
		return cli_error(&err);
	}
	if (options.compare != NULL)
		bad |= compare(rp, path);
	if (options.verify) {
		cli_meter(NULL, peftio_ckpt_count(c));
		bad |= peftio_report_verify(rp, cli_xf_progress, failed, NULL);
	}
	if (options.plan)
		bad |= plan(rp);
	if (docs == NULL)
		peftio_report_text(stdout, rp, flags);
	else if (peftio_report_list_add(docs, rp, flags, &err) != 0)
		bad |= cli_error(&err) != 0;
	peftio_report_free(rp);
	peftio_ckpt_close(c);
	return bad;
}

/*
 * --plan ADAPTER: the method, rank, targets and sizes of an
 * adapter_config.json (or of the one in the directory ADAPTER); -r and
 * --target, when given, win.
 */
static int
plan_from_adapter(const char *path)
{
	struct peftio_error err;
	struct peftio_plan_opts po = options.po;
	struct stat sb;
	char *cfgpath, *text, *targets;
	size_t len;
	int rc;

	peftio_error_clear(&err);
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		cfgpath = xmalloc(strlen(path) + sizeof("/adapter_config.json"));
		sprintf(cfgpath, "%s/adapter_config.json", path);
	} else {
		cfgpath = xmalloc(strlen(path) + 1);
		strcpy(cfgpath, path);
	}
	if ((rc = peftio_read_file(cfgpath, 16u << 20, &text, &len,
	    &err)) == 0) {
		rc = peftio_plan_adapter_config(text, len, &po, &targets, &err);
		free(text);
		if (rc != 0)
			peftio_error_prefix(&err, "%s", cfgpath);
	}
	free(cfgpath);
	if (rc != 0)
		return cli_error(&err);
	if (options.r_set)
		po.r = options.po.r;
	if (options.targets_set)
		free(targets);
	else if (targets != NULL)
		po.targets = targets;	/* kept to the end of the run */
	options.po = po;
	return 0;
}

enum { OPT_JSON = 256, OPT_YAML, OPT_COMPARE, OPT_VERIFY, OPT_PLAN,
    OPT_ALPHA, OPT_TARGET, OPT_VTOKENS, OPT_OPTIMIZER };

static const char *const synopsis[] = {
	"[--json | --yaml] [-qsv] [--compare original] [--verify]",
	"\t[--plan method|adapter] [-r rank] [--alpha alpha]",
	"\t[--target list] [--virtual-tokens n]",
	"\t[--optimizer adamw|adamw8bit|sgd] [-j jobs] checkpoint ...",
	NULL
};

static const struct cli_opt optab[] = {
	CLI_GROUP("Report"),
	{ OPT_JSON, "json", NULL, "a JSON document instead of the table",
	    NULL },
	{ OPT_YAML, "yaml", NULL, "the same as YAML", NULL },
	{ 's', "summary", NULL, "print the totals only", NULL },
	{ OPT_COMPARE, "compare", "PATH", "the error of each weight against "
	    "the original's", NULL },
	{ OPT_VERIFY, "verify", NULL, "check the XXH3 checksums of the "
	    "tensors", NULL },
	CLI_GROUP("Fine-tuning plan"),
	{ OPT_PLAN, "plan", "METHOD", "what METHOD, or an adapter's config, "
	    "trains and needs", "full lora qlora ia3 prompt "
	    "prefix bitfit loha lokr adalora vera hra miss delora oft boft "
	    "vblora randlora shira c3a road fourierft bone" },
	{ 'r', "rank", "N", "LoRA rank (default 8)", NULL },
	{ OPT_ALPHA, "alpha", "A", "LoRA alpha (default 8)", NULL },
	{ OPT_TARGET, "target", "LIST", "the target modules, comma-separated",
	    NULL },
	{ OPT_VTOKENS, "virtual-tokens", "N", "virtual tokens of prompt and "
	    "prefix (default 20)", NULL },
	{ OPT_OPTIMIZER, "optimizer", "NAME", "adamw (default), adamw8bit or "
	    "sgd", "adamw adamw8bit sgd" },
	CLI_END
};

int
main(int argc, char *argv[])
{
	static const struct cli_tool tool = { synopsis, optab, CLI_READER };
	struct cli_common cc;
	struct peftio_error err;
	struct peftio_report_list *docs = NULL;
	struct stat sb;
	char *end;
	int ch, t, i, bad = 0;

	cli_init("dq-inspect");
	cli_options(&tool);
	cli_common_init(&cc);
	peftio_set_read_progress(cli_xf_progress, NULL);
	while ((ch = cli_getopt(argc, argv)) != -1) {
		if (cli_common_opt(&cc, ch, optarg, usage))
			continue;
		switch (ch) {
		case 'r':
			if (cli_parse_u64("-r", optarg, 1, 1 << 20,
			    &options.po.r) != 0)
				usage(CLI_EXIT_USAGE);
			options.r_set = 1;
			break;
		case OPT_JSON:
			options.fmt = FORMAT_JSON;
			break;
		case 's':
			options.summary = 1;
			break;
		case OPT_YAML:
			options.fmt = FORMAT_YAML;
			break;
		case OPT_COMPARE:
			options.compare = optarg;
			break;
		case OPT_VERIFY:
			options.verify = 1;
			break;
		case OPT_PLAN:
			options.plan_adapter = NULL;
			if ((t = peftio_plan_method_parse(optarg)) < 0 &&
			    stat(optarg, &sb) == 0) {
				options.plan = 1;
				options.plan_adapter = optarg;
				break;
			}
			if (t < 0) {
				cli_warn("--plan: unknown method %s (use full, "
				    "lora, qlora, ia3, prompt, prefix, bitfit, "
				    "loha, lokr, adalora, vera, hra, miss, "
				    "delora, oft, boft, vblora, randlora, shira, "
				    "c3a, road, fourierft, bone, or an adapter)",
				    optarg);
				usage(CLI_EXIT_USAGE);
			}
			options.plan = 1;
			options.po.method = (enum peftio_plan_method)t;
			break;
		case OPT_ALPHA:
			options.alpha = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' ||
			    !isfinite(options.alpha) || options.alpha <= 0) {
				cli_warn("--alpha: not a positive number: %s",
				    optarg);
				usage(CLI_EXIT_USAGE);
			}
			break;
		case OPT_TARGET:
			if (*optarg == '\0') {
				cli_warn("--target: empty list");
				usage(CLI_EXIT_USAGE);
			}
			options.po.targets = optarg;
			options.targets_set = 1;
			break;
		case OPT_VTOKENS:
			if (cli_parse_u64("--virtual-tokens", optarg, 1,
			    1 << 20, &options.po.virtual_tokens) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_OPTIMIZER:
			if ((t = peftio_optimizer_parse(optarg)) < 0) {
				cli_warn("--optimizer: unknown optimizer %s "
				    "(use adamw, adamw8bit or sgd)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			options.po.optimizer = (enum peftio_optimizer)t;
			break;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	options.jobs = cc.jobs;
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage(CLI_EXIT_USAGE);
	if (options.plan_adapter != NULL &&
	    plan_from_adapter(options.plan_adapter) != 0)
		return CLI_EXIT_ERROR;
	if (options.compare != NULL) {
		peftio_error_clear(&err);
		if (peftio_ckpt_open(&orig, options.compare, &err) != 0)
			return cli_error(&err);
	}
	if (options.fmt != FORMAT_HUMAN &&
	    (docs = peftio_report_list_new()) == NULL) {
		cli_warn("out of memory");
		return CLI_EXIT_ERROR;
	}
	for (i = 0; i < argc; i++) {
		if (options.fmt == FORMAT_HUMAN && i > 0)
			printf("\n");
		bad |= inspect(argv[i], docs);
		/* The reason of the first failed write, before it is lost. */
		if (ferror(stdout) && out_errno == 0)
			out_errno = errno != 0 ? errno : EIO;
	}
	if (options.fmt == FORMAT_JSON && peftio_report_list_count(docs) == 0)
		;	/* every checkpoint failed: nothing to print */
	else if (options.fmt == FORMAT_JSON) {
		if (peftio_report_list_json(stdout, docs, &err) != 0 &&
		    out_errno == 0)
			out_errno = err.sys_errno != 0 ? err.sys_errno : EIO;
		printf("\n");
	} else if (options.fmt == FORMAT_YAML &&
	    peftio_report_list_count(docs) > 0 &&
	    peftio_report_list_yaml(stdout, docs, &err) != 0) {
		/* A failed write is reported with the others, below. */
		if (err.code != PEFTIO_EIO)
			bad = cli_error(&err) != 0;
		else if (out_errno == 0)
			out_errno = err.sys_errno != 0 ? err.sys_errno : EIO;
	}
	peftio_report_list_free(docs);
	peftio_ckpt_close(orig);
	cli_debug("%d checkpoint%s inspected in %.1f s", argc,
	    argc == 1 ? "" : "s", cli_elapsed());
	/* One line, with the reason, however the output failed. */
	errno = 0;
	if (fflush(stdout) != 0 && out_errno == 0)
		out_errno = errno != 0 ? errno : EIO;
	if (ferror(stdout) || out_errno != 0) {
		cli_warn("standard output: write error: %s",
		    strerror(out_errno != 0 ? out_errno : EIO));
		bad = 1;
	}
	return bad ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}
