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

/* What becomes of a tensor planned PEFTIO_XF_CUSTOM. */
enum action { MERGE, DEQUANT, REQUANT, REQUANT8 };

struct item {
	enum action		 act;
	enum peftio_dtype	 dt;		/* output dtype */
	int			 touched;	/* changed by the merge */
	int			 is_bnb;	/* 4-bit */
	int			 is_bnb8;	/* 8-bit */
	struct peftio_bnb_out	 bo;		/* REQUANT: the new weight */
};

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
	struct peftio_xf_item	*xi;
	struct item		*items;
	struct peftio_bnb_weight *bw;	/* the base's 4-bit weights */
	struct peftio_bnb8_weight *bw8;	/* and 8-bit ones */
	size_t			 n;
	struct peftio_merge	*m;
	struct peftio_merge_stream *ms;
	struct peftio_scratch	 whole;	/* REQUANT: the merged tensor */
	int			 quantized;
	size_t			 nmerged;
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

static int
float_dtype(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

/* The shape the merge sees for a base tensor (a 4-bit weight's own). */
static int
shape_of(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	struct run *r = arg;
	const struct peftio_tensor_info *ti;
	long i = peftio_ckpt_find(r->in, name);
	int d;

	if (i < 0 || r->xi[i].act == PEFTIO_XF_SKIP)
		return -1;
	if (r->items[i].is_bnb) {
		*ndim = r->bw[i].qs.ndim;
		for (d = 0; d < *ndim; d++)
			shape[d] = r->bw[i].qs.shape[d];
		return 0;
	}
	ti = peftio_ckpt_tensor(r->in, (size_t)i);
	*ndim = ti->ndim;
	for (d = 0; d < ti->ndim; d++)
		shape[d] = ti->shape[d];
	return 0;
}

/* ------------------------------------------------------------------ */
/* The plan                                                            */

/* 4-bit weights are dequantized, their companions not written. */
static int
plan_base(struct run *r, struct peftio_error *err)
{
	size_t i;
	long nw;

	if ((nw = peftio_bnb_group(r->in, r->xi, r->bw, r->bw8, err)) < 0)
		return (int)nw;
	for (i = 0; i < r->n; i++) {
		if (r->xi[i].act != PEFTIO_XF_CUSTOM)
			continue;
		/* An 8-bit base does not record its dtype. */
		r->items[i].is_bnb8 = peftio_ckpt_tensor(r->in, i)->dtype ==
		    PEFTIO_I8;
		r->items[i].is_bnb = !r->items[i].is_bnb8;
		r->items[i].act = DEQUANT;
		r->items[i].dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
		    r->items[i].is_bnb8 ? peftio_bnb8_dtype(r->in) :
		    r->bw[i].qs.dtype;
	}
	r->quantized = nw > 0;
	return 0;
}

/* A 4-bit weight the merge leaves alone keeps its bytes with --requant. */
static void
keep_bnb(struct run *r, const struct peftio_bnb_weight *bw)
{
	r->xi[bw->weight].act = PEFTIO_XF_COPY;
	r->xi[bw->quant_state].act = PEFTIO_XF_COPY;
	r->xi[bw->absmax].act = PEFTIO_XF_COPY;
	r->xi[bw->quant_map].act = PEFTIO_XF_COPY;
	if (bw->qs.double_quant) {
		r->xi[bw->nested_absmax].act = PEFTIO_XF_COPY;
		r->xi[bw->nested_quant_map].act = PEFTIO_XF_COPY;
	}
}

static void
keep_bnb8(struct run *r, const struct peftio_bnb8_weight *bw)
{
	r->xi[bw->weight].act = PEFTIO_XF_COPY;
	r->xi[bw->scb].act = PEFTIO_XF_COPY;
	if (bw->format >= 0)
		r->xi[bw->format].act = PEFTIO_XF_COPY;
}

static int
plan_merge(struct run *r, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct item *it;
	size_t i;

	for (i = 0; i < r->n; i++) {
		it = &r->items[i];
		ti = peftio_ckpt_tensor(r->in, i);
		if (r->xi[i].act == PEFTIO_XF_SKIP)
			continue;
		it->touched = peftio_merge_touches(r->m, ti->name);
		r->nmerged += it->touched;
		if (it->is_bnb) {
			if (O.requant && !it->touched)
				keep_bnb(r, &r->bw[i]);
			else if (O.requant) {
				it->act = REQUANT;
				it->bo.qs = r->bw[i].qs;
				if (O.dtype >= 0)
					it->bo.qs.dtype =
					    (enum peftio_dtype)O.dtype;
			}
			continue;
		}
		if (it->is_bnb8) {
			if (O.requant && !it->touched)
				keep_bnb8(r, &r->bw8[i]);
			else if (O.requant)
				it->act = REQUANT8;
			continue;
		}
		if (it->touched) {
			if (!float_dtype(ti->dtype))
				return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
				    "%s: tensor '%s': %s weights cannot be "
				    "merged", peftio_ckpt_path(r->in),
				    ti->name, peftio_dtype_name(ti->dtype));
			r->xi[i].act = PEFTIO_XF_CUSTOM;
			it->act = MERGE;
			it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
			    ti->dtype;
		} else if (O.dtype >= 0 && float_dtype(ti->dtype) &&
		    ti->dtype != (enum peftio_dtype)O.dtype) {
			r->xi[i].act = PEFTIO_XF_CONVERT;
			r->xi[i].dt = (enum peftio_dtype)O.dtype;
		}
	}
	if (O.requant && !r->quantized)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: --requant needs a 4-bit or 8-bit base",
		    peftio_ckpt_path(r->in));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Computing a tensor                                                  */

