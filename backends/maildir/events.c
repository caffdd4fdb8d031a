/*
 * events: one handler per webhook event (see events.h and the contract in
 * docs). Every handler reads the request's fields, acts on the users file,
 * the locks or the Maildir, and fills a reply; ev_handle checks what all
 * requests share first. Handlers never exit and never leave a reply unset.
 */
#include "backends/maildir/events.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "backends/maildir/locks.h"
#include "backends/maildir/note.h"
#include "backends/maildir/store.h"
#include "backends/maildir/users.h"

#define EV_AUTH_MESSAGE "invalid user name or password"

const char *const ev_names[EV_COUNT] = {
    [EV_AUTHENTICATE] = "authenticate", [EV_LIST] = "list", [EV_UIDL] = "uidl",
    [EV_RETRIEVE] = "retrieve",         [EV_QUIT] = "quit", [EV_CONNECT] = "connect",
    [EV_DISCONNECT] = "disconnect",
};

int ev_lookup(const char *name, size_t len)
{
    for (int i = 0; i < EV_COUNT; i++)
        if (strlen(ev_names[i]) == len && memcmp(ev_names[i], name, len) == 0)
            return i;
    return -1;
}

void ev_reply_clear(struct ev_reply *r)
{
    json_decref(r->json);
    if (r->fd >= 0)
        close(r->fd);
    r->json = NULL;
    r->fd = -1;
}

/* ---- replies ---- */

static void ev_json(struct ev_reply *out, int status, json_t *body)
{
    out->status = status;
    out->json = body;
}

/* {"error": message} with an HTTP error status. */
static void ev_error(struct ev_reply *out, int status, const char *message)
{
    ev_json(out, status, json_pack("{s:s}", "error", message));
}

/* A failed login: 200 {"ok": false, "code": code, "message": message}. Never
 * 401 or 403: to the gateway those mean the webhook itself was refused. */
static void ev_refuse(struct ev_reply *out, const char *code, const char *message)
{
    ev_json(out, 200, json_pack("{s:b,s:s,s:s}", "ok", 0, "code", code, "message", message));
}

static void ev_ok(struct ev_reply *out)
{
    ev_json(out, 200, json_pack("{s:b}", "ok", 1));
}

/* ---- request fields ---- */

/* The string field `key`, or NULL when absent or not a string. */
static const char *ev_str(json_t *req, const char *key)
{
    return json_string_value(json_object_get(req, key));
}

/* The session id, "" when absent: locks are held by it. */
static const char *ev_session(json_t *req)
{
    const char *s = ev_str(req, "session");
    return s != NULL ? s : "";
}

/*
 * The mailbox user of list, uidl, retrieve and quit: the `user` field (the
 * name authenticate confirmed). Returns NULL after filling a 400 reply when it
 * cannot name a mailbox directory.
 */
static const char *ev_mailbox_user(json_t *req, struct ev_reply *out)
{
    const char *user = ev_str(req, "user");
    if (user == NULL || !users_name_ok(user, strlen(user))) {
        ev_error(out, 400, "missing or invalid user");
        return NULL;
    }
    return user;
}

/* Lists the user's Maildir, or fills a 404/500 reply and returns -1. */
static int ev_list_or_fail(const struct ev_ctx *ctx, const char *user, int with_sizes,
                           struct store_list *l, struct ev_reply *out)
{
    enum store_rc rc = store_list(ctx->store, user, with_sizes, l);
    if (rc == STORE_OK)
        return 0;
    if (rc == STORE_NO_USER)
        ev_error(out, 404, "no such user");
    else
        ev_error(out, 500, "cannot read the maildir");
    return -1;
}

static void ev_touch(const struct ev_ctx *ctx, const char *user, json_t *req)
{
    if (ctx->locks != NULL)
        locks_touch(ctx->locks, user, ev_session(req));
}

/* ---- authenticate ---- */

/* Fills `c` from the request for `method`. Returns 0, or -1 for a method this
 * backend does not know. */
