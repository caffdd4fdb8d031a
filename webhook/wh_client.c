/*
 * wh_client: webhook calls with libcurl's multi interface on libevent.
 *
 * The multi handle tells us which sockets to watch (wh_sock_cb) and when to
 * call it back (wh_timer_cb); we call curl_multi_socket_action() when a socket
 * is ready or the timer fires, and collect finished transfers after every
 * action (wh_check_done). Connections stay open between calls and are reused.
 *
 * Requests wait in a FIFO when max_inflight calls, or as many calls as the
 * pool has connections, are running (HTTP/1.1 carries one call per
 * connection, so curl would only queue the rest itself), and streamed
 * retrieves are capped below the connection pool so that a slow POP3 client,
 * which pauses its transfer and so holds a connection, cannot starve the
 * other events. Idempotent events are retried on transport failure when no
 * response byte arrived, with backoff, within their deadline and with the
 * same webhook-id.
 *
 * Callbacks into the caller run only from the event loop, outside any curl
 * callback where curl forbids changing the multi handle; wh_cancel() inside
 * a curl callback marks the request and frees it once curl has returned.
 */
#include "webhook/wh_client.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "lib/metrics.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "webhook/wh_json.h"
#include "webhook/wh_sign.h"
#include "lib/util.h"

/* The metrics count calls by event with the same list. */
_Static_assert(WH_N_EVENTS == METRICS_EVENTS, "events and their metrics disagree");

#define WH_RETRIES 3                    /* attempts for an idempotent call */
#define WH_RETRY_BACKOFF_MS 50          /* first backoff, doubled each time */
#define WH_BREAKER_FAILURES 5           /* failed calls in a row that open the circuit */
#define WH_BREAKER_COOLDOWN 2           /* seconds it stays open before one probe */
#define WH_EASY_POOL 64                 /* idle curl handles kept for reuse, per worker */
#define WH_RETRIEVE_BUFFER (512 * 1024) /* receive buffer of a streamed retrieve */
#define WH_SMALL_MESSAGE (64 * 1024)    /* a retrieve this small uses a pooled handle */
#define WH_RETIRED_MAX 16               /* header lists replaced by SIGHUP, kept until exit */

enum wh_req_state { RQ_QUEUED, RQ_RUNNING, RQ_BACKOFF };

struct wh_req {
    TAILQ_ENTRY(wh_req) link; /* in the queue or the running list */
    struct wh_client *c;
    enum wh_event event;
    enum wh_req_state state;
    const struct wh_handler *h; /* NULL once cancelled */
    void *ctx;
    CURL *easy;
    /* Per-call headers, in the request itself, chained in front of the
     * client's shared ones: no allocation per call. */
    struct curl_slist hdr[3];
    char hdr_id[128], hdr_ts[48], hdr_sig[400];
    int deferred; /* failed inside wh_start: the reaper finishes it */
    CURLcode deferred_res;
    char *body; /* request body, kept for retries */
    size_t body_len;
    char id[96];           /* webhook-id, the same on every retry */
    char url[1024];        /* where it goes */
    struct buf reply;      /* non-streamed reply body */
    int attempts;          /* tries so far */
    int got_bytes;         /* a response byte arrived: no retry */
    int headers_done;      /* the status line and headers have arrived */
    int streaming;         /* retrieve body flows to data() */
    int json_body;         /* retrieve answered as application/json */
    int counts_stream;     /* holds one of the stream slots */
    int paused;            /* a data() callback asked to pause */
    int dead;              /* cancelled or failed inside a curl callback */
    double deadline;       /* monotonic seconds: the whole call, retries included */
    double started;        /* monotonic seconds: when the call started (latency) */
    int observed;          /* latency recorded */
    int probe;             /* the one call let through a half-open circuit */
    int fast_failed;       /* failed at once: the circuit is open */
    int too_large;         /* the reply passed WH_BODY_MAX */
    double timeout;        /* seconds (retrieve: without progress) */
    int big_buffer;        /* its handle has the large receive buffer */
    struct event timer_ev; /* backoff, and retrieve's no-progress timer */
    struct event *timer;   /* &timer_ev once assigned */
};

TAILQ_HEAD(wh_req_list, wh_req);

struct wh_client {
    struct event_base *base;
    struct wh_params p; /* a copy, strings owned (secret and token not kept) */
    CURLM *multi;
    struct event *timer;       /* curl's timeout */
    struct wh_req_list queue;  /* waiting for a slot */
    struct wh_req_list active; /* running or backing off */
    struct event *reaper;
    size_t running; /* calls holding an inflight slot */
    size_t streams; /* retrieves holding a stream slot */
    size_t max_streams;
    int depth; /* inside curl_multi_socket_action */
    unsigned long seq;
    int failures;      /* calls failed in a row (transport, status, body) */
    time_t open_until; /* circuit open: fail at once until then */
    int probing;       /* a probe is running */
    struct wh_keys keys;
    char *token;
    char user_agent[64];
    struct curl_slist *shared; /* headers every call carries (type, agent, token) */
    struct curl_slist *retired[WH_RETIRED_MAX]; /* older shared lists calls may still use */
    int n_retired;
    CURL *idle[WH_EASY_POOL]; /* handles for reuse */
    int n_idle;
    int in_start;           /* inside wh_start: no callback may run */
    struct wh_sock *parked; /* sockets curl does not watch now */
};

