/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Logging to stderr or syslog; see log.h. */
#include <stdio.h>
#include <string.h>

#include "log.h"

bool odx_log_debug_enabled;
static bool use_syslog;

void odx_log_use_syslog(bool on)
{
	if (on && !use_syslog)
		openlog("odxfs", LOG_PID, LOG_DAEMON);
	use_syslog = on;
}

void odx_vlog(int level, const char *fmt, va_list ap)
{
	if (level >= LOG_DEBUG && !odx_log_debug_enabled)
		return;
	if (use_syslog) {
		vsyslog(level, fmt, ap);
		return;
	}
	/* One fprintf per line so concurrent threads do not interleave; the
	 * level is spelled out so readers (and tests) can tell errors apart. */
	static const char *const names[] = {"emerg", "alert", "crit", "error",
					    "warning", "notice", "info", "debug"};
	char line[1024];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	fprintf(stderr, "odxfs: %s: %s\n", names[level & 7], line);
}

void odx_log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	odx_vlog(level, fmt, ap);
	va_end(ap);
}
