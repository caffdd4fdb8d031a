/*
 * cfg: pop3gw's configuration: the key table, the check of every value, and
 * the four sources (defaults < file < environment < flags).
 *
 * One table, cfg_keys[], drives everything: lookup by name, the setter that
 * checks and stores a value, the default (a value the row's own setter
 * applies), the printer behind --check-config, the --help text and which
 * fields cfg_free() frees. Its order is the order of cfg_print() and --help.
 *
 * Conventions the rest of the gateway relies on:
 * - A listener host of "*" means every address; it is written `*:110` or
 *   `:110`. Give getaddrinfo() a NULL node with AI_PASSIVE for it (IPv4 and
 *   IPv6). Other hosts are stored as written, IPv6 without brackets.
 * - The default listener 0.0.0.0:110 is added by cfg_load() only when no
 *   source names listen or listen_tls; cfg_defaults() leaves both empty.
 * - For optional string keys an empty value means unset (NULL); empty
 *   admin_listen disables the admin endpoint (port 0).
 * - cfg_load() does not call cfg_validate(); the caller does.
 *
 * The file is read with inih through our own line reader, which counts lines
 * (for messages), drops leading blanks (so an indented line is never taken as
 * an inih continuation line), refuses [section] lines, and handles lines
 * longer than the library's fixed line buffer itself instead of letting inih
 * split them. As in inih, `;` after a blank also starts a comment.
 */
#include "gateway/cfg.h"
#include "gateway/pop3.h"
#include "webhook/wh_client.h"
#include "lib/log.h"
#include "lib/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef POP3GW_VERSION
#define POP3GW_VERSION "unknown"
#endif

#define CFG_SECONDS_MAX 86400.0 /* upper bound of every duration */
#define CFG_WORKERS_MAX 64
#define CFG_SECRET_KEYS_MAX 4 /* as many keys as webhook/wh_sign accepts */
#define CFG_SECRET_BYTES_MAX 64
#define CFG_ENV_PREFIX "POP3GW_"
#define CFG_KEY_MAX 64           /* longest key name we look up */
#define CFG_MSG_MAX 1024         /* one error message */
#define CFG_LISTEN "0.0.0.0:110" /* listen, when no source names a listener */

struct cfg_key;
typedef int (*cfg_setter)(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                          const char *v, char *err, size_t errlen);
typedef void (*cfg_printer)(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out);

/* One configuration key (or, with per_event, one key per event). */
struct cfg_key {
    const char *name;         /* key; per_event rows: the prefix, e.g. "backend_url_" */
    cfg_setter set;           /* checks and stores a value */
    cfg_printer print;        /* writes the value for cfg_print() */
    size_t off, off2;         /* field offsets in struct cfg (off2: a count) */
    double min, max;          /* numeric range */
    int gt;                   /* min is exclusive */
    const char *const *words; /* accepted words for enumerated keys, by value */
    int per_event;            /* backend_url_EVENT, backend_timeout_EVENT */
    int secret;               /* never shown: `***` in cfg_print and messages */
    int str;                  /* a char * field (per_event: one per event), freed by cfg_free */
    const char *why;          /* added to the "expected" text of a bad value */
    const char *def;          /* default value, as a file would give it: cfg_defaults()
                                 applies it through set, --help shows it; NULL: unset */
    const char *note;         /* --help's default instead, when it is no plain value */
    const char *help;         /* one-line description, for --help */
};

/* ---- messages ------------------------------------------------------------ */

static int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes a message into err (when there is one) and returns -1. */
static int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Copies s for a message: quotes and backslashes escaped, control and
 * non-ASCII bytes as \xNN, cut after 80 bytes with "...". */
