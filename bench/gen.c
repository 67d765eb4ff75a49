/*
 * gen - write a synthetic checkpoint with the tensor layout of a real
 * model (Llama-2-7B, LLaMA-65B, or a smaller one), for benchmarks.
 *
 * usage: gen [-s 7b|65b|1g] [-l layers] [-t f32|f16|bf16] [-S shard_bytes]
 *            -o DIR
 *
 * Weights are N(0, 0.02) with one value in 4096 scaled by 8 (outliers),
 * from a fixed seed, so runs are reproducible.
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
	    "[-t f32|f16|bf16] [-S shard_bytes] -o dir\n");
	exit(2);
}

static void
add(struct tensor *t, size_t *n, const char *name, uint64_t a, uint64_t b)
{
	snprintf(t[*n].name, sizeof(t[*n].name), "%s", name);
	t[*n].ndim = b ? 2 : 1;
	t[*n].shape[0] = a;
	t[*n].shape[1] = b;
	(*n)++;
}

int
main(int argc, char *argv[])
{
	const struct shape *sh = &shapes[2];
	enum peftio_dtype dt = PEFTIO_BF16;
	struct peftio_error err;
	struct peftio_ckptw *w;
	struct tensor *t;
	uint64_t layers = 0, shard_bytes = 5000000000ULL, cur, nb, maxn = 0;
	uint64_t numel, total = 0;
	const char *out = NULL;
	char **names, buf[200], cfg[1024];
	size_t n = 0, i, l, nshards;
	float *f;
	void *conv;
	int ch;

	while ((ch = getopt(argc, argv, "l:o:s:S:t:")) != -1) {
		switch (ch) {
		case 'l':
			layers = strtoull(optarg, NULL, 10);
			break;
		case 'o':
			out = optarg;
			break;
		case 's':
			for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
				if (strcmp(optarg, shapes[i].name) == 0)
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
	if (out == NULL)
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

	/* Shards in order, closed when the next tensor would overflow. */
	nshards = 1;
	cur = 0;
	for (i = 0; i < n; i++) {
		numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
		peftio_dtype_nbytes(dt, numel, &nb);
		if (cur > 0 && cur + nb > shard_bytes) {
			nshards++;
			cur = 0;
		}
		cur += nb;
		t[i].shard = nshards - 1;
		total += numel;
		if (numel > maxn)
			maxn = numel;
	}
	names = calloc(nshards, sizeof(char *));
	for (i = 0; i < nshards; i++) {
		names[i] = malloc(64);
		if (nshards == 1)
			snprintf(names[i], 64, "model.safetensors");
		else
			peftio_shard_name(names[i], 64, i, nshards);
	}
	if (peftio_ckptw_create(&w, out, 1, nshards,
	    (const char *const *)names, PEFTIO_W_FORCE | PEFTIO_W_NOSYNC,
	    &err) != 0)
		goto fail;
	for (i = 0; i < n; i++)
		if (peftio_ckptw_declare(w, t[i].shard, t[i].name, dt,
		    t[i].ndim, t[i].shape, &err) != 0)
			goto fail;
	if (peftio_ckptw_layout(w, &err) != 0)
		goto fail;
	f = malloc(maxn * sizeof(float));
	conv = malloc(maxn * sizeof(float));
	if (f == NULL || conv == NULL)
		return 1;
	for (i = 0; i < n; i++) {
		numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
		if (t[i].ndim == 1) {
			for (l = 0; l < numel; l++)
				f[l] = 1.0f;
		} else
			fill(f, numel, 0.02f);
		peftio_from_f32(dt, f, conv, numel);
		peftio_dtype_nbytes(dt, numel, &nb);
		if (peftio_ckptw_write(w, t[i].name, conv, nb, &err) != 0)
			goto fail;
	}
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
	if (peftio_ckptw_file(w, "config.json", cfg, strlen(cfg), &err) != 0 ||
	    peftio_ckptw_commit(w, &err) != 0)
		goto fail;
	peftio_ckptw_free(w);
	printf("%s: %llu parameters, %zu tensors, %zu shards\n", out,
	    (unsigned long long)total, n, nshards);
	return 0;
fail:
	fprintf(stderr, "gen: %s\n", err.msg);
	return 1;
}
