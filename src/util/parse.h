/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Parsers shared by the daemon's -o options and odxctl's arguments, so a
 * value means the same thing everywhere.  Each returns 0 or -EINVAL (bad
 * syntax) / -ERANGE (out of range) and never prints; callers name the
 * option and quote the value in their message. */
#ifndef ODXFS_PARSE_H
#define ODXFS_PARSE_H
#include <stdbool.h>
#include <stdint.h>

/* A size in bytes: decimal or 0x hex, optional suffix k/K, m/M, g/G, t/T
 * (powers of 1024), optional trailing 'B' or 'iB'.  "64K", "1MiB", "4096". */
int odx_parse_size(const char *s, uint64_t *out);
/* A plain unsigned integer (decimal or 0x hex), whole string. */
int odx_parse_u64(const char *s, uint64_t *out);
/* A duration in milliseconds: plain number = ms; suffixes ms, s, m, h. */
int odx_parse_duration_ms(const char *s, uint64_t *out);
/* yes/no, true/false, on/off, 1/0. */
int odx_parse_bool(const char *s, bool *out);
/* Human-readable size ("1.5 GiB") into buf. */
const char *odx_format_size(uint64_t n, char *buf, unsigned len);
#endif
