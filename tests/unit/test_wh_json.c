/*
 * Unit tests for webhook/wh_json: request bodies for every event, reply
 * parsing against the contract, retrieve content, message sanitising and
 * uid checks (UTF-8 itself: test_util.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "webhook/wh_json.h"

/* ------------------------------------------------------------ building */

static struct wh_call base_call(enum wh_event ev)
{
    struct wh_call c;
    memset(&c, 0, sizeof(c));
    c.event = ev;
    c.session = "s-7f3a";
    c.client_ip = "203.0.113.7";
    c.client_port = 51522;
    c.client_tls = 1;
    c.user = "alice";
    c.lines = -1;
    return c;
}

#define HEAD(ev, user)                                                                             \
    "{\"event\":\"" ev "\",\"session\":\"s-7f3a\",\"client\":{\"ip\":\"203.0.113.7\","             \
    "\"port\":51522,\"tls\":true},\"user\":" user

static void expect_build(const struct wh_call *c, const char *want)
{
    size_t len = 12345;
    char *got = wh_json_build(c, &len);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
}

static void test_build_authenticate(void **state)
{
    (void)state;
    struct wh_call c = base_call(WH_AUTHENTICATE);
    c.method = "USER";
    c.password = "s3cret";
    c.attempt = 1;
    expect_build(&c, HEAD("authenticate", "\"alice\"") ",\"method\":\"USER\","
                                                       "\"password\":\"s3cret\",\"attempt\":1}");

    c = base_call(WH_AUTHENTICATE);
    c.method = "APOP";
    c.apop_timestamp = "<1896.697170952@dbc.mtview.ca.us>";
    c.apop_digest = "c4c9334bac560ecc979e58001b3e22fb";
    c.attempt = 2;
    expect_build(&c, HEAD("authenticate", "\"alice\"") ",\"method\":\"APOP\",\"apop\":"
                                                       "{\"timestamp\":\"<1896.697170952@dbc."
                                                       "mtview.ca.us>\",\"digest\":"
                                                       "\"c4c9334bac560ecc979e58001b3e22fb\"},"
                                                       "\"attempt\":2}");

    /* PLAIN with authzid, after UTF8: text stays UTF-8, not \u escapes. */
    c = base_call(WH_AUTHENTICATE);
    c.user = "j\xc3\xb6rg";
    c.method = "PLAIN";
    c.password = "p\"w\\/\x01";
    c.authzid = "admin";
    c.utf8 = 1;
    c.attempt = 3;
    expect_build(&c,
                 HEAD("authenticate", "\"j\xc3\xb6rg\"") ",\"utf8\":true,\"method\":\"PLAIN\","
                                                         "\"password\":\"p\\\"w\\\\/\\u0001\","
                                                         "\"authzid\":\"admin\",\"attempt\":3}");

    /* OAUTHBEARER without a= name: user null. */
    c = base_call(WH_AUTHENTICATE);
    c.user = NULL;
    c.client_tls = 0;
    c.method = "OAUTHBEARER";
    c.token = "ya29.tok";
    c.attempt = 1;
    expect_build(&c, "{\"event\":\"authenticate\",\"session\":\"s-7f3a\",\"client\":{\"ip\":"
                     "\"203.0.113.7\",\"port\":51522,\"tls\":false},\"user\":null,"
                     "\"method\":\"OAUTHBEARER\",\"token\":\"ya29.tok\",\"attempt\":1}");

    /* Invalid input: no method, a password that is not UTF-8. */
    c = base_call(WH_AUTHENTICATE);
    assert_null(wh_json_build(&c, NULL));
    c.method = "USER";
    c.password = "\xff";
    assert_null(wh_json_build(&c, NULL));
    c.password = "ok";
    c.method = "APOP";
    assert_null(wh_json_build(&c, NULL)); /* APOP without timestamp */
}

static void test_build_list_uidl_connect(void **state)
{
    (void)state;
    struct wh_call c = base_call(WH_LIST);
    c.mailbox = "{\"id\":42,\"tags\":[\"a\",\"b\"],\"x\":null,\"f\":1.5,\"s\":\"\xc3\xa9\"}";
    expect_build(&c, HEAD("list", "\"alice\"") ",\"mailbox\":{\"id\":42,\"tags\":[\"a\",\"b\"],"
                                               "\"x\":null,\"f\":1.5,\"s\":\"\xc3\xa9\"}}");

    c = base_call(WH_UIDL);
    c.mailbox = "\"box-7\"";
    c.utf8 = 1;
    expect_build(&c, HEAD("uidl", "\"alice\"") ",\"mailbox\":\"box-7\",\"utf8\":true}");

    c = base_call(WH_UIDL);
    c.mailbox = "17";
    expect_build(&c, HEAD("uidl", "\"alice\"") ",\"mailbox\":17}");

    c = base_call(WH_CONNECT);
    c.user = NULL;
    c.client_ip = "2001:db8::1";
    c.client_port = 110;
    c.client_tls = 0;
    expect_build(&c, "{\"event\":\"connect\",\"session\":\"s-7f3a\",\"client\":{\"ip\":"
                     "\"2001:db8::1\",\"port\":110,\"tls\":false},\"user\":null}");

    /* An empty mailbox (the parser never makes one), no session, no client
     * address. A mailbox is otherwise copied as it is: it comes from
     * wh_json_parse(), already serialised JSON. */
    c = base_call(WH_LIST);
    c.mailbox = "";
    assert_null(wh_json_build(&c, NULL));
    c = base_call(WH_LIST);
    c.session = NULL;
    assert_null(wh_json_build(&c, NULL));
    c = base_call(WH_LIST);
    c.client_ip = NULL;
    assert_null(wh_json_build(&c, NULL));
    c = base_call(WH_LIST);
    c.event = WH_N_EVENTS;
    assert_null(wh_json_build(&c, NULL));
}

