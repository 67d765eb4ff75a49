/*
 * check_safetensors.c - the safetensors reader (every row of the
 * malformed-input table in formats.md section 4.1) and writer.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "peftio.h"
#include "text.h"
#include "testutil.h"

#define LABEL	"case.safetensors"

/* 8-byte N (given), then hlen header bytes, then datalen data bytes. */
static unsigned char *
mkfile_n(const char *hdr, size_t hlen, uint64_t n, size_t datalen,
    size_t *len)
{
	unsigned char *p;
	size_t i;

	/* A byte more, zero, for the tests that write one too many. */
	*len = 8 + hlen + datalen;
	p = calloc(1, *len + 1);
	ck_assert_ptr_nonnull(p);
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(n >> (8 * i));
	memcpy(p + 8, hdr, hlen);
	for (i = 0; i < datalen; i++)
		p[8 + hlen + i] = (unsigned char)(i * 7 + 1);
	return p;
}

static unsigned char *
mkfile(const char *hdr, size_t hlen, size_t datalen, size_t *len)
{
	return mkfile_n(hdr, hlen, hlen, datalen, len);
}

struct stcase {
	const char	*id;		/* formats.md 4.1 case numbers */
	const char	*hdr;
	size_t		 hlen;		/* 0: strlen(hdr) */
	size_t		 datalen;
	int		 ok;
	const char	*msg;		/* expected in the message */
};

#define T(x)	"{\"t\":{" x "}}"
#define U8_2	"\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]"

