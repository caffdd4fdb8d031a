/*
 * report: the gateway's side of the admin endpoint. Fills the struct
 * adm_source that admin/ asks through: snapshots of the counters and of the
 * server, worker pings and copies of the live sessions.
 */
#ifndef POP3GW_REPORT_H
#define POP3GW_REPORT_H

struct adm_source;
struct server;

/* Points `src` at the callbacks for `srv` (which must outlive the admin
 * endpoint). */
void report_source(struct server *srv, struct adm_source *src);

#endif
