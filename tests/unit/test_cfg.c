/*
 * Tests for gateway/cfg.c: tables of valid values (checked through what
 * cfg_print shows) and invalid values (checked for the key name and the
 * `bad value ... expected` form) for every kind of key; the sources and their
 * precedence (file < environment < flags) with their error messages; listener
 * parsing; cfg_validate's refusals; masking of secrets; --help and --version.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/cfg.h"
#include "tests/unit/cfg_keys.h"
#include "lib/log.h"

#define SECRET1 "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" /* 24 bytes */
#define SECRET2 "whsec_c2VjcmV0LXR3bw=="                 /* "secret-two" */

/* ---- helpers -------------------------------------------------------------- */

/* cfg_print's output, with a leading newline so every line is "\nkey = v\n". */
static char *print_cfg(const struct cfg *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    fputc('\n', f);
    cfg_print(c, f);
    fclose(f);
    return buf;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("expected \"%s\" in:\n%s", needle, hay);
}

static void assert_printed(const struct cfg *c, const char *key, const char *value)
{
    char line[1024];
    char *out = print_cfg(c);

    snprintf(line, sizeof line, "\n%s = %s\n", key, value);
    assert_contains(out, line);
    free(out);
}

/* Writes text to a fresh temporary file; returns its malloc'd path. */
static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/test_cfg_XXXXXX");
    int fd;

    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Runs cfg_load on a NULL-terminated argument list (argv[0] added). */
