/*
 * check_step.c - which tensors are quantized or targeted, a
 * bitsandbytes weight planned and written as a step of a transform
 * (the same bytes as the calls it is made of), and dq-inspect's report
 * as text and JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

#define ROWS	64
#define COLS	256
#define NW	(ROWS * COLS)

static float wv[NW];

static struct peftio_tensor_info
info(const char *name, enum peftio_dtype dt, int ndim, uint64_t numel)
{
	struct peftio_tensor_info ti;

	memset(&ti, 0, sizeof(ti));
	ti.name = name;
	ti.dtype = dt;
	ti.ndim = ndim;
	ti.numel = numel;
	return ti;
}

START_TEST(test_quant_selected)
{
	static const char *const incl[] = { "model.norm.*" };
	static const char *const excl[] = { "*.q_proj.*" };
	struct peftio_tensor_info q = info("model.layers.0.self_attn.q_proj."
	    "weight", PEFTIO_BF16, 2, 64);
	struct peftio_tensor_info k = info("model.layers.0.self_attn.k_proj."
	    "weight", PEFTIO_F32, 2, 64);
	struct peftio_tensor_info n = info("model.norm.weight", PEFTIO_F32, 1,
	    8);
	struct peftio_tensor_info e = info("model.embed_tokens.weight",
	    PEFTIO_F16, 2, 64);
	struct peftio_tensor_info i8 = info("model.layers.0.mlp.up_proj."
	    "weight", PEFTIO_I8, 2, 64);
	struct peftio_tensor_info z = info("model.layers.0.mlp.up_proj."
	    "weight", PEFTIO_F32, 2, 0);

	ck_assert(peftio_quant_selected(&q, NULL, 0, NULL, 0));
	ck_assert(!peftio_quant_selected(&q, NULL, 0, excl, 1));
	ck_assert(peftio_quant_selected(&k, NULL, 0, excl, 1));
	ck_assert(!peftio_quant_selected(&n, NULL, 0, NULL, 0));
	ck_assert(peftio_quant_selected(&n, incl, 1, NULL, 0));
	ck_assert(!peftio_quant_selected(&e, NULL, 0, NULL, 0));
	ck_assert(!peftio_quant_selected(&i8, NULL, 0, NULL, 0));
	ck_assert(!peftio_quant_selected(&z, NULL, 0, NULL, 0));
}
END_TEST

START_TEST(test_module_selected)
{
	static const char *const tg[] = { "q_proj", "mlp.*" };
	static const char *const ex[] = { "model.layers.1.self_attn.q_proj" };

	ck_assert(peftio_module_selected("model.layers.0.mlp.down_proj", NULL,
	    0, NULL, 0));
	ck_assert(!peftio_module_selected("lm_head", NULL, 0, NULL, 0));
	ck_assert(peftio_module_selected("model.layers.0.self_attn.q_proj",
	    tg, 2, ex, 1));
	ck_assert(!peftio_module_selected("model.layers.1.self_attn.q_proj",
	    tg, 2, ex, 1));
	ck_assert(!peftio_module_selected("model.layers.0.self_attn.k_proj",
	    tg, 2, NULL, 0));
	ck_assert(peftio_module_selected("mlp.up_proj", tg, 2, NULL, 0));
}
END_TEST

/* orig.safetensors: "w" [64, 256] F32 and "h.0.attn.c_attn.weight" (a
 * Conv1D weight, [in, out]) [64, 256] F32. */
static struct peftio_ckpt *
write_orig(void)
{
	struct peftio_error err;
	struct peftio_ckptw *w;
	struct peftio_ckpt *c;
	uint64_t s = 5, sh[2] = { ROWS, COLS };
	size_t i;

	for (i = 0; i < NW; i++)
		wv[i] = tu_randn(&s) * 0.02f;
	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("orig.safetensors"),
	    0, 1, NULL, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "w", PEFTIO_F32, 2, sh,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "h.0.attn.c_attn.weight",
	    PEFTIO_F32, 2, sh, &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "h.0.attn.c_attn.weight", wv,
	    sizeof(wv), &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "w", wv, sizeof(wv), &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path("orig.safetensors"),
	    &err), 0);
	return c;
}