/* One watched curl socket. When curl stops watching a kept-alive
 * connection between calls, its event stays registered ("parked") so that
 * the next call on it costs no epoll_ctl; a parked socket that turns
 * readable (the backend closed it) is dropped, and one that curl closes is
 * dropped first (wh_close_cb). */
struct wh_sock {
    struct event ev; /* assigned in place, re-assigned only when the kind changes */
    struct wh_client *c;
    short kind;
    curl_socket_t fd;
    int parked;
    struct wh_sock *next_parked;
};

static void wh_check_done(struct wh_client *c);
static void wh_reap(struct wh_client *c);
static void wh_drop(struct wh_req *r);
static void wh_fail(struct wh_req *r, CURLcode res);
static void wh_pump(struct wh_client *c);
static void wh_finish(struct wh_req *r, CURLcode res);

int wh_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void wh_global_cleanup(void)
{
    curl_global_cleanup();
}

static int wh_idempotent(enum wh_event ev)
{
    return ev == WH_LIST || ev == WH_UIDL || ev == WH_RETRIEVE || ev == WH_QUIT ||
           ev == WH_DISCONNECT;
}

/* ---- curl's socket and timer callbacks (hiperfifo pattern) ------------- */

static void wh_action(struct wh_client *c, curl_socket_t fd, int flags)
{
    int still;

    c->depth++;
    curl_multi_socket_action(c->multi, fd, flags, &still);
    c->depth--;
    wh_check_done(c);
}

static void wh_sock_free(struct wh_sock *s)
{
    event_del(&s->ev);
    free(s);
}

/* Takes a socket off the parked list; returns it, or NULL if fd is not parked. */
static struct wh_sock *wh_unpark(struct wh_client *c, curl_socket_t fd)
{
    struct wh_sock **p, *s;

    for (p = &c->parked; (s = *p); p = &s->next_parked) {
        if (s->fd == fd) {
            *p = s->next_parked;
            s->parked = 0;
            s->next_parked = NULL;
            return s;
        }
    }
    return NULL;
}

/* libevent: a curl socket is ready. */
static void wh_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct wh_sock *s = arg;
    struct wh_client *c = s->c;
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);

    if (s->parked) {
        /* An idle connection's peer closed or spoke: stop watching it; curl
         * finds it dead when it next looks at it. */
        wh_sock_free(wh_unpark(c, fd));
        return;
    }
    wh_action(c, fd, flags);
}

/* CURLOPT_CLOSESOCKETFUNCTION: forget a parked socket before it closes. */
static int wh_close_cb(void *clientp, curl_socket_t fd)
{
    struct wh_sock *s = wh_unpark(clientp, fd);

    if (s)
        wh_sock_free(s);
    return close(fd);
}

/* libevent: curl's timer fired. */
static void wh_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wh_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: only arms or deletes the timer. */
static int wh_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct wh_client *c = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    if (timeout_ms == 0) {
        /* Run it in this loop pass, without waiting on the kernel first. */
        evtimer_del(c->timer);
        event_active(c->timer, EV_TIMEOUT, 0);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(c->timer, &tv);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch, change or forget a socket. */
static int wh_sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    struct wh_client *c = userp;
    struct wh_sock *s = sockp;
    short kind;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            struct wh_req *r = NULL;

            /* A paused retrieve's socket is not parked: more of the body is
             * on its way and would only wake the loop. */
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
            curl_multi_assign(c->multi, fd, NULL);
            if (s->kind == (EV_READ | EV_PERSIST) && !(r && r->paused)) {
                s->parked = 1; /* still registered for reading: see struct wh_sock */
                s->next_parked = c->parked;
                c->parked = s;
            } else {
                wh_sock_free(s);
            }
        }
        return 0;
    }
    kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) |
                   EV_PERSIST);
    if (!s && (s = wh_unpark(c, fd)))
        curl_multi_assign(c->multi, fd, s);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->c = c;
        s->fd = fd;
        curl_multi_assign(c->multi, fd, s);
    } else if (s->kind == kind) {
        return 0; /* already watched this way */
    } else {
        event_del(&s->ev);
    }
    s->kind = kind;
    if (event_assign(&s->ev, c->base, fd, kind, wh_event_cb, s) < 0)
        return -1;
    event_add(&s->ev, NULL);
    return 0;
}

