/* HTTPS (TLS_CERT_FILE / TLS_KEY_FILE), for deployments without a proxy in
 * front: the real binary, certificates made for the test by the openssl
 * command (ECDSA P-256, and RSA for the RSA suites), and libcurl verifying
 * them.
 *
 * The port speaks HTTP/1.1 only, whatever the client offers: h2o 2.2.5's
 * HTTP/2 has no defence against an HPACK bomb, rapid reset or floods of
 * empty frames (README, "HTTPS without a proxy, and HTTP/2"; the attacks
 * themselves are in test_attacks.c). A client asking for HTTP/2 by ALPN
 * gets HTTP/1.1; one offering only h2 gets no protocol selected. TLS 1.2
 * offers forward-secret AEAD suites only. Over TLS as over plain HTTP,
 * requests on several keep-alive connections run concurrently, problems
 * and limits hold, and a request past its deadline or abandoned by its
 * client has its query cancelled on the PostgreSQL server. Run through
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
static char cert_path[128], key_path[128], other_key_path[128], rsa_cert_path[128], rsa_key_path[128];

/* ---- the certificates ---- */

static void run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) { /* outside any test: Check cannot report it */
        fprintf(stderr, "`%s` failed (%d): is the openssl command installed?\n", cmd, rc);
        exit(EXIT_FAILURE);
    }
}

static void make_certificates(void)
{
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/h2pg-tls-XXXXXX");
    if (mkdtemp(tls_dir) == NULL) {
        perror(tls_dir);
        exit(EXIT_FAILURE);
    }
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tls_dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tls_dir);
    snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", tls_dir);
    snprintf(rsa_cert_path, sizeof(rsa_cert_path), "%s/rsa-cert.pem", tls_dir);
    snprintf(rsa_key_path, sizeof(rsa_key_path), "%s/rsa-key.pem", tls_dir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key_path, cert_path);
    run(cmd);
    snprintf(cmd, sizeof(cmd), "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s 2>/dev/null",
             other_key_path);
    run(cmd);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             rsa_key_path, rsa_cert_path);
    run(cmd);
}

static void remove_certificates(void)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    unlink(rsa_cert_path);
    unlink(rsa_key_path);
    rmdir(tls_dir);
}

/* ---- a TLS server on a fresh database ---- */

typedef struct fixture {
    char *db;
    test_server srv;
    char url[80]; /* https://127.0.0.1:PORT */
    const char *ca; /* the certificate clients verify */
} fixture;

/* The server with the ECDSA certificate (or the RSA one) and the settings
 * of extra (NULL-terminated "K=V", may be NULL). */
static void start_with(fixture *f, bool rsa, const char *const *extra)
{
    f->db = test_pg_create_db();
    f->ca = rsa ? rsa_cert_path : cert_path;
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "TLS_CERT_FILE=%s", f->ca);
    snprintf(key, sizeof(key), "TLS_KEY_FILE=%s", rsa ? rsa_key_path : key_path);
    const char *env[16] = {cert, key, "POOL_MAX=8"};
    size_t n = 3;
    for (const char *const *p = extra; p != NULL && *p != NULL && n < 15; p++)
        env[n++] = *p;
    env[n] = NULL;
    test_server_start(&f->srv, f->db, env);
    snprintf(f->url, sizeof(f->url), "%s", f->srv.base_url);
}

static void start(fixture *f, const char *extra)
{
    const char *const env[] = {extra, NULL};
    start_with(f, false, env);
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
    curl_easy_setopt(c->easy, CURLOPT_CAINFO, f->ca);
    curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c->easy, CURLOPT_HTTP_VERSION, http_version);
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

