/*
 * log: one line per event to stderr, logfmt or JSON.
 *
 * Each line is built in a buffer on the caller's stack (at most LOG_LINE_MAX
 * bytes, which is PIPE_BUF on Linux, so a write to a pipe is atomic) and
 * leaves with one write(2) to fd 2. The format and level are atomics, so
 * log_kv() takes no lock and may be called from any thread.
 *
 * A line that would not fit is cut at a field or character boundary, closed
 * properly (a quoted value gets its closing quote, the JSON object its '}')
 * and marked truncated=true, so every line stays parseable.
 */
#include "lib/log.h"

#include "lib/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096 /* whole line, newline included */
#define LOG_TAIL 32       /* kept free to close a cut line: `",truncated":true}\n` */

static atomic_int log_fmt = 0; /* 0 logfmt, 1 json */
static atomic_int log_max_level = LOG_INFO;

const char *const log_level_names[LOG_DEBUG + 2] = {
    [LOG_ERROR] = "error", [LOG_WARN] = "warn", [LOG_INFO] = "info", [LOG_DEBUG] = "debug", NULL};

struct log_line {
    size_t n; /* bytes in s */
    int full; /* something did not fit; no more fields */
    int json; /* JSON rather than logfmt */
    char s[LOG_LINE_MAX];
};

void log_init(int format, int level)
{
    if (level < LOG_ERROR)
        level = LOG_ERROR;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    atomic_store_explicit(&log_fmt, format == 1, memory_order_relaxed);
    atomic_store_explicit(&log_max_level, level, memory_order_relaxed);
}

int log_enabled(int level)
{
    return level >= LOG_ERROR &&
           level <= atomic_load_explicit(&log_max_level, memory_order_relaxed);
}

int log_level_parse(const char *s)
{
    for (int i = LOG_ERROR; s && i <= LOG_DEBUG; i++)
        if (strcasecmp(s, log_level_names[i]) == 0)
            return i;
    return -1;
}

/* ---- the line buffer ------------------------------------------------------ */

/* Appends len bytes unless they would eat into the tail; then marks full. */
static int log_put(struct log_line *b, const char *p, size_t len)
{
    if (b->full || b->n + len > LOG_LINE_MAX - LOG_TAIL) {
        b->full = 1;
        return -1;
    }
    memcpy(b->s + b->n, p, len);
    b->n += len;
    return 0;
}

/* Appends into the tail: only for the bytes that close a line. */
static void log_force(struct log_line *b, const char *p, size_t len)
{
    if (b->n + len <= LOG_LINE_MAX) {
        memcpy(b->s + b->n, p, len);
        b->n += len;
    }
}

/* A JSON string: valid UTF-8 kept, control and invalid bytes as \u00XX. */
static void log_json_str(struct log_line *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char esc[8];

    if (log_put(b, "\"", 1) < 0)
        return;
    for (size_t i = 0; i < len;) {
        size_t u = util_utf8_len((const char *)p + i, len - i);
        int rc;
        if (u == 1 && (p[i] == '"' || p[i] == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            rc = log_put(b, esc, 2);
        } else if (u == 0 || p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", p[i]);
            rc = log_put(b, esc, 6);
            u = 1;
        } else {
            rc = log_put(b, s + i, u);
        }
        if (rc < 0)
            break;
        i += u;
    }
    log_force(b, "\"", 1);
}

static int log_fmt_needs_quote(const unsigned char *p, size_t len)
{
    if (len == 0)
        return 1;
    for (size_t i = 0; i < len; i++)
        if (p[i] <= ' ' || p[i] == '=' || p[i] == '"' || p[i] == '\\' || p[i] >= 0x7f)
            return 1;
    return 0;
}

/* A logfmt value: bare when it can be, else quoted with \" \\ and \xNN. */
static void log_fmt_str(struct log_line *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char esc[8];

    if (!log_fmt_needs_quote(p, len)) {
        /* A bare value may be cut anywhere: it is ASCII without blanks. */
        size_t room = LOG_LINE_MAX - LOG_TAIL - b->n;
        log_put(b, s, len < room ? len : room);
        if (len > room)
            b->full = 1;
        return;
    }
    if (log_put(b, "\"", 1) < 0)
        return;
    for (size_t i = 0; i < len; i++) {
        int rc;
        if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            rc = log_put(b, esc, 2);
        } else if (p[i] < 0x20 || p[i] >= 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", p[i]);
            rc = log_put(b, esc, 4);
        } else {
            rc = log_put(b, s + i, 1);
        }
        if (rc < 0)
            break;
    }
    log_force(b, "\"", 1);
}

