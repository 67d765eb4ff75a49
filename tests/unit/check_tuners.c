/*
 * check_tuners.c - PEFT's other tuners (tuners.c) against PEFT 0.21's
 * merge_and_unload(): tests/data/tuners holds one module of each
 * fixture adapter, PEFT's merged weight of it and the base weight
 * (made by tests/data/tuners/make.py).  Also the unmerge, the refused
 * types and bad adapters of each kind.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "peftio.h"
#include "testutil.h"

#define TDATA	TEST_DATA "/tuners"

static const struct tcase {
	const char	*dir;
	int		 rotation;	/* tolerance relative to |PEFT| */
} tcases[] = {
	{ "adalora", 0 }, { "loha", 0 }, { "lokr", 0 }, { "lokr-both", 0 },
	{ "vera", 0 }, { "oft", 1 }, { "boft", 1 }, { "hra", 1 },
	{ "miss", 0 }, { "vblora", 0 }, { "randlora", 0 }, { "shira", 0 },
	{ "c3a", 0 }, { "delora", 0 },
};

static double
dist(const float *a, const float *b, uint64_t n)
{
	double s = 0;
	uint64_t i;

	for (i = 0; i < n; i++)
		s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return sqrt(s);
}

static void
merge_one(struct peftio_adapter *a, struct peftio_ckpt *base, int unmerge,
    const char *name, float *w, uint64_t n)
{
	struct peftio_merge_opts o;
	struct peftio_error err;
	struct peftio_merge *m;

	memset(&o, 0, sizeof(o));
	o.unmerge = unmerge;
	o.nthreads = 2;
	ck_assert_msg(peftio_merge_create(&m, &a, 1, &o, tu_ckpt_shape, base,
	    &err) == 0, "%s", err.msg);
	ck_assert_int_eq(peftio_merge_touches(m, name), 1);
	ck_assert_int_eq(peftio_merge_count(m), 1);
	ck_assert_msg(peftio_merge_apply(m, name, w, n, PEFTIO_F32, &err) == 0,
	    "%s", err.msg);
	peftio_merge_free(m);
}

static double
norm(const float *a, uint64_t n)
{
	double s = 0;
	uint64_t i;

	for (i = 0; i < n; i++)
		s += (double)a[i] * a[i];
	return sqrt(s);
}

/* Merged as PEFT merges, within the tolerance of check-lora-merge-
 * tuners; unmerged back to the base. */
START_TEST(test_merge_vs_peft)
{
	const struct tcase *tc = &tcases[_i];
	struct peftio_ckpt *base, *ref;
	struct peftio_adapter *a;
	struct peftio_error err;
	const char *name;
	char dir[256], path[300];
	float *w, *r, *b;
	uint64_t n, n2;
	double e, tol, nr, nd;

	snprintf(dir, sizeof(dir), TDATA "/%s", tc->dir);
	snprintf(path, sizeof(path), "%s/merged.safetensors", dir);
	ck_assert_msg(peftio_adapter_open(&a, dir, &err) == 0, "%s: %s",
	    tc->dir, err.msg);
	ck_assert_int_eq(peftio_adapter_type(a), PEFTIO_ADAPTER_TUNER);
	ck_assert_int_eq(peftio_ckpt_open(&base, TDATA "/base.safetensors",
	    &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&ref, path, &err), 0);
	ck_assert_int_eq(peftio_ckpt_count(ref), 1);
	name = peftio_ckpt_tensor(ref, 0)->name;
	r = tu_tensor_f32(ref, name, &n);
	b = tu_tensor_f32(base, name, &n2);
	ck_assert_uint_eq(n, n2);
	w = tu_tensor_f32(base, name, &n2);

	merge_one(a, base, 0, name, w, n);
	nr = norm(r, n);
	nd = dist(r, b, n);
	ck_assert_msg(nd > 0, "%s: PEFT's merge changes nothing", tc->dir);
	tol = tc->rotation ? 1e-5 * nr : 1e-5 * nd + 4 * ldexp(1, -24) * nr;
	e = dist(w, r, n);
	ck_assert_msg(e <= tol, "%s: |ours - PEFT| = %g > %g", tc->dir, e,
	    tol);

	/* the unmerge takes PEFT's merged weight back to the base */
	memcpy(w, r, n * sizeof(float));
	merge_one(a, base, 1, name, w, n);
	e = dist(w, b, n);
	ck_assert_msg(e <= 1e-5 * (nd + nr), "%s: unmerged |ours - base| = "
	    "%g", tc->dir, e);
	free(w);
	free(r);
	free(b);
	peftio_ckpt_close(ref);
	peftio_ckpt_close(base);
	peftio_adapter_free(a);
}
END_TEST

/* ---- Every fixture damaged ------------------------------------------ */

/*
 * The safetensors bytes of adapter dir/adapter_model.safetensors with
 * tensor skip left out (skip < 0: none) and, when nan >= 0, the first
 * value of float tensor nan set to NaN.  *names gets the header.
 */
