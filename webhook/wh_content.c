/*
 * wh_content: the JSON form of a retrieve reply, decoded as it streams (the
 * contract is in wh_content.h).
 *
 * Three small machines, each resumable at any byte:
 * - the tokenizer outside strings: the root object's own grammar (key, ':',
 *   value, ',' or '}'), the depth of what is nested in it, whitespace;
 * - the string decoder: escapes, surrogate pairs and raw UTF-8, checked as
 *   jansson 2.14 checks them (load.c, lex_scan_string; utf.c). It decodes
 *   top-level keys (to find content), the streamed value, and every other
 *   string (only to refuse a bad one early);
 * - the base64 decoder, fed with the decoded bytes of content_base64, which
 *   mirrors util_b64_decode() and the EVP_DecodeBlock() under it.
 * What is not the streamed value goes into the skeleton; wh_content_finish()
 * hands the skeleton to wh_json_check_content().
 *
 * Why this is exact. Let the body be P "S" Q, with S the streamed value, and
 * the skeleton P "" Q. The string decoder accepts S only if jansson would,
 * and ends it at the same quote; jansson's lexer then reads the same tokens
 * from both but for that one string, so it accepts the skeleton exactly when
 * it accepts the body, finds the same keys (duplicates included) and the
 * same depth, and the value of S is what was put out. Runs of whitespace
 * between tokens are kept as one byte: still a token separator. Each early
 * refusal is something no valid reply contains.
 */
#include "webhook/wh_content.h"

#include "lib/util.h"
#include "webhook/wh.h"
#include "webhook/wh_json.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum { W_BEFORE, W_ROOT, W_AFTER }; /* where: around the root object */

/* mode: what the root object expects next (its own tokens, depth 1). */
enum {
    M_FIRST,  /* after '{': a key or '}' */
    M_KEY,    /* after ',': a key */
    M_COLON,  /* after a key: ':' */
    M_VALUE,  /* after ':': a value */
    M_SCALAR, /* inside a number, true, false or null */
    M_NEXT,   /* after a value: ',' or '}' */
};

/* str: the string decoder, 0 outside strings. */
enum {
    STR_NONE,
    STR_CHAR,     /* a character, an escape or the closing quote */
    STR_UTF8,     /* continuation bytes of a raw UTF-8 sequence */
    STR_ESC,      /* after '\' */
    STR_HEX,      /* the hex digits of \uXXXX */
    STR_PAIR_BS,  /* after a high surrogate: '\' of its low half */
    STR_PAIR_U,   /* 'u' of the low half */
    STR_PAIR_HEX, /* its hex digits */
};

/* sink: where a string's decoded bytes go. */
enum {
    SINK_NONE,   /* nowhere: only checked, copied raw into the skeleton */
    SINK_KEY,    /* key[]: a top-level key */
    SINK_TEXT,   /* out: the content */
    SINK_BASE64, /* the base64 decoder, then out */
};

/* member and streams: which member a top-level key names. */
enum { MEMBER_OTHER, MEMBER_TEXT, MEMBER_BASE64 };

#define B64_NOT 0x80 /* in b64_value[]: not in the alphabet */

/* The values of the base64 alphabet; B64_NOT for every other byte ('=' and
 * whitespace are handled apart). */
/* clang-format off */
static const unsigned char b64_value[256] = {
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x3e, 0x80, 0x80, 0x80, 0x3f,
    0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
    0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
};

/* 1 for the bytes a string holds as they are, in a run: printable ASCII but
 * '"' and '\\' (DEL included: JSON allows it). */