static int ev_auth_cred(json_t *req, const char *method, struct users_cred *c)
{
    json_t *secret;
    memset(c, 0, sizeof *c);
    c->user = ev_str(req, "user");
    if (method == NULL) {
        return -1;
    } else if (!strcmp(method, "USER") || !strcmp(method, "PLAIN") || !strcmp(method, "LOGIN")) {
        c->method = USERS_PASSWORD;
        secret = json_object_get(req, "password");
    } else if (!strcmp(method, "XOAUTH2") || !strcmp(method, "OAUTHBEARER")) {
        c->method = USERS_TOKEN; /* a null user (OAUTHBEARER without a=) is found by token */
        secret = json_object_get(req, "token");
    } else if (!strcmp(method, "APOP")) {
        json_t *apop = json_object_get(req, "apop");
        c->method = USERS_APOP;
        c->apop_timestamp = ev_str(apop, "timestamp");
        c->apop_digest = ev_str(apop, "digest");
        return 0;
    } else {
        return -1;
    }
    c->secret = json_string_value(secret);
    c->secret_len = json_string_length(secret);
    return 0;
}

static void ev_authenticate(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    struct users_cred c;
    char canon[USERS_NAME_MAX + 1];
    if (ev_auth_cred(req, ev_str(req, "method"), &c) != 0) {
        ev_refuse(out, "AUTH", "unsupported authentication method");
        return;
    }
    /* PLAIN may ask to act as another user (authzid): no proxy logins here. */
    const char *authzid = ev_str(req, "authzid");
    int authz_ok =
        authzid == NULL || authzid[0] == '\0' || (c.user != NULL && strcmp(authzid, c.user) == 0);
    int valid = users_check(ctx->users, &c, canon); /* always, so failures cost the same */
    if (!valid || !authz_ok) {
        ev_refuse(out, "AUTH", EV_AUTH_MESSAGE);
        return;
    }
    if (ctx->locks != NULL) {
        int rc = locks_acquire(ctx->locks, canon, ev_session(req));
        if (rc == 0) {
            ev_refuse(out, "IN-USE", "maildrop already locked");
            return;
        }
        if (rc < 0) {
            ev_refuse(out, "SYS/TEMP", "server out of memory");
            return;
        }
    }
    ev_json(out, 200,
            json_pack("{s:b,s:s,s:{s:s}}", "ok", 1, "user", canon, "mailbox", "dir", canon));
}

/* ---- list, uidl ---- */

static void ev_list(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    const char *user = ev_mailbox_user(req, out);
    struct store_list l = {0};
    if (user == NULL || ev_list_or_fail(ctx, user, 1, &l, out) != 0)
        goto done;
    json_t *msgs = json_array();
    for (size_t i = 0; msgs != NULL && i < l.n; i++) {
        json_t *m = json_object();
        json_object_set_new(m, "size", json_integer((json_int_t)l.msgs[i].size));
        if (ctx->list_uids)
            json_object_set_new(m, "uid", json_string(l.msgs[i].uid));
        json_array_append_new(msgs, m);
    }
    ev_json(out, 200, msgs != NULL ? json_pack("{s:o}", "messages", msgs) : NULL);
    ev_touch(ctx, user, req);
done:
    store_list_free(&l);
}

static void ev_uidl(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    const char *user = ev_mailbox_user(req, out);
    struct store_list l = {0};
    if (user == NULL || ev_list_or_fail(ctx, user, 0, &l, out) != 0)
        goto done;
    json_t *uids = json_array();
    for (size_t i = 0; uids != NULL && i < l.n; i++)
        json_array_append_new(uids, json_string(l.msgs[i].uid));
    ev_json(out, 200, uids != NULL ? json_pack("{s:o}", "uids", uids) : NULL);
    ev_touch(ctx, user, req);
done:
    store_list_free(&l);
}

/* ---- retrieve ---- */

/* The message a request names: by uid when it gives one (numbers may have
 * shifted since its listing), else by its 1-based number. NULL if none. */
