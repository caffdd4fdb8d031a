/*
 * wh: the names of the contract's events (see wh.h).
 */
#include "webhook/wh.h"

const char *const wh_event_names[WH_N_EVENTS] = {
#define X(e, n) n,
    NAMES_EVENTS(X)
#undef X
};
