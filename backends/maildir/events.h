/*
 * events: the handlers of the webhook contract's events (authenticate, list,
 * uidl, retrieve, quit, connect, disconnect), one static function each,
 * mapping a parsed JSON request to a reply. They know nothing of HTTP beyond
 * the status code they choose; http.c receives requests and sends replies.
 */
#ifndef MAILDIR_EVENTS_H
#define MAILDIR_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum ev_event {
    EV_AUTHENTICATE,
    EV_LIST,
    EV_UIDL,
    EV_RETRIEVE,
    EV_QUIT,
    EV_CONNECT,
    EV_DISCONNECT,
    EV_COUNT
};

/* Event names, indexed by enum ev_event. */
extern const char *const ev_names[EV_COUNT];

/* What the handlers share; set up by main, read-only while serving. */
struct ev_ctx {
    struct users *users; /* the users file */
    struct store *store; /* the Maildirs */
    struct locks *locks; /* maildrop locks, or NULL when locking is off */
    int list_uids;       /* 1: `list` replies carry uids */
};

/* One reply: a JSON body, or a message file to stream. */
struct ev_reply {
    int status;       /* HTTP status code */
    json_t *json;     /* the JSON body (owned), or NULL when fd >= 0 */
    int fd;           /* a message to send as message/rfc822 (owned), or -1 */
    uint64_t fd_size; /* its length in bytes */
};

/* The event named by `len` bytes of `name`, or -1. */
int ev_lookup(const char *name, size_t len);

/*
 * Answers one request: `req` is the parsed body (any JSON value; anything but
 * an object whose `event` is `event`'s name is a 400). Always fills `out`,
 * which the caller then owns (ev_reply_clear).
 */
void ev_handle(const struct ev_ctx *ctx, enum ev_event event, json_t *req, struct ev_reply *out);

/* Releases what a reply owns; safe on a cleared reply. */
void ev_reply_clear(struct ev_reply *r);

#endif
