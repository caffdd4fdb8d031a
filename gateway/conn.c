/*
 * conn: the transport shell around one POP3 session.
 *
 * Moves bytes between the client's bufferevent and the sans-I/O session, runs
 * the session's backend calls through the worker's webhook client, streams
 * retrieved messages through the converter into the client's output buffer,
 * and owns the timers (login and idle timeout, failed-login delay, send
 * timeout). Work that a callback triggers runs later from the `kick` event,
 * so the session is never re-entered from inside a curl or bufferevent
 * callback, and a connection is freed only from the event loop.
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/conv.h"
#include "gateway/log.h"
#include "gateway/pop3.h"
#include "gateway/server.h"
#include "webhook/wh_client.h"

#define CONN_INPUT_MAX (64 * 1024)     /* buffered client input before reading stops */
#define CONN_OUTPUT_HIGH (256 * 1024)  /* above this a streamed retrieve pauses */
#define CONN_OUTPUT_LOW (64 * 1024)    /* ... and resumes below this */

struct conn {
    TAILQ_ENTRY(conn) link; /* in the worker's list */
    struct worker *w;
    struct bufferevent *bev;
    struct pop3_session *s;
    struct wh_req *req;     /* the session's call in flight, or NULL */
    struct event *timer;    /* login / idle timeout */
    struct event *delay;    /* failed-login delay */
    struct event *kick;     /* runs conn_process from the loop */
    struct conv conv;       /* retrieve being streamed */
    int streaming;          /* conv is in use */
    int gone;               /* the client closed or broke the connection */
    int closing;            /* flush the output, then free */
    const char *reason;     /* why it ends, for the disconnect event */
    char id[24];
    char ip[INET6_ADDRSTRLEN];
    int port;
    int tls;
};

static void conn_process(struct conn *c);
static void conn_free(struct conn *c);
static void conn_flush(struct conn *c);

static void conn_kick(struct conn *c)
{
    event_active(c->kick, EV_TIMEOUT, 0);
}

/* ---- webhook callbacks ------------------------------------------------ */

/* wh_start(): the result of a non-streamed call. */
static void conn_wh_done(void *ctx, struct wh_result *r)
{
    struct conn *c = ctx;

    c->req = NULL;
    pop3_call_done(c->s, r);
    conn_kick(c);
}

/* wh_start(): a retrieve's status is known. */
static int conn_wh_begin(void *ctx, enum wh_status st)
{
    struct conn *c = ctx;
    const struct wh_call *call = pop3_call(c->s);
    long lines = call ? call->lines : -1;
    int stream = pop3_retrieve_begin(c->s, st);

    conn_flush(c); /* "+OK" must precede the body in the output buffer */
    if (stream) {
        conv_init(&c->conv, lines);
        c->streaming = 1;
    } else {
        c->req = NULL;
        conn_kick(c);
    }
    return stream;
}

/* wh_start(): is the client's output full? */
static int conn_wh_full(void *ctx)
{
    struct conn *c = ctx;
    return evbuffer_get_length(bufferevent_get_output(c->bev)) >= CONN_OUTPUT_HIGH;
}

/* Ends a streamed message: final CRLF if needed and ".". */
static void conn_stream_end(struct conn *c, int ok)
{
    const struct wh_call *call = pop3_call(c->s);
    char tail[8];
    size_t n;

    if (ok) {
        n = conv_finish(&c->conv, tail);
        if (!c->gone)
            bufferevent_write(c->bev, tail, n);
        if (call && call->lines < 0 && c->conv.octets != pop3_msg_size(c->s, call->message))
            log_kv(LOG_WARN, c->id, "message size differs from listing",
                   "message=%u listed=%llu sent=%llu", (unsigned)call->message,
                   (unsigned long long)pop3_msg_size(c->s, call->message),
                   (unsigned long long)c->conv.octets);
    }
    c->streaming = 0;
    c->req = NULL;
    pop3_retrieve_end(c->s, ok);
    conn_kick(c);
}

