/*
 * gen - write a synthetic checkpoint with the tensor layout of a real
 * model (Llama-2-7B, LLaMA-65B, or a smaller one), for benchmarks.
 *
 * usage: gen [-s 7b|65b|1g|tiny] [-l layers] [-t f32|f16|bf16]
 *            [-S shard_bytes] [-k shard] [-a adapter_dir [-r rank]] -o dir
 *
 * Weights are N(0, 0.02) with one value in 4096 scaled by 8 (outliers),
 * from a fixed seed, so runs are reproducible.  With -a, a PEFT LoRA
 * adapter (f32, rank -r, default 16, alpha twice the rank) over every
 * linear layer of the attention and MLP blocks is written too.  With
 * -k K only shard K (from 1) of the sharded layout is written, as a
 * directory holding that one shard file (and the adapter covers only
 * its tensors): a model too large for the disk is then made and
 * consumed a shard at a time.  -l shrinks the layer count.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"

struct shape {
	const char	*name;
	uint64_t	 hidden, inter, layers, vocab, heads, kv_heads;
};

static const struct shape shapes[] = {
	{ "7b", 4096, 11008, 32, 32000, 32, 32 },
	{ "65b", 8192, 22016, 80, 32000, 64, 64 },
	{ "1g", 2048, 5632, 8, 32000, 16, 16 },
	{ "tiny", 256, 688, 2, 1024, 4, 4 },
};

struct tensor {
	char		 name[256];
	int		 ndim;
	uint64_t	 shape[2];
	size_t		 shard;
};

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* N(0, sigma) by the sum of four uniforms (Irwin-Hall), with outliers. */
static void
fill(float *v, uint64_t n, float sigma)
{
	const float k = 1.0f / 4294967296.0f;
	uint64_t i, r1, r2;
	float s;

	for (i = 0; i < n; i++) {
		r1 = next();
		r2 = next();
		s = (float)(r1 & 0xffffffffu) * k + (float)(r1 >> 32) * k +
		    (float)(r2 & 0xffffffffu) * k + (float)(r2 >> 32) * k - 2.0f;
		v[i] = s * 1.7320508f * sigma;
		if ((r2 & 0xfff) == 0)
			v[i] *= 8;
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: gen [-s 7b|65b|1g|tiny] [-l layers] "
	    "[-t f32|f16|bf16] [-S shard_bytes]\n"
	    "           [-k shard] [-a adapter_dir [-r rank]] -o dir\n");
	exit(2);
}

static void
add(struct tensor *t, size_t *n, const char *name, uint64_t a, uint64_t b)
{
	snprintf(t[*n].name, sizeof(t[*n].name), "%s", name);
	t[*n].ndim = b ? 2 : 1;
	t[*n].shape[0] = a;
	t[*n].shape[1] = b;
	t[*n].shard = 0;
	(*n)++;
}

static uint64_t
numel_of(const struct tensor *t)
{
	return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
}

static void
die(const struct peftio_error *err)
{
	fprintf(stderr, "gen: %s\n", err->msg);
	exit(1);
}

/*
 * Write tensors t[0..n-1] (2-D ones filled with N(0, sigma), 1-D ones
 * with 1) into out, split into shards of at most shard_bytes (only
 * shard number only when it is not 0); shard names are single (one
 * shard) or transformers' pattern; aux is written as the file auxname.
 */
