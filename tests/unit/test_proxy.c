/*
 * Tests for gateway/proxy.c: PROXY protocol v1 and v2 headers fed whole and
 * as every prefix (each copied into a buffer of exactly that size, so that
 * AddressSanitizer catches any read past `len`), malformed headers, the
 * version mask, the trusted-network list and a randomized robustness loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proxy.h"

#define ANY (PROXY_V1 | PROXY_V2)
#define SIG 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A

/* What follows the header: a TLS ClientHello start, then a POP3 command. */
static const unsigned char payload[] = {0x16, 0x03, 0x01, 0x02, 0x00, 'U',
                                        'S',  'E',  'R',  '\r', '\n'};

/* Calls proxy_parse on a private copy of exactly len bytes. */
static int parse_copy(const unsigned char *buf, size_t len, int versions, struct proxy_info *out)
{
    unsigned char *copy = malloc(len ? len : 1);
    int rc;

    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    rc = proxy_parse(len ? copy : NULL, len, versions, out);
    free(copy);
    return rc;
}

/* ---- valid headers ------------------------------------------------------------------ */

struct valid_case {
    const char *name;
    const unsigned char *hdr;
    size_t len;
    int version;
    int local;
    const char *src; /* NULL when local */
    unsigned sport;
    const char *dst;
    unsigned dport;
};

#define V1(s) (const unsigned char *)(s), sizeof(s) - 1

/* clang-format off */
static const unsigned char v2_tcp4[] = {
    SIG, 0x21, 0x11, 0x00, 0x0C,
    192, 0, 2, 1, 198, 51, 100, 2, /* 192.0.2.1, 198.51.100.2 */
    0xC9, 0x42, 0x03, 0xE3,        /* 51522, 995 */
};

static const unsigned char v2_tcp4_tlv[] = {
    SIG, 0x21, 0x11, 0x00, 0x17,
    203, 0, 113, 7, 10, 0, 0, 5,   /* 203.0.113.7, 10.0.0.5 */
    0xC9, 0x42, 0x00, 0x6E,        /* 51522, 110 */
    0x01, 0x00, 0x02, 'h', '2',    /* PP2_TYPE_ALPN */
    0x04, 0x00, 0x03, 0, 0, 0,     /* PP2_TYPE_NOOP */
};

static const unsigned char v2_tcp6[] = {
    SIG, 0x21, 0x21, 0x00, 0x24,
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, /* 2001:db8::1 */
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, /* 2001:db8::2 */
    0x01, 0xBB, 0x00, 0x6E,                                        /* 443, 110 */
};
/* clang-format on */

static const unsigned char v2_local[] = {SIG, 0x20, 0x00, 0x00, 0x00};

/* LOCAL with addresses: the receiver ignores them. */
static const unsigned char v2_local_tcp4[] = {SIG, 0x20, 0x11, 0x00, 0x0C, 10, 0, 0, 1,
                                              10,  0,    0,    2,    0,    1,  0, 2};

static const unsigned char v2_unspec[] = {SIG, 0x21, 0x00, 0x00, 0x03, 0xAA, 0xBB, 0xCC};

