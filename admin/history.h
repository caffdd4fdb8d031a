/*
 * history: the last five minutes of the admin endpoint's numbers, so that a
 * dashboard opened now is not empty.
 *
 * A ring of HISTORY_N samples, one every HISTORY_INTERVAL_S seconds, taken
 * by the probe lane's tick (admin.c) from a snapshot (struct adm_snapshot:
 * counters only, it never waits for the workers) and served as GET
 * /history (render_history_json). Each sample keeps the gauges and the
 * counters as they were, so rates and interval latencies are differences
 * between samples, as the dashboard computes them from its own polls.
 */
#ifndef POP3GW_ADMIN_HISTORY_H
#define POP3GW_ADMIN_HISTORY_H

#include <stddef.h>

#include "admin/admin.h"

#define HISTORY_INTERVAL_S 5
#define HISTORY_KEEP_S 300
#define HISTORY_N (HISTORY_KEEP_S / HISTORY_INTERVAL_S)

struct adm_sample {
    long long t_ms; /* unix milliseconds */
    unsigned long long connections_active, connections_total;
    unsigned long long sessions_authorization, sessions_transaction;
    unsigned long long commands, logins, webhook_calls, webhook_errors, webhook_inflight;
    unsigned long long bytes_in, bytes_out;
    unsigned long latency[METRICS_BUCKETS + 1]; /* every event's calls, by bucket, since start */
};

/* Records a sample of `snap` taken at t_ms when the last one is
 * HISTORY_INTERVAL_S old or more (or there is none); returns 1 when it did.
 * Any thread. */
int history_offer(const struct adm_snapshot *snap, long long t_ms);

/* Copies the samples into out (HISTORY_N of room), oldest first; returns
 * how many. Any thread. */
size_t history_copy(struct adm_sample *out);

/* Forgets every sample (admin_start, tests). */
void history_clear(void);

#endif
