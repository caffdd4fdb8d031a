/*
 * Unit tests for webhook/wh_content: the JSON retrieve reply decoded as it
 * streams. Every case is fed whole, one byte at a time, in pieces of 2, 3
 * and 7 bytes, and in pieces of random sizes, and checked twice: against the
 * bytes (or the refusal) written in the table, and against
 * wh_json_parse_content() on the whole body, which the decoder must match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webhook/wh.h"
#include "webhook/wh_content.h"
#include "webhook/wh_json.h"

/* ------------------------------------------------------------- helpers */

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* How a body is cut: whole (step 0, seed 0), in pieces of `step` bytes, or
 * (seed != 0) in pieces of 1..step bytes drawn from the seed. */
struct split {
    size_t step;
    uint32_t seed;
};

static const struct split splits[] = {
    {0, 0}, {1, 0}, {2, 0}, {3, 0}, {7, 0}, {5, 1}, {5, 2}, {13, 3}, {40, 4}, {300, 5},
};

/* Decodes body as `sp` cuts it. Returns the decoder's verdict; the bytes put
 * out are in *out (malloc'd, len + 1 bytes: never more out than in). Checks
 * on the way what every call promises. */
static int decode(const char *body, size_t len, struct split sp, char **out, size_t *out_len)
{
    struct wh_content d;
    char piece_out[WH_CONTENT_OUT_MAX(300)];
    size_t at = 0, n, got;
    uint32_t seed = sp.seed;
    int rc = 0;

    *out = malloc(len + 1);
    assert_non_null(*out);
    *out_len = 0;
    wh_content_init(&d);
    while (at < len && rc == 0) {
        n = sp.step == 0 ? len - at : sp.seed ? 1 + rnd(&seed) % sp.step : sp.step;
        if (n > len - at)
            n = len - at;
        if (n > 300)
            n = 300;
        int was_started = wh_content_started(&d);
        rc = wh_content_feed(&d, body + at, n, piece_out, &got);
        assert_true(got <= WH_CONTENT_OUT_MAX(n));
        assert_true(got <= len - *out_len);
        assert_true(got == 0 || wh_content_started(&d));
        assert_true(!was_started || wh_content_started(&d));
        memcpy(*out + *out_len, piece_out, got);
        *out_len += got;
        at += n;
    }
    if (rc == 0) {
        rc = wh_content_finish(&d, piece_out, &got);
        assert_true(got <= WH_CONTENT_OUT_MAX(0));
        memcpy(*out + *out_len, piece_out, got);
        *out_len += got;
    }
    if (rc < 0)
        assert_string_not_equal(wh_content_error(&d), "no error");
    wh_content_free(&d);
    wh_content_free(&d);
    return rc;
}

/* The decoder gives `want` (want_len bytes; NULL: refuses) for every split,
 * and so does wh_json_parse_content() on the whole body. */
static void expect(const char *body, size_t len, const char *want, size_t want_len)
{
    const char *err;
    size_t oracle_len;
    char *oracle = wh_json_parse_content(body, len, &oracle_len, &err);

    if ((oracle != NULL) != (want != NULL))
        fail_msg("table and jansson disagree on %.*s: %s", (int)len, body, err ? err : "accepted");
    if (oracle && (oracle_len != want_len || memcmp(oracle, want, want_len) != 0))
        fail_msg("table and jansson decode %.*s differently", (int)len, body);
    for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
        char *got;
        size_t got_len;
        int rc = decode(body, len, splits[i], &got, &got_len);
        if (want && rc != 0)
            fail_msg("refused %.*s (split %zu/%u)", (int)len, body, splits[i].step,
                     (unsigned)splits[i].seed);
        if (!want && rc == 0)
            fail_msg("accepted %.*s (split %zu/%u)", (int)len, body, splits[i].step,
                     (unsigned)splits[i].seed);
        if (want && (got_len != want_len || memcmp(got, want, want_len) != 0))
            fail_msg("%.*s gave %zu bytes \"%.*s\" (split %zu/%u)", (int)len, body, got_len,
                     (int)got_len, got, splits[i].step, (unsigned)splits[i].seed);
        free(got);
    }
    free(oracle);
}

