/*
 * fuzz_sasl: the SASL decoders (gateway/sasl.c: PLAIN, LOGIN, XOAUTH2,
 * OAUTHBEARER) and the base64 decoder under them (webhook/wh_sign.c).
 *
 * Input: byte 0 = mode: bits 0-1 the mechanism, bit 2 "the first line is
 * the AUTH command's initial response", bit 3 "the lines are raw: base64 them
 * here first" (so the fuzzer reaches the mechanisms' own parsing without
 * having to invent valid base64; a raw line "*" or "=" stays as it is).
 * The rest: client lines separated by '\n'.
 *
 * Checks: a challenge is NUL-terminated inside its buffer; SASL_DONE comes
 * with the credentials the mechanism promises, SASL_BAD with a reason; a raw
 * PLAIN message decodes to exactly its three parts; every raw line survives
 * a base64 round trip through util_b64_decode(); sasl_clear() leaves nothing
 * (LeakSanitizer checks the frees).
 */
#include "fuzz.h"

#include <strings.h>

#include "gateway/sasl.h"
#include "webhook/wh_sign.h"
#include "lib/util.h"

#define CHAL_LEN 64
#define MAX_STEPS 8

/* Standard base64 with padding (RFC 4648 section 4). */
static char *b64_encode(const uint8_t *p, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    size_t i;

    FUZZ_CHECK(out != NULL);
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        *o++ = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

/* The base64 decoder must invert our encoder exactly. */
static void check_roundtrip(const uint8_t *p, size_t n, const char *b64)
{
    size_t got = 0;
    unsigned char *dec = util_b64_decode(b64, strlen(b64), &got);

    FUZZ_CHECK(dec != NULL);
    FUZZ_CHECK(got == n);
    FUZZ_CHECK(n == 0 || memcmp(dec, p, n) == 0);
    FUZZ_CHECK(dec[got] == '\0');
    free(dec);
}

/* PLAIN of a raw message: authzid NUL authcid NUL password, exactly. */
static void check_plain(const struct sasl *s, const uint8_t *p, size_t n)
{
    const uint8_t *z1 = memchr(p, 0, n), *z2;
    size_t a, u;

    FUZZ_CHECK(z1 != NULL);
    z2 = memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - p));
    FUZZ_CHECK(z2 != NULL);
    a = (size_t)(z1 - p);
    u = (size_t)(z2 - z1 - 1);
    FUZZ_CHECK(s->user && strlen(s->user) == u && memcmp(s->user, z1 + 1, u) == 0);
    FUZZ_CHECK(s->password && strlen(s->password) == n - a - u - 2 &&
               memcmp(s->password, z2 + 1, n - a - u - 2) == 0);
    if (a == 0)
        FUZZ_CHECK(s->authzid == NULL);
    else
        FUZZ_CHECK(s->authzid && strlen(s->authzid) == a && memcmp(s->authzid, p, a) == 0);
}

static void check_result(const struct sasl *s, enum sasl_rc rc, const char *chal)
{
    FUZZ_CHECK(memchr(chal, '\0', CHAL_LEN) != NULL);
    switch (rc) {
    case SASL_CONTINUE:
        FUZZ_CHECK(s->mech == SASL_LOGIN || chal[0] == '\0');
        break;
    case SASL_DONE:
        if (s->mech == SASL_PLAIN || s->mech == SASL_LOGIN)
            FUZZ_CHECK(s->user && *s->user && s->password);
        else
            FUZZ_CHECK(s->token && *s->token);
        break;
    case SASL_BAD:
        FUZZ_CHECK(s->why != NULL);
        break;
    case SASL_CANCEL:
        break;
    default:
        FUZZ_CHECK(0);
    }
}

/* Line i of the input after byte 0, as the client would send it. */
static char *take_line(const uint8_t *p, size_t n, int raw)
{
    char *line;

    if (raw && !(n == 1 && (p[0] == '*' || p[0] == '='))) {
        line = b64_encode(p, n);
        check_roundtrip(p, n, line);
        return line;
    }
    return fuzz_strndup(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sasl s;
    enum sasl_mech mech;
    enum sasl_rc rc;
    int initial, raw, steps = 0;
    size_t pos, nlines = 0, i;
    size_t off[MAX_STEPS], len[MAX_STEPS];
    char *chal, *line;

    if (size < 1)
        return 0;
    mech = sasl_mechs[(data[0] & 3) % SASL_N_MECHS];
    initial = (data[0] & 4) != 0;
    raw = (data[0] & 8) != 0;

    /* The names and lookups, on the input as a string. */
    {
        char *name = fuzz_strndup(data + 1, size - 1);
        int m = sasl_mech_lookup(name);
        FUZZ_CHECK(m == -1 || *sasl_mech_name((enum sasl_mech)m));
        if (m >= 0)
            FUZZ_CHECK(strcasecmp(sasl_mech_name((enum sasl_mech)m), name) == 0);
        free(name);
    }
    FUZZ_CHECK(sasl_oauth_error_challenge(mech) != NULL);

    /* The client's lines. */
    for (pos = 1; pos < size && nlines < MAX_STEPS;) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
        off[nlines] = pos;
        len[nlines++] = n;
        pos += n + 1;
    }

    memset(&s, 0, sizeof(s));
    chal = malloc(CHAL_LEN);
    FUZZ_CHECK(chal != NULL);
    i = 0;
    line = initial && nlines > 0 ? take_line(data + off[i], len[i], raw) : NULL;
    rc = sasl_start(&s, mech, line, chal, CHAL_LEN);
    for (;;) {
        check_result(&s, rc, chal);
        if (rc == SASL_DONE && raw && mech == SASL_PLAIN && line && len[i] > 1)
            check_plain(&s, data + off[i], len[i]);
        if (line)
            i++;
        free(line);
        if (rc != SASL_CONTINUE || i >= nlines || ++steps >= MAX_STEPS)
            break;
        line = take_line(data + off[i], len[i], raw);
        rc = sasl_step(&s, line, chal, CHAL_LEN);
    }
    sasl_clear(&s);
    FUZZ_CHECK(!s.user && !s.authzid && !s.password && !s.token && s.step == 0);
    free(chal);
    return 0;
}
