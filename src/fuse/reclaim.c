/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asking the kernel to forget inodes when there are too many.
 *
 * Every inode the kernel has looked up holds an O_PATH descriptor here (the
 * passthrough design: the backing object stays reachable whatever is
 * renamed), and the kernel forgets an inode only when it evicts it from its
 * own caches, which with memory to spare it does not: listing 100,000 files
 * would need 100,000 descriptors, past the limit of many a process.  So
 * when the inodes pass a high mark (-o max_inodes, by default three
 * quarters of the descriptor limit), this thread asks the kernel to drop
 * the entries of the least recently looked-up ones, down to half the mark
 * (fuse_lowlevel_notify_inval_entry).  Those not in use are evicted, the
 * kernel forgets them, and their descriptors are closed; one in use (an
 * open file) stays, and a name that changed since is ignored by the
 * kernel.  The next access looks the name up again.  Only files are asked
 * for, not directories (see pick).
 *
 * A thread of its own: the kernel takes the parent directory's lock to
 * drop an entry, and a request being answered may hold it.  Rounds are at
 * least 100 ms apart, so inodes that cannot be forgotten (all in use) do
 * not make every lookup sort the table.
 *
 * Locking: rc->lock guards the fields of struct fs_reclaim; a round takes
 * the table lock only to copy (stamp, parent, name) out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "fs.h"
#include "log.h"

#define ROUND_GAP_NS 100000000L

struct victim {
	uint64_t stamp;
	fuse_ino_t parent;
	uint64_t parent_serial;
	char *name;
};

/* A live inode, to tell whether a victim's parent still is the directory
 * it was looked up in: a parent forgotten since (its child kept alive by
 * an open file) may have had its address reused, and an entry notice for
 * a non-directory makes the kernel answer ENOTDIR. */
struct live {
	uintptr_t addr;
	uint64_t serial;
};

static int by_addr(const void *a, const void *b)
{
	const struct live *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

void fs_reclaim_init(struct fs *fs, uint64_t max_inodes)
{
	struct fs_reclaim *rc = &fs->reclaim;
	memset(rc, 0, sizeof *rc);
	pthread_mutex_init(&rc->lock, NULL);
	pthread_cond_init(&rc->cond, NULL);
	if (!max_inodes) {
		struct rlimit rl;
		uint64_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
				       ? (uint64_t)rl.rlim_cur
				       : 1u << 20;
		max_inodes = lim / 4 * 3;
	}
	rc->high = max_inodes < 16 ? 16 : (size_t)max_inodes;
	rc->low = rc->high / 2;
	odx_debug("inodes: the kernel is asked to forget some past %zu", rc->high);
}

static int by_stamp(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;
	return x->stamp < y->stamp ? -1 : x->stamp > y->stamp;
}

/* Copy out the least recently looked-up inodes beyond rc->low whose
 * parent is still the one they were looked up in. */
static size_t pick(struct fs *fs, struct victim **out)
{
	struct fs_itable *t = &fs->itable;
	size_t n = 0, nl = 0, want, k = 0;
	struct victim *v = NULL;
	struct live *l = NULL;

	pthread_mutex_lock(&t->lock);
	if (t->count <= fs->reclaim.low)
		goto out;
	want = t->count - fs->reclaim.low;
	v = malloc(t->count * sizeof *v);
	l = malloc(t->count * sizeof *l);
	if (!v || !l)
		goto out;
	for (size_t b = 0; b < t->nbuckets; b++)
		for (struct fs_inode *in = t->buckets[b]; in; in = in->next) {
			l[nl++] = (struct live){(uintptr_t)in, in->serial};
			/* Directories are not asked for: dropping one drops its
			 * subtree, the kernel forgets it, and its address may
			 * come back as a file's while entries under it are
			 * still queued here (ENOTDIR from the kernel).  A tree
			 * keeps one descriptor per directory. */
			if (in->name && !S_ISDIR(in->type))
				v[n++] = (struct victim){in->stamp, in->parent, in->parent_serial,
							 in->name};
		}
	qsort(l, nl, sizeof *l, by_addr);
	qsort(v, n, sizeof *v, by_stamp);
	for (size_t i = 0; i < n && k < want; i++) {
		if (v[i].parent != FUSE_ROOT_ID) {
			struct live key = {(uintptr_t)v[i].parent, 0};
			struct live *p = bsearch(&key, l, nl, sizeof *l, by_addr);
			if (!p || p->serial != v[i].parent_serial)
				continue;
		}
		if (!(v[i].name = strdup(v[i].name)))
			break;
		v[k++] = v[i];
	}
	n = k;
out:
	pthread_mutex_unlock(&t->lock);
	free(l);
	*out = v;
	return n;
}

static void round_once(struct fs *fs)
{
	struct victim *v;
	size_t n = pick(fs, &v), sent = 0;
	for (size_t i = 0; i < n; i++) {
		int r = fuse_lowlevel_notify_inval_entry(fs->se, v[i].parent, v[i].name,
							 strlen(v[i].name));
		/* ENOENT: the kernel dropped it already, or the name changed */
		if (r == 0)
			sent++;
		else if (r != -ENOENT)
			odx_debug("%s: forget not asked: %s", v[i].name, strerror(-r));
		free(v[i].name);
	}
	free(v);
	pthread_mutex_lock(&fs->reclaim.lock);
	fs->reclaim.asked += sent;
	pthread_mutex_unlock(&fs->reclaim.lock);
	if (n)
		odx_debug("inodes: asked the kernel to forget %zu of the least recently used", sent);
}

static void *reclaim_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_reclaim *rc = &fs->reclaim;

	pthread_mutex_lock(&rc->lock);
	while (!rc->stopping) {
		if (!rc->kicked) {
			pthread_cond_wait(&rc->cond, &rc->lock);
			continue;
		}
		/* at most one round per ROUND_GAP_NS, unless a request is out
		 * of descriptors and waiting (fs_reclaim_wait) */
		struct timespec now, next = rc->last;
		next.tv_nsec += ROUND_GAP_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!rc->urgent && (now.tv_sec < next.tv_sec ||
				    (now.tv_sec == next.tv_sec && now.tv_nsec < next.tv_nsec))) {
			pthread_mutex_unlock(&rc->lock);
			nanosleep(&(struct timespec){0, ROUND_GAP_NS / 2}, NULL);
			pthread_mutex_lock(&rc->lock);
			continue;
		}
		rc->kicked = rc->urgent = false;
		pthread_mutex_unlock(&rc->lock);
		round_once(fs);
		pthread_mutex_lock(&rc->lock);
		clock_gettime(CLOCK_MONOTONIC, &rc->last);
	}
	pthread_mutex_unlock(&rc->lock);
	return NULL;
}

