/*
 * pop3: the POP3 session state machine (RFC 1939, RFC 2449, RFC 3206).
 *
 * Sans-I/O: bytes and backend results in, reply bytes and backend calls out.
 * A static command table drives dispatch: the dispatcher alone checks the
 * state and the arity and answers -ERR; handlers (pop3_cmd_*) only do their
 * verb. Every state change goes through pop3_enter(). Backend results come
 * back through pop3_call_done(), which continues the command that asked
 * (pop3_proceed_*).
 */
#include "gateway/pop3.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/metrics.h"
#include "lib/log.h"
#include "gateway/sasl.h"
#include "webhook/wh_json.h"
#include "lib/util.h"

#define POP3_MAX_ARGS 2
#define POP3_TOP_MAX 2000000000L /* TOP line counts are capped here (the whole message) */
#define POP3_REPLY_MAX 512       /* a reply line, CRLF included (RFC 2449 §4) */
#define POP3_OUT_KEEP 4096       /* output buffer kept between replies; more is freed */

/* One message of the listing snapshot taken when TRANSACTION starts. */
struct pop3_msg {
    uint64_t size;    /* octets with CRLF line ends */
    uint32_t uid_off; /* offset into uids, valid when the session has uids */
    uint8_t deleted;  /* marked by DELE */
};

/* What the pending backend call is for. */
enum pop3_pending {
    PEND_NONE,
    PEND_AUTH,      /* authenticate for PASS or APOP */
    PEND_LIST,      /* list, entering TRANSACTION */
    PEND_UIDL,      /* uidl for a UIDL command */
    PEND_UIDL_QUIT, /* uidl so that quit can name the deleted uids */
    PEND_RETRIEVE,  /* retrieve for RETR or TOP (streamed) */
    PEND_QUIT,      /* quit, committing deletions */
    PEND_CONNECT,   /* connect, before the greeting */
};

struct pop3_session {
    const struct pop3_params *p; /* shared settings */
    enum pop3_state state;
    enum pop3_want want;
    enum pop3_pending pending;
    struct buf out; /* replies not yet taken by the shell */

    char *id, *ip, *apop_ts; /* copies of the peer */
    int port, tls, loopback;

    int discarding;    /* inside an overlong line, dropping bytes up to LF */
    int bad_commands;  /* invalid commands so far */
    int auth_failures; /* refused logins so far */
    int attempts;      /* authenticate calls so far */
    int close_after_delay;
    const char *cmd; /* verb of the command being handled */

    char *user_given; /* from USER, until PASS */
    char *user;       /* confirmed by the backend */
    char *mailbox;    /* JSON from authenticate, echoed */
    int logged_in, quit_done, committing, utf8;
    int draining;        /* the server is stopping: only QUIT is still done (pop3_drain) */
    unsigned n_commands; /* command lines handled (pop3_summary) */
    int quit_asked;      /* the client sent QUIT (pop3_summary) */

    /* SASL (AUTH) */
    struct sasl sasl;
    int in_sasl;           /* the next line is a SASL response */
    char *sasl_error;      /* OAuth error challenge sent: the -ERR the client's next line gets */
    enum wh_method method; /* of the authenticate call */

    /* the pending call and what it borrows */
    struct wh_call call;
    char *secret; /* password being checked; wiped after the call */
    char apop_digest[33];
    uint32_t pend_msg; /* UIDL n, 0 for all */
    struct wh_deleted *del;

    /* the listing snapshot */
    struct pop3_msg *msgs;
    size_t n_msgs;
    char *uids; /* NUL-separated uids, or NULL until known */
    size_t n_deleted;
    uint64_t deleted_octets, total_octets;
};

typedef void (*pop3_handler)(struct pop3_session *s, int argc, char **argv);

static void pop3_start_call(struct pop3_session *s, enum wh_event ev, enum pop3_pending why);
static void pop3_sasl_abort(struct pop3_session *s);
static void pop3_greet(struct pop3_session *s);

#define ST_AUTH (1u << POP3_AUTHORIZATION)
#define ST_TRANS (1u << POP3_TRANSACTION)
#define F_REST 1u        /* the single argument is the rest of the line */
#define F_SECRET_ARGS 2u /* the arguments are secret: never traced */

struct pop3_cmd {
    const char *name;
    unsigned states; /* where it is allowed */
    int min_args, max_args;
    unsigned flags;
    pop3_handler fn;
};

