/*
 * check_torchbin.c - torch.save archives (.bin): the fixtures of
 * tests/data/torchbin against their safetensors twins, and the
 * malformed inputs of formats.md section 4.3, built here from a small
 * zip writer and pickle assembler.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "peftio.h"
#include "testutil.h"

#define TB	TEST_DATA "/torchbin"
#define LABEL	"case.bin"

/* ------------------------------------------------------------------ */
/* Bytes                                                               */

struct buf {
	unsigned char	*p;
	size_t		 len, cap;
};

static void
put(struct buf *b, const void *s, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = 2 * (b->len + n) + 64;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void
put_le(struct buf *b, uint64_t v, int n)
{
	unsigned char c[8];
	int i;

	for (i = 0; i < n; i++)
		c[i] = (unsigned char)(v >> (8 * i));
	put(b, c, (size_t)n);
}

static void
put8(struct buf *b, unsigned v)
{
	put_le(b, v, 1);
}

static void
puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void
set_le(unsigned char *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* A copy of exactly len bytes, so that reading past it is caught. */
static unsigned char *
exact(const void *p, size_t len)
{
	unsigned char *q = malloc(len > 0 ? len : 1);

	ck_assert_ptr_nonnull(q);
	if (len > 0)
		memcpy(q, p, len);
	return q;
}

/* ------------------------------------------------------------------ */
/* Pickle assembler                                                    */

static void
pk_str(struct buf *b, const char *s)
{
	put8(b, 'X');
	put_le(b, strlen(s), 4);
	puts_(b, s);
}

static void
pk_int(struct buf *b, int64_t v)
{
	if (v >= 0 && v < 256) {
		put8(b, 'K');
		put8(b, (unsigned)v);
	} else if (v >= 0 && v < 65536) {
		put8(b, 'M');
		put_le(b, (uint64_t)v, 2);
	} else if (v >= INT32_MIN && v <= INT32_MAX) {
		put8(b, 'J');
		put_le(b, (uint64_t)v, 4);
	} else {
		put8(b, 0x8a);
		put8(b, 8);
		put_le(b, (uint64_t)v, 8);
	}
}

static void
pk_global(struct buf *b, const char *mod, const char *name)
{
	put8(b, 'c');
	puts_(b, mod);
	put8(b, '\n');
	puts_(b, name);
	put8(b, '\n');
}

static void
pk_ints(struct buf *b, const int64_t *v, int n)
{
	int i;

	put8(b, '(');
	for (i = 0; i < n; i++)
		pk_int(b, v[i]);
	put8(b, 't');
}

/* OrderedDict() */
static void
pk_odict(struct buf *b)
{
	pk_global(b, "collections", "OrderedDict");
	put8(b, ')');
	put8(b, 'R');
}

/* BINPERSID of ('storage', torch.<cls>, key, 'cpu', numel) */
static void
pk_storage(struct buf *b, const char *cls, const char *key, int64_t numel)
{
	put8(b, '(');
	pk_str(b, "storage");
	pk_global(b, "torch", cls);
	pk_str(b, key);
	pk_str(b, "cpu");
	pk_int(b, numel);
	put8(b, 't');
	put8(b, 'Q');
}

struct view {
	const char	*cls;		/* storage class */
	const char	*key;
	int64_t		 numel;		/* of the storage */
	int64_t		 offset;
	int		 ndim;
	int64_t		 size[17];
	int64_t		 stride[17];
};

/* _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) */
static void
pk_tensor(struct buf *b, const struct view *v)
{
	pk_global(b, "torch._utils", "_rebuild_tensor_v2");
	put8(b, '(');
	pk_storage(b, v->cls, v->key, v->numel);
	pk_int(b, v->offset);
	pk_ints(b, v->size, v->ndim);
	pk_ints(b, v->stride, v->ndim);
	put8(b, 0x89);
	pk_odict(b);
	put8(b, 't');
	put8(b, 'R');
}

/* PROTO 2, OrderedDict(), MARK ... SETITEMS, STOP */
static void
pk_begin(struct buf *b)
{
	put8(b, 0x80);
	put8(b, 2);
	pk_odict(b);
	put8(b, '(');
}

static void
pk_end(struct buf *b)
{
	put8(b, 'u');
	put8(b, '.');
}

/* The usual tensor: 2 x 3 floats over storage "0" of 6. */
#define V_OK	{ "FloatStorage", "0", 6, 0, 2, { 2, 3 }, { 3, 1 } }

/* {"w": view} */
static void
pk_one(struct buf *b, const struct view *v)
{
	pk_begin(b);
	pk_str(b, "w");
	pk_tensor(b, v);
	pk_end(b);
}

/* ------------------------------------------------------------------ */
/* Zip writer                                                          */

struct member {
	const char	*name;
	const void	*data;
	size_t		 len;
	int		 deflate;
	size_t		 claim;		/* usize to declare, if not 0 */
	size_t		 pad;		/* junk bytes after the deflate data */
};

#define Z_ZIP64		0x1	/* ZIP64 extra fields and end records */

static void
deflate_raw(const void *in, size_t len, struct buf *out)
{
	unsigned char tmp[65536];
	z_stream zs;

	memset(&zs, 0, sizeof(zs));
	ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8,
	    Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = (unsigned char *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	do {
		zs.next_out = tmp;
		zs.avail_out = sizeof(tmp);
		ck_assert_int_ne(deflate(&zs, Z_FINISH), Z_STREAM_ERROR);
		put(out, tmp, sizeof(tmp) - zs.avail_out);
	} while (zs.avail_out == 0);
	deflateEnd(&zs);
}

/*
 * A zip of the n members.  *offs, if not NULL, gets each member's data
 * offset, *cdoff the central directory's.
 */
static unsigned char *
mkzip(const struct member *m, size_t n, unsigned flags, size_t *len,
    size_t *offs, size_t *cdoff)
{
	struct buf b = { 0 }, cd = { 0 }, z;
	size_t i, lho, start, usize;
	int z64 = (flags & Z_ZIP64) != 0;
	uint32_t crc;

	for (i = 0; i < n; i++) {
		memset(&z, 0, sizeof(z));
		if (m[i].deflate) {
			deflate_raw(m[i].data, m[i].len, &z);
			for (start = 0; start < m[i].pad; start++)
				put8(&z, 0xa5);
		} else
			put(&z, m[i].data, m[i].len);
		usize = m[i].claim != 0 ? m[i].claim : m[i].len;
		crc = (uint32_t)crc32(0, m[i].data, (uInt)m[i].len);
		lho = b.len;
		put_le(&b, 0x04034b50, 4);
		put_le(&b, 20, 2);
		put_le(&b, 0, 2);
		put_le(&b, m[i].deflate ? 8 : 0, 2);
		put_le(&b, 0, 4);
		put_le(&b, crc, 4);
		put_le(&b, z.len, 4);
		put_le(&b, usize, 4);
		put_le(&b, strlen(m[i].name), 2);
		put_le(&b, 0, 2);
		puts_(&b, m[i].name);
		if (offs != NULL)
			offs[i] = b.len;
		put(&b, z.p, z.len);

		put_le(&cd, 0x02014b50, 4);
		put_le(&cd, 45, 2);
		put_le(&cd, 20, 2);
		put_le(&cd, 0, 2);
		put_le(&cd, m[i].deflate ? 8 : 0, 2);
		put_le(&cd, 0, 4);
		put_le(&cd, crc, 4);
		put_le(&cd, z64 ? 0xffffffff : z.len, 4);
		put_le(&cd, z64 ? 0xffffffff : usize, 4);
		put_le(&cd, strlen(m[i].name), 2);
		put_le(&cd, z64 ? 28 : 0, 2);
		put_le(&cd, 0, 2);
		put_le(&cd, 0, 2);
		put_le(&cd, 0, 2);
		put_le(&cd, 0, 4);
		put_le(&cd, z64 ? 0xffffffff : lho, 4);
		puts_(&cd, m[i].name);
		if (z64) {
			put_le(&cd, 1, 2);
			put_le(&cd, 24, 2);
			put_le(&cd, usize, 8);
			put_le(&cd, z.len, 8);
			put_le(&cd, lho, 8);
		}
		free(z.p);
	}
	start = b.len;
	if (cdoff != NULL)
		*cdoff = start;
	put(&b, cd.p, cd.len);
	if (z64) {
		lho = b.len;
		put_le(&b, 0x06064b50, 4);
		put_le(&b, 44, 8);
		put_le(&b, 45, 2);
		put_le(&b, 45, 2);
		put_le(&b, 0, 4);
		put_le(&b, 0, 4);
		put_le(&b, n, 8);
		put_le(&b, n, 8);
		put_le(&b, cd.len, 8);
		put_le(&b, start, 8);
		put_le(&b, 0x07064b50, 4);
		put_le(&b, 0, 4);
		put_le(&b, lho, 8);
		put_le(&b, 1, 4);
	}
	put_le(&b, 0x06054b50, 4);
	put_le(&b, 0, 2);
	put_le(&b, 0, 2);
	put_le(&b, z64 ? 0xffff : n, 2);
	put_le(&b, z64 ? 0xffff : n, 2);
	put_le(&b, z64 ? 0xffffffff : cd.len, 4);
	put_le(&b, z64 ? 0xffffffff : start, 4);
	put_le(&b, 0, 2);
	free(cd.p);
	*len = b.len;
	return b.p;
}

/* ------------------------------------------------------------------ */
/* torch.save archives                                                 */

/* Storage bytes: a fixed pattern. */
static unsigned char pattern[4096];

static void
init_pattern(void)
{
	size_t i;

	for (i = 0; i < sizeof(pattern); i++)
		pattern[i] = (unsigned char)(i * 7 + 1);
}

struct rec {
	const char	*key;
	size_t		 len;
};

struct arch {
	const char	*prefix;	/* NULL: "archive/" */
	const char	*byteorder;	/* NULL: "little"; "": none */
	const char	*version;	/* NULL: "3\n"; "": none */
	const char	*vname;		/* NULL: "version" */
	struct rec	 rec[3];	/* len 0 ends; none: "0" of 24 */
	int		 deflate;
	unsigned	 flags;
};

/* An archive of pickle pkl, as torch.save writes it. */
static unsigned char *
mkbin(const struct buf *pkl, const struct arch *a, size_t *len)
{
	static const struct rec dflt[] = { { "0", 24 }, { NULL, 0 } };
	char names[8][64];
	struct member m[8];
	const struct rec *r = a->rec[0].len != 0 ? a->rec : dflt;
	const char *pre = a->prefix != NULL ? a->prefix : "archive/";
	size_t n = 0, i;

	init_pattern();
	memset(m, 0, sizeof(m));
	snprintf(names[n], sizeof(names[0]), "%sdata.pkl", pre);
	m[n].name = names[n];
	m[n].data = pkl->p;
	m[n++].len = pkl->len;
	if (a->byteorder == NULL || a->byteorder[0] != '\0') {
		snprintf(names[n], sizeof(names[0]), "%sbyteorder", pre);
		m[n].name = names[n];
		m[n].data = a->byteorder != NULL ? a->byteorder : "little";
		m[n].len = strlen(m[n].data);
		n++;
	}
	for (i = 0; i < 3 && r[i].len != 0; i++) {
		snprintf(names[n], sizeof(names[0]), "%sdata/%s", pre,
		    r[i].key);
		m[n].name = names[n];
		m[n].data = pattern;
		m[n++].len = r[i].len;
	}
	if (a->version == NULL || a->version[0] != '\0') {
		snprintf(names[n], sizeof(names[0]), "%s%s", pre,
		    a->vname != NULL ? a->vname : "version");
		m[n].name = names[n];
		m[n].data = a->version != NULL ? a->version : "3\n";
		m[n].len = strlen(m[n].data);
		n++;
	}
	for (i = 0; i < n; i++)
		m[i].deflate = a->deflate;
	return mkzip(m, n, a->flags, len, NULL, NULL);
}

/* Open a copy of buf (len bytes, exactly) and read every tensor. */
static int
open_read_all(const unsigned char *buf, size_t len, struct peftio_error *err)
{
	struct peftio_st *st = NULL;
	unsigned char *copy = exact(buf, len);
	const void *d;
	size_t i;
	int rc;

	memset(err, 0, sizeof(*err));
	if ((rc = peftio_st_open_mem(&st, copy, len, LABEL, err)) != 0) {
		ck_assert_ptr_null(st);
		free(copy);
		return rc;
	}
	for (i = 0; i < peftio_st_count(st) && rc == 0; i++) {
		rc = peftio_st_data(st, i, &d, err);
		peftio_st_release(st, i);
	}
	peftio_st_close(st);
	free(copy);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The fixtures against their twins                                    */

/* The tensors of a and b are the same, whatever their order. */
static void
same_ckpt(struct peftio_ckpt *a, struct peftio_ckpt *b, const char *what)
{
	const struct peftio_tensor_info *ta, *tb;
	struct peftio_error err;
	const void *da, *db;
	size_t i;
	long j;
	int d;

	ck_assert_uint_eq(peftio_ckpt_count(a), peftio_ckpt_count(b));
	for (i = 0; i < peftio_ckpt_count(b); i++) {
		tb = peftio_ckpt_tensor(b, i);
		j = peftio_ckpt_find(a, tb->name);
		ck_assert_msg(j >= 0, "%s: %s missing", what, tb->name);
		ta = peftio_ckpt_tensor(a, (size_t)j);
		ck_assert_int_eq(ta->dtype, tb->dtype);
		ck_assert_int_eq(ta->ndim, tb->ndim);
		for (d = 0; d < ta->ndim; d++)
			ck_assert_uint_eq(ta->shape[d], tb->shape[d]);
		ck_assert_uint_eq(ta->numel, tb->numel);
		ck_assert_uint_eq(ta->nbytes, tb->nbytes);
		ck_assert_msg(peftio_ckpt_data(a, (size_t)j, &da, &err) == 0,
		    "%s", err.msg);
		ck_assert_msg(peftio_ckpt_data(b, i, &db, &err) == 0, "%s",
		    err.msg);
		ck_assert_msg(memcmp(da, db, ta->nbytes) == 0,
		    "%s: tensor %s differs", what, tb->name);
		/* Released and read again: the same bytes. */
		peftio_ckpt_release(a, (size_t)j);
		ck_assert_int_eq(peftio_ckpt_data(a, (size_t)j, &da, &err), 0);
		ck_assert_msg(memcmp(da, db, ta->nbytes) == 0,
		    "%s: tensor %s differs after a release", what, tb->name);
	}
}

static const struct twin {
	const char	*bin;
	const char	*st;
} twins[] = {
	{ TB "/tensors.bin", TB "/tensors.safetensors" },
	{ TB "/tensors-deflated.bin", TB "/tensors.safetensors" },
	{ TB "/module.bin", TB "/module.safetensors" },
	{ TB "/sharded", TB "/sharded.safetensors" },
	{ TB "/adapter", TEST_DATA "/lora/pair/a/adapter_model.safetensors" },
	{ TB "/adapter/adapter_model.bin",
	    TEST_DATA "/lora/pair/a/adapter_model.safetensors" }
};

START_TEST(test_twin)
{
	const struct twin *t = &twins[_i];
	struct peftio_ckpt *a, *b;
	struct peftio_error err;

	ck_assert_msg(peftio_ckpt_open(&a, t->bin, &err) == 0, "%s",
	    err.msg);
	ck_assert_msg(peftio_ckpt_open(&b, t->st, &err) == 0, "%s", err.msg);
	same_ckpt(a, b, t->bin);
	peftio_ckpt_close(a);
	peftio_ckpt_close(b);
}
END_TEST

/* The same from memory, with the buffer cut to its exact size. */
START_TEST(test_twin_mem)
{
	static const char *const files[] = {
		"tensors.bin", "tensors-deflated.bin", "module.bin"
	};
	const struct peftio_tensor_info *ta, *tb;
	struct peftio_st *a, *b;
	struct peftio_error err;
	char path[256];
	const void *da, *db;
	unsigned char *buf, *raw;
	size_t len, i;
	long j;

	snprintf(path, sizeof(path), TB "/%s", files[_i]);
	raw = tu_read_file(path, &len);
	buf = exact(raw, len);
	free(raw);
	ck_assert_msg(peftio_st_open_mem(&a, buf, len, path, &err) == 0, "%s",
	    err.msg);
	snprintf(path, sizeof(path), TB "/%s.safetensors", _i == 2 ?
	    "module" : "tensors");
	ck_assert_int_eq(peftio_st_open(&b, path, &err), 0);
	ck_assert_uint_eq(peftio_st_count(a), peftio_st_count(b));
	ck_assert_uint_eq(peftio_st_meta_count(a), 0);
	for (i = 0; i < peftio_st_count(b); i++) {
		tb = peftio_st_tensor(b, i);
		ck_assert_int_ge(j = peftio_st_find(a, tb->name), 0);
		ta = peftio_st_tensor(a, (size_t)j);
		ck_assert_uint_eq(ta->nbytes, tb->nbytes);
		ck_assert_int_eq(peftio_st_data(a, (size_t)j, &da, &err), 0);
		ck_assert_int_eq(peftio_st_data(b, i, &db, &err), 0);
		ck_assert_mem_eq(da, db, ta->nbytes);
	}
	peftio_st_close(a);
	peftio_st_close(b);
	free(buf);
}
END_TEST

/* tensors.bin: state dict order, packed offsets, views in place. */
START_TEST(test_layout)
{
	static const char *const order[] = {
		"f32", "f16", "bf16", "f64", "i64", "u8", "bool", "scalar",
		"empty", "transposed", "rows", "cols", "shared.a", "shared.b",
		"param"
	};
	/* Served from the file: contiguous and STORED. */
	static const char *const inplace[] = {
		"f32", "rows", "shared.a", "shared.b", "param", "scalar"
	};
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf, *raw;
	const unsigned char *d;
	uint64_t off = 0;
	size_t len, i;

	raw = tu_read_file(TB "/tensors.bin", &len);
	buf = exact(raw, len);
	free(raw);
	ck_assert_int_eq(peftio_st_open_mem(&st, buf, len, NULL, &err), 0);
	ck_assert_uint_eq(peftio_st_count(st), 15);
	for (i = 0; i < 15; i++) {
		t = peftio_st_tensor(st, i);
		ck_assert_str_eq(t->name, order[i]);
		ck_assert_uint_eq(t->offset, off);
		off += t->nbytes;
	}
	t = peftio_st_tensor(st, 7);
	ck_assert_int_eq(t->ndim, 0);
	ck_assert_uint_eq(t->numel, 1);
	t = peftio_st_tensor(st, 8);
	ck_assert_uint_eq(t->nbytes, 0);
	ck_assert_int_eq(peftio_st_data(st, 8, (const void **)&d, &err), 0);
	for (i = 0; i < sizeof(inplace) / sizeof(inplace[0]); i++) {
		ck_assert_int_eq(peftio_st_data(st,
		    (size_t)peftio_st_find(st, inplace[i]),
		    (const void **)&d, &err), 0);
		ck_assert_msg(d >= buf && d < buf + len, "%s copied",
		    inplace[i]);
	}
	ck_assert_int_eq(peftio_st_data(st, 9, (const void **)&d, &err), 0);
	ck_assert_msg(d < buf || d >= buf + len, "transposed not copied");
	ck_assert_int_eq(peftio_st_data(st, 15, (const void **)&d, &err),
	    PEFTIO_EINVAL);
	peftio_st_release(st, 15);
	peftio_st_close(st);
	free(buf);
}
END_TEST

START_TEST(test_refused_fixtures)
{
	struct peftio_error err;
	struct peftio_st *st = NULL;
	struct peftio_ckpt *c = NULL;

	ck_assert_int_eq(peftio_st_open(&st, TB "/evil.bin", &err),
	    PEFTIO_EUNSUPPORTED);
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(err.msg, TB "/evil.bin: unsupported pickle "
	    "content: global posix.system") == err.msg, "%s", err.msg);
	ck_assert_int_eq(peftio_st_open(&st, TB "/legacy.bin", &err),
	    PEFTIO_EUNSUPPORTED);
	ck_assert_msg(strstr(err.msg, "legacy PyTorch format") != NULL, "%s",
	    err.msg);
	ck_assert_int_eq(peftio_ckpt_open(&c, TB "/evil.bin", &err),
	    PEFTIO_EUNSUPPORTED);
	ck_assert_ptr_null(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Pipes                                                               */

static pid_t
feed(int fd, const unsigned char *buf, size_t len)
{
	size_t o, n;
	ssize_t w;
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid != 0)
		return pid;
	signal(SIGPIPE, SIG_DFL);
	for (o = 0; o < len; o += (size_t)w) {
		n = len - o < 777 ? len - o : 777;
		if ((w = write(fd, buf + o, n)) <= 0)
			_exit(1);
	}
	_exit(0);
}

START_TEST(test_pipe)
{
	struct peftio_ckpt *a, *b;
	struct peftio_error err;
	unsigned char *buf;
	int p[2], saved, rc, status;
	size_t len;
	pid_t pid;

	buf = tu_read_file(TB "/tensors.bin", &len);
	ck_assert_int_eq(pipe(p), 0);
	pid = feed(p[1], buf, _i == 0 ? len : len - 100);
	close(p[1]);
	saved = dup(STDIN_FILENO);
	dup2(p[0], STDIN_FILENO);
	rc = peftio_ckpt_open(&a, "-", &err);
	dup2(saved, STDIN_FILENO);
	close(saved);
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (_i == 1) {
		ck_assert_int_eq(rc, PEFTIO_EFORMAT);
		ck_assert_msg(strstr(err.msg, "<stdin>: ") == err.msg, "%s",
		    err.msg);
	} else {
		ck_assert_msg(rc == 0, "%s", err.msg);
		ck_assert_int_eq(peftio_ckpt_open(&b,
		    TB "/tensors.safetensors", &err), 0);
		same_ckpt(a, b, "<stdin>");
		peftio_ckpt_close(a);
		peftio_ckpt_close(b);
	}
	free(buf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Archives built here: accepted                                       */

START_TEST(test_built_ok)
{
	const struct view v = V_OK;
	const struct peftio_tensor_info *t;
	struct arch a;
	struct peftio_error err;
	struct peftio_st *st;
	struct buf pkl = { 0 };
	unsigned char *zip;
	const void *d;
	size_t len;

	pk_one(&pkl, &v);
	memset(&a, 0, sizeof(a));
	switch (_i) {
	case 0:
		break;
	case 1:
		a.flags = Z_ZIP64;
		break;
	case 2:
		a.deflate = 1;
		break;
	case 3:
		a.deflate = 1;
		a.flags = Z_ZIP64;
		break;
	case 4:				/* older files */
		a.byteorder = "";
		a.vname = ".data/version";
		a.version = "1";
		break;
	case 5:
		a.prefix = "some name with spaces/";
		a.version = "10\n";
		break;
	}
	zip = mkbin(&pkl, &a, &len);
	ck_assert_msg(peftio_st_open_mem(&st, zip, len, LABEL, &err) == 0,
	    "case %d: %s", _i, err.msg);
	ck_assert_uint_eq(peftio_st_count(st), 1);
	t = peftio_st_tensor(st, 0);
	ck_assert_str_eq(t->name, "w");
	ck_assert_int_eq(t->dtype, PEFTIO_F32);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_uint_eq(t->shape[0], 2);
	ck_assert_uint_eq(t->shape[1], 3);
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), 0);
	ck_assert_mem_eq(d, pattern, 24);
	peftio_st_release(st, 0);
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), 0);
	ck_assert_mem_eq(d, pattern, 24);
	peftio_st_close(st);
	free(zip);
	free(pkl.p);
}
END_TEST

/* Views: each element of the copy comes from where its strides say. */
START_TEST(test_views)
{
	static const struct {
		struct view	 v;
		int		 dtype;
		uint64_t	 at[12];	/* storage element of each */
	} c[] = {
		{ { "FloatStorage", "0", 6, 0, 2, { 3, 2 }, { 1, 3 } },
		    PEFTIO_F32, { 0, 3, 1, 4, 2, 5 } },
		{ { "FloatStorage", "0", 6, 1, 2, { 2, 2 }, { 3, 1 } },
		    PEFTIO_F32, { 1, 2, 4, 5 } },
		{ { "HalfStorage", "0", 12, 2, 3, { 2, 1, 3 }, { 5, 99, 2 } },
		    PEFTIO_F16, { 2, 4, 6, 7, 9, 11 } },
		{ { "ByteStorage", "0", 24, 23, 1, { 1 }, { 0 } },
		    PEFTIO_U8, { 23 } },
		{ { "DoubleStorage", "0", 3, 0, 1, { 3 }, { 1 } },
		    PEFTIO_F64, { 0, 1, 2 } },
		{ { "BFloat16Storage", "0", 12, 0, 2, { 3, 2 }, { 1, 6 } },
		    PEFTIO_BF16, { 0, 6, 1, 7, 2, 8 } },
		{ { "FloatStorage", "0", 6, 5, 0, { 0 }, { 0 } },
		    PEFTIO_F32, { 5 } },
		{ { "LongStorage", "0", 3, 0, 2, { 0, 7 }, { 1000, 1000 } },
		    PEFTIO_I64, { 0 } }
	};
	const struct peftio_tensor_info *t;
	struct arch a;
	struct peftio_error err;
	struct peftio_st *st;
	struct buf pkl = { 0 };
	unsigned char *zip;
	const unsigned char *d;
	size_t len, k, es;
	int deflated;

	pk_one(&pkl, &c[_i].v);
	for (deflated = 0; deflated < 2; deflated++) {
		memset(&a, 0, sizeof(a));
		a.deflate = deflated;
		zip = mkbin(&pkl, &a, &len);
		ck_assert_msg(peftio_st_open_mem(&st, zip, len, LABEL,
		    &err) == 0, "case %d: %s", _i, err.msg);
		t = peftio_st_tensor(st, 0);
		ck_assert_int_eq(t->dtype, c[_i].dtype);
		es = peftio_dtype_bits(t->dtype) / 8;
		ck_assert_msg(peftio_st_data(st, 0, (const void **)&d,
		    &err) == 0, "%s", err.msg);
		for (k = 0; k < t->numel; k++)
			ck_assert_msg(memcmp(d + k * es, pattern +
			    c[_i].at[k] * es, es) == 0, "case %d element %zu",
			    _i, k);
		peftio_st_close(st);
		free(zip);
	}
	free(pkl.p);
}
END_TEST

/* _rebuild_tensor_v3 over an UntypedStorage, _rebuild_parameter,
 * a plain dict, NEWOBJ, and the other ways of writing ints. */
START_TEST(test_pickle_forms)
{
	const struct peftio_tensor_info *t;
	struct arch a;
	struct peftio_error err;
	struct peftio_st *st;
	struct buf b = { 0 };
	unsigned char *zip;
	const void *d;
	size_t len;

	put8(&b, 0x80);
	put8(&b, 2);
	put8(&b, '}');			/* a plain dict */
	put8(&b, '(');
	pk_str(&b, "v3");
	pk_global(&b, "torch._utils", "_rebuild_tensor_v3");
	put8(&b, '(');
	pk_storage(&b, "UntypedStorage", "0", 24);
	put8(&b, 0x8a);
	put8(&b, 1);
	put8(&b, 2);			/* offset 2 bf16 = byte 4 */
	put8(&b, '(');
	put8(&b, 'M');
	put_le(&b, 2, 2);
	put8(&b, 'J');
	put_le(&b, 5, 4);
	put8(&b, 't');			/* size (2, 5) */
	put8(&b, '(');
	put8(&b, 0x8a);
	put8(&b, 2);
	put_le(&b, 5, 2);
	put8(&b, 'K');
	put8(&b, 1);
	put8(&b, 't');			/* stride (5, 1) */
	put8(&b, 0x89);
	pk_global(&b, "collections", "OrderedDict");
	put8(&b, ')');
	put8(&b, 0x81);			/* NEWOBJ */
	pk_global(&b, "torch", "bfloat16");
	put8(&b, 'N');			/* metadata None */
	put8(&b, 't');
	put8(&b, 'R');
	pk_str(&b, "p");
	pk_global(&b, "torch._utils", "_rebuild_parameter");
	put8(&b, '(');
	pk_global(&b, "torch._utils", "_rebuild_tensor_v2");
	put8(&b, '(');
	pk_storage(&b, "FloatStorage", "1", 6);
	put8(&b, 0x8a);
	put8(&b, 0);			/* LONG1 of no bytes: 0 */
	put8(&b, ')');			/* a scalar */
	put8(&b, ')');
	put8(&b, 0x88);
	put8(&b, '}');
	put8(&b, '}');			/* empty metadata */
	put8(&b, 't');
	put8(&b, 'R');
	put8(&b, 0x88);
	put8(&b, '}');
	put8(&b, 't');
	put8(&b, 'R');
	put8(&b, 'u');
	put8(&b, '.');
	memset(&a, 0, sizeof(a));
	a.rec[0].key = "0";
	a.rec[0].len = 24;
	a.rec[1].key = "1";
	a.rec[1].len = 24;
	zip = mkbin(&b, &a, &len);
	ck_assert_msg(peftio_st_open_mem(&st, zip, len, LABEL, &err) == 0,
	    "%s", err.msg);
	ck_assert_uint_eq(peftio_st_count(st), 2);
	t = peftio_st_tensor(st, 0);
	ck_assert_str_eq(t->name, "v3");
	ck_assert_int_eq(t->dtype, PEFTIO_BF16);
	ck_assert_uint_eq(t->shape[0], 2);
	ck_assert_uint_eq(t->shape[1], 5);
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), 0);
	ck_assert_mem_eq(d, pattern + 4, 20);
	t = peftio_st_tensor(st, 1);
	ck_assert_str_eq(t->name, "p");
	ck_assert_int_eq(t->ndim, 0);
	ck_assert_int_eq(peftio_st_data(st, 1, &d, &err), 0);
	ck_assert_mem_eq(d, pattern, 4);
	peftio_st_close(st);
	free(zip);
	free(b.p);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Archives built here: refused                                        */

static void
raw_case(struct buf *b, const char *s, size_t n)
{
	put(b, s, n);
}

#define RAW(name, s)							\
static void name(struct buf *b) { raw_case(b, s, sizeof(s) - 1); }

RAW(p_stack_global, "\x80\x02\x93.")
RAW(p_inst, "\x80\x02iposix\nsystem\n.")
RAW(p_frame, "\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00}.")
RAW(p_unknown, "\x80\x02\xff.")
RAW(p_eval, "\x80\x02" "cbuiltins\neval\n.")
RAW(p_os, "\x80\x02" "cos\nsystem\n.")
RAW(p_nt, "\x80\x02" "cnt\nsystem\n.")
RAW(p_main, "\x80\x02" "c__main__\nEvil\n.")
RAW(p_torch_load, "\x80\x02" "ctorch\nload\n.")
RAW(p_reduce_tuple, "\x80\x02))R.")
RAW(p_call_storage, "\x80\x02" "ctorch\nFloatStorage\n)R.")
RAW(p_odict_args, "\x80\x02" "ccollections\nOrderedDict\n(K\x01tR.")
RAW(p_build_dict, "\x80\x02}}b.")
RAW(p_build_state, "\x80\x02" "ccollections\nOrderedDict\n)R}"
    "X\x01\x00\x00\x00xK\x01sb.")
RAW(p_setitem_list, "\x80\x02]K\x01K\x02s.")
RAW(p_append_dict, "\x80\x02}K\x01" "a.")
RAW(p_underflow, "\x80\x02R.")
RAW(p_underflow_mark, "\x80\x02)(R.")
RAW(p_memo_unset, "\x80\x02h\x05.")
RAW(p_memo_huge, "\x80\x02)r\xf0\xff\xff\xff.")
RAW(p_no_stop, "\x80\x02}")
RAW(p_short_str, "\x80\x02X\x10\x00\x00\x00ab")
RAW(p_after_stop, "\x80\x02}.x")
RAW(p_two_values, "\x80\x02}}.")
RAW(p_open_mark, "\x80\x02}(.")
RAW(p_no_mark, "\x80\x02t.")
RAW(p_proto6, "\x80\x06}.")
RAW(p_long9, "\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.")
RAW(p_list, "\x80\x02].")
RAW(p_empty_tuple, "\x80\x02).")
RAW(p_persid_str, "\x80\x02X\x01\x00\x00\x00" "0Q.")
RAW(p_newobj_fn, "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)\x81.")
RAW(p_global_nl, "\x80\x02" "ctorch\nFloatStorage")

/* {"w": view} with this view */
#define VIEW(name, ...)							\
static void name(struct buf *b)						\
{									\
	const struct view v = __VA_ARGS__;				\
	pk_one(b, &v);							\
}

VIEW(v_ok, V_OK)
VIEW(v_negsize, { "FloatStorage", "0", 6, 0, 2, { -1, 3 }, { 3, 1 } })
VIEW(v_negstride, { "FloatStorage", "0", 6, 0, 2, { 2, 3 }, { -3, 1 } })
VIEW(v_negoffset, { "FloatStorage", "0", 6, -1, 2, { 2, 3 }, { 3, 1 } })
VIEW(v_numel_ovf, { "FloatStorage", "0", 6, 0, 3,
    { 1LL << 40, 1LL << 40, 1LL << 40 }, { 0, 0, 0 } })
VIEW(v_bytes_ovf, { "FloatStorage", "0", 6, 0, 1, { 1LL << 62 }, { 0 } })
VIEW(v_oob_offset, { "FloatStorage", "0", 6, 1, 1, { 6 }, { 1 } })
VIEW(v_oob_stride, { "FloatStorage", "0", 6, 0, 2, { 2, 3 }, { 4, 1 } })
VIEW(v_stride_ovf, { "FloatStorage", "0", 6, 0, 2, { 2, 2 },
    { 1LL << 62, 1 } })
VIEW(v_stride_max, { "FloatStorage", "0", 6, 0, 2, { 3, 2 },
    { INT64_MAX, 1 } })
VIEW(v_offset_ovf, { "FloatStorage", "0", 6, 1LL << 62, 1, { 2 }, { 1 } })
VIEW(v_offset_max, { "FloatStorage", "0", 6, INT64_MAX, 1, { 1 }, { 1 } })
VIEW(v_expand, { "FloatStorage", "0", 6, 0, 1, { 8 }, { 0 } })
VIEW(v_missing, { "FloatStorage", "7", 6, 0, 2, { 2, 3 }, { 3, 1 } })
VIEW(v_size_lie, { "FloatStorage", "0", 5, 0, 1, { 5 }, { 1 } })
VIEW(v_rank17, { "FloatStorage", "0", 6, 0, 17, { 1 }, { 1 } })
VIEW(v_quantized, { "QInt8Storage", "0", 24, 0, 1, { 4 }, { 1 } })
VIEW(v_complex128, { "ComplexDoubleStorage", "0", 1, 0, 1, { 1 }, { 1 } })
VIEW(v_negnumel, { "FloatStorage", "0", -6, 0, 1, { 1 }, { 1 } })
VIEW(v_numel_huge, { "LongStorage", "0", 1LL << 62, 0, 1, { 1 }, { 1 } })
VIEW(v_key_empty, { "FloatStorage", "", 6, 0, 1, { 1 }, { 1 } })

/* Two views of one storage key, with different storage classes. */
static void
p_dtype_conflict(struct buf *b)
{
	const struct view v1 = V_OK;
	const struct view v2 = { "IntStorage", "0", 6, 0, 1, { 6 }, { 1 } };

	pk_begin(b);
	pk_str(b, "a");
	pk_tensor(b, &v1);
	pk_str(b, "b");
	pk_tensor(b, &v2);
	pk_end(b);
}

static void
p_duplicate(struct buf *b)
{
	const struct view v = V_OK;

	pk_begin(b);
	pk_str(b, "w");
	pk_tensor(b, &v);
	pk_str(b, "w");
	pk_tensor(b, &v);
	pk_end(b);
}

/* {"state_dict": {"w": tensor}}, as training scripts save. */
static void
p_wrapper(struct buf *b)
{
	const struct view v = V_OK;

	pk_begin(b);
	pk_str(b, "state_dict");
	pk_begin(b);
	pk_str(b, "w");
	pk_tensor(b, &v);
	put8(b, 'u');
	pk_end(b);
}

static void
p_int_key(struct buf *b)
{
	const struct view v = V_OK;

	pk_begin(b);
	pk_int(b, 1);
	pk_tensor(b, &v);
	pk_end(b);
}

static void
p_int_value(struct buf *b)
{
	pk_begin(b);
	pk_str(b, "epoch");
	pk_int(b, 3);
	pk_end(b);
}

static void
p_bad_name(struct buf *b)
{
	const struct view v = V_OK;

	pk_begin(b);
	put8(b, 'X');
	put_le(b, 2, 4);
	put8(b, 0xc3);
	put8(b, 0x28);
	pk_tensor(b, &v);
	pk_end(b);
}

/* _rebuild_tensor_v2 with the arguments in args, a raw tuple body. */
static void
rebuild_with(struct buf *b, const char *fn, void (*args)(struct buf *))
{
	pk_begin(b);
	pk_str(b, "w");
	pk_global(b, "torch._utils", fn);
	put8(b, '(');
	args(b);
	put8(b, 't');
	put8(b, 'R');
	pk_end(b);
}

static void
args_common(struct buf *b)
{
	const int64_t size[] = { 2, 3 }, stride[] = { 3, 1 };

	pk_storage(b, "FloatStorage", "0", 6);
	pk_int(b, 0);
	pk_ints(b, size, 2);
	pk_ints(b, stride, 2);
	put8(b, 0x89);
	pk_odict(b);
}

static void
args_five(struct buf *b)
{
	const int64_t size[] = { 2, 3 }, stride[] = { 3, 1 };

	pk_storage(b, "FloatStorage", "0", 6);
	pk_int(b, 0);
	pk_ints(b, size, 2);
	pk_ints(b, stride, 2);
	put8(b, 0x89);
}

static void
args_meta(struct buf *b)
{
	args_common(b);
	put8(b, '}');
	pk_str(b, "neg");
	put8(b, 0x88);
	put8(b, 's');
}

static void
args_v3_nodtype(struct buf *b)
{
	args_common(b);
	pk_int(b, 6);
}

static void
args_int_storage(struct buf *b)
{
	const int64_t size[] = { 2 };

	pk_int(b, 0);
	pk_int(b, 0);
	pk_ints(b, size, 1);
	pk_ints(b, size, 1);
	put8(b, 0x89);
	pk_odict(b);
}

static void
args_mismatch(struct buf *b)
{
	const int64_t size[] = { 2, 3 }, stride[] = { 1 };

	pk_storage(b, "FloatStorage", "0", 6);
	pk_int(b, 0);
	pk_ints(b, size, 2);
	pk_ints(b, stride, 1);
	put8(b, 0x89);
	pk_odict(b);
}

static void
p_meta(struct buf *b)
{
	rebuild_with(b, "_rebuild_tensor_v2", args_meta);
}

static void
p_five(struct buf *b)
{
	rebuild_with(b, "_rebuild_tensor_v2", args_five);
}

static void
p_v3_nodtype(struct buf *b)
{
	rebuild_with(b, "_rebuild_tensor_v3", args_v3_nodtype);
}

static void
p_int_storage(struct buf *b)
{
	rebuild_with(b, "_rebuild_tensor_v2", args_int_storage);
}

static void
p_mismatch(struct buf *b)
{
	rebuild_with(b, "_rebuild_tensor_v2", args_mismatch);
}

static void
p_param_args(struct buf *b)
{
	rebuild_with(b, "_rebuild_parameter", args_common);
}

/* ('module', torch.FloatStorage, '0', 'cpu', 6) */
static void
p_persid_module(struct buf *b)
{
	pk_begin(b);
	pk_str(b, "w");
	put8(b, '(');
	pk_str(b, "module");
	pk_global(b, "torch", "FloatStorage");
	pk_str(b, "0");
	pk_str(b, "cpu");
	pk_int(b, 6);
	put8(b, 't');
	put8(b, 'Q');
	pk_end(b);
}

static const struct bad {
	const char	*id;
	void		(*pkl)(struct buf *);
	struct arch	 a;
	int		 code;
	const char	*msg;
} bad[] = {
	{ "STACK_GLOBAL", p_stack_global, { 0 }, PEFTIO_EUNSUPPORTED,
	    "unsupported pickle content: opcode STACK_GLOBAL (0x93)" },
	{ "INST", p_inst, { 0 }, PEFTIO_EUNSUPPORTED, "opcode INST" },
	{ "FRAME", p_frame, { 0 }, PEFTIO_EUNSUPPORTED, "opcode FRAME" },
	{ "unknown opcode", p_unknown, { 0 }, PEFTIO_EFORMAT,
	    "unknown opcode 0xff" },
	{ "builtins.eval", p_eval, { 0 }, PEFTIO_EUNSUPPORTED,
	    "unsupported pickle content: global builtins.eval" },
	{ "os.system", p_os, { 0 }, PEFTIO_EUNSUPPORTED, "global os.system" },
	{ "nt.system", p_nt, { 0 }, PEFTIO_EUNSUPPORTED, "global nt.system" },
	{ "__main__", p_main, { 0 }, PEFTIO_EUNSUPPORTED,
	    "global __main__.Evil" },
	{ "torch.load", p_torch_load, { 0 }, PEFTIO_EUNSUPPORTED,
	    "global torch.load" },
	{ "GLOBAL cut", p_global_nl, { 0 }, PEFTIO_EFORMAT, "GLOBAL ends" },
	{ "REDUCE on a tuple", p_reduce_tuple, { 0 }, PEFTIO_EUNSUPPORTED,
	    "REDUCE on a tuple" },
	{ "call of a storage class", p_call_storage, { 0 },
	    PEFTIO_EUNSUPPORTED, "call of torch.FloatStorage" },
	{ "OrderedDict(x)", p_odict_args, { 0 }, PEFTIO_EUNSUPPORTED,
	    "called with arguments" },
	{ "BUILD of a dict", p_build_dict, { 0 }, PEFTIO_EUNSUPPORTED,
	    "BUILD of a dict" },
	{ "BUILD other state", p_build_state, { 0 }, PEFTIO_EUNSUPPORTED,
	    "other than its _metadata" },
	{ "NEWOBJ of a function", p_newobj_fn, { 0 }, PEFTIO_EUNSUPPORTED,
	    "NEWOBJ of torch._utils._rebuild_tensor_v2" },
	{ "SETITEM on a list", p_setitem_list, { 0 }, PEFTIO_EUNSUPPORTED,
	    "SETITEM on a list" },
	{ "APPEND to a dict", p_append_dict, { 0 }, PEFTIO_EUNSUPPORTED,
	    "APPEND to a dict" },
	{ "underflow", p_underflow, { 0 }, PEFTIO_EFORMAT,
	    "stack underflow" },
	{ "underflow past MARK", p_underflow_mark, { 0 }, PEFTIO_EFORMAT,
	    "stack underflow" },
	{ "memo unset", p_memo_unset, { 0 }, PEFTIO_EFORMAT,
	    "memo entry 5 is not set" },
	{ "memo huge", p_memo_huge, { 0 }, PEFTIO_EFORMAT,
	    "memo index 4294967280 is too large" },
	{ "no STOP", p_no_stop, { 0 }, PEFTIO_EFORMAT, "no STOP" },
	{ "short string", p_short_str, { 0 }, PEFTIO_EFORMAT,
	    "BINUNICODE ends early" },
	{ "after STOP", p_after_stop, { 0 }, PEFTIO_EFORMAT, "after STOP" },
	{ "two values", p_two_values, { 0 }, PEFTIO_EFORMAT,
	    "STOP with 2 values" },
	{ "open MARK", p_open_mark, { 0 }, PEFTIO_EFORMAT, "1 marks" },
	{ "no MARK", p_no_mark, { 0 }, PEFTIO_EFORMAT, "no MARK" },
	{ "protocol 6", p_proto6, { 0 }, PEFTIO_EUNSUPPORTED, "protocol 6" },
	{ "LONG1 of 9 bytes", p_long9, { 0 }, PEFTIO_EUNSUPPORTED,
	    "integer of 9 bytes" },
	{ "a list", p_list, { 0 }, PEFTIO_EUNSUPPORTED,
	    "the archive holds a list, not a state dict" },
	/* Found by fuzzing: an empty tuple copied no items from NULL. */
	{ "an empty tuple", p_empty_tuple, { 0 }, PEFTIO_EUNSUPPORTED,
	    "the archive holds a tuple, not a state dict" },
	{ "wrapper", p_wrapper, { 0 }, PEFTIO_EUNSUPPORTED,
	    "'state_dict' is an OrderedDict, not a tensor" },
	{ "int key", p_int_key, { 0 }, PEFTIO_EUNSUPPORTED,
	    "a state dict key that is an int" },
	{ "int value", p_int_value, { 0 }, PEFTIO_EUNSUPPORTED,
	    "'epoch' is an int, not a tensor" },
	{ "duplicate", p_duplicate, { 0 }, PEFTIO_EFORMAT,
	    "tensor 'w' appears twice" },
	{ "name not UTF-8", p_bad_name, { 0 }, PEFTIO_EFORMAT, "not UTF-8" },
	{ "persid str", p_persid_str, { 0 }, PEFTIO_EUNSUPPORTED,
	    "persistent id that is a str" },
	{ "persid module", p_persid_module, { 0 }, PEFTIO_EUNSUPPORTED,
	    "persistent id that is not a storage" },
	{ "quantized storage", v_quantized, { 0 }, PEFTIO_EUNSUPPORTED,
	    "global torch.QInt8Storage" },
	{ "complex128", v_complex128, { 0 }, PEFTIO_EUNSUPPORTED,
	    "global torch.ComplexDoubleStorage" },
	{ "negative numel", v_negnumel, { 0 }, PEFTIO_EFORMAT,
	    "size is not a non-negative integer" },
	{ "numel overflow", v_numel_huge, { 0 }, PEFTIO_EFORMAT,
	    "overflow 64 bits" },
	{ "empty key", v_key_empty, { 0 }, PEFTIO_EFORMAT,
	    "storage key is not a string" },
	{ "5 arguments", p_five, { 0 }, PEFTIO_EUNSUPPORTED,
	    "_rebuild_tensor_v2 with 5 arguments" },
	{ "storage an int", p_int_storage, { 0 }, PEFTIO_EUNSUPPORTED,
	    "of an int, not a storage" },
	{ "metadata", p_meta, { 0 }, PEFTIO_EUNSUPPORTED,
	    "with tensor metadata" },
	{ "v3 without dtype", p_v3_nodtype, { 0 }, PEFTIO_EUNSUPPORTED,
	    "with a dtype that is an int" },
	{ "rank 17", v_rank17, { 0 }, PEFTIO_EUNSUPPORTED,
	    "more than 16 dimensions" },
	{ "sizes and strides", p_mismatch, { 0 }, PEFTIO_EFORMAT,
	    "2 sizes and 1 strides" },
	{ "parameter arguments", p_param_args, { 0 }, PEFTIO_EUNSUPPORTED,
	    "_rebuild_parameter with other arguments" },
	{ "dtype conflict", p_dtype_conflict, { 0 }, PEFTIO_EFORMAT,
	    "storage '0' is given twice" },
	{ "negative size", v_negsize, { 0 }, PEFTIO_EFORMAT,
	    "tensor 'w' has a negative size" },
	{ "negative stride", v_negstride, { 0 }, PEFTIO_EFORMAT,
	    "a negative stride" },
	{ "negative offset", v_negoffset, { 0 }, PEFTIO_EFORMAT,
	    "a negative storage offset" },
	{ "numel overflow", v_numel_ovf, { 0 }, PEFTIO_EFORMAT,
	    "more than 2^64 elements" },
	{ "bytes overflow", v_bytes_ovf, { 0 }, PEFTIO_EFORMAT,
	    "a size in bytes beyond 2^64" },
	{ "out of bounds (offset)", v_oob_offset, { 0 }, PEFTIO_EFORMAT,
	    "tensor 'w': view out of bounds for storage '0' of 24 bytes" },
	{ "out of bounds (stride)", v_oob_stride, { 0 }, PEFTIO_EFORMAT,
	    "out of bounds" },
	{ "stride overflow", v_stride_ovf, { 0 }, PEFTIO_EFORMAT,
	    "out of bounds" },
	{ "stride INT64_MAX", v_stride_max, { 0 }, PEFTIO_EFORMAT,
	    "out of bounds" },
	{ "offset overflow", v_offset_ovf, { 0 }, PEFTIO_EFORMAT,
	    "out of bounds" },
	{ "offset INT64_MAX", v_offset_max, { 0 }, PEFTIO_EFORMAT,
	    "out of bounds" },
	{ "expanded view", v_expand, { 0 }, PEFTIO_EUNSUPPORTED,
	    "elements overlap" },
	{ "missing record", v_missing, { 0 }, PEFTIO_EFORMAT,
	    "storage '7' has no record archive/data/7" },
	{ "record size", v_size_lie, { 0 }, PEFTIO_EFORMAT,
	    "record archive/data/0 holds 24 bytes, the pickle says 20" },
	{ "big-endian", v_ok, { .byteorder = "big" }, PEFTIO_EUNSUPPORTED,
	    "big-endian archive" },
	{ "byteorder", v_ok, { .byteorder = "middle" }, PEFTIO_EFORMAT,
	    "unknown byteorder \"middle\"" },
	{ "no version", v_ok, { .version = "" }, PEFTIO_EFORMAT,
	    "no version record" },
	{ "version 11", v_ok, { .version = "11\n" }, PEFTIO_EUNSUPPORTED,
	    "archive version \"11\\x0a\" is not supported" },
	{ "version 0", v_ok, { .version = "0" }, PEFTIO_EUNSUPPORTED,
	    "is not supported" },
	{ "version x", v_ok, { .version = "3x" }, PEFTIO_EUNSUPPORTED,
	    "is not supported" },
	{ "version huge", v_ok, { .version = "99999999999999999999999" },
	    PEFTIO_EUNSUPPORTED, "is not supported" },
	{ "no directory", v_ok, { .prefix = "" }, PEFTIO_EFORMAT,
	    "is not in a directory" }
};

START_TEST(test_bad)
{
	const struct bad *c = &bad[_i];
	struct peftio_error err;
	struct buf pkl = { 0 };
	unsigned char *zip;
	size_t len;
	int rc;

	c->pkl(&pkl);
	zip = mkbin(&pkl, &c->a, &len);
	rc = open_read_all(zip, len, &err);
	ck_assert_msg(rc == c->code, "case %s: %d, not %d (%s)", c->id, rc,
	    c->code, err.msg);
	ck_assert_msg(strncmp(err.msg, LABEL ": ", strlen(LABEL) + 2) == 0,
	    "case %s: %s", c->id, err.msg);
	ck_assert_msg(strstr(err.msg, c->msg) != NULL,
	    "case %s: '%s' lacks '%s'", c->id, err.msg, c->msg);
	free(zip);
	free(pkl.p);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Zip containers                                                      */

/* The usual archive, stored, with its layout: member data offsets and
 * the central directory's. */
static unsigned char *
usual(size_t *len, size_t offs[4], size_t *cdoff, unsigned flags)
{
	const struct view v = V_OK;
	static struct buf pkl;
	struct member m[4];

	init_pattern();
	free(pkl.p);
	memset(&pkl, 0, sizeof(pkl));
	pk_one(&pkl, &v);
	memset(m, 0, sizeof(m));
	m[0].name = "archive/data.pkl";
	m[0].data = pkl.p;
	m[0].len = pkl.len;
	m[1].name = "archive/byteorder";
	m[1].data = "little";
	m[1].len = 6;
	m[2].name = "archive/data/0";
	m[2].data = pattern;
	m[2].len = 24;
	m[3].name = "archive/version";
	m[3].data = "3\n";
	m[3].len = 2;
	return mkzip(m, 4, flags, len, offs, cdoff);
}

/* Central directory entry i of the usual archive. */
static unsigned char *
central(unsigned char *zip, size_t cdoff, int i)
{
	unsigned char *p = zip + cdoff;

	while (i-- > 0)
		p += 46 + (p[28] | p[29] << 8) + (p[30] | p[31] << 8);
	return p;
}

START_TEST(test_zip_bad)
{
	struct peftio_error err;
	unsigned char *zip, *e;
	size_t len, offs[4], cdoff;
	int rc, want = PEFTIO_EFORMAT;
	const char *msg = NULL;

	zip = usual(&len, offs, &cdoff, _i >= 10 ? Z_ZIP64 : 0);
	e = zip + len - 22;		/* end of central directory */
	switch (_i) {
	case 0:				/* a comment the record denies */
		e[20] = 1;
		msg = "no zip end of central directory record";
		break;
	case 1:				/* more entries than there are */
		set_le(e + 8, 5, 2);
		set_le(e + 10, 5, 2);
		msg = "central directory entry 4 is damaged";
		break;
	case 2:				/* fewer */
		set_le(e + 8, 3, 2);
		set_le(e + 10, 3, 2);
		msg = "bytes after the last zip central directory entry";
		break;
	case 3:
		set_le(e + 4, 1, 2);
		want = PEFTIO_EUNSUPPORTED;
		msg = "spans several disks";
		break;
	case 4:				/* encrypted */
		central(zip, cdoff, 2)[8] |= 1;
		want = PEFTIO_EUNSUPPORTED;
		msg = "zip member 'archive/data/0' is encrypted";
		break;
	case 5:				/* bzip2 */
		central(zip, cdoff, 2)[10] = 12;
		want = PEFTIO_EUNSUPPORTED;
		msg = "compression method 12 is not supported";
		break;
	case 6:				/* stored, sizes differ */
		set_le(central(zip, cdoff, 2) + 20, 23, 4);
		msg = "is stored but its sizes differ";
		break;
	case 7:				/* the local header names another */
		zip[offs[2] - 1] = '1';
		msg = "does not match the central directory";
		break;
	case 8:				/* both sizes past the directory */
		set_le(central(zip, cdoff, 2) + 20, 4000, 4);
		set_le(central(zip, cdoff, 2) + 24, 4000, 4);
		msg = "run past the central directory";
		break;
	case 9:				/* two entries, one local header */
		set_le(central(zip, cdoff, 3) + 42,
		    offs[2] - 30 - strlen("archive/data/0"), 4);
		msg = "does not match";
		break;
	case 10:			/* ZIP64 locator pointing outside */
		set_le(e - 20 + 8, len, 8);
		msg = "ZIP64 end record";
		break;
	case 11:			/* ZIP64 and classic records differ */
		set_le(e + 10, 3, 2);
		msg = "the zip end records disagree";
		break;
	case 12:			/* ZIP64 extra field missing */
		e = central(zip, cdoff, 1);
		set_le(e + 46 + strlen("archive/byteorder"), 0x5455, 2);
		msg = "missing or bad ZIP64 extra field";
		break;
	case 13:			/* ZIP64 extra field too short */
		e = central(zip, cdoff, 1);
		set_le(e + 46 + strlen("archive/byteorder") + 2, 8, 2);
		msg = "missing or bad ZIP64 extra field";
		break;
	case 14:			/* ZIP64 sizes past the directory */
		e = central(zip, cdoff, 2);
		set_le(e + 46 + strlen("archive/data/0") + 4, 1ULL << 60, 8);
		set_le(e + 46 + strlen("archive/data/0") + 12, 1ULL << 60, 8);
		msg = "run past the central directory";
		break;
	case 15:			/* ZIP64 directory size lies */
		set_le(e - 20 - 56 + 40, 1ULL << 62, 8);
		msg = "does not end where its end record begins";
		break;
	case 16:			/* ZIP64 entry count lies */
		set_le(e - 20 - 56 + 24, 1ULL << 40, 8);
		set_le(e - 20 - 56 + 32, 1ULL << 40, 8);
		msg = "cannot hold";
		break;
	}
	rc = open_read_all(zip, len, &err);
	ck_assert_msg(rc == want, "case %d: %d (%s)", _i, rc, err.msg);
	ck_assert_msg(strncmp(err.msg, LABEL ": ", strlen(LABEL) + 2) == 0,
	    "case %d: %s", _i, err.msg);
	ck_assert_msg(msg == NULL || strstr(err.msg, msg) != NULL,
	    "case %d: '%s' lacks '%s'", _i, err.msg, msg);
	free(zip);
}
END_TEST

/* Member names and the archive's directory. */
START_TEST(test_zip_names)
{
	static const struct {
		const char	*names[3];
		const char	*msg;
	} c[] = {
		{ { "archive/data.pkl", "other/version", NULL },
		    "is outside the archive's directory 'archive/'" },
		{ { "archive/data.pkl", "archive/data.pkl", NULL },
		    "zip member 'archive/data.pkl' appears twice" },
		{ { "archive/version", NULL, NULL },
		    "the archive has no archive/data.pkl" },
		{ { NULL, NULL, NULL }, "does not contain any files" }
	};
	const struct view v = V_OK;
	struct member m[3];
	struct peftio_error err;
	struct buf pkl = { 0 };
	unsigned char *zip;
	size_t len, n;

	pk_one(&pkl, &v);
	memset(m, 0, sizeof(m));
	for (n = 0; n < 3 && c[_i].names[n] != NULL; n++) {
		m[n].name = c[_i].names[n];
		m[n].data = strstr(m[n].name, "version") ? "3" : (char *)pkl.p;
		m[n].len = strstr(m[n].name, "version") ? 1 : pkl.len;
	}
	zip = mkzip(m, n, 0, &len, NULL, NULL);
	ck_assert_int_eq(open_read_all(zip, len, &err), PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, c[_i].msg) != NULL, "'%s' lacks '%s'",
	    err.msg, c[_i].msg);
	free(zip);
	free(pkl.p);
}
END_TEST

/* A flipped byte: data.pkl at open, a storage when it is read. */
START_TEST(test_crc)
{
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *zip;
	const void *d;
	size_t len, offs[4], cdoff;

	zip = usual(&len, offs, &cdoff, 0);
	zip[offs[0] + 5] ^= 0x20;
	ck_assert_int_eq(open_read_all(zip, len, &err), PEFTIO_ECHECKSUM);
	ck_assert_msg(strstr(err.msg, "zip member 'archive/data.pkl' has "
	    "CRC-32") != NULL, "%s", err.msg);
	zip[offs[0] + 5] ^= 0x20;
	zip[offs[2] + 23] ^= 1;
	ck_assert_int_eq(peftio_st_open_mem(&st, zip, len, LABEL, &err), 0);
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), PEFTIO_ECHECKSUM);
	ck_assert_msg(strstr(err.msg, LABEL ": tensor 'w': zip member "
	    "'archive/data/0' has CRC-32") == err.msg, "%s", err.msg);
	/* Still refused the second time. */
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), PEFTIO_ECHECKSUM);
	peftio_st_close(st);
	free(zip);
}
END_TEST

