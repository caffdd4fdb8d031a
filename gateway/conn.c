/*
 * conn: the transport shell around one POP3 session.
 *
 * Moves bytes between the client's bufferevent and the sans-I/O session,
 * runs the session's backend calls through the worker's webhook client,
 * streams retrieved messages through the converter into the client's output
 * buffer, and owns the timers (login and idle timeout, failed-login delay,
 * send timeout).
 *
 * A connection is in one of the states of CONN_STATES below and changes
 * state only through conn_enter(), which logs `old -> new` at debug level:
 *
 *   START --set up--> IDLE <--> CALL --retrieve 200--> STREAM --end--> IDLE
 *                      |                                      \--> DRAIN (spool) --> IDLE
 *                      |  \--> DELAY (failed login) --> IDLE
 *                      |  \--> STLS (+OK leaving) --> IDLE over TLS
 *                      \--> CLOSING (last replies leaving) --> CLOSED
 *   any state --conn_close()--> CLOSED --kick--> freed
 *
 * The session is entered only from this connection's own callbacks of the
 * event loop: the kick, the socket and the timers. Webhook callbacks record
 * what happened and kick (conn_wh_*); the one that runs inside curl (data)
 * only converts bytes into the output buffer. A connection is freed in one
 * place, conn_kick_cb(), on its own turn of the loop after conn_close()
 * marked it CLOSED, so nothing frees it while another callback (libevent,
 * curl or the session's) is still running on it.
 */
#include "gateway/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "gateway/conv.h"
#include "gateway/limits.h"
#include "gateway/pop3.h"
#include "gateway/proxy.h"
#include "gateway/settings.h"
#include "gateway/spool.h"
#include "gateway/tls.h"
#include "gateway/worker.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "webhook/wh_client.h"

#define CONN_INPUT_MAX (64 * 1024) /* buffered client input before reading stops */
#define CONN_OUTPUT_HIGH                                                                           \
    (768 * 1024) /* above this no command is read; a stream that cannot spool pauses */
#define CONN_OUTPUT_LOW (256 * 1024) /* ... and goes on below this */
#define CONN_STREAM_KEEP (16 * 1024) /* a spooling stream keeps this much in memory */
#define CONN_SPILL_AFTER_MS 50       /* a client that leaves a full output this long is slow */
#define CONN_TLS_REFILL (16 * 1024)  /* spooled bytes copied into a TLS output at a time */
#define CONN_SEGMENT_MAX (16 * 1024 * 1024) /* spooled bytes handed to a plain output at a time */
#define CONN_LINGER_MAX 5.0                 /* seconds the last replies may take to leave */

/*
 * The states of a connection: X(ENUM, name, shown), where `shown` is what
 * /sessions calls a connection in this state, or NULL for the session's own
 * state (AUTHORIZATION, TRANSACTION, UPDATE: pop3_state_name()).
 */
#define CONN_STATES(X)                                                                             \
    X(START, "start", "CONNECTING")  /* accepted; the PROXY header or the set-up is next */        \
    X(IDLE, "idle", NULL)            /* the session waits for a command */                         \
    X(CALL, "call", NULL)            /* a webhook call runs; no command is read */                 \
    X(STREAM, "stream", NULL)        /* a retrieve's body flows to the client (memory, spool) */   \
    X(DRAIN, "drain", NULL)          /* the backend is done; the rest leaves from the spool */     \
    X(DELAY, "delay", NULL)          /* a refused login's reply waits out auth_failure_delay */    \
    X(STLS, "stls", NULL)            /* the +OK to STLS is leaving; then TLS starts */             \
    X(CLOSING, "closing", "CLOSING") /* the last replies are leaving */                            \
    X(CLOSED, "closed", "CLOSING")   /* marked: the kick frees it */

enum conn_state {
#define X(e, n, shown) CONN_##e,
    CONN_STATES(X)
#undef X
        CONN_N_STATES
};

static const struct {
    const char *name, *shown;
} conn_states[CONN_N_STATES] = {
#define X(e, n, shown) {n, shown},
    CONN_STATES(X)
#undef X
};

/*
 * Where a stream's bytes go once the client's output is full. A fast
 * reader stays in memory: the transfer pauses above CONN_OUTPUT_HIGH and
 * goes on below CONN_OUTPUT_LOW, as the client drains it. A client that
 * leaves the output full for CONN_SPILL_AFTER_MS is slow: all but
 * CONN_STREAM_KEEP of the output moves to the spool, and the rest of the
 * message follows it at the backend's speed (SPILL_FILE). When no spool
 * can be had, the transfer keeps pausing (SPILL_PAUSE: logged and counted).
 */
enum conn_spill { SPILL_MEMORY, SPILL_FILE, SPILL_PAUSE };

/* What the webhook callbacks recorded for the kick to act on. */
enum conn_news {
    NEWS_DONE = 1,  /* a non-streamed result is in `result` */
    NEWS_BEGIN = 2, /* a retrieve's status is in `begin_status` */
    NEWS_END = 4,   /* a streamed body ended as `end_how` */
};

struct conn {
    TAILQ_ENTRY(conn) link; /* in the worker's list */
    struct worker *w;
    struct settings *set; /* the settings it started with (a reference) */
    enum conn_state state;
    struct bufferevent *bev;
    int fd;        /* the socket, until a bufferevent owns it */
    int outq_mark; /* bytes the kernel held for the client after our last write; -1 unknown */
    struct pop3_session *s;
    struct wh_req *req;          /* the session's call in flight, or NULL */
    int news;                    /* enum conn_news bits */
    struct wh_result result;     /* NEWS_DONE */
    enum wh_status begin_status; /* NEWS_BEGIN */
    enum wh_end end_how;         /* NEWS_END */
    int held;                    /* the stream is paused: the output was full */
    int stopped;                 /* the stream was stopped here: TOP had all it needed */
    struct event *timer;         /* login / idle timeout; the linger of CLOSING */
    struct event *delay;         /* failed-login delay */
    struct event *kick;          /* runs conn_process (or frees) from the loop */
    struct conv conv;            /* retrieve being streamed */
    struct spool spool;          /* a stream's bytes past CONN_STREAM_KEEP, for a slow client */
    struct evbuffer *backlog;    /* after the spool: what could not be spooled (memory), or NULL */
    enum conn_spill spill;       /* where a stream's bytes go once the client's output is full */
    struct event *spill_timer;   /* CONN_SPILL_AFTER_MS after a stream paused on a full output */
    struct evbuffer_cb_entry *out_cb; /* conn_out_cb on the output (held off while spilling) */
    int gone;                         /* the connection broke: nothing more can be written */
    int eof;                          /* the client closed its sending side: answer what was read */
    const char *reason;               /* why it ends, for the disconnect event and the log */
    struct event *proxy_ev;           /* waiting for the PROXY header */
    struct sockaddr_storage peer;     /* the client (after PROXY) */
    double proxy_deadline;            /* monotonic seconds */
    char id[24];
    char apop_rand[17]; /* random part of the APOP timestamp */
    char ip[INET6_ADDRSTRLEN];
    int port;
    int tls;          /* TLS is (or is about to be) active */
    int implicit_tls; /* the listener is implicit TLS */
    long long since;  /* unix time of accept */
    double started;   /* monotonic time of accept: the login deadline counts from it */
    int tls_done;     /* the TLS handshake completed */
    unsigned long long bytes_in, bytes_out;   /* POP3 octets read and written */
    unsigned n_retr, n_top;                   /* RETR and TOP replies sent whole */
    unsigned long long retr_bytes, top_bytes; /* their octets (CRLF, before dot-stuffing) */
    enum pop3_state counted;                  /* state counted in the sessions_* gauges */
    int counted_valid;
    int ip_counted; /* holds a slot in the per-address limit */
    /* A plain socket is read by rd_ev, not by its bufferevent: libevent asks
     * the kernel how much is readable (ioctl FIONREAD) before every read. */
    struct event rd_ev;
    int rd_own; /* rd_ev is assigned and reads this connection */
    int rd_on;  /* rd_ev is added */
};