static void test_build_retrieve(void **state)
{
    (void)state;
    struct wh_call c = base_call(WH_RETRIEVE);
    c.message = 3;
    c.uid = "u-3";
    expect_build(&c, HEAD("retrieve", "\"alice\"") ",\"message\":3,\"uid\":\"u-3\"}");

    c.uid = NULL;
    c.lines = 0;
    expect_build(&c, HEAD("retrieve", "\"alice\"") ",\"message\":3,\"lines\":0}");

    c.message = 4294967295u;
    c.lines = 25;
    c.uid = "z";
    c.mailbox = "[1,2]";
    expect_build(&c, HEAD("retrieve", "\"alice\"") ",\"mailbox\":[1,2],\"message\":4294967295,"
                                                   "\"uid\":\"z\",\"lines\":25}");
}

static void test_build_quit_disconnect(void **state)
{
    (void)state;
    struct wh_call c = base_call(WH_QUIT);
    expect_build(&c, HEAD("quit", "\"alice\"") ",\"deleted\":[]}");

    struct wh_deleted del[] = {{2, "u-2"}, {5, NULL}, {7, "u-7"}};
    c.deleted = del;
    c.n_deleted = 3;
    expect_build(&c, HEAD("quit", "\"alice\"") ",\"deleted\":[{\"message\":2,\"uid\":\"u-2\"},"
                                               "{\"message\":5},{\"message\":7,\"uid\":\"u-7\"}]}");

    c.deleted = NULL;
    assert_null(wh_json_build(&c, NULL));

    c = base_call(WH_DISCONNECT);
    c.reason = "client_closed";
    c.mailbox = "{\"k\":\"v\"}";
    expect_build(&c, HEAD("disconnect", "\"alice\"") ",\"mailbox\":{\"k\":\"v\"},"
                                                     "\"reason\":\"client_closed\"}");
    c.reason = NULL;
    assert_null(wh_json_build(&c, NULL));
}

/* The mailbox an authenticate reply returns goes out as it came. */
static void test_mailbox_round_trip(void **state)
{
    (void)state;
    static const char *const boxes[] = {
        "{\"id\":42,\"path\":\"/var/mail/a\",\"n\":[1,2,{\"z\":true}]}",
        "\"just a string\"",
        "null",
        "[]",
        "{\"f\":0.5,\"e\":\"\xe2\x82\xac\"}",
    };
    for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
        char body[512];
        snprintf(body, sizeof(body), "{\"ok\": true, \"user\": \"bob\", \"mailbox\": %s}",
                 boxes[i]);
        struct wh_result r;
        assert_int_equal(
            wh_json_parse(WH_AUTHENTICATE, 200, "application/json", body, strlen(body), 0, &r),
            WH_OK);
        assert_string_equal(r.mailbox, boxes[i]);
        assert_string_equal(r.user, "bob");

        struct wh_call c = base_call(WH_LIST);
        c.user = r.user;
        c.mailbox = r.mailbox;
        char want[512];
        snprintf(want, sizeof(want), HEAD("list", "\"bob\"") ",\"mailbox\":%s}", boxes[i]);
        expect_build(&c, want);
        wh_result_free(&r);
    }
}

static void test_event_names(void **state)
{
    (void)state;
    assert_string_equal(wh_event_names[WH_AUTHENTICATE], "authenticate");
    assert_string_equal(wh_event_names[WH_LIST], "list");
    assert_string_equal(wh_event_names[WH_UIDL], "uidl");
    assert_string_equal(wh_event_names[WH_RETRIEVE], "retrieve");
    assert_string_equal(wh_event_names[WH_QUIT], "quit");
    assert_string_equal(wh_event_names[WH_CONNECT], "connect");
    assert_string_equal(wh_event_names[WH_DISCONNECT], "disconnect");
}

/* ------------------------------------------------------------- parsing */

#define ANY_CODE (-1)
#define NO_TEXT "\x01" /* the field must be NULL */

struct parse_case {
    const char *name;
    enum wh_event event;
    long status;
    const char *body; /* NULL: no body */
    enum wh_status want;
    int code;            /* REFUSED: expected code, or ANY_CODE */
    const char *message; /* NULL: not checked; NO_TEXT: must be NULL */
    const char *user;    /* same */
    const char *mailbox; /* same */
    const char *error;   /* TEMP: a substring of r.error, or NULL */
    int check_list;      /* OK listing: n_msgs, has_uids, truncated_from */
    long n_msgs;
    int has_uids;
    size_t max_messages; /* 0 = no cap */
    size_t truncated_from;
};

#define OK_(ev, st, b) .event = ev, .status = st, .body = b, .want = WH_OK, .code = ANY_CODE
#define TEMP_(ev, st, b, err)                                                                      \
    .event = ev, .status = st, .body = b, .want = WH_TEMP, .code = ANY_CODE, .error = err
#define REF_(ev, st, b, c, msg)                                                                    \
    .event = ev, .status = st, .body = b, .want = WH_REFUSED, .code = c, .message = msg

