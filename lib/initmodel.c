/*
 * initmodel.c - a model's LoRA initialisation (PiSSA, OLoRA, LoftQ):
 * the adapter directory and the new base, one weight at a time.
 *
 * Every result is computed before anything is laid out (a 4-bit
 * weight's quant_state blob, whose length the header records, holds a
 * number known only once the weight is quantized), so results wait in
 * an unlinked spool file; memory holds one weight and its work space.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter_write.h"

#define CONFIG_FILE	"adapter_config.json"
#define MODEL_FILE	"adapter_model.safetensors"
/* Elements converted at a time when a weight is read. */
#define READ_CHUNK	(1u << 18)

struct tgt {
	size_t		 idx;		/* in the base */
	char		*module;
	uint64_t	 m, n, k;
	enum peftio_dtype dt;
	uint64_t	 off_a, off_b, off_w;	/* in the spool */
	int		 q4;
	struct peftio_q4_weight qm;	/* sizes only, no buffers */
	struct peftio_bnb_out bo;	/* its quant_state, once declared its
					 * JSON */
	struct peftio_lora_factors st;	/* the figures, no factors */
	int		 rc;
	struct peftio_error err;
};

struct job {
	const struct peftio_init_model_opts *o;
	struct peftio_ckpt *ck;
	int		 spool;
	struct tgt	*t;
	size_t		 nt;
	/* o->progress: bytes done, under lock while in parallel. */
	pthread_mutex_t	 lock;
	uint64_t	 done, total;
};

/* len bytes at off of the spool: every result has its place, known
 * before any is computed, so weights may be done in any order. */
static int
spool_put(struct job *j, const void *buf, uint64_t len, uint64_t off,
    struct peftio_error *err)
{
	if (len > 0 && peftio_pwrite_all(j->spool, buf, len, off) != 0)
		return peftio_error_sys(err, "spool file");
	return 0;
}

/* An unlinked file beside path (the output's file system has room for
 * it), else in TMPDIR. */
