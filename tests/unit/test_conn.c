/*
 * Unit tests for gateway/conn.c, the transport shell around a POP3 session.
 *
 * conn.c is driven through its public interface, conn_accept(), on a real
 * socket: the test holds the other end of a socketpair(AF_UNIX, SOCK_STREAM),
 * plays the mail client on it, and runs the worker's event_base itself
 * (EVLOOP_ONCE until a condition holds or a deadline passes, EVLOOP_NONBLOCK
 * to let whatever is due run). Not a bufferevent_pair: conn takes a
 * descriptor and uses socket calls on it (recv() from its own read event,
 * send() for a reply when nothing is queued, ioctl(SIOCOUTQ) for the send
 * timeout, sendfile segments from the spool, a new TLS bufferevent on the
 * same descriptor for STLS), and a pair has no descriptor. An AF_UNIX pair
 * behaves as TCP does where it matters here: closing with unread input is a
 * reset (ECONNRESET) for the gateway, closing without, or shutdown(SHUT_WR),
 * is an EOF. The gateway's send buffer is made small (SO_SNDBUF) so that a
 * client that does not read fills it quickly.
 *
 * The worker is built by hand (gateway/worker.h): a loop, settings from
 * cfg_defaults() and cfg_set(), the list of connections, and this file's own
 * worker_admit/release/balance/scratch, which count what conn asks of them.
 * The test links without gateway/server.o and gateway/report.o (Makefile).
 *
 * The webhook client is a fake behind the interface of webhook/wh_client.h
 * (the test links without webhook/wh_client.o): wh_start() records the call
 * and does nothing else; the test answers when it chooses, through the
 * handler conn gave (done; begin, data and end for a retrieve), from outside
 * every conn callback, as the real client does from its own turn of the
 * loop. The fake checks the contract from the client's side: nothing on a
 * handle after its final callback or wh_cancel(), no wh_resume() before
 * begin(WH_OK), no body before wh_resume() nor after WH_DATA_FULL until the
 * next wh_resume(). A breach is counted, never asserted inside the loop (a
 * longjmp out of event_base_loop() would leave the base running), and every
 * drive of the loop fails on it.
 *
 * Each test checks the exact bytes the client receives, in order, and ends
 * with the connection freed once: worker_release() once per admit, the
 * connection and session gauges back where they were, the spool directory
 * empty.
 *
 * STLS: the test makes a throwaway self-signed certificate with OpenSSL's
 * API at its start; tests/integration/test_tls.py probes the same injection
 * through a real TCP listener.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "admin/admin.h"
#include "gateway/cfg.h"
#include "gateway/conn.h"
#include "gateway/limits.h"
#include "gateway/settings.h"
#include "gateway/tls.h"
#include "gateway/worker.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "webhook/wh_client.h"

#define FX_WAIT 10.0     /* seconds a drive of the loop may take before the test fails */
#define FX_SLACK 0.02    /* seconds a timer may fire early (libevent's cached time) */
#define FX_SNDBUF 16384  /* SO_SNDBUF asked for the gateway's end (the kernel doubles it) */
#define FX_REQS 32       /* webhook calls one test may make */
#define FX_DELETED_MAX 8 /* deletions a recorded quit keeps */
/* What conn may hold for a client that does not read, besides the socket's
 * buffer: it stops taking a stream at CONN_OUTPUT_HIGH (768 KB). */
#define FX_OUTPUT_MAX (1024 * 1024)
#define FX_PORT 50110 /* the client's port as conn_accept() is told */

#define GREETING "+OK pop.test POP3 gateway ready\r\n"
#define AUTOLOGOUT "-ERR autologout: idle for too long, closing\r\n"

/* ---- the fake webhook client --------------------------------------------- */

enum fake_state { REQ_RUNNING, REQ_FINISHED, REQ_CANCELLED };

/* One recorded call (the handle conn holds). Kept until the test ends, so
 * that a call conn cancelled can still be looked at. */
struct wh_req {
    enum wh_event event;
    char session[24];
    char *user, *method, *password, *uid, *reason;
    int client_tls;
    uint32_t message;
    long lines;
    size_t n_deleted;
    uint32_t deleted[FX_DELETED_MAX];
    char *deleted_uid[FX_DELETED_MAX];
    const struct wh_handler *h;
    void *ctx;
    enum fake_state state;
    int begun;   /* retrieve: begin(WH_OK) was delivered */
    int flowing; /* retrieve: the body may flow (wh_resume() since begin or WH_DATA_FULL) */
    int resumes; /* wh_resume() calls */
};

struct wh_client {
    int unused;
};

/* What one test sets up. Zero is the default for every field. */
struct fx_opts {
    int spool;                 /* spool_dir: a private directory (else empty: off) */
    int tls;                   /* a certificate is loaded: STLS is offered */
    int proxy;                 /* proxy_protocol v1, trusted from 127.0.0.0/8 */
    int disconnect;            /* events = disconnect */
    double login_timeout;      /* seconds, or 0: the default */
    double idle_timeout;       /* seconds, or 0: the default */
    double send_timeout;       /* seconds, or 0: the default */
    double auth_failure_delay; /* seconds, or 0: none */
    int sndbuf;                /* SO_SNDBUF asked for, or 0: FX_SNDBUF */
};

static struct {
    struct event_base *base;
    struct event *guard; /* wakes the loop at a drive's deadline */
    struct worker w;
    struct wh_client wh;
    struct wh_req *reqs[FX_REQS];
    size_t n_reqs;
    int breaches;     /* breaches of the webhook contract seen by the fake */
    char breach[160]; /* the first one */
    int admits, releases;
    int fd;           /* the client's end, -1 once closed */
    SSL_CTX *ssl_ctx; /* the client's TLS, after STLS */
    SSL *ssl;
    char *got; /* every byte the client received */
    size_t got_len, got_cap;
    size_t seen; /* of got, checked by cl_expect() so far */
    int eof;     /* the client read an end (EOF, reset, close_notify) */
    int sndbuf;  /* SO_SNDBUF the kernel gave the gateway's end */
    char spool_dir[256];
    double t_login;                            /* monotonic time fx_login() answered the listing */
    long active0, auth0, trans0, spool_files0; /* gauges before the test */
} fx;

static void fake_breach(const char *what, const struct wh_req *r)
{
    if (fx.breaches++ == 0)
        snprintf(fx.breach, sizeof(fx.breach), "%s (event %s)", what,
                 r ? wh_event_names[r->event] : "?");
}

