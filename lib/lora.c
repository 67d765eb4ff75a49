/*
 * lora.c - PEFT adapters: adapter_config.json and the adapter's tensors,
 * the mapping of PEFT keys to base tensors, per-module scaling, and the
 * merge of one or several adapters into base weights as PEFT computes
 * it (Linear, Conv1D with fan_in_fan_out, Embedding, DoRA, IA3,
 * modules_to_save, lora_B.bias, and add_weighted_adapter's
 * combination types).
 */
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

#define PEFT_PREFIX	"base_model.model."
#define CONFIG_NAME	"adapter_config.json"
#define MODEL_NAME	"adapter_model.safetensors"
#define CONFIG_MAX	(16u << 20)	/* refuse larger adapter configs */
#define MAX_RANK	4294967296.0	/* r above 2^32 is refused */

enum mkind { M_LORA, M_IA3 };

struct lmod {
	char		*name;		/* module path, no prefix */
	char		*target;	/* name + ".weight" */
	char		*btarget;	/* name + ".bias" */
	long		 a, b, bias, mag, ia3;	/* adapter tensor indices */
	int		 embedding;
	int		 ff;		/* IA3: feed-forward (input columns) */
	int		 fifo;		/* a Conv1D: the weight is [in, out] */
	uint64_t	 r;
	double		 scale;
};

struct repl {
	char		*target;
	long		 idx;
};

/* A compiled rank_pattern / alpha_pattern entry. */
struct cpat {
	const char	*key;		/* in the config, while it is loaded */
	regex_t		 re;
	double		 v;
};

struct pats {
	struct cpat	*p;
	size_t		 n;
};

struct peftio_adapter {
	char		*path;
	struct peftio_ckpt *ck;
	enum peftio_adapter_type type;
	int		 fifo, dora, rslora;
	int		 fifo_ignored;	/* fan_in_fan_out on Linear layers */
	struct pats	 rank, alpha;
	int		 has_ff;	/* feedforward_modules is a regex */
	regex_t		 ff;
	uint64_t	 r;
	struct lmod	*mods;
	size_t		 nmods;
	struct repl	*repls;
	size_t		 nrepls;
	struct peftio_tuner *tuner;	/* other PEFT tuners (tuners.c) */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static char *
xstrcat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 1);

	if (p != NULL) {
		memcpy(p, a, la);
		memcpy(p + la, b, lb + 1);
	}
	return p;
}

static int
ends_with(const char *s, size_t n, const char *suf)
{
	size_t m = strlen(suf);

	return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static int
is_16bit(enum peftio_dtype dt)
{
	return dt == PEFTIO_F16 || dt == PEFTIO_BF16;
}

/* Round n values through dt and back (what storing in dt does). */
static void
round_through(enum peftio_dtype dt, float *w, uint64_t n)
{
	uint16_t tmp[256];
	uint64_t i, c;

	if (!is_16bit(dt))
		return;
	for (i = 0; i < n; i += c) {
		c = PEFTIO_MIN(n - i, 256);
		peftio_from_f32(dt, w + i, tmp, c);
		peftio_to_f32(dt, tmp, w + i, c);
	}
}

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
 * possessive form that POSIX lacks.  Anything else is left to
 * regcomp() to judge.
 */
#define RX_MAX		4000
#define RX_DEPTH	256
#define RX_LEN_MAX	4096

struct rx {
	const char	*p;
	int		 bad;
};

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

static uint64_t rx_alt(struct rx *r, int depth);

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

/* The copies a repetition makes, past it; 0 if r->p is none. */
static uint64_t
rx_repeat(struct rx *r)
{
	const char *p = r->p;
	uint64_t m = 0, n;

	switch (*p) {
	case '*':
	case '?':
		r->p++;
		return 1;
	case '+':
		r->p++;
		return 2;
	case '{':
		for (p++; *p >= '0' && *p <= '9'; p++)
			m = rx_add(rx_mul(m, 10), (uint64_t)(*p - '0'));
		n = m;
		if (*p == ',') {
			n = m + 1;
			if (p[1] >= '0' && p[1] <= '9')
				for (n = 0, p++; *p >= '0' && *p <= '9'; p++)
					n = rx_add(rx_mul(n, 10),
					    (uint64_t)(*p - '0'));
			else
				p++;
		}
		if (*p != '}' || p == r->p + 1)
			return 0;	/* not an interval: a literal '{' */
		r->p = p + 1;
		return n > 0 ? n : 1;
	}
	return 0;
}

/* A sequence of atoms, each perhaps repeated. */
static uint64_t
rx_seq(struct rx *r, int depth)
{
	uint64_t total = 0, n, f;
	int repeats;

	while (*r->p != '\0' && *r->p != '|' && *r->p != ')') {
		switch (*r->p) {
		case '(':
			if (depth >= RX_DEPTH) {
				r->bad = 1;
				return RX_MAX + 1;
			}
			r->p++;
			n = rx_add(rx_alt(r, depth + 1), 1);
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
		default:
			r->p++;
			n = 1;
		}
		for (repeats = 0; (f = rx_repeat(r)) != 0; repeats++) {
			if (repeats > 0)
				r->bad = 1;
			n = rx_mul(n, f);
		}
		total = rx_add(total, n);
	}
	return total;
}

static uint64_t
rx_alt(struct rx *r, int depth)
{
	uint64_t total = rx_seq(r, depth);

	while (*r->p == '|') {
		r->p++;
		total = rx_add(total, rx_seq(r, depth));
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
static int
rx_compile(regex_t *re, const char *py, int suffix, const char **why)
{
	struct rx r;
	uint64_t size = 0;
	size_t n = strlen(py);
	char *ere, *full;
	int rc;

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
			size = rx_add(size, rx_alt(&r, 0));
			if (*r.p == ')')
				r.p++;
		}
		if (r.bad || size > RX_MAX) {
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
static int
rx_match(const regex_t *re, const char *p)
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

	if ((rc = rx_compile(&re, pattern, 1, &why)) != 0)
		return rc;
	rc = rx_match(&re, p);
	regfree(&re);
	return rc;
}

/* ------------------------------------------------------------------ */
/* adapter_config.json                                                 */

/* Why an adapter type cannot be merged; NULL when it can. */
static const char *
unmergeable(const char *t)
{
	static const struct { const char *type, *why; } tab[] = {
		{ "PROMPT_TUNING", "prompt tuning learns virtual input "
		    "tokens, not weight changes" },
		{ "MULTITASK_PROMPT_TUNING", "prompt tuning learns virtual "
		    "input tokens, not weight changes" },
		{ "P_TUNING", "p-tuning learns virtual input tokens (through "
		    "a prompt encoder), not weight changes" },
		{ "PREFIX_TUNING", "prefix tuning learns key/value prefixes "
		    "for every attention layer, not weight changes" },
		{ "ADAPTION_PROMPT", "adaption prompts add gated prompt "
		    "tokens to attention, not weight changes" },
		{ "CPT", "context-aware prompt tuning learns input tokens, "
		    "not weight changes" },
		{ "BOTTLENECK", "bottleneck adapters insert new layers with "
		    "a nonlinearity, which no weight of the base can hold" },
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(t, tab[i].type) == 0)
			return tab[i].why;
	return NULL;
}

static int
json_truthy(json_t *v)
{
	if (v == NULL || json_is_null(v) || json_is_false(v))
		return 0;
	if (json_is_object(v))
		return json_object_size(v) != 0;
	if (json_is_array(v))
		return json_array_size(v) != 0;
	if (json_is_string(v))
		return json_string_length(v) != 0;
	return 1;
}

static int
check_variants(const char *cfgpath, json_t *cfg, struct peftio_error *err)
{
	static const char *const refused[] = {
		"layer_replication", "target_parameters",
		"alora_invocation_tokens", "use_bdlora", "use_qalora",
		"velora_config", "kasa_config", "monteclora_config",
		"arrow_config", "trainable_token_indices"
	};
	json_t *v;
	const char *s;
	size_t i;

	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (json_truthy(json_object_get(cfg, refused[i])))
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: '%s' is set: this LoRA variant is not "
			    "supported by the merge", cfgpath, refused[i]);
	v = json_object_get(cfg, "init_lora_weights");
	if (json_is_string(v) && ((s = json_string_value(v)),
	    strncmp(s, "pissa", 5) == 0 || strcmp(s, "olora") == 0 ||
	    strcmp(s, "corda") == 0))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: init_lora_weights '%s' changes the base weights; "
		    "convert the adapter to a plain LoRA first "
		    "(path_initial_model_for_weight_conversion)", cfgpath, s);
	return 0;
}

static void
pats_free(struct pats *ps)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		regfree(&ps->p[i].re);
	free(ps->p);
	ps->p = NULL;
	ps->n = 0;
}

/* Compile the patterns of the config's mapping key (rank_pattern,
 * alpha_pattern) once, in their order. */
