/*
 * store: the Maildirs under the root directory, one per user:
 * ROOT/USER/{new,cur,tmp}.
 *
 * A listing holds every regular file of USER/new and USER/cur (names starting
 * with '.' skipped, symbolic links never followed), sorted by file name, which
 * in a Maildir starts with the delivery time: that is the maildrop order. Each
 * message has a uid, the file name up to the first ':' (where Maildir puts its
 * flags, which change when a mail client reads the message), used as it is
 * when it is 1 to 70 characters in 0x21..0x7E, else replaced by the 32 hex
 * digits of its MD5. Should two files give the same uid, the later one in the
 * order is left out, so uids are unique.
 *
 * A message's size is what a POP3 client will count: its bytes with every LF
 * not preceded by CR counted as CRLF, plus a final CRLF when the file is not
 * empty and does not end in LF (the gateway adds one). Sizes are cached (see
 * sizes.h), so only new or changed files are read.
 *
 * The last listing of each of up to 64 users is kept and served again while
 * neither USER/cur nor USER/new has changed (same inode and modification
 * time): two stats instead of reading both directories. A listing is kept
 * only when both directories had not changed for 2 s when it was taken, so a
 * later change always gives them another modification time.
 */
#ifndef MAILDIR_STORE_H
#define MAILDIR_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_UID_MAX 70

enum store_rc {
    STORE_OK = 0,
    STORE_NO_USER = -1, /* ROOT/USER is not a directory */
    STORE_FAIL = -2,    /* an I/O error, already logged */
};

struct store_msg {
    const char *name;            /* file name in new/ or cur/, owned by the listing */
    size_t name_off;             /* its offset in the listing's name buffer */
    int in_cur;                  /* 1: in cur/, 0: in new/ */
    uint64_t size;               /* CRLF-normalised size (0 if sizes were not asked for) */
    char uid[STORE_UID_MAX + 1]; /* unique in the listing */
};

struct store_list {
    struct store_msg *msgs;    /* maildrop order; message n is msgs[n - 1] */
    size_t n;                  /* messages */
    size_t cap;                /* msgs allocated */
    struct store_msg **by_uid; /* the same messages sorted by uid, for lookups */
    char *names;               /* storage of every name, NUL-separated */
    size_t names_len;          /* bytes of names in use */
    size_t names_cap;          /* bytes of names allocated */
};

/* A size computed from the bytes of a file, fed in chunks of any size. */
struct store_sizer {
    uint64_t octets; /* bytes seen */
    uint64_t bare;   /* LF bytes not preceded by CR */
    int last;        /* the last byte seen, or -1 before any */
};

struct store;

/* Opens the root directory. Returns a new store owned by the caller
 * (store_free), or NULL with a message in `err`. */
struct store *store_open(const char *root, char *err, size_t errlen);
void store_free(struct store *s);

/*
 * Lists `user`'s messages into `out` (owned by the caller: store_list_free,
 * also after a failure). With `with_sizes`, computes each message's size.
 * Returns STORE_OK, STORE_NO_USER or STORE_FAIL. `user` must have passed
 * users_name_ok().
 */
enum store_rc store_list(struct store *s, const char *user, int with_sizes, struct store_list *out);
void store_list_free(struct store_list *l);

/* Listings read from the directories and listings served as kept, so far. */
void store_counts(struct store *s, unsigned long long *scans, unsigned long long *hits);

/* The message with this uid, or NULL. O(log n). */
const struct store_msg *store_find(const struct store_list *l, const char *uid);

/*
 * Opens a listed message for reading. Returns the descriptor (owned by the
 * caller) and the file's byte size in *bytes, or -errno (-ENOENT when it has
 * gone or moved since it was listed).
 */
int store_open_msg(struct store *s, const char *user, const struct store_msg *m, uint64_t *bytes);

/*
 * Opens the message with this uid as the user's kept listing names it,
 * without checking that the listing is current: a file that opens is that
 * message (the uid is its name up to the flags). Returns what
 * store_open_msg() does; -ENOENT also when no kept listing has the uid, and
 * then the caller lists the Maildir again.
 */
int store_open_kept(struct store *s, const char *user, const char *uid, uint64_t *bytes);

/* Deletes a listed message. Returns 0 or -errno (-ENOENT when already gone). */
int store_unlink(struct store *s, const char *user, const struct store_msg *m);

/* The uid of a file name, into `out`. */
void store_uid(const char *name, char out[STORE_UID_MAX + 1]);

void store_sizer_init(struct store_sizer *z);
void store_sizer_feed(struct store_sizer *z, const char *buf, size_t len);
uint64_t store_sizer_total(const struct store_sizer *z);

#endif
