/*
 * parallel.c - a parallel for-loop over contiguous ranges (pthreads).
 */
#include <pthread.h>
#include <unistd.h>

#include "peftio_private.h"

#define MAX_THREADS	PEFTIO_MAX_JOBS

/*
 * The threads of one loop take chunks of grain indices in turn from a
 * shared counter, so a thread slowed down (by another process, or by
 * the background writer on the same core) takes fewer chunks instead of
 * holding up the others with a fixed share.
 */
struct loop {
	void		(*fn)(void *, unsigned, uint64_t, uint64_t);
	void		*arg;
	uint64_t	 n, grain;
	uint64_t	 next;		/* atomic: the first index not taken */
};

struct job {
	struct loop	*l;
	unsigned	 slot;
};

static void *
run_job(void *p)
{
	struct job *j = p;
	struct loop *l = j->l;
	uint64_t b;

	while ((b = __atomic_fetch_add(&l->next, l->grain,
	    __ATOMIC_RELAXED)) < l->n)
		l->fn(l->arg, j->slot, b, PEFTIO_MIN(b + l->grain, l->n));
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
	struct loop l;
	struct job jobs[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	int started[MAX_THREADS];
	uint64_t nt, i;

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
	l.fn = fn;
	l.arg = arg;
	l.n = n;
	l.grain = grain;
	l.next = 0;
	for (i = 0; i < nt; i++) {
		jobs[i].l = &l;
		jobs[i].slot = (unsigned)i;
		started[i] = 0;
	}
	/* Workers run slots 1..nt-1; this thread runs slot 0.  A thread
	 * that cannot be created leaves its chunks to the others. */
	for (i = 1; i < nt; i++)
		started[i] = pthread_create(&tid[i], NULL, run_job,
		    &jobs[i]) == 0;
	run_job(&jobs[0]);
	for (i = 1; i < nt; i++)
		if (started[i])
			pthread_join(tid[i], NULL);
}

unsigned
peftio_ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}
