/*
 * store: listing, reading and deleting messages in the users' Maildirs (see
 * store.h). Every path is opened relative to a descriptor of the root taken at
 * start-up; user names never contain '/' and never start with '.', so no path
 * leaves the root.
 */
#include "backends/maildir/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backends/maildir/digest.h"
#include "backends/maildir/note.h"
#include "backends/maildir/sizes.h"

#define STORE_READ_CHUNK 65536
#define STORE_CACHE_MAX 262144 /* cached sizes, about 40 MB at most */
#define STORE_KEPT_MAX 64      /* users whose last listing is kept */
#define STORE_KEPT_MSGS 262144 /* messages kept over all of them, about 30 MB */
#define STORE_SETTLE_SEC 2     /* a directory changed more recently is rescanned */

/* What a directory looked like when it was listed. */
struct store_stamp {
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    int present; /* 0: it did not exist */
};

/* A user's last listing and the stamps of the directories it came from. */
struct store_kept {
    char *user; /* NULL: a free slot */
    struct store_stamp cur, new;
    int with_sizes;
    unsigned long used; /* clock of the last use, for eviction */
    struct store_list list;
};

struct store {
    int rootfd;          /* the root directory, O_DIRECTORY */
    char *root;          /* its path, for log lines */
    struct sizes *sizes; /* computed sizes by path under the root */
    pthread_mutex_t mu;  /* guards the kept listings */
    struct store_kept kept[STORE_KEPT_MAX];
    size_t kept_msgs;               /* messages in them */
    unsigned long clock;            /* ticks on every use */
    unsigned long long scans, hits; /* listings read from disk, served as kept */
};

struct store *store_open(const char *root, char *err, size_t errlen)
{
    struct store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->rootfd < 0) {
        snprintf(err, errlen, "cannot open root directory %s: %s", root, strerror(errno));
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->root = strdup(root);
    s->sizes = sizes_new(STORE_CACHE_MAX);
    if (s->root == NULL || s->sizes == NULL) {
        snprintf(err, errlen, "out of memory");
        store_free(s);
        return NULL;
    }
    return s;
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    if (s->rootfd >= 0)
        close(s->rootfd);
    for (size_t i = 0; i < STORE_KEPT_MAX; i++) {
        free(s->kept[i].user);
        store_list_free(&s->kept[i].list);
    }
    pthread_mutex_destroy(&s->mu);
    sizes_free(s->sizes);
    free(s->root);
    free(s);
}

void store_list_free(struct store_list *l)
{
    free(l->msgs);
    free(l->by_uid);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* ---- sizes and uids ---- */

void store_sizer_init(struct store_sizer *z)
{
    z->octets = 0;
    z->bare = 0;
    z->last = -1;
}

void store_sizer_feed(struct store_sizer *z, const char *buf, size_t len)
{
    if (len == 0)
        return;
    const char *p = buf, *end = buf + len;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        int prev = p > buf ? (unsigned char)p[-1] : z->last;
        if (prev != '\r')
            z->bare++;
        p++;
    }
    z->octets += len;
    z->last = (unsigned char)buf[len - 1];
}

uint64_t store_sizer_total(const struct store_sizer *z)
{
    uint64_t total = z->octets + z->bare;
    if (z->octets > 0 && z->last != '\n')
        total += 2; /* the gateway ends the last line with CRLF */
    return total;
}

void store_uid(const char *name, char out[STORE_UID_MAX + 1])
{
    size_t len = strcspn(name, ":");
    int plain = len >= 1 && len <= STORE_UID_MAX;
    for (size_t i = 0; plain && i < len; i++)
        plain = (unsigned char)name[i] >= 0x21 && (unsigned char)name[i] <= 0x7e;
    if (plain) {
        memcpy(out, name, len);
        out[len] = '\0';
    } else if (dg_md5_hex(name, len, NULL, 0, out) != 0) {
        out[0] = '\0'; /* cannot happen short of OpenSSL failing; caught as an empty uid */
    }
}