static void conn_process(struct conn *c);
static void conn_flush(struct conn *c);
static int conn_make_bev(struct conn *c, int accepting_tls);
static void conn_setup_bev(struct conn *c);
static void conn_track_state(struct conn *c, int gone);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_read_off(struct conn *c);

static void conn_kick(struct conn *c)
{
    event_active(c->kick, EV_TIMEOUT, 0);
}

/* Moves c to a new state, and says so at debug level. */
static void conn_enter(struct conn *c, enum conn_state st)
{
    if (c->state == st)
        return;
    if (log_enabled(LOG_DEBUG))
        log_kv(LOG_DEBUG, c->id, "connection state", "from=%s to=%s", conn_states[c->state].name,
               conn_states[st].name);
    c->state = st;
}

/* Ends the connection: marks it CLOSED; the kick frees it on its own turn
 * of the loop. The first reason given is the one kept. */
static void conn_close(struct conn *c, const char *reason)
{
    if (!c->reason)
        c->reason = reason;
    conn_read_off(c);
    conn_enter(c, CONN_CLOSED);
    conn_kick(c);
}

/* Starts reading the client, unless CONN_INPUT_MAX bytes wait already. */
static void conn_read_on(struct conn *c)
{
    if (!c->rd_own) {
        bufferevent_enable(c->bev, EV_READ);
        return;
    }
    if (!c->rd_on && evbuffer_get_length(bufferevent_get_input(c->bev)) < CONN_INPUT_MAX) {
        event_add(&c->rd_ev, NULL);
        c->rd_on = 1;
    }
}

static void conn_read_off(struct conn *c)
{
    if (!c->rd_own) {
        if (c->bev)
            bufferevent_disable(c->bev, EV_READ);
        return;
    }
    if (c->rd_on) {
        event_del(&c->rd_ev);
        c->rd_on = 0;
    }
}

/* ---- webhook callbacks: record and kick ---------------------------------- */

/* wh_start(): the result of a non-streamed call. */
static void conn_wh_done(void *ctx, struct wh_result *r)
{
    struct conn *c = ctx;

    c->req = NULL;
    c->result = *r; /* the strings move here */
    memset(r, 0, sizeof(*r));
    c->news |= NEWS_DONE;
    conn_kick(c);
}

/* wh_start(): a retrieve's status is known. */
static void conn_wh_begin(void *ctx, enum wh_status st)
{
    struct conn *c = ctx;

    if (st != WH_OK)
        c->req = NULL; /* the call is over */
    c->begin_status = st;
    c->news |= NEWS_BEGIN;
    conn_kick(c);
}

/* wh_start(): the retrieve's body ended. */
static void conn_wh_end(void *ctx, enum wh_end how)
{
    struct conn *c = ctx;

    c->req = NULL;
    c->end_how = how;
    c->news |= NEWS_END;
    conn_kick(c);
}

/* The rest of a stream cannot be spooled (spooling is off, spool_max is
 * reached, the disk is full, no file can be made): from now on the
 * transfer pauses while the client's output is full, holding its backend
 * connection. Logged and counted once per stream. */
static void conn_spill_pause(struct conn *c, const char *why)
{
    if (c->spill == SPILL_PAUSE)
        return;
    c->spill = SPILL_PAUSE;
    METRIC_INC(spool_fallbacks);
    log_kv(LOG_WARN, c->id, "cannot spool: the transfer pauses for the client instead",
           "client=%s reason=%s spooled=%llu", c->ip, why, (unsigned long long)c->spool.size);
}

/* Bytes spooled or held back that the output has not taken yet. */
static int conn_waiting(const struct conn *c)
{
    return spool_pending(&c->spool) > 0 || (c->backlog && evbuffer_get_length(c->backlog) > 0);
}

/* Appends n bytes to the spool. 0; or, when the spool cannot take them,
 * the stream falls back to pausing and they wait in the backlog (memory,
 * after the spool); -1 when a write failed in a way that loses bytes. */
static int conn_spool(struct conn *c, const char *p, size_t n)
{
    const char *dir = c->set->cfg.spool_dir;
    enum spool_rc rc;

    if (c->spill == SPILL_FILE && (!c->backlog || evbuffer_get_length(c->backlog) == 0)) {
        rc = dir ? spool_append(&c->spool, dir, c->set->cfg.spool_max, p, n) : SPOOL_NOFILE;
        if (rc == SPOOL_OK)
            return 0;
        if (rc == SPOOL_ERROR) {
            log_kv(LOG_ERROR, c->id, "spool write failed: closing", "client=%s error=%s", c->ip,
                   strerror(errno));
            return -1;
        }
        conn_spill_pause(c, dir ? spool_rc_name(rc) : "off");
    }
    if (!c->backlog && !(c->backlog = evbuffer_new()))
        return -1;
    return evbuffer_add(c->backlog, p, n);
}

/*
 * SPILL_FILE: puts converted bytes after everything already queued for the
 * client: into the output while it holds less than CONN_STREAM_KEEP and
 * nothing waits in the spool, the rest into the spool. 0, or -1 when the
 * stream is broken.
 */
static int conn_sink(struct conn *c, const char *p, size_t n)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = evbuffer_get_length(out), put = 0;

    if (!conn_waiting(c)) {
        put = len < CONN_STREAM_KEEP ? CONN_STREAM_KEEP - len : 0;
        if (put > n)
            put = n;
        if (put && evbuffer_add(out, p, put) < 0)
            return -1;
    }
    return put == n ? 0 : conn_spool(c, p + put, n - put);
}

