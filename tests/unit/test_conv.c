/*
 * Tests for gateway/conv.c: a table of hand-written cases, each fed whole, one
 * byte at a time, split into two chunks at every position and into three at
 * every pair of positions; then random inputs checked against a naive
 * whole-buffer reference converter written below.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/conv.h"

/* ---- result of one conversion ------------------------------------------ */

struct result {
    char *data;
    size_t len;
    size_t cap;
    uint64_t octets;
    int done;
};

static void res_append(struct result *r, const char *p, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64;
        while (cap < r->len + n)
            cap *= 2;
        r->data = realloc(r->data, cap);
        assert_non_null(r->data);
        r->cap = cap;
    }
    if (n > 0)
        memcpy(r->data + r->len, p, n);
    r->len += n;
}

static void res_free(struct result *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}

/* One conv_feed() call. The input is copied to a heap buffer of exactly `len`
 * bytes and the output goes to one of exactly CONV_OUT_MAX(len) bytes, so the
 * sanitizers catch a read or write past either. */
static void feed_chunk(struct conv *c, const char *in, size_t len, struct result *r)
{
    char *inbuf = malloc(len ? len : 1);
    char *outbuf = malloc(CONV_OUT_MAX(len));
    assert_non_null(inbuf);
    assert_non_null(outbuf);
    if (len > 0)
        memcpy(inbuf, in, len);
    size_t n = conv_feed(c, inbuf, len, outbuf);
    assert_true(n <= CONV_OUT_MAX(len));
    res_append(r, outbuf, n);
    free(outbuf);
    free(inbuf);
}

/* Converts `in` cut at the `ncuts` increasing positions in `cuts`. An empty
 * feed is made between chunks too, which must change nothing. */
static void convert_split(const char *in, size_t len, long top, const size_t *cuts, size_t ncuts,
                          struct result *r)
{
    struct conv c;
    conv_init(&c, top);
    memset(r, 0, sizeof(*r));
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t next = i < ncuts ? cuts[i] : len;
        feed_chunk(&c, in + pos, next - pos, r);
        feed_chunk(&c, in + next, 0, r);
        pos = next;
    }
    r->done = conv_done(&c);
    char *fin = malloc(8);
    assert_non_null(fin);
    size_t n = conv_finish(&c, fin);
    assert_true(n <= 8);
    res_append(r, fin, n);
    free(fin);
    r->octets = c.octets;
}

static void convert_bytewise(const char *in, size_t len, long top, struct result *r)
{
    struct conv c;
    conv_init(&c, top);
    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < len; i++)
        feed_chunk(&c, in + i, 1, r);
    r->done = conv_done(&c);
    char fin[8];
    res_append(r, fin, conv_finish(&c, fin));
    r->octets = c.octets;
}

/* ---- naive reference ------------------------------------------------------
 * Works on the whole message at once, line by line: cut the input at each LF;
 * a line that had an LF loses one trailing CR if it has one, and the rest is
 * its content; a last line without LF keeps all its bytes as content (a CR
 * there is data). Every line goes out as '.' (if the content starts with
 * '.') + content + CRLF. For TOP the header is the lines up to and including
 * the first LF-terminated line with empty content, then at most n more lines.
 */

static void reference(const char *in, size_t len, long top, struct result *r)
{
    memset(r, 0, sizeof(*r));
    size_t start = 0;
    int in_body = 0;
    long body_lines = 0;
    int cut = 0;
    while (start < len && !cut) {
        size_t i = start;
        while (i < len && in[i] != '\n')
            i++;
        int had_lf = i < len;
        size_t content_len = i - start;
        if (had_lf && content_len > 0 && in[i - 1] == '\r')
            content_len--;
        if (content_len > 0 && in[start] == '.')
            res_append(r, ".", 1);
        res_append(r, in + start, content_len);
        res_append(r, "\r\n", 2);
        r->octets += content_len + 2;
        if (top >= 0) {
            if (!in_body) {
                if (had_lf && content_len == 0) {
                    in_body = 1;
                    if (top == 0)
                        cut = 1;
                }
            } else if (had_lf) {
                /* An unterminated last line goes out but does not make the
                 * converter "done": it never saw that line end. */
                body_lines++;
                if (body_lines == top)
                    cut = 1;
            }
        }
        start = had_lf ? i + 1 : len;
    }
    r->done = cut;
    res_append(r, ".\r\n", 3);
}

/* ---- comparison helpers --------------------------------------------------- */

static const char *current_case = "(random)";

