/*
 * kind.c - what a checkpoint is, before a tool turns it into something
 * else: a model, a PEFT adapter, or a model quantized already.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A tensor of a PEFT adapter, by the names PEFT gives them. */
static int
adapter_tensor(const char *name)
{
	return strstr(name, ".lora_A.") != NULL ||
	    strstr(name, ".lora_B.") != NULL ||
	    strstr(name, ".lora_embedding_A") != NULL ||
	    strstr(name, ".lora_embedding_B") != NULL ||
	    strstr(name, ".lora_magnitude_vector") != NULL ||
	    strstr(name, ".ia3_l") != NULL;
}

/*
 * Refuse what quantizing would make nonsense of: a PEFT adapter (its
 * lora_A and lora_B are not a model's weights), or a checkpoint that is
 * quantized already (by bitsandbytes, 4-bit or 8-bit, or any method its
 * config.json names), whose tensors would be copied under a 4-bit
 * quantization_config that contradicts them.
 */
int
peftio_check_unquantized(struct peftio_ckpt *in, struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(in), *name, *base;
	char path[4096], *text = NULL, method[64];
	struct stat sb;
	size_t i, len;
	int rc, bits;

	/* A folder with a model beside an adapter holds a model. */
	if (dir != NULL && peftio_ckpt_nshards(in) > 0) {
		name = peftio_ckpt_shard_name(in, 0);
		base = strrchr(name, '/') != NULL ? strrchr(name, '/') + 1 :
		    name;
		snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
		if (strncmp(base, "adapter_model", 13) == 0 &&
		    access(path, F_OK) == 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: a PEFT adapter (adapter_config.json), not a "
			    "model: merge it into its base model with "
			    "lora-merge, then quantize the result", dir);
	}
	for (i = 0; i < peftio_ckpt_count(in); i++) {
		name = peftio_ckpt_tensor(in, i)->name;
		if (adapter_tensor(name))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': a PEFT adapter, not a model: "
			    "merge it into its base model with lora-merge, "
			    "then quantize the result", peftio_ckpt_path(in),
			    name);
		if (strstr(name, PEFTIO_BNB_QUANT_STATE) != NULL)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 4-bit quantized "
			    "(use -d to dequantize)", peftio_ckpt_path(in),
			    name);
		if (ends_with(name, ".SCB") || ends_with(name, ".weight_format"))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 8-bit quantized "
			    "(bitsandbytes LLM.int8): quantize the unquantized "
			    "model instead", peftio_ckpt_path(in), name);
	}
	if (dir == NULL)
		return 0;
	/* Read now only if it is a plain file: anything else is read (and
	 * refused if need be) when the output is written. */
	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return 0;
	rc = peftio_read_file(path, 64u << 20, &text, &len, err);
	if (rc == 0)
		rc = peftio_config_quant(text, len, method, sizeof(method),
		    &bits, err);
	free(text);
	if (rc < 0)
		peftio_error_prefix(err, "%s", path);
	else if (rc > 0 && strcmp(method, "bitsandbytes") == 0 && bits == 4)
		rc = peftio_error_set(err, PEFTIO_EINVAL, "%s: "
		    "quantization_config: already 4-bit quantized "
		    "(use -d to dequantize)", path);
	else if (rc > 0)
		rc = peftio_error_set(err, PEFTIO_EINVAL, "%s: "
		    "quantization_config: already quantized (quant_method "
		    "%s%s): quantize the unquantized model instead", path,
		    method, bits == 8 ? ", 8-bit" : "");
	return rc;
}
