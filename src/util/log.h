/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One logger for the daemon: stderr ("odxfs: ...") in the foreground,
 * syslog once daemonized.  Levels are syslog's.  Thread-safe. */
#ifndef ODXFS_LOG_H
#define ODXFS_LOG_H
#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

extern bool odx_log_debug_enabled;

/* Switch output to syslog (ident "odxfs") or back to stderr. */
void odx_log_use_syslog(bool on);
void odx_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void odx_vlog(int level, const char *fmt, va_list ap);

/* Debug calls cost one flag test when debugging is off. */
#define odx_debug(...)                                                           \
	do {                                                                     \
		if (odx_log_debug_enabled)                                       \
			odx_log(LOG_DEBUG, __VA_ARGS__);                         \
	} while (0)
#endif
