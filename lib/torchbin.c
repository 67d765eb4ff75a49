/*
 * torchbin.c - a torch.save archive (pytorch_model.bin,
 * adapter_model.bin) read as a list of tensors, without running its
 * pickle (formats.md section 3).
 *
 * The archive is a zip (zip.c) whose members all sit in one directory,
 * "<archive>/", named after the file torch wrote; "<archive>/data.pkl"
 * is the pickled state dict (pickle.c) and "<archive>/data/<key>" the
 * bytes of the storage that a persistent id names.  A tensor is a view
 * of a storage: sizes, strides and an offset, in elements.
 *
 * Every view is checked before anything is read: sizes, strides and
 * offset are non-negative, the element count and size fit in 64 bits,
 * the last element lies inside the storage (as torch's
 * checkInBoundsForStorage requires), and the view has no more bytes
 * than its storage, which only overlapping views such as expand()
 * could have.  A storage's member must be exactly as large as the
 * pickle says.
 *
 * A contiguous view of a STORED member is served in place from the
 * file; any other view is gathered into a copy, and a DEFLATED member
 * is inflated while a tensor points into it.  Both are freed by
 * peftio_torchbin_release().  A STORED member's CRC is checked the
 * first time one of its tensors is read, a DEFLATED member's whenever
 * it is inflated.
 *
 * Tensors are listed in the state dict's order.  There is no data
 * section, so a tensor's offset is where it would start if the
 * tensors were packed back to back in that order.
 *
 * Refused: big-endian archives (torch would swap bytes; nothing here
 * does), a version outside 1 to 10 (torch's own range), members outside
 * the archive's directory, and the formats of torch before 1.6, which
 * peftio_sniff() (source.c) recognizes.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

#define PICKLE_MAX	(256u << 20)	/* bytes of data.pkl */
#define SMALL_MAX	64		/* bytes of version, byteorder */
#define VERSION_MIN	1
#define VERSION_MAX	10

static const unsigned char empty_data[1];

struct tb_storage {
	size_t		 member;	/* in the zip */
	uint64_t	 nbytes;
	const char	*key;
	const unsigned char *bytes;	/* NULL until read */
	unsigned char	*inflated;	/* bytes of a DEFLATED member */
	size_t		 users;		/* tensors pointing into inflated */
};

struct tb_tensor {
	struct peftio_tensor_info info;
	size_t		 storage;
	unsigned	 esize;		/* bytes per element */
	uint64_t	 start;		/* byte of the first element */
	uint64_t	 bstride[PEFTIO_MAX_DIMS];	/* in bytes */
	int		 contiguous;
	int		 held;		/* counted in the storage's users */
	unsigned char	*copy;		/* gathered bytes */
};

struct peftio_torchbin {
	char		*label;
	const unsigned char *buf;
	size_t		 len;
	int		 mapped;
	struct peftio_zip *zip;
	char		*prefix;	/* "<archive>/" */
	struct peftio_state_dict sd;
	struct tb_storage *s;
	size_t		 ns;
	struct tb_tensor *t;
	size_t		 nt;
	pthread_mutex_t	 lock;
	int		 lock_ok;
};

