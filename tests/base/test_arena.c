/* The per-request arena (base/arena.h): aligned bump allocation, copies of
 * strings, a first buffer of the caller's, growth past it, destructors run
 * in reverse order at dispose, and reuse after dispose. */
#include <check.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/arena.h"

static bool aligned(const void *p) { return (uintptr_t)p % alignof(max_align_t) == 0; }

static bool within(const void *p, size_t n, const void *buf, size_t size)
{
    return (const char *)p >= (const char *)buf && (const char *)p + n <= (const char *)buf + size;
}

START_TEST(every_allocation_is_aligned_for_any_type_and_usable)
{
    base_arena a;
    base_arena_init(&a);
    static const size_t sizes[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1, 0, 2};
    char *prev = NULL;
    size_t prev_size = 0;
    for (int round = 0; round < 50; round++) { /* past the first chunk */
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i];
            char *p = base_arena_alloc(&a, n);
            ck_assert_ptr_nonnull(p);
            ck_assert_msg(aligned(p), "size %zu at %p is not aligned to %zu", n, (void *)p, alignof(max_align_t));
            memset(p, 0xab, n);
            /* no overlap with the previous allocation */
            ck_assert(prev == NULL || p >= prev + prev_size || p + n <= prev);
            if (prev != NULL && prev_size > 0)
                ck_assert_uint_eq((unsigned char)prev[prev_size - 1], 0xab);
            prev = p;
            prev_size = n;
        }
    }
    /* a long double and a 64-bit integer can live there */
    long double *ld = base_arena_alloc(&a, sizeof(long double));
    *ld = 1.5L;
    int64_t *i64 = base_arena_alloc(&a, sizeof(int64_t));
    *i64 = INT64_MIN;
    ck_assert(*ld == 1.5L);
    ck_assert_int_eq(*i64, INT64_MIN);
    base_arena_dispose(&a);
}
END_TEST

START_TEST(a_zero_initialised_arena_is_a_valid_empty_one)
{
    base_arena a = {0};
    char *p = base_arena_alloc(&a, 10);
    ck_assert_ptr_nonnull(p);
    ck_assert(aligned(p));
    base_arena_dispose(&a);
    base_arena_dispose(&a); /* disposing of an empty arena is harmless */
}
END_TEST

START_TEST(strndup_copies_len_bytes_and_terminates)
{
    base_arena a;
    base_arena_init(&a);
    const char *src = "hello, world";
    char *s = base_arena_strndup(&a, src, 5);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_ne(s, src);
    ck_assert_str_eq(s, "hello");
    s = base_arena_strndup(&a, src, 0);
    ck_assert_str_eq(s, "");
    /* bytes, not a C string: an embedded NUL is copied, the input need not
     * be terminated */
    const char raw[4] = {'a', '\0', 'b', 'c'};
    s = base_arena_strndup(&a, raw, sizeof(raw));
    ck_assert_mem_eq(s, raw, sizeof(raw));
    ck_assert_int_eq(s[4], '\0');
    /* a copy larger than a chunk */
    char big[10000];
    memset(big, 'x', sizeof(big));
    s = base_arena_strndup(&a, big, sizeof(big));
    ck_assert_ptr_nonnull(s);
    ck_assert_mem_eq(s, big, sizeof(big));
    ck_assert_int_eq(s[sizeof(big)], '\0');
    base_arena_dispose(&a);
}
END_TEST

