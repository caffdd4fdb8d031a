/*
 * sasl: decoding of PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER for POP3 AUTH.
 *
 * Each mechanism is a small resumable step function: it takes one decoded
 * client response and answers with a challenge, the credentials or an
 * error. Decoded buffers are wiped before they are freed.
 */
#include "gateway/sasl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "webhook/wh_sign.h"
#include "lib/util.h"

#define SASL_LIST_PASS_(e)
#define SASL_LIST_APOP_(e)
#define SASL_LIST_AUTH_(e) SASL_##e,
const enum sasl_mech sasl_mechs[SASL_N_MECHS] = {
#define X(e, n, cmd) SASL_LIST_##cmd##_(e)
    NAMES_METHODS(X)
#undef X
};

/* sasl_take() has a decoder for each mechanism: a method added to lib/names.h
 * with AUTH needs one there too. */
_Static_assert(SASL_N_MECHS == 4, "a SASL mechanism without a decoder in sasl_take()");

/* base64("Username:") and base64("Password:"), the prompts LOGIN clients expect. */
#define SASL_LOGIN_USER "VXNlcm5hbWU6"
#define SASL_LOGIN_PASS "UGFzc3dvcmQ6"

const char *sasl_mech_name(enum sasl_mech m)
{
    int i;

    for (i = 0; i < SASL_N_MECHS; i++)
        if (sasl_mechs[i] == m)
            return wh_method_names[m];
    return "";
}

int sasl_mech_lookup(const char *name)
{
    int i;

    for (i = 0; i < SASL_N_MECHS; i++)
        if (strcasecmp(name, wh_method_names[sasl_mechs[i]]) == 0)
            return (int)sasl_mechs[i];
    return -1;
}

int sasl_mech_plaintext(enum sasl_mech m)
{
    return m == SASL_PLAIN || m == SASL_LOGIN;
}

const char *sasl_oauth_error_challenge(enum sasl_mech m)
{
    /* base64 of {"status":"401","schemes":"bearer"} (XOAUTH2) and of
     * {"status":"invalid_token"} (OAUTHBEARER, RFC 7628 §3.2.2). */
    return m == SASL_XOAUTH2 ? "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0="
                             : "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=";
}

void sasl_clear(struct sasl *s)
{
    util_free_secret(&s->user);
    util_free_secret(&s->authzid);
    util_free_secret(&s->password);
    util_free_secret(&s->token);
    s->step = 0;
    s->why = NULL;
}

/* Decodes a client response; "=" is the empty response. NULL on bad base64. */
static unsigned char *sasl_decode(const char *line, size_t *len)
{
    if (strcmp(line, "=") == 0 || *line == '\0') {
        unsigned char *e = calloc(1, 1);
        *len = 0;
        return e;
    }
    return util_b64_decode(line, strlen(line), len);
}

