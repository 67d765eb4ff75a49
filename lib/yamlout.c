/*
 * yamlout.c - JSON documents written as YAML: mappings in block style,
 * sequences of scalars in flow style, strings quoted where a YAML reader
 * would take them for something else, reals as Python's repr() writes
 * them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <yaml.h>

#include "peftio_private.h"

/* The growing output buffer. */
struct ybuf {
	unsigned char	*p;
	size_t		 len, cap;
	int		 nomem;
};

static int
ybuf_write(void *arg, unsigned char *data, size_t n)
{
	struct ybuf *b = arg;
	unsigned char *np;
	size_t cap;

	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL) {
			b->nomem = 1;
			return 0;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 1;
}

static int
yemit(yaml_emitter_t *e, yaml_event_t *ev)
{
	return yaml_emitter_emit(e, ev) ? 0 : -1;
}

/* A string that a YAML reader would take for something else. */
static int
needs_quotes(const char *s)
{
	static const char *const words[] = { "null", "Null", "NULL", "~",
		"true", "True", "TRUE", "false", "False", "FALSE", "yes", "no",
		"Yes", "No", "on", "off", "On", "Off", "y", "n", ".nan",
		".inf", "-.inf" };
	char *end;
	size_t i;

	if (*s == '\0')
		return 1;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(s, words[i]) == 0)
			return 1;
	(void)strtod(s, &end);
	return *end == '\0';
}

static int
yscalar(yaml_emitter_t *e, const char *s, int quoted)
{
	yaml_event_t ev;

	yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s,
	    (int)strlen(s), 1, 1, quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE :
	    YAML_ANY_SCALAR_STYLE);
	return yemit(e, &ev);
}

static int
ynode(yaml_emitter_t *e, json_t *v)
{
	yaml_event_t ev;
	const char *k;
	char buf[64];
	json_t *x;
	size_t i;
	int flow = 1;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
		    YAML_BLOCK_MAPPING_STYLE);
		if (yemit(e, &ev) != 0)
			return -1;
		json_object_foreach(v, k, x)
			if (yscalar(e, k, needs_quotes(k)) != 0 ||
			    ynode(e, x) != 0)
				return -1;
		yaml_mapping_end_event_initialize(&ev);
		return yemit(e, &ev);
	case JSON_ARRAY:
		json_array_foreach(v, i, x)
			if (json_is_object(x) || json_is_array(x))
				flow = 0;
		yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
		    flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE);
		if (yemit(e, &ev) != 0)
			return -1;
		json_array_foreach(v, i, x)
			if (ynode(e, x) != 0)
				return -1;
		yaml_sequence_end_event_initialize(&ev);
		return yemit(e, &ev);
	case JSON_STRING:
		return yscalar(e, json_string_value(v),
		    needs_quotes(json_string_value(v)));
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%lld",
		    (long long)json_integer_value(v));
		return yscalar(e, buf, 0);
	case JSON_REAL:
		peftio_py_repr_double(json_real_value(v), buf, sizeof(buf));
		return yscalar(e, buf, 0);
	case JSON_TRUE:
		return yscalar(e, "true", 0);
	case JSON_FALSE:
		return yscalar(e, "false", 0);
	default:
		return yscalar(e, "null", 0);
	}
}

/* Every element of docs, one YAML document each. */
static int
emit(yaml_emitter_t *e, json_t *docs)
{
	yaml_event_t ev;
	json_t *d;
	size_t i;

	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	if (yemit(e, &ev) != 0)
		return -1;
	json_array_foreach(docs, i, d) {
		yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0);
		if (yemit(e, &ev) != 0 || ynode(e, d) != 0)
			return -1;
		yaml_document_end_event_initialize(&ev, 1);
		if (yemit(e, &ev) != 0)
			return -1;
	}
	yaml_stream_end_event_initialize(&ev);
	return yemit(e, &ev);
}

int
peftio_yaml_from_json(const char *json, size_t len, char **out,
    size_t *outlen, struct peftio_error *err)
{
	struct ybuf b = { NULL, 0, 0, 0 };
	yaml_emitter_t e;
	json_error_t je;
	json_t *docs;
	int rc = 0;

	*out = NULL;
	*outlen = 0;
	docs = json_loadb(json, len, JSON_DECODE_ANY, &je);
	if (docs == NULL)
		return peftio_error_set(err, PEFTIO_EFORMAT, "JSON text, line "
		    "%d: %s", je.line, je.text);
	if (!json_is_array(docs)) {
		json_decref(docs);
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "JSON text: not a list of documents");
	}
	if (!yaml_emitter_initialize(&e)) {
		json_decref(docs);
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	}
	yaml_emitter_set_output(&e, ybuf_write, &b);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_width(&e, 1 << 20);
	if (emit(&e, docs) != 0 || yaml_emitter_flush(&e) == 0) {
		rc = b.nomem ? peftio_error_set(err, PEFTIO_ENOMEM,
		    "out of memory") : peftio_error_set(err, PEFTIO_EINVAL,
		    "writing YAML: %s", e.problem != NULL ? e.problem :
		    "emitter error");
		free(b.p);
	} else if (b.p == NULL && (b.p = calloc(1, 1)) == NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	else {
		*out = (char *)b.p;
		*outlen = b.len;
	}
	yaml_emitter_delete(&e);
	json_decref(docs);
	return rc;
}
