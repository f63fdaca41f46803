#include "server/config.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum opt_kind {
    OPT_STR,    /* const char *, any text */
    OPT_INT,    /* int, decimal digits within [min, max] */
    OPT_BYTES,  /* size_t, digits with an optional binary suffix, within [min, max] */
    OPT_BOOL,   /* bool; a bare flag means true */
    OPT_CHOICE, /* an enum, or a bool, picked by name from choices */
};

struct choice {
    const char *name;
    int value;
};

struct opt_spec {
    const char *env;
    const char *flag;
    enum opt_kind kind;
    size_t offset;
    size_t size; /* of the field: OPT_CHOICE stores into enums and bools alike */
    /* Parsed like any other value, so a default can never bypass the rules;
     * NULL when it is computed at load time (THREADS). */
    const char *def;
    const char *def_doc; /* shown by --help instead of def when def alone would mislead */
    long long min, max;
    const struct choice *choices; /* OPT_CHOICE: ends with a NULL name */
    const char *meta;             /* placeholder for the value in --help */
    const char *help;
};

static const struct choice pooler_choices[] = {
    {"none", SERVER_POOLER_NONE},
    {"transaction", SERVER_POOLER_TRANSACTION},
    {NULL, 0},
};

static const struct choice affinity_choices[] = {
    {"auto", SERVER_CPU_AFFINITY_AUTO},
    {"off", SERVER_CPU_AFFINITY_OFF},
    {NULL, 0},
};

static const struct choice forwarded_choices[] = {
    {"x-forwarded-for", SERVER_FORWARDED_XFF},
    {"forwarded", SERVER_FORWARDED_RFC7239},
    {NULL, 0},
};

static const struct choice level_choices[] = {
    {"debug", BASE_LOG_DEBUG}, {"info", BASE_LOG_INFO}, {"warn", BASE_LOG_WARN}, {"error", BASE_LOG_ERROR}, {NULL, 0},
};

static const struct choice format_choices[] = {
    {"json", true},
    {"text", false},
    {NULL, 0},
};

#define FIELD(f) .offset = offsetof(server_config, f), .size = sizeof(((server_config *)0)->f)

#define STR(env_, flag_, field_, def_, meta_, def_doc_, help_)                                                                     \
    {.env = env_, .flag = flag_, .kind = OPT_STR, FIELD(field_), .def = def_, .def_doc = def_doc_, .meta = meta_, .help = help_}
#define INT(env_, flag_, field_, def_, min_, max_, meta_, help_)                                                                   \
    {.env = env_, .flag = flag_, .kind = OPT_INT, FIELD(field_), .def = def_, .min = min_, .max = max_, .meta = meta_, .help = help_}
#define CHOICE(env_, flag_, field_, def_, choices_, help_)                                                                         \
    {.env = env_, .flag = flag_, .kind = OPT_CHOICE, FIELD(field_), .def = def_, .choices = choices_, .help = help_}

