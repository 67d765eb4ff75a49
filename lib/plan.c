/*
 * plan.c - what fine-tuning a model would train and cost: trainable
 * parameters as PEFT counts them, and the memory for weights, gradients
 * and optimizer states (full fine-tuning, LoRA, QLoRA).
 */
#include <sys/stat.h>

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "peftio_private.h"

static const char *const method_names[] = {
	"full", "lora", "qlora", "ia3", "prompt", "prefix", "bitfit",
	"loha", "lokr", "adalora", "vera", "hra", "miss", "delora",
	"oft", "boft", "vblora", "randlora", "shira", "c3a", "road",
	"fourierft", "bone"
};

static const char *const optimizer_names[] = { "adamw", "adamw8bit", "sgd" };

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* Bytes per parameter of the 16-bit weights and gradients assumed. */
#define WEIGHT_BYTES	2
#define GRAD_BYTES	2

/* Length of a quant_state blob with double quantization and a 2-D
 * shape, as transformers writes it (about; the digits vary). */
#define QSTATE_BYTES	176

const char *
peftio_plan_method_name(enum peftio_plan_method m)
{
	if ((unsigned)m >= NELEM(method_names))
		return NULL;
	return method_names[m];
}

int
peftio_plan_method_parse(const char *s)
{
	size_t i;

	for (i = 0; i < NELEM(method_names); i++)
		if (strcmp(s, method_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
peftio_optimizer_name(enum peftio_optimizer o)
{
	if ((unsigned)o >= NELEM(optimizer_names))
		return NULL;
	return optimizer_names[o];
}

int
peftio_optimizer_parse(const char *s)
{
	size_t i;

	for (i = 0; i < NELEM(optimizer_names); i++)
		if (strcmp(s, optimizer_names[i]) == 0)
			return (int)i;
	return -1;
}

unsigned
peftio_optimizer_state_bytes(enum peftio_optimizer o)
{
	switch (o) {
	case PEFTIO_OPT_ADAMW:
		return 8;
	case PEFTIO_OPT_ADAMW8BIT:
		return 2;
	default:
		return 0;
	}
}

const char *
peftio_plan_default_targets(enum peftio_plan_method m)
{
	switch (m) {
	case PEFTIO_PLAN_LORA:
	case PEFTIO_PLAN_QLORA:
	case PEFTIO_PLAN_LOHA:
	case PEFTIO_PLAN_LOKR:
	case PEFTIO_PLAN_ADALORA:
	case PEFTIO_PLAN_VERA:
	case PEFTIO_PLAN_HRA:
	case PEFTIO_PLAN_MISS:
	case PEFTIO_PLAN_DELORA:
	case PEFTIO_PLAN_OFT:
	case PEFTIO_PLAN_BOFT:
	case PEFTIO_PLAN_VBLORA:
	case PEFTIO_PLAN_RANDLORA:
	case PEFTIO_PLAN_SHIRA:
	case PEFTIO_PLAN_C3A:
	case PEFTIO_PLAN_ROAD:
	case PEFTIO_PLAN_FOURIERFT:
	case PEFTIO_PLAN_BONE:
		return "q_proj,v_proj";
	case PEFTIO_PLAN_IA3:
		return "k_proj,v_proj,down_proj";
	default:
		return NULL;
	}
}

int
peftio_plan_target_match(const char *module, size_t len, const char *list)
{
	const char *p = list, *e;
	size_t n;

	while (*p != '\0') {
		e = strchr(p, ',');
		n = e != NULL ? (size_t)(e - p) : strlen(p);
		if (n > 0 && n <= len &&
		    memcmp(module + len - n, p, n) == 0 &&
		    (n == len || module[len - n - 1] == '.'))
			return 1;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

uint64_t
peftio_plan_nf4_bytes(uint64_t n)
{
	uint64_t nb = ceil_div(n, 64);

	/* codes, absmax codes, nested absmax, both maps, quant_state */
	return n / 2 + n % 2 + nb + 4 * ceil_div(nb, 256) + 64 + 1024 +
	    QSTATE_BYTES;
}

/* Length of name without a ".weight" suffix, or 0 if it has none. */
static size_t
weight_module(const char *name)
{
	size_t n = strlen(name);

	if (n <= 7 || strcmp(name + n - 7, ".weight") != 0)
		return 0;
	return n - 7;
}

static int
part_is(const char *p, size_t n, const char *what)
{
	return strlen(what) == n && memcmp(p, what, n) == 0;
}

/* IA3 scales the input of feed-forward output layers, the output of
 * the others. */
static int
feedforward(const char *name, size_t len)
{
	static const char *const ff[] = {
		"down_proj", "fc2", "w2", "dense_4h_to_h", "wo"
	};
	size_t n, i;
	const char *p = peftio_last_part(name, len, &n);

	for (i = 0; i < NELEM(ff); i++)
		if (part_is(p, n, ff[i]))
			return 1;
	return 0;
}

/* The index N of a "layers.N." (h., blocks., layer.) component, or -1. */
static long long
layer_index(const char *name)
{
	static const char *const stacks[] = { "layers.", "h.", "blocks.",
		"layer." };
	const char *p, *q;
	size_t i, n;
	long long v;

	for (i = 0; i < NELEM(stacks); i++) {
		n = strlen(stacks[i]);
		for (p = strstr(name, stacks[i]); p != NULL;
		    p = strstr(p + 1, stacks[i])) {
			if (p != name && p[-1] != '.')
				continue;
			q = p + n;
			if (!isdigit((unsigned char)*q))
				continue;
			for (v = 0; isdigit((unsigned char)*q) && v < 1000000;
			    q++)
				v = v * 10 + (*q - '0');
			if (*q == '.' || *q == '\0')
				return v;
		}
	}
	return -1;
}

static int
hidden_from_embedding(const struct peftio_plan_tensor *t)
{
	static const char *const emb[] = {
		"embed_tokens", "wte", "word_embeddings", "embed_in"
	};
	size_t len = weight_module(t->name), n, i;
	const char *p;

	if (t->ndim != 2 || len == 0)
		return 0;
	p = peftio_last_part(t->name, len, &n);
	for (i = 0; i < NELEM(emb); i++)
		if (part_is(p, n, emb[i]))
			return 1;
	return 0;
}

#define ADD(a, b)	do {						\
	if (PEFTIO_ADD_OVERFLOW((a), (b), &(a)))			\
		goto overflow;						\
} while (0)
#define MUL(r, a, b)	do {						\
	if (PEFTIO_MUL_OVERFLOW((a), (b), &(r)))			\
		goto overflow;						\
} while (0)

/* Weights, gradients and optimizer states for `trained` parameters on
 * top of `frozen` bytes of frozen weights. */
static int
budget(uint64_t frozen, uint64_t trained, unsigned state,
    struct peftio_plan_memory *m)
{
	m->weights = frozen;
	if (PEFTIO_MUL_OVERFLOW(trained, (uint64_t)WEIGHT_BYTES, &m->total) ||
	    PEFTIO_ADD_OVERFLOW(m->weights, m->total, &m->weights) ||
	    PEFTIO_MUL_OVERFLOW(trained, (uint64_t)GRAD_BYTES, &m->gradients) ||
	    PEFTIO_MUL_OVERFLOW(trained, (uint64_t)state, &m->optimizer) ||
	    PEFTIO_ADD_OVERFLOW(m->weights, m->gradients, &m->total) ||
	    PEFTIO_ADD_OVERFLOW(m->total, m->optimizer, &m->total))
		return -1;
	return 0;
}

int
peftio_plan_compute(const struct peftio_plan_opts *o,
    const struct peftio_plan_tensor *t, size_t n, struct peftio_plan *p,
    struct peftio_error *err)
{
	const char *targets, *lora_targets;
	uint64_t lora = 0, trained = 0, bias = 0, qbase = 0, frozen, v;
	uint64_t lora_modules = 0, ia3_modules = 0, ia3 = 0, layers = 0;
	uint64_t k_rows = 0;
	uint64_t tuner = 0, tuner_modules = 0, fixed = 0, f;
	int tuned = o->method >= PEFTIO_PLAN_LOHA, rc;
	const char *why;
	unsigned state;
	long long li;
	size_t i, len;

	memset(p, 0, sizeof(*p));
	if ((unsigned)o->method >= NELEM(method_names) ||
	    (unsigned)o->optimizer >= NELEM(optimizer_names))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "unknown fine-tuning method or optimizer");
	if ((o->method == PEFTIO_PLAN_LORA || o->method == PEFTIO_PLAN_QLORA ||
	    tuned) && o->r == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "the LoRA rank must be at least 1");
	targets = o->targets != NULL ? o->targets :
	    peftio_plan_default_targets(o->method);
	lora_targets = o->targets != NULL && o->method != PEFTIO_PLAN_IA3 ?
	    o->targets : peftio_plan_default_targets(PEFTIO_PLAN_LORA);
	state = peftio_optimizer_state_bytes(o->optimizer);

	for (i = 0; i < n; i++) {
		ADD(p->base_params, t[i].numel);
		if ((li = layer_index(t[i].name)) >= 0 &&
		    (uint64_t)li + 1 > layers)
			layers = (uint64_t)li + 1;
		if (p->hidden_size == 0 && hidden_from_embedding(&t[i]))
			p->hidden_size = t[i].shape[1];
		len = strlen(t[i].name);
		if (len > 5 && strcmp(t[i].name + len - 5, ".bias") == 0)
			ADD(bias, t[i].numel);
		/* the 4-bit base of QLoRA */
		if (t[i].quantized)
			ADD(qbase, t[i].nbytes);
		else if (peftio_linear_weight(t[i].name, t[i].ndim))
			ADD(qbase, peftio_plan_nf4_bytes(t[i].numel));
		else {
			MUL(v, t[i].numel, (uint64_t)WEIGHT_BYTES);
			ADD(qbase, v);
		}
		if (t[i].ndim != 2 || (len = weight_module(t[i].name)) == 0)
			continue;
		if (k_rows == 0 && len >= 6 &&
		    strncmp(t[i].name + len - 6, "k_proj", 6) == 0)
			k_rows = t[i].shape[0];
		if (peftio_plan_target_match(t[i].name, len, lora_targets)) {
			/* A [r, in] and B [out, r] */
			v = t[i].shape[0];
			ADD(v, t[i].shape[1]);
			MUL(v, v, o->r == 0 ? 8 : o->r);
			ADD(lora, v);
			lora_modules++;
		}
		if (tuned && peftio_plan_target_match(t[i].name, len,
		    targets)) {
			rc = peftio_tuner_plan_params(o, t[i].shape[0],
			    t[i].shape[1], &v, &f, &why);
			if (rc == PEFTIO_EMISMATCH)
				return peftio_error_set(err, rc,
				    "tensor '%s' [%llu, %llu]: PEFT refuses %s "
				    "here: %s", t[i].name,
				    (unsigned long long)t[i].shape[0],
				    (unsigned long long)t[i].shape[1],
				    method_names[o->method], why);
			if (rc != 0)
				goto overflow;
			ADD(tuner, v);
			ADD(fixed, f);
			tuner_modules++;
		}
		if (targets != NULL && o->method == PEFTIO_PLAN_IA3 &&
		    peftio_plan_target_match(t[i].name, len, targets)) {
			ADD(ia3, feedforward(t[i].name, len) ?
			    t[i].shape[1] : t[i].shape[0]);
			ia3_modules++;
		}
	}
	if (p->hidden_size == 0)
		for (i = 0; i < n; i++)
			if (t[i].ndim == 1 && strstr(t[i].name, "norm") != NULL) {
				p->hidden_size = t[i].shape[0];
				break;
			}
	p->num_layers = layers;
	p->lora_params = lora;

	switch (o->method) {
	case PEFTIO_PLAN_FULL:
		trained = p->base_params;
		p->modules = 0;
		break;
	case PEFTIO_PLAN_LORA:
	case PEFTIO_PLAN_QLORA:
		trained = lora;
		p->modules = lora_modules;
		break;
	case PEFTIO_PLAN_IA3:
		trained = ia3;
		p->modules = ia3_modules;
		break;
	case PEFTIO_PLAN_PROMPT:
		/* one embedding of virtual_tokens x hidden */
		MUL(trained, o->virtual_tokens, p->hidden_size);
		break;
	case PEFTIO_PLAN_PREFIX:
		/*
		 * Keys and values of every layer: tokens x layers x 2 x the
		 * width of a key, which grouped-query attention makes
		 * head_dim x kv_heads (PEFT's _prepare_prompt_learning_config).
		 */
		p->prefix_dim = p->hidden_size;
		if (o->kv_heads > 0 && o->head_dim > 0)
			MUL(p->prefix_dim, o->head_dim, o->kv_heads);
		else if (o->kv_heads > 0 && o->heads > 0)
			MUL(p->prefix_dim, p->hidden_size / o->heads,
			    o->kv_heads);
		else if (o->heads == 0 && k_rows > 0)
			p->prefix_dim = k_rows;
		MUL(trained, o->virtual_tokens, p->prefix_dim);
		MUL(trained, trained, layers);
		MUL(trained, trained, (uint64_t)2);
		p->modules = layers;
		break;
	case PEFTIO_PLAN_BITFIT:
		trained = bias;
		break;
	default:
		trained = tuner;
		/* VB-LoRA's vector bank, one for the model */
		if (o->method == PEFTIO_PLAN_VBLORA && tuner_modules > 0) {
			MUL(v, o->num_vectors != 0 ? o->num_vectors : 256,
			    o->vector_length != 0 ? o->vector_length : 256);
			ADD(trained, v);
		}
		p->modules = tuner_modules;
		break;
	}
	p->trainable_params = trained;
	p->all_params = p->base_params;
	/* methods that add parameters rather than train existing ones,
	 * and what they add untrained (AdaLoRA's ranknum) */
	if (o->method != PEFTIO_PLAN_FULL && o->method != PEFTIO_PLAN_BITFIT)
		ADD(p->all_params, trained);
	ADD(p->all_params, fixed);

	MUL(frozen, p->base_params, (uint64_t)WEIGHT_BYTES);
	if (budget(0, p->base_params, state, &p->full) != 0 ||
	    budget(frozen, lora, state, &p->lora) != 0 ||
	    budget(qbase, lora, state, &p->qlora) != 0)
		goto overflow;
	return 0;
overflow:
	return peftio_error_set(err, PEFTIO_EFORMAT,
	    "parameter count overflows 64 bits");
}

void
peftio_format_thousands(uint64_t v, char *buf, size_t len)
{
	char digits[32], out[48];
	size_t n, i, j = 0;

	n = (size_t)snprintf(digits, sizeof(digits), "%llu",
	    (unsigned long long)v);
	for (i = 0; i < n; i++) {
		if (i > 0 && (n - i) % 3 == 0)
			out[j++] = ',';
		out[j++] = digits[i];
	}
	out[j] = '\0';
	snprintf(buf, len, "%s", out);
}

void
peftio_plan_peft_line(uint64_t trainable, uint64_t all, char *buf,
    size_t len)
{
	char a[48], b[48];
	double pct = 0.0;

	/* Python's 100 * trainable / all: an exact product, then one
	 * correctly rounded division */
	if (all != 0)
		pct = trainable <= UINT64_MAX / 100 ?
		    (double)(100 * trainable) / (double)all :
		    100.0 * ((double)trainable / (double)all);
	peftio_format_thousands(trainable, a, sizeof(a));
	peftio_format_thousands(all, b, sizeof(b));
	snprintf(buf, len, "trainable params: %s || all params: %s || "
	    "trainable%%: %.4f", a, b, pct);
}

/* A positive integer member of o, else 0. */
static uint64_t
config_uint(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ?
	    (uint64_t)json_integer_value(v) : 0;
}

int
peftio_plan_config(const char *text, size_t len, struct peftio_plan_opts *o,
    struct peftio_error *err)
{
	json_error_t jerr;
	json_t *root, *c;

	root = json_loadb(text, len, 0, &jerr);
	if (root == NULL || !json_is_object(root)) {
		json_decref(root);
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "config.json: line %d: %s", jerr.line, root == NULL ?
		    jerr.text : "not a JSON object");
	}
	c = json_object_get(root, "text_config");
	if (!json_is_object(c))
		c = root;
	if ((o->heads = config_uint(c, "num_attention_heads")) == 0 &&
	    (o->heads = config_uint(c, "n_head")) == 0 &&
	    (o->heads = config_uint(c, "num_heads")) == 0)
		o->heads = config_uint(c, "encoder_attention_heads");
	o->kv_heads = config_uint(c, "num_key_value_heads");
	o->head_dim = config_uint(c, "head_dim");
	json_decref(root);
	return 0;
}

/* A number member of o that is a positive integer: 1 and *v, 0 when
 * absent or null, -1 otherwise. */
static int
config_count(const json_t *o, const char *key, uint64_t *v)
{
	const json_t *x = json_object_get(o, key);
	double d;

	if (x == NULL || json_is_null(x))
		return 0;
	if (json_is_integer(x) && json_integer_value(x) >= 0) {
		*v = (uint64_t)json_integer_value(x);
		return 1;
	}
	d = json_is_real(x) ? json_real_value(x) : -1;
	if (d >= 0 && d <= 9007199254740992.0 && d == (double)(uint64_t)d) {
		*v = (uint64_t)d;
		return 1;
	}
	return -1;
}

/* The plan method of a peft_type, or -1. */
static int
plan_of_type(const char *type)
{
	static const struct {
		const char	*type;
		enum peftio_plan_method m;
	} tab[] = {
		{ "LORA", PEFTIO_PLAN_LORA }, { "IA3", PEFTIO_PLAN_IA3 },
		{ "PROMPT_TUNING", PEFTIO_PLAN_PROMPT },
		{ "PREFIX_TUNING", PEFTIO_PLAN_PREFIX },
		{ "LOHA", PEFTIO_PLAN_LOHA }, { "LOKR", PEFTIO_PLAN_LOKR },
		{ "ADALORA", PEFTIO_PLAN_ADALORA }, { "VERA", PEFTIO_PLAN_VERA },
		{ "HRA", PEFTIO_PLAN_HRA }, { "MISS", PEFTIO_PLAN_MISS },
		{ "BONE", PEFTIO_PLAN_BONE }, { "DELORA", PEFTIO_PLAN_DELORA },
		{ "OFT", PEFTIO_PLAN_OFT }, { "BOFT", PEFTIO_PLAN_BOFT },
		{ "VBLORA", PEFTIO_PLAN_VBLORA },
		{ "RANDLORA", PEFTIO_PLAN_RANDLORA },
		{ "SHIRA", PEFTIO_PLAN_SHIRA }, { "C3A", PEFTIO_PLAN_C3A },
		{ "ROAD", PEFTIO_PLAN_ROAD },
		{ "FOURIERFT", PEFTIO_PLAN_FOURIERFT },
	};
	size_t i;

	for (i = 0; i < NELEM(tab); i++)
		if (strcmp(type, tab[i].type) == 0)
			return (int)tab[i].m;
	return -1;
}

/* target_modules as a comma-separated list: 0 and *out (NULL for none),
 * or an error. */
static int
config_targets(const json_t *cfg, char **out, struct peftio_error *err)
{
	const json_t *tm = json_object_get(cfg, "target_modules"), *v;
	size_t i, len = 1;
	char *s;

	*out = NULL;
	if (tm == NULL || json_is_null(tm))
		return 0;
	if (json_is_string(tm))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "target_modules is a regular expression ('%s'): give the "
		    "module names with --target", json_string_value(tm));
	if (!json_is_array(tm))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "target_modules is not a list of names");
	json_array_foreach(tm, i, v) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    strchr(json_string_value(v), ',') != NULL)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "target_modules: entry %zu is not a module name",
			    i);
		len += json_string_length(v) + 1;
	}
	if (json_array_size(tm) == 0)
		return 0;
	if ((s = malloc(len)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	s[0] = '\0';
	json_array_foreach(tm, i, v) {
		if (i > 0)
			strcat(s, ",");
		strcat(s, json_string_value(v));
	}
	*out = s;
	return 0;
}

int
peftio_plan_adapter_config(const char *text, size_t len,
    struct peftio_plan_opts *o, char **targets, struct peftio_error *err)
{
	static const struct {
		enum peftio_plan_method m;
		const char	*key;
		size_t		 off;
	} sizes[] = {
		{ PEFTIO_PLAN_OFT, "oft_block_size",
		    offsetof(struct peftio_plan_opts, block_size) },
		{ PEFTIO_PLAN_OFT, "r",
		    offsetof(struct peftio_plan_opts, block_num) },
		{ PEFTIO_PLAN_BOFT, "boft_block_size",
		    offsetof(struct peftio_plan_opts, block_size) },
		{ PEFTIO_PLAN_BOFT, "boft_block_num",
		    offsetof(struct peftio_plan_opts, block_num) },
		{ PEFTIO_PLAN_BOFT, "boft_n_butterfly_factor",
		    offsetof(struct peftio_plan_opts, butterfly) },
		{ PEFTIO_PLAN_VBLORA, "num_vectors",
		    offsetof(struct peftio_plan_opts, num_vectors) },
		{ PEFTIO_PLAN_VBLORA, "vector_length",
		    offsetof(struct peftio_plan_opts, vector_length) },
		{ PEFTIO_PLAN_C3A, "block_size",
		    offsetof(struct peftio_plan_opts, block_size) },
		{ PEFTIO_PLAN_ROAD, "group_size",
		    offsetof(struct peftio_plan_opts, group_size) },
		{ PEFTIO_PLAN_FOURIERFT, "n_frequency",
		    offsetof(struct peftio_plan_opts, n_frequency) },
		{ PEFTIO_PLAN_PROMPT, "num_virtual_tokens",
		    offsetof(struct peftio_plan_opts, virtual_tokens) },
		{ PEFTIO_PLAN_PREFIX, "num_virtual_tokens",
		    offsetof(struct peftio_plan_opts, virtual_tokens) },
	};
	json_error_t jerr;
	json_t *cfg, *v;
	const char *type, *s;
	uint64_t x;
	size_t i;
	int m, rc = 0, k;

	*targets = NULL;
	cfg = json_loadb(text, len, 0, &jerr);
	if (cfg == NULL || !json_is_object(cfg)) {
		json_decref(cfg);
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "adapter_config.json: line %d: %s", jerr.line,
		    cfg == NULL ? jerr.text : "not a JSON object");
	}
	v = json_object_get(cfg, "peft_type");
	if (!json_is_string(v)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "adapter_config.json: no \"peft_type\"");
		goto out;
	}
	type = json_string_value(v);
	if ((m = plan_of_type(type)) < 0) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "adapter_config.json: no plan counts a %s adapter", type);
		goto out;
	}
	o->method = (enum peftio_plan_method)m;
	/* AdaLoRA starts at init_r; OFT's r is its number of blocks. */
	s = m == PEFTIO_PLAN_ADALORA ? "init_r" : "r";
	if (m != PEFTIO_PLAN_OFT && (k = config_count(cfg, s, &x)) != 0) {
		if (k < 0 || x == 0) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "adapter_config.json: %s is not a positive "
			    "integer", s);
			goto out;
		}
		o->r = x;
	}
	for (i = 0; i < NELEM(sizes); i++) {
		if (sizes[i].m != o->method ||
		    (k = config_count(cfg, sizes[i].key, &x)) == 0)
			continue;
		if (k < 0) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "adapter_config.json: %s is not a count",
			    sizes[i].key);
			goto out;
		}
		*(uint64_t *)(void *)((char *)o + sizes[i].off) = x;
	}
	if (m == PEFTIO_PLAN_OFT && o->block_size != 0 && o->block_num != 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "adapter_config.json: OFT takes r or oft_block_size, "
		    "not both");
		goto out;
	}
	if (m == PEFTIO_PLAN_BOFT && (o->block_size != 0) ==
	    (o->block_num != 0)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "adapter_config.json: BOFT takes one of boft_block_size "
		    "and boft_block_num");
		goto out;
	}
	o->block_share = json_is_true(json_object_get(cfg, "block_share"));
	o->decompose_both = json_is_true(json_object_get(cfg,
	    "decompose_both"));
	v = json_object_get(cfg, "decompose_factor");
	if (json_is_integer(v) && json_integer_value(v) > -(1LL << 40) &&
	    json_integer_value(v) < (1LL << 40))
		o->decompose_factor = json_integer_value(v);
	v = json_object_get(cfg, "variant");
	if (m == PEFTIO_PLAN_ROAD && v != NULL && !json_is_null(v)) {
		s = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(s, "road_1") == 0 || strcmp(s, "road_2") == 0 ||
		    strcmp(s, "road_4") == 0)
			o->road_variant = (unsigned)(s[5] - '0');
		else {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "adapter_config.json: RoAd variant is not road_1, "
			    "road_2 or road_4");
			goto out;
		}
	}
	if (m != PEFTIO_PLAN_PROMPT && m != PEFTIO_PLAN_PREFIX &&
	    (rc = config_targets(cfg, targets, err)) != 0 &&
	    rc != PEFTIO_ENOMEM)
		peftio_error_prefix(err, "adapter_config.json");