/* DEFLATED members that lie about their size. */
START_TEST(test_deflate_lies)
{
	static const struct {
		size_t		 real;		/* bytes deflated */
		size_t		 claim;
		size_t		 pad;
		int		 corrupt;
		const char	*msg;
	} c[] = {
		{ 20, 24, 0, 0, "inflates to 20 bytes, not its declared 24" },
		{ 28, 24, 0, 0, "inflates to more than its declared 24 bytes" },
		{ 4000, 24, 0, 0, "inflates to more than its declared 24" },
		{ 24, 24, 3, 0, "has 3 bytes after its deflate data" },
		{ 24, 24, 0, 1, "bad deflate data" },
		{ 24, 24, 0, 2, "ends before its deflate data does" },
		{ 24, 1 << 20, 0, 0, "more than deflate can" }
	};
	const struct view v = V_OK;
	struct view vc = V_OK;
	struct member m[3];
	struct peftio_error err;
	struct buf pkl = { 0 };
	unsigned char *zip;
	size_t len, offs[3];

	init_pattern();
	if (c[_i].claim % 4 == 0 && c[_i].claim != 24) {
		vc.numel = (int64_t)c[_i].claim / 4;
		vc.ndim = 1;
		vc.size[0] = vc.numel;
		vc.stride[0] = 1;
		pk_one(&pkl, &vc);
	} else
		pk_one(&pkl, &v);
	memset(m, 0, sizeof(m));
	m[0].name = "archive/data.pkl";
	m[0].data = pkl.p;
	m[0].len = pkl.len;
	m[1].name = "archive/version";
	m[1].data = "3";
	m[1].len = 1;
	m[2].name = "archive/data/0";
	m[2].data = pattern;
	m[2].len = c[_i].real;
	m[2].deflate = 1;
	m[2].claim = c[_i].claim;
	m[2].pad = c[_i].pad;
	zip = mkzip(m, 3, 0, &len, offs, NULL);
	if (c[_i].corrupt == 1)
		zip[offs[2]] = 0xff;		/* reserved block type */
	else if (c[_i].corrupt == 2) {
		/* Cut the stream: declare fewer compressed bytes. */
		unsigned char *cd = zip + len - 22;
		size_t cdo = cd[16] | cd[17] << 8 | cd[18] << 16;
		unsigned char *e = central(zip, cdo, 2);

		set_le(e + 20, (e[20] | e[21] << 8) - 2, 4);
	}
	ck_assert_int_eq(open_read_all(zip, len, &err), PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, c[_i].msg) != NULL, "case %d: '%s' "
	    "lacks '%s'", _i, err.msg, c[_i].msg);
	free(zip);
	free(pkl.p);
}
END_TEST

