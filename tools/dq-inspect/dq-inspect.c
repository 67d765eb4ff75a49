/*
 * dq-inspect - what a checkpoint costs and what quantization did to it:
 * a per-tensor account of parameters, bytes and bits per parameter (with
 * the pieces of every 4-bit weight), the error of the 4-bit weights
 * against the original, a check of the stored checksums, and what a
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

#include <jansson.h>
#include <xxhash.h>
#include <yaml.h>

#include "cli.h"

enum format { HUMAN, JSON, YAML };

struct opts {
	enum format		 fmt;
	const char		*compare;
	int			 verify;
	int			 plan;		/* -1: none */
	uint64_t		 r;
	double			 alpha;
	const char		*targets;
	uint64_t		 virtual_tokens;
	enum peftio_optimizer	 optimizer;
	unsigned		 jobs;
};

static struct opts O = { HUMAN, NULL, 0, -1, 8, 8.0, NULL, 20,
	PEFTIO_OPT_ADAMW, 1 };

/* The pieces of a 4-bit weight. */
enum part { P_CODES, P_ABSMAX, P_NESTED, P_MAP, P_NESTED_MAP, P_QSTATE,
	NPARTS };
static const char *const part_key[NPARTS] = {
	"codes", "absmax", "nested_absmax", "quant_map", "nested_quant_map",
	"quant_state"
};

/* Sums for the error of a dequantized tensor y against the original x. */
struct stats {
	double		 sxx, syy, sxy, sdd, maxerr;
	uint64_t	 n;
};

/* One tensor as the model sees it: a 4-bit weight with its pieces. */
struct row {
	size_t		 idx;		/* the tensor (W for a 4-bit weight) */
	const char	*name;
	int		 quant;
	struct peftio_bnb_weight bw;
	int		 q8;		/* an 8-bit weight: bw8, not bw */
	struct peftio_bnb8_weight bw8;
	int		 ndim;
	const uint64_t	*shape;
	uint64_t	 params;
	uint64_t	 bytes;
	uint64_t	 part[NPARTS];
	int		 compared;
	struct stats	 st;
};

struct report {
	const char	*path;
	struct peftio_ckpt *c;
	struct row	*rows;
	size_t		 nrows;
	/* totals */
	uint64_t	 params, bytes, qparams, qbytes, orig_bytes;
	int64_t		 dq_saved_bits;	/* negative for small tensors, where
					 * the 1 KiB nested map outweighs it */
	size_t		 nquant, ndq;
	int		 qtype, mixed_types;
	size_t		 nq8;		/* 8-bit weights among nquant */
	/* --compare */
	int		 compared;
	struct stats	 cmp;
	/* --verify */
	json_t		*verify;
	/* --plan */
	int		 planned;
	struct peftio_plan plan;
	/* adapter */
	json_t		*adapter;
};

static struct peftio_ckpt *orig;	/* --compare */

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [--json | --yaml] [-qv] [--compare original] "
	    "[--verify]\n"
	    "                  [--plan full|lora|qlora|ia3|prompt|prefix|bitfit|"
	    "loha|lokr|\n"
	    "                          adalora|vera|hra|miss|delora] [-r rank]\n"
	    "                  [--alpha alpha] [--target list] "
	    "[--virtual-tokens n]\n"
	    "                  [--optimizer adamw|adamw8bit|sgd] [-j jobs] "
	    "checkpoint ...\n", cli_progname);
	exit(status);
}

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static double
bits_per(uint64_t bytes, uint64_t params)
{
	return params ? (double)bytes * 8.0 / (double)params : 0.0;
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

/* The quantization types, as rp->qtype counts them. */
#define QTYPE_INT8	2

static const char *
qtype_name(int t)
{
	return t == QTYPE_INT8 ? "int8" :
	    peftio_q4type_name((enum peftio_q4type)t);
}

static int
row_qtype(const struct row *r)
{
	return r->q8 ? QTYPE_INT8 : (int)r->bw.qs.type;
}

static const char *
row_dtype(const struct report *rp, const struct row *r)
{
	if (r->q8)
		return "INT8";
	if (r->quant)
		return r->bw.qs.type == PEFTIO_Q4_FP4 ? "FP4" : "NF4";
	return peftio_dtype_name(peftio_ckpt_tensor(rp->c, r->idx)->dtype);
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

static int
yemit(yaml_emitter_t *e, yaml_event_t *ev)
{
	return yaml_emitter_emit(e, ev) ? 0 : -1;
}

/* A string that a YAML reader would take for something else. */
static int
needs_quotes(const char *s)
{
	static const char *const words[] = { "null", "Null", "NULL", "~",
		"true", "True", "TRUE", "false", "False", "FALSE", "yes", "no",
		"Yes", "No", "on", "off", "On", "Off", "y", "n", ".nan",
		".inf", "-.inf" };
	char *end;
	size_t i;

	if (*s == '\0')
		return 1;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(s, words[i]) == 0)
			return 1;
	(void)strtod(s, &end);
	return *end == '\0';
}

static int
yscalar(yaml_emitter_t *e, const char *s, int quoted)
{
	yaml_event_t ev;

	yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s,
	    (int)strlen(s), 1, 1, quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE :
	    YAML_ANY_SCALAR_STYLE);
	return yemit(e, &ev);
}

