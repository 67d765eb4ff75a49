/*
 * options.h - a tool's command line from one table.  The getopt_long
 * option array and option string, the -h/--help text, the short usage
 * of a usage error and the bash completion are all made from it, so
 * they cannot disagree.  Not part of the library.
 */
#ifndef PEFTIO_OPTIONS_H
#define PEFTIO_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

/*
 * One row of a table.  An argument whose name lists words ("nf4|fp4")
 * or that has values completes those words; one named FILE, PATH or
 * OUTPUT (or ending in _FILE) completes file names, DIR (or ending in
 * _DIR) directory names; any other (N, GLOB) nothing.
 */
struct cli_opt {
	int		 ch;	/* what getopt returns: the short option, or a
				   code above 255 for a long option alone;
				   0 in a heading */
	const char	*name;	/* the long option without "--", or NULL */
	const char	*arg;	/* its argument as --help shows it, or NULL */
	const char	*help;	/* one line; a heading's title; NULL: the
				   option is hidden (an alias) */
	const char	*values; /* words the argument completes to, when
				   arg does not list them */
};

#define CLI_GROUP(title)	{ 0, NULL, NULL, (title), NULL }
#define CLI_END			{ 0, NULL, NULL, NULL, NULL }

/* Codes of the shared long options without a short one. */
#define CLI_OPT_VERSION		0x7ff0
#define CLI_OPT_COMPLETION	0x7ff1

/* The shared options a tool takes besides its own table. */
enum cli_kind {
	CLI_WRITER,	/* -f -j -o -q -v -h --help --version */
	CLI_READER	/* -j -q -v -h --help --version */
};

struct cli_tool {
	/* The usage lines without "usage: NAME ": a line that starts
	 * with a tab continues the one before it (two tabs: indented
	 * further), any other starts another form.  NULL-terminated. */
	const char *const	*synopsis;
	const struct cli_opt	*opts;	/* ended by CLI_END */
	enum cli_kind		 kind;
};

/* Use t's table (kept, not copied) for what follows. */
void	cli_options(const struct cli_tool *t);
/* getopt_long() over the table: the option's code, or -1 after the
 * last one.  An unknown option or a missing argument prints one
 * "NAME: ..." line and the short usage, and exits CLI_EXIT_USAGE. */
int	cli_getopt(int argc, char *const argv[]);
/* With status 0 the full help on standard output, else the synopsis
 * and a pointer to --help on standard error; exit(status). */
void	cli_usage(int status) __attribute__((noreturn));
/* When bad: the message (fmt NULL: none, one was printed), the short
 * usage and exit(CLI_EXIT_USAGE). */
void	cli_usage_if(int bad, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* An option's number, checked as cli_parse_u64() and cli_parse_double()
 * do; out of range, cli_usage(CLI_EXIT_USAGE). */
uint64_t cli_opt_u64(const char *opt, const char *s, uint64_t min,
	    uint64_t max);
double	cli_opt_double(const char *opt, const char *s, double lo, double hi);
/* The bash completion of the tool (the hidden --bash-completion). */
void	cli_bash_completion(FILE *fp);

#endif
