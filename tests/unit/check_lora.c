/*
 * check_lora.c - PEFT adapters and their merge against PEFT's own
 * results (tests/data/lora/peft-ref.safetensors holds tensors of PEFT
 * 0.21's merge_and_unload() and add_weighted_adapter() outputs), the
 * rank/alpha pattern rules, linalg and recipes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio.h"
#include "testutil.h"

#define LORA_DATA	TEST_DATA "/lora"
#define RX_LONG		4096	/* the longest module path matched */

static const struct mcase {
	const char	*name;
	const char	*ads[2];
	enum peftio_combine method;
	double		 w[2];
	double		 density;
	double		 tol;
} cases[] = {
	{ "dora", { "dora-f32", NULL }, PEFTIO_COMBINE_NONE, { 1, 1 }, 0,
	    1e-5 },
	{ "ia3", { "ia3-f32", NULL }, PEFTIO_COMBINE_NONE, { 1, 1 }, 0, 1e-5 },
	{ "rslora", { "rslora-f32", NULL }, PEFTIO_COMBINE_NONE, { 1, 1 }, 0,
	    1e-5 },
	{ "embed", { "embed-f32", NULL }, PEFTIO_COMBINE_NONE, { 1, 1 }, 0,
	    1e-5 },
	{ "cat", { "pair/a", "pair/b" }, PEFTIO_COMBINE_CAT, { 0.7, 0.3 }, 0,
	    1e-5 },
	{ "svd", { "pair/a", "pair/b" }, PEFTIO_COMBINE_SVD, { 0.7, 0.3 }, 0,
	    1e-4 },
	{ "linear", { "pair-same-r/a", "pair-same-r/b" },
	    PEFTIO_COMBINE_LINEAR, { 0.7, 0.3 }, 0, 1e-5 },
	{ "ties", { "pair-same-r/a", "pair-same-r/b" }, PEFTIO_COMBINE_TIES,
	    { 0.7, 0.3 }, 0.5, 1e-5 },
};

/* Every reference tensor of the case, merged through the library:
 * ||ours - peft|| / ||peft - base|| within the case's tolerance. */
START_TEST(test_merge_vs_peft)
{
	const struct mcase *mc = &cases[_i];
	struct peftio_error err;
	struct peftio_ckpt *base, *ref;
	struct peftio_adapter *ads[2] = { NULL, NULL };
	struct peftio_merge *m;
	struct peftio_merge_opts o;
	char path[256], prefix[64];
	const char *name;
	float *w, *e, *wb;
	uint64_t n, ne, k, rows, r0, nr;
	size_t i, na = mc->ads[1] != NULL ? 2 : 1, checked = 0;
	double num, den;

	ck_assert_int_eq(peftio_ckpt_open(&base, LORA_DATA "/llama-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&ref, LORA_DATA
	    "/peft-ref.safetensors", &err), 0);
	for (i = 0; i < na; i++) {
		snprintf(path, sizeof(path), "%s/%s", LORA_DATA, mc->ads[i]);
		ck_assert_msg(peftio_adapter_open(&ads[i], path, &err) == 0,
		    "%s", err.msg);
	}
	memset(&o, 0, sizeof(o));
	o.method = mc->method;
	o.weights = mc->w;
	o.density = mc->density;
	o.nthreads = 3;
	ck_assert_msg(peftio_merge_create(&m, ads, na, &o, tu_ckpt_shape, base,
	    &err) == 0, "%s", err.msg);
	snprintf(prefix, sizeof(prefix), "%s/", mc->name);
	for (i = 0; i < peftio_ckpt_count(ref); i++) {
		name = peftio_ckpt_tensor(ref, i)->name;
		if (strncmp(name, prefix, strlen(prefix)) != 0)
			continue;
		name += strlen(prefix);
		ck_assert(peftio_merge_touches(m, name));
		w = tu_tensor_f32(base, name, &n);
		e = tu_tensor_f32(ref, peftio_ckpt_tensor(ref, i)->name, &ne);
		ck_assert_uint_eq(n, ne);
		num = den = 0;
		for (k = 0; k < n; k++)
			den += ((double)e[k] - w[k]) * ((double)e[k] - w[k]);
		/* The same merge a block of 64 rows at a time. */
		rows = peftio_ckpt_tensor(base, (size_t)peftio_ckpt_find(base,
		    name))->shape[0];
		wb = malloc(n * sizeof(float));
		memcpy(wb, w, n * sizeof(float));
		ck_assert_int_eq(peftio_merge_begin(m, name, n, &err), 0);
		for (r0 = 0; r0 < rows; r0 += PEFTIO_MERGE_ROWS) {
			nr = rows - r0 < PEFTIO_MERGE_ROWS ? rows - r0 :
			    PEFTIO_MERGE_ROWS;
			ck_assert_msg(peftio_merge_rows(m, wb + r0 * (n / rows),
			    r0, nr, PEFTIO_F32, &err) == 0, "%s", err.msg);
		}
		peftio_merge_end(m);
		/* Blocks must start on a multiple of 64 rows. */
		if (rows > 1) {
			ck_assert_int_eq(peftio_merge_begin(m, name, n, &err),
			    0);
			ck_assert_int_eq(peftio_merge_rows(m, wb, 1, 1,
			    PEFTIO_F32, &err), PEFTIO_EINVAL);
			peftio_merge_end(m);
		}
		ck_assert_msg(peftio_merge_apply(m, name, w, n, PEFTIO_F32,
		    &err) == 0, "%s", err.msg);
		ck_assert_msg(memcmp(w, wb, n * sizeof(float)) == 0,
		    "%s: %s: blocks differ from the whole tensor", mc->name,
		    name);
		free(wb);
		for (k = 0; k < n; k++)
			num += ((double)e[k] - w[k]) * ((double)e[k] - w[k]);
		ck_assert_msg(den > 0 && sqrt(num / den) <= mc->tol,
		    "%s: %s: relative error %g", mc->name, name,
		    sqrt(num / den));
		free(w);
		free(e);
		checked++;
	}
	ck_assert_uint_gt(checked, 0);
	peftio_merge_free(m);
	for (i = 0; i < na; i++)
		peftio_adapter_free(ads[i]);
	peftio_ckpt_close(ref);
	peftio_ckpt_close(base);
}
END_TEST

