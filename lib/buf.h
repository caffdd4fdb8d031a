/*
 * buf: a small growable byte buffer, used for session output.
 */
#ifndef POP3GW_BUF_H
#define POP3GW_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* heap, NULL until first use */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

/* Appends; returns 0 or -1 when memory runs out (the buffer is unchanged). */
int buf_add(struct buf *b, const void *p, size_t n);
/* Makes room for n more bytes after len: 0, or -1 when memory runs out. */
int buf_reserve(struct buf *b, size_t n);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b); /* empties, keeps memory */
void buf_free(struct buf *b);  /* releases memory */

#endif