static const unsigned char plain_ascii[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

static int content_fail(struct wh_content *d, const char *why)
{
    if (!d->error)
        d->error = why;
    return -1;
}

/* Appends n bytes to the skeleton, within WH_BODY_MAX. */
static void skel_add(struct wh_content *d, const void *p, size_t n)
{
    if (n == 0 || d->error)
        return;
    if (n > WH_BODY_MAX - d->skel.len)
        content_fail(d, "the members beside the content pass 1 MB");
    else if (buf_add(&d->skel, p, n) < 0)
        content_fail(d, "out of memory");
}

/* ---------------------------------------------------------------- base64 */

/* A '=' or a character that is not in the alphabet or whitespace. */
static void b64_odd(struct wh_content *d, unsigned char c)
{
    if (c != '=' || d->q_n < 2) {
        /* '=' pads only the third and fourth character of the last quad. */
        content_fail(d, "content_base64 is not valid base64");
        return;
    }
    d->pad++;
    d->quad[d->q_n++] = 0;
}

/*
 * Decodes n bytes of content_base64's value into out + *out_len. A quad is
 * put out when its fourth character arrives: three bytes, less one per '='
 * (the bits a '=' stands for count as zero, and the bits left over in the
 * last character are ignored, as in EVP_DecodeBlock()).
 */
static void b64_feed(struct wh_content *d, const unsigned char *p, size_t n, char *out,
                     size_t *out_len)
{
    unsigned char *o = (unsigned char *)out + *out_len;
    size_t i = 0, chars = 0;

    while (i < n && !d->error) {
        /* Whole quads of the alphabet at once. */
        while (d->q_n == 0 && d->pad == 0 && n - i >= 4) {
            unsigned a = b64_value[p[i]], b = b64_value[p[i + 1]];
            unsigned c = b64_value[p[i + 2]], e = b64_value[p[i + 3]];
            if ((a | b | c | e) & B64_NOT)
                break;
            *o++ = (unsigned char)(a << 2 | b >> 4);
            *o++ = (unsigned char)(b << 4 | c >> 2);
            *o++ = (unsigned char)(c << 6 | e);
            i += 4;
            chars += 4;
        }
        if (i == n)
            break;
        unsigned char ch = p[i++];
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
            continue;
        chars++;
        if (b64_value[ch] == B64_NOT)
            b64_odd(d, ch);
        else if (d->pad)
            content_fail(d, "content_base64 is not valid base64");
        else
            d->quad[d->q_n++] = b64_value[ch];
        if (d->q_n == 4 && !d->error) {
            unsigned char q[3] = {(unsigned char)(d->quad[0] << 2 | d->quad[1] >> 4),
                                  (unsigned char)(d->quad[1] << 4 | d->quad[2] >> 2),
                                  (unsigned char)(d->quad[2] << 6 | d->quad[3])};
            memcpy(o, q, 3u - d->pad);
            o += 3u - d->pad;
            d->q_n = 0;
        }
    }
    *out_len = (size_t)(o - (unsigned char *)out);
    /* util_b64_decode() refuses more than INT_MAX bytes out. */
    d->b64_chars += chars;
    if (d->b64_chars / 4 * 3 > INT_MAX)
        content_fail(d, "content_base64 decodes to more than 2 GB");
}

/* ---------------------------------------------------------------- strings */

/* Decoded bytes of the current string, to where they go. */
static void emit(struct wh_content *d, const unsigned char *p, size_t n, char *out, size_t *out_len)
{
    switch (d->sink) {
    case SINK_NONE:
        return;
    case SINK_KEY:
        for (size_t i = 0; i < n && d->key_len < sizeof(d->key); i++)
            d->key[d->key_len++] = (char)p[i];
        return;
    case SINK_TEXT:
        memcpy(out + *out_len, p, n);
        *out_len += n;
        return;
    case SINK_BASE64:
        b64_feed(d, p, n, out, out_len);
        return;
    default:
        abort();
    }
}

/* A code point from a \u escape, as UTF-8. */
static void emit_cp(struct wh_content *d, uint32_t cp, char *out, size_t *out_len)
{
    unsigned char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    emit(d, u, n, out, out_len);
}

/* Length of the run at p that a string holds as it is: plain ASCII and
 * whole, valid UTF-8 sequences. Stops before anything else, and before a
 * sequence cut by the end of the input (the byte-wise path carries it). */
static size_t plain_run(const unsigned char *p, size_t n)
{
    size_t i = 0, k;

    while (i < n) {
        if (plain_ascii[p[i]])
            i++;
        else if (p[i] >= 0x80 && (k = util_utf8_len((const char *)p + i, n - i)) > 0)
            i += k;
        else
            break;
    }
    return i;
}

/* A lead byte of raw UTF-8: how many continuation bytes, and the bounds of
 * the first (the rest are 80..BF). Refuses what jansson's utf8_check_first()
 * and utf8_check_full() refuse: C0, C1, F5..FF, overlongs, surrogates,
 * code points past U+10FFFF. */
static void utf8_begin(struct wh_content *d, unsigned char c)
{
    d->u8_lo = 0x80;
    d->u8_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        d->u8_need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        d->u8_need = 2;
        if (c == 0xE0)
            d->u8_lo = 0xA0;
        else if (c == 0xED)
            d->u8_hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        d->u8_need = 3;
        if (c == 0xF0)
            d->u8_lo = 0x90;
        else if (c == 0xF4)
            d->u8_hi = 0x8F;
    } else {
        content_fail(d, "invalid JSON: not UTF-8");
        return;
    }
    d->u8[0] = c;
    d->u8_n = 1;
    d->str = STR_UTF8;
}