struct content_case {
    const char *body;
    size_t len;
    const char *want; /* NULL: refused */
    size_t want_len;
};

#define OK(b, w)                                                                                   \
    {                                                                                              \
        b, sizeof(b) - 1, w, sizeof(w) - 1                                                         \
    }
#define BAD(b)                                                                                     \
    {                                                                                              \
        b, sizeof(b) - 1, NULL, 0                                                                  \
    }

/* ---------------------------------------------------------- the tables */

static const struct content_case valid[] = {
    OK("{\"content\":\"hello\"}", "hello"),
    OK("{\"content\":\"\"}", ""),
    OK("{\"content\":\"Subject: hi\\r\\n\\r\\n.body\\n\"}", "Subject: hi\r\n\r\n.body\n"),
    /* the short escapes */
    OK("{\"content\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t"),
    OK("{\"content\":\"a/b\"}", "a/b"),
    /* \u: one, two and three bytes of UTF-8, hex in either case */
    OK("{\"content\":\"\\u0041\\u00e9\\u00E9\\u20AC\\u07ff\\u0800\\uFFFF\\u007f\"}",
       "A\xc3\xa9\xc3\xa9\xe2\x82\xac\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\x7f"),
    /* surrogate pairs: the lowest, a common one, the highest */
    OK("{\"content\":\"\\uD800\\uDC00\"}", "\xf0\x90\x80\x80"),
    OK("{\"content\":\"x\\ud83d\\ude00y\"}", "x\xf0\x9f\x98\x80y"),
    OK("{\"content\":\"\\udbff\\udfff\"}", "\xf4\x8f\xbf\xbf"),
    /* NUL through \u0000 (JSON_ALLOW_NUL) */
    OK("{\"content\":\"a\\u0000b\\u0000\"}", "a\0b\0"),
    /* raw UTF-8: the edges of each length, DEL */
    OK("{\"content\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"}",
       "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"),
    OK("{\"content\":\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f caf\xc3\xa9\"}",
       "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f caf\xc3\xa9"),
    /* members before and after, nested, some with the same names deeper */
    OK("{\"a\":{\"b\":[1,2,{\"content\":\"no\"}]},\"content\":\"x\",\"z\":[{\"content\":1}]}", "x"),
    OK("{\"n\":-0.5e-3,\"t\":true,\"f\":false,\"z\":null,\"e\":{},\"l\":[],\"content\":\"a\","
       "\"s\":\"content\",\"k\":\"\\u0000\\ud83d\\ude00\"}",
       "a"),
    OK("{\"content\":null,\"content_base64\":\"aGk=\"}", "hi"),
    OK("{\"content_base64\":null,\"content\":\"x\"}", "x"),
    /* keys written with escapes */
    OK("{\"cont\\u0065nt\":\"x\"}", "x"),
    OK("{\"\\u0063ontent_base64\":\"eA==\"}", "x"),
    OK("{\"content\\u005fbase64\":\"eA==\"}", "x"),
    OK("{\"content_\\u0062ase64\":\"eA==\"}", "x"),
    /* keys near the names */
    OK("{\"contents\":\"no\",\"Content\":\"no\",\"content_base6\":1,\"content\":\"y\"}", "y"),
    OK("{\"content_base64x\":\"no\",\"conten\":\"no\",\"content\":\"y\"}", "y"),
    /* whitespace between tokens, in runs */
    OK(" \r\n\t{ \"content\" :\t\"a\" ,\n \"x\" : [ 1 , { } ] }\n \r", "a"),
    /* depth: the root and 15 more containers */
    OK("{\"content\":\"a\",\"d\":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}", "a"),
    /* base64 */
    OK("{\"content_base64\":\"aGVsbG8=\"}", "hello"),
    OK("{\"content_base64\":\"YQ==\"}", "a"),
    OK("{\"content_base64\":\"YWI=\"}", "ab"),
    OK("{\"content_base64\":\"YWJj\"}", "abc"),
    OK("{\"content_base64\":\"AP8AgA==\"}", "\x00\xff\x00\x80"),
    OK("{\"content_base64\":\"+/+/\"}", "\xfb\xff\xbf"),
    OK("{\"content_base64\":\"\"}", ""),
    OK("{\"content_base64\":\"   \"}", ""),
    OK("{\"content_base64\":\"\\r\\n\\t \"}", ""),
    /* whitespace anywhere, raw spaces or escaped CR LF tab */
    OK("{\"content_base64\":\"aGVs\\r\\nbG8h\\n\"}", "hello!"),
    OK("{\"content_base64\":\" a G V s b G 8 = \"}", "hello"),
    OK("{\"content_base64\":\"YQ=\\t=\"}", "a"),
    OK("{\"content_base64\":\"Y\\nW\\rI\\t=\"}", "ab"),
    /* characters and '=' written as escapes */
    OK("{\"content_base64\":\"\\u0059\\u0051\\u003d\\u003D\"}", "a"),
    OK("{\"content_base64\":\"\\/\\/\\/\\/\"}", "\xff\xff\xff"),
    /* the bits left over in the last character are ignored */
    OK("{\"content_base64\":\"QR==\"}", "A"),
    OK("{\"content_base64\":\"QUJ=\"}", "AB"),
    OK("{\"content_base64\":\"YWJjZA==\",\"after\":[\"content\"]}", "abcd"),
};