/* "[d0, d1, ...]" */
static const char *
fmt_dims(char *buf, size_t len, const int64_t *v, int n)
{
	size_t o = 0;
	int i;

	o += (size_t)snprintf(buf, len, "[");
	for (i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%" PRId64,
		    i > 0 ? ", " : "", v[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
	return buf;
}

/* The directory of the first member; every member must be inside it. */
static int
find_prefix(struct peftio_torchbin *tb, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF];
	const char *first, *slash, *name;
	size_t i, n = peftio_zip_count(tb->zip), plen;

	if (n == 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: the archive does not contain any files", tb->label);
	first = peftio_zip_member(tb->zip, 0)->name;
	if ((slash = strchr(first, '/')) == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: archive member '%s' is not in a directory, as "
		    "torch.save writes them", tb->label,
		    peftio_show(first, SIZE_MAX, nb));
	plen = (size_t)(slash - first) + 1;
	if ((tb->prefix = malloc(plen + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", tb->label);
	memcpy(tb->prefix, first, plen);
	tb->prefix[plen] = '\0';
	for (i = 1; i < n; i++) {
		name = peftio_zip_member(tb->zip, i)->name;
		if (strncmp(name, tb->prefix, plen) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: archive member '%s' is outside the archive's "
			    "directory '%s'", tb->label,
			    peftio_show(name, SIZE_MAX, nb), tb->prefix);
	}
	return 0;
}

/* Index of member <prefix><rest>, or -1. */
static long
find_member(const struct peftio_torchbin *tb, const char *rest,
    const char *key)
{
	size_t n = strlen(tb->prefix) + strlen(rest) +
	    (key != NULL ? strlen(key) : 0) + 1;
	char *name;
	long i;

	if ((name = malloc(n)) == NULL)
		return -2;
	snprintf(name, n, "%s%s%s", tb->prefix, rest, key != NULL ? key : "");
	i = peftio_zip_find(tb->zip, name);
	free(name);
	return i;
}

/* A small record (version, byteorder) as a NUL-terminated string;
 * *found is 0 when the archive lacks it. */
static int
read_small(struct peftio_torchbin *tb, const char *rest, char *out,
    int *found, struct peftio_error *err)
{
	const struct peftio_zip_member *m;
	const unsigned char *p;
	unsigned char *copy;
	long i;
	int rc;

	*found = 0;
	if ((i = find_member(tb, rest, NULL)) == -2)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", tb->label);
	if (i < 0)
		return 0;
	m = peftio_zip_member(tb->zip, (size_t)i);
	if (m->usize > SMALL_MAX)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: archive record '%s' is %" PRIu64 " bytes long",
		    tb->label, rest, m->usize);
	if ((rc = peftio_zip_read(tb->zip, (size_t)i, NULL, &p, &copy,
	    err)) != 0)
		return rc;
	memcpy(out, p, (size_t)m->usize);
	out[m->usize] = '\0';
	free(copy);
	*found = 1;
	return 0;
}

static int
check_records(struct peftio_torchbin *tb, struct peftio_error *err)
{
	char v[SMALL_MAX + 1], b[PEFTIO_SHOWBUF];
	const char *rest = "version";
	unsigned long ver = 0;
	size_t i;
	int found, rc;

	if ((rc = read_small(tb, "byteorder", v, &found, err)) != 0)
		return rc;
	if (found && strcmp(v, "big") == 0)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: a big-endian archive (byteorder \"big\") is not "
		    "supported", tb->label);
	if (found && strcmp(v, "little") != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: unknown byteorder \"%s\"", tb->label,
		    peftio_show(v, SIZE_MAX, b));

	if ((rc = read_small(tb, rest, v, &found, err)) != 0)
		return rc;
	if (!found) {
		rest = ".data/version";
		if ((rc = read_small(tb, rest, v, &found, err)) != 0)
			return rc;
	}
	if (!found)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: the archive has no version record", tb->label);
	/* Decimal digits, then at most a newline. */
	for (i = 0; v[i] >= '0' && v[i] <= '9' && ver <= VERSION_MAX; i++)
		ver = ver * 10 + (unsigned long)(v[i] - '0');
	if (i == 0 || (v[i] != '\0' && strcmp(v + i, "\n") != 0) ||
	    ver < VERSION_MIN || ver > VERSION_MAX)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: archive version \"%s\" is not supported (%d to %d "
		    "are)", tb->label, peftio_show(v, SIZE_MAX, b),
		    VERSION_MIN, VERSION_MAX);
	return 0;
}

static int
load_pickle(struct peftio_torchbin *tb, struct peftio_error *err)
{
	const struct peftio_zip_member *m;
	const unsigned char *p;
	unsigned char *copy;
	char *what;
	size_t n;
	long i;
	int rc;

	n = strlen(tb->prefix) + sizeof("data.pkl");
	if ((i = find_member(tb, "data.pkl", NULL)) == -2 ||
	    (what = malloc(n)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", tb->label);
	snprintf(what, n, "%sdata.pkl", tb->prefix);
	if (i < 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: the archive has no %s", tb->label, what);
		goto out;
	}
	m = peftio_zip_member(tb->zip, (size_t)i);
	if (m->usize > PICKLE_MAX) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: %s of %" PRIu64 " bytes is larger than the %u bytes "
		    "read", tb->label, what, m->usize, PICKLE_MAX);
		goto out;
	}
	if ((rc = peftio_zip_read(tb->zip, (size_t)i, NULL, &p, &copy,
	    err)) != 0)
		goto out;
	rc = peftio_pickle_load(&tb->sd, p, (size_t)m->usize, tb->label, what,
	    err);
	free(copy);
out:
	free(what);
	return rc;
}

/* Each storage of the pickle to its member, of exactly its size. */
static int
bind_storages(struct peftio_torchbin *tb, struct peftio_error *err)
{
	char kb[PEFTIO_SHOWBUF];
	const struct peftio_pickle_storage *ps;
	const struct peftio_zip_member *m;
	size_t i;
	long k;

	tb->ns = tb->sd.nstorage;
	if ((tb->s = calloc(tb->ns + 1, sizeof(*tb->s))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", tb->label);
	for (i = 0; i < tb->ns; i++) {
		ps = &tb->sd.storage[i];
		if ((k = find_member(tb, "data/", ps->key)) == -2)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", tb->label);
		if (k < 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: storage '%s' has no record %sdata/%s in the "
			    "archive", tb->label,
			    peftio_show(ps->key, SIZE_MAX, kb), tb->prefix,
			    peftio_show(ps->key, SIZE_MAX, kb));
		m = peftio_zip_member(tb->zip, (size_t)k);
		if (m->usize != ps->nbytes)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: storage '%s': record %s holds %" PRIu64
			    " bytes, the pickle says %" PRIu64, tb->label,
			    peftio_show(ps->key, SIZE_MAX, kb), m->name,
			    m->usize, ps->nbytes);
		tb->s[i].member = (size_t)k;
		tb->s[i].nbytes = ps->nbytes;
		tb->s[i].key = ps->key;
	}
	return 0;
}

/* Check the view of pickle tensor pt and fill t. */
static int
check_view(struct peftio_torchbin *tb, const struct peftio_pickle_tensor *pt,
    struct tb_tensor *t, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF], zb[16 * 22 + 4], sb[16 * 22 + 4];
	const struct tb_storage *s = &tb->s[pt->storage];
	const char *why = NULL;
	uint64_t numel = 1, last, end, want;
	unsigned bits = peftio_dtype_bits(pt->dtype);
	int d;

	t->info.name = pt->name;
	t->info.dtype = pt->dtype;
	t->info.ndim = pt->ndim;
	t->storage = pt->storage;
	t->esize = bits / 8;
	if (pt->offset < 0)
		why = "a negative storage offset";
	for (d = 0; d < pt->ndim && why == NULL; d++) {
		if (pt->size[d] < 0)
			why = "a negative size";
		else if (pt->stride[d] < 0)
			why = "a negative stride";
		else if (PEFTIO_MUL_OVERFLOW(numel, (uint64_t)pt->size[d],
		    &numel))
			why = "more than 2^64 elements";
		else
			t->info.shape[d] = (uint64_t)pt->size[d];
	}
	if (why == NULL && (bits == 0 || bits % 8 != 0 ||
	    PEFTIO_MUL_OVERFLOW(numel, (uint64_t)t->esize, &t->info.nbytes)))
		why = "a size in bytes beyond 2^64";
	if (why != NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' has %s (offset %" PRId64 ", size %s, "
		    "stride %s)", tb->label, peftio_show(pt->name, SIZE_MAX,
		    nb), why, pt->offset, fmt_dims(zb, sizeof(zb), pt->size,
		    pt->ndim), fmt_dims(sb, sizeof(sb), pt->stride, pt->ndim));
	t->info.numel = numel;
	t->contiguous = 1;
	if (numel == 0)
		return 0;		/* nothing to read, nothing to check */

	/* The last element, and the first byte past it. */
	last = (uint64_t)pt->offset;
	for (d = 0; d < pt->ndim; d++) {
		if (pt->size[d] == 1)
			continue;
		if (PEFTIO_MUL_OVERFLOW((uint64_t)(pt->size[d] - 1),
		    (uint64_t)pt->stride[d], &want) ||
		    PEFTIO_ADD_OVERFLOW(last, want, &last))
			break;
	}
	if (d < pt->ndim || PEFTIO_ADD_OVERFLOW(last, 1, &end) ||
	    PEFTIO_MUL_OVERFLOW(end, (uint64_t)t->esize, &end) ||
	    end > s->nbytes)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': view out of bounds for storage '%s' of %"
		    PRIu64 " bytes (offset %" PRId64 ", size %s, stride %s, %u "
		    "bytes per element)", tb->label,
		    peftio_show(pt->name, SIZE_MAX, nb), s->key, s->nbytes,
		    pt->offset, fmt_dims(zb, sizeof(zb), pt->size, pt->ndim),
		    fmt_dims(sb, sizeof(sb), pt->stride, pt->ndim), t->esize);
	/* Distinct elements cannot need more bytes than there are. */
	if (t->info.nbytes > s->nbytes)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': a view whose elements overlap (%"
		    PRIu64 " bytes from a storage of %" PRIu64 ") is not "
		    "supported", tb->label, peftio_show(pt->name, SIZE_MAX,
		    nb), t->info.nbytes, s->nbytes);

	/* Everything below is bounded by the storage's size. */
	t->start = (uint64_t)pt->offset * t->esize;
	want = 1;
	for (d = pt->ndim - 1; d >= 0; d--) {
		if (pt->size[d] == 1)
			continue;
		t->bstride[d] = (uint64_t)pt->stride[d] * t->esize;
		if ((uint64_t)pt->stride[d] != want)
			t->contiguous = 0;
		want *= (uint64_t)pt->size[d];
	}
	return 0;
}

static int
build_tensors(struct peftio_torchbin *tb, struct peftio_error *err)
{
	uint64_t off = 0;
	size_t i;
	int rc;

	tb->nt = tb->sd.ntensor;
	if ((tb->t = calloc(tb->nt + 1, sizeof(*tb->t))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", tb->label);
	for (i = 0; i < tb->nt; i++) {
		if ((rc = check_view(tb, &tb->sd.tensor[i], &tb->t[i],
		    err)) != 0)
			return rc;
		tb->t[i].info.offset = off;
		if (PEFTIO_ADD_OVERFLOW(off, tb->t[i].info.nbytes, &off))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: the tensors' sizes add up to more than 2^64 "
			    "bytes", tb->label);
	}
	return 0;
}

int
peftio_torchbin_open(struct peftio_torchbin **out, const void *buf,
    size_t len, int mapped, const char *label, struct peftio_error *err)
{
	struct peftio_torchbin *tb;
	int rc;

	*out = NULL;
	if ((tb = calloc(1, sizeof(*tb))) == NULL ||
	    (tb->label = strdup(label)) == NULL) {
		free(tb);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", label);
	}
	tb->buf = buf;
	tb->len = len;
	tb->mapped = mapped;
	if (pthread_mutex_init(&tb->lock, NULL) != 0) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: cannot create a mutex", label);
		goto fail;
	}
	tb->lock_ok = 1;
	if ((rc = peftio_zip_open(&tb->zip, buf, len, label, err)) != 0 ||
	    (rc = find_prefix(tb, err)) != 0 ||
	    (rc = check_records(tb, err)) != 0 ||
	    (rc = load_pickle(tb, err)) != 0 ||
	    (rc = bind_storages(tb, err)) != 0 ||
	    (rc = build_tensors(tb, err)) != 0)
		goto fail;
	*out = tb;
	return 0;
fail:
	peftio_torchbin_close(tb);
	return rc;
}

void
peftio_torchbin_close(struct peftio_torchbin *tb)
{
	size_t i;

	if (tb == NULL)
		return;
	for (i = 0; i < tb->nt; i++)
		free(tb->t[i].copy);
	for (i = 0; i < tb->ns; i++)
		free(tb->s[i].inflated);
	free(tb->t);
	free(tb->s);
	peftio_state_dict_free(&tb->sd);
	peftio_zip_close(tb->zip);
	if (tb->lock_ok)
		pthread_mutex_destroy(&tb->lock);
	free(tb->prefix);
	free(tb->label);
	free(tb);
}

size_t
peftio_torchbin_count(const struct peftio_torchbin *tb)
{
	return tb->nt;
}

const struct peftio_tensor_info *
peftio_torchbin_tensor(const struct peftio_torchbin *tb, size_t i)
{
	return i < tb->nt ? &tb->t[i].info : NULL;
}

/* Make storage s's bytes available (checking the CRC on the way). */
static int
storage_get(struct peftio_torchbin *tb, struct tb_storage *s,
    const struct tb_tensor *t, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF], ctx[PEFTIO_SHOWBUF + 16];

	if (s->bytes != NULL)
		return 0;
	snprintf(ctx, sizeof(ctx), "tensor '%s'",
	    peftio_show(t->info.name, SIZE_MAX, nb));
	return peftio_zip_read(tb->zip, s->member, ctx, &s->bytes,
	    &s->inflated, err);
}

