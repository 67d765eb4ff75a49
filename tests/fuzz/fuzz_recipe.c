/*
 * fuzz_recipe.c - lora-merge's YAML recipes (peftio-recipe(5)).
 *
 * An accepted recipe has a path for every adapter, resolved against
 * the recipe's directory, and finite weights and density.
 */
#include <math.h>

#include "fuzz.h"

#define LABEL	"recipes/fuzz.yaml"

static void
resolved(const char *p)
{
	FUZZ_ASSERT(p != NULL && *p != '\0');
	FUZZ_ASSERT(p[0] == '/' || strcmp(p, "-") == 0 ||
	    strncmp(p, "recipes/", 8) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_recipe *r;
	size_t i;
	int rc;

	rc = peftio_recipe_parse((const char *)data, size, LABEL, &r, &err);
	if (rc != 0) {
		FUZZ_ASSERT(r == NULL);
		fuzz_check_error(rc, &err, rc == PEFTIO_ENOMEM ? NULL : LABEL);
		return 0;
	}
	for (i = 0; i < r->nadapters; i++) {
		resolved(r->adapters[i]);
		FUZZ_ASSERT(isfinite(r->weights[i]));
	}
	if (r->base != NULL)
		resolved(r->base);
	if (r->output != NULL)
		resolved(r->output);
	if (r->has_density)
		FUZZ_ASSERT(r->density >= 0 && r->density <= 1);
	FUZZ_ASSERT(r->unmerge == 0 || r->unmerge == 1);
	FUZZ_ASSERT(r->requant == 0 || r->requant == 1);
	peftio_recipe_free(r);
	return 0;
}
