/* Per-request memory: a bump allocator plus destructors, freed at once when
 * the request ends (h2o's memory pool idea, for memory that must outlive
 * h2o's own request object, e.g. after the client went away).
 * Not thread-safe; one owner. */
#ifndef H2PG_SERVER_ARENA_H
#define H2PG_SERVER_ARENA_H

#include <stddef.h>

typedef struct server_arena_chunk server_arena_chunk;
typedef struct server_arena_cleanup server_arena_cleanup;

/* In the caller's memory; zero-initialised is a valid empty arena. */
typedef struct server_arena {
    server_arena_chunk *chunks;
    char *next, *end;
    server_arena_cleanup *cleanups;
} server_arena;

void server_arena_init(server_arena *a);

/* Starts the arena in buf (the caller's memory, e.g. inside the request
 * object) before it needs to allocate: most requests fit. buf must be
 * aligned for any type and outlive the arena. */
void server_arena_init_with(server_arena *a, void *buf, size_t size);

/* size bytes aligned for any type; NULL on ENOMEM. */
void *server_arena_alloc(server_arena *a, size_t size);

/* A copy of len bytes plus a terminating NUL; NULL on ENOMEM. */
char *server_arena_strndup(server_arena *a, const char *s, size_t len);

/* Calls fn(p) at dispose, in reverse order of registration (e.g. PQclear,
 * json_decref). -ENOMEM (fn then runs at once, so nothing leaks). */
int server_arena_defer(server_arena *a, void (*fn)(void *), void *p);

/* Runs the destructors and frees everything; the arena is empty again. */
void server_arena_dispose(server_arena *a);

#endif