static size_t
write_ckpt(const char *out, struct tensor *t, size_t n, enum peftio_dtype dt,
    uint64_t shard_bytes, size_t only, const char *single, float sigma,
    const char *auxname, const char *aux)
{
	struct peftio_error err;
	struct peftio_ckptw *w;
	uint64_t cur = 0, nb, maxn = 0;
	size_t i, j, nshards = 1;
	char **names;
	float *f;
	void *conv;

	/* Shards in order, closed when the next tensor would overflow. */
	for (i = 0; i < n; i++) {
		peftio_dtype_nbytes(dt, numel_of(&t[i]), &nb);
		if (cur > 0 && cur + nb > shard_bytes) {
			nshards++;
			cur = 0;
		}
		cur += nb;
		t[i].shard = nshards - 1;
		if (numel_of(&t[i]) > maxn)
			maxn = numel_of(&t[i]);
	}
	if ((names = calloc(nshards, sizeof(char *))) == NULL)
		exit(1);
	for (i = 0; i < nshards; i++) {
		if ((names[i] = malloc(64)) == NULL)
			exit(1);
		if (nshards == 1)
			snprintf(names[i], 64, "%s", single);
		else
			peftio_shard_name(names[i], 64, i, nshards);
	}
	if (only > nshards) {
		fprintf(stderr, "gen: there are %zu shards\n", nshards);
		exit(1);
	}
	if (peftio_ckptw_create(&w, out, 1, only ? 1 : nshards,
	    (const char *const *)(only ? names + only - 1 : names),
	    PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err) != 0)
		die(&err);
	for (i = 0; i < n; i++)
		if ((!only || t[i].shard == only - 1) &&
		    peftio_ckptw_declare(w, only ? 0 : t[i].shard, t[i].name,
		    dt, t[i].ndim, t[i].shape, &err) != 0)
			die(&err);
	if (peftio_ckptw_layout(w, &err) != 0)
		die(&err);
	f = malloc(maxn * sizeof(float));
	conv = malloc(maxn * sizeof(float));
	if (f == NULL || conv == NULL)
		exit(1);
	for (i = 0; i < n; i++) {
		if (only && t[i].shard != only - 1)
			continue;
		if (t[i].ndim == 1) {
			for (j = 0; j < numel_of(&t[i]); j++)
				f[j] = 1.0f;
		} else
			fill(f, numel_of(&t[i]), sigma);
		peftio_from_f32(dt, f, conv, numel_of(&t[i]));
		peftio_dtype_nbytes(dt, numel_of(&t[i]), &nb);
		if (peftio_ckptw_write(w, t[i].name, conv, nb, &err) != 0)
			die(&err);
	}
	if (peftio_ckptw_file(w, auxname, aux, strlen(aux), &err) != 0 ||
	    peftio_ckptw_commit(w, &err) != 0)
		die(&err);
	peftio_ckptw_free(w);
	for (i = 0; i < nshards; i++)
		free(names[i]);
	free(names);
	free(f);
	free(conv);
	printf("%s: %zu tensors, %zu shards\n", out, n, nshards);
	return nshards;
}

static const char *const targets[] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
	"self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

/* A rank-r LoRA over every 2-D weight of the decoder layers. */
static void
write_adapter(const char *dir, const struct tensor *bt, size_t bn,
    uint64_t r, size_t only)
{
	struct tensor *t;
	size_t n = 0, i, k;
	char name[300], cfg[1024];

	if ((t = calloc(2 * bn, sizeof(*t))) == NULL)
		exit(1);
	for (i = 0; i < bn; i++) {
		for (k = 0; k < sizeof(targets) / sizeof(targets[0]); k++) {
			const char *s = strstr(bt[i].name, targets[k]);

			if (s != NULL && strcmp(s + strlen(targets[k]),
			    ".weight") == 0)
				break;
		}
		if (k == sizeof(targets) / sizeof(targets[0]) ||
		    (only && bt[i].shard != only - 1))
			continue;
		/* base_model.model.<module>.lora_{A,B}.weight */
		snprintf(name, sizeof(name), "base_model.model.%.*s.lora_A.weight",
		    (int)(strlen(bt[i].name) - strlen(".weight")), bt[i].name);
		add(t, &n, name, r, bt[i].shape[1]);
		snprintf(name, sizeof(name), "base_model.model.%.*s.lora_B.weight",
		    (int)(strlen(bt[i].name) - strlen(".weight")), bt[i].name);
		add(t, &n, name, bt[i].shape[0], r);
	}
	snprintf(cfg, sizeof(cfg), "{\n  \"base_model_name_or_path\": null,\n"
	    "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
	    "  \"lora_alpha\": %llu,\n  \"lora_dropout\": 0.0,\n"
	    "  \"peft_type\": \"LORA\",\n  \"r\": %llu,\n"
	    "  \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", "
	    "\"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"],\n"
	    "  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": false,\n"
	    "  \"use_rslora\": false\n}\n", (unsigned long long)(2 * r),
	    (unsigned long long)r);
	(void)write_ckpt(dir, t, n, PEFTIO_F32, UINT64_MAX, 0,
	    "adapter_model.safetensors", 0.01f, "adapter_config.json", cfg);
	free(t);
}

