/*
 * verify.c - the XXH3 checksums the writer stores per tensor in
 * __metadata__ ("xxh3.<name>", 16 lowercase hex digits), checked
 * against the data.
 */
#include <stdio.h>
#include <string.h>


#include "hash.h"
#include "peftio_private.h"

int
peftio_ckpt_verify(struct peftio_ckpt *c, size_t i, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_st *st;
	const void *data;
	const char *want;
	char key[PEFTIO_MAX_NAME + 8], got[32];
	int rc;

	if ((ti = peftio_ckpt_tensor(c, i)) == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no tensor number %zu", peftio_ckpt_path(c), i);
	st = peftio_ckpt_shard(c, peftio_ckpt_shard_of(c, i));
	snprintf(key, sizeof(key), "xxh3.%s", ti->name);
	if ((want = peftio_st_meta_get(st, key)) == NULL)
		return 1;
	if ((rc = peftio_ckpt_data(c, i, &data, err)) != 0)
		return rc;
	snprintf(got, sizeof(got), "%016llx",
	    (unsigned long long)XXH3_64bits(data, (size_t)ti->nbytes));
	peftio_ckpt_release(c, i);
	if (strcmp(got, want) != 0)
		return peftio_error_set(err, PEFTIO_ECHECKSUM,
		    "%s: tensor '%s': checksum mismatch (stored %s, "
		    "computed %s)", peftio_st_path(st), ti->name, want, got);
	return 0;
}
