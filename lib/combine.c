/*
 * combine.c - add_weighted_adapter's combination types: linear, cat,
 * svd, ties, dare_linear, dare_ties and magnitude_prune, computed into
 * one pair of factors per target before the merge folds it in.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"

static const char *const combine_names[] = {
	"none", "linear", "cat", "svd", "ties", "dare_linear", "dare_ties",
	"magnitude_prune"
};

int
peftio_combine_parse(const char *s)
{
	size_t i;

	for (i = 1; i < sizeof(combine_names) / sizeof(combine_names[0]); i++)
		if (strcmp(s, combine_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
peftio_combine_name(enum peftio_combine c)
{
	if ((unsigned)c >= sizeof(combine_names) / sizeof(combine_names[0]))
		return NULL;
	return combine_names[c];
}


/* ---- add_weighted_adapter ------------------------------------------ */

static uint64_t
splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static int
cmp_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x < y) - (x > y);
}

/* merge_utils.magnitude_based_pruning: keep the int(density * n) values
 * of largest magnitude (ties at the threshold: the first ones). */
static int
magnitude_prune1(float *t, uint64_t n, double density)
{
	uint64_t k = (uint64_t)(density * (double)n), i, eq = 0, keep_eq;
	float *s, thr;

	if (k >= n)
		return 0;
	if ((s = malloc((n ? n : 1) * sizeof(float))) == NULL)
		return PEFTIO_ENOMEM;
	for (i = 0; i < n; i++)
		s[i] = fabsf(t[i]);
	qsort(s, n, sizeof(float), cmp_desc);
	thr = k > 0 ? s[k - 1] : INFINITY;
	for (i = 0; i < k; i++)
		eq += s[i] == thr;
	free(s);
	keep_eq = eq;
	for (i = 0; i < n; i++) {
		float v = fabsf(t[i]);

		if (k > 0 && v > thr)
			continue;
		if (k > 0 && v == thr && keep_eq > 0) {
			keep_eq--;
			continue;
		}
		t[i] = 0.0f;
	}
	return 0;
}

/* merge_utils.random_pruning with rescale, from a seeded generator. */
static void
random_prune1(float *t, uint64_t n, double density, uint64_t seed)
{
	uint64_t i, st = seed;
	float p = (float)density;

	for (i = 0; i < n; i++) {
		double u = (double)(splitmix64(&st) >> 11) * 0x1p-53;

		t[i] = u < density ? t[i] / p : 0.0f;
	}
}

/* Combine k tensors of n values (ts[i], pruned in place) with weights ws
 * into out, as merge_utils does for the method. */
static int
combine_tensors(const struct peftio_merge *m, float **ts, const float *ws,
    size_t k, uint64_t n, uint64_t seed, float *out)
{
	enum peftio_combine c = m->o.method;
	double dens = m->o.density;
	uint64_t i;
	size_t j;
	int rc;

	for (j = 0; j < k; j++) {
		if (dens >= 1)
			break;
		if (c == PEFTIO_COMBINE_TIES ||
		    c == PEFTIO_COMBINE_MAGNITUDE_PRUNE) {
			if ((rc = magnitude_prune1(ts[j], n, dens)) != 0)
				return rc;
		} else if (c == PEFTIO_COMBINE_DARE_LINEAR ||
		    c == PEFTIO_COMBINE_DARE_TIES)
			random_prune1(ts[j], n, dens, seed ^
			    (0x632be59bd9b4e019ull * (j + 1)));
	}
	for (i = 0; i < n; i++) {
		float sum = 0.0f, mixed = 0.0f, cnt = 0.0f, sg, tv;
		int maj;

		if (c != PEFTIO_COMBINE_TIES && c != PEFTIO_COMBINE_DARE_TIES) {
			for (j = 0; j < k; j++)
				sum += ts[j][i] * ws[j];
			out[i] = sum;
			continue;
		}
		for (j = 0; j < k; j++)
			sum += ts[j][i];
		maj = sum >= 0 ? 1 : -1;
		for (j = 0; j < k; j++) {
			tv = ts[j][i];
			sg = (float)((tv > 0) - (tv < 0));
			if (sg == (float)maj) {
				mixed += tv * ws[j];
				cnt += 1.0f;
			}
		}
		out[i] = mixed / (cnt < 1.0f ? 1.0f : cnt);
	}
	return 0;
}

/*
 * The combined adapter of the LoRA ops of t, as factors: its delta is
 * pr->cb pr->ca (transposed when pr->ctrans), times m->newscale.  1 when
 * t has no LoRA op.
 */
int
peftio_combine_factors(struct peftio_merge *m, const struct target *t,
    struct prep *pr, struct peftio_error *err)
{
	struct peftio_adapter *a;
	const struct lmod *md;
	const struct op *ops[64];
	float *fa[64], *fb[64], wa[64], wb[64], *A = NULL, *B = NULL;
	float *d = NULL, *tmp = NULL, *u = NULL, *s = NULL, *vt = NULL;
	uint64_t n = t->rows * t->cols, R = 0, off, i, q, r, p, acols, brows;
	size_t k = 0, j;
	double c;
	int rc = 0, trans = 0;
	enum peftio_dtype adt = PEFTIO_F32;

