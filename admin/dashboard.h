/*
 * dashboard: the self-contained admin page served at GET / (admin/dashboard.c).
 */
#ifndef POP3GW_ADMIN_DASHBOARD_H
#define POP3GW_ADMIN_DASHBOARD_H

#include <stddef.h>

extern const char admin_dashboard_html[];
extern const size_t admin_dashboard_len;

#endif