static const struct valid_case valid[] = {
    {"v1 tcp4", V1("PROXY TCP4 192.0.2.1 198.51.100.2 51522 995\r\n"), 1, 0, "192.0.2.1", 51522,
     "198.51.100.2", 995},
    {"v1 tcp4 port 0", V1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), 1, 0, "0.0.0.0", 0,
     "255.255.255.255", 65535},
    {"v1 tcp6", V1("PROXY TCP6 2001:db8::1 2001:db8::2 443 110\r\n"), 1, 0, "2001:db8::1", 443,
     "2001:db8::2", 110},
    {"v1 tcp6 mapped", V1("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 10\r\n"), 1, 0, "::ffff:192.0.2.1", 1,
     "::1", 10},
    {"v1 tcp6 longest",
     V1("PROXY TCP6 FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
        "ffff 65535 65535\r\n"),
     1, 0, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535},
    {"v1 unknown", V1("PROXY UNKNOWN\r\n"), 1, 1, NULL, 0, NULL, 0},
    {"v1 unknown 107",
     V1("PROXY UNKNOWN ffff:f:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
        "ffff 65535 65535xxx\r\n"),
     1, 1, NULL, 0, NULL, 0},
    {"v1 unknown junk", V1("PROXY UNKNOWN a\rb  \r\r\n"), 1, 1, NULL, 0, NULL, 0},
    {"v2 tcp4", v2_tcp4, sizeof v2_tcp4, 2, 0, "192.0.2.1", 51522, "198.51.100.2", 995},
    {"v2 tcp4 tlv", v2_tcp4_tlv, sizeof v2_tcp4_tlv, 2, 0, "203.0.113.7", 51522, "10.0.0.5", 110},
    {"v2 tcp6", v2_tcp6, sizeof v2_tcp6, 2, 0, "2001:db8::1", 443, "2001:db8::2", 110},
    {"v2 local", v2_local, sizeof v2_local, 2, 1, NULL, 0, NULL, 0},
    {"v2 local tcp4", v2_local_tcp4, sizeof v2_local_tcp4, 2, 1, NULL, 0, NULL, 0},
    {"v2 unspec", v2_unspec, sizeof v2_unspec, 2, 1, NULL, 0, NULL, 0},
};

static void check_addr(const struct sockaddr_storage *ss, const char *want, unsigned port)
{
    char text[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

        assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text));
        assert_int_equal(ntohs(sin->sin_port), port);
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

        assert_int_equal(ss->ss_family, AF_INET6);
        assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text));
        assert_int_equal(ntohs(sin6->sin6_port), port);
    }
    assert_string_equal(text, want);
}

static void test_valid(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const struct valid_case *c = &valid[i];
        size_t total = c->len + sizeof payload;
        unsigned char *buf = malloc(total);
        struct proxy_info info;
        int mask = c->version == 1 ? PROXY_V1 : PROXY_V2;

        print_message("case %s\n", c->name);
        assert_true(c->len <= PROXY_HEADER_MAX);
        if (c->version == 1)
            assert_true(c->len <= 107);
        assert_non_null(buf);
        memcpy(buf, c->hdr, c->len);
        memcpy(buf + c->len, payload, sizeof payload);

        /* whole, with the payload behind it, under both masks */
        memset(&info, 0xAA, sizeof info);
        assert_int_equal(parse_copy(buf, total, ANY, &info), (int)c->len);
        assert_int_equal(info.version, c->version);
        assert_int_equal(info.local, c->local);
        if (!c->local) {
            check_addr(&info.src, c->src, c->sport);
            check_addr(&info.dst, c->dst, c->dport);
        }
        assert_int_equal(parse_copy(buf, total, mask, NULL), (int)c->len);

        /* every prefix: 0 until the header is complete, then its length */
        for (k = 0; k <= total; k++) {
            struct proxy_info other;
            int rc;

            memset(&other, 0x55, sizeof other);
            rc = parse_copy(buf, k, mask, &other);
            if (k < c->len) {
                if (rc != 0)
                    fail_msg("%s: prefix %zu of %zu gave %d", c->name, k, c->len, rc);
                assert_int_equal(other.version, 0x55555555); /* untouched */
            } else {
                assert_int_equal(rc, (int)c->len);
                assert_memory_equal(&other, &info, offsetof(struct proxy_info, src));
                if (!c->local) {
                    check_addr(&other.src, c->src, c->sport);
                    check_addr(&other.dst, c->dst, c->dport);
                }
            }
        }

        /* the other version only: rejected */
        assert_int_equal(parse_copy(buf, total, mask ^ ANY, NULL), -1);
        assert_int_equal(parse_copy(buf, 1, mask ^ ANY, NULL), -1);
        assert_int_equal(parse_copy(buf, total, 0, NULL), -1);
        free(buf);
    }
}

