/* Token checks (routes_auth_check, with tokens signed here by cjose itself)
 * and the rate limiter's buckets (routes_limit_take, on a simulated clock).
 * tests/auth/ drives the same through the binary with tokens from npm jose. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjose/cjose.h>
#include <jansson.h>

#include "support/suite.h"
#include "routes/auth.h"
#include "routes/limit.h"

/* ---- tokens ---- */

static cjose_jwk_t *rsa, *ec, *oct;

static void make_keys(void)
{
    static const uint8_t e[] = {1, 0, 1};
    rsa = cjose_jwk_create_RSA_random(2048, e, sizeof(e), NULL);
    ec = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, NULL);
    oct = cjose_jwk_create_oct_random(256, NULL);
    ck_assert(rsa != NULL && ec != NULL && oct != NULL);
}

/* The public JWK of k with a kid, as a JSON object. */
static json_t *public_jwk(cjose_jwk_t *k, const char *kid, bool secret)
{
    char *text = cjose_jwk_to_json(k, secret, NULL);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(j, "kid", json_string(kid));
    return j;
}

static routes_keyset *keyset_of(json_t *keys)
{
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, 0);
    routes_keyset *ks = NULL;
    char err[200];
    ck_assert_int_eq(routes_keyset_parse(text, strlen(text), &ks, err, sizeof(err)), 0);
    free(text);
    json_decref(doc);
    return ks;
}

/* A compact JWS of claims signed with k; malloc'd. */
static char *sign(cjose_jwk_t *k, const char *alg, const char *kid, json_t *claims)
{
    cjose_header_t *h = cjose_header_new(NULL);
    cjose_header_set(h, CJOSE_HDR_ALG, alg, NULL);
    if (kid != NULL)
        cjose_header_set(h, CJOSE_HDR_KID, kid, NULL);
    char *payload = json_dumps(claims, JSON_COMPACT);
    cjose_jws_t *jws = cjose_jws_sign(k, h, (const uint8_t *)payload, strlen(payload), NULL);
    ck_assert_ptr_nonnull(jws);
    const char *ser;
    ck_assert(cjose_jws_export(jws, &ser, NULL));
    char *out = strdup(ser);
    cjose_jws_release(jws);
    cjose_header_release(h);
    free(payload);
    json_decref(claims);
    return out;
}

static json_t *claims(const char *sub, int64_t exp)
{
    return json_pack("{s:s, s:I, s:s, s:s, s:s}", "sub", sub, "exp", (json_int_t)exp, "iss", "me", "aud", "api", "scope",
                     "read admin");
}

static int check(const routes_keyset *ks, const char *token, unsigned algs, routes_caller *c, const char **why)
{
    routes_auth_rules rules = {.algs = algs, .issuer = "me", .audience = "api", .leeway_s = 30};
    const routes_keyset *sets[] = {ks};
    return routes_auth_check(sets, 1, token, strlen(token), &rules, (int64_t)time(NULL), c, why);
}

#define ALL ((1u << SERVER_ALG_RS256) | (1u << SERVER_ALG_ES256) | (1u << SERVER_ALG_HS256))

START_TEST(tokens_of_each_key_type_verify_and_name_the_caller)
{
    make_keys();
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(rsa, "r", false));
    json_array_append_new(keys, public_jwk(ec, "e", false));
    json_array_append_new(keys, public_jwk(oct, "h", true));
    routes_keyset *ks = keyset_of(keys);
    ck_assert_uint_eq(routes_keyset_size(ks), 3);
    int64_t exp = time(NULL) + 60;
    const char *why = NULL;
    struct {
        cjose_jwk_t *k;
        const char *alg, *kid;
    } ok[] = {{rsa, "RS256", "r"}, {ec, "ES256", "e"}, {oct, "HS256", "h"}};
    for (size_t i = 0; i < 3; i++) {
        char *t = sign(ok[i].k, ok[i].alg, ok[i].kid, claims("42", exp));
        routes_caller c = {0};
        ck_assert_msg(check(ks, t, ALL, &c, &why) == 0, "%s: %s", ok[i].alg, why);
        ck_assert(c.user_id == 42 && c.admin && c.exp == exp);
        /* not listed: refused */
        ck_assert_int_eq(check(ks, t, ALL & ~(1u << i), &c, &why), -EACCES);
        free(t);
    }
    routes_keyset_free(ks);
}
END_TEST

START_TEST(an_alg_the_key_type_does_not_allow_is_refused_before_any_verify)
{
    make_keys();
    json_t *keys = json_array();
    json_t *pub = public_jwk(rsa, "r", false);
    json_array_append(keys, pub);
    routes_keyset *ks = keyset_of(keys);
    /* the classic: HS256 keyed with the RSA public key's own text */
    char *text = json_dumps(pub, JSON_COMPACT);
    cjose_jwk_t *forged = cjose_jwk_create_oct_spec((const uint8_t *)text, strlen(text), NULL);
    char *t = sign(forged, "HS256", "r", claims("1", time(NULL) + 60));
    routes_caller c;
    const char *why = NULL;
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), -EACCES);
    ck_assert_str_eq(why, "the token's alg does not fit its key's type");
    free(t);
    /* a real RS256 token without a kid: the only key verifies it */
    t = sign(rsa, "RS256", NULL, claims("5", time(NULL) + 60));
    ck_assert_msg(check(ks, t, ALL, &c, &why) == 0, "%s", why);
    ck_assert(c.user_id == 5);
    free(t);
    /* and the forgery with no kid (the only key) */
    t = sign(forged, "HS256", NULL, claims("1", time(NULL) + 60));
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), -EACCES);
    ck_assert_str_eq(why, "the token's alg does not fit its key's type");
    free(t);
    cjose_jwk_release(forged);
    free(text);
    json_decref(pub);
    routes_keyset_free(ks);
}
END_TEST

