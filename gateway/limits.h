/*
 * limits: per-client-address counters shared by every worker: open
 * connections (max_connections_per_ip) and failed logins in a 10-minute
 * window (max_auth_failures_per_ip). A hash table under striped locks; entries
 * are dropped when nothing is counted any more.
 */
#ifndef POP3GW_LIMITS_H
#define POP3GW_LIMITS_H

#include <time.h>

#define LIMITS_FAILURE_WINDOW 600 /* seconds over which failed logins count */

/* 0 disables a limit. Call once before the workers start. */
int limits_init(int max_per_ip, int max_failures_per_ip);
void limits_cleanup(void);

/* New limits (SIGHUP): they apply to the next connection and login. */
void limits_set(int max_per_ip, int max_failures_per_ip);

/* Counts a connection from ip: 1 when counted (release it later), 0 when
 * there is no per-address limit (nothing counted), -1 when over the limit
 * (nothing counted). */
int limits_conn_acquire(const char *ip);
void limits_conn_release(const char *ip);

/* Records a refused login from ip at `now`. */
void limits_login_failed(const char *ip, time_t now);
/* True when ip has failed too often within the window. */
int limits_login_blocked(const char *ip, time_t now);

#endif
