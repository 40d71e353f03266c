/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Command line of odxfs: our -o options (one table gives their names,
 * defaults, parsing and the --help text), BACKING and MOUNTPOINT, and the
 * options mount(8), fstab and systemd pass that mean nothing to us.
 * Everything else (-f, -d, -s, allow_other, ro, ...) is left in the
 * argument list for fuse_parse_cmdline() and fuse_session_new().
 *
 * To add an option: a field in struct fs_options, a setter, one row in
 * opt_table, a line in man/odxfs.8.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "odxfs/offload.h"
#include "parse.h"

struct opt_def {
	const char *name;    /* -o name=VALUE */
	const char *metavar; /* what VALUE is, for --help; NULL for a switch
			      * (-o name alone means on, -o name=on|off too) */
	const char *defval;  /* default, applied through the setter; NULL: the
			      * field stays 0, which means "derived" (defnote) */
	const char *expect;  /* a good value, for error messages */
	const char *help;    /* one line */
	int (*set)(struct fs_options *o, const char *value); /* 0 or -errno */
	const char *defnote; /* the default for --help when defval is NULL */
};

/* Parse value with parse and accept it when it lies in [min, max]: then
 * (only then) *out gets it. */
static int parse_ranged(int (*parse)(const char *, uint64_t *), const char *value,
			uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;
	int r = parse(value, &v);
	if (r < 0)
		return r;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int set_cache_size(struct fs_options *o, const char *value)
{
	uint64_t n;
	int r = parse_ranged(odx_parse_size, value, 0, SIZE_MAX / 2, &n);
	if (r == 0)
		o->cache_size = n;
	return r;
}

static int set_read_ahead(struct fs_options *o, const char *value)
{
	uint64_t n;
	int r = parse_ranged(odx_parse_size, value, 0, 1u << 30, &n);
	if (r == 0)
		o->read_ahead = n;
	return r;
}

/* parse_ranged into a 32-bit field, set only when the value is good. */
static int parse_ranged_u32(int (*parse)(const char *, uint64_t *), const char *value,
			    uint64_t min, uint64_t max, uint32_t *field)
{
	uint64_t n;
	int r = parse_ranged(parse, value, min, max, &n);
	if (r == 0)
		*field = (uint32_t)n;
	return r;
}

/* Times to live: 1 ms to a day. */
#define TTL_MAX_MS 86400000u

static int set_token_ttl(struct fs_options *o, const char *value)
{
	int r = parse_ranged_u32(odx_parse_duration_ms, value, 1, TTL_MAX_MS, &o->token_ttl_ms);
	if (r == 0) {
		free(o->token_ttl_text); /* kept for the check against max_token_ttl */
		o->token_ttl_text = strdup(value);
	}
	return r;
}

static int set_max_token_ttl(struct fs_options *o, const char *value)
{
	return parse_ranged_u32(odx_parse_duration_ms, value, 1, TTL_MAX_MS, &o->max_token_ttl_ms);
}

static int set_max_tokens(struct fs_options *o, const char *value)
{
	return parse_ranged_u32(odx_parse_u64, value, 1, 1u << 24, &o->max_tokens);
}

static int set_max_tokens_per_user(struct fs_options *o, const char *value)
{
	return parse_ranged_u32(odx_parse_u64, value, 1, 1u << 24, &o->max_tokens_per_user);
}

/* parse_ranged sets *out only when the value is good: straight into the
 * 64-bit fields. */
static int set_token_memory(struct fs_options *o, const char *value)
{
	return parse_ranged(odx_parse_size, value, 64u << 10, SIZE_MAX / 2, &o->token_memory);
}

static int set_token_memory_per_user(struct fs_options *o, const char *value)
{
	return parse_ranged(odx_parse_size, value, 4u << 10, SIZE_MAX / 2,
			    &o->token_memory_per_user);
}

static int set_offload(struct fs_options *o, const char *value)
{
	return odx_parse_bool(value, &o->offload);
}

static int set_salvage(struct fs_options *o, const char *value)
{
	return odx_parse_bool(value, &o->salvage);
}

static int set_chain(struct fs_options *o, const char *value)
{
	return odx_parse_bool(value, &o->chain);
}

static int set_blocks(struct fs_options *o, const char *value)
{
	if (strcmp(value, "data") && strcmp(value, "full"))
		return -1;
	o->blocks_full = value[0] == 'f';
	return 0;
}

static int set_index_cache_entries(struct fs_options *o, const char *value)
{
	return parse_ranged_u32(odx_parse_u64, value, 1, 1u << 24, &o->index_cache_entries);
}

static int set_index_cache_size(struct fs_options *o, const char *value)
{
	return parse_ranged(odx_parse_size, value, 0, SIZE_MAX / 2, &o->index_cache_size);
}

static int set_max_inodes(struct fs_options *o, const char *value)
{
	uint32_t v;
	int r = parse_ranged_u32(odx_parse_u64, value, 0, UINT32_MAX, &v);
	if (r == 0)
		o->max_inodes = v;
	return r;
}

static int set_index_cache_fds(struct fs_options *o, const char *value)
{
	return parse_ranged_u32(odx_parse_u64, value, 0, 1u << 20, &o->index_cache_fds);
}

/* The defaults of the offload rows are the engine's (offload.h
 * ODX_OFFLOAD_DEFAULT_*), written out for --help. */
static const struct opt_def opt_table[] = {
	{ "cache_size", "SIZE", "64M", "a size such as 64M or 1G",
	  "cache of decompressed lz4 and zlib chunks",
	  set_cache_size, NULL },
	{ "read_ahead", "SIZE", "1M", "a size up to 1G such as 1M, or 0",
	  "kernel read-ahead of the mount (0: kernel's)",
	  set_read_ahead, NULL },
	{ "token_ttl", "MS", "60000",
	  "milliseconds from 1 to 86400000, or 30s, 5m, 1h, at most max_token_ttl",
	  "time to live of offload tokens that ask for none",
	  set_token_ttl, NULL },
	{ "max_token_ttl", "MS", "3600000", "milliseconds from 1 to 86400000, or 30s, 5m, 1h",
	  "longest time to live of an offload token",
	  set_max_token_ttl, NULL },
	{ "max_tokens", "N", "4096", "a number from 1 to 16777216",
	  "outstanding offload tokens at most",
	  set_max_tokens, NULL },
	{ "max_tokens_per_user", "N", NULL, "a number from 1 to 16777216",
	  "outstanding offload tokens of one user at most",
	  set_max_tokens_per_user, "max_tokens/4, at least 16" },
	{ "token_memory", "SIZE", "64M", "a size of at least 64K such as 64M",
	  "memory for the records of outstanding tokens",
	  set_token_memory, NULL },
	{ "token_memory_per_user", "SIZE", NULL, "a size of at least 4K such as 16M",
	  "memory for the token records of one user",
	  set_token_memory_per_user, "token_memory/4, at least 1M" },
	{ "offload", "on|off", "on", "on or off",
	  "off: decline copy_file_range (the kernel copies)",
	  set_offload, NULL },
	{ "salvage", NULL, "off", "on or off (or no value: on)",
	  "serve the intact frames of damaged streams",
	  set_salvage, NULL },
	{ "chain", "on|off", "on", "on or off",
	  "off: show incremental and differential backups standalone, not as "
	  "the disk at their checkpoint",
	  set_chain, NULL },
	{ "blocks", "data|full", "data", "data or full",
	  "st_blocks: the data's, or at least the size (cp 9.1 then offloads)",
	  set_blocks, NULL },
	{ "index_cache_entries", "N", "4096", "a number from 1 to 16777216",
	  "indexed streams kept for the next open",
	  set_index_cache_entries, NULL },
	{ "index_cache_size", "SIZE", "64M", "a size such as 64M, or 0",
	  "memory of the indexes kept",
	  set_index_cache_size, NULL },
	{ "index_cache_fds", "N", "64", "a number from 0 to 1048576",
	  "idle indexed streams that keep a descriptor",
	  set_index_cache_fds, NULL },
	{ "max_inodes", "N", "0", "a number from 0 to 2^32 (0: automatic)",
	  "inodes past which the kernel is asked to forget some",
	  set_max_inodes, "3/4 of the descriptor limit" },
};

#define OPT_COUNT (sizeof opt_table / sizeof opt_table[0])

/* Options of mount(8), fstab and systemd units that odxfs accepts and
 * ignores; a trailing '*' matches any suffix. */
static const char *const opt_ignored[] = {
	"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group",
	"_netdev", "nofail", "x-*", "comment=*",
};

static bool opt_is_ignored(const char *arg)
{
	for (size_t i = 0; i < sizeof opt_ignored / sizeof opt_ignored[0]; i++) {
		const char *pat = opt_ignored[i];
		size_t n = strlen(pat);
		if (pat[n - 1] == '*' ? strncmp(arg, pat, n - 1) == 0 : strcmp(arg, pat) == 0)
			return true;
	}
	return false;
}

/* One of ours?  Returns 1 if handled (value applied or error reported),
 * 0 if not ours. */
static int opt_apply(struct fs_options *o, const char *arg)
{
	for (size_t i = 0; i < OPT_COUNT; i++) {
		const struct opt_def *d = &opt_table[i];
		size_t n = strlen(d->name);
		if (strncmp(arg, d->name, n) != 0 || (arg[n] != '=' && arg[n] != '\0'))
			continue;
		if (arg[n] == '\0' && !d->metavar) {
			d->set(o, "on"); /* a switch */
		} else if (arg[n] == '\0') {
			fprintf(stderr, "odxfs: option '%s' needs a value: -o %s=%s\n", d->name,
				d->name, d->metavar);
			o->bad = true;
		} else if (d->set(o, arg + n + 1) < 0) {
			fprintf(stderr, "odxfs: bad value for -o %s: '%s' (expected %s)\n",
				d->name, arg + n + 1, d->expect);
			o->bad = true;
		}
		return 1;
	}
	return 0;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct fs_options *o = data;

	if (key == FUSE_OPT_KEY_NONOPT) {
		char **slot = !o->backing ? &o->backing : !o->mountpoint ? &o->mountpoint : NULL;
		if (!slot) {
			fprintf(stderr, "odxfs: unexpected argument '%s' (usage: odxfs "
					"[options] BACKING MOUNTPOINT)\n", arg);
			o->bad = true;
			return 0;
		}
		*slot = strdup(arg);
		return *slot ? 0 : -1;
	}
	if (key != FUSE_OPT_KEY_OPT || arg[0] == '-')
		return 1; /* a switch: fuse_parse_cmdline's */
	if (opt_apply(o, arg) || opt_is_ignored(arg))
		return 0;
	return 1; /* a FUSE or mount option */
}

/* token_ttl against max_token_ttl, once both are known: a token_ttl given
 * longer than max_token_ttl is an error (a typo of one of them, most
 * likely); the default token_ttl is cut to a shorter max_token_ttl. */
static void opt_check_ttl(struct fs_options *o)
{
	if (o->token_ttl_ms <= o->max_token_ttl_ms)
		return;
	if (o->token_ttl_text) {
		fprintf(stderr, "odxfs: bad value for -o token_ttl: '%s' (expected at most "
				"max_token_ttl, %u ms)\n", o->token_ttl_text, o->max_token_ttl_ms);
		o->bad = true;
	} else {
		o->token_ttl_ms = o->max_token_ttl_ms;
	}
}

int fs_options_parse(struct fuse_args *args, struct fs_options *o)
{
	memset(o, 0, sizeof *o);
	for (size_t i = 0; i < OPT_COUNT; i++)
		if (opt_table[i].defval)
			opt_table[i].set(o, opt_table[i].defval);
	free(o->token_ttl_text); /* the default's: not given */
	o->token_ttl_text = NULL;
	if (fuse_opt_parse(args, o, NULL, opt_proc) < 0)
		return -1;
	opt_check_ttl(o);
	return 0;
}

void fs_options_help(const char *prog)
{
	printf("usage: %s [options] BACKING MOUNTPOINT\n\n"
	       "Mirror the directory BACKING at MOUNTPOINT.  Files that hold a sparse\n"
	       "stream (virtnbdbackup) appear as the raw disk image they encode,\n"
	       "read-only; every other file passes through read-write.\n\n"
	       "odxfs options:\n",
	       prog);
	for (size_t i = 0; i < OPT_COUNT; i++) {
		const struct opt_def *d = &opt_table[i];
		char left[64];
		if (d->metavar)
			snprintf(left, sizeof left, "-o %s=%s", d->name, d->metavar);
		else
			snprintf(left, sizeof left, "-o %s", d->name);
		printf("    %-29s %s (default: %s)\n", left, d->help,
		       d->defval ? d->defval : d->defnote);
	}
	printf("\n");
}

void fs_options_list_valid(void)
{
	fprintf(stderr, "odxfs: valid options: ");
	for (size_t i = 0; i < OPT_COUNT; i++)
		fprintf(stderr, "%s%s%s, ", opt_table[i].name, opt_table[i].metavar ? "=" : "",
			opt_table[i].metavar ? opt_table[i].metavar : "");
	fprintf(stderr, "FUSE's own (allow_other, default_permissions, ro, rw, max_threads=N, "
			"...) and the mount(8) options odxfs ignores (noatime, _netdev, nofail, "
			"x-*, ...); 'odxfs --help' lists them all\n");
}

void fs_options_free(struct fs_options *o)
{
	free(o->backing);
	free(o->mountpoint);
	free(o->token_ttl_text);
	o->backing = o->mountpoint = o->token_ttl_text = NULL;
}
