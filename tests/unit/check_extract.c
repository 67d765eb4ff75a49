/*
 * check_extract.c - QR orthonormalisation, the randomized SVD against
 * the exact one (Eckart-Young), LoRA extraction with fixed and
 * energy-chosen ranks, and threads sharing BLAS under a memory limit.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <pthread.h>
#include <signal.h>

#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peftio.h"
#include "testutil.h"

/* m x n: U diag(s) V^T with k orthogonal-ish random factors, plus noise. */
static float *
make_delta(uint64_t m, uint64_t n, uint64_t k, float noise, uint64_t seed)
{
	float *u = malloc(m * k * sizeof(float));
	float *v = malloc(k * n * sizeof(float));
	float *d = malloc(m * n * sizeof(float));
	uint64_t st = seed, i, j;

	ck_assert_ptr_nonnull(u);
	ck_assert_ptr_nonnull(v);
	ck_assert_ptr_nonnull(d);
	for (i = 0; i < m * k; i++)
		u[i] = tu_randn(&st);
	for (j = 0; j < k; j++)
		for (i = 0; i < n; i++)
			v[j * n + i] = tu_randn(&st) / (float)(j + 1);
	peftio_sgemm(0, 0, m, n, k, 1.0f, u, k, v, n, 0.0f, d, n);
	for (i = 0; i < m * n; i++)
		d[i] += noise * tu_randn(&st);
	free(u);
	free(v);
	return d;
}

/* |d - b a|_F / |d|_F */
static double
rel_err(const float *d, uint64_t m, uint64_t n,
    const struct peftio_lora_factors *f)
{
	float *w = malloc(m * n * sizeof(float));
	double e = 0.0, t = 0.0;
	uint64_t i;

	ck_assert_ptr_nonnull(w);
	memcpy(w, d, m * n * sizeof(float));
	peftio_sgemm(0, 0, m, n, f->rank, -1.0f, f->b, f->rank, f->a, n,
	    1.0f, w, n);
	for (i = 0; i < m * n; i++) {
		e += (double)w[i] * w[i];
		t += (double)d[i] * d[i];
	}
	free(w);
	return sqrt(e / t);
}

START_TEST(test_orth)
{
	struct peftio_error err;
	uint64_t m = 50, l = 7, i, j, r, st = 3;
	float *a = malloc(m * l * sizeof(float));
	double dot;

	for (i = 0; i < m * l; i++)
		a[i] = tu_randn(&st);
	ck_assert_int_eq(peftio_orth(a, m, l, &err), 0);
	for (i = 0; i < l; i++)
		for (j = 0; j < l; j++) {
			dot = 0.0;
			for (r = 0; r < m; r++)
				dot += (double)a[r * l + i] * a[r * l + j];
			ck_assert_msg(fabs(dot - (i == j)) < 1e-5,
			    "Q^T Q [%d,%d] = %g", (int)i, (int)j, dot);
		}
	ck_assert_int_eq(peftio_orth(a, 3, 7, &err), PEFTIO_EINVAL);
	free(a);
}
END_TEST

START_TEST(test_rsvd_values)
{
	struct peftio_error err;
	uint64_t m = 120, n = 90, k = 6, i;
	float *d = make_delta(m, n, 10, 0.001f, 11);
	float *w = malloc(m * n * sizeof(float));
	float *u = malloc(m * 90 * sizeof(float)), *s = malloc(90 * 4);
	float *vt = malloc(90 * n * sizeof(float));
	float *ru = malloc(m * k * 4), *rs = malloc(k * 4);
	float *rv = malloc(k * n * 4);

	memcpy(w, d, m * n * sizeof(float));
	ck_assert_int_eq(peftio_svd(w, m, n, u, s, vt, &err), 0);
	ck_assert_int_eq(peftio_rsvd(d, m, n, k, 8, 2, 1, ru, rs, rv, &err),
	    0);
	for (i = 0; i < k; i++)
		ck_assert_msg(fabsf(rs[i] - s[i]) <= 1e-4f * s[0],
		    "sigma %d: %g vs %g", (int)i, rs[i], s[i]);
	/* k larger than min(m, n) is refused; k = min(m, n) works. */
	ck_assert_int_eq(peftio_rsvd(d, m, n, 91, 8, 2, 1, u, s, vt, &err),
	    PEFTIO_EINVAL);
	ck_assert_int_eq(peftio_rsvd(d, m, n, 90, 8, 2, 1, u, s, vt, &err), 0);
	free(d); free(w); free(u); free(s); free(vt); free(ru); free(rs);
	free(rv);
}
END_TEST

