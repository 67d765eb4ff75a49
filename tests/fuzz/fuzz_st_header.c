/*
 * fuzz_st_header.c - the safetensors header parser.
 *
 * The input is a whole file.  It is refused with a proper message, or
 * the tensor list keeps the format's invariants: tensors in offset
 * order, back to back from 0, each the size its shape and dtype give,
 * the data section ending exactly at the end of the file, every name
 * found again by lookup, and __metadata__ sorted for lookup.
 */
#include "fuzz.h"

#define LABEL	"fuzz.safetensors"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	const struct peftio_tensor_info *t;
	struct peftio_st *st;
	uint64_t n, end = 0, numel, nbytes;
	size_t i, k;
	int rc, d;

	if ((rc = peftio_st_open_mem(&st, data, size, LABEL, &err)) != 0) {
		FUZZ_ASSERT(st == NULL);
		fuzz_check_error(rc, &err, LABEL);
		return 0;
	}
	FUZZ_ASSERT(size >= 8);
	n = 0;
	for (k = 0; k < 8; k++)
		n |= (uint64_t)data[k] << (8 * k);
	for (i = 0; i < peftio_st_count(st); i++) {
		t = peftio_st_tensor(st, i);
		FUZZ_ASSERT(t != NULL && t->name != NULL);
		FUZZ_ASSERT(strlen(t->name) <= PEFTIO_MAX_NAME);
		FUZZ_ASSERT(strcmp(t->name, "__metadata__") != 0);
		FUZZ_ASSERT(peftio_dtype_name(t->dtype) != NULL);
		FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= PEFTIO_MAX_DIMS);
		numel = 1;
		for (d = 0; d < t->ndim; d++)
			FUZZ_ASSERT(!__builtin_mul_overflow(numel, t->shape[d],
			    &numel));
		FUZZ_ASSERT(numel == t->numel);
		FUZZ_ASSERT(peftio_dtype_nbytes(t->dtype, numel, &nbytes) == 0);
		FUZZ_ASSERT(nbytes == t->nbytes);
		FUZZ_ASSERT(t->offset == end);
		end += t->nbytes;
		FUZZ_ASSERT(peftio_st_find(st, t->name) == (long)i);
	}
	FUZZ_ASSERT(peftio_st_tensor(st, i) == NULL);
	FUZZ_ASSERT(n <= size - 8 && end == size - 8 - n);
	for (i = 0; i < peftio_st_meta_count(st); i++) {
		const char *key = peftio_st_meta_key(st, i);
		const char *value = peftio_st_meta_value(st, i);

		FUZZ_ASSERT(key != NULL && value != NULL);
		FUZZ_ASSERT(peftio_st_meta_get(st, key) == value);
	}
	FUZZ_ASSERT(peftio_st_meta_key(st, i) == NULL);
	peftio_st_close(st);
	return 0;
}
