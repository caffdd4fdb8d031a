/*
 * metrics: the process-wide counters, the row descriptors generated from
 * METRICS_TABLE, and the copy the admin thread renders.
 */
#include "lib/metrics.h"

#include "lib/util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct metrics metrics;

const double metrics_bucket_bounds[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1,    2.5,   10};

const char *const metrics_event_names[METRICS_EVENTS] = {
#define X(e, n) n,
    NAMES_EVENTS(X)
#undef X
};

const char *const metrics_method_names[METRICS_METHODS] = {
#define X(e, n, cmd) n,
    NAMES_METHODS(X)
#undef X
};

const char *const metrics_wh_error_names[MWE_N] = {
#define X(e, n) n,
    NAMES_WH_ERRORS(X)
#undef X
};

/* A field's offset in struct metrics or struct metrics_snap; VIEW rows have none. */
#define METRICS_OFF_COUNTER(type, f) offsetof(type, f)
#define METRICS_OFF_GAUGE(type, f) offsetof(type, f)
#define METRICS_OFF_TIME(type, f) offsetof(type, f)
#define METRICS_OFF_HISTOGRAM(type, f) offsetof(type, f)
#define METRICS_OFF_VIEW(type, f) 0

const struct metrics_row metrics_rows[METRICS_N_ROWS] = {
#define X(field, kind, dim, label, name, help, json)                                               \
    {#field,                                                                                       \
     MK_##kind,                                                                                    \
     MD_##dim,                                                                                     \
     METRICS_N_##dim,                                                                              \
     label,                                                                                        \
     name,                                                                                         \
     help,                                                                                         \
     json,                                                                                         \
     METRICS_OFF_##kind(struct metrics, field),                                                    \
     METRICS_OFF_##kind(struct metrics_snap, field)},
    METRICS_TABLE(X)
#undef X
};

/* A field's array suffix (METRICS_DIM_x) and its series count (METRICS_N_x)
 * are two spellings of one dimension: they must agree for every field. */
#define METRICS_AGREE(f, dim, atom, plain)                                                         \
    _Static_assert(sizeof metrics.f == METRICS_N_##dim * sizeof(atom) &&                           \
                       sizeof(((struct metrics_snap *)0)->f) == METRICS_N_##dim * sizeof(plain),   \
                   #f ": its array and its dimension disagree");
#define METRICS_AGREE_COUNTER(f, dim) METRICS_AGREE(f, dim, atomic_ulong, unsigned long)
#define METRICS_AGREE_GAUGE(f, dim) METRICS_AGREE(f, dim, atomic_long, long)
#define METRICS_AGREE_TIME(f, dim) METRICS_AGREE(f, dim, atomic_long, long)
#define METRICS_AGREE_HISTOGRAM(f, dim) METRICS_AGREE(f, dim, struct metrics_hist, struct hist_snap)
#define METRICS_AGREE_VIEW(f, dim)
#define X(field, kind, dim, label, name, help, json) METRICS_AGREE_##kind(field, dim)
METRICS_TABLE(X)
#undef X

int metrics_dim_labels(enum metrics_dim dim, size_t i, const char *names[2], const char *values[2])
{
    switch (dim) {
    case MD_NONE:
        return 0;
    case MD_EVENT:
        names[0] = "event";
        values[0] = metrics_event_names[i];
        return 1;
    case MD_METHOD:
        names[0] = "method";
        values[0] = metrics_method_names[i];
        return 1;
    case MD_EVENT_REASON:
        names[0] = "event";
        values[0] = metrics_event_names[i / MWE_N];
        names[1] = "reason";
        values[1] = metrics_wh_error_names[i % MWE_N];
        return 2;
    case MD_VERSION:
        names[0] = "version";
        values[0] = NULL;
        return 1;
    default:
        abort();
    }
}

const char *const *metrics_label_values(const char *label, size_t *n)
{
    if (strcmp(label, "event") == 0) {
        *n = METRICS_EVENTS;
        return metrics_event_names;
    }
    if (strcmp(label, "method") == 0) {
        *n = METRICS_METHODS;
        return metrics_method_names;
    }
    if (strcmp(label, "reason") == 0) {
        *n = MWE_N;
        return metrics_wh_error_names;
    }
    *n = 0;
    return NULL;
}

void metrics_observe(struct metrics_hist *h, double seconds)
{
    int i;

    for (i = 0; i < METRICS_BUCKETS && seconds > metrics_bucket_bounds[i]; i++)
        ;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

void metrics_backend_result(int ok)
{
    long long ms = util_real_ms();

    if (ok) {
        METRIC_SET(backend_last_ok, (long)(ms / 1000));
        METRIC_SET(backend_last_ok_ms, ms);
    } else {
        METRIC_SET(backend_last_error, (long)(ms / 1000));
        METRIC_SET(backend_last_error_ms, ms);
    }
}

/* ---- snapshots ---------------------------------------------------------- */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void snap_hist(struct hist_snap *out, struct metrics_hist *h)
{
    int i;

    memset(out, 0, sizeof(*out));
    for (i = 0; i <= METRICS_BUCKETS; i++) {
        out->bucket[i] = LOAD(h->bucket[i]);
        out->count += out->bucket[i];
    }
    out->sum = (double)LOAD(h->sum_us) / 1e6;
}

/* Copies series i of one row's field. */
static void snap_series(struct metrics_snap *s, const struct metrics_row *r, size_t i)
{
    char *live = (char *)&metrics + r->live, *plain = (char *)s + r->snap;
    long v;

    switch (r->kind) {
    case MK_COUNTER:
        ((unsigned long *)plain)[i] = LOAD(((atomic_ulong *)live)[i]);
        return;
    case MK_GAUGE:
        v = LOAD(((atomic_long *)live)[i]);
        ((long *)plain)[i] = v < 0 ? 0 : v;
        return;
    case MK_TIME:
        ((long *)plain)[i] = LOAD(((atomic_long *)live)[i]);
        return;
    case MK_HISTOGRAM:
        snap_hist(&((struct hist_snap *)plain)[i], &((struct metrics_hist *)live)[i]);
        return;
    case MK_VIEW:
        return;
    default:
        abort();
    }
}

void metrics_snap_take(struct metrics_snap *s)
{
    size_t r, i;

    memset(s, 0, sizeof(*s));
    for (r = 0; r < METRICS_N_ROWS; r++)
        for (i = 0; i < metrics_rows[r].n; i++)
            snap_series(s, &metrics_rows[r], i);
    s->backend_last_ok_ms = LOAD(metrics.backend_last_ok_ms);
    s->backend_last_error_ms = LOAD(metrics.backend_last_error_ms);
}
