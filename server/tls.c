/* TLS_CERT_FILE + TLS_KEY_FILE: HTTPS. Read once at startup, before any
 * worker runs (blocking file reads are fine there).
 *
 * HTTP/1.1 only, by ALPN too. h2o 2.2.5's HTTP/2 has no defence against
 * the attacks of its era (HPACK references that cost far more memory than
 * they weigh on the wire, rapid reset, floods of empty frames): terminate
 * HTTP/2 at the reverse proxy, which has them (README, "Behind a reverse
 * proxy"). TLS 1.2 offers forward-secret AEAD suites only (ECDHE with
 * AES-GCM or ChaCha20-Poly1305); TLS 1.3's are all of that kind. */
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
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL") != 1) {
        snprintf(err, errlen, "TLS: cannot set the cipher list");
        SSL_CTX_free(ctx);
        return NULL;
    }
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
    static const h2o_iovec_t alpn[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};
    h2o_ssl_register_alpn_protocols(ctx, alpn);
    return ctx;
}
