/*
 * nf4-quant - quantize a checkpoint to bitsandbytes 4-bit NormalFloat
 * (or FP4) with blockwise absmax and double quantization, and back.
 *
 * The output is what transformers + bitsandbytes write with
 * save_pretrained() for a model loaded with load_in_4bit: same tensor
 * names, dtypes, shapes and bytes, and a quantization_config block in
 * config.json.
 */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli.h"

enum action { COPY, CONVERT, QUANT, DEQUANT, QUANT8, DEQUANT8, SKIP };

struct item {
	size_t			 in;		/* input tensor */
	size_t			 shard;		/* output shard */
	enum action		 act;
	enum peftio_dtype	 dt;		/* output dtype (COPY: input's) */
	struct peftio_quant_state qs;		/* QUANT, DEQUANT */
	char			*qs_json;	/* QUANT */
	size_t			 qs_len;
	struct peftio_bnb_weight bw;		/* DEQUANT */
	struct peftio_bnb8_weight bw8;		/* QUANT8 (rows, cols), DEQUANT8 */
	int			 transpose;	/* a Conv1D weight, [in, out] */
};

struct opts {
	enum peftio_q4type	 type;
	int			 int8;		/* -t int8 */
	enum peftio_dtype	 storage;	/* bnb_4bit_quant_storage */
	uint64_t		 bs;
	int			 dq;
	int			 decode;
	int			 dtype;		/* -1: keep */
	char			**incl, **excl;
	size_t			 nincl, nexcl;
	unsigned		 jobs;
	const char		*out;
	int			 force;
	int			 allow_nonfinite;
	int			 index_only;
};

static struct opts O = { PEFTIO_Q4_NF4, 0, PEFTIO_U8, 64, 1, 0, -1, NULL,
	NULL, 0, 0, 0, NULL, 0, 0, 0 };

static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
	    "usage: %s [-dfqv] [-t nf4|fp4|int8] [-b blocksize] "
	    "[--no-double-quant]\n"
	    "                 [--storage u8|bf16|f16|f32] "
	    "[--dtype f16|bf16|f32]\n"
	    "                 [--include glob] "
	    "[--exclude glob]\n"
	    "                 [--allow-nonfinite] [-j jobs] [-o output] "
	    "input\n"
	    "       %s --index-only [-dfqv] [options as above] -o outdir "
	    "indir\n", cli_progname, cli_progname);
	exit(status);
}

/* ------------------------------------------------------------------ */
/* Which tensors to quantize                                           */

static int
matches(char **globs, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (fnmatch(globs[i], name, 0) == 0)
			return 1;
	return 0;
}

/*
 * What transformers quantizes: the weights of Linear layers.  From a
 * header alone that is a 2-D float "*.weight" that is not an embedding,
 * the output head or a norm.
 */
static int
linear_weight(const struct peftio_tensor_info *ti)
{
	static const char *const skip[] = {
		"lm_head", "embed_tokens", "wte", "wpe", "embed_in",
		"embed_out", "word_embeddings", "position_embeddings",
		"token_type_embeddings", "embed_positions", "shared", "output",
		"score", "classifier"
	};
	const char *name = ti->name, *last;
	size_t n = strlen(name), i, len;

	if (ti->ndim != 2 || n <= 7 || strcmp(name + n - 7, ".weight") != 0)
		return 0;
	len = n - 7;
	for (last = name + len; last > name && last[-1] != '.'; last--)
		;
	for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strlen(skip[i]) == (size_t)(name + len - last) &&
		    strncmp(last, skip[i], name + len - last) == 0)
			return 0;
	if (strstr(name, "norm") != NULL || strstr(name, "embed") != NULL)
		return 0;
	return 1;
}

