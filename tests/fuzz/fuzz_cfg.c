/*
 * fuzz_cfg: the configuration (gateway/cfg.c): every key's value checks,
 * the file reader on top of inih, the environment and the flags.
 *
 * Input: byte 0 picks the mode (bits 0-1):
 *   0, 1  cfg_set(): the rest is lines; each line's first byte picks a key
 *         from the full list (per-event keys included), the remainder of the
 *         line is the value; the last index means "the line is key=value,
 *         taken literally" (unknown keys);
 *   2     cfg_load() of a config file whose content is the rest (a memfd);
 *   3     cfg_load() with three parts separated by NUL bytes: file content,
 *         environment lines, command-line arguments (one per line; -c,
 *         --config, --help and --version are dropped: no other
 *         configuration file is read and nothing is printed; a *_file key
 *         may name a file, which cfg_load() reads only when it is a regular
 *         file of at most 64 KiB).
 * Then cfg_validate(), cfg_print() into memory, cfg_free().
 *
 * Checks: an error comes with a message; a value a setter took is within
 * the documented range; a refused value of a secret key (backend_secret,
 * backend_token, admin_token) shows as *** in cfg_set()'s message, and
 * cfg_print() prints secrets as ***; everything is freed (LeakSanitizer).
 */
#include "fuzz.h"

#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/cfg.h"
#include "tests/unit/cfg_keys.h"

#define ERR_LEN 1024


static int is_secret(const char *key)
{
    return !strcmp(key, "backend_secret") || !strcmp(key, "backend_token") ||
           !strcmp(key, "admin_token");
}

/* An error message: present and terminated. */
static void check_error(const char *err)
{
    FUZZ_CHECK(memchr(err, '\0', ERR_LEN) != NULL);
    if (getenv("FUZZ_TRACE"))
        fprintf(stderr, "cfg error: %s\n", err);
    FUZZ_CHECK(err[0] != '\0');
}

/* cfg_set() refused a value of a secret key: the value shows as ***. (Only
 * here, where the key is known: messages from cfg_load() also echo file
 * names, flag and variable names, which may contain anything.) */
static void check_secret_error(const char *err, const char *key)
{
    char want[64];

    if (!is_secret(key) || !strstr(err, "bad value"))
        return;
    snprintf(want, sizeof(want), "%s: bad value \"***\"", key);
    FUZZ_CHECK(strncmp(err, want, strlen(want)) == 0);
}

static void check_addr(const struct cfg_addr *a)
{
    size_t n = strnlen(a->host, sizeof(a->host));

    FUZZ_CHECK(n > 0 && n < sizeof(a->host));
    FUZZ_CHECK(a->port >= 1 && a->port <= 65535);
}

static void check_secs(double v, double lo, double hi)
{
    FUZZ_CHECK(v == v && v >= lo && v <= hi);
}

/* The ranges cfg.c's key table promises. */
static void check_cfg(const struct cfg *c)
{
    int i;

    FUZZ_CHECK(c->n_listen >= 0 && c->n_listen <= CFG_MAX_LISTEN);
    FUZZ_CHECK(c->n_listen_tls >= 0 && c->n_listen_tls <= CFG_MAX_LISTEN);
    for (i = 0; i < c->n_listen; i++)
        check_addr(&c->listen[i]);
    for (i = 0; i < c->n_listen_tls; i++)
        check_addr(&c->listen_tls[i]);
    if (c->admin_listen.port)
        check_addr(&c->admin_listen);
    FUZZ_CHECK(c->tls_min_version == 12 || c->tls_min_version == 13);
    FUZZ_CHECK(c->plaintext_auth == CFG_PLAIN_TLS_ONLY || c->plaintext_auth == CFG_PLAIN_ALLOW);
    FUZZ_CHECK(c->apop == 0 || c->apop == 1);
    check_secs(c->backend_timeout, 0, 86400);
    FUZZ_CHECK(c->backend_timeout > 0);
    for (i = 0; i < WH_N_EVENTS; i++)
        check_secs(c->backend_timeout_event[i], 0, 86400);
    FUZZ_CHECK(c->backend_pool >= 1 && c->backend_pool <= 1024);
    FUZZ_CHECK(c->max_inflight >= 1);
    FUZZ_CHECK(c->workers >= 1 && c->workers <= 64);
    FUZZ_CHECK(c->max_connections >= 1 && c->max_connections_per_ip >= 1);
    check_secs(c->login_timeout, 0, 86400);
    check_secs(c->idle_timeout, 600, 86400);
    check_secs(c->send_timeout, 0, 86400);
    check_secs(c->shutdown_grace, 0, 86400);
    check_secs(c->auth_failure_delay, 0, 86400);
    FUZZ_CHECK(c->max_bad_commands >= 1 && c->max_auth_failures >= 1);
    FUZZ_CHECK(c->login_delay >= -1);
    FUZZ_CHECK(c->max_messages >= 1 && c->max_messages <= 100000000);
    FUZZ_CHECK(c->proxy_protocol >= CFG_PROXY_OFF && c->proxy_protocol <= CFG_PROXY_ANY);
    FUZZ_CHECK(c->log_format == CFG_LOG_LOGFMT || c->log_format == CFG_LOG_JSON);
    FUZZ_CHECK(c->log_level >= LOG_ERROR && c->log_level <= LOG_DEBUG);
    if (c->backend_url)
        FUZZ_CHECK(!strncasecmp(c->backend_url, "http://", 7) ||
                   !strncasecmp(c->backend_url, "https://", 8));
}

