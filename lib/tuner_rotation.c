/*
 * tuner_rotation.c - the rotation tuners (OFT, BOFT, HRA, and MiSS's
 * "bat" mode) as stages applied to each row of the weight, so that no
 * in x in matrix is formed; and the preparation and application of any
 * tuner's module merge over rows of the weight.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "tuners_private.h"

/* ------------------------------------------------------------------ */
/* Rotations                                                           */

static struct stage *
add_stage(struct peftio_tuner_prep *p, enum skind kind)
{
	struct stage *s = realloc(p->st, (p->nst + 1) * sizeof(*s));

	if (s == NULL)
		return NULL;
	p->st = s;
	s = &p->st[p->nst++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	return s;
}

/* x = a^-1 b for b x b matrices (row-major); 0, or -1 if singular. */
static int
solve(double *a, double *x, uint64_t b)
{
	lapack_int *piv = malloc(b * sizeof(*piv));
	int rc;

	if (piv == NULL)
		return -1;
	peftio_blas_enter();
	rc = LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)b, (lapack_int)b, a,
	    (lapack_int)b, piv, x, (lapack_int)b);
	peftio_blas_leave();
	free(piv);
	return rc == 0 ? 0 : -1;
}

static void
transpose_sq(double *a, uint64_t b)
{
	uint64_t i, j;
	double x;

	for (i = 0; i < b; i++)
		for (j = i + 1; j < b; j++) {
			x = a[i * b + j];
			a[i * b + j] = a[j * b + i];
			a[j * b + i] = x;
		}
}

/* OFT: the b x b rotation of each row of oft_R.weight. */
static int
oft_blocks(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct stage *s, struct peftio_error *err)
{
	const struct peftio_tensor_info *x = peftio_tuner_slot_info(t, m, 0);
	uint64_t b = peftio_tuner_oft_block(x->shape[1]), n = x->shape[0], blk,
	    i, j, k;
	uint64_t ne = x->shape[1];
	double *v = NULL, *q, *pw = NULL, *tmp = NULL, *a = NULL, *e = NULL;
	long term;
	int rc;

	if ((rc = peftio_tuner_load_f64(t, m->t[0], &v, err)) != 0)
		return rc;
	s->n = n;
	s->b = b;
	q = s->m = calloc(n * b * b, sizeof(double));
	pw = malloc(b * b * sizeof(double));
	tmp = malloc(b * b * sizeof(double));
	a = malloc(b * b * sizeof(double));
	e = malloc(b * b * sizeof(double));
	if (q == NULL || pw == NULL || tmp == NULL || a == NULL || e == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (blk = 0; blk < n; blk++) {
		double *vec = v + blk * ne, *r = q + blk * b * b;
		double *sk = a;

		/* coft: scale the skew matrix to norm eps / sqrt(n) at
		 * most (PEFT's _project_batch). */
		if (t->coft) {
			double nrm = 0, lim = t->eps / sqrt((double)n);

			for (k = 0; k < ne; k++)
				nrm += 2 * vec[k] * vec[k];
			nrm = sqrt(nrm);
			if (!(nrm <= lim))
				for (k = 0; k < ne; k++)
					vec[k] = lim * (vec[k] / nrm);
		}
		/* Q: the upper triangle row by row, minus its transpose */
		memset(sk, 0, b * b * sizeof(double));
		for (i = 0, k = 0; i < b; i++)
			for (j = i + 1; j < b; j++, k++) {
				sk[i * b + j] = vec[k];
				sk[j * b + i] = -vec[k];
			}
		memset(r, 0, b * b * sizeof(double));
		for (i = 0; i < b; i++)
			r[i * b + i] = 1;
		if (t->neumann) {
			/* PEFT's series: I + 2 Q + 2 Q^2 + 2 Q^3 + ... +
			 * 2 Q^(n-2) + Q^max(3, n-1) for n > 2 terms */
			if (t->nterms > 1)
				for (k = 0; k < b * b; k++)
					r[k] += 2 * sk[k];
			if (t->nterms > 2) {
				peftio_tuner_matmul(sk, sk, pw, b, b, b);
				for (k = 0; k < b * b; k++)
					r[k] += 2 * pw[k];
				for (term = 3; term < t->nterms - 1; term++) {
					peftio_tuner_matmul(pw, sk, tmp, b, b,
					    b);
					memcpy(pw, tmp, b * b * sizeof(double));
					for (k = 0; k < b * b; k++)
						r[k] += 2 * pw[k];
				}
				peftio_tuner_matmul(pw, sk, tmp, b, b, b);
				for (k = 0; k < b * b; k++)
					r[k] += tmp[k];
			}
		} else {
			/* R (I + Q) = I - Q: (I - Q) R^T = I + Q */
			for (k = 0; k < b * b; k++) {
				double id = k % (b + 1) == 0 ? 1 : 0;

				e[k] = id - sk[k];
				r[k] = id + sk[k];
			}
			if (solve(e, r, b) != 0) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': I + Q is singular",
				    t->path, x->name);
				goto out;
			}
			transpose_sq(r, b);
		}
		if (unmerge) {	/* PEFT: torch.linalg.inv */
			memcpy(e, r, b * b * sizeof(double));
			memset(r, 0, b * b * sizeof(double));
			for (i = 0; i < b; i++)
				r[i * b + i] = 1;
			if (solve(e, r, b) != 0) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: tensor '%s': the rotation is "
				    "singular: it cannot be unmerged",
				    t->path, x->name);
				goto out;
			}
		}
	}