/* wh_start(): body bytes of a retrieve, converted into the output buffer. */
static int conn_wh_data(void *ctx, const char *p, size_t n)
{
    struct conn *c = ctx;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer_iovec v;

    if (c->gone) {
        c->streaming = 0;
        c->req = NULL;
        pop3_retrieve_end(c->s, 0);
        conn_kick(c);
        return -1;
    }
    if (evbuffer_reserve_space(out, (ev_ssize_t)CONV_OUT_MAX(n), &v, 1) < 1)
        return -1;
    v.iov_len = conv_feed(&c->conv, p, n, v.iov_base);
    evbuffer_commit_space(out, &v, 1);
    if (conv_done(&c->conv)) {
        /* TOP has all it needs: stop the transfer. */
        conn_stream_end(c, 1);
        return -1;
    }
    return 0;
}

/* wh_start(): the retrieve's body is complete or broke. */
static void conn_wh_end(void *ctx, int ok)
{
    struct conn *c = ctx;

    if (!ok)
        log_kv(LOG_WARN, c->id, "retrieve broke after +OK: closing", "client=%s", c->ip);
    conn_stream_end(c, ok);
}

static const struct wh_handler conn_handler = {
    .done = conn_wh_done,
    .begin = conn_wh_begin,
    .full = conn_wh_full,
    .data = conn_wh_data,
    .end = conn_wh_end,
};

/* wh_start(): a disconnect nobody waits for. */
static void conn_wh_ignore(void *ctx, struct wh_result *r)
{
    (void)ctx;
    (void)r;
}

static const struct wh_handler conn_fire_and_forget = {.done = conn_wh_ignore};

/* ---- driving the session ---------------------------------------------- */

static void conn_arm_timer(struct conn *c)
{
    const struct cfg *cfg = c->w->srv->cfg;
    double t = pop3_state(c->s) == POP3_TRANSACTION ? cfg->idle_timeout : cfg->login_timeout;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};

    evtimer_add(c->timer, &tv);
}

/* Moves the session's replies to the client. */
static void conn_flush(struct conn *c)
{
    size_t n;
    const char *out = pop3_output(c->s, &n);

    if (n && !c->gone)
        bufferevent_write(c->bev, out, n);
    pop3_output_clear(c->s);
}

/* Starts the session's pending call. */
static void conn_start_call(struct conn *c)
{
    const struct wh_call *call = pop3_call(c->s);
    struct wh_result r;

    c->req = wh_start(c->w->wh, call, &conn_handler, c);
    if (c->req)
        return;
    memset(&r, 0, sizeof(r));
    r.status = WH_TEMP;
    if (call->event == WH_RETRIEVE)
        pop3_retrieve_begin(c->s, WH_TEMP);
    else
        pop3_call_done(c->s, &r);
    conn_kick(c);
}

/* Feeds buffered input while the session takes it. Returns 1 when a
 * command was consumed. */
static int conn_feed(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    int any = 0;

    while (pop3_want(c->s) == POP3_WANT_INPUT && !c->w->draining) {
        size_t len = evbuffer_get_length(in), max = pop3_line_max(c->s), k;
        unsigned char *p;

        if (len == 0)
            break;
        if (len > max)
            len = max;
        p = evbuffer_pullup(in, (ev_ssize_t)len);
        k = pop3_feed(c->s, (const char *)p, len);
        if (k == 0)
            break;
        evbuffer_drain(in, k);
        any = 1;
    }
    return any;
}

