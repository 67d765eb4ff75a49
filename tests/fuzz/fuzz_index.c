/*
 * fuzz_index.c - sharded checkpoints: model.safetensors.index.json.
 *
 * The input is the index.  It is written into a directory that holds a
 * few small shards (two listed by the usual index, one more beside
 * them and one in a subdirectory), and the directory is opened as a
 * checkpoint.  An accepted index names only shards that exist, and
 * every tensor of the checkpoint is found again and readable.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include "fuzz.h"

static char dir[256];
static char index_path[512];

/* A shard holding the tensors named, each F32 [2]. */
static void
shard(const char *name, const char *t1, const char *t2)
{
	char hdr[512], path[512];
	unsigned char pfx[8], data[16];
	size_t n, i;
	int fd;

	n = (size_t)snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[0,8]},\"%s\":{\"dtype\":\"F32\","
	    "\"shape\":[2],\"data_offsets\":[8,16]}}", t1, t2);
	for (i = 0; i < 8; i++)
		pfx[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memset(data, 0x3f, sizeof(data));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0 ||
	    write(fd, pfx, 8) != 8 || write(fd, hdr, n) != (ssize_t)n ||
	    write(fd, data, 16) != 16 || close(fd) != 0) {
		perror(path);
		abort();
	}
}

static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void
cleanup(void)
{
	(void)nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	char sub[512];

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/peftio-fuzz-index.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		abort();
	}
	atexit(cleanup);
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	if (mkdir(sub, 0755) != 0)
		abort();
	shard("model-00001-of-00002.safetensors", "a.weight", "b.weight");
	shard("model-00002-of-00002.safetensors", "c.weight", "d.bias");
	shard("extra.safetensors", "e", "f");
	shard("sub/model.safetensors", "g", "a.bias");
	snprintf(index_path, sizeof(index_path),
	    "%s/model.safetensors.index.json", dir);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peftio_error err;
	struct peftio_ckpt *c;
	const struct peftio_tensor_info *t;
	const char *name;
	const void *p;
	size_t i, s;
	int fd, rc;

	fd = open(index_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FUZZ_ASSERT(fd >= 0);
	FUZZ_ASSERT(write(fd, data, size) == (ssize_t)size);
	FUZZ_ASSERT(close(fd) == 0);
	if ((rc = peftio_ckpt_open(&c, dir, &err)) != 0) {
		fuzz_check_error(rc, &err, rc == PEFTIO_ENOMEM ? NULL : dir);
		return 0;
	}
	FUZZ_ASSERT(peftio_ckpt_sharded(c));
	for (s = 0; s < peftio_ckpt_nshards(c); s++) {
		name = peftio_ckpt_shard_name(c, s);
		FUZZ_ASSERT(name != NULL && name[0] != '/');
		FUZZ_ASSERT(strstr(name, "..") == NULL);
		FUZZ_ASSERT(peftio_ckpt_shard(c, s) != NULL);
		if (s > 0)
			FUZZ_ASSERT(strcmp(peftio_ckpt_shard_name(c, s - 1),
			    name) < 0);
	}
	for (i = 0; i < peftio_ckpt_count(c); i++) {
		t = peftio_ckpt_tensor(c, i);
		FUZZ_ASSERT(peftio_ckpt_find(c, t->name) == (long)i);
		FUZZ_ASSERT(peftio_ckpt_shard_of(c, i) < peftio_ckpt_nshards(c));
		FUZZ_ASSERT(peftio_ckpt_data(c, i, &p, &err) == 0);
		FUZZ_ASSERT(t->nbytes == 8 && memcmp(p, "????????", 8) == 0);
	}
	peftio_ckpt_close(c);
	return 0;
}
