/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The index cache: which stream inodes keep their opened (indexed) image,
 * and which of those images keep a descriptor.
 *
 * Indexing a stream walks every frame header, so a stream inode keeps its
 * image after its last handle closed, for the next open.  The cache bounds
 * what that costs:
 *
 *   memory       at most max_entries images and max_bytes of their indexes
 *                (odx_image_memory) stay cached.  Past either bound the
 *                least recently used IDLE images are evicted: the inode
 *                drops its reference but keeps its verdict (STREAM) and
 *                what stat shows (inode.c), so only the next open indexes
 *                it again.  Images in use (a handle or a token holds them)
 *                are passed over: their memory stays while they are used
 *                anyway, and the next open would index a second copy.  An
 *                image is never evicted by its own arrival, so one bigger
 *                than max_bytes is still kept until the next one comes.
 *   descriptors  an image with a descriptor costs one (besides the inode's
 *                O_PATH one).  Past max_fds cached images with one, the
 *                least recently used idle ones are suspended (descriptor
 *                closed); the next open resumes them from the inode's
 *                O_PATH descriptor.  Images in use keep theirs, so the
 *                daemon's descriptors on stream files number at most
 *                max_fds plus the images in use.  Out of descriptors
 *                (EMFILE, ENFILE) every idle image is suspended at once
 *                (fs_icache_relieve) and the failed call tried again.
 *
 * Idle means odx_image_refs() == 1, read under the inode's lock: the
 * inode's (the cache's) reference is the only one, and no other appears
 * before the lock is dropped.  That holds because a reference is only ever
 * taken by copying one already held: fs_inode_classify copies the inode's
 * own, under in->lock; every other odx_image_ref copies one its caller
 * holds through a handle (fs_read around an O_DIRECT reply; the offload
 * engine's tokens, made from a handle's image by the ioctls and by
 * copy_file_range) or through a token (offload write).  So a count of 1 can
 * only rise under in->lock.  It can fall at any time (a handle released),
 * which only makes an image idle a little later than it could be.  Maps,
 * reads and the descriptors of FD segments are only used while a handle
 * or token holds the image, so an idle image has none in use.
 *
 * Lists: lru holds every inode with a cached image, most recently used
 * first; fds those whose image has a descriptor, in the same order.
 *
 * Locking: c->lock guards the lists, the counters and each inode's list
 * links and img_bytes.  It nests inside inode locks: callers hold the lock
 * of the inode they pass; trimming takes the locks of OTHER inodes only
 * with trylock and passes over one it cannot take (busy: in use).  Victims
 * are released under both locks: dropping the last reference of an idle
 * image frees its index and closes its descriptor, short work that takes
 * no lock of ours.  Nothing here indexes or waits for I/O.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "fs.h"
#include "log.h"

void fs_icache_init(struct fs_icache *c, size_t max_entries, uint64_t max_bytes,
		    size_t max_fds)
{
	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->lock, NULL);
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	c->max_fds = max_fds;
}

void fs_icache_destroy(struct fs_icache *c)
{
	pthread_mutex_destroy(&c->lock);
}

/* ---- the two lists ---- */

static void ilist_unlink(struct fs_ilist *l, struct fs_ilink *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		l->head = k->next;
	if (k->next)
		k->next->prev = k->prev;
	else
		l->tail = k->prev;
	k->prev = k->next = NULL;
	k->on = false;
	l->count--;
}

static void ilist_push(struct fs_ilist *l, struct fs_ilink *k)
{
	k->prev = NULL;
	k->next = l->head;
	if (l->head)
		l->head->prev = k;
	else
		l->tail = k;
	l->head = k;
	k->on = true;
	l->count++;
}

static void ilist_to_head(struct fs_ilist *l, struct fs_ilink *k)
{
	if (!k->on || l->head == k)
		return;
	ilist_unlink(l, k);
	ilist_push(l, k);
}

static struct fs_inode *lru_inode(struct fs_ilink *k)
{
	return (struct fs_inode *)((char *)k - offsetof(struct fs_inode, lru));
}

static struct fs_inode *fd_inode(struct fs_ilink *k)
{
	return (struct fs_inode *)((char *)k - offsetof(struct fs_inode, fdl));
}

/* ---- trimming ---- */

/* Lock `in` (never `self`, whose lock the caller holds) if that can be
 * done without waiting and its image is idle.  On true the caller
 * unlocks it. */
static bool lock_idle(struct fs_inode *in, const struct fs_inode *self)
{
	if (in == self || pthread_mutex_trylock(&in->lock) != 0)
		return false;
	if (in->img && odx_image_refs(in->img) == 1)
		return true;
	pthread_mutex_unlock(&in->lock);
	return false;
}

/* Close the descriptor of the idle image of `in` (locked).  The stream
 * library refuses while its prefetch worker still holds the stream (a hint
 * queued by the last read, holding the stream but not the image): the
 * image then keeps its descriptor and its place, and a later trim tries
 * again. */
