/* Test support: running a Check suite from main. Header-only. */
#ifndef H2PG_TESTS_SUPPORT_SUITE_H
#define H2PG_TESTS_SUPPORT_SUITE_H

#include <check.h>

/* Runs every test of s (each in a child process, Check's default) and frees
 * the runner; returns the process exit status: 0 when all passed, else 1. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

#endif
