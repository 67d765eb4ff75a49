/*
 * check_loinit.c - PiSSA, OLoRA and LoftQ on one weight (reconstruction,
 * optimality, PEFT's factors up to sign), the 4-bit form they write,
 * and rank surgery on LoRA factors without forming the delta.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

#define KPROJ	"model.layers.0.self_attn.k_proj"

static float *
randm(uint64_t m, uint64_t n, uint64_t seed)
{
	float *x = malloc(m * n * sizeof(float));
	uint64_t st = seed, i;

	ck_assert_ptr_nonnull(x);
	for (i = 0; i < m * n; i++)
		x[i] = tu_randn(&st);
	return x;
}

static double
fro(const float *x, uint64_t n)
{
	double s = 0.0;
	uint64_t i;

	for (i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return sqrt(s);
}

/* |x - y| / |y| */
static double
reldiff(const float *x, const float *y, uint64_t n)
{
	double e = 0.0;
	uint64_t i;

	for (i = 0; i < n; i++)
		e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
	return sqrt(e) / fro(y, n);
}

/* c = scale b a (m x n). */
static float *
product(const struct peftio_lora_factors *f, double scale)
{
	float *c = malloc(f->m * f->n * sizeof(float));

	ck_assert_ptr_nonnull(c);
	peftio_sgemm(0, 0, f->m, f->n, f->rank, (float)scale, f->b, f->rank,
	    f->a, f->n, 0.0f, c, f->n);
	return c;
}

/* The singular values of x (m x n), descending. */
static float *
sing(const float *x, uint64_t m, uint64_t n)
{
	uint64_t p = m < n ? m : n;
	float *w = malloc(m * n * sizeof(float)), *u = malloc(m * p * 4);
	float *s = malloc(p * 4), *vt = malloc(p * n * 4);
	struct peftio_error err;

	memcpy(w, x, m * n * sizeof(float));
	ck_assert_int_eq(peftio_svd(w, m, n, u, s, vt, &err), 0);
	free(w);
	free(u);
	free(vt);
	return s;
}

/* sqrt(sum of s[k..p-1]^2) */
static double
tail(const float *s, uint64_t k, uint64_t p)
{
	double t = 0.0;

	for (; k < p; k++)
		t += (double)s[k] * s[k];
	return sqrt(t);
}

/* A weight of the committed tiny Llama as f32. */
static float *
load(const char *path, const char *name, uint64_t *m, uint64_t *n)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	const struct peftio_tensor_info *ti;
	const void *d;
	float *x;
	long i;

	ck_assert_msg(peftio_ckpt_open(&c, path, &err) == 0, "%s", err.msg);
	ck_assert_int_ge(i = peftio_ckpt_find(c, name), 0);
	ti = peftio_ckpt_tensor(c, (size_t)i);
	ck_assert_int_eq(ti->ndim, 2);
	*m = ti->shape[0];
	*n = ti->shape[1];
	x = malloc(ti->numel * sizeof(float));
	ck_assert_int_eq(peftio_ckpt_data(c, (size_t)i, &d, &err), 0);
	peftio_to_f32(ti->dtype, d, x, ti->numel);
	peftio_ckpt_close(c);
	return x;
}

/* PiSSA: residual + scale B A = W; scale B A is the best rank-r part
 * (exact: to rounding; randomized: within 1%); any scale. */
