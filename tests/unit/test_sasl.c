/*
 * Tests of the SASL decoder (gateway/sasl.c): each mechanism with and without
 * an initial response, the empty response "=", cancellation, malformed
 * input, and the OAuth error challenges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "gateway/sasl.h"

/* base64 of n raw bytes, into a static buffer. */
static const char *b64(const char *raw, size_t n)
{
    static char out[1024];

    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw, (int)n);
    return out;
}

static void test_mech_names(void **state)
{
    (void)state;
    assert_int_equal(sasl_mech_lookup("plain"), SASL_PLAIN);
    assert_int_equal(sasl_mech_lookup("LOGIN"), SASL_LOGIN);
    assert_int_equal(sasl_mech_lookup("xoauth2"), SASL_XOAUTH2);
    assert_int_equal(sasl_mech_lookup("OAuthBearer"), SASL_OAUTHBEARER);
    assert_int_equal(sasl_mech_lookup("CRAM-MD5"), -1);
    assert_int_equal(sasl_mech_lookup(""), -1);
    assert_true(sasl_mech_plaintext(SASL_PLAIN));
    assert_true(sasl_mech_plaintext(SASL_LOGIN));
    assert_false(sasl_mech_plaintext(SASL_XOAUTH2));
    assert_false(sasl_mech_plaintext(SASL_OAUTHBEARER));
    assert_string_equal(sasl_mech_name(SASL_OAUTHBEARER), "OAUTHBEARER");
    /* A mechanism is its login method; USER and APOP are methods, not mechanisms. */
    assert_int_equal(SASL_PLAIN, WH_METHOD_PLAIN);
    assert_int_equal(SASL_OAUTHBEARER, WH_METHOD_OAUTHBEARER);
    assert_int_equal(sasl_mech_lookup("USER"), -1);
    assert_int_equal(sasl_mech_lookup("apop"), -1);
    assert_string_equal(sasl_mech_name((enum sasl_mech)WH_METHOD_APOP), "");
    assert_int_equal(SASL_N_MECHS, 4);
    assert_int_equal(sasl_mechs[0], SASL_PLAIN);
    assert_int_equal(sasl_mechs[1], SASL_LOGIN);
    assert_int_equal(sasl_mechs[2], SASL_XOAUTH2);
    assert_int_equal(sasl_mechs[3], SASL_OAUTHBEARER);
}

static void test_plain_initial(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("\0alice\0pass word", 16), chal, sizeof chal),
                     SASL_DONE);
    assert_string_equal(s.user, "alice");
    assert_string_equal(s.password, "pass word");
    assert_null(s.authzid);
    sasl_clear(&s);
    assert_null(s.user);
    assert_null(s.password);
}

static void test_plain_authzid_and_continuation(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_PLAIN, NULL, chal, sizeof chal), SASL_CONTINUE);
    assert_string_equal(chal, ""); /* "+ " with an empty challenge */
    assert_int_equal(sasl_step(&s, b64("admin\0bob\0pw", 12), chal, sizeof chal), SASL_DONE);
    assert_string_equal(s.authzid, "admin");
    assert_string_equal(s.user, "bob");
    assert_string_equal(s.password, "pw");
    sasl_clear(&s);
}

static void test_plain_empty_password(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("\0bob\0", 5), chal, sizeof chal), SASL_DONE);
    assert_string_equal(s.password, "");
    sasl_clear(&s);
}

static void test_plain_malformed(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    /* no separators, one separator, three separators, empty user, "=" */
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("alicepw", 7), chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("alice\0pw", 8), chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("\0a\0b\0c", 6), chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, b64("\0\0pw", 4), chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, "=", chal, sizeof chal), SASL_BAD);
    assert_non_null(s.why);
    /* not base64 */
    assert_int_equal(sasl_start(&s, SASL_PLAIN, "!!!", chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, "AGFsaWNl=", chal, sizeof chal), SASL_BAD);
    sasl_clear(&s);
}

static void test_cancel(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_LOGIN, NULL, chal, sizeof chal), SASL_CONTINUE);
    assert_int_equal(sasl_step(&s, "*", chal, sizeof chal), SASL_CANCEL);
    sasl_clear(&s);
    assert_int_equal(sasl_start(&s, SASL_PLAIN, "*", chal, sizeof chal), SASL_CANCEL);
    sasl_clear(&s);
}

