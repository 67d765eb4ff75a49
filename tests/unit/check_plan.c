/*
 * check_plan.c - trainable parameters as PEFT counts them, and the
 * memory arithmetic of full fine-tuning, LoRA and QLoRA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

/* A Llama-shaped tensor list (names and shapes only). */
struct model {
	struct peftio_plan_tensor *t;
	uint64_t	*shapes;
	char		**names;
	size_t		 n;
};

static void
add(struct model *m, const char *name, uint64_t a, uint64_t b)
{
	size_t i = m->n++;

	m->names[i] = strdup(name);
	ck_assert_ptr_nonnull(m->names[i]);
	m->shapes[2 * i] = a;
	m->shapes[2 * i + 1] = b;
	m->t[i].name = m->names[i];
	m->t[i].ndim = b ? 2 : 1;
	m->t[i].shape = &m->shapes[2 * i];
	m->t[i].numel = b ? a * b : a;
	m->t[i].nbytes = m->t[i].numel * 2;
}

static void
llama(struct model *m, uint64_t h, uint64_t in, int layers, uint64_t v)
{
	static const char *const attn[] = { "q_proj", "k_proj", "v_proj",
		"o_proj" };
	size_t cap = (size_t)layers * 9 + 3;
	char name[128];
	int l, k;

	m->t = calloc(cap, sizeof(*m->t));
	m->shapes = calloc(2 * cap, sizeof(*m->shapes));
	m->names = calloc(cap, sizeof(*m->names));
	ck_assert(m->t != NULL && m->shapes != NULL && m->names != NULL);
	m->n = 0;
	add(m, "model.embed_tokens.weight", v, h);
	for (l = 0; l < layers; l++) {
		for (k = 0; k < 4; k++) {
			snprintf(name, sizeof(name),
			    "model.layers.%d.self_attn.%s.weight", l, attn[k]);
			add(m, name, h, h);
		}
		snprintf(name, sizeof(name), "model.layers.%d.mlp.gate_proj."
		    "weight", l);
		add(m, name, in, h);
		snprintf(name, sizeof(name), "model.layers.%d.mlp.up_proj."
		    "weight", l);
		add(m, name, in, h);
		snprintf(name, sizeof(name), "model.layers.%d.mlp.down_proj."
		    "weight", l);
		add(m, name, h, in);
		snprintf(name, sizeof(name), "model.layers.%d.input_layernorm."
		    "weight", l);
		add(m, name, h, 0);
		snprintf(name, sizeof(name), "model.layers.%d."
		    "post_attention_layernorm.weight", l);
		add(m, name, h, 0);
	}
	add(m, "model.norm.weight", h, 0);
	add(m, "lm_head.weight", v, h);
}

static void
model_free(struct model *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->names[i]);
	free(m->names);
	free(m->shapes);
	free(m->t);
}

static void
plan_of(struct model *m, enum peftio_plan_method meth, uint64_t r,
    const char *targets, struct peftio_plan *p)
{
	struct peftio_plan_opts o;
	struct peftio_error err;

	memset(&o, 0, sizeof(o));
	o.method = meth;
	o.r = r;
	o.targets = targets;
	o.virtual_tokens = 20;
	o.optimizer = PEFTIO_OPT_ADAMW;
	ck_assert_int_eq(peftio_plan_compute(&o, m->t, m->n, p, &err), 0);
}

#define ALL7	"q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

/* The three lines of PEFT's print_trainable_parameters for Llama-2-7b. */
START_TEST(test_peft_lines)
{
	static const struct {
		uint64_t	 r;
		const char	*targets, *line;
	} cases[] = {
		{ 8, "q_proj,v_proj", "trainable params: 4,194,304 || all "
		    "params: 6,742,609,920 || trainable%: 0.0622" },
		{ 16, ALL7, "trainable params: 39,976,960 || all params: "
		    "6,778,392,576 || trainable%: 0.5898" },
		{ 64, ALL7, "trainable params: 159,907,840 || all params: "
		    "6,898,323,456 || trainable%: 2.3181" },
	};
	struct peftio_plan p;
	struct model m;
	char line[256];
	size_t i;

	llama(&m, 4096, 11008, 32, 32000);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		plan_of(&m, PEFTIO_PLAN_LORA, cases[i].r, cases[i].targets,
		    &p);
		ck_assert_uint_eq(p.base_params, 6738415616ULL);
		peftio_plan_peft_line(p.trainable_params, p.all_params, line,
		    sizeof(line));
		ck_assert_str_eq(line, cases[i].line);
	}
	/* the default targets are q_proj and v_proj */
	plan_of(&m, PEFTIO_PLAN_QLORA, 8, NULL, &p);
	ck_assert_uint_eq(p.trainable_params, 4194304);
	ck_assert_uint_eq(p.modules, 64);
	model_free(&m);
}
END_TEST