/* Runs the session as far as it goes; called from the loop only. */
static void conn_process(struct conn *c)
{
    const struct cfg *cfg = c->w->srv->cfg;

    if (c->closing)
        return;
    if (!c->streaming && !c->req)
        conn_feed(c);
    conn_flush(c);
    switch (pop3_want(c->s)) {
    case POP3_WANT_INPUT:
        if (c->w->draining) {
            pop3_shutdown(c->s);
            c->reason = "shutdown";
            conn_flush(c);
            break;
        }
        if (c->gone) {
            c->reason = "client_closed";
            conn_free(c);
            return;
        }
        conn_arm_timer(c);
        /* Reading stops only at the input cap; re-enable below it. */
        bufferevent_enable(c->bev, EV_READ);
        return;
    case POP3_WANT_CALL:
        evtimer_del(c->timer);
        if (!c->req && !c->streaming)
            conn_start_call(c);
        if (c->gone && !pop3_committing(c->s)) {
            conn_free(c);
            return;
        }
        return;
    case POP3_WANT_DELAY: {
        double t = cfg->auth_failure_delay;
        struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
        evtimer_del(c->timer);
        if (c->gone) {
            conn_free(c);
            return;
        }
        if (!evtimer_pending(c->delay, NULL))
            evtimer_add(c->delay, &tv);
        return;
    }
    case POP3_WANT_STLS:
        /* No TLS in this build of the shell: the session never offers STLS
         * without a certificate, so this is unreachable. */
        pop3_timeout(c->s);
        conn_flush(c);
        break;
    case POP3_WANT_CLOSE:
        break;
    default:
        abort();
    }
    /* POP3_WANT_CLOSE: flush, then free from the write callback. */
    if (!c->reason)
        c->reason = "client_closed";
    c->closing = 1;
    evtimer_del(c->timer);
    bufferevent_disable(c->bev, EV_READ);
    if (c->gone || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
}

/* ---- event callbacks -------------------------------------------------- */

/* event: the kick. */
static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_process(arg);
}

/* bufferevent: input arrived. */
static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    conn_process(c);
}

/* bufferevent: output drained to the low-water mark. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            conn_free(c);
        return;
    }
    if (c->req && c->streaming)
        wh_resume(c->req);
}

/* bufferevent: EOF, error or send timeout. */
static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_TIMEOUT) {
        log_kv(LOG_INFO, c->id, "send timeout: client stopped reading", "client=%s", c->ip);
        c->reason = "timeout";
    } else if (what & BEV_EVENT_ERROR) {
        c->reason = "error";
    } else {
        c->reason = "client_closed";
    }
    c->gone = 1;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->closing) {
        conn_free(c);
        return;
    }
    /* Complete lines already buffered still run (a QUIT among them commits). */
    conn_process(c);
}

/* event: login or idle timeout. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    c->reason = "timeout";
    pop3_timeout(c->s);
    conn_process(c);
}

/* event: the failed-login delay passed. */
static void conn_delay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    pop3_delay_done(c->s);
    conn_process(c);
}

/* ---- life cycle ------------------------------------------------------- */

static int conn_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const unsigned char *a = in6->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        return memcmp(a, mapped, 12) == 0 && a[12] == 127;
    }
    return 0;
}

static void conn_addr(struct conn *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, c->ip, sizeof(c->ip));
        c->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, c->ip, sizeof(c->ip));
        c->port = ntohs(in6->sin6_port);
    } else {
        snprintf(c->ip, sizeof(c->ip), "unknown");
    }
}