static void kick(struct fs *fs, bool urgent)
{
	struct fs_reclaim *rc = &fs->reclaim;
	pthread_mutex_lock(&rc->lock);
	if (!rc->started && !rc->stopping) {
		int r = pthread_create(&rc->thread, NULL, reclaim_main, fs);
		if (r != 0)
			odx_log(LOG_ERR, "cannot start the inode reclaim thread: %s", strerror(r));
		else
			rc->started = true;
	}
	rc->kicked = true;
	rc->urgent |= urgent;
	pthread_cond_signal(&rc->cond);
	pthread_mutex_unlock(&rc->lock);
}

void fs_reclaim_kick(struct fs *fs, size_t inodes)
{
	if (inodes > fs->reclaim.high && fs->se) /* (high is set once, at start-up) */
		kick(fs, false);
}

static size_t inodes_now(struct fs *fs)
{
	pthread_mutex_lock(&fs->itable.lock);
	size_t n = fs->itable.count;
	pthread_mutex_unlock(&fs->itable.lock);
	return n;
}

bool fs_reclaim_wait(struct fs *fs)
{
	if (!fs->se)
		return false;
	size_t before = inodes_now(fs);
	if (before <= fs->reclaim.low)
		return false; /* nothing to ask for: descriptors are elsewhere */
	kick(fs, true);
	/* The kernel forgets asynchronously, on other request threads. */
	for (int i = 0; i < 20; i++) {
		nanosleep(&(struct timespec){0, 50000000L}, NULL);
		if (inodes_now(fs) < before)
			return true;
	}
	return false;
}

void fs_reclaim_stop(struct fs *fs)
{
	struct fs_reclaim *rc = &fs->reclaim;
	pthread_mutex_lock(&rc->lock);
	rc->stopping = true;
	bool started = rc->started;
	pthread_cond_signal(&rc->cond);
	pthread_mutex_unlock(&rc->lock);
	if (started)
		pthread_join(rc->thread, NULL);
}