static const struct stcase cases[] = {
	/* Accepted. */
	{ "11,80 whitespace", " \t\r\n{} \t\r\n", 0, 0, 1, NULL },
	{ "19 metadata null", "{\"__metadata__\":null}", 0, 0, 1, NULL },
	{ "79 metadata {}", "{\"__metadata__\":{}}", 0, 0, 1, NULL },
	{ "25 extra field", T(U8_2 ",\"extra\":[1,{\"x\":null},-0,1.5]"), 0,
	    2, 1, NULL },
	{ "85 [0,max,max]", T("\"dtype\":\"F32\",\"shape\":[0,"
	    "4611686018427387904,4611686018427387904],\"data_offsets\":[0,0]"),
	    0, 0, 1, NULL },
	{ "48 F4 x4", T("\"dtype\":\"F4\",\"shape\":[4],"
	    "\"data_offsets\":[0,2]"), 0, 2, 1, NULL },
	{ "88 F6 x4", T("\"dtype\":\"F6_E2M3\",\"shape\":[2,2],"
	    "\"data_offsets\":[0,3]"), 0, 3, 1, NULL },
	{ "45 zero dims", T("\"dtype\":\"U8\",\"shape\":[0,0],"
	    "\"data_offsets\":[0,0]"), 0, 0, 1, NULL },
	{ "46 scalar", T("\"dtype\":\"F32\",\"shape\":[],"
	    "\"data_offsets\":[0,4]"), 0, 4, 1, NULL },
	{ "53,54 empty tensors anywhere",
	    "{\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]},"
	    "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
	    "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]},"
	    "\"y\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
	    "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
	    0, 3, 1, NULL },
	{ "52 JSON order", "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[1,2]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1]}}", 0, 2, 1, NULL },
	{ "89 unaligned F32", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
	    "\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
	    "\"data_offsets\":[1,5]}}", 0, 5, 1, NULL },
	{ "66 empty name", "{\"\":{" U8_2 "}}", 0, 2, 1, NULL },
	{ "unicode name", "{\"\xc3\xa9\\u00e9\\ud83d\\ude00\":{" U8_2 "}}",
	    0, 2, 1, NULL },
	{ "rank 16", T("\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,"
	    "1,1,1,2],\"data_offsets\":[0,2]"), 0, 2, 1, NULL },
	{ "metadata strings", "{\"__metadata__\":{\"format\":\"pt\","
	    "\"k\":\"v\\n\"}," "\"t\":{" U8_2 "}}", 0, 2, 1, NULL },

	/* Rejected. */
	{ "06 N=0", "", 0, 0, 0, "invalid JSON" },
	{ "07 invalid UTF-8", "{\"a\xff\":1}", 0, 0, 0, "UTF-8" },
	{ "83 overlong UTF-8", "{\"\xc0\xaf\":1}", 0, 0, 0, "UTF-8" },
	{ "surrogate UTF-8", "{\"\xed\xa0\x80\":1}", 0, 0, 0, "UTF-8" },
	{ "truncated UTF-8", "{}\xe2\x82", 0, 0, 0, "UTF-8" },
	{ "above U+10FFFF", "{\"\xf4\x90\x80\x80\":1}", 0, 0, 0, "UTF-8" },
	{ "08 truncated JSON", "{", 0, 0, 0, "invalid JSON" },
	{ "09 array", "[]", 0, 0, 0, "not an object" },
	{ "09 null", "null", 0, 0, 0, "invalid JSON" },
	{ "10 trailing garbage", "{} x", 0, 0, 0, "invalid JSON" },
	{ "57,58 two objects", "{}{}", 0, 0, 0, "invalid JSON" },
	{ "13 trailing NUL", "{}\0", 3, 0, 0, "invalid JSON" },
	{ "81 trailing VT", "{}\v", 0, 0, 0, "invalid JSON" },
	{ "82 trailing NBSP", "{}\xc2\xa0", 0, 0, 0, "invalid JSON" },
	{ "14 leading BOM", "\xef\xbb\xbf{}", 0, 0, 0, "invalid JSON" },
	{ "17 metadata int", "{\"__metadata__\":{\"a\":1}}", 0, 0, 0,
	    "__metadata__" },
	{ "18 metadata object", "{\"__metadata__\":{\"a\":{}}}", 0, 0, 0,
	    "__metadata__" },
	{ "20 metadata array", "{\"__metadata__\":[]}", 0, 0, 0,
	    "__metadata__" },
	{ "55 metadata tensor-shaped", "{\"__metadata__\":{" U8_2 "}}", 0, 2,
	    0, "__metadata__" },
	{ "metadata NUL", "{\"__metadata__\":{\"a\":\"x\\u0000\"}}", 0, 0, 0,
	    "NUL" },
	{ "43 metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
	    0, 0, "duplicate" },
	{ "44 duplicate metadata key",
	    "{\"__metadata__\":{\"a\":\"1\",\"a\":\"1\"}}", 0, 0, 0,
	    "duplicate" },
	{ "41 identical duplicate tensor", "{\"t\":{" U8_2 "},\"t\":{" U8_2
	    "}}", 0, 2, 0, "duplicate" },
	{ "42 duplicate tensor", "{\"t\":{" U8_2 "},\"t\":{\"dtype\":\"U8\","
	    "\"shape\":[2],\"data_offsets\":[2,4]}}", 0, 4, 0, "duplicate" },
	{ "21 dtype F128", T("\"dtype\":\"F128\",\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "unknown dtype 'F128'" },
	{ "22 dtype f32", T("\"dtype\":\"f32\",\"shape\":[2],"
	    "\"data_offsets\":[0,8]"), 0, 8, 0, "unknown dtype" },
	{ "73 dtype 'U8 '", T("\"dtype\":\"U8 \",\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "unknown dtype" },
	{ "dtype with NUL", T("\"dtype\":\"U8\\u0000\",\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "unknown dtype" },
	{ "dtype not a string", T("\"dtype\":8,\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "dtype" },
	{ "23 missing dtype", T("\"shape\":[2],\"data_offsets\":[0,2]"), 0, 2,
	    0, "missing field 'dtype'" },
	{ "24 missing shape", T("\"dtype\":\"U8\",\"data_offsets\":[0,2]"), 0,
	    2, 0, "missing field 'shape'" },
	{ "63 missing data_offsets", T("\"dtype\":\"U8\",\"shape\":[2]"), 0, 2,
	    0, "missing field 'data_offsets'" },
	{ "77 null dtype", T("\"dtype\":null,\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "missing field 'dtype'" },
	{ "77 null shape", T("\"dtype\":\"U8\",\"shape\":null,"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "missing field 'shape'" },
	{ "78 key Dtype", T("\"Dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "missing field 'dtype'" },
	{ "72 repeated field", T("\"dtype\":\"U8\",\"dtype\":\"U8\","
	    "\"shape\":[2],\"data_offsets\":[0,2]"), 0, 2, 0, "duplicate" },
	{ "26 negative offset", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[-1,1]"), 0, 2, 0, "data_offsets[0]" },
	{ "39 negative dim", T("\"dtype\":\"U8\",\"shape\":[-2],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "shape[0]" },
	{ "84 -0 offset", T("\"dtype\":\"U8\",\"shape\":[0],"
	    "\"data_offsets\":[-0,0]"), 0, 0, 0, "(-0)" },
	{ "84 -0 dim", T("\"dtype\":\"U8\",\"shape\":[2,-0],"
	    "\"data_offsets\":[0,0]"), 0, 0, 0, "shape[1]" },
	{ "27 0.0", T("\"dtype\":\"U8\",\"shape\":[0.0],"
	    "\"data_offsets\":[0,0]"), 0, 0, 0, "shape[0]" },
	{ "56 1.6e1", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[0,1.6e1]"), 0, 16, 0, "data_offsets[1]" },
	{ "56 1e0", T("\"dtype\":\"U8\",\"shape\":[1e0],"
	    "\"data_offsets\":[0,1]"), 0, 1, 0, "shape[0]" },
	{ "40 2^64", T("\"dtype\":\"U8\",\"shape\":[18446744073709551616],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "2^63-1" },
	{ "40 2^63 (deviation)", T("\"dtype\":\"U8\",\"shape\":[0],"
	    "\"data_offsets\":[9223372036854775808,9223372036854775808]"), 0,
	    0, 0, "2^63-1" },
	{ "75 leading zero", T("\"dtype\":\"U8\",\"shape\":[02],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "invalid JSON" },
	{ "28 offset string", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[\"0\",\"2\"]"), 0, 2, 0, "data_offsets[0]" },
	{ "76 offsets object", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":{\"0\":2}"), 0, 2, 0, "not an array" },
	{ "shape object", T("\"dtype\":\"U8\",\"shape\":{},"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "not an array" },
	{ "49 tensor not an object", "{\"t\":[1]}", 0, 0, 0,
	    "not an object" },
	{ "49 tensor string", "{\"t\":\"U8\"}", 0, 0, 0, "not an object" },
	{ "29 three offsets", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[0,2,2]"), 0, 2, 0, "3 elements" },
	{ "30 one offset", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[2]"), 0, 2, 0, "1 elements" },
	{ "31 END < BEGIN", "{\"a\":{" U8_2 "},\"b\":{\"dtype\":\"U8\","
	    "\"shape\":[0],\"data_offsets\":[2,1]}}", 0, 2, 0,
	    "end before" },
	{ "32 gap at 0", T("\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[1,3]"), 0, 3, 0, "previous tensor ends (0)" },
	{ "gap between", "{\"a\":{" U8_2 "},\"b\":{\"dtype\":\"U8\","
	    "\"shape\":[1],\"data_offsets\":[3,4]}}", 0, 4, 0,
	    "previous tensor ends (2)" },
	{ "33 overlap", "{\"a\":{" U8_2 "},\"b\":{" U8_2 "}}", 0, 2, 0,
	    "data_offsets [0, 2]" },
	{ "64 empty tensor far away", T("\"dtype\":\"U8\",\"shape\":[0],"
	    "\"data_offsets\":[9223372036854775807,9223372036854775807]"), 0,
	    0, 0, "previous tensor ends" },
	{ "34 I32 [2,2] in 4 bytes", T("\"dtype\":\"I32\",\"shape\":[2,2],"
	    "\"data_offsets\":[0,4]"), 0, 4, 0,
	    "tensor 't': data_offsets [0, 4] do not match shape [2, 2] x I32 "
	    "(16 bytes)" },
	{ "37 shape product overflow", T("\"dtype\":\"U8\",\"shape\":"
	    "[4294967296,4294967296],\"data_offsets\":[0,0]"), 0, 0, 0,
	    "element count" },
	{ "38 bits overflow", T("\"dtype\":\"F32\",\"shape\":"
	    "[2305843009213693952],\"data_offsets\":[0,0]"), 0, 0, 0,
	    "size in bits" },
	{ "90 [max,max,0]", T("\"dtype\":\"F32\",\"shape\":["
	    "4611686018427387904,4611686018427387904,0],"
	    "\"data_offsets\":[0,0]"), 0, 0, 0, "element count" },
	{ "47 F4 x3", T("\"dtype\":\"F4\",\"shape\":[3],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "whole number of bytes" },
	{ "87 F6 x3", T("\"dtype\":\"F6_E3M2\",\"shape\":[3],"
	    "\"data_offsets\":[0,2]"), 0, 2, 0, "whole number of bytes" },
	{ "50 name with NUL", "{\"a\\u0000b\":{" U8_2 "}}", 0, 2, 0, "NUL" },
	{ "65 lone surrogate", "{\"\\ud800\":{" U8_2 "}}", 0, 2, 0,
	    "invalid JSON" },
	{ "62 comment", "{/*c*/}", 0, 0, 0, "invalid JSON" },
	{ "67 raw NUL", "{\"a\0\":1}", 9, 0, 0, "invalid JSON" },
	{ "raw control char", "{\"a\n\":1}", 0, 0, 0, "invalid JSON" },
	{ "rank 17", T("\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,"
	    "1,1,1,1,2],\"data_offsets\":[0,2]"), 0, 2, 0,
	    "rank 17 exceeds" },
};

START_TEST(test_table)
{
	const struct stcase *c = &cases[_i];
	struct peftio_error err;
	struct peftio_st *st = NULL;
	unsigned char *buf;
	size_t hlen, len;
	int rc;

	hlen = c->hlen != 0 ? c->hlen : strlen(c->hdr);
	buf = mkfile(c->hdr, hlen, c->datalen, &len);
	memset(&err, 0, sizeof(err));
	rc = peftio_st_open_mem(&st, buf, len, LABEL, &err);
	if (c->ok) {
		ck_assert_msg(rc == 0, "case %s: %s", c->id, err.msg);
		ck_assert_ptr_nonnull(st);
	} else {
		ck_assert_msg(rc == PEFTIO_EFORMAT, "case %s accepted (%d)",
		    c->id, rc);
		ck_assert_ptr_null(st);
		ck_assert_msg(strncmp(err.msg, LABEL ": ",
		    strlen(LABEL) + 2) == 0, "case %s: %s", c->id, err.msg);
		ck_assert_msg(c->msg == NULL || strstr(err.msg, c->msg) != NULL,
		    "case %s: '%s' lacks '%s'", c->id, err.msg, c->msg);
		ck_assert_msg(strchr(err.msg, '\n') == NULL, "case %s: %s",
		    c->id, err.msg);
	}
	peftio_st_close(st);
	free(buf);
}
END_TEST

static int
open_buf(const unsigned char *buf, size_t len, struct peftio_error *err)
{
	struct peftio_st *st = NULL;
	int rc;

	rc = peftio_st_open_mem(&st, buf, len, LABEL, err);
	peftio_st_close(st);
	return rc;
}

/* Cases 01, 03, 04, 05 and 35, 36: the length fields. */
START_TEST(test_lengths)
{
	static const char hdr[] = "{\"t\":{" U8_2 "}}";
	struct peftio_error err;
	unsigned char *buf;
	size_t len;

	ck_assert_int_eq(open_buf((const unsigned char *)"", 0, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too small"));
	ck_assert_int_eq(open_buf((const unsigned char *)"\2\0\0\0\0\0\0", 7,
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too small"));

	buf = mkfile_n("{}", 2, UINT64_MAX, 0, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "exceeds the limit"));
	free(buf);
	buf = mkfile_n("{}", 2, 100000001, 0, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "exceeds the limit"));
	free(buf);
	/* The limit itself passes step 2 and fails step 3. */
	buf = mkfile_n("{}", 2, 100000000, 0, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "runs past the end"));
	free(buf);
	buf = mkfile_n("{}", 2, 100, 8, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "runs past the end"));
	free(buf);

	/* Exact size, one byte more (polyglot), two bytes fewer. */
	buf = mkfile(hdr, sizeof(hdr) - 1, 3, &len);
	ck_assert_int_eq(open_buf(buf, len - 1, &err), 0);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "1 bytes after the last tensor"));
	ck_assert_int_eq(open_buf(buf, len - 3, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	free(buf);
}
END_TEST

/* Steps in the reference's order: a JSON error wins over an offset
 * error, an offset error over a size mismatch, sizes over the total. */
START_TEST(test_error_order)
{
	struct peftio_error err;
	unsigned char *buf;
	size_t len;
	static const char h1[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[1,3]},\"b\":{\"dtype\":\"X\",\"shape\":[2],"
	    "\"data_offsets\":[0,2]}}";
	static const char h2[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],"
	    "\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],"
	    "\"data_offsets\":[3,5]}}";
	static const char h3[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],"
	    "\"data_offsets\":[0,2]}}";

	buf = mkfile(h1, sizeof(h1) - 1, 1, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "unknown dtype"));
	free(buf);
	buf = mkfile(h2, sizeof(h2) - 1, 0, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_msg(strstr(err.msg, "tensor 'a': data_offsets [0, 2] do not "
	    "match shape [3] x U8 (3 bytes)") != NULL, "%s", err.msg);
	free(buf);
	buf = mkfile(h3, sizeof(h3) - 1, 0, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "do not match"));
	free(buf);
}
END_TEST

static char *
nested(int depth)
{
	static const char pre[] = "{\"t\":{" U8_2 ",\"x\":";
	char *s = malloc(sizeof(pre) + 2 * (size_t)depth + 8);
	size_t o;
	int i;

	memcpy(s, pre, sizeof(pre) - 1);
	o = sizeof(pre) - 1;
	for (i = 0; i < depth; i++)
		s[o++] = '[';
	for (i = 0; i < depth; i++)
		s[o++] = ']';
	memcpy(s + o, "}}", 3);
	return s;
}

/* Cases 70 and 71: serde_json's depth limit, 127 nested levels (the top
 * object and the tensor object count as two). */
START_TEST(test_depth)
{
	struct peftio_error err;
	unsigned char *buf;
	size_t len;
	char *h;

	h = nested(120);
	buf = mkfile(h, strlen(h), 2, &len);
	ck_assert_msg(open_buf(buf, len, &err) == 0, "%s", err.msg);
	free(buf);
	free(h);
	h = nested(125);
	buf = mkfile(h, strlen(h), 2, &len);
	ck_assert_msg(open_buf(buf, len, &err) == 0, "%s", err.msg);
	free(buf);
	free(h);
	h = nested(126);
	buf = mkfile(h, strlen(h), 2, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	free(buf);
	free(h);
	h = nested(200);
	buf = mkfile(h, strlen(h), 2, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "nested deeper"));
	free(buf);
	free(h);
}
END_TEST

START_TEST(test_long_name)
{
	struct peftio_error err;
	unsigned char *buf;
	size_t len, n;
	char *h;

	for (n = 65536; n <= 65537; n++) {
		h = malloc(n + 64);
		h[0] = '{';
		h[1] = '"';
		memset(h + 2, 'n', n);
		snprintf(h + 2 + n, 62, "\":{" U8_2 "}}");
		buf = mkfile(h, strlen(h), 2, &len);
		if (n == 65536)
			ck_assert_int_eq(open_buf(buf, len, &err), 0);
		else {
			ck_assert_int_eq(open_buf(buf, len, &err),
			    PEFTIO_EFORMAT);
			ck_assert_ptr_nonnull(strstr(err.msg, "limit"));
			ck_assert_uint_lt(strlen(err.msg), 600);
		}
		free(buf);
		free(h);
	}
}
END_TEST

/*
 * A name given twice is named in the message, however long (the JSON
 * parser quotes only short tokens) and as it is written in the header.
 */
START_TEST(test_duplicate_named)
{
	static const struct {
		const char	*hdr;
		const char	*msg;
	} c[] = {
		{ "{\"model.layers.0.mlp.up_proj.weight\":{" U8_2 "},"
		    "\"model.layers.0.mlp.up_proj.weight\":{" U8_2 "}}",
		    "duplicate key 'model.layers.0.mlp.up_proj.weight'" },
		{ "{\"a\\\"b\\\\\":{" U8_2 "},\"a\\\"b\\\\\":{" U8_2 "}}",
		    "duplicate key 'a\\\"b\\\\'" },
		{ "{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[2],"
		    "\"data_offsets\":[0,2]}}", "duplicate key 'dtype'" },
		{ "{\"__metadata__\":{\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\":\"1\","
		    "\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\":\"2\"}}",
		    "duplicate key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'" },
	};
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf;
	size_t i, len;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		buf = mkfile(c[i].hdr, strlen(c[i].hdr), 4, &len);
		ck_assert_int_eq(peftio_st_open_mem(&st, buf, len, LABEL,
		    &err), PEFTIO_EFORMAT);
		ck_assert_msg(strstr(err.msg, c[i].msg) != NULL,
		    "'%s' lacks '%s'", err.msg, c[i].msg);
		ck_assert_ptr_nonnull(strstr(err.msg, LABEL ": "));
		free(buf);
	}
}
END_TEST

/* What an accepted file looks like through the API. */
START_TEST(test_accept_details)
{
	static const char h[] = "  {\"__metadata__\":{\"z\":\"1\",\"a\":\"2\","
	    "\"format\":\"pt\"},"
	    "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]},"
	    "\"e\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[5,5]},"
	    "\"s\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}} ";
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf;
	const void *d;
	size_t len;

	buf = mkfile(h, sizeof(h) - 1, 5, &len);
	ck_assert_int_eq(peftio_st_open_mem(&st, buf, len, NULL, &err), 0);
	ck_assert_str_eq(peftio_st_path(st), "<memory>");
	ck_assert_uint_eq(peftio_st_count(st), 3);
	t = peftio_st_tensor(st, 0);
	ck_assert_str_eq(t->name, "s");
	ck_assert_int_eq(t->dtype, PEFTIO_F4);
	ck_assert_uint_eq(t->numel, 2);
	ck_assert_uint_eq(t->nbytes, 1);
	ck_assert_uint_eq(t->offset, 0);
	t = peftio_st_tensor(st, 1);
	ck_assert_str_eq(t->name, "w");
	ck_assert_int_eq(t->ndim, 1);
	ck_assert_uint_eq(t->shape[0], 1);
	ck_assert_uint_eq(t->offset, 1);
	ck_assert_int_eq(peftio_st_data(st, 1, &d, &err), 0);
	ck_assert_ptr_eq(d, buf + 8 + sizeof(h) - 1 + 1);
	t = peftio_st_tensor(st, 2);
	ck_assert_str_eq(t->name, "e");
	ck_assert_uint_eq(t->numel, 0);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_ptr_null(peftio_st_tensor(st, 3));
	ck_assert_int_eq(peftio_st_data(st, 3, &d, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_st_find(st, "w"), 1);
	ck_assert_int_eq(peftio_st_find(st, "e"), 2);
	ck_assert_int_eq(peftio_st_find(st, "x"), -1);
	ck_assert_int_eq(peftio_st_find(st, "__metadata__"), -1);
	ck_assert_uint_eq(peftio_st_meta_count(st), 3);
	ck_assert_str_eq(peftio_st_meta_key(st, 0), "z");
	ck_assert_str_eq(peftio_st_meta_key(st, 1), "a");
	ck_assert_str_eq(peftio_st_meta_value(st, 2), "pt");
	ck_assert_ptr_null(peftio_st_meta_key(st, 3));
	ck_assert_str_eq(peftio_st_meta_get(st, "a"), "2");
	ck_assert_str_eq(peftio_st_meta_get(st, "format"), "pt");
	ck_assert_ptr_null(peftio_st_meta_get(st, "b"));
	peftio_st_release(st, 1);
	peftio_st_close(st);
	free(buf);
}
END_TEST

/* Every prefix of a valid file, and random corruptions: no crash. */
START_TEST(test_mutations)
{
	static const char h[] = "{\"__metadata__\":{\"format\":\"pt\"},"
	    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],"
	    "\"data_offsets\":[16,22]}}";
	struct peftio_error err;
	unsigned char *buf, *m;
	uint64_t s = 7;
	size_t len, i, k;

	buf = mkfile(h, sizeof(h) - 1, 22, &len);
	ck_assert_int_eq(open_buf(buf, len, &err), 0);
	for (i = 0; i < len; i++)
		ck_assert_int_eq(open_buf(buf, i, &err), PEFTIO_EFORMAT);
	m = malloc(len);
	for (i = 0; i < 20000; i++) {
		memcpy(m, buf, len);
		for (k = 0; k < 1 + i % 3; k++)
			m[tu_rand(&s) % len] = (unsigned char)tu_rand(&s);
		(void)open_buf(m, len, &err);
	}
	free(m);
	free(buf);
}
END_TEST


/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

#define MIN(a, b)	((a) < (b) ? (a) : (b))
#define W_TEST		(PEFTIO_W_NOSYNC)

struct wt {
	const char	*name;
	enum peftio_dtype dt;
	int		 ndim;
	uint64_t	 shape[4];
};

/* The formats.md 1.6 example, declared out of order. */
static const struct wt example[] = {
	{ "c", PEFTIO_U8, 1, { 3 } },
	{ "b.bias", PEFTIO_F16, 1, { 2 } },
	{ "a.weight", PEFTIO_F32, 2, { 2, 2 } },
	{ "d", PEFTIO_I64, 1, { 1 } },
	{ "a.norm", PEFTIO_BF16, 1, { 1 } },
};

static const char example_hdr[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"d\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
    "\"a.norm\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[24,26]},"
    "\"b.bias\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[26,30]},"
    "\"c\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[30,33]}}     ";

static const char *const file_order[] = { "d", "a.weight", "a.norm",
    "b.bias", "c" };

/* Payload byte j of the tensor called name. */
static unsigned char
payload(const char *name, uint64_t j)
{
	return (unsigned char)(name[0] * 31 + j * 7 + strlen(name));
}

static void
declare_example(struct peftio_stw *w)
{
	struct peftio_error err;
	size_t i;

	for (i = 0; i < 5; i++)
		ck_assert_msg(peftio_stw_declare(w, example[i].name,
		    example[i].dt, example[i].ndim, example[i].shape,
		    &err) == 0, "%s", err.msg);
}

/* Write tensor x of w whole, in pieces of at most piece bytes. */
static void
write_tensor(struct peftio_stw *w, size_t x, size_t piece)
{
	const struct peftio_tensor_info *t = peftio_stw_tensor(w, x);
	struct peftio_error err;
	unsigned char *buf;
	size_t j, n;

	buf = malloc(t->nbytes + 1);
	for (j = 0; j < t->nbytes; j++)
		buf[j] = payload(t->name, j);
	for (j = 0; j < t->nbytes; j += n) {
		n = MIN(piece, (size_t)t->nbytes - j);
		ck_assert_msg(peftio_stw_write(w, x, buf + j, n, &err) == 0,
		    "%s", err.msg);
	}
	free(buf);
}

/*
 * Write the example to path, writing the tensors in a scrambled order
 * in pieces of at most piece bytes.
 */
static int
write_example(const char *path, unsigned flags, size_t piece,
    struct peftio_error *err)
{
	static const char *const order[] = { "c", "a.norm", "d", "b.bias",
	    "a.weight" };
	struct peftio_stw *w;
	size_t k;
	long x;
	int rc;

	if ((rc = peftio_stw_create(&w, path, flags, err)) != 0)
		return rc;
	declare_example(w);
	ck_assert_int_eq(peftio_stw_find(w, "c"), 0);
	ck_assert_int_eq(peftio_stw_layout(w, err), 0);
	ck_assert_uint_eq(peftio_stw_count(w), 5);
	for (k = 0; k < 5; k++)
		ck_assert_int_eq(peftio_stw_find(w, file_order[k]), (long)k);
	if (flags & PEFTIO_W_NOCHECKSUM)
		ck_assert_uint_eq(peftio_stw_file_size(w), 369);
	for (k = 0; k < 5; k++) {
		x = peftio_stw_find(w, order[k]);
		ck_assert_int_ge(x, 0);
		write_tensor(w, (size_t)x, piece);
	}
	rc = peftio_stw_commit(w, err);
	peftio_stw_free(w);
	return rc;
}

/* Entries of the directory besides . and .. */
static int
dir_entries(const char *dir)
{
	struct dirent *e;
	DIR *d;
	int n = 0;

	d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static uint64_t
get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

START_TEST(test_writer_example_bytes)
{
	struct peftio_error err;
	const char *dir = tu_tmpdir();
	unsigned char *f;
	size_t len;

	ck_assert_int_eq(write_example(tu_path("a.safetensors"),
	    W_TEST | PEFTIO_W_NOCHECKSUM, 64, &err), 0);
	f = tu_read_file(tu_path("a.safetensors"), &len);
	ck_assert_uint_eq(len, 369);
	ck_assert_uint_eq(sizeof(example_hdr) - 1, 328);
	ck_assert_uint_eq(get_le64(f), 328);
	ck_assert_mem_eq(f + 8, example_hdr, 328);
	free(f);
	ck_assert_int_eq(dir_entries(dir), 1);
}
END_TEST

/* safetensors' test_serialization vector, plus our __metadata__. */
START_TEST(test_writer_serialization_vector)
{
	static const char ref[] = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":"
	    "[1,2,3],\"data_offsets\":[0,24]}}";
	static const uint64_t shape[] = { 1, 2, 3 };
	struct peftio_error err;
	struct peftio_stw *w;
	unsigned char *f, zero[24] = { 0 };
	char want[256];
	size_t len, n;

	tu_tmpdir();
	ck_assert_uint_eq(sizeof(ref) - 1, 64);
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("v.safetensors"),
	    W_TEST | PEFTIO_W_NOCHECKSUM, &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "attn.0", PEFTIO_F32, 3, shape,
	    &err), 0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, 0, zero, 24, &err), 0);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);
	n = (size_t)snprintf(want, sizeof(want),
	    "{\"__metadata__\":{\"format\":\"pt\"},%s", ref + 1);
	while (n % 8 != 0)
		want[n++] = ' ';
	f = tu_read_file(tu_path("v.safetensors"), &len);
	ck_assert_uint_eq(n, 96);
	ck_assert_uint_eq(len, 8 + n + 24);
	ck_assert_uint_eq(get_le64(f), n);
	ck_assert_mem_eq(f + 8, want, n);
	ck_assert_mem_eq(f + 8 + n, zero, 24);
	free(f);
}
END_TEST

/* JSON strings as serde_json writes them and as Python's json.dumps. */
START_TEST(test_json_string)
{
	static const char in[] = "a\"\\\n\x01\x7f\xc3\xa9\xf0\x9f\x98\x80z";
	static const char serde[] = "\"a\\\"\\\\\\n\\u0001\x7f\xc3\xa9"
	    "\xf0\x9f\x98\x80z\"";
	static const char python[] = "\"a\\\"\\\\\\n\\u0001\\u007f\\u00e9"
	    "\\ud83d\\ude00z\"";
	struct peftio_sbuf b = { 0 };

	peftio_sb_json(&b, in, sizeof(in) - 1, 0);
	ck_assert_int_eq(b.oom, 0);
	ck_assert_str_eq(b.p, serde);
	b.len = 0;
	peftio_sb_json(&b, in, sizeof(in) - 1, 1);
	ck_assert_str_eq(b.p, python);
	ck_assert_uint_eq(b.len, sizeof(python) - 1);
	free(b.p);
}
END_TEST

/* Stored checksums are checked per tensor; a changed byte is caught. */
START_TEST(test_verify)
{
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *f;
	size_t len, i;
	uint64_t end;
	long x;

	tu_tmpdir();
	ck_assert_int_eq(write_example(tu_path("v.safetensors"), W_TEST, 5,
	    &err), 0);
	ck_assert_msg(peftio_ckpt_open(&c, tu_path("v.safetensors"), &err)
	    == 0, "%s", err.msg);
	for (i = 0; i < peftio_ckpt_count(c); i++)
		ck_assert_msg(peftio_ckpt_verify(c, i, &err) == 0, "%s",
		    err.msg);
	ck_assert_int_eq(peftio_ckpt_verify(c, peftio_ckpt_count(c), &err),
	    PEFTIO_EINVAL);
	x = peftio_ckpt_find(c, "d");
	ck_assert_int_ge(x, 0);
	t = peftio_ckpt_tensor(c, (size_t)x);
	ck_assert_uint_gt(t->nbytes, 0);
	end = t->offset + t->nbytes;
	peftio_ckpt_close(c);

	/* flip the last byte of tensor d's data */
	f = tu_read_file(tu_path("v.safetensors"), &len);
	f[8 + get_le64(f) + end - 1] ^= 0x40;
	tu_write_file(tu_path("v.safetensors"), f, len);
	free(f);
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path("v.safetensors"), &err),
	    0);
	x = peftio_ckpt_find(c, "d");
	ck_assert_int_eq(peftio_ckpt_verify(c, (size_t)x, &err),
	    PEFTIO_ECHECKSUM);
	ck_assert_int_eq(err.code, PEFTIO_ECHECKSUM);
	ck_assert_ptr_nonnull(strstr(err.msg, "tensor 'd': checksum mismatch"));
	ck_assert_int_eq(peftio_ckpt_verify(c, (size_t)peftio_ckpt_find(c,
	    "c"), &err), 0);
	peftio_ckpt_close(c);

	/* no stored checksums: 1 */
	ck_assert_int_eq(write_example(tu_path("n.safetensors"),
	    W_TEST | PEFTIO_W_NOCHECKSUM, 5, &err), 0);
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path("n.safetensors"), &err),
	    0);
	for (i = 0; i < peftio_ckpt_count(c); i++)
		ck_assert_int_eq(peftio_ckpt_verify(c, i, &err), 1);
	peftio_ckpt_close(c);
}
END_TEST

START_TEST(test_writer_roundtrip)
{
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *f1, *f2, *want, *got;
	const unsigned char *d;
	const void *dv;
	char key[64], hex[17];
	size_t l1, l2, i, j;
	uint64_t n;

	tu_tmpdir();
	ck_assert_int_eq(write_example(tu_path("1.safetensors"), W_TEST, 1,
	    &err), 0);
	ck_assert_int_eq(write_example(tu_path("2.safetensors"), W_TEST, 3,
	    &err), 0);
	f1 = tu_read_file(tu_path("1.safetensors"), &l1);
	f2 = tu_read_file(tu_path("2.safetensors"), &l2);
	ck_assert_uint_eq(l1, l2);
	ck_assert_mem_eq(f1, f2, l1);	/* deterministic */
	n = get_le64(f1);
	ck_assert_uint_eq(n % 8, 0);
	ck_assert_uint_eq(l1, 8 + n + 33);
	for (i = 8 + n - 1; f1[i] == ' '; i--)
		;
	ck_assert_int_eq(f1[i], '}');
	ck_assert_uint_lt(8 + n - 1 - i, 8);

	ck_assert_msg(peftio_st_open(&st, tu_path("1.safetensors"), &err) == 0,
	    "%s", err.msg);
	ck_assert_uint_eq(peftio_st_count(st), 5);
	for (i = 0; i < 5; i++) {
		t = peftio_st_tensor(st, i);
		ck_assert_str_eq(t->name, file_order[i]);
		ck_assert_int_eq(peftio_st_data(st, i, &dv, &err), 0);
		d = dv;
		want = malloc(t->nbytes);
		for (j = 0; j < t->nbytes; j++) {
			want[j] = payload(t->name, j);
			ck_assert_uint_eq(d[j], want[j]);
		}
		/* pread of the whole tensor, of its tail, and past it */
		got = malloc(t->nbytes + 1);
		ck_assert_int_eq(peftio_st_read(st, i, 0, got, t->nbytes,
		    &err), 0);
		ck_assert_mem_eq(got, want, t->nbytes);
		if (t->nbytes > 1) {
			ck_assert_int_eq(peftio_st_read(st, i, 1, got,
			    t->nbytes - 1, &err), 0);
			ck_assert_mem_eq(got, want + 1, t->nbytes - 1);
		}
		ck_assert_int_eq(peftio_st_read(st, i, 1, got, t->nbytes,
		    &err), PEFTIO_EINVAL);
		ck_assert_ptr_nonnull(strstr(err.msg, t->name));
		free(got);
		snprintf(key, sizeof(key), "xxh3.%s", t->name);
		snprintf(hex, sizeof(hex), "%016" PRIx64,
		    (uint64_t)XXH3_64bits(want, t->nbytes));
		ck_assert_ptr_nonnull(peftio_st_meta_get(st, key));
		ck_assert_str_eq(peftio_st_meta_get(st, key), hex);
		free(want);
	}
	ck_assert_uint_eq(peftio_st_meta_count(st), 6);
	ck_assert_str_eq(peftio_st_meta_key(st, 0), "format");
	ck_assert_str_eq(peftio_st_meta_value(st, 0), "pt");
	for (i = 1; i < 6; i++)
		ck_assert_int_lt(strcmp(peftio_st_meta_key(st, i - 1),
		    peftio_st_meta_key(st, i)), 0);
	ck_assert_str_eq(peftio_st_path(st), tu_path("1.safetensors"));
	peftio_st_close(st);
	free(f1);
	free(f2);
}
END_TEST

START_TEST(test_writer_incomplete)
{
	struct peftio_error err;
	struct peftio_stw *w;
	const char *dir = tu_tmpdir();
	unsigned char b[8] = { 0 };
	long x;

	ck_assert_int_eq(peftio_stw_create(&w, tu_path("o.safetensors"),
	    W_TEST, &err), 0);
	declare_example(w);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(dir_entries(dir), 1);	/* the temporary file */
	write_tensor(w, (size_t)peftio_stw_find(w, "d"), 8);
	x = peftio_stw_find(w, "a.weight");
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 5, &err), 0);
	ck_assert_int_eq(peftio_stw_commit(w, &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("o.safetensors")));
	ck_assert_ptr_nonnull(strstr(err.msg,
	    "tensor 'a.weight': only 5 of 16 bytes written"));
	ck_assert_int_eq(peftio_stw_commit(w, &err), PEFTIO_EINVAL);
	peftio_stw_free(w);
	ck_assert_int_eq(dir_entries(dir), 0);

	/* Freed before commit: nothing left either. */
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("o.safetensors"),
	    W_TEST, &err), 0);
	declare_example(w);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	write_tensor(w, 0, 3);
	peftio_stw_free(w);
	ck_assert_int_eq(dir_entries(dir), 0);
	peftio_stw_free(NULL);
}
END_TEST

START_TEST(test_writer_past_end)
{
	struct peftio_error err;
	struct peftio_stw *w;
	unsigned char b[32] = { 0 };
	long x;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("o.safetensors"),
	    W_TEST, &err), 0);
	declare_example(w);
	ck_assert_int_eq(peftio_stw_write(w, 0, b, 1, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), PEFTIO_EINVAL);
	x = peftio_stw_find(w, "c");
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 2, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 2, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "tensor 'c': 1 bytes written "
	    "past its size of 3 bytes"));
	ck_assert_int_eq(peftio_stw_write(w, 5, b, 1, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 0, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 1, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, (size_t)x, b, 1, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "z", PEFTIO_U8, 0, NULL, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_meta(w, "z", "1", &err), PEFTIO_EINVAL);
	for (x = 0; x < 4; x++)
		write_tensor(w, (size_t)x, 5);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, 0, b, 1, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_commit(w, &err), PEFTIO_EINVAL);
	peftio_stw_free(w);
}
END_TEST

START_TEST(test_writer_exists)
{
	struct peftio_error err;
	struct peftio_stw *w;
	const char *dir = tu_tmpdir();
	unsigned char *f;
	size_t len;

	tu_write_file(tu_path("o.safetensors"), "old", 3);
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("o.safetensors"),
	    W_TEST, &err), PEFTIO_EEXIST);
	ck_assert_ptr_null(w);
	ck_assert_ptr_nonnull(strstr(err.msg, "already exists"));
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("o.safetensors")));
	f = tu_read_file(tu_path("o.safetensors"), &len);
	ck_assert_uint_eq(len, 3);
	ck_assert_mem_eq(f, "old", 3);
	free(f);
	ck_assert_int_eq(dir_entries(dir), 1);

	ck_assert_int_eq(write_example(tu_path("o.safetensors"),
	    W_TEST | PEFTIO_W_FORCE | PEFTIO_W_NOCHECKSUM, 7, &err), 0);
	f = tu_read_file(tu_path("o.safetensors"), &len);
	ck_assert_uint_eq(len, 369);
	free(f);
	ck_assert_int_eq(dir_entries(dir), 1);

	/* The destination appears while the file is being written. */
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("n.safetensors"),
	    W_TEST | PEFTIO_W_NOCHECKSUM, &err), 0);
	declare_example(w);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	for (len = 0; len < 5; len++)
		write_tensor(w, len, 64);
	tu_write_file(tu_path("n.safetensors"), "new", 3);
	ck_assert_int_eq(peftio_stw_commit(w, &err), PEFTIO_EEXIST);
	peftio_stw_free(w);
	f = tu_read_file(tu_path("n.safetensors"), &len);
	ck_assert_uint_eq(len, 3);
	free(f);
	ck_assert_int_eq(dir_entries(dir), 2);
}
END_TEST

START_TEST(test_writer_no_dir)
{
	struct peftio_error err;
	struct peftio_stw *w = NULL;
	const char *dir = tu_tmpdir();

	ck_assert_int_eq(peftio_stw_create(&w, tu_path("nope/o.safetensors"),
	    W_TEST, &err), PEFTIO_EIO);
	ck_assert_ptr_null(w);
	ck_assert_ptr_nonnull(strstr(err.msg, "nope/o.safetensors"));
	ck_assert_int_eq(dir_entries(dir), 0);
	/* A directory as the destination. */
	ck_assert_int_eq(peftio_stw_create(&w, dir, W_TEST | PEFTIO_W_FORCE,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));
	ck_assert_int_eq(dir_entries(dir), 0);
}
END_TEST

START_TEST(test_writer_escape)
{
	static const char *const names[] = {
		"q\"uote", "back\\slash", "ctl\x01\x1f\n\t\b\f\r",
		"\xc3\xa9t\xc3\xa9",
		"", "slash/\x7f"
	};
	struct peftio_error err;
	struct peftio_stw *w;
	struct peftio_st *st;
	unsigned char *f;
	uint64_t one = 1;
	size_t len, i;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("e.safetensors"),
	    W_TEST, &err), 0);
	for (i = 0; i < 6; i++)
		ck_assert_int_eq(peftio_stw_declare(w, names[i], PEFTIO_U8, 1,
		    &one, &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "k\x02", "v\"\xe2\x82\xac", &err),
	    0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	for (i = 0; i < 6; i++)
		write_tensor(w, i, 1);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);

	f = tu_read_file(tu_path("e.safetensors"), &len);
	f[len - 6] = '\0';	/* the data */
	ck_assert_ptr_nonnull(strstr((char *)f + 8,
	    "\"ctl\\u0001\\u001f\\n\\t\\b\\f\\r\":{"));
	ck_assert_ptr_nonnull(strstr((char *)f + 8, "\"q\\\"uote\":{"));
	ck_assert_ptr_nonnull(strstr((char *)f + 8, "\"back\\\\slash\":{"));
	ck_assert_ptr_nonnull(strstr((char *)f + 8, "\"\xc3\xa9t\xc3\xa9\":{"));
	ck_assert_ptr_nonnull(strstr((char *)f + 8, "\"slash/\x7f\":{"));
	ck_assert_ptr_nonnull(strstr((char *)f + 8,
	    "\"k\\u0002\":\"v\\\"\xe2\x82\xac\""));
	free(f);

	ck_assert_int_eq(peftio_st_open(&st, tu_path("e.safetensors"), &err),
	    0);
	ck_assert_uint_eq(peftio_st_count(st), 6);
	for (i = 0; i < 6; i++)
		ck_assert_int_ge(peftio_st_find(st, names[i]), 0);
	ck_assert_str_eq(peftio_st_meta_get(st, "k\x02"), "v\"\xe2\x82\xac");
	ck_assert_ptr_nonnull(peftio_st_meta_get(st, "xxh3."));
	peftio_st_close(st);
}
END_TEST

START_TEST(test_writer_meta)
{
	struct peftio_error err;
	struct peftio_stw *w;
	struct peftio_st *st;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("m.safetensors"),
	    W_TEST, &err), 0);
	declare_example(w);
	ck_assert_int_eq(peftio_stw_meta(w, "zeta", "1", &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "alpha", "2", &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "format", "mlx", &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "xxh3.c", "0", &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_meta(w, "bad\xff", "0", &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_meta(w, NULL, "0", &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	write_tensor(w, 0, 8);
	write_tensor(w, 1, 8);
	write_tensor(w, 2, 8);
	write_tensor(w, 3, 8);
	write_tensor(w, 4, 8);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("m.safetensors"), &err),
	    0);
	ck_assert_uint_eq(peftio_st_meta_count(st), 8);
	ck_assert_str_eq(peftio_st_meta_key(st, 0), "alpha");
	ck_assert_str_eq(peftio_st_meta_key(st, 1), "format");
	ck_assert_str_eq(peftio_st_meta_value(st, 1), "mlx");
	ck_assert_str_eq(peftio_st_meta_key(st, 2), "xxh3.a.norm");
	ck_assert_str_eq(peftio_st_meta_key(st, 7), "zeta");
	peftio_st_close(st);

	/* The same key twice. */
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("d.safetensors"),
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "k", "1", &err), 0);
	ck_assert_int_eq(peftio_stw_meta(w, "k", "2", &err), 0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "'k' given twice"));
	peftio_stw_free(w);
}
END_TEST

