/*
 * util: secrets, base64, text checks and clocks (see util.h).
 */
#include "lib/util.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void util_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

void util_free_secret(char **p)
{
    if (!*p)
        return;
    util_wipe(*p, strlen(*p));
    free(*p);
    *p = NULL;
}

static int util_b64_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int util_b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

unsigned char *util_b64_decode(const char *in, size_t in_len, size_t *out_len)
{
    unsigned char *txt, *out = NULL;
    size_t n = 0, pad = 0, cap, i;

    *out_len = 0;
    if (!in && in_len > 0)
        return NULL;
    /* Gather the significant characters. */
    if (!(txt = malloc(in_len + 1)))
        return NULL;
    for (i = 0; i < in_len; i++)
        if (!util_b64_space(in[i]))
            txt[n++] = (unsigned char)in[i];
    /* Quads of the alphabet; '=' only as the last one or two characters. */
    if (n % 4 != 0 || n / 4 * 3 > INT_MAX)
        goto done;
    if (n > 0 && txt[n - 1] == '=')
        pad = (n > 1 && txt[n - 2] == '=') ? 2 : 1;
    for (i = 0; i < n - pad; i++)
        if (!util_b64_char(txt[i]))
            goto done;
    cap = n / 4 * 3;
    if (!(out = malloc(cap + 1)))
        goto done;
    if (n > 0 && EVP_DecodeBlock(out, txt, (int)n) != (int)cap) {
        util_wipe(out, cap + 1);
        free(out);
        out = NULL;
        goto done;
    }
    *out_len = cap - pad;
    out[*out_len] = '\0';
done:
    util_wipe(txt, in_len + 1);
    free(txt);
    return out;
}

int util_has_ctl(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

size_t util_utf8_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len, i;
    unsigned cp;

    if (n == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0; /* a continuation byte, C0, C1 or F5..FF */
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, out of range, or a surrogate */
    return len;
}

int util_utf8_valid(const char *s, size_t len)
{
    size_t i = 0, k;

    if (!s)
        return len == 0;
    while (i < len) {
        if (!(k = util_utf8_len(s + i, len - i)))
            return 0;
        i += k;
    }
    return 1;
}

struct timeval util_tv(double seconds)
{
    struct timeval tv;

    if (!(seconds > 0))
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    if (tv.tv_usec > 999999)
        tv.tv_usec = 999999;
    return tv;
}

void util_ts_add_ms(struct timespec *ts, long ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

struct timeval util_tv_ms(long ms)
{
    struct timeval tv;

    if (ms < 0)
        ms = 0;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    return tv;
}

double util_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long long util_real_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
