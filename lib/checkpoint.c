/*
 * checkpoint.c - a model as one stream of named tensors, whether it is
 * stored as one safetensors file, a directory with model.safetensors,
 * or a directory of shards listed by model.safetensors.index.json
 * (formats.md section 2); and a writer that mirrors such a layout.
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

#define INDEX_NAME	"model.safetensors.index.json"
#define BIN_INDEX_NAME	"pytorch_model.bin.index.json"
#define INDEX_MAX	(256u << 20)	/* refuse larger index files */
#define COPY_BUF	(1u << 20)	/* bytes per step of an added file */

struct ckpt_entry {
	size_t	shard;
	size_t	idx;		/* index inside the shard */
};

struct peftio_ckpt {
	char			*path;
	char			*dir;		/* NULL unless a directory */
	int			 sharded;
	const char		*index_name;	/* when sharded */
	size_t			 nshards;
	char			**shard_names;
	struct peftio_st	**shards;
	size_t			 count;
	struct ckpt_entry	*ents;		/* in listing order */
	size_t			*byname;	/* entry numbers sorted by name */
};

static char *
join(const char *dir, const char *name)
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

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* name inside dir is a regular file. */
static int
has_file(const char *dir, const char *name)
{
	char *p = join(dir, name);
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

	if (!ends_with(s, ext))
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
		if (ends_with(de->d_name, ".safetensors")) {
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
		sp = c->dir != NULL ? join(c->dir, c->shard_names[s]) :
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
		rc = peftio_st_open(&c->shards[s], sp, err);
		free(sp);
		if (rc != 0)
			return rc;
		c->count += peftio_st_count(c->shards[s]);
	}
	return list_tensors(c, index, err);
}

