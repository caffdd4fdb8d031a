/*
 * wh_client: webhook calls with libcurl's multi interface on libevent.
 *
 * The multi handle tells us which sockets to watch (wh_sock_cb) and when to
 * call it back (wh_timer_cb); we call curl_multi_socket_action() when a socket
 * is ready or the timer fires (wh_action). Connections stay open between
 * calls and are reused.
 *
 * A request goes through named states (enum wh_req_state) and changes state
 * only through wh_enter():
 *
 *   QUEUED --slot--> RUNNING --reply or failure--> DONE --delivered--> (freed)
 *                       |  ^                        |
 *                       v  |  (no response byte,     v
 *                     BACKOFF   idempotent event)  BACKOFF
 *   any state --wh_cancel()--> CANCELLED --drained--> (freed)
 *
 * Everything that happens inside a curl callback only records facts and
 * puts the request on the completion queue (wh_note). One function,
 * wh_drain(), empties that queue from the client's own turn of the loop,
 * after curl has returned: it retries, delivers results to the caller, lets
 * held bodies flow, removes transfers from the multi handle and frees
 * requests. Nothing else calls the caller back (but `data`, see
 * wh_client.h), and nothing else frees a request.
 *
 * Requests wait in a FIFO when max_inflight calls, or as many calls as the
 * pool has connections, are running (HTTP/1.1 carries one call per
 * connection, so curl would only queue the rest itself). Retrieves whose
 * transfer is paused hold their connection, so they are capped below the
 * pool (streams) and cannot starve the other events. Idempotent events are
 * retried when no response byte arrived, with backoff, within their
 * deadline, with the same webhook-id, and on a fresh connection when the
 * reused one failed.
 */
#include "webhook/wh_client.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/recent.h"
#include "lib/util.h"
#include "webhook/wh_content.h"
#include "webhook/wh_json.h"
#include "webhook/wh_sign.h"

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

/* The states of a request (see the top of this file). */
#define WH_REQ_STATES(X)                                                                           \
    X(QUEUED, "queued")       /* in the FIFO, waiting for a slot */                                \
    X(RUNNING, "running")     /* in curl */                                                        \
    X(BACKOFF, "backoff")     /* failed without a response byte; tries again on its timer */       \
    X(DONE, "done")           /* finished (res, code set): on the completion queue */              \
    X(CANCELLED, "cancelled") /* the caller is gone: on the completion queue, to be freed */

enum wh_req_state {
#define X(e, n) RQ_##e,
    WH_REQ_STATES(X)
#undef X
};

static const char *const wh_req_state_names[] = {
#define X(e, n) n,
    WH_REQ_STATES(X)
#undef X
};

/* What becomes of the reply body of a running request. */
enum wh_body {
    BODY_WAIT,    /* no complete headers yet */
    BODY_BUFFER,  /* collected in `reply` for wh_json_parse (every event but a 200 retrieve) */
    BODY_DECODE,  /* a 200 JSON retrieve: decoded (wh_content) until its content begins */
    BODY_GATED,   /* a 200 retrieve: paused until the caller has seen begin and said resume */
    BODY_FLOW,    /* a retrieve's body goes to data() */
    BODY_HELD,    /* data() said full: paused until wh_resume() */
    BODY_STOPPED, /* data() said stop: the transfer is aborted */
};

struct wh_req {
    TAILQ_ENTRY(wh_req) link; /* in the queue or the running list */
    TAILQ_ENTRY(wh_req) note; /* on the completion queue (noted) */
    int noted;
    struct wh_client *c;
    enum wh_event event;
    enum wh_req_state state;
    enum wh_body body_state;
    const struct wh_handler *h; /* NULL once the final callback is due or the caller left */
    void *ctx;
    CURL *easy;
    int in_multi; /* easy is in the multi handle */
    int in_queue; /* in the client's FIFO (else in the running list) */
    int slot;     /* holds an inflight slot */
    /* Per-call headers, in the request itself, chained in front of the
     * client's shared ones: no allocation per call. */
    struct curl_slist hdr[3];
    char hdr_id[128], hdr_ts[48], hdr_sig[400];
    char *body; /* request body, kept for retries */
    size_t body_len;
    char id[96];                       /* webhook-id, the same on every retry */
    char session[24];                  /* the session it is for, for the log */
    char errbuf[CURL_ERROR_SIZE];      /* libcurl's detail of a failed attempt (TLS errors) */
    char errmsg[CURL_ERROR_SIZE + 80]; /* wh_errtext() */
    char url[1024];                    /* where it goes */
    struct buf reply;                  /* a buffered reply body */
    size_t reply_max;                  /* the most it may hold */
    int attempts;                      /* tries so far */
    int got_bytes;                     /* a response byte arrived: no retry */
    int fresh;                         /* the next attempt opens a new connection */
    int chunked;                       /* the reply is chunked (its end is marked) */
    struct wh_content *dec;            /* retrieve answered as application/json: its decoder */
    struct buf held;                   /* decoded JSON content not yet taken by data() */
    size_t held_off;                   /* of held, taken */
    int begin_due;                     /* a 200 retrieve: begin(WH_OK) not yet delivered */
    int resume;                        /* the caller said resume: let the body flow */
    int counted;                       /* the outcome is counted: no more retries */
    int finished;                      /* DONE has been looked at (wh_deliver_retrieve) */
    int broken;                        /* the streamed body did not arrive whole */
    int counts_stream;                 /* holds one of the stream slots */
    CURLcode res;                      /* DONE: how the transfer ended */
    long code;                         /* DONE: the HTTP status, 0 when none */
    double deadline;                   /* monotonic seconds: the whole call, retries included */
    double started;                    /* monotonic seconds: when the call started (latency) */
    int probe;                         /* the one call let through a half-open circuit */
    int fast_failed;                   /* failed at once: the circuit is open */
    int too_large;                     /* the reply passed reply_max */
    double timeout;                    /* seconds (retrieve: without progress) */
    int big_buffer;                    /* its handle has the large receive buffer */
    struct event timer_ev; /* the queue deadline, the backoff, retrieve's no-progress timer */
    int timer_ok;          /* timer_ev is assigned */
};

