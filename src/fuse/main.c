/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxfs: mount a backing directory, serving sparse streams as raw disk
 * images and passing everything else through.
 *
 * Start-up order matters for mount(8) and systemd, which judge the mount by
 * our exit status: options, backing directory and mount are all checked in
 * the foreground, and only after fuse_session_mount() succeeded does the
 * daemon detach (fuse_daemonize), switching its log to syslog.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "fs.h"
#include "log.h"

static void fs_conn_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Requests of 512 KiB (libfuse derives max_pages from max_write).
	 * Measured here with 1 MiB read-ahead: 512 KiB requests read a 4 GiB
	 * image about 3 times faster than 1 MiB ones, which make libfuse
	 * splice through a 2 MiB pipe and leave one request in flight; 128
	 * and 256 KiB are close to 512. */
	conn->max_write = FS_MAX_REQUEST;
	/* The kernel only lets init lower max_readahead; raising it is done
	 * on the mount's bdi after INIT (fs_after_init). */
	/* DONT_MASK: the umask is the backing filesystem's to apply, with
	 * the caller's value, or not at all under a default ACL (cred.c).
	 * (HANDLE_KILLPRIV would be wanted too, but libfuse 3.14 never passes
	 * it to the kernel: see fs_inode_setattr for the kernel's own
	 * setuid/setgid-dropping chmod.) */
	unsigned want = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_READDIRPLUS |
			FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_DONT_MASK;
	conn->want |= conn->capable & want;
	fs_cred_init(conn->want & FUSE_CAP_DONT_MASK);
	/* Data comes from the request buffer (no write_buf), so no splice
	 * from the device for writes. */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	if (conn->max_background < 64)
		conn->max_background = 64;
}

static const struct fuse_lowlevel_ops *fs_ops(void)
{
	static struct fuse_lowlevel_ops ops;
	ops.init = fs_conn_init;
	fs_ops_entry(&ops);
	fs_ops_dir(&ops);
	fs_ops_file(&ops);
	fs_ops_xattr(&ops);
	fs_ops_copy(&ops);
	fs_ops_ioctl(&ops);
	return &ops;
}

/* libfuse's messages, in our log.  libfuse builds some lines with several
 * calls, so text is collected per thread up to the newline. */
static void fs_fuse_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static __thread char line[1024];
	static __thread size_t len;

	int n = vsnprintf(line + len, sizeof line - len, fmt, ap);
	if (n > 0)
		len = len + (size_t)n < sizeof line ? len + (size_t)n : sizeof line - 1;
	if (len && line[len - 1] != '\n' && len < sizeof line - 1)
		return;
	while (len && line[len - 1] == '\n')
		line[--len] = '\0';
	odx_log((int)level, "%s", line);
	len = 0;
}

/* The kernel's ceiling for RLIMIT_NOFILE, or 0. */
static rlim_t nr_open(void)
{
	unsigned long long n = 0;
	FILE *f = fopen("/proc/sys/fs/nr_open", "re");
	if (f) {
		if (fscanf(f, "%llu", &n) != 1)
			n = 0;
		fclose(f);
	}
	return (rlim_t)n;
}

/* Every inode the kernel knows holds an O_PATH descriptor (as in
 * passthrough_ll), and images in use one more each: allow as many as we
 * may.  With CAP_SYS_RESOURCE both limits go up to the kernel's ceiling
 * (fs.nr_open); without it the soft limit goes up to the hard one. */