/* Reads the open file to the end and computes its size. Returns 0 or -errno. */
static int store_count(int fd, uint64_t *size)
{
    char buf[STORE_READ_CHUNK];
    struct store_sizer z;
    store_sizer_init(&z);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        store_sizer_feed(&z, buf, (size_t)n);
    }
    *size = store_sizer_total(&z);
    return 0;
}

/*
 * The size of `name` in the open directory `dirfd`, whose stat is *st, from
 * the cache or by reading the file. `key` is its path under the root. Returns
 * 0, or -errno (-ENOENT if it vanished meanwhile).
 */
static int store_size(struct store *s, int dirfd, const char *name, const char *key,
                      const struct stat *st, uint64_t *size)
{
    if (sizes_get(s->sizes, key, st, size))
        return 0;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat fst;
    int rc = fstat(fd, &fst) != 0 ? -errno : !S_ISREG(fst.st_mode) ? -ENOENT : 0;
    if (rc == 0)
        rc = store_count(fd, size);
    close(fd);
    /* The stat of the descriptor read, so a file replaced between the
     * directory's stat and the open is cached under its own identity. */
    if (rc == 0)
        sizes_put(s->sizes, key, &fst, *size);
    return rc;
}

/* ---- listings ---- */

/* Grows `*p` (of `*cap` elements of `size` bytes) to hold `need`. Returns 0 or -1. */
static int store_reserve(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, ncap * size);
    if (np == NULL)
        return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

/* Appends `name` to the listing. Returns the new entry, or NULL when out of memory. */
static struct store_msg *store_add(struct store_list *l, const char *name, int in_cur)
{
    size_t len = strlen(name) + 1;
    if (store_reserve((void **)&l->msgs, &l->cap, l->n + 1, sizeof *l->msgs) != 0 ||
        store_reserve((void **)&l->names, &l->names_cap, l->names_len + len, 1) != 0)
        return NULL;
    struct store_msg *m = &l->msgs[l->n++];
    memset(m, 0, sizeof *m);
    m->name_off = l->names_len;
    memcpy(l->names + l->names_len, name, len);
    l->names_len += len;
    m->in_cur = in_cur;
    store_uid(name, m->uid);
    return m->uid[0] != '\0' ? m : NULL;
}

/*
 * Adds one directory entry of USER/SUB to the listing if it is a message.
 * Returns STORE_OK (also for entries skipped, or gone meanwhile) or STORE_FAIL.
 */
static enum store_rc store_scan_entry(struct store *s, int dirfd, const char *user, const char *sub,
                                      const struct dirent *de, int with_sizes, struct store_list *l)
{
    const char *name = de->d_name;
    struct stat st;
    uint64_t size = 0;
    if (name[0] == '.' || (de->d_type != DT_REG && de->d_type != DT_UNKNOWN))
        return STORE_OK;
    if (with_sizes || de->d_type == DT_UNKNOWN) {
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                return STORE_OK;
            note_error("stat %s/%s/%s/%s: %s", s->root, user, sub, name, strerror(errno));
            return STORE_FAIL;
        }
        if (!S_ISREG(st.st_mode))
            return STORE_OK;
    }
    if (with_sizes) {
        char key[PATH_MAX];
        snprintf(key, sizeof key, "%s/%s/%s", user, sub, name);
        int rc = store_size(s, dirfd, name, key, &st, &size);
        if (rc == -ENOENT)
            return STORE_OK;
        if (rc < 0) {
            note_error("read %s/%s: %s", s->root, key, strerror(-rc));
            return STORE_FAIL;
        }
    }
    struct store_msg *m = store_add(l, name, strcmp(sub, "cur") == 0);
    if (m == NULL) {
        note_error("out of memory listing %s", user);
        return STORE_FAIL;
    }
    m->size = size;
    return STORE_OK;
}

