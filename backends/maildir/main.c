/*
 * pop3gw-maildir: the reference backend for pop3gw. It answers the gateway's
 * webhooks (authenticate, list, uidl, retrieve, quit, connect, disconnect)
 * from a users file and a directory of Maildirs, one per user.
 *
 * This file reads the command line, sets up the parts (users.c, store.c,
 * locks.c, whsig.c, reqlog.c), opens the listening socket, starts the HTTP
 * server (http.c) and waits for SIGINT or SIGTERM to stop it cleanly.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "backends/maildir/events.h"
#include "backends/maildir/http.h"
#include "backends/maildir/locks.h"
#include "backends/maildir/note.h"
#include "backends/maildir/reqlog.h"
#include "backends/maildir/store.h"
#include "backends/maildir/users.h"
#include "backends/maildir/whsig.h"

#ifndef POP3GW_VERSION
#define POP3GW_VERSION "dev"
#endif

#define MAIN_DEFAULT_LISTEN "127.0.0.1:8025"
#define MAIN_MAX_THREADS 1024
#define MAIN_BACKLOG 1024

struct main_opts {
    const char *listen;       /* HOST:PORT */
    const char *root;         /* directory of Maildirs */
    const char *users;        /* users file, or NULL for ROOT/users */
    const char *secret;       /* whsec_ secrets, or NULL */
    const char *token;        /* bearer token, or NULL */
    const char *secret_file;  /* file holding the secrets, or NULL */
    const char *token_file;   /* file holding the token, or NULL */
    const char *log_requests; /* request log file, or NULL */
    int threads;              /* HTTP thread pool size */
    int list_uids;            /* uids in list replies */
    double lock_timeout;      /* seconds; 0 = no locking */
    int quiet;                /* no line per deleted message */
};

/* Everything main sets up, freed by main_teardown. */
struct main_parts {
    struct store *store;
    struct users *users;
    struct locks *locks;
    struct whsig *sig;
    struct reqlog *log;
    struct ev_ctx ctx;
};

static void main_usage(FILE *out)
{
    fputs("usage: pop3gw-maildir --root=DIR [options]\n"
          "\n"
          "The reference backend for pop3gw: answers its webhooks from a users file\n"
          "and one Maildir per user (DIR/USER/{new,cur,tmp}).\n"
          "\n"
          "  --listen=HOST:PORT    address to serve HTTP on (default " MAIN_DEFAULT_LISTEN ";\n"
          "                        IPv6 as [::1]:8025; port 0 picks a free port)\n"
          "  --root=DIR            directory holding one Maildir per user (required)\n"
          "  --users=FILE          users file (default DIR/users): lines\n"
          "                        user:password[:oauth-token], # comments; re-read\n"
          "                        when it changes\n"
          "  --secret=whsec_...    require Standard Webhooks signatures made with this\n"
          "                        key (several space-separated keys accepted)\n"
          "  --token=TOKEN         require \"Authorization: Bearer TOKEN\"\n"
          "  --secret-file=FILE, --token-file=FILE\n"
          "                        the same, read from FILE (one line; a final\n"
          "                        newline is ignored): Docker and Kubernetes\n"
          "                        secrets, and nothing in ps\n"
          "  --threads=N           HTTP worker threads (default 2)\n"
          "  --no-list-uids        leave uids out of list replies (the gateway then\n"
          "                        calls uidl)\n"
          "  --lock-timeout=SECS   lock a maildrop from login to quit/disconnect, a\n"
          "                        second login getting [IN-USE]; locks lapse after\n"
          "                        SECS without a call (default 0: no locking; safe,\n"
          "                        as listings are snapshots and deletes go by uid)\n"
          "  --log-requests=FILE   append every request body, with \"_path\" and\n"
          "                        \"_status\", to FILE (for tests: holds passwords)\n"
          "  --quiet               no log line per deleted message\n"
          "  --help, --version\n"
          "\n"
          "Prints \"pop3gw-maildir listening on HOST:PORT\" to stderr when ready;\n"
          "SIGINT or SIGTERM stops it. GET /_stats returns request counters.\n",
          out);
}

/* Parses a whole decimal int in [min, max]. Returns 0 or -1. */
static int main_int(const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static int main_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0 && v <= 1e7))
        return -1;
    *out = v;
    return 0;
}