/* Exact recovery of a low-rank delta, randomized and exact. */
START_TEST(test_extract_lowrank)
{
	struct peftio_error err;
	struct peftio_extract_opts o;
	struct peftio_lora_factors f;
	uint64_t m = 96, n = 160;
	float *d = make_delta(m, n, 6, 0.0f, 5);

	peftio_extract_opts_init(&o);
	o.rank = 8;
	o.exact = _i;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err), 0);
	ck_assert_uint_eq(f.rank, 8);
	ck_assert_double_lt(rel_err(d, m, n, &f), 1e-5);
	ck_assert_double_lt(f.rel_err, 1e-5);
	ck_assert_double_gt(f.kept, 1.0 - 1e-6);
	peftio_lora_factors_free(&f);
	free(d);
}
END_TEST

/* Noisy delta: randomized within 1% of the Eckart-Young optimum. */
START_TEST(test_extract_noisy)
{
	struct peftio_error err;
	struct peftio_extract_opts o;
	struct peftio_lora_factors fx, fr;
	uint64_t m = 200, n = 150;
	float *d = make_delta(m, n, 12, 0.05f, 9);
	double ex, ra;

	peftio_extract_opts_init(&o);
	o.rank = 6;
	o.exact = 1;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &fx, &err), 0);
	o.exact = 0;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &fr, &err), 0);
	ex = rel_err(d, m, n, &fx);
	ra = rel_err(d, m, n, &fr);
	ck_assert_msg(ra <= 1.01 * ex, "randomized %g vs exact %g", ra, ex);
	ck_assert_double_lt(fabs(fr.rel_err - ra), 1e-6);
	peftio_lora_factors_free(&fx);
	peftio_lora_factors_free(&fr);
	free(d);
}
END_TEST

/* Same seed, same bits; rank capped by the matrix. */
START_TEST(test_extract_deterministic)
{
	struct peftio_error err;
	struct peftio_extract_opts o;
	struct peftio_lora_factors f1, f2;
	uint64_t m = 40, n = 5;
	float *d = make_delta(m, n, 3, 0.01f, 2);

	peftio_extract_opts_init(&o);
	o.rank = 16;
	o.seed = 42;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f1, &err), 0);
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f2, &err), 0);
	ck_assert_uint_eq(f1.rank, 5);
	ck_assert_int_eq(memcmp(f1.a, f2.a, 5 * n * sizeof(float)), 0);
	ck_assert_int_eq(memcmp(f1.b, f2.b, m * 5 * sizeof(float)), 0);
	peftio_lora_factors_free(&f1);
	peftio_lora_factors_free(&f2);
	free(d);
}
END_TEST

