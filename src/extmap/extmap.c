/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Extent map (see extmap.h).
 *
 * Invariants once finished: ext[0].offset == 0, ext[i].offset + ext[i].length
 * == ext[i+1].offset, the last extent ends at size, every length > 0.
 *
 * Building: real streams list frames in ascending order, so the common case
 * is an O(1) append.  A frame that starts before the end of what is already
 * there (overlapping frames: "later frames win") switches the builder to
 * collecting: that frame and every later one go to `pending`, and finish()
 * resolves everything with a sweep over the boundaries and a max-heap on
 * arrival order, O(n log n) however the frames overlap.  Collecting every
 * frame after the first out-of-order one keeps arrival order intact.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "odxfs/extmap.h"

void odx_extmap_init(struct odx_extmap *m, uint64_t size)
{
	memset(m, 0, sizeof *m);
	m->size = size;
}

void odx_extmap_free(struct odx_extmap *m)
{
	free(m->ext);
	free(m->pending);
	memset(m, 0, sizeof *m);
}

static int grow(struct odx_extent **v, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap + *cap / 2 : 64;
	if (ncap < need)
		ncap = need;
	if (ncap > SIZE_MAX / sizeof **v)
		return -ENOMEM;
	struct odx_extent *n = realloc(*v, ncap * sizeof **v);
	if (!n)
		return -ENOMEM;
	*v = n;
	*cap = ncap;
	return 0;
}

static uint64_t ext_end(const struct odx_extent *e)
{
	return e->offset + e->length;
}

/* Can b be merged onto the end of a (b starts where a ends)? */
static int mergeable(const struct odx_extent *a, const struct odx_extent *b)
{
	if (a->kind != b->kind || ext_end(a) != b->offset)
		return 0;
	if (a->kind != ODX_EXTENT_DATA)
		return 1;
	if (a->frame != b->frame)
		return 0;
	/* Uncompressed data: contiguous in the file too. */
	return a->frame != ODX_NO_FRAME || a->src + a->length == b->src;
}

/* Append e (which starts at or after the current end); fill a gap with
 * UNMAPPED and merge with the last extent when possible. */
static int append(struct odx_extmap *m, const struct odx_extent *e)
{
	uint64_t end = m->count ? ext_end(&m->ext[m->count - 1]) : 0;
	if (e->offset > end) {
		struct odx_extent gap = {.offset = end, .length = e->offset - end,
					 .frame = ODX_NO_FRAME, .kind = ODX_EXTENT_UNMAPPED};
		if (m->count && m->ext[m->count - 1].kind == ODX_EXTENT_UNMAPPED) {
			m->ext[m->count - 1].length += gap.length;
		} else {
			if (grow(&m->ext, &m->cap, m->count + 1))
				return -ENOMEM;
			m->ext[m->count++] = gap;
		}
	}
	if (m->count && mergeable(&m->ext[m->count - 1], e)) {
		m->ext[m->count - 1].length += e->length;
		return 0;
	}
	if (grow(&m->ext, &m->cap, m->count + 1))
		return -ENOMEM;
	m->ext[m->count++] = *e;
	return 0;
}

int odx_extmap_add(struct odx_extmap *m, const struct odx_extent *e)
{
	if (e->length == 0)
		return 0;
	if (e->offset >= m->size || e->length > m->size - e->offset)
		return -EINVAL;
	struct odx_extent x = *e;
	if (x.kind != ODX_EXTENT_DATA) {
		x.src = 0;
		x.frame = ODX_NO_FRAME;
	}
	uint64_t end = m->count ? ext_end(&m->ext[m->count - 1]) : 0;
	if (m->npending == 0 && x.offset >= end)
		return append(m, &x);
	if (grow(&m->pending, &m->pending_cap, m->npending + 1))
		return -ENOMEM;
	m->pending[m->npending++] = x;
	return 0;
}

/* ---- the sweep for overlapping frames ---- */

struct item {
	struct odx_extent e; /* original extent */
	size_t seq;          /* arrival order: higher wins */
};

struct heap {
	const struct item **v;
	size_t n;
};

static void heap_push(struct heap *h, const struct item *it)
{
	size_t i = h->n++;
	h->v[i] = it;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h->v[p]->seq >= h->v[i]->seq)
			break;
		const struct item *t = h->v[p];
		h->v[p] = h->v[i];
		h->v[i] = t;
		i = p;
	}
}

static void heap_pop(struct heap *h)
{
	h->v[0] = h->v[--h->n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, b = i;
		if (l < h->n && h->v[l]->seq > h->v[b]->seq)
			b = l;
		if (r < h->n && h->v[r]->seq > h->v[b]->seq)
			b = r;
		if (b == i)
			break;
		const struct item *t = h->v[b];
		h->v[b] = h->v[i];
		h->v[i] = t;
		i = b;
	}
}

