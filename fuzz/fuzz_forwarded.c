/* Behind a proxy: TRUSTED_PROXIES (server_proxies_parse), whether an
 * address is trusted (server_proxies_trusts), and who the client is from
 * Forwarded / X-Forwarded-For / X-Forwarded-Proto (server_proxies_resolve).
 *
 * Input: one byte (bit 0: the connection is https; bit 1: no peer address;
 * bits 2..4: the size of the error buffer), then up to five lines: the
 * proxy list, the peer's address, Forwarded, X-Forwarded-For,
 * X-Forwarded-Proto (a missing line is an absent header). A list that does
 * not parse is replaced by a fixed one, so that the headers are always
 * exercised. Checks:
 * - the list parses exactly when a reference parser (inet_pton, strtol)
 *   accepts every entry; a refusal leaves a NUL-terminated message;
 * - server_proxies_trusts agrees with a bit-by-bit reference CIDR match,
 *   for the peer and for every address the reference finds in the headers;
 * - the resolved address and scheme are NUL-terminated, the scheme is
 *   http or https; an untrusted (or absent) peer is the client, with the
 *   connection's scheme; otherwise the client is the peer or a hop taken
 *   from the header that was used (its characters appear there in order);
 * - for a plain X-Forwarded-For (addresses, ports, commas, spaces) the
 *   client is exactly what walking the list from the right, skipping
 *   trusted hops, gives, and the scheme is X-Forwarded-Proto's last value. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <strings.h>

#include "fuzz/fuzz.h"
#include "server/proxy.h"

#define FALLBACK_LIST "10.0.0.0/8, 192.168.0.0/16,::1, 2001:db8::/32 ,::ffff:172.16.0.0/108"

struct range {
    int family;
    unsigned char addr[16];
    int prefix;
};

static bool ref_addr(const char *s, int *family, unsigned char out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, out) != 1)
        return false;
    static const unsigned char v4mapped[12] = {[10] = 0xff, [11] = 0xff};
    *family = AF_INET6;
    if (memcmp(out, v4mapped, 12) == 0) {
        unsigned char v4[4];
        memcpy(v4, out + 12, 4);
        memset(out, 0, 16);
        memcpy(out, v4, 4);
        *family = AF_INET;
    }
    return true;
}

/* -1 when some entry is not an address or a range; else how many (r has
 * room for one per two bytes of the list, plus one). */
static int ref_parse(const char *list, struct range *r)
{
    char *copy = strdup(list);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && n >= 0; tok = strtok_r(NULL, ",", &save)) {
        tok += strspn(tok, " \t");
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        if (len == 0)
            continue;
        char *slash = strchr(tok, '/');
        if (slash != NULL)
            *slash = '\0';
        struct range *x = &r[n];
        if (!ref_addr(tok, &x->family, x->addr)) {
            n = -1;
            break;
        }
        int max = x->family == AF_INET ? 32 : 128;
        x->prefix = max;
        if (slash != NULL) {
            /* written with an IPv6 prefix when the address was IPv4-mapped */
            int shift = strchr(tok, ':') != NULL && x->family == AF_INET ? 96 : 0;
            char *end;
            long v = strtol(slash + 1, &end, 10);
            if (slash[1] == '\0' || *end != '\0' || v < shift || v > max + shift) {
                n = -1;
                break;
            }
            x->prefix = (int)v - shift;
        }
        n++;
    }
    free(copy);
    return n;
}

static bool ref_trusts(const struct range *r, int n, const char *addr)
{
    int family;
    unsigned char a[16];
    if (!ref_addr(addr, &family, a))
        return false;
    for (int i = 0; i < n; i++) {
        if (r[i].family != family)
            continue;
        int bit = 0;
        while (bit < r[i].prefix && ((a[bit / 8] ^ r[i].addr[bit / 8]) & (0x80 >> bit % 8)) == 0)
            bit++;
        if (bit == r[i].prefix)
            return true;
    }
    return false;
}

/* Whether every character of needle appears in hay, in order. */
static bool in_order(const char *needle, const char *hay)
{
    for (; *needle != '\0' && hay != NULL && *hay != '\0'; hay++)
        needle += *hay == *needle;
    return *needle == '\0';
}

/* The rightmost untrusted hop of a plain X-Forwarded-For: 1 with it in
 * out, 0 when the header must be ignored, -1 when the header is not plain
 * (the reference then has no verdict). */
static int ref_xff(const char *xff, const struct range *r, int n, char *out, size_t outlen)
{
    if (strspn(xff, "0123456789abcdefABCDEF.:, ") != strlen(xff))
        return -1;
    char hops[64][64];
    int nh = 0;
    for (const char *p = xff;; p++) {
        const char *end = p + strcspn(p, ",");
        const char *s = p, *e = end;
        while (s < e && *s == ' ')
            s++;
        while (e > s && e[-1] == ' ')
            e--;
        if (s == e || nh == 64)
            return 0; /* an empty hop, or more hops than the service reads */
        if ((size_t)(e - s) >= sizeof(hops[0]))
            return -1;
        memcpy(hops[nh], s, (size_t)(e - s));
        hops[nh][e - s] = '\0';
        char *colon = strchr(hops[nh], ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL)
            *colon = '\0'; /* address:port */
        char *w = hops[nh];
        for (const char *c = hops[nh]; *c; c++)
            if (*c != ' ')
                *w++ = *c; /* spaces inside a hop are dropped */
        *w = '\0';
        if (hops[nh][0] == '\0')
            return 0;
        nh++;
        if (*end == '\0')
            break;
        p = end;
    }
    int i = nh - 1;
    while (i > 0 && ref_trusts(r, n, hops[i]))
        i--;
    snprintf(out, outlen, "%.63s", hops[i]);
    return 1;
}

