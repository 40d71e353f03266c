/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The inode table and how each regular file is served.
 *
 * Inodes are keyed by backing (dev, ino) in a chained hash table; the FUSE
 * inode number is the address of the struct (the root is FUSE_ROOT_ID).
 * An inode lives while the kernel holds lookups on it (nlookup, counted by
 * lookup/create/mkdir/... replies, dropped by forget).
 *
 * Classification: a regular file is a stream when its content starts with
 * a valid meta frame (odx_image_probe), raw otherwise.  The verdict is
 * cached in the inode with the backing file's mtime and size; a change of
 * either throws it away.  A stream's verdict comes with what stat shows
 * (image size, data blocks) and the opened (indexed) image, which the
 * index cache (icache.c) keeps while its bounds allow: an evicted stream is
 * still a stream and stats without indexing; the next open indexes it
 * again, and one whose descriptor was closed while idle gets it back
 * (resume), both from the inode's O_PATH descriptor.
 *
 * Damage policy (odxfs-stream(5), "Damage"; -o salvage): a stream that
 * does not open is FS_KIND_BROKEN (listed as its backing file, opening it
 * fails with EIO); one that opens with a problem (torn, or damaged and
 * salvaged) is served and logged; a strict stream in which a read found a
 * damaged chunk is marked `damaged`: every later open fails with EIO and
 * the kernel's cached pages of it are dropped.  Each is logged once, in
 * one line naming the file, the offset, the problem and the odxctl command
 * that shows or repairs it.
 *
 * Locking: itable.lock guards the hash chains and every nlookup; in->lock
 * guards the classification fields of one inode and is held while a stream
 * is indexed: a second request for that inode waits, requests for other
 * inodes (and forget, which takes only the table lock) proceed, since no
 * other lock is held meanwhile (lookup and readdirplus drop the table lock
 * before they stat; the index cache's lock is only taken for list updates,
 * never across indexing).  The table lock is never taken while holding an
 * inode lock; the index cache's lock nests inside inode locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

#define ITABLE_MIN_BUCKETS 1024

int fs_itable_init(struct fs_itable *t)
{
	pthread_mutex_init(&t->lock, NULL);
	t->nbuckets = ITABLE_MIN_BUCKETS;
	t->count = 0;
	t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
	return t->buckets ? 0 : -ENOMEM;
}

static size_t itable_slot(const struct fs_itable *t, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;
	h ^= h >> 29;
	return (size_t)h & (t->nbuckets - 1);
}

/* Drop the inode's cached image, if any.  in->lock held. */
static void inode_drop_image(struct fs *fs, struct fs_inode *in)
{
	if (!in->img)
		return;
	fs_icache_remove(fs, in);
	odx_image_unref(in->img);
	in->img = NULL;
}

static void inode_free(struct fs *fs, struct fs_inode *in)
{
	/* Unreachable by requests, but the index cache may be trimming it. */
	pthread_mutex_lock(&in->lock);
	inode_drop_image(fs, in);
	fs_sink_inode_free(fs, in);
	pthread_mutex_unlock(&in->lock);
	close(in->fd);
	pthread_mutex_destroy(&in->lock);
	free(in->name);
	free(in);
}

void fs_itable_destroy(struct fs *fs)
{
	struct fs_itable *t = &fs->itable;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct fs_inode *in = t->buckets[i];
		while (in) {
			struct fs_inode *next = in->next;
			inode_free(fs, in);
			in = next;
		}
	}
	free(t->buckets);
	pthread_mutex_destroy(&t->lock);
}