static const struct parse_case cases[] = {
    /* authenticate */
    {"auth ok", OK_(WH_AUTHENTICATE, 200, "{\"ok\":true}"), .user = NO_TEXT, .mailbox = NO_TEXT},
    {"auth ok user mailbox",
     OK_(WH_AUTHENTICATE, 200,
         "{ \"ok\" : true, \"user\": \"Alice@Example.com\", \"mailbox\": {\"id\": 42, \"p\": "
         "\"/m\"}, \"extra\": [1] }"),
     .user = "Alice@Example.com", .mailbox = "{\"id\":42,\"p\":\"/m\"}"},
    {"auth ok user null", OK_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":null}"),
     .user = NO_TEXT},
    {"auth ok utf8 user", OK_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"j\\u00f6rg\"}"),
     .user = "j\xc3\xb6rg"},
    {"auth ok empty user", TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"\"}", "user")},
    {"auth ok user not string", TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":5}", "user")},
    {"auth ok user crlf",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"bob\\r\\n+OK hi\"}", "control")},
    {"auth ok user del",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"bob\\u007f\"}", "control")},
    {"auth ok user nul",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"a\\u0000b\"}", "invalid JSON")},
    {"auth ok lone surrogate",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"\\ud800\"}", "invalid JSON")},
    {"auth ok raw invalid utf8",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"user\":\"\xc0\xaf\"}", "invalid JSON")},
    {"auth refused", REF_(WH_AUTHENTICATE, 200, "{\"ok\":false}", WH_CODE_AUTH, NO_TEXT)},
    {"auth refused null code",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":null,\"message\":null}", WH_CODE_AUTH,
          NO_TEXT)},
    {"auth in-use",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":\"IN-USE\",\"message\":\"mailbox locked\"}",
          WH_CODE_IN_USE, "mailbox locked")},
    {"auth login-delay", REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":\"LOGIN-DELAY\"}",
                              WH_CODE_LOGIN_DELAY, NO_TEXT)},
    {"auth sys/temp",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":\"SYS/TEMP\"}", WH_CODE_SYS_TEMP, NO_TEXT)},
    {"auth sys/perm",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":\"SYS/PERM\",\"message\":\"disabled\"}",
          WH_CODE_SYS_PERM, "disabled")},
    {"auth unknown code",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":\"in-use\"}", WH_CODE_AUTH, NO_TEXT)},
    {"auth code not string",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"code\":3}", "code is not a string")},
    {"auth message not string",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"message\":[]}", "message")},
    {"auth message crlf",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"message\":\"bad\\r\\n+OK forged\"}", WH_CODE_AUTH,
          "bad+OK forged")},
    {"auth message forged code",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"message\":\"[AUTH] forged\"}", WH_CODE_AUTH,
          "forged")},
    {"auth message forged codes",
     REF_(WH_AUTHENTICATE, 200,
          "{\"ok\":false,\"message\":\" [SYS/PERM][IN-USE]\\t \\u0007no \\u00e9way \"}",
          WH_CODE_AUTH, "no way")},
    {"auth message blank",
     REF_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"message\":\" \\r\\n\"}", WH_CODE_AUTH, NO_TEXT)},
    {"auth ok not boolean", TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":\"true\"}", "ok")},
    {"auth ok missing", TEMP_(WH_AUTHENTICATE, 200, "{\"user\":\"a\"}", "ok")},
    {"auth duplicate ok",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":false,\"ok\":true}", "invalid JSON")},
    {"auth array", TEMP_(WH_AUTHENTICATE, 200, "[{\"ok\":true}]", "not a JSON object")},
    {"auth scalar", TEMP_(WH_AUTHENTICATE, 200, "true", "not a JSON object")},
    {"auth string", TEMP_(WH_AUTHENTICATE, 200, "\"ok\"", "not a JSON object")},
    {"auth empty", TEMP_(WH_AUTHENTICATE, 200, "", "empty body")},
    {"auth no body", TEMP_(WH_AUTHENTICATE, 200, NULL, "empty body")},
    {"auth truncated", TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":tr", "invalid JSON")},
    {"auth trailing", TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true} {}", "invalid JSON")},
    /* 401 and 403 are the backend refusing the webhook itself (a bad
     * signature or token), never a refused login: whatever the body says. */
    {"auth 401", TEMP_(WH_AUTHENTICATE, 401, NULL, "HTTP status 401: the backend refused")},
    {"auth 401 ok false",
     TEMP_(WH_AUTHENTICATE, 401, "{\"ok\":false}", "HTTP status 401: the backend refused")},
    {"auth 403 html",
     TEMP_(WH_AUTHENTICATE, 403, "<html>no</html>", "HTTP status 403: the backend refused")},
    {"auth 403 message", TEMP_(WH_AUTHENTICATE, 403, "{\"message\":\"wrong password\"}",
                               "HTTP status 403: the backend refused")},
    {"auth 423", REF_(WH_AUTHENTICATE, 423, "", WH_CODE_IN_USE, NO_TEXT)},
    {"auth 423 ok true ignored",
     REF_(WH_AUTHENTICATE, 423, "{\"ok\":true}", WH_CODE_IN_USE, NO_TEXT)},
    {"auth 429 message", REF_(WH_AUTHENTICATE, 429, "{\"message\":\"wait 5 minutes\"}",
                              WH_CODE_LOGIN_DELAY, "wait 5 minutes")},
    {"auth 400", TEMP_(WH_AUTHENTICATE, 400, "{\"ok\":false}", "HTTP status 400")},
    {"auth 404", TEMP_(WH_AUTHENTICATE, 404, NULL, "HTTP status 404")},
    {"auth 500", TEMP_(WH_AUTHENTICATE, 500, "{\"ok\":true}", "HTTP status 500")},
    {"auth 503", TEMP_(WH_AUTHENTICATE, 503, NULL, "HTTP status 503")},
    {"auth 204", TEMP_(WH_AUTHENTICATE, 204, NULL, "HTTP status 204")},
    {"auth 302", TEMP_(WH_AUTHENTICATE, 302, NULL, "HTTP status 302")},
    {"auth no response", TEMP_(WH_AUTHENTICATE, 0, NULL, "no response")},
    {"auth depth 16",
     OK_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"mailbox\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}"),
     .mailbox = "[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]"},
    {"auth depth 17",
     TEMP_(WH_AUTHENTICATE, 200, "{\"ok\":true,\"mailbox\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}",
           "nested too deep")},
    {"auth depth 17 objects",
     TEMP_(WH_AUTHENTICATE, 200,
           "{\"ok\":false,\"x\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{"
           "\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}}}}}}}}}}}}}",
           "nested too deep")},

    /* list */
    {"list empty", OK_(WH_LIST, 200, "{\"messages\":[]}"), .check_list = 1, .n_msgs = 0},
    {"list no uids", OK_(WH_LIST, 200, "{\"messages\":[{\"size\":10},{\"size\":0,\"x\":1}]}"),
     .check_list = 1, .n_msgs = 2},
    {"list uids",
     OK_(WH_LIST, 200, "{\"messages\":[{\"size\":10,\"uid\":\"a\"},{\"uid\":\"b\",\"size\":20}]}"),
     .check_list = 1, .n_msgs = 2, .has_uids = 1},
    {"list null uids",
     OK_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":null},{\"size\":2,\"uid\":null}]}"),
     .check_list = 1, .n_msgs = 2},
    {"list max size", OK_(WH_LIST, 200, "{\"messages\":[{\"size\":9007199254740991}]}"),
     .check_list = 1, .n_msgs = 1},
    {"list uid 70",
     OK_(WH_LIST, 200,
         "{\"messages\":[{\"size\":1,\"uid\":"
         "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}]}"),
     .check_list = 1, .n_msgs = 1, .has_uids = 1},
    {"list uid 71",
     TEMP_(WH_LIST, 200,
           "{\"messages\":[{\"size\":1,\"uid\":"
           "\"01234567890123456789012345678901234567890123456789012345678901234567890\"}]}",
           "messages[0].uid is not a valid uid")},
    {"list mixed uids",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":\"a\"},{\"size\":2}]}",
           "uid on some entries only (messages[1])")},
    {"list mixed uids late",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1},{\"size\":2},{\"size\":3,\"uid\":\"c\"}]}",
           "uid on some entries only (messages[2])")},
    {"list uid space",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":\"a b\"}]}", "not a valid uid")},
    {"list uid empty",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":\"\"}]}", "not a valid uid")},
    {"list uid non-ascii",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":\"\\u00e9\"}]}", "not a valid uid")},
    {"list uid control",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":\"a\\u007f\"}]}", "not a valid uid")},
    {"list uid number",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1,\"uid\":7}]}", "not a valid uid")},
    {"list duplicate uids",
     TEMP_(WH_LIST, 200,
           "{\"messages\":[{\"size\":1,\"uid\":\"x\"},{\"size\":1,\"uid\":\"y\"},{\"size\":1,"
           "\"uid\":\"x\"}]}",
           "duplicate uid at messages[2]")},
    {"list negative size",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":-1}]}", "messages[0].size not an integer")},
    {"list size 2^53",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1},{\"size\":9007199254740992}]}",
           "messages[1].size not an integer")},
    {"list size huge",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":99999999999999999999}]}", "invalid JSON")},
    {"list float size",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":10.0}]}", "messages[0].size not an integer")},
    {"list exp size",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1e3}]}", "messages[0].size not an integer")},
    {"list string size",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":\"10\"}]}", "messages[0].size not an integer")},
    {"list null size",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":null}]}", "messages[0].size not an integer")},
    {"list size missing", TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1},{\"uid\":\"a\"}]}",
                                "list: messages[1].size missing")},
    {"list entry not object",
     TEMP_(WH_LIST, 200, "{\"messages\":[{\"size\":1},5]}", "messages[1] is not an object")},
    {"list messages missing",
     TEMP_(WH_LIST, 200, "{\"uids\":[]}", "messages missing or not an array")},
    {"list messages object",
     TEMP_(WH_LIST, 200, "{\"messages\":{}}", "messages missing or not an array")},
    {"list top array", TEMP_(WH_LIST, 200, "[]", "not a JSON object")},
    {"list 201", TEMP_(WH_LIST, 201, "{\"messages\":[]}", "HTTP status 201")},
    {"list 404", TEMP_(WH_LIST, 404, "{\"messages\":[]}", "HTTP status 404")},
    {"list 500", TEMP_(WH_LIST, 500, NULL, "HTTP status 500")},
    {"list depth 17",
     TEMP_(WH_LIST, 200, "{\"messages\":[],\"x\":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}",
           "nested too deep")},
    {"list depth 16", OK_(WH_LIST, 200, "{\"messages\":[],\"x\":[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}"),
     .check_list = 1, .n_msgs = 0},
    {"list truncated",
     OK_(WH_LIST, 200,
         "{\"messages\":[{\"size\":1,\"uid\":\"a\"},{\"size\":2,\"uid\":\"b\"},{\"size\":3,"
         "\"uid\":\"c\"},{\"size\":4,\"uid\":\"d\"},{\"size\":5,\"uid\":\"e\"}]}"),
     .check_list = 1, .n_msgs = 3, .has_uids = 1, .max_messages = 3, .truncated_from = 5},
    {"list at max", OK_(WH_LIST, 200, "{\"messages\":[{\"size\":1},{\"size\":2},{\"size\":3}]}"),
     .check_list = 1, .n_msgs = 3, .max_messages = 3},
    {"list truncated dup beyond cap",
     TEMP_(WH_LIST, 200,
           "{\"messages\":[{\"size\":1,\"uid\":\"a\"},{\"size\":2,\"uid\":\"b\"},{\"size\":3,"
           "\"uid\":\"a\"}]}",
           "duplicate uid at messages[2]"),
     .max_messages = 1},

    /* uidl */
    {"uidl ok", OK_(WH_UIDL, 200, "{\"uids\":[\"a\",\"b\",\"~!\"]}"), .check_list = 1, .n_msgs = 3,
     .has_uids = 1},
    {"uidl empty", OK_(WH_UIDL, 200, "{\"uids\":[]}"), .check_list = 1, .n_msgs = 0},
    {"uidl truncated", OK_(WH_UIDL, 200, "{\"uids\":[\"a\",\"b\",\"c\"]}"), .check_list = 1,
     .n_msgs = 2, .has_uids = 1, .max_messages = 2, .truncated_from = 3},
    {"uidl number", TEMP_(WH_UIDL, 200, "{\"uids\":[\"a\",5]}", "uids[1] is not a valid uid")},
    {"uidl null", TEMP_(WH_UIDL, 200, "{\"uids\":[null]}", "uids[0] is not a valid uid")},
    {"uidl dup", TEMP_(WH_UIDL, 200, "{\"uids\":[\"a\",\"b\",\"b\"]}", "duplicate uid at uids[2]")},
    {"uidl space", TEMP_(WH_UIDL, 200, "{\"uids\":[\" a\"]}", "not a valid uid")},
    {"uidl 71",
     TEMP_(WH_UIDL, 200,
           "{\"uids\":[\"01234567890123456789012345678901234567890123456789012345678901234567890\"]"
           "}",
           "not a valid uid")},
    {"uidl not array", TEMP_(WH_UIDL, 200, "{\"uids\":\"a\"}", "uids missing or not an array")},
    {"uidl 500", TEMP_(WH_UIDL, 500, NULL, "HTTP status 500")},

    /* quit */
    {"quit 200", OK_(WH_QUIT, 200, "{\"whatever\":1}")},
    {"quit 200 garbage", OK_(WH_QUIT, 200, "not json [[[")},
    {"quit 204", OK_(WH_QUIT, 204, NULL)},
    {"quit 299", OK_(WH_QUIT, 299, "")},
    {"list 401", TEMP_(WH_LIST, 401, "{\"messages\":[]}", "HTTP status 401: the backend refused")},
    {"uidl 403", TEMP_(WH_UIDL, 403, "{\"uids\":[]}", "HTTP status 403: the backend refused")},
    {"quit 401", TEMP_(WH_QUIT, 401, NULL, "HTTP status 401: the backend refused")},
    {"quit 403", TEMP_(WH_QUIT, 403, "{}", "HTTP status 403: the backend refused")},
    {"quit 300", TEMP_(WH_QUIT, 300, NULL, "HTTP status 300")},
    {"quit 404", TEMP_(WH_QUIT, 404, NULL, "HTTP status 404")},
    {"quit 500", TEMP_(WH_QUIT, 500, "{\"ok\":true}", "HTTP status 500")},
    {"quit no response", TEMP_(WH_QUIT, 0, NULL, "no response")},

    /* connect */
    {"connect ok", OK_(WH_CONNECT, 200, "{\"ok\":true}")},
    {"connect empty", OK_(WH_CONNECT, 200, "")},
    {"connect 204", OK_(WH_CONNECT, 204, NULL)},
    {"connect blank", OK_(WH_CONNECT, 200, " \r\n")},
    {"connect refused", REF_(WH_CONNECT, 200, "{\"ok\":false,\"message\":\"[AUTH] go away\\n\"}",
                             ANY_CODE, "go away")},
    {"connect refused bare", REF_(WH_CONNECT, 200, "{\"ok\":false}", ANY_CODE, NO_TEXT)},
    {"connect 403", TEMP_(WH_CONNECT, 403, NULL, "HTTP status 403: the backend refused")},
    {"connect 403 message",
     TEMP_(WH_CONNECT, 403, "{\"message\":\"blocked\"}", "HTTP status 403: the backend refused")},
    {"connect not json", TEMP_(WH_CONNECT, 200, "yes", "invalid JSON")},
    {"connect no ok", TEMP_(WH_CONNECT, 200, "{}", "ok missing")},
    {"connect 401", TEMP_(WH_CONNECT, 401, NULL, "HTTP status 401: the backend refused")},
    {"connect 500", TEMP_(WH_CONNECT, 500, NULL, "HTTP status 500")},

    /* disconnect */
    {"disconnect 200", OK_(WH_DISCONNECT, 200, "{}")},
    {"disconnect 202", OK_(WH_DISCONNECT, 202, NULL)},
    {"disconnect 503", TEMP_(WH_DISCONNECT, 503, NULL, "HTTP status 503")},
    {"disconnect 401", TEMP_(WH_DISCONNECT, 401, NULL, "HTTP status 401: the backend refused")},

    /* retrieve: statuses only */
    {"retrieve 200", OK_(WH_RETRIEVE, 200, "From: a\r\n\r\nhi\r\n")},
    {"retrieve 404", .event = WH_RETRIEVE, .status = 404, .want = WH_NOT_FOUND, .code = ANY_CODE},
    {"retrieve 401", TEMP_(WH_RETRIEVE, 401, NULL, "HTTP status 401: the backend refused")},
    {"retrieve 403", TEMP_(WH_RETRIEVE, 403, NULL, "HTTP status 403: the backend refused")},
    {"retrieve 500", TEMP_(WH_RETRIEVE, 500, NULL, "HTTP status 500")},
    {"retrieve 204", TEMP_(WH_RETRIEVE, 204, NULL, "HTTP status 204")},
};

