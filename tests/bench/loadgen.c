/*
 * loadgen: the load generator of `make bench` (tests/bench/run.sh).
 *
 * One thread, one epoll loop, non-blocking sockets; every connection is a
 * small state machine. No dependencies beyond libc and Linux.
 *
 * Modes (all print one line of key=value results on stdout):
 *
 *   sessions  full POP3 sessions back to back on C connections: connect,
 *             greeting, USER, PASS, STAT, UIDL, RETR 1, QUIT (then the
 *             server's close). Every reply is checked: +OK status lines, the
 *             multi-line terminators, dot-stuffing, the number of UIDL lines
 *             against STAT, and the RETR octet count against LIST 1 (asked
 *             once by a probe session before the run). Latency of a session:
 *             from connect() to the +OK of QUIT.
 *   idle      opens N connections (at most C connecting at once), logs each
 *             in, sends STAT, then holds them idle; reports when all are
 *             logged in (and the server's RSS, with --pid), holds for
 *             --hold seconds, and closes them.
 *   stall     like idle, but each connection (with a 4 KB receive buffer)
 *             sends RETR k after STAT, reads its +OK and then nothing more:
 *             slow readers that hold a message in the server's hands.
 *             Both read the server's RSS --settle seconds (1) after the
 *             last login (stall: after the last +OK of RETR).
 *   retr      one connection: log in, LIST k, RETR k timed (bytes/s), octet
 *             count checked against LIST k; samples the server's RSS during
 *             the transfer (--pid).
 *   http      the gateway's call sequence straight to the backend over
 *             keep-alive HTTP/1.1 on C connections: authenticate, list,
 *             retrieve, quit per session (Content-Length responses).
 *   get       GET PATH over HTTP, prints the body (for the backend's /_stats).
 *   mkmsg     writes a message file of exactly BYTES octets with LF line ends.
 *
 * Build: cc -O2 -std=c11 -Wall -Wextra -Werror -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define LINE_MAX_LEN 1024       /* a POP3 status line (RFC 2449: 512 octets) */
#define HTTP_HDR_MAX 8192       /* an HTTP response head */
#define HTTP_BODY_KEEP 1024     /* body octets kept for checks */
#define RBUF_SIZE (1024 * 1024) /* one read buffer for every connection */

/* ---- options and results ------------------------------------------------ */

enum mode { M_SESSIONS, M_IDLE, M_RETR, M_HTTP, M_STALL };

static struct {
    enum mode mode;
    struct sockaddr_in addr;
    char host[64];
    int port;
    int conc;          /* concurrency (idle: connecting at once) */
    long count;        /* sessions (or idle connections); 0 = use duration */
    double duration;   /* seconds measured */
    double warmup;     /* seconds before measuring */
    double timeout;    /* seconds for one session (idle: to get logged in) */
    double hold;       /* idle: seconds to hold after all logged in */
    double settle;     /* idle, stall: seconds before reading the RSS */
    const char *user, *pass;
    int msg;           /* message number for RETR / retrieve */
    int srcs;          /* loopback source addresses to spread over */
    int pid, bpid;     /* gateway and backend, for RSS and CPU */
    int verbose;
} opt;

/* errors by kind */
enum err { E_CONNECT, E_EOF, E_PROTO, E_SIZE, E_TIMEOUT, E_IO, E_N };
static const char *const err_names[E_N] = {"connect", "eof", "proto", "size", "timeout", "io"};
static unsigned long errs[E_N];
static unsigned long errs_printed;

static uint64_t t0_ns;         /* start */
static uint64_t win_start_ns;  /* measurement window */
static uint64_t win_end_ns;
static int stopping;           /* no new sessions */
static volatile sig_atomic_t got_signal;

/* latencies of measured sessions, in microseconds */
static uint32_t *lat;
static size_t n_lat, cap_lat;
static unsigned long done_in_window, done_total, started_total;

static uint64_t expect_size; /* octets of message `msg` (LIST), or retrieve body */
static int expect_msgs;      /* messages in the maildrop (STAT) */

static long long retr_cpu0 = -1; /* gateway CPU when RETR was sent */