/* Energy: the smallest rank keeping the fraction, within the caps. */
START_TEST(test_extract_energy)
{
	struct peftio_error err;
	struct peftio_extract_opts o;
	struct peftio_lora_factors f;
	uint64_t m = 64, n = 64;
	float *d = calloc(m * n, sizeof(float));

	/* Singular values 4, 2, 1, 0.5 on the diagonal: energies 16, 4, 1,
	 * 0.25 of 21.25. */
	d[0] = 4.0f;
	d[1 * n + 1] = 2.0f;
	d[2 * n + 2] = 1.0f;
	d[3 * n + 3] = 0.5f;
	peftio_extract_opts_init(&o);
	o.rank = 0;
	o.energy = 0.9;		/* 20/21.25 = 0.941 */
	o.exact = _i;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err), 0);
	ck_assert_uint_eq(f.rank, 2);
	ck_assert_double_lt(fabs(f.kept - 20.0 / 21.25), 1e-6);
	peftio_lora_factors_free(&f);
	o.energy = 0.99;	/* needs 3 */
	o.max_rank = 2;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err), 0);
	ck_assert_uint_eq(f.rank, 2);
	peftio_lora_factors_free(&f);
	o.max_rank = 8;
	o.min_rank = 4;
	o.energy = 0.5;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err), 0);
	ck_assert_uint_eq(f.rank, 4);
	ck_assert_double_lt(f.rel_err, 1e-6);
	peftio_lora_factors_free(&f);
	o.energy = 2.0;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err),
	    PEFTIO_EINVAL);
	d[5] = NAN;
	o.energy = 0.5;
	ck_assert_int_eq(peftio_extract_lora(d, m, n, &o, &f, &err),
	    PEFTIO_ENONFINITE);
	free(d);
}
END_TEST

/* A checkpoint file of f32 tensors: q [16, 12], lm_head [8, 12] and
 * norm [12]; tuned adds a rank-2 delta to q and changes lm_head. */
static void
write_model(const char *path, int tuned, int with_norm)
{
	static const char *const names[] = {
		"model.layers.0.self_attn.q_proj.weight", "lm_head.weight",
		"model.norm.weight"
	};
	static const uint64_t rows[] = { 16, 8, 12 };
	struct peftio_ckptw *w;
	struct peftio_error err;
	float *x[3], *d = make_delta(16, 12, 2, 0.0f, 7);
	uint64_t st = 1, sh[2], i;
	int k, nt = with_norm ? 3 : 2;

	ck_assert_int_eq(peftio_ckptw_create(&w, path, 0, 1, NULL,
	    PEFTIO_W_FORCE | PEFTIO_W_NOSYNC, &err), 0);
	for (k = 0; k < nt; k++) {
		sh[0] = rows[k];
		sh[1] = 12;
		ck_assert_int_eq(peftio_ckptw_declare(w, 0, names[k],
		    PEFTIO_F32, k == 2 ? 1 : 2, k == 2 ? &sh[1] : sh, &err), 0);
		x[k] = malloc(rows[k] * 12 * sizeof(float));
		ck_assert_ptr_nonnull(x[k]);
		for (i = 0; i < rows[k] * (k == 2 ? 1 : 12); i++)
			x[k][i] = tu_randn(&st);
	}
	if (tuned) {
		for (i = 0; i < 16 * 12; i++)
			x[0][i] += d[i];
		x[1][0] += 1.0f;
	}
	ck_assert_int_eq(peftio_ckptw_layout(w, &err), 0);
	for (k = 0; k < nt; k++)
		ck_assert_int_eq(peftio_ckptw_write(w, names[k], x[k],
		    rows[k] * (k == 2 ? 1 : 12) * sizeof(float), &err), 0);
	ck_assert_msg(peftio_ckptw_commit(w, &err) == 0, "%s", err.msg);
	peftio_ckptw_free(w);
	for (k = 0; k < nt; k++)
		free(x[k]);
	free(d);
}

struct seen {
	char		 skipped[256];
	int		 reports;
	uint64_t	 rank;
	/* progress */
	int		 calls, ends;
	uint64_t	 done, total;
	char		 what[256];
};

/* A peftio_progress_fn: done never goes back, total never changes, and
 * the end (what NULL) comes once, last, with done = total. */
