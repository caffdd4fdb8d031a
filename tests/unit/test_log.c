/*
 * Tests for gateway/log.c: fd 2 is pointed at a temporary file while log_kv()
 * runs, and the lines that arrive are compared exactly after the timestamp
 * (whose shape is checked separately). JSON lines are also parsed with
 * jansson, which insists on valid UTF-8, so escaping and truncation are
 * checked for validity and not just for the expected bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "lib/log.h"

#define LINE_MAX_BYTES 4096

/* ---- capturing fd 2 -------------------------------------------------------- */

static int saved_fd = -1;
static int cap_fd = -1;

static void capture_begin(void)
{
    char path[] = "/tmp/test_log_XXXXXX";

    cap_fd = mkstemp(path);
    assert_true(cap_fd >= 0);
    unlink(path);
    assert_int_equal(fcntl(cap_fd, F_SETFL, O_APPEND), 0);
    saved_fd = dup(2);
    assert_true(saved_fd >= 0);
    assert_int_equal(dup2(cap_fd, 2), 2);
}

/* Restores fd 2 and returns what was written (malloc'd). */
static char *capture_end(void)
{
    off_t len;
    char *buf;

    dup2(saved_fd, 2);
    close(saved_fd);
    len = lseek(cap_fd, 0, SEEK_END);
    assert_true(len >= 0);
    buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(pread(cap_fd, buf, (size_t)len, 0), len);
    close(cap_fd);
    return buf;
}

/* Checks the timestamp at p (2026-11-27T08:00:00.123Z) and returns the byte after. */
static const char *skip_ts(const char *p)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? (p[i] < '0' || p[i] > '9') : p[i] != shape[i])
            fail_msg("bad timestamp: %.30s", p);
    }
    return p + sizeof shape - 1;
}

/* The line without its timestamp: "ts=…Z rest" -> "rest", {"ts":"…", -> rest. */
static void assert_line(const char *line, const char *want_after_ts)
{
    const char *p;

    if (strncmp(line, "ts=", 3) == 0) {
        p = skip_ts(line + 3);
    } else {
        assert_memory_equal(line, "{\"ts\":\"", 7);
        p = skip_ts(line + 7);
    }
    if (strcmp(p, want_after_ts) != 0)
        fail_msg("got:  %s\nwant: %s", p, want_after_ts);
}

static json_t *parse_json_line(const char *line)
{
    json_error_t e;
    size_t n = strlen(line);
    json_t *j;

    assert_true(n > 0 && line[n - 1] == '\n');
    j = json_loadb(line, n - 1, 0, &e);
    if (!j)
        fail_msg("invalid JSON (%s at %d): %s", e.text, e.position, line);
    return j;
}

/* ---- logfmt ------------------------------------------------------------------ */

static void test_logfmt_line(void **state)
{
    char *out;

    (void)state;
    log_init(0, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, "abc", "login ok", "user=%s n=%d", "alice", 3);
    log_kv(LOG_WARN, NULL, "no session", NULL);
    out = capture_end();
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_line(out, " level=info session=abc msg=\"login ok\" user=alice n=3");
    assert_line(second, " level=warn msg=\"no session\"\n");
    free(out);
}

static const struct {
    const char *in, *logfmt, *json;
} values[] = {
    {"alice", "alice", "\"alice\""},
    {"", "\"\"", "\"\""},
    {NULL, "\"\"", "null"},
    {"a b", "\"a b\"", "\"a b\""},
    {"a=b", "\"a=b\"", "\"a=b\""},
    {"say \"hi\"", "\"say \\\"hi\\\"\"", "\"say \\\"hi\\\"\""},
    {"back\\slash", "\"back\\\\slash\"", "\"back\\\\slash\""},
    {"line\nbreak", "\"line\\x0abreak\"", "\"line\\u000abreak\""},
    {"tab\t\x01\x7f", "\"tab\\x09\\x01\\x7f\"", "\"tab\\u0009\\u0001\\u007f\""},
    {"caf\xc3\xa9", "\"caf\\xc3\\xa9\"", "\"caf\xc3\xa9\""},
    {"\xf0\x9f\x98\x80", "\"\\xf0\\x9f\\x98\\x80\"", "\"\xf0\x9f\x98\x80\""},
    {"\xff", "\"\\xff\"", "\"\\u00ff\""},
    {"x\xc3", "\"x\\xc3\"", "\"x\\u00c3\""},                              /* cut sequence */
    {"\xed\xa0\x80", "\"\\xed\\xa0\\x80\"", "\"\\u00ed\\u00a0\\u0080\""}, /* surrogate */
    {"\xe0\x80\x80", "\"\\xe0\\x80\\x80\"", "\"\\u00e0\\u0080\\u0080\""}, /* overlong */
    {"\xc0\xaf", "\"\\xc0\\xaf\"", "\"\\u00c0\\u00af\""},                 /* overlong */
    {"\xf4\x90\x80\x80", "\"\\xf4\\x90\\x80\\x80\"", "\"\\u00f4\\u0090\\u0080\\u0080\""},
    {"path/to.file-1_2:3", "path/to.file-1_2:3", "\"path/to.file-1_2:3\""},
};

