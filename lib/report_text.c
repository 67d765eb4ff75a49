/*
 * report_text.c - dq-inspect's report (report.c) as text: the --verify
 * and --plan sections, a table of tensors with the pieces of every
 * quantized weight, the totals, and the adapter and --compare sections.
 */
#include <stdio.h>
#include <string.h>

#include "report_private.h"

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

static void
print_size(FILE *f, const char *label, uint64_t v)
{
	char a[48];

	fprintf(f, "%-16s%s bytes (%.2f GB, %.2f GiB)\n", label,
	    thousands(v, a, sizeof(a)), (double)v / 1e9,
	    (double)v / 1073741824.0);
}

/* The checksums checked: before the table. */
static void
verify(FILE *f, const struct peftio_report *rp)
{
	json_t *m, *v;
	size_t i;

	if (rp->verify == NULL)
		return;
	fprintf(f, "\n");
	v = json_object_get(rp->verify, "files_without_checksums");
	json_array_foreach(v, i, m)
		fprintf(f, "verify          %s: no checksums\n",
		    json_string_value(m));
	fprintf(f, "verify          %lld tensors checked, %zu mismatched%s\n",
	    (long long)json_integer_value(json_object_get(rp->verify,
	    "checked")), json_array_size(json_object_get(rp->verify,
	    "mismatches")), json_array_size(json_object_get(
	    rp->verify, "tensors_without_checksums")) ?
	    " (some tensors have no checksum)" : "");
}

/* What a fine-tuning method would train and need: before the table. */
static void
plan(FILE *f, const struct peftio_report *rp)
{
	const struct peftio_plan *p = &rp->plan;
	char a[48], b[48], c[48], d[48], line[256], as[1024];
	const char *tg;

	if (!rp->planned)
		return;
	tg = peftio_plan_targets(&rp->po);
	fprintf(f, "\nplan            %s", peftio_plan_method_name(
	    rp->po.method));
	if (rp->po.method == PEFTIO_PLAN_LORA ||
	    rp->po.method == PEFTIO_PLAN_QLORA)
		fprintf(f, ", r %llu, alpha %g",
		    (unsigned long long)rp->po.r, rp->alpha);
	if (rp->po.method == PEFTIO_PLAN_PROMPT ||
	    rp->po.method == PEFTIO_PLAN_PREFIX)
		fprintf(f, ", %llu virtual tokens, hidden size %llu, "
		    "%llu layers",
		    (unsigned long long)rp->po.virtual_tokens,
		    (unsigned long long)p->hidden_size,
		    (unsigned long long)p->num_layers);
	if (tg != NULL)
		fprintf(f, ", targets %s (%llu modules)", tg,
		    (unsigned long long)p->modules);
	fprintf(f, "\n");
	peftio_plan_peft_line(p->trainable_params, p->all_params, line,
	    sizeof(line));
	fprintf(f, "%s\n", line);
	fprintf(f, "memory          %-6s %19s %19s %19s %19s\n", "", "WEIGHTS",
	    "GRADIENTS", "OPTIMIZER", "TOTAL");
#define MEMLINE(label, m) \
	fprintf(f, "                %-6s %19s %19s %19s %19s  %.1f GB\n", \
	    label, \
	    thousands((m).weights, a, sizeof(a)), \
	    thousands((m).gradients, b, sizeof(b)), \
	    thousands((m).optimizer, c, sizeof(c)), \
	    thousands((m).total, d, sizeof(d)), (double)(m).total / 1e9)
	MEMLINE("full", p->full);
	MEMLINE("lora", p->lora);
	MEMLINE("qlora", p->qlora);
#undef MEMLINE
	peftio_plan_assumptions(&rp->po, as, sizeof(as));
	fprintf(f, "assumptions     %s\n", as);
}

