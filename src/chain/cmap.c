/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The merged extent map of a backup chain view (chain.h explains the
 * sharing).  A map is a table of leaves; a leaf holds up to ODX_CMAP_LEAF
 * records, each the START of an extent: an extent ends where the next
 * record starts, the leaf's last where the leaf ends (leaf->end), so the
 * map is gap-free without storing lengths, and a leaf means the same bytes
 * in every map that holds it: its end is part of it.
 *
 * Building the view of member N walks N's own extent map once: its frames
 * become new records, its unmapped ranges fall through to the parent's
 * map.  A parent leaf that lies wholly inside such a range is shared
 * (reference taken), unless it is small: small leaves are copied into the
 * new ones instead, so leaves do not fragment from view to view.
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

/* A leaf is shared only when it holds at least this many records. */
#define SHARE_MIN (ODX_CMAP_LEAF / 4)

struct crec {
	uint64_t off;
	uint64_t src;
	uint32_t member;
	uint8_t kind;
	uint8_t fd;
	uint16_t pad;
};

struct cleaf {
	atomic_uint refs;
	uint32_t n;
	uint64_t end;        /* where the last record's extent ends */
	uint64_t data;       /* DATA and BAD bytes in the leaf */
	struct crec r[];
};

struct odx_cmap {
	uint64_t size;
	size_t nleaves;
	uint64_t *first;     /* first[l] = leaf[l]->r[0].off, for the search */
	struct cleaf **leaf;
	size_t count;        /* records */
	uint64_t data;
	size_t own_bytes;
};

static size_t leaf_bytes(uint32_t n)
{
	return sizeof(struct cleaf) + (size_t)n * sizeof(struct crec);
}

static uint64_t rec_end(const struct cleaf *l, uint32_t i)
{
	return i + 1 < l->n ? l->r[i + 1].off : l->end;
}

static void leaf_unref(struct cleaf *l)
{
	if (l && atomic_fetch_sub(&l->refs, 1) == 1)
		free(l);
}

/* ---- building ---- */

struct builder {
	struct odx_cmap *m;
	size_t cap;
	struct cleaf *cur;   /* the leaf being filled, or NULL */
	bool have_last;      /* cur's last record may be extended */
	int err;
};

static int push_leaf(struct builder *b, struct cleaf *l)
{
	struct odx_cmap *m = b->m;
	if (m->nleaves == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 16;
		uint64_t *f = realloc(m->first, ncap * sizeof *f);
		if (!f)
			return -ENOMEM;
		m->first = f;
		struct cleaf **lv = realloc(m->leaf, ncap * sizeof *lv);
		if (!lv)
			return -ENOMEM;
		m->leaf = lv;
		b->cap = ncap;
	}
	m->first[m->nleaves] = l->r[0].off;
	m->leaf[m->nleaves++] = l;
	m->count += l->n;
	m->data += l->data;
	return 0;
}

/* Close the leaf being filled at `end` and put it in the table. */
static int flush(struct builder *b, uint64_t end)
{
	struct cleaf *l = b->cur;
	if (!l)
		return 0;
	b->cur = NULL;
	b->have_last = false;
	l->end = end;
	l->data = 0;
	for (uint32_t i = 0; i < l->n; i++)
		if (l->r[i].kind == ODX_EXTENT_DATA || l->r[i].kind == ODX_EXTENT_BAD)
			l->data += rec_end(l, i) - l->r[i].off;
	if (l->n < ODX_CMAP_LEAF) {
		struct cleaf *s = realloc(l, leaf_bytes(l->n));
		if (s)
			l = s;
	}
	b->m->own_bytes += leaf_bytes(l->n);
	int r = push_leaf(b, l);
	if (r < 0)
		free(l);
	return r;
}

/* Whether an extent described by `r` continues the one `last` starts when
 * it begins at `off`. */
static bool continues(const struct crec *last, const struct crec *r, uint64_t off)
{
	if (last->kind != r->kind || last->member != r->member || last->fd != r->fd)
		return false;
	if (r->kind != ODX_EXTENT_DATA)
		return true;
	/* Compressed data is read by logical offset: any continuation of
	 * the same member will do; plain data must also be contiguous in the
	 * member's file. */
	return !r->fd || last->src + (off - last->off) == r->src;
}

/* Append the extent starting at r->off (its end is where the next one
 * starts). */