START_TEST(test_other_methods)
{
	struct peftio_plan p;
	struct model m;

	llama(&m, 4096, 11008, 32, 32000);
	plan_of(&m, PEFTIO_PLAN_FULL, 0, NULL, &p);
	ck_assert_uint_eq(p.trainable_params, 6738415616ULL);
	ck_assert_uint_eq(p.all_params, 6738415616ULL);
	/* IA3: k and v scale their 4096 outputs, down_proj its 11008 inputs */
	plan_of(&m, PEFTIO_PLAN_IA3, 0, NULL, &p);
	ck_assert_uint_eq(p.trainable_params, 32 * (4096 + 4096 + 11008));
	ck_assert_uint_eq(p.all_params, 6738415616ULL + 614400);
	plan_of(&m, PEFTIO_PLAN_PROMPT, 0, NULL, &p);
	ck_assert_uint_eq(p.hidden_size, 4096);
	ck_assert_uint_eq(p.trainable_params, 20 * 4096);
	plan_of(&m, PEFTIO_PLAN_PREFIX, 0, NULL, &p);
	ck_assert_uint_eq(p.num_layers, 32);
	ck_assert_uint_eq(p.trainable_params, 20 * 32 * 2 * 4096);
	plan_of(&m, PEFTIO_PLAN_BITFIT, 0, NULL, &p);
	ck_assert_uint_eq(p.trainable_params, 0);
	ck_assert_uint_eq(p.all_params, 6738415616ULL);
	model_free(&m);
}
END_TEST

/*
 * The tuners sized by more than a rank, on Llama-2-7b's q_proj and
 * v_proj (64 weights [4096, 4096]) with PEFT's default sizes, as their
 * layers' parameter shapes give them: OFT oft_R [128 blocks of 32,
 * 32 31 / 2]; BOFT boft_R [1, 1024, 4, 4] and boft_s [4096, 1];
 * VB-LoRA logits [r, 4096 / 256, 256] twice and one bank [256, 256];
 * RandLoRA lambda [r, 512] and gamma [512, 4096]; SHiRA r (in + out);
 * C3A kernel [16, 16, 256]; RoAd theta and alpha [2048]; FourierFT
 * 1000 coefficients; Bone [r, out]; AdaLoRA's untrained ranknum counted
 * in all params only.
 */
START_TEST(test_tuner_plans)
{
	static const struct {
		enum peftio_plan_method m;
		uint64_t	 per_module, shared;
	} cases[] = {
		{ PEFTIO_PLAN_OFT, 128 * 496, 0 },
		{ PEFTIO_PLAN_BOFT, 1024 * 16 + 4096, 0 },
		{ PEFTIO_PLAN_VBLORA, 2 * 8 * 16 * 256, 256 * 256 },
		{ PEFTIO_PLAN_RANDLORA, 8 * 512 + 512 * 4096, 0 },
		{ PEFTIO_PLAN_SHIRA, 8 * 8192, 0 },
		{ PEFTIO_PLAN_C3A, 16 * 16 * 256, 0 },
		{ PEFTIO_PLAN_ROAD, 2 * 2048, 0 },
		{ PEFTIO_PLAN_FOURIERFT, 1000, 0 },
		{ PEFTIO_PLAN_BONE, 8 * 4096, 0 },
		{ PEFTIO_PLAN_ADALORA, 8 * (8192 + 1), 0 },
	};
	struct peftio_plan p;
	struct model m;
	size_t i;

	llama(&m, 4096, 11008, 32, 32000);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		plan_of(&m, cases[i].m, 8, NULL, &p);
		ck_assert_msg(p.trainable_params == 64 * cases[i].per_module +
		    cases[i].shared, "%s: %llu", peftio_plan_method_name(
		    cases[i].m), (unsigned long long)p.trainable_params);
		ck_assert_uint_eq(p.modules, 64);
		ck_assert_uint_eq(p.all_params, 6738415616ULL +
		    p.trainable_params + (cases[i].m == PEFTIO_PLAN_ADALORA ?
		    64 : 0));
	}
	model_free(&m);
}
END_TEST

