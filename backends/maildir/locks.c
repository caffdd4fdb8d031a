/*
 * locks: per-user maildrop locks with expiry (see locks.h). A fixed array of
 * hash buckets of small nodes under one mutex: there is at most one node per
 * user who is logged in, and every operation is a short walk of one bucket.
 * Lapsed locks are removed when their bucket is next walked.
 */
#include "backends/maildir/locks.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCKS_BUCKETS 4096

struct locks_node {
    struct locks_node *next; /* the bucket's chain */
    double expires;          /* CLOCK_MONOTONIC seconds */
    char *session;           /* the holder */
    char user[];             /* the locked user */
};

struct locks {
    pthread_mutex_t mu;                       /* guards everything below */
    double timeout;                           /* seconds a lock lives unrefreshed */
    struct locks_node *bucket[LOCKS_BUCKETS]; /* chains by hash of user */
};

static double locks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t locks_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % LOCKS_BUCKETS;
}

static void locks_node_free(struct locks_node *n)
{
    if (n == NULL)
        return;
    free(n->session);
    free(n);
}

struct locks *locks_new(double timeout)
{
    struct locks *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    pthread_mutex_init(&l->mu, NULL);
    l->timeout = timeout;
    return l;
}

void locks_free(struct locks *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < LOCKS_BUCKETS; i++) {
        struct locks_node *n = l->bucket[i];
        while (n != NULL) {
            struct locks_node *next = n->next;
            locks_node_free(n);
            n = next;
        }
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/*
 * Returns the link that points at `user`'s live node in its bucket (or at the
 * NULL ending the chain), unlinking lapsed nodes on the way. Caller holds mu.
 */
static struct locks_node **locks_find(struct locks *l, const char *user, double now)
{
    struct locks_node **link = &l->bucket[locks_hash(user)];
    while (*link != NULL) {
        struct locks_node *n = *link;
        if (n->expires <= now) {
            *link = n->next;
            locks_node_free(n);
            continue;
        }
        if (strcmp(n->user, user) == 0)
            return link;
        link = &n->next;
    }
    return link;
}

static struct locks_node *locks_node_new(const char *user, const char *session)
{
    size_t ulen = strlen(user);
    struct locks_node *n = malloc(sizeof *n + ulen + 1);
    if (n == NULL)
        return NULL;
    n->session = strdup(session);
    if (n->session == NULL) {
        free(n);
        return NULL;
    }
    memcpy(n->user, user, ulen + 1);
    n->next = NULL;
    return n;
}

int locks_acquire(struct locks *l, const char *user, const char *session)
{
    double now = locks_now();
    int ret = 1;
    pthread_mutex_lock(&l->mu);
    struct locks_node **link = locks_find(l, user, now);
    if (*link != NULL && strcmp((*link)->session, session) != 0) {
        ret = 0;
    } else if (*link != NULL) {
        (*link)->expires = now + l->timeout;
    } else if ((*link = locks_node_new(user, session)) != NULL) {
        (*link)->expires = now + l->timeout;
    } else {
        ret = -1;
    }
    pthread_mutex_unlock(&l->mu);
    return ret;
}

void locks_touch(struct locks *l, const char *user, const char *session)
{
    double now = locks_now();
    pthread_mutex_lock(&l->mu);
    struct locks_node **link = locks_find(l, user, now);
    if (*link != NULL && strcmp((*link)->session, session) == 0)
        (*link)->expires = now + l->timeout;
    pthread_mutex_unlock(&l->mu);
}

void locks_release(struct locks *l, const char *user, const char *session)
{
    pthread_mutex_lock(&l->mu);
    struct locks_node **link = locks_find(l, user, locks_now());
    struct locks_node *n = *link;
    if (n != NULL && strcmp(n->session, session) == 0) {
        *link = n->next;
        locks_node_free(n);
    }
    pthread_mutex_unlock(&l->mu);
}
