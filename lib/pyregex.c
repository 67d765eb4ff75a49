/*
 * pyregex.c - the Python regular expressions of adapter_config.json
 * (target_modules, rank_pattern, alpha_pattern, feedforward_modules)
 * translated to POSIX extended ones, with a bound on what regcomp() is
 * asked to build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_private.h"

/* ------------------------------------------------------------------ */
/* Regular expressions from adapter_config.json                        */

/*
 * glibc's regcomp() copies a repeated subexpression once per repetition
 * ("x+" becomes "xx*", "x{3}" "xxx"), so a pattern with nested
 * repetitions, which a config file may hold, can make it allocate
 * without bound.  rx_size() estimates the size of the compiled tree the
 * same way; patterns larger than RX_MAX nodes are refused, and so is a
 * repetition of a repetition ("a++", "a*?"), which POSIX leaves
 * undefined and Python's re either refuses or reads as a lazy or
 * possessive form that POSIX lacks.  So is an unbounded repetition of
 * something that can match the empty string ("(a*)*", "(a|)+"): its
 * loop of empty steps makes regcomp()'s closure computation take time
 * exponential in the number of such loops (twenty "(a*)*" in a row
 * take seconds), and the same language is always written without one.
 * Anything else is left to regcomp() to judge.
 */
#define RX_MAX		4000
#define RX_DEPTH	256

struct rx {
	const char	*p;
	int		 bad;	/* RX_NESTED, RX_EMPTY_LOOP */
};

#define RX_NESTED	1	/* a repetition repeated, or groups too deep */
#define RX_EMPTY_LOOP	2	/* "(a*)*": a loop that can match nothing */

static uint64_t
rx_add(uint64_t a, uint64_t b)
{
	return a + b > RX_MAX ? RX_MAX + 1 : a + b;
}

static uint64_t
rx_mul(uint64_t a, uint64_t b)
{
	return b != 0 && a > (RX_MAX + 1) / b ? RX_MAX + 1 : a * b;
}

static uint64_t rx_alt(struct rx *r, int depth, int *nullable);

/* A bracket expression, from its '['. */
static void
rx_bracket(struct rx *r)
{
	const char *p = r->p + 1;
	char c;

	if (*p == '^')
		p++;
	if (*p == ']')
		p++;
	while (*p != '\0' && *p != ']') {
		if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
			c = p[1];
			for (p += 2; *p != '\0' && !(p[0] == c && p[1] == ']');
			    p++)
				;
			if (*p != '\0')
				p += 2;
		} else
			p++;
	}
	r->p = *p == ']' ? p + 1 : p;
}

/*
 * The copies a repetition makes, past it; 0 if r->p is none.  *min is
 * its least count, *loop whether it has no upper bound.
 */
static uint64_t
rx_repeat(struct rx *r, uint64_t *min, int *loop)
{
	const char *p = r->p;
	uint64_t m = 0, n;

	*min = 0;
	*loop = *p == '*' || *p == '+';
	switch (*p) {
	case '*':
	case '?':
		r->p++;
		return 1;
	case '+':
		r->p++;
		*min = 1;
		return 2;
	case '{':
		for (p++; *p >= '0' && *p <= '9'; p++)
			m = rx_add(rx_mul(m, 10), (uint64_t)(*p - '0'));
		n = m;
		if (*p == ',') {
			n = m + 1;
			*loop = !(p[1] >= '0' && p[1] <= '9');
			if (p[1] >= '0' && p[1] <= '9')
				for (n = 0, p++; *p >= '0' && *p <= '9'; p++)
					n = rx_add(rx_mul(n, 10),
					    (uint64_t)(*p - '0'));
			else
				p++;
		}
		if (*p != '}' || p == r->p + 1) {
			*loop = 0;
			return 0;	/* not an interval: a literal '{' */
		}
		r->p = p + 1;
		*min = m;
		return n > 0 ? n : 1;
	}
	return 0;
}

/*
 * A sequence of atoms, each perhaps repeated: its size, and in
 * *nullable whether it can match the empty string.
 */
