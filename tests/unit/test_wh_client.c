/*
 * Unit tests for webhook/wh_client: webhook calls over HTTP on a libevent
 * loop, against a libmicrohttpd server inside this process.
 *
 * Every test gets a fresh event_base, a fresh server on 127.0.0.1 port 0 and
 * a fresh client. The server runs a thread per connection (a slow or silent
 * request holds only its own connection), answers each path as the test
 * scripted it (status, type, body, a delay before the headers, no answer at
 * all, a closed connection instead of an answer, a streamed body that can
 * stall or break part-way), records every request and counts the TCP
 * connections it accepts. The client runs on the test thread's event_base;
 * a test drives the loop until what it waits for has happened or a deadline
 * has passed (AWAIT), and never sleeps to let something happen. Only the
 * public interface of webhook/wh_client.h is used.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "webhook/wh_client.h"
#include "webhook/wh_sign.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define TOKEN "t0k3n-for-tests"
#define LIST_BODY "{\"messages\":[]}"
#define MIB (1024 * 1024)

/* ---- the scripted server ------------------------------------------------ */

#define SRV_SCRIPTS 8
#define SRV_REQS 64

/* How the server answers one path. Zero means "not this behaviour". */
struct script {
    const char *path;  /* "/list" */
    int status;        /* 200 when 0 */
    const char *ctype; /* Content-Type of the answer, or NULL */
    const char *body;  /* the answer's body, or NULL for none */
    int delay_ms;      /* wait this long before answering */
    int hang;          /* never answer (until the server stops) */
    int close_first;   /* close the connection instead of answering the first N requests */
    size_t stream;     /* answer with this many pattern bytes, produced by a callback */
    size_t stall_at;   /* streamed: wait when this many bytes are out */
    int stall_ms;      /* ... for this long; -1: until the server stops */
    int stall_n;       /* ... and again after each stall_at more, this many times in all */
    size_t break_at;   /* streamed: close the connection when this many bytes are out */
};

/* One request as the server saw it. */
struct srv_req {
    char path[64];
    char id[128], ts[32], sig[512], auth[256], ua[64], ctype[64];
    char *body; /* NUL-terminated copy */
    size_t body_len;
    int conn; /* index of its TCP connection, in accept order */
};

struct srv {
    struct MHD_Daemon *d;
    char url[64]; /* http://127.0.0.1:PORT */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when the server stops */
    int stopping;
    struct script scripts[SRV_SCRIPTS];
    int seen[SRV_SCRIPTS]; /* requests answered per script */
    int n_scripts;
    struct srv_req reqs[SRV_REQS];
    int n_reqs;
    int accepted, open, peak_open; /* TCP connections */
    int busy, peak_busy;           /* requests being answered at once */
    size_t streamed;               /* bytes produced by streamed answers */
};

/* One request on the wire: its body as it arrives. */
struct srv_call {
    char *body;
    size_t len, cap;
};

/* A streamed answer in progress. */
struct srv_stream {
    struct srv *s;
    struct script sc;
    int stalls; /* waits so far */
};

/* Byte i of every streamed body: no short period, so a lost, repeated or
 * reordered chunk shows. */
static unsigned char pattern(uint64_t i)
{
    return (unsigned char)((i * 0x9E3779B97F4A7C15ull) >> 56);
}

/* Waits ms milliseconds (-1: forever) or until the server stops; with mu
 * not held. Returns 1 when the server is stopping. */
static int srv_wait(struct srv *s, int ms)
{
    struct timespec until;
    int stop;

    clock_gettime(CLOCK_MONOTONIC, &until);
    util_ts_add_ms(&until, ms < 0 ? 0 : ms);
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (ms < 0)
            pthread_cond_wait(&s->cv, &s->mu);
        else if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0)
            break;
    }
    stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* MHD_OPTION_NOTIFY_CONNECTION: counts TCP connections. */
static void srv_notify(void *cls, struct MHD_Connection *mc, void **sock_ctx,
                       enum MHD_ConnectionNotificationCode toe)
{
    struct srv *s = cls;

    (void)mc;
    pthread_mutex_lock(&s->mu);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *sock_ctx = (void *)(intptr_t)s->accepted++;
        if (++s->open > s->peak_open)
            s->peak_open = s->open;
    } else {
        s->open--;
    }
    pthread_mutex_unlock(&s->mu);
}

/* MHD_OPTION_NOTIFY_COMPLETED: frees a request's state. */
static void srv_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    struct srv_call *call = *con_cls;

    (void)cls;
    (void)mc;
    (void)toe;
    if (call) {
        free(call->body);
        free(call);
        *con_cls = NULL;
    }
}

/* MHD_create_response_from_callback(): the next piece of a streamed body. */
static ssize_t srv_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct srv_stream *st = cls;
    size_t n = max, i, stall = 0;

    if (st->sc.break_at && pos >= st->sc.break_at)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (st->sc.stall_at && st->stalls < (st->sc.stall_n > 0 ? st->sc.stall_n : 1))
        stall = st->sc.stall_at * (size_t)(st->stalls + 1); /* where the next wait is */
    if (stall && pos >= stall) {
        st->stalls++;
        if (srv_wait(st->s, st->sc.stall_ms))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        stall = 0;
    }
    if (n > st->sc.stream - pos)
        n = st->sc.stream - pos;
    /* Stop exactly at the stall and break points. */
    if (stall > pos && n > stall - pos)
        n = stall - pos;
    if (st->sc.break_at > pos && n > st->sc.break_at - pos)
        n = st->sc.break_at - pos;
    for (i = 0; i < n; i++)
        buf[i] = (char)pattern(pos + i);
    pthread_mutex_lock(&st->s->mu);
    st->s->streamed += n;
    pthread_mutex_unlock(&st->s->mu);
    return (ssize_t)n;
}

static void header_copy(struct MHD_Connection *mc, const char *name, char *out, size_t n)
{
    const char *v = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, name);
    snprintf(out, n, "%s", v ? v : "");
}

/* Records a complete request; returns its script (a copy) and how many
 * requests that script has answered before this one. */
