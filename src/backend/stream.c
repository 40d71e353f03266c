/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stream backend: a virtnbdbackup sparse stream shown as the raw disk
 * it encodes, read-only.  Layout questions are answered from the stream's
 * extent map: uncompressed data is an FD segment at its payload offset (the
 * kernel can splice it), compressed data a DECODE segment read through the
 * chunk cache, zero and unmapped ranges are holes, ranges lost to
 * corruption BAD segments.
 *
 * Descriptors: the stream library keeps its own duplicate of the
 * descriptor it is opened on, so open closes the image's and lends the
 * library's as img->fd (what FD segments, fstat and the offload engine
 * use): one descriptor per stream image.  An idle image gives it up
 * (suspend: odx_stream_detach_fd) and takes a new one on resume, which the
 * library refuses with -ESTALE when the file is not the one indexed.
 *
 * Damage: a strict stream (no ODX_OPEN_SALVAGE) whose chunk fails to
 * decode remembers it (odx_stream_damage) and fails every later read; map
 * then answers BAD for everything, so holes and spliced data are not
 * served either, and the daemon can fail every later open.
 *
 * Locking: an opened odx_stream is immutable and thread-safe (stream.h), so
 * this file keeps no lock; suspend and resume are serialised by the caller
 * against every other use.  Write-side operations are absent: backend.c
 * answers EROFS for them.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

static struct odx_stream *stream_of(struct odx_image *img)
{
	return img->priv;
}

static int stream_probe(int fd, const struct stat *st)
{
	if (!S_ISREG(st->st_mode) || st->st_size < ODX_FRAME_HEADER_LEN)
		return 0;
	return odx_stream_probe(fd);
}

static int stream_open(struct odx_image *img, const struct odx_backend_config *cfg,
		       struct odx_error *err)
{
	struct odx_stream_opts opts = {
		.flags = cfg ? cfg->stream_flags : 0,
		.cache = cfg ? cfg->cache : NULL,
	};
	struct odx_stream *s;
	int r = odx_stream_open_fd(img->fd, img->name, &opts, &s, err);
	if (r < 0)
		return r;
	img->priv = s;
	close(img->fd);
	img->fd = odx_stream_fd(s);
	return 0;
}

static void stream_close(struct odx_image *img)
{
	odx_stream_close(stream_of(img));
	img->priv = NULL;
	img->fd = -1; /* the library's, closed with it */
}

static size_t stream_memory(struct odx_image *img)
{
	return sizeof *img + strlen(img->name) + 1 + odx_stream_memory(stream_of(img));
}

static int stream_suspend(struct odx_image *img)
{
	int r = odx_stream_detach_fd(stream_of(img));
	if (r == 0)
		img->fd = -1;
	return r;
}

static int stream_resume(struct odx_image *img, int fd, struct odx_error *err)
{
	int r = odx_stream_attach_fd(stream_of(img), fd, err); /* takes fd */
	if (r == 0)
		img->fd = odx_stream_fd(stream_of(img));
	return r;
}

static const char *stream_damage(struct odx_image *img)
{
	return odx_stream_damage(stream_of(img));
}

static int stream_getattr(struct odx_image *img, struct stat *st)
{
	const struct odx_stream_info *info = odx_stream_info(stream_of(img));
	/* Counted once at open: getattr is hot, a scan of the map is O(n). */
	uint64_t data = info->mapped_bytes;

	st->st_size = (off_t)info->virtual_size;
	st->st_blocks = (blkcnt_t)((data + 511) / 512);
	return 0;
}

static int stream_seg_kind(const struct odx_extent *e)
{
	switch (e->kind) {
	case ODX_EXTENT_DATA:
		return e->frame == ODX_NO_FRAME ? ODX_SEG_FD : ODX_SEG_DECODE;
	case ODX_EXTENT_BAD:
		return ODX_SEG_BAD;
	default:
		return ODX_SEG_HOLE;
	}
}

