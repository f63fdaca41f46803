/* Bearer tokens: the key sets, the checks of one token, and each worker's
 * keys kept fresh (see auth.h for why cjose). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjose/cjose.h>
#include <jansson.h>

#include "aio/aio.h"
#include "base/log.h"
#include "client/http.h"
#include "routes/auth.h"
#include "server/parse.h"

#define JWKS_MAX_BYTES (1024 * 1024)
#define JWKS_FETCH_TIMEOUT AIO_SEC(5)
#define FILE_CHECK_EVERY AIO_SEC(1)
#define URL_REFRESH_EVERY AIO_SEC(300)
#define CACHE_SLOTS 1024
#define CACHE_MAX_TOKEN 2048
#define RSA_MIN_BITS 2048
#define OCT_MIN_BITS 256

/* ---- key sets ---- */

struct key {
    char *kid;    /* NULL: the JWK has none */
    unsigned alg; /* the one SERVER_ALG_* its type allows */
    cjose_jwk_t *jwk;
};

struct routes_keyset {
    struct key *keys;
    size_t n;
};

static const char *const ALG_NAMES[] = {[SERVER_ALG_RS256] = "RS256", [SERVER_ALG_ES256] = "ES256",
                                        [SERVER_ALG_HS256] = "HS256"};

static int alg_by_name(const char *name)
{
    for (int i = 0; i < (int)(sizeof(ALG_NAMES) / sizeof(ALG_NAMES[0])); i++)
        if (name != NULL && strcmp(name, ALG_NAMES[i]) == 0)
            return i;
    return -1;
}

void routes_keyset_free(routes_keyset *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        cjose_jwk_release(ks->keys[i].jwk);
    }
    free(ks->keys);
    free(ks);
}

size_t routes_keyset_size(const routes_keyset *ks) { return ks != NULL ? ks->n : 0; }

/* The algorithm a JWK may sign with, from its type (and curve, and size),
 * or -1 for a key this service does not use. */
static int key_alg(const cjose_jwk_t *jwk)
{
    cjose_err err;
    switch (cjose_jwk_get_kty(jwk, &err)) {
    case CJOSE_JWK_KTY_RSA:
        return cjose_jwk_get_keysize(jwk, &err) >= RSA_MIN_BITS ? SERVER_ALG_RS256 : -1;
    case CJOSE_JWK_KTY_EC:
        return cjose_jwk_EC_get_curve(jwk, &err) == CJOSE_JWK_EC_P_256 ? SERVER_ALG_ES256 : -1;
    case CJOSE_JWK_KTY_OCT:
        return cjose_jwk_get_keysize(jwk, &err) >= OCT_MIN_BITS ? SERVER_ALG_HS256 : -1;
    }
    return -1;
}

int routes_keyset_parse(const char *json, size_t len, routes_keyset **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = doc != NULL ? json_object_get(doc, "keys") : NULL;
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "not a JWK Set (%s)", doc == NULL ? jerr.text : "no \"keys\" array");
        json_decref(doc);
        return -EINVAL;
    }
    routes_keyset *ks = calloc(1, sizeof(*ks));
    if (ks == NULL || (ks->keys = calloc(json_array_size(keys) + 1, sizeof(*ks->keys))) == NULL) {
        free(ks);
        json_decref(doc);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (!json_is_object(k))
            continue;
        const char *use = json_string_value(json_object_get(k, "use"));
        json_t *kid = json_object_get(k, "kid");
        if ((use != NULL && strcmp(use, "sig") != 0) || (kid != NULL && !json_is_string(kid)))
            continue;
        cjose_err cerr;
        cjose_jwk_t *jwk = cjose_jwk_import_json((cjose_header_t *)k, &cerr);
        if (jwk == NULL)
            continue;
        int alg = key_alg(jwk);
        json_t *stated = json_object_get(k, "alg");
        if (alg < 0 || (stated != NULL && alg_by_name(json_string_value(stated)) != alg)) {
            cjose_jwk_release(jwk);
            continue;
        }
        struct key *key = &ks->keys[ks->n];
        key->alg = (unsigned)alg;
        key->jwk = jwk;
        if (kid != NULL && (key->kid = strdup(json_string_value(kid))) == NULL) {
            cjose_jwk_release(jwk);
            continue;
        }
        ks->n++;
    }
    json_decref(doc);
    *out = ks;
    return 0;
}

