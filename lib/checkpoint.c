/*
 * checkpoint.c - a model as one stream of named tensors, whether it is
 * stored as one safetensors file, a directory with model.safetensors,
 * or a directory of shards listed by model.safetensors.index.json
 * (formats.md section 2).  The writer that mirrors such a layout is
 * ckpt_write.c; the other files of a model folder, ckpt_files.c.
 *
 * The same layouts written by torch.save (pytorch_model.bin,
 * pytorch_model.bin.index.json, adapter_model.bin) are read too: the
 * safetensors reader hands .bin files to torchbin.c.  Where a directory
 * holds both, safetensors wins, as in transformers.  Output is always
 * safetensors.
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
#include "reader_private.h"

#define INDEX_NAME	"model.safetensors.index.json"
#define BIN_INDEX_NAME	"pytorch_model.bin.index.json"
#define INDEX_MAX	(256u << 20)	/* refuse larger index files */

char *
peftio_path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static int
is_file(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* name inside dir is a regular file. */
static int
has_file(const char *dir, const char *name)
{
	char *p = peftio_path_join(dir, name);
	int yes = p != NULL && is_file(p);

	free(p);
	return yes;
}

static const struct peftio_tensor_info *
ent_info(const struct peftio_ckpt *c, size_t e)
{
	return peftio_st_tensor(c->shards[c->ents[e].shard], c->ents[e].idx);
}

static int
cmp_byname(const void *a, const void *b, void *ctx)
{
	const struct peftio_ckpt *c = ctx;

	return strcmp(ent_info(c, *(const size_t *)a)->name,
	    ent_info(c, *(const size_t *)b)->name);
}

/* A shard name from an index: relative, no "..", with extension ext. */
static int
shard_name_ok(const char *s, const char *ext)
{
	const char *p, *slash;
	size_t n;

	if (!peftio_ends_with(s, ext))
		return 0;
	if (s[0] == '/' || strchr(s, '\\') != NULL || strchr(s, ':') != NULL)
		return 0;
	for (p = s; ; p = slash + 1) {
		slash = strchr(p, '/');
		n = slash != NULL ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 0;
		if (slash == NULL)
			return 1;
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read the index: the sorted, unique list of shard names. */
static int
read_index(struct peftio_ckpt *c, const char *ipath, const char *ext,
    json_t **mapp, struct peftio_error *err)
{
	json_error_t jerr;
	json_t *root = NULL, *map;
	const char *key;
	json_t *v;
	char *text = NULL;
	size_t len, n = 0, i, j;
	int rc;

	if ((rc = peftio_read_file(ipath, INDEX_MAX, &text, &len, err)) != 0)
		return rc;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (root == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: line %d: %s", ipath, jerr.line, jerr.text);
	/* The messages below quote the index: root is freed after them. */
	map = json_object_get(root, "weight_map");
	if (!json_is_object(root) || !json_is_object(map)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: no \"weight_map\" object", ipath);
		goto fail;
	}
	if (json_object_size(map) == 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: \"weight_map\" is empty: it lists no tensor", ipath);
		goto fail;
	}
	c->shard_names = calloc(json_object_size(map) + 1, sizeof(char *));
	if (c->shard_names == NULL)
		goto oom;
	/* The messages quote strings of root: set them before freeing it. */
	json_object_foreach(map, key, v) {
		if (!json_is_string(v)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': shard name is not a string",
			    ipath, key);
			goto fail;
		}
		if (!shard_name_ok(json_string_value(v), ext)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': bad shard file name \"%s\" "
			    "(must be a relative %s path without \"..\")",
			    ipath, key, json_string_value(v), ext);
			goto fail;
		}
		c->shard_names[n] = (char *)json_string_value(v);
		n++;
	}
	qsort(c->shard_names, n, sizeof(char *), cmp_str);
	for (i = 0, j = 0; i < n; i++)
		if (j == 0 || strcmp(c->shard_names[j - 1],
		    c->shard_names[i]) != 0)
			c->shard_names[j++] = c->shard_names[i];
	for (i = 0; i < j; i++)
		if ((c->shard_names[i] = strdup(c->shard_names[i])) == NULL) {
			while (i > 0)
				free(c->shard_names[--i]);
			goto oom;
		}
	c->nshards = j;
	*mapp = root;
	return 0;
oom:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory", ipath);
fail:
	json_decref(root);
	return rc;
}