static struct script srv_record(struct srv *s, struct MHD_Connection *mc, const char *url,
                                struct srv_call *call, int *nth)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct script sc = {.status = 404};
    struct srv_req *q;
    int i;

    pthread_mutex_lock(&s->mu);
    if (s->n_reqs < SRV_REQS) {
        q = &s->reqs[s->n_reqs++];
        snprintf(q->path, sizeof(q->path), "%s", url);
        header_copy(mc, "webhook-id", q->id, sizeof(q->id));
        header_copy(mc, "webhook-timestamp", q->ts, sizeof(q->ts));
        header_copy(mc, "webhook-signature", q->sig, sizeof(q->sig));
        header_copy(mc, "Authorization", q->auth, sizeof(q->auth));
        header_copy(mc, "User-Agent", q->ua, sizeof(q->ua));
        header_copy(mc, "Content-Type", q->ctype, sizeof(q->ctype));
        q->body = malloc(call->len + 1);
        if (q->body) {
            if (call->len)
                memcpy(q->body, call->body, call->len);
            q->body[call->len] = '\0';
            q->body_len = call->len;
        }
        q->conn = ci ? (int)(intptr_t)ci->socket_context : -1;
    }
    *nth = 0;
    for (i = 0; i < s->n_scripts; i++) {
        if (strcmp(s->scripts[i].path, url) == 0) {
            sc = s->scripts[i];
            *nth = s->seen[i]++;
            break;
        }
    }
    if (++s->busy > s->peak_busy)
        s->peak_busy = s->busy;
    pthread_mutex_unlock(&s->mu);
    return sc;
}

/* Answers a complete request as its script says. */
static enum MHD_Result srv_answer(struct srv *s, struct MHD_Connection *mc, const char *url,
                                  struct srv_call *call)
{
    struct MHD_Response *resp;
    enum MHD_Result ret = MHD_NO;
    int nth;
    struct script sc = srv_record(s, mc, url, call, &nth);

    if (nth < sc.close_first || (sc.hang && srv_wait(s, -1)))
        goto done; /* MHD_NO: the connection closes without an answer */
    if (sc.delay_ms > 0 && srv_wait(s, sc.delay_ms))
        goto done;
    if (sc.stream) {
        struct srv_stream *st = calloc(1, sizeof(*st));
        if (!st)
            goto done;
        st->s = s;
        st->sc = sc;
        resp = MHD_create_response_from_callback(sc.stream, 64 * 1024, srv_read, st, free);
    } else {
        size_t n = sc.body ? strlen(sc.body) : 0;
        resp = MHD_create_response_from_buffer(n, (void *)(sc.body ? sc.body : ""),
                                               MHD_RESPMEM_MUST_COPY);
    }
    if (!resp)
        goto done;
    if (sc.ctype)
        MHD_add_response_header(resp, "Content-Type", sc.ctype);
    ret = MHD_queue_response(mc, sc.status ? (unsigned)sc.status : 200u, resp);
    MHD_destroy_response(resp);
done:
    pthread_mutex_lock(&s->mu);
    s->busy--;
    pthread_mutex_unlock(&s->mu);
    return ret;
}

/* The access handler: gathers the body, then answers. */
static enum MHD_Result srv_handler(void *cls, struct MHD_Connection *mc, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls)
{
    struct srv_call *call = *con_cls;

    (void)method;
    (void)version;
    if (!call) {
        if (!(call = calloc(1, sizeof(*call))))
            return MHD_NO;
        *con_cls = call;
        return MHD_YES;
    }
    if (*upload_size) {
        if (call->len + *upload_size > call->cap) {
            size_t cap = (call->len + *upload_size) * 2;
            char *b = realloc(call->body, cap);
            if (!b)
                return MHD_NO;
            call->body = b;
            call->cap = cap;
        }
        memcpy(call->body + call->len, upload, *upload_size);
        call->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    return srv_answer(cls, mc, url, call);
}

static void srv_start(struct srv *s)
{
    struct sockaddr_in sin;
    pthread_condattr_t ca;
    const union MHD_DaemonInfo *di;

    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = 0;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
        NULL, srv_handler, s, MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_NOTIFY_CONNECTION, srv_notify,
        s, MHD_OPTION_NOTIFY_COMPLETED, srv_completed, s, MHD_OPTION_END);
    assert_non_null(s->d);
    di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(di);
    assert_true(di->port > 0);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%u", (unsigned)di->port);
}

/* Wakes every waiting handler, stops the daemon (joining its threads) and
 * frees the records. */
static void srv_stop(struct srv *s)
{
    int i;

    if (!s->d)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->d);
    s->d = NULL;
    for (i = 0; i < s->n_reqs; i++)
        free(s->reqs[i].body);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

/* Sets (or replaces) how a path is answered. */
static void srv_script(struct srv *s, struct script sc)
{
    int i;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n_scripts && strcmp(s->scripts[i].path, sc.path) != 0; i++)
        ;
    assert_true(i < SRV_SCRIPTS);
    s->scripts[i] = sc;
    if (i == s->n_scripts)
        s->n_scripts++;
    pthread_mutex_unlock(&s->mu);
}

