/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A stream being written, frame by frame, in ascending order: the one
 * writer behind odx_stream_write (a raw image), odxctl compact (a stream)
 * and the streams the daemon writes as the destination of an offloaded
 * copy (src/backend/sink.c).
 *
 * What goes where:
 *   - frame headers, the meta frame and the trailer are written by the
 *     sink through a small buffer; a data frame's header carries its
 *     length, known when the run of data ends, so it is written as a
 *     placeholder and patched; the meta frame is reserved at its largest
 *     (virtualSize and dataSize of 20 digits) and rewritten at the end,
 *     padded with spaces inside the JSON to the same length;
 *   - plain bytes of an uncompressed destination go from their descriptor
 *     into the payload with copy_file_range (backing file to backing file,
 *     in the kernel);
 *   - a compressed chunk of a source with the destination's codec that
 *     the destination takes whole is copied as it is, compressed
 *     (copy_file_range again): no decoding, no encoding;
 *   - everything else (bytes to compress, chunks taken in part) goes
 *     through the sink's buffers.
 * The counters say how many bytes took each way.
 *
 * Chunking of a compressed destination: a data frame's chunks are 32 MiB
 * of its data each but the last (odxfs-stream(5)).  A chunk copied whole
 * starts a new frame unless the frame so far is whole 32 MiB chunks, and
 * ends its frame unless it is 32 MiB itself, so the frames stay valid
 * whatever the sources' frames were.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream-internal.h"

#define OUTBUF (4u << 20)
#define BOUNCE (1u << 20)

struct odx_sink {
	int fd;
	char *name;
	/* buffered output: buf holds file bytes [buf_start, buf_start + len) */
	char *buf;
	size_t len;
	uint64_t buf_start;
	/* the run being written */
	int run;            /* -1 none, FRAME_ZERO or FRAME_DATA */
	uint64_t run_start, run_len, hdr_at;
	/* compression */
	enum odx_codec codec;
	int level;
	char *chunk, *cbuf;
	size_t chunk_len, cbuf_cap;
	uint32_t *csizes;   /* chunk sizes of the data run being written */
	size_t ncs, cs_cap;
	struct trailer tr;
	uint64_t data_bytes;
	uint64_t end;       /* logical end of what was written */
	bool incremental;
	bool no_cfr;
	struct meta m;
	size_t meta_len;
	char *bounce;       /* decoded or refused bytes on their way */
	int failed;         /* the first failure's errno: nothing more is taken */
	bool finished;
	struct odx_sink_stats st;
	uint64_t written_back; /* writeback started up to here */
};

/* Start the writeback of what was written, every WRITEBACK bytes, so that
 * the disk writes while the stream is still being made and the fsync that
 * publishes it has little left to wait for (it was half of a merge's time
 * when everything waited for the end). */
#define WRITEBACK ((uint64_t)64 << 20)

static void s_writeback(struct odx_sink *s)
{
	if (s->buf_start - s->written_back < WRITEBACK)
		return;
	(void)sync_file_range(s->fd, (off64_t)s->written_back,
			      (off64_t)(s->buf_start - s->written_back), SYNC_FILE_RANGE_WRITE);
	s->written_back = s->buf_start;
}

static int s_fail(struct odx_sink *s, struct odx_error *err, int e, const char *what)
{
	s->failed = e;
	return odx_error_set(err, e, "%s: %s: %s", s->name, what, strerror(e));
}

static int s_patch(struct odx_sink *s, uint64_t at, const void *p, size_t n,
		   struct odx_error *err);

/* The header of the data run being written, saying the run so far plus
 * `more` bytes about to follow.  Kept true whenever bytes of the run reach
 * the file, so a stream cut short anywhere (a crash, a kill) is torn, not
 * damaged: every header says at least what follows it. */
