/*
 * wh_sign: Standard Webhooks signatures.
 *
 * A secret is "whsec_" followed by the key in standard base64. The signature
 * of one request is HMAC-SHA256 over "ID.TIMESTAMP.BODY" (the exact bytes
 * sent), written as "v1," and the MAC in base64. With several keys (rotation)
 * the header carries one such value per key, separated by single spaces, in
 * the order the secrets were configured.
 *
 * HMAC comes from OpenSSL's EVP_MAC interface (streamed, so the body is not
 * copied), base64 from EVP_EncodeBlock / EVP_DecodeBlock. EVP_DecodeBlock is
 * lenient about where '=' may stand and counts padding as output bytes, so
 * the input is checked here first and the padding subtracted.
 */
#include "webhook/wh_sign.h"

#include "lib/util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SECRET_PREFIX "whsec_"
#define SECRET_PREFIX_LEN (sizeof(SECRET_PREFIX) - 1)
#define KEY_MAX ((int)sizeof(((struct wh_keys *)0)->key[0]))
#define MAC_LEN 32

/* Keys are separated by blanks. */
static int wh_sign_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void wh_keys_clear(struct wh_keys *k)
{
    util_wipe(k, sizeof(*k));
}

int wh_keys_parse(struct wh_keys *k, const char *secrets)
{
    wh_keys_clear(k);
    if (!secrets)
        return 0;

    const char *p = secrets;
    for (;;) {
        while (wh_sign_blank(*p))
            p++;
        if (*p == '\0')
            return 0;
        const char *end = p;
        while (*end != '\0' && !wh_sign_blank(*end))
            end++;

        size_t tok_len = (size_t)(end - p);
        if (k->n == WH_SIGN_KEYS_MAX || tok_len <= SECRET_PREFIX_LEN ||
            memcmp(p, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0)
            goto bad;

        size_t key_len;
        unsigned char *key =
            util_b64_decode(p + SECRET_PREFIX_LEN, tok_len - SECRET_PREFIX_LEN, &key_len);
        if (!key)
            goto bad;
        if (key_len == 0 || key_len > (size_t)KEY_MAX) {
            util_wipe(key, key_len);
            free(key);
            goto bad;
        }
        memcpy(k->key[k->n], key, key_len);
        k->key_len[k->n] = key_len;
        k->n++;
        util_wipe(key, key_len);
        free(key);
        p = end;
    }

bad:
    wh_keys_clear(k);
    return -1;
}

static int mac_update(EVP_MAC_CTX *ctx, const void *data, size_t len)
{
    return len == 0 || EVP_MAC_update(ctx, data, len);
}

int wh_sign(const struct wh_keys *k, const char *id, long long timestamp, const char *body,
            size_t body_len, char *out, size_t outlen)
{
    if (!id || (!body && body_len > 0) || k->n < 0 || k->n > WH_SIGN_KEYS_MAX)
        return -1;
    size_t need = WH_SIGN_LEN(k->n);
    if (outlen < need + 1)
        return -1;
    out[0] = '\0';
    if (k->n == 0)
        return 0;

    char ts[32];
    int ts_len = snprintf(ts, sizeof(ts), "%lld", timestamp);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return -1;

    int rc = 0;
    size_t pos = 0;
    for (int i = 0; i < k->n && rc == 0; i++) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        unsigned char md[MAC_LEN];
        size_t md_len = 0;
        EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
        int ok = ctx && EVP_MAC_init(ctx, k->key[i], k->key_len[i], params) &&
                 mac_update(ctx, id, strlen(id)) && mac_update(ctx, ".", 1) &&
                 mac_update(ctx, ts, (size_t)ts_len) && mac_update(ctx, ".", 1) &&
                 mac_update(ctx, body, body_len) && EVP_MAC_final(ctx, md, &md_len, sizeof(md)) &&
                 md_len == MAC_LEN;
        EVP_MAC_CTX_free(ctx);
        if (!ok) {
            rc = -1;
        } else {
            if (i > 0)
                out[pos++] = ' ';
            memcpy(out + pos, "v1,", 3);
            pos += 3;
            pos += (size_t)EVP_EncodeBlock((unsigned char *)out + pos, md, MAC_LEN);
        }
        util_wipe(md, sizeof(md));
    }
    EVP_MAC_free(mac);
    if (rc != 0) {
        out[0] = '\0';
        return -1;
    }
    out[pos] = '\0';
    return (int)pos;
}