static bool suspend_locked(struct fs_icache *c, struct fs_inode *in)
{
	if (!odx_image_suspend(in->img))
		return false;
	c->suspends++;
	ilist_unlink(&c->fds, &in->fdl);
	return true;
}

static void evict_locked(struct fs_icache *c, struct fs_inode *in)
{
	if (in->fdl.on)
		ilist_unlink(&c->fds, &in->fdl);
	ilist_unlink(&c->lru, &in->lru);
	c->bytes -= in->img_bytes;
	in->img_bytes = 0;
	odx_image_unref(in->img);
	in->img = NULL;
	c->evictions++;
}

/* Bring the cache within its bounds, least recently used first, passing
 * over `self` and images in use.  c->lock held. */
static void trim(struct fs_icache *c, const struct fs_inode *self)
{
	struct fs_ilink *k, *prev;

	for (k = c->lru.tail; k && (c->lru.count > c->max_entries || c->bytes > c->max_bytes);
	     k = prev) {
		prev = k->prev;
		struct fs_inode *in = lru_inode(k);
		if (!lock_idle(in, self))
			continue;
		evict_locked(c, in);
		pthread_mutex_unlock(&in->lock);
	}
	for (k = c->fds.tail; k && c->fds.count > c->max_fds; k = prev) {
		prev = k->prev;
		struct fs_inode *in = fd_inode(k);
		if (!lock_idle(in, self))
			continue;
		suspend_locked(c, in);
		pthread_mutex_unlock(&in->lock);
	}
}

/* ---- called with in->lock held ---- */

void fs_icache_add(struct fs *fs, struct fs_inode *in, bool again)
{
	struct fs_icache *c = &fs->icache;
	size_t bytes = odx_image_memory(in->img);

	pthread_mutex_lock(&c->lock);
	in->img_bytes = bytes;
	c->bytes += bytes;
	ilist_push(&c->lru, &in->lru);
	if (!odx_image_suspended(in->img))
		ilist_push(&c->fds, &in->fdl);
	if (again)
		c->reindexes++;
	trim(c, in);
	pthread_mutex_unlock(&c->lock);
}

void fs_icache_use(struct fs *fs, struct fs_inode *in)
{
	struct fs_icache *c = &fs->icache;

	pthread_mutex_lock(&c->lock);
	ilist_to_head(&c->lru, &in->lru);
	ilist_to_head(&c->fds, &in->fdl);
	pthread_mutex_unlock(&c->lock);
}

void fs_icache_resumed(struct fs *fs, struct fs_inode *in)
{
	struct fs_icache *c = &fs->icache;

	pthread_mutex_lock(&c->lock);
	c->resumes++;
	ilist_to_head(&c->lru, &in->lru);
	if (!in->fdl.on)
		ilist_push(&c->fds, &in->fdl);
	trim(c, in);
	pthread_mutex_unlock(&c->lock);
}

void fs_icache_remove(struct fs *fs, struct fs_inode *in)
{
	struct fs_icache *c = &fs->icache;

	pthread_mutex_lock(&c->lock);
	if (in->fdl.on)
		ilist_unlink(&c->fds, &in->fdl);
	if (in->lru.on) {
		ilist_unlink(&c->lru, &in->lru);
		c->bytes -= in->img_bytes;
		in->img_bytes = 0;
	}
	pthread_mutex_unlock(&c->lock);
}

/* ---- any thread ---- */

size_t fs_icache_relieve(struct fs *fs)
{
	struct fs_icache *c = &fs->icache;
	struct fs_ilink *k, *prev;
	size_t n = 0;

	pthread_mutex_lock(&c->lock);
	for (k = c->fds.tail; k; k = prev) {
		prev = k->prev;
		struct fs_inode *in = fd_inode(k);
		if (!lock_idle(in, NULL))
			continue;
		if (suspend_locked(c, in))
			n++;
		pthread_mutex_unlock(&in->lock);
	}
	size_t left = c->fds.count;
	pthread_mutex_unlock(&c->lock);
	odx_debug("out of descriptors: %zu idle stream images closed theirs, %zu in use keep "
		  "theirs", n, left);
	return n;
}

bool fs_retry_fds(struct fs *fs, int r)
{
	/* idle stream images first (immediate); when they free only a few,
	 * inodes the kernel can be asked to forget too (reclaim.c), since
	 * the one retry must have room */
	if (r != -EMFILE && r != -ENFILE)
		return false;
	size_t closed = fs_icache_relieve(fs);
	return closed >= 16 || fs_reclaim_wait(fs) || closed > 0;
}

void fs_icache_stats(struct fs *fs, struct fs_icache_stats *out)
{
	struct fs_icache *c = &fs->icache;

	pthread_mutex_lock(&c->lock);
	out->entries = c->lru.count;
	out->bytes = c->bytes;
	out->with_fd = c->fds.count;
	out->evictions = c->evictions;
	out->suspends = c->suspends;
	out->resumes = c->resumes;
	out->reindexes = c->reindexes;
	pthread_mutex_unlock(&c->lock);
}