START_TEST(test_step_plan)
{
	static const char *const incl[] = { "w" };
	static const char *const excl[] = { "h.*" };
	struct peftio_bnb_quant_opts o = { 0, PEFTIO_Q4_NF4, 64, 1, PEFTIO_U8,
		PEFTIO_BF16 };
	struct peftio_bnb_step s, st[3];
	struct peftio_xf_item xi[3];
	struct peftio_error err;
	struct peftio_ckpt *c;
	long w, cv;

	tu_tmpdir();
	c = write_orig();
	w = peftio_ckpt_find(c, "w");
	cv = peftio_ckpt_find(c, "h.0.attn.c_attn.weight");
	ck_assert_int_eq(peftio_bnb_step_quantize(&s, c, (size_t)w, &o, &err),
	    0);
	ck_assert(s.quant && !s.eight && !s.transpose);
	ck_assert_int_eq(s.bo.qs.dtype, PEFTIO_BF16);
	ck_assert_uint_eq(s.bo.qs.shape[0], ROWS);
	/* transformers quantizes a Conv1D weight as [out, in] */
	ck_assert_int_eq(peftio_bnb_step_quantize(&s, c, (size_t)cv, &o,
	    &err), 0);
	ck_assert(s.transpose);
	ck_assert_uint_eq(s.bo.qs.shape[0], COLS);
	ck_assert_uint_eq(s.bo.qs.shape[1], ROWS);
	o.eight = 1;
	ck_assert_int_eq(peftio_bnb_step_quantize(&s, c, (size_t)cv, &o,
	    &err), 0);
	ck_assert_uint_eq(s.bw8.rows, COLS);
	ck_assert_uint_eq(s.bw8.cols, ROWS);
	peftio_bnb_step_free(&s);

	/* The whole model: the weights the globs pick quantized, the
	 * other float converted to o.dtype, or copied without one. */
	o.eight = 0;
	memset(st, 0, sizeof(st));
	memset(xi, 0, sizeof(xi));
	ck_assert_int_eq(peftio_bnb_steps_plan(c, 0, &o, incl, 1, excl, 1, xi,
	    st, &err), 1);
	ck_assert_int_eq(xi[w].act, PEFTIO_XF_CUSTOM);
	ck_assert(st[w].quant && !st[w].eight);
	ck_assert_int_eq(xi[cv].act, PEFTIO_XF_CONVERT);
	ck_assert_int_eq(xi[cv].dt, PEFTIO_BF16);
	ck_assert(!st[cv].quant);
	peftio_bnb_step_free(&st[w]);
	memset(st, 0, sizeof(st));
	o.dtype = -1;
	ck_assert_int_eq(peftio_bnb_steps_plan(c, 0, &o, incl, 1, excl, 1, xi,
	    st, &err), 1);
	ck_assert_int_eq(xi[cv].act, PEFTIO_XF_COPY);
	peftio_bnb_step_free(&st[w]);
	/* nothing to dequantize in a float model */
	memset(st, 0, sizeof(st));
	ck_assert_int_eq(peftio_bnb_steps_plan(c, 1, &o, NULL, 0, NULL, 0, xi,
	    st, &err), 0);
	ck_assert_int_eq(xi[w].act, PEFTIO_XF_COPY);
	ck_assert_int_eq(xi[cv].act, PEFTIO_XF_COPY);
	peftio_ckpt_close(c);
	tu_tmpdir_remove();
}
END_TEST


struct run {
	struct peftio_ckpt	*in;
	struct peftio_bnb_step	 steps[16];
	struct peftio_bnb_buffers *buf;
};

static int
declare(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;

	return peftio_bnb_step_declare(x, i, 0, &r->steps[i], err);
}

static int
compute(struct peftio_xf *x, size_t i, void *ctx, struct peftio_error *err)
{
	struct run *r = ctx;

	return peftio_bnb_step_compute(x, i, &r->steps[i], 1, r->buf, 2, err);
}

/* Both weights of orig quantized by steps through a transform, then
 * dequantized by steps: the 4-bit codes are those of the calls the step
 * is made of, and the Conv1D weight comes back [in, out]. */
