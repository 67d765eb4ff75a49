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
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

enum format { FORMAT_HUMAN, FORMAT_JSON, FORMAT_YAML };

struct opts {
	enum format		 fmt;
	const char		*compare;
	int			 verify;
	int			 plan;		/* 0 when no --plan */
	struct peftio_plan_opts	 po;		/* its method, rank, ... */
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

struct report {
	const char	*path;
	struct peftio_inspect in;
	json_t		*verify;	/* --verify */
	int		 planned;	/* --plan */
	struct peftio_plan plan;
	json_t		*adapter;
};

static struct peftio_ckpt *orig;	/* --compare */

static void __attribute__((noreturn))
usage(int status)
{
	cli_usage(status);
}

static const char *
thousands(uint64_t v, char *buf, size_t len)
{
	peftio_format_thousands(v, buf, len);
	return buf;
}

/* "4096x11008" */
static const char *
shape_str(int ndim, const uint64_t *shape, char *buf, size_t len)
{
	size_t o = 0;
	int i;

	buf[0] = '\0';
	if (ndim == 0)
		snprintf(buf, len, "scalar");
	for (i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%llu", i ? "x" : "",
		    (unsigned long long)shape[i]);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Machine output: one JSON tree, written as JSON or YAML               */

static json_t *
jreal(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *
jint(uint64_t v)
{
	return json_integer((json_int_t)v);
}

static json_t *
jshape(int ndim, const uint64_t *shape)
{
	json_t *a = json_array();
	int i;

	for (i = 0; i < ndim; i++)
		json_array_append_new(a, jint(shape[i]));
	return a;
}

static int out_errno;		/* why writing standard output failed */

/* Every document of docs, one YAML document each. */
static int
emit_yaml(json_t *docs)
{
	struct peftio_error err;
	size_t len;
	char *json, *yaml;
	int rc;

	if ((json = json_dumps(docs, JSON_PRESERVE_ORDER)) == NULL) {
		cli_warn("out of memory");
		exit(CLI_EXIT_ERROR);
	}
	peftio_error_clear(&err);
	rc = peftio_yaml_from_json(json, strlen(json), &yaml, &len, &err);
	free(json);
	if (rc != 0)
		return cli_error(&err);
	/* A failed write is reported with the others, by main(). */
	if (fwrite(yaml, 1, len, stdout) != len && out_errno == 0)
		out_errno = errno != 0 ? errno : EIO;
	free(yaml);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Adapters: rank and size per module                                  */

static json_t *
adapter_info(struct report *rp)
{
	struct peftio_error err;
	const struct peftio_tensor_info *ti, *tb;
	json_t *a, *mods, *cfg = NULL, *m, *v;
	size_t n = peftio_ckpt_count(rp->in.c), i, len;
	uint64_t params = 0, bytes = 0;
	char *bname, *buf = NULL, path[4096];
	const char *p, *dir;
	long j;

	mods = json_array();
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(rp->in.c, i);
		bytes += ti->nbytes;
		params += ti->numel;
		if ((p = strstr(ti->name, ".lora_A.")) == NULL ||
		    ti->ndim != 2)
			continue;
		len = (size_t)(p - ti->name);
		m = json_object();
		bname = strdup(ti->name);
		if (bname == NULL) {
			cli_warn("out of memory");
			exit(CLI_EXIT_ERROR);
		}
		bname[len + 6] = 'B';
		json_object_set_new(m, "name", json_stringn(ti->name, len));
		json_object_set_new(m, "rank", jint(ti->shape[0]));
		json_object_set_new(m, "in_features", jint(ti->shape[1]));
		if ((j = peftio_ckpt_find(rp->in.c, bname)) >= 0 &&
		    (tb = peftio_ckpt_tensor(rp->in.c, (size_t)j))->ndim == 2) {
			json_object_set_new(m, "out_features",
			    jint(tb->shape[0]));
			json_object_set_new(m, "params",
			    jint(ti->numel + tb->numel));
		} else {
			json_object_set_new(m, "out_features", json_null());
			json_object_set_new(m, "params", jint(ti->numel));
		}
		free(bname);
		json_array_append_new(mods, m);
	}
	dir = peftio_ckpt_dir(rp->in.c);
	if (dir != NULL) {
		snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
		peftio_error_clear(&err);
		if (peftio_read_file(path, 1 << 24, &buf, &len, &err) == 0)
			cfg = json_loadb(buf, len, 0, NULL);
		free(buf);
	}
	if (json_array_size(mods) == 0 && cfg == NULL) {
		json_decref(mods);
		return NULL;
	}
	a = json_object();
	v = cfg != NULL ? json_object_get(cfg, "peft_type") : NULL;
	json_object_set_new(a, "peft_type", v != NULL ? json_incref(v) :
	    json_string("LORA"));
	v = cfg != NULL ? json_object_get(cfg, "r") : NULL;
	json_object_set_new(a, "r", v != NULL ? json_incref(v) : json_null());
	v = cfg != NULL ? json_object_get(cfg, "lora_alpha") : NULL;
	json_object_set_new(a, "lora_alpha", v != NULL ? json_incref(v) :
	    json_null());
	v = cfg != NULL ? json_object_get(cfg, "target_modules") : NULL;
	json_object_set_new(a, "target_modules", v != NULL ? json_incref(v) :
	    json_null());
	json_object_set_new(a, "params", jint(params));
	json_object_set_new(a, "bytes", jint(bytes));
	json_object_set_new(a, "modules", mods);
	json_decref(cfg);
	return a;
}

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

static void
compare_failed(void *ctx, const struct peftio_error *err)
{
	cli_error(err);
}

/* Compare, and say what could not be.  Nothing compared is an error. */
static int
compare(struct report *rp)
{
	static const struct peftio_compare_ops ops = { compare_progress,
		compare_failed };
	struct peftio_compare_summary sum;
	const char *op = peftio_ckpt_path(orig);
	int bad;

	cli_meter("tensors", 0);
	bad = peftio_inspect_compare(&rp->in, orig, options.jobs, &ops, NULL,
	    &sum);
	if (sum.candidates == 0)
		cli_warn("%s: nothing to compare: no floating-point or 4-bit "
		    "tensor", rp->path);
	else if (rp->in.compared == 0 && sum.missing == sum.candidates)
		cli_warn("%s: nothing to compare: no tensor name in common "
		    "with %s", rp->path, op);
	else if (sum.missing == 1)
		cli_warn("%s: no tensor '%s' to compare with", op,
		    sum.first_missing);
	else if (sum.missing > 1)
		cli_warn("%s: no tensor '%s' to compare with, nor %zu more", op,
		    sum.first_missing, sum.missing - 1);
	if (rp->in.compared == 0 && sum.candidates > 0 &&
	    sum.missing < sum.candidates)
		cli_warn("%s: nothing compared", rp->path);
	return bad || rp->in.compared == 0;
}

static json_t *
jstats(const struct peftio_stats *s)
{
	json_t *o = json_object();

	json_object_set_new(o, "rmse", jreal(peftio_stats_rmse(s)));
	json_object_set_new(o, "max_abs_error", jreal(s->max_abs_error));
	json_object_set_new(o, "snr_db", jreal(peftio_stats_snr_db(s)));
	json_object_set_new(o, "cosine", jreal(peftio_stats_cosine(s)));
	return o;
}

/* ------------------------------------------------------------------ */
/* --verify                                                            */

/* 1 when shard st stores checksums at all. */
static int
has_checksums(struct peftio_st *st)
{
	size_t k, nk = peftio_st_meta_count(st);

	for (k = 0; k < nk; k++)
		if (strncmp(peftio_st_meta_key(st, k), "xxh3.", 5) == 0)
			return 1;
	return 0;
}

static int
verify(struct report *rp)
{
	struct peftio_ckpt *c = rp->in.c;
	struct peftio_error err;
	struct peftio_st *st;
	json_t *mism, *none, *unlisted;
	size_t s, i, checked = 0, last = SIZE_MAX;
	uint64_t done = 0, total = 0;
	int bad = 0, rc, skip = 0;

	mism = json_array();
	none = json_array();
	unlisted = json_array();
	for (i = 0; i < peftio_ckpt_count(c); i++)
		total += peftio_ckpt_tensor(c, i)->nbytes;
	cli_meter(NULL, peftio_ckpt_count(c));
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		cli_progress(done, total, peftio_ckpt_tensor(c, i)->name);
		done += peftio_ckpt_tensor(c, i)->nbytes;
		if ((s = peftio_ckpt_shard_of(c, i)) != last) {
			last = s;
			st = peftio_ckpt_shard(c, s);
			if ((skip = !has_checksums(st)) != 0)
				json_array_append_new(none,
				    json_string(peftio_st_path(st)));
		}
		if (skip)
			continue;
		peftio_error_clear(&err);
		if ((rc = peftio_ckpt_verify(c, i, &err)) == 1)
			json_array_append_new(unlisted,
			    json_string(peftio_ckpt_tensor(c, i)->name));
		else if (rc != 0) {
			cli_error(&err);
			bad = 1;
		}
		if (rc == 0 || rc == PEFTIO_ECHECKSUM)
			checked++;
		if (rc == PEFTIO_ECHECKSUM)
			json_array_append_new(mism,
			    json_string(peftio_ckpt_tensor(c, i)->name));
	}
	cli_progress_end();
	rp->verify = json_object();
	json_object_set_new(rp->verify, "status", json_string(
	    json_array_size(mism) ? "mismatch" : checked == 0 ?
	    "no checksums" : json_array_size(none) ||
	    json_array_size(unlisted) ? "partial" : "ok"));
	json_object_set_new(rp->verify, "checked", jint(checked));
	json_object_set_new(rp->verify, "mismatches", mism);
	json_object_set_new(rp->verify, "files_without_checksums", none);
	json_object_set_new(rp->verify, "tensors_without_checksums", unlisted);
	return bad;
}

/* ------------------------------------------------------------------ */
/* --plan                                                              */

static int
plan(struct report *rp)
{
	struct peftio_plan_opts po = options.po;
	struct peftio_error err;

	peftio_error_clear(&err);
	if (peftio_plan_inspect(&rp->in, &po, &rp->plan, &err) != 0)
		return cli_error(&err) != 0;
	rp->planned = 1;
	return 0;
}

static json_t *
jmemory(const struct peftio_plan_memory *m)
{
	json_t *o = json_object();

	json_object_set_new(o, "weights", jint(m->weights));
	json_object_set_new(o, "gradients", jint(m->gradients));
	json_object_set_new(o, "optimizer", jint(m->optimizer));
	json_object_set_new(o, "total", jint(m->total));
	return o;
}

static json_t *
jplan(const struct report *rp)
{
	const struct peftio_plan *p = &rp->plan;
	json_t *o = json_object(), *mb;
	const char *tg = peftio_plan_targets(&options.po);
	char line[256], as[1024];

	peftio_plan_peft_line(p->trainable_params, p->all_params, line,
	    sizeof(line));
	json_object_set_new(o, "method", json_string(
	    peftio_plan_method_name(options.po.method)));
	json_object_set_new(o, "r", jint(options.po.r));
	json_object_set_new(o, "lora_alpha", jreal(options.alpha));
	json_object_set_new(o, "target_modules", tg != NULL ?
	    json_string(tg) : json_null());
	json_object_set_new(o, "virtual_tokens",
	    jint(options.po.virtual_tokens));
	json_object_set_new(o, "optimizer",
	    json_string(peftio_optimizer_name(options.po.optimizer)));
	json_object_set_new(o, "modules", jint(p->modules));
	json_object_set_new(o, "hidden_size", jint(p->hidden_size));
	json_object_set_new(o, "num_layers", jint(p->num_layers));
	json_object_set_new(o, "trainable_params", jint(p->trainable_params));
	json_object_set_new(o, "all_params", jint(p->all_params));
	json_object_set_new(o, "trainable_percent", jreal(p->all_params ?
	    100.0 * (double)p->trainable_params / (double)p->all_params : 0));
	json_object_set_new(o, "peft_line", json_string(line));
	mb = json_object();
	json_object_set_new(mb, "full", jint(p->full.total));
	json_object_set_new(mb, "lora", jint(p->lora.total));
	json_object_set_new(mb, "qlora", jint(p->qlora.total));
	json_object_set_new(o, "memory_bytes", mb);
	mb = json_object();
	json_object_set_new(mb, "full", jmemory(&p->full));
	json_object_set_new(mb, "lora", jmemory(&p->lora));
	json_object_set_new(mb, "qlora", jmemory(&p->qlora));
	json_object_set_new(o, "memory", mb);
	json_object_set_new(o, "lora_params", jint(p->lora_params));
	peftio_plan_assumptions(&options.po, as, sizeof(as));
	json_object_set_new(o, "assumptions", json_string(as));
	return o;
}

/* ------------------------------------------------------------------ */
/* Reports                                                             */

static json_t *
jreport(const struct report *rp)
{
	const struct peftio_inspect *in = &rp->in;
	json_t *doc = json_object(), *ts = json_array(), *t, *q, *b, *tot;
	const struct peftio_inspect_row *r;
	size_t i, k;

	json_object_set_new(doc, "checkpoint", json_string(rp->path));
	for (i = 0; i < in->nrows; i++) {
		r = &in->rows[i];
		t = json_object();
		json_object_set_new(t, "name", json_string(r->name));
		json_object_set_new(t, "dtype",
		    json_string(peftio_inspect_dtype(in, r)));
		json_object_set_new(t, "shape", jshape(r->ndim, r->shape));
		json_object_set_new(t, "params", jint(r->params));
		json_object_set_new(t, "bytes", jint(r->bytes));
		json_object_set_new(t, "bits_per_param",
		    jreal(peftio_bits_per_param(r->bytes, r->params)));
		if (r->int8) {
			q = json_object();
			json_object_set_new(q, "type", json_string("int8"));
			json_object_set_new(q, "rows", jint(r->bw8.rows));
			json_object_set_new(q, "columns", jint(r->bw8.cols));
			b = json_object();
			json_object_set_new(b, "codes",
			    jint(r->part[PEFTIO_PART_CODES]));
			json_object_set_new(b, "scb",
			    jint(r->part[PEFTIO_PART_ABSMAX]));
			json_object_set_new(q, "bytes", b);
			json_object_set_new(t, "quant", q);
		} else if (r->quantized) {
			q = json_object();
			json_object_set_new(q, "type",
			    json_string(peftio_q4type_name(r->bw.qs.type)));
			json_object_set_new(q, "blocksize",
			    jint(r->bw.qs.blocksize));
			json_object_set_new(q, "double_quant",
			    json_boolean(r->bw.qs.double_quant));
			json_object_set_new(q, "nested_blocksize",
			    r->bw.qs.double_quant ?
			    jint(r->bw.qs.nested_blocksize) : json_null());
			json_object_set_new(q, "original_dtype", json_string(
			    peftio_dtype_name(r->bw.qs.dtype)));
			b = json_object();
			for (k = 0; k < PEFTIO_NPARTS; k++)
				json_object_set_new(b,
				    peftio_inspect_part_name(
				    (enum peftio_inspect_part)k),
				    jint(r->part[k]));
			json_object_set_new(q, "bytes", b);
			json_object_set_new(t, "quant", q);
		} else
			json_object_set_new(t, "quant", json_null());
		if (r->compared)
			json_object_set_new(t, "compare", jstats(&r->st));
		json_array_append_new(ts, t);
	}
	if (options.summary)
		json_decref(ts);
	else
		json_object_set_new(doc, "tensors", ts);
	tot = json_object();
	json_object_set_new(tot, "tensors", jint(in->nrows));
	json_object_set_new(tot, "params", jint(in->params));
	json_object_set_new(tot, "bytes", jint(in->bytes));
	json_object_set_new(tot, "bits_per_param",
	    jreal(peftio_bits_per_param(in->bytes, in->params)));
	json_object_set_new(tot, "quantized_tensors", jint(in->nquant));
	json_object_set_new(tot, "quantized_params", jint(in->qparams));
	json_object_set_new(tot, "quantized_bytes", jint(in->qbytes));
	json_object_set_new(tot, "quantized_bits_per_param",
	    jreal(peftio_bits_per_param(in->qbytes, in->qparams)));
	json_object_set_new(tot, "original_bytes", jint(in->orig_bytes));
	json_object_set_new(tot, "saved_bytes", json_integer(
	    (json_int_t)in->orig_bytes - (json_int_t)in->bytes));
	json_object_set_new(tot, "dq_saved_bits_per_param",
	    jreal(peftio_inspect_dq_saving(in)));
	json_object_set_new(doc, "totals", tot);
	if (rp->adapter != NULL)
		json_object_set(doc, "adapter", rp->adapter);
	if (options.compare != NULL) {
		t = jstats(&in->cmp);
		json_object_set_new(t, "tensors", jint(in->compared));
		json_object_set_new(t, "params", jint(in->cmp.n));
		json_object_set_new(doc, "compare", t);
	}
	if (rp->verify != NULL)
		json_object_set(doc, "verify", rp->verify);
	if (rp->planned)
		json_object_set_new(doc, "plan", jplan(rp));
	return doc;
}

/* The checksums checked: before the table. */
static void
human_verify(const struct report *rp)
{
	json_t *m, *v;
	size_t i;

	if (rp->verify == NULL)
		return;
	printf("\n");
	v = json_object_get(rp->verify, "files_without_checksums");
	json_array_foreach(v, i, m)
		printf("verify          %s: no checksums\n",
		    json_string_value(m));
	printf("verify          %lld tensors checked, %zu mismatched%s\n",
	    (long long)json_integer_value(json_object_get(rp->verify,
	    "checked")), json_array_size(json_object_get(rp->verify,
	    "mismatches")), json_array_size(json_object_get(
	    rp->verify, "tensors_without_checksums")) ?
	    " (some tensors have no checksum)" : "");
}

/* What a fine-tuning method would train and need: before the table. */
static void
human_plan(const struct report *rp)
{
	const struct peftio_plan *p = &rp->plan;
	char a[48], b[48], c[48], d[48], line[256], as[1024];
	const char *tg;

	if (!rp->planned)
		return;
	tg = peftio_plan_targets(&options.po);
	printf("\nplan            %s", peftio_plan_method_name(
	    options.po.method));
	if (options.po.method == PEFTIO_PLAN_LORA ||
	    options.po.method == PEFTIO_PLAN_QLORA)
		printf(", r %llu, alpha %g",
		    (unsigned long long)options.po.r, options.alpha);
	if (options.po.method == PEFTIO_PLAN_PROMPT ||
	    options.po.method == PEFTIO_PLAN_PREFIX)
		printf(", %llu virtual tokens, hidden size %llu, %llu layers",
		    (unsigned long long)options.po.virtual_tokens,
		    (unsigned long long)p->hidden_size,
		    (unsigned long long)p->num_layers);
	if (tg != NULL)
		printf(", targets %s (%llu modules)", tg,
		    (unsigned long long)p->modules);
	printf("\n");
	peftio_plan_peft_line(p->trainable_params, p->all_params, line,
	    sizeof(line));
	printf("%s\n", line);
	printf("memory          %-6s %19s %19s %19s %19s\n", "", "WEIGHTS",
	    "GRADIENTS", "OPTIMIZER", "TOTAL");
#define MEMLINE(label, m) \
	printf("                %-6s %19s %19s %19s %19s  %.1f GB\n", label, \
	    thousands((m).weights, a, sizeof(a)), \
	    thousands((m).gradients, b, sizeof(b)), \
	    thousands((m).optimizer, c, sizeof(c)), \
	    thousands((m).total, d, sizeof(d)), (double)(m).total / 1e9)
	MEMLINE("full", p->full);
	MEMLINE("lora", p->lora);
	MEMLINE("qlora", p->qlora);
#undef MEMLINE
	peftio_plan_assumptions(&options.po, as, sizeof(as));
	printf("assumptions     %s\n", as);
}
static void
print_size(const char *label, uint64_t v)
{
	char a[48];

	printf("%-16s%s bytes (%.2f GB, %.2f GiB)\n", label,
	    thousands(v, a, sizeof(a)), (double)v / 1e9,
	    (double)v / 1073741824.0);
}

static void
human(const struct report *rp)
{
	const struct peftio_inspect *in = &rp->in;
	const struct peftio_inspect_row *r;
	const uint64_t *pt;
	size_t i, w = 4;
	char sh[256], a[48], b[48], c[48], d[48], e[48];
	int sw = 5;

	printf("checkpoint %s\n", rp->path);
	human_verify(rp);
	human_plan(rp);
	if (!options.summary && (rp->verify != NULL || rp->planned))
		printf("\n");
	for (i = 0; i < in->nrows && !options.summary; i++) {
		r = &in->rows[i];
		if (strlen(r->name) > w)
			w = strlen(r->name);
		shape_str(r->ndim, r->shape, sh, sizeof(sh));
		if ((int)strlen(sh) > sw)
			sw = (int)strlen(sh);
	}
	if (!options.summary)
		printf("%-*s  %-7s %-*s %15s %15s %10s\n", (int)w, "NAME",
		    "DTYPE", sw, "SHAPE", "PARAMS", "BYTES", "BITS/PARAM");
	for (i = 0; i < in->nrows && !options.summary; i++) {
		r = &in->rows[i];
		printf("%-*s  %-7s %-*s %15s %15s %10.3f\n", (int)w, r->name,
		    peftio_inspect_dtype(in, r), sw,
		    shape_str(r->ndim, r->shape, sh, sizeof(sh)),
		    thousands(r->params, a, sizeof(a)),
		    thousands(r->bytes, b, sizeof(b)),
		    peftio_bits_per_param(r->bytes, r->params));
		if (!r->quantized)
			continue;
		pt = r->part;
		if (r->int8) {
			printf("%*s  int8 row-wise: codes %s, SCB %s\n", (int)w,
			    "", thousands(pt[PEFTIO_PART_CODES], a, sizeof(a)),
			    thousands(pt[PEFTIO_PART_ABSMAX], b, sizeof(b)));
			continue;
		}
		printf("%*s  %s blocksize %llu%s: codes %s, %s %s",
		    (int)w, "", peftio_q4type_name(r->bw.qs.type),
		    (unsigned long long)r->bw.qs.blocksize,
		    r->bw.qs.double_quant ? " DQ" : "",
		    thousands(pt[PEFTIO_PART_CODES], a, sizeof(a)),
		    r->bw.qs.double_quant ? "absmax codes" : "absmax",
		    thousands(pt[PEFTIO_PART_ABSMAX], b, sizeof(b)));
		if (r->bw.qs.double_quant)
			printf(", nested absmax %s", thousands(
			    pt[PEFTIO_PART_NESTED_ABSMAX], c, sizeof(c)));
		printf(", maps %s, quant_state %s\n",
		    thousands(pt[PEFTIO_PART_QUANT_MAP] +
		    pt[PEFTIO_PART_NESTED_QUANT_MAP], d, sizeof(d)),
		    thousands(pt[PEFTIO_PART_QUANT_STATE], e, sizeof(e)));
	}
	printf("\n%-16s%zu", "tensors", in->nrows);
	if (in->nquant)
		printf(" (%zu quantized: %s, %zu with double quantization)",
		    in->nquant, peftio_inspect_qtypes(in), in->ndq);
	printf("\n%-16s%s", "parameters", thousands(in->params, a,
	    sizeof(a)));
	if (in->nquant)
		printf(" (%s quantized)", thousands(in->qparams, b,
		    sizeof(b)));
	printf("\n");
	print_size("bytes", in->bytes);
	printf("%-16s%.3f overall", "bits/param",
	    peftio_bits_per_param(in->bytes, in->params));
	if (in->nquant)
		printf(", %.3f over quantized tensors",
		    peftio_bits_per_param(in->qbytes, in->qparams));
	printf("\n");
	/* What quantization saved, for a checkpoint that has some. */
	if (in->nquant == 0)
		return;
	print_size("original size", in->orig_bytes);
	printf("%-16s%s%s bytes (%.1f%%)\n", "saved",
	    in->orig_bytes < in->bytes ? "-" : "",
	    thousands(in->orig_bytes < in->bytes ? in->bytes - in->orig_bytes :
	    in->orig_bytes - in->bytes, a, sizeof(a)),
	    in->orig_bytes ? 100.0 * ((double)in->orig_bytes -
	    (double)in->bytes) / (double)in->orig_bytes : 0.0);
	if (in->ndq > 0)
		printf("%-16s%.3f bits/param\n", "DQ saving",
		    peftio_inspect_dq_saving(in));
}

/* A line of the comparison table. */
static void
stats_line(size_t w, const char *name, const struct peftio_stats *st)
{
	printf("%-*s  %12.6g %12.6g %9.3f %10.6f\n", (int)w, name,
	    peftio_stats_rmse(st), st->max_abs_error, peftio_stats_snr_db(st),
	    peftio_stats_cosine(st));
}

static void
human_extra(const struct report *rp)
{
	const struct peftio_inspect *in = &rp->in;
	const struct peftio_inspect_row *r;
	json_t *m, *v;
	size_t i, w = 4;
	char a[48], b[48];

	if (rp->adapter != NULL) {
		v = json_object_get(rp->adapter, "peft_type");
		printf("\nadapter         %s", json_is_string(v) ?
		    json_string_value(v) : "?");
		if (json_is_integer(v = json_object_get(rp->adapter, "r")))
			printf(", r %lld", (long long)json_integer_value(v));
		if (json_is_number(v = json_object_get(rp->adapter,
		    "lora_alpha")))
			printf(", alpha %g", json_number_value(v));
		printf(", %s params, %s bytes\n",
		    thousands((uint64_t)json_integer_value(json_object_get(
		    rp->adapter, "params")), a, sizeof(a)),
		    thousands((uint64_t)json_integer_value(json_object_get(
		    rp->adapter, "bytes")), b, sizeof(b)));
		/* -s: totals only */
		v = options.summary ? NULL : json_object_get(rp->adapter,
		    "modules");
		json_array_foreach(v, i, m)
			printf("  %s: rank %lld, %lld -> %lld, %lld params\n",
			    json_string_value(json_object_get(m, "name")),
			    (long long)json_integer_value(json_object_get(m,
			    "rank")), (long long)json_integer_value(
			    json_object_get(m, "in_features")),
			    (long long)json_integer_value(json_object_get(m,
			    "out_features")), (long long)json_integer_value(
			    json_object_get(m, "params")));
	}
	if (options.compare != NULL && in->compared > 0) {
		for (i = 0; i < in->nrows; i++)
			if (in->rows[i].compared &&
			    strlen(in->rows[i].name) > w)
				w = strlen(in->rows[i].name);
		printf("\ncompared with %s\n", options.compare);
		printf("%-*s  %12s %12s %9s %10s\n", (int)w, "NAME", "RMSE",
		    "MAX|ERR|", "SNR(dB)", "COSINE");
		for (i = 0; i < in->nrows; i++) {
			r = &in->rows[i];
			if (!r->compared || options.summary)
				continue;
			stats_line(w, r->name, &r->st);
		}
		stats_line(w, "total", &in->cmp);
	}
}


static int
inspect(const char *path, json_t *docs)
{
	struct report rp;
	struct peftio_error err;
	struct peftio_ckpt *c;
	int bad = 0;

	memset(&rp, 0, sizeof(rp));
	rp.path = path;
	peftio_error_clear(&err);
	if (peftio_ckpt_open(&c, path, &err) != 0)
		return cli_error(&err);
	cli_debug("%s: %zu tensors in %zu file(s)", path,
	    peftio_ckpt_count(c), peftio_ckpt_nshards(c));
	if (peftio_inspect_ckpt(&rp.in, c, &err) != 0) {
		peftio_ckpt_close(c);
		return cli_error(&err);
	}
	rp.adapter = adapter_info(&rp);
	if (options.compare != NULL)
		bad |= compare(&rp);
	if (options.verify)
		bad |= verify(&rp);
	if (options.plan)
		bad |= plan(&rp);
	if (docs != NULL)
		json_array_append_new(docs, jreport(&rp));
	else {
		human(&rp);
		human_extra(&rp);
	}
	json_decref(rp.adapter);
	json_decref(rp.verify);
	peftio_inspect_free(&rp.in);
	peftio_ckpt_close(c);
	return bad;
}

enum { OPT_JSON = 256, OPT_YAML, OPT_COMPARE, OPT_VERIFY, OPT_PLAN,
    OPT_ALPHA, OPT_TARGET, OPT_VTOKENS, OPT_OPTIMIZER };

static const char *const synopsis[] = {
	"[--json | --yaml] [-qsv] [--compare original] [--verify]",
	"\t[--plan method] [-r rank] [--alpha alpha] [--target list]",
	"\t[--virtual-tokens n] [--optimizer adamw|adamw8bit|sgd]",
	"\t[-j jobs] checkpoint ...",
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
	{ OPT_PLAN, "plan", "METHOD", "what fine-tuning with METHOD trains "
	    "and needs", "full lora qlora ia3 prompt prefix bitfit loha lokr "
	    "adalora vera hra miss delora" },
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
	json_t *docs = NULL, *top;
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
			if ((t = peftio_plan_method_parse(optarg)) < 0) {
				cli_warn("--plan: unknown method %s (use full, "
				    "lora, qlora, ia3, prompt, prefix, bitfit, "
				    "loha, lokr, adalora, vera, hra, miss or "
				    "delora)", optarg);
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
	if (options.compare != NULL) {
		peftio_error_clear(&err);
		if (peftio_ckpt_open(&orig, options.compare, &err) != 0)
			return cli_error(&err);
	}
	if (options.fmt != FORMAT_HUMAN)
		docs = json_array();
	for (i = 0; i < argc; i++) {
		if (options.fmt == FORMAT_HUMAN && i > 0)
			printf("\n");
		bad |= inspect(argv[i], docs);
		/* The reason of the first failed write, before it is lost. */
		if (ferror(stdout) && out_errno == 0)
			out_errno = errno != 0 ? errno : EIO;
	}
	if (options.fmt == FORMAT_JSON && json_array_size(docs) == 0)
		;	/* every checkpoint failed: nothing to print */
	else if (options.fmt == FORMAT_JSON) {
		/* One object, however many checkpoints. */
		top = json_object();
		json_object_set(top, "inputs", docs);
		if (json_dumpf(top, stdout, JSON_INDENT(2) |
		    JSON_PRESERVE_ORDER) != 0 && out_errno == 0)
			out_errno = errno != 0 ? errno : EIO;
		json_decref(top);
		printf("\n");
	} else if (options.fmt == FORMAT_YAML && json_array_size(docs) > 0 &&
	    emit_yaml(docs) != 0)
		bad = 1;
	json_decref(docs);
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