static void emit(struct builder *b, const struct crec *r)
{
	if (b->err)
		return;
	if (b->cur && b->have_last && continues(&b->cur->r[b->cur->n - 1], r, r->off))
		return;
	if (b->cur && b->cur->n == ODX_CMAP_LEAF && (b->err = flush(b, r->off)) < 0)
		return;
	if (!b->cur) {
		b->cur = malloc(leaf_bytes(ODX_CMAP_LEAF));
		if (!b->cur) {
			b->err = -ENOMEM;
			return;
		}
		atomic_init(&b->cur->refs, 1);
		b->cur->n = 0;
	}
	b->cur->r[b->cur->n++] = *r;
	b->have_last = true;
}

static void share(struct builder *b, struct cleaf *l)
{
	if (b->err || (b->err = flush(b, l->r[0].off)) < 0)
		return;
	atomic_fetch_add(&l->refs, 1);
	if ((b->err = push_leaf(b, l)) < 0)
		leaf_unref(l);
}

/* Records r[0..n) copied as they are (whole extents of the parent, in
 * order, after what is already there): the first through emit (it may
 * continue the last), the rest in bulk, a leaf at a time. */
static void copy_whole(struct builder *b, const struct crec *r, uint32_t n)
{
	if (n == 0)
		return;
	emit(b, &r[0]);
	for (uint32_t i = 1; i < n && !b->err;) {
		if (b->cur && b->cur->n == ODX_CMAP_LEAF && (b->err = flush(b, r[i].off)) < 0)
			return;
		if (!b->cur) {
			emit(b, &r[i++]);
			continue;
		}
		uint32_t k = ODX_CMAP_LEAF - b->cur->n;
		if (k > n - i)
			k = n - i;
		memcpy(&b->cur->r[b->cur->n], &r[i], k * sizeof *r);
		b->cur->n += k;
		b->have_last = true;
		i += k;
	}
}

/* [a, e) of the parent's map, into the new one; *it is positioned at or
 * before a (the caller's walk over the parent goes forward only). */
static void fall_through(struct builder *b, const struct odx_cmap *p, uint64_t a, uint64_t e,
			 struct odx_cmap_iter *it)
{
	/* Ranges come in ascending order: step forward from the last one
	 * unless a is far ahead (then search). */
	if (it->leaf >= p->nleaves || p->leaf[it->leaf]->end <= a ||
	    p->leaf[it->leaf]->r[it->rec].off > a) {
		if (!odx_cmap_find(p, a, it))
			return;
	} else {
		const struct cleaf *l = p->leaf[it->leaf];
		while (rec_end(l, (uint32_t)it->rec) <= a)
			it->rec++;
	}
	uint64_t pos = a;
	while (pos < e && !b->err && it->leaf < p->nleaves) {
		struct cleaf *l = p->leaf[it->leaf];
		if (it->rec == 0 && l->r[0].off == pos && l->end <= e && l->n >= SHARE_MIN) {
			share(b, l);
			pos = l->end;
			it->leaf++;
			continue;
		}
		struct crec r = l->r[it->rec];
		uint64_t end = rec_end(l, (uint32_t)it->rec);
		if (r.off >= pos && end <= e) {
			/* whole records from here to the first that is not */
			uint32_t j = (uint32_t)it->rec + 1;
			while (j < l->n && rec_end(l, j) <= e)
				j++;
			copy_whole(b, &l->r[it->rec], j - (uint32_t)it->rec);
			pos = rec_end(l, j - 1);
			it->rec = j;
		} else {
			if (r.fd)
				r.src += pos - r.off;
			r.off = pos;
			emit(b, &r);
			pos = end < e ? end : e;
			if (end <= e)
				it->rec++;
		}
		if (it->rec == l->n) {
			it->rec = 0;
			it->leaf++;
		}
	}
}

