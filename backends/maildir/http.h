/*
 * http: the HTTP side of the maildir backend, on libmicrohttpd with an
 * internal thread pool and keep-alive connections.
 *
 * `POST /[prefix/]EVENT` carries one webhook (the path's last segment names
 * the event, so a backend_url with a path works); the body is read whole (at
 * most HTTP_BODY_MAX bytes, else 413), its bearer token and Standard Webhooks
 * signature are checked when configured (else 401: the gateway reads it as a
 * refused webhook, never as a failed login), and events.c answers.
 * `GET /_stats` reports accepted connections and requests per event, for
 * tests and the benchmark.
 */
#ifndef MAILDIR_HTTP_H
#define MAILDIR_HTTP_H

#include <stddef.h>

#define HTTP_BODY_MAX (1024 * 1024)

struct ev_ctx;
struct whsig;
struct reqlog;

struct http_opts {
    const struct ev_ctx *ev; /* the event handlers' context */
    struct whsig *sig;       /* signature check, or NULL */
    const char *token;       /* required bearer token, or NULL */
    struct reqlog *log;      /* request log, or NULL */
    int listen_fd;           /* a bound, listening socket (handed over) */
    int threads;             /* size of the thread pool */
};

struct http;

/* Starts serving. Returns the server (stop it with http_stop), or NULL with
 * a message in `err` (the socket is closed either way by then or by http_stop). */
struct http *http_start(const struct http_opts *o, char *err, size_t errlen);

/* Stops the threads, closes every connection and frees the server. */
void http_stop(struct http *h);

#endif
