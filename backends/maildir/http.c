/*
 * http: libmicrohttpd glue for the maildir backend (see http.h).
 *
 * libmicrohttpd calls http_on_request several times per request: first with
 * the headers (the route is checked and per-request state allocated), then
 * once per chunk of body, then once more with no data, when the request is
 * answered. http_on_completed frees the state; http_on_connection counts
 * connections. Counters are relaxed atomics, read by /_stats.
 */
#include "backends/maildir/http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "backends/maildir/digest.h"
#include "backends/maildir/events.h"
#include "backends/maildir/reqlog.h"
#include "backends/maildir/store.h"
#include "backends/maildir/whsig.h"

#define HTTP_MAX_CONNECTIONS 4096
#define HTTP_IDLE_TIMEOUT 600 /* seconds an idle keep-alive connection stays open */
#define HTTP_STATS "_stats"

struct http {
    struct MHD_Daemon *daemon;               /* the server and its threads */
    struct http_opts o;                      /* as given to http_start */
    unsigned char token_hash[DG_SHA256_LEN]; /* SHA-256 of o.token */
    atomic_ullong connections;               /* accepted since start */
    atomic_llong open;                       /* open now */
    atomic_ullong requests[EV_COUNT];        /* complete requests per event */
};

/* Where a request goes, decided from its first line. */
enum http_route {
    HTTP_ROUTE_EVENT,     /* POST to an event */
    HTTP_ROUTE_STATS,     /* GET or HEAD /_stats */
    HTTP_ROUTE_NOT_FOUND, /* 404 */
    HTTP_ROUTE_POST_ONLY, /* 405: events want POST */
    HTTP_ROUTE_GET_ONLY,  /* 405: /_stats wants GET */
};

/* One request's state, from its headers to its completion. */
struct http_req {
    enum http_route route; /* what to answer */
    enum ev_event event;   /* from the path, for HTTP_ROUTE_EVENT */
    char *body;            /* the body received so far (owned) */
    size_t len;            /* bytes in body */
    size_t cap;            /* bytes allocated */
    int discard;           /* body not kept: not wanted, or over HTTP_BODY_MAX */
};

/* ---- sending ---- */

/* Queues `resp` with `status` and lets go of it. NULL resp: MHD_NO (closes). */
static enum MHD_Result http_queue(struct MHD_Connection *conn, int status,
                                  struct MHD_Response *resp)
{
    if (resp == NULL)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends `body` (borrowed) as JSON. */
static enum MHD_Result http_send_json(struct MHD_Connection *conn, int status, const json_t *body,
                                      const char *allow)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text == NULL)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    return http_queue(conn, status, resp);
}

/* Sends {"error": message}; `allow` (or NULL) fills the Allow header of a 405. */
static enum MHD_Result http_send_error(struct MHD_Connection *conn, int status, const char *message,
                                       const char *allow)
{
    json_t *body = json_pack("{s:s}", "error", message);
    enum MHD_Result ret = http_send_json(conn, status, body, allow);
    json_decref(body);
    return ret;
}

/* Sends an event's reply; a file descriptor passes to libmicrohttpd. */
static enum MHD_Result http_send_reply(struct MHD_Connection *conn, struct ev_reply *rep)
{
    if (rep->fd < 0 && rep->json == NULL)
        return http_send_error(conn, 500, "server out of memory", NULL);
    if (rep->fd < 0)
        return http_send_json(conn, rep->status, rep->json, NULL);
    /* Streamed from the file (sendfile(2) where possible), never read into memory. */
    struct MHD_Response *resp = MHD_create_response_from_fd64(rep->fd_size, rep->fd);
    if (resp == NULL)
        return http_send_error(conn, 500, "cannot send the message", NULL);
    rep->fd = -1; /* closed by libmicrohttpd with the response */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "message/rfc822");
    return http_queue(conn, rep->status, resp);
}

