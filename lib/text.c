/*
 * text.c - names and bytes from files as the library shows and indexes
 * them: the one escaper for messages, the UTF-8 check, shapes as
 * "[d0, d1]", the hash table of names the readers and the writer
 * look tensors up in, and a growing buffer with the JSON string writer
 * both JSON dialects (serde_json's, Python's ensure_ascii) use.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"
#include "text.h"

const char *
peftio_show(const char *s, size_t len, char *buf)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i, o = 0;

	for (i = 0; i < len && (len != SIZE_MAX || p[i] != '\0'); i++) {
		if (i == PEFTIO_SHOW_MAX) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (p[i] < 0x20 || p[i] == 0x7f) {
			snprintf(buf + o, 5, "\\x%02x", p[i]);
			o += 4;
		} else
			buf[o++] = (char)p[i];
	}
	buf[o] = '\0';
	return buf;
}

/*
 * Length of the valid UTF-8 prefix of s (n when all of it is valid),
 * with Rust's rules: no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
size_t
peftio_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0, k, need;
	unsigned char lo, hi, c;

	while (i < n) {
		c = s[i];
		lo = 0x80;
		hi = 0xbf;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else
			return i;
		if (n - i <= need)
			return i;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (k = 2; k <= need; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return i;
		i += need + 1;
	}
	return n;
}

const char *
peftio_fmt_shape(char *buf, size_t len, const uint64_t *shape, int ndim)
{
	size_t o = 0;
	int i;

	o += (size_t)snprintf(buf + o, len - o, "[");
	for (i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%" PRIu64,
		    i > 0 ? ", " : "", shape[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
	return buf;
}

uint64_t
peftio_name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}

long
peftio_nameidx_find(const struct peftio_nameidx *ix, const char *name,
    const char *(*get)(const void *, size_t), const void *ctx)
{
	size_t h, k;

	if (ix->cap == 0)
		return -1;
	h = (size_t)peftio_name_hash(name) & (ix->cap - 1);
	while ((k = ix->slot[h]) != 0) {
		if (strcmp(get(ctx, k - 1), name) == 0)
			return (long)(k - 1);
		h = (h + 1) & (ix->cap - 1);
	}
	return -1;
}

void
peftio_nameidx_put(struct peftio_nameidx *ix, size_t i, const char *name)
{
	size_t h = (size_t)peftio_name_hash(name) & (ix->cap - 1);

	while (ix->slot[h] != 0)
		h = (h + 1) & (ix->cap - 1);
	ix->slot[h] = i + 1;
	ix->count++;
}

/* Rebuild for n entries (0..n-1). */
int
peftio_nameidx_build(struct peftio_nameidx *ix, size_t n,
    const char *(*get)(const void *, size_t), const void *ctx)
{
	size_t cap = 16, i;

	while (cap < 2 * n + 2)
		cap *= 2;
	free(ix->slot);
	ix->count = 0;
	ix->cap = 0;
	if ((ix->slot = calloc(cap, sizeof(*ix->slot))) == NULL)
		return -1;
	ix->cap = cap;
	for (i = 0; i < n; i++)
		peftio_nameidx_put(ix, i, get(ctx, i));
	return 0;
}

void
peftio_sb_add(struct peftio_sbuf *b, const void *s, size_t n)
{
	size_t ncap;
	char *np;

	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		ncap = b->cap == 0 ? 256 : b->cap;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if ((np = realloc(b->p, ncap)) == NULL) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
peftio_sb_str(struct peftio_sbuf *b, const char *s)
{
	peftio_sb_add(b, s, strlen(s));
}

void
peftio_sb_json(struct peftio_sbuf *b, const char *s, size_t n, int ascii)
{
	const unsigned char *u = (const unsigned char *)s;
	char esc[16];
	uint32_t cp, hi, lo;
	size_t i = 0, run = 0;
	int k, more;

	peftio_sb_add(b, "\"", 1);
	while (i < n) {
		cp = u[i];
		if (cp >= 0x20 && cp != '"' && cp != '\\' &&
		    (!ascii || cp < 0x7f)) {
			i++;
			continue;
		}
		peftio_sb_add(b, u + run, i - run);
		if (cp < 0x80) {
			i++;
			switch (cp) {
			case '"': peftio_sb_add(b, "\\\"", 2); break;
			case '\\': peftio_sb_add(b, "\\\\", 2); break;
			case '\n': peftio_sb_add(b, "\\n", 2); break;
			case '\r': peftio_sb_add(b, "\\r", 2); break;
			case '\t': peftio_sb_add(b, "\\t", 2); break;
			case '\b': peftio_sb_add(b, "\\b", 2); break;
			case '\f': peftio_sb_add(b, "\\f", 2); break;
			default:
				snprintf(esc, sizeof(esc), "\\u%04x", cp);
				peftio_sb_str(b, esc);
			}
			run = i;
			continue;
		}
		/* Decode one UTF-8 sequence (validated by the caller). */
		more = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : 1;
		cp &= more == 3 ? 0x07 : more == 2 ? 0x0f : 0x1f;
		for (k = 0, i++; k < more && i < n; k++, i++)
			cp = (cp << 6) | (u[i] & 0x3f);
		if (cp >= 0x10000) {
			cp -= 0x10000;
			hi = 0xd800 | (cp >> 10);
			lo = 0xdc00 | (cp & 0x3ff);
			snprintf(esc, sizeof(esc), "\\u%04x\\u%04x", hi, lo);
		} else
			snprintf(esc, sizeof(esc), "\\u%04x", cp);
		peftio_sb_str(b, esc);
		run = i;
	}
	peftio_sb_add(b, u + run, i - run);
	peftio_sb_add(b, "\"", 1);
}