/*
 * The client is slow (its output stayed full for CONN_SPILL_AFTER_MS):
 * everything in the output past CONN_STREAM_KEEP moves to the spool, and
 * the stream goes on in SPILL_FILE (or SPILL_PAUSE when no spool can be
 * had). 0, or -1 when the stream is broken. From the loop only.
 */
static int conn_spill(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev), *tail;
    size_t len = evbuffer_get_length(out), done;
    struct evbuffer_iovec v[16];
    int i, n, rc = 0;

    if (!c->set->cfg.spool_dir) {
        conn_spill_pause(c, "off");
        return 0;
    }
    c->spill = SPILL_FILE;
    if (len <= CONN_STREAM_KEEP)
        return 0;
    if (!(tail = evbuffer_new())) {
        conn_spill_pause(c, "no_memory");
        return 0;
    }
    /* Move the tail out: everything out, the first CONN_STREAM_KEEP back
     * (whole chains move; the part of a chain that fits is copied). A plain
     * output's start is frozen to all but its bufferevent (a TLS one's is
     * not), and its byte counter must not see this. Over TLS, OpenSSL may
     * be in the middle of a write it must retry: at most CONN_STREAM_KEEP
     * octets from the start (conn_setup_bev), which keep their content;
     * libevent lets OpenSSL find them at another address. */
    evbuffer_cb_clear_flags(out, c->out_cb, EVBUFFER_CB_ENABLED);
    if (!c->tls)
        evbuffer_unfreeze(out, 1);
    evbuffer_remove_buffer(out, tail, len);
    evbuffer_remove_buffer(tail, out, CONN_STREAM_KEEP);
    if (!c->tls)
        evbuffer_freeze(out, 1);
    evbuffer_cb_set_flags(out, c->out_cb, EVBUFFER_CB_ENABLED);
    /* Into the spool, in order; what it cannot take waits in the backlog. */
    while (rc == 0 && c->spill == SPILL_FILE && evbuffer_get_length(tail) > 0) {
        n = evbuffer_peek(tail, -1, NULL, v, 16);
        if (n > 16)
            n = 16;
        for (i = 0, done = 0; i < n && rc == 0; i++) {
            rc = conn_spool(c, v[i].iov_base, v[i].iov_len);
            done += v[i].iov_len; /* spooled, or in the backlog */
            if (c->spill != SPILL_FILE)
                break;
        }
        evbuffer_drain(tail, done);
    }
    if (rc == 0 && evbuffer_get_length(tail) > 0)
        rc = evbuffer_add_buffer(c->backlog, tail); /* after what the backlog holds */
    evbuffer_free(tail);
    worker_trim_soon(c->w);
    return rc;
}

/* event: a stream has paused on a full output for CONN_SPILL_AFTER_MS. */
static void conn_spill_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state != CONN_STREAM || !c->held || c->spill != SPILL_MEMORY || c->gone ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) < CONN_OUTPUT_LOW)
        return;
    if (conn_spill(c) < 0) {
        wh_cancel(c->req);
        c->req = NULL;
        c->end_how = WH_END_BROKEN;
        c->news |= NEWS_END;
        conn_kick(c);
        return;
    }
    if (c->spill == SPILL_FILE && c->req) {
        c->held = 0;
        wh_resume(c->req); /* the rest goes to the spool at the backend's speed */
    }
}

/* wh_start(), inside curl: body bytes of a retrieve, converted and queued
 * for the client. Touches no session state. */
static int conn_wh_data(void *ctx, const char *p, size_t n)
{
    struct conn *c = ctx;
    struct evbuffer *out;
    struct evbuffer_iovec v;
    size_t len;

    if (c->gone || c->state != CONN_STREAM) {
        c->req = NULL; /* no callback follows a stop */
        conn_kick(c);
        return WH_DATA_STOP;
    }
    out = bufferevent_get_output(c->bev);
    len = evbuffer_get_length(out);
    if (c->spill != SPILL_FILE && (conn_waiting(c) || len >= CONN_OUTPUT_HIGH)) {
        /* conn_write_cb resumes it once the client has read enough; a
         * client that does not is spooled for (conn_spill_cb) */
        c->held = 1;
        if (c->spill == SPILL_MEMORY && !evtimer_pending(c->spill_timer, NULL)) {
            struct timeval tv = util_tv_ms(CONN_SPILL_AFTER_MS);
            evtimer_add(c->spill_timer, &tv);
        }
        return WH_DATA_FULL;
    }
    if (c->spill != SPILL_FILE || (!conn_waiting(c) && len + CONV_OUT_MAX(n) <= CONN_STREAM_KEEP)) {
        /* Straight into the output. */
        if (evbuffer_reserve_space(out, (ev_ssize_t)CONV_OUT_MAX(n), &v, 1) < 1)
            goto broken;
        v.iov_len = conv_feed(&c->conv, p, n, v.iov_base);
        evbuffer_commit_space(out, &v, 1);
    } else {
        size_t m;
        if (worker_scratch(c->w, CONV_OUT_MAX(n)) < 0)
            goto broken;
        m = conv_feed(&c->conv, p, n, c->w->scratch);
        if (conn_sink(c, c->w->scratch, m) < 0)
            goto broken;
    }
    if (conv_done(&c->conv)) {
        /* TOP has all it needs: stop the transfer. */
        c->req = NULL;
        c->stopped = 1;
        conn_kick(c);
        return WH_DATA_STOP;
    }
    return WH_DATA_TAKEN;
broken:
    log_kv(LOG_ERROR, c->id, "cannot queue a streamed message: closing", "client=%s", c->ip);
    c->req = NULL;
    c->end_how = WH_END_BROKEN;
    c->news |= NEWS_END;
    conn_kick(c);
    return WH_DATA_STOP;
}

/*
 * Hands spooled bytes to the output as it empties: file segments that the
 * kernel sends by itself on plain sockets, small copies for TLS; then the
 * backlog. Returns 1 when nothing waits any more, 0 while something does,
 * -1 when the spool could not be read (the message cannot be completed).
 */
static int conn_refill(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = evbuffer_get_length(out);
    long k;

    /* Segments cost no memory; a TLS output holds copies, so it is kept
     * as short as a spooling stream's memory. */
    while (spool_pending(&c->spool) > 0 && len < (c->tls ? CONN_STREAM_KEEP : CONN_OUTPUT_LOW)) {
        k = spool_feed(&c->spool, out, c->tls ? CONN_TLS_REFILL : CONN_SEGMENT_MAX, !c->tls);
        if (k <= 0) {
            log_kv(LOG_ERROR, c->id, "cannot read the spool: closing", "client=%s error=%s", c->ip,
                   strerror(errno));
            return -1;
        }
        len += (size_t)k;
    }
    if (spool_pending(&c->spool) > 0)
        return 0;
    if (c->backlog && evbuffer_get_length(c->backlog) > 0)
        evbuffer_add_buffer(out, c->backlog);
    return 1;
}

