/*
 * reader_private.h - what the reader's files share: the safetensors
 * handle, the header parser (safetensors.c) the reader (reader.c) calls,
 * and the source layer (source.c).  Not
 * installed.
 */
#ifndef PEFTIO_READER_PRIVATE_H
#define PEFTIO_READER_PRIVATE_H

#include <stdint.h>
#include <stddef.h>

#include "peftio.h"
#include "text.h"

#define PEFTIO_ST_MAX_HEADER	100000000ULL /* reference's MAX_HEADER_SIZE */

/* ------------------------------------------------------------------ */
/* The safetensors reader's handle (reader.c, safetensors.c)           */

struct st_meta {
	char	*key;
	char	*value;
};

struct peftio_st {
	char		*path;
	char		*label;		/* name used in messages */
	const unsigned char *data;	/* the data section */
	uint64_t	 datalen;
	void		*map;
	size_t		 maplen;
	int		 fd;		/* the file (or spool), for pread; or -1 */
	uint64_t	 fdoff;		/* where the data section starts in it */
	struct peftio_tensor_info *t;
	size_t		 n;
	char		*names;		/* NUL-separated names */
	struct st_meta	*meta;
	size_t		 nmeta;
	size_t		*meta_order;	/* meta sorted by key */
	struct peftio_nameidx ix;
	struct peftio_torchbin *tb;	/* a torch.save archive, or NULL */
	struct peftio_spool *bg;	/* a stream still arriving, or NULL */
};

/* A valid address for empty data. */
extern const unsigned char peftio_st_empty[1];

static inline uint64_t
peftio_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline const char *
peftio_st_name_at(const void *ctx, size_t i)
{
	const struct peftio_st *st = ctx;

	return st->t[i].name;
}

/*
 * safetensors.c: steps 4 to 7 on the n header bytes: fills the tensor
 * list, the metadata and the name index of st, and sets *datalen to the
 * size the data section must have.
 */
int	peftio_st_parse_header(struct peftio_st *st, const unsigned char *hdr,
	    size_t n, uint64_t *datalen, struct peftio_error *err);
/* Steps 2 and 3 on the 8-byte prefix; avail is what follows it. */
int	peftio_st_check_length(const char *label, uint64_t n, uint64_t avail,
	    int stream, struct peftio_error *err);
/* Step 8: the file size against header and data. */
int	peftio_st_check_total(const char *label, uint64_t n, uint64_t datalen,
	    uint64_t size, struct peftio_error *err);

/* ------------------------------------------------------------------ */
/* source.c: the bytes under the parsers                               */

/*
 * What the first len bytes of an input are: 1 a torch.save zip
 * archive, 0 anything else (read as safetensors), PEFTIO_EUNSUPPORTED
 * for torch's formats before 1.6 and GGUF, or PEFTIO_EFORMAT for text
 * (JSON, YAML or other), named in the message.
 */
int	peftio_sniff(const void *buf, size_t len, const char *label,
	    struct peftio_error *err);

/*
 * Open path ("-" is standard input) for reading.  *regular: a regular
 * file read from its start, *size bytes long, to be mapped; else a
 * stream (pipe, FIFO, terminal, socket, standard input not at 0).  A
 * directory is PEFTIO_EINVAL.  label names the input in messages.
 */
int	peftio_src_open(const char *path, const char *label, int *fd,
	    int *regular, uint64_t *size, struct peftio_error *err);
/* Exactly len bytes at off: 0, -1 with errno, 1 at an early end of
 * file (the file shrank). */
int	peftio_src_pread(int fd, void *buf, size_t len, uint64_t off);
/* A private read-only mapping of len bytes of fd from off (a multiple
 * of the page size); NULL with errno on failure. */
void	*peftio_src_map(int fd, uint64_t off, size_t len);
/*
 * Copy fd to the spool file sp through buf (len bytes), up to max bytes
 * or the end of the input; *got says how many.  0, -1 on a read error,
 * -2 on a write error (errno kept).
 */
int	peftio_src_spool(int fd, int sp, unsigned char *buf, size_t len,
	    uint64_t max, uint64_t *got);


/*
 * A stream copied to a spool file by a thread of its own: len bytes
 * from in (then its end, checked) to out at 0.  label names the input
 * in messages.  The spool owns in (closed by peftio_spool_free()), not
 * out.
 */
struct peftio_spool;

int	peftio_spool_start(struct peftio_spool **out, int in, int sp,
	    uint64_t len, const char *label, struct peftio_error *err);
/* Wait until the first end bytes are in the spool (with whole, until
 * the stream has been read to its end and found to end there): 0, or
 * the error that stopped the copy before that point. */
int	peftio_spool_wait(struct peftio_spool *s, uint64_t end, int whole,
	    struct peftio_error *err);
/* Stop the copy (a read in progress is interrupted) and free. */
void	peftio_spool_free(struct peftio_spool *s);

/* reader.c: a stream opened with bg is spooled in the background. */
int	peftio_st_open_bg(struct peftio_st **out, const char *path, int bg,
	    struct peftio_error *err);
int	peftio_st_complete(struct peftio_st *st, struct peftio_error *err);
/* Read tensor i of a file ahead (posix_fadvise WILLNEED). */
void	peftio_st_prefetch(struct peftio_st *st, size_t i);
/* peftio_ckpt_view() of one file. */
int	peftio_st_view(struct peftio_st *st, size_t i, const void **data,
	    struct peftio_error *err);

#endif /* PEFTIO_READER_PRIVATE_H */