/* Tensor name of the adapter checkpoint c in f32, or NULL when absent. */
static float *
maybe_f32(struct peftio_ckpt *c, const char *name)
{
	uint64_t n;

	if (peftio_ckpt_find(c, name) < 0)
		return NULL;
	return tu_tensor_f32(c, name, &n);
}

/*
 * cat and linear: the saved factors are PEFT's formulas over the
 * inputs' factors (s the source scalings), value for value:
 * cat A = [w_a s_a A_a; w_b s_b A_b], B = [B_a, B_b]; linear
 * A = sum sign(c) sqrt|c| A_i, B = sum sqrt|c| B_i for c = w_i s_i.
 */
/* got[i] = sum over t of x[t][i] sqrt(w_t s_t), for i < n. */
static void
check_sqrt_sum(const float *got, float *const x[2], uint64_t n,
    const struct mcase *mc, const double s[2])
{
	uint64_t i;
	size_t t;
	float c;

	for (i = 0; i < n; i++) {
		c = 0.0f;
		for (t = 0; t < 2; t++)
			c += x[t][i] * (float)sqrt(mc->w[t] * s[t]);
		ck_assert_float_eq(got[i], c);
	}
}

static void
check_saved_factors(const struct mcase *mc, struct peftio_ckpt *saved,
    struct peftio_adapter *const *ads, size_t *nmod)
{
	struct peftio_ckpt *src[2];
	char path[256], key[512];
	const char *mod;
	float *a[2], *b[2], *A, *B;
	uint64_t r[2], n, R, i, k, j, rows, cols;
	double s[2];
	size_t mi, t;
	struct peftio_error err;

	for (t = 0; t < 2; t++) {
		snprintf(path, sizeof(path), "%s/%s/adapter_model.safetensors",
		    LORA_DATA, mc->ads[t]);
		ck_assert_int_eq(peftio_ckpt_open(&src[t], path, &err), 0);
	}
	for (mi = 0; mi < peftio_adapter_nmodules(ads[0]); mi++) {
		mod = peftio_adapter_module(ads[0], mi, &r[0], &s[0]);
		for (t = 0; t < peftio_adapter_nmodules(ads[1]); t++)
			if (strcmp(peftio_adapter_module(ads[1], t, &r[1],
			    &s[1]), mod) == 0)
				break;
		ck_assert_uint_lt(t, peftio_adapter_nmodules(ads[1]));
		for (t = 0; t < 2; t++) {
			snprintf(key, sizeof(key),
			    "base_model.model.%s.lora_A.weight", mod);
			a[t] = maybe_f32(src[t], key);
			snprintf(key, sizeof(key),
			    "base_model.model.%s.lora_B.weight", mod);
			b[t] = maybe_f32(src[t], key);
			ck_assert(a[t] != NULL && b[t] != NULL);
		}
		snprintf(key, sizeof(key), "base_model.model.%s.lora_A.weight",
		    mod);
		A = tu_tensor_f32(saved, key, &n);
		R = peftio_ckpt_tensor(saved, (size_t)peftio_ckpt_find(saved,
		    key))->shape[0];
		cols = n / R;
		snprintf(key, sizeof(key), "base_model.model.%s.lora_B.weight",
		    mod);
		B = tu_tensor_f32(saved, key, &n);
		rows = n / R;
		if (mc->method == PEFTIO_COMBINE_CAT) {
			ck_assert_uint_eq(R, r[0] + r[1]);
			for (t = 0, k = 0; t < 2; k += r[t], t++)
				for (i = 0; i < r[t] * cols; i++)
					ck_assert_float_eq(A[k * cols + i],
					    a[t][i] * (float)mc->w[t] *
					    (float)s[t]);
			for (i = 0; i < rows; i++)
				for (j = 0; j < R; j++)
					ck_assert_float_eq(B[i * R + j],
					    j < r[0] ? b[0][i * r[0] + j] :
					    b[1][i * r[1] + j - r[0]]);
		} else {
			ck_assert_uint_eq(R, r[0]);
			check_sqrt_sum(A, a, R * cols, mc, s);
			check_sqrt_sum(B, b, rows * R, mc, s);
		}
		for (t = 0; t < 2; t++) {
			free(a[t]);
			free(b[t]);
		}
		free(A);
		free(B);
		(*nmod)++;
	}
	for (t = 0; t < 2; t++)
		peftio_ckpt_close(src[t]);
}

/*
 * The combination written as an adapter (cases cat, svd, linear, ties):
 * not in place before commit, an existing one kept without
 * PEFTIO_W_FORCE; its config has PEFT's rank; merged alone it gives the
 * bytes of the combination's own merge, hence PEFT's result.
 */
