/*
 * check_parallel.c - the parallel loop and reused buffers.
 */
#include <stdlib.h>
#include <string.h>

#include "peftio.h"
#include "testutil.h"

struct cover {
	unsigned	 nthreads;
	unsigned char	 seen[1000];
	unsigned	 slot_of[1000];
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

	for (; b < e; b++) {
		c->seen[b]++;
		c->slot_of[b] = slot;
	}
}

/* Every index once; ranges contiguous; each range its own slot. */
START_TEST(test_slots)
{
	static const unsigned threads[] = { 1, 2, 3, 7, 300 };
	unsigned t = threads[_i], used[PEFTIO_MAX_JOBS];
	struct cover c;
	uint64_t i;

	memset(&c, 0, sizeof(c));
	memset(used, 0, sizeof(used));
	c.nthreads = t > PEFTIO_MAX_JOBS ? PEFTIO_MAX_JOBS : t;
	peftio_parallel_slots(t, 1000, 10, mark, &c);
	for (i = 0; i < 1000; i++) {
		ck_assert_uint_eq(c.seen[i], 1);
		ck_assert_uint_lt(c.slot_of[i], c.nthreads);
		if (i == 0 || c.slot_of[i] != c.slot_of[i - 1]) {
			ck_assert_uint_eq(used[c.slot_of[i]], 0);
			used[c.slot_of[i]] = 1;
		}
	}
	/* grain bounds the split: 1000 items of grain 400 -> 3 ranges */
	memset(&c, 0, sizeof(c));
	c.nthreads = 3;
	peftio_parallel_slots(t, 1000, 400, mark, &c);
	for (i = 0; i < 1000; i++) {
		ck_assert_uint_eq(c.seen[i], 1);
		ck_assert_uint_lt(c.slot_of[i], c.nthreads);
	}
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