/*
 * Starts a field: ` key=` or `,"key":`. Returns the length before it, for
 * log_drop(), or (size_t)-1 when it did not fit.
 */
static size_t log_key(struct log_line *b, const char *key, size_t klen)
{
    size_t start = b->n;

    if (b->full)
        return (size_t)-1;
    if (b->json) {
        log_put(b, ",", 1);
        log_json_str(b, key, klen);
        log_put(b, ":", 1);
    } else {
        log_put(b, " ", 1);
        for (size_t i = 0; i < klen; i++) {
            unsigned char ch = (unsigned char)key[i];
            char k = ch > ' ' && ch < 0x7f && ch != '=' && ch != '"' ? (char)ch : '_';
            log_put(b, &k, 1);
        }
        log_put(b, "=", 1);
    }
    if (b->full) {
        b->n = start;
        return (size_t)-1;
    }
    return start;
}

/* A string field; NULL is JSON null, or "" in logfmt. */
static void log_field_str(struct log_line *b, const char *key, size_t klen, const char *v,
                          size_t vlen)
{
    if (log_key(b, key, klen) == (size_t)-1)
        return;
    if (b->json && !v)
        log_put(b, "null", 4);
    else if (b->json)
        log_json_str(b, v, vlen);
    else
        log_fmt_str(b, v ? v : "", v ? vlen : 0);
}

/* A number field, already formatted; all of it or none of it. */
static void log_field_num(struct log_line *b, const char *key, size_t klen, const char *num)
{
    size_t start = log_key(b, key, klen);

    if (start == (size_t)-1)
        return;
    if (log_put(b, num, strlen(num)) < 0)
        b->n = start;
}

/* ---- the format string ---------------------------------------------------- */

enum log_spec { LS_BAD, LS_S, LS_D, LS_U, LS_LD, LS_LU, LS_LLD, LS_LLU, LS_ZU, LS_F, LS_F1, LS_F3 };

/* The spec after '%' at *p; advances *p past it. */
static enum log_spec log_spec_parse(const char **p)
{
    static const struct {
        const char *text;
        enum log_spec spec;
    } specs[] = {
        {"s", LS_S},   {"d", LS_D},     {"u", LS_U},     {"ld", LS_LD},
        {"lu", LS_LU}, {"lld", LS_LLD}, {"llu", LS_LLU}, {"zu", LS_ZU},
        {"f", LS_F},   {".1f", LS_F1},  {".3f", LS_F3},
    };

    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        size_t n = strlen(specs[i].text);
        if (strncmp(*p, specs[i].text, n) == 0 && ((*p)[n] == ' ' || (*p)[n] == '\0')) {
            *p += n;
            return specs[i].spec;
        }
    }
    return LS_BAD;
}

/* Formats a double; JSON has no NaN or infinity, so those become null. */
static void log_field_double(struct log_line *b, const char *key, size_t klen, const char *pf,
                             double d)
{
    char num[400]; /* %f of DBL_MAX has 309 digits before the point */

    if (b->json && !isfinite(d)) {
        log_field_num(b, key, klen, "null");
        return;
    }
    snprintf(num, sizeof num, pf, d);
    log_field_num(b, key, klen, num);
}

