/*
 * bnb8.c - the bitsandbytes 8-bit (LLM.int8) on-disk form: an int8
 * weight, its SCB (one float absmax per row) and weight_format, as
 * transformers' save_pretrained writes a model loaded with load_in_8bit.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* ------------------------------------------------------------------ */
/* 8-bit (LLM.int8) weights inside a checkpoint                        */

/* "W.weight" -> "W" + suffix; NULL when name does not end in .weight. */
static char *
sibling(const char *name, const char *from, const char *to)
{
	size_t n = strlen(name), k = strlen(from), m;
	char *s;

	if (n < k || strcmp(name + n - k, from) != 0)
		return NULL;
	m = n - k + strlen(to) + 1;
	if ((s = malloc(m)) == NULL)
		return NULL;
	memcpy(s, name, n - k);
	strcpy(s + n - k, to);
	return s;
}

int
peftio_bnb8_lookup(struct peftio_ckpt *c, size_t i,
    struct peftio_bnb8_weight *bw, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i), *wi;
	const char *path = peftio_ckpt_path(c);
	const unsigned char *data;
	char *w = NULL, *f = NULL;
	uint64_t r, fv;
	long k;
	float v;
	int rc = PEFTIO_EFORMAT;

	if (ti->dtype == PEFTIO_I8) {
		/* An int8 weight is read through its SCB. */
		if ((w = sibling(ti->name, ".weight", PEFTIO_BNB_SCB)) == NULL)
			return 0;
		k = peftio_ckpt_find(c, w);
		free(w);
		if (k >= 0)
			return 0;
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': 8-bit weight without its SCB (row "
		    "scales)", path, ti->name);
	}
	if ((w = sibling(ti->name, PEFTIO_BNB_SCB, ".weight")) == NULL)
		return 0;
	memset(bw, 0, sizeof(*bw));
	bw->scb = i;
	bw->format = -1;
	if ((k = peftio_ckpt_find(c, w)) < 0) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' has no 8-bit weight %s", path, ti->name,
		    w);
		goto out;
	}
	bw->weight = (size_t)k;
	wi = peftio_ckpt_tensor(c, bw->weight);
	if (wi->dtype != PEFTIO_I8 || wi->ndim != 2) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': an 8-bit weight (beside %s) must be 2-D "
		    "I8, not %d-D %s", path, w, ti->name, wi->ndim,
		    peftio_dtype_name(wi->dtype));
		goto out;
	}
	bw->rows = wi->shape[0];
	bw->cols = wi->shape[1];
	if (bw->rows == 0 || bw->cols == 0) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': 8-bit weight of shape [%llu, %llu] has "
		    "no values", path, w, (unsigned long long)bw->rows,
		    (unsigned long long)bw->cols);
		goto out;
	}
	if (ti->dtype != PEFTIO_F32 || ti->numel != bw->rows) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is %s with %llu elements, but its weight "
		    "needs F32 with %llu (one per row)", path, ti->name,
		    peftio_dtype_name(ti->dtype),
		    (unsigned long long)ti->numel,
		    (unsigned long long)bw->rows);
		goto out;
	}
	if (peftio_ckpt_data(c, i, (const void **)&data, err) != 0) {
		rc = err != NULL ? err->code : PEFTIO_EIO;
		goto out;
	}
	for (r = 0; r < bw->rows; r++) {
		memcpy(&v, data + r * 4, 4);
		/* the absmax of float16 values: at most 65504 */
		if (!(v >= 0.0f && v <= 65504.0f)) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': row %llu's scale is %s", path,
			    ti->name, (unsigned long long)r, v < 0.0f ?
			    "negative" : v > 65504.0f && v <= FLT_MAX ?
			    "beyond float16" : "not finite");
			goto out;
		}
	}
	if ((f = sibling(w, ".weight", ".weight_format")) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if ((k = peftio_ckpt_find(c, f)) >= 0) {
		wi = peftio_ckpt_tensor(c, (size_t)k);
		if (wi->numel != 1 || (wi->dtype != PEFTIO_U8 &&
		    wi->dtype != PEFTIO_I8 && wi->dtype != PEFTIO_I64 &&
		    wi->dtype != PEFTIO_I32)) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' must be one integer", path, f);
			goto out;
		}
		if (peftio_ckpt_data(c, (size_t)k, (const void **)&data,
		    err) != 0) {
			rc = err != NULL ? err->code : PEFTIO_EIO;
			goto out;
		}
		/* 0 is "row"; col32 and the Turing and Ampere tile
		 * layouts are not written by any current release. */
		fv = 0;
		memcpy(&fv, data, peftio_dtype_bits(wi->dtype) / 8);
		if (fv != 0) {
			rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: tensor '%s': weight format %llu is not "
			    "row-major (0)", path, f, (unsigned long long)fv);
			goto out;
		}
		bw->format = k;
	}
	rc = 0;