static int
pats_compile(struct pats *ps, json_t *cfg, const char *key,
    const char *cfgpath, struct peftio_error *err)
{
	json_t *map = json_object_get(cfg, key), *v;
	const char *k, *why;
	int rc;

	if (map == NULL || json_is_null(map))
		return 0;
	if (!json_is_object(map))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: %s is not a mapping of patterns to numbers", cfgpath,
		    key);
	if ((ps->p = calloc(json_object_size(map) + 1, sizeof(*ps->p))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: out of memory", cfgpath);
	json_object_foreach(map, k, v) {
		if (!json_is_number(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: %s '%s': value is not a number", cfgpath, key,
			    k);
		rc = rx_compile(&ps->p[ps->n].re, k, 1, &why);
		if (rc == PEFTIO_ENOMEM)
			return peftio_error_set(err, rc, "%s: out of memory",
			    cfgpath);
		if (rc != 0)
			return peftio_error_set(err, rc == PEFTIO_EINVAL ?
			    PEFTIO_EFORMAT : rc, "%s: %s '%s': %s%s", cfgpath,
			    key, k, rc == PEFTIO_EUNSUPPORTED ?
			    "not supported: " : "", why);
		ps->p[ps->n].key = k;
		ps->p[ps->n].v = json_number_value(v);
		ps->n++;
	}
	return 0;
}

/* The value of the first pattern matching module p, or dflt. */
static int
pattern_value(const char *cfgpath, const struct pats *ps, const char *p,
    double dflt, double *out, struct peftio_error *err)
{
	size_t i;
	int rc;

	*out = dflt;
	for (i = 0; i < ps->n; i++) {
		if ((rc = rx_match(&ps->p[i].re, p)) < 0)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: module name longer than %d bytes: patterns "
			    "are not matched against it", cfgpath, RX_LEN_MAX);
		if (rc == 1) {
			*out = ps->p[i].v;
			return 0;
		}
	}
	return 0;
}

/* feedforward_modules: a list of names (exact or "."-suffix match) or
 * a regex (compiled once, a full match). */
static int
ff_compile(struct peftio_adapter *a, json_t *cfg, const char *cfgpath,
    struct peftio_error *err)
{
	json_t *ffm = json_object_get(cfg, "feedforward_modules"), *v;
	const char *why;
	size_t i;
	int rc;

	if (ffm == NULL || json_is_null(ffm))
		return 0;
	if (json_is_string(ffm)) {
		rc = rx_compile(&a->ff, json_string_value(ffm), 0, &why);
		if (rc == PEFTIO_ENOMEM)
			return peftio_error_set(err, rc, "%s: out of memory",
			    cfgpath);
		if (rc != 0)
			return peftio_error_set(err, rc == PEFTIO_EINVAL ?
			    PEFTIO_EFORMAT : rc, "%s: feedforward_modules "
			    "'%s': %s%s", cfgpath, json_string_value(ffm),
			    rc == PEFTIO_EUNSUPPORTED ? "not supported: " : "",
			    why);
		a->has_ff = 1;
		return 0;
	}
	if (!json_is_array(ffm))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: feedforward_modules is neither a list of names nor a "
		    "pattern", cfgpath);
	json_array_foreach(ffm, i, v)
		if (!json_is_string(v))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: feedforward_modules: entry %zu is not a "
			    "string", cfgpath, i);
	return 0;
}

static int
ff_match(const struct peftio_adapter *a, json_t *ffm, const char *p)
{
	size_t i, n = strlen(p), m;
	const char *t;
	json_t *v;

	if (a->has_ff)
		return rx_match(&a->ff, p) == 1;
	json_array_foreach(ffm, i, v) {
		if (!json_is_string(v))
			continue;
		t = json_string_value(v);
		m = strlen(t);
		if (strcmp(p, t) == 0 || (n > m && p[n - m - 1] == '.' &&
		    strcmp(p + n - m, t) == 0))
			return 1;
	}
	return 0;
}

/*
 * Does module p hold a GPT-2 style Conv1D (weight [in, out])?  PEFT
 * decides fan_in_fan_out by the layer's class: true for Conv1D, false
 * (with a warning) for Linear, whatever the config says.  Conv1D layers
 * are those of GPT-2 and the models built like it, by their names.
 */
static int
conv1d_module(const char *p)
{
	static const char *const leaf[] = {
		".attn.c_attn", ".attn.q_attn", ".attn.c_proj", ".mlp.c_fc",
		".mlp.c_proj"
	};
	size_t n = strlen(p), i, k;

	for (i = 0; i < sizeof(leaf) / sizeof(leaf[0]); i++) {
		k = strlen(leaf[i]);
		if (n >= k && strcmp(p + n - k, leaf[i]) == 0)
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Adapter tensors                                                     */

static struct lmod *
get_mod(struct peftio_adapter *a, const char *name, size_t len)
{
	struct lmod *m;
	size_t i;

	for (i = 0; i < a->nmods; i++)
		if (strlen(a->mods[i].name) == len &&
		    memcmp(a->mods[i].name, name, len) == 0)
			return &a->mods[i];
	m = realloc(a->mods, (a->nmods + 1) * sizeof(*m));
	if (m == NULL)
		return NULL;
	a->mods = m;
	m = &a->mods[a->nmods];
	memset(m, 0, sizeof(*m));
	m->a = m->b = m->bias = m->mag = m->ia3 = -1;
	if ((m->name = strndup(name, len)) == NULL)
		return NULL;
	a->nmods++;
	if ((m->target = xstrcat(m->name, ".weight")) == NULL ||
	    (m->btarget = xstrcat(m->name, ".bias")) == NULL)
		return NULL;
	return m;
}

static int
add_repl(struct peftio_adapter *a, const char *target, size_t len, long idx)
{
	struct repl *r = realloc(a->repls, (a->nrepls + 1) * sizeof(*r));

	if (r == NULL)
		return PEFTIO_ENOMEM;
	a->repls = r;
	r[a->nrepls].idx = idx;
	if ((r[a->nrepls].target = strndup(target, len)) == NULL)
		return PEFTIO_ENOMEM;
	a->nrepls++;
	return 0;
}

static int
tuner_repl(void *arg, const char *target, size_t len, long idx)
{
	return add_repl(arg, target, len, idx);
}

static int
classify(struct peftio_adapter *a, long idx, const char *full,
    struct peftio_error *err)
{
	static const struct { const char *suf; int what; } tab[] = {
		{ ".lora_A.weight", 0 }, { ".lora_B.weight", 1 },
		{ ".lora_B.bias", 2 }, { ".lora_embedding_A", 3 },
		{ ".lora_embedding_B", 4 }, { ".lora_magnitude_vector", 5 },
		{ ".lora_magnitude_vector.weight", 5 }, { ".ia3_l", 6 },
		{ ".base_layer.weight", 7 }, { ".base_layer.bias", 8 },
	};
	const char *name = full;
	struct lmod *m;
	size_t n, i, sl;
	char *t;
	int rc;

	if (strncmp(name, PEFT_PREFIX, strlen(PEFT_PREFIX)) == 0)
		name += strlen(PEFT_PREFIX);
	n = strlen(name);
	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (!ends_with(name, n, tab[i].suf))
			continue;
		sl = strlen(tab[i].suf);
		if (tab[i].what == 7 || tab[i].what == 8) {
			t = malloc(n);
			if (t == NULL)
				return PEFTIO_ENOMEM;
			snprintf(t, n, "%.*s%s", (int)(n - sl), name,
			    tab[i].what == 7 ? ".weight" : ".bias");
			rc = add_repl(a, t, strlen(t), idx);
			free(t);
			return rc;
		}
		if ((m = get_mod(a, name, n - sl)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		switch (tab[i].what) {
		case 0: case 3:
			m->a = idx;
			m->embedding = tab[i].what == 3;
			break;
		case 1: case 4:
			m->b = idx;
			m->embedding = tab[i].what == 4;
			break;
		case 2:
			m->bias = idx;
			break;
		case 5:
			m->mag = idx;
			break;
		case 6:
			m->ia3 = idx;
			break;
		}
		return 0;
	}
	if (strstr(name, "trainable_tokens") != NULL)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': trainable tokens are not supported",
		    a->path, full);
	if (strstr(name, ".lora_") != NULL || strstr(name, ".ia3_") != NULL)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': unknown adapter tensor", a->path, full);
	if (ends_with(name, n, ".weight") || ends_with(name, n, ".bias"))
		return add_repl(a, name, n, idx);	/* modules_to_save */
	return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
	    "%s: tensor '%s': unknown adapter tensor", a->path, full);
}

static const struct peftio_tensor_info *
tinfo(const struct peftio_adapter *a, long idx)
{
	return peftio_ckpt_tensor(a->ck, (size_t)idx);
}

static int
check_module(struct peftio_adapter *a, struct lmod *m, json_t *cfg,
    const char *cfgpath, double r0, double alpha0, struct peftio_error *err)
{
	const struct peftio_tensor_info *ta, *tb, *t;
	double r, alpha;
	int rc;

	m->fifo = conv1d_module(m->name);
	if (a->fifo && !m->fifo && !m->embedding)
		a->fifo_ignored = 1;
	if (a->type == PEFTIO_ADAPTER_IA3) {
		if (m->ia3 < 0 || m->a >= 0 || m->b >= 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: module '%s': IA3 adapter with LoRA tensors",
			    a->path, m->name);
		t = tinfo(a, m->ia3);
		if (t->ndim != 2 || (t->shape[0] != 1 && t->shape[1] != 1))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': ia3_l must be [out, 1] or "
			    "[1, in]", a->path, t->name);
		m->ff = t->shape[0] == 1 && t->shape[1] != 1;
		if (t->shape[0] == 1 && t->shape[1] == 1)
			m->ff = ff_match(a, json_object_get(cfg,
			    "feedforward_modules"), m->name);
		return peftio_dtype_is_float(t->dtype) ? 0 :
		    peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': not a float tensor", a->path, t->name);
	}
	if (m->ia3 >= 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': ia3_l in a LoRA adapter", a->path,
		    m->name);
	if (m->a < 0 || m->b < 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': %s without %s", a->path, m->name,
		    m->a < 0 ? "lora_B" : "lora_A",
		    m->a < 0 ? "lora_A" : "lora_B");
	ta = tinfo(a, m->a);
	tb = tinfo(a, m->b);
	if (ta->ndim != 2 || tb->ndim != 2)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s': %d-D LoRA factors (convolutions) are "
		    "not supported", a->path, ta->ndim != 2 ? ta->name :
		    tb->name, ta->ndim != 2 ? ta->ndim : tb->ndim);
	if (!peftio_dtype_is_float(ta->dtype) ||
	    !peftio_dtype_is_float(tb->dtype))
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': LoRA factors are not float tensors",
		    a->path, m->name);
	if (ta->shape[0] != tb->shape[1])
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': lora_A [%llu, %llu] and lora_B "
		    "[%llu, %llu] have different ranks", a->path, m->name,
		    (unsigned long long)ta->shape[0],
		    (unsigned long long)ta->shape[1],
		    (unsigned long long)tb->shape[0],
		    (unsigned long long)tb->shape[1]);
	m->r = ta->shape[0];
	if ((rc = pattern_value(cfgpath, &a->rank, m->name, r0, &r,
	    err)) != 0 || (rc = pattern_value(cfgpath, &a->alpha, m->name,
	    alpha0, &alpha, err)) != 0)
		return rc;
	if (r != (double)m->r)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': lora_A has rank %llu but the config "
		    "gives r = %g", a->path, m->name,
		    (unsigned long long)m->r, r);
	if (m->r == 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: module '%s': rank 0", a->path, m->name);
	m->scale = a->rslora ? alpha / sqrt(r) : alpha / r;
	if (m->mag >= 0) {
		t = tinfo(a, m->mag);
		if (m->embedding)
			return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: module '%s': DoRA on embeddings is not "
			    "supported", a->path, m->name);
		if (t->ndim != 1 || t->shape[0] != tb->shape[0] ||
		    !peftio_dtype_is_float(t->dtype))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': magnitude vector does not fit "
			    "lora_B", a->path, t->name);
		a->dora = 1;
	}
	if (m->bias >= 0) {
		t = tinfo(a, m->bias);
		if (t->ndim != 1 || t->shape[0] != tb->shape[0] ||
		    !peftio_dtype_is_float(t->dtype))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': bias does not fit lora_B",
			    a->path, t->name);
	}
	return 0;
}