/* Reads one int field of the server under its lock. */
static int srv_get(struct srv *s, const int *field)
{
    int v;

    pthread_mutex_lock(&s->mu);
    v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

static size_t srv_streamed(struct srv *s)
{
    size_t v;

    pthread_mutex_lock(&s->mu);
    v = s->streamed;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Index of the request whose body names session "sess-TAG", or -1. */
static int srv_find(struct srv *s, int tag)
{
    char needle[48];
    int i, found = -1;

    snprintf(needle, sizeof(needle), "\"session\":\"sess-%d\"", tag);
    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n_reqs && found < 0; i++)
        if (s->reqs[i].body && strstr(s->reqs[i].body, needle))
            found = i;
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* How many requests went to path. */
static int srv_paths(struct srv *s, const char *path)
{
    int i, n = 0;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n_reqs; i++)
        n += strcmp(s->reqs[i].path, path) == 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Asserts that a request (read once its call has ended) carries a valid
 * signature over its own id, timestamp and body, made with `secret`. */
static void assert_signed(const struct srv_req *q, const char *secret)
{
    struct wh_keys k;
    char sig[256];
    long long ts = atoll(q->ts);

    assert_true(ts > 0);
    assert_true(llabs(ts - (long long)time(NULL)) < 60);
    assert_int_equal(wh_keys_parse(&k, secret), 0);
    assert_true(wh_sign(&k, q->id, ts, q->body, q->body_len, sig, sizeof(sig)) > 0);
    wh_keys_clear(&k);
    assert_string_equal(q->sig, sig);
}

/* ---- the client side: calls and what their callbacks saw ---------------- */

#define N_RECS 24

struct fx;

/* One call and everything its callbacks did. */
struct rec {
    struct fx *f;
    int tag; /* its index; the call's session is "sess-TAG" */
    struct wh_req *req;
    int done, begins, datas, ends;
    enum wh_status begin_status;
    enum wh_end how;      /* what end() said */
    int end_ok;           /* end() said WH_END_OK */
    struct wh_result res; /* what done handed over */
    double t_start, t_final, t_data;
    unsigned char *data; /* retrieve body as it arrived */
    size_t len, cap;
    int hold;              /* begin(WH_OK) does not resume: the test does */
    size_t pause_at;       /* data() answers full, once, when len has reached this (0: never) */
    int paused;            /* data() said full; the test clears it when it resumes */
    int pauses;            /* times data() said full */
    int data_while_paused; /* data() calls between a pause and its resume */
    int stop_at;           /* data() says stop on this call (0: never) */
    struct rec *cancel;    /* done() cancels this call */
    struct rec *chain;     /* done() starts this call (a list) */
};

struct fx {
    struct event_base *base;
    struct event *tick;
    struct srv srv;
    struct wh_params p;
    struct wh_client *c;
    long inflight_before; /* the process-wide gauge when the test began */
    struct rec recs[N_RECS];
    int order[N_RECS * 2]; /* tags, in the order their final callback ran */
    int n_order;
};

static struct wh_req *start_call(struct fx *f, struct rec *r, enum wh_event ev, uint64_t size_hint);

/* The final callback of a call has run. */
static void rec_final(struct rec *r)
{
    r->t_final = util_mono();
    if (r->f->n_order < N_RECS * 2)
        r->f->order[r->f->n_order++] = r->tag;
}

static void rec_done(void *ctx, struct wh_result *res)
{
    struct rec *r = ctx;

    wh_result_free(&r->res); /* a second done: keep the newest, count both */
    r->res = *res;
    memset(res, 0, sizeof(*res)); /* taken: the client frees nothing of it */
    r->done++;
    rec_final(r);
    if (r->cancel) {
        wh_cancel(r->cancel->req);
        r->cancel = NULL;
    }
    if (r->chain) {
        start_call(r->f, r->chain, WH_LIST, 0);
        r->chain = NULL;
    }
}

/* A retrieve's status: anything but WH_OK is final; on WH_OK the body flows
 * once the caller resumes (here at once, unless the test holds it). */
static void rec_begin(void *ctx, enum wh_status st)
{
    struct rec *r = ctx;

    r->begins++;
    r->begin_status = st;
    if (st != WH_OK)
        rec_final(r);
    else if (!r->hold)
        wh_resume(r->req);
}

static int rec_data(void *ctx, const char *p, size_t n)
{
    struct rec *r = ctx;

    r->datas++;
    r->t_data = util_mono();
    if (r->paused)
        r->data_while_paused++;
    if (r->pause_at && !r->pauses && r->len >= r->pause_at) {
        r->pauses++;
        r->paused = 1;
        return WH_DATA_FULL; /* none of these bytes taken: they come again */
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        unsigned char *d;
        while (cap < r->len + n)
            cap *= 2;
        if (!(d = realloc(r->data, cap)))
            return WH_DATA_STOP;
        r->data = d;
        r->cap = cap;
    }
    memcpy(r->data + r->len, p, n);
    r->len += n;
    if (r->stop_at && r->datas >= r->stop_at) {
        rec_final(r);
        return WH_DATA_STOP;
    }
    return WH_DATA_TAKEN;
}

static void rec_end(void *ctx, enum wh_end how)
{
    struct rec *r = ctx;

    r->ends++;
    r->how = how;
    r->end_ok = how == WH_END_OK;
    rec_final(r);
}

static const struct wh_handler rec_handler = {
    .done = rec_done,
    .begin = rec_begin,
    .data = rec_data,
    .end = rec_end,
};

/* Starts a call of session "sess-TAG"; the wh_call lives on this stack
 * frame only, as the API allows. */
static struct wh_req *start_call(struct fx *f, struct rec *r, enum wh_event ev, uint64_t size_hint)
{
    struct wh_call call;
    char session[32];

    memset(&call, 0, sizeof(call));
    snprintf(session, sizeof(session), "sess-%d", r->tag);
    call.event = ev;
    call.session = session;
    call.client_ip = "192.0.2.7";
    call.client_port = 51522;
    call.user = "alice";
    call.lines = -1;
    if (ev == WH_AUTHENTICATE) {
        call.method = "USER";
        call.password = "hunter2";
        call.attempt = 1;
    } else if (ev == WH_RETRIEVE) {
        call.message = 1;
        call.size_hint = size_hint;
    } else if (ev == WH_DISCONNECT) {
        call.reason = "timeout";
    }
    r->t_start = util_mono();
    r->req = wh_start(f->c, &call, &rec_handler, r);
    assert_non_null(r->req);
    return r->req;
}

/* Whether a call's final callback has run. */
static int rec_finished(const struct rec *r)
{
    return r->done || r->ends || (r->begins && r->begin_status != WH_OK) ||
           (r->stop_at && r->datas >= r->stop_at);
}

/* Forgets what a call's callbacks did, to use the record again. */
static void rec_reset(struct rec *r)
{
    struct fx *f = r->f;
    int tag = r->tag;

    wh_result_free(&r->res);
    free(r->data);
    memset(r, 0, sizeof(*r));
    r->f = f;
    r->tag = tag;
}

static int rec_callbacks(const struct rec *r)
{
    return r->done + r->begins + r->datas + r->ends;
}

/* ---- driving the loop --------------------------------------------------- */

/* One turn of the loop, or 0 when `until` (monotonic seconds) has passed.
 * The fixture's 5 ms tick bounds each turn, so conditions on the server's
 * side are seen too. */
static int loop_turn(struct fx *f, double until)
{
    if (util_mono() >= until)
        return 0;
    event_base_loop(f->base, EVLOOP_ONCE);
    return 1;
}

/* Runs the loop until cond holds or secs have passed, then asserts cond. */
#define AWAIT(f, cond, secs)                                                                       \
    do {                                                                                           \
        double until_ = util_mono() + (secs);                                                      \
        while (!(cond) && loop_turn((f), until_))                                                  \
            ;                                                                                      \
        assert_true(cond);                                                                         \
    } while (0)

/* Runs the loop for secs: to see that something does NOT happen. */
static void run_for(struct fx *f, double secs)
{
    double until = util_mono() + secs;

    while (loop_turn(f, until))
        ;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* ---- fixture ------------------------------------------------------------ */

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct timeval tv = {0, 5000};
    int i;

    if (!f)
        return -1;
    f->base = event_base_new();
    f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
    if (!f->base || !f->tick || event_add(f->tick, &tv) < 0)
        return -1;
    srv_start(&f->srv);
    for (i = 0; i < N_RECS; i++) {
        f->recs[i].f = f;
        f->recs[i].tag = i;
    }
    f->p.url = f->srv.url;
    f->p.timeout = 5;
    f->p.pool = 4;
    f->p.max_inflight = 16;
    f->p.max_messages = 1000;
    f->inflight_before = METRIC_GET(webhook_inflight);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    long inflight_before = f->inflight_before;
    int i;

    wh_client_free(f->c);
    srv_stop(&f->srv);
    for (i = 0; i < N_RECS; i++) {
        wh_result_free(&f->recs[i].res);
        free(f->recs[i].data);
    }
    event_free(f->tick);
    event_base_free(f->base);
    free(f);
    /* Every request was freed: the gauge counts them from wh_start on. */
    assert_int_equal(METRIC_GET(webhook_inflight), inflight_before);
    return 0;
}

/* Makes the client with f->p. */
static void fx_client(struct fx *f)
{
    f->c = wh_client_new(f->base, &f->p);
    assert_non_null(f->c);
}

/* ---- keep-alive, pool, queue -------------------------------------------- */

/* N calls one after the other share one TCP connection. */
static void test_keepalive_reuse(void **state)
{
    struct fx *f = *state;
    const int n = 10;
    int i, j;

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    f->p.token = TOKEN;
    fx_client(f);
    for (i = 0; i < n; i++) {
        struct rec *r = &f->recs[i];
        start_call(f, r, WH_LIST, 0);
        assert_int_equal(rec_callbacks(r), 0); /* never from inside wh_start() */
        AWAIT(f, r->done, 5);
        assert_int_equal(r->done, 1);
        assert_int_equal(r->res.status, WH_OK);
        assert_int_equal(r->res.http_status, 200);
    }
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), n);
    assert_int_equal(srv_get(&f->srv, &f->srv.accepted), 1);
    for (i = 0; i < n; i++) {
        const struct srv_req *q = &f->srv.reqs[i];
        assert_string_equal(q->path, "/list");
        assert_int_equal(q->conn, 0);
        assert_string_equal(q->ua, "pop3gw/" POP3GW_VERSION);
        assert_string_equal(q->ctype, "application/json");
        assert_string_equal(q->auth, "Bearer " TOKEN);
        assert_string_equal(q->sig, ""); /* no secret, no signature */
        assert_true(q->ts[0] != '\0');
        assert_non_null(strstr(q->body, "\"event\":\"list\""));
        assert_int_equal(srv_find(&f->srv, i), i);
        /* Every logical call has its own id. */
        assert_true(q->id[0] != '\0');
        for (j = 0; j < i; j++)
            assert_string_not_equal(q->id, f->srv.reqs[j].id);
    }
    assert_int_equal(wh_client_inflight(f->c), 0);
}