static enum MHD_Result http_send_stats(struct http *h, struct MHD_Connection *conn)
{
    json_t *req = json_object();
    for (int i = 0; i < EV_COUNT; i++)
        json_object_set_new(
            req, ev_names[i],
            json_integer((json_int_t)atomic_load_explicit(&h->requests[i], memory_order_relaxed)));
    unsigned long long scans, hits;
    store_counts(h->o.ev->store, &scans, &hits);
    json_t *body = json_pack(
        "{s:I,s:I,s:o,s:{s:I,s:I}}", "connections",
        (json_int_t)atomic_load_explicit(&h->connections, memory_order_relaxed), "open_connections",
        (json_int_t)atomic_load_explicit(&h->open, memory_order_relaxed), "requests", req,
        "listings", "scanned", (json_int_t)scans, "kept", (json_int_t)hits);
    enum MHD_Result ret = http_send_json(conn, 200, body, NULL);
    json_decref(body);
    return ret;
}

/* ---- checking ---- */

static const char *http_header(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* 1 if the request carries `Authorization: Bearer TOKEN` with the right token. */
static int http_token_ok(const struct http *h, struct MHD_Connection *conn)
{
    const char *auth = http_header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
    unsigned char got[DG_SHA256_LEN];
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    auth += 7;
    /* Hashes compared, so time depends neither on the token nor on its length. */
    return dg_sha256(auth, strlen(auth), got) == 0 && dg_equal(got, h->token_hash, DG_SHA256_LEN);
}

/* NULL when the request is authentic; otherwise why not, for the 401 reply. */
static const char *http_check_auth(const struct http *h, struct MHD_Connection *conn,
                                   const struct http_req *r)
{
    if (h->o.token != NULL && !http_token_ok(h, conn))
        return "missing or wrong bearer token";
    if (h->o.sig != NULL)
        return whsig_verify(h->o.sig, http_header(conn, "webhook-id"),
                            http_header(conn, "webhook-timestamp"),
                            http_header(conn, "webhook-signature"), r->body != NULL ? r->body : "",
                            r->len, time(NULL));
    return NULL;
}

/* ---- the request's life ---- */

/* The route for `url` (its last path segment decides) and `method`. */
static enum http_route http_route(const char *url, const char *method, int *event)
{
    const char *seg = strrchr(url, '/');
    seg = seg != NULL ? seg + 1 : url;
    if (strcmp(seg, HTTP_STATS) == 0)
        return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0
                   ? HTTP_ROUTE_STATS
                   : HTTP_ROUTE_GET_ONLY;
    *event = ev_lookup(seg, strlen(seg));
    if (*event < 0)
        return HTTP_ROUTE_NOT_FOUND;
    return strcmp(method, MHD_HTTP_METHOD_POST) == 0 ? HTTP_ROUTE_EVENT : HTTP_ROUTE_POST_ONLY;
}

/*
 * First call, with the headers: routes the request and allocates its state.
 * Every answer waits for the end of the request (answering earlier makes
 * libmicrohttpd close the connection), except a declared body over the
 * limit, which is refused at once rather than read.
 */
static enum MHD_Result http_begin(struct MHD_Connection *conn, const char *url, const char *method,
                                  void **req_cls)
{
    int event = -1;
    enum http_route route = http_route(url, method, &event);
    const char *cl = http_header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && strtoull(cl, NULL, 10) > HTTP_BODY_MAX)
        return http_send_error(conn, 413, "request body over 1 MB", NULL);
    struct http_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return MHD_NO;
    r->route = route;
    r->event = (enum ev_event)event;
    r->discard = route != HTTP_ROUTE_EVENT; /* no body to keep */
    *req_cls = r;
    return MHD_YES;
}