START_TEST(https_speaks_http11_even_to_a_client_asking_for_http2_and_the_healthcheck_uses_it)
{
    fixture f;
    start(&f, NULL);
    call c;
    /* libcurl offers h2 and http/1.1 by ALPN: the server picks HTTP/1.1 */
    fetch(&c, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_2TLS, NULL);
    ck_assert_int_eq(c.status, 200);
    ck_assert_msg(c.version == CURL_HTTP_VERSION_1_1, "asked for HTTP/2, got version %ld", c.version);
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

/* `openssl s_client` with the ALPN list alpn, sending request (may be
 * NULL) and waiting for the server to close; its output, malloc'd. */
static char *s_client(const fixture *f, const char *alpn, const char *request)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "printf '%s' | timeout 20 openssl s_client -connect 127.0.0.1:%d -servername localhost -CAfile %s "
             "-alpn %s -ign_eof 2>&1",
             request != NULL ? request : "", f->srv.port, f->ca, alpn);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(m);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        fwrite(chunk, 1, n, m);
    pclose(p);
    fclose(m);
    return out;
}

START_TEST(alpn_selects_http11_or_nothing_never_h2)
{
    fixture f;
    start(&f, NULL);
    static const struct {
        const char *offered, *selected; /* NULL: none */
    } cases[] = {
        {"h2,h2-14", NULL}, {"h2", NULL}, {"h2-16,h2-14", NULL}, {"h2,http/1.1", "http/1.1"}, {"http/1.1", "http/1.1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = s_client(&f, cases[i].offered, NULL);
        ck_assert_msg(strstr(out, "Verify return code: 0 (ok)") != NULL, "offering %s: no verified handshake:\n%.3000s",
                      cases[i].offered, out);
        if (cases[i].selected == NULL) {
            ck_assert_msg(strstr(out, "No ALPN negotiated") != NULL && strstr(out, "ALPN protocol:") == NULL,
                          "offering only %s, a protocol was selected:\n%.3000s", cases[i].offered, out);
        } else {
            char want[64];
            snprintf(want, sizeof(want), "ALPN protocol: %s\n", cases[i].selected);
            ck_assert_msg(strstr(out, want) != NULL, "offering %s: expected %s selected:\n%.3000s", cases[i].offered,
                          cases[i].selected, out);
        }
        fprintf(stderr, "tls: ALPN offered %s: %s\n", cases[i].offered,
                cases[i].selected ? cases[i].selected : "none selected");
        free(out);
    }
    /* a client that offered only h2 and speaks HTTP/1.1 anyway is served */
    char *out = s_client(&f, "h2,h2-14", "GET /json HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n");
    ck_assert_msg(strstr(out, "HTTP/1.1 200 ") != NULL && strstr(out, "{\"message\":\"Hello, World!\"}") != NULL,
                  "HTTP/1.1 after offering only h2:\n%.3000s", out);
    free(out);
    stop(&f);
}
END_TEST

static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *arg)
{
    (void)h;
    char *cipher = arg;
    static const char tag[] = "SSL connection using ";
    if (type == CURLINFO_TEXT && size > sizeof(tag) && strncmp(data, tag, sizeof(tag) - 1) == 0)
        snprintf(cipher, 128, "%.*s", (int)(size - sizeof(tag) + 1 - (data[size - 1] == '\n')), data + sizeof(tag) - 1);
    return 0;
}

/* GET /json over TLS 1.2 offering only suite (the client's own security
 * level lowered, so that only the server can refuse it): whether the
 * handshake succeeded; "TLSv1.2 / SUITE" into negotiated. */