/* Double the table when it is full; chains keep their order. */
static void itable_grow(struct fs_itable *t)
{
	size_t n = t->nbuckets * 2;
	struct fs_inode **b = calloc(n, sizeof *b);
	if (!b)
		return; /* longer chains, still correct */
	struct fs_itable old = *t;
	t->buckets = b;
	t->nbuckets = n;
	for (size_t i = 0; i < old.nbuckets; i++) {
		struct fs_inode *in = old.buckets[i];
		while (in) {
			struct fs_inode *next = in->next;
			size_t s = itable_slot(t, in->dev, in->ino);
			in->next = b[s];
			b[s] = in;
			in = next;
		}
	}
	free(old.buckets);
}

struct fs_inode *fs_inode_of(struct fs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs->root;
	return (struct fs_inode *)(uintptr_t)ino;
}

/* Remember where in was looked up (table lock held); a failed strdup
 * keeps the old name, which the kernel then may not find: harmless. */
static void inode_seen(struct fs *fs, struct fs_inode *in, struct fs_inode *parent,
		       const char *name)
{
	in->stamp = ++fs->itable.clock;
	in->parent = fs_inode_ino(fs, parent);
	in->parent_serial = parent->serial;
	if (in->name && strcmp(in->name, name) == 0)
		return;
	char *n = strdup(name);
	if (n) {
		free(in->name);
		in->name = n;
	}
}

int fs_inode_lookup(struct fs *fs, int fd, const struct stat *st, struct fs_inode *parent,
		    const char *name, struct fs_inode **out)
{
	struct fs_itable *t = &fs->itable;
	struct fs_inode *in;

	pthread_mutex_lock(&t->lock);
	size_t s = itable_slot(t, st->st_dev, st->st_ino);
	for (in = t->buckets[s]; in; in = in->next)
		if (in->ino == st->st_ino && in->dev == st->st_dev)
			break;
	if (in) {
		in->nlookup++;
		inode_seen(fs, in, parent, name);
		pthread_mutex_unlock(&t->lock);
		close(fd);
		*out = in;
		return 0;
	}
	in = calloc(1, sizeof *in);
	if (!in) {
		pthread_mutex_unlock(&t->lock);
		close(fd);
		return -ENOMEM;
	}
	in->fd = fd;
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	in->type = st->st_mode & S_IFMT;
	in->nlookup = 1;
	pthread_mutex_init(&in->lock, NULL);
	in->serial = ++t->clock;
	inode_seen(fs, in, parent, name);
	in->next = t->buckets[s];
	t->buckets[s] = in;
	if (++t->count > t->nbuckets)
		itable_grow(t);
	size_t count = t->count;
	pthread_mutex_unlock(&t->lock);
	fs_reclaim_kick(fs, count);
	*out = in;
	return 0;
}

void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n)
{
	struct fs_itable *t = &fs->itable;

	if (in == &fs->root)
		return;
	pthread_mutex_lock(&t->lock);
	if (n > in->nlookup) {
		odx_log(LOG_ERR, "inode %llu: forget of %llu lookups, only %llu held",
			(unsigned long long)in->ino, (unsigned long long)n,
			(unsigned long long)in->nlookup);
		n = in->nlookup;
	}
	in->nlookup -= n;
	if (in->nlookup) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	struct fs_inode **pp = &t->buckets[itable_slot(t, in->dev, in->ino)];
	while (*pp != in)
		pp = &(*pp)->next;
	*pp = in->next;
	t->count--;
	pthread_mutex_unlock(&t->lock);
	inode_free(fs, in);
}

fuse_ino_t fs_inode_ino(struct fs *fs, struct fs_inode *in)
{
	return in == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
}

int fs_openat(struct fs *fs, int dirfd, const char *name, int flags, mode_t mode)
{
	int fd = openat(dirfd, name, flags, mode);
	if (fd < 0 && fs_retry_fds(fs, -errno))
		fd = openat(dirfd, name, flags, mode);
	return fd < 0 ? -errno : fd;
}

int fs_inode_reopen(struct fs *fs, struct fs_inode *in, int flags)
{
	char name[32];
	snprintf(name, sizeof name, "%d", in->fd);
	return fs_openat(fs, fs->proc_fd, name, (flags & ~O_NOFOLLOW) | O_CLOEXEC, 0);
}