static char *fake_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct wh_req *wh_start(struct wh_client *c, const struct wh_call *call, const struct wh_handler *h,
                        void *ctx)
{
    struct wh_req *r;
    size_t i;

    if (c != &fx.wh || fx.n_reqs == FX_REQS || call->n_deleted > FX_DELETED_MAX) {
        fake_breach("wh_start: unknown client, or more than the test keeps", NULL);
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->event = call->event;
    snprintf(r->session, sizeof(r->session), "%s", call->session ? call->session : "");
    r->user = fake_dup(call->user);
    r->method = fake_dup(call->method);
    r->password = fake_dup(call->password);
    r->uid = fake_dup(call->uid);
    r->reason = fake_dup(call->reason);
    r->client_tls = call->client_tls;
    r->message = call->message;
    r->lines = call->lines;
    r->n_deleted = call->n_deleted;
    for (i = 0; i < call->n_deleted; i++) {
        r->deleted[i] = call->deleted[i].message;
        r->deleted_uid[i] = fake_dup(call->deleted[i].uid);
    }
    r->h = h;
    r->ctx = ctx;
    fx.reqs[fx.n_reqs++] = r;
    return r;
}

void wh_cancel(struct wh_req *r)
{
    if (!r)
        return;
    if (r->state != REQ_RUNNING) {
        fake_breach("wh_cancel on a handle that is gone", r);
        return;
    }
    r->state = REQ_CANCELLED;
}

void wh_resume(struct wh_req *r)
{
    if (!r || r->state != REQ_RUNNING || !r->begun) {
        fake_breach("wh_resume on a handle that is gone, or before begin(WH_OK)", r);
        return;
    }
    r->resumes++;
    r->flowing = 1;
}

size_t wh_client_inflight(const struct wh_client *c)
{
    size_t i, n = 0;

    (void)c;
    for (i = 0; i < fx.n_reqs; i++)
        n += fx.reqs[i]->state == REQ_RUNNING;
    return n;
}

static void fake_free(struct wh_req *r)
{
    size_t i;

    free(r->user);
    free(r->method);
    free(r->password);
    free(r->uid);
    free(r->reason);
    for (i = 0; i < r->n_deleted; i++)
        free(r->deleted_uid[i]);
    free(r);
}

/* The test's side of the fake: answers a running call. */

/* The last call made, which must be an `ev` still running. */
static struct wh_req *fake_last(enum wh_event ev)
{
    struct wh_req *r;

    assert_true(fx.n_reqs > 0);
    r = fx.reqs[fx.n_reqs - 1];
    assert_string_equal(wh_event_names[r->event], wh_event_names[ev]);
    assert_int_equal(r->state, REQ_RUNNING);
    return r;
}

/* Delivers a non-streamed result (the fake's copy of `res` is freed after). */
static void fake_done(struct wh_req *r, struct wh_result *res)
{
    assert_int_equal(r->state, REQ_RUNNING);
    assert_non_null(r->h->done);
    r->state = REQ_FINISHED; /* the handle is gone once done runs */
    r->h->done(r->ctx, res);
    wh_result_free(res);
}

static void fake_status(struct wh_req *r, enum wh_status st)
{
    struct wh_result res;

    memset(&res, 0, sizeof(res));
    res.status = st;
    res.http_status = st == WH_OK ? 200 : 0;
    fake_done(r, &res);
}

static void fake_auth_ok(struct wh_req *r, const char *canonical)
{
    struct wh_result res;

    memset(&res, 0, sizeof(res));
    res.status = WH_OK;
    res.http_status = 200;
    res.user = fake_dup(canonical);
    fake_done(r, &res);
}

/* A listing of n messages with uids u1, u2, ... */
static void fake_list(struct wh_req *r, const uint64_t *sizes, size_t n)
{
    struct wh_result res;
    char uid[24];
    size_t i;

    memset(&res, 0, sizeof(res));
    res.status = WH_OK;
    res.http_status = 200;
    res.msgs = calloc(n ? n : 1, sizeof(*res.msgs));
    assert_non_null(res.msgs);
    for (i = 0; i < n; i++) {
        snprintf(uid, sizeof(uid), "u%zu", i + 1);
        res.msgs[i].size = sizes[i];
        res.msgs[i].uid = strdup(uid);
    }
    res.n_msgs = n;
    res.has_uids = 1;
    fake_done(r, &res);
}

static void fake_begin(struct wh_req *r, enum wh_status st)
{
    assert_int_equal(r->state, REQ_RUNNING);
    if (st != WH_OK)
        r->state = REQ_FINISHED;
    else
        r->begun = 1;
    r->h->begin(r->ctx, st);
}

/* Offers body bytes, as curl's write callback does; returns conn's answer. */
static int fake_data(struct wh_req *r, const char *p, size_t n);

/* With spooling on, a client that reads nothing: the first chunks fill
 * the output, the transfer pauses (WH_DATA_FULL), and once the output has
 * stayed full for 50 ms the stream moves to the spool and is resumed. Feeds
 * one chunk through that; returns how many pauses it took (0 or 1). */
static int fake_data_spooling(struct wh_req *r, const char *p, size_t n);

static int fake_data(struct wh_req *r, const char *p, size_t n)
{
    int rc;

    assert_int_equal(r->state, REQ_RUNNING);
    assert_true(r->flowing);
    rc = r->h->data(r->ctx, p, n);
    if (rc == WH_DATA_FULL)
        r->flowing = 0;
    else if (rc == WH_DATA_STOP)
        r->state = REQ_FINISHED;
    else
        assert_int_equal(rc, WH_DATA_TAKEN);
    return rc;
}

static void fake_end(struct wh_req *r, enum wh_end how)
{
    assert_int_equal(r->state, REQ_RUNNING);
    r->state = REQ_FINISHED;
    r->h->end(r->ctx, how);
}

/* How many calls of event ev were made. */
static size_t fake_count(enum wh_event ev)
{
    size_t i, n = 0;

    for (i = 0; i < fx.n_reqs; i++)
        n += fx.reqs[i]->event == ev;
    return n;
}

/* ---- the worker's side that server.c would provide ----------------------- */

int worker_admit(struct worker *w, int max_connections)
{
    (void)max_connections;
    if (w != &fx.w)
        fake_breach("worker_admit: unknown worker", NULL);
    fx.admits++;
    return 0;
}

void worker_release(struct worker *w)
{
    if (w != &fx.w)
        fake_breach("worker_release: unknown worker", NULL);
    fx.releases++;
}

int worker_scratch(struct worker *w, size_t n)
{
    char *p;

    if (n <= w->scratch_cap)
        return 0;
    p = realloc(w->scratch, n);
    if (!p)
        return -1;
    w->scratch = p;
    w->scratch_cap = n;
    return 0;
}

void worker_balance(struct worker *w)
{
    (void)w;
}

static int fx_trims; /* worker_trim_soon() calls: a spilled stream asks for one */

void worker_trim_soon(struct worker *w)
{
    (void)w;
    fx_trims++;
}

/* ---- driving the loop ---------------------------------------------------- */

static void fx_guard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void fx_check_breaches(void)
{
    if (fx.breaches)
        fail_msg("webhook contract broken %d time(s): %s", fx.breaches, fx.breach);
}

/* One turn of the loop, woken at the latest at `deadline`. */
static void fx_loop_once(double deadline)
{
    struct timeval tv = util_tv(deadline - util_mono() > 0 ? deadline - util_mono() : 0);

    evtimer_add(fx.guard, &tv);
    event_base_loop(fx.base, EVLOOP_ONCE);
    evtimer_del(fx.guard);
    fx_check_breaches();
}

/* Turns of the loop until `cond` holds; fails after FX_WAIT seconds. The
 * condition reads the client's socket only if it says so (cl_has, cl_eof):
 * a client that does not read is one whose conditions do not. */
#define DRIVE(cond)                                                                                \
    do {                                                                                           \
        double dl_ = util_mono() + FX_WAIT;                                                        \
        while (!(cond)) {                                                                          \
            if (util_mono() >= dl_)                                                                \
                fail_msg("line %d: not reached in %.0f s: %s", __LINE__, FX_WAIT, #cond);          \
            fx_loop_once(dl_);                                                                     \
        }                                                                                          \
    } while (0)

/* Turns of the loop until the monotonic clock reaches t. */
static void fx_run_until(double t)
{
    while (util_mono() < t)
        fx_loop_once(t);
}

/* Lets everything that is due without time passing run: ready sockets,
 * kicks, callbacks that activate others. */
static int fake_data_spooling(struct wh_req *r, const char *p, size_t n)
{
    int rc = fake_data(r, p, n), resumes = r->resumes;

    if (rc == WH_DATA_TAKEN)
        return 0;
    assert_int_equal(rc, WH_DATA_FULL);
    DRIVE(r->resumes == resumes + 1); /* the spill lets it flow again */
    assert_int_equal(fake_data(r, p, n), WH_DATA_TAKEN);
    return 1;
}

static void fx_settle(void)
{
    int i;

    for (i = 0; i < 16; i++)
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    fx_check_breaches();
}

/* ---- the client ---------------------------------------------------------- */

static void cl_keep(const char *p, size_t n)
{
    if (fx.got_len + n > fx.got_cap) {
        size_t cap = fx.got_cap ? fx.got_cap : 4096;
        while (cap < fx.got_len + n)
            cap *= 2;
        fx.got = realloc(fx.got, cap);
        assert_non_null(fx.got);
        fx.got_cap = cap;
    }
    memcpy(fx.got + fx.got_len, p, n);
    fx.got_len += n;
}

/* Reads whatever has arrived. */
static void cl_pull(void)
{
    static char buf[65536];
    ssize_t n;
    int k;

    while (fx.fd >= 0 && !fx.eof) {
        if (fx.ssl) {
            k = SSL_read(fx.ssl, buf, sizeof(buf));
            if (k > 0) {
                cl_keep(buf, (size_t)k);
                continue;
            }
            k = SSL_get_error(fx.ssl, k);
            if (k != SSL_ERROR_WANT_READ && k != SSL_ERROR_WANT_WRITE)
                fx.eof = 1;
            return;
        }
        n = recv(fx.fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            cl_keep(buf, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        fx.eof = 1;
    }
}

/* Conditions for DRIVE that read the socket. */
static int cl_has(size_t n)
{
    cl_pull();
    return fx.got_len >= n || fx.eof;
}

static int cl_eof(void)
{
    cl_pull();
    return fx.eof;
}

static void cl_send_n(const char *p, size_t n)
{
    double dl = util_mono() + FX_WAIT;
    ssize_t k;

    while (n > 0) {
        if (fx.ssl) {
            k = SSL_write(fx.ssl, p, (int)n);
            if (k <= 0) {
                int e = SSL_get_error(fx.ssl, (int)k);
                assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
                k = 0;
            }
        } else {
            k = send(fx.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k < 0) {
                assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
                k = 0;
            }
        }
        p += k;
        n -= (size_t)k;
        if (n > 0) {
            assert_true(util_mono() < dl);
            fx_loop_once(dl); /* the gateway reads what is queued */
        }
    }
}

static void cl_send(const char *s)
{
    cl_send_n(s, strlen(s));
}

/* Shows where the bytes received differ from the ones expected. */
static void cl_mismatch(const char *want, size_t n)
{
    size_t have = fx.got_len - fx.seen, i = 0, from;

    while (i < n && i < have && fx.got[fx.seen + i] == want[i])
        i++;
    from = i > 40 ? i - 40 : 0;
    print_error("client bytes differ at offset %zu of %zu expected (%zu received)\n", i, n, have);
    print_error("expected: \"%.*s\"\n", (int)((n - from) < 120 ? n - from : 120), want + from);
    print_error("received: \"%.*s\"\n", (int)((have - from) < 120 ? have - from : 120),
                fx.got + fx.seen + from);
    fail();
}

/* The next bytes the client receives are exactly these. */
static void cl_expect_n(const char *want, size_t n)
{
    DRIVE(cl_has(fx.seen + n));
    if (fx.got_len < fx.seen + n || memcmp(fx.got + fx.seen, want, n) != 0)
        cl_mismatch(want, n);
    fx.seen += n;
}

static void cl_expect(const char *want)
{
    cl_expect_n(want, strlen(want));
}

/* Nothing more has arrived once everything due has run. */
static void cl_expect_nothing(void)
{
    fx_settle();
    cl_pull();
    if (fx.got_len != fx.seen)
        cl_mismatch("", 0);
    assert_false(fx.eof);
}

/* The connection ends with nothing more received. */
static void cl_expect_eof(void)
{
    DRIVE(cl_eof());
    if (fx.got_len != fx.seen)
        cl_mismatch("", 0);
}

/* The client closes its socket. With replies unread it is a reset for the
 * gateway (ECONNRESET), as closing a TCP socket with unread input is. */
static void cl_close(void)
{
    if (fx.ssl) {
        SSL_free(fx.ssl);
        fx.ssl = NULL;
    }
    if (fx.fd >= 0)
        close(fx.fd);
    fx.fd = -1;
}

/* STLS from the client's side: a TLS handshake over the same socket. The
 * certificate is a throwaway one: the handshake is what counts here. */
static void cl_start_tls(void)
{
    double dl = util_mono() + FX_WAIT;
    int rc, e;

    fx.ssl_ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(fx.ssl_ctx);
    SSL_CTX_set_verify(fx.ssl_ctx, SSL_VERIFY_NONE, NULL);
    fx.ssl = SSL_new(fx.ssl_ctx);
    assert_non_null(fx.ssl);
    assert_int_equal(SSL_set_fd(fx.ssl, fx.fd), 1);
    while ((rc = SSL_connect(fx.ssl)) != 1) {
        e = SSL_get_error(fx.ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            fail_msg("TLS handshake failed (SSL error %d)", e);
        assert_true(util_mono() < dl);
        fx_loop_once(dl);
    }
}

/* ---- fixture ------------------------------------------------------------- */

static void fx_set(struct cfg *cfg, const char *key, const char *value)
{
    char err[256];

    if (cfg_set(cfg, key, value, err, sizeof(err)) != 0)
        fail_msg("cfg_set %s: %s", key, err);
}

static void fx_set_secs(struct cfg *cfg, const char *key, double secs)
{
    char v[32];

    if (secs > 0) {
        snprintf(v, sizeof(v), "%g", secs);
        fx_set(cfg, key, v);
    }
}

/* A worker with the settings `o` asks for, and one client connected. */
static void fx_start(const struct fx_opts *o)
{
    struct cfg cfg;
    struct sockaddr_in sin;
    char err[256];
    const char *tmp = getenv("TMPDIR");
    int sv[2], sndbuf = o->sndbuf ? o->sndbuf : FX_SNDBUF;
    socklen_t len = sizeof(fx.sndbuf);

    fx.fd = -1;
    fx.active0 = (long)METRIC_GET(connections_active);
    fx.auth0 = (long)METRIC_GET(sessions_authorization);
    fx.trans0 = (long)METRIC_GET(sessions_transaction);
    fx.spool_files0 = (long)METRIC_GET(spool_files);
    fx.base = event_base_new();
    assert_non_null(fx.base);
    fx.guard = evtimer_new(fx.base, fx_guard_cb, NULL);
    assert_non_null(fx.guard);

    cfg_defaults(&cfg);
    fx_set(&cfg, "backend_url", "http://backend.invalid");
    fx_set(&cfg, "hostname", "pop.test");
    fx_set(&cfg, "apop", "off"); /* a greeting without a random timestamp */
    if (o->spool) {
        snprintf(fx.spool_dir, sizeof(fx.spool_dir), "%s/pop3gw-test-conn-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(fx.spool_dir));
        fx_set(&cfg, "spool_dir", fx.spool_dir);
    } else {
        fx_set(&cfg, "spool_dir", "");
    }
    if (o->disconnect)
        fx_set(&cfg, "events", "disconnect");
    if (o->proxy) {
        fx_set(&cfg, "proxy_protocol", "v1");
        fx_set(&cfg, "proxy_trusted", "127.0.0.0/8");
    }
    fx_set_secs(&cfg, "login_timeout", o->login_timeout);
    fx_set_secs(&cfg, "send_timeout", o->send_timeout);
    fx_set(&cfg, "auth_failure_delay", "0");
    fx_set_secs(&cfg, "auth_failure_delay", o->auth_failure_delay);
    /* cfg_set() keeps idle_timeout at 600 s or more (RFC 1939); the test
     * sets the field itself to see the timer fire. */
    if (o->idle_timeout > 0)
        cfg.idle_timeout = o->idle_timeout;
    fx.w.set = settings_new(&cfg, o->tls, err, sizeof(err));
    if (!fx.w.set)
        fail_msg("settings_new: %s", err);
    fx.w.base = fx.base;
    fx.w.wh = &fx.wh;
    TAILQ_INIT(&fx.w.conns);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    assert_int_equal(getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &fx.sndbuf, &len), 0);
    /* Non-blocking, as the listener hands sockets over. */
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    fx.fd = sv[1];
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(FX_PORT);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    conn_accept(&fx.w, sv[0], (struct sockaddr *)&sin, (int)sizeof(sin), 0);
    assert_int_equal(fx.admits, 1);
    assert_int_equal(fx.w.n_conns, 1);
}

/* How many entries a directory has (besides . and ..). */
static int fx_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* The end of every test: the connection is gone, freed once, and every
 * count it kept is back. */
static void fx_finish(void)
{
    DRIVE(fx.w.n_conns == 0);
    assert_true(TAILQ_EMPTY(&fx.w.conns));
    assert_int_equal(fx.releases, fx.admits);
    assert_int_equal((long)METRIC_GET(connections_active), fx.active0);
    assert_int_equal((long)METRIC_GET(sessions_authorization), fx.auth0);
    assert_int_equal((long)METRIC_GET(sessions_transaction), fx.trans0);
    assert_int_equal((long)METRIC_GET(spool_files), fx.spool_files0);
    if (fx.spool_dir[0])
        assert_int_equal(fx_dir_entries(fx.spool_dir), 0);
    fx_check_breaches();
}

/* cmocka teardown: frees what the test left, whether it passed or not. */
static int fx_teardown(void **state)
{
    struct conn *c;
    size_t i;
    int turns = 0;

    (void)state;
    cl_close();
    /* A test that failed half-way may leave its connection: end it. */
    while (fx.base && (c = TAILQ_FIRST(&fx.w.conns)) && turns++ < 1000) {
        for (; c; c = conn_next(c))
            conn_abort(c);
        event_base_loop(fx.base, EVLOOP_NONBLOCK);
    }
    for (i = 0; i < fx.n_reqs; i++)
        fake_free(fx.reqs[i]);
    if (fx.ssl_ctx)
        SSL_CTX_free(fx.ssl_ctx);
    settings_unref(fx.w.set);
    free(fx.w.scratch);
    if (fx.guard)
        event_free(fx.guard);
    if (fx.base)
        event_base_free(fx.base);
    if (fx.spool_dir[0] && rmdir(fx.spool_dir) != 0)
        print_error("cannot remove %s: %s\n", fx.spool_dir, strerror(errno));
    free(fx.got);
    memset(&fx, 0, sizeof(fx));
    fx.fd = -1;
    return 0;
}

/* ---- helpers for sessions ------------------------------------------------ */

/* The connection's /sessions entry. */
static struct adm_session fx_snapshot(void)
{
    struct adm_session s;
    struct conn *c = TAILQ_FIRST(&fx.w.conns);

    if (!c)
        fail_msg("the connection is gone");
    assert_null(conn_next(c));
    conn_snapshot(c, &s);
    return s;
}

static void fx_expect_state(const char *state, const char *command)
{
    struct adm_session s = fx_snapshot();

    assert_string_equal(s.state, state);
    assert_string_equal(s.command, command);
}

/* USER/PASS answered by the fake: alice, with a listing of n messages. */
static void fx_login(const uint64_t *sizes, size_t n)
{
    char line[128];
    uint64_t total = 0;
    size_t i, calls = fx.n_reqs;
    struct wh_req *r;

    for (i = 0; i < n; i++)
        total += sizes[i];
    cl_send("USER alice\r\nPASS secret\r\n");
    cl_expect("+OK send PASS\r\n");
    DRIVE(fx.n_reqs == calls + 1);
    r = fake_last(WH_AUTHENTICATE);
    assert_string_equal(r->user, "alice");
    assert_string_equal(r->password, "secret");
    fake_auth_ok(r, NULL);
    DRIVE(fx.n_reqs == calls + 2);
    r = fake_last(WH_LIST);
    fx.t_login = util_mono();
    fake_list(r, sizes, n);
    snprintf(line, sizeof(line), "+OK maildrop has %zu message%s (%llu octets)\r\n", n,
             n == 1 ? "" : "s", (unsigned long long)total);
    cl_expect(line);
}

/* QUIT with nothing deleted, answered; the connection closes. */
static void fx_quit(void)
{
    struct wh_req *r;
    size_t calls = fx.n_reqs;

    cl_send("QUIT\r\n");
    DRIVE(fx.n_reqs == calls + 1);
    r = fake_last(WH_QUIT);
    assert_int_equal(r->n_deleted, 0);
    fake_status(r, WH_OK);
    cl_expect("+OK bye, 0 messages deleted\r\n");
    cl_expect_eof();
}

/* A message of about `approx` octets in LF lines, some starting with a dot
 * and some that are a lone dot. `wire` is what the client must receive
 * after the +OK line: CRLF line ends, dot-stuffed, then ".\r\n"; `size` is
 * its listed size (CRLF line ends, before dot-stuffing). */
struct msg {
    char *raw, *wire;
    size_t raw_len, wire_len;
    uint64_t size;
};

static void msg_make(struct msg *m, size_t approx)
{
    size_t cap = approx + 256, i = 0, at, j;
    int n;

    m->raw = malloc(cap);
    m->wire = malloc(2 * cap + 3);
    assert_non_null(m->raw);
    assert_non_null(m->wire);
    at = (size_t)sprintf(m->raw, "Subject: a test message\nFrom: test@pop.test\n\n");
    while (at < approx) {
        if (i % 97 == 5)
            n = sprintf(m->raw + at, ".\n");
        else
            n = sprintf(m->raw + at, "%sline %07zu of the message, some text to fill it\n",
                        i % 5 == 0 ? "." : "", i);
        at += (size_t)n;
        i++;
    }
    m->raw_len = at;
    /* The expected conversion, line by line. */
    m->wire_len = 0;
    m->size = 0;
    for (i = 0; i < m->raw_len; i = j + 1) {
        for (j = i; m->raw[j] != '\n'; j++)
            ;
        if (m->raw[i] == '.')
            m->wire[m->wire_len++] = '.';
        memcpy(m->wire + m->wire_len, m->raw + i, j - i);
        m->wire_len += j - i;
        memcpy(m->wire + m->wire_len, "\r\n", 2);
        m->wire_len += 2;
        m->size += j - i + 2;
    }
    memcpy(m->wire + m->wire_len, ".\r\n", 3);
    m->wire_len += 3;
}

static void msg_free(struct msg *m)
{
    free(m->raw);
    free(m->wire);
}

/* The +OK of a RETR of m. */
static void msg_ok_line(const struct msg *m, char *out, size_t n)
{
    snprintf(out, n, "+OK %llu octets\r\n", (unsigned long long)m->size);
}

/* RETR n: the retrieve call, begun with WH_OK and let flow by conn. */
static struct wh_req *fx_retr_begin(uint32_t n)
{
    char line[32];
    size_t calls = fx.n_reqs;
    struct wh_req *r;

    snprintf(line, sizeof(line), "RETR %u\r\n", (unsigned)n);
    cl_send(line);
    DRIVE(fx.n_reqs == calls + 1);
    r = fake_last(WH_RETRIEVE);
    assert_int_equal(r->message, n);
    assert_int_equal(r->lines, -1);
    fake_begin(r, WH_OK);
    DRIVE(r->resumes == 1); /* after +OK, conn lets the body flow */
    return r;
}

/* ---- greeting, login, pipelining ----------------------------------------- */

/* The greeting, a command, QUIT before login; what /sessions shows. */
static void test_greeting_and_quit(void **state)
{
    struct fx_opts o = {0};
    struct adm_session s;
    size_t capa_at;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    s = fx_snapshot();
    assert_string_equal(s.state, "AUTHORIZATION");
    assert_string_equal(s.command, "");
    assert_string_equal(s.user, "");
    assert_string_equal(s.ip, "127.0.0.1");
    assert_int_equal(s.port, FX_PORT);
    assert_int_equal(s.tls, 0);
    assert_int_equal(s.bytes_in, 0);
    assert_int_equal(s.bytes_out, strlen(GREETING));
    assert_int_equal(strlen(s.id), 16);

    cl_send("CAPA\r\n");
    capa_at = fx.seen;
    cl_expect("+OK capability list follows\r\n");
    DRIVE(cl_has(fx.seen + 3) && memcmp(fx.got + fx.got_len - 5, "\r\n.\r\n", 5) == 0);
    assert_non_null(memmem(fx.got + capa_at, fx.got_len - capa_at, "PIPELINING\r\n", 12));
    fx.seen = fx.got_len;
    s = fx_snapshot();
    assert_int_equal(s.bytes_in, 6);
    assert_int_equal(s.bytes_out, fx.got_len);

    cl_send("QUIT\r\n");
    cl_expect("+OK bye\r\n");
    cl_expect_eof();
    assert_int_equal(fx.n_reqs, 0);
    fx_finish();
}

/*
 * USER, PASS and two more commands in one write: the PASS reply waits for
 * authenticate (answered later) and then list; meanwhile nothing else is
 * read (no third call, no reply); then the replies come in order, whole.
 */
static void test_login_waits_for_the_backend(void **state)
{
    struct fx_opts o = {0};
    const uint64_t sizes[] = {120, 80};
    struct wh_req *r;
    struct adm_session s;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("USER alice\r\nPASS secret\r\nSTAT\r\nNOOP\r\n");
    cl_expect("+OK send PASS\r\n");
    DRIVE(fx.n_reqs == 1);
    r = fake_last(WH_AUTHENTICATE);
    assert_string_equal(r->user, "alice");
    assert_string_equal(r->method, "USER");
    assert_string_equal(r->password, "secret");
    assert_int_equal(r->client_tls, 0);
    assert_string_equal(r->session, fx_snapshot().id);
    cl_expect_nothing();
    assert_int_equal(fx.n_reqs, 1);
    assert_int_equal(wh_client_inflight(&fx.wh), 1);
    fx_expect_state("AUTHORIZATION", "PASS");

    fake_auth_ok(r, "alice@pop.test");
    DRIVE(fx.n_reqs == 2);
    r = fake_last(WH_LIST);
    assert_string_equal(r->user, "alice@pop.test"); /* the name the backend confirmed */
    cl_expect_nothing();
    assert_int_equal(fx.n_reqs, 2);

    fake_list(r, sizes, 2);
    cl_expect("+OK maildrop has 2 messages (200 octets)\r\n"
              "+OK 2 200\r\n"
              "+OK\r\n");
    cl_expect_nothing();
    s = fx_snapshot();
    assert_string_equal(s.state, "TRANSACTION");
    assert_string_equal(s.command, "");
    assert_string_equal(s.user, "alice@pop.test");
    fx_quit();
    assert_int_equal(fx.n_reqs, 3);
    fx_finish();
}

/* A refused login: its reply waits out auth_failure_delay, and nothing
 * is answered before it. */
static void test_failed_login_waits_for_the_delay(void **state)
{
    struct fx_opts o = {.auth_failure_delay = 0.3};
    struct wh_result res;
    struct wh_req *r;
    double t0;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("USER alice\r\nPASS wrong\r\nQUIT\r\n");
    cl_expect("+OK send PASS\r\n");
    DRIVE(fx.n_reqs == 1);
    r = fake_last(WH_AUTHENTICATE);
    memset(&res, 0, sizeof(res));
    res.status = WH_REFUSED;
    res.http_status = 200;
    res.code = WH_CODE_AUTH;
    t0 = util_mono();
    fake_done(r, &res);
    cl_expect_nothing();
    fx_expect_state("AUTHORIZATION", "");
    cl_expect("-ERR [AUTH] invalid user name or password\r\n");
    assert_true(util_mono() - t0 >= 0.3 - FX_SLACK);
    cl_expect("+OK bye\r\n");
    cl_expect_eof();
    assert_int_equal(fx.n_reqs, 1);
    fx_finish();
}

/* Many commands in one write; a command split across writes, at every
 * byte; the next command's first bytes behind a complete one. */
static void test_pipelining_and_split_commands(void **state)
{
    struct fx_opts o = {0};
    const uint64_t sizes[] = {100, 200, 300};
    char batch[2048], want[2048];
    const char *line = "LIST 3\r\n";
    size_t i, nb = 0, nw = 0;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 3);

    for (i = 0; i < 40; i++) {
        nb += (size_t)sprintf(batch + nb, "NOOP\r\n");
        nw += (size_t)sprintf(want + nw, "+OK\r\n");
    }
    nb += (size_t)sprintf(batch + nb, "STAT\r\nLIST\r\nUIDL 2\r\nDELE 1\r\nstat\r\nLIST 1\r\n"
                                      "RSET\r\nlist 1\r\n");
    nw +=
        (size_t)sprintf(want + nw, "+OK 3 600\r\n"
                                   "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
                                   "+OK 2 u2\r\n"
                                   "+OK message 1 deleted\r\n"
                                   "+OK 2 500\r\n"
                                   "-ERR message 1 already deleted\r\n"
                                   "+OK maildrop has 3 messages (600 octets)\r\n"
                                   "+OK 1 100\r\n");
    cl_send_n(batch, nb);
    cl_expect_n(want, nw);
    cl_expect_nothing();

    /* One byte per write: no reply before the line is complete. */
    for (i = 0; line[i + 1]; i++) {
        cl_send_n(line + i, 1);
        cl_expect_nothing();
    }
    cl_send_n(line + i, 1);
    cl_expect("+OK 3 300\r\n");

    /* A complete command and the start of the next. */
    cl_send("NOOP\r\nST");
    cl_expect("+OK\r\n");
    cl_expect_nothing();
    cl_send("AT\r");
    cl_expect_nothing();
    cl_send("\n");
    cl_expect("+OK 3 600\r\n");

    fx_quit();
    assert_int_equal(fx.n_reqs, 3); /* authenticate, list, quit: nothing else */
    fx_finish();
}

/* Commands behind a RETR wait until the whole message has gone out, and
 * are answered in order after its final dot. */
static void test_retrieve_holds_the_commands_behind_it(void **state)
{
    struct fx_opts o = {0};
    const char body[] = "Subject: hi\n\n.hidden\nbody\n";
    const char wire[] = "Subject: hi\r\n\r\n..hidden\r\nbody\r\n";
    const uint64_t sizes[] = {sizeof(wire) - 1 - 1}; /* before dot-stuffing */
    struct wh_req *r;
    char ok[64];

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    cl_send("RETR 1\r\nNOOP\r\nSTAT\r\n");
    DRIVE(fx.n_reqs == 3);
    r = fake_last(WH_RETRIEVE);
    assert_int_equal(r->message, 1);
    assert_int_equal(r->lines, -1);
    assert_string_equal(r->uid, "u1");
    cl_expect_nothing();
    fx_expect_state("TRANSACTION", "RETR");

    fake_begin(r, WH_OK);
    snprintf(ok, sizeof(ok), "+OK %llu octets\r\n", (unsigned long long)sizes[0]);
    cl_expect(ok);
    assert_int_equal(r->resumes, 1);
    /* The body flows as it comes: the first line, then the rest. */
    assert_int_equal(fake_data(r, body, 12), WH_DATA_TAKEN);
    cl_expect("Subject: hi\r\n");
    cl_expect_nothing();
    assert_int_equal(fake_data(r, body + 12, sizeof(body) - 1 - 12), WH_DATA_TAKEN);
    cl_expect(wire + 13);
    cl_expect_nothing();
    fx_expect_state("TRANSACTION", "RETR");
    fake_end(r, WH_END_OK);
    snprintf(ok, sizeof(ok), ".\r\n+OK\r\n+OK 1 %llu\r\n", (unsigned long long)sizes[0]);
    cl_expect(ok);
    cl_expect_nothing();
    fx_quit();
    fx_finish();
}

/* TOP: once the header and the lines asked for have gone through, conn
 * stops the transfer itself (WH_DATA_STOP) and ends the reply. */
static void test_top_stops_the_transfer(void **state)
{
    struct fx_opts o = {0};
    struct msg m;
    uint64_t sizes[1];
    struct wh_req *r;
    size_t at = 0, n;
    int rc = WH_DATA_TAKEN;

    (void)state;
    msg_make(&m, 64 * 1024);
    sizes[0] = m.size;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    cl_send("TOP 1 6\r\n");
    DRIVE(fx.n_reqs == 3);
    r = fake_last(WH_RETRIEVE);
    assert_int_equal(r->lines, 6);
    fake_begin(r, WH_OK);
    cl_expect("+OK top of message follows\r\n");
    DRIVE(r->resumes == 1);
    while (rc == WH_DATA_TAKEN && at < m.raw_len) {
        n = m.raw_len - at < 100 ? m.raw_len - at : 100;
        rc = fake_data(r, m.raw + at, n);
        at += n;
        fx_settle();
    }
    assert_int_equal(rc, WH_DATA_STOP);
    assert_true(at < m.raw_len / 4);
    cl_expect("Subject: a test message\r\nFrom: test@pop.test\r\n\r\n"
              "..line 0000000 of the message, some text to fill it\r\n"
              "line 0000001 of the message, some text to fill it\r\n"
              "line 0000002 of the message, some text to fill it\r\n"
              "line 0000003 of the message, some text to fill it\r\n"
              "line 0000004 of the message, some text to fill it\r\n"
              "..\r\n"
              ".\r\n");
    cl_expect_nothing();
    fx_quit();
    msg_free(&m);
    fx_finish();
}

/* ---- backpressure and the spool ------------------------------------------ */

/*
 * Spooling off: a client that does not read makes the stream answer
 * WH_DATA_FULL once conn holds its share, and the transfer stays paused
 * (no wh_resume) until the client reads; then it resumes. The client gets
 * every byte, in order.
 */
static void test_backpressure_pauses_without_spool(void **state)
{
    struct fx_opts o = {0};
    struct msg m;
    uint64_t sizes[1];
    struct wh_req *r;
    size_t at = 0, n, chunk = 32 * 1024, wire_at = 0, fulls = 0, i;
    unsigned long fallbacks = METRIC_GET(spool_fallbacks);
    char ok[64];
    int rc, resumes;

    (void)state;
    msg_make(&m, 3 * 1024 * 1024);
    sizes[0] = m.size;
    msg_ok_line(&m, ok, sizeof(ok));
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    r = fx_retr_begin(1);
    while (at < m.raw_len) {
        n = m.raw_len - at < chunk ? m.raw_len - at : chunk;
        rc = fake_data(r, m.raw + at, n);
        if (rc == WH_DATA_TAKEN) {
            for (i = at; i < at + n; i++) /* what conn made of it: CRLF, dot-stuffed */
                wire_at +=
                    1 + (m.raw[i] == '\n') + (i > 0 && m.raw[i] == '.' && m.raw[i - 1] == '\n');
            at += n;
            fx_settle();
            continue;
        }
        assert_int_equal(rc, WH_DATA_FULL);
        fulls++;
        /* Held for the client (its output and the socket's buffer):
         * bounded, whatever the message's size. */
        assert_true(strlen(ok) + wire_at - (fx.got_len - fx.seen) <=
                    FX_OUTPUT_MAX + 2 * chunk + (size_t)fx.sndbuf);
        /* Paused while the client reads nothing; a client that leaves the
         * output full for 50 ms is slow, and with spooling off that is a
         * fallback, counted once per stream. */
        resumes = r->resumes;
        if (fulls == 1)
            DRIVE(METRIC_GET(spool_fallbacks) == fallbacks + 1);
        fx_settle();
        assert_int_equal(r->resumes, resumes);
        assert_false(r->flowing);
        /* Resumed once it reads. */
        DRIVE((cl_pull(), r->resumes == resumes + 1));
    }
    assert_true(fulls >= 2);
    fake_end(r, WH_END_OK);
    cl_expect(ok);
    cl_expect_n(m.wire, m.wire_len);
    cl_expect_nothing();
    assert_int_equal(METRIC_GET(spool_fallbacks), fallbacks + 1); /* counted once per stream */
    cl_send("NOOP\r\n");
    cl_expect("+OK\r\n");
    fx_quit();
    msg_free(&m);
    fx_finish();
}

/*
 * Spooling on: the stream takes everything at the backend's pace while
 * the client reads nothing (one pause, until the client has left its output
 * full for 50 ms and the stream moves to the spool);
 * the spool file is unlinked; a command sent meanwhile waits; then the
 * client gets the message byte-exact, and the command's reply after it.
 */
static void test_spool_takes_the_stream(void **state)
{
    struct fx_opts o = {.spool = 1};
    struct msg m;
    uint64_t sizes[2];
    struct wh_req *r;
    size_t at = 0, n, chunk = 50001;
    int pauses = 0;
    unsigned long spooled = METRIC_GET(spool_bytes_total);
    char ok[64];

    (void)state;
    msg_make(&m, 3 * 1024 * 1024);
    sizes[0] = 10;
    sizes[1] = m.size;
    msg_ok_line(&m, ok, sizeof(ok));
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 2);
    r = fx_retr_begin(2);
    while (at < m.raw_len) {
        n = m.raw_len - at < chunk ? m.raw_len - at : chunk;
        pauses += fake_data_spooling(r, m.raw + at, n);
        at += n;
        fx_settle();
    }
    assert_int_equal((long)METRIC_GET(spool_files), fx.spool_files0 + 1);
    assert_int_equal(fx_dir_entries(fx.spool_dir), 0); /* unlinked from birth */
    assert_true(METRIC_GET(spool_bytes_total) - spooled >= m.wire_len - FX_OUTPUT_MAX);
    fx_expect_state("TRANSACTION", "RETR");
    fake_end(r, WH_END_OK);
    fx_settle();
    /* once after +OK, once when the stream moved to the spool */
    assert_int_equal(pauses, 1);
    assert_int_equal(r->resumes, 2);
    fx_expect_state("TRANSACTION", ""); /* the backend is done; the spool drains */
    cl_send("NOOP\r\n");
    cl_expect(ok);
    cl_expect_n(m.wire, m.wire_len);
    cl_expect("+OK\r\n");
    cl_expect_nothing();
    assert_int_equal((long)METRIC_GET(spool_files), fx.spool_files0);
    fx_quit();
    msg_free(&m);
    fx_finish();
}

/* ---- STLS ---------------------------------------------------------------- */

/* Writes a throwaway self-signed certificate and its key. 0 or -1. */
static int tls_make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    FILE *f;
    int rc = -1;

    if (!pkey || !x)
        goto done;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"pop.test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto done;
    if (!(f = fopen(cert_path, "w")))
        goto done;
    rc = PEM_write_X509(f, x) == 1 ? 0 : -1;
    fclose(f);
    if (rc < 0 || !(f = fopen(key_path, "w")))
        goto done;
    rc = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1 ? 0 : -1;
    fclose(f);
done:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/*
 * STLS with commands appended in the same write, before the handshake
 * (the STARTTLS command-injection attack): none of them may run, before
 * TLS or inside it. After the handshake the session is still at the start
 * of AUTHORIZATION, and calls say tls.
 */
static void test_stls_discards_input_sent_before_the_handshake(void **state)
{
    struct fx_opts o = {.tls = 1};
    const uint64_t sizes[] = {42};
    unsigned long handshakes = METRIC_GET(tls_handshakes);

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("STLS\r\nUSER alice\r\nCAPA\r\n");
    cl_expect("+OK begin TLS negotiation\r\n");
    cl_expect_nothing();
    cl_start_tls();
    DRIVE(METRIC_GET(tls_handshakes) == handshakes + 1);
    assert_int_equal(fx_snapshot().tls, 1);
    cl_expect_nothing();

    /* USER was not taken: PASS has no user to go with. */
    cl_send("PASS secret\r\n");
    cl_expect("-ERR send USER first\r\n");
    cl_send("STLS\r\n");
    cl_expect("-ERR TLS is already active\r\n");
    assert_int_equal(fx.n_reqs, 0);

    fx_login(sizes, 1);
    assert_int_equal(fx.reqs[0]->client_tls, 1);
    fx_quit(); /* the close includes TLS's close_notify, read as the end */
    fx_finish();
}

/* ---- timeouts ------------------------------------------------------------ */

/* login_timeout counts from the connection's start, however the client
 * drips its commands: a command at 0.6 s does not move a 1 s deadline. */
static void test_login_timeout(void **state)
{
    struct fx_opts o = {.login_timeout = 1.0};
    unsigned long timeouts = METRIC_GET(timeouts);
    double t0 = util_mono(), t;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    fx_run_until(t0 + 0.6);
    cl_send("USER alice\r\n");
    cl_expect("+OK send PASS\r\n");
    cl_expect(AUTOLOGOUT);
    cl_expect_eof();
    t = util_mono() - t0;
    assert_true(t >= 1.0 - FX_SLACK);
    assert_true(t < 1.55); /* a timer from the last command would fire at 1.6 s */
    assert_int_equal(METRIC_GET(timeouts), timeouts + 1);
    assert_int_equal(fx.n_reqs, 0);
    fx_finish();
}

/* idle_timeout after login counts from the last command: the autologout
 * reply, the close, and the disconnect event saying why. */
static void test_idle_timeout(void **state)
{
    struct fx_opts o = {.idle_timeout = 0.5, .disconnect = 1};
    const uint64_t sizes[] = {10};
    unsigned long timeouts = METRIC_GET(timeouts);
    struct wh_req *r;
    double t1;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    fx_run_until(fx.t_login + 0.2);
    t1 = util_mono();
    cl_send("NOOP\r\n");
    cl_expect("+OK\r\n");
    cl_expect(AUTOLOGOUT);
    cl_expect_eof();
    assert_true(util_mono() - t1 >= 0.5 - FX_SLACK);
    assert_int_equal(METRIC_GET(timeouts), timeouts + 1);
    fx_finish();
    assert_int_equal(fx.n_reqs, 3);
    r = fake_last(WH_DISCONNECT);
    assert_string_equal(r->reason, "timeout");
    assert_string_equal(r->user, "alice");
}

/* send_timeout: a client that stops reading in the middle of a message is
 * cut off; it has received a part of the message and never the final
 * dot. */
static void test_send_timeout(void **state)
{
    struct fx_opts o = {.spool = 1, .send_timeout = 0.5, .disconnect = 1};
    struct msg m;
    uint64_t sizes[1];
    struct wh_req *r;
    size_t at = 0, n, chunk = 65536, got;
    unsigned long send_timeouts = METRIC_GET(send_timeouts);
    char ok[64];
    double t0;

    (void)state;
    msg_make(&m, 2 * 1024 * 1024);
    sizes[0] = m.size;
    msg_ok_line(&m, ok, sizeof(ok));
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    t0 = util_mono();
    r = fx_retr_begin(1);
    while (at < m.raw_len) {
        n = m.raw_len - at < chunk ? m.raw_len - at : chunk;
        fake_data_spooling(r, m.raw + at, n);
        at += n;
    }
    fake_end(r, WH_END_OK);
    DRIVE(fx.w.n_conns == 0); /* the client reads nothing */
    assert_true(util_mono() - t0 >= 0.5 - FX_SLACK);
    assert_int_equal(METRIC_GET(send_timeouts), send_timeouts + 1);
    DRIVE(cl_eof());
    got = fx.got_len - fx.seen;
    assert_true(got > strlen(ok));
    assert_true(got < strlen(ok) + m.wire_len);
    assert_memory_equal(fx.got + fx.seen, ok, strlen(ok));
    assert_memory_equal(fx.got + fx.seen + strlen(ok), m.wire, got - strlen(ok));
    fx.seen = fx.got_len;
    assert_int_equal(fake_count(WH_DISCONNECT), 1);
    r = fake_last(WH_DISCONNECT);
    assert_string_equal(r->reason, "timeout");
    msg_free(&m);
    fx_finish();
}

/* ---- the client leaves during a call ------------------------------------- */

/* A reset while authenticate runs: the call is cancelled and the
 * connection freed, once; nothing else is called. */
static void test_reset_during_authenticate_cancels_it(void **state)
{
    struct fx_opts o = {.disconnect = 1};
    struct wh_req *r;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("USER alice\r\nPASS secret\r\n");
    DRIVE(fx.n_reqs == 1);
    r = fake_last(WH_AUTHENTICATE);
    cl_close(); /* "+OK send PASS" is unread: a reset */
    DRIVE(fx.w.n_conns == 0);
    assert_int_equal(r->state, REQ_CANCELLED);
    assert_int_equal(wh_client_inflight(&fx.wh), 0);
    assert_int_equal(fx.n_reqs, 1); /* not logged in: no disconnect event */
    fx_finish();
}

/* The answer and the reset in the same turn of the loop: the finished call
 * is not cancelled (the fake would count a breach), the connection is freed
 * once, and whatever conn started after it is cancelled. */
static void test_answer_and_reset_in_one_turn(void **state)
{
    struct fx_opts o = {0};
    struct wh_req *r;
    size_t i;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("USER alice\r\nPASS secret\r\n");
    DRIVE(fx.n_reqs == 1);
    r = fake_last(WH_AUTHENTICATE);
    fake_auth_ok(r, NULL);
    cl_close();
    DRIVE(fx.w.n_conns == 0);
    assert_int_equal(r->state, REQ_FINISHED);
    for (i = 1; i < fx.n_reqs; i++)
        assert_int_equal(fx.reqs[i]->state, REQ_CANCELLED);
    assert_int_equal(wh_client_inflight(&fx.wh), 0);
    fx_finish();
}

/* The client half-closes after PASS (EOF, no reset): what it sent is
 * answered, the call runs to its end, then the connection closes. */
static void test_eof_during_authenticate_is_answered(void **state)
{
    struct fx_opts o = {.disconnect = 1};
    const uint64_t sizes[] = {10};
    struct wh_req *r;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    cl_send("USER alice\r\nPASS secret\r\n");
    cl_expect("+OK send PASS\r\n");
    DRIVE(fx.n_reqs == 1);
    assert_int_equal(shutdown(fx.fd, SHUT_WR), 0);
    fx_settle();
    r = fake_last(WH_AUTHENTICATE);
    assert_int_equal(fx.w.n_conns, 1);
    fake_auth_ok(r, NULL);
    DRIVE(fx.n_reqs == 2);
    fake_list(fake_last(WH_LIST), sizes, 1);
    cl_expect("+OK maildrop has 1 message (10 octets)\r\n");
    cl_expect_eof();
    fx_finish();
    r = fake_last(WH_DISCONNECT);
    assert_string_equal(r->reason, "client_closed");
}

/* QUIT read, then a reset while quit runs: the quit is not cancelled, its
 * result is taken after the client left (the deletion is committed), and
 * the connection is freed after it; no disconnect event follows a quit
 * that succeeded. */
static void test_quit_commits_after_the_client_left(void **state)
{
    struct fx_opts o = {.disconnect = 1};
    const uint64_t sizes[] = {10, 20};
    unsigned long deleted = METRIC_GET(messages_deleted);
    struct wh_req *r;

    (void)state;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 2);
    cl_send("DELE 2\r\nQUIT\r\n");
    DRIVE(fx.n_reqs == 3);
    r = fake_last(WH_QUIT);
    assert_int_equal(r->n_deleted, 1);
    assert_int_equal(r->deleted[0], 2);
    assert_string_equal(r->deleted_uid[0], "u2");
    fx_expect_state("UPDATE", "QUIT");
    cl_close(); /* "+OK message 2 deleted" is unread: a reset */
    fx_settle();
    assert_int_equal(r->state, REQ_RUNNING);
    assert_int_equal(fx.w.n_conns, 1);
    fake_status(r, WH_OK);
    DRIVE(fx.w.n_conns == 0);
    assert_int_equal(METRIC_GET(messages_deleted), deleted + 1);
    assert_int_equal(fx.n_reqs, 3);
    fx_finish();
}

/* A reset while a retrieve is paused for the client: the transfer is
 * cancelled, the connection freed, and one disconnect event sent. */
static void test_reset_during_retrieve_cancels_it(void **state)
{
    struct fx_opts o = {.disconnect = 1};
    struct msg m;
    uint64_t sizes[1];
    struct wh_req *r, *d;
    size_t at = 0, n, chunk = 65536;
    int rc = WH_DATA_TAKEN;

    (void)state;
    msg_make(&m, 2 * 1024 * 1024);
    sizes[0] = m.size;
    fx_start(&o);
    cl_expect(GREETING);
    fx_login(sizes, 1);
    r = fx_retr_begin(1);
    while (rc == WH_DATA_TAKEN) {
        assert_true(at < m.raw_len);
        n = m.raw_len - at < chunk ? m.raw_len - at : chunk;
        rc = fake_data(r, m.raw + at, n);
        at += n;
        fx_settle();
    }
    assert_int_equal(rc, WH_DATA_FULL);
    cl_close();
    DRIVE(fx.w.n_conns == 0);
    assert_int_equal(r->state, REQ_CANCELLED);
    assert_int_equal(fake_count(WH_DISCONNECT), 1);
    d = fake_last(WH_DISCONNECT);
    assert_true(strcmp(d->reason, "client_closed") == 0 || strcmp(d->reason, "error") == 0);
    msg_free(&m);
    fx_finish();
}

/* ---- what /sessions shows ------------------------------------------------ */

/* CONNECTING while the PROXY header is awaited (and no greeting before
 * it); the address it carries afterwards; CLOSING while the last replies
 * wait for a client that does not read them. */
static void test_snapshot_connecting_and_closing(void **state)
{
    struct fx_opts o = {.proxy = 1, .sndbuf = 4096};
    struct adm_session s;
    char *batch, *capa;
    size_t capa_len, i, n;

    (void)state;
    fx_start(&o);
    fx_settle();
    s = fx_snapshot();
    assert_string_equal(s.state, "CONNECTING");
    assert_string_equal(s.ip, "127.0.0.1");
    cl_expect_nothing();
    cl_send("PROXY TCP4 203.0.113.7 192.0.2.1 51522 110\r\n");
    cl_expect(GREETING);
    s = fx_snapshot();
    assert_string_equal(s.state, "AUTHORIZATION");
    assert_string_equal(s.ip, "203.0.113.7");
    assert_int_equal(s.port, 51522);

    /* One CAPA's reply, then enough of them to stay in the output. */
    cl_send("CAPA\r\n");
    cl_expect("+OK capability list follows\r\n");
    DRIVE(cl_has(fx.seen + 3) && memcmp(fx.got + fx.got_len - 5, "\r\n.\r\n", 5) == 0);
    capa_len = fx.got_len - fx.seen + strlen("+OK capability list follows\r\n");
    capa = malloc(capa_len);
    assert_non_null(capa);
    memcpy(capa, fx.got + fx.seen - strlen("+OK capability list follows\r\n"), capa_len);
    fx.seen = fx.got_len;
    n = 8 * (size_t)fx.sndbuf / capa_len + 1;
    batch = malloc(6 * n + 7);
    assert_non_null(batch);
    for (i = 0; i < n; i++)
        memcpy(batch + 6 * i, "CAPA\r\n", 6);
    memcpy(batch + 6 * n, "QUIT\r\n", 6);
    cl_send_n(batch, 6 * n + 6);
    DRIVE(strcmp(fx_snapshot().state, "CLOSING") == 0);
    for (i = 0; i < n; i++)
        cl_expect_n(capa, capa_len);
    cl_expect("+OK bye\r\n");
    cl_expect_eof();
    free(batch);
    free(capa);
    fx_finish();
}

/* -------------------------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_greeting_and_quit, fx_teardown),
        cmocka_unit_test_teardown(test_login_waits_for_the_backend, fx_teardown),
        cmocka_unit_test_teardown(test_failed_login_waits_for_the_delay, fx_teardown),
        cmocka_unit_test_teardown(test_pipelining_and_split_commands, fx_teardown),
        cmocka_unit_test_teardown(test_retrieve_holds_the_commands_behind_it, fx_teardown),
        cmocka_unit_test_teardown(test_top_stops_the_transfer, fx_teardown),
        cmocka_unit_test_teardown(test_backpressure_pauses_without_spool, fx_teardown),
        cmocka_unit_test_teardown(test_spool_takes_the_stream, fx_teardown),
        cmocka_unit_test_teardown(test_stls_discards_input_sent_before_the_handshake, fx_teardown),
        cmocka_unit_test_teardown(test_login_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_idle_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_send_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_reset_during_authenticate_cancels_it, fx_teardown),
        cmocka_unit_test_teardown(test_answer_and_reset_in_one_turn, fx_teardown),
        cmocka_unit_test_teardown(test_eof_during_authenticate_is_answered, fx_teardown),
        cmocka_unit_test_teardown(test_quit_commits_after_the_client_left, fx_teardown),
        cmocka_unit_test_teardown(test_reset_during_retrieve_cancels_it, fx_teardown),
        cmocka_unit_test_teardown(test_snapshot_connecting_and_closing, fx_teardown),
    };
    char dir[200], cert[300], key[300];
    const char *tmp = getenv("TMPDIR");
    const char *level = getenv("POP3GW_TEST_LOG"); /* e.g. debug: conn's state changes */
    int rc;

    signal(SIGPIPE, SIG_IGN); /* as main.c does: a write to a closed socket is an error */
    log_init(0, level && log_level_parse(level) >= 0 ? log_level_parse(level) : LOG_ERROR);
    limits_init(0, 0);
    fx.fd = -1;
    snprintf(dir, sizeof(dir), "%s/pop3gw-test-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    rc = tls_make_cert(cert, key) == 0 ? tls_init(cert, key, 12) : -1;
    unlink(cert);
    unlink(key);
    rmdir(dir);
    if (rc != 0) {
        fprintf(stderr, "cannot make a TLS certificate for the STLS test\n");
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    tls_cleanup();
    limits_cleanup();
    return rc;
}