static void cfg_quote(const char *s, char *out, size_t outlen)
{
    size_t n = 0, i;

    for (i = 0; s[i] && i < 80 && n + 8 < outlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            n += (size_t)snprintf(out + n, outlen - n, "\\x%02x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    if (s[i] && n + 4 <= outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static int cfg_bad(char *err, size_t errlen, const struct cfg_key *k, const char *key,
                   const char *v, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The message of a bad value: `KEY: bad value "VALUE": expected ...`. */
static int cfg_bad(char *err, size_t errlen, const struct cfg_key *k, const char *key,
                   const char *v, const char *fmt, ...)
{
    char q[400], expect[600];
    va_list ap;

    if (k->secret)
        snprintf(q, sizeof q, "***");
    else
        cfg_quote(v, q, sizeof q);
    va_start(ap, fmt);
    vsnprintf(expect, sizeof expect, fmt, ap);
    va_end(ap);
    return cfg_fail(err, errlen, "%s: bad value \"%s\": expected %s%s%s", key, q, expect,
                    k->why ? "; " : "", k->why ? k->why : "");
}

static int cfg_oom(char *err, size_t errlen)
{
    return cfg_fail(err, errlen, "out of memory");
}

/* ---- small parsers ------------------------------------------------------- */

static int cfg_is_blank(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

/* Trims s in place and returns its first non-blank byte. */
static char *cfg_trim(char *s)
{
    size_t n;

    while (cfg_is_blank((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && cfg_is_blank((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* A decimal number without sign: 0 and the value, or -1. */
static int cfg_parse_uint(const char *s, long long max, long long *out)
{
    long long v = 0;

    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (max - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

/* DIGITS or DIGITS.DIGITS: 0 and the value, or -1. */
static int cfg_parse_decimal(const char *s, double *out)
{
    const char *p = s;
    char *end;

    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p || p - s > 40)
        return -1;
    *out = strtod(s, &end);
    return *end ? -1 : 0;
}

/* A word: no blanks, no control bytes. */
static int cfg_is_word(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    return 1;
}

/* A host name or IPv4 address (a dotted-digit name must be a valid IPv4). */
static int cfg_host_ok(const char *h)
{
    size_t n = strlen(h);
    int digits_dots = 1;
    unsigned char bin[4];

    if (n == 0 || n > 253 || h[0] == '-' || h[0] == '.')
        return 0;
    for (const char *p = h; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
            return 0;
        if (!isdigit((unsigned char)*p) && *p != '.')
            digits_dots = 0;
    }
    return !digits_dots || inet_pton(AF_INET, h, bin) == 1;
}

/*
 * Parses one listener address of len bytes at p: host:port, [IPv6]:port,
 * *:port or :port (stored as host "*"). Returns NULL, or why it is bad.
 */
static const char *cfg_parse_addr(const char *p, size_t len, struct cfg_addr *a)
{
    char buf[320], *s, *port;
    const char *host;
    unsigned char bin[16];
    long long portn;

    if (len >= sizeof buf)
        return "too long";
    memcpy(buf, p, len);
    buf[len] = '\0';
    s = cfg_trim(buf);
    if (*s == '[') {
        char *rb = strchr(s, ']');
        if (!rb)
            return "no ] after the IPv6 address";
        *rb = '\0';
        host = s + 1;
        if (rb[1] != ':')
            return "no :port after ]";
        port = rb + 2;
        if (inet_pton(AF_INET6, host, bin) != 1)
            return "not an IPv6 address inside [ ]";
    } else {
        char *colon = strrchr(s, ':');
        if (!colon)
            return "no :port";
        *colon = '\0';
        port = colon + 1;
        host = s;
        if (strchr(host, ':'))
            return "IPv6 addresses go in brackets, e.g. [::1]:110";
        if (*host == '\0' || strcmp(host, "*") == 0)
            host = "*";
        else if (!cfg_host_ok(host))
            return "not an IPv4 address or host name";
    }
    if (cfg_parse_uint(port, 65535, &portn) < 0 || portn == 0)
        return "the port must be a number from 1 to 65535";
    if (strlen(host) >= sizeof a->host)
        return "host name too long";
    memset(a, 0, sizeof *a);
    strcpy(a->host, host);
    a->port = (int)portn;
    return NULL;
}

/* One network: ADDRESS or ADDRESS/PREFIX, IPv4 or IPv6. */
static int cfg_cidr_ok(const char *s)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    unsigned char bin[16];
    long long bits, max;

    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, bin) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, buf, bin) == 1)
        max = 128;
    else
        return 0;
    return !slash || cfg_parse_uint(slash + 1, max, &bits) == 0;
}

/* Strict standard base64 with '=' padding: the decoded size, or -1. The
 * decoded key is wiped at once. */
static long cfg_b64_len(const char *s, size_t n)
{
    size_t len;
    unsigned char *d = n ? util_b64_decode(s, n, &len) : NULL;

    if (!d)
        return -1;
    util_wipe(d, len);
    free(d);
    return (long)len;
}

static int cfg_is_loopback(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;

    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return 0;
}

/* ---- field access -------------------------------------------------------- */

/* The field of key k (element ev of a per-event array). */
static void *cfg_field(struct cfg *c, const struct cfg_key *k, int ev, size_t size)
{
    return (char *)c + k->off + (size_t)(ev > 0 ? ev : 0) * size;
}

static const void *cfg_cfield(const struct cfg *c, const struct cfg_key *k, int ev, size_t size)
{
    return (const char *)c + k->off + (size_t)(ev > 0 ? ev : 0) * size;
}

/* Replaces a string field; v is copied, "" stores NULL. */
static int cfg_store_str(char **slot, const char *v, char *err, size_t errlen)
{
    char *copy = NULL;

    if (*v && !(copy = strdup(v)))
        return cfg_oom(err, errlen);
    util_free_secret(slot); /* it may be a secret */
    *slot = copy;
    return 0;
}

/* ---- setters: each checks v (already trimmed) and stores it --------------- */

#define CFG_ADDR_EXPECT "host:port, [IPv6]:port or *:port (all addresses)"

static int cfg_set_addrs(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                         const char *v, char *err, size_t errlen)
{
    struct cfg_addr tmp[CFG_MAX_LISTEN];
    const char *p = v, *why;
    int n = 0;

    (void)ev;
    while (*v) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == CFG_MAX_LISTEN)
            return cfg_bad(err, errlen, k, key, v, "at most %d comma-separated " CFG_ADDR_EXPECT,
                           CFG_MAX_LISTEN);
        if ((why = cfg_parse_addr(p, len, &tmp[n])) != NULL)
            return cfg_bad(err, errlen, k, key, v,
                           "comma-separated " CFG_ADDR_EXPECT ", e.g. 0.0.0.0:110 (%s)", why);
        n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    memcpy((char *)c + k->off, tmp, (size_t)n * sizeof tmp[0]);
    *(int *)((char *)c + k->off2) = n;
    return 0;
}

static int cfg_set_admin(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                         const char *v, char *err, size_t errlen)
{
    struct cfg_addr a;
    const char *why;

    (void)ev;
    if (!*v) {
        memset(&c->admin_listen, 0, sizeof c->admin_listen);
        return 0;
    }
    if ((why = cfg_parse_addr(v, strlen(v), &a)) != NULL)
        return cfg_bad(err, errlen, k, key, v, CFG_ADDR_EXPECT ", or empty to disable (%s)", why);
    c->admin_listen = a;
    return 0;
}

/* File paths: anything but control bytes; "" unsets. */
static int cfg_set_path(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                        const char *v, char *err, size_t errlen)
{
    if (util_has_ctl(v, strlen(v)))
        return cfg_bad(err, errlen, k, key, v, "a file path without control characters");
    return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), v, err, errlen);
}

/* Tokens and user names: no blanks, no control bytes; "" unsets. */
static int cfg_set_word(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                        const char *v, char *err, size_t errlen)
{
    if (!cfg_is_word(v))
        return cfg_bad(err, errlen, k, key, v, "a value without spaces or control characters");
    return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), v, err, errlen);
}

static int cfg_set_hostname(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                            const char *v, char *err, size_t errlen)
{
    if (!cfg_host_ok(v))
        return cfg_bad(err, errlen, k, key, v,
                       "a host name of letters, digits, '-', '_' and '.', e.g. mail.example.com");
    return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), v, err, errlen);
}

/* http:// or https:// URLs, trailing '/' removed; "" unsets. */
static int cfg_set_url(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                       const char *v, char *err, size_t errlen)
{
    size_t scheme, n = strlen(v);
    char buf[4096];

    if (!*v)
        return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), v, err, errlen);
    if (strncasecmp(v, "http://", 7) == 0)
        scheme = 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        scheme = 8;
    else
        scheme = 0;
    if (!scheme || !cfg_is_word(v) || v[scheme] == '/' || v[scheme] == '\0' || n >= sizeof buf)
        return cfg_bad(err, errlen, k, key, v,
                       "a URL starting with http:// or https://, e.g. http://127.0.0.1:8080/pop3");
    memcpy(buf, v, n + 1);
    while (n > scheme + 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), buf, err, errlen);
}

/* Space-separated whsec_BASE64 keys, as webhook/wh_sign decodes them. */
static int cfg_set_secret(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                          const char *v, char *err, size_t errlen)
{
    const char *p = v;
    int n = 0;

    while (*p) {
        const char *end = p;
        long bytes;
        while (*end && !cfg_is_blank((unsigned char)*end))
            end++;
        if (++n > CFG_SECRET_KEYS_MAX)
            return cfg_bad(err, errlen, k, key, v, "at most %d keys", CFG_SECRET_KEYS_MAX);
        if (end - p < 6 || strncmp(p, "whsec_", 6) != 0)
            return cfg_bad(err, errlen, k, key, v,
                           "space-separated keys of the form whsec_BASE64 (key %d does not "
                           "start with whsec_)",
                           n);
        bytes = cfg_b64_len(p + 6, (size_t)(end - p - 6));
        if (bytes < 1 || bytes > CFG_SECRET_BYTES_MAX)
            return cfg_bad(err, errlen, k, key, v,
                           "space-separated keys of the form whsec_BASE64 (key %d: after whsec_ "
                           "comes standard base64 of 1 to %d bytes, with = padding)",
                           n, CFG_SECRET_BYTES_MAX);
        p = end;
        while (cfg_is_blank((unsigned char)*p))
            p++;
    }
    return cfg_store_str(cfg_field(c, k, ev, sizeof(char *)), v, err, errlen);
}

/* A word from k->words; its index is the stored value. */
static int cfg_set_word_enum(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                             const char *v, char *err, size_t errlen)
{
    char list[200] = "";

    for (int i = 0; k->words[i]; i++) {
        if (strcasecmp(v, k->words[i]) == 0) {
            *(int *)cfg_field(c, k, ev, sizeof(int)) = i;
            return 0;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 k->words[i]);
    }
    return cfg_bad(err, errlen, k, key, v, "one of %s", list);
}

