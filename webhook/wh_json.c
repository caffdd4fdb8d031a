/*
 * wh_json: request bodies and reply parsing for the webhook contract, v1.
 *
 * Building. Bodies are written straight into a buffer, compact, with the
 * fields in the order of the contract: event, session, client, user,
 * mailbox, utf8, then the event's own fields. Strings are checked to be
 * UTF-8 and escaped as JSON requires. The stored mailbox goes out byte for
 * byte: it is what the authenticate reply's value was serialised to.
 *
 * Parsing. A reply is checked completely before anything is taken from it:
 * size (WH_BODY_MAX), JSON syntax (jansson also rejects invalid UTF-8,
 * trailing bytes and, with JSON_REJECT_DUPLICATES, repeated keys), depth
 * (WH_JSON_DEPTH_MAX containers, counted here after parsing; jansson itself
 * stops at 2048), then the fields the event needs. Fields the contract does
 * not name are ignored, and an optional field set to null counts as absent.
 * Anything else gives WH_TEMP, with a short reason in r->error for the log;
 * a WH_TEMP result carries nothing else but http_status. A 401 or 403 is
 * the backend refusing the call itself (a bad signature or token), on every
 * event: WH_TEMP too, never a refused login (the verdict on a login comes in
 * the body of a 200).
 *
 * Uniqueness of uids is checked by sorting pointers to them (O(n log n) in
 * the worst case, whatever uids a backend sends).
 */
#include "webhook/wh_json.h"

#include "lib/buf.h"
#include "webhook/wh_sign.h"
#include "lib/util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define WH_INT_MAX ((json_int_t)((1LL << 53) - 1))

void wh_result_free(struct wh_result *r)
{
    if (!r)
        return;
    free(r->error);
    free(r->message);
    free(r->user);
    free(r->mailbox);
    for (size_t i = 0; i < r->n_msgs; i++)
        free(r->msgs[i].uid);
    free(r->msgs);
    memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------- text */

int wh_uid_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (n == WH_UID_MAX || (unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7E)
            return 0;
    return n > 0;
}

char *wh_sanitize_message(const char *msg)
{
    if (!msg)
        return NULL;
    size_t len = strlen(msg);
    char *buf = malloc(len + 1);
    if (!buf)
        return NULL;

    /* Printable ASCII only: tabs become spaces, CR, LF and the rest go. */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\t')
            c = ' ';
        if (c >= 0x20 && c <= 0x7E)
            buf[n++] = (char)c;
    }

    /* No leading "[...]": the gateway puts the response code there. Every
     * such group goes, and a '[' that is never closed with it. */
    size_t start = 0;
    for (;;) {
        while (start < n && buf[start] == ' ')
            start++;
        if (start == n || buf[start] != '[')
            break;
        const char *close = memchr(buf + start, ']', n - start);
        start = close ? (size_t)(close - buf) + 1 : start + 1;
    }

    size_t end = n;
    if (end - start > WH_MESSAGE_MAX)
        end = start + WH_MESSAGE_MAX;
    while (end > start && buf[end - 1] == ' ')
        end--;
    if (end == start) {
        free(buf);
        return NULL;
    }
    memmove(buf, buf + start, end - start);
    buf[end - start] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- build */

/*
 * The request bodies have a fixed shape, so they are written straight into
 * a buffer (compact, keys in a fixed order, strings escaped as JSON
 * requires) rather than built as a tree and serialised: this runs for every
 * webhook call.
 */
struct jw {
    struct buf b;
    int ok; /* 0 after a failure (memory, invalid UTF-8, missing field) */
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (w->ok && buf_add(&w->b, s, n) < 0)
        w->ok = 0;
}

#define JW_LIT(w, lit) jw_raw((w), (lit), sizeof(lit) - 1)

/* A JSON string; NULL or invalid UTF-8 fails the build. */
static void jw_str(struct jw *w, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *run;
    size_t n;

    if (!s || !util_utf8_valid(s, n = strlen(s))) {
        w->ok = 0;
        return;
    }
    JW_LIT(w, "\"");
    for (run = s; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        const char *e = NULL;
        size_t elen = 2;

        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        jw_raw(w, run, (size_t)(s - run));
        run = s + 1;
        switch (ch) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            e = esc;
            elen = 6;
            break;
        }
        jw_raw(w, e, elen);
    }
    jw_raw(w, run, (size_t)(s - run));
    JW_LIT(w, "\"");
}

