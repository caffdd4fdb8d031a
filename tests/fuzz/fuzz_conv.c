/*
 * fuzz_conv: the streaming RETR/TOP converter (gateway/conv.c).
 *
 * Input: byte 0 picks RETR (bit 7 set) or TOP with (byte 0 & 0x7f) body
 * lines; byte 1 picks how the body is chunked; the rest is the message body
 * as the backend sends it.
 *
 * The body goes through conv_feed() in chunks of random sizes, each into an
 * output buffer of exactly CONV_OUT_MAX(chunk) bytes, then conv_finish().
 * Checks: the output has no bare CR-less LF, every line that starts with '.'
 * is stuffed, it ends with the terminating ".\r\n" and contains no other
 * terminator; and the whole output and the octet count equal those of a
 * plain line-by-line reference written from conv.h's contract (which also
 * proves the result does not depend on where the chunks were split).
 */
#include "fuzz.h"

#include "gateway/conv.h"

/* The contract, line by line over the whole input: see gateway/conv.c. */
static size_t conv_reference(const uint8_t *in, size_t len, long top, char *out, uint64_t *octets)
{
    size_t o = 0, i = 0;
    int in_body = 0, done = 0, open_line = 0;
    long left = top;

    *octets = 0;
    while (i < len) {
        const uint8_t *lf = memchr(in + i, '\n', len - i);
        size_t n = lf ? (size_t)(lf - (in + i)) : len - i;

        if (in[i] == '.')
            out[o++] = '.';
        memcpy(out + o, in + i, n);
        o += n;
        if (!lf) {
            *octets += n;
            open_line = 1;
            break;
        }
        if (n > 0 && in[i + n - 1] == '\r') {
            out[o++] = '\n';
            *octets += n + 1;
        } else {
            out[o++] = '\r';
            out[o++] = '\n';
            *octets += n + 2;
        }
        if (top >= 0) {
            if (!in_body) {
                if (n == 0 || (n == 1 && in[i] == '\r')) {
                    in_body = 1;
                    if (left == 0)
                        done = 1;
                }
            } else if (--left == 0) {
                done = 1;
            }
        }
        i += n + 1;
        if (done)
            break;
    }
    if (!done && open_line) {
        out[o++] = '\r';
        out[o++] = '\n';
        *octets += 2;
    }
    memcpy(out + o, ".\r\n", 3);
    return o + 3;
}

/* The invariants any POP3 multi-line body must meet on the wire. */
static void check_wire(const char *out, size_t n)
{
    size_t i, line = 0;

    FUZZ_CHECK(n >= 3 && memcmp(out + n - 3, ".\r\n", 3) == 0);
    FUZZ_CHECK(n == 3 || (n >= 5 && out[n - 5] == '\r' && out[n - 4] == '\n'));
    for (i = 0; i < n; i++) {
        if (out[i] == '\n') {
            FUZZ_CHECK(i > 0 && out[i - 1] == '\r');
            line = i + 1;
            continue;
        }
        if (i == line && out[i] == '.' && i + 3 != n) {
            /* A stuffed line: "..", never a lone "." line before the end. */
            FUZZ_CHECK(i + 1 < n && out[i + 1] == '.');
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conv c;
    uint32_t rng;
    long top;
    size_t pos = 0, o = 0, cap, max_chunk, ref_len, n;
    char *out, *ref, tail[8];
    uint64_t ref_octets;
    const uint8_t *body;
    size_t len;

    if (size < 2)
        return 0;
    top = (data[0] & 0x80) ? -1 : (long)(data[0] & 0x7f);
    static const size_t chunks[4] = {1, 7, 64, (size_t)-1};
    max_chunk = chunks[data[1] & 3];
    rng = 0x10001u * data[1] + 1;
    body = data + 2;
    len = size - 2;

    cap = 2 * len + 8;
    out = malloc(cap);
    ref = malloc(cap);
    FUZZ_CHECK(out && ref);

    conv_init(&c, top);
    while (pos < len) {
        size_t k = len - pos, got;
        uint8_t *chunk;
        char *piece;

        if (max_chunk != (size_t)-1)
            k = 1 + fuzz_rand(&rng) % max_chunk;
        if (k > len - pos)
            k = len - pos;
        chunk = fuzz_memdup(body + pos, k);
        piece = malloc(CONV_OUT_MAX(k));
        FUZZ_CHECK(piece != NULL);
        got = conv_feed(&c, (const char *)chunk, k, piece);
        FUZZ_CHECK(got <= CONV_OUT_MAX(k));
        FUZZ_CHECK(o + got <= cap);
        memcpy(out + o, piece, got);
        o += got;
        free(piece);
        free(chunk);
        pos += k;
        if (conv_done(&c)) {
            FUZZ_CHECK(top >= 0);
            /* Past the TOP cut, everything is ignored. */
            FUZZ_CHECK(conv_feed(&c, "x\n", 2, tail) == 0);
            break;
        }
    }
    n = conv_finish(&c, tail);
    FUZZ_CHECK(n <= sizeof(tail));
    FUZZ_CHECK(o + n <= cap);
    memcpy(out + o, tail, n);
    o += n;

    check_wire(out, o);
    ref_len = conv_reference(body, len, top, ref, &ref_octets);
    FUZZ_CHECK(ref_len == o);
    FUZZ_CHECK(memcmp(ref, out, o) == 0);
    FUZZ_CHECK(ref_octets == c.octets);

    free(out);
    free(ref);
    return 0;
}
