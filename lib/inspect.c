/*
 * inspect.c - what a checkpoint costs: one row per tensor as the model
 * sees it (a 4-bit or 8-bit weight with its companion tensors counted
 * in), its parameters, bytes and pieces, and the totals: bits per
 * parameter, the size before quantization, what double quantization
 * saves.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio_private.h"

static const char *const part_names[PEFTIO_NPARTS] = {
	"codes", "absmax", "nested_absmax", "quant_map", "nested_quant_map",
	"quant_state"
};

/* What tensor i of a checkpoint is to a report. */
enum role { ROLE_PLAIN = 0, ROLE_COMPANION, ROLE_WEIGHT, ROLE_INT8 };

const char *
peftio_inspect_part_name(enum peftio_inspect_part p)
{
	return (unsigned)p < PEFTIO_NPARTS ? part_names[p] : "?";
}

double
peftio_bits_per_param(uint64_t bytes, uint64_t params)
{
	return params ? (double)bytes * 8.0 / (double)params : 0.0;
}

double
peftio_inspect_dq_saving(const struct peftio_inspect *r)
{
	return r->qparams ? (double)r->dq_saved_bits / (double)r->qparams :
	    0.0;
}

const char *
peftio_inspect_dtype(const struct peftio_inspect *r,
    const struct peftio_inspect_row *row)
{
	if (row->int8)
		return "INT8";
	if (row->quantized)
		return row->bw.qs.type == PEFTIO_Q4_FP4 ? "FP4" : "NF4";
	return peftio_dtype_name(peftio_ckpt_tensor(r->c, row->idx)->dtype);
}

const char *
peftio_inspect_qtypes(const struct peftio_inspect *r)
{
	if (r->nquant == 0)
		return NULL;
	if (r->mixed_types)
		return r->nint8 ? "int8 and 4-bit" : "nf4 and fp4";
	return r->qtype == PEFTIO_INSPECT_INT8 ? "int8" :
	    peftio_q4type_name((enum peftio_q4type)r->qtype);
}

static uint64_t
nbytes(struct peftio_ckpt *c, size_t i)
{
	return peftio_ckpt_tensor(c, i)->nbytes;
}

/* Row w, a 4-bit weight: its pieces, and its share of the totals. */
static void
add_weight(struct peftio_inspect *r, struct peftio_inspect_row *w,
    const struct peftio_bnb_weight *bw)
{
	const struct peftio_quant_state *qs = &bw->qs;
	uint64_t nblocks;
	size_t k;

	w->quantized = 1;
	w->bw = *bw;
	w->ndim = qs->ndim;
	w->shape = w->bw.qs.shape;
	w->params = qs->numel;
	w->part[PEFTIO_PART_CODES] = nbytes(r->c, bw->weight);
	w->part[PEFTIO_PART_ABSMAX] = nbytes(r->c, bw->absmax);
	w->part[PEFTIO_PART_QUANT_MAP] = nbytes(r->c, bw->quant_map);
	w->part[PEFTIO_PART_QUANT_STATE] = nbytes(r->c, bw->quant_state);
	if (qs->double_quant) {
		w->part[PEFTIO_PART_NESTED_ABSMAX] = nbytes(r->c,
		    bw->nested_absmax);
		w->part[PEFTIO_PART_NESTED_QUANT_MAP] = nbytes(r->c,
		    bw->nested_quant_map);
		/* the f32 absmax this replaces, less what replaces it */
		nblocks = qs->numel / qs->blocksize +
		    (qs->numel % qs->blocksize != 0);
		r->dq_saved_bits += 8 * ((int64_t)(4 * nblocks) -
		    (int64_t)(w->part[PEFTIO_PART_ABSMAX] +
		    w->part[PEFTIO_PART_NESTED_ABSMAX] +
		    w->part[PEFTIO_PART_NESTED_QUANT_MAP]));
		r->ndq++;
	}
	for (k = 0; k < PEFTIO_NPARTS; k++)
		w->bytes += w->part[k];
	r->params += w->params;
	r->qparams += w->params;
	r->qbytes += w->bytes;
	r->orig_bytes += w->params * (peftio_dtype_bits(qs->dtype) / 8);
	if (r->qtype >= 0 && r->qtype != (int)qs->type)
		r->mixed_types = 1;
	r->qtype = (int)qs->type;
	r->nquant++;
}