static void check_text(const char *name, const char *field, const char *got, const char *want)
{
    if (!want)
        return;
    if (strcmp(want, NO_TEXT) == 0) {
        if (got)
            fail_msg("%s: %s is \"%s\", expected NULL", name, field, got);
        return;
    }
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s: %s is \"%s\", expected \"%s\"", name, field, got ? got : "(null)", want);
}

static void run_case(const struct parse_case *tc)
{
    struct wh_result r;
    memset(&r, 0x5A, sizeof(r)); /* parse must zero it first */
    size_t len = tc->body ? strlen(tc->body) : 0;
    enum wh_status st = wh_json_parse(tc->event, tc->status, "application/json", tc->body, len,
                                      tc->max_messages, &r);
    if (st != tc->want || r.status != tc->want)
        fail_msg("%s: status %d (r.status %d), expected %d; error %s", tc->name, st, r.status,
                 tc->want, r.error ? r.error : "(null)");
    assert_int_equal(r.http_status, tc->status);

    if (tc->want == WH_TEMP) {
        if (!r.error)
            fail_msg("%s: TEMP without error", tc->name);
        if (tc->error && !strstr(r.error, tc->error))
            fail_msg("%s: error \"%s\" lacks \"%s\"", tc->name, r.error, tc->error);
        /* Nothing but the reason survives. */
        assert_null(r.msgs);
        assert_int_equal(r.n_msgs, 0);
        assert_null(r.user);
        assert_null(r.mailbox);
        assert_null(r.message);
    } else {
        if (r.error)
            fail_msg("%s: unexpected error %s", tc->name, r.error);
    }
    if (tc->want == WH_REFUSED && tc->code != ANY_CODE && (int)r.code != tc->code)
        fail_msg("%s: code %d, expected %d", tc->name, r.code, tc->code);
    check_text(tc->name, "message", r.message, tc->message);
    check_text(tc->name, "user", r.user, tc->user);
    check_text(tc->name, "mailbox", r.mailbox, tc->mailbox);

    if (tc->want == WH_OK && tc->check_list) {
        if ((long)r.n_msgs != tc->n_msgs)
            fail_msg("%s: %zu messages, expected %ld", tc->name, r.n_msgs, tc->n_msgs);
        assert_int_equal(r.has_uids, tc->has_uids);
        assert_int_equal(r.truncated_from, tc->truncated_from);
        for (size_t i = 0; i < r.n_msgs; i++) {
            if (tc->has_uids)
                assert_true(wh_uid_valid(r.msgs[i].uid));
            else
                assert_null(r.msgs[i].uid);
        }
    }
    wh_result_free(&r);
    wh_result_free(&r); /* zeroed: a second call is harmless */
}

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(&cases[i]);
}

