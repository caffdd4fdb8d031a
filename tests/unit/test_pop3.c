/*
 * Tests for gateway/pop3.c, the sans-I/O POP3 session.
 *
 * A small driver plays the connection shell: it keeps the client bytes the
 * session has not consumed yet, offers all of them to pop3_feed() until it
 * returns 0, collects the output, and answers the session's backend calls
 * from a scripted fake backend (a table of accounts and messages in each
 * test). Everything the client would see goes into a transcript, together
 * with one "@..." line per backend call and per shell action:
 *
 *   @authenticate user=U method=M [password=P] [timestamp=T digest=D] attempt=N
 *   @list user=U [mailbox=JSON]        @uidl
 *   @retrieve message=N uid=UID|- lines=L, then @body (streamed) or @broken
 *   @quit deleted=[N:UID,...]          @delay  @stls  @close
 *
 * and " committing" after a call line while pop3_committing() is true. Tests
 * compare the transcript line by line with patterns in which '*' matches any
 * text: exact where RFC 1939 fixes the reply ("+OK 2 400"), a prefix where
 * the wording is free ("+OK*", "-ERR [AUTH]*").
 *
 * Every scenario runs with its input fed whole, one byte at a time, and in
 * chunks of 2 and 7 bytes, and the transcripts must be identical: that is how
 * pipelined batches and commands split across reads are checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/log.h"
#include "gateway/pop3.h"
#include "webhook/wh.h"

/* ---- the fake backend --------------------------------------------------- */

struct fake_msg {
    uint64_t size;
    const char *uid;
};

struct backend {
    const char *user;        /* the one account */
    const char *password;    /* what USER/PASS must send */
    const char *apop_digest; /* what APOP must send (lower case) */
    const char *canonical;   /* user name to return on success, or NULL */
    const char *mailbox;     /* mailbox JSON to return on success, or NULL */
    /* WH_OK: check the credentials; anything else: answer it to the attempts
     * up to auth_status_until (0: all of them) */
    enum wh_status auth_status;
    int auth_status_until;
    enum wh_code refuse_code; /* for refused logins */
    const char *refuse_message;
    const struct fake_msg *msgs; /* the maildrop */
    size_t n_msgs;
    int list_uids; /* the listing carries the uids (else only uidl does) */
    enum wh_status list_status, uidl_status, retrieve_status, quit_status;
    int uidl_extra;      /* uidl answers this many uids more (or fewer) than listed */
    int retrieve_broken; /* the streamed body breaks after +OK */
};

struct setup {
    struct pop3_params params;
    struct pop3_peer peer;
    struct backend be;
};

static const struct fake_msg three_msgs[] = {{100, "u1"}, {200, "u2"}, {300, "u3"}};

#define APOP_TS "<1896.697170952@dbc.mtview.ca.us>"
#define APOP_DIGEST "c4c9334bac560ecc979e58001b3e22fb"

/* A loopback client, plaintext allowed, no limits, alice/secret with three
 * messages of 100, 200 and 300 octets whose uids come with the listing. */
static struct setup setup_default(void)
{
    struct setup su;

    memset(&su, 0, sizeof(su));
    su.params.hostname = "pop.example.org";
    su.params.apop = 0;
    su.params.plaintext_always = 0;
    su.params.stls_available = 0;
    su.params.max_bad_commands = 0;
    su.params.max_auth_failures = 0;
    su.params.expire = NULL;
    su.params.login_delay = -1;
    su.params.max_messages = 1000;
    su.peer.id = "s-0001";
    su.peer.ip = "127.0.0.1";
    su.peer.port = 40110;
    su.peer.tls = 0;
    su.peer.loopback = 1;
    su.peer.apop_timestamp = NULL;
    su.be.user = "alice";
    su.be.password = "secret";
    su.be.apop_digest = APOP_DIGEST;
    su.be.auth_status = WH_OK;
    su.be.refuse_code = WH_CODE_AUTH;
    su.be.msgs = three_msgs;
    su.be.n_msgs = 3;
    su.be.list_uids = 1;
    return su;
}

/* A client on the network, without TLS. */
static void setup_remote(struct setup *su)
{
    su->peer.ip = "203.0.113.7";
    su->peer.loopback = 0;
}

static void setup_apop(struct setup *su)
{
    su->params.apop = 1;
    su->peer.apop_timestamp = APOP_TS;
}

/* ---- growable strings --------------------------------------------------- */

struct str {
    char *p;
    size_t len, cap;
};

static void str_add(struct str *s, const char *data, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        s->p = realloc(s->p, cap);
        assert_non_null(s->p);
        s->cap = cap;
    }
    if (n)
        memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void str_printf(struct str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void str_printf(struct str *s, const char *fmt, ...)
{
    va_list ap;
    char *tmp = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    str_add(s, tmp, (size_t)n);
    free(tmp);
}

/* `n` copies of `c`, NUL-terminated. */
static char *repeat(char c, size_t n)
{
    char *p = malloc(n + 1);

    assert_non_null(p);
    memset(p, c, n);
    p[n] = '\0';
    return p;
}

static char *xstrdup(const char *s)
{
    char *p;

    if (!s)
        return NULL;
    p = strdup(s);
    assert_non_null(p);
    return p;
}

/* ---- cleanup after a failed assertion ------------------------------------ */

/* cmocka leaves a failing test by longjmp: what a test still holds is listed
 * here and freed by the teardown, so the sanitizers report only real leaks. */
#define OWNED_MAX 64
static void *owned[OWNED_MAX];
static void (*owned_free[OWNED_MAX])(void *);

static void own(void *p, void (*fn)(void *))
{
    size_t i;

    if (!p)
        return;
    for (i = 0; i < OWNED_MAX; i++)
        if (!owned[i]) {
            owned[i] = p;
            owned_free[i] = fn;
            return;
        }
    fail_msg("too many live objects");
}

static void disown(void *p)
{
    size_t i;

    for (i = 0; p && i < OWNED_MAX; i++)
        if (owned[i] == p)
            owned[i] = NULL;
}

static int free_leftovers(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < OWNED_MAX; i++)
        if (owned[i]) {
            void *p = owned[i];
            owned[i] = NULL;
            owned_free[i](p);
        }
    return 0;
}

/* ---- the driver --------------------------------------------------------- */

struct drive {
    const struct setup *su;
    struct pop3_session *s;
    struct str tr;    /* the transcript */
    struct str in;    /* client bytes not consumed yet */
    int manual_delay; /* stop at POP3_WANT_DELAY instead of ending it */
    int in_delay, closed, tls;
    char *list_user, *list_mailbox; /* what the list call carried */
};

