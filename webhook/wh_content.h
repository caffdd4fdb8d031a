/*
 * wh_content: the JSON form of a retrieve reply, decoded as it streams.
 *
 * A backend may answer retrieve with `application/json` and
 * {"content": "..."} (UTF-8 text) or {"content_base64": "..."}, for a
 * message of any size. This decoder takes the body in pieces of any size and
 * puts out the message bytes as they arrive, in memory bounded whatever the
 * message size. It does no I/O: the caller owns every buffer.
 *
 * What it accepts is exactly what wh_json_parse_content() accepts on the whole
 * body, and it puts out the same bytes, however the body is split into
 * wh_content_feed() calls (one limit aside, below). It tokenizes the root
 * object and streams the value of the first top-level member named content
 * or content_base64 (after JSON escapes: "cont\u0065nt" is content) whose
 * value is a string: JSON escapes, surrogate pairs and UTF-8 are checked as
 * jansson checks them, and content_base64 is then decoded as
 * util_b64_decode() does (space, tab, CR and LF skipped, '=' only as the last
 * one or two characters, whole quads). Everything else is copied into a
 * "skeleton" of the reply, with that value replaced by "", and at the end
 * the skeleton gets the same checks as a whole body (wh_json_check_content():
 * one object, no duplicate keys, depth, exactly one of the two members, a
 * string). A second content or content_base64 member is thus copied into the
 * skeleton and refused there.
 *
 * Limits:
 * - The skeleton is at most WH_BODY_MAX (1 MB): the members beside the
 *   content, with each run of whitespace between tokens counted as one
 *   byte, may take at most 1 MB, which wh_json_parse_content() does not
 *   require; a reply over it is refused. The content itself has no limit
 *   here (content_base64 has util_b64_decode()'s: at most INT_MAX decoded
 *   bytes).
 * - Memory: the skeleton plus this struct (a few bytes of carry: an
 *   unfinished escape, UTF-8 sequence or base64 quad).
 *
 * Late rejection. A reply is refused as soon as its bytes so far cannot
 * begin a valid reply (a bad escape, invalid UTF-8, a character base64 does
 * not allow, a token out of place), but some faults show only at the end: a
 * truncated body, a duplicate key or a second content member after the
 * content, the final base64 quad. What was decoded before such a late
 * rejection has already been put out. The caller must therefore treat a
 * rejection after wh_content_started() as a broken transfer (the gateway
 * closes the connection without the final "."), so that a client never sees
 * such a message as complete.
 */
#ifndef POP3GW_WH_CONTENT_H
#define POP3GW_WH_CONTENT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

/* Room the caller gives wh_content_feed() for n bytes in: at most one byte
 * out per byte in, plus the rest of a character or base64 quad begun in an
 * earlier call (at most 4 bytes in all for it). */
#define WH_CONTENT_OUT_MAX(n) ((n) + 4)

/* Caller-allocated (it may be embedded); the fields are private to
 * wh_content.c. */
struct wh_content {
    struct buf skel;       /* the reply without the streamed value (<= WH_BODY_MAX) */
    const char *error;     /* static reason once the reply cannot be valid; sticky */
    unsigned char where;   /* before, inside or after the root object */
    unsigned char mode;    /* what the root object expects next (its own tokens) */
    unsigned char depth;   /* containers open, root included (<= WH_JSON_DEPTH_MAX) */
    unsigned char skel_ws; /* the skeleton ends in whitespace between tokens */
    unsigned char member;  /* the current top-level key: content, content_base64, other */
    unsigned char streams; /* which member is or was streamed, 0 before */
    unsigned char str;     /* the string decoder's state, 0 outside strings */
    unsigned char sink;    /* where the current string's bytes go */
    unsigned char hex_n;   /* hex digits of a \u escape read so far */
    unsigned char u8_n;    /* bytes of a raw UTF-8 sequence held in u8[] */
    unsigned char u8_need; /* its continuation bytes still to come */
    unsigned char u8_lo;   /* the next continuation byte's bounds (overlongs, */
    unsigned char u8_hi;   /* surrogates, past U+10FFFF) */
    unsigned char u8[4];   /* the sequence, put out once complete */
    uint32_t cp;           /* the \u escape being read, or a high surrogate */
    uint32_t cp2;          /* the low surrogate being read */
    unsigned char key_len; /* bytes of the top-level key in key[]; sizeof(key) = too long */
    char key[16];          /* a top-level key, decoded, to compare */
    unsigned char q_n;     /* base64 characters in quad[] */
    unsigned char pad;     /* '=' seen: no more characters may follow */
    unsigned char quad[4]; /* 6-bit values of the quad being read */
    uint64_t b64_chars;    /* base64 characters so far, '=' included */
};

/* Ready for a reply. */
void wh_content_init(struct wh_content *d);

/* Frees what d holds and makes it as wh_content_init() left it; safe twice. */
void wh_content_free(struct wh_content *d);

/*
 * Feeds n bytes of the body. Writes the message bytes decoded from them to
 * out (the caller provides at least WH_CONTENT_OUT_MAX(n) bytes) and sets
 * *out_len. Returns 0, or -1 once the input cannot be a valid reply (sticky;
 * the reason in wh_content_error()); *out_len is then 0.
 */
int wh_content_feed(struct wh_content *d, const char *in, size_t n, char *out, size_t *out_len);

/*
 * The end of the body. May write final bytes to out (WH_CONTENT_OUT_MAX(0)
 * bytes; in practice none) and sets *out_len. Returns 0 when the whole reply
 * was valid and every message byte has been put out, -1 otherwise. Frees
 * the skeleton.
 */
int wh_content_finish(struct wh_content *d, char *out, size_t *out_len);

/* True once the content (or content_base64) value has begun: the reply is
 * the JSON form and message bytes flow from here on. */
int wh_content_started(const struct wh_content *d);

/* Why the reply was refused: static text, for the log ("no error" before). */
const char *wh_content_error(const struct wh_content *d);

#endif
