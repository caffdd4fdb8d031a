/*
 * locks: optional in-memory maildrop locks, one per user, held by a POP3
 * session (its `session` id from the webhook body).
 *
 * A successful authenticate takes the lock; list, uidl and retrieve from the
 * holder refresh it; quit and disconnect from the holder release it; a lock
 * not refreshed for `timeout` seconds lapses, so a gateway that died cannot
 * keep a mailbox locked forever. Repeating a call from the holding session
 * (a webhook retry) succeeds. Thread-safe.
 */
#ifndef MAILDIR_LOCKS_H
#define MAILDIR_LOCKS_H

struct locks;

/* A table whose locks lapse after `timeout` seconds (> 0). NULL when out of memory. */
struct locks *locks_new(double timeout);
void locks_free(struct locks *l);

/* Takes or refreshes the lock on `user` for `session`. Returns 1, or 0 when
 * another session holds it. -1 when out of memory. */
int locks_acquire(struct locks *l, const char *user, const char *session);

/* Refreshes the lock if `session` holds it; does nothing otherwise. */
void locks_touch(struct locks *l, const char *user, const char *session);

/* Releases the lock if `session` holds it; does nothing otherwise. */
void locks_release(struct locks *l, const char *user, const char *session);

#endif