/* A chunk of body: kept, unless the body has grown past the limit. */
static enum MHD_Result http_absorb(struct http_req *r, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (r->discard)
        return MHD_YES;
    if (n > HTTP_BODY_MAX - r->len) {
        /* A chunked body (no Content-Length) over the limit: drop it, answer 413 at the end. */
        r->discard = 1;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return MHD_YES;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap *= 2;
        char *body = realloc(r->body, cap);
        if (body == NULL)
            return MHD_NO;
        r->body = body;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* The whole body is in: checks it, lets events.c answer, logs, replies. */
static enum MHD_Result http_finish(struct http *h, struct MHD_Connection *conn, const char *url,
                                   struct http_req *r)
{
    switch (r->route) {
    case HTTP_ROUTE_STATS:
        return http_send_stats(h, conn);
    case HTTP_ROUTE_NOT_FOUND:
        return http_send_error(conn, 404, "unknown event", NULL);
    case HTTP_ROUTE_POST_ONLY:
        return http_send_error(conn, 405, "use POST", "POST");
    case HTTP_ROUTE_GET_ONLY:
        return http_send_error(conn, 405, "use GET", "GET, HEAD");
    default:
        break;
    }
    if (r->discard) /* an event's body is dropped only when too large */
        return http_send_error(conn, 413, "request body over 1 MB", NULL);
    atomic_fetch_add_explicit(&h->requests[r->event], 1, memory_order_relaxed);
    const char *why = http_check_auth(h, conn, r);
    if (why != NULL) {
        if (h->o.log != NULL)
            reqlog_write(h->o.log, NULL, url, 401, why);
        return http_send_error(conn, 401, why, NULL);
    }
    json_error_t jerr;
    json_t *req = json_loadb(r->body != NULL ? r->body : "", r->len, 0, &jerr);
    struct ev_reply rep = {.status = 400, .json = NULL, .fd = -1};
    char why_json[256];
    if (req == NULL) {
        snprintf(why_json, sizeof why_json, "invalid JSON: %s", jerr.text);
        rep.json = json_pack("{s:s}", "error", why_json);
    } else {
        ev_handle(h->o.ev, r->event, req, &rep);
    }
    if (h->o.log != NULL)
        reqlog_write(h->o.log, json_is_object(req) ? req : NULL, url, rep.status,
                     req == NULL ? why_json : "body is not a JSON object");
    enum MHD_Result ret = http_send_reply(conn, &rep);
    ev_reply_clear(&rep);
    json_decref(req);
    return ret;
}

/* libmicrohttpd's access handler (registered in http_start). */
static enum MHD_Result http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **req_cls)
{
    struct http *h = cls;
    struct http_req *r = *req_cls;
    (void)version;
    if (r == NULL)
        return http_begin(conn, url, method, req_cls);
    if (*upload_data_size > 0)
        return http_absorb(r, upload_data, upload_data_size);
    return http_finish(h, conn, url, r);
}

/* Frees a request's state (MHD_OPTION_NOTIFY_COMPLETED). */
static void http_on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct http_req *r = *req_cls;
    (void)cls;
    (void)conn;
    (void)toe;
    if (r == NULL)
        return;
    free(r->body);
    free(r);
    *req_cls = NULL;
}

/* Counts connections (MHD_OPTION_NOTIFY_CONNECTION). */
static void http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                               enum MHD_ConnectionNotificationCode code)
{
    struct http *h = cls;
    (void)conn;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add_explicit(&h->connections, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->open, 1, memory_order_relaxed);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub_explicit(&h->open, 1, memory_order_relaxed);
    }
}

/* ---- the server ---- */

struct http *http_start(const struct http_opts *o, char *err, size_t errlen)
{
    struct http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        close(o->listen_fd);
        return NULL;
    }
    h->o = *o;
    if (o->token != NULL)
        dg_sha256(o->token, strlen(o->token), h->token_hash);
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, http_on_request, h,
        MHD_OPTION_LISTEN_SOCKET, o->listen_fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)(o->threads > 1 ? o->threads : 0), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)HTTP_IDLE_TIMEOUT, MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, http_on_connection, h, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server (libmicrohttpd)");
        /* libmicrohttpd leaves the socket open when it fails to start. */
        if (fcntl(o->listen_fd, F_GETFD) != -1 || errno != EBADF)
            close(o->listen_fd);
        free(h);
        return NULL;
    }
    return h;
}

void http_stop(struct http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon); /* joins the threads, closes connections and the socket */
    free(h);
}