static unsigned char *
damaged(const char *dir, long skip, long nan, size_t *len, json_t **names)
{
	char path[300];
	unsigned char *in, *out, *hb;
	size_t inlen, hlen, off = 0, i = 0, n;
	const char *key;
	json_t *hdr, *nh, *v, *x;
	char *text;
	uint64_t a, b;
	float f = NAN;

	snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
	in = tu_read_file(path, &inlen);
	for (hlen = 0, n = 0; n < 8; n++)
		hlen |= (size_t)in[n] << (8 * n);
	hdr = json_loadb((const char *)in + 8, hlen, 0, NULL);
	ck_assert_ptr_nonnull(hdr);
	nh = json_object();
	out = malloc(inlen);
	ck_assert_ptr_nonnull(out);
	json_object_foreach(hdr, key, v) {
		if (strcmp(key, "__metadata__") == 0)
			continue;
		if ((long)i++ == skip)
			continue;
		x = json_array_get(json_object_get(v, "data_offsets"), 0);
		a = (uint64_t)json_integer_value(x);
		x = json_array_get(json_object_get(v, "data_offsets"), 1);
		b = (uint64_t)json_integer_value(x);
		memcpy(out + off, in + 8 + hlen + a, b - a);
		if ((long)i - 1 == nan)
			memcpy(out + off, &f, sizeof(f));
		x = json_deep_copy(v);
		json_object_set_new(x, "data_offsets", json_pack("[II]",
		    (json_int_t)off, (json_int_t)(off + b - a)));
		json_object_set_new(nh, key, x);
		off += b - a;
	}
	text = json_dumps(nh, JSON_COMPACT);
	n = strlen(text);
	hb = malloc(8 + n + off + 1);
	ck_assert_ptr_nonnull(hb);
	for (i = 0; i < 8; i++)
		hb[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(hb + 8, text, n);
	memcpy(hb + 8 + n, out, off);
	*len = 8 + n + off;
	*names = hdr;
	free(text);
	free(out);
	free(in);
	json_decref(nh);
	return hb;
}

/* Open dir's config with model bytes st and merge it into the base
 * tensor name (w, n values): 0, or the error (one line, naming the
 * adapter) of the open or of the plan. */
static int
try_merge(const char *dir, const unsigned char *st, size_t len,
    struct peftio_ckpt *base, const char *name, float *w, uint64_t n,
    struct peftio_error *err)
{
	struct peftio_adapter *a;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	char path[300], *cfg;
	size_t clen;
	int rc;

	snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
	cfg = tu_read_file(path, &clen);
	rc = peftio_adapter_open_mem(&a, cfg, clen, st, len, "damaged", err);
	free(cfg);
	if (rc != 0)
		return rc;
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	if ((rc = peftio_merge_create(&m, &a, 1, &o, tu_ckpt_shape, base,
	    err)) == 0) {
		rc = peftio_merge_apply(m, name, w, n, PEFTIO_F32, err);
		peftio_merge_free(m);
	}
	peftio_adapter_free(a);
	return rc;
}

/*
 * Each tensor of each fixture left out, and NaN put into each float
 * tensor: the adapter is refused with one line naming the adapter (and
 * for NaN the tensor), or, when the tensor was redundant (a second copy
 * of a shared projection), merged to the same weights as the whole
 * adapter.  Never a crash, never a wrong merge.
 */
START_TEST(test_fixture_damaged)
{
	const struct tcase *tc = &tcases[_i];
	struct peftio_ckpt *base, *ref;
	struct peftio_error err;
	char dir[256], path[300];
	const char *name, *key;
	unsigned char *st;
	json_t *hdr, *v;
	float *w, *want;
	uint64_t n;
	size_t len, k, nt, refused = 0;
	long pass;
	int rc;

	snprintf(dir, sizeof(dir), TDATA "/%s", tc->dir);
	snprintf(path, sizeof(path), "%s/merged.safetensors", dir);
	ck_assert_int_eq(peftio_ckpt_open(&base, TDATA "/base.safetensors",
	    &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&ref, path, &err), 0);
	name = peftio_ckpt_tensor(ref, 0)->name;
	want = tu_tensor_f32(base, name, &n);
	st = damaged(dir, -1, -1, &len, &hdr);
	ck_assert_int_eq(try_merge(dir, st, len, base, name, want, n, &err),
	    0);
	free(st);
	nt = json_object_size(hdr) - (json_object_get(hdr,
	    "__metadata__") != NULL);
	for (pass = 0; pass < 2; pass++)
		for (k = 0; k < nt; k++) {
			/* the k-th tensor (the header's order) */
			key = NULL;
			{
				size_t i = 0;
				const char *kk;

				json_object_foreach(hdr, kk, v) {
					if (strcmp(kk, "__metadata__") == 0)
						continue;
					if (i++ == k)
						key = kk;
				}
			}
			ck_assert_ptr_nonnull(key);
			v = json_object_get(json_object_get(hdr, key), "dtype");
			if (pass == 1 && strcmp(json_string_value(v), "F32") !=
			    0)
				continue;
			st = damaged(dir, pass == 0 ? (long)k : -1,
			    pass == 1 ? (long)k : -1, &len, &v);
			json_decref(v);
			w = tu_tensor_f32(base, name, &n);
			peftio_error_clear(&err);
			rc = try_merge(dir, st, len, base, name, w, n, &err);
			if (rc == 0)
				ck_assert_msg(memcmp(w, want, n *
				    sizeof(float)) == 0, "%s: %s %s: merged "
				    "otherwise", tc->dir, pass ? "NaN in" :
				    "without", key);
			else {
				refused++;
				ck_assert_msg(strncmp(err.msg, "damaged", 7) ==
				    0 && strchr(err.msg, '\n') == NULL,
				    "%s: %s %s: '%s'", tc->dir, pass ?
				    "NaN in" : "without", key, err.msg);
				if (pass == 1)
					ck_assert_msg(strstr(err.msg, key) !=
					    NULL, "%s: NaN in %s: '%s' names "
					    "no tensor", tc->dir, key,
					    err.msg);
			}
			free(w);
			free(st);
		}
	/* every NaN and every missing factor is refused */
	ck_assert_uint_gt(refused, 0);
	json_decref(hdr);
	free(want);
	peftio_ckpt_close(ref);
	peftio_ckpt_close(base);
}
END_TEST

/* ---- Bad adapters, built in memory --------------------------------- */

#define VP	"base_model.model.model.layers.0.self_attn.v_proj."

/*
 * A safetensors file from spec "name d0 d1 ...; name ...": F32 tensors
 * (I32 when the name ends with "indices"), named VP + name (name alone
 * when it starts with '@'), valued 0.01 * (i % 7 + 1); the float at
 * index nan of the first tensor is NaN when nan >= 0.
 */
static unsigned char *
mkst(const char *spec, long nan, size_t *len)
{
	char hdr[4096], *s, *tok, *save = NULL, *name, *dim, *save2;
	size_t hn = 0, off = 0, i, first = 1;
	unsigned char *p;
	float f;

	s = strdup(spec);
	ck_assert_ptr_nonnull(s);
	hn += (size_t)snprintf(hdr + hn, sizeof(hdr) - hn, "{");
	for (tok = strtok_r(s, ";", &save); tok != NULL;
	    tok = strtok_r(NULL, ";", &save)) {
		size_t numel = 1, nd = 0;
		char dims[128];
		size_t dn = 0;
		int ints;

		name = strtok_r(tok, " ", &save2);
		dims[0] = '\0';
		while ((dim = strtok_r(NULL, " ", &save2)) != NULL) {
			numel *= (size_t)atol(dim);
			dn += (size_t)snprintf(dims + dn, sizeof(dims) - dn,
			    "%s%s", nd++ ? "," : "", dim);
		}
		ints = strlen(name) > 7 &&
		    strcmp(name + strlen(name) - 7, "indices") == 0;
		hn += (size_t)snprintf(hdr + hn, sizeof(hdr) - hn,
		    "%s\"%s%s\":{\"dtype\":\"%s\",\"shape\":[%s],"
		    "\"data_offsets\":[%zu,%zu]}", first ? "" : ",",
		    name[0] == '@' ? "" : VP, name + (name[0] == '@'),
		    ints ? "I32" : "F32", dims, off, off + 4 * numel);
		off += 4 * numel;
		first = 0;
	}
	hn += (size_t)snprintf(hdr + hn, sizeof(hdr) - hn, "}");
	ck_assert_uint_lt(hn, sizeof(hdr) - 1);
	free(s);
	*len = 8 + hn + off;
	p = calloc(1, *len);
	ck_assert_ptr_nonnull(p);
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)hn >> (8 * i));
	memcpy(p + 8, hdr, hn);
	for (i = 0; i < off / 4; i++) {
		f = 0.01f * (float)(i % 7 + 1);
		if ((long)i == nan)
			f = NAN;
		memcpy(p + 8 + hn + 4 * i, &f, 4);
	}
	return p;
}