void fs_inode_path(struct fs *fs, struct fs_inode *in, char *buf, size_t len)
{
	char name[32];
	snprintf(name, sizeof name, "%d", in->fd);
	ssize_t n = readlinkat(fs->proc_fd, name, buf, len - 1);
	if (n < 0)
		snprintf(buf, len, "inode %llu", (unsigned long long)in->ino);
	else
		buf[n] = '\0';
}

static bool inode_same_file(const struct fs_inode *in, const struct stat *st)
{
	return in->seen_size == st->st_size &&
	       in->seen_mtime.tv_sec == st->st_mtim.tv_sec &&
	       in->seen_mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Failures that say nothing about the file: the verdict is left undecided
 * and the request fails, a later one tries again. */
static bool errno_transient(int r)
{
	/* ESTALE: a chain member changed while its view was built */
	return r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -EINTR || r == -EAGAIN ||
	       r == -ESTALE;
}

/* The modification time of the directory holding the inode's file (its
 * path now), or false.  A chain verdict depends on its directory. */
static bool inode_dir_mtime(struct fs *fs, struct fs_inode *in, struct timespec *out)
{
	char path[PATH_MAX], dir[PATH_MAX];
	struct stat st;
	fs_inode_path(fs, in, path, sizeof path);
	if (path[0] != '/') /* not a path: the descriptor's link unreadable */
		return false;
	odx_chain_split_path(path, dir, sizeof dir);
	if (stat(dir, &st) < 0)
		return false;
	*out = st.st_mtim;
	return true;
}

/* Whether the stream just opened as img is shown as a chain view: an
 * incremental or differential, with -o chain on, and not a ".partial"
 * file (a backup still being written, or torn by a crash: never a chain
 * member, shown standalone). */
static bool inode_is_chain_member(struct fs *fs, struct odx_image *img, const char *path)
{
	if (!fs->opt.chain || img->ops != &odx_backend_stream || odx_chain_name_is_partial(path))
		return false;
	return odx_stream_info(img->priv)->incremental;
}

/* Whether a verdict about the inode's chain no longer holds: its view
 * went stale (a member removed, replaced or changed), or its chain did not
 * resolve and files have come or gone in the directory since. */
static bool inode_chain_changed(struct fs *fs, struct fs_inode *in)
{
	struct timespec now;
	char path[PATH_MAX];
	if (in->kind == FS_KIND_STREAM && in->img && odx_image_is_view(in->img))
		return odx_image_stale(in->img) != NULL;
	/* A standalone incremental that is a chain member now: a ".partial"
	 * renamed to its final name when its backup completed (the same
	 * file, its size and time unchanged). */
	if (in->kind == FS_KIND_STREAM && in->img && fs->opt.chain &&
	    in->img->ops == &odx_backend_stream && odx_stream_info(in->img->priv)->incremental) {
		fs_inode_path(fs, in, path, sizeof path);
		return inode_is_chain_member(fs, in->img, path);
	}
	if (in->kind != FS_KIND_BROKEN || !in->chain_failed)
		return false;
	return inode_dir_mtime(fs, in, &now) &&
	       (now.tv_sec != in->chain_dir_mtime.tv_sec ||
		now.tv_nsec != in->chain_dir_mtime.tv_nsec);
}

/* The "log once" key of the file version the verdict is about. */
static uint64_t inode_version(const struct fs_inode *in)
{
	return ((uint64_t)in->seen_mtime.tv_sec * 1000000000u + (uint64_t)in->seen_mtime.tv_nsec) ^
	       ((uint64_t)in->seen_size << 1);
}

/* The one line about a stream that does not open (r < 0, *err says why)
 * or opened with a problem, once per file version (fs_log_first_time).
 * The messages of the stream library start with the file name. */
static void inode_log_open(struct fs *fs, struct fs_inode *in, int r, const struct odx_error *err)
{
	char path[PATH_MAX];
	int kind = ODX_PROBLEM_NONE;
	const char *what = r < 0 ? (err->msg[0] ? err->msg : strerror(-r))
				 : odx_image_problem(in->img, &kind);

	fs_inode_path(fs, in, path, sizeof path);
	if (r == 0 && !what) {
		odx_debug("%s: %s image", path, in->ops->name);
		return;
	}
	if (!fs_log_first_time(in->dev, in->ino, inode_version(in),
			       r < 0 ? FS_LOG_BROKEN : FS_LOG_PROBLEM))
		return;
	bool named = strncmp(what, path, strlen(path)) == 0;
	const char *pre = named ? "" : path, *sep = named ? "" : ": ";
	if (r < 0 && in->chain_failed)
		odx_log(LOG_ERR, "%s%s%s; opening it fails with EIO until the chain is whole; "
				 "`odxctl check --chain %s` checks the whole chain",
			pre, sep, what, path);
	else if (r < 0 && fs->opt.salvage)
		odx_log(LOG_ERR, "%s%s%s; not served: opening it fails with EIO (nothing in it "
				 "can be trusted); `odxctl check %s` lists the problems",
			pre, sep, what, path);
	else if (r < 0)
		odx_log(LOG_ERR, "%s%s%s; not served (strict): opening it fails with EIO; "
				 "`odxctl check %s` lists the problems, `odxctl repair %s -o OUT` "
				 "rewrites a stream whose only problems are its tail, dataSize, stop "
				 "or trailer; -o salvage serves its intact frames",
			pre, sep, what, path, path);
	else if (kind == ODX_PROBLEM_TORN)
		odx_log(LOG_WARNING, "%s%s%s; served in part, up to its last complete frame "
				     "(what no frame covers reads as zeros); `odxctl repair %s -o "
				     "OUT` writes a complete stream of those frames",
			pre, sep, what, path);
	else if (kind == ODX_PROBLEM_DAMAGED)
		odx_log(LOG_WARNING, "%s%s%s; served in part (salvage): its damaged ranges read "
				     "with EIO; `odxctl check %s` lists the problems",
			pre, sep, what, path);
	else
		odx_log(LOG_WARNING, "%s%s%s; served whole (salvage), the problem walked past; "
				     "`odxctl check %s` lists the problems",
			pre, sep, what, path);
}

/* Open (index) the inode's stream as in->img and count it in the cache:
 * on fd (O_RDONLY, ownership passes), or on a reopen of the inode when fd
 * is -1.  `again`: it was evicted.  in->lock held.  Returns 0 or -errno,
 * *err saying why a stream does not open. */
static int inode_open_image(struct fs *fs, struct fs_inode *in, int fd, bool again,
			    struct odx_error *err)
{
	char path[PATH_MAX];
	struct odx_image *img;
	struct stat st;
	int r;

	fs_inode_path(fs, in, path, sizeof path);
	for (int tries = 0;; tries++) {
		if (fd < 0 && (fd = fs_inode_reopen(fs, in, O_RDONLY)) < 0)
			return fd;
		odx_error_clear(err);
		r = odx_image_open_as(in->ops, fd, path, &fs->bcfg, &img, err);
		fd = -1; /* consumed */
		in->chain_failed = false;
		if (r == 0 && inode_is_chain_member(fs, img, path)) {
			/* The disk at its checkpoint: its stream over its
			 * parent's view (odx_chain_view_open takes img).
			 * When its chain does not resolve, stat still shows
			 * the disk's size, so handles opened before it broke
			 * read ESTALE or EIO, not a shorter file. */
			uint64_t vsize = odx_stream_info(img->priv)->virtual_size;
			r = odx_chain_view_open(path, img, &fs->bcfg, &img, err);
			in->chain_failed = r < 0;
			if (r < 0) {
				in->img_size = (off_t)vsize;
				in->img_blocks = 0;
			}
		}
		if (r == 0)
			break;
		/* The library's own duplicate of the descriptor can fail too. */
		if (tries || !fs_retry_fds(fs, r))
			return r;
	}
	memset(&st, 0, sizeof st);
	odx_image_getattr(img, &st);
	in->img_size = st.st_size;
	in->img_blocks = st.st_blocks;
	in->img = img;
	fs_icache_add(fs, in, again);
	return 0;
}

/* Probe and, for a stream, open and index it.  Called with in->lock held
 * and in->kind UNKNOWN; sets in->kind, or leaves it UNKNOWN and returns a
 * transient -errno. */
static int inode_classify_locked(struct fs *fs, struct fs_inode *in, const struct stat *st)
{
	const struct odx_backend_ops *ops = &odx_backend_raw;
	struct odx_error err;

	in->seen_size = st->st_size;
	in->seen_mtime = st->st_mtim;
	if (st->st_size < ODX_FRAME_HEADER_LEN || in->writers) {
		in->kind = FS_KIND_RAW;
		return 0;
	}
	int fd = fs_inode_reopen(fs, in, O_RDONLY);
	if (fd < 0 && errno_transient(fd))
		return fd;
	if (fd < 0) {
		/* Unreadable to us: it can only be passed through. */
		odx_debug("inode %llu: not probed: %s", (unsigned long long)in->ino,
			  strerror(-fd));
		in->kind = FS_KIND_RAW;
		return 0;
	}
	int r = odx_image_probe(fd, st, &ops);
	if (r < 0 || ops == &odx_backend_raw) {
		close(fd);
		if (errno_transient(r))
			return r;
		in->kind = FS_KIND_RAW;
		return 0;
	}
	in->ops = ops;
	r = inode_open_image(fs, in, fd, false, &err);
	if (r < 0 && errno_transient(r))
		return r;
	in->kind = r < 0 ? FS_KIND_BROKEN : FS_KIND_STREAM;
	if (r < 0 && in->chain_failed)
		inode_dir_mtime(fs, in, &in->chain_dir_mtime); /* else stays broken */
	inode_log_open(fs, in, r, &err);
	return 0;
}

/* Confirm in->kind for the file as *st shows it, or decide it anew.
 * in->lock held.  *decided: a verdict of an earlier request holds. */
static int inode_settle_locked(struct fs *fs, struct fs_inode *in, const struct stat *st,
			       bool *decided)
{
	if (in->kind == FS_KIND_SINK) {
		/* being written by the daemon itself: it changes, and stays */
		*decided = true;
		return 0;
	}
	if (in->kind != FS_KIND_UNKNOWN && !in->writers && inode_chain_changed(fs, in)) {
		/* Its pages show the old chain: the kernel drops them. */
		inode_drop_image(fs, in);
		in->kind = FS_KIND_UNKNOWN;
		in->gen++;
		fs_notify_inval(fs, fs_inode_ino(fs, in));
	}
	if (in->kind != FS_KIND_UNKNOWN && !inode_same_file(in, st)) {
		if (in->writers) {
			/* Being written through the mount: stays raw. */
			in->seen_size = st->st_size;
			in->seen_mtime = st->st_mtim;
		} else {
			inode_drop_image(fs, in);
			in->kind = FS_KIND_UNKNOWN;
			in->damaged = false;
			in->gen++;
		}
	}
	*decided = in->kind != FS_KIND_UNKNOWN;
	return *decided ? 0 : inode_classify_locked(fs, in, st);
}

/* A read found `msg` (damage) in the strict stream of this verdict: no
 * more opens, the kernel's pages go, one log line.  in->lock held. */
static void inode_mark_damaged(struct fs *fs, struct fs_inode *in, const char *msg)
{
	char path[PATH_MAX];

	in->damaged = true;
	if (fs_log_first_time(in->dev, in->ino, inode_version(in), FS_LOG_DAMAGE)) {
		fs_inode_path(fs, in, path, sizeof path);
		odx_log(LOG_ERR, "%s; not served any more (strict): every read and open of it "
				 "fails with EIO until the file changes; `odxctl check %s` lists "
				 "the problems, -o salvage serves its intact ranges",
			msg, path);
	}
	inode_drop_image(fs, in); /* msg may live in it: dropped last */
	fs_notify_inval(fs, fs_inode_ino(fs, in));
}

/* Make in->img (kind STREAM) ready to serve a request: refuse a damaged
 * stream, resume a suspended image, index an evicted one again.
 * in->lock held.  Returns 0 or -errno. */
static int inode_image_locked(struct fs *fs, struct fs_inode *in)
{
	struct odx_error err;
	int r;

	/* Damage may have been found through another holder (a token). */
	const char *msg = in->img && !in->damaged ? odx_image_damage(in->img) : NULL;
	if (msg)
		inode_mark_damaged(fs, in, msg);
	if (in->damaged)
		return -EIO;
	if (in->img && odx_image_suspended(in->img)) {
		int fd = fs_inode_reopen(fs, in, O_RDONLY);
		if (fd < 0)
			return fd;
		odx_error_clear(&err);
		r = odx_image_resume(in->img, fd, &err); /* takes fd when it works */
		if (r < 0)
			close(fd);
		if (r == 0) {
			fs_icache_resumed(fs, in);
			return 0;
		}
		if (r != -ESTALE)
			return r;
		/* Changed between our fstat and the reopen: index it anew. */
		odx_debug("%s", err.msg);
		inode_drop_image(fs, in);
	}
	if (in->img) {
		fs_icache_use(fs, in);
		return 0;
	}
	r = inode_open_image(fs, in, -1, true, &err);
	if (r < 0 && !errno_transient(r)) {
		/* It opened before: changed in a way its size and
		 * modification time do not show, or its disk fails now. */
		in->kind = FS_KIND_BROKEN;
		if (in->chain_failed)
			inode_dir_mtime(fs, in, &in->chain_dir_mtime);
		inode_log_open(fs, in, r, &err);
		return -EIO;
	}
	return r;
}

int fs_inode_kind(struct fs *fs, struct fs_inode *in, const struct stat *st)
{
	bool decided;

	if (!S_ISREG(st->st_mode))
		return FS_KIND_RAW;
	pthread_mutex_lock(&in->lock);
	int r = inode_settle_locked(fs, in, st, &decided);
	int kind = in->kind;
	pthread_mutex_unlock(&in->lock);
	return r < 0 ? r : kind;
}

int fs_inode_classify(struct fs *fs, struct fs_inode *in, const struct stat *st,
		      struct odx_image **img, uint64_t *gen, bool *reused)
{
	bool decided;

	*img = NULL;
	*gen = 0;
	*reused = false;
	if (!S_ISREG(st->st_mode))
		return FS_KIND_RAW;

	pthread_mutex_lock(&in->lock);
	int r = inode_settle_locked(fs, in, st, &decided);
	if (r == 0 && in->kind == FS_KIND_STREAM)
		r = inode_image_locked(fs, in);
	int kind = in->kind;
	if (r == 0 && kind == FS_KIND_STREAM) {
		*img = odx_image_ref(in->img);
		*gen = in->gen;
	}
	/* The kernel may keep the pages of an earlier open only when this
	 * open gets the verdict that one got: a lookup or stat may have
	 * re-decided (gen moved) before this open came, and the pages of the
	 * old image may still be cached (notify.c drops them, but later). */
	*reused = decided && in->open_gen == in->gen;
	in->open_gen = in->gen;
	pthread_mutex_unlock(&in->lock);
	if (r < 0)
		return r;
	return kind == FS_KIND_BROKEN ? -EIO : kind;
}

bool fs_inode_note_damage(struct fs *fs, struct fs_inode *in, uint64_t gen,
			  struct odx_image *img)
{
	const char *msg = odx_image_damage(img);
	if (!msg)
		return false;
	pthread_mutex_lock(&in->lock);
	if (in->kind == FS_KIND_STREAM && in->gen == gen && !in->damaged)
		inode_mark_damaged(fs, in, msg);
	pthread_mutex_unlock(&in->lock);
	return true;
}

static int inode_fstat(struct fs_inode *in, struct stat *st)
{
	if (fstatat(in->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

int fs_inode_stat(struct fs *fs, struct fs_inode *in, struct stat *st)
{
	bool decided;

	fs_after_init(fs);
	int r = inode_fstat(in, st);
	if (r < 0 || !S_ISREG(st->st_mode))
		return r;
	/* A stream that does not open is listed as its backing file; only
	 * opening it fails (with EIO, logged at classification). */
	pthread_mutex_lock(&in->lock);
	r = inode_settle_locked(fs, in, st, &decided);
	if (r == 0 && (in->kind == FS_KIND_STREAM ||
		       (in->kind == FS_KIND_BROKEN && in->chain_failed))) {
		st->st_size = in->img_size;
		st->st_blocks = in->img_blocks;
	}
	if (r == 0 && in->kind == FS_KIND_SINK)
		r = odx_image_getattr(in->sink, st); /* the size written so far */
	pthread_mutex_unlock(&in->lock);
	/* -o blocks=full: coreutils 9.1's cp copies a file whose st_blocks are
	 * below its size segment by segment with read and write (sparse_copy
	 * looking for zeros); with the blocks it calls copy_file_range on the
	 * whole file, which odxfs offloads, holes kept.  SEEK_DATA/SEEK_HOLE
	 * and every byte stay as they are: only du and st_blocks heuristics
	 * (cp, tar) see a full file. */
	if (r == 0 && fs->opt.blocks_full && st->st_blocks < (st->st_size + 511) / 512)
		st->st_blocks = (st->st_size + 511) / 512;
	return r;
}

int fs_entry_lookup(struct fs *fs, struct fs_inode *parent, const char *name,
		    struct fuse_entry_param *e)
{
	struct fs_inode *in;
	struct stat st;

	fs_after_init(fs);
	memset(e, 0, sizeof *e);
	int fd = fs_openat(fs, parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return fd;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	int r = fs_inode_lookup(fs, fd, &st, parent, name, &in);
	if (r < 0)
		return r;
	r = fs_inode_stat(fs, in, &e->attr);
	if (r < 0) {
		fs_inode_forget(fs, in, 1);
		return r;
	}
	e->ino = (fuse_ino_t)(uintptr_t)in;
	e->attr_timeout = FS_TIMEOUT;
	e->entry_timeout = FS_TIMEOUT;
	return 0;
}

static int inode_truncate(struct fs *fs, struct fs_inode *in, off_t size,
			  struct fs_handle *h, struct fs_caller *c)
{
	struct odx_image *img;
	struct stat st;

	if (h)
		return odx_image_truncate(fs_handle_img(h), (uint64_t)size);
	int r = inode_fstat(in, &st);
	if (r < 0)
		return r;
	r = fs_inode_kind(fs, in, &st);
	if (r < 0)
		return r;
	if (r == FS_KIND_BROKEN)
		return -EIO;
	if (r == FS_KIND_STREAM)
		return -EROFS;
	if (r == FS_KIND_SINK)
		return -EBUSY;
	/* truncate(2) by path: the caller must be able to open it for
	 * writing (permission, immutable, append-only, a running program). */
	r = fs_as_caller(c);
	if (r < 0)
		return r;
	int fd = fs_inode_reopen(fs, in, O_WRONLY);
	fs_as_daemon();
	if (fd < 0)
		return fd;
	/* Then through a raw image like every other modification, so the
	 * privileges are dropped and the tokens revoked in the one place. */
	char path[PATH_MAX];
	fs_inode_path(fs, in, path, sizeof path);
	r = odx_image_open_as(&odx_backend_raw, fd, path, &fs->bcfg, &img, NULL);
	if (r < 0)
		return r;
	r = odx_image_truncate(img, (uint64_t)size);
	odx_image_unref(img);
	return r;
}

static int inode_utimens(struct fs_inode *in, const struct stat *attr, int to_set)
{
	struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };

	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		tv[0].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		tv[0] = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		tv[1].tv_nsec = UTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		tv[1] = attr->st_mtim;
	/* On the O_PATH descriptor itself: works for symlinks too. */
	return utimensat(in->fd, "", tv, AT_EMPTY_PATH) < 0 ? -errno : 0;
}

/* chmod and chown of the backing object with the credentials the thread
 * has: normally the caller's (fs_as_caller), so the backing filesystem
 * judges them (owner, groups, CAP_CHOWN/CAP_FOWNER only for root) as chmod
 * and chown on it would. */
static int inode_chmod_chown(struct fs *fs, struct fs_inode *in,
				   const struct stat *attr, int to_set)
{
	char name[32];

	snprintf(name, sizeof name, "%d", in->fd);
	if (to_set & FUSE_SET_ATTR_MODE) {
		if (S_ISLNK(in->type))
			return -EOPNOTSUPP;
		if (fchmodat(fs->proc_fd, name, attr->st_mode & 07777, 0) < 0)
			return -errno;
	}
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(in->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	return 0;
}

/* Whether a mode change only takes setuid and/or setgid away from a
 * regular file: what the kernel sends, as the writer, before it writes or
 * truncates a file of ours (fuse_setattr without HANDLE_KILLPRIV), and what
 * it would have done on a local filesystem even for a writer who does not
 * own the file.  Such a change is made with the daemon's rights when the
 * caller may write to the file; anything else is judged as the caller's. */
static bool mode_drops_privs_only(struct fs *fs, struct fs_inode *in, mode_t want,
				  struct fs_caller *c)
{
	struct stat st;
	char name[32];

	if (!S_ISREG(in->type) || inode_fstat(in, &st) < 0)
		return false;
	mode_t cur = st.st_mode & 07777, dropped = cur & ~want;
	if ((want & 07777 & ~cur) || !dropped || (dropped & ~(mode_t)(S_ISUID | S_ISGID)))
		return false;
	if (fs_as_caller(c) < 0)
		return false;
	snprintf(name, sizeof name, "%d", in->fd);
	bool writable = faccessat(fs->proc_fd, name, W_OK, AT_EACCESS) == 0;
	fs_as_daemon();
	return writable;
}

int fs_inode_setattr(struct fs *fs, struct fs_inode *in, const struct stat *attr,
		     int to_set, struct fs_handle *h, struct fs_caller *c)
{
	int r = 0;
	if ((to_set & FUSE_SET_ATTR_MODE) && mode_drops_privs_only(fs, in, attr->st_mode, c)) {
		r = inode_chmod_chown(fs, in, attr, FUSE_SET_ATTR_MODE); /* as the daemon */
		if (r < 0)
			return r;
		to_set &= ~FUSE_SET_ATTR_MODE;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		r = fs_as_caller(c);
		if (r < 0)
			return r;
		r = inode_chmod_chown(fs, in, attr, to_set);
		fs_as_daemon();
		if (r < 0)
			return r;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		r = inode_truncate(fs, in, attr->st_size, h, c);
		if (r < 0)
			return r;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		r = fs_as_caller(c);
		if (r < 0)
			return r;
		r = inode_utimens(in, attr, to_set);
		fs_as_daemon();
	}
	return r;
}
