/*
 * wh_client: webhook calls over HTTP, on a worker's event loop.
 *
 * One libcurl multi handle per worker, driven by curl_multi_socket_action()
 * from the worker's libevent loop. Connections to the backend are kept alive
 * and reused (a bounded pool). A call is a continuation: the caller gets its
 * result through a callback. The contract both ways:
 *
 * - No wh_* function calls back into the caller: wh_start(), wh_cancel()
 *   and wh_resume() only record what is wanted and schedule it.
 * - `done`, `begin` and `end` run from the client's own turn of the event
 *   loop, outside any curl callback. `data` alone runs inside curl's write
 *   callback, because that is where the bytes are; it must not call any
 *   wh_* function.
 * - After the final callback (done; begin with a status other than WH_OK;
 *   end; or data returning WH_DATA_STOP) or wh_cancel(), the handle is gone.
 */
#ifndef POP3GW_WH_CLIENT_H
#define POP3GW_WH_CLIENT_H

#include <stddef.h>

#include "webhook/wh.h"

struct event_base;
struct wh_client;
struct wh_req;

/* What the client needs of the configuration. The gateway fills it from
 * its own (as it fills pop3_params); the client copies every string. */
struct wh_params {
    const char *url;                    /* base URL, no trailing slash: calls go to url/EVENT */
    const char *url_event[WH_N_EVENTS]; /* per-event URL, or NULL */
    double timeout;                     /* seconds for a call, retries included */
    double timeout_event[WH_N_EVENTS];  /* per event, 0 = timeout (retrieve: without progress) */
    int pool;                           /* keep-alive connections to the backend */
    int max_inflight;                   /* calls running at once; more wait in order */
    size_t max_messages;                /* a listing is cut to this many entries */
    const char *ca_file, *cert, *key;   /* TLS to the backend, or NULL */
    const char *secret;                 /* space-separated whsec_ keys, or NULL */
    const char *token;                  /* bearer token, or NULL */
};

/* What a data callback answers. */
enum wh_data_rc {
    WH_DATA_STOP = -1, /* stop the transfer: no callback follows */
    WH_DATA_TAKEN = 0, /* every byte taken */
    WH_DATA_FULL = 1,  /* no byte taken: the transfer pauses until wh_resume() */
};

/* How a streamed body ended. */
enum wh_end {
    WH_END_OK,      /* complete, its length known (Content-Length or chunked) */
    WH_END_UNSIZED, /* ended by the backend closing the connection: no length was given */
    WH_END_BROKEN,  /* the transfer broke, or a JSON body turned out invalid */
};

/* Callbacks of one call. For non-streamed events only `done` is used; a
 * retrieve uses begin / data / end. */
struct wh_handler {
    /* The parsed reply (or failure). `r` is freed after the call returns;
     * take what you keep and NULL it in r. */
    void (*done)(void *ctx, struct wh_result *r);
    /* Retrieve: the status is known. Anything but WH_OK ends the call. On
     * WH_OK the body waits until wh_resume() lets it flow (or wh_cancel()
     * drops it). */
    void (*begin)(void *ctx, enum wh_status status);
    /* Retrieve: body bytes (the message itself, decoded when the reply was
     * JSON), all or nothing: see enum wh_data_rc. */
    int (*data)(void *ctx, const char *p, size_t n);
    /* Retrieve: the body ended. */
    void (*end)(void *ctx, enum wh_end how);
};

/* Process-wide setup (curl_global_init); call once before any worker starts. */
int wh_global_init(void);
void wh_global_cleanup(void);

/* A client for one worker, with a copy of `p`. NULL on failure (a secret
 * that does not decode, or no memory). */
struct wh_client *wh_client_new(struct event_base *base, const struct wh_params *p);
void wh_client_free(struct wh_client *c); /* cancels every call; NULL is fine */

/* Takes new settings (SIGHUP): calls that start from now on use them; calls
 * already running keep their URL and deadline. 0, or -1 when a secret does
 * not decode or memory runs out (nothing changed). */
int wh_client_set_params(struct wh_client *c, const struct wh_params *p);

/*
 * Starts a call. The body is built now, so `call` and what it points to may
 * go away after this returns. Returns a handle, valid until the final
 * callback (done or end, or begin returning 0) has returned, or until
 * wh_cancel(). NULL when memory runs out.
 */
struct wh_req *wh_start(struct wh_client *c, const struct wh_call *call, const struct wh_handler *h,
                        void *ctx);

/* Stops a call; no callback runs after this. NULL is fine. */
void wh_cancel(struct wh_req *r);

/* Lets a retrieve's body flow: after begin(WH_OK), and after a data
 * callback answered WH_DATA_FULL. */
void wh_resume(struct wh_req *r);

/* Calls in flight and waiting (for status pages). */
size_t wh_client_inflight(const struct wh_client *c);

#endif
