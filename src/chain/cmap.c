/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The merged extent map of a chain view, as a stack of levels (chain.h
 * explains the sharing and the cost).
 *
 * A level is a sorted array of disjoint pieces: the ranges some members'
 * frames cover (data, zero or bad), each naming its member.  Ranges no
 * piece covers are absent: in a view they fall through to the levels
 * below, and read as unmapped below the last.  Each level of a map comes
 * with a limit: a member's frames are seen by a view only below the
 * smallest size of the views between (a disk that shrank and grew again
 * does not show its old tail), so a level's pieces count only below it.
 *
 * Walking a map merges its levels on the fly: at a position, the newest
 * level with a piece there supplies the extent, which ends where that
 * piece ends or a newer level's next piece starts.  An iterator keeps one
 * cursor per level, so a walk costs O(levels) per extent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "odxfs/chain.h"

struct piece {
	uint64_t off, len;
	uint64_t src;      /* fd: file offset of byte `off` in the member */
	uint32_t member;
	uint8_t kind;
	uint8_t fd;
	uint16_t pad;
};

struct level {
	atomic_uint refs;
	size_t n;
	struct piece p[];
};

struct lref {
	struct level *lv;
	uint64_t limit;    /* its pieces count only below this */
};

#define UNSET UINT64_MAX

struct odx_cmap {
	uint64_t size;
	unsigned nlev;
	/* newest first; one spare while building (a parent's full stack
	 * plus the new level), at most ODX_CMAP_MAX_LEVELS once built */
	struct lref lev[ODX_CMAP_MAX_LEVELS + 1];
	size_t own_bytes;
	/* counted on first use (a walk of the whole map) */
	_Atomic uint64_t data;
	_Atomic uint64_t count;
};

static size_t level_bytes(size_t n)
{
	return sizeof(struct level) + n * sizeof(struct piece);
}

static struct level *level_new(size_t n)
{
	struct level *lv = malloc(level_bytes(n ? n : 1));
	if (lv) {
		atomic_init(&lv->refs, 1);
		lv->n = 0;
	}
	return lv;
}

/* Shrink a level built in an array of `cap` pieces to its size. */
static struct level *level_fit(struct level *lv, size_t cap)
{
	if (lv->n < cap && lv->n) {
		struct level *s = realloc(lv, level_bytes(lv->n));
		if (s)
			lv = s;
	}
	return lv;
}

static void level_unref(struct level *lv)
{
	if (lv && atomic_fetch_sub(&lv->refs, 1) == 1)
		free(lv);
}

