/*
 * note: one-line log messages on stderr for the maildir backend (see note.h).
 */
#include "backends/maildir/note.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#define NOTE_MAX 1024

static atomic_int note_quiet;

void note_set_quiet(int quiet)
{
    atomic_store(&note_quiet, quiet);
}

/* Formats "pop3gw-maildir: MESSAGE\n" and writes it at once, cut if too long. */
static void note_write(const char *fmt, va_list ap)
{
    char line[NOTE_MAX];
    int n = snprintf(line, sizeof line, "pop3gw-maildir: ");
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere to report a failing stderr */
}

void note_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note_write(fmt, ap);
    va_end(ap);
}

void note_info(const char *fmt, ...)
{
    if (atomic_load(&note_quiet))
        return;
    va_list ap;
    va_start(ap, fmt);
    note_write(fmt, ap);
    va_end(ap);
}
