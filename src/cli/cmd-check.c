/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* odxctl check and odxctl repair. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "odxfs/chain.h"

struct check_ctx {
	const char *path;
};

static void on_problem(void *ctx, uint64_t off, const char *msg)
{
	struct check_ctx *c = ctx;
	printf("%s: offset %" PRIu64 ": %s\n", c->path, off, msg);
}

/* Check one stream completely; returns its problems, or -1 when it could
 * not be read (said on stderr). */
static int check_one(const char *path, bool quiet)
{
	struct check_ctx cc = {path};
	struct cli_progress bar;
	cli_progress_init(&bar, "checking", quiet);
	struct odx_progress p = {cli_progress_fn, &bar};
	struct odx_error err;
	odx_error_clear(&err);
	int n = odx_stream_check(path, on_problem, &cc, &p, &err);
	cli_progress_done(&bar);
	if (n < 0) {
		cli_error("%s", err.msg);
		return -1;
	}
	return n;
}

/* The whole chain of `path`: that it links up (every parent checkpoint
 * made by exactly one stream of the directory), then every member
 * completely.  Returns the problems found, -1 when something could not be
 * read. */
static int check_chain(const char *path, bool quiet)
{
	char dir[4096];
	const char *base = odx_chain_split_path(path, dir, sizeof dir);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct odx_chain_dir *d = NULL;
	struct odx_error err;
	odx_error_clear(&err);
	if (dfd < 0 || odx_chain_scan(dfd, dir, &d, &err) < 0) {
		cli_error("%s: %s", dir, dfd < 0 ? strerror(errno) : err.msg);
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	close(dfd);
	int i = odx_chain_find(d, base), problems = 0;
	if (i < 0) {
		printf("%s: chain: not a stream whose meta can be read (or a .partial file): "
		       "not a chain member\n", path);
		odx_chain_dir_free(d);
		return 1;
	}
	int *idx = malloc((d->e[i].depth ? d->e[i].depth : 1) * sizeof *idx);
	int n = idx ? odx_chain_members(d, i, idx) : -ENOMEM;
	if (n < 0) {
		printf("%s: chain: does not link up: %s\n", path, d->e[i].why);
		problems = 1;
	}
	for (int k = 0; k < n; k++) {
		char p[8192];
		snprintf(p, sizeof p, "%s/%s", dir, d->e[idx[k]].name);
		int r = check_one(p, quiet);
		if (r < 0)
			problems = problems >= 0 ? -1 : problems;
		else if (problems >= 0)
			problems += r;
	}
	if (n > 0 && problems == 0)
		printf("%s: chain of %d member%s links up (", path, n, n == 1 ? "" : "s");
	for (int k = 0; n > 0 && problems == 0 && k < n; k++)
		printf("%s%s", k ? " <- " : "", d->e[idx[k]].name);
	if (n > 0 && problems == 0)
		printf(")\n");
	free(idx);
	odx_chain_dir_free(d);
	return problems;
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"quiet", no_argument, NULL, 'q'}, {"chain", no_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'}, {0}};
	bool quiet = false, chain = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		if (c == 'q')
			quiet = true;
		else if (c == 'c')
			chain = true;
		else if (c == 'h')
			return cli_print_usage("check"), EXIT_OK;
		else
			return EXIT_USAGE;
	}
	if (optind >= argc)
		return cli_usage("check", "expected at least one FILE");
	int status = EXIT_OK;
	for (int i = optind; i < argc; i++) {
		int n = chain ? check_chain(argv[i], quiet) : check_one(argv[i], quiet);
		if (n < 0) {
			status = EXIT_FAILURE_RT;
		} else if (n > 0) {
			printf("%s: %d problem%s%s\n", argv[i], n, n == 1 ? "" : "s",
			       chain ? " in its chain" : "");
			if (status == EXIT_OK)
				status = EXIT_PROBLEMS;
		} else {
			printf("%s: OK\n", argv[i]);
		}
	}
	return status;
}

int cmd_repair(int argc, char **argv)
{
	static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
					     {"in-place", no_argument, NULL, 'i'},
					     {"quiet", no_argument, NULL, 'q'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	const char *out = NULL;
	bool in_place = false, quiet = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:iqh", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'i': in_place = true; break;
		case 'q': quiet = true; break;
		case 'h': cli_print_usage("repair"); return EXIT_OK;
		default: return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage("repair", "expected exactly one FILE");
	if (out && in_place)
		return cli_usage("repair", "-o and --in-place exclude each other");
	if (!out && !in_place)
		return cli_usage("repair", "say where the repaired stream goes: -o OUT, or --in-place");
	const char *path = argv[optind];
	struct stat a, b;
	if (out && stat(out, &b) == 0 && stat(path, &a) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino)
		return cli_usage("repair", "OUT is FILE itself; use --in-place to rewrite it");
	struct odx_repair_report r;
	struct odx_error err;
	odx_error_clear(&err);
	if (odx_stream_repair(path, out, &r, &err)) {
		cli_error("%s", err.msg);
		return EXIT_FAILURE_RT;
	}
	if (!quiet) {
		if (r.was_complete && !out)
			printf("%s: complete, nothing to repair\n", path);
		else
			printf("%s: kept %" PRIu64 " frames, dropped %" PRIu64
			       " bytes of torn tail, dataSize %" PRIu64 " -> %" PRIu64 "; wrote %s\n",
			       path, r.frames_kept, r.bytes_dropped, r.old_data_size, r.new_data_size,
			       out ? out : path);
	}
	return EXIT_OK;
}
