/* scale_answers: every answer belongs to its request.
 *
 *   scale_answers [-c CLIENTS] [-d SECONDS] BASE_URL USER_ID...
 *
 * CLIENTS threads (default 64), each on one kept-alive connection, send
 * GET /users/{id} for ids drawn at random from USER_ID... for SECONDS
 * (default 5), and check that each 200 answer is the user asked for: its
 * "user" object's "id", and every order's and account's "user_id". A pooler
 * or a pipeline that hands one request's rows to another shows here as a
 * wrong id (or as a 500 where the rows had another shape). Exit status 0
 * and one summary line when every answer was 200 and right; otherwise 1
 * and the first wrong answers on stderr (2 for bad usage). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

static const char *base;
static int64_t *ids;
static size_t nids;
static double seconds = 5;
static atomic_long answers, right, wrong, not_200, transport;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static int reported;

struct body {
    char *p;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    char *q = realloc(b->p, b->len + size * n + 1);
    if (q == NULL)
        return 0;
    memcpy(q + b->len, p, size * n);
    b->p = q;
    b->len += size * n;
    b->p[b->len] = '\0';
    return size * n;
}

static void report(const char *fmt, int64_t want, const char *body)
{
    pthread_mutex_lock(&report_lock);
    if (reported++ < 5) {
        fprintf(stderr, fmt, want);
        fprintf(stderr, ": %.300s\n", body);
    }
    pthread_mutex_unlock(&report_lock);
}

/* Whether every user_id in the rows of key is want. */
static bool rows_of(json_t *doc, const char *key, int64_t want)
{
    json_t *rows = json_object_get(doc, key), *row;
    size_t i;
    if (!json_is_array(rows))
        return false;
    json_array_foreach(rows, i, row)
    {
        if (json_integer_value(json_object_get(row, "user_id")) != want)
            return false;
    }
    return true;
}

static bool belongs(const char *body, int64_t want)
{
    json_t *doc = json_loads(body, 0, NULL);
    bool ok = doc != NULL && json_integer_value(json_object_get(json_object_get(doc, "user"), "id")) == want &&
              rows_of(doc, "orders", want) && rows_of(doc, "accounts", want);
    json_decref(doc);
    return ok;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *client_run(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        atomic_fetch_add(&transport, 1);
        return NULL;
    }
    struct body b = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    double end = now_s() + seconds;
    char url[512];
    while (now_s() < end) {
        int64_t want = ids[rand_r(&seed) % nids];
        snprintf(url, sizeof(url), "%s/users/%" PRId64, base, want);
        curl_easy_setopt(c, CURLOPT_URL, url);
        b.len = 0;
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        atomic_fetch_add(&answers, 1);
        if (rc != CURLE_OK) {
            atomic_fetch_add(&transport, 1);
            report("GET /users/%" PRId64 ": transport error", want, curl_easy_strerror(rc));
        } else if (status != 200) {
            atomic_fetch_add(&not_200, 1);
            report("GET /users/%" PRId64 ": not 200", want, b.p ? b.p : "");
        } else if (belongs(b.p, want)) {
            atomic_fetch_add(&right, 1);
        } else {
            atomic_fetch_add(&wrong, 1);
            report("GET /users/%" PRId64 ": another user's answer", want, b.p);
        }
    }
    free(b.p);
    curl_easy_cleanup(c);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: scale_answers [-c CLIENTS] [-d SECONDS] BASE_URL USER_ID...\n");
    return 2;
}

int main(int argc, char **argv)
{
    int clients = 64, opt;
    while ((opt = getopt(argc, argv, "c:d:")) != -1) {
        if (opt == 'c')
            clients = atoi(optarg);
        else if (opt == 'd')
            seconds = atof(optarg);
        else
            return usage();
    }
    if (argc - optind < 2 || clients < 1 || clients > 1024 || seconds <= 0)
        return usage();
    base = argv[optind];
    nids = (size_t)(argc - optind - 1);
    ids = calloc(nids, sizeof(*ids));
    if (ids == NULL)
        return 1;
    for (size_t i = 0; i < nids; i++)
        ids[i] = strtoll(argv[optind + 1 + (int)i], NULL, 10);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_t *t = calloc((size_t)clients, sizeof(*t));
    if (t == NULL)
        return 1;
    double t0 = now_s();
    for (int i = 0; i < clients; i++)
        pthread_create(&t[i], NULL, client_run, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < clients; i++)
        pthread_join(t[i], NULL);
    double took = now_s() - t0;
    long n = atomic_load(&answers);
    printf("%ld GET /users/{id} from %d clients in %.1f s (%.0f/s): %ld the user asked for, %ld another's, %ld not "
           "200, %ld transport errors\n",
           n, clients, took, (double)n / took, atomic_load(&right), atomic_load(&wrong), atomic_load(&not_200),
           atomic_load(&transport));
    free(t);
    free(ids);
    curl_global_cleanup();
    return n > 0 && atomic_load(&right) == n ? 0 : 1;
}