START_TEST(test_save_adapter)
{
	const struct mcase *mc = &cases[_i];
	static const uint64_t rank[] = { 12, 8, 8, 8 };
	struct peftio_error err;
	struct peftio_ckpt *base, *ref, *saved;
	struct peftio_adapter *ads[2] = { NULL, NULL }, *sa;
	struct peftio_merge *m, *ms;
	struct peftio_merge_opts o;
	struct peftio_ckptw *w;
	char path[256], prefix[64], *cfg;
	const char *name, *dir, *mod;
	float *w1, *w2, *e;
	uint64_t n, ne, k, r;
	size_t i, checked = 0, nmod = 0, len;
	double num, den, s;

	ck_assert_int_eq(peftio_ckpt_open(&base, LORA_DATA "/llama-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&ref, LORA_DATA
	    "/peft-ref.safetensors", &err), 0);
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", LORA_DATA, mc->ads[i]);
		ck_assert_int_eq(peftio_adapter_open(&ads[i], path, &err), 0);
	}
	memset(&o, 0, sizeof(o));
	o.method = mc->method;
	o.weights = mc->w;
	o.density = mc->density;
	o.nthreads = 2;
	ck_assert_int_eq(peftio_merge_create(&m, ads, 2, &o, tu_ckpt_shape,
	    base, &err), 0);
	tu_tmpdir();
	dir = tu_path("combined");
	ck_assert_msg(peftio_merge_save_adapter(m, dir, 0, &w, &err) == 0,
	    "%s", err.msg);
	ck_assert_int_ne(access(dir, F_OK), 0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	ck_assert_int_eq(peftio_merge_save_adapter(m, dir, 0, &w, &err),
	    PEFTIO_EEXIST);
	ck_assert_ptr_null(w);
	/* Discarded: the committed one stays. */
	ck_assert_int_eq(peftio_merge_save_adapter(m, dir, PEFTIO_W_FORCE, &w,
	    &err), 0);
	peftio_ckptw_free(w);
	cfg = tu_read_file(tu_path("combined/adapter_config.json"), &len);
	snprintf(path, sizeof(path), "\"r\": %llu,",
	    (unsigned long long)rank[_i - 4]);
	ck_assert_msg(strstr(cfg, path) != NULL, "%s", cfg);
	snprintf(path, sizeof(path), "\"lora_alpha\": %llu,",
	    (unsigned long long)rank[_i - 4]);
	ck_assert_ptr_nonnull(strstr(cfg, path));
	ck_assert_ptr_nonnull(strstr(cfg, "\"rank_pattern\": {},"));
	free(cfg);

	ck_assert_msg(peftio_adapter_open(&sa, dir, &err) == 0, "%s",
	    err.msg);
	for (i = 0; i < peftio_adapter_nmodules(sa); i++) {
		mod = peftio_adapter_module(sa, i, &r, &s);
		ck_assert_ptr_nonnull(mod);
		ck_assert_uint_eq(r, rank[_i - 4]);
		ck_assert_double_eq(s, 1.0);
	}
	if (mc->method == PEFTIO_COMBINE_CAT ||
	    mc->method == PEFTIO_COMBINE_LINEAR) {
		ck_assert_int_eq(peftio_ckpt_open(&saved,
		    tu_path("combined/adapter_model.safetensors"), &err), 0);
		check_saved_factors(mc, saved, ads, &nmod);
		ck_assert_uint_eq(nmod, 14);
		peftio_ckpt_close(saved);
	}
	memset(&o, 0, sizeof(o));
	o.nthreads = 2;
	ck_assert_int_eq(peftio_merge_create(&ms, &sa, 1, &o, tu_ckpt_shape,
	    base, &err), 0);
	snprintf(prefix, sizeof(prefix), "%s/", mc->name);
	for (i = 0; i < peftio_ckpt_count(ref); i++) {
		name = peftio_ckpt_tensor(ref, i)->name;
		if (strncmp(name, prefix, strlen(prefix)) != 0)
			continue;
		name += strlen(prefix);
		w1 = tu_tensor_f32(base, name, &n);
		w2 = tu_tensor_f32(base, name, &n);
		e = tu_tensor_f32(ref, peftio_ckpt_tensor(ref, i)->name, &ne);
		ck_assert_uint_eq(n, ne);
		num = den = 0;
		for (k = 0; k < n; k++)
			den += ((double)e[k] - w1[k]) * ((double)e[k] - w1[k]);
		ck_assert_int_eq(peftio_merge_apply(m, name, w1, n, PEFTIO_F32,
		    &err), 0);
		ck_assert_int_eq(peftio_merge_apply(ms, name, w2, n,
		    PEFTIO_F32, &err), 0);
		ck_assert_msg(memcmp(w1, w2, n * sizeof(float)) == 0,
		    "%s: %s: the saved adapter merges otherwise", mc->name,
		    name);
		for (k = 0; k < n; k++)
			num += ((double)e[k] - w2[k]) * ((double)e[k] - w2[k]);
		ck_assert_msg(den > 0 && sqrt(num / den) <= mc->tol,
		    "%s: %s: relative error %g", mc->name, name,
		    sqrt(num / den));
		free(w1);
		free(w2);
		free(e);
		checked++;
	}
	ck_assert_uint_gt(checked, 0);
	peftio_merge_free(ms);
	peftio_adapter_free(sa);
	peftio_merge_free(m);
	for (i = 0; i < 2; i++)
		peftio_adapter_free(ads[i]);
	peftio_ckpt_close(ref);
	peftio_ckpt_close(base);
	tu_tmpdir_remove();
}
END_TEST

/*
 * Embeddings (lora_embedding_A/B, factored transposed as PEFT does) next
 * to Linear layers, combined with svd and cat: the saved adapter merges
 * to the combination's merge within float rounding.
 */
