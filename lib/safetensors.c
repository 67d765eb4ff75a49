/*
 * safetensors.c - one safetensors file: validate, read (mmap, or a pipe
 * spooled to a temporary file) and write.
 *
 * The reader applies the checks of the reference implementation
 * (safetensors' read_metadata and Metadata::validate), in its order:
 *
 *  1. fewer than 8 bytes                          HeaderTooSmall
 *  2. header length N > 100,000,000               HeaderTooLarge
 *  3. 8 + N past the end of the input             InvalidHeaderLength
 *  4. header not UTF-8                            InvalidHeader
 *  5. header not the expected JSON                InvalidHeaderDeserialization
 *  6. tensors sorted by (BEGIN, END)
 *  7. per tensor, in that order: BEGIN is not the previous END or
 *     END < BEGIN (InvalidOffset); element count (a left fold of
 *     checked multiplications) or size in bits overflows
 *     (ValidationOverflow); bits not a whole number of bytes
 *     (MisalignedSlice); END - BEGIN differs from the size
 *     (TensorInvalidInfo)
 *  8. 8 + N + last END differs from the input size (MetadataIncompleteBuffer)
 *
 * Step 5 covers what serde would refuse: not an object, trailing
 * bytes, whitespace other than space, tab, CR and LF, a missing field or
 * an unknown dtype, a number that is not a plain non-negative integer
 * ("-0" included), nesting past serde_json's limit.  Unknown fields of a
 * tensor object are ignored, as by the reference.
 *
 * The reader is stricter in a few documented ways: duplicate keys
 * anywhere are refused (also inside __metadata__ and for identical
 * tensor entries), names and metadata strings must not contain NUL,
 * names are at most PEFTIO_MAX_NAME bytes, ranks at most
 * PEFTIO_MAX_DIMS, and integers above 2^63 - 1 are refused (the JSON
 * parser cannot represent them; no real file has them).
 *
 * A file that starts as a zip archive is a torch.save checkpoint
 * (pytorch_model.bin): torchbin.c reads it and this reader serves its
 * tensors through the same interface.  The older torch formats are
 * refused with a message saying what they are.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "peftio_private.h"

#define MAX_HEADER	100000000ULL /* reference's MAX_HEADER_SIZE */
/* serde_json starts with remaining_depth 128 and fails when it reaches
 * 0, i.e. on the 128th nested array or object (the top object counts). */
#define MAX_DEPTH	127
#define COPY_BUF	(4u << 20)
#define SHOW_NAME	256		/* name bytes shown in messages */
#define SNIFF_LEN	512		/* bytes read to tell formats apart */

static const unsigned char empty_data[1];

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t
le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

/*
 * A name as shown in a message: control characters escaped, cut at
 * SHOW_NAME bytes.  buf must hold 4 * SHOW_NAME + 4 bytes.
 */
#define SHOWBUF	(4 * SHOW_NAME + 4)

