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
	/* Not again where it holds: after a fork, setting it starts
	 * OpenBLAS's threads anew, and each takes a work buffer. */
	if (openblas_get_num_threads() != 1)
		openblas_set_num_threads(1);
}

/*
 * OpenBLAS takes a work buffer for each call from a pool that all
 * threads share (about 128 MiB of address space each; BLAS_BUFFER adds
 * a margin).  A call that finds every buffer in use maps one more, and
 * when that fails it retries forever; buffers are never given back.
 * So the library lets no more of its threads into BLAS at once than it
 * has seen buffers free for, and grows the pool only itself: under the
 * gate's lock, with none of its threads inside, it takes buffers one by
 * one, checking before each new one that its memory is there, and
 * gives them back; as many as it held at once, so many threads may
 * enter.  That is up to n in peftio_blas_reserve(), which an operation
 * calls before it starts its workers, and one on first use.
 *
 * What the gate cannot see: an allocation by another thread between a
 * check and the mapping that follows it, and the buffers of OpenBLAS's
 * own threads started after the count (the tools run none: their BLAS
 * sees one CPU when it loads).  With a BLAS library that has no such
 * pool (no blas_memory_alloc) the gate stands open.
 */
#define BLAS_BUFFER	((size_t)160 << 20)
#define BLAS_MAX_POOL	48	/* OpenBLAS keeps at least 50 */

extern void *blas_memory_alloc(int) __attribute__((weak));
extern void blas_memory_free(void *) __attribute__((weak));

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static unsigned gate_pool;	/* threads that may be inside at once */
static unsigned gate_inside;	/* threads between enter and leave */

static int
gate_open(void)
{
	pthread_once(&blas_once, blas_init);
	return blas_memory_alloc == NULL || blas_memory_free == NULL;
}

/*
 * Raise gate_pool towards want: hold as many buffers at once as memory
 * allows.  The gate is locked; once no library thread is inside BLAS,
 * the gate_pool buffers seen free together before are free again and
 * need no check.
 */
static void
gate_fill(unsigned want)
{
	void *held[BLAS_MAX_POOL];
	unsigned n = 0;

	while (gate_inside > 0)
		pthread_cond_wait(&gate_cond, &gate_lock);
	while (n < want) {
		if (n >= gate_pool) {
			/* volatile: a compiler may drop a malloc() whose
			 * memory is not used, and the check with it. */
			void *volatile p = malloc(BLAS_BUFFER);

			if (p == NULL)
				break;
			free(p);
		}
		held[n++] = blas_memory_alloc(0);
	}
	if (n > gate_pool)
		gate_pool = n;
	while (n > 0)
		blas_memory_free(held[--n]);
}

int
peftio_blas_reserve(unsigned n, struct peftio_error *err)
{
	int rc = 0;

	if (gate_open())
		return 0;
	n = PEFTIO_MAX(1, PEFTIO_MIN(n, BLAS_MAX_POOL));
	pthread_mutex_lock(&gate_lock);
	if (gate_pool < n)
		gate_fill(n);
	if (gate_pool == 0)
		rc = err == NULL ? PEFTIO_ENOMEM : peftio_error_set(err,
		    PEFTIO_ENOMEM, "out of memory (the BLAS library needs "
		    "%zu MiB for each thread)", BLAS_BUFFER >> 20);
	pthread_mutex_unlock(&gate_lock);
	return rc;
}

int
peftio_blas_ready(struct peftio_error *err)
{
	return peftio_blas_reserve(1, err);
}

void
peftio_blas_enter(void)
{
	if (gate_open())
		return;
	pthread_mutex_lock(&gate_lock);
	if (gate_pool == 0)
		gate_fill(1);
	/* With gate_pool still 0 the caller skipped peftio_blas_ready():
	 * the call goes ahead as it would without the gate. */
	while (gate_pool > 0 && gate_inside >= gate_pool)
		pthread_cond_wait(&gate_cond, &gate_lock);
	gate_inside++;
	pthread_mutex_unlock(&gate_lock);
}

void
peftio_blas_leave(void)
{
	if (gate_open())
		return;
	pthread_mutex_lock(&gate_lock);
	gate_inside--;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

void
peftio_sgemm(int trans_a, int trans_b, uint64_t m, uint64_t n, uint64_t k,
    float alpha, const float *a, uint64_t lda, const float *b, uint64_t ldb,
    float beta, float *c, uint64_t ldc)
{
	if (m == 0 || n == 0)
		return;
	peftio_blas_enter();
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
	    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n,
	    (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c,
	    (blasint)ldc);
	peftio_blas_leave();
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
	peftio_blas_enter();
	info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m,
	    (lapack_int)n, a, (lapack_int)n, s, u, (lapack_int)p, vt,
	    (lapack_int)n);
	peftio_blas_leave();
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
	peftio_blas_enter();
	info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l,
	    a, (lapack_int)l, tau);
	if (info == 0)
		info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m,
		    (lapack_int)l, (lapack_int)l, a, (lapack_int)l, tau);
	peftio_blas_leave();
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
