/* Connection parameters: DATABASE_URL parsed once, completed with the
 * service's defaults, and host names resolved off the loop thread before
 * each connect (libpq would call a blocking getaddrinfo otherwise). */
#ifndef H2PG_DB_CONNINFO_H
#define H2PG_DB_CONNINFO_H

#include <stdbool.h>
#include <stddef.h>

/* NULL-terminated keyword and value arrays, as PQconnectStartParams takes. */
typedef struct db_conninfo {
    char **keywords;
    char **values;
    size_t n;
} db_conninfo;

typedef struct db_session_settings {
    int statement_timeout_ms;           /* 0: leave the server's default */
    int idle_in_transaction_timeout_ms; /* 0: likewise */
    bool jit_off;                       /* jit=off: see db_conninfo_parse */
} db_session_settings;

/* Parses a libpq URI or key=value string ("" for libpq's defaults) and
 * adds: application_name=h2pg unless given; the settings above as "-c"
 * options appended to any given options (none when s is NULL); TCP
 * keepalives unless given. jit=off because JIT compiling a plan takes
 * PostgreSQL 15 about 350 ms, and a generic plan of a short statement
 * with CTEs over JSON parameters (the webhook fan-out) was estimated
 * costly enough to get it: 0.5 ms of work behind 350 of compiling.
 * -EINVAL with libpq's message in err. Free with db_conninfo_free. */
int db_conninfo_parse(const char *conninfo, const db_session_settings *s, db_conninfo **out, char *err, size_t errlen);

/* A copy of base whose host names are resolved (awaits a helper thread) into
 * hostaddr entries, one per address (so "localhost" tries ::1 then
 * 127.0.0.1 like libpq would). Unix-socket paths and IP literals need no
 * lookup. -EHOSTUNREACH when no host resolves (detail in err), -ENOMEM,
 * -ECANCELED / -ETIMEDOUT. */
int db_conninfo_resolve(const db_conninfo *base, db_conninfo **out, char *err, size_t errlen);

/* The value of keyword in ci, or NULL. */
const char *db_conninfo_get(const db_conninfo *ci, const char *keyword);

void db_conninfo_free(db_conninfo *ci);

#endif
