/* The token buckets (see limit.h). */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "routes/limit.h"

#define SHARDS 16
#define SLOTS 1024 /* per shard: 16,384 callers tracked at once */
#define PROBE 8    /* slots a key may live in */
#define KEY_MAX 64

struct bucket {
    char key[KEY_MAX]; /* "" when free */
    double tokens;
    int64_t last; /* when tokens was computed */
};

static struct shard {
    pthread_mutex_t lock;
    struct bucket slots[SLOTS];
} shards[SHARDS] = {[0 ... SHARDS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

void routes_limit_take(const routes_limit *l, const char *key, int64_t now, routes_limit_result *out)
{
    char k[KEY_MAX];
    size_t kl = strlen(key);
    if (kl >= KEY_MAX)
        kl = KEY_MAX - 1;
    memcpy(k, key, kl);
    k[kl] = '\0';
    uint64_t h = hash(k);
    struct shard *sh = &shards[h % SHARDS];
    size_t base = (size_t)(h / SHARDS) % SLOTS;
    pthread_mutex_lock(&sh->lock);
    struct bucket *b = NULL, *reuse = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct bucket *s = &sh->slots[(base + i) % SLOTS];
        if (s->key[0] != '\0' && strcmp(s->key, k) == 0) {
            b = s;
            break;
        }
        /* a free slot, else the one idle the longest */
        if (s->key[0] == '\0') {
            if (reuse == NULL || reuse->key[0] != '\0')
                reuse = s;
        } else if (reuse == NULL || (reuse->key[0] != '\0' && s->last < reuse->last)) {
            reuse = s;
        }
    }
    if (b == NULL) {
        b = reuse;
        memcpy(b->key, k, kl + 1);
        b->tokens = l->burst;
        b->last = now;
    }
    double t = b->tokens + (double)(now - b->last) / 1e9 * l->per_s;
    if (t > l->burst)
        t = l->burst;
    b->last = now;
    out->allowed = t >= 1.0 - 1e-9; /* a wait of retry_after must be enough */
    if (out->allowed)
        t = t >= 1.0 ? t - 1.0 : 0.0;
    b->tokens = t;
    pthread_mutex_unlock(&sh->lock);
    out->remaining = (int64_t)floor(t);
    /* whole seconds, rounded up: waiting that long is always enough */
    out->retry_after = t >= 1.0 ? 0 : (int64_t)ceil((1.0 - t) / l->per_s);
    if (t < 1.0 && out->retry_after < 1)
        out->retry_after = 1;
    out->full_in = (int64_t)ceil((l->burst - t) / l->per_s);
}
