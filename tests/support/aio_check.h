/* Test support: run a Check test's body as the main task of a fresh loop.
 *
 *     AIO_TEST(sleeps_at_least_the_duration) { ...; return 0; }
 *
 * Check runs every test in a child process, so a failed assertion inside a
 * coroutine simply ends that child. Times: aio_now() readings are
 * nanoseconds, so ms_since_ns() (support/clock.h) measures from them; main
 * runs the suite with run_suite() (support/suite.h). */
#ifndef H2PG_TESTS_AIO_CHECK_H
#define H2PG_TESTS_AIO_CHECK_H

#include <check.h>
#include <stdbool.h>

#include "aio/aio.h"
#include "support/clock.h"
#include "support/suite.h"

#define AIO_TEST(name)                                                                                                             \
    static int name##_body(void *arg);                                                                                             \
    START_TEST(name)                                                                                                               \
    {                                                                                                                              \
        ck_assert_int_eq(aio_run(name##_body, NULL, NULL), 0);                                                                     \
    }                                                                                                                              \
    END_TEST                                                                                                                       \
    static int name##_body(void *arg __attribute__((unused)))

/* From a task: polls cond every 10 ms for at most ms milliseconds and
 * asserts its last reading (not a fresh one: a condition that held once
 * and then stopped would fail with a wrong message). */
#define AIO_WAIT_UNTIL(cond, ms)                                                                                       \
    do {                                                                                                               \
        int64_t wait_t0_ = aio_now();                                                                                  \
        bool wait_ok_;                                                                                                 \
        while (!(wait_ok_ = (cond)) && ms_since_ns(wait_t0_) < (ms))                                                   \
            ck_assert_int_eq(aio_sleep(AIO_MSEC(10)), 0);                                                              \
        ck_assert_msg(wait_ok_, "still not true after %d ms: %s", (int)(ms), #cond);                                   \
    } while (0)

#endif