static void tr_line(struct drive *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tr_line(struct drive *d, const char *fmt, ...)
{
    va_list ap;
    char *tmp = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    str_add(&d->tr, tmp, (size_t)n);
    str_add(&d->tr, "\r\n", 2);
    free(tmp);
}

/* Moves the session's output to the transcript, checking that it is made of
 * whole CRLF lines of at most 512 octets (RFC 2449 §4) without NUL, bare CR
 * or bare LF. */
static void collect(struct drive *d)
{
    size_t n, i, start = 0;
    const char *o = pop3_output(d->s, &n);

    for (i = 0; i < n; i++) {
        assert_true(o[i] != '\0');
        if (o[i] == '\r') {
            assert_true(i + 1 < n && o[i + 1] == '\n');
            assert_true(i + 2 - start <= 512);
            start = i + 2;
            i++;
        } else {
            assert_true(o[i] != '\n');
        }
    }
    assert_int_equal(start, n); /* ends with CRLF */
    str_add(&d->tr, o, n);
    pop3_output_clear(d->s);
    pop3_output(d->s, &n);
    assert_int_equal(n, 0);
}

static void consume(struct drive *d, size_t n)
{
    memmove(d->in.p, d->in.p + n, d->in.len - n);
    d->in.len -= n;
}

/* A line of the transcript for a call, with " committing" when the session
 * says its QUIT is being committed. */
static void tr_call(struct drive *d, struct str *line)
{
    tr_line(d, "%s%s", line->p, pop3_committing(d->s) ? " committing" : "");
    free(line->p);
    memset(line, 0, sizeof(*line));
}

static void answer_authenticate(struct drive *d, const struct wh_call *c, struct wh_result *r)
{
    const struct backend *be = &d->su->be;
    struct str line = {0};
    int ok;

    assert_non_null(c->method);
    assert_true(c->attempt >= 1);
    str_printf(&line, "@authenticate user=%s method=%s", c->user, c->method);
    if (c->mailbox) /* not expected: the mailbox comes with a successful login */
        str_printf(&line, " mailbox=%s", c->mailbox);
    if (strcmp(c->method, "USER") == 0) {
        assert_non_null(c->password);
        assert_null(c->apop_timestamp);
        assert_null(c->apop_digest);
        str_printf(&line, " password=%s", c->password);
        ok = be->password && strcmp(c->password, be->password) == 0;
    } else if (strcmp(c->method, "APOP") == 0) {
        assert_null(c->password);
        assert_non_null(c->apop_timestamp);
        assert_non_null(c->apop_digest);
        str_printf(&line, " timestamp=%s digest=%s", c->apop_timestamp, c->apop_digest);
        ok = be->apop_digest && strcmp(c->apop_digest, be->apop_digest) == 0 &&
             d->su->peer.apop_timestamp &&
             strcmp(c->apop_timestamp, d->su->peer.apop_timestamp) == 0;
    } else {
        fail_msg("unexpected authenticate method %s", c->method);
        return;
    }
    str_printf(&line, " attempt=%d", c->attempt);
    tr_call(d, &line);

    ok = ok && be->user && strcmp(c->user, be->user) == 0;
    if (be->auth_status != WH_OK &&
        (be->auth_status_until == 0 || c->attempt <= be->auth_status_until)) {
        r->status = be->auth_status;
        if (r->status == WH_REFUSED) {
            r->code = be->refuse_code;
            r->message = xstrdup(be->refuse_message);
        } else {
            r->http_status = 503;
            r->error = xstrdup("fake backend: unavailable");
        }
    } else if (ok) {
        r->status = WH_OK;
        r->http_status = 200;
        r->user = xstrdup(be->canonical);
        r->mailbox = xstrdup(be->mailbox);
    } else {
        r->status = WH_REFUSED;
        r->http_status = 200;
        r->code = be->refuse_code;
        r->message = xstrdup(be->refuse_message);
    }
}

static void answer_list(struct drive *d, const struct wh_call *c, struct wh_result *r)
{
    const struct backend *be = &d->su->be;
    struct str line = {0};
    size_t i;

    str_printf(&line, "@list user=%s", c->user);
    if (c->mailbox)
        str_printf(&line, " mailbox=%s", c->mailbox);
    tr_call(d, &line);
    free(d->list_user);
    free(d->list_mailbox);
    d->list_user = xstrdup(c->user);
    d->list_mailbox = xstrdup(c->mailbox);

    r->status = be->list_status;
    if (r->status != WH_OK) {
        r->error = xstrdup("fake backend: list failed");
        return;
    }
    r->http_status = 200;
    r->n_msgs = be->n_msgs;
    r->msgs = calloc(be->n_msgs ? be->n_msgs : 1, sizeof(*r->msgs));
    assert_non_null(r->msgs);
    for (i = 0; i < be->n_msgs; i++) {
        r->msgs[i].size = be->msgs[i].size;
        r->msgs[i].uid = be->list_uids ? xstrdup(be->msgs[i].uid) : NULL;
    }
    r->has_uids = be->list_uids;
}

static void answer_uidl(struct drive *d, struct wh_result *r)
{
    const struct backend *be = &d->su->be;
    struct str line = {0};
    size_t i, n = (size_t)((long)be->n_msgs + be->uidl_extra);

    str_printf(&line, "@uidl");
    tr_call(d, &line);
    r->status = be->uidl_status;
    if (r->status != WH_OK) {
        r->error = xstrdup("fake backend: uidl failed");
        return;
    }
    r->http_status = 200;
    r->n_msgs = n;
    r->msgs = calloc(n ? n : 1, sizeof(*r->msgs));
    assert_non_null(r->msgs);
    for (i = 0; i < n; i++) {
        char extra[32];
        snprintf(extra, sizeof(extra), "extra-%zu", i);
        r->msgs[i].uid = xstrdup(i < be->n_msgs ? be->msgs[i].uid : extra);
    }
    r->has_uids = 1;
}

/* Streams: pop3_retrieve_begin(), the body (not part of the session's
 * output), pop3_retrieve_end(). */
static void answer_retrieve(struct drive *d, const struct wh_call *c)
{
    const struct backend *be = &d->su->be;
    struct str line = {0};
    int body;

    assert_true(c->message >= 1);
    str_printf(&line, "@retrieve message=%u uid=%s lines=%ld", (unsigned)c->message,
               c->uid ? c->uid : "-", c->lines);
    tr_call(d, &line);
    body = pop3_retrieve_begin(d->s, be->retrieve_status);
    assert_int_equal(body, be->retrieve_status == WH_OK);
    collect(d);
    if (!body) {
        assert_int_not_equal(pop3_want(d->s), POP3_WANT_CALL);
        return;
    }
    /* While the body streams, the session reads nothing. */
    if (d->in.len)
        assert_int_equal(pop3_feed(d->s, d->in.p, d->in.len), 0);
    if (be->retrieve_broken) {
        tr_line(d, "@broken");
        pop3_retrieve_end(d->s, 0);
    } else {
        tr_line(d, "@body");
        pop3_retrieve_end(d->s, 1);
    }
}

static void answer_quit(struct drive *d, const struct wh_call *c, struct wh_result *r)
{
    struct str line = {0};
    size_t i;

    assert_int_equal(pop3_state(d->s), POP3_UPDATE);
    if (c->n_deleted)
        assert_non_null(c->deleted);
    str_printf(&line, "@quit deleted=[");
    for (i = 0; i < c->n_deleted; i++)
        str_printf(&line, "%s%u:%s", i ? "," : "", (unsigned)c->deleted[i].message,
                   c->deleted[i].uid ? c->deleted[i].uid : "-");
    str_printf(&line, "]");
    tr_call(d, &line);
    r->status = d->su->be.quit_status;
    r->http_status = r->status == WH_OK ? 200 : 503;
    if (r->status != WH_OK)
        r->error = xstrdup("fake backend: quit failed");
}

/* Runs the pending call against the fake backend and gives the result back. */
static void answer_call(struct drive *d)
{
    const struct wh_call *c = pop3_call(d->s);
    struct wh_result r;

    assert_non_null(c);
    assert_string_equal(c->session, d->su->peer.id);
    assert_string_equal(c->client_ip, d->su->peer.ip);
    assert_int_equal(c->client_port, d->su->peer.port);
    assert_int_equal(c->client_tls, d->tls);
    assert_non_null(c->user);
    if (c->event != WH_AUTHENTICATE && c->event != WH_LIST) {
        /* after login every call names the confirmed user and mailbox */
        assert_non_null(d->list_user);
        assert_string_equal(c->user, d->list_user);
        if (d->list_mailbox) {
            assert_non_null(c->mailbox);
            assert_string_equal(c->mailbox, d->list_mailbox);
        } else {
            assert_null(c->mailbox);
        }
    }
    if (c->event != WH_RETRIEVE)
        assert_int_equal(c->lines, -1);
    memset(&r, 0, sizeof(r));
    switch (c->event) {
    case WH_AUTHENTICATE:
        answer_authenticate(d, c, &r);
        break;
    case WH_LIST:
        answer_list(d, c, &r);
        break;
    case WH_UIDL:
        answer_uidl(d, &r);
        break;
    case WH_RETRIEVE:
        answer_retrieve(d, c);
        return;
    case WH_QUIT:
        answer_quit(d, c, &r);
        break;
    default:
        fail_msg("unexpected call event %d", (int)c->event);
    }
    pop3_call_done(d->s, &r);
    wh_result_free(&r);
}

/* Feeds what is buffered and serves the session, as the shell does, until it
 * needs more input, closes, or (manual_delay) waits for its delay. */
static void pump(struct drive *d)
{
    for (;;) {
        while (!d->closed && pop3_want(d->s) == POP3_WANT_INPUT && d->in.len > 0) {
            size_t n = pop3_feed(d->s, d->in.p, d->in.len);
            const char *lf;

            if (n == 0) {
                /* it only waits for more when no line that fits is complete */
                assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
                assert_null(memchr(d->in.p, '\n', d->in.len));
                assert_true(d->in.len < pop3_line_max(d->s));
                break;
            }
            assert_true(n <= d->in.len);
            /* one line at most: up to its LF, or all of an overlong line */
            lf = memchr(d->in.p, '\n', n);
            if (lf)
                assert_ptr_equal(lf, d->in.p + n - 1);
            else
                assert_int_equal(n, d->in.len);
            consume(d, n);
        }
        collect(d);
        if (d->closed)
            return;
        switch (pop3_want(d->s)) {
        case POP3_WANT_INPUT:
            return;
        case POP3_WANT_CALL:
            if (d->in.len)
                assert_int_equal(pop3_feed(d->s, d->in.p, d->in.len), 0);
            answer_call(d);
            break;
        case POP3_WANT_DELAY:
            if (d->in.len)
                assert_int_equal(pop3_feed(d->s, d->in.p, d->in.len), 0);
            assert_null(pop3_call(d->s));
            if (!d->in_delay) {
                tr_line(d, "@delay");
                d->in_delay = 1;
            }
            if (d->manual_delay)
                return;
            pop3_delay_done(d->s);
            d->in_delay = 0;
            break;
        case POP3_WANT_STLS:
            tr_line(d, "@stls");
            d->in.len = 0; /* what came before the handshake is dropped */
            pop3_tls_started(d->s);
            d->tls = 1;
            break;
        case POP3_WANT_CLOSE:
            assert_null(pop3_call(d->s));
            tr_line(d, "@close");
            d->closed = 1;
            return;
        default:
            fail_msg("unexpected want %d", (int)pop3_want(d->s));
        }
    }
}

static void d_free(struct drive *d);

static void d_free_any(void *p)
{
    d_free(p);
}

static struct drive *d_open(const struct setup *su)
{
    struct drive *d = calloc(1, sizeof(*d));

    assert_non_null(d);
    own(d, d_free_any);
    d->su = su;
    d->tls = su->peer.tls;
    d->s = pop3_new(&su->params, &su->peer);
    assert_non_null(d->s);
    assert_int_equal(pop3_state(d->s), POP3_AUTHORIZATION);
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    assert_null(pop3_call(d->s));
    str_add(&d->tr, "", 0);
    str_add(&d->in, "", 0);
    collect(d); /* the greeting */
    return d;
}

static void d_free(struct drive *d)
{
    disown(d);
    pop3_free(d->s);
    free(d->tr.p);
    free(d->in.p);
    free(d->list_user);
    free(d->list_mailbox);
    free(d);
}

/* Sends `len` bytes in chunks of `chunk` bytes (0: all at once), serving the
 * session after each chunk. Stops once the session closed. */
static void d_send_chunked(struct drive *d, const char *data, size_t len, size_t chunk)
{
    size_t pos = 0;

    while (pos < len && !d->closed) {
        size_t k = len - pos;
        if (chunk && chunk < k)
            k = chunk;
        str_add(&d->in, data + pos, k);
        pos += k;
        pump(d);
    }
}

static void d_send(struct drive *d, const char *text)
{
    d_send_chunked(d, text, strlen(text), 0);
}

/* ---- scenarios ---------------------------------------------------------- */

struct outcome {
    char *tr;
    enum pop3_state state;
    enum pop3_want want;
    int logged_in, quit_done, committing;
    char *user;
};

static const size_t chunk_modes[] = {0, 1, 2, 7}; /* 0: the whole input at once */

static void print_escaped(const char *label, const char *s)
{
    print_error("%s:\n", label);
    for (; *s; s++) {
        if (*s == '\r' && s[1] == '\n') {
            print_error("\n");
            s++;
        } else if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) {
            print_error("\\x%02x", (unsigned char)*s);
        } else {
            print_error("%c", *s);
        }
    }
}

static void outcome_free(struct outcome *o)
{
    disown(o->tr);
    disown(o->user);
    free(o->tr);
    free(o->user);
    memset(o, 0, sizeof(*o));
}

/* Runs the input through a fresh session in every chunk mode; all must give
 * the same transcript and end state. Returns the outcome (free it with
 * outcome_free). */
static struct outcome run_scenario_at(const struct setup *su, const char *in, size_t len, int at)
{
    struct outcome first;
    size_t i;

    memset(&first, 0, sizeof(first));
    for (i = 0; i < sizeof(chunk_modes) / sizeof(chunk_modes[0]); i++) {
        struct drive *d = d_open(su);
        struct outcome o;

        d_send_chunked(d, in, len, chunk_modes[i]);
        o.tr = xstrdup(d->tr.p);
        o.state = pop3_state(d->s);
        o.want = pop3_want(d->s);
        o.logged_in = pop3_logged_in(d->s);
        o.quit_done = pop3_quit_done(d->s);
        o.committing = pop3_committing(d->s);
        o.user = xstrdup(pop3_user(d->s));
        own(o.tr, free);
        own(o.user, free);
        d_free(d);
        if (i == 0) {
            first = o;
            continue;
        }
        if (strcmp(o.tr, first.tr) != 0) {
            print_escaped("fed whole", first.tr);
            print_error("\n");
            print_escaped("fed in chunks", o.tr);
            print_error("\n");
            print_error("the transcript differs when fed in chunks of %zu\n", chunk_modes[i]);
            _fail(__FILE__, at);
        }
        assert_int_equal(o.state, first.state);
        assert_int_equal(o.want, first.want);
        assert_int_equal(o.logged_in, first.logged_in);
        assert_int_equal(o.quit_done, first.quit_done);
        assert_int_equal(o.committing, first.committing);
        if (o.user || first.user) {
            assert_non_null(o.user);
            assert_non_null(first.user);
            assert_string_equal(o.user, first.user);
        }
        outcome_free(&o);
    }
    return first;
}

