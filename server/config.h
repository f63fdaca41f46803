/* The service's configuration, twelve-factor style: every setting has an
 * environment variable, a command-line flag that wins over it, and a default.
 * One table in config.c describes each option; parsing and --help are both
 * generated from it, so they cannot drift apart.
 *
 * Loaded once in main, before any thread starts (getenv is not thread-safe
 * against setenv); read-only afterwards. */
#ifndef H2PG_SERVER_CONFIG_H
#define H2PG_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/log.h"

typedef enum server_command {
    SERVER_CMD_SERVE,
    SERVER_CMD_MIGRATE,
    SERVER_CMD_HEALTHCHECK,
    SERVER_CMD_HELP,
    SERVER_CMD_VERSION,
} server_command;

/* Transaction-mode poolers (PgBouncer and the like) hand each transaction a
 * possibly different server session, so session state must not be relied on. */
typedef enum server_pooler { SERVER_POOLER_NONE, SERVER_POOLER_TRANSACTION } server_pooler;

/* Where the event-loop threads run: pinned one to a CPU (auto, when THREADS
 * is a multiple of the CPUs the process may use), or wherever the scheduler
 * puts them. */
typedef enum server_cpu_affinity { SERVER_CPU_AFFINITY_AUTO, SERVER_CPU_AFFINITY_OFF } server_cpu_affinity;

/* The forwarding header a trusted proxy sets (and the only one believed). */
typedef enum server_forwarded { SERVER_FORWARDED_XFF, SERVER_FORWARDED_RFC7239 } server_forwarded;

/* A plain value: the strings are borrowed (from argv, environ or static
 * defaults) and live as long as the process does, unless someone calls
 * setenv/unsetenv on the variable afterwards. */
typedef struct server_config {
    const char *database_url;      /* "" means libpq's defaults (PG* variables) */
    const char *database_read_url; /* read replicas: one conninfo, or URIs separated by whitespace */
    const char *database_listen_url; /* GET /events LISTENs here; "": on a pool connection */
    server_pooler database_pooler;
    const char *host;
    int port;
    int threads;
    server_cpu_affinity worker_cpu_affinity;
    int pool_min; /* connections in total across threads */
    int pool_max; /* connections in total across threads */
    int pool_acquire_timeout_ms;
    int request_timeout_ms;
    int stream_stall_timeout_ms; /* a streamed response waits this long for the client to take a chunk */
    int events_heartbeat_ms;     /* GET /events: a comment line after this long without an event */
    int events_poll_ms;          /* GET /events: reads new events this often without LISTEN */
    size_t max_body_bytes;
    int max_inflight; /* per thread */
    int statement_timeout_ms;            /* 0 = off */
    int idle_in_transaction_timeout_ms;  /* 0 = off */
    int keepalive_timeout_ms;
    int shutdown_grace_ms;
    int tx_max_retries;
    int idempotency_retention_s; /* how long an Idempotency-Key's outcome is kept */
    int events_retention_s;      /* how long an outbox event is kept */
    bool migrate_on_start;
    const char *migrations_dir; /* "" means the migrations embedded in the binary */
    enum base_log_level log_level;
    bool log_json;
    const char *trusted_proxies; /* CIDR list, unparsed */
    server_forwarded forwarded_header;
    size_t max_header_bytes;     /* a larger header section gets 431 */
    int header_timeout_ms;       /* to finish a header section once started */
    int export_max_concurrent;   /* in total; 0: POOL_MAX / 4, at least 1 */
    const char *tls_cert_file;   /* "" with tls_key_file "": plain HTTP */
    const char *tls_key_file;
    bool webhook_allow_private;  /* false: webhooks reach public addresses only */
    int webhook_timeout_ms;      /* per delivery attempt */
    int webhook_max_attempts;
    int webhook_retry_base_ms;   /* first retry pause, doubling */
    int webhook_retry_max_ms;
    int webhook_poll_ms;         /* dispatcher's pause between passes */
    /* bearer tokens (routes/auth.c): on when a key source is set */
    const char *auth_jwks_file;  /* "": none */
    const char *auth_jwks_url;   /* "": none */
    int auth_jwks_refetch_s;     /* least time between two fetches of the URL */
    const char *auth_issuer;     /* "": not checked */
    const char *auth_audience;   /* "": not checked */
    int auth_leeway_s;
    const char *auth_algorithms; /* comma list of RS256, ES256, HS256 */
    int rate_limit_per_s;        /* 0: off */
    int rate_limit_burst;        /* 0: RATE_LIMIT_PER_S (at least 1) */
    const char *cors_allow_origins; /* comma list of origins, or "*"; "": none */
} server_config;

/* Fills cfg from the defaults, then the environment, then argv (argv[0] is
 * the program name; flags win over the environment, and a variable that a
 * flag overrides is not parsed at all). Sets *cmd to the subcommand, or to
 * SERVER_CMD_HELP/VERSION when --help/-h or --version/-V appears anywhere,
 * in which case cfg holds the defaults and nothing else is checked.
 * Returns 0, or -EINVAL with a one-line message in err (if err and errlen
 * are non-zero) that names the variable and its flag and what is allowed;
 * cfg and *cmd are then unspecified. Allocates nothing; nothing to free. */
int server_config_load(server_config *cfg, int argc, char **argv, server_command *cmd, char *err, size_t errlen);

/* Token signature algorithms, as bits 1 << SERVER_ALG_*. */
enum { SERVER_ALG_RS256, SERVER_ALG_ES256, SERVER_ALG_HS256 };

/* Parses AUTH_ALGORITHMS ("RS256,ES256") into *mask (may be NULL): 0, or
 * -EINVAL with a message (an unknown name, "none" included; an empty list). */
int server_config_algorithms(const char *list, unsigned *mask, char *err, size_t errlen);

/* Writes the usage text to f: the subcommands, then every option with its
 * flag, variable, allowed values, default and help. Ignores write errors. */
void server_config_usage(FILE *f);

/* The number of options in the table. Never fails. */
size_t server_config_option_count(void);

/* The variable name ("PORT") and flag ("--port") of option i < count, as
 * static strings (never freed); either pointer may be NULL. Asserts on i. */
void server_config_option_names(size_t i, const char **env, const char **flag);

#endif
