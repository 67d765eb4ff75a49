/*
 * check_inspect.c - the account of a checkpoint (rows, pieces of a
 * 4-bit or 8-bit weight, totals, the double-quantization saving), the
 * error of a tensor against an original, the plan of an inspected
 * checkpoint and JSON documents written as YAML.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

#define ROWS	64
#define COLS	256
#define NW	(ROWS * COLS)
#define NB	8

static float wv[NW], bv[NB];

/* orig.safetensors: "w" [64, 256] and "b" [8], both F32; b is 1..8. */
static void
write_orig(void)
{
	struct peftio_error err;
	struct peftio_ckptw *w;
	uint64_t s = 11, sh[2] = { ROWS, COLS }, nb = NB;
	size_t i;

	for (i = 0; i < NW; i++)
		wv[i] = tu_randn(&s) * 0.02f;
	for (i = 0; i < NB; i++)
		bv[i] = (float)(i + 1);
	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("orig.safetensors"),
	    0, 1, NULL, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "w", PEFTIO_F32, 2, sh,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "b", PEFTIO_F32, 1, &nb,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "w", wv, sizeof(wv), &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "b", bv, sizeof(bv), &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
}

/* q.safetensors: "w" as NF4 at blocksize 64 with double quantization,
 * and "b" with its first value raised by 1. */
static void
write_quantized(struct peftio_ckpt *orig, size_t *qs_len)
{
	struct peftio_scratch tmp[2] = { { 0 } };
	struct peftio_bnb_out bo;
	struct peftio_error err;
	struct peftio_ckptw *w;
	uint8_t *packed = malloc(NW / 2);
	float *absmax = malloc(NW / 64 * sizeof(float)), b[NB];
	uint64_t nb = NB;
	long k = peftio_ckpt_find(orig, "w");

	ck_assert_int_ge(k, 0);
	memset(&bo, 0, sizeof(bo));
	peftio_bnb_plan(&bo.qs, peftio_ckpt_tensor(orig, (size_t)k),
	    PEFTIO_Q4_NF4, 64, 1, PEFTIO_F32);
	ck_assert_int_eq(peftio_bnb_prepass(orig, (size_t)k, &bo, 1, 2, &err),
	    0);
	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("q.safetensors"), 0,
	    1, NULL, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	ck_assert_msg(peftio_bnb_declare(w, 0, "w", &bo, &err) == 0, "%s",
	    err.msg);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "b", PEFTIO_F32, 1, &nb,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_bnb_quantize_tensor(orig, (size_t)k, &bo.qs,
	    packed, absmax, 1, 2, &err), 0);
	ck_assert_msg(peftio_bnb_write(w, "w", &bo, packed, absmax, tmp,
	    &err) == 0, "%s", err.msg);
	memcpy(b, bv, sizeof(b));
	b[0] += 1.0f;
	ck_assert_int_eq(peftio_ckptw_write(w, "b", b, sizeof(b), &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	*qs_len = bo.qs_len;
	peftio_ckptw_free(w);
	peftio_bnb_out_free(&bo);
	peftio_scratch_free(&tmp[0]);
	peftio_scratch_free(&tmp[1]);
	free(packed);
	free(absmax);
}

static struct peftio_ckpt *orig, *q;
static size_t qs_len;

/*
 * mixed.safetensors: "w" of orig as in q.safetensors, and "m.weight",
 * orig's "w" as an 8-bit weight; m-orig.safetensors holds "m.weight" as
 * the F32 original.
 */
static struct peftio_ckpt *
write_mixed(struct peftio_ckpt **morig)
{
	struct peftio_scratch tmp[2] = { { 0 } };
	struct peftio_bnb_out bo;
	struct peftio_error err;
	struct peftio_ckptw *w;
	struct peftio_ckpt *c;
	uint8_t *packed = malloc(NW / 2);
	float *absmax = malloc(NW / 64 * sizeof(float)), scb[ROWS];
	int8_t *codes = malloc(NW);
	uint64_t sh[2] = { ROWS, COLS };
	long k = peftio_ckpt_find(orig, "w");

	ck_assert_int_ge(k, 0);
	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("m-orig.safetensors"),
	    0, 1, NULL, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "m.weight", PEFTIO_F32, 2,
	    sh, &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "m.weight", wv, sizeof(wv),
	    &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	ck_assert_int_eq(peftio_ckpt_open(morig, tu_path("m-orig.safetensors"),
	    &err), 0);

	memset(&bo, 0, sizeof(bo));
	peftio_bnb_plan(&bo.qs, peftio_ckpt_tensor(orig, (size_t)k),
	    PEFTIO_Q4_NF4, 64, 1, PEFTIO_F32);
	ck_assert_int_eq(peftio_bnb_prepass(orig, (size_t)k, &bo, 1, 2, &err),
	    0);
	ck_assert_int_eq(peftio_bnb8_quantize(PEFTIO_F32, wv, ROWS, COLS,
	    codes, scb, 2, &err), 0);
	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("mixed.safetensors"),
	    0, 1, NULL, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	ck_assert_msg(peftio_bnb_declare(w, 0, "w", &bo, &err) == 0, "%s",
	    err.msg);
	ck_assert_msg(peftio_bnb8_declare(w, 0, "m.weight", ROWS, COLS,
	    &err) == 0, "%s", err.msg);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_bnb_quantize_tensor(orig, (size_t)k, &bo.qs,
	    packed, absmax, 1, 2, &err), 0);
	ck_assert_msg(peftio_bnb_write(w, "w", &bo, packed, absmax, tmp,
	    &err) == 0, "%s", err.msg);
	ck_assert_msg(peftio_bnb8_write(w, "m.weight", codes, scb, ROWS, COLS,
	    &err) == 0, "%s", err.msg);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	peftio_bnb_out_free(&bo);
	peftio_scratch_free(&tmp[0]);
	peftio_scratch_free(&tmp[1]);
	free(packed);
	free(absmax);
	free(codes);
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path("mixed.safetensors"),
	    &err), 0);
	return c;
}

