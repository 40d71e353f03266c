/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * File callbacks: open and create (handle.c decides stream or raw), read
 * (reply.c builds the reply from the image), and the write side, which the
 * backend wrappers refuse with EROFS for streams.  Every callback that may
 * open or modify runs with its caller described (fs_caller_begin): opening
 * is done with the caller's credentials, and a modification drops the
 * privileges the kernel drops for that caller (backend.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

static void open_flags(struct fuse_file_info *fi, const struct fs_handle *h,
		       bool keep_cache)
{
	fi->fh = (uintptr_t)h;
	fi->keep_cache = keep_cache;
	/* Streams are immutable: no flush on close, and parallel reads. */
	fi->noflush = h->stream;
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = NULL;
	bool keep = false;
	struct fs_caller c;
	odx_debug("open %llu flags 0%o", (unsigned long long)ino, fi->flags);
	fs_caller_begin(&c, req, ino);
	int r = fs_handle_open(fs_of(req), fs_inode_of(fs_of(req), ino), fi->flags, &c, &h,
			       &keep);
	fs_caller_end(&c);
	if (r < 0) {
		fs_reply_err(req, r);
		return;
	}
	open_flags(fi, h, keep);
	if (fuse_reply_open(req, fi) == -ENOENT) /* interrupted: nobody holds it */
		fs_handle_close(fs_of(req), h);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct fs_handle *h = NULL;
	bool keep = false;
	struct fs_caller c;
	odx_debug("create %llu/%s flags 0%o", (unsigned long long)parent, name, fi->flags);
	fs_caller_begin(&c, req, 0);
	int r = fs_handle_create(fs_of(req), fs_inode_of(fs_of(req), parent), name, mode,
				 fi->flags, &c, &e, &h, &keep);
	if (r == 0)
		c.ino = e.ino; /* an existing file opened with O_TRUNC: see handle.c */
	fs_caller_end(&c);
	if (r < 0) {
		fs_reply_err(req, r);
		return;
	}
	open_flags(fi, h, keep);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		fs_handle_close(fs_of(req), h);
		fs_inode_forget(fs_of(req), fs_inode_of(fs_of(req), e.ino), 1);
	}
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req); /* req is gone once replied to */
	struct fs_handle *h = fs_handle_hold(fi);
	struct odx_image *img = fs_handle_img(h);
	odx_debug("read %llu: %zu at %lld", (unsigned long long)ino, size, (long long)off);
	/* O_DIRECT (handle.c): what this read brought into the backing page
	 * cache goes again once the reply is sent; the handle, held, keeps
	 * its image. */
	bool direct = img->flags & ODX_IMG_WRITE_THROUGH;
	fs_reply_read(req, h, size, off);
	if (direct)
		posix_fadvise(img->fd, off, (off_t)size, POSIX_FADV_DONTNEED);
	fs_handle_drop(fs, h);
}

static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	struct fs_caller c;
	odx_debug("write %llu: %zu at %lld", (unsigned long long)ino, size, (long long)off);
	fs_caller_begin(&c, req, ino);
	struct fs_handle *h = fs_handle_hold(fi);
	ssize_t n = odx_image_write(fs_handle_img(h), buf, size, (uint64_t)off);
	fs_handle_drop(fs_of(req), h);
	fs_caller_end(&c);
	if (n < 0)
		fs_reply_err(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_hold(fi);
	/* close() of a duplicate: what the backing filesystem does on close
	 * (POSIX lock release, NFS write-back) happens now. */
	int r = close(dup(h->img->fd)) < 0 ? -errno : 0;
	/* A stream an offloaded copy wrote into a new .data file is finished
	 * at its close, and a failure is the close's (sink.c). */
	if (atomic_load(&h->sink)) {
		struct fs_caller c;
		struct odx_error err;
		odx_error_clear(&err);
		fs_caller_begin(&c, req, ino);
		int f = fs_sink_finish(fs_of(req), h, &c, false, 0, NULL, &err);
		fs_caller_end(&c);
		if (f < 0)
			r = f;
	}
	fs_handle_drop(fs_of(req), h);
	fs_reply_err(req, r);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	odx_debug("release %llu", (unsigned long long)ino);
	fs_handle_drop(fs_of(req), fs_handle_of(fi)); /* the kernel's hold */
	fuse_reply_err(req, 0);
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_hold(fi);
	int r = odx_image_fsync(fs_handle_img(h), datasync);
	fs_handle_drop(fs_of(req), h);
	fs_reply_err(req, r);
}

static void fs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	odx_debug("fallocate %llu: mode 0x%x %lld+%lld", (unsigned long long)ino, mode,
		  (long long)off, (long long)len);
	struct fs_caller c;
	fs_caller_begin(&c, req, ino);
	struct fs_handle *h = fs_handle_hold(fi);
	int r = odx_image_fallocate(fs_handle_img(h), mode, (uint64_t)off, (uint64_t)len);
	fs_handle_drop(fs_of(req), h);
	fs_caller_end(&c);
	fs_reply_err(req, r);
}

static void fs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	odx_debug("lseek %llu: %lld whence %d", (unsigned long long)ino, (long long)off,
		  whence);
	struct fs_handle *h = fs_handle_hold(fi);
	off_t r = odx_image_lseek(fs_handle_img(h), off, whence);
	fs_handle_drop(fs_of(req), h);
	if (r < 0)
		fs_reply_err(req, (int)r);
	else
		fuse_reply_lseek(req, r);
}

void fs_ops_file(struct fuse_lowlevel_ops *ops)
{
	ops->open = fs_open;
	ops->create = fs_create;
	ops->read = fs_read;
	ops->write = fs_write;
	ops->flush = fs_flush;
	ops->release = fs_release;
	ops->fsync = fs_fsync;
	ops->fallocate = fs_fallocate;
	ops->lseek = fs_lseek;
}
