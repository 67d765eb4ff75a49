/*
 * parallel.c - a parallel for-loop over contiguous ranges (pthreads).
 */
#include <pthread.h>
#include <unistd.h>

#include "peftio_private.h"

#define MAX_THREADS	PEFTIO_MAX_JOBS

struct job {
	void		(*fn)(void *, unsigned, uint64_t, uint64_t);
	void		*arg;
	unsigned	 slot;
	uint64_t	 b, e;
};

static void *
run_job(void *p)
{
	struct job *j = p;

	j->fn(j->arg, j->slot, j->b, j->e);
	return NULL;
}

/* peftio_parallel_for() through peftio_parallel_slots(). */
struct noslot {
	void		(*fn)(void *, uint64_t, uint64_t);
	void		*arg;
};

static void
run_noslot(void *p, unsigned slot, uint64_t b, uint64_t e)
{
	struct noslot *ns = p;

	(void)slot;
	ns->fn(ns->arg, b, e);
}

void
peftio_parallel_for(unsigned nthreads, uint64_t n, uint64_t grain,
    void (*fn)(void *, uint64_t, uint64_t), void *arg)
{
	struct noslot ns = { fn, arg };

	peftio_parallel_slots(nthreads, n, grain, run_noslot, &ns);
}

void
peftio_parallel_slots(unsigned nthreads, uint64_t n, uint64_t grain,
    void (*fn)(void *, unsigned, uint64_t, uint64_t), void *arg)
{
	struct job jobs[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	int started[MAX_THREADS];
	uint64_t nt, per, i;

	if (n == 0)
		return;
	if (grain == 0)
		grain = 1;
	nt = nthreads == 0 ? 1 : nthreads;
	if (nt > MAX_THREADS)
		nt = MAX_THREADS;
	if (nt > (n + grain - 1) / grain)
		nt = (n + grain - 1) / grain;
	if (nt <= 1) {
		fn(arg, 0, 0, n);
		return;
	}
	per = (n + nt - 1) / nt;
	for (i = 0; i < nt; i++) {
		jobs[i].fn = fn;
		jobs[i].arg = arg;
		jobs[i].slot = (unsigned)i;
		jobs[i].b = PEFTIO_MIN(i * per, n);
		jobs[i].e = PEFTIO_MIN((i + 1) * per, n);
		started[i] = 0;
	}
	/* Workers take ranges 1..nt-1; this thread takes range 0.  When a
	 * thread cannot be created, its range runs here instead. */
	for (i = 1; i < nt; i++)
		started[i] = pthread_create(&tid[i], NULL, run_job,
		    &jobs[i]) == 0;
	run_job(&jobs[0]);
	for (i = 1; i < nt; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		else
			run_job(&jobs[i]);
	}
}

unsigned
peftio_ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}