START_TEST(test_step_transform)
{
	static const struct peftio_xf_ops ops = { declare, compute, NULL, NULL,
		NULL, NULL, NULL };
	struct peftio_bnb_quant_opts o = { 0, PEFTIO_Q4_NF4, 64, 1, PEFTIO_U8,
		-1 };
	struct peftio_xf_item xi[16], xi2[16];
	struct peftio_bnb_step st2[16];
	struct peftio_bnb_weight bw[16];
	struct peftio_bnb_out bo;
	struct peftio_error err;
	struct peftio_ckpt *orig, *q, *d;
	struct run r;
	const void *data;
	const float *got;
	uint8_t *packed = malloc(NW / 2);
	float *absmax = malloc(NW / 64 * sizeof(float));
	float *deq = malloc(NW * sizeof(float));
	size_t i, n, row, col, bad;
	long k, kc;

	tu_tmpdir();
	ck_assert_int_eq(peftio_gpu_rcp_init(&err), 0);
	memset(&r, 0, sizeof(r));
	memset(xi, 0, sizeof(xi));
	r.in = orig = write_orig();
	ck_assert_ptr_nonnull(r.buf = peftio_bnb_buffers_new());
	for (i = 0; i < 2; i++) {
		xi[i].act = PEFTIO_XF_CUSTOM;
		ck_assert_int_eq(peftio_bnb_step_quantize(&r.steps[i], r.in, i,
		    &o, &err), 0);
		ck_assert_msg(peftio_bnb_step_offset(&r.steps[i], r.in, i, 1,
		    r.buf, 2, &err) == 0, "%s", err.msg);
	}
	ck_assert_msg(peftio_transform(r.in, xi, &ops, &r,
	    tu_path("q.safetensors"), PEFTIO_W_FORCE | PEFTIO_W_NOSYNC,
	    &err) == 0, "%s", err.msg);

	/* "w" as peftio_bnb_prepass() and _quantize_tensor() give it */
	k = peftio_ckpt_find(r.in, "w");
	memset(&bo, 0, sizeof(bo));
	peftio_bnb_plan(&bo.qs, peftio_ckpt_tensor(r.in, (size_t)k),
	    PEFTIO_Q4_NF4, 64, 1, PEFTIO_F32);
	ck_assert_int_eq(peftio_bnb_prepass(r.in, (size_t)k, &bo, 1, 2, &err),
	    0);
	ck_assert_int_eq(peftio_bnb_quantize_tensor(r.in, (size_t)k, &bo.qs,
	    packed, absmax, 1, 2, &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&q, tu_path("q.safetensors"), &err),
	    0);
	n = peftio_ckpt_count(q);
	ck_assert_uint_eq(n, 12);
	k = peftio_ckpt_find(q, "w");
	ck_assert_int_ge(k, 0);
	ck_assert_int_eq(peftio_ckpt_data(q, (size_t)k, &data, &err), 0);
	ck_assert_mem_eq(data, packed, NW / 2);

	/* and back, by steps again */
	for (i = 0; i < 2; i++)
		peftio_bnb_step_free(&r.steps[i]);
	memset(&r.steps, 0, sizeof(r.steps));
	r.in = q;
	ck_assert_int_eq(peftio_bnb_group(q, xi, bw, NULL, &err), 2);
	for (i = 0; i < n; i++)
		if (xi[i].act == PEFTIO_XF_CUSTOM)
			peftio_bnb_step_dequantize(&r.steps[i], q, &bw[i], NULL,
			    -1);
	/* the same plan for the whole model; no quantizing it again */
	memset(xi2, 0, sizeof(xi2));
	memset(st2, 0, sizeof(st2));
	ck_assert_int_eq(peftio_bnb_steps_plan(q, 1, &o, NULL, 0, NULL, 0, xi2,
	    st2, &err), 2);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(xi2[i].act, xi[i].act);
		if (xi[i].act == PEFTIO_XF_CUSTOM)
			ck_assert_mem_eq(&st2[i], &r.steps[i], sizeof(st2[i]));
	}
	ck_assert_int_lt(peftio_bnb_steps_plan(q, 0, &o, NULL, 0, NULL, 0, xi2,
	    st2, &err), 0);
	ck_assert_msg(peftio_transform(q, xi, &ops, &r,
	    tu_path("d.safetensors"), PEFTIO_W_FORCE | PEFTIO_W_NOSYNC,
	    &err) == 0, "%s", err.msg);
	ck_assert_int_eq(peftio_ckpt_open(&d, tu_path("d.safetensors"), &err),
	    0);
	ck_assert_uint_eq(peftio_ckpt_count(d), 2);
	k = peftio_ckpt_find(q, "w");
	ck_assert_int_eq(peftio_bnb_dequantize(q, &bw[k], PEFTIO_F32, deq, 1,
	    &err), 0);
	k = peftio_ckpt_find(d, "w");
	ck_assert_int_eq(peftio_ckpt_data(d, (size_t)k, &data, &err), 0);
	ck_assert_mem_eq(data, deq, NW * sizeof(float));
	/* the Conv1D weight: [in, out] again, as stored before */
	kc = peftio_ckpt_find(q, "h.0.attn.c_attn.weight");
	ck_assert_uint_eq(bw[kc].qs.shape[0], COLS);
	ck_assert_int_eq(peftio_bnb_dequantize(q, &bw[kc], PEFTIO_F32, deq, 1,
	    &err), 0);
	k = peftio_ckpt_find(d, "h.0.attn.c_attn.weight");
	ck_assert_uint_eq(peftio_ckpt_tensor(d, (size_t)k)->shape[0], ROWS);
	ck_assert_uint_eq(peftio_ckpt_tensor(d, (size_t)k)->shape[1], COLS);
	ck_assert_int_eq(peftio_ckpt_data(d, (size_t)k, &data, &err), 0);
	got = data;
	for (row = 0, bad = 0; row < ROWS; row++)
		for (col = 0; col < COLS; col++)
			bad += got[row * COLS + col] != deq[col * ROWS + row];
	ck_assert_uint_eq(bad, 0);
	for (i = 0; i < n; i++)
		peftio_bnb_step_free(&r.steps[i]);
	peftio_ckpt_close(d);
	peftio_ckpt_close(q);
	peftio_ckpt_close(orig);
	peftio_bnb_buffers_free(r.buf);
	peftio_bnb_out_free(&bo);
	free(packed);
	free(absmax);
	free(deq);
	tu_tmpdir_remove();
}
END_TEST

Suite *step_suite(void);

Suite *step_suite(void)
{
	Suite *s = suite_create("step");
	TCase *tc = tcase_create("select");

	tcase_add_test(tc, test_quant_selected);
	tcase_add_test(tc, test_module_selected);
	suite_add_tcase(s, tc);
	tc = tcase_create("step");
	tcase_add_test(tc, test_step_plan);
	tcase_add_test(tc, test_step_transform);
	suite_add_tcase(s, tc);
	return s;
}
