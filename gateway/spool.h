/*
 * spool: where the rest of a message waits for a slow client.
 *
 * An unlinked temporary file in spool_dir (O_TMPFILE, or mkstemp followed
 * at once by unlink where the filesystem lacks it), mode 0600: nothing is
 * left behind, whether the session ends, the client drops or the process is
 * killed. The connection appends the converted message to it at the
 * backend's speed, and hands it to the client's output as the client reads:
 * as file segments that the kernel sends with sendfile(2) on plain sockets,
 * or in small copies for TLS.
 *
 * Counted in the metrics: bytes spooled, spool files open, bytes on disk.
 */
#ifndef POP3GW_SPOOL_H
#define POP3GW_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

struct spool {
    int fd;          /* -1 when no file is open */
    uint64_t size;   /* bytes written to the file */
    uint64_t queued; /* bytes handed to the client's output */
};

/* How an append went. */
enum spool_rc {
    SPOOL_OK,
    SPOOL_MAX,     /* it would pass spool_max: nothing written */
    SPOOL_NOSPACE, /* the disk or the quota is full: nothing written (the file is cut back) */
    SPOOL_NOFILE, /* no file could be made (no descriptor, no directory, read-only): nothing written
                   */
    SPOOL_ERROR,  /* a write failed otherwise (I/O error) */
};

void spool_init(struct spool *sp);

/* Bytes written and not yet handed to the output. */
static inline uint64_t spool_pending(const struct spool *sp)
{
    return sp->size - sp->queued;
}

/*
 * Appends n bytes, opening the file in `dir` first if none is open. `max`
 * bounds the file's size. On anything but SPOOL_OK nothing was added (a
 * partial write is cut back), and errno says why.
 */
enum spool_rc spool_append(struct spool *sp, const char *dir, uint64_t max, const void *p,
                           size_t n);

/*
 * Hands up to `most` pending bytes to `out`: a file segment (sent with
 * sendfile, no copy in memory) when `segments` is true, else a copy read
 * from the file (also when no descriptor is left for a segment: then at
 * most 64 KB). Returns the bytes handed over, 0 when none is pending, -1
 * on a read or memory error.
 */
long spool_feed(struct spool *sp, struct evbuffer *out, size_t most, int segments);

/* Closes the file (its disk space is freed once the output has sent the
 * last segment). Safe when none is open. */
void spool_close(struct spool *sp);

/* Whether a spool file can be made in dir: 0, or -1 with errno set. Used at
 * start to say early when spooling will not work. */
int spool_probe(const char *dir);

/* The name of an append result, for the log. */
const char *spool_rc_name(enum spool_rc rc);

#endif
