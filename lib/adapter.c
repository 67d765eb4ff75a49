/*
 * adapter.c - reading a PEFT adapter: adapter_config.json and the
 * adapter's tensors, the mapping of PEFT keys to base tensors, rank and
 * alpha patterns and per-module scaling.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static char *
xstrcat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 1);

	if (p != NULL) {
		memcpy(p, a, la);
		memcpy(p + la, b, lb + 1);
	}
	return p;
}

static int
ends_with(const char *s, size_t n, const char *suf)
{
	size_t m = strlen(suf);

	return n >= m && memcmp(s + n - m, suf, m) == 0;
}


/* ------------------------------------------------------------------ */
/* adapter_config.json                                                 */

/* Why an adapter type cannot be merged; NULL when it can. */
static const char *
unmergeable(const char *t)
{
	static const struct { const char *type, *why; } tab[] = {
		{ "PROMPT_TUNING", "prompt tuning learns virtual input "
		    "tokens, not weight changes" },
		{ "MULTITASK_PROMPT_TUNING", "prompt tuning learns virtual "
		    "input tokens, not weight changes" },
		{ "P_TUNING", "p-tuning learns virtual input tokens (through "
		    "a prompt encoder), not weight changes" },
		{ "PREFIX_TUNING", "prefix tuning learns key/value prefixes "
		    "for every attention layer, not weight changes" },
		{ "ADAPTION_PROMPT", "adaption prompts add gated prompt "
		    "tokens to attention, not weight changes" },
		{ "CPT", "context-aware prompt tuning learns input tokens, "
		    "not weight changes" },
		{ "BOTTLENECK", "bottleneck adapters insert new layers with "
		    "a nonlinearity, which no weight of the base can hold" },
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(t, tab[i].type) == 0)
			return tab[i].why;
	return NULL;
}

static int
json_truthy(json_t *v)
{
	if (v == NULL || json_is_null(v) || json_is_false(v))
		return 0;
	if (json_is_object(v))
		return json_object_size(v) != 0;
	if (json_is_array(v))
		return json_array_size(v) != 0;
	if (json_is_string(v))
		return json_string_length(v) != 0;
	return 1;
}

static int
check_variants(const char *cfgpath, json_t *cfg, struct peftio_error *err)
{
	static const char *const refused[] = {
		"layer_replication", "target_parameters",
		"alora_invocation_tokens", "use_bdlora", "use_qalora",
		"velora_config", "kasa_config", "monteclora_config",
		"arrow_config", "trainable_token_indices"
	};
	json_t *v;
	const char *s;
	size_t i;

	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (json_truthy(json_object_get(cfg, refused[i])))
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: '%s' is set: this LoRA variant is not "
			    "supported by the merge", cfgpath, refused[i]);
	v = json_object_get(cfg, "init_lora_weights");
	if (json_is_string(v) && ((s = json_string_value(v)),
	    strncmp(s, "pissa", 5) == 0 || strcmp(s, "olora") == 0 ||
	    strcmp(s, "corda") == 0))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: init_lora_weights '%s' changes the base weights; "
		    "convert the adapter to a plain LoRA first "
		    "(path_initial_model_for_weight_conversion)", cfgpath, s);
	return 0;
}

static void
pats_free(struct pats *ps)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		regfree(&ps->p[i].re);
	free(ps->p);
	ps->p = NULL;
	ps->n = 0;
}

/* Compile the patterns of the config's mapping key (rank_pattern,
 * alpha_pattern) once, in their order. */