/* Takes the argument of one spec from ap and adds the field. */
static void log_field_arg(struct log_line *b, const char *key, size_t klen, enum log_spec spec,
                          va_list *ap)
{
    char num[32];
    const char *s;

    switch (spec) {
    case LS_S:
        s = va_arg(*ap, const char *);
        log_field_str(b, key, klen, s, s ? strlen(s) : 0);
        return;
    case LS_D:
        snprintf(num, sizeof num, "%d", va_arg(*ap, int));
        break;
    case LS_U:
        snprintf(num, sizeof num, "%u", va_arg(*ap, unsigned));
        break;
    case LS_LD:
        snprintf(num, sizeof num, "%ld", va_arg(*ap, long));
        break;
    case LS_LU:
        snprintf(num, sizeof num, "%lu", va_arg(*ap, unsigned long));
        break;
    case LS_LLD:
        snprintf(num, sizeof num, "%lld", va_arg(*ap, long long));
        break;
    case LS_LLU:
        snprintf(num, sizeof num, "%llu", va_arg(*ap, unsigned long long));
        break;
    case LS_ZU:
        snprintf(num, sizeof num, "%zu", va_arg(*ap, size_t));
        break;
    case LS_F:
        log_field_double(b, key, klen, "%f", va_arg(*ap, double));
        return;
    case LS_F1:
        log_field_double(b, key, klen, "%.1f", va_arg(*ap, double));
        return;
    case LS_F3:
        log_field_double(b, key, klen, "%.3f", va_arg(*ap, double));
        return;
    case LS_BAD:
    default:
        return;
    }
    log_field_num(b, key, klen, num);
}

/*
 * Adds the fields of fmt: `key=%spec` items (or `key=literal`), separated by
 * spaces. At an item it does not understand it stops, since the arguments
 * can no longer be matched, and adds the format itself as log_bad_format.
 */
static void log_fields(struct log_line *b, const char *fmt, va_list *ap)
{
    const char *p = fmt;

    while (p && *p) {
        const char *key, *val;
        size_t klen;
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        klen = (size_t)(p - key);
        if (*p != '=' || klen == 0)
            goto bad;
        val = ++p;
        if (*p != '%') {
            while (*p && *p != ' ')
                p++;
            log_field_str(b, key, klen, val, (size_t)(p - val));
            continue;
        }
        p++;
        enum log_spec spec = log_spec_parse(&p);
        if (spec == LS_BAD)
            goto bad;
        log_field_arg(b, key, klen, spec, ap);
    }
    return;
bad:
    log_field_str(b, "log_bad_format", 14, fmt, strlen(fmt));
}

/* ---- the line ------------------------------------------------------------- */

static void log_timestamp(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    char date[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03dZ", date, (int)(ts.tv_nsec / 1000000));
}

/* One write(2) normally; the loop only finishes a short write. */
static void log_write(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

void log_kv(int level, const char *session, const char *msg, const char *fmt, ...)
{
    struct log_line b;
    char ts[48];
    const char *lvl;
    int saved_errno = errno;
    va_list ap;

    if (!log_enabled(level))
        return;
    lvl = log_level_names[level];
    b.n = 0;
    b.full = 0;
    b.json = atomic_load_explicit(&log_fmt, memory_order_relaxed);
    log_timestamp(ts, sizeof ts);
    if (b.json) {
        log_put(&b, "{\"ts\":\"", 7);
        log_put(&b, ts, strlen(ts));
        log_put(&b, "\",\"level\":\"", 11);
        log_put(&b, lvl, strlen(lvl));
        log_put(&b, "\"", 1);
    } else {
        log_put(&b, "ts=", 3);
        log_put(&b, ts, strlen(ts));
        log_put(&b, " level=", 7);
        log_put(&b, lvl, strlen(lvl));
    }
    if (session)
        log_field_str(&b, "session", 7, session, strlen(session));
    log_field_str(&b, "msg", 3, msg ? msg : "", msg ? strlen(msg) : 0);
    va_start(ap, fmt);
    log_fields(&b, fmt, &ap);
    va_end(ap);
    if (b.full)
        log_force(&b, b.json ? ",\"truncated\":true" : " truncated=true", b.json ? 17 : 15);
    if (b.json)
        log_force(&b, "}", 1);
    log_force(&b, "\n", 1);
    log_write(b.s, b.n);
    errno = saved_errno;
}
