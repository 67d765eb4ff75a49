/*
 * extract_bench - randomized vs exact LoRA extraction on a random f32
 * delta (low rank plus noise): time and relative Frobenius error.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Ilib -o bench/extract_bench \
 *       bench/extract_bench.c lib/libpeftio.a \
 *       $(pkg-config --libs zlib jansson libxxhash yaml-0.1 openblas lapacke) \
 *       -lpthread -lm
 *   bench/extract_bench [m n rank ...]
 *
 * Default shapes: 4096x4096 and 4096x11008 at ranks 16 and 64.  The
 * exact SVD of a shape is computed once and reused for both ranks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "peftio.h"

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 88172645463325252ULL;

static float
randn(void)
{
	double u1, u2;

	rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
	u1 = ((rs >> 11) + 1.0) * 0x1.0p-53;
	rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
	u2 = (rs >> 11) * 0x1.0p-53;
	return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* Rank-32 signal with singular values ~ 1/j plus a noise floor. */
static float *
make_delta(uint64_t m, uint64_t n)
{
	uint64_t k = 32, i, j;
	float *u = malloc(m * k * 4), *v = malloc(k * n * 4);
	float *d = malloc(m * n * 4);

	for (i = 0; i < m * k; i++)
		u[i] = randn() / sqrtf((float)m);
	for (j = 0; j < k; j++)
		for (i = 0; i < n; i++)
			v[j * n + i] = randn() / sqrtf((float)n) / (j + 1);
	peftio_sgemm(0, 0, m, n, k, 1.0f, u, k, v, n, 0.0f, d, n);
	for (i = 0; i < m * n; i++)
		d[i] += 0.002f * randn() / sqrtf((float)n);
	free(u);
	free(v);
	return d;
}

static void
bench(uint64_t m, uint64_t n, const uint64_t *ranks, int nr)
{
	struct peftio_error err;
	struct peftio_extract_opts o;
	struct peftio_lora_factors f;
	float *d = make_delta(m, n), *w, *u, *s, *vt;
	uint64_t mn = m < n ? m : n, i, j;
	double t0, tx, tr, tot = 0.0, tail, opt;
	int r;

	for (i = 0; i < m * n; i++)
		tot += (double)d[i] * d[i];
	/* Exact: the full SVD once (what --exact runs). */
	w = malloc(m * n * 4);
	u = malloc(m * mn * 4);
	s = malloc(mn * 4);
	vt = malloc(mn * n * 4);
	memcpy(w, d, m * n * 4);
	t0 = now();
	if (peftio_svd(w, m, n, u, s, vt, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		exit(1);
	}
	tx = now() - t0;
	for (r = 0; r < nr; r++) {
		tail = 0.0;
		for (j = ranks[r]; j < mn; j++)
			tail += (double)s[j] * s[j];
		opt = sqrt(tail / tot);
		peftio_extract_opts_init(&o);
		o.rank = ranks[r];
		t0 = now();
		if (peftio_extract_lora(d, m, n, &o, &f, &err) != 0) {
			fprintf(stderr, "%s\n", err.msg);
			exit(1);
		}
		tr = now() - t0;
		printf("%5llux%-5llu r=%-3llu exact %7.2f s  randomized %6.3f s"
		    "  speedup %6.1fx  err %.6f  optimum %.6f  ratio %.5f\n",
		    (unsigned long long)m, (unsigned long long)n,
		    (unsigned long long)ranks[r], tx, tr, tx / tr, f.rel_err,
		    opt, f.rel_err / opt);
		fflush(stdout);
		peftio_lora_factors_free(&f);
	}
	free(d);
	free(w);
	free(u);
	free(s);
	free(vt);
}

int
main(int argc, char *argv[])
{
	static const uint64_t rk[] = { 16, 64 };
	uint64_t r;
	int i;

	if (argc >= 4) {
		for (i = 3; i < argc; i++) {
			r = strtoull(argv[i], NULL, 10);
			bench(strtoull(argv[1], NULL, 10),
			    strtoull(argv[2], NULL, 10), &r, 1);
		}
		return 0;
	}
	bench(4096, 4096, rk, 2);
	bench(4096, 11008, rk, 2);
	return 0;
}