static const struct wh_handler conn_handler = {
    .done = conn_wh_done,
    .begin = conn_wh_begin,
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

/* ---- driving the session ------------------------------------------------- */

/*
 * After login: idle_timeout from the last command. Before login:
 * login_timeout from the connection's start, however the client drips its
 * commands, so a slot cannot be held forever without logging in.
 */
static void conn_arm_timer(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    double t = cfg->idle_timeout;
    struct timeval tv;

    if (pop3_state(c->s) != POP3_TRANSACTION)
        t = cfg->login_timeout - (util_mono() - c->started);
    tv = util_tv(t);
    evtimer_add(c->timer, &tv);
}

/* Moves the session's replies to the client. */
static void conn_flush(struct conn *c)
{
    size_t n;
    const char *out = pop3_output(c->s, &n);
    struct evbuffer *ob;
    ssize_t k;

    if (n && !c->gone) {
        ob = bufferevent_get_output(c->bev);
        /* Plain TCP with nothing queued: send now, in one piece; only what
         * the socket does not take goes through the bufferevent. Saves the
         * write event's round trip through the loop for every reply. */
        if (!c->tls && evbuffer_get_length(ob) == 0) {
            k = send((int)bufferevent_getfd(c->bev), out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k > 0) {
                c->bytes_out += (unsigned long long)k;
                METRIC_ADD(bytes_out, (unsigned long)k);
                out += k;
                n -= (size_t)k;
            }
        }
        if (n)
            bufferevent_write(c->bev, out, n);
    }
    pop3_output_clear(c->s);
}

/* Feeds buffered input while the session takes it. Returns 1 when a
 * command was consumed. */
static int conn_feed(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    int any = 0;

    /* A client that sends commands without reading the replies stops
     * being read once its output passes the high-water mark. */
    while (pop3_want(c->s) == POP3_WANT_INPUT &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) < CONN_OUTPUT_HIGH) {
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
        c->bytes_in += k;
        METRIC_ADD(bytes_in, k);
        any = 1;
    }
    return any;
}

/* Keeps the sessions-by-state gauges in step (gone: the session ends). */
static void conn_track_state(struct conn *c, int gone)
{
    enum pop3_state st = c->s ? pop3_state(c->s) : POP3_CLOSED;

    if (gone)
        st = POP3_CLOSED;
    if (c->counted_valid && c->counted == st)
        return;
    if (c->counted_valid && c->counted == POP3_AUTHORIZATION)
        METRIC_DEC(sessions_authorization);
    else if (c->counted_valid && c->counted == POP3_TRANSACTION)
        METRIC_DEC(sessions_transaction);
    if (st == POP3_AUTHORIZATION)
        METRIC_INC(sessions_authorization);
    else if (st == POP3_TRANSACTION)
        METRIC_INC(sessions_transaction);
    c->counted = st;
    c->counted_valid = 1;
}

/* Starts the session's pending call. */
static void conn_start_call(struct conn *c)
{
    const struct wh_call *call = pop3_call(c->s);

    conn_enter(c, CONN_CALL);
    if (call->event == WH_AUTHENTICATE && limits_login_blocked(c->ip, time(NULL))) {
        /* Too many failures from this address: refused without asking. */
        log_kv(LOG_WARN, c->id, "login refused: max_auth_failures_per_ip reached", "client=%s",
               c->ip);
        memset(&c->result, 0, sizeof(c->result));
        c->result.status = WH_REFUSED;
        c->result.code = WH_CODE_AUTH;
        c->result.message = strdup("too many failed logins from your address, try again later");
        c->news |= NEWS_DONE;
        conn_kick(c);
        return;
    }
    c->req = wh_start(c->w->wh, call, &conn_handler, c);
    if (c->req)
        return;
    /* Out of memory: as a failed call. */
    if (call->event == WH_RETRIEVE) {
        c->begin_status = WH_TEMP;
        c->news |= NEWS_BEGIN;
    } else {
        memset(&c->result, 0, sizeof(c->result));
        c->result.status = WH_TEMP;
        c->news |= NEWS_DONE;
    }
    conn_kick(c);
}

/* STLS: replaces the plain bufferevent by a TLS one on the same socket. */
static void conn_start_tls(struct conn *c)
{
    int fd = (int)bufferevent_getfd(c->bev);

    conn_read_off(c);
    c->rd_own = 0;                 /* the TLS bufferevent reads for itself */
    bufferevent_setfd(c->bev, -1); /* keep the socket open */
    bufferevent_free(c->bev);      /* and drop what the client sent before TLS */
    c->bev = NULL;
    c->fd = fd;
    if (conn_make_bev(c, 1) < 0) {
        log_kv(LOG_ERROR, c->id, "cannot start TLS", "client=%s", c->ip);
        c->reason = "error";
        conn_close(c, NULL);
        return;
    }
    c->tls = 1;
    conn_setup_bev(c);
    pop3_tls_started(c->s);
    log_kv(LOG_DEBUG, c->id, "STLS: TLS started", "client=%s", c->ip);
    conn_enter(c, CONN_IDLE);
    conn_process(c);
}

/* The session asked to close: the last replies leave (bounded by a linger
 * timer), then the connection is closed. */
static void conn_linger(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    struct timeval tv;

    conn_enter(c, CONN_CLOSING);
    conn_read_off(c);
    if (c->gone || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_close(c, NULL);
        return;
    }
    /* The last replies may never leave (a client that does not read, a TLS
     * handshake that never completes): linger a bounded time, then close. */
    tv = util_tv(cfg->send_timeout < CONN_LINGER_MAX ? cfg->send_timeout : CONN_LINGER_MAX);
    evtimer_add(c->timer, &tv);
}

/* Closes the spool file and drops the backlog once a stream is over. */
static void conn_end_spool(struct conn *c)
{
    spool_close(&c->spool);
    if (c->backlog) {
        evbuffer_free(c->backlog);
        c->backlog = NULL;
    }
}

/* Ends a streamed message: its final CRLF if needed and "." when it came
 * whole; the session closes the connection when it did not. */
