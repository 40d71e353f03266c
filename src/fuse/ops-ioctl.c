/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The ODX ioctls of <odxfs/ioctl.h>: offload read and offload write for
 * programs (odxctl offload-read, offload-write, copy), token release and
 * the engine's counters.
 *
 * They are FUSE "restricted" ioctls: the kernel copies _IOC_SIZE(cmd)
 * bytes in (for _IOC_WRITE) and out (for _IOC_READ), so every request is
 * one fixed-size struct.  The sizes the kernel announces are checked
 * against the struct before anything is read; the engine's glue
 * (odx_offload_ioc_*) checks the struct's own size field and reserved
 * bytes.
 *
 * The kernel checks read(2), write(2) and copy_file_range(2) against the
 * descriptor, the destination and the caller before they reach us, but
 * passes ioctls on any descriptor, so the offload ioctls make the same
 * checks here (ioctl_may_read, ioctl_may_write), from the flags the handle
 * was opened with and the caller's own limits: offload read needs a
 * handle open for reading, offload write one open for writing and not
 * O_APPEND (EBADF, as copy_file_range answers); an immutable or
 * append-only destination is refused with EPERM; the caller's
 * RLIMIT_FSIZE cuts the write at the limit, and a write starting at or
 * past it fails with EFBIG and SIGXFSZ for the calling thread.  (A change
 * of O_APPEND with fcntl(F_SETFL) after open is not seen: FUSE does not
 * report it.)  The caller is the backends' actor meanwhile, so an offload
 * write drops the privileges the kernel would drop for it.
 *
 * RELEASE and STATS work on any file or directory (odxctl stats uses the
 * mount root, whose handle is a directory stream, not an fs_handle); STATS
 * adds the index cache's figures to the engine's counters;
 * OFFLOAD_READ and OFFLOAD_WRITE need a regular file.  After an offload
 * write the kernel's cached pages and attributes of the range are dropped
 * before the reply, so the caller reads what was written.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "odxfs/ioctl.h"

union ioc_buf {
	struct odx_ioc_offload_read rd;
	struct odx_ioc_offload_write wr;
	struct odx_ioc_release rel;
	struct odx_ioc_stats st;
	struct odx_ioc_stream str;
};

/* The kernel's buffer sizes must be what cmd's direction and size say:
 * `in` bytes in (0 for none), `out` bytes out.  Copies the input into
 * *io.  Returns 0, -ENOTTY for a command that is not ours, -EINVAL for
 * wrong sizes. */
static int ioctl_take(unsigned int cmd, const void *in_buf, size_t in_bufsz,
		      size_t out_bufsz, union ioc_buf *io, size_t *out_size)
{
	size_t in, out;
	switch (cmd) {
	case ODX_IOC_OFFLOAD_READ:
		in = out = sizeof io->rd;
		break;
	case ODX_IOC_OFFLOAD_WRITE:
		in = out = sizeof io->wr;
		break;
	case ODX_IOC_RELEASE:
		in = sizeof io->rel;
		out = 0;
		break;
	case ODX_IOC_STATS:
		in = out = sizeof io->st;
		break;
	case ODX_IOC_STREAM_BEGIN:
		in = sizeof io->str;
		out = 0;
		break;
	case ODX_IOC_STREAM_FINISH:
		in = out = sizeof io->str;
		break;
	default:
		return -ENOTTY;
	}
	if (in_bufsz != in || out_bufsz != out)
		return -EINVAL;
	memset(io, 0, sizeof *io);
	memcpy(io, in_buf, in);
	*out_size = out;
	return 0;
}

/* What read(2) checks of the descriptor: open for reading. */
static int ioctl_may_read(const struct fs_handle *h)
{
	return (h->flags & O_ACCMODE) == O_WRONLY ? -EBADF : 0;
}

/* What copy_file_range(2) checks of the destination and the caller before
 * writing; may cut io->copy_length at the caller's RLIMIT_FSIZE (then
 * *cut is set). */
static int ioctl_may_write(const struct fs_handle *h, struct fs_caller *c,
			   struct odx_ioc_offload_write *io, bool *cut)
{
	*cut = false;
	if ((h->flags & O_ACCMODE) == O_RDONLY || (h->flags & O_APPEND))
		return -EBADF;
	int attr = 0;
	if (!h->stream && ioctl(h->img->fd, FS_IOC_GETFLAGS, &attr) == 0 &&
	    (attr & (FS_IMMUTABLE_FL | FS_APPEND_FL)))
		return -EPERM;
	struct rlimit rl;
	if (c->pid <= 0 || prlimit(c->pid, RLIMIT_FSIZE, NULL, &rl) < 0 ||
	    rl.rlim_cur == RLIM_INFINITY)
		return 0;
	if (io->file_offset >= rl.rlim_cur) {
		pid_t tgid;
		if (fs_caller_tgid(c, &tgid) == 0)
			syscall(SYS_tgkill, tgid, c->pid, SIGXFSZ);
		return -EFBIG;
	}
	if (io->copy_length > rl.rlim_cur - io->file_offset) {
		io->copy_length = rl.rlim_cur - io->file_offset;
		*cut = true;
	}
	return 0;
}

