/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applying a token's extents to a destination image (the data half of
 * offload write).
 *
 * Direct path (dst has ODX_CAP_WRITE and ODX_CAP_DIRECT_FD: its logical
 * offsets are its backing file's offsets), per extent:
 *   HOLE    whole blocks of the destination (st_blksize) are punched with
 *           FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; the partial blocks at
 *           the edges are written with zeros only when the destination holds
 *           data there (SEEK_DATA), so no partial block is punched and the
 *           destination keeps holes exactly where the source has them; past
 *           the destination's end nothing is written, and the size is set
 *           once at the end with ftruncate.
 *   FD      copy_file_range(src fd, dst fd) in a loop (short copies
 *           continue; EXDEV, EOPNOTSUPP, EINVAL, ENOSYS fall back to the
 *           buffer for the rest of the extent).
 *   DECODE  pwrite straight from the decoded chunks in the cache
 *           (odx_image_borrow, a buffer's worth pinned at a time), or, for
 *           what the image does not hold in memory, odx_image_read into the
 *           buffer, then pwrite.
 * Generic path (any other writable image): the same through the backend
 * wrappers (odx_image_fallocate, _write, _truncate), data always through the
 * buffer.
 * Stream destinations (a sink: odx_image_takes_puts): each extent is handed
 * to the image's put, which writes frames (backend.h).
 *
 * Memory: one bounded buffer (cfg.buffer_size) per offload write that needs
 * one, taken from and given back to a one-slot spare on the engine, so a
 * steady copy allocates nothing.  No lock is held here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fallocate, copy_file_range, SEEK_DATA */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct apply {
	struct odx_offload_engine *eng;
	struct odx_image *dst;
	bool direct;
	uint64_t size;      /* destination size now */
	uint64_t want_size; /* size that holes past the end ask for */
	uint64_t bs;        /* destination block size */
	uint8_t *buf;       /* taken on first need */
	size_t bufsize;
};

bool apply_is_direct(const struct odx_image *dst)
{
	unsigned need = ODX_CAP_WRITE | ODX_CAP_DIRECT_FD;
	return (dst->ops->caps & need) == need;
}

static uint8_t *apply_buffer(struct apply *a)
{
	if (!a->buf) {
		a->buf = atomic_exchange(&a->eng->spare_buf, NULL);
		if (!a->buf)
			a->buf = malloc(a->bufsize);
	}
	return a->buf;
}

static void apply_buffer_put(struct apply *a)
{
	uint8_t *expected = NULL;
	if (a->buf && !atomic_compare_exchange_strong(&a->eng->spare_buf, &expected, a->buf))
		free(a->buf);
	a->buf = NULL;
}

/* Write all of buf to dst at off.  Returns 0 or -errno; *done grows by the
 * bytes written. */
static int apply_write(struct apply *a, const uint8_t *buf, size_t len, uint64_t off,
		       uint64_t *done)
{
	while (len) {
		ssize_t k = a->direct ? pwrite(a->dst->fd, buf, len, (off_t)off)
				      : odx_image_write(a->dst, buf, len, off);
		if (k < 0 && a->direct && errno == EINTR)
			continue;
		if (k < 0)
			return a->direct ? -errno : (int)k;
		if (k == 0)
			return -EIO;
		buf += k;
		len -= (size_t)k;
		off += (uint64_t)k;
		*done += (uint64_t)k;
		if (off > a->size)
			a->size = off;
	}
	return 0;
}

/* Zeros over [off, off + n), through the buffer. */
static int apply_write_zeros(struct apply *a, uint64_t off, uint64_t n)
{
	uint8_t *buf = apply_buffer(a);
	if (!buf)
		return -ENOMEM;
	size_t chunk = n < a->bufsize ? (size_t)n : a->bufsize;
	memset(buf, 0, chunk);
	while (n) {
		size_t k = n < chunk ? (size_t)n : chunk;
		uint64_t done = 0;
		int r = apply_write(a, buf, k, off, &done);
		atomic_fetch_add(&a->eng->st.bytes_buffered, done);
		if (r < 0)
			return r;
		off += k;
		n -= k;
	}
	return 0;
}

/* Whether the direct destination holds data in [off, off + n) (SEEK_DATA;
 * a filesystem without it reports data everywhere). */
static bool dst_has_data(struct apply *a, uint64_t off, uint64_t n)
{
	off_t d = lseek(a->dst->fd, (off_t)off, SEEK_DATA);
	if (d < 0 && errno == ENXIO)
		return false;
	return !(d >= 0 && (uint64_t)d >= off + n);
}

/* A partial block at the edge of a hole: zeros only if dst has data there. */
static int apply_zero_edge(struct apply *a, uint64_t off, uint64_t n)
{
	if (n == 0 || !dst_has_data(a, off, n))
		return 0;
	return apply_write_zeros(a, off, n);
}

static int apply_punch(struct apply *a, uint64_t off, uint64_t n)
{
	int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	int r;
	if (a->direct)
		r = fallocate(a->dst->fd, mode, (off_t)off, (off_t)n) < 0 ? -errno : 0;
	else
		r = odx_image_fallocate(a->dst, mode, off, n);
	if (r == -EOPNOTSUPP || r == -ENOSYS)
		r = apply_write_zeros(a, off, n);
	return r;
}

static int apply_hole(struct apply *a, uint64_t off, uint64_t n, uint64_t *done)
{
	uint64_t end = off + n;
	uint64_t zend = end < a->size ? end : a->size;
	int r = 0;
	if (off < zend && !a->direct) {
		r = apply_punch(a, off, zend - off);
	} else if (off < zend && dst_has_data(a, off, zend - off)) {
		/* (A range with no data already reads as zeros: a destination
		 * sized up front, as odxctl copy and copy-seg leave it, is all
		 * holes, and a punch per hole there cost ext4 a journal
		 * transaction each: 1000 of them took a restore from 0.75 to
		 * 1.05 s.) */
		uint64_t bs = a->bs;
		uint64_t head = (off + bs - 1) / bs * bs;
		/* At the end of the file the last partial block may go whole:
		 * bytes past the end do not exist. */
		uint64_t tail = zend == a->size ? (zend + bs - 1) / bs * bs : zend / bs * bs;
		if (head < tail) {
			r = apply_zero_edge(a, off, head - off);
			if (r == 0 && tail < zend)
				r = apply_zero_edge(a, tail, zend - tail);
			if (r == 0)
				r = apply_punch(a, head, tail - head);
		} else {
			r = apply_zero_edge(a, off, zend - off);
		}
	}
	if (r < 0)
		return r;
	if (end > a->size && end > a->want_size)
		a->want_size = end;
	*done += n;
	atomic_fetch_add(&a->eng->st.bytes_holes, n);
	return 0;
}

/* Where a buffered copy reads from: a plain descriptor, or an image whose
 * bytes must be decoded (a compressed stream). */
struct apply_src {
	int fd;                /* >= 0: pread from it */
	struct odx_image *img; /* fd < 0: odx_image_read from it */
	struct odx_error *err;
};

static ssize_t apply_src_read(const struct apply_src *s, void *buf, size_t len, uint64_t off)
{
	if (s->fd < 0)
		return odx_image_read(s->img, buf, len, off, s->err);
	for (;;) {
		ssize_t k = pread(s->fd, buf, len, (off_t)off);
		if (k >= 0 || errno != EINTR)
			return k < 0 ? -errno : k;
	}
}

/* Decoded bytes written where the cache holds them (odx_image_borrow). */
struct apply_lent {
	struct apply *a;
	uint64_t doff, written;
	int err;
};

static int apply_lent_write(void *ctx, const void *p, size_t n)
{
	struct apply_lent *l = ctx;
	uint64_t w = 0;
	int r = apply_write(l->a, p, n, l->doff, &w);
	l->written += w;
	l->doff += n;
	l->err = r;
	return r < 0;
}

/* The decoded bytes of [soff, soff + want) written at doff without going
 * through the buffer: one copy of every byte less.  Returns the bytes
 * done, or -errno; -EOPNOTSUPP (nothing counted) when the image does not
 * hold them in memory: the caller copies them through the buffer. */
static ssize_t apply_lent(struct apply *a, const struct apply_src *src, uint64_t soff,
			  uint64_t doff, size_t want, uint64_t *done)
{
	struct odx_pins pins = {0};
	struct apply_lent l = {.a = a, .doff = doff};
	ssize_t k = odx_image_borrow(src->img, soff, want, &pins, apply_lent_write, &l, src->err);
	odx_pins_release(&pins);
	if (k == -EOPNOTSUPP)
		return k; /* what was written is written again, the same bytes */
	*done += l.written;
	atomic_fetch_add(&a->eng->st.bytes_buffered, l.written);
	return l.err < 0 ? l.err : k;
}

/* Copy n bytes through the bounded buffer: compressed sources, and plain
 * ones the kernel would not copy. */
static int apply_buffered(struct apply *a, const struct apply_src *src, uint64_t soff,
			  uint64_t doff, uint64_t n, uint64_t *done)
{
	bool lend = src->fd < 0;
	uint8_t *buf = lend ? NULL : apply_buffer(a);
	if (!lend && !buf)
		return -ENOMEM;
	while (n) {
		size_t want = n < a->bufsize ? (size_t)n : a->bufsize;
		ssize_t k = lend ? apply_lent(a, src, soff, doff, want, done) : -EOPNOTSUPP;
		if (k == -EOPNOTSUPP) { /* through the buffer */
			lend = false;
			if (!buf && !(buf = apply_buffer(a)))
				return -ENOMEM;
			k = apply_src_read(src, buf, want, soff);
			if (k > 0) {
				uint64_t w = 0;
				int r = apply_write(a, buf, (size_t)k, doff, &w);
				*done += w;
				atomic_fetch_add(&a->eng->st.bytes_buffered, w);
				if (r < 0)
					return r;
			}
		}
		if (k < 0)
			return (int)k;
		if (k == 0)
			return -EIO; /* the source is shorter than its map said */
		soff += (uint64_t)k;
		doff += (uint64_t)k;
		n -= (uint64_t)k;
	}
	return 0;
}

static int apply_fd(struct apply *a, int sfd, uint64_t soff, uint64_t doff, uint64_t n,
		    uint64_t *done)
{
	while (n && a->direct && a->eng->cfg.use_copy_file_range) {
		loff_t in = (loff_t)soff, out = (loff_t)doff;
		size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
		ssize_t k = copy_file_range(sfd, &in, a->dst->fd, &out, chunk, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EXDEV || errno == EOPNOTSUPP || errno == EINVAL ||
			      errno == ENOSYS))
			break;
		if (k < 0)
			return -errno;
		if (k == 0)
			break; /* let the buffered path tell EOF from a refusal */
		soff += (uint64_t)k;
		doff += (uint64_t)k;
		n -= (uint64_t)k;
		*done += (uint64_t)k;
		if (doff > a->size)
			a->size = doff;
		atomic_fetch_add(&a->eng->st.bytes_kernel, (uint64_t)k);
	}
	const struct apply_src plain = {.fd = sfd};
	return n ? apply_buffered(a, &plain, soff, doff, n, done) : 0;
}

/* Index of the extent holding token offset `rel`. */
static size_t apply_find(const struct offload_token *tok, uint64_t rel)
{
	size_t lo = 0, hi = tok->n_ext;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (tok->ext[mid].rel <= rel)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int apply_setup(struct apply *a)
{
	struct stat st;
	if (fstat(a->dst->fd, &st) < 0)
		return -errno;
	int r = a->direct ? 0 : odx_image_getattr(a->dst, &st);
	if (r < 0)
		return r;
	a->size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
	a->bs = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
	return 0;
}

/* A destination written as a stream (odx_image_takes_puts): each extent
 * of the token goes to its put, which decides what moves how. */
static int apply_puts(struct odx_offload_engine *eng, const struct offload_token *tok,
		      struct odx_image *dst, uint64_t dst_off, uint64_t toff, uint64_t len,
		      uint64_t *written, struct odx_error *err)
{
	struct odx_sink_stats st = {0};
	int r = odx_image_will_modify(dst);
	if (r == 0 && tok->n_ext == 0) {
		struct odx_put p = {.length = len, .kind = ODX_SEG_HOLE, .fd = -1};
		if ((r = odx_image_put(dst, dst_off, &p, &st, err)) == 0)
			*written += len;
	}
	uint64_t pos = toff, end = toff + len;
	for (size_t i = tok->n_ext ? apply_find(tok, toff) : 0;
	     r == 0 && tok->n_ext && pos < end && i < tok->n_ext; i++) {
		const struct tok_ext *e = &tok->ext[i];
		uint64_t e_end = e->rel + e->length;
		uint64_t piece = (e_end < end ? e_end : end) - pos;
		uint64_t within = pos - e->rel;
		struct odx_put p = {
			.length = piece, .fd = -1, .src = tok->img,
			.src_offset = tok->src_off + pos,
		};
		if (e->kind == TOK_HOLE) {
			p.kind = ODX_SEG_HOLE;
		} else if (e->kind == TOK_FD) {
			p.kind = ODX_SEG_FD;
			p.fd = e->fd;
			p.fd_offset = e->src + within;
		} else {
			p.kind = ODX_SEG_DECODE;
		}
		if ((r = odx_image_put(dst, dst_off + (pos - toff), &p, &st, err)) == 0)
			*written += piece;
		pos += piece;
	}
	atomic_fetch_add(&eng->st.bytes_kernel, st.bytes_kernel);
	atomic_fetch_add(&eng->st.bytes_verbatim, st.bytes_verbatim);
	atomic_fetch_add(&eng->st.bytes_buffered, st.bytes_buffered);
	atomic_fetch_add(&eng->st.bytes_holes, st.bytes_holes);
	return r;
}

int apply_token(struct odx_offload_engine *eng, const struct offload_token *tok,
		struct odx_image *dst, uint64_t dst_off, uint64_t toff, uint64_t len,
		uint64_t *written, struct odx_error *err)
{
	if (odx_image_takes_puts(dst)) {
		*written = 0;
		return apply_puts(eng, tok, dst, dst_off, toff, len, written, err);
	}

	struct apply a = {
		.eng = eng, .dst = dst, .direct = apply_is_direct(dst),
		.bufsize = eng->cfg.buffer_size,
	};
	*written = 0;
	int r = apply_setup(&a);
	/* Before the first byte changes, as the kernel does it: the
	 * privileges a write by the current actor drops (backend.h).  The
	 * generic path writes through the wrappers, which do it themselves. */
	if (r == 0 && a.direct)
		r = odx_image_will_modify(dst);
	if (r < 0)
		return r;
	/* A direct destination that this write extends is sized to the write's
	 * end first, as cp and the native SEEK_DATA copy do: ext4 then allocates
	 * inside i_size and writeback journals no size change per extent (an
	 * uncompressed restore, fsync included, five rounds alternated: 0.90 of
	 * the native copy growing the file, 0.98 sized first).  a.size stays
	 * the end of what is written, so the holes past it still cost nothing;
	 * a write that stops early cuts the file back to what it wrote. */
	uint64_t old_size = a.size, dst_end = dst_off + len;
	bool presized = a.direct && dst_end > a.size && ftruncate(dst->fd, (off_t)dst_end) == 0;
	if (tok->n_ext == 0) {
		r = apply_hole(&a, dst_off, len, written);
	} else {
		uint64_t pos = toff, end = toff + len;
		for (size_t i = apply_find(tok, toff); r == 0 && pos < end && i < tok->n_ext; i++) {
			const struct tok_ext *e = &tok->ext[i];
			uint64_t e_end = e->rel + e->length;
			uint64_t piece = (e_end < end ? e_end : end) - pos;
			uint64_t within = pos - e->rel;
			uint64_t doff = dst_off + (pos - toff);
			if (e->kind == TOK_HOLE)
				r = apply_hole(&a, doff, piece, written);
			else if (e->kind == TOK_FD)
				r = apply_fd(&a, e->fd, e->src + within, doff, piece, written);
			else
				r = apply_buffered(&a, &(struct apply_src){-1, tok->img, err},
						   e->src + within, doff, piece, written);
			pos += piece;
		}
	}
	if (presized) {
		uint64_t keep = dst_off + *written > old_size ? dst_off + *written : old_size;
		if (keep < dst_end && ftruncate(dst->fd, (off_t)keep) < 0 && r == 0)
			r = -errno;
	} else if (a.want_size > a.size) {
		int t = a.direct ? (ftruncate(dst->fd, (off_t)a.want_size) < 0 ? -errno : 0)
				 : odx_image_truncate(dst, a.want_size);
		if (t < 0 && r == 0) {
			/* The holes past the old end were not made: drop them. */
			*written = a.size > dst_off ? a.size - dst_off : 0;
			r = t;
		}
	}
	apply_buffer_put(&a);
	return r;
}
