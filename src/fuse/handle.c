/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Open file handles.  A handle on a stream holds a reference to the inode's
 * shared, cached image; a handle on any other file holds a raw image of its
 * own, on a descriptor opened with the caller's flags (O_APPEND and the
 * access mode behave as on the backing filesystem).
 *
 * Opening is the caller's act: the backing file is (re)opened with the
 * caller's credentials (cred.c), so its permission bits, ACLs and
 * attributes judge the caller, and open(O_TRUNC) truncates as the caller
 * would (the backing filesystem clears setuid/setgid by its own rules).
 * Classifying a file as a stream reads it with the daemon's rights, once
 * for every user; a stream handle still needs the caller's read access.
 *
 * O_DIRECT: the backing descriptor is opened WITHOUT it.  FUSE hands us
 * write data at no particular memory alignment (after the request
 * header), and the kernel itself sends unaligned requests on O_DIRECT
 * handles (write-back of mmap'd pages at the end of a file, the
 * copy_file_range fallback), so passing O_DIRECT down would fail requests
 * the caller made correctly.  What the caller asked for is kept instead:
 * the FUSE page cache is bypassed by the kernel, and on our side the raw
 * image writes each request through to the device and drops the range from
 * the backing page cache (ODX_IMG_WRITE_THROUGH, raw.c), and reads drop
 * what they brought in (ops-file.c), so the data is neither cached twice
 * nor left only in memory.
 *
 * Locking: inode->writers and a handle's `writer` are guarded by
 * inode->lock; a handle itself is used by one request at a time for
 * open/release and is otherwise read-only (but for its sink: fs.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
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
	h->flags = flags;
	h->writer = flags_write(flags);
	atomic_init(&h->refs, 1);
	if (flags & O_DIRECT)
		h->img->flags |= ODX_IMG_WRITE_THROUGH;
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

/* Flags for the backing descriptor: the kernel handled O_CREAT/O_EXCL
 * before open, O_NOFOLLOW does not apply to /proc/self/fd links, and
 * O_DIRECT is kept by the raw image instead (see the file comment). */
static int backing_flags(int flags)
{
	return flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT);
}

/* Reopen the inode with the caller's credentials. */
static int reopen_as_caller(struct fs *fs, struct fs_inode *in, int flags,
			    struct fs_caller *c)
{
	int r = fs_as_caller(c);
	if (r < 0)
		return r;
	int fd = fs_inode_reopen(fs, in, flags);
	fs_as_daemon();
	return fd;
}

/* A chain view shows the data of every member of its chain: the caller
 * must be able to read each of them, as the kernel would judge opening it
 * (by name in the view's directory, as the caller; the file opened must be
 * the member the view was built from). */
static int view_may_read(struct odx_image *img, struct fs_caller *c)
{
	const char *dir;
	const struct odx_view_member *m;
	size_t n = odx_chain_view_members(img, &dir, &m);
	int r = fs_as_caller(c);
	if (r < 0)
		return r;
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	r = dfd < 0 ? -errno : 0;
	for (size_t k = 0; r == 0 && k + 1 < n; k++) {
		struct stat st;
		int fd = openat(dfd, m[k].name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd < 0) {
			r = -errno;
			break;
		}
		if (fstat(fd, &st) < 0)
			r = -errno;
		else if (st.st_dev != m[k].img->dev || st.st_ino != m[k].img->ino)
			r = -ESTALE;
		close(fd);
	}
	if (dfd >= 0)
		close(dfd);
	fs_as_daemon();
	return r;
}

/* Whether the caller may read the file: a stream image is shared and was
 * opened with the daemon's rights, so each open proves the caller's own
 * access by opening the backing file as the caller.  A root caller acts
 * with the daemon's rights anyway (fs_as_caller): nothing to prove. */
int fs_handle_may_read(struct fs *fs, struct fs_inode *in, struct odx_image *img,
		       struct fs_caller *c)
{
	if (c->uid == 0)
		return 0;
	int fd = reopen_as_caller(fs, in, O_RDONLY, c);
	if (fd < 0)
		return fd;
	close(fd);
	return odx_image_is_view(img) ? view_may_read(img, c) : 0;
}