static char *sasl_dup(const unsigned char *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static enum sasl_rc sasl_bad(struct sasl *s, const char *why)
{
    s->why = why;
    return SASL_BAD;
}

/* PLAIN: [authzid] NUL authcid NUL password (RFC 4616). */
static enum sasl_rc sasl_plain(struct sasl *s, const unsigned char *d, size_t n)
{
    const unsigned char *a = d, *b, *c;

    b = memchr(a, 0, n);
    if (!b)
        return sasl_bad(s, "PLAIN: missing separators");
    b++;
    c = memchr(b, 0, n - (size_t)(b - d));
    if (!c)
        return sasl_bad(s, "PLAIN: missing separators");
    c++;
    if (memchr(c, 0, n - (size_t)(c - d)))
        return sasl_bad(s, "PLAIN: too many separators");
    if (c - b == 1)
        return sasl_bad(s, "PLAIN: empty user name");
    s->authzid = b - a > 1 ? sasl_dup(a, (size_t)(b - a - 1)) : NULL;
    s->user = sasl_dup(b, (size_t)(c - b - 1));
    s->password = sasl_dup(c, n - (size_t)(c - d));
    if (!s->user || !s->password || (b - a > 1 && !s->authzid))
        return sasl_bad(s, "out of memory");
    return SASL_DONE;
}

/* LOGIN: the user name, then the password, each after its prompt. */
static enum sasl_rc sasl_login(struct sasl *s, const unsigned char *d, size_t n, char *chal,
                               size_t chal_len)
{
    if (memchr(d, 0, n))
        return sasl_bad(s, "LOGIN: NUL in response");
    if (!s->user) {
        if (n == 0)
            return sasl_bad(s, "LOGIN: empty user name");
        if (!(s->user = sasl_dup(d, n)))
            return sasl_bad(s, "out of memory");
        snprintf(chal, chal_len, "%s", SASL_LOGIN_PASS);
        return SASL_CONTINUE;
    }
    if (!(s->password = sasl_dup(d, n)))
        return sasl_bad(s, "out of memory");
    return SASL_DONE;
}

/* Takes "Bearer TOKEN" from an auth= value. */
static int sasl_bearer(struct sasl *s, const unsigned char *v, size_t n)
{
    if (n < 8 || strncasecmp((const char *)v, "Bearer ", 7) != 0)
        return -1;
    v += 7;
    n -= 7;
    if (n == 0 || memchr(v, 0, n))
        return -1;
    s->token = sasl_dup(v, n);
    return s->token ? 0 : -1;
}

/* XOAUTH2: "user=" name ^A "auth=Bearer " token ^A ^A. */
static enum sasl_rc sasl_xoauth2(struct sasl *s, const unsigned char *d, size_t n)
{
    const unsigned char *p = d, *end = d + n, *f;

    while (p < end && *p != 1) {
        f = memchr(p, 1, (size_t)(end - p));
        if (!f)
            return sasl_bad(s, "XOAUTH2: unterminated field");
        if ((size_t)(f - p) > 5 && memcmp(p, "user=", 5) == 0 && !s->user) {
            if (!(s->user = sasl_dup(p + 5, (size_t)(f - p - 5))))
                return sasl_bad(s, "out of memory");
        } else if ((size_t)(f - p) > 5 && memcmp(p, "auth=", 5) == 0 && !s->token) {
            if (sasl_bearer(s, p + 5, (size_t)(f - p - 5)) < 0)
                return sasl_bad(s, "XOAUTH2: auth is not a bearer token");
        }
        p = f + 1;
    }
    if (!s->token)
        return sasl_bad(s, "XOAUTH2: no token");
    return SASL_DONE;
}

/* Decodes a GS2 saslname (RFC 5801): "=2C" is ',' and "=3D" is '='. */
static char *sasl_saslname(const unsigned char *p, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    size_t i;

    if (!out)
        return NULL;
    for (i = 0; i < n; i++) {
        if (p[i] == '=') {
            if (n - i >= 3 && p[i + 1] == '2' && (p[i + 2] == 'C' || p[i + 2] == 'c'))
                *o++ = ',';
            else if (n - i >= 3 && p[i + 1] == '3' && (p[i + 2] == 'D' || p[i + 2] == 'd'))
                *o++ = '=';
            else {
                free(out);
                return NULL;
            }
            i += 2;
        } else if (p[i] == ',' || p[i] == 0) {
            free(out);
            return NULL;
        } else {
            *o++ = (char)p[i];
        }
    }
    *o = '\0';
    return out;
}

/* OAUTHBEARER: gs2-header ^A key=value ^A ... ^A (RFC 7628 §3.1). */
static enum sasl_rc sasl_oauthbearer(struct sasl *s, const unsigned char *d, size_t n)
{
    const unsigned char *end = d + n, *f, *p, *a;

    f = memchr(d, 1, n);
    if (!f || f - d < 3 || (d[0] != 'n' && d[0] != 'y') || d[1] != ',')
        return sasl_bad(s, "OAUTHBEARER: bad GS2 header");
    /* gs2-header: cbind-flag "," [authzid] "," */
    p = d + 2;
    a = memchr(p, ',', (size_t)(f - p));
    if (!a || a + 1 != f)
        return sasl_bad(s, "OAUTHBEARER: bad GS2 header");
    if (a > p) {
        if (a - p < 3 || p[0] != 'a' || p[1] != '=')
            return sasl_bad(s, "OAUTHBEARER: bad authzid");
        if (!(s->user = sasl_saslname(p + 2, (size_t)(a - p - 2))))
            return sasl_bad(s, "OAUTHBEARER: bad authzid");
    }
    for (p = f + 1; p < end && *p != 1; p = f + 1) {
        f = memchr(p, 1, (size_t)(end - p));
        if (!f)
            return sasl_bad(s, "OAUTHBEARER: unterminated field");
        if ((size_t)(f - p) > 5 && memcmp(p, "auth=", 5) == 0 && !s->token &&
            sasl_bearer(s, p + 5, (size_t)(f - p - 5)) < 0)
            return sasl_bad(s, "OAUTHBEARER: auth is not a bearer token");
    }
    if (!s->token)
        return sasl_bad(s, "OAUTHBEARER: no token");
    return SASL_DONE;
}

static enum sasl_rc sasl_take(struct sasl *s, const char *line, char *chal, size_t chal_len)
{
    unsigned char *d;
    size_t n = 0;
    enum sasl_rc rc;

    if (strcmp(line, "*") == 0)
        return SASL_CANCEL;
    d = sasl_decode(line, &n);
    if (!d)
        return sasl_bad(s, "bad base64");
    s->step++;
    switch (s->mech) {
    case SASL_PLAIN:
        rc = sasl_plain(s, d, n);
        break;
    case SASL_LOGIN:
        rc = sasl_login(s, d, n, chal, chal_len);
        break;
    case SASL_XOAUTH2:
        rc = sasl_xoauth2(s, d, n);
        break;
    case SASL_OAUTHBEARER:
        rc = sasl_oauthbearer(s, d, n);
        break;
    default:
        abort();
    }
    util_wipe(d, n);
    free(d);
    return rc;
}

enum sasl_rc sasl_start(struct sasl *s, enum sasl_mech m, const char *initial, char *chal,
                        size_t chal_len)
{
    sasl_clear(s);
    s->mech = m;
    if (chal_len)
        chal[0] = '\0';
    if (initial)
        return sasl_take(s, initial, chal, chal_len);
    if (m == SASL_LOGIN)
        snprintf(chal, chal_len, "%s", SASL_LOGIN_USER);
    return SASL_CONTINUE;
}

enum sasl_rc sasl_step(struct sasl *s, const char *line, char *chal, size_t chal_len)
{
    if (chal_len)
        chal[0] = '\0';
    return sasl_take(s, line, chal, chal_len);
}