/*
 * Read the adapter: adapter_config.json from cfgtext, then the tensors:
 * with a modelname, the modellen bytes at model; without, from a->path.
 */
static int
adapter_load(struct peftio_adapter *a, const char *cfgtext, size_t cfglen,
    const char *cfgpath, const void *model, size_t modellen,
    const char *modelname, struct peftio_error *err)
{
	json_t *cfg, *v;
	json_error_t je;
	const char *type;
	double r0 = 8, alpha0 = 8;
	size_t i;
	int rc = 0;

	cfg = json_loadb(cfgtext, cfglen, 0, &je);
	if (cfg == NULL || !json_is_object(cfg)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT, "%s: %s", cfgpath,
		    cfg == NULL ? je.text : "not a JSON object");
		goto out;
	}
	v = json_object_get(cfg, "peft_type");
	if (!json_is_string(v)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: no \"peft_type\"", cfgpath);
		goto out;
	}
	type = json_string_value(v);
	if (unmergeable(type) != NULL) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: a %s adapter cannot be merged into weights: %s",
		    cfgpath, type, unmergeable(type));
		goto out;
	}
	if (peftio_tuner_handles(type)) {
		a->type = PEFTIO_ADAPTER_TUNER;
		if (modelname != NULL)
			rc = peftio_ckpt_open_mem(&a->ck, model, modellen,
			    modelname, err);
		else
			rc = peftio_ckpt_open(&a->ck, a->path, err);
		if (rc == 0)
			rc = peftio_tuner_load(&a->tuner, type, cfg, cfgpath,
			    a->path, a->ck, tuner_repl, a, err);
		if (rc == PEFTIO_ENOMEM)
			rc = peftio_error_set(err, rc, "out of memory");
		for (i = 0; i < a->nrepls && rc == 0; i++)
			if (!peftio_dtype_is_float(tinfo(a,
			    a->repls[i].idx)->dtype))
				rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
				    "%s: tensor '%s': not a float tensor",
				    a->path, tinfo(a, a->repls[i].idx)->name);
		if (rc == 0 && peftio_tuner_nmodules(a->tuner) == 0 &&
		    a->nrepls == 0)
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: the adapter holds no tensors", a->path);
		goto out;
	}
	if (strcmp(type, "LORA") == 0)
		a->type = PEFTIO_ADAPTER_LORA;
	else if (strcmp(type, "IA3") == 0)
		a->type = PEFTIO_ADAPTER_IA3;
	else {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: adapter type %s is not supported (LORA and IA3 are)",
		    cfgpath, type);
		goto out;
	}
	if (a->type == PEFTIO_ADAPTER_LORA &&
	    (rc = check_variants(cfgpath, cfg, err)) != 0)
		goto out;
	a->fifo = json_is_true(json_object_get(cfg, "fan_in_fan_out"));
	a->rslora = json_is_true(json_object_get(cfg, "use_rslora"));
	if ((v = json_object_get(cfg, "r")) != NULL && !json_is_null(v)) {
		if (!json_is_number(v)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: r is not a number", cfgpath);
			goto out;
		}
		r0 = json_number_value(v);
	}
	if ((v = json_object_get(cfg, "lora_alpha")) != NULL &&
	    !json_is_null(v)) {
		if (!json_is_number(v)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: lora_alpha is not a number", cfgpath);
			goto out;
		}
		alpha0 = json_number_value(v);
	}
	/* Checked before the conversion to an integer type. */
	if (!(r0 >= 1 && r0 <= MAX_RANK) || r0 != floor(r0)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: r = %g is not an integer from 1 to %.0f", cfgpath, r0,
		    MAX_RANK);
		goto out;
	}
	a->r = (uint64_t)r0;
	if (a->type == PEFTIO_ADAPTER_LORA &&
	    ((rc = pats_compile(&a->rank, cfg, "rank_pattern", cfgpath,
	    err)) != 0 || (rc = pats_compile(&a->alpha, cfg, "alpha_pattern",
	    cfgpath, err)) != 0))
		goto out;
	if (a->type == PEFTIO_ADAPTER_IA3 &&
	    (rc = ff_compile(a, cfg, cfgpath, err)) != 0)
		goto out;

	if (modelname != NULL)
		rc = peftio_ckpt_open_mem(&a->ck, model, modellen, modelname,
		    err);
	else
		rc = peftio_ckpt_open(&a->ck, a->path, err);
	if (rc != 0)
		goto out;
	for (i = 0; i < peftio_ckpt_count(a->ck) && rc == 0; i++)
		rc = classify(a, (long)i, peftio_ckpt_tensor(a->ck, i)->name,
		    err);
	for (i = 0; i < a->nmods && rc == 0; i++)
		rc = check_module(a, &a->mods[i], cfg, cfgpath, r0, alpha0,
		    err);
	for (i = 0; i < a->nrepls && rc == 0; i++)
		if (!peftio_dtype_is_float(tinfo(a, a->repls[i].idx)->dtype))
			rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: tensor '%s': not a float tensor", a->path,
			    tinfo(a, a->repls[i].idx)->name);
	/* PEFT saves a magnitude vector with every DoRA module. */
	if (rc == 0 && a->type == PEFTIO_ADAPTER_LORA &&
	    json_is_true(json_object_get(cfg, "use_dora")))
		for (i = 0; i < a->nmods && rc == 0; i++)
			if (a->mods[i].mag < 0)
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: use_dora is set, but module '%s' has "
				    "no lora_magnitude_vector", a->path,
				    a->mods[i].name);
	if (rc == 0 && a->nmods == 0 && a->nrepls == 0)
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: the adapter holds no tensors", a->path);
out:
	json_decref(cfg);
	return rc;
}