static uint64_t
rx_seq(struct rx *r, int depth, int *nullable)
{
	uint64_t total = 0, n, f, min;
	int repeats, loop, empty;

	*nullable = 1;
	while (*r->p != '\0' && *r->p != '|' && *r->p != ')') {
		empty = 0;
		switch (*r->p) {
		case '(':
			if (depth >= RX_DEPTH) {
				r->bad |= RX_NESTED;
				return RX_MAX + 1;
			}
			r->p++;
			n = rx_add(rx_alt(r, depth + 1, &empty), 1);
			if (*r->p == ')')
				r->p++;
			break;
		case '[':
			rx_bracket(r);
			n = 1;
			break;
		case '\\':
			r->p += r->p[1] != '\0' ? 2 : 1;
			n = 1;
			break;
		case '^':
		case '$':
			r->p++;
			n = 1;
			empty = 1;
			break;
		default:
			r->p++;
			n = 1;
		}
		for (repeats = 0; (f = rx_repeat(r, &min, &loop)) != 0;
		    repeats++) {
			if (repeats > 0)
				r->bad |= RX_NESTED;
			if (loop && empty)
				r->bad |= RX_EMPTY_LOOP;
			if (min == 0)
				empty = 1;
			n = rx_mul(n, f);
		}
		if (!empty)
			*nullable = 0;
		total = rx_add(total, n);
	}
	return total;
}

static uint64_t
rx_alt(struct rx *r, int depth, int *nullable)
{
	uint64_t total;
	int e;

	total = rx_seq(r, depth, nullable);
	while (*r->p == '|') {
		r->p++;
		total = rx_add(total, rx_seq(r, depth, &e));
		*nullable |= e;
	}
	return total;
}

/*
 * Python's re syntax, as adapter configs are written for it, into POSIX
 * ERE: \d \w \s (and their negations) become bracket expressions,
 * (?:...) and (?P<name>...) plain groups, a lazy repetition ("*?")
 * the greedy one (a whole-string match does not depend on which), and
 * {m,n} is spelled out.  What ERE cannot say the same way is refused:
 * backreferences (which also make matching exponential), lookarounds,
 * inline flags, possessive repetitions, \b and the other anchors, and
 * counts above RX_COUNT_MAX.  o has room for 16 bytes per byte of s.
 */
#define RX_COUNT_MAX	255

static int
rx_bracket_py(const char **sp, char **op, const char **why)
{
	const char *s = *sp + 1;
	char *o = *op, body[4096];
	size_t n = 0;
	int neg = 0, rb = 0, dash = 0, caret = 0;

#define BODY(str) do {							\
	size_t l_ = strlen(str);					\
	if (n + l_ >= sizeof(body)) {					\
		*why = "bracket expression too long";			\
		return PEFTIO_EUNSUPPORTED;				\
	}								\
	memcpy(body + n, str, l_);					\
	n += l_;							\
} while (0)
	if (*s == '^') {
		neg = 1;
		s++;
	}
	if (*s == ']') {
		rb = 1;
		s++;
	}
	for (; *s != '\0' && *s != ']'; s++) {
		char one[2] = { *s, '\0' };

		if (*s == '[' && (s[1] == ':' || s[1] == '.' || s[1] == '=')) {
			*why = "'[' followed by ':', '.' or '=' inside a class";
			return PEFTIO_EUNSUPPORTED;
		}
		if (*s != '\\') {
			BODY(one);
			continue;
		}
		s++;
		switch (*s) {
		case '\0':
			*why = "a class that is not closed";
			return PEFTIO_EINVAL;
		case 'd':
			BODY("0-9");
			break;
		case 'w':
			BODY("[:alnum:]_");
			break;
		case 's':
			BODY("[:space:]");
			break;
		case ']':
			rb = 1;
			break;
		case '-':
			dash = 1;
			break;
		case '^':
			caret = 1;
			break;
		case '\\':
			BODY("\\");
			break;
		case 'n':
			BODY("\n");
			break;
		case 't':
			BODY("\t");
			break;
		default:
			if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			    (*s >= '0' && *s <= '9')) {
				*why = "this escape inside a class";
				return PEFTIO_EUNSUPPORTED;
			}
			one[0] = *s;
			BODY(one);
		}
	}
#undef BODY
	if (*s != ']') {
		*why = "a class that is not closed";
		return PEFTIO_EINVAL;
	}
	if (n == 0 && !rb && !dash && !caret) {
		*why = "an empty class";
		return PEFTIO_EINVAL;
	}
	*o++ = '[';
	if (neg)
		*o++ = '^';
	if (rb)
		*o++ = ']';
	if (caret && n == 0 && !rb) {
		/* "[\^]" alone: a literal caret needs company in ERE. */
		*o++ = '\\';
		caret = 0;
		*o++ = '^';
	}
	memcpy(o, body, n);
	o += n;
	if (caret)
		*o++ = '^';
	if (dash)
		*o++ = '-';
	*o++ = ']';
	*sp = s + 1;
	*op = o;
	return 0;
}