/* Every prefix of the fixtures is refused cleanly. */
START_TEST(test_truncated)
{
	static const char *const files[] = {
		TB "/tensors.bin", TB "/tensors-deflated.bin"
	};
	struct peftio_error err;
	unsigned char *raw;
	size_t len, n;

	raw = tu_read_file(files[_i], &len);
	for (n = 0; n < len; n++) {
		ck_assert_msg(open_read_all(raw, n, &err) != 0,
		    "%zu of %zu bytes accepted", n, len);
		ck_assert_msg(err.msg[0] != '\0', "%zu bytes: no message", n);
	}
	ck_assert_msg(open_read_all(raw, len, &err) == 0, "%s", err.msg);
	free(raw);
}
END_TEST

/* Random damage (about 1 byte in 100) never crashes the reader. */
/*
 * The error contract of a reader: rc is 0 with no error set, or rc is a
 * negative peftio_status, err->code is rc and err->msg is one line.
 * NULL if it holds, else what broke.
 */
static const char *
contract_broken(int rc, const struct peftio_error *err)
{
	if (rc == 0)
		return err->code != 0 || err->msg[0] != '\0' ?
		    "read, yet an error is set" : NULL;
	if (rc > 0 || rc < PEFTIO_ECHECKSUM)
		return "returned no peftio_status";
	if (err->code != rc)
		return "err.code differs from the value returned";
	if (err->msg[0] == '\0')
		return "failed with no message";
	if (strchr(err->msg, '\n') != NULL)
		return "message of more than one line";
	return NULL;
}

