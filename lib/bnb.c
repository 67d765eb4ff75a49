/*
 * bnb.c - the bitsandbytes on-disk form of a 4-bit weight: the JSON
 * quant_state blob and the quantization_config block of config.json
 * (bnb-nf4.md sections 5 and 6).
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

const char *
peftio_q4type_name(enum peftio_q4type t)
{
	return t == PEFTIO_Q4_FP4 ? "fp4" : "nf4";
}

int
peftio_q4type_parse(const char *s)
{
	if (strcmp(s, "nf4") == 0)
		return PEFTIO_Q4_NF4;
	if (strcmp(s, "fp4") == 0)
		return PEFTIO_Q4_FP4;
	return -1;
}

/*
 * json.dumps() of QuantState.as_dict(packed=True)'s non-tensor part:
 * {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
 *  "shape": [128, 344], "nested_blocksize": 256, "nested_dtype":
 *  "float32", "nested_offset": 0.051740068942308426}
 */
int
peftio_quant_state_json(const struct peftio_quant_state *qs, char **json,
    size_t *len, struct peftio_error *err)
{
	json_t *o, *shape;
	const char *dname;
	char *s;
	int i;

	dname = peftio_dtype_torch_name(qs->dtype);
	if (dname == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "quant_state: dtype %d has no torch name", (int)qs->dtype);
	o = json_object();
	shape = json_array();
	if (o == NULL || shape == NULL)
		goto oom;
	for (i = 0; i < qs->ndim; i++)
		json_array_append_new(shape,
		    json_integer((json_int_t)qs->shape[i]));
	json_object_set_new(o, "quant_type",
	    json_string(peftio_q4type_name(qs->type)));
	json_object_set_new(o, "blocksize",
	    json_integer((json_int_t)qs->blocksize));
	json_object_set_new(o, "dtype", json_string(dname));
	json_object_set_new(o, "shape", shape);
	shape = NULL;
	if (qs->double_quant) {
		json_object_set_new(o, "nested_blocksize",
		    json_integer((json_int_t)qs->nested_blocksize));
		json_object_set_new(o, "nested_dtype", json_string("float32"));
		json_object_set_new(o, "nested_offset",
		    json_real((double)qs->nested_offset));
	}
	s = peftio_json_pydumps(o, -1, 0, len);
	json_decref(o);
	if (s == NULL)
		goto oom;
	*json = s;
	return 0;
oom:
	json_decref(o);
	json_decref(shape);
	return peftio_error_set(err, PEFTIO_ENOMEM, "quant_state: out of memory");
}

static int
get_uint(json_t *o, const char *key, uint64_t *v, struct peftio_error *err)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "quant_state: \"%s\" is missing or not a non-negative "
		    "integer", key);
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

int
peftio_quant_state_parse(const void *buf, size_t len,
    struct peftio_quant_state *qs, struct peftio_error *err)
{
	static const char *const known[] = {
		"quant_type", "blocksize", "dtype", "shape",
		"nested_blocksize", "nested_dtype", "nested_offset"
	};
	json_error_t jerr;
	json_t *o, *j, *d;
	const char *key;
	size_t i, k;
	int rc = PEFTIO_EFORMAT, t;
	uint64_t n;