static const struct store_msg *ev_pick(const struct store_list *l, const char *uid, json_int_t num)
{
    if (uid != NULL)
        return store_find(l, uid);
    return num >= 1 && (uint64_t)num <= l->n ? &l->msgs[num - 1] : NULL;
}

/*
 * One attempt at opening the message. Returns 1 when `out` is filled (the
 * file, a 404 or a 500), 0 when the file vanished between listing and opening
 * (a mail client moved it from new/ to cur/) and a new listing may find it.
 */
static int ev_retrieve_once(const struct ev_ctx *ctx, const char *user, const char *uid,
                            json_int_t num, struct ev_reply *out)
{
    struct store_list l;
    int done = 1;
    if (ev_list_or_fail(ctx, user, 0, &l, out) != 0)
        goto out;
    const struct store_msg *m = ev_pick(&l, uid, num);
    if (m == NULL) {
        ev_error(out, 404, "no such message");
        goto out;
    }
    int fd = store_open_msg(ctx->store, user, m, &out->fd_size);
    if (fd >= 0) {
        out->status = 200;
        out->fd = fd;
    } else if (fd == -ENOENT) {
        done = 0;
    } else {
        note_error("open %s/%s/%s: %s", user, m->in_cur ? "cur" : "new", m->name, strerror(-fd));
        ev_error(out, 500, "cannot read the message");
    }
out:
    store_list_free(&l);
    return done;
}

/* The file goes out as it is stored. `lines` (TOP) is not honoured: the
 * gateway cuts the message itself and stops the transfer, and sending the
 * whole file lets the kernel do it with sendfile(2). */
static void ev_retrieve(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    const char *user = ev_mailbox_user(req, out);
    if (user == NULL)
        return;
    const char *uid = ev_str(req, "uid");
    json_t *jn = json_object_get(req, "message");
    json_int_t num = json_is_integer(jn) ? json_integer_value(jn) : 0;
    if (uid == NULL && num < 1) {
        ev_error(out, 400, "missing message number or uid");
        return;
    }
    ev_touch(ctx, user, req);
    if (uid != NULL) {
        int fd = store_open_kept(ctx->store, user, uid, &out->fd_size);
        if (fd >= 0) {
            out->status = 200;
            out->fd = fd;
            return;
        }
    }
    if (!ev_retrieve_once(ctx, user, uid, num, out) && !ev_retrieve_once(ctx, user, uid, num, out))
        ev_error(out, 404, "no such message");
}

/* ---- quit ---- */

/* Unlinks a listed message, with a log line. Returns 0 or -errno. */
static int ev_unlink(const struct ev_ctx *ctx, const char *user, const char *session,
                     const struct store_msg *m)
{
    int rc = store_unlink(ctx->store, user, m);
    const char *dir = m->in_cur ? "cur" : "new";
    if (rc == 0)
        note_info("deleted session=%s user=%s uid=%s file=%s/%s", session, user, m->uid, dir,
                  m->name);
    else if (rc != -ENOENT)
        note_error("cannot delete %s/%s/%s (session=%s uid=%s): %s", user, dir, m->name, session,
                   m->uid, strerror(-rc));
    return rc;
}

/* A uid whose file vanished after listing: it may have moved from new/ to
 * cur/. Looks once more. Returns 0 (deleted, or gone for good) or -errno. */
static int ev_unlink_relisted(const struct ev_ctx *ctx, const char *user, const char *session,
                              const char *uid)
{
    struct store_list l;
    int rc = store_list(ctx->store, user, 0, &l) == STORE_OK ? 0 : -EIO;
    const struct store_msg *m = rc == 0 ? store_find(&l, uid) : NULL;
    if (m != NULL)
        rc = ev_unlink(ctx, user, session, m);
    store_list_free(&l);
    return rc == -ENOENT ? 0 : rc;
}