START_TEST(claims_are_checked_after_the_signature)
{
    make_keys();
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(rsa, "r", false));
    routes_keyset *ks = keyset_of(keys);
    int64_t now = time(NULL);
    routes_caller c;
    const char *why = NULL;
    char *t = sign(rsa, "RS256", "r", claims("1", now - 120));
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), -EACCES);
    ck_assert_str_eq(why, "the token has expired");
    free(t);
    t = sign(rsa, "RS256", "r", claims("1", now - 10)); /* within the leeway */
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), 0);
    free(t);
    t = sign(rsa, "RS256", "r", claims("bob", now + 60));
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), -EACCES);
    ck_assert_str_eq(why, "sub is not a user id");
    free(t);
    t = sign(rsa, "RS256", "nobody", claims("1", now + 60));
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), -ENOKEY);
    free(t);
    json_t *cl = claims("1", now + 60);
    json_object_set_new(cl, "aud", json_pack("[s,s]", "x", "api"));
    t = sign(rsa, "RS256", "r", cl);
    ck_assert_int_eq(check(ks, t, ALL, &c, &why), 0);
    free(t);
    routes_keyset_free(ks);
}
END_TEST

START_TEST(keys_that_cannot_be_used_are_left_out_of_the_set)
{
    make_keys();
    static const uint8_t e[] = {1, 0, 1};
    cjose_jwk_t *small = cjose_jwk_create_RSA_random(1024, e, sizeof(e), NULL);
    cjose_jwk_t *p384 = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_384, NULL);
    cjose_jwk_t *short_secret = cjose_jwk_create_oct_random(128, NULL);
    json_t *keys = json_array();
    json_array_append_new(keys, public_jwk(small, "small", false));
    json_array_append_new(keys, public_jwk(p384, "p384", false));
    json_array_append_new(keys, public_jwk(short_secret, "short", true));
    json_t *enc = public_jwk(rsa, "enc", false);
    json_object_set_new(enc, "use", json_string("enc"));
    json_array_append_new(keys, enc);
    json_t *wrong = public_jwk(rsa, "wrong", false);
    json_object_set_new(wrong, "alg", json_string("HS256"));
    json_array_append_new(keys, wrong);
    json_array_append_new(keys, json_string("not a key"));
    routes_keyset *ks = keyset_of(keys);
    ck_assert_uint_eq(routes_keyset_size(ks), 0);
    routes_keyset_free(ks);
    char err[100];
    ck_assert_int_eq(routes_keyset_parse("{\"nokeys\":1}", 12, &ks, err, sizeof(err)), -EINVAL);
    cjose_jwk_release(small);
    cjose_jwk_release(p384);
    cjose_jwk_release(short_secret);
}
END_TEST

/* ---- buckets ---- */

#define SEC 1000000000LL

START_TEST(a_bucket_lets_the_burst_through_then_says_honestly_when_to_retry)
{
    routes_limit l = {.per_s = 2, .burst = 3};
    routes_limit_result res;
    int64_t t = 1000 * SEC;
    for (int i = 0; i < 3; i++) {
        routes_limit_take(&l, "test:burst", t, &res);
        ck_assert(res.allowed);
        ck_assert_int_eq(res.remaining, 2 - i);
    }
    routes_limit_take(&l, "test:burst", t, &res);
    ck_assert(!res.allowed);
    ck_assert_int_eq(res.remaining, 0);
    ck_assert_int_eq(res.retry_after, 1); /* half a second, rounded up */
    routes_limit_take(&l, "test:burst", t + res.retry_after * SEC, &res);
    ck_assert(res.allowed);
    /* another caller is not affected */
    routes_limit_take(&l, "test:other", t, &res);
    ck_assert(res.allowed && res.remaining == 2);
    /* a long idle fills the bucket to the burst, no more */
    routes_limit_take(&l, "test:burst", t + 3600 * SEC, &res);
    ck_assert(res.allowed && res.remaining == 2);
}
END_TEST

START_TEST(more_callers_than_slots_reuse_the_longest_idle_and_a_new_caller_starts_full)
{
    routes_limit l = {.per_s = 1, .burst = 5};
    routes_limit_result res;
    char key[32];
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "a:10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        routes_limit_take(&l, key, 5000 * SEC + i, &res);
        ck_assert_msg(res.allowed && res.remaining == 4, "caller %d", i);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("routes_auth");
    TCase *tc = tcase_create("tokens");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tokens_of_each_key_type_verify_and_name_the_caller);
    tcase_add_test(tc, an_alg_the_key_type_does_not_allow_is_refused_before_any_verify);
    tcase_add_test(tc, claims_are_checked_after_the_signature);
    tcase_add_test(tc, keys_that_cannot_be_used_are_left_out_of_the_set);
    suite_add_tcase(s, tc);
    TCase *tl = tcase_create("limits");
    tcase_add_test(tl, a_bucket_lets_the_burst_through_then_says_honestly_when_to_retry);
    tcase_add_test(tl, more_callers_than_slots_reuse_the_longest_idle_and_a_new_caller_starts_full);
    suite_add_tcase(s, tl);
    return run_suite(s);
}
