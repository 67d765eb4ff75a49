/*
 * st_write.c - a safetensors file written as the reference writes it:
 * tensors declared first, laid out in its order (dtype descending, then
 * name), written in any order and in pieces, checksummed (XXH3 per
 * tensor in __metadata__), renamed into place on commit.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "peftio_private.h"
#include "reader_private.h"

static void
put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

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
	struct peftio_nameidx	 ix;
	int		 laid_out, committed, failed;
	unsigned char	*hdr;		/* 8-byte N, then header */
	size_t		 hdrlen;	/* 8 + N */
	uint64_t	 datalen;
};

static void
sb_u64(struct peftio_sbuf *b, uint64_t v)
{
	char t[24];

	snprintf(t, sizeof(t), "%" PRIu64, v);
	peftio_sb_str(b, t);
}

/* A JSON string as serde_json writes it. */
static void
sb_json(struct peftio_sbuf *b, const char *s)
{
	peftio_sb_json(b, s, strlen(s), 0);
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
	w->of.dfd = -1;
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
	char nb[PEFTIO_SHOWBUF];
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
		    peftio_show(key, SIZE_MAX, nb));
	if (strncmp(key, "xxh3.", 5) == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: metadata key '%s': the xxh3. keys are computed by "
		    "the writer", w->label, peftio_show(key, SIZE_MAX, nb));
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
	char nb[PEFTIO_SHOWBUF], sb[16 * 22 + 4];
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
		    peftio_show(name, SIZE_MAX, nb), PEFTIO_MAX_NAME);
	if (peftio_utf8_valid((const unsigned char *)name, len) != len)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': name is not valid UTF-8", w->label,
		    peftio_show(name, SIZE_MAX, nb));
	if (strcmp(name, "__metadata__") == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: '__metadata__' cannot name a tensor", w->label);
	if (peftio_dtype_name(dt) == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': invalid dtype %d", w->label,
		    peftio_show(name, SIZE_MAX, nb), (int)dt);
	if (ndim < 0 || ndim > PEFTIO_MAX_DIMS || (ndim > 0 && shape == NULL))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': invalid rank %d", w->label,
		    peftio_show(name, SIZE_MAX, nb), ndim);
	for (i = 0; i < ndim; i++)
		if (PEFTIO_MUL_OVERFLOW(numel, shape[i], &numel))
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': element count of shape %s "
			    "overflows 64 bits", w->label, peftio_show(name, SIZE_MAX, nb),
			    peftio_fmt_shape(sb, sizeof(sb), shape, ndim));
	if (peftio_dtype_nbytes(dt, numel, &nbytes) != 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': shape %s x %s is not a whole number of "
		    "bytes or overflows", w->label, peftio_show(name, SIZE_MAX, nb),
		    peftio_fmt_shape(sb, sizeof(sb), shape, ndim),
		    peftio_dtype_name(dt));
	if (peftio_nameidx_find(&w->ix, name, w_name_at, w) >= 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' declared twice", w->label, peftio_show(name, SIZE_MAX, nb));
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
		if (peftio_nameidx_build(&w->ix, w->n, w_name_at, w) != 0)
			goto oom;
	} else
		peftio_nameidx_put(&w->ix, w->n - 1, name);
	return 0;
oom:
	w->n--;
	free((char *)t->info.name);
	peftio_nameidx_build(&w->ix, w->n, w_name_at, w);
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
	char nb[PEFTIO_SHOWBUF];
	struct hent *h = NULL;
	struct peftio_sbuf b = { 0 };
	size_t nh = 0, i, k, len;
	uint64_t off = 0;
	int rc = 0, own_format = 0, sum = !(w->flags & PEFTIO_W_NOCHECKSUM);

	if (w->laid_out)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: layout done twice", w->label);
	if (w->n > 1)
		qsort(w->t, w->n, sizeof(*w->t), wt_cmp);
	if (peftio_nameidx_build(&w->ix, w->n, w_name_at, w) != 0)
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
			    peftio_show(h[i].key, SIZE_MAX, nb));
			goto out;
		}

	peftio_sb_add(&b, "\0\0\0\0\0\0\0\0", 8);
	peftio_sb_str(&b, "{\"__metadata__\":{");
	for (i = 0; i < nh; i++) {
		if (i > 0)
			peftio_sb_add(&b, ",", 1);
		sb_json(&b, h[i].key);
		peftio_sb_add(&b, ":", 1);
		if (h[i].value != NULL) {
			sb_json(&b, h[i].value);
			continue;
		}
		peftio_sb_add(&b, "\"", 1);
		w->t[h[i].tensor].hexpos = b.len;
		peftio_sb_add(&b, zeros, 16);
		peftio_sb_add(&b, "\"", 1);
	}
	peftio_sb_add(&b, "}", 1);
	for (i = 0; i < w->n; i++) {
		struct peftio_tensor_info *t = &w->t[i].info;

		peftio_sb_add(&b, ",", 1);
		sb_json(&b, t->name);
		peftio_sb_str(&b, ":{\"dtype\":\"");
		peftio_sb_str(&b, peftio_dtype_name(t->dtype));
		peftio_sb_str(&b, "\",\"shape\":[");
		for (k = 0; k < (size_t)t->ndim; k++) {
			if (k > 0)
				peftio_sb_add(&b, ",", 1);
			sb_u64(&b, t->shape[k]);
		}
		peftio_sb_str(&b, "],\"data_offsets\":[");
		sb_u64(&b, t->offset);
		peftio_sb_add(&b, ",", 1);
		sb_u64(&b, t->offset + t->nbytes);
		peftio_sb_str(&b, "]}");
	}
	peftio_sb_add(&b, "}", 1);
	while ((b.len - 8) % 8 != 0)
		peftio_sb_add(&b, " ", 1);
	if (b.oom)
		goto oom;
	if (b.len - 8 > PEFTIO_ST_MAX_HEADER) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: header of %zu bytes exceeds the limit of %llu bytes",
		    w->label, b.len - 8, PEFTIO_ST_MAX_HEADER);
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
			w->t[i].hash = XXH3_64bits(peftio_st_empty, 0);
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
	return peftio_nameidx_find(&w->ix, name, w_name_at, w);
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
	char nb[PEFTIO_SHOWBUF];
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
		    PRIu64 " bytes", w->label, peftio_show(t->info.name, SIZE_MAX, nb),
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

uint64_t
peftio_stw_start(const struct peftio_stw *w, size_t i)
{
	if (!w->laid_out || i >= w->n)
		return 0;
	return w->hdrlen + w->t[i].info.offset;
}

int
peftio_stw_commit(struct peftio_stw *w, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF], hex[17];
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
			    " bytes written", w->label, peftio_show(t->info.name, SIZE_MAX, nb),
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
