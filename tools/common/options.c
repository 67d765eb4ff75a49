/*
 * options.c - a tool's command line from its option table and the
 * shared one: getopt_long()'s arguments, --help, the short usage, the
 * messages of a bad option and the bash completion.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Help text starts in this column at most; longer labels get a line
 * of their own. */
#define HELP_COL	32

/* The options every tool shares; a row of the tool's own table with
 * the same code replaces one of these (its help may say more). */
static const struct cli_opt common_opts[] = {
	CLI_GROUP("Common options"),
	{ 'o', "output", "OUTPUT", "write to OUTPUT (- for standard output)",
	    NULL },
	{ 'f', "force", NULL, "replace an existing output; write "
	    "to a terminal", NULL },
	{ 'j', "jobs", "N", "threads (0, the default: one per CPU)", NULL },
	{ 'q', "quiet", NULL, "print nothing but errors", NULL },
	{ 'v', "verbose", NULL, "print more about what is done", NULL },
	{ 'h', "help", NULL, "print this help and exit", NULL },
	{ CLI_OPT_VERSION, "version", NULL, "print the version and exit",
	    NULL },
	{ CLI_OPT_COMPLETION, "bash-completion", NULL, NULL, NULL },
	CLI_END
};

static const struct cli_tool *tool;
static const struct cli_opt **rows;	/* the tool's, then the shared */
static size_t nrows;
static struct option *longopts;
static char *shortopts;

static int
is_end(const struct cli_opt *o)
{
	return o->ch == 0 && o->name == NULL && o->help == NULL;
}

static int
is_heading(const struct cli_opt *o)
{
	return o->ch == 0 && o->name == NULL && o->help != NULL;
}

static int
is_short(int ch)
{
	return ch > 0 && ch < 256 && isalnum(ch);
}

/* Does the tool's table have a row with code ch? */
static int
tool_has(int ch)
{
	const struct cli_opt *o;

	for (o = tool->opts; !is_end(o); o++)
		if (!is_heading(o) && o->ch == ch)
			return 1;
	return 0;
}

static int
shared(const struct cli_opt *o)
{
	if (tool->kind == CLI_READER && (o->ch == 'o' || o->ch == 'f'))
		return 0;
	return !tool_has(o->ch);
}

void
cli_options(const struct cli_tool *t)
{
	const struct cli_opt *o;
	size_t n = 0, nl = 0, ns = 1;

	tool = t;
	for (o = t->opts; !is_end(o); o++)
		n++;
	for (o = common_opts; !is_end(o); o++)
		n++;
	rows = xcalloc(n, sizeof(*rows));
	longopts = xcalloc(n + 1, sizeof(*longopts));
	shortopts = xcalloc(2 * n + 2, 1);
	shortopts[0] = ':';	/* a missing argument returns ':' */
	nrows = 0;
	for (o = t->opts; !is_end(o); o++)
		rows[nrows++] = o;
	for (o = common_opts; !is_end(o); o++)
		if (is_heading(o) || shared(o))
			rows[nrows++] = o;
	for (n = 0; n < nrows; n++) {
		o = rows[n];
		if (is_heading(o))
			continue;
		if (o->name != NULL) {
			longopts[nl].name = o->name;
			longopts[nl].has_arg = o->arg != NULL ?
			    required_argument : no_argument;
			longopts[nl].val = o->ch;
			nl++;
		}
		if (is_short(o->ch) && strchr(shortopts, o->ch) == NULL) {
			shortopts[ns++] = (char)o->ch;
			if (o->arg != NULL)
				shortopts[ns++] = ':';
		}
	}
}

/* The length of "--name" in "--name=value". */
static int
optlen(const char *word)
{
	return (int)strcspn(word, "=");
}

/* An unknown or ambiguous long option (word is "--name[=value]"). */
static void
bad_long(const char *word)
{
	char list[512];
	size_t i, n = 0, len = (size_t)optlen(word) - 2, o = 0;

	list[0] = '\0';
	for (i = 0; i < nrows; i++)
		if (rows[i]->name != NULL && rows[i]->help != NULL &&
		    strncmp(rows[i]->name, word + 2, len) == 0) {
			n++;
			if (o < sizeof(list))
				o += (size_t)snprintf(list + o,
				    sizeof(list) - o, "%s--%s",
				    o > 0 ? ", " : "", rows[i]->name);
		}
	if (n > 1)
		cli_warn("option '%.*s' is ambiguous (%s)", optlen(word), word,
		    list);
	else
		cli_warn("unknown option '%.*s'", optlen(word), word);
}

