/* What the process's allocator keeps. */
#ifndef H2PG_BASE_MEMORY_H
#define H2PG_BASE_MEMORY_H

/* Gives memory that the calling thread freed, and that the allocator still
 * holds for reuse, back to the system. build/h2pg runs on mimalloc
 * (CMakeLists.txt, H2PG_MIMALLOC), which returns a thread's free pages
 * lazily, during that thread's later allocations: a worker that goes quiet
 * after a burst (hundreds of 400 KB request heads) would keep the burst's
 * pages resident. Each worker calls this once a second. Without mimalloc
 * (the sanitizer builds, the tests' own programs) it does nothing: glibc
 * gives back freed memory at the top of its heap as it frees. */
void base_memory_return(void);

#endif