START_TEST(init_with_serves_from_the_callers_buffer_first_then_grows)
{
    alignas(max_align_t) char buf[1024];
    base_arena a;
    base_arena_init_with(&a, buf, sizeof(buf));
    /* the first kilobyte comes from buf, allocation after allocation */
    size_t used = 0;
    char *p[16];
    for (int i = 0; i < 16; i++) {
        p[i] = base_arena_alloc(&a, 64);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_msg(within(p[i], 64, buf, sizeof(buf)), "allocation %d (%p) is not inside buf [%p, +1024)", i,
                      (void *)p[i], (void *)buf);
        ck_assert(aligned(p[i]));
        ck_assert(i == 0 || p[i] >= p[i - 1] + 64);
        memset(p[i], i, 64);
        used += 64;
    }
    ck_assert_uint_eq(used, sizeof(buf));
    /* buf is full: the next allocation grows the arena, elsewhere */
    char *q = base_arena_alloc(&a, 64);
    ck_assert_ptr_nonnull(q);
    ck_assert(!within(q, 1, buf, sizeof(buf)));
    ck_assert(aligned(q));
    memset(q, 0x5a, 64);
    char *r = base_arena_alloc(&a, 200);
    ck_assert(!within(r, 1, buf, sizeof(buf)));
    memset(r, 0x5b, 200);
    /* what was in buf is untouched by the growth */
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 64; k++)
            ck_assert_int_eq(p[i][k], i);
    /* an allocation larger than a chunk works too */
    char *huge = base_arena_alloc(&a, 64 * 1024);
    ck_assert_ptr_nonnull(huge);
    ck_assert(aligned(huge));
    memset(huge, 0x11, 64 * 1024);
    base_arena_dispose(&a); /* frees the chunks, never buf */
}
END_TEST

START_TEST(a_request_that_does_not_fit_the_buffer_starts_outside_it)
{
    alignas(max_align_t) char buf[256];
    base_arena a;
    base_arena_init_with(&a, buf, sizeof(buf));
    char *big = base_arena_alloc(&a, 300);
    ck_assert_ptr_nonnull(big);
    ck_assert(!within(big, 1, buf, sizeof(buf)));
    memset(big, 1, 300);
    base_arena_dispose(&a);
}
END_TEST

static int order[8], norder;

static void record(void *p) { order[norder++] = (int)(intptr_t)p; }

START_TEST(deferred_destructors_run_at_dispose_in_reverse_order)
{
    alignas(max_align_t) char buf[128];
    base_arena a;
    base_arena_init_with(&a, buf, sizeof(buf));
    norder = 0;
    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(base_arena_defer(&a, record, (void *)(intptr_t)i), 0);
        /* allocations in between, past buf, do not disturb them */
        ck_assert_ptr_nonnull(base_arena_alloc(&a, 100));
    }
    ck_assert_int_eq(norder, 0); /* nothing runs before dispose */
    base_arena_dispose(&a);
    ck_assert_int_eq(norder, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(order[i], 5 - i);
}
END_TEST

START_TEST(dispose_leaves_an_empty_arena_ready_for_reuse)
{
    base_arena a;
    base_arena_init(&a);
    norder = 0;
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_nonnull(base_arena_alloc(&a, 1000));
    ck_assert_int_eq(base_arena_defer(&a, record, (void *)(intptr_t)1), 0);
    base_arena_dispose(&a);
    ck_assert_int_eq(norder, 1);
    ck_assert_ptr_null(a.chunks);
    ck_assert_ptr_null(a.cleanups);

    /* used again: allocations work, and the old destructor does not run
     * a second time */
    char *s = base_arena_strndup(&a, "again", 5);
    ck_assert_str_eq(s, "again");
    ck_assert_int_eq(base_arena_defer(&a, record, (void *)(intptr_t)2), 0);
    base_arena_dispose(&a);
    ck_assert_int_eq(norder, 2);
    ck_assert_int_eq(order[1], 2);
    base_arena_dispose(&a);
    ck_assert_int_eq(norder, 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base_arena");
    TCase *tc = tcase_create("arena");
    tcase_add_test(tc, every_allocation_is_aligned_for_any_type_and_usable);
    tcase_add_test(tc, a_zero_initialised_arena_is_a_valid_empty_one);
    tcase_add_test(tc, strndup_copies_len_bytes_and_terminates);
    tcase_add_test(tc, init_with_serves_from_the_callers_buffer_first_then_grows);
    tcase_add_test(tc, a_request_that_does_not_fit_the_buffer_starts_outside_it);
    tcase_add_test(tc, deferred_destructors_run_at_dispose_in_reverse_order);
    tcase_add_test(tc, dispose_leaves_an_empty_arena_ready_for_reuse);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
