/*
 * metrics: process-wide counters, gauges and latency histograms.
 *
 * Workers update them with relaxed atomics (no lock on the hot path); the
 * admin thread reads them to render /status and /metrics.
 *
 * Every metric is one row of METRICS_TABLE. The struct the workers update
 * (struct metrics), the copy the admin thread renders (struct metrics_snap),
 * metrics_snap_take() and the row descriptors both renderings loop over
 * (metrics_rows[]) are generated from it. Adding a metric is adding a row
 * (and documenting it in docs/admin.md, which tests/unit/test_docs.c checks).
 */
#ifndef POP3GW_METRICS_H
#define POP3GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
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

/*
 * The table: X(field, KIND, DIM, label, name, help, json), one row per
 * metric, in the order /metrics shows them.
 *
 *   field  the member of struct metrics and struct metrics_snap
 *          (METRIC_INC(field) and friends); for VIEW rows only a name
 *   KIND   COUNTER    atomic_ulong, a Prometheus counter
 *          GAUGE      atomic_long, a gauge; read as 0 when below zero
 *          TIME       atomic_long, unix seconds: a gauge; null in /status while 0
 *          HISTOGRAM  struct metrics_hist (seconds), a histogram
 *          VIEW       no field: the admin endpoint computes the value from
 *                     what it knows besides the counters (a gauge)
 *   DIM    the series and their labels: NONE (one series), EVENT (event),
 *          METHOD (method), EVENT_REASON (event, reason), VERSION (one
 *          series labelled with the build's version)
 *   label  a fixed label every series of the row carries (`state="..."`), or ""
 *   name   the Prometheus family; rows of one family follow each other, and
 *          their series are written index by index, row by row
 *   help   the HELP text (on a family's first row; "" on the others); {LABEL}
 *          stands for the values that label takes, comma-separated
 *   json   where /status shows it: a dotted path, {LABEL} standing for the
 *          label's value; "" when /status does not show it
 */