static int load(struct cfg *c, const char *const *args, char **envp, int *exit_now, char *err,
                size_t errlen)
{
    char *argv[32];
    int argc = 0;
    char *empty_env[] = {NULL};

    argv[argc++] = "pop3gw";
    for (; args && *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return cfg_load(c, argc, argv, envp ? envp : empty_env, exit_now, err, errlen);
}

/* Output of cfg_load on fd 1 (for --help and --version). */
static char *load_stdout(const char *const *args, int *rc, int *exit_now)
{
    struct cfg c;
    char err[1024];
    FILE *tmp = tmpfile();
    int saved;
    long len;
    char *buf;

    assert_non_null(tmp);
    fflush(stdout);
    saved = dup(1);
    dup2(fileno(tmp), 1);
    *rc = load(&c, args, NULL, exit_now, err, sizeof err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    cfg_free(&c);
    len = ftell(tmp);
    assert_true(len >= 0);
    buf = calloc(1, (size_t)len + 1);
    rewind(tmp);
    assert_int_equal(fread(buf, 1, (size_t)len, tmp), (size_t)len);
    fclose(tmp);
    return buf;
}

/* ---- defaults and names --------------------------------------------------- */

static void test_event_names(void **state)
{
    static const char *const want[WH_N_EVENTS] = {
        "authenticate", "list", "uidl", "retrieve", "quit", "connect", "disconnect",
    };

    (void)state;
    for (int i = 0; i < WH_N_EVENTS; i++)
        assert_string_equal(wh_event_names[i], want[i]);
}

static void test_defaults(void **state)
{
    struct cfg c;

    (void)state;
    cfg_defaults(&c);
    assert_int_equal(c.n_listen, 0);
    assert_int_equal(c.n_listen_tls, 0);
    assert_null(c.tls_cert);
    assert_int_equal(c.tls_min_version, 12);
    assert_int_equal(c.plaintext_auth, CFG_PLAIN_TLS_ONLY);
    assert_non_null(c.hostname);
    assert_true(strlen(c.hostname) > 0);
    assert_int_equal(c.apop, 1);
    assert_null(c.backend_url);
    for (int e = 0; e < WH_N_EVENTS; e++) {
        assert_null(c.backend_url_event[e]);
        assert_true(c.backend_timeout_event[e] == 0);
    }
    assert_true(c.backend_timeout == 10);
    assert_int_equal(c.backend_pool, 16);
    assert_int_equal(c.max_inflight, 256);
    assert_int_equal(c.event_connect, 0);
    assert_int_equal(c.event_disconnect, 0);
    assert_string_equal(c.admin_listen.host, "127.0.0.1");
    assert_int_equal(c.admin_listen.port, 8110);
    assert_true(c.workers >= 1 && c.workers <= 64);
    assert_null(c.user);
    assert_int_equal(c.max_connections, 10000);
    assert_int_equal(c.max_connections_per_ip, 50);
    assert_true(c.login_timeout == 60);
    assert_true(c.idle_timeout == 600);
    assert_true(c.send_timeout == 60);
    assert_int_equal(c.max_bad_commands, 10);
    assert_true(c.shutdown_grace == 10);
    assert_null(c.expire);
    assert_int_equal(c.login_delay, -1);
    assert_true(c.auth_failure_delay == 2);
    assert_int_equal(c.max_auth_failures, 3);
    assert_int_equal(c.max_auth_failures_per_ip, 20);
    assert_int_equal(c.max_messages, 100000);
    assert_int_equal(c.proxy_protocol, CFG_PROXY_OFF);
    assert_null(c.proxy_trusted);
    assert_int_equal(c.log_format, CFG_LOG_LOGFMT);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_int_equal(c.check_config, 0);
    cfg_free(&c);
    cfg_free(&c); /* idempotent */
    cfg_free(NULL);
}

/* ---- valid values --------------------------------------------------------- */

static const struct {
    const char *key, *value, *shown;
} valid[] = {
    {"listen", "127.0.0.1:110", "127.0.0.1:110"},
    {"listen", "[::1]:110", "[::1]:110"},
    {"listen", " [::1]:110 , 10.0.0.1:1110 ", "[::1]:110, 10.0.0.1:1110"},
    {"listen", "*:110", "*:110"},
    {"listen", ":110", "*:110"},
    {"listen", "mail.example.com:65535", "mail.example.com:65535"},
    {"listen", "", ""},
    {"listen_tls", "[2001:db8::1]:995,0.0.0.0:995", "[2001:db8::1]:995, 0.0.0.0:995"},
    {"tls_cert", "/etc/ssl/my cert.pem", "/etc/ssl/my cert.pem"},
    {"tls_cert", "", ""},
    {"tls_key", "key.pem", "key.pem"},
    {"tls_min_version", "1.3", "1.3"},
    {"tls_min_version", "1.2", "1.2"},
    {"plaintext_auth", "allow", "allow"},
    {"plaintext_auth", "TLS-ONLY", "tls-only"},
    {"hostname", "mail.example.com", "mail.example.com"},
    {"apop", "off", "off"},
    {"apop", "on", "on"},
    {"backend_url", "http://127.0.0.1:8080/pop3/", "http://127.0.0.1:8080/pop3"},
    {"backend_url", "https://b.example//", "https://b.example"},
    {"backend_url", "", ""},
    {"backend_url_retrieve", "http://x.example/r/", "http://x.example/r"},
    {"backend_url_authenticate", "https://a.example/auth", "https://a.example/auth"},
    {"backend_secret", SECRET1, "***"},
    {"backend_secret", SECRET1 "  " SECRET2, "***"},
    {"backend_secret", "", ""},
    {"backend_token", "tok-123", "***"},
    {"backend_secret_file", "/run/secrets/backend_secret", "/run/secrets/backend_secret"},
    {"backend_token_file", "token file", "token file"},
    {"admin_token_file", "", ""},
    {"backend_ca_file", "/etc/ssl/ca.pem", "/etc/ssl/ca.pem"},
    {"backend_cert", "c.pem", "c.pem"},
    {"backend_key", "k.pem", "k.pem"},
    {"backend_timeout", "2.5", "2.5"},
    {"backend_timeout", "0.000001", "0.000001"},
    {"backend_timeout", "86400", "86400"},
    {"backend_timeout_quit", "3", "3"},
    {"backend_timeout_retrieve", "", ""},
    {"backend_pool", "1", "1"},
    {"backend_pool", "1024", "1024"},
    {"max_inflight", "1", "1"},
    {"events", "connect", "connect"},
    {"events", " disconnect , connect ", "connect, disconnect"},
    {"events", "", ""},
    {"admin_listen", "", ""},
    {"admin_listen", "0.0.0.0:9000", "0.0.0.0:9000"},
    {"admin_listen", "[::]:8110", "[::]:8110"},
    {"admin_token", "adm", "***"},
    {"workers", "4", "4"},
    {"workers", "64", "64"},
    {"user", "pop3gw", "pop3gw"},
    {"max_connections", "1", "1"},
    {"max_connections_per_ip", "1000", "1000"},
    {"max_connections_per_ip", "0", "0"},
    {"max_auth_failures_per_ip", "0", "0"},
    {"login_timeout", "0.5", "0.5"},
    {"idle_timeout", "600", "600"},
    {"idle_timeout", "3600.25", "3600.25"},
    {"send_timeout", "30", "30"},
    {"max_bad_commands", "1", "1"},
    {"shutdown_grace", "0", "0"},
    {"expire", "never", "NEVER"},
    {"expire", "030", "30"},
    {"expire", "0", "0"},
    {"expire", "", ""},
    {"login_delay", "0", "0"},
    {"login_delay", "900", "900"},
    {"login_delay", "", ""},
    {"auth_failure_delay", "0", "0"},
    {"max_auth_failures", "5", "5"},
    {"max_auth_failures_per_ip", "100", "100"},
    {"max_messages", "10", "10"},
    {"proxy_protocol", "v2", "v2"},
    {"proxy_protocol", "any", "any"},
    {"proxy_trusted", "10.0.0.0/8, 192.0.2.7 ,fd00::/8", "10.0.0.0/8,192.0.2.7,fd00::/8"},
    {"proxy_trusted", "::/0", "::/0"},
    {"log_format", "json", "json"},
    {"log_level", "debug", "debug"},
    {"log_level", "WARN", "warn"},
};

/* Each key's default lives in its row: cfg_defaults() applies it through the
 * key's setter, so --check-config on the defaults prints it back; keys
 * without one print empty (a note's default, such as the host name, is
 * set in code). */
static void test_defaults_from_table(void **state)
{
    const char *name, *def, *note;
    char line[256], err[512];
    struct cfg c;
    int per_event, n = 0;
    char *out;

    (void)state;
    cfg_defaults(&c);
    out = print_cfg(&c);
    for (size_t i = 0; (name = cfg_key_info(i, &per_event, &def, &note)) != NULL; i++) {
        if (def && note)
            fail_msg("%s: a default value and a note", name);
        if (per_event || note || strcmp(name, "workers") == 0) /* auto: the number of cores */
            continue;
        snprintf(line, sizeof line, "\n%s = %s\n", name, def ? def : "");
        assert_contains(out, line);
        if (def && cfg_set(&c, name, def, err, sizeof err) != 0)
            fail_msg("%s: its default \"%s\" is refused: %s", name, def, err);
        n++;
    }
    assert_true(n > 30);
    free(out);
    cfg_free(&c);
}

static void test_valid_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        struct cfg c;
        char err[1024] = "";
        cfg_defaults(&c);
        if (cfg_set(&c, valid[i].key, valid[i].value, err, sizeof err) != 0)
            fail_msg("%s = \"%s\" refused: %s", valid[i].key, valid[i].value, err);
        assert_printed(&c, valid[i].key, valid[i].shown);
        cfg_free(&c);
    }
}