START_TEST(test_writer_declare_errors)
{
	static const uint64_t three = 3, big[2] = { 1ULL << 32, 1ULL << 32 };
	static const uint64_t shape17[17] = { 1 };
	struct peftio_error err;
	struct peftio_stw *w;
	char *longname;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("x.safetensors"),
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "a", PEFTIO_U8, 1, &three,
	    &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "a", PEFTIO_F32, 1, &three,
	    &err), PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "'a' declared twice"));
	ck_assert_int_eq(peftio_stw_declare(w, "__metadata__", PEFTIO_U8, 1,
	    &three, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b", PEFTIO_U8, 17, shape17,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b", PEFTIO_U8, -1, NULL,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b", PEFTIO_U8, 1, NULL,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b", PEFTIO_F4, 1, &three,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b", PEFTIO_U8, 2, big, &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "overflows"));
	ck_assert_int_eq(peftio_stw_declare(w, "b", (enum peftio_dtype)99, 1,
	    &three, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, "b\xc0\x80", PEFTIO_U8, 1,
	    &three, &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_stw_declare(w, NULL, PEFTIO_U8, 1, &three,
	    &err), PEFTIO_EINVAL);
	longname = malloc(65538);
	memset(longname, 'x', 65537);
	longname[65537] = '\0';
	ck_assert_int_eq(peftio_stw_declare(w, longname, PEFTIO_U8, 1, &three,
	    &err), PEFTIO_EINVAL);
	longname[65536] = '\0';
	ck_assert_int_eq(peftio_stw_declare(w, longname, PEFTIO_U8, 1, &three,
	    &err), 0);
	free(longname);
	ck_assert_int_eq(peftio_stw_declare(w, "scalar", PEFTIO_F32, 0, NULL,
	    &err), 0);
	ck_assert_uint_eq(peftio_stw_count(w), 3);
	ck_assert_int_eq(peftio_stw_find(w, "b"), -1);
	ck_assert_int_eq(peftio_stw_find(w, NULL), -1);
	ck_assert_ptr_null(peftio_stw_tensor(w, 3));
	ck_assert_uint_eq(peftio_stw_tensor(w, 2)->nbytes, 4);
	ck_assert_uint_eq(peftio_stw_tensor(w, 2)->numel, 1);
	ck_assert_uint_eq(peftio_stw_file_size(w), 0);
	peftio_stw_free(w);
}
END_TEST

/* No tensors; zero-byte tensors and their checksums. */
START_TEST(test_writer_empty)
{
	static const uint64_t zero = 0;
	struct peftio_error err;
	struct peftio_stw *w;
	struct peftio_st *st;
	unsigned char *f;
	char hex[17];
	size_t len;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("e.safetensors"),
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);
	f = tu_read_file(tu_path("e.safetensors"), &len);
	ck_assert_uint_eq(len, 40);
	ck_assert_mem_eq(f + 8, "{\"__metadata__\":{\"format\":\"pt\"}}", 32);
	free(f);

	ck_assert_int_eq(peftio_stw_create(&w, tu_path("z.safetensors"),
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "e", PEFTIO_F32, 1, &zero,
	    &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "s", PEFTIO_U8, 0, NULL, &err),
	    0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_stw_commit(w, &err), PEFTIO_EINVAL);
	peftio_stw_free(w);

	ck_assert_int_eq(peftio_stw_create(&w, tu_path("z.safetensors"),
	    W_TEST, &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "e", PEFTIO_F32, 1, &zero,
	    &err), 0);
	ck_assert_int_eq(peftio_stw_declare(w, "s", PEFTIO_U8, 0, NULL, &err),
	    0);
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_stw_write(w, 1, "x", 1, &err), 0);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("z.safetensors"), &err),
	    0);
	ck_assert_uint_eq(peftio_st_count(st), 2);
	snprintf(hex, sizeof(hex), "%016" PRIx64,
	    (uint64_t)XXH3_64bits("", 0));
	ck_assert_str_eq(peftio_st_meta_get(st, "xxh3.e"), hex);
	snprintf(hex, sizeof(hex), "%016" PRIx64,
	    (uint64_t)XXH3_64bits("x", 1));
	ck_assert_str_eq(peftio_st_meta_get(st, "xxh3.s"), hex);
	peftio_st_close(st);
}
END_TEST