out:
	free(v);
	free(pw);
	free(tmp);
	free(a);
	free(e);
	return rc;
}

/* BOFT's butterfly permutation of factor i (PEFT's
 * block_butterfly_perm(n, blocks / 2^i, b / 2, factors - 1)). */
static void
boft_perm(uint64_t n, uint64_t nblocks, uint64_t b, uint64_t i,
    uint64_t factors, uint64_t *perm)
{
	uint64_t bsz, r = b / 2, step, c, k, cnt, start, tt, *seq;

	for (k = 0; k < n; k++)
		perm[k] = k;
	if (factors <= 1)
		return;
	bsz = n / (nblocks >> i);
	step = bsz / r;
	if ((seq = malloc(step * sizeof(*seq))) == NULL)
		return;
	for (cnt = 0, c = 0; c < step; c += 2)
		seq[cnt++] = c;
	for (c = 1; c < step; c += 2)
		seq[cnt++] = c;
	for (start = 0; start + bsz <= n; start += bsz)
		for (k = 0; k < step; k++)
			for (tt = 0; tt < r; tt++)
				perm[start + k * r + tt] = start +
				    seq[k] * r + tt;
	free(seq);
}

static int
boft_stages(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	const struct peftio_tensor_info *x = peftio_tuner_slot_info(t, m, 0);
	uint64_t nf = x->shape[0], nblk = x->shape[1], b = x->shape[2];
	uint64_t f, blk, k, fi;
	double *v = NULL, *sv = NULL, *e = NULL, *rot = NULL;
	struct stage *s;
	int rc;

	if ((rc = peftio_tuner_load_f64(t, m->t[0], &v, err)) != 0 ||
	    (rc = peftio_tuner_load_f64(t, m->t[1], &sv, err)) != 0)
		goto out;
	if ((e = malloc(b * b * sizeof(double))) == NULL ||
	    (rot = malloc(nf * nblk * b * b * sizeof(double))) == NULL)
		goto nomem;
	/* Cayley of each block: S = (D - D^T) / 2, R = (I - S)(I + S)^-1,
	 * so (I - S) R^T = (I + S). */
	for (k = 0; k < nf * nblk; k++) {
		double *d = v + k * b * b, *r = rot + k * b * b;
		uint64_t i, j;

		for (i = 0; i < b; i++)
			for (j = 0; j < b; j++) {
				double sk = 0.5 * (d[i * b + j] - d[j * b + i]);
				double id = i == j ? 1 : 0;

				e[i * b + j] = id - sk;
				r[i * b + j] = id + sk;
			}
		if (solve(e, r, b) != 0) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': I + S is singular", t->path,
			    x->name);
			goto out;
		}
		transpose_sq(r, b);
		if (unmerge)	/* PEFT unmerges by the transpose */
			transpose_sq(r, b);
	}
	/* merge: x -> s * M_{nf-1} ... M_0 x, M_f = P_f B_f P_f^T;
	 * unmerge: x -> M_0^T ... M_{nf-1}^T x / s. */
	if (unmerge) {
		if ((s = add_stage(p, S_ROWSCALE)) == NULL)
			goto nomem;
		s->m = sv;
		sv = NULL;
		for (k = 0; k < p->rows; k++)
			s->m[k] = 1 / s->m[k];
	}
	for (fi = 0; fi < nf; fi++) {
		enum skind kinds[3] = { S_SCATTER, S_BLOCKS, S_GATHER };

		f = unmerge ? nf - 1 - fi : fi;
		for (k = 0; k < 3; k++) {
			if ((s = add_stage(p, kinds[k])) == NULL)
				goto nomem;
			if (kinds[k] == S_BLOCKS) {
				s->n = nblk;
				s->b = b;
				if ((s->m = malloc(nblk * b * b *
				    sizeof(double))) == NULL)
					goto nomem;
				for (blk = 0; blk < nblk * b * b; blk++)
					s->m[blk] = rot[f * nblk * b * b +
					    blk];
				continue;
			}
			if ((s->perm = malloc(p->cols * sizeof(uint64_t))) ==
			    NULL)
				goto nomem;
			boft_perm(p->cols, nblk, b, f, nf, s->perm);
		}
	}
	if (!unmerge) {
		if ((s = add_stage(p, S_ROWSCALE)) == NULL)
			goto nomem;
		s->m = sv;
		sv = NULL;
	}
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
out:
	free(v);
	free(sv);
	free(e);
	free(rot);
	return rc;
}