/* Keep an input that broke the contract under REGRESS, for
 * test_regressions (and as a fuzz seed). */
#define REGRESS	TB "/regress"

static void
keep_failure(const unsigned char *buf, size_t len, const char *name)
{
	char path[512];

	(void)mkdir(REGRESS, 0777);
	snprintf(path, sizeof(path), "%s/%s", REGRESS, name);
	tu_write_file(path, buf, len);
}

/*
 * Random byte flips of each fixture archive: each mutant reads, or fails
 * with an error value and a one-line message (a crash fails the test in
 * its forked process; the seed below makes it reproducible).
 */
START_TEST(test_mutations)
{
	static const char *const files[] = {
		TB "/tensors.bin", TB "/tensors-deflated.bin", TB "/module.bin",
		TB "/evil.bin"
	};
	struct peftio_error err;
	unsigned char *raw, *buf;
	uint64_t s = 0x7423 + (uint64_t)_i;
	size_t len, k, flips;
	const char *why;
	char name[64];
	int iter, rc, nread = 0, nfail = 0;

	raw = tu_read_file(files[_i], &len);
	for (iter = 0; iter < 400; iter++) {
		buf = exact(raw, len);
		flips = 1 + tu_rand(&s) % (len / 100 + 1);
		for (k = 0; k < flips; k++)
			buf[tu_rand(&s) % len] ^= (unsigned char)(1 +
			    tu_rand(&s) % 255);
		rc = open_read_all(buf, len, &err);
		if ((why = contract_broken(rc, &err)) != NULL) {
			snprintf(name, sizeof(name), "mutation-%d-%d.bin", _i,
			    iter);
			keep_failure(buf, len, name);
			ck_abort_msg("%s, mutant %d: %s (rc %d, \"%s\"); kept "
			    "as %s/%s", files[_i], iter, why, rc, err.msg,
			    REGRESS, name);
		}
		if (rc == 0)
			nread++;
		else
			nfail++;
		free(buf);
	}
	/* The flips reached the readers' checks. */
	ck_assert_int_gt(nfail, 0);
	ck_assert_int_eq(nread + nfail, 400);
	free(raw);
}
END_TEST