/* pool = 2, max_inflight = 8: eight calls to a slow handler at once use two
 * connections, two at a time, and all complete. */
static void test_pool_limit(void **state)
{
    struct fx *f = *state;
    const int n = 8, delay_ms = 100;
    double t0, took;
    int i;

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY, .delay_ms = delay_ms});
    f->p.pool = 2;
    f->p.max_inflight = 8;
    fx_client(f);
    t0 = util_mono();
    for (i = 0; i < n; i++)
        start_call(f, &f->recs[i], WH_LIST, 0);
    assert_int_equal(wh_client_inflight(f->c), (size_t)n);
    AWAIT(f, f->n_order == n, 10);
    took = util_mono() - t0;
    for (i = 0; i < n; i++) {
        assert_int_equal(f->recs[i].done, 1);
        assert_int_equal(f->recs[i].res.status, WH_OK);
    }
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), n);
    assert_int_equal(srv_get(&f->srv, &f->srv.peak_open), 2);
    assert_int_equal(srv_get(&f->srv, &f->srv.accepted), 2);
    assert_int_equal(srv_get(&f->srv, &f->srv.peak_busy), 2);
    /* Two at a time: four rounds of the handler's delay at least. */
    assert_true(took >= (n / 2) * delay_ms / 1000.0);
    assert_int_equal(wh_client_inflight(f->c), 0);
}

/* Calls beyond the limit start in the order they were made, whether the
 * pool or max_inflight is the limit, and whatever their event. */
static void test_queue_order(void **state)
{
    static const struct {
        int pool, max_inflight;
    } limits[] = {{1, 8}, {4, 1}};
    struct fx *f = *state;
    const int n = 6;
    int k, i;

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY, .delay_ms = 20});
    srv_script(&f->srv, (struct script){.path = "/quit", .delay_ms = 20});
    for (k = 0; k < 2; k++) {
        struct rec *recs = &f->recs[k * n];
        f->p.pool = limits[k].pool;
        f->p.max_inflight = limits[k].max_inflight;
        fx_client(f);
        f->n_order = 0;
        for (i = 0; i < n; i++)
            start_call(f, &recs[i], i % 2 ? WH_QUIT : WH_LIST, 0);
        assert_int_equal(wh_client_inflight(f->c), (size_t)n);
        AWAIT(f, f->n_order == n, 10);
        for (i = 0; i < n; i++) {
            assert_int_equal(recs[i].done, 1);
            assert_int_equal(recs[i].res.status, WH_OK);
            assert_int_equal(f->order[i], k * n + i);
            /* The server saw them in the same order. */
            assert_int_equal(srv_find(&f->srv, k * n + i), k * n + i);
        }
        assert_int_equal(srv_get(&f->srv, &f->srv.peak_busy), 1);
        wh_client_free(f->c);
        f->c = NULL;
    }
}

/* ---- retries ------------------------------------------------------------ */

/* The server closes the connection without answering the first attempt of
 * an idempotent call: the retry carries the same webhook-id and body, each
 * attempt signed over its own timestamp, and the caller sees one answer. */
static void test_retry_same_id(void **state)
{
    static const enum wh_event events[] = {WH_LIST, WH_QUIT, WH_RETRIEVE};
    struct fx *f = *state;
    unsigned long retries;
    size_t i;

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY, .close_first = 1});
    srv_script(&f->srv, (struct script){.path = "/quit", .close_first = 1});
    srv_script(&f->srv, (struct script){.path = "/retrieve",
                                        .ctype = "message/rfc822",
                                        .stream = 100000,
                                        .close_first = 1});
    f->p.secret = SECRET;
    f->p.token = TOKEN;
    for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        struct rec *r = &f->recs[i];
        const struct srv_req *a, *b;
        int base = (int)i * 2;

        /* A fresh client, so the first attempt is on a fresh connection
         * (curl itself tries again once when a reused one turns out dead). */
        wh_client_free(f->c);
        fx_client(f);
        retries = METRIC_GET(webhook_retries[events[i]]);
        start_call(f, r, events[i], 0);
        AWAIT(f, rec_finished(r), 5);
        if (events[i] == WH_RETRIEVE) {
            assert_int_equal(r->begins, 1); /* the failed attempt shows nothing */
            assert_int_equal(r->begin_status, WH_OK);
            assert_int_equal(r->ends, 1);
            assert_int_equal(r->end_ok, 1);
            assert_int_equal(r->len, 100000);
        } else {
            assert_int_equal(r->done, 1);
            assert_int_equal(r->res.status, WH_OK);
        }
        assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), base + 2);
        assert_int_equal(METRIC_GET(webhook_retries[events[i]]), retries + 1);
        a = &f->srv.reqs[base];
        b = &f->srv.reqs[base + 1];
        assert_string_equal(a->path, b->path);
        assert_true(a->id[0] != '\0');
        assert_string_equal(a->id, b->id);
        assert_int_equal(a->body_len, b->body_len);
        assert_memory_equal(a->body, b->body, a->body_len);
        assert_signed(a, SECRET);
        assert_signed(b, SECRET);
        assert_string_equal(b->auth, "Bearer " TOKEN);
        /* The closed connection was not used again. */
        assert_true(b->conn != a->conn);
    }
    /* Each logical call had its own id. */
    assert_string_not_equal(f->srv.reqs[0].id, f->srv.reqs[2].id);
    assert_string_not_equal(f->srv.reqs[2].id, f->srv.reqs[4].id);
}

