/*
 * fuzz.h - what the libFuzzer targets of tests/fuzz share.
 *
 * A target returns normally for any input the library refuses with an
 * error; a crash, a sanitizer report or a failed FUZZ_ASSERT (a
 * property of the result that must always hold) is a finding.
 */
#ifndef PEFTIO_FUZZ_H
#define PEFTIO_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int	LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ASSERT(cond)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: FUZZ_ASSERT(%s) failed\n",\
			    __FILE__, __LINE__, #cond);			\
			abort();					\
		}							\
	} while (0)

/*
 * A refusal must be a proper one: a negative status and a one-line
 * message that names the input.
 */
static inline void
fuzz_check_error(int rc, const struct peftio_error *err, const char *label)
{
	FUZZ_ASSERT(rc < 0);
	FUZZ_ASSERT(err->code == rc);
	FUZZ_ASSERT(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
	FUZZ_ASSERT(strchr(err->msg, '\n') == NULL);
	if (label != NULL && rc != PEFTIO_ENOMEM)
		FUZZ_ASSERT(strstr(err->msg, label) != NULL);
}

#endif
