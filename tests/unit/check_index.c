/*
 * check_index.c - checkpoints as one stream of tensors: sharded
 * directories and their index (every malformed index refused with a
 * message naming it), and a checkpoint held in memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

/* A safetensors file of F32 [2] tensors t1 (and t2 unless NULL). */
static unsigned char *
mkst(const char *t1, const char *t2, size_t *len)
{
	char hdr[512];
	unsigned char *p;
	size_t n, i, data = t2 != NULL ? 16 : 8;

	if (t2 != NULL)
		n = (size_t)snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":"
		    "\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"%s\":"
		    "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
		    t1, t2);
	else
		n = (size_t)snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":"
		    "\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", t1);
	*len = 8 + n + data;
	p = malloc(*len);
	ck_assert_ptr_nonnull(p);
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(p + 8, hdr, n);
	for (i = 0; i < data; i++)
		p[8 + n + i] = (unsigned char)i;
	return p;
}

static void
shard(const char *name, const char *t1, const char *t2)
{
	unsigned char *p;
	size_t len;

	p = mkst(t1, t2, &len);
	tu_write_file(tu_path(name), p, len);
	free(p);
}

#define S1	"model-00001-of-00002.safetensors"
#define S2	"model-00002-of-00002.safetensors"

static void
sharded_dir(const char *index)
{
	tu_tmpdir();
	shard(S1, "a", "b");
	shard(S2, "c", NULL);
	tu_write_file(tu_path("model.safetensors.index.json"), index,
	    strlen(index));
}

START_TEST(test_sharded)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	const void *p;
	long i;

	sharded_dir("{\"weight_map\": {\"a\": \"" S1 "\", \"b\": \"" S1 "\", "
	    "\"c\": \"" S2 "\"}}");
	ck_assert_msg(peftio_ckpt_open(&c, tu_path(""), &err) == 0, "%s",
	    err.msg);
	ck_assert(peftio_ckpt_sharded(c));
	ck_assert_uint_eq(peftio_ckpt_nshards(c), 2);
	ck_assert_uint_eq(peftio_ckpt_count(c), 3);
	ck_assert_str_eq(peftio_ckpt_shard_name(c, 1), S2);
	i = peftio_ckpt_find(c, "c");
	ck_assert_int_eq(i, 2);
	ck_assert_uint_eq(peftio_ckpt_shard_of(c, (size_t)i), 1);
	ck_assert_int_eq(peftio_ckpt_data(c, (size_t)i, &p, &err), 0);
	ck_assert_int_eq(memcmp(p, "\0\1\2\3\4\5\6\7", 8), 0);
	peftio_ckpt_close(c);
}
END_TEST

static const struct {
	const char	*index;
	int		 code;
	const char	*msg[3];	/* all in the message */
} bad[] = {
	{ "{\"weight_map\": [", PEFTIO_EFORMAT,
	    { "model.safetensors.index.json: line 1", NULL } },
	{ "{\"metadata\": {}}", PEFTIO_EFORMAT, { "no \"weight_map\"", NULL } },
	{ "[]", PEFTIO_EFORMAT, { "no \"weight_map\"", NULL } },
	{ "{\"weight_map\": {\"a\": \"" S1 "\", \"a\": \"" S1 "\"}}",
	    PEFTIO_EFORMAT, { "duplicate", NULL } },
	/*
	 * Found by fuzz_index: the messages of the next three quoted the
	 * index after it had been freed (a use after free).
	 */
	{ "{\"weight_map\": {\"a\": 7}}", PEFTIO_EFORMAT,
	    { "tensor 'a': shard name is not a string", NULL } },
	{ "{\"weight_map\": {\"a\": \"../" S1 "\"}}", PEFTIO_EFORMAT,
	    { "tensor 'a': bad shard file name \"../" S1 "\"", NULL } },
	{ "{\"weight_map\": {\"x\\ny\": \"model.bin\"}}", PEFTIO_EFORMAT,
	    { "tensor 'x\\x0ay': bad shard file name \"model.bin\"", NULL } },
	{ "{\"weight_map\": {\"a\": \"/abs.safetensors\"}}", PEFTIO_EFORMAT,
	    { "bad shard file name", NULL } },
	{ "{\"weight_map\": {\"a\": \"c:" S1 "\"}}", PEFTIO_EFORMAT,
	    { "bad shard file name", NULL } },
	{ "{\"weight_map\": {\"a\": \"model-00003-of-00003.safetensors\"}}",
	    PEFTIO_ENOTFOUND, { "model-00003-of-00003.safetensors",
	    "is missing", NULL } },
	{ "{\"weight_map\": {\"a\": \"" S1 "\", \"c\": \"" S1 "\"}}",
	    PEFTIO_EFORMAT, { "tensor 'c' is not in shard " S1, NULL } },
	{ "{\"weight_map\": {\"a\": \"" S1 "\", \"zz\": \"" S2 "\"}}",
	    PEFTIO_EFORMAT, { "tensor 'zz' is not in shard " S2, NULL } },
};