static struct peftio_adapter *
adapter_new(const char *path)
{
	struct peftio_adapter *a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	if ((a->path = strdup(path)) == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

int
peftio_adapter_open(struct peftio_adapter **out, const char *path,
    struct peftio_error *err)
{
	struct peftio_adapter *a;
	char *cfgpath = NULL, *dir = NULL, *s, *text = NULL;
	size_t n, len;
	int rc;

	*out = NULL;
	if ((a = adapter_new(path)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	n = strlen(path);
	if (ends_with(path, n, ".safetensors") || ends_with(path, n, ".bin")) {
		dir = strdup(path);
		if (dir != NULL) {
			s = strrchr(dir, '/');
			if (s != NULL)
				*s = '\0';
			else
				strcpy(dir, ".");
		}
	} else
		dir = strdup(path);
	if (dir == NULL || (cfgpath = xstrcat(dir, "/" CONFIG_NAME))
	    == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = peftio_read_file(cfgpath, CONFIG_MAX, &text, &len,
	    err)) != 0) {
		if (err != NULL && err->sys_errno == ENOENT)
			rc = err->code = PEFTIO_ENOTFOUND;
		goto out;
	}
	rc = adapter_load(a, text, len, cfgpath, NULL, 0, NULL, err);
out:
	free(text);
	free(cfgpath);
	free(dir);
	if (rc != 0) {
		peftio_adapter_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

int
peftio_adapter_open_mem(struct peftio_adapter **out, const char *cfg,
    size_t cfglen, const void *model, size_t modellen, const char *label,
    struct peftio_error *err)
{
	struct peftio_adapter *a;
	char *cfgpath = NULL, *modelname = NULL;
	int rc;

	*out = NULL;
	if (label == NULL)
		label = "<memory>";
	if ((a = adapter_new(label)) == NULL ||
	    (cfgpath = xstrcat(label, "/" CONFIG_NAME)) == NULL ||
	    (modelname = xstrcat(label, "/" MODEL_NAME)) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	rc = adapter_load(a, cfg, cfglen, cfgpath, model, modellen,
	    modelname, err);
out:
	free(cfgpath);
	free(modelname);
	if (rc != 0) {
		peftio_adapter_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void
peftio_adapter_free(struct peftio_adapter *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->nmods; i++) {
		free(a->mods[i].name);
		free(a->mods[i].target);
		free(a->mods[i].btarget);
	}
	for (i = 0; i < a->nrepls; i++)
		free(a->repls[i].target);
	free(a->mods);
	free(a->repls);
	pats_free(&a->rank);
	pats_free(&a->alpha);
	if (a->has_ff)
		regfree(&a->ff);
	peftio_tuner_free(a->tuner);
	peftio_ckpt_close(a->ck);
	free(a->path);
	free(a);
}

int
peftio_adapter_fifo_ignored(const struct peftio_adapter *a)
{
	return a->fifo_ignored;
}

const char *
peftio_adapter_path(const struct peftio_adapter *a)
{
	return a->path;
}

enum peftio_adapter_type
peftio_adapter_type(const struct peftio_adapter *a)
{
	return a->type;
}

size_t
peftio_adapter_nmodules(const struct peftio_adapter *a)
{
	return a->tuner != NULL ? peftio_tuner_nmodules(a->tuner) : a->nmods;
}

const char *
peftio_adapter_module(const struct peftio_adapter *a, size_t i,
    uint64_t *rank, double *scale)
{
	if (a->tuner != NULL) {
		if (scale != NULL)
			*scale = 1.0;
		return peftio_tuner_module(a->tuner, i, rank);
	}
	if (i >= a->nmods)
		return NULL;
	if (rank != NULL)
		*rank = a->mods[i].r;
	if (scale != NULL)
		*scale = a->mods[i].scale;
	return a->mods[i].name;
}

int
peftio_adapter_dora(const struct peftio_adapter *a)
{
	return a->dora;
}

/* ------------------------------------------------------------------ */
/* Combination types                                                   */

static const char *const combine_names[] = {
	"none", "linear", "cat", "svd", "ties", "dare_linear", "dare_ties",
	"magnitude_prune"
};

int
peftio_combine_parse(const char *s)
{
	size_t i;

	for (i = 1; i < sizeof(combine_names) / sizeof(combine_names[0]); i++)
		if (strcmp(s, combine_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
peftio_combine_name(enum peftio_combine c)
{
	if ((unsigned)c >= sizeof(combine_names) / sizeof(combine_names[0]))
		return NULL;
	return combine_names[c];
}

/* ------------------------------------------------------------------ */
/* The merge plan                                                      */

enum opkind { OP_REPL, OP_LORA, OP_BIAS, OP_IA3W, OP_IA3B, OP_TUNER };

struct op {
	enum opkind	 kind;
	size_t		 ad;
	size_t		 mod;		/* OP_LORA, OP_BIAS, OP_IA3* */
	long		 idx;		/* OP_REPL */
};

struct target {
	char		*name;
	int		 ndim;
	uint64_t	 rows, cols, numel;
	struct op	*ops;
	size_t		 nops;
};

/*
 * What the ops of the current target need, loaded once by
 * peftio_merge_begin() and used for every block of rows.
 */
struct pop {
	float		*a, *b;		/* OP_LORA factors */
	float		*mag;		/* DoRA magnitudes */
	float		*v;		/* OP_BIAS, OP_IA3* vector */
	struct peftio_tuner_prep *tp;	/* OP_TUNER */
};

struct prep {
	const struct target *t;
	struct pop	*pops;
	/* A combination (method other than none): its factors. */
	int		 comb;
	float		*ca, *cb;
	uint64_t	 cr;
	int		 ctrans;
};

struct peftio_merge {
	struct peftio_adapter *const *ads;
	size_t		 nads;
	struct peftio_merge_opts o;
	double		*w;
	struct target	*t;
	size_t		 nt;
	uint64_t	 newr;
	float		 newscale;
	struct peftio_scratch *slots;	/* per thread: ROW_CHUNK rows of
					 * a delta */
	struct prep	*prep;		/* the target being merged */
};

static void	prep_free(struct prep *);

#define ROW_CHUNK	PEFTIO_MERGE_ROWS /* rows per BLAS call: fixed, so
				 * neither -j nor the blocks change a result */

static int
add_op(struct peftio_merge *m, const char *target, struct op op)
{
	struct target *t = NULL;
	struct op *o;
	size_t i;

	for (i = 0; i < m->nt; i++)
		if (strcmp(m->t[i].name, target) == 0) {
			t = &m->t[i];
			break;
		}
	if (t == NULL) {
		t = realloc(m->t, (m->nt + 1) * sizeof(*t));
		if (t == NULL)
			return PEFTIO_ENOMEM;
		m->t = t;
		t = &m->t[m->nt];
		memset(t, 0, sizeof(*t));
		if ((t->name = strdup(target)) == NULL)
			return PEFTIO_ENOMEM;
		m->nt++;
	}
	o = realloc(t->ops, (t->nops + 1) * sizeof(*o));
	if (o == NULL)
		return PEFTIO_ENOMEM;
	t->ops = o;
	t->ops[t->nops++] = op;
	return 0;
}

static int
cmp_target(const void *a, const void *b)
{
	return strcmp(((const struct target *)a)->name,
	    ((const struct target *)b)->name);
}

static int
shape_err(struct peftio_adapter *a, long idx, const struct target *t,
    const char *what, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = tinfo(a, idx);
	char buf[128];
	size_t n = 0;
	int d;

	buf[0] = '\0';
	for (d = 0; d < ti->ndim && n < sizeof(buf) - 24; d++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%llu",
		    d ? ", " : "", (unsigned long long)ti->shape[d]);
	return peftio_error_set(err, PEFTIO_EMISMATCH,
	    "%s: tensor '%s': %s [%s] does not fit base tensor '%s' "
	    "[%llu, %llu]", a->path, ti->name, what, buf, t->name,
	    (unsigned long long)t->rows, (unsigned long long)t->cols);
}

static int
check_target(struct peftio_merge *m, struct target *t,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	uint64_t shape[PEFTIO_MAX_DIMS];
	const struct peftio_tensor_info *ti, *ta, *tb;
	struct peftio_adapter *a;
	struct lmod *md;
	struct op *op;
	size_t i, nrepl = 0;
	int ndim = 0, d, trans;

	a = m->ads[t->ops[0].ad];
	if (shape_of(arg, t->name, &ndim, shape) != 0) {
		op = &t->ops[0];
		return peftio_error_set(err, PEFTIO_ENOTFOUND,
		    "%s: module '%s': the base has no tensor '%s'", a->path,
		    op->kind == OP_REPL ? t->name : op->kind == OP_TUNER ?
		    peftio_tuner_module(a->tuner, op->mod, NULL) :
		    a->mods[op->mod].name, t->name);
	}
	t->ndim = ndim;
	t->numel = 1;
	for (d = 0; d < ndim; d++)
		t->numel *= shape[d];
	t->rows = ndim >= 1 ? shape[0] : 1;
	t->cols = ndim >= 1 ? t->numel / (shape[0] ? shape[0] : 1) : 1;
	for (i = 0; i < t->nops; i++) {
		op = &t->ops[i];
		a = m->ads[op->ad];
		md = op->kind == OP_REPL || op->kind == OP_TUNER ? NULL :
		    &a->mods[op->mod];
		switch (op->kind) {
		case OP_TUNER:
			if (peftio_tuner_check(a->tuner, op->mod, ndim, shape,
			    err) != 0)
				return err->code;
			break;
		case OP_REPL:
			ti = tinfo(a, op->idx);
			if (ti->ndim != ndim)
				return shape_err(a, op->idx, t, "replacement",
				    err);
			for (d = 0; d < ndim; d++)
				if (ti->shape[d] != shape[d])
					return shape_err(a, op->idx, t,
					    "replacement", err);
			nrepl++;
			break;
		case OP_LORA:
			ta = tinfo(a, md->a);
			tb = tinfo(a, md->b);
			trans = md->embedding || md->fifo;
			if (ndim != 2 || (trans ? ta->shape[1] != t->rows ||
			    tb->shape[0] != t->cols : tb->shape[0] != t->rows
			    || ta->shape[1] != t->cols))
				return shape_err(a, md->a, t, md->embedding ?
				    "lora_embedding_A" : "lora_A", err);
			if (md->mag >= 0 && md->fifo)
				return peftio_error_set(err,
				    PEFTIO_EUNSUPPORTED, "%s: module '%s': "
				    "DoRA with fan_in_fan_out is not "
				    "supported", a->path, md->name);
			break;
		case OP_BIAS:
			ti = tinfo(a, md->bias);
			if (ndim != 1 || ti->shape[0] != t->rows)
				return shape_err(a, md->bias, t, "lora_B.bias",
				    err);
			break;
		case OP_IA3W:
			ti = tinfo(a, md->ia3);
			if (ndim != 2)
				return shape_err(a, md->ia3, t, "ia3_l", err);
			/* After the fan_in_fan_out transpose: [n,1] scales
			 * rows, [1,n] columns. */
			if (md->fifo ? (md->ff ? ti->numel != t->rows :
			    ti->numel != t->cols) : (md->ff ?
			    ti->numel != t->cols : ti->numel != t->rows))
				return shape_err(a, md->ia3, t, "ia3_l", err);
			break;
		case OP_IA3B:
			ti = tinfo(a, md->ia3);
			if (ndim != 1 || ti->numel != t->rows)
				return shape_err(a, md->ia3, t, "ia3_l", err);
			break;
		}
	}
	if (nrepl > 1 && m->o.method != PEFTIO_COMBINE_NONE)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: tensor '%s' is replaced by more than one adapter "
		    "(modules_to_save); a combination cannot hold both",
		    m->ads[t->ops[0].ad]->path, t->name);
	return 0;
}

static int
plan_adapter(struct peftio_merge *m, size_t ai,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[ai];
	int combo = m->o.method != PEFTIO_COMBINE_NONE;
	uint64_t shape[PEFTIO_MAX_DIMS];
	struct op op;
	size_t i;
	int ndim, rc = 0;

	if (a->type == PEFTIO_ADAPTER_IA3 && combo)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: IA3 adapters cannot be combined with -m (PEFT's "
		    "add_weighted_adapter is LoRA only)", a->path);
	if (a->type == PEFTIO_ADAPTER_IA3 && m->w[ai] != 1.0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: IA3 vectors scale weights; they cannot be weighted",
		    a->path);
	if (a->dora && (combo || m->o.unmerge))
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: DoRA adapters %s", a->path, combo ?
		    "cannot be combined with -m (the magnitude vectors do "
		    "not combine)" : "cannot be unmerged: the row norms of "
		    "the original weight are lost in the merge");
	if (a->nrepls > 0 && m->o.unmerge)
		return peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s' replaces a base tensor "
		    "(modules_to_save): it cannot be unmerged", a->path,
		    tinfo(a, a->repls[0].idx)->name);
	if (a->tuner != NULL && m->w[ai] != 1.0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: a %s adapter cannot be weighted (weights are for "
		    "LoRA combinations)", a->path,
		    peftio_tuner_type(a->tuner));
	for (i = 0; i < a->nrepls && rc == 0; i++) {
		op.kind = OP_REPL;
		op.ad = ai;
		op.mod = 0;
		op.idx = a->repls[i].idx;
		rc = add_op(m, a->repls[i].target, op);
	}
	for (i = 0; a->tuner != NULL && rc == 0 &&
	    i < peftio_tuner_nmodules(a->tuner); i++) {
		op.kind = OP_TUNER;
		op.ad = ai;
		op.mod = i;
		op.idx = -1;
		rc = add_op(m, peftio_tuner_target(a->tuner, i), op);
	}
	for (i = 0; i < a->nmods && rc == 0; i++) {
		op.ad = ai;
		op.mod = i;
		op.idx = -1;
		if (a->type == PEFTIO_ADAPTER_IA3) {
			op.kind = OP_IA3W;
			rc = add_op(m, a->mods[i].target, op);
			ndim = 0;
			if (rc == 0 && !a->mods[i].ff &&
			    shape_of(arg, a->mods[i].btarget, &ndim,
			    shape) == 0) {
				op.kind = OP_IA3B;
				rc = add_op(m, a->mods[i].btarget, op);
			}
			continue;
		}
		op.kind = OP_LORA;
		rc = add_op(m, a->mods[i].target, op);
		if (rc == 0 && a->mods[i].bias >= 0) {
			if (combo)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: module '%s': lora_B.bias cannot be "
				    "combined with -m", a->path,
				    a->mods[i].name);
			op.kind = OP_BIAS;
			rc = add_op(m, a->mods[i].btarget, op);
		}
	}
	if (rc != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	return 0;
}

int
peftio_merge_create(struct peftio_merge **out,
    struct peftio_adapter *const *ads, size_t nads,
    const struct peftio_merge_opts *opts,
    int (*shape_of)(void *, const char *, int *, uint64_t *), void *arg,
    struct peftio_error *err)
{
	struct peftio_merge *m;
	size_t i, j, k;
	int rc = 0;

	*out = NULL;
	if (nads == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "no adapter");
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->w = calloc(nads, sizeof(double))) == NULL) {
		free(m);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	m->ads = ads;
	m->nads = nads;
	m->o = *opts;
	m->o.weights = NULL;
	if (m->o.nthreads == 0)
		m->o.nthreads = 1;
	if ((m->slots = calloc(m->o.nthreads, sizeof(*m->slots))) == NULL ||
	    (m->prep = calloc(1, sizeof(*m->prep))) == NULL) {
		free(m->slots);
		free(m->w);
		free(m);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	for (i = 0; i < nads; i++)
		m->w[i] = opts->weights != NULL ? opts->weights[i] : 1.0;
	/* PEFT: a single adapter always combines as "linear". */
	if (nads == 1 && m->o.method != PEFTIO_COMBINE_NONE)
		m->o.method = PEFTIO_COMBINE_LINEAR;
	for (i = 0; i < nads && m->o.method != PEFTIO_COMBINE_NONE; i++)
		if (ads[i]->tuner != NULL) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: a %s adapter cannot be combined with -m "
			    "(PEFT's add_weighted_adapter combines LoRA "
			    "adapters only)", ads[i]->path,
			    peftio_tuner_type(ads[i]->tuner));
			goto fail;
		}
	if ((unsigned)m->o.method > PEFTIO_COMBINE_MAGNITUDE_PRUNE) {
		rc = peftio_error_set(err, PEFTIO_EINVAL,
		    "unknown combination type");
		goto fail;
	}
	switch (m->o.method) {
	case PEFTIO_COMBINE_TIES:
	case PEFTIO_COMBINE_DARE_LINEAR:
	case PEFTIO_COMBINE_DARE_TIES:
	case PEFTIO_COMBINE_MAGNITUDE_PRUNE:
		if (!(m->o.density >= 0 && m->o.density <= 1)) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "density %g is not in [0, 1]", m->o.density);
			goto fail;
		}
		/* FALLTHROUGH */
	case PEFTIO_COMBINE_LINEAR:
		for (i = 1; i < nads; i++)
			if (ads[i]->r != ads[0]->r) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: r = %llu differs from %s's r = %llu: "
				    "combination type %s needs equal ranks "
				    "(cat and svd do not)", ads[i]->path,
				    (unsigned long long)ads[i]->r,
				    ads[0]->path,
				    (unsigned long long)ads[0]->r,
				    peftio_combine_name(m->o.method));
				goto fail;
			}
		m->newr = ads[0]->r;
		break;
	case PEFTIO_COMBINE_CAT:
		for (i = 0; i < nads; i++)
			m->newr += ads[i]->r;
		break;
	case PEFTIO_COMBINE_SVD:
		for (i = 0; i < nads; i++)
			m->newr = PEFTIO_MAX(m->newr, ads[i]->r);
		break;
	case PEFTIO_COMBINE_NONE:
		break;
	}
	/* The combined adapter keeps adapters[0]'s config with
	 * r = lora_alpha = new rank, use_rslora included (PEFT 0.21). */
	m->newscale = 1.0f;
	if (m->o.method != PEFTIO_COMBINE_NONE && ads[0]->rslora)
		m->newscale = (float)((double)m->newr / sqrt((double)m->newr));
	for (i = 0; i < nads && rc == 0; i++)
		rc = plan_adapter(m, i, shape_of, arg, err);
	if (rc != 0)
		goto fail;
	for (i = 0; i < m->nt; i++)
		if ((rc = check_target(m, &m->t[i], shape_of, arg, err)) != 0)
			goto fail;
	/* Equal ranks per module for the factor-wise combinations. */
	if (m->o.method != PEFTIO_COMBINE_NONE &&
	    m->o.method != PEFTIO_COMBINE_CAT &&
	    m->o.method != PEFTIO_COMBINE_SVD)
		for (i = 0; i < m->nt; i++)
			for (j = 0, k = (size_t)-1; j < m->t[i].nops; j++) {
				struct op *op = &m->t[i].ops[j];

				if (op->kind != OP_LORA)
					continue;
				if (k != (size_t)-1 && ads[op->ad]->mods[
				    op->mod].r != ads[m->t[i].ops[k].ad]->mods[
				    m->t[i].ops[k].mod].r) {
					rc = peftio_error_set(err,
					    PEFTIO_EINVAL, "%s: module '%s': "
					    "ranks differ between adapters; "
					    "use -m cat or -m svd",
					    ads[op->ad]->path,
					    ads[op->ad]->mods[op->mod].name);
					goto fail;
				}
				k = j;
			}
	qsort(m->t, m->nt, sizeof(*m->t), cmp_target);
	*out = m;
	return 0;
fail:
	peftio_merge_free(m);
	return rc;
}

void
peftio_merge_free(struct peftio_merge *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->nt; i++) {
		free(m->t[i].name);
		free(m->t[i].ops);
	}
	if (m->slots != NULL)
		for (i = 0; i < m->o.nthreads; i++)
			peftio_scratch_free(&m->slots[i]);
	free(m->slots);
	if (m->prep != NULL)
		prep_free(m->prep);
	free(m->prep);
	free(m->t);
	free(m->w);
	free(m);
}

static struct target *
find_target(const struct peftio_merge *m, const char *name)
{
	struct target key;

	key.name = (char *)(uintptr_t)name;
	return bsearch(&key, m->t, m->nt, sizeof(*m->t), cmp_target);
}

int
peftio_merge_touches(const struct peftio_merge *m, const char *name)
{
	return find_target(m, name) != NULL;
}

size_t
peftio_merge_count(const struct peftio_merge *m)
{
	return m->nt;
}

/* ------------------------------------------------------------------ */
/* Arithmetic                                                          */

static int
load_f32(struct peftio_adapter *a, long idx, float **out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = tinfo(a, idx);
	const void *data;
	int rc;

	*out = NULL;
	if ((rc = peftio_ckpt_data(a->ck, (size_t)idx, &data, err)) != 0)
		return rc;
	if ((*out = malloc((ti->numel ? ti->numel : 1) * sizeof(float)))
	    == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "%s: tensor '%s': out of memory", a->path, ti->name);
	return peftio_to_f32(ti->dtype, data, *out, ti->numel);
}

struct gemm_job {
	int		 trans;	/* C = A^T B^T (fan_in_fan_out, embeddings)
				 * instead of C = B A */
	const float	*a, *b;	/* A [r, ?], B [?, r] */
	uint64_t	 r, rows, cols;
	uint64_t	 row0, nrows; /* the block of rows to compute */
	float		*c;	/* the product, or NULL: fold it into w */
	/* The fold: rows of the delta, as op_lora() describes it. */
	struct peftio_merge *m;
	float		*w;
	float		 s, wt;
	enum peftio_dtype adt;
	const float	*mag;	/* DoRA magnitudes, or NULL */
	int		 nomem;
};

/*
 * w -/+= (d * s) * wt for an f32 adapter, in the order op_lora's steps
 * take (the weight's multiply only when it is not 1).  Written as fixed
 * runs of FOLD_RUN so that compilers vectorize it at -O2.
 */
#define FOLD_RUN	16

static void
fold_plain(float *restrict w, const float *restrict d, uint64_t n, float s,
    float wt, int unmerge)
{
	uint64_t i = 0, k;
	float sign = unmerge ? -1.0f : 1.0f;

	/* w - x is w + (-x) exactly, so one loop serves both signs. */
	if (wt == 1.0f) {
		for (; n - i >= FOLD_RUN; i += FOLD_RUN)
			for (k = 0; k < FOLD_RUN; k++)
				w[i + k] += sign * (d[i + k] * s);
		for (; i < n; i++)
			w[i] += sign * (d[i] * s);
		return;
	}
	for (; n - i >= FOLD_RUN; i += FOLD_RUN)
		for (k = 0; k < FOLD_RUN; k++)
			w[i + k] += sign * ((d[i + k] * s) * wt);
	for (; i < n; i++)
		w[i] += sign * ((d[i] * s) * wt);
}

/*
 * Fold n rows of a LoRA delta (from row r0) into w, which holds the
 * job's block of rows: scale, round through
 * the adapter's dtype, weight, then add (or subtract); with DoRA,
 * W' = m / ||W + dW||_row * (W + dW).
 */
static void
fold_rows(const struct gemm_job *j, uint64_t r0, uint64_t n, float *d)
{
	uint64_t i, k, cnt = n * j->cols;
	float *w = j->w + (r0 - j->row0) * j->cols, f;
	double ss;

	if (j->adt == PEFTIO_F32 && j->mag == NULL) {
		fold_plain(w, d, cnt, j->s, j->wt, j->m->o.unmerge);
		return;
	}
	for (i = 0; i < cnt; i++)
		d[i] *= j->s;
	round_through(j->adt, d, cnt);
	if (j->wt != 1.0f)
		for (i = 0; i < cnt; i++)
			d[i] *= j->wt;
	if (j->mag == NULL) {
		if (j->m->o.unmerge)
			for (i = 0; i < cnt; i++)
				w[i] -= d[i];
		else
			for (i = 0; i < cnt; i++)
				w[i] += d[i];
		return;
	}
	for (i = 0; i < n; i++) {
		float *row = w + i * j->cols;
		const float *drow = d + i * j->cols;

		ss = 0;
		for (k = 0; k < j->cols; k++) {
			row[k] += drow[k];
			ss += (double)row[k] * row[k];
		}
		f = j->mag[r0 + i] / (float)sqrt(ss);
		for (k = 0; k < j->cols; k++)
			row[k] *= f;
	}
}

static void
gemm_chunks(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct gemm_job *j = arg;
	uint64_t c, r0, n;
	float *dst, *tmp = NULL;

	if ((j->r != 0 && peftio_blas_ready(NULL) != 0) ||
	    (j->c == NULL && (tmp = peftio_scratch(&j->m->slots[slot],
	    ROW_CHUNK * j->cols * sizeof(float))) == NULL)) {
		j->nomem = 1;
		return;
	}
	for (c = b; c < e; c++) {
		r0 = j->row0 + c * ROW_CHUNK;
		n = PEFTIO_MIN(ROW_CHUNK, j->row0 + j->nrows - r0);
		dst = j->c != NULL ? j->c + (r0 - j->row0) * j->cols : tmp;
		if (j->r == 0)
			memset(dst, 0, n * j->cols * sizeof(float));
		else if (j->trans)	/* A [r, rows], B [cols, r] */
			peftio_sgemm(1, 1, n, j->cols, j->r, 1.0f, j->a + r0,
			    j->rows, j->b, j->r, 0.0f, dst, j->cols);
		else		/* B [rows, r], A [r, cols] */
			peftio_sgemm(0, 0, n, j->cols, j->r, 1.0f,
			    j->b + r0 * j->r, j->r, j->a, j->cols, 0.0f,
			    dst, j->cols);
		if (j->c == NULL)
			fold_rows(j, r0, n, dst);
	}
}

/* Run job j (with its product or fold set) over its block of rows. */
static int
run_gemm(const struct peftio_merge *m, struct gemm_job *j)
{
	j->nomem = 0;
	peftio_parallel_slots(m->o.nthreads,
	    (j->nrows + ROW_CHUNK - 1) / ROW_CHUNK, 1, gemm_chunks, j);
	return j->nomem ? PEFTIO_ENOMEM : 0;
}

/* A job over all rows of the rows x cols product of A [r, ?], B [?, r]. */
static void
gemm_setup(struct gemm_job *j, struct peftio_merge *m, int trans,
    const float *a, const float *b, uint64_t r, uint64_t rows, uint64_t cols)
{
	memset(j, 0, sizeof(*j));
	j->m = m;
	j->trans = trans;
	j->a = a;
	j->b = b;
	j->r = r;
	j->rows = rows;
	j->cols = cols;
	j->nrows = rows;
}

/* c[rows, cols] = B A (or A^T B^T when trans), unscaled. */
static int
factor_product(struct peftio_merge *m, int trans, const float *a,
    const float *b, uint64_t r, uint64_t rows, uint64_t cols, float *c)
{
	struct gemm_job j;

	gemm_setup(&j, m, trans, a, b, r, rows, cols);
	j.c = c;
	return run_gemm(m, &j);
}

/* PEFT's get_delta_weight: transpose(B @ A, fifo) * s, in f32, cast to
 * lora_B's dtype. */
static int
lora_delta(struct peftio_merge *m, struct peftio_adapter *a,
    const struct lmod *md, const struct target *t, float *d,
    struct peftio_error *err)
{
	float *fa = NULL, *fb = NULL, s = (float)md->scale;
	uint64_t i, n = t->rows * t->cols;
	int rc;

	if ((rc = load_f32(a, md->a, &fa, err)) == 0 &&
	    (rc = load_f32(a, md->b, &fb, err)) == 0) {
		if (factor_product(m, md->embedding || md->fifo, fa, fb, md->r,
		    t->rows, t->cols, d) != 0)
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "%s: out of memory", t->name);
		else {
			for (i = 0; i < n; i++)
				d[i] *= s;
			round_through(tinfo(a, md->b)->dtype, d, n);
		}
	}
	free(fa);
	free(fb);
	return rc;
}

