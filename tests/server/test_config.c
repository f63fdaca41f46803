/* Configuration: defaults, environment, flags, strict values, subcommands
 * and the generated usage text. Check forks a child per test, so setenv in
 * one test cannot leak into another; the fixture also clears every variable
 * the table knows, so whatever the CI machine exports does not matter. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/aio_check.h"
#include "server/config.h"

static server_config cfg;
static server_command cmd;
static char err[512];

static int load_argv(char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return server_config_load(&cfg, argc, argv, &cmd, err, sizeof(err));
}

/* LOAD("--port=1", "migrate") runs `h2pg --port=1 migrate`. */
#define LOAD(...) load_argv((char *[]){"h2pg", ##__VA_ARGS__, NULL})

static void clear_env(void)
{
    for (size_t i = 0; i < server_config_option_count(); i++) {
        const char *env;
        server_config_option_names(i, &env, NULL);
        unsetenv(env);
    }
}

/* The load failed, and err names the variable with its flag and, when
 * allowed is not NULL, says what is allowed. */
static void assert_rejected(int rc, const char *env, const char *flag, const char *allowed)
{
    ck_assert_int_eq(rc, -EINVAL);
    char names[128];
    snprintf(names, sizeof(names), "%s (%s)", env, flag);
    ck_assert_msg(strstr(err, names) != NULL, "\"%s\" does not name %s", err, names);
    if (allowed != NULL)
        ck_assert_msg(strstr(err, allowed) != NULL, "\"%s\" does not say %s", err, allowed);
}

/* value is rejected both from the environment and from the flag. */
static void assert_bad_value(const char *env, const char *flag, const char *value, const char *allowed)
{
    setenv(env, value, 1);
    assert_rejected(LOAD(), env, flag, allowed);
    unsetenv(env);
    char arg[256];
    snprintf(arg, sizeof(arg), "%s=%s", flag, value);
    assert_rejected(LOAD(arg), env, flag, allowed);
}

