/* Intrusive doubly linked lists for the runtime's queues (run queue, wait
 * queues, watcher lists, free lists).
 *
 * A link that is not on a list points at itself, so unlinking is idempotent:
 * an abort path and a wake path may both unlink the same waiter safely. */
#ifndef H2PG_AIO_LIST_H
#define H2PG_AIO_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct aio_link {
    struct aio_link *prev, *next;
} aio_link;

/* A list is an anchor link; the list is empty when the anchor points at itself. */
typedef aio_link aio_list;

#define aio_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void aio_link_init(aio_link *l) { l->prev = l->next = l; }
static inline void aio_list_init(aio_list *l) { aio_link_init(l); }
static inline bool aio_link_is_linked(const aio_link *l) { return l->next != l; }
static inline bool aio_list_is_empty(const aio_list *l) { return l->next == l; }

/* Inserts l before pos (at the tail when pos is the anchor). */
static inline void aio_list_insert_before(aio_link *pos, aio_link *l)
{
    l->prev = pos->prev;
    l->next = pos;
    pos->prev->next = l;
    pos->prev = l;
}

static inline void aio_list_push_back(aio_list *list, aio_link *l) { aio_list_insert_before(list, l); }
static inline void aio_list_push_front(aio_list *list, aio_link *l) { aio_list_insert_before(list->next, l); }

/* Safe to call on an unlinked link. */
static inline void aio_link_unlink(aio_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    aio_link_init(l);
}

/* Unlinks and returns the first link, or NULL when the list is empty. */
static inline aio_link *aio_list_pop_front(aio_list *list)
{
    if (aio_list_is_empty(list))
        return NULL;
    aio_link *l = list->next;
    aio_link_unlink(l);
    return l;
}

/* Moves every link of src to the tail of dst; src ends empty. */
static inline void aio_list_splice(aio_list *dst, aio_list *src)
{
    if (aio_list_is_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    aio_list_init(src);
}

#define aio_list_foreach(it, list) for (aio_link *it = (list)->next; it != (list); it = it->next)

#endif