/* MiSS "bat": W' = W + W_blk B_a + B_a for each r x r block of row
 * block a; unmerged by W = (W' - B_a) (I + B_a)^-1. */
static int
bat_stage(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	uint64_t r = m->r, nb = m->out / r, a, i, k;
	double *v = NULL, *e;
	struct stage *s;
	int rc;

	if ((rc = peftio_tuner_load_f64(t, m->t[0], &v, err)) != 0)
		return rc;
	if ((s = add_stage(p, S_BAT)) == NULL ||
	    (s->m = malloc(2 * nb * r * r * sizeof(double))) == NULL ||
	    (e = malloc(r * r * sizeof(double))) == NULL) {
		free(v);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	s->n = nb;
	s->b = r;
	s->reverse = unmerge;
	memcpy(s->m, v, nb * r * r * sizeof(double));
	for (a = 0; unmerge && a < nb; a++) {
		double *inv = s->m + (nb + a) * r * r;

		for (k = 0; k < r * r; k++)
			e[k] = v[a * r * r + k] + (k % (r + 1) == 0 ? 1 : 0);
		memset(inv, 0, r * r * sizeof(double));
		for (i = 0; i < r; i++)
			inv[i * r + i] = 1;
		if (solve(e, inv, r) != 0) {
			free(e);
			free(v);
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': I + block is singular: it "
			    "cannot be unmerged", t->path,
			    peftio_tuner_tinfo(t, m->t[0])->name);
		}
	}
	free(e);
	free(v);
	return 0;
}

/* HRA: normalized columns of hra_u, or Gram-Schmidt with apply_GS. */
static int
hra_stages(const struct peftio_tuner *t, const struct tmod *m, int unmerge,
    struct peftio_tuner_prep *p, struct peftio_error *err)
{
	uint64_t n = m->in, r = m->r, i, j, k;
	double *u = NULL, *w;
	struct stage *s;
	int rc;