/* Fold rows [row0, row0 + nrows) of a LoRA delta B A into w. */
static int
fold_block(struct peftio_merge *m, const struct target *t, int trans,
    const float *a, const float *b, uint64_t r, float s, float wt,
    enum peftio_dtype adt, const float *mag, float *w, uint64_t row0,
    uint64_t nrows, struct peftio_error *err)
{
	struct gemm_job j;

	gemm_setup(&j, m, trans, a, b, r, t->rows, t->cols);
	j.row0 = row0;
	j.nrows = nrows;
	j.w = w;
	j.s = s;
	j.wt = wt;
	j.adt = adt;
	j.mag = mag;
	if (run_gemm(m, &j) != 0)
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "tensor '%s': out of memory", t->name);
	return 0;
}

/* Load what op needs into p. */
static int
prep_op(struct peftio_merge *m, const struct op *op, struct pop *p,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[op->ad];
	const struct lmod *md = op->kind == OP_REPL || op->kind == OP_TUNER ?
	    NULL : &a->mods[op->mod];
	const struct target *t;
	uint64_t i;
	int rc = 0;

	switch (op->kind) {
	case OP_TUNER:
		t = m->prep->t;
		rc = peftio_tuner_prepare(a->tuner, op->mod, t->rows, t->cols,
		    m->o.unmerge, &p->tp, err);
		break;
	case OP_LORA:
		if ((rc = load_f32(a, md->a, &p->a, err)) == 0 &&
		    (rc = load_f32(a, md->b, &p->b, err)) == 0 && md->mag >= 0)
			rc = load_f32(a, md->mag, &p->mag, err);
		break;
	case OP_BIAS:
		rc = load_f32(a, md->bias, &p->v, err);
		break;
	case OP_IA3W:
	case OP_IA3B:
		if ((rc = load_f32(a, md->ia3, &p->v, err)) == 0 &&
		    m->o.unmerge)
			for (i = 0; i < tinfo(a, md->ia3)->numel; i++)
				p->v[i] = p->v[i] + 1e-8f;
		break;
	default:
		break;
	}
	return rc;
}

