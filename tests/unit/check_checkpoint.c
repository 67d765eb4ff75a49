/*
 * check_checkpoint.c - shards opened without an index, and the writer
 * that finishes a directory whose shards were written one at a time.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio.h"
#include "peftio_private.h"
#include "testutil.h"

#define W_TEST		PEFTIO_W_NOSYNC
#define INDEX		"model.safetensors.index.json"

static const char *const shard_names[2] = {
	"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
};

static int
exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/*
 * A two-shard directory "whole" as one writer makes it: "a" (F32 [2, 3])
 * and "b" (BF16 [4]) in the first shard, "c" (U8 [5]) in the second,
 * with config.json; its index is returned (malloc'ed).
 */
static char *
make_whole(size_t *len)
{
	static const uint64_t sa[2] = { 2, 3 }, sb[1] = { 4 }, sc[1] = { 5 };
	static const char zero[24];
	struct peftio_ckptw *w;
	struct peftio_error err;

	ck_assert_int_eq(peftio_ckptw_create(&w, tu_path("whole"), 1, 2,
	    shard_names, W_TEST, &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "a", PEFTIO_F32, 2, sa,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "b", PEFTIO_BF16, 1, sb,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 1, "c", PEFTIO_U8, 1, sc,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "a", zero, 24, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "b", zero, 8, &err), 0);
	ck_assert_int_eq(peftio_ckptw_write(w, "c", zero, 5, &err), 0);
	ck_assert_int_eq(peftio_ckptw_file(w, "config.json", "{}\n", 3, &err),
	    0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	return tu_read_file(tu_path("whole/" INDEX), len);
}

/* The checkpoint of make_whole(), opened from its two shards. */
static struct peftio_ckpt *
open_whole(void)
{
	struct peftio_ckpt *c;
	struct peftio_error err;
	size_t len;

	tu_tmpdir();
	free(make_whole(&len));
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 2,
	    shard_names, &err), 0);
	return c;
}

START_TEST(test_open_shards)
{
	struct peftio_ckpt *c = open_whole();

	ck_assert_str_eq(peftio_ckpt_dir(c), tu_path("whole"));
	ck_assert_uint_eq(peftio_ckpt_nshards(c), 2);
	ck_assert_uint_eq(peftio_ckpt_count(c), 3);
	ck_assert_str_eq(peftio_ckpt_tensor(c, 2)->name, "c");
	ck_assert_uint_eq(peftio_ckpt_shard_of(c, 2), 1);
	ck_assert_int_eq(peftio_ckpt_find(c, "b"), 1);
	ck_assert_int_eq(peftio_ckpt_sharded(c), 0);
	peftio_ckpt_close(c);
}
END_TEST

/* A view of a tensor: where its bytes lie in a safetensors file's
 * mapping, the bytes the reads give; none of a torch archive's. */
START_TEST(test_view)
{
	struct peftio_ckpt *c = open_whole();
	struct peftio_error err;
	const void *v, *d;
	unsigned char buf[64];
	size_t i, len;

	for (i = 0; i < peftio_ckpt_count(c); i++) {
		len = (size_t)peftio_ckpt_tensor(c, i)->nbytes;
		ck_assert_uint_le(len, sizeof(buf));
		ck_assert_int_eq(peftio_ckpt_view(c, i, &v, &err), 0);
		ck_assert_int_eq(peftio_ckpt_data(c, i, &d, &err), 0);
		ck_assert_ptr_eq(v, d);
		ck_assert_int_eq(peftio_ckpt_read(c, i, 0, buf, len, &err), 0);
		ck_assert_mem_eq(v, buf, len);
	}
	ck_assert_int_eq(peftio_ckpt_view(c, peftio_ckpt_count(c), &v, &err),
	    1);
	peftio_ckpt_close(c);
	ck_assert_int_eq(peftio_ckpt_open(&c, TEST_DATA "/torchbin/module.bin",
	    &err), 0);
	ck_assert_uint_gt(peftio_ckpt_count(c), 0);
	ck_assert_int_eq(peftio_ckpt_view(c, 0, &v, &err), 1);
	peftio_ckpt_close(c);
}
END_TEST

START_TEST(test_open_shards_bad)
{
	static const char *const dup[2] = {
		"model-00001-of-00002.safetensors",
		"model-00001-of-00002.safetensors"
	};
	static const char *const up[1] = { "../x.safetensors" };
	struct peftio_ckpt *c;
	struct peftio_error err;
	size_t len;
	char *index;

	tu_tmpdir();
	index = make_whole(&len);
	free(index);
	ck_assert_int_eq(unlink(tu_path("whole/model-00002-of-00002.safetensors")),
	    0);
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 2,
	    shard_names, &err), PEFTIO_ENOTFOUND);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err.msg,
	    "shard model-00002-of-00002.safetensors is missing"));
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("whole")));

	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 2, dup,
	    &err), PEFTIO_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err.msg,
	    "tensor 'a' is stored in two shards"));
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 1, up,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("none"), 2,
	    shard_names, &err), PEFTIO_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("none")));
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 0,
	    shard_names, &err), PEFTIO_EINVAL);
}
END_TEST

