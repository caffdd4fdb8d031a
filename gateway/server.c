/*
 * server: worker threads, each with its own event loop, listeners and
 * webhook client. The workers share one listening socket per address and
 * take turns on it as worker_balance() decides. There is no SO_REUSEPORT:
 * a second instance started by mistake on the same port fails to bind and
 * says so, instead of quietly taking half of the clients.
 *
 * The main thread binds every socket (before privileges drop), starts the
 * workers, hands them new settings on SIGHUP and, on SIGTERM, asks each
 * one to drain through an event it activates: a worker stops accepting,
 * tells idle sessions it is stopping, lets commands in flight finish (a
 * QUIT completes), and exits when its connections and webhook calls are
 * done or the grace period ends.
 */
#include "gateway/server.h"

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "gateway/conn.h"
#include "gateway/settings.h"
#include "gateway/worker.h"
#include "lib/log.h"
#include "lib/util.h"
#include "webhook/wh_client.h"

#define SERVER_BACKLOG 4096 /* one queue for every worker (capped by net.core.somaxconn) */
#define SERVER_ACCEPT_RETRY_MS 100
#define SERVER_BALANCE_MARGIN                                                                      \
    16                        /* connections above its share (plus 1/8 of it) to stop accepting */
#define SERVER_BALANCE_BACK 8 /* ... and (plus 1/16) at or below which to start again */
#define SERVER_BALANCE_CHECK_MS 50 /* how often a worker that stopped looks again */
#define SERVER_QUERY_WORKERS 64    /* workers a query reaches (cfg's CFG_WORKERS_MAX) */

struct listener_spec {
    struct cfg_addr addr;
    int tls; /* implicit TLS */
};

struct server {
    struct settings *set; /* the current settings (a reference) */
    struct listener_spec specs[2 * CFG_MAX_LISTEN];
    int n_specs;
    int *fds; /* [worker][spec] listening sockets, bound before privileges drop */
    struct worker *workers;
    int n_workers;
    int n_running;           /* worker threads started (joined by server_stop) */
    atomic_long connections; /* open client connections, all workers */
    atomic_int accepting;    /* workers not kept out by worker_balance() */
    atomic_int draining;
};

/* A question to every worker, answered from their own loops. */
struct server_query {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;          /* the asker plus each worker yet to answer */
    int workers;       /* asked */
    int answered;      /* answered so far */
    int with_sessions; /* copy the sessions too */
    struct adm_session *list;
    size_t n, cap;
    struct server_query *next_in_worker[SERVER_QUERY_WORKERS]; /* per-worker queue links */
};

