/*
 * adapter-extract - extract a PEFT LoRA adapter from a fine-tuned model:
 * the truncated SVD of every weight delta, written as an adapter
 * directory that PEFT loads unchanged.
 */
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define PREFIX		"base_model.model."
#define ADAPTER_FILE	"adapter_model.safetensors"
#define CONFIG_FILE	"adapter_config.json"
/* The randomized SVD's defaults for --init. */
#define INIT_OVERSAMPLE		16
#define INIT_POWER_ITERS	4

struct item {
	size_t			 bi, ti;	/* index in base, in tuned */
	char			*module;	/* name without ".weight" */
	int			 embedding;	/* lora_embedding_A/B */
	uint64_t		 rows, cols;	/* of the weight */
	enum peftio_dtype	 bdt, tdt, odt;
	int			 zero;		/* delta is zero: skipped */
	struct peftio_lora_factors f;
	struct peftio_error	 err;
	const char		*errfile;	/* err's file, or NULL: tuned */
	int			 rc;
};

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
	unsigned		 jobs;
	const char		*out;
	int			 force;
	/* --init, --convert, --resize */
	int			 init;		/* method, or -1 */
	int			 convert, resize;
	const char		*residual;
	unsigned		 loftq_iter;
	int			 double_quant;
	int			 qtype;		/* -t */
	int			 quantize;	/* --quantize, or -1 */
};

static struct opts O;

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-r rank | --energy f | --max-rank r [--min-rank r]] "
	    "[--alpha a]\n"
	    "                       [--target glob]... [--exclude glob]... "
	    "[--oversample p]\n"
	    "                       [--power-iters q] [--exact] [--seed n] "
	    "[-j jobs] [-o adapter_dir]\n"
	    "                       [-f] [-q | -v] base tuned\n"
	    "       %s --init pissa|olora|loftq -r rank [--alpha a] "
	    "[--exact] [--niter k]\n"
	    "                       [--loftq-iter n] [--no-double-quant] "
	    "[-t nf4|fp4]\n"
	    "                       [--quantize nf4|fp4] [--target glob]... "
	    "[--exclude glob]...\n"
	    "                       [-j jobs] -o adapter_dir --residual "
	    "model_dir base\n"
	    "       %s --convert -o adapter_dir init_adapter "
	    "trained_adapter\n"
	    "       %s --resize (-r rank | --energy f [--max-rank r]) "
	    "[--alpha a] [--exact]\n"
	    "                       -o adapter_dir adapter\n",
	    cli_progname, cli_progname, cli_progname, cli_progname);
	exit(status);
}

static char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static int
float_dtype(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

static const char *
leaf(const char *module)
{
	const char *s = strrchr(module, '.');

	return s != NULL ? s + 1 : module;
}

/* Leaf names of embeddings, and of output heads (Linear, but not
 * adapted by default). */
static int
is_embedding_leaf(const char *l)
{
	static const char *const emb[] = {
		"embed_tokens", "wte", "wpe", "embed_in", "word_embeddings",
		"position_embeddings", "token_type_embeddings",
		"embed_positions", "shared"
	};
	size_t i;

	for (i = 0; i < sizeof(emb) / sizeof(emb[0]); i++)
		if (strcmp(l, emb[i]) == 0)
			return 1;
	return 0;
}

/*
 * The default selection, as nf4-quant's: a 2-D float "*.weight" that is
 * not an embedding, the output head or a norm.
 */
static int
default_linear(const char *module)
{
	static const char *const skip[] = {
		"lm_head", "embed_out", "output", "score", "classifier"
	};
	const char *l = leaf(module);
	size_t i;

	if (is_embedding_leaf(l))
		return 0;
	for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strcmp(l, skip[i]) == 0)
			return 0;
	if (strstr(module, "norm") != NULL || strstr(module, "embed") != NULL)
		return 0;
	return 1;
}

/* PEFT's target_modules rule (equal, or a suffix after a dot), or a
 * shell glob on the module path. */
static int
module_match(const char *module, const char *pat)
{
	size_t n = strlen(module), m = strlen(pat);

	if (strcmp(module, pat) == 0)
		return 1;
	if (n > m && module[n - m - 1] == '.' &&
	    strcmp(module + n - m, pat) == 0)
		return 1;
	return fnmatch(pat, module, 0) == 0;
}

static int
match_any(const char *module, const char **pats, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (module_match(module, pats[i]))
			return 1;
	return 0;
}

static int
selected(const char *module)
{
	if (match_any(module, O.excludes, O.nexcludes))
		return 0;
	if (O.ntargets > 0)
		return match_any(module, O.targets, O.ntargets);
	return default_linear(module);
}

static int
selected_name(const char *name, size_t len)
{
	char *module = xstrndup(name, len);
	int r = selected(module);

	free(module);
	return r;
}