TAILQ_HEAD(wh_req_list, wh_req);

struct wh_client {
    struct event_base *base;
    struct wh_params p; /* a copy, strings owned (secret and token not kept) */
    CURLM *multi;
    struct event *timer;       /* curl's timeout */
    struct event *kick;        /* runs wh_drain from the loop */
    struct wh_req_list queue;  /* QUEUED */
    struct wh_req_list active; /* RUNNING, BACKOFF, DONE */
    struct wh_req_list notes;  /* the completion queue */
    int draining;              /* inside wh_drain (it does not nest) */
    size_t running;            /* calls holding an inflight slot */
    size_t streams;            /* retrieves holding a stream slot */
    size_t max_streams;
    unsigned long seq;
    /* The circuit breaker, one per event: an event whose calls keep
     * failing (its own URL may be the one that is down) does not hold the
     * others back. */
    struct wh_breaker {
        int failures;      /* calls failed in a row (transport, status, body) */
        time_t open_until; /* open: fail at once until then */
        int probing;       /* a probe is running */
    } breaker[WH_N_EVENTS];
    struct wh_keys keys;
    char *token;
    char user_agent[64];
    struct curl_slist *shared; /* headers every call carries (type, agent, token) */
    struct curl_slist *retired[WH_RETIRED_MAX]; /* older shared lists calls may still use */
    int n_retired;
    CURL *idle[WH_EASY_POOL]; /* handles for reuse */
    int n_idle;
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

static void wh_drain(struct wh_client *c);

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

/* Moves r to a new state, and says so at debug level. */
static void wh_enter(struct wh_req *r, enum wh_req_state st)
{
    if (r->state == st)
        return;
    if (log_enabled(LOG_DEBUG))
        log_kv(LOG_DEBUG, NULL, "webhook state", "id=%s event=%s from=%s to=%s", r->id,
               wh_event_names[r->event], wh_req_state_names[r->state], wh_req_state_names[st]);
    r->state = st;
}

/* Puts r on the completion queue (once) and has the loop drain it. Safe
 * inside curl callbacks. */
static void wh_note(struct wh_req *r)
{
    if (!r->noted) {
        r->noted = 1;
        TAILQ_INSERT_TAIL(&r->c->notes, r, note);
    }
    event_active(r->c->kick, EV_TIMEOUT, 0);
}

/* ---- curl's socket and timer callbacks (hiperfifo pattern) ------------- */

/* Runs curl on a ready socket (or its timer), then settles what finished. */
static void wh_action(struct wh_client *c, curl_socket_t fd, int flags)
{
    int still;

    curl_multi_socket_action(c->multi, fd, flags, &still);
    wh_drain(c);
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
            if (s->kind == (EV_READ | EV_PERSIST) &&
                !(r && (r->body_state == BODY_GATED || r->body_state == BODY_HELD))) {
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

/* Records the call's latency: from its start to the end of the reply,
 * retries included (retrieve: the whole transfer). */
static void wh_observe(struct wh_req *r, const char *result)
{
    double took = util_mono() - r->started;

    metrics_observe(&metrics.webhook_latency[r->event], took);
    if (log_enabled(LOG_DEBUG))
        log_kv(LOG_DEBUG, r->session[0] ? r->session : NULL, "webhook done",
               "event=%s id=%s http_status=%ld duration=%.3f attempts=%d result=%s",
               wh_event_names[r->event], r->id, r->code, took, r->attempts, result);
}

/* Counts a finished call and, when it failed, why; drives the breaker. */
static void wh_count(struct wh_req *r, int failed, enum metrics_wh_error why)
{
    struct wh_breaker *b = &r->c->breaker[r->event];

    if (r->probe)
        b->probing = 0;
    if (!r->fast_failed) {
        if (!failed) {
            if (b->failures >= WH_BREAKER_FAILURES)
                log_kv(LOG_INFO, NULL, "backend answers again: circuit closed", "event=%s",
                       wh_event_names[r->event]);
            b->failures = 0;
        } else if (why != MWE_BROKEN && ++b->failures >= WH_BREAKER_FAILURES) {
            if (b->failures == WH_BREAKER_FAILURES || r->probe)
                log_kv(LOG_WARN, NULL, "backend failing: circuit open",
                       "event=%s failures=%d cooldown=%d", wh_event_names[r->event], b->failures,
                       WH_BREAKER_COOLDOWN);
            b->open_until = time(NULL) + WH_BREAKER_COOLDOWN;
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
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL); /* it pointed into the request */
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
    r->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, (long)r->fresh);
    /* Retrieve: no overall deadline (its own timers); others: what is left. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->event == WH_RETRIEVE ? 0L : (left > 1 ? left : 1L));
    return 0;
}

/* Why an attempt failed: libcurl's detail when it gave one (it names the
 * TLS error, say), else its short text for the code. */
static const char *wh_errtext(struct wh_req *r)
{
    const char *code = curl_easy_strerror(r->res);

    if (!r->errbuf[0] || strcmp(r->errbuf, code) == 0)
        return code;
    snprintf(r->errmsg, sizeof(r->errmsg), "%s (%s)", code, r->errbuf);
    return r->errmsg;
}

/* ---- timers --------------------------------------------------------------- */

static void wh_arm(struct wh_req *r, long ms)
{
    struct timeval tv = util_tv_ms(ms);

    evtimer_add(&r->timer_ev, &tv);
}

static void wh_disarm(struct wh_req *r)
{
    if (r->timer_ok)
        evtimer_del(&r->timer_ev);
}

/* Ends a request that is queued, backing off or running: DONE with res. */
static void wh_end_with(struct wh_req *r, CURLcode res)
{
    r->res = res;
    wh_enter(r, RQ_DONE);
    wh_note(r);
}

static void wh_launch(struct wh_req *r);

/* libevent: the queue deadline passed, the backoff is over, or a retrieve
 * made no progress. */
static void wh_req_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct wh_req *r = arg;
    struct wh_client *c = r->c;

    (void)fd;
    (void)what;
    switch (r->state) {
    case RQ_BACKOFF:
        wh_launch(r);
        break;
    case RQ_QUEUED:
        log_kv(LOG_WARN, NULL, "webhook timed out waiting for a slot", "event=%s id=%s queued=%zu",
               wh_event_names[r->event], r->id, wh_client_inflight(c));
        wh_end_with(r, CURLE_OPERATION_TIMEDOUT);
        break;
    case RQ_RUNNING:
        log_kv(LOG_WARN, NULL, "webhook timed out", "event=%s id=%s timeout=%.1f",
               wh_event_names[r->event], r->id, r->timeout);
        wh_end_with(r, CURLE_OPERATION_TIMEDOUT);
        break;
    case RQ_DONE:
    case RQ_CANCELLED:
        break;
    default:
        abort();
    }
    wh_drain(c);
}

/* ---- curl data callbacks (inside curl: record, note, never free) ---------- */

static int wh_is_json(const char *ct)
{
    return ct && strncasecmp(ct, "application/json", 16) == 0;
}

/* A 200 retrieve's body is on its way: begin(WH_OK) is due (from the
 * loop), and the body waits until the caller says resume. */
static void wh_begin_due(struct wh_req *r)
{
    r->body_state = BODY_GATED;
    r->begin_due = 1;
    wh_note(r);
}

/* Tells the caller begin(WH_OK). The backend has answered, so the call
 * counts as a success now (for the breaker too), whatever later happens to
 * the body or the client. */
static void wh_tell_begin(struct wh_req *r)
{
    r->begin_due = 0;
    r->counted = 1;
    wh_count(r, 0, MWE_N);
    r->h->begin(r->ctx, WH_OK);
}

/* Offers the held JSON content to the caller. Returns WH_DATA_TAKEN when
 * nothing is held any more, or what data() answered. */
static int wh_give_held(struct wh_req *r)
{
    int rc;

    if (r->held_off >= r->held.len)
        return WH_DATA_TAKEN;
    rc = r->h->data(r->ctx, r->held.data + r->held_off, r->held.len - r->held_off);
    if (rc == WH_DATA_TAKEN) {
        buf_reset(&r->held);
        r->held_off = 0;
    }
    return rc;
}

/* Inside curl: a piece of a JSON retrieve's body. Returns what the write
 * callback returns. */
static size_t wh_write_json(struct wh_req *r, const char *p, size_t len)
{
    struct buf *h = &r->held;
    size_t out = 0;
    int rc;

    if (r->held_off < h->len)
        return CURL_WRITEFUNC_PAUSE; /* the caller has not taken the last piece */
    buf_reset(h);
    r->held_off = 0;
    if (buf_reserve(h, WH_CONTENT_OUT_MAX(len)) < 0 ||
        wh_content_feed(r->dec, p, len, h->data, &out) < 0) {
        r->body_state = BODY_STOPPED; /* the reply cannot be valid: wh_deliver_retrieve says how */
        return 0;
    }
    h->len = out;
    if (r->body_state == BODY_DECODE && wh_content_started(r->dec))
        wh_begin_due(r);
    if (r->body_state != BODY_FLOW || !r->h)
        return len; /* kept in held for the caller */
    rc = wh_give_held(r);
    if (rc == WH_DATA_FULL) {
        r->body_state = BODY_HELD;
        wh_disarm(r);
    } else if (rc != WH_DATA_TAKEN) {
        r->h = NULL;
        r->ctx = NULL;
        r->body_state = BODY_STOPPED;
        return 0;
    } else if (r->timeout > 0) {
        wh_arm(r, (long)(r->timeout * 1000));
    }
    return len;
}

/* The status line and headers are complete: decide where the body goes. */
static void wh_headers_complete(struct wh_req *r)
{
    long code = 0;
    char *ct = NULL;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 100 && code < 200)
        return;                  /* an interim response: the real one follows */
    if (r->event == WH_RETRIEVE) /* the time to the first byte; the whole transfer at its end */
        metrics_observe(&metrics.webhook_first_byte, util_mono() - r->started);
    r->body_state = BODY_BUFFER;
    if (r->event != WH_RETRIEVE || code != 200)
        return;
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (wh_is_json(ct) && (r->dec = malloc(sizeof(*r->dec)))) {
        /* The JSON form: decoded as it streams; begin(WH_OK) once the
         * content has begun, since a malformed reply before it is still a
         * plain failure (no +OK). Without memory for the decoder the body is
         * buffered and fails as WH_TEMP. */
        wh_content_init(r->dec);
        r->body_state = BODY_DECODE;
    } else if (!wh_is_json(ct)) {
        /* A raw message: the caller hears begin(WH_OK) from the loop; the
         * body waits (paused at its first byte) until the caller says
         * resume. */
        wh_begin_due(r);
    }
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
}

/* CURLOPT_HEADERFUNCTION */
static size_t wh_header_cb(char *p, size_t size, size_t n, void *arg)
{
    struct wh_req *r = arg;
    size_t len = size * n;
    static const char te[] = "transfer-encoding:";

    r->got_bytes = 1;
    if (len > sizeof(te) && strncasecmp(p, te, sizeof(te) - 1) == 0 &&
        memmem(p, len, "chunked", 7) != NULL)
        r->chunked = 1;
    if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n'))
        wh_headers_complete(r);
    return len;
}

/* CURLOPT_WRITEFUNCTION */
static size_t wh_write_cb(char *p, size_t size, size_t n, void *arg)
{
    struct wh_req *r = arg;
    size_t len = size * n;
    int rc;

    r->got_bytes = 1;
    if (r->dec && r->body_state != BODY_STOPPED)
        return wh_write_json(r, p, len);
    switch (r->body_state) {
    case BODY_WAIT:
    case BODY_BUFFER:
        if (r->reply.len + len > r->reply_max || buf_add(&r->reply, p, len) < 0) {
            r->too_large = 1;
            return 0; /* the transfer fails: the call is WH_TEMP */
        }
        return len;
    case BODY_GATED:
    case BODY_HELD:
        wh_disarm(r); /* no-progress time runs only while not paused */
        return CURL_WRITEFUNC_PAUSE;
    case BODY_FLOW:
        break;
    case BODY_STOPPED:
    case BODY_DECODE:
        return 0;
    default:
        abort();
    }
    if (!r->h) {
        r->body_state = BODY_STOPPED;
        return 0;
    }
    rc = r->h->data(r->ctx, p, len);
    if (rc == WH_DATA_FULL) {
        r->body_state = BODY_HELD;
        wh_disarm(r);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (rc != WH_DATA_TAKEN) {
        /* The caller has all it wants (TOP) or is gone: no callback follows. */
        r->h = NULL;
        r->ctx = NULL;
        r->body_state = BODY_STOPPED;
        return 0;
    }
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
    return len;
}

/* ---- life of a request (loop only) ---------------------------------------- */

static void wh_req_free(struct wh_req *r)
{
    METRIC_DEC(webhook_inflight);
    wh_disarm(r);
    if (r->easy)
        wh_easy_put(r->c, r->easy, r->big_buffer);
    if (r->body) {
        util_wipe(r->body, r->body_len);
        free(r->body);
    }
    buf_free(&r->reply);
    buf_free(&r->held);
    if (r->dec) {
        wh_content_free(r->dec);
        free(r->dec);
    }
    free(r);
}

/* Takes r out of curl, its list, its slot and the completion queue, and
 * frees it. */
static void wh_release(struct wh_req *r)
{
    struct wh_client *c = r->c;

    if (r->in_multi) {
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = 0;
    }
    if (r->noted) {
        TAILQ_REMOVE(&c->notes, r, note);
        r->noted = 0;
    }
    if (r->probe)
        c->breaker[r->event].probing = 0; /* however the probe ended, the next call may probe */
    if (r->in_queue) {
        TAILQ_REMOVE(&c->queue, r, link);
    } else {
        TAILQ_REMOVE(&c->active, r, link);
        if (r->slot)
            c->running--;
        if (r->counts_stream)
            c->streams--;
    }
    wh_req_free(r);
}

/* Starts (or restarts) the transfer of a request that holds a slot. */
static void wh_launch(struct wh_req *r)
{
    struct wh_client *c = r->c;
    struct wh_breaker *b = &c->breaker[r->event];

    if (b->failures >= WH_BREAKER_FAILURES) {
        if (time(NULL) < b->open_until || b->probing) {
            /* Open circuit: answer at once instead of waiting on a dead backend. */
            r->fast_failed = 1;
            r->attempts = WH_RETRIES;
            wh_end_with(r, CURLE_COULDNT_CONNECT);
            return;
        }
        r->probe = 1; /* half open: this call tests the backend */
        b->probing = 1;
    }
    r->attempts++;
    if (r->event != WH_RETRIEVE)
        wh_disarm(r); /* curl's own timeout takes over */
    r->got_bytes = r->chunked = r->too_large = 0;
    r->body_state = BODY_WAIT;
    buf_reset(&r->reply);
    if (wh_setup_easy(r) < 0 || curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
        wh_end_with(r, CURLE_OUT_OF_MEMORY);
        return;
    }
    r->in_multi = 1;
    wh_enter(r, RQ_RUNNING);
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
        r->in_queue = 0;
        r->slot = 1;
        c->running++;
        if (r->event == WH_RETRIEVE) {
            r->counts_stream = 1;
            c->streams++;
        }
        wh_launch(r);
    }
}

/* Whether a failed attempt may be tried again: an idempotent call that got
 * no response byte, with time left. A transport error qualifies; so does
 * any other failure on a connection that was reused (a kept-alive
 * connection the backend had closed, or one a misbehaving earlier reply
 * left unusable): the next attempt then opens a fresh one. */
static int wh_may_retry(struct wh_req *r)
{
    long connects = 1;
    int transport;

    if (!wh_idempotent(r->event) || r->got_bytes || r->attempts >= WH_RETRIES || !r->h ||
        r->fast_failed || r->res == CURLE_OK || r->res == CURLE_OPERATION_TIMEDOUT || r->too_large)
        return 0;
    transport = r->res == CURLE_COULDNT_CONNECT || r->res == CURLE_SEND_ERROR ||
                r->res == CURLE_RECV_ERROR || r->res == CURLE_GOT_NOTHING ||
                r->res == CURLE_COULDNT_RESOLVE_HOST;
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects);
    r->fresh = connects == 0; /* it ran on a reused connection */
    if (!transport && !r->fresh)
        return 0;
    return wh_ms_left(r) > (WH_RETRY_BACKOFF_MS << r->attempts);
}

/* A 401 or 403: the backend refused the call itself, which is a setting to
 * fix on one side or the other, not a verdict on the client. */
static void wh_log_refused(const struct wh_req *r)
{
    log_kv(LOG_ERROR, NULL, "webhook refused by the backend: check backend_secret / backend_token",
           "event=%s id=%s http_status=%ld", wh_event_names[r->event], r->id, r->code);
}

/* Keeps a failed call for /status's recent failures (lib/recent.h): its
 * event, status or transport error, duration, session and a short reason:
 * after a transport error, the attempts and libcurl's detail; else `what`
 * (may be NULL) before `why`, which is this file's, wh_json's or
 * wh_content's text, never a body (jansson's messages end with the text it
 * stopped at, " near '...'", which may be the body's: that is cut). */
static void wh_recent(const struct wh_req *r, const char *what, const char *why)
{
    struct recent_failure f;
    const char *near = why ? strstr(why, " near ") : NULL;

    memset(&f, 0, sizeof(f));
    f.at_ms = util_real_ms();
    f.event = (int)r->event;
    f.http_status = r->code;
    f.duration = util_mono() - r->started;
    if (r->res != CURLE_OK)
        snprintf(f.transport, sizeof(f.transport), "%s",
                 r->fast_failed ? "circuit open" : curl_easy_strerror(r->res));
    if (!why || !*why)
        why = wh_json_refused(r->code) ? "the backend refused the webhook" : "failed";
    if (!what && r->fast_failed)
        snprintf(f.reason, sizeof(f.reason), "not sent: the backend failed too often in a row");
    else if (!what && f.transport[0] && !r->too_large)
        snprintf(f.reason, sizeof(f.reason), "the transfer failed, attempts: %d%s%.65s",
                 r->attempts, r->errbuf[0] ? ": " : "", r->errbuf); /* libcurl's detail, cut */
    else
        snprintf(f.reason, sizeof(f.reason), "%s%s%.*s", what ? what : "", what ? ": " : "",
                 near ? (int)(near - why) : (int)strlen(why), why);
    snprintf(f.session, sizeof(f.session), "%s", r->session);
    recent_add(&f);
}

/* Delivers a non-streamed result to the caller (its final callback). */
static void wh_deliver(struct wh_req *r)
{
    const struct wh_handler *h = r->h;
    void *ctx = r->ctx;
    struct wh_result res_r;
    char *ct = NULL;

    memset(&res_r, 0, sizeof(res_r));
    if (r->res != CURLE_OK) {
        res_r.status = WH_TEMP;
        res_r.http_status = r->code;
        res_r.error = strdup(r->fast_failed ? "circuit open"
                             : r->too_large ? "reply larger than the contract allows"
                                            : wh_errtext(r));
    } else {
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
        wh_json_parse(r->event, r->code, ct, r->reply.data, r->reply.len, r->c->p.max_messages,
                      &res_r);
    }
    wh_observe(r, res_r.status == WH_OK ? "ok" : res_r.status == WH_REFUSED ? "refused" : "failed");
    if (r->too_large)
        wh_count(r, 1, MWE_BODY);
    else if (r->res != CURLE_OK)
        wh_count(r, 1, wh_error_kind(r->res));
    else if (res_r.status == WH_TEMP)
        wh_count(r, 1,
                 wh_json_refused(r->code)          ? MWE_REFUSED
                 : r->code >= 200 && r->code < 300 ? MWE_BODY
                                                   : MWE_STATUS);
    else
        wh_count(r, 0, MWE_N);
    if (res_r.status == WH_TEMP && r->res == CURLE_OK && wh_json_refused(r->code))
        wh_log_refused(r);
    else if (res_r.status == WH_TEMP)
        log_kv(LOG_WARN, NULL, "webhook failed", "event=%s id=%s http_status=%ld error=%s",
               wh_event_names[r->event], r->id, r->code, res_r.error ? res_r.error : "");
    if (res_r.status == WH_TEMP)
        wh_recent(r, NULL, res_r.error);
    r->h = NULL;
    r->ctx = NULL;
    h->done(ctx, &res_r);
    wh_result_free(&res_r);
}

/* A retrieve that never reached its body: its final callback is begin()
 * with this status. */
static void wh_retrieve_refused(struct wh_req *r, enum wh_status st, enum metrics_wh_error why,
                                const char *err)
{
    const struct wh_handler *h = r->h;
    void *ctx = r->ctx;

    wh_observe(r, st == WH_NOT_FOUND ? "not_found" : "failed");
    wh_count(r, st == WH_TEMP, why);
    if (why == MWE_REFUSED)
        wh_log_refused(r);
    else if (st == WH_TEMP)
        log_kv(LOG_WARN, NULL, "webhook failed", "event=retrieve id=%s http_status=%ld error=%s",
               r->id, r->code, err);
    if (st == WH_TEMP)
        wh_recent(r, NULL, err);
    r->h = NULL;
    r->ctx = NULL;
    h->begin(ctx, st);
}

/* The verdict on a finished JSON body: 0 when the reply was valid (its
 * last decoded bytes join held), or the reason it was not. */
static const char *wh_json_verdict(struct wh_req *r)
{
    size_t out = 0;

    if (!r->dec)
        return NULL;
    if (r->body_state != BODY_STOPPED) {
        if (buf_reserve(&r->held, WH_CONTENT_OUT_MAX(0)) < 0)
            return "out of memory";
        if (wh_content_finish(r->dec, r->held.data + r->held.len, &out) == 0) {
            r->held.len += out;
            return NULL;
        }
    }
    return wh_content_error(r->dec);
}

/*
 * A finished retrieve (DONE): tells the caller, as far as the caller lets
 * it. Returns 1 when the request is over (release it), 0 when it waits for
 * wh_resume() (it stays DONE and is noted again then).
 */
static int wh_deliver_retrieve(struct wh_req *r)
{
    const struct wh_handler *h;
    void *ctx;
    enum wh_end how;
    const char *bad = NULL;
    int rc;

    if (!r->finished) {
        r->finished = 1;
        if (r->res == CURLE_OK || r->body_state == BODY_STOPPED)
            bad = wh_json_verdict(r);
        if (!r->counted) {
            /* The caller has not heard begin: a failure, a refusal, or a
             * reply that went wrong before its body reached the caller
             * (a small JSON reply is checked whole before +OK). */
            if (r->res != CURLE_OK && !bad && r->body_state != BODY_STOPPED) {
                wh_retrieve_refused(r, WH_TEMP, r->too_large ? MWE_BODY : wh_error_kind(r->res),
                                    r->fast_failed ? "circuit open"
                                    : r->too_large ? "reply larger than the contract allows"
                                                   : wh_errtext(r));
            } else if (r->code == 404) {
                wh_retrieve_refused(r, WH_NOT_FOUND, MWE_N, "");
            } else if (wh_json_refused(r->code)) {
                wh_retrieve_refused(r, WH_TEMP, MWE_REFUSED, "");
            } else if (r->code != 200) {
                wh_retrieve_refused(r, WH_TEMP, MWE_STATUS, "unexpected status");
            } else if (bad || !r->begin_due) {
                wh_retrieve_refused(r, WH_TEMP, MWE_BODY, bad ? bad : "no content in the reply");
            } else {
                goto told; /* whole and sound: begin, then the body */
            }
            return 1;
        }
        r->broken = bad != NULL || (r->res != CURLE_OK && r->body_state != BODY_STOPPED);
        if (r->broken) {
            METRIC_INC(webhook_errors[r->event][bad ? MWE_BODY : MWE_BROKEN]);
            log_kv(LOG_WARN, NULL, "retrieve broke after +OK", "id=%s error=%s", r->id,
                   bad ? bad : wh_errtext(r));
            wh_recent(r, "broke after +OK", bad ? bad : wh_errtext(r));
        }
    }
told:
    if (r->begin_due) {
        wh_tell_begin(r);
        if (!r->h)
            return 1; /* cancelled inside begin */
    }
    if (!r->broken && r->body_state != BODY_FLOW)
        return 0; /* until the caller says resume */
    if (!r->broken) {
        rc = wh_give_held(r);
        if (rc == WH_DATA_FULL) {
            r->body_state = BODY_HELD;
            return 0;
        }
        if (rc != WH_DATA_TAKEN)
            return 1; /* stopped: no callback follows */
    }
    h = r->h;
    ctx = r->ctx;
    if (r->broken) {
        how = WH_END_BROKEN;
    } else {
        curl_off_t cl = -1;
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        how = r->dec || r->chunked || cl >= 0 ? WH_END_OK : WH_END_UNSIZED;
    }
    wh_observe(r, how == WH_END_BROKEN ? "broken" : "ok");
    r->h = NULL;
    r->ctx = NULL;
    h->end(ctx, how);
    return 1;
}

/* Settles a DONE request: retry, deliver, or wait for the caller. */
static void wh_complete(struct wh_req *r)
{
    struct wh_client *c = r->c;

    wh_disarm(r);
    if (r->in_multi) {
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = 0;
    }
    if (!r->h) {
        /* Stopped by the caller (TOP has its lines, or the client left):
         * nobody to tell. A call the backend answered counts its time to
         * the stop. */
        if (r->counted)
            wh_observe(r, "stopped");
        wh_release(r);
        return;
    }
    if (!r->counted && wh_may_retry(r)) {
        long ms = WH_RETRY_BACKOFF_MS << (r->attempts - 1);
        log_kv(LOG_INFO, NULL, "webhook retry", "event=%s id=%s attempt=%d error=%s fresh=%d",
               wh_event_names[r->event], r->id, r->attempts + 1, wh_errtext(r), r->fresh);
        METRIC_INC(webhook_retries[r->event]);
        wh_enter(r, RQ_BACKOFF);
        wh_arm(r, ms);
        return;
    }
    if (r->event != WH_RETRIEVE) {
        wh_deliver(r);
        wh_release(r);
        return;
    }
    if (wh_deliver_retrieve(r))
        wh_release(r);
}

/* A running request was noted: a 200 retrieve's begin is due, or the
 * caller wants its body to flow again. */
static void wh_settle_running(struct wh_req *r)
{
    CURLcode res;
    int rc;

    if (r->begin_due && r->h)
        wh_tell_begin(r); /* the caller records it and says resume (or cancel) later */
    if (!r->resume || !r->h || (r->body_state != BODY_GATED && r->body_state != BODY_HELD))
        return;
    r->resume = 0;
    rc = wh_give_held(r); /* decoded JSON the caller has not taken yet */
    if (rc == WH_DATA_FULL)
        return;
    if (rc != WH_DATA_TAKEN) {
        r->h = NULL;
        r->ctx = NULL;
        r->body_state = BODY_STOPPED;
        wh_end_with(r, CURLE_WRITE_ERROR); /* the caller stopped: just end it */
        return;
    }
    r->body_state = BODY_FLOW;
    if (r->timeout > 0)
        wh_arm(r, (long)(r->timeout * 1000));
    /* curl may call data() from here, with what it held while paused. When
     * that write fails (data() stopped the transfer: TOP has its lines, or
     * the client is gone), curl_easy_pause() returns the error but leaves
     * the transfer in the multi handle, where nothing would end it before
     * the no-progress timer: end it now. */
    res = curl_easy_pause(r->easy, CURLPAUSE_CONT);
    if (res != CURLE_OK)
        wh_end_with(r, res);
}

/* Collects the transfers curl has finished. */
static void wh_collect(struct wh_client *c)
{
    CURLMsg *m;
    int left;
    struct wh_req *r;

    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        r->res = m->data.result;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->code);
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = 0;
        if (r->state == RQ_RUNNING)
            wh_enter(r, RQ_DONE);
        wh_note(r);
    }
}