/* ---- one token ---- */

static const struct key *find_key(const routes_keyset *const *sets, size_t n, const char *kid)
{
    const struct key *only = NULL;
    size_t total = 0;
    for (size_t s = 0; s < n; s++) {
        if (sets[s] == NULL)
            continue;
        for (size_t i = 0; i < sets[s]->n; i++) {
            const struct key *k = &sets[s]->keys[i];
            if (kid != NULL && k->kid != NULL && strcmp(k->kid, kid) == 0)
                return k;
            only = k;
            total++;
        }
    }
    /* no kid: only when there is one key to choose */
    return kid == NULL && total == 1 ? only : NULL;
}

/* A NumericDate claim: absent is fine unless required; present must be a
 * number. */
static bool numeric_date(json_t *claims, const char *name, bool required, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL)
        return !required;
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    if (!(d > -1e15 && d < 1e15))
        return false;
    *out = (int64_t)d;
    return true;
}

static bool audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) return true;
    return false;
}

static bool scope_has(const char *scope, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = scope; *p != '\0';) {
        size_t n = strcspn(p, " ");
        if (n == wl && memcmp(p, word, n) == 0)
            return true;
        p += n;
        p += strspn(p, " ");
    }
    return false;
}

/* The claims of a verified token. */
static int check_claims(json_t *claims, const routes_auth_rules *rules, int64_t now, routes_caller *caller,
                        const char **reason)
{
    int64_t exp = 0, nbf = 0, iat = 0;
    if (!json_is_object(claims))
        return *reason = "the payload is not a JSON object", -EACCES;
    if (!numeric_date(claims, "exp", true, &exp))
        return *reason = "exp is missing or not a number", -EACCES;
    if (now > exp + rules->leeway_s)
        return *reason = "the token has expired", -EACCES;
    if (!numeric_date(claims, "nbf", false, &nbf) || nbf > now + rules->leeway_s)
        return *reason = "the token is not valid yet (nbf)", -EACCES;
    if (!numeric_date(claims, "iat", false, &iat) || iat > now + rules->leeway_s)
        return *reason = "the token was issued in the future (iat)", -EACCES;
    if (rules->issuer != NULL && rules->issuer[0] != '\0') {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, rules->issuer) != 0)
            return *reason = "wrong issuer", -EACCES;
    }
    if (rules->audience != NULL && rules->audience[0] != '\0' &&
        !audience_matches(json_object_get(claims, "aud"), rules->audience))
        return *reason = "wrong audience", -EACCES;
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (sub == NULL || server_parse_id(sub, strlen(sub), &caller->user_id) < 0)
        return *reason = "sub is not a user id", -EACCES;
    json_t *scope = json_object_get(claims, "scope");
    if (scope != NULL && !json_is_string(scope))
        return *reason = "scope is not a string", -EACCES;
    caller->admin = scope != NULL && scope_has(json_string_value(scope), "admin");
    caller->exp = exp;
    return 0;
}

/* Only the characters of a compact JWS: three base64url parts. */
static bool compact_form(const char *t, size_t len)
{
    int dots = 0;
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (c == '.')
            dots++;
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return dots == 2;
}

