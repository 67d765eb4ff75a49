/*
 * recipe.c - lora-merge recipes in YAML (libyaml), peftio-recipe(5).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "peftio_private.h"

#define RECIPE_MAX	(1u << 20)
#define RECIPE_DEPTH	16	/* nesting levels; a recipe needs 3 */

static const char *
scalar(yaml_node_t *n)
{
	return n != NULL && n->type == YAML_SCALAR_NODE ?
	    (const char *)n->data.scalar.value : NULL;
}

static int
parse_double(const char *s, double *out)
{
	char *end;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	*out = strtod(s, &end);
	return *end != '\0' || errno != 0 || !isfinite(*out) ? -1 : 0;
}

static int
parse_bool(const char *s, int *out)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 ||
	    strcmp(s, "True") == 0) {
		*out = 1;
		return 0;
	}
	if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 ||
	    strcmp(s, "False") == 0) {
		*out = 0;
		return 0;
	}
	return -1;
}

/* path relative to the recipe's directory (dir may be NULL). */
static char *
resolve(const char *dir, const char *p)
{
	size_t n;
	char *s;

	if (dir == NULL || p[0] == '/' || strcmp(p, "-") == 0)
		return strdup(p);
	n = strlen(dir) + strlen(p) + 2;
	if ((s = malloc(n)) != NULL)
		snprintf(s, n, "%s/%s", dir, p);
	return s;
}

void
peftio_recipe_free(struct peftio_recipe *r)
{
	size_t i;

	if (r == NULL)
		return;
	free(r->base);
	free(r->output);
	free(r->save_adapter);
	for (i = 0; i < r->nadapters; i++)
		free(r->adapters[i]);
	free(r->adapters);
	free(r->weights);
	free(r->method);
	free(r->dtype);
	free(r);
}

/* Is the key of pair p the same as that of an earlier pair? */
static int
dup_key(yaml_document_t *doc, yaml_node_pair_t *start, yaml_node_pair_t *p)
{
	const char *k = scalar(yaml_document_get_node(doc, p->key)), *o;
	yaml_node_pair_t *q;

	if (k == NULL)
		return 0;
	for (q = start; q < p; q++)
		if ((o = scalar(yaml_document_get_node(doc, q->key))) != NULL &&
		    strcmp(o, k) == 0)
			return 1;
	return 0;
}

/*
 * A first pass over the parser's events, before anything is built:
 * libyaml's loader takes time quadratic in the nesting depth, so a
 * recipe nested deeper than RECIPE_DEPTH stops here, as do a second
 * document and aliases (a recipe has no use for them, and a value that
 * is an alias would not be what it seems).
 */
static int
check_events(const char *text, size_t len, const char *label,
    struct peftio_error *err)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, docs = 0, done = 0, rc = 0;

	if (!yaml_parser_initialize(&parser))
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&parser, &ev)) {
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: line %zu: %s", label,
			    parser.problem_mark.line + 1,
			    parser.problem != NULL ? parser.problem :
			    "YAML error");
			break;
		}
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1)
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: line %zu: a second YAML document "
				    "(a recipe is one)", label,
				    ev.start_mark.line + 1);
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > RECIPE_DEPTH)
				rc = peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: line %zu: nested deeper than %d "
				    "levels", label, ev.start_mark.line + 1,
				    RECIPE_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_ALIAS_EVENT:
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: line %zu: aliases (*name) are not supported",
			    label, ev.start_mark.line + 1);
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