static int
pats_compile(struct pats *ps, json_t *cfg, const char *key,
    const char *cfgpath, struct peftio_error *err)
{
	json_t *map = json_object_get(cfg, key), *v;
	const char *k, *why;
	int rc;

	if (map == NULL || json_is_null(map))
		return 0;
	if (!json_is_object(map))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s is not a mapping of patterns to numbers", cfgpath,
		    key);
	if ((ps->p = calloc(json_object_size(map) + 1, sizeof(*ps->p))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", cfgpath);
	json_object_foreach(map, k, v) {
		if (!json_is_number(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: %s '%s': value is not a number", cfgpath, key,
			    k);
		rc = peftio_rx_compile(&ps->p[ps->n].re, k, 1, &why);
		if (rc == PEFTIO_ENOMEM)
			return peftio_error_set(err, rc, "%s: out of memory",
			    cfgpath);
		if (rc != 0)
			return peftio_error_set(err, rc == PEFTIO_EINVAL ?
			    PEFTIO_EFORMAT : rc, "%s: %s '%s': %s%s", cfgpath,
			    key, k, rc == PEFTIO_EUNSUPPORTED ?
			    "not supported: " : "", why);
		ps->p[ps->n].key = k;
		ps->p[ps->n].v = json_number_value(v);
		ps->n++;
	}
	return 0;
}

/* The value of the first pattern matching module p, or dflt. */
static int
pattern_value(const char *cfgpath, const struct pats *ps, const char *p,
    double dflt, double *out, struct peftio_error *err)
{
	size_t i;
	int rc;

	*out = dflt;
	for (i = 0; i < ps->n; i++) {
		if ((rc = peftio_rx_match(&ps->p[i].re, p)) < 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: module name longer than %d bytes: patterns "
			    "are not matched against it", cfgpath, RX_LEN_MAX);
		if (rc == 1) {
			*out = ps->p[i].v;
			return 0;
		}
	}
	return 0;
}

/* feedforward_modules: a list of names (exact or "."-suffix match) or
 * a regex (compiled once, a full match). */
static int
ff_compile(struct peftio_adapter *a, json_t *cfg, const char *cfgpath,
    struct peftio_error *err)
{
	json_t *ffm = json_object_get(cfg, "feedforward_modules"), *v;
	const char *why;
	size_t i;
	int rc;

	if (ffm == NULL || json_is_null(ffm))
		return 0;
	if (json_is_string(ffm)) {
		rc = peftio_rx_compile(&a->ff, json_string_value(ffm), 0, &why);
		if (rc == PEFTIO_ENOMEM)
			return peftio_error_set(err, rc, "%s: out of memory",
			    cfgpath);
		if (rc != 0)
			return peftio_error_set(err, rc == PEFTIO_EINVAL ?
			    PEFTIO_EFORMAT : rc, "%s: feedforward_modules "
			    "'%s': %s%s", cfgpath, json_string_value(ffm),
			    rc == PEFTIO_EUNSUPPORTED ? "not supported: " : "",
			    why);
		a->has_ff = 1;
		return 0;
	}
	if (!json_is_array(ffm))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: feedforward_modules is neither a list of names nor a "
		    "pattern", cfgpath);
	json_array_foreach(ffm, i, v)
		if (!json_is_string(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: feedforward_modules: entry %zu is not a "
			    "string", cfgpath, i);
	return 0;
}

static int
ff_match(const struct peftio_adapter *a, json_t *ffm, const char *p)
{
	size_t i, n = strlen(p), m;
	const char *t;
	json_t *v;

	if (a->has_ff)
		return peftio_rx_match(&a->ff, p) == 1;
	json_array_foreach(ffm, i, v) {
		if (!json_is_string(v))
			continue;
		t = json_string_value(v);
		m = strlen(t);
		if (strcmp(p, t) == 0 || (n > m && p[n - m - 1] == '.' &&
		    strcmp(p + n - m, t) == 0))
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Adapter tensors                                                     */

static struct lmod *
get_mod(struct peftio_adapter *a, const char *name, size_t len)
{
	struct lmod *m;
	size_t i;

	for (i = 0; i < a->nmods; i++)
		if (strlen(a->mods[i].name) == len &&
		    memcmp(a->mods[i].name, name, len) == 0)
			return &a->mods[i];
	m = realloc(a->mods, (a->nmods + 1) * sizeof(*m));
	if (m == NULL)
		return NULL;
	a->mods = m;
	m = &a->mods[a->nmods];
	memset(m, 0, sizeof(*m));
	m->a = m->b = m->bias = m->mag = m->ia3 = -1;
	if ((m->name = strndup(name, len)) == NULL)
		return NULL;
	a->nmods++;
	if ((m->target = xstrcat(m->name, ".weight")) == NULL ||
	    (m->btarget = xstrcat(m->name, ".bias")) == NULL)
		return NULL;
	return m;
}

static int
add_repl(struct peftio_adapter *a, const char *target, size_t len, long idx)
{
	struct repl *r = realloc(a->repls, (a->nrepls + 1) * sizeof(*r));

	if (r == NULL)
		return PEFTIO_ENOMEM;
	a->repls = r;
	r[a->nrepls].idx = idx;
	if ((r[a->nrepls].target = strndup(target, len)) == NULL)
		return PEFTIO_ENOMEM;
	a->nrepls++;
	return 0;
}

static int
tuner_repl(void *arg, const char *target, size_t len, long idx)
{
	return add_repl(arg, target, len, idx);
}

static int
classify(struct peftio_adapter *a, long idx, const char *full,
    struct peftio_error *err)
{
	static const struct { const char *suf; int what; } tab[] = {
		{ ".lora_A.weight", 0 }, { ".lora_B.weight", 1 },
		{ ".lora_B.bias", 2 }, { ".lora_embedding_A", 3 },
		{ ".lora_embedding_B", 4 }, { ".lora_magnitude_vector", 5 },
		{ ".lora_magnitude_vector.weight", 5 }, { ".ia3_l", 6 },
		{ ".base_layer.weight", 7 }, { ".base_layer.bias", 8 },
	};
	const char *name = full;
	struct lmod *m;
	size_t n, i, sl;
	char *t;
	int rc;

	if (strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0)
		name += strlen(PEFT_PREFIX);
	n = strlen(name);
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (!ends_with(name, n, tab[i].suf))
			continue;
		sl = strlen(tab[i].suf);
		if (tab[i].what == 7 || tab[i].what == 8) {
			t = malloc(n);
			if (t == NULL)
				return PEFTIO_ENOMEM;
			snprintf(t, n, "%.*s%s", (int)(n - sl), name,
			    tab[i].what == 7 ? ".weight" : ".bias");
			rc = add_repl(a, t, strlen(t), idx);
			free(t);
			return rc;
		}
		if ((m = get_mod(a, name, n - sl)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		switch (tab[i].what) {
		case 0: case 3:
			m->a = idx;
			m->embedding = tab[i].what == 3;
			break;
		case 1: case 4:
			m->b = idx;
			m->embedding = tab[i].what == 4;
			break;
		case 2:
			m->bias = idx;
			break;
		case 5:
			m->mag = idx;
			break;
		case 6:
			m->ia3 = idx;
			break;
		}
		return 0;
	}
	if (strstr(name, "trainable_tokens") != NULL)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': trainable tokens are not supported",
		    a->path, full);
	if (strstr(name, ".lora_") != NULL || strstr(name, ".ia3_") != NULL)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': unknown adapter tensor", a->path, full);
	if (ends_with(name, n, ".weight") || ends_with(name, n, ".bias"))
		return add_repl(a, name, n, idx);	/* modules_to_save */
	return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
	    "%s: tensor '%s': unknown adapter tensor", a->path, full);
}

const struct peftio_tensor_info *
peftio_adapter_tinfo(const struct peftio_adapter *a, long idx)
{
	return peftio_ckpt_tensor(a->ck, (size_t)idx);
}

static int
check_module(struct peftio_adapter *a, struct lmod *m, json_t *cfg,
    const char *cfgpath, double r0, double alpha0, struct peftio_error *err)
{
	const struct peftio_tensor_info *ta, *tb, *t;
	double r, alpha;
	int rc;

	/* PEFT decides fan_in_fan_out by the layer's class: true for a
	 * GPT-2 style Conv1D (weight [in, out]), false (with a warning)
	 * for Linear, whatever the config says. */
	m->fifo = peftio_conv1d_weight(m->target);
	if (a->fifo && !m->fifo && !m->embedding)
		a->fifo_ignored = 1;
	if (a->type == PEFTIO_ADAPTER_IA3) {
		if (m->ia3 < 0 || m->a >= 0 || m->b >= 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: module '%s': IA3 adapter with LoRA tensors",
			    a->path, m->name);
		t = peftio_adapter_tinfo(a, m->ia3);
		if (t->ndim != 2 || (t->shape[0] != 1 && t->shape[1] != 1))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': ia3_l must be [out, 1] or "
			    "[1, in]", a->path, t->name);
		m->ff = t->shape[0] == 1 && t->shape[1] != 1;
		if (t->shape[0] == 1 && t->shape[1] == 1)
			m->ff = ff_match(a, json_object_get(cfg,
			    "feedforward_modules"), m->name);
		return peftio_dtype_is_float(t->dtype) ? 0 :
		    peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': not a float tensor", a->path, t->name);
	}
	if (m->ia3 >= 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': ia3_l in a LoRA adapter", a->path,
		    m->name);
	if (m->a < 0 || m->b < 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': %s without %s", a->path, m->name,
		    m->a < 0 ? "lora_B" : "lora_A",
		    m->a < 0 ? "lora_A" : "lora_B");
	ta = peftio_adapter_tinfo(a, m->a);
	tb = peftio_adapter_tinfo(a, m->b);
	if (ta->ndim != 2 || tb->ndim != 2)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': %d-D LoRA factors (convolutions) are "
		    "not supported", a->path, ta->ndim != 2 ? ta->name :
		    tb->name, ta->ndim != 2 ? ta->ndim : tb->ndim);
	if (!peftio_dtype_is_float(ta->dtype) ||
	    !peftio_dtype_is_float(tb->dtype))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': LoRA factors are not float tensors",
		    a->path, m->name);
	if (ta->shape[0] != tb->shape[1])
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': lora_A [%llu, %llu] and lora_B "
		    "[%llu, %llu] have different ranks", a->path, m->name,
		    (unsigned long long)ta->shape[0],
		    (unsigned long long)ta->shape[1],
		    (unsigned long long)tb->shape[0],
		    (unsigned long long)tb->shape[1]);
	m->r = ta->shape[0];
	if ((rc = pattern_value(cfgpath, &a->rank, m->name, r0, &r,
	    err)) != 0 || (rc = pattern_value(cfgpath, &a->alpha, m->name,
	    alpha0, &alpha, err)) != 0)
		return rc;
	if (r != (double)m->r)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': lora_A has rank %llu but the config "
		    "gives r = %g", a->path, m->name,
		    (unsigned long long)m->r, r);
	if (m->r == 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': rank 0", a->path, m->name);
	m->scale = a->rslora ? alpha / sqrt(r) : alpha / r;
	if (m->mag >= 0) {
		t = peftio_adapter_tinfo(a, m->mag);
		if (m->embedding)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: module '%s': DoRA on embeddings is not "
			    "supported", a->path, m->name);
		if (t->ndim != 1 || t->shape[0] != tb->shape[0] ||
		    !peftio_dtype_is_float(t->dtype))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': magnitude vector does not fit "
			    "lora_B", a->path, t->name);
		a->dora = 1;
	}
	if (m->bias >= 0) {
		t = peftio_adapter_tinfo(a, m->bias);
		if (t->ndim != 1 || t->shape[0] != tb->shape[0] ||
		    !peftio_dtype_is_float(t->dtype))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': bias does not fit lora_B",
			    a->path, t->name);
	}
	return 0;
}