int odx_cmap_build(const struct odx_cmap *parent, const struct odx_extmap *own, bool own_fd,
		   uint32_t member, struct odx_cmap **out)
{
	struct odx_cmap *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	struct builder b = { .m = m };
	struct odx_cmap_iter pit = { .m = parent, .leaf = SIZE_MAX };
	m->size = own->size;
	uint64_t psize = parent ? parent->size : 0;

	for (size_t i = 0; i < own->count && !b.err; i++) {
		const struct odx_extent *e = &own->ext[i];
		uint64_t a = e->offset, z = e->offset + e->length;
		if (e->kind != ODX_EXTENT_UNMAPPED) {
			bool fd = own_fd && e->kind == ODX_EXTENT_DATA;
			struct crec r = {
				.off = a, .src = fd ? e->src : 0, .member = member,
				.kind = e->kind, .fd = fd,
			};
			emit(&b, &r);
			continue;
		}
		uint64_t pz = z < psize ? z : psize;
		if (a < pz)
			fall_through(&b, parent, a, pz, &pit);
		if (pz < z) {
			struct crec r = {
				.off = a > pz ? a : pz, .member = ODX_CMAP_NO_MEMBER,
				.kind = ODX_EXTENT_UNMAPPED,
			};
			emit(&b, &r);
		}
	}
	if (!b.err)
		b.err = flush(&b, m->size);
	free(b.cur);
	if (b.err) {
		odx_cmap_free(m);
		return b.err;
	}
	/* the leaf table at its final size */
	if (m->nleaves && m->nleaves < b.cap) {
		uint64_t *f = realloc(m->first, m->nleaves * sizeof *f);
		struct cleaf **lv = f ? realloc(m->leaf, m->nleaves * sizeof *lv) : NULL;
		if (f)
			m->first = f;
		if (lv) {
			m->leaf = lv;
			b.cap = m->nleaves;
		}
	}
	m->own_bytes += sizeof *m + b.cap * (sizeof *m->first + sizeof *m->leaf);
	*out = m;
	return 0;
}

void odx_cmap_free(struct odx_cmap *m)
{
	if (!m)
		return;
	for (size_t l = 0; l < m->nleaves; l++)
		leaf_unref(m->leaf[l]);
	free(m->first);
	free(m->leaf);
	free(m);
}

/* ---- reading ---- */

uint64_t odx_cmap_size(const struct odx_cmap *m)
{
	return m->size;
}

size_t odx_cmap_count(const struct odx_cmap *m)
{
	return m->count;
}

size_t odx_cmap_leaves(const struct odx_cmap *m)
{
	return m->nleaves;
}

uint64_t odx_cmap_data_bytes(const struct odx_cmap *m)
{
	return m->data;
}

size_t odx_cmap_memory(const struct odx_cmap *m)
{
	return m->own_bytes;
}

bool odx_cmap_find(const struct odx_cmap *m, uint64_t offset, struct odx_cmap_iter *it)
{
	it->m = m;
	it->leaf = m->nleaves;
	it->rec = 0;
	if (offset >= m->size || m->nleaves == 0)
		return false;
	/* the last leaf whose first record starts at or before offset */
	size_t lo = 0, hi = m->nleaves;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->first[mid] <= offset)
			lo = mid;
		else
			hi = mid;
	}
	const struct cleaf *l = m->leaf[lo];
	uint32_t a = 0, z = l->n;
	while (z - a > 1) {
		uint32_t mid = a + (z - a) / 2;
		if (l->r[mid].off <= offset)
			a = mid;
		else
			z = mid;
	}
	it->leaf = lo;
	it->rec = a;
	return true;
}

bool odx_cmap_next(struct odx_cmap_iter *it, struct odx_cext *out)
{
	const struct odx_cmap *m = it->m;
	if (it->leaf >= m->nleaves)
		return false;
	const struct cleaf *l = m->leaf[it->leaf];
	const struct crec *r = &l->r[it->rec];
	out->offset = r->off;
	out->length = rec_end(l, (uint32_t)it->rec) - r->off;
	out->src = r->src;
	out->member = r->member;
	out->kind = r->kind;
	out->fd = r->fd;
	if (++it->rec == l->n) {
		it->rec = 0;
		it->leaf++;
	}
	return true;
}

void odx_cmap_contrib(const struct odx_cmap *m, uint64_t *out, size_t members)
{
	memset(out, 0, members * sizeof *out);
	for (size_t l = 0; l < m->nleaves; l++) {
		const struct cleaf *lf = m->leaf[l];
		for (uint32_t i = 0; i < lf->n; i++)
			if (lf->r[i].member < members && lf->r[i].kind == ODX_EXTENT_DATA)
				out[lf->r[i].member] += rec_end(lf, i) - lf->r[i].off;
	}
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