static void conn_stream_end(struct conn *c, enum wh_end how)
{
    const struct wh_call *call = pop3_call(c->s);
    uint64_t listed = call ? pop3_msg_size(c->s, call->message) : 0;
    int ok = how != WH_END_BROKEN;
    char tail[8];
    size_t n = 0;

    /* The final CRLF an unterminated last line gets counts in the octets,
     * as it does in the listed size. */
    if (ok)
        n = conv_finish(&c->conv, tail);
    if (ok && how == WH_END_UNSIZED && call && !c->stopped && c->conv.octets < listed) {
        /* The backend closed a body that had no length before the listed
         * size: it may have died mid-message. Never present it as whole.
         * (A TOP ends this way only when its cut was not reached: the
         * whole message went through.) */
        METRIC_INC(webhook_errors[WH_RETRIEVE][MWE_BROKEN]);
        log_kv(LOG_WARN, c->id, "retrieve ended by close short of its listed size: closing",
               "message=%u listed=%llu sent=%llu", (unsigned)call->message,
               (unsigned long long)listed, (unsigned long long)c->conv.octets);
        ok = 0;
    } else if (!ok) {
        log_kv(LOG_WARN, c->id, "retrieve broke after +OK: closing", "client=%s", c->ip);
    }
    if (ok) {
        if (c->gone)
            ; /* nothing more can be written */
        else if (conn_waiting(c))
            ok = c->backlog || (c->backlog = evbuffer_new())
                     ? evbuffer_add(c->backlog, tail, n) == 0
                     : 0;
        else
            bufferevent_write(c->bev, tail, n);
        if (call && call->lines < 0) {
            c->n_retr++;
            c->retr_bytes += c->conv.octets;
        } else {
            c->n_top++;
            c->top_bytes += c->conv.octets;
        }
        if (call && call->lines < 0 && c->conv.octets != listed) {
            METRIC_INC(size_mismatches);
            log_kv(LOG_WARN, c->id, "message size differs from listing",
                   "message=%u listed=%llu sent=%llu", (unsigned)call->message,
                   (unsigned long long)listed, (unsigned long long)c->conv.octets);
        }
    }
    c->held = c->stopped = 0;
    if (c->spill != SPILL_MEMORY)
        worker_trim_soon(c->w); /* the transfer's buffers are free now */
    c->spill = SPILL_MEMORY;
    evtimer_del(c->spill_timer);
    pop3_retrieve_end(c->s, ok);
    if (ok && (conn_waiting(c) || c->spool.fd >= 0)) {
        /* conn_write_cb hands the rest over; the spool file is closed once
         * the client has taken all of it. */
        conn_enter(c, CONN_DRAIN);
        return;
    }
    conn_end_spool(c);
    conn_enter(c, CONN_IDLE);
}

/* DRAIN: the spool has been handed over; the session reads on. */
static void conn_drained(struct conn *c)
{
    conn_end_spool(c);
    conn_enter(c, CONN_IDLE);
    conn_kick(c);
}

/* STREAM: acts on how the body is doing. 1 when the stream is over and
 * the session runs on, 0 while it flows (or its spool drains). */
static int conn_stream_step(struct conn *c)
{
    if (c->news & NEWS_END) {
        c->news &= ~NEWS_END;
        conn_stream_end(c, c->end_how);
    } else if (c->stopped) {
        conn_stream_end(c, WH_END_OK);
    } else if (c->gone) {
        wh_cancel(c->req);
        c->req = NULL;
        conn_stream_end(c, WH_END_BROKEN);
    }
    return c->state == CONN_IDLE;
}

/* CALL: takes what the webhook callbacks recorded. 1 when the session can
 * run on, 0 while the call runs. */
static int conn_take_news(struct conn *c)
{
    if (c->news & NEWS_DONE) {
        c->news &= ~NEWS_DONE;
        pop3_call_done(c->s, &c->result);
        wh_result_free(&c->result);
        conn_enter(c, CONN_IDLE);
        return 1;
    }
    if (c->news & NEWS_BEGIN) {
        const struct wh_call *call = pop3_call(c->s);
        long lines = call ? call->lines : -1;

        c->news &= ~NEWS_BEGIN;
        if (!pop3_retrieve_begin(c->s, c->begin_status)) {
            wh_cancel(c->req);
            c->req = NULL;
            conn_enter(c, CONN_IDLE);
            return 1;
        }
        conn_flush(c); /* "+OK" must precede the body in the output buffer */
        conv_init(&c->conv, lines);
        c->held = c->stopped = 0;
        conn_enter(c, CONN_STREAM);
        wh_resume(c->req);
        return conn_stream_step(c);
    }
    return 0;
}

/* Feeds the session, sends its replies and does what it wants next. */
static void conn_run(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    struct timeval tv;

    /* Shutting down: only QUIT is still done (pop3_drain); a session not
     * logged in is told and closed at once. */
    if (c->w->draining && pop3_drain(c->s))
        c->reason = "shutdown";
    conn_feed(c); /* also after the client left: a QUIT already read still commits */
    /* A refused login's reply waits out auth_failure_delay (the same for
     * unknown users and wrong passwords). */
    if (pop3_want(c->s) != POP3_WANT_DELAY)
        conn_flush(c);
    conn_track_state(c, 0);
    switch (pop3_want(c->s)) {
    case POP3_WANT_INPUT:
        if (c->gone) {
            c->reason = "client_closed";
            conn_close(c, NULL);
            return;
        }
        if (c->eof) {
            /* Every complete line has been answered: close after the flush. */
            c->reason = "client_closed";
            conn_linger(c);
            return;
        }
        conn_enter(c, CONN_IDLE);
        conn_arm_timer(c);
        /* Reading stops only at the input cap; re-enable below it. */
        conn_read_on(c);
        return;
    case POP3_WANT_CALL:
        evtimer_del(c->timer);
        if (c->gone && !pop3_committing(c->s)) {
            conn_close(c, NULL);
            return;
        }
        conn_start_call(c);
        return;
    case POP3_WANT_DELAY:
        evtimer_del(c->timer);
        if (c->gone) {
            conn_close(c, NULL);
            return;
        }
        conn_enter(c, CONN_DELAY);
        limits_login_failed(c->ip, time(NULL));
        tv = util_tv(cfg->auth_failure_delay);
        evtimer_add(c->delay, &tv);
        return;
    case POP3_WANT_STLS:
        /* The handshake starts once "+OK" has left; input buffered so far
         * (sent before the handshake) is dropped with the old bufferevent. */
        conn_enter(c, CONN_STLS);
        conn_read_off(c);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            conn_start_tls(c);
        return;
    case POP3_WANT_CLOSE:
        /* The gateway itself ends this session (QUIT, bad commands, a
         * failed call): flush, then close. */
        {
            struct pop3_summary sum;
            pop3_summary(c->s, &sum);
            if (sum.quit) /* the client quit, whatever happened to the socket since */
                c->reason = "quit";
            else if (!c->reason)
                c->reason = c->w->draining ? "shutdown" : "error";
        }
        conn_linger(c);
        return;
    default:
        abort();
    }
}