/* clang-format off */
#define METRICS_TABLE(X)                                                                           \
    X(info, VIEW, VERSION, "", "pop3gw_info",                                                      \
      "Build information; always 1.", "")                                                          \
    X(up, VIEW, NONE, "", "pop3gw_up",                                                             \
      "1 while the process serves its admin endpoint.", "")                                        \
    X(started, TIME, NONE, "", "pop3gw_start_time_seconds",                                        \
      "Unix time the process started.", "started")                                                 \
    X(workers, VIEW, NONE, "", "pop3gw_workers",                                                   \
      "Event-loop worker threads.", "workers")                                                     \
    X(draining, VIEW, NONE, "", "pop3gw_draining",                                                 \
      "1 after SIGTERM, while sessions finish.", "")                                               \
    X(connections_total, COUNTER, NONE, "", "pop3gw_connections_total",                            \
      "Client connections accepted.", "connections.total")                                         \
    X(connections_active, GAUGE, NONE, "", "pop3gw_connections_active",                            \
      "Client connections open now.", "connections.active")                                        \
    X(connections_limit, VIEW, NONE, "", "pop3gw_connections_limit",                               \
      "Configured max_connections (0 = no limit).", "connections.limit")                           \
    X(connections_refused, COUNTER, NONE, "", "pop3gw_connections_refused_total",                  \
      "Client connections refused by max_connections or max_connections_per_ip.",                  \
      "connections.refused")                                                                       \
    X(tls_handshakes, COUNTER, NONE, "", "pop3gw_tls_handshakes_total",                            \
      "TLS handshakes completed (implicit TLS and STLS).", "tls.handshakes")                       \
    X(tls_failures, COUNTER, NONE, "", "pop3gw_tls_handshake_failures_total",                      \
      "TLS handshakes that failed.", "tls.failures")                                               \
    X(proxy_rejected, COUNTER, NONE, "", "pop3gw_proxy_rejected_total",                            \
      "Connections closed for a bad, missing or untrusted PROXY header.", "proxy_rejected")        \
    X(sessions_authorization, GAUGE, NONE, "state=\"authorization\"", "pop3gw_sessions",           \
      "POP3 sessions now, by RFC 1939 state.", "sessions.authorization")                           \
    X(sessions_transaction, GAUGE, NONE, "state=\"transaction\"", "pop3gw_sessions",               \
      "", "sessions.transaction")                                                                  \
    X(commands_total, COUNTER, NONE, "", "pop3gw_commands_total",                                  \
      "POP3 command lines handled.", "pop3.commands")                                              \
    X(bad_commands, COUNTER, NONE, "", "pop3gw_bad_commands_total",                                \
      "Unknown, out-of-state, malformed or too long command lines.", "pop3.bad_commands")          \
    X(logins_ok, COUNTER, METHOD, "result=\"ok\"", "pop3gw_logins_total",                          \
      "Login attempts the backend decided, by method and result (ok, failed).",                    \
      "logins.ok.{method}")                                                                        \
    X(logins_failed, COUNTER, METHOD, "result=\"failed\"", "pop3gw_logins_total",                  \
      "", "logins.failed.{method}")                                                                \
    X(timeouts, COUNTER, NONE, "", "pop3gw_session_timeouts_total",                                \
      "Sessions closed by login_timeout or idle_timeout.", "pop3.timeouts")                        \
    X(send_timeouts, COUNTER, NONE, "", "pop3gw_send_timeouts_total",                              \
      "Sessions closed because the client stopped reading (send_timeout).",                        \
      "pop3.send_timeouts")                                                                        \
    X(messages_retrieved, COUNTER, NONE, "", "pop3gw_messages_retrieved_total",                    \
      "RETR and TOP replies completed.", "pop3.messages_retrieved")                                \
    X(messages_deleted, COUNTER, NONE, "", "pop3gw_messages_deleted_total",                        \
      "Deletions committed by a successful quit.", "pop3.messages_deleted")                        \
    X(quit_failures, COUNTER, NONE, "", "pop3gw_quit_failures_total",                              \
      "QUITs whose deletions the backend did not commit.", "pop3.quit_failures")                   \
    X(size_mismatches, COUNTER, NONE, "", "pop3gw_size_mismatches_total",                          \
      "Streamed messages whose length differed from the listed size.", "pop3.size_mismatches")     \
    X(listings_truncated, COUNTER, NONE, "", "pop3gw_listings_truncated_total",                    \
      "Listings cut to max_messages.", "pop3.listings_truncated")                                  \
    X(spool_bytes_total, COUNTER, NONE, "", "pop3gw_spool_written_bytes_total",                    \
      "Octets of converted messages written to spool files for slow clients.",                     \
      "spool.written_bytes")                                                                       \
    X(spool_files, GAUGE, NONE, "", "pop3gw_spool_files", "Spool files open now.", "spool.files")  \
    X(spool_bytes, GAUGE, NONE, "", "pop3gw_spool_bytes", "Octets held in open spool files now.",  \
      "spool.bytes")                                                                               \
    X(spool_fallbacks, COUNTER, NONE, "", "pop3gw_spool_fallbacks_total",                          \
      "Streams that paused their transfer because spooling was off or impossible "                 \
      "(spool_max reached, disk full, no file).", "spool.fallbacks")                               \
    X(bytes_in, COUNTER, NONE, "", "pop3gw_received_bytes_total",                                  \
      "POP3 octets read from clients.", "bytes.in")                                                \
    X(bytes_out, COUNTER, NONE, "", "pop3gw_sent_bytes_total",                                     \
      "POP3 octets written to clients.", "bytes.out")                                              \
    X(webhook_calls, COUNTER, EVENT, "", "pop3gw_webhook_calls_total",                             \
      "Webhook calls finished, by event.", "webhooks.events.{event}.calls")                        \
    X(webhook_errors, COUNTER, EVENT_REASON, "", "pop3gw_webhook_errors_total",                    \
      "Webhook calls that failed, by event and reason ({reason}).",                                \
      "webhooks.events.{event}.errors_by_reason.{reason}")                                         \
    X(webhook_retries, COUNTER, EVENT, "", "pop3gw_webhook_retries_total",                         \
      "Webhook attempts repeated after a transport failure, by event.",                            \
      "webhooks.events.{event}.retries")                                                           \
    X(webhook_inflight, GAUGE, NONE, "", "pop3gw_webhook_inflight",                                \
      "Webhook calls running or queued now.", "webhooks.inflight")                                 \
    X(webhook_inflight_limit, VIEW, NONE, "", "pop3gw_webhook_inflight_limit",                     \
      "Webhook calls that may run at once: the lower of max_inflight and backend_pool, times "     \
      "workers.", "webhooks.inflight_limit")                                                       \
    X(webhook_latency, HISTOGRAM, EVENT, "", "pop3gw_webhook_duration_seconds",                    \
      "Seconds from a webhook call's start to the end of its reply (retrieve: the whole "          \
      "transfer), retries included, by event.", "webhooks.events.{event}.latency")                 \
    X(webhook_first_byte, HISTOGRAM, NONE, "", "pop3gw_webhook_retrieve_first_byte_seconds",       \
      "Seconds from a retrieve call's start to its status and headers, retries included.",         \
      "webhooks.retrieve_first_byte")                                                              \
    X(backend_last_ok, TIME, NONE, "", "pop3gw_backend_last_success_timestamp_seconds",            \
      "Unix time of the last webhook call that succeeded (0 = never).", "backend.last_ok")         \
    X(backend_last_error, TIME, NONE, "", "pop3gw_backend_last_error_timestamp_seconds",           \
      "Unix time of the last webhook call that failed (0 = never).", "backend.last_error")         \
    X(backend_failing, VIEW, NONE, "", "pop3gw_backend_failing",                                   \
      "1 when the last webhook failure is newer than the last success.", "")