static int
parse_adapter(yaml_document_t *doc, yaml_node_t *n, struct peftio_recipe *r,
    const char *dir, const char *label, struct peftio_error *err)
{
	yaml_node_pair_t *p;
	const char *k, *path = NULL, *wv = NULL;
	size_t i = r->nadapters;
	double w = 1.0;

	if (scalar(n) != NULL)
		path = scalar(n);
	else if (n->type == YAML_MAPPING_NODE) {
		for (p = n->data.mapping.pairs.start;
		    p < n->data.mapping.pairs.top; p++) {
			k = scalar(yaml_document_get_node(doc, p->key));
			if (dup_key(doc, n->data.mapping.pairs.start, p))
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: adapters[%zu]: key '%s' given twice",
				    label, i, k);
			if (k != NULL && strcmp(k, "path") == 0)
				path = scalar(yaml_document_get_node(doc,
				    p->value));
			else if (k != NULL && strcmp(k, "weight") == 0) {
				wv = scalar(yaml_document_get_node(doc,
				    p->value));
				if (wv == NULL)
					return peftio_error_set(err,
					    PEFTIO_EFORMAT, "%s: adapters[%zu]: "
					    "weight is not a number", label, i);
			} else
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: adapters[%zu]: unknown key '%s'",
				    label, i, k != NULL ? k : "?");
		}
	}
	if (path == NULL || *path == '\0')
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: adapters[%zu]: no path", label, i);
	if (wv != NULL) {
		if (parse_double(wv, &w) != 0)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: adapters[%zu]: weight '%s' is not a number",
			    label, i, wv);
		r->has_weights = 1;
	}
	if ((r->adapters[i] = resolve(dir, path)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	r->weights[i] = w;
	r->nadapters++;
	return 0;
}

/*
 * A mergekit configuration (merge_method, slices, models, base_model)
 * is the nearest thing to a recipe that is not one: say so, rather
 * than name its first key unknown.
 */
static int
mergekit(yaml_document_t *doc, yaml_node_t *root, const char *label,
    struct peftio_error *err)
{
	static const char *const keys[] = {
		"merge_method", "slices", "models", "base_model"
	};
	yaml_node_pair_t *p;
	const char *k;
	size_t i;

	for (p = root->data.mapping.pairs.start;
	    p < root->data.mapping.pairs.top; p++) {
		if ((k = scalar(yaml_document_get_node(doc, p->key))) == NULL)
			continue;
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strcmp(k, keys[i]) == 0)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: a mergekit configuration (%s): "
				    "lora-merge recipes use base, adapters "
				    "and method, see peftio-recipe(5)",
				    label, k);
	}
	return 0;
}

static int
parse_doc(yaml_document_t *doc, struct peftio_recipe *r, const char *dir,
    const char *label, struct peftio_error *err)
{
	yaml_node_t *root = yaml_document_get_root_node(doc), *v;
	yaml_node_pair_t *p;
	yaml_node_item_t *it;
	const char *k, *s;
	size_t n;
	double d;
	int rc;

	if (root == NULL || root->type != YAML_MAPPING_NODE)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: not a mapping", label);
	if ((rc = mergekit(doc, root, label, err)) != 0)
		return rc;
	for (p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	    p++) {
		k = scalar(yaml_document_get_node(doc, p->key));
		v = yaml_document_get_node(doc, p->value);
		s = scalar(v);
		if (k == NULL)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: a key is not a string", label);
		if (dup_key(doc, root->data.mapping.pairs.start, p))
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: key '%s' given twice", label, k);
		if (strcmp(k, "adapters") == 0) {
			if (v == NULL || v->type != YAML_SEQUENCE_NODE)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: adapters: not a list", label);
			n = (size_t)(v->data.sequence.items.top -
			    v->data.sequence.items.start);
			if (r->adapters != NULL)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: adapters given twice", label);
			r->adapters = calloc(n + 1, sizeof(char *));
			r->weights = calloc(n + 1, sizeof(double));
			if (r->adapters == NULL || r->weights == NULL)
				return peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
			for (it = v->data.sequence.items.start;
			    it < v->data.sequence.items.top; it++)
				if ((rc = parse_adapter(doc,
				    yaml_document_get_node(doc, *it), r, dir,
				    label, err)) != 0)
					return rc;
			continue;
		}
		if (s == NULL)
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: %s: not a scalar", label, k);
		if (strcmp(k, "base") == 0 || strcmp(k, "output") == 0 ||
		    strcmp(k, "save_adapter") == 0) {
			char **dst = k[0] == 'b' ? &r->base : k[0] == 'o' ?
			    &r->output : &r->save_adapter;

			free(*dst);
			if ((*dst = resolve(dir, s)) == NULL)
				return peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
		} else if (strcmp(k, "method") == 0 ||
		    strcmp(k, "dtype") == 0) {
			char **dst = k[0] == 'm' ? &r->method : &r->dtype;

			free(*dst);
			if ((*dst = strdup(s)) == NULL)
				return peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
		} else if (strcmp(k, "density") == 0) {
			if (parse_double(s, &r->density) != 0 ||
			    r->density < 0 || r->density > 1)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: density '%s' is not a number in "
				    "[0, 1]", label, s);
			r->has_density = 1;
		} else if (strcmp(k, "seed") == 0) {
			if (parse_double(s, &d) != 0 || d < 0 ||
			    d != floor(d) || d > 9007199254740992.0)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: seed '%s' is not a non-negative "
				    "integer", label, s);
			r->seed = (uint64_t)d;
			r->has_seed = 1;
		} else if (strcmp(k, "unmerge") == 0 ||
		    strcmp(k, "requant") == 0) {
			if (parse_bool(s, k[0] == 'u' ? &r->unmerge :
			    &r->requant) != 0)
				return peftio_error_set(err, PEFTIO_EFORMAT,
				    "%s: %s: '%s' is not true or false",
				    label, k, s);
		} else
			return peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: unknown key '%s'", label, k);
	}
	return 0;
}

