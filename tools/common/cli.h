/*
 * cli.h - what the peftio tools share on the command line: messages in
 * err(3) style, numeric option parsing, signal cleanup (cli.c); the
 * progress line and the summary line (progress.c).  Not part of the
 * library.
 */
#ifndef PEFTIO_CLI_H
#define PEFTIO_CLI_H

#include <stdint.h>

#include "peftio.h"
#include "options.h"

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
/* A peftio_note_fn: the library's note as cli_debug(). */
void	cli_note(void *arg, const char *msg);

/*
 * The options every tool shares (options.c has their table): -f/--force,
 * -j/--jobs N (0: one per CPU, at most PEFTIO_MAX_JOBS), -o/--output
 * PATH, -q/--quiet, -v/--verbose, -h/--help and --version; a tool that
 * only reads takes them without -f and -o.  A tool hands every option
 * to cli_common_opt() first.
 */
struct cli_common {
	const char	*out;		/* NULL until -o */
	int		 force;
	unsigned	 jobs;
};

/* Set the defaults (jobs: one per CPU). */
void	cli_common_init(struct cli_common *c);
/* 1 when ch was a common option (handled), 0 when it is the tool's;
 * --help, --version and --bash-completion exit 0, a bad -j calls
 * usage(CLI_EXIT_USAGE). */
int	cli_common_opt(struct cli_common *c, int ch, const char *arg,
	    void (*usage)(int));

/*
 * The output of a tool that writes a checkpoint, checked before any
 * work: without -o, standard output when the first input is "-" (else
 * usage); never a checkpoint on a terminal without -f; never an output
 * that is, holds or lies inside one of the inputs.  0, or the exit
 * status after a message.
 */
int	cli_common_output(struct cli_common *c, const char *const *in,
	    size_t nin, void (*usage)(int));
/* An output named like a format these tools do not write (.gguf,
 * .bin): a message and usage(CLI_EXIT_USAGE). */
void	cli_output_name(const char *opt, const char *out,
	    void (*usage)(int));

/* Parse a decimal integer in [min, max]; 0 or -1 with a message. */
int	cli_parse_u64(const char *opt, const char *s, uint64_t min,
	    uint64_t max, uint64_t *out);
/* Parse a real number in [lo, hi]; 0 or -1 with a message. */
int	cli_parse_double(const char *opt, const char *s, double lo, double hi,
	    double *out);
/* Comma-separated finite numbers ("1,0.5"): *out (freed first, then
 * allocated) and their count *n; 0, or -1 with a message. */
int	cli_parse_weights(const char *opt, const char *s, double **out,
	    size_t *n);
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

/* Refuse (a message and CLI_EXIT_ERROR) an output that is, holds or
 * lies inside one of the nin inputs, compared by device and inode
 * along the path up to the root; "-" on either side is a stream. */
int	cli_check_clash(const char *out, const char *const *in, size_t nin);

/*
 * Progress on stderr, one line rewritten with \r, only when stderr is a
 * terminal and not -q; at most 10 updates a second.  cli_meter() starts
 * a step: done and total count bytes (unit NULL; nitems > 0: the step's
 * items, shown as "k/n" as what changes), or the unit named ("tensors").
 * cli_progress_end() clears the line (every message does too).
 */
void	cli_meter(const char *unit, uint64_t nitems);
void	cli_progress(uint64_t done, uint64_t total, const char *what);
void	cli_progress_end(void);
/* A peftio_progress_fn for every hook of the library (ctx unused):
 * cli_progress(), and cli_progress_end() when what is NULL. */
void	cli_xf_progress(void *ctx, uint64_t done, uint64_t total,
	    const char *what);

/* Seconds since cli_init(), which calls cli_clock_start(). */
void	cli_clock_start(void);
double	cli_elapsed(void);
/* "812 B", "3.80 GB": powers of 1000, two decimals. */
const char *cli_size(uint64_t v, char *buf, size_t len);
/*
 * The line that ends a run, unless -q: "PROG: NAME : IN => OUT (R%),
 * MORE, T s, RATE/s" on stderr (MORE may be NULL).
 */
void	cli_summary(const char *name, uint64_t in, uint64_t out,
	    const char *more);

#endif
