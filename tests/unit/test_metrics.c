/*
 * Tests for lib/metrics.c and the renderings drawn from its table: the rows
 * keep the rules of the Prometheus text format and of the table itself
 * (families in one run, one HELP per family, labels and paths that name
 * what the dimension has), a snapshot copies what the workers counted, and
 * /metrics and /status render every row from a snapshot.
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

#include "admin/render.h"
#include "lib/metrics.h"

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);

    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* True when every {LABEL} in text names a label of row r's dimension. */
static int placeholders_ok(const char *text, const struct metrics_row *r)
{
    const char *names[2], *values[2], *p, *close;
    int count = metrics_dim_labels(r->dim, 0, names, values), k, found;

    for (p = strchr(text, '{'); p; p = strchr(close, '{')) {
        close = strchr(p, '}');
        if (!close)
            return 0;
        found = 0;
        for (k = 0; k < count; k++)
            found |= strlen(names[k]) == (size_t)(close - p - 1) &&
                     strncmp(names[k], p + 1, (size_t)(close - p - 1)) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

static void test_rows_follow_the_rules(void **state)
{
    size_t r, q;

    (void)state;
    for (r = 0; r < METRICS_N_ROWS; r++) {
        const struct metrics_row *row = &metrics_rows[r];
        int first = r == 0 || strcmp(metrics_rows[r - 1].name, row->name) != 0;
        if (strncmp(row->name, "pop3gw_", 7) != 0)
            fail_msg("%s: the name does not start with pop3gw_", row->name);
        if ((row->kind == MK_COUNTER) != ends_with(row->name, "_total"))
            fail_msg("%s: counters, and only counters, end in _total", row->name);
        if (first && !*row->help)
            fail_msg("%s: the family's first row has no HELP text", row->name);
        if (!first && *row->help)
            fail_msg("%s (%s): only a family's first row has HELP text", row->name, row->field);
        if (!first && (metrics_rows[r - 1].kind != row->kind || metrics_rows[r - 1].n != row->n ||
                       metrics_rows[r - 1].dim != row->dim))
            fail_msg("%s: the rows of one family differ in kind or dimension", row->name);
        if (!first && !*row->label)
            fail_msg("%s: rows that share a family need a fixed label each", row->name);
        if (row->dim == MD_VERSION && row->kind != MK_VIEW)
            fail_msg("%s: only the endpoint knows the version (VIEW)", row->name);
        if (*row->label && (!strstr(row->label, "=\"") || !ends_with(row->label, "\"")))
            fail_msg("%s: the fixed label is not name=\"value\": %s", row->name, row->label);
        if (!placeholders_ok(row->help, row) || !placeholders_ok(row->json, row))
            fail_msg("%s: a {LABEL} that its dimension does not have", row->name);
        if (row->n < 1)
            fail_msg("%s: no series", row->name);
        for (q = 0; q < r; q++) {
            if (strcmp(metrics_rows[q].field, row->field) == 0)
                fail_msg("field %s twice", row->field);
            if (*row->json && strcmp(metrics_rows[q].json, row->json) == 0)
                fail_msg("/status path %s twice", row->json);
            if (first && strcmp(metrics_rows[q].name, row->name) == 0)
                fail_msg("%s: the family is split (its rows must follow each other)", row->name);
        }
    }
}

static void test_dimensions(void **state)
{
    const char *names[2], *values[2];
    size_t n;

    (void)state;
    assert_int_equal(metrics_dim_labels(MD_NONE, 0, names, values), 0);
    assert_int_equal(metrics_dim_labels(MD_METHOD, 1, names, values), 1);
    assert_string_equal(names[0], "method");
    assert_string_equal(values[0], "APOP");
    /* event x reason: reason varies fastest */
    assert_int_equal(metrics_dim_labels(MD_EVENT_REASON, MWE_N + 1, names, values), 2);
    assert_string_equal(values[0], "list");
    assert_string_equal(values[1], metrics_wh_error_names[1]);
    assert_int_equal(metrics_dim_labels(MD_VERSION, 0, names, values), 1);
    assert_string_equal(names[0], "version");
    assert_null(values[0]);
    assert_ptr_equal(metrics_label_values("reason", &n), metrics_wh_error_names);
    assert_int_equal(n, MWE_N);
    assert_null(metrics_label_values("state", &n));
    assert_int_equal(metrics_rows[MR_webhook_errors].n, METRICS_EVENTS * MWE_N);
    assert_int_equal(metrics_rows[MR_logins_ok].n, METRICS_METHODS);
}

static void test_snapshot_copies_each_kind(void **state)
{
    struct metrics_snap s;

    (void)state;
    memset(&metrics, 0, sizeof metrics);
    METRIC_ADD(commands_total, 5);
    METRIC_INC(logins_failed[2]);
    METRIC_INC(webhook_errors[3][MWE_N - 1]);
    METRIC_DEC(connections_active); /* below zero: read as 0 */
    METRIC_INC(webhook_inflight);
    METRIC_SET(started, 1700000000L);
    METRIC_SET(backend_last_ok_ms, 1700000000123LL);
    metrics_observe(&metrics.webhook_latency[1], 0.003);
    metrics_observe(&metrics.webhook_latency[1], 20);
    metrics_snap_take(&s);
    assert_int_equal(s.commands_total, 5);
    assert_int_equal(s.logins_failed[2], 1);
    assert_int_equal(s.logins_failed[1], 0);
    assert_int_equal(s.webhook_errors[3][MWE_N - 1], 1);
    assert_int_equal(s.connections_active, 0);
    assert_int_equal(s.webhook_inflight, 1);
    assert_int_equal(s.started, 1700000000L);
    assert_int_equal(s.backend_last_ok_ms, 1700000000123LL);
    assert_int_equal(s.webhook_latency[1].count, 2);
    assert_int_equal(s.webhook_latency[1].bucket[2], 1);               /* <= 0.005 */
    assert_int_equal(s.webhook_latency[1].bucket[METRICS_BUCKETS], 1); /* +Inf */
    assert_int_equal(s.webhook_latency[0].count, 0);
    memset(&metrics, 0, sizeof metrics);
}

/* A snapshot with a number in every counter series, so that each series
 * can be found by its value. */
static void numbered_snapshot(struct adm_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    snap->v.version = "9.9.9";
    snap->v.now = 1700000100;
    snap->v.workers = 3;
    snap->v.max_connections = 77;
    snap->v.inflight_limit = 48;
    snap->m.started = 1700000000;
    snap->m.logins_ok[1] = 11;
    snap->m.logins_failed[1] = 12;
    snap->m.webhook_errors[2][1] = 21;
    snap->m.sessions_transaction = 4;
    snap->m.webhook_latency[0].bucket[0] = 2;
    snap->m.webhook_latency[0].count = 2;
    snap->m.webhook_latency[0].sum = 0.0015;
}

static void test_prometheus_has_every_row(void **state)
{
    struct adm_snapshot snap;
    char want[256], *out;
    size_t r;

    (void)state;
    numbered_snapshot(&snap);
    out = render_prometheus(&snap);
    assert_non_null(out);
    for (r = 0; r < METRICS_N_ROWS; r++) {
        snprintf(want, sizeof want, "\n%s", metrics_rows[r].name);
        if (!strstr(out, want))
            fail_msg("no series of %s", metrics_rows[r].name);
    }
    assert_non_null(strstr(out, "pop3gw_info{version=\"9.9.9\"} 1\n"));
    assert_non_null(strstr(out, "\npop3gw_workers 3\n"));
    assert_non_null(strstr(out, "\npop3gw_connections_limit 77\n"));
    assert_non_null(strstr(out, "\npop3gw_start_time_seconds 1700000000\n"));
    assert_non_null(strstr(out, "\npop3gw_sessions{state=\"authorization\"} 0\n"
                                "pop3gw_sessions{state=\"transaction\"} 4\n"));
    assert_non_null(strstr(out, "\npop3gw_logins_total{method=\"APOP\",result=\"ok\"} 11\n"
                                "pop3gw_logins_total{method=\"APOP\",result=\"failed\"} 12\n"));
    snprintf(want, sizeof want, "\npop3gw_webhook_errors_total{event=\"uidl\",reason=\"%s\"} 21\n",
             metrics_wh_error_names[1]);
    assert_non_null(strstr(out, want));
    assert_non_null(strstr(out, "\npop3gw_webhook_duration_seconds_bucket{event=\"authenticate\","
                                "le=\"0.001\"} 2\n"));
    assert_non_null(strstr(out, "\npop3gw_webhook_duration_seconds_count{event=\"authenticate\"} "
                                "2\n"));
    assert_non_null(strstr(out, "\npop3gw_backend_failing 0\n"));
    /* The HELP text lists the reasons from their one list. */
    snprintf(want, sizeof want, "reason (%s, %s", metrics_wh_error_names[0],
             metrics_wh_error_names[1]);
    assert_non_null(strstr(out, want));
    free(out);
}

static void test_status_places_every_row(void **state)
{
    struct adm_snapshot snap;
    json_error_t err;
    json_t *root;
    char *out;

    (void)state;
    numbered_snapshot(&snap);
    out = render_status_json(&snap);
    assert_non_null(out);
    root = json_loads(out, 0, &err);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "workers")), 3);
    assert_int_equal(json_integer_value(json_object_get(root, "uptime_seconds")), 100);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "connections"), "limit")), 77);
    json_t *logins = json_object_get(root, "logins");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(logins, "ok"), "APOP")),
                     11);
    assert_int_equal(json_integer_value(json_object_get(logins, "failed_total")), 12);
    json_t *uidl =
        json_object_get(json_object_get(json_object_get(root, "webhooks"), "events"), "uidl");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(uidl, "errors_by_reason"),
                                                        metrics_wh_error_names[1])),
                     21);
    assert_int_equal(json_integer_value(json_object_get(uidl, "errors")), 21);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "sessions"), "total")), 4);
    assert_true(json_is_null(json_object_get(json_object_get(root, "backend"), "last_ok")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(root, "backend"), "state")), "unknown");
    /* The events keep their order: the dashboard lists them as they come. */
    const char *key;
    json_t *v;
    int e = 0;
    json_object_foreach(json_object_get(json_object_get(root, "webhooks"), "events"), key, v)
    {
        assert_string_equal(key, metrics_event_names[e]);
        e++;
    }
    assert_int_equal(e, METRICS_EVENTS);
    json_decref(root);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_follow_the_rules),
        cmocka_unit_test(test_dimensions),
        cmocka_unit_test(test_snapshot_copies_each_kind),
        cmocka_unit_test(test_prometheus_has_every_row),
        cmocka_unit_test(test_status_places_every_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
