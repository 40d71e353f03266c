/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writing a stream from a raw image, in one pass over the input, through
 * the sink (sink.c: frames, meta, trailer): holes and zero granules become
 * zero frames, the rest data frames.  Output goes to a temporary file in
 * the target's directory that is fsynced and renamed into place, so OUT is
 * either absent, the old file or the complete new stream; OUT.chksum
 * follows the same way.  Also the publishing helpers the sink's other
 * users share.
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

#define INBUF (8u << 20)

static void progress(const struct odx_write_opts *o, uint64_t done, uint64_t total)
{
	if (o->progress.fn)
		o->progress.fn(o->progress.ctx, done, total);
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Data (by content, at zero_block granules) of [start, end). */
static int scan_range(struct odx_sink *w, int in, char *buf, uint64_t start, uint64_t end,
		      uint64_t zb, bool detect, const struct odx_write_opts *o, uint64_t size,
		      struct odx_error *err)
{
	uint64_t off = start;
	while (off < end) {
		size_t want = end - off < INBUF ? (size_t)(end - off) : INBUF;
		ssize_t n = io_pread_full(in, buf, want, off);
		if (n < 0)
			return odx_error_at(err, (int)-n, "input", off, "read failed: %s",
					    strerror((int)-n));
		if (n < (ssize_t)want)
			return odx_error_at(err, EIO, "input", off + (uint64_t)n,
					    "the input ends before its stated size");
		size_t i = 0;
		while (i < want) {
			/* granules are aligned to absolute offsets */
			uint64_t g_end = ((off + i) / zb + 1) * zb;
			size_t gl = g_end - (off + i) < want - i ? (size_t)(g_end - (off + i)) : want - i;
			int rc = detect && all_zero(buf + i, gl)
					 ? odx_sink_zero(w, off + i, gl, err)
					 : odx_sink_data(w, off + i, buf + i, gl, err);
			if (rc)
				return rc;
			i += gl;
		}
		off += want;
		progress(o, off, size);
	}
	return 0;
}

static int write_body(struct odx_sink *w, int in, uint64_t size, const struct odx_write_opts *o,
		      struct odx_error *err)
{
	uint64_t zb = o->zero_block ? o->zero_block : 65536;
	char *buf = malloc(INBUF);
	int rc = 0;
	if (!buf)
		return odx_error_set(err, ENOMEM, "out of memory");
	if (o->incremental) {
		uint64_t prev = 0;
		for (size_t i = 0; i < o->nchanged && !rc; i++) {
			const struct odx_range *r = &o->changed[i];
			if (r->offset < prev || r->offset > size || r->length > size - r->offset) {
				rc = odx_error_set(err, EINVAL,
						   "changed range %zu [%" PRIu64 ", +%" PRIu64
						   ") is out of order or beyond the image size %" PRIu64,
						   i, r->offset, r->length, size);
				break;
			}
			rc = scan_range(w, in, buf, r->offset, r->offset + r->length, zb, false, o,
					size, err);
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
		if ((uint64_t)d > off && (rc = odx_sink_zero(w, off, (uint64_t)d - off, err)))
			break;
		if ((uint64_t)d >= size)
			break;
		h = lseek(in, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h > size)
			h = (off_t)size;
		rc = scan_range(w, in, buf, (uint64_t)d, (uint64_t)h, zb, true, o, size, err);
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
	struct odx_sink *w = NULL;
	struct odx_sink_opts so = {
		.codec = o->codec, .level = o->level, .incremental = o->incremental,
		.disk_name = o->disk_name ? o->disk_name : "sda", .disk_format = "raw",
		.checkpoint = o->checkpoint ? o->checkpoint : "odxfs", .parent = o->parent,
		.virtual_size = size,
	};
	int fd = stream_tmpfile(out_path, tmp, sizeof tmp, err);
	if (fd < 0)
		return fd;
	int rc = odx_sink_new(fd, out_path, &so, &w, err);
	if (!rc && !(rc = write_body(w, raw_fd, size, o, err)) &&
	    !(rc = odx_sink_finish(w, size, err)))
		rc = stream_publish(fd, tmp, out_path, !o->no_chksum, err);
	odx_sink_free(w);
	close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

int odx_stream_publish_at(int fd, int dirfd, const char *from, const char *to, bool chksum,
			  bool noreplace, struct odx_error *err)
{
	if (fsync(fd))
		return odx_error_set(err, errno, "%s: %s", from, strerror(errno));
	uint32_t a = 0;
	int rc;
	if (chksum && (rc = odx_file_adler32(fd, &a)))
		return odx_error_set(err, -rc, "%s: %s", from, strerror(-rc));
	if (renameat2(dirfd, from, dirfd, to, noreplace ? RENAME_NOREPLACE : 0))
		return odx_error_set(err, errno, "%s: renaming it to %s: %s", from, to,
				     strerror(errno));
	if (chksum) {
		char cname[NAME_MAX + 1], tmp[NAME_MAX + 1], text[16];
		struct stat st;
		if (snprintf(cname, sizeof cname, "%s.chksum", to) >= (int)sizeof cname ||
		    snprintf(tmp, sizeof tmp, "%s.chksum.partial", to) >= (int)sizeof tmp)
			return odx_error_set(err, ENAMETOOLONG, "%s.chksum: name too long", to);
		snprintf(text, sizeof text, "%u", a);
		int cfd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
				 0644);
		if (cfd < 0)
			return odx_error_set(err, errno, "%s: %s", tmp, strerror(errno));
		rc = io_pwrite_full(cfd, text, strlen(text), 0);
		/* the stream's owner owns its checksum */
		if (!rc && fstat(fd, &st) == 0 && fchown(cfd, st.st_uid, st.st_gid) && errno != EPERM)
			rc = -errno;
		if (!rc && fsync(cfd))
			rc = -errno;
		close(cfd);
		if (!rc && renameat(dirfd, tmp, dirfd, cname))
			rc = -errno;
		if (rc) {
			unlinkat(dirfd, tmp, 0);
			return odx_error_set(err, -rc, "%s: %s", cname, strerror(-rc));
		}
	}
	/* the renames are in the directory: sync it (dirfd may be O_PATH) */
	int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}
