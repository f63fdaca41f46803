/* client/http.h against real servers over real sockets: a small HTTP/1.1
 * server on its own threads (normal, slow, oversized and truncated answers;
 * it counts connections and concurrent requests), and `openssl s_server`
 * for TLS. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/http.h"
#include "support/aio_check.h"

/* ---- the test server ---- */

static int listen_fd = -1, port;
static atomic_int accepted, in_flight, max_in_flight;
static atomic_llong closed_at_ns; /* when a slow answer saw its client go */

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void answer(int fd, const char *body, size_t len)
{
    char head[128];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

/* Sleeps up to ms, returning early (true) if the client closed. */
static bool client_gone_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, ms) > 0) {
        char c;
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
            atomic_store(&closed_at_ns, now_ns());
            return true;
        }
    }
    return false;
}

/* One request on fd: false when the connection is done. */
static bool serve_one(int fd, char *buf, size_t size)
{
    size_t len = 0;
    char *end;
    while ((end = memmem(buf, len, "\r\n\r\n", 4)) == NULL) {
        ssize_t r = recv(fd, buf + len, size - 1 - len, 0);
        if (r <= 0)
            return false;
        len += (size_t)r;
    }
    buf[len] = '\0';
    size_t head = (size_t)(end + 4 - buf), clen = 0;
    char *cl = strcasestr(buf, "Content-Length:");
    if (cl != NULL && cl < end)
        clen = strtoul(cl + 15, NULL, 10);
    while (len < head + clen) {
        ssize_t r = recv(fd, buf + len, size - 1 - len, 0);
        if (r <= 0)
            return false;
        len += (size_t)r;
    }
    int now = atomic_fetch_add(&in_flight, 1) + 1, max = atomic_load(&max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&max_in_flight, &max, now))
        ;
    bool keep = true;
    if (strncmp(buf, "GET /hold ", 10) == 0) {
        usleep(100000);
        answer(fd, "held", 4);
    } else if (strncmp(buf, "GET /slow ", 10) == 0) {
        keep = false;
        if (!client_gone_within(fd, 5000))
            answer(fd, "slow", 4);
    } else if (strncmp(buf, "GET /big ", 9) == 0) {
        static char big[100000];
        memset(big, 'x', sizeof(big));
        send_all(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 38); /* no length: the cap trips mid-body */
        send_all(fd, big, sizeof(big));
        keep = false;
    } else if (strncmp(buf, "GET /drop ", 10) == 0) {
        send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial", 48);
        keep = false;
    } else { /* echo: the request line, X-Test and the body */
        char out[4096];
        char *xt = strcasestr(buf, "\r\nX-Test: ");
        int n = snprintf(out, sizeof(out), "%.*s|%.*s|%.*s", (int)strcspn(buf, "\r"), buf,
                         xt ? (int)strcspn(xt + 10, "\r") : 0, xt ? xt + 10 : "", (int)clen, buf + head);
        answer(fd, out, (size_t)n);
    }
    atomic_fetch_sub(&in_flight, 1);
    return keep;
}