/* Sizes from a config; OFT's and BOFT's choices; sizes PEFT refuses. */
START_TEST(test_tuner_sizes)
{
	static const uint64_t shape[2] = { 96, 64 };
	struct peftio_plan_tensor t;
	struct peftio_plan_opts o;
	struct peftio_plan p;
	struct peftio_error err;

	memset(&t, 0, sizeof(t));
	t.name = "model.layers.0.self_attn.q_proj.weight";
	t.ndim = 2;
	t.shape = shape;
	t.numel = 96 * 64;
	memset(&o, 0, sizeof(o));
	o.r = 8;
	/* OFT: r = 5 blocks moves to the nearest divisor of 64, 4 (of 16) */
	o.method = PEFTIO_PLAN_OFT;
	o.block_num = 5;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 4 * 120);
	o.block_share = 1;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 120);
	/* block size 28 moves to 32, the nearer divisor; 24 to 16, the
	 * lower of two as near */
	o.block_share = 0;
	o.block_num = 0;
	o.block_size = 28;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 2 * 496);
	o.block_size = 24;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 4 * 120);
	/* BOFT: 2 butterfly factors of 8 blocks of 8, plus boft_s */
	o.method = PEFTIO_PLAN_BOFT;
	o.block_size = 8;
	o.butterfly = 2;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 2 * 8 * 64 + 96);
	o.block_size = 48;	/* 64 inputs are no multiple of 48 */
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err),
	    PEFTIO_EMISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, "q_proj"));
	ck_assert_ptr_nonnull(strstr(err.msg, "boft"));
	/* C3A's default block of 256 does not tile [96, 64] */
	memset(&o, 0, sizeof(o));
	o.r = 8;
	o.method = PEFTIO_PLAN_C3A;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err),
	    PEFTIO_EMISMATCH);
	o.block_size = 32;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 96 * 64 / 32);
	/* SHiRA: r (in + out) must not exceed in out */
	o.method = PEFTIO_PLAN_SHIRA;
	o.r = 38;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 38 * 160);
	o.r = 39;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err),
	    PEFTIO_EMISMATCH);
	/* LoKr with decompose_both and a factor: out 96 = 8 x 12, in 64 =
	 * 8 x 8; w1 a pair of rank 2 (2 < 8 / 2), w2 a pair too */
	memset(&o, 0, sizeof(o));
	o.method = PEFTIO_PLAN_LOKR;
	o.r = 2;
	o.decompose_both = 1;
	o.decompose_factor = 8;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 2 * (8 + 8) + 2 * (12 + 8));
	o.decompose_both = 0;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 8 * 8 + 2 * (12 + 8));
}
END_TEST