/* Adds the messages of USER/SUB; a missing SUB is an empty one. */
static enum store_rc store_scan_dir(struct store *s, int userfd, const char *user, const char *sub,
                                    int with_sizes, struct store_list *l)
{
    int fd = openat(userfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return STORE_OK;
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        note_error("open %s/%s/%s: %s", s->root, user, sub, strerror(errno));
        if (fd >= 0)
            close(fd);
        return STORE_FAIL;
    }
    enum store_rc rc = STORE_OK;
    while (rc == STORE_OK) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                note_error("read %s/%s/%s: %s", s->root, user, sub, strerror(errno));
                rc = STORE_FAIL;
            }
            break;
        }
        rc = store_scan_entry(s, dirfd(d), user, sub, de, with_sizes, l);
    }
    closedir(d);
    return rc;
}

static int store_by_name(const void *a, const void *b)
{
    const struct store_msg *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : x->in_cur - y->in_cur;
}

/* Orders by uid, then by position in the listing (for the dedup pass). */
static int store_by_uid(const void *a, const void *b)
{
    const struct store_msg *x = *(const struct store_msg *const *)a;
    const struct store_msg *y = *(const struct store_msg *const *)b;
    int c = strcmp(x->uid, y->uid);
    return c != 0 ? c : (x > y) - (x < y);
}

/* Fills by_uid with the messages sorted by uid. Returns 0 or -1. */
static int store_index(struct store_list *l)
{
    free(l->by_uid);
    l->by_uid = malloc((l->n ? l->n : 1) * sizeof *l->by_uid);
    if (l->by_uid == NULL)
        return -1;
    for (size_t i = 0; i < l->n; i++)
        l->by_uid[i] = &l->msgs[i];
    qsort(l->by_uid, l->n, sizeof *l->by_uid, store_by_uid);
    return 0;
}

/*
 * Sorts the listing by name and leaves out every message whose uid an
 * earlier one already has, then indexes it by uid. Returns 0 or -1.
 */
static int store_finish(struct store_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        l->msgs[i].name = l->names + l->msgs[i].name_off;
    if (l->n > 1)
        qsort(l->msgs, l->n, sizeof *l->msgs, store_by_name);
    if (store_index(l) != 0)
        return -1;
    size_t dups = 0, kept = 0;
    for (size_t i = 1; i < l->n; i++) {
        if (strcmp(l->by_uid[i]->uid, l->by_uid[kept]->uid) == 0) {
            /* Equal uids sort by position, so this is a later one: marked to go. */
            l->by_uid[i]->uid[0] = '\0';
            dups++;
        } else {
            kept = i;
        }
    }
    if (dups == 0)
        return 0;
    size_t out = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->msgs[i].uid[0] != '\0')
            l->msgs[out++] = l->msgs[i];
    l->n = out;
    return store_index(l);
}

