/*
 * pyjson.c - JSON text exactly as Python's json.dumps writes it.
 *
 * transformers writes config.json with json.dumps(d, indent=2,
 * sort_keys=True) and bitsandbytes writes its quant_state blob with
 * json.dumps(d) (", " and ": " separators, insertion order).  Numbers
 * are what makes this worth a module: Python prints a float as its
 * shortest round-trip repr ("1e-06", "6.0", "0.051740068942308426").
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"
#include "text.h"

void
peftio_py_repr_double(double v, char *buf, size_t len)
{
	char tmp[64], digits[32];
	int prec, exp10, nd, i;
	char *e, *p;
	size_t o = 0;

	if (isnan(v)) {
		snprintf(buf, len, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(buf, len, v > 0 ? "Infinity" : "-Infinity");
		return;
	}
	if (v == 0) {
		snprintf(buf, len, signbit(v) ? "-0.0" : "0.0");
		return;
	}
	/* Shortest %e form that reads back as the same double. */
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	/* tmp is [-]d[.ddd]e[+-]XX: collect digits and exponent. */
	p = tmp;
	if (*p == '-') {
		if (o + 1 < len)
			buf[o++] = '-';
		p++;
	}
	e = strchr(p, 'e');
	exp10 = atoi(e + 1);
	for (nd = 0; p < e; p++)
		if (*p >= '0' && *p <= '9')
			digits[nd++] = *p;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';

#define PUT(c)	do { if (o + 1 < len) buf[o++] = (c); } while (0)
	if (exp10 >= -4 && exp10 < 16) {
		if (exp10 < 0) {
			PUT('0');
			PUT('.');
			for (i = 0; i < -exp10 - 1; i++)
				PUT('0');
			for (i = 0; i < nd; i++)
				PUT(digits[i]);
		} else {
			for (i = 0; i <= exp10; i++)
				PUT(i < nd ? digits[i] : '0');
			PUT('.');
			if (nd > exp10 + 1)
				for (i = exp10 + 1; i < nd; i++)
					PUT(digits[i]);
			else
				PUT('0');
		}
		buf[o] = '\0';
	} else {
		PUT(digits[0]);
		if (nd > 1) {
			PUT('.');
			for (i = 1; i < nd; i++)
				PUT(digits[i]);
		}
		buf[o] = '\0';
		snprintf(buf + o, len - o, "e%c%02d", exp10 < 0 ? '-' : '+',
		    abs(exp10));
	}
#undef PUT
}

static int
cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
newline(struct peftio_sbuf *sb, int indent, int depth)
{
	int i;

	if (indent < 0)
		return;
	peftio_sb_add(sb, "\n", 1);
	for (i = 0; i < indent * depth; i++)
		peftio_sb_add(sb, " ", 1);
}

static void
dump(struct peftio_sbuf *sb, const json_t *v, int indent, int sort, int depth)
{
	const char *sep = indent >= 0 ? "," : ", ";
	const char **keys;
	const char *key;
	json_t *val;
	char num[64];
	size_t i, n;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		n = json_object_size(v);
		if (n == 0) {
			peftio_sb_str(sb, "{}");
			return;
		}
		if ((keys = calloc(n, sizeof(*keys))) == NULL) {
			sb->oom = 1;
			return;
		}
		i = 0;
		json_object_foreach((json_t *)v, key, val)
			keys[i++] = key;
		if (sort)
			qsort(keys, n, sizeof(*keys), cmp_keys);
		peftio_sb_str(sb, "{");
		for (i = 0; i < n; i++) {
			if (i > 0)
				peftio_sb_str(sb, sep);
			newline(sb, indent, depth + 1);
			peftio_sb_json(sb, keys[i], strlen(keys[i]), 1);
			peftio_sb_str(sb, ": ");
			dump(sb, json_object_get(v, keys[i]), indent, sort,
			    depth + 1);
		}
		free(keys);
		newline(sb, indent, depth);
		peftio_sb_str(sb, "}");
		return;
	case JSON_ARRAY:
		n = json_array_size(v);
		if (n == 0) {
			peftio_sb_str(sb, "[]");
			return;
		}
		peftio_sb_str(sb, "[");
		for (i = 0; i < n; i++) {
			if (i > 0)
				peftio_sb_str(sb, sep);
			newline(sb, indent, depth + 1);
			dump(sb, json_array_get(v, i), indent, sort, depth + 1);
		}
		newline(sb, indent, depth);
		peftio_sb_str(sb, "]");
		return;
	case JSON_STRING:
		peftio_sb_json(sb, json_string_value(v), json_string_length(v),
		    1);
		return;
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(v));
		peftio_sb_str(sb, num);
		return;
	case JSON_REAL:
		peftio_py_repr_double(json_real_value(v), num, sizeof(num));
		peftio_sb_str(sb, num);
		return;
	case JSON_TRUE:
		peftio_sb_str(sb, "true");
		return;
	case JSON_FALSE:
		peftio_sb_str(sb, "false");
		return;
	case JSON_NULL:
		peftio_sb_str(sb, "null");
		return;
	}
}

char *
peftio_json_pydumps(const json_t *v, int indent, int sort_keys, size_t *len)
{
	struct peftio_sbuf sb = { NULL, 0, 0, 0 };

	dump(&sb, v, indent, sort_keys, 0);
	if (indent >= 0)
		peftio_sb_add(&sb, "\n", 1);
	if (sb.oom || sb.p == NULL) {
		free(sb.p);
		return NULL;
	}
	if (len != NULL)
		*len = sb.len;
	return sb.p;
}
