/*
 * fuzz_quant_state.c - the JSON blob bitsandbytes stores beside a 4-bit
 * weight (W.quant_state.bitsandbytes__nf4).
 *
 * A blob that parses is written back (as Python's json.dumps would)
 * and must parse again to the same quant_state.
 */
#include "fuzz.h"

static void
same(const struct peftio_quant_state *a, const struct peftio_quant_state *b)
{
	FUZZ_ASSERT(a->type == b->type && a->blocksize == b->blocksize);
	FUZZ_ASSERT(a->dtype == b->dtype && a->ndim == b->ndim);
	FUZZ_ASSERT(memcmp(a->shape, b->shape,
	    sizeof(a->shape[0]) * (size_t)a->ndim) == 0);
	FUZZ_ASSERT(a->numel == b->numel);
	FUZZ_ASSERT(a->double_quant == b->double_quant);
	if (a->double_quant) {
		FUZZ_ASSERT(a->nested_blocksize == b->nested_blocksize);
		FUZZ_ASSERT(a->nested_dtype == b->nested_dtype);
		FUZZ_ASSERT(memcmp(&a->nested_offset, &b->nested_offset,
		    sizeof(float)) == 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_quant_state qs, again;
	uint64_t numel = 1;
	char *json;
	size_t len;
	int rc, d;

	if ((rc = peftio_quant_state_parse(data, size, &qs, &err)) != 0) {
		fuzz_check_error(rc, &err, "quant_state");
		return 0;
	}
	FUZZ_ASSERT(peftio_q4_blocksize_ok(qs.blocksize));
	FUZZ_ASSERT(qs.ndim >= 0 && qs.ndim <= PEFTIO_MAX_DIMS);
	for (d = 0; d < qs.ndim; d++)
		FUZZ_ASSERT(!__builtin_mul_overflow(numel, qs.shape[d],
		    &numel));
	FUZZ_ASSERT(numel == qs.numel);
	FUZZ_ASSERT(peftio_dtype_torch_name(qs.dtype) != NULL);
	if (qs.double_quant)
		FUZZ_ASSERT(qs.nested_blocksize > 0 &&
		    qs.nested_offset == qs.nested_offset);
	FUZZ_ASSERT(peftio_quant_state_json(&qs, &json, &len, &err) == 0);
	FUZZ_ASSERT(strlen(json) == len);
	rc = peftio_quant_state_parse(json, len, &again, &err);
	if (rc != 0)
		fprintf(stderr, "%s\n%s\n", json, err.msg);
	FUZZ_ASSERT(rc == 0);
	same(&qs, &again);
	free(json);
	return 0;
}
