/*
 * text.h - text.c: names and bytes as the library shows, hashes and
 * writes them (peftio_show() and peftio_utf8_valid() are declared in
 * peftio_private.h).  Not installed.
 */
#ifndef PEFTIO_TEXT_H
#define PEFTIO_TEXT_H

#include <stdint.h>
#include <stddef.h>


/* Shape as "[d0, d1, ...]" in buf (len bytes). */
const char *peftio_fmt_shape(char *buf, size_t len, const uint64_t *shape,
	    int ndim);

/* The hash of a name for the index below (FNV-1a, folded). */
uint64_t peftio_name_hash(const char *s);

/* Names looked up by open addressing over indices 0..n-1; get(ctx, i)
 * gives name i. */
struct peftio_nameidx {
	size_t	*slot;		/* index + 1; 0 is empty */
	size_t	 cap;		/* power of 2 */
	size_t	 count;
};

long	peftio_nameidx_find(const struct peftio_nameidx *ix, const char *name,
	    const char *(*get)(const void *, size_t), const void *ctx);
void	peftio_nameidx_put(struct peftio_nameidx *ix, size_t i,
	    const char *name);
/* Rebuild for n entries; -1 when out of memory. */
int	peftio_nameidx_build(struct peftio_nameidx *ix, size_t n,
	    const char *(*get)(const void *, size_t), const void *ctx);

/* A growing byte buffer, kept NUL-terminated; out of memory is sticky
 * (oom set, later additions ignored).  Zeroed to start; free(p). */
struct peftio_sbuf {
	char	*p;
	size_t	 len, cap;
	int	 oom;
};

void	peftio_sb_add(struct peftio_sbuf *b, const void *s, size_t n);
void	peftio_sb_str(struct peftio_sbuf *b, const char *s);
/*
 * s[0..n) as a JSON string: quotes, backslashes and control characters
 * escaped (\b \t \n \f \r, others \u00xx).  ascii = 0: the rest as is,
 * as serde_json writes (safetensors headers); ascii = 1: DEL and every
 * non-ASCII character (s is valid UTF-8) as \uXXXX or a surrogate pair,
 * as Python's json.dumps(ensure_ascii=True).
 */
void	peftio_sb_json(struct peftio_sbuf *b, const char *s, size_t n,
	    int ascii);

#endif /* PEFTIO_TEXT_H */
