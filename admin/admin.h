/*
 * admin: the embedded admin HTTP endpoint, as a component (libmicrohttpd on
 * its own thread, and two helper threads that do the waiting).
 *
 * GET /healthz, /readyz, /status (JSON), /metrics (Prometheus text), /sessions
 * (JSON), /history (JSON) and / (a self-contained dashboard page). Optional bearer token for
 * everything but /healthz and /readyz; without one, /sessions and / answer
 * loopback clients only.
 *
 * The endpoint knows nothing of the gateway: it renders the snapshot defined
 * here and asks for one through struct adm_source, which the gateway
 * provides. Every callback runs on an admin thread; ping and sessions may
 * wait a bounded time for the workers (on a helper thread, never on
 * libmicrohttpd's); no worker ever waits on the admin side.
 */
#ifndef POP3GW_ADMIN_H
#define POP3GW_ADMIN_H

#include <stddef.h>

#include "lib/metrics.h"
#include "lib/recent.h"

#define ADM_LISTENERS 16

/* Admin connections open at once (each a descriptor: gateway/main.c keeps
 * them out of max_connections' share). */
#define ADMIN_MAX_CONNECTIONS 128

struct adm_listener {
    char host[256];
    int port;
    int tls; /* implicit TLS */
};

/* What /status and /metrics show besides the counters. */
struct adm_view {
    const char *version;
    long long now;                                /* unix seconds */
    int workers;                                  /* worker threads */
    int draining;                                 /* SIGTERM received */
    struct adm_listener listeners[ADM_LISTENERS]; /* POP3 listeners */
    int n_listeners;
    int max_connections; /* configured max_connections (0 = no limit) */
    long inflight_limit; /* webhook calls that may run at once, all workers (0 = no limit) */
};

/* One snapshot: the counters, the view and the recent webhook failures,
 * taken together. */
struct adm_snapshot {
    struct metrics_snap m;
    struct adm_view v;
    struct recent_failure failures[RECENT_MAX]; /* newest first */
    size_t n_failures;
};

/* One live session, for /sessions. */
struct adm_session {
    char id[24];
    char user[256];
    char ip[46];
    int port;
    int tls;
    int worker;
    char state[16];  /* the connection's state name */
    char command[8]; /* the verb being handled, or "" */
    long long since; /* unix time the connection was accepted */
    unsigned long long bytes_in, bytes_out;
    char activity[12]; /* what the connection does now: idle, call, stream, drain, ... */
    int spooling;      /* a spool file is open for its message */
    unsigned long long spool_bytes, spool_sent; /* octets in the spool file, and handed on */
};

/* The gateway's side. Each callback runs on an admin thread. */
struct adm_source {
    void *arg;
    /* Fills a snapshot (counters, view, recent failures); never waits for
     * the workers. */
    void (*snapshot)(void *arg, struct adm_snapshot *out);
    /* Asks every worker to answer within timeout_ms. Returns how many
     * answered, and in *asked how many were asked. */
    int (*ping)(void *arg, int timeout_ms, int *asked);
    /* Copies the live sessions into a malloc'd array (*list, *n; the
     * caller frees it), waiting up to timeout_ms for the workers. Returns
     * how many answered (*asked: asked), or -1 when memory ran out. */
    int (*sessions)(void *arg, int timeout_ms, struct adm_session **list, size_t *n, int *asked);
    /* True while the gateway drains (SIGTERM). */
    int (*draining)(void *arg);
};

/* Where the endpoint listens and who may read it. */
struct adm_params {
    const char *host;  /* numeric address or name; "*" = every IPv4 address */
    int port;          /* 0 = disabled */
    const char *token; /* bearer token, or NULL */
};

/* Binds the listening socket (nothing when the port is 0), so that a low
 * port works before privileges drop. 0, or -1 after logging why. */
int admin_bind(const struct adm_params *p);

/* Starts the endpoint on the socket admin_bind() made (binding it now if it
 * did not). `src` must stay valid until admin_stop(). 0, or -1 after
 * logging why. */
int admin_start(const struct adm_params *p, const struct adm_source *src);

/* Replaces the bearer token (SIGHUP); NULL or "" removes it. 0, or -1
 * (the old one stays) when it cannot be hashed. Any thread. */
int admin_set_token(const char *token);

/* Stops the endpoint; safe when it never started. */
void admin_stop(void);

#endif