/* authenticate is not idempotent: a connection closed without an answer is
 * a failure, with one request on the wire. */
static void test_authenticate_not_retried(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *r2 = &f->recs[1];

    srv_script(&f->srv,
               (struct script){.path = "/authenticate", .body = "{\"ok\":true}", .close_first = 1});
    fx_client(f);
    start_call(f, r, WH_AUTHENTICATE, 0);
    AWAIT(f, r->done, 5);
    assert_int_equal(r->res.status, WH_TEMP);
    assert_int_equal(r->res.http_status, 0);
    assert_non_null(r->res.error);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 1);
    /* The next call is answered: the backend would have answered a retry. */
    start_call(f, r2, WH_AUTHENTICATE, 0);
    AWAIT(f, r2->done, 5);
    assert_int_equal(r2->res.status, WH_OK);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 2);
    assert_string_not_equal(f->srv.reqs[0].id, f->srv.reqs[1].id);
    assert_int_equal(r->done, 1);
}

/* The body a call received is the first len bytes of the pattern. */
static void assert_pattern(const struct rec *r, size_t len)
{
    size_t i;

    assert_int_equal(r->len, len);
    for (i = 0; i < len; i++)
        if (r->data[i] != pattern(i))
            fail_msg("byte %zu of %zu differs", i, len);
}

/* ---- deadlines ---------------------------------------------------------- */

/* A backend that never answers: WH_TEMP once the event's timeout has
 * passed (not before; the upper bound is loose for loaded machines). A call
 * waiting for a slot behind it has its own deadline, and times out without
 * reaching the backend; having had no response, it reports HTTP status 0,
 * though the handle it was given last carried a 500. */
static void test_deadline(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *q = &f->recs[1], *x = &f->recs[2], *y = &f->recs[3];
    const double t = 0.5, tq = 0.3;
    double took;

    srv_script(&f->srv, (struct script){.path = "/list", .hang = 1});
    srv_script(&f->srv, (struct script){.path = "/quit", .status = 500});
    f->p.timeout_event[WH_LIST] = t;
    f->p.timeout_event[WH_UIDL] = tq;
    f->p.pool = 1;
    fx_client(f);
    /* Two calls at once hold two handles; both answered 500. */
    start_call(f, x, WH_QUIT, 0);
    start_call(f, y, WH_QUIT, 0);
    AWAIT(f, x->done && y->done, 5);
    assert_int_equal(x->res.http_status, 500);
    assert_int_equal(y->res.http_status, 500);

    start_call(f, r, WH_LIST, 0);
    start_call(f, q, WH_UIDL, 0);
    AWAIT(f, q->done, tq + 5);
    took = q->t_final - q->t_start;
    assert_int_equal(q->res.status, WH_TEMP);
    assert_int_equal(q->res.http_status, 0);
    assert_non_null(q->res.error);
    assert_true(took >= tq - 0.01);
    assert_true(took < tq + 3);
    assert_int_equal(srv_paths(&f->srv, "/uidl"), 0);

    AWAIT(f, r->done, t + 5);
    took = r->t_final - r->t_start;
    assert_int_equal(r->res.status, WH_TEMP);
    assert_int_equal(r->res.http_status, 0);
    assert_non_null(r->res.error);
    assert_true(took >= t - 0.01);
    assert_true(took < t + 3);
    assert_int_equal(srv_paths(&f->srv, "/list"), 1);
    assert_int_equal(wh_client_inflight(f->c), 0);
}

/* A retrieve whose body stops flowing: broken (end with ok 0) once the
 * timeout has passed without progress. Stalls shorter than the timeout are
 * fine, however long the whole transfer takes. */
static void test_retrieve_no_progress(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *s = &f->recs[1];
    const double t = 0.5;
    double quiet;

    srv_script(&f->srv, (struct script){.path = "/retrieve",
                                        .ctype = "message/rfc822",
                                        .stream = 1 * MIB,
                                        .stall_at = 64 * 1024,
                                        .stall_ms = -1});
    f->p.timeout_event[WH_RETRIEVE] = t;
    fx_client(f);
    start_call(f, r, WH_RETRIEVE, 0);
    AWAIT(f, r->ends, t + 5);
    assert_int_equal(r->begins, 1);
    assert_int_equal(r->begin_status, WH_OK);
    assert_int_equal(r->how, WH_END_BROKEN);
    assert_int_equal(r->len, 64 * 1024);
    quiet = r->t_final - r->t_data;
    assert_true(quiet >= t - 0.01);
    assert_true(quiet < t + 3);

    /* Four stalls of 0.2 s with a 0.5 s timeout: the whole body arrives,
     * though the transfer takes longer than the timeout. */
    srv_script(&f->srv, (struct script){.path = "/retrieve",
                                        .ctype = "message/rfc822",
                                        .stream = 1 * MIB,
                                        .stall_at = 200 * 1024,
                                        .stall_ms = 200,
                                        .stall_n = 4});
    start_call(f, s, WH_RETRIEVE, 0);
    AWAIT(f, s->ends, 10);
    assert_int_equal(s->end_ok, 1);
    assert_pattern(s, 1 * MIB);
    assert_true(s->t_final - s->t_start >= 4 * 0.2 - 0.01);
}

/* ---- streaming: pause and resume, stop, break --------------------------- */

/* After begin(WH_OK) no byte arrives until wh_resume(); when data() says
 * full, nothing more arrives until wh_resume() again; then the rest of the
 * body arrives, byte-exact, the refused bytes included. With the pooled
 * handle and with the large receive buffer a big message gets. wh_resume()
 * itself calls nothing back. */
