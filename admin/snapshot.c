/*
 * snapshot: latency quantiles from histogram buckets, error sums and the
 * backend's state, drawn from a metrics snapshot on the admin thread.
 */
#include "admin/snapshot.h"

#include <stdlib.h>
#include <string.h>

void hist_snap_merge(struct hist_snap *into, const struct hist_snap *h)
{
    int i;

    for (i = 0; i <= METRICS_BUCKETS; i++)
        into->bucket[i] += h->bucket[i];
    into->count += h->count;
    into->sum += h->sum;
}

double hist_snap_quantile(const struct hist_snap *h, double q)
{
    double rank, below = 0, lo, hi;
    int i;

    if (h->count == 0)
        return -1;
    rank = q * (double)h->count;
    for (i = 0; i <= METRICS_BUCKETS; i++) {
        double n = (double)h->bucket[i];
        if (n > 0 && below + n >= rank)
            break;
        below += n;
    }
    if (i >= METRICS_BUCKETS) /* +Inf: nothing better than the top bound */
        return metrics_bucket_bounds[METRICS_BUCKETS - 1];
    lo = i == 0 ? 0 : metrics_bucket_bounds[i - 1];
    hi = metrics_bucket_bounds[i];
    return lo + (hi - lo) * ((rank - below) / (double)h->bucket[i]);
}

unsigned long metrics_snap_errors(const struct metrics_snap *s, int event)
{
    unsigned long n = 0;
    int r;

    for (r = 0; r < MWE_N; r++)
        n += s->webhook_errors[event][r];
    return n;
}

const char *metrics_snap_backend_state(const struct metrics_snap *s)
{
    if (s->backend_last_ok == 0 && s->backend_last_error == 0)
        return "unknown";
    if (s->backend_last_ok_ms || s->backend_last_error_ms)
        return s->backend_last_error_ms > s->backend_last_ok_ms ? "failing" : "ok";
    return s->backend_last_error >= s->backend_last_ok ? "failing" : "ok";
}

unsigned long long metrics_snap_view(const struct adm_snapshot *snap, enum metrics_row_id id)
{
    const struct adm_view *v = &snap->v;

    switch (id) {
    case MR_info:
    case MR_up:
        return 1;
    case MR_workers:
        return (unsigned long long)v->workers;
    case MR_draining:
        return v->draining != 0;
    case MR_connections_limit:
        return (unsigned long long)v->max_connections;
    case MR_webhook_inflight_limit:
        return (unsigned long long)v->inflight_limit;
    case MR_backend_failing:
        return strcmp(metrics_snap_backend_state(&snap->m), "failing") == 0;
    default:
        abort(); /* a VIEW row of the table without its value here */
    }
}

unsigned long long metrics_snap_value(const struct adm_snapshot *snap, const struct metrics_row *r,
                                      size_t i)
{
    const char *p = (const char *)&snap->m + r->snap;
    long v;

    switch (r->kind) {
    case MK_COUNTER:
        return ((const unsigned long *)p)[i];
    case MK_GAUGE:
    case MK_TIME:
        v = ((const long *)p)[i];
        return v < 0 ? 0 : (unsigned long long)v;
    case MK_VIEW:
        return metrics_snap_view(snap, (enum metrics_row_id)(r - metrics_rows));
    case MK_HISTOGRAM:
    default:
        abort();
    }
}

const struct hist_snap *metrics_snap_hist(const struct metrics_snap *s, const struct metrics_row *r,
                                          size_t i)
{
    if (r->kind != MK_HISTOGRAM)
        abort();
    return &((const struct hist_snap *)(const void *)((const char *)s + r->snap))[i];
}
