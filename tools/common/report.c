/*
 * report.c - what a tool did, for --json: one object on standard
 * output, built with jansson.  The tensors written are read back from
 * the output's headers, so the report says what the files hold.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"

json_t *
cli_jint(uint64_t v)
{
	return json_integer((json_int_t)v);
}

json_t *
cli_jshape(int ndim, const uint64_t *shape)
{
	json_t *a = json_array();
	int i;

	for (i = 0; i < ndim; i++)
		json_array_append_new(a, cli_jint(shape[i]));
	return a;
}

/* Tensor k of c: name, dtype, shape, bytes and its stored checksum. */
static json_t *
jtensor(struct peftio_ckpt *c, size_t k)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, k);
	char key[PEFTIO_MAX_NAME + 8];
	const char *sum;
	json_t *t = json_object();

	snprintf(key, sizeof(key), "xxh3.%s", ti->name);
	sum = peftio_st_meta_get(peftio_ckpt_shard(c,
	    peftio_ckpt_shard_of(c, k)), key);
	json_object_set_new(t, "name", json_string(ti->name));
	json_object_set_new(t, "dtype", json_string(
	    peftio_dtype_name(ti->dtype)));
	json_object_set_new(t, "shape", cli_jshape(ti->ndim, ti->shape));
	json_object_set_new(t, "bytes", cli_jint(ti->nbytes));
	json_object_set_new(t, "xxh3", sum != NULL ? json_string(sum) :
	    json_null());
	return t;
}

json_t *
cli_report_files(const char *path, uint64_t *bytes)
{
	struct peftio_ckpt *c;
	struct peftio_error err;
	json_t *a = json_array();
	size_t k;

	*bytes = 0;
	peftio_error_clear(&err);
	if (peftio_ckpt_open(&c, path, &err) != 0) {
		cli_error(&err);
		json_decref(a);
		return NULL;
	}
	for (k = 0; k < peftio_ckpt_count(c); k++) {
		json_array_append_new(a, jtensor(c, k));
		*bytes += peftio_ckpt_tensor(c, k)->nbytes;
	}
	peftio_ckpt_close(c);
	return a;
}

/* The input tensor that output tensor name comes from: the same name,
 * or the longest input name that is a prefix ending at a dot (a 4-bit
 * weight's "W.absmax", "W.quant_state.bitsandbytes__nf4"); or -1. */
static long
source_of(struct peftio_ckpt *in, const char *name)
{
	char buf[PEFTIO_MAX_NAME + 1], *dot;
	long i;

	if ((i = peftio_ckpt_find(in, name)) >= 0)
		return i;
	snprintf(buf, sizeof(buf), "%s", name);
	while ((dot = strrchr(buf, '.')) != NULL) {
		*dot = '\0';
		if ((i = peftio_ckpt_find(in, buf)) >= 0)
			return i;
	}
	return -1;
}

