/*
 * adapter_write.h - writing a PEFT LoRA adapter (adapter_write.c), for
 * the library's adapter writers: extraction, initialisation, resizing
 * and conversion.  Not installed.
 */
#ifndef PEFTIO_ADAPTER_WRITE_H
#define PEFTIO_ADAPTER_WRITE_H

#include "peftio_private.h"

/* The key of module's lora_A (factor_b 0) or lora_B weight, or of its
 * lora_embedding_A/B, into buf. */
const char *peftio_adapter_key(char *buf, size_t len, const char *module,
	    int factor_b, int embedding);
/* Write n f32 values as tensor name stored as dt. */
int	peftio_adapter_write_f32(struct peftio_ckptw *w, const char *name,
	    const float *x, uint64_t n, enum peftio_dtype dt,
	    struct peftio_error *err);
/* The last dotted component of a module path. */
const char *peftio_module_leaf(const char *module);
/* The rank_pattern key matching exactly module ("a\\.b"); NULL when
 * out of memory. */
char	*peftio_adapter_pattern_key(const char *module);
/* v as an integer when it is one, else a real. */
json_t	*peftio_json_num(double v);
/* adapter_config.json of a plain LoRA over modules (target_modules:
 * their sorted distinct leaves), init_lora_weights true; the patterns
 * (NULL: empty) are taken over.  NULL when out of memory. */
json_t	*peftio_adapter_lora_config(const char *const *modules, size_t n,
	    const char *name_or_path, uint64_t r, double alpha,
	    json_t *rank_pattern, json_t *alpha_pattern);

#endif