/* adapter_config.json read for a plan. */
START_TEST(test_plan_adapter_config)
{
	static const struct {
		const char	*cfg;
		int		 rc;
		const char	*msg;
	} bad[] = {
		{ "[]", PEFTIO_EFORMAT, "adapter_config.json" },
		{ "{\"r\": 8}", PEFTIO_EFORMAT, "peft_type" },
		{ "{\"peft_type\": \"LN_TUNING\"}", PEFTIO_EUNSUPPORTED,
		    "LN_TUNING" },
		{ "{\"peft_type\": \"LORA\", \"r\": 0}", PEFTIO_EFORMAT,
		    "r is not" },
		{ "{\"peft_type\": \"LORA\", \"r\": \"8\"}", PEFTIO_EFORMAT,
		    "r is not" },
		{ "{\"peft_type\": \"OFT\", \"r\": 4, \"oft_block_size\": 8}",
		    PEFTIO_EFORMAT, "not both" },
		{ "{\"peft_type\": \"BOFT\"}", PEFTIO_EFORMAT,
		    "boft_block_size" },
		{ "{\"peft_type\": \"ROAD\", \"variant\": \"road_3\"}",
		    PEFTIO_EFORMAT, "variant" },
		{ "{\"peft_type\": \"LOHA\", \"target_modules\": \".*\"}",
		    PEFTIO_EUNSUPPORTED, "regular expression" },
		{ "{\"peft_type\": \"LOHA\", \"target_modules\": [\"a,b\"]}",
		    PEFTIO_EFORMAT, "target_modules" },
		{ "{\"peft_type\": \"C3A\", \"block_size\": -1}",
		    PEFTIO_EFORMAT, "block_size" },
	};
	static const char good[] = "{\"peft_type\": \"VBLORA\", \"r\": 4, "
	    "\"num_vectors\": 32, \"vector_length\": 8, \"target_modules\": "
	    "[\"v_proj\", \"q_proj\"], \"block_size\": 99}";
	static const char ada[] = "{\"peft_type\": \"ADALORA\", \"r\": 8, "
	    "\"init_r\": 12, \"target_modules\": null}";
	static const char road[] = "{\"peft_type\": \"ROAD\", "
	    "\"variant\": \"road_4\", \"group_size\": 16}";
	struct peftio_plan_opts o;
	struct peftio_error err;
	char *tg;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&o, 0, sizeof(o));
		tg = (char *)1;
		ck_assert_int_eq(peftio_plan_adapter_config(bad[i].cfg,
		    strlen(bad[i].cfg), &o, &tg, &err), bad[i].rc);
		ck_assert_ptr_null(tg);
		ck_assert_msg(strstr(err.msg, bad[i].msg) != NULL,
		    "case %zu: %s", i, err.msg);
		ck_assert_ptr_nonnull(strstr(err.msg, "adapter_config.json"));
	}
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(peftio_plan_adapter_config(good, strlen(good), &o,
	    &tg, &err), 0);
	ck_assert_int_eq(o.method, PEFTIO_PLAN_VBLORA);
	ck_assert_uint_eq(o.r, 4);
	ck_assert_uint_eq(o.num_vectors, 32);
	ck_assert_uint_eq(o.vector_length, 8);
	ck_assert_uint_eq(o.block_size, 0);	/* not VB-LoRA's */
	ck_assert_str_eq(tg, "v_proj,q_proj");
	free(tg);
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(peftio_plan_adapter_config(ada, strlen(ada), &o,
	    &tg, &err), 0);
	ck_assert_int_eq(o.method, PEFTIO_PLAN_ADALORA);
	ck_assert_uint_eq(o.r, 12);
	ck_assert_ptr_null(tg);
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(peftio_plan_adapter_config(road, strlen(road), &o,
	    &tg, &err), 0);
	ck_assert_uint_eq(o.road_variant, 4);
	ck_assert_uint_eq(o.group_size, 16);
}
END_TEST

/* Prefix tuning with grouped-query attention sizes keys and values by
 * head_dim x num_key_value_heads, as PEFT does. */