int
peftio_recipe_parse(const char *text, size_t len, const char *path,
    struct peftio_recipe **out, struct peftio_error *err)
{
	const char *label = path != NULL ? path : "recipe";
	struct peftio_recipe *r;
	yaml_parser_t parser;
	yaml_document_t doc;
	char *dir = NULL, *slash;
	int rc;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (path != NULL && (slash = strrchr(path, '/')) != NULL &&
	    (dir = strndup(path, (size_t)(slash - path + (slash == path))))
	    == NULL) {
		free(r);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	/* A checkpoint given for a recipe: YAML has no NUL bytes, and
	 * every checkpoint format starts with some. */
	if (memchr(text, '\0', len < 512 ? len : 512) != NULL) {
		free(r);
		free(dir);
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: a binary file (a checkpoint?), not a YAML recipe: "
		    "the base and the adapters are operands of lora-merge",
		    label);
	}
	if ((rc = check_events(text, len, label, err)) != 0 ||
	    !yaml_parser_initialize(&parser)) {
		free(r);
		free(dir);
		if (rc != 0)
			return rc;
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: line %zu: %s", label, parser.problem_mark.line + 1,
		    parser.problem != NULL ? parser.problem : "YAML error");
		yaml_parser_delete(&parser);
		peftio_recipe_free(r);
		free(dir);
		return rc;
	}
	rc = parse_doc(&doc, r, dir, label, err);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(dir);
	if (rc != 0) {
		peftio_recipe_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int
peftio_recipe_load(const char *path, struct peftio_recipe **out,
    struct peftio_error *err)
{
	char *text;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = peftio_read_file(path, RECIPE_MAX, &text, &len, err)) != 0)
		return rc;
	rc = peftio_recipe_parse(text, len, path, out, err);
	free(text);
	return rc;
}

int
peftio_recipe_apply(struct peftio_recipe *r, const char *path,
    struct peftio_merge_args *a, struct peftio_error *err)
{
	peftio_error_clear(err);
	if (a->base == NULL)
		a->base = r->base;
	if (a->nadapters == 0 && r->nadapters > 0) {
		a->adapters = (const char **)r->adapters;
		a->nadapters = r->nadapters;
	}
	if (a->weights == NULL && r->has_weights) {
		a->weights = r->weights;
		a->nweights = r->nadapters;
	}
	if (a->method < 0 && r->method != NULL &&
	    (a->method = peftio_combine_parse(r->method)) < 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: unknown method '%s'", path, r->method);
	if (!a->has_density && r->has_density) {
		a->density = r->density;
		a->has_density = 1;
	}
	if (a->seed == 0 && r->has_seed)
		a->seed = r->seed;
	if (a->dtype < 0 && r->dtype != NULL &&
	    (a->dtype = peftio_dtype_parse_float(r->dtype)) < 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: unknown dtype %s (use f32, f16 or bf16)", path,
		    r->dtype);
	a->unmerge |= r->unmerge;
	a->requant |= r->requant;
	if (a->output == NULL)
		a->output = r->output;
	if (a->save_adapter == NULL)
		a->save_adapter = r->save_adapter;
	return 0;
}
