/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Streams written by offloaded copies: a synthetic full backup is an
 * offloaded copy whose destination is a new stream (odxfs(8), STREAM
 * DESTINATIONS).
 *
 * A file becomes a stream being written (FS_KIND_SINK, in->sink: the sink
 * backend) in two ways:
 *   - implicitly: it was created empty through this mount, its name ends
 *     in ".data", and an offloaded copy (copy_file_range, an offload write
 *     ioctl) of an image of the mount writes into it: the stream takes the
 *     source's codec and is finished when the handle is closed (flush),
 *     if by then it holds a whole copy of its source (same offsets, the
 *     source's size reached); else it is left as NAME.partial, torn, and
 *     the close fails with EIO;
 *   - explicitly: ODX_IOC_STREAM_BEGIN on a handle of a new empty file
 *     (odxctl merge), any name, the codec asked for; finished only by
 *     ODX_IOC_STREAM_FINISH, which reports errors and counters.  Closed
 *     without it, it is left as NAME.partial.
 * Either way the backing file is renamed NAME.partial at the start (as
 * virtnbdbackup writes its backups: never a chain member while written,
 * and a crash of the daemon or the copier leaves only the .partial),
 * written frame by frame, fsynced, and renamed back to NAME (never over a
 * file that took the name meanwhile) with NAME.chksum beside it.  The
 * renames are the caller's acts (its permissions on the directory).
 *
 * While written, the file takes no plain writes and has nothing to read
 * (EBUSY), and no other handle may open it (EBUSY): the one handle that
 * began it writes it.  Finished, the inode is classified again: the
 * stream it now is.
 *
 * Locking: in->lock guards the inode's sink fields; the sink image has
 * its own lock for the writing itself.  Finishing (fsync, the checksum
 * read, renames) runs without in->lock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

static bool name_is_data(const char *name)
{
	size_t n = strlen(name);
	return n > 5 && strcmp(name + n - 5, ".data") == 0;
}

/* Where the inode is in the backing tree: its directory (a new O_PATH
 * descriptor) and name, as its last lookup saw them and still true now. */
static int inode_place(struct fs *fs, struct fs_inode *in, int *dirfd, char *name, size_t len)
{
	struct fs_itable *t = &fs->itable;
	struct fs_inode *parent = NULL;
	pthread_mutex_lock(&t->lock);
	if (in->name && strlen(in->name) < len) {
		snprintf(name, len, "%s", in->name);
		/* the parent of its last lookup, if that inode is still there
		 * (a rename may have left it behind, and it may be gone): the
		 * table is walked, as reclaim.c does; once per stream */
		if (in->parent == FUSE_ROOT_ID)
			parent = &fs->root;
		for (size_t b = 0; !parent && b < t->nbuckets; b++)
			for (struct fs_inode *p = t->buckets[b]; p && !parent; p = p->next)
				if ((fuse_ino_t)(uintptr_t)p == in->parent &&
				    p->serial == in->parent_serial)
					parent = p;
	}
	int fd = parent ? dup(parent->fd) : -1;
	pthread_mutex_unlock(&t->lock);
	if (fd < 0)
		return -ENOENT;
	struct stat st;
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != in->dev ||
	    st.st_ino != in->ino) {
		close(fd);
		return -ENOENT;
	}
	*dirfd = fd;
	return 0;
}

