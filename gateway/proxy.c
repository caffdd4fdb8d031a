/*
 * proxy: the PROXY protocol header, versions 1 and 2, parsed without I/O.
 *
 * The caller peeks at the socket and hands over every byte seen so far; the
 * parser starts from the beginning each time (a header is at most
 * PROXY_HEADER_MAX octets, so this is cheap) and says whether the bytes are a
 * complete header, the valid start of one, or garbage. Every check that can
 * be made on a prefix is made as soon as the byte arrives, so a client that
 * does not speak the protocol is turned away without waiting for a timeout.
 *
 * Version 1 is one text line, at most 107 octets with its CRLF:
 *   "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (also TCP6)
 *   "PROXY UNKNOWN[ <anything>]\r\n"
 * Version 2 is a 16-octet binary preamble (signature, version and command,
 * family and protocol, big-endian length of the rest) followed by the
 * addresses and then TLVs, which are skipped.
 */
#include "gateway/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define PROXY_V1_MAX 107 /* the longest v1 line, CRLF included */
#define PROXY_V2_FIXED 16
#define PROXY_V4_ADDRSTR 15 /* "255.255.255.255" */
#define PROXY_V6_ADDRSTR 45 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" */

static const unsigned char v1_magic[] = "PROXY ";
#define V1_MAGIC_LEN 6

static const unsigned char v2_magic[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
#define V2_MAGIC_LEN 12

/* v2 family and transport protocol byte */
#define V2_UNSPEC 0x00
#define V2_TCP4 0x11
#define V2_UDP4 0x12
#define V2_TCP6 0x21
#define V2_UDP6 0x22
#define V2_UNIX_STREAM 0x31
#define V2_UNIX_DGRAM 0x32

#define V2_ADDRS_INET 12
#define V2_ADDRS_INET6 36

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* True when the first min(len, n) bytes of buf equal those of magic. */
static int starts_like(const unsigned char *buf, size_t len, const unsigned char *magic, size_t n)
{
    return memcmp(buf, magic, min_size(len, n)) == 0;
}

static void set_inet(struct sockaddr_storage *ss, const void *addr4, unsigned port)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    memcpy(&sin.sin_addr, addr4, 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &sin, sizeof sin);
}

static void set_inet6(struct sockaddr_storage *ss, const void *addr16, unsigned port)
{
    struct sockaddr_in6 sin6;

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons((uint16_t)port);
    memcpy(&sin6.sin6_addr, addr16, 16);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &sin6, sizeof sin6);
}

/* ---- version 1 ----------------------------------------------------------------- */

enum v1_state {
    V1_FAMILY, /* "TCP4", "TCP6" or "UNKNOWN" */
    V1_SRC,    /* source address */
    V1_DST,    /* destination address */
    V1_SPORT,  /* source port, ended by a space */
    V1_DPORT,  /* destination port, ended by CR */
    V1_LF,     /* the LF after the CR */
    V1_ANY,    /* after "UNKNOWN ": anything up to CRLF */
    V1_ANY_CR, /* after "UNKNOWN ": a CR was seen */
};

struct v1_parser {
    enum v1_state state;
    int family; /* AF_INET, AF_INET6 or AF_UNSPEC for UNKNOWN */
    char tok[PROXY_V6_ADDRSTR + 1];
    size_t toklen;
    unsigned port;
    int digits;
    unsigned char src[16], dst[16];
    unsigned sport, dport;
};

static int v1_family_char(struct v1_parser *p, unsigned char c)
{
    static const char *const names[] = {"TCP4", "TCP6", "UNKNOWN"};
    size_t i;

    if (c == ' ' || c == '\r') {
        p->tok[p->toklen] = '\0';
        if (strcmp(p->tok, "UNKNOWN") == 0) {
            p->family = AF_UNSPEC;
            p->state = c == ' ' ? V1_ANY : V1_LF;
            return 0;
        }
        if (c != ' ')
            return -1;
        if (strcmp(p->tok, "TCP4") == 0)
            p->family = AF_INET;
        else if (strcmp(p->tok, "TCP6") == 0)
            p->family = AF_INET6;
        else
            return -1;
        p->state = V1_SRC;
        p->toklen = 0;
        return 0;
    }
    if (p->toklen >= sizeof p->tok - 1)
        return -1;
    p->tok[p->toklen++] = (char)c;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (p->toklen <= strlen(names[i]) && memcmp(p->tok, names[i], p->toklen) == 0)
            return 0;
    return -1;
}

