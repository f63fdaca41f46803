/* Schema migrations against a real PostgreSQL: run through
 * scripts/with-postgres.sh, which sets DATABASE_URL. Without it the database
 * tests fail (they do not skip), so a run that tested nothing cannot pass.
 * Every database test works on a fresh database of its own. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "support/aio_check.h"
#include "db/migrate.h"
#include "support/pg.h"

#ifndef H2PG_FORTUNES_TSV
#error "db/CMakeLists.txt passes H2PG_FORTUNES_TSV"
#endif
#ifndef H2PG_MIGRATIONS_DIR
#error "db/CMakeLists.txt passes H2PG_MIGRATIONS_DIR"
#endif

/* ---- files ---- */

static char *make_temp_dir(void)
{
    char *dir = strdup("/tmp/h2pg-migrate-test.XXXXXX");
    ck_assert_ptr_nonnull(dir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

static void write_file(const char *dir, const char *name, const char *text, const char *mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* The test's temp dirs are flat: files only. */
static void remove_dir(char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            ck_assert_msg(unlinkat(dirfd(d), e->d_name, 0) == 0, "cannot remove %s/%s", dir, e->d_name);
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
    free(dir);
}

/* A directory holding copies of the embedded migrations. */
static char *copy_embedded_to_temp_dir(void)
{
    size_t n;
    const db_migration *m = db_migrate_embedded(&n);
    char *dir = make_temp_dir();
    for (size_t i = 0; i < n; i++)
        write_file(dir, m[i].name, m[i].sql, "w");
    return dir;
}

static int run_dir(const char *conninfo, const char *dir, db_migrate_report *rep, char *err, size_t errlen)
{
    db_migration *m = NULL;
    size_t n = 0;
    int rc = db_migrate_load_dir(dir, &m, &n, err, errlen);
    ck_assert_msg(rc == 0, "load %s: %s", dir, err);
    rc = db_migrate_run(conninfo, m, n, rep, err, errlen);
    db_migrate_free(m, n);
    return rc;
}

static int run_embedded(const char *conninfo, db_migrate_report *rep, char *err, size_t errlen)
{
    size_t n;
    const db_migration *m = db_migrate_embedded(&n);
    return db_migrate_run(conninfo, m, n, rep, err, errlen);
}

/* ---- queries ---- */

static bool table_exists(PGconn *c, const char *name)
{
    const char *params[] = {name};
    PGresult *r = PQexecParams(c, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    bool exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return exists;
}

/* Constant SQL that must fail with SQLSTATE state. */
static void expect_sqlstate(PGconn *c, const char *sql, const char *state)
{
    PGresult *r = PQexec(c, sql);
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ck_assert_msg(got != NULL && strcmp(got, state) == 0, "%s: expected SQLSTATE %s, got %s (%s)", sql, state,
                  got ? got : "success", PQresultErrorMessage(r));
    PQclear(r);
}

static const char *const domain_tables[] = {"users", "orders", "accounts", "transfers", "idempotency_keys"};

/* ---- loading ---- */

START_TEST(load_dir_orders_by_version_and_ignores_other_files)
{
    char *dir = make_temp_dir();
    write_file(dir, "10_ten.sql", "SELECT 10;", "w");
    write_file(dir, "0002_two.sql", "SELECT 2;", "w");
    write_file(dir, "README.md", "not a migration", "w");
    write_file(dir, "notes.sql", "no leading digit: not a migration", "w");
    write_file(dir, ".0003_editor_swap.sql", "hidden", "w");
    write_file(dir, "0004_four.sql.orig", "wrong suffix", "w");
    write_file(dir, "0001_one.sql", "", "w");

    db_migration *m = NULL;
    size_t n = 0;
    char err[256] = "";
    ck_assert_int_eq(db_migrate_load_dir(dir, &m, &n, err, sizeof(err)), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(m[0].version, 1);
    ck_assert_str_eq(m[0].name, "0001_one.sql");
    ck_assert_uint_eq(m[0].sql_len, 0);
    ck_assert_str_eq(m[0].sql, "");
    ck_assert_int_eq(m[1].version, 2);
    ck_assert_str_eq(m[1].sql, "SELECT 2;");
    ck_assert_uint_eq(m[1].sql_len, 9);
    ck_assert_int_eq(m[2].version, 10); /* numeric order, not "0002" < "10" by accident */
    ck_assert_str_eq(m[2].name, "10_ten.sql");
    db_migrate_free(m, n);
    remove_dir(dir);
}
END_TEST

START_TEST(load_dir_rejects_a_missing_dir_duplicates_and_malformed_versions)
{
    db_migration *m = NULL;
    size_t n = 0;
    char err[256] = "";
    ck_assert_int_eq(db_migrate_load_dir("/nonexistent/h2pg/migrations", &m, &n, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/h2pg/migrations"));

    char *dir = make_temp_dir();
    write_file(dir, "0001_a.sql", "SELECT 1;", "w");
    write_file(dir, "1_b.sql", "SELECT 1;", "w");
    err[0] = '\0';
    ck_assert_int_eq(db_migrate_load_dir(dir, &m, &n, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "duplicate") && strstr(err, "0001_a.sql") && strstr(err, "1_b.sql"), "%s", err);
    remove_dir(dir);

    static const char *const malformed[] = {"0000_zero.sql", "0001.sql", "0001_.sql", "12a_x.sql",
                                            "99999999999_too_big.sql"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        dir = make_temp_dir();
        write_file(dir, malformed[i], "SELECT 1;", "w");
        err[0] = '\0';
        ck_assert_msg(db_migrate_load_dir(dir, &m, &n, err, sizeof(err)) == -EINVAL, "%s accepted", malformed[i]);
        ck_assert_msg(strstr(err, malformed[i]) != NULL, "%s: %s", malformed[i], err);
        remove_dir(dir);
    }
}
END_TEST

START_TEST(embedded_migrations_are_the_migrations_directory)
{
    size_t n;
    const db_migration *e = db_migrate_embedded(&n);
    ck_assert_uint_ge(n, 2);
    ck_assert_str_eq(e[0].name, "0001_domain.sql");
    ck_assert_str_eq(e[1].name, "0002_benchmark.sql");

    db_migration *m = NULL;
    size_t count = 0;
    char err[256] = "";
    ck_assert_msg(db_migrate_load_dir(H2PG_MIGRATIONS_DIR, &m, &count, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(count, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(e[i].version, m[i].version);
        ck_assert_str_eq(e[i].name, m[i].name);
        ck_assert_uint_eq(e[i].sql_len, m[i].sql_len);
        ck_assert_int_eq(memcmp(e[i].sql, m[i].sql, m[i].sql_len), 0);
        ck_assert_int_eq(e[i].sql[e[i].sql_len], '\0');
    }
    db_migrate_free(m, count);
}
END_TEST

/* ---- applying ---- */

/* fortune must hold exactly the rows of the spec's fortunes.tsv, byte for
 * byte: "id<TAB>message" lines after a header. */
static void expect_fortunes_match_spec(PGconn *c)
{
    const char *path = H2PG_FORTUNES_TSV;
    ck_assert_msg(path[0] != '\0', "fortunes.tsv was not found at configure time: set -DH2PG_FORTUNES_TSV=<path>");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);

    PGresult *r = PQexec(c, "SELECT id, message FROM fortune ORDER BY id");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int row = 0;
    ck_assert_int_gt(getline(&line, &cap, f), 0); /* header */
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        char *tab = strchr(line, '\t');
        ck_assert_ptr_nonnull(tab);
        *tab = '\0';
        ck_assert_int_lt(row, PQntuples(r));
        ck_assert_str_eq(PQgetvalue(r, row, 0), line);
        ck_assert_uint_eq((size_t)PQgetlength(r, row, 1), strlen(tab + 1));
        ck_assert_str_eq(PQgetvalue(r, row, 1), tab + 1);
        row++;
    }
    ck_assert_int_eq(row, 12);
    ck_assert_int_eq(PQntuples(r), row);
    PQclear(r);
    free(line);
    fclose(f);
}

START_TEST(embedded_migrations_create_the_schema_and_the_benchmark_data)
{
    char *db = test_pg_create_db();
    size_t n;
    db_migrate_embedded(&n);
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_msg(run_embedded(db, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, (int)n);
    ck_assert_int_eq(rep.already, 0);

    PGconn *c = test_pg_connect(db);
    for (size_t i = 0; i < sizeof(domain_tables) / sizeof(domain_tables[0]); i++)
        ck_assert_msg(table_exists(c, domain_tables[i]), "no table %s", domain_tables[i]);
    ck_assert(table_exists(c, "world"));
    ck_assert(table_exists(c, "fortune"));
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)n);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations WHERE checksum ~ '^[0-9a-f]{64}$'"),
                     (long long)n);

    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world"), 10000);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(DISTINCT id) FROM world WHERE id BETWEEN 1 AND 10000"), 10000);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world WHERE randomnumber BETWEEN 1 AND 10000"), 10000);
    /* random, not a constant: 10,000 draws from 10,000 values */
    ck_assert_int_gt(test_pg_int(c, "SELECT count(DISTINCT randomnumber) FROM world"), 1000);
    expect_fortunes_match_spec(c);

    /* emails are unique whatever their case: an index on lower(email) took
     * the place of 0001's constraint */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_constraint WHERE conname = 'users_email_key'"), 0);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'users'"
                                    " AND indexname = 'users_email_lower_key'"
                                    " AND indexdef LIKE 'CREATE UNIQUE INDEX % (lower(email))'"),
                     1);
    /* a user's accounts are paged by id, straight from an index */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'accounts'"
                                    " AND indexdef LIKE '% (user_id, id)'"),
                     1);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'accounts_user_id_idx'"), 0);
    /* the pruner of old idempotency keys finds them by age */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'idempotency_keys'"
                                    " AND indexname = 'idempotency_keys_created_at_idx'"),
                     1);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_description d JOIN pg_class k ON k.oid = d.objoid"
                                    " WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0 AND k.relname IN"
                                    " ('users','orders','accounts','transfers','idempotency_keys','world','fortune')"),
                     7);
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(the_domain_schema_enforces_the_api_limits)
{
    char *db = test_pg_create_db();
    char err[1024] = "";
    ck_assert_msg(run_embedded(db, NULL, err, sizeof(err)) == 0, "%s", err);
    PGconn *c = test_pg_connect(db);
    test_pg_exec(c, "INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com')");
    expect_sqlstate(c, "INSERT INTO users (name, email) VALUES ('Ada again', 'ada@example.com')", "23505");
    expect_sqlstate(c, "INSERT INTO users (name, email) VALUES ('Ada again', 'ADA@Example.COM')", "23505");
    expect_sqlstate(c, "INSERT INTO users (name, email) VALUES ('', 'x@example.com')", "23514");
    expect_sqlstate(c, "INSERT INTO users (id, name, email) VALUES (99, 'X', 'y@example.com')", "428C9");
    long long ada = test_pg_int(c, "SELECT id FROM users WHERE email = 'ada@example.com'");
    ck_assert_int_gt(ada, 0);
    test_pg_exec(c, "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents)"
                    " SELECT id, 'book', 2, 1500, 3000 FROM users");
    expect_sqlstate(c, "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents)"
                       " SELECT id, 'book', 0, 1500, 0 FROM users",
                    "23514");
    expect_sqlstate(c, "INSERT INTO orders (user_id, item, quantity, price_cents, total_cents)"
                       " VALUES (424242, 'book', 1, 1, 1)",
                    "23503");
    test_pg_exec(c, "INSERT INTO accounts (user_id, balance_cents) SELECT id, 100 FROM users");
    test_pg_exec(c, "INSERT INTO accounts (user_id, balance_cents) SELECT id, 0 FROM users");
    expect_sqlstate(c, "UPDATE accounts SET balance_cents = -1", "23514");
    test_pg_exec(c, "INSERT INTO transfers (from_account_id, to_account_id, amount_cents)"
                    " SELECT min(id), max(id), 50 FROM accounts");
    expect_sqlstate(c, "INSERT INTO transfers (from_account_id, to_account_id, amount_cents)"
                       " SELECT min(id), min(id), 50 FROM accounts",
                    "23514");
    expect_sqlstate(c, "INSERT INTO transfers (from_account_id, to_account_id, amount_cents)"
                       " SELECT min(id), max(id), 0 FROM accounts",
                    "23514");
    /* transfer history is never deleted: accounts in it cannot go... */
    expect_sqlstate(c, "DELETE FROM users", "23503");
    /* ...but without transfers a user's orders and accounts go with the user */
    test_pg_exec(c, "DELETE FROM transfers");
    test_pg_exec(c, "DELETE FROM users");
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM orders"), 0);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM accounts"), 0);
    test_pg_exec(c, "INSERT INTO idempotency_keys (key, request_hash, status, response_body)"
                    " VALUES ('k1', 'h', 201, '{}')");
    expect_sqlstate(c, "INSERT INTO idempotency_keys (key, request_hash, status, response_body)"
                       " VALUES ('k1', 'h', 201, '{}')",
                    "23505");
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_second_run_is_a_no_op)
{
    char *db = test_pg_create_db();
    size_t n;
    db_migrate_embedded(&n);
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_msg(run_embedded(db, &rep, err, sizeof(err)) == 0, "%s", err);
    PGconn *c = test_pg_connect(db);
    long long sum = test_pg_int(c, "SELECT sum(randomnumber) FROM world");

    ck_assert_msg(run_embedded(db, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, 0);
    ck_assert_int_eq(rep.already, (int)n);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)n);
    /* the random data was not generated again */
    ck_assert_int_eq(test_pg_int(c, "SELECT sum(randomnumber) FROM world"), sum);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world"), 10000);
    /* the runner let go of its lock */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                                    " (SELECT oid FROM pg_database WHERE datname = current_database())"),
                     0);
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(an_edited_migration_is_rejected_and_nothing_changes)
{
    char *db = test_pg_create_db();
    char *dir = copy_embedded_to_temp_dir();
    size_t n;
    db_migrate_embedded(&n);
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, (int)n);

    write_file(dir, "0001_domain.sql", "\n-- an innocent-looking edit\n", "a");
    write_file(dir, "9001_later.sql", "CREATE TABLE later (id integer);", "w");
    err[0] = '\0';
    ck_assert_int_eq(run_dir(db, dir, &rep, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "migration 0001_domain.sql was edited after it was applied (checksum ") != NULL, "%s",
                  err);
    ck_assert_int_eq(rep.applied, 0);

    PGconn *c = test_pg_connect(db);
    ck_assert(!table_exists(c, "later")); /* checks come before any change */
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)n);
    PQfinish(c);
    remove_dir(dir);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_new_file_is_applied_on_the_next_run)
{
    char *db = test_pg_create_db();
    char *dir = copy_embedded_to_temp_dir();
    size_t n;
    db_migrate_embedded(&n);
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);

    write_file(dir, "9001_later.sql",
               "CREATE TABLE later (id integer PRIMARY KEY);\nINSERT INTO later VALUES (1), (2), (3);\n", "w");
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, 1);
    ck_assert_int_eq(rep.already, (int)n);

    PGconn *c = test_pg_connect(db);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM later"), 3);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations WHERE version = 9001"
                                    " AND name = '9001_later.sql'"),
                     1);
    PQfinish(c);
    remove_dir(dir);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_failing_migration_is_rolled_back_and_earlier_ones_kept)
{
    char *db = test_pg_create_db();
    char *dir = copy_embedded_to_temp_dir();
    size_t n;
    const db_migration *embedded = db_migrate_embedded(&n);
    write_file(dir, "9001_broken.sql",
               "CREATE TABLE half_done (id integer);\n"
               "INSERT INTO half_done VALUES (1);\n"
               "SELEC 1;\n",
               "w");
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_int_eq(run_dir(db, dir, &rep, err, sizeof(err)), -EIO);
    ck_assert_msg(strstr(err, "9001_broken.sql") && strstr(err, "syntax error"), "%s", err);
    ck_assert_msg(strstr(err, "line 3") != NULL, "%s", err);
    ck_assert_int_eq(rep.applied, (int)n);

    PGconn *c = test_pg_connect(db);
    ck_assert(!table_exists(c, "half_done"));
    ck_assert(table_exists(c, "users"));
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world"), 10000);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)n);
    ck_assert_int_eq(test_pg_int(c, "SELECT max(version) FROM schema_migrations"), embedded[n - 1].version);

    /* fixed, it goes in on the next run */
    write_file(dir, "9001_broken.sql", "CREATE TABLE half_done (id integer);\n", "w");
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, 1);
    ck_assert(table_exists(c, "half_done"));
    PQfinish(c);
    remove_dir(dir);
    test_pg_drop_db(db);
}
END_TEST