#define SCENARIO(su, in) run_scenario_at((su), (in), sizeof(in) - 1, __LINE__)

#define scenario_str(su, in) run_scenario_at((su), (in), strlen(in), __LINE__)

/* '*' matches any run of characters; everything else matches itself. */
static int glob(const char *p, const char *s, const char *e)
{
    for (; *p; p++) {
        if (*p == '*') {
            const char *t;
            for (t = s;; t++) {
                if (glob(p + 1, t, e))
                    return 1;
                if (t == e)
                    return 0;
            }
        }
        if (s == e || *s != *p)
            return 0;
        s++;
    }
    return s == e;
}

static void expect_fail(const char *tr, const char *const *want, size_t at, const char *why,
                        int line)
{
    size_t i;

    print_escaped("transcript", tr);
    print_error("expected:\n");
    for (i = 0; want[i]; i++)
        print_error("%s%s\n", want[i], i == at ? "    <-- here" : "");
    print_error("transcript line %zu: %s\n", at + 1, why);
    _fail(__FILE__, line);
}

/* The transcript must be exactly these lines (patterns), in this order. */
static void expect_lines_at(const char *tr, const char *const *want, int line)
{
    const char *p = tr;
    size_t i;

    for (i = 0; want[i]; i++) {
        const char *e = strstr(p, "\r\n");
        if (!e)
            expect_fail(tr, want, i, "missing", line);
        if (!glob(want[i], p, e))
            expect_fail(tr, want, i, "does not match", line);
        p = e + 2;
    }
    if (*p)
        expect_fail(tr, want, i, "unexpected extra lines", line);
}

/* The whole transcript must match one pattern ('*' may span lines). */
static void expect_glob_at(const char *tr, const char *pattern, int line)
{
    if (glob(pattern, tr, tr + strlen(tr)))
        return;
    print_escaped("transcript", tr);
    print_escaped("expected", pattern);
    print_error("\n");
    _fail(__FILE__, line);
}

#define expect_glob(tr, pattern) expect_glob_at((tr), (pattern), __LINE__)

/* expect_lines(tr, (const char *const[]){"pattern", ..., NULL}) */
#define expect_lines(tr, ...) expect_lines_at((tr), (__VA_ARGS__), __LINE__)
#define EXPECT(o, ...) expect_lines_at((o).tr, (const char *const[]){__VA_ARGS__, NULL}, __LINE__)

/* The number of transcript lines matching a pattern. */
static size_t count_lines(const char *tr, const char *pattern)
{
    size_t n = 0;
    const char *p = tr, *e;

    while ((e = strstr(p, "\r\n"))) {
        n += glob(pattern, p, e);
        p = e + 2;
    }
    return n;
}

/* Whether the last CAPA-style block ("+OK", lines, ".") of the transcript
 * has a capability `name` (the line is the name, or the name and a space). */
static int has_capa(const char *tr, const char *name)
{
    const char *lines[256];
    size_t n = 0, i, last_dot = 0, start = 0, len = strlen(name);
    const char *p = tr, *e;
    int found_dot = 0;

    while ((e = strstr(p, "\r\n")) && n < 256) {
        lines[n++] = p;
        p = e + 2;
    }
    for (i = 0; i < n; i++)
        if (strncmp(lines[i], ".\r\n", 3) == 0) {
            last_dot = i;
            found_dot = 1;
        }
    assert_true(found_dot);
    for (i = last_dot; i-- > 0;)
        if (strncmp(lines[i], "+OK", 3) == 0) {
            start = i;
            break;
        }
    for (i = start + 1; i < last_dot; i++)
        if (strncmp(lines[i], name, len) == 0 && (lines[i][len] == '\r' || lines[i][len] == ' '))
            return 1;
    return 0;
}

#define LOGIN "USER alice\r\nPASS secret\r\n"
/* The transcript lines of LOGIN, with the password `pw`. */
#define LOGGED_IN_PW(pw)                                                                           \
    "+OK*", "@authenticate user=alice method=USER password=" pw " attempt=1", "@list user=alice",  \
        "+OK*"
#define LOGGED_IN LOGGED_IN_PW("secret")
/* The greeting and LOGIN. */
#define START "+OK*", LOGGED_IN
#define LOGGED_IN_GLOB                                                                             \
    "+OK*\r\n@authenticate user=alice method=USER password=secret attempt=1\r\n"                   \
    "@list user=alice\r\n+OK*\r\n"

/* ---- greeting and CAPA -------------------------------------------------- */

static void test_greeting_plain(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "");

    EXPECT(o, "+OK*");
    assert_null(strchr(o.tr, '<')); /* no APOP timestamp */
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    assert_int_equal(o.want, POP3_WANT_INPUT);
    assert_int_equal(o.logged_in, 0);
    assert_null(o.user);
    outcome_free(&o);
}

static void test_greeting_apop(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_apop(&su);
    struct outcome o = SCENARIO(&su, "");

    EXPECT(o, "+OK *" APOP_TS);
    outcome_free(&o);

    /* APOP configured but no timestamp for this session, or a timestamp
     * while APOP is off: no timestamp, and APOP is refused. */
    su.peer.apop_timestamp = NULL;
    o = SCENARIO(&su, "APOP alice " APOP_DIGEST "\r\n");
    EXPECT(o, "+OK*", "-ERR*");
    assert_null(strchr(o.tr, '<'));
    outcome_free(&o);

    su = setup_default();
    su.peer.apop_timestamp = APOP_TS;
    o = SCENARIO(&su, "APOP alice " APOP_DIGEST "\r\n");
    EXPECT(o, "+OK*", "-ERR*");
    assert_null(strchr(o.tr, '<'));
    outcome_free(&o);
}

static void test_capa_loopback(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "CAPA\r\n");

    assert_int_equal(count_lines(o.tr, "+OK*"), 2);
    assert_int_equal(count_lines(o.tr, "."), 1);
    assert_true(has_capa(o.tr, "TOP"));
    assert_true(has_capa(o.tr, "UIDL"));
    assert_true(has_capa(o.tr, "RESP-CODES"));
    assert_true(has_capa(o.tr, "PIPELINING"));
    assert_true(has_capa(o.tr, "USER"));
    assert_true(has_capa(o.tr, "IMPLEMENTATION"));
    assert_false(has_capa(o.tr, "STLS"));
    assert_false(has_capa(o.tr, "EXPIRE"));
    assert_false(has_capa(o.tr, "LOGIN-DELAY"));
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    outcome_free(&o);
}

static void test_capa_plaintext_rules(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o;

    /* remote, no TLS, a certificate: STLS yes, USER no */
    setup_remote(&su);
    su.params.stls_available = 1;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_false(has_capa(o.tr, "USER"));
    assert_true(has_capa(o.tr, "STLS"));
    assert_true(has_capa(o.tr, "TOP"));
    outcome_free(&o);

    /* remote, no TLS, no certificate: neither */
    su.params.stls_available = 0;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_false(has_capa(o.tr, "USER"));
    assert_false(has_capa(o.tr, "STLS"));
    outcome_free(&o);

    /* implicit TLS: USER yes, STLS no */
    su.params.stls_available = 1;
    su.peer.tls = 1;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_true(has_capa(o.tr, "USER"));
    assert_false(has_capa(o.tr, "STLS"));
    outcome_free(&o);

    /* plaintext_auth = allow: USER and STLS */
    su.peer.tls = 0;
    su.params.plaintext_always = 1;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_true(has_capa(o.tr, "USER"));
    assert_true(has_capa(o.tr, "STLS"));
    outcome_free(&o);

    /* loopback and a certificate: USER and STLS */
    su = setup_default();
    su.params.stls_available = 1;
    o = SCENARIO(&su, "capa\r\n");
    assert_true(has_capa(o.tr, "USER"));
    assert_true(has_capa(o.tr, "STLS"));
    outcome_free(&o);
}

static void test_capa_expire_login_delay(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.params.expire = "NEVER";
    su.params.login_delay = 900;
    struct outcome o = SCENARIO(&su, "CAPA\r\n");

    assert_true(has_capa(o.tr, "EXPIRE"));
    assert_int_equal(count_lines(o.tr, "EXPIRE NEVER"), 1);
    assert_int_equal(count_lines(o.tr, "LOGIN-DELAY 900"), 1);
    outcome_free(&o);

    su.params.expire = "30";
    su.params.login_delay = -1;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_int_equal(count_lines(o.tr, "EXPIRE 30"), 1);
    assert_false(has_capa(o.tr, "LOGIN-DELAY"));
    outcome_free(&o);

    su.params.expire = NULL;
    su.params.login_delay = 0;
    o = SCENARIO(&su, "CAPA\r\n");
    assert_false(has_capa(o.tr, "EXPIRE"));
    assert_int_equal(count_lines(o.tr, "LOGIN-DELAY 0"), 1);
    outcome_free(&o);
}

static void test_capa_transaction(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.params.stls_available = 1;
    su.params.expire = "NEVER";
    su.params.login_delay = 900;
    struct outcome o = SCENARIO(&su, LOGIN "CAPA\r\nSTAT\r\n");

    assert_int_equal(o.state, POP3_TRANSACTION);
    assert_true(has_capa(o.tr, "TOP"));
    assert_true(has_capa(o.tr, "UIDL"));
    assert_true(has_capa(o.tr, "RESP-CODES"));
    assert_true(has_capa(o.tr, "PIPELINING"));
    assert_true(has_capa(o.tr, "IMPLEMENTATION"));
    assert_true(has_capa(o.tr, "EXPIRE"));
    assert_true(has_capa(o.tr, "LOGIN-DELAY"));
    /* RFC 6856 / RFC 2449 section 5: UTF8 is announced after login too;
     * USER, SASL and STLS belong to AUTHORIZATION only */
    assert_true(has_capa(o.tr, "UTF8 USER"));
    assert_false(has_capa(o.tr, "USER"));
    assert_false(has_capa(o.tr, "SASL"));
    assert_false(has_capa(o.tr, "STLS"));
    /* the reply is complete before the next one starts */
    assert_non_null(strstr(o.tr, "\r\n.\r\n+OK 3 600\r\n"));
    outcome_free(&o);
}

/* ---- commands in the wrong state, arity, verbs ---------------------------- */

static void test_transaction_commands_before_login(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "STAT\r\nLIST\r\nLIST 1\r\nUIDL\r\nUIDL 1\r\nRETR 1\r\n"
                                     "TOP 1 0\r\nDELE 1\r\nNOOP\r\nRSET\r\nnoop\r\nstat\r\n");

    EXPECT(o, "+OK*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "-ERR*", "-ERR*", "-ERR*");
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    assert_int_equal(o.want, POP3_WANT_INPUT);
    outcome_free(&o);
}

