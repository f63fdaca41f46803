#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/proxy.h"

#define MAX_HOPS 64

struct range {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

struct server_proxies {
    size_t n;
    struct range r[];
};

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/* A numeric address into family + 16 bytes; IPv4-mapped IPv6 becomes IPv4. */
static bool parse_addr(const char *s, int *family, unsigned char out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, out) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out, mapped, 12) == 0) {
            memmove(out, out + 12, 4);
            memset(out + 4, 0, 12);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return true;
    }
    return false;
}

int server_proxies_parse(const char *list, server_proxies **out, char *err, size_t errlen)
{
    size_t cap = 1;
    for (const char *c = list; *c; c++)
        cap += *c == ',';
    server_proxies *p = calloc(1, sizeof(*p) + cap * sizeof(struct range));
    char *copy = strdup(list);
    if (p == NULL || copy == NULL) {
        free(p);
        free(copy);
        return -ENOMEM;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *entry = trim(tok);
        if (*entry == '\0')
            continue;
        char text[128];
        snprintf(text, sizeof(text), "%s", entry);
        struct range *r = &p->r[p->n];
        char *slash = strchr(entry, '/');
        if (slash)
            *slash = '\0';
        bool ok = parse_addr(entry, &r->family, r->addr);
        /* an IPv4-mapped range is written with an IPv6 prefix (96..128) */
        bool mapped = r->family == AF_INET && strchr(entry, ':') != NULL;
        int max = r->family == AF_INET && !mapped ? 32 : 128;
        r->prefix = r->family == AF_INET ? 32 : 128;
        if (ok && slash) {
            char *end;
            long v = strtol(slash + 1, &end, 10);
            ok = *(slash + 1) != '\0' && *end == '\0' && v >= 0 && v <= max;
            if (ok && mapped)
                ok = (v -= 96) >= 0;
            r->prefix = (int)v;
        }
        if (!ok) {
            snprintf(err, errlen, "TRUSTED_PROXIES (--trusted-proxies): \"%s\" is not an address or CIDR range", text);
            free(copy);
            free(p);
            return -EINVAL;
        }
        p->n++;
    }
    free(copy);
    *out = p;
    return 0;
}

void server_proxies_free(server_proxies *p) { free(p); }

bool server_proxies_any(const server_proxies *p) { return p != NULL && p->n > 0; }

bool server_proxies_trusts(const server_proxies *p, const char *addr)
{
    if (p == NULL || p->n == 0)
        return false;
    int family;
    unsigned char a[16];
    if (!parse_addr(addr, &family, a))
        return false;
    for (size_t i = 0; i < p->n; i++) {
        const struct range *r = &p->r[i];
        if (r->family != family)
            continue;
        int full = r->prefix / 8, bits = r->prefix % 8;
        if (memcmp(a, r->addr, (size_t)full) != 0)
            continue;
        if (bits && ((a[full] ^ r->addr[full]) & (0xff << (8 - bits))))
            continue;
        return true;
    }
    return false;
}

/* ---- headers ---- */

/* One hop's identifier: an address (port and brackets removed) or an
 * obfuscated / "unknown" token, cleaned to [A-Za-z0-9._:-]. */
static void node_to_addr(const char *node, size_t len, char *out, size_t outlen)
{
    /* the whitespace around a hop first: however much of it there is, it
     * must not push the hop itself out of buf */
    while (len > 0 && (*node == ' ' || *node == '\t'))
        node++, len--;
    while (len > 0 && (node[len - 1] == ' ' || node[len - 1] == '\t'))
        len--;
    char buf[128];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, node, len);
    buf[len] = '\0';
    char *s = trim(buf);
    size_t l = strlen(s);
    if (l >= 2 && s[0] == '"' && s[l - 1] == '"') {
        s[l - 1] = '\0';
        s++;
    }
    if (s[0] == '[') {
        char *close = strchr(s, ']');
        if (close)
            *close = '\0';
        s++;
    } else {
        char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':') == NULL)
            *colon = '\0'; /* "192.0.2.1:4711"; a bare IPv6 has several colons */
    }
    size_t n = 0;
    for (; *s && n + 1 < outlen; s++) {
        char c = *s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == ':' ||
            c == '_' || c == '-')
            out[n++] = c;
    }
    out[n] = '\0';
}

struct hop {
    char addr[64];
    char proto[8];
};

