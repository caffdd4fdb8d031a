/*
 * settings: a configuration shared by the workers (see settings.h).
 */
#include "gateway/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct settings *settings_new(struct cfg *cfg, int tls, char *err, size_t errlen)
{
    struct settings *s = calloc(1, sizeof(*s));

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->proxy_versions = cfg->proxy_protocol == CFG_PROXY_V1   ? PROXY_V1
                        : cfg->proxy_protocol == CFG_PROXY_V2 ? PROXY_V2
                                                              : PROXY_V1 | PROXY_V2;
    if (cfg->proxy_trusted) {
        s->n_proxy_nets = proxy_nets_parse(cfg->proxy_trusted, s->proxy_nets, SETTINGS_PROXY_NETS);
        if (s->n_proxy_nets < 0) {
            snprintf(err, errlen, "proxy_trusted: bad value (at most %d networks)",
                     SETTINGS_PROXY_NETS);
            free(s);
            return NULL;
        }
    }
    s->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    cfg_pop3_params(&s->cfg, tls, &s->pop3);
    atomic_init(&s->refs, 1);
    return s;
}

struct settings *settings_ref(struct settings *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void settings_unref(struct settings *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    cfg_free(&s->cfg);
    free(s);
}