/* cfg_print(): every line is `key = value`, secrets as *** (or empty). */
static void check_print(const struct cfg *c)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    FUZZ_CHECK(f != NULL);
    cfg_print(c, f);
    fclose(f);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *eq = strstr(line, " = ");
        char key[64];
        size_t n;

        FUZZ_CHECK(eq != NULL);
        n = (size_t)(eq - line);
        FUZZ_CHECK(n < sizeof(key));
        memcpy(key, line, n);
        key[n] = '\0';
        if (is_secret(key))
            FUZZ_CHECK(!strcmp(eq + 3, "***") || !strcmp(eq + 3, ""));
    }
    free(text);
}

static void finish(struct cfg *c)
{
    char err[ERR_LEN];

    check_cfg(c);
    if (cfg_validate(c, err, sizeof(err)) < 0)
        check_error(err);
    check_print(c);
    cfg_free(c);
}

static void mode_set(const uint8_t *p, size_t n)
{
    struct cfg c;
    const uint8_t *end = p + n;

    cfg_defaults(&c);
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char err[ERR_LEN];

        if (len > 0) {
            size_t k = p[0] % (CFG_TEST_N_KEYS + 1);
            char *line = fuzz_strndup(p + 1, len - 1), *key, *value;
            if (k < CFG_TEST_N_KEYS) {
                key = (char *)cfg_test_keys[k];
                value = line;
            } else {
                key = line;
                value = strchr(line, '=');
                if (value)
                    *value++ = '\0';
            }
            err[0] = '\0';
            if (cfg_set(&c, key, value, err, sizeof(err)) < 0) {
                check_error(err);
                check_secret_error(err, key);
            }
            check_cfg(&c);
            free(line);
        }
        p += len + 1;
    }
    finish(&c);
}

/* Splits n bytes at p into NUL-terminated lines; returns the count. */
static size_t split_lines(const uint8_t *p, size_t n, char ***out)
{
    size_t count = 0, i, start = 0;
    char **v = calloc(n + 2, sizeof(*v));

    FUZZ_CHECK(v != NULL);
    for (i = 0; i <= n; i++) {
        if (i == n || p[i] == '\n') {
            if (i > start)
                v[count++] = fuzz_strndup(p + start, i - start);
            start = i + 1;
        }
    }
    *out = v;
    return count;
}

static int arg_allowed(const char *a)
{
    return strcmp(a, "-c") && strcmp(a, "--config") && strncmp(a, "--config=", 9) &&
           strcmp(a, "-h") && strcmp(a, "--help") && strcmp(a, "-V") && strcmp(a, "--version");
}

static void mode_load(const uint8_t *p, size_t n, int parts)
{
    const uint8_t *file = p, *env = NULL, *args = NULL;
    size_t file_n = n, env_n = 0, args_n = 0, i, ne = 0, na = 0;
    char **envl = NULL, **argl = NULL, **argv, path[64], err[ERR_LEN];
    int fd, argc = 0, exit_now = 0;
    struct cfg c;

    if (parts) {
        const uint8_t *z = memchr(p, 0, n);
        if (z) {
            file_n = (size_t)(z - p);
            env = z + 1;
            env_n = n - file_n - 1;
            z = memchr(env, 0, env_n);
            if (z) {
                args = z + 1;
                args_n = env_n - (size_t)(z - env) - 1;
                env_n = (size_t)(z - env);
            }
        }
    }
    fd = memfd_create("pop3gw-fuzz-cfg", 0);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(file_n == 0 || write(fd, file, file_n) == (ssize_t)file_n);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    ne = env ? split_lines(env, env_n, &envl) : 0;
    na = args ? split_lines(args, args_n, &argl) : 0;
    argv = calloc(na + 4, sizeof(*argv));
    FUZZ_CHECK(argv != NULL);
    argv[argc++] = "pop3gw";
    argv[argc++] = "-c";
    argv[argc++] = path;
    for (i = 0; i < na; i++)
        if (arg_allowed(argl[i]))
            argv[argc++] = argl[i];
    if (!envl) {
        envl = calloc(1, sizeof(*envl));
        FUZZ_CHECK(envl != NULL);
    }

    err[0] = '\0';
    if (cfg_load(&c, argc, argv, envl, &exit_now, err, sizeof(err)) < 0) {
        check_error(err);
        cfg_free(&c);
    } else {
        FUZZ_CHECK(!exit_now);
        finish(&c);
    }
    close(fd);
    for (i = 0; i < ne; i++)
        free(envl[i]);
    for (i = 0; i < na; i++)
        free(argl[i]);
    free(envl);
    free(argl);
    free(argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_log(0);
    switch (data[0] & 3) {
    case 0:
    case 1:
        mode_set(data + 1, size - 1);
        break;
    case 2:
        mode_load(data + 1, size - 1, 0);
        break;
    default:
        mode_load(data + 1, size - 1, 1);
        break;
    }
    return 0;
}
