/*
 * history: a ring of periodic samples of the admin snapshot (history.h).
 */
#include "admin/history.h"

#include <pthread.h>
#include <string.h>

#include "admin/snapshot.h"

static struct {
    pthread_mutex_t lock;
    struct adm_sample ring[HISTORY_N];
    size_t next, n;
} history = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The numbers of a sample, drawn from a snapshot. */
static void history_fill(struct adm_sample *x, const struct adm_snapshot *snap, long long t_ms)
{
    const struct metrics_snap *s = &snap->m;
    int e, m, i;

    memset(x, 0, sizeof(*x));
    x->t_ms = t_ms;
    x->connections_active =
        (unsigned long long)(s->connections_active > 0 ? s->connections_active : 0);
    x->connections_total = s->connections_total;
    x->sessions_authorization =
        (unsigned long long)(s->sessions_authorization > 0 ? s->sessions_authorization : 0);
    x->sessions_transaction =
        (unsigned long long)(s->sessions_transaction > 0 ? s->sessions_transaction : 0);
    x->commands = s->commands_total;
    for (m = 0; m < METRICS_METHODS; m++)
        x->logins += s->logins_ok[m] + s->logins_failed[m];
    for (e = 0; e < METRICS_EVENTS; e++) {
        x->webhook_calls += s->webhook_calls[e];
        x->webhook_errors += metrics_snap_errors(s, e);
        for (i = 0; i <= METRICS_BUCKETS; i++)
            x->latency[i] += s->webhook_latency[e].bucket[i];
    }
    x->webhook_inflight = (unsigned long long)(s->webhook_inflight > 0 ? s->webhook_inflight : 0);
    x->bytes_in = s->bytes_in;
    x->bytes_out = s->bytes_out;
}

int history_offer(const struct adm_snapshot *snap, long long t_ms)
{
    struct adm_sample x;
    int due;

    pthread_mutex_lock(&history.lock);
    due = history.n == 0 || t_ms - history.ring[(history.next + HISTORY_N - 1) % HISTORY_N].t_ms >=
                                HISTORY_INTERVAL_S * 1000LL;
    pthread_mutex_unlock(&history.lock);
    if (!due)
        return 0;
    history_fill(&x, snap, t_ms);
    pthread_mutex_lock(&history.lock);
    history.ring[history.next] = x;
    history.next = (history.next + 1) % HISTORY_N;
    if (history.n < HISTORY_N)
        history.n++;
    pthread_mutex_unlock(&history.lock);
    return 1;
}

size_t history_copy(struct adm_sample *out)
{
    size_t i, n;

    pthread_mutex_lock(&history.lock);
    n = history.n;
    for (i = 0; i < n; i++)
        out[i] = history.ring[(history.next + HISTORY_N - n + i) % HISTORY_N];
    pthread_mutex_unlock(&history.lock);
    return n;
}

void history_clear(void)
{
    pthread_mutex_lock(&history.lock);
    history.next = history.n = 0;
    pthread_mutex_unlock(&history.lock);
}
