/*
 * lane: a helper thread of the admin endpoint for what may wait.
 *
 * libmicrohttpd runs the endpoint on one thread (admin.c), so nothing on it
 * may block. A request that must ask the workers (a ping, copies of the
 * sessions: up to a second when a worker is stuck) is suspended and handed
 * to a lane as a job; the lane's thread takes every job queued so far as
 * one batch, answers them all with one question to the gateway, and each
 * answer resumes its request. A lane can also run a periodic tick (the
 * head deadline, the history samples).
 *
 * Workers never wait for a lane: they answer from their own loops (DESIGN:
 * "no worker ever waits on the admin thread").
 */
#ifndef POP3GW_ADMIN_LANE_H
#define POP3GW_ADMIN_LANE_H

/* One queued job; the submitter owns it and keeps it alive until its
 * answer is given (by the lane's run callback). */
struct adm_job {
    struct adm_job *next; /* in the lane's queue, then in the batch */
    void *arg;            /* the submitter's */
};

/*
 * Answers a batch (a list linked by next, oldest first) on the lane's
 * thread. `stopping` is set for the jobs left when the lane stops: answer
 * them without asking anyone. The callback must not touch a job after
 * answering it (its request may be gone), so it reads next first.
 */
typedef void (*adm_lane_run_fn)(void *arg, struct adm_job *batch, int stopping);

/* Runs every tick_ms on the lane's thread, between batches. */
typedef void (*adm_lane_tick_fn)(void *arg);

struct adm_lane;

/* Starts a lane (tick may be NULL). NULL, after logging why, when no
 * thread could be made. */
struct adm_lane *adm_lane_start(const char *name, adm_lane_run_fn run, adm_lane_tick_fn tick,
                                int tick_ms, void *arg);

/* Queues a job: 0, or -1 when the lane stops (then the caller answers the
 * job itself). Any thread. */
int adm_lane_submit(struct adm_lane *l, struct adm_job *j);

/* Stops the lane: jobs still queued are run with `stopping` set, then the
 * thread is joined. Later submits fail (-1) until adm_lane_free(), which
 * the caller calls once nothing can submit any more. NULL is fine. */
void adm_lane_stop(struct adm_lane *l);
void adm_lane_free(struct adm_lane *l);

#endif
