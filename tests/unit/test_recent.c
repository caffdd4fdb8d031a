/*
 * Tests for lib/recent.c (the ring of recent webhook failures), for
 * admin/history.c (the ring of periodic samples) and for how /status and
 * /history render them (admin/render_json.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "admin/history.h"
#include "admin/render.h"
#include "lib/recent.h"

static void add_failure(int i, const char *reason)
{
    struct recent_failure f;

    memset(&f, 0, sizeof f);
    f.at_ms = 1700000000000LL + i * 1000;
    f.event = i % METRICS_EVENTS;
    f.http_status = 500 + i;
    f.duration = 0.25;
    snprintf(f.reason, sizeof f.reason, "%s", reason);
    snprintf(f.session, sizeof f.session, "s%d", i);
    recent_add(&f);
}

static void test_ring_keeps_the_newest(void **state)
{
    struct recent_failure out[RECENT_MAX + 5];
    size_t n;

    (void)state;
    recent_clear();
    assert_int_equal(recent_copy(out, RECENT_MAX), 0);
    for (int i = 0; i < 3; i++)
        add_failure(i, "r");
    n = recent_copy(out, RECENT_MAX);
    assert_int_equal(n, 3);
    assert_string_equal(out[0].session, "s2"); /* newest first */
    assert_string_equal(out[2].session, "s0");
    for (int i = 3; i < RECENT_MAX + 20; i++)
        add_failure(i, "r");
    n = recent_copy(out, RECENT_MAX + 5);
    assert_int_equal(n, RECENT_MAX);
    assert_int_equal(out[0].http_status, 500 + RECENT_MAX + 19);
    assert_int_equal(out[RECENT_MAX - 1].http_status, 500 + 20);
    assert_int_equal(recent_copy(out, 2), 2);
    assert_int_equal(out[1].http_status, 500 + RECENT_MAX + 18);
    recent_clear();
}

static void test_text_is_cleaned(void **state)
{
    struct recent_failure f, out[1];

    (void)state;
    recent_clear();
    memset(&f, 0, sizeof f);
    snprintf(f.reason, sizeof f.reason, "line\r\nbreak\x01\x7f\xc3\xa9");
    snprintf(f.transport, sizeof f.transport, "tab\there");
    recent_add(&f);
    assert_int_equal(recent_copy(out, 1), 1);
    assert_string_equal(out[0].reason, "line??break????");
    assert_string_equal(out[0].transport, "tab?here");
    /* A field filled to its end, without a NUL: kept cut and terminated. */
    memset(f.reason, 'x', sizeof f.reason);
    recent_add(&f);
    recent_copy(out, 1);
    assert_int_equal(strlen(out[0].reason), RECENT_TEXT - 1);
    recent_clear();
}

static void test_status_lists_failures(void **state)
{
    struct adm_snapshot snap;
    json_error_t err;
    json_t *root, *arr, *f;
    char *doc;

    (void)state;
    memset(&snap, 0, sizeof snap);
    snap.v.version = "1";
    snap.failures[0] = (struct recent_failure){.at_ms = 1700000001500LL,
                                               .event = 3,
                                               .http_status = 401,
                                               .reason = "retrieve: refused",
                                               .duration = 0.125,
                                               .session = "abc"};
    snap.failures[1] = (struct recent_failure){.at_ms = 1700000000000LL,
                                               .event = 0,
                                               .transport = "Timeout was reached",
                                               .reason = "Timeout was reached",
                                               .duration = 5};
    snap.n_failures = 2;
    doc = render_status_json(&snap);
    assert_non_null(doc);
    root = json_loads(doc, 0, &err);
    assert_non_null(root);
    arr = json_object_get(root, "recent_failures");
    assert_int_equal(json_array_size(arr), 2);
    f = json_array_get(arr, 0);
    assert_int_equal(json_integer_value(json_object_get(f, "time")), 1700000001);
    assert_string_equal(json_string_value(json_object_get(f, "event")), metrics_event_names[3]);
    assert_int_equal(json_integer_value(json_object_get(f, "http_status")), 401);
    assert_true(json_is_null(json_object_get(f, "transport_error")));
    assert_true(json_real_value(json_object_get(f, "duration_seconds")) == 0.125);
    assert_string_equal(json_string_value(json_object_get(f, "session")), "abc");
    assert_string_equal(json_string_value(json_object_get(f, "reason")), "retrieve: refused");
    f = json_array_get(arr, 1);
    assert_true(json_is_null(json_object_get(f, "http_status")));
    assert_true(json_is_null(json_object_get(f, "session")));
    assert_string_equal(json_string_value(json_object_get(f, "transport_error")),
                        "Timeout was reached");
    json_decref(root);
    free(doc);
}