static void test_stored_values(void **state)
{
    struct cfg c;
    char err[1024];

    (void)state;
    cfg_defaults(&c);
    assert_int_equal(cfg_set(&c, "tls_min_version", "1.3", err, sizeof err), 0);
    assert_int_equal(c.tls_min_version, 13);
    assert_int_equal(cfg_set(&c, "backend_timeout_retrieve", "7.5", err, sizeof err), 0);
    assert_true(c.backend_timeout_event[3] == 7.5);
    assert_int_equal(cfg_set(&c, "backend_url_disconnect", "http://d/", err, sizeof err), 0);
    assert_string_equal(c.backend_url_event[6], "http://d");
    assert_int_equal(cfg_set(&c, "events", "disconnect", err, sizeof err), 0);
    assert_int_equal(c.event_connect, 0);
    assert_int_equal(c.event_disconnect, 1);
    assert_int_equal(cfg_set(&c, "admin_listen", "", err, sizeof err), 0);
    assert_int_equal(c.admin_listen.port, 0);
    assert_int_equal(cfg_set(&c, "log_level", "error", err, sizeof err), 0);
    assert_int_equal(c.log_level, LOG_ERROR);
    assert_int_equal(cfg_set(&c, "log_format", "json", err, sizeof err), 0);
    assert_int_equal(c.log_format, CFG_LOG_JSON);
    assert_int_equal(cfg_set(&c, "proxy_protocol", "v1", err, sizeof err), 0);
    assert_int_equal(c.proxy_protocol, CFG_PROXY_V1);
    assert_int_equal(cfg_set(&c, "plaintext_auth", "allow", err, sizeof err), 0);
    assert_int_equal(c.plaintext_auth, CFG_PLAIN_ALLOW);
    assert_int_equal(cfg_set(&c, "apop", "off", err, sizeof err), 0);
    assert_int_equal(c.apop, 0);
    assert_int_equal(cfg_set(&c, "login_delay", "30", err, sizeof err), 0);
    assert_int_equal(c.login_delay, 30);
    assert_int_equal(cfg_set(&c, "login_delay", "", err, sizeof err), 0);
    assert_int_equal(c.login_delay, -1);
    assert_int_equal(cfg_set(&c, "workers", "auto", err, sizeof err), 0);
    assert_true(c.workers >= 1 && c.workers <= 64);
    assert_int_equal(cfg_set(&c, "backend_token", "", err, sizeof err), 0);
    assert_null(c.backend_token);
    cfg_free(&c);
}

/* ---- listeners ------------------------------------------------------------ */

static void test_listen_parsing(void **state)
{
    static const struct {
        const char *value;
        const char *host[3];
        int port[3];
        int n;
    } cases[] = {
        {"[::1]:110", {"::1"}, {110}, 1},
        {"[2001:db8::1]:995", {"2001:db8::1"}, {995}, 1},
        {"[::]:110", {"::"}, {110}, 1},
        {"*:110", {"*"}, {110}, 1},
        {":110", {"*"}, {110}, 1},
        {"127.0.0.1:1110", {"127.0.0.1"}, {1110}, 1},
        {"localhost:110, [::1]:111,*:112", {"localhost", "::1", "*"}, {110, 111, 112}, 3},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfg c;
        char err[1024] = "";
        cfg_defaults(&c);
        if (cfg_set(&c, "listen", cases[i].value, err, sizeof err) != 0)
            fail_msg("listen = %s refused: %s", cases[i].value, err);
        assert_int_equal(c.n_listen, cases[i].n);
        for (int j = 0; j < cases[i].n; j++) {
            assert_string_equal(c.listen[j].host, cases[i].host[j]);
            assert_int_equal(c.listen[j].port, cases[i].port[j]);
        }
        cfg_free(&c);
    }
}

static void test_listen_max(void **state)
{
    struct cfg c;
    char err[1024], v[512] = "";

    (void)state;
    cfg_defaults(&c);
    for (int i = 0; i < CFG_MAX_LISTEN; i++)
        snprintf(v + strlen(v), sizeof v - strlen(v), "%s127.0.0.1:%d", i ? "," : "", 100 + i);
    assert_int_equal(cfg_set(&c, "listen_tls", v, err, sizeof err), 0);
    assert_int_equal(c.n_listen_tls, CFG_MAX_LISTEN);
    strcat(v, ",127.0.0.1:99");
    assert_int_equal(cfg_set(&c, "listen_tls", v, err, sizeof err), -1);
    assert_contains(err, "listen_tls: bad value");
    assert_int_equal(c.n_listen_tls, CFG_MAX_LISTEN); /* unchanged */
    cfg_free(&c);
}

/* ---- invalid values ------------------------------------------------------- */