static uint64_t pend(const struct piece *p)
{
	return p->off + p->len;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The piece p from `from` (inside it) to `to`. */
static struct piece slice(const struct piece *p, uint64_t from, uint64_t to)
{
	struct piece q = *p;
	if (q.fd)
		q.src += from - p->off;
	q.off = from;
	q.len = to - from;
	return q;
}

/* ---- building ---- */

/* The frames of a member's own map as a level. */
static struct level *level_of(const struct odx_extmap *own, bool own_fd, uint32_t member)
{
	size_t n = 0;
	for (size_t i = 0; i < own->count; i++)
		n += own->ext[i].kind != ODX_EXTENT_UNMAPPED;
	struct level *lv = level_new(n);
	if (!lv)
		return NULL;
	for (size_t i = 0; i < own->count; i++) {
		const struct odx_extent *e = &own->ext[i];
		if (e->kind == ODX_EXTENT_UNMAPPED)
			continue;
		bool fd = own_fd && e->kind == ODX_EXTENT_DATA;
		lv->p[lv->n++] = (struct piece){
			.off = e->offset, .len = e->length, .src = fd ? e->src : 0,
			.member = member, .kind = e->kind, .fd = fd,
		};
	}
	return lv;
}

/* Two pieces that read as one (b starts where a ends). */
static bool joins(const struct piece *a, const struct piece *b)
{
	return a->member == b->member && a->kind == b->kind && a->fd == b->fd &&
	       pend(a) == b->off && (!a->fd || a->src + a->len == b->src);
}

/* Where piece c of level r starts and ends, as the level counts it
 * (UINT64_MAX for both past its last piece below its limit). */
static void bounds_at(const struct lref *r, size_t c, uint64_t *st, uint64_t *en)
{
	if (c < r->lv->n && r->lv->p[c].off < r->limit) {
		*st = r->lv->p[c].off;
		*en = min64(pend(&r->lv->p[c]), r->limit);
	} else {
		*st = *en = UINT64_MAX;
	}
}

/* Levels r[0..k) (newest first, each counting below its limit) as one,
 * newest wins, in one pass: at each position the newest level with a
 * piece there supplies the range up to where that piece ends or a newer
 * level's next piece starts.  Each level's cursor moves only forward, so
 * the pass costs the pieces read plus, per piece written, the levels
 * above the one that supplies it (their current bounds are kept side by
 * side, so that costs a few compares each).  Merging the levels of a
 * carry at once, not two by two, writes each piece once. */
static struct level *levels_merge(const struct lref *r, unsigned k)
{
	size_t total = 0;
	for (unsigned i = 0; i < k; i++)
		total += r[i].lv->n;
	/* each piece read adds at most two pieces written: its own part, and
	 * the rest of an older piece it cuts in two */
	size_t cap = 2 * total;
	struct level *out = level_new(cap);
	if (!out)
		return NULL;
	/* per level: its current piece, where it starts and ends (clipped to
	 * the limit; UINT64_MAX past the last) */
	size_t cur[ODX_CMAP_MAX_LEVELS + 1];
	uint64_t st[ODX_CMAP_MAX_LEVELS + 1], en[ODX_CMAP_MAX_LEVELS + 1];
	for (unsigned i = 0; i < k; i++)
		bounds_at(&r[i], cur[i] = 0, &st[i], &en[i]);
	uint64_t pos = 0;
	for (;;) {
		unsigned top = k;
		uint64_t end = UINT64_MAX;
		for (unsigned i = 0; i < k; i++) {
			if (en[i] <= pos) {
				size_t c = cur[i] + 1;
				while (c < r[i].lv->n && pend(&r[i].lv->p[c]) <= pos)
					c++;
				bounds_at(&r[i], cur[i] = c, &st[i], &en[i]);
			}
			if (st[i] <= pos) {
				top = i;
				end = min64(end, en[i]);
				break;
			}
			end = min64(end, st[i]); /* a newer level takes over there */
		}
		if (end == UINT64_MAX)
			break;
		if (top < k) {
			struct piece q = slice(&r[top].lv->p[cur[top]], pos, end);
			if (out->n && joins(&out->p[out->n - 1], &q))
				out->p[out->n - 1].len += q.len;
			else
				out->p[out->n++] = q;
		}
		pos = end;
	}
	return level_fit(out, cap);
}

int odx_cmap_build(const struct odx_cmap *parent, const struct odx_extmap *own, bool own_fd,
		   uint32_t member, bool settle, struct odx_cmap **out)
{
	struct odx_cmap *m = calloc(1, sizeof *m);
	struct level *made[2];
	size_t nmade = 0;
	if (!m)
		return -ENOMEM;
	m->size = own->size;
	atomic_init(&m->data, UNSET);
	atomic_init(&m->count, UNSET);
	struct level *o = level_of(own, own_fd, member);
	if (!o) {
		free(m);
		return -ENOMEM;
	}
	if (o->n) {
		m->lev[m->nlev++] = (struct lref){ level_fit(o, o->n), own->size };
		made[nmade++] = m->lev[0].lv;
	} else {
		level_unref(o);
	}
	for (unsigned i = 0; parent && i < parent->nlev; i++) {
		/* a parent's level counts only below the parent's size */
		struct lref r = parent->lev[i];
		r.limit = min64(r.limit, parent->size);
		atomic_fetch_add(&r.lv->refs, 1);
		m->lev[m->nlev++] = r; /* room: the array has one spare */
	}
	/* Settling: the newest level merges into the next while it is at
	 * least a quarter of its size, so a map keeps O(log N) levels whatever
	 * the sizes (a factor measured: 2 makes more levels to search per
	 * read, 8 copies more).  A map that is not settled only merges when it
	 * has more levels than a map may have, then as a binary counter
	 * carries (factor 1: each piece copied O(log N) times).  Which levels
	 * merge is decided on their sizes first (the merged size taken as the
	 * sum, an upper bound); then they merge at once. */
	size_t factor = settle ? 4 : 1;
	bool carry = settle || m->nlev > ODX_CMAP_MAX_LEVELS;
	unsigned k = 1;
	size_t sum = m->nlev ? m->lev[0].lv->n : 0;
	while (carry && k < m->nlev &&
	       (factor * sum >= m->lev[k].lv->n || m->nlev - k + 1 > ODX_CMAP_MAX_LEVELS))
		sum += m->lev[k++].lv->n;
	if (k >= 2) {
		struct level *c = levels_merge(m->lev, k);
		if (!c) {
			odx_cmap_free(m);
			return -ENOMEM;
		}
		uint64_t lim = 0;
		for (unsigned i = 0; i < k; i++) {
			lim = lim > m->lev[i].limit ? lim : m->lev[i].limit;
			level_unref(m->lev[i].lv);
		}
		m->lev[0] = (struct lref){ c, lim };
		memmove(&m->lev[1], &m->lev[k], (m->nlev - k) * sizeof m->lev[0]);
		m->nlev -= k - 1;
		nmade = 0; /* the own level, if any, was merged into c */
		made[nmade++] = c;
	}
	/* what this map holds alone: the levels it made that it still has */
	m->own_bytes = sizeof *m;
	for (unsigned i = 0; i < m->nlev; i++)
		for (size_t j = 0; j < nmade; j++)
			if (m->lev[i].lv == made[j])
				m->own_bytes += level_bytes(m->lev[i].lv->n);
	*out = m;
	return 0;
}

void odx_cmap_free(struct odx_cmap *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->nlev; i++)
		level_unref(m->lev[i].lv);
	free(m);
}