int
cli_getopt(int argc, char *const argv[])
{
	const char *word;
	int ch;

	opterr = 0;
	ch = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (ch != '?' && ch != ':')
		return ch;
	word = optind > 0 && optind <= argc ? argv[optind - 1] : "";
	if (ch == ':') {
		if (strncmp(word, "--", 2) == 0)
			cli_warn("option '%.*s' requires an argument",
			    optlen(word), word);
		else
			cli_warn("option requires an argument -- %c", optopt);
	} else if (optopt == 0)
		bad_long(word);
	else if (is_short(optopt) && strchr(shortopts, optopt) == NULL)
		cli_warn("unknown option -- %c", optopt);
	else if (strncmp(word, "--", 2) == 0)
		cli_warn("option '%.*s' takes no argument", optlen(word),
		    word);
	else
		cli_warn("unknown option -- %c", isprint(optopt) ? optopt :
		    '?');
	cli_usage(CLI_EXIT_USAGE);
}

/* ------------------------------------------------------------------ */
/* --help and the short usage                                          */

static void
synopsis(FILE *fp)
{
	const char *const *l;
	int indent = (int)strlen("usage: ") + (int)strlen(cli_progname) + 1;

	for (l = tool->synopsis; *l != NULL; l++) {
		if ((*l)[0] == '\t' && (*l)[1] == '\t')
			fprintf(fp, "%*s%s\n", indent + 8, "", *l + 2);
		else if ((*l)[0] == '\t')
			fprintf(fp, "%*s%s\n", indent, "", *l + 1);
		else
			fprintf(fp, "%s %s %s\n", l == tool->synopsis ?
			    "usage:" : "      ", cli_progname, *l);
	}
}

/* "  -t, --type=nf4|fp4" into buf. */
static int
label(const struct cli_opt *o, char *buf, size_t len)
{
	if (is_short(o->ch) && o->name != NULL)
		return snprintf(buf, len, "  -%c, --%s%s%s", o->ch, o->name,
		    o->arg != NULL ? "=" : "", o->arg != NULL ? o->arg : "");
	if (is_short(o->ch))
		return snprintf(buf, len, "  -%c%s%s", o->ch,
		    o->arg != NULL ? " " : "", o->arg != NULL ? o->arg : "");
	return snprintf(buf, len, "      --%s%s%s", o->name,
	    o->arg != NULL ? "=" : "", o->arg != NULL ? o->arg : "");
}

static void
help(FILE *fp)
{
	char buf[256];
	size_t i;
	int col = 0, n;

	for (i = 0; i < nrows; i++)
		if (!is_heading(rows[i]) && rows[i]->help != NULL &&
		    (n = label(rows[i], buf, sizeof(buf)) + 2) > col &&
		    n <= HELP_COL)
			col = n;
	synopsis(fp);
	for (i = 0; i < nrows; i++) {
		if (is_heading(rows[i])) {
			fprintf(fp, "\n%s:\n", rows[i]->help);
			continue;
		}
		if (rows[i]->help == NULL)
			continue;
		n = label(rows[i], buf, sizeof(buf));
		if (n + 2 > col)
			fprintf(fp, "%s\n%*s%s\n", buf, col, "", rows[i]->help);
		else
			fprintf(fp, "%-*s%s\n", col, buf, rows[i]->help);
	}
}

void
cli_usage(int status)
{
	if (status == 0) {
		help(stdout);
	} else {
		synopsis(stderr);
		fprintf(stderr, "Try '%s --help' for the options.\n",
		    cli_progname);
	}
	exit(status);
}

void
cli_usage_if(int bad, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;

	if (!bad)
		return;
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		cli_warn("%s", msg);
	}
	cli_usage(CLI_EXIT_USAGE);
}

uint64_t
cli_opt_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	uint64_t v = 0;

	cli_usage_if(cli_parse_u64(opt, s, min, max, &v) != 0, NULL);
	return v;
}

double
cli_opt_double(const char *opt, const char *s, double lo, double hi)
{
	double v = 0;

	cli_usage_if(cli_parse_double(opt, s, lo, hi, &v) != 0, NULL);
	return v;
}

/* ------------------------------------------------------------------ */
/* Bash completion                                                     */

/* What an argument completes to: its words, file names, directory
 * names or nothing. */
static void
complete_arg(FILE *fp, const struct cli_opt *o)
{
	const char *a = o->arg, *p;

	if (o->values != NULL) {
		fprintf(fp, "\t\tCOMPREPLY=($(compgen -W '%s' -- \"$cur\"))\n",
		    o->values);
	} else if (strchr(a, '|') != NULL) {
		fputs("\t\tCOMPREPLY=($(compgen -W '", fp);
		for (p = a; *p != '\0'; p++)
			fputc(*p == '|' ? ' ' : *p, fp);
		fputs("' -- \"$cur\"))\n", fp);
	} else if (strcmp(a, "DIR") == 0 || cli_ends_with(a, "_DIR")) {
		fputs("\t\tcompopt -o filenames 2>/dev/null\n"
		    "\t\tCOMPREPLY=($(compgen -d -- \"$cur\"))\n", fp);
	} else if (strcmp(a, "FILE") == 0 || strcmp(a, "PATH") == 0 ||
	    strcmp(a, "OUTPUT") == 0 || cli_ends_with(a, "_FILE")) {
		fputs("\t\tcompopt -o filenames 2>/dev/null\n"
		    "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n", fp);
	}
	fputs("\t\treturn;;\n", fp);
}

