/*
 * conv: the streaming message converter for RETR and TOP.
 *
 * Line ends. A line ends at LF. An LF that follows a CR (CRLF) is passed as it
 * is; a bare LF becomes CRLF. A CR that is not followed by LF is ordinary data:
 * it passes unchanged and does not end the line (so "a\rb\n" goes out as
 * "a\rb\r\n", and a message ending in "x\r" gets "x\r\r\n"). Because a CR is
 * passed through whether or not an LF follows it, a CR at the end of a chunk
 * never has to be held back; only `after_cr` is remembered, so that an LF at
 * the start of the next chunk is not given a second CR. NUL and all other
 * bytes pass unchanged.
 *
 * Dot-stuffing. A line whose first byte is '.' gets one more '.' in front.
 * A line starting with a lone CR starts with CR, not '.', and is left alone.
 *
 * TOP. The header runs up to and including the first empty line: one whose
 * content is nothing or a single CR ("\n" or "\r\n"). A line made of two CRs
 * and an LF is not empty. Folded header lines are simply header lines. After
 * the empty line, `lines_left` body lines follow, then the output stops and
 * `done` is set. A message without an empty line is all header and goes out
 * whole.
 *
 * Speed. The input is scanned for LFs with memchr(); bytes that need no change
 * (which, for a CRLF message without leading dots, is all of them) are not
 * copied line by line but gathered into one run and copied with a single
 * memcpy() when an inserted byte or the end of the input interrupts the run.
 *
 * Octets. `octets` counts the input as it would be with CRLF line ends, before
 * dot-stuffing: every input byte counts one, each inserted CR one more, and
 * conv_finish() adds two for the CRLF it gives an unterminated last line. For
 * TOP only what went out is counted.
 */
#include "gateway/conv.h"

#include <string.h>

void conv_init(struct conv *c, long top_lines)
{
    memset(c, 0, sizeof(*c));
    c->at_line_start = 1;
    c->line_empty = 1;
    c->lines_left = top_lines < 0 ? -1 : top_lines;
}

/* A line has just ended (its LF consumed). Returns 1 when TOP must stop here. */
static int top_line_ended(struct conv *c)
{
    if (!c->in_body) {
        if (!c->line_empty)
            return 0;
        c->in_body = 1;
        return c->lines_left == 0;
    }
    return --c->lines_left == 0;
}

size_t conv_feed(struct conv *c, const char *in, size_t len, char *out)
{
    if (c->done || len == 0)
        return 0;

    const char *p = in;
    const char *end = in + len;
    const char *run = in; /* start of input not yet copied to the output */
    char *o = out;
    int top = c->lines_left >= 0;
    uint64_t added_cr = 0;

    while (p < end) {
        if (c->at_line_start && *p == '.') {
            memcpy(o, run, (size_t)(p - run));
            o += p - run;
            *o++ = '.';
            run = p;
        }

        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            /* The line goes on in the next chunk. */
            if (c->at_line_start)
                c->line_empty = (end - p == 1 && *p == '\r');
            else
                c->line_empty = 0;
            c->at_line_start = 0;
            c->after_cr = (end[-1] == '\r');
            p = end;
            break;
        }

        int cr_before;
        if (nl > p) {
            cr_before = (nl[-1] == '\r');
            if (c->at_line_start)
                c->line_empty = (nl - p == 1 && *p == '\r');
            else
                c->line_empty = 0;
        } else {
            cr_before = c->after_cr;
        }
        if (!cr_before) {
            memcpy(o, run, (size_t)(nl - run));
            o += nl - run;
            *o++ = '\r';
            run = nl;
            added_cr++;
        }
        p = nl + 1;
        c->at_line_start = 1;
        c->after_cr = 0;
        if (top && top_line_ended(c)) {
            c->done = 1;
            break;
        }
        c->line_empty = 1;
    }

    memcpy(o, run, (size_t)(p - run));
    o += p - run;
    c->octets += (uint64_t)(p - in) + added_cr;
    return (size_t)(o - out);
}

size_t conv_finish(struct conv *c, char *out)
{
    char *o = out;
    if (!c->done && !c->at_line_start) {
        *o++ = '\r';
        *o++ = '\n';
        c->octets += 2;
        c->at_line_start = 1;
        c->after_cr = 0;
        c->line_empty = 1;
    }
    *o++ = '.';
    *o++ = '\r';
    *o++ = '\n';
    return (size_t)(o - out);
}