static void *connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(65536);
    while (serve_one(fd, buf, 65536))
        ;
    free(buf);
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        atomic_fetch_add(&accepted, 1);
        pthread_t t;
        pthread_create(&t, NULL, connection, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

/* Check forks per test after this, so each test sees a fresh server state
 * (counters reset) with threads started in the child. */
static void server_start(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ck_assert_int_eq(bind(listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(listen_fd, 64), 0);
    socklen_t al = sizeof(a);
    getsockname(listen_fd, (struct sockaddr *)&a, &al);
    port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, acceptor, NULL);
    pthread_detach(t);
}

/* A port bound on loopback but not listening: connecting to it is refused
 * while the socket stays open; closed, the port is free for another server. */
static int bound_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void url(char *out, size_t size, const char *path) { snprintf(out, size, "http://127.0.0.1:%d%s", port, path); }

static int fetch(const char *path, client_http_response *resp)
{
    char u[128];
    url(u, sizeof(u), path);
    client_http_request req = {.url = u};
    return client_http_fetch(&req, resp);
}

/* A task that counts 10 ms ticks and the longest gap between them. */
static atomic_int ticks;
static double worst_gap_ms;
static int ticker(void *arg)
{
    int64_t last = aio_now();
    while (aio_sleep(AIO_MSEC(10)) == 0) {
        double gap = ms_since_ns(last);
        if (gap > worst_gap_ms)
            worst_gap_ms = gap;
        last = aio_now();
        ticks++;
    }
    return 0;
}

/* ---- the tests ---- */

START_TEST(resolves_names_off_the_loop_thread)
{
    /* Debian's libcurl uses the threaded resolver: DNS never blocks the loop */
    ck_assert(client_http_async_dns());
}
END_TEST

AIO_TEST(get_and_post_round_trip_on_one_kept_alive_connection)
{
    server_start();
    char u[128];
    url(u, sizeof(u), "/echo");
    const char *headers[] = {"X-Test: hello there", "Content-Type: text/plain"};
    client_http_request post = {.url = u, .headers = headers, .nheaders = 2, .body = "a body", .body_len = 6};
    client_http_response resp;
    ck_assert_int_eq(client_http_fetch(&post, &resp), 0);
    ck_assert_int_eq(resp.status, 200);
    ck_assert_str_eq(resp.body, "POST /echo HTTP/1.1|hello there|a body");
    ck_assert_ptr_nonnull(strstr(resp.headers, "Content-Length:"));
    client_http_response_dispose(&resp);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(fetch("/echo", &resp), 0);
        ck_assert_str_eq(resp.body, "GET /echo HTTP/1.1||");
        client_http_response_dispose(&resp);
    }
    fprintf(stderr, "round trip: 6 requests, %d connection(s) accepted\n", atomic_load(&accepted));
    ck_assert_int_eq(atomic_load(&accepted), 1);
    return 0;
}

static int fetch_hold(void *arg)
{
    client_http_response resp;
    int rc = fetch("/hold", &resp);
    if (rc == 0 && strcmp(resp.body, "held") != 0)
        rc = -EPROTO;
    client_http_response_dispose(&resp);
    return rc;
}

AIO_TEST(gathered_requests_respect_the_per_host_limit)
{
    server_start();
    ck_assert_int_eq(client_http_configure(&(client_http_options){.max_per_host = 2}), 0);
    aio_call calls[6];
    for (int i = 0; i < 6; i++)
        calls[i] = (aio_call){.fn = fetch_hold};
    int64_t t0 = aio_now();
    ck_assert_int_eq(aio_gather(calls, 6, 0), 0);
    double ms = ms_since_ns(t0);
    fprintf(stderr, "limit 2: 6 requests of 100 ms in %.0f ms, at most %d at once, %d connections\n", ms,
            atomic_load(&max_in_flight), atomic_load(&accepted));
    ck_assert_int_eq(atomic_load(&max_in_flight), 2);
    ck_assert(ms >= 290); /* three rounds of two */
    ck_assert_int_le(atomic_load(&accepted), 2);
    return 0;
}

AIO_TEST(a_deadline_aborts_a_slow_request_and_closes_its_connection)
{
    server_start();
    aio_task *tick = aio_task_spawn(ticker, NULL);
    client_http_response resp;
    aio_timeout scope;
    int64_t t0 = aio_now();
    aio_timeout_open(&scope, AIO_MSEC(200));
    int rc = fetch("/slow", &resp);
    aio_timeout_close(&scope);
    double ms = ms_since_ns(t0);
    client_http_response_dispose(&resp);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    AIO_WAIT_UNTIL(atomic_load(&closed_at_ns) != 0, 2000);
    double closed_ms = (double)(atomic_load(&closed_at_ns) - t0) / 1e6;
    aio_task_cancel(tick);
    aio_task_join(tick);
    fprintf(stderr, "deadline 200 ms on a 5 s answer: returned in %.0f ms, server saw the close at %.0f ms; "
            "%d ticks meanwhile, worst gap %.0f ms\n", ms, closed_ms, atomic_load(&ticks), worst_gap_ms);
    ck_assert(ms >= 190 && ms < 2000);
    ck_assert(closed_ms < 2000);
    ck_assert_int_ge(atomic_load(&ticks), 10);
    return 0;
}

static int fetch_slow(void *arg)
{
    client_http_response resp;
    int rc = fetch("/slow", &resp);
    client_http_response_dispose(&resp);
    return rc;
}