/* Runs the connection as far as it goes; from its own loop callbacks only. */
static void conn_process(struct conn *c)
{
    switch (c->state) {
    case CONN_START:
    case CONN_CLOSING:
    case CONN_CLOSED:
        return;
    case CONN_DELAY:
    case CONN_STLS:
        if (c->gone)
            conn_close(c, NULL); /* the timer or the flush would wait for nobody */
        return;
    case CONN_CALL:
        if (conn_take_news(c))
            break;
        if (c->gone && !pop3_committing(c->s))
            conn_close(c, NULL); /* nobody to answer; a QUIT being committed goes on */
        return;
    case CONN_STREAM:
        if (conn_stream_step(c))
            break;
        return;
    case CONN_DRAIN:
        if (c->gone)
            conn_close(c, NULL);
        return;
    case CONN_IDLE:
        break;
    default:
        abort();
    }
    conn_run(c);
}

/* ---- event callbacks ---------------------------------------------------- */

static void conn_free(struct conn *c);

/* event: the kick. The one place a connection is freed. */
static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CONN_CLOSED)
        conn_free(c);
    else
        conn_process(c);
}

/* event: a plain socket is readable. */
static void conn_rd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    char buf[4096];
    ssize_t n;

    (void)what;
    n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
        int rc;

        /* A bufferevent keeps the end of its input frozen to all but itself. */
        evbuffer_unfreeze(in, 0);
        rc = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc < 0) {
            conn_event_cb(c->bev, BEV_EVENT_ERROR | BEV_EVENT_READING, c);
            return;
        }
        if (evbuffer_get_length(in) >= CONN_INPUT_MAX)
            conn_read_off(c); /* conn_process turns it on again below the cap */
        conn_process(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    conn_event_cb(c->bev, (short)(BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR)),
                  c);
}

/* bufferevent: input arrived (TLS). */
static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    conn_process(c);
}

/* Bytes in the socket's send queue (not yet acknowledged by the client), or -1. */
static int conn_outq(struct conn *c)
{
    int q;

    if (!c->bev || ioctl(bufferevent_getfd(c->bev), SIOCOUTQ, &q) < 0)
        return -1;
    return q;
}

/* bufferevent: output drained to the low-water mark. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    int empty = evbuffer_get_length(bufferevent_get_output(bev)) == 0;

    switch (c->state) {
    case CONN_CLOSING:
        if (empty)
            conn_close(c, NULL);
        return;
    case CONN_STLS:
        if (empty)
            conn_start_tls(c);
        return;
    case CONN_STREAM:
    case CONN_DRAIN: {
        int rc = conn_refill(c);
        if (rc < 0) {
            conn_close(c, "error");
            return;
        }
        if (c->state == CONN_DRAIN) {
            /* Over once the output is empty after the refill: the spool's
             * last segment holds the file until the client has it all. */
            if (rc == 1 && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
                conn_drained(c);
            return;
        }
        if (c->held && c->req && rc == 1 &&
            evbuffer_get_length(bufferevent_get_output(bev)) < CONN_OUTPUT_LOW) {
            c->held = 0;
            evtimer_del(c->spill_timer);
            wh_resume(c->req);
        }
        return;
    }
    case CONN_IDLE:
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
            conn_kick(c); /* input waits for the output to drain: go on */
        return;
    default:
        return;
    }
}

/* bufferevent: EOF, error or send timeout. */
static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        /* The TLS handshake completed. */
        c->tls_done = 1;
        METRIC_INC(tls_handshakes);
        return;
    }
    if (c->tls && !c->tls_done)
        METRIC_INC(tls_failures);
    if (what & BEV_EVENT_TIMEOUT) {
        int q = conn_outq(c);

        if (q > 0 && (c->outq_mark < 0 || q < c->outq_mark)) {
            /* The kernel holds more than the client's window (megabytes,
             * as it tunes itself), so a slow reader can go a whole
             * send_timeout without room for our next write; but it took
             * bytes: not stopped. (Without a mark, one more period sets
             * one.) */
            c->outq_mark = q;
            bufferevent_enable(bev, EV_WRITE);
            return;
        }
        METRIC_INC(send_timeouts);
        log_kv(LOG_INFO, c->id, "send timeout: client stopped reading", "client=%s", c->ip);
        c->reason = "timeout";
    } else if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(c->bev);
        int err = EVUTIL_SOCKET_ERROR();
        /* A reset or a broken pipe is the client leaving, as an EOF is. */
        c->reason = !e && (err == ECONNRESET || err == EPIPE) ? "client_closed" : "error";
        if (e) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            log_kv(LOG_INFO, c->id, "TLS error", "client=%s error=%s", c->ip, buf);
        }
    } else if (c->tls &&
               ((what & BEV_EVENT_WRITING) || c->state == CONN_STREAM || c->state == CONN_DRAIN ||
                evbuffer_get_length(bufferevent_get_output(bev)) > 0)) {
        /* EOF over TLS: libevent has stopped writing too, and starts again
         * only when something is added to an empty output. A failed write
         * (a reset, read as EOF since a dirty shutdown is allowed), output
         * still waiting, or a stream that would wait on the client's reads:
         * nothing more can reach the client, so it is gone. */
        c->reason = "client_closed";
    } else {
        /* EOF: the client may still read (a half-close after QUIT). */
        c->reason = "client_closed";
        c->eof = 1;
        conn_read_off(c);
        conn_process(c);
        return;
    }
    c->gone = 1;
    conn_read_off(c);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->state == CONN_CLOSING) {
        conn_close(c, NULL);
        return;
    }
    /* Complete lines already buffered still run (a QUIT among them commits). */
    conn_process(c);
}

/* event: login or idle timeout, or the end of CLOSING's linger. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CONN_CLOSING) {
        conn_close(c, NULL); /* the last replies did not leave in time */
        return;
    }
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
    conn_enter(c, CONN_IDLE);
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

/* Wraps the socket in a bufferevent (TLS or plain). 0 or -1. */
static int conn_make_bev(struct conn *c, int accepting_tls)
{
    struct event_base *base = c->w->base;

    if (accepting_tls) {
        SSL *ssl = tls_new_ssl();
        if (!ssl)
            return -1;
        c->bev = bufferevent_openssl_socket_new(base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev)
            return -1; /* libevent frees the SSL on this path (CLOSE_ON_FREE) */
        /* A client that drops the TCP connection without close_notify has
         * simply left: treat it as EOF. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(base, c->fd, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev)
            return -1;
        if (event_assign(&c->rd_ev, base, c->fd, EV_READ | EV_PERSIST, conn_rd_cb, c) == 0)
            c->rd_own = 1;
    }
    c->fd = -1; /* the bufferevent owns it now */
    return 0;
}

/* evbuffer: counts the octets that left for the client. */
static void conn_out_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;

    if (info->n_deleted) {
        c->bytes_out += info->n_deleted;
        METRIC_ADD(bytes_out, info->n_deleted);
        /* Only a write that left bytes behind can be followed by a send
         * timeout: mark the kernel's queue then (one ioctl per such write). */
        c->outq_mark = evbuffer_get_length(b) > 0 ? conn_outq(c) : -1;
    }
}