static void test_authorization_commands_after_login(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_apop(&su);
    su.params.stls_available = 1;
    struct outcome o = SCENARIO(&su, LOGIN "USER alice\r\nPASS secret\r\nAPOP alice " APOP_DIGEST
                                           "\r\nSTLS\r\nAUTH PLAIN\r\nAUTH\r\nUTF8\r\n"
                                           "user bob\r\nSTAT\r\n");

    EXPECT(o, "+OK*" APOP_TS, LOGGED_IN, "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "-ERR*", "+OK 3 600");
    assert_int_equal(o.state, POP3_TRANSACTION);
    assert_string_equal(o.user, "alice");
    outcome_free(&o);
}

static void test_unknown_commands(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o =
        SCENARIO(&su, "XYZZY\r\nRETRX 1\r\nST\r\nQUITX\r\n" LOGIN "XYZZY\r\nSTATS\r\nQUI\r\n"
                      "NOOP\r\n");

    EXPECT(o, "+OK*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", LOGGED_IN, "-ERR*", "-ERR*", "-ERR*",
           "+OK*");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);
}

static void test_wrong_arity_authorization(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_apop(&su);
    su.params.stls_available = 1;
    struct outcome o = SCENARIO(&su, "USER\r\nUSER \r\nPASS\r\nAPOP\r\nAPOP alice\r\n"
                                     "APOP alice " APOP_DIGEST " x\r\nSTLS x\r\nCAPA x\r\n"
                                     "QUIT x\r\nQUIT \r\nUSER alice\r\nPASS\r\nPASS \r\n");

    EXPECT(o, "+OK*" APOP_TS, "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "-ERR*", "-ERR*", "+OK*", "-ERR*", "-ERR*");
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    assert_int_equal(o.want, POP3_WANT_INPUT);
    outcome_free(&o);
}

static void test_wrong_arity_transaction(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, LOGIN "STAT 1\r\nLIST 1 2\r\nUIDL 1 2\r\nRETR\r\n"
                                           "RETR 1 2\r\nTOP\r\nTOP 1\r\nTOP 1 2 3\r\nDELE\r\n"
                                           "DELE 1 2\r\nNOOP x\r\nRSET x\r\nQUIT x\r\n"
                                           "CAPA x\r\nLIST \r\nSTAT\r\n");

    EXPECT(o, START, "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "+OK 3 600");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);
}

static void test_case_insensitive_verbs(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o =
        SCENARIO(&su, "user alice\r\nPaSs secret\r\nstat\r\nStat\r\nsTAT\r\nlist 2\r\n"
                      "uidl 2\r\ndele 1\r\nrset\r\nnoop\r\ntop 2 0\r\nretr 3\r\nquit\r\n");

    EXPECT(o, START, "+OK 3 600", "+OK 3 600", "+OK 3 600", "+OK 2 200", "+OK 2 u2", "+OK*", "+OK*",
           "+OK*", "@retrieve message=2 uid=u2 lines=0", "+OK*", "@body",
           "@retrieve message=3 uid=u3 lines=-1", "+OK*", "@body", "@quit deleted=[] committing",
           "+OK*", "@close");
    assert_int_equal(o.quit_done, 1);
    outcome_free(&o);
}

/* ---- message numbers ---------------------------------------------------- */

static void test_bad_message_numbers(void **state)
{
    (void)state;
    static const char *const verbs[] = {"LIST", "UIDL", "RETR", "DELE"};
    static const char *const bad[] = {
        "0",   "-1",  "+1",          "1a",         "a",
        "0x1", "1.0", "99999999999", "4294967297", "18446744073709551617",
        "4",   "1 2", " 1",          "1 ",         "",
    };
    struct setup su = setup_default();
    struct str in = {0};
    const char *want[256];
    size_t nw = 0, v, b;

    str_add(&in, LOGIN, strlen(LOGIN));
    want[nw++] = "+OK*";
    want[nw++] = "+OK*";
    want[nw++] = "@authenticate user=alice method=USER password=secret attempt=1";
    want[nw++] = "@list user=alice";
    want[nw++] = "+OK*";
    for (v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++)
        for (b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            str_printf(&in, "%s %s\r\n", verbs[v], bad[b]);
            want[nw++] = "-ERR*";
        }
    for (b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        str_printf(&in, "TOP %s 0\r\n", bad[b]);
        want[nw++] = "-ERR*";
    }
    /* TOP's line count: a non-negative decimal number */
    static const char *const bad_lines[] = {"-1", "+1", "1a", "a", "0x1", " 1", "1 ", ""};
    for (b = 0; b < sizeof(bad_lines) / sizeof(bad_lines[0]); b++) {
        str_printf(&in, "TOP 1 %s\r\n", bad_lines[b]);
        want[nw++] = "-ERR*";
    }
    /* nothing was deleted or retrieved */
    str_printf(&in, "STAT\r\nLIST 3\r\n");
    want[nw++] = "+OK 3 600";
    want[nw++] = "+OK 3 300";
    want[nw] = NULL;
    assert_true(nw < sizeof(want) / sizeof(want[0]));

    struct outcome o = scenario_str(&su, in.p);
    expect_lines(o.tr, want);
    outcome_free(&o);
    free(in.p);
}

/* RFC 1939 §7: TOP's n is any non-negative number; when it is larger than
 * the body, the whole message is sent. */
static void test_top_lines_larger_than_message(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, LOGIN "TOP 1 100000\r\nTOP 1 99999999999\r\nNOOP\r\n");

    EXPECT(o, START, "@retrieve message=1 uid=u1 lines=100000", "+OK*", "@body",
           "@retrieve message=1 uid=u1 lines=*", "+OK*", "@body", "+OK*");
    outcome_free(&o);
}

/* ---- USER, PASS, APOP ----------------------------------------------------- */

static void test_login(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.canonical = "Alice";
    su.be.mailbox = "{\"id\":7,\"shard\":\"b\"}";
    struct outcome o = SCENARIO(&su, LOGIN "STAT\r\nUIDL 1\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");

    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "@list user=Alice mailbox={\"id\":7,\"shard\":\"b\"}", "+OK*", "+OK 3 600", "+OK 1 u1",
           "@retrieve message=1 uid=u1 lines=-1", "+OK*", "@body", "+OK*",
           "@quit deleted=[1:u1] committing", "+OK*", "@close");
    assert_int_equal(o.logged_in, 1);
    assert_int_equal(o.quit_done, 1);
    assert_string_equal(o.user, "Alice");
    outcome_free(&o);
}

static void test_login_state_and_accessors(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.mailbox = "[1,2]";
    struct drive *d = d_open(&su);

    d_send(d, "USER alice\r\n");
    assert_string_equal(pop3_user(d->s), "alice"); /* given, not yet confirmed */
    assert_int_equal(pop3_logged_in(d->s), 0);
    assert_null(pop3_mailbox(d->s));
    d_send(d, "PASS secret\r\n");
    assert_int_equal(pop3_state(d->s), POP3_TRANSACTION);
    assert_int_equal(pop3_logged_in(d->s), 1);
    assert_string_equal(pop3_user(d->s), "alice");
    assert_non_null(pop3_mailbox(d->s));
    assert_string_equal(pop3_mailbox(d->s), "[1,2]");
    assert_int_equal(pop3_committing(d->s), 0);
    assert_int_equal(pop3_quit_done(d->s), 0);
    assert_int_equal(pop3_msg_size(d->s, 1), 100);
    assert_int_equal(pop3_msg_size(d->s, 2), 200);
    assert_int_equal(pop3_msg_size(d->s, 3), 300);
    assert_int_equal(pop3_msg_size(d->s, 0), 0);
    assert_int_equal(pop3_msg_size(d->s, 4), 0);
    /* deleting does not change what the listing said */
    d_send(d, "DELE 2\r\n");
    assert_int_equal(pop3_msg_size(d->s, 2), 200);
    d_free(d);
}

static void test_pass_with_spaces(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.password = "my secret  pass ";
    struct outcome o = SCENARIO(&su, "USER alice\r\nPASS my secret  pass \r\nSTAT\r\n");

    EXPECT(o, "+OK*", "+OK*",
           "@authenticate user=alice method=USER password=my secret  pass  attempt=1",
           "@list user=alice", "+OK*", "+OK 3 600");
    outcome_free(&o);
}

static void test_pass_utf8(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.user = "j\xc3\xbcrgen";
    su.be.password = "p\xc3\xa4ss";
    struct outcome o = SCENARIO(&su, "USER j\xc3\xbcrgen\r\nPASS p\xc3\xa4ss\r\nSTAT\r\n");

    EXPECT(o, "+OK*", "+OK*",
           "@authenticate user=j\xc3\xbcrgen method=USER password=p\xc3\xa4ss attempt=1",
           "@list user=j\xc3\xbcrgen", "+OK*", "+OK 3 600");
    outcome_free(&o);

    /* a password that is not UTF-8 cannot be passed on */
    o = SCENARIO(&su, "USER j\xc3\xbcrgen\r\nPASS p\xe4ss\r\n");
    EXPECT(o, "+OK*", "+OK*", "-ERR*");
    outcome_free(&o);
}

static void test_pass_without_user(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "PASS secret\r\nNOOP\r\n");

    EXPECT(o, "+OK*", "-ERR*", "-ERR*");
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    outcome_free(&o);
}

static void test_plaintext_refused_without_tls(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o;

    setup_remote(&su);
    su.params.stls_available = 1;
    o = SCENARIO(&su, LOGIN "STAT\r\n");
    EXPECT(o, "+OK*", "-ERR [AUTH]*", "-ERR*", "-ERR*");
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    assert_int_equal(o.logged_in, 0);
    outcome_free(&o);

    su.params.stls_available = 0;
    o = SCENARIO(&su, LOGIN);
    EXPECT(o, "+OK*", "-ERR [AUTH]*", "-ERR*");
    outcome_free(&o);

    /* allowed with implicit TLS or plaintext_auth = allow */
    su.peer.tls = 1;
    o = SCENARIO(&su, LOGIN "STAT\r\n");
    EXPECT(o, START, "+OK 3 600");
    outcome_free(&o);

    su.peer.tls = 0;
    su.params.plaintext_always = 1;
    o = SCENARIO(&su, LOGIN "STAT\r\n");
    EXPECT(o, START, "+OK 3 600");
    outcome_free(&o);
}

static void test_user_invalid_utf8(void **state)
{
    (void)state;
    struct setup su = setup_default();
    static const char *const names[] = {
        "\xff\xfe", /* never valid */
        "a\xc0\xaf"
        "b",                /* overlong */
        "\xed\xa0\x80",     /* a surrogate */
        "x\xc3",            /* cut short */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct str in = {0};
        str_printf(&in, "USER %s\r\nPASS secret\r\n", names[i]);
        struct outcome o = scenario_str(&su, in.p);
        EXPECT(o, "+OK*", "-ERR [AUTH]*", "-ERR*");
        assert_int_equal(o.state, POP3_AUTHORIZATION);
        outcome_free(&o);
        free(in.p);
    }
}

