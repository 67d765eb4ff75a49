/*
 * combine_save.c - the combined adapter of a weighted combination
 * written as a PEFT LoRA adapter, what add_weighted_adapter() followed
 * by save_pretrained() gives: per module the factors combine.c
 * computes, in float32, at the new rank, with the first adapter's
 * config given r = lora_alpha = that rank.
 */
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"
#include "adapter_write.h"

/* The first LoRA op of t, or NULL. */
static const struct lmod *
first_lora(const struct peftio_merge *m, const struct target *t)
{
	size_t j;

	for (j = 0; j < t->nops; j++)
		if (t->ops[j].kind == OP_LORA)
			return &m->ads[t->ops[j].ad]->mods[t->ops[j].mod];
	return NULL;
}

/* A [r, acols] and B [brows, r] of module md over target t, in PEFT's
 * layout (transposed for embeddings and Conv1D). */
static void
factor_dims(const struct lmod *md, const struct target *t, uint64_t *acols,
    uint64_t *brows)
{
	int trans = md->embedding || md->fifo;

	*acols = trans ? t->rows : t->cols;
	*brows = trans ? t->cols : t->rows;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sorted distinct strings of the arrays v[i] (non-strings are left
 * out), as a JSON array; NULL when out of memory. */
static json_t *
string_union(json_t *const *v, size_t n)
{
	const char **s;
	json_t *out = json_array(), *x;
	size_t i, j, k = 0, total = 0;

	for (i = 0; i < n; i++)
		total += json_array_size(v[i]);
	if (out == NULL || (s = malloc((total + 1) * sizeof(*s))) == NULL) {
		json_decref(out);
		return NULL;
	}
	for (i = 0; i < n; i++)
		json_array_foreach(v[i], j, x)
			if (json_is_string(x))
				s[k++] = json_string_value(x);
	qsort(s, k, sizeof(*s), cmp_str);
	for (i = 0; i < k; i++)
		if ((i == 0 || strcmp(s[i], s[i - 1]) != 0) &&
		    json_array_append_new(out, json_string(s[i])) != 0) {
			json_decref(out);
			out = NULL;
			break;
		}
	free(s);
	return out;
}

/*
 * target_modules of the combination, as PEFT makes it: the union of
 * the lists, or the regular expressions joined as (a)|(b).  Inputs that
 * mix the two forms (PEFT refuses them) get the list of the module
 * names the combination holds.
 */
static json_t *
target_modules(const struct peftio_merge *m)
{
	json_t *v[64], *out;
	char *re, *p;
	const struct lmod *md;
	size_t i, nlist = 0, nstr = 0, len = 1;

	for (i = 0; i < m->nads && i < 64; i++) {
		v[i] = json_object_get(m->ads[i]->cfg, "target_modules");
		nlist += json_is_array(v[i]);
		nstr += json_is_string(v[i]);
	}
	if (nlist == m->nads)
		return string_union(v, m->nads);
	if (nstr == m->nads) {
		for (i = 0; i < m->nads; i++)
			len += json_string_length(v[i]) + 3;
		if ((re = malloc(len)) == NULL)
			return NULL;
		for (i = 0, p = re; i < m->nads; i++)
			p += sprintf(p, "%s(%s)", i ? "|" : "",
			    json_string_value(v[i]));
		out = json_string(re);
		free(re);
		return out;
	}
	if ((out = json_array()) == NULL)
		return NULL;
	for (i = 0; i < m->nt; i++)
		if ((md = first_lora(m, &m->t[i])) != NULL)
			json_array_append_new(out,
			    json_string(peftio_module_leaf(md->name)));
	v[0] = out;
	out = string_union(v, 1);
	json_decref(v[0]);
	return out;
}

/* modules_to_save of the combination: the union of the inputs'. */
static json_t *
modules_to_save(const struct peftio_merge *m)
{
	json_t *v[64];
	size_t i, n = 0;

	for (i = 0; i < m->nads && i < 64; i++) {
		v[n] = json_object_get(m->ads[i]->cfg, "modules_to_save");
		n += json_is_array(v[n]) && json_array_size(v[n]) > 0;
	}
	return n > 0 ? string_union(v, n) : json_null();
}

/* adapter_config.json of the combination; NULL when out of memory. */
static json_t *
combined_config(const struct peftio_merge *m)
{
	json_t *c = json_deep_copy(m->ads[0]->cfg), *tm, *ms;

	if (c == NULL)
		return NULL;
	tm = target_modules(m);
	ms = modules_to_save(m);
	if (tm == NULL || ms == NULL ||
	    json_object_set_new(c, "target_modules", tm) != 0 ||
	    json_object_set_new(c, "modules_to_save", ms) != 0 ||
	    json_object_set_new(c, "r", json_integer((json_int_t)m->newr)) !=
	    0 ||
	    json_object_set_new(c, "lora_alpha",
	    json_integer((json_int_t)m->newr)) != 0 ||
	    json_object_set_new(c, "rank_pattern", json_object()) != 0 ||
	    json_object_set_new(c, "alpha_pattern", json_object()) != 0 ||
	    json_object_set_new(c, "inference_mode", json_true()) != 0) {
		json_decref(c);
		return NULL;
	}
	return c;
}

/* Declare (write 0) or write (1) the tensors of target t. */
static int
target_tensors(struct peftio_merge *m, struct peftio_ckptw *w,
    const struct target *t, int write, struct peftio_error *err)
{
	const struct lmod *md = first_lora(m, t);
	const struct peftio_tensor_info *ti;
	struct peftio_adapter *a;
	char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME];
	uint64_t sh[2], acols, brows, R = m->newr, i;
	float *A = NULL, *B = NULL;
	struct prep pr;
	size_t j;
	int rc = 0;

	for (j = 0; j < t->nops && rc == 0; j++) {
		if (t->ops[j].kind != OP_REPL)
			continue;
		a = m->ads[t->ops[j].ad];
		ti = peftio_adapter_tinfo(a, t->ops[j].idx);
		rc = write ? peftio_ckptw_copy(w, ti->name, a->ck,
		    (size_t)t->ops[j].idx, ti->dtype, err) :
		    peftio_ckptw_declare(w, 0, ti->name, ti->dtype, ti->ndim,
		    ti->shape, err);
	}
	if (rc != 0 || md == NULL)
		return rc;
	factor_dims(md, t, &acols, &brows);
	peftio_adapter_key(ka, sizeof(ka), md->name, 0, md->embedding);
	peftio_adapter_key(kb, sizeof(kb), md->name, 1, md->embedding);
	if (!write) {
		sh[0] = R;
		sh[1] = acols;
		if ((rc = peftio_ckptw_declare(w, 0, ka, PEFTIO_F32, 2, sh,
		    err)) != 0)
			return rc;
		sh[0] = brows;
		sh[1] = R;
		return peftio_ckptw_declare(w, 0, kb, PEFTIO_F32, 2, sh, err);
	}
	memset(&pr, 0, sizeof(pr));
	pr.peft = 1;
	if ((rc = peftio_combine_factors(m, t, &pr, err)) != 0)
		return rc == 1 ? 0 : rc;
	if (pr.cr > R)
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "tensor '%s': combined rank %llu exceeds r = %llu",
		    t->name, (unsigned long long)pr.cr,
		    (unsigned long long)R);
	else if (pr.cr < R) {
		/* Zeros fill the rank up to r: the product is the same. */
		A = calloc(R * acols + 1, sizeof(float));
		B = calloc(brows * R + 1, sizeof(float));
		if (A == NULL || B == NULL)
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "tensor '%s': out of memory", t->name);
		else {
			memcpy(A, pr.ca, pr.cr * acols * sizeof(float));
			for (i = 0; i < brows; i++)
				memcpy(B + i * R, pr.cb + i * pr.cr,
				    pr.cr * sizeof(float));
		}
	}
	if (rc == 0)
		rc = peftio_ckptw_write(w, ka, A != NULL ? A : pr.ca,
		    R * acols * sizeof(float), err);
	if (rc == 0)
		rc = peftio_ckptw_write(w, kb, B != NULL ? B : pr.cb,
		    brows * R * sizeof(float), err);
	free(A);
	free(B);
	free(pr.ca);
	free(pr.cb);
	return rc;
}

