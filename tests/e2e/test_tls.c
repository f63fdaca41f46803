/* HTTPS with HTTP/2 (TLS_CERT_FILE / TLS_KEY_FILE), for deployments without
 * a proxy in front: the real binary, a certificate made for the test by the
 * openssl command, and libcurl verifying it, speaking HTTP/2 (chosen by
 * ALPN) and HTTP/1.1 over TLS.
 *
 * What HTTP/2 changes for the service is that many requests share one
 * connection: they must run concurrently, and a request the client gives
 * up on (RST_STREAM, the connection staying open) must have its task and
 * its query on the PostgreSQL server cancelled like a client hang-up,
 * without disturbing the other streams. Run through
 * scripts/with-postgres.sh, which sets DATABASE_URL. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "support/clock.h"
#include "support/http.h"
#include "support/pg.h"
#include "support/server.h"
#include "support/suite.h"

#define WAIT_MS 5000

static char tls_dir[64];
static char cert_path[128], key_path[128], other_key_path[128];

/* ---- the certificate ---- */

static void run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) { /* outside any test: Check cannot report it */
        fprintf(stderr, "`%s` failed (%d): is the openssl command installed?\n", cmd, rc);
        exit(EXIT_FAILURE);
    }
}

static void make_certificate(void)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/h2pg-tls-XXXXXX");
    if (mkdtemp(tls_dir) == NULL) {
        perror(tls_dir);
        exit(EXIT_FAILURE);
    }
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tls_dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tls_dir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", tls_dir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key_path, cert_path);
    run(cmd);
    snprintf(cmd, sizeof(cmd), "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s 2>/dev/null",
             other_key_path);
    run(cmd);
}

static void remove_certificate(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    rmdir(tls_dir);
}

/* ---- a TLS server on a fresh database ---- */

typedef struct fixture {
    char *db;
    test_server srv;
    char url[80]; /* https://127.0.0.1:PORT */
} fixture;

static void start(fixture *f, const char *extra)
{
    f->db = test_pg_create_db();
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "TLS_CERT_FILE=%s", cert_path);
    snprintf(key, sizeof(key), "TLS_KEY_FILE=%s", key_path);
    const char *env[] = {cert, key, "POOL_MAX=8", extra, NULL};
    test_server_start(&f->srv, f->db, env);
    snprintf(f->url, sizeof(f->url), "%s", f->srv.base_url);
}

static void stop(fixture *f)
{
    ck_assert_int_eq(test_server_stop(&f->srv), 0);
    test_pg_drop_db(f->db);
}

/* ---- libcurl over TLS, verifying the test's certificate ---- */

typedef struct call {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t len;
    long status;
    long version;
} call;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    call *c = arg;
    char *b = realloc(c->body, c->len + size * n + 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b + c->len, p, size * n);
    c->body = b;
    c->len += size * n;
    c->body[c->len] = '\0';
    return size * n;
}

static void call_init(call *c, const fixture *f, const char *method, const char *path, const char *body,
                      long http_version, const char *const *headers)
{
    memset(c, 0, sizeof(*c));
    char url[512];
    snprintf(url, sizeof(url), "%s%s", f->url, path);
    c->easy = curl_easy_init();
    ck_assert_ptr_nonnull(c->easy);
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_CAINFO, cert_path);
    curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c->easy, CURLOPT_HTTP_VERSION, http_version);
    curl_easy_setopt(c->easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, 30000L);
    if (body != NULL) {
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(c->easy, CURLOPT_COPYPOSTFIELDS, body);
        c->headers = curl_slist_append(c->headers, "Content-Type: application/json");
    }
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        c->headers = curl_slist_append(c->headers, headers[i]);
    c->headers = curl_slist_append(c->headers, "Expect:");
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
}

static void call_collect(call *c)
{
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    curl_easy_getinfo(c->easy, CURLINFO_HTTP_VERSION, &c->version);
}

static void call_free(call *c)
{
    if (c->easy != NULL)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c->body);
    memset(c, 0, sizeof(*c));
}

/* One request on its own connection; the status and version in *c. */
static void fetch(call *c, const fixture *f, const char *method, const char *path, const char *body, long version,
                  const char *const *headers)
{
    call_init(c, f, method, path, body, version, headers);
    CURLcode rc = curl_easy_perform(c->easy);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    call_collect(c);
}

static json_t *call_json(const call *c)
{
    json_error_t e;
    json_t *j = json_loadb(c->body ? c->body : "", c->len, 0, &e);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", e.text, c->body ? c->body : "");
    return j;
}