/*
 * Row w, an 8-bit weight: 8 + 32 / columns bits, the codes and one f32
 * scale a row (the 1-byte weight_format counts in the file's totals
 * only); its original size in the dtype it dequantizes to (dt).
 */
static void
add_int8(struct peftio_inspect *r, struct peftio_inspect_row *w,
    const struct peftio_bnb8_weight *bw8, enum peftio_dtype dt)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(r->c,
	    bw8->weight);

	w->quantized = 1;
	w->int8 = 1;
	w->bw8 = *bw8;
	w->ndim = ti->ndim;
	w->shape = ti->shape;
	w->params = ti->numel;
	w->part[PEFTIO_PART_CODES] = ti->nbytes;
	w->part[PEFTIO_PART_ABSMAX] = nbytes(r->c, bw8->scb);
	w->bytes = w->part[PEFTIO_PART_CODES] + w->part[PEFTIO_PART_ABSMAX];
	r->params += w->params;
	r->qparams += w->params;
	r->qbytes += w->bytes;
	r->orig_bytes += w->params * (peftio_dtype_bits(dt) / 8);
	if (r->qtype >= 0 && r->qtype != PEFTIO_INSPECT_INT8)
		r->mixed_types = 1;
	r->qtype = PEFTIO_INSPECT_INT8;
	r->nquant++;
	r->nint8++;
}

int
peftio_inspect_ckpt(struct peftio_inspect *r, struct peftio_ckpt *c,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_bnb_weight bw, *bws;
	struct peftio_bnb8_weight bw8, *bw8s;
	struct peftio_inspect_row *row;
	size_t n = peftio_ckpt_count(c), i;
	enum peftio_dtype dt8;
	unsigned char *role;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	r->c = c;
	r->qtype = -1;
	role = calloc(n ? n : 1, sizeof(*role));
	bws = calloc(n ? n : 1, sizeof(*bws));
	bw8s = calloc(n ? n : 1, sizeof(*bw8s));
	r->rows = calloc(n ? n : 1, sizeof(*r->rows));
	if (role == NULL || bws == NULL || bw8s == NULL || r->rows == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "%s: out of memory",
		    peftio_ckpt_path(c));
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((rc = peftio_bnb8_lookup(c, i, &bw8, err)) < 0)
			goto out;
		if (rc > 0) {
			rc = 0;
			bw8s[bw8.weight] = bw8;
			role[bw8.weight] = ROLE_INT8;
			role[bw8.scb] = ROLE_COMPANION;
			if (bw8.format >= 0)
				role[bw8.format] = ROLE_COMPANION;
			continue;
		}
		if ((rc = peftio_bnb_lookup(c, i, &bw, err)) < 0)
			goto out;
		if (rc == 0)
			continue;
		rc = 0;
		bws[bw.weight] = bw;
		role[bw.weight] = ROLE_WEIGHT;
		role[bw.absmax] = role[bw.quant_map] = role[bw.quant_state] =
		    ROLE_COMPANION;
		if (bw.qs.double_quant)
			role[bw.nested_absmax] = role[bw.nested_quant_map] =
			    ROLE_COMPANION;
	}
	dt8 = peftio_bnb8_dtype(c);
	for (i = 0; i < n; i++) {
		ti = peftio_ckpt_tensor(c, i);
		r->bytes += ti->nbytes;
		if (role[i] == ROLE_COMPANION)
			continue;
		row = &r->rows[r->nrows++];
		row->idx = i;
		row->name = ti->name;
		if (role[i] == ROLE_WEIGHT) {
			add_weight(r, row, &bws[i]);
			continue;
		}
		if (role[i] == ROLE_INT8) {
			add_int8(r, row, &bw8s[i], dt8);
			continue;
		}
		row->ndim = ti->ndim;
		row->shape = ti->shape;
		row->params = ti->numel;
		row->bytes = ti->nbytes;
		r->params += row->params;
		r->orig_bytes += row->bytes;
	}
out:
	free(role);
	free(bws);
	free(bw8s);
	if (rc != 0)
		peftio_inspect_free(r);
	return rc;
}

void
peftio_inspect_free(struct peftio_inspect *r)
{
	free(r->rows);
	r->rows = NULL;
	r->nrows = 0;
}
