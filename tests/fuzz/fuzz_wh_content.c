/*
 * fuzz_wh_content: the streaming decoder of a JSON retrieve reply
 * (webhook/wh_content.c), with jansson as the oracle through
 * wh_json_parse_content().
 *
 * Input: the reply body, as it is. It is fed whole, one byte at a time, and
 * in pieces of sizes drawn from a generator seeded with a hash of the input
 * (four such splits, one of them with pieces of at most 3 bytes, where a
 * cut falls inside escapes and UTF-8 sequences most often).
 *
 * Checks, for every split:
 * - when wh_json_parse_content() accepts the body, every feed and the
 *   finish return 0 and the bytes put out are exactly its result; when it
 *   refuses, a feed or the finish returns -1 (the skeleton limit cannot be
 *   reached: a body over WH_BODY_MAX is not tried);
 * - each call writes at most WH_CONTENT_OUT_MAX(n) bytes, into a buffer of
 *   exactly that size (AddressSanitizer sees any byte past it);
 * - -1 is sticky and puts out nothing; a reason is given;
 * - no byte comes out before wh_content_started(), which never goes back
 *   to false, and is true at the end of an accepted reply;
 * - wh_content_free() frees everything (LeakSanitizer).
 */
#include "fuzz.h"

#include "webhook/wh.h"
#include "webhook/wh_content.h"
#include "webhook/wh_json.h"

/* Feeds body in pieces (sizes from *seed when max_piece > 0, else whole),
 * appending what comes out to got. Returns 0 or -1, as the decoder said. */
static int run_split(const uint8_t *body, size_t len, size_t max_piece, uint32_t *seed,
                     uint8_t *got, size_t got_cap, size_t *got_len)
{
    struct wh_content d;
    size_t at = 0, n, out_len;
    int rc = 0, started = 0;
    char *out;

    wh_content_init(&d);
    *got_len = 0;
    while (at < len && rc == 0) {
        n = max_piece ? 1 + fuzz_rand(seed) % max_piece : len;
        if (n > len - at)
            n = len - at;
        /* An exact-size copy of the piece and an exact-size output buffer. */
        uint8_t *piece = fuzz_memdup(body + at, n);
        out = malloc(WH_CONTENT_OUT_MAX(n));
        FUZZ_CHECK(out != NULL);
        out_len = 12345;
        rc = wh_content_feed(&d, (const char *)piece, n, out, &out_len);
        FUZZ_CHECK(out_len <= WH_CONTENT_OUT_MAX(n));
        FUZZ_CHECK(rc == 0 || out_len == 0);
        FUZZ_CHECK(!started || wh_content_started(&d));
        started = wh_content_started(&d);
        FUZZ_CHECK(out_len == 0 || started);
        FUZZ_CHECK(out_len <= got_cap - *got_len);
        memcpy(got + *got_len, out, out_len);
        *got_len += out_len;
        free(out);
        free(piece);
        at += n;
    }
    if (rc == 0) {
        out = malloc(WH_CONTENT_OUT_MAX(0));
        FUZZ_CHECK(out != NULL);
        rc = wh_content_finish(&d, out, &out_len);
        FUZZ_CHECK(out_len <= WH_CONTENT_OUT_MAX(0) && out_len <= got_cap - *got_len);
        memcpy(got + *got_len, out, out_len);
        *got_len += out_len;
        free(out);
        if (rc == 0)
            FUZZ_CHECK(wh_content_started(&d));
    } else {
        /* Sticky: more input, or the end, changes nothing. */
        out_len = 1;
        FUZZ_CHECK(wh_content_feed(&d, "{", 1, (char[WH_CONTENT_OUT_MAX(1)]){0}, &out_len) < 0);
        FUZZ_CHECK(out_len == 0);
        FUZZ_CHECK(wh_content_finish(&d, (char[WH_CONTENT_OUT_MAX(0)]){0}, &out_len) < 0);
    }
    if (rc < 0)
        FUZZ_CHECK(strcmp(wh_content_error(&d), "no error") != 0);
    wh_content_free(&d);
    wh_content_free(&d);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t pieces[] = {0, 1, 3, 17, 200, 4096};
    const char *err;
    size_t want_len, got_len;
    uint32_t seed = 2166136261u;
    char *want;
    uint8_t *got;

    if (size > WH_BODY_MAX)
        return 0;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    want = wh_json_parse_content((const char *)data, size, &want_len, &err);
    FUZZ_CHECK((want == NULL) == (err != NULL));
    /* A decoded character or quad is never longer than its JSON text. */
    got = malloc(size + 1);
    FUZZ_CHECK(got != NULL);

    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        int rc = run_split(data, size, pieces[k], &seed, got, size, &got_len);
        if (want) {
            FUZZ_CHECK(rc == 0);
            FUZZ_CHECK(got_len == want_len);
            FUZZ_CHECK(memcmp(got, want, want_len) == 0);
        } else {
            FUZZ_CHECK(rc < 0);
        }
    }
    free(got);
    free(want);
    return 0;
}