static int cfg_set_tlsver(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                          const char *v, char *err, size_t errlen)
{
    (void)ev;
    if (strcmp(v, "1.2") == 0)
        c->tls_min_version = 12;
    else if (strcmp(v, "1.3") == 0)
        c->tls_min_version = 13;
    else
        return cfg_bad(err, errlen, k, key, v, "1.2 or 1.3");
    return 0;
}

/* Seconds, decimals allowed, within k's range; per-event keys: "" = unset. */
static int cfg_set_seconds(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                           const char *v, char *err, size_t errlen)
{
    double d;

    if (!*v && k->per_event) {
        *(double *)cfg_field(c, k, ev, sizeof(double)) = 0;
        return 0;
    }
    if (cfg_parse_decimal(v, &d) < 0 || d > k->max || d < k->min || (k->gt && d <= k->min)) {
        if (k->gt)
            return cfg_bad(err, errlen, k, key, v,
                           "a number of seconds greater than %g and at most %g (decimals allowed)",
                           k->min, k->max);
        return cfg_bad(err, errlen, k, key, v,
                       "a number of seconds from %g to %g (decimals allowed)", k->min, k->max);
    }
    *(double *)cfg_field(c, k, ev, sizeof(double)) = d;
    return 0;
}

static int cfg_set_int(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                       const char *v, char *err, size_t errlen)
{
    long long n;

    if (cfg_parse_uint(v, (long long)k->max, &n) < 0 || n < (long long)k->min)
        return cfg_bad(err, errlen, k, key, v, "a whole number from %.0f to %.0f", k->min, k->max);
    *(int *)cfg_field(c, k, ev, sizeof(int)) = (int)n;
    return 0;
}

static int cfg_set_workers(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                           const char *v, char *err, size_t errlen)
{
    long long n;

    (void)ev;
    if (strcasecmp(v, "auto") == 0) {
        /* The cores this process may run on (a container's cpuset), else
         * the cores online. */
        cpu_set_t set;
        long cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                                  : sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = cores < 1 ? 1 : cores > CFG_WORKERS_MAX ? CFG_WORKERS_MAX : (int)cores;
        return 0;
    }
    if (cfg_parse_uint(v, CFG_WORKERS_MAX, &n) < 0 || n < 1)
        return cfg_bad(err, errlen, k, key, v, "auto (one per core) or a number from 1 to %d",
                       CFG_WORKERS_MAX);
    c->workers = (int)n;
    return 0;
}

static int cfg_set_events(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                          const char *v, char *err, size_t errlen)
{
    int conn = 0, disc = 0;
    const char *p = v;

    (void)ev;
    while (*v) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (len >= sizeof item)
            len = sizeof item - 1;
        memcpy(item, p, len);
        item[len] = '\0';
        char *w = cfg_trim(item);
        if (strcmp(w, wh_event_names[WH_CONNECT]) == 0)
            conn = 1;
        else if (strcmp(w, wh_event_names[WH_DISCONNECT]) == 0)
            disc = 1;
        else
            return cfg_bad(err, errlen, k, key, v, "a comma-separated list of %s and %s, or empty",
                           wh_event_names[WH_CONNECT], wh_event_names[WH_DISCONNECT]);
        if (!comma)
            break;
        p = comma + 1;
    }
    c->event_connect = conn;
    c->event_disconnect = disc;
    return 0;
}

/* RFC 2449 EXPIRE: NEVER or days; "" unsets. */
static int cfg_set_expire(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                          const char *v, char *err, size_t errlen)
{
    long long days;
    char buf[24];

    (void)ev;
    if (!*v || strcasecmp(v, "NEVER") == 0)
        return cfg_store_str(&c->expire, *v ? "NEVER" : "", err, errlen);
    if (cfg_parse_uint(v, INT_MAX, &days) < 0)
        return cfg_bad(err, errlen, k, key, v, "NEVER, a number of days (0 or more), or empty");
    snprintf(buf, sizeof buf, "%lld", days);
    return cfg_store_str(&c->expire, buf, err, errlen);
}

/* RFC 2449 LOGIN-DELAY in seconds; "" = not advertised (-1). */
static int cfg_set_login_delay(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                               const char *v, char *err, size_t errlen)
{
    long long n;

    (void)ev;
    if (!*v) {
        c->login_delay = -1;
        return 0;
    }
    if (cfg_parse_uint(v, INT_MAX, &n) < 0)
        return cfg_bad(err, errlen, k, key, v, "a whole number of seconds (0 or more), or empty");
    c->login_delay = (int)n;
    return 0;
}

/* Comma-separated networks, stored with the blanks around commas removed. */
static int cfg_set_cidrs(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                         const char *v, char *err, size_t errlen)
{
    char *out = malloc(strlen(v) + 1);
    const char *p = v;
    size_t n = 0;
    int rc;

    (void)ev;
    if (!out)
        return cfg_oom(err, errlen);
    while (*v) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[80];
        char *w;
        memcpy(item, p, len < sizeof item ? len : sizeof item - 1);
        item[len < sizeof item ? len : sizeof item - 1] = '\0';
        w = cfg_trim(item);
        if (len >= sizeof item || !cfg_cidr_ok(w)) {
            free(out);
            return cfg_bad(err, errlen, k, key, v,
                           "comma-separated networks such as 10.0.0.0/8, 192.0.2.7 or fd00::/8");
        }
        n += (size_t)sprintf(out + n, "%s%s", n ? "," : "", w);
        if (!comma)
            break;
        p = comma + 1;
    }
    out[n] = '\0';
    rc = cfg_store_str(&c->proxy_trusted, out, err, errlen);
    free(out);
    return rc;
}

/* Octets: a whole number with an optional K, M or G (powers of 1024). */
static int cfg_set_size(struct cfg *c, const struct cfg_key *k, int ev, const char *key,
                        const char *v, char *err, size_t errlen)
{
    char digits[32];
    size_t n = strlen(v);
    unsigned long long mult = 1;
    long long num;

    if (n > 0 && strchr("kKmMgG", v[n - 1])) {
        mult = strchr("kK", v[n - 1])   ? 1024ULL
               : strchr("mM", v[n - 1]) ? 1024ULL * 1024
                                        : 1024ULL * 1024 * 1024;
        n--;
    }
    if (n == 0 || n >= sizeof(digits))
        return cfg_bad(err, errlen, k, key, v,
                       "a number of octets, with K, M or G for 1024, 1024^2, 1024^3 (e.g. 256M)");
    memcpy(digits, v, n);
    digits[n] = '\0';
    if (cfg_parse_uint(digits, (long long)(k->max / (double)mult), &num) < 0 ||
        (double)num * (double)mult < k->min)
        return cfg_bad(err, errlen, k, key, v,
                       "a number of octets from %.0f to %.0f, with K, M or G for 1024, 1024^2, "
                       "1024^3 (e.g. 256M)",
                       k->min, k->max);
    *(unsigned long long *)cfg_field(c, k, ev, sizeof(unsigned long long)) =
        (unsigned long long)num * mult;
    return 0;
}

/* ---- printers for cfg_print ---------------------------------------------- */

