/*
 * snapshot: copies the metrics atomics into plain numbers and estimates
 * latency quantiles from the histogram buckets. Runs on the admin thread
 * only; the workers never wait for it (relaxed loads, no lock).
 */
#include "admin/snapshot.h"

#include <string.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static long snap_gauge(atomic_long *g)
{
    long v = LOAD(*g);

    return v < 0 ? 0 : v;
}

static void snap_hist(struct hist_snap *out, struct metrics_hist *h)
{
    int i;

    memset(out, 0, sizeof(*out));
    for (i = 0; i <= METRICS_BUCKETS; i++) {
        out->bucket[i] = LOAD(h->bucket[i]);
        out->count += out->bucket[i];
    }
    out->sum = (double)LOAD(h->sum_us) / 1e6;
}

static void snap_webhooks(struct metrics_snap *s)
{
    int e, r;

    for (e = 0; e < WH_N_EVENTS; e++) {
        s->webhook_calls[e] = LOAD(metrics.webhook_calls[e]);
        s->webhook_retries[e] = LOAD(metrics.webhook_retries[e]);
        for (r = 0; r < MWE_N; r++)
            s->webhook_errors[e][r] = LOAD(metrics.webhook_errors[e][r]);
        snap_hist(&s->latency[e], &metrics.webhook_latency[e]);
    }
    s->webhook_inflight = snap_gauge(&metrics.webhook_inflight);
    s->backend_last_ok = LOAD(metrics.backend_last_ok);
    s->backend_last_error = LOAD(metrics.backend_last_error);
    s->backend_last_ok_ms = LOAD(metrics.backend_last_ok_ms);
    s->backend_last_error_ms = LOAD(metrics.backend_last_error_ms);
}

void metrics_snap_take(struct metrics_snap *s)
{
    int m;

    memset(s, 0, sizeof(*s));
    s->connections_total = LOAD(metrics.connections_total);
    s->connections_refused = LOAD(metrics.connections_refused);
    s->connections_active = snap_gauge(&metrics.connections_active);
    s->tls_handshakes = LOAD(metrics.tls_handshakes);
    s->tls_failures = LOAD(metrics.tls_failures);
    s->proxy_rejected = LOAD(metrics.proxy_rejected);
    s->sessions_authorization = snap_gauge(&metrics.sessions_authorization);
    s->sessions_transaction = snap_gauge(&metrics.sessions_transaction);
    s->commands_total = LOAD(metrics.commands_total);
    s->bad_commands = LOAD(metrics.bad_commands);
    for (m = 0; m < MM_N; m++) {
        s->logins_ok[m] = LOAD(metrics.logins_ok[m]);
        s->logins_failed[m] = LOAD(metrics.logins_failed[m]);
    }
    s->timeouts = LOAD(metrics.timeouts);
    s->send_timeouts = LOAD(metrics.send_timeouts);
    s->messages_retrieved = LOAD(metrics.messages_retrieved);
    s->messages_deleted = LOAD(metrics.messages_deleted);
    s->quit_failures = LOAD(metrics.quit_failures);
    s->size_mismatches = LOAD(metrics.size_mismatches);
    s->listings_truncated = LOAD(metrics.listings_truncated);
    s->bytes_in = LOAD(metrics.bytes_in);
    s->bytes_out = LOAD(metrics.bytes_out);
    s->started = LOAD(metrics.started);
    snap_webhooks(s);
}

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
