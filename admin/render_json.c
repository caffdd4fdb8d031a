/*
 * render_json: the JSON documents of GET /status and GET /sessions, built
 * with jansson from a metrics snapshot and a worker query's copies. The
 * field names are part of the admin interface (docs/admin.md) and the
 * dashboard reads them: add fields, do not rename them.
 *
 * /status puts every row of lib/metrics.h's table at the path the row names;
 * what is drawn from several rows (totals, quantiles of all events together,
 * the backend's state) and what is not a metric (version, listeners) is
 * written here.
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

/* A latency object: count, sum, quantile estimates and the buckets. */
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

/* The object at a dotted path under root ("webhooks.events.list"), made
 * where missing. NULL when memory runs out or a member on the way is not an
 * object. */
static json_t *status_obj(struct jb *j, json_t *root, const char *path)
{
    json_t *o = root;
    char key[128];

    while (o && *path) {
        size_t n = strcspn(path, ".");
        json_t *next;
        if (n >= sizeof key)
            n = sizeof key - 1;
        memcpy(key, path, n);
        key[n] = '\0';
        path += path[n] == '.' ? n + 1 : n;
        next = json_object_get(o, key);
        if (!next) {
            next = json_object();
            put(j, o, key, next);
        }
        o = json_is_object(next) ? next : NULL;
    }
    if (!o)
        j->failed = 1;
    return o;
}

/* Sets the member at a dotted path ("pop3.commands"), making the objects
 * on the way. */
static void status_put(struct jb *j, json_t *root, const char *path, json_t *v)
{
    const char *dot = strrchr(path, '.');
    char parent[256];
    json_t *o = root;

    if (dot) {
        snprintf(parent, sizeof parent, "%.*s", (int)(dot - path), path);
        o = status_obj(j, root, parent);
    }
    if (o)
        put(j, o, dot ? dot + 1 : path, v);
    else
        json_decref(v);
}

/* Row r's path for series i: each {LABEL} replaced by the label's value. */
static void status_path(char *dst, size_t cap, const struct metrics_row *r, size_t i)
{
    const char *names[2], *values[2], *p = r->json, *close;
    int count = metrics_dim_labels(r->dim, i, names, values), k;
    size_t n = 0;

    while (*p && n + 1 < cap) {
        const char *value = NULL;
        if (*p == '{' && (close = strchr(p, '}'))) {
            for (k = 0; k < count; k++)
                if (strlen(names[k]) == (size_t)(close - p - 1) &&
                    strncmp(names[k], p + 1, (size_t)(close - p - 1)) == 0)
                    value = values[k];
        }
        if (!value) {
            dst[n++] = *p++;
            continue;
        }
        n += (size_t)snprintf(dst + n, cap - n, "%s", value);
        if (n >= cap)
            n = cap - 1;
        p = close + 1;
    }
    dst[n] = '\0';
}

/* Series i of row r as JSON. */
static json_t *status_value(struct jb *j, const struct adm_snapshot *snap,
                            const struct metrics_row *r, size_t i)
{
    switch (r->kind) {
    case MK_HISTOGRAM:
        return status_latency(j, metrics_snap_hist(&snap->m, r, i));
    case MK_TIME:
        return jtime((long)metrics_snap_value(snap, r, i));
    case MK_COUNTER:
    case MK_GAUGE:
    case MK_VIEW:
    default:
        return jint(metrics_snap_value(snap, r, i));
    }
}

/* Every row of the table that /status shows, at its path. */
static void status_rows(struct jb *j, json_t *root, const struct adm_snapshot *snap)
{
    char path[256];
    size_t r, i;

    for (r = 0; r < METRICS_N_ROWS; r++) {
        const struct metrics_row *row = &metrics_rows[r];
        if (!*row->json)
            continue;
        for (i = 0; i < row->n; i++) {
            status_path(path, sizeof path, row, i);
            status_put(j, root, path, status_value(j, snap, row, i));
        }
    }
}

/* ---- /status: the fields drawn from the rows ---------------------------- */

static void status_sums(struct jb *j, json_t *root, const struct metrics_snap *s)
{
    unsigned long n_ok = 0, n_failed = 0;
    int m;

    for (m = 0; m < METRICS_METHODS; m++) {
        n_ok += s->logins_ok[m];
        n_failed += s->logins_failed[m];
    }
    status_put(j, root, "sessions.total",
               jint((unsigned long long)(s->sessions_authorization + s->sessions_transaction)));
    status_put(j, root, "logins.ok_total", jint(n_ok));
    status_put(j, root, "logins.failed_total", jint(n_failed));
}

static void status_webhooks(struct jb *j, json_t *root, const struct metrics_snap *s)
{
    json_t *o = status_obj(j, root, "webhooks"), *bounds = json_array();
    json_t *events = status_obj(j, root, "webhooks.events");
    unsigned long calls = 0, errors = 0, retries = 0;
    struct hist_snap all = {{0}, 0, 0};
    int e, i;

    for (e = 0; e < METRICS_EVENTS; e++) {
        json_t *ev = events ? json_object_get(events, metrics_event_names[e]) : NULL;
        if (ev)
            put(j, ev, "errors", jint(metrics_snap_errors(s, e)));
        calls += s->webhook_calls[e];
        errors += metrics_snap_errors(s, e);
        retries += s->webhook_retries[e];
        hist_snap_merge(&all, &s->webhook_latency[e]);
    }
    for (i = 0; i < METRICS_BUCKETS; i++)
        push(j, bounds, json_real(metrics_bucket_bounds[i]));
    if (!o) {
        json_decref(bounds);
        return;
    }
    put(j, o, "calls", jint(calls));
    put(j, o, "errors", jint(errors));
    put(j, o, "retries", jint(retries));
    put(j, o, "latency", status_latency(j, &all));
    put(j, o, "bucket_bounds", bounds);
}

