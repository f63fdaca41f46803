/* Test support: run a Check test's body as the main task of a fresh loop.
 *
 *     AIO_TEST(sleeps_at_least_the_duration) { ...; return 0; }
 *
 * Check runs every test in a child process, so a failed assertion inside a
 * coroutine simply ends that child. */
#ifndef H2PG_TESTS_AIO_CHECK_H
#define H2PG_TESTS_AIO_CHECK_H

#include <check.h>

#include "server/aio/aio.h"

#define AIO_TEST(name)                                                                                                             \
    static int name##_body(void *arg);                                                                                             \
    START_TEST(name)                                                                                                               \
    {                                                                                                                              \
        ck_assert_int_eq(aio_run(name##_body, NULL, NULL), 0);                                                                     \
    }                                                                                                                              \
    END_TEST                                                                                                                       \
    static int name##_body(void *arg __attribute__((unused)))

/* Milliseconds since t0 (a value of aio_now()). */
static inline double ms_since(int64_t t0) { return (double)(aio_now() - t0) / 1e6; }

/* Runs a suite built by make(); returns the process exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

#endif