static void test_parse_list_values(void **state)
{
    (void)state;
    const char *body = "{\"messages\":[{\"size\":1234,\"uid\":\"AAA-1\"},{\"size\":0,\"uid\":"
                       "\"~\"},{\"size\":9007199254740991,\"uid\":\"!x\"}]}";
    struct wh_result r;
    assert_int_equal(wh_json_parse(WH_LIST, 200, NULL, body, strlen(body), 1000, &r), WH_OK);
    assert_int_equal(r.n_msgs, 3);
    assert_int_equal(r.msgs[0].size, 1234);
    assert_string_equal(r.msgs[0].uid, "AAA-1");
    assert_int_equal(r.msgs[1].size, 0);
    assert_string_equal(r.msgs[1].uid, "~");
    assert_int_equal(r.msgs[2].size, 9007199254740991ULL);
    assert_string_equal(r.msgs[2].uid, "!x");
    wh_result_free(&r);

    body = "{\"uids\":[\"u1\",\"u2\"]}";
    assert_int_equal(wh_json_parse(WH_UIDL, 200, NULL, body, strlen(body), 0, &r), WH_OK);
    assert_int_equal(r.n_msgs, 2);
    assert_int_equal(r.msgs[0].size, 0);
    assert_string_equal(r.msgs[0].uid, "u1");
    assert_string_equal(r.msgs[1].uid, "u2");
    wh_result_free(&r);

    body = "{\"messages\":[{\"size\":5},{\"size\":6},{\"size\":7}]}";
    assert_int_equal(wh_json_parse(WH_LIST, 200, NULL, body, strlen(body), 2, &r), WH_OK);
    assert_int_equal(r.n_msgs, 2);
    assert_int_equal(r.truncated_from, 3);
    assert_int_equal(r.msgs[1].size, 6);
    assert_int_equal(r.has_uids, 0);
    wh_result_free(&r);
}