static void test_apop(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_remote(&su); /* APOP sends no plaintext password: fine without TLS */
    setup_apop(&su);
    struct outcome o = SCENARIO(&su, "APOP alice " APOP_DIGEST "\r\nSTAT\r\n");

    EXPECT(o, "+OK*" APOP_TS,
           "@authenticate user=alice method=APOP timestamp=" APOP_TS " digest=" APOP_DIGEST
           " attempt=1",
           "@list user=alice", "+OK*", "+OK 3 600");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);

    /* upper-case hex is passed on in lower case */
    o = SCENARIO(&su, "apop alice C4C9334BAC560ECC979E58001B3E22FB\r\nSTAT\r\n");
    EXPECT(o, "+OK*" APOP_TS,
           "@authenticate user=alice method=APOP timestamp=" APOP_TS " digest=" APOP_DIGEST
           " attempt=1",
           "@list user=alice", "+OK*", "+OK 3 600");
    outcome_free(&o);

    o = SCENARIO(&su, "APOP alice c4C9334bAC560ecc979e58001b3e22fB\r\nSTAT\r\n");
    EXPECT(o, "+OK*" APOP_TS,
           "@authenticate user=alice method=APOP timestamp=" APOP_TS " digest=" APOP_DIGEST
           " attempt=1",
           "@list user=alice", "+OK*", "+OK 3 600");
    outcome_free(&o);

    /* a well-formed digest that is wrong: the backend refuses */
    o = SCENARIO(&su, "APOP alice 00000000000000000000000000000000\r\n");
    EXPECT(o, "+OK*" APOP_TS,
           "@authenticate user=alice method=APOP timestamp=" APOP_TS
           " digest=00000000000000000000000000000000 attempt=1",
           "-ERR [AUTH]*", "@delay");
    assert_int_equal(o.state, POP3_AUTHORIZATION);
    outcome_free(&o);
}

static void test_apop_bad_digest_syntax(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_apop(&su);
    static const char *const digests[] = {
        "c4c9334bac560ecc979e58001b3e22f",   /* 31 */
        "c4c9334bac560ecc979e58001b3e22fbb", /* 33 */
        "g4c9334bac560ecc979e58001b3e22fb",  /* not hex */
        "c4c9334bac560ecc979e58001b3e22f ",  /* a space */
        "c4c9-334bac560ecc979e58001b3e22f",  "0xc9334bac560ecc979e58001b3e22fb", "",
    };
    size_t i;

    for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++) {
        struct str in = {0};
        str_printf(&in, "APOP alice %s\r\nNOOP\r\n", digests[i]);
        struct outcome o = scenario_str(&su, in.p);
        EXPECT(o, "+OK*" APOP_TS, "-ERR*", "-ERR*");
        assert_int_equal(o.state, POP3_AUTHORIZATION);
        outcome_free(&o);
        free(in.p);
    }
}

static void test_attempt_numbering(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_apop(&su);
    struct outcome o = SCENARIO(&su, "USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS wrong 2\r\n"
                                     "APOP alice " APOP_DIGEST "\r\nSTAT\r\n");

    EXPECT(o, "+OK*" APOP_TS, "+OK*",
           "@authenticate user=alice method=USER password=wrong attempt=1", "-ERR [AUTH]*",
           "@delay", "+OK*", "@authenticate user=alice method=USER password=wrong 2 attempt=2",
           "-ERR [AUTH]*", "@delay",
           "@authenticate user=alice method=APOP timestamp=" APOP_TS " digest=" APOP_DIGEST
           " attempt=3",
           "@list user=alice", "+OK*", "+OK 3 600");
    outcome_free(&o);
}

static void test_refusal_codes(void **state)
{
    (void)state;
    static const struct {
        enum wh_code code;
        const char *reply;
    } codes[] = {
        {WH_CODE_AUTH, "-ERR [AUTH]*"},
        {WH_CODE_IN_USE, "-ERR [IN-USE]*"},
        {WH_CODE_LOGIN_DELAY, "-ERR [LOGIN-DELAY]*"},
        {WH_CODE_SYS_TEMP, "-ERR [SYS/TEMP]*"},
        {WH_CODE_SYS_PERM, "-ERR [SYS/PERM]*"},
    };
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct setup su = setup_default();
        su.be.auth_status = WH_REFUSED;
        su.be.refuse_code = codes[i].code;
        struct outcome o = SCENARIO(&su, LOGIN "STAT\r\nQUIT\r\n");
        EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
               codes[i].reply, "@delay", "-ERR*", "+OK*", "@close");
        assert_int_equal(o.logged_in, 0);
        outcome_free(&o);
    }

    /* the backend's message is shown after the code */
    struct setup su = setup_default();
    su.be.auth_status = WH_REFUSED;
    su.be.refuse_code = WH_CODE_IN_USE;
    su.be.refuse_message = "mailbox is locked by another session";
    struct outcome o = SCENARIO(&su, LOGIN);
    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "-ERR [IN-USE] mailbox is locked by another session", "@delay");
    outcome_free(&o);

    /* a very long message still gives a reply line of at most 512 octets
     * (checked for every line by collect()) */
    char *longmsg = repeat('m', 2000);
    su.be.refuse_code = WH_CODE_AUTH;
    su.be.refuse_message = longmsg;
    o = SCENARIO(&su, LOGIN "QUIT\r\n");
    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "-ERR [AUTH] mmmm*", "@delay", "+OK*", "@close");
    outcome_free(&o);
    free(longmsg);
}

static void test_delay_blocks_input(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d = d_open(&su);

    d->manual_delay = 1;
    d_send(d, "USER alice\r\nPASS wrong\r\nCAPA\r\nQUIT\r\n");
    assert_int_equal(pop3_want(d->s), POP3_WANT_DELAY);
    assert_int_equal(pop3_state(d->s), POP3_AUTHORIZATION);
    assert_null(pop3_call(d->s));
    expect_lines(d->tr.p,
                 (const char *const[]){"+OK*", "+OK*",
                                       "@authenticate user=alice method=USER password=wrong "
                                       "attempt=1",
                                       "-ERR [AUTH]*", "@delay", NULL});
    /* nothing is read during the delay */
    assert_int_equal(pop3_feed(d->s, d->in.p, d->in.len), 0);
    assert_int_equal(pop3_feed(d->s, "NOOP\r\n", 6), 0);
    assert_int_equal(d->in.len, strlen("CAPA\r\nQUIT\r\n"));
    d_free(d);

    d = d_open(&su);
    d->manual_delay = 1;
    d_send(d, "USER alice\r\nPASS wrong\r\nQUIT\r\n");
    assert_int_equal(pop3_want(d->s), POP3_WANT_DELAY);
    pop3_delay_done(d->s);
    d->in_delay = 0;
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    pump(d);
    expect_lines(d->tr.p,
                 (const char *const[]){"+OK*", "+OK*",
                                       "@authenticate user=alice method=USER password=wrong "
                                       "attempt=1",
                                       "-ERR [AUTH]*", "@delay", "+OK*", "@close", NULL});
    /* a stray pop3_delay_done() does nothing */
    pop3_delay_done(d->s);
    assert_int_equal(pop3_want(d->s), POP3_WANT_CLOSE);
    d_free(d);
}

static void test_max_auth_failures(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.params.max_auth_failures = 2;
    struct outcome o = SCENARIO(&su, "USER alice\r\nPASS x\r\nUSER alice\r\nPASS y\r\n"
                                     "USER alice\r\nPASS secret\r\n");

    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=x attempt=1",
           "-ERR [AUTH]*", "@delay", "+OK*",
           "@authenticate user=alice method=USER password=y attempt=2", "-ERR [AUTH]*", "@delay",
           "-ERR*", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    assert_int_equal(o.logged_in, 0);
    outcome_free(&o);

    /* one allowed failure */
    su.params.max_auth_failures = 1;
    o = SCENARIO(&su, "USER alice\r\nPASS x\r\nQUIT\r\n");
    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=x attempt=1",
           "-ERR [AUTH]*", "@delay", "-ERR*", "@close");
    outcome_free(&o);
}

static void test_auth_backend_down(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.params.max_auth_failures = 1; /* a backend failure is not the client's */
    su.be.auth_status = WH_TEMP;
    su.be.auth_status_until = 2;
    struct outcome o = SCENARIO(&su, LOGIN "STAT\r\n" LOGIN LOGIN "STAT\r\n");

    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "-ERR [SYS/TEMP]*", "-ERR*", "+OK*",
           "@authenticate user=alice method=USER password=secret attempt=2", "-ERR [SYS/TEMP]*",
           "+OK*", "@authenticate user=alice method=USER password=secret attempt=3",
           "@list user=alice", "+OK*", "+OK 3 600");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);
}

static void test_list_failure(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.list_status = WH_TEMP;
    struct outcome o = SCENARIO(&su, LOGIN "STAT\r\nQUIT\r\n");

    /* The session closes after the -ERR: STAT and QUIT are never read. */
    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "@list user=alice", "-ERR [SYS/TEMP]*", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    assert_int_equal(o.quit_done, 0);
    outcome_free(&o);
}

/* After a list failure the client may log in again; the new login must be
 * checked as the new user, and nothing of the first may leak. */
/* A list failure after a good login closes the session: the backend may hold
 * a lock for that login, and a later login on the same connection must not
 * inherit its user or mailbox. The second login's lines are never read. */
static void test_list_failure_closes(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.list_status = WH_TEMP;
    su.be.mailbox = "{\"box\":1}";
    struct outcome o = SCENARIO(&su, LOGIN "USER bob\r\nPASS bobpw\r\n");

    EXPECT(o, "+OK*", "+OK*", "@authenticate user=alice method=USER password=secret attempt=1",
           "@list user=alice mailbox={\"box\":1}", "-ERR [SYS/TEMP]*", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    outcome_free(&o);
}

/* ---- TRANSACTION ---------------------------------------------------------- */

static void test_deleted_messages_hidden(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, LOGIN "DELE 2\r\nSTAT\r\nLIST\r\nUIDL\r\nLIST 2\r\n"
                                           "UIDL 2\r\nRETR 2\r\nTOP 2 0\r\nDELE 2\r\nLIST 3\r\n"
                                           "UIDL 3\r\nLIST 1\r\nRSET\r\nSTAT\r\nLIST\r\n"
                                           "LIST 2\r\nUIDL\r\nDELE 2\r\n");

    EXPECT(o, START, "+OK*", "+OK 2 400", "+OK*", "1 100", "3 300", ".", "+OK*", "1 u1", "3 u3",
           ".", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "+OK 3 300", "+OK 3 u3", "+OK 1 100",
           "+OK*", "+OK 3 600", "+OK*", "1 100", "2 200", "3 300", ".", "+OK 2 200", "+OK*", "1 u1",
           "2 u2", "3 u3", ".", "+OK*");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);
}

