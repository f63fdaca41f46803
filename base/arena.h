/* Per-request memory: a bump allocator plus destructors, freed at once when
 * the request ends (h2o's memory pool idea, for memory that must outlive
 * h2o's own request object, e.g. after the client went away).
 * Not thread-safe; one owner. */
#ifndef H2PG_BASE_ARENA_H
#define H2PG_BASE_ARENA_H

#include <stddef.h>

typedef struct base_arena_chunk base_arena_chunk;
typedef struct base_arena_cleanup base_arena_cleanup;

/* In the caller's memory; zero-initialised is a valid empty arena. */
typedef struct base_arena {
    base_arena_chunk *chunks;
    char *next, *end;
    base_arena_cleanup *cleanups;
} base_arena;

void base_arena_init(base_arena *a);

/* Starts the arena in buf (the caller's memory, e.g. inside the request
 * object) before it needs to allocate: most requests fit. buf must be
 * aligned for any type and outlive the arena. */
void base_arena_init_with(base_arena *a, void *buf, size_t size);

/* size bytes aligned for any type; NULL on ENOMEM. */
void *base_arena_alloc(base_arena *a, size_t size);

/* A copy of len bytes plus a terminating NUL; NULL on ENOMEM. */
char *base_arena_strndup(base_arena *a, const char *s, size_t len);

/* Calls fn(p) at dispose, in reverse order of registration (e.g. PQclear,
 * json_decref). -ENOMEM (fn then runs at once, so nothing leaks). */
int base_arena_defer(base_arena *a, void (*fn)(void *), void *p);

/* Runs the destructors and frees everything; the arena is empty again. */
void base_arena_dispose(base_arena *a);

#endif