/* ODX_IOC_STREAM_BEGIN and _FINISH (sink.c does the work). */
static int ioctl_stream(struct fs *fs, unsigned int cmd, struct fs_handle *h,
			struct fs_caller *c, struct odx_ioc_stream *io, struct odx_error *err)
{
	if (!h)
		return -EISDIR;
	if (io->size != sizeof *io || io->flags || io->reserved[0] || io->reserved[1] ||
	    io->reserved[2])
		return -EINVAL;
	if (cmd == ODX_IOC_STREAM_BEGIN) {
		if (io->codec < -1 || io->codec > ODX_CODEC_ZLIB || io->level < 0)
			return -EINVAL;
		if ((h->flags & O_ACCMODE) == O_RDONLY || (h->flags & O_APPEND))
			return -EBADF;
		return fs_sink_begin(fs, h, c, io->codec, io->level, err);
	}
	struct odx_sink_stats st = {0};
	int r = fs_sink_finish(fs, h, c, true, io->virtual_size, &st, err);
	memset(io, 0, sizeof *io);
	io->size = sizeof *io;
	io->bytes_kernel = st.bytes_kernel;
	io->bytes_verbatim = st.bytes_verbatim;
	io->bytes_buffered = st.bytes_buffered;
	io->bytes_holes = st.bytes_holes;
	return r;
}

/* Run one request on the engine.  `h` is NULL on a directory. */
static int ioctl_run(struct fs *fs, unsigned int cmd, struct fs_handle *h,
		     struct fs_caller *c, union ioc_buf *io, struct odx_error *err)
{
	bool cut;
	int r;
	switch (cmd) {
	case ODX_IOC_OFFLOAD_READ:
		if (h && (r = ioctl_may_read(h)) < 0)
			return r;
		return h ? odx_offload_ioc_read(fs->engine, fs_handle_img(h), c->uid, &io->rd, err)
			 : -EISDIR;
	case ODX_IOC_OFFLOAD_WRITE: {
		if (!h)
			return -EISDIR;
		r = ioctl_may_write(h, c, &io->wr, &cut);
		struct odx_image *dst = r == 0 ? fs_sink_dst(fs, h, c, err) : NULL;
		if (r == 0 && !dst)
			r = -err->code;
		if (r == 0)
			r = odx_offload_ioc_write(fs->engine, dst, true, &io->wr, err);
		if (r == 0 && cut)
			io->wr.out_flags |= ODX_OFFLOAD_WRITE_FLAG_RANGE_TRUNCATED;
		return r;
	}
	case ODX_IOC_STREAM_BEGIN:
	case ODX_IOC_STREAM_FINISH:
		return ioctl_stream(fs, cmd, h, c, &io->str, err);
	case ODX_IOC_RELEASE:
		return odx_offload_ioc_release(fs->engine, &io->rel);
	default:
		r = odx_offload_ioc_stats(fs->engine, &io->st);
		if (r == 0) {
			struct fs_icache_stats ic;
			fs_icache_stats(fs, &ic);
			io->st.index_entries = ic.entries;
			io->st.index_bytes = ic.bytes;
			io->st.index_evictions = ic.evictions;
			io->st.index_suspended = ic.entries - ic.with_fd;
		}
		return r;
	}
}

static void fs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	struct fs *fs = fs_of(req);
	union ioc_buf io;
	size_t out_size = 0;
	struct odx_error err;
	odx_error_clear(&err);
	odx_debug("ioctl %llu: cmd 0x%x, %zu in, %zu out", (unsigned long long)ino, cmd,
		  in_bufsz, out_bufsz);
	struct fs_caller c;
	fs_caller_begin(&c, req, ino);
	int r = ioctl_take(cmd, in_buf, in_bufsz, out_bufsz, &io, &out_size);
	struct fs_handle *h = r == 0 && !(flags & FUSE_IOCTL_DIR) ? fs_handle_hold(fi) : NULL;
	if (r == 0)
		r = ioctl_run(fs, cmd, h, &c, &io, &err);
	if (h)
		fs_handle_drop(fs, h);
	fs_caller_end(&c);
	if (r < 0 && err.msg[0])
		odx_debug("ioctl %llu: %s", (unsigned long long)ino, err.msg);
	if (r == 0 && cmd == ODX_IOC_OFFLOAD_WRITE && io.wr.length_written > 0)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, (off_t)io.wr.file_offset,
						 (off_t)io.wr.length_written);
	fs_reply_ioctl(req, r, &io, out_size);
}

void fs_ops_ioctl(struct fuse_lowlevel_ops *ops)
{
	ops->ioctl = fs_ioctl;
}
