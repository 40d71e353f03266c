/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl compact FILE: rewrite a stream without the bytes no reader can
 * see any more (frames overlapped or superseded by later ones: the later
 * frame wins, and the stream's extent map has already said which bytes
 * win).  What is still visible is copied through the sink (stream.h): plain
 * bytes by copy_file_range, whole compressed chunks as they are, only the
 * chunks cut by an overlap decoded and encoded again.
 *
 * FILE.partial is written beside FILE (O_EXCL: never two at once, and a
 * backup directory already knows the name as "being written"), checked
 * when asked, then published over FILE by a rename, so FILE is at every
 * moment either the old stream or the complete new one.  Any failure
 * removes FILE.partial and leaves FILE as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "odxfs/chain.h"
#include "util/parse.h"

/* Declared here and in odxctl.c (cli.h lists the other subcommands). */
int cmd_compact(int argc, char **argv);

/* odx_sink_stream is called on runs of whole extents of about this many
 * bytes, so the progress bar moves; a run never ends inside an extent,
 * whose chunks would then be cut and decoded instead of copied. */
#define STEP ((uint64_t)256 << 20)
/* --verify reads both streams in pieces of this size. */
#define VERIFY_PIECE ((size_t)1 << 20)

/* FILE.partial while it is ours to remove: an interrupted run (SIGINT,
 * SIGTERM, SIGHUP) removes it, or the next run would refuse to start. */
static volatile sig_atomic_t partial_live;
static int partial_dirfd = -1;
static char partial_name[NAME_MAX + 1];