START_TEST(test_pissa)
{
	struct peftio_init_opts o;
	struct peftio_lora_factors f;
	struct peftio_error err;
	uint64_t m = 80, n = 120, r = 6, i;
	float *w0 = randm(m, n, 7), *w = malloc(m * n * 4), *d, *s;
	double opt;

	/* A decaying spectrum on top of the noise. */
	for (i = 0; i < m * n; i++)
		w0[i] *= 0.1f;
	{
		float *lo = randm(m, 4, 8), *hi = randm(4, n, 9);

		peftio_sgemm(0, 0, m, n, 4, 1.0f, lo, 4, hi, n, 1.0f, w0, n);
		free(lo);
		free(hi);
	}
	s = sing(w0, m, n);
	opt = tail(s, r, m);
	peftio_init_opts_init(&o);
	o.method = PEFTIO_INIT_PISSA;
	o.rank = r;
	o.exact = _i & 1;
	o.scale = _i & 2 ? 2.0 : 1.0;
	memcpy(w, w0, m * n * 4);
	ck_assert_msg(peftio_init_lora(&o, w, m, n, &f, NULL, &err) == 0, "%s",
	    err.msg);
	ck_assert_uint_eq(f.rank, r);
	d = product(&f, o.scale);
	for (i = 0; i < m * n; i++)
		d[i] += w[i];
	ck_assert_msg(reldiff(d, w0, m * n) <= 1e-6, "reconstruction %g",
	    reldiff(d, w0, m * n));
	ck_assert_msg(fro(w, m * n) <= opt * (o.exact ? 1 + 1e-5 : 1.01),
	    "residual %g, optimal %g", fro(w, m * n), opt);
	ck_assert_msg(fabs(f.rel_err - fro(w, m * n) / fro(w0, m * n)) < 1e-6,
	    "rel_err %g", f.rel_err);
	/* B and A carry the same singular values: |b_j| = |a_j|. */
	for (i = 0; i < r; i++) {
		double nb = 0.0, na = 0.0;
		uint64_t j;

		for (j = 0; j < m; j++)
			nb += (double)f.b[j * r + i] * f.b[j * r + i];
		for (j = 0; j < n; j++)
			na += (double)f.a[i * n + j] * f.a[i * n + j];
		ck_assert_msg(fabs(sqrt(nb) - sqrt(na)) < 1e-4 * sqrt(na),
		    "pair %d: |b| %g |a| %g", (int)i, sqrt(nb), sqrt(na));
	}
	free(d);
	free(s);
	free(w);
	free(w0);
	peftio_lora_factors_free(&f);
}
END_TEST

/* Compare our factors with PEFT's for k_proj of the tiny Llama, each
 * rank-1 pair up to its sign. */
static void
same_up_to_sign(const struct peftio_lora_factors *f, const char *file,
    double tol)
{
	uint64_t m, n, ma, na, j, i;
	float *pa = load(file, "base_model.model." KPROJ ".lora_A.weight", &ma,
	    &na);
	float *pb = load(file, "base_model.model." KPROJ ".lora_B.weight", &m,
	    &n);

	ck_assert_uint_eq(ma, f->rank);
	ck_assert_uint_eq(na, f->n);
	ck_assert_uint_eq(m, f->m);
	for (j = 0; j < f->rank; j++) {
		double dot = 0.0, ea = 0.0, eb = 0.0, na2 = 0.0, nb2 = 0.0;
		float sg;

		for (i = 0; i < f->n; i++)
			dot += (double)f->a[j * f->n + i] * pa[j * f->n + i];
		sg = dot < 0.0 ? -1.0f : 1.0f;
		for (i = 0; i < f->n; i++) {
			double e = f->a[j * f->n + i] - sg * pa[j * f->n + i];

			ea += e * e;
			na2 += (double)pa[j * f->n + i] * pa[j * f->n + i];
		}
		for (i = 0; i < f->m; i++) {
			double e = f->b[i * f->rank + j] -
			    sg * pb[i * f->rank + j];

			eb += e * e;
			nb2 += (double)pb[i * f->rank + j] *
			    pb[i * f->rank + j];
		}
		ck_assert_msg(sqrt(ea / na2) <= tol && sqrt(eb / nb2) <= tol,
		    "%s: pair %d differs: A %g, B %g", file, (int)j,
		    sqrt(ea / na2), sqrt(eb / nb2));
	}
	free(pa);
	free(pb);
}

START_TEST(test_olora_peft)
{
	struct peftio_init_opts o;
	struct peftio_lora_factors f;
	struct peftio_error err;
	uint64_t m, n, i, j, r = 8;
	float *w0 = load(TEST_DATA "/lora/llama-f32", KPROJ ".weight", &m, &n);
	float *w = malloc(m * n * 4), *d;

	peftio_init_opts_init(&o);
	o.method = PEFTIO_INIT_OLORA;
	o.rank = r;
	memcpy(w, w0, m * n * 4);
	ck_assert_msg(peftio_init_lora(&o, w, m, n, &f, NULL, &err) == 0, "%s",
	    err.msg);
	/* B has orthonormal columns; A is upper triangular with a
	 * non-negative diagonal; B A = B B^T W. */
	for (i = 0; i < r; i++) {
		for (j = 0; j < r; j++) {
			double dot = 0.0;
			uint64_t k;

			for (k = 0; k < m; k++)
				dot += (double)f.b[k * r + i] * f.b[k * r + j];
			ck_assert_msg(fabs(dot - (i == j)) < 1e-5,
			    "B^T B [%d,%d] = %g", (int)i, (int)j, dot);
		}
		ck_assert(f.a[i * n + i] >= 0.0f);
		for (j = 0; j < i; j++)
			ck_assert(f.a[i * n + j] == 0.0f);
	}
	d = product(&f, 1.0);
	for (i = 0; i < m * n; i++)
		d[i] += w[i];
	ck_assert_msg(reldiff(d, w0, m * n) <= 1e-6, "reconstruction %g",
	    reldiff(d, w0, m * n));
	same_up_to_sign(&f, TEST_DATA "/peft-init/olora-k_proj.safetensors",
	    1e-5);
	free(d);
	free(w);
	free(w0);
	peftio_lora_factors_free(&f);
}
END_TEST