static void
setup(void)
{
	struct peftio_error err;

	tu_tmpdir();
	write_orig();
	ck_assert_int_eq(peftio_ckpt_open(&orig, tu_path("orig.safetensors"),
	    &err), 0);
	write_quantized(orig, &qs_len);
	ck_assert_int_eq(peftio_ckpt_open(&q, tu_path("q.safetensors"), &err),
	    0);
}

static void
teardown(void)
{
	peftio_ckpt_close(q);
	peftio_ckpt_close(orig);
	tu_tmpdir_remove();
}

static const struct peftio_inspect_row *
row(const struct peftio_inspect *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->nrows; i++)
		if (strcmp(r->rows[i].name, name) == 0)
			return &r->rows[i];
	ck_abort_msg("no row %s", name);
	return NULL;
}

/* Six tensors stored, two rows; the pieces and totals of the weight. */
START_TEST(test_account)
{
	const struct peftio_inspect_row *w, *b;
	struct peftio_inspect r;
	struct peftio_error err;
	uint64_t wbytes;

	ck_assert_int_eq(peftio_inspect_ckpt(&r, q, &err), 0);
	ck_assert_uint_eq(peftio_ckpt_count(q), 7);
	ck_assert_uint_eq(r.nrows, 2);
	w = row(&r, "w");
	b = row(&r, "b");
	ck_assert(w->quantized);
	ck_assert(!b->quantized);
	ck_assert_str_eq(peftio_inspect_dtype(&r, w), "NF4");
	ck_assert_str_eq(peftio_inspect_dtype(&r, b), "F32");
	ck_assert_int_eq(w->ndim, 2);
	ck_assert_uint_eq(w->shape[0], ROWS);
	ck_assert_uint_eq(w->shape[1], COLS);
	ck_assert_uint_eq(w->params, NW);
	ck_assert_uint_eq(w->part[PEFTIO_PART_CODES], NW / 2);
	ck_assert_uint_eq(w->part[PEFTIO_PART_ABSMAX], NW / 64);
	ck_assert_uint_eq(w->part[PEFTIO_PART_NESTED_ABSMAX], 4);
	ck_assert_uint_eq(w->part[PEFTIO_PART_QUANT_MAP], 64);
	ck_assert_uint_eq(w->part[PEFTIO_PART_NESTED_QUANT_MAP], 1024);
	ck_assert_uint_eq(w->part[PEFTIO_PART_QUANT_STATE], qs_len);
	wbytes = NW / 2 + NW / 64 + 4 + 64 + 1024 + qs_len;
	ck_assert_uint_eq(w->bytes, wbytes);
	ck_assert_uint_eq(b->bytes, NB * 4);
	ck_assert_uint_eq(r.params, NW + NB);
	ck_assert_uint_eq(r.bytes, wbytes + NB * 4);
	ck_assert_uint_eq(r.qparams, NW);
	ck_assert_uint_eq(r.qbytes, wbytes);
	ck_assert_uint_eq(r.orig_bytes, (NW + NB) * 4);
	ck_assert_uint_eq(r.nquant, 1);
	ck_assert_uint_eq(r.ndq, 1);
	ck_assert_int_eq(r.qtype, PEFTIO_Q4_NF4);
	ck_assert(!r.mixed_types);
	/* 256 f32 absmax replaced by 256 codes, 4 nested bytes and the
	 * 1 KiB map: a loss at this size. */
	ck_assert_int_eq(r.dq_saved_bits, 8 * (1024 - (256 + 4 + 1024)));
	ck_assert_double_eq_tol(peftio_inspect_dq_saving(&r),
	    -2080.0 / NW, 1e-12);
	ck_assert_double_eq_tol(peftio_bits_per_param(w->bytes, w->params),
	    8.0 * (double)wbytes / NW, 1e-12);
	ck_assert_double_eq(peftio_bits_per_param(5, 0), 0.0);
	ck_assert_str_eq(peftio_inspect_part_name(PEFTIO_PART_NESTED_ABSMAX),
	    "nested_absmax");
	peftio_inspect_free(&r);
}
END_TEST