int
peftio_merge_save_adapter(struct peftio_merge *m, const char *dir,
    unsigned flags, struct peftio_ckptw **out, struct peftio_error *err)
{
	const char *names[1] = { MODEL_NAME };
	struct peftio_ckptw *w = NULL;
	json_t *cfg = NULL;
	char *text;
	size_t i, len;
	int rc;

	*out = NULL;
	if (m->o.method == PEFTIO_COMBINE_NONE)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no combination to save (a combination type is "
		    "needed)", dir);
	if (m->nads > 64)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "more than 64 adapters");
	if ((cfg = combined_config(m)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = peftio_ckptw_create(&w, dir, 1, 1, names, flags,
	    err)) != 0)
		goto out;
	for (i = 0; i < m->nt && rc == 0; i++)
		rc = target_tensors(m, w, &m->t[i], 0, err);
	if (rc == 0)
		rc = peftio_ckptw_layout(w, err);
	for (i = 0; i < m->nt && rc == 0; i++)
		rc = target_tensors(m, w, &m->t[i], 1, err);
	if (rc != 0)
		goto out;
	if ((text = peftio_json_pydumps(cfg, 2, 1, &len)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	rc = peftio_ckptw_file(w, CONFIG_NAME, text, len, err);
	free(text);
out:
	json_decref(cfg);
	if (rc != 0) {
		peftio_ckptw_free(w);
		return rc;
	}
	*out = w;
	return 0;
}