START_TEST(test_pissa_peft)
{
	struct peftio_init_opts o;
	struct peftio_lora_factors f;
	struct peftio_error err;
	uint64_t m, n;
	float *w = load(TEST_DATA "/lora/llama-f32", KPROJ ".weight", &m, &n);

	peftio_init_opts_init(&o);
	o.rank = 8;
	o.exact = 1;
	ck_assert_msg(peftio_init_lora(&o, w, m, n, &f, NULL, &err) == 0, "%s",
	    err.msg);
	/* Singular vectors of close singular values turn with float
	 * rounding: PEFT's are float SVDs, ours double. */
	same_up_to_sign(&f, TEST_DATA "/peft-init/pissa-k_proj.safetensors",
	    1e-3);
	free(w);
	peftio_lora_factors_free(&f);
}
END_TEST

/* The 4-bit form is nf4-quant's codec output; deq is what a load
 * decodes. */
START_TEST(test_q4_weight)
{
	struct peftio_q4_weight q;
	struct peftio_error err;
	uint64_t n = 64 * 300 + 10, nb = 301, i;
	float *x = randm(1, n, 3), *deq = malloc(n * 4), *d2 = malloc(n * 4);
	uint8_t *packed = malloc((n + 1) / 2);
	float *absmax = malloc(nb * 4);
	int dq = _i;

	ck_assert_int_eq(peftio_gpu_rcp_init(&err), 0);
	ck_assert_msg(peftio_q4_weight_quantize(&q, PEFTIO_Q4_NF4, 64, dq, x, n,
	    deq, &err) == 0, "%s", err.msg);
	ck_assert_uint_eq(q.nb, nb);
	memset(packed, 0, (n + 1) / 2);
	ck_assert_int_eq(peftio_q4_quantize(PEFTIO_Q4_NF4, PEFTIO_F32, x, n,
	    64, 0, nb, packed, absmax), 0);
	ck_assert(memcmp(packed, q.packed, (n + 1) / 2) == 0);
	if (dq) {
		uint8_t *qa = malloc(nb);
		float *nested = malloc(2 * 4), off;

		peftio_dq_quantize(absmax, nb, 256, &off, qa, nested);
		ck_assert(memcmp(qa, q.qabsmax, nb) == 0);
		ck_assert(memcmp(nested, q.nested, 2 * 4) == 0);
		ck_assert(off == q.offset);
		peftio_dq_dequantize(peftio_dynamic_map(), qa, nested, off, nb,
		    256, absmax);
		free(qa);
		free(nested);
	} else
		ck_assert(memcmp(absmax, q.absmax, nb * 4) == 0);
	peftio_q4_dequantize(peftio_q4_code(PEFTIO_Q4_NF4), packed, absmax, n,
	    64, 0, nb, PEFTIO_F32, d2);
	ck_assert(memcmp(d2, deq, n * 4) == 0);
	/* NF4 of Gaussian data: about 10% relative error. */
	ck_assert_msg(reldiff(deq, x, n) < 0.15, "%g", reldiff(deq, x, n));
	for (i = 0; i < n; i++)
		ck_assert(isfinite(deq[i]));
	peftio_q4_weight_free(&q);
	free(x);
	free(deq);
	free(d2);
	free(packed);
	free(absmax);
}
END_TEST

/* LoftQ: one iteration quantizes W itself and fits W - deq(Q) best;
 * more iterations lower the error. */