/* The recent failed webhook calls, newest first: what failed and how, never
 * a body, a user or an address (lib/recent.h). */
static json_t *status_failures(struct jb *j, const struct adm_snapshot *snap)
{
    json_t *arr = json_array();
    size_t i;

    for (i = 0; arr && i < snap->n_failures; i++) {
        const struct recent_failure *f = &snap->failures[i];
        json_t *o = json_object();
        put(j, o, "time", json_integer(f->at_ms / 1000));
        put(j, o, "event",
            json_string(f->event >= 0 && f->event < METRICS_EVENTS ? metrics_event_names[f->event]
                                                                   : "?"));
        put(j, o, "http_status", f->http_status > 0 ? json_integer(f->http_status) : json_null());
        put(j, o, "transport_error", f->transport[0] ? json_string(f->transport) : json_null());
        put(j, o, "duration_seconds", json_real(f->duration > 0 ? f->duration : 0));
        put(j, o, "session", f->session[0] ? json_string(f->session) : json_null());
        put(j, o, "reason", json_string(f->reason));
        push(j, arr, o);
    }
    return arr;
}

char *render_status_json(const struct adm_snapshot *snap)
{
    const struct metrics_snap *s = &snap->m;
    const struct adm_view *v = &snap->v;
    struct jb j = {0};
    json_t *root = json_object();
    long long up = s->started > 0 && v->now > s->started ? v->now - s->started : 0;

    if (!root)
        return NULL;
    put(&j, root, "version", json_string(v->version));
    put(&j, root, "now", json_integer(v->now));
    put(&j, root, "uptime_seconds", json_integer(up));
    put(&j, root, "draining", json_boolean(v->draining));
    put(&j, root, "listeners", status_listeners(&j, v));
    status_rows(&j, root, snap);
    status_sums(&j, root, s);
    status_webhooks(&j, root, s);
    status_put(&j, root, "backend.state", json_string(metrics_snap_backend_state(s)));
    put(&j, root, "recent_failures", status_failures(&j, snap));
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
    put(j, o, "activity", json_string(si->activity));
    if (si->spooling) {
        json_t *sp = json_object();
        put(j, sp, "bytes", jint(si->spool_bytes));
        put(j, sp, "sent", jint(si->spool_sent));
        put(j, o, "spool", sp);
    } else {
        put(j, o, "spool", json_null());
    }
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

/* ---- /history ---------------------------------------------------------- */

/* A quantile of the calls between two samples, or null when there were none. */
static json_t *history_quantile(const struct adm_sample *prev, const struct adm_sample *x, double q)
{
    struct hist_snap h;
    int i;

    if (!prev)
        return json_null();
    memset(&h, 0, sizeof h);
    for (i = 0; i <= METRICS_BUCKETS; i++) {
        h.bucket[i] = x->latency[i] >= prev->latency[i] ? x->latency[i] - prev->latency[i] : 0;
        h.count += h.bucket[i];
    }
    return jquantile(&h, q);
}

static json_t *history_sample(struct jb *j, const struct adm_sample *prev,
                              const struct adm_sample *x)
{
    json_t *o = json_object(), *b = json_array();
    int i;

    put(j, o, "t_ms", json_integer(x->t_ms));
    put(j, o, "connections_active", jint(x->connections_active));
    put(j, o, "connections_total", jint(x->connections_total));
    put(j, o, "sessions_authorization", jint(x->sessions_authorization));
    put(j, o, "sessions_transaction", jint(x->sessions_transaction));
    put(j, o, "commands", jint(x->commands));
    put(j, o, "logins", jint(x->logins));
    put(j, o, "webhook_calls", jint(x->webhook_calls));
    put(j, o, "webhook_errors", jint(x->webhook_errors));
    put(j, o, "webhook_inflight", jint(x->webhook_inflight));
    put(j, o, "bytes_in", jint(x->bytes_in));
    put(j, o, "bytes_out", jint(x->bytes_out));
    for (i = 0; i <= METRICS_BUCKETS; i++)
        push(j, b, jint(x->latency[i]));
    put(j, o, "latency_buckets", b);
    put(j, o, "latency_p50", history_quantile(prev, x, 0.50));
    put(j, o, "latency_p99", history_quantile(prev, x, 0.99));
    return o;
}

char *render_history_json(const struct adm_sample *samples, size_t n, long long now_ms)
{
    struct jb j = {0};
    json_t *root = json_object(), *arr = json_array(), *bounds = json_array();
    size_t i;

    for (i = 0; i < METRICS_BUCKETS; i++)
        push(&j, bounds, json_real(metrics_bucket_bounds[i]));
    for (i = 0; arr && i < n; i++)
        push(&j, arr, history_sample(&j, i ? &samples[i - 1] : NULL, &samples[i]));
    put(&j, root, "now_ms", json_integer(now_ms));
    put(&j, root, "interval_seconds", json_integer(HISTORY_INTERVAL_S));
    put(&j, root, "keep_seconds", json_integer(HISTORY_KEEP_S));
    put(&j, root, "bucket_bounds", bounds);
    put(&j, root, "samples", arr);
    return finish(&j, root);
}
