/*
 * fuzz_proxy: the PROXY protocol header parser and the trusted-network list
 * (gateway/proxy.c).
 *
 * Input: byte 0 picks the accepted versions (bits 0-1: PROXY_V1 | PROXY_V2)
 * and, in bits 2-4, the size of the network array; the rest is what the
 * socket delivered, and also, as a C string, a proxy_trusted list.
 *
 * proxy_parse() sees every prefix of the bytes, each in an allocation of
 * exactly its length (a read past `len` shows under ASan), as the caller that
 * peeks at a socket would. Checks, from proxy.h's contract:
 * - a verdict never changes as bytes arrive: once -1, always -1; once a
 *   complete header of h octets, h for every longer prefix;
 * - "need more" (0) never lasts past PROXY_HEADER_MAX octets;
 * - a header's length is at most the prefix and PROXY_HEADER_MAX; its info is
 *   of an accepted version with an AF_INET or AF_INET6 address unless local;
 * - out = NULL gives the same answer.
 * For the network list: at most `max` entries, each a valid prefix, and each
 * net contains its own (masked) address.
 */
#include "fuzz.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "gateway/proxy.h"

#define MAX_NETS 8

static void check_info(const struct proxy_info *pi, int versions, int rc)
{
    FUZZ_CHECK(pi->version == 1 || pi->version == 2);
    FUZZ_CHECK(versions & (pi->version == 1 ? PROXY_V1 : PROXY_V2));
    if (pi->version == 1)
        FUZZ_CHECK(rc <= 107);
    if (pi->local)
        return;
    FUZZ_CHECK(pi->src.ss_family == AF_INET || pi->src.ss_family == AF_INET6);
    FUZZ_CHECK(pi->dst.ss_family == pi->src.ss_family);
}

static void check_nets(const char *list, int max)
{
    struct proxy_net nets[MAX_NETS];
    int n, i;

    n = proxy_nets_parse(list, nets, max);
    FUZZ_CHECK(n >= -1 && n <= max);
    for (i = 0; i < n; i++) {
        struct sockaddr_storage ss;

        memset(&ss, 0, sizeof(ss));
        if (nets[i].family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            FUZZ_CHECK(nets[i].prefix >= 0 && nets[i].prefix <= 32);
            sin->sin_family = AF_INET;
            memcpy(&sin->sin_addr, nets[i].addr, 4);
            FUZZ_CHECK(proxy_trusted(&nets[i], 1, (struct sockaddr *)&ss));
            {
                /* The same address as IPv4-mapped IPv6 is trusted too. */
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
                unsigned char a[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
                memcpy(a + 12, nets[i].addr, 4);
                memset(&ss, 0, sizeof(ss));
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, a, 16);
                FUZZ_CHECK(proxy_trusted(&nets[i], 1, (struct sockaddr *)&ss));
            }
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            FUZZ_CHECK(nets[i].family == AF_INET6);
            FUZZ_CHECK(nets[i].prefix >= 0 && nets[i].prefix <= 128);
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, nets[i].addr, 16);
            FUZZ_CHECK(proxy_trusted(&nets[i], 1, (struct sockaddr *)&ss));
        }
    }
    FUZZ_CHECK(proxy_trusted(nets, 0, NULL) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int versions, max, verdict = 0, rc;
    size_t len, k;
    const uint8_t *buf;
    char *list;

    if (size < 1)
        return 0;
    versions = data[0] & 3;
    max = 1 + ((data[0] >> 2) & 7);
    buf = data + 1;
    len = size - 1;
    if (len > 2 * PROXY_HEADER_MAX)
        len = 2 * PROXY_HEADER_MAX;

    for (k = 0; k <= len; k++) {
        uint8_t *copy = k ? fuzz_memdup(buf, k) : NULL;
        struct proxy_info pi;

        memset(&pi, 0xa5, sizeof(pi));
        rc = proxy_parse(copy, k, versions, &pi);
        FUZZ_CHECK(rc == proxy_parse(copy, k, versions, NULL));
        free(copy);
        FUZZ_CHECK(rc >= -1);
        if (rc == 0)
            FUZZ_CHECK(k < PROXY_HEADER_MAX);
        if (rc > 0) {
            FUZZ_CHECK((size_t)rc <= k && rc <= PROXY_HEADER_MAX);
            check_info(&pi, versions, rc);
        }
        if (verdict != 0)
            FUZZ_CHECK(rc == verdict); /* decided once and for all */
        verdict = rc;
    }

    list = fuzz_strndup(buf, size - 1);
    check_nets(list, max);
    free(list);
    return 0;
}