/* Every input kept under REGRESS still keeps the contract. */
START_TEST(test_regressions)
{
	struct peftio_error err;
	struct dirent *de;
	unsigned char *buf;
	const char *why;
	char path[512];
	size_t len;
	DIR *d;
	int rc, n = 0;

	d = opendir(REGRESS);
	ck_assert_msg(d != NULL, "%s: cannot open", REGRESS);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", REGRESS, de->d_name);
		buf = tu_read_file(path, &len);
		rc = open_read_all(buf, len, &err);
		why = contract_broken(rc, &err);
		ck_assert_msg(why == NULL, "%s: %s (rc %d, \"%s\")", path,
		    why != NULL ? why : "", rc, err.msg);
		free(buf);
		n++;
	}
	closedir(d);
	ck_assert_int_gt(n, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Checkpoint directories                                              */

static void
copy_file(const char *from, const char *to)
{
	unsigned char *buf;
	size_t len;

	buf = tu_read_file(from, &len);
	tu_write_file(to, buf, len);
	free(buf);
}

START_TEST(test_ckpt_dirs)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	char dir[512];

	snprintf(dir, sizeof(dir), "%s", tu_tmpdir());
	/* Only training_args.bin: not a checkpoint. */
	copy_file(TB "/module.bin", tu_path("training_args.bin"));
	ck_assert_int_eq(peftio_ckpt_open(&c, dir, &err), PEFTIO_ENOTFOUND);
	ck_assert_msg(strstr(err.msg, "pytorch_model.bin") != NULL, "%s",
	    err.msg);
	copy_file(TB "/module.bin", tu_path("pytorch_model.bin"));
	ck_assert_msg(peftio_ckpt_open(&c, dir, &err) == 0, "%s", err.msg);
	ck_assert_str_eq(peftio_ckpt_shard_name(c, 0), "pytorch_model.bin");
	ck_assert_uint_eq(peftio_ckpt_count(c), 4);
	peftio_ckpt_close(c);
	/* safetensors is preferred, as by transformers. */
	copy_file(TB "/tensors.safetensors", tu_path("model.safetensors"));
	ck_assert_int_eq(peftio_ckpt_open(&c, dir, &err), 0);
	ck_assert_str_eq(peftio_ckpt_shard_name(c, 0), "model.safetensors");
	peftio_ckpt_close(c);
	tu_tmpdir_remove();
}
END_TEST