/*
 * The completion queue: the one place that delivers results, retries,
 * frees requests and moves the queue on. Runs from the loop only (after
 * curl_multi_socket_action has returned, from the kick event, from a
 * request's timer), never inside a curl callback.
 */
static void wh_drain(struct wh_client *c)
{
    struct wh_req *r;

    if (c->draining)
        return; /* the running drain picks up what was just noted */
    c->draining = 1;
    do {
        wh_collect(c);
        while ((r = TAILQ_FIRST(&c->notes))) {
            TAILQ_REMOVE(&c->notes, r, note);
            r->noted = 0;
            switch (r->state) {
            case RQ_CANCELLED:
                wh_release(r);
                break;
            case RQ_DONE:
                wh_complete(r);
                break;
            case RQ_RUNNING:
                wh_settle_running(r);
                break;
            case RQ_QUEUED:
            case RQ_BACKOFF:
                break;
            default:
                abort();
            }
        }
        wh_pump(c);
    } while (!TAILQ_EMPTY(&c->notes));
    c->draining = 0;
}

/* libevent: the kick (something was noted or queued). */
static void wh_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wh_drain(arg);
}

/* ---- public ------------------------------------------------------------- */

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
    r->reply_max = wh_reply_max(r->event, c->p.max_messages);
    if (evtimer_assign(&r->timer_ev, c->base, wh_req_timer_cb, r) == 0)
        r->timer_ok = 1;
    if (!r->body || !r->easy || !r->timer_ok) {
        wh_req_free(r);
        return NULL;
    }
    snprintf(r->id, sizeof(r->id), "msg_%s_%lu", call->session ? call->session : "x", ++c->seq);
    snprintf(r->session, sizeof(r->session), "%s", call->session ? call->session : "");
    wh_url_for(&c->p, r->event, r->url, sizeof(r->url));
    t = wh_timeout_for(&c->p, r->event);
    r->timeout = t;
    r->started = util_mono();
    r->deadline = r->started + t;
    r->state = RQ_QUEUED;
    r->in_queue = 1;
    TAILQ_INSERT_TAIL(&c->queue, r, link);
    if (t > 0) /* bounds the wait for a slot; replaced once it runs */
        wh_arm(r, (long)(t * 1000));
    log_kv(LOG_DEBUG, call->session, "webhook", "event=%s id=%s", wh_event_names[r->event], r->id);
    event_active(c->kick, EV_TIMEOUT, 0); /* the drain gives it a slot */
    return r;
}

