/*
 * pop3: the POP3 session, a sans-I/O state machine (RFC 1939, 2449, 3206).
 *
 * The session is fed bytes from the client and results of backend calls; it
 * produces reply bytes and backend calls. It never touches a socket, curl or
 * the clock: the connection shell (conn.c) moves bytes, runs the calls and the
 * timers, and asks the session what to do next.
 *
 * The shell's loop:
 *   - pop3_feed() with buffered input until it returns 0 (needs more bytes, or
 *     the session is busy waiting on a call);
 *   - send pop3_output() to the client (all replies of a pipelined batch at
 *     once), then pop3_output_clear();
 *   - look at pop3_want(): run the call pop3_call() describes and give its
 *     result back with pop3_call_done() (or, for retrieve, the streaming trio
 *     pop3_retrieve_begin() / body bytes / pop3_retrieve_end()); delay the
 *     output; or flush and close.
 */
#ifndef POP3GW_POP3_H
#define POP3GW_POP3_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "webhook/wh.h"

#define POP3_LINE_MAX 255        /* a command line, CRLF included (RFC 2449 §4) */
#define POP3_AUTH_LINE_MAX 16384 /* a SASL continuation line: OAuth tokens are long */

/* The session's states (RFC 1939 section 3, and CLOSED once it ended):
 * X(ENUM, name). */
#define POP3_STATES(X)                                                                             \
    X(AUTHORIZATION, "AUTHORIZATION")                                                              \
    X(TRANSACTION, "TRANSACTION")                                                                  \
    X(UPDATE, "UPDATE")                                                                            \
    X(CLOSED, "CLOSED")

enum pop3_state {
#define X(e, n) POP3_##e,
    POP3_STATES(X)
#undef X
};

/* What the session needs from the shell next. */
enum pop3_want {
    POP3_WANT_INPUT, /* nothing pending: send the output, feed more input */
    POP3_WANT_CALL,  /* run pop3_call(); the session reads nothing meanwhile */
    POP3_WANT_DELAY, /* hold the output for the failed-login delay, then pop3_delay_done() */
    POP3_WANT_STLS,  /* flush the output, drop buffered input, start TLS, pop3_tls_started() */
    POP3_WANT_CLOSE, /* flush the output and close the connection */
};

/* Read-only settings shared by every session of a process. */
struct pop3_params {
    const char *hostname;
    int apop;             /* offer APOP (needs a timestamp per session) */
    int plaintext_always; /* plaintext_auth = allow */
    int stls_available;   /* a TLS certificate is loaded */
    int max_bad_commands;
    int max_auth_failures;
    const char *expire; /* EXPIRE value to advertise, or NULL */
    int login_delay;    /* LOGIN-DELAY to advertise, or -1 */
    size_t max_messages;
    int connect_event; /* ask the backend (connect event) before the greeting */
};

/* Who the client is: fixed for the session (PROXY-protocol aware). */
struct pop3_peer {
    const char *id; /* session id */
    const char *ip; /* client address text */
    int port;
    int tls;                    /* TLS active from the start (implicit TLS) */
    int loopback;               /* the real client address is loopback */
    const char *apop_timestamp; /* "<...@host>", or NULL when APOP is off */
};

struct pop3_session;

/* Creates a session and queues its greeting. Copies what it keeps from
 * `peer`; `params` must outlive it. NULL when memory runs out. */
struct pop3_session *pop3_new(const struct pop3_params *params, const struct pop3_peer *peer);
void pop3_free(struct pop3_session *s); /* NULL is fine */

/*
 * Offers buffered client bytes. Handles at most one command line and returns
 * the bytes it consumed; 0 means it needs more bytes or is busy (pop3_want()
 * is not POP3_WANT_INPUT). Never reads past the line it handles, so pipelined
 * commands stay in the caller's buffer until their turn. A line longer than
 * pop3_line_max() is consumed and discarded up to its LF, answered by one
 * -ERR.
 */
size_t pop3_feed(struct pop3_session *s, const char *data, size_t len);

/* How many bytes of input the next pop3_feed() may need to see at once. */
size_t pop3_line_max(const struct pop3_session *s);

/* Reply bytes queued for the client. */
const char *pop3_output(const struct pop3_session *s, size_t *len);
void pop3_output_clear(struct pop3_session *s);

enum pop3_want pop3_want(const struct pop3_session *s);
enum pop3_state pop3_state(const struct pop3_session *s);
/* The name of a state, as logs and /sessions show it. */
const char *pop3_state_name(enum pop3_state st);

/* The pending backend call (valid while pop3_want() is POP3_WANT_CALL). */
const struct wh_call *pop3_call(const struct pop3_session *s);

/* The result of a non-streamed call. The session takes what it keeps from
 * `r` (and leaves the rest for the caller's wh_result_free). */
void pop3_call_done(struct pop3_session *s, struct wh_result *r);

/*
 * Streamed retrieve: the status is known (WH_OK when the backend answered 200
 * and the body follows). Queues "+OK" or the -ERR; returns 1 when the body
 * should be streamed to the client (through conv), 0 when the call is over.
 */
int pop3_retrieve_begin(struct pop3_session *s, enum wh_status status);

/* The streamed body is complete (ok = 1, the caller has written the
 * terminating ".") or broke after "+OK" (ok = 0: the session closes). */
void pop3_retrieve_end(struct pop3_session *s, int ok);

/* The expected size of message n (1-based) from the listing, for checking a
 * streamed body. */
uint64_t pop3_msg_size(const struct pop3_session *s, uint32_t n);

/* The failed-login delay has passed. */
void pop3_delay_done(struct pop3_session *s);

/* TLS is now active (after POP3_WANT_STLS). */
void pop3_tls_started(struct pop3_session *s);

/* The login or idle timer fired: queues a reply and asks to close. */
void pop3_timeout(struct pop3_session *s);

/* The server is stopping: queues -ERR [SYS/TEMP] and asks to close. Call it
 * only while pop3_want() is POP3_WANT_INPUT. */
void pop3_shutdown(struct pop3_session *s);

/*
 * The server is stopping, with a grace period: from now on every command
 * but QUIT is answered -ERR [SYS/TEMP] server shutting down (and closes a
 * session that has not logged in); QUIT still commits the deletions. A
 * session idle before login is told and closed at once. Returns 1 when it
 * closed the session now. Any time; the first call counts.
 */
int pop3_drain(struct pop3_session *s);

/* True once a backend authenticate succeeded (a disconnect may be due). */
int pop3_logged_in(const struct pop3_session *s);
/* True once a QUIT was fully handled (the quit call answered). */
int pop3_quit_done(const struct pop3_session *s);
/* True while a QUIT's calls are running: they finish even if the client leaves. */
int pop3_committing(const struct pop3_session *s);
/* What a session did, for the line logged when it ends. */
struct pop3_summary {
    unsigned commands; /* command lines handled */
    size_t dele;       /* messages marked deleted at the end */
    int committed;     /* a QUIT was answered and its deletions committed */
    int quit;          /* the client sent QUIT */
};
void pop3_summary(const struct pop3_session *s, struct pop3_summary *out);

/* The confirmed user name, or NULL. */
const char *pop3_user(const struct pop3_session *s);
/* The mailbox JSON to echo, or NULL. */
const char *pop3_mailbox(const struct pop3_session *s);
/* The current command's verb (for logs and /sessions), or "". */
const char *pop3_current_command(const struct pop3_session *s);
int pop3_utf8(const struct pop3_session *s);

#endif