static void utf8_next(struct wh_content *d, unsigned char c, char *out, size_t *out_len)
{
    if (c < d->u8_lo || c > d->u8_hi) {
        content_fail(d, "invalid JSON: not UTF-8");
        return;
    }
    d->u8[d->u8_n++] = c;
    d->u8_lo = 0x80;
    d->u8_hi = 0xBF;
    if (--d->u8_need == 0) {
        emit(d, d->u8, d->u8_n, out, out_len);
        d->str = STR_CHAR;
    }
}

/* The character after '\'. */
static void string_escape(struct wh_content *d, unsigned char c, char *out, size_t *out_len)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = c ? strchr(from, c) : NULL;

    if (c == 'u') {
        d->str = STR_HEX;
        d->hex_n = 0;
        d->cp = 0;
    } else if (e) {
        unsigned char b = (unsigned char)to[e - from];
        emit(d, &b, 1, out, out_len);
        d->str = STR_CHAR;
    } else {
        content_fail(d, "invalid JSON: invalid escape");
    }
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A hex digit of \uXXXX (first or low half); after the fourth, the code
 * point. A high surrogate waits for its low half; a lone one is refused. */
static void string_hex(struct wh_content *d, unsigned char c, char *out, size_t *out_len)
{
    int v = hex_value(c);
    int low = d->str == STR_PAIR_HEX;
    uint32_t *cp = low ? &d->cp2 : &d->cp;

    if (v < 0) {
        content_fail(d, "invalid JSON: invalid \\u escape");
        return;
    }
    *cp = *cp << 4 | (uint32_t)v;
    if (++d->hex_n < 4)
        return;
    if (low) {
        if (d->cp2 < 0xDC00 || d->cp2 > 0xDFFF) {
            content_fail(d, "invalid JSON: lone surrogate");
            return;
        }
        emit_cp(d, 0x10000 + ((d->cp - 0xD800) << 10) + (d->cp2 - 0xDC00), out, out_len);
        d->str = STR_CHAR;
    } else if (d->cp >= 0xD800 && d->cp <= 0xDBFF) {
        d->str = STR_PAIR_BS;
    } else if (d->cp >= 0xDC00 && d->cp <= 0xDFFF) {
        content_fail(d, "invalid JSON: lone surrogate");
    } else {
        emit_cp(d, d->cp, out, out_len);
        d->str = STR_CHAR;
    }
}

/* The closing quote. */
static void string_end(struct wh_content *d)
{
    if (d->sink == SINK_KEY) {
        d->member = MEMBER_OTHER;
        if (d->key_len == 7 && memcmp(d->key, "content", 7) == 0)
            d->member = MEMBER_TEXT;
        else if (d->key_len == 14 && memcmp(d->key, "content_base64", 14) == 0)
            d->member = MEMBER_BASE64;
    } else if (d->sink == SINK_TEXT || d->sink == SINK_BASE64) {
        skel_add(d, "\"", 1);
    }
    d->str = STR_NONE;
    d->sink = SINK_NONE;
}