static void
seen_progress(void *arg, uint64_t done, uint64_t total, const char *what)
{
	struct seen *s = arg;

	ck_assert_int_eq(s->ends, 0);
	ck_assert_uint_ge(done, s->done);
	ck_assert_uint_le(done, total);
	if (s->calls++ > 0)
		ck_assert_uint_eq(total, s->total);
	s->done = done;
	s->total = total;
	if (what == NULL) {
		ck_assert_uint_eq(done, total);
		s->ends++;
	} else
		snprintf(s->what, sizeof(s->what), "%s", what);
}

static void
seen_skipped(void *arg, const char *names)
{
	struct seen *s = arg;

	snprintf(s->skipped, sizeof(s->skipped), "%s", names);
}

static void
seen_report(void *arg, const char *module, const struct peftio_lora_factors *f)
{
	struct seen *s = arg;

	ck_assert_str_eq(module, "model.layers.0.self_attn.q_proj");
	ck_assert_ptr_nonnull(f);
	s->reports++;
	s->rank = f->rank;
}

/* A whole model: the rank-2 delta of the one Linear weight comes back
 * as an adapter PEFT loads; the changed output head is named as not
 * extracted; a tensor missing from the tuned model is an error. */
START_TEST(test_extract_model)
{
	struct peftio_extract_model_opts o;
	struct peftio_adapter *a;
	struct peftio_error err;
	struct seen s;
	uint64_t nmod = 0, r = 0, rank;
	double scale;
	char base[4096], tuned[4096], out[4096];

	tu_tmpdir();
	snprintf(base, sizeof(base), "%s", tu_path("base.safetensors"));
	snprintf(tuned, sizeof(tuned), "%s", tu_path("tuned.safetensors"));
	snprintf(out, sizeof(out), "%s", tu_path("adapter"));
	write_model(base, 0, 1);
	write_model(tuned, 1, 1);
	memset(&o, 0, sizeof(o));
	memset(&s, 0, sizeof(s));
	peftio_extract_opts_init(&o.x);
	o.x.rank = 2;
	o.x.exact = 1;
	o.skipped = seen_skipped;
	o.report = seen_report;
	o.report_arg = &s;
	o.jobs = 2;
	o.progress = seen_progress;
	o.progress_arg = &s;
	ck_assert_msg(peftio_extract_model(base, tuned, out, &o, &nmod, &r,
	    &err) == 0, "%s", err.msg);
	/* The bytes of the one weight extracted, named before it. */
	ck_assert_int_eq(s.calls, 2);
	ck_assert_int_eq(s.ends, 1);
	ck_assert_uint_eq(s.total, 16 * 12 * sizeof(float));
	ck_assert_str_eq(s.what, "model.layers.0.self_attn.q_proj");
	ck_assert_uint_eq(nmod, 1);
	ck_assert_uint_eq(r, 2);
	ck_assert_str_eq(s.skipped, "lm_head.weight");
	ck_assert_int_eq(s.reports, 1);
	ck_assert_uint_eq(s.rank, 2);
	ck_assert_msg(peftio_adapter_open(&a, out, &err) == 0, "%s", err.msg);
	ck_assert_uint_eq(peftio_adapter_nmodules(a), 1);
	ck_assert_str_eq(peftio_adapter_module(a, 0, &rank, &scale),
	    "model.layers.0.self_attn.q_proj");
	ck_assert_uint_eq(rank, 2);
	ck_assert(scale == 1.0);
	peftio_adapter_free(a);

	write_model(tuned, 1, 0);
	o.progress = NULL;
	ck_assert_int_ne(peftio_extract_model(base, tuned, out, &o, NULL, NULL,
	    &err), 0);
	ck_assert_msg(strstr(err.msg, "model.norm.weight is missing") != NULL,
	    "%s", err.msg);
	tu_tmpdir_remove();
}
END_TEST

/* Resizing an adapter tells its progress in modules (with the rank by
 * energy, each module twice), and so does converting one. */