/* Make in (h's file) a stream being written.  in->lock held. */
static int begin_locked(struct fs *fs, struct fs_inode *in, struct fs_handle *h,
			struct fs_caller *c, const struct odx_sink_image_opts *o, bool explicit_,
			struct odx_error *err)
{
	char path[PATH_MAX], name[NAME_MAX + 1], partial[NAME_MAX + 1];
	struct stat st;
	fs_inode_path(fs, in, path, sizeof path);
	if (in->kind == FS_KIND_SINK || atomic_load(&h->sink))
		return odx_error_set(err, EBUSY, "%s: already a stream being written", path);
	if (!h->writer || in->writers != 1)
		return odx_error_set(err, EBUSY,
				     "%s: a stream is written through one handle; "
				     "others have the file open for writing",
				     path);
	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH) < 0)
		return odx_error_set(err, errno, "%s: %s", path, strerror(errno));
	/* empty; or sized by ftruncate but holding no data (cp and odxctl
	 * copy size the destination first): that size is the stream's */
	if (!S_ISREG(st.st_mode) || (st.st_size != 0 && st.st_blocks != 0) || st.st_nlink != 1)
		return odx_error_set(err, EINVAL,
				     "%s: a stream is written into a new, empty file "
				     "(one name, no data)",
				     path);
	int dirfd;
	int r = inode_place(fs, in, &dirfd, name, sizeof name);
	if (r < 0)
		return odx_error_set(err, -r, "%s: where it is cannot be told (renamed?)", path);
	if (snprintf(partial, sizeof partial, "%s.partial", name) >= (int)sizeof partial) {
		close(dirfd);
		return odx_error_set(err, ENAMETOOLONG, "%s.partial: name too long", path);
	}
	/* The caller's act: its permissions on the directory. */
	r = fs_as_caller(c);
	if (r == 0) {
		r = renameat2(dirfd, name, dirfd, partial, RENAME_NOREPLACE) < 0 ? -errno : 0;
		fs_as_daemon();
	}
	if (r < 0) {
		close(dirfd);
		return odx_error_set(err, -r, "%s: renaming it to %s while it is written: %s", path,
				     partial, strerror(-r));
	}
	int fd = fs_inode_reopen(fs, in, O_RDWR);
	struct odx_image *img = NULL;
	char ppath[PATH_MAX + 8];
	snprintf(ppath, sizeof ppath, "%s.partial", path);
	if (fd >= 0 && st.st_size && ftruncate(fd, 0) < 0) {
		r = odx_error_set(err, errno, "%s: %s", ppath, strerror(errno));
		close(fd);
	} else {
		r = fd < 0 ? odx_error_set(err, -fd, "%s: %s", ppath, strerror(-fd))
			   : odx_sink_image_open(fd, ppath, o, &img, err);
	}
	if (r == 0 && st.st_size)
		r = odx_image_truncate(img, (uint64_t)st.st_size);
	if (r < 0 && img) {
		odx_image_unref(img);
		img = NULL;
	}
	char *keep = r == 0 ? strdup(name) : NULL;
	if (r == 0 && !keep) {
		odx_image_unref(img);
		r = odx_error_set(err, ENOMEM, "out of memory");
	}

	if (r < 0) {
		/* back as it was: its size, its name */
		int tfd = st.st_size ? fs_inode_reopen(fs, in, O_WRONLY) : -1;
		if (tfd >= 0) {
			if (ftruncate(tfd, st.st_size) < 0)
				odx_debug("%s: size not restored: %s", ppath, strerror(errno));
			close(tfd);
		}
		if (fs_as_caller(c) == 0) {
			renameat2(dirfd, partial, dirfd, name, RENAME_NOREPLACE);
			fs_as_daemon();
		}
		close(dirfd);
		return r;
	}
	in->kind = FS_KIND_SINK;
	in->sink = img;
	in->sink_explicit = explicit_;
	in->sink_dirfd = dirfd;
	in->sink_name = keep;
	in->created = false;
	in->gen++;
	atomic_store_explicit(&h->sink, odx_image_ref(img), memory_order_release);
	/* what it held as a raw file is gone: tokens on it too */
	odx_image_modified(h->img, 0, UINT64_MAX);
	odx_debug("%s: written as a stream (%s)", ppath, explicit_ ? "ODX_IOC_STREAM_BEGIN"
								  : "offloaded copy into a new .data file");
	return 0;
}

struct odx_image *fs_sink_dst(struct fs *fs, struct fs_handle *h, struct fs_caller *c,
			      struct odx_error *err)
{
	struct odx_image *s = atomic_load_explicit(&h->sink, memory_order_acquire);
	if (s)
		return s;
	struct fs_inode *in = h->inode;
	char name[NAME_MAX + 1] = "";
	pthread_mutex_lock(&fs->itable.lock);
	if (in->name)
		snprintf(name, sizeof name, "%s", in->name);
	pthread_mutex_unlock(&fs->itable.lock);
	if (!name_is_data(name))
		return h->img;
	pthread_mutex_lock(&in->lock);
	int r = 0;
	struct stat st;
	/* A file that was written meanwhile (data, another writer) is not
	 * meant to become a stream: it stays what it is, and the copy writes
	 * raw bytes as it would anywhere else. */
	if (in->created && in->kind != FS_KIND_SINK &&
	    (fstatat(in->fd, "", &st, AT_EMPTY_PATH) < 0 || st.st_blocks != 0 || !h->writer ||
	     in->writers != 1))
		in->created = false;
	if (in->created && in->kind != FS_KIND_SINK) {
		const struct odx_sink_image_opts o = {.codec = -1};
		r = begin_locked(fs, in, h, c, &o, false, err);
	}
	pthread_mutex_unlock(&in->lock);
	return r < 0 ? NULL : fs_handle_img(h);
}