static int
ynode(yaml_emitter_t *e, json_t *v)
{
	yaml_event_t ev;
	const char *k;
	char buf[64];
	json_t *x;
	size_t i;
	int flow = 1;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
		    YAML_BLOCK_MAPPING_STYLE);
		if (yemit(e, &ev) != 0)
			return -1;
		json_object_foreach(v, k, x)
			if (yscalar(e, k, needs_quotes(k)) != 0 ||
			    ynode(e, x) != 0)
				return -1;
		yaml_mapping_end_event_initialize(&ev);
		return yemit(e, &ev);
	case JSON_ARRAY:
		json_array_foreach(v, i, x)
			if (json_is_object(x) || json_is_array(x))
				flow = 0;
		yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
		    flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE);
		if (yemit(e, &ev) != 0)
			return -1;
		json_array_foreach(v, i, x)
			if (ynode(e, x) != 0)
				return -1;
		yaml_sequence_end_event_initialize(&ev);
		return yemit(e, &ev);
	case JSON_STRING:
		return yscalar(e, json_string_value(v),
		    needs_quotes(json_string_value(v)));
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%lld",
		    (long long)json_integer_value(v));
		return yscalar(e, buf, 0);
	case JSON_REAL:
		peftio_py_repr_double(json_real_value(v), buf, sizeof(buf));
		return yscalar(e, buf, 0);
	case JSON_TRUE:
		return yscalar(e, "true", 0);
	case JSON_FALSE:
		return yscalar(e, "false", 0);
	default:
		return yscalar(e, "null", 0);
	}
}

static int out_errno;		/* why writing standard output failed */

/* Every document of docs, one YAML document each. */
static int
emit_yaml(json_t *docs)
{
	yaml_emitter_t e;
	yaml_event_t ev;
	json_t *d;
	size_t i;
	int rc = -1;

	if (!yaml_emitter_initialize(&e))
		return -1;
	yaml_emitter_set_output_file(&e, stdout);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_width(&e, 1 << 20);
	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	if (yemit(&e, &ev) != 0)
		goto out;
	json_array_foreach(docs, i, d) {
		yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0);
		if (yemit(&e, &ev) != 0 || ynode(&e, d) != 0)
			goto out;
		yaml_document_end_event_initialize(&ev, 1);
		if (yemit(&e, &ev) != 0)
			goto out;
	}
	yaml_stream_end_event_initialize(&ev);
	if (yemit(&e, &ev) != 0)
		goto out;
	rc = 0;
