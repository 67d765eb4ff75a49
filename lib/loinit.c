/*
 * loinit.c - LoRA initialisations that change the base: PiSSA, OLoRA
 * and LoftQ on one weight, and the 4-bit form of a weight as
 * bitsandbytes stores it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "peftio_private.h"

/* The nested blocksize bitsandbytes uses for double quantization. */
#define NESTED_BS	256

static const char *const method_names[] = { "pissa", "olora", "loftq" };

int
peftio_init_method_parse(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(method_names) / sizeof(method_names[0]); i++)
		if (strcmp(s, method_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
peftio_init_method_name(enum peftio_init_method m)
{
	if ((unsigned)m >= sizeof(method_names) / sizeof(method_names[0]))
		return NULL;
	return method_names[m];
}

void
peftio_init_opts_init(struct peftio_init_opts *o)
{
	struct peftio_extract_opts x;

	peftio_extract_opts_init(&x);
	memset(o, 0, sizeof(*o));
	o->method = PEFTIO_INIT_PISSA;
	o->rank = 16;
	o->scale = 1.0;
	o->exact = 0;
	o->oversample = x.oversample;
	o->power_iters = x.power_iters;
	o->seed = 0;
	o->loftq_iter = 1;
	o->qtype = PEFTIO_Q4_NF4;
	o->blocksize = 64;
	o->double_quant = 1;
}

/* ------------------------------------------------------------------ */
/* The 4-bit form                                                      */

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

void
peftio_q4_weight_free(struct peftio_q4_weight *q)
{
	if (q == NULL)
		return;
	free(q->packed);
	free(q->absmax);
	free(q->qabsmax);
	free(q->nested);
	q->packed = q->qabsmax = NULL;
	q->absmax = q->nested = NULL;
}

int
peftio_q4_weight_quantize(struct peftio_q4_weight *q, enum peftio_q4type t,
    uint64_t bs, int double_quant, const float *x, uint64_t n, float *deq,
    struct peftio_error *err)
{
	struct peftio_quant_state qs;
	int rc;

	memset(q, 0, sizeof(*q));
	if (!peftio_q4_blocksize_ok(bs) || n == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "4-bit: bad blocksize %llu or empty weight",
		    (unsigned long long)bs);
	if ((rc = peftio_gpu_rcp_init(err)) != 0)
		return rc;
	q->type = t;
	q->n = n;
	q->bs = bs;
	q->nb = ceil_div(n, bs);
	q->double_quant = double_quant;
	q->packed = calloc((n + 1) / 2, 1);
	q->absmax = malloc(q->nb * sizeof(float));
	if (double_quant) {
		q->qabsmax = malloc(q->nb);
		q->nested = malloc(ceil_div(q->nb, NESTED_BS) * sizeof(float));
	}
	if (q->packed == NULL || q->absmax == NULL ||
	    (double_quant && (q->qabsmax == NULL || q->nested == NULL))) {
		peftio_q4_weight_free(q);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "4-bit: out of memory");
	}
	peftio_q4_weight_state(q, PEFTIO_F32, 1, &n, &qs);
	peftio_bnb_quantize_mem(&qs, x, q->packed, q->absmax, 1);
	if (double_quant) {
		peftio_dq_quantize(q->absmax, q->nb, NESTED_BS, &q->offset,
		    q->qabsmax, q->nested);
		/* What a load decodes the blocks with. */
		peftio_dq_dequantize(peftio_dynamic_map(), q->qabsmax,
		    q->nested, q->offset, q->nb, NESTED_BS, q->absmax);
	}
	if (deq != NULL)
		peftio_q4_dequantize(peftio_q4_code(t), q->packed, q->absmax,
		    n, bs, 0, q->nb, PEFTIO_F32, deq);
	return 0;
}

void
peftio_q4_weight_state(const struct peftio_q4_weight *q, enum peftio_dtype dt,
    int ndim, const uint64_t *shape, struct peftio_quant_state *qs)
{
	int d;

	memset(qs, 0, sizeof(*qs));
	qs->type = q->type;
	qs->blocksize = q->bs;
	qs->dtype = dt;
	qs->ndim = ndim;
	for (d = 0; d < ndim; d++)
		qs->shape[d] = shape[d];
	qs->numel = q->n;
	qs->double_quant = q->double_quant;
	qs->nested_blocksize = NESTED_BS;
	qs->nested_dtype = PEFTIO_F32;
	qs->nested_offset = q->double_quant ? q->offset : 0.0f;
}

/* ------------------------------------------------------------------ */
/* The initialisations                                                 */

static double
sumsq(const float *x, uint64_t n)
{
	double s = 0.0;
	uint64_t i;

	for (i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return s;
}

/*
 * The exact SVD in double precision: the leading subspace of a weight
 * whose singular values crowd around the cut (a quantization error is
 * close to noise) moves with float rounding; in double it agrees with
 * numpy's.  u is m x k, vt k x n (floats), s has k values.
 */
static int
svd_double(const float *x, uint64_t m, uint64_t n, uint64_t k, float *u,
    float *s, float *vt, struct peftio_error *err)
{
	uint64_t p = PEFTIO_MIN(m, n), i, j;
	double *a, *du, *ds, *dvt;
	lapack_int info;
	int rc = 0;

	if (m > (uint64_t)INT32_MAX || n > (uint64_t)INT32_MAX)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "SVD: matrix of %llu x %llu is too large",
		    (unsigned long long)m, (unsigned long long)n);
	if ((rc = peftio_blas_ready(err)) != 0)
		return rc;
	a = malloc(m * n * sizeof(double));
	du = malloc(m * p * sizeof(double));
	ds = malloc(p * sizeof(double));
	dvt = malloc(p * n * sizeof(double));
	if (a == NULL || du == NULL || ds == NULL || dvt == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "SVD: out of memory");
		goto out;
	}
	for (i = 0; i < m * n; i++)
		a[i] = x[i];
	peftio_blas_enter();
	info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m,
	    (lapack_int)n, a, (lapack_int)n, ds, du, (lapack_int)p, dvt,
	    (lapack_int)n);
	peftio_blas_leave();
	if (info != 0) {
		rc = peftio_error_set(err, info == LAPACK_WORK_MEMORY_ERROR ?
		    PEFTIO_ENOMEM : PEFTIO_EINVAL,
		    "SVD: LAPACK dgesdd failed (info %d)", (int)info);
		goto out;
	}
	for (i = 0; i < m; i++)
		for (j = 0; j < k; j++)
			u[i * k + j] = (float)du[i * p + j];
	for (j = 0; j < k; j++) {
		s[j] = (float)ds[j];
		for (i = 0; i < n; i++)
			vt[j * n + i] = (float)dvt[j * n + i];
	}