/* Users made before emails were compared case-insensitively may clash;
 * the migration that makes them unique whatever their case stops on them,
 * says how to find them, and goes in once they are told apart. */
START_TEST(the_case_insensitive_email_migration_stops_on_clashing_users_and_says_how_to_find_them)
{
    static const char migration[] = "0004_users_email_case_insensitive.sql";
    size_t n;
    const db_migration *m = db_migrate_embedded(&n);
    const db_migration *m4 = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, migration) == 0)
            m4 = &m[i];
    ck_assert_msg(m4 != NULL, "no embedded %s", migration);
    /* the migrations before it, then users as they could be made then */
    char *db = test_pg_create_db();
    char *dir = make_temp_dir();
    for (const db_migration *k = m; k < m4; k++)
        write_file(dir, k->name, k->sql, "w");
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);
    PGconn *c = test_pg_connect(db);
    test_pg_exec(c, "INSERT INTO users (name, email) VALUES ('a', 'ada@example.com'), ('b', 'ADA@example.com'), "
                    "('c', 'grace@example.com')");

    write_file(dir, m4->name, m4->sql, "w");
    err[0] = '\0';
    ck_assert_int_eq(run_dir(db, dir, &rep, err, sizeof(err)), -EIO);
    ck_assert_msg(strstr(err, migration) && strstr(err, "1 email(s) belong to more than one user") &&
                      strstr(err, "GROUP BY 1 HAVING count(*) > 1"),
                  "%s", err);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM pg_constraint WHERE conname = 'users_email_key'"), 1);

    test_pg_exec(c, "UPDATE users SET email = 'ada.b@example.com' WHERE name = 'b'");
    ck_assert_msg(run_dir(db, dir, &rep, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(rep.applied, 1);
    expect_sqlstate(c, "INSERT INTO users (name, email) VALUES ('d', 'Grace@Example.com')", "23505");
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM users"), 3);
    PQfinish(c);
    remove_dir(dir);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_migration_that_ends_the_transaction_itself_is_an_error)
{
    char *db = test_pg_create_db();
    char *dir = make_temp_dir();
    write_file(dir, "0001_commits.sql", "CREATE TABLE first_part (id integer);\nCOMMIT;\n", "w");
    db_migrate_report rep;
    char err[1024] = "";
    ck_assert_int_eq(run_dir(db, dir, &rep, err, sizeof(err)), -EIO);
    ck_assert_msg(strstr(err, "0001_commits.sql") && strstr(err, "COMMIT"), "%s", err);
    PGconn *c = test_pg_connect(db);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), 0);
    PQfinish(c);
    remove_dir(dir);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(an_applied_version_without_its_file_is_rejected)
{
    char *db = test_pg_create_db();
    char err[1024] = "";
    ck_assert_msg(run_embedded(db, NULL, err, sizeof(err)) == 0, "%s", err);
    size_t n;
    const db_migration *m = db_migrate_embedded(&n);
    db_migrate_report rep;
    ck_assert_int_eq(db_migrate_run(db, m, 1, &rep, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "0002_benchmark.sql") && strstr(err, "no such migration"), "%s", err);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(unusable_input_is_rejected_before_connecting)
{
    char sql_a[] = "SELECT 1;", sql_b[] = "SELECT 2;", name_a[] = "0002_a.sql", name_b[] = "0001_b.sql";
    db_migration m[] = {{2, name_a, sql_a, sizeof(sql_a) - 1}, {1, name_b, sql_b, sizeof(sql_b) - 1}};
    char err[512] = "";
    /* the conninfo would fail: nothing gets that far */
    ck_assert_int_eq(db_migrate_run("host=127.0.0.1 port=1", m, 2, NULL, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "order") != NULL, "%s", err);

    char with_nul[] = "SELECT 1;\0DROP TABLE users;";
    db_migration bad = {1, name_b, with_nul, sizeof(with_nul) - 1};
    ck_assert_int_eq(db_migrate_run("host=127.0.0.1 port=1", &bad, 1, NULL, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "NUL") != NULL, "%s", err);
}
END_TEST

struct runner {
    const char *conninfo;
    pthread_barrier_t *start;
    int rc;
    db_migrate_report rep;
    char err[1024];
};

static void *run_concurrently(void *arg)
{
    struct runner *r = arg;
    pthread_barrier_wait(r->start);
    r->rc = run_embedded(r->conninfo, &r->rep, r->err, sizeof(r->err));
    return NULL;
}

START_TEST(concurrent_runners_apply_each_migration_once)
{
    enum { RUNNERS = 4 };
    char *db = test_pg_create_db();
    size_t n;
    db_migrate_embedded(&n);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RUNNERS);
    struct runner runners[RUNNERS];
    pthread_t threads[RUNNERS];
    for (int i = 0; i < RUNNERS; i++) {
        runners[i] = (struct runner){.conninfo = db, .start = &start};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, run_concurrently, &runners[i]), 0);
    }
    int applied = 0, already = 0;
    for (int i = 0; i < RUNNERS; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_msg(runners[i].rc == 0, "runner %d: %d %s", i, runners[i].rc, runners[i].err);
        applied += runners[i].rep.applied;
        already += runners[i].rep.already;
    }
    pthread_barrier_destroy(&start);
    ck_assert_int_eq(applied, (int)n);
    ck_assert_int_eq(already, (int)n * (RUNNERS - 1));
    /* the lock is taken per transaction (so that it works through a
     * transaction-pooling PgBouncer): runners may share the work, but every
     * migration is applied exactly once and seen as applied by the others */

    PGconn *c = test_pg_connect(db);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM schema_migrations"), (long long)n);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(DISTINCT version) FROM schema_migrations"), (long long)n);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM world"), 10000);
    ck_assert_int_eq(test_pg_int(c, "SELECT count(*) FROM fortune"), 12);
    PQfinish(c);
    test_pg_drop_db(db);
}
END_TEST