json_t *
cli_report_transform(struct peftio_ckpt *in, const char *out,
    const char *(*action)(void *ctx, size_t i), void *ctx)
{
	const struct peftio_tensor_info *ti, *to;
	struct peftio_ckpt *oc;
	struct peftio_error err;
	json_t *doc, *ts, *t, *outs, *tot;
	size_t i, k, n = peftio_ckpt_count(in), nout;
	uint64_t bin = 0, bout = 0, *ob;
	json_t **per;
	long s;

	peftio_error_clear(&err);
	if (peftio_ckpt_open(&oc, out, &err) != 0) {
		cli_error(&err);
		return NULL;
	}
	nout = peftio_ckpt_count(oc);
	per = xcalloc(n + 1, sizeof(*per));
	ob = xcalloc(n + 1, sizeof(*ob));
	outs = json_array();	/* outputs from no input */
	for (k = 0; k < nout; k++) {
		to = peftio_ckpt_tensor(oc, k);
		bout += to->nbytes;
		if ((s = source_of(in, to->name)) < 0) {
			json_array_append_new(outs, jtensor(oc, k));
			continue;
		}
		if (per[s] == NULL)
			per[s] = json_array();
		json_array_append_new(per[s], jtensor(oc, k));
		ob[s] += to->nbytes;
	}
	ts = json_array();
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(in, i);
		bin += ti->nbytes;
		t = json_object();
		json_object_set_new(t, "name", json_string(ti->name));
		json_object_set_new(t, "action", json_string(action(ctx, i)));
		json_object_set_new(t, "dtype_in",
		    json_string(peftio_dtype_name(ti->dtype)));
		json_object_set_new(t, "shape_in", cli_jshape(ti->ndim,
		    ti->shape));
		json_object_set_new(t, "bytes_in", cli_jint(ti->nbytes));
		s = peftio_ckpt_find(oc, ti->name);
		to = s >= 0 ? peftio_ckpt_tensor(oc, (size_t)s) : NULL;
		json_object_set_new(t, "dtype_out", to != NULL ?
		    json_string(peftio_dtype_name(to->dtype)) : json_null());
		json_object_set_new(t, "shape_out", to != NULL ?
		    cli_jshape(to->ndim, to->shape) : json_null());
		json_object_set_new(t, "bytes_out", cli_jint(ob[i]));
		json_object_set_new(t, "outputs", per[i] != NULL ? per[i] :
		    json_array());
		json_array_append_new(ts, t);
	}
	doc = json_object();
	json_object_set_new(doc, "input", json_string(peftio_ckpt_path(in)));
	json_object_set_new(doc, "output", json_string(out));
	json_object_set_new(doc, "tensors", ts);
	if (json_array_size(outs) > 0)
		json_object_set_new(doc, "added", outs);
	else
		json_decref(outs);
	tot = json_object();
	json_object_set_new(tot, "tensors_in", cli_jint(n));
	json_object_set_new(tot, "tensors_out", cli_jint(nout));
	json_object_set_new(tot, "bytes_in", cli_jint(bin));
	json_object_set_new(tot, "bytes_out", cli_jint(bout));
	json_object_set_new(tot, "ratio", json_real(bin > 0 ?
	    (double)bout / (double)bin : 1.0));
	json_object_set_new(doc, "totals", tot);
	free(per);
	free(ob);
	peftio_ckpt_close(oc);
	return doc;
}

int
cli_json_print(json_t *doc)
{
	int rc = 0;

	if (doc == NULL)
		return CLI_EXIT_ERROR;
	errno = 0;
	if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) !=
	    0 || putchar('\n') == EOF || fflush(stdout) != 0) {
		cli_warn("standard output: write error: %s",
		    strerror(errno != 0 ? errno : EIO));
		rc = CLI_EXIT_ERROR;
	}
	json_decref(doc);
	return rc;
}

void
cli_adapter_module(void *arg, const char *module,
    const struct peftio_lora_factors *f)
{
	struct cli_adapter_report *r = arg;
	json_t *m;

	if (f != NULL) {
		r->nmodules++;
		if (f->rank > r->rank)
			r->rank = f->rank;
	}
	if (r->modules != NULL) {
		m = json_object();
		json_object_set_new(m, "module", json_string(module));
		json_object_set_new(m, "rank", f != NULL ? cli_jint(f->rank) :
		    cli_jint(0));
		json_object_set_new(m, "out_features", f != NULL ?
		    cli_jint(f->m) : json_null());
		json_object_set_new(m, "in_features", f != NULL ?
		    cli_jint(f->n) : json_null());
		json_object_set_new(m, "energy_kept", f != NULL ?
		    json_real(f->kept) : json_null());
		json_object_set_new(m, "rel_error", f != NULL ?
		    json_real(f->rel_err) : json_null());
		json_object_set_new(m, "norm", json_real(f != NULL ?
		    sqrt(f->energy) : 0.0));
		json_array_append_new(r->modules, m);
	}
	if (cli_verbose < 2)
		return;
	if (!r->header++)
		fprintf(stderr, "%-48s %5s %10s %10s %12s\n", "module",
		    "rank", "energy", "rel.err", "norm");
	if (f == NULL)
		fprintf(stderr, "%-48s %5s %10s %10s %12s\n", module, "-",
		    "-", "-", "0");
	else
		fprintf(stderr, "%-48s %5llu %10.6f %10.3e %12.6e\n", module,
		    (unsigned long long)f->rank, f->kept, f->rel_err,
		    sqrt(f->energy));
}

void
cli_adapter_progress(void *arg, uint64_t done, uint64_t total,
    const char *what)
{
	struct cli_adapter_report *r = arg;

	r->in_bytes = total;
	cli_xf_progress(NULL, done, total, what);
}