START_TEST(test_save_adapter_embedding)
{
	static const enum peftio_combine meth[] = {
		PEFTIO_COMBINE_SVD, PEFTIO_COMBINE_CAT
	};
	static const double wts[2] = { 0.7, 0.3 };
	struct peftio_error err;
	struct peftio_ckpt *base;
	struct peftio_adapter *ads[2], *sa;
	struct peftio_merge *m, *ms;
	struct peftio_merge_opts o;
	struct peftio_ckptw *w;
	const char *name, *dir;
	float *w1, *w2, *w0;
	uint64_t n, k;
	size_t i, checked = 0;
	double num, den;

	ck_assert_int_eq(peftio_ckpt_open(&base, LORA_DATA "/llama-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_adapter_open(&ads[0], LORA_DATA "/embed-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_adapter_open(&ads[1], LORA_DATA "/pair/a",
	    &err), 0);
	memset(&o, 0, sizeof(o));
	o.method = meth[_i];
	o.weights = wts;
	o.nthreads = 2;
	ck_assert_int_eq(peftio_merge_create(&m, ads, 2, &o, tu_ckpt_shape,
	    base, &err), 0);
	tu_tmpdir();
	dir = tu_path("emb");
	ck_assert_msg(peftio_merge_save_adapter(m, dir, 0, &w, &err) == 0,
	    "%s", err.msg);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	ck_assert_msg(peftio_adapter_open(&sa, dir, &err) == 0, "%s",
	    err.msg);
	memset(&o, 0, sizeof(o));
	o.nthreads = 2;
	ck_assert_int_eq(peftio_merge_create(&ms, &sa, 1, &o, tu_ckpt_shape,
	    base, &err), 0);
	ck_assert_uint_eq(peftio_merge_count(ms), peftio_merge_count(m));
	for (i = 0; i < peftio_ckpt_count(base); i++) {
		name = peftio_ckpt_tensor(base, i)->name;
		if (!peftio_merge_touches(m, name))
			continue;
		ck_assert(peftio_merge_touches(ms, name));
		w0 = tu_tensor_f32(base, name, &n);
		w1 = tu_tensor_f32(base, name, &n);
		w2 = tu_tensor_f32(base, name, &n);
		ck_assert_int_eq(peftio_merge_apply(m, name, w1, n, PEFTIO_F32,
		    &err), 0);
		ck_assert_int_eq(peftio_merge_apply(ms, name, w2, n,
		    PEFTIO_F32, &err), 0);
		num = den = 0;
		for (k = 0; k < n; k++) {
			num += ((double)w1[k] - w2[k]) * ((double)w1[k] - w2[k]);
			den += ((double)w1[k] - w0[k]) * ((double)w1[k] - w0[k]);
		}
		ck_assert_msg(den > 0 && sqrt(num / den) <= 1e-6,
		    "%s: %s: relative difference %g", peftio_combine_name(
		    meth[_i]), name, sqrt(num / den));
		free(w0);
		free(w1);
		free(w2);
		checked++;
	}
	ck_assert_uint_eq(checked, 15);
	peftio_merge_free(ms);
	peftio_adapter_free(sa);
	peftio_merge_free(m);
	peftio_adapter_free(ads[0]);
	peftio_adapter_free(ads[1]);
	peftio_ckpt_close(base);
	tu_tmpdir_remove();
}
END_TEST

/* Without a combination there is nothing to save. */
START_TEST(test_save_adapter_none)
{
	struct peftio_error err;
	struct peftio_ckpt *base;
	struct peftio_adapter *a;
	struct peftio_merge *m;
	struct peftio_merge_opts o;
	struct peftio_ckptw *w;

	ck_assert_int_eq(peftio_ckpt_open(&base, LORA_DATA "/llama-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_adapter_open(&a, LORA_DATA "/pair/a", &err),
	    0);
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, tu_ckpt_shape,
	    base, &err), 0);
	tu_tmpdir();
	ck_assert_int_eq(peftio_merge_save_adapter(m, tu_path("x"), 0, &w,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_null(w);
	ck_assert_int_ne(access(tu_path("x"), F_OK), 0);
	peftio_merge_free(m);
	peftio_adapter_free(a);
	peftio_ckpt_close(base);
	tu_tmpdir_remove();
}
END_TEST

START_TEST(test_adapter_read)
{
	struct peftio_error err;
	struct peftio_adapter *a;
	uint64_t r;
	double s;
	size_t i, seen = 0;
	const char *name;

	ck_assert_int_eq(peftio_adapter_open(&a, LORA_DATA "/rslora-f32",
	    &err), 0);
	ck_assert_int_eq(peftio_adapter_type(a), PEFTIO_ADAPTER_LORA);
	ck_assert_uint_eq(peftio_adapter_nmodules(a), 4);
	for (i = 0; i < peftio_adapter_nmodules(a); i++) {
		name = peftio_adapter_module(a, i, &r, &s);
		ck_assert_ptr_nonnull(name);
		ck_assert_uint_eq(r, 8);
		ck_assert_double_eq_tol(s, 16 / sqrt(8), 1e-12);
		seen += strncmp(name, "model.layers.", 13) == 0;
	}
	ck_assert_uint_eq(seen, 4);
	ck_assert_int_eq(peftio_adapter_dora(a), 0);
	peftio_adapter_free(a);
	ck_assert_int_eq(peftio_adapter_open(&a, LORA_DATA "/ia3-f32", &err),
	    0);
	ck_assert_int_eq(peftio_adapter_type(a), PEFTIO_ADAPTER_IA3);
	peftio_adapter_free(a);
	ck_assert_int_eq(peftio_adapter_open(&a, LORA_DATA "/dora-f32", &err),
	    0);
	ck_assert_int_eq(peftio_adapter_dora(a), 1);
	peftio_adapter_free(a);
	peftio_adapter_free(NULL);
	ck_assert_int_ne(peftio_adapter_open(&a, LORA_DATA "/nonexistent",
	    &err), 0);
	ck_assert_ptr_null(a);
}
END_TEST

/* A two-module LoRA: q_proj rank 2 (A [2,4], B [3,2]), v_proj
 * without its lora_B unless full. */
static unsigned char *
tiny_model(int full, size_t *len)
{
	static const char q[] = "base_model.model.model.layers.0.self_attn.";
	char hdr[1024];
	unsigned char *p;
	size_t n, i, data = full ? 88 : 72;

	n = (size_t)snprintf(hdr, sizeof(hdr), "{"
	    "\"%sq_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],"
	    "\"data_offsets\":[0,32]},"
	    "\"%sq_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],"
	    "\"data_offsets\":[32,56]},"
	    "\"%sv_proj.lora_A.weight\":{\"dtype\":\"F16\",\"shape\":[2,4],"
	    "\"data_offsets\":[56,72]}%s%s%s}", q, q, q,
	    full ? ",\"" : "", full ? q : "", full ?
	    "v_proj.lora_B.weight\":{\"dtype\":\"F16\",\"shape\":[4,2],"
	    "\"data_offsets\":[72,88]}" : "");
	*len = 8 + n + data;
	p = calloc(1, *len);
	ck_assert_ptr_nonnull(p);
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(p + 8, hdr, n);
	return p;
}

START_TEST(test_adapter_mem)
{
	struct peftio_error err;
	struct peftio_adapter *a, *b;
	char *cfg;
	void *model;
	size_t clen, mlen, i;
	uint64_t ra, rb;
	double sa, sb;

	cfg = tu_read_file(LORA_DATA "/rslora-f32/adapter_config.json", &clen);
	model = tu_read_file(LORA_DATA "/rslora-f32/adapter_model.safetensors",
	    &mlen);
	ck_assert_int_eq(peftio_adapter_open(&a, LORA_DATA "/rslora-f32",
	    &err), 0);
	ck_assert_msg(peftio_adapter_open_mem(&b, cfg, clen, model, mlen,
	    "mem", &err) == 0, "%s", err.msg);
	ck_assert_str_eq(peftio_adapter_path(b), "mem");
	ck_assert_uint_eq(peftio_adapter_nmodules(a),
	    peftio_adapter_nmodules(b));
	for (i = 0; i < peftio_adapter_nmodules(a); i++) {
		ck_assert_str_eq(peftio_adapter_module(a, i, &ra, &sa),
		    peftio_adapter_module(b, i, &rb, &sb));
		ck_assert_uint_eq(ra, rb);
		ck_assert_double_eq(sa, sb);
	}
	peftio_adapter_free(a);
	peftio_adapter_free(b);
	free(cfg);
	free(model);
}
END_TEST

static const struct {
	const char	*cfg;
	int		 full;		/* tiny_model(full) */
	int		 code;
	const char	*msg;
} bad_adapters[] = {
	{ "{\"peft_type\": \"LORA\", \"r\": 2}", 1, 0, NULL },
	{ "[]", 1, PEFTIO_EFORMAT, "ad/adapter_config.json: not a JSON "
	    "object" },
	{ "{\"r\": 2}", 1, PEFTIO_EFORMAT, "ad/adapter_config.json: no "
	    "\"peft_type\"" },
	{ "{\"peft_type\": \"LORA\", \"r\": 0}", 1, PEFTIO_EFORMAT,
	    "ad/adapter_config.json: r = 0 is not an integer from 1 to" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2.5}", 1, PEFTIO_EFORMAT,
	    "r = 2.5 is not an integer" },
	/* Was converted to an integer type before any check (undefined
	 * behaviour for a value past 2^64). */
	{ "{\"peft_type\": \"LORA\", \"r\": 1e20}", 1, PEFTIO_EFORMAT,
	    "r = 1e+20 is not an integer" },
	{ "{\"peft_type\": \"LORA\", \"r\": -3}", 1, PEFTIO_EFORMAT,
	    "r = -3 is not an integer" },
	/* Was read as the default r = 8. */
	{ "{\"peft_type\": \"LORA\", \"r\": \"2\"}", 1, PEFTIO_EFORMAT,
	    "ad/adapter_config.json: r is not a number" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": [4]}", 1,
	    PEFTIO_EFORMAT, "lora_alpha is not a number" },
	{ "{\"peft_type\": \"LORA\", \"r\": 4}", 1, PEFTIO_EFORMAT,
	    "lora_A has rank 2 but the config gives r = 4" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2}", 0, PEFTIO_EFORMAT,
	    "ad: module 'model.layers.0.self_attn.v_proj': lora_A without "
	    "lora_B" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"rank_pattern\": "
	    "{\"(\": 2}}", 1, PEFTIO_EFORMAT,
	    "rank_pattern '(': not a valid regular expression" },
	/* Were ignored: a list, a value that is no number, an invalid
	 * feedforward_modules regex, use_dora without magnitudes. */
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"rank_pattern\": "
	    "[\"q_proj\"]}", 1, PEFTIO_EFORMAT,
	    "rank_pattern is not a mapping of patterns to numbers" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"rank_pattern\": "
	    "{\"k_proj\": \"4\"}}", 1, PEFTIO_EFORMAT,
	    "rank_pattern 'k_proj': value is not a number" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"alpha_pattern\": "
	    "{\"(a)\\\\1\": 4}}", 1, PEFTIO_EUNSUPPORTED,
	    "alpha_pattern '(a)\\1': not supported: a backreference" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"alpha_pattern\": "
	    "{\"(.?){8000}x\": 4}}", 1, PEFTIO_EUNSUPPORTED,
	    "a repetition count above 255" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"use_dora\": true}", 1,
	    PEFTIO_EFORMAT, "use_dora is set, but module "
	    "'model.layers.0.self_attn.q_proj' has no lora_magnitude_vector" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"use_dora\": true, "
	    "\"layer_replication\": [[0, 1]]}", 1, PEFTIO_EUNSUPPORTED,
	    "'layer_replication' is set" },
	{ "{\"peft_type\": \"IA3\"}", 1, PEFTIO_EFORMAT,
	    "IA3 adapter with LoRA tensors" },
	{ "{\"peft_type\": \"LORA\", \"r\": 2, \"alpha_pattern\": "
	    "{\"l+++++++++++++++++++++++++++++++++++++++++++++ayer\": 3}}", 1,
	    PEFTIO_EUNSUPPORTED,
	    "ad/adapter_config.json: alpha_pattern 'l+++" },
};