static void raise_fd_limit(void)
{
	struct rlimit old, rl;
	if (getrlimit(RLIMIT_NOFILE, &old) < 0)
		return;
	rl = old;
	rlim_t ceiling = nr_open();
	if (ceiling > 0 && (rl.rlim_max == RLIM_INFINITY || ceiling > rl.rlim_max)) {
		rl.rlim_cur = rl.rlim_max = ceiling;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rl = old; /* not privileged: as far as the hard limit */
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	odx_debug("descriptor limit: %llu (hard %llu), was %llu (hard %llu)",
		  (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
		  (unsigned long long)old.rlim_cur, (unsigned long long)old.rlim_max);
}

/* The offload engine, from the -o options.  It installs the backends'
 * modify hook, so it must exist before the first image is opened. */
static int offload_setup(struct fs *fs)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.token_ttl_ms = fs->opt.token_ttl_ms;
	cfg.max_ttl_ms = fs->opt.max_token_ttl_ms;
	cfg.max_tokens = fs->opt.max_tokens;
	cfg.max_token_bytes = fs->opt.token_memory;
	/* 0 (not given): the engine's default share of the two above. */
	cfg.max_tokens_per_owner = fs->opt.max_tokens_per_user;
	cfg.max_token_bytes_per_owner = fs->opt.token_memory_per_user;
	int r = odx_offload_engine_create(&cfg, &fs->engine);
	if (r < 0)
		fprintf(stderr, "odxfs: cannot create the offload engine: %s\n", strerror(-r));
	return r;
}

static int fs_setup(struct fs *fs)
{
	struct stat st;

	fs->root.fd = open(fs->opt.backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->root.fd < 0) {
		int e = errno;
		if (e == ENOTDIR)
			fprintf(stderr, "odxfs: %s: backing path is not a directory\n",
				fs->opt.backing);
		else
			fprintf(stderr, "odxfs: %s: %s\n", fs->opt.backing, strerror(e));
		return -1;
	}
	if (fstat(fs->root.fd, &st) < 0) {
		fprintf(stderr, "odxfs: %s: %s\n", fs->opt.backing, strerror(errno));
		return -1;
	}
	fs->root.dev = st.st_dev;
	fs->root.ino = st.st_ino;
	fs->root.type = S_IFDIR;
	fs->root.nlookup = 2;
	pthread_mutex_init(&fs->root.lock, NULL);
	fs->proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->proc_fd < 0) {
		fprintf(stderr, "odxfs: /proc/self/fd: %s (is /proc mounted?)\n",
			strerror(errno));
		return -1;
	}
	if (offload_setup(fs) < 0)
		return -1;
	if (fs_itable_init(&fs->itable) < 0) {
		fprintf(stderr, "odxfs: out of memory\n");
		return -1;
	}
	fs_icache_init(&fs->icache, fs->opt.index_cache_entries, fs->opt.index_cache_size,
		       fs->opt.index_cache_fds);
	fs_notify_init(&fs->notify);
	fs->bcfg.cache = odx_chunk_cache_new((size_t)fs->opt.cache_size);
	if (!fs->bcfg.cache) {
		fprintf(stderr, "odxfs: cannot create a chunk cache of %llu bytes\n",
			(unsigned long long)fs->opt.cache_size);
		return -1;
	}
	/* odxfs-stream(5), "Damage": torn streams are served up to their
	 * last complete frame; damaged ones not at all (strict), or as far
	 * as their intact frames go (-o salvage). */
	fs->bcfg.stream_flags = ODX_OPEN_ALLOW_TORN | (fs->opt.salvage ? ODX_OPEN_SALVAGE : 0);
	raise_fd_limit();
	fs_reclaim_init(fs, fs->opt.max_inodes);
	return 0;
}

static void fs_teardown(struct fs *fs)
{
	/* Tokens hold image references: drop them while the images' cache
	 * and descriptors still exist. */
	odx_offload_engine_destroy(fs->engine);
	fs->engine = NULL;
	if (fs->itable.buckets) {
		fs_itable_destroy(fs);
		fs_icache_destroy(&fs->icache);
	}
	if (fs->bcfg.cache)
		odx_chunk_cache_free(fs->bcfg.cache);
	if (fs->proc_fd > 0)
		close(fs->proc_fd);
	if (fs->root.fd > 0)
		close(fs->root.fd);
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_octal(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* Raise the kernel's read-ahead for our mount (FUSE init can only lower
 * it, and the kernel applies that when it gets our INIT reply, so this
 * runs at the first request after INIT: fs_after_init).  Here: find the
 * mount's device number in /proc/self/mountinfo (asking the mount itself
 * would wait for the loop that is not running yet) and remember its bdi's
 * read_ahead_kb file. */
