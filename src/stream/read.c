/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading decoded bytes: find the extent (binary search), then copy from
 * the payload (uncompressed), from a decompressed chunk held in the cache
 * (compressed), or zeros.  Also the export to a sparse raw file and the
 * small I/O helpers the library shares.
 */
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libdeflate.h>

#include "stream-internal.h"

ssize_t io_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int io_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

int io_copy_range_ex(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len,
		     bool use_cfr, uint64_t *done, bool *kernel)
{
	*done = 0;
	while (len && use_cfr) {
		off_t io = (off_t)in_off, oo = (off_t)out_off;
		size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
		ssize_t n = copy_file_range(in, &io, out, &oo, want, 0);
		if (n > 0) {
			in_off += (uint64_t)n;
			out_off += (uint64_t)n;
			len -= (uint64_t)n;
			*done += (uint64_t)n;
			continue;
		}
		if (n == 0)
			return -EIO; /* source ended early */
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)
			return -errno;
		use_cfr = false;
	}
	if (!len)
		return 0;
	*kernel = false;
	size_t bl = len > (1u << 20) ? (1u << 20) : (size_t)len;
	char *buf = malloc(bl);
	if (!buf)
		return -ENOMEM;
	int rc = 0;
	while (len && !rc) {
		size_t want = len > bl ? bl : (size_t)len;
		ssize_t n = io_pread_full(in, buf, want, in_off);
		rc = n < 0 ? (int)n : n < (ssize_t)want ? -EIO : 0;
		if (!rc)
			rc = io_pwrite_full(out, buf, want, out_off);
		if (!rc) {
			in_off += want;
			out_off += want;
			len -= want;
			*done += want;
		}
	}
	free(buf);
	return rc;
}

int io_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len)
{
	uint64_t done;
	bool kernel = true;
	return io_copy_range_ex(in, in_off, out, out_off, len, true, &done, &kernel);
}

int stream_set_damage(struct odx_stream *s, const struct odx_error *e)
{
	int expect = 0;
	if (atomic_compare_exchange_strong(&s->damage_state, &expect, 1)) {
		snprintf(s->damage_msg, sizeof s->damage_msg, "%s", e && e->msg[0] ? e->msg : s->name);
		atomic_store(&s->damage_state, 2);
	}
	return -EIO;
}

/* A strict stream found damaged earlier: no read may succeed any more. */
static int damaged(struct odx_stream *s, struct odx_error *err)
{
	if (atomic_load(&s->damage_state) != 2)
		return 0;
	return odx_error_set(err, EIO, "%s (found earlier; the stream is not served whole)",
			     s->damage_msg);
}

static void read_ahead(struct odx_stream *s, size_t ci, bool decoded_here);

/* Chunk ci of s, pinned.  A reader (prefetch false) waits for a chunk
 * another thread is decoding and then reads ahead; a prefetch job never
 * waits (*out NULL: nothing to do). */
static int chunk_get(struct odx_stream *s, size_t ci, bool prefetch, struct cache_entry **out,
		     struct odx_error *err)
{
	bool load;
	const struct chunk *c = &s->chunks[ci];
	*out = NULL;
	struct cache_entry *e = cache_acquire(s->cache, s->sid, ci, &s->loaders, !prefetch, &load);
	if (!e)
		return prefetch ? 0 : odx_error_set(err, ENOMEM, "out of memory");
	if (!load) {
		int bad = cache_error(e);
		if (!bad) {
			*out = e;
			read_ahead(s, ci, false);
			return 0;
		}
		/* Decoded and found damaged before: not decoded again. */
		cache_release(s->cache, e);
		return odx_error_at(err, bad, s->name, c->file_off,
				    "compressed chunk of %u bytes is damaged (found by an earlier read)",
				    c->csize);
	}
	char *dst = malloc(c->ulen ? c->ulen : 1);
	char why[256];
	int rc;
	if (!dst) {
		cache_abort(s->cache, e);
		return odx_error_set(err, ENOMEM, "out of memory");
	}
	rc = codec_decompress_fd(s->info.codec, s->fd, c->file_off, c->csize, dst, c->ulen, why,
				 sizeof why);
	if (rc == -EUCLEAN || rc == -EBADMSG) {
		free(dst);
		cache_fail(s->cache, e, -rc);
		return odx_error_at(err, -rc, s->name, c->file_off, "compressed chunk of %u bytes: %s",
				    c->csize, why);
	}
	if (rc) { /* could not be read (or no memory): may work next time */
		free(dst);
		cache_abort(s->cache, e);
		return odx_error_at(err, rc == -ENOMEM ? ENOMEM : EIO, s->name, c->file_off,
				    "cannot read compressed chunk (%u bytes): %s", c->csize, why);
	}
	cache_fill(s->cache, e, dst, c->ulen);
	*out = e;
	if (!prefetch)
		read_ahead(s, ci, true);
	return 0;
}