static void cfg_print_addr(const struct cfg_addr *a, FILE *out)
{
    if (strchr(a->host, ':'))
        fprintf(out, "[%s]:%d", a->host, a->port);
    else
        fprintf(out, "%s:%d", a->host, a->port);
}

static void cfg_print_addrs(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    const struct cfg_addr *a = cfg_cfield(c, k, ev, 0);
    int n = *(const int *)((const char *)c + k->off2);

    for (int i = 0; i < n; i++) {
        fputs(i ? ", " : "", out);
        cfg_print_addr(&a[i], out);
    }
}

static void cfg_print_admin(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    (void)k;
    (void)ev;
    if (c->admin_listen.port)
        cfg_print_addr(&c->admin_listen, out);
}

static void cfg_print_str(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    const char *s = *(char *const *)cfg_cfield(c, k, ev, sizeof(char *));

    if (s)
        fputs(k->secret ? "***" : s, out);
}

static void cfg_print_word_enum(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    int i = *(const int *)cfg_cfield(c, k, ev, sizeof(int));

    for (int j = 0; k->words[j]; j++)
        if (j == i)
            fputs(k->words[j], out);
}

static void cfg_print_tlsver(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    (void)k;
    (void)ev;
    fprintf(out, "1.%d", c->tls_min_version - 10);
}

/* Seconds with up to 6 decimals and no exponent, so the output reads back. */
static void cfg_print_seconds(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    double d = *(const double *)cfg_cfield(c, k, ev, sizeof(double));
    char buf[64];
    size_t n;

    if (k->per_event && d == 0)
        return;
    snprintf(buf, sizeof buf, "%.6f", d);
    n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
    fputs(buf, out);
}

static void cfg_print_int(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    fprintf(out, "%d", *(const int *)cfg_cfield(c, k, ev, sizeof(int)));
}

/* Octets, with the largest of G, M and K that divides them. */
static void cfg_print_size(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    unsigned long long v =
        *(const unsigned long long *)cfg_cfield(c, k, ev, sizeof(unsigned long long));
    static const char units[] = "GMK";
    int i;

    for (i = 0; v && i < 3; i++) {
        unsigned long long u = 1ULL << (10 * (3 - i));
        if (v % u == 0) {
            fprintf(out, "%llu%c", v / u, units[i]);
            return;
        }
    }
    fprintf(out, "%llu", v);
}

static void cfg_print_login_delay(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    (void)k;
    (void)ev;
    if (c->login_delay >= 0)
        fprintf(out, "%d", c->login_delay);
}

static void cfg_print_events(const struct cfg *c, const struct cfg_key *k, int ev, FILE *out)
{
    (void)k;
    (void)ev;
    fputs(c->event_connect ? wh_event_names[WH_CONNECT] : "", out);
    fputs(c->event_connect && c->event_disconnect ? ", " : "", out);
    fputs(c->event_disconnect ? wh_event_names[WH_DISCONNECT] : "", out);
}

/* ---- the key table ------------------------------------------------------- */

/* The words of enumerated keys: a word's index is the value stored, so each
 * list names every value of its enum (the asserts) and then NULL. */
static const char *const cfg_words_plain[] = {
    [CFG_PLAIN_TLS_ONLY] = "tls-only", [CFG_PLAIN_ALLOW] = "allow", NULL};
static const char *const cfg_words_onoff[] = {"off", "on", NULL};
static const char *const cfg_words_proxy[] = {[CFG_PROXY_OFF] = "off",
                                              [CFG_PROXY_V1] = "v1",
                                              [CFG_PROXY_V2] = "v2",
                                              [CFG_PROXY_ANY] = "any",
                                              NULL};
static const char *const cfg_words_logfmt[] = {
    [CFG_LOG_LOGFMT] = "logfmt", [CFG_LOG_JSON] = "json", NULL};
#define CFG_WORDS(w) (sizeof(w) / sizeof(w)[0] - 1)
_Static_assert(CFG_WORDS(cfg_words_plain) == CFG_PLAIN_N, "plaintext_auth: a value without a word");
_Static_assert(CFG_WORDS(cfg_words_proxy) == CFG_PROXY_N, "proxy_protocol: a value without a word");
_Static_assert(CFG_WORDS(cfg_words_logfmt) == CFG_LOG_N, "log_format: a value without a word");
_Static_assert(CFG_LOG_LOGFMT == 0 && CFG_LOG_JSON == 1, "log_init() takes 0 logfmt, 1 json");

#define F(field) offsetof(struct cfg, field)
#define ADDRS(field, n)                                                                            \
    .set = cfg_set_addrs, .print = cfg_print_addrs, .off = F(field), .off2 = F(n)
#define STR(fn, field) .set = fn, .print = cfg_print_str, .off = F(field), .str = 1
#define ENUM(field, w)                                                                             \
    .set = cfg_set_word_enum, .print = cfg_print_word_enum, .off = F(field), .words = w
#define SECS(field, lo, hi, excl)                                                                  \
    .set = cfg_set_seconds, .print = cfg_print_seconds, .off = F(field), .min = lo, .max = hi,     \
    .gt = excl
#define INT(field, lo, hi)                                                                         \
    .set = cfg_set_int, .print = cfg_print_int, .off = F(field), .min = lo, .max = hi

