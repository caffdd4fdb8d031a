/*
 * sizes: the message size cache (see sizes.h). Separate chaining in a
 * power-of-two bucket array that doubles as it fills. When the cap is
 * reached, each insertion first evicts the head of the next non-empty bucket
 * after a rotating cursor: cheap, and old entries (deleted or renamed files)
 * leave eventually without any bookkeeping per entry.
 */
#include "backends/maildir/sizes.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SIZES_MIN_BUCKETS 1024

struct sizes_node {
    struct sizes_node *next; /* bucket chain */
    uint64_t hash;           /* hash of key, kept to rehash and to skip compares */
    dev_t dev;               /* validators: the file the size belongs to */
    ino_t ino;
    off_t bytes;
    struct timespec mtime;
    uint64_t size; /* the cached CRLF-normalised size */
    char key[];    /* path under the root */
};

struct sizes {
    pthread_mutex_t mu;         /* guards everything below */
    struct sizes_node **bucket; /* nbuckets chains */
    size_t nbuckets;            /* a power of two */
    size_t count;               /* entries held */
    size_t max;                 /* cap on count */
    size_t cursor;              /* next bucket to evict from */
};

static uint64_t sizes_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a, 64 bits */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct sizes *sizes_new(size_t max_entries)
{
    struct sizes *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->nbuckets = SIZES_MIN_BUCKETS;
    c->bucket = calloc(c->nbuckets, sizeof *c->bucket);
    if (c->bucket == NULL) {
        free(c);
        return NULL;
    }
    c->max = max_entries > 0 ? max_entries : 1;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void sizes_free(struct sizes *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct sizes_node *n = c->bucket[i];
        while (n != NULL) {
            struct sizes_node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(c->bucket);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The link pointing at `key`'s node, or at the NULL ending its chain. Caller holds mu. */
static struct sizes_node **sizes_find(struct sizes *c, const char *key, uint64_t h)
{
    struct sizes_node **link = &c->bucket[h & (c->nbuckets - 1)];
    while (*link != NULL && ((*link)->hash != h || strcmp((*link)->key, key) != 0))
        link = &(*link)->next;
    return link;
}

static int sizes_valid(const struct sizes_node *n, const struct stat *st)
{
    return n->dev == st->st_dev && n->ino == st->st_ino && n->bytes == st->st_size &&
           n->mtime.tv_sec == st->st_mtim.tv_sec && n->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

int sizes_get(struct sizes *c, const char *key, const struct stat *st, uint64_t *size)
{
    uint64_t h = sizes_hash(key);
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    struct sizes_node *n = *sizes_find(c, key, h);
    if (n != NULL && sizes_valid(n, st)) {
        *size = n->size;
        hit = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

/* Doubles the bucket array when the table is fuller than one entry per
 * bucket. Keeps the old array if the allocation fails. Caller holds mu. */
static void sizes_grow(struct sizes *c)
{
    if (c->count < c->nbuckets)
        return;
    size_t nb = c->nbuckets * 2;
    struct sizes_node **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct sizes_node *n = c->bucket[i];
        while (n != NULL) {
            struct sizes_node *next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(c->bucket);
    c->bucket = b;
    c->nbuckets = nb;
    c->cursor = 0;
}

/* Drops one entry: the head of the next non-empty bucket. Caller holds mu. */
static void sizes_evict_one(struct sizes *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        size_t b = (c->cursor + i) & (c->nbuckets - 1);
        struct sizes_node *n = c->bucket[b];
        if (n != NULL) {
            c->bucket[b] = n->next;
            free(n);
            c->count--;
            c->cursor = b + 1;
            return;
        }
    }
}

static void sizes_fill(struct sizes_node *n, const struct stat *st, uint64_t size)
{
    n->dev = st->st_dev;
    n->ino = st->st_ino;
    n->bytes = st->st_size;
    n->mtime = st->st_mtim;
    n->size = size;
}

void sizes_put(struct sizes *c, const char *key, const struct stat *st, uint64_t size)
{
    uint64_t h = sizes_hash(key);
    size_t klen = strlen(key);
    pthread_mutex_lock(&c->mu);
    struct sizes_node **link = sizes_find(c, key, h);
    if (*link != NULL) {
        sizes_fill(*link, st, size);
        goto done;
    }
    if (c->count >= c->max)
        sizes_evict_one(c);
    struct sizes_node *n = malloc(sizeof *n + klen + 1);
    if (n == NULL)
        goto done;
    n->hash = h;
    memcpy(n->key, key, klen + 1);
    sizes_fill(n, st, size);
    /* Eviction may have emptied the bucket `link` pointed into: look again. */
    link = sizes_find(c, key, h);
    n->next = NULL;
    *link = n;
    c->count++;
    sizes_grow(c);
done:
    pthread_mutex_unlock(&c->mu);
}

void sizes_forget(struct sizes *c, const char *key)
{
    uint64_t h = sizes_hash(key);
    pthread_mutex_lock(&c->mu);
    struct sizes_node **link = sizes_find(c, key, h);
    struct sizes_node *n = *link;
    if (n != NULL) {
        *link = n->next;
        free(n);
        c->count--;
    }
    pthread_mutex_unlock(&c->mu);
}

size_t sizes_count(struct sizes *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}