/* ---- request set-up --------------------------------------------------- */

static double wh_timeout_for(const struct wh_params *p, enum wh_event ev)
{
    double t = p->timeout_event[ev];
    return t > 0 ? t : p->timeout;
}

static const char *wh_url_for(const struct wh_params *p, enum wh_event ev, char *out, size_t n)
{
    if (p->url_event[ev])
        snprintf(out, n, "%s", p->url_event[ev]);
    else
        snprintf(out, n, "%s/%s", p->url ? p->url : "", wh_event_names[ev]);
    return out;
}

/* Records the call's latency once (retrieve: when its headers arrive). */
static void wh_observe(struct wh_req *r)
{
    if (r->observed)
        return;
    r->observed = 1;
    metrics_observe(&metrics.webhook_latency[r->event], util_mono() - r->started);
}

/* Counts a finished call and, when it failed, why; drives the breaker. */
static void wh_count(struct wh_req *r, int failed, enum metrics_wh_error why)
{
    struct wh_client *c = r->c;

    if (r->probe)
        c->probing = 0;
    if (!r->fast_failed) {
        if (!failed) {
            if (c->failures >= WH_BREAKER_FAILURES)
                log_kv(LOG_INFO, NULL, "backend answers again: circuit closed", "event=%s",
                       wh_event_names[r->event]);
            c->failures = 0;
        } else if (why != MWE_BROKEN && ++c->failures >= WH_BREAKER_FAILURES) {
            if (c->failures == WH_BREAKER_FAILURES || r->probe)
                log_kv(LOG_WARN, NULL, "backend failing: circuit open", "failures=%d cooldown=%d",
                       c->failures, WH_BREAKER_COOLDOWN);
            c->open_until = time(NULL) + WH_BREAKER_COOLDOWN;
        }
    }
    METRIC_INC(webhook_calls[r->event]);
    if (failed)
        METRIC_INC(webhook_errors[r->event][why]);
    metrics_backend_result(!failed);
}

static enum metrics_wh_error wh_error_kind(CURLcode res)
{
    return res == CURLE_OPERATION_TIMEDOUT ? MWE_TIMEOUT : MWE_CONNECT;
}

static long wh_ms_left(const struct wh_req *r)
{
    return (long)((r->deadline - util_mono()) * 1000);
}

/* The headers of one call: id, timestamp and signature in the request,
 * chained in front of the client's shared list. */
static int wh_build_headers(struct wh_req *r)
{
    struct wh_client *c = r->c;
    long long ts = (long long)time(NULL);
    int n, k = 0;

    snprintf(r->hdr_id, sizeof(r->hdr_id), "webhook-id: %s", r->id);
    snprintf(r->hdr_ts, sizeof(r->hdr_ts), "webhook-timestamp: %lld", ts);
    r->hdr[k++].data = r->hdr_id;
    r->hdr[k++].data = r->hdr_ts;
    if (c->keys.n) {
        n = snprintf(r->hdr_sig, sizeof(r->hdr_sig), "webhook-signature: ");
        if (wh_sign(&c->keys, r->id, ts, r->body, r->body_len, r->hdr_sig + n,
                    sizeof(r->hdr_sig) - (size_t)n) < 0)
            return -1;
        r->hdr[k++].data = r->hdr_sig;
    }
    for (n = 0; n < k - 1; n++)
        r->hdr[n].next = &r->hdr[n + 1];
    r->hdr[k - 1].next = c->shared;
    return 0;
}

/* (Re)builds the shared headers; the old list is kept, calls may use it. */
static int wh_build_shared(struct wh_client *c)
{
    char line[1100];
    struct curl_slist *h = NULL, *t;

    if (!(t = curl_slist_append(h, "Content-Type: application/json")))
        return -1;
    h = t;
    if (!(t = curl_slist_append(h, "Expect:")))
        goto err;
    h = t;
    snprintf(line, sizeof(line), "User-Agent: %s", c->user_agent);
    if (!(t = curl_slist_append(h, line)))
        goto err;
    h = t;
    if (c->token) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", c->token);
        t = curl_slist_append(h, line);
        util_wipe(line, sizeof(line));
        if (!t)
            goto err;
        h = t;
    }
    if (c->shared) {
        if (c->n_retired == WH_RETIRED_MAX) {
            /* Old enough that no call can still be sending it. */
            curl_slist_free_all(c->retired[0]);
            memmove(c->retired, c->retired + 1, sizeof(c->retired[0]) * (WH_RETIRED_MAX - 1));
            c->n_retired--;
        }
        c->retired[c->n_retired++] = c->shared;
    }
    c->shared = h;
    return 0;
err:
    curl_slist_free_all(h);
    return -1;
}