static const struct cfg_key cfg_keys[] = {
    {"listen", ADDRS(listen, n_listen), .note = CFG_LISTEN " when no listener is set",
     .help = "plain POP3 listeners, host:port, [IPv6]:port or *:port, comma-separated"},
    {"listen_tls", ADDRS(listen_tls, n_listen_tls),
     .help = "implicit-TLS listeners (RFC 8314, port 995 by convention)"},
    {"tls_cert", STR(cfg_set_path, tls_cert),
     .help = "certificate chain, PEM file (reloaded on SIGHUP)"},
    {"tls_key", STR(cfg_set_path, tls_key), .help = "private key, PEM file (reloaded on SIGHUP)"},
    {"tls_min_version", .set = cfg_set_tlsver, .print = cfg_print_tlsver, .def = "1.2",
     .help = "oldest TLS version accepted: 1.2 or 1.3"},
    {"plaintext_auth", ENUM(plaintext_auth, cfg_words_plain), .def = "tls-only",
     .help = "tls-only: passwords only after TLS (or from loopback); allow: also in clear"},
    {"hostname", STR(cfg_set_hostname, hostname), .note = "this machine's host name",
     .help = "name in the greeting and the APOP timestamp"},
    {"apop", ENUM(apop, cfg_words_onoff), .def = "on",
     .help = "offer APOP with a fresh timestamp per greeting: on or off"},
    {"backend_url", STR(cfg_set_url, backend_url), .note = "none (required)",
     .help = "base URL of the backend; events go to backend_url/EVENT"},
    {"backend_url_", STR(cfg_set_url, backend_url_event), .per_event = 1,
     .note = "backend_url/EVENT", .help = "URL for one event"},
    {"backend_secret", STR(cfg_set_secret, backend_secret), .secret = 1,
     .help = "whsec_ keys for Standard Webhooks signatures, space-separated (rotation)"},
    {"backend_secret_file", STR(cfg_set_path, backend_secret_file),
     .help = "file holding backend_secret (one line; read again on SIGHUP)"},
    {"backend_token", STR(cfg_set_word, backend_token), .secret = 1,
     .help = "bearer token sent to the backend"},
    {"backend_token_file", STR(cfg_set_path, backend_token_file),
     .help = "file holding backend_token (one line; read again on SIGHUP)"},
    {"spool_dir", STR(cfg_set_path, spool_dir),
     .note = "the system's temporary directory ($TMPDIR, else /tmp)",
     .help = "where slow clients' messages wait, in unlinked files; empty turns spooling off"},
    {"spool_max", .set = cfg_set_size, .print = cfg_print_size, .off = F(spool_max), .min = 0,
     .max = 1099511627776.0, .def = "256M",
     .help = "octets one session may hold in its spool file (K, M, G allowed)"},
    {"backend_ca_file", STR(cfg_set_path, backend_ca_file), .note = "system CAs",
     .help = "CA certificates for an https backend, PEM file"},
    {"backend_cert", STR(cfg_set_path, backend_cert),
     .help = "client certificate for the backend, PEM file"},
    {"backend_key", STR(cfg_set_path, backend_key), .help = "client certificate's key, PEM file"},
    {"backend_timeout", SECS(backend_timeout, 0, CFG_SECONDS_MAX, 1), .def = "10",
     .help = "seconds for a backend call, retries included"},
    {"backend_timeout_", SECS(backend_timeout_event, 0, CFG_SECONDS_MAX, 1), .per_event = 1,
     .note = "backend_timeout",
     .help = "seconds for one event's calls (retrieve: seconds without progress)"},
    {"backend_pool", INT(backend_pool, 1, 1024), .def = "16",
     .help = "keep-alive connections to the backend per worker"},
    {"max_inflight", INT(max_inflight, 1, 1000000), .def = "256",
     .help = "webhook calls in flight per worker; more wait in order"},
    {"events", .set = cfg_set_events, .print = cfg_print_events,
     .help = "optional events to send, comma-separated: connect, disconnect"},
    {"admin_listen", .set = cfg_set_admin, .print = cfg_print_admin, .def = "127.0.0.1:8110",
     .help = "admin HTTP endpoint, host:port; empty disables it"},
    {"admin_token", STR(cfg_set_word, admin_token), .secret = 1,
     .help = "bearer token for the admin endpoint (not needed for /healthz, /readyz)"},
    {"admin_token_file", STR(cfg_set_path, admin_token_file),
     .help = "file holding admin_token (one line; read again on SIGHUP)"},
    {"workers", .set = cfg_set_workers, .print = cfg_print_int, .off = F(workers), .def = "auto",
     .help = "event-loop threads: auto (one per core) or 1 to 64"},
    {"user", STR(cfg_set_word, user),
     .help = "user to switch to after binding ports, when started as root"},
    {"max_connections", INT(max_connections, 1, 10000000), .def = "10000",
     .help = "client connections in total"},
    {"max_connections_per_ip", INT(max_connections_per_ip, 0, 10000000), .def = "50",
     .help = "client connections per client address (0: no per-address limit)"},
    {"login_timeout", SECS(login_timeout, 0, CFG_SECONDS_MAX, 1), .def = "60",
     .help = "seconds a client has to log in"},
    {"idle_timeout", SECS(idle_timeout, 600, CFG_SECONDS_MAX, 0), .def = "600",
     .why = "RFC 1939 requires an idle timeout of at least 10 minutes after login",
     .help = "seconds a logged-in client may stay idle (at least 600)"},
    {"send_timeout", SECS(send_timeout, 0, CFG_SECONDS_MAX, 1), .def = "60",
     .help = "seconds a client may stall a reply"},
    {"max_bad_commands", INT(max_bad_commands, 1, 1000000), .def = "10",
     .help = "invalid commands before the connection is closed"},
    {"shutdown_grace", SECS(shutdown_grace, 0, CFG_SECONDS_MAX, 0), .def = "10",
     .help = "seconds sessions get to finish after SIGTERM"},
    {"expire", STR(cfg_set_expire, expire),
     .help = "RFC 2449 EXPIRE to advertise: NEVER or days; empty: not advertised"},
    {"login_delay", .set = cfg_set_login_delay, .print = cfg_print_login_delay, .def = "",
     .help = "RFC 2449 LOGIN-DELAY to advertise, seconds; empty: not advertised"},
    {"auth_failure_delay", SECS(auth_failure_delay, 0, CFG_SECONDS_MAX, 0), .def = "2",
     .help = "seconds before the reply to a failed login"},
    {"max_auth_failures", INT(max_auth_failures, 1, 1000000), .def = "3",
     .help = "failed logins before the connection is closed"},
    {"max_auth_failures_per_ip", INT(max_auth_failures_per_ip, 0, 1000000), .def = "20",
     .help = "failed logins per client address per 10 minutes before it is refused a while "
             "(0: no limit)"},
    {"max_messages", INT(max_messages, 1, 100000000), .def = "100000",
     .help = "most messages a backend listing may return"},
    {"proxy_protocol", ENUM(proxy_protocol, cfg_words_proxy), .def = "off",
     .help = "PROXY protocol header expected: off, v1, v2 or any"},
    {"proxy_trusted", STR(cfg_set_cidrs, proxy_trusted),
     .help = "networks allowed to send the PROXY header, comma-separated CIDRs"},
    {"log_format", ENUM(log_format, cfg_words_logfmt), .def = "logfmt",
     .help = "log line format: logfmt or json"},
    {"log_level", ENUM(log_level, log_level_names), .def = "info",
     .help = "most verbose level logged: error, warn, info or debug"},
};

#define CFG_NKEYS (sizeof cfg_keys / sizeof cfg_keys[0])

/* The row of a key name; *ev is the event of a per-event key, else -1. */
static const struct cfg_key *cfg_key_find(const char *name, int *ev)
{
    *ev = -1;
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        size_t n = strlen(k->name);
        if (!k->per_event) {
            if (strcmp(name, k->name) == 0)
                return k;
            continue;
        }
        if (strncmp(name, k->name, n) != 0)
            continue;
        for (int e = 0; e < WH_N_EVENTS; e++) {
            if (strcmp(name + n, wh_event_names[e]) == 0) {
                *ev = e;
                return k;
            }
        }
    }
    return NULL;
}

/* ---- public: defaults, set, validate, print, free ------------------------- */

/* Every row's default goes through the row's setter, as if a file gave it
 * (tests/unit/test_cfg.c checks that each one is accepted); the defaults
 * that are no plain value (the rows with a note) are set here or by
 * cfg_load(). */
void cfg_defaults(struct cfg *c)
{
    char host[256], err[CFG_MSG_MAX];
    const char *tmp;

    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (k->def && !k->per_event)
            k->set(c, k, -1, k->name, k->def, err, sizeof err);
    }
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    c->hostname = strdup(host); /* NULL only without memory; cfg_validate reports it */
    tmp = getenv("TMPDIR");
    c->spool_dir = strdup(tmp && *tmp ? tmp : "/tmp"); /* NULL only without memory */
}

