/*
 * wh_json: request bodies and reply parsing for the webhook contract.
 *
 * Pure functions over bytes, no I/O: unit tests and fuzz targets call them
 * directly.
 */
#ifndef POP3GW_WH_JSON_H
#define POP3GW_WH_JSON_H

#include "webhook/wh.h"

/*
 * Builds the JSON body of `call` (compact, UTF-8). Returns a malloc'd,
 * NUL-terminated string and its length in *len, or NULL on allocation
 * failure or invalid input (a missing field, a string that is not UTF-8).
 * `call->mailbox` is copied verbatim: it must be JSON as wh_json_parse()
 * serialised it (it is not parsed again on every call).
 */
char *wh_json_build(const struct wh_call *call, size_t *len);

/* The most a reply body of `event` may hold: WH_BODY_MAX, but a listing
 * (list, uidl) gets room for max_messages entries with 70-octet uids
 * (WH_LIST_ENTRY_MAX each) besides. */
size_t wh_reply_max(enum wh_event event, size_t max_messages);

/*
 * Parses the reply to a non-streamed event (authenticate, list, uidl, quit,
 * connect, disconnect; retrieve only for its JSON form is handled by
 * wh_json_parse_content). `http_status` is the response code, `body` the
 * whole body (may be NULL when len is 0). `max_messages` caps a listing.
 * Fills `r` (zeroed first) and returns r->status.
 */
enum wh_status wh_json_parse(enum wh_event event, long http_status, const char *content_type,
                             const char *body, size_t len, size_t max_messages,
                             struct wh_result *r);

/*
 * For a retrieve answered as application/json: extracts `content` (UTF-8
 * text) or `content_base64` (decoded). Returns a malloc'd buffer and its
 * length in *out_len, or NULL with a reason in *err (static string).
 */
char *wh_json_parse_content(const char *body, size_t len, size_t *out_len, const char **err);

/* Which member of a JSON retrieve reply carries the message. */
enum wh_json_content {
    WH_JSON_NO_CONTENT,     /* the reply is not as the contract says */
    WH_JSON_CONTENT,        /* "content": UTF-8 text */
    WH_JSON_CONTENT_BASE64, /* "content_base64" */
};

/*
 * The checks wh_json_parse_content() makes, without taking the value out
 * (one function does them for both): the body is one JSON object (no
 * duplicate keys, \u0000 allowed in strings, at most WH_JSON_DEPTH_MAX
 * containers deep) with exactly one of content and content_base64 (null
 * counts as absent), and that one a string. Returns which, or
 * WH_JSON_NO_CONTENT with a static reason in *err. The string itself is not
 * looked at: whether content_base64 is base64 is the caller's to check.
 */
enum wh_json_content wh_json_check_content(const char *body, size_t len, const char **err);

/* True for a status that means the backend refused the webhook call itself
 * (401, 403: a bad signature or token), on any event. Never a verdict on a
 * login: wh_json_parse() makes it WH_TEMP. */
int wh_json_refused(long http_status);

/* Cuts a backend's message for the client: printable ASCII only, at most
 * WH_MESSAGE_MAX bytes, a leading "[...]" removed. Returns malloc'd text or
 * NULL when nothing is left. */
char *wh_sanitize_message(const char *msg);

/* True for a uid the contract allows: 1..70 bytes in 0x21..0x7E. */
int wh_uid_valid(const char *s);

#endif