out:
	free(w);
	free(f);
	return rc == 0 ? 1 : rc;
}

enum peftio_dtype
peftio_bnb8_dtype(struct peftio_ckpt *c)
{
	const struct peftio_tensor_info *ti;
	size_t i;

	for (i = 0; i < peftio_ckpt_count(c); i++) {
		ti = peftio_ckpt_tensor(c, i);
		if ((ti->dtype == PEFTIO_F32 || ti->dtype == PEFTIO_F16 ||
		    ti->dtype == PEFTIO_BF16) && ti->ndim == 2)
			return ti->dtype;
	}
	return PEFTIO_F16;
}

struct deq8_job {
	const int8_t	*codes;
	const float	*scb;
	uint64_t	 cols, r0;
	enum peftio_dtype dt;
	unsigned char	*out;
};

static void
deq8_range(void *arg, uint64_t b, uint64_t e)
{
	struct deq8_job *j = arg;
	size_t es = peftio_dtype_bits(j->dt) / 8;

	peftio_int8_dequantize(j->codes, j->scb, j->cols, j->r0 + b, j->r0 + e,
	    j->dt, j->out + b * j->cols * es);
}

int
peftio_bnb8_dequantize_part(struct peftio_ckpt *c,
    const struct peftio_bnb8_weight *bw, enum peftio_dtype dt, void *out,
    uint64_t r0, uint64_t nrows, unsigned nthreads, struct peftio_error *err)
{
	const void *codes, *scb;
	struct deq8_job j;
	float *s;
	int rc;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "dequantize: output dtype must be F32, F16 or BF16");
	if (r0 > bw->rows || nrows > bw->rows - r0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "dequantize: rows %llu+%llu are not a part of %llu",
		    (unsigned long long)r0, (unsigned long long)nrows,
		    (unsigned long long)bw->rows);
	if ((rc = peftio_ckpt_data(c, bw->weight, &codes, err)) != 0 ||
	    (rc = peftio_ckpt_data(c, bw->scb, &scb, err)) != 0)
		return rc;
	/* Tensors in a file need not be aligned: copy the scales. */
	if ((s = malloc(bw->rows * sizeof(float))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	memcpy(s, scb, bw->rows * sizeof(float));
	j.codes = codes;
	j.scb = s;
	j.cols = bw->cols;
	j.r0 = r0;
	j.dt = dt;
	j.out = out;
	peftio_parallel_for(nthreads, nrows, PEFTIO_MAX(1, 65536 / bw->cols),
	    deq8_range, &j);
	free(s);
	return 0;
}

int
peftio_bnb8_dequantize(struct peftio_ckpt *c,
    const struct peftio_bnb8_weight *bw, enum peftio_dtype dt, void *out,
    unsigned nthreads, struct peftio_error *err)
{
	return peftio_bnb8_dequantize_part(c, bw, dt, out, 0, bw->rows,
	    nthreads, err);
}

struct q8_job {
	enum peftio_dtype dt;
	const void	*in;
	uint64_t	 cols;
	int8_t		*codes;
	float		*scb;
};

static void
q8_range(void *arg, uint64_t b, uint64_t e)
{
	struct q8_job *j = arg;

	peftio_int8_quantize(j->dt, j->in, j->cols, b, e, j->codes, j->scb);
}

int
peftio_bnb8_quantize(enum peftio_dtype dt, const void *in, uint64_t rows,
    uint64_t cols, int8_t *codes, float *scb, unsigned nthreads,
    struct peftio_error *err)
{
	struct q8_job j;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "8-bit quantization: input must be F32, F16 or BF16");
	j.dt = dt;
	j.in = in;
	j.cols = cols;
	j.codes = codes;
	j.scb = scb;
	peftio_parallel_for(nthreads, rows, PEFTIO_MAX(1, 65536 / PEFTIO_MAX(
	    cols, 1)), q8_range, &j);
	return 0;
}