/* The plain tensor: sums known by hand.  The 4-bit weight: close to the
 * original, the same sums with 1 and 4 threads; a tensor that does not
 * fit is refused by name. */
START_TEST(test_compare)
{
	struct peftio_scratch tmp[3] = { { 0 } };
	struct peftio_stats s1, s4;
	struct peftio_inspect r;
	struct peftio_error err;
	long kw = peftio_ckpt_find(orig, "w"), kb = peftio_ckpt_find(orig, "b");

	ck_assert_int_eq(peftio_inspect_ckpt(&r, q, &err), 0);
	ck_assert_int_eq(peftio_compare_tensor(q, row(&r, "b"), orig,
	    (size_t)kb, 2, tmp, &s1, &err), 0);
	ck_assert_uint_eq(s1.n, NB);
	ck_assert_double_eq(s1.sdd, 1.0);
	ck_assert_double_eq(s1.max_abs_error, 1.0);
	ck_assert_double_eq_tol(peftio_stats_rmse(&s1), sqrt(1.0 / 8), 1e-12);
	ck_assert_double_eq_tol(peftio_stats_snr_db(&s1), 10 * log10(204.0),
	    1e-9);
	ck_assert_double_eq_tol(peftio_stats_cosine(&s1),
	    205.0 / sqrt(204.0 * 207.0), 1e-12);

	ck_assert_int_eq(peftio_compare_tensor(q, row(&r, "w"), orig,
	    (size_t)kw, 1, tmp, &s1, &err), 0);
	ck_assert_int_eq(peftio_compare_tensor(q, row(&r, "w"), orig,
	    (size_t)kw, 4, tmp, &s4, &err), 0);
	ck_assert_mem_eq(&s1, &s4, sizeof(s1));
	ck_assert_uint_eq(s1.n, NW);
	ck_assert(peftio_stats_rmse(&s1) > 0 &&
	    peftio_stats_rmse(&s1) < 0.005);
	ck_assert(peftio_stats_cosine(&s1) > 0.98);
	ck_assert(s1.max_abs_error > 0);

	ck_assert_int_eq(peftio_compare_tensor(q, row(&r, "b"), orig,
	    (size_t)kw, 1, tmp, &s1, &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "tensor 'b': F32 with 16384 "
	    "elements does not fit the tensor's 8"));
	peftio_inspect_free(&r);
	peftio_scratch_free(&tmp[0]);
	peftio_scratch_free(&tmp[1]);
	peftio_scratch_free(&tmp[2]);
}
END_TEST

