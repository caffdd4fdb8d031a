/*
 * pop3_drive: a fake connection shell around the sans-I/O POP3 session, for
 * the fuzz targets fuzz_session and fuzz_command.
 *
 * It does what gateway/conn.c does, without sockets: delivers the client's
 * bytes in chunks, offers them to pop3_feed() at most pop3_line_max() at a
 * time, takes the replies, and answers every backend call with a canned
 * backend reply that goes through the real reply parser (wh_json_parse), so
 * the session only ever sees results the gateway can really produce. RETR and
 * TOP bodies stream through conv like conn.c streams them.
 *
 * Choices (chunk sizes, which canned reply, a broken transfer, shutdown or
 * timeout at the end) come from a control byte string; when it runs out every
 * choice is 0: deliver all that is left, answer with the first (successful)
 * canned reply.
 *
 * Invariants checked on the way (FUZZ_CHECK aborts):
 * - replies are whole CRLF lines, at most 512 octets each, with no bare CR or
 *   LF, no NUL and no "(null)" from a NULL string;
 * - the user name the session holds and echoes has no control bytes;
 * - pop3_call() is non-NULL exactly while a call is wanted;
 * - pop3_feed() consumes at most what it was offered and never stalls on a
 *   full line-max buffer;
 * - every call the session asks for has a JSON body wh_json_build() accepts,
 *   with the fields its event needs (a quit names the uid of every deleted
 *   message, a retrieve a listed message);
 * - the session reaches POP3_WANT_CLOSE or waits for input in a bounded
 *   number of steps, and pop3_free() leaves nothing behind (LeakSanitizer).
 */
#ifndef POP3GW_FUZZ_POP3_DRIVE_H
#define POP3GW_FUZZ_POP3_DRIVE_H

#include "fuzz.h"

#include <ctype.h>

#include "gateway/conv.h"
#include "gateway/pop3.h"
#include "webhook/wh_json.h"

#define DRIVE_MAX_MESSAGES 3 /* listings of 5 get cut: the truncation path */
#define DRIVE_STEPS_MAX 100000

/* Flags of drive_init(). */
#define DF_APOP 0x01
#define DF_PLAINTEXT 0x02
#define DF_STLS 0x04
#define DF_TLS 0x08
#define DF_LOOPBACK 0x10
#define DF_CONNECT 0x20
#define DF_JSON_LOG 0x40
#define DF_STRICT 0x80 /* max_bad_commands 3, max_auth_failures 2, EXPIRE, LOGIN-DELAY */

struct drive {
    struct pop3_session *s;
    struct pop3_params params;
    struct pop3_peer peer;
    const uint8_t *ctl; /* choices */
    size_t ctl_n, ctl_i;
    size_t n_list; /* messages in the listing the session took */
    int list_uids; /* that listing carried uids */
    int listed;    /* a listing was taken */
    uint8_t *in;   /* client bytes delivered and not yet consumed */
    size_t in_len, in_cap;
    unsigned long steps;
    int trace; /* FUZZ_TRACE set: the replies go to stderr, to read a seed */
};

static uint8_t drive_choice(struct drive *d)
{
    return d->ctl_i < d->ctl_n ? d->ctl[d->ctl_i++] : 0;
}

/* ---- replies -------------------------------------------------------------- */

static void drive_check_output(struct drive *d)
{
    size_t n, i, line = 0;
    const char *out = pop3_output(d->s, &n);

    if (n == 0)
        return;
    FUZZ_CHECK(out != NULL);
    if (d->trace)
        fwrite(out, 1, n, stderr);
    FUZZ_CHECK(n >= 2 && out[n - 2] == '\r' && out[n - 1] == '\n');
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(out[i] != '\0');
        if (out[i] == '\r')
            FUZZ_CHECK(i + 1 < n && out[i + 1] == '\n');
        if (out[i] == '\n') {
            FUZZ_CHECK(i > 0 && out[i - 1] == '\r');
            FUZZ_CHECK(i + 1 - line <= 512); /* RFC 2449 section 4 */
            line = i + 1;
        }
    }
    /* A NULL string given to printf: only a user name may say "(null)". */
    FUZZ_CHECK(memmem(out, n, "(null)", 6) == NULL ||
               (pop3_user(d->s) && strstr(pop3_user(d->s), "(null)")));
    pop3_output_clear(d->s);
    pop3_output(d->s, &n);
    FUZZ_CHECK(n == 0);
}