/* Many tensors of every dtype: order, alignment, lookups. */
START_TEST(test_writer_many)
{
	enum { N = 3000 };
	const struct peftio_tensor_info *t, *p;
	struct peftio_error err;
	struct peftio_stw *w;
	struct peftio_st *st;
	uint64_t s = 5, shape[2];
	size_t i, *perm, k, tmp;
	char name[32];
	unsigned bits;

	tu_tmpdir();
	ck_assert_int_eq(peftio_stw_create(&w, tu_path("many.safetensors"),
	    W_TEST, &err), 0);
	for (i = 0; i < N; i++) {
		enum peftio_dtype dt = (enum peftio_dtype)(tu_rand(&s) %
		    PEFTIO_DTYPE_COUNT);

		snprintf(name, sizeof(name), "layer.%zu.w%d", (i * 7919) % N,
		    (int)(tu_rand(&s) % 3));
		shape[0] = 1 + tu_rand(&s) % 5;
		shape[1] = 8;
		ck_assert_int_eq(peftio_stw_declare(w, name, dt, 2, shape,
		    &err), 0);
	}
	ck_assert_int_eq(peftio_stw_layout(w, &err), 0);
	perm = malloc(N * sizeof(*perm));
	for (i = 0; i < N; i++)
		perm[i] = i;
	for (i = N - 1; i > 0; i--) {
		k = tu_rand(&s) % (i + 1);
		tmp = perm[i];
		perm[i] = perm[k];
		perm[k] = tmp;
	}
	for (i = 0; i < N; i++)
		write_tensor(w, perm[i], 5);
	free(perm);
	ck_assert_int_eq(peftio_stw_commit(w, &err), 0);
	peftio_stw_free(w);

	ck_assert_int_eq(peftio_st_open(&st, tu_path("many.safetensors"),
	    &err), 0);
	ck_assert_uint_eq(peftio_st_count(st), N);
	ck_assert_uint_eq(peftio_st_meta_count(st), N + 1);
	for (i = 0; i < N; i++) {
		t = peftio_st_tensor(st, i);
		ck_assert_int_eq(peftio_st_find(st, t->name), (long)i);
		bits = peftio_dtype_bits(t->dtype);
		if (bits >= 8)
			ck_assert_uint_eq(t->offset % (bits / 8), 0);
		if (i > 0) {
			p = peftio_st_tensor(st, i - 1);
			ck_assert(p->dtype > t->dtype || (p->dtype ==
			    t->dtype && strcmp(p->name, t->name) < 0));
		}
	}
	peftio_st_close(st);
}
END_TEST