START_TEST(test_adapter_bad)
{
	struct peftio_error err;
	struct peftio_adapter *a;
	const char *cfg = bad_adapters[_i].cfg;
	unsigned char *model;
	size_t mlen;
	int rc;

	model = tiny_model(bad_adapters[_i].full, &mlen);
	rc = peftio_adapter_open_mem(&a, cfg, strlen(cfg), model, mlen, "ad",
	    &err);
	ck_assert_msg(rc == bad_adapters[_i].code, "case %d: %d (%s)", _i, rc,
	    rc != 0 ? err.msg : "");
	if (rc == 0) {
		ck_assert_uint_eq(peftio_adapter_nmodules(a), 2);
		peftio_adapter_free(a);
	} else {
		ck_assert_ptr_null(a);
		ck_assert_msg(strstr(err.msg, bad_adapters[_i].msg) != NULL,
		    "case %d: '%s' lacks '%s'", _i, err.msg,
		    bad_adapters[_i].msg);
	}
	free(model);
}
END_TEST

/* No adapter_config.json: "not found", naming the file. */
START_TEST(test_adapter_no_config)
{
	struct peftio_error err;
	struct peftio_adapter *a;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(peftio_adapter_open(&a, dir, &err),
	    PEFTIO_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "/adapter_config.json"));
	tu_tmpdir_remove();
}
END_TEST

