/*
 * report: what the admin endpoint asks of the gateway (see report.h).
 * Every function runs on an admin thread; the workers answer from their own
 * loops and never wait for it.
 */
#include "gateway/report.h"

#include <stdlib.h>
#include <time.h>

#include "admin/admin.h"
#include "gateway/server.h"
#include "lib/metrics.h"
#include "lib/recent.h"

static void report_snapshot(void *arg, struct adm_snapshot *out)
{
    metrics_snap_take(&out->m);
    server_view(arg, &out->v);
    out->v.version = POP3GW_VERSION;
    out->v.now = (long long)time(NULL);
    out->n_failures = recent_copy(out->failures, RECENT_MAX);
}

static int report_ping(void *arg, int timeout_ms, int *asked)
{
    struct server_query *q = server_query_start(arg, 0);
    int answered;

    *asked = 0;
    if (!q)
        return 0;
    answered = server_query_wait(q, timeout_ms, asked);
    server_query_release(q);
    return answered;
}

static int report_sessions(void *arg, int timeout_ms, struct adm_session **list, size_t *n,
                           int *asked)
{
    struct server_query *q = server_query_start(arg, 1);
    int answered;

    *list = NULL;
    *n = 0;
    *asked = 0;
    if (!q)
        return -1;
    answered = server_query_wait(q, timeout_ms, asked);
    *list = server_query_sessions(q, n);
    server_query_release(q);
    return answered;
}

static int report_draining(void *arg)
{
    return server_draining(arg);
}

void report_source(struct server *srv, struct adm_source *src)
{
    src->arg = srv;
    src->snapshot = report_snapshot;
    src->ping = report_ping;
    src->sessions = report_sessions;
    src->draining = report_draining;
}
