/*
 * resize.c - rank surgery on LoRA adapters without forming the weight
 * delta (QR of both factors, SVD of the small core), and the conversion
 * of a trained PiSSA/OLoRA adapter back to a plain LoRA.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_write.h"

#define CONFIG_FILE	"adapter_config.json"
#define MODEL_FILE	"adapter_model.safetensors"

int
peftio_lora_resize(const float *b, const float *a, uint64_t m, uint64_t n,
    uint64_t r, double scale, const struct peftio_extract_opts *o,
    struct peftio_lora_factors *f, struct peftio_error *err)
{
	float *qb = NULL, *qa = NULL, *rb = NULL, *ra = NULL, *core = NULL;
	float *uc = NULL, *sc = NULL, *vc = NULL, *d = NULL;
	double total = 0.0, acc, kept;
	uint64_t k, i, j;
	int rc;

	memset(f, 0, sizeof(*f));
	f->m = m;
	f->n = n;
	if (m == 0 || n == 0 || r == 0)
		return peftio_error_set(err, PEFTIO_EINVAL, "empty factors");
	if (o->rank == 0 && !(o->energy > 0.0 && o->energy <= 1.0))
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "energy fraction must be in (0, 1]");
	if (o->rank > r)
		return peftio_error_set(err, PEFTIO_EINVAL,
		    "rank %llu exceeds the adapter's rank %llu",
		    (unsigned long long)o->rank, (unsigned long long)r);
	if ((rc = peftio_blas_ready(err)) != 0)
		return rc;
	if (r > m || r > n) {
		/* A thin matrix: delta itself is small. */
		struct peftio_extract_opts x = *o;

		if ((d = malloc(m * n * sizeof(float))) == NULL)
			return peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
		peftio_sgemm(0, 0, m, n, r, (float)scale, b, r, a, n, 0.0f, d,
		    n);
		x.exact = 1;
		rc = peftio_extract_lora(d, m, n, &x, f, err);
		free(d);
		return rc;
	}
	qb = malloc(m * r * sizeof(float));
	qa = malloc(n * r * sizeof(float));
	rb = malloc(r * r * sizeof(float));
	ra = malloc(r * r * sizeof(float));
	core = malloc(r * r * sizeof(float));
	uc = malloc(r * r * sizeof(float));
	sc = malloc(r * sizeof(float));
	vc = malloc(r * r * sizeof(float));
	if (qb == NULL || qa == NULL || rb == NULL || ra == NULL ||
	    core == NULL || uc == NULL || sc == NULL || vc == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	/* b = Qb Rb, a^T = Qa Ra. */
	memcpy(qb, b, m * r * sizeof(float));
	for (i = 0; i < r; i++)
		for (j = 0; j < n; j++)
			qa[j * r + i] = a[i * n + j];
	for (i = 0; i < m * r; i++)
		total += (double)b[i] * b[i];
	for (i = 0; i < n * r; i++)
		total += (double)qa[i] * qa[i];
	if (!isfinite(total)) {
		rc = peftio_error_set(err, PEFTIO_ENONFINITE,
		    "factors are not finite (NaN or Inf)");
		goto out;
	}
	if ((rc = peftio_orth(qb, m, r, err)) != 0 ||
	    (rc = peftio_orth(qa, n, r, err)) != 0)
		goto out;
	peftio_sgemm(1, 0, r, r, m, 1.0f, qb, r, b, r, 0.0f, rb, r);
	peftio_sgemm(1, 1, r, r, n, 1.0f, qa, r, a, n, 0.0f, ra, r);
	/* core = scale Rb Ra^T; delta = Qb core Qa^T. */
	peftio_sgemm(0, 1, r, r, r, (float)scale, rb, r, ra, r, 0.0f, core,
	    r);
	if ((rc = peftio_svd(core, r, r, uc, sc, vc, err)) != 0)
		goto out;
	total = 0.0;
	for (i = 0; i < r; i++)
		total += (double)sc[i] * sc[i];
	f->energy = total;
	if (o->rank != 0)
		k = o->rank;
	else {
		k = PEFTIO_MIN(o->max_rank, r);
		acc = 0.0;
		for (i = 0; i < r; i++) {
			acc += (double)sc[i] * sc[i];
			if (acc >= o->energy * total) {
				k = PEFTIO_MIN(i + 1, k);
				break;
			}
		}
		if (k < o->min_rank)
			k = PEFTIO_MIN(o->min_rank, r);
	}
	if (k == 0)
		k = 1;
	kept = 0.0;
	for (i = 0; i < k; i++)
		kept += (double)sc[i] * sc[i];
	f->rank = k;
	f->kept = total > 0.0 ? PEFTIO_MIN(kept / total, 1.0) : 1.0;
	f->rel_err = total > 0.0 ? sqrt(PEFTIO_MAX(total - kept, 0.0) /
	    total) : 0.0;
	/* Singular values of the core, tail first, for the error: the
	 * difference above loses digits when the tail is tiny. */
	acc = 0.0;
	for (i = r; i > k; i--)
		acc += (double)sc[i - 1] * sc[i - 1];
	f->rel_err = total > 0.0 ? sqrt(acc / total) : 0.0;
	f->a = malloc(k * n * sizeof(float));
	f->b = malloc(m * k * sizeof(float));
	if (f->a == NULL || f->b == NULL) {
		peftio_lora_factors_free(f);
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	/* Uc_k S_k^1/2 into uc (r x k, stride r), S_k^1/2 Vc_k^T into vc. */
	for (j = 0; j < k; j++) {
		float h = sqrtf(sc[j] > 0.0f ? sc[j] : 0.0f);

		for (i = 0; i < r; i++) {
			uc[i * r + j] *= h;
			vc[j * r + i] *= h;
		}
	}
	peftio_sgemm(0, 0, m, k, r, 1.0f, qb, r, uc, r, 0.0f, f->b, k);
	peftio_sgemm(0, 1, k, n, r, 1.0f, vc, r, qa, r, 0.0f, f->a, n);
	rc = 0;
out:
	free(qb);
	free(qa);
	free(rb);
	free(ra);
	free(core);
	free(uc);
	free(sc);
	free(vc);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Adapter directories                                                 */

/* A plain LoRA adapter: its config, tensors and modules. */
struct lmod {
	const char	*name;		/* module path */
	long		 a, b;		/* tensor indices in ck */
	uint64_t	 r, m, n;
	double		 scale;
	enum peftio_dtype dt;
};

struct plain {
	const char	*path;
	struct peftio_adapter *ad;
	struct peftio_ckpt *ck;
	json_t		*cfg;
	struct lmod	*mods;
	size_t		 nmods;
};

static void
plain_close(struct plain *p)
{
	peftio_adapter_free(p->ad);
	peftio_ckpt_close(p->ck);
	json_decref(p->cfg);
	free(p->mods);
	memset(p, 0, sizeof(*p));
}

static int
plain_open(struct plain *p, const char *path, const char *what,
    struct peftio_error *err)
{
	char key[PEFTIO_MAX_NAME], *cp, *text = NULL;
	size_t i, len, nmatched = 0;
	uint64_t r;
	int rc;

	memset(p, 0, sizeof(*p));
	p->path = path;
	if ((rc = peftio_adapter_open(&p->ad, path, err)) != 0)
		goto fail;
	if (peftio_adapter_type(p->ad) != PEFTIO_ADAPTER_LORA) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: not a LoRA adapter (%s takes LoRA only)", path, what);
		goto fail;
	}
	if (peftio_adapter_dora(p->ad)) {
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: a DoRA adapter (%s takes plain LoRA only)", path,
		    what);
		goto fail;
	}
	if ((rc = peftio_ckpt_open(&p->ck, path, err)) != 0)
		goto fail;
	if ((cp = malloc(strlen(path) + sizeof("/" CONFIG_FILE))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto fail;
	}
	sprintf(cp, "%s/%s", path, CONFIG_FILE);
	rc = peftio_read_file(cp, 16u << 20, &text, &len, err);
	free(cp);
	if (rc != 0)
		goto fail;
	p->cfg = json_loadb(text, len, 0, NULL);
	free(text);
	if (!json_is_object(p->cfg)) {
		rc = peftio_error_set(err, PEFTIO_EFORMAT,
		    "%s/%s: not a JSON object", path, CONFIG_FILE);
		goto fail;
	}
	p->nmods = peftio_adapter_nmodules(p->ad);
	if ((p->mods = calloc(p->nmods + 1, sizeof(*p->mods))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < p->nmods; i++) {
		struct lmod *m = &p->mods[i];
		const struct peftio_tensor_info *ta, *tb;

		m->name = peftio_adapter_module(p->ad, i, &r, &m->scale);
		m->r = r;
		peftio_adapter_key(key, sizeof(key), m->name, 0, 0);
		m->a = peftio_ckpt_find(p->ck, key);
		peftio_adapter_key(key, sizeof(key), m->name, 1, 0);
		m->b = peftio_ckpt_find(p->ck, key);
		if (m->a < 0 || m->b < 0) {
			rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
			    "%s: module '%s' is not a Linear LoRA pair (%s "
			    "takes plain LoRA only)", path, m->name, what);
			goto fail;
		}
		ta = peftio_ckpt_tensor(p->ck, (size_t)m->a);
		tb = peftio_ckpt_tensor(p->ck, (size_t)m->b);
		m->n = ta->shape[1];
		m->m = tb->shape[0];
		m->dt = ta->dtype;
		nmatched += 2;
	}
	if (nmatched != peftio_ckpt_count(p->ck)) {
		for (i = 0; i < peftio_ckpt_count(p->ck); i++) {
			const char *nm = peftio_ckpt_tensor(p->ck, i)->name;
			size_t l = strlen(nm);

			if ((l < 15 || (strcmp(nm + l - 15, ".lora_A.weight") &&
			    strcmp(nm + l - 15, ".lora_B.weight"))))
				break;
		}
		rc = peftio_error_set(err, PEFTIO_EUNSUPPORTED,
		    "%s: tensor '%s' is not a LoRA factor (%s takes plain "
		    "LoRA only)", path, i < peftio_ckpt_count(p->ck) ?
		    peftio_ckpt_tensor(p->ck, i)->name : "?", what);
		goto fail;
	}
	return 0;
fail:
	plain_close(p);
	return rc;
}

static int
load_f32(struct peftio_ckpt *ck, long idx, float **out,
    struct peftio_error *err)
{
	const struct peftio_tensor_info *ti = peftio_ckpt_tensor(ck,
	    (size_t)idx);
	const void *d;
	float *x;
	int rc;

	*out = NULL;
	if ((x = malloc(ti->numel * sizeof(float) + 1)) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	if ((rc = peftio_ckpt_data(ck, (size_t)idx, &d, err)) != 0) {
		free(x);
		return rc;
	}
	peftio_to_f32(ti->dtype, d, x, ti->numel);
	peftio_ckpt_release(ck, (size_t)idx);
	*out = x;
	return 0;
}

/* Write the adapter config text (indented, keys sorted) into w. */
static int
add_config(struct peftio_ckptw *w, json_t *cfg, struct peftio_error *err)
{
	size_t len;
	char *s = peftio_json_pydumps(cfg, 2, 1, &len);
	int rc;

	if (s == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	rc = peftio_ckptw_file(w, CONFIG_FILE, s, len, err);
	free(s);
	return rc;
}

static int
resize_module(struct plain *p, size_t i, const struct peftio_extract_opts *x,
    struct peftio_lora_factors *f, struct peftio_error *err)
{
	struct lmod *m = &p->mods[i];
	float *a = NULL, *b = NULL;
	int rc;

	if ((rc = load_f32(p->ck, m->a, &a, err)) == 0 &&
	    (rc = load_f32(p->ck, m->b, &b, err)) == 0)
		rc = peftio_lora_resize(b, a, m->m, m->n, m->r, m->scale, x, f,
		    err);
	if (rc != 0)
		peftio_error_prefix(err, "%s: module '%s'", p->path, m->name);
	free(a);
	free(b);
	return rc;
}

int
peftio_resize_adapter(const char *in, const char *out,
    const struct peftio_resize_opts *o, struct peftio_error *err)
{
	struct plain p;
	struct peftio_ckptw *w = NULL;
	struct peftio_lora_factors f;
	const char *names[1] = { MODEL_FILE };
	uint64_t *ranks = NULL, rmax = 0, sh[2];
	json_t *rp = NULL, *ap = NULL;
	char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME], *k;
	size_t i, done = 0, steps;
	double alpha;
	int rc;

	memset(&f, 0, sizeof(f));
	if ((rc = plain_open(&p, in, "--resize", err)) != 0)
		return rc;
	if ((ranks = calloc(p.nmods + 1, sizeof(*ranks))) == NULL) {
		rc = peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
		goto out;
	}
	steps = o->x.rank != 0 ? p.nmods : 2 * p.nmods;
	/* The ranks first: with a fixed rank they are known; chosen by
	 * energy, one pass computes them and a second the factors. */
	for (i = 0; i < p.nmods; i++) {
		if (o->x.rank == 0 && o->progress != NULL)
			o->progress(o->progress_arg, done++, steps,
			    p.mods[i].name);
		if (o->x.rank != 0) {
			if (o->x.rank > p.mods[i].r) {
				rc = peftio_error_set(err, PEFTIO_EINVAL,
				    "%s: module '%s': rank %llu exceeds the "
				    "adapter's rank %llu", in, p.mods[i].name,
				    (unsigned long long)o->x.rank,
				    (unsigned long long)p.mods[i].r);
				goto out;
			}
			ranks[i] = PEFTIO_MIN(o->x.rank, PEFTIO_MIN(p.mods[i].m,
			    p.mods[i].n));
		} else {
			if ((rc = resize_module(&p, i, &o->x, &f, err)) != 0)
				goto out;
			ranks[i] = f.rank;
			peftio_lora_factors_free(&f);
		}
		rmax = PEFTIO_MAX(rmax, ranks[i]);
	}
	if ((rc = peftio_ckptw_create(&w, out, 1, 1, names, o->flags,
	    err)) != 0)
		goto out;
	for (i = 0; i < p.nmods && rc == 0; i++) {
		peftio_adapter_key(ka, sizeof(ka), p.mods[i].name, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), p.mods[i].name, 1, 0);
		sh[0] = ranks[i];
		sh[1] = p.mods[i].n;
		rc = peftio_ckptw_declare(w, 0, ka, p.mods[i].dt, 2, sh, err);
		sh[0] = p.mods[i].m;
		sh[1] = ranks[i];
		if (rc == 0)
			rc = peftio_ckptw_declare(w, 0, kb, p.mods[i].dt, 2, sh,
			    err);
	}
	if (rc == 0)
		rc = peftio_ckptw_layout(w, err);
	if (rc != 0)
		goto out;
	rp = json_object();
	ap = json_object();
	alpha = o->alpha > 0.0 ? o->alpha : (double)rmax;
	for (i = 0; i < p.nmods; i++) {
		struct peftio_extract_opts x = o->x;
		double s;
		uint64_t j;

		x.rank = ranks[i];
		if (o->progress != NULL)
			o->progress(o->progress_arg, done++, steps,
			    p.mods[i].name);
		if ((rc = resize_module(&p, i, &x, &f, err)) != 0)
			goto out;
		if (o->report != NULL)
			o->report(o->report_arg, p.mods[i].name, &f);
		/* scale' = alpha' / r': b' carries 1 / scale'. */
		s = (o->alpha > 0.0 ? o->alpha : (double)ranks[i]) /
		    (double)ranks[i];
		if (s != 1.0)
			for (j = 0; j < f.m * f.rank; j++)
				f.b[j] = (float)(f.b[j] / s);
		peftio_adapter_key(ka, sizeof(ka), p.mods[i].name, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), p.mods[i].name, 1, 0);
		if ((rc = peftio_adapter_write_f32(w, ka, f.a, f.rank * f.n,
		    p.mods[i].dt, err)) != 0 ||
		    (rc = peftio_adapter_write_f32(w, kb, f.b, f.m * f.rank,
		    p.mods[i].dt, err)) != 0)
			goto out;
		peftio_lora_factors_free(&f);
		if (ranks[i] != rmax || o->alpha <= 0.0) {
			if ((k = peftio_adapter_pattern_key(p.mods[i].name))
			    == NULL) {
				rc = peftio_error_set(err, PEFTIO_ENOMEM,
				    "out of memory");
				goto out;
			}
			if (ranks[i] != rmax)
				json_object_set_new(rp, k,
				    json_integer((json_int_t)ranks[i]));
			if (o->alpha <= 0.0 && ranks[i] != rmax)
				json_object_set_new(ap, k,
				    peftio_json_num((double)ranks[i]));
			free(k);
		}
	}
	if (o->progress != NULL)
		o->progress(o->progress_arg, steps, steps, NULL);
	json_object_set_new(p.cfg, "r", json_integer((json_int_t)rmax));
	json_object_set_new(p.cfg, "lora_alpha", peftio_json_num(alpha));
	json_object_set(p.cfg, "rank_pattern", rp);
	json_object_set(p.cfg, "alpha_pattern", ap);
	json_object_set_new(p.cfg, "use_rslora", json_false());
	json_object_set_new(p.cfg, "init_lora_weights", json_true());
	if ((rc = add_config(w, p.cfg, err)) == 0)
		rc = peftio_ckptw_commit(w, err);
out:
	peftio_lora_factors_free(&f);
	peftio_ckptw_free(w);
	json_decref(rp);
	json_decref(ap);
	free(ranks);
	plain_close(&p);
	return rc;
}

