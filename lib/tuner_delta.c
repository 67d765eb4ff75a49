/*
 * tuner_delta.c - the additive tuners' deltas, in double precision:
 * AdaLoRA, LoHa, LoKr, VeRA, RandLoRA, VB-LoRA, SHiRA, C3A, DeLoRA and
 * MiSS, each the weight change PEFT's get_delta_weight computes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "tuners_private.h"

/* ------------------------------------------------------------------ */
/* Deltas                                                              */

/* c[m, n] = a[m, k] b[k, n], row-major, in double. */
void
peftio_tuner_matmul(const double *a, const double *b, double *c, uint64_t m,
    uint64_t k, uint64_t n)
{
	if (m == 0 || n == 0)
		return;
	if (k == 0) {
		memset(c, 0, m * n * sizeof(double));
		return;
	}
	peftio_blas_enter();
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n,
	    (int)k, 1.0, a, (int)k, b, (int)n, 0.0, c, (int)n);
	peftio_blas_leave();
}

/*
 * LyCORIS's CP rebuild, einsum("i j k l, i p, j r -> p r k l", t, a, b):
 * t [r1, r2, kk], a [r1, np], b [r2, nq] give out [np, nq kk].
 */
static int
cp_rebuild(const double *t, const double *a, const double *b, uint64_t r1,
    uint64_t r2, uint64_t kk, uint64_t np, uint64_t nq, double *out)
{
	double *at, *tk, *tmp, *o;
	uint64_t i, j, k, q;
	int rc = 0;

	at = malloc(np * r1 * sizeof(double));
	tk = malloc(r1 * r2 * sizeof(double));
	tmp = malloc(r1 * nq * sizeof(double));
	o = malloc(np * nq * sizeof(double));
	if (at == NULL || tk == NULL || tmp == NULL || o == NULL) {
		rc = PEFTIO_ENOMEM;
		goto out;
	}
	for (i = 0; i < r1; i++)
		for (j = 0; j < np; j++)
			at[j * r1 + i] = a[i * np + j];
	for (k = 0; k < kk; k++) {
		for (i = 0; i < r1; i++)
			for (j = 0; j < r2; j++)
				tk[i * r2 + j] = t[(i * r2 + j) * kk + k];
		peftio_tuner_matmul(tk, b, tmp, r1, r2, nq);
		peftio_tuner_matmul(at, tmp, o, np, r1, nq);
		for (i = 0; i < np; i++)
			for (q = 0; q < nq; q++)
				out[(i * nq + q) * kk + k] = o[i * nq + q];
	}
out:
	free(at);
	free(tk);
	free(tmp);
	free(o);
	return rc;
}

/* Load up to 4 slots; the pointers of absent ones stay NULL. */
static int
load_slots(const struct peftio_tuner *t, const struct tmod *m, double **v,
    int n, struct peftio_error *err)
{
	int s, rc;

	for (s = 0; s < n; s++) {
		v[s] = NULL;
		if (m->t[s] >= 0 && peftio_dtype_is_float(peftio_tuner_tinfo(t,
		    m->t[s])->dtype) && (rc = peftio_tuner_load_f64(t, m->t[s],
		    &v[s], err)) != 0)
			return rc;
	}
	return 0;
}

static void
free_slots(double **v, int n)
{
	int s;

	for (s = 0; s < n; s++)
		free(v[s]);
}

/* A [r, L] matrix of VB-LoRA: softmax over the top-k logits of each
 * [nv] row, mixing the bank's [nv, L] vectors.  logits [g, nv] -> out
 * [g, L]. */
