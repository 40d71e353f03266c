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
#include <sys/xattr.h>

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

static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char path[64];
	char *value = NULL;
	ssize_t n = xattr_path(req, ino, path, sizeof path);

	odx_debug("getxattr %llu %s", (unsigned long long)ino, name);
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
