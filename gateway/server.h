/*
 * server: the worker threads and their listening sockets.
 *
 * Each worker is one thread with its own libevent loop and webhook client
 * (gateway/worker.h). The workers share one listening socket per address
 * and take turns on it (worker_balance in server.c). The main thread binds,
 * starts, reloads and stops the server; the admin thread asks it questions
 * (server_query_*), which each worker answers from its own loop.
 */
#ifndef POP3GW_SERVER_H
#define POP3GW_SERVER_H

#include <stddef.h>

struct adm_session;
struct adm_view;
struct server;
struct server_query;
struct settings;

/* A server for these settings (it takes a reference). NULL when memory
 * runs out. */
struct server *server_new(struct settings *set);
/* Binds every listener (before privileges drop). 0, or -1 after logging why. */
int server_bind(struct server *srv);
/* Starts the worker threads. 0, or -1 after logging why. */
int server_start(struct server *srv);
/* Asks every worker to drain and stop; returns when all have exited. */
void server_stop(struct server *srv);
/* Frees the server (stopping it first if it runs). NULL is fine. */
void server_free(struct server *srv);

/* Hands new settings to every worker, for the sessions that start from now
 * on (SIGHUP); the webhook clients take the new backend settings too. */
void server_reload(struct server *srv, struct settings *set);

/* True while the server drains (SIGTERM). */
int server_draining(const struct server *srv);

/* Fills what the admin endpoint shows of the server (workers, listeners,
 * limits; not the counters). */
void server_view(const struct server *srv, struct adm_view *v);

/*
 * Asks every worker to answer (and to copy its sessions when with_sessions).
 * Workers answer from their own event loop and never wait on the asker.
 * server_query_wait() blocks the asking thread (the admin thread) up to
 * timeout_ms and returns how many workers answered, *asked how many were
 * asked; server_query_sessions() then copies what came (a malloc'd array,
 * NULL when none); server_query_release() ends it. NULL when memory runs out.
 */
struct server_query *server_query_start(struct server *srv, int with_sessions);
int server_query_wait(struct server_query *q, int timeout_ms, int *asked);
struct adm_session *server_query_sessions(struct server_query *q, size_t *n);
void server_query_release(struct server_query *q);

#endif
