/* Prometheus metrics (server/metrics.h) without a server: per-worker
 * blocks, application metrics defined from above, and the text format
 * /metrics renders from them (checked with promtool when it is on PATH). */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/metrics.h"
#include "support/suite.h"

static int nothing(server_req *r) { return 0; }

static const server_route_def ROUTES[] = {
    {.method = "GET", .pattern = "/users/{id}", .handler = nothing},
    {.method = "POST", .pattern = "/users", .handler = nothing},
};

/* A family with labels (two series) and one without. */
static const server_metric_def APP[] = {
    {.name = "h2pg_test_pool_connections", .type = "gauge", .help = "Pool connections, by state.",
     .labels = "state=\"idle\""},
    {.name = "h2pg_test_pool_connections", .type = "gauge", .help = "Pool connections, by state.",
     .labels = "state=\"busy\""},
    {.name = "h2pg_test_statements_total", .type = "counter", .help = "Statements run."},
};
enum { IDLE, BUSY, STATEMENTS };

#define MS(n) ((int64_t)(n)*1000000)

static server_metrics *blocks[2];

/* Two workers' blocks with known values:
 *   worker 0: GET /users/{id} 200 in 1 ms, 404 in 3 ms; two rejected;
 *             3 in flight; idle 3, busy 1, statements 10
 *   worker 1: GET /users/{id} 200 in 20 ms; POST /users 201 in 2 s and a
 *             418 in 7 ms; an unmatched 404 in 0.1 ms; 2 in flight;
 *             idle 4, statements 5 */
static void setup(void)
{
    server_metrics_set_routes(ROUTES, sizeof(ROUTES) / sizeof(ROUTES[0]));
    server_metrics_define(APP, sizeof(APP) / sizeof(APP[0]));
    for (int i = 0; i < 2; i++) {
        blocks[i] = server_metrics_create();
        ck_assert_ptr_nonnull(blocks[i]);
    }
    ck_assert_ptr_null(server_metrics_current());

    server_metrics_set_current(blocks[0]);
    ck_assert_ptr_eq(server_metrics_current(), blocks[0]);
    server_metric_set(IDLE, 3);
    server_metric_set(BUSY, 1);
    server_metric_set(STATEMENTS, 7);
    server_metric_set(STATEMENTS, 10); /* a set, not an add */
    server_metrics_request(blocks[0], &ROUTES[0], 200, MS(1));
    server_metrics_request(blocks[0], &ROUTES[0], 404, MS(3));
    server_metrics_rejected(blocks[0]);
    server_metrics_rejected(blocks[0]);
    server_metrics_sample(blocks[0], 3);

    server_metrics_set_current(blocks[1]);
    server_metric_set(IDLE, 4);
    server_metric_set(STATEMENTS, 5);
    server_metrics_request(blocks[1], &ROUTES[0], 200, MS(20));
    server_metrics_request(blocks[1], &ROUTES[1], 201, MS(2000));
    server_metrics_request(blocks[1], &ROUTES[1], 418, MS(7));
    server_metrics_request(blocks[1], NULL, 404, MS(1) / 10);
    server_metrics_sample(blocks[1], 2);

    /* off a worker thread a set is ignored */
    server_metrics_set_current(NULL);
    server_metric_set(IDLE, 1000);
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++)
        server_metrics_destroy(blocks[i]);
}

static char *render(size_t n)
{
    size_t len = 0;
    char *text = server_metrics_render(blocks, n, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(len, strlen(text));
    ck_assert_msg(len > 0 && text[len - 1] == '\n', "the exposition ends with a newline");
    return text;
}

/* The value of the sample line that starts with series (name plus labels,
 * exactly), or -1 if there is none; asserts there is at most one. */
static double sample(const char *text, const char *series)
{
    double v = -1;
    int found = 0;
    size_t n = strlen(series);
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            found++;
        }
        line = *end ? end + 1 : end;
    }
    ck_assert_msg(found <= 1, "%d lines for %s", found, series);
    return v;
}

/* How many lines are exactly line. */
static int lines_equal(const char *text, const char *line)
{
    int count = 0;
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            count++;
    return count;
}

