/*
 * whsig: Standard Webhooks signature verification (see whsig.h). Keys are
 * decoded once at start-up; each check computes one HMAC per key with
 * OpenSSL's EVP_MAC and compares the base64 forms in constant time.
 */
#include "backends/maildir/whsig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "backends/maildir/digest.h"

#define WHSIG_MAX_KEYS 16
#define WHSIG_MAX_KEY_LEN 256
#define WHSIG_PREFIX "whsec_"

struct whsig_key {
    unsigned char bytes[WHSIG_MAX_KEY_LEN]; /* the decoded secret */
    size_t len;                             /* its length in bytes */
};

struct whsig {
    struct whsig_key keys[WHSIG_MAX_KEYS]; /* every accepted key */
    int n_keys;                            /* how many are in use */
    EVP_MAC *hmac;                         /* fetched once: fetching is slow */
};

/* Decodes one `whsec_...` word into `k`. Returns 0 or -1 with a message. */
static int whsig_parse_key(const char *word, size_t len, struct whsig_key *k, char *err,
                           size_t errlen)
{
    size_t plen = strlen(WHSIG_PREFIX);
    if (len <= plen || strncmp(word, WHSIG_PREFIX, plen) != 0) {
        snprintf(err, errlen, "secret must start with \"%s\"", WHSIG_PREFIX);
        return -1;
    }
    long n = dg_base64_decode(word + plen, len - plen, k->bytes, sizeof k->bytes);
    if (n <= 0) {
        snprintf(err, errlen, "secret is not %s followed by base64 (at most %d bytes)",
                 WHSIG_PREFIX, WHSIG_MAX_KEY_LEN);
        return -1;
    }
    k->len = (size_t)n;
    return 0;
}

struct whsig *whsig_new(const char *secrets, char *err, size_t errlen)
{
    struct whsig *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *p = secrets;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (len == 0)
            break;
        if (w->n_keys == WHSIG_MAX_KEYS) {
            snprintf(err, errlen, "at most %d secrets", WHSIG_MAX_KEYS);
            goto fail;
        }
        if (whsig_parse_key(p, len, &w->keys[w->n_keys], err, errlen) != 0)
            goto fail;
        w->n_keys++;
        p += len;
    }
    if (w->n_keys == 0) {
        snprintf(err, errlen, "no secret given");
        goto fail;
    }
    w->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (w->hmac == NULL) {
        snprintf(err, errlen, "OpenSSL has no HMAC");
        goto fail;
    }
    return w;
fail:
    whsig_free(w);
    return NULL;
}

void whsig_free(struct whsig *w)
{
    if (w == NULL)
        return;
    EVP_MAC_free(w->hmac);
    OPENSSL_cleanse(w, sizeof *w);
    free(w);
}

/* HMAC-SHA256 of id.timestamp.body under `key`, as base64 into `out`. */
static int whsig_hmac(EVP_MAC *alg, const unsigned char *key, size_t keylen, const char *id,
                      const char *timestamp, const char *body, size_t len,
                      char out[WHSIG_B64_LEN + 1])
{
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(alg);
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, keylen, params) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 &&
             EVP_MAC_final(ctx, mac, &maclen, sizeof mac) == 1 && maclen == 32;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        return -1;
    dg_base64_encode(mac, maclen, out);
    return 0;
}

int whsig_sign(const unsigned char *key, size_t keylen, const char *id, const char *timestamp,
               const char *body, size_t len, char out[WHSIG_B64_LEN + 1])
{
    EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    int ret = alg != NULL ? whsig_hmac(alg, key, keylen, id, timestamp, body, len, out) : -1;
    EVP_MAC_free(alg);
    return ret;
}

/* 1 if `ts` is a decimal Unix time within the tolerance of `now`. */
static int whsig_fresh(const char *ts, time_t now)
{
    size_t n = strspn(ts, "0123456789");
    if (n == 0 || n > 18 || ts[n] != '\0')
        return 0;
    long long t = strtoll(ts, NULL, 10);
    long long d = t - (long long)now;
    return d >= -WHSIG_TOLERANCE && d <= WHSIG_TOLERANCE;
}

/* 1 if one of the space-separated `v1,BASE64` words of `sigs` equals `want`. */
static int whsig_header_has(const char *sigs, const char want[WHSIG_B64_LEN + 1])
{
    int found = 0;
    const char *p = sigs;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        /* Every word is compared, so time does not tell which one matched. */
        if (len == 3 + WHSIG_B64_LEN && strncmp(p, "v1,", 3) == 0)
            found |= dg_equal(p + 3, want, WHSIG_B64_LEN);
        p += len;
    }
    return found;
}

const char *whsig_verify(const struct whsig *w, const char *id, const char *timestamp,
                         const char *signatures, const char *body, size_t len, time_t now)
{
    if (id == NULL || timestamp == NULL || signatures == NULL || *id == '\0')
        return "missing webhook-id, webhook-timestamp or webhook-signature header";
    if (!whsig_fresh(timestamp, now))
        return "webhook-timestamp is not within 5 minutes of the server's clock";
    int found = 0;
    for (int i = 0; i < w->n_keys; i++) {
        char want[WHSIG_B64_LEN + 1];
        if (whsig_hmac(w->hmac, w->keys[i].bytes, w->keys[i].len, id, timestamp, body, len, want) !=
            0)
            return "cannot compute signature";
        found |= whsig_header_has(signatures, want);
    }
    return found ? NULL : "no valid webhook-signature";
}
