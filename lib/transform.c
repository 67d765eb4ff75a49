/*
 * transform.c - what every tool that rewrites a checkpoint does: decide
 * between a file and a directory output, declare every output tensor,
 * compute them one input tensor at a time while a background thread
 * writes the result before, rewrite config.json, copy the model's other
 * files and commit.  The tool says, per input tensor, what becomes of it.
 *
 * Tensors copied or converted unchanged take no part in the computing:
 * a second thread, the copy lane, writes them all in file order while
 * the caller computes the others, so that a model's embeddings and
 * output layer (often a quarter of a quantized model's bytes) go to
 * the disk while the layers are quantized or merged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "peftio_private.h"
#include "text.h"

/* Two job slots: one being written by the background thread while the
 * caller fills the other. */
struct peftio_xf {
	struct peftio_ckpt	*in;
	struct peftio_ckptw	*w;
	struct peftio_xf_item	*items;
	struct peftio_bg	*bg;
	struct peftio_xf_job	 slot[2];
	int			(*slot_fn[2])(struct peftio_xf_job *);
	int			 cur;
	int			 as_dir;
	struct peftio_bg	*lane;	/* the copies; NULL: none */
	int			 stop;	/* atomic: the lane is to stop */
	struct peftio_error	 lane_err;
	/* Atomic, for the progress reports: what the lane has copied,
	 * the tensor it copies, whether it has finished. */
	uint64_t		 copied;
	size_t			 lane_at;
	int			 lane_done;
};

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s != NULL && s[1] != '\0' ? s + 1 : path;
}

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int
peftio_output_is_dir(const struct peftio_ckpt *in, const char *output)
{
	return peftio_ckpt_dir(in) != NULL && strcmp(output, "-") != 0 &&
	    !ends_with(output, ".safetensors");
}

struct peftio_ckpt *
peftio_xf_input(const struct peftio_xf *x)
{
	return x->in;
}

struct peftio_ckptw *
peftio_xf_writer(const struct peftio_xf *x)
{
	return x->w;
}

int
peftio_xf_declare(struct peftio_xf *x, size_t i, const char *name,
    enum peftio_dtype dt, int ndim, const uint64_t *shape,
    struct peftio_error *err)
{
	return peftio_ckptw_declare(x->w, x->items[i].shard, name, dt, ndim,
	    shape, err);
}

/* ------------------------------------------------------------------ */
/* The background writer                                               */

static int
run_slot(void *arg)
{
	struct peftio_xf_job *j = arg;
	struct peftio_xf *x = j->xf;

	return x->slot_fn[j - x->slot](j);
}

struct peftio_xf_job *
peftio_xf_slot(struct peftio_xf *x)
{
	struct peftio_xf_job *j = &x->slot[x->cur];

	j->w = x->w;
	j->xf = x;
	return j;
}

int
peftio_xf_submit(struct peftio_xf *x, int (*fn)(struct peftio_xf_job *),
    struct peftio_error *err)
{
	int rc;

	/* The job before this one ran in the other slot. */
	if ((rc = peftio_bg_wait(x->bg)) != 0) {
		*err = x->slot[x->cur ^ 1].err;
		return rc;
	}
	x->slot_fn[x->cur] = fn;
	(void)peftio_bg_run(x->bg, run_slot, &x->slot[x->cur]);
	x->cur ^= 1;
	return 0;
}

int
peftio_xf_drain(struct peftio_xf *x, struct peftio_error *err)
{
	int rc;

	if (x->bg != NULL && (rc = peftio_bg_wait(x->bg)) != 0) {
		*err = x->slot[x->cur ^ 1].err;
		return rc;
	}
	return 0;
}

void *
peftio_xf_job_buffer(struct peftio_xf_job *j, uint64_t off, uint64_t len)
{
	if (len > SIZE_MAX)
		return NULL;
	j->len = len;
	j->data = peftio_scratch_placed(&j->buf[0], (size_t)len,
	    peftio_ckptw_start(j->w, j->name) + off);
	return j->data;
}

int
peftio_xf_job_write(struct peftio_xf_job *j)
{
	return peftio_ckptw_write(j->w, j->name, j->data, j->len, &j->err);
}

static int
is_copy(const struct peftio_xf_item *it)
{
	return it->act == PEFTIO_XF_COPY || it->act == PEFTIO_XF_CONVERT;
}