int routes_auth_check(const routes_keyset *const *sets, size_t n, const char *token, size_t len,
                      const routes_auth_rules *rules, int64_t now_s, routes_caller *caller, const char **reason)
{
    if (len > ROUTES_AUTH_MAX_TOKEN)
        return *reason = "the token is larger than 8 KiB", -EACCES;
    if (!compact_form(token, len))
        return *reason = "not a compact JWS", -EACCES;
    cjose_err err;
    /* cjose reads the protected header here (and refuses algs it does not
     * know, "none" among them); nothing is trusted before verify */
    cjose_jws_t *jws = cjose_jws_import(token, len, &err);
    if (jws == NULL)
        return *reason = "the token does not parse as a JWS", -EACCES;
    int rc = -EACCES;
    cjose_header_t *hdr = cjose_jws_get_protected(jws);
    json_t *kidv = json_object_get((json_t *)hdr, "kid");
    const char *kid = json_string_value(kidv);
    int alg = alg_by_name(cjose_header_get(hdr, CJOSE_HDR_ALG, &err));
    const struct key *key;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    json_t *claims = NULL;
    if (alg < 0 || !(rules->algs & (1u << alg))) {
        *reason = "the token's alg is not allowed";
    } else if (json_object_get((json_t *)hdr, "crit") != NULL) {
        *reason = "the token has critical header parameters";
    } else if (kidv != NULL && kid == NULL) {
        *reason = "kid is not a string";
    } else if ((key = find_key(sets, n, kid)) == NULL) {
        *reason = kid != NULL ? "no key has the token's kid" : "the token has no kid and there is not exactly one key";
        rc = kid != NULL ? -ENOKEY : -EACCES;
    } else if (key->alg != (unsigned)alg) {
        *reason = "the token's alg does not fit its key's type";
    } else if (!cjose_jws_verify(jws, key->jwk, &err)) {
        *reason = "bad signature";
    } else if (!cjose_jws_get_plaintext(jws, &plain, &plain_len, &err) ||
               (claims = json_loadb((const char *)plain, plain_len, 0, NULL)) == NULL) {
        *reason = "the payload is not JSON";
    } else {
        rc = check_claims(claims, rules, now_s, caller, reason);
    }
    json_decref(claims);
    cjose_jws_release(jws);
    return rc;
}

/* ---- each worker's keys ---- */

/* A token this worker accepted (see auth.h). */
struct cached {
    char *token; /* malloc'd; NULL: empty slot */
    size_t len;
    uint64_t gen; /* wa.gen when it was verified */
    routes_caller caller;
};

struct worker_auth {
    bool on;
    uint64_t gen; /* bumped whenever a key set is replaced */
    struct cached *cache; /* CACHE_SLOTS, made at start */
    routes_auth_rules rules;
    const char *file, *url;
    int64_t refetch_every;
    routes_keyset *file_keys, *url_keys;
    /* the file as last read */
    struct timespec mtime;
    off_t size;
    ino_t ino;
    bool seen;    /* the stamp above is set */
    bool failing; /* the last look at the file failed (logged) */
    aio_task *watcher;
    /* the URL */
    int64_t fetched_at; /* aio_now() of the last fetch begun, 0 before */
    bool fetching;
    aio_event fetched;  /* set while no fetch runs */
};

static _Thread_local struct worker_auth wa;

bool routes_auth_enabled(void) { return wa.on; }

/* What a helper thread does for the file watcher: stat, and read and
 * parse if it changed. */
struct file_job {
    const char *path;
    struct timespec mtime;
    off_t size;
    ino_t ino;
    bool seen;
    bool changed;
    routes_keyset *keys;
    char err[256];
};

