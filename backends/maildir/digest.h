/*
 * digest: the few cryptographic helpers the maildir backend needs, on top of
 * OpenSSL's EVP interface: SHA-256 and MD5 digests, a comparison of secrets
 * whose time does not depend on where they differ, and base64 decoding.
 */
#ifndef MAILDIR_DIGEST_H
#define MAILDIR_DIGEST_H

#include <stddef.h>

#define DG_SHA256_LEN 32
#define DG_MD5_HEX_LEN 32

/* SHA-256 of `len` bytes into `out`. Returns 0, or -1 if OpenSSL fails. */
int dg_sha256(const void *data, size_t len, unsigned char out[DG_SHA256_LEN]);

/*
 * Lower-case hex MD5 of `a` followed by `b` (`b` may be NULL with blen 0),
 * NUL-terminated in `out`. Returns 0, or -1 if OpenSSL fails.
 */
int dg_md5_hex(const void *a, size_t alen, const void *b, size_t blen,
               char out[DG_MD5_HEX_LEN + 1]);

/* 1 if the two buffers of length `len` are equal; constant time in `len`. */
int dg_equal(const void *a, const void *b, size_t len);

/*
 * Decodes standard base64 (padding optional, no whitespace). Returns the
 * number of bytes written to `out`, or -1 if the input is not base64 or does
 * not fit in `outcap` bytes.
 */
long dg_base64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap);

/* Encodes `len` bytes as padded base64 into `out`, which must hold
 * 4 * ((len + 2) / 3) + 1 bytes. Returns the length written (without NUL). */
size_t dg_base64_encode(const unsigned char *in, size_t len, char *out);

#endif