static void pop3_cmd_capa(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_user(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_pass(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_apop(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_stls(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_auth(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_utf8(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_quit(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_stat(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_list(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_uidl(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_retr(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_top(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_dele(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_noop(struct pop3_session *s, int argc, char **argv);
static void pop3_cmd_rset(struct pop3_session *s, int argc, char **argv);

static const struct pop3_cmd pop3_commands[] = {
    {"CAPA", ST_AUTH | ST_TRANS, 0, 0, 0, pop3_cmd_capa},
    {"USER", ST_AUTH, 1, 1, F_REST, pop3_cmd_user},
    {"PASS", ST_AUTH, 1, 1, F_REST, pop3_cmd_pass},
    {"APOP", ST_AUTH, 2, 2, 0, pop3_cmd_apop},
    {"STLS", ST_AUTH, 0, 0, 0, pop3_cmd_stls},
    {"AUTH", ST_AUTH, 0, 2, F_SECRET_ARGS, pop3_cmd_auth},
    {"UTF8", ST_AUTH, 0, 0, 0, pop3_cmd_utf8},
    {"QUIT", ST_AUTH | ST_TRANS, 0, 0, 0, pop3_cmd_quit},
    {"STAT", ST_TRANS, 0, 0, 0, pop3_cmd_stat},
    {"LIST", ST_TRANS, 0, 1, 0, pop3_cmd_list},
    {"UIDL", ST_TRANS, 0, 1, 0, pop3_cmd_uidl},
    {"RETR", ST_TRANS, 1, 1, 0, pop3_cmd_retr},
    {"TOP", ST_TRANS, 2, 2, 0, pop3_cmd_top},
    {"DELE", ST_TRANS, 1, 1, 0, pop3_cmd_dele},
    {"NOOP", ST_TRANS, 0, 0, 0, pop3_cmd_noop},
    {"RSET", ST_TRANS, 0, 0, 0, pop3_cmd_rset},
};

static const char *const pop3_state_names[] = {
#define X(e, n) n,
    POP3_STATES(X)
#undef X
};

const char *pop3_state_name(enum pop3_state st)
{
    return pop3_state_names[st];
}

/* ---- replies ---------------------------------------------------------- */

static void pop3_reply(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Queues one reply line; adds CRLF. Lines are short by construction (every
 * variable part is bounded), so the 512-octet limit of RFC 2449 holds. */
static void pop3_reply(struct pop3_session *s, const char *fmt, ...)
{
    char line[POP3_REPLY_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(line) - 3)
        n = (int)sizeof(line) - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    buf_add(&s->out, line, (size_t)n);
}

static void pop3_enter(struct pop3_session *s, enum pop3_state to)
{
    log_kv(LOG_DEBUG, s->id, "state", "from=%s to=%s", pop3_state_names[s->state],
           pop3_state_names[to]);
    s->state = to;
}

static void pop3_close(struct pop3_session *s)
{
    if (s->state != POP3_CLOSED)
        pop3_enter(s, POP3_CLOSED);
    s->want = POP3_WANT_CLOSE;
    s->pending = PEND_NONE;
}

/* Counts an invalid command and answers it; closes past the limit. */
static void pop3_bad(struct pop3_session *s, const char *why)
{
    s->bad_commands++;
    METRIC_INC(bad_commands);
    if (s->p->max_bad_commands > 0 && s->bad_commands >= s->p->max_bad_commands) {
        pop3_reply(s, "-ERR %s; too many bad commands, closing", why);
        log_kv(LOG_INFO, s->id, "too many bad commands", "count=%d", s->bad_commands);
        pop3_close(s);
        return;
    }
    pop3_reply(s, "-ERR %s", why);
}

static void pop3_wipe(char **p)
{
    if (*p) {
        volatile char *v = *p;
        while (*v)
            *v++ = 0;
        free(*p);
        *p = NULL;
    }
}

/* ---- life cycle ------------------------------------------------------- */

static char *pop3_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct pop3_session *pop3_new(const struct pop3_params *params, const struct pop3_peer *peer)
{
    struct pop3_session *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->p = params;
    s->id = pop3_strdup(peer->id);
    s->ip = pop3_strdup(peer->ip);
    s->apop_ts = params->apop ? pop3_strdup(peer->apop_timestamp) : NULL;
    if (!s->id || !s->ip || (params->apop && peer->apop_timestamp && !s->apop_ts))
        goto err;
    s->port = peer->port;
    s->tls = peer->tls;
    s->loopback = peer->loopback;
    s->state = POP3_AUTHORIZATION;
    s->want = POP3_WANT_INPUT;
    s->cmd = "";
    if (params->connect_event)
        pop3_start_call(s, WH_CONNECT, PEND_CONNECT);
    else
        pop3_greet(s);
    return s;
err:
    pop3_free(s);
    return NULL;
}

static void pop3_greet(struct pop3_session *s)
{
    if (s->apop_ts)
        pop3_reply(s, "+OK %s POP3 gateway ready %s", s->p->hostname, s->apop_ts);
    else
        pop3_reply(s, "+OK %s POP3 gateway ready", s->p->hostname);
}

/* connect answered: greet, or refuse the connection */
static void pop3_proceed_connect(struct pop3_session *s, struct wh_result *r)
{
    s->want = POP3_WANT_INPUT;
    if (r->status == WH_OK) {
        pop3_greet(s);
        return;
    }
    if (r->status == WH_REFUSED)
        pop3_reply(s, "-ERR %s", r->message ? r->message : "connection refused");
    else
        pop3_reply(s, "-ERR [SYS/TEMP] service unavailable, try again later");
    log_kv(LOG_INFO, s->id, "connection refused by the backend", "client=%s status=%d", s->ip,
           (int)r->status);
    pop3_close(s);
}

static void pop3_listing_free(struct pop3_session *s)
{
    free(s->msgs);
    free(s->uids);
    s->msgs = NULL;
    s->uids = NULL;
    s->n_msgs = s->n_deleted = 0;
    s->total_octets = s->deleted_octets = 0;
}

void pop3_free(struct pop3_session *s)
{
    if (!s)
        return;
    pop3_wipe(&s->secret);
    pop3_sasl_abort(s);
    pop3_listing_free(s);
    free(s->del);
    free(s->id);
    free(s->ip);
    free(s->apop_ts);
    free(s->user_given);
    free(s->user);
    free(s->mailbox);
    buf_free(&s->out);
    free(s);
}

/* ---- accessors -------------------------------------------------------- */

const char *pop3_output(const struct pop3_session *s, size_t *len)
{
    *len = s->out.len;
    return s->out.data;
}

void pop3_output_clear(struct pop3_session *s)
{
    if (s->out.cap > POP3_OUT_KEEP)
        buf_free(&s->out);
    else
        buf_reset(&s->out);
}

enum pop3_want pop3_want(const struct pop3_session *s)
{
    return s->want;
}

enum pop3_state pop3_state(const struct pop3_session *s)
{
    return s->state;
}

const struct wh_call *pop3_call(const struct pop3_session *s)
{
    return s->want == POP3_WANT_CALL ? &s->call : NULL;
}

size_t pop3_line_max(const struct pop3_session *s)
{
    return s->in_sasl || s->sasl_error ? POP3_AUTH_LINE_MAX : POP3_LINE_MAX;
}

int pop3_logged_in(const struct pop3_session *s)
{
    return s->logged_in;
}

void pop3_summary(const struct pop3_session *s, struct pop3_summary *out)
{
    out->commands = s->n_commands;
    out->dele = s->n_deleted;
    out->committed = s->quit_done;
    out->quit = s->quit_asked;
}

int pop3_quit_done(const struct pop3_session *s)
{
    return s->quit_done;
}

int pop3_committing(const struct pop3_session *s)
{
    return s->committing && !s->quit_done && s->want == POP3_WANT_CALL;
}

const char *pop3_user(const struct pop3_session *s)
{
    return s->user ? s->user : s->user_given;
}

const char *pop3_mailbox(const struct pop3_session *s)
{
    return s->mailbox;
}

const char *pop3_current_command(const struct pop3_session *s)
{
    return s->cmd;
}

int pop3_utf8(const struct pop3_session *s)
{
    return s->utf8;
}

uint64_t pop3_msg_size(const struct pop3_session *s, uint32_t n)
{
    return (n >= 1 && n <= s->n_msgs) ? s->msgs[n - 1].size : 0;
}

static const char *pop3_uid(const struct pop3_session *s, size_t i)
{
    return s->uids ? s->uids + s->msgs[i].uid_off : NULL;
}

/* ---- backend calls ---------------------------------------------------- */

/* Fills the fields every event carries and asks the shell to run the call. */
static void pop3_start_call(struct pop3_session *s, enum wh_event ev, enum pop3_pending why)
{
    struct wh_call *c = &s->call;

    memset(c, 0, sizeof(*c));
    c->event = ev;
    c->session = s->id;
    c->client_ip = s->ip;
    c->client_port = s->port;
    c->client_tls = s->tls;
    c->user = pop3_user(s);
    c->mailbox = s->mailbox;
    c->utf8 = s->utf8;
    c->lines = -1;
    s->pending = why;
    s->want = POP3_WANT_CALL;
}

static void pop3_start_auth(struct pop3_session *s, enum wh_method method)
{
    s->method = method;
    pop3_start_call(s, WH_AUTHENTICATE, PEND_AUTH);
    s->call.method = wh_method_names[method];
    s->call.attempt = ++s->attempts;
    if (method == WH_METHOD_APOP) {
        s->call.apop_timestamp = s->apop_ts;
        s->call.apop_digest = s->apop_digest;
    } else if (method == WH_METHOD_USER) {
        s->call.password = s->secret;
    } else {
        s->call.password = s->sasl.password;
        s->call.authzid = s->sasl.authzid;
        s->call.token = s->sasl.token;
    }
}

/* Builds the quit call's deleted list: every marked message and its uid. */
static void pop3_start_quit(struct pop3_session *s)
{
    size_t i, k = 0;

    free(s->del);
    s->del = NULL;
    if (s->n_deleted) {
        s->del = calloc(s->n_deleted, sizeof(*s->del));
        if (!s->del) {
            pop3_reply(s, "-ERR [SYS/TEMP] some deleted messages not removed");
            pop3_close(s);
            return;
        }
        for (i = 0; i < s->n_msgs; i++) {
            if (!s->msgs[i].deleted)
                continue;
            s->del[k].message = (uint32_t)(i + 1);
            s->del[k].uid = pop3_uid(s, i);
            k++;
        }
    }
    pop3_start_call(s, WH_QUIT, PEND_QUIT);
    s->call.deleted = s->del;
    s->call.n_deleted = k;
}

/* ---- AUTHORIZATION ---------------------------------------------------- */

static int pop3_plaintext_ok(const struct pop3_session *s)
{
    return s->p->plaintext_always || s->tls || s->loopback;
}

/* Lists the SASL mechanisms usable now: " NAME" each (CAPA) or one per
 * line (a bare AUTH). */
static void pop3_mechs(struct pop3_session *s, int lines)
{
    int i;

    if (!pop3_plaintext_ok(s))
        return; /* passwords and bearer tokens only over TLS (or loopback) */
    for (i = 0; i < SASL_N_MECHS; i++)
        buf_printf(&s->out, lines ? "%s\r\n" : " %s", sasl_mech_name(sasl_mechs[i]));
}

/* Refuses a password (or a bearer token) sent before TLS. */
static void pop3_refuse_cleartext(struct pop3_session *s, int password)
{
    pop3_reply(s, "-ERR [AUTH] %s not allowed without TLS%s",
               password ? "plaintext authentication is" : "bearer tokens are",
               s->p->stls_available ? "; use STLS first" : "");
}

static void pop3_cmd_capa(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    buf_printf(&s->out, "+OK capability list follows\r\n");
    buf_printf(&s->out, "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
    if (s->state == POP3_AUTHORIZATION && pop3_plaintext_ok(s))
        buf_printf(&s->out, "USER\r\n");
    if (s->state == POP3_AUTHORIZATION && pop3_plaintext_ok(s)) {
        buf_printf(&s->out, "SASL");
        pop3_mechs(s, 0);
        buf_printf(&s->out, "\r\n");
    }
    /* RFC 6856: UTF8 is announced in both states (RFC 2449 section 5). */
    buf_printf(&s->out, "UTF8 USER\r\n");
    if (s->state == POP3_AUTHORIZATION && s->p->stls_available && !s->tls)
        buf_printf(&s->out, "STLS\r\n");
    if (s->p->expire)
        buf_printf(&s->out, "EXPIRE %s\r\n", s->p->expire);
    if (s->p->login_delay >= 0)
        buf_printf(&s->out, "LOGIN-DELAY %d\r\n", s->p->login_delay);
    buf_printf(&s->out, "IMPLEMENTATION pop3gw\r\n.\r\n");
}

static void pop3_cmd_user(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    if (!pop3_plaintext_ok(s)) {
        pop3_refuse_cleartext(s, 1);
        return;
    }
    if (strlen(argv[0]) > WH_USER_MAX) {
        pop3_reply(s, "-ERR [AUTH] user name too long (at most %d octets)", WH_USER_MAX);
        return;
    }
    if (!util_utf8_valid(argv[0], strlen(argv[0]))) {
        pop3_reply(s, "-ERR [AUTH] user name is not valid UTF-8");
        return;
    }
    free(s->user_given);
    s->user_given = strdup(argv[0]);
    if (!s->user_given) {
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        return;
    }
    pop3_reply(s, "+OK send PASS");
}

static void pop3_cmd_pass(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    if (!pop3_plaintext_ok(s)) {
        pop3_refuse_cleartext(s, 1);
        return;
    }
    if (!s->user_given) {
        pop3_reply(s, "-ERR send USER first");
        return;
    }
    if (!util_utf8_valid(argv[0], strlen(argv[0]))) {
        free(s->user_given);
        s->user_given = NULL;
        pop3_reply(s, "-ERR [AUTH] invalid password");
        return;
    }
    pop3_wipe(&s->secret);
    s->secret = strdup(argv[0]);
    if (!s->secret) {
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        return;
    }
    pop3_start_auth(s, WH_METHOD_USER);
}

static int pop3_is_hex32(const char *d)
{
    size_t i;

    for (i = 0; i < 32; i++)
        if (!isxdigit((unsigned char)d[i]))
            return 0;
    return d[32] == '\0';
}

static void pop3_cmd_apop(struct pop3_session *s, int argc, char **argv)
{
    size_t i;

    (void)argc;
    if (!s->apop_ts) {
        pop3_reply(s, "-ERR APOP is not enabled");
        return;
    }
    if (strlen(argv[0]) > WH_USER_MAX || !util_utf8_valid(argv[0], strlen(argv[0])) ||
        !pop3_is_hex32(argv[1])) {
        pop3_reply(s, "-ERR [AUTH] invalid APOP arguments");
        return;
    }
    for (i = 0; i < 32; i++)
        s->apop_digest[i] = (char)tolower((unsigned char)argv[1][i]);
    s->apop_digest[32] = '\0';
    free(s->user_given);
    s->user_given = strdup(argv[0]);
    if (!s->user_given) {
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        return;
    }
    pop3_start_auth(s, WH_METHOD_APOP);
}

static void pop3_cmd_stls(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (s->tls) {
        pop3_reply(s, "-ERR TLS is already active");
        return;
    }
    if (!s->p->stls_available) {
        pop3_reply(s, "-ERR STLS is not available");
        return;
    }
    pop3_reply(s, "+OK begin TLS negotiation");
    s->want = POP3_WANT_STLS;
}

void pop3_tls_started(struct pop3_session *s)
{
    s->tls = 1;
    /* Nothing said in clear carries over into TLS: a USER given before
     * STLS (from loopback, or where plain text is allowed) is forgotten. */
    free(s->user_given);
    s->user_given = NULL;
    if (s->want == POP3_WANT_STLS)
        s->want = POP3_WANT_INPUT;
}

static void pop3_cmd_quit(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    s->quit_asked = 1;
    if (s->state == POP3_AUTHORIZATION) {
        pop3_reply(s, "+OK bye");
        pop3_close(s);
        return;
    }
    /* TRANSACTION: commit the deletions (RFC 1939 §6). */
    pop3_enter(s, POP3_UPDATE);
    s->committing = 1;
    if (s->n_deleted && !s->uids) {
        pop3_start_call(s, WH_UIDL, PEND_UIDL_QUIT);
        return;
    }
    pop3_start_quit(s);
}

static void pop3_refusal(const struct pop3_session *s, const struct wh_result *r, char *out,
                         size_t n);

/* The login counters are indexed by enum wh_method. */
_Static_assert(WH_N_METHODS == METRICS_METHODS, "login methods and their metrics disagree");

static void pop3_count_login(enum wh_method method, int ok)
{
    if (ok)
        METRIC_INC(logins_ok[method]);
    else
        METRIC_INC(logins_failed[method]);
}

/* authenticate answered */
static void pop3_proceed_auth(struct pop3_session *s, struct wh_result *r)
{
    char text[POP3_REPLY_MAX];

    pop3_wipe(&s->secret);
    if (r->status == WH_OK)
        sasl_clear(&s->sasl);
    if (r->status == WH_OK) {
        s->logged_in = 1;
        free(s->user);
        s->user = r->user ? r->user : s->user_given;
        if (r->user)
            r->user = NULL;
        else
            s->user_given = NULL;
        free(s->user_given);
        s->user_given = NULL;
        s->mailbox = r->mailbox;
        r->mailbox = NULL;
        log_kv(LOG_INFO, s->id, "login", "user=%s client=%s method=%s", s->user, s->ip,
               s->call.method);
        pop3_count_login(s->method, 1);
        pop3_start_call(s, WH_LIST, PEND_LIST);
        return;
    }
    s->want = POP3_WANT_INPUT;
    if (r->status == WH_TEMP) {
        sasl_clear(&s->sasl);
        log_kv(LOG_WARN, s->id, "login not checked: backend error", "user=%s client=%s error=%s",
               pop3_user(s), s->ip, r->error ? r->error : "");
        pop3_reply(s, "-ERR [SYS/TEMP] authentication is unavailable now, try again later");
        return;
    }
    s->auth_failures++;
    pop3_count_login(s->method, 0);
    log_kv(LOG_INFO, s->id, "login failed", "user=%s client=%s method=%s attempt=%d", pop3_user(s),
           s->ip, s->call.method, s->attempts);
    free(s->user_given);
    s->user_given = NULL;
    pop3_refusal(s, r, text, sizeof(text));
    sasl_clear(&s->sasl);
    s->close_after_delay =
        s->p->max_auth_failures > 0 && s->auth_failures >= s->p->max_auth_failures;
    if (s->method == WH_METHOD_XOAUTH2 || s->method == WH_METHOD_OAUTHBEARER) {
        /* RFC 7628 §3.2.2: an error challenge first; the client answers
         * with one more line, then gets the -ERR. The failure is counted
         * and the delay runs now, before the challenge goes out, so a
         * client that hangs up instead of answering gains nothing. */
        s->sasl_error = strdup(text);
        if (s->sasl_error) {
            pop3_reply(s, "+ %s", sasl_oauth_error_challenge((enum sasl_mech)s->method));
            s->want = POP3_WANT_DELAY;
            return;
        }
    }
    pop3_reply(s, "%s", text);
    s->want = POP3_WANT_DELAY;
}

/* The -ERR line for a refused login, by its response code. */
static void pop3_refusal(const struct pop3_session *s, const struct wh_result *r, char *out,
                         size_t n)
{
    const char *m = r->message;

    (void)s;
    switch (r->code) {
    case WH_CODE_IN_USE:
        snprintf(out, n, "-ERR [IN-USE] %s", m ? m : "maildrop is in use");
        break;
    case WH_CODE_LOGIN_DELAY:
        snprintf(out, n, "-ERR [LOGIN-DELAY] %s", m ? m : "logging in too often");
        break;
    case WH_CODE_SYS_TEMP:
        snprintf(out, n, "-ERR [SYS/TEMP] %s", m ? m : "try again later");
        break;
    case WH_CODE_SYS_PERM:
        snprintf(out, n, "-ERR [SYS/PERM] %s", m ? m : "login not possible");
        break;
    case WH_CODE_AUTH:
    default:
        snprintf(out, n, "-ERR [AUTH] %s", m ? m : "invalid user name or password");
        break;
    }
}

/* Ends a SASL exchange (or its OAuth error step) and wipes what it held. */
static void pop3_sasl_abort(struct pop3_session *s)
{
    s->in_sasl = 0;
    free(s->sasl_error);
    s->sasl_error = NULL;
    sasl_clear(&s->sasl);
}

/* The client answered the OAuth error challenge (with anything: the line
 * only ends the exchange). The refusal was counted and delayed before the
 * challenge; a connection past max_auth_failures closes now. */
static void pop3_sasl_error_done(struct pop3_session *s)
{
    pop3_reply(s, "%s", s->sasl_error);
    pop3_sasl_abort(s);
    if (s->close_after_delay) {
        pop3_reply(s, "-ERR [AUTH] too many failed logins, closing");
        pop3_close(s);
    }
}

/* ---- AUTH (RFC 5034) -------------------------------------------------- */

/* A user name decoded from SASL: no control bytes (they could split a
 * reply line or a log line), as for names typed on a command line. */
static int pop3_name_ok(const char *name)
{
    return !util_has_ctl(name, strlen(name));
}

/* Checks the decoded credentials and asks the backend. */
static void pop3_sasl_done(struct pop3_session *s)
{
    struct sasl *a = &s->sasl;

    s->in_sasl = 0;
    if (a->user && strlen(a->user) > WH_USER_MAX) {
        sasl_clear(a);
        pop3_reply(s, "-ERR [AUTH] user name too long (at most %d octets)", WH_USER_MAX);
        return;
    }
    if ((a->user && !pop3_name_ok(a->user)) || (a->authzid && !pop3_name_ok(a->authzid))) {
        sasl_clear(a);
        pop3_reply(s, "-ERR [AUTH] invalid characters in the user name");
        return;
    }
    if ((a->user && !util_utf8_valid(a->user, strlen(a->user))) ||
        (a->authzid && !util_utf8_valid(a->authzid, strlen(a->authzid))) ||
        (a->password && !util_utf8_valid(a->password, strlen(a->password))) ||
        (a->token && !util_utf8_valid(a->token, strlen(a->token)))) {
        sasl_clear(a);
        pop3_reply(s, "-ERR [AUTH] credentials are not valid UTF-8");
        return;
    }
    free(s->user_given);
    s->user_given = NULL;
    if (a->user && !(s->user_given = strdup(a->user))) {
        sasl_clear(a);
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        return;
    }
    pop3_start_auth(s, (enum wh_method)a->mech);
}

/* Acts on what the SASL decoder said. */
static void pop3_sasl_result(struct pop3_session *s, enum sasl_rc rc, const char *chal)
{
    switch (rc) {
    case SASL_CONTINUE:
        s->in_sasl = 1;
        pop3_reply(s, "+ %s", chal);
        return;
    case SASL_DONE:
        pop3_sasl_done(s);
        return;
    case SASL_CANCEL:
        s->in_sasl = 0;
        sasl_clear(&s->sasl);
        pop3_reply(s, "-ERR AUTH cancelled");
        return;
    case SASL_BAD:
    default:
        s->in_sasl = 0;
        log_kv(LOG_INFO, s->id, "bad SASL response", "why=%s", s->sasl.why ? s->sasl.why : "");
        sasl_clear(&s->sasl);
        pop3_bad(s, "invalid SASL response");
        return;
    }
}

static void pop3_cmd_auth(struct pop3_session *s, int argc, char **argv)
{
    char chal[64];
    int m;

    if (argc == 0) {
        /* Not in RFC 5034, but clients (Outlook) send it to list mechanisms. */
        buf_printf(&s->out, "+OK SASL mechanisms follow\r\n");
        pop3_mechs(s, 1);
        buf_add(&s->out, ".\r\n", 3);
        return;
    }
    m = sasl_mech_lookup(argv[0]);
    if (m < 0) {
        pop3_reply(s, "-ERR unsupported SASL mechanism");
        return;
    }
    if (!pop3_plaintext_ok(s)) {
        pop3_refuse_cleartext(s, sasl_mech_plaintext(m));
        return;
    }
    pop3_sasl_result(s, sasl_start(&s->sasl, m, argc == 2 ? argv[1] : NULL, chal, sizeof(chal)),
                     chal);
}

/* A line while a SASL exchange is in progress. */
static void pop3_sasl_line(struct pop3_session *s, const char *line)
{
    char chal[64];

    if (s->sasl_error) {
        pop3_sasl_error_done(s);
        return;
    }
    pop3_sasl_result(s, sasl_step(&s->sasl, line, chal, sizeof(chal)), chal);
}

static void pop3_cmd_utf8(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    s->utf8 = 1;
    pop3_reply(s, "+OK UTF8 enabled");
}

void pop3_delay_done(struct pop3_session *s)
{
    if (s->want != POP3_WANT_DELAY)
        return;
    s->want = POP3_WANT_INPUT;
    if (s->close_after_delay && !s->sasl_error) { /* else after the challenge's answer */
        pop3_reply(s, "-ERR [AUTH] too many failed logins, closing");
        pop3_close(s);
    }
}

/* Keeps the uids of a listing or uidl reply in one block. */
static int pop3_take_uids(struct pop3_session *s, const struct wh_result *r)
{
    size_t i, total = 0, off = 0;
    char *block;

    for (i = 0; i < s->n_msgs; i++)
        total += strlen(r->msgs[i].uid) + 1;
    block = malloc(total ? total : 1);
    if (!block)
        return -1;
    for (i = 0; i < s->n_msgs; i++) {
        size_t n = strlen(r->msgs[i].uid) + 1;
        memcpy(block + off, r->msgs[i].uid, n);
        s->msgs[i].uid_off = (uint32_t)off;
        off += n;
    }
    free(s->uids);
    s->uids = block;
    return 0;
}

/* list answered: take the snapshot and enter TRANSACTION */
static void pop3_proceed_list(struct pop3_session *s, struct wh_result *r)
{
    size_t i;

    s->want = POP3_WANT_INPUT;
    if (r->status != WH_OK) {
        /* The backend accepted the login (and may hold a lock): close, so
         * the session ends as one that logged in (disconnect event). */
        log_kv(LOG_WARN, s->id, "list failed", "user=%s error=%s", s->user,
               r->error ? r->error : "");
        pop3_reply(s, "-ERR [SYS/TEMP] the maildrop cannot be opened now, try again later");
        pop3_close(s);
        return;
    }
    if (r->truncated_from)
        METRIC_INC(listings_truncated);
    if (r->truncated_from)
        log_kv(LOG_WARN, s->id, "listing cut to max_messages", "user=%s listed=%zu kept=%zu",
               s->user, r->truncated_from, r->n_msgs);
    pop3_listing_free(s);
    s->msgs = calloc(r->n_msgs ? r->n_msgs : 1, sizeof(*s->msgs));
    if (!s->msgs) {
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        pop3_close(s);
        return;
    }
    s->n_msgs = r->n_msgs;
    for (i = 0; i < r->n_msgs; i++) {
        s->msgs[i].size = r->msgs[i].size;
        s->total_octets += r->msgs[i].size;
    }
    if (r->has_uids && s->n_msgs && pop3_take_uids(s, r) < 0) {
        pop3_listing_free(s);
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        pop3_close(s);
        return;
    }
    pop3_enter(s, POP3_TRANSACTION);
    pop3_reply(s, "+OK maildrop has %zu message%s (%" PRIu64 " octets)", s->n_msgs,
               s->n_msgs == 1 ? "" : "s", s->total_octets);
}

/* ---- TRANSACTION ------------------------------------------------------ */

/*
 * Parses a message number: decimal digits only, 1..n, not deleted (unless
 * allow_deleted). Answers -ERR itself and returns 0 on failure.
 */
static uint32_t pop3_check_msgnum(struct pop3_session *s, const char *arg)
{
    uint64_t v = 0;
    const char *p;

    if (!*arg) {
        pop3_reply(s, "-ERR invalid message number");
        return 0;
    }
    for (p = arg; *p; p++) {
        if (*p < '0' || *p > '9' || v > UINT32_MAX) {
            pop3_reply(s, "-ERR invalid message number");
            return 0;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v == 0 || v > s->n_msgs) {
        pop3_reply(s, "-ERR no such message");
        return 0;
    }
    if (s->msgs[v - 1].deleted) {
        pop3_reply(s, "-ERR message %" PRIu64 " already deleted", v);
        return 0;
    }
    return (uint32_t)v;
}

static void pop3_cmd_stat(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    pop3_reply(s, "+OK %zu %" PRIu64, s->n_msgs - s->n_deleted,
               s->total_octets - s->deleted_octets);
}

static void pop3_cmd_list(struct pop3_session *s, int argc, char **argv)
{
    size_t i;
    uint32_t n;

    if (argc == 1) {
        if ((n = pop3_check_msgnum(s, argv[0])))
            pop3_reply(s, "+OK %" PRIu32 " %" PRIu64, n, s->msgs[n - 1].size);
        return;
    }
    pop3_reply(s, "+OK %zu message%s (%" PRIu64 " octets)", s->n_msgs - s->n_deleted,
               s->n_msgs - s->n_deleted == 1 ? "" : "s", s->total_octets - s->deleted_octets);
    for (i = 0; i < s->n_msgs; i++)
        if (!s->msgs[i].deleted)
            buf_printf(&s->out, "%zu %" PRIu64 "\r\n", i + 1, s->msgs[i].size);
    buf_add(&s->out, ".\r\n", 3);
}

/* Answers UIDL once the uids are known. */
static void pop3_answer_uidl(struct pop3_session *s, uint32_t n)
{
    size_t i;

    if (n) {
        pop3_reply(s, "+OK %" PRIu32 " %s", n, pop3_uid(s, n - 1));
        return;
    }
    pop3_reply(s, "+OK unique-id listing follows");
    for (i = 0; i < s->n_msgs; i++)
        if (!s->msgs[i].deleted)
            buf_printf(&s->out, "%zu %s\r\n", i + 1, pop3_uid(s, i));
    buf_add(&s->out, ".\r\n", 3);
}

static void pop3_cmd_uidl(struct pop3_session *s, int argc, char **argv)
{
    uint32_t n = 0;

    if (argc == 1 && !(n = pop3_check_msgnum(s, argv[0])))
        return;
    if (s->uids || s->n_msgs == 0) {
        pop3_answer_uidl(s, n);
        return;
    }
    s->pend_msg = n;
    pop3_start_call(s, WH_UIDL, PEND_UIDL);
}

/* uidl answered, for a UIDL command or before quit */
static void pop3_proceed_uidl(struct pop3_session *s, struct wh_result *r)
{
    int ok = r->status == WH_OK && r->n_msgs == s->n_msgs;

    if (r->status == WH_OK && !ok) {
        /* A reply not per the contract, found here rather than in wh_json. */
        METRIC_INC(webhook_errors[WH_UIDL][MWE_BODY]);
        log_kv(LOG_WARN, s->id, "uidl: wrong number of uids", "listed=%zu got=%zu", s->n_msgs,
               r->n_msgs);
    } else if (!ok)
        log_kv(LOG_WARN, s->id, "uidl failed", "error=%s", r->error ? r->error : "");
    if (ok && pop3_take_uids(s, r) < 0)
        ok = 0;
    s->want = POP3_WANT_INPUT;
    if (s->pending == PEND_UIDL_QUIT) {
        if (!ok) {
            /* The quit cannot name the deleted uids: a failed QUIT, as when
             * the quit call itself fails. */
            METRIC_INC(quit_failures);
            log_kv(LOG_WARN, s->id, "quit failed: deletions not committed",
                   "user=%s deleted=%zu error=%s", s->user, s->n_deleted,
                   "uidl before quit failed");
            pop3_reply(s, "-ERR [SYS/TEMP] some deleted messages not removed");
            pop3_close(s);
            return;
        }
        pop3_start_quit(s);
        return;
    }
    if (!ok) {
        pop3_reply(s, "-ERR [SYS/TEMP] unique ids are unavailable now, try again later");
        return;
    }
    pop3_answer_uidl(s, s->pend_msg);
}

static void pop3_start_retrieve(struct pop3_session *s, uint32_t n, long lines)
{
    pop3_start_call(s, WH_RETRIEVE, PEND_RETRIEVE);
    s->call.message = n;
    s->call.uid = s->uids ? pop3_uid(s, n - 1) : NULL;
    s->call.lines = lines;
    s->call.size_hint = pop3_msg_size(s, n);
}

static void pop3_cmd_retr(struct pop3_session *s, int argc, char **argv)
{
    uint32_t n;

    (void)argc;
    if ((n = pop3_check_msgnum(s, argv[0])))
        pop3_start_retrieve(s, n, -1);
}

static void pop3_cmd_top(struct pop3_session *s, int argc, char **argv)
{
    const char *p;
    long lines = 0;
    uint32_t n;

    (void)argc;
    for (p = argv[1]; *p; p++) {
        if (*p < '0' || *p > '9') {
            pop3_reply(s, "-ERR invalid number of lines");
            return;
        }
        /* Any count is valid (RFC 1939 §7); past the cap it means "all". */
        lines = lines > POP3_TOP_MAX / 10 ? POP3_TOP_MAX : lines * 10 + (*p - '0');
        if (lines > POP3_TOP_MAX)
            lines = POP3_TOP_MAX;
    }
    if (!*argv[1]) {
        pop3_reply(s, "-ERR invalid number of lines");
        return;
    }
    if ((n = pop3_check_msgnum(s, argv[0])))
        pop3_start_retrieve(s, n, lines);
}

int pop3_retrieve_begin(struct pop3_session *s, enum wh_status status)
{
    uint32_t n = s->call.message;

    if (s->pending != PEND_RETRIEVE)
        return 0;
    if (status == WH_OK) {
        if (s->call.lines < 0)
            pop3_reply(s, "+OK %" PRIu64 " octets", s->msgs[n - 1].size);
        else
            pop3_reply(s, "+OK top of message follows");
        return 1;
    }
    s->want = POP3_WANT_INPUT;
    s->pending = PEND_NONE;
    if (status == WH_NOT_FOUND)
        pop3_reply(s, "-ERR message %" PRIu32 " is no longer available", n);
    else
        pop3_reply(s, "-ERR [SYS/TEMP] the message cannot be read now, try again later");
    return 0;
}

void pop3_retrieve_end(struct pop3_session *s, int ok)
{
    if (s->pending != PEND_RETRIEVE)
        return;
    s->pending = PEND_NONE;
    if (!ok) {
        /* The client has seen +OK and part of the body: only closing the
         * connection keeps it from taking a truncated message as whole. */
        pop3_close(s);
        return;
    }
    METRIC_INC(messages_retrieved);
    s->want = POP3_WANT_INPUT;
}

static void pop3_cmd_dele(struct pop3_session *s, int argc, char **argv)
{
    uint32_t n;

    (void)argc;
    if (!(n = pop3_check_msgnum(s, argv[0])))
        return;
    s->msgs[n - 1].deleted = 1;
    s->n_deleted++;
    s->deleted_octets += s->msgs[n - 1].size;
    pop3_reply(s, "+OK message %" PRIu32 " deleted", n);
}

static void pop3_cmd_noop(struct pop3_session *s, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    pop3_reply(s, "+OK");
}

static void pop3_cmd_rset(struct pop3_session *s, int argc, char **argv)
{
    size_t i;

    (void)argc;
    (void)argv;
    for (i = 0; i < s->n_msgs; i++)
        s->msgs[i].deleted = 0;
    s->n_deleted = 0;
    s->deleted_octets = 0;
    pop3_reply(s, "+OK maildrop has %zu message%s (%" PRIu64 " octets)", s->n_msgs,
               s->n_msgs == 1 ? "" : "s", s->total_octets);
}

/* quit answered: the deletions are committed or not */
static void pop3_proceed_quit(struct pop3_session *s, struct wh_result *r)
{
    size_t i;

    if (r->status == WH_OK) {
        for (i = 0; i < s->call.n_deleted; i++)
            log_kv(LOG_INFO, s->id, "deleted", "user=%s message=%" PRIu32 " uid=%s", s->user,
                   s->del[i].message, s->del[i].uid ? s->del[i].uid : "");
        s->quit_done = 1;
        METRIC_ADD(messages_deleted, s->call.n_deleted);
        pop3_reply(s, "+OK bye, %zu message%s deleted", s->n_deleted, s->n_deleted == 1 ? "" : "s");
    } else if (s->n_deleted) {
        METRIC_INC(quit_failures);
        log_kv(LOG_WARN, s->id, "quit failed: deletions not committed",
               "user=%s deleted=%zu error=%s", s->user, s->n_deleted, r->error ? r->error : "");
        pop3_reply(s, "-ERR [SYS/TEMP] some deleted messages not removed");
    } else {
        log_kv(LOG_WARN, s->id, "quit failed", "user=%s error=%s", s->user,
               r->error ? r->error : "");
        pop3_reply(s, "+OK bye");
    }
    pop3_close(s);
}

void pop3_call_done(struct pop3_session *s, struct wh_result *r)
{
    enum pop3_pending why = s->pending;

    if (s->want != POP3_WANT_CALL)
        return;
    switch (why) {
    case PEND_AUTH:
        pop3_proceed_auth(s, r);
        break;
    case PEND_LIST:
        pop3_proceed_list(s, r);
        break;
    case PEND_UIDL:
    case PEND_UIDL_QUIT:
        pop3_proceed_uidl(s, r);
        break;
    case PEND_QUIT:
        pop3_proceed_quit(s, r);
        break;
    case PEND_CONNECT:
        pop3_proceed_connect(s, r);
        break;
    case PEND_RETRIEVE:
        /* A retrieve that ended before any body: same as begin without body. */
        pop3_retrieve_begin(s, r->status == WH_OK ? WH_TEMP : r->status);
        break;
    case PEND_NONE:
    default:
        abort();
    }
    if (s->pending == why && s->want != POP3_WANT_CALL)
        s->pending = PEND_NONE;
}

void pop3_timeout(struct pop3_session *s)
{
    if (s->state == POP3_CLOSED)
        return;
    METRIC_INC(timeouts);
    log_kv(LOG_INFO, s->id, "timeout", "state=%s", pop3_state_names[s->state]);
    pop3_reply(s, "-ERR autologout: idle for too long, closing");
    pop3_close(s);
}

void pop3_shutdown(struct pop3_session *s)
{
    if (s->state == POP3_CLOSED)
        return;
    pop3_reply(s, "-ERR [SYS/TEMP] server shutting down, try again later");
    pop3_close(s);
}

int pop3_drain(struct pop3_session *s)
{
    if (s->draining || s->state == POP3_CLOSED)
        return 0;
    s->draining = 1;
    if (s->state != POP3_AUTHORIZATION || s->want != POP3_WANT_INPUT || s->in_sasl)
        return 0;     /* logged in, or a command runs: QUIT stays possible */
    pop3_shutdown(s); /* nothing to keep: tell and close */
    return 1;
}

/* ---- dispatch --------------------------------------------------------- */

/* Splits the arguments: single spaces between them, none empty. F_REST
 * commands take the whole rest of the line as one argument. Returns argc,
 * or -1 on a syntax error. */
static int pop3_split_args(char *rest, const struct pop3_cmd *c, char **argv)
{
    int argc = 0;
    char *p = rest;

    if (!rest)
        return 0;
    if (c->flags & F_REST) {
        argv[0] = rest;
        return *rest ? 1 : -1;
    }
    while (1) {
        char *sp = strchr(p, ' ');
        if (argc == POP3_MAX_ARGS)
            return -1;
        if (sp)
            *sp = '\0';
        if (!*p)
            return -1;
        argv[argc++] = p;
        if (!sp)
            return argc;
        p = sp + 1;
    }
}

static const struct pop3_cmd *pop3_lookup(const char *verb)
{
    size_t i;

    for (i = 0; i < sizeof(pop3_commands) / sizeof(pop3_commands[0]); i++)
        if (strcasecmp(pop3_commands[i].name, verb) == 0)
            return &pop3_commands[i];
    return NULL;
}

/* Handles one command line (without its line end, NUL-terminated). */
static void pop3_dispatch(struct pop3_session *s, char *line)
{
    const struct pop3_cmd *c;
    char *argv[POP3_MAX_ARGS];
    char *rest = strchr(line, ' ');
    int argc;

    if (rest)
        *rest++ = '\0';
    c = pop3_lookup(line);
    s->cmd = c ? c->name : "";
    s->n_commands++;
    METRIC_INC(commands_total);
    if (log_enabled(LOG_DEBUG))
        log_kv(LOG_DEBUG, s->id, "command", "verb=%s args=%s", c ? c->name : "(unknown)",
               c && ((c->flags & F_SECRET_ARGS) || !strcmp(c->name, "PASS")) && rest
                   ? "***"
                   : (rest ? rest : ""));
    if (s->draining && !(c && c->fn == pop3_cmd_quit)) {
        /* Shutting down: only QUIT (and its deletions) is still done. */
        pop3_reply(s, "-ERR [SYS/TEMP] server shutting down, try again later");
        if (s->state == POP3_AUTHORIZATION)
            pop3_close(s);
        return;
    }
    if (!c) {
        pop3_bad(s, "unknown command");
        return;
    }
    if (!(c->states & (1u << s->state))) {
        pop3_bad(s, s->state == POP3_AUTHORIZATION ? "not allowed before login"
                                                   : "not allowed after login");
        return;
    }
    argc = pop3_split_args(rest, c, argv);
    if (argc < c->min_args || argc > c->max_args) {
        pop3_bad(s, "wrong arguments");
        return;
    }
    c->fn(s, argc, argv);
}

/* Rejects control bytes in a command line (NUL could hide a second command
 * from a log or a backend; none belongs in POP3 commands). */
static int pop3_line_ok(const char *p, size_t n)
{
    return !util_has_ctl(p, n);
}

/* Handles one complete line (without its line end). */
static void pop3_line(struct pop3_session *s, const char *data, size_t n)
{
    char small[POP3_LINE_MAX + 1], *line = small;

    if (s->sasl_error) {
        /* Any line answers the OAuth error challenge, even a bad one. */
        pop3_sasl_error_done(s);
        return;
    }
    if (!pop3_line_ok(data, n)) {
        pop3_sasl_abort(s);
        pop3_bad(s, "invalid characters in command");
        return;
    }
    if (n == 0 && !s->in_sasl && !s->sasl_error) {
        pop3_bad(s, "empty command");
        return;
    }
    if (n >= sizeof(small) && !(line = malloc(n + 1))) {
        pop3_reply(s, "-ERR [SYS/TEMP] out of memory");
        return;
    }
    memcpy(line, data, n);
    line[n] = '\0';
    if (s->in_sasl || s->sasl_error)
        pop3_sasl_line(s, line);
    else
        pop3_dispatch(s, line);
    util_wipe(line, n);
    if (line != small)
        free(line);
}

size_t pop3_feed(struct pop3_session *s, const char *data, size_t len)
{
    size_t max = pop3_line_max(s), n;
    const char *lf;

    if (s->want != POP3_WANT_INPUT || len == 0)
        return 0;
    lf = memchr(data, '\n', len < max ? len : max);
    if (s->discarding || (!lf && len >= max)) {
        /* Inside a line that is too long: drop it up to its LF. */
        lf = memchr(data, '\n', len);
        if (!lf) {
            s->discarding = 1;
            return len;
        }
        s->discarding = 0;
        s->cmd = "";
        pop3_sasl_abort(s);
        log_kv(LOG_INFO, s->id, "line too long", "limit=%zu", max);
        pop3_bad(s, "line too long");
        return (size_t)(lf - data) + 1;
    }
    if (!lf)
        return 0;
    n = (size_t)(lf - data);
    if (n > 0 && data[n - 1] == '\r')
        n--;
    pop3_line(s, data, n);
    return (size_t)(lf - data) + 1;
}