static size_t wh_header_cb(char *p, size_t size, size_t n, void *arg);
static size_t wh_write_cb(char *p, size_t size, size_t n, void *arg);

/* Options that never change for a handle: set once when it is made. */
static CURL *wh_easy_new(struct wh_client *c)
{
    const struct wh_params *p = &c->p;
    CURL *e = curl_easy_init();

    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, wh_header_cb);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wh_write_cb);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    /* Straight to backend_url: proxy variables in the environment are not
     * used (nor looked up on every call). */
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, wh_close_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
    if (p->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, p->ca_file);
    if (p->cert)
        curl_easy_setopt(e, CURLOPT_SSLCERT, p->cert);
    if (p->key)
        curl_easy_setopt(e, CURLOPT_SSLKEY, p->key);
    return e;
}

/* A handle from the pool, or a new one. A retrieve of a message listed
 * larger than WH_SMALL_MESSAGE gets its own, with a large receive buffer
 * (fewer reads), not pooled. */
static CURL *wh_easy_get(struct wh_client *c, int big_buffer)
{
    CURL *e;

    if (!big_buffer && c->n_idle > 0)
        return c->idle[--c->n_idle];
    e = wh_easy_new(c);
    if (e && big_buffer)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)WH_RETRIEVE_BUFFER);
    return e;
}

static void wh_easy_put(struct wh_client *c, CURL *e, int big_buffer)
{
    if (!big_buffer && c->n_idle < WH_EASY_POOL)
        c->idle[c->n_idle++] = e;
    else
        curl_easy_cleanup(e);
}

/* Options of this call (and this attempt). */
static int wh_setup_easy(struct wh_req *r)
{
    CURL *e = r->easy;
    long ms = (long)(r->timeout * 1000), left = wh_ms_left(r);

    if (wh_build_headers(r) < 0)
        return -1;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdr);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms);
    /* Retrieve: no overall deadline (its own timers); others: what is left. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->event == WH_RETRIEVE ? 0L : (left > 1 ? left : 1L));
    return 0;
}

/* ---- the no-progress timer of retrieve and the retry backoff ----------- */

static void wh_arm(struct wh_req *r, long ms)
{
    struct timeval tv = util_tv_ms(ms);
    evtimer_add(r->timer, &tv);
}

static void wh_launch(struct wh_req *r);

/* libevent: backoff over (retry now), or retrieve made no progress. */
static void wh_req_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct wh_req *r = arg;
    struct wh_client *c = r->c;

    (void)fd;
    (void)what;
    if (r->state == RQ_BACKOFF) {
        wh_launch(r);
        return;
    }
    if (r->state == RQ_QUEUED) {
        /* Waited for a slot past its deadline. */
        log_kv(LOG_WARN, NULL, "webhook timed out waiting for a slot", "event=%s id=%s queued=%zu",
               wh_event_names[r->event], r->id, wh_client_inflight(c));
        wh_finish(r, CURLE_OPERATION_TIMEDOUT);
        return;
    }
    log_kv(LOG_WARN, NULL, "webhook timed out", "event=%s id=%s timeout=%.1f",
           wh_event_names[r->event], r->id, r->timeout);
    curl_multi_remove_handle(c->multi, r->easy);
    wh_finish(r, CURLE_OPERATION_TIMEDOUT); /* frees r */
    wh_pump(c);
}

/* ---- curl data callbacks ---------------------------------------------- */

static int wh_is_json(const char *ct)
{
    return ct && strncasecmp(ct, "application/json", 16) == 0;
}

/* Headers complete: decide whether a retrieve streams. */
static int wh_headers_complete(struct wh_req *r)
{
    long code = 0;
    char *ct = NULL;

    r->headers_done = 1;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code == 100) { /* an interim response: the real one follows */
        r->headers_done = 0;
        return 0;
    }
    wh_observe(r);
    if (r->event != WH_RETRIEVE || code != 200)
        return 0;
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (wh_is_json(ct)) {
        r->json_body = 1;
        return 0;
    }
    if (!r->h || !r->h->begin(r->ctx, WH_OK)) {
        wh_drop(r);
        return -1;
    }
    r->streaming = 1;
    /* The backend has answered: the call counts as a success now (for the
     * breaker too), whatever later happens to the body or the client. */
    wh_count(r, 0, MWE_N);
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
    return 0;
}

/* The caller said stop from inside a curl callback: no callback runs any
 * more, and the reaper removes the transfer once curl has returned. */
static void wh_drop(struct wh_req *r)
{
    r->h = NULL;
    r->ctx = NULL;
    r->dead = 1;
    event_active(r->c->reaper, EV_TIMEOUT, 0);
}

