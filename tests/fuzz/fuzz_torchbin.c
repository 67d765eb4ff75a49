/*
 * fuzz_torchbin.c - libFuzzer entry point for torch.save archives.
 *
 * An input that starts as a zip archive ("PK") is read as it is: the
 * container, its records and the CRCs.  Mutations of such an input
 * rarely get past the CRC of data.pkl, so any other input is taken as
 *
 *	flags (1 byte: bit 0 deflates every member)
 *	n (1 byte), then n record sizes (16-bit little-endian)
 *	the pickle (the rest)
 *
 * and wrapped here into a well-formed archive, "archive/data.pkl" with
 * records "archive/data/0" .. "archive/data/<n-1>" (MAX_FILL bytes in
 * all, the rest cut to 0), so that the mutations reach the pickle
 * machine and the views.  The seeds of both
 * kinds are in tests/fuzz/corpus/torchbin (tests/data/torchbin/make.py
 * --fuzz-seeds writes the second kind).
 *
 * Either way the archive goes through the safetensors reader, which
 * hands zip archives to torchbin.c, and every tensor is read in full,
 * so that the sanitizers see each byte handed out, then released.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "peftio.h"

#define MAX_RECORDS	64
#define MAX_FILL	(96u << 10)	/* record bytes in all: keeps it fast */

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
	unsigned char	*p;
	size_t		 len, cap;
	int		 oom;
};

static void
put(struct out *o, const void *s, size_t n)
{
	unsigned char *np;
	size_t ncap;

	if (o->oom)
		return;
	if (o->len + n > o->cap) {
		ncap = 2 * (o->len + n) + 256;
		if ((np = realloc(o->p, ncap)) == NULL) {
			o->oom = 1;
			return;
		}
		o->p = np;
		o->cap = ncap;
	}
	if (n > 0)
		memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void
put_le(struct out *o, uint32_t v, int n)
{
	unsigned char c[4];
	int i;

	for (i = 0; i < n; i++)
		c[i] = (unsigned char)(v >> (8 * i));
	put(o, c, (size_t)n);
}

/* One member (deflated if def): local header and data into o, central
 * entry into cd. */
static void
member(struct out *o, struct out *cd, const char *name, const void *data,
    size_t len, int def)
{
	static z_stream zs;
	static int zs_ready;
	unsigned char *z = NULL;
	uLongf zlen = 0;
	uint32_t crc = (uint32_t)crc32(0, data, (uInt)len), lho;

	if (def) {
		/* One stream for every member of every run: setting one up
		 * costs more than deflating a small member. */
		if (!zs_ready) {
			if (deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8,
			    Z_DEFAULT_STRATEGY) != Z_OK) {
				o->oom = 1;
				return;
			}
			zs_ready = 1;
		}
		zlen = compressBound((uLong)len) + 16;
		if ((z = malloc(zlen)) == NULL) {
			o->oom = 1;
			return;
		}
		deflateReset(&zs);
		zs.next_in = (unsigned char *)(uintptr_t)data;
		zs.avail_in = (uInt)len;
		zs.next_out = z;
		zs.avail_out = (uInt)zlen;
		deflate(&zs, Z_FINISH);
		zlen = zs.total_out;
		data = z;
	}
	lho = (uint32_t)o->len;
	put_le(o, 0x04034b50, 4);
	put_le(o, 20, 2);
	put_le(o, 0, 2);
	put_le(o, def ? 8 : 0, 2);
	put_le(o, 0, 4);
	put_le(o, crc, 4);
	put_le(o, (uint32_t)(def ? zlen : len), 4);
	put_le(o, (uint32_t)len, 4);
	put_le(o, (uint32_t)strlen(name), 2);
	put_le(o, 0, 2);
	put(o, name, strlen(name));
	put(o, data, def ? zlen : len);

	put_le(cd, 0x02014b50, 4);
	put_le(cd, 20, 2);
	put_le(cd, 20, 2);
	put_le(cd, 0, 2);
	put_le(cd, def ? 8 : 0, 2);
	put_le(cd, 0, 4);
	put_le(cd, crc, 4);
	put_le(cd, (uint32_t)(def ? zlen : len), 4);
	put_le(cd, (uint32_t)len, 4);
	put_le(cd, (uint32_t)strlen(name), 2);
	put_le(cd, 0, 2);
	put_le(cd, 0, 2);
	put_le(cd, 0, 2);
	put_le(cd, 0, 2);
	put_le(cd, 0, 4);
	put_le(cd, lho, 4);
	put(cd, name, strlen(name));
	free(z);
}

/* The archive of the second kind of input; NULL if it is too short. */
static unsigned char *
wrap(const uint8_t *data, size_t size, size_t *len)
{
	static unsigned char fill[65536];
	struct out o = { 0 }, cd = { 0 };
	char name[32];
	size_t n, i, rlen, nmem = 0, cdoff, filled = 0;
	int def;

	if (size < 2)
		return NULL;
	def = data[0] & 1;
	n = data[1] % (MAX_RECORDS + 1);
	if (size < 2 + 2 * n)
		return NULL;
	if (fill[0] == 0)
		for (i = 0; i < sizeof(fill); i++)
			fill[i] = (unsigned char)(i * 7 + 1);
	member(&o, &cd, "archive/data.pkl", data + 2 + 2 * n,
	    size - 2 - 2 * n, def);
	member(&o, &cd, "archive/byteorder", "little", 6, def);
	nmem = 2;
	for (i = 0; i < n; i++) {
		rlen = (size_t)data[2 + 2 * i] | (size_t)data[3 + 2 * i] << 8;
		if (rlen > MAX_FILL - filled)
			rlen = 0;
		filled += rlen;
		snprintf(name, sizeof(name), "archive/data/%zu", i);
		member(&o, &cd, name, fill, rlen, def);
		nmem++;
	}
	member(&o, &cd, "archive/version", "3\n", 2, def);
	nmem++;
	cdoff = o.len;
	put(&o, cd.p, cd.len);
	put_le(&o, 0x06054b50, 4);
	put_le(&o, 0, 4);
	put_le(&o, (uint32_t)nmem, 2);
	put_le(&o, (uint32_t)nmem, 2);
	put_le(&o, (uint32_t)cd.len, 4);
	put_le(&o, (uint32_t)cdoff, 4);
	put_le(&o, 0, 2);
	free(cd.p);
	if (o.oom || cd.oom) {
		free(o.p);
		return NULL;
	}
	*len = o.len;
	return o.p;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_st *st;
	const unsigned char *d;
	unsigned char *zip = NULL, x;
	volatile unsigned char sink;
	uint64_t k;
	size_t i, len = size;

	if (size < 2 || data[0] != 'P' || data[1] != 'K') {
		if ((zip = wrap(data, size, &len)) == NULL)
			return 0;
		data = zip;
	}
	if (peftio_st_open_mem(&st, data, len, "fuzz", &err) == 0) {
		for (i = 0; i < peftio_st_count(st); i++) {
			t = peftio_st_tensor(st, i);
			if (peftio_st_data(st, i, (const void **)&d,
			    &err) == 0) {
				for (x = 0, k = 0; k < t->nbytes; k++)
					x ^= d[k];
				sink = x;
				(void)sink;
			}
			peftio_st_release(st, i);
		}
		peftio_st_close(st);
	}
	free(zip);
	return 0;
}
