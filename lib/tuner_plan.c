/*
 * tuner_plan.c - PEFT's other tuners against the base model: each
 * module's shapes checked against its base tensor, whether a merge can
 * be undone, and the trainable parameters of a tuner for a layer.
 */
#include <stdlib.h>
#include <string.h>

#include "tuners_private.h"

/* ------------------------------------------------------------------ */
/* The plan: the module against its base tensor                        */

/* a b == want, without overflow. */
static int
mul_is(uint64_t a, uint64_t b, uint64_t want)
{
	uint64_t p;

	return !PEFTIO_MUL_OVERFLOW(a, b, &p) && p == want;
}

static int
fit_err(const struct peftio_tuner *t, const struct tmod *m, int slot,
    struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_EMISMATCH,
	    "%s: tensor '%s' does not fit base tensor '%s' [%llu, %llu]",
	    t->path, peftio_tuner_tname(t, m, slot), m->target,
	    (unsigned long long)(t->fifo ? m->in : m->out),
	    (unsigned long long)(t->fifo ? m->out : m->in));
}

int
peftio_tuner_check(struct peftio_tuner *t, size_t i, int ndim,
    const uint64_t *shape, struct peftio_error *err)
{
	struct tmod *m = &t->mods[i];
	const struct peftio_tensor_info *x, *y;
	uint64_t a, b, nb;

	int conv = t->type == T_LOHA || t->type == T_LOKR ||
	    t->type == T_OFT || t->type == T_HRA, d;

	if (ndim != 2 && !(conv && (ndim == 3 || ndim == 4)))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: module '%s': base tensor '%s' is %d-D; only Linear "
		    "(2-D) weights%s are supported for %s", t->path, m->name,
		    m->target, ndim, conv ? " and convolutions" : "",
		    peftio_tuner_descs[t->type].type);
	m->out = t->fifo ? shape[1] : shape[0];
	m->in = t->fifo ? shape[0] : shape[1];
	m->inch = m->in;
	m->kk = 1;
	for (d = 2; d < ndim; d++)
		if (PEFTIO_MUL_OVERFLOW(m->kk, shape[d], &m->kk) ||
		    PEFTIO_MUL_OVERFLOW(m->in, shape[d], &m->in))
			return fit_err(t, m, 0, err);
	switch (t->type) {
	case T_ADALORA:
		if (peftio_tuner_slot_info(t, m, 0)->shape[1] != m->in)
			return fit_err(t, m, 0, err);
		if (peftio_tuner_slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_LOHA:
		if (m->t[4] >= 0) {	/* a [r, out], b [r, in], t's kernel */
			x = peftio_tuner_slot_info(t, m, 4);
			if (peftio_tuner_slot_info(t, m, 0)->shape[1] != m->out)
				return fit_err(t, m, 0, err);
			if (peftio_tuner_slot_info(t, m,
			    1)->shape[1] != m->inch)
				return fit_err(t, m, 1, err);
			if (!mul_is(x->shape[2], x->shape[3], m->kk))
				return fit_err(t, m, 4, err);
			return 0;
		}
		if (peftio_tuner_slot_info(t, m, 0)->shape[0] != m->out)
			return fit_err(t, m, 0, err);
		if (peftio_tuner_slot_info(t, m, 1)->shape[1] != m->in)
			return fit_err(t, m, 1, err);
		return 0;
	case T_LOKR:
		/* w1 [a, c], w2 [b, d]: out = a b, in = c d */
		x = peftio_tuner_slot_info(t, m, m->t[0] >= 0 ? 0 : 1);
		a = x->shape[0];
		x = peftio_tuner_slot_info(t, m, m->t[0] >= 0 ? 0 : 2);
		b = x->shape[1];
		if (m->t[6] >= 0) {	/* t2 [r, r, kh, kw] */
			x = peftio_tuner_slot_info(t, m, 6);
			if (!mul_is(a, peftio_tuner_slot_info(t, m,
			    4)->shape[1], m->out))
				return fit_err(t, m, 4, err);
			if (!mul_is(x->shape[2], x->shape[3], m->kk) ||
			    !mul_is(b, peftio_tuner_slot_info(t, m,
			    5)->shape[1], m->inch))
				return fit_err(t, m, 6, err);
			return 0;
		}
		y = peftio_tuner_slot_info(t, m, m->t[3] >= 0 ? 3 : 4);
		if (!mul_is(a, y->shape[0], m->out))
			return fit_err(t, m, m->t[3] >= 0 ? 3 : 4, err);
		y = peftio_tuner_slot_info(t, m, m->t[3] >= 0 ? 3 : 5);
		if (!mul_is(b, y->numel / y->shape[0], m->in))
			return fit_err(t, m, m->t[3] >= 0 ? 3 : 5, err);
		return 0;
	case T_VERA:
		if (peftio_tuner_slot_info(t, m, 0)->shape[0] != m->out)
			return fit_err(t, m, 0, err);
		if (peftio_tuner_slot_info(t, m, 2)->shape[1] < m->in)
			return fit_err(t, m, 2, err);
		if (peftio_tuner_slot_info(t, m, 3)->shape[0] < m->out)
			return fit_err(t, m, 3, err);
		return 0;
	case T_OFT:
		x = peftio_tuner_slot_info(t, m, 0);
		b = peftio_tuner_oft_block(x->shape[1]);
		if (m->in % b != 0 || (!t->block_share &&
		    !mul_is(x->shape[0], b, m->in)))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': %llu blocks of %llu do not "
			    "cover the %llu inputs of '%s'", t->path, x->name,
			    (unsigned long long)x->shape[0],
			    (unsigned long long)b, (unsigned long long)m->in,
			    m->target);
		return 0;
	case T_BOFT:
		x = peftio_tuner_slot_info(t, m, 0);
		if (!mul_is(x->shape[1], x->shape[2], m->in))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': %llu blocks of %llu do not "
			    "cover the %llu inputs of '%s'", t->path, x->name,
			    (unsigned long long)x->shape[1],
			    (unsigned long long)x->shape[2],
			    (unsigned long long)m->in, m->target);
		if (peftio_tuner_slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_HRA:
		if (peftio_tuner_slot_info(t, m, 0)->shape[0] != m->in)
			return fit_err(t, m, 0, err);
		return 0;
	case T_MISS:
		x = peftio_tuner_slot_info(t, m, 0);
		if (t->bat)
			return m->out % m->r != 0 || m->in % m->r != 0 ||
			    !mul_is(x->shape[0], m->r, m->out) ?
			    fit_err(t, m, 0, err) : 0;
		if (t->mini ? m->out % t->mini_r != 0 : x->shape[1] != m->out)
			return fit_err(t, m, 0, err);
		return 0;
	case T_VBLORA:
		x = peftio_tuner_slot_info(t, m, 0);
		y = peftio_tuner_slot_info(t, m, 1);
		nb = peftio_tuner_slot_info(t, m, 2)->shape[1];	/* vector length */
		if (!mul_is(x->shape[1], nb, m->in))
			return fit_err(t, m, 0, err);
		if (!mul_is(y->shape[0], nb, m->out))
			return fit_err(t, m, 1, err);
		return 0;
	case T_RANDLORA:
		a = PEFTIO_MIN(m->in, m->out);
		b = PEFTIO_MAX(m->in, m->out);
		x = peftio_tuner_slot_info(t, m, 0);
		nb = (a + m->r - 1) / m->r;
		if (x->shape[1] != nb)
			return fit_err(t, m, 0, err);
		if (peftio_tuner_slot_info(t, m, 1)->shape[1] != a)
			return fit_err(t, m, 1, err);
		if (peftio_tuner_slot_info(t, m, 2)->shape[2] < a)
			return fit_err(t, m, 2, err);
		if (peftio_tuner_slot_info(t, m, 3)->shape[0] < b)
			return fit_err(t, m, 3, err);
		return 0;
	case T_SHIRA:
		return 0;	/* indices are checked when loaded */
	case T_C3A:
		x = peftio_tuner_slot_info(t, m, 0);
		if (!mul_is(x->shape[0], x->shape[2], m->out) ||
		    !mul_is(x->shape[1], x->shape[2], m->in))
			return peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: tensor '%s': blocks of %llu do not tile "
			    "base tensor '%s' [%llu, %llu]", t->path, x->name,
			    (unsigned long long)x->shape[2], m->target,
			    (unsigned long long)m->out,
			    (unsigned long long)m->in);
		return 0;
	case T_DELORA:
		if (peftio_tuner_slot_info(t, m, 0)->shape[1] != m->in)
			return fit_err(t, m, 0, err);
		if (peftio_tuner_slot_info(t, m, 1)->shape[0] != m->out)
			return fit_err(t, m, 1, err);
		return 0;
	case T_NTYPES:
		break;
	}
	return 0;
}

