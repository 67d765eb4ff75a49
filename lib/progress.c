/*
 * progress.c - the hook that tells a tool how far the reading of a
 * stream into its spool file has come.  The library never prints: the
 * tool decides what to show.
 */
#include "peftio_private.h"

static peftio_progress_fn read_fn;
static void *read_ctx;

void
peftio_set_read_progress(peftio_progress_fn fn, void *ctx)
{
	read_fn = fn;
	read_ctx = ctx;
}

void
peftio_read_progress(uint64_t done, uint64_t total, const char *what)
{
	if (read_fn != NULL)
		read_fn(read_ctx, done, total, what);
}
