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

/*
 * LyCORIS's factorization of dim as PEFT's factorization() makes it:
 * with a factor f > 0 that divides dim, f and dim / f in that order
 * (PEFT's copy does not sort them); else the pair m <= n, m n = dim,
 * found by growing m while m + n shrinks and m stays at most f (f < 0:
 * dim).
 */
static void
factorization(uint64_t dim, long long f, uint64_t *m, uint64_t *n)
{
	uint64_t a = 1, b = dim, na, nb, lim;

	if (f > 0 && dim % (uint64_t)f == 0) {
		*m = (uint64_t)f;
		*n = dim / *m;
		return;
	} else {
		lim = f < 0 ? dim : (uint64_t)f;
		while (a < b) {
			for (na = a + 1; dim % na != 0; na++)
				;
			nb = dim / na;
			if (na + nb > 1 + dim || na > lim)
				break;
			a = na;
			b = nb;
		}
	}
	*m = PEFTIO_MIN(a, b);
	*n = PEFTIO_MAX(a, b);
}

/* PEFT's OFT adjust_oft_parameters(): the divisor of in nearest p (the
 * lower one on a tie), in itself when p >= in. */
static uint64_t
oft_adjust(uint64_t in, uint64_t p)
{
	uint64_t hi = p, lo = p;

	if (p >= in)
		return in;
	while (hi <= in && in % hi != 0)
		hi++;
	while (lo > 1 && in % lo != 0)
		lo--;
	return p - lo <= hi - p ? lo : hi;
}

/* 2^e, or 0 when it does not fit. */
static uint64_t
pow2(uint64_t e)
{
	return e < 64 ? (uint64_t)1 << e : 0;
}

#define DFLT(v, d)	((v) != 0 ? (v) : (d))

