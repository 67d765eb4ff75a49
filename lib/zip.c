/*
 * zip.c - the members of a zip archive held in memory, as torch.save
 * writes them (formats.md section 3.2).
 *
 * Only what a reader of such archives needs: the central directory
 * (with the ZIP64 end records and extra fields that torch always
 * writes), STORED and DEFLATED members, CRC-32.  zlib does the
 * inflating and the CRC.
 *
 * Sizes are taken from the central directory, never from the local
 * headers: torch writes those with a data descriptor, so their sizes
 * and CRC are zero.  The local header is still read, for the length of
 * its name and extra field (which holds torch's alignment padding) and
 * to check that it names the same member.
 *
 * Everything is checked against the buffer before it is used:
 *  - the central directory ends where its end record says, and holds
 *    exactly the number of entries it claims;
 *  - one disk only; no encryption; no other compression method;
 *  - every member, local header included, lies before the central
 *    directory and overlaps no other member (overlapping members are
 *    how a small zip expands to a huge one);
 *  - a STORED member's two sizes agree; a DEFLATED member declares at
 *    most what deflate can expand its bytes to (1032:1) and must
 *    inflate to exactly that size, with nothing left over;
 *  - names are unique and contain no NUL.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

#include "peftio_private.h"

#define SIG_LOCAL	0x04034b50u
#define SIG_CENTRAL	0x02014b50u
#define SIG_END		0x06054b50u
#define SIG_END64	0x06064b50u
#define SIG_LOC64	0x07064b50u

#define LOCAL_LEN	30	/* fixed part of a local header */
#define CENTRAL_LEN	46	/* fixed part of a central header */
#define END_LEN		22	/* end of central directory record */
#define END64_LEN	56	/* ZIP64 end record, fixed part */
#define LOC64_LEN	20	/* ZIP64 end locator */
#define COMMENT_MAX	0xffff

#define FLAG_ENCRYPTED	0x0001
#define FLAG_STRONG	0x0040
#define FLAG_MASKED	0x2000

#define EXTRA_ZIP64	0x0001

/* Deflate cannot expand one byte to more than 1032 (258-byte matches
 * coded in two bits). */
#define DEFLATE_RATIO	1032

/* inflate() counts in uInt; hand it at most this much at a time. */
#define ZCHUNK		(1u << 30)

struct peftio_zip {
	const unsigned char *buf;
	uint64_t	 len;
	char		*label;
	struct peftio_zip_member *m;
	size_t		 n;
	size_t		*byname;	/* member indices sorted by name */
	char		*names;
};

static uint16_t
le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* [off, off + n) lies inside [0, end). */
static int
within(uint64_t off, uint64_t n, uint64_t end)
{
	return off <= end && n <= end - off;
}

/*
 * The end of central directory record, then the ZIP64 one if a locator
 * precedes it.  Sets the position, size and entry count of the central
 * directory.
 */
