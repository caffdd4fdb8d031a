/*
 * content: how fast webhook/wh_content.c decodes a JSON retrieve reply
 * (`make bench-content`).
 *
 *     build/bench/content [MB] [runs]
 *
 * Builds documents of MB megabytes (default 50) in memory and feeds each to
 * the decoder in 16 KB pieces, as the webhook client would, `runs` times
 * (default 5); prints the best and median throughput in MB of body per
 * second of CPU time (1 MB = 10^6 bytes), after one run that checks every
 * byte out against wh_json_parse_content() on the whole body (whose time,
 * jansson parsing the body at once, is printed beside). The documents:
 * - text: {"content": "..."} with lines of mail text ending in \r\n,
 *   some \u00e9 and a raw UTF-8 word in each;
 * - text-ascii: the same without any escape or non-ASCII byte;
 * - base64: {"content_base64": "..."} of random bytes, one long line;
 * - base64-lines: the same with \r\n after every 76 characters.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "webhook/wh_content.h"
#include "webhook/wh_json.h"

#define PIECE 16384

struct doc {
    const char *name;
    char *body;
    size_t len;
};

static char *grow(char *b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return b;
    while (*cap < need)
        *cap = *cap ? *cap * 2 : 4096;
    b = realloc(b, *cap);
    if (!b) {
        perror("realloc");
        exit(1);
    }
    return b;
}

/* A document: head, then lines from line() until about `size` bytes, "\"}". */
static struct doc make_doc(const char *name, const char *head, size_t size,
                           size_t (*line)(char *buf, uint32_t *seed))
{
    struct doc d = {name, NULL, 0};
    size_t cap = 0;
    uint32_t seed = 12345;
    char tmp[256];

    d.body = grow(d.body, &cap, strlen(head));
    memcpy(d.body, head, strlen(head));
    d.len = strlen(head);
    while (d.len < size) {
        size_t n = line(tmp, &seed);
        d.body = grow(d.body, &cap, d.len + n + 2);
        memcpy(d.body + d.len, tmp, n);
        d.len += n;
    }
    memcpy(d.body + d.len, "\"}", 2);
    d.len += 2;
    return d;
}

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static size_t line_text(char *b, uint32_t *seed)
{
    (void)seed;
    return (size_t)sprintf(b, "%s",
                           "Dear caf\\u00e9 owner, the order of 12 cr\xc3\xa8mes arrived "
                           "on time and in good shape.\\r\\n");
}

static size_t line_ascii(char *b, uint32_t *seed)
{
    (void)seed;
    return (size_t)sprintf(b, "%s",
                           "Dear cafe owner, the order of 12 cremes arrived on time "
                           "and in good shape. Regards, the shop ");
}

static size_t b64_chars(char *b, uint32_t *seed, int crlf)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n;
    for (n = 0; n < 76; n++)
        b[n] = a[rnd(seed) % 64];
    if (crlf) {
        memcpy(b + n, "\\r\\n", 4);
        n += 4;
    }
    return n;
}

static size_t line_b64(char *b, uint32_t *seed)
{
    return b64_chars(b, seed, 0);
}

static size_t line_b64_crlf(char *b, uint32_t *seed)
{
    return b64_chars(b, seed, 1);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One decode in PIECE pieces; returns the CPU seconds it took. With want,
 * also compares every byte out (a run that is not timed). */
static double run_once(const struct doc *d, const char *want, size_t want_len, char *out)
{
    struct wh_content c;
    size_t got, at = 0;
    int bad = 0;
    double t0 = cpu_now();

    wh_content_init(&c);
    for (size_t i = 0; i < d->len && !bad; i += PIECE) {
        size_t n = d->len - i < PIECE ? d->len - i : PIECE;
        bad = wh_content_feed(&c, d->body + i, n, out, &got) < 0;
        if (want && (at + got > want_len || memcmp(want + at, out, got) != 0))
            bad = 1;
        at += got;
    }
    bad = bad || wh_content_finish(&c, out, &got) < 0;
    double t = cpu_now() - t0;
    if (bad || (want && at + got != want_len)) {
        fprintf(stderr, "%s: wrong result (%s)\n", d->name, wh_content_error(&c));
        exit(1);
    }
    wh_content_free(&c);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)atoi(argv[1]) : 50;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    size_t size = mb * 1000 * 1000;
    struct doc docs[] = {
        make_doc("text", "{\"content\":\"", size, line_text),
        make_doc("text-ascii", "{\"content\":\"", size, line_ascii),
        make_doc("base64", "{\"content_base64\":\"", size, line_b64),
        make_doc("base64-lines", "{\"content_base64\":\"", size, line_b64_crlf),
    };
    char *out = malloc(WH_CONTENT_OUT_MAX(PIECE));
    double *t = malloc(sizeof(double) * (size_t)(runs > 0 ? runs : 1));

    if (!out || !t || runs < 1)
        return 1;
    printf("%-13s %9s %9s %11s %11s %13s\n", "document", "body MB", "out MB", "best MB/s",
           "median MB/s", "jansson MB/s");
    for (size_t k = 0; k < sizeof(docs) / sizeof(docs[0]); k++) {
        const struct doc *d = &docs[k];
        const char *err;
        size_t want_len;
        double t0 = cpu_now();
        char *want = wh_json_parse_content(d->body, d->len, &want_len, &err);
        double tj = cpu_now() - t0;
        if (!want) {
            fprintf(stderr, "%s: jansson refuses it: %s\n", d->name, err);
            return 1;
        }
        run_once(d, want, want_len, out);
        for (int r = 0; r < runs; r++)
            t[r] = run_once(d, NULL, 0, out);
        qsort(t, (size_t)runs, sizeof(double), cmp_double);
        double body_mb = (double)d->len / 1e6;
        printf("%-13s %9.1f %9.1f %11.0f %11.0f %13.0f\n", d->name, body_mb, (double)want_len / 1e6,
               body_mb / t[0], body_mb / t[runs / 2], body_mb / tj);
        free(want);
        free(d->body);
    }
    free(out);
    free(t);
    return 0;
}
