/* Micro-benchmark of the coroutine runtime (not a test: it only prints).
 *
 *   build/aio_bench [iterations]
 *
 * Prints, best of 5 rounds:
 *   context switch   one raw switch between two coroutine stacks
 *   yield            aio_yield(): task -> scheduler -> task, with the run queue
 *   spawn+join       aio_task_spawn + aio_task_join of an empty task, stack from the pool
 *   gather(100)      aio_gather of 100 tasks that each yield once
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "aio/aio.h"
#include "aio/ctx.h"

static long iterations = 2000000;

/* ---- raw switch: main <-> one coroutine ---- */

static aio__ctx main_ctx, co_ctx;
static volatile long co_count;

static void co_entry(void)
{
    aio__ctx_entered(&main_ctx);
    for (;;) {
        co_count++;
        aio__ctx_switch(&co_ctx, &main_ctx, false);
    }
}

static double bench_raw_switch(void)
{
    size_t size = 256 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    aio__ctx_make(&co_ctx, stack, size, co_entry);
    int64_t t0 = aio_now();
    for (long i = 0; i < iterations; i++)
        aio__ctx_switch(&main_ctx, &co_ctx, false);
    int64_t dt = aio_now() - t0;
    munmap(stack, size);
    return (double)dt / (double)(iterations * 2); /* two switches per round trip */
}

/* ---- through the scheduler ---- */

static int noop(void *arg)
{
    (void)arg;
    return 0;
}

static int yield_once(void *arg)
{
    (void)arg;
    return aio_yield();
}

struct results {
    double yield_ns, spawn_join_ns, gather_us;
};

static int bench_main(void *arg)
{
    struct results *r = arg;
    int64_t t0 = aio_now();
    for (long i = 0; i < iterations; i++)
        aio_yield();
    r->yield_ns = (double)(aio_now() - t0) / (double)iterations;

    aio_task_join(aio_task_spawn(noop, NULL)); /* warm the stack pool */
    long n = iterations / 4;
    t0 = aio_now();
    for (long i = 0; i < n; i++)
        aio_task_join(aio_task_spawn(noop, NULL));
    r->spawn_join_ns = (double)(aio_now() - t0) / (double)n;

    aio_call calls[100];
    for (int i = 0; i < 100; i++)
        calls[i] = (aio_call){.fn = yield_once};
    aio_gather(calls, 100, 0);
    long rounds = iterations / 400 > 10 ? iterations / 400 : 10;
    t0 = aio_now();
    for (long i = 0; i < rounds; i++)
        aio_gather(calls, 100, 0);
    r->gather_us = (double)(aio_now() - t0) / (double)rounds / 1000.0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        iterations = atol(argv[1]);
    double best_switch = 1e18;
    struct results best = {1e18, 1e18, 1e18};
    for (int round = 0; round < 5; round++) {
        double s = bench_raw_switch();
        if (s < best_switch)
            best_switch = s;
        struct results r;
        aio_run(bench_main, &r, NULL);
        if (r.yield_ns < best.yield_ns)
            best.yield_ns = r.yield_ns;
        if (r.spawn_join_ns < best.spawn_join_ns)
            best.spawn_join_ns = r.spawn_join_ns;
        if (r.gather_us < best.gather_us)
            best.gather_us = r.gather_us;
    }
    printf("context switch   %8.1f ns\n", best_switch);
    printf("yield            %8.1f ns   (task -> scheduler -> task)\n", best.yield_ns);
    printf("spawn+join       %8.1f ns   (stack from the pool)\n", best.spawn_join_ns);
    printf("gather(100)      %8.2f us\n", best.gather_us);
    return 0;
}