struct seen {
	int	progress, ends, failed;
};

static void
seen_progress(void *ctx, uint64_t done, uint64_t total, const char *what)
{
	struct seen *s = ctx;

	if (what == NULL)
		s->ends++;
	else
		ck_assert_uint_eq(done, (uint64_t)s->progress++);
}

static void
seen_failed(void *ctx, const struct peftio_error *err)
{
	struct seen *s = ctx;

	ck_assert_ptr_nonnull(strstr(err->msg, "tensor 'w': U8"));
	s->failed++;
}

/* A quantized checkpoint: its 4-bit weights only.  A plain one: every
 * float tensor; the 4-bit codes of the same name do not fit. */
START_TEST(test_compare_all)
{
	static const struct peftio_compare_ops ops = { seen_progress,
		seen_failed };
	struct peftio_compare_summary sum;
	struct peftio_inspect r;
	struct peftio_error err;
	struct seen seen = { 0, 0, 0 };

	ck_assert_int_eq(peftio_inspect_ckpt(&r, q, &err), 0);
	ck_assert_int_eq(peftio_inspect_compare(&r, orig, 2, &ops, &seen,
	    &sum), 0);
	ck_assert_uint_eq(sum.candidates, 1);
	ck_assert_uint_eq(sum.missing, 0);
	ck_assert_uint_eq(r.compared, 1);
	ck_assert(row(&r, "w")->compared);
	ck_assert(!row(&r, "b")->compared);
	ck_assert_mem_eq(&r.cmp, &row(&r, "w")->st, sizeof(r.cmp));
	ck_assert_int_eq(seen.progress, 1);
	ck_assert_int_eq(seen.ends, 1);
	peftio_inspect_free(&r);

	ck_assert_int_eq(peftio_inspect_ckpt(&r, orig, &err), 0);
	seen.progress = 0;
	ck_assert_int_eq(peftio_inspect_compare(&r, q, 1, &ops, &seen, &sum),
	    1);
	ck_assert_uint_eq(sum.candidates, 2);
	ck_assert_uint_eq(sum.missing, 0);
	ck_assert_int_eq(seen.failed, 1);
	ck_assert_uint_eq(r.compared, 1);
	ck_assert(row(&r, "b")->compared);
	ck_assert_double_eq(r.cmp.sdd, 1.0);
	peftio_inspect_free(&r);
}
END_TEST

/* An 8-bit weight beside a 4-bit one: one row of codes and SCB (the
 * weight_format byte counts in the file's bytes only), 8 + 32 / COLS
 * bits, originally F16 (no 2-D float tensor says otherwise); both
 * compared, the 8-bit one a whole row at a time and alike on 1 and 4
 * threads. */