/* One byte of a string, where plain_run() did not take it. */
static void string_byte(struct wh_content *d, unsigned char c, char *out, size_t *out_len)
{
    switch (d->str) {
    case STR_CHAR:
        if (c == '"')
            string_end(d);
        else if (c == '\\')
            d->str = STR_ESC;
        else if (c < 0x20)
            content_fail(d, "invalid JSON: control character in a string");
        else if (c < 0x80)
            emit(d, &c, 1, out, out_len);
        else
            utf8_begin(d, c);
        return;
    case STR_UTF8:
        utf8_next(d, c, out, out_len);
        return;
    case STR_ESC:
        string_escape(d, c, out, out_len);
        return;
    case STR_HEX:
    case STR_PAIR_HEX:
        string_hex(d, c, out, out_len);
        return;
    case STR_PAIR_BS:
    case STR_PAIR_U:
        if (c != (d->str == STR_PAIR_BS ? '\\' : 'u')) {
            content_fail(d, "invalid JSON: lone surrogate");
        } else if (d->str == STR_PAIR_BS) {
            d->str = STR_PAIR_U;
        } else {
            d->str = STR_PAIR_HEX;
            d->hex_n = 0;
            d->cp2 = 0;
        }
        return;
    default:
        abort();
    }
}

/* Bytes of a string up to its closing quote (included). Returns how many
 * were taken. */
static size_t string_feed(struct wh_content *d, const unsigned char *p, size_t n, char *out,
                          size_t *out_len)
{
    size_t i = 0;

    while (i < n && d->str != STR_NONE && !d->error) {
        if (d->str == STR_CHAR) {
            size_t run = plain_run(p + i, n - i);
            emit(d, p + i, run, out, out_len);
            i += run;
            if (i == n || d->error)
                break;
        }
        string_byte(d, p[i++], out, out_len);
    }
    return i;
}

/* ------------------------------------------------------------ tokenizer */

static void open_container(struct wh_content *d)
{
    if (d->depth >= WH_JSON_DEPTH_MAX)
        content_fail(d, "JSON nested too deep");
    else
        d->depth++;
}

/* An opening quote inside the root object: the key of a member, the value
 * to stream, or another string. */
static void string_begin(struct wh_content *d)
{
    d->str = STR_CHAR;
    d->sink = SINK_NONE;
    if (d->depth > 1)
        return;
    switch (d->mode) {
    case M_FIRST:
    case M_KEY:
        d->sink = SINK_KEY;
        d->key_len = 0;
        d->mode = M_COLON;
        return;
    case M_VALUE:
        d->mode = M_NEXT;
        if (d->member != MEMBER_OTHER && !d->streams) {
            d->streams = d->member;
            d->sink = d->member == MEMBER_TEXT ? SINK_TEXT : SINK_BASE64;
        }
        return;
    case M_COLON:
    case M_SCALAR:
    case M_NEXT:
        content_fail(d, "invalid JSON: unexpected string");
        return;
    default:
        abort();
    }
}

/* A byte inside the root object, outside strings: neither whitespace nor a
 * quote. Below the root only the depth is followed (jansson checks the rest
 * in the skeleton); in the root, its own grammar. */
