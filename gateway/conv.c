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
 * Speed. Each line is copied while it is scanned for its LF, 16 bytes at a
 * time with SSE2 where the compiler targets it (every x86-64): a block is
 * stored whole, then the output pointer advances only to the LF, so the bytes
 * stored past it are overwritten by what follows. Such stores happen only
 * while 16 or more input bytes remain, which keeps them inside
 * CONV_OUT_MAX(len). A message of short lines costs no call per line.
 *
 * Octets. `octets` counts the input as it would be with CRLF line ends, before
 * dot-stuffing: every input byte counts one, each inserted CR one more, and
 * conv_finish() adds two for the CRLF it gives an unterminated last line. For
 * TOP only what went out is counted.
 */
#include "gateway/conv.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* Copies input from p up to its next LF (or to end) to *op and advances *op
 * past the copy. Returns the LF, or end when there is none. */
static inline const char *conv_copy_line(const char *p, const char *end, char **op)
{
    char *o = *op;
#if defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n');

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));

        _mm_storeu_si128((__m128i *)(void *)o, v);
        if (m) {
            unsigned i = (unsigned)__builtin_ctz(m);
            *op = o + i;
            return p + i;
        }
        p += 16;
        o += 16;
    }
#endif
    while (p < end && *p != '\n')
        *o++ = *p++;
    *op = o;
    return p;
}

size_t conv_feed(struct conv *c, const char *in, size_t len, char *out)
{
    if (c->done || len == 0)
        return 0;

    const char *p = in;
    const char *end = in + len;
    char *o = out;
    int top = c->lines_left >= 0;
    uint64_t added_cr = 0;

    while (p < end) {
        if (c->at_line_start && *p == '.')
            *o++ = '.';

        const char *nl = conv_copy_line(p, end, &o);
        if (nl == end) {
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
            *o++ = '\r';
            added_cr++;
        }
        *o++ = '\n';
        p = nl + 1;
        c->at_line_start = 1;
        c->after_cr = 0;
        if (top && top_line_ended(c)) {
            c->done = 1;
            break;
        }
        c->line_empty = 1;
    }

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