static void jw_key_str(struct jw *w, const char *key, const char *s)
{
    jw_raw(w, key, strlen(key));
    jw_str(w, s);
}

static void jw_key_opt_str(struct jw *w, const char *key, const char *s)
{
    if (s)
        jw_key_str(w, key, s);
}

static void jw_key_int(struct jw *w, const char *key, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", v);

    jw_raw(w, key, strlen(key));
    jw_raw(w, num, (size_t)n);
}

static void build_event(struct jw *w, const struct wh_call *c)
{
    switch (c->event) {
    case WH_AUTHENTICATE:
        jw_key_str(w, ",\"method\":", c->method);
        jw_key_opt_str(w, ",\"password\":", c->password);
        jw_key_opt_str(w, ",\"authzid\":", c->authzid);
        if (c->method && strcmp(c->method, wh_method_names[WH_METHOD_APOP]) == 0) {
            jw_key_str(w, ",\"apop\":{\"timestamp\":", c->apop_timestamp);
            jw_key_str(w, ",\"digest\":", c->apop_digest);
            JW_LIT(w, "}");
        }
        jw_key_opt_str(w, ",\"token\":", c->token);
        jw_key_int(w, ",\"attempt\":", c->attempt);
        return;
    case WH_RETRIEVE:
        jw_key_int(w, ",\"message\":", c->message);
        jw_key_opt_str(w, ",\"uid\":", c->uid);
        if (c->lines >= 0)
            jw_key_int(w, ",\"lines\":", c->lines);
        return;
    case WH_QUIT:
        if (c->n_deleted > 0 && !c->deleted) {
            w->ok = 0;
            return;
        }
        JW_LIT(w, ",\"deleted\":[");
        for (size_t i = 0; i < c->n_deleted; i++) {
            jw_key_int(w, i ? ",{\"message\":" : "{\"message\":", c->deleted[i].message);
            jw_key_opt_str(w, ",\"uid\":", c->deleted[i].uid);
            JW_LIT(w, "}");
        }
        JW_LIT(w, "]");
        return;
    case WH_DISCONNECT:
        jw_key_str(w, ",\"reason\":", c->reason);
        return;
    case WH_LIST:
    case WH_UIDL:
    case WH_CONNECT:
        return;
    default:
        w->ok = 0;
        return;
    }
}

/* The mailbox goes out verbatim: it is the serialisation wh_json_parse()
 * made of the authenticate reply's value, so it is valid JSON already. */
static void jw_mailbox(struct jw *w, const char *mailbox)
{
    if (!*mailbox) {
        w->ok = 0;
        return;
    }
    JW_LIT(w, ",\"mailbox\":");
    jw_raw(w, mailbox, strlen(mailbox));
}

char *wh_json_build(const struct wh_call *c, size_t *len)
{
    struct jw w = {{NULL, 0, 0}, 1};

    if (len)
        *len = 0;
    if (!c || (unsigned)c->event >= WH_N_EVENTS)
        return NULL;
    jw_key_str(&w, "{\"event\":", wh_event_names[c->event]);
    jw_key_str(&w, ",\"session\":", c->session);
    jw_key_str(&w, ",\"client\":{\"ip\":", c->client_ip);
    jw_key_int(&w, ",\"port\":", c->client_port);
    if (c->client_tls)
        JW_LIT(&w, ",\"tls\":true},\"user\":");
    else
        JW_LIT(&w, ",\"tls\":false},\"user\":");
    if (c->user)
        jw_str(&w, c->user);
    else
        JW_LIT(&w, "null");
    if (c->mailbox)
        jw_mailbox(&w, c->mailbox);
    if (c->utf8)
        JW_LIT(&w, ",\"utf8\":true");
    build_event(&w, c);
    JW_LIT(&w, "}");
    jw_raw(&w, "", 1); /* NUL, not counted */
    if (!w.ok) {
        if (w.b.data)
            util_wipe(w.b.data, w.b.cap);
        buf_free(&w.b);
        return NULL;
    }
    if (len)
        *len = w.b.len - 1;
    return w.b.data;
}

