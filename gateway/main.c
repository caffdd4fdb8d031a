/*
 * main: start-up and signals.
 *
 * Loads the configuration, binds the listeners, drops privileges, starts the
 * workers and the admin endpoint (wiring the two together through
 * gateway/report.c), then waits for signals in the main thread: SIGTERM and
 * SIGINT drain and stop the workers; SIGHUP reads the configuration again.
 */
#include <curl/curl.h>
#include <errno.h>
#include <event2/thread.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "gateway/cfg.h"
#include "gateway/limits.h"
#include "gateway/report.h"
#include "gateway/server.h"
#include "gateway/settings.h"
#include "gateway/spool.h"
#include "gateway/tls.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "webhook/wh_client.h"

/* Raises the soft descriptor limit to the hard one: each client costs one
 * descriptor and each backend connection another. Then keeps max_connections
 * below what the descriptors allow after the backend pools, the listeners
 * and the admin endpoint's connections,
 * so that extra clients are told "too many connections" at once instead of
 * starving the backend connections. */
static void main_raise_nofile(struct cfg *cfg)
{
    struct rlimit rl;
    long budget;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return;
    budget = (long)rl.rlim_cur -
             (long)cfg->workers * (cfg->backend_pool + 2L * CFG_MAX_LISTEN + 8) - 64 -
             ADMIN_MAX_CONNECTIONS;
    if (budget < 16)
        budget = 16;
    if (cfg->max_connections > budget) {
        log_kv(LOG_WARN, NULL, "max_connections lowered to fit the descriptor limit",
               "configured=%d effective=%ld nofile=%llu", cfg->max_connections, budget,
               (unsigned long long)rl.rlim_cur);
        cfg->max_connections = (int)budget;
    }
}

/* Drops to cfg->user after binding, when started as root. */
static int main_drop_privileges(const struct cfg *cfg)
{
    struct passwd *pw;

    if (!cfg->user || !*cfg->user)
        return 0;
    if (geteuid() != 0) {
        log_kv(LOG_WARN, NULL, "not root: user setting ignored", "user=%s", cfg->user);
        return 0;
    }
    pw = getpwnam(cfg->user);
    if (!pw) {
        log_kv(LOG_ERROR, NULL, "no such user", "user=%s", cfg->user);
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        log_kv(LOG_ERROR, NULL, "cannot drop privileges", "user=%s error=%s", cfg->user,
               strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        log_kv(LOG_ERROR, NULL, "privileges could be regained after dropping them", "user=%s",
               cfg->user);
        return -1;
    }
    log_kv(LOG_INFO, NULL, "dropped privileges", "user=%s uid=%d", cfg->user, (int)pw->pw_uid);
    return 0;
}

static size_t main_discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/*
 * --health: a probe for container health checks (no extra tools in the
 * image). GETs the admin endpoint's /healthz (or the URL given) with a 2 s
 * timeout; exit 0 on 200, 1 otherwise.
 */
static int main_health(const struct cfg *cfg)
{
    char url[600];
    const char *host = cfg->admin_listen.host;
    CURL *e;
    long code = 0;
    CURLcode res;

    if (cfg->health_url && *cfg->health_url) {
        snprintf(url, sizeof(url), "%s", cfg->health_url);
    } else {
        if (cfg->admin_listen.port == 0) {
            fprintf(stderr, "pop3gw: --health needs admin_listen (it is disabled)\n");
            return 1;
        }
        if (!strcmp(host, "0.0.0.0") || !strcmp(host, "*") || !*host)
            host = "127.0.0.1";
        else if (!strcmp(host, "::"))
            host = "::1";
        snprintf(url, sizeof(url),
                 strchr(host, ':') ? "http://[%s]:%d/healthz" : "http://%s:%d/healthz", host,
                 cfg->admin_listen.port);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    e = curl_easy_init();
    if (!e)
        return 1;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, main_discard);
    res = curl_easy_perform(e);
    if (res == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_global_cleanup();
    if (code == 200)
        return 0;
    fprintf(stderr, "pop3gw: unhealthy: %s: %s\n", url,
            res != CURLE_OK ? curl_easy_strerror(res) : "status not 200");
    return 1;
}

/* Says at start when no spool file can be made in spool_dir: slow clients'
 * transfers then pause instead (each one logged and counted). */
static void main_check_spool(const struct cfg *cfg)
{
    if (!cfg->spool_dir) {
        log_kv(LOG_INFO, NULL, "spooling off: slow clients' transfers pause instead", NULL);
        return;
    }
    if (spool_probe(cfg->spool_dir) < 0)
        log_kv(LOG_WARN, NULL,
               "cannot make spool files: slow clients' transfers will pause instead",
               "spool_dir=%s error=%s", cfg->spool_dir, strerror(errno));
}

/* The admin endpoint's settings, drawn from the configuration. */
static void main_adm_params(const struct cfg *cfg, struct adm_params *p)
{
    p->host = cfg->admin_listen.host;
    p->port = cfg->admin_listen.port;
    p->token = cfg->admin_token;
}

static int main_addrs_differ(const struct cfg_addr *a, int na, const struct cfg_addr *b, int nb)
{
    return na != nb || memcmp(a, b, (size_t)na * sizeof(*a)) != 0;
}

/* Keys that need a restart keep their running value on SIGHUP; the ones
 * that changed in the file are named in a warning. 0, or -1 when memory
 * runs out. */
static int main_keep_restart_keys(const struct cfg *old, struct cfg *fresh)
{
    char changed[160] = "";
    char *user = NULL, *spool_dir = NULL;

#define MAIN_CHANGED(name)                                                                         \
    snprintf(changed + strlen(changed), sizeof(changed) - strlen(changed), "%s%s",                 \
             changed[0] ? "," : "", name)
    if (main_addrs_differ(old->listen, old->n_listen, fresh->listen, fresh->n_listen))
        MAIN_CHANGED("listen");
    if (main_addrs_differ(old->listen_tls, old->n_listen_tls, fresh->listen_tls,
                          fresh->n_listen_tls))
        MAIN_CHANGED("listen_tls");
    if (old->workers != fresh->workers)
        MAIN_CHANGED("workers");
    if (old->tls_min_version != fresh->tls_min_version)
        MAIN_CHANGED("tls_min_version");
    if ((old->user == NULL) != (fresh->user == NULL) ||
        (old->user && strcmp(old->user, fresh->user) != 0))
        MAIN_CHANGED("user");
    if (main_addrs_differ(&old->admin_listen, 1, &fresh->admin_listen, 1))
        MAIN_CHANGED("admin_listen");
    if ((old->spool_dir == NULL) != (fresh->spool_dir == NULL) ||
        (old->spool_dir && strcmp(old->spool_dir, fresh->spool_dir) != 0))
        MAIN_CHANGED("spool_dir");
#undef MAIN_CHANGED
    if (old->user && !(user = strdup(old->user)))
        return -1;
    if (old->spool_dir && !(spool_dir = strdup(old->spool_dir))) {
        free(user);
        return -1;
    }
    free(fresh->spool_dir);
    fresh->spool_dir = spool_dir;
    memcpy(fresh->listen, old->listen, sizeof(fresh->listen));
    fresh->n_listen = old->n_listen;
    memcpy(fresh->listen_tls, old->listen_tls, sizeof(fresh->listen_tls));
    fresh->n_listen_tls = old->n_listen_tls;
    fresh->workers = old->workers;
    fresh->tls_min_version = old->tls_min_version;
    free(fresh->user);
    fresh->user = user;
    fresh->admin_listen = old->admin_listen;
    if (changed[0])
        log_kv(LOG_WARN, NULL, "SIGHUP: these keys need a restart; their old values stay",
               "keys=%s", changed);
    return 0;
}

/*
 * SIGHUP: reads the whole configuration again (file, environment, flags as
 * started). A configuration that does not load or validate is refused whole
 * and the running one stays. Otherwise every key that can change at run
 * time applies to new sessions and new calls. Returns the settings now in
 * force (the old ones, or new ones that replaced them).
 */
static struct settings *main_reload(struct server *srv, struct settings *cur, int argc, char **argv)
{
    struct cfg fresh;
    struct settings *set;
    char err[1024];
    int exit_now = 0;

    if (cfg_load(&fresh, argc, argv, NULL, &exit_now, err, sizeof(err)) < 0 ||
        cfg_validate(&fresh, err, sizeof(err)) < 0 ||
        main_keep_restart_keys(&cur->cfg, &fresh) < 0) {
        log_kv(LOG_ERROR, NULL, "SIGHUP: configuration refused; the running one stays", "error=%s",
               err);
        cfg_free(&fresh);
        return cur;
    }
    main_raise_nofile(&fresh);
    tls_reload();
    if (!(set = settings_new(&fresh, tls_enabled(), err, sizeof(err)))) {
        log_kv(LOG_ERROR, NULL, "SIGHUP: configuration refused; the running one stays", "error=%s",
               err);
        cfg_free(&fresh);
        return cur;
    }
    log_init(set->cfg.log_format, set->cfg.log_level);
    limits_set(set->cfg.max_connections_per_ip, set->cfg.max_auth_failures_per_ip);
    admin_set_token(set->cfg.admin_token);
    server_reload(srv, set);
    settings_unref(cur);
    log_kv(LOG_INFO, NULL, "SIGHUP: configuration reloaded", "backend=%s keys=%s",
           set->cfg.backend_url, set->cfg.backend_secret ? "set" : "none");
    return set;
}

int main(int argc, char **argv)
{
    struct cfg cfg;
    struct settings *set = NULL;
    struct server *srv = NULL;
    struct adm_params adm;
    struct adm_source src;
    char err[1024];
    int exit_now = 0, sig = 0, rc = 1;
    sigset_t sigs;

    if (cfg_load(&cfg, argc, argv, NULL, &exit_now, err, sizeof(err)) < 0) {
        fprintf(stderr, "pop3gw: %s\n", err);
        cfg_free(&cfg);
        return 2;
    }
    if (exit_now) {
        cfg_free(&cfg);
        return 0;
    }
    if (cfg.health) {
        rc = main_health(&cfg);
        cfg_free(&cfg);
        return rc;
    }
    if (cfg_validate(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "pop3gw: %s\n", err);
        cfg_free(&cfg);
        return 2;
    }
    if (cfg.check_config) {
        cfg_print(&cfg, stdout);
        cfg_free(&cfg);
        return 0;
    }
    log_init(cfg.log_format, cfg.log_level);
    /* Streamed messages pass through large short-lived buffers: keep freed
     * memory in the heap instead of trimming and faulting it back each time. */
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    signal(SIGPIPE, SIG_IGN);
    /* Signals go to the main thread only: block them before threads start. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    main_raise_nofile(&cfg);
    if (evthread_use_pthreads() < 0 || wh_global_init() < 0) {
        log_kv(LOG_ERROR, NULL, "cannot initialise libraries", "libs=%s", "libevent,libcurl");
        goto out;
    }
    limits_init(cfg.max_connections_per_ip, cfg.max_auth_failures_per_ip);
    main_check_spool(&cfg);
    if (tls_init(cfg.tls_cert, cfg.tls_key, cfg.tls_min_version) < 0)
        goto out;
    if (!(set = settings_new(&cfg, tls_enabled(), err, sizeof(err)))) {
        log_kv(LOG_ERROR, NULL, "cannot start", "error=%s", err);
        goto out;
    }
    if (!(srv = server_new(set)))
        goto out;
    main_adm_params(&set->cfg, &adm);
    report_source(srv, &src);
    /* Every port is bound first (they may be below 1024), then privileges
     * drop, then the threads start: no client is ever served as root. */
    if (server_bind(srv) < 0 || admin_bind(&adm) < 0 || main_drop_privileges(&set->cfg) < 0)
        goto out;
    METRIC_SET(started, (long)time(NULL));
    if (server_start(srv) < 0 || admin_start(&adm, &src) < 0)
        goto stop;
    log_kv(LOG_INFO, NULL, "pop3gw started", "version=%s backend=%s", POP3GW_VERSION,
           set->cfg.backend_url);
    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_kv(LOG_INFO, NULL, "SIGHUP: reloading", "tls=%d", tls_enabled());
            set = main_reload(srv, set, argc, argv);
            continue;
        }
        log_kv(LOG_INFO, NULL, "stopping", "signal=%s grace=%.1f", sig == SIGTERM ? "TERM" : "INT",
               set->cfg.shutdown_grace);
        break;
    }
    rc = 0;
stop:
    server_stop(srv); /* /readyz says "draining" meanwhile */
out:
    admin_stop();
    server_free(srv);
    wh_global_cleanup();
    tls_cleanup();
    limits_cleanup();
    if (rc == 0)
        log_kv(LOG_INFO, NULL, "stopped", "version=%s", POP3GW_VERSION);
    settings_unref(set);
    cfg_free(&cfg);
    return rc;
}