static int cmp_item_start(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	if (x->e.offset != y->e.offset)
		return x->e.offset < y->e.offset ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int sweep(struct odx_extmap *m)
{
	/* The already-resolved extents are the oldest layer (UNMAPPED ones are
	 * not frames and are dropped); pending frames follow in order. */
	size_t n = 0, total = m->count + m->npending;
	struct item *items = malloc((total ? total : 1) * sizeof *items);
	uint64_t *bounds = malloc((2 * total + 2) * sizeof *bounds);
	struct heap h = {.v = malloc((total ? total : 1) * sizeof *h.v)};
	struct odx_extmap out;
	int rc = -ENOMEM;
	odx_extmap_init(&out, m->size);
	if (!items || !bounds || !h.v)
		goto done;
	for (size_t i = 0; i < m->count; i++)
		if (m->ext[i].kind != ODX_EXTENT_UNMAPPED)
			items[n] = (struct item){m->ext[i], n}, n++;
	for (size_t i = 0; i < m->npending; i++)
		items[n] = (struct item){m->pending[i], n}, n++;
	qsort(items, n, sizeof *items, cmp_item_start);
	size_t nb = 0;
	for (size_t i = 0; i < n; i++) {
		bounds[nb++] = items[i].e.offset;
		bounds[nb++] = ext_end(&items[i].e);
	}
	qsort(bounds, nb, sizeof *bounds, cmp_u64);
	size_t next = 0;
	for (size_t b = 0; b + 1 < nb; b++) {
		uint64_t lo = bounds[b], hi = bounds[b + 1];
		if (lo == hi)
			continue;
		while (next < n && items[next].e.offset <= lo)
			heap_push(&h, &items[next++]);
		while (h.n && ext_end(&h.v[0]->e) <= lo)
			heap_pop(&h); /* lazy deletion of frames that ended */
		if (!h.n)
			continue;
		struct odx_extent piece = odx_extent_slice(&h.v[0]->e, lo, hi - lo);
		if ((rc = append(&out, &piece)))
			goto done;
	}
	rc = 0;
	free(m->ext);
	free(m->pending);
	m->ext = out.ext;
	m->count = out.count;
	m->cap = out.cap;
	m->pending = NULL;
	m->npending = m->pending_cap = 0;
	out.ext = NULL;
done:
	odx_extmap_free(&out);
	free(items);
	free(bounds);
	free(h.v);
	return rc;
}

int odx_extmap_finish(struct odx_extmap *m)
{
	int rc;
	if (m->npending && (rc = sweep(m)))
		return rc;
	uint64_t end = m->count ? ext_end(&m->ext[m->count - 1]) : 0;
	if (end < m->size) {
		struct odx_extent tail = {.offset = end, .length = m->size - end,
					  .frame = ODX_NO_FRAME, .kind = ODX_EXTENT_UNMAPPED};
		if ((rc = append(m, &tail)))
			return rc;
	}
	/* Give back the growth slack: a finished map lives as long as its image. */
	if (m->count && m->count < m->cap) {
		struct odx_extent *t = realloc(m->ext, m->count * sizeof *t);
		if (t) {
			m->ext = t;
			m->cap = m->count;
		}
	}
	return 0;
}

size_t odx_extmap_find(const struct odx_extmap *m, uint64_t offset)
{
	if (offset >= m->size || m->count == 0)
		return m->count;
	size_t lo = 0, hi = m->count; /* answer in [lo, hi) */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->ext[mid].offset <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

struct odx_extent odx_extent_slice(const struct odx_extent *e, uint64_t offset,
				   uint64_t length)
{
	struct odx_extent s = *e;
	uint64_t skip = offset - e->offset;
	s.offset = offset;
	s.length = e->length - skip < length ? e->length - skip : length;
	if (e->kind == ODX_EXTENT_DATA && e->frame == ODX_NO_FRAME)
		s.src = e->src + skip;
	return s;
}

int64_t odx_extmap_seek(const struct odx_extmap *m, uint64_t off, int whence)
{
	if (off >= m->size)
		return -ENXIO;
	size_t i = odx_extmap_find(m, off);
	if (whence == SEEK_DATA) {
		while (i < m->count && odx_extent_is_hole(&m->ext[i]))
			i++;
		if (i == m->count)
			return -ENXIO;
		return (int64_t)(m->ext[i].offset > off ? m->ext[i].offset : off);
	}
	if (whence == SEEK_HOLE) {
		while (i < m->count && !odx_extent_is_hole(&m->ext[i]))
			i++;
		if (i == m->count)
			return (int64_t)m->size;
		return (int64_t)(m->ext[i].offset > off ? m->ext[i].offset : off);
	}
	return -EINVAL;
}

uint64_t odx_extmap_data_bytes(const struct odx_extmap *m)
{
	uint64_t n = 0;
	for (size_t i = 0; i < m->count; i++)
		if (!odx_extent_is_hole(&m->ext[i]))
			n += m->ext[i].length;
	return n;
}

const char *odx_extent_kind_name(int kind)
{
	switch (kind) {
	case ODX_EXTENT_UNMAPPED: return "unmapped";
	case ODX_EXTENT_ZERO: return "zero";
	case ODX_EXTENT_DATA: return "data";
	case ODX_EXTENT_BAD: return "bad";
	}
	return "?";
}
