/*
 * wh: the names of the contract's events and login methods (see wh.h).
 */
#include "webhook/wh.h"

const char *const wh_event_names[WH_N_EVENTS] = {
#define X(e, n) n,
    NAMES_EVENTS(X)
#undef X
};

const char *const wh_method_names[WH_N_METHODS] = {
#define X(e, n, cmd) n,
    NAMES_METHODS(X)
#undef X
};
