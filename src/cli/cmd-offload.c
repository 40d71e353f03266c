/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl offload-read, offload-write, copy, merge and stats: the offload engine
 * of a running odxfs, reached through the ioctls of <odxfs/ioctl.h> on
 * files inside its mount.  The copy loop is the library's (odx_copy_run
 * with the ioctl halves), the one the daemon runs for copy_file_range.
 *
 * Errors are printed as "odxctl: FILE: message", the message from the
 * engine's error table (odx_offload_strerror), and exit with
 * EXIT_FAILURE_RT; ENOTTY means the file is not in an odxfs mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "odxfs/ioctl.h"
#include "odxfs/offload.h"
#include "util/parse.h"

/* The one line for a failed call on `file`. */
static int offload_fail(const char *file, int errnum)
{
	if (errnum < 0)
		errnum = -errnum;
	if (errnum == ENOTTY)
		cli_error("%s: not a file in an odxfs mount (or the daemon has no offload "
			  "support)", file);
	else
		cli_error("%s: %s", file, odx_offload_strerror(errnum));
	return EXIT_FAILURE_RT;
}

/* getopt_long over `opts` (which must include --help as 'h'); each other
 * option goes to `on_opt`.  Returns -1 to go on, or the exit code to return
 * now.  On -1, exactly `nargs` operands are left at argv[optind]. */
static int offload_getopt(const char *cmd, int argc, char **argv, const struct option *opts,
			  const char *shortopts, int nargs,
			  int (*on_opt)(int c, const char *arg, void *ctx), void *ctx)
{
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		if (c == 'h') {
			cli_print_usage(cmd);
			return EXIT_OK;
		}
		if (c == '?' || c == ':')
			return EXIT_USAGE;
		int r = on_opt(c, optarg, ctx);
		if (r >= 0)
			return r;
	}
	if (argc - optind != nargs)
		return cli_usage(cmd, "expected %d operand%s, got %d", nargs, nargs == 1 ? "" : "s",
				 argc - optind);
	return -1;
}

static void print_flags(uint32_t flags, const char *const names[], const uint32_t bits[],
			size_t n)
{
	printf("flags: 0x%" PRIx32, flags);
	const char *sep = " (";
	for (size_t i = 0; i < n; i++) {
		if (flags & bits[i]) {
			printf("%s%s", sep, names[i]);
			sep = ", ";
		}
	}
	printf("%s\n", sep[0] == ',' ? ")" : "");
}

/* ---- offload-read ------------------------------------------------------ */

struct read_args {
	uint32_t ttl_ms;
};

static int read_opt(int c, const char *arg, void *ctx)
{
	struct read_args *a = ctx;
	uint64_t ms;
	if (c != 't')
		return EXIT_USAGE;
	if (odx_parse_duration_ms(arg, &ms) < 0 || ms > UINT32_MAX)
		return cli_usage("offload-read", "invalid --ttl '%s' (milliseconds, or with a "
				 "suffix ms, s, m, h: 5000, 5s, 2m)", arg);
	a->ttl_ms = (uint32_t)ms;
	return -1;
}