START_TEST(test_resize_progress)
{
	struct peftio_extract_model_opts o;
	struct peftio_resize_opts ro;
	struct peftio_error err;
	struct seen s;
	char base[4096], tuned[4096], ad[4096], out[4096];

	tu_tmpdir();
	snprintf(base, sizeof(base), "%s", tu_path("base.safetensors"));
	snprintf(tuned, sizeof(tuned), "%s", tu_path("tuned.safetensors"));
	snprintf(ad, sizeof(ad), "%s", tu_path("adapter"));
	snprintf(out, sizeof(out), "%s", tu_path("resized"));
	write_model(base, 0, 1);
	write_model(tuned, 1, 1);
	memset(&o, 0, sizeof(o));
	peftio_extract_opts_init(&o.x);
	o.x.rank = 2;
	ck_assert_msg(peftio_extract_model(base, tuned, ad, &o, NULL, NULL,
	    &err) == 0, "%s", err.msg);
	memset(&ro, 0, sizeof(ro));
	peftio_extract_opts_init(&ro.x);
	ro.x.rank = _i == 0 ? 1 : 0;
	ro.x.energy = 0.5;
	ro.progress = seen_progress;
	ro.progress_arg = &s;
	memset(&s, 0, sizeof(s));
	ck_assert_msg(peftio_resize_adapter(ad, out, &ro, &err) == 0, "%s",
	    err.msg);
	ck_assert_uint_eq(s.total, _i == 0 ? 1 : 2);
	ck_assert_int_eq(s.calls, _i == 0 ? 2 : 3);
	ck_assert_int_eq(s.ends, 1);
	ck_assert_str_eq(s.what, "model.layers.0.self_attn.q_proj");
	/* --convert: one module, of the trained adapter. */
	memset(&s, 0, sizeof(s));
	ro.flags = PEFTIO_W_FORCE;
	ck_assert_msg(peftio_convert_adapter_opts(ad, ad, out, &ro, &err) == 0,
	    "%s", err.msg);
	ck_assert_uint_eq(s.total, 1);
	ck_assert_int_eq(s.calls, 2);
	ck_assert_int_eq(s.ends, 1);
	tu_tmpdir_remove();
}
END_TEST

/* A checkpoint read from a pipe: peftio_set_read_progress() hears of
 * the bytes spooled, up to the data section's size, then the end. */