static int read_file_job(void *arg)
{
    struct file_job *j = arg;
    struct stat st;
    if (stat(j->path, &st) < 0) {
        int e = errno;
        snprintf(j->err, sizeof(j->err), "%s: %s", j->path, strerror(e));
        return -e;
    }
    if (j->seen && st.st_mtim.tv_sec == j->mtime.tv_sec && st.st_mtim.tv_nsec == j->mtime.tv_nsec &&
        st.st_size == j->size && st.st_ino == j->ino)
        return 0;
    j->changed = true;
    j->mtime = st.st_mtim;
    j->size = st.st_size;
    j->ino = st.st_ino;
    if (st.st_size > JWKS_MAX_BYTES) {
        snprintf(j->err, sizeof(j->err), "%s: larger than %d bytes", j->path, JWKS_MAX_BYTES);
        return -EFBIG;
    }
    int fd = open(j->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(j->err, sizeof(j->err), "%s: %s", j->path, strerror(e));
        return -e;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t r = 1;
    while (buf != NULL && got < (size_t)st.st_size && (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)r;
    close(fd);
    int rc;
    if (buf == NULL) {
        snprintf(j->err, sizeof(j->err), "out of memory");
        rc = -ENOMEM;
    } else if (r < 0) {
        snprintf(j->err, sizeof(j->err), "%s: %s", j->path, strerror(errno));
        rc = -EIO;
    } else {
        char perr[200];
        rc = routes_keyset_parse(buf, got, &j->keys, perr, sizeof(perr));
        if (rc < 0)
            snprintf(j->err, sizeof(j->err), "%s: %s", j->path, perr);
    }
    free(buf);
    return rc;
}

/* Re-reads the file if it changed; a file that cannot be used keeps the
 * keys last read (and is logged once per change). */
static int load_file(bool first)
{
    struct file_job j = {.path = wa.file, .mtime = wa.mtime, .size = wa.size, .ino = wa.ino, .seen = wa.seen};
    int rc = aio_to_thread(read_file_job, &j);
    if (rc == -ECANCELED || rc == -ETIMEDOUT)
        return rc;
    if (j.changed) {
        wa.mtime = j.mtime;
        wa.size = j.size;
        wa.ino = j.ino;
        wa.seen = true;
    }
    if (rc < 0) {
        /* a file that stays missing is told once, not every second */
        if (j.changed || !wa.failing)
            log_warn("auth: AUTH_JWKS_FILE %s%s", j.err, first ? "" : "; the keys read before stay in use");
        wa.failing = true;
        return rc;
    }
    wa.failing = false;
    if (!j.changed)
        return 0;
    routes_keyset_free(wa.file_keys);
    wa.file_keys = j.keys;
    wa.gen++;
    log_info("auth: %zu signing keys from AUTH_JWKS_FILE %s", j.keys->n, wa.file);
    return 0;
}

static int fetch_url(void);

/* The worker's keys kept fresh: the file looked at every second, the URL
 * fetched again every URL_REFRESH_EVERY even when no token names a new
 * kid (else a key removed there would stay trusted by a worker that never
 * saw an unknown kid). */
static int watch_keys(void *arg)
{
    (void)arg;
    while (aio_sleep(FILE_CHECK_EVERY) == 0) {
        if (wa.file != NULL && load_file(false) == -ECANCELED)
            break;
        int64_t every = wa.refetch_every > URL_REFRESH_EVERY ? wa.refetch_every : URL_REFRESH_EVERY;
        if (wa.url != NULL && !wa.fetching && aio_now() - wa.fetched_at >= every && fetch_url() == -ECANCELED)
            break;
    }
    return 0;
}

/* Fetches AUTH_JWKS_URL (at most once per refetch_every; a request that
 * comes while a fetch runs waits for it). 0 when new keys came. */
static int fetch_url(void)
{
    if (wa.fetching)
        return aio_event_wait(&wa.fetched) < 0 ? -ECANCELED : 0;
    int64_t now = aio_now(), before = wa.fetched_at;
    if (before != 0 && now - before < wa.refetch_every)
        return -EAGAIN;
    wa.fetching = true;
    wa.fetched_at = now;
    aio_event_clear(&wa.fetched);
    client_http_request req = {.url = wa.url, .max_response = JWKS_MAX_BYTES};
    client_http_response resp;
    aio_timeout scope;
    aio_timeout_open(&scope, JWKS_FETCH_TIMEOUT);
    int rc = client_http_fetch(&req, &resp);
    aio_timeout_close(&scope);
    if (rc == -ECANCELED) {
        wa.fetched_at = before; /* the caller went away: the next may try */
    } else if (rc < 0) {
        log_warn("auth: AUTH_JWKS_URL %s: %s (%s)", wa.url, strerror(-rc), resp.error);
    } else if (resp.status != 200) {
        log_warn("auth: AUTH_JWKS_URL %s answered %ld", wa.url, resp.status);
        rc = -EIO;
    } else {
        routes_keyset *ks;
        char err[200];
        rc = routes_keyset_parse(resp.body, resp.body_len, &ks, err, sizeof(err));
        if (rc < 0) {
            log_warn("auth: AUTH_JWKS_URL %s: %s", wa.url, err);
        } else {
            routes_keyset_free(wa.url_keys);
            wa.url_keys = ks;
            wa.gen++;
            log_info("auth: %zu signing keys from AUTH_JWKS_URL %s", ks->n, wa.url);
        }
    }
    client_http_response_dispose(&resp);
    wa.fetching = false;
    aio_event_set(&wa.fetched);
    return rc;
}

int routes_auth_worker_start(const server_config *cfg, int worker)
{
    memset(&wa, 0, sizeof(wa));
    aio_event_init(&wa.fetched);
    aio_event_set(&wa.fetched);
    wa.file = cfg->auth_jwks_file[0] != '\0' ? cfg->auth_jwks_file : NULL;
    wa.url = cfg->auth_jwks_url[0] != '\0' ? cfg->auth_jwks_url : NULL;
    wa.on = wa.file != NULL || wa.url != NULL;
    if (!wa.on) {
        if (worker == 0)
            log_warn("auth: no AUTH_JWKS_FILE or AUTH_JWKS_URL: authentication is OFF and every route is open to "
                     "anyone who can reach the port");
        return 0;
    }
    char err[160];
    if (server_config_algorithms(cfg->auth_algorithms, &wa.rules.algs, err, sizeof(err)) < 0) {
        log_error("auth: AUTH_ALGORITHMS: %s", err);
        return -EINVAL;
    }
    wa.rules.issuer = cfg->auth_issuer;
    wa.rules.audience = cfg->auth_audience;
    wa.rules.leeway_s = cfg->auth_leeway_s;
    wa.refetch_every = AIO_SEC(cfg->auth_jwks_refetch_s);
    if ((wa.cache = calloc(CACHE_SLOTS, sizeof(*wa.cache))) == NULL)
        return -ENOMEM;
    if (wa.file != NULL) {
        int rc = load_file(true);
        if (rc < 0) {
            log_error("auth: AUTH_JWKS_FILE cannot be used: %s", strerror(-rc));
            return -EINVAL;
        }
    }
    if (wa.url != NULL)
        fetch_url(); /* a failure is logged; tokens fetch again */
    if ((wa.watcher = aio_task_spawn(watch_keys, NULL)) == NULL)
        return -ENOMEM;
    return 0;
}

void routes_auth_worker_stop(void)
{
    if (wa.watcher != NULL) {
        aio_task_cancel(wa.watcher);
        aio_task_join(wa.watcher);
        wa.watcher = NULL;
    }
    routes_keyset_free(wa.file_keys);
    routes_keyset_free(wa.url_keys);
    wa.file_keys = wa.url_keys = NULL;
    for (size_t i = 0; wa.cache != NULL && i < CACHE_SLOTS; i++)
        free(wa.cache[i].token);
    free(wa.cache);
    wa.cache = NULL;
    wa.on = false;
}

int routes_auth_request(server_req *r, routes_caller *caller, const char **reason, bool *sent)
{
    const char *h = server_req_header(r, "authorization");
    *sent = h != NULL;
    if (h == NULL)
        return *reason = "no Authorization header", -EACCES;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return *reason = "the Authorization header is not Bearer", -EACCES;
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    while (len > 0 && token[len - 1] == ' ')
        len--;
    int64_t now = (int64_t)time(NULL);
    struct cached *slot = NULL;
    if (len <= CACHE_MAX_TOKEN && wa.cache != NULL) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (size_t i = 0; i < len; i++)
            h = (h ^ (uint8_t)token[i]) * 1099511628211ULL;
        slot = &wa.cache[h % CACHE_SLOTS];
        if (slot->token != NULL && slot->gen == wa.gen && slot->len == len && memcmp(slot->token, token, len) == 0 &&
            now <= slot->caller.exp + wa.rules.leeway_s) {
            *caller = slot->caller;
            return 0;
        }
    }
    const routes_keyset *sets[2] = {wa.file_keys, wa.url_keys};
    int rc = routes_auth_check(sets, 2, token, len, &wa.rules, now, caller, reason);
    if (rc == -ENOKEY && wa.url != NULL && aio_task_current() != NULL && fetch_url() == 0) {
        sets[0] = wa.file_keys;
        sets[1] = wa.url_keys;
        rc = routes_auth_check(sets, 2, token, len, &wa.rules, now, caller, reason);
    }
    if (rc < 0)
        return -EACCES; /* never remembered */
    if (slot != NULL) {
        char *copy = realloc(slot->token, len);
        if (copy != NULL) {
            memcpy(copy, token, len);
            *slot = (struct cached){.token = copy, .len = len, .gen = wa.gen, .caller = *caller};
        }
    }
    return 0;
}