/*
 * The one checkpoint file of a directory without an index, if any: for
 * safetensors, model.safetensors, adapter_model.safetensors or the only
 * *.safetensors file; for torch, pytorch_model.bin or adapter_model.bin
 * only, since other .bin files (training_args.bin) are no checkpoints.
 */
static char *
sole_file(const char *dir, int torch)
{
	static const char *const pref[2][2] = {
		{ "model.safetensors", "adapter_model.safetensors" },
		{ "pytorch_model.bin", "adapter_model.bin" }
	};
	struct dirent *de;
	char *found = NULL;
	size_t i;
	int count = 0;
	DIR *d;

	for (i = 0; i < 2; i++)
		if (has_file(dir, pref[torch][i]))
			return strdup(pref[torch][i]);
	if (torch || (d = opendir(dir)) == NULL)
		return NULL;
	while ((de = readdir(d)) != NULL) {
		if (peftio_ends_with(de->d_name, ".safetensors")) {
			count++;
			free(found);
			found = strdup(de->d_name);
		}
	}
	closedir(d);
	if (count != 1) {
		free(found);
		return NULL;
	}
	return found;
}

/*
 * Number the tensors of the open shards in listing order, sort them by
 * name, refuse a name stored twice and, with an index, a tensor that is
 * not in the shard the index names.
 */