/* CURLOPT_HEADERFUNCTION */
static size_t wh_header_cb(char *p, size_t size, size_t n, void *arg)
{
    struct wh_req *r = arg;
    size_t len = size * n;

    r->got_bytes = 1;
    if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n'))
        if (wh_headers_complete(r) < 0)
            return 0;
    return len;
}

/* CURLOPT_WRITEFUNCTION */
static size_t wh_write_cb(char *p, size_t size, size_t n, void *arg)
{
    struct wh_req *r = arg;
    size_t len = size * n;
    int rc;

    r->got_bytes = 1;
    if (r->dead || !r->h)
        return 0;
    if (!r->streaming) {
        if (r->reply.len + len > WH_BODY_MAX || buf_add(&r->reply, p, len) < 0) {
            r->too_large = 1;
            return 0; /* too large: the transfer fails, the call is WH_TEMP */
        }
        return len;
    }
    if (r->h->full(r->ctx)) {
        r->paused = 1;
        evtimer_del(r->timer); /* no-progress time runs only while not paused */
        return CURL_WRITEFUNC_PAUSE;
    }
    rc = r->h->data(r->ctx, p, len);
    if (rc < 0) {
        wh_drop(r);
        return 0;
    }
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
    return len;
}

/* ---- life of a request ------------------------------------------------ */

static void wh_req_free(struct wh_req *r)
{
    METRIC_DEC(webhook_inflight);
    if (r->timer)
        event_del(r->timer);
    if (r->easy)
        wh_easy_put(r->c, r->easy, r->big_buffer);
    if (r->body) {
        util_wipe(r->body, r->body_len);
        free(r->body);
    }
    buf_free(&r->reply);
    free(r);
}

/* Gives a slot back and frees the request. */
static void wh_release(struct wh_req *r)
{
    struct wh_client *c = r->c;

    if (r->probe)
        c->probing = 0; /* however the probe ended, the next call may probe */
    if (r->state == RQ_QUEUED) {
        TAILQ_REMOVE(&c->queue, r, link);
    } else {
        TAILQ_REMOVE(&c->active, r, link);
        c->running--;
        if (r->counts_stream)
            c->streams--;
    }
    wh_req_free(r);
}

/* Starts (or restarts) the transfer of a request that holds a slot. */
/* Ends a call that never reached curl: at once from the loop, later (by
 * the reaper) when inside wh_start, where no callback may run. */
static void wh_fail(struct wh_req *r, CURLcode res)
{
    if (r->c->in_start) {
        r->deferred = 1;
        r->deferred_res = res;
        event_active(r->c->reaper, EV_TIMEOUT, 0);
        return;
    }
    wh_finish(r, res);
}

