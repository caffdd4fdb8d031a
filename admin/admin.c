/*
 * admin: the embedded admin HTTP endpoint (libmicrohttpd).
 *
 *   GET /healthz   every worker's event loop answered a ping in time
 *   GET /readyz    listening, workers alive, not draining (local state only)
 *   GET /status    JSON: counters, gauges, latency estimates, backend state
 *   GET /metrics   Prometheus text format
 *   GET /sessions  JSON: copies of the live sessions
 *   GET /history   JSON: the last five minutes, sampled every 5 s (history.h)
 *   GET /          the dashboard page (admin/dashboard.c)
 *
 * Threads: libmicrohttpd runs the endpoint on one internal thread with
 * epoll (or poll), so a connection that is slow to send its request costs a
 * descriptor, not a thread. Nothing on that thread waits: /healthz, /readyz
 * and /sessions, which ask the gateway through struct adm_source (admin.h)
 * and may wait for the workers up to ADMIN_PING_MS or ADMIN_QUERY_MS, are
 * suspended (MHD_suspend_connection) and handed to a lane (admin/lane.h), a
 * helper thread that asks once for every request queued so far and resumes
 * each with its answer. Probes and session copies have a lane each, so a
 * probe never waits behind a session listing. Workers never wait for the
 * admin side: they answer when their loop gets to it and drop their
 * reference. Counters are read with relaxed loads (snapshot.c); the admin
 * side never touches a worker's sessions directly.
 *
 * A slow client cannot hold the endpoint: a connection has ADMIN_HEAD_S
 * seconds from its accept, or from the end of its previous response, to
 * send a complete request head (a deadline for the whole head, not per
 * read); the probe lane's tick shuts down the ones that do not. At most
 * ADMIN_MAX_CONNECTIONS connections are open at once, ADMIN_MAX_PER_IP of
 * them from one address, and one that reads nothing for ADMIN_CONN_TIMEOUT_S
 * is closed.
 *
 * With admin_token set, every path but /healthz and /readyz needs
 * `Authorization: Bearer TOKEN` (compared in constant time); the dashboard
 * page alone also accepts `?token=TOKEN`, since a browser cannot send a
 * header when it opens a URL. Without a token, the paths that show user
 * names and client addresses (/sessions, /) answer loopback clients only,
 * and a listener beyond loopback is named in a start-up warning.
 */
#include "admin/admin.h"

#include <microhttpd.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <errno.h>
#include <unistd.h>
#include <time.h>

#include "admin/dashboard.h"
#include "admin/history.h"
#include "admin/lane.h"
#include "admin/render.h"
#include "admin/snapshot.h"
#include "lib/util.h"
#include "lib/log.h"

/* How long workers get to copy their sessions (/sessions), and to answer a
 * ping (/healthz, /readyz: short enough that a 503 still beats a probe's
 * usual 1 s timeout). */
#define ADMIN_QUERY_MS 1000
#define ADMIN_PING_MS 500
#define ADMIN_MAX_PER_IP 16     /* admin connections from one client address */
#define ADMIN_HEAD_S 5          /* seconds to send a whole request head */
#define ADMIN_CONN_TIMEOUT_S 10 /* an admin connection that reads or sends nothing */
#define ADMIN_TICK_MS 1000      /* the probe lane's tick: head deadline, history */
#define ADMIN_TOKEN_DIGEST 32   /* SHA-256 */
/* Connections the kernel holds until the endpoint takes them: a burst from
 * a flood must not fill it, or a probe's handshake waits for a SYN
 * retransmission (a second). The kernel caps it at net.core.somaxconn. */
#define ADMIN_BACKLOG 1024

#define TYPE_JSON "application/json"
#define TYPE_PROM "text/plain; version=0.0.4; charset=utf-8"
#define TYPE_HTML "text/html; charset=utf-8"

/* The dashboard runs only its own inline script and talks only to us. */
#define DASHBOARD_CSP                                                                              \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "                  \
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'"

/* One admin connection, from accept to close (libmicrohttpd's socket
 * context), on the list the head deadline walks. */
struct adm_conn {
    struct adm_conn *prev, *next; /* admin.conns, under admin.conns_lock */
    int fd;
    double since; /* monotonic: accepted, or its previous response ended */
    int waiting;  /* no complete request head since `since` */
    int cut;      /* shut down for missing the head deadline */
};