/* Merged blocks go to the output writer, a job each. */
struct stream_out {
	struct peftio_xf	*x;
	struct peftio_xf_job	*j;
	const char		*name;
};

static void *
job_buffer(void *arg, uint64_t offset, uint64_t nbytes)
{
	struct stream_out *so = arg;

	so->j = peftio_xf_slot(so->x);
	so->j->name = so->name;
	so->j->len = nbytes;
	return peftio_scratch(&so->j->buf[0], nbytes);
}

static int
job_put(void *arg, struct peftio_error *err)
{
	struct stream_out *so = arg;

	return peftio_xf_submit(so->x, peftio_xf_job_write, err);
}

/* --requant: the whole merged tensor, to be quantized again. */
static void *
whole_buffer(void *arg, uint64_t offset, uint64_t nbytes)
{
	struct run *r = arg;

	return (char *)r->whole.p + offset;
}

/* The whole merged tensor i, in dt, into r->whole. */
static int
merge_whole(struct run *r, size_t i, enum peftio_dtype dt,
    struct peftio_error *err)
{
	struct item *it = &r->items[i];
	struct peftio_merge_out out = { whole_buffer, NULL, r };
	uint64_t nbytes;

	peftio_dtype_nbytes(dt, it->is_bnb8 ? peftio_ckpt_tensor(r->in,
	    i)->numel : r->bw[i].qs.numel, &nbytes);
	xscratch(&r->whole, nbytes);
	return peftio_merge_stream_tensor(r->ms, r->in, i,
	    it->is_bnb ? &r->bw[i] : NULL, it->is_bnb8 ? &r->bw8[i] : NULL,
	    dt, &out, err);
}

/* With double quantization the quant_state blob records the offset of
 * the merged weight's absmax: a first merge finds it. */