static const struct bad {
	const char	*cfg;
	const char	*spec;
	long		 nan;
	int		 code;
	const char	*msg;
} bads[] = {
	/* missing factor */
	{ "{\"peft_type\":\"LOHA\",\"r\":2,\"alpha\":2}",
	  "hada_w1_a 32 2;hada_w1_b 2 64;hada_w2_a 32 2", -1,
	  PEFTIO_EFORMAT, "no hada_w2_b tensor" },
	{ "{\"peft_type\":\"ADALORA\"}", "lora_A 2 64;lora_B 32 2", -1,
	  PEFTIO_EFORMAT, "no lora_E tensor" },
	{ "{\"peft_type\":\"LOKR\",\"r\":2}", "lokr_w1 4 8;lokr_w2_a 8 2", -1,
	  PEFTIO_EFORMAT, "no lokr_w2_b tensor" },
	{ "{\"peft_type\":\"RANDLORA\",\"r\":8}",
	  "randlora_lambda 8 4;@base_model.randlora_A 8 1 64;"
	  "@base_model.randlora_B 64 8 8", -1, PEFTIO_EFORMAT,
	  "no randlora_gamma tensor" },
	{ "{\"peft_type\":\"BOFT\"}", "boft_R 1 8 8 8", -1, PEFTIO_EFORMAT,
	  "no boft_s tensor" },
	/* wrong shape */
	{ "{\"peft_type\":\"LOHA\",\"r\":2,\"alpha\":2}",
	  "hada_w1_a 32 2;hada_w1_b 2 64;hada_w2_a 32 2;hada_w2_b 3 64", -1,
	  PEFTIO_EFORMAT, VP "hada_w2_b" },
	{ "{\"peft_type\":\"DELORA\",\"r\":2}",
	  "delora_A 2 64;delora_B 32 2;delora_lambda 1;delora_w_norm 32", -1,
	  PEFTIO_EFORMAT, VP "delora_w_norm" },
	{ "{\"peft_type\":\"VBLORA\",\"topk\":2}",
	  "vblora_logits_A 2 8 16;vblora_logits_B 4 2 16;"
	  "@base_model.vblora_vector_bank 32 8", -1, PEFTIO_EFORMAT,
	  VP "vblora_logits_A" },
	{ "{\"peft_type\":\"SHIRA\"}", "shira_weight 4;shira_indices 2 5", -1,
	  PEFTIO_EFORMAT, VP "shira_indices" },
	/* r = 0 */
	{ "{\"peft_type\":\"LOKR\",\"r\":0,\"alpha\":1}",
	  "lokr_w1 4 8;lokr_w2 8 8", -1, PEFTIO_EFORMAT, "r = 0" },
	{ "{\"peft_type\":\"LOHA\",\"r\":2,\"alpha\":2}",
	  "hada_w1_a 32 0;hada_w1_b 0 64;hada_w2_a 32 0;hada_w2_b 0 64", -1,
	  PEFTIO_EFORMAT, "rank 0, but the config gives r = 2" },
	{ "{\"peft_type\":\"HRA\",\"r\":0}", "hra_u 64 0", -1, PEFTIO_EFORMAT,
	  "rank 0" },
	/* a config r of 0, or one the tensors do not have */
	{ "{\"peft_type\":\"HRA\",\"r\":0}", "hra_u 64 2", -1, PEFTIO_EFORMAT,
	  "r = 0 is not a positive integer" },
	{ "{\"peft_type\":\"VERA\",\"r\":0}",
	  "@base_model.vera_A 4 64;vera_lambda_b 32;vera_lambda_d 4;"
	  "@base_model.vera_B 64 4", -1, PEFTIO_EFORMAT,
	  "r = 0 is not a positive integer" },
	{ "{\"peft_type\":\"VERA\",\"r\":8}",
	  "@base_model.vera_A 4 64;vera_lambda_b 32;vera_lambda_d 4;"
	  "@base_model.vera_B 64 4", -1, PEFTIO_EFORMAT,
	  VP "vera_lambda_d': rank 4, but the config gives r = 8" },
	{ "{\"peft_type\":\"MISS\",\"r\":4}", "miss_block 2 32", -1,
	  PEFTIO_EFORMAT, VP "miss_block': rank 2, but" },
	{ "{\"peft_type\":\"DELORA\",\"r\":2,\"rank_pattern\":{\"v_proj\":3}}",
	  "delora_A 2 64;delora_B 32 2;delora_lambda 1;delora_w_norm 64", -1,
	  PEFTIO_EFORMAT, VP "delora_A': rank 2, but the config gives r = 3" },
	{ "{\"peft_type\":\"RANDLORA\",\"r\":-8}",
	  "randlora_lambda 8 4;randlora_gamma 4 32;"
	  "@base_model.randlora_A 8 1 64;@base_model.randlora_B 64 8 8", -1,
	  PEFTIO_EFORMAT, "r = -8 is not a positive integer" },
	{ "{\"peft_type\":\"VBLORA\",\"r\":1.5,\"topk\":2}",
	  "vblora_logits_A 2 8 16;vblora_logits_B 4 2 16;"
	  "@base_model.vblora_vector_bank 16 8", -1, PEFTIO_EFORMAT,
	  "r = 1.5 is not a positive integer" },
	/* non-finite */
	{ "{\"peft_type\":\"LOHA\",\"r\":2,\"alpha\":2}",
	  "hada_w1_a 32 2;hada_w1_b 2 64;hada_w2_a 32 2;hada_w2_b 2 64", 5,
	  PEFTIO_ENONFINITE, VP "hada_w1_a" },
	{ "{\"peft_type\":\"OFT\",\"oft_block_size\":16}", "oft_R.weight 4 120",
	  119, PEFTIO_ENONFINITE, VP "oft_R.weight" },
	{ "{\"peft_type\":\"VERA\",\"r\":4}",
	  "@base_model.vera_A 4 64;vera_lambda_b 32;vera_lambda_d 4;"
	  "@base_model.vera_B 64 4", 3, PEFTIO_ENONFINITE,
	  "base_model.vera_A" },
	/* mismatched block size */
	{ "{\"peft_type\":\"OFT\",\"oft_block_size\":8}", "oft_R.weight 4 120",
	  -1, PEFTIO_EFORMAT, "oft_block_size" },
	{ "{\"peft_type\":\"OFT\"}", "oft_R.weight 4 121", -1, PEFTIO_EFORMAT,
	  VP "oft_R.weight" },
	{ "{\"peft_type\":\"BOFT\",\"boft_block_size\":4}",
	  "boft_R 1 8 8 8;boft_s 32 1", -1, PEFTIO_EFORMAT,
	  "boft_block_size" },
	{ "{\"peft_type\":\"BOFT\"}", "boft_R 1 8 8 4;boft_s 32 1", -1,
	  PEFTIO_EFORMAT, VP "boft_R" },
	{ "{\"peft_type\":\"C3A\",\"block_size\":8}", "c3a_kernel 2 4 16", -1,
	  PEFTIO_EFORMAT, "match block_size" },
	/* what cannot be merged from the files */
	{ "{\"peft_type\":\"VERA\",\"r\":4,\"save_projection\":false}",
	  "vera_lambda_b 32;vera_lambda_d 4", -1, PEFTIO_EUNSUPPORTED,
	  "save_projection" },
	{ "{\"peft_type\":\"FOURIERFT\"}", "fourierft_spectrum 64", -1,
	  PEFTIO_EUNSUPPORTED, "random_loc_seed" },
	{ "{\"peft_type\":\"ROAD\"}", "road_theta 32", -1,
	  PEFTIO_EUNSUPPORTED, "ROAD" },
	{ "{\"peft_type\":\"MISS\",\"init_weights\":\"bat\"}",
	  "miss_block 4 8 4", -1, PEFTIO_EFORMAT, "for \"bat\"" },
	{ "{\"peft_type\":\"OFT\",\"fan_in_fan_out\":true}",
	  "oft_R.weight 4 120", -1, PEFTIO_EUNSUPPORTED, "fan_in_fan_out" },
	{ "{\"peft_type\":\"LOHA\",\"r\":2}",
	  "hada_w1_a 32 2;hada_w1_b 2 64;hada_w2_a 32 2;hada_w2_b 2 64;"
	  "hada_t1 2 2 3 3", -1, PEFTIO_EFORMAT, "no hada_t2 tensor" },
	{ "{\"peft_type\":\"HRA\"}", "hra_u 64 2;hra_v 64 2", -1,
	  PEFTIO_EUNSUPPORTED, VP "hra_v" },
	{ "{\"peft_type\":\"VBLORA\",\"save_only_topk_weights\":true}",
	  "vblora_logits_A 2 8 16", -1, PEFTIO_EUNSUPPORTED,
	  "save_only_topk_weights" },
};

