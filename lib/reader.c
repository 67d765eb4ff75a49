/*
 * reader.c - one checkpoint file as a list of named tensors: a
 * safetensors file (header checked by safetensors.c) or a torch.save
 * archive (torchbin.c), from a regular file (mapped), a pipe (spooled
 * to an anonymous file) or memory.  source.c does the opening,
 * mapping, spooling and format sniffing.
 */
#include <sys/mman.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "reader_private.h"

#define COPY_BUF	(4u << 20)
#define SNIFF_LEN	512		/* bytes read to tell formats apart */

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
	st->data = peftio_st_empty;
	st->fd = -1;
	return st;
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
	if (peftio_nameidx_build(&st->ix, st->n, peftio_st_name_at, st) != 0)
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
	if ((rc = peftio_sniff(buf, len, label, err)) != 0) {
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
	n = peftio_le64(p);
	if ((rc = peftio_st_check_length(label, n, len - 8, 0, err)) != 0)
		goto fail;
	if ((rc = peftio_st_parse_header(st, p + 8, (size_t)n, &datalen, err)) != 0)
		goto fail;
	if ((rc = peftio_st_check_total(label, n, datalen, len, err)) != 0)
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
	st->map = peftio_src_map(fd, 0, st->maplen);
	if (st->map == NULL) {
		return peftio_error_sys(err, "%s: mmap", st->label);
	}
	return open_torchbin(st, st->map, st->maplen, 1, err);
}

static int
open_regular(struct peftio_st *st, int fd, uint64_t size,
    struct peftio_error *err)
{
	unsigned char pfx[SNIFF_LEN] = { 0 }, *hdr = NULL;
	uint64_t n, datalen, start;
	size_t want = size < SNIFF_LEN ? (size_t)size : SNIFF_LEN;
	long page;
	int rc;

