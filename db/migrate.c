#include "db/migrate.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "base/log.h"

/* Defined by the source that db/CMakeLists.txt generates from
 * migrations/ *.sql. */
extern const db_migration db_migrate__embedded[];
extern const size_t db_migrate__embedded_count;

/* The advisory lock every runner takes: "h2pg-mig" read as a big-endian
 * int64. Advisory locks are per database, so runners against different
 * databases never wait for each other. */
#define MIGRATE_LOCK_KEY "7508187117226125671"

#define SHA256_HEX_LEN 64

const db_migration *db_migrate_embedded(size_t *count)
{
    *count = db_migrate__embedded_count;
    return db_migrate__embedded_count > 0 ? db_migrate__embedded : NULL;
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* libpq messages span lines ("...failed: Connection refused\n\tIs the server
 * running..."); err ends up in one log line, so whitespace runs that hold a
 * line break become one space, and the trailing newline goes. */
static void copy_oneline(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    if (cap == 0)
        return;
    while (*src != '\0' && n + 1 < cap) {
        if (*src == '\n' || *src == '\r') {
            while (*src == '\n' || *src == '\r' || *src == '\t' || *src == ' ')
                src++;
            if (*src != '\0' && n > 0)
                dst[n++] = ' ';
            continue;
        }
        dst[n++] = *src++;
    }
    dst[n] = '\0';
}

/* ---- loading files ---- */

/* Returns 1 and the version for a migration file name, 0 for a file that is
 * not a migration, -EINVAL for a name that means to be one but is broken. */
static int parse_file_name(const char *name, int *version)
{
    size_t len = strlen(name);
    if (name[0] == '.' || len < 4 || strcmp(name + len - 4, ".sql") != 0)
        return 0;
    if (name[0] < '0' || name[0] > '9')
        return 0;
    long long v = 0;
    size_t i = 0;
    for (; name[i] >= '0' && name[i] <= '9'; i++) {
        v = v * 10 + (name[i] - '0');
        if (v > INT_MAX)
            return -EINVAL;
    }
    /* "_" and at least one character of a name before ".sql" */
    if (v == 0 || name[i] != '_' || i + 1 >= len - 4)
        return -EINVAL;
    *version = (int)v;
    return 1;
}

/* Reads the whole regular file name of dir fd dirfd into a '\0'-terminated
 * malloc'd buffer. */
static int read_file_at(int dirfd, const char *name, char **out, size_t *out_len)
{
    int rc;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail_stat;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto fail_stat;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto fail_stat;
    }
    for (;;) {
        if (len + 1 == cap) { /* the file grew since fstat */
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                rc = -ENOMEM;
                goto fail_read;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto fail_read;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    *out = buf;
    *out_len = len;
    return 0;

fail_read:
    free(buf);
fail_stat:
    close(fd);
    return rc;
}

static int by_version(const void *a, const void *b)
{
    int va = ((const db_migration *)a)->version, vb = ((const db_migration *)b)->version;
    return (va > vb) - (va < vb);
}

/* A growing list of migrations read from a directory. */
struct loading {
    const char *dir;
    db_migration *list;
    size_t n, cap;
};

/* Adds the file e of the directory (a migration, or skipped); 0 or a
 * negative errno with err set. */
static int load_entry(struct loading *ld, DIR *d, const struct dirent *e, char *err, size_t errlen)
{
    int version;
    int kind = parse_file_name(e->d_name, &version);
    if (kind == 0)
        return 0;
    if (kind < 0)
        return fail(err, errlen, -EINVAL,
                    "malformed migration file name %s/%s: expected NNNN_name.sql with a version in 1..%d", ld->dir,
                    e->d_name, INT_MAX);
    if (ld->n == ld->cap) {
        size_t ncap = ld->cap ? ld->cap * 2 : 8;
        db_migration *bigger = realloc(ld->list, ncap * sizeof(*ld->list));
        if (bigger == NULL)
            return fail(err, errlen, -ENOMEM, "out of memory loading migrations");
        ld->list = bigger;
        ld->cap = ncap;
    }
    db_migration *m = &ld->list[ld->n];
    *m = (db_migration){.version = version};
    if ((m->name = strdup(e->d_name)) == NULL)
        return fail(err, errlen, -ENOMEM, "out of memory loading migrations");
    ld->n++; /* from here db_migrate_free owns m's strings */
    int rc = read_file_at(dirfd(d), e->d_name, &m->sql, &m->sql_len);
    if (rc != 0)
        fail(err, errlen, rc, "cannot read migration %s/%s: %s", ld->dir, e->d_name,
             rc == -EINVAL ? "not a regular file" : strerror(-rc));
    return rc;
}

static int load_all(struct loading *ld, DIR *d, char *err, size_t errlen)
{
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL)
            return errno == 0 ? 0
                              : fail(err, errlen, -errno, "cannot read migrations directory %s: %s", ld->dir,
                                     strerror(errno));
        int rc = load_entry(ld, d, e, err, errlen);
        if (rc < 0)
            return rc;
    }
}

int db_migrate_load_dir(const char *dir, db_migration **out, size_t *count, char *err, size_t errlen)
{
    assert(dir != NULL && out != NULL && count != NULL);
    DIR *d = opendir(dir);
    if (d == NULL)
        return fail(err, errlen, -errno, "cannot open migrations directory %s: %s", dir, strerror(errno));
    struct loading ld = {.dir = dir};
    int rc = load_all(&ld, d, err, errlen);
    closedir(d);
    if (rc == 0 && ld.n > 1)
        qsort(ld.list, ld.n, sizeof(*ld.list), by_version);
    for (size_t i = 1; rc == 0 && i < ld.n; i++) {
        if (ld.list[i].version == ld.list[i - 1].version)
            rc = fail(err, errlen, -EINVAL, "duplicate migration version %d in %s: %s and %s", ld.list[i].version, dir,
                      ld.list[i - 1].name, ld.list[i].name);
    }
    if (rc < 0) {
        db_migrate_free(ld.list, ld.n);
        return rc;
    }
    *out = ld.list;
    *count = ld.n;
    return 0;
}

void db_migrate_free(db_migration *m, size_t count)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(m[i].name);
        free(m[i].sql);
    }
    free(m);
}