static const struct content_case invalid[] = {
    /* not an object, empty, truncated, trailing bytes */
    BAD(""),
    BAD("  \r\n"),
    BAD("[]"),
    BAD("[{\"content\":\"a\"}]"),
    BAD("\"content\""),
    BAD("null"),
    BAD("\xef\xbb\xbf{\"content\":\"a\"}"),
    BAD("{"),
    BAD("{\"content\""),
    BAD("{\"content\":"),
    BAD("{\"content\":\"a"),
    BAD("{\"content\":\"a\""),
    BAD("{\"content\":\"a\\"),
    BAD("{\"content\":\"\\u00"),
    BAD("{\"content\":\"\\ud83d"),
    BAD("{\"content\":\"\\ud83d\\"),
    BAD("{\"content\":\"\\ud83d\\ude0"),
    BAD("{\"content\":\"a\"}x"),
    BAD("{\"content\":\"a\"} {}"),
    BAD("{\"content\":\"a\"}}"),
    BAD("{\"content\":\"a\"}\0"),
    /* the grammar of the root object */
    BAD("{\"content\" \"a\"}"),
    BAD("{\"content\"::\"a\"}"),
    BAD("{,\"content\":\"a\"}"),
    BAD("{\"content\":\"a\",}"),
    BAD("{\"content\":\"a\"\"x\":1}"),
    BAD("{\"a\":1 2,\"content\":\"b\"}"),
    BAD("{\"content\":\"a\"]"),
    BAD("{\"content\":\"a\",\"b\"}"),
    BAD("{\"a\":[1}],\"content\":\"x\"}"),
    BAD("{\"a\":tru,\"content\":\"x\"}"),
    BAD("{\"a\":01,\"content\":\"x\"}"),
    BAD("{\"a\":1.,\"content\":\"x\"}"),
    BAD("{\"a\":'x',\"content\":\"x\"}"),
    BAD("{\"content\":\"x\",\"a\":[1 2]}"),
    /* neither, both, not a string */
    BAD("{}"),
    BAD("{\"other\":\"a\"}"),
    BAD("{\"content\":null}"),
    BAD("{\"content\":null,\"content_base64\":null}"),
    BAD("{\"content\":\"a\",\"content_base64\":\"YQ==\"}"),
    BAD("{\"content_base64\":\"YQ==\",\"content\":\"a\"}"),
    BAD("{\"content\":\"a\",\"cont\\u0065nt_base64\":\"YQ==\"}"),
    BAD("{\"content\":1,\"content_base64\":\"YQ==\"}"),
    BAD("{\"content\":1}"),
    BAD("{\"content\":[]}"),
    BAD("{\"content\":[\"a\"]}"),
    BAD("{\"content\":{}}"),
    BAD("{\"content\":true}"),
    BAD("{\"content_base64\":5}"),
    BAD("{\"content_base64\":{\"content\":\"a\"}}"),
    /* duplicate keys, before or after the content, or deeper */
    BAD("{\"content\":\"a\",\"content\":\"b\"}"),
    BAD("{\"content\":\"a\",\"cont\\u0065nt\":\"b\"}"),
    BAD("{\"content\":1,\"content\":\"a\"}"),
    BAD("{\"content\":\"a\",\"content\":null}"),
    BAD("{\"x\":1,\"x\":2,\"content\":\"a\"}"),
    BAD("{\"content\":\"a\",\"x\":1,\"x\":2}"),
    BAD("{\"content\":\"a\",\"o\":{\"k\":1,\"k\":2}}"),
    /* too deep: the root and 16 more */
    BAD("{\"content\":\"a\",\"d\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}"),
    BAD("{\"d\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]],\"content\":\"a\"}"),
    /* raw control bytes in strings, content or other */
    BAD("{\"content\":\"a\nb\"}"),
    BAD("{\"content\":\"a\tb\"}"),
    BAD("{\"content\":\"a\rb\"}"),
    BAD("{\"content\":\"\x01\"}"),
    BAD("{\"content\":\"\x1f\"}"),
    BAD("{\"content\":\"a\0b\"}"),
    BAD("{\"content\":\"a\",\"x\":\"\n\"}"),
    BAD("{\"content_base64\":\"YQ=\t=\"}"),
    /* escapes jansson does not know */
    BAD("{\"content\":\"\\x41\"}"),
    BAD("{\"content\":\"\\U0041\"}"),
    BAD("{\"content\":\"\\u00G0\"}"),
    BAD("{\"content\":\"\\u 041\"}"),
    BAD("{\"content\":\"\\'\"}"),
    BAD("{\"content\":\"\\0\"}"),
    BAD("{\"content\":\"\\a\"}"),
    BAD("{\"content\":\"\\\xc3\xa9\"}"),
    BAD("{\"cont\\ent\":\"a\"}"),
    /* surrogates: lone, unpaired, in the wrong order, in keys */
    BAD("{\"content\":\"\\ud800\"}"),
    BAD("{\"content\":\"\\ud800x\"}"),
    BAD("{\"content\":\"\\ud800\\u0041\"}"),
    BAD("{\"content\":\"\\ud800\\ud800\"}"),
    BAD("{\"content\":\"\\ud800\\n\"}"),
    BAD("{\"content\":\"\\ud800\\\\udc00\"}"),
    BAD("{\"content\":\"\\udc00\"}"),
    BAD("{\"content\":\"\\udfff\\ud800\"}"),
    BAD("{\"content_base64\":\"\\udc00YQ==\"}"),
    BAD("{\"content\":\"a\",\"\\ud800\":1}"),
    BAD("{\"content\":\"a\",\"x\":\"\\udc00\"}"),
    /* raw bytes that are not UTF-8 */
    BAD("{\"content\":\"\xc3\"}"),
    BAD("{\"content\":\"\xc3\x28\"}"),
    BAD("{\"content\":\"\xc0\xaf\"}"),
    BAD("{\"content\":\"\xc1\xbf\"}"),
    BAD("{\"content\":\"\xe0\x80\xaf\"}"),
    BAD("{\"content\":\"\xe0\x9f\xbf\"}"),
    BAD("{\"content\":\"\xed\xa0\x80\"}"),
    BAD("{\"content\":\"\xed\xbf\xbf\"}"),
    BAD("{\"content\":\"\xf0\x80\x80\x80\"}"),
    BAD("{\"content\":\"\xf0\x8f\xbf\xbf\"}"),
    BAD("{\"content\":\"\xf4\x90\x80\x80\"}"),
    BAD("{\"content\":\"\xf5\x80\x80\x80\"}"),
    BAD("{\"content\":\"\xf8\x88\x80\x80\x80\"}"),
    BAD("{\"content\":\"\xff\"}"),
    BAD("{\"content\":\"\x80\"}"),
    BAD("{\"content\":\"\xf0\x9f\x98\"}"),
    BAD("{\"content\":\"\xe2\x82\"}"),
    BAD("{\"content\":\"\xe2\"\x82\xac}"),
    BAD("{\"content\":\"a\",\"x\":\"\xff\"}"),
    BAD("{\"content\":\"a\",\"\xc3\x28\":1}"),
    BAD("{\"content\":\"a\",\"x\":[\xc3\xa9]}"),
    BAD("{\"content\":\"a\",\xc3\xa9:1}"),
    BAD("{\"content\":\"a\"}\xc3\xa9"),
    BAD("\xc3\xa9{\"content\":\"a\"}"),
    /* NUL in a key (jansson refuses it even with JSON_ALLOW_NUL) */
    BAD("{\"a\\u0000\":1,\"content\":\"x\"}"),
    BAD("{\"content\\u0000\":\"x\"}"),
    /* base64 that util_b64_decode() refuses */
    BAD("{\"content_base64\":\"YQ\"}"),
    BAD("{\"content_base64\":\"YQ=\"}"),
    BAD("{\"content_base64\":\"Y\"}"),
    BAD("{\"content_base64\":\"YWJjZA=\"}"),
    BAD("{\"content_base64\":\"Y===\"}"),
    BAD("{\"content_base64\":\"====\"}"),
    BAD("{\"content_base64\":\"=YWJ\"}"),
    BAD("{\"content_base64\":\"YQ==YQ==\"}"),
    BAD("{\"content_base64\":\"YQ==\\u003d\"}"),
    BAD("{\"content_base64\":\"YQ=a\"}"),
    BAD("{\"content_base64\":\"Y=Q=\"}"),
    BAD("{\"content_base64\":\"YWI=YWI=\"}"),
    BAD("{\"content_base64\":\"a$bc\"}"),
    BAD("{\"content_base64\":\"-_-_\"}"),
    BAD("{\"content_base64\":\"YQ==\\u0000\"}"),
    BAD("{\"content_base64\":\"\\u0000YWJj\"}"),
    BAD("{\"content_base64\":\"YW\\u00e9Jj\"}"),
    BAD("{\"content_base64\":\"YW\xc3\xa9Jj\"}"),
    BAD("{\"content_base64\":\"YWJj\\fYWJj\"}"),
    BAD("{\"content_base64\":\"YWJj\\bYWJj\"}"),
    BAD("{\"content_base64\":\"YQ==\",\"content_base64\":\"YQ==\"}"),
};