static int
find_directory(struct peftio_zip *z, uint64_t *cd_off, uint64_t *cd_size,
    uint64_t *count, struct peftio_error *err)
{
	const unsigned char *b = z->buf, *e, *l, *r;
	uint64_t pos, lowest, end_at, loc, r_off, r_size;
	uint32_t disk, cd_disk;
	uint16_t n_disk, n_total;
	uint32_t size32, off32;

	if (z->len < END_LEN)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %" PRIu64 " bytes is too small for a zip archive",
		    z->label, z->len);
	/* The record is followed by its comment and nothing else. */
	pos = z->len - END_LEN;
	lowest = pos > COMMENT_MAX ? pos - COMMENT_MAX : 0;
	for (;; pos--) {
		e = b + pos;
		if (le32(e) == SIG_END &&
		    le16(e + 20) == z->len - pos - END_LEN)
			break;
		if (pos == lowest)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: no zip end of central directory record "
			    "(truncated archive?)", z->label);
	}
	end_at = pos;
	disk = le16(e + 4);
	cd_disk = le16(e + 6);
	n_disk = le16(e + 8);
	n_total = le16(e + 10);
	size32 = le32(e + 12);
	off32 = le32(e + 16);
	*count = n_total;
	*cd_size = size32;
	*cd_off = off32;

	if (pos >= LOC64_LEN && le32(b + pos - LOC64_LEN) == SIG_LOC64) {
		l = b + pos - LOC64_LEN;
		loc = pos - LOC64_LEN;
		r_off = le64(l + 8);
		if (le32(l + 4) != 0 || le32(l + 16) != 1)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: zip archive spans several disks", z->label);
		if (!within(r_off, END64_LEN, loc))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: ZIP64 end record at %" PRIu64 " lies outside "
			    "the archive", z->label, r_off);
		r = b + r_off;
		r_size = le64(r + 4);
		if (le32(r) != SIG_END64 || r_size < END64_LEN - 12 ||
		    !within(r_off + 12, r_size, loc))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: bad ZIP64 end of central directory record",
			    z->label);
		/* Where the classic record has a real value, both agree. */
		if ((disk != 0xffff && disk != le32(r + 16)) ||
		    (cd_disk != 0xffff && cd_disk != le32(r + 20)) ||
		    (n_disk != 0xffff && n_disk != le64(r + 24)) ||
		    (n_total != 0xffff && n_total != le64(r + 32)) ||
		    (size32 != 0xffffffffu && size32 != le64(r + 40)) ||
		    (off32 != 0xffffffffu && off32 != le64(r + 48)))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: the zip end records disagree", z->label);
		disk = le32(r + 16);
		cd_disk = le32(r + 20);
		if (le64(r + 24) != le64(r + 32))
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: zip archive spans several disks", z->label);
		*count = le64(r + 32);
		*cd_size = le64(r + 40);
		*cd_off = le64(r + 48);
		end_at = r_off;
	} else if (n_disk != n_total) {
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: zip archive spans several disks", z->label);
	}
	if (disk != 0 || cd_disk != 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: zip archive spans several disks", z->label);
	if (*cd_off > end_at || *cd_size != end_at - *cd_off)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip central directory (%" PRIu64 " bytes at %" PRIu64
		    ") does not end where its end record begins (%" PRIu64 ")",
		    z->label, *cd_size, *cd_off, end_at);
	if (*count > *cd_size / CENTRAL_LEN)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip central directory of %" PRIu64 " bytes cannot "
		    "hold %" PRIu64 " entries", z->label, *cd_size, *count);
	return 0;
}

/*
 * The ZIP64 extra field of a central header: the 64-bit values of the
 * fields whose 32-bit value is all ones, in this order.
 */
static int
zip64_extra(const unsigned char *x, size_t xlen, uint64_t *usize,
    uint64_t *csize, uint64_t *offset, int *disk_set)
{
	uint64_t *want[3];
	size_t i, nwant = 0, id, len;

	if (*usize == 0xffffffffu)
		want[nwant++] = usize;
	if (*csize == 0xffffffffu)
		want[nwant++] = csize;
	if (*offset == 0xffffffffu)
		want[nwant++] = offset;
	while (xlen >= 4) {
		id = le16(x);
		len = le16(x + 2);
		if (len > xlen - 4)
			return -1;
		if (id == EXTRA_ZIP64) {
			if (len < 8 * nwant)
				return -1;
			for (i = 0; i < nwant; i++)
				*want[i] = le64(x + 4 + 8 * i);
			/* A disk number may follow; it must be 0. */
			if (*disk_set && (len < 8 * nwant + 4 ||
			    le32(x + 4 + 8 * nwant) != 0))
				return -1;
			*disk_set = 0;
			return 0;
		}
		x += 4 + len;
		xlen -= 4 + len;
	}
	return nwant == 0 && !*disk_set ? 0 : -1;
}

static const struct peftio_zip *sort_zip;

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(sort_zip->m[*(const size_t *)a].name,
	    sort_zip->m[*(const size_t *)b].name);
}

/* Byte ranges of the members, local headers included. */
struct span {
	uint64_t	 start, end;
	size_t		 member;
};

static int
cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* One central header at *pos; fills member i and its span. */
static int
read_member(struct peftio_zip *z, uint64_t *pos, uint64_t cd_off,
    uint64_t cd_end, size_t i, char **np, struct span *sp,
    struct peftio_error *err)
{
	struct peftio_zip_member *m = &z->m[i];
	const unsigned char *c = z->buf + *pos, *lh;
	char nb[PEFTIO_SHOWBUF];
	uint64_t usize, csize, off, data;
	size_t nlen, xlen, clen, lnlen, lxlen;
	unsigned flags, method;
	int disk_set;