static int
list_tensors(struct peftio_ckpt *c, json_t *index, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	const char *key;
	json_t *v;
	size_t s, i, e;
	long k;

	c->ents = calloc(c->count + 1, sizeof(*c->ents));
	c->byname = calloc(c->count + 1, sizeof(*c->byname));
	if (c->ents == NULL || c->byname == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", c->path);
	for (s = 0, e = 0; s < c->nshards; s++)
		for (i = 0; i < peftio_st_count(c->shards[s]); i++, e++) {
			c->ents[e].shard = s;
			c->ents[e].idx = i;
			c->byname[e] = e;
		}
	qsort_r(c->byname, c->count, sizeof(size_t), cmp_byname, c);
	for (e = 1; e < c->count; e++) {
		ti = ent_info(c, c->byname[e]);
		if (strcmp(ti->name, ent_info(c, c->byname[e - 1])->name) == 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' is stored in two shards (%s, %s)",
			    c->path, ti->name,
			    c->shard_names[c->ents[c->byname[e - 1]].shard],
			    c->shard_names[c->ents[c->byname[e]].shard]);
	}
	if (index == NULL)
		return 0;
	/* Every tensor of the index must be in the shard it names. */
	json_object_foreach(json_object_get(index, "weight_map"), key, v) {
		k = peftio_ckpt_find(c, key);
		if (k < 0 || strcmp(c->shard_names[c->ents[k].shard],
		    json_string_value(v)) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' is not in shard %s as %s says",
			    c->path, key, json_string_value(v), c->index_name);
	}
	return 0;
}

/*
 * Open the shards c->shard_names (inside c->dir when it is set) and list
 * their tensors.  With listed_in (the index's name, or "") a shard that
 * is not a regular file is reported as missing; with index, every tensor
 * must be in the shard it names.
 */
static int
load_shards(struct peftio_ckpt *c, const char *listed_in, json_t *index,
    struct peftio_error *err)
{
	size_t s;
	char *sp;
	int rc;

	if ((c->shards = calloc(c->nshards, sizeof(*c->shards))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", c->path);
	for (s = 0; s < c->nshards; s++) {
		sp = c->dir != NULL ? peftio_path_join(c->dir, c->shard_names[s]) :
		    strdup(c->shard_names[s]);
		if (sp == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", c->path);
		if (listed_in != NULL && !is_file(sp)) {
			free(sp);
			return peftio_error_set(err, PEFTIO_ENOTFOUND,
			    "%s: shard %s%s%s is missing", c->path,
			    c->shard_names[s], *listed_in ? " listed in " : "",
			    listed_in);
		}
		rc = peftio_st_open_bg(&c->shards[s], sp, c->stream, err);
		free(sp);
		if (rc != 0)
			return rc;
		c->count += peftio_st_count(c->shards[s]);
	}
	return list_tensors(c, index, err);
}

static int
ckpt_open(struct peftio_ckpt **out, const char *path, int stream,
    struct peftio_error *err)
{
	struct peftio_ckpt *c;
	struct stat sb;
	json_t *index = NULL;
	char *ipath = NULL, *sole = NULL;
	int rc;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->path = strdup(path)) == NULL) {
		free(c);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", path);
	}
	c->stream = stream;
	if (strcmp(path, "-") != 0 && stat(path, &sb) == 0 &&
	    S_ISDIR(sb.st_mode)) {
		if ((c->dir = strdup(path)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", path);
			goto fail;
		}
		/* Safetensors first; an index before a single file. */
		if (has_file(path, INDEX_NAME))
			c->index_name = INDEX_NAME;
		else if ((sole = sole_file(path, 0)) == NULL) {
			if (has_file(path, BIN_INDEX_NAME))
				c->index_name = BIN_INDEX_NAME;
			else if ((sole = sole_file(path, 1)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOTFOUND,
				    "%s: no model.safetensors, "
				    "pytorch_model.bin or sharded index (%s, "
				    "%s) in this directory", path, INDEX_NAME,
				    BIN_INDEX_NAME);
				goto fail;
			}
		}
		if (c->index_name != NULL) {
			c->sharded = 1;
			if ((ipath = peftio_path_join(path, c->index_name)) == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "%s: out of memory", path);
				goto fail;
			}
			if ((rc = read_index(c, ipath, strcmp(c->index_name,
			    INDEX_NAME) == 0 ? ".safetensors" : ".bin", &index,
			    err)) != 0)
				goto fail;
		} else {
			c->nshards = 1;
			c->shard_names = calloc(2, sizeof(char *));
			if (c->shard_names == NULL) {
				free(sole);
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "%s: out of memory", path);
				goto fail;
			}
			c->shard_names[0] = sole;
		}
	} else {
		c->nshards = 1;
		if ((c->shard_names = calloc(2, sizeof(char *))) == NULL ||
		    (c->shard_names[0] = strdup(path)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", path);
			goto fail;
		}
	}
	if ((rc = load_shards(c, c->sharded ? c->index_name : NULL, index,
	    err)) != 0)
		goto fail;
	json_decref(index);
	index = NULL;
	free(ipath);
	*out = c;
	return 0;
fail:
	json_decref(index);
	free(ipath);
	peftio_ckpt_close(c);
	return rc;
}

int
peftio_ckpt_open(struct peftio_ckpt **out, const char *path,
    struct peftio_error *err)
{
	return ckpt_open(out, path, 0, err);
}

int
peftio_ckpt_open_stream(struct peftio_ckpt **out, const char *path,
    struct peftio_error *err)
{
	return ckpt_open(out, path, 1, err);
}

int
peftio_ckpt_complete(struct peftio_ckpt *c, struct peftio_error *err)
{
	size_t s;
	int rc;

	for (s = 0; s < c->nshards; s++)
		if (c->shards[s] != NULL &&
		    (rc = peftio_st_complete(c->shards[s], err)) != 0)
			return rc;
	return 0;
}

int
peftio_ckpt_open_shards(struct peftio_ckpt **out, const char *dir, size_t n,
    const char *const *names, struct peftio_error *err)
{
	struct peftio_ckpt *c;
	struct stat sb;
	size_t s;
	int rc;

	*out = NULL;
	if (n == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "%s: no shards",
		    dir);
	if (stat(dir, &sb) != 0)
		return peftio_error_sys(err, "%s", dir);
	if (!S_ISDIR(sb.st_mode))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: not a directory", dir);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", dir);
	c->nshards = n;
	c->path = strdup(dir);
	c->dir = strdup(dir);
	c->shard_names = calloc(n + 1, sizeof(char *));
	if (c->path == NULL || c->dir == NULL || c->shard_names == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", dir);
		goto fail;
	}
	for (s = 0; s < n; s++) {
		if (!shard_name_ok(names[s], ".safetensors")) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: bad shard file name \"%s\"", dir, names[s]);
			goto fail;
		}
		if ((c->shard_names[s] = strdup(names[s])) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", dir);
			goto fail;
		}
	}
	if ((rc = load_shards(c, "", NULL, err)) != 0)
		goto fail;
	*out = c;
	return 0;
fail:
	peftio_ckpt_close(c);
	return rc;
}

