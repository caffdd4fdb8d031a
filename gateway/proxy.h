/*
 * proxy: a sans-I/O parser for the PROXY protocol header, versions 1 (text)
 * and 2 (binary), as load balancers such as HAProxy send it before the
 * client's first byte.
 */
#ifndef POP3GW_PROXY_H
#define POP3GW_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1 1
#define PROXY_V2 2
#define PROXY_HEADER_MAX 536 /* v1 is at most 107 octets; v2 16 + up to 520 here */

struct proxy_info {
    int version;                 /* 1 or 2 */
    int local;                   /* v2 LOCAL command or v1 UNKNOWN: keep the real peer address */
    struct sockaddr_storage src; /* the client, when !local */
    struct sockaddr_storage dst; /* the address the client connected to, when !local */
};

/*
 * Parses the header at the start of `buf` (`len` bytes seen so far).
 * `versions` is a mask of PROXY_V1 | PROXY_V2 that are accepted.
 * Returns the header's length in octets (> 0) when complete and valid, 0
 * when more bytes are needed, -1 when it is malformed or of a version not
 * accepted. Never reads past `len`; never consumes the bytes after the header.
 */
int proxy_parse(const unsigned char *buf, size_t len, int versions, struct proxy_info *out);

/*
 * Parses a comma-separated list of networks ("10.0.0.0/8, ::1, 192.0.2.7")
 * into `nets` (at most max entries). Returns the count, or -1 on a bad entry.
 */
struct proxy_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};
int proxy_nets_parse(const char *list, struct proxy_net *nets, int max);

/* True when `sa` (IPv4, IPv6 or IPv4-mapped IPv6) is inside one of the nets. */
int proxy_trusted(const struct proxy_net *nets, int n, const struct sockaddr *sa);

#endif
