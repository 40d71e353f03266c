/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * copy_file_range inside the mount, offloaded: the offload engine's copy
 * loop (offload read on the source image, offload write of the token to
 * the destination image, release, advance) does the work, so zero extents
 * become holes and plain data goes backing file to backing file inside
 * the kernel.  The callback only finds the two images and replies.
 *
 * One request copies less than 4 GiB: the reply's count is 32 bits wide,
 * and every caller of copy_file_range(2) loops on short counts.  A copy
 * the engine declines (token caps, the caller's per-user caps, a backing
 * filesystem that refuses) is answered EOPNOTSUPP by fs_reply_copy, and the
 * kernel copies that range itself through FUSE read and write; -o
 * offload=off declines them all.
 *
 * The kernel checks the open modes (fd_in readable, fd_out writable) and
 * overlapping ranges of one file before asking, and drops its cached
 * pages of the destination range after our reply.  A stream destination
 * cannot occur (a stream cannot be opened for writing: EROFS), and the
 * engine refuses one with EROFS regardless.
 */
#include <errno.h>

#include "fs.h"
#include "log.h"

/* Largest count one reply can carry (32 bits), kept page-aligned. */
#define FS_MAX_COPY ((size_t)UINT32_MAX & ~(size_t)4095)

static void fs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			       off_t off_out, struct fuse_file_info *fi_out, size_t len,
			       int flags)
{
	struct fs *fs = fs_of(req);
	odx_debug("copy_file_range %llu:%lld -> %llu:%lld, %zu bytes",
		  (unsigned long long)ino_in, (long long)off_in, (unsigned long long)ino_out,
		  (long long)off_out, len);
	if (!fs->opt.offload || flags != 0) {
		fs_reply_copy(req, -EOPNOTSUPP, NULL, true);
		return;
	}
	struct odx_error err;
	struct fs_caller c;
	odx_error_clear(&err);
	/* The caller drops the destination's privileges as its write would. */
	fs_caller_begin(&c, req, ino_out);
	/* Its tokens count against the caller's per-user caps (EMFILE and
	 * EDQUOT past them: declined, the kernel copies). */
	struct fs_handle *in = fs_handle_hold(fi_in), *out = fs_handle_hold(fi_out);
	struct odx_image *dst = fs_sink_dst(fs, out, &c, &err);
	int64_t n = dst ? odx_offload_copy(fs->engine, fs_handle_img(in),
					   (uint64_t)off_in, dst, (uint64_t)off_out,
					   (uint32_t)c.uid, len < FS_MAX_COPY ? len : FS_MAX_COPY,
					   NULL, &err)
			: -err.code;
	fs_caller_end(&c);
	if (n < 0 && err.msg[0])
		odx_debug("copy_file_range: %s", err.msg);
	/* A stream being written takes no bytes from the kernel's own copy:
	 * its failures are the caller's. */
	bool may_decline = dst == out->img;
	fs_handle_drop(fs, in);
	fs_handle_drop(fs, out);
	fs_reply_copy(req, n, &err, may_decline);
}

void fs_ops_copy(struct fuse_lowlevel_ops *ops)
{
	ops->copy_file_range = fs_copy_file_range;
}