static void test_pause_resume(void **state)
{
    static const uint64_t hints[] = {0, 16 * MIB};
    struct fx *f = *state;
    const size_t total = 16 * MIB, pause_at = 256 * 1024;
    size_t k;

    srv_script(&f->srv,
               (struct script){.path = "/retrieve", .ctype = "message/rfc822", .stream = total});
    fx_client(f);
    for (k = 0; k < 2; k++) {
        struct rec *r = &f->recs[k];
        size_t at_pause, produced;

        r->hold = 1;
        r->pause_at = pause_at;
        start_call(f, r, WH_RETRIEVE, hints[k]);
        AWAIT(f, r->begins == 1, 5);
        assert_int_equal(r->begin_status, WH_OK);
        run_for(f, 0.2);
        assert_int_equal(r->datas, 0);
        wh_resume(r->req);
        assert_int_equal(r->datas, 0);

        AWAIT(f, r->pauses == 1, 5);
        at_pause = r->len;
        assert_true(at_pause >= pause_at);
        run_for(f, 0.3);
        assert_int_equal(r->len, at_pause);
        assert_int_equal(r->data_while_paused, 0);
        assert_int_equal(r->ends, 0);
        /* The backend is held back: it has not produced the whole body. */
        produced = srv_streamed(&f->srv) - (k ? total : 0);
        assert_true(produced < total);
        r->paused = 0;
        wh_resume(r->req);
        assert_int_equal(r->len, at_pause);
        AWAIT(f, r->ends, 20);
        assert_int_equal(r->end_ok, 1);
        assert_int_equal(r->pauses, 1);
        assert_int_equal(r->begins, 1);
        assert_pattern(r, total);
    }
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 2);
}

/* data() says WH_DATA_STOP: the transfer stops, no callback runs after it, and
 * the next call works. */
static void test_retrieve_stop(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *l = &f->recs[1];

    srv_script(&f->srv,
               (struct script){.path = "/retrieve", .ctype = "message/rfc822", .stream = 8 * MIB});
    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    f->p.pool = 1;
    fx_client(f);
    r->stop_at = 2;
    start_call(f, r, WH_RETRIEVE, 0);
    AWAIT(f, r->datas >= 2, 5);
    start_call(f, l, WH_LIST, 0);
    AWAIT(f, l->done, 5);
    assert_int_equal(l->res.status, WH_OK);
    run_for(f, 0.1);
    assert_int_equal(r->datas, 2);
    assert_int_equal(r->ends, 0);
    assert_true(r->len < 8 * MIB);
    assert_int_equal(wh_client_inflight(f->c), 0);
}

/* data() says stop on the body curl kept while the call waited for the
 * caller's resume (TOP of a small message: the whole reply is in before the
 * +OK has gone out). curl delivers that body inside curl_easy_pause(), which
 * fails without ending the transfer: the call must still end at once, not
 * at the retrieve's 5 s no-progress timeout, and count its time. */
static void test_retrieve_stop_at_resume(void **state)
{
    static char body[4096];
    struct fx *f = *state;
    struct rec *r = &f->recs[0];
    unsigned long observed = atomic_load(&metrics.webhook_latency[WH_RETRIEVE].count);

    memset(body, 'x', sizeof(body) - 1);
    srv_script(&f->srv,
               (struct script){.path = "/retrieve", .ctype = "message/rfc822", .body = body});
    f->p.timeout_event[WH_RETRIEVE] = 5;
    fx_client(f);
    r->hold = 1;
    r->stop_at = 1;
    start_call(f, r, WH_RETRIEVE, 0);
    AWAIT(f, r->begins == 1, 5);
    run_for(f, 0.2); /* the whole reply arrives while the call waits */
    assert_int_equal(r->datas, 0);
    wh_resume(r->req);
    AWAIT(f, wh_client_inflight(f->c) == 0, 1);
    assert_int_equal(r->datas, 1);
    assert_int_equal(r->ends, 0);
    assert_int_equal(atomic_load(&metrics.webhook_latency[WH_RETRIEVE].count), observed + 1);
}

/* The backend closes the connection part-way through the body: end(0),
 * once, and no retry (bytes had arrived). */
static void test_retrieve_broken(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0];

    srv_script(&f->srv, (struct script){.path = "/retrieve",
                                        .ctype = "message/rfc822",
                                        .stream = 1 * MIB,
                                        .break_at = 200000});
    fx_client(f);
    start_call(f, r, WH_RETRIEVE, 0);
    AWAIT(f, r->ends, 5);
    assert_int_equal(r->begins, 1);
    assert_int_equal(r->how, WH_END_BROKEN);
    assert_int_equal(r->len, 200000);
    assert_pattern(r, 200000);
    run_for(f, 0.1);
    assert_int_equal(r->ends, 1);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 1);
}

/* ---- cancel ------------------------------------------------------------- */

/* A queued call is cancelled: it never reaches the backend and never calls
 * back; the calls before and after it run. */
static void test_cancel_queued(void **state)
{
    struct fx *f = *state;
    struct rec *a = &f->recs[0], *b = &f->recs[1], *c = &f->recs[2];

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY, .delay_ms = 100});
    f->p.pool = 1;
    fx_client(f);
    start_call(f, a, WH_LIST, 0);
    start_call(f, b, WH_LIST, 0);
    assert_int_equal(wh_client_inflight(f->c), 2);
    wh_cancel(b->req);
    AWAIT(f, wh_client_inflight(f->c) == 1, 5);
    start_call(f, c, WH_LIST, 0);
    AWAIT(f, a->done && c->done, 5);
    assert_int_equal(a->res.status, WH_OK);
    assert_int_equal(c->res.status, WH_OK);
    assert_int_equal(rec_callbacks(b), 0);
    /* FIFO: b would have gone before c. */
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 2);
    assert_int_equal(srv_find(&f->srv, 0), 0);
    assert_int_equal(srv_find(&f->srv, 2), 1);
    assert_int_equal(srv_find(&f->srv, 1), -1);
}

/* A running call is cancelled while the backend holds it: no callback, and
 * its slot goes to the call waiting behind it, which needs a new connection
 * (the old one is in the middle of a reply). */
static void test_cancel_running(void **state)
{
    struct fx *f = *state;
    struct rec *a = &f->recs[0], *b = &f->recs[1];

    srv_script(&f->srv, (struct script){.path = "/list", .hang = 1});
    srv_script(&f->srv, (struct script){.path = "/uidl", .body = "{\"uids\":[\"u1\"]}"});
    f->p.pool = 1;
    fx_client(f);
    start_call(f, a, WH_LIST, 0);
    start_call(f, b, WH_UIDL, 0);
    AWAIT(f, srv_get(&f->srv, &f->srv.n_reqs) == 1, 5);
    assert_int_equal(wh_client_inflight(f->c), 2);
    wh_cancel(a->req);
    AWAIT(f, b->done, 5);
    assert_int_equal(b->res.status, WH_OK);
    assert_int_equal(b->res.n_msgs, 1);
    run_for(f, 0.1);
    assert_int_equal(rec_callbacks(a), 0);
    assert_int_equal(srv_get(&f->srv, &f->srv.accepted), 2);
}