static int server_has_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* Creates one listening socket for `a`. -1 after logging why. */
static int server_listen_one(const struct cfg_addr *a)
{
    struct addrinfo hints, *res = NULL;
    char port[16];
    int fd = -1, one = 1, rc;
    const char *host = a->host;
    int any = !strcmp(host, "*") || !*host;

    /* "*": every address, IPv6 and IPv4 on one dual-stack socket where the
     * system has IPv6, else IPv4 only. */
    if (any)
        host = server_has_ipv6() ? "::" : "0.0.0.0";
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", a->port);
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        log_kv(LOG_ERROR, NULL, "cannot resolve listen address", "host=%s port=%d error=%s",
               a->host, a->port, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto err;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (any && res->ai_family == AF_INET6) {
        int zero = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SERVER_BACKLOG) < 0)
        goto err;
    freeaddrinfo(res);
    return fd;
err:
    if (errno == EADDRINUSE)
        log_kv(LOG_ERROR, NULL, "cannot listen: address in use", "host=%s port=%d hint=%s", a->host,
               a->port, "is another pop3gw (or another server) running on this port?");
    else
        log_kv(LOG_ERROR, NULL, "cannot listen", "host=%s port=%d error=%s", a->host, a->port,
               strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

struct server *server_new(struct settings *set)
{
    struct server *srv = calloc(1, sizeof(*srv));

    if (srv)
        srv->set = settings_ref(set);
    return srv;
}

int server_bind(struct server *srv)
{
    const struct cfg *cfg = &srv->set->cfg;
    int i, k;

    srv->n_workers = cfg->workers > 0 ? cfg->workers : 1;
    for (i = 0; i < cfg->n_listen; i++)
        srv->specs[srv->n_specs++] = (struct listener_spec){cfg->listen[i], 0};
    for (i = 0; i < cfg->n_listen_tls; i++)
        srv->specs[srv->n_specs++] = (struct listener_spec){cfg->listen_tls[i], 1};
    srv->fds = calloc((size_t)(srv->n_workers * srv->n_specs) + 1, sizeof(int));
    if (!srv->fds)
        return -1;
    for (i = 0; i < srv->n_workers * srv->n_specs; i++)
        srv->fds[i] = -1;
    /* One listening socket per address, shared by every worker (each holds
     * a duplicate): a connection waits in one queue for whichever worker is
     * accepting, and worker_balance() keeps a worker with more than its
     * share of the connections out of it. */
    for (k = 0; k < srv->n_specs; k++)
        if ((srv->fds[k] = server_listen_one(&srv->specs[k].addr)) < 0)
            return -1;
    for (i = 1; i < srv->n_workers; i++)
        for (k = 0; k < srv->n_specs; k++)
            if ((srv->fds[i * srv->n_specs + k] = fcntl(srv->fds[k], F_DUPFD_CLOEXEC, 0)) < 0) {
                log_kv(LOG_ERROR, NULL, "cannot share the listening socket", "error=%s",
                       strerror(errno));
                return -1;
            }
    for (k = 0; k < srv->n_specs; k++)
        log_kv(LOG_INFO, NULL, "listening", "host=%s port=%d tls=%d workers=%d",
               srv->specs[k].addr.host, srv->specs[k].addr.port, srv->specs[k].tls, srv->n_workers);
    return 0;
}

/* ---- worker ----------------------------------------------------------- */

static int server_spec_tls(struct worker *w, struct evconnlistener *l)
{
    int k;

    for (k = 0; k < w->n_listeners; k++)
        if (w->listeners[k] == l)
            return w->srv->specs[k].tls;
    return 0;
}

/* Turns the worker's listeners on or off. */
static void server_listeners(struct worker *w, int on)
{
    int k;

    for (k = 0; k < w->n_listeners; k++)
        if (on)
            evconnlistener_enable(w->listeners[k]);
        else
            evconnlistener_disable(w->listeners[k]);
}

/* Has every other worker that is kept out look again from its own loop. */
static void server_balance_wake(struct worker *w)
{
    struct server *srv = w->srv;
    int i;

    for (i = 0; i < srv->n_workers; i++)
        if (&srv->workers[i] != w && atomic_load(&srv->workers[i].balance_out))
            event_active(srv->workers[i].balance_ev, EV_TIMEOUT, 0);
}

/*
 * Keeps connections spread over the workers. Each worker takes new clients
 * from the shared listening sockets only while it holds no more than its
 * share of all connections plus SERVER_BALANCE_MARGIN and an eighth (it
 * comes back at SERVER_BALANCE_BACK and a sixteenth), so a worker that falls
 * behind, and would otherwise keep a growing part of the sessions waiting on
 * its loop, gets fewer new ones. Runs after each accept and close, and on a
 * timer while the worker is out; the last worker accepting never steps out.
 */
void worker_balance(struct worker *w)
{
    struct server *srv = w->srv;
    long share, n = (long)w->n_conns;
    int out;

    if (srv->n_workers < 2 || w->draining || w->accept_paused)
        return;
    share = (long)atomic_load(&srv->connections) / srv->n_workers;
    out = w->balance_out ? n > share + SERVER_BALANCE_BACK + share / 16
                         : n > share + SERVER_BALANCE_MARGIN + share / 8;
    if (out == w->balance_out)
        return;
    if (out) {
        struct timeval tv = {0, SERVER_BALANCE_CHECK_MS * 1000};
        int a = atomic_load(&srv->accepting);

        /* Someone must always accept: the last one stays in, and has the
         * others look again now rather than at their next check. */
        do {
            if (a <= 1) {
                server_balance_wake(w);
                return;
            }
        } while (!atomic_compare_exchange_weak(&srv->accepting, &a, a - 1));
        atomic_store(&w->balance_out, 1);
        server_listeners(w, 0);
        evtimer_add(w->balance_ev, &tv);
    } else {
        atomic_store(&w->balance_out, 0);
        atomic_fetch_add(&srv->accepting, 1);
        server_listeners(w, 1);
        evtimer_del(w->balance_ev);
    }
}

static void server_balance_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = {0, SERVER_BALANCE_CHECK_MS * 1000};

    (void)fd;
    (void)what;
    worker_balance(w);
    if (atomic_load(&w->balance_out) && !w->draining)
        evtimer_add(w->balance_ev, &tv); /* others' counts change too */
}

/* evconnlistener: a client connected. */
static void server_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int socklen, void *arg)
{
    struct worker *w = arg;

    conn_accept(w, fd, sa, socklen, server_spec_tls(w, l));
    worker_balance(w);
}