static char *rbuf; /* shared read buffer */
static int ep;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static void lat_add(uint64_t ns)
{
    if (n_lat == cap_lat) {
        size_t cap = cap_lat ? cap_lat * 2 : 65536;
        uint32_t *p = realloc(lat, cap * sizeof(*p));
        if (!p)
            die("out of memory");
        lat = p;
        cap_lat = cap;
    }
    uint64_t us = ns / 1000;
    lat[n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile, in milliseconds */
static double lat_pct(double p)
{
    if (n_lat == 0)
        return 0;
    size_t k = (size_t)((p / 100.0) * (double)n_lat + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n_lat)
        k = n_lat;
    return lat[k - 1] / 1000.0;
}

/* ---- /proc readings ----------------------------------------------------- */

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* user + system CPU time of a process, microseconds */
static long long proc_cpu_us(int pid)
{
    char path[64], buf[2048];
    FILE *f;
    size_t n;
    unsigned long long ut = 0, st = 0;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)((ut + st) * 1000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* this process's user + system CPU time, microseconds */
static long long self_cpu_us(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return -1;
    return (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000ll + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

/* ---- connections -------------------------------------------------------- */

enum pst {
    P_FREE,
    P_CONNECTING,
    P_GREETING,
    P_USER,
    P_PASS,
    P_STAT,
    P_LIST1,   /* LIST k (probe, retr) */
    P_UIDL,    /* +OK line */
    P_UIDL_ML, /* its lines */
    P_RETR,
    P_RETR_ML,
    P_QUIT,
    P_CLOSEWAIT, /* QUIT answered: wait for the server to close */
    P_IDLE,      /* idle mode: logged in, holding */
    P_STALLED,   /* stall mode: RETR answered +OK, the body is not read */
    H_SEND,      /* http: waiting for the response of step `step` */
};

/* A multi-line response body being parsed: terminator, dot-stuffing, octets
 * (after removing the stuffing: what RFC 1939 sizes count) and lines. */
enum mlst { ML_BOL, ML_MID, ML_DOT, ML_DOTCR, ML_END };
struct ml {
    enum mlst st;
    uint64_t octets;
    uint64_t lines;
    uint64_t bad_stuffing; /* a line with one leading dot that is not the terminator */
};

struct hresp {
    int in_body;
    char hdr[HTTP_HDR_MAX];
    size_t hlen;
    int status;
    long long clen;
    long long got;
    int close;
    char body[HTTP_BODY_KEEP + 1];
    size_t blen;
};

struct lconn {
    int fd;
    enum pst st;
    int probe;          /* the probe session (learns LIST k) */
    uint64_t t_start;   /* session start */
    uint64_t deadline;  /* session deadline (0: none) */
    char line[LINE_MAX_LEN + 1];
    size_t llen;
    struct ml ml;
    int stat_n;         /* from STAT */
    char out[2048];     /* pending output */
    size_t olen, ooff;
    unsigned events;    /* registered epoll events */
    /* http */
    int step;           /* 0 authenticate, 1 list, 2 retrieve, 3 quit */
    unsigned long sess_no;
    struct hresp *hr;
    /* retr */
    uint64_t t_retr;
    uint64_t t_phase;          /* when the current step's request left (or the connect) */
    uint32_t phase_us[7];      /* this session's steps, reported if it ends in the window */
};

/* Session steps, for the mean time of each (phase_ms in the result line). */
enum phase { PH_GREETING, PH_USER, PH_PASS, PH_STAT, PH_UIDL, PH_RETR, PH_QUIT, PH_N };
static uint64_t phase_sum_us[PH_N];
static unsigned long phase_n;

static struct lconn *conns;
static int n_conns;
static unsigned long src_rr;
static unsigned long sess_seq;

static void err_count(struct lconn *c, enum err e, const char *fmt, ...)
{
    va_list ap;
    (void)c;
    errs[e]++;
    if (errs_printed < 5 || opt.verbose) {
        errs_printed++;
        fprintf(stderr, "loadgen: error (%s): ", err_names[e]);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
}

static void conn_set_events(struct lconn *c, unsigned ev)
{
    struct epoll_event e;

    if (c->events == ev)
        return;
    memset(&e, 0, sizeof(e));
    e.events = ev;
    e.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = ev;
}

static void conn_close(struct lconn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->st = P_FREE;
    c->llen = c->olen = c->ooff = 0;
    c->deadline = 0;
}

/* Starts a non-blocking connect. 0, or -1 (counted). */
static int conn_open(struct lconn *c)
{
    struct epoll_event e;
    int one = 1, fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_count(c, E_CONNECT, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (opt.mode == M_STALL) {
        int rcv = 4096; /* a slow reader: the server's data waits on its side */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    }
    if (opt.srcs > 1) {
        /* Spread over 127.0.0.1..N so that ephemeral ports do not run out
         * at thousands of connections per second. */
        struct sockaddr_in src;
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(src_rr++ % (unsigned long)opt.srcs));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            err_count(c, E_CONNECT, "bind: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (struct sockaddr *)&opt.addr, sizeof(opt.addr)) < 0 && errno != EINPROGRESS) {
        err_count(c, E_CONNECT, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->st = P_CONNECTING;
    c->llen = c->olen = c->ooff = 0;
    memset(&e, 0, sizeof(e));
    e.events = EPOLLOUT;
    e.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = EPOLLOUT;
    return 0;
}

/* Queues bytes and writes what the socket takes. 0 or -1. */
static int conn_send(struct lconn *c, const char *p, size_t n)
{
    if (c->olen - c->ooff + n > sizeof(c->out))
        die("output overflow");
    if (c->ooff == c->olen)
        c->olen = c->ooff = 0;
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
    while (c->ooff < c->olen) {
        ssize_t w = write(c->fd, c->out + c->ooff, c->olen - c->ooff);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w < 0) {
            err_count(c, E_IO, "write: %s", strerror(errno));
            return -1;
        }
        c->ooff += (size_t)w;
    }
    conn_set_events(c, c->ooff < c->olen ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

static int conn_sendf(struct lconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_sendf(struct lconn *c, const char *fmt, ...)
{
    char b[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(b))
        die("command too long");
    return conn_send(c, b, (size_t)n);
}

/* ---- the multi-line parser ---------------------------------------------- */

/* Consumes body bytes up to and including the terminator "CRLF.CRLF" (whose
 * first CRLF ends the last line). Returns the bytes consumed; m->st becomes
 * ML_END at the terminator. */
static size_t ml_feed(struct ml *m, const char *p, size_t n)
{
    const char *s = p, *e = p + n;

    while (s < e) {
        if (m->st == ML_BOL) {
            if (*s == '.') {
                m->st = ML_DOT;
                s++;
                continue;
            }
            m->st = ML_MID;
        }
        if (m->st == ML_MID) {
            const char *nl = memchr(s, '\n', (size_t)(e - s));
            if (!nl) {
                m->octets += (uint64_t)(e - s);
                s = e;
                break;
            }
            m->octets += (uint64_t)(nl - s + 1);
            m->lines++;
            s = nl + 1;
            m->st = ML_BOL;
        } else if (m->st == ML_DOT) {
            if (*s == '\r') {
                m->st = ML_DOTCR;
                s++;
                continue;
            }
            /* A stuffed line: the first dot goes; the next byte must be a dot. */
            if (*s != '.')
                m->bad_stuffing++;
            m->st = ML_MID;
        } else if (m->st == ML_DOTCR) {
            if (*s == '\n') {
                m->st = ML_END;
                return (size_t)(s + 1 - p);
            }
            /* ".\r" not followed by LF: stuffing error, count the CR */
            m->bad_stuffing++;
            m->octets++;
            m->st = ML_MID;
        } else {
            break;
        }
    }
    return (size_t)(s - p);
}

/* ---- POP3 sessions ------------------------------------------------------ */

static void session_start(struct lconn *c);

static void session_fail(struct lconn *c, enum err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_fail(struct lconn *c, enum err e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_count(c, e, "state %d: %s", (int)c->st, msg);
    if (c->probe)
        die("probe session failed: %s", msg);
    conn_close(c);
    if (opt.mode == M_SESSIONS)
        session_start(c);
}

static int in_window(uint64_t t)
{
    return t >= win_start_ns && (win_end_ns == 0 || t <= win_end_ns);
}

/* A session ended well (QUIT answered and the server closed). */
static void session_done(struct lconn *c)
{
    int probe = c->probe;

    conn_close(c);
    if (opt.mode == M_SESSIONS && !probe)
        session_start(c);
}

static void session_start(struct lconn *c)
{
    if (stopping || (opt.count > 0 && (long)started_total >= opt.count))
        return;
    started_total++;
    c->t_start = c->t_phase = now_ns();
    c->deadline = opt.timeout > 0 ? c->t_start + (uint64_t)(opt.timeout * 1e9) : 0;
    c->probe = 0;
    if (conn_open(c) < 0)
        c->st = P_FREE; /* retried by the main loop */
}

static int is_ok(const char *line)
{
    return strncmp(line, "+OK", 3) == 0 && (line[3] == '\r' || line[3] == ' ' || line[3] == '\n');
}

static void body_done(struct lconn *c);

/* A step's reply is complete: note how long it took. */
static void phase_mark(struct lconn *c, enum phase ph)
{
    uint64_t t = now_ns(), us = (t - c->t_phase) / 1000;

    c->phase_us[ph] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    c->t_phase = t;
}

static void pop3_line(struct lconn *c, char *line)
{
    size_t n = strlen(line);

    if (n < 2 || line[n - 1] != '\n' || line[n - 2] != '\r') {
        session_fail(c, E_PROTO, "reply line without CRLF: %.80s", line);
        return;
    }
    line[n - 2] = '\0';
    if (!is_ok(line)) {
        session_fail(c, E_PROTO, "not +OK: %.200s", line);
        return;
    }
    switch (c->st) {
    case P_GREETING:
        phase_mark(c, PH_GREETING);
        c->st = P_USER;
        conn_sendf(c, "USER %s\r\n", opt.user);
        break;
    case P_USER:
        phase_mark(c, PH_USER);
        c->st = P_PASS;
        conn_sendf(c, "PASS %s\r\n", opt.pass);
        break;
    case P_PASS:
        phase_mark(c, PH_PASS);
        c->st = P_STAT;
        conn_send(c, "STAT\r\n", 6);
        break;
    case P_STAT: {
        unsigned long long octets;
        phase_mark(c, PH_STAT);
        if (sscanf(line, "+OK %d %llu", &c->stat_n, &octets) != 2 || c->stat_n < opt.msg) {
            session_fail(c, E_PROTO, "bad STAT reply: %s (need message %d)", line, opt.msg);
            return;
        }
        if (expect_msgs && c->stat_n != expect_msgs) {
            session_fail(c, E_PROTO, "STAT says %d messages, expected %d", c->stat_n, expect_msgs);
            return;
        }
        if (opt.mode == M_IDLE) {
            c->st = P_IDLE;
            c->deadline = 0;
            done_total++;
            return;
        }
        if (opt.mode == M_STALL) {
            c->st = P_RETR;
            conn_sendf(c, "RETR %d\r\n", opt.msg);
            return;
        }
        if (c->probe || opt.mode == M_RETR) {
            c->st = P_LIST1;
            conn_sendf(c, "LIST %d\r\n", opt.msg);
            return;
        }
        c->st = P_UIDL;
        conn_send(c, "UIDL\r\n", 6);
        break;
    }
    case P_LIST1: {
        int k;
        unsigned long long sz;
        if (sscanf(line, "+OK %d %llu", &k, &sz) != 2 || k != opt.msg) {
            session_fail(c, E_PROTO, "bad LIST reply: %s", line);
            return;
        }
        expect_size = sz;
        expect_msgs = c->stat_n;
        if (c->probe) {
            c->st = P_QUIT;
            conn_send(c, "QUIT\r\n", 6);
            return;
        }
        c->st = P_RETR;
        retr_cpu0 = proc_cpu_us(opt.pid);
        c->t_retr = now_ns();
        conn_sendf(c, "RETR %d\r\n", opt.msg);
        break;
    }
    case P_UIDL:
        c->st = P_UIDL_ML;
        memset(&c->ml, 0, sizeof(c->ml));
        break;
    case P_RETR:
        if (opt.mode == M_STALL) {
            if (strncmp(line, "+OK", 3) != 0) {
                session_fail(c, E_PROTO, "bad RETR reply: %s", line);
                return;
            }
            /* A stalled reader: the rest stays unread in the socket. */
            c->st = P_STALLED;
            c->deadline = 0;
            done_total++;
            conn_set_events(c, 0);
            return;
        }
        c->st = P_RETR_ML;
        memset(&c->ml, 0, sizeof(c->ml));
        break;
    case P_QUIT:
        if (!c->probe && opt.mode == M_SESSIONS) {
            uint64_t t = now_ns();
            done_total++;
            phase_mark(c, PH_QUIT);
            if (in_window(t)) {
                done_in_window++;
                lat_add(t - c->t_start);
                for (int k = 0; k < PH_N; k++)
                    phase_sum_us[k] += c->phase_us[k];
                phase_n++;
            }
        }
        c->st = P_CLOSEWAIT; /* the server closes after +OK */
        break;
    default:
        session_fail(c, E_PROTO, "unexpected line: %.200s", line);
        break;
    }
}

static void retr_report(struct lconn *c, uint64_t t_end);
static long rss_before = -1, rss_peak = -1;

static void body_done(struct lconn *c)
{
    if (c->ml.bad_stuffing) {
        session_fail(c, E_PROTO, "%llu lines with bad dot-stuffing",
                     (unsigned long long)c->ml.bad_stuffing);
        return;
    }
    if (c->st == P_UIDL_ML) {
        phase_mark(c, PH_UIDL);
        if ((int)c->ml.lines != c->stat_n) {
            session_fail(c, E_PROTO, "UIDL gave %llu lines, STAT %d messages",
                         (unsigned long long)c->ml.lines, c->stat_n);
            return;
        }
        c->st = P_RETR;
        conn_sendf(c, "RETR %d\r\n", opt.msg);
        return;
    }
    /* P_RETR_ML */
    phase_mark(c, PH_RETR);
    if (c->ml.octets != expect_size) {
        session_fail(c, E_SIZE, "RETR gave %llu octets, LIST said %llu",
                     (unsigned long long)c->ml.octets, (unsigned long long)expect_size);
        return;
    }
    if (opt.mode == M_RETR)
        retr_report(c, now_ns());
    c->st = P_QUIT;
    conn_send(c, "QUIT\r\n", 6);
}

/* Bytes from a POP3 connection. */
static void pop3_data(struct lconn *c, const char *p, size_t n)
{
    while (n > 0 && c->fd >= 0) {
        if (c->st == P_UIDL_ML || c->st == P_RETR_ML) {
            size_t k = ml_feed(&c->ml, p, n);
            p += k;
            n -= k;
            if (c->ml.st == ML_END)
                body_done(c);
            continue;
        }
        if (c->st == P_STALLED)
            return; /* (not read any more: see P_RETR in stall mode) */
        if (c->st == P_CLOSEWAIT || c->st == P_IDLE) {
            session_fail(c, E_PROTO, "unexpected bytes from the server");
            return;
        }
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p + 1) : n;
        if (c->llen + take > LINE_MAX_LEN) {
            session_fail(c, E_PROTO, "reply line too long");
            return;
        }
        memcpy(c->line + c->llen, p, take);
        c->llen += take;
        p += take;
        n -= take;
        if (nl) {
            c->line[c->llen] = '\0';
            c->llen = 0;
            pop3_line(c, c->line);
        }
    }
}

/* ---- HTTP (direct to the backend) --------------------------------------- */

static const char *const http_events[4] = {"authenticate", "list", "retrieve", "quit"};

static void http_send_step(struct lconn *c)
{
    char body[512], req[1536];
    int bl, rl;
    const char *ev = http_events[c->step];
    char client[96];

    snprintf(client, sizeof(client),
             "\"client\":{\"ip\":\"127.0.0.1\",\"port\":%d,\"tls\":false}", 10000 + (int)(c - conns));
    switch (c->step) {
    case 0:
        bl = snprintf(body, sizeof(body),
                      "{\"event\":\"authenticate\",\"session\":\"b%lu\",%s,\"user\":\"%s\","
                      "\"method\":\"USER\",\"password\":\"%s\",\"attempt\":1}",
                      c->sess_no, client, opt.user, opt.pass);
        break;
    case 1:
        bl = snprintf(body, sizeof(body), "{\"event\":\"list\",\"session\":\"b%lu\",%s,\"user\":\"%s\"}",
                      c->sess_no, client, opt.user);
        break;
    case 2:
        bl = snprintf(body, sizeof(body),
                      "{\"event\":\"retrieve\",\"session\":\"b%lu\",%s,\"user\":\"%s\",\"message\":%d}",
                      c->sess_no, client, opt.user, opt.msg);
        break;
    default:
        bl = snprintf(body, sizeof(body),
                      "{\"event\":\"quit\",\"session\":\"b%lu\",%s,\"user\":\"%s\",\"deleted\":[]}",
                      c->sess_no, client, opt.user);
        break;
    }
    /* The same headers as the gateway's libcurl requests. */
    rl = snprintf(req, sizeof(req),
                  "POST /%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: */*\r\n"
                  "Content-Type: application/json\r\nUser-Agent: pop3gw/bench\r\n"
                  "webhook-id: msg_b%lu_%d\r\nwebhook-timestamp: %lld\r\n"
                  "Content-Length: %d\r\n\r\n%s",
                  ev, opt.host, opt.port, c->sess_no, c->step + 1, (long long)time(NULL), bl, body);
    memset(c->hr, 0, sizeof(*c->hr));
    c->hr->clen = -1;
    c->st = H_SEND;
    conn_send(c, req, (size_t)rl);
}

static void http_session_begin(struct lconn *c)
{
    c->sess_no = ++sess_seq;
    c->step = 0;
    c->t_start = now_ns();
    c->deadline = opt.timeout > 0 ? c->t_start + (uint64_t)(opt.timeout * 1e9) : 0;
    started_total++;
    http_send_step(c);
}

static void http_fail(struct lconn *c, enum err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void http_fail(struct lconn *c, enum err e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_count(c, e, "http %s: %s", http_events[c->step], msg);
    conn_close(c);
    if (!stopping)
        conn_open(c); /* a new keep-alive connection */
}

static void http_response_done(struct lconn *c)
{
    struct hresp *h = c->hr;
    int ok = h->status == 200;

    h->body[h->blen] = '\0';
    if (ok && c->step == 0)
        ok = strstr(h->body, "\"ok\"") && strstr(h->body, "true");
    else if (ok && c->step == 1)
        ok = strstr(h->body, "\"messages\"") != NULL;
    if (!ok) {
        http_fail(c, E_PROTO, "status %d body %.100s", h->status, h->body);
        return;
    }
    if (c->step == 2) {
        if (expect_size == 0)
            expect_size = (uint64_t)h->clen;
        if ((uint64_t)h->clen != expect_size || h->clen <= 0) {
            http_fail(c, E_SIZE, "retrieve body %lld octets, expected %llu", h->clen,
                      (unsigned long long)expect_size);
            return;
        }
    }
    if (c->step < 3) {
        if (h->close) {
            http_fail(c, E_PROTO, "server closed the keep-alive connection mid-session");
            return;
        }
        c->step++;
        http_send_step(c);
        return;
    }
    uint64_t t = now_ns();
    done_total++;
    if (in_window(t)) {
        done_in_window++;
        lat_add(t - c->t_start);
    }
    if (h->close || stopping) {
        conn_close(c);
        if (!stopping)
            conn_open(c);
        return;
    }
    http_session_begin(c);
}

static int http_parse_head(struct lconn *c)
{
    struct hresp *h = c->hr;
    char *line, *save = NULL;

    h->hdr[h->hlen] = '\0';
    line = strtok_r(h->hdr, "\r\n", &save);
    if (!line || sscanf(line, "HTTP/1.%*d %d", &h->status) != 1)
        return -1;
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            h->clen = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "Connection:", 11) == 0 && strcasestr(line + 11, "close"))
            h->close = 1;
        else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0)
            return -1; /* chunked: not expected from the reference backend */
    }
    return h->clen >= 0 ? 0 : -1;
}

static void http_data(struct lconn *c, const char *p, size_t n)
{
    struct hresp *h = c->hr;

    while (n > 0 && c->fd >= 0) {
        if (c->st != H_SEND) {
            http_fail(c, E_PROTO, "unexpected bytes");
            return;
        }
        if (!h->in_body) {
            /* copy byte runs up to the end of the head */
            size_t room = HTTP_HDR_MAX - 1 - h->hlen, take = n < room ? n : room, i;
            size_t start = h->hlen;
            if (take == 0) {
                http_fail(c, E_PROTO, "response head too long");
                return;
            }
            memcpy(h->hdr + h->hlen, p, take);
            h->hlen += take;
            /* search the terminator from a little before the new bytes */
            size_t from = start > 3 ? start - 3 : 0;
            char *end = memmem(h->hdr + from, h->hlen - from, "\r\n\r\n", 4);
            if (!end) {
                p += take;
                n -= take;
                continue;
            }
            size_t head_len = (size_t)(end - h->hdr) + 4;
            i = head_len - start; /* bytes of this chunk that belong to the head */
            p += i;
            n -= i;
            h->hlen = head_len;
            if (http_parse_head(c) < 0) {
                http_fail(c, E_PROTO, "bad response head");
                return;
            }
            h->in_body = 1;
        }
        long long want = h->clen - h->got;
        size_t take = (long long)n < want ? n : (size_t)want;
        if (h->blen < HTTP_BODY_KEEP) {
            size_t k = HTTP_BODY_KEEP - h->blen < take ? HTTP_BODY_KEEP - h->blen : take;
            memcpy(h->body + h->blen, p, k);
            h->blen += k;
        }
        h->got += (long long)take;
        p += take;
        n -= take;
        if (h->got == h->clen) {
            if (n > 0) {
                http_fail(c, E_PROTO, "bytes after the response");
                return;
            }
            http_response_done(c);
            return;
        }
    }
}

/* ---- the loop ----------------------------------------------------------- */

static void retr_report(struct lconn *c, uint64_t t_end)
{
    double secs = (double)(t_end - c->t_retr) / 1e9;
    long rss_after = proc_rss_kb(opt.pid);
    long long cpu1 = proc_cpu_us(opt.pid);

    if (rss_after > rss_peak)
        rss_peak = rss_after;
    printf("mode=retr msg=%d octets=%llu secs=%.4f mb_s=%.1f rss_before_kb=%ld rss_peak_kb=%ld "
           "rss_after_kb=%ld rss_growth_kb=%ld gw_cpu_ms=%.0f\n",
           opt.msg, (unsigned long long)c->ml.octets, secs, (double)c->ml.octets / secs / 1e6,
           rss_before, rss_peak, rss_after, rss_peak >= 0 ? rss_peak - rss_before : -1,
           retr_cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - retr_cpu0) / 1000.0 : -1.0);
    fflush(stdout);
    done_total++;
}

static void on_connected(struct lconn *c)
{
    int e = 0;
    socklen_t l = sizeof(e);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e != 0) {
        if (opt.mode == M_HTTP) {
            http_fail(c, E_CONNECT, "connect: %s", strerror(e));
            return;
        }
        session_fail(c, E_CONNECT, "connect: %s", strerror(e));
        return;
    }
    conn_set_events(c, EPOLLIN);
    if (opt.mode == M_HTTP) {
        http_session_begin(c);
        return;
    }
    c->st = P_GREETING;
}

static void on_readable(struct lconn *c)
{
    for (int i = 0; i < 8 && c->fd >= 0; i++) {
        ssize_t r = read(c->fd, rbuf, RBUF_SIZE);
        if (r > 0) {
            if (opt.mode == M_HTTP)
                http_data(c, rbuf, (size_t)r);
            else
                pop3_data(c, rbuf, (size_t)r);
            if ((size_t)r < RBUF_SIZE)
                return;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF or error */
        if (c->st == P_CLOSEWAIT) {
            session_done(c);
            return;
        }
        if (opt.mode == M_HTTP) {
            if (c->st == H_SEND && c->hr->hlen == 0 && c->step == 0) {
                /* closed between sessions: reconnect silently */
                conn_close(c);
                if (!stopping)
                    conn_open(c);
                return;
            }
            http_fail(c, r == 0 ? E_EOF : E_IO, "connection closed: %s", r == 0 ? "eof" : strerror(errno));
            return;
        }
        session_fail(c, r == 0 ? E_EOF : E_IO, "connection closed%s%s", r == 0 ? "" : ": ",
                     r == 0 ? "" : strerror(errno));
        return;
    }
}

static void on_writable(struct lconn *c)
{
    while (c->ooff < c->olen) {
        ssize_t w = write(c->fd, c->out + c->ooff, c->olen - c->ooff);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w < 0) {
            if (opt.mode == M_HTTP)
                http_fail(c, E_IO, "write: %s", strerror(errno));
            else
                session_fail(c, E_IO, "write: %s", strerror(errno));
            return;
        }
        c->ooff += (size_t)w;
    }
    conn_set_events(c, EPOLLIN);
}

static void check_timeouts(uint64_t now)
{
    for (int i = 0; i < n_conns; i++) {
        struct lconn *c = &conns[i];
        if (c->fd >= 0 && c->deadline && now > c->deadline) {
            if (opt.mode == M_IDLE || opt.mode == M_STALL) {
                err_count(c, E_TIMEOUT, "not logged in within %.0f s (state %d)", opt.timeout,
                          (int)c->st);
                conn_close(c);
                c->st = P_FREE;
                c->deadline = 0;
                c->probe = -1; /* given up: not reopened */
                continue;
            }
            if (opt.mode == M_HTTP)
                http_fail(c, E_TIMEOUT, "no response in %.0f s", opt.timeout);
            else
                session_fail(c, E_TIMEOUT, "session took over %.0f s", opt.timeout);
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

static void loop_once(int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, timeout_ms);

    if (n < 0 && errno != EINTR)
        die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct lconn *c = &conns[evs[i].data.u32];
        if (c->fd < 0)
            continue;
        if (c->st == P_CONNECTING) {
            on_connected(c);
            continue;
        }
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            on_readable(c);
        if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
            on_writable(c);
    }
}

static int active_conns(void)
{
    int k = 0;
    for (int i = 0; i < n_conns; i++)
        k += conns[i].fd >= 0;
    return k;
}

static void alloc_conns(int n)
{
    conns = calloc((size_t)n, sizeof(*conns));
    if (!conns)
        die("out of memory");
    for (int i = 0; i < n; i++) {
        conns[i].fd = -1;
        if (opt.mode == M_HTTP && !(conns[i].hr = calloc(1, sizeof(struct hresp))))
            die("out of memory");
    }
    n_conns = n;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The probe: one session that learns the size of message `msg` (LIST). */
static void run_probe(void)
{
    struct lconn *c = &conns[0];
    uint64_t end = now_ns() + 10000000000ull;

    c->probe = 1;
    c->t_start = now_ns();
    if (conn_open(c) < 0)
        die("probe: cannot connect");
    c->probe = 1;
    while (c->fd >= 0 && now_ns() < end)
        loop_once(100);
    if (c->fd >= 0 || expect_size == 0)
        die("probe session did not complete");
    c->probe = 0;
}

static void print_errors(void)
{
    unsigned long tot = 0;
    for (int i = 0; i < E_N; i++)
        tot += errs[i];
    printf(" errors=%lu", tot);
    for (int i = 0; i < E_N; i++)
        printf(" err_%s=%lu", err_names[i], errs[i]);
}

static void run_load(void)
{
    long long gw0 = -1, be0 = -1, gw1 = -1, be1 = -1, lg0 = -1, lg1;
    uint64_t t_first_check = 0;
    int measuring = 0;

    alloc_conns(opt.conc);
    if (opt.mode == M_SESSIONS)
        run_probe();
    t0_ns = now_ns();
    win_start_ns = t0_ns + (uint64_t)(opt.warmup * 1e9);
    win_end_ns = opt.count > 0 ? 0 : win_start_ns + (uint64_t)(opt.duration * 1e9);
    for (int i = 0; i < n_conns; i++) {
        if (opt.mode == M_SESSIONS)
            session_start(&conns[i]);
        else if (conn_open(&conns[i]) < 0)
            die("cannot connect");
    }
    for (;;) {
        uint64_t now = now_ns();
        if (!measuring && now >= win_start_ns) {
            measuring = 1;
            gw0 = proc_cpu_us(opt.pid);
            be0 = proc_cpu_us(opt.bpid);
            lg0 = self_cpu_us();
        }
        if (opt.count > 0 && (long)done_total >= opt.count)
            break;
        if (win_end_ns && now >= win_end_ns)
            break;
        if (got_signal)
            break;
        /* Restart slots whose connect failed outright. */
        for (int i = 0; i < n_conns; i++)
            if (conns[i].fd < 0 && conns[i].st == P_FREE && !stopping) {
                if (opt.mode == M_SESSIONS)
                    session_start(&conns[i]);
                else if (conn_open(&conns[i]) < 0)
                    break;
            }
        loop_once(20);
        if (now - t_first_check > 100000000ull) {
            check_timeouts(now);
            t_first_check = now;
        }
    }
    uint64_t t_end = now_ns();
    gw1 = proc_cpu_us(opt.pid);
    be1 = proc_cpu_us(opt.bpid);
    lg1 = self_cpu_us();
    long rss = proc_rss_kb(opt.pid);
    /* Let sessions in flight finish (not counted) so the servers wind down. */
    stopping = 1;
    uint64_t drain_end = now_ns() + 3000000000ull;
    while (active_conns() > 0 && now_ns() < drain_end)
        loop_once(20);
    for (int i = 0; i < n_conns; i++)
        conn_close(&conns[i]);

    double secs;
    unsigned long n;
    if (opt.count > 0) {
        secs = (double)(t_end - win_start_ns) / 1e9;
        n = done_total;
    } else {
        secs = (double)((t_end < win_end_ns ? t_end : win_end_ns) - win_start_ns) / 1e9;
        n = done_in_window;
    }
    qsort(lat, n_lat, sizeof(*lat), cmp_u32);
    printf("mode=%s c=%d sessions=%lu secs=%.3f rate=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f",
           opt.mode == M_HTTP ? "http" : "sessions", opt.conc, n, secs, secs > 0 ? n / secs : 0,
           lat_pct(50), lat_pct(90), lat_pct(99), n_lat ? lat[n_lat - 1] / 1000.0 : 0);
    if (gw0 >= 0 && gw1 >= 0 && n > 0)
        printf(" gw_cpu_us_per_session=%.1f gw_cpu_pct=%.1f", (double)(gw1 - gw0) / (double)n,
               100.0 * (double)(gw1 - gw0) / 1e6 / secs);
    if (be0 >= 0 && be1 >= 0 && n > 0)
        printf(" be_cpu_us_per_session=%.1f be_cpu_pct=%.1f", (double)(be1 - be0) / (double)n,
               100.0 * (double)(be1 - be0) / 1e6 / secs);
    if (lg0 >= 0 && lg1 >= 0 && n > 0)
        printf(" lg_cpu_us_per_session=%.1f", (double)(lg1 - lg0) / (double)n);
    if (opt.mode == M_SESSIONS && phase_n > 0) {
        /* Mean ms per step: connect+greeting, USER, PASS, STAT, UIDL, RETR, QUIT. */
        printf(" phase_ms=");
        for (int k = 0; k < PH_N; k++)
            printf("%s%.2f", k ? "/" : "", (double)phase_sum_us[k] / (double)phase_n / 1000.0);
    }
    if (rss >= 0)
        printf(" gw_rss_kb=%ld", rss);
    print_errors();
    printf("\n");
}

static void run_idle(void)
{
    int target = (int)opt.count, opened = 0, dead = 0;
    uint64_t t_ready = 0, t_start;
    long rss0 = proc_rss_kb(opt.pid);

    alloc_conns(target);
    t_start = now_ns();
    for (;;) {
        /* keep up to `conc` connections on their way in */
        int pending = opened - (int)done_total - dead;
        while (opened < target && pending < opt.conc) {
            struct lconn *c = &conns[opened++];
            c->t_start = now_ns();
            c->deadline = c->t_start + (uint64_t)(opt.timeout * 1e9);
            if (conn_open(c) < 0) {
                dead++;
                c->probe = -1;
            } else {
                pending++;
            }
        }
        loop_once(20);
        check_timeouts(now_ns());
        dead = 0;
        for (int i = 0; i < opened; i++)
            if (conns[i].fd < 0)
                dead++;
        if (opened == target && (int)done_total + dead >= target)
            break;
        if (got_signal)
            break;
    }
    t_ready = now_ns();
    /* settle, then read the gateway's memory */
    uint64_t settle = now_ns() + (uint64_t)(opt.settle * 1e9);
    while (now_ns() < settle && !got_signal)
        loop_once(50);
    long rss1 = proc_rss_kb(opt.pid);
    int live = active_conns();
    printf("mode=%s target=%d logged_in=%lu live=%d secs_to_ready=%.3f rss_before_kb=%ld "
           "rss_idle_kb=%ld",
           opt.mode == M_STALL ? "stall" : "idle", target, done_total, live, (double)(t_ready - t_start) / 1e9, rss0, rss1);
    if (rss0 >= 0 && rss1 >= 0 && done_total > 0)
        printf(" rss_per_conn_bytes=%.0f", (double)(rss1 - rss0) * 1024.0 / (double)done_total);
    print_errors();
    printf("\n");
    fflush(stdout);
    uint64_t hold_end = now_ns() + (uint64_t)(opt.hold * 1e9);
    while (now_ns() < hold_end && !got_signal)
        loop_once(100);
    for (int i = 0; i < n_conns; i++)
        conn_close(&conns[i]);
}

static void run_retr(void)
{
    struct lconn *c;
    uint64_t next_sample = 0, end;

    alloc_conns(1);
    c = &conns[0];
    rss_before = proc_rss_kb(opt.pid);
    rss_peak = rss_before;
    if (conn_open(c) < 0)
        die("cannot connect");
    end = now_ns() + (uint64_t)(opt.timeout * 1e9);
    while (c->fd >= 0 && now_ns() < end && !got_signal) {
        loop_once(5);
        uint64_t now = now_ns();
        if (c->st == P_RETR_ML && now >= next_sample) {
            long r = proc_rss_kb(opt.pid);
            if (r > rss_peak)
                rss_peak = r;
            next_sample = now + 2000000ull; /* every 2 ms */
        }
    }
    if (done_total == 0) {
        printf("mode=retr msg=%d", opt.msg);
        print_errors();
        printf("\n");
        exit(1);
    }
}

/* ---- get and mkmsg ------------------------------------------------------ */

static int run_get(const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char req[512], buf[65536];
    size_t len = 0;
    ssize_t r;

    if (fd < 0 || connect(fd, (struct sockaddr *)&opt.addr, sizeof(opt.addr)) < 0)
        die("connect: %s", strerror(errno));
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                     path, opt.host, opt.port);
    if (write(fd, req, (size_t)n) != n)
        die("write: %s", strerror(errno));
    while (len < sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (!body || strncmp(buf, "HTTP/1.", 7) != 0)
        die("bad HTTP response");
    printf("%s\n", body + 4);
    return 0;
}

/* A message of exactly `size` octets, LF line ends: a header, then
 * base64-like lines of 76 characters; every 16th body line starts with a
 * dot (the gateway must dot-stuff it). */
static int run_mkmsg(const char *file, unsigned long long size, unsigned seed)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    FILE *f = fopen(file, "w");
    char line[80];
    unsigned long long left = size;
    unsigned long x = 2463534242ul ^ seed, lno = 0;
    char hdr[256];

    if (!f)
        die("%s: %s", file, strerror(errno));
    int hl = snprintf(hdr, sizeof(hdr),
                      "From: bench@example.org\nTo: u@example.org\nSubject: bench %u\n"
                      "Message-ID: <bench-%u@example.org>\nMIME-Version: 1.0\n\n",
                      seed, seed);
    if ((unsigned long long)hl + 2 > size)
        die("size too small");
    fwrite(hdr, 1, (size_t)hl, f);
    left -= (unsigned long long)hl;
    while (left > 0) {
        size_t n = left > 77 ? 77 : (size_t)left; /* 76 characters + LF */
        for (size_t i = 0; i + 1 < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            line[i] = b64[x & 63];
        }
        if (++lno % 16 == 3 && n > 2)
            line[0] = '.';
        line[n - 1] = '\n';
        if (fwrite(line, 1, n, f) != n)
            die("%s: write failed", file);
        left -= n;
    }
    if (fclose(f) != 0)
        die("%s: %s", file, strerror(errno));
    return 0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
    fputs("usage: loadgen MODE [options]\n"
          "  modes: sessions | idle | stall | retr | http | get PATH | mkmsg FILE BYTES [SEED]\n"
          "  --host=IP (127.0.0.1) --port=N  -c N (concurrency) -n N (count)\n"
          "  -t SECS (duration) --warmup=SECS --timeout=SECS --hold=SECS --settle=SECS\n"
          "  --user=U --pass=P --msg=K (1) --src=N (loopback sources, 16)\n"
          "  --pid=GATEWAY_PID --bpid=BACKEND_PID -v\n",
          stderr);
    exit(2);
}

static const char *arg_val(int argc, char **argv, int *i, const char *name)
{
    size_t l = strlen(name);
    if (strncmp(argv[*i], name, l) == 0 && argv[*i][l] == '=')
        return argv[*i] + l + 1;
    if (strcmp(argv[*i], name) == 0 && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *v;

    if (argc < 2)
        usage();
    if (strcmp(argv[1], "mkmsg") == 0) {
        if (argc < 4)
            usage();
        return run_mkmsg(argv[2], strtoull(argv[3], NULL, 10),
                         argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 1);
    }
    memset(&opt, 0, sizeof(opt));
    snprintf(opt.host, sizeof(opt.host), "127.0.0.1");
    opt.conc = 1;
    opt.duration = 5;
    opt.timeout = 30;
    opt.settle = 1;
    opt.user = "u";
    opt.pass = "p";
    opt.msg = 1;
    opt.srcs = 16;
    const char *get_path = NULL;
    int first = 2;
    if (strcmp(argv[1], "sessions") == 0)
        opt.mode = M_SESSIONS;
    else if (strcmp(argv[1], "idle") == 0)
        opt.mode = M_IDLE;
    else if (strcmp(argv[1], "stall") == 0)
        opt.mode = M_STALL;
    else if (strcmp(argv[1], "retr") == 0)
        opt.mode = M_RETR;
    else if (strcmp(argv[1], "http") == 0)
        opt.mode = M_HTTP;
    else if (strcmp(argv[1], "get") == 0 && argc > 2) {
        get_path = argv[2];
        first = 3;
    } else
        usage();
    for (int i = first; i < argc; i++) {
        if ((v = arg_val(argc, argv, &i, "--host")))
            snprintf(opt.host, sizeof(opt.host), "%s", v);
        else if ((v = arg_val(argc, argv, &i, "--port")))
            opt.port = atoi(v);
        else if ((v = arg_val(argc, argv, &i, "-c")))
            opt.conc = atoi(v);
        else if ((v = arg_val(argc, argv, &i, "-n")))
            opt.count = atol(v);
        else if ((v = arg_val(argc, argv, &i, "-t")))
            opt.duration = atof(v);
        else if ((v = arg_val(argc, argv, &i, "--warmup")))
            opt.warmup = atof(v);
        else if ((v = arg_val(argc, argv, &i, "--timeout")))
            opt.timeout = atof(v);
        else if ((v = arg_val(argc, argv, &i, "--hold")))
            opt.hold = atof(v);
        else if ((v = arg_val(argc, argv, &i, "--settle")))
            opt.settle = atof(v);
        else if ((v = arg_val(argc, argv, &i, "--user")))
            opt.user = v;
        else if ((v = arg_val(argc, argv, &i, "--pass")))
            opt.pass = v;
        else if ((v = arg_val(argc, argv, &i, "--msg")))
            opt.msg = atoi(v);
        else if ((v = arg_val(argc, argv, &i, "--src")))
            opt.srcs = atoi(v);
        else if ((v = arg_val(argc, argv, &i, "--pid")))
            opt.pid = atoi(v);
        else if ((v = arg_val(argc, argv, &i, "--bpid")))
            opt.bpid = atoi(v);
        else if (strcmp(argv[i], "-v") == 0)
            opt.verbose = 1;
        else
            usage();
    }
    if (opt.port <= 0 || opt.conc <= 0 || opt.msg <= 0)
        usage();
    memset(&opt.addr, 0, sizeof(opt.addr));
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &opt.addr.sin_addr) != 1)
        die("--host must be an IPv4 address");
    if ((ntohl(opt.addr.sin_addr.s_addr) >> 24) != 127)
        opt.srcs = 1; /* spreading source addresses works on loopback only */
    if (get_path)
        return run_get(get_path);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    raise_nofile();
    rbuf = malloc(RBUF_SIZE);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!rbuf || ep < 0)
        die("set-up failed");
    switch (opt.mode) {
    case M_SESSIONS:
        run_load();
        break;
    case M_HTTP:
        run_load();
        break;
    case M_IDLE:
    case M_STALL:
        if (opt.count <= 0)
            usage();
        if (opt.conc < 2)
            opt.conc = 200;
        run_idle();
        break;
    case M_RETR:
        opt.timeout = opt.timeout > 0 ? opt.timeout : 60;
        run_retr();
        break;
    }
    unsigned long tot = 0;
    for (int i = 0; i < E_N; i++)
        tot += errs[i];
    return tot ? 1 : 0;
}
