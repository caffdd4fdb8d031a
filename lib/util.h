/*
 * util: the small helpers every layer needs, each written once: wiping
 * secrets, strict base64, scanning text for control bytes and checking
 * UTF-8, and the clock conversions the timers use.
 */
#ifndef POP3GW_UTIL_H
#define POP3GW_UTIL_H

#include <stddef.h>
#include <sys/time.h>
#include <time.h>

/* Overwrites n bytes with zeros in a way the compiler does not drop. */
void util_wipe(void *p, size_t n);

/* Wipes the NUL-terminated heap string *p, frees it and sets *p to NULL.
 * NULL is fine. */
void util_free_secret(char **p);

/*
 * Strict standard base64 (RFC 4648 section 4, '=' padding required); space,
 * tab, CR and LF anywhere in the input are skipped. Returns a malloc'd buffer
 * of *out_len bytes (plus a NUL not counted), or NULL when the input is not
 * base64 or memory runs out. Every temporary copy is wiped: the input may be
 * a password or a key.
 */
unsigned char *util_b64_decode(const char *in, size_t in_len, size_t *out_len);

/* True when one of the n bytes at s is a C0 control byte or DEL: such a
 * byte could split a reply line or a log line. */
int util_has_ctl(const char *s, size_t n);

/* Length of the valid UTF-8 sequence at s (at most n bytes): 1 to 4, or 0
 * when the bytes there are not UTF-8. */
size_t util_utf8_len(const char *s, size_t n);

/* True when s (len bytes) is valid UTF-8 (no overlongs, no surrogates, no
 * code point above U+10FFFF). NULL with len 0 is valid. */
int util_utf8_valid(const char *s, size_t len);

/* Seconds (decimals allowed, negative taken as 0) as a struct timeval. */
struct timeval util_tv(double seconds);

/* Milliseconds as a struct timeval. */
struct timeval util_tv_ms(long ms);

/* Adds ms milliseconds (0 or more) to ts, keeping tv_nsec below a second:
 * a deadline for pthread_cond_timedwait from clock_gettime's now. */
void util_ts_add_ms(struct timespec *ts, long ms);

/* The monotonic clock, in seconds. */
double util_mono(void);

/* The real-time clock, in milliseconds since the epoch. */
long long util_real_ms(void);

#endif
