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

/* Binds cfg->admin_listen (nothing when its port is 0), so that a low port
 * works before privileges drop. 0, or -1 after logging why. */
int admin_bind(const struct cfg *cfg);

/* Starts the endpoint on the socket admin_bind() made (binding it now if it
 * did not). 0, or -1 after logging why. `srv` must be running. */
int admin_start(struct server *srv, const struct cfg *cfg);

/* Stops the endpoint; safe when it never started. */
void admin_stop(void);

#endif