/* Reads every accessor, so that a dangling pointer shows under ASan. */
static void drive_check_accessors(struct drive *d)
{
    const char *u = pop3_user(d->s), *m = pop3_mailbox(d->s), *c = pop3_current_command(d->s);
    enum pop3_state st = pop3_state(d->s);

    FUZZ_CHECK(st >= POP3_AUTHORIZATION && st <= POP3_CLOSED);
    FUZZ_CHECK(c != NULL && strlen(c) <= 8);
    if (u) {
        /* It is echoed in replies ("+OK USER has ..."): no CR, LF or other
         * control bytes, the rule wh_json applies to a backend's user. */
        const char *p;
        FUZZ_CHECK(strlen(u) <= WH_USER_MAX);
        for (p = u; *p; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    if (m)
        FUZZ_CHECK(strlen(m) <= WH_MAILBOX_MAX);
    FUZZ_CHECK(pop3_line_max(d->s) >= POP3_LINE_MAX);
    FUZZ_CHECK(pop3_msg_size(d->s, 0) == 0);
    FUZZ_CHECK(pop3_msg_size(d->s, (uint32_t)d->n_list + 1) == 0);
    (void)pop3_utf8(d->s);
    (void)pop3_logged_in(d->s);
    (void)pop3_quit_done(d->s);
    (void)pop3_committing(d->s);
    if (pop3_want(d->s) == POP3_WANT_CALL)
        FUZZ_CHECK(pop3_call(d->s) != NULL);
    else
        FUZZ_CHECK(pop3_call(d->s) == NULL);
}

/* ---- backend calls -------------------------------------------------------- */

struct drive_reply {
    long status;
    const char *body;
};

static const struct drive_reply drive_auth_replies[] = {
    {200, "{\"ok\":true}"},
    {200, "{\"ok\":true,\"user\":\"alice\",\"mailbox\":{\"id\":7,\"path\":[\"a\",\"b\"]}}"},
    {200, "{\"ok\":true,\"user\":\"J\\u00fcrgen M\\u00fcller\",\"mailbox\":\"box-1\"}"},
    {200, "{\"ok\":false}"},
    {200, "{\"ok\":false,\"code\":\"IN-USE\",\"message\":\"[IN-USE] locked by another session\"}"},
    {200, "{\"ok\":false,\"code\":\"LOGIN-DELAY\"}"},
    {200, "{\"ok\":false,\"code\":\"SYS/PERM\",\"message\":\"account\\r\\nclosed\"}"},
    {200, "{\"ok\":false,\"code\":\"SYS/TEMP\",\"message\":\"   \"}"},
    {401, ""},
    {403, "{\"message\":\"wrong password\"}"},
    {423, ""},
    {429, "{\"message\":\"slow down\"}"},
    {500, ""},
    {200, "not json"},
    {0, ""},
};

static const struct drive_reply drive_list_replies[] = {
    {200, "{\"messages\":[{\"size\":120},{\"size\":3400},{\"size\":0}]}"},
    {200, "{\"messages\":[{\"size\":120,\"uid\":\"u1\"},{\"size\":55,\"uid\":\"u2\"}]}"},
    {200, "{\"messages\":[]}"},
    {200, "{\"messages\":[{\"size\":1,\"uid\":\"a\"},{\"size\":2,\"uid\":\"b\"},{\"size\":3,"
          "\"uid\":\"c\"},{\"size\":4,\"uid\":\"d\"},{\"size\":5,\"uid\":\"e\"}]}"},
    {200, "{\"messages\":[{\"size\":9007199254740991},{\"size\":9007199254740991,\"uid\":null}]}"},
    {200, "{\"messages\":[{\"size\":7,\"uid\":\"~\"}]}"},
    {500, ""},
    {200, "{\"messages\":{}}"},
};

static const struct drive_reply drive_quit_replies[] = {
    {200, ""},
    {204, ""},
    {500, ""},
    {0, ""},
};

static const struct drive_reply drive_connect_replies[] = {
    {200, ""},
    {200, "{\"ok\":true}"},
    {200, "{\"ok\":false,\"message\":\"[AUTH] go away\"}"},
    {403, ""},
    {500, ""},
};

static const char *const drive_bodies[] = {
    "From: a@example.org\r\nSubject: hi\r\n\r\nbody line\r\n.dot line\r\n",
    "Subject: LF only\n\nline 1\n.\nline 3",
    "",
    "no header break\r\n..\r\n.\r\n",
};

#define DRIVE_N(a) (sizeof(a) / sizeof((a)[0]))

/* The checks every call must pass before it may leave. */
static void drive_check_call(struct drive *d, const struct wh_call *c)
{
    size_t len, i;
    char *body;

    FUZZ_CHECK((unsigned)c->event < WH_N_EVENTS);
    FUZZ_CHECK(c->session && c->client_ip);
    FUZZ_CHECK(!c->user || strlen(c->user) <= WH_USER_MAX);
    body = wh_json_build(c, &len);
    FUZZ_CHECK(body != NULL); /* every string is valid UTF-8, the mailbox valid JSON */
    FUZZ_CHECK(len == strlen(body));
    free(body);
    switch (c->event) {
    case WH_AUTHENTICATE:
        FUZZ_CHECK(c->method != NULL && c->attempt >= 1);
        if (!strcmp(c->method, "APOP")) {
            FUZZ_CHECK(c->apop_timestamp && c->apop_digest && strlen(c->apop_digest) == 32);
            for (i = 0; i < 32; i++)
                FUZZ_CHECK(isxdigit((unsigned char)c->apop_digest[i]) &&
                           !isupper((unsigned char)c->apop_digest[i]));
        } else if (!strcmp(c->method, "XOAUTH2") || !strcmp(c->method, "OAUTHBEARER")) {
            FUZZ_CHECK(c->token && *c->token);
        } else {
            FUZZ_CHECK(c->password != NULL);
        }
        break;
    case WH_RETRIEVE:
        FUZZ_CHECK(d->listed && c->message >= 1 && c->message <= d->n_list);
        FUZZ_CHECK(c->lines >= -1);
        break;
    case WH_QUIT:
        FUZZ_CHECK(c->n_deleted <= d->n_list);
        for (i = 0; i < c->n_deleted; i++) {
            FUZZ_CHECK(c->deleted[i].message >= 1 && c->deleted[i].message <= d->n_list);
            FUZZ_CHECK(i == 0 || c->deleted[i].message > c->deleted[i - 1].message);
            /* DESIGN.md: "every deleted entry names its uid" */
            FUZZ_CHECK(c->deleted[i].uid && wh_uid_valid(c->deleted[i].uid));
        }
        break;
    case WH_UIDL:
        FUZZ_CHECK(d->listed && d->n_list > 0);
        break;
    default:
        break;
    }
}

/* The body of a uidl reply: as many uids as listed, or one too many. */
static void drive_uidl_body(struct drive *d, uint8_t choice, char *out, size_t outlen)
{
    size_t i, n = d->n_list + ((choice & 0x10) ? 1 : 0), o;

    o = (size_t)snprintf(out, outlen, "{\"uids\":[");
    for (i = 0; i < n && o + 16 < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s\"x%zu\"", i ? "," : "", i + 1);
    snprintf(out + o, outlen - o, "]}");
}

/* A retrieve: status first, then maybe the body through conv, as conn.c does. */
static void drive_retrieve(struct drive *d, const struct wh_call *c)
{
    uint8_t choice = drive_choice(d);
    long lines = c->lines;
    uint32_t msg = c->message;
    static const enum wh_status no_body[] = {WH_NOT_FOUND, WH_TEMP, WH_OK};
    const char *body = drive_bodies[(choice >> 2) % DRIVE_N(drive_bodies)];
    size_t len = strlen(body), pos = 0, chunk = 1 + (choice >> 5) * 3;
    int broken = (choice & 0x10) != 0;
    struct conv cv;

    if ((choice & 3) == 3) {
        /* The transfer failed before any status: conn.c's wh_start failure. */
        struct wh_result r;
        memset(&r, 0, sizeof(r));
        r.status = no_body[(choice >> 2) % 3];
        pop3_call_done(d->s, &r);
        wh_result_free(&r);
        return;
    }
    if ((choice & 3) != 0) {
        FUZZ_CHECK(pop3_retrieve_begin(d->s, (choice & 3) == 1 ? WH_NOT_FOUND : WH_TEMP) == 0);
        FUZZ_CHECK(pop3_want(d->s) != POP3_WANT_CALL);
        return;
    }
    if (!pop3_retrieve_begin(d->s, WH_OK))
        return;
    drive_check_output(d); /* "+OK" leaves before the body */
    conv_init(&cv, lines);
    while (pos < len && !conv_done(&cv)) {
        size_t k = len - pos < chunk ? len - pos : chunk;
        char *out = malloc(CONV_OUT_MAX(k));
        FUZZ_CHECK(out != NULL);
        conv_feed(&cv, body + pos, k, out);
        free(out);
        pos += k;
        if (broken && pos >= len / 2)
            break;
    }
    if (broken && !conv_done(&cv)) {
        pop3_retrieve_end(d->s, 0);
        FUZZ_CHECK(pop3_want(d->s) == POP3_WANT_CLOSE);
        return;
    }
    {
        char tail[8];
        conv_finish(&cv, tail);
    }
    (void)pop3_msg_size(d->s, msg);
    pop3_retrieve_end(d->s, 1);
    FUZZ_CHECK(pop3_want(d->s) == POP3_WANT_INPUT);
}

static void drive_call(struct drive *d)
{
    const struct wh_call *c = pop3_call(d->s);
    const struct drive_reply *rep = NULL;
    struct wh_result r;
    char uidl[256];
    uint8_t choice;
    long status = 200;
    const char *body = "";
    enum wh_event ev;

    FUZZ_CHECK(c != NULL);
    drive_check_call(d, c);
    ev = c->event;
    if (ev == WH_RETRIEVE) {
        drive_retrieve(d, c);
        return;
    }
    choice = drive_choice(d);
    switch (ev) {
    case WH_AUTHENTICATE:
        rep = &drive_auth_replies[choice % DRIVE_N(drive_auth_replies)];
        break;
    case WH_LIST:
        rep = &drive_list_replies[choice % DRIVE_N(drive_list_replies)];
        break;
    case WH_QUIT:
    case WH_DISCONNECT:
        rep = &drive_quit_replies[choice % DRIVE_N(drive_quit_replies)];
        break;
    case WH_CONNECT:
        rep = &drive_connect_replies[choice % DRIVE_N(drive_connect_replies)];
        break;
    case WH_UIDL:
        if ((choice & 0x0f) == 1)
            status = 500;
        drive_uidl_body(d, choice, uidl, sizeof(uidl));
        body = uidl;
        break;
    default:
        FUZZ_CHECK(0);
    }
    if (rep) {
        status = rep->status;
        body = rep->body;
    }
    wh_json_parse(ev, status, "application/json", body, strlen(body), DRIVE_MAX_MESSAGES, &r);
    pop3_call_done(d->s, &r);
    if (ev == WH_LIST && pop3_state(d->s) == POP3_TRANSACTION && !d->listed) {
        d->listed = 1;
        d->n_list = r.n_msgs;
        d->list_uids = r.has_uids;
    }
    wh_result_free(&r);
}

/* ---- the shell ------------------------------------------------------------ */

static void drive_init(struct drive *d, uint8_t flags, const uint8_t *ctl, size_t ctl_n)
{
    memset(d, 0, sizeof(*d));
    fuzz_log((flags & DF_JSON_LOG) != 0);
    d->params.hostname = "pop.example.org";
    d->params.apop = (flags & DF_APOP) != 0;
    d->params.plaintext_always = (flags & DF_PLAINTEXT) != 0;
    d->params.stls_available = (flags & DF_STLS) != 0;
    d->params.max_bad_commands = (flags & DF_STRICT) ? 3 : 0;
    d->params.max_auth_failures = (flags & DF_STRICT) ? 2 : 0;
    d->params.expire = (flags & DF_STRICT) ? "NEVER" : NULL;
    d->params.login_delay = (flags & DF_STRICT) ? 900 : -1;
    d->params.max_messages = DRIVE_MAX_MESSAGES;
    d->params.connect_event = (flags & DF_CONNECT) != 0;
    d->peer.id = "c0ffee0123456789";
    d->peer.ip = (flags & DF_LOOPBACK) ? "127.0.0.1" : "203.0.113.7";
    d->peer.port = 51522;
    d->peer.tls = (flags & DF_TLS) != 0;
    d->peer.loopback = (flags & DF_LOOPBACK) != 0;
    d->peer.apop_timestamp = "<1896.697170952@pop.example.org>";
    d->ctl = ctl;
    d->ctl_n = ctl_n;
    d->trace = getenv("FUZZ_TRACE") != NULL;
    d->s = pop3_new(&d->params, &d->peer);
    FUZZ_CHECK(d->s != NULL);
}

/* Offers the buffered input as conn_feed() does. Returns 1 if any was taken. */
static int drive_feed(struct drive *d)
{
    int any = 0;

    while (pop3_want(d->s) == POP3_WANT_INPUT && d->in_len > 0) {
        size_t max = pop3_line_max(d->s), len = d->in_len < max ? d->in_len : max, k;
        uint8_t *window = fuzz_memdup(d->in, len); /* exact size: overreads show */

        k = pop3_feed(d->s, (const char *)window, len);
        free(window);
        FUZZ_CHECK(k <= len);
        if (k == 0) {
            /* "needs more" is only possible below a full line. */
            FUZZ_CHECK(pop3_want(d->s) != POP3_WANT_INPUT || len < max);
            break;
        }
        memmove(d->in, d->in + k, d->in_len - k);
        d->in_len -= k;
        any = 1;
        drive_check_output(d);
    }
    return any;
}

static void drive_deliver(struct drive *d, const uint8_t *p, size_t n)
{
    if (d->in_len + n > d->in_cap) {
        d->in_cap = d->in_len + n;
        d->in = realloc(d->in, d->in_cap);
        FUZZ_CHECK(d->in != NULL);
    }
    memcpy(d->in + d->in_len, p, n);
    d->in_len += n;
}

/*
 * Runs the client's byte stream through the session until it is all
 * delivered and the session waits for more, or until it asks to close.
 * `chunked`: take chunk sizes from the choices (else deliver all at once).
 */
static void drive_run(struct drive *d, const uint8_t *stream, size_t len, int chunked)
{
    size_t pos = 0;

    for (;;) {
        FUZZ_CHECK(++d->steps < DRIVE_STEPS_MAX);
        drive_check_output(d);
        drive_check_accessors(d);
        switch (pop3_want(d->s)) {
        case POP3_WANT_INPUT:
            if (drive_feed(d))
                break;
            if (pos < len) {
                size_t k = chunked ? drive_choice(d) : 0;
                if (k == 0 || k > len - pos)
                    k = len - pos;
                drive_deliver(d, stream + pos, k);
                pos += k;
                break;
            }
            return;
        case POP3_WANT_CALL:
            drive_call(d);
            break;
        case POP3_WANT_DELAY:
            /* conn.c runs no login/idle timer meanwhile: only the delay ends it. */
            pop3_delay_done(d->s);
            FUZZ_CHECK(pop3_want(d->s) != POP3_WANT_DELAY);
            break;
        case POP3_WANT_STLS:
            /* conn.c drops what the client sent before the handshake. */
            d->in_len = 0;
            pop3_tls_started(d->s);
            FUZZ_CHECK(pop3_want(d->s) == POP3_WANT_INPUT);
            break;
        case POP3_WANT_CLOSE:
            return;
        default:
            FUZZ_CHECK(0);
        }
    }
}

/* Ends the session: how = 1 shutdown, 2 timeout, else the client just left.
 * Like conn.c, only a session waiting for input is shut down or timed out. */
static void drive_end(struct drive *d, uint8_t how)
{
    if (pop3_want(d->s) == POP3_WANT_INPUT && how % 3 == 1) {
        pop3_shutdown(d->s);
        FUZZ_CHECK(pop3_want(d->s) == POP3_WANT_CLOSE);
    } else if (pop3_want(d->s) == POP3_WANT_INPUT && how % 3 == 2) {
        pop3_timeout(d->s);
        FUZZ_CHECK(pop3_want(d->s) == POP3_WANT_CLOSE);
    }
    drive_check_output(d);
    drive_check_accessors(d);
    pop3_free(d->s);
    free(d->in);
    d->s = NULL;
    d->in = NULL;
}

#endif