void cfg_pop3_params(const struct cfg *c, int tls, struct pop3_params *p)
{
    memset(p, 0, sizeof(*p));
    p->hostname = c->hostname;
    p->apop = c->apop;
    p->plaintext_always = c->plaintext_auth == CFG_PLAIN_ALLOW;
    p->stls_available = tls;
    p->max_bad_commands = c->max_bad_commands;
    p->max_auth_failures = c->max_auth_failures;
    p->expire = c->expire;
    p->login_delay = c->login_delay;
    p->max_messages = (size_t)c->max_messages;
    p->connect_event = c->event_connect;
}

void cfg_wh_params(const struct cfg *c, struct wh_params *p)
{
    int e;

    memset(p, 0, sizeof(*p));
    p->url = c->backend_url;
    for (e = 0; e < WH_N_EVENTS; e++) {
        p->url_event[e] = c->backend_url_event[e];
        p->timeout_event[e] = c->backend_timeout_event[e];
    }
    p->timeout = c->backend_timeout;
    p->pool = c->backend_pool;
    p->max_inflight = c->max_inflight;
    p->max_messages = (size_t)c->max_messages;
    p->ca_file = c->backend_ca_file;
    p->cert = c->backend_cert;
    p->key = c->backend_key;
    p->secret = c->backend_secret;
    p->token = c->backend_token;
}

int cfg_set(struct cfg *c, const char *key, const char *value, char *err, size_t errlen)
{
    const struct cfg_key *k;
    char q[400], *v;
    int ev, rc;

    if (!(k = cfg_key_find(key, &ev))) {
        cfg_quote(key, q, sizeof q);
        return cfg_fail(err, errlen, "unknown key \"%s\" (pop3gw --help lists the keys)", q);
    }
    if (!(v = strdup(value ? value : "")))
        return cfg_oom(err, errlen);
    rc = k->set(c, k, ev, key, cfg_trim(v), err, errlen);
    util_free_secret(&v);
    return rc;
}

static int cfg_check_plaintext(const struct cfg *c, char *err, size_t errlen)
{
    char where[300];

    if (c->plaintext_auth != CFG_PLAIN_TLS_ONLY || c->tls_cert)
        return 0;
    for (int i = 0; i < c->n_listen; i++) {
        /* Behind a PROXY-protocol balancer the clients are whoever the
         * header names: a loopback listener does not make them local. */
        if (cfg_is_loopback(c->listen[i].host) && c->proxy_protocol == CFG_PROXY_OFF)
            continue;
        snprintf(where, sizeof where, strchr(c->listen[i].host, ':') ? "[%s]:%d" : "%s:%d",
                 c->listen[i].host, c->listen[i].port);
        return cfg_fail(
            err, errlen,
            "plaintext_auth = tls-only (the default) accepts passwords only after TLS, but no "
            "certificate is set and listen includes %s, %s: clients there "
            "could never log in with USER/PASS or AUTH. Either set tls_cert and tls_key "
            "(clients then use STLS), or set plaintext_auth = allow to accept passwords in "
            "clear text%s",
            where,
            c->proxy_protocol != CFG_PROXY_OFF ? "whose clients are remote (proxy_protocol is on)"
                                               : "which is not loopback",
            c->proxy_protocol != CFG_PROXY_OFF
                ? ""
                : ", or listen on loopback only (127.0.0.1, ::1 or localhost)");
    }
    return 0;
}

int cfg_validate(const struct cfg *c, char *err, size_t errlen)
{
    if (!c->backend_url)
        return cfg_fail(err, errlen,
                        "backend_url is required: the base URL of your backend, e.g. "
                        "backend_url = http://127.0.0.1:8080/pop3");
    if (!c->hostname)
        return cfg_fail(err, errlen, "hostname: out of memory");
    if (c->n_listen == 0 && c->n_listen_tls == 0)
        return cfg_fail(err, errlen,
                        "no listener: set listen (plain POP3, e.g. listen = 0.0.0.0:110) or "
                        "listen_tls (implicit TLS, e.g. listen_tls = 0.0.0.0:995)");
    if (c->tls_cert && !c->tls_key)
        return cfg_fail(err, errlen, "tls_cert is set but tls_key is not: set both PEM files");
    if (c->tls_key && !c->tls_cert)
        return cfg_fail(err, errlen, "tls_key is set but tls_cert is not: set both PEM files");
    if (c->n_listen_tls > 0 && !c->tls_cert)
        return cfg_fail(err, errlen,
                        "listen_tls needs a certificate: set tls_cert and tls_key (PEM files)");
    if (c->proxy_protocol != CFG_PROXY_OFF && !c->proxy_trusted)
        return cfg_fail(err, errlen,
                        "proxy_protocol = %s needs proxy_trusted: the networks allowed to send "
                        "the PROXY header (your load balancers), e.g. proxy_trusted = 10.0.0.0/8",
                        cfg_words_proxy[c->proxy_protocol]);
    return cfg_check_plaintext(c, err, errlen);
}

void cfg_print(const struct cfg *c, FILE *out)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        for (int e = 0; e < (k->per_event ? WH_N_EVENTS : 1); e++) {
            fprintf(out, "%s%s = ", k->name, k->per_event ? wh_event_names[e] : "");
            k->print(c, k, k->per_event ? e : -1, out);
            fputc('\n', out);
        }
    }
}

/* Frees one string field; secrets are wiped first. */
static void cfg_free_str(char **s, int secret)
{
    if (secret)
        util_free_secret(s);
    free(*s);
    *s = NULL;
}

const char *cfg_key_info(size_t i, int *per_event, const char **def, const char **note)
{
    if (i >= CFG_NKEYS)
        return NULL;
    *per_event = cfg_keys[i].per_event;
    *def = cfg_keys[i].def;
    *note = cfg_keys[i].note;
    return cfg_keys[i].name;
}

/* Frees every string key of the table, and health_url (a flag, not a key). */
void cfg_free(struct cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        for (int e = 0; k->str && e < (k->per_event ? WH_N_EVENTS : 1); e++)
            cfg_free_str(cfg_field(c, k, e, sizeof(char *)), k->secret);
    }
    cfg_free_str(&c->health_url, 0);
}

/* ---- loading: file, environment, flags ------------------------------------ */

struct cfg_loader {
    struct cfg *c;
    char *err;
    size_t errlen;
    int listeners_given; /* some source named listen or listen_tls */
};

/* Sets one key from a source named in messages ("file:3", "flag --x"). */
static int cfg_apply(struct cfg_loader *ld, const char *key, const char *value, const char *source)
{
    char msg[CFG_MSG_MAX];

    if (strcmp(key, "listen") == 0 || strcmp(key, "listen_tls") == 0)
        ld->listeners_given = 1;
    if (cfg_set(ld->c, key, value, msg, sizeof msg) == 0)
        return 0;
    return cfg_fail(ld->err, ld->errlen, "%s: %s", source, msg);
}

struct cfg_file {
    struct cfg_loader *ld;
    const char *path;
    FILE *f;
    char *line; /* getline() buffer */
    size_t cap;
    int lineno;
    int failed; /* a message is in ld->err; the rest of the file is skipped */
};

