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
 * The kernel delivers ioctls on descriptors open read-only too, and does
 * not pass the open flags with them: whether the handle may write is the
 * access mode of the handle's own backing descriptor (a raw handle's is
 * opened with the caller's flags; a stream handle's is read-only).
 *
 * RELEASE and STATS work on any file or directory (odxctl stats uses the
 * mount root, whose handle is a directory stream, not an fs_handle);
 * OFFLOAD_READ and OFFLOAD_WRITE need a regular file.  After an offload
 * write the kernel's cached pages and attributes of the range are dropped
 * before the reply, so the caller reads what was written.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "fs.h"
#include "log.h"
#include "odxfs/ioctl.h"

union ioc_buf {
	struct odx_ioc_offload_read rd;
	struct odx_ioc_offload_write wr;
	struct odx_ioc_release rel;
	struct odx_ioc_stats st;
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

/* Whether the handle's backing descriptor is open for writing. */
static bool handle_writable(const struct fs_handle *h)
{
	int fl = fcntl(h->img->fd, F_GETFL);
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

/* Run one request on the engine.  `h` is NULL on a directory. */
static int ioctl_run(struct fs *fs, unsigned int cmd, struct fs_handle *h,
		     union ioc_buf *io, struct odx_error *err)
{
	switch (cmd) {
	case ODX_IOC_OFFLOAD_READ:
		return h ? odx_offload_ioc_read(fs->engine, h->img, &io->rd, err) : -EISDIR;
	case ODX_IOC_OFFLOAD_WRITE:
		return h ? odx_offload_ioc_write(fs->engine, h->img, handle_writable(h), &io->wr,
						 err)
			 : -EISDIR;
	case ODX_IOC_RELEASE:
		return odx_offload_ioc_release(fs->engine, &io->rel);
	default:
		return odx_offload_ioc_stats(fs->engine, &io->st);
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
	int r = ioctl_take(cmd, in_buf, in_bufsz, out_bufsz, &io, &out_size);
	if (r == 0)
		r = ioctl_run(fs, cmd, (flags & FUSE_IOCTL_DIR) ? NULL : fs_handle_of(fi), &io,
			      &err);
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