/* A Python repetition "{m}", "{m,}", "{,n}", "{m,n}" at s: its length,
 * or 0 when s does not start one (then '{' is a literal). */
static size_t
rx_interval_py(const char *s, uint64_t *lo, uint64_t *hi, int *comma)
{
	const char *p = s + 1;
	uint64_t v;

	*lo = 0;
	*hi = UINT64_MAX;
	*comma = 0;
	for (v = 0; *p >= '0' && *p <= '9'; p++)
		v = v > 1000000 ? v : v * 10 + (uint64_t)(*p - '0');
	if (p != s + 1)
		*lo = *hi = v;
	if (*p == ',') {
		*comma = 1;
		*hi = UINT64_MAX;
		p++;
		if (*p >= '0' && *p <= '9') {
			for (v = 0; *p >= '0' && *p <= '9'; p++)
				v = v > 1000000 ? v : v * 10 +
				    (uint64_t)(*p - '0');
			*hi = v;
		}
	} else if (p == s + 1)
		return 0;
	if (*p != '}')
		return 0;
	return (size_t)(p - s) + 1;
}

int
peftio_rx_translate(const char *s, char *o, const char **why)
{
	uint64_t lo = 0, hi = 0;
	size_t len;
	int atom = 0, rep = 0, lazy = 0, comma = 0, rc;

	*why = "";
	while (*s != '\0') {
		switch (*s) {
		case '\\':
			s++;
			atom = 1;
			rep = lazy = 0;
			switch (*s) {
			case '\0':
				*why = "a trailing backslash";
				return PEFTIO_EINVAL;
			case 'd':
				o += sprintf(o, "[0-9]");
				break;
			case 'D':
				o += sprintf(o, "[^0-9]");
				break;
			case 'w':
				o += sprintf(o, "[[:alnum:]_]");
				break;
			case 'W':
				o += sprintf(o, "[^[:alnum:]_]");
				break;
			case 's':
				o += sprintf(o, "[[:space:]]");
				break;
			case 'S':
				o += sprintf(o, "[^[:space:]]");
				break;
			case 'n':
				*o++ = '\n';
				break;
			case 't':
				*o++ = '\t';
				break;
			default:
				if (*s >= '0' && *s <= '9') {
					*why = "a backreference or octal "
					    "escape";
					return PEFTIO_EUNSUPPORTED;
				}
				if (strchr("AbBZxuUN", *s) != NULL) {
					*why = "an anchor or escape that POSIX "
					    "lacks (\\b, \\A, \\Z, \\x, ...)";
					return PEFTIO_EUNSUPPORTED;
				}
				if ((*s >= 'a' && *s <= 'z') ||
				    (*s >= 'A' && *s <= 'Z')) {
					*why = "a bad escape";
					return PEFTIO_EINVAL;
				}
				if (strchr(".[]()*+?{}|^$\\", *s) != NULL)
					*o++ = '\\';
				*o++ = *s;
			}
			s++;
			break;
		case '[':
			if ((rc = rx_bracket_py(&s, &o, why)) != 0)
				return rc;
			atom = 1;
			rep = lazy = 0;
			break;
		case '(':
			if (s[1] == '?') {
				if (s[2] == ':')
					s += 3;
				else if (s[2] == 'P' && s[3] == '<' &&
				    (s = strchr(s, '>')) != NULL)
					s++;
				else {
					*why = "a (?...) group other than "
					    "(?:...) and (?P<name>...) "
					    "(lookaround, flags, "
					    "backreference)";
					return PEFTIO_EUNSUPPORTED;
				}
			} else
				s++;
			*o++ = '(';
			atom = rep = lazy = 0;
			break;
		case ')':
			*o++ = *s++;
			atom = 1;
			rep = lazy = 0;
			break;
		case '*':
		case '+':
		case '?':
		case '{':
			len = 1;
			if (*s == '{' &&
			    (len = rx_interval_py(s, &lo, &hi, &comma)) == 0) {
				o += sprintf(o, "[{]");
				s++;
				atom = 1;
				rep = lazy = 0;
				break;
			}
			if (rep && !lazy && *s == '?') {
				lazy = 1;	/* the same whole match */
				s++;
				break;
			}
			if (rep && !lazy && *s == '+') {
				*why = "a possessive repetition";
				return PEFTIO_EUNSUPPORTED;
			}
			if (rep) {
				*why = "a repetition of a repetition";
				return PEFTIO_EINVAL;
			}
			if (!atom) {
				*why = "nothing to repeat";
				return PEFTIO_EINVAL;
			}
			if (*s != '{')
				*o++ = *s;
			else {
				if ((hi != UINT64_MAX && hi > RX_COUNT_MAX) ||
				    lo > RX_COUNT_MAX) {
					*why = "a repetition count above 255";
					return PEFTIO_EUNSUPPORTED;
				}
				if (hi < lo) {
					*why = "a repetition whose minimum "
					    "exceeds its maximum";
					return PEFTIO_EINVAL;
				}
				if (hi == UINT64_MAX)
					o += sprintf(o, "{%u,}",
					    (unsigned)lo);
				else if (comma)
					o += sprintf(o, "{%u,%u}",
					    (unsigned)lo, (unsigned)hi);
				else
					o += sprintf(o, "{%u}", (unsigned)lo);
			}
			s += len;
			rep = 1;
			atom = lazy = 0;
			break;
		case '}':
			o += sprintf(o, "[}]");
			s++;
			atom = 1;
			rep = lazy = 0;
			break;
		case '^':
		case '$':
		case '|':
			*o++ = *s++;
			atom = rep = lazy = 0;
			break;
		default:
			*o++ = *s++;
			atom = 1;
			rep = lazy = 0;
		}
	}
	*o = '\0';
	return 0;
}