int fs_sink_begin(struct fs *fs, struct fs_handle *h, struct fs_caller *c, int codec,
		  int level, struct odx_error *err)
{
	struct fs_inode *in = h->inode;
	const struct odx_sink_image_opts o = {.codec = codec, .level = level};
	pthread_mutex_lock(&in->lock);
	int r = begin_locked(fs, in, h, c, &o, true, err);
	pthread_mutex_unlock(&in->lock);
	return r;
}

/* The inode is no stream being written any more: what it is now is
 * decided again.  in->lock held. */
static void sink_drop_locked(struct fs *fs, struct fs_inode *in)
{
	odx_image_unref(in->sink);
	in->sink = NULL;
	if (in->sink_dirfd >= 0)
		close(in->sink_dirfd);
	in->sink_dirfd = -1;
	free(in->sink_name);
	in->sink_name = NULL;
	in->kind = FS_KIND_UNKNOWN;
	in->gen++;
	fs_notify_inval(fs, fs_inode_ino(fs, in));
}

static void log_left(struct fs_inode *in, const char *why)
{
	odx_log(LOG_WARNING, "%s.partial: left unfinished (a torn stream, never a chain member): %s",
		in->sink_name ? in->sink_name : "?", why);
}

int fs_sink_finish(struct fs *fs, struct fs_handle *h, struct fs_caller *c, bool explicit_call,
		   uint64_t size, struct odx_sink_stats *st, struct odx_error *err)
{
	struct fs_inode *in = h->inode;
	struct odx_image *img = atomic_load_explicit(&h->sink, memory_order_acquire);
	if (!img)
		return explicit_call ? odx_error_set(err, EINVAL, "not a stream being written") : 0;
	pthread_mutex_lock(&in->lock);
	if (in->kind != FS_KIND_SINK || in->sink != img || in->sink_explicit != explicit_call) {
		pthread_mutex_unlock(&in->lock);
		/* finished already, or explicit and closed without finishing */
		return explicit_call ? odx_error_set(err, EINVAL, "not a stream being written") : 0;
	}
	int r = 0;
	uint64_t have;
	if (!explicit_call && !odx_sink_image_whole(img, &have)) {
		char why[160];
		snprintf(why, sizeof why,
			 "the copy into it ended at byte %llu, not a whole copy of one image",
			 (unsigned long long)have);
		log_left(in, why);
		sink_drop_locked(fs, in);
		if (h->writer) {
			h->writer = false;
			in->writers--;
		}
		pthread_mutex_unlock(&in->lock);
		return odx_error_set(err, EIO, "left unfinished");
	}
	char partial[NAME_MAX + 8];
	snprintf(partial, sizeof partial, "%s.partial", in->sink_name);
	/* The long part (the last frames, fsync, the .chksum read of the
	 * whole file, renames) without the inode's lock, which stat and
	 * lookups of the file need.  The sink's fields stay: only this
	 * handle's requests, its release and the inode's end (which both
	 * come after them) drop them, and other opens get EBUSY meanwhile. */
	const char *name = in->sink_name;
	int dirfd = in->sink_dirfd;
	pthread_mutex_unlock(&in->lock);
	r = odx_sink_image_finish(img, explicit_call ? size : have, st, err);
	if (r == 0 && (r = fs_as_caller(c)) == 0) {
		r = odx_stream_publish_at(img->fd, dirfd, partial, name, true, true, err);
		fs_as_daemon();
	}
	pthread_mutex_lock(&in->lock);
	if (r < 0)
		log_left(in, err->msg);
	sink_drop_locked(fs, in);
	/* Its handle writes no more (the finished sink refuses): the file
	 * may be classified as the stream it is while the handle is still
	 * open (its release comes after close(2) has returned). */
	if (h->writer) {
		h->writer = false;
		in->writers--;
	}
	pthread_mutex_unlock(&in->lock);
	return r;
}

void fs_sink_release(struct fs *fs, struct fs_handle *h)
{
	struct odx_image *img = atomic_load(&h->sink);
	if (!img)
		return;
	struct fs_inode *in = h->inode;
	pthread_mutex_lock(&in->lock);
	if (in->kind == FS_KIND_SINK && in->sink == img) {
		log_left(in, in->sink_explicit ? "closed before ODX_IOC_STREAM_FINISH"
					       : "closed without a flush");
		sink_drop_locked(fs, in);
	}
	pthread_mutex_unlock(&in->lock);
}

void fs_sink_inode_free(struct fs *fs, struct fs_inode *in)
{
	(void)fs;
	if (!in->sink)
		return;
	log_left(in, "the daemon let go of it");
	odx_image_unref(in->sink);
	in->sink = NULL;
	if (in->sink_dirfd >= 0)
		close(in->sink_dirfd);
	free(in->sink_name);
	in->sink_name = NULL;
}
