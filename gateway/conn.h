/*
 * conn: one client connection, from accept to close, inside one worker.
 *
 * The transport shell around a POP3 session: it moves bytes between the
 * client's socket and the sans-I/O session (pop3.c), runs the session's
 * backend calls through the worker's webhook client, streams retrieved
 * messages through the converter, and owns the timers. See conn.c for the
 * states a connection goes through.
 */
#ifndef POP3GW_CONN_H
#define POP3GW_CONN_H

#include <sys/socket.h>

struct adm_session;
struct conn;
struct worker;

/* Takes an accepted socket (tls: the listener is implicit TLS). The
 * connection belongs to w from now on; the socket is closed on failure. */
void conn_accept(struct worker *w, int fd, const struct sockaddr *sa, int socklen, int tls);

/* The server is stopping: an idle session is told so and closed; a busy one
 * finishes its command first. */
void conn_drain(struct conn *c);

/* The grace period is over: closes at once (deleting nothing). */
void conn_abort(struct conn *c);

/* Copies what /sessions shows of one connection. */
void conn_snapshot(const struct conn *c, struct adm_session *out);

/* The next connection in the worker's list, or NULL. */
struct conn *conn_next(struct conn *c);

#endif