START_TEST(application_metrics_are_summed_over_the_blocks)
{
    char *text = render(2);
    ck_assert_double_eq(sample(text, "h2pg_test_pool_connections{state=\"idle\"}"), 7);
    ck_assert_double_eq(sample(text, "h2pg_test_pool_connections{state=\"busy\"}"), 1);
    ck_assert_double_eq(sample(text, "h2pg_test_statements_total"), 15);
    free(text);

    /* one block alone is that worker's values */
    text = render(1);
    ck_assert_double_eq(sample(text, "h2pg_test_pool_connections{state=\"idle\"}"), 3);
    ck_assert_double_eq(sample(text, "h2pg_test_statements_total"), 10);
    free(text);
    server_metrics *second[] = {blocks[1]};
    size_t len;
    text = server_metrics_render(second, 1, &len);
    ck_assert_double_eq(sample(text, "h2pg_test_pool_connections{state=\"idle\"}"), 4);
    ck_assert_double_eq(sample(text, "h2pg_test_pool_connections{state=\"busy\"}"), 0);
    free(text);
}
END_TEST

START_TEST(every_family_has_one_help_and_one_type_line_before_its_samples)
{
    char *text = render(2);
    ck_assert_int_eq(lines_equal(text, "# HELP h2pg_test_pool_connections Pool connections, by state."), 1);
    ck_assert_int_eq(lines_equal(text, "# TYPE h2pg_test_pool_connections gauge"), 1);
    ck_assert_int_eq(lines_equal(text, "# HELP h2pg_test_statements_total Statements run."), 1);
    ck_assert_int_eq(lines_equal(text, "# TYPE h2pg_test_statements_total counter"), 1);
    /* the labelled family's samples come together, right after its TYPE */
    const char *type = strstr(text, "# TYPE h2pg_test_pool_connections gauge\n");
    ck_assert_ptr_nonnull(type);
    const char *next = type + strlen("# TYPE h2pg_test_pool_connections gauge\n");
    static const char both[] = "h2pg_test_pool_connections{state=\"idle\"} 7\n"
                               "h2pg_test_pool_connections{state=\"busy\"} 1\n";
    ck_assert_msg(strncmp(next, both, sizeof(both) - 1) == 0, "after the TYPE line: %.120s", next);

    /* no family of the whole exposition is announced twice, and each TYPE
     * follows its HELP */
    char *copy = strdup(text);
    char *names[64];
    int nnames = 0;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        if (sscanf(line, "# TYPE %127s", name) != 1)
            continue;
        for (int i = 0; i < nnames; i++)
            ck_assert_msg(strcmp(names[i], name) != 0, "family %s has two TYPE lines", name);
        ck_assert_int_lt(nnames, 64);
        names[nnames++] = strdup(name);
        char help[160];
        snprintf(help, sizeof(help), "# HELP %s ", name);
        ck_assert_msg(strstr(text, help) != NULL && strstr(text, help) < strstr(text, line), "%s has no HELP before it",
                      name);
    }
    ck_assert_int_ge(nnames, 7);
    for (int i = 0; i < nnames; i++)
        free(names[i]);
    free(copy);
    free(text);
}
END_TEST

START_TEST(requests_are_counted_by_route_method_and_status)
{
    char *text = render(2);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users/{id}\",method=\"GET\",status=\"200\"}"), 2);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users/{id}\",method=\"GET\",status=\"404\"}"), 1);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users\",method=\"POST\",status=\"201\"}"), 1);
    /* a status not tracked one by one counts as its class */
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users\",method=\"POST\",status=\"4xx\"}"), 1);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users\",method=\"POST\",status=\"418\"}"), -1);
    /* no route matched */
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"unmatched\",method=\"\",status=\"404\"}"), 1);
    /* combinations that never happened are not rendered */
    ck_assert_double_eq(sample(text, "h2pg_http_requests_total{route=\"/users\",method=\"POST\",status=\"200\"}"), -1);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_in_flight"), 5);
    ck_assert_double_eq(sample(text, "h2pg_http_requests_rejected_total"), 2);
    ck_assert_double_ge(sample(text, "process_resident_memory_bytes"), 1);
    free(text);
}
END_TEST