static void find_read_ahead(struct fs *fs, const char *mountpoint)
{
	char line[4096], dev[64] = "";
	if (fs->opt.read_ahead == 0)
		return;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char d[64], mp[PATH_MAX];
		if (sscanf(line, "%*s %*s %63s %*s %4095s", d, mp) != 2)
			continue;
		unescape_octal(mp);
		if (strcmp(mp, mountpoint) == 0)
			snprintf(dev, sizeof dev, "%s", d); /* the last one wins */
	}
	fclose(f);
	if (!dev[0])
		return;
	snprintf(fs->ra_path, sizeof fs->ra_path, "/sys/class/bdi/%s/read_ahead_kb", dev);
	atomic_store(&fs->ra_pending, true);
}

void fs_after_init(struct fs *fs)
{
	if (!atomic_load_explicit(&fs->ra_pending, memory_order_relaxed) ||
	    !atomic_exchange(&fs->ra_pending, false))
		return;
	unsigned long long kib = (unsigned long long)(fs->opt.read_ahead >> 10);
	FILE *f = fopen(fs->ra_path, "we");
	if (!f || fprintf(f, "%llu\n", kib) < 0 || fclose(f) != 0) {
		/* Needs root; without it the kernel's value stays. */
		odx_debug("%s: read-ahead not raised: %s", fs->ra_path, strerror(errno));
		return;
	}
	odx_debug("%s: read-ahead %llu KiB", fs->ra_path, kib);
}

static int fs_run(struct fuse_session *se, const struct fuse_cmdline_opts *co)
{
	if (co->singlethread)
		return fuse_session_loop(se);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, (unsigned)co->clone_fd);
	fuse_loop_cfg_set_max_threads(cfg, co->max_threads);
	if (co->max_idle_threads != UINT_MAX)
		fuse_loop_cfg_set_idle_threads(cfg, co->max_idle_threads);
	int r = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return r;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts co = { 0 };
	struct fuse_session *se = NULL;
	struct fs fs = { .proc_fd = -1, .root.fd = -1 };
	char mountpoint[PATH_MAX];
	int ret = 1;

	if (fs_options_parse(&args, &fs.opt) < 0 || fuse_parse_cmdline(&args, &co) != 0)
		goto out;
	if (co.show_help) {
		fs_options_help(argv[0]);
		printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out;
	}
	if (co.show_version) {
		printf("odxfs version %s\n", ODXFS_VERSION);
		fuse_lowlevel_version();
		ret = 0;
		goto out;
	}
	if (fs.opt.bad)
		goto out;
	if (!fs.opt.backing || !fs.opt.mountpoint) {
		fprintf(stderr, "usage: %s [options] BACKING MOUNTPOINT\n"
				"       %s --help for the options\n", argv[0], argv[0]);
		goto out;
	}
	if (!realpath(fs.opt.mountpoint, mountpoint)) {
		fprintf(stderr, "odxfs: bad mount point '%s': %s\n", fs.opt.mountpoint,
			strerror(errno));
		goto out;
	}
	odx_log_debug_enabled = co.debug;
	fuse_set_log_func(fs_fuse_log);
	/* Modes of new files are the callers' (cred.c sets each one's umask
	 * on the thread that serves it); ours must not mask them again. */
	umask(0);
	if (fs_setup(&fs) < 0)
		goto out;

	se = fuse_session_new(&args, fs_ops(), sizeof(struct fuse_lowlevel_ops), &fs);
	if (!se) {
		/* libfuse has named the option it did not know */
		fs_options_list_valid();
		goto out;
	}
	fs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	find_read_ahead(&fs, mountpoint);
	if (fuse_daemonize(co.foreground) != 0)
		goto out_unmount;
	if (!co.foreground) {
		odx_log_use_syslog(true);
		/* The descriptor opened before the fork names the parent's
		 * /proc/PID/fd, gone with the parent. */
		close(fs.proc_fd);
		fs.proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fs.proc_fd < 0) {
			odx_log(LOG_ERR, "/proc/self/fd: %s", strerror(errno));
			goto out_unmount;
		}
	}

	/* The loop returns the number of the signal that ended it (a clean
	 * unmount) or a negative errno. */
	ret = fs_run(se, &co) < 0;
	fs_notify_stop(&fs);
	fs_reclaim_stop(&fs);

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out:
	fs_teardown(&fs);
	fs_options_free(&fs.opt);
	free(co.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