/* ---------------------------------------------------------------- parse */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static enum wh_status
fail(struct wh_result *r, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    long http_status = r->http_status;
    wh_result_free(r);
    r->http_status = http_status;
    r->status = WH_TEMP;
    r->error = strdup(buf);
    return WH_TEMP;
}

/* True when v nests at most `left` more containers (itself included). */
static int depth_ok(json_t *v, int left)
{
    if (json_is_object(v)) {
        if (left == 0)
            return 0;
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child)
        {
            if (!depth_ok(child, left - 1))
                return 0;
        }
    } else if (json_is_array(v)) {
        if (left == 0)
            return 0;
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            if (!depth_ok(child, left - 1))
                return 0;
        }
    }
    return 1;
}

static int is_blank(const char *body, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
            return 0;
    return 1;
}

/*
 * Parses a body that must be a JSON object within the contract's limits
 * (max bytes, WH_JSON_DEPTH_MAX). Returns the object, or NULL with a static
 * reason in *why and, for invalid JSON, jansson's detail in `detail`.
 */
static json_t *load_object(const char *body, size_t len, size_t max, size_t flags, const char **why,
                           char *detail, size_t detail_len)
{
    if (detail_len > 0)
        detail[0] = '\0';
    if (len > max) {
        *why = "body too large";
        return NULL;
    }
    if (!body || is_blank(body, len)) {
        *why = "empty body";
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, flags | JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        *why = "invalid JSON";
        snprintf(detail, detail_len, ": %s", jerr.text);
        return NULL;
    }
    if (!depth_ok(root, WH_JSON_DEPTH_MAX)) {
        *why = "JSON nested too deep";
    } else if (!json_is_object(root)) {
        *why = "body is not a JSON object";
    } else {
        return root;
    }
    json_decref(root);
    return NULL;
}

size_t wh_reply_max(enum wh_event event, size_t max_messages)
{
    if (event != WH_LIST && event != WH_UIDL)
        return WH_BODY_MAX;
    if (max_messages > (SIZE_MAX - WH_BODY_MAX) / WH_LIST_ENTRY_MAX)
        return SIZE_MAX;
    return WH_BODY_MAX + max_messages * WH_LIST_ENTRY_MAX;
}

/* load_object() for a reply of `event`; on failure r is set to WH_TEMP. */
static json_t *load_reply(struct wh_result *r, enum wh_event event, const char *body, size_t len,
                          size_t max_messages)
{
    const char *why;
    char detail[200];
    json_t *root =
        load_object(body, len, wh_reply_max(event, max_messages), 0, &why, detail, sizeof(detail));
    if (!root)
        fail(r, "%s: %s%s", wh_event_names[event], why, detail);
    return root;
}

/* An optional member: NULL when missing or null. */
static json_t *get_opt(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* The contract's integers: 0 .. 2^53-1. */
static int get_uint53(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > WH_INT_MAX)
        return 0;
    *out = (uint64_t)n;
    return 1;
}

/* The sanitised "message" of a refusal, when there is one. 0 when it is
 * there but not a string. */
static int take_message(struct wh_result *r, json_t *obj)
{
    json_t *m = get_opt(obj, "message");
    if (!m)
        return 1;
    if (!json_is_string(m))
        return 0;
    r->message = wh_sanitize_message(json_string_value(m));
    return 1;
}

/* A refusal by status code: the body is optional, a message in it is kept. */
static enum wh_status refused_by_status(struct wh_result *r, enum wh_code code, const char *body,
                                        size_t len)
{
    const char *why;
    json_t *root = load_object(body, len, WH_BODY_MAX, 0, &why, NULL, 0);
    if (root) {
        json_t *m = get_opt(root, "message");
        if (json_is_string(m))
            r->message = wh_sanitize_message(json_string_value(m));
        json_decref(root);
    }
    r->code = code;
    r->status = WH_REFUSED;
    return WH_REFUSED;
}