/* event: try accepting again after running out of descriptors. */
static void server_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    if (w->accept_paused) {
        w->accept_paused = 0;
        if (!atomic_load(&w->balance_out))
            atomic_fetch_add(&w->srv->accepting, 1);
    }
    if (w->draining || atomic_load(&w->balance_out))
        return;
    server_listeners(w, 1);
}

/* evconnlistener: accept failed. On EMFILE/ENFILE pause instead of spinning. */
static void server_accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, SERVER_ACCEPT_RETRY_MS * 1000};

    (void)l;
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return;
    log_kv(LOG_WARN, NULL, "accept paused: out of descriptors", "error=%s connections=%zu",
           strerror(err), w->n_conns);
    if (!w->accept_paused) {
        /* Not accepting: the balancing must not count on this worker. */
        w->accept_paused = 1;
        if (!atomic_load(&w->balance_out))
            atomic_fetch_sub(&w->srv->accepting, 1);
    }
    server_listeners(w, 0);
    evtimer_add(w->accept_retry, &tv);
}

/* event: every connection and call is done, or the grace period is over. */
static void server_drain_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = {0, 50 * 1000};

    (void)fd;
    (void)what;
    if (w->n_conns == 0 && wh_client_inflight(w->wh) == 0) {
        event_base_loopbreak(w->base);
        return;
    }
    evtimer_add(w->drain_ev, &tv);
}

static void server_grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct conn *c;

    (void)fd;
    (void)what;
    log_kv(LOG_WARN, NULL, "shutdown grace period over: closing sessions", "worker=%d open=%zu",
           w->index, w->n_conns);
    for (c = TAILQ_FIRST(&w->conns); c; c = conn_next(c))
        conn_abort(c);
    /* The loop ends once the kicks that free them have run. */
    event_base_loopexit(w->base, NULL);
}

/* event: activated by the main thread to stop. */
static void server_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = util_tv(w->set->cfg.shutdown_grace);
    struct conn *c, *next;
    int k;

    (void)fd;
    (void)what;
    if (w->draining)
        return;
    w->draining = 1;
    for (k = 0; k < w->n_listeners; k++)
        evconnlistener_disable(w->listeners[k]);
    for (c = TAILQ_FIRST(&w->conns); c; c = next) {
        next = conn_next(c);
        conn_drain(c);
    }
    evtimer_add(w->grace_ev, &tv);
    server_drain_check_cb(-1, 0, w);
}

/* ---- queries from the admin thread ------------------------------------ */

static void server_query_unref(struct server_query *q)
{
    int last;

    pthread_mutex_lock(&q->lock);
    last = --q->refs == 0;
    pthread_mutex_unlock(&q->lock);
    if (last) {
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->cond);
        free(q->list);
        free(q);
    }
}