static int
vb_mix(const double *logits, uint64_t g, const double *bank, uint64_t nv,
    uint64_t len, uint64_t topk, double *out)
{
	uint64_t i, j, k, *idx;
	double *w, mx, sum;

	idx = malloc(topk * sizeof(*idx));
	w = malloc(topk * sizeof(*w));
	if (idx == NULL || w == NULL) {
		free(idx);
		free(w);
		return PEFTIO_ENOMEM;
	}
	for (i = 0; i < g; i++) {
		const double *l = logits + i * nv;

		/* top-k, largest first, lower index first among equals */
		for (k = 0; k < topk; k++) {
			uint64_t best = nv;

			for (j = 0; j < nv; j++) {
				uint64_t q;
				int used = 0;

				for (q = 0; q < k; q++)
					used |= idx[q] == j;
				if (!used && (best == nv || l[j] > l[best]))
					best = j;
			}
			idx[k] = best;
		}
		mx = l[idx[0]];
		for (sum = 0, k = 0; k < topk; k++)
			sum += (w[k] = exp(l[idx[k]] - mx));
		for (j = 0; j < len; j++) {
			double s = 0;

			for (k = 0; k < topk; k++)
				s += w[k] / sum * bank[idx[k] * len + j];
			out[i * len + j] = s;
		}
	}
	free(idx);
	free(w);
	return 0;
}