/*
 * Read the adapter: adapter_config.json from cfgtext, then the tensors:
 * with a modelname, the modellen bytes at model; without, from a->path.
 */
static int
adapter_load(struct peftio_adapter *a, const char *cfgtext, size_t cfglen,
    const char *cfgpath, const void *model, size_t modellen,
    const char *modelname, struct peftio_error *err)
{
	json_t *cfg, *v;
	json_error_t je;
	const char *type;
	double r0 = 8, alpha0 = 8;
	size_t i;
	int rc = 0;

	cfg = json_loadb(cfgtext, cfglen, 0, &je);
	if (cfg == NULL || !json_is_object(cfg)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT, "%s: %s", cfgpath,
		    cfg == NULL ? je.text : "not a JSON object");
		goto out;
	}
	v = json_object_get(cfg, "peft_type");
	if (!json_is_string(v)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: no \"peft_type\"", cfgpath);
		goto out;
	}
	type = json_string_value(v);
	if (unmergeable(type) != NULL) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: a %s adapter cannot be merged into weights: %s",
		    cfgpath, type, unmergeable(type));
		goto out;
	}
	if (peftio_tuner_handles(type)) {
		a->type = PEFTIO_ADAPTER_TUNER;
		if (modelname != NULL)
			rc = peftio_ckpt_open_mem(&a->ck, model, modellen,
			    modelname, err);
		else
			rc = peftio_ckpt_open(&a->ck, a->path, err);
		if (rc == 0)
			rc = peftio_tuner_load(&a->tuner, type, cfg, cfgpath,
			    a->path, a->ck, tuner_repl, a, err);
		if (rc == PEFTIO_ENOMEM)
			rc = peftio_error_set(err, rc, "out of memory");
		for (i = 0; i < a->nrepls && rc == 0; i++)
			if (!peftio_dtype_is_float(peftio_adapter_tinfo(a,
			    a->repls[i].idx)->dtype))
				rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
				    "%s: tensor '%s': not a float tensor",
				    a->path, peftio_adapter_tinfo(a,
				    a->repls[i].idx)->name);
		if (rc == 0 && peftio_tuner_nmodules(a->tuner) == 0 &&
		    a->nrepls == 0)
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: the adapter holds no tensors", a->path);
		goto out;
	}
	if (strcmp(type, "LORA") == 0)
		a->type = PEFTIO_ADAPTER_LORA;
	else if (strcmp(type, "IA3") == 0)
		a->type = PEFTIO_ADAPTER_IA3;
	else {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: adapter type %s is not supported (LORA and IA3 are)",
		    cfgpath, type);
		goto out;
	}
	if (a->type == PEFTIO_ADAPTER_LORA &&
	    (rc = check_variants(cfgpath, cfg, err)) != 0)
		goto out;
	a->fifo = json_is_true(json_object_get(cfg, "fan_in_fan_out"));
	a->rslora = json_is_true(json_object_get(cfg, "use_rslora"));
	if ((v = json_object_get(cfg, "r")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: r is not a number", cfgpath);
			goto out;
		}
		r0 = json_number_value(v);
	}
	if ((v = json_object_get(cfg, "lora_alpha")) != NULL &&
	    !json_is_null(v)) {
		if (!json_is_number(v)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: lora_alpha is not a number", cfgpath);
			goto out;
		}
		alpha0 = json_number_value(v);
	}
	/* Checked before the conversion to an integer type. */
	if (!(r0 >= 1 && r0 <= MAX_RANK) || r0 != floor(r0)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: r = %g is not an integer from 1 to %.0f", cfgpath, r0,
		    MAX_RANK);
		goto out;
	}
	a->r = (uint64_t)r0;
	if (a->type == PEFTIO_ADAPTER_LORA &&
	    ((rc = pats_compile(&a->rank, cfg, "rank_pattern", cfgpath,
	    err)) != 0 || (rc = pats_compile(&a->alpha, cfg, "alpha_pattern",
	    cfgpath, err)) != 0))
		goto out;
	if (a->type == PEFTIO_ADAPTER_IA3 &&
	    (rc = ff_compile(a, cfg, cfgpath, err)) != 0)
		goto out;

	if (modelname != NULL)
		rc = peftio_ckpt_open_mem(&a->ck, model, modellen, modelname,
		    err);
	else
		rc = peftio_ckpt_open(&a->ck, a->path, err);
	if (rc != 0)
		goto out;
	for (i = 0; i < peftio_ckpt_count(a->ck) && rc == 0; i++)
		rc = classify(a, (long)i, peftio_ckpt_tensor(a->ck, i)->name,
		    err);
	for (i = 0; i < a->nmods && rc == 0; i++)
		rc = check_module(a, &a->mods[i], cfg, cfgpath, r0, alpha0,
		    err);
	for (i = 0; i < a->nrepls && rc == 0; i++)
		if (!peftio_dtype_is_float(peftio_adapter_tinfo(a,
		    a->repls[i].idx)->dtype))
			rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: tensor '%s': not a float tensor", a->path,
			    peftio_adapter_tinfo(a, a->repls[i].idx)->name);
	/* PEFT saves a magnitude vector with every DoRA module. */
	if (rc == 0 && a->type == PEFTIO_ADAPTER_LORA &&
	    json_is_true(json_object_get(cfg, "use_dora")))
		for (i = 0; i < a->nmods && rc == 0; i++)
			if (a->mods[i].mag < 0)
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: use_dora is set, but module '%s' has "
				    "no lora_magnitude_vector", a->path,
				    a->mods[i].name);
	if (rc == 0 && a->nmods == 0 && a->nrepls == 0)
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: the adapter holds no tensors", a->path);
out:
	if (rc == 0)
		a->cfg = json_incref(cfg);
	json_decref(cfg);
	return rc;
}