out:
	free(a);
	free(du);
	free(ds);
	free(dvt);
	return rc;
}

/*
 * The best rank-k approximation of x (m x n, kept) as
 * scale b a: b = U_k (S_k / scale)^1/2, a = (S_k / scale)^1/2 V_k^T.
 * Returns the sum of the k squared singular values in *kept.
 */
static int
lowrank(const struct peftio_init_opts *o, const float *x, uint64_t m, uint64_t n,
    uint64_t k, float *b, float *a, double *kept, struct peftio_error *err)
{
	uint64_t p = PEFTIO_MIN(m, n), w = k, i, j;
	float *u, *s, *vt;
	int rc;

	u = malloc(m * w * sizeof(float));
	s = malloc(p * sizeof(float));
	vt = malloc(w * n * sizeof(float));
	if (u == NULL || s == NULL || vt == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if (o->exact)
		rc = svd_double(x, m, n, k, u, s, vt, err);
	else
		rc = peftio_rsvd(x, m, n, k, o->oversample, o->power_iters,
		    o->seed, u, s, vt, err);
	if (rc != 0)
		goto out;
	*kept = 0.0;
	for (j = 0; j < k; j++) {
		double sj = s[j] > 0.0f ? s[j] : 0.0;
		float h = (float)sqrt(sj / o->scale);

		*kept += sj * sj;
		for (i = 0; i < n; i++)
			a[j * n + i] = h * vt[j * n + i];
		for (i = 0; i < m; i++)
			b[i * k + j] = u[i * w + j] * h;
	}
out:
	free(u);
	free(s);
	free(vt);
	return rc;
}

/*
 * OLoRA: b = Q_k, a = R_k of x = Q R, R's diagonal made non-negative.
 * Householder QR's first k columns of Q are those of the QR of x's
 * first k columns, and R_k = Q_k^T x: no QR of the whole weight.
 */
static int
olora(const float *x, uint64_t m, uint64_t n, uint64_t k, float *b, float *a,
    struct peftio_error *err)
{
	uint64_t i, j;
	int rc;

	for (i = 0; i < m; i++)
		memcpy(b + i * k, x + i * n, k * sizeof(float));
	if ((rc = peftio_orth(b, m, k, err)) != 0)
		return rc;
	peftio_sgemm(1, 0, k, n, m, 1.0f, b, k, x, n, 0.0f, a, n);
	for (j = 0; j < k; j++) {
		for (i = 0; i < j; i++)
			a[j * n + i] = 0.0f;	/* R is upper triangular */
		if (!(a[j * n + j] < 0.0f))
			continue;
		for (i = j; i < n; i++)
			a[j * n + i] = -a[j * n + i];
		for (i = 0; i < m; i++)
			b[i * k + j] = -b[i * k + j];
	}
	return 0;
}

int
peftio_init_lora(const struct peftio_init_opts *o, float *w, uint64_t m,
    uint64_t n, struct peftio_lora_factors *f, struct peftio_q4_weight *q,
    struct peftio_error *err)
{
	uint64_t k = o->rank, mn = m * n, i;
	unsigned it;
	float *x = NULL;
	double total, kept = 0.0, e;
	int rc;

	memset(f, 0, sizeof(*f));
	if (q != NULL)
		memset(q, 0, sizeof(*q));
	f->m = m;
	f->n = n;
	if (m == 0 || n == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "empty matrix");
	if (k == 0 || k > PEFTIO_MIN(m, n))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "rank %llu exceeds min(%llu, %llu)", (unsigned long long)k,
		    (unsigned long long)m, (unsigned long long)n);
	if (!(o->scale > 0.0) || !isfinite(o->scale))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "scale must be positive");
	if (o->method == PEFTIO_INIT_LOFTQ && (q == NULL || o->loftq_iter == 0))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "LoftQ needs a 4-bit weight and at least one iteration");
	if ((uint64_t)(o->method) > PEFTIO_INIT_LOFTQ)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "unknown initialisation");
	if ((rc = peftio_blas_ready(err)) != 0)
		return rc;
	total = sumsq(w, mn);
	if (!isfinite(total))
		return peftio_error_set(err, PEFTIO_ENONFINITE,
		    "weight is not finite (NaN or Inf)");
	f->energy = total;
	f->rank = k;
	f->a = malloc(k * n * sizeof(float));
	f->b = malloc(m * k * sizeof(float));
	if (f->a == NULL || f->b == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto fail;
	}
	switch (o->method) {
	case PEFTIO_INIT_PISSA:
		if ((rc = lowrank(o, w, m, n, k, f->b, f->a, &kept,
		    err)) != 0)
			goto fail;
		peftio_sgemm(0, 0, m, n, k, (float)-o->scale, f->b, k, f->a, n,
		    1.0f, w, n);
		e = sumsq(w, mn);
		break;
	case PEFTIO_INIT_OLORA:
		if ((rc = olora(w, m, n, k, f->b, f->a, err)) != 0)
			goto fail;
		peftio_sgemm(0, 0, m, n, k, (float)-o->scale, f->b, k, f->a, n,
		    1.0f, w, n);
		e = sumsq(w, mn);
		kept = total - e;
		break;
	default:	/* LoftQ */
		if ((x = malloc(mn * sizeof(float))) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto fail;
		}
		for (it = 0; it < o->loftq_iter; it++) {
			/* x = W - scale B A, quantized; x = W - deq(Q). */
			memcpy(x, w, mn * sizeof(float));
			if (it > 0)
				peftio_sgemm(0, 0, m, n, k, (float)-o->scale,
				    f->b, k, f->a, n, 1.0f, x, n);
			peftio_q4_weight_free(q);
			if ((rc = peftio_q4_weight_quantize(q, o->qtype,
			    o->blocksize, o->double_quant, x, mn, x,
			    err)) != 0)
				goto fail;
			for (i = 0; i < mn; i++)
				x[i] = w[i] - x[i];
			if ((rc = lowrank(o, x, m, n, k, f->b, f->a, &kept,
			    err)) != 0)
				goto fail;
		}
		/* The new base is deq(Q); the error is that of deq(Q) +
		 * scale B A. */
		peftio_q4_dequantize(peftio_q4_code(q->type), q->packed,
		    q->absmax, mn, q->bs, 0, q->nb, PEFTIO_F32, x);
		for (i = 0; i < mn; i++) {
			float d = w[i];

			w[i] = x[i];
			x[i] = d - x[i];
		}
		peftio_sgemm(0, 0, m, n, k, (float)-o->scale, f->b, k, f->a, n,
		    1.0f, x, n);
		e = sumsq(x, mn);
		break;
	}
	f->kept = total > 0.0 ? PEFTIO_MIN(kept / total, 1.0) : 1.0;
	f->rel_err = total > 0.0 ? sqrt(e / total) : 0.0;
	free(x);
	return 0;
fail:
	free(x);
	peftio_lora_factors_free(f);
	if (q != NULL)
		peftio_q4_weight_free(q);
	return rc;
}