START_TEST(a_bad_conninfo_is_connection_refused)
{
    size_t n;
    const db_migration *m = db_migrate_embedded(&n);
    db_migrate_report rep = {7, 7};
    char err[1024] = "";

    ck_assert_int_eq(db_migrate_run("host=127.0.0.1 port=1 connect_timeout=5", m, n, &rep, err, sizeof(err)),
                     -ECONNREFUSED);
    ck_assert_msg(strstr(err, "cannot connect") && strstr(err, "127.0.0.1"), "%s", err);
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_int_eq(rep.applied, 0);
    ck_assert_int_eq(rep.already, 0);

    err[0] = '\0';
    ck_assert_int_eq(db_migrate_run("postgresql://[::1", m, n, &rep, err, sizeof(err)), -ECONNREFUSED);
    ck_assert_msg(strstr(err, "cannot connect") != NULL && strlen(err) > strlen("cannot connect to PostgreSQL: "),
                  "%s", err);

    /* libpq quotes an unparsable URI whole; the password must not reach logs */
    err[0] = '\0';
    ck_assert_int_eq(db_migrate_run("postgresql://h2pg:s3cret@[::1:5432/db", m, n, &rep, err, sizeof(err)),
                     -ECONNREFUSED);
    ck_assert_msg(strstr(err, "h2pg:***@") != NULL && strstr(err, "s3cret") == NULL, "%s", err);

    err[0] = '\0';
    ck_assert_int_eq(db_migrate_run("no_equals_sign_but=' unterminated", m, n, &rep, err, sizeof(err)),
                     -ECONNREFUSED);
    ck_assert_msg(strstr(err, "cannot connect") != NULL, "%s", err);

    /* a server that answers, but a database that does not exist (any more) */
    char *db = test_pg_create_db();
    char *gone = strdup(db);
    test_pg_drop_db(db);
    err[0] = '\0';
    ck_assert_int_eq(db_migrate_run(gone, m, n, &rep, err, sizeof(err)), -ECONNREFUSED);
    ck_assert_msg(strstr(err, "does not exist") != NULL, "%s", err);
    free(gone);
}
END_TEST