static void test_value_escaping(void **state)
{
    (void)state;
    for (int json = 0; json <= 1; json++) {
        log_init(json, LOG_INFO);
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
            char want[256];
            char *out;
            capture_begin();
            log_kv(LOG_INFO, NULL, "m", "v=%s", values[i].in);
            out = capture_end();
            if (json)
                snprintf(want, sizeof want, "\",\"level\":\"info\",\"msg\":\"m\",\"v\":%s}\n",
                         values[i].json);
            else
                snprintf(want, sizeof want, " level=info msg=m v=%s\n", values[i].logfmt);
            assert_line(out, want);
            if (json)
                json_decref(parse_json_line(out));
            free(out);
        }
    }
}

static void test_numbers(void **state)
{
    char *out;

    (void)state;
    for (int json = 0; json <= 1; json++) {
        log_init(json, LOG_DEBUG);
        capture_begin();
        log_kv(LOG_DEBUG, "s1", "nums",
               "a=%d b=%u c=%ld d=%lu e=%lld f=%llu g=%zu h=%f i=%.1f j=%.3f mode=plain", -1,
               4000000000u, -2L, 3UL, -4000000000000LL, 9000000000000000000ULL, (size_t)42, 1.5,
               2.25, 0.0005);
        out = capture_end();
        if (json) {
            assert_line(out, "\",\"level\":\"debug\",\"session\":\"s1\",\"msg\":\"nums\",\"a\":-1,"
                             "\"b\":4000000000,\"c\":-2,\"d\":3,\"e\":-4000000000000,"
                             "\"f\":9000000000000000000,\"g\":42,\"h\":1.500000,\"i\":2.2,"
                             "\"j\":0.001,\"mode\":\"plain\"}\n");
            json_t *j = parse_json_line(out);
            assert_int_equal(json_integer_value(json_object_get(j, "a")), -1);
            assert_true(json_is_real(json_object_get(j, "h")));
            json_decref(j);
        } else {
            assert_line(out, " level=debug session=s1 msg=nums a=-1 b=4000000000 c=-2 d=3 "
                             "e=-4000000000000 f=9000000000000000000 g=42 h=1.500000 i=2.2 "
                             "j=0.001 mode=plain\n");
        }
        free(out);
    }
}

static void test_json_line(void **state)
{
    char *out;
    json_t *j;

    (void)state;
    log_init(1, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, "abc", "login ok", "user=%s n=%d", "alice", 3);
    out = capture_end();
    assert_line(out, "\",\"level\":\"info\",\"session\":\"abc\",\"msg\":\"login ok\",\"user\":"
                     "\"alice\",\"n\":3}\n");
    j = parse_json_line(out);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "session")), "abc");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 3);
    json_decref(j);
    free(out);
}

static void test_json_non_finite(void **state)
{
    char *out;
    double zero = 0.0;

    (void)state;
    log_init(1, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, NULL, "m", "a=%f b=%.3f", 1.0 / zero, zero / zero);
    out = capture_end();
    assert_line(out, "\",\"level\":\"info\",\"msg\":\"m\",\"a\":null,\"b\":null}\n");
    free(out);
}

static void test_msg_and_session_escaped(void **state)
{
    char *out;

    (void)state;
    log_init(0, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, "s d", "a \"quoted\" msg", NULL);
    log_kv(LOG_INFO, NULL, NULL, NULL);
    out = capture_end();
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_line(out, " level=info session=\"s d\" msg=\"a \\\"quoted\\\" msg\"");
    assert_line(second, " level=info msg=\"\"\n");
    free(out);

    log_init(1, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, "s\"1", "bye\n", "k\"ey=%d", 1);
    out = capture_end();
    assert_line(out, "\",\"level\":\"info\",\"session\":\"s\\\"1\",\"msg\":\"bye\\u000a\","
                     "\"k\\\"ey\":1}\n");
    json_decref(parse_json_line(out));
    free(out);
}

static void test_bad_format(void **state)
{
    char *out;

    (void)state;
    log_init(0, LOG_INFO);
    capture_begin();
    log_kv(LOG_INFO, NULL, "m", "a=%d b=%x c=%d", 1, 2u, 3);
    log_kv(LOG_INFO, NULL, "m", "noequals");
    out = capture_end();
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_line(out, " level=info msg=m a=1 log_bad_format=\"a=%d b=%x c=%d\"");
    assert_line(second, " level=info msg=m log_bad_format=noequals\n");
    free(out);
}

/* ---- levels -------------------------------------------------------------------- */