static void wh_launch(struct wh_req *r)
{
    struct wh_client *c = r->c;

    if (c->failures >= WH_BREAKER_FAILURES) {
        if (time(NULL) < c->open_until || c->probing) {
            /* Open circuit: answer at once instead of waiting on a dead backend. */
            r->state = RQ_RUNNING;
            r->fast_failed = 1;
            r->attempts = WH_RETRIES;
            wh_fail(r, CURLE_COULDNT_CONNECT);
            return;
        }
        r->probe = 1; /* half open: this call tests the backend */
        c->probing = 1;
    }
    r->state = RQ_RUNNING;
    r->attempts++;
    if (r->event != WH_RETRIEVE)
        evtimer_del(r->timer); /* curl's own timeout takes over */
    r->got_bytes = r->headers_done = r->streaming = r->json_body = r->paused = 0;
    r->too_large = 0;
    buf_reset(&r->reply);
    if (wh_setup_easy(r) < 0 || curl_multi_add_handle(r->c->multi, r->easy) != CURLM_OK) {
        r->state = RQ_BACKOFF; /* not in the multi handle */
        wh_fail(r, CURLE_OUT_OF_MEMORY);
        return;
    }
    /* Retrieve has no overall deadline (a long message to a slow client is
     * fine); its own timer bounds the wait for the headers, then the time
     * without progress while not paused. */
    if (r->event == WH_RETRIEVE && r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
}

/* Gives slots to queued requests, in order. */
static void wh_pump(struct wh_client *c)
{
    struct wh_req *r, *next;
    size_t max = c->p.max_inflight > 0 ? (size_t)c->p.max_inflight : 1;

    /* One call per backend connection: more would only wait inside curl. */
    if (c->p.pool > 0 && max > (size_t)c->p.pool)
        max = (size_t)c->p.pool;

    for (r = TAILQ_FIRST(&c->queue); r && c->running < max; r = next) {
        next = TAILQ_NEXT(r, link);
        if (r->event == WH_RETRIEVE && c->streams >= c->max_streams)
            continue; /* later events may pass a retrieve waiting for a stream slot */
        TAILQ_REMOVE(&c->queue, r, link);
        TAILQ_INSERT_TAIL(&c->active, r, link);
        c->running++;
        if (r->event == WH_RETRIEVE) {
            r->counts_stream = 1;
            c->streams++;
        }
        wh_launch(r);
    }
}

/* Whether a failed transfer may be tried again. */
static int wh_may_retry(const struct wh_req *r, CURLcode res)
{
    if (!wh_idempotent(r->event) || r->got_bytes || r->attempts >= WH_RETRIES || !r->h)
        return 0;
    if (res != CURLE_COULDNT_CONNECT && res != CURLE_SEND_ERROR && res != CURLE_RECV_ERROR &&
        res != CURLE_GOT_NOTHING && res != CURLE_COULDNT_RESOLVE_HOST)
        return 0;
    return wh_ms_left(r) > (WH_RETRY_BACKOFF_MS << r->attempts);
}

/* Delivers a non-streamed result to the caller. */
static void wh_deliver(struct wh_req *r, CURLcode res, long code)
{
    struct wh_result res_r;
    char *ct = NULL;

    memset(&res_r, 0, sizeof(res_r));
    if (res != CURLE_OK) {
        res_r.status = WH_TEMP;
        res_r.http_status = code;
        res_r.error = strdup(r->fast_failed ? "circuit open"
                             : r->too_large ? "reply larger than 1 MB"
                                            : curl_easy_strerror(res));
    } else {
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
        wh_json_parse(r->event, code, ct, r->reply.data, r->reply.len, r->c->p.max_messages,
                      &res_r);
    }
    wh_observe(r);
    if (r->too_large)
        wh_count(r, 1, MWE_BODY);
    else if (res != CURLE_OK)
        wh_count(r, 1, wh_error_kind(res));
    else if (res_r.status == WH_TEMP)
        wh_count(r, 1, code >= 200 && code < 300 ? MWE_BODY : MWE_STATUS);
    else
        wh_count(r, 0, MWE_N);
    if (res_r.status == WH_TEMP)
        log_kv(LOG_WARN, NULL, "webhook failed", "event=%s id=%s http_status=%ld error=%s",
               wh_event_names[r->event], r->id, code, res_r.error ? res_r.error : "");
    r->h->done(r->ctx, &res_r);
    wh_result_free(&res_r);
}

/* Retrieve ended: begin/end according to how. */
static void wh_deliver_retrieve(struct wh_req *r, CURLcode res, long code)
{
    const char *err = NULL;
    size_t len = 0;
    char *content;

    wh_observe(r);
    if (r->streaming) {
        if (res != CURLE_OK)
            METRIC_INC(webhook_errors[r->event][MWE_BROKEN]);
        if (res != CURLE_OK)
            log_kv(LOG_WARN, NULL, "retrieve broke after +OK", "id=%s error=%s", r->id,
                   curl_easy_strerror(res));
        r->h->end(r->ctx, res == CURLE_OK);
        return;
    }
    if (res != CURLE_OK || code != 200) {
        enum wh_status st = (res == CURLE_OK && code == 404) ? WH_NOT_FOUND : WH_TEMP;
        wh_count(r, st == WH_TEMP, res != CURLE_OK ? wh_error_kind(res) : MWE_STATUS);
        if (st == WH_TEMP)
            log_kv(LOG_WARN, NULL, "webhook failed",
                   "event=retrieve id=%s http_status=%ld error=%s", r->id, code,
                   r->fast_failed    ? "circuit open"
                   : res != CURLE_OK ? curl_easy_strerror(res)
                                     : "unexpected status");
        r->h->begin(r->ctx, st);
        return;
    }
    content = wh_json_parse_content(r->reply.data, r->reply.len, &len, &err);
    wh_count(r, !content, MWE_BODY);
    if (!content) {
        log_kv(LOG_WARN, NULL, "webhook failed", "event=retrieve id=%s error=%s", r->id,
               err ? err : "bad JSON content");
        r->h->begin(r->ctx, WH_TEMP);
        return;
    }
    if (r->h->begin(r->ctx, WH_OK)) {
        /* A JSON body is at most 1 MB: it goes out in one piece. */
        if (!len || r->h->data(r->ctx, content, len) == 0)
            r->h->end(r->ctx, 1);
    }
    free(content);
}

/* A transfer ended (removed from the multi already): retry or deliver. */
static void wh_finish(struct wh_req *r, CURLcode res)
{
    long code = 0;

    evtimer_del(r->timer);
    if (r->h && wh_may_retry(r, res)) {
        long ms = WH_RETRY_BACKOFF_MS << (r->attempts - 1);
        log_kv(LOG_INFO, NULL, "webhook retry", "event=%s id=%s attempt=%d error=%s",
               wh_event_names[r->event], r->id, r->attempts + 1, curl_easy_strerror(res));
        r->state = RQ_BACKOFF;
        METRIC_INC(webhook_retries[r->event]);
        wh_arm(r, ms);
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (r->h) {
        if (r->event == WH_RETRIEVE)
            wh_deliver_retrieve(r, res, code);
        else
            wh_deliver(r, res, code);
    }
    wh_release(r);
}

/* Collects finished transfers (after every socket action). */
static void wh_check_done(struct wh_client *c)
{
    CURLMsg *m;
    int left;
    struct wh_req *r;

    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode res = m->data.result;
        curl_multi_remove_handle(c->multi, r->easy);
        wh_finish(r, res);
    }
    wh_reap(c);
    wh_pump(c);
}

/* libevent: frees requests cancelled inside curl callbacks. */
static void wh_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wh_check_done(arg);
}