static void test_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
        expect(valid[i].body, valid[i].len, valid[i].want, valid[i].want_len);
}

static void test_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        expect(invalid[i].body, invalid[i].len, NULL, 0);
}

/* Every prefix and every one-byte deletion of every valid case: whatever
 * jansson says, the decoder says, whole and one byte at a time. */
static void test_cut_and_damaged(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        const char *b = valid[i].body;
        size_t len = valid[i].len;
        char *copy = malloc(len);
        assert_non_null(copy);
        for (size_t k = 0; k < len; k++) {
            for (int pass = 0; pass < 2; pass++) {
                size_t n = k;
                const char *err;
                size_t want_len;
                if (pass == 1) { /* byte k deleted */
                    memcpy(copy, b, k);
                    memcpy(copy + k, b + k + 1, len - k - 1);
                    n = len - 1;
                } else {
                    memcpy(copy, b, k);
                }
                char *want = wh_json_parse_content(copy, n, &want_len, &err);
                for (size_t s = 0; s < 2; s++) {
                    char *got;
                    size_t got_len;
                    int rc = decode(copy, n, splits[s], &got, &got_len);
                    if ((rc == 0) != (want != NULL))
                        fail_msg("%.*s: decoder %d, jansson %s", (int)n, copy, rc,
                                 err ? err : "accepts");
                    if (want)
                        assert_true(got_len == want_len && memcmp(got, want, want_len) == 0);
                    free(got);
                }
                free(want);
            }
        }
        free(copy);
    }
}

