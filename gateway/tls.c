/*
 * tls: the server's TLS context.
 *
 * One SSL_CTX for the process, built at start and again on SIGHUP. A reload
 * builds a complete new context first and swaps it in only when the new
 * certificate and key load and match; sessions already running keep the
 * context their SSL object holds a reference to.
 */
#include "gateway/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx; /* current context, or NULL without a certificate */
static char *tls_cert_path, *tls_key_path;
static int tls_min; /* 12 or 13 */

const char *tls_error(char *buf, int len)
{
    unsigned long e = ERR_peek_last_error();

    if (!e) {
        snprintf(buf, (size_t)len, "unknown TLS error");
        return buf;
    }
    ERR_error_string_n(e, buf, (size_t)len);
    ERR_clear_error();
    return buf;
}

/* Checks that a file can be opened, to say plainly why not. */
static int tls_readable(const char *msg, const char *path)
{
    FILE *f = fopen(path, "r");

    if (!f) {
        log_kv(LOG_ERROR, NULL, msg, "path=%s error=%s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* Logs which step failed, with OpenSSL's reason. */
static void tls_fail(const char *msg, const char *path)
{
    char err[256];

    log_kv(LOG_ERROR, NULL, msg, "path=%s error=%s", path, tls_error(err, sizeof(err)));
}

/* Builds a context from the configured files; NULL after logging why. */
static SSL_CTX *tls_build(void)
{
    SSL_CTX *ctx;

    if (tls_readable("cannot load TLS certificate", tls_cert_path) < 0 ||
        tls_readable("cannot load TLS key", tls_key_path) < 0)
        return NULL;
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_fail("cannot create a TLS context", tls_cert_path);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, tls_min == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 defaults are good. */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle sessions hold no TLS buffers: memory per connection stays small. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, tls_cert_path) != 1) {
        tls_fail("cannot load TLS certificate: not a PEM certificate chain", tls_cert_path);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, tls_key_path, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        tls_fail(ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH
                     ? "cannot load TLS key: it does not match the certificate"
                     : "cannot load TLS key: not a PEM private key",
                 tls_key_path);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_fail("cannot load TLS key: it does not match the certificate", tls_key_path);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_init(const char *cert, const char *key, int min_version)
{
    SSL_CTX *ctx;

    if (!cert || !key)
        return 0;
    tls_cert_path = strdup(cert);
    tls_key_path = strdup(key);
    tls_min = min_version;
    if (!tls_cert_path || !tls_key_path)
        return -1;
    ctx = tls_build();
    if (!ctx)
        return -1;
    tls_ctx = ctx;
    return 0;
}

int tls_reload(void)
{
    SSL_CTX *ctx, *old;

    if (!tls_cert_path)
        return 0;
    ctx = tls_build();
    if (!ctx) {
        log_kv(LOG_WARN, NULL, "TLS reload failed: keeping the old certificate", "cert=%s",
               tls_cert_path);
        return -1;
    }
    pthread_mutex_lock(&tls_lock);
    old = tls_ctx;
    tls_ctx = ctx;
    pthread_mutex_unlock(&tls_lock);
    SSL_CTX_free(old); /* SSL objects still using it hold their own reference */
    log_kv(LOG_INFO, NULL, "TLS certificate reloaded", "cert=%s", tls_cert_path);
    return 0;
}

int tls_enabled(void)
{
    return tls_cert_path != NULL;
}

SSL *tls_new_ssl(void)
{
    SSL *ssl = NULL;

    pthread_mutex_lock(&tls_lock);
    if (tls_ctx)
        ssl = SSL_new(tls_ctx);
    pthread_mutex_unlock(&tls_lock);
    return ssl;
}

void tls_cleanup(void)
{
    SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
    free(tls_cert_path);
    free(tls_key_path);
    tls_cert_path = tls_key_path = NULL;
}