START_TEST(test_unmergeable_types)
{
	static const char *const types[] = { "PROMPT_TUNING",
	    "PREFIX_TUNING", "P_TUNING", "ADAPTION_PROMPT", "BOTTLENECK" };
	struct peftio_error err;
	struct peftio_adapter *a;
	char cfg[128];
	const char *dir;
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		dir = tu_tmpdir();
		snprintf(cfg, sizeof(cfg), "{\"peft_type\": \"%s\"}", types[i]);
		tu_write_file(tu_path("adapter_config.json"), cfg, strlen(cfg));
		ck_assert_int_eq(peftio_adapter_open(&a, dir, &err),
		    PEFTIO_EUNSUPPORTED);
		ck_assert_ptr_nonnull(strstr(err.msg, "cannot be merged"));
		tu_rmtree(dir);
	}
}
END_TEST

START_TEST(test_patterns)
{
	const char *p = "model.layers.0.self_attn.q_proj";

	ck_assert_int_eq(peftio_lora_pattern_match("q_proj", p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match("self_attn.q_proj", p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match(p, p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match("proj", p), 0);
	ck_assert_int_eq(peftio_lora_pattern_match("_proj", p), 0);
	ck_assert_int_eq(peftio_lora_pattern_match("q", p), 0);
	ck_assert_int_eq(peftio_lora_pattern_match(".*\\.0\\..*q_proj", p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match("layers\\.1\\..*", p), 0);
	ck_assert_int_eq(peftio_lora_pattern_match("(q|k)_proj", p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match("(", p), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_lora_pattern_match(
	    "layers\\.[0-9]+\\.self_attn\\.[qk]_proj", p), 1);
	ck_assert_int_eq(peftio_lora_pattern_match("[+*?{]+|q_pro{1,2}j", p),
	    1);
	ck_assert_int_eq(peftio_lora_pattern_match("q\\++_proj", p), 0);
	ck_assert_int_eq(peftio_lora_pattern_match("a{1000}", p),
	    PEFTIO_EUNSUPPORTED);
}
END_TEST

/*
 * Python's re syntax, as PEFT's configs use it: the same answers as
 * re.match(r"(.*\.)?(pattern)$", p) (checked with Python 3.12).
 */
START_TEST(test_patterns_python)
{
	static const struct {
		const char	*pat;
		int		 want;
	} tab[] = {
		{ "layers\\.\\d+\\.self_attn\\.q_proj", 1 },
		{ "layers\\.\\d\\d\\..*", 0 },
		{ "(?:q|k)_proj", 1 },
		{ "(?P<which>q)_proj", 1 },
		{ ".*?q_proj", 1 },
		{ "model\\.layers\\.0\\.self_attn\\.\\w+", 1 },
		{ "\\w+\\s", 0 },
		{ "[\\d]\\.self_attn\\.q_proj", 1 },
		{ "[^\\d]\\.self_attn\\.q_proj", 0 },
		{ "\\D+\\.0\\..*", 1 },
		{ "q_pro{,1}j", 1 },
		{ "q_proj{1,}", 1 },
		{ "q_proj}", 0 },
		{ "q_proj{", 0 },
		{ "q_proj{x}", 0 },
		{ "[\\w]*_proj", 1 },
		{ "[-\\w.]+", 1 },
		{ "[\\]]", 0 },
	};
	static const char *const unsupported[] = {
		"(a)\\1", "(?=q)q_proj", "(?i)Q_PROJ", "q_proj\\b", "\\Aq",
		"a++", "a*+", "(.?){8000}x", "a{256}", "\\x41", "(?P=x)",
		"[[:alpha:]]",
	};
	static const char *const invalid[] = {
		"a**", "*a", "(|*)", "a{3,2}", "[q", "q\\", "\\q", "a*??",
	};
	const char *p = "model.layers.0.self_attn.q_proj";
	char longname[RX_LONG + 2];
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(tab[i].pat, p) ==
		    tab[i].want, "%s", tab[i].pat);
	for (i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(unsupported[i], p) ==
		    PEFTIO_EUNSUPPORTED, "%s", unsupported[i]);
	for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(invalid[i], p) ==
		    PEFTIO_EINVAL, "%s", invalid[i]);
	/* Bounded work: a long module name is not matched at all. */
	memset(longname, 'a', RX_LONG + 1);
	longname[RX_LONG + 1] = '\0';
	ck_assert_int_eq(peftio_lora_pattern_match("(.?){255}a*", longname),
	    PEFTIO_EUNSUPPORTED);
	ck_assert_int_eq(peftio_lora_pattern_match("(.?){255}a*",
	    longname + 1), 1);
}
END_TEST

/*
 * Found by fuzz_adapter_config: glibc's regcomp() copies a repeated
 * part once per repetition, so "l++++...ayer" (from an alpha_pattern)
 * took gigabytes.  Such patterns are refused before compiling.
 */
START_TEST(test_patterns_too_large)
{
	static const char *const bad[] = {
		"l++++++++++++++++++++++++++++++++++++++++++++++++++ayer",
		"a*+", "(a{200}){200}", "(a{1000}){1000}",
		"((((((((((((((((((((a)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+",
	};
	const char *p = "model.layers.0.self_attn.q_proj";
	char deep[2 * 300 + 2];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(bad[i], p) ==
		    PEFTIO_EUNSUPPORTED, "%s", bad[i]);
	for (i = 0; i < 300; i++) {
		deep[i] = '(';
		deep[300 + i] = ')';
	}
	deep[600] = '\0';
	ck_assert_int_eq(peftio_lora_pattern_match(deep, p),
	    PEFTIO_EUNSUPPORTED);
}
END_TEST

/*
 * Found by fuzz_pattern: an unbounded repetition of something that can
 * match the empty string makes regcomp()'s closure computation
 * exponential (thirty "(a*)*" in a row would run for hours), so it is
 * refused; bounded repetitions of such parts, and loops over parts
 * that cannot be empty, are still compiled.
 */
START_TEST(test_patterns_empty_loop)
{
	static const char *const bad[] = {
		"(a*)*", "(a|)+", "(a?){2,}", "(^)*", "(a{0,3})+",
		"((x)*)*", "(a*b*)+", "(()|a)*",
	};
	static const struct {
		const char	*pat;
		int		 want;
	} good[] = {
		{ "(.?){3}q_proj", 1 },
		{ "((a)*b)*.*q_proj", 1 },
		{ "(.*\\.)*q_proj", 1 },
		{ "(a*)?.*q_proj", 1 },
		{ "(a|b|.*c)*", 0 },
	};
	const char *p = "model.layers.0.self_attn.q_proj";
	char many[30 * 5 + 1];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(bad[i], p) ==
		    PEFTIO_EUNSUPPORTED, "%s", bad[i]);
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(peftio_lora_pattern_match(good[i].pat, p) ==
		    good[i].want, "%s", good[i].pat);
	for (i = 0; i < 30; i++)
		memcpy(many + 5 * i, "(a*)*", 5);
	many[30 * 5] = '\0';
	ck_assert_int_eq(peftio_lora_pattern_match(many, p),
	    PEFTIO_EUNSUPPORTED);
}
END_TEST

START_TEST(test_combine_names)
{
	int c;

	for (c = PEFTIO_COMBINE_LINEAR; c <= PEFTIO_COMBINE_MAGNITUDE_PRUNE;
	    c++)
		ck_assert_int_eq(peftio_combine_parse(peftio_combine_name(c)),
		    c);
	ck_assert_int_eq(peftio_combine_parse("svd_ties"), -1);
	ck_assert_ptr_null(peftio_combine_name(99));
}
END_TEST

START_TEST(test_svd)
{
	struct peftio_error err;
	float a[6 * 4], c[6 * 4], u[6 * 4], s[4], vt[4 * 4], us[6 * 4];
	uint64_t seed = 7, i, j;

	for (i = 0; i < 24; i++)
		a[i] = c[i] = tu_randn(&seed);
	ck_assert_int_eq(peftio_svd(a, 6, 4, u, s, vt, &err), 0);
	for (i = 1; i < 4; i++)
		ck_assert(s[i - 1] >= s[i]);
	for (i = 0; i < 6; i++)
		for (j = 0; j < 4; j++)
			us[i * 4 + j] = u[i * 4 + j] * s[j];
	peftio_sgemm(0, 0, 6, 4, 4, 1.0f, us, 4, vt, 4, -1.0f, c, 4);
	for (i = 0; i < 24; i++)
		ck_assert_float_eq_tol(c[i], 0.0f, 1e-5f);
}
END_TEST

START_TEST(test_recipe)
{
	static const char yml[] =
	    "base: models/base\n"
	    "adapters:\n"
	    "  - path: /abs/a\n"
	    "    weight: 0.7\n"
	    "  - b\n"
	    "method: ties\n"
	    "density: 0.5\n"
	    "seed: 42\n"
	    "dtype: bf16\n"
	    "unmerge: false\n"
	    "requant: true\n"
	    "output: out\n";
	struct peftio_error err;
	struct peftio_recipe *r;

	ck_assert_msg(peftio_recipe_parse(yml, strlen(yml), "dir/r.yaml", &r,
	    &err) == 0, "%s", err.msg);
	ck_assert_str_eq(r->base, "dir/models/base");
	ck_assert_uint_eq(r->nadapters, 2);
	ck_assert_str_eq(r->adapters[0], "/abs/a");
	ck_assert_str_eq(r->adapters[1], "dir/b");
	ck_assert_int_eq(r->has_weights, 1);
	ck_assert_double_eq(r->weights[0], 0.7);
	ck_assert_double_eq(r->weights[1], 1.0);
	ck_assert_str_eq(r->method, "ties");
	ck_assert_double_eq(r->density, 0.5);
	ck_assert_uint_eq(r->seed, 42);
	ck_assert_str_eq(r->dtype, "bf16");
	ck_assert_int_eq(r->unmerge, 0);
	ck_assert_int_eq(r->requant, 1);
	ck_assert_str_eq(r->output, "dir/out");
	peftio_recipe_free(r);
	peftio_recipe_free(NULL);
	ck_assert_int_eq(peftio_recipe_parse("bogus: 1\n", 9, NULL, &r, &err),
	    PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_recipe_parse("density: 2\n", 11, NULL, &r,
	    &err), PEFTIO_EFORMAT);
	ck_assert_int_eq(peftio_recipe_parse("a: [\n", 5, NULL, &r, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_null(r);
}
END_TEST

/* A recipe fills only what the command line left unset, and names
 * itself with a method or a dtype that does not exist. */
START_TEST(test_recipe_apply)
{
	static const char yml[] =
	    "base: b\n"
	    "adapters:\n"
	    "  - path: a1\n"
	    "    weight: 0.25\n"
	    "  - a2\n"
	    "method: ties\n"
	    "density: 0.5\n"
	    "seed: 7\n"
	    "dtype: half\n"
	    "requant: true\n"
	    "output: o\n"
	    "save_adapter: sa\n";
	static const char *const cmd[] = { "x" };
	struct peftio_merge_args a = { 0 };
	struct peftio_error err;
	struct peftio_recipe *r;

	ck_assert_int_eq(peftio_recipe_parse(yml, strlen(yml), NULL, &r,
	    &err), 0);
	a.adapters = (const char **)cmd;
	a.nadapters = 1;
	a.method = -1;
	a.dtype = PEFTIO_BF16;
	a.seed = 3;
	ck_assert_msg(peftio_recipe_apply(r, "r.yaml", &a, &err) == 0, "%s",
	    err.msg);
	ck_assert_str_eq(a.base, "b");
	ck_assert_str_eq(a.output, "o");
	ck_assert_str_eq(a.save_adapter, "sa");
	ck_assert_uint_eq(a.nadapters, 1);
	ck_assert_str_eq(a.adapters[0], "x");
	ck_assert_uint_eq(a.nweights, 2);
	ck_assert_double_eq(a.weights[0], 0.25);
	ck_assert_int_eq(a.method, PEFTIO_COMBINE_TIES);
	ck_assert_int_eq(a.has_density, 1);
	ck_assert_double_eq(a.density, 0.5);
	ck_assert_uint_eq(a.seed, 3);
	ck_assert_int_eq(a.dtype, PEFTIO_BF16);
	ck_assert_int_eq(a.requant, 1);
	ck_assert_int_eq(a.unmerge, 0);
	a.dtype = -1;
	ck_assert_int_eq(peftio_recipe_apply(r, "r.yaml", &a, &err), 0);
	ck_assert_int_eq(a.dtype, PEFTIO_F16);
	peftio_recipe_free(r);

	ck_assert_int_eq(peftio_recipe_parse("method: mean\n", 13, NULL, &r,
	    &err), 0);
	memset(&a, 0, sizeof(a));
	a.method = a.dtype = -1;
	ck_assert_int_eq(peftio_recipe_apply(r, "r.yaml", &a, &err),
	    PEFTIO_EINVAL);
	ck_assert_str_eq(err.msg, "r.yaml: unknown method 'mean'");
	a.method = PEFTIO_COMBINE_NONE;
	peftio_recipe_free(r);
	ck_assert_int_eq(peftio_recipe_parse("dtype: f8\n", 10, NULL, &r,
	    &err), 0);
	ck_assert_int_eq(peftio_recipe_apply(r, "r.yaml", &a, &err),
	    PEFTIO_EINVAL);
	ck_assert_str_eq(err.msg,
	    "r.yaml: unknown dtype f8 (use f32, f16 or bf16)");
	peftio_recipe_free(r);
}
END_TEST

/* A seed is the number YAML writes, in any of its integer forms (it
 * used to be re-read from the text in decimal: "1e3" gave 1). */
START_TEST(test_recipe_seed)
{
	static const struct {
		const char	*text;
		uint64_t	 seed;
	} ok[] = {
		{ "seed: 1e3\n", 1000 }, { "seed: 0x10\n", 16 },
		{ "seed: 9007199254740992\n", 9007199254740992ULL },
		{ "seed: 7.0\n", 7 },
	};
	static const char *const bad[] = {
		"seed: -1\n", "seed: 1.5\n", "seed: 1e300\n", "seed: x\n",
		"seed: [1]\n",
	};
	struct peftio_error err;
	struct peftio_recipe *r;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(peftio_recipe_parse(ok[i].text,
		    strlen(ok[i].text), "r.yaml", &r, &err) == 0, "%s",
		    err.msg);
		ck_assert(r->has_seed);
		ck_assert_uint_eq(r->seed, ok[i].seed);
		peftio_recipe_free(r);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(peftio_recipe_parse(bad[i], strlen(bad[i]),
		    "r.yaml", &r, &err), PEFTIO_EFORMAT);
		ck_assert_ptr_nonnull(strstr(err.msg, "r.yaml: "));
		ck_assert_ptr_nonnull(strstr(err.msg, "seed"));
	}
}
END_TEST

/* A mergekit configuration is named as such, whatever key comes
 * first; a recipe with other unknown keys is not; a checkpoint is not
 * read as YAML. */
START_TEST(test_recipe_mergekit)
{
	static const struct {
		const char	*text;
		const char	*key;
	} tab[] = {
		{ "models:\n  - model: a\n    parameters: {weight: 1}\n"
		    "merge_method: linear\n", "models" },
		{ "dtype: float16\nmerge_method: ties\n", "merge_method" },
		{ "slices:\n  - sources: [{model: a}]\n", "slices" },
		{ "base_model: a\n", "base_model" },
	};
	struct peftio_error err;
	struct peftio_recipe *r;
	char want[128];
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		ck_assert_int_eq(peftio_recipe_parse(tab[i].text,
		    strlen(tab[i].text), "mk.yaml", &r, &err), PEFTIO_EFORMAT);
		ck_assert_ptr_null(r);
		snprintf(want, sizeof(want), "mk.yaml: a mergekit "
		    "configuration (%s): lora-merge recipes use", tab[i].key);
		ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
	}
	ck_assert_int_eq(peftio_recipe_parse("\10\0\0\0\0\0\0\0{}", 10,
	    "m.safetensors", &r, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "m.safetensors: a binary file "
	    "(a checkpoint?), not a YAML recipe"));
	ck_assert_int_eq(peftio_recipe_parse("base: a\nmodel: b\n", 17,
	    "r.yaml", &r, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_null(strstr(err.msg, "mergekit"));
	ck_assert_ptr_nonnull(strstr(err.msg, "unknown key 'model'"));
}
END_TEST

Suite *lora_suite(void);

Suite *lora_suite(void)
{
	Suite *s = suite_create("lora");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_merge_vs_peft, 0,
	    (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_loop_test(tc, test_save_adapter, 4, 8);
	tcase_add_loop_test(tc, test_save_adapter_embedding, 0, 2);
	tcase_add_test(tc, test_save_adapter_none);
	tcase_add_test(tc, test_adapter_read);
	tcase_add_test(tc, test_adapter_mem);
	tcase_add_loop_test(tc, test_adapter_bad, 0,
	    (int)(sizeof(bad_adapters) / sizeof(bad_adapters[0])));
	tcase_add_test(tc, test_adapter_no_config);
	tcase_add_test(tc, test_unmergeable_types);
	tcase_add_test(tc, test_patterns);
	tcase_add_test(tc, test_patterns_python);
	tcase_add_test(tc, test_patterns_too_large);
	tcase_add_test(tc, test_patterns_empty_loop);
	tcase_add_test(tc, test_combine_names);
	tcase_add_test(tc, test_svd);
	tcase_add_test(tc, test_recipe);
	tcase_add_test(tc, test_recipe_apply);
	tcase_add_test(tc, test_recipe_seed);
	tcase_add_test(tc, test_recipe_mergekit);
	suite_add_tcase(s, tc);
	return s;
}
