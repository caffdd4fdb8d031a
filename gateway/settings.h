/*
 * settings: one loaded configuration as the workers use it. Shared and
 * reference-counted: each connection holds the settings it started with, so
 * that a SIGHUP can hand new settings to the workers for new sessions while
 * the old ones live until their last session ends.
 */
#ifndef POP3GW_SETTINGS_H
#define POP3GW_SETTINGS_H

#include <stdatomic.h>
#include <stddef.h>

#include "gateway/cfg.h"
#include "gateway/pop3.h"
#include "gateway/proxy.h"

#define SETTINGS_PROXY_NETS 64 /* networks in proxy_trusted */

struct settings {
    struct cfg cfg;          /* owned */
    struct pop3_params pop3; /* the session's settings, pointing into cfg */
    struct proxy_net proxy_nets[SETTINGS_PROXY_NETS]; /* who may send a PROXY header */
    int n_proxy_nets;
    int proxy_versions; /* PROXY_V1 | PROXY_V2 accepted */
    atomic_int refs;
};

/*
 * Makes settings from a validated configuration, taking over its strings
 * (*cfg is zeroed: do not free it). `tls` says a certificate is loaded.
 * NULL with a message in err when proxy_trusted does not parse or memory
 * runs out (*cfg is then left to the caller).
 */
struct settings *settings_new(struct cfg *cfg, int tls, char *err, size_t errlen);

/* Takes one more reference; returns s. */
struct settings *settings_ref(struct settings *s);

/* Drops a reference; the last one frees. NULL is fine. Any thread. */
void settings_unref(struct settings *s);

#endif