static void assert_problem(const call *c, long status)
{
    ck_assert_int_eq(c->status, status);
    char *ct = NULL;
    curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
    ck_assert_msg(ct != NULL && strcmp(ct, "application/problem+json") == 0, "Content-Type %s", ct ? ct : "(none)");
    json_t *j = call_json(c);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), status);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "detail")));
    json_decref(j);
}

static long long create_user(const fixture *f, const char *name, const char *email)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"email\":\"%s\"}", name, email);
    call c;
    fetch(&c, f, "POST", "/users", body, CURL_HTTP_VERSION_2TLS, NULL);
    ck_assert_msg(c.status == 201, "POST /users: %ld %s", c.status, c.body);
    json_t *j = call_json(&c);
    long long id = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    call_free(&c);
    return id;
}

/* The service's statements waiting on a lock, as pg_stat_activity shows. */
static long long lock_waiters(PGconn *watch)
{
    return test_pg_int(watch, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'h2pg' "
                              "AND state = 'active' AND wait_event_type = 'Lock'");
}

/* Drives m until pred(watch) holds or WAIT_MS pass; returns whether it held. */
static bool drive_until(CURLM *m, PGconn *watch, bool want_waiting)
{
    int64_t until = now_ms() + WAIT_MS;
    while (now_ms() < until) {
        int running;
        if (m != NULL) {
            curl_multi_perform(m, &running);
            curl_multi_poll(m, NULL, 0, 5, NULL);
        } else {
            usleep(5000);
        }
        if ((lock_waiters(watch) > 0) == want_waiting)
            return true;
    }
    return false;
}

/* Drives m until every transfer is done (30 s at most, else ck_abort). */
static void drive_all(CURLM *m)
{
    int running = 1;
    int64_t until = now_ms() + 30000;
    while (running > 0 && now_ms() < until) {
        curl_multi_perform(m, &running);
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    ck_assert_msg(running == 0, "transfers still running after 30 s");
}

/* ---- tests ---- */

START_TEST(https_speaks_http2_by_alpn_and_http11_and_the_healthcheck_uses_it)
{
    fixture f;
    start(&f, NULL);
    call c;
    fetch(&c, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_2TLS, NULL);
    ck_assert_int_eq(c.status, 200);
    ck_assert_int_eq(c.version, CURL_HTTP_VERSION_2_0);
    ck_assert_str_eq(c.body, "{\"message\":\"Hello, World!\"}");
    call_free(&c);

    fetch(&c, &f, "GET", "/db", NULL, CURL_HTTP_VERSION_1_1, NULL);
    ck_assert_int_eq(c.status, 200);
    ck_assert_int_eq(c.version, CURL_HTTP_VERSION_1_1);
    json_t *j = call_json(&c);
    ck_assert(json_integer_value(json_object_get(j, "id")) >= 1);
    json_decref(j);
    call_free(&c);

    /* plain HTTP on the TLS port gets no HTTP answer */
    call_init(&c, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_1_1, NULL);
    char plain[128];
    snprintf(plain, sizeof(plain), "http://127.0.0.1:%d/json", f.srv.port);
    curl_easy_setopt(c.easy, CURLOPT_URL, plain);
    curl_easy_setopt(c.easy, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(c.easy);
    call_collect(&c);
    ck_assert_msg(rc != CURLE_OK || c.status != 200, "plain HTTP was answered on the TLS port");
    call_free(&c);

    /* the container HEALTHCHECK command speaks TLS to a TLS port */
    char port_env[32], cert[160], key[160];
    snprintf(port_env, sizeof(port_env), "PORT=%d", f.srv.port);
    snprintf(cert, sizeof(cert), "TLS_CERT_FILE=%s", cert_path);
    snprintf(key, sizeof(key), "TLS_KEY_FILE=%s", key_path);
    const char *args[] = {"healthcheck", NULL};
    const char *env[] = {port_env, "HOST=127.0.0.1", cert, key, NULL};
    ck_assert_int_eq(test_run_binary(args, env, NULL), 0);
    stop(&f);
}
END_TEST

START_TEST(http2_streams_of_one_connection_are_served_concurrently)
{
    fixture f;
    start(&f, NULL);
    long long uid = create_user(&f, "h2", "h2@example.com");
    enum { N = 60 };
    call calls[N];
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    char path[64], body[128];
    for (int i = 0; i < N; i++) {
        switch (i % 3) {
        case 0:
            call_init(&calls[i], &f, "GET", "/queries?queries=5", NULL, CURL_HTTP_VERSION_2TLS, NULL);
            break;
        case 1:
            snprintf(path, sizeof(path), "/users/%lld", uid);
            call_init(&calls[i], &f, "GET", path, NULL, CURL_HTTP_VERSION_2TLS, NULL);
            break;
        default:
            snprintf(body, sizeof(body), "{\"name\":\"n%d\",\"email\":\"n%d@example.com\"}", i, i);
            call_init(&calls[i], &f, "POST", "/users", body, CURL_HTTP_VERSION_2TLS, NULL);
        }
        curl_multi_add_handle(m, calls[i].easy);
    }
    drive_all(m);
    long connects = 0;
    for (int i = 0; i < N; i++) {
        call_collect(&calls[i]);
        long n = 0;
        curl_easy_getinfo(calls[i].easy, CURLINFO_NUM_CONNECTS, &n);
        connects += n;
        ck_assert_int_eq(calls[i].version, CURL_HTTP_VERSION_2_0);
        ck_assert_msg(calls[i].status == (i % 3 == 2 ? 201 : 200), "request %d: %ld %s", i, calls[i].status,
                      calls[i].body);
        json_t *j = call_json(&calls[i]);
        if (i % 3 == 0)
            ck_assert_int_eq(json_array_size(j), 5);
        else if (i % 3 == 1)
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "user"), "id")), uid);
        else
            ck_assert(json_integer_value(json_object_get(j, "id")) > uid);
        json_decref(j);
        curl_multi_remove_handle(m, calls[i].easy);
        call_free(&calls[i]);
    }
    ck_assert_int_eq(connects, 1); /* every stream went over one connection */
    curl_multi_cleanup(m);
    stop(&f);
}
END_TEST

