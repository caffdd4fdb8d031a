/*
 * Unit tests for lib/util: strict base64, control-byte scans, UTF-8
 * sequences and strings, wiping secrets, and the clock conversions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lib/util.h"

/* ---- base64 ------------------------------------------------------------- */

static void test_base64(void **state)
{
    (void)state;
    size_t n;
    unsigned char *p;

    p = util_b64_decode("aGVsbG8=", 8, &n);
    assert_non_null(p);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(p[5], 0);
    free(p);

    p = util_b64_decode(" aGVs\r\nbG8h\n", 12, &n);
    assert_non_null(p);
    assert_int_equal(n, 6);
    assert_memory_equal(p, "hello!", 6);
    free(p);

    p = util_b64_decode("aA==", 4, &n);
    assert_non_null(p);
    assert_int_equal(n, 1);
    assert_int_equal(p[0], 'h');
    free(p);

    p = util_b64_decode("", 0, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    free(p);

    p = util_b64_decode("AP8A/w==", 8, &n);
    assert_non_null(p);
    assert_int_equal(n, 4);
    assert_memory_equal(p, "\x00\xff\x00\xff", 4);
    free(p);

    static const char *const bad[] = {"aGVsbG8",  "aGVsbG8==", "a===",         "====", "aG=sbG8=",
                                      "aGVs bG8", "aGV$bG8=",  "aGVsbG8=aGVs", "aA=A"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 99;
        p = util_b64_decode(bad[i], strlen(bad[i]), &n);
        if (p)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(n, 0);
    }
}

/* Only in_len bytes are read; NULL is an empty input only with length 0. */
static void test_base64_bounds(void **state)
{
    (void)state;
    size_t n;
    unsigned char *p;

    p = util_b64_decode("aGVsbG8=garbage", 8, &n);
    assert_non_null(p);
    assert_int_equal(n, 5);
    free(p);
    p = util_b64_decode(NULL, 0, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    free(p);
    assert_null(util_b64_decode(NULL, 4, &n));
    /* Whitespace only is empty. */
    p = util_b64_decode(" \r\n\t", 4, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    free(p);
}

/* ---- control bytes ------------------------------------------------------ */

#define PRINTABLE "plain text, 100% ~printable~"
#define HIGH "caf\xc3\xa9 \x80\xff"

static void test_has_ctl(void **state)
{
    (void)state;
    char s[3] = {'a', 0, 'b'};
    int c;

    assert_false(util_has_ctl("", 0));
    assert_false(util_has_ctl(PRINTABLE, strlen(PRINTABLE)));
    assert_false(util_has_ctl(HIGH, strlen(HIGH))); /* bytes from 0x80 on are not C0 */
    for (c = 0; c < 0x20; c++) {
        s[1] = (char)c;
        if (!util_has_ctl(s, 3))
            fail_msg("0x%02x not seen", c);
    }
    s[1] = 0x7f;
    assert_true(util_has_ctl(s, 3));
    s[1] = ' ';
    assert_false(util_has_ctl(s, 3));
    /* Only n bytes are looked at. */
    assert_false(util_has_ctl("ab\r\n", 2));
    assert_true(util_has_ctl("ab\r\n", 3));
}

/* ---- UTF-8 -------------------------------------------------------------- */

static void test_utf8_len(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n, len;
    } t[] = {
        {"a", 1, 1},
        {"\x7f", 1, 1},
        {"\xc2\x80", 2, 2},         /* U+0080, the first two-byte one */
        {"\xdf\xbf", 2, 2},         /* U+07FF */
        {"\xe0\xa0\x80", 3, 3},     /* U+0800 */
        {"\xef\xbf\xbd", 3, 3},     /* U+FFFD */
        {"\xf0\x90\x80\x80", 4, 4}, /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
        {"\xe2\x82\xac+", 4, 3},    /* only the first sequence counts */
        {"", 0, 0},
        {"\xc3\xa9", 1, 0}, /* cut short by n */
        {"\xf0\x9f\x98\x80", 3, 0},
        {"\x80", 1, 0},     /* a lone continuation byte */
        {"\xc0\x80", 2, 0}, /* overlong NUL */
        {"\xc1\xbf", 2, 0},
        {"\xed\xa0\x80", 3, 0},     /* a surrogate */
        {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
        {"\xf8\x88\x80\x80\x80", 5, 0},
        {"\xe2\x28\xa1", 3, 0}, /* second byte not a continuation */
        {"\xe2\x82\x28", 3, 0}, /* third byte not a continuation */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (util_utf8_len(t[i].s, t[i].n) != t[i].len)
            fail_msg("case %zu: %zu, expected %zu", i, util_utf8_len(t[i].s, t[i].n), t[i].len);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
    } t[] = {
        {"", 1},
        {"plain ascii", 1},
        {"\xc3\xa9", 1},         /* U+00E9 */
        {"\xe2\x82\xac", 1},     /* U+20AC */
        {"\xef\xbf\xbf", 1},     /* U+FFFF */
        {"\xf0\x9f\x98\x80", 1}, /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
        {"\xed\x9f\xbf", 1},     /* U+D7FF */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x80\xaf", 0},     /* overlong */
        {"\xe0\x9f\xbf", 0},     /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", 0}, /* overlong */
        {"\xf0\x8f\xbf\xbf", 0}, /* overlong U+FFFF */
        {"\xed\xa0\x80", 0},     /* U+D800 */
        {"\xed\xbf\xbf", 0},     /* U+DFFF */
        {"\xf4\x90\x80\x80", 0}, /* U+110000 */
        {"\xf5\x80\x80\x80", 0},
        {"\xff", 0},
        {"\x80", 0},
        {"a\xc3", 0}, /* truncated */
        {"\xe2\x82", 0},
        {"\xc3\x28", 0}, /* bad continuation */
        {"\xf0\x9f\x98", 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (util_utf8_valid(t[i].s, strlen(t[i].s)) != t[i].ok)
            fail_msg("case %zu: expected %d", i, t[i].ok);
    assert_true(util_utf8_valid("a\0b", 3));
    assert_true(util_utf8_valid(NULL, 0));
    assert_false(util_utf8_valid("\xc3\xa9", 1));
}

/* A valid string is valid in every prefix that ends between two
 * characters, and in no prefix that ends inside one. */
static void test_utf8_prefixes(void **state)
{
    (void)state;
    static const char s[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    static const int boundary[] = {1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1};
    size_t n;

    assert_int_equal(sizeof(boundary) / sizeof(boundary[0]), strlen(s) + 1);
    for (n = 0; n <= strlen(s); n++)
        if (util_utf8_valid(s, n) != boundary[n])
            fail_msg("prefix of %zu bytes: expected %d", n, boundary[n]);
}

/* ---- secrets ------------------------------------------------------------ */

static void test_wipe(void **state)
{
    (void)state;
    char buf[16];
    static const char zero[16];
    char *secret;

    memset(buf, 'x', sizeof(buf));
    util_wipe(buf + 4, 8);
    assert_memory_equal(buf + 4, zero, 8);
    assert_int_equal(buf[3], 'x');
    assert_int_equal(buf[12], 'x');
    util_wipe(NULL, 8);
    util_wipe(buf, 0);
    assert_int_equal(buf[0], 'x');

    secret = strdup("hunter2");
    assert_non_null(secret);
    util_free_secret(&secret); /* freed: ASan would see a leak or a double free */
    assert_null(secret);
    util_free_secret(&secret);
    assert_null(secret);
}

/* ---- clocks ------------------------------------------------------------- */

static void test_tv(void **state)
{
    (void)state;
    static const struct {
        double s;
        long sec, usec;
    } t[] = {
        {0, 0, 0},        {1.5, 1, 500000}, {2.25, 2, 250000}, {30, 30, 0},
        {0.5, 0, 500000}, {-3, 0, 0},       {1e-7, 0, 0},      {86400.75, 86400, 750000},
    };
    struct timeval tv;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tv = util_tv(t[i].s);
        if (tv.tv_sec != t[i].sec || tv.tv_usec != t[i].usec)
            fail_msg("util_tv(%g) = %ld.%06ld", t[i].s, (long)tv.tv_sec, (long)tv.tv_usec);
    }
    /* Microseconds are cut, never rounded up into a whole second. */
    tv = util_tv(0.99999999999);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 999999);
    /* Not a number: no time at all. */
    tv = util_tv(NAN);
    assert_int_equal(tv.tv_sec, 0);
    assert_int_equal(tv.tv_usec, 0);
}

static void test_tv_ms(void **state)
{
    (void)state;
    static const struct {
        long ms, sec, usec;
    } t[] = {{0, 0, 0},    {1, 0, 1000},      {999, 0, 999000},
             {1000, 1, 0}, {1500, 1, 500000}, {-5, 0, 0}};
    struct timeval tv;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tv = util_tv_ms(t[i].ms);
        if (tv.tv_sec != t[i].sec || tv.tv_usec != t[i].usec)
            fail_msg("util_tv_ms(%ld) = %ld.%06ld", t[i].ms, (long)tv.tv_sec, (long)tv.tv_usec);
    }
}

static void test_ts_add_ms(void **state)
{
    (void)state;
    static const struct {
        long sec, nsec, ms, want_sec, want_nsec;
    } t[] = {
        {5, 0, 0, 5, 0},         {5, 0, 1, 5, 1000000},        {5, 998999999, 1, 5, 999999999},
        {5, 999000000, 1, 6, 0}, {5, 999999999, 1, 6, 999999}, {5, 500000000, 2750, 8, 250000000}};
    struct timespec ts;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ts.tv_sec = t[i].sec;
        ts.tv_nsec = t[i].nsec;
        util_ts_add_ms(&ts, t[i].ms);
        if (ts.tv_sec != t[i].want_sec || ts.tv_nsec != t[i].want_nsec)
            fail_msg("%ld.%09ld + %ld ms = %ld.%09ld", t[i].sec, t[i].nsec, t[i].ms,
                     (long)ts.tv_sec, (long)ts.tv_nsec);
    }
}

static void test_clocks(void **state)
{
    (void)state;
    double a = util_mono(), b = util_mono();
    long long ms = util_real_ms();
    long long now = (long long)time(NULL) * 1000;

    assert_true(a > 0);
    assert_true(b >= a);
    assert_true(ms >= now - 1000 && ms <= now + 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),     cmocka_unit_test(test_base64_bounds),
        cmocka_unit_test(test_has_ctl),    cmocka_unit_test(test_utf8_len),
        cmocka_unit_test(test_utf8_valid), cmocka_unit_test(test_utf8_prefixes),
        cmocka_unit_test(test_wipe),       cmocka_unit_test(test_tv),
        cmocka_unit_test(test_tv_ms),      cmocka_unit_test(test_ts_add_ms),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