static int
float_dtype(enum peftio_dtype dt)
{
	return dt == PEFTIO_F32 || dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

static int
selected(const struct peftio_tensor_info *ti)
{
	if (!float_dtype(ti->dtype) || ti->numel == 0)
		return 0;
	if (matches(O.excl, O.nexcl, ti->name))
		return 0;
	return linear_weight(ti) || matches(O.incl, O.nincl, ti->name);
}

/* ------------------------------------------------------------------ */
/* Threaded codec calls                                                */

/*
 * A pass over one weight.  Each worker reads its blocks with pread(2),
 * SUB_BLOCKS at a time into a buffer of its own, so the input is read
 * by both threads and coded while it is in cache; with --dtype the
 * values are rounded to that dtype first (what transformers does when
 * a checkpoint is loaded with another torch_dtype).
 */
struct qjob {
	struct peftio_ckpt	*ck;
	const unsigned char	*src;	/* the values in memory, or NULL */
	size_t			 idx;
	enum peftio_dtype	 sdt;	/* stored dtype */
	enum peftio_dtype	 dt;	/* what the codec sees */
	uint64_t		 n;
	int			 quantize; /* else only the absmax */
	uint8_t			*packed;
	float			*absmax;
	int			 check;	/* look for NaN and Inf */
	int64_t			 bad;	/* the first one found, or -1 */
	int			 failed;
	struct peftio_error	 err;	/* of the first read that failed */
};

#define SUB_BLOCKS	1024

/* Values dequantized and written at a time (then rounded to the part
 * alignment): two pieces are held, not two tensors. */
#define DEQ_PIECE	(8u << 20)

static struct peftio_scratch Raw[PEFTIO_MAX_JOBS], Conv[PEFTIO_MAX_JOBS];
static struct peftio_scratch Vals[PEFTIO_MAX_JOBS];
static struct peftio_scratch Scan;	/* the prepass's absmax */

/* The first non-finite value among the n values at p (element lo of the
 * tensor), folded into j->bad. */
static void
scan_values(struct qjob *j, const void *p, uint64_t lo, uint64_t n)
{
	int64_t i, cur;

	if ((i = peftio_first_nonfinite(j->dt, p, n)) < 0)
		return;
	i += (int64_t)lo;
	cur = __atomic_load_n(&j->bad, __ATOMIC_RELAXED);
	while ((cur < 0 || i < cur) && !__atomic_compare_exchange_n(&j->bad,
	    &cur, i, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void
code_range(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct qjob *j = arg;
	size_t es = peftio_dtype_bits(j->sdt) / 8;
	uint64_t c, lo, n, nbk;
	struct peftio_error err;
	const void *p;
	float *f;

	for (c = b; c < e; c += nbk) {
		nbk = min_u64(SUB_BLOCKS, e - c);
		lo = c * O.bs;
		n = min_u64(nbk * O.bs, j->n - lo);
		if (j->src != NULL)
			p = j->src + lo * es;
		else if ((p = xscratch(&Raw[slot], n * es)), peftio_ckpt_read(
		    j->ck, j->idx, lo * es, (void *)p, n * es, &err) != 0) {
			if (!__atomic_exchange_n(&j->failed, 1,
			    __ATOMIC_RELAXED))
				j->err = err;
			return;
		}
		if (j->dt != j->sdt) {
			f = xscratch(&Vals[slot], n * sizeof(float));
			peftio_to_f32(j->sdt, p, f, n);
			peftio_from_f32(j->dt, f, xscratch(&Conv[slot],
			    n * (peftio_dtype_bits(j->dt) / 8)), n);
			p = Conv[slot].p;
		}
		if (j->check)
			scan_values(j, p, lo, n);
		if (j->quantize)
			peftio_q4_quantize(O.type, j->dt, p, n, O.bs, 0, nbk,
			    j->packed + lo / 2, j->absmax + c);
		else
			peftio_q4_absmax(j->dt, p, n, O.bs, 0, nbk,
			    j->absmax + c);
	}
}

/* Buffers reused from one tensor to the next. */

/* Blocks per thread chunk: large enough to amortize thread start-up. */
#define GRAIN_BLOCKS	4096

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL && s[1] != '\0' ? s + 1 : path;
}

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static char *
str_cat(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 1;
	char *p = malloc(n);

	if (p == NULL) {
		cli_warn("out of memory");
		exit(CLI_EXIT_ERROR);
	}
	snprintf(p, n, "%s%s", a, b);
	return p;
}

/* "W.quant_state.bitsandbytes__nf4" for weight W. */
static char *
qstate_key(const char *w)
{
	char *a = str_cat(w, PEFTIO_BNB_QUANT_STATE);
	char *k = str_cat(a, peftio_q4type_name(O.type));

	free(a);
	return k;
}

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* After pass j: a read error, or a weight with NaN or Inf. */
static int
pass_result(struct peftio_ckpt *in, size_t idx, const struct qjob *j,
    struct peftio_error *err)
{
	if (j->failed) {
		*err = j->err;
		return err->code;
	}
	if (j->bad < 0)
		return 0;
	return peftio_error_set(err, PEFTIO_ENONFINITE,
	    "%s: tensor '%s': element %lld is not finite (NaN or Inf); "
	    "--allow-nonfinite quantizes it as bitsandbytes does",
	    peftio_ckpt_path(in), peftio_ckpt_tensor(in, idx)->name,
	    (long long)j->bad);
}

/*
 * One pass over weight it: the absmax of every block (and the codes
 * into packed, when not NULL), looking for NaN and Inf if check.
 */
static struct peftio_scratch Trans;	/* a transposed Conv1D weight */

/*
 * A Conv1D weight [in, out] as transformers quantizes it: transposed to
 * [out, in], whole in memory.
 */
static const void *
transposed(struct peftio_ckpt *in, const struct item *it,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(in, it->in);
	size_t es = peftio_dtype_bits(ti->dtype) / 8;
	const void *data;
	void *t;

	if (peftio_ckpt_data(in, it->in, &data, err) != 0)
		return NULL;
	t = xscratch(&Trans, ti->numel * es);
	peftio_transpose(data, t, ti->shape[0], ti->shape[1], es);
	peftio_ckpt_release(in, it->in);
	return t;
}

static int
run_pass(struct peftio_ckpt *in, const struct item *it, uint8_t *packed,
    float *absmax, int check, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(in, it->in);
	struct qjob j;

	memset(&j, 0, sizeof(j));
	if (it->transpose && (j.src = transposed(in, it, err)) == NULL)
		return err->code;
	j.ck = in;
	j.idx = it->in;
	j.sdt = ti->dtype;
	j.dt = O.dtype < 0 ? ti->dtype : (enum peftio_dtype)O.dtype;
	j.n = it->qs.numel;
	j.quantize = packed != NULL;
	j.packed = packed;
	j.absmax = absmax;
	j.check = check;
	j.bad = -1;
	peftio_parallel_slots(O.jobs, ceil_div(j.n, O.bs), GRAIN_BLOCKS,
	    code_range, &j);
	return pass_result(in, it->in, &j, err);
}

/* ------------------------------------------------------------------ */
/* Quantize                                                            */

/* A config.json whose quantization_config says the model is already
 * quantized (bitsandbytes, GPTQ, AWQ, FP8, ...). */
static int
text_quantized(const char *path, const char *text, size_t len,
    struct peftio_error *err)
{
	char method[64];
	int rc;

	rc = peftio_config_quant_method(text, len, method, sizeof(method),
	    err);
	if (rc < 0)
		peftio_error_prefix(err, "%s", path);
	else if (rc > 0)
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: the model is already quantized (%s)%s", path, method,
		    strncmp(method, "bitsandbytes", 12) == 0 ?
		    "; use -d to dequantize" : "");
	return rc;
}

/*
 * The same before anything is written, when config.json is a plain
 * file (output_config() checks again whatever it is).
 */
static int
config_quantized(struct peftio_ckpt *in, struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(in);
	char *path, *text = NULL;
	struct stat st;
	size_t len;
	int rc;

	if (dir == NULL)
		return 0;
	path = str_cat(dir, "/config.json");
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
		free(path);
		return 0;
	}
	rc = peftio_read_file(path, 64u << 20, &text, &len, err);
	if (rc == 0)
		rc = text_quantized(path, text, len, err);
	free(path);
	free(text);
	return rc;
}

static int
plan_quant(struct peftio_ckpt *in, struct item *items, size_t *nquant,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_bnb8_weight bw8;
	struct item *it;
	uint64_t shape[2];
	size_t i, nq = 0;
	int d, rc;

	for (i = 0; i < peftio_ckpt_count(in); i++) {
		ti = peftio_ckpt_tensor(in, i);
		if (strstr(ti->name, PEFTIO_BNB_QUANT_STATE) != NULL)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 4-bit quantized "
			    "(use -d to dequantize)", peftio_ckpt_path(in),
			    ti->name);
		if ((rc = peftio_bnb8_lookup(in, i, &bw8, err)) < 0)
			return rc;
		if (rc > 0 || (ti->dtype == PEFTIO_I8 && ends_with(ti->name,
		    ".weight")))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 8-bit quantized "
			    "(use -d to dequantize)", peftio_ckpt_path(in),
			    ti->name);
	}
	if ((rc = config_quantized(in, err)) != 0)
		return rc;
	for (i = 0; i < peftio_ckpt_count(in); i++) {
		ti = peftio_ckpt_tensor(in, i);
		it = &items[i];
		it->in = i;
		it->dt = ti->dtype;
		it->act = COPY;
		if (selected(ti)) {
			/* transformers transposes GPT-2's Conv1D weights
			 * to [out, in] when it quantizes them. */
			it->transpose = ti->ndim == 2 &&
			    peftio_bnb_conv1d_weight(ti->name);
			it->act = O.int8 ? QUANT8 : QUANT;
			it->qs.type = O.type;
			it->qs.blocksize = O.bs;
			it->qs.dtype = O.dtype >= 0 ?
			    (enum peftio_dtype)O.dtype : ti->dtype;
			it->qs.ndim = ti->ndim;
			for (d = 0; d < ti->ndim; d++)
				it->qs.shape[d] = ti->shape[it->transpose ?
				    ti->ndim - 1 - d : d];
			it->qs.numel = ti->numel;
			it->qs.double_quant = O.dq;
			it->qs.nested_blocksize = 256;
			it->qs.nested_dtype = PEFTIO_F32;
			if (O.int8 && ti->ndim != 2)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': 8-bit quantization "
				    "needs a 2-D weight, not %d-D",
				    peftio_ckpt_path(in), ti->name, ti->ndim);
			if (O.int8) {
				it->bw8.rows = it->qs.shape[0];
				it->bw8.cols = ti->numel / it->qs.shape[0];
			} else if (peftio_bnb_storage_shape(O.storage,
			    ti->numel, shape, err) != 0) {
				peftio_error_prefix(err, "%s: tensor '%s'",
				    peftio_ckpt_path(in), ti->name);
				return err->code;
			}
			nq++;
		} else if (O.dtype >= 0 && float_dtype(ti->dtype) &&
		    ti->dtype != (enum peftio_dtype)O.dtype) {
			it->act = CONVERT;
			it->dt = (enum peftio_dtype)O.dtype;
		}
	}
	*nquant = nq;
	return 0;
}