static struct peftio_adapter *
adapter_new(const char *path)
{
	struct peftio_adapter *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	if ((a->path = strdup(path)) == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

int
peftio_adapter_open(struct peftio_adapter **out, const char *path,
    struct peftio_error *err)
{
	struct peftio_adapter *a;
	char *cfgpath = NULL, *dir = NULL, *s, *text = NULL;
	size_t n, len;
	int rc;

	*out = NULL;
	if ((a = adapter_new(path)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	n = strlen(path);
	if (ends_with(path, n, ".safetensors") || ends_with(path, n, ".bin")) {
		dir = strdup(path);
		if (dir != NULL) {
			s = strrchr(dir, '/');
			if (s != NULL)
				*s = '\0';
			else
				strcpy(dir, ".");
		}
	} else
		dir = strdup(path);
	if (dir == NULL || (cfgpath = xstrcat(dir, "/" CONFIG_NAME))
	    == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = peftio_read_file(cfgpath, CONFIG_MAX, &text, &len,
	    err)) != 0) {
		if (err != NULL && err->sys_errno == ENOENT)
			rc = err->code = PEFTIO_ENOTFOUND;
		goto out;
	}
	rc = adapter_load(a, text, len, cfgpath, NULL, 0, NULL, err);
out:
	free(text);
	free(cfgpath);
	free(dir);
	if (rc != 0) {
		peftio_adapter_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

int
peftio_adapter_open_mem(struct peftio_adapter **out, const char *cfg,
    size_t cfglen, const void *model, size_t modellen, const char *label,
    struct peftio_error *err)
{
	struct peftio_adapter *a;
	char *cfgpath = NULL, *modelname = NULL;
	int rc;

	*out = NULL;
	if (label == NULL)
		label = "<memory>";
	if ((a = adapter_new(label)) == NULL ||
	    (cfgpath = xstrcat(label, "/" CONFIG_NAME)) == NULL ||
	    (modelname = xstrcat(label, "/" MODEL_NAME)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	rc = adapter_load(a, cfg, cfglen, cfgpath, model, modellen,
	    modelname, err);
out:
	free(cfgpath);
	free(modelname);
	if (rc != 0) {
		peftio_adapter_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void
peftio_adapter_free(struct peftio_adapter *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->nmods; i++) {
		free(a->mods[i].name);
		free(a->mods[i].target);
		free(a->mods[i].btarget);
	}
	for (i = 0; i < a->nrepls; i++)
		free(a->repls[i].target);
	free(a->mods);
	free(a->repls);
	pats_free(&a->rank);
	pats_free(&a->alpha);
	if (a->has_ff)
		regfree(&a->ff);
	peftio_tuner_free(a->tuner);
	peftio_ckpt_close(a->ck);
	json_decref(a->cfg);
	free(a->path);
	free(a);
}

int
peftio_adapter_fifo_ignored(const struct peftio_adapter *a)
{
	return a->fifo_ignored;
}

const char *
peftio_adapter_path(const struct peftio_adapter *a)
{
	return a->path;
}

enum peftio_adapter_type
peftio_adapter_type(const struct peftio_adapter *a)
{
	return a->type;
}

size_t
peftio_adapter_nmodules(const struct peftio_adapter *a)
{
	return a->tuner != NULL ? peftio_tuner_nmodules(a->tuner) : a->nmods;
}

const char *
peftio_adapter_module(const struct peftio_adapter *a, size_t i,
    uint64_t *rank, double *scale)
{
	if (a->tuner != NULL) {
		if (scale != NULL)
			*scale = 1.0;
		return peftio_tuner_module(a->tuner, i, rank);
	}
	if (i >= a->nmods)
		return NULL;
	if (rank != NULL)
		*rank = a->mods[i].r;
	if (scale != NULL)
		*scale = a->mods[i].scale;
	return a->mods[i].name;
}

int
peftio_adapter_dora(const struct peftio_adapter *a)
{
	return a->dora;
}