START_TEST(test_adapter_bad)
{
	const struct bad *b = &bads[_i];
	struct peftio_adapter *a = (void *)1;
	struct peftio_error err;
	unsigned char *st;
	size_t len;
	int rc;

	st = mkst(b->spec, b->nan, &len);
	rc = peftio_adapter_open_mem(&a, b->cfg, strlen(b->cfg), st, len,
	    "bad", &err);
	ck_assert_msg(rc == b->code, "case %d: rc %d, want %d (%s)", _i, rc,
	    b->code, rc ? err.msg : "");
	ck_assert_ptr_null(a);
	ck_assert_msg(strstr(err.msg, b->msg) != NULL, "case %d: '%s' lacks "
	    "'%s'", _i, err.msg, b->msg);
	ck_assert_msg(strncmp(err.msg, "bad", 3) == 0, "case %d: '%s' names "
	    "no file", _i, err.msg);
	free(st);
}
END_TEST

/* A base of v_proj [32, 64] (and q_proj [64, 64]). */
static int
vshape(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	(void)arg;
	*ndim = 2;
	shape[1] = 64;
	if (strcmp(name, "model.layers.0.self_attn.v_proj.weight") == 0)
		shape[0] = 32;
	else if (strcmp(name, "model.layers.0.self_attn.q_proj.weight") == 0)
		shape[0] = 64;
	else
		return -1;
	return 0;
}

