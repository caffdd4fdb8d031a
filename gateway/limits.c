/*
 * limits: per-address connection and failed-login counters.
 *
 * A fixed array of buckets, each a short chain, guarded by one of 64 locks
 * chosen by the bucket: workers touching different addresses rarely contend.
 */
#include "gateway/limits.h"

#include <stdatomic.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LIMITS_BUCKETS 4096
#define LIMITS_LOCKS 64

struct limits_entry {
    struct limits_entry *next;
    int conns;    /* open connections */
    int failures; /* failed logins since window_start */
    time_t window_start;
    char ip[46];
};

static struct limits_entry *limits_table[LIMITS_BUCKETS];
static pthread_mutex_t limits_locks[LIMITS_LOCKS];
static atomic_int limits_max_conns, limits_max_failures; /* SIGHUP may change them */

int limits_init(int max_per_ip, int max_failures_per_ip)
{
    int i;

    limits_set(max_per_ip, max_failures_per_ip);
    for (i = 0; i < LIMITS_LOCKS; i++)
        pthread_mutex_init(&limits_locks[i], NULL);
    return 0;
}

void limits_set(int max_per_ip, int max_failures_per_ip)
{
    atomic_store(&limits_max_conns, max_per_ip);
    atomic_store(&limits_max_failures, max_failures_per_ip);
}

void limits_cleanup(void)
{
    int i;

    for (i = 0; i < LIMITS_BUCKETS; i++) {
        struct limits_entry *e = limits_table[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
        limits_table[i] = NULL;
    }
}

static unsigned limits_hash(const char *ip)
{
    unsigned h = 2166136261u; /* FNV-1a */

    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % LIMITS_BUCKETS;
}

/* Finds (or with create, adds) the entry of ip; the bucket's lock is held.
 * On the way it drops the bucket's entries that count nothing any more, so
 * addresses that never come back do not stay in the table. */
static struct limits_entry *limits_find(unsigned b, const char *ip, int create)
{
    struct limits_entry *e, **pp = &limits_table[b];
    time_t now = time(NULL);

    while ((e = *pp)) {
        if (strcmp(e->ip, ip) == 0)
            return e;
        if (e->conns == 0 && now - e->window_start >= LIMITS_FAILURE_WINDOW) {
            *pp = e->next;
            free(e);
            continue;
        }
        pp = &e->next;
    }
    if (!create || !(e = calloc(1, sizeof(*e))))
        return NULL;
    strncpy(e->ip, ip, sizeof(e->ip) - 1);
    e->next = limits_table[b];
    limits_table[b] = e;
    return e;
}

/* Drops an entry that counts nothing any more; the bucket's lock is held. */
static void limits_gc(unsigned b, struct limits_entry *e, time_t now)
{
    struct limits_entry **pp;

    if (e->failures && now - e->window_start < LIMITS_FAILURE_WINDOW)
        return;
    e->failures = 0;
    if (e->conns)
        return;
    for (pp = &limits_table[b]; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            free(e);
            return;
        }
}

int limits_conn_acquire(const char *ip)
{
    unsigned b = limits_hash(ip);
    pthread_mutex_t *l = &limits_locks[b % LIMITS_LOCKS];
    struct limits_entry *e;
    int rc = 1, max = atomic_load(&limits_max_conns);

    if (max <= 0)
        return 0;
    pthread_mutex_lock(l);
    e = limits_find(b, ip, 1);
    if (!e || e->conns >= max)
        rc = -1;
    else
        e->conns++;
    pthread_mutex_unlock(l);
    return rc;
}

void limits_conn_release(const char *ip)
{
    unsigned b = limits_hash(ip);
    pthread_mutex_t *l = &limits_locks[b % LIMITS_LOCKS];
    struct limits_entry *e;

    pthread_mutex_lock(l);
    e = limits_find(b, ip, 0);
    if (e) {
        if (e->conns > 0)
            e->conns--;
        limits_gc(b, e, time(NULL));
    }
    pthread_mutex_unlock(l);
}

void limits_login_failed(const char *ip, time_t now)
{
    unsigned b = limits_hash(ip);
    pthread_mutex_t *l = &limits_locks[b % LIMITS_LOCKS];
    struct limits_entry *e;

    if (atomic_load(&limits_max_failures) <= 0)
        return;
    pthread_mutex_lock(l);
    e = limits_find(b, ip, 1);
    if (e) {
        if (now - e->window_start >= LIMITS_FAILURE_WINDOW) {
            e->window_start = now;
            e->failures = 0;
        }
        e->failures++;
    }
    pthread_mutex_unlock(l);
}

int limits_login_blocked(const char *ip, time_t now)
{
    unsigned b = limits_hash(ip);
    pthread_mutex_t *l = &limits_locks[b % LIMITS_LOCKS];
    struct limits_entry *e;
    int blocked = 0;

    if (atomic_load(&limits_max_failures) <= 0)
        return 0;
    pthread_mutex_lock(l);
    e = limits_find(b, ip, 0);
    if (e) {
        blocked = now - e->window_start < LIMITS_FAILURE_WINDOW &&
                  e->failures >= atomic_load(&limits_max_failures);
        if (!blocked)
            limits_gc(b, e, now);
    }
    pthread_mutex_unlock(l);
    return blocked;
}