static void print_escaped(const char *label, const char *p, size_t n)
{
    fprintf(stderr, "%s (%zu): \"", label, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r')
            fputs("\\r", stderr);
        else if (ch == '\n')
            fputs("\\n", stderr);
        else if (ch == '\\')
            fputs("\\\\", stderr);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(stderr, "\\x%02x", ch);
        else
            fputc(ch, stderr);
    }
    fputs("\"\n", stderr);
}

static void expect_same(const char *what, const char *in, size_t in_len, long top,
                        const struct result *want, const struct result *got)
{
    if (want->len == got->len && (want->len == 0 || memcmp(want->data, got->data, got->len) == 0) &&
        want->octets == got->octets && want->done == got->done)
        return;
    fprintf(stderr, "mismatch in %s (%s), top=%ld\n", current_case, what, top);
    print_escaped("input", in, in_len);
    print_escaped("want", want->data, want->len);
    print_escaped("got", got->data, got->len);
    fprintf(stderr, "octets want %llu got %llu, done want %d got %d\n",
            (unsigned long long)want->octets, (unsigned long long)got->octets, want->done,
            got->done);
    fail();
}

/* Runs every chunking of `in` and compares each with `want`. */
static void check_all_splits(const char *in, size_t len, long top, const struct result *want)
{
    struct result got;

    convert_split(in, len, top, NULL, 0, &got);
    expect_same("whole", in, len, top, want, &got);
    res_free(&got);

    convert_bytewise(in, len, top, &got);
    expect_same("byte at a time", in, len, top, want, &got);
    res_free(&got);

    for (size_t a = 0; a <= len; a++) {
        size_t cuts[2] = {a, 0};
        convert_split(in, len, top, cuts, 1, &got);
        expect_same("two chunks", in, len, top, want, &got);
        res_free(&got);
        for (size_t b = a; b <= len; b++) {
            cuts[1] = b;
            convert_split(in, len, top, cuts, 2, &got);
            expect_same("three chunks", in, len, top, want, &got);
            res_free(&got);
        }
    }
}

/* ---- table ------------------------------------------------------------------ */

#define S(x) x, sizeof(x) - 1

struct conv_case {
    const char *name;
    const char *in;
    size_t in_len;
    long top;
    const char *out;
    size_t out_len;
    uint64_t octets;
    int done;
};