/* Adapters that open but do not fit the base, or fail when merged. */
static const struct bad plan_bads[] = {
	{ "{\"peft_type\":\"LOKR\",\"r\":2}", "lokr_w1 4 8;lokr_w2 4 8", -1,
	  PEFTIO_EMISMATCH, VP "lokr_w2" },
	{ "{\"peft_type\":\"MISS\",\"r\":8}", "miss_block 8 16", -1,
	  PEFTIO_EMISMATCH, VP "miss_block" },
	{ "{\"peft_type\":\"OFT\"}", "oft_R.weight 2 120", -1,
	  PEFTIO_EMISMATCH, VP "oft_R.weight" },
	{ "{\"peft_type\":\"C3A\"}", "c3a_kernel 2 2 16", -1,
	  PEFTIO_EMISMATCH, VP "c3a_kernel" },
	{ "{\"peft_type\":\"HRA\"}", "hra_u 32 2", -1, PEFTIO_EMISMATCH,
	  VP "hra_u" },
	{ "{\"peft_type\":\"SHIRA\"}", "shira_weight 2;shira_indices 2 2", -1,
	  PEFTIO_EMISMATCH, VP "shira_indices" },	/* huge indices */
};

START_TEST(test_plan_bad)
{
	const struct bad *b = &plan_bads[_i];
	struct peftio_adapter *a;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	struct peftio_error err;
	unsigned char *st;
	float w[32 * 64];
	size_t len;
	int rc;

	st = mkst(b->spec, b->nan, &len);
	ck_assert_msg(peftio_adapter_open_mem(&a, b->cfg, strlen(b->cfg), st,
	    len, "bad", &err) == 0, "case %d: %s", _i, err.msg);
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	rc = peftio_merge_create(&m, &a, 1, &o, vshape, NULL, &err);
	if (rc == 0) {
		memset(w, 0, sizeof(w));
		rc = peftio_merge_apply(m, "model.layers.0.self_attn.v_proj."
		    "weight", w, 32 * 64, PEFTIO_F32, &err);
		peftio_merge_free(m);
	}
	ck_assert_msg(rc == b->code, "case %d: rc %d, want %d (%s)", _i, rc,
	    b->code, rc ? err.msg : "");
	ck_assert_msg(strstr(err.msg, b->msg) != NULL, "case %d: '%s' lacks "
	    "'%s'", _i, err.msg, b->msg);
	peftio_adapter_free(a);
	free(st);
}
END_TEST