static const struct opt_spec options[] = {
    STR("DATABASE_URL", "--database-url", database_url, "", "URL", "libpq's defaults (PG* variables)",
        "PostgreSQL connection string: a libpq URI or key=value conninfo"),
    STR("DATABASE_READ_URL", "--database-read-url", database_read_url, "", "URL", "none",
        "read replicas: one conninfo, or several URIs separated by spaces; /db, /queries, /fortunes read there"),
    STR("DATABASE_LISTEN_URL", "--database-listen-url", database_listen_url, "", "URL", "DATABASE_URL",
        "where the event stream and the outbox sequencer LISTEN; set it to PostgreSQL itself behind a "
        "transaction-pooling PgBouncer (without it there, they poll)"),
    CHOICE("DATABASE_POOLER", "--database-pooler", database_pooler, "none", pooler_choices,
           "use transaction when a transaction-mode pooler such as PgBouncer sits in front of PostgreSQL"),
    STR("HOST", "--host", host, "0.0.0.0", "ADDR", NULL, "address to listen on"),
    INT("PORT", "--port", port, "8080", 1, 65535, "N", "TCP port to listen on"),
    {.env = "THREADS",
     .flag = "--threads",
     .kind = OPT_INT,
     FIELD(threads),
     .def = NULL,
     .def_doc = "the number of online CPUs",
     .min = 1,
     .max = 256,
     .meta = "N",
     .help = "event-loop threads"},
    CHOICE("WORKER_CPU_AFFINITY", "--worker-cpu-affinity", worker_cpu_affinity, "auto", affinity_choices,
           "auto: when THREADS is a multiple of the CPUs the process may run on, event-loop thread i runs on the "
           "i-th of them only (fewer migrations and cache misses per request); off: wherever the scheduler puts it"),
    INT("POOL_MIN", "--pool-min", pool_min, "2", 0, 10000, "N", "database connections kept open, in total across all threads"),
    INT("POOL_MAX", "--pool-max", pool_max, "32", 1, 10000, "N", "most database connections open at once, in total across all threads"),
    INT("POOL_ACQUIRE_TIMEOUT_MS", "--pool-acquire-timeout-ms", pool_acquire_timeout_ms, "2000", 1, 600000, "MS",
        "how long a request may wait for a free database connection"),
    INT("REQUEST_TIMEOUT_MS", "--request-timeout-ms", request_timeout_ms, "5000", 1, 3600000, "MS",
        "time budget for handling one request"),
    INT("STREAM_STALL_TIMEOUT_MS", "--stream-stall-timeout-ms", stream_stall_timeout_ms, "60000", 1, 3600000, "MS",
        "how long a streamed response (the export) waits for the client to take the next chunk"),
    INT("EVENTS_HEARTBEAT_MS", "--events-heartbeat-ms", events_heartbeat_ms, "15000", 10, 3600000, "MS",
        "GET /events sends a comment line after this long without an event, so idle connections stay open"),
    INT("EVENTS_POLL_MS", "--events-poll-ms", events_poll_ms, "1000", 10, 600000, "MS",
        "how often GET /events reads new events when it cannot LISTEN; with LISTEN, a sweep every ten times this "
        "catches what a notification missed"),
    {.env = "MAX_BODY_BYTES",
     .flag = "--max-body-bytes",
     .kind = OPT_BYTES,
     FIELD(max_body_bytes),
     .def = "1MiB",
     .min = 1,
     .max = 1073741824,
     .meta = "BYTES",
     .help = "largest request body accepted"},
    INT("MAX_INFLIGHT", "--max-inflight", max_inflight, "4096", 1, 1000000, "N", "requests handled at once, per thread"),
    INT("STATEMENT_TIMEOUT_MS", "--statement-timeout-ms", statement_timeout_ms, "30000", 0, 86400000, "MS",
        "PostgreSQL statement_timeout on every connection; 0 turns it off"),
    INT("IDLE_IN_TRANSACTION_TIMEOUT_MS", "--idle-in-transaction-timeout-ms", idle_in_transaction_timeout_ms, "120000", 0,
        86400000, "MS",
        "PostgreSQL idle_in_transaction_session_timeout on every connection (keep it above STREAM_STALL_TIMEOUT_MS); 0 turns it off"),
    INT("KEEPALIVE_TIMEOUT_MS", "--keepalive-timeout-ms", keepalive_timeout_ms, "75000", 1000, 3600000, "MS",
        "how long an idle HTTP connection is kept open"),
    INT("SHUTDOWN_GRACE_MS", "--shutdown-grace-ms", shutdown_grace_ms, "10000", 0, 600000, "MS",
        "on shutdown, how long requests in flight may take to finish"),
    INT("TX_MAX_RETRIES", "--tx-max-retries", tx_max_retries, "10", 0, 1000, "N",
        "times a transaction is retried after a serialization failure or deadlock"),
    INT("IDEMPOTENCY_RETENTION_S", "--idempotency-retention-s", idempotency_retention_s, "86400", 1, 31536000, "SECONDS",
        "how long the outcome of a request sent with an Idempotency-Key is kept for its retries; an older key counts "
        "as new, and a background task deletes it"),
    INT("EVENTS_RETENTION_S", "--events-retention-s", events_retention_s, "604800", 1, 31536000, "SECONDS",
        "how long an event (GET /events, webhooks) is kept for readers to resume from; a background task deletes "
        "older ones, and the settled webhook deliveries of those"),
    {.env = "MIGRATE_ON_START",
     .flag = "--migrate-on-start",
     .kind = OPT_BOOL,
     FIELD(migrate_on_start),
     .def = "true",
     .help = "apply pending migrations before serving"},
    STR("MIGRATIONS_DIR", "--migrations-dir", migrations_dir, "", "PATH", "the migrations embedded in the binary",
        "directory to read migrations from"),
    CHOICE("LOG_LEVEL", "--log-level", log_level, "info", level_choices, "least severe level that is logged"),
    CHOICE("LOG_FORMAT", "--log-format", log_json, "json", format_choices, "log line format"),
    STR("TRUSTED_PROXIES", "--trusted-proxies", trusted_proxies, "", "CIDRS", "none",
        "CIDR list of proxies whose forwarding headers are believed"),
    CHOICE("FORWARDED_HEADER", "--forwarded-header", forwarded_header, "x-forwarded-for", forwarded_choices,
           "the one forwarding header the proxies set and the service believes: x-forwarded-for (with "
           "X-Forwarded-Proto) or forwarded (RFC 7239); the other is ignored"),
    {.env = "MAX_HEADER_BYTES",
     .flag = "--max-header-bytes",
     .kind = OPT_BYTES,
     FIELD(max_header_bytes),
     .def = "16KiB",
     .min = 1024,
     .max = 262144,
     .meta = "BYTES",
     .help = "largest request header section accepted (431 beyond)"},
    INT("HEADER_TIMEOUT_MS", "--header-timeout-ms", header_timeout_ms, "10000", 100, 600000, "MS",
        "how long a client may take to send a request's header section once it started it"),
    INT("EXPORT_MAX_CONCURRENT", "--export-max-concurrent", export_max_concurrent, "0", 0, 10000, "N",
        "streamed exports at once, in total across all threads (each holds a database connection); 0: a quarter of "
        "POOL_MAX, at least 1"),
    STR("TLS_CERT_FILE", "--tls-cert-file", tls_cert_file, "", "PATH", "none (plain HTTP)",
        "certificate chain file; set together with TLS_KEY_FILE to serve HTTPS"),
    STR("TLS_KEY_FILE", "--tls-key-file", tls_key_file, "", "PATH", "none (plain HTTP)",
        "private key file for TLS_CERT_FILE"),
    /* webhooks */
    {.env = "WEBHOOK_ALLOW_PRIVATE",
     .flag = "--webhook-allow-private",
     .kind = OPT_BOOL,
     FIELD(webhook_allow_private),
     .def = "false",
     .help = "let webhooks reach loopback, private, link-local and metadata addresses (tests, trusted networks)"},
    INT("WEBHOOK_TIMEOUT_MS", "--webhook-timeout-ms", webhook_timeout_ms, "10000", 100, 600000, "MS",
        "how long one delivery attempt may take before it counts as failed"),
    INT("WEBHOOK_MAX_ATTEMPTS", "--webhook-max-attempts", webhook_max_attempts, "12", 1, 1000, "N",
        "delivery attempts of one event to one webhook before it is marked failed"),
    INT("WEBHOOK_RETRY_BASE_MS", "--webhook-retry-base-ms", webhook_retry_base_ms, "1000", 1, 86400000, "MS",
        "pause before the first retry; it doubles with each attempt (with jitter) up to WEBHOOK_RETRY_MAX_MS"),
    INT("WEBHOOK_RETRY_MAX_MS", "--webhook-retry-max-ms", webhook_retry_max_ms, "3600000", 1, 604800000, "MS",
        "longest pause between two delivery attempts"),
    INT("WEBHOOK_POLL_MS", "--webhook-poll-ms", webhook_poll_ms, "500", 10, 60000, "MS",
        "how often each worker looks for new events to fan out and deliveries that are due"),
    STR("AUTH_JWKS_FILE", "--auth-jwks-file", auth_jwks_file, "", "PATH", "none",
        "JWK Set file of the keys that sign bearer tokens (re-read when it changes); with it or AUTH_JWKS_URL, "
        "every route but the probes, /metrics, /openapi.json and the benchmarks needs a token"),
    STR("AUTH_JWKS_URL", "--auth-jwks-url", auth_jwks_url, "", "URL", "none",
        "http(s) URL of a JWK Set of token-signing keys, fetched again when a token names an unknown kid"),
    INT("AUTH_JWKS_REFETCH_S", "--auth-jwks-refetch-s", auth_jwks_refetch_s, "10", 1, 86400, "SECONDS",
        "least time between two fetches of AUTH_JWKS_URL"),
    STR("AUTH_ISSUER", "--auth-issuer", auth_issuer, "", "TEXT", "not checked", "the iss a token must carry"),
    STR("AUTH_AUDIENCE", "--auth-audience", auth_audience, "", "TEXT", "not checked",
        "a value the token's aud must be or contain"),
    INT("AUTH_LEEWAY_S", "--auth-leeway-s", auth_leeway_s, "30", 0, 3600, "SECONDS",
        "clock skew allowed on a token's exp, nbf and iat"),
    STR("AUTH_ALGORITHMS", "--auth-algorithms", auth_algorithms, "RS256,ES256", "ALGS", NULL,
        "token signature algorithms accepted, comma separated: RS256, ES256, HS256 (which needs an oct key)"),
    INT("RATE_LIMIT_PER_S", "--rate-limit-per-s", rate_limit_per_s, "0", 0, 1000000, "N",
        "requests per second per caller (token subject, else client address), per process; 0 turns it off"),
    INT("RATE_LIMIT_BURST", "--rate-limit-burst", rate_limit_burst, "0", 0, 1000000, "N",
        "requests a caller may send at once before the rate applies; 0: RATE_LIMIT_PER_S"),
    STR("CORS_ALLOW_ORIGINS", "--cors-allow-origins", cors_allow_origins, "", "ORIGINS", "none",
        "browser origins allowed to call the API (comma separated, e.g. https://app.example.com), or *"),
};