START_TEST(test_read_progress)
{
	struct peftio_ckpt *c;
	struct peftio_error err;
	struct seen s;
	struct stat sb;
	char path[4096], fifo[4096], buf[4096];
	ssize_t n;
	pid_t pid;
	int fd, in, st;

	tu_tmpdir();
	snprintf(path, sizeof(path), "%s", tu_path("model.safetensors"));
	snprintf(fifo, sizeof(fifo), "%s", tu_path("pipe"));
	write_model(path, 0, 1);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	if ((pid = fork()) == 0) {
		fd = open(fifo, O_WRONLY);
		in = open(path, O_RDONLY);
		while (fd >= 0 && in >= 0 && (n = read(in, buf,
		    sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				_exit(1);
		_exit(0);
	}
	ck_assert_int_ge(pid, 0);
	memset(&s, 0, sizeof(s));
	peftio_set_read_progress(seen_progress, &s);
	ck_assert_msg(peftio_ckpt_open(&c, fifo, &err) == 0, "%s", err.msg);
	peftio_set_read_progress(NULL, NULL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_int_eq(st, 0);
	ck_assert_int_ge(s.calls, 1);
	ck_assert_int_eq(s.ends, 1);
	/* Three f32 tensors: q [16, 12], lm_head [8, 12], norm [12]. */
	ck_assert_uint_eq(s.total, (16 * 12 + 8 * 12 + 12) * sizeof(float));
	ck_assert_uint_lt(s.total, (uint64_t)sb.st_size);
	peftio_ckpt_close(c);
	tu_tmpdir_remove();
}
END_TEST

#define GATE_N		384
#define GATE_THREADS	8

/* One of the threads of test_blas_gate: products long enough that the
 * threads overlap inside BLAS. */
static void *
gate_worker(void *arg)
{
	float *m = arg;
	unsigned i;

	for (i = 0; i < 20; i++)
		peftio_sgemm(0, 0, GATE_N, GATE_N, GATE_N, 1.0f, m,
		    GATE_N, m + GATE_N * GATE_N, GATE_N, 0.0f,
		    m + 2 * GATE_N * GATE_N, GATE_N);
	return NULL;
}

/*
 * Under a limit on address space with room for one more BLAS work
 * buffer but not two, eight threads that multiply at once take turns
 * for the buffers there are: none waits forever for one that cannot be
 * mapped.  Run in a child, which SIGALRM ends if it hangs.  Not under
 * AddressSanitizer or valgrind, which need more address space than the
 * limit leaves.
 */
START_TEST(test_blas_gate)
{
	pthread_t t[GATE_THREADS];
	pthread_attr_t attr;
	struct rlimit rl;
	float *m[GATE_THREADS];
	long pages;
	int i, st;
	pid_t pid;
	FILE *f;

	if (tu_under_sanitizer_or_valgrind())
		return;
	/* BLAS set up here: the child starts none of OpenBLAS's threads,
	 * which would take buffers of their own at any time. */
	ck_assert_int_eq(peftio_blas_ready(NULL), 0);
	if ((pid = fork()) == 0) {
		alarm(60);
		/* One malloc arena: no thread maps 64 MiB of its own. */
		mallopt(M_ARENA_MAX, 1);
		for (i = 0; i < GATE_THREADS; i++)
			if ((m[i] = calloc(3 * GATE_N * GATE_N,
			    sizeof(float))) == NULL)
				_exit(2);
		if ((f = fopen("/proc/self/statm", "r")) == NULL ||
		    fscanf(f, "%ld", &pages) != 1)
			_exit(2);
		fclose(f);
		/* The 160 MiB check and one 128 MiB buffer fit, then the
		 * threads' stacks (32 MiB); a second buffer does not. */
		rl.rlim_cur = rl.rlim_max = (rlim_t)pages * 4096 +
		    ((rlim_t)250 << 20);
		if (setrlimit(RLIMIT_AS, &rl) != 0 ||
		    peftio_blas_reserve(GATE_THREADS, NULL) != 0)
			_exit(3);
		/* Stacks of a known size, whatever ulimit -s says. */
		if (pthread_attr_init(&attr) != 0 ||
		    pthread_attr_setstacksize(&attr, (size_t)4 << 20) != 0)
			_exit(4);
		for (i = 0; i < GATE_THREADS; i++)
			if (pthread_create(&t[i], &attr, gate_worker,
			    m[i]) != 0)
				_exit(4);
		for (i = 0; i < GATE_THREADS; i++)
			pthread_join(t[i], NULL);
		_exit(0);
	}
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(!WIFSIGNALED(st), "killed by signal %d (a hang ends "
	    "with SIGALRM)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

Suite *extract_suite(void);

Suite *extract_suite(void)
{
	Suite *s = suite_create("extract");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_orth);
	tcase_add_test(tc, test_rsvd_values);
	tcase_add_loop_test(tc, test_extract_lowrank, 0, 2);
	tcase_add_test(tc, test_extract_noisy);
	tcase_add_test(tc, test_extract_deterministic);
	tcase_add_loop_test(tc, test_extract_energy, 0, 2);
	tcase_add_test(tc, test_extract_model);
	tcase_add_loop_test(tc, test_resize_progress, 0, 2);
	tcase_add_test(tc, test_read_progress);
	tcase_add_test(tc, test_blas_gate);
	suite_add_tcase(s, tc);
	return s;
}
