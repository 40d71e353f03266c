/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Directory callbacks: a DIR stream per open directory, read in the
 * kernel's buffer size; readdirplus looks every entry up (so a stream in
 * the listing shows its image size) and counts the lookup only when the
 * entry fits in the reply.
 *
 * Locking: a directory handle is used by one request at a time (the kernel
 * serialises readdir on one open directory).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

struct fs_dir {
	DIR *dp;
	off_t offset;          /* of the entry below, or the next to read */
	struct dirent *entry;  /* read but not yet sent */
};

static struct fs_dir *dir_of(const struct fuse_file_info *fi)
{
	return (struct fs_dir *)(uintptr_t)fi->fh;
}

/* Open the directory for reading as the caller (its read permission).
 * Through /proc/self/fd, not openat(fd, "."): looking up "." would also
 * need search permission on the directory, which open(2) does not. */
static int dir_open(struct fs *fs, struct fs_inode *in, struct fs_caller *c,
		    struct fs_dir **out)
{
	struct fs_dir *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	int r = fs_as_caller(c);
	if (r < 0) {
		free(d);
		return r;
	}
	int fd = fs_inode_reopen(fs, in, O_RDONLY | O_DIRECTORY);
	fs_as_daemon();
	if (fd < 0) {
		free(d);
		return fd;
	}
	if (!(d->dp = fdopendir(fd))) {
		r = -errno;
		close(fd);
		free(d);
		return r;
	}
	*out = d;
	return 0;
}

static bool dir_dot(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/* Fill buf with entries from the handle's position `offset`; returns the
 * bytes used or -errno (only when nothing was stored: entries already in
 * the buffer carry lookup counts that must reach the kernel). */
static ssize_t dir_fill(fuse_req_t req, fuse_ino_t ino, struct fs_dir *d, char *buf,
			size_t size, off_t offset, bool plus)
{
	struct fs *fs = fs_of(req);
	size_t used = 0;
	int err = 0;

	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct fuse_entry_param e;
		size_t n;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		const char *name = d->entry->d_name;
		off_t next = d->entry->d_off;
		fuse_ino_t counted = 0;
		if (!plus) {
			struct stat st = { .st_ino = d->entry->d_ino,
					   .st_mode = (mode_t)d->entry->d_type << 12 };
			n = fuse_add_direntry(req, buf + used, size - used, name, &st, next);
		} else {
			if (dir_dot(name)) {
				memset(&e, 0, sizeof e);
				e.attr.st_ino = d->entry->d_ino;
				e.attr.st_mode = (mode_t)d->entry->d_type << 12;
			} else {
				int r = fs_entry_lookup(fs, fs_inode_of(fs, ino), name, &e);
				if (r == -ENOENT) { /* gone since readdir: skip */
					d->entry = NULL;
					d->offset = next;
					continue;
				}
				if (r < 0) {
					err = -r;
					break;
				}
				counted = e.ino;
			}
			n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						   next);
		}
		if (n > size - used) {
			if (counted)
				fs_inode_forget(fs, fs_inode_of(fs, counted), 1);
			break;
		}
		used += n;
		d->entry = NULL;
		d->offset = next;
	}
	return err && used == 0 ? -err : (ssize_t)used;
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = NULL;
	struct fs_caller c;
	odx_debug("opendir %llu", (unsigned long long)ino);
	fs_caller_begin(&c, req, 0);
	int r = dir_open(fs_of(req), fs_inode_of(fs_of(req), ino), &c, &d);
	fs_caller_end(&c);
	fi->fh = (uintptr_t)d;
	if (r < 0)
		fs_reply_err(req, r);
	else
		fuse_reply_open(req, fi);
}

static void dir_reply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		      struct fuse_file_info *fi, bool plus)
{
	char *buf = malloc(size);
	ssize_t n = buf ? dir_fill(req, ino, dir_of(fi), buf, size, offset, plus) : -ENOMEM;
	if (n < 0)
		fs_reply_err(req, (int)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	odx_debug("readdir %llu at %lld", (unsigned long long)ino, (long long)offset);
	dir_reply(req, ino, size, offset, fi, false);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi)
{
	odx_debug("readdirplus %llu at %lld", (unsigned long long)ino, (long long)offset);
	dir_reply(req, ino, size, offset, fi, true);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = dir_of(fi);
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void fs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	int fd = dirfd(dir_of(fi)->dp);
	int r = datasync ? fdatasync(fd) : fsync(fd);
	fs_reply_err(req, r < 0 ? -errno : 0);
}

void fs_ops_dir(struct fuse_lowlevel_ops *ops)
{
	ops->opendir = fs_opendir;
	ops->readdir = fs_readdir;
	ops->readdirplus = fs_readdirplus;
	ops->releasedir = fs_releasedir;
	ops->fsyncdir = fs_fsyncdir;
}
