/*
 * linalg.c - thin wrappers over BLAS and LAPACK (OpenBLAS, LAPACKE).
 *
 * BLAS runs with one thread: the callers split work into pieces whose
 * boundaries do not depend on the thread count, so results do not
 * either.
 */
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

	pthread_once(&blas_once, blas_init);
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