enum {
    OPT_ROOT = 256,
    OPT_USERS,
    OPT_SECRET,
    OPT_TOKEN,
    OPT_SECRET_FILE,
    OPT_TOKEN_FILE,
    OPT_THREADS,
    OPT_NO_LIST_UIDS,
    OPT_LOCK_TIMEOUT,
    OPT_LOG_REQUESTS,
    OPT_QUIET,
    OPT_LISTEN,
    OPT_VERSION
};

/* Applies one option. Returns 0, or -1 after a message. */
static int main_option(struct main_opts *o, int c, const char *arg)
{
    switch (c) {
    case OPT_LISTEN:
        o->listen = arg;
        return 0;
    case OPT_ROOT:
        o->root = arg;
        return 0;
    case OPT_USERS:
        o->users = arg;
        return 0;
    case OPT_SECRET:
        o->secret = arg;
        return 0;
    case OPT_TOKEN:
        o->token = arg;
        return 0;
    case OPT_SECRET_FILE:
        o->secret_file = arg;
        return 0;
    case OPT_TOKEN_FILE:
        o->token_file = arg;
        return 0;
    case OPT_LOG_REQUESTS:
        o->log_requests = arg;
        return 0;
    case OPT_NO_LIST_UIDS:
        o->list_uids = 0;
        return 0;
    case OPT_QUIET:
        o->quiet = 1;
        return 0;
    case OPT_THREADS:
        if (main_int(arg, 1, MAIN_MAX_THREADS, &o->threads) == 0)
            return 0;
        note_error("--threads wants a number from 1 to %d", MAIN_MAX_THREADS);
        return -1;
    case OPT_LOCK_TIMEOUT:
        if (main_seconds(arg, &o->lock_timeout) == 0)
            return 0;
        note_error("--lock-timeout wants a number of seconds (0 for no locking)");
        return -1;
    default:
        return -1;
    }
}

/*
 * Reads the command line into `o`. Returns 0 to run, 1 when done (--help,
 * --version), -1 on a usage error (already reported).
 */
static int main_parse(int argc, char **argv, struct main_opts *o)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"root", required_argument, NULL, OPT_ROOT},
        {"users", required_argument, NULL, OPT_USERS},
        {"secret", required_argument, NULL, OPT_SECRET},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"no-list-uids", no_argument, NULL, OPT_NO_LIST_UIDS},
        {"lock-timeout", required_argument, NULL, OPT_LOCK_TIMEOUT},
        {"log-requests", required_argument, NULL, OPT_LOG_REQUESTS},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    *o = (struct main_opts){.listen = MAIN_DEFAULT_LISTEN, .threads = 2, .list_uids = 1};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h') {
            main_usage(stdout);
            return 1;
        }
        if (c == OPT_VERSION) {
            printf("pop3gw-maildir %s\n", POP3GW_VERSION);
            return 1;
        }
        if (c == '?' || main_option(o, c, optarg) != 0) {
            fputs("try pop3gw-maildir --help\n", stderr);
            return -1;
        }
    }
    if (optind < argc)
        note_error("unexpected argument: %s", argv[optind]);
    else if (o->root == NULL)
        note_error("--root is required");
    if (optind < argc || o->root == NULL) {
        fputs("try pop3gw-maildir --help\n", stderr);
        return -1;
    }
    return 0;
}

/* Reads a secret written on one line of `path` (a final LF or CRLF is
 * dropped) into a heap string. NULL after a message. */