static void test_delete_all(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, LOGIN "DELE 3\r\nDELE 1\r\nDELE 2\r\nSTAT\r\nLIST\r\n"
                                           "UIDL\r\nLIST 1\r\nNOOP\r\nQUIT\r\n");

    EXPECT(o, START, "+OK*", "+OK*", "+OK*", "+OK 0 0", "+OK*", ".", "+OK*", ".", "-ERR*", "+OK*",
           "@quit deleted=[1:u1,2:u2,3:u3] committing", "+OK*", "@close");
    outcome_free(&o);
}

static void test_empty_maildrop(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.n_msgs = 0;
    su.be.list_uids = 0;
    struct outcome o = SCENARIO(&su, LOGIN "STAT\r\nLIST\r\nUIDL\r\nLIST 1\r\nUIDL 1\r\n"
                                           "RETR 1\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nQUIT\r\n");

    EXPECT(o, START, "+OK 0 0", "+OK*", ".", "+OK*", ".", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "+OK*", "@quit deleted=[] committing", "+OK*", "@close");
    outcome_free(&o);
}

static void test_uidl_fetched_once(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.list_uids = 0;
    struct outcome o = SCENARIO(&su, LOGIN "RETR 1\r\nUIDL\r\nUIDL\r\nUIDL 2\r\nRETR 1\r\n"
                                           "DELE 2\r\nQUIT\r\n");

    EXPECT(o, START, "@retrieve message=1 uid=- lines=-1", "+OK*", "@body", "@uidl", "+OK*", "1 u1",
           "2 u2", "3 u3", ".", "+OK*", "1 u1", "2 u2", "3 u3", ".", "+OK 2 u2",
           "@retrieve message=1 uid=u1 lines=-1", "+OK*", "@body", "+OK*",
           "@quit deleted=[2:u2] committing", "+OK*", "@close");
    outcome_free(&o);

    /* UIDL n first */
    o = SCENARIO(&su, LOGIN "UIDL 3\r\nUIDL\r\n");
    EXPECT(o, START, "@uidl", "+OK 3 u3", "+OK*", "1 u1", "2 u2", "3 u3", ".");
    outcome_free(&o);

    /* UIDL n of a deleted or absent message: no call */
    o = SCENARIO(&su, LOGIN "DELE 2\r\nUIDL 2\r\nUIDL 4\r\nUIDL\r\n");
    EXPECT(o, START, "+OK*", "-ERR*", "-ERR*", "@uidl", "+OK*", "1 u1", "3 u3", ".");
    outcome_free(&o);
}

static void test_uidl_failures(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.list_uids = 0;
    struct outcome o;

    su.be.uidl_extra = -1;
    o = SCENARIO(&su, LOGIN "UIDL\r\nUIDL 1\r\nSTAT\r\n");
    EXPECT(o, START, "@uidl", "-ERR [SYS/TEMP]*", "@uidl", "-ERR [SYS/TEMP]*", "+OK 3 600");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);

    su.be.uidl_extra = 1;
    o = SCENARIO(&su, LOGIN "UIDL\r\nRETR 1\r\n");
    EXPECT(o, START, "@uidl", "-ERR [SYS/TEMP]*", "@retrieve message=1 uid=- lines=-1", "+OK*",
           "@body");
    outcome_free(&o);

    su.be.uidl_extra = 0;
    su.be.uidl_status = WH_TEMP;
    o = SCENARIO(&su, LOGIN "UIDL\r\nNOOP\r\n");
    EXPECT(o, START, "@uidl", "-ERR [SYS/TEMP]*", "+OK*");
    outcome_free(&o);
}

static void test_retr_and_top(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o =
        SCENARIO(&su, LOGIN "RETR 1\r\nTOP 2 5\r\nTOP 3 0\r\nRETR 3\r\nNOOP\r\nSTAT\r\n");

    EXPECT(o, START, "@retrieve message=1 uid=u1 lines=-1", "+OK*", "@body",
           "@retrieve message=2 uid=u2 lines=5", "+OK*", "@body",
           "@retrieve message=3 uid=u3 lines=0", "+OK*", "@body",
           "@retrieve message=3 uid=u3 lines=-1", "+OK*", "@body", "+OK*", "+OK 3 600");
    outcome_free(&o);
}