START_TEST(test_int8)
{
	static const struct peftio_compare_ops ops = { NULL, NULL };
	struct peftio_scratch tmp[3] = { { 0 } };
	const struct peftio_inspect_row *m, *w;
	struct peftio_compare_summary sum;
	struct peftio_ckpt *mixed, *morig;
	struct peftio_stats s1, s4;
	struct peftio_inspect r;
	struct peftio_error err;
	long kb = peftio_ckpt_find(orig, "b");

	mixed = write_mixed(&morig);
	ck_assert_msg(peftio_inspect_ckpt(&r, mixed, &err) == 0, "%s",
	    err.msg);
	ck_assert_uint_eq(peftio_ckpt_count(mixed), 6 + 3);
	ck_assert_uint_eq(r.nrows, 2);
	m = row(&r, "m.weight");
	w = row(&r, "w");
	ck_assert(m->quantized && m->int8);
	ck_assert(w->quantized && !w->int8);
	ck_assert_str_eq(peftio_inspect_dtype(&r, m), "INT8");
	ck_assert_uint_eq(m->bw8.rows, ROWS);
	ck_assert_uint_eq(m->bw8.cols, COLS);
	ck_assert_int_eq(m->ndim, 2);
	ck_assert_uint_eq(m->shape[0], ROWS);
	ck_assert_uint_eq(m->shape[1], COLS);
	ck_assert_uint_eq(m->params, NW);
	ck_assert_uint_eq(m->part[PEFTIO_PART_CODES], NW);
	ck_assert_uint_eq(m->part[PEFTIO_PART_ABSMAX], ROWS * 4);
	ck_assert_uint_eq(m->part[PEFTIO_PART_QUANT_STATE], 0);
	ck_assert_uint_eq(m->bytes, NW + ROWS * 4);
	ck_assert_double_eq_tol(peftio_bits_per_param(m->bytes, m->params),
	    8.0 + 32.0 / COLS, 1e-12);
	ck_assert_uint_eq(r.bytes, m->bytes + 1 + w->bytes);
	ck_assert_uint_eq(r.qbytes, m->bytes + w->bytes);
	ck_assert_uint_eq(r.qparams, 2 * NW);
	ck_assert_uint_eq(r.orig_bytes, NW * 2 + NW * 4);
	ck_assert_uint_eq(r.nquant, 2);
	ck_assert_uint_eq(r.nint8, 1);
	ck_assert_uint_eq(r.ndq, 1);
	ck_assert(r.mixed_types);
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "int8 and 4-bit");

	ck_assert_int_eq(peftio_compare_tensor(mixed, m, morig, 0, 1, tmp,
	    &s1, &err), 0);
	ck_assert_int_eq(peftio_compare_tensor(mixed, m, morig, 0, 4, tmp,
	    &s4, &err), 0);
	ck_assert_mem_eq(&s1, &s4, sizeof(s1));
	ck_assert_uint_eq(s1.n, NW);
	ck_assert(peftio_stats_rmse(&s1) > 0 &&
	    peftio_stats_rmse(&s1) < 0.001);
	ck_assert(peftio_stats_cosine(&s1) > 0.999);
	ck_assert_int_eq(peftio_compare_tensor(mixed, m, orig, (size_t)kb, 1,
	    tmp, &s1, &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "tensor 'm.weight': F32 with 8 "
	    "elements does not fit the quantized weight's 16384"));

	/* "w" is in orig, "m.weight" is not */
	ck_assert_int_eq(peftio_inspect_compare(&r, orig, 2, &ops, NULL,
	    &sum), 1);
	ck_assert_uint_eq(sum.candidates, 2);
	ck_assert_uint_eq(sum.missing, 1);
	ck_assert_str_eq(sum.first_missing, "m.weight");
	ck_assert_uint_eq(r.compared, 1);
	ck_assert(row(&r, "w")->compared);
	ck_assert_int_eq(peftio_inspect_compare(&r, morig, 2, &ops, NULL,
	    &sum), 1);
	ck_assert_uint_eq(r.compared, 1);
	ck_assert(row(&r, "m.weight")->compared);
	ck_assert_mem_eq(&r.cmp, &s4, sizeof(s4));
	peftio_inspect_free(&r);
	peftio_scratch_free(&tmp[0]);
	peftio_scratch_free(&tmp[1]);
	peftio_scratch_free(&tmp[2]);
	peftio_ckpt_close(morig);
	peftio_ckpt_close(mixed);
}
END_TEST