/* 1 if every entry of `deleted` is an object naming a uid or a message number. */
static int ev_deleted_ok(json_t *deleted)
{
    size_t i;
    json_t *d;
    if (!json_is_array(deleted))
        return 0;
    json_array_foreach(deleted, i, d)
    {
        json_t *num = json_object_get(d, "message");
        if (ev_str(d, "uid") == NULL && !(json_is_integer(num) && json_integer_value(num) >= 1))
            return 0;
    }
    return 1;
}

/*
 * Deletes what `deleted` names, all resolved against one listing taken first
 * (numbers refer to it when uids are missing). A uid already gone counts as
 * deleted, so a repeated quit succeeds. Returns the number of failures.
 */
static size_t ev_delete_all(const struct ev_ctx *ctx, const char *user, const char *session,
                            const struct store_list *l, json_t *deleted)
{
    size_t i, failed = 0;
    json_t *d;
    json_array_foreach(deleted, i, d)
    {
        const char *uid = ev_str(d, "uid");
        json_int_t num = json_integer_value(json_object_get(d, "message"));
        const struct store_msg *m = ev_pick(l, uid, num);
        int rc = m != NULL ? ev_unlink(ctx, user, session, m) : 0;
        if (rc == -ENOENT && uid != NULL)
            rc = ev_unlink_relisted(ctx, user, session, uid);
        if (rc != 0 && rc != -ENOENT)
            failed++;
    }
    return failed;
}

static void ev_quit(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    const char *user = ev_mailbox_user(req, out);
    if (user == NULL)
        return;
    const char *session = ev_session(req);
    json_t *deleted = json_object_get(req, "deleted");
    struct store_list l = {0};
    if (deleted != NULL && !ev_deleted_ok(deleted)) {
        ev_error(out, 400, "\"deleted\" must be an array of {\"message\": n, \"uid\": \"...\"}");
    } else if (json_array_size(deleted) == 0) {
        ev_json(out, 200, json_pack("{s:b,s:i}", "ok", 1, "deleted", 0));
    } else if (ev_list_or_fail(ctx, user, 0, &l, out) == 0) {
        size_t failed = ev_delete_all(ctx, user, session, &l, deleted);
        size_t count = json_array_size(deleted) - failed;
        if (failed > 0)
            ev_error(out, 500, "some deleted messages not removed");
        else
            ev_json(out, 200, json_pack("{s:b,s:I}", "ok", 1, "deleted", (json_int_t)count));
    }
    store_list_free(&l);
    /* The session is over whatever happened: its lock goes. */
    if (ctx->locks != NULL)
        locks_release(ctx->locks, user, session);
}

/* ---- connect, disconnect ---- */

static void ev_connect(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    (void)ctx;
    (void)req;
    ev_ok(out);
}

static void ev_disconnect(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out)
{
    const char *user = ev_str(req, "user");
    if (ctx->locks != NULL && user != NULL)
        locks_release(ctx->locks, user, ev_session(req));
    ev_ok(out);
}

/* ---- dispatch ---- */

typedef void (*ev_handler)(const struct ev_ctx *ctx, json_t *req, struct ev_reply *out);

static const ev_handler ev_handlers[EV_COUNT] = {
    [EV_AUTHENTICATE] = ev_authenticate, [EV_LIST] = ev_list, [EV_UIDL] = ev_uidl,
    [EV_RETRIEVE] = ev_retrieve,         [EV_QUIT] = ev_quit, [EV_CONNECT] = ev_connect,
    [EV_DISCONNECT] = ev_disconnect,
};

void ev_handle(const struct ev_ctx *ctx, enum ev_event event, json_t *req, struct ev_reply *out)
{
    out->status = 500;
    out->json = NULL;
    out->fd = -1;
    out->fd_size = 0;
    if ((unsigned)event >= EV_COUNT) {
        ev_error(out, 404, "unknown event");
        return;
    }
    if (!json_is_object(req)) {
        ev_error(out, 400, "body is not a JSON object");
        return;
    }
    const char *name = ev_str(req, "event");
    if (name == NULL || strcmp(name, ev_names[event]) != 0) {
        ev_error(out, 400, "\"event\" does not match the path");
        return;
    }
    ev_handlers[event](ctx, req, out);
}
