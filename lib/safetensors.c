/*
 * safetensors.c - the safetensors header: length, UTF-8, JSON, tensor
 * entries and offsets checked as the reference does.  The reader that
 * serves a file's tensors is reader.c; the writer, st_write.c.
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
 * (pytorch_model.bin): reader.c hands it to torchbin.c instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"
#include "reader_private.h"

#define MAX_DEPTH	127

const unsigned char peftio_st_empty[1];

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

/* A tensor while the header is checked. */
struct pre {
	struct peftio_tensor_info info;
	uint64_t	 end;
	size_t		 order;
};

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
	char nb[PEFTIO_SHOWBUF];
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
			    "string", st->label, peftio_show(key, SIZE_MAX, nb));
		if (strlen(json_string_value(v)) != json_string_length(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: __metadata__ entry '%s': value contains NUL",
			    st->label, peftio_show(key, SIZE_MAX, nb));
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
	char nb[PEFTIO_SHOWBUF];
	json_t *dt, *shape, *offs;
	size_t i, rank;
	int d;

	if (strlen(name) > PEFTIO_MAX_NAME)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': name of %zu bytes exceeds the limit of "
		    "%d bytes", label, peftio_show(name, SIZE_MAX, nb), strlen(name),
		    PEFTIO_MAX_NAME);
	if (!json_is_object(v))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': entry is not an object", label,
		    peftio_show(name, SIZE_MAX, nb));
	dt = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offs = json_object_get(v, "data_offsets");
	if (dt == NULL || json_is_null(dt))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'dtype'", label,
		    peftio_show(name, SIZE_MAX, nb));
	if (shape == NULL || json_is_null(shape))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'shape'", label,
		    peftio_show(name, SIZE_MAX, nb));
	if (offs == NULL || json_is_null(offs))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': missing field 'data_offsets'", label,
		    peftio_show(name, SIZE_MAX, nb));
	if (!json_is_string(dt))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': dtype is not a string", label,
		    peftio_show(name, SIZE_MAX, nb));
	d = peftio_dtype_parse(json_string_value(dt), json_string_length(dt));
	if (d < 0) {
		char db[PEFTIO_SHOWBUF];

		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': unknown dtype '%s'", label,
		    peftio_show(name, SIZE_MAX, nb), peftio_show(json_string_value(dt), SIZE_MAX, db));
	}
	if (!json_is_array(shape))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': shape is not an array", label,
		    peftio_show(name, SIZE_MAX, nb));
	rank = json_array_size(shape);
	if (rank > PEFTIO_MAX_DIMS)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': rank %zu exceeds the limit of %d", label,
		    peftio_show(name, SIZE_MAX, nb), rank, PEFTIO_MAX_DIMS);
	for (i = 0; i < rank; i++)
		if (json_u64(json_array_get(shape, i), &p->info.shape[i]) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': shape[%zu] is not a non-negative "
			    "integer", label, peftio_show(name, SIZE_MAX, nb), i);
	if (!json_is_array(offs))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets is not an array", label,
		    peftio_show(name, SIZE_MAX, nb));
	if (json_array_size(offs) != 2)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets has %zu elements, not 2",
		    label, peftio_show(name, SIZE_MAX, nb), json_array_size(offs));
	for (i = 0; i < 2; i++)
		if (json_u64(json_array_get(offs, i),
		    i == 0 ? &p->info.offset : &p->end) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': data_offsets[%zu] is not a "
			    "non-negative integer", label, peftio_show(name, SIZE_MAX, nb), i);
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
	char nb[PEFTIO_SHOWBUF];
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
					    peftio_show(key, SIZE_MAX, nb), fields[f], i);
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
	char nb[PEFTIO_SHOWBUF], sb[16 * 22 + 4];
	uint64_t numel = 1, bits;
	int i;

	if (t->offset != start)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "do not start where the previous tensor ends (%" PRIu64
		    ")", label, peftio_show(t->name, SIZE_MAX, nb), t->offset, p->end, start);
	if (p->end < t->offset)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "end before they begin", label, peftio_show(t->name, SIZE_MAX, nb),
		    t->offset, p->end);
	for (i = 0; i < t->ndim; i++)
		if (PEFTIO_MUL_OVERFLOW(numel, t->shape[i], &numel))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': element count of shape %s "
			    "overflows 64 bits", label, peftio_show(t->name, SIZE_MAX, nb),
			    peftio_fmt_shape(sb, sizeof(sb), t->shape, t->ndim));
	if (PEFTIO_MUL_OVERFLOW(numel, (uint64_t)peftio_dtype_bits(t->dtype),
	    &bits))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': size in bits of shape %s x %s overflows "
		    "64 bits", label, peftio_show(t->name, SIZE_MAX, nb),
		    peftio_fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
		    peftio_dtype_name(t->dtype));
	if (bits % 8 != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': shape %s x %s is not a whole number of "
		    "bytes (%" PRIu64 " bits)", label, peftio_show(t->name, SIZE_MAX, nb),
		    peftio_fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
		    peftio_dtype_name(t->dtype), bits);
	t->numel = numel;
	t->nbytes = bits / 8;
	if (p->end - t->offset != t->nbytes)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] "
		    "do not match shape %s x %s (%" PRIu64 " bytes)", label,
		    peftio_show(t->name, SIZE_MAX, nb), t->offset, p->end,
		    peftio_fmt_shape(sb, sizeof(sb), t->shape, t->ndim),
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
	char raw[PEFTIO_SHOW_MAX + 2];
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
	/* One byte more than peftio_show() keeps, so that it marks a cut. */
	len = PEFTIO_MIN(end - i - 1, (size_t)PEFTIO_SHOW_MAX + 1);
	memcpy(raw, hdr + i + 1, len);
	raw[len] = '\0';
	return peftio_show(raw, SIZE_MAX, buf);
}

/*
 * Steps 4 to 7 on the n header bytes.  Fills the tensor list and the
 * metadata of st and sets *datalen to the size the data section must
 * have.
 */
int
peftio_st_parse_header(struct peftio_st *st, const unsigned char *hdr, size_t n,
    uint64_t *datalen, struct peftio_error *err)
{
	char msg[PEFTIO_SHOWBUF], nb[PEFTIO_SHOWBUF];
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
		/* the parser's message, made one printable line */
		peftio_show(je.text, SIZE_MAX, msg);
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
	if (peftio_nameidx_build(&st->ix, st->n, peftio_st_name_at, st) != 0)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    st->label);
out:
	free(pre);
	json_decref(root);
	return rc;
}

/* Steps 2 and 3 on the 8-byte prefix; avail is what follows it. */
int
peftio_st_check_length(const char *label, uint64_t n, uint64_t avail, int stream,
    struct peftio_error *err)
{
	if (n > PEFTIO_ST_MAX_HEADER)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: header length %" PRIu64 " exceeds the limit of %llu "
		    "bytes", label, n, PEFTIO_ST_MAX_HEADER);
	if (!stream && n > avail)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: header length %" PRIu64 " runs past the end of the "
		    "file (%" PRIu64 " bytes after the length)", label, n,
		    avail);
	return 0;
}

int
peftio_st_check_total(const char *label, uint64_t n, uint64_t datalen, uint64_t size,
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
