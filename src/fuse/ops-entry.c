/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Namespace callbacks: lookup and forget, attributes, and the operations
 * that create, link, rename and remove names.  Each is a thin shell: find
 * the inodes, one debug line, one call into inode.c or the system call it
 * mirrors on the backing directory, one reply.
 *
 * Whatever creates, links, renames or removes a name, or changes
 * attributes, runs with the caller's credentials (cred.c), so the backing
 * filesystem decides as it would for the caller: owner, group and mode of
 * new objects, sticky and setgid directories, ACLs.  Lookups and getattr
 * run with the daemon's: their results are cached by the kernel for every
 * user, whose own permission checks (default_permissions) apply to them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

static struct fs_inode *inode_of(fuse_req_t req, fuse_ino_t ino)
{
	return fs_inode_of(fs_of(req), ino);
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	odx_debug("lookup %llu/%s", (unsigned long long)parent, name);
	int r = fs_entry_lookup(fs_of(req), inode_of(req, parent), name, &e);
	fs_reply_entry(req, r, &e);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_inode_forget(fs_of(req), inode_of(req, ino), nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		fs_inode_forget(fs_of(req), inode_of(req, forgets[i].ino),
				forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	odx_debug("getattr %llu", (unsigned long long)ino);
	int r = fs_inode_stat(fs_of(req), inode_of(req, ino), &st);
	fs_reply_attr(req, r, &st, FS_TIMEOUT);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs_inode *in = inode_of(req, ino);
	struct fs_caller c;
	struct stat st;
	odx_debug("setattr %llu: 0x%x", (unsigned long long)ino, to_set);
	fs_caller_begin(&c, req, ino);
	/* only an ftruncate brings a handle: of a regular file */
	struct fs_handle *h = fi && S_ISREG(in->type) ? fs_handle_hold(fi) : NULL;
	int r = fs_inode_setattr(fs_of(req), in, attr, to_set, h, &c);
	if (h)
		fs_handle_drop(fs_of(req), h);
	fs_caller_end(&c);
	if (r == 0)
		r = fs_inode_stat(fs_of(req), in, &st);
	fs_reply_attr(req, r, &st, FS_TIMEOUT);
}

static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t n = readlinkat(inode_of(req, ino)->fd, "", buf, sizeof buf);
	if (n < 0)
		fs_reply_err(req, -errno);
	else if ((size_t)n == sizeof buf)
		fs_reply_err(req, -ENAMETOOLONG);
	else {
		buf[n] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

/* Make a node (mode says which kind) and look it up. */
static int entry_make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev, const char *target, struct fuse_entry_param *e)
{
	int dirfd = inode_of(req, parent)->fd;
	struct fs_caller c;

	odx_debug("make %llu/%s mode 0%o", (unsigned long long)parent, name, mode);
	int r = fs_caller_enter(&c, req);
	if (r < 0)
		return r;
	if (S_ISDIR(mode))
		r = mkdirat(dirfd, name, mode);
	else if (S_ISLNK(mode))
		r = symlinkat(target, dirfd, name);
	else
		r = mknodat(dirfd, name, mode, rdev);
	r = r < 0 ? -errno : 0;
	fs_caller_leave(&c);
	if (r < 0)
		return r;
	return fs_entry_lookup(fs_of(req), inode_of(req, parent), name, e);
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	struct fuse_entry_param e;
	int r = entry_make(req, parent, name, mode, rdev, NULL, &e);
	fs_reply_entry(req, r, &e);
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	int r = entry_make(req, parent, name, S_IFDIR | mode, 0, NULL, &e);
	fs_reply_entry(req, r, &e);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct fuse_entry_param e;
	int r = entry_make(req, parent, name, S_IFLNK, 0, link, &e);
	fs_reply_entry(req, r, &e);
}

static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct fuse_entry_param e;
	struct fs_caller c;
	char proc[64];

	odx_debug("link %llu -> %llu/%s", (unsigned long long)ino,
		  (unsigned long long)newparent, newname);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", inode_of(req, ino)->fd);
	int r = fs_caller_enter(&c, req);
	if (r == 0) {
		/* The caller's own link(2): protected_hardlinks and the
		 * directory's permissions judge the caller. */
		r = linkat(AT_FDCWD, proc, inode_of(req, newparent)->fd, newname,
			   AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	r = r < 0 ? r : fs_entry_lookup(fs_of(req), inode_of(req, newparent), newname, &e);
	fs_reply_entry(req, r, &e);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_caller c;
	odx_debug("unlink %llu/%s", (unsigned long long)parent, name);
	int r = fs_caller_enter(&c, req);
	if (r == 0) {
		r = unlinkat(inode_of(req, parent)->fd, name, 0) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	fs_reply_err(req, r);
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_caller c;
	odx_debug("rmdir %llu/%s", (unsigned long long)parent, name);
	int r = fs_caller_enter(&c, req);
	if (r == 0) {
		r = unlinkat(inode_of(req, parent)->fd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	fs_reply_err(req, r);
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	odx_debug("rename %llu/%s -> %llu/%s flags 0x%x", (unsigned long long)parent, name,
		  (unsigned long long)newparent, newname, flags);
	/* RENAME_NOREPLACE and RENAME_EXCHANGE are the backing
	 * filesystem's to honour (or refuse with EINVAL). */
	struct fs_caller c;
	int r = fs_caller_enter(&c, req);
	if (r == 0) {
		r = renameat2(inode_of(req, parent)->fd, name, inode_of(req, newparent)->fd,
			      newname, flags) < 0 ? -errno : 0;
		fs_caller_leave(&c);
	}
	fs_reply_err(req, r);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	if (fstatvfs(inode_of(req, ino)->fd, &sv) < 0)
		fs_reply_err(req, -errno);
	else
		fuse_reply_statfs(req, &sv);
}

void fs_ops_entry(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = fs_lookup;
	ops->forget = fs_forget;
	ops->forget_multi = fs_forget_multi;
	ops->getattr = fs_getattr;
	ops->setattr = fs_setattr;
	ops->readlink = fs_readlink;
	ops->mknod = fs_mknod;
	ops->mkdir = fs_mkdir;
	ops->symlink = fs_symlink;
	ops->link = fs_link;
	ops->unlink = fs_unlink;
	ops->rmdir = fs_rmdir;
	ops->rename = fs_rename;
	ops->statfs = fs_statfs;
}
