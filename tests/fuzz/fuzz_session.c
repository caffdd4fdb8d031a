/*
 * fuzz_session: the whole sans-I/O POP3 session (gateway/pop3.c) fed an
 * arbitrary client byte stream, with the backend's answers chosen by the
 * input too. See pop3_drive.h for the fake shell and the invariants.
 *
 * Input: byte 0 is the session's settings (DF_* flags: APOP, plaintext
 * allowed, STLS, implicit TLS, loopback client, connect event, JSON logs,
 * strict limits); byte 1 is L, the number of control bytes that follow
 * (chunk sizes, which canned backend reply each call gets, how a RETR body
 * streams or breaks, how the session ends); after them comes the client's
 * byte stream, to the end of the input. With L = 0 every
 * chunk is "all the rest" and every call gets its first, successful reply,
 * so a plain POP3 transcript after the two bytes "\x02\x00" is a useful seed.
 */
#include "pop3_drive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct drive d;
    size_t l;

    if (size < 2)
        return 0;
    l = data[1];
    if (l > size - 2)
        l = size - 2;
    drive_init(&d, data[0], data + 2, l);
    drive_run(&d, data + 2 + l, size - 2 - l, 1);
    drive_end(&d, drive_choice(&d));
    return 0;
}
