#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "db/conninfo.h"
#include "aio/aio.h"

void db_conninfo_free(db_conninfo *ci)
{
    if (ci == NULL)
        return;
    for (size_t i = 0; i < ci->n; i++) {
        free(ci->keywords[i]);
        free(ci->values[i]);
    }
    free(ci->keywords);
    free(ci->values);
    free(ci);
}

static db_conninfo *ci_new(size_t cap)
{
    db_conninfo *ci = calloc(1, sizeof(*ci));
    if (ci == NULL)
        return NULL;
    ci->keywords = calloc(cap + 1, sizeof(char *));
    ci->values = calloc(cap + 1, sizeof(char *));
    if (ci->keywords == NULL || ci->values == NULL) {
        db_conninfo_free(ci);
        return NULL;
    }
    return ci;
}

/* Appends (or replaces) keyword=value; the strings are copied. */
static int ci_set(db_conninfo *ci, const char *kw, const char *value)
{
    char *v = strdup(value);
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < ci->n; i++) {
        if (strcmp(ci->keywords[i], kw) == 0) {
            free(ci->values[i]);
            ci->values[i] = v;
            return 0;
        }
    }
    char *k = strdup(kw);
    if (k == NULL) {
        free(v);
        return -ENOMEM;
    }
    ci->keywords[ci->n] = k;
    ci->values[ci->n] = v;
    ci->n++;
    return 0;
}

const char *db_conninfo_get(const db_conninfo *ci, const char *keyword)
{
    for (size_t i = 0; i < ci->n; i++)
        if (strcmp(ci->keywords[i], keyword) == 0)
            return ci->values[i];
    return NULL;
}

int db_conninfo_parse(const char *conninfo, const db_session_settings *s, db_conninfo **out, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    if (opts == NULL) {
        snprintf(err, errlen, "DATABASE_URL: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return perr ? -EINVAL : -ENOMEM;
    }
    size_t count = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        count++;
    db_conninfo *ci = ci_new(count + 8);
    int rc = ci ? 0 : -ENOMEM;
    for (PQconninfoOption *o = opts; rc == 0 && o->keyword; o++)
        if (o->val != NULL)
            rc = ci_set(ci, o->keyword, o->val);
    PQconninfoFree(opts);

    if (rc == 0 && db_conninfo_get(ci, "application_name") == NULL)
        rc = ci_set(ci, "application_name", "h2pg");
    if (rc == 0 && db_conninfo_get(ci, "keepalives") == NULL) {
        rc = ci_set(ci, "keepalives", "1");
        if (rc == 0)
            rc = ci_set(ci, "keepalives_idle", "30");
        if (rc == 0)
            rc = ci_set(ci, "keepalives_interval", "10");
        if (rc == 0)
            rc = ci_set(ci, "keepalives_count", "3");
    }
    if (rc == 0 && s != NULL) {
        const char *given = db_conninfo_get(ci, "options");
        char options[512];
        int n = snprintf(options, sizeof(options), "%s", given ? given : "");
        if (s->statement_timeout_ms > 0 && n < (int)sizeof(options))
            n += snprintf(options + n, sizeof(options) - (size_t)n, "%s-c statement_timeout=%d", n ? " " : "",
                          s->statement_timeout_ms);
        if (s->idle_in_transaction_timeout_ms > 0 && n < (int)sizeof(options))
            n += snprintf(options + n, sizeof(options) - (size_t)n, "%s-c idle_in_transaction_session_timeout=%d",
                          n ? " " : "", s->idle_in_transaction_timeout_ms);
        if (s->jit_off && n < (int)sizeof(options))
            n += snprintf(options + n, sizeof(options) - (size_t)n, "%s-c jit=off", n ? " " : "");
        if (n >= (int)sizeof(options)) {
            snprintf(err, errlen, "DATABASE_URL: options too long");
            rc = -EINVAL;
        } else if (n > 0) {
            rc = ci_set(ci, "options", options);
        }
    }
    if (rc < 0) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        db_conninfo_free(ci);
        return rc;
    }
    *out = ci;
    return 0;
}

/* ---- resolving host names on a helper thread ---- */

#define MAX_HOSTS 16
#define MAX_ADDRS 4

struct lookup {
    int n;
    char *hosts[MAX_HOSTS];
    char addrs[MAX_HOSTS][MAX_ADDRS][INET6_ADDRSTRLEN];
    int naddrs[MAX_HOSTS];
    int error;
    char failed[256];
};

static bool needs_lookup(const char *h)
{
    if (*h == '\0' || *h == '/' || *h == '@')
        return false;
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) != 1 && inet_pton(AF_INET6, h, buf) != 1;
}

static int lookup_run(void *arg)
{
    struct lookup *l = arg;
    int found = 0;
    for (int i = 0; i < l->n; i++) {
        if (!needs_lookup(l->hosts[i])) {
            found++; /* an IP literal or socket path is usable as it is */
            continue;
        }
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res = NULL;
        int e = getaddrinfo(l->hosts[i], NULL, &hints, &res);
        if (e != 0) {
            snprintf(l->failed, sizeof(l->failed), "could not resolve host \"%s\": %s", l->hosts[i], gai_strerror(e));
            continue;
        }
        for (struct addrinfo *a = res; a && l->naddrs[i] < MAX_ADDRS; a = a->ai_next) {
            const void *p = a->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                                    : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            char *dst = l->addrs[i][l->naddrs[i]];
            if (inet_ntop(a->ai_family, p, dst, INET6_ADDRSTRLEN) == NULL)
                continue;
            bool dup = false;
            for (int k = 0; k < l->naddrs[i]; k++)
                dup |= strcmp(l->addrs[i][k], dst) == 0;
            if (!dup)
                l->naddrs[i]++;
        }
        freeaddrinfo(res);
        found += l->naddrs[i] > 0;
    }
    return found;
}