static const char *
show(const char *s, char *buf)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i, o = 0;

	for (i = 0; p[i] != '\0' && i < SHOW_NAME; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f) {
			snprintf(buf + o, 5, "\\x%02x", p[i]);
			o += 4;
		} else
			buf[o++] = (char)p[i];
	}
	if (p[i] != '\0') {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static const char *
fmt_shape(char *buf, size_t len, const uint64_t *shape, int ndim)
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

/*
 * Scan the JSON text outside strings: the deepest nesting, and whether
 * a number token "-0" (which the JSON parser reads as 0) appears.
 */
static int
prescan(const unsigned char *s, size_t n, int *negzero)
{
	int depth = 0, maxdepth = 0, instr = 0;
	unsigned char c;
	size_t i;

	*negzero = 0;
	for (i = 0; i < n; i++) {
		c = s[i];
		if (instr) {
			if (c == '\\')
				i++;
			else if (c == '"')
				instr = 0;
			continue;
		}
		switch (c) {
		case '"':
			instr = 1;
			break;
		case '{':
		case '[':
			if (++depth > maxdepth)
				maxdepth = depth;
			break;
		case '}':
		case ']':
			if (depth > 0)
				depth--;
			break;
		case '-':
			if (i + 1 < n && s[i + 1] == '0' && (i + 2 == n ||
			    strchr("0123456789.eE", s[i + 2]) == NULL ||
			    s[i + 2] == '\0'))
				*negzero = 1;
			break;
		}
	}
	return maxdepth;
}

/* JSON parser message, made one printable line. */
static void
json_msg(char *out, size_t len, const json_error_t *je)
{
	const unsigned char *p = (const unsigned char *)je->text;
	size_t o = 0;

	for (; *p != '\0' && o + 5 < len; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(out + o, 5, "\\x%02x", *p);
			o += 4;
		} else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Name lookup: open addressing over indices                           */
/* ------------------------------------------------------------------ */

struct nameidx {
	size_t	*slot;		/* index + 1; 0 is empty */
	size_t	 cap;		/* power of 2 */
	size_t	 count;
};

static uint64_t
hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}

static long
nameidx_find(const struct nameidx *ix, const char *name,
    const char *(*get)(const void *, size_t), const void *ctx)
{
	size_t h, k;

	if (ix->cap == 0)
		return -1;
	h = (size_t)hash_name(name) & (ix->cap - 1);
	while ((k = ix->slot[h]) != 0) {
		if (strcmp(get(ctx, k - 1), name) == 0)
			return (long)(k - 1);
		h = (h + 1) & (ix->cap - 1);
	}
	return -1;
}

static void
nameidx_put(struct nameidx *ix, size_t i, const char *name)
{
	size_t h = (size_t)hash_name(name) & (ix->cap - 1);

	while (ix->slot[h] != 0)
		h = (h + 1) & (ix->cap - 1);
	ix->slot[h] = i + 1;
	ix->count++;
}

/* Rebuild for n entries (0..n-1). */
static int
nameidx_build(struct nameidx *ix, size_t n,
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
		nameidx_put(ix, i, get(ctx, i));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

struct st_meta {
	char	*key;
	char	*value;
};

struct peftio_st {
	char		*path;
	char		*label;		/* name used in messages */
	const unsigned char *data;	/* the data section */
	uint64_t	 datalen;
	void		*map;
	size_t		 maplen;
	int		 fd;		/* the file (or spool), for pread; or -1 */
	uint64_t	 fdoff;		/* where the data section starts in it */
	struct peftio_tensor_info *t;
	size_t		 n;
	char		*names;		/* NUL-separated names */
	struct st_meta	*meta;
	size_t		 nmeta;
	size_t		*meta_order;	/* meta sorted by key */
	struct nameidx	 ix;
	struct peftio_torchbin *tb;	/* a torch.save archive, or NULL */
};

/* A tensor while the header is checked. */
struct pre {
	struct peftio_tensor_info info;
	uint64_t	 end;
	size_t		 order;
};

static const char *
st_name_at(const void *ctx, size_t i)
{
	const struct peftio_st *st = ctx;

	return st->t[i].name;
}

static int
pre_cmp(const void *a, const void *b)
{
	const struct pre *x = a, *y = b;

	if (x->info.offset != y->info.offset)
		return x->info.offset < y->info.offset ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int
meta_cmp(const void *a, const void *b, void *ctx)
{
	const struct st_meta *m = ctx;
	const size_t *x = a, *y = b;

	return strcmp(m[*x].key, m[*y].key);
}

/* A non-negative JSON integer. */
static int
json_u64(const json_t *v, uint64_t *out)
{
	json_int_t x;

	if (!json_is_integer(v))
		return -1;
	x = json_integer_value(v);
	if (x < 0)
		return -1;
	*out = (uint64_t)x;
	return 0;
}

static int
parse_metadata(struct peftio_st *st, json_t *md, struct peftio_error *err)
{
	char nb[SHOWBUF];
	const char *key;
	json_t *v;
	size_t i = 0;

	if (json_is_null(md))
		return 0;
	if (!json_is_object(md))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: __metadata__ is not an object of strings", st->label);
	st->nmeta = json_object_size(md);
	if ((st->meta = calloc(st->nmeta + 1, sizeof(*st->meta))) == NULL ||
	    (st->meta_order = calloc(st->nmeta + 1, sizeof(size_t))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", st->label);
	json_object_foreach(md, key, v) {
		if (!json_is_string(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: __metadata__ entry '%s': value is not a "
			    "string", st->label, show(key, nb));
		if (strlen(json_string_value(v)) != json_string_length(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: __metadata__ entry '%s': value contains NUL",
			    st->label, show(key, nb));
		if ((st->meta[i].key = strdup(key)) == NULL ||
		    (st->meta[i].value = strdup(json_string_value(v))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", st->label);
		st->meta_order[i] = i;
		i++;
	}
	qsort_r(st->meta_order, st->nmeta, sizeof(size_t), meta_cmp, st->meta);
	return 0;
}

/* Step 5 for one tensor entry: the fields and their types. */
static int
parse_tensor(const char *label, const char *name, json_t *v, struct pre *p,
    struct peftio_error *err)
{
	char nb[SHOWBUF];
	json_t *dt, *shape, *offs;
	size_t i, rank;
	int d;

	if (strlen(name) > PEFTIO_MAX_NAME)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': name of %zu bytes exceeds the limit of "
		    "%d bytes", label, show(name, nb), strlen(name),
		    PEFTIO_MAX_NAME);
	if (!json_is_object(v))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': entry is not an object", label,
		    show(name, nb));
	dt = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offs = json_object_get(v, "data_offsets");
	if (dt == NULL || json_is_null(dt))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'dtype'", label,
		    show(name, nb));
	if (shape == NULL || json_is_null(shape))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'shape'", label,
		    show(name, nb));
	if (offs == NULL || json_is_null(offs))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'data_offsets'", label,
		    show(name, nb));
	if (!json_is_string(dt))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': dtype is not a string", label,
		    show(name, nb));
	d = peftio_dtype_parse(json_string_value(dt), json_string_length(dt));
	if (d < 0) {
		char db[SHOWBUF];

		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': unknown dtype '%s'", label,
		    show(name, nb), show(json_string_value(dt), db));
	}
	if (!json_is_array(shape))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': shape is not an array", label,
		    show(name, nb));
	rank = json_array_size(shape);
	if (rank > PEFTIO_MAX_DIMS)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': rank %zu exceeds the limit of %d", label,
		    show(name, nb), rank, PEFTIO_MAX_DIMS);
	for (i = 0; i < rank; i++)
		if (json_u64(json_array_get(shape, i), &p->info.shape[i]) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': shape[%zu] is not a non-negative "
			    "integer", label, show(name, nb), i);
	if (!json_is_array(offs))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets is not an array", label,
		    show(name, nb));
	if (json_array_size(offs) != 2)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets has %zu elements, not 2",
		    label, show(name, nb), json_array_size(offs));
	for (i = 0; i < 2; i++)
		if (json_u64(json_array_get(offs, i),
		    i == 0 ? &p->info.offset : &p->end) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': data_offsets[%zu] is not a "
			    "non-negative integer", label, show(name, nb), i);
	p->info.dtype = (enum peftio_dtype)d;
	p->info.ndim = (int)rank;
	return 0;
}

/*
 * "-0" reads as the integer 0; find out whether one stands where an
 * integer is required by parsing again with every number as a double.
 */
static int
check_negzero(const char *label, const unsigned char *hdr, size_t n,
    struct peftio_error *err)
{
	char nb[SHOWBUF];
	json_error_t je;
	json_t *root, *v, *a, *e;
	const char *key;
	static const char *const fields[] = { "shape", "data_offsets" };
	size_t i, f;
	int rc = 0;

	root = json_loadb((const char *)hdr, n, JSON_REJECT_DUPLICATES |
	    JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
	if (root == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: invalid JSON header", label);
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0)
			continue;
		for (f = 0; f < 2 && rc == 0; f++) {
			a = json_object_get(v, fields[f]);
			json_array_foreach(a, i, e) {
				if (json_is_real(e) &&
				    json_real_value(e) == 0.0 &&
				    signbit(json_real_value(e))) {
					rc = peftio_error_set(err,
					    PEFTIO_EFORMAT, "%s: tensor '%s': "
					    "%s[%zu] is not a non-negative "
					    "integer (-0)", label,
					    show(key, nb), fields[f], i);
					break;
				}
			}
		}
		if (rc != 0)
			break;
	}
	json_decref(root);
	return rc;
}

/* Step 7 for one tensor, in offset order. */
static int
check_tensor(const char *label, struct pre *p, uint64_t start,
    struct peftio_error *err)
{
	struct peftio_tensor_info *t = &p->info;
	char nb[SHOWBUF], sb[16 * 22 + 4];
	uint64_t numel = 1, bits;
	int i;