struct wh_req *wh_start(struct wh_client *c, const struct wh_call *call, const struct wh_handler *h,
                        void *ctx)
{
    struct wh_req *r = calloc(1, sizeof(*r));
    double t;

    if (!r)
        return NULL;
    METRIC_INC(webhook_inflight);
    r->c = c;
    r->event = call->event;
    r->h = h;
    r->ctx = ctx;
    r->body = wh_json_build(call, &r->body_len);
    r->big_buffer = r->event == WH_RETRIEVE && call->size_hint > WH_SMALL_MESSAGE;
    r->easy = wh_easy_get(c, r->big_buffer);
    if (evtimer_assign(&r->timer_ev, c->base, wh_req_timer_cb, r) == 0)
        r->timer = &r->timer_ev;
    if (!r->body || !r->easy || !r->timer) {
        wh_req_free(r);
        return NULL;
    }
    snprintf(r->id, sizeof(r->id), "msg_%s_%lu", call->session ? call->session : "x", ++c->seq);
    wh_url_for(&c->p, r->event, r->url, sizeof(r->url));
    t = wh_timeout_for(&c->p, r->event);
    r->timeout = t;
    r->started = util_mono();
    r->deadline = r->started + t;
    r->state = RQ_QUEUED;
    TAILQ_INSERT_TAIL(&c->queue, r, link);
    if (t > 0) /* bounds the wait for a slot; replaced once it runs */
        wh_arm(r, (long)(t * 1000));
    log_kv(LOG_DEBUG, call->session, "webhook", "event=%s id=%s", wh_event_names[r->event], r->id);
    if (c->depth) {
        /* Inside a curl callback the multi handle must not change. */
        event_active(c->reaper, EV_TIMEOUT, 0);
        return r;
    }
    c->in_start = 1; /* no callback runs inside wh_start() */
    wh_pump(c);
    c->in_start = 0;
    return r;
}

void wh_cancel(struct wh_req *r)
{
    struct wh_client *c;

    if (!r || !r->h)
        return;
    c = r->c;
    if (c->depth) {
        /* Inside a curl callback the multi handle must not change. */
        wh_drop(r);
        return;
    }
    r->h = NULL;
    r->ctx = NULL;
    evtimer_del(r->timer);
    if (r->state == RQ_RUNNING)
        curl_multi_remove_handle(c->multi, r->easy);
    wh_release(r);
    /* A slot is free: queued calls move on, from the loop (not from here,
     * where the caller may be freeing its session). */
    event_active(c->reaper, EV_TIMEOUT, 0);
}

/* Removes the transfers cancelled inside curl callbacks. */
static void wh_reap(struct wh_client *c)
{
    struct wh_req *r, *next;

    for (r = TAILQ_FIRST(&c->active); r; r = next) {
        next = TAILQ_NEXT(r, link);
        if (r->deferred && r->h) {
            r->deferred = 0;
            wh_finish(r, r->deferred_res);
            next = TAILQ_FIRST(&c->active); /* callbacks may have changed the list */
            continue;
        }
        if (r->h)
            continue;
        evtimer_del(r->timer);
        if (r->state == RQ_RUNNING)
            curl_multi_remove_handle(c->multi, r->easy);
        wh_release(r);
    }
}

void wh_resume(struct wh_req *r)
{
    if (!r || !r->paused || !r->h)
        return;
    r->paused = 0;
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
    r->c->depth++; /* curl may call the write callback from here */
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
    r->c->depth--;
}

size_t wh_client_inflight(const struct wh_client *c)
{
    const struct wh_req *r;
    size_t n = c->running;

    TAILQ_FOREACH(r, &c->queue, link)
    n++;
    return n;
}

/* Replaces the signing keys and bearer token. 0, or -1 (nothing changed). */
static int wh_set_secrets(struct wh_client *c, const char *secrets, const char *token)
{
    struct wh_keys k;
    char *t = NULL;

    memset(&k, 0, sizeof(k));
    if (secrets && *secrets && wh_keys_parse(&k, secrets) < 0)
        return -1;
    if (token && *token && !(t = strdup(token))) {
        wh_keys_clear(&k);
        return -1;
    }
    wh_keys_clear(&c->keys);
    c->keys = k;
    util_free_secret(&c->token);
    c->token = t;
    return wh_build_shared(c);
}