static const struct {
    const char *name;
    enum wh_code code;
} codes[] = {
    {"AUTH", WH_CODE_AUTH},
    {"IN-USE", WH_CODE_IN_USE},
    {"LOGIN-DELAY", WH_CODE_LOGIN_DELAY},
    {"SYS/TEMP", WH_CODE_SYS_TEMP},
    {"SYS/PERM", WH_CODE_SYS_PERM},
};

static enum wh_status parse_authenticate(struct wh_result *r, const char *body, size_t len)
{
    switch (r->http_status) {
    case 200:
        break;
    case 423:
        return refused_by_status(r, WH_CODE_IN_USE, body, len);
    case 429:
        return refused_by_status(r, WH_CODE_LOGIN_DELAY, body, len);
    default:
        return fail(r, "authenticate: HTTP status %ld", r->http_status);
    }

    json_t *root = load_reply(r, WH_AUTHENTICATE, body, len, 0);
    if (!root)
        return WH_TEMP;

    enum wh_status st = WH_TEMP;
    json_t *ok = json_object_get(root, "ok");
    if (!json_is_boolean(ok)) {
        fail(r, "authenticate: ok missing or not a boolean");
    } else if (json_is_true(ok)) {
        json_t *user = get_opt(root, "user");
        json_t *mailbox = json_object_get(root, "mailbox");
        if (user && !json_is_string(user)) {
            fail(r, "authenticate: user is not a string");
        } else if (user &&
                   (json_string_length(user) == 0 || json_string_length(user) > WH_USER_MAX ||
                    !util_utf8_valid(json_string_value(user), json_string_length(user)))) {
            fail(r, "authenticate: user empty or longer than %d bytes", WH_USER_MAX);
        } else if (user && util_has_ctl(json_string_value(user), json_string_length(user))) {
            fail(r, "authenticate: user contains control characters");
        } else if (user && !(r->user = strdup(json_string_value(user)))) {
            fail(r, "authenticate: out of memory");
        } else if (mailbox && !(r->mailbox = json_dumps(mailbox, JSON_COMPACT | JSON_ENCODE_ANY))) {
            fail(r, "authenticate: mailbox not serialisable");
        } else if (mailbox && strlen(r->mailbox) > WH_MAILBOX_MAX) {
            fail(r, "authenticate: mailbox longer than %d bytes", WH_MAILBOX_MAX);
        } else {
            st = r->status = WH_OK;
        }
    } else {
        json_t *code = get_opt(root, "code");
        if (code && !json_is_string(code)) {
            fail(r, "authenticate: code is not a string");
        } else if (!take_message(r, root)) {
            fail(r, "authenticate: message is not a string");
        } else {
            r->code = WH_CODE_AUTH;
            for (size_t i = 0; code && i < sizeof(codes) / sizeof(codes[0]); i++)
                if (strcmp(json_string_value(code), codes[i].name) == 0)
                    r->code = codes[i].code;
            st = r->status = WH_REFUSED;
        }
    }
    json_decref(root);
    return st;
}

struct uid_ref {
    const char *uid;
    size_t index;
};