	if (t->offset != start)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "do not start where the previous tensor ends (%" PRIu64
		    ")", label, show(t->name, nb), t->offset, p->end, start);
	if (p->end < t->offset)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "end before they begin", label, show(t->name, nb),
		    t->offset, p->end);
	for (i = 0; i < t->ndim; i++)
		if (PEFTIO_MUL_OVERFLOW(numel, t->shape[i], &numel))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': element count of shape %s "
			    "overflows 64 bits", label, show(t->name, nb),
			    fmt_shape(sb, sizeof(sb), t->shape, t->ndim));
	if (PEFTIO_MUL_OVERFLOW(numel, (uint64_t)peftio_dtype_bits(t->dtype),
	    &bits))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': size in bits of shape %s x %s overflows "
		    "64 bits", label, show(t->name, nb),
		    fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
		    peftio_dtype_name(t->dtype));
	if (bits % 8 != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': shape %s x %s is not a whole number of "
		    "bytes (%" PRIu64 " bits)", label, show(t->name, nb),
		    fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
		    peftio_dtype_name(t->dtype), bits);
	t->numel = numel;
	t->nbytes = bits / 8;
	if (p->end - t->offset != t->nbytes)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "do not match shape %s x %s (%" PRIu64 " bytes)", label,
		    show(t->name, nb), t->offset, p->end,
		    fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
		    peftio_dtype_name(t->dtype), t->nbytes);
	return 0;
}

/*
 * The key the JSON parser found twice: the string token that ends at
 * byte pos, as written in the header (escapes kept), shown in buf (a
 * SHOWBUF); NULL if there is no such token.
 */
static const char *
dup_key(const unsigned char *hdr, size_t n, int pos, char *buf)
{
	char raw[SHOW_NAME + 2];
	size_t end, i, k, len;

	if (pos < 2 || (size_t)pos > n || hdr[pos - 1] != '"')
		return NULL;
	end = (size_t)pos - 1;
	for (i = end; i-- > 0; ) {
		if (hdr[i] != '"')
			continue;
		for (k = 0; k < i && hdr[i - 1 - k] == '\\'; k++)
			;
		if (k % 2 == 0)
			break;
	}
	if (i >= end)
		return NULL;
	/* One byte more than show() keeps, so that it marks a cut. */
	len = PEFTIO_MIN(end - i - 1, (size_t)SHOW_NAME + 1);
	memcpy(raw, hdr + i + 1, len);
	raw[len] = '\0';
	return show(raw, buf);
}

/*
 * Steps 4 to 7 on the n header bytes.  Fills the tensor list and the
 * metadata of st and sets *datalen to the size the data section must
 * have.
 */
static int
parse_header(struct peftio_st *st, const unsigned char *hdr, size_t n,
    uint64_t *datalen, struct peftio_error *err)
{
	char msg[PEFTIO_ERRMSG_MAX / 2], nb[SHOWBUF];
	json_error_t je;
	json_t *root, *v;
	const char *key;
	struct pre *pre = NULL;
	size_t bad, i, k, namebytes = 0;
	uint64_t start;
	char *np;
	int negzero, rc = 0;

	if ((bad = peftio_utf8_valid(hdr, n)) != n)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: header is not valid UTF-8 (byte %zu of the header)",
		    st->label, bad);
	if (prescan(hdr, n, &negzero) > MAX_DEPTH)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: invalid JSON header: nested deeper than %d levels",
		    st->label, MAX_DEPTH);
	root = json_loadb((const char *)hdr, n, JSON_REJECT_DUPLICATES |
	    JSON_ALLOW_NUL, &je);
	if (root == NULL) {
		json_msg(msg, sizeof(msg), &je);
		if (strncmp(je.text, "too big", 7) == 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: header: integer above 2^63-1 is not supported"
			    " (%s)", st->label, msg);
		if (strncmp(je.text, "duplicate object key", 20) == 0 &&
		    dup_key(hdr, n, je.position, nb) != NULL)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: duplicate key '%s' in the header (at byte %d)",
			    st->label, nb, je.position);
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: invalid JSON header: %s (at byte %d)", st->label, msg,
		    je.position);
	}
	if (!json_is_object(root)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: invalid JSON header: not an object", st->label);
		goto out;
	}
	k = 0;
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			if ((rc = parse_metadata(st, v, err)) != 0)
				goto out;
		} else {
			k++;
			namebytes += strlen(key) + 1;
		}
	}
	if ((pre = calloc(k + 1, sizeof(*pre))) == NULL ||
	    (st->names = malloc(namebytes + 1)) == NULL ||
	    (st->t = calloc(k + 1, sizeof(*st->t))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    st->label);
		goto out;
	}
	np = st->names;
	i = 0;
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0)
			continue;
		if ((rc = parse_tensor(st->label, key, v, &pre[i], err)) != 0)
			goto out;
		memcpy(np, key, strlen(key) + 1);
		pre[i].info.name = np;
		pre[i].order = i;
		np += strlen(key) + 1;
		i++;
	}
	if (negzero && (rc = check_negzero(st->label, hdr, n, err)) != 0)
		goto out;
	qsort(pre, k, sizeof(*pre), pre_cmp);
	start = 0;
	for (i = 0; i < k; i++) {
		if ((rc = check_tensor(st->label, &pre[i], start, err)) != 0)
			goto out;
		start = pre[i].end;
		st->t[i] = pre[i].info;
	}
	st->n = k;
	*datalen = start;
	if (nameidx_build(&st->ix, st->n, st_name_at, st) != 0)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    st->label);
out:
	free(pre);
	json_decref(root);
	return rc;
}

static struct peftio_st *
st_new(const char *path, const char *label)
{
	struct peftio_st *st;

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	st->path = strdup(path);
	st->label = strdup(label);
	if (st->path == NULL || st->label == NULL) {
		peftio_st_close(st);
		return NULL;
	}
	st->data = empty_data;
	st->fd = -1;
	return st;
}

/* Steps 2 and 3 on the 8-byte prefix; avail is what follows it. */
static int
check_length(const char *label, uint64_t n, uint64_t avail, int stream,
    struct peftio_error *err)
{
	if (n > MAX_HEADER)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: header length %" PRIu64 " exceeds the limit of %llu "
		    "bytes", label, n, MAX_HEADER);
	if (!stream && n > avail)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: header length %" PRIu64 " runs past the end of the "
		    "file (%" PRIu64 " bytes after the length)", label, n,
		    avail);
	return 0;
}

static int
check_total(const char *label, uint64_t n, uint64_t datalen, uint64_t size,
    struct peftio_error *err)
{
	uint64_t need;

	if (PEFTIO_ADD_OVERFLOW(datalen, n + 8, &need) || need > size)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: file is %" PRIu64 " bytes, the header and tensors "
		    "need %" PRIu64 " (truncated)", label, size,
		    8 + n + datalen);
	if (need < size)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %" PRIu64 " bytes after the last tensor", label,
		    size - need);
	return 0;
}

/* A torch.save archive in buf: its tensors become this reader's. */
static int
open_torchbin(struct peftio_st *st, const void *buf, size_t len, int mapped,
    struct peftio_error *err)
{
	size_t i, n;
	int rc;