/* Apply op to rows [row0, row0 + nrows) of t, held in w. */
static int
op_rows(struct peftio_merge *m, const struct target *t, const struct op *op,
    const struct pop *p, float *w, uint64_t row0, uint64_t nrows,
    struct peftio_error *err)
{
	struct peftio_adapter *a = m->ads[op->ad];
	const struct lmod *md = op->kind == OP_REPL || op->kind == OP_TUNER ?
	    NULL : &a->mods[op->mod];
	const struct peftio_tensor_info *ti;
	uint64_t i, j, k0 = row0 * t->cols, n = nrows * t->cols;
	const void *data;
	float s, d, wt = (float)m->w[op->ad];
	int rc, rowwise;

	switch (op->kind) {
	case OP_TUNER:
		peftio_tuner_rows(p->tp, w, row0, nrows);
		return 0;
	case OP_LORA:
		return fold_block(m, t, md->embedding || md->fifo, p->a, p->b,
		    md->r, (float)md->scale, wt, tinfo(a, md->b)->dtype, p->mag,
		    w, row0, nrows, err);
	case OP_REPL:
		ti = tinfo(a, op->idx);
		if ((rc = peftio_ckpt_data(a->ck, (size_t)op->idx, &data,
		    err)) != 0)
			return rc;
		return peftio_to_f32(ti->dtype, (const char *)data + k0 *
		    (peftio_dtype_bits(ti->dtype) / 8), w, n);
	case OP_BIAS:
		s = (float)md->scale;
		for (i = 0; i < n; i++) {
			d = p->v[k0 + i] * s;
			if (m->w[op->ad] != 1.0)
				d *= wt;
			w[i] = m->o.unmerge ? w[i] - d : w[i] + d;
		}
		return 0;
	case OP_IA3W:
	case OP_IA3B:
		rowwise = op->kind == OP_IA3B || (md->fifo ? md->ff : !md->ff);
		for (i = 0; i < nrows; i++)
			for (j = 0; j < t->cols; j++) {
				float l = rowwise ? p->v[row0 + i] : p->v[j];

				if (m->o.unmerge)
					w[i * t->cols + j] /= l;
				else
					w[i * t->cols + j] *= l;
			}
		return 0;
	default:
		return 0;
	}
}