static int hdr_sync(struct odx_sink *s, uint64_t more, struct odx_error *err)
{
	if (s->run != FRAME_DATA)
		return 0;
	char h[ODX_FRAME_HEADER_LEN];
	frame_format(h, FRAME_DATA, s->run_start, s->run_len + more);
	return s_patch(s, s->hdr_at, h, sizeof h, err);
}

static int s_flush(struct odx_sink *s, struct odx_error *err)
{
	int rc = hdr_sync(s, 0, err);
	if (rc)
		return rc;
	rc = io_pwrite_full(s->fd, s->buf, s->len, s->buf_start);
	if (rc)
		return s_fail(s, err, -rc, "write failed");
	s->buf_start += s->len;
	s->len = 0;
	s_writeback(s);
	return 0;
}

static int s_write(struct odx_sink *s, const void *p, size_t n, struct odx_error *err)
{
	int rc;
	/* Large writes go straight to the file, after what is buffered. */
	if ((s->len + n > OUTBUF || n > OUTBUF / 2) && s->len && (rc = s_flush(s, err)))
		return rc;
	if (n > OUTBUF / 2) {
		rc = io_pwrite_full(s->fd, p, n, s->buf_start);
		if (rc)
			return s_fail(s, err, -rc, "write failed");
		s->buf_start += n;
		return 0;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

static uint64_t s_pos(const struct odx_sink *s)
{
	return s->buf_start + s->len;
}

/* Overwrite bytes already written (a header is never split by a flush). */
static int s_patch(struct odx_sink *s, uint64_t at, const void *p, size_t n,
		   struct odx_error *err)
{
	if (at >= s->buf_start) {
		memcpy(s->buf + (at - s->buf_start), p, n);
		return 0;
	}
	int rc = io_pwrite_full(s->fd, p, n, at);
	return rc ? s_fail(s, err, -rc, "write failed") : 0;
}

static int s_header(struct odx_sink *s, enum frame_kind k, uint64_t start, uint64_t len,
		    struct odx_error *err)
{
	char h[ODX_FRAME_HEADER_LEN];
	frame_format(h, k, start, len);
	return s_write(s, h, sizeof h, err);
}

static int push_csize(struct odx_sink *s, uint32_t n, struct odx_error *err)
{
	if (s->ncs == s->cs_cap) {
		size_t cap = s->cs_cap ? 2 * s->cs_cap : 16;
		uint32_t *c = realloc(s->csizes, cap * sizeof *c);
		if (!c)
			return s_fail(s, err, ENOMEM, "out of memory");
		s->csizes = c;
		s->cs_cap = cap;
	}
	s->csizes[s->ncs++] = n;
	return 0;
}

static int compress_chunk(struct odx_sink *s, struct odx_error *err)
{
	if (!s->chunk_len)
		return 0;
	ssize_t n = codec_compress(s->codec, s->level, s->chunk, s->chunk_len, s->cbuf,
				   s->cbuf_cap);
	if (n < 0)
		return s_fail(s, err, (int)-n, "compression failed");
	int rc = push_csize(s, (uint32_t)n, err);
	s->chunk_len = 0;
	return rc ? rc : s_write(s, s->cbuf, (size_t)n, err);
}

static int run_end(struct odx_sink *s, struct odx_error *err)
{
	int rc = 0;
	if (s->run == FRAME_ZERO) {
		rc = s_header(s, FRAME_ZERO, s->run_start, s->run_len, err);
	} else if (s->run == FRAME_DATA) {
		char h[ODX_FRAME_HEADER_LEN];
		if (s->codec != ODX_CODEC_NONE) {
			if ((rc = compress_chunk(s, err)))
				return rc;
			/* As the backup tool writes it: frames of the chunk size
			 * or more get the {"size": [chunks]} form. */
			rc = trailer_push(&s->tr, s->csizes, (uint32_t)s->ncs,
					  s->run_len >= ODX_CHUNK_SIZE);
			if (rc)
				return s_fail(s, err, -rc, "out of memory");
			s->ncs = 0;
		}
		frame_format(h, FRAME_DATA, s->run_start, s->run_len);
		if (!(rc = s_patch(s, s->hdr_at, h, sizeof h, err)))
			rc = s_write(s, "\r\n", 2, err);
		s->data_bytes += s->run_len;
	}
	s->run = -1;
	return rc;
}

/* Go on with a run of kind k at off, or end the run and start one. */
static int run_at(struct odx_sink *s, int k, uint64_t off, struct odx_error *err)
{
	if (s->run == k && s->run_start + s->run_len == off)
		return 0;
	int rc = run_end(s, err);
	if (rc)
		return rc;
	s->run = k;
	s->run_start = off;
	s->run_len = 0;
	if (k == FRAME_DATA) {
		s->hdr_at = s_pos(s);
		return s_header(s, FRAME_DATA, off, 0, err);
	}
	return 0;
}

/* Before writing at off: refuse what goes backwards, and fill a gap with a
 * zero frame (a full stream covers its disk) or leave it without a frame
 * (an incremental: unchanged). */
static int s_reach(struct odx_sink *s, uint64_t off, uint64_t len, struct odx_error *err)
{
	if (s->failed)
		return odx_error_set(err, s->failed, "%s: an earlier write failed: %s", s->name,
				     strerror(s->failed));
	if (s->finished)
		return odx_error_set(err, EINVAL, "%s: the stream is already finished", s->name);
	/* a caller's mistake fails the sink too: what it wrote so far is
	 * not what the caller meant */
	if (off < s->end) {
		s->failed = EINVAL;
		return odx_error_set(err, EINVAL,
				     "%s: a stream is written in order: offset %" PRIu64
				     " is before the end of what was written (%" PRIu64 ")",
				     s->name, off, s->end);
	}
	if (off > UINT64_MAX / 2 || len > UINT64_MAX / 2 - off) {
		s->failed = EFBIG;
		return odx_error_set(err, EFBIG, "%s: offset %" PRIu64 " is too large", s->name, off);
	}
	if (off > s->end && !s->incremental) {
		int rc = run_at(s, FRAME_ZERO, s->end, err);
		if (rc)
			return rc;
		s->run_len += off - s->end;
		s->st.bytes_holes += off - s->end;
	}
	s->end = off;
	return 0;
}

/* Data bytes at off (after s_reach), into the payload or the chunk. */
static int put_bytes(struct odx_sink *s, uint64_t off, const char *p, size_t n,
		     struct odx_error *err)
{
	int rc = run_at(s, FRAME_DATA, off, err);
	if (rc)
		return rc;
	s->run_len += n;
	s->end = off + n;
	s->st.bytes_buffered += n;
	if (s->codec == ODX_CODEC_NONE)
		return s_write(s, p, n, err);
	while (n) {
		size_t room = ODX_CHUNK_SIZE - s->chunk_len, take = n < room ? n : room;
		memcpy(s->chunk + s->chunk_len, p, take);
		s->chunk_len += take;
		p += take;
		n -= take;
		if (s->chunk_len == ODX_CHUNK_SIZE && (rc = compress_chunk(s, err)))
			return rc;
	}
	return 0;
}

int odx_sink_zero(struct odx_sink *s, uint64_t off, uint64_t len, struct odx_error *err)
{
	int rc = s_reach(s, off, len, err);
	if (rc || !len)
		return rc;
	if ((rc = run_at(s, FRAME_ZERO, off, err)))
		return rc;
	s->run_len += len;
	s->end = off + len;
	s->st.bytes_holes += len;
	return 0;
}

int odx_sink_data(struct odx_sink *s, uint64_t off, const void *buf, size_t len,
		  struct odx_error *err)
{
	int rc = s_reach(s, off, len, err);
	return rc || !len ? rc : put_bytes(s, off, buf, len, err);
}

/* Copy len bytes from fd at foff to the end of the output, in the kernel
 * while it copies, else through the bounce buffer; *moved gets the bytes
 * copied (also when it fails part way). */
static int copy_in(struct odx_sink *s, int fd, uint64_t foff, uint64_t len, uint64_t ulen,
		   uint64_t *moved, bool *kernel, struct odx_error *err)
{
	*moved = 0;
	int rc = s->len ? s_flush(s, err) : 0;
	if (!rc)
		rc = hdr_sync(s, ulen, err); /* on disk: the header first */
	if (rc)
		return rc;
	uint64_t done = 0;
	rc = io_copy_range_ex(fd, foff, s->fd, s->buf_start, len, !s->no_cfr, &done, kernel);
	s->buf_start += done;
	*moved = done;
	s_writeback(s);
	return rc ? s_fail(s, err, -rc, "copying data") : 0;
}

int odx_sink_data_fd(struct odx_sink *s, uint64_t off, uint64_t len, int fd, uint64_t foff,
		     struct odx_error *err)
{
	int rc = s_reach(s, off, len, err);
	if (rc || !len)
		return rc;
	if (s->codec != ODX_CODEC_NONE) {
		/* to be compressed: through the buffer */
		while (len) {
			size_t want = len < BOUNCE ? (size_t)len : BOUNCE;
			ssize_t n = io_pread_full(fd, s->bounce, want, foff);
			if (n < (ssize_t)want) {
				s->failed = n < 0 ? (int)-n : EIO;
				return odx_error_set(err, s->failed,
						     "%s: reading the data to write: %s", s->name,
						     n < 0 ? strerror((int)-n) : "the source ended early");
			}
			if ((rc = put_bytes(s, off, s->bounce, want, err)))
				return rc;
			off += want;
			foff += want;
			len -= want;
		}
		return 0;
	}
	if ((rc = run_at(s, FRAME_DATA, off, err)))
		return rc;
	uint64_t moved;
	bool kernel = true;
	rc = copy_in(s, fd, foff, len, len, &moved, &kernel, err);
	s->run_len += moved;
	s->end = off + moved;
	if (kernel)
		s->st.bytes_kernel += moved;
	else
		s->st.bytes_buffered += moved;
	return rc;
}

int odx_sink_chunk(struct odx_sink *s, uint64_t off, uint64_t ulen, int fd, uint64_t coff,
		   uint64_t clen, struct odx_error *err)
{
	if (s->codec == ODX_CODEC_NONE || ulen == 0 || ulen > ODX_CHUNK_SIZE ||
	    clen == 0 || clen > ODX_CHUNK_CSIZE_MAX)
		return s_fail(s, err, EINVAL, "not a chunk this stream can take");
	int rc = s_reach(s, off, ulen, err);
	if (rc)
		return rc;
	/* it continues the run only after whole 32 MiB chunks */
	bool go_on = s->run == FRAME_DATA && s->run_start + s->run_len == off &&
		     s->chunk_len == 0 && s->run_len % ODX_CHUNK_SIZE == 0;
	if (!go_on && ((rc = run_end(s, err)) || (rc = run_at(s, FRAME_DATA, off, err))))
		return rc;
	bool kernel = true;
	uint64_t moved;
	if ((rc = copy_in(s, fd, coff, clen, ulen, &moved, &kernel, err)))
		return rc;
	if ((rc = push_csize(s, (uint32_t)clen, err)))
		return rc;
	s->run_len += ulen;
	s->end = off + ulen;
	s->st.bytes_verbatim += ulen;
	return ulen < ODX_CHUNK_SIZE ? run_end(s, err) : 0;
}

int odx_sink_stream(struct odx_sink *s, uint64_t off, struct odx_stream *src, uint64_t soff,
		    uint64_t len, struct odx_error *err)
{
	const struct odx_extmap *m = &src->map;
	if (soff > m->size || len > m->size - soff)
		return odx_error_set(err, EINVAL, "%s: range beyond the end of %s", s->name,
				     src->name);
	uint64_t pos = soff, end = soff + len;
	size_t i = len ? odx_extmap_find(m, soff) : 0;
	int rc = 0;
	while (!rc && pos < end) {
		struct odx_extent x = odx_extent_slice(&m->ext[i], pos, end - pos);
		uint64_t at = off + (pos - soff);
		switch (x.kind) {
		case ODX_EXTENT_UNMAPPED:
			/* a full stream shows zeros here; an incremental one
			 * leaves it without a frame (unchanged) */
			if (!s->incremental)
				rc = odx_sink_zero(s, at, x.length, err);
			break;
		case ODX_EXTENT_ZERO:
			rc = odx_sink_zero(s, at, x.length, err);
			break;
		case ODX_EXTENT_BAD:
			s->failed = EIO;
			rc = odx_error_at(err, EIO, src->name, pos,
					  "damaged range: it cannot be written to %s", s->name);
			break;
		default:
			if (x.frame == ODX_NO_FRAME) {
				rc = odx_sink_data_fd(s, at, x.length, src->fd, x.src, err);
				break;
			}
			/* compressed: whole chunks of our codec as they are */
			uint64_t split = src->chunks[x.frame].ulen;
			uint64_t rel = x.offset - x.src, done = 0;
			size_t ci = x.frame + (size_t)(rel / split);
			while (!rc && done < x.length) {
				if (ci >= src->nchunks) {
					s->failed = EIO;
					return odx_error_set(err, EIO, "%s: chunk index out of range",
							     src->name);
				}
				const struct chunk *c = &src->chunks[ci];
				uint64_t in = (rel + done) % split;
				uint64_t n = c->ulen - in < x.length - done ? c->ulen - in
									    : x.length - done;
				if (in == 0 && n == c->ulen && src->info.codec == s->codec)
					rc = odx_sink_chunk(s, at + done, n, src->fd, c->file_off,
							    c->csize, err);
				else
					rc = odx_sink_decoded(s, at + done, src, x.offset + done, n,
							      err);
				done += n;
				ci++;
			}
		}
		pos += x.length;
		i++;
	}
	return rc;
}

int odx_sink_decoded(struct odx_sink *s, uint64_t off, struct odx_stream *src, uint64_t soff,
		     uint64_t len, struct odx_error *err)
{
	int rc = s_reach(s, off, len, err);
	while (!rc && len) {
		size_t want = len < BOUNCE ? (size_t)len : BOUNCE;
		ssize_t n = odx_stream_pread(src, s->bounce, want, soff, err);
		if (n < (ssize_t)want) {
			s->failed = n < 0 ? (int)-n : EIO;
			return n < 0 ? (int)n
				     : odx_error_set(err, EIO, "%s: shorter than its map", src->name);
		}
		rc = put_bytes(s, off, s->bounce, want, err);
		off += want;
		soff += want;
		len -= want;
	}
	return rc;
}

uint64_t odx_sink_end(const struct odx_sink *s)
{
	return s->end;
}

void odx_sink_stats(const struct odx_sink *s, struct odx_sink_stats *out)
{
	*out = s->st;
}

/* The meta of the new stream: the given text (its keys kept, in order) or
 * a fresh object, with the keys virtnbdbackup writes set as asked. */
static int sink_meta(struct odx_sink *s, const struct odx_sink_opts *o, struct odx_error *err)
{
	int rc;
	if (o->meta_text) {
		rc = meta_parse(o->meta_text, strlen(o->meta_text), s->name, 0, true, &s->m, err);
		if (rc)
			return rc;
	} else {
		struct odx_write_opts w = {.codec = o->codec, .level = s->level};
		if ((rc = meta_new(&s->m, 0, &w)))
			return odx_error_set(err, -rc, "out of memory");
	}
	rc = meta_set(&s->m, o->codec, s->level, o->incremental, o->disk_name, o->disk_format,
		      o->checkpoint, o->parent, o->date);
	if (rc)
		return odx_error_set(err, -rc, "out of memory");
	/* Reserved at its largest (sizes below 2^63: 19 digits), written
	 * with values a reader takes, so that a stream cut short is torn,
	 * not damaged: the size it will have when known, else the largest a
	 * disk may have; dataSize is checked only after a stop frame. */
	const uint64_t max = ((uint64_t)1 << 63) - 1;
	s->m.virtual_size = max;
	char *text = meta_print(&s->m, max, 0);
	if (!text)
		return odx_error_set(err, ENOMEM, "out of memory");
	s->meta_len = strlen(text);
	free(text);
	s->m.virtual_size = o->virtual_size && o->virtual_size <= max ? o->virtual_size : max;
	text = meta_print(&s->m, 0, s->meta_len);
	if (!text || strlen(text) != s->meta_len) {
		free(text);
		return odx_error_set(err, ENOMEM, "out of memory");
	}
	rc = s_header(s, FRAME_META, 0, s->meta_len, err);
	if (!rc)
		rc = s_write(s, text, s->meta_len, err);
	if (!rc)
		rc = s_write(s, "\r\n", 2, err);
	free(text);
	return rc;
}

int odx_sink_new(int fd, const char *name, const struct odx_sink_opts *o,
		 struct odx_sink **out, struct odx_error *err)
{
	struct odx_sink *s = calloc(1, sizeof *s);
	if (!s)
		return odx_error_set(err, ENOMEM, "out of memory");
	s->fd = fd;
	s->run = -1;
	s->codec = o->codec;
	s->level = o->level ? o->level : codec_default_level(o->codec);
	s->incremental = o->incremental;
	s->no_cfr = o->no_copy_file_range;
	s->name = strdup(name ? name : "stream");
	s->buf = malloc(OUTBUF);
	s->bounce = malloc(BOUNCE);
	if (o->codec != ODX_CODEC_NONE) {
		s->chunk = malloc(ODX_CHUNK_SIZE);
		s->cbuf_cap = codec_bound(o->codec, ODX_CHUNK_SIZE);
		s->cbuf = malloc(s->cbuf_cap);
	}
	int rc;
	if (!s->name || !s->buf || !s->bounce ||
	    (o->codec != ODX_CODEC_NONE && (!s->chunk || !s->cbuf)))
		rc = odx_error_set(err, ENOMEM, "out of memory");
	else
		rc = sink_meta(s, o, err);
	if (rc) {
		odx_sink_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int odx_sink_finish(struct odx_sink *s, uint64_t virtual_size, struct odx_error *err)
{
	if (virtual_size < s->end || virtual_size >= (uint64_t)1 << 63) {
		s->failed = EINVAL;
		return odx_error_set(err, EINVAL,
				     "%s: size %" PRIu64 " is below what was written (%" PRIu64
				     ") or not below 2^63",
				     s->name, virtual_size, s->end);
	}
	int rc = s_reach(s, virtual_size, 0, err);
	if (!rc)
		rc = run_end(s, err);
	if (!rc)
		rc = s_flush(s, err);
	if (!rc && (rc = stream_write_tail(s->fd, s_pos(s), s->codec, &s->tr, err)))
		s->failed = -rc;
	if (rc)
		return rc;
	s->m.virtual_size = virtual_size;
	char *text = meta_print(&s->m, s->data_bytes, s->meta_len);
	if (!text || strlen(text) != s->meta_len) {
		free(text);
		return s_fail(s, err, EOVERFLOW, "meta JSON outgrew its reserved space");
	}
	rc = io_pwrite_full(s->fd, text, s->meta_len, ODX_FRAME_HEADER_LEN);
	free(text);
	if (rc)
		return s_fail(s, err, -rc, "write failed");
	s->finished = true;
	return 0;
}

void odx_sink_free(struct odx_sink *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->buf);
	free(s->bounce);
	free(s->chunk);
	free(s->cbuf);
	free(s->csizes);
	trailer_free(&s->tr);
	meta_free(&s->m);
	free(s);
}
