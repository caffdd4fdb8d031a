/*
 * Unit tests for webhook/wh_sign: Standard Webhooks signatures (base64
 * itself: test_util.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webhook/wh_sign.h"

#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330LL
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* Bytes 0..31 and 0..63 as secrets, and their signatures (computed with
 * Python's hmac module). */
#define KEY32 "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY32_SIG "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI="
#define KEY64                                                                                      \
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"   \
    "Pw=="
#define KEY64_SIG_ID_0_EMPTY "v1,PSHGSIM6pIGpEv7PKHM/q5LNUyVh8n6DK/Ou59KIIok="
#define KEY65                                                                                      \
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+"   \
    "P0A="

static void test_vector(void **state)
{
    (void)state;
    struct wh_keys k;
    assert_int_equal(wh_keys_parse(&k, VEC_SECRET), 0);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.key_len[0], 24);

    char out[256];
    int n = wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out));
    assert_int_equal(n, (int)strlen(VEC_SIG));
    assert_string_equal(out, VEC_SIG);
    assert_int_equal((size_t)n, WH_SIGN_LEN(1));

    /* One byte of the body more or less changes it. */
    n = wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY) - 1, out, sizeof(out));
    assert_true(n > 0);
    assert_string_not_equal(out, VEC_SIG);
    n = wh_sign(&k, VEC_ID, VEC_TS + 1, VEC_BODY, strlen(VEC_BODY), out, sizeof(out));
    assert_true(n > 0);
    assert_string_not_equal(out, VEC_SIG);
    wh_keys_clear(&k);
}

static void test_two_keys(void **state)
{
    (void)state;
    struct wh_keys k;
    assert_int_equal(wh_keys_parse(&k, "  " VEC_SECRET "   " KEY32 "\n"), 0);
    assert_int_equal(k.n, 2);
    assert_int_equal(k.key_len[1], 32);

    char out[256];
    int n = wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out));
    assert_string_equal(out, VEC_SIG " " KEY32_SIG);
    assert_int_equal(n, (int)strlen(out));
    assert_int_equal((size_t)n, WH_SIGN_LEN(2));

    /* Order follows the configuration. */
    assert_int_equal(wh_keys_parse(&k, KEY32 " " VEC_SECRET), 0);
    n = wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out));
    assert_string_equal(out, KEY32_SIG " " VEC_SIG);
    wh_keys_clear(&k);
}

static void test_out_size(void **state)
{
    (void)state;
    struct wh_keys k;
    assert_int_equal(wh_keys_parse(&k, VEC_SECRET " " KEY32), 0);
    char out[WH_SIGN_LEN(2) + 1];
    assert_int_equal(wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out)),
                     (int)WH_SIGN_LEN(2));
    assert_int_equal(wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out) - 1),
                     -1);
    assert_int_equal(wh_sign(&k, NULL, VEC_TS, VEC_BODY, strlen(VEC_BODY), out, sizeof(out)), -1);

    /* No keys: an empty value. */
    wh_keys_clear(&k);
    char one[1] = {'x'};
    assert_int_equal(wh_sign(&k, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), one, 1), 0);
    assert_int_equal(one[0], '\0');
}

static void test_key_sizes(void **state)
{
    (void)state;
    struct wh_keys k;
    char out[256];
    assert_int_equal(wh_keys_parse(&k, KEY64), 0);
    assert_int_equal(k.key_len[0], 64);
    assert_int_equal(wh_sign(&k, "id", 0, NULL, 0, out, sizeof(out)),
                     (int)strlen(KEY64_SIG_ID_0_EMPTY));
    assert_string_equal(out, KEY64_SIG_ID_0_EMPTY);
    assert_int_equal(wh_keys_parse(&k, KEY65), -1);
    assert_int_equal(k.n, 0);
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",                  /* no prefix */
        "whsec_",                                            /* no key */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",             /* 31 characters */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w",            /* not base64 */
        "whsec_MfKQ9r8GKYqrTwjU=D8ILPZIo2LaLaSw",            /* '=' inside */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", /* padding missing */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        " whsec_===",                             /* second bad */
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", /* prefix is case-sensitive */
        "whsec_MfKQ9r8G-KqrTwjUPD8ILPZIo2LaLa_w", /* base64url */
        "whsec_====",
        VEC_SECRET " " VEC_SECRET " " VEC_SECRET " " VEC_SECRET " " VEC_SECRET, /* 5 keys */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct wh_keys k;
        memset(&k, 0xA5, sizeof(k));
        if (wh_keys_parse(&k, bad[i]) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(k.n, 0);
        assert_int_equal(k.key_len[0], 0);
    }

    struct wh_keys k;
    assert_int_equal(wh_keys_parse(&k, VEC_SECRET " " VEC_SECRET " " VEC_SECRET " " VEC_SECRET), 0);
    assert_int_equal(k.n, WH_SIGN_KEYS_MAX);
    assert_int_equal(wh_keys_parse(&k, ""), 0);
    assert_int_equal(k.n, 0);
    assert_int_equal(wh_keys_parse(&k, " \t "), 0);
    assert_int_equal(k.n, 0);
    assert_int_equal(wh_keys_parse(&k, NULL), 0);
    assert_int_equal(k.n, 0);
}

static void test_clear(void **state)
{
    (void)state;
    struct wh_keys k;
    assert_int_equal(wh_keys_parse(&k, KEY64), 0);
    wh_keys_clear(&k);
    static const struct wh_keys zero;
    assert_memory_equal(&k, &zero, sizeof(k));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector),    cmocka_unit_test(test_two_keys),
        cmocka_unit_test(test_out_size),  cmocka_unit_test(test_key_sizes),
        cmocka_unit_test(test_malformed), cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