/*
 * With double quantization the quant_state blob holds the mean of the
 * absmax values, and its length (which the header records) depends on
 * that number; so a first pass computes every offset.  It reads each
 * weight once more but keeps nothing but one float per tensor.
 */
static int
prepass_offsets(struct peftio_ckpt *in, struct item *items, size_t n,
    struct peftio_error *err)
{
	float *am;
	uint64_t nb;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		if (items[i].act != QUANT)
			continue;
		nb = ceil_div(items[i].qs.numel, O.bs);
		am = xscratch(&Scan, nb * sizeof(float));
		if ((rc = run_pass(in, &items[i], NULL, am, !O.allow_nonfinite,
		    err)) != 0)
			return rc;
		items[i].qs.nested_offset = peftio_dq_offset(am, nb);
		peftio_ckpt_release(in, items[i].in);
		cli_progress(i, n, "scanning");
	}
	return 0;
}

static int
declare_quant(struct peftio_ckptw *w, const char *name, struct item *it,
    struct peftio_error *err)
{
	uint64_t n = it->qs.numel, nb = ceil_div(n, O.bs), shape[2];
	char *k;
	int rc;

	if ((rc = peftio_quant_state_json(&it->qs, &it->qs_json, &it->qs_len,
	    err)) != 0)
		return rc;
	if ((rc = peftio_bnb_storage_shape(O.storage, n, shape, err)) != 0)
		return rc;
	rc = peftio_ckptw_declare(w, it->shard, name, O.storage, 2, shape,
	    err);
	shape[0] = nb;
	k = str_cat(name, PEFTIO_BNB_ABSMAX);
	if (rc == 0)
		rc = peftio_ckptw_declare(w, it->shard, k,
		    O.dq ? PEFTIO_U8 : PEFTIO_F32, 1, shape, err);
	free(k);
	shape[0] = 16;
	k = str_cat(name, PEFTIO_BNB_QUANT_MAP);
	if (rc == 0)
		rc = peftio_ckptw_declare(w, it->shard, k, PEFTIO_F32, 1, shape,
		    err);
	free(k);
	if (O.dq) {
		shape[0] = ceil_div(nb, 256);
		k = str_cat(name, PEFTIO_BNB_NESTED_ABSMAX);
		if (rc == 0)
			rc = peftio_ckptw_declare(w, it->shard, k, PEFTIO_F32,
			    1, shape, err);
		free(k);
		shape[0] = 256;
		k = str_cat(name, PEFTIO_BNB_NESTED_QUANT_MAP);
		if (rc == 0)
			rc = peftio_ckptw_declare(w, it->shard, k, PEFTIO_F32,
			    1, shape, err);
		free(k);
	}
	shape[0] = it->qs_len;
	k = qstate_key(name);
	if (rc == 0)
		rc = peftio_ckptw_declare(w, it->shard, k, PEFTIO_U8, 1, shape,
		    err);
	free(k);
	return rc;
}

static int
write_piece(struct peftio_ckptw *w, const char *name, const char *suffix,
    const void *buf, size_t len, struct peftio_error *err)
{
	char *k = str_cat(name, suffix);
	int rc = peftio_ckptw_write(w, k, buf, len, err);

	free(k);
	return rc;
}

/* The slot's buffers: codes, absmax, double-quant codes, nested absmax. */
enum { B_PACKED, B_ABSMAX, B_Q, B_NESTED };

static int
write_quant(struct cli_wjob *j)
{
	struct item *it = j->ctx;
	uint64_t n = it->qs.numel, nb = ceil_div(n, O.bs);
	struct peftio_error *err = &j->err;
	char *k;
	int rc;

	rc = peftio_ckptw_write(j->w, j->name, j->buf[B_PACKED].p,
	    (n + 1) / 2, err);
	if (rc == 0 && O.dq) {
		rc = write_piece(j->w, j->name, PEFTIO_BNB_ABSMAX,
		    j->buf[B_Q].p, nb, err);
		if (rc == 0)
			rc = write_piece(j->w, j->name,
			    PEFTIO_BNB_NESTED_ABSMAX, j->buf[B_NESTED].p,
			    ceil_div(nb, 256) * sizeof(float), err);
		if (rc == 0)
			rc = write_piece(j->w, j->name,
			    PEFTIO_BNB_NESTED_QUANT_MAP, peftio_dynamic_map(),
			    256 * sizeof(float), err);
	} else if (rc == 0)
		rc = write_piece(j->w, j->name, PEFTIO_BNB_ABSMAX,
		    j->buf[B_ABSMAX].p, nb * sizeof(float), err);
	if (rc == 0)
		rc = write_piece(j->w, j->name, PEFTIO_BNB_QUANT_MAP,
		    peftio_q4_code(O.type), 16 * sizeof(float), err);
	k = qstate_key(j->name);
	if (rc == 0)
		rc = peftio_ckptw_write(j->w, k, it->qs_json, it->qs_len, err);
	free(k);
	return rc;
}

