/*
 * digest: SHA-256, MD5, constant-time comparison and base64 for the maildir
 * backend, all through OpenSSL's EVP interface (the one-shot MD5() and the
 * HMAC_CTX functions are deprecated in OpenSSL 3).
 */
#include "backends/maildir/digest.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

int dg_sha256(const void *data, size_t len, unsigned char out[DG_SHA256_LEN])
{
    unsigned int outlen = 0;
    if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != DG_SHA256_LEN)
        return -1;
    return 0;
}

int dg_md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[DG_MD5_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, a, alen) == 1 &&
             (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    for (unsigned int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[DG_MD5_HEX_LEN] = '\0';
    return 0;
}

int dg_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

/* EVP_DecodeBlock wants whole 4-character groups and reports padding bytes as
 * data, so padding is added here and its bytes are taken off the result. */
long dg_base64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap)
{
    while (inlen > 0 && in[inlen - 1] == '=')
        inlen--;
    if (inlen % 4 == 1 || inlen > (size_t)1 << 30)
        return -1;
    size_t padded = (inlen + 3) / 4 * 4;
    size_t pad = padded - inlen;
    size_t outlen = padded / 4 * 3 - pad;
    if (outlen > outcap)
        return -1;
    char *buf = malloc(padded + 1);
    unsigned char *raw = malloc(padded / 4 * 3 + 1);
    long ret = -1;
    if (buf == NULL || raw == NULL)
        goto done;
    memcpy(buf, in, inlen);
    memset(buf + inlen, '=', pad);
    if (EVP_DecodeBlock(raw, (const unsigned char *)buf, (int)padded) < 0)
        goto done;
    memcpy(out, raw, outlen);
    ret = (long)outlen;
done:
    free(buf);
    if (raw != NULL)
        OPENSSL_cleanse(raw, padded / 4 * 3 + 1);
    free(raw);
    return ret;
}

size_t dg_base64_encode(const unsigned char *in, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}