int fs_handle_open(struct fs *fs, struct fs_inode *in, int flags, struct fs_caller *c,
		   struct fs_handle **out, bool *keep_cache)
{
	struct odx_image *img;
	struct stat st;
	uint64_t gen;
	bool reused;

	*keep_cache = false;
	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH) < 0)
		return -errno;
	int kind = fs_inode_classify(fs, in, &st, &img, &gen, &reused);
	if (kind < 0)
		return kind;
	if (kind == FS_KIND_SINK)
		return -EBUSY; /* a stream being written: its one handle writes it */
	if (kind == FS_KIND_STREAM) {
		int r = flags_write(flags) ? -EROFS : fs_handle_may_read(fs, in, img, c);
		struct fs_handle *h = r == 0 ? calloc(1, sizeof *h) : NULL;
		if (!h) {
			odx_image_unref(img);
			return r < 0 ? r : -ENOMEM;
		}
		h->inode = in;
		h->img = img;
		h->flags = O_RDONLY;
		atomic_init(&h->refs, 1);
		h->stream = true;
		h->gen = gen;
		/* Immutable: pages cached by earlier opens of this very image
		 * are still right.  A new image (the file changed) starts
		 * with the kernel's cache dropped. */
		*keep_cache = reused;
		*out = h;
		return 0;
	}
	int fd = reopen_as_caller(fs, in, backing_flags(flags), c);
	if (fd < 0)
		return fd;
	/* open(O_TRUNC) truncated as the caller, so the backing filesystem
	 * may have dropped setuid/setgid: the kernel must not keep the old
	 * mode (fs_caller_end). */
	if ((flags & O_TRUNC) && (st.st_mode & (S_ISUID | S_ISGID)))
		c->dropped = true;
	return handle_new_raw(fs, in, fd, flags, out);
}

int fs_handle_create(struct fs *fs, struct fs_inode *parent, const char *name,
		     mode_t mode, int flags, struct fs_caller *c, struct fuse_entry_param *e,
		     struct fs_handle **out, bool *keep_cache)
{
	struct fs_inode *in;

	*keep_cache = false;
	/* O_EXCL first, so an existing stream is never truncated or opened
	 * for writing by the create path; it goes through open's checks.
	 * The new file is the caller's: owner, group and mode as the backing
	 * filesystem gives them to the caller. */
	int fd = fs_as_caller(c);
	if (fd == 0) {
		fd = fs_openat(fs, parent->fd, name,
			       (backing_flags(flags) | O_CREAT | O_EXCL | O_CLOEXEC) & ~O_NOFOLLOW,
			       mode);
		fs_as_daemon();
	}
	if (fd < 0 && (fd != -EEXIST || (flags & O_EXCL)))
		return fd;
	int r = fs_entry_lookup(fs, parent, name, e);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	in = fs_inode_of(fs, e->ino);
	if (fd >= 0) {
		/* new and empty: may become a stream written by an offloaded
		 * copy (sink.c) */
		pthread_mutex_lock(&in->lock);
		in->created = true;
		pthread_mutex_unlock(&in->lock);
		r = handle_new_raw(fs, in, fd, flags, out);
	}
	else
		r = fs_handle_open(fs, in, flags, c, out, keep_cache);
	if (r < 0)
		fs_inode_forget(fs, in, 1);
	return r;
}

void fs_handle_drop(struct fs *fs, struct fs_handle *h)
{
	if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
		fs_handle_close(fs, h);
}

void fs_handle_close(struct fs *fs, struct fs_handle *h)
{
	fs_sink_release(fs, h);
	odx_image_unref(atomic_load(&h->sink));
	/* under the lock: a finished stream's handle stopped counting as a
	 * writer there (sink.c) */
	pthread_mutex_lock(&h->inode->lock);
	if (h->writer)
		h->inode->writers--;
	pthread_mutex_unlock(&h->inode->lock);
	odx_image_unref(h->img);
	free(h);
}
