/*
 * main.c - runs every Check suite of tests/unit.  CK_RUN_SUITE and
 * CK_RUN_CASE select a subset; CK_FORK=no helps in a debugger.
 */
#include <check.h>
#include <stdlib.h>

#include "suites.h"

int
main(void)
{
	SRunner *sr = srunner_create(NULL);
	int failed;

#define X(fn)	srunner_add_suite(sr, fn());
	PEFTIO_SUITES
#undef X
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