/* -m stays LoRA's: a tuner, alone or with a LoRA adapter, is refused. */
START_TEST(test_combine_refused)
{
	struct peftio_adapter *ads[2];
	struct peftio_merge_opts o;
	struct peftio_merge *m = NULL;
	struct peftio_error err;
	struct peftio_ckpt *base;
	double w[2] = { 1, 1 };

	ck_assert_int_eq(peftio_adapter_open(&ads[0], TDATA "/loha", &err), 0);
	ck_assert_int_eq(peftio_adapter_open(&ads[1], TEST_DATA
	    "/lora/rslora-f32", &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&base, TDATA "/base.safetensors",
	    &err), 0);
	memset(&o, 0, sizeof(o));
	o.method = PEFTIO_COMBINE_LINEAR;
	o.weights = w;
	o.nthreads = 1;
	ck_assert_int_eq(peftio_merge_create(&m, ads, 1, &o, tu_ckpt_shape, base,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(err.msg, "LOHA adapter cannot be "
	    "combined"));
	o.method = PEFTIO_COMBINE_CAT;
	ck_assert_int_eq(peftio_merge_create(&m, ads, 2, &o, tu_ckpt_shape, base,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "combines LoRA adapters only"));
	/* nor weighted alone */
	o.method = PEFTIO_COMBINE_NONE;
	w[0] = 0.5;
	ck_assert_int_eq(peftio_merge_create(&m, ads, 1, &o, tu_ckpt_shape, base,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "cannot be weighted"));
	peftio_ckpt_close(base);
	peftio_adapter_free(ads[0]);
	peftio_adapter_free(ads[1]);
}
END_TEST

/* fan_in_fan_out (GPT-2 Conv1D): the base stored [in, out] gets the
 * transpose of the change, bit for bit. */
static int fifo_on;

static int
tshape(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	int rc = tu_ckpt_shape(arg, name, ndim, shape);
	uint64_t x;

	if (rc == 0 && fifo_on && *ndim == 2) {
		x = shape[0];
		shape[0] = shape[1];
		shape[1] = x;
	}
	return rc;
}

static const char *const fifo_dirs[] = { "adalora", "vera", "vblora",
    "randlora" };

START_TEST(test_fan_in_fan_out)
{
	struct peftio_adapter *a, *af;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	struct peftio_error err;
	struct peftio_ckpt *base;
	const char *name = "model.layers.0.self_attn.v_proj.weight";
	char dir[256], path[300], *cfg, *p;
	unsigned char *model;
	size_t cfglen, modellen;
	float *w, *wt;
	uint64_t n, i, j, rows = 32, cols = 64;

	snprintf(dir, sizeof(dir), TDATA "/%s", fifo_dirs[_i]);
	ck_assert_int_eq(peftio_adapter_open(&a, dir, &err), 0);
	snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
	cfg = tu_read_file(path, &cfglen);
	p = strstr(cfg, "\"fan_in_fan_out\": false");
	ck_assert_ptr_nonnull(p);
	memcpy(p, "\"fan_in_fan_out\":  true", 23);
	snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
	model = tu_read_file(path, &modellen);
	ck_assert_msg(peftio_adapter_open_mem(&af, cfg, cfglen, model,
	    modellen, "fifo", &err) == 0, "%s", err.msg);
	ck_assert_int_eq(peftio_ckpt_open(&base, TDATA "/base.safetensors",
	    &err), 0);
	w = tu_tensor_f32(base, name, &n);
	ck_assert_uint_eq(n, rows * cols);
	wt = malloc(n * sizeof(float));
	ck_assert_ptr_nonnull(wt);
	for (i = 0; i < rows; i++)
		for (j = 0; j < cols; j++)
			wt[j * rows + i] = w[i * cols + j];
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	fifo_on = 0;
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, tshape, base,
	    &err), 0);
	ck_assert_int_eq(peftio_merge_apply(m, name, w, n, PEFTIO_F32, &err),
	    0);
	peftio_merge_free(m);
	fifo_on = 1;
	ck_assert_msg(peftio_merge_create(&m, &af, 1, &o, tshape, base,
	    &err) == 0, "%s", err.msg);
	ck_assert_int_eq(peftio_merge_apply(m, name, wt, n, PEFTIO_F32, &err),
	    0);
	peftio_merge_free(m);
	for (i = 0; i < rows; i++)
		for (j = 0; j < cols; j++)
			ck_assert_msg(wt[j * rows + i] == w[i * cols + j],
			    "%s: [%llu, %llu] differs", fifo_dirs[_i],
			    (unsigned long long)i, (unsigned long long)j);
	fifo_on = 0;
	free(w);
	free(wt);
	free(cfg);
	free(model);
	peftio_ckpt_close(base);
	peftio_adapter_free(a);
	peftio_adapter_free(af);
}
END_TEST

