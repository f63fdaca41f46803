/* Behind a reverse proxy: who the client really is.
 *
 * TRUSTED_PROXIES is a comma-separated list of CIDRs ("10.0.0.0/8,
 * 2001:db8::/32") or single addresses. Only when the peer is trusted are
 * the forwarding headers believed: RFC 7239 Forwarded if present, else
 * X-Forwarded-For, walked from the right, skipping trusted hops; the first
 * untrusted address is the client (if every hop is trusted, the leftmost).
 * X-Forwarded-Proto (or Forwarded's proto=) likewise gives the scheme.
 * Everything here is pure and never allocates after parsing. */
#ifndef H2PG_SERVER_PROXY_H
#define H2PG_SERVER_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct server_proxies server_proxies;

/* Parses the list ("" gives an empty list that trusts nobody). -EINVAL with
 * a message naming the bad entry, -ENOMEM. Free with server_proxies_free. */
int server_proxies_parse(const char *list, server_proxies **out, char *err, size_t errlen);
void server_proxies_free(server_proxies *p);

/* Whether addr (a numeric IPv4 or IPv6 address, IPv4-mapped IPv6 too)
 * is inside one of the ranges. */
bool server_proxies_trusts(const server_proxies *p, const char *addr);
/* Whether any proxy is trusted at all. */
bool server_proxies_any(const server_proxies *p);

typedef struct server_client {
    char addr[64];  /* numeric address */
    char proto[8];  /* "http" or "https" */
} server_client;

/* Resolves the client from the peer's numeric address, the connection's
 * scheme and the request's headers (each may be NULL; repeated headers
 * joined with ", " in order). Malformed header values are ignored (the
 * peer is then the client). */
void server_proxies_resolve(const server_proxies *p, const char *peer, const char *scheme, const char *forwarded,
                            const char *x_forwarded_for, const char *x_forwarded_proto, server_client *out);

#endif
