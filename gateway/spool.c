/*
 * spool: a slow client's message in an unlinked temporary file (spool.h).
 */
#include "gateway/spool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/metrics.h"

#define SPOOL_COPY_MAX (64 * 1024) /* bytes copied at a time when no segment can be made */

void spool_init(struct spool *sp)
{
    sp->fd = -1;
    sp->size = sp->queued = 0;
}

/* An unlinked file in dir, mode 0600, or -1 with errno set. */
static int spool_make(const char *dir)
{
    char path[4096];
    int fd, e;

#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    /* EISDIR, EOPNOTSUPP, EINVAL: the filesystem has no O_TMPFILE (older
     * overlayfs); make a named file and unlink it at once. Other errors
     * (EMFILE, ENOENT, EACCES, EROFS) would fail the same way below. */
    if (errno != EISDIR && errno != EOPNOTSUPP && errno != EINVAL)
        return -1;
#endif
    if ((size_t)snprintf(path, sizeof(path), "%s/pop3gw-spool-XXXXXX", dir) >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (unlink(path) < 0 || fchmod(fd, 0600) < 0) {
        e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    return fd;
}

int spool_probe(const char *dir)
{
    int fd = spool_make(dir);

    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

enum spool_rc spool_append(struct spool *sp, const char *dir, uint64_t max, const void *p, size_t n)
{
    const char *s = p;
    size_t done = 0;
    ssize_t k;

    if (sp->size + n > max)
        return SPOOL_MAX;
    if (sp->fd < 0) {
        if ((sp->fd = spool_make(dir)) < 0)
            return SPOOL_NOFILE;
        sp->size = sp->queued = 0;
        METRIC_INC(spool_files);
    }
    while (done < n) {
        k = pwrite(sp->fd, s + done, n - done, (off_t)(sp->size + done));
        if (k > 0) {
            done += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0)
            errno = ENOSPC;
        {
            int e = errno;
            /* Cut back what went in, so the file holds whole chunks only. */
            if (done && ftruncate(sp->fd, (off_t)sp->size) < 0) {
                /* the next write goes to the same offset either way */
            }
            errno = e;
            return e == ENOSPC || e == EDQUOT || e == EFBIG ? SPOOL_NOSPACE : SPOOL_ERROR;
        }
    }
    sp->size += n;
    METRIC_ADD(spool_bytes_total, n);
    METRIC_ADD(spool_bytes, (long)n);
    return SPOOL_OK;
}

long spool_feed(struct spool *sp, struct evbuffer *out, size_t most, int segments)
{
    uint64_t left = spool_pending(sp);
    size_t n = left < most ? (size_t)left : most;
    struct evbuffer_iovec v;
    ssize_t k;
    int fd;

    if (n == 0 || sp->fd < 0)
        return 0;
    /* The segment owns a duplicate of the descriptor, so the spool may
     * close its own while the segment waits in the output. With no
     * descriptor to spare (EMFILE), a copy goes instead. */
    fd = segments ? fcntl(sp->fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd >= 0) {
        struct evbuffer_file_segment *seg;

        seg = evbuffer_file_segment_new(fd, (ev_off_t)sp->queued, (ev_off_t)n,
                                        EVBUF_FS_CLOSE_ON_FREE | EVBUF_FS_DISABLE_LOCKING);
        if (!seg) {
            close(fd);
            return -1;
        }
        k = evbuffer_add_file_segment(out, seg, 0, (ev_off_t)n) == 0 ? (ssize_t)n : -1;
        evbuffer_file_segment_free(seg); /* the output holds its own reference */
        if (k < 0)
            return -1;
    } else {
        if (segments && n > SPOOL_COPY_MAX)
            n = SPOOL_COPY_MAX; /* `most` was sized for segments */
        if (evbuffer_reserve_space(out, (ev_ssize_t)n, &v, 1) < 1)
            return -1;
        do
            k = pread(sp->fd, v.iov_base, n, (off_t)sp->queued);
        while (k < 0 && errno == EINTR);
        if (k <= 0)
            return -1;
        v.iov_len = (size_t)k;
        evbuffer_commit_space(out, &v, 1);
    }
    sp->queued += (uint64_t)k;
    return (long)k;
}

void spool_close(struct spool *sp)
{
    if (sp->fd < 0)
        return;
    close(sp->fd);
    METRIC_DEC(spool_files);
    METRIC_ADD(spool_bytes, -(long)sp->size);
    spool_init(sp);
}

const char *spool_rc_name(enum spool_rc rc)
{
    static const char *const names[] = {"ok", "spool_max", "disk_full", "no_file", "write_error"};

    return (unsigned)rc < sizeof(names) / sizeof(names[0]) ? names[rc] : "unknown";
}