int chunk_load(struct odx_stream *s, size_t ci, struct cache_entry **out,
	       struct odx_error *err)
{
	return chunk_get(s, ci, false, out, err);
}

struct prefetch {
	struct odx_stream *s;
	size_t ci;
};

static void prefetch_run(void *arg, bool run)
{
	struct prefetch *p = arg;
	struct cache_entry *e;
	if (run && chunk_get(p->s, p->ci, true, &e, NULL) == 0 && e)
		cache_release(p->s->cache, e);
	stream_unref(p->s);
	free(p);
}

/* Queue the decoding of chunk ci; false when it cannot be (the queue is
 * full, or no memory), so the caller stops asking.  Only with a shared
 * cache: a stream's private cache would be freed with the stream, possibly
 * by a worker thread itself. */
static bool prefetch(struct odx_stream *s, size_t ci)
{
	if (!cache_wants(s->cache, s->sid, ci, s->chunks[ci].ulen))
		return true; /* there already, or too big: nothing to queue */
	struct prefetch *p = malloc(sizeof *p);
	if (!p)
		return false;
	p->s = s;
	p->ci = ci;
	atomic_fetch_add(&s->refs, 1);
	if (!cache_prefetch(s->cache, prefetch_run, p)) {
		stream_unref(s);
		free(p);
		return false;
	}
	return true;
}

/* After chunk ci was read.  A sequential reader (the chunk read last was
 * at most NEAR chunks away: the kernel's parallel read-ahead requests are
 * served by several threads and arrive out of order) keeps up to AHEAD_MAX
 * chunks queued or decoded ahead of it, within the cache's read-ahead
 * budget (half the cache), so the workers go on decoding on every core
 * while it serves, writes or is throttled by the destination's writeback;
 * chunks go to the cache and are taken in order.  A random reader only has
 * the next chunk decoded when it had to decode this one (a cheap guess, as
 * before the pool). */
#define AHEAD_MAX 32
#define NEAR 4

static void read_ahead(struct odx_stream *s, size_t ci, bool decoded_here)
{
	if (s->own_cache)
		return;
	size_t prev = atomic_exchange(&s->last_chunk, ci);
	bool seq = ci <= prev + NEAR && ci + NEAR >= prev;
	size_t depth = seq ? AHEAD_MAX : decoded_here ? 1 : 0;
	size_t next = atomic_load(&s->ahead_next);
	if (next <= ci || next > ci + 1 + depth)
		next = ci + 1;
	uint64_t budget = cache_ahead_budget(s->cache), bytes = 0;
	for (size_t j = ci + 1; j < next; j++)
		bytes += s->chunks[j].ulen;
	size_t j = next;
	for (; j < s->nchunks && j <= ci + depth && bytes + s->chunks[j].ulen <= budget; j++) {
		if (!prefetch(s, j))
			break;
		bytes += s->chunks[j].ulen;
	}
	if (j > next)
		atomic_store(&s->ahead_next, j);
}

/* Where the bytes of a read go: copied into a buffer (odx_stream_pread),
 * or handed out in place, pinned (odx_stream_borrow). */
struct borrow {
	struct odx_pins *pins;
	odx_borrow_fn fn;
	void *ctx;
};