/* ---------------------------------------------------------- behaviour */

/* Feeds a NUL-terminated piece; returns the verdict, bytes out in *got. */
static int feed_str(struct wh_content *d, const char *s, char *out, size_t *got)
{
    return wh_content_feed(d, s, strlen(s), out, got);
}

/* A surrogate pair cut at every place: nothing comes out until its last
 * hex digit, then the four bytes at once (the most one call adds to what
 * it takes in). */
static void test_surrogate_pair_split(void **state)
{
    (void)state;
    static const char head[] = "{\"content\":\"", pair[] = "\\ud83d\\ude00", tail[] = "\"}";
    for (size_t cut = 0; cut <= strlen(pair); cut++) {
        struct wh_content d;
        char out[WH_CONTENT_OUT_MAX(16)];
        size_t got;
        char a[16] = "", b[16] = "";
        memcpy(a, pair, cut);
        memcpy(b, pair + cut, strlen(pair) - cut);
        wh_content_init(&d);
        assert_int_equal(feed_str(&d, head, out, &got), 0);
        assert_int_equal(got, 0);
        assert_true(wh_content_started(&d));
        assert_int_equal(feed_str(&d, a, out, &got), 0);
        if (cut < strlen(pair)) {
            assert_int_equal(got, 0);
            assert_int_equal(feed_str(&d, b, out, &got), 0);
        }
        assert_int_equal(got, 4);
        assert_memory_equal(out, "\xf0\x9f\x98\x80", 4);
        assert_int_equal(feed_str(&d, tail, out, &got), 0);
        assert_int_equal(got, 0);
        assert_int_equal(wh_content_finish(&d, out, &got), 0);
        wh_content_free(&d);
    }

    /* The last hex digit alone: one byte in, four out. */
    struct wh_content d;
    char out[WH_CONTENT_OUT_MAX(1)];
    size_t got;
    wh_content_init(&d);
    assert_int_equal(feed_str(&d, "{\"content\":\"\\ud83d\\ude0", out, &got), 0);
    assert_int_equal(wh_content_feed(&d, "0", 1, out, &got), 0);
    assert_int_equal(got, 4);
    assert_true(got <= WH_CONTENT_OUT_MAX(1));
    wh_content_free(&d);
}