/* ---- applying ---- */

static int sha256_hex(const char *data, size_t len, char hex[SHA256_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 != SHA256_HEX_LEN)
        return -EIO;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* Server notices (e.g. "relation already exists, skipping") would otherwise go
 * to stderr unformatted; warnings stay visible, the rest is debug. */
static void on_notice(void *arg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (msg == NULL)
        return;
    if (sev != NULL && strcmp(sev, "WARNING") == 0)
        log_warn("migrate: postgres warning: %s", msg);
    else
        log_debug("migrate: postgres %s: %s", sev ? sev : "notice", msg);
}

/* libpq quotes a URI it cannot parse in full, and err ends up in the logs:
 * the password of "scheme://user:password@host" becomes "***". */
static void redact_uri_passwords(char *s, size_t cap)
{
    for (char *p = strstr(s, "://"); p != NULL; p = strstr(p, "://")) {
        p += 3;
        size_t userinfo = strcspn(p, "@/?#\" ");
        if (p[userinfo] != '@')
            continue;
        char *colon = memchr(p, ':', userinfo);
        char *at = p + userinfo;
        if (colon == NULL || colon + 1 == at) /* no password */
            continue;
        size_t keep = (size_t)(colon + 1 - s), tail = strlen(at) + 1;
        bool cut = keep + 3 + tail > cap; /* only when it grows: a 1- or 2-byte password */
        if (cut)
            tail = cap - keep - 3; /* the end goes; s stays terminated */
        memmove(colon + 4, at, tail);
        memcpy(colon + 1, "***", 3);
        s[cap - 1] = '\0';
        if (cut)
            break;
        p = colon + 4;
    }
}

static PGconn *connect_db(const char *conninfo, char *err, size_t errlen, int *rc)
{
    /* Keywords are processed in order and the last value wins, so conninfo
     * (expanded from dbname) may override the first two; client_encoding
     * comes last because migration files are UTF-8 whatever the server's
     * default is. */
    const char *const keys[] = {"fallback_application_name", "connect_timeout", "dbname", "client_encoding", NULL};
    const char *const vals[] = {"h2pg", "10", conninfo, "UTF8", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        *rc = fail(err, errlen, -ENOMEM, "cannot connect to PostgreSQL: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        copy_oneline(msg, sizeof(msg), PQerrorMessage(c));
        redact_uri_passwords(msg, sizeof(msg));
        *rc = fail(err, errlen, -ECONNREFUSED, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, on_notice, NULL);
    return c;
}

/* The server's message for a failed result, as one line. */
static void describe_error(PGconn *c, const PGresult *r, char *out, size_t cap)
{
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (primary == NULL) { /* no server error: the connection broke */
        copy_oneline(out, cap, PQerrorMessage(c));
        return;
    }
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
    char raw[1024];
    snprintf(raw, sizeof(raw), "%s %s: %s%s%s%s%s", sev ? sev : "ERROR", state ? state : "?????", primary,
             detail ? " DETAIL: " : "", detail ? detail : "", hint ? " HINT: " : "", hint ? hint : "");
    copy_oneline(out, cap, raw);
}

/* Runs a statement that takes no value and must succeed. */
static int exec_ok(PGconn *c, const char *sql, char *why, size_t whylen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        describe_error(c, r, why, whylen);
        rc = -EIO;
    }
    PQclear(r);
    return rc;
}

/* A boolean-returning lock function called with the lock key. */
static int call_lock(PGconn *c, const char *fn_sql, bool *result, char *why, size_t whylen)
{
    const char *params[] = {MIGRATE_LOCK_KEY};
    PGresult *r = PQexecParams(c, fn_sql, 1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        describe_error(c, r, why, whylen);
        rc = -EIO;
    } else if (result != NULL) {
        *result = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    }
    PQclear(r);
    return rc;
}

/* Transaction-level, taken at the start of every transaction the runner
 * opens: it then also works through a transaction-pooling PgBouncer, where
 * consecutive transactions may run on different server sessions (a
 * session lock would stay behind on one of them). The server releases it
 * at COMMIT or ROLLBACK, also when this process dies. */
static int take_lock(PGconn *c, char *why, size_t whylen)
{
    bool got = false;
    int rc = call_lock(c, "SELECT pg_try_advisory_xact_lock($1::bigint)", &got, why, whylen);
    if (rc != 0 || got)
        return rc;
    log_info("migrate: another runner holds the migration lock; waiting for it");
    /* pg_advisory_xact_lock returns void, which arrives as one row with "" */
    return call_lock(c, "SELECT pg_advisory_xact_lock($1::bigint)", NULL, why, whylen);
}

/* Line (1-based) of the 1-based character position pos in sql, which is
 * UTF-8 since the connection's client_encoding is. */
static int line_of_position(const char *sql, size_t len, long pos)
{
    int line = 1;
    long chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)sql[i] & 0xc0) == 0x80)
            continue; /* continuation byte: same character */
        if (++chars >= pos)
            break;
        if (sql[i] == '\n')
            line++;
    }
    return line;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Applies m and records it in one transaction. On failure the caller closes
 * the connection, which also rolls back whatever is left open. */