/* Adds this worker's answer to a query. */
static void server_query_answer(struct worker *w, struct server_query *q)
{
    struct conn *c;
    size_t need;

    pthread_mutex_lock(&q->lock);
    if (q->with_sessions) {
        need = q->n + w->n_conns;
        if (need > q->cap) {
            size_t cap = need + 64;
            struct adm_session *l = realloc(q->list, cap * sizeof(*l));
            if (l) {
                q->list = l;
                q->cap = cap;
            }
        }
        for (c = TAILQ_FIRST(&w->conns); c && q->n < q->cap; c = conn_next(c)) {
            conn_snapshot(c, &q->list[q->n]);
            q->list[q->n++].worker = w->index;
        }
    }
    q->answered++;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    server_query_unref(q);
}

/* event: the admin thread asked something. */
static void server_query_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct server_query *q, *next;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&w->qlock);
    q = w->queries;
    w->queries = NULL;
    pthread_mutex_unlock(&w->qlock);
    for (; q; q = next) {
        next = q->next_in_worker[w->index];
        server_query_answer(w, q);
    }
}

struct server_query *server_query_start(struct server *srv, int with_sessions)
{
    struct server_query *q = calloc(1, sizeof(*q));
    int i, n = srv->n_running < SERVER_QUERY_WORKERS ? srv->n_running : SERVER_QUERY_WORKERS;

    if (!q)
        return NULL;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->with_sessions = with_sessions;
    q->workers = n;
    q->refs = 1 + n;
    for (i = 0; i < n; i++) {
        struct worker *w = &srv->workers[i];
        pthread_mutex_lock(&w->qlock);
        q->next_in_worker[i] = w->queries;
        w->queries = q;
        pthread_mutex_unlock(&w->qlock);
        event_active(w->query_ev, EV_TIMEOUT, 0);
    }
    return q;
}

int server_query_wait(struct server_query *q, int timeout_ms, int *asked)
{
    struct timespec until;
    int answered;

    *asked = q->workers;
    clock_gettime(CLOCK_REALTIME, &until);
    util_ts_add_ms(&until, timeout_ms);
    pthread_mutex_lock(&q->lock);
    while (q->answered < q->workers)
        if (pthread_cond_timedwait(&q->cond, &q->lock, &until) != 0)
            break;
    answered = q->answered;
    pthread_mutex_unlock(&q->lock);
    return answered;
}

struct adm_session *server_query_sessions(struct server_query *q, size_t *n)
{
    struct adm_session *list = NULL;

    /* A worker that answers late still writes into q->list under q->lock,
     * so the copy is made under it (a memcpy: a late worker waits for
     * nothing longer). */
    pthread_mutex_lock(&q->lock);
    *n = q->n;
    if (q->n && (list = malloc(q->n * sizeof(*list))) != NULL)
        memcpy(list, q->list, q->n * sizeof(*list));
    pthread_mutex_unlock(&q->lock);
    if (!list)
        *n = 0;
    return list;
}

void server_query_release(struct server_query *q)
{
    if (q)
        server_query_unref(q);
}

int server_draining(const struct server *srv)
{
    return atomic_load(&srv->draining);
}

void server_view(const struct server *srv, struct adm_view *v)
{
    const struct cfg *cfg = &srv->set->cfg;
    long inflight;
    int k;

    v->workers = srv->n_workers;
    v->draining = server_draining(srv);
    v->n_listeners = 0;
    for (k = 0; k < srv->n_specs && k < ADM_LISTENERS; k++) {
        struct adm_listener *l = &v->listeners[v->n_listeners++];
        snprintf(l->host, sizeof(l->host), "%s", srv->specs[k].addr.host);
        l->port = srv->specs[k].addr.port;
        l->tls = srv->specs[k].tls;
    }
    v->max_connections = cfg->max_connections > 0 ? cfg->max_connections : 0;
    /* Calls that can run at once: max_inflight, capped by the pool. */
    inflight = cfg->max_inflight > 0 ? (long)cfg->max_inflight : 0;
    if (cfg->backend_pool > 0 && (inflight == 0 || inflight > cfg->backend_pool))
        inflight = cfg->backend_pool;
    v->inflight_limit = inflight * srv->n_workers;
}