static int
quantize_one(struct peftio_ckpt *in, struct peftio_ckptw *w, struct item *it,
    struct peftio_error *err)
{
	struct cli_wjob *j = cli_writer_slot();
	uint64_t n = it->qs.numel, nb = ceil_div(n, O.bs);
	float *am, offset;
	int rc;

	j->w = w;
	j->ctx = it;
	j->name = peftio_ckpt_tensor(in, it->in)->name;
	am = xscratch(&j->buf[B_ABSMAX], nb * sizeof(float));
	/* With double quantization the prepass looked for NaN and Inf. */
	if ((rc = run_pass(in, it, xscratch(&j->buf[B_PACKED], (n + 1) / 2),
	    am, !O.dq && !O.allow_nonfinite, err)) != 0)
		return rc;
	if (O.dq)
		peftio_dq_quantize(am, nb, 256, &offset,
		    xscratch(&j->buf[B_Q], nb), xscratch(&j->buf[B_NESTED],
		    ceil_div(nb, 256) * sizeof(float)));
	return cli_writer_submit(write_quant, err);
}

/* ------------------------------------------------------------------ */
/* 8-bit                                                               */

/* The slot's buffers for an 8-bit weight: codes, SCB, converted values. */
enum { B8_CODES, B8_SCB, B8_VALS };

static int
write_quant8(struct cli_wjob *j)
{
	struct item *it = j->ctx;

	return peftio_bnb8_write(j->w, j->name, j->buf[B8_CODES].p,
	    j->buf[B8_SCB].p, it->bw8.rows, it->bw8.cols, &j->err);
}

/*
 * bitsandbytes' Int8Params: the weight (at --dtype, as transformers
 * loads it with that torch_dtype) cast to float16, row-wise absmax.
 */
static int
quantize_one8(struct peftio_ckpt *in, struct peftio_ckptw *w, struct item *it,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(in, it->in);
	struct cli_wjob *j = cli_writer_slot();
	enum peftio_dtype dt = ti->dtype;
	uint64_t n = ti->numel;
	const void *data;
	int64_t bad;
	float *f;
	int rc;

	if (it->transpose)
		data = transposed(in, it, err);
	else if (peftio_ckpt_data(in, it->in, &data, err) != 0)
		data = NULL;
	if (data == NULL)
		return err->code;
	if (O.dtype >= 0 && (enum peftio_dtype)O.dtype != dt) {
		f = xscratch(&Vals[0], n * sizeof(float));
		peftio_to_f32(dt, data, f, n);
		dt = (enum peftio_dtype)O.dtype;
		data = xscratch(&j->buf[B8_VALS], n * (peftio_dtype_bits(dt) /
		    8));
		peftio_from_f32(dt, f, (void *)data, n);
	}
	if (!O.allow_nonfinite && (bad = peftio_first_nonfinite(dt, data,
	    n)) >= 0)
		rc = peftio_error_set(err, PEFTIO_ENONFINITE,
		    "%s: tensor '%s': element %lld is not finite (NaN or "
		    "Inf); --allow-nonfinite quantizes it as bitsandbytes "
		    "does", peftio_ckpt_path(in), ti->name, (long long)bad);
	else
		rc = peftio_bnb8_quantize(dt, data, it->bw8.rows, it->bw8.cols,
		    xscratch(&j->buf[B8_CODES], n), xscratch(&j->buf[B8_SCB],
		    it->bw8.rows * sizeof(float)), O.jobs, err);
	if (!it->transpose)
		peftio_ckpt_release(in, it->in);
	if (rc != 0)
		return rc;
	j->w = w;
	j->ctx = it;
	j->name = ti->name;
	return cli_writer_submit(write_quant8, err);
}

/* Rows of an 8-bit weight dequantized and written at a time. */
static int
dequantize_one8(struct peftio_ckpt *in, struct peftio_ckptw *w,
    struct item *it, struct peftio_error *err)
{
	const struct peftio_bnb8_weight *bw = &it->bw8;
	size_t es = peftio_dtype_bits(it->dt) / 8;
	uint64_t piece = DEQ_PIECE / bw->cols + 1, r0, nr;
	struct cli_wjob *j;
	void *buf;
	int rc = 0;

	if (it->transpose) {
		/* Back to GPT-2's [in, out]: the whole weight at once. */
		j = cli_writer_slot();
		j->w = w;
		j->name = peftio_ckpt_tensor(in, it->in)->name;
		j->len = bw->rows * bw->cols * es;
		buf = xscratch(&Trans, j->len);
		if ((rc = peftio_bnb8_dequantize(in, bw, it->dt, buf, O.jobs,
		    err)) == 0) {
			peftio_transpose(buf, xscratch(&j->buf[0], j->len),
			    bw->rows, bw->cols, es);
			rc = cli_writer_submit(cli_job_write, err);
		}
		peftio_ckpt_release(in, it->in);
		return rc;
	}
	for (r0 = 0; r0 < bw->rows && rc == 0; r0 += nr) {
		nr = min_u64(piece, bw->rows - r0);
		j = cli_writer_slot();
		j->w = w;
		j->name = peftio_ckpt_tensor(in, it->in)->name;
		j->len = nr * bw->cols * es;
		if ((rc = peftio_bnb8_dequantize_part(in, bw, it->dt,
		    xscratch(&j->buf[0], j->len), r0, nr, O.jobs, err)) == 0)
			rc = cli_writer_submit(cli_job_write, err);
	}
	peftio_ckpt_release(in, it->in);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Dequantize                                                          */

static int
plan_dequant(struct peftio_ckpt *in, struct item *items, size_t *nq,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_bnb_weight bw;
	struct peftio_bnb8_weight bw8;
	struct item *it;
	size_t i, n = peftio_ckpt_count(in);
	int rc;

	*nq = 0;
	for (i = 0; i < n; i++) {
		items[i].in = i;
		items[i].act = COPY;
		items[i].dt = peftio_ckpt_tensor(in, i)->dtype;
	}
	for (i = 0; i < n; i++) {
		if ((rc = peftio_bnb8_lookup(in, i, &bw8, err)) < 0)
			return rc;
		if (rc > 0) {
			it = &items[bw8.weight];
			it->bw8 = bw8;
			it->act = DEQUANT8;
			it->transpose = peftio_bnb_conv1d_weight(
			    peftio_ckpt_tensor(in, bw8.weight)->name);
			it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype :
			    peftio_bnb8_dtype(in);
			it->qs.ndim = 2;
			it->qs.shape[0] = it->transpose ? bw8.cols : bw8.rows;
			it->qs.shape[1] = it->transpose ? bw8.rows : bw8.cols;
			it->qs.numel = bw8.rows * bw8.cols;
			items[bw8.scb].act = SKIP;
			if (bw8.format >= 0)
				items[bw8.format].act = SKIP;
			(*nq)++;
			continue;
		}
		if ((rc = peftio_bnb_lookup(in, i, &bw, err)) < 0)
			return rc;
		if (rc == 0)
			continue;
		it = &items[bw.weight];
		it->bw = bw;
		it->qs = bw.qs;
		it->transpose = bw.qs.ndim == 2 && peftio_bnb_conv1d_weight(
		    peftio_ckpt_tensor(in, bw.weight)->name);
		if (it->transpose) {
			it->qs.shape[0] = bw.qs.shape[1];
			it->qs.shape[1] = bw.qs.shape[0];
		}
		it->act = DEQUANT;
		it->dt = O.dtype >= 0 ? (enum peftio_dtype)O.dtype : bw.qs.dtype;
		items[bw.quant_state].act = SKIP;
		items[bw.absmax].act = SKIP;
		items[bw.quant_map].act = SKIP;
		if (bw.qs.double_quant) {
			items[bw.nested_absmax].act = SKIP;
			items[bw.nested_quant_map].act = SKIP;
		}
		(*nq)++;
	}
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(in, i);
		if (items[i].act == COPY && O.dtype >= 0 &&
		    float_dtype(ti->dtype) &&
		    ti->dtype != (enum peftio_dtype)O.dtype) {
			items[i].act = CONVERT;
			items[i].dt = (enum peftio_dtype)O.dtype;
		}
	}
	return 0;
}


