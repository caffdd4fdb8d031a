/*
 * wh_sign: Standard Webhooks signatures (HMAC-SHA256 with OpenSSL).
 */
#ifndef POP3GW_WH_SIGN_H
#define POP3GW_WH_SIGN_H

#include <stddef.h>

#define WH_SIGN_KEYS_MAX 4

struct wh_keys {
    unsigned char key[WH_SIGN_KEYS_MAX][64];
    size_t key_len[WH_SIGN_KEYS_MAX];
    int n;
};

/* Decodes space-separated `whsec_BASE64` secrets. Returns 0, or -1 when one
 * is malformed. */
int wh_keys_parse(struct wh_keys *k, const char *secrets);

/* Wipes the keys. */
void wh_keys_clear(struct wh_keys *k);

/*
 * Writes the webhook-signature header value for id.timestamp.body into out:
 * "v1,BASE64" per key, space-separated. Returns the length, or -1 when out
 * (outlen bytes) is too small.
 */
int wh_sign(const struct wh_keys *k, const char *id, long long timestamp, const char *body,
            size_t body_len, char *out, size_t outlen);

/* Length of the header value wh_sign() writes for n keys, without the NUL:
 * per key "v1," and 44 base64 characters, and a space between keys. */
#define WH_SIGN_LEN(n) ((n) > 0 ? (size_t)(n)*48 - 1 : 0)

#endif