/* What a parked request waits for. */
enum adm_park { PARK_NONE, PARK_HEALTHZ, PARK_READYZ, PARK_SESSIONS };

/* One request (libmicrohttpd's con_cls), from its head to its end. */
struct adm_req {
    struct adm_job job; /* when parked on a lane; job.arg = this */
    struct MHD_Connection *c;
    enum adm_park park; /* PARK_NONE: answered on the spot */
    int answered;       /* the lane's answer is below */
    unsigned int status;
    const char *type;
    char *body; /* heap; NULL with answered: out of memory */
};

static struct {
    struct MHD_Daemon *daemon;
    const struct adm_source *src;
    int has_token;
    unsigned char token_digest[ADMIN_TOKEN_DIGEST];
    struct sockaddr_storage addr;
    struct adm_lane *probes;   /* /healthz, /readyz; the tick */
    struct adm_lane *sessions; /* /sessions */
    pthread_mutex_t conns_lock;
    struct adm_conn *conns;
} admin = {.conns_lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- responses ------------------------------------------------------- */

/* A response with the headers every answer carries. `body` is copied unless
 * `owned` (then libmicrohttpd free()s it). */
static struct MHD_Response *resp_new(char *body, int owned, const char *type)
{
    struct MHD_Response *r;

    r = MHD_create_response_from_buffer(strlen(body), body,
                                        owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (owned)
            free(body);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    return r;
}

static enum MHD_Result resp_send(struct MHD_Connection *c, unsigned int status,
                                 struct MHD_Response *r)
{
    enum MHD_Result ret;

    if (!r)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, const char *type,
                             const char *body)
{
    return resp_send(c, status, resp_new((char *)body, 0, type));
}

/* A rendered document (heap, or NULL when memory ran out). */
static enum MHD_Result reply_owned(struct MHD_Connection *c, const char *type, char *body)
{
    if (!body)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, TYPE_JSON, "{\"error\":\"out of memory\"}");
    return resp_send(c, MHD_HTTP_OK, resp_new(body, 1, type));
}

/* ---- parked requests: answered on a lane -------------------------------- */

/* Gives a parked request its answer and resumes it. `body` is a heap
 * string or NULL (out of memory). The request is not touched afterwards:
 * once resumed, libmicrohttpd's thread may finish and free it. */
static void park_answer(struct adm_req *q, unsigned int status, const char *type, char *body)
{
    struct MHD_Connection *c = q->c;

    q->status = status;
    q->type = type;
    q->body = body;
    q->answered = 1;
    MHD_resume_connection(c);
}

/* The same answer, a copy each, to every request of a batch. */
static void park_answer_all(struct adm_job *batch, unsigned int status, const char *type,
                            const char *body)
{
    struct adm_job *j, *next;

    for (j = batch; j; j = next) {
        next = j->next;
        park_answer(j->arg, status, type, body ? strdup(body) : NULL);
    }
}

static char *park_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *park_printf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

/* The probe lane's batch: one ping answers every /healthz and /readyz
 * queued. While the server drains, workers whose sessions are done leave
 * their loops and cannot answer, so a draining process is reported alive
 * ("draining") without a ping: it exits by itself within shutdown_grace,
 * and a liveness probe must not kill the sessions that are finishing. */
static void park_run_probes(void *arg, struct adm_job *batch, int stopping)
{
    int asked = 0, answered = 0, draining = 0, pinged = 0, listening = 1, ok;
    struct adm_snapshot snap;
    struct adm_job *j, *next;

    (void)arg;
    if (stopping) {
        park_answer_all(batch, MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON,
                        "{\"status\":\"stopping\"}");
        return;
    }
    draining = admin.src->draining(admin.src->arg);
    admin.src->snapshot(admin.src->arg, &snap);
    listening = snap.v.n_listeners > 0;
    if (!draining) {
        answered = admin.src->ping(admin.src->arg, ADMIN_PING_MS, &asked);
        pinged = 1;
    }
    ok = pinged && asked > 0 && answered >= asked;
    if (pinged && !ok)
        log_kv(LOG_WARN, NULL, "admin: workers not answering", "workers=%d answered=%d", asked,
               answered);
    for (j = batch; j; j = next) {
        struct adm_req *q = j->arg;
        int healthz = q->park == PARK_HEALTHZ;
        next = j->next;
        if (healthz && draining)
            park_answer(q, MHD_HTTP_OK, TYPE_JSON,
                        park_printf("{\"status\":\"draining\",\"workers\":%d}", snap.v.workers));
        else if (healthz)
            park_answer(q, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON,
                        park_printf("{\"status\":\"%s\",\"workers\":%d,\"answered\":%d}",
                                    ok ? "ok" : "unhealthy", asked, answered));
        else if (!draining && listening && ok)
            park_answer(q, MHD_HTTP_OK, TYPE_JSON, strdup("{\"status\":\"ready\"}"));
        else
            park_answer(q, MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON,
                        park_printf("{\"status\":\"not ready\",\"reason\":\"%s\","
                                    "\"workers\":%d,\"answered\":%d}",
                                    draining     ? "draining"
                                    : !listening ? "not listening"
                                                 : "workers not answering",
                                    draining ? snap.v.workers : asked, answered));
    }
}
/* Oldest session first, then by id, so the list reads the same each time. */
static int session_cmp(const void *a, const void *b)
{
    const struct adm_session *x = a, *y = b;

    if (x->since != y->since)
        return x->since < y->since ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* The sessions lane's batch: one copy of the sessions answers every
 * /sessions queued. */
static void park_run_sessions(void *arg, struct adm_job *batch, int stopping)
{
    struct sessions_view sv = {NULL, 0, 0, 0};
    struct adm_session *list = NULL;
    size_t n = 0;
    char *body;

    (void)arg;
    if (stopping) {
        park_answer_all(batch, MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON, "{\"error\":\"stopping\"}");
        return;
    }
    sv.answered = admin.src->sessions(admin.src->arg, ADMIN_QUERY_MS, &list, &n, &sv.workers);
    if (sv.answered < 0) {
        park_answer_all(batch, MHD_HTTP_INTERNAL_SERVER_ERROR, TYPE_JSON,
                        "{\"error\":\"out of memory\"}");
        return;
    }
    if (list)
        qsort(list, n, sizeof(*list), session_cmp);
    sv.list = list;
    sv.n = n;
    body = render_sessions_json(&sv, (long long)time(NULL));
    free(list);
    park_answer_all(batch, MHD_HTTP_OK, TYPE_JSON, body);
    free(body);
}

/* ---- the head deadline ---------------------------------------------------- */

/* The probe lane's tick: shuts down every connection that has not sent a
 * complete request head within ADMIN_HEAD_S of its accept or of the end of
 * its previous response. libmicrohttpd then reads the end of the stream
 * and closes it. A connection leaves the list (notify_conn, CLOSED) before
 * libmicrohttpd closes its descriptor, and both happen under conns_lock
 * here, so the descriptor shut down is always still this connection's. */
static void conns_reap(void *arg)
{
    double now = util_mono();
    struct adm_conn *a;
    int cut = 0;

    (void)arg;
    pthread_mutex_lock(&admin.conns_lock);
    for (a = admin.conns; a; a = a->next) {
        if (!a->waiting || a->cut || now - a->since < ADMIN_HEAD_S)
            continue;
        shutdown(a->fd, SHUT_RDWR);
        a->cut = 1;
        cut++;
    }
    pthread_mutex_unlock(&admin.conns_lock);
    if (cut)
        log_kv(LOG_WARN, NULL, "admin: closed connections that sent no whole request in time",
               "connections=%d deadline=%d", cut, ADMIN_HEAD_S);
}

/* The probe lane's tick: the head deadline, and a history sample when one
 * is due (the snapshot never waits for the workers). */
static void admin_tick(void *arg)
{
    struct adm_snapshot snap;

    conns_reap(arg);
    admin.src->snapshot(admin.src->arg, &snap);
    history_offer(&snap, util_real_ms());
}

/* libmicrohttpd (MHD_OPTION_NOTIFY_CONNECTION): a connection starts or
 * ends. Runs on its thread. */
static void conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe)
{
    const union MHD_ConnectionInfo *ci;
    struct adm_conn *a = *socket_context;

    (void)cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || !(a = calloc(1, sizeof(*a))))
            return; /* no deadline for this one: it still has the idle timeout */
        a->fd = ci->connect_fd;
        a->since = util_mono();
        a->waiting = 1;
        pthread_mutex_lock(&admin.conns_lock);
        a->next = admin.conns;
        if (a->next)
            a->next->prev = a;
        admin.conns = a;
        pthread_mutex_unlock(&admin.conns_lock);
        *socket_context = a;
        return;
    }
    if (!a)
        return;
    pthread_mutex_lock(&admin.conns_lock);
    if (a->prev)
        a->prev->next = a->next;
    else
        admin.conns = a->next;
    if (a->next)
        a->next->prev = a->prev;
    pthread_mutex_unlock(&admin.conns_lock);
    free(a);
    *socket_context = NULL;
}

