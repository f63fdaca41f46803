#include "base/arena.h"

#include <errno.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE 4096

struct base_arena_chunk {
    base_arena_chunk *next;
    alignas(max_align_t) char data[];
};

struct base_arena_cleanup {
    base_arena_cleanup *next;
    void (*fn)(void *);
    void *p;
};

void base_arena_init(base_arena *a) { memset(a, 0, sizeof(*a)); }

void base_arena_init_with(base_arena *a, void *buf, size_t size)
{
    memset(a, 0, sizeof(*a));
    a->next = buf;
    a->end = (char *)buf + size;
}

void *base_arena_alloc(base_arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    if (a->next == NULL || (size_t)(a->end - a->next) < size) {
        size_t cap = size > CHUNK_SIZE - sizeof(base_arena_chunk) ? size : CHUNK_SIZE - sizeof(base_arena_chunk);
        base_arena_chunk *c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->next = a->chunks;
        a->chunks = c;
        if (size >= cap) /* an oversized one-off: keep filling the previous chunk afterwards */
            return c->data;
        a->next = c->data;
        a->end = c->data + cap;
    }
    void *p = a->next;
    a->next += size;
    return p;
}

char *base_arena_strndup(base_arena *a, const char *s, size_t len)
{
    char *p = base_arena_alloc(a, len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

int base_arena_defer(base_arena *a, void (*fn)(void *), void *p)
{
    base_arena_cleanup *c = base_arena_alloc(a, sizeof(*c));
    if (c == NULL) {
        fn(p);
        return -ENOMEM;
    }
    c->fn = fn;
    c->p = p;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

void base_arena_dispose(base_arena *a)
{
    for (base_arena_cleanup *c = a->cleanups; c != NULL; c = c->next)
        c->fn(c->p);
    base_arena_chunk *c = a->chunks;
    while (c != NULL) {
        base_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    memset(a, 0, sizeof(*a));
}