/* started: only once the value of the content is reached. */
static void test_started(void **state)
{
    (void)state;
    struct wh_content d;
    char out[WH_CONTENT_OUT_MAX(64)];
    size_t got;

    wh_content_init(&d);
    assert_false(wh_content_started(&d));
    assert_int_equal(feed_str(&d, " {\"x\":\"content\",\"content\":null,", out, &got), 0);
    assert_false(wh_content_started(&d));
    assert_int_equal(feed_str(&d, "\"n\":{\"content\":\"a\"},\"content_base64\" : ", out, &got), 0);
    assert_false(wh_content_started(&d));
    assert_int_equal(feed_str(&d, "\"", out, &got), 0);
    assert_true(wh_content_started(&d));
    assert_int_equal(feed_str(&d, "YWJj", out, &got), 0);
    assert_int_equal(got, 3);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(feed_str(&d, "\"}", out, &got), 0);
    assert_int_equal(wh_content_finish(&d, out, &got), 0);
    assert_int_equal(got, 0);
    assert_string_equal(wh_content_error(&d), "no error");
    wh_content_free(&d);
}

/* What no valid reply contains is refused at once, before anything is put
 * out when it comes before the content; -1 stays. */
static void test_early_refusal(void **state)
{
    (void)state;
    static const char *const early[] = {
        "[",
        "x",
        "{\"a\" 1",
        "{\"a\":1 2",
        "{\"content\":\"\x01",
        "{\"content\":\"\\q",
        "{\"content\":\"\\udc00",
        "{\"content\":\"\xc0",
        "{\"content_base64\":\"Y=",
        "{\"content_base64\":\"$",
        "{\"x\":\"\xff",
        "{\"x\":[[[[[[[[[[[[[[[[",
        "{}x",
    };
    for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
        struct wh_content d;
        char out[WH_CONTENT_OUT_MAX(64)];
        size_t got = 99;
        wh_content_init(&d);
        if (feed_str(&d, early[i], out, &got) != -1)
            fail_msg("not refused at once: %s", early[i]);
        assert_int_equal(got, 0);
        assert_int_equal(feed_str(&d, "\"}", out, &got), -1);
        assert_int_equal(got, 0);
        assert_int_equal(wh_content_finish(&d, out, &got), -1);
        wh_content_free(&d);
    }

    struct wh_content d;
    char out[WH_CONTENT_OUT_MAX(64)];
    size_t got;
    wh_content_init(&d);
    assert_int_equal(feed_str(&d, "{\"content\":\"a\\x", out, &got), -1);
    assert_string_equal(wh_content_error(&d), "invalid JSON: invalid escape");
    wh_content_free(&d);
    assert_string_equal(wh_content_error(&d), "no error");
}