out:
	/* A failed write is reported with the others, by main(). */
	if (rc != 0 && ferror(stdout) && out_errno == 0)
		out_errno = errno != 0 ? errno : EIO;
	else if (rc != 0)
		cli_warn("writing YAML: %s", e.problem != NULL ? e.problem :
		    "emitter error");
	yaml_emitter_delete(&e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Reading the checkpoint                                              */

static int
collect(struct report *rp)
{
	struct peftio_error err;
	struct peftio_bnb_weight bw;
	struct peftio_bnb8_weight bw8, *bw8s;
	const struct peftio_tensor_info *ti;
	size_t n = peftio_ckpt_count(rp->c), i, k;
	struct row *r;
	int *role, *wq, rc = 0;
	struct peftio_bnb_weight *bws;

	/* role: 0 a plain tensor, 1 a piece of a 4-bit weight, 2 its W */
	role = xcalloc(n, sizeof(*role));
	wq = xcalloc(n, sizeof(*wq));
	bws = xcalloc(n, sizeof(*bws));
	bw8s = xcalloc(n, sizeof(*bw8s));
	for (i = 0; i < n; i++) {
		peftio_error_clear(&err);
		if ((rc = peftio_bnb8_lookup(rp->c, i, &bw8, &err)) < 0) {
			cli_error(&err);
			goto out;
		}
		if (rc > 0) {
			rc = 0;
			bw8s[bw8.weight] = bw8;
			role[bw8.weight] = 3;
			role[bw8.scb] = 1;
			if (bw8.format >= 0)
				role[bw8.format] = 1;
			continue;
		}
		if ((rc = peftio_bnb_lookup(rp->c, i, &bw, &err)) < 0) {
			cli_error(&err);
			goto out;
		}
		if (rc == 0)
			continue;
		rc = 0;
		bws[bw.weight] = bw;
		role[bw.weight] = 2;
		role[bw.absmax] = role[bw.quant_map] = role[bw.quant_state] = 1;
		if (bw.qs.double_quant)
			role[bw.nested_absmax] = role[bw.nested_quant_map] = 1;
	}
	rp->rows = xcalloc(n, sizeof(*rp->rows));
	rp->qtype = -1;
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(rp->c, i);
		rp->bytes += ti->nbytes;
		if (role[i] == 1)
			continue;
		r = &rp->rows[rp->nrows++];
		r->idx = i;
		r->name = ti->name;
		if (role[i] == 0) {
			r->ndim = ti->ndim;
			r->shape = ti->shape;
			r->params = ti->numel;
			r->bytes = ti->nbytes;
			rp->params += r->params;
			rp->orig_bytes += r->bytes;
			continue;
		}
		r->quant = 1;
		if (role[i] == 3) {
			/* 8 + 32 / cols bits: the codes and one f32 scale a
			 * row (the 1-byte weight_format counts in the file's
			 * totals only). */
			r->q8 = 1;
			r->bw8 = bw8s[i];
			r->ndim = ti->ndim;
			r->shape = ti->shape;
			r->params = ti->numel;
			r->part[P_CODES] = ti->nbytes;
			r->part[P_ABSMAX] = peftio_ckpt_tensor(rp->c,
			    r->bw8.scb)->nbytes;
			r->bytes = r->part[P_CODES] + r->part[P_ABSMAX];
			rp->params += r->params;
			rp->qparams += r->params;
			rp->qbytes += r->bytes;
			rp->orig_bytes += r->params *
			    (peftio_dtype_bits(peftio_bnb8_dtype(rp->c)) / 8);
			if (rp->qtype >= 0 && rp->qtype != QTYPE_INT8)
				rp->mixed_types = 1;
			rp->qtype = QTYPE_INT8;
			rp->nquant++;
			rp->nq8++;
			continue;
		}
		r->bw = bws[i];
		r->ndim = r->bw.qs.ndim;
		r->shape = r->bw.qs.shape;
		r->params = r->bw.qs.numel;
		r->part[P_CODES] = ti->nbytes;
		r->part[P_ABSMAX] = peftio_ckpt_tensor(rp->c,
		    r->bw.absmax)->nbytes;
		r->part[P_MAP] = peftio_ckpt_tensor(rp->c,
		    r->bw.quant_map)->nbytes;
		r->part[P_QSTATE] = peftio_ckpt_tensor(rp->c,
		    r->bw.quant_state)->nbytes;
		if (r->bw.qs.double_quant) {
			r->part[P_NESTED] = peftio_ckpt_tensor(rp->c,
			    r->bw.nested_absmax)->nbytes;
			r->part[P_NESTED_MAP] = peftio_ckpt_tensor(rp->c,
			    r->bw.nested_quant_map)->nbytes;
			/* the f32 absmax this replaces, less what replaces it */
			rp->dq_saved_bits += 8 * ((int64_t)(4 * ceil_div(
			    r->params, r->bw.qs.blocksize)) -
			    (int64_t)(r->part[P_ABSMAX] + r->part[P_NESTED] +
			    r->part[P_NESTED_MAP]));
			rp->ndq++;
		}
		for (k = 0; k < NPARTS; k++)
			r->bytes += r->part[k];
		rp->params += r->params;
		rp->qparams += r->params;
		rp->qbytes += r->bytes;
		rp->orig_bytes += r->params *
		    (peftio_dtype_bits(r->bw.qs.dtype) / 8);
		if (rp->qtype >= 0 && rp->qtype != row_qtype(r))
			rp->mixed_types = 1;
		rp->qtype = row_qtype(r);
		rp->nquant++;
	}
out:
	free(role);
	free(wq);
	free(bws);
	free(bw8s);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Adapters: rank and size per module                                  */

static json_t *
adapter_info(struct report *rp)
{
	struct peftio_error err;
	const struct peftio_tensor_info *ti, *tb;
	json_t *a, *mods, *cfg = NULL, *m, *v;
	size_t n = peftio_ckpt_count(rp->c), i, len;
	uint64_t params = 0, bytes = 0;
	char *bname, *buf = NULL, path[4096];
	const char *p, *dir;
	long j;

	mods = json_array();
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(rp->c, i);
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
		if ((j = peftio_ckpt_find(rp->c, bname)) >= 0 &&
		    (tb = peftio_ckpt_tensor(rp->c, (size_t)j))->ndim == 2) {
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
	dir = peftio_ckpt_dir(rp->c);
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

#define NCHUNK	64

struct cjob {
	const float	*x, *y;
	uint64_t	 n;
	struct stats	 part[NCHUNK];
};

static void
stats_range(void *arg, uint64_t b, uint64_t e)
{
	struct cjob *j = arg;
	uint64_t c, i, lo, hi;
	struct stats *s;
	double x, y, d;

	for (c = b; c < e; c++) {
		s = &j->part[c];
		lo = j->n * c / NCHUNK;
		hi = j->n * (c + 1) / NCHUNK;
		for (i = lo; i < hi; i++) {
			x = j->x[i];
			y = j->y[i];
			d = x - y;
			s->sxx += x * x;
			s->syy += y * y;
			s->sxy += x * y;
			s->sdd += d * d;
			if (fabs(d) > s->maxerr || isnan(d))
				s->maxerr = isnan(d) ? NAN : fabs(d);
		}
		s->n = hi - lo;
	}
}

static void
stats_add(struct stats *a, const struct stats *b)
{
	a->sxx += b->sxx;
	a->syy += b->syy;
	a->sxy += b->sxy;
	a->sdd += b->sdd;
	if (b->maxerr > a->maxerr || isnan(b->maxerr))
		a->maxerr = isnan(a->maxerr) ? a->maxerr : b->maxerr;
	a->n += b->n;
}

static double
st_rmse(const struct stats *s)
{
	return s->n ? sqrt(s->sdd / (double)s->n) : 0.0;
}

static double
st_snr(const struct stats *s)
{
	return 10.0 * log10(s->sxx / s->sdd);
}

static double
st_cos(const struct stats *s)
{
	return s->sxy / sqrt(s->sxx * s->syy);
}

/* Values compared at a time: memory holds this much of a tensor. */
#define CMP_PART	(8u << 20)

static struct peftio_scratch Xs, Ys, Raw;

/*
 * Statistics of 4-bit weight r against tensor k of the original, a part
 * at a time: each part's NCHUNK partial sums are added in order, so the
 * result does not depend on -j.
 */
static int
compare_parts(struct report *rp, struct row *r, size_t k,
    const struct peftio_tensor_info *ti, struct cjob *j)
{
	struct peftio_error err;
	uint64_t al = r->q8 ? r->bw8.cols : peftio_bnb_part_align(&r->bw);
	uint64_t e0, n, part;
	size_t es = peftio_dtype_bits(ti->dtype) / 8, c;
	float *x, *y;
	void *raw;

	/* whole blocks, or whole rows of an 8-bit weight */
	part = CMP_PART > al ? CMP_PART / al * al : al;
	for (e0 = 0; e0 < r->params; e0 += n) {
		n = r->params - e0 < part ? r->params - e0 : part;
		x = xscratch(&Xs, n * sizeof(float));
		y = xscratch(&Ys, n * sizeof(float));
		raw = xscratch(&Raw, n * es);
		peftio_error_clear(&err);
		if ((r->q8 ? peftio_bnb8_dequantize_part(rp->c, &r->bw8,
		    PEFTIO_F32, y, e0 / r->bw8.cols, n / r->bw8.cols, O.jobs,
		    &err) : peftio_bnb_dequantize_part(rp->c, &r->bw,
		    PEFTIO_F32, y, e0, n, O.jobs, &err)) != 0 ||
		    peftio_ckpt_read(orig, k, e0 * es, raw, n * es, &err) != 0) {
			cli_error(&err);
			return -1;
		}
		peftio_to_f32(ti->dtype, raw, x, n);
		memset(j, 0, sizeof(*j));
		j->x = x;
		j->y = y;
		j->n = n;
		peftio_parallel_for(O.jobs, NCHUNK, 1, stats_range, j);
		for (c = 0; c < NCHUNK; c++)
			stats_add(&r->st, &j->part[c]);
	}
	return 0;
}

/*
 * Statistics of tensor r of an unquantized checkpoint against tensor k of
 * the original, both converted to 32 bits, a part at a time.
 */
static int
compare_plain(struct report *rp, struct row *r, size_t k,
    const struct peftio_tensor_info *ti, struct cjob *j)
{
	const struct peftio_tensor_info *mine = peftio_ckpt_tensor(rp->c,
	    r->idx);
	size_t es = peftio_dtype_bits(ti->dtype) / 8, c;
	size_t ms = peftio_dtype_bits(mine->dtype) / 8;
	struct peftio_error err;
	uint64_t e0, n;
	float *x, *y;
	void *raw;

	for (e0 = 0; e0 < r->params; e0 += n) {
		n = r->params - e0 < CMP_PART ? r->params - e0 : CMP_PART;
		x = xscratch(&Xs, n * sizeof(float));
		y = xscratch(&Ys, n * sizeof(float));
		raw = xscratch(&Raw, n * (es > ms ? es : ms));
		peftio_error_clear(&err);
		if (peftio_ckpt_read(rp->c, r->idx, e0 * ms, raw, n * ms,
		    &err) != 0) {
			cli_error(&err);
			return -1;
		}
		peftio_to_f32(mine->dtype, raw, y, n);
		if (peftio_ckpt_read(orig, k, e0 * es, raw, n * es, &err) != 0) {
			cli_error(&err);
			return -1;
		}
		peftio_to_f32(ti->dtype, raw, x, n);
		memset(j, 0, sizeof(*j));
		j->x = x;
		j->y = y;
		j->n = n;
		peftio_parallel_for(O.jobs, NCHUNK, 1, stats_range, j);
		for (c = 0; c < NCHUNK; c++)
			stats_add(&r->st, &j->part[c]);
	}
	return 0;
}

/*
 * The 4-bit weights of a quantized checkpoint against the original; or,
 * when the checkpoint holds no 4-bit weight, each floating-point tensor
 * against the tensor of the same name (a merge or an extraction against
 * a reference).  Nothing to compare at all is an error.
 */
static int
compare(struct report *rp)
{
	const struct peftio_tensor_info *ti;
	struct cjob *j;
	const char *first = NULL;
	size_t i, done = 0, missing = 0, candidates = 0;
	int plain = rp->nquant == 0;
	long k;
	int bad = 0;

	memset(&rp->cmp, 0, sizeof(rp->cmp));
	j = xcalloc(1, sizeof(*j));
	for (i = 0; i < rp->nrows; i++) {
		struct row *r = &rp->rows[i];

		if (plain ? !peftio_dtype_is_float(peftio_ckpt_tensor(rp->c,
		    r->idx)->dtype) : !r->quant)
			continue;
		candidates++;
		cli_progress(done++, plain ? rp->nrows : rp->nquant,
		    "comparing");
		if ((k = peftio_ckpt_find(orig, r->name)) < 0) {
			if (missing++ == 0)
				first = r->name;
			bad = 1;
			continue;
		}
		ti = peftio_ckpt_tensor(orig, (size_t)k);
		if (!peftio_dtype_is_float(ti->dtype) ||
		    ti->numel != r->params) {
			cli_warn("%s: tensor '%s': %s with %llu elements does "
			    "not fit the %s's %llu",
			    peftio_ckpt_path(orig), r->name,
			    peftio_dtype_name(ti->dtype),
			    (unsigned long long)ti->numel,
			    plain ? "tensor" : "quantized weight",
			    (unsigned long long)r->params);
			bad = 1;
			continue;
		}
		if (r->params > SIZE_MAX / sizeof(float)) {
			cli_warn("%s: tensor '%s' is too large", rp->path,
			    r->name);
			bad = 1;
			continue;
		}
		memset(&r->st, 0, sizeof(r->st));
		if ((plain ? compare_plain(rp, r, (size_t)k, ti, j) :
		    compare_parts(rp, r, (size_t)k, ti, j)) != 0)
			bad = 1;
		else {
			stats_add(&rp->cmp, &r->st);
			r->compared = 1;
			rp->compared++;
		}
		peftio_ckpt_release(orig, (size_t)k);
		peftio_ckpt_release(rp->c, plain ? r->idx : r->q8 ?
		    r->bw8.weight : r->bw.weight);
	}
	cli_progress_end();
	if (candidates == 0)
		cli_warn("%s: nothing to compare: no floating-point or 4-bit "
		    "tensor", rp->path);
	else if (rp->compared == 0 && missing == candidates)
		cli_warn("%s: nothing to compare: no tensor name in common "
		    "with %s", rp->path, peftio_ckpt_path(orig));
	else if (missing == 1)
		cli_warn("%s: no tensor '%s' to compare with",
		    peftio_ckpt_path(orig), first);
	else if (missing > 1)
		cli_warn("%s: no tensor '%s' to compare with, nor %zu more",
		    peftio_ckpt_path(orig), first, missing - 1);
	if (rp->compared == 0 && candidates > 0 && missing < candidates)
		cli_warn("%s: nothing compared", rp->path);
	free(j);
	return bad || rp->compared == 0;
}

static json_t *
jstats(const struct stats *s)
{
	json_t *o = json_object();

	json_object_set_new(o, "rmse", jreal(st_rmse(s)));
	json_object_set_new(o, "max_abs_error", jreal(s->maxerr));
	json_object_set_new(o, "snr_db", jreal(st_snr(s)));
	json_object_set_new(o, "cosine", jreal(st_cos(s)));
	return o;
}

/* ------------------------------------------------------------------ */
/* --verify                                                            */

static int
verify(struct report *rp)
{
	struct peftio_error err;
	const struct peftio_tensor_info *ti;
	struct peftio_st *st;
	const void *data;
	const char *want;
	json_t *mism, *none, *unlisted;
	char key[PEFTIO_MAX_NAME + 8], got[32];
	size_t s, i, k, nk, checked = 0;
	int bad = 0, any;

	mism = json_array();
	none = json_array();
	unlisted = json_array();
	for (s = 0; s < peftio_ckpt_nshards(rp->c); s++) {
		st = peftio_ckpt_shard(rp->c, s);
		any = 0;
		nk = peftio_st_meta_count(st);
		for (k = 0; k < nk && !any; k++)
			any = strncmp(peftio_st_meta_key(st, k), "xxh3.", 5) == 0;
		if (!any) {
			json_array_append_new(none,
			    json_string(peftio_st_path(st)));
			continue;
		}
		for (i = 0; i < peftio_st_count(st); i++) {
			ti = peftio_st_tensor(st, i);
			snprintf(key, sizeof(key), "xxh3.%s", ti->name);
			if ((want = peftio_st_meta_get(st, key)) == NULL) {
				json_array_append_new(unlisted,
				    json_string(ti->name));
				continue;
			}
			peftio_error_clear(&err);
			if (peftio_st_data(st, i, &data, &err) != 0) {
				cli_error(&err);
				bad = 1;
				continue;
			}
			snprintf(got, sizeof(got), "%016llx",
			    (unsigned long long)XXH3_64bits(data,
			    (size_t)ti->nbytes));
			peftio_st_release(st, i);
			checked++;
			if (strcmp(got, want) != 0) {
				cli_warn("%s: tensor '%s': checksum mismatch "
				    "(stored %s, computed %s)",
				    peftio_st_path(st), ti->name, want, got);
				json_array_append_new(mism,
				    json_string(ti->name));
				bad = 1;
			}
		}
	}
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

/* The attention heads of config.json beside the checkpoint, if any. */
static int
plan_config(struct report *rp, struct peftio_plan_opts *po,
    struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(rp->c);
	char path[4096], *text;
	struct stat sb;
	size_t len;
	int rc;

	if (dir == NULL)
		return 0;
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return 0;
	if ((rc = peftio_read_file(path, 64u << 20, &text, &len, err)) != 0)
		return rc;
	if ((rc = peftio_plan_config(text, len, po, err)) != 0)
		peftio_error_prefix(err, "%s", dir);
	free(text);
	return rc;
}

static int
plan(struct report *rp)
{
	struct peftio_plan_opts po;
	struct peftio_plan_tensor *t;
	struct peftio_error err;
	size_t i;
	int rc;

	t = xcalloc(rp->nrows, sizeof(*t));
	for (i = 0; i < rp->nrows; i++) {
		t[i].name = rp->rows[i].name;
		t[i].ndim = rp->rows[i].ndim;
		t[i].shape = rp->rows[i].shape;
		t[i].numel = rp->rows[i].params;
		t[i].nbytes = rp->rows[i].bytes;
		t[i].quantized = rp->rows[i].quant;
	}
	memset(&po, 0, sizeof(po));
	po.method = (enum peftio_plan_method)O.plan;
	po.r = O.r;
	po.targets = O.targets;
	po.virtual_tokens = O.virtual_tokens;
	po.optimizer = O.optimizer;
	peftio_error_clear(&err);
	if ((rc = plan_config(rp, &po, &err)) != 0) {
		free(t);
		return cli_error(&err) != 0;
	}
	if ((rc = peftio_plan_compute(&po, t, rp->nrows, &rp->plan, &err)) != 0)
		cli_error(&err);
	else
		rp->planned = 1;
	free(t);
	return rc != 0;
}

static const char *
plan_targets(void)
{
	if (O.targets != NULL)
		return O.targets;
	return peftio_plan_default_targets((enum peftio_plan_method)O.plan);
}

static const char *
lora_targets(void)
{
	if (O.targets != NULL && O.plan != PEFTIO_PLAN_IA3)
		return O.targets;
	return peftio_plan_default_targets(PEFTIO_PLAN_LORA);
}

static const char *
assumptions(char *buf, size_t len)
{
	snprintf(buf, len,
	    "16-bit weights and gradients (2 + 2 bytes per trained "
	    "parameter), optimizer %s with %u bytes of state per trained "
	    "parameter; LoRA and QLoRA: rank %llu on %s, frozen base in "
	    "16 bits (LoRA) or NF4 with double quantization at blocksize "
	    "64 for Linear weights and 16 bits for the rest (QLoRA); "
	    "activations and framework overhead not counted",
	    peftio_optimizer_name(O.optimizer),
	    peftio_optimizer_state_bytes(O.optimizer),
	    (unsigned long long)O.r, lora_targets());
	return buf;
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
	const char *tg = plan_targets();
	char line[256], as[1024];

	peftio_plan_peft_line(p->trainable_params, p->all_params, line,
	    sizeof(line));
	json_object_set_new(o, "method", json_string(
	    peftio_plan_method_name((enum peftio_plan_method)O.plan)));
	json_object_set_new(o, "r", jint(O.r));
	json_object_set_new(o, "lora_alpha", jreal(O.alpha));
	json_object_set_new(o, "target_modules", tg != NULL ?
	    json_string(tg) : json_null());
	json_object_set_new(o, "virtual_tokens", jint(O.virtual_tokens));
	json_object_set_new(o, "optimizer",
	    json_string(peftio_optimizer_name(O.optimizer)));
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
	json_object_set_new(o, "assumptions",
	    json_string(assumptions(as, sizeof(as))));
	return o;
}

/* ------------------------------------------------------------------ */
/* Reports                                                             */

static double
dq_saving(const struct report *rp)
{
	return rp->qparams ? (double)rp->dq_saved_bits / (double)rp->qparams :
	    0.0;
}

static json_t *
jreport(const struct report *rp)
{
	json_t *doc = json_object(), *ts = json_array(), *t, *q, *b, *tot;
	const struct row *r;
	size_t i, k;

	json_object_set_new(doc, "checkpoint", json_string(rp->path));
	for (i = 0; i < rp->nrows; i++) {
		r = &rp->rows[i];
		t = json_object();
		json_object_set_new(t, "name", json_string(r->name));
		json_object_set_new(t, "dtype", json_string(row_dtype(rp, r)));
		json_object_set_new(t, "shape", jshape(r->ndim, r->shape));
		json_object_set_new(t, "params", jint(r->params));
		json_object_set_new(t, "bytes", jint(r->bytes));
		json_object_set_new(t, "bits_per_param",
		    jreal(bits_per(r->bytes, r->params)));
		if (r->q8) {
			q = json_object();
			json_object_set_new(q, "type", json_string("int8"));
			json_object_set_new(q, "rows", jint(r->bw8.rows));
			json_object_set_new(q, "columns", jint(r->bw8.cols));
			b = json_object();
			json_object_set_new(b, "codes", jint(r->part[P_CODES]));
			json_object_set_new(b, "scb", jint(r->part[P_ABSMAX]));
			json_object_set_new(q, "bytes", b);
			json_object_set_new(t, "quant", q);
		} else if (r->quant) {
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
			for (k = 0; k < NPARTS; k++)
				json_object_set_new(b, part_key[k],
				    jint(r->part[k]));
			json_object_set_new(q, "bytes", b);
			json_object_set_new(t, "quant", q);
		} else
			json_object_set_new(t, "quant", json_null());
		if (r->compared)
			json_object_set_new(t, "compare", jstats(&r->st));
		json_array_append_new(ts, t);
	}
	json_object_set_new(doc, "tensors", ts);
	tot = json_object();
	json_object_set_new(tot, "tensors", jint(rp->nrows));
	json_object_set_new(tot, "params", jint(rp->params));
	json_object_set_new(tot, "bytes", jint(rp->bytes));
	json_object_set_new(tot, "bits_per_param",
	    jreal(bits_per(rp->bytes, rp->params)));
	json_object_set_new(tot, "quantized_tensors", jint(rp->nquant));
	json_object_set_new(tot, "quantized_params", jint(rp->qparams));
	json_object_set_new(tot, "quantized_bytes", jint(rp->qbytes));
	json_object_set_new(tot, "quantized_bits_per_param",
	    jreal(bits_per(rp->qbytes, rp->qparams)));
	json_object_set_new(tot, "original_bytes", jint(rp->orig_bytes));
	json_object_set_new(tot, "saved_bytes", json_integer(
	    (json_int_t)rp->orig_bytes - (json_int_t)rp->bytes));
	json_object_set_new(tot, "dq_saved_bits_per_param",
	    jreal(dq_saving(rp)));
	json_object_set_new(doc, "totals", tot);
	if (rp->adapter != NULL)
		json_object_set(doc, "adapter", rp->adapter);
	if (O.compare != NULL) {
		t = jstats(&rp->cmp);
		json_object_set_new(t, "tensors", jint(rp->compared));
		json_object_set_new(t, "params", jint(rp->cmp.n));
		json_object_set_new(doc, "compare", t);
	}
	if (rp->verify != NULL)
		json_object_set(doc, "verify", rp->verify);
	if (rp->planned)
		json_object_set_new(doc, "plan", jplan(rp));
	return doc;
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
	const struct row *r;
	size_t i, w = 4;
	char sh[256], a[48], b[48], c[48], d[48], e[48];
	int sw = 5;

	printf("checkpoint %s\n", rp->path);
	for (i = 0; i < rp->nrows; i++) {
		r = &rp->rows[i];
		if (strlen(r->name) > w)
			w = strlen(r->name);
		shape_str(r->ndim, r->shape, sh, sizeof(sh));
		if ((int)strlen(sh) > sw)
			sw = (int)strlen(sh);
	}
	printf("%-*s  %-7s %-*s %15s %15s %10s\n", (int)w, "NAME", "DTYPE",
	    sw, "SHAPE", "PARAMS", "BYTES", "BITS/PARAM");
	for (i = 0; i < rp->nrows; i++) {
		r = &rp->rows[i];
		printf("%-*s  %-7s %-*s %15s %15s %10.3f\n", (int)w, r->name,
		    row_dtype(rp, r), sw,
		    shape_str(r->ndim, r->shape, sh, sizeof(sh)),
		    thousands(r->params, a, sizeof(a)),
		    thousands(r->bytes, b, sizeof(b)),
		    bits_per(r->bytes, r->params));
		if (!r->quant)
			continue;
		if (r->q8) {
			printf("%*s  int8 row-wise: codes %s, SCB %s\n",
			    (int)w, "", thousands(r->part[P_CODES], a,
			    sizeof(a)), thousands(r->part[P_ABSMAX], b,
			    sizeof(b)));
			continue;
		}
		printf("%*s  %s blocksize %llu%s: codes %s, %s %s",
		    (int)w, "", peftio_q4type_name(r->bw.qs.type),
		    (unsigned long long)r->bw.qs.blocksize,
		    r->bw.qs.double_quant ? " DQ" : "",
		    thousands(r->part[P_CODES], a, sizeof(a)),
		    r->bw.qs.double_quant ? "absmax codes" : "absmax",
		    thousands(r->part[P_ABSMAX], b, sizeof(b)));
		if (r->bw.qs.double_quant)
			printf(", nested absmax %s",
			    thousands(r->part[P_NESTED], c, sizeof(c)));
		printf(", maps %s, quant_state %s\n",
		    thousands(r->part[P_MAP] + r->part[P_NESTED_MAP], d,
		    sizeof(d)), thousands(r->part[P_QSTATE], e, sizeof(e)));
	}
	printf("\n%-16s%zu (%zu quantized", "tensors", rp->nrows, rp->nquant);
	if (rp->nquant)
		printf(": %s, %zu with double quantization", rp->mixed_types ?
		    rp->nq8 ? "int8 and 4-bit" : "nf4 and fp4" :
		    qtype_name(rp->qtype), rp->ndq);
	printf(")\n");
	printf("%-16s%s (%s quantized)\n", "parameters",
	    thousands(rp->params, a, sizeof(a)),
	    thousands(rp->qparams, b, sizeof(b)));
	print_size("bytes", rp->bytes);
	printf("%-16s%.3f overall", "bits/param",
	    bits_per(rp->bytes, rp->params));
	if (rp->nquant)
		printf(", %.3f over quantized tensors",
		    bits_per(rp->qbytes, rp->qparams));
	printf("\n");
	print_size("original size", rp->orig_bytes);
	printf("%-16s%s%s bytes (%.1f%%)\n", "saved",
	    rp->orig_bytes < rp->bytes ? "-" : "",
	    thousands(rp->orig_bytes < rp->bytes ? rp->bytes - rp->orig_bytes :
	    rp->orig_bytes - rp->bytes, a, sizeof(a)),
	    rp->orig_bytes ? 100.0 * ((double)rp->orig_bytes -
	    (double)rp->bytes) / (double)rp->orig_bytes : 0.0);
	printf("%-16s%.3f bits/param\n", "DQ saving", dq_saving(rp));
}

static void
human_extra(const struct report *rp)
{
	const struct row *r;
	const struct peftio_plan *p = &rp->plan;
	json_t *m, *v;
	size_t i, w = 4;
	char a[48], b[48], c[48], d[48], line[256], as[1024];
	const char *tg;

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
		json_array_foreach(json_object_get(rp->adapter, "modules"), i,
		    m)
			printf("  %s: rank %lld, %lld -> %lld, %lld params\n",
			    json_string_value(json_object_get(m, "name")),
			    (long long)json_integer_value(json_object_get(m,
			    "rank")), (long long)json_integer_value(
			    json_object_get(m, "in_features")),
			    (long long)json_integer_value(json_object_get(m,
			    "out_features")), (long long)json_integer_value(
			    json_object_get(m, "params")));
	}
	if (O.compare != NULL && rp->compared > 0) {
		for (i = 0; i < rp->nrows; i++)
			if (rp->rows[i].compared && strlen(rp->rows[i].name) > w)
				w = strlen(rp->rows[i].name);
		printf("\ncompared with %s\n", O.compare);
		printf("%-*s  %12s %12s %9s %10s\n", (int)w, "NAME", "RMSE",
		    "MAX|ERR|", "SNR(dB)", "COSINE");
		for (i = 0; i < rp->nrows; i++) {
			r = &rp->rows[i];
			if (!r->compared)
				continue;
			printf("%-*s  %12.6g %12.6g %9.3f %10.6f\n", (int)w,
			    r->name, st_rmse(&r->st), r->st.maxerr,
			    st_snr(&r->st), st_cos(&r->st));
		}
		printf("%-*s  %12.6g %12.6g %9.3f %10.6f\n", (int)w, "total",
		    st_rmse(&rp->cmp), rp->cmp.maxerr, st_snr(&rp->cmp),
		    st_cos(&rp->cmp));
	}
	if (rp->verify != NULL) {
		v = json_object_get(rp->verify, "files_without_checksums");
		json_array_foreach(v, i, m)
			printf("\nverify          %s: no checksums\n",
			    json_string_value(m));
		printf("%sverify          %lld tensors checked, %zu mismatched"
		    "%s\n", json_array_size(v) ? "" : "\n",
		    (long long)json_integer_value(json_object_get(rp->verify,
		    "checked")), json_array_size(json_object_get(rp->verify,
		    "mismatches")), json_array_size(json_object_get(
		    rp->verify, "tensors_without_checksums")) ?
		    " (some tensors have no checksum)" : "");
	}
	if (!rp->planned)
		return;
	tg = plan_targets();
	printf("\nplan            %s", peftio_plan_method_name(
	    (enum peftio_plan_method)O.plan));
	if (O.plan == PEFTIO_PLAN_LORA || O.plan == PEFTIO_PLAN_QLORA)
		printf(", r %llu, alpha %g",
		    (unsigned long long)O.r, O.alpha);
	if (O.plan == PEFTIO_PLAN_PROMPT || O.plan == PEFTIO_PLAN_PREFIX)
		printf(", %llu virtual tokens, hidden size %llu, %llu layers",
		    (unsigned long long)O.virtual_tokens,
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
	printf("assumptions     %s\n", assumptions(as, sizeof(as)));
}

static int
inspect(const char *path, json_t *docs)
{
	struct report rp;
	struct peftio_error err;
	int bad = 0;

	memset(&rp, 0, sizeof(rp));
	rp.path = path;
	peftio_error_clear(&err);
	if (peftio_ckpt_open(&rp.c, path, &err) != 0)
		return cli_error(&err);
	cli_debug("%s: %zu tensors in %zu file(s)", path,
	    peftio_ckpt_count(rp.c), peftio_ckpt_nshards(rp.c));
	if (collect(&rp) != 0) {
		bad = 1;
		goto out;
	}
	rp.adapter = adapter_info(&rp);
	if (O.compare != NULL)
		bad |= compare(&rp);
	if (O.verify)
		bad |= verify(&rp);
	if (O.plan >= 0)
		bad |= plan(&rp);
	if (docs != NULL)
		json_array_append_new(docs, jreport(&rp));
	else {
		human(&rp);
		human_extra(&rp);
	}
out:
	json_decref(rp.adapter);
	json_decref(rp.verify);
	free(rp.rows);
	peftio_ckpt_close(rp.c);
	return bad;
}

int
main(int argc, char *argv[])
{
	enum { OPT_JSON = 256, OPT_YAML, OPT_COMPARE, OPT_VERIFY, OPT_PLAN,
	    OPT_ALPHA, OPT_TARGET, OPT_VTOKENS, OPT_OPTIMIZER, OPT_HELP,
	    OPT_VERSION };
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "yaml", no_argument, NULL, OPT_YAML },
		{ "compare", required_argument, NULL, OPT_COMPARE },
		{ "verify", no_argument, NULL, OPT_VERIFY },
		{ "plan", required_argument, NULL, OPT_PLAN },
		{ "rank", required_argument, NULL, 'r' },
		{ "alpha", required_argument, NULL, OPT_ALPHA },
		{ "target", required_argument, NULL, OPT_TARGET },
		{ "virtual-tokens", required_argument, NULL, OPT_VTOKENS },
		{ "optimizer", required_argument, NULL, OPT_OPTIMIZER },
		{ "jobs", required_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	struct peftio_error err;
	json_t *docs = NULL;
	uint64_t v;
	char *end;
	int ch, t, i, bad = 0;

	cli_init("dq-inspect");
	O.jobs = peftio_ncpus();
	while ((ch = getopt_long(argc, argv, "j:qr:v", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'j':
			if (cli_parse_u64("-j", optarg, 0, 256, &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.jobs = v == 0 ? peftio_ncpus() : (unsigned)v;
			break;
		case 'q':
			cli_verbose = 0;
			break;
		case 'r':
			if (cli_parse_u64("-r", optarg, 1, 1 << 20, &O.r) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case 'v':
			cli_verbose = cli_verbose < 1 ? 2 : cli_verbose + 1;
			break;
		case OPT_JSON:
			O.fmt = JSON;
			break;
		case OPT_YAML:
			O.fmt = YAML;
			break;
		case OPT_COMPARE:
			O.compare = optarg;
			break;
		case OPT_VERIFY:
			O.verify = 1;
			break;
		case OPT_PLAN:
			if ((O.plan = peftio_plan_method_parse(optarg)) < 0) {
				cli_warn("--plan: unknown method %s (use full, "
				    "lora, qlora, ia3, prompt, prefix, bitfit, "
				    "loha, lokr, adalora, vera, hra, miss or "
				    "delora)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			break;
		case OPT_ALPHA:
			O.alpha = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' ||
			    !isfinite(O.alpha) || O.alpha <= 0) {
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
			O.targets = optarg;
			break;
		case OPT_VTOKENS:
			if (cli_parse_u64("--virtual-tokens", optarg, 1,
			    1 << 20, &O.virtual_tokens) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_OPTIMIZER:
			if ((t = peftio_optimizer_parse(optarg)) < 0) {
				cli_warn("--optimizer: unknown optimizer %s "
				    "(use adamw, adamw8bit or sgd)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			O.optimizer = (enum peftio_optimizer)t;
			break;
		case OPT_HELP:
			usage(CLI_EXIT_OK);
		case OPT_VERSION:
			printf("dq-inspect (peftio) %s\n", peftio_version());
			return CLI_EXIT_OK;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage(CLI_EXIT_USAGE);
	if (O.compare != NULL) {
		peftio_error_clear(&err);
		if (peftio_ckpt_open(&orig, O.compare, &err) != 0)
			return cli_error(&err);
	}
	if (O.fmt != HUMAN)
		docs = json_array();
	for (i = 0; i < argc; i++) {
		if (O.fmt == HUMAN && i > 0)
			printf("\n");
		bad |= inspect(argv[i], docs);
		/* The reason of the first failed write, before it is lost. */
		if (ferror(stdout) && out_errno == 0)
			out_errno = errno != 0 ? errno : EIO;
	}
	if (O.fmt == JSON && argc == 1 && json_array_size(docs) == 0)
		;	/* the one checkpoint failed: nothing to print */
	else if (O.fmt == JSON) {
		if (json_dumpf(argc == 1 ?
		    json_array_get(docs, 0) : docs, stdout, JSON_INDENT(2) |
		    JSON_PRESERVE_ORDER) != 0 && out_errno == 0)
			out_errno = errno != 0 ? errno : EIO;
		printf("\n");
	} else if (O.fmt == YAML && json_array_size(docs) > 0 &&
	    emit_yaml(docs) != 0)
		bad = 1;
	json_decref(docs);
	peftio_ckpt_close(orig);
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
