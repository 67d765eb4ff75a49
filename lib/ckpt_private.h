/*
 * ckpt_private.h - the checkpoint writer's handle, shared by
 * ckpt_write.c (tensors, shards, index) and ckpt_files.c (the model
 * folder's other files).  Not installed.
 */
#ifndef PEFTIO_CKPT_PRIVATE_H
#define PEFTIO_CKPT_PRIVATE_H

#include <string.h>

#include "peftio.h"

/* The reader (checkpoint.c); the writer reads shards written already. */
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
	int			 stream;	/* streams read in the background */
};

static inline int
peftio_ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

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

/* checkpoint.c: "dir/name", malloc'ed; NULL when out of memory. */
char	*peftio_path_join(const char *dir, const char *name);

/* ckpt_files.c: the added files, into directory dir. */
int	peftio_ckptw_write_files(struct peftio_ckptw *w, const char *dir,
	    unsigned flags, struct peftio_error *err);

#endif /* PEFTIO_CKPT_PRIVATE_H */