AIO_TEST(cancelling_the_task_aborts_its_request)
{
    server_start();
    aio_task *t = aio_task_spawn(fetch_slow, NULL);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(100)), 0);
    int64_t t0 = aio_now();
    aio_task_cancel(t);
    ck_assert_int_eq(aio_task_join(t), -ECANCELED);
    double ms = ms_since_ns(t0);
    AIO_WAIT_UNTIL(atomic_load(&closed_at_ns) != 0, 2000);
    fprintf(stderr, "cancel: the request ended %.1f ms after the cancel\n", ms);
    ck_assert(ms < 1000);
    return 0;
}

AIO_TEST(a_response_over_the_cap_fails_with_efbig)
{
    server_start();
    char u[128];
    url(u, sizeof(u), "/big");
    client_http_request req = {.url = u, .max_response = 1000};
    client_http_response resp;
    ck_assert_int_eq(client_http_fetch(&req, &resp), -EFBIG);
    ck_assert_int_le(resp.body_len, 1000);
    client_http_response_dispose(&resp);
    return 0;
}

AIO_TEST(a_connection_dropped_mid_body_fails_with_econnreset)
{
    server_start();
    client_http_response resp;
    int rc = fetch("/drop", &resp);
    fprintf(stderr, "dropped mid-body: %d (%s)\n", rc, resp.error);
    ck_assert_int_eq(rc, -ECONNRESET);
    client_http_response_dispose(&resp);
    return 0;
}

/* A plain http:// connection whose first response is slow must not make a
 * second request to the same host wait for it: it gets a connection of
 * its own and its answer at once. */
AIO_TEST(a_slow_request_does_not_hold_up_the_next_one_to_its_host)
{
    server_start();
    aio_task *t = aio_task_spawn(fetch_slow, NULL);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(200)), 0);
    int64_t t0 = aio_now();
    client_http_response resp;
    ck_assert_int_eq(fetch("/hello", &resp), 0);
    double ms = ms_since_ns(t0);
    ck_assert_int_eq(resp.status, 200);
    client_http_response_dispose(&resp);
    ck_assert_msg(ms < 2500, "the second request took %.0f ms", ms);
    ck_assert(!aio_task_done(t));
    aio_task_cancel(t);
    aio_task_join(t);
    return 0;
}

static bool public_v4(const char *a)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    ck_assert_int_eq(inet_pton(AF_INET, a, &in.sin_addr), 1);
    return client_http_address_public((const struct sockaddr *)&in);
}

static bool public_v6(const char *a)
{
    struct sockaddr_in6 in = {.sin6_family = AF_INET6};
    ck_assert_int_eq(inet_pton(AF_INET6, a, &in.sin6_addr), 1);
    return client_http_address_public((const struct sockaddr *)&in);
}

/* curl's own timers still fire (client/http.c arms its timerfd only when
 * curl wants an earlier wake-up than the one pending): a connect that
 * never completes (a listener whose accept queue is full drops the SYN)
 * fails after connect_timeout, 300 ms, long before the task's deadline;
 * meanwhile a slow request to another host is in flight. */