START_TEST(problems_and_limits_hold_over_http2)
{
    fixture f;
    start(&f, "MAX_BODY_BYTES=1024");
    call c;
    fetch(&c, &f, "GET", "/users/424242", NULL, CURL_HTTP_VERSION_2TLS, NULL);
    assert_problem(&c, 404);
    call_free(&c);
    fetch(&c, &f, "DELETE", "/json", NULL, CURL_HTTP_VERSION_2TLS, NULL);
    assert_problem(&c, 405);
    call_free(&c);

    char big[4096];
    memset(big, ' ', sizeof(big) - 3);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    /* HTTP/1.1 over TLS: 413 problem+json */
    fetch(&c, &f, "POST", "/users", big, CURL_HTTP_VERSION_1_1, NULL);
    assert_problem(&c, 413);
    call_free(&c);
    /* HTTP/2: h2o 2.2.5 refuses the stream (RST_STREAM REFUSED_STREAM)
     * once the body passes the limit, before any handler runs; the
     * connection goes on serving */
    call_init(&c, &f, "POST", "/users", big, CURL_HTTP_VERSION_2TLS, NULL);
    CURLcode rc = curl_easy_perform(c.easy);
    call_collect(&c);
    ck_assert_msg(rc != CURLE_OK || c.status == 413, "an oversized body was accepted: %ld", c.status);
    call_free(&c);
    PGconn *pg = test_pg_connect(f.db);
    ck_assert_int_eq(test_pg_int(pg, "SELECT count(*) FROM users"), 0);
    PQfinish(pg);

    const char *bad_timeout[] = {"Request-Timeout: soon", NULL};
    fetch(&c, &f, "GET", "/db", NULL, CURL_HTTP_VERSION_2TLS, bad_timeout);
    assert_problem(&c, 400);
    call_free(&c);
    fetch(&c, &f, "POST", "/users", "{\"name\":", CURL_HTTP_VERSION_2TLS, NULL);
    assert_problem(&c, 400);
    call_free(&c);
    stop(&f);
}
END_TEST

