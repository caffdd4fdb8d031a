/*
 * log: one line per event to stderr, logfmt or JSON.
 *
 * A line carries the time, level, the session id (when there is one), a
 * message and key=value fields. Fields come from a small format string of
 * space-separated `key=%spec` items, with spec one of s d u ld lu lld llu zu
 * f .1f .3f; logfmt quotes values that need it, JSON renders numbers as
 * numbers and strings escaped. Each line is written with a single write(2),
 * so lines from worker threads never interleave.
 *
 *     log_kv(LOG_INFO, sid, "login", "user=%s method=%s attempt=%d", u, m, n);
 *
 * fmt may be NULL for a line without fields (an empty "" trips
 * -Wformat-zero-length). session NULL: no session field; a NULL %s string is
 * logged as "" (logfmt) or null (JSON). Lines are capped at 4096 bytes; a
 * longer one is cut, stays well-formed and ends with truncated=true.
 */
#ifndef POP3GW_LOG_H
#define POP3GW_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* The levels' names, by enum log_level, then NULL: "error" .. "debug". The
 * configuration's log_level takes these words. */
extern const char *const log_level_names[LOG_DEBUG + 2];

/* format: 0 logfmt, 1 json (enum cfg_log_format); level: the most verbose shown. */
void log_init(int format, int level);
int log_enabled(int level);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int log_level_parse(const char *s);

void log_kv(int level, const char *session, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