static const char *ref_proto(const char *xfp, const char *scheme)
{
    if (xfp == NULL)
        return scheme;
    const char *v = strrchr(xfp, ',');
    v = v ? v + 1 : xfp;
    size_t len = strlen(v);
    while (len > 0 && (*v == ' ' || *v == '"'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '"'))
        len--;
    if (len == 4 && strncasecmp(v, "http", 4) == 0)
        return "http";
    if (len == 5 && strncasecmp(v, "https", 5) == 0)
        return "https";
    return scheme;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *scheme = data[0] & 1 ? "https" : "http";
    bool no_peer = data[0] & 2;
    size_t errlen = (size_t)1 << (data[0] >> 2 & 7); /* 1..128 */

    char *field[5] = {NULL, NULL, NULL, NULL, NULL};
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    for (int i = 0; i < 5 && p <= end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        field[i] = fuzz_strndup(p, len);
        p += len + 1;
    }
    const char *list = field[0] ? field[0] : "";
    const char *peer = no_peer ? NULL : field[1] ? field[1] : "192.168.1.1";

    struct range *ranges = malloc((strlen(list) / 2 + 8) * sizeof(*ranges));
    server_proxies *proxies = (server_proxies *)&proxies;
    char *err = malloc(errlen); /* exactly errlen bytes: a write past them is reported */
    if (err == NULL)
        abort();
    memset(err, 'x', errlen);
    int rc = server_proxies_parse(list, &proxies, err, errlen);
    int nranges = ref_parse(list, ranges);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    FUZZ_CHECK((rc == 0) == (nranges >= 0));
    if (rc < 0) {
        FUZZ_CHECK(memchr(err, '\0', errlen) != NULL && (errlen == 1 || err[0] != '\0'));
        FUZZ_CHECK(server_proxies_parse(FALLBACK_LIST, &proxies, err, errlen) == 0);
        nranges = ref_parse(FALLBACK_LIST, ranges);
        FUZZ_CHECK(nranges == 5);
    }
    FUZZ_CHECK(proxies != NULL);

    bool trusted = peer != NULL && ref_trusts(ranges, nranges, peer);
    FUZZ_CHECK(peer == NULL || server_proxies_trusts(proxies, peer) == trusted);

    server_client out;
    memset(&out, 'x', sizeof(out));
    const char *fwd = field[2], *xff = field[3], *xfp = field[4];
    server_proxies_resolve(proxies, peer, scheme, fwd, xff, xfp, &out);
    FUZZ_CHECK(memchr(out.addr, '\0', sizeof(out.addr)) != NULL);
    FUZZ_CHECK(memchr(out.proto, '\0', sizeof(out.proto)) != NULL);
    FUZZ_CHECK(strcmp(out.proto, "http") == 0 || strcmp(out.proto, "https") == 0);

    char peer_text[64];
    snprintf(peer_text, sizeof(peer_text), "%s", peer ? peer : "-");
    if (!trusted) {
        FUZZ_CHECK(strcmp(out.addr, peer_text) == 0 && strcmp(out.proto, scheme) == 0);
    } else {
        const char *used = fwd != NULL && *fwd ? fwd : xff;
        if (strcmp(out.addr, peer_text) != 0) {
            FUZZ_CHECK(out.addr[0] != '\0' && strspn(out.addr, "0123456789abcdefghijklmnopqrstuvwxyz"
                                                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ._:-") == strlen(out.addr));
            FUZZ_CHECK(in_order(out.addr, used));
        }
        char want[64];
        int verdict = used == xff && xff != NULL && *xff ? ref_xff(xff, ranges, nranges, want, sizeof(want)) : -1;
        if (verdict == 0) {
            FUZZ_CHECK(strcmp(out.addr, peer_text) == 0 && strcmp(out.proto, scheme) == 0);
        } else if (verdict == 1) {
            FUZZ_CHECK(strcmp(out.addr, want) == 0);
            FUZZ_CHECK(strcmp(out.proto, ref_proto(xfp, scheme)) == 0);
        }
        /* every hop the reference could name is judged alike */
        for (const char *h = xff; verdict >= 0 && h != NULL && *h;) {
            size_t n = strcspn(h, ",");
            char hop[64];
            snprintf(hop, sizeof(hop), "%.*s", (int)(n < 63 ? n : 63), h);
            char *t = hop + strspn(hop, " ");
            t[strcspn(t, " ")] = '\0';
            FUZZ_CHECK(server_proxies_trusts(proxies, t) == ref_trusts(ranges, nranges, t));
            h += n + (h[n] == ',');
        }
    }

    server_proxies_free(proxies);
    free(ranges);
    free(err);
    for (int i = 0; i < 5; i++)
        free(field[i]);
    return 0;
}
