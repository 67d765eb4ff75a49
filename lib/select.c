/*
 * select.c - which tensors the tools touch: the Linear weights that
 * transformers quantizes (and LoRA targets by default), GPT-2's Conv1D
 * weights, and PEFT's rule for matching a module against a target.
 */
#include <fnmatch.h>
#include <string.h>

#include "peftio_private.h"

const char *
peftio_last_part(const char *name, size_t len, size_t *plen)
{
	const char *p = name + len;

	while (p > name && p[-1] != '.')
		p--;
	*plen = (size_t)(name + len - p);
	return p;
}

int
peftio_linear_module(const char *module, size_t len)
{
	/* Embeddings and output heads: Linear or not, never quantized. */
	static const char *const skip[] = {
		"lm_head", "embed_tokens", "wte", "wpe", "embed_in",
		"embed_out", "word_embeddings", "position_embeddings",
		"token_type_embeddings", "embed_positions", "shared", "output",
		"score", "classifier"
	};
	const char *p = peftio_last_part(module, len, &len);
	size_t i;

	for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strlen(skip[i]) == len && memcmp(p, skip[i], len) == 0)
			return 0;
	return strstr(module, "norm") == NULL &&
	    strstr(module, "embed") == NULL;
}

int
peftio_linear_weight(const char *name, int ndim)
{
	size_t n = strlen(name);

	if (ndim != 2 || n <= 7 || strcmp(name + n - 7, ".weight") != 0)
		return 0;
	return peftio_linear_module(name, n - 7);
}

int
peftio_conv1d_weight(const char *name)
{
	static const char *const leaf[] = {
		".attn.c_attn.weight", ".attn.q_attn.weight",
		".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"
	};
	size_t n = strlen(name), i, k;

	for (i = 0; i < sizeof(leaf) / sizeof(leaf[0]); i++) {
		k = strlen(leaf[i]);
		if (n >= k && strcmp(name + n - k, leaf[i]) == 0)
			return 1;
	}
	return 0;
}

int
peftio_module_match(const char *module, const char *pattern)
{
	size_t n = strlen(module), m = strlen(pattern);

	if (strcmp(module, pattern) == 0)
		return 1;
	if (n > m && module[n - m - 1] == '.' &&
	    strcmp(module + n - m, pattern) == 0)
		return 1;
	return fnmatch(pattern, module, 0) == 0;
}

int
peftio_glob_any(const char *const *globs, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (fnmatch(globs[i], name, 0) == 0)
			return 1;
	return 0;
}

int
peftio_quant_selected(const struct peftio_tensor_info *ti,
    const char *const *include, size_t ninclude,
    const char *const *exclude, size_t nexclude)
{
	if (!peftio_dtype_is_model_float(ti->dtype) || ti->numel == 0)
		return 0;
	if (peftio_glob_any(exclude, nexclude, ti->name))
		return 0;
	return peftio_linear_weight(ti->name, ti->ndim) ||
	    peftio_glob_any(include, ninclude, ti->name);
}

int
peftio_module_selected(const char *module, const char *const *targets,
    size_t ntargets, const char *const *exclude, size_t nexclude)
{
	size_t i;

	for (i = 0; i < nexclude; i++)
		if (peftio_module_match(module, exclude[i]))
			return 0;
	if (ntargets == 0)
		return peftio_linear_module(module, strlen(module));
	for (i = 0; i < ntargets; i++)
		if (peftio_module_match(module, targets[i]))
			return 1;
	return 0;
}
