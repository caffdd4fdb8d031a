/*
 * users: the users file and credential checks.
 *
 * The file holds one `user:password[:oauth-token]` per line; blank lines and
 * lines starting with `#` are skipped. The password ends at the second `:`,
 * the token is the rest of the line. An empty password disables password
 * logins (USER, PLAIN, LOGIN, APOP) for that user; a missing or empty token
 * disables XOAUTH2 and OAUTHBEARER. The file is read again when it changes
 * (checked on every authenticate), so users can be added while running.
 *
 * Checks cost the same whether or not the user exists, so timing does not
 * tell which user names are valid.
 */
#ifndef MAILDIR_USERS_H
#define MAILDIR_USERS_H

#include <stddef.h>

#define USERS_NAME_MAX 255

enum users_method {
    USERS_PASSWORD, /* USER/PASS, PLAIN, LOGIN: `secret` is the password */
    USERS_APOP,     /* `apop_timestamp` and `apop_digest` */
    USERS_TOKEN,    /* XOAUTH2, OAUTHBEARER: `secret` is the bearer token */
};

struct users_cred {
    enum users_method method;
    const char *user;           /* as given; NULL only for USERS_TOKEN (found by token) */
    const char *secret;         /* password or token; NULL for APOP */
    size_t secret_len;          /* its length (it may hold NUL bytes) */
    const char *apop_timestamp; /* APOP: the greeting's <...> timestamp */
    const char *apop_digest;    /* APOP: the client's 32 hex digits */
};

struct users;

/* Reads the file. Returns a new table owned by the caller (users_free), or
 * NULL with a message in `err`. */
struct users *users_open(const char *path, char *err, size_t errlen);
void users_free(struct users *u);

/*
 * Checks the credentials, re-reading the file first if it changed. Returns 1
 * and copies the user's name as written in the file into `canon` (at least
 * USERS_NAME_MAX + 1 bytes) when they are valid; 0 otherwise. Thread-safe.
 */
int users_check(struct users *u, const struct users_cred *c, char *canon);

/* 1 if `name` (len bytes) can name a mailbox directory: 1..255 bytes, no NUL
 * or '/', not starting with '.'. */
int users_name_ok(const char *name, size_t len);

#endif