static int cfg_file_fail(struct cfg_file *cf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports "FILE:LINE: ..." once. */
static int cfg_file_fail(struct cfg_file *cf, const char *fmt, ...)
{
    char msg[CFG_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!cf->failed)
        cfg_fail(cf->ld->err, cf->ld->errlen, "%s:%d: %s", cf->path, cf->lineno, msg);
    cf->failed = 1;
    return -1;
}

/* inih calls this for each key = value (registered in cfg_load_file). */
static int cfg_file_handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_file *cf = user;
    char src[CFG_MSG_MAX], q[400];
    int ev;

    if (cf->failed)
        return 1;
    if (section && *section) {
        cfg_file_fail(cf, "keys in sections are not supported: write keys at the top level, "
                          "without [section] lines");
        return 0;
    }
    if (!cfg_key_find(name, &ev)) {
        cfg_quote(name, q, sizeof q);
        cfg_file_fail(cf, "unknown key \"%s\" (pop3gw --help lists the keys)", q);
        return 0;
    }
    snprintf(src, sizeof src, "%s:%d", cf->path, cf->lineno);
    if (cfg_apply(cf->ld, name, value, src) < 0) {
        cf->failed = 1;
        return 0;
    }
    return 1;
}

/* A line too long for inih's fixed buffer: `key = value`, parsed here the way
 * inih would (a ';' after a blank starts a comment). */
static void cfg_file_long_line(struct cfg_file *cf, char *s)
{
    char *eq, *semi;

    if (*s == '#' || *s == ';')
        return;
    if (!(eq = strchr(s, '='))) {
        cfg_file_fail(cf, "expected `key = value` or a # comment");
        return;
    }
    *eq = '\0';
    for (semi = eq + 1; (semi = strchr(semi, ';')) != NULL; semi++) {
        if (cfg_is_blank((unsigned char)semi[-1])) {
            *semi = '\0';
            break;
        }
    }
    cfg_file_handler(cf, "", cfg_trim(s), cfg_trim(eq + 1));
}

/* inih's line reader (an ini_reader): hands inih one line at a time. */
static char *cfg_file_reader(char *str, int num, void *stream)
{
    struct cfg_file *cf = stream;
    ssize_t n = getline(&cf->line, &cf->cap, cf->f);
    char *s;

    if (n < 0)
        return NULL;
    cf->lineno++;
    s = cfg_trim(cf->line);
    str[0] = '\0';
    if (cf->failed)
        return str;
    if (*s == '[') {
        cfg_file_fail(cf, "sections are not supported: write keys at the top level, without "
                          "[section] lines");
        return str;
    }
    if (strlen(s) + 1 >= (size_t)num) {
        cfg_file_long_line(cf, s);
        return str;
    }
    memcpy(str, s, strlen(s) + 1);
    return str;
}

static int cfg_load_file(struct cfg_loader *ld, const char *path)
{
    struct cfg_file cf = {.ld = ld, .path = path};
    int rc;

    if (!(cf.f = fopen(path, "r")))
        return cfg_fail(ld->err, ld->errlen, "cannot read config file %s: %m", path);
    rc = ini_parse_stream(cfg_file_reader, &cf, cfg_file_handler, &cf);
    fclose(cf.f);
    if (cf.line)
        util_wipe(cf.line, cf.cap); /* lines may hold secrets */
    free(cf.line);
    if (cf.failed)
        return -1;
    if (rc == -2)
        return cfg_oom(ld->err, ld->errlen);
    if (rc != 0)
        return cfg_fail(ld->err, ld->errlen, "%s:%d: expected `key = value` or a # comment", path,
                        rc);
    return 0;
}