	for (j = 0; j < t->nops; j++)
		if (t->ops[j].kind == OP_LORA) {
			if (k == 64)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "more than 64 adapters");
			ops[k] = &t->ops[j];
			fa[k] = fb[k] = NULL;
			k++;
		}
	if (k == 0)
		return 1;
	for (j = 0; j < k && rc == 0; j++) {
		a = m->ads[ops[j]->ad];
		md = &a->mods[ops[j]->mod];
		trans = md->embedding || md->fifo;
		if (j == 0)
			adt = peftio_adapter_tinfo(a, md->a)->dtype;
		R += md->r;
		if ((rc = peftio_adapter_load_f32(a, md->a, &fa[j], err)) == 0)
			rc = peftio_adapter_load_f32(a, md->b, &fb[j], err);
	}
	if (rc != 0)
		goto out;
	md = &m->ads[ops[0]->ad]->mods[ops[0]->mod];
	acols = trans ? t->rows : t->cols;	/* A is [r, acols] */
	brows = trans ? t->cols : t->rows;	/* B is [brows, r] */

	switch (m->o.method) {
	case PEFTIO_COMBINE_CAT:
		/* A = cat_rows(A_i * w_i * s_i), B = cat_cols(B_i). */
		A = malloc(R * acols * sizeof(float));
		B = malloc(brows * R * sizeof(float));
		if (A == NULL || B == NULL)
			goto nomem;
		for (j = 0, off = 0; j < k; j++) {
			a = m->ads[ops[j]->ad];
			md = &a->mods[ops[j]->mod];
			for (i = 0; i < md->r * acols; i++)
				A[off * acols + i] = fa[j][i] *
				    (float)m->w[ops[j]->ad] * (float)md->scale;
			for (i = 0; i < brows; i++)
				memcpy(B + i * R + off, fb[j] + i * md->r,
				    md->r * sizeof(float));
			off += md->r;
		}
		pr->cr = R;
		break;
	case PEFTIO_COMBINE_SVD:
		/* sum_i w_i * delta_i, then its rank-new_r truncation. */
		if ((tmp = malloc(n * sizeof(float))) == NULL ||
		    (d = calloc(n ? n : 1, sizeof(float))) == NULL)
			goto nomem;
		for (j = 0; j < k && rc == 0; j++) {
			a = m->ads[ops[j]->ad];
			if ((rc = peftio_merge_lora_delta(m, a,
			    &a->mods[ops[j]->mod], t, tmp,
			    err)) != 0)
				break;
			for (i = 0; i < n; i++)
				d[i] += tmp[i] * (float)m->w[ops[j]->ad];
		}
		if (rc != 0)
			goto out;
		p = PEFTIO_MIN(t->rows, t->cols);
		r = PEFTIO_MIN(m->newr, p);
		u = malloc(t->rows * p * sizeof(float));
		s = malloc(p * sizeof(float));
		vt = malloc(p * t->cols * sizeof(float));
		A = malloc(r * PEFTIO_MAX(t->rows, t->cols) *
		    sizeof(float) + 1);
		B = malloc(r * PEFTIO_MAX(t->rows, t->cols) *
		    sizeof(float) + 1);
		if (u == NULL || s == NULL || vt == NULL || A == NULL ||
		    B == NULL)
			goto nomem;
		if ((rc = peftio_svd(d, t->rows, t->cols, u, s, vt,
		    err)) != 0) {
			peftio_error_prefix(err, "tensor '%s'", t->name);
			goto out;
		}
		pr->cr = r;
		if (pr->peft && trans) {
			/* PEFT factors delta^T = V S U^T: A = U^T [r,
			 * rows], B = V S [cols, r]. */
			for (i = 0; i < t->rows; i++)
				for (q = 0; q < r; q++)
					A[q * t->rows + i] = u[i * p + q];
			for (i = 0; i < t->cols; i++)
				for (q = 0; q < r; q++)
					B[i * r + q] = vt[q * t->cols + i] *
					    s[q];
			break;
		}
		for (i = 0; i < t->rows; i++)
			for (q = 0; q < r; q++)
				B[i * r + q] = u[i * p + q] * s[q];
		memcpy(A, vt, r * t->cols * sizeof(float));
		trans = 0;
		break;
	default:
		/* Factor-wise: A = f({A_i}, sign(c)sqrt|c|), B = f({B_i},
		 * sqrt|c|) with c = w_i s_i. */
		r = md->r;
		for (j = 0; j < k; j++) {
			a = m->ads[ops[j]->ad];
			c = m->w[ops[j]->ad] * a->mods[ops[j]->mod].scale;
			wa[j] = (float)copysign(sqrt(fabs(c)), c);
			wb[j] = (float)sqrt(fabs(c));
		}
		A = malloc(r * acols * sizeof(float) + 1);
		B = malloc(brows * r * sizeof(float) + 1);
		if (A == NULL || B == NULL)
			goto nomem;
		q = m->o.seed ^ hash_str(t->name);
		if ((rc = combine_tensors(m, fa, wa, k, r * acols, q,
		    A)) != 0 ||
		    (rc = combine_tensors(m, fb, wb, k, brows * r,
		    q ^ 0x5bd1e995ull, B)) != 0)
			goto nomem;
		peftio_round_through(adt, A, r * acols);
		peftio_round_through(adt, B, brows * r);
		pr->cr = r;
		break;
	}
	pr->ca = A;
	pr->cb = B;
	pr->ctrans = trans;
	A = B = NULL;
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "tensor '%s': out of memory",
	    t->name);
out:
	for (j = 0; j < k; j++) {
		free(fa[j]);
		free(fb[j]);
	}
	free(A);
	free(B);
	free(d);
	free(tmp);
	free(u);
	free(s);
	free(vt);
	return rc;
}