/* Whether another runner applied m since this one looked: 1 (and the
 * transaction committed), 0, or a negative errno. */
static int applied_meanwhile(PGconn *c, const db_migration *m, const char *version, const char *checksum, char *err,
                             size_t errlen)
{
    char why[768];
    const char *vparam[] = {version};
    PGresult *r = PQexecParams(c, "SELECT checksum FROM schema_migrations WHERE version = $1::integer", 1, NULL, vparam,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        describe_error(c, r, why, sizeof(why));
        PQclear(r);
        return fail(err, errlen, -EIO, "cannot read schema_migrations: %s", why);
    }
    bool found = PQntuples(r) == 1, same = found && strcmp(PQgetvalue(r, 0, 0), checksum) == 0;
    PQclear(r);
    if (found && !same)
        return fail(err, errlen, -EINVAL, "migration %s was applied meanwhile with another checksum", m->name);
    if (found && exec_ok(c, "COMMIT", why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "migration %s: %s", m->name, why);
    return found ? 1 : 0;
}

/* The file's SQL: constant, possibly several statements. The simple query
 * protocol runs them all and returns the first error or the last result. */
static int run_file(PGconn *c, const db_migration *m, char *err, size_t errlen)
{
    char why[768];
    PGresult *r = PQexec(c, m->sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
        char where[48] = "";
        if (pos != NULL)
            snprintf(where, sizeof(where), " at line %d", line_of_position(m->sql, m->sql_len, strtol(pos, NULL, 10)));
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            snprintf(why, sizeof(why), "COPY from stdin or to stdout cannot run in a migration");
        else
            describe_error(c, r, why, sizeof(why));
        PQclear(r);
        return fail(err, errlen, -EIO, "migration %s failed%s: %s", m->name, where, why);
    }
    PQclear(r);
    /* A COMMIT or ROLLBACK in the file would end the runner's transaction
     * early and leave the rest unrecorded; say so rather than record it. */
    if (PQtransactionStatus(c) != PQTRANS_INTRANS)
        return fail(err, errlen, -EIO,
                    "migration %s ended the runner's transaction itself (COMMIT or ROLLBACK in the file); "
                    "statements before it may be committed without being recorded",
                    m->name);
    return 0;
}

/* Applies m in a transaction of its own, under the lock: 0, 1 when another
 * runner applied it first, or a negative errno. */
static int apply_one(PGconn *c, const db_migration *m, const char *checksum, char *err, size_t errlen)
{
    char why[768];
    double t0 = now_ms();
    if (exec_ok(c, "BEGIN", why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "migration %s: cannot begin a transaction: %s", m->name, why);
    if (take_lock(c, why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "cannot take the migration lock: %s", why);
    char version[16];
    snprintf(version, sizeof(version), "%d", m->version);
    int rc = applied_meanwhile(c, m, version, checksum, err, errlen);
    if (rc == 0)
        rc = run_file(c, m, err, errlen);
    if (rc != 0)
        return rc;
    const char *params[] = {version, m->name, checksum};
    PGresult *r = PQexecParams(c, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::integer, $2, $3)",
                               3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        describe_error(c, r, why, sizeof(why));
        PQclear(r);
        return fail(err, errlen, -EIO, "migration %s: cannot record it in schema_migrations: %s", m->name, why);
    }
    PQclear(r);
    if (exec_ok(c, "COMMIT", why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "migration %s failed at commit: %s", m->name, why);
    log_info("migrate: applied %s in %.1f ms", m->name, now_ms() - t0);
    return 0;
}

/* Matches schema_migrations against m: marks applied[i], counts them, and
 * fails on an applied migration that changed or that m lacks. */
static int check_applied(PGconn *c, const db_migration *m, size_t count, char (*sums)[SHA256_HEX_LEN + 1],
                         bool *applied, int *already, char *err, size_t errlen)
{
    char why[768];
    PGresult *r = PQexec(c, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        describe_error(c, r, why, sizeof(why));
        PQclear(r);
        return fail(err, errlen, -EIO, "cannot read schema_migrations: %s", why);
    }
    int rc = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        long version = strtol(PQgetvalue(r, row, 0), NULL, 10);
        const char *name = PQgetvalue(r, row, 1);
        const char *recorded = PQgetvalue(r, row, 2);
        size_t i = 0;
        while (i < count && m[i].version != version)
            i++;
        if (i == count) {
            rc = fail(err, errlen, -EINVAL,
                      "migration %s (version %ld) is recorded as applied but no such migration was given; "
                      "is this binary or directory older than the database?",
                      name, version);
            break;
        }
        if (strcmp(sums[i], recorded) != 0) {
            rc = fail(err, errlen, -EINVAL,
                      "migration %s was edited after it was applied (checksum %s, recorded %s); "
                      "add a new migration instead of changing an applied one",
                      m[i].name, sums[i], recorded);
            break;
        }
        applied[i] = true;
        (*already)++;
    }
    PQclear(r);
    return rc;
}

/* The list is in strictly increasing version order and holds no NUL
 * byte; each migration's checksum into sums. */
static int check_given(const db_migration *m, size_t count, char (*sums)[SHA256_HEX_LEN + 1], char *err, size_t errlen)
{
    for (size_t i = 0; i < count; i++) {
        if (i > 0 && m[i].version <= m[i - 1].version)
            return fail(err, errlen, -EINVAL, "migrations are not in strictly increasing version order (%s after %s)",
                        m[i].name, m[i - 1].name);
        if (memchr(m[i].sql, '\0', m[i].sql_len) != NULL)
            return fail(err, errlen, -EINVAL, "migration %s contains a NUL byte", m[i].name);
        if (sha256_hex(m[i].sql, m[i].sql_len, sums[i]) != 0)
            return fail(err, errlen, -EIO, "cannot compute the SHA-256 of migration %s", m[i].name);
    }
    return 0;
}

/* Under the lock, in one transaction: schema_migrations made if needed
 * (two runners creating it at once could otherwise both pass IF NOT
 * EXISTS and one would fail on the catalog's unique index), and every
 * check of what was applied passes before anything is applied, so a
 * rejected run changes nothing. */
static int prepare_run(PGconn *c, const db_migration *m, size_t count, char (*sums)[SHA256_HEX_LEN + 1],
                       bool *applied, int *already, char *err, size_t errlen)
{
    char why[768];
    if (exec_ok(c, "BEGIN", why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "cannot begin a transaction: %s", why);
    if (take_lock(c, why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "cannot take the migration lock: %s", why);
    if (exec_ok(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "cannot create schema_migrations: %s", why);
    int rc = check_applied(c, m, count, sums, applied, already, err, errlen);
    if (rc != 0)
        return rc;
    if (exec_ok(c, "COMMIT", why, sizeof(why)) != 0)
        return fail(err, errlen, -EIO, "cannot commit: %s", why);
    return 0;
}

int db_migrate_run(const char *conninfo, const db_migration *m, size_t count, db_migrate_report *report, char *err,
                   size_t errlen)
{
    assert(conninfo != NULL && (m != NULL || count == 0));
    db_migrate_report rep = {0};
    if (report != NULL)
        *report = rep;
    if (errlen > 0)
        err[0] = '\0';
    /* calloc(0) may return NULL; one spare element keeps NULL meaning OOM */
    char(*sums)[SHA256_HEX_LEN + 1] = calloc(count + 1, sizeof(*sums));
    bool *applied = calloc(count + 1, sizeof(*applied));
    int rc = sums != NULL && applied != NULL ? check_given(m, count, sums, err, errlen)
                                             : fail(err, errlen, -ENOMEM, "out of memory");
    PGconn *c = rc == 0 ? connect_db(conninfo, err, errlen, &rc) : NULL;
    if (c != NULL)
        rc = prepare_run(c, m, count, sums, applied, &rep.already, err, errlen);
    if (report != NULL && rc == 0)
        *report = rep;
    for (size_t i = 0; c != NULL && rc == 0 && i < count; i++) {
        if (applied[i])
            continue;
        int one = apply_one(c, &m[i], sums[i], err, errlen);
        if (one < 0)
            rc = one;
        else if (one == 1)
            rep.already++; /* another runner was first */
        else
            rep.applied++;
        if (report != NULL)
            *report = rep;
    }
    /* Also the rollback of a failed migration and the release of the lock
     * on every error path: the server ends both with the session. */
    PQfinish(c);
    free(applied);
    free(sums);
    return rc;
}