/* ---- add_weighted_adapter ------------------------------------------ */

static uint64_t
splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static int
cmp_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x < y) - (x > y);
}

/* merge_utils.magnitude_based_pruning: keep the int(density * n) values
 * of largest magnitude (ties at the threshold: the first ones). */
static int
magnitude_prune1(float *t, uint64_t n, double density)
{
	uint64_t k = (uint64_t)(density * (double)n), i, eq = 0, keep_eq;
	float *s, thr;

	if (k >= n)
		return 0;
	if ((s = malloc((n ? n : 1) * sizeof(float))) == NULL)
		return PEFTIO_ENOMEM;
	for (i = 0; i < n; i++)
		s[i] = fabsf(t[i]);
	qsort(s, n, sizeof(float), cmp_desc);
	thr = k > 0 ? s[k - 1] : INFINITY;
	for (i = 0; i < k; i++)
		eq += s[i] == thr;
	free(s);
	keep_eq = eq;
	for (i = 0; i < n; i++) {
		float v = fabsf(t[i]);

		if (k > 0 && v > thr)
			continue;
		if (k > 0 && v == thr && keep_eq > 0) {
			keep_eq--;
			continue;
		}
		t[i] = 0.0f;
	}
	return 0;
}

/* merge_utils.random_pruning with rescale, from a seeded generator. */
static void
random_prune1(float *t, uint64_t n, double density, uint64_t seed)
{
	uint64_t i, st = seed;
	float p = (float)density;

	for (i = 0; i < n; i++) {
		double u = (double)(splitmix64(&st) >> 11) * 0x1p-53;

		t[i] = u < density ? t[i] / p : 0.0f;
	}
}

/* Combine k tensors of n values (ts[i], pruned in place) with weights ws
 * into out, as merge_utils does for the method. */
static int
combine_tensors(const struct peftio_merge *m, float **ts, const float *ws,
    size_t k, uint64_t n, uint64_t seed, float *out)
{
	enum peftio_combine c = m->o.method;
	double dens = m->o.density;
	uint64_t i;
	size_t j;
	int rc;

	for (j = 0; j < k; j++) {
		if (dens >= 1)
			break;
		if (c == PEFTIO_COMBINE_TIES ||
		    c == PEFTIO_COMBINE_MAGNITUDE_PRUNE) {
			if ((rc = magnitude_prune1(ts[j], n, dens)) != 0)
				return rc;
		} else if (c == PEFTIO_COMBINE_DARE_LINEAR ||
		    c == PEFTIO_COMBINE_DARE_TIES)
			random_prune1(ts[j], n, dens, seed ^
			    (0x632be59bd9b4e019ull * (j + 1)));
	}
	for (i = 0; i < n; i++) {
		float sum = 0.0f, mixed = 0.0f, cnt = 0.0f, sg, tv;
		int maj;

		if (c != PEFTIO_COMBINE_TIES && c != PEFTIO_COMBINE_DARE_TIES) {
			for (j = 0; j < k; j++)
				sum += ts[j][i] * ws[j];
			out[i] = sum;
			continue;
		}
		for (j = 0; j < k; j++)
			sum += ts[j][i];
		maj = sum >= 0 ? 1 : -1;
		for (j = 0; j < k; j++) {
			tv = ts[j][i];
			sg = (float)((tv > 0) - (tv < 0));
			if (sg == (float)maj) {
				mixed += tv * ws[j];
				cnt += 1.0f;
			}
		}
		out[i] = mixed / (cnt < 1.0f ? 1.0f : cnt);
	}
	return 0;
}

/*
 * The combined adapter of the LoRA ops of t, as factors: its delta is
 * pr->cb pr->ca (transposed when pr->ctrans), times m->newscale.  1 when
 * t has no LoRA op.
 */
static int
combined_factors(struct peftio_merge *m, const struct target *t,
    struct prep *pr, struct peftio_error *err)
{
	struct peftio_adapter *a;
	const struct lmod *md;
	const struct op *ops[64];
	float *fa[64], *fb[64], wa[64], wb[64], *A = NULL, *B = NULL;
	float *d = NULL, *tmp = NULL, *u = NULL, *s = NULL, *vt = NULL;
	uint64_t n = t->rows * t->cols, R = 0, off, i, q, r, p, acols, brows;
	size_t k = 0, j;
	double c;
	int rc = 0, trans = 0;
	enum peftio_dtype adt = PEFTIO_F32;