int
peftio_tuner_invertible(const struct peftio_tuner *t)
{
	(void)t;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Trainable parameters (dq-inspect --plan)                            */

/* LyCORIS's factorization of a dimension with decompose_factor -1:
 * m <= n, m n = dim, m + n smallest. */
static void
factorization(uint64_t dim, uint64_t *m, uint64_t *n)
{
	uint64_t a = 1, b = dim, na, nb;

	while (a < b) {
		for (na = a + 1; dim % na != 0; na++)
			;
		nb = dim / na;
		if (na + nb > 1 + dim)
			break;
		a = na;
		b = nb;
	}
	*m = PEFTIO_MIN(a, b);
	*n = PEFTIO_MAX(a, b);
}

int
peftio_tuner_plan_params(const char *method, uint64_t out, uint64_t in,
    uint64_t r, uint64_t *n)
{
	uint64_t x, y, ol, ok, im, inn;
	int bad = 0;

	*n = 0;
	bad |= PEFTIO_ADD_OVERFLOW(out, in, &x);
	if (strcmp(method, "loha") == 0) {	/* w1a, w1b, w2a, w2b */
		bad |= PEFTIO_MUL_OVERFLOW(x, 2 * r, n);
	} else if (strcmp(method, "lokr") == 0) {
		/* w1 [out_l, in_m] full; w2 full when r >= max / 2, else
		 * a pair of rank r */
		factorization(out, &ol, &ok);
		factorization(in, &im, &inn);
		bad |= PEFTIO_MUL_OVERFLOW(ol, im, &x);
		if (2 * r >= PEFTIO_MAX(ok, inn))
			bad |= PEFTIO_MUL_OVERFLOW(ok, inn, &y);
		else
			bad |= PEFTIO_MUL_OVERFLOW(ok + inn, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(x, y, n);
	} else if (strcmp(method, "adalora") == 0) {	/* A, B, E */
		bad |= PEFTIO_ADD_OVERFLOW(x, 1, &x);
		bad |= PEFTIO_MUL_OVERFLOW(x, r, n);
	} else if (strcmp(method, "vera") == 0) {	/* lambda_b, lambda_d */
		bad |= PEFTIO_ADD_OVERFLOW(out, r, n);
	} else if (strcmp(method, "hra") == 0) {	/* u [in, r] */
		bad |= PEFTIO_MUL_OVERFLOW(in, r, n);
	} else if (strcmp(method, "miss") == 0) {	/* block [r, out] */
		bad |= PEFTIO_MUL_OVERFLOW(out, r, n);
	} else if (strcmp(method, "delora") == 0) {	/* A, B, lambda */
		bad |= PEFTIO_MUL_OVERFLOW(x, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(y, 1, n);
	} else
		return PEFTIO_EINVAL;
	return bad ? PEFTIO_EFORMAT : 0;
}
