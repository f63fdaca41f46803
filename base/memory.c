#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>

#include "base/memory.h"

/* Looked up rather than linked, so that only the binary that links
 * mimalloc depends on it (and an LD_PRELOADed one is found too). */
typedef void (*collect_fn)(bool force);
static collect_fn collect;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void look_up(void) { *(void **)&collect = dlsym(RTLD_DEFAULT, "mi_collect"); }

void base_memory_return(void)
{
    pthread_once(&once, look_up);
    if (collect != NULL)
        collect(false); /* this thread's pages: frees empty ones, purges what waited long enough */
}