/* Big listings within WH_BODY_MAX: 100000 uids for uidl, 30000 entries with
 * uids for list. All accepted, and a duplicate at the end is found. */
static char *big_listing(enum wh_event ev, int n, size_t *len, size_t *end)
{
    size_t cap = (size_t)n * 40 + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t pos = (size_t)snprintf(body, cap, ev == WH_LIST ? "{\"messages\":[" : "{\"uids\":[");
    for (int i = 0; i < n; i++) {
        int u = (int)(((long)i * 7919) % n); /* a permutation: 7919 is prime */
        if (ev == WH_LIST)
            pos += (size_t)snprintf(body + pos, cap - pos, "%s{\"size\":%d,\"uid\":\"m%x\"}",
                                    i ? "," : "", i, u);
        else
            pos += (size_t)snprintf(body + pos, cap - pos, "%s\"m%x\"", i ? "," : "", u);
    }
    *end = pos;
    pos += (size_t)snprintf(body + pos, cap - pos, "]}");
    assert_true(pos <= WH_BODY_MAX);
    *len = pos;
    return body;
}

static void test_parse_list_large(void **state)
{
    (void)state;
    static const struct {
        enum wh_event ev;
        int n;
        const char *dup_entry, *dup_error;
    } t[] = {
        {WH_LIST, 30000, ",{\"size\":1,\"uid\":\"m0\"}]}", "duplicate uid at messages[30000]"},
        {WH_UIDL, 100000, ",\"m0\"]}", "duplicate uid at uids[100000]"},
    };
    for (size_t k = 0; k < sizeof(t) / sizeof(t[0]); k++) {
        size_t len, end;
        char *body = big_listing(t[k].ev, t[k].n, &len, &end);
        struct wh_result r;
        assert_int_equal(wh_json_parse(t[k].ev, 200, NULL, body, len, 0, &r), WH_OK);
        assert_int_equal(r.n_msgs, t[k].n);
        assert_int_equal(r.has_uids, 1);
        char want[16];
        snprintf(want, sizeof(want), "m%x", 7919 % t[k].n);
        assert_string_equal(r.msgs[1].uid, want);
        wh_result_free(&r);

        assert_int_equal(wh_json_parse(t[k].ev, 200, NULL, body, len, 1000, &r), WH_OK);
        assert_int_equal(r.n_msgs, 1000);
        assert_int_equal(r.truncated_from, t[k].n);
        wh_result_free(&r);

        len = end + (size_t)snprintf(body + end, 64, "%s", t[k].dup_entry);
        assert_int_equal(wh_json_parse(t[k].ev, 200, NULL, body, len, 0, &r), WH_TEMP);
        assert_non_null(strstr(r.error, t[k].dup_error));
        wh_result_free(&r);
        free(body);
    }
}

