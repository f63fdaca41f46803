/* TLS_CERT_FILE + TLS_KEY_FILE: HTTPS, with HTTP/2 or HTTP/1.1 chosen by
 * ALPN. Read once at startup, before any worker runs (blocking file reads
 * are fine there). */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "server/server_int.h"

SSL_CTX *server__tls_create(const server_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    const char *what = NULL, *file = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1)
        what = "cannot load the certificate chain", file = cfg->tls_cert_file;
    else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1)
        what = "cannot load the private key", file = cfg->tls_key_file;
    else if (SSL_CTX_check_private_key(ctx) != 1)
        what = "the private key does not match the certificate", file = cfg->tls_key_file;
    if (what != NULL) {
        char reason[160];
        ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
        ERR_clear_error();
        snprintf(err, errlen, "TLS_CERT_FILE/TLS_KEY_FILE: %s (%s): %s", what, file, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
}