	if (!within(*pos, CENTRAL_LEN, cd_end) || le32(c) != SIG_CENTRAL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip central directory entry %zu is damaged",
		    z->label, i);
	flags = le16(c + 8);
	method = le16(c + 10);
	m->crc = le32(c + 16);
	csize = le32(c + 20);
	usize = le32(c + 24);
	nlen = le16(c + 28);
	xlen = le16(c + 30);
	clen = le16(c + 32);
	disk_set = le16(c + 34) == 0xffff;
	off = le32(c + 42);
	if (!within(*pos + CENTRAL_LEN, (uint64_t)nlen + xlen + clen, cd_end))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip central directory entry %zu runs past the "
		    "directory", z->label, i);
	if (nlen == 0 || memchr(c + CENTRAL_LEN, '\0', nlen) != NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member %zu has an empty name or one with NUL",
		    z->label, i);
	memcpy(*np, c + CENTRAL_LEN, nlen);
	(*np)[nlen] = '\0';
	m->name = *np;
	*np += nlen + 1;
	if (le16(c + 34) != 0 && !disk_set)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: zip member '%s' is on another disk", z->label,
		    peftio_show(m->name, nlen, nb));
	if (zip64_extra(c + CENTRAL_LEN + nlen, xlen, &usize, &csize, &off,
	    &disk_set) != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s': missing or bad ZIP64 extra field",
		    z->label, peftio_show(m->name, nlen, nb));
	*pos += CENTRAL_LEN + nlen + xlen + clen;

	if (flags & (FLAG_ENCRYPTED | FLAG_STRONG | FLAG_MASKED))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: zip member '%s' is encrypted", z->label,
		    peftio_show(m->name, nlen, nb));
	if (method != PEFTIO_ZIP_STORED && method != PEFTIO_ZIP_DEFLATED)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: zip member '%s': compression method %u is not "
		    "supported (only stored and deflated)", z->label,
		    peftio_show(m->name, nlen, nb), method);
	if (method == PEFTIO_ZIP_STORED && csize != usize)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s' is stored but its sizes differ "
		    "(%" PRIu64 " and %" PRIu64 ")", z->label,
		    peftio_show(m->name, nlen, nb), csize, usize);
	if (method == PEFTIO_ZIP_DEFLATED && (csize > UINT64_MAX /
	    DEFLATE_RATIO || usize > csize * DEFLATE_RATIO + 8))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s' claims to inflate %" PRIu64 " bytes "
		    "to %" PRIu64 ", more than deflate can", z->label,
		    peftio_show(m->name, nlen, nb), csize, usize);

	/* The local header: same name and method, then the data. */
	if (!within(off, LOCAL_LEN, cd_off) ||
	    le32(z->buf + off) != SIG_LOCAL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s': no local header at %" PRIu64,
		    z->label, peftio_show(m->name, nlen, nb), off);
	lh = z->buf + off;
	lnlen = le16(lh + 26);
	lxlen = le16(lh + 28);
	data = off + LOCAL_LEN + lnlen + lxlen;
	if (!within(off + LOCAL_LEN, (uint64_t)lnlen + lxlen, cd_off) ||
	    lnlen != nlen || memcmp(lh + LOCAL_LEN, m->name, nlen) != 0 ||
	    le16(lh + 8) != method ||
	    (le16(lh + 6) & (FLAG_ENCRYPTED | FLAG_STRONG)) != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s': local header at %" PRIu64 " does "
		    "not match the central directory", z->label,
		    peftio_show(m->name, nlen, nb), off);
	if (!within(data, csize, cd_off))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: zip member '%s': %" PRIu64 " bytes at %" PRIu64
		    " run past the central directory (truncated archive?)",
		    z->label, peftio_show(m->name, nlen, nb), csize, data);
	m->csize = csize;
	m->usize = usize;
	m->offset = data;
	m->method = method;
	sp->start = off;
	sp->end = data + csize;
	sp->member = i;
	return 0;
}

