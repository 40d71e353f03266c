/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Open file handles.  A handle on a stream holds a reference to the inode's
 * shared, cached image; a handle on any other file holds a raw image of its
 * own, on a descriptor opened with the caller's flags (O_APPEND, O_DIRECT
 * and the access mode behave as on the backing filesystem).
 *
 * Locking: inode->writers is guarded by inode->lock; a handle itself is
 * used by one request at a time for open/release and is otherwise
 * read-only.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

static bool flags_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Wrap fd (ownership passes) in a raw image and a handle. */
static int handle_new_raw(struct fs *fs, struct fs_inode *in, int fd, int flags,
			  struct fs_handle **out)
{
	struct fs_handle *h = calloc(1, sizeof *h);
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	struct odx_error err;
	char path[PATH_MAX];
	odx_error_clear(&err);
	fs_inode_path(fs, in, path, sizeof path);
	int r = odx_image_open_as(&odx_backend_raw, fd, path, &fs->bcfg, &h->img, &err);
	if (r < 0) {
		free(h);
		return r;
	}
	h->inode = in;
	h->writer = flags_write(flags);
	/* open(O_TRUNC) emptied the file: tokens for its old content are void. */
	if (flags & O_TRUNC)
		odx_image_modified(h->img, 0, UINT64_MAX);
	if (h->writer) {
		pthread_mutex_lock(&in->lock);
		in->writers++;
		pthread_mutex_unlock(&in->lock);
	}
	*out = h;
	return 0;
}

int fs_handle_open(struct fs *fs, struct fs_inode *in, int flags,
		   struct fs_handle **out, bool *keep_cache)
{
	struct odx_image *img;
	struct stat st;
	bool reused;

	*keep_cache = false;
	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH) < 0)
		return -errno;
	int kind = fs_inode_classify(fs, in, &st, &img, &reused);
	if (kind < 0)
		return kind;
	if (kind == FS_KIND_STREAM) {
		if (flags_write(flags)) {
			odx_image_unref(img);
			return -EROFS;
		}
		struct fs_handle *h = calloc(1, sizeof *h);
		if (!h) {
			odx_image_unref(img);
			return -ENOMEM;
		}
		h->inode = in;
		h->img = img;
		h->stream = true;
		/* Immutable: pages cached by earlier opens of this very image
		 * are still right.  A new image (the file changed) starts
		 * with the kernel's cache dropped. */
		*keep_cache = reused;
		*out = h;
		return 0;
	}
	/* The kernel handles O_CREAT/O_EXCL before open; O_NOFOLLOW does not
	 * apply to /proc/self/fd links. */
	int fd = fs_inode_reopen(fs, in, flags & ~(O_CREAT | O_EXCL | O_NOCTTY));
	if (fd < 0)
		return fd;
	return handle_new_raw(fs, in, fd, flags, out);
}

int fs_handle_create(struct fs *fs, struct fs_inode *parent, const char *name,
		     mode_t mode, int flags, struct fuse_entry_param *e,
		     struct fs_handle **out, bool *keep_cache)
{
	struct fs_inode *in;

	*keep_cache = false;
	/* O_EXCL first, so an existing stream is never truncated or opened
	 * for writing by the create path; it goes through open's checks. */
	int fd = openat(parent->fd, name,
			(flags | O_CREAT | O_EXCL | O_CLOEXEC) & ~O_NOFOLLOW, mode);
	if (fd < 0 && (errno != EEXIST || (flags & O_EXCL)))
		return -errno;
	int r = fs_entry_lookup(fs, parent, name, e);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	in = fs_inode_of(fs, e->ino);
	if (fd >= 0)
		r = handle_new_raw(fs, in, fd, flags, out);
	else
		r = fs_handle_open(fs, in, flags, out, keep_cache);
	if (r < 0)
		fs_inode_forget(fs, in, 1);
	return r;
}

void fs_handle_close(struct fs *fs, struct fs_handle *h)
{
	if (h->writer) {
		pthread_mutex_lock(&h->inode->lock);
		h->inode->writers--;
		pthread_mutex_unlock(&h->inode->lock);
	}
	odx_image_unref(h->img);
	free(h);
}
