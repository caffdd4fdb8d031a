/*
 * render: the admin endpoint's documents, built from a metrics snapshot and
 * a few facts about the server (no worker state is read here).
 *
 *   render_status_json()   -> GET /status    (JSON, jansson)
 *   render_sessions_json() -> GET /sessions  (JSON, jansson)
 *   render_history_json()  -> GET /history   (JSON, jansson)
 *   render_prometheus()    -> GET /metrics   (Prometheus text format 0.0.4)
 *
 * Each returns a NUL-terminated heap string (free() it), or NULL when memory
 * runs out. docs/admin.md describes every field and metric.
 */
#ifndef POP3GW_ADMIN_RENDER_H
#define POP3GW_ADMIN_RENDER_H

#include <stddef.h>

#include "admin/admin.h"
#include "admin/history.h"
#include "admin/snapshot.h"

/* The answer of a worker query, for /sessions. */
struct sessions_view {
    const struct adm_session *list;
    size_t n;
    int workers;  /* asked */
    int answered; /* answered within the bound */
};

char *render_status_json(const struct adm_snapshot *snap);
char *render_sessions_json(const struct sessions_view *sv, long long now);
char *render_prometheus(const struct adm_snapshot *snap);
/* The samples (oldest first) and the time they are served at. */
char *render_history_json(const struct adm_sample *samples, size_t n, long long now_ms);

#endif