AIO_TEST(curls_connect_timeout_fires_without_a_deadline_of_ours)
{
    server_start();
    int full = socket(AF_INET, SOCK_STREAM, 0), filler = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ck_assert_int_eq(bind(full, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(full, 0), 0);
    ck_assert_int_eq(getsockname(full, (struct sockaddr *)&a, &alen), 0);
    ck_assert_int_eq(connect(filler, (struct sockaddr *)&a, sizeof(a)), 0); /* the queue's one place */
    ck_assert_int_eq(client_http_configure(&(client_http_options){.connect_timeout = AIO_MSEC(300)}), 0);
    aio_task *slow = aio_task_spawn(fetch_slow, NULL);
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    client_http_request req = {.url = u};
    client_http_response resp;
    aio_timeout scope;
    int64_t t0 = aio_now();
    aio_timeout_open(&scope, AIO_SEC(5));
    int rc = client_http_fetch(&req, &resp);
    bool ours = aio_timeout_close(&scope) < 0;
    double ms = ms_since_ns(t0);
    client_http_response_dispose(&resp);
    aio_task_cancel(slow);
    aio_task_join(slow);
    ck_assert_int_eq(client_http_configure(&(client_http_options){0}), 0);
    close(filler);
    close(full);
    ck_assert_msg(!ours, "the task's 5 s deadline ended the connect, not curl's 300 ms");
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_msg(ms >= 250 && ms < 2000, "failed after %.0f ms", ms);
    return 0;
}

START_TEST(public_only_knows_which_addresses_are_public)
{
    const char *v4_private[] = {"127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.0.1", "172.31.255.255",
                                "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0",
                                "224.0.0.1", "255.255.255.255", "192.0.0.8"};
    for (size_t i = 0; i < sizeof(v4_private) / sizeof(v4_private[0]); i++)
        ck_assert_msg(!public_v4(v4_private[i]), "%s counted as public", v4_private[i]);
    const char *v4_public[] = {"8.8.8.8", "172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1",
                               "169.253.0.1", "11.0.0.1", "93.184.216.34"};
    for (size_t i = 0; i < sizeof(v4_public) / sizeof(v4_public[0]); i++)
        ck_assert_msg(public_v4(v4_public[i]), "%s counted as private", v4_public[i]);
    const char *v6_private[] = {"::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "::ffff:127.0.0.1",
                                "::ffff:10.1.2.3", "::ffff:169.254.169.254", "ff02::1", "64:ff9b::a00:1"};
    for (size_t i = 0; i < sizeof(v6_private) / sizeof(v6_private[0]); i++)
        ck_assert_msg(!public_v6(v6_private[i]), "%s counted as public", v6_private[i]);
    const char *v6_public[] = {"2001:4860:4860::8888", "2606:4700::1111", "::ffff:8.8.8.8"};
    for (size_t i = 0; i < sizeof(v6_public) / sizeof(v6_public[0]); i++)
        ck_assert_msg(public_v6(v6_public[i]), "%s counted as private", v6_public[i]);
}
END_TEST

/* GET http://127.0.0.1:port/hello without public_only answers 200. */
static void assert_loopback_answers(void)
{
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/hello", port);
    client_http_request req = {.url = u};
    client_http_response resp;
    ck_assert_int_eq(client_http_fetch(&req, &resp), 0);
    ck_assert_int_eq(resp.status, 200);
    client_http_response_dispose(&resp);
}

/* The check is on the address connected to: a name that resolves to
 * loopback is refused as a literal is, and nothing reaches the server. */
AIO_TEST(public_only_refuses_loopback_by_name_and_by_address)
{
    server_start();
    char u[128];
    /* first a request without the option: its connection, kept for
     * reuse, must not carry a public_only request past the check */
    assert_loopback_answers();
    const char *hosts[] = {"127.0.0.1", "localhost", "[::ffff:127.0.0.1]"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(u, sizeof(u), "http://%s:%d/hello", hosts[i], port);
        client_http_request req = {.url = u, .public_only = true};
        client_http_response resp;
        int rc = client_http_fetch(&req, &resp);
        ck_assert_msg(rc == -EPERM, "%s: %d (%s)", u, rc, resp.error);
        ck_assert_ptr_nonnull(strstr(resp.error, "not a public address"));
        ck_assert_int_eq(resp.status, 0);
        client_http_response_dispose(&resp);
    }
    /* the same request without the option gets through */
    assert_loopback_answers();
    return 0;
}

AIO_TEST(refused_and_unresolvable_fail_clearly_without_blocking_the_loop)
{
    aio_task *tick = aio_task_spawn(ticker, NULL);
    int bound_fd, closed_port = bound_port(&bound_fd);
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", closed_port);
    client_http_request req = {.url = u};
    client_http_response resp;
    ck_assert_int_eq(client_http_fetch(&req, &resp), -ECONNREFUSED);
    client_http_response_dispose(&resp);
    req.url = "http://nonexistent.invalid/";
    int64_t t0 = aio_now();
    int rc = client_http_fetch(&req, &resp);
    fprintf(stderr, "unresolvable: %d (%s) in %.1f ms\n", rc, resp.error, ms_since_ns(t0));
    ck_assert_int_eq(rc, -ENXIO);
    client_http_response_dispose(&resp);
    req.url = "ftp://127.0.0.1/";
    ck_assert_int_eq(client_http_fetch(&req, &resp), -EINVAL);
    client_http_response_dispose(&resp);
    close(bound_fd);
    ck_assert_int_eq(aio_sleep(AIO_MSEC(50)), 0);
    aio_task_cancel(tick);
    aio_task_join(tick);
    ck_assert_int_ge(atomic_load(&ticks), 2);
    return 0;
}

static int leave_a_request_behind(void *arg)
{
    aio_task_detach(aio_task_spawn(fetch_slow, NULL));
    return aio_sleep(AIO_MSEC(100));
}

static int fetch_echo_once(void *arg)
{
    client_http_response resp;
    int rc = fetch("/echo", &resp);
    client_http_response_dispose(&resp);
    return rc;
}

/* The multi belongs to the loop: a loop that ends with a request in flight
 * aborts it and frees the multi (ASan's leak check runs at exit), and the
 * next loop on the thread gets a client of its own. */
START_TEST(a_loop_that_ends_aborts_its_requests_and_frees_its_client)
{
    server_start();
    int64_t t0 = now_ns();
    ck_assert_int_eq(aio_run(leave_a_request_behind, NULL, NULL), 0);
    double ms = ms_since_ns(t0);
    for (int i = 0; i < 200 && atomic_load(&closed_at_ns) == 0; i++)
        usleep(10000);
    ck_assert_int_ne(atomic_load(&closed_at_ns), 0);
    ck_assert(ms < 2000);
    ck_assert_int_eq(aio_run(fetch_echo_once, NULL, NULL), 0);
    ck_assert_int_eq(atomic_load(&accepted), 2);
}
END_TEST

/* ---- TLS: openssl s_server with a certificate made for the test ---- */

static char tls_dir[64] = "/tmp/h2pg-client-XXXXXX";
static pid_t tls_pid;
static int tls_port;

static void tls_start(void)
{
    ck_assert_ptr_nonnull(mkdtemp(tls_dir));
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost -keyout %s/key.pem -out %s/cert.pem 2>/dev/null",
             tls_dir, tls_dir);
    ck_assert_int_eq(system(cmd), 0);
    int fd;
    tls_port = bound_port(&fd); /* a free port, handed over to s_server */
    close(fd);
    char portarg[16], cert[128], key[128];
    snprintf(portarg, sizeof(portarg), "%d", tls_port);
    snprintf(cert, sizeof(cert), "%s/cert.pem", tls_dir);
    snprintf(key, sizeof(key), "%s/key.pem", tls_dir);
    if ((tls_pid = fork()) == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("openssl", "openssl", "s_server", "-accept", portarg, "-cert", cert, "-key", key, "-www", NULL);
        _exit(127);
    }
}