static void lookup_free(struct lookup *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->hosts[i]);
    free(l);
}

static void lookup_abandon(void *arg, int result)
{
    (void)result;
    lookup_free(arg);
}

/* Splits a comma-separated libpq list into at most max fresh strings,
 * counted in *n even on failure (so the caller can free them). */
static int split_list(const char *s, char **out, int max, int *n)
{
    *n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == max)
            return -EINVAL;
        if ((out[*n] = strndup(p, len)) == NULL)
            return -ENOMEM;
        ++*n;
        if (!comma)
            return *n;
        p = comma + 1;
    }
}

static int append(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t l = strlen(s);
    if (*len + l + 2 > cap)
        return -E2BIG;
    if (*len > 0)
        buf[(*len)++] = ',';
    memcpy(buf + *len, s, l + 1);
    *len += l;
    return 0;
}

/* Writes host, hostaddr (and port) into ci: one entry per address, in the
 * order given, a name's port repeated for each of its addresses. */
static int set_resolved(db_conninfo *ci, const db_conninfo *base, const struct lookup *l)
{
    const char *port = db_conninfo_get(base, "port");
    char *ports[MAX_HOSTS] = {0};
    int nports = 0;
    int rc = port ? split_list(port, ports, MAX_HOSTS, &nports) : 0;
    char hosts_out[4096], addrs_out[4096], ports_out[1024];
    size_t hl = 0, al = 0, pl = 0;
    hosts_out[0] = addrs_out[0] = ports_out[0] = '\0';
    rc = rc < 0 ? rc : 0;
    for (int i = 0; rc == 0 && i < l->n; i++) {
        const char *p = nports == 0 ? "" : nports == 1 ? ports[0] : i < nports ? ports[i] : ports[nports - 1];
        int copies = needs_lookup(l->hosts[i]) ? l->naddrs[i] : 1;
        for (int k = 0; rc == 0 && k < copies; k++) {
            rc = append(hosts_out, sizeof(hosts_out), &hl, l->hosts[i]);
            if (rc == 0)
                rc = append(addrs_out, sizeof(addrs_out), &al, needs_lookup(l->hosts[i]) ? l->addrs[i][k] : "");
            if (rc == 0 && nports > 0)
                rc = append(ports_out, sizeof(ports_out), &pl, p);
        }
    }
    for (int i = 0; i < nports; i++)
        free(ports[i]);
    if (rc == 0)
        rc = ci_set(ci, "host", hosts_out);
    if (rc == 0)
        rc = ci_set(ci, "hostaddr", addrs_out);
    if (rc == 0 && nports > 0)
        rc = ci_set(ci, "port", ports_out);
    return rc;
}

/* Looks the host names of base up (on a helper thread) and sets their
 * addresses in ci. l belongs to the caller, except when the lookup was
 * interrupted (then to lookup_abandon; *abandoned is set). */
static int resolve_hosts(db_conninfo *ci, const db_conninfo *base, struct lookup *l, bool *abandoned, char *err,
                         size_t errlen)
{
    *abandoned = false;
    int rc = split_list(db_conninfo_get(base, "host"), l->hosts, MAX_HOSTS, &l->n);
    if (rc == -EINVAL)
        snprintf(err, errlen, "DATABASE_URL: more than %d hosts", MAX_HOSTS);
    bool any = false;
    for (int i = 0; rc > 0 && i < l->n; i++)
        any |= needs_lookup(l->hosts[i]);
    if (rc <= 0 || !any)
        return rc < 0 ? rc : 0;
    rc = aio_to_thread_abandonable(lookup_run, l, lookup_abandon);
    if (rc == -ECANCELED || rc == -ETIMEDOUT) {
        *abandoned = true;
        snprintf(err, errlen, "host name lookup interrupted");
        return rc;
    }
    if (rc == 0) {
        snprintf(err, errlen, "%s", l->failed[0] ? l->failed : "no address for the database host");
        return -EHOSTUNREACH;
    }
    rc = set_resolved(ci, base, l);
    if (rc == -E2BIG) {
        snprintf(err, errlen, "DATABASE_URL: too many hosts");
        rc = -EINVAL;
    }
    return rc;
}

int db_conninfo_resolve(const db_conninfo *base, db_conninfo **out, char *err, size_t errlen)
{
    db_conninfo *ci = ci_new(base->n + 2);
    if (ci == NULL)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < base->n; i++)
        rc = ci_set(ci, base->keywords[i], base->values[i]);
    if (rc == 0 && db_conninfo_get(base, "host") != NULL && db_conninfo_get(base, "hostaddr") == NULL) {
        struct lookup *l = calloc(1, sizeof(*l));
        bool abandoned = false;
        rc = l != NULL ? resolve_hosts(ci, base, l, &abandoned, err, errlen) : -ENOMEM;
        if (l != NULL && !abandoned)
            lookup_free(l);
    }
    if (rc < 0) {
        db_conninfo_free(ci);
        return rc;
    }
    *out = ci;
    return 0;
}
