/*
 * worker: one event-loop thread as its connections see it.
 *
 * server.c creates the workers and runs their loops; conn.c lives inside one
 * worker and uses only what this header shows: the loop, the webhook client,
 * the current settings and the list of connections, and the three calls
 * below. Connections never move between workers.
 */
#ifndef POP3GW_WORKER_H
#define POP3GW_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/queue.h>

struct conn;
struct event;
struct event_base;
struct evconnlistener;
struct server;
struct server_query;
struct settings;
struct wh_client;

TAILQ_HEAD(conn_list, conn);

#define WORKER_LISTENERS 16 /* listeners per worker: listen and listen_tls */

struct worker {
    /* What connections use. */
    int index;
    struct event_base *base;
    struct wh_client *wh;
    struct settings *set;   /* the settings new connections take (a reference) */
    struct conn_list conns; /* every connection of this worker */
    size_t n_conns;
    int draining;           /* SIGTERM: finish what runs, start nothing new */
    unsigned char rnd[512]; /* random bytes for session ids, drawn in batches */
    size_t rnd_used;        /* of rnd, handed out (and wiped) */
    char *scratch;          /* converted stream bytes on their way to a spool (worker_scratch) */
    size_t scratch_cap;

    /* The server's own (server.c). */
    struct server *srv;
    pthread_t thread;
    struct evconnlistener *listeners[WORKER_LISTENERS];
    int n_listeners;
    struct event *stop_ev;        /* activated by the main thread */
    struct event *grace_ev;       /* end of the shutdown grace period */
    struct event *drain_ev;       /* checks whether the worker may exit */
    struct event *accept_retry;   /* re-enables listeners after EMFILE */
    pthread_mutex_t qlock;        /* guards queries and new_set */
    struct server_query *queries; /* waiting for this worker */
    struct event *query_ev;       /* activated by the asker */
    struct settings *new_set;     /* SIGHUP: settings to take (under qlock) */
    struct event *reload_ev;      /* activated by the main thread */
    int accept_paused;            /* listeners off: out of descriptors */
    atomic_int balance_out;       /* listeners off: more than its share (worker_balance) */
    struct event *balance_ev;     /* looks again while balance_out */
    struct event *trim_ev;        /* returns freed heap memory to the system (worker_trim_soon) */
};

/* Counts a new connection against max_connections. 0, or -1 (nothing
 * counted) when the server is full. */
int worker_admit(struct worker *w, int max_connections);

/* A connection counted by worker_admit() has ended. */
void worker_release(struct worker *w);

/* A slow client's stream has moved its buffers to the spool: shortly, once
 * things settle, hand the freed heap memory back to the system (one
 * malloc_trim for any number of calls in a short while). */
void worker_trim_soon(struct worker *w);

/* Makes w->scratch hold at least n bytes. 0, or -1 when memory runs out. */
int worker_scratch(struct worker *w, size_t n);

/* Re-checks whether w takes new connections (after an accept or a close;
 * see server.c). From w's own loop only. */
void worker_balance(struct worker *w);

#endif
