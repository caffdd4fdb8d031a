/*
 * fuzz_wh_json: backend replies (webhook/wh_json.c): wh_json_parse() for
 * every event and the status codes a backend sends, wh_json_parse_content()
 * for a JSON retrieve, wh_sanitize_message(), util_utf8_valid(),
 * wh_uid_valid().
 *
 * Input: byte 0 is max_messages (0 = no cap); the rest is the reply body.
 *
 * Checks, from the contract in DESIGN.md and wh_json.h:
 * - WH_TEMP carries a reason and nothing else; the status is in the enum;
 * - a listing has at most max_messages entries, uids all or none, each a
 *   valid uid and unique; a uidl reply has a uid for every entry;
 * - an accepted user is 1..255 bytes of UTF-8 without control characters; a
 *   mailbox is at most 4 KB of JSON that wh_json_build() embeds again;
 * - a message for the client is printable ASCII, at most WH_MESSAGE_MAX,
 *   not empty, does not start with '[' or a blank, does not end with a blank;
 * - util_utf8_valid() agrees with jansson's own UTF-8 check;
 * - wh_result_free() frees everything (LeakSanitizer).
 */
#include "fuzz.h"

#include <jansson.h>

#include "webhook/wh_json.h"
#include "lib/util.h"

static const long statuses[] = {200, 204, 401, 403, 404, 423, 429, 500, 0};

static void check_message(const char *m)
{
    size_t n, i;

    if (!m)
        return;
    n = strlen(m);
    FUZZ_CHECK(n > 0 && n <= WH_MESSAGE_MAX);
    for (i = 0; i < n; i++)
        FUZZ_CHECK(m[i] >= 0x20 && m[i] <= 0x7e);
    FUZZ_CHECK(m[0] != '[' && m[0] != ' ' && m[n - 1] != ' ');
}

static void check_user(const char *u)
{
    size_t n, i;

    if (!u)
        return;
    n = strlen(u);
    FUZZ_CHECK(n >= 1 && n <= WH_USER_MAX && util_utf8_valid(u, n));
    for (i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)u[i] >= 0x20 && u[i] != 0x7f);
}

static void check_mailbox(const char *mb)
{
    struct wh_call c;
    json_t *v;
    char *body;
    size_t len;

    if (!mb)
        return;
    FUZZ_CHECK(strlen(mb) <= WH_MAILBOX_MAX);
    v = json_loads(mb, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(v != NULL);
    json_decref(v);
    /* It is echoed on every later call: the builder must take it. */
    memset(&c, 0, sizeof(c));
    c.event = WH_LIST;
    c.session = "s";
    c.client_ip = "192.0.2.1";
    c.mailbox = mb;
    c.lines = -1;
    body = wh_json_build(&c, &len);
    FUZZ_CHECK(body != NULL);
    free(body);
}

static void check_listing(const struct wh_result *r, enum wh_event ev, size_t max)
{
    size_t i, j;

    if (max > 0)
        FUZZ_CHECK(r->n_msgs <= max);
    FUZZ_CHECK(r->n_msgs == 0 || r->msgs != NULL);
    if (r->truncated_from)
        FUZZ_CHECK(max > 0 && r->truncated_from > r->n_msgs && r->n_msgs == max);
    for (i = 0; i < r->n_msgs; i++) {
        const char *uid = r->msgs[i].uid;
        if (ev == WH_UIDL || r->has_uids)
            FUZZ_CHECK(uid != NULL && wh_uid_valid(uid));
        else
            FUZZ_CHECK(uid == NULL);
        if (ev == WH_LIST)
            FUZZ_CHECK(r->msgs[i].size <= ((uint64_t)1 << 53) - 1);
        for (j = 0; uid && j < i; j++)
            FUZZ_CHECK(strcmp(uid, r->msgs[j].uid) != 0);
    }
}

static void check_result(const struct wh_result *r, enum wh_event ev, long status, size_t max)
{
    FUZZ_CHECK(r->http_status == status);
    /* 401 and 403 are a refused webhook, whatever the event and the body */
    FUZZ_CHECK(!wh_json_refused(status) || r->status == WH_TEMP);
    switch (r->status) {
    case WH_TEMP:
        FUZZ_CHECK(r->error != NULL);
        FUZZ_CHECK(!r->message && !r->user && !r->mailbox && !r->msgs && r->n_msgs == 0);
        return;
    case WH_OK:
        FUZZ_CHECK(!r->error);
        if (ev == WH_LIST || ev == WH_UIDL)
            check_listing(r, ev, max);
        else
            FUZZ_CHECK(!r->msgs && r->n_msgs == 0);
        if (ev == WH_AUTHENTICATE) {
            check_user(r->user);
            check_mailbox(r->mailbox);
        }
        return;
    case WH_REFUSED:
        FUZZ_CHECK(ev == WH_AUTHENTICATE || ev == WH_CONNECT);
        FUZZ_CHECK((unsigned)r->code <= WH_CODE_SYS_PERM);
        check_message(r->message);
        FUZZ_CHECK(!r->user && !r->mailbox && !r->msgs);
        return;
    case WH_NOT_FOUND:
        FUZZ_CHECK(ev == WH_RETRIEVE && status == 404);
        return;
    default:
        FUZZ_CHECK(0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max, len, i, out_len;
    const char *body, *err;
    char *copy, *s, *content;
    int ev;
    json_t *js;

    if (size < 1)
        return 0;
    max = data[0];
    len = size - 1;
    body = (const char *)fuzz_memdup(data + 1, len);

    for (ev = 0; ev < WH_N_EVENTS; ev++) {
        for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
            struct wh_result r;
            enum wh_status st = wh_json_parse((enum wh_event)ev, statuses[i], "application/json",
                                              body, len, max, &r);
            FUZZ_CHECK(st == r.status);
            check_result(&r, (enum wh_event)ev, statuses[i], max);
            wh_result_free(&r);
        }
    }

    content = wh_json_parse_content(body, len, &out_len, &err);
    FUZZ_CHECK((content == NULL) == (err != NULL));
    if (content) {
        FUZZ_CHECK(content[out_len] == '\0');
        free(content);
    }

    copy = fuzz_strndup(data + 1, len);
    s = wh_sanitize_message(copy);
    check_message(s);
    free(s);
    FUZZ_CHECK(wh_uid_valid(copy) ==
               (strlen(copy) >= 1 && strlen(copy) <= WH_UID_MAX &&
                strspn(copy, "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") == strlen(copy)));
    free(copy);

    /* Two UTF-8 checkers must agree (jansson rejects what is not UTF-8). */
    js = json_stringn(body, len);
    FUZZ_CHECK(util_utf8_valid(body, len) == (js != NULL));
    json_decref(js);

    free((void *)body);
    return 0;
}
