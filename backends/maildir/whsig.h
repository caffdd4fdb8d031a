/*
 * whsig: checks Standard Webhooks signatures on incoming requests.
 *
 * A sender signs `webhook-id + "." + webhook-timestamp + "." + body` with
 * HMAC-SHA256 under a key given as `whsec_` + base64, and sends the result as
 * `v1,` + base64 in the `webhook-signature` header (several space-separated
 * signatures when it rotates keys). The backend may hold several keys too; a
 * request passes when any of its signatures matches any key, and its timestamp
 * is within WHSIG_TOLERANCE seconds of the local clock (no replay of old
 * requests).
 */
#ifndef MAILDIR_WHSIG_H
#define MAILDIR_WHSIG_H

#include <stddef.h>
#include <time.h>

#define WHSIG_TOLERANCE 300 /* seconds either side of now */
#define WHSIG_B64_LEN 44    /* base64 of a 32-byte HMAC-SHA256, padded */

struct whsig;

/*
 * Parses space-separated `whsec_...` secrets. Returns a new verifier owned by
 * the caller (whsig_free), or NULL with a message in `err`.
 */
struct whsig *whsig_new(const char *secrets, char *err, size_t errlen);
void whsig_free(struct whsig *w);

/*
 * Checks one request. `id`, `timestamp` and `signatures` are the header values
 * (NULL when absent). Returns NULL when the request is authentic, otherwise a
 * short static reason fit for a 401 reply. Safe to call from any thread.
 */
const char *whsig_verify(const struct whsig *w, const char *id, const char *timestamp,
                         const char *signatures, const char *body, size_t len, time_t now);

/*
 * Computes the base64 signature (without "v1,") of one message under the
 * raw key, into `out` (WHSIG_B64_LEN + 1 bytes). Returns 0 or -1. Exposed for
 * tests.
 */
int whsig_sign(const unsigned char *key, size_t keylen, const char *id, const char *timestamp,
               const char *body, size_t len, char out[WHSIG_B64_LEN + 1]);

#endif