/* Marks the connection of c as having sent a whole request head (waiting
 * 0), or as waiting for the next one from now (waiting 1). */
static void conns_mark(struct MHD_Connection *c, int waiting)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct adm_conn *a = ci ? ci->socket_context : NULL;

    if (!a)
        return;
    pthread_mutex_lock(&admin.conns_lock);
    a->waiting = waiting;
    a->since = util_mono();
    pthread_mutex_unlock(&admin.conns_lock);
}

/* ---- handlers answered on the spot ------------------------------------- */

static enum MHD_Result h_status(struct MHD_Connection *c)
{
    struct adm_snapshot snap;

    admin.src->snapshot(admin.src->arg, &snap);
    return reply_owned(c, TYPE_JSON, render_status_json(&snap));
}

static enum MHD_Result h_metrics(struct MHD_Connection *c)
{
    struct adm_snapshot snap;

    admin.src->snapshot(admin.src->arg, &snap);
    return reply_owned(c, TYPE_PROM, render_prometheus(&snap));
}

static enum MHD_Result h_history(struct MHD_Connection *c)
{
    static struct adm_sample samples[HISTORY_N]; /* only libmicrohttpd's thread renders */
    size_t n = history_copy(samples);

    return reply_owned(c, TYPE_JSON, render_history_json(samples, n, util_real_ms()));
}