/* ------------------------------------------------------------------ */

static uint64_t
name_seed(const char *s, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/* Rows converted at a time when the base is subtracted. */
#define SUB_ROWS	64

/* The checkpoints, read by the worker threads. */
static struct peftio_ckpt *Base, *Tuned;

/*
 * delta = tuned - base in f32.  Each tensor's pages are dropped once
 * converted, so the memory held is one f32 delta per thread.
 */
static int
load_delta(struct item *it, float *d, float *tmp)
{
	uint64_t n = it->cols, i, j, r, nr;
	const void *bd, *td;
	size_t bes = peftio_dtype_bits(it->bdt) / 8;
	int64_t bad;
	int nz = 0;

	if (peftio_ckpt_data(Tuned, it->ti, &td, &it->err) != 0 ||
	    peftio_ckpt_data(Base, it->bi, &bd, &it->err) != 0)
		return -1;
	/* A value that is not finite is reported against its file. */
	if ((bad = peftio_first_nonfinite(it->tdt, td, it->rows * n)) >= 0 ||
	    (bad = peftio_first_nonfinite(it->bdt, bd, it->rows * n)) >= 0) {
		it->errfile = peftio_first_nonfinite(it->tdt, td,
		    it->rows * n) >= 0 ? O.tuned : O.base;
		peftio_error_set(&it->err, PEFTIO_ENONFINITE,
		    "tensor %s.weight: element %lld is not finite (NaN or "
		    "Inf)", it->module, (long long)bad);
		return -1;
	}
	peftio_to_f32(it->tdt, td, d, it->rows * n);
	peftio_ckpt_release(Tuned, it->ti);
	for (r = 0; r < it->rows; r += SUB_ROWS) {
		nr = min_u64(SUB_ROWS, it->rows - r);
		peftio_to_f32(it->bdt, (const char *)bd + r * n * bes, tmp,
		    nr * n);
		for (i = 0; i < nr * n; i++) {
			j = r * n + i;
			d[j] -= tmp[i];
			if (d[j] != 0.0f)
				nz = 1;
			if (!isfinite(d[j])) {
				/* run() puts the file name in front. */
				peftio_error_set(&it->err, PEFTIO_ENONFINITE,
				    "tensor %s.weight: element %llu of the "
				    "difference from %s overflows", it->module,
				    (unsigned long long)j, O.base);
				return -1;
			}
		}
	}
	peftio_ckpt_release(Base, it->bi);
	return nz;
}

/* Factors of d^T from those of d = B A: (B A)^T = A^T B^T. */
static int
transpose_factors(struct peftio_lora_factors *f)
{
	uint64_t r = f->rank, i, j;
	float *a, *b;

	if ((a = malloc(r * f->m * sizeof(float) + 1)) == NULL ||
	    (b = malloc(f->n * r * sizeof(float) + 1)) == NULL) {
		free(a);
		return -1;
	}
	for (i = 0; i < f->m; i++)		/* A' = B^T, r x m */
		for (j = 0; j < r; j++)
			a[j * f->m + i] = f->b[i * r + j];
	for (i = 0; i < r; i++)			/* B' = A^T, n x r */
		for (j = 0; j < f->n; j++)
			b[j * r + i] = f->a[i * f->n + j];
	free(f->a);
	free(f->b);
	f->a = a;
	f->b = b;
	i = f->m;
	f->m = f->n;
	f->n = i;
	return 0;
}

static void
extract_one(struct item *it)
{
	uint64_t m = it->rows, n = it->cols;
	struct peftio_extract_opts x = O.x;
	float *d, *tmp;
	int nz;

	d = malloc(m * n * sizeof(float));
	tmp = malloc(min_u64(m, SUB_ROWS) * n * sizeof(float));
	if (d == NULL || tmp == NULL) {
		it->rc = peftio_error_set(&it->err, PEFTIO_ENOMEM,
		    "%s.weight: out of memory", it->module);
		goto out;
	}
	if ((nz = load_delta(it, d, tmp)) < 0) {
		it->rc = it->err.code;
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (nz == 0) {
		it->zero = 1;
		it->rc = 0;
		goto out;
	}
	x.seed = name_seed(it->module, O.x.seed);
	if ((it->rc = peftio_extract_lora(d, m, n, &x, &it->f,
	    &it->err)) != 0) {
		peftio_error_prefix(&it->err, "tensor %s.weight", it->module);
		goto out;
	}
	/* PEFT adds (B A)^T to an embedding. */
	if (it->embedding && transpose_factors(&it->f) != 0)
		it->rc = peftio_error_set(&it->err, PEFTIO_ENOMEM,
		    "%s.weight: out of memory", it->module);
out:
	free(d);
	free(tmp);
}

static void
extract_range(void *arg, uint64_t b, uint64_t e)
{
	struct item *items = arg;

	for (; b < e; b++)
		extract_one(&items[b]);
}

/* ------------------------------------------------------------------ */

static int
same_arch(const char *bdir, const char *tdir, char **name_or_path)
{
	struct peftio_error err;
	char path[4096], *bt = NULL, *tt = NULL;
	size_t len;
	json_t *bj = NULL, *tj = NULL, *v;
	const char *keys[] = { "architectures", "model_type" };
	size_t i;
	int rc = 0;

	*name_or_path = NULL;
	if (bdir != NULL) {
		snprintf(path, sizeof(path), "%s/config.json", bdir);
		if (peftio_read_file(path, 1 << 24, &bt, &len, &err) == 0)
			bj = json_loadb(bt, len, 0, NULL);
	}
	if (tdir != NULL) {
		snprintf(path, sizeof(path), "%s/config.json", tdir);
		if (peftio_read_file(path, 1 << 24, &tt, &len, &err) == 0)
			tj = json_loadb(tt, len, 0, NULL);
	}
	if (bj != NULL && (v = json_object_get(bj, "_name_or_path")) != NULL &&
	    json_is_string(v) && json_string_length(v) > 0)
		*name_or_path = xstrndup(json_string_value(v),
		    json_string_length(v));
	if (bj != NULL && tj != NULL)
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			json_t *a = json_object_get(bj, keys[i]);
			json_t *b = json_object_get(tj, keys[i]);

			if (a != NULL && b != NULL && !json_equal(a, b)) {
				cli_warn("%s: different architectures (%s of "
				    "%s/config.json differs)", O.tuned,
				    keys[i], bdir);
				rc = -1;
				break;
			}
		}
	json_decref(bj);
	json_decref(tj);
	free(bt);
	free(tt);
	return rc;
}

/* "model\.layers\.0\.self_attn\.q_proj": a rank_pattern key matching
 * exactly this module. */
static char *
pattern_key(const char *module)
{
	size_t n = strlen(module), i, j = 0;
	char *p = xmalloc(2 * n + 1);

	for (i = 0; i < n; i++) {
		if (module[i] == '.')
			p[j++] = '\\';
		p[j++] = module[i];
	}
	p[j] = '\0';
	return p;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *
config_json(struct item *items, size_t n, uint64_t r, double alpha,
    const char *name_or_path)
{
	json_t *c = json_object(), *tm = json_array(), *rp = json_object();
	json_t *ap = json_object();
	const char **leaves = xmalloc((n + 1) * sizeof(*leaves));
	size_t i, nl = 0;
	char *s, *k;

	for (i = 0; i < n; i++) {
		if (items[i].zero)
			continue;
		leaves[nl++] = leaf(items[i].module);
		if (items[i].f.rank != r || O.has_alpha) {
			k = pattern_key(items[i].module);
			if (items[i].f.rank != r)
				json_object_set_new(rp, k,
				    json_integer((json_int_t)items[i].f.rank));
			/* alpha = rank keeps PEFT's scale at 1. */
			if (!O.has_alpha)
				json_object_set_new(ap, k,
				    json_real((double)items[i].f.rank));
			free(k);
		}
	}
	qsort(leaves, nl, sizeof(*leaves), cmp_str);
	for (i = 0; i < nl; i++)
		if (i == 0 || strcmp(leaves[i], leaves[i - 1]) != 0)
			json_array_append_new(tm, json_string(leaves[i]));
	free(leaves);
	json_object_set_new(c, "peft_type", json_string("LORA"));
	json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
	json_object_set_new(c, "base_model_name_or_path",
	    name_or_path != NULL ? json_string(name_or_path) : json_null());
	json_object_set_new(c, "r", json_integer((json_int_t)r));
	if (alpha == floor(alpha) && fabs(alpha) < 1e15)
		json_object_set_new(c, "lora_alpha",
		    json_integer((json_int_t)alpha));
	else
		json_object_set_new(c, "lora_alpha", json_real(alpha));
	json_object_set_new(c, "target_modules", tm);
	json_object_set_new(c, "rank_pattern", rp);
	json_object_set_new(c, "alpha_pattern", ap);
	json_object_set_new(c, "bias", json_string("none"));
	json_object_set_new(c, "fan_in_fan_out", json_false());
	json_object_set_new(c, "use_rslora", json_false());
	json_object_set_new(c, "use_dora", json_false());
	json_object_set_new(c, "lora_dropout", json_real(0.0));
	json_object_set_new(c, "inference_mode", json_true());
	json_object_set_new(c, "modules_to_save", json_null());
	json_object_set_new(c, "init_lora_weights", json_true());
	s = json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
	json_decref(c);
	if (s == NULL) {
		cli_warn("out of memory");
		exit(CLI_EXIT_ERROR);
	}
	return s;
}

/* Scale B so that PEFT's scale alpha/r gives back the truncated delta. */
static void
rescale(struct item *it, double alpha)
{
	double scale = alpha / (double)it->f.rank;
	float c = (float)(1.0 / scale);
	uint64_t i;

	if (scale == 1.0)
		return;
	for (i = 0; i < it->f.m * it->f.rank; i++)
		it->f.b[i] *= c;
}

static int
write_tensor(struct peftio_ckptw *w, const char *name, const float *x,
    uint64_t n, enum peftio_dtype dt, struct peftio_error *err)
{
	uint64_t nb;
	void *buf;
	int rc;

	if (dt == PEFTIO_F32)
		return peftio_ckptw_write(w, name, x, n * sizeof(float), err);
	if ((rc = peftio_dtype_nbytes(dt, n, &nb)) != 0)
		return peftio_error_set(err, rc, "%s: too large", name);
	buf = xmalloc(nb);
	peftio_from_f32(dt, x, buf, n);
	rc = peftio_ckptw_write(w, name, buf, nb, err);
	free(buf);
	return rc;
}

/* 1 if tensor i of b and j of t hold the same values, 0 if not, -1 on
 * error; their pages are dropped afterwards. */
static int
same_values(struct peftio_ckpt *b, size_t i, struct peftio_ckpt *t, size_t j,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *bi = peftio_ckpt_tensor(b, i);
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(t, j);
	uint64_t es = peftio_dtype_bits(bi->dtype) / 8;
	uint64_t et = peftio_dtype_bits(ti->dtype) / 8, k;
	const void *bd, *td;
	float x, y;
	int same;

	if (peftio_ckpt_data(b, i, &bd, err) != 0 ||
	    peftio_ckpt_data(t, j, &td, err) != 0)
		return -1;
	if (bi->dtype == ti->dtype)
		same = memcmp(bd, td, bi->nbytes) == 0;
	else {
		for (k = 0; k < bi->numel; k++) {
			peftio_to_f32(bi->dtype, (const char *)bd + k * es,
			    &x, 1);
			peftio_to_f32(ti->dtype, (const char *)td + k * et,
			    &y, 1);
			if (x != y)
				break;
		}
		same = k == bi->numel;
	}
	peftio_ckpt_release(b, i);
	peftio_ckpt_release(t, j);
	return same;
}

static int
run(void)
{
	struct peftio_error err;
	struct peftio_ckpt *b = NULL, *t = NULL;
	struct peftio_ckptw *w = NULL;
	struct item *items = NULL;
	size_t nb, nt, i, n = 0;
	char *name_or_path = NULL, *cfg = NULL, *skipped = NULL;
	size_t skipped_len = 0, nskipped = 0;
	const char *names[1] = { ADAPTER_FILE };
	uint64_t r = 0, nz = 0;
	double alpha;
	int rc = CLI_EXIT_ERROR;

	if (peftio_ckpt_open(&b, O.base, &err) != 0 ||
	    peftio_ckpt_open(&t, O.tuned, &err) != 0) {
		rc = cli_error(&err);
		goto out;
	}
	if (same_arch(peftio_ckpt_dir(b), peftio_ckpt_dir(t),
	    &name_or_path) != 0)
		goto out;
	nb = peftio_ckpt_count(b);
	nt = peftio_ckpt_count(t);
	for (i = 0; i < nt; i++) {
		const char *tn = peftio_ckpt_tensor(t, i)->name;

		if (peftio_ckpt_find(b, tn) < 0) {
			cli_warn("%s: tensor %s is missing from %s", O.tuned,
			    tn, O.base);
			goto out;
		}
	}
	items = xmalloc(nb * sizeof(*items));
	for (i = 0; i < nb; i++) {
		const struct peftio_tensor_info *bi = peftio_ckpt_tensor(b, i);
		const struct peftio_tensor_info *ti;
		long j = peftio_ckpt_find(t, bi->name);
		size_t len = strlen(bi->name);
		struct item *it;
		int d, same = 1;

		if (j < 0) {
			cli_warn("%s: tensor %s is missing (present in %s)",
			    O.tuned, bi->name, O.base);
			goto out;
		}
		ti = peftio_ckpt_tensor(t, (size_t)j);
		if (bi->ndim != ti->ndim)
			same = 0;
		for (d = 0; same && d < bi->ndim; d++)
			if (bi->shape[d] != ti->shape[d])
				same = 0;
		if (!same) {
			cli_warn("%s: tensor %s: shape differs from %s",
			    O.tuned, bi->name, O.base);
			goto out;
		}
		if (!float_dtype(bi->dtype) || !float_dtype(ti->dtype) ||
		    bi->numel == 0)
			continue;
		if (bi->ndim != 2 || len <= 7 ||
		    strcmp(bi->name + len - 7, ".weight") != 0 ||
		    !selected_name(bi->name, len - 7)) {
			/* Not extracted: say so if it changed. */
			if ((same = same_values(b, i, t, (size_t)j, &err)) < 0) {
				rc = cli_error(&err);
				goto out;
			}
			if (same)
				continue;
			nskipped++;
			skipped = realloc(skipped, skipped_len + len + 3);
			if (skipped == NULL) {
				cli_warn("out of memory");
				goto out;
			}
			snprintf(skipped + skipped_len, len + 3, "%s%s",
			    skipped_len ? ", " : "", bi->name);
			skipped_len = strlen(skipped);
			continue;
		}
		it = &items[n++];
		memset(it, 0, sizeof(*it));
		it->bi = i;
		it->ti = (size_t)j;
		it->module = xstrndup(bi->name, len - 7);
		it->embedding = is_embedding_leaf(leaf(it->module));
		it->rows = bi->shape[0];
		it->cols = bi->shape[1];
		it->bdt = bi->dtype;
		it->tdt = ti->dtype;
		it->odt = bi->dtype == PEFTIO_F16 || bi->dtype == PEFTIO_BF16 ?
		    bi->dtype : PEFTIO_F32;
	}
	if (nskipped > 0)
		cli_info("changed but not extracted (not targeted; use "
		    "--target): %s", skipped);

	Base = b;
	Tuned = t;
	peftio_parallel_for(O.jobs, n, 1, extract_range, items);
	for (i = 0; i < n; i++)
		if (items[i].rc != 0) {
			peftio_error_prefix(&items[i].err, "%s",
			    items[i].errfile != NULL ? items[i].errfile :
			    O.tuned);
			rc = cli_error(&items[i].err);
			goto out;
		}
	for (i = 0; i < n; i++) {
		if (items[i].zero)
			continue;
		nz++;
		if (!O.energy_mode)
			r = O.x.rank;
		else if (items[i].f.rank > r)
			r = items[i].f.rank;
	}
	if (nz == 0) {
		cli_warn("%s: no selected weight differs from %s", O.tuned,
		    O.base);
		goto out;
	}
	alpha = O.has_alpha ? O.alpha : (double)r;

	if (cli_verbose >= 2) {
		fprintf(stderr, "%-48s %5s %10s %10s %12s\n", "module",
		    "rank", "energy", "rel.err", "norm");
		for (i = 0; i < n; i++)
			if (items[i].zero)
				fprintf(stderr, "%-48s %5s %10s %10s %12s\n",
				    items[i].module, "-", "-", "-", "0");
			else
				fprintf(stderr,
				    "%-48s %5llu %10.6f %10.3e %12.6e\n",
				    items[i].module,
				    (unsigned long long)items[i].f.rank,
				    items[i].f.kept, items[i].f.rel_err,
				    sqrt(items[i].f.energy));
	}

	if (peftio_ckptw_create(&w, O.out, 1, 1, names,
	    O.force ? PEFTIO_W_FORCE : 0, &err) != 0) {
		rc = cli_error(&err);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct item *it = &items[i];
		char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME];
		uint64_t sa[2], sb[2];

		if (it->zero)
			continue;
		if (O.has_alpha)
			rescale(it, O.alpha);
		snprintf(ka, sizeof(ka), PREFIX "%s.%s", it->module,
		    it->embedding ? "lora_embedding_A" : "lora_A.weight");
		snprintf(kb, sizeof(kb), PREFIX "%s.%s", it->module,
		    it->embedding ? "lora_embedding_B" : "lora_B.weight");
		sa[0] = it->f.rank;
		sa[1] = it->f.n;
		sb[0] = it->f.m;
		sb[1] = it->f.rank;
		if (peftio_ckptw_declare(w, 0, ka, it->odt, 2, sa, &err) != 0 ||
		    peftio_ckptw_declare(w, 0, kb, it->odt, 2, sb, &err) != 0) {
			rc = cli_error(&err);
			goto out;
		}
	}
	if (peftio_ckptw_layout(w, &err) != 0) {
		rc = cli_error(&err);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct item *it = &items[i];
		char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME];

		if (it->zero)
			continue;
		snprintf(ka, sizeof(ka), PREFIX "%s.%s", it->module,
		    it->embedding ? "lora_embedding_A" : "lora_A.weight");
		snprintf(kb, sizeof(kb), PREFIX "%s.%s", it->module,
		    it->embedding ? "lora_embedding_B" : "lora_B.weight");
		if (write_tensor(w, ka, it->f.a, it->f.rank * it->f.n,
		    it->odt, &err) != 0 ||
		    write_tensor(w, kb, it->f.b, it->f.m * it->f.rank,
		    it->odt, &err) != 0) {
			rc = cli_error(&err);
			goto out;
		}
	}
	cfg = config_json(items, n, r, alpha, name_or_path);
	if (peftio_ckptw_file(w, CONFIG_FILE, cfg, strlen(cfg), &err) != 0 ||
	    peftio_ckptw_commit(w, &err) != 0) {
		rc = cli_error(&err);
		goto out;
	}
	cli_debug("%s: %llu modules, r %llu", O.out, (unsigned long long)nz,
	    (unsigned long long)r);
	rc = CLI_EXIT_OK;
out:
	peftio_ckptw_free(w);
	if (items != NULL)
		for (i = 0; i < n; i++) {
			free(items[i].module);
			peftio_lora_factors_free(&items[i].f);
		}
	free(items);
	free(cfg);
	free(skipped);
	free(name_or_path);
	peftio_ckpt_close(b);
	peftio_ckpt_close(t);
	return rc;
}