static int
dequantize_one(struct peftio_ckpt *in, struct peftio_ckptw *w,
    struct item *it, struct peftio_error *err)
{
	uint64_t al = peftio_bnb_part_align(&it->bw), e0, n;
	uint64_t piece = DEQ_PIECE > al ? DEQ_PIECE / al * al : al;
	size_t es = peftio_dtype_bits(it->dt) / 8;
	struct cli_wjob *j;
	void *buf;
	int rc = 0;

	if (it->transpose) {
		/* Back to GPT-2's [in, out]: the whole weight at once. */
		j = cli_writer_slot();
		j->w = w;
		j->name = peftio_ckpt_tensor(in, it->in)->name;
		j->len = it->qs.numel * es;
		buf = xscratch(&Trans, j->len);
		if ((rc = peftio_bnb_dequantize(in, &it->bw, it->dt, buf,
		    O.jobs, err)) == 0) {
			peftio_transpose(buf, xscratch(&j->buf[0], j->len),
			    it->bw.qs.shape[0], it->bw.qs.shape[1], es);
			rc = cli_writer_submit(cli_job_write, err);
		}
		peftio_ckpt_release(in, it->in);
		return rc;
	}

	for (e0 = 0; e0 < it->qs.numel && rc == 0; e0 += n) {
		n = min_u64(piece, it->qs.numel - e0);
		j = cli_writer_slot();
		j->w = w;
		j->name = peftio_ckpt_tensor(in, it->in)->name;
		peftio_dtype_nbytes(it->dt, n, &j->len);
		if ((rc = peftio_bnb_dequantize_part(in, &it->bw, it->dt,
		    xscratch(&j->buf[0], j->len), e0, n, O.jobs, err)) == 0)
			rc = cli_writer_submit(cli_job_write, err);
	}
	peftio_ckpt_release(in, it->in);
	return rc;
}

/* ------------------------------------------------------------------ */

static int
copy_one(struct peftio_ckpt *in, struct peftio_ckptw *w, struct item *it,
    struct peftio_error *err)
{
	struct cli_wjob *j = cli_writer_slot();
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(in, it->in);

	j->w = w;
	j->name = ti->name;
	j->in = in;
	j->idx = it->in;
	j->dt = it->act == COPY ? ti->dtype : it->dt;
	return cli_writer_submit(cli_job_copy, err);
}

/* config.json for the output directory. */
static int
output_config(struct peftio_ckpt *in, struct peftio_ckptw *w,
    struct item *items, size_t n, struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(in);
	struct peftio_bnb_config qc;
	char *path, *text = NULL, *out = NULL;
	size_t len, outlen, i;
	int rc;

	if (dir == NULL)
		return 0;
	path = str_cat(dir, "/config.json");
	if (access(path, F_OK) != 0) {
		free(path);
		return 0;
	}
	rc = peftio_read_file(path, 64u << 20, &text, &len, err);
	if (rc == 0 && !O.decode)
		rc = text_quantized(path, text, len, err);
	free(path);
	if (rc != 0) {
		free(text);
		return rc;
	}
	if (O.decode)
		rc = peftio_config_remove_quant(text, len, O.dtype, &out,
		    &outlen, err);
	else {
		qc.bits = O.int8 ? 8 : 4;
		qc.type = O.type;
		qc.double_quant = O.dq;
		qc.compute = PEFTIO_F32;
		qc.storage = O.storage;
		for (i = 0; i < n; i++)
			if (items[i].act == QUANT) {
				qc.compute = items[i].qs.dtype;
				break;
			}
		rc = peftio_config_add_bnb(text, len, &qc, &out, &outlen, err);
	}
	if (rc != 0)
		peftio_error_prefix(err, "%s/config.json", dir);
	else
		rc = peftio_ckptw_file(w, "config.json", out, outlen, err);
	free(text);
	free(out);
	return rc;
}