static int cfg_load_env(struct cfg_loader *ld, char **envp)
{
    const size_t plen = strlen(CFG_ENV_PREFIX);

    for (char **e = envp; e && *e; e++) {
        const char *name = *e + plen, *eq;
        char key[CFG_KEY_MAX], src[CFG_KEY_MAX + 40];
        size_t n;
        int ev, ok = 1;

        if (strncmp(*e, CFG_ENV_PREFIX, plen) != 0 || !(eq = strchr(name, '=')))
            continue;
        n = (size_t)(eq - name);
        if (n == 0 || n >= sizeof key)
            ok = 0;
        for (size_t i = 0; ok && i < n; i++) {
            if (!isupper((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) &&
                name[i] != '_')
                ok = 0;
            key[i] = (char)tolower((unsigned char)name[i]);
        }
        snprintf(src, sizeof src, "environment " CFG_ENV_PREFIX "%.*s",
                 (int)(n < CFG_KEY_MAX ? n : CFG_KEY_MAX), name);
        if (ok)
            key[n] = '\0';
        if (!ok || !cfg_key_find(key, &ev))
            return cfg_fail(ld->err, ld->errlen,
                            "%s: unknown variable: not a pop3gw key (pop3gw --help lists "
                            "the keys; the variable is POP3GW_ and the key in upper case)",
                            src);
        if (cfg_apply(ld, key, eq + 1, src) < 0)
            return -1;
    }
    return 0;
}

struct cfg_args {
    const char *path; /* -c FILE */
    int help, version;
    int failed; /* first error is in the loader's err */
};

static void cfg_args_fail(struct cfg_loader *ld, struct cfg_args *a, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfg_args_fail(struct cfg_loader *ld, struct cfg_args *a, const char *fmt, ...)
{
    char msg[CFG_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!a->failed)
        cfg_fail(ld->err, ld->errlen, "%s", msg);
    a->failed = 1;
}

/*
 * Walks the command line. First pass (apply = 0): finds -c, --help and
 * --version and notes the first malformed flag; second pass (apply = 1): sets
 * the keys, after the file and the environment. `--key=value` and
 * `--key value`; '-' in a key name may stand for '_'.
 */
static void cfg_walk_args(struct cfg_loader *ld, struct cfg_args *a, int argc, char **argv,
                          int apply)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *eq, *value;
        char key[CFG_KEY_MAX], q[400], src[CFG_KEY_MAX + 10];
        size_t n;
        int ev;

        if (strcmp(arg, "-c") == 0 || strcmp(arg, "--config") == 0 ||
            strncmp(arg, "--config=", 9) == 0) {
            const char *path;
            if (strncmp(arg, "--config=", 9) == 0)
                path = arg + 9;
            else
                path = i + 1 < argc ? argv[++i] : NULL;
            if (!path || !*path)
                cfg_args_fail(ld, a, "%s needs a file name", arg);
            else if (!apply && a->path)
                cfg_args_fail(ld, a, "only one config file may be given (-c %s, -c %s)", a->path,
                              path);
            else if (!apply)
                a->path = path;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = 1;
            continue;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            a->version = 1;
            continue;
        }
        if (strcmp(arg, "--check-config") == 0 || strcmp(arg, "--check_config") == 0) {
            ld->c->check_config = 1;
            continue;
        }
        if (strcmp(arg, "--health") == 0 || strncmp(arg, "--health=", 9) == 0) {
            ld->c->health = 1;
            if (apply && arg[8] == '=') {
                free(ld->c->health_url);
                ld->c->health_url = strdup(arg + 9);
            }
            continue;
        }
        cfg_quote(arg, q, sizeof q);
        if (strncmp(arg, "--", 2) != 0 || !arg[2]) {
            cfg_args_fail(ld, a, "unexpected argument \"%s\": flags are --key=value", q);
            continue;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        n = eq ? (size_t)(eq - name) : strlen(name);
        if (n >= sizeof key) {
            cfg_args_fail(ld, a, "unknown flag \"%s\" (pop3gw --help lists them)", q);
            continue;
        }
        for (size_t j = 0; j < n; j++)
            key[j] = name[j] == '-' ? '_' : name[j];
        key[n] = '\0';
        if (!cfg_key_find(key, &ev)) {
            cfg_args_fail(ld, a, "unknown flag --%s (pop3gw --help lists them)", key);
            continue;
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            cfg_args_fail(ld, a, "flag --%s needs a value: --%s=VALUE", key, key);
            continue;
        }
        snprintf(src, sizeof src, "flag --%s", key);
        if (apply && !a->failed && cfg_apply(ld, key, value, src) < 0)
            a->failed = 1;
    }
}

/* ---- secrets from files -------------------------------------------------- */

#define CFG_SECRET_FILE_MAX 65536 /* bytes a secret file may hold */

/* The secret keys that may come from a file, and the key naming the file. */
static const struct {
    const char *key, *file_key;
    size_t file_off; /* the file key's field in struct cfg */
} cfg_secret_files[] = {
    {"backend_secret", "backend_secret_file", F(backend_secret_file)},
    {"backend_token", "backend_token_file", F(backend_token_file)},
    {"admin_token", "admin_token_file", F(admin_token_file)},
};

/*
 * Reads one secret file into *out (a heap string the caller wipes and
 * frees): a regular file of at most CFG_SECRET_FILE_MAX bytes holding one
 * line; the line's end (LF or CRLF) is dropped. Opened without blocking,
 * so a FIFO or a device named by mistake is refused instead of waited on.
 * 0, or -1 with a message naming the file key and the path.
 */
static int cfg_read_secret_file(const char *file_key, const char *path, char **out, char *err,
                                size_t errlen)
{
    char q[400], *buf = NULL;
    const char *why = NULL;
    struct stat st;
    ssize_t n = 0, got;
    int fd;

    *out = NULL;
    cfg_quote(path, q, sizeof q);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
        return cfg_fail(err, errlen, "%s: cannot read \"%s\": %s", file_key, q, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if (st.st_size > CFG_SECRET_FILE_MAX)
        why = "larger than 64 KiB: it should hold one value";
    else if (!(buf = malloc(CFG_SECRET_FILE_MAX + 1)))
        why = "out of memory";
    while (!why && (got = read(fd, buf + n, (size_t)(CFG_SECRET_FILE_MAX + 1 - n))) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            why = strerror(errno);
        else if ((n += got) > CFG_SECRET_FILE_MAX)
            why = "larger than 64 KiB: it should hold one value";
    }
    close(fd);
    if (!why) {
        buf[n] = '\0';
        if (n > 0 && buf[n - 1] == '\n')
            buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '\r')
            buf[--n] = '\0';
        if (n == 0)
            why = "empty: it should hold the value on one line";
        else if (memchr(buf, '\n', (size_t)n) || memchr(buf, '\r', (size_t)n) ||
                 strlen(buf) != (size_t)n)
            why = "more than one line: it should hold the value on one line";
    }
    if (why) {
        if (buf)
            util_wipe(buf, CFG_SECRET_FILE_MAX + 1);
        free(buf);
        return cfg_fail(err, errlen, "%s: \"%s\": %s", file_key, q, why);
    }
    *out = buf;
    return 0;
}

/* Each secret given as a file is read and set through its key's own setter
 * (so it is checked as if given directly, and masked in messages). A key
 * set both directly and as a file, in any sources, is an error. */
static int cfg_read_secret_files(struct cfg *c, char *err, size_t errlen)
{
    char msg[CFG_MSG_MAX], q[400], *v;
    int ev, rc;

    for (size_t i = 0; i < sizeof cfg_secret_files / sizeof cfg_secret_files[0]; i++) {
        const char *path = *(char **)((char *)c + cfg_secret_files[i].file_off);
        const struct cfg_key *k = cfg_key_find(cfg_secret_files[i].key, &ev);
        if (!path)
            continue;
        if (*(char **)cfg_field(c, k, -1, sizeof(char *)))
            return cfg_fail(err, errlen,
                            "%s and %s are both set: set one of them (an empty value unsets a "
                            "key an earlier source set)",
                            cfg_secret_files[i].key, cfg_secret_files[i].file_key);
        if (cfg_read_secret_file(cfg_secret_files[i].file_key, path, &v, err, errlen) < 0)
            return -1;
        rc = cfg_set(c, k->name, v, msg, sizeof msg);
        util_free_secret(&v);
        if (rc < 0) {
            cfg_quote(path, q, sizeof q);
            return cfg_fail(err, errlen, "%s: \"%s\": %s", cfg_secret_files[i].file_key, q, msg);
        }
    }
    return 0;
}

static void cfg_usage(FILE *out)
{
    char name[CFG_KEY_MAX];

    fprintf(out,
            "usage: pop3gw [-c FILE] [--check-config] [--KEY=VALUE ...]\n"
            "       pop3gw --health[=URL] | --help | --version\n"
            "\n"
            "Every key can be set in FILE as `key = value` (# starts a comment), in the\n"
            "environment as POP3GW_KEY (upper case) and as a flag --key=value or --key value;\n"
            "flags beat the environment, which beats the file.\n"
            "\n"
            "  -c FILE, --config=FILE      read keys from FILE\n"
            "  --check-config              check, print the effective config (secrets masked)\n"
            "  --health[=URL]              probe the admin /healthz (default: admin_listen); exit "
            "0 when healthy\n"
            "  -h, --help                  this text\n"
            "  -V, --version               print the version\n"
            "\n"
            "keys (EVENT is one of");
    for (int e = 0; e < WH_N_EVENTS; e++)
        fprintf(out, " %s", wh_event_names[e]);
    fprintf(out, "):\n");
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        snprintf(name, sizeof name, "%s%s", k->name, k->per_event ? "EVENT" : "");
        fprintf(out, "  %-26s  %s (default: %s)\n", name, k->help,
                k->note             ? k->note
                : k->def && *k->def ? k->def
                                    : "none");
    }
}

int cfg_load(struct cfg *c, int argc, char **argv, char **envp, int *exit_now, char *err,
             size_t errlen)
{
    struct cfg_loader ld = {.c = c, .err = err, .errlen = errlen};
    struct cfg_args a = {0};
    int unused;

    if (!exit_now)
        exit_now = &unused;
    *exit_now = 0;
    if (err && errlen)
        err[0] = '\0';
    cfg_defaults(c);
    cfg_walk_args(&ld, &a, argc, argv, 0);
    if (a.help || a.version) {
        if (a.help)
            cfg_usage(stdout);
        else
            printf("pop3gw %s\n", POP3GW_VERSION);
        fflush(stdout);
        *exit_now = 1;
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    if (a.failed)
        return -1;
    if (a.path && cfg_load_file(&ld, a.path) < 0)
        return -1;
    if (cfg_load_env(&ld, envp ? envp : environ) < 0)
        return -1;
    cfg_walk_args(&ld, &a, argc, argv, 1);
    if (a.failed)
        return -1;
    if (!ld.listeners_given && c->n_listen == 0 && c->n_listen_tls == 0 &&
        cfg_set(c, "listen", CFG_LISTEN, err, errlen) < 0)
        return -1;
    return cfg_read_secret_files(c, err, errlen);
}
