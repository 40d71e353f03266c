/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bounded cache of decompressed chunks, keyed by (stream id, chunk index),
 * shared by every stream of a mount so one size bounds the daemon.
 *
 * Locking: one mutex guards the hash table, the LRU list and the byte
 * count; it is never held while decompressing or copying.  An entry handed
 * out is pinned (refs > 0) and is not freed until released, even if it was
 * evicted or its stream dropped in between.
 *
 * A miss inserts a placeholder in "loading" state and makes the caller its
 * loader; other threads that want the same chunk wait for it (the kernel
 * sends parallel read-ahead requests that all fall into one 32 MiB chunk:
 * without this each of them would decompress it).  At most `max_loaders`
 * chunks are decoded at once, which bounds the transient buffers beside
 * the cache.  A chunk larger than the whole cache is still returned, just
 * not kept.
 *
 * Prefetch: read.c queues jobs for the chunks a reader will want next; a
 * pool of worker threads per cache (one per core the process may run on,
 * at most MAX_WORKERS, started on first use) runs them, so a sequential
 * reader finds chunks decoded on the other cores while it serves this one.
 * A job never waits: a chunk already there, being decoded, or over the
 * decode limits is skipped.  The queue is bounded and a full queue drops
 * the job: prefetch is a hint.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity */
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "stream-internal.h"

struct cache_entry {
	uint64_t sid, idx;
	void *data;
	size_t len;
	int err;                         /* known damaged: positive errno */
	unsigned *loaders;               /* while loading: its stream's count */
	unsigned refs;
	bool linked;                     /* in the table and LRU list */
	bool loading;                    /* placeholder: its loader is decoding */
	struct cache_entry *hnext;       /* hash chain */
	struct cache_entry *prev, *next; /* LRU: head = most recent */
};

#define PREFETCH_QUEUE 64
#define MAX_WORKERS 8

struct prefetch_job {
	void (*fn)(void *arg, bool run);
	void *arg;
};

struct odx_chunk_cache {
	pthread_mutex_t lock;
	/* prefetch workers: queue guarded by lock */
	pthread_t workers[MAX_WORKERS];
	unsigned nworkers, started;
	bool stopping;
	pthread_cond_t work;
	struct prefetch_job jobs[PREFETCH_QUEUE];
	unsigned job_head, njobs;
	pthread_cond_t loaded;           /* a placeholder was filled or dropped */
	/* Decodes at once: per stream (a reader and the workers), and in the
	 * mount (two streams' worth): each holds a chunk's output and input. */
	unsigned loaders, max_loaders, per_stream;
	struct cache_entry **table;
	size_t nbuckets, entries;        /* power of two; linked entries */
	struct cache_entry *head, *tail;
	size_t bytes, max_bytes;
	uint64_t hits, misses, evictions;
};

static _Atomic uint64_t next_sid = 1;

static struct cache_entry *lookup(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx);

uint64_t cache_new_stream_id(void)
{
	return atomic_fetch_add(&next_sid, 1);
}

struct odx_chunk_cache *odx_chunk_cache_new(size_t max_bytes)
{
	struct odx_chunk_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->nbuckets = 1024;
	c->table = calloc(c->nbuckets, sizeof *c->table);
	if (!c->table) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->loaded, NULL);
	pthread_cond_init(&c->work, NULL);
	c->max_bytes = max_bytes;
	cpu_set_t cpus;
	int n = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
	c->nworkers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
	c->per_stream = c->nworkers + 1;
	c->max_loaders = 2 * c->per_stream;
	return c;
}

/* What an entry costs: its data and its bookkeeping (a stream of tiny
 * chunks would otherwise fill the memory with entries the byte count does
 * not see). */
static size_t entry_cost(const struct cache_entry *e)
{
	return e->len + sizeof *e + 32;
}

static void entry_free(struct cache_entry *e)
{
	free(e->data);
	free(e);
}