	memset(qs, 0, sizeof(*qs));
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (o == NULL || !json_is_object(o)) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "quant_state: not a JSON object%s%s",
		    o == NULL ? ": " : "", o == NULL ? jerr.text : "");
		goto out;
	}
	json_object_foreach(o, key, j) {
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strcmp(key, known[k]) == 0)
				break;
		if (k == sizeof(known) / sizeof(known[0])) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "quant_state: unknown key \"%s\"", key);
			goto out;
		}
	}
	j = json_object_get(o, "quant_type");
	if (!json_is_string(j) ||
	    (t = peftio_q4type_parse(json_string_value(j))) < 0) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "quant_state: \"quant_type\" must be \"nf4\" or \"fp4\"");
		goto out;
	}
	qs->type = (enum peftio_q4type)t;
	if (get_uint(o, "blocksize", &qs->blocksize, err) != 0)
		goto out;
	if (!peftio_q4_blocksize_ok(qs->blocksize)) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "quant_state: blocksize %llu is not one of 32, 64, ..., "
		    "4096", (unsigned long long)qs->blocksize);
		goto out;
	}
	j = json_object_get(o, "dtype");
	if (!json_is_string(j) ||
	    (t = peftio_dtype_parse_torch(json_string_value(j))) < 0 ||
	    !(t == PEFTIO_F32 || t == PEFTIO_F16 || t == PEFTIO_BF16)) {
		peftio_error_set(err, PEFTIO_EFORMAT, "quant_state: \"dtype\" "
		    "must be float32, float16 or bfloat16");
		goto out;
	}
	qs->dtype = (enum peftio_dtype)t;
	j = json_object_get(o, "shape");
	if (!json_is_array(j) || json_array_size(j) > PEFTIO_MAX_DIMS) {
		peftio_error_set(err, PEFTIO_EFORMAT,
		    "quant_state: \"shape\" must be a list of at most %d "
		    "integers", PEFTIO_MAX_DIMS);
		goto out;
	}
	qs->ndim = (int)json_array_size(j);
	qs->numel = 1;
	json_array_foreach(j, i, d) {
		if (!json_is_integer(d) || json_integer_value(d) < 0) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "quant_state: \"shape\" holds a value that is not "
			    "a non-negative integer");
			goto out;
		}
		qs->shape[i] = (uint64_t)json_integer_value(d);
		if (PEFTIO_MUL_OVERFLOW(qs->numel, qs->shape[i], &n)) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "quant_state: \"shape\" overflows");
			goto out;
		}
		qs->numel = n;
	}
	if (json_object_get(o, "nested_blocksize") != NULL ||
	    json_object_get(o, "nested_offset") != NULL ||
	    json_object_get(o, "nested_dtype") != NULL) {
		qs->double_quant = 1;
		if (get_uint(o, "nested_blocksize", &qs->nested_blocksize,
		    err) != 0)
			goto out;
		if (qs->nested_blocksize == 0 ||
		    qs->nested_blocksize > (1u << 20)) {
			peftio_error_set(err, PEFTIO_EFORMAT, "quant_state: "
			    "\"nested_blocksize\" %llu is out of range",
			    (unsigned long long)qs->nested_blocksize);
			goto out;
		}
		j = json_object_get(o, "nested_dtype");
		if (!json_is_string(j) ||
		    strcmp(json_string_value(j), "float32") != 0) {
			peftio_error_set(err, PEFTIO_EFORMAT,
			    "quant_state: \"nested_dtype\" must be float32");
			goto out;
		}
		qs->nested_dtype = PEFTIO_F32;
		/* A float32 on the GPU: a double beyond its range has no
		 * conversion (and would make the offset infinite). */
		j = json_object_get(o, "nested_offset");
		if (!json_is_number(j) || !(fabs(json_number_value(j)) <=
		    FLT_MAX)) {
			peftio_error_set(err, PEFTIO_EFORMAT, "quant_state: "
			    "\"nested_offset\" must be a finite float32");
			goto out;
		}
		qs->nested_offset = (float)json_number_value(j);
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* ------------------------------------------------------------------ */
/* 4-bit weights inside a checkpoint                                   */

static int	storage_ok(enum peftio_dtype dt);

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Index of "w" + suffix with the expected dtype and element count. */
static int
companion(struct peftio_ckpt *c, const char *w, const char *suffix,
    enum peftio_dtype dt, uint64_t numel, size_t *out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	size_t n = strlen(w) + strlen(suffix) + 1;
	char *k = malloc(n);
	long i;
	int rc = 0;

	if (k == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	snprintf(k, n, "%s%s", w, suffix);
	if ((i = peftio_ckpt_find(c, k)) < 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': 4-bit weight without %s",
		    peftio_ckpt_path(c), w, k);
	} else {
		ti = peftio_ckpt_tensor(c, (size_t)i);
		if (ti->dtype != dt || ti->numel != numel)
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s': %s is %s with %llu elements, "
			    "but the quant_state needs %s with %llu",
			    peftio_ckpt_path(c), w, k,
			    peftio_dtype_name(ti->dtype),
			    (unsigned long long)ti->numel,
			    peftio_dtype_name(dt), (unsigned long long)numel);
		*out = (size_t)i;
	}
	free(k);
	return rc;
}

