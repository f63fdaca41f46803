/* What the fuzz targets share. Each target defines LLVMFuzzerTestOneInput
 * and checks what must hold for every input with FUZZ_CHECK, which stays
 * on whatever the build type (a failed check aborts, which libFuzzer and
 * fuzz/replay.c both report as a crash, naming the check). */
#ifndef H2PG_FUZZ_FUZZ_H
#define H2PG_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                   \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* A heap copy of n bytes with nothing after them, so that a read one byte
 * past the end is a heap overflow ASan reports (libFuzzer's own buffer has
 * the same property; the copies keep it for pieces of an input). Never
 * NULL; free() it. */
static inline char *fuzz_dup(const void *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (c == NULL)
        abort();
    if (n)
        memcpy(c, p, n);
    else
        c[0] = '\0';
    return c;
}

/* The same, NUL-terminated (for the functions that take C strings). */
static inline char *fuzz_strndup(const void *p, size_t n)
{
    char *c = malloc(n + 1);
    if (c == NULL)
        abort();
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

#endif
