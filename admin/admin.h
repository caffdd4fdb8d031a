/*
 * admin: the embedded admin HTTP endpoint (libmicrohttpd, its own threads).
 *
 * GET /healthz, /readyz, /status (JSON), /metrics (Prometheus text), /sessions
 * (JSON) and / (a self-contained dashboard page). Optional bearer token
 * (admin_token) for everything but /healthz and /readyz.
 */
#ifndef POP3GW_ADMIN_H
#define POP3GW_ADMIN_H

struct server;
struct cfg;

/* Starts the endpoint on cfg->admin_listen (nothing when its port is 0).
 * 0, or -1 after logging why. `srv` must be running. */
int admin_start(struct server *srv, const struct cfg *cfg);

/* Stops the endpoint; safe when it never started. */
void admin_stop(void);

#endif