out:
	json_decref(cfg);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The plan of a checkpoint inspected                                  */

const char *
peftio_plan_targets(const struct peftio_plan_opts *o)
{
	if (o->targets != NULL)
		return o->targets;
	return peftio_plan_default_targets(o->method);
}

void
peftio_plan_assumptions(const struct peftio_plan_opts *o, char *buf,
    size_t len)
{
	const char *lora_targets = o->targets != NULL &&
	    o->method != PEFTIO_PLAN_IA3 ? o->targets :
	    peftio_plan_default_targets(PEFTIO_PLAN_LORA);

	snprintf(buf, len,
	    "16-bit weights and gradients (2 + 2 bytes per trained "
	    "parameter), optimizer %s with %u bytes of state per trained "
	    "parameter; LoRA and QLoRA: rank %llu on %s, frozen base in "
	    "16 bits (LoRA) or NF4 with double quantization at blocksize "
	    "64 for Linear weights and 16 bits for the rest (QLoRA); "
	    "activations and framework overhead not counted",
	    peftio_optimizer_name(o->optimizer),
	    peftio_optimizer_state_bytes(o->optimizer),
	    (unsigned long long)o->r, lora_targets);
}

/* The attention heads of config.json beside checkpoint c, if any. */
static int
config_beside(struct peftio_ckpt *c, struct peftio_plan_opts *o,
    struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(c);
	char path[4096], *text;
	struct stat sb;
	size_t len;
	int rc;

	if (dir == NULL)
		return 0;
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return 0;
	if ((rc = peftio_read_file(path, 64u << 20, &text, &len, err)) != 0)
		return rc;
	if ((rc = peftio_plan_config(text, len, o, err)) != 0)
		peftio_error_prefix(err, "%s", dir);
	free(text);
	return rc;
}

int
peftio_plan_inspect(const struct peftio_inspect *r,
    struct peftio_plan_opts *o, struct peftio_plan *p,
    struct peftio_error *err)
{
	struct peftio_plan_tensor *t;
	size_t i;
	int rc;

	if ((rc = config_beside(r->c, o, err)) != 0)
		return rc;
	if ((t = calloc(r->nrows ? r->nrows : 1, sizeof(*t))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (i = 0; i < r->nrows; i++) {
		t[i].name = r->rows[i].name;
		t[i].ndim = r->rows[i].ndim;
		t[i].shape = r->rows[i].shape;
		t[i].numel = r->rows[i].params;
		t[i].nbytes = r->rows[i].bytes;
		t[i].quantized = r->rows[i].quantized;
	}
	rc = peftio_plan_compute(o, t, r->nrows, p, err);
	free(t);
	return rc;
}