static int v1_addr_char_ok(int family, unsigned char c)
{
    if ((c >= '0' && c <= '9') || c == '.')
        return 1;
    return family == AF_INET6 && (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
}

static int v1_addr_char(struct v1_parser *p, unsigned char c)
{
    size_t max = p->family == AF_INET ? PROXY_V4_ADDRSTR : PROXY_V6_ADDRSTR;
    unsigned char *to = p->state == V1_SRC ? p->src : p->dst;

    if (c == ' ') {
        p->tok[p->toklen] = '\0';
        if (p->toklen == 0 || inet_pton(p->family, p->tok, to) != 1)
            return -1;
        p->toklen = 0;
        p->state = p->state == V1_SRC ? V1_DST : V1_SPORT;
        p->port = 0;
        p->digits = 0;
        return 0;
    }
    if (!v1_addr_char_ok(p->family, c) || p->toklen >= max)
        return -1;
    p->tok[p->toklen++] = (char)c;
    return 0;
}

static int v1_port_char(struct v1_parser *p, unsigned char c)
{
    unsigned char end = p->state == V1_SPORT ? ' ' : '\r';

    if (c == end) {
        if (p->digits == 0)
            return -1;
        if (p->state == V1_SPORT) {
            p->sport = p->port;
            p->state = V1_DPORT;
            p->port = 0;
            p->digits = 0;
        } else {
            p->dport = p->port;
            p->state = V1_LF;
        }
        return 0;
    }
    if (c < '0' || c > '9')
        return -1;
    if (p->digits > 0 && p->port == 0) /* a leading zero */
        return -1;
    p->port = p->port * 10 + (unsigned)(c - '0');
    p->digits++;
    return p->port > 65535 ? -1 : 0;
}

static int parse_v1(const unsigned char *buf, size_t len, struct proxy_info *out)
{
    struct v1_parser p;
    size_t i;
    int rc = 0;

    memset(&p, 0, sizeof p);
    p.state = V1_FAMILY;
    for (i = V1_MAGIC_LEN; i < len; i++) {
        unsigned char c = buf[i];

        switch (p.state) {
        case V1_FAMILY:
            rc = v1_family_char(&p, c);
            break;
        case V1_SRC:
        case V1_DST:
            rc = v1_addr_char(&p, c);
            break;
        case V1_SPORT:
        case V1_DPORT:
            rc = v1_port_char(&p, c);
            break;
        case V1_ANY:
            if (c == '\r')
                p.state = V1_ANY_CR;
            break;
        case V1_ANY_CR:
            if (c == '\n')
                goto done;
            if (c != '\r')
                p.state = V1_ANY;
            break;
        case V1_LF:
            if (c != '\n')
                return -1;
            goto done;
        }
        if (rc < 0)
            return -1;
        if (i + 1 >= PROXY_V1_MAX) /* 107 octets and no CRLF yet */
            return -1;
    }
    return 0;

done:
    if (out) {
        memset(out, 0, sizeof *out);
        out->version = 1;
        if (p.family == AF_UNSPEC) {
            out->local = 1;
        } else if (p.family == AF_INET) {
            set_inet(&out->src, p.src, p.sport);
            set_inet(&out->dst, p.dst, p.dport);
        } else {
            set_inet6(&out->src, p.src, p.sport);
            set_inet6(&out->dst, p.dst, p.dport);
        }
    }
    return (int)(i + 1);
}

/* ---- version 2 ----------------------------------------------------------------- */

static int v2_family_known(unsigned char fam)
{
    switch (fam) {
    case V2_UNSPEC:
    case V2_TCP4:
    case V2_UDP4:
    case V2_TCP6:
    case V2_UDP6:
    case V2_UNIX_STREAM:
    case V2_UNIX_DGRAM:
        return 1;
    default:
        return 0;
    }
}

static int parse_v2(const unsigned char *buf, size_t len, struct proxy_info *out)
{
    unsigned char cmd, fam;
    size_t total, need = 0;

    if (len <= V2_MAGIC_LEN)
        return 0;
    if ((buf[12] >> 4) != 2)
        return -1;
    cmd = buf[12] & 0x0F;
    if (cmd > 1) /* 0 LOCAL, 1 PROXY */
        return -1;
    if (len <= 13)
        return 0;
    fam = buf[13];
    /* Undefined family bytes are invalid even under LOCAL. */
    if (!v2_family_known(fam))
        return -1;
    if (cmd == 1) {
        if (fam == V2_TCP4)
            need = V2_ADDRS_INET;
        else if (fam == V2_TCP6)
            need = V2_ADDRS_INET6;
        else if (fam != V2_UNSPEC)
            return -1; /* UDP or UNIX: we serve TCP only */
    }
    if (len < PROXY_V2_FIXED)
        return 0;
    total = PROXY_V2_FIXED + (((size_t)buf[14] << 8) | buf[15]);
    if (total > PROXY_HEADER_MAX || total < PROXY_V2_FIXED + need)
        return -1;
    if (len < total)
        return 0;

    if (out) {
        const unsigned char *a = buf + PROXY_V2_FIXED;

        memset(out, 0, sizeof *out);
        out->version = 2;
        if (need == V2_ADDRS_INET) {
            set_inet(&out->src, a, ((unsigned)a[8] << 8) | a[9]);
            set_inet(&out->dst, a + 4, ((unsigned)a[10] << 8) | a[11]);
        } else if (need == V2_ADDRS_INET6) {
            set_inet6(&out->src, a, ((unsigned)a[32] << 8) | a[33]);
            set_inet6(&out->dst, a + 16, ((unsigned)a[34] << 8) | a[35]);
        } else {
            /* LOCAL (addresses, if any, are ignored) or PROXY UNSPEC */
            out->local = 1;
        }
    }
    return (int)total;
}

int proxy_parse(const unsigned char *buf, size_t len, int versions, struct proxy_info *out)
{
    if (len == 0)
        return (versions & (PROXY_V1 | PROXY_V2)) ? 0 : -1;
    if (buf == NULL)
        return -1;
    if ((versions & PROXY_V1) && starts_like(buf, len, v1_magic, V1_MAGIC_LEN))
        return len <= V1_MAGIC_LEN ? 0 : parse_v1(buf, len, out);
    if ((versions & PROXY_V2) && starts_like(buf, len, v2_magic, V2_MAGIC_LEN))
        return parse_v2(buf, len, out);
    return -1;
}

/* ---- trusted networks ----------------------------------------------------------- */

static int is_list_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses one entry, "addr" or "addr/prefix", `n` bytes at s. */
static int net_parse_one(const char *s, size_t n, struct proxy_net *net)
{
    char tmp[PROXY_V6_ADDRSTR + 1];
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    int bits, prefix, i;

    if (alen == 0 || alen >= sizeof tmp)
        return -1;
    memcpy(tmp, s, alen);
    tmp[alen] = '\0';
    memset(net, 0, sizeof *net);
    if (inet_pton(AF_INET, tmp, net->addr) == 1) {
        net->family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, tmp, net->addr) == 1) {
        net->family = AF_INET6;
        bits = 128;
    } else {
        return -1;
    }
    prefix = bits;
    if (slash) {
        const char *d = slash + 1, *end = s + n;

        if (d == end || end - d > 3 || (*d == '0' && end - d > 1))
            return -1;
        prefix = 0;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9')
                return -1;
            prefix = prefix * 10 + (*d - '0');
        }
        if (prefix > bits)
            return -1;
    }
    net->prefix = prefix;
    /* Clear the host bits so that matching compares whole bytes. */
    for (i = 0; i < bits / 8; i++) {
        int keep = prefix - i * 8;

        if (keep <= 0)
            net->addr[i] = 0;
        else if (keep < 8)
            net->addr[i] &= (unsigned char)(0xFF << (8 - keep));
    }
    return 0;
}