START_TEST(an_http2_stream_past_its_deadline_or_reset_by_the_client_has_its_query_cancelled)
{
    fixture f;
    start(&f, NULL);
    long long uid = create_user(&f, "locked", "locked@example.com");
    PGconn *holder = test_pg_connect(f.db), *watch = test_pg_connect(f.db);
    char sql[160];
    snprintf(sql, sizeof(sql), "BEGIN; SELECT id FROM users WHERE id = %lld FOR UPDATE", uid);
    test_pg_exec(holder, sql);
    char path[64];
    snprintf(path, sizeof(path), "/users/%lld", uid);

    /* past its deadline: 504, and the UPDATE stuck on the lock is gone */
    const char *short_deadline[] = {"Request-Timeout: 300", NULL};
    call c;
    fetch(&c, &f, "PATCH", path, "{\"name\":\"late\"}", CURL_HTTP_VERSION_2TLS, short_deadline);
    assert_problem(&c, 504);
    call_free(&c);
    ck_assert_msg(drive_until(NULL, watch, false), "the timed-out UPDATE still waits on the server");

    /* reset by the client while the connection stays open */
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
    call first;
    call_init(&first, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_2TLS, NULL);
    ck_assert_int_eq(curl_multi_add_handle(m, first.easy), CURLM_OK);
    drive_all(m);
    call_collect(&first);
    ck_assert_int_eq(first.status, 200);
    curl_multi_remove_handle(m, first.easy);
    call_free(&first);

    call stuck;
    call_init(&stuck, &f, "PATCH", path, "{\"name\":\"abandoned\"}", CURL_HTTP_VERSION_2TLS, NULL);
    curl_multi_add_handle(m, stuck.easy);
    ck_assert_msg(drive_until(m, watch, true), "the PATCH never reached the row lock");
    int64_t reset_at = now_us();
    /* RST_STREAM, the connection staying open; libcurl writes the frame
     * when it next drives the connection, here for the next stream */
    curl_multi_remove_handle(m, stuck.easy);
    call_free(&stuck);
    call after;
    call_init(&after, &f, "GET", path, NULL, CURL_HTTP_VERSION_2TLS, NULL);
    curl_multi_add_handle(m, after.easy);
    ck_assert_msg(drive_until(m, watch, false), "the reset stream's UPDATE still waits on the server");
    fprintf(stderr, "RST_STREAM -> query gone on the server in %.1f ms\n", ms_since_us(reset_at));

    /* the connection is still good for other streams */
    drive_all(m);
    call_collect(&after);
    long connects = -1;
    curl_easy_getinfo(after.easy, CURLINFO_NUM_CONNECTS, &connects);
    ck_assert_int_eq(after.status, 200);
    ck_assert_int_eq(connects, 0); /* reused the connection of the reset stream */
    curl_multi_remove_handle(m, after.easy);
    call_free(&after);
    curl_multi_cleanup(m);

    /* neither cancelled PATCH changed anything once the lock is gone */
    test_pg_exec(holder, "ROLLBACK");
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM users WHERE id = %lld AND name = 'locked'", uid);
    ck_assert_int_eq(test_pg_int(watch, sql), 1);
    PQfinish(holder);
    PQfinish(watch);
    ck_assert(test_server_log_wait(&f.srv, "\"status\":499", 5000));
    stop(&f);
}
END_TEST

START_TEST(unusable_certificate_files_are_a_startup_error)
{
    char cert[160], key[160], other[160];
    snprintf(cert, sizeof(cert), "TLS_CERT_FILE=%s", cert_path);
    snprintf(key, sizeof(key), "TLS_KEY_FILE=%s", key_path);
    snprintf(other, sizeof(other), "TLS_KEY_FILE=%s", other_key_path);
    const char *args[] = {"serve", NULL};
    char *out = NULL;

    const char *missing[] = {"TLS_CERT_FILE=/nonexistent/cert.pem", key, "DATABASE_URL=host=/nonexistent", NULL};
    ck_assert_int_eq(test_run_binary(args, missing, &out), 2);
    ck_assert_msg(strstr(out, "TLS_CERT_FILE") && strstr(out, "/nonexistent/cert.pem"), "%s", out);
    free(out);

    const char *mismatch[] = {cert, other, "DATABASE_URL=host=/nonexistent", NULL};
    ck_assert_int_eq(test_run_binary(args, mismatch, &out), 2);
    ck_assert_msg(strstr(out, "TLS_KEY_FILE") && strstr(out, other_key_path), "%s", out);
    free(out);

    const char *half[] = {cert, "DATABASE_URL=host=/nonexistent", NULL};
    ck_assert_int_eq(test_run_binary(args, half, &out), 2);
    ck_assert_msg(strstr(out, "TLS_KEY_FILE"), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    make_certificate();
    Suite *s = suite_create("tls");
    TCase *t = tcase_create("https");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, https_speaks_http2_by_alpn_and_http11_and_the_healthcheck_uses_it);
    tcase_add_test(t, http2_streams_of_one_connection_are_served_concurrently);
    tcase_add_test(t, problems_and_limits_hold_over_http2);
    tcase_add_test(t, an_http2_stream_past_its_deadline_or_reset_by_the_client_has_its_query_cancelled);
    tcase_add_test(t, unusable_certificate_files_are_a_startup_error);
    suite_add_tcase(s, t);
    int rc = run_suite(s);
    remove_certificate();
    curl_global_cleanup();
    return rc;
}
