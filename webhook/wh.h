/*
 * wh: the webhook contract, version 1, as C types.
 *
 * A session describes a call in a struct wh_call; wh_json builds its JSON
 * body and parses the backend's reply into a struct wh_result; wh_client
 * carries it over HTTP on the worker's event loop. See docs/webhooks.md.
 */
#ifndef POP3GW_WH_H
#define POP3GW_WH_H

#include <stddef.h>
#include <stdint.h>

#include "lib/names.h"

/* The events of the contract (lib/names.h keeps the list). */
enum wh_event {
#define X(e, n) WH_##e,
    NAMES_EVENTS(X)
#undef X
        WH_N_EVENTS
};

/* Names in the order of enum wh_event. */
extern const char *const wh_event_names[WH_N_EVENTS];

/* The login methods of authenticate (lib/names.h keeps the list). */
enum wh_method {
#define X(e, n, cmd) WH_METHOD_##e,
    NAMES_METHODS(X)
#undef X
        WH_N_METHODS
};

/* Names in the order of enum wh_method: the `method` values of the contract. */
extern const char *const wh_method_names[WH_N_METHODS];

#define WH_UID_MAX 70
#define WH_USER_MAX 255
#define WH_MAILBOX_MAX 4096
#define WH_BODY_MAX (1024 * 1024)
#define WH_LIST_ENTRY_MAX 128 /* room per listing entry: size, a 70-octet uid, JSON around */
#define WH_JSON_DEPTH_MAX 16
#define WH_MESSAGE_MAX 160 /* backend message text shown to the client */

struct wh_deleted {
    uint32_t message; /* 1-based */
    const char *uid;
};

/* Everything one webhook call needs. Pointers are borrowed from the session
 * for the duration of wh_json_build(). NULL / -1 mean "absent". */
struct wh_call {
    enum wh_event event;
    const char *session;
    const char *client_ip;
    int client_port;
    int client_tls;
    const char *user;    /* JSON null when NULL */
    const char *mailbox; /* serialised JSON value, echoed verbatim, or NULL */
    int utf8;            /* add "utf8": true */

    /* authenticate */
    const char *method;   /* an entry of wh_method_names */
    const char *password; /* USER PLAIN LOGIN */
    const char *authzid;  /* PLAIN, when given */
    const char *apop_timestamp, *apop_digest;
    const char *token; /* XOAUTH2 OAUTHBEARER */
    int attempt;       /* 1-based */

    /* retrieve */
    uint32_t message;   /* 1-based */
    const char *uid;    /* when known */
    long lines;         /* TOP n, or -1 for RETR */
    uint64_t size_hint; /* its size in the listing (not sent): picks a buffer */

    /* quit */
    const struct wh_deleted *deleted;
    size_t n_deleted;

    /* disconnect */
    const char *reason; /* client_closed timeout error shutdown */
};

/* What a call came to. */
enum wh_status {
    WH_OK,        /* the backend answered as the contract says, positively */
    WH_REFUSED,   /* authenticate/connect: the backend said no (see code) */
    WH_NOT_FOUND, /* retrieve: 404 */
    WH_TEMP,      /* timeout, refused connection, 5xx, a body not per contract */
};

/* Response codes a refused authenticate may carry. */
enum wh_code {
    WH_CODE_AUTH,
    WH_CODE_IN_USE,
    WH_CODE_LOGIN_DELAY,
    WH_CODE_SYS_TEMP,
    WH_CODE_SYS_PERM
};

struct wh_msginfo {
    uint64_t size;
    char *uid; /* NULL when the listing carries none */
};

/* A parsed reply. Owned strings and arrays are freed by wh_result_free(). */
struct wh_result {
    enum wh_status status;
    long http_status; /* 0 when no response arrived */
    char *error;      /* for the log: why it is WH_TEMP, or NULL */

    /* authenticate / connect refused */
    enum wh_code code;
    char *message; /* sanitised text for the client, or NULL */
    /* authenticate ok */
    char *user;    /* canonical name, or NULL */
    char *mailbox; /* serialised JSON, or NULL */

    /* list: n entries; uids all present or all NULL. uidl: uids only. */
    struct wh_msginfo *msgs;
    size_t n_msgs;
    int has_uids;
    size_t truncated_from; /* list cut to max_messages: the original count, else 0 */
};

void wh_result_free(struct wh_result *r);

#endif
