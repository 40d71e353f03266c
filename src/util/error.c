/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* odx_error: one message per failure, the first cause wins (see error.h). */
#include <stdio.h>
#include <string.h>

#include "odxfs/error.h"

void odx_error_clear(struct odx_error *err)
{
	if (err) {
		err->code = 0;
		err->offset = 0;
		err->msg[0] = '\0';
	}
}

static int error_vset(struct odx_error *err, int code, const char *prefix,
		      const char *fmt, va_list ap)
{
	if (err && err->code == 0) {
		size_t n = 0;
		err->code = code;
		if (prefix) {
			n = (size_t)snprintf(err->msg, sizeof err->msg, "%s", prefix);
			if (n >= sizeof err->msg)
				n = sizeof err->msg - 1;
		}
		vsnprintf(err->msg + n, sizeof err->msg - n, fmt, ap);
	}
	return -code;
}

int odx_error_set(struct odx_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_vset(err, code, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int odx_error_at(struct odx_error *err, int code, const char *path,
		 uint64_t offset, const char *fmt, ...)
{
	char prefix[300];
	va_list ap;
	if (err && err->code == 0)
		err->offset = offset;
	snprintf(prefix, sizeof prefix, "%s: offset %llu: ", path ? path : "(stream)",
		 (unsigned long long)offset);
	va_start(ap, fmt);
	int r = error_vset(err, code, prefix, fmt, ap);
	va_end(ap);
	return r;
}
