/* Test support: the monotonic clock and sleeping, for tests that measure
 * how long something takes. Header-only.
 *
 * Every name says its unit. Readings are CLOCK_MONOTONIC: now_ns() is the
 * clock of aio_now(), so an aio_now() reading goes to ms_since_ns(). */
#ifndef H2PG_TESTS_SUPPORT_CLOCK_H
#define H2PG_TESTS_SUPPORT_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC (as aio_now()). */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Microseconds on CLOCK_MONOTONIC. */
static inline int64_t now_us(void) { return now_ns() / 1000; }

/* Milliseconds on CLOCK_MONOTONIC. */
static inline int64_t now_ms(void) { return now_ns() / 1000000; }

/* Milliseconds (fractional) since t0_ns, a now_ns() or aio_now() reading. */
static inline double ms_since_ns(int64_t t0_ns) { return (double)(now_ns() - t0_ns) / 1e6; }

/* Milliseconds (fractional) since t0_us, a now_us() reading. */
static inline double ms_since_us(int64_t t0_us) { return (double)(now_us() - t0_us) / 1e3; }

/* Sleeps ms milliseconds, whatever signals arrive. */
static inline void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif
