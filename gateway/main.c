/*
 * main: start-up and signals.
 *
 * Loads the configuration, binds the listeners, drops privileges, starts the
 * workers, then waits for signals in the main thread: SIGTERM and SIGINT
 * drain and stop the workers; SIGHUP reloads what can be reloaded.
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
#include "admin/metrics.h"
#include "gateway/cfg.h"
#include "gateway/limits.h"
#include "gateway/log.h"
#include "gateway/server.h"
#include "gateway/tls.h"
#include "webhook/wh_client.h"

/* Raises the soft descriptor limit to the hard one: each client costs one
 * descriptor and each backend connection another. Then keeps max_connections
 * below what the descriptors allow after the backend pools and listeners,
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
    budget =
        (long)rl.rlim_cur - (long)cfg->workers * (cfg->backend_pool + 2L * CFG_MAX_LISTEN + 8) - 64;
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

/* SIGHUP: reads the configuration again and hands the backend secret and
 * token to the workers; a configuration that no longer loads changes
 * nothing. */
static void main_reload_secrets(struct server *srv, int argc, char **argv)
{
    struct cfg fresh;
    char err[1024];
    int exit_now = 0;

    if (cfg_load(&fresh, argc, argv, NULL, &exit_now, err, sizeof(err)) < 0) {
        log_kv(LOG_ERROR, NULL, "SIGHUP: configuration not reloaded", "error=%s", err);
        cfg_free(&fresh);
        return;
    }
    server_reload_secrets(srv, fresh.backend_secret, fresh.backend_token);
    log_kv(LOG_INFO, NULL, "backend secrets reloaded", "keys=%s",
           fresh.backend_secret ? "set" : "none");
    cfg_free(&fresh);
}

int main(int argc, char **argv)
{
    struct cfg cfg;
    struct server srv;
    char err[1024];
    int exit_now = 0, sig = 0, rc = 1;
    sigset_t set;

    memset(&srv, 0, sizeof(srv));
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
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    main_raise_nofile(&cfg);
    if (evthread_use_pthreads() < 0 || wh_global_init() < 0) {
        log_kv(LOG_ERROR, NULL, "cannot initialise libraries", "libs=%s", "libevent,libcurl");
        goto out;
    }
    limits_init(cfg.max_connections_per_ip, cfg.max_auth_failures_per_ip);
    if (tls_init(cfg.tls_cert, cfg.tls_key, cfg.tls_min_version) < 0)
        goto out;
    /* Every port is bound first (they may be below 1024), then privileges
     * drop, then the threads start: no client is ever served as root. */
    if (server_bind(&srv, &cfg) < 0 || admin_bind(&cfg) < 0 || main_drop_privileges(&cfg) < 0)
        goto out;
    METRIC_SET(started, (long)time(NULL));
    if (server_start(&srv) < 0 || admin_start(&srv, &cfg) < 0)
        goto stop;
    log_kv(LOG_INFO, NULL, "pop3gw started", "version=%s backend=%s", POP3GW_VERSION,
           cfg.backend_url);
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_kv(LOG_INFO, NULL, "SIGHUP: reloading", "tls=%d", tls_enabled());
            tls_reload();
            main_reload_secrets(&srv, argc, argv);
            continue;
        }
        log_kv(LOG_INFO, NULL, "stopping", "signal=%s grace=%.1f", sig == SIGTERM ? "TERM" : "INT",
               cfg.shutdown_grace);
        break;
    }
    rc = 0;
stop:
    server_stop(&srv); /* /readyz says "draining" meanwhile */
out:
    admin_stop();
    server_free(&srv);
    wh_global_cleanup();
    tls_cleanup();
    limits_cleanup();
    if (rc == 0)
        log_kv(LOG_INFO, NULL, "stopped", "version=%s", POP3GW_VERSION);
    cfg_free(&cfg);
    return rc;
}