int
peftio_zip_open(struct peftio_zip **out, const void *buf, size_t len,
    const char *label, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF], nb2[PEFTIO_SHOWBUF];
	struct peftio_zip *z;
	struct span *sp = NULL;
	uint64_t cd_off = 0, cd_size = 0, count = 0, pos;
	char *np;
	size_t i;
	int rc;

	*out = NULL;
	if ((z = calloc(1, sizeof(*z))) == NULL ||
	    (z->label = strdup(label)) == NULL) {
		free(z);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", label);
	}
	z->buf = buf;
	z->len = len;
	if ((rc = find_directory(z, &cd_off, &cd_size, &count, err)) != 0)
		goto fail;
	/* Names and entries both fit in what the directory holds. */
	z->n = (size_t)count;
	if ((z->m = calloc(z->n + 1, sizeof(*z->m))) == NULL ||
	    (z->byname = calloc(z->n + 1, sizeof(size_t))) == NULL ||
	    (sp = calloc(z->n + 1, sizeof(*sp))) == NULL ||
	    (z->names = malloc((size_t)cd_size + 1)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    z->label);
		goto fail;
	}
	np = z->names;
	pos = cd_off;
	for (i = 0; i < z->n; i++)
		if ((rc = read_member(z, &pos, cd_off, cd_off + cd_size, i,
		    &np, &sp[i], err)) != 0)
			goto fail;
	if (pos != cd_off + cd_size) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %" PRIu64 " bytes after the last zip central "
		    "directory entry", z->label, cd_off + cd_size - pos);
		goto fail;
	}
	qsort(sp, z->n, sizeof(*sp), cmp_span);
	for (i = 1; i < z->n; i++)
		if (sp[i].start < sp[i - 1].end) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: zip members '%s' and '%s' overlap", z->label,
			    peftio_show(z->m[sp[i - 1].member].name,
			    SIZE_MAX, nb),
			    peftio_show(z->m[sp[i].member].name, SIZE_MAX,
			    nb2));
			goto fail;
		}
	for (i = 0; i < z->n; i++)
		z->byname[i] = i;
	sort_zip = z;
	qsort(z->byname, z->n, sizeof(size_t), cmp_name);
	for (i = 1; i < z->n; i++)
		if (strcmp(z->m[z->byname[i]].name,
		    z->m[z->byname[i - 1]].name) == 0) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: zip member '%s' appears twice", z->label,
			    peftio_show(z->m[z->byname[i]].name, SIZE_MAX,
			    nb));
			goto fail;
		}
	free(sp);
	*out = z;
	return 0;
fail:
	free(sp);
	peftio_zip_close(z);
	return rc;
}

void
peftio_zip_close(struct peftio_zip *z)
{
	if (z == NULL)
		return;
	free(z->m);
	free(z->byname);
	free(z->names);
	free(z->label);
	free(z);
}

size_t
peftio_zip_count(const struct peftio_zip *z)
{
	return z->n;
}

const struct peftio_zip_member *
peftio_zip_member(const struct peftio_zip *z, size_t i)
{
	return i < z->n ? &z->m[i] : NULL;
}