/*
 * A .bin index and its errors.  The two bad names and the non-string
 * shard once read their message's strings from the freed index (found
 * by make check SANITIZE=1).
 */
START_TEST(test_ckpt_bin_index)
{
	static const char *const idx[] = {
		"{\"weight_map\":{\"a\":\"pytorch_model-00001-of-00002.bin\","
		"\"b\":\"pytorch_model-00001-of-00002.bin\","
		"\"c\":\"pytorch_model-00002-of-00002.bin\"}}",
		"{\"weight_map\":{\"a\":\"model.safetensors\"}}",
		"{\"weight_map\":{\"a\":\"../pytorch_model.bin\"}}",
		"{\"weight_map\":{\"a\":\"pytorch_model-00001-of-00002.bin\","
		"\"b\":\"pytorch_model-00001-of-00002.bin\","
		"\"c\":\"pytorch_model-00001-of-00002.bin\"}}",
		"{\"weight_map\":{\"x\":\"pytorch_model-00003-of-00002.bin\"}}",
		"{\"weight_map\":{\"a\":1}}"
	};
	static const char *const msg[] = {
		NULL, "must be a relative .bin path",
		"must be a relative .bin path",
		"tensor 'c' is not in shard pytorch_model-00001-of-00002.bin "
		"as pytorch_model.bin.index.json says",
		"listed in pytorch_model.bin.index.json is missing",
		"tensor 'a': shard name is not a string"
	};
	struct peftio_error err;
	struct peftio_ckpt *c;
	char dir[512];
	int rc;

	snprintf(dir, sizeof(dir), "%s", tu_tmpdir());
	copy_file(TB "/sharded/pytorch_model-00001-of-00002.bin",
	    tu_path("pytorch_model-00001-of-00002.bin"));
	copy_file(TB "/sharded/pytorch_model-00002-of-00002.bin",
	    tu_path("pytorch_model-00002-of-00002.bin"));
	tu_write_file(tu_path("pytorch_model.bin.index.json"), idx[_i],
	    strlen(idx[_i]));
	rc = peftio_ckpt_open(&c, dir, &err);
	if (msg[_i] == NULL) {
		ck_assert_msg(rc == 0, "%s", err.msg);
		ck_assert_int_eq(peftio_ckpt_sharded(c), 1);
		ck_assert_uint_eq(peftio_ckpt_nshards(c), 2);
		ck_assert_uint_eq(peftio_ckpt_count(c), 3);
		peftio_ckpt_close(c);
	} else {
		ck_assert_int_ne(rc, 0);
		ck_assert_msg(strstr(err.msg, msg[_i]) != NULL,
		    "'%s' lacks '%s'", err.msg, msg[_i]);
	}
	tu_tmpdir_remove();
}
END_TEST

