/*
 * metrics: the process-wide counters and their helpers.
 */
#include "admin/metrics.h"

#include <string.h>
#include <time.h>

struct metrics metrics;

const double metrics_bucket_bounds[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1,    2.5,   10};

const char *const metrics_method_names[MM_N] = {"USER",  "APOP",    "PLAIN",
                                                "LOGIN", "XOAUTH2", "OAUTHBEARER"};

const char *const metrics_wh_error_names[MWE_N] = {"timeout", "connect", "status", "body",
                                                   "broken"};

void metrics_observe(struct metrics_hist *h, double seconds)
{
    int i;

    for (i = 0; i < METRICS_BUCKETS && seconds > metrics_bucket_bounds[i]; i++)
        ;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

int metrics_method_index(const char *name)
{
    int i;

    for (i = 0; name && i < MM_N; i++)
        if (strcmp(name, metrics_method_names[i]) == 0)
            return i;
    return -1;
}

void metrics_backend_result(int ok)
{
    struct timespec ts;
    long long ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (ok) {
        METRIC_SET(backend_last_ok, (long)ts.tv_sec);
        METRIC_SET(backend_last_ok_ms, ms);
    } else {
        METRIC_SET(backend_last_error, (long)ts.tv_sec);
        METRIC_SET(backend_last_error_ms, ms);
    }
}