static int online_cpus_capped(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

START_TEST(defaults_apply_when_nothing_is_set)
{
    ck_assert_int_eq(LOAD(), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_SERVE);
    ck_assert_str_eq(err, "");
    ck_assert_str_eq(cfg.database_url, "");
    ck_assert_str_eq(cfg.database_read_url, "");
    ck_assert_int_eq(cfg.database_pooler, SERVER_POOLER_NONE);
    ck_assert_str_eq(cfg.host, "0.0.0.0");
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_int_eq(cfg.threads, online_cpus_capped());
    ck_assert_int_eq(cfg.pool_min, 2);
    ck_assert_int_eq(cfg.pool_max, 32);
    ck_assert_int_eq(cfg.pool_acquire_timeout_ms, 2000);
    ck_assert_int_eq(cfg.request_timeout_ms, 5000);
    ck_assert_uint_eq(cfg.max_body_bytes, 1048576);
    ck_assert_int_eq(cfg.max_inflight, 4096);
    ck_assert_int_eq(cfg.statement_timeout_ms, 30000);
    ck_assert_int_eq(cfg.idle_in_transaction_timeout_ms, 120000);
    ck_assert_int_eq(cfg.keepalive_timeout_ms, 75000);
    ck_assert_int_eq(cfg.shutdown_grace_ms, 10000);
    ck_assert_int_eq(cfg.tx_max_retries, 10);
    ck_assert_int_eq(cfg.idempotency_retention_s, 86400);
    ck_assert_int_eq(cfg.events_retention_s, 604800);
    ck_assert(cfg.migrate_on_start);
    ck_assert_str_eq(cfg.migrations_dir, "");
    ck_assert_int_eq(cfg.log_level, BASE_LOG_INFO);
    ck_assert(cfg.log_json);
    ck_assert_str_eq(cfg.trusted_proxies, "");
    ck_assert_str_eq(cfg.tls_cert_file, "");
    ck_assert_str_eq(cfg.tls_key_file, "");
}
END_TEST

START_TEST(environment_values_are_read)
{
    setenv("DATABASE_URL", "postgresql://app@db/app", 1);
    setenv("DATABASE_READ_URL", "host=replica dbname=app", 1);
    setenv("DATABASE_POOLER", "transaction", 1);
    setenv("HOST", "127.0.0.1", 1);
    setenv("PORT", "9090", 1);
    setenv("THREADS", "3", 1);
    setenv("POOL_MIN", "0", 1);
    setenv("POOL_MAX", "7", 1);
    setenv("POOL_ACQUIRE_TIMEOUT_MS", "150", 1);
    setenv("REQUEST_TIMEOUT_MS", "2500", 1);
    setenv("MAX_BODY_BYTES", "4096", 1);
    setenv("MAX_INFLIGHT", "12", 1);
    setenv("STATEMENT_TIMEOUT_MS", "0", 1);
    setenv("IDLE_IN_TRANSACTION_TIMEOUT_MS", "0", 1);
    setenv("KEEPALIVE_TIMEOUT_MS", "1000", 1);
    setenv("SHUTDOWN_GRACE_MS", "0", 1);
    setenv("TX_MAX_RETRIES", "0", 1);
    setenv("IDEMPOTENCY_RETENTION_S", "3600", 1);
    setenv("EVENTS_RETENTION_S", "7200", 1);
    setenv("MIGRATE_ON_START", "false", 1);
    setenv("MIGRATIONS_DIR", "/srv/migrations", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("LOG_FORMAT", "text", 1);
    setenv("TRUSTED_PROXIES", "10.0.0.0/8,192.168.0.0/16", 1);
    setenv("TLS_CERT_FILE", "/tls/cert.pem", 1);
    setenv("TLS_KEY_FILE", "/tls/key.pem", 1);

    ck_assert_int_eq(LOAD(), 0);
    ck_assert_str_eq(cfg.database_url, "postgresql://app@db/app");
    ck_assert_str_eq(cfg.database_read_url, "host=replica dbname=app");
    ck_assert_int_eq(cfg.database_pooler, SERVER_POOLER_TRANSACTION);
    ck_assert_str_eq(cfg.host, "127.0.0.1");
    ck_assert_int_eq(cfg.port, 9090);
    ck_assert_int_eq(cfg.threads, 3);
    ck_assert_int_eq(cfg.pool_min, 0);
    ck_assert_int_eq(cfg.pool_max, 7);
    ck_assert_int_eq(cfg.pool_acquire_timeout_ms, 150);
    ck_assert_int_eq(cfg.request_timeout_ms, 2500);
    ck_assert_uint_eq(cfg.max_body_bytes, 4096);
    ck_assert_int_eq(cfg.max_inflight, 12);
    ck_assert_int_eq(cfg.statement_timeout_ms, 0);
    ck_assert_int_eq(cfg.idle_in_transaction_timeout_ms, 0);
    ck_assert_int_eq(cfg.keepalive_timeout_ms, 1000);
    ck_assert_int_eq(cfg.shutdown_grace_ms, 0);
    ck_assert_int_eq(cfg.tx_max_retries, 0);
    ck_assert_int_eq(cfg.idempotency_retention_s, 3600);
    ck_assert_int_eq(cfg.events_retention_s, 7200);
    ck_assert(!cfg.migrate_on_start);
    ck_assert_str_eq(cfg.migrations_dir, "/srv/migrations");
    ck_assert_int_eq(cfg.log_level, BASE_LOG_DEBUG);
    ck_assert(!cfg.log_json);
    ck_assert_str_eq(cfg.trusted_proxies, "10.0.0.0/8,192.168.0.0/16");
    ck_assert_str_eq(cfg.tls_cert_file, "/tls/cert.pem");
    ck_assert_str_eq(cfg.tls_key_file, "/tls/key.pem");
}
END_TEST

START_TEST(a_flag_wins_over_the_environment)
{
    setenv("PORT", "9090", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("DATABASE_URL", "postgresql://env", 1);
    ck_assert_int_eq(LOAD("--port=7070", "--database-url", "postgresql://flag"), 0);
    ck_assert_int_eq(cfg.port, 7070);
    ck_assert_str_eq(cfg.database_url, "postgresql://flag");
    ck_assert_int_eq(cfg.log_level, BASE_LOG_DEBUG); /* no flag: the environment still counts */
}
END_TEST

START_TEST(a_bad_variable_overridden_by_a_flag_is_not_an_error)
{
    setenv("PORT", "not-a-port", 1);
    ck_assert_int_eq(LOAD("--port", "81"), 0);
    ck_assert_int_eq(cfg.port, 81);
}
END_TEST

START_TEST(flags_take_their_value_after_an_equals_sign_or_as_the_next_argument)
{
    ck_assert_int_eq(LOAD("--port=1234", "--host", "::1", "--log-level", "warn", "--max-body-bytes=2KiB"), 0);
    ck_assert_int_eq(cfg.port, 1234);
    ck_assert_str_eq(cfg.host, "::1");
    ck_assert_int_eq(cfg.log_level, BASE_LOG_WARN);
    ck_assert_uint_eq(cfg.max_body_bytes, 2048);
}
END_TEST

START_TEST(a_value_after_an_equals_sign_keeps_its_own_equals_signs_and_dashes)
{
    ck_assert_int_eq(LOAD("--database-url=host=db port=5433", "--migrations-dir=--odd"), 0);
    ck_assert_str_eq(cfg.database_url, "host=db port=5433");
    ck_assert_str_eq(cfg.migrations_dir, "--odd");
}
END_TEST

START_TEST(a_repeated_flag_keeps_the_last_value)
{
    ck_assert_int_eq(LOAD("--port=1", "--port", "2"), 0);
    ck_assert_int_eq(cfg.port, 2);
}
END_TEST

START_TEST(a_bad_port_names_the_variable_and_the_flag_and_the_range)
{
    setenv("PORT", "80a", 1);
    ck_assert_int_eq(LOAD(), -EINVAL);
    ck_assert_str_eq(err, "PORT (--port): \"80a\" is not an integer in 1..65535");
}
END_TEST

START_TEST(a_non_integer_is_rejected)
{
    static const char *const bad[] = {"80a", "a80", "-1", "+80", " 80", "80 ", "0x50", "8 0", "1.5", "1e3", "\xd9\xa3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_bad_value("PORT", "--port", bad[i], "1..65535");
    assert_bad_value("TX_MAX_RETRIES", "--tx-max-retries", "-0", "0..1000");
}
END_TEST

START_TEST(an_empty_integer_is_rejected)
{
    assert_bad_value("PORT", "--port", "", "1..65535");
    assert_bad_value("STATEMENT_TIMEOUT_MS", "--statement-timeout-ms", "", "0..86400000");
}
END_TEST

START_TEST(an_integer_below_its_range_is_rejected)
{
    assert_bad_value("PORT", "--port", "0", "1..65535");
    assert_bad_value("THREADS", "--threads", "0", "1..256");
    assert_bad_value("KEEPALIVE_TIMEOUT_MS", "--keepalive-timeout-ms", "999", "1000..3600000");
    assert_bad_value("POOL_MAX", "--pool-max", "0", "1..10000");
    assert_bad_value("IDEMPOTENCY_RETENTION_S", "--idempotency-retention-s", "0", "1..31536000");
    assert_bad_value("EVENTS_RETENTION_S", "--events-retention-s", "0", "1..31536000");
}
END_TEST

START_TEST(an_integer_above_its_range_is_rejected)
{
    assert_bad_value("PORT", "--port", "65536", "1..65535");
    assert_bad_value("THREADS", "--threads", "257", "1..256");
    assert_bad_value("MAX_INFLIGHT", "--max-inflight", "1000001", "1..1000000");
    assert_bad_value("STATEMENT_TIMEOUT_MS", "--statement-timeout-ms", "86400001", "0..86400000");
    assert_bad_value("IDEMPOTENCY_RETENTION_S", "--idempotency-retention-s", "31536001", "1..31536000");
    assert_bad_value("EVENTS_RETENTION_S", "--events-retention-s", "31536001", "1..31536000");
}
END_TEST

START_TEST(an_overflowing_integer_is_rejected)
{
    /* 2^32 + 8080 and 2^64 + 1 would wrap to valid ports if overflow went unnoticed */
    assert_bad_value("PORT", "--port", "4294975376", "1..65535");
    assert_bad_value("PORT", "--port", "18446744073709551617", "1..65535");
    assert_bad_value("PORT", "--port", "99999999999999999999999999999999999999", "1..65535");
}
END_TEST

START_TEST(the_ends_of_each_range_are_accepted)
{
    ck_assert_int_eq(LOAD("--port=1", "--pool-min=0", "--pool-max=10000", "--keepalive-timeout-ms=1000", "--threads=256"), 0);
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_int_eq(cfg.pool_min, 0);
    ck_assert_int_eq(cfg.pool_max, 10000);
    ck_assert_int_eq(cfg.keepalive_timeout_ms, 1000);
    ck_assert_int_eq(cfg.threads, 256);
    ck_assert_int_eq(LOAD("--port=65535", "--statement-timeout-ms=86400000", "--request-timeout-ms=0003600000"), 0);
    ck_assert_int_eq(cfg.port, 65535);
    ck_assert_int_eq(cfg.statement_timeout_ms, 86400000);
    ck_assert_int_eq(cfg.request_timeout_ms, 3600000); /* leading zeros are still decimal, not octal */
}
END_TEST

START_TEST(a_bad_choice_is_rejected_with_the_choices_listed)
{
    assert_bad_value("LOG_LEVEL", "--log-level", "verbose", "debug, info, warn, error");
    assert_bad_value("LOG_LEVEL", "--log-level", "", "debug, info, warn, error");
    assert_bad_value("LOG_FORMAT", "--log-format", "yaml", "json, text");
    assert_bad_value("DATABASE_POOLER", "--database-pooler", "session", "none, transaction");
}
END_TEST

START_TEST(choices_ignore_case)
{
    setenv("LOG_LEVEL", "ERROR", 1);
    setenv("LOG_FORMAT", "Text", 1);
    ck_assert_int_eq(LOAD("--database-pooler=Transaction"), 0);
    ck_assert_int_eq(cfg.log_level, BASE_LOG_ERROR);
    ck_assert(!cfg.log_json);
    ck_assert_int_eq(cfg.database_pooler, SERVER_POOLER_TRANSACTION);
}
END_TEST

START_TEST(every_boolean_spelling_is_accepted_in_any_case)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "TRUE", "Yes", "ON"};
    static const char *const no[] = {"false", "0", "no", "off", "FALSE", "No", "oFF"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        setenv("MIGRATE_ON_START", no[i], 1);
        ck_assert_int_eq(LOAD(), 0);
        ck_assert_msg(!cfg.migrate_on_start, "%s", no[i]);
        setenv("MIGRATE_ON_START", yes[i], 1);
        ck_assert_int_eq(LOAD(), 0);
        ck_assert_msg(cfg.migrate_on_start, "%s", yes[i]);
    }
}
END_TEST

START_TEST(a_bad_boolean_is_rejected)
{
    assert_bad_value("MIGRATE_ON_START", "--migrate-on-start", "maybe", "true/false");
    assert_bad_value("MIGRATE_ON_START", "--migrate-on-start", "", "true/false");
    assert_bad_value("MIGRATE_ON_START", "--migrate-on-start", "2", "true/false");
    assert_bad_value("MIGRATE_ON_START", "--migrate-on-start", "y", "true/false");
}
END_TEST

START_TEST(a_bare_boolean_flag_means_true)
{
    setenv("MIGRATE_ON_START", "no", 1);
    ck_assert_int_eq(LOAD("--migrate-on-start", "--port", "1"), 0);
    ck_assert(cfg.migrate_on_start);
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_int_eq(LOAD("--migrate-on-start=off"), 0);
    ck_assert(!cfg.migrate_on_start);
    /* a bare boolean never takes the next argument, so that one is stray */
    ck_assert_int_eq(LOAD("--migrate-on-start", "false"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "\"false\""));
}
END_TEST

START_TEST(max_body_bytes_takes_binary_suffixes)
{
    static const struct {
        const char *text;
        size_t bytes;
    } ok[] = {
        {"1", 1}, {"512KiB", 512 * 1024}, {"1MiB", 1048576}, {"3MiB", 3 * 1048576}, {"1GiB", 1073741824}, {"1048576KiB", 1073741824},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        setenv("MAX_BODY_BYTES", ok[i].text, 1);
        ck_assert_int_eq(LOAD(), 0);
        ck_assert_uint_eq(cfg.max_body_bytes, ok[i].bytes);
    }
}
END_TEST

START_TEST(a_bad_byte_count_is_rejected)
{
    static const char *const bad[] = {"1MB", "1M", "1kib", "1 MiB", "MiB", "1.5MiB", "-1KiB", "1MiBs", "KiB1", "", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_bad_value("MAX_BODY_BYTES", "--max-body-bytes", bad[i], "KiB, MiB or GiB");
    static const char *const out_of_range[] = {"0", "0KiB", "2GiB", "1073741825", "1048577KiB", "99999999999999999999999KiB"};
    for (size_t i = 0; i < sizeof(out_of_range) / sizeof(out_of_range[0]); i++)
        assert_bad_value("MAX_BODY_BYTES", "--max-body-bytes", out_of_range[i], "1..1073741824");
}
END_TEST

START_TEST(pool_min_above_pool_max_names_both)
{
    setenv("POOL_MIN", "40", 1);
    ck_assert_int_eq(LOAD(), -EINVAL); /* against the default POOL_MAX of 32 */
    ck_assert_ptr_nonnull(strstr(err, "POOL_MIN (--pool-min)"));
    ck_assert_ptr_nonnull(strstr(err, "POOL_MAX (--pool-max)"));
    ck_assert_int_eq(LOAD("--pool-max=40"), 0);
    ck_assert_int_eq(cfg.pool_min, 40);
    ck_assert_int_eq(cfg.pool_max, 40);
}
END_TEST

START_TEST(tls_needs_both_the_certificate_and_the_key)
{
    ck_assert_int_eq(LOAD("--tls-cert-file=/c.pem"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "TLS_CERT_FILE (--tls-cert-file)"));
    ck_assert_ptr_nonnull(strstr(err, "TLS_KEY_FILE (--tls-key-file)"));
    setenv("TLS_KEY_FILE", "/k.pem", 1);
    ck_assert_int_eq(LOAD(), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "TLS_CERT_FILE (--tls-cert-file)"));
    ck_assert_ptr_nonnull(strstr(err, "TLS_KEY_FILE (--tls-key-file)"));
    ck_assert_int_eq(LOAD("--tls-cert-file=/c.pem"), 0);
    ck_assert_str_eq(cfg.tls_cert_file, "/c.pem");
    ck_assert_str_eq(cfg.tls_key_file, "/k.pem");
}
END_TEST

START_TEST(an_unknown_flag_is_rejected)
{
    ck_assert_int_eq(LOAD("--prot=80"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--prot"));
    ck_assert_int_eq(LOAD("serve", "--bogus"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--bogus"));
    ck_assert_int_eq(LOAD("-p", "80"), -EINVAL);
    ck_assert_int_eq(LOAD("--PORT=80"), -EINVAL); /* flags are lowercase only */
    ck_assert_int_eq(LOAD("--"), -EINVAL);
}
END_TEST

START_TEST(an_unknown_subcommand_is_rejected)
{
    ck_assert_int_eq(LOAD("server"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "\"server\""));
    ck_assert_ptr_nonnull(strstr(err, "serve, migrate or healthcheck"));
    ck_assert_int_eq(LOAD(""), -EINVAL);
}
END_TEST

START_TEST(a_subcommand_after_flags_is_rejected)
{
    ck_assert_int_eq(LOAD("--port=1", "migrate"), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "\"migrate\""));
    ck_assert_int_eq(LOAD("migrate", "serve"), -EINVAL);
}
END_TEST

START_TEST(a_flag_missing_its_value_is_rejected)
{
    assert_rejected(LOAD("--port"), "PORT", "--port", "missing value");
    assert_rejected(LOAD("migrate", "--database-url"), "DATABASE_URL", "--database-url", "missing value");
    /* the next flag is not taken as the value */
    assert_rejected(LOAD("--host", "--port=1"), "HOST", "--host", "missing value");
}
END_TEST

START_TEST(the_subcommand_is_serve_unless_another_is_named)
{
    ck_assert_int_eq(LOAD(), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_SERVE);
    ck_assert_int_eq(LOAD("--port=1"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_SERVE);
    ck_assert_int_eq(LOAD("serve"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_SERVE);
    ck_assert_int_eq(LOAD("migrate", "--database-url", "postgresql://x"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_MIGRATE);
    ck_assert_str_eq(cfg.database_url, "postgresql://x");
    ck_assert_int_eq(LOAD("healthcheck", "--port=81"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HEALTHCHECK);
    ck_assert_int_eq(cfg.port, 81);
    ck_assert_int_eq(server_config_load(&cfg, 0, NULL, &cmd, err, sizeof(err)), 0); /* no argv[0] at all */
    ck_assert_int_eq(cmd, SERVER_CMD_SERVE);
}
END_TEST

START_TEST(help_anywhere_wins_even_over_errors)
{
    ck_assert_int_eq(LOAD("--help"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
    ck_assert_int_eq(LOAD("-h"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
    ck_assert_int_eq(LOAD("migrate", "--port=1", "--help"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
    ck_assert_int_eq(LOAD("nonsense", "--bogus", "--port", "-h"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
    setenv("PORT", "broken", 1);
    setenv("TLS_CERT_FILE", "/half.pem", 1);
    ck_assert_int_eq(LOAD("--help"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
    ck_assert_int_eq(cfg.port, 8080); /* defaults only */
    ck_assert_str_eq(cfg.tls_cert_file, "");
}
END_TEST

START_TEST(version_anywhere_is_detected)
{
    ck_assert_int_eq(LOAD("--version"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_VERSION);
    ck_assert_int_eq(LOAD("healthcheck", "-V"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_VERSION);
    /* whichever comes first */
    ck_assert_int_eq(LOAD("-V", "--help"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_VERSION);
    ck_assert_int_eq(LOAD("--help", "--version"), 0);
    ck_assert_int_eq(cmd, SERVER_CMD_HELP);
}
END_TEST

START_TEST(each_flag_is_its_variable_in_lowercase_with_dashes)
{
    for (size_t i = 0; i < server_config_option_count(); i++) {
        const char *env, *flag;
        server_config_option_names(i, &env, &flag);
        char expect[128] = "--";
        for (size_t k = 0; env[k] != '\0'; k++)
            expect[2 + k] = env[k] == '_' ? '-' : (char)tolower((unsigned char)env[k]);
        expect[2 + strlen(env)] = '\0';
        ck_assert_str_eq(flag, expect);
    }
}
END_TEST

START_TEST(usage_mentions_every_variable_and_flag)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    server_config_usage(f);
    fclose(f);
    ck_assert_uint_gt(len, 0);
    for (size_t i = 0; i < server_config_option_count(); i++) {
        const char *env, *flag;
        server_config_option_names(i, &env, &flag);
        ck_assert_msg(strstr(text, env) != NULL, "usage lacks %s", env);
        ck_assert_msg(strstr(text, flag) != NULL, "usage lacks %s", flag);
    }
    static const char *const also[] = {"serve", "migrate", "healthcheck", "--help", "--version", "1..65535", "debug|info|warn|error"};
    for (size_t i = 0; i < sizeof(also) / sizeof(also[0]); i++)
        ck_assert_msg(strstr(text, also[i]) != NULL, "usage lacks %s", also[i]);
    free(text);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, clear_env, NULL);
    tcase_add_test(tc, defaults_apply_when_nothing_is_set);
    tcase_add_test(tc, environment_values_are_read);
    tcase_add_test(tc, a_flag_wins_over_the_environment);
    tcase_add_test(tc, a_bad_variable_overridden_by_a_flag_is_not_an_error);
    tcase_add_test(tc, flags_take_their_value_after_an_equals_sign_or_as_the_next_argument);
    tcase_add_test(tc, a_value_after_an_equals_sign_keeps_its_own_equals_signs_and_dashes);
    tcase_add_test(tc, a_repeated_flag_keeps_the_last_value);
    tcase_add_test(tc, a_bad_port_names_the_variable_and_the_flag_and_the_range);
    tcase_add_test(tc, a_non_integer_is_rejected);
    tcase_add_test(tc, an_empty_integer_is_rejected);
    tcase_add_test(tc, an_integer_below_its_range_is_rejected);
    tcase_add_test(tc, an_integer_above_its_range_is_rejected);
    tcase_add_test(tc, an_overflowing_integer_is_rejected);
    tcase_add_test(tc, the_ends_of_each_range_are_accepted);
    tcase_add_test(tc, a_bad_choice_is_rejected_with_the_choices_listed);
    tcase_add_test(tc, choices_ignore_case);
    tcase_add_test(tc, every_boolean_spelling_is_accepted_in_any_case);
    tcase_add_test(tc, a_bad_boolean_is_rejected);
    tcase_add_test(tc, a_bare_boolean_flag_means_true);
    tcase_add_test(tc, max_body_bytes_takes_binary_suffixes);
    tcase_add_test(tc, a_bad_byte_count_is_rejected);
    tcase_add_test(tc, pool_min_above_pool_max_names_both);
    tcase_add_test(tc, tls_needs_both_the_certificate_and_the_key);
    tcase_add_test(tc, an_unknown_flag_is_rejected);
    tcase_add_test(tc, an_unknown_subcommand_is_rejected);
    tcase_add_test(tc, a_subcommand_after_flags_is_rejected);
    tcase_add_test(tc, a_flag_missing_its_value_is_rejected);
    tcase_add_test(tc, the_subcommand_is_serve_unless_another_is_named);
    tcase_add_test(tc, help_anywhere_wins_even_over_errors);
    tcase_add_test(tc, version_anywhere_is_detected);
    tcase_add_test(tc, each_flag_is_its_variable_in_lowercase_with_dashes);
    tcase_add_test(tc, usage_mentions_every_variable_and_flag);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
