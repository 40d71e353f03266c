/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing a stream from a raw image, in one pass over the input.
 *
 * A data frame's header carries its length, known only when the run of
 * data ends, so the header is written as a placeholder and patched; the
 * meta frame likewise is reserved at its largest (dataSize of 20 digits) and
 * rewritten at the end, padded with spaces inside the JSON to the same
 * length.  Output goes to a temporary file in the target's directory that
 * is fsynced and renamed into place, so OUT is either absent, the old file
 * or the complete new stream; OUT.chksum follows the same way.
 */
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
#define INBUF (8u << 20)

struct writer {
	int fd;
	const char *name;
	struct odx_error *err;
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
	uint32_t *csizes;
	size_t ncs, cs_cap;
	struct trailer tr;
	uint64_t data_bytes;
};

static int w_flush(struct writer *w)
{
	int rc = io_pwrite_full(w->fd, w->buf, w->len, w->buf_start);
	if (rc)
		return odx_error_set(w->err, -rc, "%s: write failed: %s", w->name, strerror(-rc));
	w->buf_start += w->len;
	w->len = 0;
	return 0;
}

static int w_write(struct writer *w, const void *p, size_t n)
{
	int rc;
	/* Large writes go straight to the file, after what is buffered. */
	if ((w->len + n > OUTBUF || n > OUTBUF / 2) && w->len && (rc = w_flush(w)))
		return rc;
	if (n > OUTBUF / 2) {
		rc = io_pwrite_full(w->fd, p, n, w->buf_start);
		if (rc)
			return odx_error_set(w->err, -rc, "%s: write failed: %s", w->name,
					     strerror(-rc));
		w->buf_start += n;
		return 0;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

static uint64_t w_pos(const struct writer *w)
{
	return w->buf_start + w->len;
}

/* Overwrite bytes already written (a header is never split by a flush). */
static int w_patch(struct writer *w, uint64_t at, const void *p, size_t n)
{
	if (at >= w->buf_start) {
		memcpy(w->buf + (at - w->buf_start), p, n);
		return 0;
	}
	int rc = io_pwrite_full(w->fd, p, n, at);
	return rc ? odx_error_set(w->err, -rc, "%s: write failed: %s", w->name, strerror(-rc)) : 0;
}

static int w_header(struct writer *w, enum frame_kind k, uint64_t start, uint64_t len)
{
	char h[ODX_FRAME_HEADER_LEN];
	frame_format(h, k, start, len);
	return w_write(w, h, sizeof h);
}

static int w_compress_chunk(struct writer *w)
{
	if (!w->chunk_len)
		return 0;
	ssize_t n = codec_compress(w->codec, w->level, w->chunk, w->chunk_len, w->cbuf, w->cbuf_cap);
	if (n < 0)
		return odx_error_set(w->err, (int)-n, "%s: compression failed", w->name);
	if (w->ncs == w->cs_cap) {
		size_t cap = w->cs_cap ? 2 * w->cs_cap : 16;
		uint32_t *c = realloc(w->csizes, cap * sizeof *c);
		if (!c)
			return odx_error_set(w->err, ENOMEM, "out of memory");
		w->csizes = c;
		w->cs_cap = cap;
	}
	w->csizes[w->ncs++] = (uint32_t)n;
	w->chunk_len = 0;
	return w_write(w, w->cbuf, (size_t)n);
}

static int run_end(struct writer *w)
{
	int rc = 0;
	if (w->run == FRAME_ZERO) {
		rc = w_header(w, FRAME_ZERO, w->run_start, w->run_len);
	} else if (w->run == FRAME_DATA) {
		char h[ODX_FRAME_HEADER_LEN];
		if (w->codec != ODX_CODEC_NONE) {
			if ((rc = w_compress_chunk(w)))
				return rc;
			/* As the backup tool writes it: frames of the chunk size
			 * or more get the {"size": [chunks]} form. */
			rc = trailer_push(&w->tr, w->csizes, (uint32_t)w->ncs,
					  w->run_len >= ODX_CHUNK_SIZE);
			if (rc)
				return odx_error_set(w->err, -rc, "out of memory");
			w->ncs = 0;
		}
		frame_format(h, FRAME_DATA, w->run_start, w->run_len);
		if (!(rc = w_patch(w, w->hdr_at, h, sizeof h)))
			rc = w_write(w, "\r\n", 2);
		w->data_bytes += w->run_len;
	}
	w->run = -1;
	return rc;
}

/* Emit bytes [off, off+n) of kind k (data bytes in p), merging with the
 * current run when contiguous and of the same kind. */
static int emit(struct writer *w, int k, uint64_t off, const char *p, size_t n)
{
	int rc;
	if (!(w->run == k && w->run_start + w->run_len == off)) {
		if ((rc = run_end(w)))
			return rc;
		w->run = k;
		w->run_start = off;
		w->run_len = 0;
		if (k == FRAME_DATA) {
			w->hdr_at = w_pos(w);
			if ((rc = w_header(w, FRAME_DATA, off, 0)))
				return rc;
		}
	}
	w->run_len += n;
	if (k != FRAME_DATA)
		return 0;
	if (w->codec == ODX_CODEC_NONE)
		return w_write(w, p, n);
	while (n) {
		size_t room = ODX_CHUNK_SIZE - w->chunk_len, take = n < room ? n : room;
		memcpy(w->chunk + w->chunk_len, p, take);
		w->chunk_len += take;
		p += take;
		n -= take;
		if (w->chunk_len == ODX_CHUNK_SIZE && (rc = w_compress_chunk(w)))
			return rc;
	}
	return 0;
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void progress(const struct odx_write_opts *o, uint64_t done, uint64_t total)
{
	if (o->progress.fn)
		o->progress.fn(o->progress.ctx, done, total);
}

/* Data (by content, at zero_block granules) of [start, end). */
static int scan_range(struct writer *w, int in, char *buf, uint64_t start, uint64_t end,
		      uint64_t zb, bool detect, const struct odx_write_opts *o, uint64_t size)
{
	uint64_t off = start;
	while (off < end) {
		size_t want = end - off < INBUF ? (size_t)(end - off) : INBUF;
		ssize_t n = io_pread_full(in, buf, want, off);
		if (n < 0)
			return odx_error_at(w->err, (int)-n, "input", off, "read failed: %s",
					    strerror((int)-n));
		if (n < (ssize_t)want)
			return odx_error_at(w->err, EIO, "input", off + (uint64_t)n,
					    "the input ends before its stated size");
		size_t i = 0;
		while (i < want) {
			/* granules are aligned to absolute offsets */
			uint64_t g_end = ((off + i) / zb + 1) * zb;
			size_t gl = g_end - (off + i) < want - i ? (size_t)(g_end - (off + i)) : want - i;
			int k = detect && all_zero(buf + i, gl) ? FRAME_ZERO : FRAME_DATA;
			int rc = emit(w, k, off + i, buf + i, gl);
			if (rc)
				return rc;
			i += gl;
		}
		off += want;
		progress(o, off, size);
	}
	return 0;
}

static int write_body(struct writer *w, int in, uint64_t size, const struct odx_write_opts *o)
{
	uint64_t zb = o->zero_block ? o->zero_block : 65536;
	char *buf = malloc(INBUF);
	int rc = 0;
	if (!buf)
		return odx_error_set(w->err, ENOMEM, "out of memory");
	if (o->incremental) {
		uint64_t prev = 0;
		for (size_t i = 0; i < o->nchanged && !rc; i++) {
			const struct odx_range *r = &o->changed[i];
			if (r->offset < prev || r->offset > size || r->length > size - r->offset) {
				rc = odx_error_set(w->err, EINVAL,
						   "changed range %zu [%" PRIu64 ", +%" PRIu64
						   ") is out of order or beyond the image size %" PRIu64,
						   i, r->offset, r->length, size);
				break;
			}
			rc = scan_range(w, in, buf, r->offset, r->offset + r->length, zb, false, o, size);
			prev = r->offset + r->length;
		}
		free(buf);
		return rc;
	}
	uint64_t off = 0;
	while (off < size && !rc) {
		off_t d = lseek(in, (off_t)off, SEEK_DATA), h;
		if (d < 0 && errno == ENXIO)
			d = (off_t)size;
		else if (d < 0) /* no SEEK_DATA here: everything is data */
			d = (off_t)off;
		if ((uint64_t)d > size)
			d = (off_t)size;
		if ((uint64_t)d > off && (rc = emit(w, FRAME_ZERO, off, NULL, (uint64_t)d - off)))
			break;
		if ((uint64_t)d >= size)
			break;
		h = lseek(in, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h > size)
			h = (off_t)size;
		rc = scan_range(w, in, buf, (uint64_t)d, (uint64_t)h, zb, true, o, size);
		off = (uint64_t)h;
	}
	progress(o, size, size);
	free(buf);
	return rc;
}

int stream_tmpfile(const char *path, char *tmp, size_t len, struct odx_error *err)
{
	if (snprintf(tmp, len, "%s.tmpXXXXXX", path) >= (int)len)
		return odx_error_set(err, ENAMETOOLONG, "%s: name too long", path);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return odx_error_set(err, errno, "%s: %s", tmp, strerror(errno));
	return fd;
}

static int write_file_atomic(const char *path, const char *text, struct odx_error *err)
{
	char tmp[PATH_MAX];
	int fd = stream_tmpfile(path, tmp, sizeof tmp, err);
	if (fd < 0)
		return fd;
	int rc = io_pwrite_full(fd, text, strlen(text), 0);
	if (!rc && (fchmod(fd, 0644) || fsync(fd)))
		rc = -errno;
	close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return odx_error_set(err, -rc, "%s: %s", path, strerror(-rc));
	}
	return 0;
}

int stream_publish(int fd, const char *tmp, const char *path, bool chksum,
		   struct odx_error *err)
{
	if (fchmod(fd, 0644) || fsync(fd))
		return odx_error_set(err, errno, "%s: %s", tmp, strerror(errno));
	uint32_t a = 0;
	int rc;
	if (chksum && (rc = odx_file_adler32(fd, &a)))
		return odx_error_set(err, -rc, "%s: %s", tmp, strerror(-rc));
	if (rename(tmp, path))
		return odx_error_set(err, errno, "%s: %s", path, strerror(errno));
	if (chksum) {
		char cpath[PATH_MAX], text[16];
		snprintf(cpath, sizeof cpath, "%s.chksum", path);
		snprintf(text, sizeof text, "%u", a);
		return write_file_atomic(cpath, text, err);
	}
	return 0;
}

int stream_write_tail(int fd, uint64_t at, enum odx_codec codec, const struct trailer *t,
		      struct odx_error *err)
{
	char h[ODX_FRAME_HEADER_LEN];
	char *json = NULL;
	size_t n = 0;
	frame_format(h, FRAME_STOP, 0, 0);
	int rc = io_pwrite_full(fd, h, sizeof h, at);
	at += sizeof h;
	if (!rc && codec != ODX_CODEC_NONE) {
		if (!(json = trailer_print(t)))
			return odx_error_set(err, ENOMEM, "out of memory");
		n = strlen(json);
		if (!(rc = io_pwrite_full(fd, json, n, at)))
			rc = io_pwrite_full(fd, "\r\n", 2, at + n);
		frame_format(h, FRAME_COMP, 0, n);
		if (!rc)
			rc = io_pwrite_full(fd, h, sizeof h, at + n + 2);
		free(json);
	}
	return rc ? odx_error_set(err, -rc, "write failed: %s", strerror(-rc)) : 0;
}

/* Stop, trailer, and the meta JSON now that dataSize is known. */
static int stream_finish(struct writer *w, const struct meta *m, size_t meta_len)
{
	int rc = w_flush(w);
	if (!rc)
		rc = stream_write_tail(w->fd, w_pos(w), w->codec, &w->tr, w->err);
	if (rc)
		return rc;
	char *text = meta_print(m, w->data_bytes, meta_len);
	if (!text || strlen(text) != meta_len) {
		free(text);
		return odx_error_set(w->err, EOVERFLOW, "%s: meta JSON outgrew its reserved space",
				     w->name);
	}
	rc = io_pwrite_full(w->fd, text, meta_len, ODX_FRAME_HEADER_LEN);
	free(text);
	return rc ? odx_error_set(w->err, -rc, "%s: write failed: %s", w->name, strerror(-rc)) : 0;
}

int odx_stream_write(int raw_fd, uint64_t size, const char *out_path,
		     const struct odx_write_opts *o, struct odx_error *err)
{
	struct stat ist, ost;
	if (fstat(raw_fd, &ist))
		return odx_error_set(err, errno, "input: %s", strerror(errno));
	if (size == 0) {
		off_t e = lseek(raw_fd, 0, SEEK_END);
		if (e < 0)
			return odx_error_set(err, errno, "input: %s", strerror(errno));
		size = (uint64_t)e;
	}
	if (size >= (UINT64_C(1) << 63))
		return odx_error_set(err, EOVERFLOW, "input size must be below 2^63 bytes");
	if (stat(out_path, &ost) == 0 && ost.st_dev == ist.st_dev && ost.st_ino == ist.st_ino)
		return odx_error_set(err, EINVAL, "%s: the output is the input file", out_path);
	if (o->zero_block && (o->zero_block & (o->zero_block - 1)))
		return odx_error_set(err, EINVAL, "zero block size %" PRIu64 " is not a power of two",
				     o->zero_block);

	char tmp[PATH_MAX];
	struct writer w = {.fd = -1, .name = out_path, .err = err, .run = -1, .codec = o->codec};
	struct meta m;
	int rc = meta_new(&m, size, o);
	if (rc)
		return odx_error_set(err, ENOMEM, "out of memory");
	w.level = o->level ? o->level : codec_default_level(o->codec);
	m.level = w.level;
	if (o->codec != ODX_CODEC_NONE)
		cJSON_ReplaceItemInObjectCaseSensitive(m.json, "compressed",
						       cJSON_CreateNumber(w.level));
	char *text = meta_print(&m, UINT64_MAX, 0);
	size_t meta_len = text ? strlen(text) : 0;
	w.buf = malloc(OUTBUF);
	if (o->codec != ODX_CODEC_NONE) {
		w.chunk = malloc(ODX_CHUNK_SIZE);
		w.cbuf_cap = codec_bound(o->codec, ODX_CHUNK_SIZE);
		w.cbuf = malloc(w.cbuf_cap);
	}
	if (!text || !w.buf || (o->codec != ODX_CODEC_NONE && (!w.chunk || !w.cbuf))) {
		rc = odx_error_set(err, ENOMEM, "out of memory");
		goto out;
	}
	w.fd = stream_tmpfile(out_path, tmp, sizeof tmp, err);
	if (w.fd < 0) {
		rc = w.fd;
		goto out;
	}
	if (!(rc = w_header(&w, FRAME_META, 0, meta_len)) && !(rc = w_write(&w, text, meta_len)) &&
	    !(rc = w_write(&w, "\r\n", 2)) && !(rc = write_body(&w, raw_fd, size, o)) &&
	    !(rc = run_end(&w)) && !(rc = stream_finish(&w, &m, meta_len)))
		rc = stream_publish(w.fd, tmp, out_path, !o->no_chksum, err);
out:
	if (w.fd >= 0) {
		close(w.fd);
		if (rc)
			unlink(tmp);
	}
	free(text);
	free(w.buf);
	free(w.chunk);
	free(w.cbuf);
	free(w.csizes);
	trailer_free(&w.tr);
	meta_free(&m);
	return rc;
}