/* The copy lane: every tensor copied or converted, in file order. */
static int
run_lane(void *arg)
{
	struct peftio_xf *x = arg;
	const struct peftio_tensor_info *ti;
	size_t i, n = peftio_ckpt_count(x->in);
	int rc;

	for (i = 0, rc = 0; i < n && rc == 0; i++) {
		if (!is_copy(&x->items[i]))
			continue;
		if (__atomic_load_n(&x->stop, __ATOMIC_RELAXED)) {
			rc = PEFTIO_EINVAL;	/* not reported */
			break;
		}
		ti = peftio_ckpt_tensor(x->in, i);
		__atomic_store_n(&x->lane_at, i, __ATOMIC_RELAXED);
		rc = peftio_ckptw_copy(x->w, ti->name, x->in, i,
		    x->items[i].act == PEFTIO_XF_COPY ? ti->dtype :
		    x->items[i].dt, &x->lane_err);
		__atomic_fetch_add(&x->copied, ti->nbytes, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&x->lane_done, 1, __ATOMIC_RELEASE);
	return rc;
}

/* While the lane finishes, the progress of its copies, every 10 ms. */
static void
lane_progress(struct peftio_xf *x, const struct peftio_xf_ops *ops,
    void *ctx, uint64_t done, uint64_t total)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	size_t at;

	if (x->lane == NULL || ops->progress == NULL)
		return;
	while (!__atomic_load_n(&x->lane_done, __ATOMIC_ACQUIRE)) {
		at = __atomic_load_n(&x->lane_at, __ATOMIC_RELAXED);
		ops->progress(ctx, done + __atomic_load_n(&x->copied,
		    __ATOMIC_RELAXED), total, peftio_ckpt_tensor(x->in,
		    at)->name);
		nanosleep(&tick, NULL);
	}
}

/* Wait for the copy lane; with stop, make it stop at the next tensor. */
static int
lane_wait(struct peftio_xf *x, int stop, struct peftio_error *err)
{
	int rc;

	if (x->lane == NULL)
		return 0;
	if (stop)
		__atomic_store_n(&x->stop, 1, __ATOMIC_RELAXED);
	if ((rc = peftio_bg_wait(x->lane)) != 0 && !stop)
		*err = x->lane_err;
	return stop ? 0 : rc;
}

/* ------------------------------------------------------------------ */

/* config.json of a directory output, through the caller's hook. */
static int
write_config(struct peftio_xf *x, const struct peftio_xf_ops *ops,
    void *ctx, struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(x->in);
	char *text = NULL, *out = NULL;
	size_t len, outlen = 0;
	int rc;

	if (ops->config == NULL || dir == NULL)
		return 0;
	if ((rc = peftio_read_config(dir, &text, &len, err)) <= 0)
		return rc;
	if ((rc = ops->config(ctx, text, len, &out, &outlen, err)) != 0)
		peftio_error_prefix(err, "%s/config.json", dir);
	else if (out != NULL)
		rc = peftio_ckptw_file(x->w, "config.json", out, outlen, err);
	free(text);
	free(out);
	return rc;
}

/* What follows the tensors: for a directory, config.json through the
 * hook and the model's other files; then the commit and the report. */
static int
finish(struct peftio_xf *x, const struct peftio_xf_ops *ops, void *ctx,
    struct peftio_error *err)
{
	int rc;

	/* An input still arriving must end where its header says. */
	if ((rc = peftio_ckpt_complete(x->in, err)) != 0)
		return rc;
	if (x->as_dir) {
		rc = write_config(x, ops, ctx, err);
		if (rc == 0 && ops->note != NULL)
			peftio_ckptw_set_note(x->w, ops->note, ctx);
		if (rc == 0)
			rc = peftio_ckptw_copy_aux(x->w,
			    peftio_ckpt_dir(x->in), err);
	}
	if (rc == 0)
		rc = peftio_ckptw_commit(x->w, err);
	if (rc == 0 && ops->done != NULL)
		ops->done(ctx, x->w);
	return rc;
}

static int
declare_all(struct peftio_xf *x, const struct peftio_xf_ops *ops, void *ctx,
    uint64_t *total, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_xf_item *it;
	size_t i, n = peftio_ckpt_count(x->in);
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		it = &x->items[i];
		ti = peftio_ckpt_tensor(x->in, i);
		it->shard = x->as_dir ? peftio_ckpt_shard_of(x->in, i) : 0;
		*total += ti->nbytes;
		switch (it->act) {
		case PEFTIO_XF_COPY:
			rc = peftio_ckptw_declare(x->w, it->shard, ti->name,
			    ti->dtype, ti->ndim, ti->shape, err);
			break;
		case PEFTIO_XF_CONVERT:
			rc = peftio_ckptw_declare(x->w, it->shard, ti->name,
			    it->dt, ti->ndim, ti->shape, err);
			break;
		case PEFTIO_XF_CUSTOM:
			rc = ops->declare(x, i, ctx, err);
			break;
		case PEFTIO_XF_SKIP:
			break;
		}
	}
	return rc != 0 ? rc : peftio_ckptw_layout(x->w, err);
}

