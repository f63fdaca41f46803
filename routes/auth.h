/* Bearer-token authentication: JWS-signed JWTs checked against the keys of
 * a JWK Set (AUTH_JWKS_FILE and/or AUTH_JWKS_URL).
 *
 * The JOSE work is cjose's (Debian's libcjose): it imports RSA, EC and oct
 * keys straight from their JWK form and verifies RS256, ES256 and HS256
 * compact JWS. libjwt 1.10 (the other Debian library) takes only PEM keys
 * or raw secrets, so a JWK Set would have to be converted by hand, and it
 * lets the token's own alg pick how a key is used. Here nothing parses or
 * checks a signature by hand: this module only picks the key by kid and
 * refuses an alg that the key's type, or AUTH_ALGORITHMS, does not allow
 * (so an HS256 token "signed" with an RSA public key never reaches a
 * verifier), then reads the claims (exp, nbf, iat, iss, aud, sub, scope).
 *
 * Keys live per worker thread, like everything else mutable: each worker
 * re-reads the file on a helper thread when its mtime, size or inode
 * changed (looked at once a second by a task of the worker), and fetches
 * the URL with the async HTTP client at start, again when a token names a
 * kid it does not know (at most once per AUTH_JWKS_REFETCH_S), and every
 * five minutes regardless, so that a key removed there stops being trusted
 * by a worker that never saw an unknown kid.
 *
 * Verifying an RS256 signature costs more than the rest of a small request
 * (measured: GET /users/{id} at 0.65x without a cache), so each worker
 * remembers the tokens it accepted: a direct-mapped table of 1,024 slots,
 * looked up by the whole token (tokens over 2 KiB are not kept), an entry
 * good until the token's exp plus the leeway and only while the key sets
 * are the ones that verified it (any reload of the file or the URL drops
 * them all). Failures are never kept. */
#ifndef H2PG_ROUTES_AUTH_H
#define H2PG_ROUTES_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h"
#include "server/http.h"

/* Who sent the request, when its token was accepted. */
typedef struct routes_caller {
    int64_t user_id; /* sub */
    bool admin;      /* scope contains "admin" */
    int64_t exp;     /* the token's exp (Unix seconds) */
} routes_caller;

/* Tokens larger than this are refused unread. */
#define ROUTES_AUTH_MAX_TOKEN 8192

/* A JWK Set's usable signing keys (opaque: the cjose keys it holds). */
typedef struct routes_keyset routes_keyset;

/* Parses a JWK Set document. Keys it cannot use (another kty or curve,
 * "use" other than "sig", an "alg" that does not fit its type) are left
 * out. 0 with *out (free with routes_keyset_free), or -EINVAL with a
 * message in err. Pure: safe on any thread. */
int routes_keyset_parse(const char *json, size_t len, routes_keyset **out, char *err, size_t errlen);
void routes_keyset_free(routes_keyset *ks);
size_t routes_keyset_size(const routes_keyset *ks);

/* What a token must satisfy besides its signature. */
typedef struct routes_auth_rules {
    unsigned algs;        /* 1 << SERVER_ALG_* */
    const char *issuer;   /* NULL or "": not checked */
    const char *audience; /* NULL or "": not checked */
    int64_t leeway_s;
} routes_auth_rules;

/* Checks a compact JWS token against the keys of sets[0..n) (NULL sets
 * are skipped) at time now_s (Unix seconds). 0 with *caller filled;
 * -ENOKEY when its kid is in none of the sets (a refetch may find it);
 * -EACCES for any other failure. *reason says why, for the log (static
 * text). Never awaits. */
int routes_auth_check(const routes_keyset *const *sets, size_t n, const char *token, size_t len,
                      const routes_auth_rules *rules, int64_t now_s, routes_caller *caller, const char **reason);

/* ---- the service's use, per worker ---- */

/* Sets this worker up from cfg: the rules, and the first load of the keys
 * (the file on a helper thread, the URL fetched). Awaits; call from the
 * worker's start task. -EINVAL (logged) when the file cannot be used. */
int routes_auth_worker_start(const server_config *cfg, int worker);
/* Stops the file watcher and frees the keys (worker's stop task). */
void routes_auth_worker_stop(void);
/* Whether a key source is configured (on this worker). */
bool routes_auth_enabled(void);

/* Authenticates r from its Authorization header: 0 with *caller filled,
 * else -EACCES with *reason (for the log) and *sent (whether a token was
 * there at all). May await a refetch of AUTH_JWKS_URL (under the request's
 * deadline); only from a task. */
int routes_auth_request(server_req *r, routes_caller *caller, const char **reason, bool *sent);

#endif