START_TEST(test_prefix_gqa)
{
	static const char llama3[] = "{\"hidden_size\": 4096, "
	    "\"num_attention_heads\": 32, \"num_key_value_heads\": 8}";
	static const char gemma[] = "{\"text_config\": {\"hidden_size\": "
	    "3072, \"num_attention_heads\": 16, \"num_key_value_heads\": 16, "
	    "\"head_dim\": 256}}";
	static const char mha[] = "{\"n_head\": 32}";
	struct peftio_plan_opts o;
	struct peftio_error err;
	struct peftio_plan p;
	struct model m;
	size_t i;

	/* Llama-3-8B-shaped: k_proj and v_proj are [1024, 4096]. */
	llama(&m, 4096, 14336, 32, 128256);
	for (i = 0; i < m.n; i++)
		if (strstr(m.t[i].name, "k_proj") != NULL ||
		    strstr(m.t[i].name, "v_proj") != NULL)
			m.shapes[2 * i] = 1024;
	memset(&o, 0, sizeof(o));
	o.method = PEFTIO_PLAN_PREFIX;
	o.virtual_tokens = 20;
	o.optimizer = PEFTIO_OPT_ADAMW;
	/* No config.json: the width of the keys. */
	ck_assert_int_eq(peftio_plan_compute(&o, m.t, m.n, &p, &err), 0);
	ck_assert_uint_eq(p.prefix_dim, 1024);
	ck_assert_uint_eq(p.trainable_params, 20 * 32 * 2 * 1024);
	ck_assert_int_eq(peftio_plan_config(llama3, strlen(llama3), &o, &err),
	    0);
	ck_assert_uint_eq(o.heads, 32);
	ck_assert_uint_eq(o.kv_heads, 8);
	ck_assert_uint_eq(o.head_dim, 0);
	ck_assert_int_eq(peftio_plan_compute(&o, m.t, m.n, &p, &err), 0);
	ck_assert_uint_eq(p.trainable_params, 20 * 32 * 2 * 1024);
	/* head_dim where config.json gives it, not hidden / heads. */
	ck_assert_int_eq(peftio_plan_config(gemma, strlen(gemma), &o, &err),
	    0);
	ck_assert_uint_eq(o.head_dim, 256);
	ck_assert_int_eq(peftio_plan_compute(&o, m.t, m.n, &p, &err), 0);
	ck_assert_uint_eq(p.prefix_dim, 256 * 16);
	ck_assert_uint_eq(p.trainable_params, 20 * 32 * 2 * 4096);
	/* Heads but no num_key_value_heads: PEFT keeps the hidden size. */
	ck_assert_int_eq(peftio_plan_config(mha, strlen(mha), &o, &err), 0);
	ck_assert_uint_eq(o.heads, 32);
	ck_assert_uint_eq(o.kv_heads, 0);
	ck_assert_int_eq(peftio_plan_compute(&o, m.t, m.n, &p, &err), 0);
	ck_assert_uint_eq(p.prefix_dim, 4096);
	ck_assert_int_eq(peftio_plan_config("[]", 2, &o, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "config.json"));
	model_free(&m);
}
END_TEST

/* QLoRA paper: 65B parameters need more than 780 GB to fine-tune in
 * 16 bits with Adam (2 + 2 + 8 bytes per parameter). */
START_TEST(test_memory_65b)
{
	struct peftio_plan p;
	struct model m;

	llama(&m, 8192, 22016, 80, 32000);
	plan_of(&m, PEFTIO_PLAN_FULL, 0, NULL, &p);
	ck_assert_uint_eq(p.base_params, 65285660672ULL);
	ck_assert_uint_eq(p.full.total, 12 * 65285660672ULL);
	ck_assert_uint_eq(p.full.weights, 2 * 65285660672ULL);
	ck_assert_uint_eq(p.full.gradients, 2 * 65285660672ULL);
	ck_assert_uint_eq(p.full.optimizer, 8 * 65285660672ULL);
	ck_assert(p.full.total > 775000000000ULL &&
	    p.full.total < 790000000000ULL);
	/* LoRA: the 16-bit base plus a small adapter */
	ck_assert_uint_eq(p.lora.weights, 2 * p.base_params +
	    2 * p.lora_params);
	ck_assert_uint_eq(p.lora.total, 2 * p.base_params +
	    12 * p.lora_params);
	/* QLoRA: about a quarter of the 16-bit base */
	ck_assert(p.qlora.weights < p.lora.weights / 3);
	ck_assert(p.qlora.total < 48000000000ULL);
	model_free(&m);
}
END_TEST

START_TEST(test_nf4_bytes)
{
	/* bnb-nf4.md section 7: 4096 x 4096 with DQ is 4.127 bits/param */
	uint64_t b = peftio_plan_nf4_bytes(4096 * 4096);
	double bits = (double)b * 8 / (4096.0 * 4096.0);

	ck_assert_uint_eq(b, 8388608 + 262144 + 4096 + 64 + 1024 + 176);
	ck_assert(bits > 4.126 && bits < 4.129);
}
END_TEST