START_TEST(the_latency_histogram_is_cumulative_per_route)
{
    char *text = render(2);
    const char *get = "h2pg_http_request_duration_seconds_bucket{route=\"/users/{id}\",method=\"GET\",le=\"%s\"}";
    static const struct {
        const char *le;
        double want;
    } buckets[] = {{"0.0005", 0}, {"0.001", 1}, {"0.0025", 1}, {"0.005", 2}, {"0.01", 2},
                   {"0.025", 3},  {"0.1", 3},   {"10", 3},     {"+Inf", 3}};
    for (size_t i = 0; i < sizeof(buckets) / sizeof(buckets[0]); i++) {
        char series[256];
        snprintf(series, sizeof(series), get, buckets[i].le);
        ck_assert_msg(sample(text, series) == buckets[i].want, "%s: %g, expected %g", series, sample(text, series),
                      buckets[i].want);
    }
    ck_assert_double_eq(sample(text, "h2pg_http_request_duration_seconds_count{route=\"/users/{id}\",method=\"GET\"}"), 3);
    ck_assert_double_eq_tol(sample(text, "h2pg_http_request_duration_seconds_sum{route=\"/users/{id}\",method=\"GET\"}"),
                            0.024, 1e-9);
    /* the other routes have theirs */
    ck_assert_double_eq(sample(text, "h2pg_http_request_duration_seconds_count{route=\"/users\",method=\"POST\"}"), 2);
    ck_assert_double_eq(
        sample(text, "h2pg_http_request_duration_seconds_bucket{route=\"/users\",method=\"POST\",le=\"1\"}"), 1);
    ck_assert_double_eq(
        sample(text, "h2pg_http_request_duration_seconds_bucket{route=\"/users\",method=\"POST\",le=\"2.5\"}"), 2);
    ck_assert_double_eq(
        sample(text, "h2pg_http_request_duration_seconds_bucket{route=\"/users\",method=\"POST\",le=\"0.0005\"}"), 0);
    ck_assert_double_eq(sample(text, "h2pg_http_request_duration_seconds_count{route=\"unmatched\",method=\"\"}"), 1);
    ck_assert_double_eq(
        sample(text, "h2pg_http_request_duration_seconds_bucket{route=\"unmatched\",method=\"\",le=\"0.0005\"}"), 1);
    /* one HELP and TYPE for the whole histogram, whatever the routes */
    ck_assert_int_eq(lines_equal(text, "# TYPE h2pg_http_request_duration_seconds histogram"), 1);
    free(text);
}
END_TEST

START_TEST(an_empty_block_renders_zeros_and_no_request_series)
{
    server_metrics *fresh = server_metrics_create();
    ck_assert_ptr_nonnull(fresh);
    size_t len;
    char *text = server_metrics_render(&fresh, 1, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_null(strstr(text, "h2pg_http_requests_total{"));
    ck_assert_ptr_null(strstr(text, "h2pg_http_request_duration_seconds_bucket{"));
    ck_assert_double_eq(sample(text, "h2pg_http_requests_in_flight"), 0);
    ck_assert_double_eq(sample(text, "h2pg_test_statements_total"), 0);
    ck_assert_int_eq(lines_equal(text, "# TYPE h2pg_test_pool_connections gauge"), 1);
    free(text);
    server_metrics_destroy(fresh);
    server_metrics_destroy(NULL); /* harmless */
}
END_TEST

/* Whether promtool is on PATH. */
static bool have_promtool(void)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        return false;
    char *dirs = strdup(path);
    bool found = false;
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d != NULL && !found; d = strtok_r(NULL, ":", &save)) {
        char file[4096];
        snprintf(file, sizeof(file), "%s/promtool", d);
        found = access(file, X_OK) == 0;
    }
    free(dirs);
    return found;
}

START_TEST(the_exposition_passes_promtool)
{
    if (!have_promtool()) {
        fprintf(stderr, "test_metrics: promtool is not on PATH; skipping its check\n");
        return;
    }
    char *text = render(2);
    char path[] = "/tmp/h2pg_test_metrics_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char said[4096];
    size_t n = fread(said, 1, sizeof(said) - 1, p);
    said[n] = '\0';
    int status = pclose(p);
    unlink(path);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "promtool check metrics: status %d:\n%s\n---\n%s",
                  status, said, text);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("server_metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, application_metrics_are_summed_over_the_blocks);
    tcase_add_test(tc, every_family_has_one_help_and_one_type_line_before_its_samples);
    tcase_add_test(tc, requests_are_counted_by_route_method_and_status);
    tcase_add_test(tc, the_latency_histogram_is_cumulative_per_route);
    tcase_add_test(tc, an_empty_block_renders_zeros_and_no_request_series);
    tcase_add_test(tc, the_exposition_passes_promtool);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
