/*
 * note: the maildir backend's log lines. Each is one line on stderr, prefixed
 * with the program name and written with a single write(2) so lines from the
 * server's threads never interleave. Errors always show; informational lines
 * (one per deleted message) are silenced by --quiet.
 */
#ifndef MAILDIR_NOTE_H
#define MAILDIR_NOTE_H

void note_set_quiet(int quiet);
void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
