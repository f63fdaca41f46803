#include "ctx.h"

#include <stdint.h>
#include <string.h>

#ifdef AIO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#ifndef AIO_CTX_UCONTEXT

/* aio__ctx_jump(void **save_sp, void *new_sp): push the callee-saved
 * registers, store the stack pointer in *save_sp, load new_sp, pop the
 * registers saved there and return into that context. */
void aio__ctx_jump(void **save_sp, void *new_sp);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl aio__ctx_jump\n"
        ".type aio__ctx_jump,@function\n"
        ".p2align 4\n"
        "aio__ctx_jump:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size aio__ctx_jump,.-aio__ctx_jump\n"
        ".section .note.GNU-stack,\"\",@progbits\n"
        ".text\n");

/* Six saved registers, then the address `ret` jumps to, then a zero fake
 * return address so entry() starts with the stack aligned as after a call. */
void aio__ctx_make(aio__ctx *ctx, void *stack_lo, size_t stack_size, void (*entry)(void))
{
    uintptr_t top = ((uintptr_t)stack_lo + stack_size) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;            /* entry's return address: never used */
    *--sp = (void *)entry;   /* popped by ret */
    for (int i = 0; i < 6; i++)
        *--sp = NULL;        /* rbp rbx r12 r13 r14 r15 */
    ctx->sp = sp;
    ctx->stack_lo = stack_lo;
    ctx->stack_size = stack_size;
}

#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl aio__ctx_jump\n"
        ".type aio__ctx_jump,%function\n"
        ".p2align 4\n"
        "aio__ctx_jump:\n"
        "    sub sp, sp, #176\n"
        "    stp x19, x20, [sp, #0]\n"
        "    stp x21, x22, [sp, #16]\n"
        "    stp x23, x24, [sp, #32]\n"
        "    stp x25, x26, [sp, #48]\n"
        "    stp x27, x28, [sp, #64]\n"
        "    stp x29, x30, [sp, #80]\n"
        "    stp d8, d9, [sp, #96]\n"
        "    stp d10, d11, [sp, #112]\n"
        "    stp d12, d13, [sp, #128]\n"
        "    stp d14, d15, [sp, #144]\n"
        "    mov x2, sp\n"
        "    str x2, [x0]\n"
        "    mov sp, x1\n"
        "    ldp x19, x20, [sp, #0]\n"
        "    ldp x21, x22, [sp, #16]\n"
        "    ldp x23, x24, [sp, #32]\n"
        "    ldp x25, x26, [sp, #48]\n"
        "    ldp x27, x28, [sp, #64]\n"
        "    ldp x29, x30, [sp, #80]\n"
        "    ldp d8, d9, [sp, #96]\n"
        "    ldp d10, d11, [sp, #112]\n"
        "    ldp d12, d13, [sp, #128]\n"
        "    ldp d14, d15, [sp, #144]\n"
        "    add sp, sp, #176\n"
        "    ret\n"
        ".size aio__ctx_jump,.-aio__ctx_jump\n"
        ".section .note.GNU-stack,\"\",%progbits\n"
        ".text\n");

/* A 176-byte frame of zeros except x30 (the link register `ret` uses). */
void aio__ctx_make(aio__ctx *ctx, void *stack_lo, size_t stack_size, void (*entry)(void))
{
    uintptr_t top = ((uintptr_t)stack_lo + stack_size) & ~(uintptr_t)15;
    void **sp = (void **)(top - 176);
    memset(sp, 0, 176);
    sp[11] = (void *)entry; /* x30 at offset 88 */
    ctx->sp = sp;
    ctx->stack_lo = stack_lo;
    ctx->stack_size = stack_size;
}
#endif

static inline void raw_switch(aio__ctx *from, aio__ctx *to) { aio__ctx_jump(&from->sp, to->sp); }

#else /* AIO_CTX_UCONTEXT */

void aio__ctx_make(aio__ctx *ctx, void *stack_lo, size_t stack_size, void (*entry)(void))
{
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = stack_lo;
    ctx->uc.uc_stack.ss_size = stack_size;
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, entry, 0);
    ctx->stack_lo = stack_lo;
    ctx->stack_size = stack_size;
}

static inline void raw_switch(aio__ctx *from, aio__ctx *to) { swapcontext(&from->uc, &to->uc); }

#endif

void aio__ctx_switch(aio__ctx *from, aio__ctx *to, bool dying)
{
#ifdef AIO_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &from->asan_fake, to->stack_lo, to->stack_size);
    raw_switch(from, to);
    /* back in `from`; learn the bounds of whoever switched to us (the thread's
     * own stack is only known this way) */
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(from->asan_fake, &lo, &size);
    (void)lo;
    (void)size;
#else
    (void)dying;
    raw_switch(from, to);
#endif
}

void aio__ctx_entered(aio__ctx *from)
{
#ifdef AIO_ASAN
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(NULL, &lo, &size);
    if (from->stack_lo == NULL) {
        from->stack_lo = lo;
        from->stack_size = size;
    }
#else
    (void)from;
#endif
}