	if ((rc = peftio_torchbin_open(&st->tb, buf, len, mapped, st->label,
	    err)) != 0)
		return rc;
	n = peftio_torchbin_count(st->tb);
	if ((st->t = calloc(n + 1, sizeof(*st->t))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", st->label);
	for (i = 0; i < n; i++)
		st->t[i] = *peftio_torchbin_tensor(st->tb, i);
	st->n = n;
	if (nameidx_build(&st->ix, st->n, st_name_at, st) != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", st->label);
	return 0;
}

int
peftio_st_open_mem(struct peftio_st **out, const void *buf, size_t len,
    const char *label, struct peftio_error *err)
{
	const unsigned char *p = buf;
	struct peftio_st *st;
	uint64_t n, datalen;
	int rc;

	*out = NULL;
	if (label == NULL)
		label = "<memory>";
	if ((st = st_new(label, label)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", label);
	if ((rc = peftio_torchbin_sniff(buf, len, label, err)) != 0) {
		if (rc < 0 || (rc = open_torchbin(st, buf, len, 0, err)) != 0)
			goto fail;
		*out = st;
		return 0;
	}
	if (len < 8) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %zu bytes is too small for a safetensors file",
		    label, len);
		goto fail;
	}
	n = le64(p);
	if ((rc = check_length(label, n, len - 8, 0, err)) != 0)
		goto fail;
	if ((rc = parse_header(st, p + 8, (size_t)n, &datalen, err)) != 0)
		goto fail;
	if ((rc = check_total(label, n, datalen, len, err)) != 0)
		goto fail;
	st->data = p + 8 + n;
	st->datalen = datalen;
	*out = st;
	return 0;
fail:
	peftio_st_close(st);
	return rc;
}

/* Keep a descriptor of the data for peftio_st_read(). */
static int
keep_fd(struct peftio_st *st, int fd, struct peftio_error *err)
{
	if ((st->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return peftio_error_sys(err, "%s", st->label);
	return 0;
}

/* A torch.save archive in a regular file: mapped whole. */
static int
open_zip_file(struct peftio_st *st, int fd, uint64_t size,
    struct peftio_error *err)
{
	if (size > SIZE_MAX)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: too large to map", st->label);
	st->maplen = (size_t)size;
	st->map = mmap(NULL, st->maplen, PROT_READ, MAP_PRIVATE, fd, 0);
	if (st->map == MAP_FAILED) {
		st->map = NULL;
		return peftio_error_sys(err, "%s: mmap", st->label);
	}
	return open_torchbin(st, st->map, st->maplen, 1, err);
}

static int
open_regular(struct peftio_st *st, int fd, uint64_t size,
    struct peftio_error *err)
{
	unsigned char pfx[SNIFF_LEN], *hdr = NULL;
	uint64_t n, datalen, start, off;
	size_t want = size < SNIFF_LEN ? (size_t)size : SNIFF_LEN;
	long page;
	ssize_t r;
	int rc;

	if (want > 0 && (r = pread(fd, pfx, want, 0)) != (ssize_t)want)
		return r < 0 ? peftio_error_sys(err, "%s: read error",
		    st->label) : peftio_error_set(err, PEFTIO_EIO,
		    "%s: file shrank while being read", st->label);
	if ((rc = peftio_torchbin_sniff(pfx, want, st->label, err)) != 0)
		return rc < 0 ? rc : open_zip_file(st, fd, size, err);
	if (size < 8) {
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %" PRIu64 " bytes is too small for a safetensors "
		    "file", st->label, size);
	}
	n = le64(pfx);
	if ((rc = check_length(st->label, n, size - 8, 0, err)) != 0)
		return rc;
	if ((hdr = malloc(n + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", st->label);
	for (off = 0; off < n; off += (uint64_t)r) {
		r = pread(fd, hdr + off, n - off, (off_t)(8 + off));
		if (r < 0 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r <= 0) {
			rc = r < 0 ? peftio_error_sys(err, "%s: read error",
			    st->label) : peftio_error_set(err, PEFTIO_EIO,
			    "%s: file shrank while being read", st->label);
			free(hdr);
			return rc;
		}
	}
	rc = parse_header(st, hdr, (size_t)n, &datalen, err);
	free(hdr);
	if (rc != 0 || (rc = check_total(st->label, n, datalen, size, err)))
		return rc;
	st->datalen = datalen;
	if (datalen == 0)
		return 0;
	/* Map the data section from the page that holds its first byte. */
	if ((page = sysconf(_SC_PAGESIZE)) <= 0)
		page = 4096;
	start = (8 + n) & ~((uint64_t)page - 1);
	if (size - start > SIZE_MAX)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: too large to map", st->label);
	st->maplen = (size_t)(size - start);
	st->map = mmap(NULL, st->maplen, PROT_READ, MAP_PRIVATE, fd,
	    (off_t)start);
	if (st->map == MAP_FAILED) {
		st->map = NULL;
		return peftio_error_sys(err, "%s: mmap", st->label);
	}
	(void)madvise(st->map, st->maplen, MADV_SEQUENTIAL);
	st->data = (const unsigned char *)st->map + (8 + n - start);
	st->fdoff = 8 + n;
	return keep_fd(st, fd, err);
}

/*
 * Copy fd to the spool file sp through buf (len bytes), up to max bytes
 * or the end of the input; *got says how many.
 */
static int
spool(struct peftio_st *st, int fd, int sp, unsigned char *buf, size_t len,
    uint64_t max, uint64_t *got, struct peftio_error *err)
{
	long long r;
	size_t want;

	for (*got = 0; *got < max; *got += (uint64_t)r) {
		want = max - *got < len ? (size_t)(max - *got) : len;
		if ((r = peftio_read_all(fd, buf, want)) < 0)
			return peftio_error_sys(err, "%s: read error",
			    st->label);
		if (peftio_write_all(sp, buf, (size_t)r) != 0)
			return peftio_error_sys(err, "%s: spool file",
			    st->label);
		if ((size_t)r < want) {
			*got += (uint64_t)r;
			break;
		}
	}
	return 0;
}

/*
 * A torch.save archive on a pipe: the npfx bytes already read and the
 * rest of the input, spooled to an anonymous file and mapped.
 */
static int
open_stream_zip(struct peftio_st *st, int fd, const unsigned char *pfx,
    size_t npfx, struct peftio_error *err)
{
	unsigned char *buf = NULL;
	uint64_t total = npfx, got;
	int rc = 0, sp;

	if ((sp = peftio_anon_file()) < 0)
		return peftio_error_sys(err, "%s: cannot create a spool file",
		    st->label);
	if ((buf = malloc(COPY_BUF)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    st->label);
		goto out;
	}
	if (peftio_write_all(sp, pfx, npfx) != 0) {
		rc = peftio_error_sys(err, "%s: spool file", st->label);
		goto out;
	}
	if ((rc = spool(st, fd, sp, buf, COPY_BUF, UINT64_MAX, &got,
	    err)) != 0)
		goto out;
	total += got;
	if (total > SIZE_MAX) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: too large to map", st->label);
		goto out;
	}
	st->maplen = (size_t)total;
	st->map = mmap(NULL, st->maplen, PROT_READ, MAP_PRIVATE, sp, 0);
	if (st->map == MAP_FAILED) {
		st->map = NULL;
		rc = peftio_error_sys(err, "%s: mmap of the spool file",
		    st->label);
		goto out;
	}
	rc = open_torchbin(st, st->map, st->maplen, 1, err);
out:
	free(buf);
	close(sp);
	return rc;
}

/* Read a pipe: header in memory, data section spooled to a file. */
static int
open_stream(struct peftio_st *st, int fd, struct peftio_error *err)
{
	unsigned char pfx[8], *hdr = NULL, *nh, *buf = NULL;
	uint64_t n, datalen, got;
	size_t cap = 0, have = 0;
	long long r;
	int rc, sp = -1;

	if ((r = peftio_read_all(fd, pfx, 8)) < 0)
		return peftio_error_sys(err, "%s: read error", st->label);
	if ((rc = peftio_torchbin_sniff(pfx, (size_t)r, st->label, err)) != 0)
		return rc < 0 ? rc : open_stream_zip(st, fd, pfx, (size_t)r,
		    err);
	if (r < 8)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %lld bytes is too small for a safetensors file",
		    st->label, r);
	n = le64(pfx);
	if ((rc = check_length(st->label, n, 0, 1, err)) != 0)
		return rc;
	/* Grow the header buffer as bytes arrive, not to a claimed N. */
	while (have < n) {
		if (have == cap) {
			cap = cap == 0 ? 65536 : cap * 2;
			if (cap > n)
				cap = (size_t)n;
			if ((nh = realloc(hdr, cap + 1)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "%s: out of memory", st->label);
				goto out;
			}
			hdr = nh;
		}
		if ((r = peftio_read_all(fd, hdr + have, cap - have)) < 0) {
			rc = peftio_error_sys(err, "%s: read error", st->label);
			goto out;
		}
		have += (size_t)r;
		if (have < cap) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: header length %" PRIu64 " runs past the end "
			    "of the input (%zu bytes after the length)",
			    st->label, n, have);
			goto out;
		}
	}
	if ((rc = parse_header(st, hdr != NULL ? hdr : empty_data,
	    (size_t)n, &datalen, err)) != 0)
		goto out;
	free(hdr);
	hdr = NULL;
	if (datalen > (uint64_t)SIZE_MAX) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: data section too large to map", st->label);
		goto out;
	}
	if ((sp = peftio_anon_file()) < 0) {
		rc = peftio_error_sys(err, "%s: cannot create a spool file",
		    st->label);
		goto out;
	}
	/* No larger than the data (at least a byte, to look past it). */
	if ((buf = malloc(datalen < COPY_BUF ? (size_t)datalen + 1 :
	    COPY_BUF)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    st->label);
		goto out;
	}
	if ((rc = spool(st, fd, sp, buf, datalen < COPY_BUF ?
	    (size_t)datalen + 1 : COPY_BUF, datalen, &got, err)) != 0)
		goto out;
	if (got < datalen) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: input ended after %" PRIu64 " of %" PRIu64
		    " data bytes (truncated)", st->label, got, datalen);
		goto out;
	}
	if ((r = peftio_read_all(fd, buf, 1)) < 0) {
		rc = peftio_error_sys(err, "%s: read error", st->label);
		goto out;
	}
	if (r > 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: bytes after the last tensor", st->label);
		goto out;
	}
	st->datalen = datalen;
	if (datalen > 0) {
		st->maplen = (size_t)datalen;
		st->map = mmap(NULL, st->maplen, PROT_READ, MAP_PRIVATE, sp, 0);
		if (st->map == MAP_FAILED) {
			st->map = NULL;
			rc = peftio_error_sys(err, "%s: mmap of the spool file",
			    st->label);
			goto out;
		}
		st->data = st->map;
		st->fdoff = 0;
		rc = keep_fd(st, sp, err);
	}
out:
	free(hdr);
	free(buf);
	if (sp >= 0)
		close(sp);
	return rc;
}