static void test_levels(void **state)
{
    char *out;

    (void)state;
    log_init(0, LOG_WARN);
    assert_true(log_enabled(LOG_ERROR));
    assert_true(log_enabled(LOG_WARN));
    assert_false(log_enabled(LOG_INFO));
    assert_false(log_enabled(LOG_DEBUG));
    assert_false(log_enabled(-1));
    assert_false(log_enabled(99));
    capture_begin();
    log_kv(LOG_INFO, NULL, "hidden", NULL);
    log_kv(LOG_DEBUG, NULL, "hidden", NULL);
    log_kv(LOG_ERROR, NULL, "shown", NULL);
    log_kv(99, NULL, "hidden", NULL);
    out = capture_end();
    assert_line(out, " level=error msg=shown\n");
    free(out);

    log_init(0, LOG_DEBUG);
    assert_true(log_enabled(LOG_DEBUG));
    log_init(0, LOG_INFO);
    assert_false(log_enabled(LOG_DEBUG));
}

static void test_level_parse(void **state)
{
    static const struct {
        const char *s;
        int level;
    } cases[] = {
        {"error", LOG_ERROR}, {"warn", LOG_WARN}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
        {"DEBUG", LOG_DEBUG}, {"warning", -1},    {"", -1},           {"trace", -1},
        {"info ", -1},        {NULL, -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(log_level_parse(cases[i].s), cases[i].level);
}

/* ---- truncation ---------------------------------------------------------------- */

static void check_truncated(const char *out, int json)
{
    size_t n = strlen(out);

    assert_true(n <= LINE_MAX_BYTES);
    assert_true(n > LINE_MAX_BYTES - 64);
    assert_int_equal(out[n - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + n - 1);
    if (json) {
        json_t *j = parse_json_line(out);
        assert_true(json_is_true(json_object_get(j, "truncated")));
        json_decref(j);
        assert_memory_equal(out + n - 19, ",\"truncated\":true}\n", 19);
    } else {
        assert_memory_equal(out + n - 16, " truncated=true\n", 16);
    }
}

static void test_truncation(void **state)
{
    static const char *const fills[] = {"a", "a b", "\xc3\xa9", "\x01", "\""};

    (void)state;
    for (int json = 0; json <= 1; json++) {
        log_init(json, LOG_INFO);
        for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
            char big[10000] = "";
            size_t fl = strlen(fills[f]);
            for (size_t n = 0; n + fl < sizeof big; n += fl)
                memcpy(big + n, fills[f], fl);
            for (size_t shift = 0; shift < 8; shift++) {
                char *out;
                capture_begin();
                log_kv(LOG_INFO, "sess", "m", "pad=%s v=%s after=%d", "xxxxxxx" + shift, big, 1);
                out = capture_end();
                check_truncated(out, json);
                free(out);
            }
        }
        /* many small fields: the cut falls on a field boundary */
        char *out;
        capture_begin();
        for (int i = 0; i < 1; i++)
            log_kv(LOG_INFO, NULL, "m", "a=%.3f b=%s c=%lld d=%s", 1.0, "x", 5LL,
                   "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        out = capture_end();
        assert_null(strstr(out, "truncated"));
        free(out);
    }
}

static void test_errno_kept(void **state)
{
    char *out;

    (void)state;
    log_init(0, LOG_INFO);
    capture_begin();
    errno = EAGAIN;
    log_kv(LOG_INFO, NULL, "m", NULL);
    int kept = errno;
    out = capture_end();
    free(out);
    assert_int_equal(kept, EAGAIN);
}

/* ---- threads ------------------------------------------------------------------- */

#define THREADS 8
#define LINES 300

static void *log_thread(void *arg)
{
    char val[2000];
    int id = (int)(intptr_t)arg;

    memset(val, 'a' + id, sizeof val - 1);
    val[sizeof val - 1] = '\0';
    for (int i = 0; i < LINES; i++)
        log_kv(LOG_INFO, "t", "line", "thread=%d i=%d v=%s", id, i, val + (i % 1000));
    return NULL;
}

static void test_threads(void **state)
{
    pthread_t th[THREADS];
    char *out, *line;
    int count = 0;

    (void)state;
    log_init(1, LOG_INFO);
    capture_begin();
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    out = capture_end();
    for (line = out; *line; count++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        char save = nl[1];
        nl[1] = '\0';
        json_t *j = parse_json_line(line);
        int id = (int)json_integer_value(json_object_get(j, "thread"));
        const char *v = json_string_value(json_object_get(j, "v"));
        assert_non_null(v);
        for (const char *p = v; *p; p++)
            assert_int_equal(*p, 'a' + id);
        json_decref(j);
        nl[1] = save;
        line = nl + 1;
    }
    assert_int_equal(count, THREADS * LINES);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt_line),     cmocka_unit_test(test_value_escaping),
        cmocka_unit_test(test_numbers),         cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_json_non_finite), cmocka_unit_test(test_msg_and_session_escaped),
        cmocka_unit_test(test_bad_format),      cmocka_unit_test(test_levels),
        cmocka_unit_test(test_level_parse),     cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_errno_kept),      cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
