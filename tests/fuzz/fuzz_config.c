/*
 * fuzz_config.c - config.json as nf4-quant and lora-merge rewrite it:
 * the quantization_config block added and removed.
 *
 * Whatever the input, the output of an accepted config is a JSON
 * object again; adding gives it a quantization_config, removing takes
 * it away, and removing what was added gives the same text as removing
 * from the input.
 */
#include <jansson.h>

#include "fuzz.h"

/* The output parsed; it must be an object. */
static json_t *
load(const char *s, size_t len)
{
	json_error_t je;
	json_t *o;

	FUZZ_ASSERT(strlen(s) == len && len > 0 && s[len - 1] == '\n');
	o = json_loadb(s, len, JSON_REJECT_DUPLICATES, &je);
	if (o == NULL)
		fprintf(stderr, "%s\n%s\n", s, je.text);
	FUZZ_ASSERT(json_is_object(o));
	return o;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int dts[] = { -1, PEFTIO_F32, PEFTIO_F16, PEFTIO_BF16 };
	struct peftio_error err;
	const char *in = (const char *)data;
	int keep = dts[size % 4];
	enum peftio_q4type type = size % 2 ? PEFTIO_Q4_FP4 : PEFTIO_Q4_NF4;
	enum peftio_dtype dt = size % 3 ? PEFTIO_BF16 : PEFTIO_F16;
	char *added, *removed, *both;
	size_t alen, rlen, blen;
	json_t *o;
	int rc, rc2;

	rc = peftio_config_add_quant(in, size, type, (int)(size % 5 == 0), dt,
	    &added, &alen, &err);
	if (rc != 0)
		fuzz_check_error(rc, &err, "config.json");
	rc2 = peftio_config_remove_quant(in, size, keep, &removed, &rlen, &err);
	if (rc2 != 0)
		fuzz_check_error(rc2, &err, "config.json");
	/* The same text is refused by both or by neither. */
	FUZZ_ASSERT((rc == 0) == (rc2 == 0));
	if (rc != 0)
		return 0;
	o = load(added, alen);
	FUZZ_ASSERT(json_is_object(json_object_get(o,
	    "quantization_config")));
	json_decref(o);
	o = load(removed, rlen);
	FUZZ_ASSERT(json_object_get(o, "quantization_config") == NULL);
	json_decref(o);
	FUZZ_ASSERT(peftio_config_remove_quant(added, alen, keep, &both,
	    &blen, &err) == 0);
	FUZZ_ASSERT(blen == rlen && memcmp(both, removed, rlen) == 0);
	free(added);
	free(removed);
	free(both);
	return 0;
}