static bool tls12_with(const fixture *f, const char *suite, char *negotiated)
{
    char list[128];
    snprintf(list, sizeof(list), "%s:@SECLEVEL=0", suite);
    call c;
    call_init(&c, f, "GET", "/json", NULL, CURL_HTTP_VERSION_1_1, NULL);
    curl_easy_setopt(c.easy, CURLOPT_SSLVERSION, (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2));
    curl_easy_setopt(c.easy, CURLOPT_SSL_CIPHER_LIST, list);
    negotiated[0] = '\0';
    curl_easy_setopt(c.easy, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(c.easy, CURLOPT_DEBUGDATA, negotiated);
    curl_easy_setopt(c.easy, CURLOPT_VERBOSE, 1L);
    CURLcode rc = curl_easy_perform(c.easy);
    call_collect(&c);
    ck_assert_msg(rc == CURLE_OK || rc == CURLE_SSL_CONNECT_ERROR, "%s: %s", suite, curl_easy_strerror(rc));
    if (rc == CURLE_OK)
        ck_assert_int_eq(c.status, 200);
    call_free(&c);
    return rc == CURLE_OK;
}

START_TEST(tls12_offers_only_forward_secret_aead_suites)
{
    static const struct {
        bool rsa;
        const char *suite;
        bool accepted;
    } cases[] = {
        /* the ECDSA certificate */
        {false, "ECDHE-ECDSA-AES128-GCM-SHA256", true},
        {false, "ECDHE-ECDSA-AES256-GCM-SHA384", true},
        {false, "ECDHE-ECDSA-CHACHA20-POLY1305", true},
        {false, "ECDHE-ECDSA-AES128-SHA", false},
        {false, "ECDHE-ECDSA-AES256-SHA", false},
        {false, "ECDHE-ECDSA-AES128-SHA256", false},
        {false, "ECDHE-ECDSA-AES256-SHA384", false},
        /* the RSA certificate: static RSA key exchange and CBC with SHA-1 */
        {true, "ECDHE-RSA-AES128-GCM-SHA256", true},
        {true, "ECDHE-RSA-CHACHA20-POLY1305", true},
        {true, "AES128-SHA", false},
        {true, "AES256-SHA", false},
        {true, "AES256-SHA256", false},
        {true, "AES128-GCM-SHA256", false},
        {true, "ECDHE-RSA-AES128-SHA", false},
        {true, "ECDHE-RSA-AES256-SHA", false},
    };
    for (int rsa = 0; rsa < 2; rsa++) {
        fixture f;
        start_with(&f, rsa, NULL);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            if (cases[i].rsa != rsa)
                continue;
            char negotiated[128];
            bool ok = tls12_with(&f, cases[i].suite, negotiated);
            fprintf(stderr, "tls: TLS 1.2 offering only %s (%s certificate): %s\n", cases[i].suite, rsa ? "RSA" : "ECDSA",
                    ok ? negotiated : "handshake refused");
            ck_assert_msg(ok == cases[i].accepted, "TLS 1.2 with only %s: the handshake %s", cases[i].suite,
                          ok ? "succeeded" : "failed");
            if (ok) {
                char want[128];
                snprintf(want, sizeof(want), "TLSv1.2 / %s", cases[i].suite);
                ck_assert_msg(strcmp(negotiated, want) == 0, "negotiated \"%s\", expected \"%s\"", negotiated, want);
            }
        }
        stop(&f);
    }
}
END_TEST

START_TEST(requests_on_several_keep_alive_tls_connections_run_concurrently)
{
    fixture f;
    start(&f, NULL);
    long long uid = create_user(&f, "tls", "tls@example.com");
    long long locked = create_user(&f, "locked", "locked@example.com");
    PGconn *holder = test_pg_connect(f.db), *watch = test_pg_connect(f.db);
    char sql[160];
    snprintf(sql, sizeof(sql), "BEGIN; SELECT id FROM users WHERE id = %lld FOR UPDATE", locked);
    test_pg_exec(holder, sql);

    enum { N = 60, CONNS = 4 };
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)CONNS);
    /* one request waits on a row lock on its connection all along */
    call slow;
    char path[64], body[128];
    snprintf(path, sizeof(path), "/users/%lld", locked);
    call_init(&slow, &f, "PATCH", path, "{\"name\":\"unlocked\"}", CURL_HTTP_VERSION_2TLS, NULL);
    curl_multi_add_handle(m, slow.easy);
    ck_assert_msg(drive_until(m, watch, true), "the PATCH never reached the row lock");
    static call calls[N];
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
    /* all of them are answered while the PATCH still waits */
    int done = 0;
    int64_t until = now_ms() + 30000;
    while (done < N && now_ms() < until) {
        int running;
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 50, NULL);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE) {
                ck_assert_msg(msg->easy_handle != slow.easy, "the PATCH ended while the row was locked");
                ck_assert_msg(msg->data.result == CURLE_OK, "a request failed: %s",
                              curl_easy_strerror(msg->data.result));
                done++;
            }
    }
    ck_assert_msg(done == N, "%d of %d requests answered beside the waiting PATCH", done, N);
    ck_assert_int_eq(lock_waiters(watch), 1);
    long connects = 0;
    for (int i = 0; i < N; i++) {
        call_collect(&calls[i]);
        long n = 0;
        curl_easy_getinfo(calls[i].easy, CURLINFO_NUM_CONNECTS, &n);
        connects += n;
        ck_assert_int_eq(calls[i].version, CURL_HTTP_VERSION_1_1);
        ck_assert_msg(calls[i].status == (i % 3 == 2 ? 201 : 200), "request %d: %ld %s", i, calls[i].status,
                      calls[i].body);
        json_t *j = call_json(&calls[i]);
        if (i % 3 == 0)
            ck_assert_int_eq(json_array_size(j), 5);
        else if (i % 3 == 1)
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "user"), "id")), uid);
        else
            ck_assert(json_integer_value(json_object_get(j, "id")) > locked);
        json_decref(j);
        curl_multi_remove_handle(m, calls[i].easy);
        call_free(&calls[i]);
    }
    /* the lock goes: the PATCH completes */
    test_pg_exec(holder, "ROLLBACK");
    drive_all(m);
    call_collect(&slow);
    ck_assert_msg(slow.status == 200, "the PATCH after the lock: %ld %s", slow.status, slow.body);
    curl_multi_remove_handle(m, slow.easy);
    call_free(&slow);
    curl_multi_cleanup(m);
    fprintf(stderr, "tls: %d requests over %ld new keep-alive connection(s) (at most %d) while a PATCH waited on a "
            "lock on another\n", N, connects, CONNS);
    ck_assert_msg(connects >= 1 && connects <= CONNS - 1, "%ld connections opened for %d requests", connects, N);
    PQfinish(holder);
    PQfinish(watch);
    stop(&f);
}
END_TEST