static void test_retrieve_failures(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o;

    su.be.retrieve_status = WH_NOT_FOUND;
    o = SCENARIO(&su, LOGIN "RETR 2\r\nTOP 1 3\r\nNOOP\r\n");
    EXPECT(o, START, "@retrieve message=2 uid=u2 lines=-1", "-ERR*",
           "@retrieve message=1 uid=u1 lines=3", "-ERR*", "+OK*");
    assert_int_equal(o.state, POP3_TRANSACTION);
    outcome_free(&o);

    su.be.retrieve_status = WH_TEMP;
    o = SCENARIO(&su, LOGIN "RETR 2\r\nNOOP\r\n");
    EXPECT(o, START, "@retrieve message=2 uid=u2 lines=-1", "-ERR [SYS/TEMP]*", "+OK*");
    outcome_free(&o);

    /* the body broke after +OK: close, commit nothing */
    su.be.retrieve_status = WH_OK;
    su.be.retrieve_broken = 1;
    o = SCENARIO(&su, LOGIN "DELE 1\r\nRETR 2\r\nNOOP\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "@retrieve message=2 uid=u2 lines=-1", "+OK*", "@broken", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    assert_int_equal(o.quit_done, 0);
    outcome_free(&o);
}

/* A retrieve can also end through pop3_call_done() before any body. */
static void test_retrieve_without_body(void **state)
{
    (void)state;
    static const struct {
        enum wh_status status;
        const char *reply;
    } cases[] = {
        {WH_NOT_FOUND, "-ERR*"},
        {WH_TEMP, "-ERR [SYS/TEMP]*"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct setup su = setup_default();
        struct drive *d = d_open(&su);
        struct wh_result r;
        size_t n;

        d_send(d, LOGIN);
        pop3_output_clear(d->s);
        assert_int_equal(pop3_feed(d->s, "RETR 1\r\nNOOP\r\n", 14), 8);
        assert_int_equal(pop3_want(d->s), POP3_WANT_CALL);
        assert_int_equal(pop3_call(d->s)->event, WH_RETRIEVE);
        memset(&r, 0, sizeof(r));
        r.status = cases[i].status;
        r.error = xstrdup("fake");
        pop3_call_done(d->s, &r);
        wh_result_free(&r);
        assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
        assert_int_equal(pop3_feed(d->s, "NOOP\r\n", 6), 6);
        const char *out = pop3_output(d->s, &n);
        char *copy = strndup(out, n);
        expect_lines(copy, (const char *const[]){cases[i].reply, "+OK*", NULL});
        free(copy);
        d_free(d);
    }
}

static void test_numbers_never_shift(void **state)
{
    (void)state;
    static const struct fake_msg five[] = {
        {11, "a"}, {22, "b"}, {33, "c"}, {44, "d"}, {55, "e"},
    };
    struct setup su = setup_default();
    su.be.msgs = five;
    su.be.n_msgs = 5;
    struct outcome o = SCENARIO(&su, LOGIN "DELE 1\r\nDELE 3\r\nLIST 5\r\nUIDL 4\r\nRETR 2\r\n"
                                           "LIST\r\nQUIT\r\n");

    EXPECT(o, START, "+OK*", "+OK*", "+OK 5 55", "+OK 4 d", "@retrieve message=2 uid=b lines=-1",
           "+OK*", "@body", "+OK*", "2 22", "4 44", "5 55", ".",
           "@quit deleted=[1:a,3:c] committing", "+OK*", "@close");
    outcome_free(&o);
}

/* ---- QUIT ----------------------------------------------------------------- */

static void test_quit_authorization(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "QUIT\r\nNOOP\r\n");

    EXPECT(o, "+OK*", "+OK*", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    assert_int_equal(o.want, POP3_WANT_CLOSE);
    outcome_free(&o);

    o = SCENARIO(&su, "USER alice\r\nQUIT\r\nPASS secret\r\n");
    EXPECT(o, "+OK*", "+OK*", "+OK*", "@close");
    outcome_free(&o);
}

static void test_quit_transaction(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o;

    o = SCENARIO(&su, LOGIN "QUIT\r\nNOOP\r\n");
    EXPECT(o, START, "@quit deleted=[] committing", "+OK*", "@close");
    assert_int_equal(o.quit_done, 1);
    assert_int_equal(o.committing, 0);
    assert_int_equal(o.state, POP3_CLOSED);
    outcome_free(&o);

    o = SCENARIO(&su, LOGIN "DELE 3\r\nDELE 1\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "+OK*", "@quit deleted=[1:u1,3:u3] committing", "+OK*", "@close");
    assert_int_equal(o.quit_done, 1);
    outcome_free(&o);

    o = SCENARIO(&su, LOGIN "DELE 3\r\nRSET\r\nDELE 2\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "+OK*", "+OK*", "@quit deleted=[2:u2] committing", "+OK*", "@close");
    outcome_free(&o);

    o = SCENARIO(&su, LOGIN "DELE 3\r\nRSET\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "+OK*", "@quit deleted=[] committing", "+OK*", "@close");
    outcome_free(&o);
}

static void test_quit_without_uids(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.list_uids = 0;
    struct outcome o;

    /* deletions: uidl first, so every deleted entry names its uid */
    o = SCENARIO(&su, LOGIN "DELE 3\r\nDELE 1\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "+OK*", "@uidl committing", "@quit deleted=[1:u1,3:u3] committing",
           "+OK*", "@close");
    assert_int_equal(o.quit_done, 1);
    outcome_free(&o);

    /* no deletions: no uidl */
    o = SCENARIO(&su, LOGIN "QUIT\r\n");
    EXPECT(o, START, "@quit deleted=[] committing", "+OK*", "@close");
    outcome_free(&o);

    /* uids already fetched by UIDL: no second uidl */
    o = SCENARIO(&su, LOGIN "UIDL 1\r\nDELE 2\r\nQUIT\r\n");
    EXPECT(o, START, "@uidl", "+OK 1 u1", "+OK*", "@quit deleted=[2:u2] committing", "+OK*",
           "@close");
    outcome_free(&o);

    /* the uidl fails: nothing can be deleted safely */
    su.be.uidl_status = WH_TEMP;
    o = SCENARIO(&su, LOGIN "DELE 2\r\nQUIT\r\n");
    assert_int_equal(count_lines(o.tr, "@uidl committing"), 1);
    assert_int_equal(count_lines(o.tr, "-ERR [SYS/TEMP] some deleted messages not removed"), 1);
    assert_int_equal(count_lines(o.tr, "@quit deleted=[2*"), 0);
    assert_int_equal(count_lines(o.tr, "+OK bye*"), 0);
    assert_int_equal(o.quit_done, 0);
    assert_int_equal(o.state, POP3_CLOSED);
    assert_int_equal(o.want, POP3_WANT_CLOSE);
    outcome_free(&o);
}

static void test_quit_failure(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.quit_status = WH_TEMP;
    struct outcome o;

    o = SCENARIO(&su, LOGIN "DELE 1\r\nQUIT\r\n");
    EXPECT(o, START, "+OK*", "@quit deleted=[1:u1] committing",
           "-ERR [SYS/TEMP] some deleted messages not removed", "@close");
    assert_int_equal(o.quit_done, 0);
    assert_int_equal(o.state, POP3_CLOSED);
    outcome_free(&o);

    /* nothing to delete: +OK anyway */
    o = SCENARIO(&su, LOGIN "QUIT\r\n");
    EXPECT(o, START, "@quit deleted=[] committing", "+OK*", "@close");
    assert_int_equal(o.quit_done, 0);
    assert_int_equal(o.state, POP3_CLOSED);
    outcome_free(&o);
}

static void test_committing(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d = d_open(&su);

    d_send(d, LOGIN "DELE 1\r\n");
    assert_int_equal(pop3_committing(d->s), 0);
    assert_int_equal(pop3_feed(d->s, "QUIT\r\nNOOP\r\n", 12), 6);
    assert_int_equal(pop3_want(d->s), POP3_WANT_CALL);
    assert_int_equal(pop3_state(d->s), POP3_UPDATE);
    assert_int_equal(pop3_call(d->s)->event, WH_QUIT);
    assert_int_equal(pop3_committing(d->s), 1);
    assert_int_equal(pop3_quit_done(d->s), 0);
    assert_string_equal(pop3_current_command(d->s), "QUIT");
    assert_int_equal(pop3_feed(d->s, "NOOP\r\n", 6), 0);
    pump(d);
    assert_int_equal(pop3_committing(d->s), 0);
    assert_int_equal(pop3_quit_done(d->s), 1);
    assert_int_equal(pop3_want(d->s), POP3_WANT_CLOSE);
    d_free(d);
}

/* ---- timers and shutdown ------------------------------------------------ */

static void test_timeout(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d;

    /* in TRANSACTION: -ERR and close, and nothing is committed */
    d = d_open(&su);
    d_send(d, LOGIN "DELE 1\r\n");
    pop3_timeout(d->s);
    assert_int_equal(pop3_want(d->s), POP3_WANT_CLOSE);
    assert_null(pop3_call(d->s));
    pump(d);
    expect_lines(d->tr.p, (const char *const[]){START, "+OK*", "-ERR*", "@close", NULL});
    assert_int_equal(pop3_quit_done(d->s), 0);
    assert_int_equal(pop3_state(d->s), POP3_CLOSED);
    /* a second timer changes nothing */
    pop3_timeout(d->s);
    pump(d);
    assert_int_equal(count_lines(d->tr.p, "-ERR*"), 1);
    d_free(d);

    /* in AUTHORIZATION, with half a command buffered */
    d = d_open(&su);
    d_send(d, "USER alice\r\nPA");
    pop3_timeout(d->s);
    pump(d);
    expect_lines(d->tr.p, (const char *const[]){"+OK*", "+OK*", "-ERR*", "@close", NULL});
    assert_int_equal(pop3_feed(d->s, "SS secret\r\n", 11), 0);
    d_free(d);
}

static void test_shutdown(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d = d_open(&su);

    d_send(d, LOGIN "DELE 2\r\n");
    pop3_shutdown(d->s);
    pump(d);
    expect_lines(d->tr.p, (const char *const[]){START, "+OK*", "-ERR [SYS/TEMP]*", "@close", NULL});
    assert_int_equal(pop3_quit_done(d->s), 0);
    d_free(d);
}

/* ---- the line limit and line syntax -------------------------------------- */

static void test_line_255_accepted(void **state)
{
    (void)state;
    struct setup su = setup_default();
    char *name = repeat('a', 248); /* "USER " + 248 + CRLF = 255 octets */
    struct str in = {0}, auth = {0};

    str_printf(&in, "USER %s\r\nPASS secret\r\n", name);
    assert_int_equal(strlen(in.p), 255 + 13);
    str_printf(&auth, "@authenticate user=%s method=USER password=secret attempt=1", name);
    struct outcome o = scenario_str(&su, in.p);
    EXPECT(o, "+OK*", "+OK*", auth.p, "-ERR [AUTH]*", "@delay");
    outcome_free(&o);
    free(in.p);
    free(auth.p);

    /* 255 octets with a bare LF */
    char *name2 = repeat('b', 249);
    memset(&in, 0, sizeof(in));
    memset(&auth, 0, sizeof(auth));
    str_printf(&in, "USER %s\nPASS secret\n", name2);
    str_printf(&auth, "@authenticate user=%s method=USER password=secret attempt=1", name2);
    o = scenario_str(&su, in.p);
    EXPECT(o, "+OK*", "+OK*", auth.p, "-ERR [AUTH]*", "@delay");
    outcome_free(&o);
    free(in.p);
    free(auth.p);
    free(name2);
    free(name);
}

static void test_line_too_long(void **state)
{
    (void)state;
    struct setup su = setup_default();
    static const size_t sizes[] = {256, 257, 300, 511, 512, 513, 1000, 4096, 10000};
    size_t i;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        /* "USER aaa...a" CRLF of sizes[i] octets, then a good command */
        char *name = repeat('a', sizes[i] - 7);
        struct str in = {0};
        str_printf(&in, "USER %s\r\nCAPA\r\nQUIT\r\n", name);
        struct outcome o = scenario_str(&su, in.p);
        assert_int_equal(count_lines(o.tr, "-ERR*"), 1);
        assert_int_equal(count_lines(o.tr, "IMPLEMENTATION*"), 1);
        expect_glob(o.tr, "+OK*\r\n-ERR*\r\n+OK*\r\n*.\r\n+OK*\r\n@close\r\n");
        outcome_free(&o);
        free(in.p);
        free(name);
    }

    /* 256 octets with a bare LF */
    char *name = repeat('a', 250);
    struct str in = {0};
    str_printf(&in, "USER %s\nQUIT\n", name);
    struct outcome o = scenario_str(&su, in.p);
    EXPECT(o, "+OK*", "-ERR*", "+OK*", "@close");
    outcome_free(&o);
    free(in.p);
    free(name);
}

/* The tail of an overlong line must never run as a command of its own,
 * wherever the cut would fall. */
static void test_line_too_long_not_split(void **state)
{
    (void)state;
    struct setup su = setup_default();
    size_t pad;

    for (pad = 246; pad <= 262; pad++) {
        char *junk = repeat('x', pad);
        struct str in = {0};
        /* "NOOP xxx...QUIT" CRLF: at least 257 octets */
        str_printf(&in, LOGIN "NOOP %sQUIT\r\nNOOP %sDELE 1\r\nSTAT\r\nNOOP\r\n", junk, junk);
        struct outcome o = scenario_str(&su, in.p);
        EXPECT(o, START, "-ERR*", "-ERR*", "+OK 3 600", "+OK*");
        assert_int_equal(o.state, POP3_TRANSACTION);
        outcome_free(&o);
        free(in.p);
        free(junk);
    }

    /* two overlong lines back to back, then a pipelined command */
    char *a = repeat('a', 300), *b = repeat('b', 9000);
    struct str in = {0};
    str_printf(&in, "%s\r\n%s\r\nCAPA\r\n", a, b);
    struct outcome o = scenario_str(&su, in.p);
    assert_int_equal(count_lines(o.tr, "-ERR*"), 2);
    assert_int_equal(count_lines(o.tr, "IMPLEMENTATION*"), 1);
    outcome_free(&o);
    free(in.p);
    free(a);
    free(b);
}

/* The overlong line arrives in pieces, each offered as the shell would: all
 * that is buffered, plus the next piece. */
static void test_line_too_long_in_pieces(void **state)
{
    (void)state;
    struct setup su = setup_default();
    static const size_t pieces[] = {100, 254, 255, 256, 1000};
    size_t i;

    for (i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        char *junk = repeat('z', 10000 - 2);
        struct drive *d = d_open(&su);
        d_send_chunked(d, junk, strlen(junk), pieces[i]);
        assert_int_equal(count_lines(d->tr.p, "-ERR*"), 0);
        assert_true(d->in.len < pop3_line_max(d->s)); /* bounded buffering */
        d_send(d, "\r\n");
        d_send(d, "QUIT\r\n");
        expect_lines(d->tr.p, (const char *const[]){"+OK*", "-ERR*", "+OK*", "@close", NULL});
        d_free(d);
        free(junk);
    }
}

static void test_bare_lf(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "USER alice\nPASS secret\nSTAT\nLIST 2\r\nDELE 2\nQUIT\n");

    EXPECT(o, START, "+OK 3 600", "+OK 2 200", "+OK*", "@quit deleted=[2:u2] committing", "+OK*",
           "@close");
    outcome_free(&o);
}

static void test_empty_and_control_lines(void **state)
{
    (void)state;
    struct setup su = setup_default();
    static const char in[] = LOGIN "\r\n"
                                   "\n"
                                   "NO\0OP\r\n"
                                   "STAT\0\r\n"
                                   "NOOP\x7f\r\n"
                                   "LIST\t1\r\n"
                                   "NO\rOP\r\n"
                                   "NOOP\r\r\n"
                                   "\x1bNOOP\r\n"
                                   "DELE 1\0DELE 2\r\n"
                                   " NOOP\r\n"
                                   "STAT\r\n";
    struct outcome o = SCENARIO(&su, in);

    EXPECT(o, START, "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*", "-ERR*",
           "-ERR*", "-ERR*", "-ERR*", "+OK 3 600");
    outcome_free(&o);

    /* a NUL cannot smuggle a user name */
    static const char in2[] = "USER al\0ice\r\nPASS secret\r\n";
    o = SCENARIO(&su, in2);
    EXPECT(o, "+OK*", "-ERR*", "-ERR*");
    outcome_free(&o);

    /* empty lines in AUTHORIZATION */
    o = SCENARIO(&su, "\r\n\nCAPA\r\n");
    expect_glob(o.tr, "+OK*\r\n-ERR*\r\n-ERR*\r\n+OK*");
    outcome_free(&o);
}

static void test_max_bad_commands(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.params.max_bad_commands = 3;
    struct outcome o;

    o = SCENARIO(&su, "FOO\r\n\r\nSTAT\r\nCAPA\r\n");
    EXPECT(o, "+OK*", "-ERR*", "-ERR*", "-ERR*", "@close");
    assert_int_equal(o.state, POP3_CLOSED);
    outcome_free(&o);

    /* overlong lines, control bytes and wrong arity count too */
    char *junk = repeat('j', 400);
    struct str in = {0};
    str_printf(&in, LOGIN "%s\r\nNO\x01OP\r\nLIST 1 2\r\nSTAT\r\nQUIT\r\n", junk);
    o = scenario_str(&su, in.p);
    EXPECT(o, START, "-ERR*", "-ERR*", "-ERR*", "@close");
    assert_int_equal(o.quit_done, 0);
    outcome_free(&o);
    free(in.p);
    free(junk);

    /* no limit: 50 bad commands and the session still works */
    su.params.max_bad_commands = 0;
    memset(&in, 0, sizeof(in));
    for (int i = 0; i < 50; i++)
        str_printf(&in, "BAD%d\r\n", i);
    str_printf(&in, "QUIT\r\n");
    o = scenario_str(&su, in.p);
    assert_int_equal(count_lines(o.tr, "-ERR*"), 50);
    expect_glob(o.tr, "*-ERR*\r\n+OK*\r\n@close\r\n");
    outcome_free(&o);
    free(in.p);
}

/* ---- pipelining --------------------------------------------------------- */

static void test_pipelined_while_call_pending(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d = d_open(&su);
    const char *in = "USER alice\r\nPASS secret\r\nSTAT\r\nLIST 1\r\nRETR 2\r\nQUIT\r\n";
    size_t len = strlen(in), off = 0;

    assert_null(pop3_call(d->s));
    assert_int_equal(pop3_feed(d->s, in, len), 12);
    off += 12;
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 13);
    off += 13;
    assert_int_equal(pop3_want(d->s), POP3_WANT_CALL);
    assert_string_equal(pop3_current_command(d->s), "PASS");
    const struct wh_call *c = pop3_call(d->s);
    assert_non_null(c);
    assert_int_equal(c->event, WH_AUTHENTICATE);
    /* busy: nothing more is read, however often it is offered */
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 0);
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 0);
    collect(d);
    answer_call(d); /* authenticate -> list */
    assert_int_equal(pop3_want(d->s), POP3_WANT_CALL);
    assert_int_equal(pop3_call(d->s)->event, WH_LIST);
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 0);
    answer_call(d); /* list -> TRANSACTION */
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    assert_int_equal(pop3_state(d->s), POP3_TRANSACTION);
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 6);
    off += 6;
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 8);
    off += 8;
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 8);
    off += 8;
    assert_int_equal(pop3_want(d->s), POP3_WANT_CALL);
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 0);
    collect(d);
    answer_call(d); /* retrieve */
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    assert_int_equal(pop3_feed(d->s, in + off, len - off), 6);
    off += 6;
    assert_int_equal(off, len);
    collect(d);
    answer_call(d); /* quit */
    collect(d);
    assert_int_equal(pop3_want(d->s), POP3_WANT_CLOSE);
    expect_lines(d->tr.p,
                 (const char *const[]){START, "+OK 3 600", "+OK 1 100",
                                       "@retrieve message=2 uid=u2 lines=-1", "+OK*", "@body",
                                       "@quit deleted=[] committing", "+OK*", NULL});
    d_free(d);
}