static const struct {
    const char *key, *value, *also; /* also: more text the message must hold */
} invalid[] = {
    {"listen", "110", "host:port"},
    {"listen", "::1:110", "brackets"},
    {"listen", "[::1]", "port"},
    {"listen", "[::1]:", "port"},
    {"listen", "[zz]:110", "IPv6"},
    {"listen", "1.2.3.4:0", "1 to 65535"},
    {"listen", "1.2.3.4:65536", "1 to 65535"},
    {"listen", "1.2.3.4:x", "port"},
    {"listen", "999.1.1.1:110", "host"},
    {"listen", "a b:110", NULL},
    {"listen", "1.2.3.4:110,", NULL},
    {"listen_tls", "x", NULL},
    {"tls_cert", "a\nb", NULL},
    {"tls_min_version", "1.1", "1.2 or 1.3"},
    {"tls_min_version", "13", NULL},
    {"tls_min_version", "", NULL},
    {"plaintext_auth", "yes", "tls-only, allow"},
    {"hostname", "", NULL},
    {"hostname", "a b", NULL},
    {"hostname", "<x>", NULL},
    {"apop", "1", "off, on"},
    {"backend_url", "ftp://x", "http://"},
    {"backend_url", "http://", NULL},
    {"backend_url", "127.0.0.1:8080", NULL},
    {"backend_url", "http:///x", NULL},
    {"backend_url", "http://a b", NULL},
    {"backend_url_list", "x", NULL},
    {"backend_secret", "abc", "whsec_"},
    {"backend_secret", "whsec_", "whsec_"},
    {"backend_secret", "whsec_!!!!", "base64"},
    {"backend_secret", "whsec_abc", "base64"},
    {"backend_secret", SECRET1 " whsec_x", "key 2"},
    {"backend_secret", SECRET2 " " SECRET2 " " SECRET2 " " SECRET2 " " SECRET2, "at most 4"},
    {"backend_token", "a b", NULL},
    {"admin_token", "a\tb", NULL},
    {"backend_timeout", "0", "greater than 0"},
    {"backend_timeout", "-1", NULL},
    {"backend_timeout", "abc", NULL},
    {"backend_timeout", "1e3", NULL},
    {"backend_timeout", "inf", NULL},
    {"backend_timeout", "", NULL},
    {"backend_timeout", "90000", NULL},
    {"backend_timeout", "1.", NULL},
    {"backend_timeout", ".5", NULL},
    {"backend_timeout_quit", "0", NULL},
    {"backend_pool", "0", "1 to 1024"},
    {"backend_pool", "1025", NULL},
    {"backend_pool", "-1", NULL},
    {"backend_pool", "1.5", NULL},
    {"backend_pool", "", NULL},
    {"backend_pool", "99999999999999999999999", NULL},
    {"max_inflight", "0", NULL},
    {"events", "quit", "connect and disconnect"},
    {"events", "connect,,disconnect", NULL},
    {"admin_listen", "localhost", NULL},
    {"workers", "0", "auto"},
    {"workers", "65", NULL},
    {"workers", "many", NULL},
    {"user", "a b", NULL},
    {"max_connections", "0", NULL},
    {"max_connections_per_ip", "x", NULL},
    {"login_timeout", "0", NULL},
    {"idle_timeout", "599", "RFC 1939"},
    {"idle_timeout", "60", "at least 10 minutes"},
    {"send_timeout", "never", NULL},
    {"max_bad_commands", "0", NULL},
    {"shutdown_grace", "-5", NULL},
    {"expire", "-1", "NEVER"},
    {"expire", "soon", NULL},
    {"login_delay", "-1", NULL},
    {"login_delay", "x", NULL},
    {"auth_failure_delay", "x", NULL},
    {"max_auth_failures", "0", NULL},
    {"max_auth_failures_per_ip", "-1", NULL},
    {"max_messages", "0", NULL},
    {"proxy_protocol", "v3", "off, v1, v2, any"},
    {"proxy_trusted", "10.0.0.0/33", NULL},
    {"proxy_trusted", "fd00::/129", NULL},
    {"proxy_trusted", "lb.example", NULL},
    {"proxy_trusted", "10.0.0.0/8,", NULL},
    {"log_format", "text", "logfmt, json"},
    {"log_level", "trace", "error, warn, info, debug"},
};

static void test_invalid_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        struct cfg c;
        char err[1024] = "", head[128];
        int secret = strstr(invalid[i].key, "secret") || strstr(invalid[i].key, "token");
        cfg_defaults(&c);
        if (cfg_set(&c, invalid[i].key, invalid[i].value, err, sizeof err) != -1)
            fail_msg("%s = \"%s\" accepted", invalid[i].key, invalid[i].value);
        snprintf(head, sizeof head, "%s: bad value \"", invalid[i].key);
        if (strncmp(err, head, strlen(head)) != 0)
            fail_msg("message for %s = \"%s\": %s", invalid[i].key, invalid[i].value, err);
        assert_contains(err, "\": expected ");
        if (invalid[i].also)
            assert_contains(err, invalid[i].also);
        if (secret) {
            assert_contains(err, "\"***\"");
            if (strlen(invalid[i].value) > 6 && strstr(err, invalid[i].value))
                fail_msg("secret shown: %s", err);
        }
        cfg_free(&c);
    }
}

static void test_bad_value_is_quoted(void **state)
{
    struct cfg c;
    char err[1024];

    (void)state;
    cfg_defaults(&c);
    assert_int_equal(cfg_set(&c, "backend_pool", "x\"y\n", err, sizeof err), -1);
    assert_string_equal(err, "backend_pool: bad value \"x\\\"y\": expected a whole number from 1 "
                             "to 1024");
    assert_int_equal(cfg_set(&c, "hostname", "a\x01", err, sizeof err), -1);
    assert_contains(err, "\"a\\x01\"");
    /* a tiny buffer is never overrun */
    assert_int_equal(cfg_set(&c, "backend_pool", "0", err, 8), -1);
    assert_int_equal(strlen(err), 7);
    assert_int_equal(cfg_set(&c, "backend_pool", "0", NULL, 0), -1);
    cfg_free(&c);
}

