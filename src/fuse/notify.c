/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Invalidation notices to the kernel, sent from a thread of their own.
 *
 * fuse_lowlevel_notify_inval_inode makes the kernel drop the inode's cached
 * pages before the write of the notice returns, and dropping a page waits
 * for its lock, which a page being read holds until that read's reply
 * arrives.  Sent from a request's thread while reads of the same inode are
 * in flight, the notice would wait for replies only request threads send:
 * the reply of the very read being answered, and with -s every other one,
 * for ever.  So request threads queue the inode number (fs_notify_inval
 * never waits for the kernel) and this thread, started at the first
 * notice, sends them.
 *
 * Locking: n->lock guards the queue and the flags.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"

void fs_notify_init(struct fs_notify *n)
{
	memset(n, 0, sizeof *n);
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
}

static void *notify_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_notify *n = &fs->notify;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		while (!n->n && !n->stopping)
			pthread_cond_wait(&n->cond, &n->lock);
		if (!n->n)
			break; /* stopping, and everything sent */
		fuse_ino_t ino = n->queue[--n->n];
		pthread_mutex_unlock(&n->lock);
		int r = fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
		/* ENOENT: the kernel has forgotten the inode, nothing cached. */
		if (r < 0 && r != -ENOENT)
			odx_debug("inode %llu: cached pages not dropped: %s",
				  (unsigned long long)ino, strerror(-r));
		pthread_mutex_lock(&n->lock);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

void fs_notify_inval(struct fs *fs, fuse_ino_t ino)
{
	struct fs_notify *n = &fs->notify;

	pthread_mutex_lock(&n->lock);
	if (n->stopping || !fs->se)
		goto out;
	if (!n->started) {
		int r = pthread_create(&n->thread, NULL, notify_main, fs);
		if (r != 0) {
			odx_log(LOG_ERR, "inode %llu: cannot start the invalidation thread: %s",
				(unsigned long long)ino, strerror(r));
			goto out;
		}
		n->started = true;
	}
	if (n->n == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 16;
		fuse_ino_t *q = realloc(n->queue, cap * sizeof *q);
		if (!q) {
			odx_log(LOG_ERR, "inode %llu: cached pages not dropped: out of memory",
				(unsigned long long)ino);
			goto out;
		}
		n->queue = q;
		n->cap = cap;
	}
	n->queue[n->n++] = ino;
	pthread_cond_signal(&n->cond);
out:
	pthread_mutex_unlock(&n->lock);
}

void fs_notify_stop(struct fs *fs)
{
	struct fs_notify *n = &fs->notify;

	pthread_mutex_lock(&n->lock);
	n->stopping = true;
	bool started = n->started;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
	if (!started)
		return;
	/* A notice can only be stuck behind a read nobody will answer (the
	 * loop ended by a signal with reads in flight): do not wait for ever
	 * then; the process is about to exit. */
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 2;
	int r = pthread_timedjoin_np(n->thread, NULL, &t);
	if (r != 0) {
		odx_log(LOG_WARNING, "an invalidation notice is still waiting for the kernel: %s",
			strerror(r));
		return;
	}
	free(n->queue);
	n->queue = NULL;
}
