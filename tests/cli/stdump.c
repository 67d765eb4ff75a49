/*
 * stdump - print a checkpoint's tensors, one per line, sorted by name:
 * NAME DTYPE SHAPE XXH3 (hash of the payload).  The CLI tests compare
 * these listings with committed ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "peftio.h"

static int
cmp(const void *a, const void *b)
{
	return strcmp((*(const struct peftio_tensor_info *const *)a)->name,
	    (*(const struct peftio_tensor_info *const *)b)->name);
}

int
main(int argc, char *argv[])
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	const struct peftio_tensor_info **v;
	const void *data;
	size_t i, n;
	int d;

	if (argc != 2) {
		fprintf(stderr, "usage: stdump checkpoint\n");
		return 2;
	}
	if (peftio_ckpt_open(&c, argv[1], &err) != 0) {
		fprintf(stderr, "stdump: %s\n", err.msg);
		return 1;
	}
	n = peftio_ckpt_count(c);
	if ((v = calloc(n + 1, sizeof(*v))) == NULL)
		return 1;
	for (i = 0; i < n; i++)
		v[i] = peftio_ckpt_tensor(c, i);
	qsort(v, n, sizeof(*v), cmp);
	for (i = 0; i < n; i++) {
		if (peftio_ckpt_data(c, (size_t)peftio_ckpt_find(c, v[i]->name),
		    &data, &err) != 0) {
			fprintf(stderr, "stdump: %s\n", err.msg);
			return 1;
		}
		printf("%s %s [", v[i]->name, peftio_dtype_name(v[i]->dtype));
		for (d = 0; d < v[i]->ndim; d++)
			printf("%s%llu", d ? "," : "",
			    (unsigned long long)v[i]->shape[d]);
		printf("] %016llx\n",
		    (unsigned long long)XXH3_64bits(data, v[i]->nbytes));
	}
	free(v);
	peftio_ckpt_close(c);
	return 0;
}
