/*
 * reqlog: the --log-requests file. One line per request received: the JSON
 * body as it came, compacted, with "_path" (the request path) and "_status"
 * (the HTTP status answered) added. Tests read it to see which events the
 * gateway called and with what. It holds passwords and tokens as sent: a
 * testing aid, not for production.
 *
 * The file is opened with O_APPEND and each line goes out in one write(2)
 * under a mutex, so lines never interleave and a reader sees each line as soon
 * as the reply is sent.
 */
#ifndef MAILDIR_REQLOG_H
#define MAILDIR_REQLOG_H

#include <stddef.h>

#include <jansson.h>

struct reqlog;

/* Opens (creating, mode 0600) `path` for appending. NULL with a message in `err`. */
struct reqlog *reqlog_open(const char *path, char *err, size_t errlen);
void reqlog_close(struct reqlog *l);

/*
 * Appends the line for one request. `body` is the parsed request (it gets the
 * two fields added), or NULL when the body was not a JSON object (then the
 * line holds "_path", "_status" and "_error" only). Errors are logged, not
 * returned: the request is answered regardless.
 */
void reqlog_write(struct reqlog *l, json_t *body, const char *path, int status, const char *error);

#endif
