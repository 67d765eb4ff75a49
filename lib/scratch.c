/*
 * scratch.c - buffers reused across tensors.
 */
#include <stdlib.h>

#include "peftio_private.h"

void *
peftio_scratch(struct peftio_scratch *s, size_t len)
{
	void *p;

	if (len == 0)
		len = 1;
	if (len <= s->cap)
		return s->p;
	/* The old contents are not kept, so no realloc copy. */
	if ((p = malloc(len)) == NULL)
		return NULL;
	free(s->p);
	s->p = p;
	s->cap = len;
	return p;
}

void
peftio_scratch_free(struct peftio_scratch *s)
{
	free(s->p);
	s->p = NULL;
	s->cap = 0;
}