static int uid_ref_cmp(const void *a, const void *b)
{
    const struct uid_ref *x = a, *y = b;
    int c = strcmp(x->uid, y->uid);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Index of an entry whose uid repeats an earlier one, or (size_t)-1. */
static size_t find_duplicate(struct uid_ref *refs, size_t n)
{
    size_t dup = (size_t)-1;
    if (n < 2)
        return dup;
    qsort(refs, n, sizeof(*refs), uid_ref_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(refs[i - 1].uid, refs[i].uid) == 0 && refs[i].index < dup)
            dup = refs[i].index;
    return dup;
}

/* list and uidl: the array has been found; checks every entry, keeps the
 * first max_messages. */
static enum wh_status parse_listing(struct wh_result *r, enum wh_event event, json_t *arr,
                                    size_t max_messages)
{
    const char *ev = wh_event_names[event];
    int list = event == WH_LIST;
    size_t n = json_array_size(arr);
    size_t keep = (max_messages > 0 && n > max_messages) ? max_messages : n;

    struct uid_ref *refs = n > 0 ? malloc(n * sizeof(*refs)) : NULL;
    r->msgs = keep > 0 ? calloc(keep, sizeof(*r->msgs)) : NULL;
    if ((n > 0 && !refs) || (keep > 0 && !r->msgs)) {
        free(refs);
        return fail(r, "%s: out of memory", ev);
    }

    size_t n_uids = 0, i;
    uint64_t total = 0; /* octets of the kept entries: STAT and the greeting print it */
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        json_t *uid = e;
        uint64_t size = 0;
        if (list) {
            if (!json_is_object(e)) {
                fail(r, "list: messages[%zu] is not an object", i);
                goto out;
            }
            json_t *sz = json_object_get(e, "size");
            if (!sz) {
                fail(r, "list: messages[%zu].size missing", i);
                goto out;
            }
            if (!get_uint53(sz, &size)) {
                fail(r, "list: messages[%zu].size not an integer in 0..2^53-1", i);
                goto out;
            }
            uid = get_opt(e, "uid");
            /* All or none: entry 0 decides. */
            if (i > 0 && (uid != NULL) != (n_uids > 0)) {
                fail(r, "list: uid on some entries only (messages[%zu])", i);
                goto out;
            }
        }
        if (uid) {
            if (!json_is_string(uid) || strlen(json_string_value(uid)) != json_string_length(uid) ||
                !wh_uid_valid(json_string_value(uid))) {
                fail(r, "%s: %s[%zu]%s is not a valid uid", ev, list ? "messages" : "uids", i,
                     list ? ".uid" : "");
                goto out;
            }
            refs[n_uids].uid = json_string_value(uid);
            refs[n_uids].index = i;
            n_uids++;
        }
        if (i < keep) {
            if (size > UINT64_MAX - total) {
                fail(r, "list: the sizes add up to more than 2^64-1 octets (messages[%zu])", i);
                goto out;
            }
            total += size;
            r->msgs[i].size = size;
            r->n_msgs = i + 1;
            if (uid && !(r->msgs[i].uid = strdup(json_string_value(uid)))) {
                fail(r, "%s: out of memory", ev);
                goto out;
            }
        }
    }

    size_t dup = find_duplicate(refs, n_uids);
    if (dup != (size_t)-1) {
        fail(r, "%s: duplicate uid at %s[%zu]", ev, list ? "messages" : "uids", dup);
        goto out;
    }
    r->has_uids = n_uids > 0;
    r->truncated_from = keep < n ? n : 0;
    r->status = WH_OK;
out:
    free(refs);
    return r->status;
}

static enum wh_status parse_list(struct wh_result *r, enum wh_event event, const char *body,
                                 size_t len, size_t max_messages)
{
    const char *ev = wh_event_names[event];
    const char *what = event == WH_LIST ? "messages" : "uids";
    if (r->http_status != 200)
        return fail(r, "%s: HTTP status %ld", ev, r->http_status);

    json_t *root = load_reply(r, event, body, len, max_messages);
    if (!root)
        return WH_TEMP;
    json_t *arr = json_object_get(root, what);
    enum wh_status st;
    if (!json_is_array(arr))
        st = fail(r, "%s: %s missing or not an array", ev, what);
    else
        st = parse_listing(r, event, arr, max_messages);
    json_decref(root);
    return st;
}

static enum wh_status parse_connect(struct wh_result *r, const char *body, size_t len)
{
    long s = r->http_status;
    if (s < 200 || s > 299)
        return fail(r, "connect: HTTP status %ld", s);
    if (!body || is_blank(body, len)) {
        r->status = WH_OK;
        return WH_OK;
    }

    json_t *root = load_reply(r, WH_CONNECT, body, len, 0);
    if (!root)
        return WH_TEMP;
    enum wh_status st = WH_TEMP;
    json_t *ok = json_object_get(root, "ok");
    if (!json_is_boolean(ok)) {
        fail(r, "connect: ok missing or not a boolean");
    } else if (json_is_true(ok)) {
        st = r->status = WH_OK;
    } else if (!take_message(r, root)) {
        fail(r, "connect: message is not a string");
    } else {
        r->code = WH_CODE_AUTH;
        st = r->status = WH_REFUSED;
    }
    json_decref(root);
    return st;
}

