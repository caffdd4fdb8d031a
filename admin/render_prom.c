/*
 * render_prom: GET /metrics in the Prometheus text exposition format 0.0.4.
 *
 * Every family gets a HELP and a TYPE line, counters end in `_total`, every
 * name starts with `pop3gw_`, and every series of a fixed label set is
 * written even while it is zero (so that rate() works from the first
 * scrape). The output passes `promtool check metrics`; the metric names are
 * part of the admin interface (docs/admin.md): add, do not rename.
 *
 * Every family is a row (or a run of rows) of lib/metrics.h's table, written
 * in the table's order; this file only knows how a kind and a dimension look
 * in the text format.
 */
#include "admin/render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

/* The text being built, and whether memory ran out on the way. */
struct prom {
    struct buf b;
    int failed;
};

static void out(struct prom *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(struct prom *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || buf_add(&p->b, line, (size_t)n) < 0)
        p->failed = 1;
}

static const char *prom_type(enum metrics_kind kind)
{
    switch (kind) {
    case MK_COUNTER:
        return "counter";
    case MK_HISTOGRAM:
        return "histogram";
    case MK_GAUGE:
    case MK_TIME:
    case MK_VIEW:
        return "gauge";
    default:
        abort();
    }
}

/* The HELP and TYPE lines of the family that starts at row r. In the help
 * text, {LABEL} becomes the values the label takes, comma-separated. */
static void family(struct prom *p, const struct metrics_row *r)
{
    char help[400];
    const char *h = r->help, *close;
    size_t n = 0, k, count;

    while (*h && n + 1 < sizeof help) {
        const char *const *values = NULL;
        char label[32];
        if (*h == '{' && (close = strchr(h, '}')) && (size_t)(close - h) < sizeof label) {
            memcpy(label, h + 1, (size_t)(close - h - 1));
            label[close - h - 1] = '\0';
            values = metrics_label_values(label, &count);
        }
        if (!values) {
            help[n++] = *h++;
            continue;
        }
        for (k = 0; k < count && n + 1 < sizeof help; k++)
            n += (size_t)snprintf(help + n, sizeof help - n, "%s%s", k ? ", " : "", values[k]);
        if (n >= sizeof help)
            n = sizeof help - 1;
        h = close + 1;
    }
    help[n] = '\0';
    out(p, "# HELP %s %s\n# TYPE %s %s\n", r->name, help, r->name, prom_type(r->kind));
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(char *dst, size_t cap, const char *v)
{
    size_t n = 0;

    for (; *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            dst[n++] = '\\';
            dst[n++] = *v == '\n' ? 'n' : *v;
        } else {
            dst[n++] = *v;
        }
    }
    dst[n] = 0;
}

/* The labels of series i of row r, without braces: the dimension's, then
 * the row's fixed label. */
static void series_labels(char *dst, size_t cap, const struct metrics_row *r, size_t i,
                          const struct adm_view *v)
{
    const char *names[2], *values[2];
    char value[128];
    size_t n = 0;
    int k, count = metrics_dim_labels(r->dim, i, names, values);

    dst[0] = '\0';
    for (k = 0; k < count; k++) {
        label_value(value, sizeof value, values[k] ? values[k] : v->version);
        n += (size_t)snprintf(dst + n, cap - n, "%s%s=\"%s\"", k ? "," : "", names[k], value);
        if (n >= cap)
            return;
    }
    if (*r->label)
        snprintf(dst + n, cap - n, "%s%s", n ? "," : "", r->label);
}

static void render_histogram(struct prom *p, const char *n, const char *labels,
                             const struct hist_snap *h)
{
    const char *sep = *labels ? "," : "";
    unsigned long cum = 0;
    int i;

    for (i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->bucket[i];
        out(p, "%s_bucket{%s%sle=\"%g\"} %lu\n", n, labels, sep, metrics_bucket_bounds[i], cum);
    }
    out(p, "%s_bucket{%s%sle=\"+Inf\"} %lu\n", n, labels, sep, h->count);
    if (*labels) {
        out(p, "%s_sum{%s} %.6f\n", n, labels, h->sum);
        out(p, "%s_count{%s} %lu\n", n, labels, h->count);
    } else {
        out(p, "%s_sum %.6f\n", n, h->sum);
        out(p, "%s_count %lu\n", n, h->count);
    }
}

/* Series i of row r: one sample, or a histogram's lines. */
static void render_series(struct prom *p, const struct adm_snapshot *snap,
                          const struct metrics_row *r, size_t i)
{
    char labels[320];

    series_labels(labels, sizeof labels, r, i, &snap->v);
    if (r->kind == MK_HISTOGRAM)
        render_histogram(p, r->name, labels, metrics_snap_hist(&snap->m, r, i));
    else if (*labels)
        out(p, "%s{%s} %llu\n", r->name, labels, metrics_snap_value(snap, r, i));
    else
        out(p, "%s %llu\n", r->name, metrics_snap_value(snap, r, i));
}

char *render_prometheus(const struct adm_snapshot *snap)
{
    struct prom p = {{NULL, 0, 0}, 0};
    size_t r, end, i, k;

    /* A family is a run of rows with one name; its series go index by
     * index, row by row (method="USER" ok, then failed, ...). */
    for (r = 0; r < METRICS_N_ROWS; r = end) {
        for (end = r + 1;
             end < METRICS_N_ROWS && strcmp(metrics_rows[end].name, metrics_rows[r].name) == 0;
             end++)
            ;
        family(&p, &metrics_rows[r]);
        for (i = 0; i < metrics_rows[r].n; i++)
            for (k = r; k < end; k++)
                render_series(&p, snap, &metrics_rows[k], i);
    }
    if (!p.failed && buf_add(&p.b, "", 1) < 0) /* the NUL */
        p.failed = 1;
    if (p.failed) {
        buf_free(&p.b);
        return NULL;
    }
    return p.b.data;
}