static void conn_setup_bev(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    struct timeval send_tv = util_tv(cfg->send_timeout);

    c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev), conn_out_cb, c);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_INPUT_MAX);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_LOW, 0);
    /* libevent writes at most 16 KB per wake-up unless told otherwise: a
     * streamed message would cost a writev and an epoll_wait per 16 KB.
     * Over TLS each SSL_write gets at most CONN_STREAM_KEEP octets, so
     * that a write OpenSSL must retry lies within what a spill keeps. */
    bufferevent_set_max_single_write(c->bev, c->tls ? CONN_STREAM_KEEP : CONN_OUTPUT_HIGH);
    bufferevent_set_timeouts(c->bev, NULL, &send_tv);
}

/* The client's address is known (after PROXY): create the session. */
static void conn_start(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    struct pop3_peer peer;
    char apop_ts[320];

    conn_addr(c, (struct sockaddr *)&c->peer);
    if ((c->ip_counted = limits_conn_acquire(c->ip)) < 0) {
        c->ip_counted = 0;
        static const char msg[] = "-ERR [SYS/TEMP] too many connections from your address\r\n";
        METRIC_INC(connections_refused);
        log_kv(LOG_WARN, c->id, "connection refused: max_connections_per_ip reached",
               "client=%s limit=%d", c->ip, cfg->max_connections_per_ip);
        if (!c->implicit_tls && send(c->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL) < 0) {
            /* the connection closes either way */
        }
        conn_close(c, NULL);
        return;
    }
    if (conn_make_bev(c, c->implicit_tls) < 0) {
        log_kv(LOG_ERROR, c->id, "cannot set up the connection", "client=%s tls=%d", c->ip,
               c->implicit_tls);
        conn_close(c, "error");
        return;
    }
    snprintf(apop_ts, sizeof(apop_ts), "<%s.%lld@%s>", c->apop_rand, (long long)time(NULL),
             cfg->hostname);
    memset(&peer, 0, sizeof(peer));
    peer.id = c->id;
    peer.ip = c->ip;
    peer.port = c->port;
    peer.tls = c->implicit_tls;
    peer.loopback = conn_is_loopback((struct sockaddr *)&c->peer);
    peer.apop_timestamp = cfg->apop ? apop_ts : NULL;
    c->s = pop3_new(&c->set->pop3, &peer);
    if (!c->s) {
        conn_close(c, "error");
        return;
    }
    conn_setup_bev(c);
    conn_enter(c, CONN_IDLE);
    log_kv(LOG_DEBUG, c->id, "connect", "client=%s port=%d tls=%d", c->ip, c->port, c->tls);
    conn_process(c);
}

/* event: bytes (or the deadline) for the PROXY header. The header is peeked
 * and then consumed to its exact length, so whatever follows (a TLS
 * ClientHello) stays in the socket for the bufferevent. */
static void conn_proxy_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    unsigned char buf[PROXY_HEADER_MAX];
    struct proxy_info info;
    double now;
    ssize_t n;
    int len;
    struct timeval retry = {0, 5000};

    (void)fd;
    (void)what;
    n = recv(c->fd, buf, sizeof(buf), MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        log_kv(LOG_INFO, c->id, "closed before the PROXY header", "peer=%s", c->ip);
        conn_close(c, NULL);
        return;
    }
    len = n > 0 ? proxy_parse(buf, (size_t)n, c->set->proxy_versions, &info) : 0;
    if (len < 0) {
        METRIC_INC(proxy_rejected);
        log_kv(LOG_WARN, c->id, "bad PROXY header: closing", "peer=%s", c->ip);
        conn_close(c, NULL);
        return;
    }
    if (len > 0) {
        if (recv(c->fd, buf, (size_t)len, 0) != len) {
            conn_close(c, NULL);
            return;
        }
        if (!info.local)
            memcpy(&c->peer, &info.src, sizeof(c->peer));
        event_free(c->proxy_ev);
        c->proxy_ev = NULL;
        conn_start(c);
        return;
    }
    now = util_mono();
    if (now >= c->proxy_deadline) {
        METRIC_INC(proxy_rejected);
        log_kv(LOG_WARN, c->id, "no PROXY header in time: closing", "peer=%s", c->ip);
        conn_close(c, NULL);
        return;
    }
    /* A partial header stays readable (it was only peeked), so waiting for
     * EV_READ would spin: poll again shortly instead. With nothing read
     * yet, wait for bytes until the deadline. */
    event_del(c->proxy_ev);
    if (n > 0) {
        event_assign(c->proxy_ev, c->w->base, -1, 0, conn_proxy_cb, c);
        event_add(c->proxy_ev, &retry);
    } else {
        struct timeval left = util_tv(c->proxy_deadline - now);
        event_assign(c->proxy_ev, c->w->base, c->fd, EV_READ, conn_proxy_cb, c);
        event_add(c->proxy_ev, &left);
    }
}

/* Waits for the PROXY header from a trusted peer. */
static int conn_wait_proxy(struct conn *c)
{
    const struct cfg *cfg = &c->set->cfg;
    struct timeval tv = {0, 0};

    if (!proxy_trusted(c->set->proxy_nets, c->set->n_proxy_nets, (struct sockaddr *)&c->peer)) {
        METRIC_INC(proxy_rejected);
        log_kv(LOG_WARN, c->id, "PROXY header expected from an untrusted address: closing",
               "peer=%s", c->ip);
        return -1;
    }
    /* Load balancers send the header at once: a few seconds is plenty. */
    tv.tv_sec = (time_t)(cfg->login_timeout < 5 ? cfg->login_timeout : 5) + 1;
    c->proxy_deadline = util_mono() + (double)tv.tv_sec;
    c->proxy_ev = event_new(c->w->base, c->fd, EV_READ, conn_proxy_cb, c);
    if (!c->proxy_ev)
        return -1;
    event_add(c->proxy_ev, &tv);
    return 0;
}

/* n (at most sizeof(w->rnd)) random bytes from the worker's batch, refilled
 * with one RAND_bytes call per 32 connections. Returns 0 or -1. */