/* The longest v2 header accepted, and one octet more. */
static void test_v2_max(void **state)
{
    unsigned char buf[PROXY_HEADER_MAX + 8];
    static const unsigned char head[] = {SIG, 0x21, 0x11};
    size_t body = PROXY_HEADER_MAX - 16;

    (void)state;
    memset(buf, 0, sizeof buf);
    memcpy(buf, head, sizeof head);
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)body;
    buf[16] = 127;
    buf[19] = 1;
    assert_int_equal(parse_copy(buf, sizeof buf, ANY, NULL), PROXY_HEADER_MAX);
    assert_int_equal(parse_copy(buf, PROXY_HEADER_MAX - 1, ANY, NULL), 0);
    body++;
    buf[14] = (unsigned char)(body >> 8);
    buf[15] = (unsigned char)body;
    assert_int_equal(parse_copy(buf, 16, ANY, NULL), -1);
    assert_int_equal(parse_copy(buf, sizeof buf, ANY, NULL), -1);
    buf[14] = 0xFF;
    buf[15] = 0xFF;
    assert_int_equal(parse_copy(buf, 16, ANY, NULL), -1);
}

/* ---- invalid headers -------------------------------------------------------------- */

struct invalid_case {
    const char *name;
    const unsigned char *hdr;
    size_t len;
    size_t reject_at; /* the prefix length at which -1 must come, 0: not checked */
};

static const unsigned char v2_badsig[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                                          0x55, 0x49, 0x55, 0x0A, 0x21, 0x00, 0x00, 0x00};
static const unsigned char v2_ver3[] = {SIG, 0x31, 0x11, 0x00, 0x0C, 1, 2, 3, 4,
                                        5,   6,    7,    8,    0,    1, 0, 2};
static const unsigned char v2_ver1[] = {SIG, 0x11, 0x00, 0x00, 0x00};
static const unsigned char v2_cmd2[] = {SIG, 0x22, 0x11, 0x00, 0x0C, 1, 2, 3, 4,
                                        5,   6,    7,    8,    0,    1, 0, 2};
static const unsigned char v2_udp4[] = {SIG, 0x21, 0x12, 0x00, 0x0C, 1, 2, 3, 4,
                                        5,   6,    7,    8,    0,    1, 0, 2};
static const unsigned char v2_udp6[] = {SIG, 0x21, 0x22, 0x00, 0x24};
static const unsigned char v2_unix[] = {SIG, 0x21, 0x31, 0x00, 0xD8};
static const unsigned char v2_badfam[] = {SIG, 0x21, 0x13, 0x00, 0x0C};
static const unsigned char v2_local_badfam[] = {SIG, 0x20, 0x41, 0x00, 0x00};
static const unsigned char v2_short4[] = {SIG, 0x21, 0x11, 0x00, 0x0B, 1, 2, 3,
                                          4,   5,    6,    7,    8,    0, 1, 0};
static const unsigned char v2_short6[] = {SIG, 0x21, 0x21, 0x00, 0x23};
static const unsigned char v2_toolong[] = {SIG, 0x21, 0x11, 0x02, 0x09};

