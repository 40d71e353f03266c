/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The chain backend: the disk at one member of a backup chain, read-only,
 * made of the member's stream and its ancestors' (stream images) through
 * one merged map (odxfs/chain.h).  Layout questions are answered from that
 * map: data of an uncompressed member is an FD segment in that member's
 * file (so copies move it backing file to backing file in the kernel),
 * compressed data a DECODE segment read from that member's stream through
 * the shared chunk cache, zero and unmapped ranges holes.
 *
 * Registry: one live view per member file (dev, ino), held weakly (a view
 * takes itself out when its last reference goes); a view holds its
 * parent view, so the views of a chain's ancestors live as long as any
 * descendant and view N+1 is built from view N's map (its levels shared,
 * its own frames pushed as a new one: odxfs/chain.h).  The latest scans of a few directories are
 * kept while the directory's modification time stays the same, so opening
 * every view of a chain of N members reads N metas, not N^2.  A scan is
 * not kept while its directory changed in the last two seconds (a file
 * added within the timestamp's granularity would go unseen), and a file
 * rewritten in place (the directory's time unchanged) is caught by the
 * identity checks at open: the chain is then read again from a new scan.
 *
 * Staleness: a view remembers each member file's identity (device, inode,
 * size, modification time) from the scan it was built from.  stale()
 * compares it with an fstat of the member's descriptor: a member removed
 * (no links left), replaced by rename (the same) or rewritten (size or
 * time) makes the view stale for good, and its reads fail with ESTALE.
 * A member renamed away keeps its links, so stale() also watches the
 * directory's modification time: when it moved, the directory is scanned
 * again and the view is stale unless its member's chain is still exactly
 * the same files.  The daemon asks at every lookup, stat and open of the
 * view and at every offload write; map and read ask too, at most once a
 * second, so a handle opened before notices within a second.
 *
 * Opening a view indexes the members it needs that no live view has yet,
 * in chain order on short-lived threads (one per core, at most 8), while
 * the opening thread builds the views one on the other as their members
 * come in.
 *
 * Locking: reg.lock guards the registry's list, each view's dir_mtime and
 * the writing of stale_msg (before `stale` is raised; readers read the
 * message only after seeing the flag).  It is never held while indexing,
 * scanning or reading.  A view's other fields are immutable after it is
 * built, except the atomics `stale`, `checked_ms`, `settled` and `map`
 * (replaced once, under reg.lock, when the view is settled).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"

struct member_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct view {
	/* The merged map.  A view built only on the way to a later one has an
	 * unsettled map (chain.h); when it is asked for itself, a settled one
	 * replaces it, once, and the first is kept until the view goes, for
	 * the readers that may still hold it. */
	_Atomic(struct odx_cmap *) map;
	_Atomic(struct odx_cmap *) retired; /* set under reg.lock */
	atomic_bool settled;
	struct odx_image *parent;     /* the parent's view, or NULL (a base) */
	struct odx_image *own;        /* this member's stream image */
	size_t n;                     /* members, base first; the last is own */
	struct odx_view_member *m;    /* [n]: img borrowed (held by own or
				       * an ancestor view) */
	struct member_id *id;         /* [n] identities at the scan */
	char *dir;                    /* the directory, for messages and
				       * callers' permission checks */
	char *strings;                /* names and checkpoints of m[] */
	atomic_bool stale;
	char stale_msg[ODX_ERROR_MSG_MAX]; /* written once, before `stale` */
	/* The directory's modification time when the chain was last found
	 * whole (under reg.lock): when it moves, files came, went or were
	 * renamed, and the chain is looked up again. */
	struct timespec dir_mtime;
	/* When map or read last checked (CLOCK_MONOTONIC_COARSE, ms). */
	atomic_uint_fast64_t checked_ms;
	struct view *rnext;           /* registry list, under reg.lock */
	struct odx_image *img;
};

/* A directory's scan, shared by the views being opened from it. */
struct kept_scan {
	struct odx_chain_dir *d;
	unsigned refs;   /* under reg.lock: the list's while listed, and users' */
};

#define SCANS_KEPT 8

static struct {
	pthread_mutex_t lock;
	struct view *views;
	size_t nviews;
	struct kept_scan *scans[SCANS_KEPT]; /* most recent first */
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct view *view_of(struct odx_image *img)
{
	return img->priv;
}

static const struct odx_cmap *view_map(const struct view *v)
{
	return atomic_load_explicit(&((struct view *)v)->map, memory_order_acquire);
}

bool odx_image_is_view(const struct odx_image *img)
{
	return img->ops == &odx_backend_chain;
}

static bool same_id(const struct member_id *a, const struct member_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static struct member_id entry_id(const struct odx_chain_entry *e)
{
	return (struct member_id){ e->dev, e->ino, e->size, e->mtime };
}

/* "dir/name" into buf (truncated when too long: for messages). */
static void join(char *buf, size_t n, const char *dir, const char *name)
{
	int k = snprintf(buf, n, "%s/%s", dir, name);
	if (k < 0 || (size_t)k >= n)
		buf[n - 1] = '\0';
}

/* ---- registry ---- */

/* A reference to the registered view of (dev, ino) whose members are
 * exactly ids[0..n), or NULL.  A view whose last reference is going
 * (refs 0, waiting for the lock to take itself out) is not revived. */
static struct odx_image *reg_get(const struct member_id *ids, size_t n)
{
	struct odx_image *found = NULL;
	pthread_mutex_lock(&reg.lock);
	for (struct view *v = reg.views; v; v = v->rnext) {
		if (v->n != n || v->id[n - 1].dev != ids[n - 1].dev ||
		    v->id[n - 1].ino != ids[n - 1].ino)
			continue;
		bool same = !atomic_load(&v->stale);
		for (size_t k = 0; k < n && same; k++)
			same = same_id(&v->id[k], &ids[k]);
		int refs = atomic_load(&v->img->refs);
		while (same && refs > 0 &&
		       !atomic_compare_exchange_weak(&v->img->refs, &refs, refs + 1))
			;
		if (same && refs > 0) {
			found = v->img;
			break;
		}
	}
	pthread_mutex_unlock(&reg.lock);
	return found;
}

static void reg_add(struct view *v)
{
	pthread_mutex_lock(&reg.lock);
	v->rnext = reg.views;
	reg.views = v;
	reg.nviews++;
	pthread_mutex_unlock(&reg.lock);
}

static void reg_remove(struct view *v)
{
	pthread_mutex_lock(&reg.lock);
	for (struct view **pp = &reg.views; *pp; pp = &(*pp)->rnext) {
		if (*pp == v) {
			*pp = v->rnext;
			reg.nviews--;
			break;
		}
	}
	pthread_mutex_unlock(&reg.lock);
}

/* ---- scans ---- */

static void scan_put_locked(struct kept_scan *k, struct kept_scan **dead)
{
	if (--k->refs == 0)
		*dead = k;
}

static void scan_free(struct kept_scan *k)
{
	if (k) {
		odx_chain_dir_free(k->d);
		free(k);
	}
}

static void scan_put(struct kept_scan *k)
{
	struct kept_scan *dead = NULL;
	if (!k)
		return;
	pthread_mutex_lock(&reg.lock);
	scan_put_locked(k, &dead);
	pthread_mutex_unlock(&reg.lock);
	scan_free(dead);
}

/* The scan of the directory open on dirfd: a kept one while the directory
 * has not changed (unless `fresh`), else a new one.  Release with
 * scan_put. */
static int scan_get(int dirfd, const char *dir, bool fresh, struct kept_scan **out,
		    struct odx_error *err)
{
	struct stat st;
	struct timespec now;
	if (fstat(dirfd, &st) < 0)
		return odx_error_set(err, errno, "%s: %s", dir, strerror(errno));
	pthread_mutex_lock(&reg.lock);
	for (int i = 0; i < SCANS_KEPT && !fresh && reg.scans[i]; i++) {
		const struct odx_chain_dir *d = reg.scans[i]->d;
		if (d->dev == st.st_dev && d->ino == st.st_ino &&
		    d->mtime.tv_sec == st.st_mtim.tv_sec && d->mtime.tv_nsec == st.st_mtim.tv_nsec) {
			*out = reg.scans[i];
			(*out)->refs++;
			pthread_mutex_unlock(&reg.lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&reg.lock);
	struct kept_scan *k = calloc(1, sizeof *k);
	if (!k)
		return odx_error_set(err, ENOMEM, "out of memory");
	int r = odx_chain_scan(dirfd, dir, &k->d, err);
	if (r < 0) {
		free(k);
		return r;
	}
	k->refs = 1;
	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec - k->d->mtime.tv_sec >= 2) {
		/* kept: in front, replacing an older scan of the directory or
		 * the least recent one */
		struct kept_scan *dead = NULL;
		pthread_mutex_lock(&reg.lock);
		int drop = SCANS_KEPT - 1;
		for (int i = 0; i < SCANS_KEPT && reg.scans[i]; i++)
			if (reg.scans[i]->d->dev == k->d->dev && reg.scans[i]->d->ino == k->d->ino)
				drop = i;
		if (reg.scans[drop])
			scan_put_locked(reg.scans[drop], &dead);
		memmove(&reg.scans[1], &reg.scans[0], (size_t)drop * sizeof reg.scans[0]);
		reg.scans[0] = k;
		k->refs++;
		pthread_mutex_unlock(&reg.lock);
		scan_free(dead);
	}
	*out = k;
	return 0;
}

/* ---- building ---- */

static void view_free(struct view *v)
{
	if (!v)
		return;
	odx_cmap_free(atomic_load(&v->map));
	odx_cmap_free(atomic_load(&v->retired));
	if (v->own)
		odx_image_unref(v->own);
	if (v->parent)
		odx_image_unref(v->parent);
	free(v->m);
	free(v->id);
	free(v->dir);
	free(v->strings);
	free(v);
}

/* A map for v over its parent's current one. */
static int view_map_build(const struct view *v, bool settle, struct odx_cmap **out)
{
	const struct view *pv = v->parent ? view_of(v->parent) : NULL;
	struct odx_stream *s = v->own->priv;
	const struct odx_stream_info *si = odx_stream_info(s);
	return odx_cmap_build(pv ? view_map(pv) : NULL, odx_stream_map(s),
			      si->codec == ODX_CODEC_NONE, (uint32_t)(v->n - 1), settle, out);
}

/* Settle the map of a view built on the way to another, now that it is
 * asked for.  When that fails (out of memory), it is served as it is:
 * the same bytes, a few more levels to search. */
static void view_settle(struct view *v)
{
	if (atomic_load(&v->settled))
		return;
	struct odx_cmap *m = NULL;
	if (view_map_build(v, true, &m) < 0)
		return;
	pthread_mutex_lock(&reg.lock);
	if (!atomic_load(&v->settled)) {
		atomic_store(&v->retired, atomic_load(&v->map));
		atomic_store_explicit(&v->map, m, memory_order_release);
		atomic_store(&v->settled, true);
		m = NULL;
	}
	pthread_mutex_unlock(&reg.lock);
	odx_cmap_free(m); /* another thread settled it first */
}

static char *stpcpy_n(char *dst, const char *s)
{
	if (!s)
		s = "";
	size_t n = strlen(s) + 1;
	memcpy(dst, s, n);
	return dst + n;
}

/* Wrap v in an image (its own descriptor lent: one per member). */
static int view_image(struct view *v, const char *name, struct odx_image **out)
{
	struct odx_image *img = calloc(1, sizeof *img);
	if (!img || !(img->name = strdup(name))) {
		free(img);
		return -ENOMEM;
	}
	img->ops = &odx_backend_chain;
	img->fd = v->own->fd;
	img->dev = v->own->dev;
	img->ino = v->own->ino;
	img->priv = v;
	atomic_init(&img->refs, 1);
	atomic_init(&img->generation, 0);
	v->img = img;
	*out = img;
	return 0;
}

/* Build the view of member k of `chain` (entries idx[0..k]) over `parent`
 * (the view of member k-1, a reference that passes to the new view; NULL
 * for k = 0), with `own` its stream image (ownership passes); its map
 * settled when the view is the one asked for. */
static int view_build(const struct odx_chain_dir *d, const int *idx, size_t k, const char *dir,
		      struct odx_image *parent, struct odx_image *own, bool settle,
		      struct odx_image **out, struct odx_error *err)
{
	struct view *v = calloc(1, sizeof *v);
	size_t n = k + 1, slen = 0;
	for (size_t j = 0; j < n; j++) {
		const struct odx_chain_entry *e = &d->e[idx[j]];
		slen += strlen(e->name) + 1 + (e->checkpoint ? strlen(e->checkpoint) : 0) + 1;
	}
	if (v) {
		v->parent = parent;
		v->own = own;
		parent = own = NULL;
		v->m = calloc(n, sizeof *v->m);
		v->id = calloc(n, sizeof *v->id);
		v->dir = strdup(dir);
		v->strings = malloc(slen);
	}
	if (!v || !v->m || !v->id || !v->dir || !v->strings) {
		if (!v) {
			odx_image_unref(parent);
			odx_image_unref(own);
		}
		view_free(v);
		return odx_error_set(err, ENOMEM, "out of memory");
	}
	v->n = n;
	v->dir_mtime = d->mtime;
	atomic_init(&v->stale, false);
	atomic_init(&v->checked_ms, 0);
	const struct view *pv = v->parent ? view_of(v->parent) : NULL;
	char *p = v->strings;
	for (size_t j = 0; j < n; j++) {
		const struct odx_chain_entry *e = &d->e[idx[j]];
		v->m[j].name = p;
		p = stpcpy_n(p, e->name);
		v->m[j].checkpoint = p;
		p = stpcpy_n(p, e->checkpoint);
		v->m[j].kind = e->kind;
		v->m[j].img = j < k ? pv->m[j].img : v->own;
		v->id[j] = entry_id(e);
	}
	struct odx_cmap *map = NULL;
	int r = view_map_build(v, settle, &map);
	atomic_init(&v->map, map);
	atomic_init(&v->settled, settle);
	char name[PATH_MAX];
	join(name, sizeof name, dir, v->m[k].name);
	if (r == 0)
		r = view_image(v, name, out);
	if (r < 0) {
		view_free(v);
		return odx_error_set(err, -r, "%s: %s", name, strerror(-r));
	}
	reg_add(v);
	return 0;
}

/* Open the stream of entry e (in dirfd) as a stream image, checking it is
 * the file the scan saw. */
static int member_open(int dirfd, const char *dir, const struct odx_chain_entry *e,
		       const struct odx_backend_config *cfg, struct odx_image **out,
		       struct odx_error *err)
{
	char name[PATH_MAX];
	join(name, sizeof name, dir, e->name);
	int fd = openat(dirfd, e->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return odx_error_set(err, errno, "%s: %s", name, strerror(errno));
	struct stat st;
	struct member_id want = entry_id(e), got;
	if (fstat(fd, &st) == 0) {
		got = (struct member_id){ st.st_dev, st.st_ino, st.st_size, st.st_mtim };
		if (!same_id(&want, &got)) {
			close(fd);
			return odx_error_set(err, ESTALE, "%s: changed while its chain was read",
					     name);
		}
	}
	return odx_image_open_as(&odx_backend_stream, fd, name, cfg, out, err);
}

/* Messages of a member that does not open start with its path already.
 * Failures that say nothing about the member (out of memory or
 * descriptors, the file changed while the chain was read) keep their
 * errno, so the caller can try again; anything else is EIO. */
static int member_error(const char *view, const struct odx_chain_entry *e, int r,
			struct odx_error *err)
{
	char msg[ODX_ERROR_MSG_MAX];
	snprintf(msg, sizeof msg, "%s", err->msg);
	bool keep = r == -ENOMEM || r == -EMFILE || r == -ENFILE || r == -ESTALE;
	return odx_error_set(err, keep ? -r : EIO,
			     "%s: not served as the disk at its checkpoint: its chain member %s "
			     "(checkpoint \"%s\") does not open: %s",
			     view, e->name, e->checkpoint ? e->checkpoint : "", msg);
}

/* Indexing the members a view needs, on every core, while the opening
 * thread builds the views one on the other as their members come in: a
 * chain's members are independent files, and indexing them is most of
 * what opening the first view of a long chain costs. */
struct member_jobs {
	int dirfd;
	const char *dir;
	const struct odx_chain_dir *d;
	const int *idx;              /* members to open, in chain order: idx[0..n) */
	size_t n;
	const struct odx_backend_config *cfg;
	struct odx_image **img;      /* [n], NULL where it failed */
	int *r;                      /* [n] */
	struct odx_error *err;       /* [n] */
	bool *done;                  /* [n], under lock */
	atomic_size_t next;          /* the next job to take */
	atomic_bool stop;            /* the opener gave up: take no more */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t t[8];
	size_t started;              /* threads running (0: done inline) */
};

static void *member_worker(void *arg)
{
	struct member_jobs *j = arg;
	size_t i;
	while (!atomic_load(&j->stop) && (i = atomic_fetch_add(&j->next, 1)) < j->n) {
		j->r[i] = member_open(j->dirfd, j->dir, &j->d->e[j->idx[i]], j->cfg, &j->img[i],
				      &j->err[i]);
		pthread_mutex_lock(&j->lock);
		j->done[i] = true;
		pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&j->lock);
	}
	return NULL;
}

/* Start indexing: one thread per core (at most 8, no more than jobs); when
 * none can be had, everything is indexed here and now. */
static void members_start(struct member_jobs *j)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nt = cpus > 1 ? (size_t)cpus : 1;
	if (nt > 8)
		nt = 8;
	if (nt > j->n)
		nt = j->n;
	atomic_init(&j->next, 0);
	atomic_init(&j->stop, false);
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	for (j->started = 0; j->started < nt; j->started++)
		if (pthread_create(&j->t[j->started], NULL, member_worker, j) != 0)
			break;
	if (j->started == 0)
		member_worker(j);
}

/* Wait until job i is done. */
static void member_wait(struct member_jobs *j, size_t i)
{
	pthread_mutex_lock(&j->lock);
	while (!j->done[i])
		pthread_cond_wait(&j->cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
}

/* Stop taking jobs and wait for the threads (those running finish theirs). */
static void members_finish(struct member_jobs *j)
{
	atomic_store(&j->stop, true);
	for (size_t i = 0; i < j->started; i++)
		pthread_join(j->t[i], NULL);
	pthread_cond_destroy(&j->cond);
	pthread_mutex_destroy(&j->lock);
}

/* One try at the view of `base` (own: a reference that passes); a scan
 * kept from before unless `fresh`.  -ESTALE when a file changed since the
 * scan (the caller tries again with a fresh one). */
static int chain_open_in(int dirfd, const char *dir, const char *base, struct odx_image *own,
			 const struct odx_backend_config *cfg, bool fresh, struct odx_image **out,
			 struct odx_error *err)
{
	char view_name[PATH_MAX];
	join(view_name, sizeof view_name, dir, base);
	struct kept_scan *ks = NULL;
	struct stat ost;
	int r = scan_get(dirfd, dir, fresh, &ks, err);
	if (r < 0 || !ks) {
		odx_image_unref(own);
		return r < 0 ? r : -ENOMEM;
	}
	const struct odx_chain_dir *d = ks->d;
	int i = odx_chain_find(d, base);
	struct member_id oid = {0};
	if (fstat(own->fd, &ost) == 0)
		oid = (struct member_id){ ost.st_dev, ost.st_ino, ost.st_size, ost.st_mtim };
	struct member_id eid = i >= 0 ? entry_id(&d->e[i]) : oid;
	if (i < 0 || !same_id(&eid, &oid)) {
		scan_put(ks);
		odx_image_unref(own);
		return odx_error_set(err, ESTALE, "%s: changed while its chain was read",
				     view_name);
	}
	int *idx = malloc((d->e[i].depth ? d->e[i].depth : 1) * sizeof *idx);
	struct member_id *ids = malloc((d->e[i].depth ? d->e[i].depth : 1) * sizeof *ids);
	int n = idx && ids ? odx_chain_members(d, i, idx) : -ENOMEM;
	if (n < 0) {
		if (n == -ENOMEM)
			r = odx_error_set(err, ENOMEM, "out of memory");
		else
			r = odx_error_set(err, EIO,
					  "%s: not served as the disk at its checkpoint: %s; "
					  "-o chain=off shows it standalone",
					  view_name, d->e[i].why);
		goto out;
	}
	for (int k = 0; k < n; k++)
		ids[k] = entry_id(&d->e[idx[k]]);

	/* The deepest ancestor (or the member itself) with a live view. */
	struct odx_image *have = NULL;
	int k = n;
	while (k > 0 && !(have = reg_get(ids, (size_t)k)))
		k--;
	if (k == n && have) {
		odx_image_unref(own);
		own = NULL;
		view_settle(view_of(have));
		*out = have;
		r = 0;
		goto out;
	}
	/* members k..n-2 (n-1 is own): indexed at once, then the views
	 * built one on the other */
	size_t nj = (size_t)(n - 1 - k);
	struct member_jobs jobs = {
		.dirfd = dirfd, .dir = dir, .d = d, .idx = idx + k, .n = nj, .cfg = cfg,
		.img = calloc(nj ? nj : 1, sizeof *jobs.img),
		.r = calloc(nj ? nj : 1, sizeof *jobs.r),
		.err = calloc(nj ? nj : 1, sizeof *jobs.err),
		.done = calloc(nj ? nj : 1, sizeof *jobs.done),
	};
	bool running = false;
	if (!jobs.img || !jobs.r || !jobs.err || !jobs.done) {
		r = odx_error_set(err, ENOMEM, "out of memory");
		odx_image_unref(have);
		goto out_jobs;
	}
	if (nj) {
		members_start(&jobs);
		running = true;
	}
	for (; k < n; k++) {
		struct odx_image *mimg = NULL;
		const struct odx_chain_entry *e = &d->e[idx[k]];
		if (k == n - 1) {
			mimg = own;
			own = NULL;
		} else {
			size_t jk = (size_t)(k - (n - 1 - (int)nj));
			member_wait(&jobs, jk);
			mimg = jobs.img[jk];
			jobs.img[jk] = NULL;
			r = jobs.r[jk];
			if (r < 0) {
				*err = jobs.err[jk];
				r = member_error(view_name, e, r, err);
				odx_image_unref(have);
				goto out_jobs;
			}
		}
		struct odx_image *next = NULL;
		r = view_build(d, idx, (size_t)k, dir, have, mimg, k == n - 1, &next, err);
		have = NULL; /* passed on */
		if (r < 0)
			goto out_jobs;
		have = next;
	}
	*out = have;
	r = 0;
out_jobs:
	if (running)
		members_finish(&jobs); /* before the jobs' arrays go */
	for (size_t q = 0; jobs.img && q < nj; q++)
		if (jobs.img[q])
			odx_image_unref(jobs.img[q]);
	free(jobs.img);
	free(jobs.r);
	free(jobs.err);
	free(jobs.done);
out:
	if (own)
		odx_image_unref(own);
	free(idx);
	free(ids);
	scan_put(ks);
	return r;
}

int odx_chain_view_open(const char *path, struct odx_image *own,
			const struct odx_backend_config *cfg, struct odx_image **out,
			struct odx_error *err)
{
	char dir[PATH_MAX];
	const char *base = odx_chain_split_path(path, dir, sizeof dir);
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		int e = errno;
		odx_image_unref(own);
		return odx_error_set(err, e, "%s: %s", dir, strerror(e));
	}
	/* A file rewritten in place leaves the directory's time alone: a
	 * kept scan then names it with its old size; read the chain again. */
	odx_image_ref(own);
	int r = chain_open_in(dirfd, dir, base, own, cfg, false, out, err);
	if (r == -ESTALE) {
		odx_error_clear(err);
		r = chain_open_in(dirfd, dir, base, own, cfg, true, out, err);
	} else {
		odx_image_unref(own);
	}
	close(dirfd);
	return r;
}

size_t odx_chain_view_members(struct odx_image *img, const char **dir,
			      const struct odx_view_member **members)
{
	struct view *v = view_of(img);
	*dir = v->dir;
	*members = v->m;
	return v->n;
}

const struct odx_cmap *odx_chain_view_map(struct odx_image *img)
{
	return view_map(view_of(img));
}

/* ---- the backend ---- */

static void chain_close(struct odx_image *img)
{
	struct view *v = view_of(img);
	reg_remove(v);
	img->fd = -1; /* own's, closed with it */
	img->priv = NULL;
	view_free(v);
}

/* Whether the directory still links v's member to the same chain; moves
 * v->dir_mtime forward when it does.  Called without reg.lock. */
static const char *dir_still_links(struct view *v)
{
	struct stat st;
	if (stat(v->dir, &st) < 0)
		return NULL; /* cannot tell: reads will say */
	pthread_mutex_lock(&reg.lock);
	bool same = st.st_mtim.tv_sec == v->dir_mtime.tv_sec &&
		    st.st_mtim.tv_nsec == v->dir_mtime.tv_nsec;
	pthread_mutex_unlock(&reg.lock);
	if (same)
		return NULL;
	/* Through the kept scans: when a directory changes, every view of
	 * its chains asks, and one scan answers them all. */
	int dfd = open(v->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct kept_scan *ks = NULL;
	struct odx_error err;
	if (dfd < 0 || scan_get(dfd, v->dir, false, &ks, &err) < 0 || !ks) {
		if (dfd >= 0)
			close(dfd);
		return NULL;
	}
	close(dfd);
	const struct odx_chain_dir *d = ks->d;
	const char *why = NULL;
	int i = odx_chain_find(d, v->m[v->n - 1].name);
	int *idx = malloc(v->n * sizeof *idx);
	if (!idx) {
		scan_put(ks);
		return NULL;
	}
	if (i < 0 || d->e[i].depth != v->n || odx_chain_members(d, i, idx) != (int)v->n) {
		why = "no longer links up the same way";
	} else {
		for (size_t k = 0; k < v->n && !why; k++) {
			struct member_id id = entry_id(&d->e[idx[k]]);
			if (!same_id(&id, &v->id[k]))
				why = "no longer links up the same way";
		}
	}
	if (!why) {
		pthread_mutex_lock(&reg.lock);
		v->dir_mtime = d->mtime;
		pthread_mutex_unlock(&reg.lock);
	}
	free(idx);
	scan_put(ks);
	return why;
}

/* Make v stale for good, with a message naming why (first finder). */
static const char *make_stale(struct view *v, const char *fmt_member, const char *why)
{
	pthread_mutex_lock(&reg.lock);
	if (!atomic_load(&v->stale)) {
		if (fmt_member)
			snprintf(v->stale_msg, sizeof v->stale_msg,
				 "%s: its chain member %s/%s %s since the view was built",
				 v->img->name, v->dir, fmt_member, why);
		else
			snprintf(v->stale_msg, sizeof v->stale_msg,
				 "%s: its chain %s since the view was built (files came, went "
				 "or were renamed in %s)",
				 v->img->name, why, v->dir);
		atomic_store(&v->stale, true);
	}
	pthread_mutex_unlock(&reg.lock);
	return v->stale_msg;
}

static const char *chain_stale(struct odx_image *img)
{
	struct view *v = view_of(img);
	if (atomic_load(&v->stale))
		return v->stale_msg;
	for (size_t k = 0; k < v->n; k++) {
		struct stat st;
		const struct member_id *id = &v->id[k];
		const char *why = NULL;
		int fd = v->m[k].img->fd;
		if (fd < 0 || fstat(fd, &st) < 0)
			continue; /* cannot tell: reads will say */
		if (st.st_nlink == 0)
			why = "was removed or replaced";
		else if (st.st_size != id->size || st.st_mtim.tv_sec != id->mtime.tv_sec ||
			 st.st_mtim.tv_nsec != id->mtime.tv_nsec)
			why = "changed";
		if (why)
			return make_stale(v, v->m[k].name, why);
	}
	const char *why = dir_still_links(v);
	return why ? make_stale(v, NULL, why) : NULL;
}

/* Whether reads of v must stop: stale already, or found so by a check
 * made at most once a second (a few fstat calls, off the hot path). */
static bool view_gone(struct odx_image *img, struct view *v)
{
	if (atomic_load(&v->stale))
		return true;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	uint_fast64_t now = (uint_fast64_t)ts.tv_sec * 1000 + (uint_fast64_t)ts.tv_nsec / 1000000;
	uint_fast64_t last = atomic_load(&v->checked_ms);
	if (now - last < 1000 || !atomic_compare_exchange_strong(&v->checked_ms, &last, now))
		return false;
	return chain_stale(img) != NULL;
}

static int chain_getattr(struct odx_image *img, struct stat *st)
{
	const struct odx_cmap *m = view_map(view_of(img));
	st->st_size = (off_t)odx_cmap_size(m);
	st->st_blocks = (blkcnt_t)((odx_cmap_data_bytes(m) + 511) / 512);
	return 0;
}

static int seg_kind(const struct view *v, const struct odx_cext *e)
{
	switch (e->kind) {
	case ODX_EXTENT_DATA:
		if (odx_image_damage(v->m[e->member].img))
			return ODX_SEG_BAD;
		return e->fd ? ODX_SEG_FD : ODX_SEG_DECODE;
	case ODX_EXTENT_BAD:
		return ODX_SEG_BAD;
	default:
		return ODX_SEG_HOLE;
	}
}

static int chain_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		     void *ctx)
{
	struct view *v = view_of(img);
	if (view_gone(img, v))
		return -ESTALE;
	const struct odx_cmap *m = view_map(v);
	uint64_t size = odx_cmap_size(m);
	uint64_t end = off >= size || len > size - off ? size : off + len;
	struct odx_cmap_iter it;
	struct odx_cext e;
	if (off >= end || !odx_cmap_find(m, off, &it))
		return 0;
	uint64_t pos = off;
	while (pos < end && odx_cmap_next(&it, &e)) {
		uint64_t e_end = e.offset + e.length;
		uint64_t n = (e_end < end ? e_end : end) - pos;
		struct odx_seg seg = {
			.offset = pos,
			.length = n,
			.kind = seg_kind(v, &e),
			.extent_kind = e.kind,
			.fd = -1,
		};
		if (seg.kind == ODX_SEG_FD) {
			seg.fd = v->m[e.member].img->fd;
			seg.fd_offset = e.src + (pos - e.offset);
		}
		int r = fn(ctx, &seg);
		if (r)
			return r;
		pos += n;
	}
	return 0;
}

/* Where chain_get puts the bytes: copied into buf (read), or handed out
 * in place through fn (borrow; buf NULL). */
struct chain_out {
	char *buf;
	struct odx_pins *pins;
	odx_borrow_fn fn;
	void *ctx;
};

/* The one walk behind chain_read and chain_borrow.  Data comes from the
 * member that supplies each piece (a DECODE segment lies inside one
 * member's data extent), zeros from no member.  A read that fails part
 * way is short; a borrow fails whole (its caller falls back to read on
 * -EOPNOTSUPP). */
static ssize_t chain_get(struct odx_image *img, uint64_t off, size_t len,
			 const struct chain_out *o, struct odx_error *err)
{
	struct view *v = view_of(img);
	if (view_gone(img, v)) {
		odx_error_set(err, ESTALE, "%s", v->stale_msg);
		return -ESTALE;
	}
	const struct odx_cmap *m = view_map(v);
	uint64_t size = odx_cmap_size(m);
	if (off >= size)
		return 0;
	if (len > size - off)
		len = (size_t)(size - off);
	struct odx_cmap_iter it;
	struct odx_cext e;
	size_t done = 0;
	odx_cmap_find(m, off, &it);
	while (done < len && odx_cmap_next(&it, &e)) {
		uint64_t pos = off + done;
		uint64_t e_end = e.offset + e.length;
		size_t n = (size_t)((e_end - pos) < len - done ? e_end - pos : len - done);
		char *p = o->buf ? o->buf + done : NULL;
		ssize_t k = 0;
		if (e.kind == ODX_EXTENT_BAD)
			k = odx_error_at(err, EIO, img->name, pos, "damaged range of chain member %s",
					 v->m[e.member].name);
		else if (e.kind == ODX_EXTENT_DATA && p)
			k = odx_image_read(v->m[e.member].img, p, n, pos, err);
		else if (e.kind == ODX_EXTENT_DATA)
			k = odx_image_borrow(v->m[e.member].img, pos, n, o->pins, o->fn, o->ctx,
					     err);
		if (k < 0)
			return done && p ? (ssize_t)done : k;
		/* zeros, or past the end of a member smaller than the view */
		if ((size_t)k < n && p) {
			memset(p + k, 0, n - (size_t)k);
		} else if ((size_t)k < n) {
			int r = odx_borrow_zeros(o->fn, o->ctx, n - (size_t)k);
			if (r)
				return r;
		}
		done += n;
	}
	return (ssize_t)done;
}

static ssize_t chain_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
			  struct odx_error *err)
{
	struct chain_out o = { .buf = buf };
	return chain_get(img, off, len, &o, err);
}

static ssize_t chain_borrow(struct odx_image *img, uint64_t off, size_t len,
			    struct odx_pins *pins, odx_borrow_fn fn, void *ctx, struct odx_error *err)
{
	struct chain_out o = { .pins = pins, .fn = fn, .ctx = ctx };
	return chain_get(img, off, len, &o, err);
}

static off_t chain_lseek(struct odx_image *img, off_t off, int whence)
{
	if (off < 0)
		return -ENXIO;
	return (off_t)odx_cmap_seek(view_map(view_of(img)), (uint64_t)off, whence);
}

/* The first member with a problem (torn, salvaged) speaks for the view. */
static const char *chain_problem(struct odx_image *img, int *kind)
{
	struct view *v = view_of(img);
	for (size_t k = 0; k < v->n; k++) {
		const char *p = odx_image_problem(v->m[k].img, kind);
		if (p)
			return p;
	}
	return NULL;
}

static const char *chain_damage(struct odx_image *img)
{
	struct view *v = view_of(img);
	for (size_t k = 0; k < v->n; k++) {
		const char *d = odx_image_damage(v->m[k].img);
		if (d)
			return d;
	}
	return NULL;
}

/* What this view adds: its map's own part and its member's index (the
 * ancestors' are counted by their own views). */
static size_t chain_memory(struct odx_image *img)
{
	struct view *v = view_of(img);
	return sizeof *img + strlen(img->name) + 1 + sizeof *v +
	       v->n * (sizeof *v->m + sizeof *v->id) + odx_cmap_memory(view_map(v)) +
	       (atomic_load(&v->retired) ? odx_cmap_memory(atomic_load(&v->retired)) : 0) +
	       odx_image_memory(v->own);
}

static int chain_probe(int fd, const struct stat *st)
{
	(void)fd;
	(void)st;
	return 0; /* never chosen by content: odx_chain_view_open makes views */
}

static int chain_open(struct odx_image *img, const struct odx_backend_config *cfg,
		      struct odx_error *err)
{
	(void)img;
	(void)cfg;
	return odx_error_set(err, EINVAL, "chain views are opened by odx_chain_view_open");
}

/* The member stream that supplies [off, ...) of the view, as one extent
 * of its map: the same bytes at the same offsets (a member's stream is
 * its disk's, not shifted). */
static struct odx_stream *chain_stream_at(struct odx_image *img, uint64_t off, uint64_t *len)
{
	struct view *v = view_of(img);
	struct odx_cmap_iter it;
	struct odx_cext e;
	if (!odx_cmap_find(view_map(v), off, &it) || !odx_cmap_next(&it, &e) ||
	    e.kind != ODX_EXTENT_DATA || e.member >= v->n)
		return NULL;
	uint64_t left = e.offset + e.length - off;
	if (*len > left)
		*len = left;
	return v->m[e.member].img->priv;
}

static struct odx_stream *chain_meta_stream(struct odx_image *img)
{
	return view_of(img)->own->priv;
}

const struct odx_backend_ops odx_backend_chain = {
	.name = "chain",
	.caps = ODX_CAP_FD_DATA | ODX_CAP_IMMUTABLE,
	.probe = chain_probe,
	.open = chain_open,
	.close = chain_close,
	.getattr = chain_getattr,
	.map = chain_map,
	.read = chain_read,
	.borrow = chain_borrow,
	.lseek = chain_lseek,
	.problem = chain_problem,
	.damage = chain_damage,
	.memory = chain_memory,
	.stale = chain_stale,
	.stream_at = chain_stream_at,
	.meta_stream = chain_meta_stream,
};
