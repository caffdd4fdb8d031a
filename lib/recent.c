/*
 * recent: a ring of the last failed webhook calls (see recent.h).
 */
#include "lib/recent.h"

#include <pthread.h>
#include <string.h>

static struct {
    pthread_mutex_t lock;
    struct recent_failure ring[RECENT_MAX];
    size_t next; /* where the next failure goes */
    size_t n;    /* failures held, up to RECENT_MAX */
} recent = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Copies text into dst (cap bytes): printable ASCII kept, other bytes as
 * '?', cut to fit. */
static void recent_text(char *dst, size_t cap, const char *src)
{
    size_t i;

    for (i = 0; src && src[i] && i + 1 < cap; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[i] = '\0';
}

void recent_add(const struct recent_failure *f)
{
    struct recent_failure e = *f;

    recent_text(e.transport, sizeof e.transport, f->transport);
    recent_text(e.reason, sizeof e.reason, f->reason);
    recent_text(e.session, sizeof e.session, f->session);
    pthread_mutex_lock(&recent.lock);
    recent.ring[recent.next] = e;
    recent.next = (recent.next + 1) % RECENT_MAX;
    if (recent.n < RECENT_MAX)
        recent.n++;
    pthread_mutex_unlock(&recent.lock);
}

size_t recent_copy(struct recent_failure *out, size_t max)
{
    size_t i, n;

    pthread_mutex_lock(&recent.lock);
    n = recent.n < max ? recent.n : max;
    for (i = 0; i < n; i++)
        out[i] = recent.ring[(recent.next + RECENT_MAX - 1 - i) % RECENT_MAX];
    pthread_mutex_unlock(&recent.lock);
    return n;
}

void recent_clear(void)
{
    pthread_mutex_lock(&recent.lock);
    recent.next = recent.n = 0;
    memset(recent.ring, 0, sizeof recent.ring);
    pthread_mutex_unlock(&recent.lock);
}