static int
spool_open(const char *path)
{
	char *dir, *tmp;
	const char *sl = strrchr(path, '/');
	size_t n = sl == NULL ? 1 : sl == path ? 1 : (size_t)(sl - path);
	int fd = -1;

	if ((dir = malloc(n + sizeof("/.peftio-spool.XXXXXX"))) == NULL)
		return peftio_anon_file();
	if (sl == NULL)
		strcpy(dir, ".");
	else {
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
#ifdef O_TMPFILE
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
	if (fd < 0) {
		tmp = dir + strlen(dir);
		strcpy(tmp, "/.peftio-spool.XXXXXX");
		if ((fd = mkostemp(dir, O_CLOEXEC)) >= 0)
			unlink(dir);
	}
	free(dir);
	return fd >= 0 ? fd : peftio_anon_file();
}

static uint64_t
ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Bytes of t's new base weight in the spool. */
static uint64_t
weight_bytes(const struct tgt *t, int dq)
{
	uint64_t mn = t->m * t->n, nb = ceil_div(mn, 64), len;

	if (t->q4)
		return (mn + 1) / 2 + (dq ? nb + ceil_div(nb, 256) * 4 :
		    nb * 4);
	if (peftio_dtype_nbytes(t->dt, mn, &len) != 0)
		return 0;
	return len;
}

static int
spool_get(struct job *j, void *buf, uint64_t len, uint64_t off,
    struct peftio_error *err)
{
	ssize_t r;
	uint64_t done = 0;

	while (done < len) {
		r = pread(j->spool, (char *)buf + done, len - done,
		    (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return peftio_error_sys(err, "spool file");
		done += (uint64_t)r;
	}
	return 0;
}

/* Weight idx of the base as f32. */
static int
read_f32(struct peftio_ckpt *ck, size_t idx, float *w,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(ck, idx);
	size_t es = peftio_dtype_bits(ti->dtype) / 8;
	uint64_t i, c;
	void *tmp;
	int rc = 0;

	if (ti->dtype == PEFTIO_F32)
		return peftio_ckpt_read(ck, idx, 0, w, ti->nbytes, err);
	if ((tmp = malloc(READ_CHUNK * es)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	for (i = 0; i < ti->numel && rc == 0; i += c) {
		c = PEFTIO_MIN(READ_CHUNK, ti->numel - i);
		if ((rc = peftio_ckpt_read(ck, idx, i * es, tmp, c * es,
		    err)) == 0)
			peftio_to_f32(ti->dtype, tmp, w + i, c);
	}
	free(tmp);
	return rc;
}

/* The n f32 values w stored as dt (in place when dt is F32); *out is
 * w or a new buffer, *len its bytes. */
static int
as_dtype(float *w, uint64_t n, enum peftio_dtype dt, void **out,
    uint64_t *len, struct peftio_error *err)
{
	if (dt == PEFTIO_F32) {
		*out = w;
		*len = n * sizeof(float);
		return 0;
	}
	if (peftio_dtype_nbytes(dt, n, len) != 0 ||
	    (*out = malloc(*len + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	peftio_from_f32(dt, w, *out, n);
	return 0;
}

static int
init_one(struct job *j, struct tgt *t, struct peftio_error *err)
{
	const struct peftio_init_model_opts *o = j->o;
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(j->ck, t->idx);
	struct peftio_lora_factors f;
	struct peftio_q4_weight q;
	struct peftio_init_opts io = o->init;
	uint64_t mn = t->m * t->n, len, off;
	float *w;

	void *buf = NULL;
	int rc;

	memset(&f, 0, sizeof(f));
	memset(&q, 0, sizeof(q));
	if ((w = malloc(mn * sizeof(float))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = read_f32(j->ck, t->idx, w, err)) != 0)
		goto out;
	/* A fixed test matrix per weight, whatever the order. */
	{
		const char *s;
		uint64_t h = 0xcbf29ce484222325ULL ^ o->init.seed;

		for (s = t->module; *s != '\0'; s++)
			h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
		io.seed = h;
	}
	if ((rc = peftio_init_lora(&io, w, t->m, t->n, &f, &q, err)) != 0) {
		peftio_error_prefix(err, "%s: tensor '%s'",
		    peftio_ckpt_path(j->ck), ti->name);
		goto out;
	}
	t->st = f;
	t->st.a = t->st.b = NULL;
	if ((rc = spool_put(j, f.a, f.rank * t->n * sizeof(float), t->off_a,
	    err)) != 0 || (rc = spool_put(j, f.b, t->m * f.rank *
	    sizeof(float), t->off_b, err)) != 0)
		goto out;
	if (t->q4 && o->init.method != PEFTIO_INIT_LOFTQ) {
		/* What a model saved in the base's dtype and then quantized
		 * holds: the residual rounded to that dtype first. */
		if ((rc = as_dtype(w, mn, t->dt, &buf, &len, err)) != 0)
			goto out;
		if (buf != w) {
			peftio_to_f32(t->dt, buf, w, mn);
			free(buf);
		}
		buf = NULL;
		if ((rc = peftio_q4_weight_quantize(&q,
		    (enum peftio_q4type)o->quantize, 64,
		    o->init.double_quant, w, mn, NULL, err)) != 0)
			goto out;
	}
	if (t->q4) {
		off = t->off_w;
		rc = spool_put(j, q.packed, (mn + 1) / 2, off, err);
		off += (mn + 1) / 2;
		if (rc == 0 && q.double_quant) {
			rc = spool_put(j, q.qabsmax, q.nb, off, err);
			off += q.nb;
		} else if (rc == 0)
			rc = spool_put(j, q.absmax, q.nb * sizeof(float), off,
			    err);
		if (rc == 0 && q.double_quant)
			rc = spool_put(j, q.nested, (q.nb + 255) / 256 *
			    sizeof(float), off, err);
		if (rc != 0)
			goto out;
		t->qm = q;
		t->qm.packed = t->qm.qabsmax = NULL;
		t->qm.absmax = t->qm.nested = NULL;
		peftio_q4_weight_state(&q, t->dt, 2, ti->shape, &t->bo.qs);
	} else {
		if ((rc = as_dtype(w, mn, t->dt, &buf, &len, err)) != 0 ||
		    (rc = spool_put(j, buf, len, t->off_w, err)) != 0)
			goto out;
	}
out:
	if (buf != w)
		free(buf);
	free(w);
	peftio_lora_factors_free(&f);
	peftio_q4_weight_free(&q);
	return rc;
}

/* Add bytes to what o->progress was told, then name what comes next
 * (what NULL: nothing yet). */
static void
tell(struct job *j, uint64_t bytes, const char *what)
{
	if (j->o->progress == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	j->done += bytes;
	if (what != NULL)
		j->o->progress(j->o->progress_arg, j->done, j->total, what);
	pthread_mutex_unlock(&j->lock);
}

static void
init_range(void *arg, uint64_t b, uint64_t e)
{
	struct job *j = arg;

	for (; b < e; b++) {
		tell(j, 0, j->t[b].module);
		j->t[b].rc = init_one(j, &j->t[b], &j->t[b].err);
		tell(j, peftio_ckpt_tensor(j->ck, j->t[b].idx)->nbytes, NULL);
	}
}

/* Tensor t's new base weight from the spool into w. */
static int
write_target(struct job *j, struct peftio_ckptw *w, struct tgt *t,
    struct peftio_error *err)
{
	const char *name = peftio_ckpt_tensor(j->ck, t->idx)->name;
	struct peftio_q4_weight q = t->qm;
	uint64_t len, off;
	void *buf;
	int rc;

	if (!t->q4) {
		if ((rc = peftio_dtype_nbytes(t->dt, t->m * t->n, &len)) != 0 ||
		    (buf = malloc(len + 1)) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		if ((rc = spool_get(j, buf, len, t->off_w, err)) == 0)
			rc = peftio_ckptw_write(w, name, buf, len, err);
		free(buf);
		return rc;
	}
	q.packed = malloc((q.n + 1) / 2 + 1);
	q.absmax = malloc(q.nb * sizeof(float) + 1);
	q.qabsmax = malloc(q.nb + 1);
	q.nested = malloc((q.nb + 255) / 256 * sizeof(float) + 1);
	if (q.packed == NULL || q.absmax == NULL || q.qabsmax == NULL ||
	    q.nested == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	off = t->off_w;
	if ((rc = spool_get(j, q.packed, (q.n + 1) / 2, off, err)) != 0)
		goto out;
	off += (q.n + 1) / 2;
	if (q.double_quant) {
		if ((rc = spool_get(j, q.qabsmax, q.nb, off, err)) != 0 ||
		    (rc = spool_get(j, q.nested, (q.nb + 255) / 256 *
		    sizeof(float), off + q.nb, err)) != 0)
			goto out;
	} else if ((rc = spool_get(j, q.absmax, q.nb * sizeof(float), off,
	    err)) != 0)
		goto out;
	rc = peftio_bnb_write_stored(w, name, &t->bo, q.packed,
	    q.double_quant ? (const void *)q.qabsmax : q.absmax, q.nested,
	    err);
out:
	peftio_q4_weight_free(&q);
	return rc;
}

static int
write_factor(struct job *j, struct peftio_ckptw *w, const char *name,
    uint64_t off, uint64_t n, struct peftio_error *err)
{
	float *buf;
	int rc;

	if ((buf = malloc(n * sizeof(float) + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = spool_get(j, buf, n * sizeof(float), off, err)) == 0)
		rc = peftio_ckptw_write(w, name, buf, n * sizeof(float), err);
	free(buf);
	return rc;
}

/* adapter_config.json: what PEFT writes for this LoRA, with
 * init_lora_weights true so that a load does not initialise again. */
static int
adapter_config(struct job *j, const char *name_or_path, char **out,
    size_t *len, struct peftio_error *err)
{
	const char **mods = malloc((j->nt + 1) * sizeof(*mods));
	json_t *c = NULL;
	size_t i;

	if (mods != NULL) {
		for (i = 0; i < j->nt; i++)
			mods[i] = j->t[i].module;
		c = peftio_adapter_lora_config(mods, j->nt, name_or_path,
		    j->o->init.rank, j->o->alpha, NULL, NULL);
	}
	free(mods);
	*out = c != NULL ? peftio_json_pydumps(c, 2, 1, len) : NULL;
	json_decref(c);
	if (*out == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	return 0;
}

/* config.json of the new base (and the name the adapter records). */
static int
model_config(struct job *j, struct peftio_ckptw *w, char **name_or_path,
    struct peftio_error *err)
{
	const char *dir = peftio_ckpt_dir(j->ck);
	char *text = NULL, *out = NULL;
	size_t len, outlen;
	json_t *c, *v;
	int rc, q4 = j->nt > 0 && j->t[0].q4;

	*name_or_path = NULL;
	if (dir == NULL)
		return 0;
	if ((rc = peftio_read_config(dir, &text, &len, err)) <= 0)
		return rc;
	if ((c = json_loadb(text, len, 0, NULL)) != NULL &&
	    json_is_string(v = json_object_get(c, "_name_or_path")) &&
	    json_string_length(v) > 0)
		*name_or_path = strdup(json_string_value(v));
	json_decref(c);
	if (q4) {
		if ((rc = peftio_config_add_quant(text, len, j->t[0].bo.qs.type,
		    j->t[0].bo.qs.double_quant, j->t[0].dt, &out, &outlen,
		    err)) != 0)
			peftio_error_prefix(err, "%s/config.json", dir);
		else
			rc = peftio_ckptw_file(w, "config.json", out, outlen,
			    err);
	} else
		rc = peftio_ckptw_file(w, "config.json", text, len, err);
	free(text);
	free(out);
	return rc;
}

static int
select_default(const struct peftio_init_model_opts *o, const char *module)
{
	return o->select != NULL ? o->select(o->select_arg, module) : 1;
}

static int
exists(const char *path, unsigned flags, struct peftio_error *err)
{
	struct stat sb;

	if (flags & PEFTIO_W_FORCE)
		return 0;
	if (lstat(path, &sb) == 0)
		return peftio_error_set(err, PEFTIO_EEXIST,
		    "%s: already exists (use -f to overwrite)", path);
	return 0;
}

int
peftio_init_model(const char *base, const char *adapter_dir,
    const char *residual_dir, const struct peftio_init_model_opts *o,
    struct peftio_error *err)
{
	struct job j;
	struct peftio_ckptw *wr = NULL, *wa = NULL;
	const char **names = NULL;
	const char *anames[1] = { MODEL_FILE };
	char *name_or_path = NULL, *cfg = NULL, ka[PEFTIO_MAX_NAME];
	char kb[PEFTIO_MAX_NAME];
	long *map = NULL;
	size_t i, n, s, nshards, cfglen;
	uint64_t sh[2], off;
	int rc, q4;

	memset(&j, 0, sizeof(j));
	pthread_mutex_init(&j.lock, NULL);
	j.o = o;
	j.spool = -1;
	q4 = o->init.method == PEFTIO_INIT_LOFTQ || o->quantize >= 0;
	if (o->init.method == PEFTIO_INIT_LOFTQ && o->quantize >= 0 &&
	    (enum peftio_q4type)o->quantize != o->init.qtype)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "LoftQ quantizes with its own type");
	if ((rc = exists(adapter_dir, o->flags, err)) != 0 ||
	    (rc = exists(residual_dir, o->flags, err)) != 0)
		return rc;
	if ((rc = peftio_gpu_rcp_init(err)) != 0 ||
	    (rc = peftio_ckpt_open(&j.ck, base, err)) != 0)
		return rc;
	n = peftio_ckpt_count(j.ck);
	j.t = calloc(n + 1, sizeof(*j.t));
	map = malloc((n + 1) * sizeof(*map));
	if (j.t == NULL || map == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct peftio_tensor_info *ti = peftio_ckpt_tensor(j.ck,
		    i);
		size_t len = strlen(ti->name);
		struct tgt *t;

		map[i] = -1;
		if (strstr(ti->name, PEFTIO_BNB_QUANT_STATE) != NULL) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': already 4-bit quantized (give "
			    "the unquantized model)", base, ti->name);
			goto out;
		}
		if (ti->ndim != 2 || ti->numel == 0 || len <= 7 ||
		    strcmp(ti->name + len - 7, ".weight") != 0 ||
		    (ti->dtype != PEFTIO_F32 && ti->dtype != PEFTIO_F16 &&
		    ti->dtype != PEFTIO_BF16))
			continue;
		t = &j.t[j.nt];
		if ((t->module = strndup(ti->name, len - 7)) == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			goto out;
		}
		if (!select_default(o, t->module)) {
			free(t->module);
			t->module = NULL;
			continue;
		}
		t->idx = i;
		t->m = ti->shape[0];
		t->n = ti->shape[1];
		t->dt = ti->dtype;
		t->q4 = q4;
		if (o->init.rank > PEFTIO_MIN(t->m, t->n)) {
			rc = peftio_error_set(err, PEFTIO_EINVAL,
			    "%s: tensor '%s': rank %llu exceeds min(%llu, "
			    "%llu)", base, ti->name,
			    (unsigned long long)o->init.rank,
			    (unsigned long long)t->m,
			    (unsigned long long)t->n);
			j.nt++;
			goto out;
		}
		map[i] = (long)j.nt++;
	}
	if (j.nt == 0) {
		rc = peftio_error_set(err, PEFTIO_ENOTFOUND,
		    "%s: no 2-D float weight is selected", base);
		goto out;
	}
	if ((j.spool = spool_open(residual_dir)) < 0) {
		rc = peftio_error_sys(err, "%s: cannot create a spool file",
		    residual_dir);
		goto out;
	}
	for (i = 0, off = 0; i < j.nt; i++) {
		j.t[i].k = o->init.rank;
		j.t[i].off_a = off;
		off += j.t[i].k * j.t[i].n * sizeof(float);
		j.t[i].off_b = off;
		off += j.t[i].m * j.t[i].k * sizeof(float);
		j.t[i].off_w = off;
		off += weight_bytes(&j.t[i], o->init.double_quant);
	}
	/* The selected weights, then every tensor of the new base. */
	for (i = 0; i < j.nt; i++)
		j.total += peftio_ckpt_tensor(j.ck, j.t[i].idx)->nbytes;
	for (i = 0; i < n; i++)
		j.total += peftio_ckpt_tensor(j.ck, i)->nbytes;
	if ((rc = peftio_blas_reserve(o->jobs > 0 ? o->jobs : 1, err)) != 0) {
		peftio_error_prefix(err, "%s", base);
		goto out;
	}
	peftio_parallel_for(o->jobs > 0 ? o->jobs : 1, j.nt, 1, init_range,
	    &j);
	for (i = 0; i < j.nt; i++)
		if ((rc = j.t[i].rc) != 0) {
			*err = j.t[i].err;
			goto out;
		}
	if (o->report != NULL)
		for (i = 0; i < j.nt; i++)
			o->report(o->report_arg, j.t[i].module, &j.t[i].st);

	/* The new base, shard for shard as the old one. */
	nshards = peftio_ckpt_dir(j.ck) != NULL ? peftio_ckpt_nshards(j.ck) : 1;
	if ((names = calloc(nshards, sizeof(*names))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	for (s = 0; s < nshards; s++) {
		const char *sn = peftio_ckpt_dir(j.ck) != NULL ?
		    peftio_ckpt_shard_name(j.ck, s) : "model.safetensors";
		const char *b = strrchr(sn, '/');

		names[s] = b != NULL && b[1] != '\0' ? b + 1 : sn;
	}
	if ((rc = peftio_ckptw_create(&wr, residual_dir, 1, nshards, names,
	    o->flags, err)) != 0 ||
	    (rc = peftio_ckptw_create(&wa, adapter_dir, 1, 1, anames, o->flags,
	    err)) != 0)
		goto out;
	for (i = 0; i < n && rc == 0; i++) {
		const struct peftio_tensor_info *ti = peftio_ckpt_tensor(j.ck,
		    i);
		size_t sh_i = peftio_ckpt_dir(j.ck) != NULL ?
		    peftio_ckpt_shard_of(j.ck, i) : 0;

		if (map[i] >= 0 && j.t[map[i]].q4)
			rc = peftio_bnb_declare(wr, sh_i, ti->name,
			    &j.t[map[i]].bo, err);
		else
			rc = peftio_ckptw_declare(wr, sh_i, ti->name,
			    ti->dtype, ti->ndim, ti->shape, err);
	}
	for (i = 0; i < j.nt && rc == 0; i++) {
		peftio_adapter_key(ka, sizeof(ka), j.t[i].module, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), j.t[i].module, 1, 0);
		sh[0] = j.t[i].k;
		sh[1] = j.t[i].n;
		rc = peftio_ckptw_declare(wa, 0, ka, PEFTIO_F32, 2, sh, err);
		sh[0] = j.t[i].m;
		sh[1] = j.t[i].k;
		if (rc == 0)
			rc = peftio_ckptw_declare(wa, 0, kb, PEFTIO_F32, 2, sh,
			    err);
	}
	if (rc == 0)
		rc = peftio_ckptw_layout(wr, err);
	if (rc == 0)
		rc = peftio_ckptw_layout(wa, err);
	for (i = 0; i < n && rc == 0; i++) {
		const struct peftio_tensor_info *ti = peftio_ckpt_tensor(j.ck,
		    i);

		tell(&j, 0, ti->name);
		if (map[i] >= 0)
			rc = write_target(&j, wr, &j.t[map[i]], err);
		else
			rc = peftio_ckptw_copy(wr, ti->name, j.ck, i,
			    ti->dtype, err);
		tell(&j, ti->nbytes, NULL);
	}
	if (o->progress != NULL)
		o->progress(o->progress_arg, j.total, j.total, NULL);
	for (i = 0; i < j.nt && rc == 0; i++) {
		peftio_adapter_key(ka, sizeof(ka), j.t[i].module, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), j.t[i].module, 1, 0);
		rc = write_factor(&j, wa, ka, j.t[i].off_a,
		    j.t[i].k * j.t[i].n, err);
		if (rc == 0)
			rc = write_factor(&j, wa, kb, j.t[i].off_b,
			    j.t[i].m * j.t[i].k, err);
	}
	if (rc == 0)
		rc = model_config(&j, wr, &name_or_path, err);
	if (rc == 0 && peftio_ckpt_dir(j.ck) != NULL)
		rc = peftio_ckptw_copy_aux(wr, peftio_ckpt_dir(j.ck), err);
	if (rc == 0)
		rc = adapter_config(&j, name_or_path, &cfg, &cfglen, err);
	if (rc == 0)
		rc = peftio_ckptw_file(wa, CONFIG_FILE, cfg, cfglen, err);
	if (rc == 0)
		rc = peftio_ckptw_commit(wr, err);
	if (rc == 0)
		rc = peftio_ckptw_commit(wa, err);
out:
	peftio_ckptw_free(wr);
	peftio_ckptw_free(wa);
	if (j.spool >= 0)
		close(j.spool);
	if (j.t != NULL)
		for (i = 0; i < j.nt; i++) {
			free(j.t[i].module);
			peftio_bnb_out_free(&j.t[i].bo);
		}
	free(j.t);
	free(map);
	free(names);
	free(cfg);
	free(name_or_path);
	peftio_ckpt_close(j.ck);
	pthread_mutex_destroy(&j.lock);
	return rc;
}