/* A copy of the pattern object v with every number times c. */
static json_t *
doubled(json_t *v, double c)
{
	json_t *o = json_object(), *x;
	const char *key;

	if (json_is_object(v))
		json_object_foreach(v, key, x)
			if (json_is_number(x))
				json_object_set_new(o, key,
				    peftio_json_num(c * json_number_value(x)));
	return o;
}

int
peftio_convert_adapter(const char *init, const char *trained, const char *out,
    unsigned flags, struct peftio_error *err)
{
	struct peftio_resize_opts o;

	memset(&o, 0, sizeof(o));
	o.flags = flags;
	return peftio_convert_adapter_opts(init, trained, out, &o, err);
}

int
peftio_convert_adapter_opts(const char *init, const char *trained,
    const char *out, const struct peftio_resize_opts *o,
    struct peftio_error *err)
{
	unsigned flags = o->flags;
	struct plain p0, p1;
	struct peftio_ckptw *w = NULL;
	const char *names[1] = { MODEL_FILE };
	char ka[PEFTIO_MAX_NAME], kb[PEFTIO_MAX_NAME];
	float *a0 = NULL, *b0 = NULL, *a1 = NULL, *b1 = NULL, *a = NULL;
	float *b = NULL;
	uint64_t sh[2], i, j;
	json_t *v;
	double c;
	size_t mi;
	int rc;

