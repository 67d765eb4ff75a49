/*
 * rcp_pack.c - build step: the GPU reciprocal's table in the form the
 * library loads.
 *
 *	rcp_pack < lib/data/rcp_delta.bin.gz > rcp_packed.gz
 *
 * Reads the measured table (gzip of 2^23 signed bytes, each -1, 0 or +1:
 * the difference for one f32 mantissa), packs each entry as delta + 1 in
 * 2 bits, four to a byte from the low bits up, and writes the 2 MiB
 * result gzip-compressed.  The library then inflates 2 MiB instead of 8
 * and packs nothing when it starts.  Exit 1 with a message when the input
 * is not such a table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#define ENTRIES	(1UL << 23)
#define PACKED	(ENTRIES / 4)

static int
fail(const char *msg)
{
	fprintf(stderr, "rcp_pack: %s\n", msg);
	return 1;
}

int
main(void)
{
	unsigned char *d, *p;
	unsigned long i;
	gzFile in, out;
	int n, extra;

	if ((d = malloc(ENTRIES)) == NULL || (p = calloc(PACKED, 1)) == NULL)
		return fail("out of memory");
	if ((in = gzdopen(STDIN_FILENO, "rb")) == NULL)
		return fail("cannot read standard input");
	if ((n = gzread(in, d, ENTRIES)) != (int)ENTRIES)
		return fail("the table is shorter than 2^23 entries");
	extra = gzgetc(in);
	gzclose(in);
	if (extra != -1)
		return fail("the table is longer than 2^23 entries");
	for (i = 0; i < ENTRIES; i++) {
		if (d[i] != 0xff && d[i] > 1)
			return fail("an entry is not -1, 0 or +1");
		p[i / 4] |= (unsigned char)(((d[i] + 1) & 3) << (i % 4 * 2));
	}
	if ((out = gzdopen(STDOUT_FILENO, "wb9")) == NULL ||
	    gzwrite(out, p, PACKED) != (int)PACKED || gzclose(out) != Z_OK)
		return fail("write error");
	free(d);
	free(p);
	return 0;
}