/* ------------------------------------------------------------------ */
/* --init, --convert, --resize: the library does the work              */

static int
init_select(void *arg, const char *module)
{
	return selected(module);
}

/* With -v, the table extraction prints: one line per module. */
static void
report(void *arg, const char *module, const struct peftio_lora_factors *f)
{
	static int header;

	if (cli_verbose < 2)
		return;
	if (!header++)
		fprintf(stderr, "%-48s %5s %10s %10s %12s\n", "module",
		    "rank", "energy", "rel.err", "norm");
	fprintf(stderr, "%-48s %5llu %10.6f %10.3e %12.6e\n", module,
	    (unsigned long long)f->rank, f->kept, f->rel_err,
	    sqrt(f->energy));
}

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
	io.select = init_select;
	io.report = report;
	io.flags = O.force ? PEFTIO_W_FORCE : 0;
	io.jobs = O.jobs;
	if (peftio_init_model(O.base, O.out, O.residual, &io, &err) != 0)
		return cli_error(&err);
	return CLI_EXIT_OK;
}

static int
run_resize(void)
{
	struct peftio_resize_opts ro;
	struct peftio_error err;

	memset(&ro, 0, sizeof(ro));
	ro.x = O.x;
	ro.alpha = O.has_alpha ? O.alpha : 0.0;
	ro.report = report;
	ro.flags = O.force ? PEFTIO_W_FORCE : 0;
	if (peftio_resize_adapter(O.base, O.out, &ro, &err) != 0)
		return cli_error(&err);
	return CLI_EXIT_OK;
}