	memset(&p1, 0, sizeof(p1));
	if ((rc = plain_open(&p0, init, "--convert", err)) != 0)
		return rc;
	if ((rc = plain_open(&p1, trained, "--convert", err)) != 0)
		goto out;
	for (mi = 0; mi < p1.nmods; mi++) {
		struct lmod *m1 = &p1.mods[mi], *m0 = NULL;
		size_t k;

		for (k = 0; k < p0.nmods; k++)
			if (strcmp(p0.mods[k].name, m1->name) == 0)
				m0 = &p0.mods[k];
		if (m0 == NULL) {
			rc = peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: module '%s' is not in %s", trained, m1->name,
			    init);
			goto out;
		}
		if (m0->r != m1->r || m0->m != m1->m || m0->n != m1->n) {
			rc = peftio_error_set(err, PEFTIO_EMISMATCH,
			    "%s: module '%s': rank %llu, %llu x %llu, but %s "
			    "has rank %llu, %llu x %llu", trained, m1->name,
			    (unsigned long long)m1->r,
			    (unsigned long long)m1->m,
			    (unsigned long long)m1->n, init,
			    (unsigned long long)m0->r,
			    (unsigned long long)m0->m,
			    (unsigned long long)m0->n);
			goto out;
		}
	}
	if (p0.nmods != p1.nmods) {
		rc = peftio_error_set(err, PEFTIO_EMISMATCH,
		    "%s: %zu modules, but %s has %zu", trained, p1.nmods, init,
		    p0.nmods);
		goto out;
	}
	if ((rc = peftio_ckptw_create(&w, out, 1, 1, names, flags,
	    err)) != 0)
		goto out;
	for (mi = 0; mi < p1.nmods && rc == 0; mi++) {
		struct lmod *m = &p1.mods[mi];

		peftio_adapter_key(ka, sizeof(ka), m->name, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), m->name, 1, 0);
		sh[0] = 2 * m->r;
		sh[1] = m->n;
		rc = peftio_ckptw_declare(w, 0, ka, m->dt, 2, sh, err);
		sh[0] = m->m;
		sh[1] = 2 * m->r;
		if (rc == 0)
			rc = peftio_ckptw_declare(w, 0, kb, m->dt, 2, sh, err);
	}
	if (rc == 0)
		rc = peftio_ckptw_layout(w, err);
	/* A = [A1; A0], B = [B1, -B0 s0 / s1]: scale' = 2 alpha / 2r. */
	for (mi = 0; mi < p1.nmods && rc == 0; mi++) {
		struct lmod *m = &p1.mods[mi], *m0 = NULL;
		uint64_t r = m->r;
		size_t k;
		float c0;

		for (k = 0; k < p0.nmods; k++)
			if (strcmp(p0.mods[k].name, m->name) == 0)
				m0 = &p0.mods[k];
		if (o->progress != NULL)
			o->progress(o->progress_arg, mi, p1.nmods, m->name);
		if ((rc = load_f32(p1.ck, m->a, &a1, err)) != 0 ||
		    (rc = load_f32(p1.ck, m->b, &b1, err)) != 0 ||
		    (rc = load_f32(p0.ck, m0->a, &a0, err)) != 0 ||
		    (rc = load_f32(p0.ck, m0->b, &b0, err)) != 0)
			break;
		a = malloc(2 * r * m->n * sizeof(float));
		b = malloc(2 * r * m->m * sizeof(float));
		if (a == NULL || b == NULL) {
			rc = peftio_error_set(err, PEFTIO_ENOMEM,
			    "out of memory");
			break;
		}
		c0 = (float)(m0->scale / m->scale);
		memcpy(a, a1, r * m->n * sizeof(float));
		memcpy(a + r * m->n, a0, r * m->n * sizeof(float));
		for (i = 0; i < m->m; i++)
			for (j = 0; j < r; j++) {
				b[i * 2 * r + j] = b1[i * r + j];
				b[i * 2 * r + r + j] = c0 == 1.0f ?
				    -b0[i * r + j] : -c0 * b0[i * r + j];
			}
		peftio_adapter_key(ka, sizeof(ka), m->name, 0, 0);
		peftio_adapter_key(kb, sizeof(kb), m->name, 1, 0);
		if ((rc = peftio_adapter_write_f32(w, ka, a, 2 * r * m->n,
		    m->dt, err)) == 0)
			rc = peftio_adapter_write_f32(w, kb, b, 2 * r * m->m,
			    m->dt, err);
		free(a0);
		free(b0);
		free(a1);
		free(b1);
		free(a);
		free(b);
		a0 = b0 = a1 = b1 = a = b = NULL;
	}
	if (rc != 0)
		goto out;
	if (o->progress != NULL)
		o->progress(o->progress_arg, p1.nmods, p1.nmods, NULL);
	/* PEFT's conversion: r, lora_alpha and the patterns doubled
	 * (alpha by sqrt 2 with rsLoRA), so the scale is unchanged. */
	v = json_object_get(p1.cfg, "r");
	json_object_set_new(p1.cfg, "r",
	    peftio_json_num(2.0 * (json_is_number(v) ?
	    json_number_value(v) : 8.0)));
	c = json_is_true(json_object_get(p1.cfg, "use_rslora")) ? sqrt(2.0) :
	    2.0;
	v = json_object_get(p1.cfg, "lora_alpha");
	json_object_set_new(p1.cfg, "lora_alpha", peftio_json_num(c *
	    (json_is_number(v) ? json_number_value(v) : 8.0)));
	json_object_set_new(p1.cfg, "rank_pattern",
	    doubled(json_object_get(p1.cfg, "rank_pattern"), 2.0));
	json_object_set_new(p1.cfg, "alpha_pattern",
	    doubled(json_object_get(p1.cfg, "alpha_pattern"), c));
	json_object_set_new(p1.cfg, "init_lora_weights", json_true());
	if ((rc = add_config(w, p1.cfg, err)) == 0)
		rc = peftio_ckptw_commit(w, err);
out:
	free(a0);
	free(b0);
	free(a1);
	free(b1);
	free(a);
	free(b);
	peftio_ckptw_free(w);
	plain_close(&p0);
	plain_close(&p1);
	return rc;
}
