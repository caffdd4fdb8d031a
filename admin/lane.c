/*
 * lane: a helper thread that answers parked admin requests in batches and
 * runs a periodic tick (see lane.h).
 */
#include "admin/lane.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

struct adm_lane {
    const char *name;
    adm_lane_run_fn run;
    adm_lane_tick_fn tick;
    int tick_ms;
    void *arg;
    pthread_t thread;
    pthread_mutex_t lock; /* guards the queue and the flags */
    pthread_cond_t cond;  /* a job came, or stop */
    struct adm_job *head, *tail;
    int stopping; /* adm_lane_stop() called: submits fail */
    int joinable; /* the thread runs or has not been joined */
};

/* The absolute time `ms` from now, on the condition's clock. */
static void lane_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    util_ts_add_ms(ts, ms);
}

static int lane_due(const struct timespec *at)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > at->tv_sec || (now.tv_sec == at->tv_sec && now.tv_nsec >= at->tv_nsec);
}

/* The lane's thread: waits for jobs or the next tick; runs every batch
 * outside the lock (the run callback may wait for the workers). */
static void *lane_main(void *arg)
{
    struct adm_lane *l = arg;
    struct timespec next_tick;
    struct adm_job *batch;
    int stopping;

    lane_deadline(&next_tick, l->tick_ms);
    for (;;) {
        pthread_mutex_lock(&l->lock);
        while (!l->head && !l->stopping && !(l->tick && lane_due(&next_tick))) {
            if (l->tick)
                pthread_cond_timedwait(&l->cond, &l->lock, &next_tick);
            else
                pthread_cond_wait(&l->cond, &l->lock);
        }
        batch = l->head;
        l->head = l->tail = NULL;
        stopping = l->stopping;
        pthread_mutex_unlock(&l->lock);
        if (batch)
            l->run(l->arg, batch, stopping);
        if (stopping)
            return NULL; /* nothing can be queued any more */
        if (l->tick && lane_due(&next_tick)) {
            l->tick(l->arg);
            lane_deadline(&next_tick, l->tick_ms);
        }
    }
}

struct adm_lane *adm_lane_start(const char *name, adm_lane_run_fn run, adm_lane_tick_fn tick,
                                int tick_ms, void *arg)
{
    struct adm_lane *l = calloc(1, sizeof(*l));
    pthread_condattr_t ca;
    int rc;

    if (!l) {
        log_kv(LOG_ERROR, NULL, "admin: cannot start a helper thread", "lane=%s error=%s", name,
               "out of memory");
        return NULL;
    }
    l->name = name;
    l->run = run;
    l->tick = tick;
    l->tick_ms = tick_ms > 0 ? tick_ms : 1000;
    l->arg = arg;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_create(&l->thread, NULL, lane_main, l)) != 0) {
        log_kv(LOG_ERROR, NULL, "admin: cannot start a helper thread", "lane=%s error=%s", name,
               strerror(rc));
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
    }
    l->joinable = 1;
    return l;
}

int adm_lane_submit(struct adm_lane *l, struct adm_job *j)
{
    int rc = -1;

    j->next = NULL;
    pthread_mutex_lock(&l->lock);
    if (!l->stopping) {
        if (l->tail)
            l->tail->next = j;
        else
            l->head = j;
        l->tail = j;
        pthread_cond_signal(&l->cond);
        rc = 0;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void adm_lane_stop(struct adm_lane *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    if (l->joinable) {
        pthread_join(l->thread, NULL);
        l->joinable = 0;
    }
}

void adm_lane_free(struct adm_lane *l)
{
    if (!l)
        return;
    adm_lane_stop(l);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}