static char *main_read_secret(const char *opt, const char *path)
{
    char buf[65536];
    FILE *f = fopen(path, "rb");
    size_t n;

    if (f == NULL) {
        note_error("%s: cannot read %s: %s", opt, path, strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    if (n == 0 || strlen(buf) != n || strchr(buf, '\n') != NULL || strchr(buf, '\r') != NULL) {
        note_error("%s: %s must hold the value on one line", opt, path);
        return NULL;
    }
    return strdup(buf);
}

/* What --secret-file and --token-file held, wiped and freed at exit. */
static char *main_from_files[2];

static void main_free_secrets(void)
{
    for (int i = 0; i < 2; i++) {
        if (main_from_files[i] != NULL)
            memset(main_from_files[i], 0, strlen(main_from_files[i]));
        free(main_from_files[i]);
        main_from_files[i] = NULL;
    }
}

/* --secret-file and --token-file: each read into its option, which must not
 * be given too. Returns 0, or -1 after a message. */
static int main_read_secret_files(struct main_opts *o)
{
    if ((o->secret_file && o->secret) || (o->token_file && o->token)) {
        note_error("give --secret or --secret-file, --token or --token-file, not both");
        return -1;
    }
    atexit(main_free_secrets);
    if (o->secret_file &&
        !(o->secret = main_from_files[0] = main_read_secret("--secret-file", o->secret_file)))
        return -1;
    if (o->token_file &&
        !(o->token = main_from_files[1] = main_read_secret("--token-file", o->token_file)))
        return -1;
    return 0;
}

/* ---- the listening socket ---- */

/* Splits HOST:PORT or [IPV6]:PORT. Returns 0 or -1. */
static int main_split_listen(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon, *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return -1; /* no port, or an IPv6 address without brackets */
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

/* A socket bound to `ai` and listening, or -1 with errno set. */
static int main_bind_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, MAIN_BACKLOG) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/* Opens the listening socket for HOST:PORT. Returns it, or -1 after a message. */
static int main_listen(const char *spec)
{
    char host[256], port[16];
    if (main_split_listen(spec, host, sizeof host, port, sizeof port) != 0) {
        note_error("--listen wants HOST:PORT or [IPV6]:PORT, not \"%s\"", spec);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        note_error("cannot resolve %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        if ((fd = main_bind_one(ai)) < 0)
            err = errno;
    freeaddrinfo(res);
    if (fd < 0)
        note_error("cannot listen on %s: %s", spec, strerror(err));
    return fd;
}

/* Writes the socket's address as HOST:PORT or [HOST]:PORT (the real port when 0 was asked). */
static void main_describe(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(out, len, "[%s]:%d", host, port);
        return;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    snprintf(out, len, "%s:%d", host, port);
}

/* ---- set-up and tear-down ---- */

static void main_teardown(struct main_parts *p)
{
    reqlog_close(p->log);
    whsig_free(p->sig);
    locks_free(p->locks);
    users_free(p->users);
    store_free(p->store);
    memset(p, 0, sizeof *p);
}

/* Builds every part the handlers need. Returns 0, or -1 after a message. */
static int main_setup(const struct main_opts *o, struct main_parts *p)
{
    char err[512] = "", users_path[4096];
    memset(p, 0, sizeof *p);
    snprintf(users_path, sizeof users_path, "%s/users", o->root);
    if ((p->store = store_open(o->root, err, sizeof err)) == NULL ||
        (p->users = users_open(o->users != NULL ? o->users : users_path, err, sizeof err)) ==
            NULL ||
        (o->secret != NULL && (p->sig = whsig_new(o->secret, err, sizeof err)) == NULL) ||
        (o->log_requests != NULL &&
         (p->log = reqlog_open(o->log_requests, err, sizeof err)) == NULL)) {
        note_error("%s", err);
        main_teardown(p);
        return -1;
    }
    if (o->lock_timeout > 0 && (p->locks = locks_new(o->lock_timeout)) == NULL) {
        note_error("out of memory");
        main_teardown(p);
        return -1;
    }
    p->ctx = (struct ev_ctx){
        .users = p->users, .store = p->store, .locks = p->locks, .list_uids = o->list_uids};
    return 0;
}

/* Serving needs a descriptor per connection: take all the system allows. */
static void main_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Blocks SIGINT and SIGTERM in every thread (the server's threads inherit
 * the mask), to be taken with sigwait by the main thread only. */
static void main_block_signals(sigset_t *set)
{
    signal(SIGPIPE, SIG_IGN); /* a peer closing during sendfile(2) */
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

int main(int argc, char **argv)
{
    struct main_opts o;
    struct main_parts parts;
    sigset_t stop;
    int rc = main_parse(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (main_read_secret_files(&o) != 0)
        return 2;
    note_set_quiet(o.quiet);
    json_object_seed(0); /* before any thread builds JSON */
    main_raise_fd_limit();
    if (main_setup(&o, &parts) != 0)
        return 1;
    int fd = main_listen(o.listen);
    if (fd < 0) {
        main_teardown(&parts);
        return 1;
    }
    char where[300], err[512] = "";
    main_describe(fd, where, sizeof where);
    main_block_signals(&stop);
    struct http_opts ho = {.ev = &parts.ctx,
                           .sig = parts.sig,
                           .token = o.token,
                           .log = parts.log,
                           .listen_fd = fd,
                           .threads = o.threads};
    struct http *h = http_start(&ho, err, sizeof err);
    if (h == NULL) {
        note_error("%s", err);
        main_teardown(&parts);
        return 1;
    }
    fprintf(stderr, "pop3gw-maildir listening on %s\n", where);
    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    http_stop(h);
    main_teardown(&parts);
    return 0;
}
