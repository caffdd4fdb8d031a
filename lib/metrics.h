/*
 * metrics: process-wide counters, gauges and latency histograms.
 *
 * Workers update them with relaxed atomics (no lock on the hot path); the
 * admin thread reads them to render /status and /metrics.
 */
#ifndef POP3GW_METRICS_H
#define POP3GW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "lib/names.h"

/* Webhook events, as webhook/wh.h numbers them (enum wh_event). */
#define METRICS_EVENTS NAMES_COUNT(NAMES_EVENTS)

/* Login methods, as webhook/wh.h numbers them (enum wh_method). */
#define METRICS_METHODS NAMES_COUNT(NAMES_METHODS)

/* Upper bounds (seconds) of the latency histogram buckets; +Inf follows. */
#define METRICS_BUCKETS 12
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

struct metrics_hist {
    atomic_ulong bucket[METRICS_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    atomic_ulong count;
    atomic_ulong sum_us; /* microseconds */
};

/* Why a webhook call failed (label "reason" of pop3gw_webhook_errors_total,
 * lib/names.h): timeout (deadline passed), connect (connection refused or
 * reset, DNS), status (5xx or an unexpected status), body (not per the
 * contract), broken (a streamed retrieve broke after +OK). */
enum metrics_wh_error {
#define X(e, n) MWE_##e,
    NAMES_WH_ERRORS(X)
#undef X
        MWE_N
};

struct metrics {
    /* connections */
    atomic_ulong connections_total;     /* accepted */
    atomic_long connections_active;     /* open now */
    atomic_ulong connections_refused;   /* over max_connections / per IP */
    atomic_ulong tls_handshakes;        /* completed (implicit TLS and STLS) */
    atomic_ulong tls_failures;          /* handshakes that failed */
    atomic_ulong proxy_rejected;        /* bad, missing or untrusted PROXY headers */
    atomic_long sessions_authorization; /* sessions in each state now */
    atomic_long sessions_transaction;
    /* POP3 */
    atomic_ulong commands_total; /* command lines handled */
    atomic_ulong bad_commands;   /* unknown, wrong state or syntax, too long */
    atomic_ulong logins_ok[METRICS_METHODS];
    atomic_ulong logins_failed[METRICS_METHODS]; /* refused by the backend */
    atomic_ulong timeouts;                       /* login/idle autologout */
    atomic_ulong send_timeouts;                  /* a client stopped reading */
    atomic_ulong messages_retrieved;             /* RETR/TOP completed */
    atomic_ulong messages_deleted;               /* committed by a successful quit */
    atomic_ulong quit_failures;                  /* quit with deletions not committed */
    atomic_ulong size_mismatches;                /* streamed size differs from the listing */
    atomic_ulong listings_truncated;             /* cut to max_messages */
    atomic_ulong bytes_in, bytes_out;            /* POP3 payload octets */
    /* webhooks */
    atomic_ulong webhook_calls[METRICS_EVENTS]; /* finished calls */
    atomic_ulong webhook_errors[METRICS_EVENTS][MWE_N];
    atomic_ulong webhook_retries[METRICS_EVENTS];
    atomic_long webhook_inflight; /* running or queued now */
    struct metrics_hist
        webhook_latency[METRICS_EVENTS]; /* seconds to the reply (retrieve: to the headers) */
    atomic_long backend_last_ok;         /* unix time of the last good reply */
    atomic_long backend_last_error;      /* unix time of the last failed call */
    atomic_long started;                 /* unix time the process started */
    /* The same two times in milliseconds, set by metrics_backend_result();
     * 0 = not recorded. They order a failure and a success that fall in the
     * same second (the admin endpoint's backend state). */
    atomic_llong backend_last_ok_ms;
    atomic_llong backend_last_error_ms;
};

extern struct metrics metrics;
extern const char *const metrics_event_names[METRICS_EVENTS];
extern const char *const metrics_method_names[METRICS_METHODS];
extern const char *const metrics_wh_error_names[MWE_N];

#define METRIC_ADD(field, n) atomic_fetch_add_explicit(&metrics.field, (n), memory_order_relaxed)
#define METRIC_INC(field) METRIC_ADD(field, 1)
#define METRIC_DEC(field) atomic_fetch_sub_explicit(&metrics.field, 1, memory_order_relaxed)
#define METRIC_SET(field, v) atomic_store_explicit(&metrics.field, (v), memory_order_relaxed)
#define METRIC_GET(field) atomic_load_explicit(&metrics.field, memory_order_relaxed)

/*
 * A plain copy of the metrics, taken with relaxed loads, so that one
 * rendering works on one set of numbers. Counters are read one by one, so a
 * snapshot is not an atomic picture of every counter at one instant; each
 * number is exact for some moment during the copy, which is what monitoring
 * needs. A histogram's count is the sum of its buckets as copied, so `+Inf`
 * and `_count` always agree.
 */
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
    unsigned long logins_ok[METRICS_METHODS], logins_failed[METRICS_METHODS];
    unsigned long timeouts, send_timeouts;
    unsigned long messages_retrieved, messages_deleted, quit_failures;
    unsigned long size_mismatches, listings_truncated;
    unsigned long bytes_in, bytes_out;
    unsigned long webhook_calls[METRICS_EVENTS];
    unsigned long webhook_errors[METRICS_EVENTS][MWE_N];
    unsigned long webhook_retries[METRICS_EVENTS];
    long webhook_inflight;
    struct hist_snap latency[METRICS_EVENTS];
    long backend_last_ok, backend_last_error;            /* unix seconds, 0 = never */
    long long backend_last_ok_ms, backend_last_error_ms; /* 0 = not recorded */
    long started;                                        /* unix seconds */
};

/* Copies the global metrics (relaxed loads; gauges below zero read as 0). */
void metrics_snap_take(struct metrics_snap *s);

/* Copies the global metrics (relaxed loads; gauges below zero read as 0). */
void metrics_snap_take(struct metrics_snap *s);

/* Records one observation (seconds) in a histogram. */
void metrics_observe(struct metrics_hist *h, double seconds);
/* Records that a webhook call succeeded (ok) or failed: sets backend_last_ok
 * or backend_last_error (seconds) and its _ms twin. */
void metrics_backend_result(int ok);

#endif