int
cli_adapter_finish(struct cli_adapter_report *r, const char *mode,
    const char *base, const char *tuned, const char *out,
    const char *residual, uint64_t in, int json)
{
	json_t *doc, *ts, *tot, *t;
	uint64_t bytes = 0, k;
	char more[64];
	size_t i;

	ts = cli_report_files(out, &bytes);
	if (ts == NULL)
		return CLI_EXIT_ERROR;
	if (r->nmodules == 0)
		json_array_foreach(ts, i, t)
			if (strstr(json_string_value(json_object_get(t,
			    "name")), ".lora_A.") != NULL) {
				r->nmodules++;
				k = (uint64_t)json_integer_value(json_array_get(
				    json_object_get(t, "shape"), 0));
				r->rank = k > r->rank ? k : r->rank;
			}
	snprintf(more, sizeof(more), "%llu modules, r %llu",
	    (unsigned long long)r->nmodules, (unsigned long long)r->rank);
	cli_summary(out, in, bytes, more);
	if (!json) {
		json_decref(ts);
		return CLI_EXIT_OK;
	}
	doc = json_object();
	json_object_set_new(doc, "mode", json_string(mode));
	json_object_set_new(doc, "inputs", json_pack("[s]", base));
	if (tuned != NULL)
		json_array_append_new(json_object_get(doc, "inputs"),
		    json_string(tuned));
	json_object_set_new(doc, "output", json_string(out));
	if (residual != NULL)
		json_object_set_new(doc, "residual", json_string(residual));
	json_object_set_new(doc, "modules", r->modules);
	r->modules = NULL;
	json_object_set_new(doc, "tensors", ts);
	tot = json_object();
	json_object_set_new(tot, "modules", cli_jint(r->nmodules));
	json_object_set_new(tot, "rank", cli_jint(r->rank));
	json_object_set_new(tot, "tensors_out", cli_jint(json_array_size(ts)));
	json_object_set_new(tot, "bytes_in", cli_jint(in));
	json_object_set_new(tot, "bytes_out", cli_jint(bytes));
	json_object_set_new(doc, "totals", tot);
	return cli_json_print(doc);
}

uint64_t
cli_ckpt_bytes(const char *path)
{
	struct peftio_ckpt *c;
	struct peftio_error err;
	uint64_t n = 0;
	size_t i;

	if (peftio_ckpt_open(&c, path, &err) != 0)
		return 0;
	for (i = 0; i < peftio_ckpt_count(c); i++)
		n += peftio_ckpt_tensor(c, i)->nbytes;
	peftio_ckpt_close(c);
	return n;
}

void
cli_quant_step_debug(const struct peftio_tensor_info *ti,
    const struct peftio_bnb_step *s, enum peftio_q4type type, int dq)
{
	if (s->quant && s->eight)
		cli_debug("%s: %s -> int8", ti->name,
		    peftio_dtype_name(ti->dtype));
	else if (s->quant)
		cli_debug("%s: %s %s -> %s%s", ti->name,
		    peftio_dtype_name(ti->dtype),
		    peftio_dtype_name(s->bo.qs.dtype),
		    peftio_q4type_name(type),
		    dq ? " + double quantization" : "");
	else
		cli_debug("%s: %s -> %s", ti->name, s->eight ? "int8" :
		    peftio_q4type_name(s->bw.qs.type),
		    peftio_dtype_name(s->dt));
}

void
cli_quant_written(struct peftio_ckpt *in, size_t nq, const char *verb,
    int index_only, uint64_t in_bytes, uint64_t out_bytes)
{
	if (index_only)
		cli_debug("%zu shards checked (%zu tensors %s); %llu bytes of "
		    "tensors", peftio_ckpt_nshards(in), nq, verb,
		    (unsigned long long)out_bytes);
	else
		cli_debug("%zu of %zu tensors %s; %llu bytes of tensors in, "
		    "%llu out (%.1f%%)", nq, peftio_ckpt_count(in), verb,
		    (unsigned long long)in_bytes,
		    (unsigned long long)out_bytes, in_bytes ?
		    100.0 * out_bytes / in_bytes : 100.0);
}

const char *
cli_xf_action(const struct peftio_xf_item *xi)
{
	switch (xi->act) {
	case PEFTIO_XF_COPY:
		return "copied";
	case PEFTIO_XF_CONVERT:
		return "converted";
	case PEFTIO_XF_SKIP:
		return "dequantized into its weight";
	case PEFTIO_XF_CUSTOM:
		break;
	}
	return NULL;
}

