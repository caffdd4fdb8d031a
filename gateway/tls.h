/*
 * tls: the server's TLS context (OpenSSL 3): certificate and key, TLS 1.2 or
 * newer, reloaded on SIGHUP without dropping sessions.
 */
#ifndef POP3GW_TLS_H
#define POP3GW_TLS_H

typedef struct ssl_st SSL;

/* Loads the certificate and key. 0, or -1 after logging why. */
int tls_init(const char *cert, const char *key, int min_version);

/* Loads them again; on failure keeps the old context and logs why. */
int tls_reload(void);

/* True when a certificate is loaded. */
int tls_enabled(void);

/* A new server-side SSL object from the current context, or NULL. */
SSL *tls_new_ssl(void);

/* The newest OpenSSL error as text, for a log line. */
const char *tls_error(char *buf, int len);

void tls_cleanup(void);

#endif