int proxy_nets_parse(const char *list, struct proxy_net *nets, int max)
{
    const char *p = list;
    int n = 0;

    if (list == NULL)
        return 0;
    while (is_list_space(*p))
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *start, *end;

        while (is_list_space(*p))
            p++;
        start = p;
        while (*p != '\0' && *p != ',' && !is_list_space(*p))
            p++;
        end = p;
        while (is_list_space(*p))
            p++;
        if (*p != '\0' && *p != ',')
            return -1; /* a space inside an entry */
        if (end == start || n >= max)
            return -1;
        if (net_parse_one(start, (size_t)(end - start), &nets[n]) < 0)
            return -1;
        n++;
        if (*p == '\0')
            return n;
        p++; /* the comma */
    }
}

static int prefix_match(const unsigned char *a, const unsigned char *net, int prefix)
{
    int whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[whole] ^ net[whole]) & (0xFF << (8 - rest)) & 0xFF) == 0;
}

int proxy_trusted(const struct proxy_net *nets, int n, const struct sockaddr *sa)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    unsigned char v4[4], v6[16];
    int has4 = 0, has6 = 0, i;

    if (nets == NULL || sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;

        memcpy(&sin, sa, sizeof sin);
        memcpy(v4, &sin.sin_addr, 4);
        has4 = 1;
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;

        memcpy(&sin6, sa, sizeof sin6);
        memcpy(v6, &sin6.sin6_addr, 16);
        has6 = 1;
        if (memcmp(v6, mapped, sizeof mapped) == 0) {
            memcpy(v4, v6 + 12, 4);
            has4 = 1;
        }
    } else {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (nets[i].family == AF_INET && has4 && prefix_match(v4, nets[i].addr, nets[i].prefix))
            return 1;
        if (nets[i].family == AF_INET6 && has6 && prefix_match(v6, nets[i].addr, nets[i].prefix))
            return 1;
    }
    return 0;
}