/* The delta [out, in] of module m, in double. */
int
peftio_tuner_delta(const struct peftio_tuner *t, const struct tmod *m,
    double *d, struct peftio_error *err)
{
	const struct peftio_tensor_info *x, *y;
	uint64_t out = m->out, in = m->in, r = m->r, i, j, k, a, b, c, e;
	double *v[MAX_SLOTS] = { NULL }, *p = NULL, *q = NULL;
	int rc;

	if ((rc = load_slots(t, m, v, MAX_SLOTS, err)) != 0)
		goto out;
	switch (t->type) {
	case T_ADALORA:	/* B (A * E) * scaling / ranknum */
		for (k = 0; k < r; k++)
			for (j = 0; j < in; j++)
				v[0][k * in + j] *= v[2][k];
		peftio_tuner_matmul(v[1], v[0], d, out, r, in);
		for (i = 0; i < out * in; i++)
			d[i] *= m->scale;
		break;
	case T_LOHA:	/* (w1a w1b) * (w2a w2b) * alpha / r */
		if ((p = malloc(out * in * sizeof(double))) == NULL)
			goto nomem;
		if (m->t[4] >= 0) {	/* cp(t1, w1a, w1b) * cp(t2, ...) */
			if (cp_rebuild(v[4], v[0], v[1], r, r, m->kk, out,
			    m->inch, d) != 0 || cp_rebuild(v[5], v[2], v[3],
			    r, r, m->kk, out, m->inch, p) != 0)
				goto nomem;
		} else {
			peftio_tuner_matmul(v[0], v[1], d, out, r, in);
			peftio_tuner_matmul(v[2], v[3], p, out, r, in);
		}
		for (i = 0; i < out * in; i++)
			d[i] = d[i] * p[i] * m->scale;
		break;
	case T_LOKR:	/* kron(w1, w2) * alpha / r */
		x = peftio_tuner_slot_info(t, m, m->t[0] >= 0 ? 0 : 1);
		a = x->shape[0];
		c = out / a;
		b = in / (m->t[0] >= 0 ? x->shape[1] :
		    peftio_tuner_slot_info(t, m, 2)->shape[1]);
		e = in / b;	/* w1 is [a, e], w2 [c, b] */
		if ((p = malloc(a * e * sizeof(double))) == NULL ||
		    (q = malloc(c * b * sizeof(double))) == NULL)
			goto nomem;
		if (m->t[0] >= 0)
			memcpy(p, v[0], a * e * sizeof(double));
		else
			peftio_tuner_matmul(v[1], v[2], p, a, r, e);
		if (m->t[3] >= 0)
			memcpy(q, v[3], c * b * sizeof(double));
		else if (m->t[6] >= 0) {
			if (cp_rebuild(v[6], v[4], v[5], r, r, m->kk, c,
			    b / m->kk, q) != 0)
				goto nomem;
		} else
			peftio_tuner_matmul(v[4], v[5], q, c, r, b);
		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] = p[(i / c) * e + j / b] *
				    q[(i % c) * b + j % b] * m->scale;
		break;
	case T_VERA:	/* (lambda_b B[:out]) (lambda_d A[:, :in]) */
		x = peftio_tuner_slot_info(t, m, 2);
		y = peftio_tuner_slot_info(t, m, 3);
		if ((p = malloc(out * r * sizeof(double))) == NULL ||
		    (q = malloc(r * in * sizeof(double))) == NULL)
			goto nomem;
		for (i = 0; i < out; i++)
			for (k = 0; k < r; k++)
				p[i * r + k] = v[0][i] * v[3][i * y->shape[1] + k];
		for (k = 0; k < r; k++)
			for (j = 0; j < in; j++)
				q[k * in + j] = v[1][k] * v[2][k * x->shape[1] + j];
		peftio_tuner_matmul(p, q, d, out, r, in);
		break;
	case T_RANDLORA: {
		/* B' [max, nb r] with column b r + i = B[:, b, i]; A'
		 * [r nb, min] with row i nb + b = lambda[i, b] A[i, b or 0,
		 * :] gamma[b, :]; M = B' A' [max, min]; the delta is M or
		 * its transpose, times randlora_alpha / r. */
		uint64_t mn = PEFTIO_MIN(in, out), mx = PEFTIO_MAX(in, out);
		uint64_t nb = peftio_tuner_slot_info(t, m, 0)->shape[1], kk, nk;
		const struct peftio_tensor_info *ta = peftio_tuner_slot_info(t,
		    m, 2);
		const struct peftio_tensor_info *tb = peftio_tuner_slot_info(t,
		    m, 3);
		double *mm;

		nk = nb * r;
		if ((p = malloc(mx * nk * sizeof(double))) == NULL ||
		    (q = malloc(nk * mn * sizeof(double))) == NULL)
			goto nomem;
		for (i = 0; i < mx; i++)
			for (kk = 0; kk < nk; kk++)
				p[i * nk + kk] = v[3][(i * tb->shape[1] +
				    kk / r) * tb->shape[2] + kk % r];
		for (kk = 0; kk < nk; kk++) {
			uint64_t ia = kk / nb, ba = kk % nb;
			const double *arow = v[2] + (ia * ta->shape[1] +
			    (ta->shape[1] == 1 ? 0 : ba)) * ta->shape[2];

			for (j = 0; j < mn; j++)
				q[kk * mn + j] = v[0][ia * nb + ba] * arow[j] *
				    v[1][ba * mn + j];
		}
		if (mn == in) {
			peftio_tuner_matmul(p, q, d, mx, nk, in);
			for (i = 0; i < out * in; i++)
				d[i] *= m->scale;
			break;
		}
		if ((mm = malloc(mx * mn * sizeof(double))) == NULL)
			goto nomem;
		peftio_tuner_matmul(p, q, mm, mx, nk, mn);
		for (i = 0; i < mx; i++)	/* M [in, out] */
			for (j = 0; j < mn; j++)
				d[j * in + i] = mm[i * mn + j] * m->scale;
		free(mm);
		break;
	}
	case T_VBLORA: {
		uint64_t len = peftio_tuner_slot_info(t, m, 2)->shape[1];
		uint64_t nv = peftio_tuner_slot_info(t, m, 2)->shape[0];
		uint64_t ti_ = in / len, to = out / len;

		/* A [r, in]: rows of logits_A [r, ti, nv] mixed */
		if ((p = malloc(r * in * sizeof(double))) == NULL ||
		    (q = malloc(to * r * len * sizeof(double))) == NULL)
			goto nomem;
		if (vb_mix(v[0], r * ti_, v[2], nv, len, t->topk, p) != 0 ||
		    vb_mix(v[1], to * r, v[2], nv, len, t->topk, q) != 0)
			goto nomem;
		/* B [out, r]: B[t L + l, k] = q[(t r + k) L + l] */
		{
			double *bm = malloc(out * r * sizeof(double));

			if (bm == NULL)
				goto nomem;
			for (i = 0; i < out; i++)
				for (k = 0; k < r; k++)
					bm[i * r + k] = q[((i / len) * r + k) *
					    len + i % len];
			peftio_tuner_matmul(bm, p, d, out, r, in);
			free(bm);
		}
		break;
	}
	case T_SHIRA: {
		const struct peftio_tensor_info *ix = peftio_tuner_slot_info(t,
		    m, 1);
		const void *data;
		uint64_t n = peftio_tuner_slot_info(t, m, 0)->shape[0];

		if ((rc = peftio_ckpt_data(t->ck, (size_t)m->t[1], &data,
		    err)) != 0)
			goto out;
		memset(d, 0, out * in * sizeof(double));
		for (k = 0; k < n; k++) {
			int64_t ri, ci;

			if (ix->dtype == PEFTIO_I32) {
				int32_t u[2];

				memcpy(&u[0], (const char *)data + 4 * k, 4);
				memcpy(&u[1], (const char *)data + 4 * (n + k),
				    4);
				ri = u[0];
				ci = u[1];
			} else {
				memcpy(&ri, (const char *)data + 8 * k, 8);
				memcpy(&ci, (const char *)data + 8 * (n + k),
				    8);
			}
			if (ri < 0 || ci < 0 || (uint64_t)ri >= out ||
			    (uint64_t)ci >= in) {
				rc = peftio_error_set(err, PEFTIO_EMISMATCH,
				    "%s: tensor '%s': index (%lld, %lld) is "
				    "outside base tensor '%s' [%llu, %llu]",
				    t->path, ix->name, (long long)ri,
				    (long long)ci, m->target,
				    (unsigned long long)out,
				    (unsigned long long)in);
				goto out;
			}
			d[(uint64_t)ri * in + (uint64_t)ci] += v[0][k];
		}
		break;
	}
	case T_C3A: {	/* block circulant: w[m, n, (t - l) mod b] / in */
		uint64_t bs = peftio_tuner_slot_info(t, m, 0)->shape[2];
		uint64_t nn = in / bs;

		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++) {
				uint64_t l = i % bs, tt = j % bs;

				d[i * in + j] = v[0][((i / bs) * nn + j / bs) *
				    bs + (tt + bs - l) % bs] / (double)in;
			}
		break;
	}
	case T_DELORA: {
		/* B diag(lambda / r / (|A_k| |B_:k|)) A * w_norm[None] */
		double *dg;

		if ((dg = malloc(r * sizeof(double))) == NULL)
			goto nomem;
		for (k = 0; k < r; k++) {
			double an = 0, bn = 0;

			for (j = 0; j < in; j++)
				an += v[0][k * in + j] * v[0][k * in + j];
			for (i = 0; i < out; i++)
				bn += v[1][i * r + k] * v[1][i * r + k];
			an = PEFTIO_MAX(sqrt(an), 1e-12);
			bn = PEFTIO_MAX(sqrt(bn), 1e-12);
			dg[k] = v[2][0] / (double)r / (an * bn);
		}
		for (i = 0; i < out; i++)
			for (k = 0; k < r; k++)
				v[1][i * r + k] *= dg[k];
		peftio_tuner_matmul(v[1], v[0], d, out, r, in);
		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] *= v[3][j];
		free(dg);
		break;
	}
	case T_MISS: {	/* W[o, k] += block[k mod r, o (mod mini_r)] */
		uint64_t w = peftio_tuner_slot_info(t, m, 0)->shape[1];

		for (i = 0; i < out; i++)
			for (j = 0; j < in; j++)
				d[i * in + j] = v[0][(j % r) * w +
				    (t->mini ? i % t->mini_r : i)];
		break;
	}
	default:
		break;
	}
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: module '%s': out of "
	    "memory", t->path, m->name);
out:
	free_slots(v, MAX_SLOTS);
	free(p);
	free(q);
	return rc;
}
