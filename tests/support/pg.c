#include "support/pg.h"

#include <check.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *database_url(void)
{
    const char *url = getenv("DATABASE_URL");
    if (url == NULL || url[0] == '\0')
        ck_abort_msg("DATABASE_URL is not set: run the tests through scripts/with-postgres.sh");
    return url;
}

/* A key=value conninfo with base's settings and dbname replaced. Values are
 * single-quoted with \ and ' escaped, the conninfo syntax's own quoting, so
 * any host, user or password survives the trip. */
static char *conninfo_with_dbname(const char *base, const char *dbname)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &perr);
    if (opts == NULL)
        ck_abort_msg("cannot parse conninfo: %s", perr ? perr : "out of memory");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(f);
    bool first = true;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        const char *val = strcmp(o->keyword, "dbname") == 0 ? dbname : o->val;
        if (val == NULL)
            continue;
        fprintf(f, "%s%s='", first ? "" : " ", o->keyword);
        for (const char *p = val; *p != '\0'; p++) {
            if (*p == '\\' || *p == '\'')
                fputc('\\', f);
            fputc(*p, f);
        }
        fputc('\'', f);
        first = false;
    }
    ck_assert_int_eq(fclose(f), 0);
    PQconninfoFree(opts);
    return out;
}

static char *dbname_of(const char *conninfo)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL)
        ck_abort_msg("cannot parse conninfo: %s", perr ? perr : "out of memory");
    char *name = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val != NULL)
            name = strdup(o->val);
    PQconninfoFree(opts);
    if (name == NULL)
        ck_abort_msg("conninfo names no database");
    return name;
}

/* "<verb> DATABASE <quoted name><rest>": DDL takes no parameters, so the
 * harness's own generated name goes in quoted as an identifier. */
static PGresult *database_ddl(PGconn *admin, const char *verb, const char *name, const char *rest)
{
    char *quoted = PQescapeIdentifier(admin, name, strlen(name));
    if (quoted == NULL)
        ck_abort_msg("cannot quote %s: %s", name, PQerrorMessage(admin));
    char *sql = NULL;
    ck_assert_int_ge(asprintf(&sql, "%s DATABASE %s%s", verb, quoted, rest), 0);
    PQfreemem(quoted);
    PGresult *r = PQexec(admin, sql);
    free(sql);
    return r;
}

char *test_pg_create_db(void)
{
    /* per process; Check forks each test, and the pid tells those apart */
    static atomic_uint counter;
    PGconn *admin = test_pg_connect(database_url());
    char name[64];
    for (int attempt = 0;; attempt++) {
        snprintf(name, sizeof(name), "h2pg_test_%ld_%u", (long)getpid(), atomic_fetch_add(&counter, 1));
        /* template0 and UTF8 whatever the server's defaults: the schema
         * holds non-ASCII text, and nobody else connects to template0 */
        PGresult *r = database_ddl(admin, "CREATE", name, " TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'");
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            PQclear(r);
            break;
        }
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* a leftover of an earlier run with a recycled pid */
        bool exists = state != NULL && strcmp(state, "42P04") == 0;
        if (!exists || attempt >= 100)
            ck_abort_msg("CREATE DATABASE %s failed: %s", name, PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(admin);
    return conninfo_with_dbname(database_url(), name);
}

void test_pg_drop_db(char *conninfo)
{
    char *name = dbname_of(conninfo);
    PGconn *admin = test_pg_connect(database_url());
    /* FORCE terminates whatever a failed test left connected */
    PGresult *r = database_ddl(admin, "DROP", name, " WITH (FORCE)");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        ck_abort_msg("DROP DATABASE %s failed: %s", name, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(admin);
    free(name);
    free(conninfo);
}

PGconn *test_pg_connect(const char *conninfo)
{
    const char *const keys[] = {"fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"h2pg_test", conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL)
        ck_abort_msg("cannot connect: out of memory");
    if (PQstatus(c) != CONNECTION_OK)
        ck_abort_msg("cannot connect to PostgreSQL: %s", PQerrorMessage(c));
    return c;
}

void test_pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        ck_abort_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

long long test_pg_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        ck_abort_msg("%s: %s", sql, PQresultErrorMessage(r));
    if (PQntuples(r) != 1 || PQnfields(r) < 1 || PQgetisnull(r, 0, 0))
        ck_abort_msg("%s: expected one row with a non-NULL first column, got %d rows", sql, PQntuples(r));
    char *end = NULL;
    long long v = strtoll(PQgetvalue(r, 0, 0), &end, 10);
    if (end == PQgetvalue(r, 0, 0) || *end != '\0')
        ck_abort_msg("%s: %s is not an integer", sql, PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

test_pg_backends test_pg_service_backends(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT count(*) FILTER (WHERE state = 'active'), "
                            "count(*) FILTER (WHERE state LIKE 'idle in transaction%'), "
                            "count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock') "
                            "FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'h2pg'");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "pg_stat_activity: %s", PQresultErrorMessage(r));
    test_pg_backends b = {atoi(PQgetvalue(r, 0, 0)), atoi(PQgetvalue(r, 0, 1)), atoi(PQgetvalue(r, 0, 2))};
    PQclear(r);
    return b;
}

char *test_pg_describe_backends(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT pid, application_name, state, coalesce(wait_event_type, '-'), "
                            "coalesce(wait_event, '-'), left(query, 80) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "pg_stat_activity: %s", PQresultErrorMessage(r));
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(f, "\n  pid %s app '%s' state '%s' waiting %s/%s query '%s'", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
    fclose(f);
    PQclear(r);
    return out;
}