START_TEST(test_sharded_bad)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	const char *dir;
	int k;

	sharded_dir(bad[_i].index);
	dir = tu_path("");
	ck_assert_int_eq(peftio_ckpt_open(&c, dir, &err), bad[_i].code);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	for (k = 0; bad[_i].msg[k] != NULL; k++)
		ck_assert_msg(strstr(err.msg, bad[_i].msg[k]) != NULL,
		    "case %d: '%s' lacks '%s'", _i, err.msg, bad[_i].msg[k]);
	ck_assert_ptr_null(strchr(err.msg, '\n'));
}
END_TEST

/* A tensor stored in two shards that the index lists once. */
START_TEST(test_sharded_twice)
{
	static const char index[] = "{\"weight_map\": {\"a\": \"" S1 "\", "
	    "\"b\": \"" S2 "\"}}";
	struct peftio_error err;
	struct peftio_ckpt *c;

	tu_tmpdir();
	shard(S1, "a", "b");
	shard(S2, "b", NULL);
	tu_write_file(tu_path("model.safetensors.index.json"), index,
	    strlen(index));
	ck_assert_int_eq(peftio_ckpt_open(&c, tu_path(""), &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg,
	    "tensor 'b' is stored in two shards (" S1 ", " S2 ")"));
}
END_TEST

START_TEST(test_open_mem)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	unsigned char *buf;
	const void *p;
	size_t len;

	buf = mkst("w", "v", &len);
	ck_assert_int_eq(peftio_ckpt_open_mem(&c, buf, len, "mem", &err), 0);
	ck_assert_str_eq(peftio_ckpt_path(c), "mem");
	ck_assert_ptr_null(peftio_ckpt_dir(c));
	ck_assert(!peftio_ckpt_sharded(c));
	ck_assert_uint_eq(peftio_ckpt_count(c), 2);
	ck_assert_int_eq(peftio_ckpt_find(c, "v"), 1);
	ck_assert_int_eq(peftio_ckpt_find(c, "x"), -1);
	ck_assert_int_eq(peftio_ckpt_data(c, 1, &p, &err), 0);
	ck_assert_ptr_eq(p, buf + len - 8);
	ck_assert_int_eq(peftio_ckpt_data(c, 2, &p, &err), PEFTIO_EINVAL);
	peftio_ckpt_close(c);
	ck_assert_int_eq(peftio_ckpt_open_mem(&c, buf, len - 1, "mem", &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err.msg, "mem: "));
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
	ck_assert_int_eq(peftio_ckpt_open_mem(&c, NULL, 0, NULL, &err),
	    PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg, "<memory>"));
	free(buf);
}
END_TEST

Suite *index_suite(void);

Suite *index_suite(void)
{
	Suite *s = suite_create("index");
	TCase *tc = tcase_create("sharded");

	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_add_test(tc, test_sharded);
	tcase_add_loop_test(tc, test_sharded_bad, 0,
	    (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_sharded_twice);
	suite_add_tcase(s, tc);
	tc = tcase_create("memory");
	tcase_add_test(tc, test_open_mem);
	suite_add_tcase(s, tc);
	return s;
}