int worker_admit(struct worker *w, int max_connections)
{
    struct server *srv = w->srv;

    if (max_connections > 0 && atomic_fetch_add(&srv->connections, 1) >= max_connections) {
        atomic_fetch_sub(&srv->connections, 1);
        return -1;
    }
    if (max_connections <= 0)
        atomic_fetch_add(&srv->connections, 1);
    return 0;
}

#define SERVER_TRIM_AFTER_MS 50 /* worker_trim_soon(): after the last call this long */

void worker_trim_soon(struct worker *w)
{
    struct timeval tv = util_tv_ms(SERVER_TRIM_AFTER_MS);

    evtimer_add(w->trim_ev, &tv); /* re-armed by every call: it runs once things settle */
}

/* event: hand freed heap memory back. Streams keep up to a megabyte of
 * buffers in flight; for a fast reader the heap reuses them, but a slow
 * reader's move to the spool leaves them free at once, and without this
 * the process would keep them (the allocator only trims the top of the
 * heap past a high threshold, which main() sets for speed). */
static void server_trim_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    malloc_trim(0);
}

int worker_scratch(struct worker *w, size_t n)
{
    char *p;

    if (n <= w->scratch_cap)
        return 0;
    if (!(p = realloc(w->scratch, n)))
        return -1;
    w->scratch = p;
    w->scratch_cap = n;
    return 0;
}

void worker_release(struct worker *w)
{
    atomic_fetch_sub(&w->srv->connections, 1);
}

/* event: the main thread has new settings for this worker. */
static void server_reload_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct settings *set;
    struct wh_params whp;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&w->qlock);
    set = w->new_set;
    w->new_set = NULL;
    pthread_mutex_unlock(&w->qlock);
    if (!set)
        return;
    cfg_wh_params(&set->cfg, &whp);
    if (wh_client_set_params(w->wh, &whp) < 0)
        log_kv(LOG_ERROR, NULL, "cannot apply the new backend settings: keeping the old ones",
               "worker=%d", w->index);
    settings_unref(w->set);
    w->set = set; /* sessions that start from now on; running ones keep theirs */
}

void server_reload(struct server *srv, struct settings *set)
{
    int i;

    settings_unref(srv->set);
    srv->set = settings_ref(set);
    for (i = 0; i < srv->n_running; i++) {
        struct worker *w = &srv->workers[i];
        pthread_mutex_lock(&w->qlock);
        settings_unref(w->new_set);
        w->new_set = settings_ref(set);
        pthread_mutex_unlock(&w->qlock);
        event_active(w->reload_ev, EV_TIMEOUT, 0);
    }
}