	for (j = 0; j < t->nops; j++)
		if (t->ops[j].kind == OP_LORA) {
			if (k == 64)
				return peftio_error_set(err, PEFTIO_EINVAL,
				    "more than 64 adapters");
			ops[k] = &t->ops[j];
			fa[k] = fb[k] = NULL;
			k++;
		}
	if (k == 0)
		return 1;
	for (j = 0; j < k && rc == 0; j++) {
		a = m->ads[ops[j]->ad];
		md = &a->mods[ops[j]->mod];
		trans = md->embedding || md->fifo;
		if (j == 0)
			adt = tinfo(a, md->a)->dtype;
		R += md->r;
		if ((rc = load_f32(a, md->a, &fa[j], err)) == 0)
			rc = load_f32(a, md->b, &fb[j], err);
	}
	if (rc != 0)
		goto out;
	md = &m->ads[ops[0]->ad]->mods[ops[0]->mod];
	acols = trans ? t->rows : t->cols;	/* A is [r, acols] */
	brows = trans ? t->cols : t->rows;	/* B is [brows, r] */

	switch (m->o.method) {
	case PEFTIO_COMBINE_CAT:
		/* A = cat_rows(A_i * w_i * s_i), B = cat_cols(B_i). */
		A = malloc(R * acols * sizeof(float));
		B = malloc(brows * R * sizeof(float));
		if (A == NULL || B == NULL)
			goto nomem;
		for (j = 0, off = 0; j < k; j++) {
			a = m->ads[ops[j]->ad];
			md = &a->mods[ops[j]->mod];
			for (i = 0; i < md->r * acols; i++)
				A[off * acols + i] = fa[j][i] *
				    (float)m->w[ops[j]->ad] * (float)md->scale;
			for (i = 0; i < brows; i++)
				memcpy(B + i * R + off, fb[j] + i * md->r,
				    md->r * sizeof(float));
			off += md->r;
		}
		pr->cr = R;
		break;
	case PEFTIO_COMBINE_SVD:
		/* sum_i w_i * delta_i, then its rank-new_r truncation. */
		if ((tmp = malloc(n * sizeof(float))) == NULL ||
		    (d = calloc(n ? n : 1, sizeof(float))) == NULL)
			goto nomem;
		for (j = 0; j < k && rc == 0; j++) {
			a = m->ads[ops[j]->ad];
			if ((rc = lora_delta(m, a, &a->mods[ops[j]->mod], t, tmp,
			    err)) != 0)
				break;
			for (i = 0; i < n; i++)
				d[i] += tmp[i] * (float)m->w[ops[j]->ad];
		}
		if (rc != 0)
			goto out;
		p = PEFTIO_MIN(t->rows, t->cols);
		r = PEFTIO_MIN(m->newr, p);
		u = malloc(t->rows * p * sizeof(float));
		s = malloc(p * sizeof(float));
		vt = malloc(p * t->cols * sizeof(float));
		A = malloc(r * t->cols * sizeof(float) + 1);
		B = malloc(t->rows * r * sizeof(float) + 1);
		if (u == NULL || s == NULL || vt == NULL || A == NULL ||
		    B == NULL)
			goto nomem;
		if ((rc = peftio_svd(d, t->rows, t->cols, u, s, vt, err)) != 0) {
			peftio_error_prefix(err, "tensor '%s'", t->name);
			goto out;
		}
		for (i = 0; i < t->rows; i++)
			for (q = 0; q < r; q++)
				B[i * r + q] = u[i * p + q] * s[q];
		memcpy(A, vt, r * t->cols * sizeof(float));
		pr->cr = r;
		trans = 0;
		break;
	default:
		/* Factor-wise: A = f({A_i}, sign(c)sqrt|c|), B = f({B_i},
		 * sqrt|c|) with c = w_i s_i. */
		r = md->r;
		for (j = 0; j < k; j++) {
			a = m->ads[ops[j]->ad];
			c = m->w[ops[j]->ad] * a->mods[ops[j]->mod].scale;
			wa[j] = (float)copysign(sqrt(fabs(c)), c);
			wb[j] = (float)sqrt(fabs(c));
		}
		A = malloc(r * acols * sizeof(float) + 1);
		B = malloc(brows * r * sizeof(float) + 1);
		if (A == NULL || B == NULL)
			goto nomem;
		q = m->o.seed ^ hash_str(t->name);
		if ((rc = combine_tensors(m, fa, wa, k, r * acols, q, A)) != 0 ||
		    (rc = combine_tensors(m, fb, wb, k, brows * r,
		    q ^ 0x5bd1e995ull, B)) != 0)
			goto nomem;
		round_through(adt, A, r * acols);
		round_through(adt, B, brows * r);
		pr->cr = r;
		break;
	}
	pr->ca = A;
	pr->cb = B;
	pr->ctrans = trans;
	A = B = NULL;
	goto out;
nomem:
	rc = peftio_error_set(err, PEFTIO_ENOMEM, "tensor '%s': out of memory",
	    t->name);
out:
	for (j = 0; j < k; j++) {
		free(fa[j]);
		free(fb[j]);
	}
	free(A);
	free(B);
	free(d);
	free(tmp);
	free(u);
	free(s);
	free(vt);
	return rc;
}

static void
prep_free(struct prep *pr)
{
	size_t j;

	if (pr->pops != NULL)
		for (j = 0; j < pr->t->nops; j++) {
			free(pr->pops[j].a);
			free(pr->pops[j].b);
			free(pr->pops[j].mag);
			free(pr->pops[j].v);
			peftio_tuner_prep_free(pr->pops[j].tp);
		}
	free(pr->pops);
	free(pr->ca);
	free(pr->cb);
	memset(pr, 0, sizeof(*pr));
}

int
peftio_merge_begin(struct peftio_merge *m, const char *name, uint64_t numel,
    struct peftio_error *err)
{
	const struct target *t = find_target(m, name);
	struct prep *pr = m->prep;
	size_t j;
	int rc = 0;

	prep_free(pr);
	if (t == NULL)
		return 0;
	if (numel != t->numel)
		return peftio_error_set(err, PEFTIO_EMISMATCH,
		    "tensor '%s': %llu values, the plan has %llu", name,
		    (unsigned long long)numel, (unsigned long long)t->numel);
	pr->t = t;
	if ((pr->pops = calloc(t->nops ? t->nops : 1, sizeof(*pr->pops))) ==
	    NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (m->o.method == PEFTIO_COMBINE_NONE) {
		for (j = 0; j < t->nops && rc == 0; j++)
			rc = prep_op(m, &t->ops[j], &pr->pops[j], err);
	} else if (rc == 0) {
		rc = combined_factors(m, t, pr, err);
		pr->comb = rc == 0;
		if (rc == 1)
			rc = 0;
	}
	if (rc != 0)
		prep_free(pr);
	return rc;
}

int
peftio_merge_rows(struct peftio_merge *m, float *w, uint64_t row0,
    uint64_t nrows, enum peftio_dtype round_dt, struct peftio_error *err)
{
	const struct prep *pr = m->prep;
	const struct target *t = pr->t;
	size_t j, prev = (size_t)-1;
	int rc = 0;

	if (t == NULL)
		return 0;
	if (row0 % ROW_CHUNK != 0 || row0 > t->rows ||
	    nrows > t->rows - row0 ||
	    (nrows % ROW_CHUNK != 0 && row0 + nrows != t->rows))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "tensor '%s': rows %llu+%llu are not a block of %u",
		    t->name, (unsigned long long)row0,
		    (unsigned long long)nrows, PEFTIO_MERGE_ROWS);
	if (m->o.method == PEFTIO_COMBINE_NONE) {
		for (j = 0; j < t->nops && rc == 0; j++) {
			/* PEFT stores each adapter's result in the
			 * weight's dtype before the next one. */
			if (prev != (size_t)-1 && t->ops[j].ad != prev)
				round_through(round_dt, w, nrows * t->cols);
			prev = t->ops[j].ad;
			rc = op_rows(m, t, &t->ops[j], &pr->pops[j], w, row0,
			    nrows, err);
		}
		return rc;
	}
	for (j = 0; j < t->nops && rc == 0; j++)
		if (t->ops[j].kind == OP_REPL)
			rc = op_rows(m, t, &t->ops[j], &pr->pops[j], w, row0,
			    nrows, err);
	if (rc == 0 && pr->comb)
		rc = fold_block(m, t, pr->ctrans, pr->ca, pr->cb, pr->cr,
		    m->newscale, 1.0f, PEFTIO_F32, NULL, w, row0, nrows, err);
	return rc;
}

void
peftio_merge_end(struct peftio_merge *m)
{
	prep_free(m->prep);
}

int
peftio_merge_apply(struct peftio_merge *m, const char *name, float *w,
    uint64_t numel, enum peftio_dtype round_dt, struct peftio_error *err)
{
	int rc;

	if ((rc = peftio_merge_begin(m, name, numel, err)) == 0 &&
	    m->prep->t != NULL)
		rc = peftio_merge_rows(m, w, 0, m->prep->t->rows, round_dt,
		    err);
	peftio_merge_end(m);
	return rc;
}
