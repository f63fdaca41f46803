/* Event-to-subscriber latency of GET /events: N streams held open, then
 * events committed at a steady rate; for every event each stream gets, the
 * time from its commit to its arrival.
 *
 *   sse_latency HOST PORT SUBSCRIBERS EVENTS RATE CONNINFO
 *
 * The events are made as every writer makes them, with events_emit, one
 * autocommit statement each, from a thread of its own (libpq, blocking).
 * The commit time is the event's created_at (now(): the start of that
 * one-statement transaction, a few tens of microseconds before its commit;
 * the database runs on this machine, so its clock is ours). Streams are
 * read as HTTP/1.0, whose response is the bare event stream (no chunked
 * framing), with epoll. Prints one line of key=value figures:
 *   subscribers= events= expected= received= missing= p50_ms= p90_ms= p99_ms= max_ms= setup_ms=
 * and exits 1 if a stream missed an event or could not be opened. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

struct stream {
    int fd;
    bool live;      /* the stream's first frame ("retry:") arrived */
    long received;
    char buf[8192]; /* an incomplete line carried to the next read */
    size_t len;
};

static int64_t now_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "2026-12-04T03:40:00.804727Z" as Unix microseconds; -1 if malformed. */
static int64_t parse_ts(const char *s)
{
    struct tm tm = {0};
    int us;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &us) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

static int64_t *lat; /* microseconds, one per event received by any stream */
static size_t nlat, caplat;

static void record(int64_t us)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof(*lat));
        if (lat == NULL) {
            perror("realloc");
            exit(2);
        }
    }
    lat[nlat++] = us;
}

/* Every complete line: "retry:" makes the stream live; a data line is an
 * event, timed by its created_at. */
static void on_bytes(struct stream *s, const char *p, size_t n)
{
    int64_t now = now_us(CLOCK_REALTIME);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c != '\n') {
            if (s->len < sizeof(s->buf) - 1)
                s->buf[s->len++] = c;
            continue;
        }
        s->buf[s->len] = '\0';
        if (strncmp(s->buf, "retry:", 6) == 0) {
            s->live = true;
        } else if (strncmp(s->buf, "data: ", 6) == 0) {
            const char *ts = strstr(s->buf, "\"created_at\":\"");
            int64_t t = ts != NULL ? parse_ts(ts + 14) : -1;
            if (t > 0) {
                record(now - t);
                s->received++;
            }
        }
        s->len = 0;
    }
}

struct emitter {
    const char *conninfo;
    long events;
    double rate;
    int failed;
};

static void *emit(void *arg)
{
    struct emitter *e = arg;
    PGconn *c = PQconnectdb(e->conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "sse_latency: %s", PQerrorMessage(c));
        e->failed = 1;
        PQfinish(c);
        return NULL;
    }
    int64_t start = now_us(CLOCK_MONOTONIC), gap = (int64_t)(1e6 / e->rate);
    for (long i = 0; i < e->events; i++) {
        int64_t due = start + i * gap, wait = due - now_us(CLOCK_MONOTONIC);
        if (wait > 0)
            usleep((useconds_t)wait);
        PGresult *r = PQexec(c, "SELECT events_emit('user.created', '{\"bench\":\"sse_latency\"}'::jsonb)");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "sse_latency: events_emit: %s", PQerrorMessage(c));
            e->failed = 1;
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) { return nlat ? lat[(size_t)(p * (double)(nlat - 1))] / 1000.0 : 0; }

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: sse_latency HOST PORT SUBSCRIBERS EVENTS RATE CONNINFO\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), n = atoi(argv[3]);
    struct emitter em = {.conninfo = argv[6], .events = atol(argv[4]), .rate = atof(argv[5])};
    struct stream *st = calloc((size_t)n, sizeof(*st));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (st == NULL || ep < 0 || n < 1 || em.events < 1 || em.rate <= 0) {
        fprintf(stderr, "sse_latency: bad arguments or out of memory\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    static const char REQ[] = "GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n";
    int64_t t0 = now_us(CLOCK_MONOTONIC);
    for (int i = 0; i < n; i++) {
        st[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(st[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (st[i].fd < 0 || connect(st[i].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            write(st[i].fd, REQ, sizeof(REQ) - 1) != (ssize_t)(sizeof(REQ) - 1)) {
            fprintf(stderr, "sse_latency: stream %d: %s\n", i, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, st[i].fd, &ev);
    }
    struct epoll_event evs[256];
    char buf[65536];
    int live = 0, closed = 0;
    int64_t until = now_us(CLOCK_MONOTONIC) + 120 * 1000000LL;
    bool emitting = false;
    pthread_t th;
    long expected = em.events * n, received = 0;
    while (received < expected && now_us(CLOCK_MONOTONIC) < until && closed < n) {
        if (!emitting && live == n) {
            /* every stream is live: events from now on reach all of them */
            printf("# %d streams live after %.0f ms\n", n, (double)(now_us(CLOCK_MONOTONIC) - t0) / 1000.0);
            fflush(stdout);
            t0 = now_us(CLOCK_MONOTONIC) - t0;
            if (pthread_create(&th, NULL, emit, &em) != 0)
                return 2;
            emitting = true;
            until = now_us(CLOCK_MONOTONIC) + (int64_t)(em.events / em.rate * 1e6) + 30 * 1000000LL;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int j = 0; j < k; j++) {
            struct stream *s = &st[evs[j].data.u32];
            ssize_t r = read(s->fd, buf, sizeof(buf));
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                closed++;
                continue;
            }
            bool was = s->live;
            long before = s->received;
            on_bytes(s, buf, (size_t)r);
            live += !was && s->live;
            received += s->received - before;
        }
    }
    if (emitting)
        pthread_join(th, NULL);
    qsort(lat, nlat, sizeof(*lat), cmp);
    printf("subscribers=%d events=%ld expected=%ld received=%ld missing=%ld p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f setup_ms=%.0f closed=%d\n",
           n, em.events, expected, received, expected - received, pct(0.5), pct(0.9), pct(0.99), pct(1.0),
           emitting ? (double)t0 / 1000.0 : -1.0, closed);
    for (int i = 0; i < n; i++)
        close(st[i].fd);
    free(st);
    free(lat);
    return received == expected && !em.failed && emitting ? 0 : 1;
}
