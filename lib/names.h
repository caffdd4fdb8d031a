/*
 * names: the lists of names that more than one layer speaks of, each kept
 * once as an X-macro. The webhook contract, the SASL decoder, the
 * configuration, the metrics and both admin renderings generate their enums
 * and strings from these.
 *
 *   NAMES_EVENTS(X)     X(ENUM, name)       webhook events, in contract order
 *   NAMES_METHODS(X)    X(ENUM, name, cmd)  login methods (`method` of authenticate);
 *                                           cmd is the POP3 command that carries
 *                                           it: PASS (after USER), APOP, or AUTH
 *                                           (a SASL mechanism, RFC 5034)
 *   NAMES_WH_ERRORS(X)  X(ENUM, name)       why a webhook call failed (metric label)
 */
#ifndef POP3GW_NAMES_H
#define POP3GW_NAMES_H

#define NAMES_EVENTS(X)                                                                            \
    X(AUTHENTICATE, "authenticate")                                                                \
    X(LIST, "list")                                                                                \
    X(UIDL, "uidl")                                                                                \
    X(RETRIEVE, "retrieve")                                                                        \
    X(QUIT, "quit")                                                                                \
    X(CONNECT, "connect")                                                                          \
    X(DISCONNECT, "disconnect")

#define NAMES_METHODS(X)                                                                           \
    X(USER, "USER", PASS)                                                                          \
    X(APOP, "APOP", APOP)                                                                          \
    X(PLAIN, "PLAIN", AUTH)                                                                        \
    X(LOGIN, "LOGIN", AUTH)                                                                        \
    X(XOAUTH2, "XOAUTH2", AUTH)                                                                    \
    X(OAUTHBEARER, "OAUTHBEARER", AUTH)

#define NAMES_WH_ERRORS(X)                                                                         \
    X(TIMEOUT, "timeout")                                                                          \
    X(CONNECT, "connect")                                                                          \
    X(STATUS, "status")                                                                            \
    X(BODY, "body")                                                                                \
    X(BROKEN, "broken")                                                                            \
    X(REFUSED, "refused")

/* The number of entries of a list: NAMES_COUNT(NAMES_EVENTS). */
#define NAMES_ONE_(...) +1
#define NAMES_COUNT(list) (0 list(NAMES_ONE_))

#endif