/* Free an inflated storage no tensor points into. */
static void
storage_put(struct tb_storage *s)
{
	if (s->inflated != NULL && s->users == 0) {
		free(s->inflated);
		s->inflated = NULL;
		s->bytes = NULL;
	}
}

/* n elements of size es, bstride bytes apart, to consecutive bytes. */
static unsigned char *
copy_run(unsigned char *out, const unsigned char *in, uint64_t n,
    uint64_t bstride, unsigned es)
{
	uint64_t k;

	if (bstride == es) {
		memcpy(out, in, (size_t)(n * es));
		return out + n * es;
	}
	/* Constant sizes let the compiler turn memcpy into moves. */
	switch (es) {
	case 1:
		for (k = 0; k < n; k++)
			out[k] = in[k * bstride];
		break;
	case 2:
		for (k = 0; k < n; k++)
			memcpy(out + 2 * k, in + k * bstride, 2);
		break;
	case 4:
		for (k = 0; k < n; k++)
			memcpy(out + 4 * k, in + k * bstride, 4);
		break;
	case 8:
		for (k = 0; k < n; k++)
			memcpy(out + 8 * k, in + k * bstride, 8);
		break;
	default:
		for (k = 0; k < n; k++)
			memcpy(out + es * k, in + k * bstride, es);
		break;
	}
	return out + n * es;
}