static int stream_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		      void *ctx)
{
	struct odx_stream *s = stream_of(img);
	const struct odx_extmap *m = odx_stream_map(s);
	uint64_t end = off >= m->size || len > m->size - off ? m->size : off + len;
	uint64_t pos = off;
	size_t i = odx_extmap_find(m, off);

	if (pos < end && odx_stream_damage(s)) {
		struct odx_seg bad = {
			.offset = pos,
			.length = end - pos,
			.kind = ODX_SEG_BAD,
			.extent_kind = ODX_EXTENT_BAD,
			.fd = -1,
		};
		return fn(ctx, &bad);
	}

	for (; pos < end && i < m->count; i++) {
		const struct odx_extent *e = &m->ext[i];
		uint64_t e_end = e->offset + e->length;
		uint64_t n = (e_end < end ? e_end : end) - pos;
		struct odx_extent sl = odx_extent_slice(e, pos, n);
		struct odx_seg seg = {
			.offset = pos,
			.length = n,
			.kind = stream_seg_kind(e),
			.extent_kind = e->kind,
			.fd = -1,
		};
		if (seg.kind == ODX_SEG_FD) {
			seg.fd = odx_stream_fd(s);
			seg.fd_offset = sl.src;
		}
		int r = fn(ctx, &seg);
		if (r)
			return r;
		pos += n;
	}
	return 0;
}

static ssize_t stream_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
			   struct odx_error *err)
{
	return odx_stream_pread(stream_of(img), buf, len, off, err);
}

static ssize_t stream_borrow(struct odx_image *img, uint64_t off, size_t len,
			   struct odx_pins *pins, odx_borrow_fn fn, void *ctx, struct odx_error *err)
{
	return odx_stream_borrow(stream_of(img), off, len, pins, fn, ctx, err);
}

static off_t stream_lseek(struct odx_image *img, off_t off, int whence)
{
	if (off < 0)
		return -ENXIO;
	return (off_t)odx_extmap_seek(odx_stream_map(stream_of(img)), (uint64_t)off,
				      whence);
}

/* Called once per image (the daemon logs it): a scan of the map for BAD
 * extents, which a salvaged stream has for damaged frames even when its
 * walk went on to the end. */
static const char *stream_problem(struct odx_image *img, int *kind)
{
	const struct odx_stream_info *info = odx_stream_info(stream_of(img));
	const struct odx_extmap *m = odx_stream_map(stream_of(img));
	bool bad = info->corrupt;
	for (size_t i = 0; i < m->count && !bad; i++)
		bad = m->ext[i].kind == ODX_EXTENT_BAD;
	if (bad)
		*kind = ODX_PROBLEM_DAMAGED;
	else if (info->torn)
		*kind = ODX_PROBLEM_TORN;
	else if (info->warnings && info->problem[0])
		*kind = ODX_PROBLEM_WHOLE;
	else
		return NULL;
	return info->problem[0] ? info->problem : bad ? "damaged frames" : "torn tail";
}

static struct odx_stream *stream_stream_at(struct odx_image *img, uint64_t off, uint64_t *len)
{
	(void)off;
	(void)len;
	return stream_of(img);
}

static struct odx_stream *stream_meta_stream(struct odx_image *img)
{
	return stream_of(img);
}

const struct odx_backend_ops odx_backend_stream = {
	.name = "stream",
	.caps = ODX_CAP_FD_DATA | ODX_CAP_IMMUTABLE,
	.probe = stream_probe,
	.open = stream_open,
	.close = stream_close,
	.getattr = stream_getattr,
	.map = stream_map,
	.read = stream_read,
	.borrow = stream_borrow,
	.lseek = stream_lseek,
	.problem = stream_problem,
	.damage = stream_damage,
	.memory = stream_memory,
	.suspend = stream_suspend,
	.resume = stream_resume,
	.stream_at = stream_stream_at,
	.meta_stream = stream_meta_stream,
};