int
peftio_ckpt_open(struct peftio_ckpt **out, const char *path,
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
			if ((ipath = join(path, c->index_name)) == NULL) {
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

void
peftio_ckpt_release(struct peftio_ckpt *c, size_t i)
{
	if (i < c->count)
		peftio_st_release(c->shards[c->ents[i].shard], c->ents[i].idx);
}

/* ------------------------------------------------------------------ */
/* Writer                                                              */

struct ckptw_name {
	const char	*name;	/* owned by the shard writer's info */
	size_t		 shard;
	size_t		 idx;
};

struct ckptw_file {
	char	*name;
	char	*data;
	size_t	 len;
	char	*src;	/* copied from this file at commit, else data */
};

struct peftio_ckptw {
	char			*path;
	int			 as_dir;
	unsigned		 flags;
	struct peftio_outdir	 od;
	int			 od_open;
	size_t			 nshards;
	char			**names;
	struct peftio_stw	**w;
	struct ckptw_name	*map;	/* sorted by name after layout */
	size_t			 count;
	struct ckptw_file	*files;
	size_t			 nfiles;
	int			 laid_out;
	const struct peftio_ckpt *done;	/* shards written already */
	peftio_note_fn		 note;
	void			*note_arg;
};

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

	if (!ends_with(name, ".bin"))
		return join(dir, name);
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
			p = join(w->od.tmp, "model.safetensors");
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

int
peftio_ckptw_write(struct peftio_ckptw *w, const char *name, const void *buf,
    size_t len, struct peftio_error *err)
{
	struct ckptw_name key, *m;

	key.name = name;
	m = w->laid_out ? bsearch(&key, w->map, w->count, sizeof(*w->map),
	    cmp_map) : NULL;
	if (m == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' was not declared", w->path, name);
	return peftio_stw_write(w->w[m->shard], m->idx, buf, len, err);
}

int
peftio_ckptw_file(struct peftio_ckptw *w, const char *name, const void *buf,
    size_t len, struct peftio_error *err)
{
	struct ckptw_file *nf;
	size_t i;

	if (!w->as_dir)
		return 0;
	for (i = 0; i < w->nfiles; i++)
		if (strcmp(w->files[i].name, name) == 0)
			return peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: file %s added twice", w->path, name);
	nf = realloc(w->files, (w->nfiles + 1) * sizeof(*nf));
	if (nf == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	w->files = nf;
	nf = &w->files[w->nfiles];
	nf->name = strdup(name);
	nf->data = malloc(len + 1);
	if (nf->name == NULL || nf->data == NULL) {
		free(nf->name);
		free(nf->data);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	memcpy(nf->data, buf, len);
	nf->len = len;
	nf->src = NULL;
	w->nfiles++;
	return 0;
}

/* Files a checkpoint directory holds that a converter must not copy. */
static int
is_checkpoint_file(const char *name)
{
	size_t n = strlen(name);

	return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) ||
	    (n > 11 && strcmp(name + n - 11, ".index.json") == 0) ||
	    (n > 4 && strcmp(name + n - 4, ".bin") == 0);
}

/*
 * The training state a Hugging Face Trainer saves beside the model in a
 * checkpoint-N folder: of no use to a converted model.
 */
int
peftio_is_training_state(const char *name)
{
	static const char *const names[] = {
		"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
		"rng_state.pth", "trainer_state.json", "training_args.bin"
	};
	size_t i, n = strlen(name);

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	/* rng_state_<rank>.pth of a run on several processes */
	return n > 14 && strncmp(name, "rng_state_", 10) == 0 &&
	    strcmp(name + n - 4, ".pth") == 0 &&
	    strspn(name + 10, "0123456789") == n - 14;
}

void
peftio_ckptw_set_note(struct peftio_ckptw *w, peftio_note_fn fn, void *arg)
{
	w->note = fn;
	w->note_arg = arg;
}

static void	note(const struct peftio_ckptw *w, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

static void
note(const struct peftio_ckptw *w, const char *fmt, ...)
{
	char msg[PEFTIO_ERRMSG_MAX];
	va_list ap;

	if (w->note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->note(w->note_arg, msg);
}

/* Add file p (a regular file) as name, to be copied at commit. */
static int
add_copy(struct peftio_ckptw *w, const char *name, char *p,
    struct peftio_error *err)
{
	struct ckptw_file *nf;

	nf = realloc(w->files, (w->nfiles + 1) * sizeof(*nf));
	if (nf == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	w->files = nf;
	nf = &w->files[w->nfiles];
	if ((nf->name = strdup(name)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	nf->data = NULL;
	nf->len = 0;
	nf->src = p;
	w->nfiles++;
	return 0;
}

int
peftio_ckptw_copy_aux(struct peftio_ckptw *w, const char *dir,
    struct peftio_error *err)
{
	struct dirent *de;
	struct stat sb;
	char *p;
	size_t i;
	DIR *d;
	int rc = 0, have;

	if (!w->as_dir || dir == NULL)
		return 0;
	if ((d = opendir(dir)) == NULL)
		return peftio_error_sys(err, "%s", dir);
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (peftio_is_training_state(de->d_name)) {
			note(w, "%s/%s: training state, not copied", dir,
			    de->d_name);
			continue;
		}
		if (is_checkpoint_file(de->d_name))
			continue;
		for (i = 0, have = 0; i < w->nfiles; i++)
			if (strcmp(w->files[i].name, de->d_name) == 0)
				have = 1;
		if (have)
			continue;
		if ((p = join(dir, de->d_name)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			break;
		}
		/* Followed: a Hugging Face cache links each file to a blob. */
		if (stat(p, &sb) != 0) {
			if (errno == ENOENT && lstat(p, &sb) == 0)
				rc = peftio_error_set(err, PEFTIO_ENOTFOUND,
				    "%s: a symbolic link to a missing file "
				    "(an incomplete download?)", p);
			else
				rc = peftio_error_sys(err, "%s", p);
			free(p);
			break;
		}
		if (S_ISDIR(sb.st_mode)) {
			note(w, "%s/: a subfolder, not copied", p);
			free(p);
			continue;
		}
		if (!S_ISREG(sb.st_mode)) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: not a regular file (a device, pipe or "
			    "socket), cannot be copied with the model", p);
			free(p);
			break;
		}
		if ((rc = add_copy(w, de->d_name, p, err)) != 0)
			free(p);
	}
	closedir(d);
	return rc;
}

/* Copy file src to dst a piece at a time, through a temporary file. */
static int
copy_file(const char *src, const char *dst, unsigned flags,
    struct peftio_error *err)
{
	struct peftio_outfile of;
	struct stat sb;
	unsigned char *buf;
	uint64_t off = 0;
	ssize_t n;
	int fd, rc;

	if ((fd = open(src, O_RDONLY | O_CLOEXEC)) < 0)
		return peftio_error_sys(err, "%s", src);
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: not a regular file", src);
	}
	if ((buf = malloc(COPY_BUF)) == NULL) {
		close(fd);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	if ((rc = peftio_outfile_open(&of, dst, flags, err)) != 0)
		goto out;
	for (;;) {
		if ((n = read(fd, buf, COPY_BUF)) < 0) {
			if (errno == EINTR)
				continue;
			rc = peftio_error_sys(err, "%s", src);
			break;
		}
		if (n == 0)
			break;
		if ((rc = peftio_outfile_pwrite(&of, buf, (size_t)n, off,
		    err)) != 0)
			break;
		off += (uint64_t)n;
	}
	if (rc != 0)
		peftio_outfile_abort(&of);
	else
		rc = peftio_outfile_commit(&of, err);
out:
	free(buf);
	close(fd);
	return rc;
}

/* Elements copied per step by peftio_ckptw_copy(). */
#define COPY_CHUNK	(1u << 20)

int
peftio_ckptw_copy(struct peftio_ckptw *w, const char *name,
    struct peftio_ckpt *c, size_t i, enum peftio_dtype dt,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	size_t ses, des;
	uint64_t k, n;
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
	if ((src = malloc((size_t)PEFTIO_MIN(n, COPY_CHUNK) * ses + 1)) ==
	    NULL || (conv && ((f = malloc((size_t)PEFTIO_MIN(n, COPY_CHUNK) *
	    sizeof(float) + 1)) == NULL || (dst = malloc((size_t)PEFTIO_MIN(n,
	    COPY_CHUNK) * des + 1)) == NULL))) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (k = 0; k < n && rc == 0; k += COPY_CHUNK) {
		size_t m = (size_t)PEFTIO_MIN(COPY_CHUNK, n - k);

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
	free(src);
	free(dst);
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
	if ((p = join(dir, INDEX_NAME)) == NULL) {
		free(text);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	rc = peftio_write_file(p, text, len, flags, err);
	free(p);
	free(text);
	return rc;
}

/* The added files, into directory dir. */
static int
write_files(struct peftio_ckptw *w, const char *dir, unsigned flags,
    struct peftio_error *err)
{
	size_t i;
	char *p;
	int rc;

	for (i = 0; i < w->nfiles; i++) {
		if ((p = join(dir, w->files[i].name)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		if (w->files[i].src != NULL)
			rc = copy_file(w->files[i].src, p, flags, err);
		else
			rc = peftio_write_file(p, w->files[i].data,
			    w->files[i].len, flags, err);
		free(p);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Fail before writing anything if a file to be written exists. */
static int
check_absent(const struct peftio_ckptw *w, const char *name,
    struct peftio_error *err)
{
	struct stat sb;
	char *p;
	int rc = 0;

	if ((p = join(w->path, name)) == NULL)
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
	if ((rc = write_files(w, w->path, w->flags, err)) != 0)
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
	if ((rc = write_files(w, w->od.tmp, w->flags | PEFTIO_W_FORCE,
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