static void test_unknown_key(void **state)
{
    static const char *const names[] = {
        "nope", "backend_url_", "backend_url_nope", "backend_timeout_", "LISTEN", "listen "};
    struct cfg c;
    char err[1024];

    (void)state;
    cfg_defaults(&c);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(cfg_set(&c, names[i], "1", err, sizeof err), -1);
        assert_contains(err, "unknown key");
        assert_contains(err, names[i]);
    }
    cfg_free(&c);
}

/* ---- sources and precedence ----------------------------------------------- */

static void test_precedence(void **state)
{
    char *path = write_temp("# pop3gw test\n"
                            "backend_url = http://file.example\n"
                            "backend_pool = 2\n"
                            "max_inflight = 3\n"
                            "max_connections = 4\n");
    char *envp[] = {"PATH=/bin", "POP3GWX=1", "POP3GW_MAX_INFLIGHT=30", "POP3GW_MAX_CONNECTIONS=40",
                    NULL};
    const char *args[] = {"--max_connections=400", "-c", path, NULL};
    struct cfg c;
    char err[1024] = "";
    int exit_now = 7;

    (void)state;
    if (load(&c, args, envp, &exit_now, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(exit_now, 0);
    assert_string_equal(c.backend_url, "http://file.example");
    assert_int_equal(c.backend_pool, 2);      /* file */
    assert_int_equal(c.max_inflight, 30);     /* environment beats file */
    assert_int_equal(c.max_connections, 400); /* flag beats environment */
    assert_int_equal(c.max_bad_commands, 10); /* default */
    assert_int_equal(c.n_listen, 1);          /* default listener */
    assert_string_equal(c.listen[0].host, "0.0.0.0");
    assert_int_equal(c.listen[0].port, 110);
    assert_int_equal(c.check_config, 0);
    cfg_free(&c);
    unlink(path);
    free(path);
}

/* ---- secrets from files -------------------------------------------------- */

/* Loads with args plus `file_flag` naming a file that holds `content`;
 * returns cfg_load's result (err has the message). */
static int load_secret_file(struct cfg *c, const char *file_flag, const char *content,
                            const char *extra, char *err, size_t errlen)
{
    char *path = write_temp(content), flag[256];
    const char *args[] = {"--backend_url=http://b.example", flag, extra, NULL};
    int exit_now, rc;

    snprintf(flag, sizeof flag, "--%s=%s", file_flag, path);
    rc = load(c, args, NULL, &exit_now, err, errlen);
    unlink(path);
    free(path);
    return rc;
}

static void test_secret_files(void **state)
{
    struct cfg c;
    char err[1024] = "";
    char *out;

    (void)state;
    /* One value; the line's end (LF or CRLF) is dropped; the path is shown,
     * the secret masked. */
    if (load_secret_file(&c, "backend_secret_file", SECRET1 " " SECRET2 "\n", NULL, err,
                         sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.backend_secret, SECRET1 " " SECRET2);
    out = print_cfg(&c);
    assert_contains(out, "\nbackend_secret = ***\n");
    assert_contains(out, "\nbackend_secret_file = /tmp/test_cfg_");
    assert_null(strstr(out, SECRET1 + 6));
    free(out);
    cfg_free(&c);
    if (load_secret_file(&c, "backend_token_file", "tok-from-file\r\n", NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.backend_token, "tok-from-file");
    cfg_free(&c);
    if (load_secret_file(&c, "admin_token_file", "adm-from-file", NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.admin_token, "adm-from-file");
    cfg_free(&c);
}

static void test_secret_file_errors(void **state)
{
    static const struct {
        const char *flag, *content;
        size_t len; /* of content, NUL bytes included */
        const char *extra, *want;
    } bad[] = {
        {"admin_token_file", "adm\n", 4, "--admin_token=other",
         "admin_token and admin_token_file are both set"},
        {"backend_token_file", "a\nb\n", 4, NULL, "backend_token_file: \"/tmp/test_cfg_"},
        {"backend_token_file", "a\nb\n", 4, NULL, "more than one line"},
        {"backend_token_file", "a\0b", 3, NULL, "more than one line"},
        {"admin_token_file", "", 0, NULL, "empty"},
        {"admin_token_file", "\n", 1, NULL, "empty"},
        {"backend_secret_file", "whsec_x\n", 8, NULL, "backend_secret: bad value \"***\""},
        {"admin_token_file", "has space\n", 10, NULL, "admin_token: bad value \"***\""},
    };
    const char *args_missing[] = {"--backend_url=http://b.example",
                                  "--backend_secret_file=/nonexistent/secret", NULL};
    const char *args_dir[] = {"--backend_url=http://b.example", "--admin_token_file=/tmp", NULL};
    struct cfg c;
    char err[1024];
    int exit_now;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = write_temp(""), flag[256];
        const char *args[] = {"--backend_url=http://b.example", flag, bad[i].extra, NULL};
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(bad[i].content, 1, bad[i].len, f), bad[i].len);
        fclose(f);
        snprintf(flag, sizeof flag, "--%s=%s", bad[i].flag, path);
        err[0] = '\0';
        if (load(&c, args, NULL, &exit_now, err, sizeof err) != -1)
            fail_msg("%s = %s was accepted", bad[i].flag, bad[i].content);
        if (!strstr(err, bad[i].want))
            fail_msg("%s: expected \"%s\" in: %s", bad[i].flag, bad[i].want, err);
        assert_null(strstr(err, "whsec_x"));
        assert_null(strstr(err, "has space"));
        cfg_free(&c);
        unlink(path);
        free(path);
    }
    assert_int_equal(load(&c, args_missing, NULL, &exit_now, err, sizeof err), -1);
    assert_contains(err, "backend_secret_file: cannot read \"/nonexistent/secret\": No such file");
    cfg_free(&c);
    assert_int_equal(load(&c, args_dir, NULL, &exit_now, err, sizeof err), -1);
    assert_contains(err, "admin_token_file: \"/tmp\": not a regular file");
    cfg_free(&c);
}

static void test_flag_forms(void **state)
{
    const char *args[] = {"--backend_url",  "http://x.example/", "--backend-pool=5",
                          "--listen_tls",   "[::1]:995",         "--config=/dev/null",
                          "--check-config", "--events=",         NULL};
    struct cfg c;
    char err[1024] = "";
    int exit_now;

    (void)state;
    if (load(&c, args, NULL, &exit_now, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(exit_now, 0);
    assert_string_equal(c.backend_url, "http://x.example");
    assert_int_equal(c.backend_pool, 5);
    assert_int_equal(c.n_listen, 0); /* listen_tls given: no default plain listener */
    assert_int_equal(c.n_listen_tls, 1);
    assert_string_equal(c.listen_tls[0].host, "::1");
    assert_int_equal(c.check_config, 1);
    cfg_free(&c);
}

static void test_file_features(void **state)
{
    char long_line[1024];
    char *path;
    struct cfg c;
    char err[1024] = "";
    const char *args[] = {"-c", NULL, NULL};

    (void)state;
    /* longer than inih's 200-byte line buffer */
    snprintf(long_line, sizeof long_line,
             "\xef\xbb\xbf# comment\n"
             "\n"
             "   ; another comment\n"
             "  backend_url = http://127.0.0.1:8080/pop3 ; inline comment\n"
             "\tmax_inflight=9\n"
             "backend_secret = %s %s %s %s\n"
             "backend_token: tok\n"
             "    # indented comment after a key\n"
             "hostname = mail.example\n",
             SECRET1, SECRET1, SECRET1, SECRET2);
    assert_true(strlen(strstr(long_line, "backend_secret")) > 200);
    path = write_temp(long_line);
    args[1] = path;
    if (load(&c, args, NULL, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.backend_url, "http://127.0.0.1:8080/pop3");
    assert_int_equal(c.max_inflight, 9);
    assert_string_equal(c.backend_secret, SECRET1 " " SECRET1 " " SECRET1 " " SECRET2);
    assert_string_equal(c.backend_token, "tok");
    assert_string_equal(c.hostname, "mail.example");
    cfg_free(&c);
    unlink(path);
    free(path);
}

static void test_file_errors(void **state)
{
    static const struct {
        const char *text;
        int line;
        const char *want;
    } cases[] = {
        {"backend_pool = 2\n\n# x\nnope = 1\n", 4, "unknown key \"nope\""},
        {"backend_pool = 2\n[main]\nlisten = :110\n", 2, "sections are not supported"},
        {"backend_pool = 2\ngarbage\n", 2, "expected `key = value`"},
        {"backend_pool = 2\nbackend_pool = zero\nbackend_pool = -\n", 2,
         "backend_pool: bad value \"zero\": expected"},
        {"listen = ::1:110\n", 1, "listen: bad value \"::1:110\""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_temp(cases[i].text);
        const char *args[] = {"-c", path, NULL};
        char err[1024] = "", head[256];
        struct cfg c;
        assert_int_equal(load(&c, args, NULL, NULL, err, sizeof err), -1);
        snprintf(head, sizeof head, "%s:%d: ", path, cases[i].line);
        if (strncmp(err, head, strlen(head)) != 0)
            fail_msg("case %zu: %s", i, err);
        assert_contains(err, cases[i].want);
        cfg_free(&c);
        unlink(path);
        free(path);
    }
}

static void test_missing_file(void **state)
{
    const char *args[] = {"-c", "/nonexistent/pop3gw.conf", NULL};
    struct cfg c;
    char err[1024];

    (void)state;
    assert_int_equal(load(&c, args, NULL, NULL, err, sizeof err), -1);
    assert_contains(err, "/nonexistent/pop3gw.conf");
    cfg_free(&c);
}

static void test_env_errors(void **state)
{
    static const struct {
        const char *var, *want;
    } cases[] = {
        {"POP3GW_NOPE=1", "environment POP3GW_NOPE: unknown variable"},
        {"POP3GW_listen=:110", "environment POP3GW_listen: unknown"},
        {"POP3GW_BACKEND_POOL=x",
         "environment POP3GW_BACKEND_POOL: backend_pool: bad value \"x\": expected"},
        {"POP3GW_BACKEND_URL_RETRIEVE=ftp://x", "backend_url_retrieve: bad value"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *envp[] = {(char *)cases[i].var, NULL};
        struct cfg c;
        char err[1024] = "";
        assert_int_equal(load(&c, NULL, envp, NULL, err, sizeof err), -1);
        assert_contains(err, cases[i].want);
        cfg_free(&c);
    }
}

static void test_env_values(void **state)
{
    char *envp[] = {"POP3GW_BACKEND_URL_RETRIEVE=http://r.example/",
                    "POP3GW_BACKEND_TIMEOUT_LIST=1.5", "POP3GW_LISTEN=[::1]:1110", NULL};
    struct cfg c;
    char err[1024] = "";

    (void)state;
    if (load(&c, NULL, envp, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.backend_url_event[3], "http://r.example");
    assert_true(c.backend_timeout_event[1] == 1.5);
    assert_int_equal(c.n_listen, 1);
    assert_string_equal(c.listen[0].host, "::1");
    cfg_free(&c);
}

static void test_flag_errors(void **state)
{
    static const struct {
        const char *args[4];
        const char *want;
    } cases[] = {
        {{"--nope=1"}, "unknown flag --nope"},
        {{"--backend_pool"}, "flag --backend_pool needs a value"},
        {{"positional"}, "unexpected argument \"positional\""},
        {{"-x"}, "unexpected argument \"-x\""},
        {{"--backend_pool=0"}, "flag --backend_pool: backend_pool: bad value \"0\": expected"},
        {{"--backend-pool", "zero"}, "flag --backend_pool: backend_pool: bad value \"zero\""},
        {{"-c"}, "-c needs a file name"},
        {{"-c", "/dev/null", "--config=/dev/null"}, "only one config file"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfg c;
        char err[1024] = "";
        int exit_now = 7;
        assert_int_equal(load(&c, cases[i].args, NULL, &exit_now, err, sizeof err), -1);
        assert_int_equal(exit_now, 0);
        assert_contains(err, cases[i].want);
        cfg_free(&c);
    }
}

static void test_default_listener(void **state)
{
    const char *none[] = {NULL};
    const char *empty[] = {"--listen=", NULL};
    struct cfg c;
    char err[1024];

    (void)state;
    assert_int_equal(load(&c, none, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(c.n_listen, 1);
    assert_string_equal(c.listen[0].host, "0.0.0.0");
    assert_int_equal(c.listen[0].port, 110);
    cfg_free(&c);
    /* listen set to nothing on purpose: no default, cfg_validate complains */
    assert_int_equal(load(&c, empty, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(c.n_listen, 0);
    assert_int_equal(cfg_set(&c, "backend_url", "http://b", err, sizeof err), 0);
    assert_int_equal(cfg_validate(&c, err, sizeof err), -1);
    assert_contains(err, "no listener");
    cfg_free(&c);
}

/* ---- --help, --version, --check-config ------------------------------------ */

static void test_help(void **state)
{
    const char *args[] = {"--bogus", "--help", NULL};
    int rc, exit_now = 0;
    char *out = load_stdout(args, &rc, &exit_now);

    (void)state;
    assert_int_equal(rc, 0);
    assert_int_equal(exit_now, 1);
    assert_contains(out, "usage: pop3gw");
    assert_contains(out, "--check-config");
    for (size_t i = 0; i < CFG_TEST_N_KEYS; i++) {
        const char *k = cfg_test_keys[i];
        char want[128];
        if (strncmp(k, "backend_url_", 12) == 0)
            k = "backend_url_EVENT";
        else if (strncmp(k, "backend_timeout_", 16) == 0)
            k = "backend_timeout_EVENT";
        snprintf(want, sizeof want, "\n  %s ", k);
        assert_contains(out, want);
    }
    /* one line per key with its default */
    assert_contains(out, "(default: 127.0.0.1:8110)");
    assert_contains(out, "(default: 600)");
    free(out);
}

static void test_version(void **state)
{
    const char *args[] = {"--version", NULL};
    int rc, exit_now = 0;
    char *out = load_stdout(args, &rc, &exit_now);

    (void)state;
    assert_int_equal(rc, 0);
    assert_int_equal(exit_now, 1);
    assert_string_equal(out, "pop3gw " POP3GW_VERSION "\n");
    free(out);
}

static void test_print_order(void **state)
{
    struct cfg c;
    char *out, *p;

    (void)state;
    cfg_defaults(&c);
    out = print_cfg(&c);
    p = out + 1;
    for (size_t i = 0; i < CFG_TEST_N_KEYS; i++) {
        size_t n = strlen(cfg_test_keys[i]);
        if (strncmp(p, cfg_test_keys[i], n) != 0 || strncmp(p + n, " = ", 3) != 0)
            fail_msg("expected key %s at: %.40s", cfg_test_keys[i], p);
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    assert_string_equal(p, "");
    free(out);
    cfg_free(&c);
}

static void test_check_config_masks_secrets(void **state)
{
    const char *args[] = {"--backend_url=http://b.example", "--backend_secret=" SECRET2,
                          "--backend_token=SeCrEtToKeN1", "--check-config", NULL};
    char *envp[] = {"POP3GW_ADMIN_TOKEN=AdMiNtOkEn2", NULL};
    struct cfg c;
    char err[1024] = "";
    char *out;

    (void)state;
    if (load(&c, args, envp, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(c.check_config, 1);
    assert_string_equal(c.backend_token, "SeCrEtToKeN1"); /* stored in clear */
    out = print_cfg(&c);
    assert_contains(out, "\nbackend_secret = ***\n");
    assert_contains(out, "\nbackend_token = ***\n");
    assert_contains(out, "\nadmin_token = ***\n");
    assert_null(strstr(out, "SeCrEtToKeN1"));
    assert_null(strstr(out, "AdMiNtOkEn2"));
    assert_null(strstr(out, SECRET2 + 6));
    assert_contains(out, "\nbackend_url = http://b.example\n");
    free(out);
    cfg_free(&c);

    /* unset secrets are shown empty */
    cfg_defaults(&c);
    out = print_cfg(&c);
    assert_contains(out, "\nbackend_secret = \n");
    assert_contains(out, "\nbackend_token = \n");
    assert_contains(out, "\nadmin_token = \n");
    free(out);
    cfg_free(&c);
}

/* What cfg_print writes reads back as the same configuration. */
static void test_print_round_trip(void **state)
{
    const char *args[] = {"--backend_url=http://b.example/x",
                          "--listen=[::1]:110,*:1110",
                          "--events=connect",
                          "--backend_timeout_uidl=0.25",
                          "--expire=never",
                          "--login_delay=60",
                          "--proxy_trusted=10.0.0.0/8",
                          "--admin_listen=",
                          NULL};
    const char *args2[] = {"-c", NULL, NULL};
    struct cfg c;
    char err[1024] = "";
    char *out, *out2, *path;

    (void)state;
    if (load(&c, args, NULL, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    out = print_cfg(&c);
    cfg_free(&c);
    path = write_temp(out);
    args2[1] = path;
    if (load(&c, args2, NULL, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    out2 = print_cfg(&c);
    assert_string_equal(out, out2);
    cfg_free(&c);
    unlink(path);
    free(path);
    free(out);
    free(out2);
}

/* ---- cfg_validate --------------------------------------------------------- */

static const struct {
    const char *set[10]; /* key, value pairs */
    const char *want;    /* NULL: valid */
} checks[] = {
    {{"listen", "127.0.0.1:110"},
     "backend_url is required: the base URL of your backend, e.g. backend_url = "
     "http://127.0.0.1:8080/pop3"},
    {{"backend_url", "http://b", "listen", ""}, "no listener"},
    {{"backend_url", "http://b", "listen", "127.0.0.1:110", "tls_cert", "c.pem"},
     "tls_cert is set but tls_key is not"},
    {{"backend_url", "http://b", "listen", "127.0.0.1:110", "tls_key", "k.pem"},
     "tls_key is set but tls_cert is not"},
    {{"backend_url", "http://b", "listen", "127.0.0.1:110", "listen_tls", "0.0.0.0:995"},
     "listen_tls needs a certificate"},
    {{"backend_url", "http://b", "listen", "0.0.0.0:110"}, "plaintext_auth = tls-only"},
    {{"backend_url", "http://b", "listen", "127.0.0.1:110,*:110"}, "*:110, which is not loopback"},
    {{"backend_url", "http://b", "listen", "[2001:db8::1]:110"}, "[2001:db8::1]:110"},
    {{"backend_url", "http://b", "listen", "127.0.0.1:110", "proxy_protocol", "v2"},
     "proxy_protocol = v2 needs proxy_trusted"},
    {{"backend_url", "http://b", "listen", "127.0.0.5:110,[::1]:110,LOCALHOST:110"}, NULL},
    {{"backend_url", "http://b", "listen", "0.0.0.0:110", "plaintext_auth", "allow"}, NULL},
    {{"backend_url", "http://b", "listen", "0.0.0.0:110", "tls_cert", "c", "tls_key", "k"}, NULL},
    {{"backend_url", "http://b", "listen_tls", "[::]:995", "tls_cert", "c", "tls_key", "k"}, NULL},
    {{"backend_url", "http://b", "listen", "[::1]:110", "proxy_protocol", "any", "proxy_trusted",
      "10.0.0.0/8", "plaintext_auth", "allow"},
     NULL},
    /* Behind a PROXY balancer the clients are remote, even on a loopback
     * listener: tls-only without a certificate would lock them all out. */
    {{"backend_url", "http://b", "listen", "[::1]:110", "proxy_protocol", "any", "proxy_trusted",
      "10.0.0.0/8"},
     "whose clients are remote"},
};

static void test_validate(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        struct cfg c;
        char err[1024] = "";
        cfg_defaults(&c);
        for (int j = 0; j < 10 && checks[i].set[j]; j += 2)
            if (cfg_set(&c, checks[i].set[j], checks[i].set[j + 1], err, sizeof err) != 0)
                fail_msg("case %zu: %s", i, err);
        int rc = cfg_validate(&c, err, sizeof err);
        if (!checks[i].want && rc != 0)
            fail_msg("case %zu refused: %s", i, err);
        if (checks[i].want) {
            if (rc != -1)
                fail_msg("case %zu accepted", i);
            assert_contains(err, checks[i].want);
        }
        cfg_free(&c);
    }
}

static void test_validate_plaintext_message(void **state)
{
    struct cfg c;
    char err[1024];

    (void)state;
    cfg_defaults(&c);
    assert_int_equal(cfg_set(&c, "backend_url", "http://b", err, sizeof err), 0);
    assert_int_equal(cfg_set(&c, "listen", "0.0.0.0:110", err, sizeof err), 0);
    assert_int_equal(cfg_validate(&c, err, sizeof err), -1);
    /* says why, and the fixes */
    assert_contains(err, "only after TLS");
    assert_contains(err, "0.0.0.0:110");
    assert_contains(err, "set tls_cert and tls_key");
    assert_contains(err, "plaintext_auth = allow");
    assert_contains(err, "listen on loopback");
    cfg_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_names),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_from_table),
        cmocka_unit_test(test_valid_values),
        cmocka_unit_test(test_stored_values),
        cmocka_unit_test(test_listen_parsing),
        cmocka_unit_test(test_listen_max),
        cmocka_unit_test(test_invalid_values),
        cmocka_unit_test(test_bad_value_is_quoted),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_secret_file_errors),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_file_features),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_values),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_default_listener),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_print_order),
        cmocka_unit_test(test_check_config_masks_secrets),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_validate_plaintext_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