static enum MHD_Result h_dashboard(struct MHD_Connection *c)
{
    struct MHD_Response *r;

    r = MHD_create_response_from_buffer(admin_dashboard_len, (void *)admin_dashboard_html,
                                        MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, TYPE_HTML);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy", DASHBOARD_CSP);
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    return resp_send(c, MHD_HTTP_OK, r);
}

/* ---- routing and the token --------------------------------------------- */

struct route {
    const char *path;
    int open;           /* no token needed */
    int query_token;    /* ?token= accepted */
    int names_users;    /* shows user names and client addresses: without a
                           token, loopback clients only */
    enum adm_park park; /* answered on a lane (fn NULL) */
    enum MHD_Result (*fn)(struct MHD_Connection *c);
};

static const struct route routes[] = {
    {"/healthz", 1, 0, 0, PARK_HEALTHZ, NULL},   {"/readyz", 1, 0, 0, PARK_READYZ, NULL},
    {"/status", 0, 0, 0, PARK_NONE, h_status},   {"/metrics", 0, 0, 0, PARK_NONE, h_metrics},
    {"/sessions", 0, 0, 1, PARK_SESSIONS, NULL}, {"/history", 0, 0, 0, PARK_NONE, h_history},
    {"/", 0, 1, 1, PARK_NONE, h_dashboard},
};

static const struct route *route_find(const char *url)
{
    size_t i;

    for (i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].path) == 0)
            return &routes[i];
    return NULL;
}

/* Guards has_token and token_digest, which SIGHUP may change. */
static pthread_mutex_t admin_token_lock = PTHREAD_MUTEX_INITIALIZER;

static int admin_has_token(void)
{
    int has;

    pthread_mutex_lock(&admin_token_lock);
    has = admin.has_token;
    pthread_mutex_unlock(&admin_token_lock);
    return has;
}

static int token_digest(const char *s, unsigned char out[ADMIN_TOKEN_DIGEST])
{
    unsigned int n = 0;

    return EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL) == 1 && n == ADMIN_TOKEN_DIGEST;
}

/* Compares digests, so the time taken says nothing about the token or its
 * length. */
static int token_matches(const char *given)
{
    unsigned char d[ADMIN_TOKEN_DIGEST];
    int ok;

    if (!given || !token_digest(given, d))
        return 0;
    pthread_mutex_lock(&admin_token_lock);
    ok = CRYPTO_memcmp(d, admin.token_digest, sizeof d) == 0;
    pthread_mutex_unlock(&admin_token_lock);
    return ok;
}

static int authorized(struct MHD_Connection *c, const struct route *rt)
{
    const char *h;

    if (!admin_has_token() || rt->open)
        return 1;
    h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        for (h += 7; *h == ' '; h++)
            ;
        if (token_matches(h))
            return 1;
    }
    return rt->query_token &&
           token_matches(MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token"));
}

static void client_ip(struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    socklen_t len =
        sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    snprintf(out, cap, "?");
    if (sa)
        getnameinfo(sa, len, out, (socklen_t)cap, NULL, 0, NI_NUMERICHOST);
}

/* 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8. */
static int sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa && sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) ==
               127;
    if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

static int client_is_loopback(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    return ci && sockaddr_is_loopback(ci->client_addr);
}

/* 403 for a path that names users and addresses, asked without a token
 * configured from beyond loopback. */
static enum MHD_Result forbidden(struct MHD_Connection *c, const struct route *rt)
{
    char ip[64];

    client_ip(c, ip, sizeof ip);
    log_kv(LOG_WARN, NULL, "admin: refused: without admin_token this path answers loopback only",
           "client=%s path=%s", ip, rt->path);
    if (rt->query_token)
        return reply(c, MHD_HTTP_FORBIDDEN, TYPE_HTML,
                     "<!doctype html><title>pop3gw: forbidden</title>"
                     "<p>The dashboard shows user names and client addresses. Without an admin "
                     "token it answers only clients on this machine (loopback). Set "
                     "<code>admin_token</code> (or <code>admin_token_file</code>) and open "
                     "<code>/?token=TOKEN</code>.");
    return reply(c, MHD_HTTP_FORBIDDEN, TYPE_JSON,
                 "{\"error\":\"forbidden\",\"reason\":\"without admin_token, this path answers "
                 "loopback clients only: it shows user names and client addresses; set "
                 "admin_token (or admin_token_file) and send Authorization: Bearer TOKEN\"}");
}

static enum MHD_Result unauthorized(struct MHD_Connection *c, const struct route *rt)
{
    struct MHD_Response *r;
    char ip[64];

    client_ip(c, ip, sizeof ip);
    log_kv(LOG_WARN, NULL, "admin: unauthorized request", "client=%s path=%s", ip, rt->path);
    if (rt->query_token)
        r = resp_new("<!doctype html><title>pop3gw: unauthorized</title>"
                     "<p>This endpoint needs its admin token: open <code>/?token=TOKEN</code>.",
                     0, TYPE_HTML);
    else
        r = resp_new("{\"error\":\"unauthorized\"}", 0, TYPE_JSON);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"pop3gw\"");
    return resp_send(c, MHD_HTTP_UNAUTHORIZED, r);
}

/* Suspends the request and hands it to its lane; the lane's answer comes
 * back through admin_request() once it is resumed. When the lane stops,
 * answers at once. */
static enum MHD_Result park(struct MHD_Connection *c, struct adm_req *q, enum adm_park kind)
{
    struct adm_lane *lane = kind == PARK_SESSIONS ? admin.sessions : admin.probes;

    q->c = c;
    q->park = kind;
    q->job.arg = q;
    MHD_suspend_connection(c); /* first: the lane may resume it at once */
    if (adm_lane_submit(lane, &q->job) < 0) {
        MHD_resume_connection(c);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON, "{\"error\":\"stopping\"}");
    }
    return MHD_YES;
}

/* A parked request is back with its lane's answer. */
static enum MHD_Result park_reply(struct MHD_Connection *c, struct adm_req *q)
{
    char *body = q->body;

    q->body = NULL;
    if (!body)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, TYPE_JSON, "{\"error\":\"out of memory\"}");
    return resp_send(c, q->status, resp_new(body, 1, q->type));
}

/* libmicrohttpd: called once when a request's head has arrived (*con_cls is
 * still NULL), then for any body, then once more with *upload_size 0. A GET
 * or HEAD is answered on that last call (one queued earlier makes
 * libmicrohttpd close the connection instead of keeping it alive), or
 * parked on a lane and answered when the lane resumes it. Other methods get
 * 405 at once (their body is never read). */