static void *server_worker_main(void *arg)
{
    struct worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

static int server_worker_init(struct server *srv, struct worker *w, int index)
{
    struct wh_params whp;
    int k;

    w->index = index;
    w->srv = srv;
    w->set = settings_ref(srv->set);
    TAILQ_INIT(&w->conns);
    w->base = event_base_new();
    if (!w->base)
        return -1;
    cfg_wh_params(&srv->set->cfg, &whp);
    w->wh = wh_client_new(w->base, &whp);
    w->stop_ev = event_new(w->base, -1, 0, server_stop_cb, w);
    w->grace_ev = evtimer_new(w->base, server_grace_cb, w);
    w->drain_ev = evtimer_new(w->base, server_drain_check_cb, w);
    w->accept_retry = evtimer_new(w->base, server_accept_retry_cb, w);
    w->query_ev = event_new(w->base, -1, 0, server_query_cb, w);
    w->reload_ev = event_new(w->base, -1, 0, server_reload_cb, w);
    w->balance_ev = evtimer_new(w->base, server_balance_cb, w);
    w->trim_ev = evtimer_new(w->base, server_trim_cb, w);
    pthread_mutex_init(&w->qlock, NULL);
    if (!w->wh || !w->stop_ev || !w->grace_ev || !w->drain_ev || !w->accept_retry || !w->query_ev ||
        !w->reload_ev || !w->balance_ev || !w->trim_ev)
        return -1;
    for (k = 0; k < srv->n_specs; k++) {
        int *fd = &srv->fds[index * srv->n_specs + k];
        /* Backlog 0: listen() was called with SERVER_BACKLOG already; a
         * negative value would have libevent call it again with 128. */
        w->listeners[k] =
            evconnlistener_new(w->base, server_accept_cb, w, LEV_OPT_CLOSE_ON_FREE, 0, *fd);
        if (!w->listeners[k])
            return -1;
        *fd = -1; /* the listener owns it */
        w->n_listeners++;
        evconnlistener_set_error_cb(w->listeners[k], server_accept_error_cb);
    }
    return 0;
}

int server_start(struct server *srv)
{
    int i;

    srv->workers = calloc((size_t)srv->n_workers, sizeof(*srv->workers));
    if (!srv->workers)
        return -1;
    atomic_store(&srv->accepting, srv->n_workers);
    for (i = 0; i < srv->n_workers; i++)
        if (server_worker_init(srv, &srv->workers[i], i) < 0) {
            log_kv(LOG_ERROR, NULL, "cannot start worker", "worker=%d", i);
            return -1;
        }
    for (i = 0; i < srv->n_workers; i++)
        if (pthread_create(&srv->workers[i].thread, NULL, server_worker_main, &srv->workers[i]) !=
            0) {
            log_kv(LOG_ERROR, NULL, "cannot start worker thread", "worker=%d", i);
            return -1;
        } else {
            srv->n_running = i + 1;
        }
    return 0;
}

void server_stop(struct server *srv)
{
    int i;

    atomic_store(&srv->draining, 1);
    for (i = 0; i < srv->n_running; i++)
        event_active(srv->workers[i].stop_ev, EV_TIMEOUT, 0);
    for (i = 0; i < srv->n_running; i++)
        pthread_join(srv->workers[i].thread, NULL);
    srv->n_running = 0;
}

static void server_worker_free(struct worker *w)
{
    struct conn *c;
    int k;

    w->draining = 1; /* no balancing while the workers are torn down */
    /* Connections are freed by their kicks: run the loop once more. */
    for (c = w->base ? TAILQ_FIRST(&w->conns) : NULL; c; c = conn_next(c))
        conn_abort(c);
    for (k = 0; k < 4 && w->n_conns > 0; k++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    for (k = 0; k < w->n_listeners; k++)
        evconnlistener_free(w->listeners[k]);
    wh_client_free(w->wh);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->grace_ev)
        event_free(w->grace_ev);
    if (w->drain_ev)
        event_free(w->drain_ev);
    if (w->accept_retry)
        event_free(w->accept_retry);
    if (w->reload_ev)
        event_free(w->reload_ev);
    if (w->balance_ev)
        event_free(w->balance_ev);
    if (w->trim_ev)
        event_free(w->trim_ev);
    settings_unref(w->new_set);
    settings_unref(w->set);
    free(w->scratch);
    if (w->query_ev) {
        server_query_cb(-1, 0, w); /* answer what is left, so askers are not kept */
        event_free(w->query_ev);
    }
    if (w->base)
        event_base_free(w->base);
}

void server_free(struct server *srv)
{
    int i;

    if (!srv)
        return;
    if (srv->n_running)
        server_stop(srv);
    if (srv->workers)
        for (i = 0; i < srv->n_workers; i++)
            server_worker_free(&srv->workers[i]);
    free(srv->workers);
    if (srv->fds)
        for (i = 0; i < srv->n_workers * srv->n_specs; i++)
            if (srv->fds[i] >= 0)
                close(srv->fds[i]);
    free(srv->fds);
    settings_unref(srv->set);
    free(srv);
}