/* A head trickled over TLS, one byte every 150 ms, on a raw TLS
 * connection (libcurl's CONNECT_ONLY): the milliseconds from its first
 * byte until the server closed, and what it answered (malloc'd). */
static char *trickle_tls(const fixture *f, const char *head, double *ms)
{
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    char url[96];
    snprintf(url, sizeof(url), "%s/", f->url);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, f->ca);
    curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
    CURLcode rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "connect: %s", curl_easy_strerror(rc));
    char *out = calloc(1, 65536);
    ck_assert_ptr_nonnull(out);
    size_t got = 0, sent = 0, len = strlen(head);
    int64_t t0 = now_us();
    bool closed = false;
    while (!closed && ms_since_us(t0) < 20000) {
        if (sent < len) {
            size_t n = 0;
            rc = curl_easy_send(c, head + sent, 1, &n);
            if (rc == CURLE_OK)
                sent += n;
            else
                ck_assert_msg(rc == CURLE_AGAIN || rc == CURLE_SEND_ERROR, "send: %s", curl_easy_strerror(rc));
        }
        int64_t until = now_us() + 150000;
        while (!closed && now_us() < until) {
            size_t n = 0;
            rc = curl_easy_recv(c, out + got, 65535 - got, &n);
            if (rc == CURLE_OK && n == 0)
                closed = true;
            else if (rc == CURLE_OK)
                got += n;
            else if (rc != CURLE_AGAIN)
                closed = true; /* a reset */
            else
                sleep_ms(5);
        }
    }
    *ms = ms_since_us(t0);
    curl_easy_cleanup(c);
    ck_assert_msg(closed, "a head trickled over TLS for 20 s was not closed");
    return out;
}