/* A paused retrieve is cancelled: no callback, nothing leaks, and the
 * client goes on. */
static void test_cancel_paused(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *l = &f->recs[1];
    int calls;

    srv_script(&f->srv,
               (struct script){.path = "/retrieve", .ctype = "message/rfc822", .stream = 16 * MIB});
    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    fx_client(f);
    r->pause_at = 64 * 1024;
    start_call(f, r, WH_RETRIEVE, 0);
    AWAIT(f, r->pauses == 1, 5);
    calls = rec_callbacks(r);
    wh_cancel(r->req);
    AWAIT(f, wh_client_inflight(f->c) == 0, 5);
    start_call(f, l, WH_LIST, 0);
    AWAIT(f, l->done, 5);
    assert_int_equal(l->res.status, WH_OK);
    run_for(f, 0.1);
    assert_int_equal(rec_callbacks(r), calls);
    assert_int_equal(r->ends, 0);
}

/* A retrieve is cancelled in the middle of its body (a client that went
 * away mid-message): no data or end after it, and the client goes on. The
 * backend stops after 1 MB, so the call cannot end before the cancel. */
static void test_cancel_streaming(void **state)
{
    struct fx *f = *state;
    struct rec *r = &f->recs[0], *l = &f->recs[1];
    int datas;

    srv_script(&f->srv, (struct script){.path = "/retrieve",
                                        .ctype = "message/rfc822",
                                        .stream = 16 * MIB,
                                        .stall_at = 1 * MIB,
                                        .stall_ms = -1});
    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    f->p.pool = 1;
    fx_client(f);
    start_call(f, r, WH_RETRIEVE, 16 * MIB);
    AWAIT(f, r->datas >= 3, 5);
    assert_int_equal(r->ends, 0);
    datas = r->datas;
    wh_cancel(r->req);
    assert_int_equal(r->datas, datas);
    start_call(f, l, WH_LIST, 0);
    AWAIT(f, l->done, 5);
    assert_int_equal(l->res.status, WH_OK);
    run_for(f, 0.1);
    assert_int_equal(r->datas, datas);
    assert_int_equal(r->ends, 0);
    assert_true(r->len <= 1 * MIB);
    assert_pattern(r, r->len);
}

/* One call's done cancels another call that is running (its backend holds
 * it): the cancelled one never calls back, and a call started from a done
 * callback runs. */
static void test_cancel_from_callback(void **state)
{
    struct fx *f = *state;
    struct rec *a = &f->recs[0], *b = &f->recs[1], *c = &f->recs[2];

    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    srv_script(&f->srv, (struct script){.path = "/quit", .hang = 1});
    f->p.pool = 2;
    fx_client(f);
    start_call(f, b, WH_QUIT, 0);
    start_call(f, a, WH_LIST, 0);
    a->cancel = b;
    a->chain = c;
    AWAIT(f, a->done && c->done, 5);
    assert_int_equal(a->res.status, WH_OK);
    assert_int_equal(c->res.status, WH_OK);
    AWAIT(f, wh_client_inflight(f->c) == 0, 5);
    run_for(f, 0.1);
    assert_int_equal(rec_callbacks(b), 0);
}

/* ---- replies ------------------------------------------------------------ */

/* list and uidl replies arrive parsed through done: sizes, uids, the cut to
 * max_messages; a listing against the contract is WH_TEMP. */
static void test_list_uidl_results(void **state)
{
    struct fx *f = *state;
    struct rec *l = &f->recs[0], *u = &f->recs[1], *bad = &f->recs[2];

    srv_script(&f->srv, (struct script){.path = "/list",
                                        .ctype = "application/json",
                                        .body = "{\"messages\":[{\"size\":120,\"uid\":\"a1\"},"
                                                "{\"size\":4500,\"uid\":\"b2\"},"
                                                "{\"size\":7,\"uid\":\"c3\"}]}"});
    srv_script(&f->srv, (struct script){.path = "/uidl", .body = "{\"uids\":[\"x-1\",\"y-2\"]}"});
    f->p.max_messages = 2;
    fx_client(f);
    start_call(f, l, WH_LIST, 0);
    start_call(f, u, WH_UIDL, 0);
    AWAIT(f, l->done && u->done, 5);
    assert_int_equal(l->res.status, WH_OK);
    assert_int_equal(l->res.n_msgs, 2);
    assert_int_equal(l->res.truncated_from, 3);
    assert_int_equal(l->res.has_uids, 1);
    assert_int_equal(l->res.msgs[0].size, 120);
    assert_string_equal(l->res.msgs[0].uid, "a1");
    assert_int_equal(l->res.msgs[1].size, 4500);
    assert_string_equal(l->res.msgs[1].uid, "b2");
    assert_int_equal(u->res.status, WH_OK);
    assert_int_equal(u->res.n_msgs, 2);
    assert_int_equal(u->res.truncated_from, 0);
    assert_string_equal(u->res.msgs[0].uid, "x-1");
    assert_string_equal(u->res.msgs[1].uid, "y-2");

    /* Uids on some entries only. */
    srv_script(&f->srv, (struct script){.path = "/list",
                                        .body = "{\"messages\":[{\"size\":1,\"uid\":\"a\"},"
                                                "{\"size\":2}]}"});
    start_call(f, bad, WH_LIST, 0);
    AWAIT(f, bad->done, 5);
    assert_int_equal(bad->res.status, WH_TEMP);
    assert_int_equal(bad->res.http_status, 200);
    assert_non_null(bad->res.error);
    assert_int_equal(bad->res.n_msgs, 0);
}

/* retrieve: 404 is WH_NOT_FOUND through begin, a 500 WH_TEMP (a reply:
 * not retried), and a JSON reply's content goes through data and end. */