#undef STR
#undef INT
#undef CHOICE
#undef FIELD

enum { N_OPTIONS = sizeof(options) / sizeof(options[0]) };

static const struct {
    const char *name;
    server_command cmd;
    const char *help;
} subcommands[] = {
    {"serve", SERVER_CMD_SERVE, "run the HTTP service (the default)"},
    {"migrate", SERVER_CMD_MIGRATE, "apply pending migrations, then exit"},
    {"healthcheck", SERVER_CMD_HEALTHCHECK, "check the service's health; exit status 0 when healthy"},
};

static const char *const true_words[] = {"true", "1", "yes", "on"};
static const char *const false_words[] = {"false", "0", "no", "off"};

static const struct {
    const char *suffix;
    uint64_t unit;
} byte_units[] = {{"", 1}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}};

/* Values come from the operator and are echoed back; the cap keeps one
 * absurd value from crowding the rest of the message out of err. */
#define SHOWN "\"%.64s\""

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* s[0..len) as a decimal number no greater than limit: -EINVAL unless it is
 * one or more digits only, -ERANGE when it exceeds limit (overflow included). */
static int parse_decimal(const char *s, size_t len, uint64_t limit, uint64_t *out)
{
    if (len == 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (d > limit || v > (limit - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_bytes(const char *s, uint64_t limit, uint64_t *out)
{
    size_t digits = strspn(s, "0123456789");
    for (size_t i = 0; i < sizeof(byte_units) / sizeof(byte_units[0]); i++) {
        if (strcmp(s + digits, byte_units[i].suffix) != 0)
            continue;
        uint64_t n;
        int rc = parse_decimal(s, digits, limit / byte_units[i].unit, &n);
        if (rc < 0)
            return rc;
        *out = n * byte_units[i].unit;
        return 0;
    }
    return -EINVAL;
}

static int parse_bool(const char *s, bool *out)
{
    for (size_t i = 0; i < sizeof(true_words) / sizeof(true_words[0]); i++) {
        if (strcasecmp(s, true_words[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, false_words[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static void store_int(const struct opt_spec *o, server_config *cfg, int v)
{
    void *field = (char *)cfg + o->offset;
    if (o->size == sizeof(bool)) {
        *(bool *)field = v != 0;
    } else {
        assert(o->size == sizeof(int));
        *(int *)field = v;
    }
}

/* Writes the choices of o into buf, joined by sep. */
static void list_choices(const struct opt_spec *o, const char *sep, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (const struct choice *c = o->choices; c->name != NULL && n < cap; c++) {
        int w = snprintf(buf + n, cap - n, "%s%s", c == o->choices ? "" : sep, c->name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

/* Parses v by o's rules into cfg; on a bad value, says what is allowed. */
static int set_option(const struct opt_spec *o, const char *v, server_config *cfg, char *err, size_t errlen)
{
    void *field = (char *)cfg + o->offset;
    uint64_t n;
    int rc;
    switch (o->kind) {
    case OPT_STR:
        assert(o->size == sizeof(const char *));
        *(const char **)field = v;
        return 0;
    case OPT_INT:
        assert(o->size == sizeof(int) && o->min >= 0 && o->max <= INT_MAX);
        rc = parse_decimal(v, strlen(v), (uint64_t)o->max, &n);
        if (rc == -EINVAL)
            return fail(err, errlen, "%s (%s): " SHOWN " is not an integer in %lld..%lld", o->env, o->flag, v, o->min, o->max);
        if (rc < 0 || n < (uint64_t)o->min)
            return fail(err, errlen, "%s (%s): " SHOWN " is out of range %lld..%lld", o->env, o->flag, v, o->min, o->max);
        *(int *)field = (int)n;
        return 0;
    case OPT_BYTES:
        assert(o->size == sizeof(size_t) && o->min >= 0);
        rc = parse_bytes(v, (uint64_t)o->max, &n);
        if (rc == -EINVAL)
            return fail(err, errlen,
                        "%s (%s): " SHOWN " is not a byte count in %lld..%lld (digits, optionally followed by KiB, MiB or GiB)",
                        o->env, o->flag, v, o->min, o->max);
        if (rc < 0 || n < (uint64_t)o->min)
            return fail(err, errlen, "%s (%s): " SHOWN " is out of range %lld..%lld bytes", o->env, o->flag, v, o->min, o->max);
        *(size_t *)field = (size_t)n;
        return 0;
    case OPT_BOOL:
        assert(o->size == sizeof(bool));
        if (parse_bool(v, (bool *)field) < 0)
            return fail(err, errlen, "%s (%s): " SHOWN " is not a boolean (true/false, 1/0, yes/no, on/off)", o->env, o->flag, v);
        return 0;
    case OPT_CHOICE:
        for (const struct choice *c = o->choices; c->name != NULL; c++) {
            if (strcasecmp(v, c->name) == 0) {
                store_int(o, cfg, c->value);
                return 0;
            }
        }
        char allowed[128];
        list_choices(o, ", ", allowed, sizeof(allowed));
        return fail(err, errlen, "%s (%s): " SHOWN " is not one of %s", o->env, o->flag, v, allowed);
    }
    assert(!"unknown option kind");
    return -EINVAL;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 256 ? 256 : (int)n;
}

static void set_default(const struct opt_spec *o, server_config *cfg)
{
    if (o->def == NULL) {
        assert(o->offset == offsetof(server_config, threads));
        cfg->threads = default_threads();
        return;
    }
    int rc = set_option(o, o->def, cfg, NULL, 0);
    assert(rc == 0 && "a default breaks its own option's rules");
    (void)rc;
}

static const struct opt_spec *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].flag) == len && memcmp(options[i].flag, name, len) == 0)
            return &options[i];
    return NULL;
}

static bool is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }
static bool is_version(const char *a) { return strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0; }

/* Sorts argv into the subcommand and the raw value each flag gives (given[i]
 * for options[i], the last one winning). After a problem it keeps going, so
 * that --help further on still gets through: someone asking for help with a
 * broken command line should get it. An unknown flag is assumed to take no
 * separate value, and a separate value never starts with '-' (no option
 * takes a negative number; write --x=-y for an odd path), which keeps the
 * walk unambiguous without knowing every flag and keeps -h from being eaten. */
static int scan_argv(int argc, char **argv, const char **given, server_command *cmd, char *err, size_t errlen)
{
    int rc = 0;
    bool special = false;
    int i = 1;
    *cmd = SERVER_CMD_SERVE;
    if (argc > 1 && argv[1][0] != '-') {
        size_t k = 0;
        while (k < sizeof(subcommands) / sizeof(subcommands[0]) && strcmp(argv[1], subcommands[k].name) != 0)
            k++;
        if (k < sizeof(subcommands) / sizeof(subcommands[0]))
            *cmd = subcommands[k].cmd;
        else
            rc = fail(err, errlen, "unknown subcommand " SHOWN "; expected serve, migrate or healthcheck", argv[1]);
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a) || is_version(a)) {
            if (!special)
                *cmd = is_help(a) ? SERVER_CMD_HELP : SERVER_CMD_VERSION;
            special = true;
            continue;
        }
        if (a[0] != '-') {
            if (rc == 0)
                rc = fail(err, errlen, "unexpected argument " SHOWN "; the subcommand comes first and flags take --flag=value", a);
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const struct opt_spec *o = strncmp(a, "--", 2) == 0 ? find_flag(a, len) : NULL;
        if (o == NULL) {
            if (rc == 0)
                rc = fail(err, errlen, "unknown flag \"%.*s\"; see --help", (int)(len > 64 ? 64 : len), a);
            continue;
        }
        const char **slot = &given[o - options];
        if (eq != NULL)
            *slot = eq + 1;
        else if (o->kind == OPT_BOOL)
            *slot = "true";
        else if (i + 1 < argc && argv[i + 1][0] != '-')
            *slot = argv[++i];
        else if (rc == 0)
            rc = fail(err, errlen, "%s (%s): missing value; give %s=VALUE or %s VALUE", o->env, o->flag, o->flag, o->flag);
    }
    return special ? 0 : rc;
}

/* Rules that span options, checked once every option has its value. */
static int check_together(const server_config *cfg, char *err, size_t errlen)
{
    if (cfg->pool_min > cfg->pool_max)
        return fail(err, errlen, "POOL_MIN (--pool-min) is %d, more than POOL_MAX (--pool-max) %d; POOL_MIN must not exceed POOL_MAX",
                    cfg->pool_min, cfg->pool_max);
    bool cert = cfg->tls_cert_file[0] != '\0', key = cfg->tls_key_file[0] != '\0';
    if (cert != key)
        return fail(err, errlen, "TLS_CERT_FILE (--tls-cert-file) and TLS_KEY_FILE (--tls-key-file) go together; only %s is set",
                    cert ? "TLS_CERT_FILE" : "TLS_KEY_FILE");
    char err2[160];
    if (server_config_algorithms(cfg->auth_algorithms, NULL, err2, sizeof(err2)) < 0)
        return fail(err, errlen, "AUTH_ALGORITHMS (--auth-algorithms): %s", err2);
    const char *u = cfg->auth_jwks_url;
    if (u[0] != '\0' && strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return fail(err, errlen, "AUTH_JWKS_URL (--auth-jwks-url): " SHOWN " is not an http:// or https:// URL", u);
    return 0;
}

int server_config_algorithms(const char *list, unsigned *mask, char *err, size_t errlen)
{
    static const char *const names[] = {[SERVER_ALG_RS256] = "RS256", [SERVER_ALG_ES256] = "ES256",
                                        [SERVER_ALG_HS256] = "HS256"};
    unsigned m = 0;
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        size_t a = 0, b = len;
        while (a < b && p[a] == ' ')
            a++;
        while (b > a && p[b - 1] == ' ')
            b--;
        size_t k = 0;
        while (k < sizeof(names) / sizeof(names[0]) && !(strlen(names[k]) == b - a && memcmp(names[k], p + a, b - a) == 0))
            k++;
        if (k == sizeof(names) / sizeof(names[0]))
            return fail(err, errlen, "\"%.*s\" is not one of RS256, ES256, HS256", (int)(b - a > 32 ? 32 : b - a), p + a);
        m |= 1u << k;
        p += len;
        if (*p == ',')
            p++;
    }
    if (m == 0)
        return fail(err, errlen, "no algorithm listed");
    if (mask != NULL)
        *mask = m;
    return 0;
}

int server_config_load(server_config *cfg, int argc, char **argv, server_command *cmd, char *err, size_t errlen)
{
    assert(cfg != NULL && cmd != NULL && argc >= 0 && (argc == 0 || argv != NULL));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(cfg, 0, sizeof(*cfg));

    const char *given[N_OPTIONS] = {0};
    int rc = scan_argv(argc, argv, given, cmd, err, errlen);
    if (rc < 0)
        return rc;
    if (*cmd == SERVER_CMD_HELP || *cmd == SERVER_CMD_VERSION) {
        /* the environment may be what is broken; help must still work */
        for (size_t i = 0; i < N_OPTIONS; i++)
            set_default(&options[i], cfg);
        return 0;
    }

    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt_spec *o = &options[i];
        const char *v = given[i] != NULL ? given[i] : getenv(o->env);
        if (v == NULL) {
            set_default(o, cfg);
            continue;
        }
        if ((rc = set_option(o, v, cfg, err, errlen)) < 0)
            return rc;
    }
    return check_together(cfg, err, errlen);
}

/* The flag as --help shows it, with a placeholder for its value. */
static void flag_usage(const struct opt_spec *o, char *buf, size_t cap)
{
    char choices[128];
    switch (o->kind) {
    case OPT_BOOL:
        snprintf(buf, cap, "%s[=BOOL]", o->flag);
        break;
    case OPT_CHOICE:
        list_choices(o, "|", choices, sizeof(choices));
        snprintf(buf, cap, "%s=%s", o->flag, choices);
        break;
    default:
        snprintf(buf, cap, "%s=%s", o->flag, o->meta);
        break;
    }
}

void server_config_usage(FILE *f)
{
    fprintf(f, "Usage: h2pg [SUBCOMMAND] [--flag=VALUE | --flag VALUE]...\n\nSubcommands:\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        fprintf(f, "  %-13s %s\n", subcommands[i].name, subcommands[i].help);
    fprintf(f, "\n"
               "  -h, --help     show this text\n"
               "  -V, --version  show the version\n"
               "\n"
               "Options. Each is read from its environment variable (shown on the right);\n"
               "a flag on the command line wins over the variable.\n\n");

    int width = 0;
    char usage[160];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        flag_usage(&options[i], usage, sizeof(usage));
        int w = (int)strlen(usage);
        width = w > width ? w : width;
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt_spec *o = &options[i];
        flag_usage(o, usage, sizeof(usage));
        fprintf(f, "  %-*s  %s\n      %s", width, usage, o->env, o->help);
        if (o->kind == OPT_INT)
            fprintf(f, "; %lld..%lld", o->min, o->max);
        else if (o->kind == OPT_BYTES)
            fprintf(f, "; %lld..%lld, or with a KiB, MiB or GiB suffix", o->min, o->max);
        else if (o->kind == OPT_BOOL)
            fprintf(f, "; true/false, 1/0, yes/no or on/off");
        if (o->def_doc != NULL)
            fprintf(f, "; default: %s\n", o->def_doc);
        else
            fprintf(f, "; default: %s\n", o->def[0] != '\0' ? o->def : "empty");
    }
}

size_t server_config_option_count(void) { return N_OPTIONS; }

void server_config_option_names(size_t i, const char **env, const char **flag)
{
    assert(i < N_OPTIONS);
    if (env != NULL)
        *env = options[i].env;
    if (flag != NULL)
        *flag = options[i].flag;
}