	if ((rc = peftio_tuner_load_f64(t, m->t[0], &u, err)) != 0)
		return rc;
	if ((s = add_stage(p, t->apply_gs ? S_GS : S_HOUSE)) == NULL ||
	    (w = s->m = malloc(r * n * sizeof(double))) == NULL) {
		free(u);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	s->n = r;
	s->reverse = unmerge && !t->apply_gs;
	/* w holds the vectors as rows: w[k, :] = u[:, k] */
	for (k = 0; k < r; k++)
		for (i = 0; i < n; i++)
			w[k * n + i] = u[i * r + k];
	for (k = 0; k < r; k++) {
		double nrm = 0;

		if (t->apply_gs)
			for (j = 0; j < k; j++) {
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += w[j * n + i] * w[k * n + i];
				for (i = 0; i < n; i++)
					w[k * n + i] -= dot * w[j * n + i];
			}
		for (i = 0; i < n; i++)
			nrm += w[k * n + i] * w[k * n + i];
		nrm = sqrt(nrm);
		for (i = 0; i < n; i++)
			w[k * n + i] /= nrm;
	}
	free(u);
	return 0;
}

static void
apply_stages(const struct peftio_tuner_prep *p, double *x, double *y,
    uint64_t row)
{
	uint64_t n = p->cols, i, j, k, blk;
	size_t si;

	for (si = 0; si < p->nst; si++) {
		const struct stage *s = &p->st[si];

		switch (s->kind) {
		case S_BLOCKS:
			for (blk = 0; blk < n / s->b; blk++) {
				const double *r = s->m + (s->n == 1 ? 0 :
				    blk) * s->b * s->b;
				const double *xb = x + blk * s->b;

				for (i = 0; i < s->b; i++) {
					double a = 0;

					for (j = 0; j < s->b; j++)
						a += r[i * s->b + j] * xb[j];
					y[blk * s->b + i] = a;
				}
			}
			memcpy(x, y, n * sizeof(double));
			break;
		case S_GATHER:	/* (P x)[i] = x[perm[i]] */
			for (i = 0; i < n; i++)
				y[i] = x[s->perm[i]];
			memcpy(x, y, n * sizeof(double));
			break;
		case S_SCATTER:	/* (P^T x)[perm[i]] = x[i] */
			for (i = 0; i < n; i++)
				y[s->perm[i]] = x[i];
			memcpy(x, y, n * sizeof(double));
			break;
		case S_HOUSE:	/* x <- x - 2 (x . u) u, in order */
			for (k = 0; k < s->n; k++) {
				const double *u = s->m + (s->reverse ?
				    s->n - 1 - k : k) * n;
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += x[i] * u[i];
				for (i = 0; i < n; i++)
					x[i] -= 2 * dot * u[i];
			}
			break;
		case S_GS:	/* x <- x - 2 U U^T x */
			memset(y, 0, n * sizeof(double));
			for (k = 0; k < s->n; k++) {
				const double *u = s->m + k * n;
				double dot = 0;

				for (i = 0; i < n; i++)
					dot += x[i] * u[i];
				for (i = 0; i < n; i++)
					y[i] += dot * u[i];
			}
			for (i = 0; i < n; i++)
				x[i] -= 2 * y[i];
			break;
		case S_ROWSCALE:
			for (i = 0; i < n; i++)
				x[i] *= s->m[row];
			break;
		case S_BAT: {
			uint64_t b = s->b, a = row / b, ri = row % b;
			const double *bm = s->m + a * b * b;
			const double *inv = s->m + (s->n + a) * b * b;

			for (blk = 0; blk < n / b; blk++) {
				const double *xb = x + blk * b;

				for (j = 0; j < b; j++) {
					double acc = 0;

					if (s->reverse) {
						for (k = 0; k < b; k++)
							acc += (xb[k] -
							    bm[ri * b + k]) *
							    inv[k * b + j];
					} else {
						for (k = 0; k < b; k++)
							acc += xb[k] *
							    bm[k * b + j];
						acc += xb[j] + bm[ri * b + j];
					}
					y[blk * b + j] = acc;
				}
			}
			memcpy(x, y, n * sizeof(double));
			break;
		}
		}
	}
}

/* ------------------------------------------------------------------ */
/* Preparing and applying a module's merge                             */

void
peftio_tuner_prep_free(struct peftio_tuner_prep *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nst; i++) {
		free(p->st[i].m);
		free(p->st[i].perm);
	}
	free(p->st);
	free(p->d);
	free(p->x);
	free(p->y);
	free(p);
}

