/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl: the command-line tool for sparse streams and odxfs mounts.  A
 * table of subcommands, each with its own getopt_long and --help.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "util/parse.h"

int cmd_compact(int argc, char **argv); /* cmd-compact.c */


const struct subcommand odx_subcommands[] = {
	{"info", cmd_info, "FILE [--json] [--salvage] [--standalone]",
	 "show a stream's meta data, sizes, frame counts and compression"},
	{"map", cmd_map, "FILE [--json] [--salvage] [--standalone]",
	 "list the extents of a stream, or of a chain member's view (data, zero, unmapped), and where they live"},
	{"check", cmd_check, "[--quiet] [--chain] FILE...",
	 "validate streams completely; exit 0 only when every one is clean"},
	{"repair", cmd_repair, "FILE (-o|--output) OUT | --in-place [--quiet]",
	 "keep the complete frames of a stream cut short (or with a wrong dataSize, stop or trailer), rewrite stop, trailer and dataSize"},
	{"convert", cmd_convert,
	 "IN OUT [--compress none|lz4|zlib] [--level N] [--zero-block SIZE] "
	 "[--changed LIST] [--disk-name NAME] [--checkpoint NAME] [--parent NAME] [--quiet]",
	 "raw image to stream, or stream to sparse raw image (by IN's content)"},
	{"compact", cmd_compact, "FILE [--compress none|lz4|zlib] [--level N] [--verify] [-q|--quiet]",
	 "rewrite a stream in place without the data that later frames overlap"},
	{"offload-read", cmd_offload_read, "FILE OFFSET LENGTH [--ttl MS]",
	 "offload read in an odxfs mount: print a token for a range of FILE"},
	{"offload-write", cmd_offload_write, "FILE OFFSET LENGTH TOKEN [--transfer-offset N]",
	 "offload write in an odxfs mount: apply a token to FILE at OFFSET"},
	{"copy", cmd_copy, "SRC DST [-q|--quiet]",
	 "copy SRC to DST in an odxfs mount through offload read and write"},
	{"merge", cmd_merge, "SRC DST [--compress none|lz4|zlib|source] [--level N] [-q|--quiet]",
	 "write a new full backup stream DST from the image SRC (a chain view, a stream, a raw file) in an odxfs mount, guest data moved by the daemon"},
	{"fold", cmd_fold, "MEMBER [--compress none|lz4|zlib|source] [--level N] [--dry-run] [-q|--quiet]",
	 "retention: fold a chain's base and members up to MEMBER (in an odxfs mount) into a new full backup, verify it, remove the folded files"},
	{"stats", cmd_stats, "MOUNTPOINT [--json]",
	 "show the offload counters of the odxfs mount at MOUNTPOINT"},
	{NULL, NULL, NULL, NULL},
};

void cli_error(const char *fmt, ...)
{
	va_list ap;
	fputs("odxctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "odxctl %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'odxctl %s --help'.\n", cmd);
	return EXIT_USAGE;
}

void cli_print_usage(const char *name)
{
	for (const struct subcommand *c = odx_subcommands; c->name; c++)
		if (strcmp(c->name, name) == 0)
			printf("Usage: odxctl %s %s\n%s.\n", c->name, c->synopsis, c->summary);
}

int cli_size_arg(const char *cmd, const char *what, const char *value, uint64_t *out)
{
	if (odx_parse_size(value, out) == 0)
		return 0;
	cli_usage(cmd, "invalid %s '%s' (a size such as 4096, 64K, 1M)", what, value);
	return -1;
}

void cli_progress_init(struct cli_progress *p, const char *label, bool quiet)
{
	p->label = label;
	p->enabled = !quiet && isatty(STDERR_FILENO);
	p->last_permille = -1;
}

void cli_progress_fn(void *ctx, uint64_t done, uint64_t total)
{
	struct cli_progress *p = ctx;
	if (!p->enabled)
		return;
	int pm = total ? (int)(done * 1000 / total) : 1000;
	if (pm == p->last_permille)
		return;
	p->last_permille = pm;
	char a[32], b[32];
	int bars = pm * 30 / 1000;
	fprintf(stderr, "\r%s [%.*s%.*s] %5.1f%% %s / %s ", p->label, bars,
		"##############################", 30 - bars, "..............................",
		pm / 10.0, odx_format_size(done, a, sizeof a), odx_format_size(total, b, sizeof b));
	fflush(stderr);
}

void cli_progress_done(struct cli_progress *p)
{
	if (p->enabled && p->last_permille >= 0)
		fputc('\n', stderr);
}

static void main_usage(FILE *f)
{
	fprintf(f, "Usage: odxctl SUBCOMMAND [OPTIONS] ARGS...\n\n"
		   "Inspect, check, repair and convert virtnbdbackup sparse streams; offloaded\n"
		   "copies (ODX token pairs) and counters inside odxfs mounts.\n\n"
		   "Subcommands:\n");
	for (const struct subcommand *c = odx_subcommands; c->name; c++)
		fprintf(f, "  %-14s %s\n", c->name, c->summary);
	fprintf(f, "\n'odxctl SUBCOMMAND --help' describes each one.\n"
		   "Exit status: 0 success, 1 problems found (check), 2 usage error, "
		   "3 operation failed.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		main_usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		main_usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("odxctl %s\n", ODXFS_VERSION);
		return EXIT_OK;
	}
	for (const struct subcommand *c = odx_subcommands; c->name; c++)
		if (strcmp(c->name, argv[1]) == 0)
			return c->run(argc - 1, argv + 1);
	cli_error("unknown subcommand '%s'", argv[1]);
	main_usage(stderr);
	return EXIT_USAGE;
}
