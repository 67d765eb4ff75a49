/*
 * linalg.c - thin wrappers over BLAS and LAPACK (OpenBLAS, LAPACKE).
 *
 * BLAS runs with one thread: the callers split work into pieces whose
 * boundaries do not depend on the thread count, so results do not
 * either.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "peftio_private.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void
blas_init(void)
{
	openblas_set_num_threads(1);
}

/*
 * OpenBLAS takes a work buffer of about BLAS_BUFFER bytes for each
 * thread that calls it, the first time, and when memory is short it
 * retries forever.  Each thread checks once that the memory is there
 * before its first call; the buffer is kept from then on.
 */
#define BLAS_BUFFER	((size_t)160 << 20)

static _Thread_local int blas_checked;

int
peftio_blas_ready(struct peftio_error *err)
{
	/* volatile: a compiler may drop a malloc() whose memory is not
	 * used, and the check with it. */
	void *volatile p;

	pthread_once(&blas_once, blas_init);
	if (blas_checked)
		return 0;
	if ((p = malloc(BLAS_BUFFER)) == NULL)
		return err == NULL ? PEFTIO_ENOMEM : peftio_error_set(err,
		    PEFTIO_ENOMEM, "out of memory (the BLAS library needs "
		    "%zu MiB for each thread)", BLAS_BUFFER >> 20);
	free(p);
	blas_checked = 1;
	return 0;
}

void
peftio_sgemm(int trans_a, int trans_b, uint64_t m, uint64_t n, uint64_t k,
    float alpha, const float *a, uint64_t lda, const float *b, uint64_t ldb,
    float beta, float *c, uint64_t ldc)
{
	pthread_once(&blas_once, blas_init);
	if (m == 0 || n == 0)
		return;
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
	    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
	    (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
	    (blasint)ldc);
}

int
peftio_svd(float *a, uint64_t m, uint64_t n, float *u, float *s, float *vt,
    struct peftio_error *err)
{
	uint64_t p = PEFTIO_MIN(m, n);
	lapack_int info;

	if (peftio_blas_ready(err) != 0)
		return PEFTIO_ENOMEM;
	if (m == 0 || n == 0)
		return 0;
	if (m > (uint64_t)INT32_MAX || n > (uint64_t)INT32_MAX)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "SVD: matrix of %llu x %llu is too large",
		    (unsigned long long)m, (unsigned long long)n);
	info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m,
	    (lapack_int)n, a, (lapack_int)n, s, u, (lapack_int)p, vt,
	    (lapack_int)n);
	if (info == LAPACK_WORK_MEMORY_ERROR)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "SVD: out of memory");
	if (info != 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "SVD: LAPACK sgesdd failed (info %d)", (int)info);
	return 0;
}

int
peftio_orth(float *a, uint64_t m, uint64_t l, struct peftio_error *err)
{
	float *tau;
	lapack_int info;

	if (peftio_blas_ready(err) != 0)
		return PEFTIO_ENOMEM;
	if (m == 0 || l == 0)
		return 0;
	if (l > m || m > (uint64_t)INT32_MAX)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "QR: matrix of %llu x %llu has too few rows or is too "
		    "large", (unsigned long long)m, (unsigned long long)l);
	if ((tau = malloc(l * sizeof(*tau))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "QR: out of memory");
	info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l,
	    a, (lapack_int)l, tau);
	if (info == 0)
		info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m,
		    (lapack_int)l, (lapack_int)l, a, (lapack_int)l, tau);
	free(tau);
	if (info == LAPACK_WORK_MEMORY_ERROR)
		return peftio_error_set(err, PEFTIO_ENOMEM, "QR: out of memory");
	if (info != 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "QR: LAPACK sgeqrf/sorgqr failed (info %d)", (int)info);
	return 0;
}

/* splitmix64: the fixed generator behind the Gaussian test matrix. */
static uint64_t
rsvd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* n standard normal values, Box-Muller in double. */
static void
rsvd_gaussian(float *x, uint64_t n, uint64_t seed)
{
	uint64_t s = seed, i;
	double u1, u2, r;

	for (i = 0; i < n; i += 2) {
		u1 = ((rsvd_next(&s) >> 11) + 1.0) * 0x1.0p-53;
		u2 = (rsvd_next(&s) >> 11) * 0x1.0p-53;
		r = sqrt(-2.0 * log(u1));
		x[i] = (float)(r * cos(2.0 * M_PI * u2));
		if (i + 1 < n)
			x[i + 1] = (float)(r * sin(2.0 * M_PI * u2));
	}
}

int
peftio_rsvd(const float *a, uint64_t m, uint64_t n, uint64_t k, uint64_t p,
    unsigned q, uint64_t seed, float *u, float *s, float *vt,
    struct peftio_error *err)
{
	uint64_t mn = PEFTIO_MIN(m, n), l, i;
	float *om = NULL, *y = NULL, *z = NULL, *b = NULL, *ub = NULL;
	float *sb = NULL, *vb = NULL;
	int rc;

	if (peftio_blas_ready(err) != 0)
		return PEFTIO_ENOMEM;
	if (k == 0 || m == 0 || n == 0)
		return 0;
	if (k > mn)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "SVD: rank %llu exceeds min(%llu, %llu)",
		    (unsigned long long)k, (unsigned long long)m,
		    (unsigned long long)n);
	if (m > (uint64_t)INT32_MAX || n > (uint64_t)INT32_MAX)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "SVD: matrix of %llu x %llu is too large",
		    (unsigned long long)m, (unsigned long long)n);
	l = k + PEFTIO_MIN(p, mn - k);
	om = malloc(n * l * sizeof(float));
	y = malloc(m * l * sizeof(float));
	z = malloc(n * l * sizeof(float));
	b = malloc(l * n * sizeof(float));
	ub = malloc(l * l * sizeof(float));
	sb = malloc(l * sizeof(float));
	vb = malloc(l * n * sizeof(float));
	if (om == NULL || y == NULL || z == NULL || b == NULL || ub == NULL ||
	    sb == NULL || vb == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "SVD: out of memory");
		goto out;
	}
	/* Range finder with subspace iteration (HMT Algorithm 4.4). */
	rsvd_gaussian(om, n * l, seed);
	peftio_sgemm(0, 0, m, l, n, 1.0f, a, n, om, l, 0.0f, y, l);
	if ((rc = peftio_orth(y, m, l, err)) != 0)
		goto out;
	for (i = 0; i < q; i++) {
		peftio_sgemm(1, 0, n, l, m, 1.0f, a, n, y, l, 0.0f, z, l);
		if ((rc = peftio_orth(z, n, l, err)) != 0)
			goto out;
		peftio_sgemm(0, 0, m, l, n, 1.0f, a, n, z, l, 0.0f, y, l);
		if ((rc = peftio_orth(y, m, l, err)) != 0)
			goto out;
	}
	/* B = Q^T A, its small SVD, U = Q Ub (Algorithm 5.1). */
	peftio_sgemm(1, 0, l, n, m, 1.0f, y, l, a, n, 0.0f, b, n);
	if ((rc = peftio_svd(b, l, n, ub, sb, vb, err)) != 0)
		goto out;
	peftio_sgemm(0, 0, m, k, l, 1.0f, y, l, ub, l, 0.0f, u, k);
	memcpy(s, sb, k * sizeof(float));
	memcpy(vt, vb, k * n * sizeof(float));
	rc = 0;
out:
	free(om);
	free(y);
	free(z);
	free(b);
	free(ub);
	free(sb);
	free(vb);
	return rc;
}