/* WH_BODY_MAX bytes are fine, one more is not. */
static void test_parse_body_max(void **state)
{
    (void)state;
    char *body = malloc(WH_BODY_MAX + 2);
    assert_non_null(body);
    const char *json = "{\"ok\":true}";
    memset(body, ' ', WH_BODY_MAX + 1);
    memcpy(body, json, strlen(json));
    body[WH_BODY_MAX + 1] = '\0';

    struct wh_result r;
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, WH_BODY_MAX, 0, &r), WH_OK);
    wh_result_free(&r);
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, WH_BODY_MAX + 1, 0, &r),
                     WH_TEMP);
    assert_non_null(strstr(r.error, "too large"));
    wh_result_free(&r);

    memcpy(body, "{\"messages\":[]}", 15);
    assert_int_equal(wh_json_parse(WH_LIST, 200, NULL, body, WH_BODY_MAX + 1, 0, &r), WH_TEMP);
    wh_result_free(&r);
    free(body);
}

/* The user name may be 255 octets, the mailbox 4096 bytes once serialised. */
static void test_parse_limits(void **state)
{
    (void)state;
    char body[8192];
    char user[WH_USER_MAX + 2];
    struct wh_result r;

    memset(user, 'u', sizeof(user));
    user[WH_USER_MAX] = '\0';
    snprintf(body, sizeof(body), "{\"ok\":true,\"user\":\"%s\"}", user);
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, strlen(body), 0, &r), WH_OK);
    assert_int_equal(strlen(r.user), WH_USER_MAX);
    wh_result_free(&r);

    user[WH_USER_MAX] = 'u';
    user[WH_USER_MAX + 1] = '\0';
    snprintf(body, sizeof(body), "{\"ok\":true,\"user\":\"%s\"}", user);
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, strlen(body), 0, &r), WH_TEMP);
    wh_result_free(&r);

    /* Mailbox "xxx...": serialised with quotes, 4096 bytes in all. */
    char box[WH_MAILBOX_MAX];
    memset(box, 'x', sizeof(box));
    box[WH_MAILBOX_MAX - 2] = '\0';
    snprintf(body, sizeof(body), "{\"ok\": true, \"mailbox\": \"%s\"}", box);
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, strlen(body), 0, &r), WH_OK);
    assert_int_equal(strlen(r.mailbox), WH_MAILBOX_MAX);
    wh_result_free(&r);

    box[WH_MAILBOX_MAX - 2] = 'x';
    box[WH_MAILBOX_MAX - 1] = '\0';
    snprintf(body, sizeof(body), "{\"ok\": true, \"mailbox\": \"%s\"}", box);
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, strlen(body), 0, &r), WH_TEMP);
    assert_non_null(strstr(r.error, "mailbox"));
    wh_result_free(&r);

    /* Spaces in the reply do not count: the mailbox is measured compact. */
    snprintf(body, sizeof(body), "{\"ok\": true, \"mailbox\": {  \"a\" :  [ 1 , 2 ] }}");
    assert_int_equal(wh_json_parse(WH_AUTHENTICATE, 200, NULL, body, strlen(body), 0, &r), WH_OK);
    assert_string_equal(r.mailbox, "{\"a\":[1,2]}");
    wh_result_free(&r);
}

/* A depth far beyond jansson's own limit is refused, not crashed on. */
static void test_parse_very_deep(void **state)
{
    (void)state;
    enum { D = 100000 };
    char *body = malloc(2 * D + 1);
    assert_non_null(body);
    memset(body, '[', D);
    memset(body + D, ']', D);
    body[2 * D] = '\0';
    struct wh_result r;
    assert_int_equal(wh_json_parse(WH_LIST, 200, NULL, body, 2 * D, 0, &r), WH_TEMP);
    wh_result_free(&r);
    free(body);
}

/* ------------------------------------------------------------- content */

#define expect_content(body, want) expect_content_(body, want, sizeof(want) - 1)

static void expect_content_(const char *body, const char *want, size_t want_len)
{
    size_t n = 999;
    const char *err = "x";
    char *got = wh_json_parse_content(body, strlen(body), &n, &err);
    if (!got)
        fail_msg("%s: %s", body, err ? err : "(null)");
    assert_null(err);
    assert_int_equal(n, want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal(got[n], '\0');
    free(got);
}

static void expect_no_content(const char *body)
{
    size_t n = 999;
    const char *err = NULL;
    char *got = wh_json_parse_content(body, body ? strlen(body) : 0, &n, &err);
    if (got)
        fail_msg("accepted: %s", body);
    assert_non_null(err);
    assert_int_equal(n, 0);
}

static void test_content(void **state)
{
    (void)state;
    expect_content("{\"content\":\"Subject: hi\\n\\nbody \\u00e9\\n\"}",
                   "Subject: hi\n\nbody \xc3\xa9\n");
    expect_content("{\"content\":\"a\\u0000b\"}", "a\0b");
    expect_content("{\"content\":\"\"}", "");
    expect_content("{\"content\":\"x\",\"content_base64\":null}", "x");
    expect_content("{\"content_base64\":\"aGVsbG8=\"}", "hello");
    expect_content("{\"content_base64\":\"aGVs\\r\\nbG8h\\n\"}", "hello!");
    expect_content("{\"content_base64\":\"AP8AgA==\"}", "\x00\xff\x00\x80");
    expect_content("{\"content_base64\":\"\"}", "");

    expect_no_content("{\"content_base64\":\"aGVsbG8\"}");
    expect_no_content("{\"content_base64\":\"aGV$bG8=\"}");
    expect_no_content("{\"content_base64\":\"a=bc\"}");
    expect_no_content("{\"content_base64\":5}");
    expect_no_content("{\"content\":[]}");
    expect_no_content("{\"content\":\"a\",\"content_base64\":\"YQ==\"}");
    expect_no_content("{\"other\":\"a\"}");
    expect_no_content("{\"content\":null}");
    expect_no_content("[\"content\"]");
    expect_no_content("\"content\"");
    expect_no_content("{\"content\":");
    expect_no_content("");
    expect_no_content(NULL);
}

/* The shape check alone: which member, whatever the string holds. */
static void test_check_content(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        enum wh_json_content want;
    } shapes[] = {
        {"{\"content\":\"\"}", WH_JSON_CONTENT},
        {"{\"a\":[1,{}],\"content\":\"x\",\"content_base64\":null}", WH_JSON_CONTENT},
        {"{\"content_base64\":\"\"}", WH_JSON_CONTENT_BASE64},
        {"{\"content_base64\":\"not base64 $\"}", WH_JSON_CONTENT_BASE64},
        {"{\"content\":null,\"cont\\u0065nt_base64\":\"\"}", WH_JSON_CONTENT_BASE64},
        {"{\"content\":\"\",\"content_base64\":\"\"}", WH_JSON_NO_CONTENT},
        {"{\"content\":\"\",\"content\":\"\"}", WH_JSON_NO_CONTENT},
        {"{\"content\":1}", WH_JSON_NO_CONTENT},
        {"{\"content_base64\":{}}", WH_JSON_NO_CONTENT},
        {"{\"content\":null}", WH_JSON_NO_CONTENT},
        {"{}", WH_JSON_NO_CONTENT},
        {"[]", WH_JSON_NO_CONTENT},
        {"{\"content\":\"\"} x", WH_JSON_NO_CONTENT},
        {"", WH_JSON_NO_CONTENT},
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const char *err = "x";
        enum wh_json_content got =
            wh_json_check_content(shapes[i].body, strlen(shapes[i].body), &err);
        if (got != shapes[i].want)
            fail_msg("%s: %d, expected %d", shapes[i].body, (int)got, (int)shapes[i].want);
        if (got == WH_JSON_NO_CONTENT)
            assert_non_null(err);
        else
            assert_null(err);
    }
}

