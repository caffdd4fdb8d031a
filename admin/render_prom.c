/*
 * render_prom: GET /metrics in the Prometheus text exposition format 0.0.4.
 *
 * Every family gets a HELP and a TYPE line, counters end in `_total`, every
 * name starts with `pop3gw_`, and every series of a fixed label set is
 * written even while it is zero (so that rate() works from the first
 * scrape). The output passes `promtool check metrics`; the metric names are
 * part of the admin interface (docs/admin.md): add, do not rename.
 */
#include "admin/render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

/* The text being built, and whether memory ran out on the way. */
struct prom {
    struct buf b;
    int failed;
};

static void out(struct prom *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(struct prom *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || buf_add(&p->b, line, (size_t)n) < 0)
        p->failed = 1;
}

/* The HELP and TYPE lines of a family. */
static void family(struct prom *p, const char *name, const char *type, const char *help)
{
    out(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with one unlabelled sample. */
static void single(struct prom *p, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
    family(p, name, type, help);
    out(p, "%s %llu\n", name, v);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(char *dst, size_t cap, const char *v)
{
    size_t n = 0;

    for (; *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            dst[n++] = '\\';
            dst[n++] = *v == '\n' ? 'n' : *v;
        } else {
            dst[n++] = *v;
        }
    }
    dst[n] = 0;
}

static void render_process(struct prom *p, const struct metrics_snap *s, const struct adm_view *v)
{
    char version[128];

    label_value(version, sizeof version, v->version);
    family(p, "pop3gw_info", "gauge", "Build information; always 1.");
    out(p, "pop3gw_info{version=\"%s\"} 1\n", version);
    single(p, "pop3gw_up", "gauge", "1 while the process serves its admin endpoint.", 1);
    single(p, "pop3gw_start_time_seconds", "gauge", "Unix time the process started.",
           (unsigned long long)s->started);
    single(p, "pop3gw_workers", "gauge", "Event-loop worker threads.",
           (unsigned long long)v->workers);
    single(p, "pop3gw_draining", "gauge", "1 after SIGTERM, while sessions finish.",
           (unsigned long long)(v->draining != 0));
}

static void render_connections(struct prom *p, const struct metrics_snap *s,
                               const struct adm_view *v)
{
    single(p, "pop3gw_connections_total", "counter", "Client connections accepted.",
           s->connections_total);
    single(p, "pop3gw_connections_active", "gauge", "Client connections open now.",
           (unsigned long long)s->connections_active);
    single(p, "pop3gw_connections_limit", "gauge", "Configured max_connections (0 = no limit).",
           (unsigned long long)v->max_connections);
    single(p, "pop3gw_connections_refused_total", "counter",
           "Client connections refused by max_connections or max_connections_per_ip.",
           s->connections_refused);
    single(p, "pop3gw_tls_handshakes_total", "counter",
           "TLS handshakes completed (implicit TLS and STLS).", s->tls_handshakes);
    single(p, "pop3gw_tls_handshake_failures_total", "counter", "TLS handshakes that failed.",
           s->tls_failures);
    single(p, "pop3gw_proxy_rejected_total", "counter",
           "Connections closed for a bad, missing or untrusted PROXY header.", s->proxy_rejected);
    family(p, "pop3gw_sessions", "gauge", "POP3 sessions now, by RFC 1939 state.");
    out(p, "pop3gw_sessions{state=\"authorization\"} %ld\n", s->sessions_authorization);
    out(p, "pop3gw_sessions{state=\"transaction\"} %ld\n", s->sessions_transaction);
}

static void render_pop3(struct prom *p, const struct metrics_snap *s)
{
    int m;

    single(p, "pop3gw_commands_total", "counter", "POP3 command lines handled.", s->commands_total);
    single(p, "pop3gw_bad_commands_total", "counter",
           "Unknown, out-of-state, malformed or too long command lines.", s->bad_commands);
    family(p, "pop3gw_logins_total", "counter",
           "Login attempts the backend decided, by method and result (ok, failed).");
    for (m = 0; m < METRICS_METHODS; m++) {
        out(p, "pop3gw_logins_total{method=\"%s\",result=\"ok\"} %lu\n", metrics_method_names[m],
            s->logins_ok[m]);
        out(p, "pop3gw_logins_total{method=\"%s\",result=\"failed\"} %lu\n",
            metrics_method_names[m], s->logins_failed[m]);
    }
    single(p, "pop3gw_session_timeouts_total", "counter",
           "Sessions closed by login_timeout or idle_timeout.", s->timeouts);
    single(p, "pop3gw_send_timeouts_total", "counter",
           "Sessions closed because the client stopped reading (send_timeout).", s->send_timeouts);
    single(p, "pop3gw_messages_retrieved_total", "counter", "RETR and TOP replies completed.",
           s->messages_retrieved);
    single(p, "pop3gw_messages_deleted_total", "counter",
           "Deletions committed by a successful quit.", s->messages_deleted);
    single(p, "pop3gw_quit_failures_total", "counter",
           "QUITs whose deletions the backend did not commit.", s->quit_failures);
    single(p, "pop3gw_size_mismatches_total", "counter",
           "Streamed messages whose length differed from the listed size.", s->size_mismatches);
    single(p, "pop3gw_listings_truncated_total", "counter", "Listings cut to max_messages.",
           s->listings_truncated);
    single(p, "pop3gw_received_bytes_total", "counter", "POP3 octets read from clients.",
           s->bytes_in);
    single(p, "pop3gw_sent_bytes_total", "counter", "POP3 octets written to clients.",
           s->bytes_out);
}

static void render_webhook_counts(struct prom *p, const struct metrics_snap *s,
                                  const struct adm_view *v)
{
    int e, r;

    family(p, "pop3gw_webhook_calls_total", "counter", "Webhook calls finished, by event.");
    for (e = 0; e < METRICS_EVENTS; e++)
        out(p, "pop3gw_webhook_calls_total{event=\"%s\"} %lu\n", metrics_event_names[e],
            s->webhook_calls[e]);
    family(p, "pop3gw_webhook_errors_total", "counter",
           "Webhook calls that failed, by event and reason "
           "(timeout, connect, status, body, broken).");
    for (e = 0; e < METRICS_EVENTS; e++)
        for (r = 0; r < MWE_N; r++)
            out(p, "pop3gw_webhook_errors_total{event=\"%s\",reason=\"%s\"} %lu\n",
                metrics_event_names[e], metrics_wh_error_names[r], s->webhook_errors[e][r]);
    family(p, "pop3gw_webhook_retries_total", "counter",
           "Webhook attempts repeated after a transport failure, by event.");
    for (e = 0; e < METRICS_EVENTS; e++)
        out(p, "pop3gw_webhook_retries_total{event=\"%s\"} %lu\n", metrics_event_names[e],
            s->webhook_retries[e]);
    single(p, "pop3gw_webhook_inflight", "gauge", "Webhook calls running or queued now.",
           (unsigned long long)s->webhook_inflight);
    single(p, "pop3gw_webhook_inflight_limit", "gauge",
           "Webhook calls that may run at once: the lower of max_inflight and backend_pool, times "
           "workers.",
           (unsigned long long)v->inflight_limit);
}

static void render_histogram(struct prom *p, const char *event, const struct hist_snap *h)
{
    const char *n = "pop3gw_webhook_duration_seconds";
    unsigned long cum = 0;
    int i;

    for (i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->bucket[i];
        out(p, "%s_bucket{event=\"%s\",le=\"%g\"} %lu\n", n, event, metrics_bucket_bounds[i], cum);
    }
    out(p, "%s_bucket{event=\"%s\",le=\"+Inf\"} %lu\n", n, event, h->count);
    out(p, "%s_sum{event=\"%s\"} %.6f\n", n, event, h->sum);
    out(p, "%s_count{event=\"%s\"} %lu\n", n, event, h->count);
}

static void render_backend(struct prom *p, const struct metrics_snap *s)
{
    single(p, "pop3gw_backend_last_success_timestamp_seconds", "gauge",
           "Unix time of the last webhook call that succeeded (0 = never).",
           (unsigned long long)s->backend_last_ok);
    single(p, "pop3gw_backend_last_error_timestamp_seconds", "gauge",
           "Unix time of the last webhook call that failed (0 = never).",
           (unsigned long long)s->backend_last_error);
    single(p, "pop3gw_backend_failing", "gauge",
           "1 when the last webhook failure is newer than the last success.",
           strcmp(metrics_snap_backend_state(s), "failing") == 0);
}

char *render_prometheus(const struct adm_snapshot *snap)
{
    const struct metrics_snap *s = &snap->m;
    const struct adm_view *v = &snap->v;
    struct prom p = {{NULL, 0, 0}, 0};
    int e;

    render_process(&p, s, v);
    render_connections(&p, s, v);
    render_pop3(&p, s);
    render_webhook_counts(&p, s, v);
    family(&p, "pop3gw_webhook_duration_seconds", "histogram",
           "Seconds from a webhook call's start to its reply (retrieve: to the headers), "
           "retries included, by event.");
    for (e = 0; e < METRICS_EVENTS; e++)
        render_histogram(&p, metrics_event_names[e], &s->latency[e]);
    render_backend(&p, s);
    if (!p.failed && buf_add(&p.b, "", 1) < 0) /* the NUL */
        p.failed = 1;
    if (p.failed) {
        buf_free(&p.b);
        return NULL;
    }
    return p.b.data;
}
