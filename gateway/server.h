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
#include "gateway/proxy.h"

struct event_base;
struct sockaddr;
struct event;
struct evconnlistener;
struct wh_client;
struct conn;

TAILQ_HEAD(conn_list, conn);

/* A copy of one live session, for /sessions. */
struct session_info {
    char id[24];
    char user[256];
    char ip[46];
    int port;
    int tls;
    int worker;
    char state[16];  /* CONNECTING AUTHORIZATION TRANSACTION UPDATE CLOSING */
    char command[8]; /* the verb being handled, or "" */
    long long since; /* unix time the connection was accepted */
    unsigned long long bytes_in, bytes_out;
};

/* A question to every worker, answered from their own loops. */
struct server_query {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;          /* the asker plus each worker yet to answer */
    int workers;       /* asked */
    int answered;      /* answered so far */
    int with_sessions; /* copy the sessions too */
    struct session_info *list;
    size_t n, cap;
    struct server_query *next_in_worker[64]; /* per-worker queue links */
};

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
    struct event *stop_ev;      /* activated by the main thread */
    struct event *grace_ev;     /* end of the shutdown grace period */
    struct event *drain_ev;     /* checks whether the worker may exit */
    struct event *accept_retry; /* re-enables listeners after EMFILE */
    struct conn_list conns;
    size_t n_conns;
    int draining;
    pthread_mutex_t qlock;        /* guards queries */
    struct server_query *queries; /* waiting for this worker */
    struct event *query_ev;       /* activated by the asker */
    char *new_secret, *new_token; /* SIGHUP: backend secrets to take (under qlock) */
    int new_secrets;              /* they are set */
    struct event *reload_ev;      /* activated by the main thread */
    int accept_paused;            /* listeners off: out of descriptors */
    atomic_int balance_out;       /* listeners off: more than its share (server_balance) */
    struct event *balance_ev;     /* looks again while balance_out */
    unsigned char rnd[512];       /* random bytes for session ids, drawn in batches */
    size_t rnd_used;              /* of rnd, handed out (and wiped) */
};

struct server {
    const struct cfg *cfg;
    struct pop3_params params;
    struct listener_spec specs[2 * CFG_MAX_LISTEN];
    int n_specs;
    int *fds; /* [worker][spec] listening sockets, bound before privileges drop */
    struct worker *workers;
    int n_workers;
    int n_running;                   /* worker threads started (joined by server_stop) */
    atomic_long connections;         /* open client connections, all workers */
    atomic_int accepting;            /* workers not kept out by server_balance() */
    struct proxy_net proxy_nets[64]; /* who may send a PROXY header */
    int n_proxy_nets;
    int proxy_versions; /* PROXY_V1 | PROXY_V2 accepted */
    atomic_int draining;
};

/* Binds every listener for every worker. 0, or -1 after logging why. */
int server_bind(struct server *srv, const struct cfg *cfg);
/* Starts the worker threads. */
int server_start(struct server *srv);
/* Asks every worker to drain and stop; returns when all have exited. */
void server_stop(struct server *srv);
void server_free(struct server *srv);

/*
 * Asks every worker to answer (and to copy its sessions when with_sessions).
 * Workers answer from their own event loop and never wait on the asker.
 * server_query_wait() blocks the asking thread (the admin thread) up to
 * timeout_ms and returns how many workers answered; then read q->list and
 * call server_query_release(). NULL when memory runs out.
 */
struct server_query *server_query_start(struct server *srv, int with_sessions);
int server_query_wait(struct server_query *q, int timeout_ms);
void server_query_release(struct server_query *q);

/* SIGHUP: hands new backend secrets and token to every worker. */
void server_reload_secrets(struct server *srv, const char *secret, const char *token);

/* True while the server drains (SIGTERM). */
int server_draining(const struct server *srv);

/* Re-checks whether worker w takes new connections (after an accept or a
 * close; see server.c). Called from w's own loop only. */
void server_balance(struct worker *w);

/* conn.c: takes an accepted socket. */
void conn_accept(struct worker *w, int fd, const struct sockaddr *sa, int socklen, int tls);
/* conn.c: tells an idle session the server is stopping; busy ones finish first. */
void conn_drain(struct conn *c);
/* conn.c: copies what /sessions shows of one connection. */
void conn_snapshot(const struct conn *c, struct session_info *out);
/* conn.c: the next connection in the worker's list. */
struct conn *conn_next(struct conn *c);
/* conn.c: closes at once (end of the grace period). */
void conn_abort(struct conn *c);

#endif
