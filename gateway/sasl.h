/*
 * sasl: decoding of the SASL mechanisms pop3gw passes to its backend
 * (RFC 5034 for POP3 AUTH): PLAIN (RFC 4616), LOGIN, XOAUTH2 and
 * OAUTHBEARER (RFC 7628).
 *
 * Sans-I/O: the session hands over the client's base64 lines and gets back a
 * challenge to send, the decoded credentials, or an error. The gateway checks
 * nothing itself: the credentials go to the backend's authenticate event.
 */
#ifndef POP3GW_SASL_H
#define POP3GW_SASL_H

#include <stddef.h>

#include "webhook/wh.h"

/*
 * The mechanisms: the login methods of lib/names.h that the AUTH command
 * carries, each numbered as its login method (SASL_PLAIN == WH_METHOD_PLAIN),
 * so that a mechanism is the method its authenticate call names.
 */
#define SASL_MECH_PASS_(e)
#define SASL_MECH_APOP_(e)
#define SASL_MECH_AUTH_(e) SASL_##e = WH_METHOD_##e,
enum sasl_mech {
#define X(e, n, cmd) SASL_MECH_##cmd##_(e)
    NAMES_METHODS(X)
#undef X
};

#define SASL_IS_PASS_ 0
#define SASL_IS_APOP_ 0
#define SASL_IS_AUTH_ 1
#define SASL_COUNT_(e, n, cmd) +SASL_IS_##cmd##_
/* How many mechanisms there are. */
#define SASL_N_MECHS (0 NAMES_METHODS(SASL_COUNT_))

/* Every mechanism, in the order of lib/names.h (the order CAPA lists them). */
extern const enum sasl_mech sasl_mechs[SASL_N_MECHS];

enum sasl_rc {
    SASL_CONTINUE, /* send "+ " and the challenge, then feed the client's next line */
    SASL_DONE,     /* the credentials are complete */
    SASL_BAD,      /* malformed (bad base64, missing parts): -ERR */
    SASL_CANCEL,   /* the client sent "*" */
};

struct sasl {
    enum sasl_mech mech;
    int step;        /* how many client responses have been taken */
    char *user;      /* authentication identity (OAuth: the a= / user= name, may be NULL) */
    char *authzid;   /* PLAIN: authorization identity when given */
    char *password;  /* PLAIN, LOGIN */
    char *token;     /* XOAUTH2, OAUTHBEARER: the bearer token */
    const char *why; /* SASL_BAD: what was wrong, for the log */
};

/* The mechanism's name as POP3 spells it ("" for a value that is none). */
const char *sasl_mech_name(enum sasl_mech m);
/* Looks up a mechanism name, case-insensitively: its enum sasl_mech value,
 * or -1 when unknown. */
int sasl_mech_lookup(const char *name);
/* True for mechanisms that carry a plaintext password (bearer tokens are
 * as sensitive: the session asks for TLS before any mechanism). */
int sasl_mech_plaintext(enum sasl_mech m);

/*
 * Starts a mechanism. `initial` is the AUTH command's initial response
 * (base64, "=" for empty) or NULL when there was none. On SASL_CONTINUE the
 * challenge (base64, maybe empty) is written to `chal` (chal_len bytes).
 */
enum sasl_rc sasl_start(struct sasl *s, enum sasl_mech m, const char *initial, char *chal,
                        size_t chal_len);

/* Takes the client's next line (base64 or "*"). */
enum sasl_rc sasl_step(struct sasl *s, const char *line, char *chal, size_t chal_len);

/* The base64 challenge an OAuth mechanism sends after a refused token (the
 * client answers with one more line, then gets -ERR). */
const char *sasl_oauth_error_challenge(enum sasl_mech m);

/* Wipes and frees the credentials; the struct can be started again. */
void sasl_clear(struct sasl *s);

#endif
