/*
 * cli.h - what the peftio tools share on the command line: messages in
 * err(3) style, numeric option parsing, signal cleanup, the progress
 * line.  Not part of the library.
 */
#ifndef PEFTIO_CLI_H
#define PEFTIO_CLI_H

#include <stdint.h>

#include "peftio.h"

/* Exit statuses, as documented in every man page. */
#define CLI_EXIT_OK	0
#define CLI_EXIT_ERROR	1
#define CLI_EXIT_USAGE	2

extern const char *cli_progname;
/* 0 with -q, 1 by default, 2 and more with -v. */
extern int cli_verbose;

/* Set the program name, install signal handlers that remove temporary
 * outputs and re-raise the signal (exit status 128+N). */
void	cli_init(const char *progname);

/* "progname: message" on stderr. */
void	cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print err's message and return CLI_EXIT_ERROR. */
int	cli_error(const struct peftio_error *err);
/* Informational line on stderr unless -q. */
void	cli_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Extra detail on stderr with -v. */
void	cli_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a decimal integer in [min, max]; 0 or -1 with a message. */
int	cli_parse_u64(const char *opt, const char *s, uint64_t min,
	    uint64_t max, uint64_t *out);
/* "f16"/"float16"/"half", "bf16"/"bfloat16", "f32"/"float32"/"float":
 * the dtype, or -1 with a message. */
int	cli_parse_float_dtype(const char *opt, const char *s);

static inline uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* s ends with suffix. */
int	cli_ends_with(const char *s, const char *suffix);

/* malloc(), calloc() and peftio_scratch() that exit with a message when
 * memory runs out. */
void	*xmalloc(size_t n);
void	*xcalloc(size_t n, size_t size);
void	*xscratch(struct peftio_scratch *s, size_t n);

/*
 * The output writer: writing a tensor overlaps computing the next.  A
 * tool fills the current slot (cli_writer_slot()) and submits a job
 * that writes it; a background thread runs the job while the tool
 * fills the other slot.  A failed job's error is reported by the next
 * submit or by drain.
 */
struct cli_wjob {
	struct peftio_ckptw	*w;
	const char		*name;
	struct peftio_ckpt	*in;	/* for cli_job_copy */
	size_t			 idx;
	enum peftio_dtype	 dt;
	struct peftio_scratch	 buf[4];
	uint64_t		 len;	/* of buf[0], for cli_job_write */
	void			*ctx;	/* the tool's */
	struct peftio_error	 err;
};

int	cli_writer_start(struct peftio_error *err);
struct cli_wjob *cli_writer_slot(void);
int	cli_writer_submit(int (*fn)(struct cli_wjob *),
	    struct peftio_error *err);
int	cli_writer_drain(struct peftio_error *err);
void	cli_writer_stop(void);
/* Jobs: write buf[0] (len bytes) as name; copy tensor idx of in as
 * name, converted to dt. */
int	cli_job_write(struct cli_wjob *j);
int	cli_job_copy(struct cli_wjob *j);

/* Progress on stderr, only when stderr is a terminal and not -q;
 * at most a few updates a second.  cli_progress_end() clears it. */
void	cli_progress(uint64_t done, uint64_t total, const char *what);
void	cli_progress_end(void);

#endif