/* modules_to_save: a full tensor in a tuner adapter replaces the base's;
 * a replacement cannot be unmerged. */
static int
lm_shape(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	if (strcmp(name, "lm_head.weight") == 0) {
		*ndim = 2;
		shape[0] = 4;
		shape[1] = 8;
		return 0;
	}
	return vshape(arg, name, ndim, shape);
}

START_TEST(test_modules_to_save)
{
	static const char cfg[] = "{\"peft_type\":\"HRA\",\"r\":2}";
	struct peftio_adapter *a;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	struct peftio_error err;
	unsigned char *st;
	float w[32];
	size_t len, i;

	st = mkst("@base_model.model.lm_head.weight 4 8;hra_u 64 2", -1,
	    &len);
	ck_assert_msg(peftio_adapter_open_mem(&a, cfg, strlen(cfg), st, len,
	    "mts", &err) == 0, "%s", err.msg);
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, lm_shape, NULL,
	    &err), 0);
	ck_assert_int_eq(peftio_merge_count(m), 2);
	ck_assert_int_eq(peftio_merge_touches(m, "lm_head.weight"), 1);
	memset(w, 0, sizeof(w));
	ck_assert_int_eq(peftio_merge_apply(m, "lm_head.weight", w, 32,
	    PEFTIO_F32, &err), 0);
	for (i = 0; i < 32; i++)
		ck_assert_float_eq(w[i], 0.01f * (float)(i % 7 + 1));
	peftio_merge_free(m);
	o.unmerge = 1;
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, lm_shape, NULL,
	    &err), PEFTIO_EUNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(err.msg, "modules_to_save"));
	peftio_adapter_free(a);
	free(st);
}
END_TEST

/* MiSS "bat": W' = W + W_blk B_a + B_a per 8 x 8 block (a the block
 * row), computed here directly; the unmerge inverts it. */
START_TEST(test_miss_bat)
{
	static const char cfg[] = "{\"peft_type\":\"MISS\",\"r\":8,"
	    "\"init_weights\":\"bat\"}";
	const char *name = "model.layers.0.self_attn.v_proj.weight";
	struct peftio_adapter *a;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	struct peftio_error err;
	unsigned char *st;
	float w[32 * 64], w0[32 * 64], bl[4 * 8 * 8];
	double want, e = 0, ref = 0;
	size_t len, i, j, k, hn;
	uint64_t seed = 7;

	st = mkst("miss_block 4 8 8", -1, &len);
	memcpy(&hn, st, 8);
	for (i = 0; i < 4 * 8 * 8; i++) {
		bl[i] = 0.1f * tu_randn(&seed);
		memcpy(st + 8 + hn + 4 * i, &bl[i], 4);
	}
	for (i = 0; i < 32 * 64; i++)
		w[i] = w0[i] = tu_randn(&seed);
	ck_assert_msg(peftio_adapter_open_mem(&a, cfg, strlen(cfg), st, len,
	    "bat", &err) == 0, "%s", err.msg);
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, vshape, NULL,
	    &err), 0);
	ck_assert_int_eq(peftio_merge_apply(m, name, w, 32 * 64, PEFTIO_F32,
	    &err), 0);
	peftio_merge_free(m);
	for (i = 0; i < 32; i++)
		for (j = 0; j < 64; j++) {
			const float *b = bl + (i / 8) * 64;

			want = (double)w0[i * 64 + j] + b[(i % 8) * 8 + j % 8];
			for (k = 0; k < 8; k++)
				want += (double)w0[i * 64 + (j / 8) * 8 + k] *
				    b[k * 8 + j % 8];
			e += (w[i * 64 + j] - want) * (w[i * 64 + j] - want);
			ref += want * want;
		}
	ck_assert_msg(sqrt(e) <= 1e-6 * sqrt(ref), "bat: error %g",
	    sqrt(e / ref));
	o.unmerge = 1;
	ck_assert_int_eq(peftio_merge_create(&m, &a, 1, &o, vshape, NULL,
	    &err), 0);
	ck_assert_int_eq(peftio_merge_apply(m, name, w, 32 * 64, PEFTIO_F32,
	    &err), 0);
	peftio_merge_free(m);
	ck_assert_msg(dist(w, w0, 32 * 64) <= 1e-5 * norm(w0, 32 * 64),
	    "bat unmerge: %g", dist(w, w0, 32 * 64));
	peftio_adapter_free(a);
	free(st);
}
END_TEST

/* Convolutions: LoHa's and LoKr's effective Conv2d forms (CP rebuilds,
 * einsum "i j k l, i p, j r -> p r k l") against the formula computed
 * here, on a base [8, 4, 3, 3]. */
