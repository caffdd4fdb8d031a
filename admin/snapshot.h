/*
 * snapshot: a plain copy of the process-wide metrics, taken by the admin
 * thread with relaxed loads, so that one rendering (/status, /metrics) works
 * on one set of numbers. Also the latency estimates drawn from histograms.
 *
 * Counters are read one by one, so a snapshot is not an atomic picture of
 * every counter at one instant; each number is exact for some moment during
 * the copy, which is what monitoring needs. A histogram's count is the sum of
 * its buckets as copied, so `+Inf` and `_count` always agree.
 */
#ifndef POP3GW_ADMIN_SNAPSHOT_H
#define POP3GW_ADMIN_SNAPSHOT_H

#include "admin/metrics.h"

struct hist_snap {
    unsigned long bucket[METRICS_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    unsigned long count;                       /* sum of the buckets */
    double sum;                                /* seconds */
};

struct metrics_snap {
    unsigned long connections_total, connections_refused;
    long connections_active;
    unsigned long tls_handshakes, tls_failures, proxy_rejected;
    long sessions_authorization, sessions_transaction;
    unsigned long commands_total, bad_commands;
    unsigned long logins_ok[MM_N], logins_failed[MM_N];
    unsigned long timeouts, send_timeouts;
    unsigned long messages_retrieved, messages_deleted, quit_failures;
    unsigned long size_mismatches, listings_truncated;
    unsigned long bytes_in, bytes_out;
    unsigned long webhook_calls[WH_N_EVENTS];
    unsigned long webhook_errors[WH_N_EVENTS][MWE_N];
    unsigned long webhook_retries[WH_N_EVENTS];
    long webhook_inflight;
    struct hist_snap latency[WH_N_EVENTS];
    long backend_last_ok, backend_last_error;            /* unix seconds, 0 = never */
    long long backend_last_ok_ms, backend_last_error_ms; /* 0 = not recorded */
    long started;                                        /* unix seconds */
};

/* Copies the global metrics (relaxed loads; gauges below zero read as 0). */
void metrics_snap_take(struct metrics_snap *s);

/* Adds h's buckets, count and sum into `into`. */
void hist_snap_merge(struct hist_snap *into, const struct hist_snap *h);

/*
 * Estimates the q-quantile (0 < q < 1) in seconds, like Prometheus's
 * histogram_quantile(): find the bucket that holds rank q*count and
 * interpolate linearly between its bounds (the first bucket starts at 0;
 * an answer in +Inf is the highest finite bound). Negative when empty.
 */
double hist_snap_quantile(const struct hist_snap *h, double q);

/* Sum of the webhook errors of one event over every reason. */
unsigned long metrics_snap_errors(const struct metrics_snap *s, int event);

/* "unknown" (no call yet), "failing" (the last error is newer than the last
 * success) or "ok". The millisecond times decide when they were recorded;
 * with seconds only, an error and a success in the same second count as
 * failing (the next success in a later second clears it). */
const char *metrics_snap_backend_state(const struct metrics_snap *s);

#endif