void wh_cancel(struct wh_req *r)
{
    if (!r || !r->h)
        return;
    r->h = NULL;
    r->ctx = NULL;
    wh_disarm(r);
    wh_enter(r, RQ_CANCELLED);
    wh_note(r); /* the drain takes it out of curl and frees it */
}

void wh_resume(struct wh_req *r)
{
    if (!r || !r->h)
        return;
    if (r->state == RQ_DONE && (r->body_state == BODY_GATED || r->body_state == BODY_HELD)) {
        r->body_state = BODY_FLOW; /* the rest is in held (JSON) or nothing is left */
        wh_note(r);
        return;
    }
    r->resume = 1;
    wh_note(r);
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
    event_active(c->kick, EV_TIMEOUT, 0); /* a larger pool or max_inflight: go on */
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
    TAILQ_INIT(&c->notes);
    snprintf(c->user_agent, sizeof(c->user_agent), "pop3gw/%s", POP3GW_VERSION);
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, wh_timeout_cb, c);
    c->kick = event_new(base, -1, 0, wh_kick_cb, c);
    if (!c->multi || !c->timer || !c->kick)
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
    /* Every request goes, without a callback. */
    while ((r = TAILQ_FIRST(&c->queue))) {
        r->h = NULL;
        wh_release(r);
    }
    while ((r = TAILQ_FIRST(&c->active))) {
        r->h = NULL;
        wh_release(r);
    }
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
    if (c->kick)
        event_free(c->kick);
    wh_keys_clear(&c->keys);
    util_free_secret(&c->token);
    wh_params_free(&c->p);
    free(c);
}