static int
run(const char *input)
{
	struct peftio_error err = { 0, 0, "" };
	struct peftio_ckpt *in = NULL;
	struct peftio_ckptw *w = NULL;
	const struct peftio_tensor_info *ti;
	struct item *items = NULL;
	const char *out = O.out;
	const char **names = NULL;
	size_t n, i, s, nshards, nq = 0, done = 0;
	uint64_t in_bytes = 0, out_bytes = 0, total = 0;
	int rc, as_dir;

	if ((rc = peftio_gpu_rcp_init(&err)) != 0)
		return cli_error(&err);
	if ((rc = peftio_ckpt_open(&in, input, &err)) != 0)
		return cli_error(&err);
	n = peftio_ckpt_count(in);
	items = calloc(n + 1, sizeof(*items));
	if (items == NULL) {
		peftio_ckpt_close(in);
		cli_warn("out of memory");
		return CLI_EXIT_ERROR;
	}
	rc = O.decode ? plan_dequant(in, items, &nq, &err) :
	    plan_quant(in, items, &nq, &err);
	if (rc != 0)
		goto fail;
	if (!O.decode && O.dq && (rc = prepass_offsets(in, items, n, &err)) != 0)
		goto fail;

	as_dir = peftio_ckpt_dir(in) != NULL && strcmp(out, "-") != 0 &&
	    !ends_with(out, ".safetensors");
	nshards = as_dir ? peftio_ckpt_nshards(in) : 1;
	if (as_dir) {
		names = calloc(nshards, sizeof(char *));
		if (names == NULL) {
			rc = peftio_error_set(&err, PEFTIO_ENOMEM,
			    "out of memory");
			goto fail;
		}
		for (s = 0; s < nshards; s++)
			names[s] = base_name(peftio_ckpt_shard_name(in, s));
	}
	if ((rc = peftio_ckptw_create(&w, out, as_dir, nshards, names,
	    O.force ? PEFTIO_W_FORCE : 0, &err)) != 0 ||
	    (rc = cli_writer_start(&err)) != 0)
		goto fail;
	for (i = 0; i < n && rc == 0; i++) {
		ti = peftio_ckpt_tensor(in, i);
		items[i].shard = as_dir ? peftio_ckpt_shard_of(in, i) : 0;
		switch (items[i].act) {
		case QUANT:
			rc = declare_quant(w, ti->name, &items[i], &err);
			break;
		case QUANT8:
			rc = peftio_bnb8_declare(w, items[i].shard, ti->name,
			    items[i].bw8.rows, items[i].bw8.cols, &err);
			break;
		case DEQUANT:
		case DEQUANT8:
			rc = peftio_ckptw_declare(w, items[i].shard, ti->name,
			    items[i].dt, items[i].qs.ndim, items[i].qs.shape,
			    &err);
			break;
		case COPY:
		case CONVERT:
			rc = peftio_ckptw_declare(w, items[i].shard, ti->name,
			    items[i].dt, ti->ndim, ti->shape, &err);
			break;
		case SKIP:
			break;
		}
		total += ti->nbytes;
	}
	if (rc == 0)
		rc = peftio_ckptw_layout(w, &err);

	for (i = 0; i < n && rc == 0; i++) {
		ti = peftio_ckpt_tensor(in, i);
		cli_progress(done, total, ti->name);
		switch (items[i].act) {
		case QUANT:
			rc = quantize_one(in, w, &items[i], &err);
			cli_debug("%s: %s %s -> %s%s", ti->name,
			    peftio_dtype_name(ti->dtype),
			    peftio_dtype_name(items[i].qs.dtype),
			    peftio_q4type_name(O.type),
			    O.dq ? " + double quantization" : "");
			break;
		case DEQUANT:
			rc = dequantize_one(in, w, &items[i], &err);
			cli_debug("%s: %s -> %s", ti->name,
			    peftio_q4type_name(items[i].qs.type),
			    peftio_dtype_name(items[i].dt));
			break;
		case QUANT8:
			rc = quantize_one8(in, w, &items[i], &err);
			cli_debug("%s: %s -> int8", ti->name,
			    peftio_dtype_name(ti->dtype));
			break;
		case DEQUANT8:
			rc = dequantize_one8(in, w, &items[i], &err);
			cli_debug("%s: int8 -> %s", ti->name,
			    peftio_dtype_name(items[i].dt));
			break;
		case COPY:
		case CONVERT:
			rc = copy_one(in, w, &items[i], &err);
			break;
		case SKIP:
			break;
		}
		done += ti->nbytes;
		in_bytes += ti->nbytes;
	}
	cli_progress_end();
	if (rc == 0)
		rc = cli_writer_drain(&err);
	if (rc == 0 && as_dir)
		rc = output_config(in, w, items, n, &err);
	if (rc == 0 && as_dir)
		rc = peftio_ckptw_copy_aux(w, peftio_ckpt_dir(in), &err);
	if (rc == 0)
		rc = peftio_ckptw_commit(w, &err);
	if (rc != 0)
		goto fail;

	if (cli_verbose >= 2) {
		out_bytes = peftio_ckptw_tensor_bytes(w);
		cli_debug("%zu of %zu tensors %s; %llu bytes of tensors in, "
		    "%llu out (%.1f%%)", nq, n,
		    O.decode ? "dequantized" : "quantized",
		    (unsigned long long)in_bytes,
		    (unsigned long long)out_bytes,
		    in_bytes ? 100.0 * out_bytes / in_bytes : 100.0);
	}
	rc = 0;
fail:
	if (rc != 0)
		cli_error(&err);
	/* No write may run while the output is removed. */
	cli_writer_stop();
	peftio_ckptw_free(w);
	peftio_ckpt_close(in);
	for (i = 0; i < n; i++)
		free(items[i].qs_json);
	free(items);
	free(names);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ------------------------------------------------------------------ */
/* --index-only: finish a directory written shard by shard            */

/* "[4096, 11008]" */
static const char *
shape_str(int ndim, const uint64_t *shape, char *buf, size_t len)
{
	size_t n = 0;
	int d;

	buf[0] = '\0';
	for (d = 0; d < ndim && n < len; d++)
		n += (size_t)snprintf(buf + n, len - n, "%s%llu",
		    d ? ", " : "[", (unsigned long long)shape[d]);
	if (n < len)
		snprintf(buf + n, len - n, "%s", ndim ? "]" : "[]");
	return buf;
}

static const char *
shard_path(const struct peftio_ckpt *c, size_t s)
{
	return peftio_st_path(peftio_ckpt_shard(c, s));
}

/* Tensor name must be in shard s of out; *k is its number there. */
static int
in_shard(const struct peftio_ckpt *out, size_t s, const char *name,
    size_t *k, struct peftio_error *err)
{
	long f = peftio_ckpt_find(out, name);

	if (f < 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is missing", shard_path(out, s), name);
	*k = (size_t)f;
	if (peftio_ckpt_shard_of(out, *k) != s)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' belongs in %s",
		    shard_path(out, peftio_ckpt_shard_of(out, *k)), name,
		    peftio_ckpt_shard_name(out, s));
	return 0;
}

static int
expect_plain(const struct peftio_ckpt *out, size_t s, const char *name,
    enum peftio_dtype dt, int ndim, const uint64_t *shape,
    unsigned char *seen, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	char got[128], want[128];
	size_t k;
	int rc;

	if ((rc = in_shard(out, s, name, &k, err)) != 0)
		return rc;
	ti = peftio_ckpt_tensor(out, k);
	if (ti->dtype != dt || ti->ndim != ndim ||
	    memcmp(ti->shape, shape, (size_t)ndim * sizeof(*shape)) != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is %s %s, not %s %s", shard_path(out, s),
		    name, peftio_dtype_name(ti->dtype),
		    shape_str(ti->ndim, ti->shape, got, sizeof(got)),
		    peftio_dtype_name(dt),
		    shape_str(ndim, shape, want, sizeof(want)));
	seen[k] = 1;
	return 0;
}

/* What in a 4-bit weight's quant_state the options would not give. */
static const char *
qs_differs(const struct peftio_quant_state *got,
    const struct peftio_quant_state *want, char *buf, size_t len)
{
	if (got->blocksize != want->blocksize)
		snprintf(buf, len, "blocksize %llu, not %llu",
		    (unsigned long long)got->blocksize,
		    (unsigned long long)want->blocksize);
	else if (got->double_quant != want->double_quant)
		snprintf(buf, len, "%s double quantization",
		    got->double_quant ? "with" : "without");
	else if (got->double_quant &&
	    got->nested_blocksize != want->nested_blocksize)
		snprintf(buf, len, "nested blocksize %llu, not %llu",
		    (unsigned long long)got->nested_blocksize,
		    (unsigned long long)want->nested_blocksize);
	else if (got->dtype != want->dtype)
		snprintf(buf, len, "dtype %s, not %s",
		    peftio_dtype_torch_name(got->dtype),
		    peftio_dtype_torch_name(want->dtype));
	else if (got->ndim != want->ndim || memcmp(got->shape, want->shape,
	    (size_t)got->ndim * sizeof(got->shape[0])) != 0)
		snprintf(buf, len, "another shape");
	else
		return NULL;
	return buf;
}

static int
expect_quant(struct peftio_ckpt *out, size_t s, const char *name,
    const struct peftio_quant_state *want, unsigned char *seen,
    struct peftio_error *err)
{
	struct peftio_bnb_weight bw;
	const char *why;
	char *key, buf[128];
	size_t parts[6], np = 4, p, k;
	long q;
	int rc;

	key = qstate_key(name);
	q = peftio_ckpt_find(out, key);
	free(key);
	if (q < 0) {
		if ((rc = in_shard(out, s, name, &k, err)) != 0)
			return rc;
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is not %s-quantized", shard_path(out, s),
		    name, peftio_q4type_name(want->type));
	}
	if ((rc = peftio_bnb_lookup(out, (size_t)q, &bw, err)) < 0)
		return rc;
	if ((why = qs_differs(&bw.qs, want, buf, sizeof(buf))) == NULL &&
	    bw.storage != O.storage) {
		snprintf(buf, sizeof(buf), "storage %s, not %s",
		    peftio_dtype_name(bw.storage), peftio_dtype_name(O.storage));
		why = buf;
	}
	if (why != NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' was quantized with other options (%s)",
		    shard_path(out, s), name, why);
	parts[0] = bw.weight;
	parts[1] = bw.absmax;
	parts[2] = bw.quant_map;
	parts[3] = bw.quant_state;
	if (bw.qs.double_quant) {
		parts[np++] = bw.nested_absmax;
		parts[np++] = bw.nested_quant_map;
	}
	for (p = 0; p < np; p++) {
		if ((rc = in_shard(out, s,
		    peftio_ckpt_tensor(out, parts[p])->name, &k, err)) != 0)
			return rc;
		seen[k] = 1;
	}
	return 0;
}