/* Frees the strings of a copy made by wh_params_copy(). */
static void wh_params_free(struct wh_params *p)
{
    int e;

    free((char *)p->url);
    for (e = 0; e < WH_N_EVENTS; e++)
        free((char *)p->url_event[e]);
    free((char *)p->ca_file);
    free((char *)p->cert);
    free((char *)p->key);
    memset(p, 0, sizeof(*p));
}

static int wh_strdup(const char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? -1 : 0;
}

/* Copies p into out, every string included but the secret and the token
 * (they are parsed into the client's keys and header). 0 or -1. */
static int wh_params_copy(struct wh_params *out, const struct wh_params *p)
{
    int e, rc = 0;

    *out = *p;
    out->url = NULL;
    memset(out->url_event, 0, sizeof(out->url_event));
    out->ca_file = out->cert = out->key = out->secret = out->token = NULL;
    rc |= wh_strdup(&out->url, p->url);
    for (e = 0; e < WH_N_EVENTS; e++)
        rc |= wh_strdup(&out->url_event[e], p->url_event[e]);
    rc |= wh_strdup(&out->ca_file, p->ca_file);
    rc |= wh_strdup(&out->cert, p->cert);
    rc |= wh_strdup(&out->key, p->key);
    if (rc)
        wh_params_free(out);
    return rc;
}

static int wh_str_differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Sizes the connection pool, and the stream slots within it. */
static void wh_set_pool(struct wh_client *c)
{
    long pool = c->p.pool > 0 ? c->p.pool : 1;

    /* A paused stream holds its connection: keep a quarter of the pool (at
     * least one connection) free for the other events. */
    c->max_streams = pool > 1 ? (size_t)(pool - (pool + 3) / 4) : 1;
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, pool);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, pool);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, pool);
}

int wh_client_set_params(struct wh_client *c, const struct wh_params *p)
{
    struct wh_params copy;
    int tls_changed;

    if (wh_params_copy(&copy, p) < 0)
        return -1;
    if (wh_set_secrets(c, p->secret, p->token) < 0) {
        wh_params_free(&copy);
        return -1;
    }
    tls_changed = wh_str_differ(c->p.ca_file, copy.ca_file) ||
                  wh_str_differ(c->p.cert, copy.cert) || wh_str_differ(c->p.key, copy.key);
    wh_params_free(&c->p);
    c->p = copy;
    if (tls_changed) /* idle handles carry the old files: make new ones */
        while (c->n_idle > 0)
            curl_easy_cleanup(c->idle[--c->n_idle]);
    wh_set_pool(c);
    event_active(c->reaper, EV_TIMEOUT, 0); /* a larger pool or max_inflight: go on */
    return 0;
}

struct wh_client *wh_client_new(struct event_base *base, const struct wh_params *p)
{
    struct wh_client *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->base = base;
    if (wh_params_copy(&c->p, p) < 0) {
        free(c);
        return NULL;
    }
    TAILQ_INIT(&c->queue);
    TAILQ_INIT(&c->active);
    snprintf(c->user_agent, sizeof(c->user_agent), "pop3gw/%s", POP3GW_VERSION);
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, wh_timeout_cb, c);
    c->reaper = event_new(base, -1, 0, wh_reaper_cb, c);
    if (!c->multi || !c->timer || !c->reaper)
        goto err;
    if (wh_set_secrets(c, p->secret, p->token) < 0)
        goto err;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, wh_sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, wh_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    wh_set_pool(c);
    return c;
err:
    wh_client_free(c);
    return NULL;
}

void wh_client_free(struct wh_client *c)
{
    struct wh_req *r;

    if (!c)
        return;
    while ((r = TAILQ_FIRST(&c->queue)))
        wh_cancel(r);
    while ((r = TAILQ_FIRST(&c->active)))
        wh_cancel(r);
    if (c->multi)
        curl_multi_cleanup(c->multi); /* closes every connection: wh_close_cb */
    while (c->parked) {
        struct wh_sock *s = c->parked;
        c->parked = s->next_parked;
        wh_sock_free(s);
    }
    while (c->n_idle > 0)
        curl_easy_cleanup(c->idle[--c->n_idle]);
    curl_slist_free_all(c->shared);
    while (c->n_retired > 0)
        curl_slist_free_all(c->retired[--c->n_retired]);
    if (c->timer)
        event_free(c->timer);
    if (c->reaper)
        event_free(c->reaper);
    wh_keys_clear(&c->keys);
    util_free_secret(&c->token);
    wh_params_free(&c->p);
    free(c);
}
