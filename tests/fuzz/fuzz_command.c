/*
 * fuzz_command: the POP3 command parser and dispatcher (gateway/pop3.c) in
 * every state it can meet a line in.
 *
 * Input: client bytes, typically one or a few command lines, as a client
 * sends them (no header: a plain "RETR 1\r\n" is a seed). For each input, six
 * sessions are first brought into a state by a fixed script with fixed
 * backend answers, then get the whole input at once; every further backend
 * call gets the first canned answer. The states:
 *   0 AUTHORIZATION, plaintext allowed, APOP and STLS offered
 *   1 AUTHORIZATION, plaintext refused (no TLS, not loopback), no APOP
 *   2 TRANSACTION, a listing with uids
 *   3 TRANSACTION, a listing without uids, message 1 deleted, strict limits
 *   4 inside AUTH LOGIN, the user name prompt sent
 *   5 after a refused XOAUTH2 token, the error challenge sent
 * The invariants are those of pop3_drive.h.
 */
#include "pop3_drive.h"

struct setup {
    uint8_t flags;
    const char *script;
    uint8_t answers[2];
};

static const struct setup setups[] = {
    {DF_PLAINTEXT | DF_APOP | DF_STLS, "", {0, 0}},
    {0, "", {0, 0}},
    {DF_PLAINTEXT, "USER alice\r\nPASS secret\r\n", {0, 1}},
    {DF_PLAINTEXT | DF_STRICT | DF_JSON_LOG, "USER bob\r\nPASS secret\r\nDELE 1\r\n", {1, 0}},
    {DF_TLS, "AUTH LOGIN\r\n", {0, 0}},
    {DF_TLS, "AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2szbgEB\r\n", {3, 0}},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t i;

    for (i = 0; i < sizeof(setups) / sizeof(setups[0]); i++) {
        const struct setup *t = &setups[i];
        struct drive d;

        drive_init(&d, t->flags, t->answers, sizeof(t->answers));
        drive_run(&d, (const uint8_t *)t->script, strlen(t->script), 0);
        d.ctl_i = d.ctl_n; /* from here on: the first answer to everything */
        drive_run(&d, data, size, 0);
        drive_end(&d, 0);
    }
    return 0;
}