static int
prepass_requant(struct run *r, struct peftio_error *err)
{
	struct item *it;
	uint64_t nb;
	uint8_t *packed;
	float *am;
	size_t i;
	int rc;

	for (i = 0; i < r->n; i++) {
		it = &r->items[i];
		if (it->act != REQUANT || !it->bo.qs.double_quant)
			continue;
		if ((rc = merge_whole(r, i, it->bo.qs.dtype, err)) != 0)
			return rc;
		nb = (it->bo.qs.numel + it->bo.qs.blocksize - 1) /
		    it->bo.qs.blocksize;
		packed = xmalloc((it->bo.qs.numel + 1) / 2);
		am = xmalloc(nb * sizeof(float));
		peftio_bnb_quantize_mem(&it->bo.qs, r->whole.p, packed, am,
		    C.jobs);
		it->bo.qs.nested_offset = peftio_dq_offset(am, nb);
		free(packed);
		free(am);
	}
	return 0;
}

/* The slot's buffers: codes, absmax, and two for double quantization. */
enum { B_PACKED, B_ABSMAX, B_DQ };

static int
write_requant(struct peftio_xf_job *j)
{
	struct item *it = j->ctx;

	return peftio_bnb_write(j->w, j->name, &it->bo, j->buf[B_PACKED].p,
	    j->buf[B_ABSMAX].p, &j->buf[B_DQ], &j->err);
}

static int
requant_one(struct peftio_xf *x, struct run *r, size_t i,
    struct peftio_error *err)
{
	struct item *it = &r->items[i];
	uint64_t n = it->bo.qs.numel;
	uint64_t nb = (n + it->bo.qs.blocksize - 1) / it->bo.qs.blocksize;
	struct peftio_xf_job *j;
	int rc;

	if ((rc = merge_whole(r, i, it->bo.qs.dtype, err)) != 0)
		return rc;
	j = peftio_xf_slot(x);
	j->ctx = it;
	j->name = peftio_ckpt_tensor(r->in, i)->name;
	peftio_bnb_quantize_mem(&it->bo.qs, r->whole.p,
	    xscratch(&j->buf[B_PACKED], (n + 1) / 2),
	    xscratch(&j->buf[B_ABSMAX], nb * sizeof(float)), C.jobs);
	return peftio_xf_submit(x, write_requant, err);
}

/* The slot's buffers for an 8-bit weight: codes and SCB. */
enum { B8_CODES, B8_SCB };

static int
write_requant8(struct peftio_xf_job *j)
{
	const struct peftio_bnb8_weight *bw = j->ctx;

	return peftio_bnb8_write(j->w, j->name, j->buf[B8_CODES].p,
	    j->buf[B8_SCB].p, bw->rows, bw->cols, &j->err);
}

/*
 * 8-bit output: the merged weight, in the dtype a plain merge writes
 * (--dtype, else the model's), quantized as Int8Params does (PEFT
 * re-quantizes a merged Linear8bitLt that way).
 */
static int
requant8_one(struct peftio_xf *x, struct run *r, size_t i,
    struct peftio_error *err)
{
	const struct peftio_bnb8_weight *bw = &r->bw8[i];
	struct peftio_xf_job *j;
	int rc;

	if ((rc = merge_whole(r, i, r->items[i].dt, err)) != 0)
		return rc;
	j = peftio_xf_slot(x);
	j->ctx = (void *)bw;
	j->name = peftio_ckpt_tensor(r->in, i)->name;
	if ((rc = peftio_bnb8_quantize(r->items[i].dt, r->whole.p, bw->rows,
	    bw->cols, xscratch(&j->buf[B8_CODES], bw->rows * bw->cols),
	    xscratch(&j->buf[B8_SCB], bw->rows * sizeof(float)), C.jobs,
	    err)) != 0)
		return rc;
	return peftio_xf_submit(x, write_requant8, err);
}

/* ------------------------------------------------------------------ */
/* The hooks of the transform                                          */

