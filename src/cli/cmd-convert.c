/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl convert IN OUT: a raw image becomes a stream; a stream (detected
 * by content, as the daemon does) becomes a sparse raw image.  OUT is
 * written under a temporary name and renamed, so IN is never touched and a
 * failed conversion leaves no half-written OUT.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "util/parse.h"

/* "OFF:LEN,OFF:LEN,..." (sizes with suffixes allowed) into ranges. */
static int parse_changed(const char *arg, struct odx_range **out, size_t *n)
{
	char *copy = strdup(arg), *save = NULL;
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');
		struct odx_range r;
		if (!colon)
			goto bad;
		*colon = '\0';
		if (odx_parse_size(tok, &r.offset) || odx_parse_size(colon + 1, &r.length))
			goto bad;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			struct odx_range *t = realloc(*out, cap * sizeof *t);
			if (!t)
				goto bad;
			*out = t;
		}
		(*out)[(*n)++] = r;
	}
	free(copy);
	return 0;
bad:
	free(copy);
	free(*out);
	*out = NULL;
	return -EINVAL;
}

static int stream_to_raw(int in, const char *in_path, const char *out_path, bool quiet)
{
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	if (odx_stream_open_fd(in, in_path, NULL, &s, &err)) {
		cli_error("%s", err.msg);
		return EXIT_FAILURE_RT;
	}
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", out_path) >= (int)sizeof tmp) {
		odx_stream_close(s);
		cli_error("%s: name too long", out_path);
		return EXIT_FAILURE_RT;
	}
	int out = mkstemp(tmp);
	if (out < 0) {
		cli_error("%s: %s", tmp, strerror(errno));
		odx_stream_close(s);
		return EXIT_FAILURE_RT;
	}
	struct cli_progress bar;
	cli_progress_init(&bar, "converting", quiet);
	struct odx_progress p = {cli_progress_fn, &bar};
	int rc = odx_stream_export(s, out, &p, &err);
	cli_progress_done(&bar);
	if (!rc && (fchmod(out, 0644) || fsync(out) || rename(tmp, out_path)))
		rc = odx_error_set(&err, errno, "%s: %s", out_path, strerror(errno));
	close(out);
	odx_stream_close(s);
	if (rc) {
		unlink(tmp);
		cli_error("%s", err.msg);
		return EXIT_FAILURE_RT;
	}
	return EXIT_OK;
}

int cmd_convert(int argc, char **argv)
{
	static const struct option opts[] = {{"compress", required_argument, NULL, 'c'},
					     {"level", required_argument, NULL, 'l'},
					     {"zero-block", required_argument, NULL, 'z'},
					     {"changed", required_argument, NULL, 'C'},
					     {"disk-name", required_argument, NULL, 'D'},
					     {"checkpoint", required_argument, NULL, 'K'},
					     {"parent", required_argument, NULL, 'P'},
					     {"quiet", no_argument, NULL, 'q'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	struct odx_write_opts wo = {0};
	bool quiet = false, stream_opts = false;
	struct odx_range *changed = NULL;
	uint64_t v;
	int c, status = EXIT_OK;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:z:C:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (odx_codec_parse(optarg, &wo.codec))
				return cli_usage("convert", "invalid --compress '%s' (none, lz4, zlib)",
						 optarg);
			stream_opts = true;
			break;
		case 'l':
			if (odx_parse_u64(optarg, &v) || v > 12)
				return cli_usage("convert", "invalid --level '%s' (0 to 12 for lz4, 1 to 9 for zlib)",
						 optarg);
			wo.level = (int)v;
			stream_opts = true;
			break;
		case 'z':
			if (cli_size_arg("convert", "--zero-block", optarg, &wo.zero_block))
				return EXIT_USAGE;
			if (wo.zero_block < 512 || (wo.zero_block & (wo.zero_block - 1)))
				return cli_usage("convert", "invalid --zero-block '%s' (a power of two, 512 or more)",
						 optarg);
			stream_opts = true;
			break;
		case 'C':
			free(changed);
			if (parse_changed(optarg, &changed, &wo.nchanged))
				return cli_usage("convert", "invalid --changed '%s' (OFFSET:LENGTH,...)",
						 optarg);
			wo.incremental = true;
			wo.changed = changed;
			stream_opts = true;
			break;
		/* The chain keys of the meta (odxfs-stream(5), CHAINS): an
		 * incremental made here continues the stream whose
		 * checkpoint it names as parent. */
		case 'D': wo.disk_name = optarg; stream_opts = true; break;
		case 'K': wo.checkpoint = optarg; stream_opts = true; break;
		case 'P': wo.parent = optarg; stream_opts = true; break;
		case 'q': quiet = true; break;
		case 'h': cli_print_usage("convert"); return EXIT_OK;
		default: return EXIT_USAGE;
		}
	}
	if (wo.level && wo.codec == ODX_CODEC_ZLIB && wo.level > 9)
		return cli_usage("convert", "--level for zlib is 1 to 9");
	if (optind + 2 != argc) {
		free(changed);
		return cli_usage("convert", "expected IN and OUT");
	}
	const char *in_path = argv[optind], *out_path = argv[optind + 1];
	int in = open(in_path, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		free(changed);
		cli_error("%s: %s", in_path, strerror(errno));
		return EXIT_FAILURE_RT;
	}
	struct stat a, b;
	if (fstat(in, &a) == 0 && stat(out_path, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino) {
		close(in);
		free(changed);
		return cli_usage("convert", "OUT is IN itself");
	}
	int is_stream = odx_stream_probe(in);
	if (is_stream < 0) {
		cli_error("%s: %s", in_path, strerror(-is_stream));
		status = EXIT_FAILURE_RT;
	} else if (is_stream) {
		if (stream_opts)
			status = cli_usage("convert", "%s is a stream: --compress, --level, --zero-block and --changed apply to raw input",
					   in_path);
		else
			status = stream_to_raw(in, in_path, out_path, quiet);
	} else {
		struct cli_progress bar;
		cli_progress_init(&bar, "converting", quiet);
		wo.progress = (struct odx_progress){cli_progress_fn, &bar};
		struct odx_error err;
		odx_error_clear(&err);
		int rc = odx_stream_write(in, 0, out_path, &wo, &err);
		cli_progress_done(&bar);
		if (rc) {
			cli_error("%s", err.msg);
			status = EXIT_FAILURE_RT;
		}
	}
	close(in);
	free(changed);
	return status;
}