START_TEST(test_loftq)
{
	struct peftio_init_opts o;
	struct peftio_lora_factors f1, f5;
	struct peftio_q4_weight q1, q5, qw;
	struct peftio_error err;
	uint64_t m = 64, n = 96, r = 4, i;
	float *w0 = randm(m, n, 21), *w = malloc(m * n * 4);
	float *deq = malloc(m * n * 4), *d, *s;

	peftio_init_opts_init(&o);
	o.method = PEFTIO_INIT_LOFTQ;
	o.rank = r;
	o.exact = 1;
	o.double_quant = 0;
	o.scale = 2.0;
	memcpy(w, w0, m * n * 4);
	ck_assert_msg(peftio_init_lora(&o, w, m, n, &f1, &q1, &err) == 0,
	    "%s", err.msg);
	ck_assert_int_eq(peftio_q4_weight_quantize(&qw, PEFTIO_Q4_NF4, 64, 0,
	    w0, m * n, deq, &err), 0);
	ck_assert(memcmp(qw.packed, q1.packed, m * n / 2) == 0);
	ck_assert(memcmp(w, deq, m * n * 4) == 0);	/* w is deq(Q) */
	/* scale B A is the best rank-r part of W - deq(Q). */
	for (i = 0; i < m * n; i++)
		deq[i] = w0[i] - deq[i];
	s = sing(deq, m, n);
	d = product(&f1, o.scale);
	for (i = 0; i < m * n; i++)
		d[i] = deq[i] - d[i];
	ck_assert_msg(fabs(fro(d, m * n) / tail(s, r, m) - 1) < 1e-5,
	    "error %g, optimal %g", fro(d, m * n), tail(s, r, m));
	ck_assert_msg(fabs(f1.rel_err - fro(d, m * n) / fro(w0, m * n)) < 1e-6,
	    "rel_err %g", f1.rel_err);
	o.loftq_iter = 5;
	memcpy(w, w0, m * n * 4);
	ck_assert_int_eq(peftio_init_lora(&o, w, m, n, &f5, &q5, &err), 0);
	ck_assert_msg(f5.rel_err < f1.rel_err, "5 iterations %g, 1 %g",
	    f5.rel_err, f1.rel_err);
	/* Double quantization: deq(Q) decodes the 8-bit absmax. */
	o.double_quant = 1;
	o.loftq_iter = 1;
	peftio_lora_factors_free(&f5);
	peftio_q4_weight_free(&q5);
	memcpy(w, w0, m * n * 4);
	ck_assert_int_eq(peftio_init_lora(&o, w, m, n, &f5, &q5, &err), 0);
	ck_assert_ptr_nonnull(q5.qabsmax);
	peftio_q4_dequantize(peftio_q4_code(PEFTIO_Q4_NF4), q5.packed,
	    q5.absmax, m * n, 64, 0, q5.nb, PEFTIO_F32, deq);
	ck_assert(memcmp(w, deq, m * n * 4) == 0);
	free(w0);
	free(w);
	free(deq);
	free(d);
	free(s);
	peftio_lora_factors_free(&f1);
	peftio_lora_factors_free(&f5);
	peftio_q4_weight_free(&q1);
	peftio_q4_weight_free(&q5);
	peftio_q4_weight_free(&qw);
}
END_TEST

