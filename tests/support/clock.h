/* Test support: the monotonic clock and sleeping, for tests that measure
 * how long the service takes to do something. Header-only. */
#ifndef H2PG_TESTS_SUPPORT_CLOCK_H
#define H2PG_TESTS_SUPPORT_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* Microseconds on CLOCK_MONOTONIC. */
static inline int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds since t0_us (a now_us() reading). */
static inline double ms_since(int64_t t0_us) { return (double)(now_us() - t0_us) / 1000.0; }

/* Sleeps ms milliseconds, whatever signals arrive. */
static inline void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif
