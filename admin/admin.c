/*
 * admin: the embedded admin HTTP endpoint (libmicrohttpd).
 *
 *   GET /healthz   every worker's event loop answered a ping in time
 *   GET /readyz    listening, workers alive, not draining (local state only)
 *   GET /status    JSON: counters, gauges, latency estimates, backend state
 *   GET /metrics   Prometheus text format
 *   GET /sessions  JSON: copies of the live sessions
 *   GET /          the dashboard page (admin/dashboard.c)
 *
 * Threads: libmicrohttpd runs its own listening thread and one thread per
 * admin connection (MHD_USE_THREAD_PER_CONNECTION), at most
 * ADMIN_MAX_CONNECTIONS of them. /healthz, /readyz and /sessions ask the
 * gateway through struct adm_source (admin.h), which asks every worker
 * through its own event loop and blocks *this connection's thread* for at
 * most ADMIN_PING_MS or ADMIN_QUERY_MS.
 * Workers never wait for the admin side: they answer when their loop gets
 * to it and drop their reference. (DESIGN.md describes suspending the MHD
 * connection and resuming it from the worker; a thread per admin connection
 * gives the same guarantee with less machinery, since admin traffic is a few
 * requests a second.) Counters are read with relaxed loads (snapshot.c); the
 * admin side never touches a worker's sessions directly.
 *
 * With admin_token set, every path but /healthz and /readyz needs
 * `Authorization: Bearer TOKEN` (compared in constant time); the dashboard
 * page alone also accepts `?token=TOKEN`, since a browser cannot send a
 * header when it opens a URL.
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
#include "admin/render.h"
#include "admin/snapshot.h"
#include "lib/util.h"
#include "lib/log.h"

/* How long workers get to copy their sessions (/sessions), and to answer a
 * ping (/healthz, /readyz: short enough that a 503 still beats a probe's
 * usual 1 s timeout). */
#define ADMIN_QUERY_MS 1000
#define ADMIN_PING_MS 500
#define ADMIN_MAX_CONNECTIONS 32 /* admin connections (threads) at once */
#define ADMIN_CONN_TIMEOUT_S 10  /* idle admin connection */
#define ADMIN_TOKEN_DIGEST 32    /* SHA-256 */

#define TYPE_JSON "application/json"
#define TYPE_PROM "text/plain; version=0.0.4; charset=utf-8"
#define TYPE_HTML "text/html; charset=utf-8"

/* The dashboard runs only its own inline script and talks only to us. */
#define DASHBOARD_CSP                                                                              \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "                  \
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'"

static struct {
    struct MHD_Daemon *daemon;
    const struct adm_source *src;
    int has_token;
    unsigned char token_digest[ADMIN_TOKEN_DIGEST];
    struct sockaddr_storage addr;
} admin;

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

/* ---- asking the workers ------------------------------------------------ */

/* How many workers answered a ping in time (*asked: how many were asked). */
static int ping_workers(int *asked)
{
    return admin.src->ping(admin.src->arg, ADMIN_PING_MS, asked);
}

/* ---- handlers ---------------------------------------------------------- */

/* 200 when every worker answered a ping in time. While the server drains,
 * workers whose sessions are done leave their loops and cannot answer, so a
 * draining process is reported alive ("draining") without a ping: it exits
 * by itself within shutdown_grace, and a liveness probe must not kill the
 * sessions that are finishing. */
static enum MHD_Result h_healthz(struct MHD_Connection *c)
{
    int asked, answered, ok;
    char body[128];

    if (admin.src->draining(admin.src->arg)) {
        struct adm_snapshot snap;
        admin.src->snapshot(admin.src->arg, &snap);
        snprintf(body, sizeof body, "{\"status\":\"draining\",\"workers\":%d}", snap.v.workers);
        return reply(c, MHD_HTTP_OK, TYPE_JSON, body);
    }
    answered = ping_workers(&asked);
    ok = asked > 0 && answered >= asked;
    snprintf(body, sizeof body, "{\"status\":\"%s\",\"workers\":%d,\"answered\":%d}",
             ok ? "ok" : "unhealthy", asked, answered);
    if (!ok)
        log_kv(LOG_WARN, NULL, "admin: /healthz failing", "workers=%d answered=%d", asked,
               answered);
    return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON, body);
}

/* Why the server is not ready, or NULL when it is. */
static const char *not_ready_reason(int *asked, int *answered)
{
    struct adm_snapshot snap;

    *asked = *answered = 0;
    if (admin.src->draining(admin.src->arg))
        return "draining";
    admin.src->snapshot(admin.src->arg, &snap);
    if (snap.v.n_listeners <= 0)
        return "not listening";
    *answered = ping_workers(asked);
    if (*asked <= 0 || *answered < *asked)
        return "workers not answering";
    return NULL;
}

static enum MHD_Result h_readyz(struct MHD_Connection *c)
{
    int asked, answered;
    const char *why = not_ready_reason(&asked, &answered);
    char body[160];

    if (!why)
        return reply(c, MHD_HTTP_OK, TYPE_JSON, "{\"status\":\"ready\"}");
    snprintf(body, sizeof body,
             "{\"status\":\"not ready\",\"reason\":\"%s\",\"workers\":%d,\"answered\":%d}", why,
             asked, answered);
    return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, TYPE_JSON, body);
}

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

/* Oldest session first, then by id, so the list reads the same each time. */
static int session_cmp(const void *a, const void *b)
{
    const struct adm_session *x = a, *y = b;

    if (x->since != y->since)
        return x->since < y->since ? -1 : 1;
    return strcmp(x->id, y->id);
}

static enum MHD_Result h_sessions(struct MHD_Connection *c)
{
    struct sessions_view sv = {NULL, 0, 0, 0};
    struct adm_session *list = NULL;
    size_t n = 0;
    char *body;

    sv.answered = admin.src->sessions(admin.src->arg, ADMIN_QUERY_MS, &list, &n, &sv.workers);
    if (sv.answered < 0)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, TYPE_JSON, "{\"error\":\"out of memory\"}");
    if (list)
        qsort(list, n, sizeof(*list), session_cmp);
    sv.list = list;
    sv.n = n;
    body = render_sessions_json(&sv, (long long)time(NULL));
    free(list);
    return reply_owned(c, TYPE_JSON, body);
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
    int open;        /* no token needed */
    int query_token; /* ?token= accepted */
    enum MHD_Result (*fn)(struct MHD_Connection *c);
};

static const struct route routes[] = {
    {"/healthz", 1, 0, h_healthz}, {"/readyz", 1, 0, h_readyz},     {"/status", 0, 0, h_status},
    {"/metrics", 0, 0, h_metrics}, {"/sessions", 0, 0, h_sessions}, {"/", 0, 1, h_dashboard},
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

/* libmicrohttpd: called once when a request's headers arrive (*con_cls is
 * still NULL), then for any body, then once more with *upload_size 0. A GET
 * or HEAD is answered on that last call: one queued earlier makes
 * libmicrohttpd close the connection instead of keeping it alive for the
 * next poll. Other methods get 405 at once (their body is never read). */
static enum MHD_Result admin_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **con_cls)
{
    const struct route *rt;
    struct MHD_Response *r;

    (void)cls;
    (void)version;
    (void)upload_data;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        log_kv(LOG_DEBUG, NULL, "admin request", "method=%s path=%s status=%d", method, url,
               MHD_HTTP_METHOD_NOT_ALLOWED);
        r = resp_new("{\"error\":\"method not allowed\"}", 0, TYPE_JSON);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return resp_send(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    }
    if (*con_cls == NULL) {
        *con_cls = (void *)&admin; /* any non-NULL marker */
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    log_kv(LOG_DEBUG, NULL, "admin request", "method=%s path=%s", method, url);
    if (!(rt = route_find(url)))
        return reply(c, MHD_HTTP_NOT_FOUND, TYPE_JSON, "{\"error\":\"not found\"}");
    if (!authorized(c, rt))
        return unauthorized(c, rt);
    return rt->fn(c);
}

/* ---- start and stop ---------------------------------------------------- */

/* libmicrohttpd's own error messages, as log lines. */
static void admin_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
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

int admin_set_token(const char *token)
{
    unsigned char d[ADMIN_TOKEN_DIGEST];
    int has = token && *token;

    if (has && !token_digest(token, d)) {
        log_kv(LOG_ERROR, NULL, "cannot hash admin_token", NULL);
        return -1;
    }
    pthread_mutex_lock(&admin_token_lock);
    admin.has_token = has;
    if (has)
        memcpy(admin.token_digest, d, sizeof d);
    else
        util_wipe(admin.token_digest, sizeof admin.token_digest);
    pthread_mutex_unlock(&admin_token_lock);
    util_wipe(d, sizeof d);
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
        listen(fd, 64) < 0) {
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

int admin_start(const struct adm_params *p, const struct adm_source *src)
{
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                         MHD_USE_POLL |
                         MHD_USE_ERROR_LOG; /* poll(), not select(): descriptors past 1024 */

    if (p->port == 0) {
        log_kv(LOG_INFO, NULL, "admin endpoint disabled", NULL);
        return 0;
    }
    memset(&admin, 0, sizeof admin);
    admin.src = src;
    if (admin_set_token(p->token) < 0 || admin_resolve(p, &admin.addr) < 0)
        return -1;
    if (admin_listen_fd < 0 && admin_bind(p) < 0)
        return -1;
    if (admin.addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    admin.daemon = MHD_start_daemon(
        flags, (uint16_t)p->port, NULL, NULL, admin_request, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        admin_mhd_log, NULL, /* first: see MHD docs */
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)admin_listen_fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)ADMIN_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)ADMIN_CONN_TIMEOUT_S, MHD_OPTION_END);
    if (admin.daemon)
        admin_listen_fd = -1; /* the daemon owns it now */
    if (!admin.daemon) {
        log_kv(LOG_ERROR, NULL, "cannot start the admin endpoint", "host=%s port=%d hint=%s",
               p->host, p->port, "is the port in use? set admin_listen, or empty to disable it");
        memset(&admin, 0, sizeof admin);
        return -1;
    }
    log_kv(LOG_INFO, NULL, "admin endpoint listening", "host=%s port=%d token=%s", p->host, p->port,
           admin.has_token ? "yes" : "no");
    return 0;
}

void admin_stop(void)
{
    if (admin.daemon) {
        /* Waits for the admin threads; one blocked in a worker query is back
         * within ADMIN_QUERY_MS. */
        MHD_stop_daemon(admin.daemon);
        log_kv(LOG_INFO, NULL, "admin endpoint stopped", NULL);
    }
    if (admin_listen_fd >= 0) { /* bound, never handed to a daemon */
        close(admin_listen_fd);
        admin_listen_fd = -1;
    }
    util_wipe(admin.token_digest, sizeof admin.token_digest);
    memset(&admin, 0, sizeof admin);
}
