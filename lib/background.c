/*
 * background.c - one job at a time on a thread beside the caller, so
 * that writing a tensor overlaps computing the next.
 */
#include <pthread.h>
#include <stdlib.h>

#include "peftio_private.h"

struct peftio_bg {
	pthread_t	 tid;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		(*fn)(void *);	/* the queued or running job */
	void		*arg;
	int		 busy;		/* a job is queued or running */
	int		 rc;		/* status of the last job */
	int		 quit;
};

static void *
worker(void *p)
{
	struct peftio_bg *bg = p;
	int rc;

	pthread_mutex_lock(&bg->mu);
	for (;;) {
		while (!bg->busy && !bg->quit)
			pthread_cond_wait(&bg->cv, &bg->mu);
		if (!bg->busy)
			break;
		pthread_mutex_unlock(&bg->mu);
		rc = bg->fn(bg->arg);
		pthread_mutex_lock(&bg->mu);
		bg->rc = rc;
		bg->busy = 0;
		pthread_cond_broadcast(&bg->cv);
	}
	pthread_mutex_unlock(&bg->mu);
	return NULL;
}

int
peftio_bg_new(struct peftio_bg **out, struct peftio_error *err)
{
	struct peftio_bg *bg;

	*out = NULL;
	if ((bg = calloc(1, sizeof(*bg))) == NULL)
		return peftio_error_set(err, PEFTIO_ENOMEM, "out of memory");
	pthread_mutex_init(&bg->mu, NULL);
	pthread_cond_init(&bg->cv, NULL);
	if (pthread_create(&bg->tid, NULL, worker, bg) != 0) {
		pthread_cond_destroy(&bg->cv);
		pthread_mutex_destroy(&bg->mu);
		free(bg);
		return peftio_error_set(err, PEFTIO_ENOMEM,
		    "cannot start a thread");
	}
	*out = bg;
	return 0;
}

int
peftio_bg_wait(struct peftio_bg *bg)
{
	int rc;

	pthread_mutex_lock(&bg->mu);
	while (bg->busy)
		pthread_cond_wait(&bg->cv, &bg->mu);
	rc = bg->rc;
	bg->rc = 0;
	pthread_mutex_unlock(&bg->mu);
	return rc;
}

int
peftio_bg_run(struct peftio_bg *bg, int (*fn)(void *), void *arg)
{
	int rc;

	if ((rc = peftio_bg_wait(bg)) != 0)
		return rc;
	pthread_mutex_lock(&bg->mu);
	bg->fn = fn;
	bg->arg = arg;
	bg->busy = 1;
	pthread_cond_broadcast(&bg->cv);
	pthread_mutex_unlock(&bg->mu);
	return 0;
}

void
peftio_bg_free(struct peftio_bg *bg)
{
	if (bg == NULL)
		return;
	(void)peftio_bg_wait(bg);
	pthread_mutex_lock(&bg->mu);
	bg->quit = 1;
	pthread_cond_broadcast(&bg->cv);
	pthread_mutex_unlock(&bg->mu);
	pthread_join(bg->tid, NULL);
	pthread_cond_destroy(&bg->cv);
	pthread_mutex_destroy(&bg->mu);
	free(bg);
}