static size_t bucket(const struct odx_chunk_cache *c, uint64_t sid, uint64_t idx)
{
	uint64_t h = sid * 0x9E3779B97F4A7C15ull ^ (idx + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	return (size_t)(h >> 20) & (c->nbuckets - 1);
}

/* Double the hash table when it holds more entries than buckets, so a
 * lookup stays O(1) however small the chunks are. */
static void grow_table(struct odx_chunk_cache *c)
{
	if (c->entries <= c->nbuckets)
		return;
	size_t n = c->nbuckets * 2;
	struct cache_entry **t = calloc(n, sizeof *t);
	if (!t)
		return; /* longer chains, still correct */
	struct cache_entry **old = c->table;
	size_t on = c->nbuckets;
	c->table = t;
	c->nbuckets = n;
	for (size_t i = 0; i < on; i++) {
		struct cache_entry *e = old[i];
		while (e) {
			struct cache_entry *next = e->hnext;
			size_t b = bucket(c, e->sid, e->idx);
			e->hnext = t[b];
			t[b] = e;
			e = next;
		}
	}
	free(old);
}

static void unlink_entry(struct odx_chunk_cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->table[bucket(c, e->sid, e->idx)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->linked = false;
	c->entries--;
	c->bytes -= entry_cost(e);
}

void odx_chunk_cache_free(struct odx_chunk_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->started; i++)
		pthread_join(c->workers[i], NULL);
	/* Jobs never run give back what they hold (stream references, whose
	 * release may call cache_drop_stream on this cache: no lock held). */
	while (c->njobs) {
		struct prefetch_job j = c->jobs[c->job_head];
		c->job_head = (c->job_head + 1) % PREFETCH_QUEUE;
		c->njobs--;
		j.fn(j.arg, false);
	}
	struct cache_entry *e = c->head;
	while (e) {
		struct cache_entry *n = e->next;
		entry_free(e);
		e = n;
	}
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->loaded);
	pthread_cond_destroy(&c->work);
	free(c->table);
	free(c);
}

