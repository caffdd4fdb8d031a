/*
 * server: worker threads, listeners and the connections they own.
 *
 * Each worker is one thread with its own libevent loop, its own listening
 * sockets on the shared ports (SO_REUSEPORT) and its own webhook client.
 * Connections never move between workers.
 */
#ifndef POP3GW_SERVER_H
#define POP3GW_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include "gateway/cfg.h"
#include "gateway/pop3.h"

struct event_base;
struct sockaddr;
struct event;
struct evconnlistener;
struct wh_client;
struct conn;

TAILQ_HEAD(conn_list, conn);

struct listener_spec {
    struct cfg_addr addr;
    int tls; /* implicit TLS */
};

struct worker {
    int index;
    pthread_t thread;
    struct server *srv;
    struct event_base *base;
    struct wh_client *wh;
    struct evconnlistener *listeners[2 * CFG_MAX_LISTEN];
    int n_listeners;
    struct event *stop_ev;  /* activated by the main thread */
    struct event *grace_ev; /* end of the shutdown grace period */
    struct event *drain_ev; /* checks whether the worker may exit */
    struct event *accept_retry; /* re-enables listeners after EMFILE */
    struct conn_list conns;
    size_t n_conns;
    int draining;
};

struct server {
    const struct cfg *cfg;
    struct pop3_params params;
    struct listener_spec specs[2 * CFG_MAX_LISTEN];
    int n_specs;
    int *fds; /* [worker][spec] listening sockets, bound before privileges drop */
    struct worker *workers;
    int n_workers;
    atomic_long connections; /* open client connections, all workers */
};

/* Binds every listener for every worker. 0, or -1 after logging why. */
int server_bind(struct server *srv, const struct cfg *cfg);
/* Starts the worker threads. */
int server_start(struct server *srv);
/* Asks every worker to drain and stop; returns when all have exited. */
void server_stop(struct server *srv);
void server_free(struct server *srv);

/* conn.c: takes an accepted socket. */
void conn_accept(struct worker *w, int fd, const struct sockaddr *sa, int socklen, int tls);
/* conn.c: tells an idle session the server is stopping; busy ones finish first. */
void conn_drain(struct conn *c);
/* conn.c: the next connection in the worker's list. */
struct conn *conn_next(struct conn *c);
/* conn.c: closes at once (end of the grace period). */
void conn_abort(struct conn *c);

#endif