static int
expect_quant8(struct peftio_ckpt *out, size_t s, const char *name,
    const struct item *it, unsigned char *seen, struct peftio_error *err)
{
	uint64_t shape[2] = { it->bw8.rows, it->bw8.cols };
	char *k;
	int rc;

	rc = expect_plain(out, s, name, PEFTIO_I8, 2, shape, seen, err);
	k = str_cat(name, "");
	k[strlen(k) - strlen(".weight")] = '\0';
	if (rc == 0) {
		char *scb = str_cat(k, PEFTIO_BNB_SCB);

		rc = expect_plain(out, s, scb, PEFTIO_F32, 1, shape, seen,
		    err);
		free(scb);
	}
	if (rc == 0) {
		char *fmt = str_cat(name, "_format");

		rc = expect_plain(out, s, fmt, PEFTIO_U8, 0, shape, seen,
		    err);
		free(fmt);
	}
	free(k);
	return rc;
}

/*
 * The shards in out must be what this run would have written: every
 * tensor of the plan in its shard with its dtype and shape, each 4-bit
 * weight with its companions and the options' type, blocksize and
 * double quantization, and nothing else.  Headers and quant_state
 * blobs only; the payloads are not read.
 */
static int
check_shards(struct peftio_ckpt *in, struct peftio_ckpt *out,
    const struct item *items, size_t n, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	const struct item *it;
	unsigned char *seen;
	size_t i, s, m = peftio_ckpt_count(out);
	int rc = 0;

	seen = xmalloc(m);
	memset(seen, 0, m);
	for (i = 0; i < n && rc == 0; i++) {
		it = &items[i];
		ti = peftio_ckpt_tensor(in, i);
		s = peftio_ckpt_shard_of(in, i);
		switch (it->act) {
		case QUANT:
			rc = expect_quant(out, s, ti->name, &it->qs, seen, err);
			break;
		case QUANT8:
			rc = expect_quant8(out, s, ti->name, it, seen, err);
			break;
		case DEQUANT:
		case DEQUANT8:
			rc = expect_plain(out, s, ti->name, it->dt,
			    it->qs.ndim, it->qs.shape, seen, err);
			break;
		case COPY:
		case CONVERT:
			rc = expect_plain(out, s, ti->name, it->dt, ti->ndim,
			    ti->shape, seen, err);
			break;
		case SKIP:
			break;
		}
	}
	for (i = 0; i < m && rc == 0; i++)
		if (!seen[i])
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' is not from %s",
			    shard_path(out, peftio_ckpt_shard_of(out, i)),
			    peftio_ckpt_tensor(out, i)->name,
			    peftio_ckpt_path(in));
	free(seen);
	return rc;
}

/*
 * With the shards of input written one at a time into the output
 * directory (nf4-quant -o OUT/SHARD IN/SHARD, as separate jobs), check
 * them and write what a whole-directory run writes besides them: the
 * index, config.json and the other files.  Only headers are read.
 */
