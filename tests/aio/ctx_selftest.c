/* Stand-alone check of the hand-written context switch, built without the
 * rest of the runtime so it can be cross-compiled and run under an
 * emulator (scripts/test-ctx-aarch64.sh): two coroutines and the main
 * context pass control around, each keeping callee-saved state (locals
 * held in registers across the switch, floating point included) intact. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "aio/ctx.h"

static aio__ctx main_ctx, a_ctx, b_ctx;
static volatile long trace;

static void a_entry(void)
{
    aio__ctx_entered(&main_ctx);
    long acc = 0;
    double f = 1.5;
    for (int i = 1; i <= 1000; i++) {
        acc += i;
        f *= 1.0001;
        aio__ctx_switch(&a_ctx, &b_ctx, false); /* hop to b, which hops back to main */
    }
    trace = acc + (long)(f > 1.5);
    aio__ctx_switch(&a_ctx, &main_ctx, true);
}

static void b_entry(void)
{
    aio__ctx_entered(&main_ctx);
    for (;;) {
        long local = trace * 3 + 1;
        aio__ctx_switch(&b_ctx, &main_ctx, false);
        trace = local - 1 - trace * 3; /* 0 if `local` survived the switch */
        if (trace != 0)
            abort();
    }
}

int main(void)
{
    size_t size = 64 * 1024;
    char *sa = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *sb = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    aio__ctx_make(&a_ctx, sa, size, a_entry);
    aio__ctx_make(&b_ctx, sb, size, b_entry);
    long kept = 12345;
    for (int i = 0; i < 1000; i++) {
        aio__ctx_switch(&main_ctx, &a_ctx, false); /* a -> b -> back here */
        if (kept != 12345)
            abort();
    }
    aio__ctx_switch(&main_ctx, &a_ctx, false); /* a finishes its loop and comes back */
    if (trace != 1000L * 1001 / 2 + 1) {
        fprintf(stderr, "ctx selftest: wrong result %ld\n", trace);
        return 1;
    }
    printf("ctx selftest: ok\n");
    return 0;
}
