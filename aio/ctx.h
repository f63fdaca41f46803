/* Private: machine contexts for stackful coroutines.
 *
 * A context is a saved stack pointer. On x86-64 and aarch64 a hand-written
 * switch saves only the callee-saved registers the ABI requires (the
 * floating-point control words are not saved: nothing in this program changes
 * them). Elsewhere, or when built with -DAIO_CTX_UCONTEXT, ucontext is used.
 *
 * Under AddressSanitizer every switch is announced with the sanitizer's fiber
 * API, so ASan knows which stack is live and reports stay meaningful. */
#ifndef H2PG_AIO_CTX_H
#define H2PG_AIO_CTX_H

#include <stdbool.h>
#include <stddef.h>

#if !defined(AIO_CTX_UCONTEXT) && !defined(__x86_64__) && !defined(__aarch64__)
#define AIO_CTX_UCONTEXT 1
#endif

#ifdef AIO_CTX_UCONTEXT
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define AIO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AIO_ASAN 1
#endif
#endif

typedef struct aio__ctx {
#ifdef AIO_CTX_UCONTEXT
    ucontext_t uc;
#else
    void *sp;
#endif
    /* Bounds of the stack this context runs on; for the thread's own stack
     * they are learned at the first switch (only ASan needs them). */
    const void *stack_lo;
    size_t stack_size;
#ifdef AIO_ASAN
    void *asan_fake;
#endif
} aio__ctx;

/* Prepares ctx to call entry() on the given stack at its first switch-in.
 * entry must never return: it ends by switching away with dying = true. */
void aio__ctx_make(aio__ctx *ctx, void *stack_lo, size_t stack_size, void (*entry)(void));

/* Saves the current context in from and resumes to. Returns when someone
 * switches back to from. dying: from will never be resumed (lets ASan drop its
 * fake stack). */
void aio__ctx_switch(aio__ctx *from, aio__ctx *to, bool dying);

/* Called first thing in a fresh context's entry function. */
void aio__ctx_entered(aio__ctx *from);

#endif