int
peftio_st_open(struct peftio_st **out, const char *path,
    struct peftio_error *err)
{
	struct peftio_st *st;
	struct stat sb;
	int fd, rc, is_stdin;

	*out = NULL;
	if (path == NULL || *path == '\0')
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "empty input file name");
	is_stdin = strcmp(path, "-") == 0;
	if ((st = st_new(path, is_stdin ? "<stdin>" : path)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", path);
	if (is_stdin)
		fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	else
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = peftio_error_sys(err, "%s", st->label);
		goto fail;
	}
	if (fstat(fd, &sb) != 0) {
		rc = peftio_error_sys(err, "%s", st->label);
	} else if (S_ISDIR(sb.st_mode)) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: is a directory", st->label);
	} else if (S_ISREG(sb.st_mode) &&
	    (!is_stdin || lseek(fd, 0, SEEK_CUR) == 0)) {
		rc = open_regular(st, fd, (uint64_t)sb.st_size, err);
	} else
		rc = open_stream(st, fd, err);
	close(fd);
	if (rc != 0)
		goto fail;
	*out = st;
	return 0;
fail:
	peftio_st_close(st);
	return rc;
}

void
peftio_st_close(struct peftio_st *st)
{
	size_t i;

	if (st == NULL)
		return;
	peftio_torchbin_close(st->tb);
	if (st->map != NULL)
		munmap(st->map, st->maplen);
	if (st->fd >= 0)
		close(st->fd);
	for (i = 0; i < st->nmeta; i++) {
		free(st->meta[i].key);
		free(st->meta[i].value);
	}
	free(st->meta);
	free(st->meta_order);
	free(st->ix.slot);
	free(st->t);
	free(st->names);
	free(st->path);
	free(st->label);
	free(st);
}

const char *
peftio_st_path(const struct peftio_st *st)
{
	return st->path;
}

size_t
peftio_st_count(const struct peftio_st *st)
{
	return st->n;
}

const struct peftio_tensor_info *
peftio_st_tensor(const struct peftio_st *st, size_t i)
{
	return i < st->n ? &st->t[i] : NULL;
}