/* Lists USER by reading its directories. */
static enum store_rc store_scan(struct store *s, const char *user, int with_sizes,
                                struct store_list *out)
{
    memset(out, 0, sizeof *out);
    int userfd = openat(s->rootfd, user, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (userfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return STORE_NO_USER;
        note_error("open %s/%s: %s", s->root, user, strerror(errno));
        return STORE_FAIL;
    }
    /* cur/ before new/: messages only ever move from new/ to cur/, so in this
     * order a message moving meanwhile is missed at worst, never listed twice. */
    enum store_rc rc = store_scan_dir(s, userfd, user, "cur", with_sizes, out);
    if (rc == STORE_OK)
        rc = store_scan_dir(s, userfd, user, "new", with_sizes, out);
    close(userfd);
    if (rc == STORE_OK && store_finish(out) != 0) {
        note_error("out of memory listing %s", user);
        rc = STORE_FAIL;
    }
    return rc;
}

/* ---- kept listings ---- */

/* Copies a listing into `to` (empty on entry). Returns 0 or -1. */
static int store_list_copy(const struct store_list *from, struct store_list *to)
{
    size_t n = from->n;
    memset(to, 0, sizeof *to);
    to->msgs = malloc((n ? n : 1) * sizeof *to->msgs);
    to->by_uid = malloc((n ? n : 1) * sizeof *to->by_uid);
    to->names = malloc(from->names_len ? from->names_len : 1);
    if (to->msgs == NULL || to->by_uid == NULL || to->names == NULL) {
        store_list_free(to);
        return -1;
    }
    if (n > 0)
        memcpy(to->msgs, from->msgs, n * sizeof *to->msgs);
    if (from->names_len > 0)
        memcpy(to->names, from->names, from->names_len);
    to->n = to->cap = n;
    to->names_len = to->names_cap = from->names_len;
    for (size_t i = 0; i < n; i++) {
        to->msgs[i].name = to->names + to->msgs[i].name_off;
        to->by_uid[i] = to->msgs + (from->by_uid[i] - from->msgs);
    }
    return 0;
}

/* Stamps USER/SUB. Returns 0 (also when it does not exist) or -1. */
static int store_stamp(struct store *s, const char *user, const char *sub, struct store_stamp *t)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", user, sub);
    memset(t, 0, sizeof *t);
    if (fstatat(s->rootfd, path, &st, 0) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return -1;
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->mtime = st.st_mtim;
    t->present = 1;
    return 0;
}

static int store_stamp_same(const struct store_stamp *a, const struct store_stamp *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* 1 when the directory has not changed for STORE_SETTLE_SEC: a change made
 * later is sure to give it another modification time, even with the coarse
 * clock file systems stamp with. */
static int store_stamp_settled(const struct store_stamp *t, time_t now)
{
    return !t->present || t->mtime.tv_sec + STORE_SETTLE_SEC < now;
}

static void store_kept_drop(struct store *s, struct store_kept *k)
{
    s->kept_msgs -= k->list.n;
    free(k->user);
    store_list_free(&k->list);
    memset(k, 0, sizeof *k);
}

static struct store_kept *store_kept_find(struct store *s, const char *user)
{
    for (size_t i = 0; i < STORE_KEPT_MAX; i++)
        if (s->kept[i].user != NULL && strcmp(s->kept[i].user, user) == 0)
            return &s->kept[i];
    return NULL;
}

/* Keeps a copy of USER's listing (best effort). Called with the lock held. */
static void store_kept_put(struct store *s, const char *user, const struct store_stamp *cur,
                           const struct store_stamp *new, int with_sizes,
                           const struct store_list *l)
{
    struct store_kept *k = store_kept_find(s, user);
    if (k != NULL)
        store_kept_drop(s, k);
    if (l->n > STORE_KEPT_MSGS)
        return;
    /* Evicts the least recently used until a slot is free and the messages fit. */
    for (k = NULL; k == NULL;) {
        struct store_kept *slot = NULL, *old = NULL;
        for (size_t i = 0; i < STORE_KEPT_MAX; i++) {
            struct store_kept *c = &s->kept[i];
            if (c->user == NULL)
                slot = slot != NULL ? slot : c;
            else if (old == NULL || c->used < old->used)
                old = c;
        }
        if (slot != NULL && s->kept_msgs + l->n <= STORE_KEPT_MSGS)
            k = slot;
        else if (old != NULL)
            store_kept_drop(s, old);
        else
            return;
    }
    k->user = strdup(user);
    if (k->user == NULL || store_list_copy(l, &k->list) != 0) {
        free(k->user);
        k->user = NULL;
        return;
    }
    k->cur = *cur;
    k->new = *new;
    k->with_sizes = with_sizes;
    k->used = ++s->clock;
    s->kept_msgs += l->n;
}

/*
 * The listing comes from the last one kept for the user while neither cur/
 * nor new/ has changed since (two stats instead of reading both directories
 * and, with sizes, stating every file); otherwise from a scan, kept when
 * both directories have been still for a while. A file rewritten in place
 * (which Maildir never does) keeps its old size until its directory changes.
 */
enum store_rc store_list(struct store *s, const char *user, int with_sizes, struct store_list *out)
{
    struct store_stamp cur, new;
    int stamped = store_stamp(s, user, "cur", &cur) == 0 &&
                  store_stamp(s, user, "new", &new) == 0 && (cur.present || new.present);
    if (stamped) {
        pthread_mutex_lock(&s->mu);
        struct store_kept *k = store_kept_find(s, user);
        int hit = k != NULL && k->with_sizes >= with_sizes && store_stamp_same(&k->cur, &cur) &&
                  store_stamp_same(&k->new, &new);
        if (hit) {
            k->used = ++s->clock;
            hit = store_list_copy(&k->list, out) == 0;
        }
        s->hits += hit != 0;
        s->scans += hit == 0;
        pthread_mutex_unlock(&s->mu);
        if (hit)
            return STORE_OK;
    } else {
        pthread_mutex_lock(&s->mu);
        s->scans++;
        pthread_mutex_unlock(&s->mu);
    }
    enum store_rc rc = store_scan(s, user, with_sizes, out);
    time_t now = time(NULL);
    if (rc == STORE_OK && stamped && store_stamp_settled(&cur, now) &&
        store_stamp_settled(&new, now)) {
        pthread_mutex_lock(&s->mu);
        store_kept_put(s, user, &cur, &new, with_sizes, out);
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

void store_counts(struct store *s, unsigned long long *scans, unsigned long long *hits)
{
    pthread_mutex_lock(&s->mu);
    *scans = s->scans;
    *hits = s->hits;
    pthread_mutex_unlock(&s->mu);
}

const struct store_msg *store_find(const struct store_list *l, const char *uid)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(uid, l->by_uid[mid]->uid);
        if (c == 0)
            return l->by_uid[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- one message ---- */

static void store_path(char *buf, size_t len, const char *user, const struct store_msg *m)
{
    snprintf(buf, len, "%s/%s/%s", user, m->in_cur ? "cur" : "new", m->name);
}

int store_open_msg(struct store *s, const char *user, const struct store_msg *m, uint64_t *bytes)
{
    char path[PATH_MAX];
    store_path(path, sizeof path, user, m);
    int fd = openat(s->rootfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = fstat(fd, &st) != 0 ? -errno : !S_ISREG(st.st_mode) ? -ENOENT : 0;
    if (rc != 0) {
        close(fd);
        return rc;
    }
    *bytes = (uint64_t)st.st_size;
    return fd;
}

int store_open_kept(struct store *s, const char *user, const char *uid, uint64_t *bytes)
{
    struct store_msg m = {0};
    char name[PATH_MAX];
    int found = 0;

    pthread_mutex_lock(&s->mu);
    struct store_kept *k = store_kept_find(s, user);
    const struct store_msg *km = k != NULL ? store_find(&k->list, uid) : NULL;
    if (km != NULL && strlen(km->name) < sizeof name) {
        memcpy(name, km->name, strlen(km->name) + 1);
        m.name = name;
        m.in_cur = km->in_cur;
        found = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return found ? store_open_msg(s, user, &m, bytes) : -ENOENT;
}

int store_unlink(struct store *s, const char *user, const struct store_msg *m)
{
    char path[PATH_MAX];
    store_path(path, sizeof path, user, m);
    if (unlinkat(s->rootfd, path, 0) != 0)
        return -errno;
    sizes_forget(s->sizes, path);
    pthread_mutex_lock(&s->mu);
    struct store_kept *k = store_kept_find(s, user);
    if (k != NULL)
        store_kept_drop(s, k);
    pthread_mutex_unlock(&s->mu);
    return 0;
}