START_TEST(test_target_match)
{
	const char *m = "model.layers.0.self_attn.q_proj";
	size_t n = strlen(m);

	ck_assert(peftio_plan_target_match(m, n, "q_proj"));
	ck_assert(peftio_plan_target_match(m, n, "k_proj,q_proj"));
	ck_assert(peftio_plan_target_match(m, n, "self_attn.q_proj"));
	ck_assert(peftio_plan_target_match(m, n, m));
	ck_assert(!peftio_plan_target_match(m, n, "proj"));
	ck_assert(!peftio_plan_target_match(m, n, "_proj"));
	ck_assert(!peftio_plan_target_match(m, n, "k_proj,v_proj"));
	ck_assert(!peftio_plan_target_match(m, n, ""));
	ck_assert(!peftio_plan_target_match(m, n, ","));
	ck_assert(!peftio_plan_target_match("q_proj", 6, "x.q_proj"));
}
END_TEST

START_TEST(test_format)
{
	static const struct {
		uint64_t	 v;
		const char	*s;
	} cases[] = {
		{ 0, "0" }, { 999, "999" }, { 1000, "1,000" },
		{ 4194304, "4,194,304" }, { 6742609920ULL, "6,742,609,920" },
		{ UINT64_MAX, "18,446,744,073,709,551,615" },
	};
	char buf[64];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		peftio_format_thousands(cases[i].v, buf, sizeof(buf));
		ck_assert_str_eq(buf, cases[i].s);
	}
	peftio_plan_peft_line(0, 0, buf, sizeof(buf));
	ck_assert_str_eq(buf,
	    "trainable params: 0 || all params: 0 || trainable%: 0.0000");
}
END_TEST

START_TEST(test_names_and_errors)
{
	struct peftio_plan_opts o;
	struct peftio_plan_tensor t;
	struct peftio_plan p;
	struct peftio_error err;
	uint64_t shape[2] = { UINT64_MAX / 2, 4 };
	int i;

	for (i = PEFTIO_PLAN_FULL; i <= PEFTIO_PLAN_BITFIT; i++)
		ck_assert_int_eq(peftio_plan_method_parse(
		    peftio_plan_method_name((enum peftio_plan_method)i)), i);
	ck_assert_int_eq(peftio_plan_method_parse("adapter"), -1);
	ck_assert_ptr_null(peftio_plan_method_name(
	    (enum peftio_plan_method)99));
	for (i = PEFTIO_OPT_ADAMW; i <= PEFTIO_OPT_SGD; i++)
		ck_assert_int_eq(peftio_optimizer_parse(peftio_optimizer_name(
		    (enum peftio_optimizer)i)), i);
	ck_assert_int_eq(peftio_optimizer_parse("adam"), -1);
	ck_assert_uint_eq(peftio_optimizer_state_bytes(PEFTIO_OPT_ADAMW), 8);
	ck_assert_uint_eq(peftio_optimizer_state_bytes(PEFTIO_OPT_ADAMW8BIT),
	    2);
	ck_assert_uint_eq(peftio_optimizer_state_bytes(PEFTIO_OPT_SGD), 0);

	memset(&o, 0, sizeof(o));
	o.method = PEFTIO_PLAN_LORA;
	o.r = 0;
	ck_assert_int_eq(peftio_plan_compute(&o, NULL, 0, &p, &err),
	    PEFTIO_EINVAL);
	/* counts that do not fit 64 bits are an error, not a wrap */
	o.r = 8;
	memset(&t, 0, sizeof(t));
	t.name = "model.layers.0.self_attn.q_proj.weight";
	t.ndim = 2;
	t.shape = shape;
	t.numel = UINT64_MAX;
	t.nbytes = 0;
	ck_assert_int_eq(peftio_plan_compute(&o, &t, 1, &p, &err),
	    PEFTIO_EFORMAT);
	ck_assert(strstr(err.msg, "overflow") != NULL);
}
END_TEST

Suite *plan_suite(void);

Suite *plan_suite(void)
{
	Suite *s = suite_create("plan");
	TCase *tc = tcase_create("plan");

	tcase_add_test(tc, test_peft_lines);
	tcase_add_test(tc, test_other_methods);
	tcase_add_test(tc, test_tuner_plans);
	tcase_add_test(tc, test_tuner_sizes);
	tcase_add_test(tc, test_plan_adapter_config);
	tcase_add_test(tc, test_prefix_gqa);
	tcase_add_test(tc, test_memory_65b);
	tcase_add_test(tc, test_nf4_bytes);
	tcase_add_test(tc, test_target_match);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_names_and_errors);
	suite_add_tcase(s, tc);
	return s;
}