int
peftio_bnb_lookup(struct peftio_ckpt *c, size_t i,
    struct peftio_bnb_weight *bw, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(c, i);
	const char *p, *type;
	const void *data;
	uint64_t nb;
	char *w;
	long wi;
	int rc;

	p = strstr(ti->name, PEFTIO_BNB_QUANT_STATE);
	if (p == NULL)
		return 0;
	type = p + strlen(PEFTIO_BNB_QUANT_STATE);
	if (strcmp(type, "nf4") != 0 && strcmp(type, "fp4") != 0)
		return 0;
	memset(bw, 0, sizeof(*bw));
	bw->quant_state = i;
	if ((w = strndup(ti->name, (size_t)(p - ti->name))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = peftio_ckpt_data(c, i, &data, err)) != 0)
		goto out;
	if ((rc = peftio_quant_state_parse(data, ti->nbytes, &bw->qs,
	    err)) != 0) {
		peftio_error_prefix(err, "%s: tensor '%s'", peftio_ckpt_path(c),
		    ti->name);
		goto out;
	}
	if (strcmp(type, peftio_q4type_name(bw->qs.type)) != 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': quant_type \"%s\" does not match the key",
		    peftio_ckpt_path(c), ti->name,
		    peftio_q4type_name(bw->qs.type));
		goto out;
	}
	if ((wi = peftio_ckpt_find(c, w)) < 0) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' has a quant_state but no packed weight",
		    peftio_ckpt_path(c), w);
		goto out;
	}
	bw->weight = (size_t)wi;
	ti = peftio_ckpt_tensor(c, bw->weight);
	/* U8, or the same bytes as bnb_4bit_quant_storage elements. */
	if (!storage_ok(ti->dtype) || ti->nbytes != (bw->qs.numel + 1) / 2) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s': %s with %llu elements, but its "
		    "quant_state's shape needs %llu bytes of U8 (or of BF16, "
		    "F16 or F32 storage)",
		    peftio_ckpt_path(c), w, peftio_dtype_name(ti->dtype),
		    (unsigned long long)ti->numel,
		    (unsigned long long)((bw->qs.numel + 1) / 2));
		goto out;
	}
	bw->storage = ti->dtype;
	nb = ceil_div(bw->qs.numel, bw->qs.blocksize);
	rc = companion(c, w, PEFTIO_BNB_ABSMAX,
	    bw->qs.double_quant ? PEFTIO_U8 : PEFTIO_F32, nb, &bw->absmax, err);
	if (rc == 0)
		rc = companion(c, w, PEFTIO_BNB_QUANT_MAP, PEFTIO_F32, 16,
		    &bw->quant_map, err);
	if (rc == 0 && bw->qs.double_quant)
		rc = companion(c, w, PEFTIO_BNB_NESTED_ABSMAX, PEFTIO_F32,
		    ceil_div(nb, bw->qs.nested_blocksize), &bw->nested_absmax,
		    err);
	if (rc == 0 && bw->qs.double_quant)
		rc = companion(c, w, PEFTIO_BNB_NESTED_QUANT_MAP, PEFTIO_F32,
		    256, &bw->nested_quant_map, err);
out:
	free(w);
	return rc == 0 ? 1 : rc;
}

struct deq_job {
	const float	*code;
	const uint8_t	*packed;
	const float	*absmax;
	uint64_t	 n, bs;
	enum peftio_dtype dt;
	void		*out;
};

static void
deq_range(void *arg, uint64_t b, uint64_t e)
{
	struct deq_job *j = arg;

	peftio_q4_dequantize(j->code, j->packed, j->absmax, j->n, j->bs, b, e,
	    j->dt, j->out);
}

