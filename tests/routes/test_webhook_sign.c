/* Webhook signing (routes/webhook_dispatch.h): the signature of a fixed
 * message equals what the Standard Webhooks reference library (npm
 * standardwebhooks, tests/webhooks/) computes for it, including a key
 * whose base64 ends in padding; secrets have the contract's shape; the
 * backoff doubles, stays under its cap and keeps to its upper half. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "routes/webhook_dispatch.h"
#include "support/suite.h"

/* Computed with Webhook(secret).sign("msg_42", 1767323045 s, body) */
#define SECRET "whsec_aDJwZyB0ZXN0IGtleSwgMjQrIGJ5dGVzIGxvbmchIQ=="
#define BODY "{\"id\":7,\"type\":\"user.created\",\"created_at\":\"2026-01-02T03:04:05.000006Z\",\"data\":{\"id\":1}}"
#define SIGNATURE "v1,xq+3zQnN+MbKwRqyM0TXS0+jyRL+4EMc7lBaL4YZzdQ="

START_TEST(signs_as_the_reference_library_does)
{
    char sig[128];
    ck_assert_int_eq(routes_webhook_sign(SECRET, "msg_42", 1767323045, BODY, strlen(BODY), sig, sizeof(sig)), 0);
    ck_assert_str_eq(sig, SIGNATURE);
    /* any other id, time or body signs differently */
    ck_assert_int_eq(routes_webhook_sign(SECRET, "msg_43", 1767323045, BODY, strlen(BODY), sig, sizeof(sig)), 0);
    ck_assert_str_ne(sig, SIGNATURE);
    ck_assert_int_eq(routes_webhook_sign(SECRET, "msg_42", 1767323046, BODY, strlen(BODY), sig, sizeof(sig)), 0);
    ck_assert_str_ne(sig, SIGNATURE);
    ck_assert_int_eq(routes_webhook_sign(SECRET, "msg_42", 1767323045, BODY, strlen(BODY) - 1, sig, sizeof(sig)), 0);
    ck_assert_str_ne(sig, SIGNATURE);
}
END_TEST

START_TEST(refuses_secrets_it_cannot_decode)
{
    char sig[128];
    const char *bad[] = {"", "whsec_", "sk_aDJwZyB0ZXN0", "whsec_abc", "whsec_a$b%c^d&"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(routes_webhook_sign(bad[i], "m", 1, "{}", 2, sig, sizeof(sig)) < 0, "accepted %s", bad[i]);
}
END_TEST

START_TEST(secrets_are_fresh_base64_of_32_bytes)
{
    char a[96], b[96], sig[128];
    ck_assert_int_eq(routes_webhook_secret(a, sizeof(a)), 0);
    ck_assert_int_eq(routes_webhook_secret(b, sizeof(b)), 0);
    ck_assert_int_eq(strncmp(a, "whsec_", 6), 0);
    ck_assert_uint_eq(strlen(a), 6 + 44);
    ck_assert_str_ne(a, b);
    ck_assert_int_eq(routes_webhook_sign(a, "m", 1, "{}", 2, sig, sizeof(sig)), 0);
}
END_TEST

START_TEST(backoff_doubles_with_jitter_up_to_the_cap)
{
    for (int attempts = 1; attempts <= 40; attempts++)
        for (int k = 0; k < 50; k++) {
            int64_t full = 1000;
            for (int i = 1; i < attempts && full < 3600000; i++)
                full *= 2;
            if (full > 3600000)
                full = 3600000;
            int64_t d = routes_webhook_backoff_ms(attempts, 1000, 3600000);
            ck_assert_msg(d >= full / 2 && d <= full, "attempt %d: %lld ms, want %lld..%lld", attempts, (long long)d,
                          (long long)(full / 2), (long long)full);
        }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("webhook signing");
    TCase *tc = tcase_create("sign");
    tcase_add_test(tc, signs_as_the_reference_library_does);
    tcase_add_test(tc, refuses_secrets_it_cannot_decode);
    tcase_add_test(tc, secrets_are_fresh_base64_of_32_bytes);
    tcase_add_test(tc, backoff_doubles_with_jitter_up_to_the_cap);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