static enum MHD_Result admin_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct adm_req *q = *con_cls;
    const struct route *rt;
    struct MHD_Response *r;

    (void)cls;
    (void)version;
    (void)upload_data;
    if (!q) {
        conns_mark(c, 0); /* the head is in */
        if (!(q = calloc(1, sizeof(*q))))
            return MHD_NO;
        *con_cls = q;
        if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)
            return MHD_YES;
        log_kv(LOG_DEBUG, NULL, "admin request", "method=%s path=%s status=%d", method, url,
               MHD_HTTP_METHOD_NOT_ALLOWED);
        r = resp_new("{\"error\":\"method not allowed\"}", 0, TYPE_JSON);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return resp_send(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    }
    if (*upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (q->answered)
        return park_reply(c, q);
    log_kv(LOG_DEBUG, NULL, "admin request", "method=%s path=%s", method, url);
    if (!(rt = route_find(url)))
        return reply(c, MHD_HTTP_NOT_FOUND, TYPE_JSON, "{\"error\":\"not found\"}");
    if (!authorized(c, rt))
        return unauthorized(c, rt);
    if (rt->names_users && !admin_has_token() && !client_is_loopback(c))
        return forbidden(c, rt);
    if (rt->park != PARK_NONE)
        return park(c, q, rt->park);
    return rt->fn(c);
}

/* libmicrohttpd (MHD_OPTION_NOTIFY_COMPLETED): a request ended, answered
 * or not. The connection, if kept alive, waits for its next head from now. */
static void admin_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct adm_req *q = *con_cls;

    (void)cls;
    (void)toe;
    if (q) {
        free(q->body);
        free(q);
        *con_cls = NULL;
    }
    conns_mark(c, 1);
}

/* ---- start and stop ---------------------------------------------------- */

/* libmicrohttpd's own error messages, as log lines: at most a few a second
 * (a flood of refused connections would otherwise write one each). */
static void admin_mhd_log(void *cls, const char *fmt, va_list ap)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static time_t second;
    static int lines, dropped;
    time_t now = time(NULL);
    char msg[512];
    int quiet, was_dropped = 0;
    size_t n;

    (void)cls;
    pthread_mutex_lock(&lock);
    if (now != second) {
        was_dropped = dropped;
        second = now;
        lines = dropped = 0;
    }
    quiet = ++lines > 5;
    dropped += quiet;
    pthread_mutex_unlock(&lock);
    if (was_dropped)
        log_kv(LOG_WARN, NULL, "admin: libmicrohttpd messages dropped", "count=%d", was_dropped);
    if (quiet)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    log_kv(LOG_WARN, NULL, "admin: libmicrohttpd", "error=%s", msg);
}