static void conn_hex(char *out, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *sa, int socklen, int tls)
{
    const struct cfg *cfg = w->srv->cfg;
    struct conn *c;
    struct pop3_peer peer;
    unsigned char rnd[16];
    char ts_rand[17], apop_ts[320];
    struct timeval send_tv;
    int one = 1;

    (void)socklen;
    if (cfg->max_connections > 0 &&
        atomic_fetch_add(&w->srv->connections, 1) >= cfg->max_connections) {
        static const char full[] = "-ERR [SYS/TEMP] too many connections, try again later\r\n";
        atomic_fetch_sub(&w->srv->connections, 1);
        if (write(fd, full, sizeof(full) - 1) < 0) {
            /* nothing more to do: the connection closes either way */
        }
        close(fd);
        log_kv(LOG_WARN, NULL, "connection refused: max_connections reached", "limit=%d",
               cfg->max_connections);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->w = w;
    c->tls = tls;
    conn_addr(c, sa);
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        goto fail;
    conn_hex(c->id, rnd, 8);
    conn_hex(ts_rand, rnd + 8, 8);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(w->base, conn_timer_cb, c);
    c->delay = evtimer_new(w->base, conn_delay_cb, c);
    c->kick = event_new(w->base, -1, 0, conn_kick_cb, c);
    if (!c->bev || !c->timer || !c->delay || !c->kick)
        goto fail_free;
    fd = -1; /* the bufferevent owns it now */
    snprintf(apop_ts, sizeof(apop_ts), "<%s.%lld@%s>", ts_rand, (long long)time(NULL),
             cfg->hostname);
    memset(&peer, 0, sizeof(peer));
    peer.id = c->id;
    peer.ip = c->ip;
    peer.port = c->port;
    peer.tls = tls;
    peer.loopback = conn_is_loopback(sa);
    peer.apop_timestamp = cfg->apop ? apop_ts : NULL;
    c->s = pop3_new(&w->srv->params, &peer);
    if (!c->s)
        goto fail_free;
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->n_conns++;
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_INPUT_MAX);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_LOW, 0);
    send_tv.tv_sec = (time_t)cfg->send_timeout;
    send_tv.tv_usec = 0;
    bufferevent_set_timeouts(c->bev, NULL, &send_tv);
    log_kv(LOG_DEBUG, c->id, "connect", "client=%s port=%d tls=%d", c->ip, c->port, tls);
    conn_process(c);
    return;
fail_free:
    if (c->bev)
        bufferevent_free(c->bev);
    else if (fd >= 0)
        close(fd);
    fd = -1;
    if (c->timer)
        event_free(c->timer);
    if (c->delay)
        event_free(c->delay);
    if (c->kick)
        event_free(c->kick);
    free(c);
    c = NULL;
fail:
    free(c);
    if (fd >= 0)
        close(fd);
    atomic_fetch_sub(&w->srv->connections, 1);
    log_kv(LOG_ERROR, NULL, "cannot set up a connection", "error=%s", "out of memory");
}

/* Sends the optional disconnect event for a session that logged in and did
 * not QUIT successfully. */
static void conn_send_disconnect(struct conn *c)
{
    struct wh_call call;

    if (!c->w->srv->cfg->event_disconnect || !pop3_logged_in(c->s) || pop3_quit_done(c->s))
        return;
    memset(&call, 0, sizeof(call));
    call.event = WH_DISCONNECT;
    call.session = c->id;
    call.client_ip = c->ip;
    call.client_port = c->port;
    call.client_tls = c->tls;
    call.user = pop3_user(c->s);
    call.mailbox = pop3_mailbox(c->s);
    call.utf8 = pop3_utf8(c->s);
    call.lines = -1;
    call.reason = c->reason ? c->reason : "error";
    wh_start(c->w->wh, &call, &conn_fire_and_forget, NULL);
}

static void conn_free(struct conn *c)
{
    struct worker *w = c->w;

    log_kv(LOG_DEBUG, c->id, "disconnect", "client=%s reason=%s", c->ip,
           c->reason ? c->reason : "");
    if (c->req)
        wh_cancel(c->req);
    conn_send_disconnect(c);
    TAILQ_REMOVE(&w->conns, c, link);
    w->n_conns--;
    event_free(c->timer);
    event_free(c->delay);
    event_free(c->kick);
    bufferevent_free(c->bev);
    pop3_free(c->s);
    free(c);
    atomic_fetch_sub(&w->srv->connections, 1);
}

struct conn *conn_next(struct conn *c)
{
    return TAILQ_NEXT(c, link);
}

void conn_drain(struct conn *c)
{
    conn_kick(c);
}

void conn_abort(struct conn *c)
{
    if (!c->reason || !c->closing)
        c->reason = "shutdown";
    conn_free(c);
}