/* The elements of view t, in row-major order, into out. */
static void
gather(const struct tb_tensor *t, const unsigned char *storage,
    unsigned char *out)
{
	uint64_t idx[PEFTIO_MAX_DIMS] = { 0 }, pos = t->start;
	int d, inner = t->info.ndim - 1;

	/* A non-contiguous view has at least one dimension. */
	for (;;) {
		out = copy_run(out, storage + pos, t->info.shape[inner],
		    t->bstride[inner], t->esize);
		for (d = inner - 1; d >= 0; d--) {
			if (++idx[d] < t->info.shape[d]) {
				pos += t->bstride[d];
				break;
			}
			pos -= (t->info.shape[d] - 1) * t->bstride[d];
			idx[d] = 0;
		}
		if (d < 0)
			return;
	}
}

int
peftio_torchbin_data(struct peftio_torchbin *tb, size_t i,
    const void **data, struct peftio_error *err)
{
	char nb[PEFTIO_SHOWBUF];
	struct tb_tensor *t;
	struct tb_storage *s;
	int rc = 0;

	if (i >= tb->nt)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor index %zu out of range (%zu tensors)",
		    tb->label, i, tb->nt);
	t = &tb->t[i];
	s = &tb->s[t->storage];
	if (t->info.nbytes == 0) {
		*data = empty_data;
		return 0;
	}
	pthread_mutex_lock(&tb->lock);
	if (t->copy != NULL) {
		*data = t->copy;
		goto out;
	}
	if ((rc = storage_get(tb, s, t, err)) != 0)
		goto out;
	if (t->contiguous) {
		*data = s->bytes + t->start;
		if (s->inflated != NULL && !t->held) {
			t->held = 1;
			s->users++;
		}
		goto out;
	}
	if (t->info.nbytes > SIZE_MAX ||
	    (t->copy = malloc((size_t)t->info.nbytes)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: tensor '%s': out of memory for %" PRIu64 " bytes",
		    tb->label, peftio_show(t->info.name, SIZE_MAX, nb),
		    t->info.nbytes);
		storage_put(s);
		goto out;
	}
	gather(t, s->bytes, t->copy);
	storage_put(s);
	*data = t->copy;
out:
	pthread_mutex_unlock(&tb->lock);
	return rc;
}

void
peftio_torchbin_release(struct peftio_torchbin *tb, size_t i)
{
	struct tb_tensor *t;
	struct tb_storage *s;

	if (i >= tb->nt)
		return;
	t = &tb->t[i];
	s = &tb->s[t->storage];
	pthread_mutex_lock(&tb->lock);
	free(t->copy);
	t->copy = NULL;
	if (t->held) {
		t->held = 0;
		s->users--;
		storage_put(s);
	} else if (tb->mapped && t->contiguous && s->bytes != NULL &&
	    s->inflated == NULL)
		peftio_drop_pages(s->bytes + t->start, t->info.nbytes);
	pthread_mutex_unlock(&tb->lock);
}