static void tls_stop(void)
{
    kill(tls_pid, SIGTERM);
    waitpid(tls_pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
    system(cmd);
}

AIO_TEST(tls_is_verified_against_the_ca_file_and_refused_when_untrusted)
{
    tls_start();
    char u[128], ca[128];
    snprintf(u, sizeof(u), "https://localhost:%d/", tls_port);
    snprintf(ca, sizeof(ca), "%s/cert.pem", tls_dir);
    client_http_request req = {.url = u, .ca_file = ca};
    client_http_response resp;
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) { /* until s_server listens */
        rc = client_http_fetch(&req, &resp);
        if (rc != 0) {
            client_http_response_dispose(&resp);
            aio_sleep(AIO_MSEC(50));
        }
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(resp.status, 200);
    client_http_response_dispose(&resp);
    req.ca_file = NULL; /* the system store does not know this self-signed certificate */
    rc = client_http_fetch(&req, &resp);
    fprintf(stderr, "untrusted: %d (%s)\n", rc, resp.error);
    client_http_response_dispose(&resp);
    tls_stop();
    ck_assert_int_eq(rc, -EACCES);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("client_http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, resolves_names_off_the_loop_thread);
    tcase_add_test(tc, get_and_post_round_trip_on_one_kept_alive_connection);
    tcase_add_test(tc, gathered_requests_respect_the_per_host_limit);
    tcase_add_test(tc, a_deadline_aborts_a_slow_request_and_closes_its_connection);
    tcase_add_test(tc, cancelling_the_task_aborts_its_request);
    tcase_add_test(tc, a_response_over_the_cap_fails_with_efbig);
    tcase_add_test(tc, a_connection_dropped_mid_body_fails_with_econnreset);
    tcase_add_test(tc, refused_and_unresolvable_fail_clearly_without_blocking_the_loop);
    tcase_add_test(tc, a_slow_request_does_not_hold_up_the_next_one_to_its_host);
    tcase_add_test(tc, curls_connect_timeout_fires_without_a_deadline_of_ours);
    tcase_add_test(tc, public_only_knows_which_addresses_are_public);
    tcase_add_test(tc, public_only_refuses_loopback_by_name_and_by_address);
    tcase_add_test(tc, a_loop_that_ends_aborts_its_requests_and_frees_its_client);
    tcase_add_test(tc, tls_is_verified_against_the_ca_file_and_refused_when_untrusted);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