/*
 * Compile the Python pattern py as PEFT applies it: the whole of a
 * module path, or (suffix) a dotted suffix of it.  0, PEFTIO_EINVAL
 * (Python's re would refuse it too) or PEFTIO_EUNSUPPORTED; *why says
 * what is wrong.
 */
int
peftio_rx_compile(regex_t *re, const char *py, int suffix, const char **why)
{
	struct rx r;
	uint64_t size = 0;
	size_t n = strlen(py);
	char *ere, *full;
	int rc, empty;

	if (n > RX_LEN_MAX) {
		*why = "longer than 4096 bytes";
		return PEFTIO_EUNSUPPORTED;
	}
	if ((ere = malloc(16 * n + 1)) == NULL ||
	    (full = malloc(16 * n + 16)) == NULL) {
		free(ere);
		*why = "out of memory";
		return PEFTIO_ENOMEM;
	}
	if ((rc = peftio_rx_translate(py, ere, why)) == 0) {
		snprintf(full, 16 * n + 16, suffix ? "^(.*\\.)?(%s)$" :
		    "^(%s)$", ere);
		r.p = full;
		r.bad = 0;
		while (*r.p != '\0' && !r.bad && size <= RX_MAX) {
			size = rx_add(size, rx_alt(&r, 0, &empty));
			if (*r.p == ')')
				r.p++;
		}
		if (r.bad & RX_EMPTY_LOOP) {
			*why = "a repetition of something that can match "
			    "the empty string, such as (a*)*";
			rc = PEFTIO_EUNSUPPORTED;
		} else if (r.bad || size > RX_MAX) {
			*why = "its repetitions make it too large";
			rc = PEFTIO_EUNSUPPORTED;
		} else if (regcomp(re, full, REG_EXTENDED | REG_NOSUB) != 0) {
			*why = "not a valid regular expression";
			rc = PEFTIO_EINVAL;
		}
	}
	free(ere);
	free(full);
	return rc;
}

/* Does the compiled re match module path p: 1, 0, or PEFTIO_EUNSUPPORTED
 * for a path longer than RX_LEN_MAX (the work per match is bounded). */
int
peftio_rx_match(const regex_t *re, const char *p)
{
	if (strlen(p) > RX_LEN_MAX)
		return PEFTIO_EUNSUPPORTED;
	return regexec(re, p, 0, NULL, 0) == 0;
}

int
peftio_lora_pattern_match(const char *pattern, const char *p)
{
	const char *why;
	regex_t re;
	int rc;

	if ((rc = peftio_rx_compile(&re, pattern, 1, &why)) != 0)
		return rc;
	rc = peftio_rx_match(&re, p);
	regfree(&re);
	return rc;
}