/* Run fn in a child with stdout redirected to fd; returns its status. */
static int
in_child_stdout(int fd, int (*fn)(void))
{
	pid_t pid;
	int status;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(fd, STDOUT_FILENO);
		close(fd);
		_exit(fn());
	}
	close(fd);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static int
child_write_example(void)
{
	struct peftio_error err;

	return write_example("-", W_TEST, 5, &err) == 0 ? 0 : 1;
}

static int
child_abort_example(void)
{
	struct peftio_error err;
	struct peftio_stw *w;

	if (peftio_stw_create(&w, "-", W_TEST, &err) != 0)
		return 1;
	declare_example(w);
	if (peftio_stw_layout(w, &err) != 0)
		return 1;
	write_tensor(w, 0, 8);
	write_tensor(w, 1, 8);
	peftio_stw_free(w);
	return 0;
}

/* Output to "-": a pipe (spooled) and a regular file (direct). */
START_TEST(test_writer_stdout)
{
	struct peftio_error err;
	unsigned char *want, *got, buf[4096];
	size_t wl, gl = 0;
	int p[2], fd, status;
	pid_t pid;
	ssize_t n;

	tu_tmpdir();
	ck_assert_int_eq(write_example(tu_path("ref.safetensors"), W_TEST, 5,
	    &err), 0);
	want = tu_read_file(tu_path("ref.safetensors"), &wl);

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], STDOUT_FILENO);
		close(p[1]);
		_exit(child_write_example());
	}
	close(p[1]);
	got = malloc(wl + 4096);
	while ((n = read(p[0], buf, sizeof(buf))) > 0) {
		ck_assert_uint_le(gl + (size_t)n, wl);
		memcpy(got + gl, buf, (size_t)n);
		gl += (size_t)n;
	}
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_uint_eq(gl, wl);
	ck_assert_mem_eq(got, want, wl);
	free(got);

	fd = open(tu_path("out.safetensors"), O_WRONLY | O_CREAT | O_TRUNC,
	    0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(in_child_stdout(fd, child_write_example), 0);
	got = tu_read_file(tu_path("out.safetensors"), &gl);
	ck_assert_uint_eq(gl, wl);
	ck_assert_mem_eq(got, want, wl);
	free(got);

	/* A writer freed before commit leaves an empty file. */
	fd = open(tu_path("out.safetensors"), O_WRONLY | O_TRUNC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(in_child_stdout(fd, child_abort_example), 0);
	got = tu_read_file(tu_path("out.safetensors"), &gl);
	ck_assert_uint_eq(gl, 0);
	free(got);
	free(want);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reading files and pipes                                             */
/* ------------------------------------------------------------------ */

/* Fork a child that writes len bytes of buf to fd in uneven pieces. */
static pid_t
feed(int fd, const unsigned char *buf, size_t len)
{
	uint64_t s = 3;
	size_t o, n;
	ssize_t w;
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid != 0)
		return pid;
	signal(SIGPIPE, SIG_DFL);
	for (o = 0; o < len; o += (size_t)w) {
		n = 1 + tu_rand(&s) % 300000;
		n = MIN(len - o, n);
		if ((w = write(fd, buf + o, n)) <= 0)
			_exit(1);
	}
	_exit(0);
}

static void
reap(pid_t pid)
{
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}

/* A large file: a 9 MB U8 tensor and an F32. */
static unsigned char *
big_file(size_t *len, size_t *hlen)
{
	static const char h[] = "{\"__metadata__\":{\"format\":\"pt\"},"
	    "\"big\":{\"dtype\":\"U8\",\"shape\":[9000000],"
	    "\"data_offsets\":[0,9000000]},"
	    "\"f\":{\"dtype\":\"F32\",\"shape\":[3],"
	    "\"data_offsets\":[9000000,9000012]}}";

	*hlen = sizeof(h) - 1;
	return mkfile(h, sizeof(h) - 1, 9000012, len);
}

/* Open the read end of a pipe fed with len bytes of buf. */
static int
open_piped(const unsigned char *buf, size_t len, int use_stdin,
    struct peftio_st **st, struct peftio_error *err)
{
	char path[64];
	int p[2], rc, saved = -1;
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = feed(p[1], buf, len);
	close(p[1]);
	if (use_stdin) {
		saved = dup(STDIN_FILENO);
		dup2(p[0], STDIN_FILENO);
		rc = peftio_st_open(st, "-", err);
		dup2(saved, STDIN_FILENO);
		close(saved);
	} else {
		snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
		rc = peftio_st_open(st, path, err);
	}
	close(p[0]);
	reap(pid);
	return rc;
}

/* Other formats and text are named for what they are, from a file, a
 * buffer or a pipe; binary that is not text is still read as
 * safetensors, and a few bytes are still too small. */
START_TEST(test_foreign)
{
	static const struct {
		const char	*bytes;
		size_t		 len;
		int		 code;
		const char	*msg;
	} tab[] = {
		{ "GGUF\3\0\0\0\0\0\0\0\0\0\0\0", 16,
		    PEFTIO_EUNSUPPORTED, LABEL ": a GGUF file: these tools "
		    "read safetensors" },
		{ "{\n  \"architectures\": [\"LlamaForCausalLM\"]\n}\n", 0,
		    PEFTIO_EFORMAT, LABEL ": a JSON file, not a checkpoint" },
		{ "\xef\xbb\xbf[1, 2, 3]\n", 0, PEFTIO_EFORMAT,
		    "a JSON file" },
		{ "# recipe\nbase: x\nadapters: []\n", 0, PEFTIO_EFORMAT,
		    "a YAML file" },
		{ "---\n- a\n", 0, PEFTIO_EFORMAT, "a YAML file" },
		{ "caf\xc3\xa9 menu: 3\xe2\x82\xac\n", 0, PEFTIO_EFORMAT,
		    "a text file" },
		{ "abcdefg", 0, PEFTIO_EFORMAT, "too small" },
		{ "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10, PEFTIO_EFORMAT,
		    "exceeds the limit" },
		{ "abcdefg\x01", 0, PEFTIO_EFORMAT, "exceeds the limit" },
		{ "abc\xc3(defgh", 0, PEFTIO_EFORMAT, "exceeds the limit" },
	};
	struct peftio_error err;
	struct peftio_st *st;
	const unsigned char *b;
	size_t i, len;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		b = (const unsigned char *)tab[i].bytes;
		len = tab[i].len ? tab[i].len : strlen(tab[i].bytes);
		ck_assert_int_eq(open_buf(b, len, &err), tab[i].code);
		ck_assert_msg(strstr(err.msg, tab[i].msg) != NULL,
		    "case %zu: %s", i, err.msg);
		if (len < 8)
			continue;
		/* A pipe shows the first 8 bytes only. */
		st = NULL;
		ck_assert_int_eq(open_piped(b, len, 0, &st, &err),
		    tab[i].code);
		ck_assert_ptr_null(st);
	}
	ck_assert_int_eq(open_piped((const unsigned char *)"{\"a\": 1}\n", 9, 1,
	    &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "<stdin>: a JSON file"));
}
END_TEST