int cmd_offload_read(int argc, char **argv)
{
	static const struct option opts[] = {
		{"ttl", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'}, {0}};
	struct read_args a = {0};
	int rc = offload_getopt("offload-read", argc, argv, opts, "h", 3, read_opt, &a);
	if (rc >= 0)
		return rc;
	const char *file = argv[optind];
	struct odx_ioc_offload_read io = {.size = sizeof io, .token_ttl_ms = a.ttl_ms};
	if (cli_size_arg("offload-read", "OFFSET", argv[optind + 1], &io.file_offset) ||
	    cli_size_arg("offload-read", "LENGTH", argv[optind + 2], &io.copy_length))
		return EXIT_USAGE;

	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return offload_fail(file, errno);
	int r = ioctl(fd, ODX_IOC_OFFLOAD_READ, &io) < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return offload_fail(file, r);

	static const char *const names[] = {"ALL_ZERO_BEYOND_CURRENT_RANGE",
					    "CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE",
					    "FILE_TOO_SMALL"};
	static const uint32_t bits[] = {ODX_OFFLOAD_READ_FLAG_ALL_ZERO_BEYOND_CURRENT_RANGE,
					ODX_OFFLOAD_READ_FLAG_CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE,
					ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL};
	char hex[ODX_TOKEN_HEX_MAX];
	printf("transfer length: %" PRIu64 "\n", io.transfer_length);
	print_flags(io.out_flags, names, bits, sizeof bits / sizeof bits[0]);
	if (io.out_flags & ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL)
		printf("token: none\n"); /* nothing issued */
	else
		printf("token: %.*s\n", (int)odx_token_to_hex(io.token, hex), hex);
	return EXIT_OK;
}

/* ---- offload-write ----------------------------------------------------- */

struct write_args {
	uint64_t transfer_offset;
};

static int write_opt(int c, const char *arg, void *ctx)
{
	struct write_args *a = ctx;
	if (c != 'T')
		return EXIT_USAGE;
	if (cli_size_arg("offload-write", "--transfer-offset", arg, &a->transfer_offset))
		return EXIT_USAGE;
	return -1;
}

int cmd_offload_write(int argc, char **argv)
{
	static const struct option opts[] = {
		{"transfer-offset", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'}, {0}};
	struct write_args a = {0};
	int rc = offload_getopt("offload-write", argc, argv, opts, "h", 4, write_opt, &a);
	if (rc >= 0)
		return rc;
	const char *file = argv[optind];
	struct odx_ioc_offload_write io = {.size = sizeof io,
					   .transfer_offset = a.transfer_offset};
	if (cli_size_arg("offload-write", "OFFSET", argv[optind + 1], &io.file_offset) ||
	    cli_size_arg("offload-write", "LENGTH", argv[optind + 2], &io.copy_length))
		return EXIT_USAGE;
	if (odx_token_from_hex(argv[optind + 3], io.token) < 0)
		return cli_usage("offload-write", "invalid TOKEN (expected the hexadecimal "
				 "form offload-read prints, up to 1024 digits)");

	/* Read-write: the engine may look at what the destination holds
	 * around a hole it punches.  Created when missing, as cp does. */
	int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		return offload_fail(file, errno);
	int r = ioctl(fd, ODX_IOC_OFFLOAD_WRITE, &io) < 0 ? -errno : 0;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		return offload_fail(file, r);

	static const char *const names[] = {"RANGE_TRUNCATED"};
	static const uint32_t bits[] = {ODX_OFFLOAD_WRITE_FLAG_RANGE_TRUNCATED};
	printf("length written: %" PRIu64 "\n", io.length_written);
	print_flags(io.out_flags, names, bits, 1);
	return EXIT_OK;
}

/* ---- copy -------------------------------------------------------------- */

struct copy_args {
	bool quiet;
};

static int copy_opt(int c, const char *arg, void *ctx)
{
	struct copy_args *a = ctx;
	if (c != 'q')
		return EXIT_USAGE;
	a->quiet = true;
	return -1;
}

/* The ioctl halves of the library, wrapped to remember which side failed
 * (read and release: SRC; write: DST), so the message names that file. */
struct copy_ctx {
	struct odx_copy_ioctl_ctx io;
	struct cli_progress progress;
	bool dst_failed;
};

static int copy_read(void *ctx, uint64_t src_off, uint64_t len,
		     struct odx_offload_read_result *out)
{
	struct copy_ctx *c = ctx;
	c->dst_failed = false;
	return odx_copy_ioctl_ops.offload_read(&c->io, src_off, len, out);
}

static int copy_write(void *ctx, uint64_t dst_off, uint64_t len, const uint8_t *token,
		      uint64_t transfer_offset, struct odx_offload_write_result *out)
{
	struct copy_ctx *c = ctx;
	c->dst_failed = true;
	return odx_copy_ioctl_ops.offload_write(&c->io, dst_off, len, token, transfer_offset,
						out);
}

static int copy_release(void *ctx, const uint8_t *token)
{
	struct copy_ctx *c = ctx;
	return odx_copy_ioctl_ops.release(&c->io, token);
}

static int copy_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct copy_ctx *c = ctx;
	cli_progress_fn(&c->progress, done, total);
	return 0;
}

static const struct odx_copy_ops copy_ops = {
	.offload_read = copy_read,
	.offload_write = copy_write,
	.release = copy_release,
	.progress = copy_progress,
};

/* Open DST as cp(1) does: created with SRC's permission bits (less the
 * umask) when missing, truncated when it exists; then sized to SRC's size,
 * so SRC's trailing holes are DST's too.  A stream image refuses the open
 * for writing with EROFS. */
static int copy_open_dst(const char *dst, const struct stat *sst, int *out)
{
	int fd = open(dst, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, sst->st_mode & 07777);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sst->st_size) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	*out = fd;
	return 0;
}

static int copy_files(const char *src, int sfd, const char *dst, const struct stat *sst,
		      bool quiet)
{
	int dfd = -1;
	int r = copy_open_dst(dst, sst, &dfd);
	if (r < 0)
		return offload_fail(dst, r);

	struct copy_ctx c = {.io = {.src_fd = sfd, .dst_fd = dfd}};
	cli_progress_init(&c.progress, "copy", quiet);
	int stop = 0;
	uint64_t total = (uint64_t)sst->st_size;
	int64_t n = odx_copy_run(&copy_ops, &c, 0, 0, total, &stop);
	cli_progress_done(&c.progress);
	int rc = EXIT_OK;
	if (n < 0 || stop < 0) {
		rc = offload_fail(c.dst_failed ? dst : src, n < 0 ? (int)n : stop);
		if (n > 0)
			cli_error("%s: %" PRId64 " of %" PRIu64 " bytes were copied", dst, n, total);
	} else if ((uint64_t)n < total) {
		cli_error("%s: ended after %" PRId64 " of %" PRIu64 " bytes (did it shrink?)",
			  src, n, total);
		rc = EXIT_FAILURE_RT;
	}
	if (close(dfd) < 0 && rc == EXIT_OK)
		rc = offload_fail(dst, errno);
	return rc;
}

int cmd_copy(int argc, char **argv)
{
	static const struct option opts[] = {
		{"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {0}};
	struct copy_args a = {0};
	int rc = offload_getopt("copy", argc, argv, opts, "qh", 2, copy_opt, &a);
	if (rc >= 0)
		return rc;
	const char *src = argv[optind], *dst = argv[optind + 1];

	int sfd = open(src, O_RDONLY | O_CLOEXEC);
	if (sfd < 0)
		return offload_fail(src, errno);
	struct stat sst, dstat;
	if (fstat(sfd, &sst) < 0) {
		rc = offload_fail(src, errno);
	} else if (!S_ISREG(sst.st_mode)) {
		cli_error("%s: not a regular file", src);
		rc = EXIT_FAILURE_RT;
	} else if (stat(dst, &dstat) == 0 && dstat.st_dev == sst.st_dev &&
		   dstat.st_ino == sst.st_ino) {
		/* Truncating DST would destroy SRC. */
		cli_error("%s: same file as %s", dst, src);
		rc = EXIT_FAILURE_RT;
	} else {
		rc = copy_files(src, sfd, dst, &sst, a.quiet);
	}
	close(sfd);
	return rc;
}

/* ---- merge ------------------------------------------------------------- */

struct merge_args {
	bool quiet;
	int codec;  /* -1: the source's */
	int level;
};

static int merge_opt(int c, const char *arg, void *ctx)
{
	struct merge_args *a = ctx;
	uint64_t v;
	enum odx_codec codec;
	switch (c) {
	case 'q':
		a->quiet = true;
		return -1;
	case 'c':
		if (strcmp(arg, "source") == 0) {
			a->codec = -1;
			return -1;
		}
		if (odx_codec_parse(arg, &codec))
			return cli_usage("merge", "--compress: \"%s\" is not none, lz4, zlib or source",
					 arg);
		a->codec = (int)codec;
		return -1;
	case 'l':
		if (odx_parse_u64(arg, &v) || v == 0 || v > 22)
			return cli_usage("merge", "--level: \"%s\" is not a level from 1 to 22", arg);
		a->level = (int)v;
		return -1;
	default:
		return EXIT_USAGE;
	}
}

/* A new stream DST (created here, never over an existing file) from the
 * image SRC, both inside one odxfs mount: ODX_IOC_STREAM_BEGIN, the copy
 * loop over the offload ioctls, ODX_IOC_STREAM_FINISH (*out: the counters).
 * The daemon writes DST.partial and renames it when finished; if this
 * process dies first, DST.partial stays (torn, never a chain member).  On
 * a failure we report, the partial is removed.  Returns an exit code. */
int cli_merge(const char *src, const char *dst, int codec, int level, bool quiet,
	      struct odx_ioc_stream *out)
{
	char partial[PATH_MAX];
	int rc;
	if (snprintf(partial, sizeof partial, "%s.partial", dst) >= (int)sizeof partial) {
		cli_error("%s: name too long", dst);
		return EXIT_FAILURE_RT;
	}
	int sfd = open(src, O_RDONLY | O_CLOEXEC);
	if (sfd < 0)
		return offload_fail(src, errno);
	struct stat sst;
	if (fstat(sfd, &sst) < 0) {
		rc = offload_fail(src, errno);
		close(sfd);
		return rc;
	}
	if (!S_ISREG(sst.st_mode)) {
		cli_error("%s: not a regular file", src);
		close(sfd);
		return EXIT_FAILURE_RT;
	}
	int dfd = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (dfd < 0) {
		if (errno == EEXIST) {
			cli_error("%s: exists (merge writes a new file)", dst);
			rc = EXIT_FAILURE_RT;
		} else {
			rc = offload_fail(dst, errno);
		}
		close(sfd);
		return rc;
	}
	struct odx_ioc_stream io = {.size = sizeof io, .codec = codec, .level = level};
	if (ioctl(dfd, ODX_IOC_STREAM_BEGIN, &io) < 0) {
		rc = offload_fail(dst, errno);
		close(dfd);
		close(sfd);
		unlink(dst);
		return rc;
	}
	struct copy_ctx c = {.io = {.src_fd = sfd, .dst_fd = dfd}};
	cli_progress_init(&c.progress, "merge", quiet);
	int stop = 0;
	uint64_t total = (uint64_t)sst.st_size;
	int64_t n = odx_copy_run(&copy_ops, &c, 0, 0, total, &stop);
	cli_progress_done(&c.progress);
	if (n < 0 || stop < 0) {
		rc = offload_fail(c.dst_failed ? dst : src, n < 0 ? (int)n : stop);
	} else if ((uint64_t)n < total) {
		cli_error("%s: ended after %" PRId64 " of %" PRIu64 " bytes (did it shrink?)", src,
			  n, total);
		rc = EXIT_FAILURE_RT;
	} else {
		memset(&io, 0, sizeof io);
		io.size = sizeof io;
		io.virtual_size = total;
		rc = ioctl(dfd, ODX_IOC_STREAM_FINISH, &io) < 0 ? offload_fail(dst, errno) : EXIT_OK;
	}
	close(dfd);
	close(sfd);
	if (rc != EXIT_OK) {
		unlink(partial); /* ours, torn: nothing anyone had */
		return rc;
	}
	io.virtual_size = total;
	if (out)
		*out = io;
	return EXIT_OK;
}

void cli_merge_report(const char *dst, const char *src, const struct odx_ioc_stream *io)
{
	printf("%s: a full backup of %s (%" PRIu64 " bytes)\n"
	       "  data copied in the kernel:           %" PRIu64 "\n"
	       "  data in chunks copied as they were:  %" PRIu64 "\n"
	       "  data through the daemon's buffers:   %" PRIu64 "\n"
	       "  zeros (zero frames):                 %" PRIu64 "\n",
	       dst, src, io->virtual_size, io->bytes_kernel, io->bytes_verbatim,
	       io->bytes_buffered, io->bytes_holes);
}

int cmd_merge(int argc, char **argv)
{
	static const struct option opts[] = {
		{"quiet", no_argument, NULL, 'q'}, {"compress", required_argument, NULL, 'c'},
		{"level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'}, {0}};
	struct merge_args a = {.codec = -1};
	int rc = offload_getopt("merge", argc, argv, opts, "qc:l:h", 2, merge_opt, &a);
	if (rc >= 0)
		return rc;
	struct odx_ioc_stream io;
	rc = cli_merge(argv[optind], argv[optind + 1], a.codec, a.level, a.quiet, &io);
	if (rc == EXIT_OK && !a.quiet)
		cli_merge_report(argv[optind + 1], argv[optind], &io);
	return rc;
}

/* ---- stats ------------------------------------------------------------- */

struct stats_args {
	bool json;
};

static int stats_opt(int c, const char *arg, void *ctx)
{
	struct stats_args *a = ctx;
	if (c != 'j')
		return EXIT_USAGE;
	a->json = true;
	return -1;
}

int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
	struct stats_args a = {0};
	int rc = offload_getopt("stats", argc, argv, opts, "jh", 1, stats_opt, &a);
	if (rc >= 0)
		return rc;
	const char *mnt = argv[optind];
	int fd = open(mnt, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return offload_fail(mnt, errno);
	struct odx_ioc_stats io = {.size = sizeof io};
	int r = ioctl(fd, ODX_IOC_STATS, &io) < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return offload_fail(mnt, r);

	const struct {
		const char *json, *text;
		uint64_t v;
	} rows[] = {
		{"tokensIssued", "tokens issued", io.tokens_issued},
		{"tokensUsed", "tokens used", io.tokens_used},
		{"tokensExpired", "tokens expired", io.tokens_expired},
		{"tokensRejected", "tokens rejected", io.tokens_rejected},
		{"tokensReleased", "tokens released", io.tokens_released},
		{"tokensInvalidated", "tokens invalidated", io.tokens_invalidated},
		{"tokensLive", "tokens outstanding", io.tokens_live},
		{"tokenMemory", "token memory (bytes)", io.token_bytes},
		{"bytesKernel", "bytes offloaded in the kernel", io.bytes_kernel},
		{"bytesBuffered", "bytes through the buffer", io.bytes_buffered},
		{"bytesHoles", "bytes left as holes", io.bytes_holes},
		{"bytesVerbatim", "bytes in chunks copied compressed", io.bytes_verbatim},
		{"indexEntries", "indexed streams kept", io.index_entries},
		{"indexBytes", "index memory (bytes)", io.index_bytes},
		{"indexEvictions", "indexes evicted", io.index_evictions},
		{"indexSuspended", "kept indexes without descriptor", io.index_suspended},
	};
	size_t n = sizeof rows / sizeof rows[0];
	if (a.json)
		printf("{\n");
	for (size_t i = 0; i < n; i++) {
		if (a.json)
			printf("  \"%s\": %" PRIu64 "%s\n", rows[i].json, rows[i].v,
			       i + 1 < n ? "," : "");
		else
			printf("%-31s %" PRIu64 "\n", rows[i].text, rows[i].v);
	}
	if (a.json)
		printf("}\n");
	return EXIT_OK;
}