const char *
cli_quant_action(const struct peftio_xf_item *xi,
    const struct peftio_bnb_step *s, enum peftio_q4type type)
{
	const char *a;

	if ((a = cli_xf_action(xi)) != NULL)
		return a;
	if (s->quant)
		return s->eight ? "quantized int8" : type == PEFTIO_Q4_NF4 ?
		    "quantized nf4" : "quantized fp4";
	return "dequantized";
}

void
cli_quant_summary(struct peftio_ckpt *in, size_t nq, const char *verb,
    int index_only, const char *input, const char *out, uint64_t out_bytes)
{
	uint64_t bytes = 0;
	size_t i, n = peftio_ckpt_count(in);
	char more[64];

	if (index_only) {
		cli_info("%s: %zu shards checked (%zu tensors %s), index "
		    "written, %.1f s", out, peftio_ckpt_nshards(in), nq, verb,
		    cli_elapsed());
		return;
	}
	for (i = 0; i < n; i++)
		bytes += peftio_ckpt_tensor(in, i)->nbytes;
	snprintf(more, sizeof(more), "%zu of %zu tensors %s", nq, n, verb);
	cli_summary(input, bytes, out_bytes, more);
}

/* ------------------------------------------------------------------ */
/* lora-merge                                                          */

/* --json: what became of base tensor i (ctx: the merge plan). */
static const char *
merge_action(void *ctx, size_t i)
{
	struct peftio_merge_plan *p = ctx;
	const struct peftio_merge_item *it = &p->items[i];
	const char *a;

	if ((a = cli_xf_action(&p->xi[i])) != NULL)
		return a;
	switch (it->act) {
	case PEFTIO_MERGE_REQUANT:
		return "merged and re-quantized";
	case PEFTIO_MERGE_DEQUANT:
		return it->touched ? "merged" : "dequantized";
	case PEFTIO_MERGE_WRITE:
		break;
	}
	return it->touched ? "merged" : "copied";
}

/* --json with --save-adapter: the combined adapter's tensors, read
 * back from what was written. */
static json_t *
merge_adapter(const char *dir, uint64_t *bytes)
{
	json_t *a, *ts;
	char *path;

	path = xmalloc(strlen(dir) + sizeof("/adapter_model.safetensors"));
	sprintf(path, "%s/adapter_model.safetensors", dir);
	ts = cli_report_files(path, bytes);
	free(path);
	if (ts == NULL)
		return NULL;
	a = json_object();
	json_object_set_new(a, "path", json_string(dir));
	json_object_set_new(a, "tensors", ts);
	json_object_set_new(a, "bytes", cli_jint(*bytes));
	return a;
}

int
cli_merge_summary(struct peftio_merge_plan *p, const char *base,
    size_t nadapters, int method, const char *out, const char *save_adapter,
    uint64_t out_bytes, int json)
{
	json_t *doc = NULL, *ad = NULL;
	uint64_t in = 0, adbytes = 0;
	size_t i;
	char more[64];

	for (i = 0; i < p->n; i++)
		in += peftio_ckpt_tensor(p->base, i)->nbytes;
	if (out == NULL)
		snprintf(more, sizeof(more), "%zu adapter%s combined with %s",
		    nadapters, nadapters == 1 ? "" : "s",
		    peftio_combine_name((enum peftio_combine)method));
	else
		snprintf(more, sizeof(more), "%zu adapter%s, %zu tensors "
		    "merged", nadapters, nadapters == 1 ? "" : "s",
		    p->nmerged);
	if (!json) {
		cli_summary(base, in, out_bytes, more);
		return 0;
	}
	if (save_adapter != NULL &&
	    (ad = merge_adapter(save_adapter, &adbytes)) == NULL)
		return CLI_EXIT_ERROR;
	if (out == NULL) {
		/* The adapter only: no merged model to report. */
		doc = json_object();
		json_object_set_new(doc, "input", json_string(base));
		json_object_set_new(doc, "output", json_null());
	} else if ((doc = cli_report_transform(p->base, out, merge_action,
	    p)) == NULL) {
		json_decref(ad);
		return CLI_EXIT_ERROR;
	}
	if (ad != NULL)
		json_object_set_new(doc, "adapter", ad);
	cli_summary(base, in, out_bytes, more);
	return cli_json_print(doc);
}
