/*
 * extract.c - a LoRA pair from a weight delta: truncated SVD (randomized
 * or exact) and rank selection.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

/* Rows of the residual computed at a time. */
#define RESID_ROWS	256

void
peftio_extract_opts_init(struct peftio_extract_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->rank = 16;
	o->energy = 0.0;
	o->max_rank = 256;
	o->min_rank = 1;
	o->oversample = 8;
	o->power_iters = 2;
	o->exact = 0;
	o->seed = 0;
}

void
peftio_lora_factors_free(struct peftio_lora_factors *f)
{
	if (f == NULL)
		return;
	free(f->a);
	free(f->b);
	f->a = f->b = NULL;
}

int
peftio_extract_lora(const float *delta, uint64_t m, uint64_t n,
    const struct peftio_extract_opts *o, struct peftio_lora_factors *f,
    struct peftio_error *err)
{
	uint64_t mn = PEFTIO_MIN(m, n), k, r, i, j;
	float *u = NULL, *s = NULL, *vt = NULL, *work = NULL;
	double total = 0.0, kept, acc;
	int rc;

	memset(f, 0, sizeof(*f));
	f->m = m;
	f->n = n;
	if (m == 0 || n == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "empty matrix");
	if (o->rank == 0 && !(o->energy > 0.0 && o->energy <= 1.0))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "energy fraction must be in (0, 1]");
	for (i = 0; i < m * n; i++)
		total += (double)delta[i] * delta[i];
	if (!isfinite(total))
		return peftio_error_set(err, PEFTIO_ENONFINITE,
		    "delta is not finite");
	f->energy = total;
	k = o->rank != 0 ? o->rank : o->max_rank;
	k = PEFTIO_MIN(k, mn);
	if (k == 0)
		k = 1;
	u = malloc((o->exact ? mn : k) * m * sizeof(float));
	s = malloc(mn * sizeof(float));
	vt = malloc((o->exact ? mn : k) * n * sizeof(float));
	if (u == NULL || s == NULL || vt == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if (o->exact) {
		if ((work = malloc(m * n * sizeof(float))) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto out;
		}
		memcpy(work, delta, m * n * sizeof(float));
		if ((rc = peftio_svd(work, m, n, u, s, vt, err)) != 0)
			goto out;
	} else if ((rc = peftio_rsvd(delta, m, n, k, o->oversample,
	    o->power_iters, o->seed, u, s, vt, err)) != 0)
		goto out;

	/* The rank: fixed, or the smallest keeping the energy fraction. */
	if (o->rank != 0)
		r = k;
	else {
		r = k;
		acc = 0.0;
		for (i = 0; i < k; i++) {
			acc += (double)s[i] * s[i];
			if (acc >= o->energy * total) {
				r = i + 1;
				break;
			}
		}
		if (r < o->min_rank)
			r = PEFTIO_MIN(o->min_rank, k);
	}
	kept = 0.0;
	for (i = 0; i < r; i++)
		kept += (double)s[i] * s[i];
	f->rank = r;
	f->kept = total > 0.0 ? PEFTIO_MIN(kept / total, 1.0) : 1.0;

	/* B = U_r S^1/2 (m x r), A = S^1/2 V_r^T (r x n). */
	f->a = malloc(r * n * sizeof(float));
	f->b = malloc(m * r * sizeof(float));
	if (f->a == NULL || f->b == NULL) {
		peftio_lora_factors_free(f);
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	{
		uint64_t ldu = o->exact ? mn : k;

		for (j = 0; j < r; j++) {
			float h = sqrtf(s[j] > 0.0f ? s[j] : 0.0f);

			for (i = 0; i < n; i++)
				f->a[j * n + i] = h * vt[j * n + i];
			for (i = 0; i < m; i++)
				f->b[i * r + j] = h * u[i * ldu + j];
		}
	}
	/* The error of the factors themselves, not 1 - kept: that loses
	 * half the digits to cancellation.  Row blocks keep the scratch
	 * small. */
	acc = 0.0;
	if (work == NULL && (work = malloc(PEFTIO_MIN(m, RESID_ROWS) * n *
	    sizeof(float))) == NULL) {
		peftio_lora_factors_free(f);
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = peftio_blas_ready(err)) != 0) {
		peftio_lora_factors_free(f);
		goto out;
	}
	for (i = 0; i < m; i += RESID_ROWS) {
		uint64_t nr = PEFTIO_MIN(RESID_ROWS, m - i);

		memcpy(work, delta + i * n, nr * n * sizeof(float));
		peftio_sgemm(0, 0, nr, n, r, -1.0f, f->b + i * r, r, f->a, n,
		    1.0f, work, n);
		for (j = 0; j < nr * n; j++)
			acc += (double)work[j] * work[j];
	}
	f->rel_err = total > 0.0 ? sqrt(acc / total) : 0.0;
	rc = 0;
out:
	free(u);
	free(s);
	free(vt);
	free(work);
	return rc;
}