static void test_retrieve_replies(void **state)
{
    struct fx *f = *state;
    struct rec *nf = &f->recs[0], *err = &f->recs[1], *js = &f->recs[2];
    static const char content[] = "Subject: hi\r\n\r\nhello \xc3\xa9\r\n";

    srv_script(&f->srv, (struct script){.path = "/retrieve", .status = 404});
    fx_client(f);
    start_call(f, nf, WH_RETRIEVE, 0);
    AWAIT(f, rec_finished(nf), 5);
    assert_int_equal(nf->begins, 1);
    assert_int_equal(nf->begin_status, WH_NOT_FOUND);
    assert_int_equal(nf->datas + nf->ends + nf->done, 0);

    srv_script(&f->srv, (struct script){.path = "/retrieve", .status = 500, .body = "oops"});
    start_call(f, err, WH_RETRIEVE, 0);
    AWAIT(f, rec_finished(err), 5);
    assert_int_equal(err->begins, 1);
    assert_int_equal(err->begin_status, WH_TEMP);
    assert_int_equal(err->datas + err->ends + err->done, 0);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 2);

    srv_script(
        &f->srv,
        (struct script){.path = "/retrieve",
                        .ctype = "application/json",
                        .body = "{\"content\":\"Subject: hi\\r\\n\\r\\nhello \\u00e9\\r\\n\"}"});
    start_call(f, js, WH_RETRIEVE, 0);
    AWAIT(f, js->ends, 5);
    assert_int_equal(js->begins, 1);
    assert_int_equal(js->begin_status, WH_OK);
    assert_int_equal(js->end_ok, 1);
    assert_int_equal(js->len, strlen(content));
    assert_memory_equal(js->data, content, strlen(content));
    run_for(f, 0.05);
    assert_int_equal(nf->begins + err->begins, 2);
}

/* ---- settings ----------------------------------------------------------- */

/* wh_client_set_params: new calls go to the new URL (and to a per-event
 * URL); a call already running keeps its own; settings that do not take
 * (a bad secret) change nothing. */
static void test_set_params_url(void **state)
{
    struct fx *f = *state;
    struct srv other;
    struct wh_params p;
    char custom[96];
    struct rec *r0 = &f->recs[0], *slow = &f->recs[1], *r2 = &f->recs[2], *r3 = &f->recs[3],
               *r4 = &f->recs[4];

    srv_start(&other);
    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    srv_script(&f->srv, (struct script){.path = "/quit", .delay_ms = 200});
    srv_script(&other, (struct script){.path = "/list", .body = LIST_BODY});
    srv_script(&other, (struct script){.path = "/custom/uidl", .body = "{\"uids\":[]}"});
    fx_client(f);
    start_call(f, r0, WH_LIST, 0);
    AWAIT(f, r0->done, 5);
    start_call(f, slow, WH_QUIT, 0);
    AWAIT(f, srv_get(&f->srv, &f->srv.n_reqs) == 2, 5);

    p = f->p;
    p.url = other.url;
    snprintf(custom, sizeof(custom), "%s/custom/uidl", other.url);
    p.url_event[WH_UIDL] = custom;
    assert_int_equal(wh_client_set_params(f->c, &p), 0);
    memset(custom, 0, sizeof(custom)); /* the client took a copy */
    start_call(f, r2, WH_LIST, 0);
    start_call(f, r3, WH_UIDL, 0);
    AWAIT(f, slow->done && r2->done && r3->done, 5);
    assert_int_equal(slow->res.status, WH_OK);
    assert_int_equal(r2->res.status, WH_OK);
    assert_int_equal(r3->res.status, WH_OK);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 2);
    assert_int_equal(srv_get(&other, &other.n_reqs), 2);
    assert_string_equal(f->srv.reqs[1].path, "/quit");
    /* r2 and r3 ran side by side: either may have arrived first. */
    assert_int_equal(srv_paths(&other, "/list"), 1);
    assert_int_equal(srv_paths(&other, "/custom/uidl"), 1);

    /* A secret that does not decode: refused, the old settings stay. */
    p = f->p;
    p.secret = "whsec_!!not-base64!!";
    assert_int_equal(wh_client_set_params(f->c, &p), -1);
    start_call(f, r4, WH_LIST, 0);
    AWAIT(f, r4->done, 5);
    assert_int_equal(r4->res.status, WH_OK);
    assert_int_equal(srv_get(&other, &other.n_reqs), 3);
    assert_string_equal(other.reqs[2].sig, "");

    wh_client_free(f->c);
    f->c = NULL;
    srv_stop(&other);
}

/* After five failed calls in a row the circuit opens: calls fail at once
 * without reaching the backend, until one probe after the cool-down gets
 * through and closes it again. */
static void test_circuit_breaker(void **state)
{
    struct fx *f = *state;
    double t0;
    int i, tag = 0;

    srv_script(&f->srv, (struct script){.path = "/list", .status = 500});
    fx_client(f);
    for (i = 0; i < 5; i++, tag++) {
        start_call(f, &f->recs[tag], WH_LIST, 0);
        AWAIT(f, f->recs[tag].done, 5);
        assert_int_equal(f->recs[tag].res.status, WH_TEMP);
        assert_int_equal(f->recs[tag].res.http_status, 500);
    }
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 5);
    srv_script(&f->srv, (struct script){.path = "/list", .body = LIST_BODY});
    start_call(f, &f->recs[tag], WH_LIST, 0);
    assert_int_equal(rec_callbacks(&f->recs[tag]), 0); /* at once, but from the loop */
    AWAIT(f, f->recs[tag].done, 5);
    assert_int_equal(f->recs[tag].res.status, WH_TEMP);
    assert_int_equal(f->recs[tag].res.http_status, 0);
    assert_string_equal(f->recs[tag].res.error, "circuit open");
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 5);
    tag++;

    /* The cool-down is a few seconds of wall time: try every 100 ms. */
    t0 = util_mono();
    for (;;) {
        struct rec *r = &f->recs[tag];
        start_call(f, r, WH_LIST, 0);
        AWAIT(f, r->done, 5);
        if (r->res.status == WH_OK)
            break;
        assert_string_equal(r->res.error, "circuit open");
        assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 5);
        assert_true(util_mono() - t0 < 5);
        run_for(f, 0.1);
        rec_reset(r);
    }
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 6);
    start_call(f, &f->recs[tag + 1], WH_LIST, 0);
    AWAIT(f, f->recs[tag + 1].done, 5);
    assert_int_equal(f->recs[tag + 1].res.status, WH_OK);
    assert_int_equal(srv_get(&f->srv, &f->srv.n_reqs), 7);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_keepalive_reuse),
        T(test_pool_limit),
        T(test_queue_order),
        T(test_retry_same_id),
        T(test_authenticate_not_retried),
        T(test_deadline),
        T(test_retrieve_no_progress),
        T(test_pause_resume),
        T(test_retrieve_stop),
        T(test_retrieve_stop_at_resume),
        T(test_retrieve_broken),
        T(test_cancel_queued),
        T(test_cancel_running),
        T(test_cancel_paused),
        T(test_cancel_streaming),
        T(test_cancel_from_callback),
        T(test_list_uidl_results),
        T(test_retrieve_replies),
        T(test_set_params_url),
        T(test_circuit_breaker),
    };
#undef T
    int rc;

    log_init(0, LOG_ERROR); /* the failures these tests provoke log warnings */
    if (wh_global_init() < 0)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    wh_global_cleanup();
    return rc;
}