int
main(int argc, char *argv[])
{
	const struct shape *sh = &shapes[2];
	enum peftio_dtype dt = PEFTIO_BF16;
	struct tensor *t;
	uint64_t layers = 0, shard_bytes = 5000000000ULL, total = 0, rank = 16;
	const char *out = NULL, *adapter = NULL;
	char buf[200], cfg[1024];
	size_t n = 0, i, l, only = 0;
	int ch;

	while ((ch = getopt(argc, argv, "a:k:l:o:r:s:S:t:")) != -1) {
		switch (ch) {
		case 'a':
			adapter = optarg;
			break;
		case 'k':
			only = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			layers = strtoull(optarg, NULL, 10);
			break;
		case 'o':
			out = optarg;
			break;
		case 'r':
			rank = strtoull(optarg, NULL, 10);
			break;
		case 's':
			for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
				if (strcmp(optarg, shapes[i].name) == 0)
					break;
			if (i == sizeof(shapes) / sizeof(shapes[0]))
				usage();
			sh = &shapes[i];
			break;
		case 'S':
			shard_bytes = strtoull(optarg, NULL, 10);
			break;
		case 't':
			dt = strcmp(optarg, "f32") == 0 ? PEFTIO_F32 :
			    strcmp(optarg, "f16") == 0 ? PEFTIO_F16 : PEFTIO_BF16;
			break;
		default:
			usage();
		}
	}
	if (out == NULL || rank == 0)
		usage();
	if (layers == 0)
		layers = sh->layers;
	t = calloc(layers * 9 + 4, sizeof(*t));
	if (t == NULL)
		return 1;
	add(t, &n, "model.embed_tokens.weight", sh->vocab, sh->hidden);
	for (l = 0; l < layers; l++) {
		uint64_t h = sh->hidden, kv = h / sh->heads * sh->kv_heads;

#define L(s, a, b) do { snprintf(buf, sizeof(buf), "model.layers.%zu.%s", \
	l, s); add(t, &n, buf, a, b); } while (0)
		L("input_layernorm.weight", h, 0);
		L("self_attn.q_proj.weight", h, h);
		L("self_attn.k_proj.weight", kv, h);
		L("self_attn.v_proj.weight", kv, h);
		L("self_attn.o_proj.weight", h, h);
		L("post_attention_layernorm.weight", h, 0);
		L("mlp.gate_proj.weight", sh->inter, h);
		L("mlp.up_proj.weight", sh->inter, h);
		L("mlp.down_proj.weight", h, sh->inter);
#undef L
	}
	add(t, &n, "model.norm.weight", sh->hidden, 0);
	add(t, &n, "lm_head.weight", sh->vocab, sh->hidden);
	for (i = 0; i < n; i++)
		total += numel_of(&t[i]);

	snprintf(cfg, sizeof(cfg), "{\n  \"architectures\": [\n"
	    "    \"LlamaForCausalLM\"\n  ],\n  \"dtype\": \"%s\",\n"
	    "  \"hidden_size\": %llu,\n  \"intermediate_size\": %llu,\n"
	    "  \"model_type\": \"llama\",\n  \"num_attention_heads\": %llu,\n"
	    "  \"num_hidden_layers\": %llu,\n  \"num_key_value_heads\": %llu,\n"
	    "  \"tie_word_embeddings\": false,\n  \"vocab_size\": %llu\n}\n",
	    peftio_dtype_torch_name(dt), (unsigned long long)sh->hidden,
	    (unsigned long long)sh->inter, (unsigned long long)sh->heads,
	    (unsigned long long)layers, (unsigned long long)sh->kv_heads,
	    (unsigned long long)sh->vocab);
	(void)write_ckpt(out, t, n, dt, shard_bytes, only, "model.safetensors",
	    0.02f, "config.json", cfg);
	printf("%s: %llu parameters\n", out, (unsigned long long)total);
	if (adapter != NULL)
		write_adapter(adapter, t, n, rank, only);
	free(t);
	return 0;
}