static void root_token(struct wh_content *d, unsigned char c)
{
    if (d->depth > 1) {
        if (c == '{' || c == '[')
            open_container(d);
        else if (c == '}' || c == ']')
            d->depth--; /* back in the root: mode is still M_NEXT */
        return;
    }
    int ok = 1;
    switch (c) {
    case ':':
        ok = d->mode == M_COLON;
        d->mode = M_VALUE;
        break;
    case ',':
        ok = d->mode == M_NEXT || d->mode == M_SCALAR;
        d->mode = M_KEY;
        break;
    case '}':
        ok = d->mode == M_FIRST || d->mode == M_NEXT || d->mode == M_SCALAR;
        d->depth = 0;
        d->where = W_AFTER;
        break;
    case '{':
    case '[':
        ok = d->mode == M_VALUE;
        d->mode = M_NEXT;
        open_container(d);
        break;
    default: /* number, true, false, null: letters, digits, + - . */
        ok = (d->mode == M_VALUE || d->mode == M_SCALAR) &&
             ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '+' || c == '-' || c == '.');
        d->mode = M_SCALAR;
        break;
    }
    if (!ok)
        content_fail(d, "invalid JSON: unexpected token in the object");
}

static int json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Bytes outside strings, up to an opening quote (included). Returns how
 * many were taken; all but repeated whitespace go into the skeleton. */
static size_t outside_feed(struct wh_content *d, const unsigned char *p, size_t n)
{
    size_t i, run = 0; /* p[run..i) is still to be added to the skeleton */

    for (i = 0; i < n && !d->error; i++) {
        unsigned char c = p[i];
        if (json_space(c)) {
            if (d->skel_ws) {
                skel_add(d, p + run, i - run);
                run = i + 1;
            }
            d->skel_ws = 1;
            if (d->where == W_ROOT && d->depth == 1 && d->mode == M_SCALAR)
                d->mode = M_NEXT;
            continue;
        }
        d->skel_ws = 0;
        if (d->where == W_BEFORE) {
            if (c != '{')
                content_fail(d, "body is not a JSON object");
            d->where = W_ROOT;
            d->depth = 1;
            d->mode = M_FIRST;
        } else if (d->where == W_AFTER) {
            content_fail(d, "invalid JSON: bytes after the object");
        } else if (c == '"') {
            string_begin(d);
            i++;
            break;
        } else {
            root_token(d, c);
        }
    }
    skel_add(d, p + run, i - run);
    return i;
}

/* ---------------------------------------------------------------- API */

void wh_content_init(struct wh_content *d)
{
    memset(d, 0, sizeof(*d));
}

void wh_content_free(struct wh_content *d)
{
    if (!d)
        return;
    buf_free(&d->skel);
    wh_content_init(d);
}

int wh_content_feed(struct wh_content *d, const char *in, size_t n, char *out, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0;

    *out_len = 0;
    while (i < n && !d->error) {
        if (d->str == STR_NONE) {
            i += outside_feed(d, p + i, n - i);
        } else {
            int copy = d->sink == SINK_NONE || d->sink == SINK_KEY;
            size_t used = string_feed(d, p + i, n - i, out, out_len);
            if (copy)
                skel_add(d, p + i, used);
            i += used;
        }
    }
    if (d->error) {
        *out_len = 0;
        return -1;
    }
    return 0;
}

int wh_content_finish(struct wh_content *d, char *out, size_t *out_len)
{
    const char *err = NULL;
    enum wh_json_content kind;

    (void)out;
    *out_len = 0;
    if (d->error)
        goto out;
    if (d->where != W_AFTER) {
        content_fail(d, d->where == W_BEFORE ? "empty body" : "invalid JSON: truncated");
        goto out;
    }
    if (d->streams == MEMBER_BASE64 && d->q_n != 0) {
        content_fail(d, "content_base64 is not valid base64");
        goto out;
    }
    kind = wh_json_check_content(d->skel.data, d->skel.len, &err);
    if (kind == WH_JSON_NO_CONTENT)
        content_fail(d, err);
    else if ((kind == WH_JSON_CONTENT ? MEMBER_TEXT : MEMBER_BASE64) != d->streams)
        content_fail(d, "the content is not where it was streamed from");
out:
    buf_free(&d->skel);
    return d->error ? -1 : 0;
}

int wh_content_started(const struct wh_content *d)
{
    return d->streams != 0;
}

const char *wh_content_error(const struct wh_content *d)
{
    return d->error ? d->error : "no error";
}