static int
run_convert(void)
{
	struct peftio_error err;

	if (peftio_convert_adapter(O.base, O.tuned, O.out,
	    O.force ? PEFTIO_W_FORCE : 0, &err) != 0)
		return cli_error(&err);
	return CLI_EXIT_OK;
}

static int
parse_double(const char *opt, const char *s, double lo, double hi,
    double *out)
{
	char *end;
	double v;

	v = strtod(s, &end);
	if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
		cli_warn("%s: '%s' is not a number in [%g, %g]", opt, s, lo,
		    hi);
		return -1;
	}
	*out = v;
	return 0;
}

int
main(int argc, char *argv[])
{
	enum { OPT_ENERGY = 256, OPT_MAXRANK, OPT_MINRANK, OPT_ALPHA,
	    OPT_TARGET, OPT_EXCLUDE, OPT_OVERSAMPLE, OPT_POWER, OPT_EXACT,
	    OPT_SEED, OPT_HELP, OPT_VERSION, OPT_INIT, OPT_RESIDUAL,
	    OPT_CONVERT, OPT_RESIZE, OPT_LOFTQ_ITER, OPT_NO_DQ, OPT_QUANTIZE,
	    OPT_NITER };
	static const struct option longopts[] = {
		{ "rank", required_argument, NULL, 'r' },
		{ "energy", required_argument, NULL, OPT_ENERGY },
		{ "max-rank", required_argument, NULL, OPT_MAXRANK },
		{ "min-rank", required_argument, NULL, OPT_MINRANK },
		{ "alpha", required_argument, NULL, OPT_ALPHA },
		{ "target", required_argument, NULL, OPT_TARGET },
		{ "exclude", required_argument, NULL, OPT_EXCLUDE },
		{ "oversample", required_argument, NULL, OPT_OVERSAMPLE },
		{ "power-iters", required_argument, NULL, OPT_POWER },
		{ "exact", no_argument, NULL, OPT_EXACT },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "jobs", required_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "init", required_argument, NULL, OPT_INIT },
		{ "residual", required_argument, NULL, OPT_RESIDUAL },
		{ "convert", no_argument, NULL, OPT_CONVERT },
		{ "resize", no_argument, NULL, OPT_RESIZE },
		{ "loftq-iter", required_argument, NULL, OPT_LOFTQ_ITER },
		{ "no-double-quant", no_argument, NULL, OPT_NO_DQ },
		{ "type", required_argument, NULL, 't' },
		{ "quantize", required_argument, NULL, OPT_QUANTIZE },
		{ "niter", required_argument, NULL, OPT_NITER },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	uint64_t v;
	int ch, has_rank = 0, has_energy = 0, has_max = 0, has_min = 0;
	int has_init_only = 0, modes, has_svd = 0, has_jobs = 0;

	cli_init("adapter-extract");
	peftio_extract_opts_init(&O.x);
	O.jobs = peftio_ncpus();
	O.targets = xmalloc((size_t)argc * sizeof(*O.targets));
	O.excludes = xmalloc((size_t)argc * sizeof(*O.excludes));
	O.init = -1;
	O.loftq_iter = 1;
	O.double_quant = 1;
	O.qtype = PEFTIO_Q4_NF4;
	O.quantize = -1;
	while ((ch = getopt_long(argc, argv, "fj:o:qr:t:v", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'f':
			O.force = 1;
			break;
		case 'j':
			if (cli_parse_u64("-j", optarg, 0, 256, &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.jobs = v == 0 ? peftio_ncpus() : (unsigned)v;
			has_jobs = 1;
			break;
		case 'o':
			O.out = optarg;
			break;
		case 'q':
			cli_verbose = 0;
			break;
		case 'r':
			if (cli_parse_u64("-r", optarg, 1, 65536,
			    &O.x.rank) != 0)
				usage(CLI_EXIT_USAGE);
			has_rank = 1;
			break;
		case 'v':
			cli_verbose = cli_verbose < 1 ? 2 : cli_verbose + 1;
			break;
		case OPT_ENERGY:
			if (parse_double("--energy", optarg, 1e-9, 1.0,
			    &O.x.energy) != 0)
				usage(CLI_EXIT_USAGE);
			has_energy = 1;
			break;
		case OPT_MAXRANK:
			if (cli_parse_u64("--max-rank", optarg, 1, 65536,
			    &O.x.max_rank) != 0)
				usage(CLI_EXIT_USAGE);
			has_max = 1;
			break;
		case OPT_MINRANK:
			if (cli_parse_u64("--min-rank", optarg, 1, 65536,
			    &O.x.min_rank) != 0)
				usage(CLI_EXIT_USAGE);
			has_min = 1;
			break;
		case OPT_ALPHA:
			if (parse_double("--alpha", optarg, 1e-30, 1e30,
			    &O.alpha) != 0)
				usage(CLI_EXIT_USAGE);
			O.has_alpha = 1;
			break;
		case OPT_TARGET:
			O.targets[O.ntargets++] = optarg;
			break;
		case OPT_EXCLUDE:
			O.excludes[O.nexcludes++] = optarg;
			break;
		case OPT_OVERSAMPLE:
			if (cli_parse_u64("--oversample", optarg, 0, 4096,
			    &O.x.oversample) != 0)
				usage(CLI_EXIT_USAGE);
			has_svd |= 1;
			break;
		case OPT_POWER:
			if (cli_parse_u64("--power-iters", optarg, 0, 64,
			    &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.x.power_iters = (unsigned)v;
			has_svd |= 2;
			break;
		case OPT_EXACT:
			O.x.exact = 1;
			break;
		case OPT_SEED:
			if (cli_parse_u64("--seed", optarg, 0, UINT64_MAX,
			    &O.x.seed) != 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_INIT:
			if ((O.init = peftio_init_method_parse(optarg)) < 0) {
				cli_warn("--init: '%s' is not pissa, olora or "
				    "loftq", optarg);
				usage(CLI_EXIT_USAGE);
			}
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
			if (cli_parse_u64("--loftq-iter", optarg, 1, 1000,
			    &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.loftq_iter = (unsigned)v;
			has_init_only = 1;
			break;
		case OPT_NO_DQ:
			O.double_quant = 0;
			has_init_only = 1;
			break;
		case 't':
		case OPT_QUANTIZE:
			if (peftio_q4type_parse(optarg) < 0) {
				cli_warn("%s: '%s' is not nf4 or fp4",
				    ch == 't' ? "-t" : "--quantize", optarg);
				usage(CLI_EXIT_USAGE);
			}
			if (ch == 't')
				O.qtype = peftio_q4type_parse(optarg);
			else
				O.quantize = peftio_q4type_parse(optarg);
			has_init_only = 1;
			break;
		case OPT_NITER:
			if (cli_parse_u64("--niter", optarg, 0, 64, &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.x.power_iters = (unsigned)v;
			has_svd |= 2;
			break;
		case OPT_HELP:
			usage(CLI_EXIT_OK);
		case OPT_VERSION:
			printf("adapter-extract (peftio) %s\n",
			    peftio_version());
			return CLI_EXIT_OK;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	modes = (O.init >= 0) + O.convert + O.resize;
	if (modes > 1) {
		cli_warn("--init, --convert and --resize exclude each other");
		usage(CLI_EXIT_USAGE);
	}
	if ((has_init_only || O.residual != NULL) && O.init < 0) {
		cli_warn("--residual, --loftq-iter, --no-double-quant, -t and "
		    "--quantize go with --init");
		usage(CLI_EXIT_USAGE);
	}
	if (modes == 1 && O.out == NULL) {
		cli_warn("no output given: use -o ADAPTER_DIR");
		usage(CLI_EXIT_USAGE);
	}
	if (O.init >= 0) {
		if (argc != 1 || !has_rank || O.residual == NULL ||
		    has_energy || has_max || has_min) {
			cli_warn("--init needs -r RANK, -o ADAPTER_DIR, "
			    "--residual MODEL_DIR and one base model");
			usage(CLI_EXIT_USAGE);
		}
		O.base = argv[0];
		/* A weight's spectrum is flatter than a fine-tuning
		 * delta's: more test vectors and power iterations. */
		if (!(has_svd & 1))
			O.x.oversample = INIT_OVERSAMPLE;
		if (!(has_svd & 2))
			O.x.power_iters = INIT_POWER_ITERS;
		/* One weight at a time unless asked: memory is per job. */
		if (!has_jobs)
			O.jobs = 1;
		if (strcmp(O.out, O.residual) == 0 ||
		    strcmp(O.out, O.base) == 0 ||
		    strcmp(O.residual, O.base) == 0) {
			cli_warn("%s: the outputs and the base must differ",
			    O.out);
			return CLI_EXIT_ERROR;
		}
		return run_init();
	}
	if (O.convert) {
		if (argc != 2 || has_rank || has_energy || has_max ||
		    has_min || O.has_alpha) {
			cli_warn("--convert takes two adapters and no rank "
			    "options");
			usage(CLI_EXIT_USAGE);
		}
		O.base = argv[0];
		O.tuned = argv[1];
		if (strcmp(O.out, O.base) == 0 || strcmp(O.out, O.tuned) == 0) {
			cli_warn("%s: the output would overwrite an input",
			    O.out);
			return CLI_EXIT_ERROR;
		}
		return run_convert();
	}
	if (O.resize) {
		if (argc != 1 || has_rank == (has_energy || has_max)) {
			cli_warn("--resize needs one adapter and either -r "
			    "or --energy/--max-rank");
			usage(CLI_EXIT_USAGE);
		}
		O.base = argv[0];
		if (!has_rank) {
			O.x.rank = 0;
			if (!has_energy)
				O.x.energy = 0.99;
		}
		if (strcmp(O.out, O.base) == 0) {
			cli_warn("%s: the output would overwrite an input",
			    O.out);
			return CLI_EXIT_ERROR;
		}
		return run_resize();
	}
	if (argc != 2) {
		if (argc > 2)
			cli_warn("too many arguments");
		usage(CLI_EXIT_USAGE);
	}
	O.base = argv[0];
	O.tuned = argv[1];
	if (has_rank && (has_energy || has_max || has_min)) {
		cli_warn("-r cannot be combined with --energy, --max-rank "
		    "or --min-rank");
		usage(CLI_EXIT_USAGE);
	}
	if (has_min && !has_max && !has_energy) {
		cli_warn("--min-rank needs --energy or --max-rank");
		usage(CLI_EXIT_USAGE);
	}
	if (has_energy || has_max) {
		O.energy_mode = 1;
		O.x.rank = 0;
		if (!has_energy)
			O.x.energy = 0.99;
		if (O.x.min_rank > O.x.max_rank) {
			cli_warn("--min-rank %llu exceeds --max-rank %llu",
			    (unsigned long long)O.x.min_rank,
			    (unsigned long long)O.x.max_rank);
			usage(CLI_EXIT_USAGE);
		}
	}
	if (O.energy_mode && O.has_alpha) {
		cli_warn("--alpha applies to a fixed rank (-r)");
		usage(CLI_EXIT_USAGE);
	}
	if (O.out == NULL) {
		cli_warn("no output given: use -o ADAPTER_DIR");
		usage(CLI_EXIT_USAGE);
	}
	if (cli_check_clash(O.out, &O.base, 1) != 0 ||
	    cli_check_clash(O.out, &O.tuned, 1) != 0)
		return CLI_EXIT_ERROR;
	return run();
}