/* What shows only later: the decoded bytes are out already, and the finish
 * says no (the gateway then closes the connection). */
static void test_late_refusal(void **state)
{
    (void)state;
    static const char *const late[] = {
        "{\"content\":\"hello\",\"content\":\"again\"}",
        "{\"content\":\"hello\",\"content_base64\":\"\"}",
        "{\"content\":\"hello\",\"x\":{\"a\":[1}}}",
        "{\"content\":\"hello\",\"x\":tru}",
        "{\"content\":\"hello\"",
        "{\"content_base64\":\"aGVsbG8h\",\"content\":null,\"content\":null}",
        "{\"content_base64\":\"aGVsbG8hYQ\"}",
    };
    for (size_t i = 0; i < sizeof(late) / sizeof(late[0]); i++) {
        struct wh_content d;
        char out[WH_CONTENT_OUT_MAX(80)];
        size_t got;
        wh_content_init(&d);
        if (feed_str(&d, late[i], out, &got) != 0)
            fail_msg("refused at once: %s", late[i]);
        assert_true(got >= 5);
        assert_memory_equal(out, "hello", 5);
        assert_int_equal(wh_content_finish(&d, out, &got), -1);
        wh_content_free(&d);
    }
}

/* ------------------------------------------------------------- limits */

/* A body of `len` bytes: head, then `fill` repeated, then tail. */
static char *make_body(const char *head, const char *fill, size_t len, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail), f = strlen(fill);
    char *b = malloc(len);
    assert_non_null(b);
    assert_true(len >= h + t);
    memcpy(b, head, h);
    for (size_t i = h; i < len - t; i++)
        b[i] = fill[(i - h) % f];
    memcpy(b + len - t, tail, t);
    return b;
}

/* The members beside the content: 1 MB in the skeleton, runs of
 * whitespace counted once; jansson alone has no such limit. */
static void test_skeleton_limit(void **state)
{
    (void)state;
    struct split sp = {16384, 0};
    size_t len = WH_BODY_MAX + 64, got_len, want_len;
    const char *err;
    char *got;

    /* Over the limit: refused, where wh_json_parse_content() accepts. */
    char *b = make_body("{\"content\":\"a\",\"pad\":\"", "x", len, "\"}");
    char *want = wh_json_parse_content(b, len, &want_len, &err);
    assert_non_null(want);
    free(want);
    assert_int_equal(decode(b, len, sp, &got, &got_len), -1);
    free(got);
    free(b);

    /* Just under it, with a content three times as large: accepted. */
    len = WH_BODY_MAX - 40 + 3 * WH_BODY_MAX;
    b = make_body("{\"pad\":\"", "y", len, "\"}");
    memcpy(b + WH_BODY_MAX - 40, "\",\"content\":\"", 13);
    assert_int_equal(decode(b, len, sp, &got, &got_len), 0);
    assert_int_equal(got_len, 3 * WH_BODY_MAX - 15);
    free(got);
    free(b);

    /* 3 MB of whitespace between the tokens: each run counts once. */
    len = 3 * WH_BODY_MAX;
    b = make_body("{ \"content\" : \"a\" ,", " \r\n\t", len, "\"x\" : 1 } ");
    assert_int_equal(decode(b, len, sp, &got, &got_len), 0);
    assert_int_equal(got_len, 1);
    free(got);
    free(b);
}