int wh_json_refused(long http_status)
{
    return http_status == 401 || http_status == 403;
}

enum wh_status wh_json_parse(enum wh_event event, long http_status, const char *content_type,
                             const char *body, size_t len, size_t max_messages, struct wh_result *r)
{
    (void)content_type; /* backends in any stack: the body decides */
    memset(r, 0, sizeof(*r));
    r->http_status = http_status;
    r->status = WH_TEMP;
    if ((unsigned)event >= WH_N_EVENTS)
        return fail(r, "unknown event %d", (int)event);
    const char *ev = wh_event_names[event];
    if (http_status <= 0)
        return fail(r, "%s: no response", ev);
    if (wh_json_refused(http_status))
        return fail(r, "%s: HTTP status %ld: the backend refused the webhook", ev, http_status);
    if (!body)
        len = 0;

    switch (event) {
    case WH_AUTHENTICATE:
        return parse_authenticate(r, body, len);
    case WH_LIST:
    case WH_UIDL:
        return parse_list(r, event, body, len, max_messages);
    case WH_CONNECT:
        return parse_connect(r, body, len);
    case WH_RETRIEVE:
        if (http_status == 200) {
            r->status = WH_OK;
        } else if (http_status == 404) {
            r->status = WH_NOT_FOUND;
        } else {
            return fail(r, "retrieve: HTTP status %ld", http_status);
        }
        return r->status;
    case WH_QUIT:
    case WH_DISCONNECT:
    default:
        if (http_status < 200 || http_status > 299)
            return fail(r, "%s: HTTP status %ld", ev, http_status);
        r->status = WH_OK;
        return WH_OK;
    }
}

/*
 * The retrieve reply's shape, on a parsed root: exactly one of content and
 * content_base64 (null counts as absent), and that one a string. Returns
 * it, with its kind in *kind, or NULL with a static reason in *err.
 */
static json_t *content_member(json_t *root, enum wh_json_content *kind, const char **err)
{
    json_t *text = get_opt(root, "content");
    json_t *b64 = get_opt(root, "content_base64");

    *kind = WH_JSON_NO_CONTENT;
    if (text && b64) {
        *err = "both content and content_base64";
    } else if (!text && !b64) {
        *err = "neither content nor content_base64";
    } else if (text && !json_is_string(text)) {
        *err = "content is not a string";
    } else if (b64 && !json_is_string(b64)) {
        *err = "content_base64 is not a string";
    } else {
        *kind = text ? WH_JSON_CONTENT : WH_JSON_CONTENT_BASE64;
        return text ? text : b64;
    }
    return NULL;
}

/* load_object() with the flags of a JSON retrieve reply. Not bound by
 * WH_BODY_MAX: the caller caps what it buffers. */
static json_t *load_content(const char *body, size_t len, const char **err)
{
    return load_object(body, len, SIZE_MAX, JSON_ALLOW_NUL, err, NULL, 0);
}

enum wh_json_content wh_json_check_content(const char *body, size_t len, const char **err)
{
    enum wh_json_content kind = WH_JSON_NO_CONTENT;

    *err = NULL;
    json_t *root = load_content(body, len, err);
    if (root)
        content_member(root, &kind, err);
    json_decref(root);
    return kind;
}

char *wh_json_parse_content(const char *body, size_t len, size_t *out_len, const char **err)
{
    enum wh_json_content kind;

    *out_len = 0;
    *err = NULL;
    json_t *root = load_content(body, len, err);
    if (!root)
        return NULL;

    char *out = NULL;
    json_t *v = content_member(root, &kind, err);
    if (kind == WH_JSON_CONTENT) {
        size_t n = json_string_length(v);
        out = malloc(n + 1);
        if (out) {
            memcpy(out, json_string_value(v), n);
            out[n] = '\0';
            *out_len = n;
        } else {
            *err = "out of memory";
        }
    } else if (kind == WH_JSON_CONTENT_BASE64) {
        out = (char *)util_b64_decode(json_string_value(v), json_string_length(v), out_len);
        if (!out)
            *err = "content_base64 is not valid base64";
    }
    json_decref(root);
    return out;
}
