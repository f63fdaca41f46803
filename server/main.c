/* The process entry point (server_main): subcommands serve (default),
 * migrate, healthcheck; --help; --version. A bad setting is a startup error
 * naming the variable, with exit status 2. */
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

#include "server/config.h"
#include "base/log.h"
#include "server/server.h"

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

int server_main(int argc, char **argv, const server_app *app)
{
    server_config cfg;
    server_command cmd;
    char err[512];
    if (server_config_load(&cfg, argc, argv, &cmd, err, sizeof(err)) < 0 ||
        (cmd == SERVER_CMD_SERVE && server_check_config(&cfg, err, sizeof(err)) < 0)) {
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
        base_log_init(cfg.log_level, cfg.log_json);
        return app->migrate != NULL ? app->migrate(&cfg) : 0;
    case SERVER_CMD_SERVE:
        break;
    }
    base_log_init(cfg.log_level, cfg.log_json);
    if (cfg.migrate_on_start && app->migrate != NULL) {
        int status = app->migrate(&cfg);
        if (status != 0)
            return status;
    }
    return server_run(&cfg, app);
}
