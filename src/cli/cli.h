/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl internals: one function per subcommand, the exit codes, and the
 * helpers every subcommand shares (messages, progress bar, size parsing).
 */
#ifndef ODXFS_CLI_H
#define ODXFS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "odxfs/stream.h"

/* Exit codes (odxctl(1), EXIT STATUS). */
enum {
	EXIT_OK = 0,       /* success; check: no problem found */
	EXIT_PROBLEMS = 1, /* check: problems found */
	EXIT_USAGE = 2,    /* bad command line */
	EXIT_FAILURE_RT = 3, /* the operation failed (bad input file, I/O, ...) */
};

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *synopsis; /* after "odxctl NAME " */
	const char *summary;  /* one line */
};

extern const struct subcommand odx_subcommands[];

/* "odxctl: message" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Usage error: message plus a pointer to --help; returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "Usage: odxctl NAME SYNOPSIS" and the summary for NAME. */
void cli_print_usage(const char *name);

/* Progress bar on stderr, only when stderr is a terminal and not quiet. */
struct cli_progress {
	const char *label;
	bool enabled;
	int last_permille;
};
void cli_progress_init(struct cli_progress *p, const char *label, bool quiet);
void cli_progress_fn(void *ctx, uint64_t done, uint64_t total);
void cli_progress_done(struct cli_progress *p);

/* Parse a size argument; on error prints "odxctl CMD: invalid WHAT 'VALUE'". */
int cli_size_arg(const char *cmd, const char *what, const char *value, uint64_t *out);

int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_offload_read(int argc, char **argv);
int cmd_offload_write(int argc, char **argv);
int cmd_copy(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_fold(int argc, char **argv);
struct odx_ioc_stream;
/* odxctl merge's work, for fold too (cmd-offload.c): an exit code. */
int cli_merge(const char *src, const char *dst, int codec, int level, bool quiet,
	      struct odx_ioc_stream *out);
void cli_merge_report(const char *dst, const char *src, const struct odx_ioc_stream *io);
int cmd_stats(int argc, char **argv);

#endif