static int conn_random(struct worker *w, unsigned char *out, size_t n)
{
    if (w->rnd_used == 0 || w->rnd_used + n > sizeof(w->rnd)) {
        if (RAND_bytes(w->rnd, sizeof(w->rnd)) != 1)
            return -1;
        w->rnd_used = 0;
    }
    memcpy(out, w->rnd + w->rnd_used, n);
    util_wipe(w->rnd + w->rnd_used, n);
    w->rnd_used += n;
    return 0;
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *sa, int socklen, int tls)
{
    const struct cfg *cfg = &w->set->cfg;
    struct conn *c;
    unsigned char rnd[16]; /* session id and APOP timestamp, one call */
    int one = 1;

    if (worker_admit(w, cfg->max_connections) < 0) {
        static const char full[] = "-ERR [SYS/TEMP] too many connections, try again later\r\n";
        METRIC_INC(connections_refused);
        if (!tls && write(fd, full, sizeof(full) - 1) < 0) {
            /* nothing more to do: the connection closes either way */
        }
        close(fd);
        log_kv(LOG_WARN, NULL, "connection refused: max_connections reached", "limit=%d",
               cfg->max_connections);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c)
        c->outq_mark = -1;
    if (!c || conn_random(w, rnd, sizeof(rnd)) < 0) {
        free(c);
        close(fd);
        worker_release(w);
        METRIC_INC(connections_refused);
        log_kv(LOG_ERROR, NULL, "cannot set up a connection", "error=%s", "out of memory");
        return;
    }
    METRIC_INC(connections_total);
    METRIC_INC(connections_active);
    c->since = (long long)time(NULL);
    c->started = util_mono();
    c->w = w;
    c->set = settings_ref(w->set);
    spool_init(&c->spool);
    c->fd = fd;
    c->tls = c->implicit_tls = tls;
    conn_hex(c->id, rnd, 8);
    conn_hex(c->apop_rand, rnd + 8, 8);
    memcpy(&c->peer, sa, (size_t)socklen < sizeof(c->peer) ? (size_t)socklen : sizeof(c->peer));
    conn_addr(c, sa);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->timer = evtimer_new(w->base, conn_timer_cb, c);
    c->delay = evtimer_new(w->base, conn_delay_cb, c);
    c->spill_timer = evtimer_new(w->base, conn_spill_cb, c);
    c->kick = event_new(w->base, -1, 0, conn_kick_cb, c);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->n_conns++;
    if (!c->timer || !c->delay || !c->kick || !c->spill_timer) {
        conn_free(c); /* the constructor's error path: no callback has it yet */
        return;
    }
    if (cfg->proxy_protocol != CFG_PROXY_OFF) {
        if (conn_wait_proxy(c) < 0)
            conn_close(c, NULL);
        return;
    }
    conn_start(c);
}

/* Sends the optional disconnect event for a session that logged in and did
 * not QUIT successfully. */
static void conn_send_disconnect(struct conn *c)
{
    struct wh_call call;

    if (!c->set->cfg.event_disconnect || !pop3_logged_in(c->s) || pop3_quit_done(c->s))
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
    /* A QUIT whose quit call failed ends here too: the contract's reason
     * for it is error. */
    call.reason = c->reason && strcmp(c->reason, "quit") != 0 ? c->reason : "error";
    wh_start(c->w->wh, &call, &conn_fire_and_forget, NULL);
}

/* One info line per ended session: who, how long, what it did, whether
 * its deletions were committed, and why it ended. */
static void conn_log_summary(const struct conn *c)
{
    struct pop3_summary sum;
    char retr[48], top[48];
    const char *user = pop3_user(c->s);

    pop3_summary(c->s, &sum);
    snprintf(retr, sizeof(retr), "%u/%llu", c->n_retr, c->retr_bytes);
    snprintf(top, sizeof(top), "%u/%llu", c->n_top, c->top_bytes);
    log_kv(LOG_INFO, c->id, "session ended",
           "user=%s client=%s tls=%d duration=%.3f commands=%u retr=%s top=%s dele=%zu "
           "committed=%s reason=%s",
           user ? user : "", c->ip, c->tls, util_mono() - c->started, sum.commands, retr, top,
           sum.dele, sum.committed ? "yes" : "no", c->reason ? c->reason : "error");
}

static void conn_free(struct conn *c)
{
    struct worker *w = c->w;

    log_kv(LOG_DEBUG, c->id, "disconnect", "client=%s reason=%s", c->ip,
           c->reason ? c->reason : "");
    wh_cancel(c->req);
    wh_result_free(&c->result);
    conn_end_spool(c);
    if (c->s) {
        conn_log_summary(c);
        conn_send_disconnect(c);
    }
    TAILQ_REMOVE(&w->conns, c, link);
    w->n_conns--;
    worker_balance(w);
    if (c->timer)
        event_free(c->timer);
    if (c->delay)
        event_free(c->delay);
    if (c->spill_timer)
        event_free(c->spill_timer);
    if (c->kick)
        event_free(c->kick);
    if (c->proxy_ev)
        event_free(c->proxy_ev);
    conn_read_off(c);
    if (c->bev) {
        SSL *ssl = c->tls_done && !c->gone ? bufferevent_openssl_get_ssl(c->bev) : NULL;
        if (ssl)
            SSL_shutdown(ssl); /* best effort close_notify; never waits */
        bufferevent_free(c->bev);
    }
    if (c->fd >= 0)
        close(c->fd);
    conn_track_state(c, 1);
    if (c->ip_counted)
        limits_conn_release(c->ip);
    pop3_free(c->s);
    settings_unref(c->set);
    free(c);
    worker_release(w);
    METRIC_DEC(connections_active);
}

void conn_snapshot(const struct conn *c, struct adm_session *out)
{
    const char *user = c->s ? pop3_user(c->s) : NULL;

    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", c->id);
    snprintf(out->user, sizeof(out->user), "%s", user ? user : "");
    snprintf(out->ip, sizeof(out->ip), "%s", c->ip);
    out->port = c->port;
    out->tls = c->tls;
    snprintf(out->state, sizeof(out->state), "%s",
             conn_states[c->state].shown ? conn_states[c->state].shown
             : c->s                      ? pop3_state_name(pop3_state(c->s))
                                         : "CONNECTING");
    snprintf(out->command, sizeof(out->command), "%s",
             c->s && (c->state == CONN_CALL || c->state == CONN_STREAM) ? pop3_current_command(c->s)
                                                                        : "");
    out->since = c->since;
    out->bytes_in = c->bytes_in;
    out->bytes_out = c->bytes_out;
    snprintf(out->activity, sizeof(out->activity), "%s", conn_states[c->state].name);
    out->spooling = c->spool.fd >= 0;
    out->spool_bytes = c->spool.size;
    out->spool_sent = c->spool.queued;
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
    if (c->state == CONN_CLOSED)
        return;
    if (!c->reason || c->state != CONN_CLOSING)
        c->reason = "shutdown";
    if (c->state == CONN_IDLE && !c->gone && c->s && pop3_want(c->s) == POP3_WANT_INPUT) {
        /* An idle session that could have QUITted: say why it ends (best
         * effort: what the socket takes now). */
        pop3_shutdown(c->s);
        conn_flush(c);
    }
    conn_close(c, NULL);
}
