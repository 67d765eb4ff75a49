/*
 * testutil.h - helpers shared by the unit test suites.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "peftio.h"

/* Directory of committed test data (tests/data), from the runner's cwd. */
#define TEST_DATA	"../data"

/* Create a fresh temporary directory; returns a static buffer. */
const char	*tu_tmpdir(void);
/* Remove the directory tu_tmpdir() made last, if any. */
void		 tu_tmpdir_remove(void);
/* Path name inside the current temporary directory (static buffer, ring of 8). */
const char	*tu_path(const char *name);
/* Write/read whole files; abort the test on failure. */
void		 tu_write_file(const char *path, const void *buf, size_t len);
void		*tu_read_file(const char *path, size_t *len);
/* Remove a directory tree (best effort). */
void		 tu_rmtree(const char *path);
/* Deterministic pseudo-random numbers (xorshift64*), N(0, 1) by Box-Muller. */
/* Whether AddressSanitizer or valgrind runs the tests: neither works
 * under a limit on address space. */
int		 tu_under_sanitizer_or_valgrind(void);
uint64_t	 tu_rand(uint64_t *state);
float		 tu_randn(uint64_t *state);

/* peftio_merge_create()'s shape callback over the checkpoint arg. */
int		 tu_ckpt_shape(void *arg, const char *name, int *ndim,
		    uint64_t *shape);
/* Tensor name of c in f32 (malloc'ed, *n values); fails the test when
 * it is missing. */
float		*tu_tensor_f32(struct peftio_ckpt *c, const char *name,
		    uint64_t *n);

#endif