static void snapshot_at(struct adm_snapshot *snap, unsigned long calls, unsigned long fast)
{
    memset(snap, 0, sizeof *snap);
    snap->m.connections_active = 2;
    snap->m.sessions_transaction = 1;
    snap->m.commands_total = calls * 3;
    snap->m.webhook_calls[0] = calls;
    snap->m.webhook_errors[1][0] = 1;
    snap->m.webhook_latency[0].bucket[0] = fast;         /* <= 1 ms */
    snap->m.webhook_latency[1].bucket[5] = calls - fast; /* 25..50 ms */
    snap->m.bytes_out = calls * 100;
}

static void test_history_samples_every_interval(void **state)
{
    struct adm_sample out[HISTORY_N];
    struct adm_snapshot snap;
    long long t = 1700000000000LL;

    (void)state;
    history_clear();
    snapshot_at(&snap, 10, 10);
    assert_int_equal(history_offer(&snap, t), 1);        /* the first is always due */
    assert_int_equal(history_offer(&snap, t + 4999), 0); /* too soon */
    assert_int_equal(history_offer(&snap, t + 5000), 1);
    assert_int_equal(history_copy(out), 2);
    assert_int_equal(out[0].t_ms, t);
    assert_int_equal(out[1].t_ms, t + 5000);
    assert_int_equal(out[1].connections_active, 2);
    assert_int_equal(out[1].webhook_calls, 10);
    assert_int_equal(out[1].webhook_errors, 1);
    assert_int_equal(out[1].latency[0], 10);
    for (int i = 2; i < HISTORY_N + 7; i++)
        assert_int_equal(history_offer(&snap, t + i * 5000LL), 1);
    assert_int_equal(history_copy(out), HISTORY_N);
    assert_int_equal(out[0].t_ms, t + 7 * 5000LL); /* oldest first, the first 7 gone */
    assert_int_equal(out[HISTORY_N - 1].t_ms, t + (HISTORY_N + 6) * 5000LL);
    history_clear();
    assert_int_equal(history_copy(out), 0);
}

static void test_history_document(void **state)
{
    struct adm_sample out[HISTORY_N];
    struct adm_snapshot snap;
    json_error_t err;
    json_t *root, *samples, *s1;
    char *doc;

    (void)state;
    history_clear();
    snapshot_at(&snap, 10, 10);
    history_offer(&snap, 1000);
    snapshot_at(&snap, 30, 10); /* 20 more calls, all between 25 and 50 ms */
    history_offer(&snap, 6000);
    doc = render_history_json(out, history_copy(out), 7000);
    assert_non_null(doc);
    root = json_loads(doc, 0, &err);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "now_ms")), 7000);
    assert_int_equal(json_integer_value(json_object_get(root, "interval_seconds")),
                     HISTORY_INTERVAL_S);
    assert_int_equal(json_integer_value(json_object_get(root, "keep_seconds")), HISTORY_KEEP_S);
    assert_int_equal(json_array_size(json_object_get(root, "bucket_bounds")), METRICS_BUCKETS);
    samples = json_object_get(root, "samples");
    assert_int_equal(json_array_size(samples), 2);
    assert_true(json_is_null(json_object_get(json_array_get(samples, 0), "latency_p50")));
    s1 = json_array_get(samples, 1);
    assert_int_equal(json_integer_value(json_object_get(s1, "t_ms")), 6000);
    assert_int_equal(json_integer_value(json_object_get(s1, "webhook_calls")), 30);
    assert_int_equal(json_integer_value(json_object_get(s1, "commands")), 90);
    assert_int_equal(json_integer_value(json_object_get(s1, "bytes_out")), 3000);
    assert_int_equal(json_integer_value(json_object_get(s1, "sessions_transaction")), 1);
    assert_int_equal(json_array_size(json_object_get(s1, "latency_buckets")), METRICS_BUCKETS + 1);
    /* The interval's calls were all in the 25..50 ms bucket. */
    double p50 = json_real_value(json_object_get(s1, "latency_p50"));
    assert_true(p50 > 0.025 && p50 <= 0.05);
    json_decref(root);
    free(doc);
    history_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_keeps_the_newest),
        cmocka_unit_test(test_text_is_cleaned),
        cmocka_unit_test(test_status_lists_failures),
        cmocka_unit_test(test_history_samples_every_interval),
        cmocka_unit_test(test_history_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