static int
run_index(const char *input)
{
	struct peftio_error err = { 0, 0, "" };
	struct peftio_ckpt *in = NULL, *out = NULL;
	struct peftio_ckptw *w = NULL;
	struct item *items = NULL;
	const char **names = NULL;
	size_t n = 0, nq, s, i;
	int rc;

	if ((rc = peftio_ckpt_open(&in, input, &err)) != 0)
		return cli_error(&err);
	if (peftio_ckpt_dir(in) == NULL) {
		rc = peftio_error_set(&err, PEFTIO_EINVAL,
		    "%s: --index-only needs a model directory", input);
		goto fail;
	}
	n = peftio_ckpt_count(in);
	items = xmalloc((n + 1) * sizeof(*items));
	memset(items, 0, (n + 1) * sizeof(*items));
	rc = O.decode ? plan_dequant(in, items, &nq, &err) :
	    plan_quant(in, items, &nq, &err);
	if (rc != 0)
		goto fail;
	names = xmalloc(peftio_ckpt_nshards(in) * sizeof(*names));
	for (s = 0; s < peftio_ckpt_nshards(in); s++)
		names[s] = base_name(peftio_ckpt_shard_name(in, s));
	if ((rc = peftio_ckpt_open_shards(&out, O.out, peftio_ckpt_nshards(in),
	    names, &err)) != 0)
		goto fail;
	if ((rc = check_shards(in, out, items, n, &err)) != 0)
		goto fail;
	if ((rc = peftio_ckptw_from_shards(&w, out,
	    O.force ? PEFTIO_W_FORCE : 0, &err)) != 0)
		goto fail;
	rc = output_config(in, w, items, n, &err);
	if (rc == 0)
		rc = peftio_ckptw_copy_aux(w, peftio_ckpt_dir(in), &err);
	if (rc == 0)
		rc = peftio_ckptw_commit(w, &err);
	if (rc == 0)
		cli_debug("%zu shards of %s checked (%zu tensors %s); "
		    "%llu bytes of tensors", peftio_ckpt_nshards(out), input,
		    nq, O.decode ? "dequantized" : "quantized",
		    (unsigned long long)peftio_ckptw_tensor_bytes(w));
fail:
	if (rc != 0)
		cli_error(&err);
	peftio_ckptw_free(w);
	peftio_ckpt_close(out);
	peftio_ckpt_close(in);
	for (i = 0; i < n; i++)
		free(items[i].qs_json);
	free(items);
	free(names);
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int
main(int argc, char *argv[])
{
	enum { OPT_NODQ = 256, OPT_DTYPE, OPT_INCL, OPT_EXCL, OPT_NONFINITE,
	    OPT_INDEX, OPT_STORAGE, OPT_HELP, OPT_VERSION };
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "blocksize", required_argument, NULL, 'b' },
		{ "no-double-quant", no_argument, NULL, OPT_NODQ },
		{ "decompress", no_argument, NULL, 'd' },
		{ "dequantize", no_argument, NULL, 'd' },
		{ "dtype", required_argument, NULL, OPT_DTYPE },
		{ "storage", required_argument, NULL, OPT_STORAGE },
		{ "include", required_argument, NULL, OPT_INCL },
		{ "exclude", required_argument, NULL, OPT_EXCL },
		{ "allow-nonfinite", no_argument, NULL, OPT_NONFINITE },
		{ "index-only", no_argument, NULL, OPT_INDEX },
		{ "jobs", required_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	uint64_t v;
	int ch, t;

	cli_init("nf4-quant");
	O.jobs = peftio_ncpus();
	O.incl = calloc((size_t)argc + 1, sizeof(char *));
	O.excl = calloc((size_t)argc + 1, sizeof(char *));
	if (O.incl == NULL || O.excl == NULL)
		return CLI_EXIT_ERROR;
	while ((ch = getopt_long(argc, argv, "b:dfj:o:qt:v", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'b':
			if (cli_parse_u64("-b", optarg, 32, 4096, &v) != 0)
				usage(CLI_EXIT_USAGE);
			if (!peftio_q4_blocksize_ok(v)) {
				cli_warn("-b: blocksize must be 32, 64, 128, "
				    "256, 512, 1024, 2048 or 4096");
				usage(CLI_EXIT_USAGE);
			}
			O.bs = v;
			break;
		case 'd':
			O.decode = 1;
			break;
		case 'f':
			O.force = 1;
			break;
		case 'j':
			if (cli_parse_u64("-j", optarg, 0, 256, &v) != 0)
				usage(CLI_EXIT_USAGE);
			O.jobs = v == 0 ? peftio_ncpus() : (unsigned)v;
			break;
		case 'o':
			O.out = optarg;
			break;
		case 'q':
			cli_verbose = 0;
			break;
		case 't':
			O.int8 = strcmp(optarg, "int8") == 0;
			if (O.int8)
				break;
			if ((t = peftio_q4type_parse(optarg)) < 0) {
				cli_warn("-t: unknown type %s (use nf4, fp4 or "
				    "int8)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			O.type = (enum peftio_q4type)t;
			break;
		case 'v':
			cli_verbose = cli_verbose < 1 ? 2 : cli_verbose + 1;
			break;
		case OPT_NODQ:
			O.dq = 0;
			break;
		case OPT_DTYPE:
			if ((O.dtype = cli_parse_float_dtype("--dtype",
			    optarg)) < 0)
				usage(CLI_EXIT_USAGE);
			break;
		case OPT_STORAGE:
			if ((t = peftio_bnb_storage_parse(optarg)) < 0) {
				cli_warn("--storage: unknown dtype %s (use u8, "
				    "bf16, f16 or f32)", optarg);
				usage(CLI_EXIT_USAGE);
			}
			O.storage = (enum peftio_dtype)t;
			break;
		case OPT_INCL:
			O.incl[O.nincl++] = optarg;
			break;
		case OPT_EXCL:
			O.excl[O.nexcl++] = optarg;
			break;
		case OPT_NONFINITE:
			O.allow_nonfinite = 1;
			break;
		case OPT_INDEX:
			O.index_only = 1;
			break;
		case OPT_HELP:
			usage(CLI_EXIT_OK);
		case OPT_VERSION:
			printf("nf4-quant (peftio) %s\n", peftio_version());
			return CLI_EXIT_OK;
		default:
			usage(CLI_EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1)
		usage(CLI_EXIT_USAGE);
	if (O.int8 && (O.storage != PEFTIO_U8 || !O.dq || O.bs != 64)) {
		cli_warn("-t int8: --storage, -b and --no-double-quant are "
		    "for 4-bit types");
		usage(CLI_EXIT_USAGE);
	}
	if (O.out == NULL) {
		if (strcmp(argv[0], "-") != 0) {
			cli_warn("no output given: use -o FILE, -o DIR or "
			    "-o - for standard output");
			usage(CLI_EXIT_USAGE);
		}
		O.out = "-";
	}
	if (O.index_only) {
		if (strcmp(O.out, "-") == 0 || ends_with(O.out, ".safetensors")) {
			cli_warn("--index-only writes into the directory of "
			    "the shards: use -o DIR");
			usage(CLI_EXIT_USAGE);
		}
		return run_index(argv[0]);
	}
	if (strcmp(O.out, "-") == 0 && isatty(STDOUT_FILENO) && !O.force) {
		cli_warn("standard output is a terminal; not writing a "
		    "checkpoint there (use -f to force)");
		return CLI_EXIT_ERROR;
	}
	return run(argv[0]);
}