/* 20 MB of content and of content_base64, in 16 KB pieces: the right bytes
 * out, and the decoder holds nothing but a skeleton of a few bytes. */
static void test_large_bounded(void **state)
{
    (void)state;
    static const char text[] = "Line of text \\u00e9\\ud83d\\ude00 caf\xc3\xa9\\r\\n";
    static const char text_dec[] = "Line of text \xc3\xa9\xf0\x9f\x98\x80 caf\xc3\xa9\r\n";
    static const char b64[] = "TGluZSBvZiBiaW5hcnkgAP8A";
    static const char b64_dec[] = "Line of binary \x00\xff\x00";
    static const struct {
        const char *head, *fill, *dec;
        size_t fill_len, dec_len;
    } kinds[] = {
        {"{\"content\":\"", text, text_dec, sizeof(text) - 1, sizeof(text_dec) - 1},
        {"{\"content_base64\":\"", b64, b64_dec, sizeof(b64) - 1, sizeof(b64_dec) - 1},
    };
    const size_t piece = 16384;
    char *out = malloc(WH_CONTENT_OUT_MAX(piece));
    assert_non_null(out);

    for (size_t k = 0; k < 2; k++) {
        struct wh_content d;
        size_t reps = 20 * 1024 * 1024 / kinds[k].fill_len, got, total = 0;
        size_t at = strlen(kinds[k].head), len = at + reps * kinds[k].fill_len + 2;
        char *b = malloc(len);
        assert_non_null(b);
        memcpy(b, kinds[k].head, at);
        for (size_t r = 0; r < reps; r++, at += kinds[k].fill_len)
            memcpy(b + at, kinds[k].fill, kinds[k].fill_len);
        memcpy(b + at, "\"}", 2);

        wh_content_init(&d);
        for (size_t i = 0; i < len; i += piece) {
            size_t n = len - i < piece ? len - i : piece;
            assert_int_equal(wh_content_feed(&d, b + i, n, out, &got), 0);
            for (size_t j = 0; j < got; j++)
                if (out[j] != kinds[k].dec[(total + j) % kinds[k].dec_len])
                    fail_msg("byte %zu differs", total + j);
            total += got;
            assert_true(d.skel.cap <= 256);
        }
        assert_int_equal(wh_content_finish(&d, out, &got), 0);
        assert_int_equal(total + got, reps * kinds[k].dec_len);
        wh_content_free(&d);
        free(b);
    }
    free(out);
}

/* util_b64_decode() refuses more than INT_MAX bytes out; so does the
 * decoder (the count is set near the limit rather than fed 2.8 GB). */
static void test_base64_int_max(void **state)
{
    (void)state;
    struct wh_content d;
    char out[WH_CONTENT_OUT_MAX(32)];
    size_t got;

    wh_content_init(&d);
    assert_int_equal(feed_str(&d, "{\"content_base64\":\"", out, &got), 0);
    d.b64_chars = (uint64_t)0x7fffffff / 3 * 4 - 8;
    assert_int_equal(feed_str(&d, "YWJj", out, &got), 0);
    assert_int_equal(feed_str(&d, "YWJj", out, &got), 0);
    assert_int_equal(feed_str(&d, "YWJj", out, &got), -1);
    wh_content_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_cut_and_damaged), cmocka_unit_test(test_surrogate_pair_split),
        cmocka_unit_test(test_started),         cmocka_unit_test(test_early_refusal),
        cmocka_unit_test(test_late_refusal),    cmocka_unit_test(test_skeleton_limit),
        cmocka_unit_test(test_large_bounded),   cmocka_unit_test(test_base64_int_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