/* The index written beside existing shards equals the whole writer's. */
START_TEST(test_from_shards)
{
	static const uint64_t shape[1] = { 1 };
	struct peftio_ckptw *w;
	struct peftio_ckpt *c;
	struct peftio_error err;
	size_t len, len2;
	char *index, *index2, *cfg;

	tu_tmpdir();
	index = make_whole(&len);
	ck_assert_int_eq(unlink(tu_path("whole/" INDEX)), 0);
	ck_assert_int_eq(unlink(tu_path("whole/config.json")), 0);
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 2,
	    shard_names, &err), 0);
	ck_assert_int_eq(peftio_ckptw_from_shards(&w, c, W_TEST, &err), 0);
	ck_assert_int_eq(peftio_ckptw_declare(w, 0, "d", PEFTIO_U8, 1, shape,
	    &err), PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), PEFTIO_EINVAL);
	ck_assert_uint_eq(peftio_ckptw_tensor_bytes(w), 24 + 8 + 5);
	ck_assert_int_eq(peftio_ckptw_file(w, "config.json", "{}\n", 3, &err),
	    0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	peftio_ckpt_close(c);

	index2 = tu_read_file(tu_path("whole/" INDEX), &len2);
	ck_assert_uint_eq(len2, len);
	ck_assert_mem_eq(index2, index, len);
	ck_assert_ptr_nonnull(strstr(index2, "\"total_size\": 37"));
	cfg = tu_read_file(tu_path("whole/config.json"), &len2);
	ck_assert_uint_eq(len2, 3);
	free(cfg);
	free(index);
	free(index2);
}
END_TEST

/* Without PEFTIO_W_FORCE nothing is written when a file exists. */
START_TEST(test_from_shards_exists)
{
	struct peftio_ckptw *w;
	struct peftio_ckpt *c;
	struct peftio_error err;
	size_t len;
	char *index, *cfg;

	tu_tmpdir();
	index = make_whole(&len);
	free(index);
	ck_assert_int_eq(unlink(tu_path("whole/" INDEX)), 0);
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 2,
	    shard_names, &err), 0);
	ck_assert_int_eq(peftio_ckptw_from_shards(&w, c, W_TEST, &err), 0);
	ck_assert_int_eq(peftio_ckptw_file(w, "config.json", "{\"x\": 1}\n", 9,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), PEFTIO_EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg, tu_path("whole/config.json")));
	ck_assert(!exists(tu_path("whole/" INDEX)));
	peftio_ckptw_free(w);

	ck_assert_int_eq(peftio_ckptw_from_shards(&w, c,
	    W_TEST | PEFTIO_W_FORCE, &err), 0);
	ck_assert_int_eq(peftio_ckptw_file(w, "config.json", "{\"x\": 1}\n", 9,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	peftio_ckpt_close(c);
	ck_assert(exists(tu_path("whole/" INDEX)));
	cfg = tu_read_file(tu_path("whole/config.json"), &len);
	ck_assert_uint_eq(len, 9);
	free(cfg);
}
END_TEST

/* One shard: like the whole writer, no index. */
START_TEST(test_from_shards_single)
{
	static const char *const one[1] = { "model-00001-of-00002.safetensors" };
	struct peftio_ckptw *w;
	struct peftio_ckpt *c;
	struct peftio_error err;
	size_t len;
	char *index;

	tu_tmpdir();
	index = make_whole(&len);
	free(index);
	ck_assert_int_eq(unlink(tu_path("whole/" INDEX)), 0);
	ck_assert_int_eq(peftio_ckpt_open_shards(&c, tu_path("whole"), 1, one,
	    &err), 0);
	ck_assert_int_eq(peftio_ckptw_from_shards(&w, c, W_TEST, &err), 0);
	ck_assert_int_eq(peftio_ckptw_commit(w, &err), 0);
	peftio_ckptw_free(w);
	peftio_ckpt_close(c);
	ck_assert(!exists(tu_path("whole/" INDEX)));
}
END_TEST

/* The files of a Trainer's training state, and only those. */
START_TEST(test_training_state)
{
	static const char *const yes[] = {
		"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
		"rng_state.pth", "rng_state_0.pth", "rng_state_17.pth",
		"trainer_state.json", "training_args.bin"
	};
	static const char *const no[] = {
		"config.json", "tokenizer.json", "pytorch_model.bin",
		"rng_state_.pth", "rng_state_x.pth", "rng_state_1.pt",
		"optimizer.pt.bak", "my_optimizer.pt", "generation_config.json"
	};
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		ck_assert_msg(peftio_is_training_state(yes[i]), "%s", yes[i]);
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		ck_assert_msg(!peftio_is_training_state(no[i]), "%s", no[i]);
}
END_TEST

Suite *checkpoint_suite(void);

Suite *checkpoint_suite(void)
{
	Suite *s = suite_create("checkpoint");
	TCase *tc = tcase_create("shards");

	tcase_add_checked_fixture(tc, NULL, tu_tmpdir_remove);
	tcase_add_test(tc, test_open_shards);
	tcase_add_test(tc, test_view);
	tcase_add_test(tc, test_training_state);
	tcase_add_test(tc, test_open_shards_bad);
	tcase_add_test(tc, test_from_shards);
	tcase_add_test(tc, test_from_shards_exists);
	tcase_add_test(tc, test_from_shards_single);
	suite_add_tcase(s, tc);
	return s;
}