/* ---------------------------------------------------------------- text */

static void expect_sanitized(const char *in, const char *want)
{
    char *got = wh_sanitize_message(in);
    if (!want) {
        if (got)
            fail_msg("\"%s\" gave \"%s\", expected NULL", in ? in : "(null)", got);
        return;
    }
    if (!got || strcmp(got, want) != 0)
        fail_msg("\"%s\" gave \"%s\", expected \"%s\"", in ? in : "(null)", got ? got : "(null)",
                 want);
    free(got);
}

static void test_sanitize(void **state)
{
    (void)state;
    expect_sanitized(NULL, NULL);
    expect_sanitized("", NULL);
    expect_sanitized("   ", NULL);
    expect_sanitized("[AUTH]", NULL);
    expect_sanitized("[AUTH] forged", "forged");
    expect_sanitized("[AUTH]forged", "forged");
    expect_sanitized("  [SYS/PERM] [IN-USE]  x ", "x");
    expect_sanitized("\r\n[AUTH] x", "x");
    expect_sanitized("[unclosed text", "unclosed text");
    expect_sanitized("a [b] c", "a [b] c");
    expect_sanitized("line1\r\nline2", "line1line2");
    expect_sanitized("bad\r\n+OK forged", "bad+OK forged");
    expect_sanitized("tab\there", "tab here");
    expect_sanitized("caf\xc3\xa9 \x7f\x01ok", "caf ok");

    char longmsg[400];
    memset(longmsg, 'a', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    char *got = wh_sanitize_message(longmsg);
    assert_non_null(got);
    assert_int_equal(strlen(got), WH_MESSAGE_MAX);
    free(got);

    /* The cut falls on a space: no trailing space is left. */
    memset(longmsg, 'a', sizeof(longmsg) - 1);
    longmsg[WH_MESSAGE_MAX - 1] = ' ';
    longmsg[WH_MESSAGE_MAX - 2] = ' ';
    got = wh_sanitize_message(longmsg);
    assert_non_null(got);
    assert_int_equal(strlen(got), WH_MESSAGE_MAX - 2);
    free(got);
}

static void test_uid_valid(void **state)
{
    (void)state;
    char s[WH_UID_MAX + 2];
    memset(s, '~', sizeof(s));
    s[WH_UID_MAX] = '\0';
    assert_true(wh_uid_valid(s));
    s[WH_UID_MAX] = '!';
    s[WH_UID_MAX + 1] = '\0';
    assert_false(wh_uid_valid(s));
    assert_true(wh_uid_valid("!"));
    assert_true(wh_uid_valid("abc-123_XYZ"));
    assert_false(wh_uid_valid(""));
    assert_false(wh_uid_valid(NULL));
    assert_false(wh_uid_valid("a b"));
    assert_false(wh_uid_valid("a\tb"));
    assert_false(wh_uid_valid("a\x7f"));
    assert_false(wh_uid_valid("\xc3\xa9"));
}

static void test_refused_statuses(void **state)
{
    (void)state;
    /* only 401 and 403 mean "the backend refused the webhook" */
    assert_true(wh_json_refused(401));
    assert_true(wh_json_refused(403));
    for (long st = 0; st < 600; st++)
        if (st != 401 && st != 403)
            assert_false(wh_json_refused(st));
}

static void test_result_free(void **state)
{
    (void)state;
    struct wh_result r;
    memset(&r, 0, sizeof(r));
    wh_result_free(&r);
    wh_result_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_authenticate),
        cmocka_unit_test(test_build_list_uidl_connect),
        cmocka_unit_test(test_build_retrieve),
        cmocka_unit_test(test_build_quit_disconnect),
        cmocka_unit_test(test_mailbox_round_trip),
        cmocka_unit_test(test_event_names),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_list_values),
        cmocka_unit_test(test_parse_list_large),
        cmocka_unit_test(test_parse_body_max),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_parse_very_deep),
        cmocka_unit_test(test_content),
        cmocka_unit_test(test_check_content),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_uid_valid),
        cmocka_unit_test(test_refused_statuses),
        cmocka_unit_test(test_result_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