START_TEST(test_read_pipe)
{
	const struct peftio_tensor_info *t;
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf;
	const void *d;
	size_t len, hlen;
	int use_stdin;

	buf = big_file(&len, &hlen);
	for (use_stdin = 0; use_stdin < 2; use_stdin++) {
		ck_assert_msg(open_piped(buf, len, use_stdin, &st, &err) == 0,
		    "%s", err.msg);
		ck_assert_str_eq(peftio_st_path(st), use_stdin ? "-" :
		    peftio_st_path(st));
		ck_assert_uint_eq(peftio_st_count(st), 2);
		t = peftio_st_tensor(st, 1);
		ck_assert_str_eq(t->name, "f");
		ck_assert_int_eq(peftio_st_data(st, 1, &d, &err), 0);
		ck_assert_mem_eq(d, buf + 8 + hlen + 9000000, 12);
		ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), 0);
		ck_assert_mem_eq(d, buf + 8 + hlen, 9000000);
		peftio_st_release(st, 0);
		ck_assert_mem_eq(d, buf + 8 + hlen, 9000000);
		ck_assert_str_eq(peftio_st_meta_get(st, "format"), "pt");
		peftio_st_close(st);
	}
	free(buf);
}
END_TEST

/*
 * A checkpoint read from the read end of a pipe fed by a child while it
 * arrives; with sock, from a socket on standard input instead, which
 * splice(2) does not take: the spool copies it through a buffer.
 */