static int
declare(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	struct item *it = &r->items[i];

	switch (it->act) {
	case REQUANT:
		return peftio_bnb_declare(peftio_xf_writer(x), r->xi[i].shard,
		    ti->name, &it->bo, err);
	case REQUANT8:
		return peftio_bnb8_declare(peftio_xf_writer(x), r->xi[i].shard,
		    ti->name, r->bw8[i].rows, r->bw8[i].cols, err);
	case DEQUANT:
		/* an 8-bit weight's shape is its stored one */
		if (it->is_bnb)
			return peftio_xf_declare(x, i, ti->name, it->dt,
			    r->bw[i].qs.ndim, r->bw[i].qs.shape, err);
		break;
	case MERGE:
		break;
	}
	return peftio_xf_declare(x, i, ti->name, it->dt, ti->ndim, ti->shape,
	    err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->in, i);
	struct item *it = &r->items[i];
	struct stream_out so = { x, NULL, ti->name };
	struct peftio_merge_out out = { job_buffer, job_put, &so };
	int rc;

	if (it->act == REQUANT) {
		cli_debug("%s: merged and re-quantized", ti->name);
		return requant_one(x, r, i, err);
	}
	if (it->act == REQUANT8) {
		cli_debug("%s: merged and re-quantized to 8 bit", ti->name);
		return requant8_one(x, r, i, err);
	}
	if ((rc = peftio_merge_stream_tensor(r->ms, r->in, i,
	    it->is_bnb ? &r->bw[i] : NULL, it->is_bnb8 ? &r->bw8[i] : NULL,
	    it->dt, &out, err)) != 0)
		return rc;
	if (it->touched)
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
	if ((!r->quantized && O.dtype < 0) || (r->quantized && O.requant))
		return 0;
	return peftio_config_remove_quant(text, len, O.dtype, out, outlen,
	    err);
}

static void
report(void *ctx, const struct peftio_ckptw *w)
{
	struct run *r = ctx;

	cli_debug("%zu adapter(s), %zu base tensors changed%s%s",
	    O.nadapters, r->nmerged, O.method ? ", combined with " : "",
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
		rc = peftio_ckpt_open_stream(&r.in, O.base, &err);
	if (rc == 0) {
		r.n = peftio_ckpt_count(r.in);
		r.xi = xcalloc(r.n + 1, sizeof(*r.xi));
		r.items = xcalloc(r.n + 1, sizeof(*r.items));
		r.bw = xcalloc(r.n + 1, sizeof(*r.bw));
		r.bw8 = xcalloc(r.n + 1, sizeof(*r.bw8));
		rc = plan_base(&r, &err);
	}
	memset(&mo, 0, sizeof(mo));
	mo.method = (enum peftio_combine)O.method;
	mo.weights = O.weights;
	mo.density = O.density;
	mo.seed = O.seed;
	mo.unmerge = O.unmerge;
	mo.nthreads = C.jobs;
	if (rc == 0)
		rc = peftio_merge_create(&r.m, ads, O.nadapters, &mo, shape_of,
		    &r, &err);
	if (rc == 0)
		rc = plan_merge(&r, &err);
	if (rc == 0)
		rc = peftio_merge_stream_new(&r.ms, r.m, C.jobs,
		    O.allow_nonfinite, &err);
	if (rc == 0 && O.requant)
		rc = prepass_requant(&r, &err);
	if (rc == 0)
		rc = peftio_transform(r.in, r.xi, &Ops, &r, C.out,
		    C.force ? PEFTIO_W_FORCE : 0, &err);
	if (rc != 0)
		cli_error(&err);
	peftio_merge_stream_free(r.ms);
	peftio_merge_free(r.m);
	peftio_ckpt_close(r.in);
	for (i = 0; i < O.nadapters; i++)
		peftio_adapter_free(ads[i]);
	free(ads);
	for (i = 0; i < r.n; i++)
		peftio_bnb_out_free(&r.items[i].bo);
	peftio_scratch_free(&r.whole);
	free(r.items);
	free(r.bw);
	free(r.bw8);
	free(r.xi);
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
	char *end;

	errno = 0;
	O.density = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !(O.density >= 0) ||
	    O.density > 1) {
		cli_warn("--density: '%s' is not a number in [0, 1]", s);
		return -1;
	}
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