void
cli_bash_completion(FILE *fp)
{
	const struct cli_opt *o;
	char fn[64], flags[64];
	size_t i, j;
	const char *sep;

	snprintf(fn, sizeof(fn), "_peftio_%s", cli_progname);
	for (i = 0; fn[i] != '\0'; i++)
		if (fn[i] == '-')
			fn[i] = '_';
	fprintf(fp, "# bash completion for %s, from its option table\n"
	    "# (%s --bash-completion)\n\n", cli_progname, cli_progname);
	fprintf(fp, "%s()\n{\n"
	    "\tlocal cur prev i\n"
	    "\tCOMPREPLY=()\n"
	    "\tcur=${COMP_WORDS[COMP_CWORD]}\n"
	    "\tprev=\n"
	    "\t[ \"$COMP_CWORD\" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}\n"
	    "\t# --name=value: readline breaks the word at the '='.\n"
	    "\tif [ \"$cur\" = = ] && [ \"${prev#--}\" != \"$prev\" ]; then\n"
	    "\t\tcur=\n"
	    "\telif [ \"$prev\" = = ] && [ \"$COMP_CWORD\" -gt 1 ]; then\n"
	    "\t\tprev=${COMP_WORDS[COMP_CWORD-2]}\n"
	    "\tfi\n"
	    "\t# After --, operands only.\n"
	    "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n"
	    "\t\tif [ \"${COMP_WORDS[i]}\" = -- ]; then\n"
	    "\t\t\tcompopt -o filenames 2>/dev/null\n"
	    "\t\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	    "\t\t\treturn\n"
	    "\t\tfi\n"
	    "\tdone\n", fn);
	/* -qt: the argument of the last short option of a cluster. */
	memset(flags, 0, sizeof(flags));
	for (i = 0, j = 0; i < nrows && j < sizeof(flags) - 1; i++)
		if (!is_heading(rows[i]) && is_short(rows[i]->ch) &&
		    rows[i]->arg == NULL && strchr(flags, rows[i]->ch) == NULL)
			flags[j++] = (char)rows[i]->ch;
	flags[j] = '\0';
	if (j > 0)
		fprintf(fp, "\tif [[ $prev == -[!-]?* && "
		    "${prev:1:-1} != *[!%s]* ]]; then\n"
		    "\t\tprev=-${prev: -1}\n"
		    "\tfi\n", flags);
	fputs("\tcase $prev in\n", fp);
	for (i = 0; i < nrows; i++) {
		o = rows[i];
		if (is_heading(o) || o->arg == NULL)
			continue;
		/* One pattern for every spelling of the option. */
		for (j = 0; j < i; j++)
			if (!is_heading(rows[j]) && rows[j]->ch == o->ch)
				break;
		if (j < i)
			continue;
		fputc('\t', fp);
		sep = "";
		for (j = i; j < nrows; j++) {
			if (is_heading(rows[j]) || rows[j]->ch != o->ch)
				continue;
			if (j == i && is_short(o->ch)) {
				fprintf(fp, "%s-%c", sep, o->ch);
				sep = "|";
			}
			if (rows[j]->name != NULL) {
				fprintf(fp, "%s--%s", sep, rows[j]->name);
				sep = "|";
			}
		}
		fputs(")\n", fp);
		complete_arg(fp, o);
	}
	fputs("\tesac\n"
	    "\tcase $cur in\n"
	    "\t-*)\n"
	    "\t\tCOMPREPLY=($(compgen -W '", fp);
	sep = "";
	for (i = 0; i < nrows; i++) {
		o = rows[i];
		if (is_heading(o) || o->help == NULL)
			continue;
		if (o->name != NULL) {
			fprintf(fp, "%s--%s", sep, o->name);
			sep = " ";
		}
		if (is_short(o->ch)) {
			fprintf(fp, "%s-%c", sep, o->ch);
			sep = " ";
		}
	}
	fprintf(fp, "' -- \"$cur\"))\n"
	    "\t\treturn;;\n"
	    "\tesac\n"
	    "\tcompopt -o filenames 2>/dev/null\n"
	    "\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	    "}\n"
	    "complete -F %s %s\n", fn, cli_progname);
}
