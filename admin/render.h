/*
 * render: the admin endpoint's documents, built from a metrics snapshot and
 * a few facts about the server (no worker state is read here).
 *
 *   render_status_json()   -> GET /status    (JSON, jansson)
 *   render_sessions_json() -> GET /sessions  (JSON, jansson)
 *   render_prometheus()    -> GET /metrics   (Prometheus text format 0.0.4)
 *
 * Each returns a NUL-terminated heap string (free() it), or NULL when memory
 * runs out. docs/admin.md describes every field and metric.
 */
#ifndef POP3GW_ADMIN_RENDER_H
#define POP3GW_ADMIN_RENDER_H

#include <stddef.h>

#include "admin/snapshot.h"

struct listener_spec;
struct session_info;

/* What the renderings show besides the metrics. */
struct admin_view {
    const char *version;
    long long now;                     /* unix seconds */
    int workers;                       /* worker threads */
    int draining;                      /* SIGTERM received */
    const struct listener_spec *specs; /* POP3 listeners */
    int n_specs;
    int max_connections; /* cfg max_connections (0 = no limit) */
    long inflight_limit; /* max_inflight x workers (0 = no limit) */
};

/* The answer of a worker query, for /sessions. */
struct sessions_view {
    const struct session_info *list;
    size_t n;
    int workers;  /* asked */
    int answered; /* answered within the bound */
};

char *render_status_json(const struct metrics_snap *s, const struct admin_view *v);
char *render_sessions_json(const struct sessions_view *sv, long long now);
char *render_prometheus(const struct metrics_snap *s, const struct admin_view *v);

#endif