long
peftio_zip_find(const struct peftio_zip *z, const char *name)
{
	size_t lo = 0, hi = z->n, mid;
	int d;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		d = strcmp(name, z->m[z->byname[mid]].name);
		if (d == 0)
			return (long)z->byname[mid];
		if (d < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/*
 * An error found while reading member m: "LABEL: [CTX: ]zip member
 * 'NAME' WHAT", where ctx says what the member was read for.
 */
static int __attribute__((format(printf, 6, 7)))
read_error(const struct peftio_zip *z, const char *ctx,
    const struct peftio_zip_member *m, struct peftio_error *err, int code,
    const char *fmt, ...)
{
	char nb[PEFTIO_SHOWBUF], what[PEFTIO_ERRMSG_MAX / 2];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return peftio_error_set(err, code, "%s: %s%szip member '%s' %s",
	    z->label, ctx != NULL ? ctx : "", ctx != NULL ? ": " : "",
	    peftio_show(m->name, SIZE_MAX, nb), what);
}

static uint32_t
crc_of(const unsigned char *p, uint64_t n)
{
	uLong crc = crc32_z(0, Z_NULL, 0);
	size_t step;

	while (n > 0) {
		step = n > SIZE_MAX ? SIZE_MAX : (size_t)n;
		crc = crc32_z(crc, p, step);
		p += step;
		n -= step;
	}
	return (uint32_t)crc;
}

/*
 * Inflate member m into out (m->usize bytes).  The raw deflate stream
 * must end exactly at the end of the member's bytes and produce exactly
 * usize bytes; one byte more is caught by offering a spare byte of
 * output once the buffer is full.
 */
static int
inflate_member(const struct peftio_zip *z, const char *ctx,
    const struct peftio_zip_member *m, unsigned char *out,
    struct peftio_error *err)
{
	const unsigned char *in = z->buf + m->offset;
	uint64_t in_left = m->csize, out_left = m->usize;
	unsigned char spare;
	z_stream zs;
	int zr, rc = 0, probing = 0;
	uInt step;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", z->label);
	zs.next_out = out;
	for (;;) {
		if (zs.avail_in == 0 && in_left > 0) {
			step = in_left > ZCHUNK ? ZCHUNK : (uInt)in_left;
			zs.next_in = in;
			zs.avail_in = step;
			in += step;
			in_left -= step;
		}
		if (zs.avail_out == 0) {
			if (probing) {
				rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
				    "inflates to more than its declared %"
				    PRIu64 " bytes", m->usize);
				break;
			}
			if (out_left > 0) {
				step = out_left > ZCHUNK ? ZCHUNK :
				    (uInt)out_left;
				zs.avail_out = step;
				out_left -= step;
			} else {
				probing = 1;
				zs.next_out = &spare;
				zs.avail_out = 1;
			}
		}
		zr = inflate(&zs, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			break;
		if (zr == Z_OK)
			continue;
		if (zr == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0)
			rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
			    "ends before its deflate data does (%" PRIu64
			    " of %" PRIu64 " bytes inflated)",
			    (uint64_t)zs.total_out, m->usize);
		else if (zr == Z_MEM_ERROR)
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", z->label);
		else
			rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
			    "holds bad deflate data (%s)",
			    zs.msg != NULL ? zs.msg : "no detail");
		break;
	}
	if (rc == 0 && probing && zs.avail_out == 0)
		rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
		    "inflates to more than its declared %" PRIu64 " bytes",
		    m->usize);
	else if (rc == 0 && !probing && (out_left > 0 || zs.avail_out > 0))
		rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
		    "inflates to %" PRIu64 " bytes, not its declared %" PRIu64,
		    (uint64_t)zs.total_out, m->usize);
	else if (rc == 0 && (zs.avail_in > 0 || in_left > 0))
		rc = read_error(z, ctx, m, err, PEFTIO_EFORMAT,
		    "has %" PRIu64 " bytes after its deflate data",
		    (uint64_t)zs.avail_in + in_left);
	inflateEnd(&zs);
	return rc;
}

int
peftio_zip_read(const struct peftio_zip *z, size_t i, const char *ctx,
    const unsigned char **data, unsigned char **copy,
    struct peftio_error *err)
{
	const struct peftio_zip_member *m = &z->m[i];
	const unsigned char *p;
	unsigned char *buf = NULL;
	uint32_t crc;
	int rc;

	*data = NULL;
	*copy = NULL;
	if (m->method == PEFTIO_ZIP_STORED)
		p = z->buf + m->offset;
	else {
		if (m->usize > SIZE_MAX - 1 ||
		    (buf = malloc((size_t)m->usize + 1)) == NULL)
			return read_error(z, ctx, m, err, PEFTIO_ENOMEM,
			    "needs %" PRIu64 " bytes: out of memory",
			    m->usize);
		if ((rc = inflate_member(z, ctx, m, buf, err)) != 0) {
			free(buf);
			return rc;
		}
		p = buf;
	}
	if ((crc = crc_of(p, m->usize)) != m->crc) {
		free(buf);
		return read_error(z, ctx, m, err, PEFTIO_ECHECKSUM,
		    "has CRC-32 %08" PRIx32 ", the archive says %08" PRIx32,
		    crc, m->crc);
	}
	*data = p;
	*copy = buf;
	return 0;
}