int
peftio_ckpt_open_mem(struct peftio_ckpt **out, const void *buf, size_t len,
    const char *label, struct peftio_error *err)
{
	struct peftio_ckpt *c;
	int rc;

	*out = NULL;
	if (label == NULL)
		label = "<memory>";
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->path = strdup(label)) == NULL ||
	    (c->shard_names = calloc(2, sizeof(char *))) == NULL ||
	    (c->shards = calloc(1, sizeof(*c->shards))) == NULL) {
		peftio_ckpt_close(c);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", label);
	}
	c->nshards = 1;
	if ((c->shard_names[0] = strdup(label)) == NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    label);
	else
		rc = peftio_st_open_mem(&c->shards[0], buf, len, label, err);
	if (rc == 0) {
		c->count = peftio_st_count(c->shards[0]);
		rc = list_tensors(c, NULL, err);
	}
	if (rc != 0) {
		peftio_ckpt_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

void
peftio_ckpt_close(struct peftio_ckpt *c)
{
	size_t s;

	if (c == NULL)
		return;
	for (s = 0; s < c->nshards; s++) {
		if (c->shards != NULL)
			peftio_st_close(c->shards[s]);
		if (c->shard_names != NULL)
			free(c->shard_names[s]);
	}
	free(c->shards);
	free(c->shard_names);
	free(c->ents);
	free(c->byname);
	free(c->dir);
	free(c->path);
	free(c);
}

const char *
peftio_ckpt_path(const struct peftio_ckpt *c)
{
	return c->path;
}

const char *
peftio_ckpt_dir(const struct peftio_ckpt *c)
{
	return c->dir;
}

int
peftio_ckpt_sharded(const struct peftio_ckpt *c)
{
	return c->sharded;
}

size_t
peftio_ckpt_nshards(const struct peftio_ckpt *c)
{
	return c->nshards;
}

const char *
peftio_ckpt_shard_name(const struct peftio_ckpt *c, size_t s)
{
	return s < c->nshards ? c->shard_names[s] : NULL;
}

struct peftio_st *
peftio_ckpt_shard(const struct peftio_ckpt *c, size_t s)
{
	return s < c->nshards ? c->shards[s] : NULL;
}

size_t
peftio_ckpt_count(const struct peftio_ckpt *c)
{
	return c->count;
}

const struct peftio_tensor_info *
peftio_ckpt_tensor(const struct peftio_ckpt *c, size_t i)
{
	return i < c->count ? ent_info(c, i) : NULL;
}

size_t
peftio_ckpt_shard_of(const struct peftio_ckpt *c, size_t i)
{
	return c->ents[i].shard;
}

long
peftio_ckpt_find(const struct peftio_ckpt *c, const char *name)
{
	size_t lo = 0, hi = c->count, mid;
	int d;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		d = strcmp(name, ent_info(c, c->byname[mid])->name);
		if (d == 0)
			return (long)c->byname[mid];
		if (d < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

int
peftio_ckpt_data(struct peftio_ckpt *c, size_t i, const void **data,
    struct peftio_error *err)
{
	if (i >= c->count)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no tensor number %zu", c->path, i);
	return peftio_st_data(c->shards[c->ents[i].shard], c->ents[i].idx,
	    data, err);
}

int
peftio_ckpt_read(struct peftio_ckpt *c, size_t i, uint64_t off, void *buf,
    size_t len, struct peftio_error *err)
{
	if (i >= c->count)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: no tensor number %zu", c->path, i);
	return peftio_st_read(c->shards[c->ents[i].shard], c->ents[i].idx,
	    off, buf, len, err);
}

int
peftio_ckpt_view(struct peftio_ckpt *c, size_t i, const void **data,
    struct peftio_error *err)
{
	if (i >= c->count)
		return 1;
	return peftio_st_view(c->shards[c->ents[i].shard], c->ents[i].idx,
	    data, err);
}

void
peftio_ckpt_prefetch(struct peftio_ckpt *c, size_t i)
{
	if (i < c->count)
		peftio_st_prefetch(c->shards[c->ents[i].shard],
		    c->ents[i].idx);
}

void
peftio_ckpt_release(struct peftio_ckpt *c, size_t i)
{
	if (i < c->count)
		peftio_st_release(c->shards[c->ents[i].shard], c->ents[i].idx);
}