long
peftio_st_find(const struct peftio_st *st, const char *name)
{
	if (name == NULL)
		return -1;
	return nameidx_find(&st->ix, name, st_name_at, st);
}

size_t
peftio_st_meta_count(const struct peftio_st *st)
{
	return st->nmeta;
}

const char *
peftio_st_meta_key(const struct peftio_st *st, size_t i)
{
	return i < st->nmeta ? st->meta[i].key : NULL;
}

const char *
peftio_st_meta_value(const struct peftio_st *st, size_t i)
{
	return i < st->nmeta ? st->meta[i].value : NULL;
}

const char *
peftio_st_meta_get(const struct peftio_st *st, const char *key)
{
	const size_t *hit;
	size_t lo = 0, hi = st->nmeta, mid;
	int c;

	if (key == NULL)
		return NULL;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		hit = &st->meta_order[mid];
		c = strcmp(key, st->meta[*hit].key);
		if (c == 0)
			return st->meta[*hit].value;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int
peftio_st_data(struct peftio_st *st, size_t i, const void **data,
    struct peftio_error *err)
{
	if (i >= st->n)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor index %zu out of range (%zu tensors)",
		    st->label, i, st->n);
	if (st->tb != NULL)
		return peftio_torchbin_data(st->tb, i, data, err);
	*data = st->data + st->t[i].offset;
	return 0;
}

