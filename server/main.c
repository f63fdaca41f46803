/* h2pg: the process entry point. Subcommands: serve (default), migrate,
 * healthcheck; --help; --version. A bad setting is a startup error naming
 * the variable, with exit status 2. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "db/migrate.h"
#include "routes/routes.h"
#include "server/config.h"
#include "server/log.h"
#include "server/server.h"

#define MIGRATE_RETRY_FOR 30 /* seconds to wait for the database at start */

#if defined(__SANITIZE_ADDRESS__)
#define H2PG_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2PG_LSAN 1
#endif
#endif
#ifdef H2PG_LSAN
/* LeakSanitizer: h2o 2.2.5 keeps freed memory-pool chunks on a per-thread
 * recycle list in static thread-local storage it offers no way to empty, so
 * they become unreachable when a worker thread ends. Everything else must
 * be freed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:h2o_mem_alloc_recycle\n"; }
#endif

/* Applies pending migrations (blocking libpq: no event loop runs yet).
 * A database that is not up yet is retried for a while, as containers
 * often start together. */
static int migrate(const server_config *cfg)
{
    db_migration *loaded = NULL;
    const db_migration *m;
    size_t n;
    char err[1024];
    if (cfg->migrations_dir[0] != '\0') {
        if (db_migrate_load_dir(cfg->migrations_dir, &loaded, &n, err, sizeof(err)) < 0) {
            log_error("migrations: %s", err);
            return 1;
        }
        m = loaded;
    } else {
        m = db_migrate_embedded(&n);
    }
    db_migrate_report rep = {0};
    int rc;
    time_t give_up = time(NULL) + MIGRATE_RETRY_FOR;
    while ((rc = db_migrate_run(cfg->database_url, m, n, &rep, err, sizeof(err))) == -ECONNREFUSED &&
           time(NULL) < give_up) {
        log_warn("migrations: database not reachable yet, retrying: %s", err);
        sleep(1);
    }
    db_migrate_free(loaded, n);
    if (rc < 0) {
        log_error("migrations failed: %s", err);
        return 1;
    }
    log_info("migrations: %d applied, %d already applied", rep.applied, rep.already);
    return 0;
}

/* For container HEALTHCHECKs (no curl in the image): GET /readyz on the
 * local port, over TLS when the service serves HTTPS (the certificate is
 * not checked: this is the service asking itself); exit 0 on 200. */
static int healthcheck(const server_config *cfg)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->port);
    const char *host = strcmp(cfg->host, "0.0.0.0") == 0 || strcmp(cfg->host, "::") == 0 ? "127.0.0.1" : cfg->host;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return 1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    if (ok && cfg->tls_cert_file[0] != '\0') {
        ok = (ctx = SSL_CTX_new(TLS_client_method())) != NULL && (ssl = SSL_new(ctx)) != NULL &&
             SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1;
    }
    char req[256];
    int len = snprintf(req, sizeof(req), "GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    char buf[64] = "";
    if (ok && ssl != NULL)
        ok = SSL_write(ssl, req, len) == len && SSL_read(ssl, buf, sizeof(buf) - 1) > 12;
    else if (ok)
        ok = write(fd, req, (size_t)len) == len && read(fd, buf, sizeof(buf) - 1) > 12;
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    if (ok && strncmp(buf + 9, "200", 3) == 0)
        return 0;
    fprintf(stderr, "h2pg healthcheck: not ready\n");
    return 1;
}

int main(int argc, char **argv)
{
    server_config cfg;
    server_command cmd;
    char err[512];
    if (server_config_load(&cfg, argc, argv, &cmd, err, sizeof(err)) < 0) {
        fprintf(stderr, "h2pg: %s\nTry 'h2pg --help'.\n", err);
        return 2;
    }
    if ((cmd == SERVER_CMD_SERVE) && server_check_config(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "h2pg: %s\nTry 'h2pg --help'.\n", err);
        return 2;
    }
    switch (cmd) {
    case SERVER_CMD_HELP:
        server_config_usage(stdout);
        return 0;
    case SERVER_CMD_VERSION:
        printf("h2pg %s\n", PROJECT_VERSION);
        return 0;
    case SERVER_CMD_HEALTHCHECK:
        return healthcheck(&cfg);
    case SERVER_CMD_MIGRATE:
        server_log_init(cfg.log_level, cfg.log_json);
        return migrate(&cfg);
    case SERVER_CMD_SERVE:
        break;
    }
    server_log_init(cfg.log_level, cfg.log_json);
    if (cfg.migrate_on_start && migrate(&cfg) != 0)
        return 1;
    size_t n;
    const server_route_def *routes = routes_all(&n);
    if (routes == NULL)
        return 1;
    return server_run(&cfg, routes, n);
}
