/*
 * metrics: the process-wide counters and their helpers.
 */
#include "lib/metrics.h"

#include "lib/util.h"

#include <string.h>
#include <time.h>

struct metrics metrics;

const double metrics_bucket_bounds[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1,    2.5,   10};

const char *const metrics_event_names[METRICS_EVENTS] = {
#define X(e, n) n,
    NAMES_EVENTS(X)
#undef X
};

const char *const metrics_method_names[METRICS_METHODS] = {
#define X(e, n, cmd) n,
    NAMES_METHODS(X)
#undef X
};

const char *const metrics_wh_error_names[MWE_N] = {
#define X(e, n) n,
    NAMES_WH_ERRORS(X)
#undef X
};

void metrics_observe(struct metrics_hist *h, double seconds)
{
    int i;

    for (i = 0; i < METRICS_BUCKETS && seconds > metrics_bucket_bounds[i]; i++)
        ;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

void metrics_backend_result(int ok)
{
    long long ms = util_real_ms();

    if (ok) {
        METRIC_SET(backend_last_ok, (long)(ms / 1000));
        METRIC_SET(backend_last_ok_ms, ms);
    } else {
        METRIC_SET(backend_last_error, (long)(ms / 1000));
        METRIC_SET(backend_last_error_ms, ms);
    }
}

/* ---- snapshots ---------------------------------------------------------- */

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

    for (e = 0; e < METRICS_EVENTS; e++) {
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
    for (m = 0; m < METRICS_METHODS; m++) {
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
