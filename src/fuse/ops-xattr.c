/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Extended attributes, passed through to the backing object by its
 * /proc/self/fd path (an O_PATH descriptor cannot be used with the f*xattr
 * calls), with the caller's credentials (cred.c), so the backing
 * filesystem's permission checks of each namespace judge the caller.
 * Symlinks answer ENOTSUP: the path would follow the link, and there is no
 * race-free way to name the link itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <fcntl.h>

#include "fs.h"
#include "log.h"

static int xattr_path(fuse_req_t req, fuse_ino_t ino, char *buf, size_t len)
{
	struct fs_inode *in = fs_inode_of(fs_of(req), ino);
	if (S_ISLNK(in->type))
		return -ENOTSUP;
	snprintf(buf, len, "/proc/self/fd/%d", in->fd);
	return 0;
}

/* Reply to a get or list: the size when the caller asked for it (size 0),
 * else the value. */
static void xattr_reply(fuse_req_t req, ssize_t n, const char *value, size_t size)
{
	if (n < 0)
		fs_reply_err(req, (int)n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, value, (size_t)n);
}

/* Reading security.* and system.* is judged by the kernel alone (no
 * permission bits: the VFS and the LSMs decide before the request reaches
 * us, and the backing filesystem asks nothing more), so those reads need
 * not act as the caller.  One of them, security.capability, comes before
 * every write the kernel sends us. */
static bool xattr_read_needs_caller(const char *name)
{
	return strncmp(name, "security.", 9) != 0 && strncmp(name, "system.", 7) != 0;
}

/* The members of a chain view, base first, one line each:
 * "KIND<TAB>CHECKPOINT<TAB>NAME" (KIND full, copy, inc or diff), for
 * odxctl fold.  Read-only and not listed; ENODATA for anything but a
 * view; the caller must be able to read the view. */
#define XATTR_CHAIN "user.odxfs.chain"

static ssize_t chain_xattr(fuse_req_t req, fuse_ino_t ino, char *value, size_t size)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = fs_inode_of(fs, ino);
	struct stat st;
	struct odx_image *img;
	uint64_t gen;
	bool reused;
	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH) < 0)
		return -errno;
	int kind = fs_inode_classify(fs, in, &st, &img, &gen, &reused);
	if (kind < 0)
		return kind;
	if (kind != FS_KIND_STREAM || !odx_image_is_view(img)) {
		odx_image_unref(img);
		return -ENODATA;
	}
	struct fs_caller c;
	fs_caller_begin(&c, req, 0);
	ssize_t r = fs_handle_may_read(fs, in, img, &c);
	fs_caller_end(&c);
	const char *dir;
	const struct odx_view_member *m;
	size_t nm = odx_chain_view_members(img, &dir, &m);
	static const char *const kinds[] = {"full", "copy", "inc", "diff"};
	size_t need = 0;
	for (size_t k = 0; r == 0 && k < nm; k++) {
		char line[NAME_MAX * 2 + 16];
		int l = snprintf(line, sizeof line, "%s\t%s\t%s\n",
				 (unsigned)m[k].kind < 4 ? kinds[m[k].kind] : "?",
				 m[k].checkpoint ? m[k].checkpoint : "", m[k].name);
		if (l < 0 || (size_t)l >= sizeof line) {
			r = -ENAMETOOLONG;
			break;
		}
		if (size && need + (size_t)l > size) {
			r = -ERANGE;
			break;
		}
		if (size)
			memcpy(value + need, line, (size_t)l);
		need += (size_t)l;
	}
	odx_image_unref(img);
	return r < 0 ? r : (ssize_t)need;
}

static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char path[64];
	char *value = NULL;
	ssize_t n = xattr_path(req, ino, path, sizeof path);

	odx_debug("getxattr %llu %s", (unsigned long long)ino, name);
	if (n == 0 && strcmp(name, XATTR_CHAIN) == 0) {
		if (size && !(value = malloc(size)))
			n = -ENOMEM;
		else
			n = chain_xattr(req, ino, value, size);
		xattr_reply(req, n, value, size);
		free(value);
		return;
	}
	if (n == 0 && size && !(value = malloc(size)))
		n = -ENOMEM;
	struct fs_caller c;
	bool as_caller = xattr_read_needs_caller(name);
	if (n == 0 && (!as_caller || (n = fs_caller_enter(&c, req)) == 0)) {
		n = getxattr(path, name, value, size);
		if (n < 0)
			n = -errno;
		if (as_caller)
			fs_caller_leave(&c);
	}
	xattr_reply(req, n, value, size);
	free(value);
}

static void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char path[64];
	char *value = NULL;
	ssize_t n = xattr_path(req, ino, path, sizeof path);

	odx_debug("listxattr %llu", (unsigned long long)ino);
	if (n == 0 && size && !(value = malloc(size)))
		n = -ENOMEM;
	struct fs_caller c;
	if (n == 0 && (n = fs_caller_enter(&c, req)) == 0) {
		n = listxattr(path, value, size);
		if (n < 0)
			n = -errno;
		fs_caller_leave(&c);
	}
	xattr_reply(req, n, value, size);
	free(value);
}

static void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	char path[64];
	int r = xattr_path(req, ino, path, sizeof path);

	odx_debug("setxattr %llu %s", (unsigned long long)ino, name);
	struct fs_caller c;
	if (r == 0 && (r = fs_caller_enter(&c, req)) == 0) {
		r = setxattr(path, name, value, size, flags) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	fs_reply_err(req, r);
}

static void fs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char path[64];
	int r = xattr_path(req, ino, path, sizeof path);

	odx_debug("removexattr %llu %s", (unsigned long long)ino, name);
	struct fs_caller c;
	if (r == 0 && (r = fs_caller_enter(&c, req)) == 0) {
		r = removexattr(path, name) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	fs_reply_err(req, r);
}

void fs_ops_xattr(struct fuse_lowlevel_ops *ops)
{
	ops->getxattr = fs_getxattr;
	ops->listxattr = fs_listxattr;
	ops->setxattr = fs_setxattr;
	ops->removexattr = fs_removexattr;
}
