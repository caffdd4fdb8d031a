/*
 * conv: the streaming message converter for RETR and TOP.
 *
 * Sans-I/O and resumable: the backend's body arrives in chunks of any size,
 * split anywhere. Bare LF becomes CRLF (CRLF stays CRLF), a line starting with
 * '.' gets one more '.', and for TOP the output stops after the header, the
 * blank line and n body lines. conv_finish() adds a CRLF when the last line had
 * none, then the terminating ".\r\n".
 */
#ifndef POP3GW_CONV_H
#define POP3GW_CONV_H

#include <stddef.h>
#include <stdint.h>

struct conv {
    int at_line_start; /* next byte starts a line */
    int after_cr;      /* the last byte seen was CR */
    int in_body;       /* the blank line after the header has passed */
    int line_empty;    /* the current line has no bytes yet (CR not counted) */
    long lines_left;   /* TOP: body lines still to send; -1 = whole message */
    int done;          /* TOP cut reached: further input is ignored */
    uint64_t octets;   /* CRLF-normalised octets so far, before dot-stuffing */
};

/* Worst-case output for `len` input bytes: every byte may become two (plus
 * room for the converter's 16-byte stores). */
#define CONV_OUT_MAX(len) (2 * (len) + 24)

/* top_lines < 0: whole message (RETR); >= 0: TOP with that many body lines. */
void conv_init(struct conv *c, long top_lines);

/*
 * Converts `len` bytes of `in` into `out`, which must hold CONV_OUT_MAX(len)
 * bytes. Returns the number of bytes written. Consumes all input, ignoring
 * whatever follows the TOP cut (then conv_done() is true).
 */
size_t conv_feed(struct conv *c, const char *in, size_t len, char *out);

/* Ends the message: CRLF if the last line lacked one, then ".\r\n". `out`
 * must hold 8 bytes. Returns the number of bytes written. */
size_t conv_finish(struct conv *c, char *out);

/* True once TOP has sent everything it will send. */
static inline int conv_done(const struct conv *c)
{
    return c->done;
}

#endif