static const struct conv_case cases[] = {
    {"empty message", S(""), -1, S(".\r\n"), 0, 0},
    {"just LF", S("\n"), -1, S("\r\n.\r\n"), 2, 0},
    {"just CRLF", S("\r\n"), -1, S("\r\n.\r\n"), 2, 0},
    {"LF lines", S("a\nbc\n"), -1, S("a\r\nbc\r\n.\r\n"), 7, 0},
    {"CRLF lines", S("a\r\nbc\r\n"), -1, S("a\r\nbc\r\n.\r\n"), 7, 0},
    {"mixed line ends", S("a\r\nb\nc\r\n\n"), -1, S("a\r\nb\r\nc\r\n\r\n.\r\n"), 11, 0},
    {"empty lines", S("\n\n\r\n\n"), -1, S("\r\n\r\n\r\n\r\n.\r\n"), 8, 0},
    {"dot lines", S(".a\nb.\n.b\r\n"), -1, S("..a\r\nb.\r\n..b\r\n.\r\n"), 12, 0},
    {"lone dot", S("a\n.\nb\n"), -1, S("a\r\n..\r\nb\r\n.\r\n"), 9, 0},
    {"lone dot first", S(".\r\n"), -1, S("..\r\n.\r\n"), 3, 0},
    {"lone dot last, no newline", S("a\n."), -1, S("a\r\n..\r\n.\r\n"), 6, 0},
    {"double dots", S("..\r\n...\n"), -1, S("...\r\n....\r\n.\r\n"), 9, 0},
    {"dot not at line start", S("a.b\n a.\n"), -1, S("a.b\r\n a.\r\n.\r\n"), 10, 0},
    {"last line without newline", S("a\nbc"), -1, S("a\r\nbc\r\n.\r\n"), 7, 0},
    {"single line without newline", S("x"), -1, S("x\r\n.\r\n"), 3, 0},
    {"CR alone mid-line", S("a\rb\n"), -1, S("a\rb\r\n.\r\n"), 5, 0},
    {"CR alone at end", S("a\r"), -1, S("a\r\r\n.\r\n"), 4, 0},
    {"only a CR", S("\r"), -1, S("\r\r\n.\r\n"), 3, 0},
    {"CR CR LF", S("a\r\r\n"), -1, S("a\r\r\n.\r\n"), 4, 0},
    {"CR then dot: no stuffing", S("\r.\n"), -1, S("\r.\r\n.\r\n"), 4, 0},
    {"CR CR LF then LF", S("\r\r\n\n"), -1, S("\r\r\n\r\n.\r\n"), 5, 0},
    {"NUL bytes", S("a\0b\n\0\n\0"), -1, S("a\0b\r\n\0\r\n\0\r\n.\r\n"), 11, 0},
    {"high bytes", S("\xff\xfe\n\x80"), -1, S("\xff\xfe\r\n\x80\r\n.\r\n"), 7, 0},

    /* RETR ignores the header structure. */
    {"RETR with header", S("A: b\n\nbody\n"), -1, S("A: b\r\n\r\nbody\r\n.\r\n"), 14, 0},

    /* TOP */
    {"TOP 0 with folded header", S("Subject: x\n y\n\tz\nFrom: a\n\nbody1\nbody2\n"), 0,
     S("Subject: x\r\n y\r\n\tz\r\nFrom: a\r\n\r\n.\r\n"), 31, 1},
    {"TOP 1 with folded header", S("Subject: x\n y\n\tz\nFrom: a\n\nbody1\nbody2\n"), 1,
     S("Subject: x\r\n y\r\n\tz\r\nFrom: a\r\n\r\nbody1\r\n.\r\n"), 38, 1},
    {"TOP 2 exactly the body", S("H: v\r\n\r\nb1\r\nb2\r\n"), 2, S("H: v\r\n\r\nb1\r\nb2\r\n.\r\n"),
     16, 1},
    {"TOP n larger than body", S("H: v\n\nb1\nb2\n"), 5, S("H: v\r\n\r\nb1\r\nb2\r\n.\r\n"), 16, 0},
    {"TOP n larger, last line unterminated", S("H: v\n\nb1\nb2"), 5,
     S("H: v\r\n\r\nb1\r\nb2\r\n.\r\n"), 16, 0},
    {"TOP cut before unterminated line", S("H\n\nb1\nb2\nb3"), 2, S("H\r\n\r\nb1\r\nb2\r\n.\r\n"),
     13, 1},
    {"TOP with no blank line", S("A: b\nC: d\n"), 0, S("A: b\r\nC: d\r\n.\r\n"), 12, 0},
    {"TOP with no blank line, unterminated", S("A: b\nC: d"), 3, S("A: b\r\nC: d\r\n.\r\n"), 12, 0},
    {"TOP counts blank body lines", S("H\n\n\n\nx\n"), 2, S("H\r\n\r\n\r\n\r\n.\r\n"), 9, 1},
    {"TOP dot-stuffs header and body", S(".A: b\r\n\r\n.x\r\n.\r\ny\r\n"), 2,
     S("..A: b\r\n\r\n..x\r\n..\r\n.\r\n"), 16, 1},
    {"TOP: CR CR LF is not blank", S("A\r\n\r\r\nB\r\n\r\nC\r\n"), 0,
     S("A\r\n\r\r\nB\r\n\r\n.\r\n"), 11, 1},
    {"TOP: CR then text is not blank", S("A\n\rx\n\nC\n"), 0, S("A\r\n\rx\r\n\r\n.\r\n"), 9, 1},
    {"TOP 0 of just LF", S("\n"), 0, S("\r\n.\r\n"), 2, 1},
    {"TOP 0 of just CRLF then body", S("\r\nbody\r\n"), 0, S("\r\n.\r\n"), 2, 1},
    {"TOP 1 of just CRLF then body", S("\r\nbody\r\nmore"), 1, S("\r\nbody\r\n.\r\n"), 8, 1},
    {"TOP of empty message", S(""), 3, S(".\r\n"), 0, 0},
    {"TOP with NUL in header", S("A\0\n\n\0\n\0\n"), 1, S("A\0\r\n\r\n\0\r\n.\r\n"), 9, 1},
};

static void table_expected(const struct conv_case *tc, struct result *want)
{
    memset(want, 0, sizeof(*want));
    res_append(want, tc->out, tc->out_len);
    want->octets = tc->octets;
    want->done = tc->done;
}

static void test_table_all_splits(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct conv_case *tc = &cases[i];
        struct result want;
        table_expected(tc, &want);
        current_case = tc->name;
        check_all_splits(tc->in, tc->in_len, tc->top, &want);
        res_free(&want);
    }
}

/* The reference must agree with the hand-written table before it is trusted
 * for the random test. */
static void test_reference_matches_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct conv_case *tc = &cases[i];
        struct result want, got;
        table_expected(tc, &want);
        reference(tc->in, tc->in_len, tc->top, &got);
        current_case = tc->name;
        expect_same("reference", tc->in, tc->in_len, tc->top, &want, &got);
        res_free(&want);
        res_free(&got);
    }
}