/* The listening address ("*" = every IPv4 address). */
static int admin_resolve(const struct adm_params *a, struct sockaddr_storage *out)
{
    struct addrinfo hints, *res = NULL;
    const char *host = strcmp(a->host, "*") == 0 ? "0.0.0.0" : a->host;
    char port[16];
    int rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", a->port);
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0 || !res ||
        res->ai_addrlen > sizeof(*out)) {
        log_kv(LOG_ERROR, NULL, "cannot resolve admin_listen", "host=%s port=%d error=%s", a->host,
               a->port, rc ? gai_strerror(rc) : "no address");
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Warns when the endpoint listens beyond loopback without a token: the
 * paths that name users then answer loopback clients only, and /status and
 * /metrics (numbers, no names) anyone who reaches the port. */
static void admin_warn_exposed(void)
{
    char host[64] = "?";
    socklen_t len =
        admin.addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    if (!admin.daemon || admin_has_token() ||
        sockaddr_is_loopback((const struct sockaddr *)&admin.addr))
        return;
    getnameinfo((const struct sockaddr *)&admin.addr, len, host, sizeof host, NULL, 0,
                NI_NUMERICHOST);
    log_kv(LOG_WARN, NULL,
           "admin endpoint listens beyond loopback without admin_token: /sessions and the "
           "dashboard answer loopback clients only, /status and /metrics anyone",
           "address=%s hint=%s", host, "set admin_token or admin_token_file");
}

int admin_set_token(const char *token)
{
    unsigned char d[ADMIN_TOKEN_DIGEST];
    int has = token && *token, had;

    if (has && !token_digest(token, d)) {
        log_kv(LOG_ERROR, NULL, "cannot hash admin_token", NULL);
        return -1;
    }
    pthread_mutex_lock(&admin_token_lock);
    had = admin.has_token;
    admin.has_token = has;
    if (has)
        memcpy(admin.token_digest, d, sizeof d);
    else
        util_wipe(admin.token_digest, sizeof admin.token_digest);
    pthread_mutex_unlock(&admin_token_lock);
    util_wipe(d, sizeof d);
    if (had && !has)
        admin_warn_exposed(); /* SIGHUP removed it */
    return 0;
}

static int admin_listen_fd = -1; /* bound by admin_bind(), before privileges drop */

int admin_bind(const struct adm_params *p)
{
    struct sockaddr_storage addr;
    int fd, one = 1;

    if (p->port == 0)
        return 0;
    if (admin_resolve(p, &addr) < 0)
        return -1;
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 ||
        bind(fd, (struct sockaddr *)&addr,
             addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                        : sizeof(struct sockaddr_in)) < 0 ||
        listen(fd, ADMIN_BACKLOG) < 0) {
        log_kv(LOG_ERROR, NULL, "cannot listen on admin_listen", "host=%s port=%d error=%s hint=%s",
               p->host, p->port, strerror(errno),
               "is the port in use? set admin_listen, or empty to disable it");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    admin_listen_fd = fd;
    return 0;
}

/* Clears what admin_start() set (not the locks, which stay initialised). */
static void admin_clear(void)
{
    adm_lane_free(admin.probes);
    adm_lane_free(admin.sessions);
    admin.probes = admin.sessions = NULL;
    admin.daemon = NULL;
    admin.src = NULL;
    memset(&admin.addr, 0, sizeof admin.addr);
    admin_set_token(NULL);
}

int admin_start(const struct adm_params *p, const struct adm_source *src)
{
    /* libmicrohttpd's one internal thread, with epoll where there is one
     * (else poll: descriptors past 1024), and suspended requests. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG;

    if (p->port == 0) {
        log_kv(LOG_INFO, NULL, "admin endpoint disabled", NULL);
        return 0;
    }
    admin.src = src;
    if (admin_set_token(p->token) < 0 || admin_resolve(p, &admin.addr) < 0)
        goto fail;
    if (admin_listen_fd < 0 && admin_bind(p) < 0)
        goto fail;
    history_clear();
    admin.probes = adm_lane_start("probes", park_run_probes, admin_tick, ADMIN_TICK_MS, NULL);
    admin.sessions = adm_lane_start("sessions", park_run_sessions, NULL, 0, NULL);
    if (!admin.probes || !admin.sessions)
        goto fail;
    if (admin.addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    admin.daemon = MHD_start_daemon(
        flags, (uint16_t)p->port, NULL, NULL, admin_request, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        admin_mhd_log, NULL, /* first: see MHD docs */
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)admin_listen_fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)ADMIN_MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)ADMIN_MAX_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)ADMIN_CONN_TIMEOUT_S, MHD_OPTION_NOTIFY_CONNECTION, conns_notify, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, admin_completed, NULL, MHD_OPTION_END);
    if (!admin.daemon) {
        log_kv(LOG_ERROR, NULL, "cannot start the admin endpoint", "host=%s port=%d hint=%s",
               p->host, p->port, "is the port in use? set admin_listen, or empty to disable it");
        goto fail;
    }
    admin_listen_fd = -1; /* the daemon owns it now */
    log_kv(LOG_INFO, NULL, "admin endpoint listening", "host=%s port=%d token=%s", p->host, p->port,
           admin.has_token ? "yes" : "no");
    admin_warn_exposed();
    return 0;
fail:
    admin_clear();
    return -1;
}

void admin_stop(void)
{
    /* The lanes first: they answer what is parked (a batch in progress is
     * back within ADMIN_QUERY_MS) and refuse more, so that no request is
     * suspended when the daemon stops (libmicrohttpd requires it). */
    adm_lane_stop(admin.probes);
    adm_lane_stop(admin.sessions);
    if (admin.daemon) {
        MHD_stop_daemon(admin.daemon);
        log_kv(LOG_INFO, NULL, "admin endpoint stopped", NULL);
    }
    if (admin_listen_fd >= 0) { /* bound, never handed to a daemon */
        close(admin_listen_fd);
        admin_listen_fd = -1;
    }
    admin_clear();
}
