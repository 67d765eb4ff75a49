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

void *
peftio_scratch_placed(struct peftio_scratch *s, size_t len, uint64_t offset)
{
	uintptr_t p;

	if (len > SIZE_MAX - 2 * PEFTIO_PAGE_MAX ||
	    (p = (uintptr_t)peftio_scratch(s, len + 2 * PEFTIO_PAGE_MAX)) == 0)
		return NULL;
	p = (p + PEFTIO_PAGE_MAX - 1) & ~(uintptr_t)(PEFTIO_PAGE_MAX - 1);
	return (void *)(p + (uintptr_t)(offset % PEFTIO_PAGE_MAX));
}

void
peftio_scratch_free(struct peftio_scratch *s)
{
	free(s->p);
	s->p = NULL;
	s->cap = 0;
}