/* After the TOP cut, further input is ignored and produces nothing. */
static void test_top_ignores_input_after_cut(void **state)
{
    (void)state;
    struct conv c;
    char out[CONV_OUT_MAX(16)];
    conv_init(&c, 0);
    size_t n = conv_feed(&c, "H\n\nbody\n", 8, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "H\r\n\r\n", 5);
    assert_true(conv_done(&c));
    assert_int_equal(conv_feed(&c, ".more\n", 6, out), 0);
    assert_int_equal(conv_feed(&c, "x", 1, out), 0);
    assert_int_equal(conv_finish(&c, out), 3);
    assert_memory_equal(out, ".\r\n", 3);
    assert_int_equal(c.octets, 5);
}

/* The worst case really is two output bytes per input byte. */
static void test_worst_case_size(void **state)
{
    (void)state;
    static const char in[] = "\n.\n.\n.\n.";
    size_t len = sizeof(in) - 1;
    struct conv c;
    char out[CONV_OUT_MAX(sizeof(in))];
    conv_init(&c, -1);
    size_t n = conv_feed(&c, in, len, out);
    assert_int_equal(n, 2 * len);
    assert_memory_equal(out, "\r\n..\r\n..\r\n..\r\n..", n);
}

/* A long run of ordinary bytes across many chunk sizes (the memcpy path). */
static void test_long_lines(void **state)
{
    (void)state;
    size_t len = 5000;
    char *in = malloc(len);
    assert_non_null(in);
    for (size_t i = 0; i < len; i++)
        in[i] = (char)('a' + i % 26);
    for (size_t i = 700; i < len; i += 997)
        in[i] = '\n';
    in[1500] = '\r';
    in[1501] = '\n';
    in[1502] = '.';
    struct result want, got;
    reference(in, len, -1, &want);
    static const size_t chunk_sizes[] = {1, 2, 3, 7, 64, 333, 4096, 5000};
    for (size_t k = 0; k < sizeof(chunk_sizes) / sizeof(chunk_sizes[0]); k++) {
        size_t cuts[5000];
        size_t ncuts = 0;
        for (size_t pos = chunk_sizes[k]; pos < len; pos += chunk_sizes[k])
            cuts[ncuts++] = pos;
        convert_split(in, len, -1, cuts, ncuts, &got);
        expect_same("long lines", in, len, -1, &want, &got);
        res_free(&got);
    }
    res_free(&want);
    free(in);
}

/* ---- random property test ---------------------------------------------- */

static uint64_t rng_state;

static uint32_t rng_next(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void test_random_against_reference(void **state)
{
    (void)state;
    static const char alphabet[] = {'a', '.', '\r', '\n'};
    static const long tops[] = {-1, -1, 0, 1, 2, 3, 7};
    uint64_t seed = 0x5eed0c0417ULL;
    const char *env = getenv("CONV_TEST_SEED");
    if (env != NULL)
        seed = strtoull(env, NULL, 0);
    rng_state = seed ? seed : 1;
    current_case = "(random)";
    fprintf(stderr, "[ seed ] %#llx\n", (unsigned long long)seed);

    char in[48];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rng_next() % (sizeof(in) + 1);
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng_next() % 4];
        long top = tops[rng_next() % (sizeof(tops) / sizeof(tops[0]))];

        struct result want, got;
        reference(in, len, top, &want);

        convert_split(in, len, top, NULL, 0, &got);
        expect_same("random whole", in, len, top, &want, &got);
        res_free(&got);

        convert_bytewise(in, len, top, &got);
        expect_same("random byte at a time", in, len, top, &want, &got);
        res_free(&got);

        for (size_t a = 0; a <= len; a++) {
            size_t cut = a;
            convert_split(in, len, top, &cut, 1, &got);
            expect_same("random two chunks", in, len, top, &want, &got);
            res_free(&got);
        }

        /* A few random three- to five-chunk splits. */
        for (int k = 0; k < 4; k++) {
            size_t cuts[4];
            size_t ncuts = 2 + rng_next() % 3;
            for (size_t i = 0; i < ncuts; i++)
                cuts[i] = len ? rng_next() % (len + 1) : 0;
            for (size_t i = 1; i < ncuts; i++)
                for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                    size_t t = cuts[j];
                    cuts[j] = cuts[j - 1];
                    cuts[j - 1] = t;
                }
            convert_split(in, len, top, cuts, ncuts, &got);
            expect_same("random multi chunks", in, len, top, &want, &got);
            res_free(&got);
        }
        res_free(&want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_matches_table),
        cmocka_unit_test(test_table_all_splits),
        cmocka_unit_test(test_top_ignores_input_after_cut),
        cmocka_unit_test(test_worst_case_size),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