static const struct invalid_case invalid[] = {
    {"http", V1("GET / HTTP/1.0\r\n\r\n"), 1},
    {"pop3 command", V1("USER x\r\n"), 1},
    {"lowercase", V1("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 1},
    {"no space after PROXY", V1("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 6},
    {"TCP5", V1("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), 10},
    {"tcp4 lowercase", V1("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), 7},
    {"UNKNOWNX", V1("PROXY UNKNOWNX\r\n"), 14},
    {"double space after PROXY", V1("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 7},
    {"double space after family", V1("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), 12},
    {"double space between addresses", V1("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), 20},
    {"double space between ports", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"), 30},
    {"trailing space", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), 31},
    {"tab", V1("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), 11},
    {"family then CRLF", V1("PROXY TCP4\r\n"), 11},
    {"missing port", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), 29},
    {"extra field", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), 31},
    {"LF only", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), 31},
    {"CR CR", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r"), 32},
    {"unknown LF only", V1("PROXY UNKNOWN\n"), 14},
    {"ipv4 octet 256", V1("PROXY TCP4 192.0.2.256 5.6.7.8 1 2\r\n"), 23},
    {"ipv4 three parts", V1("PROXY TCP4 192.0.2 5.6.7.8 1 2\r\n"), 19},
    {"ipv4 five parts", V1("PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n"), 29},
    {"ipv4 empty part", V1("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), 18},
    {"ipv4 too long", V1("PROXY TCP4 0000000000000001 5.6.7.8 1 2\r\n"), 27},
    {"ipv4 hex", V1("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"), 13},
    {"ipv6 under TCP4", V1("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), 16},
    {"ipv4 under TCP6", V1("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), 19},
    {"ipv6 triple colon", V1("PROXY TCP6 2001:db8:::1 ::2 1 2\r\n"), 24},
    {"ipv6 two ::", V1("PROXY TCP6 1::2::3 ::2 1 2\r\n"), 19},
    {"ipv6 zone", V1("PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n"), 19},
    {"ipv6 bad dst", V1("PROXY TCP6 ::1 12345::1 1 2\r\n"), 24},
    {"ipv6 brackets", V1("PROXY TCP6 [::1] ::2 1 2\r\n"), 12},
    {"port 65536", V1("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), 32},
    {"dport 65536", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), 34},
    {"port 99999", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"), 34},
    {"port 6 digits", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n"), 35},
    {"port -1", V1("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), 28},
    {"port +1", V1("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), 28},
    {"port leading zero", V1("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), 29},
    {"port 00", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n"), 31},
    {"port hex", V1("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n"), 29},
    {"port space in CRLF", V1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r \n"), 32},
    {"nul in line", V1("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), 19},
    {"unknown too long",
     V1("PROXY UNKNOWN ffff:f:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
        "ffff 65535 65535xxxx\r\n"),
     107},
    {"tcp6 too long",
     V1("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n"),
     107},
    {"v2 bad signature", v2_badsig, sizeof v2_badsig, 11},
    {"v2 version 3", v2_ver3, sizeof v2_ver3, 13},
    {"v2 version 1", v2_ver1, sizeof v2_ver1, 13},
    {"v2 command 2", v2_cmd2, sizeof v2_cmd2, 13},
    {"v2 udp4", v2_udp4, sizeof v2_udp4, 14},
    {"v2 udp6", v2_udp6, sizeof v2_udp6, 14},
    {"v2 unix", v2_unix, sizeof v2_unix, 14},
    {"v2 undefined family", v2_badfam, sizeof v2_badfam, 14},
    {"v2 local undefined family", v2_local_badfam, sizeof v2_local_badfam, 14},
    {"v2 length 11 for tcp4", v2_short4, sizeof v2_short4, 16},
    {"v2 length 35 for tcp6", v2_short6, sizeof v2_short6, 16},
    {"v2 length over max", v2_toolong, sizeof v2_toolong, 16},
};

static void test_invalid(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        const struct invalid_case *c = &invalid[i];
        struct proxy_info info;
        int seen_reject = 0;

        print_message("case %s\n", c->name);
        memset(&info, 0x55, sizeof info);
        assert_int_equal(parse_copy(c->hdr, c->len, ANY, &info), -1);
        assert_int_equal(info.version, 0x55555555);
        /* prefixes: 0, then -1 from reject_at on, never > 0 */
        for (k = 1; k <= c->len; k++) {
            int rc = parse_copy(c->hdr, k, ANY, &info);

            if (rc == -1)
                seen_reject = 1;
            if (c->reject_at && k < c->reject_at && rc != 0)
                fail_msg("%s: prefix %zu gave %d, want 0", c->name, k, rc);
            if ((c->reject_at && k >= c->reject_at) || seen_reject) {
                if (rc != -1)
                    fail_msg("%s: prefix %zu gave %d, want -1", c->name, k, rc);
            }
            assert_true(rc == 0 || rc == -1);
        }
        assert_int_equal(info.version, 0x55555555);
    }
}

/* A v1 line that never ends: 0 up to 106 octets, -1 from 107 on. */
static void test_v1_no_crlf(void **state)
{
    unsigned char buf[300];
    size_t k;

    (void)state;
    memcpy(buf, "PROXY UNKNOWN ", 14);
    memset(buf + 14, 'x', sizeof buf - 14);
    for (k = 0; k < 107; k++)
        assert_int_equal(parse_copy(buf, k, ANY, NULL), 0);
    for (; k <= sizeof buf; k++)
        assert_int_equal(parse_copy(buf, k, ANY, NULL), -1);
    /* CR as the 107th octet: the LF would be the 108th */
    buf[106] = '\r';
    buf[107] = '\n';
    assert_int_equal(parse_copy(buf, 106, ANY, NULL), 0);
    assert_int_equal(parse_copy(buf, 107, ANY, NULL), -1);
    assert_int_equal(parse_copy(buf, 108, ANY, NULL), -1);
    buf[105] = '\r';
    buf[106] = '\n';
    assert_int_equal(parse_copy(buf, 107, ANY, NULL), 107);
}

static void test_prefix_rules(void **state)
{
    static const unsigned char sig[] = {SIG};
    size_t k;

    (void)state;
    assert_int_equal(proxy_parse(NULL, 0, ANY, NULL), 0);
    assert_int_equal(proxy_parse((const unsigned char *)"", 0, PROXY_V1, NULL), 0);
    assert_int_equal(proxy_parse((const unsigned char *)"", 0, 0, NULL), -1);
    for (k = 1; k <= 6; k++) {
        assert_int_equal(parse_copy((const unsigned char *)"PROXY ", k, ANY, NULL), 0);
        assert_int_equal(parse_copy((const unsigned char *)"PROXY ", k, PROXY_V1, NULL), 0);
        assert_int_equal(parse_copy((const unsigned char *)"PROXY ", k, PROXY_V2, NULL), -1);
    }
    for (k = 1; k <= sizeof sig; k++) {
        assert_int_equal(parse_copy(sig, k, ANY, NULL), 0);
        assert_int_equal(parse_copy(sig, k, PROXY_V2, NULL), 0);
        assert_int_equal(parse_copy(sig, k, PROXY_V1, NULL), -1);
    }
    assert_int_equal(parse_copy((const unsigned char *)"PROXX", 5, ANY, NULL), -1);
    assert_int_equal(parse_copy((const unsigned char *)"\r\n\r\n\0\r\nQUIx", 11, ANY, NULL), -1);
    assert_int_equal(parse_copy((const unsigned char *)"\r\n\r\r", 4, ANY, NULL), -1);
}

/* ---- trusted networks -------------------------------------------------------------- */

static void test_nets_parse(void **state)
{
    struct proxy_net nets[8];
    char text[INET6_ADDRSTRLEN];
    static const char *const bad[] = {
        "10.0.0.0/33",   "::/129",        "10.0.0.0/",
        "10.0.0.0/-1",   "10.0.0.0/+8",   "10.0.0.0/08",
        "10.0.0.0/8/8",  "10.0.0.0 /8",   "10.0.0.0/ 8",
        "bogus",         "10.0.0.0/8,",   ",10.0.0.0/8",
        "10.0.0.1,,::1", "10.0.0.1 ::1",  "fe80::1%eth0",
        "10.0.0",        "10.0.0.256",    "/8",
        "10.0.0.0/1a",   "[::1]",         "10.0.0.0/8;",
        "10.0.0.0/0008", "1111::2222::3", "::1/1280",
    };
    size_t i;

    (void)state;
    assert_int_equal(proxy_nets_parse("10.0.0.0/8, ::1, 192.0.2.7", nets, 8), 3);
    assert_int_equal(nets[0].family, AF_INET);
    assert_int_equal(nets[0].prefix, 8);
    assert_non_null(inet_ntop(AF_INET, nets[0].addr, text, sizeof text));
    assert_string_equal(text, "10.0.0.0");
    assert_int_equal(nets[1].family, AF_INET6);
    assert_int_equal(nets[1].prefix, 128);
    assert_non_null(inet_ntop(AF_INET6, nets[1].addr, text, sizeof text));
    assert_string_equal(text, "::1");
    assert_int_equal(nets[2].family, AF_INET);
    assert_int_equal(nets[2].prefix, 32);
    assert_non_null(inet_ntop(AF_INET, nets[2].addr, text, sizeof text));
    assert_string_equal(text, "192.0.2.7");

    assert_int_equal(proxy_nets_parse("  2001:db8::/32 ,\t0.0.0.0/0,::/0  ", nets, 8), 3);
    assert_int_equal(nets[0].family, AF_INET6);
    assert_int_equal(nets[0].prefix, 32);
    assert_int_equal(nets[1].prefix, 0);
    assert_int_equal(nets[2].family, AF_INET6);
    assert_int_equal(nets[2].prefix, 0);

    /* host bits are cleared */
    assert_int_equal(proxy_nets_parse("192.0.2.200/25,2001:db8:ffff::1/33", nets, 8), 2);
    assert_non_null(inet_ntop(AF_INET, nets[0].addr, text, sizeof text));
    assert_string_equal(text, "192.0.2.128");
    assert_non_null(inet_ntop(AF_INET6, nets[1].addr, text, sizeof text));
    assert_string_equal(text, "2001:db8:8000::");

    assert_int_equal(proxy_nets_parse("", nets, 8), 0);
    assert_int_equal(proxy_nets_parse("   ", nets, 8), 0);
    assert_int_equal(proxy_nets_parse(NULL, nets, 8), 0);
    assert_int_equal(proxy_nets_parse("1.1.1.1,2.2.2.2", nets, 2), 2);
    assert_int_equal(proxy_nets_parse("1.1.1.1,2.2.2.2,3.3.3.3", nets, 2), -1);
    assert_int_equal(proxy_nets_parse("1.1.1.1", nets, 0), -1);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (proxy_nets_parse(bad[i], nets, 8) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static int trusted4(const struct proxy_net *nets, int n, const char *ip)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    return proxy_trusted(nets, n, (const struct sockaddr *)&sin);
}

static int trusted6(const struct proxy_net *nets, int n, const char *ip)
{
    struct sockaddr_in6 sin6;

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
    return proxy_trusted(nets, n, (const struct sockaddr *)&sin6);
}

static void test_trusted(void **state)
{
    struct proxy_net nets[8];
    struct sockaddr sa;
    int n;

    (void)state;
    n = proxy_nets_parse("10.0.0.0/8, 192.0.2.128/25, 198.51.100.7, ::1, 2001:db8::/32", nets, 8);
    assert_int_equal(n, 5);
    assert_true(trusted4(nets, n, "10.1.2.3"));
    assert_true(trusted4(nets, n, "10.255.255.255"));
    assert_false(trusted4(nets, n, "11.0.0.1"));
    assert_false(trusted4(nets, n, "9.255.255.255"));
    assert_true(trusted4(nets, n, "192.0.2.128"));
    assert_true(trusted4(nets, n, "192.0.2.200"));
    assert_false(trusted4(nets, n, "192.0.2.127"));
    assert_true(trusted4(nets, n, "198.51.100.7"));
    assert_false(trusted4(nets, n, "198.51.100.8"));
    assert_false(trusted4(nets, n, "127.0.0.1"));
    /* IPv4-mapped IPv6 against the IPv4 nets */
    assert_true(trusted6(nets, n, "::ffff:10.1.2.3"));
    assert_true(trusted6(nets, n, "::ffff:198.51.100.7"));
    assert_false(trusted6(nets, n, "::ffff:11.0.0.1"));
    /* the IPv4-compatible form is not mapped */
    assert_false(trusted6(nets, n, "::10.1.2.3"));
    assert_true(trusted6(nets, n, "::1"));
    assert_false(trusted6(nets, n, "::2"));
    assert_true(trusted6(nets, n, "2001:db8:1::5"));
    assert_false(trusted6(nets, n, "2001:db9::5"));
    /* no nets */
    assert_false(trusted4(nets, 0, "10.1.2.3"));
    assert_false(proxy_trusted(nets, n, NULL));
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNIX;
    assert_false(proxy_trusted(nets, n, &sa));

    /* IPv6 nets do not match plain IPv4; /0 matches its whole family */
    n = proxy_nets_parse("::/0", nets, 8);
    assert_int_equal(n, 1);
    assert_false(trusted4(nets, n, "10.1.2.3"));
    assert_true(trusted6(nets, n, "2001:db8::1"));
    assert_true(trusted6(nets, n, "::ffff:10.1.2.3"));
    n = proxy_nets_parse("0.0.0.0/0", nets, 8);
    assert_true(trusted4(nets, n, "203.0.113.9"));
    assert_true(trusted6(nets, n, "::ffff:203.0.113.9"));
    assert_false(trusted6(nets, n, "2001:db8::1"));
    /* an IPv6 net written over the mapped range */
    n = proxy_nets_parse("::ffff:10.0.0.0/104", nets, 8);
    assert_true(trusted6(nets, n, "::ffff:10.9.9.9"));
    assert_false(trusted4(nets, n, "10.9.9.9"));
    /* host bits in the net do not matter */
    n = proxy_nets_parse("10.1.2.3/8, 192.0.2.77/31", nets, 8);
    assert_true(trusted4(nets, n, "10.9.9.9"));
    assert_true(trusted4(nets, n, "192.0.2.76"));
    assert_false(trusted4(nets, n, "192.0.2.78"));
}

/* ---- robustness ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/*
 * Feeds every prefix of buf and checks the results are consistent: 0 until a
 * decision, then either -1 for every longer prefix or the same length r <= k
 * for every longer prefix.
 */
static void check_consistent(const unsigned char *buf, size_t len, int mask)
{
    int decided = 0;
    size_t k;

    for (k = 0; k <= len; k++) {
        struct proxy_info info;
        int rc = parse_copy(buf, k, mask, &info);

        assert_true(rc >= -1);
        assert_true(rc <= (int)k);
        assert_true(rc <= PROXY_HEADER_MAX);
        if (decided)
            assert_int_equal(rc, decided);
        else if (rc != 0)
            decided = rc;
        if (rc > 0) {
            assert_true(info.version == 1 || info.version == 2);
            assert_true(info.local == 0 || info.local == 1);
            if (info.version == 1)
                assert_true(rc <= 107);
            if (!info.local) {
                assert_true(info.src.ss_family == AF_INET || info.src.ss_family == AF_INET6);
                assert_int_equal(info.src.ss_family, info.dst.ss_family);
            }
        }
    }
}

static void test_random(void **state)
{
    static const char v1chars[] = "PROXY TCP46UNKOW 0123456789.:abcdefABCDEF\r\n-+";
    static const unsigned char sig[] = {SIG};
    unsigned char buf[PROXY_HEADER_MAX + 64];
    int iter;

    (void)state;
    for (iter = 0; iter < 6000; iter++) {
        int kind = (int)(rnd() % 4), mask = (int)(rnd() % 4);
        size_t len = 0, i;

        if (kind == 0) { /* random bytes, sometimes after a signature */
            len = rnd() % sizeof buf;
            for (i = 0; i < len; i++)
                buf[i] = (unsigned char)rnd();
            if (len >= sizeof sig && rnd() % 2)
                memcpy(buf, sig, sizeof sig);
            else if (len >= 6 && rnd() % 2)
                memcpy(buf, "PROXY ", 6);
        } else if (kind == 1) { /* v1-looking text */
            len = 6 + rnd() % 120;
            memcpy(buf, "PROXY ", 6);
            for (i = 6; i < len; i++)
                buf[i] = (unsigned char)v1chars[rnd() % (sizeof v1chars - 1)];
        } else { /* mutations of a valid header */
            const struct valid_case *c = &valid[rnd() % (sizeof valid / sizeof valid[0])];
            int m, nmut = 1 + (int)(rnd() % 3);

            memcpy(buf, c->hdr, c->len);
            len = c->len;
            memcpy(buf + len, payload, sizeof payload);
            len += sizeof payload;
            for (m = 0; m < nmut; m++) {
                size_t pos = rnd() % len;

                switch (rnd() % 4) {
                case 0: /* replace */
                    buf[pos] = (unsigned char)rnd();
                    break;
                case 1: /* flip a bit */
                    buf[pos] ^= (unsigned char)(1u << (rnd() % 8));
                    break;
                case 2: /* delete */
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                    break;
                default: /* insert */
                    if (len < sizeof buf) {
                        memmove(buf + pos + 1, buf + pos, len - pos);
                        buf[pos] = (unsigned char)v1chars[rnd() % (sizeof v1chars - 1)];
                        len++;
                    }
                    break;
                }
                if (len == 0)
                    break;
            }
            if (kind == 3 && len > 0) /* truncate */
                len = rnd() % len;
        }
        check_consistent(buf, len, mask);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),        cmocka_unit_test(test_v2_max),
        cmocka_unit_test(test_invalid),      cmocka_unit_test(test_v1_no_crlf),
        cmocka_unit_test(test_prefix_rules), cmocka_unit_test(test_nets_parse),
        cmocka_unit_test(test_trusted),      cmocka_unit_test(test_random),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
