/*
 * cfg: pop3gw's configuration.
 *
 * Every key can come from a file of `key = value` lines (`-c FILE`), from the
 * environment as POP3GW_KEY, and from a `--key=value` flag; flags beat the
 * environment, which beats the file. The key names are the public interface
 * documented in docs/configuration.md.
 */
#ifndef POP3GW_CFG_H
#define POP3GW_CFG_H

#include <stddef.h>
#include <stdio.h>

#include "webhook/wh.h"

#define CFG_MAX_LISTEN 8

struct cfg_addr {
    char host[256]; /* numeric address or name, without IPv6 brackets; "*" = every
                       address (written `*:110` or `:110`): getaddrinfo(NULL, port) with
                       AI_PASSIVE */
    int port;
};

enum cfg_plaintext { CFG_PLAIN_TLS_ONLY, CFG_PLAIN_ALLOW, CFG_PLAIN_N };
enum cfg_log_format { CFG_LOG_LOGFMT, CFG_LOG_JSON, CFG_LOG_N };
enum cfg_proxy { CFG_PROXY_OFF, CFG_PROXY_V1, CFG_PROXY_V2, CFG_PROXY_ANY, CFG_PROXY_N };

struct cfg {
    struct cfg_addr listen[CFG_MAX_LISTEN]; /* plain POP3 listeners */
    int n_listen;
    struct cfg_addr listen_tls[CFG_MAX_LISTEN]; /* implicit-TLS listeners */
    int n_listen_tls;
    char *tls_cert, *tls_key; /* PEM paths or NULL */
    int tls_min_version;      /* 12 or 13 */
    enum cfg_plaintext plaintext_auth;
    char *hostname; /* greeting and APOP timestamp; default gethostname() */
    int apop;       /* 1 = on */

    char *backend_url;                    /* base URL, no trailing slash */
    char *backend_url_event[WH_N_EVENTS]; /* per-event override or NULL */
    char *backend_secret;                 /* space-separated whsec_ keys or NULL */
    char *backend_token;                  /* bearer token or NULL */
    char *backend_secret_file;            /* where backend_secret is read from, or NULL */
    char *backend_token_file;             /* where backend_token is read from, or NULL */
    char *backend_ca_file, *backend_cert, *backend_key;
    double backend_timeout;                    /* seconds, default 10 */
    double backend_timeout_event[WH_N_EVENTS]; /* 0 = use backend_timeout */
    int backend_pool;                          /* keep-alive connections per worker */
    int max_inflight;                          /* webhook calls in flight per worker */
    int event_connect, event_disconnect;       /* optional events enabled */

    struct cfg_addr admin_listen; /* port 0 = disabled */
    char *admin_token;
    char *admin_token_file; /* where admin_token is read from, or NULL */
    int workers;            /* resolved: auto = number of cores */
    char *user;             /* drop privileges to this user, or NULL */

    int max_connections, max_connections_per_ip;
    double login_timeout, idle_timeout, send_timeout;
    int max_bad_commands;
    double shutdown_grace;
    char *expire;    /* RFC 2449 EXPIRE value ("NEVER" or days) or NULL */
    int login_delay; /* seconds; -1 = not advertised */
    double auth_failure_delay;
    int max_auth_failures, max_auth_failures_per_ip;
    int max_messages;
    char *spool_dir;              /* where slow clients' messages wait, or NULL: no spooling */
    unsigned long long spool_max; /* octets one session may hold in its spool file */
    enum cfg_proxy proxy_protocol;
    char *proxy_trusted; /* comma-separated CIDRs or NULL */
    enum cfg_log_format log_format;
    int log_level; /* LOG_ERROR .. LOG_DEBUG from log.h */

    int check_config; /* --check-config given */
    int health;       /* --health given: probe the admin endpoint and exit */
    char *health_url; /* --health=URL, or NULL for admin_listen's /healthz */
};

/*
 * Fills `c` with defaults, then the file named by -c/--config, then the
 * environment, then flags. Handles --help and --version itself (sets *exit_now
 * and returns 0). Returns 0 on success, -1 after writing a clear message to
 * `err` (a buffer of errlen bytes). The caller frees with cfg_free().
 * When no source names listen or listen_tls, listen becomes 0.0.0.0:110.
 * Last, each secret key given as a file (backend_secret_file, ...) is read
 * from that file into its key (cfg_read_secret_files in cfg.c); a key set
 * both ways is an error.
 * It does not call cfg_validate(); the caller does, after it.
 */
int cfg_load(struct cfg *c, int argc, char **argv, char **envp, int *exit_now, char *err,
             size_t errlen);

/* Applies one key; returns 0 or -1 with a message in err. Exposed for tests. */
int cfg_set(struct cfg *c, const char *key, const char *value, char *err, size_t errlen);

/* Checks the combination of keys (backend_url present, TLS files, ...). */
int cfg_validate(const struct cfg *c, char *err, size_t errlen);

/* Writes the effective configuration as `key = value` lines, secrets masked. */
void cfg_print(const struct cfg *c, FILE *out);

/* Fills c with every key's default (the plain values of the key table,
 * applied through each key's setter, and this machine's host name). */
void cfg_defaults(struct cfg *c);

/* Row i of the key table, for the docs test: the key (per-event rows: the
 * prefix, "backend_url_", with *per_event set), its default as a file would
 * write it (*def, NULL: none) and what --help says instead when the default
 * is no plain value (*note, NULL: none). NULL past the last row. */
const char *cfg_key_info(size_t i, int *per_event, const char **def, const char **note);

struct pop3_params;
struct wh_params;

/* The settings of the POP3 session and of the webhook client, drawn from c
 * (pointers into c: c must outlive them). `tls` says a certificate is
 * loaded (STLS can be offered). */
void cfg_pop3_params(const struct cfg *c, int tls, struct pop3_params *p);
void cfg_wh_params(const struct cfg *c, struct wh_params *p);
void cfg_free(struct cfg *c);

#endif