/* Replies of a pipelined batch come out in order, each complete. */
static void test_pipelined_batch(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o = SCENARIO(&su, "CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\n"
                                     "UIDL\r\nTOP 1 0\r\nRETR 1\r\nDELE 1\r\nLIST 1\r\nNOOP\r\n"
                                     "RSET\r\nDELE 2\r\nQUIT\r\nSTAT\r\n");

    expect_glob(o.tr, "+OK*\r\n+OK*\r\n*\r\n.\r\n+OK*\r\n@authenticate *\r\n@list user=alice\r\n"
                      "+OK*\r\n+OK 3 600\r\n+OK*\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n+OK*\r\n"
                      "1 u1\r\n2 u2\r\n3 u3\r\n.\r\n@retrieve message=1 uid=u1 lines=0\r\n"
                      "+OK*\r\n@body\r\n@retrieve message=1 uid=u1 lines=-1\r\n+OK*\r\n@body\r\n"
                      "+OK*\r\n-ERR*\r\n+OK*\r\n+OK*\r\n+OK*\r\n"
                      "@quit deleted=[2:u2] committing\r\n+OK*\r\n@close\r\n");
    outcome_free(&o);
}

/* ---- STLS ------------------------------------------------------------------ */

static void test_stls(void **state)
{
    (void)state;
    struct setup su = setup_default();
    setup_remote(&su);
    su.params.stls_available = 1;
    struct drive *d = d_open(&su);

    /* bytes after STLS are not read by the session; the shell drops them */
    assert_int_equal(pop3_feed(d->s, "STLS\r\nUSER alice\r\n", 18), 6);
    assert_int_equal(pop3_want(d->s), POP3_WANT_STLS);
    assert_int_equal(pop3_feed(d->s, "USER alice\r\n", 12), 0);
    assert_int_equal(pop3_state(d->s), POP3_AUTHORIZATION);
    collect(d);
    pop3_tls_started(d->s);
    d->tls = 1;
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    assert_int_equal(pop3_state(d->s), POP3_AUTHORIZATION);
    d_send(d, "CAPA\r\n");
    assert_true(has_capa(d->tr.p, "USER"));
    assert_false(has_capa(d->tr.p, "STLS"));
    d_send(d, "STLS\r\n" LOGIN "STAT\r\n");
    assert_int_equal(pop3_state(d->s), POP3_TRANSACTION);
    expect_glob(d->tr.p, "+OK*\r\n+OK*\r\n+OK*\r\n*.\r\n-ERR*\r\n" LOGGED_IN_GLOB "+OK 3 600\r\n");
    d_free(d);

    /* through the driver: what was pipelined after STLS is dropped */
    d = d_open(&su);
    d_send(d, "STLS\r\nUSER alice\r\nPASS secret\r\n");
    expect_lines(d->tr.p, (const char *const[]){"+OK*", "+OK*", "@stls", NULL});
    d_send(d, LOGIN);
    assert_int_equal(pop3_state(d->s), POP3_TRANSACTION);
    d_free(d);

    /* a USER given in clear (allowed from loopback) is forgotten when TLS
     * starts: nothing said before the upgrade carries over */
    su = setup_default();
    su.params.stls_available = 1;
    d = d_open(&su);
    d_send(d, "USER alice\r\nSTLS\r\n");
    d_send(d, "PASS secret\r\n");
    assert_int_equal(pop3_state(d->s), POP3_AUTHORIZATION);
    expect_lines(d->tr.p, (const char *const[]){"+OK*", "+OK*", "+OK*", "@stls", "-ERR*", NULL});
    d_send(d, LOGIN);
    assert_int_equal(pop3_state(d->s), POP3_TRANSACTION);
    d_free(d);
}

static void test_stls_refused(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct outcome o;

    /* no certificate */
    setup_remote(&su);
    o = SCENARIO(&su, "STLS\r\nNOOP\r\n");
    EXPECT(o, "+OK*", "-ERR*", "-ERR*");
    outcome_free(&o);

    /* TLS already on */
    su.params.stls_available = 1;
    su.peer.tls = 1;
    o = SCENARIO(&su, "STLS\r\n" LOGIN "STLS\r\n");
    EXPECT(o, "+OK*", "-ERR*", LOGGED_IN, "-ERR*");
    outcome_free(&o);
}

/* ---- odds and ends ------------------------------------------------------ */

static void test_call_done_without_call(void **state)
{
    (void)state;
    struct setup su = setup_default();
    struct drive *d = d_open(&su);
    struct wh_result r;

    memset(&r, 0, sizeof(r));
    r.status = WH_OK;
    pop3_call_done(d->s, &r);
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    assert_int_equal(pop3_retrieve_begin(d->s, WH_OK), 0);
    pop3_retrieve_end(d->s, 0);
    assert_int_equal(pop3_want(d->s), POP3_WANT_INPUT);
    d_send(d, "CAPA\r\n");
    assert_int_equal(count_lines(d->tr.p, "-ERR*"), 0);
    assert_int_equal(pop3_feed(d->s, "", 0), 0);
    d_free(d);
    pop3_free(NULL);
}

/* The debug trace shows commands but never a password. */
static void test_debug_trace_hides_password(void **state)
{
    (void)state;
    struct setup su = setup_default();
    su.be.password = "hunter2 x";
    char path[] = "/tmp/test_pop3_logXXXXXX";
    int fd = mkstemp(path);
    int saved;
    struct outcome o;

    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    saved = dup(2);
    assert_true(saved >= 0);
    dup2(fd, 2);
    log_init(0, LOG_DEBUG);
    o = SCENARIO(&su, "USER alice\r\nPASS hunter2 x\r\nQUIT\r\n");
    log_init(0, LOG_ERROR);
    dup2(saved, 2);
    close(saved);

    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size > 0);
    char *log = calloc(1, (size_t)size + 1);
    assert_non_null(log);
    assert_int_equal(pread(fd, log, (size_t)size, 0), size);
    close(fd);
    assert_non_null(strstr(log, "PASS"));
    assert_null(strstr(log, "hunter2"));
    free(log);
    EXPECT(o, "+OK*", LOGGED_IN_PW("hunter2 x"), "@quit deleted=[] committing", "+OK*", "@close");
    outcome_free(&o);
}

#define T(f) cmocka_unit_test_teardown(f, free_leftovers)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_greeting_plain),
        T(test_greeting_apop),
        T(test_capa_loopback),
        T(test_capa_plaintext_rules),
        T(test_capa_expire_login_delay),
        T(test_capa_transaction),
        T(test_transaction_commands_before_login),
        T(test_authorization_commands_after_login),
        T(test_unknown_commands),
        T(test_wrong_arity_authorization),
        T(test_wrong_arity_transaction),
        T(test_case_insensitive_verbs),
        T(test_bad_message_numbers),
        T(test_top_lines_larger_than_message),
        T(test_login),
        T(test_login_state_and_accessors),
        T(test_pass_with_spaces),
        T(test_pass_utf8),
        T(test_pass_without_user),
        T(test_plaintext_refused_without_tls),
        T(test_user_invalid_utf8),
        T(test_apop),
        T(test_apop_bad_digest_syntax),
        T(test_attempt_numbering),
        T(test_refusal_codes),
        T(test_delay_blocks_input),
        T(test_max_auth_failures),
        T(test_auth_backend_down),
        T(test_list_failure),
        T(test_list_failure_closes),
        T(test_deleted_messages_hidden),
        T(test_delete_all),
        T(test_empty_maildrop),
        T(test_uidl_fetched_once),
        T(test_uidl_failures),
        T(test_retr_and_top),
        T(test_retrieve_failures),
        T(test_retrieve_without_body),
        T(test_numbers_never_shift),
        T(test_quit_authorization),
        T(test_quit_transaction),
        T(test_quit_without_uids),
        T(test_quit_failure),
        T(test_committing),
        T(test_timeout),
        T(test_shutdown),
        T(test_line_255_accepted),
        T(test_line_too_long),
        T(test_line_too_long_not_split),
        T(test_line_too_long_in_pieces),
        T(test_bare_lf),
        T(test_empty_and_control_lines),
        T(test_max_bad_commands),
        T(test_pipelined_while_call_pending),
        T(test_pipelined_batch),
        T(test_stls),
        T(test_stls_refused),
        T(test_call_done_without_call),
        T(test_debug_trace_hides_password),
    };

    log_init(0, LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