static void on_signal(int sig)
{
	if (partial_live)
		unlinkat(partial_dirfd, partial_name, 0);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_signals(bool on)
{
	struct sigaction sa = {.sa_handler = on ? on_signal : SIG_DFL};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* A run of extents of one kind, adjacent extents of one kind merged: two
 * maps of one image can cut the same data into different extents (a
 * compacted stream has one frame where the original had several). */
struct run {
	uint64_t offset, length;
	int kind;
};

/* The kind as --verify compares it: in a full stream a range no frame
 * covers reads as zeros, as a zero frame does, and the sink writes it as
 * one; in an incremental "no frame" means "unchanged since the parent" and
 * must stay so. */
static int cmp_kind(int kind, bool incremental)
{
	return !incremental && kind == ODX_EXTENT_UNMAPPED ? ODX_EXTENT_ZERO : kind;
}

/* The next run of m from extent *i on. */
static bool next_run(const struct odx_extmap *m, size_t *i, bool incremental, struct run *r)
{
	if (*i >= m->count)
		return false;
	const struct odx_extent *e = &m->ext[*i];
	*r = (struct run){e->offset, e->length, cmp_kind(e->kind, incremental)};
	for ((*i)++; *i < m->count && cmp_kind(m->ext[*i].kind, incremental) == r->kind; (*i)++)
		r->length += m->ext[*i].length;
	return true;
}

/* The compacted stream `b` shows what `a` shows: the same kinds over the
 * same ranges, and every data byte decoded equal.  0, or EXIT_FAILURE_RT
 * after saying where they differ. */
static int verify(struct odx_stream *a, struct odx_stream *b, const char *path, bool quiet)
{
	const struct odx_extmap *ma = odx_stream_map(a), *mb = odx_stream_map(b);
	bool inc = odx_stream_info(a)->incremental;
	const char *bname = odx_stream_name(b);
	if (odx_stream_info(b)->incremental != inc || ma->size != mb->size) {
		cli_error("%s: verify: the new stream is %s of %" PRIu64 " bytes, the original %s of %" PRIu64,
			  bname, odx_stream_info(b)->incremental ? "an incremental" : "a full stream",
			  mb->size, inc ? "an incremental" : "a full stream", ma->size);
		return EXIT_FAILURE_RT;
	}
	char *x = malloc(VERIFY_PIECE), *y = malloc(VERIFY_PIECE);
	struct cli_progress bar;
	cli_progress_init(&bar, "verifying", quiet);
	size_t ia = 0, ib = 0;
	struct run ra, rb;
	int status = x && y ? EXIT_OK : EXIT_FAILURE_RT;
	if (status)
		cli_error("out of memory");
	for (;;) {
		bool ha = next_run(ma, &ia, inc, &ra), hb = next_run(mb, &ib, inc, &rb);
		if (status || (!ha && !hb))
			break;
		if (!ha || !hb || ra.offset != rb.offset || ra.length != rb.length ||
		    ra.kind != rb.kind) {
			const struct run *r = ha ? &ra : &rb;
			cli_error("%s: verify: image offset %" PRIu64 ": the original has %s over %" PRIu64
				  " bytes, the new stream %s over %" PRIu64,
				  bname, r->offset, ha ? odx_extent_kind_name(ra.kind) : "nothing",
				  ha ? ra.length : 0, hb ? odx_extent_kind_name(rb.kind) : "nothing",
				  hb ? rb.length : 0);
			status = EXIT_FAILURE_RT;
			break;
		}
		for (uint64_t off = ra.offset, end = ra.offset + ra.length;
		     ra.kind == ODX_EXTENT_DATA && off < end && !status;) {
			size_t n = end - off < VERIFY_PIECE ? (size_t)(end - off) : VERIFY_PIECE;
			struct odx_error err;
			odx_error_clear(&err);
			ssize_t ga = odx_stream_pread(a, x, n, off, &err);
			ssize_t gb = ga == (ssize_t)n ? odx_stream_pread(b, y, n, off, &err) : 0;
			if (ga != (ssize_t)n || gb != (ssize_t)n) {
				cli_error("%s: verify: %s", ga != (ssize_t)n ? path : bname,
					  err.msg[0] ? err.msg : "short read");
				status = EXIT_FAILURE_RT;
			} else if (memcmp(x, y, n)) {
				size_t k = 0;
				while (x[k] == y[k])
					k++;
				cli_error("%s: verify: image offset %" PRIu64
					  ": the new stream reads 0x%02x where the original reads 0x%02x",
					  bname, off + k, (unsigned char)y[k], (unsigned char)x[k]);
				status = EXIT_FAILURE_RT;
			}
			off += n;
			cli_progress_fn(&bar, off, ma->size);
		}
	}
	cli_progress_done(&bar);
	free(x);
	free(y);
	return status;
}

/* The compression level for the new stream: the one asked for, else the
 * original's when the codec stays, else the codec's default (0).  A level
 * the codec has no use for (a meta may say anything) becomes 0 as well. */
static int pick_level(enum odx_codec codec, int asked, const struct odx_stream_info *in)
{
	int level = asked >= 0 ? asked : codec == in->codec ? in->level : 0;
	if (codec == ODX_CODEC_NONE || level < 0 || level > (codec == ODX_CODEC_ZLIB ? 9 : 12))
		return 0;
	return level;
}

struct compact {
	const char *path;          /* FILE as given */
	const char *base;          /* its name in its directory (name) */
	char name[NAME_MAX + 1];
	char dir[PATH_MAX];
	char partial_path[PATH_MAX + NAME_MAX + 2];
	int fd, dirfd, pfd;
	struct stat st;            /* FILE when opened */
	struct odx_stream *s;
	struct odx_sink *sink;
	struct odx_sink_stats stats;
	struct odx_stream_info after;
};

/* Copy what the map of c->s shows into the sink, in runs of whole
 * extents (see STEP). */
static int copy_visible(struct compact *c, bool quiet, struct odx_error *err)
{
	const struct odx_extmap *m = odx_stream_map(c->s);
	struct cli_progress bar;
	cli_progress_init(&bar, "compacting", quiet);
	uint64_t start = 0;
	int rc = 0;
	for (size_t i = 0; i < m->count && !rc; i++) {
		uint64_t end = m->ext[i].offset + m->ext[i].length;
		if (end - start < STEP && i + 1 < m->count)
			continue;
		rc = odx_sink_stream(c->sink, start, c->s, start, end - start, err);
		start = end;
		cli_progress_fn(&bar, end, m->size);
	}
	cli_progress_done(&bar);
	return rc ? rc : odx_sink_finish(c->sink, m->size, err);
}

/* Whether `name` in FILE's directory is our FILE.partial (the file we
 * have open), and not one another run made since ours was renamed. */
static bool is_ours(const struct compact *c, const char *name)
{
	struct stat a, b;
	return c->pfd >= 0 && fstat(c->pfd, &a) == 0 &&
	       fstatat(c->dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* The mode and, when we may, the owner of FILE for FILE.partial, then
 * publish it over FILE (unless FILE was replaced meanwhile: then that is
 * what a reader sees now, and it is not ours to overwrite). */
static int publish(struct compact *c, struct odx_error *err)
{
	struct stat now;
	if (fstatat(c->dirfd, c->base, &now, AT_SYMLINK_NOFOLLOW))
		return odx_error_set(err, errno, "%s: %s", c->path, strerror(errno));
	if (now.st_dev != c->st.st_dev || now.st_ino != c->st.st_ino ||
	    now.st_size != c->st.st_size || now.st_mtim.tv_sec != c->st.st_mtim.tv_sec ||
	    now.st_mtim.tv_nsec != c->st.st_mtim.tv_nsec)
		return odx_error_set(err, EBUSY,
				     "%s: the file changed while it was compacted (replaced or written): "
				     "left as it is now",
				     c->path);
	/* owner first: changing it clears the set-id bits the mode may have */
	if (geteuid() == 0 && fchown(c->pfd, c->st.st_uid, c->st.st_gid))
		return odx_error_set(err, errno, "%s: giving it the owner of %s: %s",
				     c->partial_path, c->path, strerror(errno));
	if (fchmod(c->pfd, c->st.st_mode & 07777))
		return odx_error_set(err, errno, "%s: giving it the mode of %s: %s",
				     c->partial_path, c->path, strerror(errno));
	/* From here FILE.partial may be renamed: a signal must not remove
	 * the FILE.partial another run may have made by then. */
	partial_live = 0;
	return odx_stream_publish_at(c->pfd, c->dirfd, partial_name, c->base, true, false, err);
}

static void report(const struct compact *c)
{
	const struct odx_stream_info *b = odx_stream_info(c->s), *a = &c->after;
	char x[32], y[32];
	printf("%s: compacted (%s%s)\n", c->path, odx_codec_name(a->codec),
	       a->incremental ? ", incremental" : "");
	printf("  frames:     %" PRIu64 " data + %" PRIu64 " zero -> %" PRIu64 " data + %" PRIu64
	       " zero\n",
	       b->data_frames, b->zero_frames, a->data_frames, a->zero_frames);
	printf("  file size:  %" PRIu64 " (%s) -> %" PRIu64 " (%s)\n", b->file_size,
	       odx_format_size(b->file_size, x, sizeof x), a->file_size,
	       odx_format_size(a->file_size, y, sizeof y));
	printf("  kernel:     %" PRIu64 " bytes copied in the kernel (copy_file_range)\n",
	       c->stats.bytes_kernel);
	printf("  verbatim:   %" PRIu64 " bytes in compressed chunks copied as they were\n",
	       c->stats.bytes_verbatim);
	printf("  buffered:   %" PRIu64 " bytes through the buffer (decoded, encoded or copied)\n",
	       c->stats.bytes_buffered);
	printf("  zeros:      %" PRIu64 " bytes in zero frames\n", c->stats.bytes_holes);
}

/* Where FILE is: its directory (open: FILE.partial is made and renamed
 * there) and its name in it.  FILE is replaced by a rename in its
 * directory: through a symbolic link, the link's target is what is
 * compacted, and the link stays. */
static int locate(struct compact *c)
{
	char real[PATH_MAX];
	const char *path = c->path;
	struct stat l;
	if (lstat(path, &l) == 0 && S_ISLNK(l.st_mode)) {
		if (!realpath(path, real))
			return cli_error("%s: %s", path, strerror(errno)), EXIT_FAILURE_RT;
		path = real;
	}
	const char *base = odx_chain_split_path(path, c->dir, sizeof c->dir);
	if (snprintf(c->name, sizeof c->name, "%s", base) >= (int)sizeof c->name ||
	    snprintf(partial_name, sizeof partial_name, "%s.partial", base) >=
		    (int)sizeof partial_name)
		return cli_error("%s.partial: name too long", path), EXIT_FAILURE_RT;
	c->base = c->name;
	/* for messages: FILE.partial beside FILE as it was given */
	if (strcmp(c->dir, ".") == 0)
		snprintf(c->partial_path, sizeof c->partial_path, "%s", partial_name);
	else
		snprintf(c->partial_path, sizeof c->partial_path, "%s%s%s", c->dir,
			 strcmp(c->dir, "/") ? "/" : "", partial_name);
	c->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0)
		return cli_error("%s: %s", c->dir, strerror(errno)), EXIT_FAILURE_RT;
	return EXIT_OK;
}

/* Open FILE: a regular file holding a complete, undamaged stream. */
static int open_source(struct compact *c, struct odx_error *err)
{
	/* looked at before it is opened (opening a FIFO waits for a writer,
	 * opening a device can have effects), and again once open (it may
	 * have been replaced in between) */
	if (fstatat(c->dirfd, c->base, &c->st, AT_SYMLINK_NOFOLLOW))
		return cli_error("%s: %s", c->path, strerror(errno)), EXIT_FAILURE_RT;
	bool reg = S_ISREG(c->st.st_mode);
	if (reg) {
		c->fd = openat(c->dirfd, c->base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (c->fd < 0 || fstat(c->fd, &c->st))
			return cli_error("%s: %s", c->path, strerror(errno)), EXIT_FAILURE_RT;
		reg = S_ISREG(c->st.st_mode);
	}
	if (!reg)
		return cli_error("%s: not a regular file: compact rewrites a stream file", c->path),
		       EXIT_FAILURE_RT;
	int p = odx_stream_probe(c->fd);
	if (p < 0)
		return cli_error("%s: %s", c->path, strerror(-p)), EXIT_FAILURE_RT;
	if (p == 0) {
		cli_error("%s: not a stream (it does not start with a meta frame): compact rewrites "
			  "the stream files of a backup directory, not the disk images an odxfs "
			  "mount shows for them (give the file in the backing directory)",
			  c->path);
		return EXIT_FAILURE_RT;
	}
	struct odx_stream_opts o = {.flags = ODX_OPEN_META_TEXT};
	int rc = odx_stream_open_fd(c->fd, c->path, &o, &c->s, err);
	if (rc) {
		cli_error("%s", err->msg);
		cli_error("%s: not compacted: only a complete stream without damage is rewritten; "
			  "`odxctl check %s` lists its problems, `odxctl repair` keeps the complete "
			  "frames of a stream cut short",
			  c->path, c->path);
		return EXIT_FAILURE_RT;
	}
	return EXIT_OK;
}

/* FILE.chksum, when there is one, must be FILE's own: the new stream gets
 * a checksum of its own, which would bless damage done to FILE since its
 * backup (in uncompressed data nothing else finds it; copied as it is,
 * it would be there for good). */
static int check_chksum(struct compact *c)
{
	char name[NAME_MAX + 8], text[64];
	snprintf(name, sizeof name, "%s.chksum", c->base);
	int fd = openat(c->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return EXIT_OK;
	ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
	if (n < 0) {
		cli_error("%s.chksum: %s", c->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_FAILURE_RT;
	}
	close(fd);
	text[n] = '\0';
	uint32_t want = 0, got = 0;
	bool parsed = odx_chksum_parse(text, &want) == 0;
	int rc = parsed ? odx_file_adler32(c->fd, &got) : 0;
	if (rc) {
		cli_error("%s: %s", c->path, strerror(-rc));
		return EXIT_FAILURE_RT;
	}
	if (!parsed || got != want) {
		cli_error("%s: offset 0: the Adler-32 of the file is %u but %s.chksum says \"%.20s\": "
			  "the file changed since its backup; not compacted (a new checksum would "
			  "hide the damage; `odxctl check %s` says more)",
			  c->path, got, c->path, text, c->path);
		return EXIT_FAILURE_RT;
	}
	return EXIT_OK;
}

/* FILE.partial beside FILE, created here and nowhere else (O_EXCL). */
static int create_partial(struct compact *c)
{
	partial_dirfd = c->dirfd;
	catch_signals(true);
	c->pfd = openat(c->dirfd, partial_name,
			O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (c->pfd < 0 && errno == EEXIST) {
		cli_error("%s exists: another compact (or a backup) may be writing it; not compacted "
			  "(remove it if nothing is writing it)",
			  c->partial_path);
		return EXIT_FAILURE_RT;
	}
	if (c->pfd < 0)
		return cli_error("%s: %s", c->partial_path, strerror(errno)), EXIT_FAILURE_RT;
	partial_live = 1;
	return EXIT_OK;
}

static int compact_file(struct compact *c, enum odx_codec codec, bool codec_set, int level,
			bool check, bool quiet)
{
	struct odx_error err;
	odx_error_clear(&err);
	int status = locate(c);
	if (!status)
		status = open_source(c, &err);
	if (!status)
		status = check_chksum(c);
	if (status)
		return status;
	const struct odx_stream_info *in = odx_stream_info(c->s);
	if (!codec_set)
		codec = in->codec;
	if (codec == ODX_CODEC_NONE && level > 0)
		return cli_usage("compact", "%s is uncompressed: --level needs --compress lz4 or zlib",
				 c->path);
	if (codec == ODX_CODEC_ZLIB && level > 9)
		return cli_usage("compact", "--level for zlib is 1 to 9");
	if ((status = create_partial(c)))
		return status;
	/* The meta as it was (unknown keys kept, in order); the sink sets the
	 * keys it decides (compression, incremental, sizes). */
	struct odx_sink_opts so = {
		.codec = codec,
		.level = pick_level(codec, level, in),
		.incremental = in->incremental,
		.meta_text = odx_stream_meta_text(c->s),
		.virtual_size = in->virtual_size,
	};
	int rc = odx_sink_new(c->pfd, c->partial_path, &so, &c->sink, &err);
	if (!rc)
		rc = copy_visible(c, quiet, &err);
	if (!rc)
		odx_sink_stats(c->sink, &c->stats);
	struct odx_stream *b = NULL;
	if (!rc) {
		/* the new stream opened strictly: what a reader will find */
		rc = odx_stream_open_fd(c->pfd, c->partial_path, NULL, &b, &err);
		if (!rc)
			c->after = *odx_stream_info(b);
	}
	if (rc) {
		cli_error("%s", err.msg);
		status = EXIT_FAILURE_RT;
	} else if (check) {
		status = verify(c->s, b, c->path, quiet);
	}
	odx_stream_close(b);
	if (!status && (rc = publish(c, &err))) {
		cli_error("%s", err.msg);
		status = EXIT_FAILURE_RT;
		/* renamed, but FILE.chksum not written: the old one does not
		 * match FILE any more and would make check report damage */
		if (is_ours(c, c->base)) {
			char cname[NAME_MAX + 8];
			snprintf(cname, sizeof cname, "%s.chksum", c->base);
			unlinkat(c->dirfd, cname, 0);
			cli_error("%s: compacted, but without %s.chksum (the old one was removed)",
				  c->path, c->path);
		}
	}
	if (status && is_ours(c, partial_name))
		unlinkat(c->dirfd, partial_name, 0);
	partial_live = 0;
	if (!status && !quiet)
		report(c);
	return status;
}

int cmd_compact(int argc, char **argv)
{
	static const struct option opts[] = {{"compress", required_argument, NULL, 'c'},
					     {"level", required_argument, NULL, 'l'},
					     {"verify", no_argument, NULL, 'v'},
					     {"quiet", no_argument, NULL, 'q'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	enum odx_codec codec = ODX_CODEC_NONE;
	bool codec_set = false, check = false, quiet = false;
	int level = -1, c;
	uint64_t v;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (odx_codec_parse(optarg, &codec))
				return cli_usage("compact", "invalid --compress '%s' (none, lz4, zlib)",
						 optarg);
			codec_set = true;
			break;
		case 'l':
			if (odx_parse_u64(optarg, &v) || v > 12)
				return cli_usage("compact", "invalid --level '%s' (0 to 12 for lz4, 1 to 9 for zlib)",
						 optarg);
			level = (int)v;
			break;
		case 'v': check = true; break;
		case 'q': quiet = true; break;
		case 'h': cli_print_usage("compact"); return EXIT_OK;
		default: return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage("compact", "expected exactly one FILE");
	/* --level against the codec: once it is known (FILE's, without
	 * --compress), in compact_file */
	struct compact cc = {.path = argv[optind], .fd = -1, .dirfd = -1, .pfd = -1};
	int status = compact_file(&cc, codec, codec_set, level, check, quiet);
	catch_signals(false);
	odx_sink_free(cc.sink);
	odx_stream_close(cc.s);
	if (cc.pfd >= 0)
		close(cc.pfd);
	if (cc.dirfd >= 0)
		close(cc.dirfd);
	if (cc.fd >= 0)
		close(cc.fd);
	return status;
}