static struct peftio_ckpt *
open_bg(const unsigned char *buf, size_t len, pid_t *pid, int sock)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	char path[64];
	int p[2], save = -1, rc;

	if (sock)
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
	else
		ck_assert_int_eq(pipe(p), 0);
	*pid = feed(p[1], buf, len);
	close(p[1]);
	if (sock) {
		ck_assert_int_ge(save = dup(STDIN_FILENO), 0);
		ck_assert_int_eq(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
		rc = peftio_ckpt_open_stream(&c, "-", &err);
		ck_assert_int_eq(dup2(save, STDIN_FILENO), STDIN_FILENO);
		close(save);
	} else {
		snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
		rc = peftio_ckpt_open_stream(&c, path, &err);
	}
	ck_assert_msg(rc == 0, "%s", err.msg);
	close(p[0]);
	return c;
}

START_TEST(test_read_pipe_bg)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *buf, got[4096];
	const void *d;
	size_t len, hlen;
	pid_t pid;
	int p[2];

	buf = big_file(&len, &hlen);
	/* Whole: read as it arrives, then checked to its end. */
	c = open_bg(buf, len, &pid, _i);
	ck_assert_uint_eq(peftio_ckpt_count(c), 2);
	peftio_ckpt_prefetch(c, 0);
	ck_assert_int_eq(peftio_ckpt_read(c, 0, 8000000, got, sizeof(got),
	    &err), 0);
	ck_assert_mem_eq(got, buf + 8 + hlen + 8000000, sizeof(got));
	ck_assert_int_eq(peftio_ckpt_data(c, 1, &d, &err), 0);
	ck_assert_mem_eq(d, buf + 8 + hlen + 9000000, 12);
	ck_assert_int_eq(peftio_ckpt_data(c, 0, &d, &err), 0);
	ck_assert_mem_eq(d, buf + 8 + hlen, 9000000);
	ck_assert_int_eq(peftio_ckpt_complete(c, &err), 0);
	peftio_ckpt_close(c);
	reap(pid);

	/* Cut short: the open and the bytes before the cut are fine, the
	 * reads past it and the completion are not. */
	c = open_bg(buf, 8 + hlen + 5000000, &pid, _i);
	ck_assert_int_eq(peftio_ckpt_read(c, 0, 0, got, sizeof(got), &err), 0);
	ck_assert_mem_eq(got, buf + 8 + hlen, sizeof(got));
	ck_assert_int_eq(peftio_ckpt_data(c, 0, &d, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	ck_assert_int_eq(peftio_ckpt_complete(c, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	peftio_ckpt_close(c);
	reap(pid);

	/* A byte too many: the last tensor, which reaches the end of the
	 * data, is refused. */
	buf[len] = 0;
	c = open_bg(buf, len + 1, &pid, _i);
	ck_assert_int_eq(peftio_ckpt_read(c, 0, 0, got, sizeof(got), &err), 0);
	ck_assert_int_eq(peftio_ckpt_data(c, 1, &d, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "after the last tensor"));
	ck_assert_int_eq(peftio_ckpt_complete(c, &err), PEFTIO_EFORMAT);
	peftio_ckpt_close(c);
	reap(pid);

	/* Closed while the writer is still there: the copy stops. */
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(write(p[1], buf, 8 + hlen + 1000),
	    (ssize_t)(8 + hlen + 1000));
	{
		char path[64];

		snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
		ck_assert_int_eq(peftio_ckpt_open_stream(&c, path, &err), 0);
	}
	ck_assert_int_eq(peftio_ckpt_read(c, 0, 0, got, 1000, &err), 0);
	peftio_ckpt_close(c);
	close(p[0]);
	close(p[1]);
	free(buf);
}
END_TEST

/* Pages of path [off, off + len) in the page cache. */
static size_t
resident(const char *path, size_t len)
{
	unsigned char vec[4096];
	long page = sysconf(_SC_PAGESIZE);
	size_t i, n = (len + (size_t)page - 1) / (size_t)page, in = 0;
	void *m;
	int fd;

	ck_assert_uint_le(n, sizeof(vec));
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mincore(m, len, vec), 0);
	for (i = 0; i < n; i++)
		in += vec[i] & 1;
	munmap(m, len);
	close(fd);
	return in;
}

/* A tensor of a file asked for ahead is read into the page cache; the
 * hint does nothing to a stream or out of range. */
START_TEST(test_prefetch)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *buf;
	size_t len, hlen, pages, got;
	long page = sysconf(_SC_PAGESIZE);
	const char *path;
	int fd, tries;

	tu_tmpdir();
	buf = big_file(&len, &hlen);
	path = tu_path("big.safetensors");
	tu_write_file(path, buf, len);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fsync(fd), 0);
	ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	ck_assert_int_eq(peftio_ckpt_open(&c, path, &err), 0);
	pages = 9000000 / (size_t)page - 2;	/* whole pages of "big" */
	/* Where pages cannot be dropped (tmpfs) there is nothing to see. */
	if (resident(path, len) < pages) {
		peftio_ckpt_prefetch(c, 0);
		for (tries = 0; tries < 200; tries++) {
			if ((got = resident(path, len)) >= pages)
				break;
			usleep(10000);
		}
		ck_assert_uint_ge(resident(path, len), pages);
	}
	peftio_ckpt_prefetch(c, 2);
	peftio_ckpt_prefetch(c, (size_t)-1);
	peftio_ckpt_close(c);
	free(buf);
}
END_TEST

