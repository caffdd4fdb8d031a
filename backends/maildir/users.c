/*
 * users: loads the users file into a sorted array and checks credentials
 * against it (see users.h). Passwords and tokens are kept as SHA-256 hashes
 * for comparison, compared with CRYPTO_memcmp; the plain password is kept
 * only because APOP needs it. A read-write lock lets many checks run at once
 * while a reload swaps the table.
 */
#include "backends/maildir/users.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "backends/maildir/digest.h"
#include "backends/maildir/note.h"

struct users_entry {
    char *name;                            /* user name, unique in the table */
    char *password;                        /* plain, for APOP; "" when none */
    unsigned char pw_hash[DG_SHA256_LEN];  /* SHA-256 of the password */
    unsigned char tok_hash[DG_SHA256_LEN]; /* SHA-256 of the OAuth token */
    int has_password;                      /* password logins allowed */
    int has_token;                         /* token logins allowed */
    int lineno;                            /* where it was read, for duplicates */
};

struct users_table {
    struct users_entry *v; /* sorted by name */
    size_t n;              /* entries in use */
    size_t cap;            /* entries allocated */
};

struct users_stamp {
    dev_t dev; /* identity of the file last read */
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct users {
    char *path;               /* the users file */
    pthread_rwlock_t lock;    /* readers check, a writer reloads */
    struct users_table table; /* the current users */
    struct users_stamp stamp; /* the file version `table` came from */
};

/* Stand in for a missing user's password and hashes, so that checking a user
 * who does not exist costs what checking one who does costs. */
static const char users_dummy_password[] = "pop3gw-maildir: no such user";
static const unsigned char users_dummy_hash[DG_SHA256_LEN];

int users_name_ok(const char *name, size_t len)
{
    return len >= 1 && len <= USERS_NAME_MAX && name[0] != '.' && memchr(name, '/', len) == NULL &&
           memchr(name, '\0', len) == NULL;
}

static void users_entry_clear(struct users_entry *e)
{
    free(e->name);
    if (e->password != NULL)
        OPENSSL_cleanse(e->password, strlen(e->password));
    free(e->password);
    OPENSSL_cleanse(e, sizeof *e);
}

static void users_table_clear(struct users_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        users_entry_clear(&t->v[i]);
    free(t->v);
    memset(t, 0, sizeof *t);
}

/* Orders by name, then by line, so the first of repeated names comes first. */
static int users_cmp(const void *a, const void *b)
{
    const struct users_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : (x->lineno > y->lineno) - (x->lineno < y->lineno);
}

/* Fills `e` from the fields of one line. Returns 0, or -1 when out of memory. */
static int users_entry_set(struct users_entry *e, const char *name, size_t nlen, const char *pw,
                           size_t pwlen, const char *tok, size_t toklen)
{
    memset(e, 0, sizeof *e);
    e->name = strndup(name, nlen);
    e->password = strndup(pw, pwlen);
    if (e->name == NULL || e->password == NULL)
        return -1;
    e->has_password = pwlen > 0;
    e->has_token = toklen > 0;
    if (dg_sha256(pw, pwlen, e->pw_hash) != 0 || dg_sha256(tok, toklen, e->tok_hash) != 0)
        return -1;
    return 0;
}

/*
 * Parses one line (without its LF) into a new entry of `t`. Returns 0 (also
 * for skipped lines, after a warning), or -1 when out of memory.
 */
static int users_parse_line(struct users_table *t, char *line, size_t len, const char *path,
                            int lineno)
{
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0 || line[0] == '#' || strspn(line, " \t") == len)
        return 0;
    char *c1 = memchr(line, ':', len);
    if (c1 == NULL || !users_name_ok(line, (size_t)(c1 - line))) {
        note_error("%s:%d: skipped: not user:password[:token] with a valid user name", path,
                   lineno);
        return 0;
    }
    char *pw = c1 + 1;
    char *end = line + len;
    char *c2 = memchr(pw, ':', (size_t)(end - pw));
    char *tok = c2 != NULL ? c2 + 1 : end;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct users_entry *v = realloc(t->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    struct users_entry *e = &t->v[t->n];
    int rc = users_entry_set(e, line, (size_t)(c1 - line), pw,
                             (size_t)((c2 != NULL ? c2 : end) - pw), tok, (size_t)(end - tok));
    if (rc != 0) {
        users_entry_clear(e);
        return -1;
    }
    e->lineno = lineno;
    t->n++;
    return 0;
}

/* Sorts the table and drops repeated names (the first line wins). */
static void users_table_finish(struct users_table *t, const char *path)
{
    qsort(t->v, t->n, sizeof *t->v, users_cmp);
    size_t out = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (out > 0 && strcmp(t->v[out - 1].name, t->v[i].name) == 0) {
            note_error("%s:%d: skipped: user \"%s\" already defined on line %d", path,
                       t->v[i].lineno, t->v[i].name, t->v[out - 1].lineno);
            users_entry_clear(&t->v[i]);
            continue;
        }
        t->v[out++] = t->v[i];
    }
    t->n = out;
}

/* Reads the whole file into `t` (empty on entry). Returns 0, or -1 with a
 * message in `err`. */
