/*
 * render_json: the JSON documents of GET /status and GET /sessions, built
 * with jansson from a metrics snapshot and a worker query's copies. The
 * field names are part of the admin interface (docs/admin.md) and the
 * dashboard reads them: add fields, do not rename them.
 */
#include "admin/render.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Latencies are shown with 9 significant digits (microseconds and below). */
#define RENDER_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

/* A JSON builder that remembers whether any allocation failed. */
struct jb {
    int failed;
};

static void put(struct jb *j, json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v) < 0)
        j->failed = 1;
}

static void push(struct jb *j, json_t *arr, json_t *v)
{
    if (!v || json_array_append_new(arr, v) < 0)
        j->failed = 1;
}

static json_t *jint(unsigned long long v)
{
    return json_integer((json_int_t)v);
}

/* A unix time, or null for "never". */
static json_t *jtime(long t)
{
    return t > 0 ? json_integer(t) : json_null();
}

/* A quantile estimate, or null when the histogram is empty. */
static json_t *jquantile(const struct hist_snap *h, double q)
{
    double v = hist_snap_quantile(h, q);

    return v < 0 ? json_null() : json_real(v);
}

/* A string that may not be UTF-8 (a user name as typed): kept when valid,
 * else every byte outside printable ASCII becomes '?'. */