static void *prefetch_worker(void *p)
{
	struct odx_chunk_cache *c = p;
	pthread_mutex_lock(&c->lock);
	while (!c->stopping) {
		if (!c->njobs) {
			pthread_cond_wait(&c->work, &c->lock);
			continue;
		}
		struct prefetch_job j = c->jobs[c->job_head];
		c->job_head = (c->job_head + 1) % PREFETCH_QUEUE;
		c->njobs--;
		pthread_mutex_unlock(&c->lock);
		j.fn(j.arg, true);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

bool cache_prefetch(struct odx_chunk_cache *c, void (*fn)(void *arg, bool run), void *arg)
{
	bool queued = false;
	pthread_mutex_lock(&c->lock);
	while (!c->stopping && c->started < c->nworkers &&
	       pthread_create(&c->workers[c->started], NULL, prefetch_worker, c) == 0)
		c->started++;
	if (c->started && !c->stopping && c->njobs < PREFETCH_QUEUE) {
		c->jobs[(c->job_head + c->njobs) % PREFETCH_QUEUE] = (struct prefetch_job){fn, arg};
		c->njobs++;
		pthread_cond_signal(&c->work);
		queued = true;
	}
	pthread_mutex_unlock(&c->lock);
	return queued;
}

size_t cache_ahead_budget(const struct odx_chunk_cache *c)
{
	return c->max_bytes / 2;
}

bool cache_wants(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx, size_t len)
{
	pthread_mutex_lock(&c->lock);
	/* room for the chunk being read and this one, and not there yet */
	bool r = c->max_bytes / 2 >= len && lookup(c, sid, idx) == NULL;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void lru_front(struct odx_chunk_cache *c, struct cache_entry *e)
{
	if (c->head == e)
		return;
	e->prev->next = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = NULL;
	e->next = c->head;
	c->head->prev = e;
	c->head = e;
}

static struct cache_entry *lookup(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx)
{
	struct cache_entry *e = c->table[bucket(c, sid, idx)];
	while (e && (e->sid != sid || e->idx != idx))
		e = e->hnext;
	return e;
}

/* Evict unpinned entries from the cold end until within budget. */
static void evict(struct odx_chunk_cache *c)
{
	struct cache_entry *e = c->tail;
	while (e && c->bytes > c->max_bytes) {
		struct cache_entry *p = e->prev;
		if (e->refs == 0) {
			unlink_entry(c, e);
			entry_free(e);
			c->evictions++;
		}
		e = p;
	}
}

struct cache_entry *cache_acquire(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx,
				  unsigned *loaders, bool wait, bool *load)
{
	*load = false;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct cache_entry *e = lookup(c, sid, idx);
		if (!wait && (e || c->loaders >= c->max_loaders || *loaders >= c->per_stream)) {
			pthread_mutex_unlock(&c->lock);
			return NULL; /* a prefetch: nothing to do, or not now */
		}
		if (e && !e->loading) {
			e->refs++;
			lru_front(c, e);
			c->hits++;
			pthread_mutex_unlock(&c->lock);
			return e;
		}
		if (e || c->loaders >= c->max_loaders || *loaders >= c->per_stream) {
			/* being decoded by another thread, or too many decodes
			 * at once (in the mount, or of this stream) */
			pthread_cond_wait(&c->loaded, &c->lock);
			continue;
		}
		e = calloc(1, sizeof *e);
		if (!e) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		e->sid = sid;
		e->idx = idx;
		e->refs = 1;
		e->loading = true;
		size_t b = bucket(c, sid, idx);
		e->hnext = c->table[b];
		c->table[b] = e;
		e->next = c->head;
		if (c->head)
			c->head->prev = e;
		c->head = e;
		if (!c->tail)
			c->tail = e;
		e->linked = true;
		c->entries++;
		c->bytes += entry_cost(e);
		grow_table(c);
		e->loaders = loaders;
		(*loaders)++;
		c->loaders++;
		c->misses++;
		*load = true;
		pthread_mutex_unlock(&c->lock);
		return e;
	}
}

void cache_fill(struct odx_chunk_cache *c, struct cache_entry *e, void *data, size_t len)
{
	pthread_mutex_lock(&c->lock);
	if (e->linked && len > c->max_bytes)
		unlink_entry(c, e); /* too big to keep: only its readers hold it */
	if (e->linked)
		c->bytes -= entry_cost(e);
	e->data = data;
	e->len = len;
	e->loading = false;
	c->loaders--;
	(*e->loaders)--;
	if (e->linked) { /* (its stream may have been dropped meanwhile) */
		c->bytes += entry_cost(e);
		evict(c);
	}
	pthread_cond_broadcast(&c->loaded);
	pthread_mutex_unlock(&c->lock);
}

void cache_fail(struct odx_chunk_cache *c, struct cache_entry *e, int err)
{
	pthread_mutex_lock(&c->lock);
	e->err = err;
	e->loading = false;
	c->loaders--;
	(*e->loaders)--;
	pthread_cond_broadcast(&c->loaded);
	pthread_mutex_unlock(&c->lock);
	cache_release(c, e); /* the loader's pin: it has no data to read */
}

int cache_error(const struct cache_entry *e)
{
	return e->err;
}

void cache_abort(struct odx_chunk_cache *c, struct cache_entry *e)
{
	pthread_mutex_lock(&c->lock);
	e->loading = false;
	c->loaders--;
	(*e->loaders)--;
	unlink_entry(c, e);
	pthread_cond_broadcast(&c->loaded);
	pthread_mutex_unlock(&c->lock);
	cache_release(c, e);
}

const void *cache_data(const struct cache_entry *e)
{
	return e->data;
}

/* Move a linked entry to the cold end of the LRU list. */
static void lru_back(struct odx_chunk_cache *c, struct cache_entry *e)
{
	if (c->tail == e)
		return;
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	e->next->prev = e->prev;
	e->next = NULL;
	e->prev = c->tail;
	c->tail->next = e;
	c->tail = e;
}

void cache_release_done(struct odx_chunk_cache *c, struct cache_entry *e)
{
	pthread_mutex_lock(&c->lock);
	if (e->linked && e->refs == 1)
		lru_back(c, e);
	pthread_mutex_unlock(&c->lock);
	cache_release(c, e);
}

void cache_release(struct odx_chunk_cache *c, struct cache_entry *e)
{
	pthread_mutex_lock(&c->lock);
	bool drop = --e->refs == 0 && !e->linked;
	if (!drop && e->refs == 0 && c->bytes > c->max_bytes)
		evict(c);
	pthread_mutex_unlock(&c->lock);
	if (drop)
		entry_free(e);
}

void cache_drop_stream(struct odx_chunk_cache *c, uint64_t sid)
{
	pthread_mutex_lock(&c->lock);
	struct cache_entry *e = c->head;
	while (e) {
		struct cache_entry *n = e->next;
		if (e->sid == sid) {
			unlink_entry(c, e);
			if (e->refs == 0)
				entry_free(e);
		}
		e = n;
	}
	pthread_mutex_unlock(&c->lock);
}

void odx_chunk_cache_stats(struct odx_chunk_cache *c, struct odx_cache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	out->hits = c->hits;
	out->misses = c->misses;
	out->evictions = c->evictions;
	out->bytes = c->bytes;
	out->max_bytes = c->max_bytes;
	pthread_mutex_unlock(&c->lock);
}
