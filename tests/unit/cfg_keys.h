/*
 * cfg_keys.h: every configuration key, in the order of the key table in
 * gateway/cfg.c and of `pop3gw --check-config`. Written out here, not taken
 * from cfg.c, so that the tests notice a key that is renamed, lost or
 * reordered: test_print_order in tests/unit/test_cfg.c checks it line by
 * line against cfg_print(). Shared by tests/unit/test_cfg.c and
 * tests/fuzz/fuzz_cfg.c.
 */
#ifndef POP3GW_TEST_CFG_KEYS_H
#define POP3GW_TEST_CFG_KEYS_H

#include <stddef.h>

static const char *const cfg_test_keys[] = {
    "listen",
    "listen_tls",
    "tls_cert",
    "tls_key",
    "tls_min_version",
    "plaintext_auth",
    "hostname",
    "apop",
    "backend_url",
    "backend_url_authenticate",
    "backend_url_list",
    "backend_url_uidl",
    "backend_url_retrieve",
    "backend_url_quit",
    "backend_url_connect",
    "backend_url_disconnect",
    "backend_secret",
    "backend_secret_file",
    "backend_token",
    "backend_token_file",
    "spool_dir",
    "spool_max",
    "backend_ca_file",
    "backend_cert",
    "backend_key",
    "backend_timeout",
    "backend_timeout_authenticate",
    "backend_timeout_list",
    "backend_timeout_uidl",
    "backend_timeout_retrieve",
    "backend_timeout_quit",
    "backend_timeout_connect",
    "backend_timeout_disconnect",
    "backend_pool",
    "max_inflight",
    "events",
    "admin_listen",
    "admin_token",
    "admin_token_file",
    "workers",
    "user",
    "max_connections",
    "max_connections_per_ip",
    "login_timeout",
    "idle_timeout",
    "send_timeout",
    "max_bad_commands",
    "shutdown_grace",
    "expire",
    "login_delay",
    "auth_failure_delay",
    "max_auth_failures",
    "max_auth_failures_per_ip",
    "max_messages",
    "proxy_protocol",
    "proxy_trusted",
    "log_format",
    "log_level",
};

#define CFG_TEST_N_KEYS (sizeof(cfg_test_keys) / sizeof(cfg_test_keys[0]))

#endif
