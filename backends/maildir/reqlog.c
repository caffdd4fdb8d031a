/*
 * reqlog: the append-only request log (see reqlog.h).
 */
#include "backends/maildir/reqlog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/maildir/note.h"

struct reqlog {
    int fd;             /* O_APPEND */
    pthread_mutex_t mu; /* one line at a time */
};

struct reqlog *reqlog_open(const char *path, char *err, size_t errlen)
{
    struct reqlog *l = calloc(1, sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (l->fd < 0) {
        snprintf(err, errlen, "cannot open request log %s: %s", path, strerror(errno));
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void reqlog_close(struct reqlog *l)
{
    if (l == NULL)
        return;
    close(l->fd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* Writes all of buf, retrying short writes (a line over the pipe size, a signal). */
static int reqlog_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

void reqlog_write(struct reqlog *l, json_t *body, const char *path, int status, const char *error)
{
    json_t *line = body != NULL ? json_incref(body) : json_object();
    if (line == NULL)
        return;
    json_object_set_new(line, "_path", json_string(path));
    json_object_set_new(line, "_status", json_integer(status));
    if (body == NULL && error != NULL)
        json_object_set_new(line, "_error", json_string(error));
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL) {
        note_error("request log: cannot render a line");
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL; the length says where it ends */
    pthread_mutex_lock(&l->mu);
    int err = reqlog_write_all(l->fd, text, len + 1) != 0 ? errno : 0;
    pthread_mutex_unlock(&l->mu);
    if (err != 0)
        note_error("request log: %s", strerror(err));
    free(text);
}
