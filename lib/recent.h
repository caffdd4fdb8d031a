/*
 * recent: the last RECENT_MAX failed webhook calls, for /status and the
 * dashboard's panel of recent failures.
 *
 * A small ring under a mutex. webhook/wh_client.c adds an entry where a
 * call fails (on a worker); the admin side copies the ring into its
 * snapshot (gateway/report.c). An entry holds what failed and how: the
 * event, the HTTP status or the transport error, the duration, the session
 * id and a short reason. The caller never passes a body, a user name or a
 * secret; the text fields keep printable ASCII only and are cut at
 * RECENT_TEXT - 1 bytes.
 */
#ifndef POP3GW_RECENT_H
#define POP3GW_RECENT_H

#include <stddef.h>

#define RECENT_MAX 50   /* failures kept: the newest push out the oldest */
#define RECENT_TEXT 100 /* bytes of a text field, NUL included */

struct recent_failure {
    long long at_ms;             /* unix milliseconds: when the call failed */
    int event;                   /* lib/names.h NAMES_EVENTS index */
    long http_status;            /* the backend's status; 0 when none came */
    char transport[RECENT_TEXT]; /* the transport error; "" when a reply came */
    char reason[RECENT_TEXT];    /* a short reason */
    double duration;             /* seconds from the call's start, retries included */
    char session[24];            /* the POP3 session's id; "" when none */
};

/* Adds a failure (copied; its text fields cleaned as above). Any thread. */
void recent_add(const struct recent_failure *f);

/* Copies up to max failures into out, newest first; returns how many. Any
 * thread. */
size_t recent_copy(struct recent_failure *out, size_t max);

/* Forgets every failure (for tests). */
void recent_clear(void);

#endif
