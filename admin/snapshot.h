/*
 * snapshot: what the renderings draw from a metrics snapshot (lib/metrics.h):
 * the value of each row of the table, latency estimates from histograms,
 * error sums and the backend's state.
 */
#ifndef POP3GW_ADMIN_SNAPSHOT_H
#define POP3GW_ADMIN_SNAPSHOT_H

#include "admin/admin.h"
#include "lib/metrics.h"

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

/* Series i of row r (lib/metrics.h's table) in a snapshot, as a number: a
 * counter, a gauge or a time as copied, a VIEW row as metrics_snap_view()
 * computes it. Not for histograms. */
unsigned long long metrics_snap_value(const struct adm_snapshot *snap, const struct metrics_row *r,
                                      size_t i);

/* Series i of a histogram row. */
const struct hist_snap *metrics_snap_hist(const struct metrics_snap *s, const struct metrics_row *r,
                                          size_t i);

/* The value of a VIEW row (pop3gw_workers, pop3gw_backend_failing, ...):
 * what the endpoint knows besides the counters. */
unsigned long long metrics_snap_view(const struct adm_snapshot *snap, enum metrics_row_id id);

/* "unknown" (no call yet), "failing" (the last error is newer than the last
 * success) or "ok". The millisecond times decide when they were recorded;
 * with seconds only, an error and a success in the same second count as
 * failing (the next success in a later second clears it). */
const char *metrics_snap_backend_state(const struct metrics_snap *s);

#endif
