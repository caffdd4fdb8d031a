/*
 * fuzz: what every fuzz target shares.
 *
 * Each tests/fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput(). Built with
 * clang -fsanitize=fuzzer it is a libFuzzer binary (`make fuzz`); linked with
 * tests/fuzz/replay.c by the normal compiler it replays a corpus as an
 * ordinary regression test (`make fuzz-replay`, part of `make test`).
 *
 * A target checks its own invariants with FUZZ_CHECK(): a broken invariant
 * prints what broke and aborts, which both libFuzzer and the replay report
 * as a failure.
 */
#ifndef POP3GW_FUZZ_H
#define POP3GW_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond);                                                  \
    } while (0)

/* With sanitizers: prints on the report fd, which libFuzzer keeps when
 * -close_fd_mask=2 sends fd 2 to /dev/null. */
void __sanitizer_report_error_summary(const char *error_summary) __attribute__((weak));

__attribute__((noreturn)) static inline void fuzz_fail(const char *file, int line, const char *what)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "fuzz invariant failed: %s:%d: %s", file, line, what);
    if (__sanitizer_report_error_summary)
        __sanitizer_report_error_summary(msg);
    else
        fprintf(stderr, "%s\n", msg);
    abort();
}

/*
 * Logging: quiet (errors only) unless FUZZ_LOG is set in the environment;
 * then at debug level, so the log formatting of hostile strings is fuzzed
 * too. `make fuzz` sets FUZZ_LOG=1 and runs libFuzzer with -close_fd_mask=2,
 * which sends the log lines (fd 2) to /dev/null but keeps the sanitizer
 * reports. `json` picks the format.
 */
static inline void fuzz_log(int json)
{
    static int verbose = -1;

    if (verbose < 0)
        verbose = getenv("FUZZ_LOG") != NULL;
    log_init(json, verbose ? LOG_DEBUG : LOG_ERROR);
}

/* A NUL-terminated copy of n bytes, in its own exact-size allocation so
 * that AddressSanitizer sees any read past it. */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);

    if (!s)
        abort();
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* An exact-size copy of n bytes (never NULL, even for n = 0). */
static inline uint8_t *fuzz_memdup(const uint8_t *p, size_t n)
{
    uint8_t *s = malloc(n ? n : 1);

    if (!s)
        abort();
    if (n)
        memcpy(s, p, n);
    return s;
}

/* A small deterministic generator for choices a target makes itself. */
static inline uint32_t fuzz_rand(uint32_t *state)
{
    uint32_t x = *state ? *state : 0x9e3779b9u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

#endif