START_TEST(test_read_pipe_bad)
{
	static const char h[] = "{\"t\":{" U8_2 "}}";
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf, *big;
	size_t len, blen, hlen;

	buf = mkfile(h, sizeof(h) - 1, 2, &len);
	ck_assert_int_eq(open_piped(buf, len, 0, &st, &err), 0);
	peftio_st_close(st);
	ck_assert_int_eq(open_piped(buf, len - 1, 1, &st, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(strstr(err.msg, "<stdin>: "));
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	free(buf);
	buf = mkfile(h, sizeof(h) - 1, 3, &len);
	ck_assert_int_eq(open_piped(buf, len, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "after the last tensor"));
	ck_assert_int_eq(open_piped(buf, 20, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "runs past the end"));
	ck_assert_int_eq(open_piped(buf, 5, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too small"));
	ck_assert_int_eq(open_piped(buf, 0, 1, &st, &err), PEFTIO_EFORMAT);
	free(buf);
	/* Invalid header: rejected before the data is read. */
	buf = mkfile("{\"t\":1}", 7, 0, &len);
	ck_assert_int_eq(open_piped(buf, len, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "not an object"));
	free(buf);
	/* A claimed 99,999,999-byte header on a short stream. */
	buf = mkfile_n("{}", 2, 99999999, 0, &len);
	ck_assert_int_eq(open_piped(buf, len, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "runs past the end"));
	free(buf);
	buf = mkfile_n("{}", 2, 100000001, 0, &len);
	ck_assert_int_eq(open_piped(buf, len, 1, &st, &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "exceeds the limit"));
	free(buf);
	/* A large file cut short in its data, and with a byte too many. */
	big = big_file(&blen, &hlen);
	ck_assert_int_eq(open_piped(big, blen - 5000000, 0, &st, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	big[blen] = 0;
	ck_assert_int_eq(open_piped(big, blen + 1, 0, &st, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "after the last tensor"));
	free(big);
}
END_TEST

START_TEST(test_read_fifo)
{
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf;
	size_t len, hlen;
	pid_t pid;
	int fd;

	tu_tmpdir();
	ck_assert_int_eq(mkfifo(tu_path("fifo"), 0600), 0);
	buf = big_file(&len, &hlen);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		fd = open(tu_path("fifo"), O_WRONLY);
		len = fd >= 0 && write(fd, buf, len) == (ssize_t)len;
		free(buf);
		_exit(len ? 0 : 1);
	}
	ck_assert_msg(peftio_st_open(&st, tu_path("fifo"), &err) == 0, "%s",
	    err.msg);
	reap(pid);
	ck_assert_uint_eq(peftio_st_count(st), 2);
	ck_assert_str_eq(peftio_st_path(st), tu_path("fifo"));
	peftio_st_close(st);
	free(buf);
}
END_TEST

START_TEST(test_read_file)
{
	struct peftio_error err;
	struct peftio_st *st;
	unsigned char *buf;
	const void *d;
	size_t len, hlen;
	int fd, saved;

	tu_tmpdir();
	buf = big_file(&len, &hlen);
	tu_write_file(tu_path("big.safetensors"), buf, len);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("big.safetensors"), &err),
	    0);
	ck_assert_int_eq(peftio_st_data(st, 0, &d, &err), 0);
	ck_assert_mem_eq(d, buf + 8 + hlen, 9000000);
	peftio_st_release(st, 0);
	peftio_st_release(st, 1);
	peftio_st_release(st, 2);
	ck_assert_mem_eq(d, buf + 8 + hlen, 9000000);
	ck_assert_int_eq(peftio_st_data(st, 1, &d, &err), 0);
	ck_assert_mem_eq(d, buf + 8 + hlen + 9000000, 12);
	peftio_st_close(st);

	/* Standard input redirected from the file. */
	fd = open(tu_path("big.safetensors"), O_RDONLY);
	saved = dup(STDIN_FILENO);
	dup2(fd, STDIN_FILENO);
	close(fd);
	ck_assert_int_eq(peftio_st_open(&st, "-", &err), 0);
	dup2(saved, STDIN_FILENO);
	close(saved);
	ck_assert_str_eq(peftio_st_path(st), "-");
	ck_assert_int_eq(peftio_st_data(st, 1, &d, &err), 0);
	ck_assert_mem_eq(d, buf + 8 + hlen + 9000000, 12);
	peftio_st_close(st);

	/* Cut short, a byte too many, a header longer than the file. */
	tu_write_file(tu_path("short.safetensors"), buf, len - 1);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("short.safetensors"),
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("short.safetensors")));
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	tu_write_file(tu_path("long.safetensors"), buf, len + 1);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("long.safetensors"),
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "1 bytes after"));
	tu_write_file(tu_path("hdr.safetensors"), buf, 8 + hlen - 1);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("hdr.safetensors"),
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "runs past the end"));
	tu_write_file(tu_path("tiny.safetensors"), buf, 7);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("tiny.safetensors"),
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too small"));
	free(buf);

	/* A header-only file: nothing to map. */
	buf = mkfile("{}      ", 8, 0, &len);
	tu_write_file(tu_path("empty.safetensors"), buf, len);
	ck_assert_int_eq(peftio_st_open(&st, tu_path("empty.safetensors"),
	    &err), 0);
	ck_assert_uint_eq(peftio_st_count(st), 0);
	ck_assert_uint_eq(peftio_st_meta_count(st), 0);
	peftio_st_close(st);
	free(buf);

	ck_assert_int_eq(peftio_st_open(&st, tu_path("missing"), &err),
	    PEFTIO_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("missing")));
	ck_assert_int_eq(peftio_st_open(&st, tu_path(""), &err),
	    PEFTIO_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));
	ck_assert_int_eq(peftio_st_open(&st, "", &err), PEFTIO_EINVAL);
	peftio_st_close(NULL);
}
END_TEST

Suite *safetensors_suite(void);

Suite *safetensors_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc;

	tc = tcase_create("reader");
	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_add_loop_test(tc, test_table, 0,
	    (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_lengths);
	tcase_add_test(tc, test_foreign);
	tcase_add_test(tc, test_error_order);
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_long_name);
	tcase_add_test(tc, test_accept_details);
	tcase_add_test(tc, test_duplicate_named);
	tcase_add_test(tc, test_mutations);
	suite_add_tcase(s, tc);

	tc = tcase_create("writer");
	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_writer_example_bytes);
	tcase_add_test(tc, test_writer_serialization_vector);
	tcase_add_test(tc, test_writer_roundtrip);
	tcase_add_test(tc, test_verify);
	tcase_add_test(tc, test_json_string);
	tcase_add_test(tc, test_writer_incomplete);
	tcase_add_test(tc, test_writer_past_end);
	tcase_add_test(tc, test_writer_exists);
	tcase_add_test(tc, test_writer_no_dir);
	tcase_add_test(tc, test_writer_escape);
	tcase_add_test(tc, test_writer_meta);
	tcase_add_test(tc, test_writer_declare_errors);
	tcase_add_test(tc, test_writer_empty);
	tcase_add_test(tc, test_writer_many);
	tcase_add_test(tc, test_writer_stdout);
	suite_add_tcase(s, tc);

	tc = tcase_create("streams");
	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_read_pipe);
	tcase_add_test(tc, test_read_pipe_bad);
	tcase_add_loop_test(tc, test_read_pipe_bg, 0, 2);
	tcase_add_test(tc, test_prefetch);
	tcase_add_test(tc, test_read_fifo);
	tcase_add_test(tc, test_read_file);
	suite_add_tcase(s, tc);
	return s;
}