/* ---- walking ---- */

/* First piece of lv ending past x. */
static size_t first_past(const struct level *lv, uint64_t x)
{
	size_t lo = 0, hi = lv->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (pend(&lv->p[mid]) <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool odx_cmap_find(const struct odx_cmap *m, uint64_t offset, struct odx_cmap_iter *it)
{
	it->m = m;
	it->pos = offset;
	for (unsigned i = 0; i < m->nlev; i++)
		it->cur[i] = first_past(m->lev[i].lv, offset);
	return offset < m->size;
}

/* One extent from it->pos, as the levels cut it (not joined with the
 * next). */
static bool step(struct odx_cmap_iter *it, struct odx_cext *out)
{
	const struct odx_cmap *m = it->m;
	uint64_t pos = it->pos, end = m->size;
	const struct piece *top = NULL;
	if (pos >= m->size)
		return false;
	for (unsigned i = 0; i < m->nlev && !top; i++) {
		const struct level *lv = m->lev[i].lv;
		uint64_t lim = min64(m->lev[i].limit, m->size);
		if (pos >= lim || it->cur[i] >= lv->n)
			continue;
		const struct piece *p = &lv->p[it->cur[i]];
		if (p->off <= pos) {
			top = p;
			end = min64(end, min64(pend(p), lim));
		} else if (p->off < lim) {
			end = min64(end, p->off); /* a newer level takes over there */
		}
	}
	if (top) {
		*out = (struct odx_cext){
			.offset = pos, .length = end - pos,
			.src = top->fd ? top->src + (pos - top->off) : top->src,
			.member = top->member, .kind = top->kind, .fd = top->fd,
		};
	} else {
		*out = (struct odx_cext){
			.offset = pos, .length = end - pos, .member = ODX_CMAP_NO_MEMBER,
			.kind = ODX_EXTENT_UNMAPPED,
		};
	}
	it->pos = end;
	for (unsigned i = 0; i < m->nlev; i++) {
		const struct level *lv = m->lev[i].lv;
		while (it->cur[i] < lv->n && pend(&lv->p[it->cur[i]]) <= end)
			it->cur[i]++;
	}
	return true;
}

/* Whether n continues e (one extent in a map built as a copy would be). */
static bool continues(const struct odx_cext *e, const struct odx_cext *n)
{
	if (e->kind != n->kind || e->member != n->member || e->fd != n->fd)
		return false;
	return n->kind != ODX_EXTENT_DATA || !n->fd || e->src + e->length == n->src;
}

bool odx_cmap_next(struct odx_cmap_iter *it, struct odx_cext *out)
{
	if (!step(it, out))
		return false;
	for (;;) {
		struct odx_cmap_iter peek = *it;
		struct odx_cext n;
		if (!step(&peek, &n) || !continues(out, &n))
			return true;
		out->length += n.length;
		*it = peek;
	}
}

/* ---- questions ---- */

uint64_t odx_cmap_size(const struct odx_cmap *m)
{
	return m->size;
}

size_t odx_cmap_levels(const struct odx_cmap *m)
{
	return m->nlev;
}

size_t odx_cmap_memory(const struct odx_cmap *m)
{
	return m->own_bytes;
}

/* Extents and data bytes, counted in one walk, kept (two threads may both
 * count: they store the same values). */
static void count_once(const struct odx_cmap *m, bool extents)
{
	struct odx_cmap *w = (struct odx_cmap *)m; /* the counters only */
	struct odx_cmap_iter it;
	struct odx_cext e;
	uint64_t data = 0, n = 0;
	odx_cmap_find(m, 0, &it);
	/* Data bytes need no joining of extents (half the work, and every
	 * view's stat asks for them); the extent count does. */
	while (extents ? odx_cmap_next(&it, &e) : step(&it, &e)) {
		n++;
		if (e.kind == ODX_EXTENT_DATA || e.kind == ODX_EXTENT_BAD)
			data += e.length;
	}
	if (extents)
		atomic_store(&w->count, n);
	atomic_store(&w->data, data);
}

size_t odx_cmap_count(const struct odx_cmap *m)
{
	if (atomic_load(&m->count) == UNSET)
		count_once(m, true);
	return (size_t)atomic_load(&m->count);
}

uint64_t odx_cmap_data_bytes(const struct odx_cmap *m)
{
	if (atomic_load(&m->data) == UNSET)
		count_once(m, false);
	return atomic_load(&m->data);
}

void odx_cmap_contrib(const struct odx_cmap *m, uint64_t *out, size_t members)
{
	struct odx_cmap_iter it;
	struct odx_cext e;
	memset(out, 0, members * sizeof *out);
	odx_cmap_find(m, 0, &it);
	while (odx_cmap_next(&it, &e))
		if (e.member < members && e.kind == ODX_EXTENT_DATA)
			out[e.member] += e.length;
}

int64_t odx_cmap_seek(const struct odx_cmap *m, uint64_t off, int whence)
{
	struct odx_cmap_iter it;
	struct odx_cext e;
	bool want_data = whence == SEEK_DATA;
	if (!odx_cmap_find(m, off, &it))
		return -ENXIO;
	while (odx_cmap_next(&it, &e)) {
		bool hole = e.kind == ODX_EXTENT_UNMAPPED || e.kind == ODX_EXTENT_ZERO;
		if (hole != want_data)
			return (int64_t)(e.offset > off ? e.offset : off);
	}
	return want_data ? -ENXIO : (int64_t)m->size;
}