static int
cshape(void *arg, const char *name, int *ndim, uint64_t *shape)
{
	(void)arg;
	if (strcmp(name, "model.layers.0.self_attn.v_proj.weight") != 0)
		return -1;
	*ndim = 4;
	shape[0] = 8;
	shape[1] = 4;
	shape[2] = shape[3] = 3;
	return 0;
}

/* Random values in st's tensors; their floats are returned. */
static float *
st_random(unsigned char *st, size_t len, uint64_t seed)
{
	size_t hn, i, n;
	float *f;

	memcpy(&hn, st, 8);
	n = (len - 8 - hn) / 4;
	f = malloc(n * sizeof(float));
	ck_assert_ptr_nonnull(f);
	for (i = 0; i < n; i++) {
		f[i] = 0.3f * tu_randn(&seed);
		memcpy(st + 8 + hn + 4 * i, &f[i], 4);
	}
	return f;
}

/* cp[p, q, k] = sum t[i, j, k] a[i, p] b[j, q], t [2, 2, 9] */
static double
cp(const float *t, const float *a, const float *b, size_t np, size_t nq,
    size_t p, size_t q, size_t k)
{
	double x = 0;
	size_t i, j;

	for (i = 0; i < 2; i++)
		for (j = 0; j < 2; j++)
			x += (double)t[(i * 2 + j) * 9 + k] * a[i * np + p] *
			    b[j * nq + q];
	return x;
}

START_TEST(test_conv_cp)
{
	static const char *const cfgs[] = {
		"{\"peft_type\":\"LOHA\",\"r\":2,\"alpha\":3}",
		"{\"peft_type\":\"LOKR\",\"r\":2,\"alpha\":3}",
	};
	/* tensors sorted by name, as mkst lays them out */
	static const char *const specs[] = {
		"hada_t1 2 2 3 3;hada_t2 2 2 3 3;hada_w1_a 2 8;hada_w1_b 2 4;"
		"hada_w2_a 2 8;hada_w2_b 2 4",
		"lokr_t2 2 2 3 3;lokr_w1 2 2;lokr_w2_a 2 4;lokr_w2_b 2 2",
	};
	const char *name = "model.layers.0.self_attn.v_proj.weight";
	struct peftio_adapter *a;
	struct peftio_merge_opts o;
	struct peftio_merge *m;
	struct peftio_error err;
	unsigned char *st;
	float *f, w[8 * 36];
	size_t len, p, q, k;
	double want, e = 0, nrm = 0;

	st = mkst(specs[_i], -1, &len);
	f = st_random(st, len, 11 + (uint64_t)_i);
	ck_assert_msg(peftio_adapter_open_mem(&a, cfgs[_i], strlen(cfgs[_i]),
	    st, len, "conv", &err) == 0, "%s", err.msg);
	memset(&o, 0, sizeof(o));
	o.nthreads = 1;
	ck_assert_msg(peftio_merge_create(&m, &a, 1, &o, cshape, NULL,
	    &err) == 0, "%s", err.msg);
	memset(w, 0, sizeof(w));
	ck_assert_int_eq(peftio_merge_apply(m, name, w, 8 * 36, PEFTIO_F32,
	    &err), 0);
	peftio_merge_free(m);
	for (p = 0; p < 8; p++)
		for (q = 0; q < 4; q++)
			for (k = 0; k < 9; k++) {
				if (_i == 0) {	/* t1 t2 w1a w1b w2a w2b */
					want = cp(f, f + 72, f + 88, 8, 4, p,
					    q, k) * cp(f + 36, f + 96, f + 112,
					    8, 4, p, q, k) * 1.5;
				} else {	/* t2 w1 [2,2] w2a [2,4] w2b [2,2] */
					want = f[36 + (p / 4) * 2 + q / 2] *
					    cp(f, f + 40, f + 48, 4, 2, p % 4,
					    q % 2, k) * 1.5;
				}
				e += (w[p * 36 + q * 9 + k] - want) *
				    (w[p * 36 + q * 9 + k] - want);
				nrm += want * want;
			}
	ck_assert_msg(nrm > 0 && sqrt(e) <= 1e-6 * sqrt(nrm), "case %d: "
	    "error %g", _i, sqrt(e / nrm));
	peftio_adapter_free(a);
	free(f);
	free(st);
}
END_TEST

Suite *tuners_suite(void);

Suite *tuners_suite(void)
{
	Suite *s = suite_create("tuners");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_merge_vs_peft, 0,
	    (int)(sizeof(tcases) / sizeof(tcases[0])));
	tcase_add_loop_test(tc, test_fixture_damaged, 0,
	    (int)(sizeof(tcases) / sizeof(tcases[0])));
	tcase_add_loop_test(tc, test_adapter_bad, 0,
	    (int)(sizeof(bads) / sizeof(bads[0])));
	tcase_add_loop_test(tc, test_plan_bad, 0,
	    (int)(sizeof(plan_bads) / sizeof(plan_bads[0])));
	tcase_add_test(tc, test_combine_refused);
	tcase_add_loop_test(tc, test_fan_in_fan_out, 0,
	    (int)(sizeof(fifo_dirs) / sizeof(fifo_dirs[0])));
	tcase_add_test(tc, test_modules_to_save);
	tcase_add_test(tc, test_miss_bat);
	tcase_add_loop_test(tc, test_conv_cp, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