/* The writer names torch shards as their safetensors counterparts. */
START_TEST(test_writer_names)
{
	static const struct {
		const char	*in[2];
		const char	*out[2];
	} c[] = {
		{ { "pytorch_model-00001-of-00002.bin",
		    "pytorch_model-00002-of-00002.bin" },
		  { "model-00001-of-00002.safetensors",
		    "model-00002-of-00002.safetensors" } },
		{ { "pytorch_model.bin", NULL },
		  { "model.safetensors", NULL } },
		{ { "adapter_model.bin", NULL },
		  { "adapter_model.safetensors", NULL } }
	};
	static const uint64_t shape[] = { 2 };
	static const float v[2] = { 1, 2 };
	struct peftio_error err;
	struct peftio_ckptw *w;
	char out[512], name[600], *idx;
	size_t n = c[_i].in[1] != NULL ? 2 : 1, s;

	snprintf(out, sizeof(out), "%s/out", tu_tmpdir());
	ck_assert_int_eq(peftio_ckptw_create(&w, out, 1, n, c[_i].in,
	    PEFTIO_W_NOSYNC, &err), 0);
	for (s = 0; s < n; s++)
		ck_assert_int_eq(peftio_ckptw_declare(w, s, s ? "b" : "a",
		    PEFTIO_F32, 1, shape, &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	for (s = 0; s < n; s++)
		ck_assert_int_eq(peftio_ckptw_write(w, s ? "b" : "a", v, 8,
		    &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	for (s = 0; s < n; s++) {
		snprintf(name, sizeof(name), "%s/%s", out, c[_i].out[s]);
		ck_assert_msg(access(name, R_OK) == 0, "no %s", name);
	}
	if (n == 2) {
		snprintf(name, sizeof(name), "%s/model.safetensors.index.json",
		    out);
		idx = tu_read_file(name, NULL);
		ck_assert_ptr_nonnull(strstr(idx,
		    "\"b\": \"model-00002-of-00002.safetensors\""));
		free(idx);
	}
}
END_TEST

/* Two central directory entries for one member. */
START_TEST(test_zip_overlap)
{
	struct member m[3];
	struct peftio_error err;
	unsigned char *zip;
	size_t len, offs[3], cdoff;

	memset(m, 0, sizeof(m));
	m[0].name = m[1].name = "archive/data/0";
	m[0].data = m[1].data = "12345678";
	m[0].len = m[1].len = 8;
	m[2].name = "archive/version";
	m[2].data = "3";
	m[2].len = 1;
	zip = mkzip(m, 3, 0, &len, offs, &cdoff);
	ck_assert_int_eq(open_read_all(zip, len, &err), PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, "appears twice") != NULL, "%s",
	    err.msg);
	set_le(central(zip, cdoff, 1) + 42, 0, 4);
	ck_assert_int_eq(open_read_all(zip, len, &err), PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, "zip members 'archive/data/0' and "
	    "'archive/data/0' overlap") != NULL, "%s", err.msg);
	free(zip);
}
END_TEST

Suite *torchbin_suite(void);

Suite *torchbin_suite(void)
{
	Suite *s = suite_create("torchbin");
	TCase *tc;

	tc = tcase_create("fixtures");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_twin, 0,
	    (int)(sizeof(twins) / sizeof(twins[0])));
	tcase_add_loop_test(tc, test_twin_mem, 0, 3);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_refused_fixtures);
	tcase_add_loop_test(tc, test_pipe, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("built");
	tcase_add_loop_test(tc, test_built_ok, 0, 6);
	tcase_add_loop_test(tc, test_views, 0, 8);
	tcase_add_test(tc, test_pickle_forms);
	tcase_add_loop_test(tc, test_bad, 0,
	    (int)(sizeof(bad) / sizeof(bad[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("zip");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_zip_bad, 0, 17);
	tcase_add_loop_test(tc, test_zip_names, 0, 4);
	tcase_add_test(tc, test_zip_overlap);
	tcase_add_test(tc, test_crc);
	tcase_add_loop_test(tc, test_deflate_lies, 0, 7);
	tcase_add_loop_test(tc, test_truncated, 0, 2);
	tcase_add_loop_test(tc, test_mutations, 0, 4);
	tcase_add_test(tc, test_regressions);
	suite_add_tcase(s, tc);

	tc = tcase_create("checkpoints");
	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_add_test(tc, test_ckpt_dirs);
	tcase_add_loop_test(tc, test_ckpt_bin_index, 0, 6);
	tcase_add_loop_test(tc, test_writer_names, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}