int
peftio_st_read(struct peftio_st *st, size_t i, uint64_t off, void *buf,
    size_t len, struct peftio_error *err)
{
	const struct peftio_tensor_info *t;
	unsigned char *p = buf;
	ssize_t r;

	if (i >= st->n)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor index %zu out of range (%zu tensors)",
		    st->label, i, st->n);
	t = &st->t[i];
	if (off > t->nbytes || len > t->nbytes - off)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': bytes %" PRIu64 "+%zu out of range",
		    st->label, t->name, off, len);
	if (st->fd < 0) {
		/* In memory, or a torch archive (whose offsets are not
		 * file positions, and whose views may be copies). */
		const void *data;
		int rc;

		if ((rc = peftio_st_data(st, i, &data, err)) != 0)
			return rc;
		memcpy(buf, (const unsigned char *)data + off, len);
		return 0;
	}
	off += st->fdoff + t->offset;
	while (len > 0) {
		r = pread(st->fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? peftio_error_sys(err,
			    "%s: tensor '%s': read error", st->label,
			    t->name) : peftio_error_set(err, PEFTIO_EIO,
			    "%s: tensor '%s': file shrank while being read",
			    st->label, t->name);
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
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

void
peftio_st_release(struct peftio_st *st, size_t i)
{
	if (i >= st->n)
		return;
	if (st->tb != NULL)
		peftio_torchbin_release(st->tb, i);
	else if (st->map != NULL)
		peftio_drop_pages(st->data + st->t[i].offset, st->t[i].nbytes);
}

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

struct wtensor {
	struct peftio_tensor_info info;	/* name malloc'ed */
	uint64_t	 written;
	XXH3_state_t	*xx;
	uint64_t	 hash;
	size_t		 hexpos;	/* checksum digits in hdr, or 0 */
	int		 done;
};

struct wmeta {
	char	*key;
	char	*value;
};

struct peftio_stw {
	struct peftio_outfile of;
	char		*label;
	unsigned	 flags;
	struct wtensor	*t;
	size_t		 n, cap;
	struct wmeta	*m;
	size_t		 nm, mcap;
	struct nameidx	 ix;
	int		 laid_out, committed, failed;
	unsigned char	*hdr;		/* 8-byte N, then header */
	size_t		 hdrlen;	/* 8 + N */
	uint64_t	 datalen;
};

/* A growing byte buffer; oom is sticky. */
struct sbuf {
	char	*p;
	size_t	 len, cap;
	int	 oom;
};

static void
sb_add(struct sbuf *b, const void *s, size_t n)
{
	size_t ncap;
	char *np;

	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		ncap = b->cap == 0 ? 4096 : b->cap;
		while (ncap < b->len + n)
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
}

static void
sb_cstr(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void
sb_u64(struct sbuf *b, uint64_t v)
{
	char t[24];

	snprintf(t, sizeof(t), "%" PRIu64, v);
	sb_cstr(b, t);
}

/* A JSON string as serde_json writes it. */
static void
sb_json(struct sbuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *run = p;
	char esc[7];

	sb_add(b, "\"", 1);
	for (; *p != '\0'; p++) {
		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		sb_add(b, run, (size_t)(p - run));
		run = p + 1;
		esc[0] = '\\';
		switch (*p) {
		case '"':
		case '\\':
			esc[1] = (char)*p;
			break;
		case '\b':
			esc[1] = 'b';
			break;
		case '\t':
			esc[1] = 't';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\f':
			esc[1] = 'f';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			sb_add(b, esc, 6);
			continue;
		}
		sb_add(b, esc, 2);
	}
	sb_add(b, run, (size_t)(p - run));
	sb_add(b, "\"", 1);
}

static const char *
w_name_at(const void *ctx, size_t i)
{
	const struct peftio_stw *w = ctx;

	return w->t[i].info.name;
}

int
peftio_stw_create(struct peftio_stw **out, const char *path, unsigned flags,
    struct peftio_error *err)
{
	struct peftio_stw *w;
	int rc;

	*out = NULL;
	if (path == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "empty output file name");
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->label = strdup(strcmp(path, "-") == 0 ? "<stdout>" :
	    path)) == NULL) {
		free(w);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", path);
	}
	w->flags = flags;
	w->of.fd = -1;
	w->of.slot = -1;
	if ((rc = peftio_outfile_open(&w->of, path, flags, err)) != 0) {
		peftio_stw_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int
peftio_stw_meta(struct peftio_stw *w, const char *key, const char *value,
    struct peftio_error *err)
{
	char nb[SHOWBUF];
	struct wmeta *nm;
	size_t ncap;

	if (w->laid_out)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: metadata added after the layout", w->label);
	if (key == NULL || value == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: metadata key or value missing", w->label);
	if (peftio_utf8_valid((const unsigned char *)key, strlen(key)) !=
	    strlen(key) || peftio_utf8_valid((const unsigned char *)value,
	    strlen(value)) != strlen(value))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: metadata entry '%s' is not valid UTF-8", w->label,
		    show(key, nb));
	if (strncmp(key, "xxh3.", 5) == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: metadata key '%s': the xxh3. keys are computed by "
		    "the writer", w->label, show(key, nb));
	if (w->nm == w->mcap) {
		ncap = w->mcap == 0 ? 8 : 2 * w->mcap;
		if ((nm = realloc(w->m, ncap * sizeof(*nm))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", w->label);
		w->m = nm;
		w->mcap = ncap;
	}
	w->m[w->nm].key = strdup(key);
	w->m[w->nm].value = strdup(value);
	if (w->m[w->nm].key == NULL || w->m[w->nm].value == NULL) {
		free(w->m[w->nm].key);
		free(w->m[w->nm].value);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", w->label);
	}
	w->nm++;
	return 0;
}

int
peftio_stw_declare(struct peftio_stw *w, const char *name,
    enum peftio_dtype dt, int ndim, const uint64_t *shape,
    struct peftio_error *err)
{
	char nb[SHOWBUF], sb[16 * 22 + 4];
	struct wtensor *t, *nt;
	uint64_t numel = 1, nbytes;
	size_t len, ncap;
	int i;

	if (w->laid_out)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor declared after the layout", w->label);
	if (name == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor without a name", w->label);
	len = strlen(name);
	if (len > PEFTIO_MAX_NAME)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': name longer than %d bytes", w->label,
		    show(name, nb), PEFTIO_MAX_NAME);
	if (peftio_utf8_valid((const unsigned char *)name, len) != len)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': name is not valid UTF-8", w->label,
		    show(name, nb));
	if (strcmp(name, "__metadata__") == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: '__metadata__' cannot name a tensor", w->label);
	if (peftio_dtype_name(dt) == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': invalid dtype %d", w->label,
		    show(name, nb), (int)dt);
	if (ndim < 0 || ndim > PEFTIO_MAX_DIMS || (ndim > 0 && shape == NULL))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': invalid rank %d", w->label,
		    show(name, nb), ndim);
	for (i = 0; i < ndim; i++)
		if (PEFTIO_MUL_OVERFLOW(numel, shape[i], &numel))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': element count of shape %s "
			    "overflows 64 bits", w->label, show(name, nb),
			    fmt_shape(sb, sizeof(sb), shape, ndim));
	if (peftio_dtype_nbytes(dt, numel, &nbytes) != 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': shape %s x %s is not a whole number of "
		    "bytes or overflows", w->label, show(name, nb),
		    fmt_shape(sb, sizeof(sb), shape, ndim),
		    peftio_dtype_name(dt));
	if (nameidx_find(&w->ix, name, w_name_at, w) >= 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' declared twice", w->label, show(name, nb));
	if (w->n == w->cap) {
		ncap = w->cap == 0 ? 64 : 2 * w->cap;
		if ((nt = realloc(w->t, ncap * sizeof(*nt))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", w->label);
		w->t = nt;
		w->cap = ncap;
	}
	t = &w->t[w->n];
	memset(t, 0, sizeof(*t));
	if ((t->info.name = strdup(name)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", w->label);
	t->info.dtype = dt;
	t->info.ndim = ndim;
	for (i = 0; i < ndim; i++)
		t->info.shape[i] = shape[i];
	t->info.numel = numel;
	t->info.nbytes = nbytes;
	w->n++;
	/* Keep the index at most half full. */
	if (2 * (w->ix.count + 1) > w->ix.cap) {
		if (nameidx_build(&w->ix, w->n, w_name_at, w) != 0)
			goto oom;
	} else
		nameidx_put(&w->ix, w->n - 1, name);
	return 0;
oom:
	w->n--;
	free((char *)t->info.name);
	nameidx_build(&w->ix, w->n, w_name_at, w);
	return peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
	    w->label);
}

/* The reference order: dtype descending, then name bytewise. */
static int
wt_cmp(const void *a, const void *b)
{
	const struct wtensor *x = a, *y = b;

	if (x->info.dtype != y->info.dtype)
		return x->info.dtype > y->info.dtype ? -1 : 1;
	return strcmp(x->info.name, y->info.name);
}

/* One __metadata__ entry while the header is built. */
struct hent {
	char		*key;		/* malloc'ed */
	const char	*value;		/* NULL: tensor's checksum */
	size_t		 tensor;
};

static int
hent_cmp(const void *a, const void *b)
{
	const struct hent *x = a, *y = b;

	return strcmp(x->key, y->key);
}

int
peftio_stw_layout(struct peftio_stw *w, struct peftio_error *err)
{
	static const char zeros[] = "0000000000000000";
	char nb[SHOWBUF];
	struct hent *h = NULL;
	struct sbuf b = { 0 };
	size_t nh = 0, i, k, len;
	uint64_t off = 0;
	int rc = 0, own_format = 0, sum = !(w->flags & PEFTIO_W_NOCHECKSUM);

	if (w->laid_out)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: layout done twice", w->label);
	if (w->n > 1)
		qsort(w->t, w->n, sizeof(*w->t), wt_cmp);
	if (nameidx_build(&w->ix, w->n, w_name_at, w) != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", w->label);
	for (i = 0; i < w->n; i++) {
		w->t[i].info.offset = off;
		if (PEFTIO_ADD_OVERFLOW(off, w->t[i].info.nbytes, &off))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: total size overflows 64 bits", w->label);
	}
	w->datalen = off;

	/* __metadata__: "format", the caller's entries, the checksums. */
	if ((h = calloc(w->nm + w->n + 1, sizeof(*h))) == NULL)
		goto oom;
	for (i = 0; i < w->nm; i++) {
		if (strcmp(w->m[i].key, "format") == 0)
			own_format = 1;
		if ((h[nh].key = strdup(w->m[i].key)) == NULL)
			goto oom;
		h[nh++].value = w->m[i].value;
	}
	if (!own_format) {
		if ((h[nh].key = strdup("format")) == NULL)
			goto oom;
		h[nh++].value = "pt";
	}
	for (i = 0; sum && i < w->n; i++) {
		len = strlen(w->t[i].info.name);
		if ((h[nh].key = malloc(len + 6)) == NULL)
			goto oom;
		memcpy(h[nh].key, "xxh3.", 5);
		memcpy(h[nh].key + 5, w->t[i].info.name, len + 1);
		h[nh].value = NULL;
		h[nh++].tensor = i;
	}
	qsort(h, nh, sizeof(*h), hent_cmp);
	for (i = 1; i < nh; i++)
		if (strcmp(h[i - 1].key, h[i].key) == 0) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: metadata key '%s' given twice", w->label,
			    show(h[i].key, nb));
			goto out;
		}

	sb_add(&b, "\0\0\0\0\0\0\0\0", 8);
	sb_cstr(&b, "{\"__metadata__\":{");
	for (i = 0; i < nh; i++) {
		if (i > 0)
			sb_add(&b, ",", 1);
		sb_json(&b, h[i].key);
		sb_add(&b, ":", 1);
		if (h[i].value != NULL) {
			sb_json(&b, h[i].value);
			continue;
		}
		sb_add(&b, "\"", 1);
		w->t[h[i].tensor].hexpos = b.len;
		sb_add(&b, zeros, 16);
		sb_add(&b, "\"", 1);
	}
	sb_add(&b, "}", 1);
	for (i = 0; i < w->n; i++) {
		struct peftio_tensor_info *t = &w->t[i].info;

		sb_add(&b, ",", 1);
		sb_json(&b, t->name);
		sb_cstr(&b, ":{\"dtype\":\"");
		sb_cstr(&b, peftio_dtype_name(t->dtype));
		sb_cstr(&b, "\",\"shape\":[");
		for (k = 0; k < (size_t)t->ndim; k++) {
			if (k > 0)
				sb_add(&b, ",", 1);
			sb_u64(&b, t->shape[k]);
		}
		sb_cstr(&b, "],\"data_offsets\":[");
		sb_u64(&b, t->offset);
		sb_add(&b, ",", 1);
		sb_u64(&b, t->offset + t->nbytes);
		sb_cstr(&b, "]}");
	}
	sb_add(&b, "}", 1);
	while ((b.len - 8) % 8 != 0)
		sb_add(&b, " ", 1);
	if (b.oom)
		goto oom;
	if (b.len - 8 > MAX_HEADER) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: header of %zu bytes exceeds the limit of %llu bytes",
		    w->label, b.len - 8, MAX_HEADER);
		goto out;
	}
	put_le64((unsigned char *)b.p, (uint64_t)(b.len - 8));
	w->hdr = (unsigned char *)b.p;
	w->hdrlen = b.len;
	b.p = NULL;
	if (PEFTIO_ADD_OVERFLOW(w->datalen, (uint64_t)w->hdrlen, &off) ||
	    off > (uint64_t)INT64_MAX) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: file size overflows", w->label);
		goto out;
	}
	for (i = 0; i < w->n; i++)
		if (w->t[i].info.nbytes == 0) {
			w->t[i].done = 1;
			w->t[i].hash = XXH3_64bits(empty_data, 0);
		}
	w->laid_out = 1;
	goto out;
oom:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
	    w->label);
out:
	for (i = 0; i < nh; i++)
		free(h[i].key);
	free(h);
	free(b.p);
	return rc;
}

long
peftio_stw_find(const struct peftio_stw *w, const char *name)
{
	if (name == NULL)
		return -1;
	return nameidx_find(&w->ix, name, w_name_at, w);
}

size_t
peftio_stw_count(const struct peftio_stw *w)
{
	return w->n;
}

const struct peftio_tensor_info *
peftio_stw_tensor(const struct peftio_stw *w, size_t i)
{
	return i < w->n ? &w->t[i].info : NULL;
}

/*
 * Calls for different tensors may run in different threads; the calls
 * for one tensor must be serialized by the caller.
 */
int
peftio_stw_write(struct peftio_stw *w, size_t i, const void *buf,
    size_t len, struct peftio_error *err)
{
	char nb[SHOWBUF];
	struct wtensor *t;
	int rc;

	if (!w->laid_out || w->committed)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor data written %s", w->label,
		    w->committed ? "after commit" : "before the layout");
	if (i >= w->n)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor index %zu out of range (%zu tensors)",
		    w->label, i, w->n);
	t = &w->t[i];
	if (len > t->info.nbytes - t->written)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': %zu bytes written past its size of %"
		    PRIu64 " bytes", w->label, show(t->info.name, nb),
		    len - (size_t)(t->info.nbytes - t->written),
		    t->info.nbytes);
	if (len == 0)
		return 0;
	rc = peftio_outfile_pwrite(&w->of, buf, len,
	    w->hdrlen + t->info.offset + t->written, err);
	if (rc != 0) {
		__atomic_store_n(&w->failed, 1, __ATOMIC_RELAXED);
		return rc;
	}
	if (!(w->flags & PEFTIO_W_NOCHECKSUM)) {
		if (t->xx == NULL) {
			if ((t->xx = XXH3_createState()) == NULL)
				return peftio_error_set(err, PEFTIO_ENOMEM,
				    "%s: out of memory", w->label);
			XXH3_64bits_reset(t->xx);
		}
		XXH3_64bits_update(t->xx, buf, len);
	}
	t->written += len;
	if (t->written == t->info.nbytes) {
		if (t->xx != NULL) {
			t->hash = XXH3_64bits_digest(t->xx);
			XXH3_freeState(t->xx);
			t->xx = NULL;
		}
		t->done = 1;
	}
	return 0;
}

