/*
 * ckpt_write.c - a checkpoint written as one safetensors file or as a
 * directory of shards with model.safetensors.index.json, mirroring the
 * layout of an input (formats.md section 2); committed all at once.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio_private.h"
#include "ckpt_private.h"

#define INDEX_NAME	"model.safetensors.index.json"


/* Shard s as the index names it, and its tensors. */
static const char *
out_shard_name(const struct peftio_ckptw *w, size_t s)
{
	const char *p, *base;

	p = w->done != NULL ? w->done->shard_names[s] : w->names[s];
	base = strrchr(p, '/');
	return base != NULL ? base + 1 : p;
}

static size_t
out_count(const struct peftio_ckptw *w, size_t s)
{
	return w->done != NULL ? peftio_st_count(w->done->shards[s]) :
	    peftio_stw_count(w->w[s]);
}

static const struct peftio_tensor_info *
out_tensor(const struct peftio_ckptw *w, size_t s, size_t i)
{
	return w->done != NULL ? peftio_st_tensor(w->done->shards[s], i) :
	    peftio_stw_tensor(w->w[s], i);
}

static int
shards_done(const struct peftio_ckptw *w, struct peftio_error *err)
{
	return peftio_error_set(err, PEFTIO_EINVAL,
	    "%s: the shards are written already", w->path);
}

void
peftio_shard_name(char *buf, size_t len, size_t i, size_t n)
{
	snprintf(buf, len, "model-%05zu-of-%05zu.safetensors", i + 1, n);
}

/*
 * Shard name inside the output directory dir.  Output is safetensors,
 * so a torch shard name becomes the one transformers gives the same
 * shard in safetensors: pytorch_model-00001-of-00002.bin becomes
 * model-00001-of-00002.safetensors, adapter_model.bin
 * adapter_model.safetensors.
 */
static char *
shard_path(const char *dir, const char *name)
{
	static const char torch_prefix[] = "pytorch_";
	size_t n = strlen(name), len;
	char *p;

	if (!peftio_ends_with(name, ".bin"))
		return peftio_path_join(dir, name);
	n -= 4;
	if (strncmp(name, "pytorch_model", 13) == 0) {
		name += sizeof(torch_prefix) - 1;
		n -= sizeof(torch_prefix) - 1;
	}
	len = strlen(dir) + n + sizeof("/.safetensors");
	if ((p = malloc(len)) != NULL)
		snprintf(p, len, "%s/%.*s.safetensors", dir, (int)n, name);
	return p;
}

int
peftio_ckptw_create(struct peftio_ckptw **out, const char *path, int as_dir,
    size_t nshards, const char *const *names, unsigned flags,
    struct peftio_error *err)
{
	struct peftio_ckptw *w;
	char *p;
	size_t s, i;
	int rc;

	*out = NULL;
	if (nshards == 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no shards to write", path);
	if (!as_dir && nshards != 1)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: a file holds exactly one shard", path);
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	w->as_dir = as_dir;
	w->flags = flags;
	w->nshards = nshards;
	w->path = strdup(path);
	w->names = calloc(nshards, sizeof(char *));
	w->w = calloc(nshards, sizeof(*w->w));
	if (w->path == NULL || w->names == NULL || w->w == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto fail;
	}
	if (as_dir) {
		if ((rc = peftio_outdir_open(&w->od, path, flags, err)) != 0)
			goto fail;
		w->od_open = 1;
	}
	for (s = 0; s < nshards; s++) {
		if (!as_dir)
			p = strdup(path);
		else if (nshards == 1 && (names == NULL || names[0] == NULL))
			p = peftio_path_join(w->od.tmp, "model.safetensors");
		else
			p = shard_path(w->od.tmp, names[s]);
		if (p == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto fail;
		}
		w->names[s] = p;
		/* Two shards are never written to one file. */
		for (i = 0; i < s; i++)
			if (strcmp(w->names[i], p) == 0) {
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: two shards would both be written as "
				    "%s", path, p + (as_dir ?
				    strlen(w->od.tmp) + 1 : 0));
				goto fail;
			}
		rc = peftio_stw_create(&w->w[s], p,
		    as_dir ? (flags | PEFTIO_W_FORCE) : flags, err);
		if (rc != 0)
			goto fail;
	}
	*out = w;
	return 0;
fail:
	peftio_ckptw_free(w);
	return rc;
}

int
peftio_ckptw_from_shards(struct peftio_ckptw **out,
    const struct peftio_ckpt *shards, unsigned flags,
    struct peftio_error *err)
{
	struct peftio_ckptw *w;

	*out = NULL;
	if (shards->dir == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: not a directory", shards->path);
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->path = strdup(shards->dir)) == NULL) {
		free(w);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	w->as_dir = 1;
	w->flags = flags;
	w->nshards = shards->nshards;
	w->done = shards;
	*out = w;
	return 0;
}

int
peftio_ckptw_declare(struct peftio_ckptw *w, size_t shard, const char *name,
    enum peftio_dtype dt, int ndim, const uint64_t *shape,
    struct peftio_error *err)
{
	if (w->done != NULL)
		return shards_done(w, err);
	if (shard >= w->nshards)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': no shard %zu", w->path, name, shard);
	w->count++;
	return peftio_stw_declare(w->w[shard], name, dt, ndim, shape, err);
}