static void test_login(void **state)
{
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_LOGIN, NULL, chal, sizeof chal), SASL_CONTINUE);
    assert_string_equal(chal, "VXNlcm5hbWU6"); /* "Username:" */
    assert_int_equal(sasl_step(&s, b64("alice", 5), chal, sizeof chal), SASL_CONTINUE);
    assert_string_equal(chal, "UGFzc3dvcmQ6"); /* "Password:" */
    assert_int_equal(sasl_step(&s, b64("s3cret", 6), chal, sizeof chal), SASL_DONE);
    assert_string_equal(s.user, "alice");
    assert_string_equal(s.password, "s3cret");
    sasl_clear(&s);

    /* An initial response is the user name. */
    assert_int_equal(sasl_start(&s, SASL_LOGIN, b64("bob", 3), chal, sizeof chal), SASL_CONTINUE);
    assert_string_equal(chal, "UGFzc3dvcmQ6");
    assert_int_equal(sasl_step(&s, "=", chal, sizeof chal), SASL_DONE);
    assert_string_equal(s.password, "");
    sasl_clear(&s);

    /* An empty user name, a NUL inside. */
    assert_int_equal(sasl_start(&s, SASL_LOGIN, "=", chal, sizeof chal), SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_LOGIN, b64("a\0b", 3), chal, sizeof chal), SASL_BAD);
    sasl_clear(&s);
}

static void test_xoauth2(void **state)
{
    static const char good[] = "user=alice@example.org\001auth=Bearer ya29.tok\001\001";
    static const char no_token[] = "user=alice\001\001";
    static const char basic[] = "user=alice\001auth=Basic abc\001\001";
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(sasl_start(&s, SASL_XOAUTH2, b64(good, sizeof good - 1), chal, sizeof chal),
                     SASL_DONE);
    assert_string_equal(s.user, "alice@example.org");
    assert_string_equal(s.token, "ya29.tok");
    sasl_clear(&s);
    assert_int_equal(sasl_start(&s, SASL_XOAUTH2, NULL, chal, sizeof chal), SASL_CONTINUE);
    assert_int_equal(sasl_step(&s, b64(good, sizeof good - 1), chal, sizeof chal), SASL_DONE);
    sasl_clear(&s);
    assert_int_equal(
        sasl_start(&s, SASL_XOAUTH2, b64(no_token, sizeof no_token - 1), chal, sizeof chal),
        SASL_BAD);
    assert_int_equal(sasl_start(&s, SASL_XOAUTH2, b64(basic, sizeof basic - 1), chal, sizeof chal),
                     SASL_BAD);
    sasl_clear(&s);
}

static void test_oauthbearer(void **state)
{
    static const char good[] = "n,a=user@example.com,\001host=server.example.com\001port=143\001"
                               "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\001\001";
    static const char noname[] = "n,,\001auth=Bearer tok\001\001";
    static const char escaped[] = "n,a=we=2Cird=3Dname,\001auth=Bearer t\001\001";
    static const char cbind[] = "p=tls-unique,,\001auth=Bearer t\001\001";
    static const char badesc[] = "n,a=x=41,\001auth=Bearer t\001\001";
    struct sasl s = {0};
    char chal[64];

    (void)state;
    assert_int_equal(
        sasl_start(&s, SASL_OAUTHBEARER, b64(good, sizeof good - 1), chal, sizeof chal), SASL_DONE);
    assert_string_equal(s.user, "user@example.com");
    assert_string_equal(s.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
    sasl_clear(&s);
    assert_int_equal(
        sasl_start(&s, SASL_OAUTHBEARER, b64(noname, sizeof noname - 1), chal, sizeof chal),
        SASL_DONE);
    assert_null(s.user);
    assert_string_equal(s.token, "tok");
    sasl_clear(&s);
    assert_int_equal(
        sasl_start(&s, SASL_OAUTHBEARER, b64(escaped, sizeof escaped - 1), chal, sizeof chal),
        SASL_DONE);
    assert_string_equal(s.user, "we,ird=name");
    sasl_clear(&s);
    assert_int_equal(
        sasl_start(&s, SASL_OAUTHBEARER, b64(cbind, sizeof cbind - 1), chal, sizeof chal),
        SASL_BAD);
    assert_int_equal(
        sasl_start(&s, SASL_OAUTHBEARER, b64(badesc, sizeof badesc - 1), chal, sizeof chal),
        SASL_BAD);
    sasl_clear(&s);
}

static void test_oauth_error_challenges(void **state)
{
    unsigned char out[128];
    int n;

    (void)state;
    n = EVP_DecodeBlock(out, (const unsigned char *)sasl_oauth_error_challenge(SASL_XOAUTH2),
                        (int)strlen(sasl_oauth_error_challenge(SASL_XOAUTH2)));
    assert_true(n > 0);
    assert_non_null(strstr((char *)out, "\"status\":\"401\""));
    n = EVP_DecodeBlock(out, (const unsigned char *)sasl_oauth_error_challenge(SASL_OAUTHBEARER),
                        (int)strlen(sasl_oauth_error_challenge(SASL_OAUTHBEARER)));
    assert_true(n > 0);
    assert_non_null(strstr((char *)out, "\"status\":\"invalid_token\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mech_names),
        cmocka_unit_test(test_plain_initial),
        cmocka_unit_test(test_plain_authzid_and_continuation),
        cmocka_unit_test(test_plain_empty_password),
        cmocka_unit_test(test_plain_malformed),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_login),
        cmocka_unit_test(test_xoauth2),
        cmocka_unit_test(test_oauthbearer),
        cmocka_unit_test(test_oauth_error_challenges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
