/*
 * check_parallel.c - the parallel loop and reused buffers.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

struct cover {
	unsigned	 nthreads;
	uint64_t	 grain;
	unsigned char	 seen[1000];
	unsigned	 slot_of[1000];
	int		 active[PEFTIO_MAX_JOBS];	/* calls running */
	int		 shared;	/* a slot ran twice at once */
	int		 misaligned;	/* a range not one chunk */
};

/*
 * Runs in the worker threads: it only records what it was given, for
 * the main thread to assert on (Check's assertions are not for threads
 * other than the test's own).
 */
static void
mark(void *arg, unsigned slot, uint64_t b, uint64_t e)
{
	struct cover *c = arg;

	if (slot < PEFTIO_MAX_JOBS &&
	    __atomic_fetch_add(&c->active[slot], 1, __ATOMIC_SEQ_CST) != 0)
		__atomic_store_n(&c->shared, 1, __ATOMIC_SEQ_CST);
	if (b % c->grain != 0 || (e - b != c->grain && e != 1000))
		__atomic_store_n(&c->misaligned, 1, __ATOMIC_SEQ_CST);
	for (; b < e; b++) {
		c->seen[b]++;
		c->slot_of[b] = slot;
	}
	if (slot < PEFTIO_MAX_JOBS)
		__atomic_fetch_sub(&c->active[slot], 1, __ATOMIC_SEQ_CST);
}

static void
cover_init(struct cover *c, unsigned nthreads, uint64_t grain)
{
	memset(c, 0, sizeof(*c));
	c->nthreads = nthreads > PEFTIO_MAX_JOBS ? PEFTIO_MAX_JOBS : nthreads;
	c->grain = grain;
}

/* Every index once, in chunks of grain; a slot below nthreads that no
 * concurrent call shares. */
START_TEST(test_slots)
{
	static const unsigned threads[] = { 1, 2, 3, 7, 300 };
	unsigned t = threads[_i];
	struct cover c;
	uint64_t i;

	cover_init(&c, t, 10);
	peftio_parallel_slots(t, 1000, 10, mark, &c);
	for (i = 0; i < 1000; i++) {
		ck_assert_uint_eq(c.seen[i], 1);
		ck_assert_uint_lt(c.slot_of[i], c.nthreads);
	}
	ck_assert_int_eq(c.shared, 0);
	ck_assert_int_eq(c.misaligned, 0);
	/* grain bounds the threads: 1000 items of grain 400 -> at most 3 */
	cover_init(&c, t < 3 ? t : 3, 400);
	peftio_parallel_slots(t, 1000, 400, mark, &c);
	for (i = 0; i < 1000; i++) {
		ck_assert_uint_eq(c.seen[i], 1);
		ck_assert_uint_lt(c.slot_of[i], c.nthreads);
	}
	ck_assert_int_eq(c.shared, 0);
	ck_assert_int_eq(c.misaligned, 0);
}
END_TEST

START_TEST(test_scratch)
{
	struct peftio_scratch s = { NULL, 0 };
	void *p, *q;

	p = peftio_scratch(&s, 100);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_ge(s.cap, 100);
	memset(p, 1, 100);
	q = peftio_scratch(&s, 50);		/* fits: the same buffer */
	ck_assert_ptr_eq(p, q);
	q = peftio_scratch(&s, 1 << 20);	/* grows */
	ck_assert_ptr_nonnull(q);
	ck_assert_uint_ge(s.cap, 1 << 20);
	memset(q, 2, 1 << 20);
	ck_assert_ptr_nonnull(peftio_scratch(&s, 0));
	peftio_scratch_free(&s);
	ck_assert_ptr_null(s.p);
	ck_assert_uint_eq(s.cap, 0);
	peftio_scratch_free(&s);		/* twice is harmless */
}
END_TEST

Suite *parallel_suite(void);

Suite *parallel_suite(void)
{
	Suite *s = suite_create("parallel");
	TCase *tc = tcase_create("parallel");

	tcase_add_loop_test(tc, test_slots, 0, 5);
	tcase_add_test(tc, test_scratch);
	suite_add_tcase(s, tc);
	return s;
}