static int
compute_all(struct peftio_xf *x, const struct peftio_xf_ops *ops, void *ctx,
    uint64_t total, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	struct peftio_xf_item *it;
	size_t i, n = peftio_ckpt_count(x->in);
	uint64_t done = 0;
	int rc = 0;

	for (i = 0; i < n && !is_copy(&x->items[i]); i++)
		;
	x->lane_at = i;
	if (i < n && ((rc = peftio_bg_new(&x->lane, err)) != 0 ||
	    (rc = peftio_bg_run(x->lane, run_lane, x)) != 0))
		return rc;
	/* done: the bytes of the tensors this thread has passed; the
	 * lane counts its own. */
	for (i = 0; i < n && rc == 0; i++) {
		it = &x->items[i];
		ti = peftio_ckpt_tensor(x->in, i);
		if (it->act == PEFTIO_XF_CUSTOM) {
			/* Read the next one in while this one is computed. */
			if (i + 1 < n)
				peftio_ckpt_prefetch(x->in, i + 1);
			if (ops->progress != NULL)
				ops->progress(ctx, done + __atomic_load_n(
				    &x->copied, __ATOMIC_RELAXED), total,
				    ti->name);
			rc = ops->compute(x, i, ctx, err);
		}
		if (!is_copy(it))
			done += ti->nbytes;
	}
	if (rc == 0)
		lane_progress(x, ops, ctx, done, total);
	if (ops->progress != NULL)
		ops->progress(ctx, total, total, NULL);
	if (rc == 0)
		rc = peftio_xf_drain(x, err);
	if (rc == 0)
		rc = lane_wait(x, 0, err);
	else
		(void)lane_wait(x, 1, err);
	return rc;
}

int
peftio_transform(struct peftio_ckpt *in, struct peftio_xf_item *items,
    const struct peftio_xf_ops *ops, void *ctx, const char *output,
    unsigned flags, struct peftio_error *err)
{
	struct peftio_xf x;
	const char **names = NULL;
	size_t s, nshards;
	uint64_t total = 0;
	int rc, k;

	memset(&x, 0, sizeof(x));
	x.in = in;
	x.items = items;
	x.as_dir = peftio_output_is_dir(in, output);
	nshards = x.as_dir ? peftio_ckpt_nshards(in) : 1;
	if (x.as_dir) {
		if ((names = calloc(nshards, sizeof(*names))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		for (s = 0; s < nshards; s++)
			names[s] = base_name(peftio_ckpt_shard_name(in, s));
	}
	rc = peftio_ckptw_create(&x.w, output, x.as_dir, nshards, names, flags,
	    err);
	free(names);
	if (rc == 0)
		rc = peftio_bg_new(&x.bg, err);
	if (rc == 0)
		rc = declare_all(&x, ops, ctx, &total, err);
	if (rc == 0)
		rc = compute_all(&x, ops, ctx, total, err);
	if (rc == 0)
		rc = finish(&x, ops, ctx, err);
	/* No write may run while the output is removed. */
	peftio_bg_free(x.bg);
	peftio_bg_free(x.lane);
	for (s = 0; s < 2; s++)
		for (k = 0; k < PEFTIO_XF_NBUF; k++)
			peftio_scratch_free(&x.slot[s].buf[k]);
	peftio_ckptw_free(x.w);
	return rc;
}

/* ------------------------------------------------------------------ */
/* A directory written shard by shard: check it, then finish it        */

struct peftio_xf_check {
	struct peftio_ckpt	*in;
	struct peftio_ckpt	*out;
	unsigned char		*seen;	/* per output tensor */
};

static const char *
shard_path(const struct peftio_ckpt *c, size_t s)
{
	return peftio_st_path(peftio_ckpt_shard(c, s));
}

struct peftio_ckpt *
peftio_xf_check_input(const struct peftio_xf_check *chk)
{
	return chk->in;
}

struct peftio_ckpt *
peftio_xf_check_output(const struct peftio_xf_check *chk)
{
	return chk->out;
}

int
peftio_xf_expect_name(struct peftio_xf_check *chk, size_t i,
    const char *name, size_t *k, struct peftio_error *err)
{
	size_t s = peftio_ckpt_shard_of(chk->in, i);
	long f = peftio_ckpt_find(chk->out, name);

	if (f < 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is missing", shard_path(chk->out, s),
		    name);
	if (peftio_ckpt_shard_of(chk->out, (size_t)f) != s)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' belongs in %s", shard_path(chk->out,
		    peftio_ckpt_shard_of(chk->out, (size_t)f)), name,
		    peftio_ckpt_shard_name(chk->out, s));
	chk->seen[f] = 1;
	if (k != NULL)
		*k = (size_t)f;
	return 0;
}