/* The names of weight name's SCB and weight_format (malloc'ed). */
static int
companion_names(const char *name, char **scb, char **fmt,
    struct peftio_error *err)
{
	*scb = sibling(name, ".weight", PEFTIO_BNB_SCB);
	*fmt = sibling(name, ".weight", ".weight_format");
	if (*scb != NULL && *fmt != NULL)
		return 0;
	free(*scb);
	free(*fmt);
	return peftio_error_set(err, PEFTIO_EINVAL,
	    "tensor '%s': an 8-bit weight's name ends in .weight", name);
}

int
peftio_bnb8_declare(struct peftio_ckptw *w, size_t shard, const char *name,
    uint64_t rows, uint64_t cols, struct peftio_error *err)
{
	uint64_t shape[2] = { rows, cols };
	char *scb, *fmt;
	int rc;

	if ((rc = companion_names(name, &scb, &fmt, err)) != 0)
		return rc;
	rc = peftio_ckptw_declare(w, shard, name, PEFTIO_I8, 2, shape, err);
	if (rc == 0)
		rc = peftio_ckptw_declare(w, shard, scb, PEFTIO_F32, 1, shape,
		    err);
	if (rc == 0)
		rc = peftio_ckptw_declare(w, shard, fmt, PEFTIO_U8, 0, shape,
		    err);
	free(scb);
	free(fmt);
	return rc;
}

int
peftio_bnb8_write(struct peftio_ckptw *w, const char *name,
    const int8_t *codes, const float *scb, uint64_t rows, uint64_t cols,
    struct peftio_error *err)
{
	static const unsigned char row_format = 0;
	char *s, *fmt;
	int rc;

	if ((rc = companion_names(name, &s, &fmt, err)) != 0)
		return rc;
	rc = peftio_ckptw_write(w, name, codes, rows * cols, err);
	if (rc == 0)
		rc = peftio_ckptw_write(w, s, scb, rows * sizeof(float), err);
	if (rc == 0)
		rc = peftio_ckptw_write(w, fmt, &row_format, 1, err);
	free(s);
	free(fmt);
	return rc;
}

int
peftio_bnb8_expect(struct peftio_xf_check *chk, size_t i, const char *name,
    uint64_t rows, uint64_t cols, struct peftio_error *err)
{
	uint64_t shape[2] = { rows, cols };
	char *scb, *fmt;
	int rc;

	if ((rc = companion_names(name, &scb, &fmt, err)) != 0)
		return rc;
	rc = peftio_xf_expect(chk, i, name, PEFTIO_I8, 2, shape, err);
	if (rc == 0)
		rc = peftio_xf_expect(chk, i, scb, PEFTIO_F32, 1, shape, err);
	if (rc == 0)
		rc = peftio_xf_expect(chk, i, fmt, PEFTIO_U8, 0, shape, err);
	free(scb);
	free(fmt);
	return rc;
}