int
peftio_tuner_plan_params(const struct peftio_plan_opts *o, uint64_t out,
    uint64_t in, uint64_t *n, uint64_t *fixed, const char **why)
{
	uint64_t r = o->r, x, y, z, ol, ok, im, inn, b, nb, f;
	int bad = 0;

	*n = 0;
	*fixed = 0;
	*why = NULL;
	bad |= PEFTIO_ADD_OVERFLOW(out, in, &x);
	switch (o->method) {
	case PEFTIO_PLAN_LOHA:	/* w1a, w1b, w2a, w2b */
		bad |= PEFTIO_MUL_OVERFLOW(x, 2 * r, n);
		break;
	case PEFTIO_PLAN_LOKR:
		/* w1 [out_l, in_m] and w2 [out_k, in_n], each full or a
		 * pair of rank r: w2 when r < max(out_k, in_n) / 2, w1 too
		 * with decompose_both when r < max(out_l, in_m) / 2 */
		factorization(out, o->decompose_factor != 0 ?
		    o->decompose_factor : -1, &ol, &ok);
		factorization(in, o->decompose_factor != 0 ?
		    o->decompose_factor : -1, &im, &inn);
		if (o->decompose_both && 2 * r < PEFTIO_MAX(ol, im))
			bad |= PEFTIO_MUL_OVERFLOW(ol + im, r, &x);
		else
			bad |= PEFTIO_MUL_OVERFLOW(ol, im, &x);
		if (2 * r >= PEFTIO_MAX(ok, inn))
			bad |= PEFTIO_MUL_OVERFLOW(ok, inn, &y);
		else
			bad |= PEFTIO_MUL_OVERFLOW(ok + inn, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(x, y, n);
		break;
	case PEFTIO_PLAN_ADALORA:	/* A, B, E; ranknum untrained */
		bad |= PEFTIO_ADD_OVERFLOW(x, 1, &x);
		bad |= PEFTIO_MUL_OVERFLOW(x, r, n);
		*fixed = 1;
		break;
	case PEFTIO_PLAN_VERA:		/* lambda_b, lambda_d */
		bad |= PEFTIO_ADD_OVERFLOW(out, r, n);
		break;
	case PEFTIO_PLAN_HRA:		/* u [in, r] */
		bad |= PEFTIO_MUL_OVERFLOW(in, r, n);
		break;
	case PEFTIO_PLAN_MISS:		/* block [r, out] */
	case PEFTIO_PLAN_BONE:
		bad |= PEFTIO_MUL_OVERFLOW(out, r, n);
		break;
	case PEFTIO_PLAN_DELORA:	/* A, B, lambda */
		bad |= PEFTIO_MUL_OVERFLOW(x, r, &y);
		bad |= PEFTIO_ADD_OVERFLOW(y, 1, n);
		break;
	case PEFTIO_PLAN_OFT:
		/* oft_R [blocks (1 shared), b (b - 1) / 2] over the
		 * inputs, r or the block size moved to a divisor of in */
		if (in == 0)
			break;
		if (o->block_num != 0) {
			nb = in % o->block_num != 0 || o->block_num > in ?
			    oft_adjust(in, o->block_num) : o->block_num;
			b = in / nb;
		} else {
			b = DFLT(o->block_size, 32);
			if (in % b != 0 || b > in)
				b = oft_adjust(in, b);
			nb = in / b;
		}
		bad |= PEFTIO_MUL_OVERFLOW(b, b - 1, &y);
		bad |= PEFTIO_MUL_OVERFLOW(o->block_share ? 1 : nb, y / 2, n);
		break;
	case PEFTIO_PLAN_BOFT:
		/* boft_R [factor, blocks, b, b], boft_s [out, 1] */
		f = DFLT(o->butterfly, 1) - 1;
		if (o->block_num != 0) {
			nb = o->block_num;
			if (in % nb != 0 || (f != 0 && (pow2(f) == 0 ||
			    nb % pow2(f) != 0))) {
				*why = "the inputs are not a multiple of "
				    "boft_block_num, or it of 2^(factor - 1)";
				return PEFTIO_EMISMATCH;
			}
			b = in / nb;
		} else {
			b = DFLT(o->block_size, 4);
			if (PEFTIO_MUL_OVERFLOW(b, DFLT(pow2(f), UINT64_MAX),
			    &z) || in % b != 0 || in % z != 0 || in < z) {
				*why = "the inputs are not a multiple of "
				    "boft_block_size times 2^(factor - 1)";
				return PEFTIO_EMISMATCH;
			}
			nb = in / b;
		}
		if (f != 0 && (nb % 2 != 0 || b % 2 != 0)) {
			*why = "with a butterfly factor above 1 the number and "
			    "the size of the blocks must be even";
			return PEFTIO_EMISMATCH;
		}
		bad |= PEFTIO_MUL_OVERFLOW(b, b, &y);
		bad |= PEFTIO_MUL_OVERFLOW(y, nb, &y);
		bad |= PEFTIO_MUL_OVERFLOW(y, f + 1, &y);
		bad |= PEFTIO_ADD_OVERFLOW(y, out, n);
		break;
	case PEFTIO_PLAN_VBLORA:
		/* logits_A [r, in / len, vectors], logits_B [out / len, r,
		 * vectors]; the bank is shared */
		b = DFLT(o->vector_length, 256);
		if (in % b != 0 || out % b != 0) {
			*why = "the inputs and outputs are not multiples of "
			    "vector_length";
			return PEFTIO_EMISMATCH;
		}
		bad |= PEFTIO_MUL_OVERFLOW(x / b, r, &y);
		bad |= PEFTIO_MUL_OVERFLOW(y, DFLT(o->num_vectors, 256), n);
		break;
	case PEFTIO_PLAN_RANDLORA:
		/* lambda [r, bases], gamma [bases, min]; bases =
		 * ceil(min / r); the random bases are shared buffers */
		z = PEFTIO_MIN(in, out);
		nb = z / r + (z % r != 0);
		bad |= PEFTIO_ADD_OVERFLOW(r, z, &y);
		bad |= PEFTIO_MUL_OVERFLOW(y, nb, n);
		break;
	case PEFTIO_PLAN_SHIRA:		/* r (in + out) weights */
		bad |= PEFTIO_MUL_OVERFLOW(x, r, n);
		if (!bad && (PEFTIO_MUL_OVERFLOW(in, out, &y) || *n > y)) {
			*why = "r (in + out) exceeds the weight's size";
			return PEFTIO_EMISMATCH;
		}
		break;
	case PEFTIO_PLAN_C3A:		/* kernel [out / b, in / b, b] */
		b = DFLT(o->block_size, 256);
		if (in % b != 0 || out % b != 0) {
			*why = "the inputs and outputs are not multiples of "
			    "block_size";
			return PEFTIO_EMISMATCH;
		}
		bad |= PEFTIO_MUL_OVERFLOW(out / b, in, n);
		break;
	case PEFTIO_PLAN_ROAD:		/* theta and alpha */
		if (out % DFLT(o->group_size, 64) != 0) {
			*why = "the outputs are not a multiple of group_size";
			return PEFTIO_EMISMATCH;
		}
		switch (DFLT(o->road_variant, 1)) {
		case 1:
			*n = out / 2 * 2;
			break;
		case 2:
			bad |= PEFTIO_MUL_OVERFLOW(out, 2, n);
			break;
		default:
			bad |= PEFTIO_MUL_OVERFLOW(out, 4, n);
			break;
		}
		break;
	case PEFTIO_PLAN_FOURIERFT:	/* the spectrum's coefficients */
		*n = DFLT(o->n_frequency, 1000);
		if (PEFTIO_MUL_OVERFLOW(in, out, &y) || *n > y) {
			*why = "n_frequency exceeds the weight's size";
			return PEFTIO_EMISMATCH;
		}
		break;
	default:
		return PEFTIO_EINVAL;
	}
	return bad ? PEFTIO_EFORMAT : 0;
}