int
peftio_ckptw_meta(struct peftio_ckptw *w, const char *key, const char *value,
    struct peftio_error *err)
{
	size_t s;
	int rc;

	if (w->done != NULL)
		return shards_done(w, err);
	for (s = 0; s < w->nshards; s++)
		if ((rc = peftio_stw_meta(w->w[s], key, value, err)) != 0)
			return rc;
	return 0;
}

static int
cmp_map(const void *a, const void *b)
{
	return strcmp(((const struct ckptw_name *)a)->name,
	    ((const struct ckptw_name *)b)->name);
}

int
peftio_ckptw_layout(struct peftio_ckptw *w, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	size_t s, i, e;
	int rc;

	if (w->done != NULL)
		return shards_done(w, err);
	for (s = 0; s < w->nshards; s++)
		if ((rc = peftio_stw_layout(w->w[s], err)) != 0)
			return rc;
	if ((w->map = calloc(w->count + 1, sizeof(*w->map))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (s = 0, e = 0; s < w->nshards; s++)
		for (i = 0; i < peftio_stw_count(w->w[s]); i++, e++) {
			ti = peftio_stw_tensor(w->w[s], i);
			w->map[e].name = ti->name;
			w->map[e].shard = s;
			w->map[e].idx = i;
		}
	qsort(w->map, w->count, sizeof(*w->map), cmp_map);
	for (e = 1; e < w->count; e++)
		if (strcmp(w->map[e].name, w->map[e - 1].name) == 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s' declared twice", w->path,
			    w->map[e].name);
	w->laid_out = 1;
	return 0;
}

/* Output tensor name's shard and index; NULL before the layout or for
 * a name not declared. */
static const struct ckptw_name *
find_name(const struct peftio_ckptw *w, const char *name)
{
	struct ckptw_name key;

	key.name = name;
	return w->laid_out ? bsearch(&key, w->map, w->count, sizeof(*w->map),
	    cmp_map) : NULL;
}

int
peftio_ckptw_write(struct peftio_ckptw *w, const char *name, const void *buf,
    size_t len, struct peftio_error *err)
{
	const struct ckptw_name *m = find_name(w, name);

	if (m == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' was not declared", w->path, name);
	return peftio_stw_write(w->w[m->shard], m->idx, buf, len, err);
}

/* Bytes copied per step by peftio_ckptw_copy(), and elements per step
 * of a conversion (through f32): large steps make large direct writes,
 * which a disk takes several requests at a time.  Both are multiples of
 * the page size, in bytes written. */
#define COPY_BYTES	(16u << 20)
#define CONV_CHUNK	(2u << 20)

uint64_t
peftio_ckptw_start(const struct peftio_ckptw *w, const char *name)
{
	const struct ckptw_name *m = find_name(w, name);

	return m != NULL ? peftio_stw_start(w->w[m->shard], m->idx) : 0;
}

int
peftio_ckptw_copy(struct peftio_ckptw *w, const char *name,
    struct peftio_ckpt *c, size_t i, enum peftio_dtype dt,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_scratch sb = { NULL, 0 }, db = { NULL, 0 };
	size_t ses, des;
	uint64_t k, n, step, start;
	unsigned char *src = NULL, *dst = NULL;
	float *f = NULL;
	int conv, rc = 0;

	if (i >= c->count)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no tensor number %zu", c->path, i);
	ti = peftio_ckpt_tensor(c, i);
	conv = dt != ti->dtype;
	if (conv && (!peftio_dtype_is_float(ti->dtype) ||
	    !peftio_dtype_is_float(dt)))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s': cannot convert %s to %s", c->path,
		    ti->name, peftio_dtype_name(ti->dtype),
		    peftio_dtype_name(dt));
	ses = conv ? peftio_dtype_bits(ti->dtype) / 8 : 1;
	des = conv ? peftio_dtype_bits(dt) / 8 : 1;
	n = conv ? ti->numel : ti->nbytes;	/* elements, or bytes */
	step = conv ? CONV_CHUNK : COPY_BYTES;
	/* What is written (src copied, dst converted) goes out whole
	 * pages at a time straight from its buffer; each step writes
	 * whole pages, so one placement serves them all. */
	start = peftio_ckptw_start(w, name);
	if (conv)
		src = peftio_scratch(&sb, (size_t)PEFTIO_MIN(n, step) * ses);
	else
		src = peftio_scratch_placed(&sb, (size_t)PEFTIO_MIN(n, step),
		    start);
	if (src == NULL || (conv && ((f = malloc((size_t)PEFTIO_MIN(n, step) *
	    sizeof(float) + 1)) == NULL || (dst = peftio_scratch_placed(&db,
	    (size_t)PEFTIO_MIN(n, step) * des, start)) == NULL))) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (k = 0; k < n && rc == 0; k += step) {
		size_t m = (size_t)PEFTIO_MIN(step, n - k);

		if ((rc = peftio_ckpt_read(c, i, k * ses, src, m * ses,
		    err)) != 0)
			break;
		if (conv) {
			peftio_to_f32(ti->dtype, src, f, m);
			peftio_from_f32(dt, f, dst, m);
			rc = peftio_ckptw_write(w, name, dst, m * des, err);
		} else
			rc = peftio_ckptw_write(w, name, src, m, err);
	}
out:
	peftio_scratch_free(&sb);
	peftio_scratch_free(&db);
	free(f);
	return rc;
}

uint64_t
peftio_ckptw_tensor_bytes(const struct peftio_ckptw *w)
{
	uint64_t size = 0;
	size_t s, i;

	for (s = 0; s < w->nshards; s++)
		for (i = 0; i < out_count(w, s); i++)
			size += out_tensor(w, s, i)->nbytes;
	return size;
}

/* model.safetensors.index.json for the shards, into directory dir. */
static int
write_index(struct peftio_ckptw *w, const char *dir, unsigned flags,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	json_t *root, *meta, *map;
	uint64_t params = 0;
	const char *base;
	char *text, *p;
	size_t s, i, len;
	int rc;

	root = json_object();
	meta = json_object();
	map = json_object();
	if (root == NULL || meta == NULL || map == NULL) {
		json_decref(root);
		json_decref(meta);
		json_decref(map);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	for (s = 0; s < w->nshards; s++) {
		base = out_shard_name(w, s);
		for (i = 0; i < out_count(w, s); i++) {
			ti = out_tensor(w, s, i);
			params += ti->numel;
			json_object_set_new(map, ti->name, json_string(base));
		}
	}
	json_object_set_new(meta, "total_parameters",
	    json_integer((json_int_t)params));
	json_object_set_new(meta, "total_size",
	    json_integer((json_int_t)peftio_ckptw_tensor_bytes(w)));
	json_object_set_new(root, "metadata", meta);
	json_object_set_new(root, "weight_map", map);
	text = peftio_json_pydumps(root, 2, 1, &len);
	json_decref(root);
	if (text == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((p = peftio_path_join(dir, INDEX_NAME)) == NULL) {
		free(text);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	rc = peftio_write_file(p, text, len, flags, err);
	free(p);
	free(text);
	return rc;
}

/* Fail before writing anything if a file to be written exists. */
static int
check_absent(const struct peftio_ckptw *w, const char *name,
    struct peftio_error *err)
{
	struct stat sb;
	char *p;
	int rc = 0;

	if ((p = peftio_path_join(w->path, name)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (lstat(p, &sb) == 0)
		rc = peftio_error_set(err, PEFTIO_EEXIST,
		    "%s: already exists (use -f to overwrite)", p);
	else if (errno != ENOENT)
		rc = peftio_error_sys(err, "%s", p);
	free(p);
	return rc;
}

/*
 * Beside shards written already: each file goes into place on its own
 * (temporary name, rename), the index last, so that a directory with
 * an index is complete.
 */
static int
commit_beside_shards(struct peftio_ckptw *w, struct peftio_error *err)
{
	size_t i;
	int rc;

	if (!(w->flags & PEFTIO_W_FORCE)) {
		for (i = 0; i < w->nfiles; i++)
			if ((rc = check_absent(w, w->files[i].name, err)) != 0)
				return rc;
		if (w->nshards > 1 && (rc = check_absent(w, INDEX_NAME,
		    err)) != 0)
			return rc;
	}
	if ((rc = peftio_ckptw_write_files(w, w->path, w->flags, err)) != 0)
		return rc;
	if (w->nshards > 1)
		return write_index(w, w->path, w->flags, err);
	return 0;
}

int
peftio_ckptw_commit(struct peftio_ckptw *w, struct peftio_error *err)
{
	size_t s;
	int rc;

	if (w->done != NULL)
		return commit_beside_shards(w, err);
	for (s = 0; s < w->nshards; s++)
		if ((rc = peftio_stw_commit(w->w[s], err)) != 0)
			return rc;
	if (!w->as_dir)
		return 0;
	if (w->nshards > 1 && (rc = write_index(w, w->od.tmp,
	    w->flags | PEFTIO_W_FORCE, err)) != 0)
		return rc;
	if ((rc = peftio_ckptw_write_files(w, w->od.tmp, w->flags | PEFTIO_W_FORCE,
	    err)) != 0)
		return rc;
	if ((rc = peftio_outdir_commit(&w->od, err)) != 0)
		return rc;
	w->od_open = 0;
	return 0;
}

void
peftio_ckptw_free(struct peftio_ckptw *w)
{
	size_t s;

	if (w == NULL)
		return;
	for (s = 0; s < w->nshards; s++) {
		if (w->w != NULL)
			peftio_stw_free(w->w[s]);
		if (w->names != NULL)
			free(w->names[s]);
	}
	if (w->od_open)
		peftio_outdir_abort(&w->od);
	for (s = 0; s < w->nfiles; s++) {
		free(w->files[s].name);
		free(w->files[s].data);
		free(w->files[s].src);
	}
	free(w->files);
	free(w->w);
	free(w->names);
	free(w->map);
	free(w->path);
	free(w);
}