/* clang-format on */

/* The kinds and dimensions of the table's rows. */
enum metrics_kind { MK_COUNTER, MK_GAUGE, MK_TIME, MK_HISTOGRAM, MK_VIEW };
enum metrics_dim { MD_NONE, MD_EVENT, MD_METHOD, MD_EVENT_REASON, MD_VERSION };

/* A dimension as an array suffix of its field, and its number of series. */
#define METRICS_DIM_NONE
#define METRICS_DIM_EVENT [METRICS_EVENTS]
#define METRICS_DIM_METHOD [METRICS_METHODS]
#define METRICS_DIM_EVENT_REASON [METRICS_EVENTS][MWE_N]
#define METRICS_N_NONE 1
#define METRICS_N_EVENT METRICS_EVENTS
#define METRICS_N_METHOD METRICS_METHODS
#define METRICS_N_EVENT_REASON (METRICS_EVENTS * MWE_N)
#define METRICS_N_VERSION 1

/* The rows, numbered: MR_field. */
enum metrics_row_id {
#define X(field, kind, dim, label, name, help, json) MR_##field,
    METRICS_TABLE(X)
#undef X
        METRICS_N_ROWS
};

/* The fields, by kind: what the workers update, and its plain copy. */
#define METRICS_ATOMIC_COUNTER(f, dim) atomic_ulong f METRICS_DIM_##dim;
#define METRICS_ATOMIC_GAUGE(f, dim) atomic_long f METRICS_DIM_##dim;
#define METRICS_ATOMIC_TIME(f, dim) atomic_long f METRICS_DIM_##dim;
#define METRICS_ATOMIC_HISTOGRAM(f, dim) struct metrics_hist f METRICS_DIM_##dim;
#define METRICS_ATOMIC_VIEW(f, dim)
#define METRICS_PLAIN_COUNTER(f, dim) unsigned long f METRICS_DIM_##dim;
#define METRICS_PLAIN_GAUGE(f, dim) long f METRICS_DIM_##dim;
#define METRICS_PLAIN_TIME(f, dim) long f METRICS_DIM_##dim;
#define METRICS_PLAIN_HISTOGRAM(f, dim) struct hist_snap f METRICS_DIM_##dim;
#define METRICS_PLAIN_VIEW(f, dim)

struct metrics {
#define X(field, kind, dim, label, name, help, json) METRICS_ATOMIC_##kind(field, dim)
    METRICS_TABLE(X)
#undef X
    /* The backend's two times in milliseconds, set by metrics_backend_result()
     * with backend_last_ok and backend_last_error; 0 = not recorded. They
     * order a failure and a success that fall in the same second (the admin
     * endpoint's backend state). */
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
#define X(field, kind, dim, label, name, help, json) METRICS_PLAIN_##kind(field, dim)
    METRICS_TABLE(X)
#undef X
    long long backend_last_ok_ms, backend_last_error_ms; /* 0 = not recorded */
};

/* One row of the table, for the renderings. */
struct metrics_row {
    const char *field; /* the C name */
    enum metrics_kind kind;
    enum metrics_dim dim;
    size_t n;          /* series: the product of the dimension's sizes */
    const char *label; /* fixed label, or "" */
    const char *name;  /* Prometheus family */
    const char *help;  /* HELP text; "" on a family's later rows */
    const char *json;  /* path in /status, or "" */
    size_t live, snap; /* offsets of the field in struct metrics and struct metrics_snap */
};

extern const struct metrics_row metrics_rows[METRICS_N_ROWS];

/*
 * The labels of series i (0 .. n-1) of a row of dimension `dim`: up to two,
 * written to names[] and values[]; returns how many. MD_VERSION's value is
 * NULL: the caller knows the version.
 */
int metrics_dim_labels(enum metrics_dim dim, size_t i, const char *names[2], const char *values[2]);

/* The values a dimension's label ("event", "method", "reason") takes, and
 * how many (*n); NULL for any other label. */
const char *const *metrics_label_values(const char *label, size_t *n);

/* Copies the global metrics (relaxed loads; gauges below zero read as 0). */
void metrics_snap_take(struct metrics_snap *s);

/* Records one observation (seconds) in a histogram. */
void metrics_observe(struct metrics_hist *h, double seconds);
/* Records that a webhook call succeeded (ok) or failed: sets backend_last_ok
 * or backend_last_error (seconds) and its _ms twin. */
void metrics_backend_result(int ok);

#endif