/* The quantization types a summary names. */
START_TEST(test_qtypes)
{
	struct peftio_inspect r;

	memset(&r, 0, sizeof(r));
	r.qtype = -1;
	ck_assert_ptr_null(peftio_inspect_qtypes(&r));
	r.nquant = 3;
	r.qtype = PEFTIO_Q4_FP4;
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "fp4");
	r.qtype = PEFTIO_Q4_NF4;
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "nf4");
	r.qtype = PEFTIO_INSPECT_INT8;
	r.nint8 = 3;
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "int8");
	r.mixed_types = 1;
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "int8 and 4-bit");
	r.nint8 = 0;
	ck_assert_str_eq(peftio_inspect_qtypes(&r), "nf4 and fp4");
}
END_TEST

/* Sums of parts add up; a NaN difference is kept as the maximum. */
START_TEST(test_stats_add)
{
	struct peftio_stats a = { 1, 2, 3, 4, 0.5, 2 };
	struct peftio_stats b = { 10, 20, 30, 40, 0.25, 3 };
	struct peftio_stats n = { 0, 0, 0, 0, NAN, 1 };

	peftio_stats_add(&a, &b);
	ck_assert_double_eq(a.sxx, 11);
	ck_assert_double_eq(a.sdd, 44);
	ck_assert_double_eq(a.max_abs_error, 0.5);
	ck_assert_uint_eq(a.n, 5);
	peftio_stats_add(&a, &n);
	ck_assert(isnan(a.max_abs_error));
	peftio_stats_add(&a, &b);
	ck_assert(isnan(a.max_abs_error));
	memset(&a, 0, sizeof(a));
	ck_assert_double_eq(peftio_stats_rmse(&a), 0.0);
}
END_TEST

/* The plan of the quantized checkpoint counts the weight at its
 * original size; the assumptions name the rank and targets. */
START_TEST(test_plan)
{
	struct peftio_plan_opts o;
	struct peftio_inspect r;
	struct peftio_error err;
	struct peftio_plan p;
	char buf[1024];

	ck_assert_int_eq(peftio_inspect_ckpt(&r, q, &err), 0);
	memset(&o, 0, sizeof(o));
	o.method = PEFTIO_PLAN_FULL;
	o.r = 4;
	o.optimizer = PEFTIO_OPT_SGD;
	ck_assert_msg(peftio_plan_inspect(&r, &o, &p, &err) == 0, "%s",
	    err.msg);
	ck_assert_uint_eq(p.trainable_params, NW + NB);
	ck_assert_ptr_null(peftio_plan_targets(&o));
	o.method = PEFTIO_PLAN_IA3;
	ck_assert_str_eq(peftio_plan_targets(&o), "k_proj,v_proj,down_proj");
	o.targets = "w";
	ck_assert_str_eq(peftio_plan_targets(&o), "w");
	peftio_plan_assumptions(&o, buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "optimizer sgd with 0 bytes"));
	ck_assert_ptr_nonnull(strstr(buf, "rank 4 on q_proj,v_proj,"));
	o.method = PEFTIO_PLAN_LORA;
	peftio_plan_assumptions(&o, buf, sizeof(buf));
	ck_assert_ptr_nonnull(strstr(buf, "rank 4 on w,"));
	peftio_inspect_free(&r);
}
END_TEST