static int users_read(const char *path, struct users_table *t, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open users file %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        rc = users_parse_line(t, line, (size_t)len, path, lineno);
    }
    if (rc == 0 && ferror(f))
        rc = -1;
    if (line != NULL)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    if (rc != 0) {
        snprintf(err, errlen, "cannot read users file %s", path);
        users_table_clear(t);
        return -1;
    }
    users_table_finish(t, path);
    return 0;
}

static int users_stamp_get(const char *path, struct users_stamp *s)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    memset(s, 0, sizeof *s);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
    return 0;
}

static int users_stamp_same(const struct users_stamp *a, const struct users_stamp *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

struct users *users_open(const char *path, char *err, size_t errlen)
{
    struct users *u = calloc(1, sizeof *u);
    if (u == NULL || (u->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(u);
        return NULL;
    }
    pthread_rwlock_init(&u->lock, NULL);
    if (users_stamp_get(path, &u->stamp) != 0) {
        snprintf(err, errlen, "cannot open users file %s: %s", path, strerror(errno));
        users_free(u);
        return NULL;
    }
    if (users_read(path, &u->table, err, errlen) != 0) {
        users_free(u);
        return NULL;
    }
    return u;
}

void users_free(struct users *u)
{
    if (u == NULL)
        return;
    users_table_clear(&u->table);
    pthread_rwlock_destroy(&u->lock);
    free(u->path);
    free(u);
}

/*
 * Re-reads the file if its stamp changed since the last read. A file that
 * cannot be read keeps the old table (with a log line once per change).
 */
static void users_refresh(struct users *u)
{
    struct users_stamp now;
    if (users_stamp_get(u->path, &now) != 0)
        return; /* gone for a moment (an editor replacing it): keep the old table */
    pthread_rwlock_rdlock(&u->lock);
    int same = users_stamp_same(&now, &u->stamp);
    pthread_rwlock_unlock(&u->lock);
    if (same)
        return;
    pthread_rwlock_wrlock(&u->lock);
    if (!users_stamp_same(&now, &u->stamp)) {
        struct users_table fresh = {0};
        char err[512] = "";
        u->stamp = now;
        if (users_read(u->path, &fresh, err, sizeof err) == 0) {
            users_table_clear(&u->table);
            u->table = fresh;
        } else {
            note_error("%s; keeping the users read before", err);
        }
    }
    pthread_rwlock_unlock(&u->lock);
}

static const struct users_entry *users_find(const struct users_table *t, const char *name)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, t->v[mid].name);
        if (c == 0)
            return &t->v[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* APOP: the digest must be MD5(timestamp + password) in hex (case ignored). */
static int users_match_apop(const struct users_entry *e, const struct users_cred *c)
{
    const char *pw = e != NULL ? e->password : users_dummy_password;
    char want[DG_MD5_HEX_LEN + 1], got[DG_MD5_HEX_LEN + 1];
    if (c->apop_timestamp == NULL || c->apop_digest == NULL ||
        dg_md5_hex(c->apop_timestamp, strlen(c->apop_timestamp), pw, strlen(pw), want) != 0)
        return 0;
    if (strlen(c->apop_digest) != DG_MD5_HEX_LEN)
        return 0;
    for (size_t i = 0; i < DG_MD5_HEX_LEN; i++) {
        char ch = c->apop_digest[i];
        got[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    }
    int ok = dg_equal(got, want, DG_MD5_HEX_LEN);
    OPENSSL_cleanse(want, sizeof want);
    return ok & (e != NULL && e->has_password);
}

/* 1 if the credentials are valid for `e`. A NULL `e` (no such user) fails
 * after the same work. */
static int users_match(const struct users_entry *e, const struct users_cred *c)
{
    unsigned char h[DG_SHA256_LEN];
    if (c->method == USERS_APOP)
        return users_match_apop(e, c);
    if (c->secret == NULL || dg_sha256(c->secret, c->secret_len, h) != 0)
        return 0;
    if (c->method == USERS_PASSWORD)
        return dg_equal(h, e != NULL ? e->pw_hash : users_dummy_hash, DG_SHA256_LEN) &
               (e != NULL && e->has_password);
    return dg_equal(h, e != NULL ? e->tok_hash : users_dummy_hash, DG_SHA256_LEN) &
           (e != NULL && e->has_token);
}

/* OAUTHBEARER without a user name: the user whose token this is, or NULL.
 * Every entry is compared, so time does not depend on which one matches. */
static const struct users_entry *users_find_token(const struct users_table *t,
                                                  const struct users_cred *c)
{
    unsigned char h[DG_SHA256_LEN];
    const struct users_entry *found = NULL;
    if (c->method != USERS_TOKEN || c->secret == NULL ||
        dg_sha256(c->secret, c->secret_len, h) != 0)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        int hit = dg_equal(h, t->v[i].tok_hash, DG_SHA256_LEN) & t->v[i].has_token;
        if (hit && found == NULL)
            found = &t->v[i];
    }
    return found;
}

int users_check(struct users *u, const struct users_cred *c, char *canon)
{
    users_refresh(u);
    pthread_rwlock_rdlock(&u->lock);
    const struct users_entry *e;
    int ok;
    if (c->user != NULL) {
        e = users_find(&u->table, c->user);
        ok = users_match(e, c);
    } else {
        e = users_find_token(&u->table, c);
        ok = e != NULL;
    }
    if (ok)
        memcpy(canon, e->name, strlen(e->name) + 1);
    pthread_rwlock_unlock(&u->lock);
    return ok;
}