int
peftio_xf_expect(struct peftio_xf_check *chk, size_t i, const char *name,
    enum peftio_dtype dt, int ndim, const uint64_t *shape,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	char got[128], want[128];
	size_t k;
	int rc;

	if ((rc = peftio_xf_expect_name(chk, i, name, &k, err)) != 0)
		return rc;
	ti = peftio_ckpt_tensor(chk->out, k);
	if (ti->dtype != dt || ti->ndim != ndim ||
	    memcmp(ti->shape, shape, (size_t)ndim * sizeof(*shape)) != 0)
		return peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s: tensor '%s' is %s %s, not %s %s",
		    shard_path(chk->out, peftio_ckpt_shard_of(chk->in, i)),
		    name, peftio_dtype_name(ti->dtype),
		    peftio_fmt_shape(got, sizeof(got), ti->shape, ti->ndim),
		    peftio_dtype_name(dt),
		    peftio_fmt_shape(want, sizeof(want), shape, ndim));
	return 0;
}

/*
 * The shards in out must be what the transform would have written:
 * every planned tensor in its shard with its dtype and shape, and
 * nothing else.  Headers only; the payloads are not read.
 */
static int
check_shards(struct peftio_xf_check *chk, struct peftio_xf_item *items,
    const struct peftio_xf_ops *ops, void *ctx, struct peftio_error *err)
{
	const struct peftio_tensor_info *ti;
	size_t i, n = peftio_ckpt_count(chk->in);
	size_t m = peftio_ckpt_count(chk->out);
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		ti = peftio_ckpt_tensor(chk->in, i);
		if (ops->progress != NULL)
			ops->progress(ctx, i, n, ti->name);
		switch (items[i].act) {
		case PEFTIO_XF_COPY:
			rc = peftio_xf_expect(chk, i, ti->name, ti->dtype,
			    ti->ndim, ti->shape, err);
			break;
		case PEFTIO_XF_CONVERT:
			rc = peftio_xf_expect(chk, i, ti->name, items[i].dt,
			    ti->ndim, ti->shape, err);
			break;
		case PEFTIO_XF_CUSTOM:
			rc = ops->expect(chk, i, ctx, err);
			break;
		case PEFTIO_XF_SKIP:
			break;
		}
	}
	for (i = 0; i < m && rc == 0; i++)
		if (!chk->seen[i])
			rc = peftio_error_set(err, PEFTIO_EFORMAT,
			    "%s: tensor '%s' is not from %s",
			    shard_path(chk->out, peftio_ckpt_shard_of(chk->out,
			    i)), peftio_ckpt_tensor(chk->out, i)->name,
			    peftio_ckpt_path(chk->in));
	if (ops->progress != NULL)
		ops->progress(ctx, n, n, NULL);
	return rc;
}

int
peftio_transform_index(struct peftio_ckpt *in, struct peftio_xf_item *items,
    const struct peftio_xf_ops *ops, void *ctx, const char *outdir,
    unsigned flags, struct peftio_error *err)
{
	struct peftio_xf_check chk;
	struct peftio_xf x;
	const char **names;
	size_t s, nshards = peftio_ckpt_nshards(in);
	int rc;

	if (peftio_ckpt_dir(in) == NULL)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "%s: --index-only needs a model directory",
		    peftio_ckpt_path(in));
	if ((names = calloc(nshards, sizeof(*names))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (s = 0; s < nshards; s++)
		names[s] = base_name(peftio_ckpt_shard_name(in, s));
	memset(&chk, 0, sizeof(chk));
	chk.in = in;
	rc = peftio_ckpt_open_shards(&chk.out, outdir, nshards, names, err);
	free(names);
	if (rc != 0)
		return rc;
	if ((chk.seen = calloc(peftio_ckpt_count(chk.out) + 1, 1)) == NULL)
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if (rc == 0)
		rc = check_shards(&chk, items, ops, ctx, err);
	memset(&x, 0, sizeof(x));
	x.in = in;
	x.items = items;
	x.as_dir = 1;
	if (rc == 0)
		rc = peftio_ckptw_from_shards(&x.w, chk.out, flags, err);
	if (rc == 0)
		rc = finish(&x, ops, ctx, err);
	peftio_ckptw_free(x.w);
	peftio_ckpt_close(chk.out);
	free(chk.seen);
	return rc;
}