int
peftio_stw_commit(struct peftio_stw *w, struct peftio_error *err)
{
	char nb[SHOWBUF], hex[17];
	struct wtensor *t;
	size_t i;
	int rc;

	if (!w->laid_out || w->committed)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: commit %s", w->label,
		    w->committed ? "done twice" : "before the layout");
	if (__atomic_load_n(&w->failed, __ATOMIC_RELAXED)) {
		rc = peftio_error_set(err, PEFTIO_EIO,
		    "%s: not written: an earlier write failed", w->label);
		goto fail;
	}
	for (i = 0; i < w->n; i++) {
		t = &w->t[i];
		if (!t->done) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': only %" PRIu64 " of %" PRIu64
			    " bytes written", w->label, show(t->info.name, nb),
			    t->written, t->info.nbytes);
			goto fail;
		}
		if (t->hexpos != 0) {
			snprintf(hex, sizeof(hex), "%016" PRIx64, t->hash);
			memcpy(w->hdr + t->hexpos, hex, 16);
		}
	}
	if ((rc = peftio_outfile_pwrite(&w->of, w->hdr, w->hdrlen, 0,
	    err)) != 0)
		goto fail;
	w->committed = 1;
	return peftio_outfile_commit(&w->of, err);
fail:
	w->committed = 1;
	peftio_outfile_abort(&w->of);
	return rc;
}

uint64_t
peftio_stw_file_size(const struct peftio_stw *w)
{
	return w->laid_out ? w->hdrlen + w->datalen : 0;
}

void
peftio_stw_free(struct peftio_stw *w)
{
	size_t i;

	if (w == NULL)
		return;
	peftio_outfile_abort(&w->of);
	for (i = 0; i < w->n; i++) {
		free((char *)w->t[i].info.name);
		if (w->t[i].xx != NULL)
			XXH3_freeState(w->t[i].xx);
	}
	for (i = 0; i < w->nm; i++) {
		free(w->m[i].key);
		free(w->m[i].value);
	}
	free(w->t);
	free(w->m);
	free(w->ix.slot);
	free(w->hdr);
	free(w->label);
	free(w);
}