int
peftio_tuner_prepare(const struct peftio_tuner *t, size_t i, uint64_t rows,
    uint64_t cols, int unmerge, struct peftio_tuner_prep **out,
    struct peftio_error *err)
{
	const struct tmod *m = &t->mods[i];
	struct peftio_tuner_prep *p;
	struct stage *s;
	enum peftio_dtype adt;
	double *d = NULL;
	uint64_t n = rows * cols, r, c;
	int rc = 0;

	*out = NULL;
	if ((rc = peftio_blas_ready(err)) != 0)
		return rc;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	p->rows = rows;
	p->cols = cols;
	p->unmerge = unmerge;
	if (peftio_tuner_descs[t->type].rotation ||
	    (t->type == T_MISS && t->bat)) {
		if ((p->x = malloc(cols * sizeof(double))) == NULL ||
		    (p->y = malloc(cols * sizeof(double))) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto out;
		}
		switch (t->type) {
		case T_OFT:
			if ((s = add_stage(p, S_BLOCKS)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
				goto out;
			}
			rc = oft_blocks(t, m, unmerge, s, err);
			break;
		case T_BOFT:
			rc = boft_stages(t, m, unmerge, p, err);
			break;
		case T_MISS:
			rc = bat_stage(t, m, unmerge, p, err);
			break;
		default:
			rc = hra_stages(t, m, unmerge, p, err);
			break;
		}
		goto out;
	}
	if ((d = malloc((n ? n : 1) * sizeof(double))) == NULL ||
	    (p->d = malloc((n ? n : 1) * sizeof(float))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: module '%s': "
		    "out of memory", t->path, m->name);
		goto out;
	}
	if ((rc = peftio_tuner_delta(t, m, d, err)) != 0)
		goto out;
	/* PEFT: transpose(delta, fan_in_fan_out), in float32, or in the
	 * adapter's dtype when that is 16-bit */
	for (r = 0; r < m->out; r++)
		for (c = 0; c < m->in; c++)
			p->d[t->fifo ? c * m->out + r : r * m->in + c] =
			    (float)d[r * m->in + c];
	adt = peftio_tuner_tinfo(t, m->t[0] >= 0 ? m->t[0] : m->t[1])->dtype;
	if (adt == PEFTIO_F16 || adt == PEFTIO_BF16)
		for (r = 0; r < n; r++) {
			uint16_t h;

			peftio_from_f32(adt, &p->d[r], &h, 1);
			peftio_to_f32(adt, &h, &p->d[r], 1);
		}
out:
	free(d);
	if (rc != 0) {
		peftio_tuner_prep_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void
peftio_tuner_rows(struct peftio_tuner_prep *p, float *w, uint64_t row0,
    uint64_t nrows)
{
	uint64_t i, j, n = nrows * p->cols;

	if (p->d != NULL) {
		const float *d = p->d + row0 * p->cols;

		if (p->unmerge)
			for (i = 0; i < n; i++)
				w[i] -= d[i];
		else
			for (i = 0; i < n; i++)
				w[i] += d[i];
		return;
	}
	for (i = 0; i < nrows; i++) {
		float *row = w + i * p->cols;

		for (j = 0; j < p->cols; j++)
			p->x[j] = row[j];
		apply_stages(p, p->x, p->y, row0 + i);
		for (j = 0; j < p->cols; j++)
			row[j] = (float)p->x[j];
	}
}
