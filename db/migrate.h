/* Schema migrations: numbered SQL files (NNNN_name.sql) applied in version
 * order, each in its own transaction together with its row in
 * schema_migrations (version, name, SHA-256 checksum), under an advisory lock
 * so that several replicas starting at once apply each migration exactly once.
 * A file edited after it was applied is an error, never a silent skip.
 *
 * Blocking libpq: call it from the main thread before any event loop starts
 * (`h2pg migrate`, and at `serve` start), never from a loop thread. */
#ifndef H2PG_DB_MIGRATE_H
#define H2PG_DB_MIGRATE_H

#include <stddef.h>

/* One migration file. sql holds sql_len bytes followed by a '\0' (libpq takes
 * C strings); name is the file name, e.g. "0001_domain.sql". */
typedef struct db_migration {
    int version;
    char *name;
    char *sql;
    size_t sql_len;
} db_migration;

/* The migrations compiled into the binary from migrations/ *.sql, in version
 * order (static storage, never freed); *count may be 0 (then NULL). */
const db_migration *db_migrate_embedded(size_t *count);

/* Loads the NNNN_name.sql files of dir (NNNN: decimal digits, 1..INT_MAX) in
 * version order into *out (NULL when there are none); other files, including
 * hidden ones, are ignored, but a *.sql file that starts with a digit and is
 * not of that form is malformed. Returns 0, -ENOENT (no such dir), -EINVAL
 * (duplicate or malformed version) or another -errno, with detail in err.
 * The caller frees *out with db_migrate_free. */
int db_migrate_load_dir(const char *dir, db_migration **out, size_t *count, char *err, size_t errlen);

/* Frees what db_migrate_load_dir returned; m may be NULL. */
void db_migrate_free(db_migration *m, size_t count);

/* What a run did: migrations applied now, and ones found already applied. */
typedef struct db_migrate_report {
    int applied;
    int already;
} db_migrate_report;

/* Brings the database of conninfo (libpq URI or key=value; application_name
 * defaults to "h2pg", connect_timeout to 10 s, unless conninfo sets them) up to
 * date with m[0..count) (strictly increasing versions). Holds a session
 * advisory lock (fixed key) for the whole run, creates schema_migrations if
 * missing, checks every applied version against m before changing anything
 * (same SHA-256 hex checksum, file present), then applies each pending one in
 * version order, each in its own transaction with its schema_migrations row.
 * Returns 0; -ECONNREFUSED if it cannot connect; -EINVAL for an applied
 * migration that was edited ("migration 0001_domain.sql was edited after it
 * was applied (checksum ...)") or has no file, or unusable input (unsorted,
 * NUL bytes); -EIO if a statement failed (err names the file and carries the
 * server's message; that migration is rolled back, earlier ones stay). The
 * human detail goes to err. report (may be NULL) counts what happened, also
 * on a failed apply (applied = those committed before it); a failed check
 * leaves it zero. Blocks; waits for the lock as long as another runner holds
 * it. */
int db_migrate_run(const char *conninfo, const db_migration *m, size_t count, db_migrate_report *report, char *err,
                   size_t errlen);

#endif
