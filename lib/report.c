/*
 * report.c - what dq-inspect says about a checkpoint: the account of
 * peftio_inspect_ckpt(), the rank and size of an adapter's modules,
 * --compare, --verify and --plan, as one JSON document per checkpoint,
 * written as JSON or YAML to the caller's stream (report_text.c writes
 * the same as text).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_private.h"

/* ------------------------------------------------------------------ */
/* One JSON tree                                                       */

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

/* ------------------------------------------------------------------ */
/* Adapters: rank and size per module                                  */

static json_t *
adapter_info(struct peftio_report *rp)
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
		if ((bname = strdup(ti->name)) == NULL) {
			json_decref(m);
			json_decref(mods);
			return NULL;
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

int
peftio_report_open(struct peftio_report **out, struct peftio_ckpt *c,
    const char *path, struct peftio_error *err)
{
	struct peftio_report *rp;
	int rc;

	if ((rp = calloc(1, sizeof(*rp))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rp->path = path;
	if ((rc = peftio_inspect_ckpt(&rp->in, c, err)) != 0) {
		free(rp);
		return rc;
	}
	rp->adapter = adapter_info(rp);
	*out = rp;
	return 0;
}

struct peftio_inspect *
peftio_report_inspect(struct peftio_report *rp)
{
	return &rp->in;
}

void
peftio_report_free(struct peftio_report *rp)
{
	if (rp == NULL)
		return;
	json_decref(rp->adapter);
	json_decref(rp->verify);
	peftio_inspect_free(&rp->in);
	free(rp);
}

/* ------------------------------------------------------------------ */
/* --compare                                                           */

int
peftio_report_compare(struct peftio_report *rp, struct peftio_ckpt *orig,
    const char *name, unsigned nthreads, const struct peftio_compare_ops *ops,
    void *ctx, struct peftio_compare_summary *sum)
{
	rp->compare = name;
	return peftio_inspect_compare(&rp->in, orig, nthreads, ops, ctx, sum);
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

int
peftio_report_verify(struct peftio_report *rp, peftio_progress_fn progress,
    void (*failed)(void *ctx, const struct peftio_error *err), void *ctx)
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
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		if (progress != NULL)
			progress(ctx, done, total,
			    peftio_ckpt_tensor(c, i)->name);
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
			if (failed != NULL)
				failed(ctx, &err);
			bad = 1;
		}
		if (rc == 0 || rc == PEFTIO_ECHECKSUM)
			checked++;
		if (rc == PEFTIO_ECHECKSUM)
			json_array_append_new(mism,
			    json_string(peftio_ckpt_tensor(c, i)->name));
	}
	if (progress != NULL)
		progress(ctx, done, total, NULL);
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

int
peftio_report_plan(struct peftio_report *rp, const struct peftio_plan_opts *po,
    double alpha, struct peftio_error *err)
{
	struct peftio_plan_opts o = *po;
	int rc;

	rp->po = *po;
	rp->alpha = alpha;
	if ((rc = peftio_plan_inspect(&rp->in, &o, &rp->plan, err)) != 0)
		return rc;
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
jplan(const struct peftio_report *rp)
{
	const struct peftio_plan *p = &rp->plan;
	json_t *o = json_object(), *mb;
	const char *tg = peftio_plan_targets(&rp->po);
	char line[256], as[1024];

	peftio_plan_peft_line(p->trainable_params, p->all_params, line,
	    sizeof(line));
	json_object_set_new(o, "method", json_string(
	    peftio_plan_method_name(rp->po.method)));
	json_object_set_new(o, "r", jint(rp->po.r));
	json_object_set_new(o, "lora_alpha", jreal(rp->alpha));
	json_object_set_new(o, "target_modules", tg != NULL ?
	    json_string(tg) : json_null());
	json_object_set_new(o, "virtual_tokens",
	    jint(rp->po.virtual_tokens));
	json_object_set_new(o, "optimizer",
	    json_string(peftio_optimizer_name(rp->po.optimizer)));
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
	peftio_plan_assumptions(&rp->po, as, sizeof(as));
	json_object_set_new(o, "assumptions", json_string(as));
	return o;
}

/* ------------------------------------------------------------------ */
/* Reports                                                             */

/* The "totals" of an account: of one checkpoint, or the counts of
 * several summed (list_add). */
static json_t *
jtotals(const struct peftio_inspect *in)
{
	json_t *tot;

	if ((tot = json_object()) == NULL)
		return NULL;
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
	return tot;
}

static json_t *
jreport(const struct peftio_report *rp, unsigned flags)
{
	const struct peftio_inspect *in = &rp->in;
	json_t *doc = json_object(), *ts = json_array(), *t, *q, *b;
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
	if (flags & PEFTIO_REPORT_SUMMARY)
		json_decref(ts);
	else
		json_object_set_new(doc, "tensors", ts);
	json_object_set_new(doc, "totals", jtotals(in));
	if (rp->adapter != NULL)
		json_object_set(doc, "adapter", rp->adapter);
	if (rp->compare != NULL) {
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

/* ------------------------------------------------------------------ */
/* A list of reports, written as JSON or YAML                          */

struct peftio_report_list {
	json_t		*docs;
	struct peftio_inspect sum;	/* the counts of every report */
};

/* PEFTIO_EIO with the reason (EIO when the stream gives none). */
static int
write_error(struct peftio_error *err)
{
	if (errno == 0)
		errno = EIO;
	return peftio_error_sys(err, "write error");
}

struct peftio_report_list *
peftio_report_list_new(void)
{
	struct peftio_report_list *l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	if ((l->docs = json_array()) == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

int
peftio_report_list_add(struct peftio_report_list *l,
    const struct peftio_report *rp, unsigned flags, struct peftio_error *err)
{
	const struct peftio_inspect *in = &rp->in;

	if (json_array_append_new(l->docs, jreport(rp, flags)) != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	l->sum.nrows += in->nrows;
	l->sum.params += in->params;
	l->sum.bytes += in->bytes;
	l->sum.nquant += in->nquant;
	l->sum.qparams += in->qparams;
	l->sum.qbytes += in->qbytes;
	l->sum.orig_bytes += in->orig_bytes;
	l->sum.dq_saved_bits += in->dq_saved_bits;
	return 0;
}

size_t
peftio_report_list_count(const struct peftio_report_list *l)
{
	return json_array_size(l->docs);
}

/*
 * One object, however many checkpoints: "inputs", one report each, and
 * "totals" over all of them.
 */
int
peftio_report_list_json(FILE *f, const struct peftio_report_list *l,
    struct peftio_error *err)
{
	json_t *top;
	int rc;

	if ((top = json_object()) == NULL ||
	    json_object_set(top, "inputs", l->docs) != 0 ||
	    json_object_set_new(top, "totals", jtotals(&l->sum)) != 0) {
		json_decref(top);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	rc = json_dumpf(top, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(top);
	return rc != 0 ? write_error(err) : 0;
}

/* Every document, one YAML document each. */
int
peftio_report_list_yaml(FILE *f, const struct peftio_report_list *l,
    struct peftio_error *err)
{
	size_t len;
	char *json, *yaml;
	int rc;

	if ((json = json_dumps(l->docs, JSON_PRESERVE_ORDER)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_yaml_from_json(json, strlen(json), &yaml, &len, err);
	free(json);
	if (rc != 0)
		return rc;
	if (fwrite(yaml, 1, len, f) != len)
		rc = write_error(err);
	free(yaml);
	return rc;
}

void
peftio_report_list_free(struct peftio_report_list *l)
{
	if (l == NULL)
		return;
	json_decref(l->docs);
	free(l);
}