static Suite *make(void)
{
    Suite *s = suite_create("db_migrate");
    TCase *load = tcase_create("load");
    tcase_add_test(load, load_dir_orders_by_version_and_ignores_other_files);
    tcase_add_test(load, load_dir_rejects_a_missing_dir_duplicates_and_malformed_versions);
    tcase_add_test(load, embedded_migrations_are_the_migrations_directory);
    tcase_add_test(load, unusable_input_is_rejected_before_connecting);
    suite_add_tcase(s, load);

    TCase *run = tcase_create("run");
    tcase_set_timeout(run, 120);
    tcase_add_test(run, embedded_migrations_create_the_schema_and_the_benchmark_data);
    tcase_add_test(run, the_domain_schema_enforces_the_api_limits);
    tcase_add_test(run, a_second_run_is_a_no_op);
    tcase_add_test(run, an_edited_migration_is_rejected_and_nothing_changes);
    tcase_add_test(run, a_new_file_is_applied_on_the_next_run);
    tcase_add_test(run, a_failing_migration_is_rolled_back_and_earlier_ones_kept);
    tcase_add_test(run, the_case_insensitive_email_migration_stops_on_clashing_users_and_says_how_to_find_them);
    tcase_add_test(run, a_migration_that_ends_the_transaction_itself_is_an_error);
    tcase_add_test(run, an_applied_version_without_its_file_is_rejected);
    tcase_add_test(run, concurrent_runners_apply_each_migration_once);
    tcase_add_test(run, a_bad_conninfo_is_connection_refused);
    suite_add_tcase(s, run);
    return s;
}

int main(void) { return run_suite(make()); }