	if (want > 0 && (rc = peftio_src_pread(fd, pfx, want, 0)) != 0)
		return rc < 0 ? peftio_error_sys(err, "%s: read error",
		    st->label) : peftio_error_set(err, PEFTIO_EIO,
		    "%s: file shrank while being read", st->label);
	if ((rc = peftio_sniff(pfx, want, st->label, err)) != 0)
		return rc < 0 ? rc : open_zip_file(st, fd, size, err);
	if (size < 8) {
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %" PRIu64 " bytes is too small for a safetensors "
		    "file", st->label, size);
	}
	n = peftio_le64(pfx);
	if ((rc = peftio_st_check_length(st->label, n, size - 8, 0, err)) != 0)
		return rc;
	if ((hdr = malloc(n + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", st->label);
	if ((rc = peftio_src_pread(fd, hdr, (size_t)n, 8)) != 0) {
		rc = rc < 0 ? peftio_error_sys(err, "%s: read error",
		    st->label) : peftio_error_set(err, PEFTIO_EIO,
		    "%s: file shrank while being read", st->label);
		free(hdr);
		return rc;
	}
	rc = peftio_st_parse_header(st, hdr, (size_t)n, &datalen, err);
	free(hdr);
	if (rc != 0 || (rc = peftio_st_check_total(st->label, n, datalen, size, err)))
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
	st->map = peftio_src_map(fd, start, st->maplen);
	if (st->map == NULL) {
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
	int rc;

	if ((rc = peftio_src_spool(fd, sp, buf, len, max, got)) == 0)
		return 0;
	return peftio_error_sys(err, rc == -1 ? "%s: read error" :
	    "%s: spool file", st->label);
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
	st->map = peftio_src_map(sp, 0, st->maplen);
	if (st->map == NULL) {
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

/*
 * The data section of a stream, after its header: spooled to sp by a
 * thread while the caller goes on (ftruncate'd to its size and mapped
 * at once; peftio_st_data() and peftio_st_read() wait for the bytes
 * they need).
 */
static int
open_stream_bg(struct peftio_st *st, int fd, int sp, uint64_t datalen,
    struct peftio_error *err)
{
	int in;

	if (ftruncate(sp, (off_t)datalen) != 0)
		return peftio_error_sys(err, "%s: spool file", st->label);
	st->maplen = (size_t)datalen;
	st->map = peftio_src_map(sp, 0, st->maplen);
	if (st->map == NULL)
		return peftio_error_sys(err, "%s: mmap of the spool file",
		    st->label);
	st->data = st->map;
	st->datalen = datalen;
	st->fdoff = 0;
	if (keep_fd(st, sp, err) != 0)
		return err->code;
	if ((in = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return peftio_error_sys(err, "%s", st->label);
	return peftio_spool_start(&st->bg, in, st->fd, datalen, st->label,
	    err);
}

/* Read a pipe: header in memory, data section spooled to a file (in
 * the background with bg). */
static int
open_stream(struct peftio_st *st, int fd, int bg, struct peftio_error *err)
{
	unsigned char pfx[8], *hdr = NULL, *nh, *buf = NULL;
	uint64_t n, datalen, got;
	size_t cap = 0, have = 0;
	long long r;
	int rc, sp = -1;

	if ((r = peftio_read_all(fd, pfx, 8)) < 0)
		return peftio_error_sys(err, "%s: read error", st->label);
	if ((rc = peftio_sniff(pfx, (size_t)r, st->label, err)) != 0)
		return rc < 0 ? rc : open_stream_zip(st, fd, pfx, (size_t)r,
		    err);
	if (r < 8)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %lld bytes is too small for a safetensors file",
		    st->label, r);
	n = peftio_le64(pfx);
	if ((rc = peftio_st_check_length(st->label, n, 0, 1, err)) != 0)
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
	if ((rc = peftio_st_parse_header(st, hdr != NULL ? hdr : peftio_st_empty,
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
	if (bg && datalen > 0) {
		rc = open_stream_bg(st, fd, sp, datalen, err);
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
		st->map = peftio_src_map(sp, 0, st->maplen);
		if (st->map == NULL) {
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
	return peftio_st_open_bg(out, path, 0, err);
}

int
peftio_st_open_bg(struct peftio_st **out, const char *path, int bg,
    struct peftio_error *err)
{
	struct peftio_st *st;
	uint64_t size;
	int fd, rc, is_stdin, regular;

	*out = NULL;
	if (path == NULL || *path == '\0')
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "empty input file name");
	is_stdin = strcmp(path, "-") == 0;
	if ((st = st_new(path, is_stdin ? "<stdin>" : path)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", path);
	if ((rc = peftio_src_open(path, st->label, &fd, &regular, &size,
	    err)) != 0)
		goto fail;
	if (regular)
		rc = open_regular(st, fd, size, err);
	else
		rc = open_stream(st, fd, bg, err);
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
	peftio_spool_free(st->bg);
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
	return peftio_nameidx_find(&st->ix, name, peftio_st_name_at, st);
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

/* The data section of a stream up to end has arrived (and, when that
 * is its end, nothing follows it). */
static int
wait_bytes(struct peftio_st *st, uint64_t end, struct peftio_error *err)
{
	return peftio_spool_wait(st->bg, end, end == st->datalen, err);
}

int
peftio_st_complete(struct peftio_st *st, struct peftio_error *err)
{
	return st->bg != NULL ? wait_bytes(st, st->datalen, err) : 0;
}

int
peftio_st_data(struct peftio_st *st, size_t i, const void **data,
    struct peftio_error *err)
{
	int rc;

	if (i >= st->n)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor index %zu out of range (%zu tensors)",
		    st->label, i, st->n);
	if (st->tb != NULL)
		return peftio_torchbin_data(st->tb, i, data, err);
	if (st->bg != NULL && (rc = wait_bytes(st, st->t[i].offset +
	    st->t[i].nbytes, err)) != 0)
		return rc;
	*data = st->data + st->t[i].offset;
	return 0;
}

int
peftio_st_view(struct peftio_st *st, size_t i, const void **data,
    struct peftio_error *err)
{
	if (i >= st->n || st->tb != NULL || st->map == NULL)
		return 1;
	return peftio_st_data(st, i, data, err);
}

int
peftio_st_read(struct peftio_st *st, size_t i, uint64_t off, void *buf,
    size_t len, struct peftio_error *err)
{
	const struct peftio_tensor_info *t;
	int rc;

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

		if ((rc = peftio_st_data(st, i, &data, err)) != 0)
			return rc;
		memcpy(buf, (const unsigned char *)data + off, len);
		return 0;
	}
	if (st->bg != NULL && (rc = wait_bytes(st, t->offset + off + len,
	    err)) != 0)
		return rc;
	if ((rc = peftio_src_pread(st->fd, buf, len, st->fdoff + t->offset +
	    off)) != 0)
		return rc < 0 ? peftio_error_sys(err,
		    "%s: tensor '%s': read error", st->label,
		    t->name) : peftio_error_set(err, PEFTIO_EIO,
		    "%s: tensor '%s': file shrank while being read",
		    st->label, t->name);
	return 0;
}

/* Linux reads at most its readahead window per POSIX_FADV_WILLNEED. */
#define PREFETCH_STEP	(4u << 20)

void
peftio_st_prefetch(struct peftio_st *st, size_t i)
{
	uint64_t off, end;

	if (i >= st->n || st->fd < 0 || st->bg != NULL || st->tb != NULL)
		return;
	off = st->fdoff + st->t[i].offset;
	end = off + st->t[i].nbytes;
	for (; off < end; off += PREFETCH_STEP)
		(void)posix_fadvise(st->fd, (off_t)off, (off_t)PEFTIO_MIN(
		    (uint64_t)PREFETCH_STEP, end - off), POSIX_FADV_WILLNEED);
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