static void
account(FILE *f, const struct peftio_report *rp, int all)
{
	const struct peftio_inspect *in = &rp->in;
	const struct peftio_inspect_row *r;
	const uint64_t *pt;
	size_t i, w = 4;
	char sh[256], a[48], b[48], c[48], d[48], e[48];
	int sw = 5;

	fprintf(f, "checkpoint %s\n", rp->path);
	verify(f, rp);
	plan(f, rp);
	if (all && (rp->verify != NULL || rp->planned))
		fprintf(f, "\n");
	for (i = 0; i < in->nrows && all; i++) {
		r = &in->rows[i];
		if (strlen(r->name) > w)
			w = strlen(r->name);
		shape_str(r->ndim, r->shape, sh, sizeof(sh));
		if ((int)strlen(sh) > sw)
			sw = (int)strlen(sh);
	}
	if (all)
		fprintf(f, "%-*s  %-7s %-*s %15s %15s %10s\n", (int)w, "NAME",
		    "DTYPE", sw, "SHAPE", "PARAMS", "BYTES", "BITS/PARAM");
	for (i = 0; i < in->nrows && all; i++) {
		r = &in->rows[i];
		fprintf(f, "%-*s  %-7s %-*s %15s %15s %10.3f\n", (int)w,
		    r->name, peftio_inspect_dtype(in, r), sw,
		    shape_str(r->ndim, r->shape, sh, sizeof(sh)),
		    thousands(r->params, a, sizeof(a)),
		    thousands(r->bytes, b, sizeof(b)),
		    peftio_bits_per_param(r->bytes, r->params));
		if (!r->quantized)
			continue;
		pt = r->part;
		if (r->int8) {
			fprintf(f, "%*s  int8 row-wise: codes %s, SCB %s\n",
			    (int)w, "", thousands(pt[PEFTIO_PART_CODES], a,
			    sizeof(a)), thousands(pt[PEFTIO_PART_ABSMAX], b,
			    sizeof(b)));
			continue;
		}
		fprintf(f, "%*s  %s blocksize %llu%s: codes %s, %s %s",
		    (int)w, "", peftio_q4type_name(r->bw.qs.type),
		    (unsigned long long)r->bw.qs.blocksize,
		    r->bw.qs.double_quant ? " DQ" : "",
		    thousands(pt[PEFTIO_PART_CODES], a, sizeof(a)),
		    r->bw.qs.double_quant ? "absmax codes" : "absmax",
		    thousands(pt[PEFTIO_PART_ABSMAX], b, sizeof(b)));
		if (r->bw.qs.double_quant)
			fprintf(f, ", nested absmax %s", thousands(
			    pt[PEFTIO_PART_NESTED_ABSMAX], c, sizeof(c)));
		fprintf(f, ", maps %s, quant_state %s\n",
		    thousands(pt[PEFTIO_PART_QUANT_MAP] +
		    pt[PEFTIO_PART_NESTED_QUANT_MAP], d, sizeof(d)),
		    thousands(pt[PEFTIO_PART_QUANT_STATE], e, sizeof(e)));
	}
	fprintf(f, "\n%-16s%zu", "tensors", in->nrows);
	if (in->nquant)
		fprintf(f, " (%zu quantized: %s, %zu with double quantization)",
		    in->nquant, peftio_inspect_qtypes(in), in->ndq);
	fprintf(f, "\n%-16s%s", "parameters", thousands(in->params, a,
	    sizeof(a)));
	if (in->nquant)
		fprintf(f, " (%s quantized)", thousands(in->qparams, b,
		    sizeof(b)));
	fprintf(f, "\n");
	print_size(f, "bytes", in->bytes);
	fprintf(f, "%-16s%.3f overall", "bits/param",
	    peftio_bits_per_param(in->bytes, in->params));
	if (in->nquant)
		fprintf(f, ", %.3f over quantized tensors",
		    peftio_bits_per_param(in->qbytes, in->qparams));
	fprintf(f, "\n");
	/* What quantization saved, for a checkpoint that has some. */
	if (in->nquant == 0)
		return;
	print_size(f, "original size", in->orig_bytes);
	fprintf(f, "%-16s%s%s bytes (%.1f%%)\n", "saved",
	    in->orig_bytes < in->bytes ? "-" : "",
	    thousands(in->orig_bytes < in->bytes ? in->bytes - in->orig_bytes :
	    in->orig_bytes - in->bytes, a, sizeof(a)),
	    in->orig_bytes ? 100.0 * ((double)in->orig_bytes -
	    (double)in->bytes) / (double)in->orig_bytes : 0.0);
	if (in->ndq > 0)
		fprintf(f, "%-16s%.3f bits/param\n", "DQ saving",
		    peftio_inspect_dq_saving(in));
}

/* A line of the comparison table. */
static void
stats_line(FILE *f, size_t w, const char *name, const struct peftio_stats *st)
{
	fprintf(f, "%-*s  %12.6g %12.6g %9.3f %10.6f\n", (int)w, name,
	    peftio_stats_rmse(st), st->max_abs_error, peftio_stats_snr_db(st),
	    peftio_stats_cosine(st));
}

static void
extra(FILE *f, const struct peftio_report *rp, int all)
{
	const struct peftio_inspect *in = &rp->in;
	const struct peftio_inspect_row *r;
	json_t *m, *v;
	size_t i, w = 4;
	char a[48], b[48];

	if (rp->adapter != NULL) {
		v = json_object_get(rp->adapter, "peft_type");
		fprintf(f, "\nadapter         %s", json_is_string(v) ?
		    json_string_value(v) : "?");
		if (json_is_integer(v = json_object_get(rp->adapter, "r")))
			fprintf(f, ", r %lld",
			    (long long)json_integer_value(v));
		if (json_is_number(v = json_object_get(rp->adapter,
		    "lora_alpha")))
			fprintf(f, ", alpha %g", json_number_value(v));
		fprintf(f, ", %s params, %s bytes\n",
		    thousands((uint64_t)json_integer_value(json_object_get(
		    rp->adapter, "params")), a, sizeof(a)),
		    thousands((uint64_t)json_integer_value(json_object_get(
		    rp->adapter, "bytes")), b, sizeof(b)));
		v = all ? json_object_get(rp->adapter, "modules") : NULL;
		json_array_foreach(v, i, m)
			fprintf(f,
			    "  %s: rank %lld, %lld -> %lld, %lld params\n",
			    json_string_value(json_object_get(m, "name")),
			    (long long)json_integer_value(json_object_get(m,
			    "rank")), (long long)json_integer_value(
			    json_object_get(m, "in_features")),
			    (long long)json_integer_value(json_object_get(m,
			    "out_features")), (long long)json_integer_value(
			    json_object_get(m, "params")));
	}
	if (rp->compare != NULL && in->compared > 0) {
		for (i = 0; i < in->nrows; i++)
			if (in->rows[i].compared &&
			    strlen(in->rows[i].name) > w)
				w = strlen(in->rows[i].name);
		fprintf(f, "\ncompared with %s\n", rp->compare);
		fprintf(f, "%-*s  %12s %12s %9s %10s\n", (int)w, "NAME", "RMSE",
		    "MAX|ERR|", "SNR(dB)", "COSINE");
		for (i = 0; i < in->nrows; i++) {
			r = &in->rows[i];
			if (!r->compared || !all)
				continue;
			stats_line(f, w, r->name, &r->st);
		}
		stats_line(f, w, "total", &in->cmp);
	}
}

void
peftio_report_text(FILE *f, const struct peftio_report *rp, unsigned flags)
{
	int all = !(flags & PEFTIO_REPORT_SUMMARY);

	account(f, rp, all);
	extra(f, rp, all);
}
