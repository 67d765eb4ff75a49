/*
 * source.c - the bytes under the parsers: what kind of file an input
 * is, and the pages of a mapped input given back once read.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "reader_private.h"

/* The first 6 bytes of LONG1 0x1950a86a20f9469cfc6c, torch's magic
 * number, which the legacy format pickles first. */
static const unsigned char legacy_magic[] = {
	0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46
};

int
peftio_sniff(const void *buf, size_t len, const char *label,
    struct peftio_error *err)
{
	const unsigned char *p = buf;

	/* A member first, as torch checks; or the end record of an empty
	 * archive, which no safetensors file can start with (its header
	 * would be over 100 MB), so that it is reported as what it is. */
	if (len >= 4 && (memcmp(p, "PK\3\4", 4) == 0 ||
	    memcmp(p, "PK\5\6", 4) == 0))
		return 1;
	if (len >= 8 && p[0] == 0x80 && p[1] >= 2 && p[1] <= 5 &&
	    memcmp(p + 2, legacy_magic, sizeof(legacy_magic)) == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: the legacy PyTorch format (torch.save before 1.6, or "
		    "with _use_new_zipfile_serialization=False) is not "
		    "supported: save it again with a current torch.save, or "
		    "as safetensors", label);
	if (len >= 8 && memcmp(p, "PYTORCH1", 8) == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: an archive of PyTorch's preview release (PYTORCH1) "
		    "is not supported", label);
	return 0;
}

void
peftio_drop_pages(const void *p, uint64_t n)
{
	uintptr_t a, b;
	long page;

	if (n == 0 || n > UINTPTR_MAX - (uintptr_t)p ||
	    (page = sysconf(_SC_PAGESIZE)) <= 0)
		return;
	a = (uintptr_t)p;
	b = a + (uintptr_t)n;
	a = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
	b &= ~((uintptr_t)page - 1);
	if (a < b)
		(void)madvise((void *)a, b - a, MADV_DONTNEED);
}