START_TEST(test_init_refusals)
{
	struct peftio_init_opts o;
	struct peftio_lora_factors f;
	struct peftio_q4_weight q;
	struct peftio_error err;
	float *w = randm(8, 12, 1);

	peftio_init_opts_init(&o);
	o.rank = 9;
	ck_assert_int_eq(peftio_init_lora(&o, w, 8, 12, &f, NULL, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_null(f.a);
	o.rank = 8;
	o.method = PEFTIO_INIT_OLORA;
	w[5] = NAN;
	ck_assert_int_eq(peftio_init_lora(&o, w, 8, 12, &f, NULL, &err),
	    PEFTIO_ENONFINITE);
	w[5] = 0.0f;
	o.method = PEFTIO_INIT_LOFTQ;
	ck_assert_int_eq(peftio_init_lora(&o, w, 8, 12, &f, NULL, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_init_lora(&o, w, 8, 12, &f, &q, &err), 0);
	peftio_lora_factors_free(&f);
	peftio_q4_weight_free(&q);
	ck_assert_int_eq(peftio_init_method_parse("olora"), PEFTIO_INIT_OLORA);
	ck_assert_int_eq(peftio_init_method_parse("lora"), -1);
	ck_assert_str_eq(peftio_init_method_name(PEFTIO_INIT_LOFTQ), "loftq");
	free(w);
}
END_TEST

/* Resize: b' a' is the best rank-k approximation of scale b a. */
START_TEST(test_resize)
{
	struct peftio_extract_opts o;
	struct peftio_lora_factors f;
	struct peftio_error err;
	uint64_t m = 70, n = 50, r = 10, k = 4, i;
	float *b = randm(m, r, 31), *a = randm(r, n, 32), *d, *s, *x;
	double scale = 0.5, opt;

	/* Decaying columns, so that the cut matters. */
	for (i = 0; i < m * r; i++)
		b[i] /= (float)(1 + i % r);
	d = malloc(m * n * 4);
	peftio_sgemm(0, 0, m, n, r, (float)scale, b, r, a, n, 0.0f, d, n);
	s = sing(d, m, n);
	opt = tail(s, k, n);
	peftio_extract_opts_init(&o);
	o.rank = k;
	o.exact = _i;
	ck_assert_msg(peftio_lora_resize(b, a, m, n, r, scale, &o, &f,
	    &err) == 0, "%s", err.msg);
	ck_assert_uint_eq(f.rank, k);
	x = product(&f, 1.0);
	for (i = 0; i < m * n; i++)
		x[i] = d[i] - x[i];
	ck_assert_msg(fabs(fro(x, m * n) / opt - 1) < 1e-4,
	    "error %g, optimal %g", fro(x, m * n), opt);
	ck_assert_msg(fabs(f.rel_err - opt / fro(d, m * n)) < 1e-5,
	    "rel_err %g", f.rel_err);
	peftio_lora_factors_free(&f);
	free(x);
	/* Full rank back: the same delta. */
	o.rank = r;
	ck_assert_int_eq(peftio_lora_resize(b, a, m, n, r, scale, &o, &f,
	    &err), 0);
	x = product(&f, 1.0);
	ck_assert_msg(reldiff(x, d, m * n) < 1e-5, "%g", reldiff(x, d, m * n));
	peftio_lora_factors_free(&f);
	free(x);
	/* By energy: the smallest rank that keeps the fraction. */
	o.rank = 0;
	o.energy = 0.9;
	o.max_rank = 256;
	ck_assert_int_eq(peftio_lora_resize(b, a, m, n, r, scale, &o, &f,
	    &err), 0);
	{
		double tot = 0.0, acc = 0.0;
		uint64_t want = 0;

		for (i = 0; i < n; i++)
			tot += (double)s[i] * s[i];
		for (i = 0; i < n && want == 0; i++) {
			acc += (double)s[i] * s[i];
			if (acc >= 0.9 * tot)
				want = i + 1;
		}
		ck_assert_uint_eq(f.rank, want);
	}
	peftio_lora_factors_free(&f);
	/* More than the adapter's rank is refused. */
	o.rank = r + 1;
	ck_assert_int_eq(peftio_lora_resize(b, a, m, n, r, scale, &o, &f,
	    &err), PEFTIO_EINVAL);
	free(a);
	free(b);
	free(d);
	free(s);
}
END_TEST

/* A rank above a dimension of the weight: the small delta is formed. */
START_TEST(test_resize_thin)
{
	struct peftio_extract_opts o;
	struct peftio_lora_factors f;
	struct peftio_error err;
	uint64_t m = 6, n = 40, r = 8, k = 3, i;
	float *b = randm(m, r, 41), *a = randm(r, n, 42), *d, *s, *x;

	d = malloc(m * n * 4);
	peftio_sgemm(0, 0, m, n, r, 1.0f, b, r, a, n, 0.0f, d, n);
	s = sing(d, m, n);
	peftio_extract_opts_init(&o);
	o.rank = k;
	ck_assert_int_eq(peftio_lora_resize(b, a, m, n, r, 1.0, &o, &f, &err),
	    0);
	x = product(&f, 1.0);
	for (i = 0; i < m * n; i++)
		x[i] = d[i] - x[i];
	ck_assert_msg(fabs(fro(x, m * n) / tail(s, k, m) - 1) < 1e-4, "%g",
	    fro(x, m * n) / tail(s, k, m));
	peftio_lora_factors_free(&f);
	free(a);
	free(b);
	free(d);
	free(s);
	free(x);
}
END_TEST

Suite *loinit_suite(void);

Suite *loinit_suite(void)
{
	Suite *s = suite_create("loinit");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_pissa, 0, 4);
	tcase_add_test(tc, test_olora_peft);
	tcase_add_test(tc, test_pissa_peft);
	tcase_add_loop_test(tc, test_q4_weight, 0, 2);
	tcase_add_test(tc, test_loftq);
	tcase_add_test(tc, test_init_refusals);
	tcase_add_loop_test(tc, test_resize, 0, 2);
	tcase_add_test(tc, test_resize_thin);
	suite_add_tcase(s, tc);
	return s;
}