START_TEST(test_yaml)
{
	static const char json[] = "[{\"name\": \"w\", \"shape\": [64, 256], "
	    "\"bits\": 4.5, \"quant\": null, \"ok\": true, \"word\": \"yes\", "
	    "\"num\": \"12\", \"t\": [{\"a\": 1}]}, {\"n\": 2}]";
	static const char want[] = "---\nname: w\nshape: [64, 256]\n"
	    "bits: 4.5\nquant: null\nok: true\nword: \"yes\"\nnum: \"12\"\n"
	    "t:\n- a: 1\n---\n\"n\": 2\n";
	struct peftio_error err;
	size_t len;
	char *y;

	ck_assert_msg(peftio_yaml_from_json(json, strlen(json), &y, &len,
	    &err) == 0, "%s", err.msg);
	ck_assert_str_eq(y, want);
	ck_assert_uint_eq(len, strlen(want));
	free(y);
	ck_assert_int_eq(peftio_yaml_from_json("[]", 2, &y, &len, &err), 0);
	ck_assert_str_eq(y, "");
	free(y);
	ck_assert_int_eq(peftio_yaml_from_json("{}", 2, &y, &len, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_null(y);
	ck_assert_int_eq(peftio_yaml_from_json("[1,", 3, &y, &len, &err),
	    PEFTIO_EFORMAT);
}
END_TEST

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* dq-inspect's report of q.safetensors as text and as JSON: the
 * checksums verified before the table with the pieces of the 4-bit
 * weight; with PEFTIO_REPORT_SUMMARY the totals only. */
START_TEST(test_report)
{
	struct peftio_report_list *l;
	struct peftio_report *rp;
	struct peftio_error err;
	size_t len;
	char *buf;
	FILE *f;

	ck_assert_int_eq(peftio_report_open(&rp, q, "q", &err), 0);
	ck_assert_uint_eq(peftio_report_inspect(rp)->nrows, 2);
	ck_assert_int_eq(peftio_report_verify(rp, NULL, NULL, NULL), 0);
	ck_assert_ptr_nonnull(f = open_memstream(&buf, &len));
	peftio_report_text(f, rp, 0);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_msg(starts(buf, "checkpoint q\n\nverify          7 tensors "
	    "checked, 0 mismatched\n\nNAME "), "%s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "  nf4 blocksize 64 DQ: codes 8,192, "
	    "absmax codes 256, nested absmax 4, maps 1,088"));
	ck_assert_ptr_nonnull(strstr(buf, "\nDQ saving       "));
	free(buf);
	ck_assert_ptr_nonnull(f = open_memstream(&buf, &len));
	peftio_report_text(f, rp, PEFTIO_REPORT_SUMMARY);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_msg(starts(buf, "checkpoint q\n\nverify          7 tensors "
	    "checked, 0 mismatched\n\ntensors         2 (1 quantized: "), "%s",
	    buf);
	ck_assert_ptr_null(strstr(buf, "NAME"));
	free(buf);
	ck_assert_ptr_nonnull(l = peftio_report_list_new());
	ck_assert_int_eq(peftio_report_list_add(l, rp, 0, &err), 0);
	ck_assert_int_eq(peftio_report_list_add(l, rp, PEFTIO_REPORT_SUMMARY,
	    &err), 0);
	ck_assert_uint_eq(peftio_report_list_count(l), 2);
	ck_assert_ptr_nonnull(f = open_memstream(&buf, &len));
	ck_assert_int_eq(peftio_report_list_json(f, l, &err), 0);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_msg(starts(buf, "{\n  \"inputs\": [\n    {\n      "
	    "\"checkpoint\": \"q\",\n      \"tensors\": ["), "%s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "\"status\": \"ok\""));
	/* the second, totals only */
	ck_assert_ptr_nonnull(strstr(buf, "},\n    {\n      \"checkpoint\": "
	    "\"q\",\n      \"totals\": {"));
	free(buf);
	ck_assert_ptr_nonnull(f = open_memstream(&buf, &len));
	ck_assert_int_eq(peftio_report_list_yaml(f, l, &err), 0);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_msg(starts(buf, "---\ncheckpoint: q\n"), "%s",
	    buf);
	free(buf);
	peftio_report_list_free(l);
	peftio_report_free(rp);
}
END_TEST

Suite *inspect_suite(void);

Suite *inspect_suite(void)
{
	Suite *s = suite_create("inspect");
	TCase *tc = tcase_create("inspect");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_account);
	tcase_add_test(tc, test_compare);
	tcase_add_test(tc, test_compare_all);
	tcase_add_test(tc, test_plan);
	tcase_add_test(tc, test_int8);
	tcase_add_test(tc, test_report);
	suite_add_tcase(s, tc);
	tc = tcase_create("arith");
	tcase_add_test(tc, test_stats_add);
	tcase_add_test(tc, test_qtypes);
	tcase_add_test(tc, test_yaml);
	suite_add_tcase(s, tc);
	return s;
}