static json_t *jstr_lossy(const char *p, size_t n)
{
    json_t *v = json_stringn(p, n);
    char tmp[256];
    size_t i;

    if (v)
        return v;
    if (n > sizeof tmp)
        n = sizeof tmp;
    for (i = 0; i < n; i++)
        tmp[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
    return json_stringn(tmp, n);
}

/* Dumps and frees a document; NULL when it is incomplete. */
static char *finish(struct jb *j, json_t *root)
{
    char *out = NULL;

    if (root && !j->failed)
        out = json_dumps(root, RENDER_JSON_FLAGS);
    json_decref(root);
    return out;
}

/* ---- /status ----------------------------------------------------------- */

static json_t *status_listeners(struct jb *j, const struct adm_view *v)
{
    json_t *arr = json_array();
    int k;

    for (k = 0; arr && k < v->n_listeners; k++) {
        json_t *o = json_object();
        put(j, o, "host", json_string(v->listeners[k].host));
        put(j, o, "port", json_integer(v->listeners[k].port));
        put(j, o, "tls", json_boolean(v->listeners[k].tls));
        push(j, arr, o);
    }
    return arr;
}

static json_t *status_connections(struct jb *j, const struct metrics_snap *s,
                                  const struct adm_view *v)
{
    json_t *o = json_object();

    put(j, o, "active", jint((unsigned long long)s->connections_active));
    put(j, o, "total", jint(s->connections_total));
    put(j, o, "refused", jint(s->connections_refused));
    put(j, o, "limit", json_integer(v->max_connections));
    return o;
}

static json_t *status_sessions(struct jb *j, const struct metrics_snap *s)
{
    json_t *o = json_object();

    put(j, o, "authorization", jint((unsigned long long)s->sessions_authorization));
    put(j, o, "transaction", jint((unsigned long long)s->sessions_transaction));
    put(j, o, "total",
        jint((unsigned long long)(s->sessions_authorization + s->sessions_transaction)));
    return o;
}

static json_t *status_logins(struct jb *j, const struct metrics_snap *s)
{
    json_t *o = json_object(), *ok = json_object(), *failed = json_object();
    unsigned long n_ok = 0, n_failed = 0;
    int m;

    for (m = 0; m < METRICS_METHODS; m++) {
        put(j, ok, metrics_method_names[m], jint(s->logins_ok[m]));
        put(j, failed, metrics_method_names[m], jint(s->logins_failed[m]));
        n_ok += s->logins_ok[m];
        n_failed += s->logins_failed[m];
    }
    put(j, o, "ok", ok);
    put(j, o, "failed", failed);
    put(j, o, "ok_total", jint(n_ok));
    put(j, o, "failed_total", jint(n_failed));
    return o;
}

static json_t *status_pop3(struct jb *j, const struct metrics_snap *s)
{
    json_t *o = json_object();

    put(j, o, "commands", jint(s->commands_total));
    put(j, o, "bad_commands", jint(s->bad_commands));
    put(j, o, "messages_retrieved", jint(s->messages_retrieved));
    put(j, o, "messages_deleted", jint(s->messages_deleted));
    put(j, o, "quit_failures", jint(s->quit_failures));
    put(j, o, "size_mismatches", jint(s->size_mismatches));
    put(j, o, "listings_truncated", jint(s->listings_truncated));
    put(j, o, "timeouts", jint(s->timeouts));
    put(j, o, "send_timeouts", jint(s->send_timeouts));
    return o;
}

static json_t *status_latency(struct jb *j, const struct hist_snap *h)
{
    json_t *o = json_object(), *b = json_array();
    int i;

    put(j, o, "count", jint(h->count));
    put(j, o, "sum_seconds", json_real(h->sum));
    put(j, o, "p50", jquantile(h, 0.50));
    put(j, o, "p90", jquantile(h, 0.90));
    put(j, o, "p99", jquantile(h, 0.99));
    for (i = 0; i <= METRICS_BUCKETS; i++)
        push(j, b, jint(h->bucket[i]));
    put(j, o, "buckets", b);
    return o;
}

static json_t *status_event(struct jb *j, const struct metrics_snap *s, int e)
{
    json_t *o = json_object(), *why = json_object();
    int r;

    for (r = 0; r < MWE_N; r++)
        put(j, why, metrics_wh_error_names[r], jint(s->webhook_errors[e][r]));
    put(j, o, "calls", jint(s->webhook_calls[e]));
    put(j, o, "errors", jint(metrics_snap_errors(s, e)));
    put(j, o, "errors_by_reason", why);
    put(j, o, "retries", jint(s->webhook_retries[e]));
    put(j, o, "latency", status_latency(j, &s->latency[e]));
    return o;
}

static json_t *status_webhooks(struct jb *j, const struct metrics_snap *s, const struct adm_view *v)
{
    json_t *o = json_object(), *events = json_object(), *bounds = json_array();
    unsigned long calls = 0, errors = 0, retries = 0;
    struct hist_snap all = {{0}, 0, 0};
    int e, i;

    for (e = 0; e < METRICS_EVENTS; e++) {
        put(j, events, metrics_event_names[e], status_event(j, s, e));
        calls += s->webhook_calls[e];
        errors += metrics_snap_errors(s, e);
        retries += s->webhook_retries[e];
        hist_snap_merge(&all, &s->latency[e]);
    }
    for (i = 0; i < METRICS_BUCKETS; i++)
        push(j, bounds, json_real(metrics_bucket_bounds[i]));
    put(j, o, "inflight", jint((unsigned long long)s->webhook_inflight));
    put(j, o, "inflight_limit", json_integer(v->inflight_limit));
    put(j, o, "calls", jint(calls));
    put(j, o, "errors", jint(errors));
    put(j, o, "retries", jint(retries));
    put(j, o, "latency", status_latency(j, &all));
    put(j, o, "bucket_bounds", bounds);
    put(j, o, "events", events);
    return o;
}

static json_t *status_backend(struct jb *j, const struct metrics_snap *s)
{
    json_t *o = json_object();

    put(j, o, "state", json_string(metrics_snap_backend_state(s)));
    put(j, o, "last_ok", jtime(s->backend_last_ok));
    put(j, o, "last_error", jtime(s->backend_last_error));
    return o;
}

static json_t *status_pair(struct jb *j, const char *k1, unsigned long v1, const char *k2,
                           unsigned long v2)
{
    json_t *o = json_object();

    put(j, o, k1, jint(v1));
    put(j, o, k2, jint(v2));
    return o;
}

char *render_status_json(const struct adm_snapshot *snap)
{
    const struct metrics_snap *s = &snap->m;
    const struct adm_view *v = &snap->v;
    struct jb j = {0};
    json_t *root = json_object();
    long long up = s->started > 0 && v->now > s->started ? v->now - s->started : 0;

    put(&j, root, "version", json_string(v->version));
    put(&j, root, "now", json_integer(v->now));
    put(&j, root, "started", jtime(s->started));
    put(&j, root, "uptime_seconds", json_integer(up));
    put(&j, root, "workers", json_integer(v->workers));
    put(&j, root, "draining", json_boolean(v->draining));
    put(&j, root, "listeners", status_listeners(&j, v));
    put(&j, root, "connections", status_connections(&j, s, v));
    put(&j, root, "sessions", status_sessions(&j, s));
    put(&j, root, "logins", status_logins(&j, s));
    put(&j, root, "pop3", status_pop3(&j, s));
    put(&j, root, "bytes", status_pair(&j, "in", s->bytes_in, "out", s->bytes_out));
    put(&j, root, "tls",
        status_pair(&j, "handshakes", s->tls_handshakes, "failures", s->tls_failures));
    put(&j, root, "proxy_rejected", jint(s->proxy_rejected));
    put(&j, root, "webhooks", status_webhooks(&j, s, v));
    put(&j, root, "backend", status_backend(&j, s));
    return finish(&j, root);
}

/* ---- /sessions --------------------------------------------------------- */

static json_t *session_json(struct jb *j, const struct adm_session *si, long long now)
{
    json_t *o = json_object(), *client = json_object();

    put(j, client, "ip", json_string(si->ip));
    put(j, client, "port", json_integer(si->port));
    put(j, client, "tls", json_boolean(si->tls));
    put(j, o, "id", json_string(si->id));
    put(j, o, "user",
        si->user[0] ? jstr_lossy(si->user, strnlen(si->user, sizeof si->user)) : json_null());
    put(j, o, "client", client);
    put(j, o, "state", json_string(si->state));
    put(j, o, "since", json_integer(si->since));
    put(j, o, "age_seconds", json_integer(now > si->since ? now - si->since : 0));
    put(j, o, "bytes_in", jint(si->bytes_in));
    put(j, o, "bytes_out", jint(si->bytes_out));
    put(j, o, "command", si->command[0] ? json_string(si->command) : json_null());
    put(j, o, "worker", json_integer(si->worker));
    return o;
}

char *render_sessions_json(const struct sessions_view *sv, long long now)
{
    struct jb j = {0};
    json_t *root = json_object(), *arr = json_array();
    size_t i;

    for (i = 0; arr && i < sv->n; i++)
        push(&j, arr, session_json(&j, &sv->list[i], now));
    put(&j, root, "now", json_integer(now));
    put(&j, root, "workers", json_integer(sv->workers));
    put(&j, root, "answered", json_integer(sv->answered));
    put(&j, root, "complete", json_boolean(sv->answered >= sv->workers));
    put(&j, root, "count", json_integer((json_int_t)sv->n));
    put(&j, root, "sessions", arr);
    return finish(&j, root);
}
