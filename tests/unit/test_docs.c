/*
 * The documentation against the lists in the code, both ways:
 *
 *   - docs/admin.md's /metrics table: one row per family of lib/metrics.h's
 *     table, with its type, its labels and the values of each label; the
 *     /status fields the table places are named in the /status section;
 *   - docs/configuration.md's key tables: one row per key of gateway/cfg.c,
 *     with the key's default where it is a plain value;
 *   - docs/webhooks.md and docs/openapi.yaml: every event of lib/names.h
 *     (a section each, the `event` field) and every login method.
 *
 * The files are read relative to the repository root, where `make unit`
 * runs the tests. A failure lists every disagreement, each naming what is
 * missing where; the code is the reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/cfg.h"
#include "lib/metrics.h"
#include "webhook/wh.h"

#define MAX_TOKENS 64
#define TOKEN_MAX 96

/* ---- collecting disagreements --------------------------------------------- */

struct problems {
    char text[16384];
    size_t n;
    int count;
};

static void problem(struct problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct problems *p, const char *fmt, ...)
{
    va_list ap;
    int k;

    p->count++;
    if (p->n + 2 >= sizeof p->text)
        return;
    p->text[p->n++] = '\n';
    va_start(ap, fmt);
    k = vsnprintf(p->text + p->n, sizeof p->text - p->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        p->n += (size_t)k < sizeof p->text - p->n ? (size_t)k : sizeof p->text - p->n - 1;
}

static void report(const struct problems *p)
{
    if (p->count)
        fail_msg("%d disagreement(s) between the docs and the code:%s", p->count, p->text);
}

/* ---- reading markdown ----------------------------------------------------- */

static char *read_doc(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *text;
    long n;

    if (!f)
        fail_msg("cannot read %s: run the unit tests from the repository root (make unit does)",
                 path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    text = malloc((size_t)n + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* The heading's level (## = 2), or 0 when the line is no heading. */
static int heading_level(const char *line)
{
    int k = 0;

    while (line[k] == '#')
        k++;
    return k > 0 && line[k] == ' ' ? k : 0;
}

/*
 * The section under the first heading line that starts with `heading`, up to
 * the next heading of its level or above (headings inside ``` blocks do not
 * count). A malloc'd copy; fails the test when there is none.
 */
static char *section(const char *doc, const char *path, const char *heading)
{
    const char *p = doc, *start = NULL, *end = NULL;
    int level = 0, fenced = 0;

    for (; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
        if (strncmp(p, "```", 3) == 0)
            fenced = !fenced;
        if (fenced)
            continue;
        int h = heading_level(p);
        if (!start && h && strncmp(p, heading, strlen(heading)) == 0) {
            start = p;
            level = h;
        } else if (start && h && h <= level) {
            end = p;
            break;
        }
    }
    if (!start)
        fail_msg("%s: no heading \"%s\"", path, heading);
    if (!end)
        end = doc + strlen(doc);
    return strndup(start, (size_t)(end - start));
}

/* The cells of a table row ("| a | b |"), trimmed, written into cells[]
 * (each at most TOKEN_MAX * 8 bytes); returns how many. */
#define CELL_MAX (TOKEN_MAX * 8)
static int row_cells(const char *line, char cells[][CELL_MAX], int max)
{
    const char *p = line, *bar;
    int n = 0;

    if (*p != '|')
        return 0;
    p++;
    while (n < max && (bar = strpbrk(p, "|\n")) && *bar == '|') {
        size_t len = (size_t)(bar - p);
        while (len && (*p == ' '))
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len >= CELL_MAX)
            len = CELL_MAX - 1;
        memcpy(cells[n], p, len);
        cells[n][len] = '\0';
        n++;
        p = bar + 1;
    }
    return n;
}

/* The `code spans` of a text, in order; returns how many. */
static int code_spans(const char *text, char tokens[][TOKEN_MAX], int max)
{
    const char *p = text, *close;
    int n = 0;

    while (n < max && (p = strchr(p, '`')) && (close = strchr(p + 1, '`'))) {
        size_t len = (size_t)(close - p - 1);
        if (len >= TOKEN_MAX)
            len = TOKEN_MAX - 1;
        memcpy(tokens[n], p + 1, len);
        tokens[n][len] = '\0';
        n++;
        p = close + 1;
    }
    return n;
}

static int in_list(const char *s, char list[][TOKEN_MAX], int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

static int in_names(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return 1;
    return 0;
}

/* Checks that the tokens are exactly the names (any order). */
static void same_set(struct problems *p, const char *where, char tokens[][TOKEN_MAX], int nt,
                     const char *const *names, size_t nn)
{
    for (size_t i = 0; i < nn; i++)
        if (!in_list(names[i], tokens, nt))
            problem(p, "%s: `%s` is missing", where, names[i]);
    for (int i = 0; i < nt; i++)
        if (!in_names(tokens[i], names, nn))
            problem(p, "%s: `%s` is not in the code", where, tokens[i]);
}

/* Each table row of a section whose first cell is a code span, in order:
 * calls fn with its cells. */
static void each_row(const char *sec, void (*fn)(void *arg, char cells[][CELL_MAX], int n),
                     void *arg)
{
    static char cells[8][CELL_MAX];
    const char *p;
    int fenced = 0;

    for (p = sec; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
        if (strncmp(p, "```", 3) == 0)
            fenced = !fenced;
        if (fenced || strncmp(p, "| `", 3) != 0)
            continue;
        int n = row_cells(p, cells, 8);
        if (n > 0)
            fn(arg, cells, n);
    }
}

/* ---- docs/admin.md: the metrics ------------------------------------------ */

#define ADMIN_MD "docs/admin.md"

struct doc_family {
    char name[TOKEN_MAX];
    char type[32];
    char labels[CELL_MAX];
};

struct doc_families {
    struct doc_family f[METRICS_N_ROWS + 16];
    int n;
    struct problems *p;
};

static void take_family(void *arg, char cells[][CELL_MAX], int n)
{
    struct doc_families *d = arg;
    char tok[1][TOKEN_MAX];
    struct doc_family *f;

    if (n < 4 || code_spans(cells[0], tok, 1) != 1) {
        problem(d->p, ADMIN_MD ": a /metrics table row without name, type, labels, meaning: %s",
                cells[0]);
        return;
    }
    if (d->n >= (int)(sizeof d->f / sizeof d->f[0]))
        return;
    f = &d->f[d->n++];
    snprintf(f->name, sizeof f->name, "%s", tok[0]);
    snprintf(f->type, sizeof f->type, "%s", cells[1]);
    snprintf(f->labels, sizeof f->labels, "%s", cells[2]);
}

static const char *kind_type(enum metrics_kind k)
{
    return k == MK_COUNTER ? "counter" : k == MK_HISTOGRAM ? "histogram" : "gauge";
}

/* The labels of the family that starts at row r: names and, per label, its
 * values (from the label's list or from the rows' fixed labels; none for
 * version). */
struct code_label {
    char name[TOKEN_MAX];
    const char *values[64];
    size_t n;
};

static int family_labels(size_t r, size_t end, struct code_label *out, int max)
{
    int n = 0;

    for (size_t k = r; k < end; k++) {
        const struct metrics_row *row = &metrics_rows[k];
        const char *names[2], *values[2];
        int count = metrics_dim_labels(row->dim, 0, names, values);
        for (int i = 0; i < count && k == r && n < max; i++) {
            snprintf(out[n].name, TOKEN_MAX, "%s", names[i]);
            const char *const *list = metrics_label_values(names[i], &out[n].n);
            if (!list || out[n].n > 64)
                out[n].n = 0;
            for (size_t v = 0; v < out[n].n; v++)
                out[n].values[v] = list[v];
            n++;
        }
        if (*row->label) { /* name="value" */
            const char *eq = strchr(row->label, '=');
            char name[TOKEN_MAX];
            int j;
            snprintf(name, sizeof name, "%.*s", (int)(eq - row->label), row->label);
            for (j = 0; j < n && strcmp(out[j].name, name) != 0; j++)
                ;
            if (j == n && n < max) {
                snprintf(out[n].name, TOKEN_MAX, "%s", name);
                out[n].n = 0;
                n++;
            }
            if (j < n && out[j].n < 64)
                out[j].values[out[j].n++] = eq + 1; /* "value", quoted */
        }
    }
    return n;
}

/* Strips the quotes of a fixed label's value into buf. */
static const char *unquote(const char *v, char *buf, size_t cap)
{
    size_t len = strlen(v);

    if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
        snprintf(buf, cap, "%.*s", (int)(len - 2), v + 1);
    else
        snprintf(buf, cap, "%s", v);
    return buf;
}

/* The labels cell: `name` = `v1` `v2`; `name2` ... against the code. */
static void check_labels(struct problems *p, const char *family, const char *cell, size_t r,
                         size_t end)
{
    struct code_label code[4];
    int nc = family_labels(r, end, code, 4);
    char part[CELL_MAX], tokens[MAX_TOKENS][TOKEN_MAX], where[256], buf[TOKEN_MAX];
    const char *s = cell;
    int seen[4] = {0};

    while (*s) {
        size_t len = strcspn(s, ";");
        int nt, j;
        snprintf(part, sizeof part, "%.*s", (int)len, s);
        s += s[len] ? len + 1 : len;
        nt = code_spans(part, tokens, MAX_TOKENS);
        if (nt == 0)
            continue;
        for (j = 0; j < nc && strcmp(code[j].name, tokens[0]) != 0; j++)
            ;
        if (j == nc) {
            problem(p, ADMIN_MD ": %s: label `%s` is not in the code", family, tokens[0]);
            continue;
        }
        seen[j] = 1;
        snprintf(where, sizeof where, ADMIN_MD ": %s: values of label `%s`", family, code[j].name);
        if (nt == 1) {
            /* Values not listed in the cell: only for labels without a fixed
             * set (version), and for event, which has its own sentence. */
            if (code[j].n && strcmp(code[j].name, "event") != 0)
                problem(p, "%s: none listed", where);
            continue;
        }
        const char *values[64];
        for (size_t v = 0; v < code[j].n; v++)
            values[v] = code[j].values[v][0] == '"'
                            ? strdup(unquote(code[j].values[v], buf, sizeof buf))
                            : code[j].values[v];
        same_set(p, where, tokens + 1, nt - 1, values, code[j].n);
        for (size_t v = 0; v < code[j].n; v++)
            if (code[j].values[v][0] == '"')
                free((char *)values[v]);
    }
    for (int j = 0; j < nc; j++)
        if (!seen[j])
            problem(p, ADMIN_MD ": %s: label `%s` is missing", family, code[j].name);
}

static void test_admin_metrics(void **state)
{
    char *doc = read_doc(ADMIN_MD), *sec = section(doc, ADMIN_MD, "### `GET /metrics`");
    struct problems p = {.n = 0};
    struct doc_families *d = calloc(1, sizeof *d);
    size_t r, end;

    (void)state;
    assert_non_null(d);
    d->p = &p;
    each_row(sec, take_family, d);
    for (r = 0; r < METRICS_N_ROWS; r = end) {
        const struct metrics_row *row = &metrics_rows[r];
        int i;
        for (end = r + 1; end < METRICS_N_ROWS && strcmp(metrics_rows[end].name, row->name) == 0;
             end++)
            ;
        for (i = 0; i < d->n && strcmp(d->f[i].name, row->name) != 0; i++)
            ;
        if (i == d->n) {
            problem(&p, ADMIN_MD ": the /metrics table has no row for `%s`", row->name);
            continue;
        }
        if (strcmp(d->f[i].type, kind_type(row->kind)) != 0)
            problem(&p, ADMIN_MD ": `%s` is a %s, the table says %s", row->name,
                    kind_type(row->kind), d->f[i].type);
        check_labels(&p, row->name, d->f[i].labels, r, end);
    }
    for (int i = 0; i < d->n; i++) {
        for (r = 0; r < METRICS_N_ROWS && strcmp(metrics_rows[r].name, d->f[i].name) != 0; r++)
            ;
        if (r == METRICS_N_ROWS)
            problem(&p, ADMIN_MD ": `%s` is in the /metrics table but not in lib/metrics.h",
                    d->f[i].name);
        for (int k = 0; k < i; k++)
            if (strcmp(d->f[k].name, d->f[i].name) == 0)
                problem(&p, ADMIN_MD ": `%s` has two rows", d->f[i].name);
    }
    /* "`event` is one of `authenticate`, ..." */
    const char *one_of = strstr(sec, "`event` is one of");
    if (!one_of) {
        problem(&p, ADMIN_MD ": no sentence \"`event` is one of ...\" under /metrics");
    } else {
        char para[CELL_MAX], tokens[MAX_TOKENS][TOKEN_MAX];
        const char *stop = strstr(one_of, "\n\n");
        size_t len = stop ? (size_t)(stop - one_of) : strlen(one_of);
        snprintf(para, sizeof para, "%.*s", (int)len, one_of);
        int nt = code_spans(para, tokens, MAX_TOKENS);
        same_set(&p, ADMIN_MD ": \"`event` is one of\"", tokens + 1, nt - 1, metrics_event_names,
                 METRICS_EVENTS);
    }
    free(d);
    free(sec);
    free(doc);
    report(&p);
}

/* A path segment of /status ("commands") named in the /status section: in
 * a code span, alone or as part of a dotted path. */
static int segment_named(const char *sec, const char *seg)
{
    size_t n = strlen(seg);

    for (const char *q = strstr(sec, seg); q; q = strstr(q + 1, seg)) {
        char before = q > sec ? q[-1] : ' ', after = q[n];
        if ((before == '`' || before == '.') && (after == '`' || after == '.'))
            return 1;
    }
    return 0;
}

static void test_admin_status_fields(void **state)
{
    char *doc = read_doc(ADMIN_MD), *sec = section(doc, ADMIN_MD, "### `GET /status`");
    struct problems p = {.n = 0};
    char seg[TOKEN_MAX], want[TOKEN_MAX + 2];

    (void)state;
    for (size_t r = 0; r < METRICS_N_ROWS; r++) {
        const char *path = metrics_rows[r].json;
        while (*path) {
            size_t len = strcspn(path, ".");
            snprintf(seg, sizeof seg, "%.*s", (int)len, path);
            path += path[len] ? len + 1 : len;
            if (seg[0] != '{') {
                if (!segment_named(sec, seg))
                    problem(&p, ADMIN_MD ": the /status section does not name `%s` (of %s)", seg,
                            metrics_rows[r].json);
                continue;
            }
            /* {LABEL}: each of its values is named */
            size_t n;
            seg[strlen(seg) - 1] = '\0';
            const char *const *values = metrics_label_values(seg + 1, &n);
            for (size_t v = 0; values && v < n; v++) {
                snprintf(want, sizeof want, "`%s`", values[v]);
                if (!strstr(sec, want))
                    problem(&p, ADMIN_MD ": the /status section does not name %s (a value of %s)",
                            want, metrics_rows[r].json);
            }
        }
    }
    free(sec);
    free(doc);
    report(&p);
}

/* ---- docs/configuration.md: the keys -------------------------------------- */

#define CONFIG_MD "docs/configuration.md"

struct doc_keys {
    char key[128][TOKEN_MAX];
    char def[128][CELL_MAX];
    int n;
};

static void take_key(void *arg, char cells[][CELL_MAX], int n)
{
    struct doc_keys *d = arg;
    char tok[1][TOKEN_MAX];

    if (n < 2 || code_spans(cells[0], tok, 1) != 1 || d->n >= 128)
        return;
    snprintf(d->key[d->n], TOKEN_MAX, "%s", tok[0]);
    snprintf(d->def[d->n], CELL_MAX, "%s", cells[1]);
    d->n++;
}

static void test_configuration_keys(void **state)
{
    char *doc = read_doc(CONFIG_MD), *sec = section(doc, CONFIG_MD, "## 6. Keys");
    struct problems p = {.n = 0};
    struct doc_keys *d = calloc(1, sizeof *d);
    const char *name, *def, *note;
    char key[TOKEN_MAX], want[CELL_MAX];
    int per_event, i, seen[128] = {0};

    (void)state;
    assert_non_null(d);
    each_row(sec, take_key, d);
    for (size_t k = 0; (name = cfg_key_info(k, &per_event, &def, &note)) != NULL; k++) {
        snprintf(key, sizeof key, "%s%s", name, per_event ? "EVENT" : "");
        for (i = 0; i < d->n && strcmp(d->key[i], key) != 0; i++)
            ;
        if (i == d->n) {
            problem(&p, CONFIG_MD ": section 6 has no table row for `%s`", key);
            continue;
        }
        seen[i] = 1;
        if (def && *def) {
            snprintf(want, sizeof want, "`%s`", def);
            if (strcmp(d->def[i], want) != 0)
                problem(&p, CONFIG_MD ": `%s`: the default is %s, the table says %s", key, want,
                        d->def[i]);
        } else if (!note && strcmp(d->def[i], "none") != 0 &&
                   strcmp(d->def[i], "not advertised") != 0) {
            problem(&p,
                    CONFIG_MD ": `%s` has no default, the table says %s (write none or not "
                              "advertised)",
                    key, d->def[i]);
        } else if (note && !*d->def[i]) {
            problem(&p, CONFIG_MD ": `%s`: the default is empty (the code says: %s)", key, note);
        }
    }
    for (i = 0; i < d->n; i++) {
        if (!seen[i])
            problem(&p, CONFIG_MD ": `%s` is in section 6 but is no key of gateway/cfg.c",
                    d->key[i]);
        for (int k = 0; k < i; k++)
            if (strcmp(d->key[k], d->key[i]) == 0)
                problem(&p, CONFIG_MD ": `%s` has two rows", d->key[i]);
    }
    free(d);
    free(sec);
    free(doc);
    report(&p);
}

/* ---- docs/webhooks.md and docs/openapi.yaml: events and methods ----------- */

#define WEBHOOKS_MD "docs/webhooks.md"
#define OPENAPI "docs/openapi.yaml"

struct field_row {
    const char *field;
    char cell[CELL_MAX];
    int found;
};

static void take_field(void *arg, char cells[][CELL_MAX], int n)
{
    struct field_row *f = arg;
    char tok[1][TOKEN_MAX];

    if (n >= 3 && code_spans(cells[0], tok, 1) == 1 && strcmp(tok[0], f->field) == 0 && !f->found) {
        snprintf(f->cell, sizeof f->cell, "%s", cells[2]);
        f->found = 1;
    }
}

/* The names in the third cell of the `field` row of a section. */
static void check_field_row(struct problems *p, const char *sec, const char *where,
                            const char *field, const char *const *names, size_t n)
{
    struct field_row f = {.field = field};
    char tokens[MAX_TOKENS][TOKEN_MAX];

    each_row(sec, take_field, &f);
    if (!f.found) {
        problem(p, "%s: no table row for `%s`", where, field);
        return;
    }
    same_set(p, where, tokens, code_spans(f.cell, tokens, MAX_TOKENS), names, n);
}

/* The `enum: [...]` line of openapi.yaml that holds `first`. */
static void check_openapi_enum(struct problems *p, const char *doc, const char *first,
                               const char *const *names, size_t n)
{
    char tokens[MAX_TOKENS][TOKEN_MAX], where[128];
    const char *q;
    int nt = 0;

    for (q = strstr(doc, "enum: ["); q; q = strstr(q + 1, "enum: [")) {
        const char *s = q + 7, *close = strchr(s, ']');
        nt = 0;
        while (close && s < close && nt < MAX_TOKENS) {
            size_t len = strcspn(s, ",]");
            while (*s == ' ')
                s++, len--;
            snprintf(tokens[nt++], TOKEN_MAX, "%.*s", (int)len, s);
            s += len + 1;
        }
        if (in_list(first, tokens, nt))
            break;
    }
    snprintf(where, sizeof where, OPENAPI ": the enum with %s", first);
    if (!q) {
        problem(p, "%s: not found", where);
        return;
    }
    same_set(p, where, tokens, nt, names, n);
}

static void test_webhook_events_and_methods(void **state)
{
    char *doc = read_doc(WEBHOOKS_MD), *api = read_doc(OPENAPI);
    char *fields = section(doc, WEBHOOKS_MD, "## 5. Fields in every request");
    char *events = section(doc, WEBHOOKS_MD, "## 7. Events");
    char *auth = section(doc, WEBHOOKS_MD, "### 7.1 authenticate");
    struct problems p = {.n = 0};
    char title[64];

    (void)state;
    for (int e = 0; e < WH_N_EVENTS; e++) {
        /* "### 7.N EVENT" */
        int found = 0;
        for (const char *q = strstr(events, "\n### "); q; q = strstr(q + 1, "\n### ")) {
            const char *sp = strchr(q + 5, ' ');
            snprintf(title, sizeof title, " %s", wh_event_names[e]);
            if (sp && strncmp(sp, title, strlen(title)) == 0 &&
                (sp[strlen(title)] == '\n' || sp[strlen(title)] == ' '))
                found = 1;
        }
        if (!found)
            problem(&p, WEBHOOKS_MD ": section 7 has no \"### 7.N %s\"", wh_event_names[e]);
    }
    check_field_row(&p, fields, WEBHOOKS_MD ": section 5, field `event`", "event", wh_event_names,
                    WH_N_EVENTS);
    check_field_row(&p, auth, WEBHOOKS_MD ": section 7.1, field `method`", "method",
                    wh_method_names, WH_N_METHODS);
    check_openapi_enum(&p, api, wh_event_names[0], wh_event_names, WH_N_EVENTS);
    check_openapi_enum(&p, api, wh_method_names[0], wh_method_names, WH_N_METHODS);
    free(fields);
    free(events);
    free(auth);
    free(api);
    free(doc);
    report(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_metrics),
        cmocka_unit_test(test_admin_status_fields),
        cmocka_unit_test(test_configuration_keys),
        cmocka_unit_test(test_webhook_events_and_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
