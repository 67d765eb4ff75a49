/*
 * fuzz_pattern.c - the compiler of rank_pattern / alpha_pattern keys
 * (Python's re syntax into POSIX ERE) and the matcher.
 *
 * The input is a pattern, a newline, then a module path.  Every pattern
 * is accepted or refused as invalid or unsupported, never more; the
 * translation stays within its bound; and a pattern refused once is
 * refused again (the answer does not depend on the path).
 */
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL, *nl;
	char *pat, *path, *ere;
	size_t plen;
	int rc, tr, again;

	if (size > 8192)
		return 0;
	nl = memchr(data, '\n', size);
	plen = nl != NULL ? (size_t)(nl - (const char *)data) : size;
	pat = strndup((const char *)data, plen);
	path = nl != NULL ? strndup(nl + 1, size - plen - 1) : strdup("");
	FUZZ_ASSERT(pat != NULL && path != NULL);
	if (strlen(pat) != plen || strchr(path, '\0') == NULL)
		goto out;
	ere = malloc(16 * plen + 1);
	FUZZ_ASSERT(ere != NULL);
	memset(ere, 0x55, 16 * plen + 1);
	tr = peftio_rx_translate(pat, ere, &why);
	FUZZ_ASSERT(tr == 0 || tr == PEFTIO_EINVAL ||
	    tr == PEFTIO_EUNSUPPORTED);
	FUZZ_ASSERT(why != NULL);
	if (tr == 0)
		FUZZ_ASSERT(memchr(ere, '\0', 16 * plen + 1) != NULL);
	else
		FUZZ_ASSERT(*why != '\0');
	free(ere);
	rc = peftio_lora_pattern_match(pat, path);
	FUZZ_ASSERT(rc == 0 || rc == 1 || rc == PEFTIO_EINVAL ||
	    rc == PEFTIO_EUNSUPPORTED);
	/* What the translation refuses is refused as a whole (a pattern
	 * over the length bound is refused for its length first). */
	if (tr != 0 && plen <= 4096)
		FUZZ_ASSERT(rc == tr);
	/* A pattern accepted for one path is accepted for another. */
	again = peftio_lora_pattern_match(pat, "model.layers.0.mlp.up_proj");
	FUZZ_ASSERT((rc < 0) == (again < 0) || strlen(path) > 4096);
out:
	free(pat);
	free(path);
	return 0;
}
