/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Value parsers; see parse.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "parse.h"

int odx_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == s || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_scaled(const char *s, uint64_t *out, const char *const *suffixes,
			const uint64_t *scales, size_t n)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == s)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(end, suffixes[i]) == 0) {
			if (scales[i] && v > UINT64_MAX / scales[i])
				return -ERANGE;
			*out = v * scales[i];
			return 0;
		}
	}
	return -EINVAL;
}

int odx_parse_size(const char *s, uint64_t *out)
{
	static const char *const suf[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib",
					  "g", "gb", "gib", "t", "tb", "tib"};
	static const uint64_t sc[] = {1, 1, 1ull << 10, 1ull << 10, 1ull << 10,
				      1ull << 20, 1ull << 20, 1ull << 20,
				      1ull << 30, 1ull << 30, 1ull << 30,
				      1ull << 40, 1ull << 40, 1ull << 40};
	return parse_scaled(s, out, suf, sc, sizeof sc / sizeof sc[0]);
}

int odx_parse_duration_ms(const char *s, uint64_t *out)
{
	static const char *const suf[] = {"", "ms", "s", "m", "min", "h"};
	static const uint64_t sc[] = {1, 1, 1000, 60000, 60000, 3600000};
	return parse_scaled(s, out, suf, sc, sizeof sc / sizeof sc[0]);
}

int odx_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"1", "yes", "true", "on"};
	static const char *const no[] = {"0", "no", "false", "off"};
	for (size_t i = 0; s && i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

const char *odx_format_size(uint64_t n, char *buf, unsigned len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)n;
	unsigned u = 0;
	while (v >= 1024.0 && u < 6) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}