static int pin_add(struct odx_pins *pins, struct odx_chunk_cache *c, struct cache_entry *e,
		   bool done)
{
	if (pins->n == pins->cap) {
		size_t cap = pins->cap ? 2 * pins->cap : 8;
		struct odx_pin *v = realloc(pins->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		pins->v = v;
		pins->cap = cap;
	}
	pins->v[pins->n++] = (struct odx_pin){ .cache = c, .entry = e, .done = done };
	return 0;
}

void odx_pins_release(struct odx_pins *pins)
{
	for (size_t i = 0; i < pins->n; i++) {
		struct odx_pin *p = &pins->v[i];
		if (p->done)
			cache_release_done(p->cache, p->entry);
		else
			cache_release(p->cache, p->entry);
	}
	free(pins->v);
	*pins = (struct odx_pins){ 0 };
}

/* Decoded bytes of one compressed extent slice, into buf or handed to pk.
 * x->frame is the frame's first chunk, x->src its logical start; every
 * chunk but the last decodes to the split size (the first chunk's), and
 * the frame's chunks cover its length exactly (index.c), so the slice
 * never runs past them. */
static int read_compressed(struct odx_stream *s, const struct odx_extent *x, char *buf,
			   const struct borrow *pk, struct odx_error *err)
{
	uint64_t rel = x->offset - x->src, left = x->length;
	uint64_t split = s->chunks[x->frame].ulen;
	size_t ci = x->frame + (size_t)(rel / split);
	uint64_t in = rel % split;
	while (left) {
		if (ci >= s->nchunks)
			return odx_error_set(err, EIO, "%s: chunk index out of range", s->name);
		struct cache_entry *e;
		int rc = chunk_load(s, ci, &e, err);
		if (rc)
			return rc;
		uint64_t ulen = s->chunks[ci].ulen;
		uint64_t n = ulen - in < left ? ulen - in : left;
		const char *data = (const char *)cache_data(e) + in;
		/* read to its end by the sequential reader: evict it first */
		bool done = in + n == ulen && atomic_load(&s->last_chunk) == ci;
		if (pk) {
			if (pin_add(pk->pins, s->cache, e, done)) {
				cache_release(s->cache, e);
				return odx_error_set(err, ENOMEM, "out of memory");
			}
			rc = pk->fn(pk->ctx, data, n);
			if (rc)
				return rc;
		} else {
			memcpy(buf, data, n);
			buf += n;
			if (done)
				cache_release_done(s->cache, e);
			else
				cache_release(s->cache, e);
		}
		left -= n;
		in = 0;
		ci++;
	}
	return 0;
}

/* Bytes of zero extents handed out in place. */
static const char borrow_zeros[64 << 10];

int odx_borrow_zeros(odx_borrow_fn fn, void *ctx, uint64_t len)
{
	int rc = 0;
	for (uint64_t o = 0; o < len && !rc; o += sizeof borrow_zeros)
		rc = fn(ctx, borrow_zeros,
			len - o < sizeof borrow_zeros ? (size_t)(len - o) : sizeof borrow_zeros);
	return rc;
}

/* The one walk over the extents behind pread and borrow (pk NULL: copy
 * to buf). */
static ssize_t stream_get(struct odx_stream *s, char *buf, size_t len, uint64_t off,
			  const struct borrow *pk, struct odx_error *err)
{
	const struct odx_extmap *m = &s->map;
	if (off >= m->size)
		return 0;
	int dr = damaged(s, err);
	if (dr)
		return dr;
	if (len > m->size - off)
		len = (size_t)(m->size - off);
	size_t i = odx_extmap_find(m, off), done = 0;
	while (done < len) {
		struct odx_extent x = odx_extent_slice(&m->ext[i], off + done, len - done);
		char *p = pk ? NULL : buf + done;
		int rc = 0;
		switch (x.kind) {
		case ODX_EXTENT_UNMAPPED:
		case ODX_EXTENT_ZERO:
			if (pk)
				rc = odx_borrow_zeros(pk->fn, pk->ctx, x.length);
			else
				memset(p, 0, x.length);
			break;
		case ODX_EXTENT_BAD:
			rc = odx_error_at(err, EIO, s->name, s->info.corrupt_at,
					  "image range [%" PRIu64 ", %" PRIu64
					  ") is lost: the stream is corrupt from this offset on",
					  x.offset, x.offset + x.length);
			break;
		case ODX_EXTENT_DATA:
			if (x.frame != ODX_NO_FRAME) {
				rc = read_compressed(s, &x, p, pk, err);
			} else if (pk) {
				rc = -EOPNOTSUPP; /* payload in the file, not in memory */
			} else {
				ssize_t n = io_pread_full(s->fd, p, x.length, x.src);
				if (n != (ssize_t)x.length)
					rc = odx_error_at(err, EIO, s->name, x.src,
							  "cannot read %" PRIu64 " payload bytes: %s",
							  x.length,
							  n < 0 ? strerror((int)-n) : "file too short");
			}
			break;
		}
		if ((rc == -EBADMSG || rc == -EUCLEAN) && !(s->flags & ODX_OPEN_SALVAGE)) {
			/* A damaged chunk: from now on nothing of it is served. */
			struct odx_error e;
			odx_error_clear(&e);
			odx_error_set(&e, -rc, "%s", err && err->msg[0] ? err->msg : s->name);
			stream_set_damage(s, &e);
		}
		if (rc)
			return rc;
		done += x.length;
		i++;
	}
	return (ssize_t)done;
}

ssize_t odx_stream_pread(struct odx_stream *s, void *buf, size_t len, uint64_t off,
			 struct odx_error *err)
{
	return stream_get(s, buf, len, off, NULL, err);
}

ssize_t odx_stream_borrow(struct odx_stream *s, uint64_t off, size_t len, struct odx_pins *pins,
			odx_borrow_fn fn, void *ctx, struct odx_error *err)
{
	struct borrow pk = { .pins = pins, .fn = fn, .ctx = ctx };
	return stream_get(s, NULL, len, off, &pk, err);
}

int odx_stream_export(struct odx_stream *s, int out_fd, const struct odx_progress *p,
		      struct odx_error *err)
{
	const struct odx_extmap *m = &s->map;
	uint64_t total = s->info.mapped_bytes, done = 0;
	char *buf = NULL;
	int rc = 0;
	if (ftruncate(out_fd, 0) || ftruncate(out_fd, (off_t)m->size))
		return odx_error_set(err, errno, "cannot size the output: %s", strerror(errno));
	for (size_t i = 0; i < m->count && !rc; i++) {
		const struct odx_extent *e = &m->ext[i];
		if (e->kind == ODX_EXTENT_BAD)
			return odx_error_at(err, EIO, s->name, s->info.corrupt_at,
					    "image range [%" PRIu64 ", %" PRIu64 ") is lost to corruption",
					    e->offset, e->offset + e->length);
		if (e->kind != ODX_EXTENT_DATA)
			continue;
		if (e->frame == ODX_NO_FRAME) {
			/* Plain payload: let the kernel move it. */
			rc = io_copy_range(s->fd, e->src, out_fd, e->offset, e->length);
			if (rc)
				rc = odx_error_at(err, -rc, s->name, e->src, "copying payload: %s",
						  strerror(-rc));
			done += e->length;
		} else {
			const size_t bl = ODX_CHUNK_SIZE;
			if (!buf && !(buf = malloc(bl)))
				return odx_error_set(err, ENOMEM, "out of memory");
			for (uint64_t o = 0; o < e->length && !rc; o += bl) {
				struct odx_extent x = odx_extent_slice(e, e->offset + o, bl);
				rc = read_compressed(s, &x, buf, NULL, err);
				if (!rc && (rc = io_pwrite_full(out_fd, buf, x.length, x.offset)))
					rc = odx_error_set(err, -rc, "writing output: %s", strerror(-rc));
				done += x.length;
				if (p && p->fn)
					p->fn(p->ctx, done, total);
			}
		}
		if (p && p->fn)
			p->fn(p->ctx, done, total);
	}
	free(buf);
	return rc;
}

int odx_file_adler32(int fd, uint32_t *out)
{
	/* libdeflate's Adler-32 (vectorised) rather than zlib's: a new
	 * stream's .chksum reads the whole file, and zlib's (1.7 GB/s on one
	 * core here, libdeflate's 15.8) took longer than the read itself */
	enum { BL = 4 << 20 };
	char *buf = malloc(BL);
	if (!buf)
		return -ENOMEM;
	uint32_t a = libdeflate_adler32(1, NULL, 0);
	uint64_t off = 0;
	for (;;) {
		ssize_t n = io_pread_full(fd, buf, BL, off);
		if (n < 0) {
			free(buf);
			return (int)n;
		}
		if (n == 0)
			break;
		a = libdeflate_adler32(a, buf, (size_t)n);
		off += (uint64_t)n;
	}
	free(buf);
	*out = a;
	return 0;
}