uint64_t
peftio_bnb_part_align(const struct peftio_bnb_weight *bw)
{
	const struct peftio_quant_state *qs = &bw->qs;

	return qs->blocksize * (qs->double_quant ? qs->nested_blocksize : 1);
}

int
peftio_bnb_dequantize(struct peftio_ckpt *c, const struct peftio_bnb_weight *bw,
    enum peftio_dtype dt, void *out, unsigned nthreads,
    struct peftio_error *err)
{
	return peftio_bnb_dequantize_part(c, bw, dt, out, 0, bw->qs.numel,
	    nthreads, err);
}

int
peftio_bnb_dequantize_part(struct peftio_ckpt *c,
    const struct peftio_bnb_weight *bw, enum peftio_dtype dt, void *out,
    uint64_t e0, uint64_t n, unsigned nthreads, struct peftio_error *err)
{
	const struct peftio_quant_state *qs = &bw->qs;
	uint64_t b0, nb, nn, n0;
	const unsigned char *packed, *am, *code, *nested, *ncode;
	float qcode[16], nqcode[256], *absmax, *nest;
	struct deq_job j;
	int rc;

	if (dt != PEFTIO_F32 && dt != PEFTIO_F16 && dt != PEFTIO_BF16)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "dequantize: output dtype must be F32, F16 or BF16");
	if (e0 % peftio_bnb_part_align(bw) != 0 || e0 > qs->numel ||
	    n > qs->numel - e0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "dequantize: elements %llu+%llu are not a part of %llu",
		    (unsigned long long)e0, (unsigned long long)n,
		    (unsigned long long)qs->numel);
	b0 = e0 / qs->blocksize;
	nb = ceil_div(n, qs->blocksize);
	if ((rc = peftio_ckpt_data(c, bw->weight, (const void **)&packed,
	    err)) != 0 ||
	    (rc = peftio_ckpt_data(c, bw->absmax, (const void **)&am,
	    err)) != 0 ||
	    (rc = peftio_ckpt_data(c, bw->quant_map, (const void **)&code,
	    err)) != 0)
		return rc;
	memcpy(qcode, code, sizeof(qcode));
	if ((absmax = malloc(nb * sizeof(float) + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (qs->double_quant) {
		n0 = b0 / qs->nested_blocksize;
		nn = ceil_div(nb, qs->nested_blocksize);
		if ((rc = peftio_ckpt_data(c, bw->nested_absmax,
		    (const void **)&nested, err)) != 0 ||
		    (rc = peftio_ckpt_data(c, bw->nested_quant_map,
		    (const void **)&ncode, err)) != 0) {
			free(absmax);
			return rc;
		}
		if ((nest = malloc(nn * sizeof(float))) == NULL) {
			free(absmax);
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		}
		/* Tensors in a file need not be aligned: copy. */
		memcpy(nest, nested + n0 * sizeof(float), nn * sizeof(float));
		memcpy(nqcode, ncode, sizeof(nqcode));
		peftio_dq_dequantize(nqcode, am + b0, nest, qs->nested_offset,
		    nb, qs->nested_blocksize, absmax);
		free(nest);
	} else
		memcpy(absmax, am + b0 * sizeof(float), nb * sizeof(float));
	j.code = qcode;
	j.packed = packed + e0 / 2;
	j.absmax = absmax;
	j.n = n;
	j.bs = qs->blocksize;
	j.dt = dt;
	j.out = out;
	peftio_parallel_for(nthreads, nb, 4096, deq_range, &j);
	free(absmax);
	return 0;
}

long
peftio_bnb_group(struct peftio_ckpt *c, struct peftio_xf_item *xi,
    struct peftio_bnb_weight *bw, struct peftio_bnb8_weight *bw8,
    struct peftio_error *err)
{
	struct peftio_bnb_weight w;
	struct peftio_bnb8_weight w8;
	size_t i, n = peftio_ckpt_count(c);
	long nw = 0;
	int rc;

	for (i = 0; i < n; i++)
		xi[i].act = PEFTIO_XF_COPY;
	for (i = 0; i < n && bw8 != NULL; i++) {
		if ((rc = peftio_bnb8_lookup(c, i, &w8, err)) < 0)
			return rc;
		if (rc == 0)
			continue;
		bw8[w8.weight] = w8;
		xi[w8.weight].act = PEFTIO_XF_CUSTOM;
		xi[w8.scb].act = PEFTIO_XF_SKIP;
		if (w8.format >= 0)
			xi[w8.format].act = PEFTIO_XF_SKIP;
		nw++;
	}
	for (i = 0; i < n; i++) {
		if ((rc = peftio_bnb_lookup(c, i, &w, err)) < 0)
			return rc;
		if (rc == 0)
			continue;
		bw[w.weight] = w;
		xi[w.weight].act = PEFTIO_XF_CUSTOM;
		xi[w.quant_state].act = PEFTIO_XF_SKIP;
		xi[w.absmax].act = PEFTIO_XF_SKIP;
		xi[w.quant_map].act = PEFTIO_XF_SKIP;
		if (w.qs.double_quant) {
			xi[w.nested_absmax].act = PEFTIO_XF_SKIP;
			xi[w.nested_quant_map].act = PEFTIO_XF_SKIP;
		}
		nw++;
	}
	return nw;
}

/* ------------------------------------------------------------------ */
/* bnb_4bit_quant_storage: the packed codes as elements of another     */
/* dtype                                                               */

int
peftio_bnb_storage_parse(const char *s)
{
	static const struct {
		const char *name;
		enum peftio_dtype dt;
	} t[] = {
		{ "u8", PEFTIO_U8 }, { "uint8", PEFTIO_U8 },
		{ "bf16", PEFTIO_BF16 }, { "bfloat16", PEFTIO_BF16 },
		{ "f16", PEFTIO_F16 }, { "float16", PEFTIO_F16 },
		{ "f32", PEFTIO_F32 }, { "float32", PEFTIO_F32 }
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(s, t[i].name) == 0)
			return t[i].dt;
	return -1;
}

static int
storage_ok(enum peftio_dtype dt)
{
	return dt == PEFTIO_U8 || dt == PEFTIO_BF16 || dt == PEFTIO_F16 ||
	    dt == PEFTIO_F32;
}

/*
 * bitsandbytes allocates ((n + 1) // (2 * itemsize), 1) elements of the
 * storage dtype; when that is less than the (n + 1) / 2 packed bytes the
 * last codes are lost, which is refused here.
 */
int
peftio_bnb_storage_shape(enum peftio_dtype storage, uint64_t numel,
    uint64_t shape[2], struct peftio_error *err)
{
	uint64_t bytes = numel / 2 + (numel & 1), es;

	if (!storage_ok(storage))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "4-bit storage must be U8, BF16, F16 or F32, not %s",
		    peftio_dtype_name(storage));
	es = peftio_dtype_bits(storage) / 8;
	if (bytes % es != 0)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%llu packed bytes are not a whole number of %s "
		    "elements (bitsandbytes would drop the last codes)",
		    (unsigned long long)bytes, peftio_dtype_name(storage));
	shape[0] = bytes / es;
	shape[1] = 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* GPT-2's Conv1D                                                      */

void
peftio_transpose(const void *in, void *out, uint64_t rows, uint64_t cols,
    size_t es)
{
	const unsigned char *s = in;
	unsigned char *d = out;
	uint64_t r, c, r0, c0, r1, c1;

	/* Tiles of 32 x 32 keep both sides in cache. */
	for (r0 = 0; r0 < rows; r0 += 32) {
		r1 = PEFTIO_MIN(rows, r0 + 32);
		for (c0 = 0; c0 < cols; c0 += 32) {
			c1 = PEFTIO_MIN(cols, c0 + 32);
			for (r = r0; r < r1; r++)
				for (c = c0; c < c1; c++)
					memcpy(d + (c * rows + r) * es,
					    s + (r * cols + c) * es, es);
		}
	}
}