/* Splits a comma list into at most MAX_HOPS (start, len) pieces. */
static int split(const char *s, const char **start, size_t *len)
{
    int n = 0;
    bool quoted = false;
    const char *b = s;
    for (const char *c = s;; c++) {
        if (*c == '"')
            quoted = !quoted;
        if ((*c == ',' && !quoted) || *c == '\0') {
            if (n == MAX_HOPS)
                return -1;
            start[n] = b;
            len[n] = (size_t)(c - b);
            n++;
            if (*c == '\0')
                break;
            b = c + 1;
        }
    }
    return n;
}

static void set_proto(char *out, const char *v, size_t len)
{
    while (len > 0 && (*v == ' ' || *v == '"')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '"'))
        len--;
    if (len == 4 && strncasecmp(v, "http", 4) == 0)
        strcpy(out, "http");
    else if (len == 5 && strncasecmp(v, "https", 5) == 0)
        strcpy(out, "https");
}

/* RFC 7239: elements separated by ',', pairs by ';', for= and proto=. */
static int parse_forwarded(const char *h, struct hop *hops)
{
    const char *start[MAX_HOPS];
    size_t len[MAX_HOPS];
    int n = split(h, start, len);
    for (int i = 0; i < n; i++) {
        hops[i].addr[0] = hops[i].proto[0] = '\0';
        const char *e = start[i], *end = start[i] + len[i];
        while (e < end) {
            const char *semi = e;
            bool quoted = false;
            while (semi < end && (*semi != ';' || quoted)) {
                quoted ^= *semi == '"';
                semi++;
            }
            while (e < semi && *e == ' ')
                e++;
            const char *eq = memchr(e, '=', (size_t)(semi - e));
            if (eq != NULL) {
                size_t nl = (size_t)(eq - e);
                if (nl == 3 && strncasecmp(e, "for", 3) == 0)
                    node_to_addr(eq + 1, (size_t)(semi - eq - 1), hops[i].addr, sizeof(hops[i].addr));
                else if (nl == 5 && strncasecmp(e, "proto", 5) == 0)
                    set_proto(hops[i].proto, eq + 1, (size_t)(semi - eq - 1));
            }
            e = semi + 1;
        }
        if (hops[i].addr[0] == '\0')
            return -1; /* an element without for= cannot be placed */
    }
    return n;
}

/* src into dst[cap], cut to fit, always terminated (snprintf "%s" without
 * printf: this runs for every request) */
static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void server_proxies_resolve(const server_proxies *p, const char *peer, const char *scheme, const char *forwarded,
                            const char *x_forwarded_for, const char *x_forwarded_proto, server_client *out)
{
    copy_bounded(out->addr, sizeof(out->addr), peer ? peer : "-");
    copy_bounded(out->proto, sizeof(out->proto), scheme ? scheme : "http");
    if (peer == NULL || !server_proxies_trusts(p, peer))
        return;

    struct hop hops[MAX_HOPS];
    int n = -1;
    if (forwarded != NULL && *forwarded) {
        n = parse_forwarded(forwarded, hops);
    } else if (x_forwarded_for != NULL && *x_forwarded_for) {
        const char *start[MAX_HOPS];
        size_t len[MAX_HOPS];
        n = split(x_forwarded_for, start, len);
        for (int i = 0; i < n; i++) {
            node_to_addr(start[i], len[i], hops[i].addr, sizeof(hops[i].addr));
            hops[i].proto[0] = '\0';
            if (hops[i].addr[0] == '\0')
                n = -1;
        }
        if (n > 0 && x_forwarded_proto != NULL) {
            /* the nearest proxy's value is the rightmost */
            const char *last = strrchr(x_forwarded_proto, ',');
            const char *v = last ? last + 1 : x_forwarded_proto;
            set_proto(hops[0].proto, v, strlen(v));
            for (int i = 1; i < n; i++)
                strcpy(hops[i].proto, hops[0].proto);
        }
    }
    if (n <= 0)
        return;
    int i = n - 1;
    while (i > 0 && server_proxies_trusts(p, hops[i].addr))
        i--;
    _Static_assert(sizeof(out->addr) == sizeof(hops[i].addr), "same size");
    memcpy(out->addr, hops[i].addr, sizeof(out->addr));
    if (hops[i].proto[0])
        memcpy(out->proto, hops[i].proto, sizeof(out->proto));
}