START_TEST(problems_and_limits_hold_over_tls)
{
    fixture f;
    start_with(&f, false, (const char *const[]){"MAX_BODY_BYTES=1024", "HEADER_TIMEOUT_MS=1000", NULL});
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
    fetch(&c, &f, "POST", "/users", big, CURL_HTTP_VERSION_2TLS, NULL);
    assert_problem(&c, 413);
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

    /* the front door's checks read the decrypted head */
    const char *no_host[] = {"Host:", NULL};
    fetch(&c, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_1_1, no_host);
    assert_problem(&c, 400);
    call_free(&c);
    static char huge[20 * 1024 + 16];
    memcpy(huge, "X-Huge: ", 8);
    memset(huge + 8, 'h', sizeof(huge) - 9);
    huge[sizeof(huge) - 1] = '\0';
    const char *huge_header[] = {huge, NULL};
    fetch(&c, &f, "GET", "/json", NULL, CURL_HTTP_VERSION_1_1, huge_header);
    assert_problem(&c, 431);
    call_free(&c);
    double ms;
    char *answer = trickle_tls(&f, "GET /json HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &ms);
    ck_assert_msg(strncmp(answer, "HTTP/1.1 408 ", 13) == 0 && strstr(answer, "application/problem+json") != NULL,
                  "a head trickled over TLS: %.300s", answer);
    ck_assert_msg(ms >= 900 && ms <= 3000, "a head trickled over TLS was refused after %.0f ms (HEADER_TIMEOUT_MS=1000)",
                  ms);
    fprintf(stderr, "tls: a head trickled over TLS: 408 and closed %.0f ms after its first byte\n", ms);
    free(answer);
    stop(&f);
}
END_TEST

START_TEST(a_request_past_its_deadline_or_abandoned_by_its_client_has_its_query_cancelled)
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
    int64_t t0 = now_us();
    fetch(&c, &f, "PATCH", path, "{\"name\":\"late\"}", CURL_HTTP_VERSION_1_1, short_deadline);
    assert_problem(&c, 504);
    call_free(&c);
    ck_assert_msg(drive_until(NULL, watch, false), "the timed-out UPDATE still waits on the server");
    fprintf(stderr, "tls: Request-Timeout 300 ms -> 504 and the query gone after %.1f ms\n", ms_since_us(t0));

    /* abandoned: the client closes its connection while the PATCH waits */
    CURLM *m = curl_multi_init();
    call stuck;
    const char *rid[] = {"X-Request-Id: tls-abandoned", NULL};
    call_init(&stuck, &f, "PATCH", path, "{\"name\":\"abandoned\"}", CURL_HTTP_VERSION_1_1, rid);
    curl_multi_add_handle(m, stuck.easy);
    ck_assert_msg(drive_until(m, watch, true), "the PATCH never reached the row lock");
    int64_t gone_at = now_us();
    curl_multi_remove_handle(m, stuck.easy); /* mid-transfer: libcurl closes the connection */
    call_free(&stuck);
    curl_multi_cleanup(m);
    ck_assert_msg(drive_until(NULL, watch, false), "the abandoned request's UPDATE still waits on the server");
    fprintf(stderr, "tls: connection closed mid-request -> query gone on the server in %.1f ms\n",
            ms_since_us(gone_at));
    ck_assert_msg(test_server_log_wait(&f.srv, "\"request_id\":\"tls-abandoned\"", WAIT_MS),
                  "no access line for the abandoned request");
    char *log = test_server_log(&f.srv);
    const char *line = strstr(log, "\"request_id\":\"tls-abandoned\"");
    const char *nl = strchr(line, '\n');
    ck_assert_msg(strstr(line, "\"status\":499") != NULL && strstr(line, "\"status\":499") < nl,
                  "the abandoned request was not logged 499: %.*s", (int)(nl - line), line);
    free(log);

    /* neither cancelled PATCH changed anything once the lock is gone */
    test_pg_exec(holder, "ROLLBACK");
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM users WHERE id = %lld AND name = 'locked'", uid);
    ck_assert_int_eq(test_pg_int(watch, sql), 1);
    PQfinish(holder);
    PQfinish(watch);
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
    make_certificates();
    Suite *s = suite_create("tls");
    TCase *t = tcase_create("https");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, https_speaks_http11_even_to_a_client_asking_for_http2_and_the_healthcheck_uses_it);
    tcase_add_test(t, alpn_selects_http11_or_nothing_never_h2);
    tcase_add_test(t, tls12_offers_only_forward_secret_aead_suites);
    tcase_add_test(t, requests_on_several_keep_alive_tls_connections_run_concurrently);
    tcase_add_test(t, problems_and_limits_hold_over_tls);
    tcase_add_test(t, a_request_past_its_deadline_or_abandoned_by_its_client_has_its_query_cancelled);
    tcase_add_test(t, unusable_certificate_files_are_a_startup_error);
    suite_add_tcase(s, t);
    int rc = run_suite(s);
    remove_certificates();
    curl_global_cleanup();
    return rc;
}
