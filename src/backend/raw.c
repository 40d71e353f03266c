/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The raw backend: a regular file passed through byte for byte, read-write.
 * Its layout comes from the backing filesystem (SEEK_DATA/SEEK_HOLE), so
 * holes of a sparse raw file are holes in the mount too.
 *
 * No state beyond the descriptor, and only positional I/O on it
 * (pread/pwrite, lseek for SEEK_DATA/HOLE whose file position nobody
 * uses), so any number of threads may use one image at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

static int raw_probe(int fd, const struct stat *st)
{
	return S_ISREG(st->st_mode) ? 1 : 0;
}

static int raw_open(struct odx_image *img, const struct odx_backend_config *cfg,
		    struct odx_error *err)
{
	img->priv = NULL;
	return 0;
}

static int raw_emit(odx_seg_fn fn, void *ctx, int kind, int fd, uint64_t off,
		    uint64_t end)
{
	struct odx_seg seg = {
		.offset = off,
		.length = end - off,
		.kind = kind,
		.extent_kind = kind == ODX_SEG_HOLE ? ODX_EXTENT_ZERO : ODX_EXTENT_DATA,
		.fd = kind == ODX_SEG_FD ? fd : -1,
		.fd_offset = kind == ODX_SEG_FD ? off : 0,
	};
	return fn(ctx, &seg);
}

static int raw_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		   void *ctx)
{
	struct stat st;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	uint64_t size = (uint64_t)st.st_size;
	if (off >= size)
		return 0;
	uint64_t end = len > size - off ? size : off + len;
	uint64_t pos = off;
	int r = 0;

	while (pos < end && r == 0) {
		off_t data = lseek(img->fd, (off_t)pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO) {
			/* Only a hole (or growth past it) remains. */
			return raw_emit(fn, ctx, ODX_SEG_HOLE, img->fd, pos, end);
		}
		if (data < 0) {
			/* No SEEK_DATA on this filesystem: all data. */
			if (errno != EINVAL && errno != EOPNOTSUPP)
				return -errno;
			return raw_emit(fn, ctx, ODX_SEG_FD, img->fd, pos, end);
		}
		if ((uint64_t)data > pos) {
			uint64_t hole_end = (uint64_t)data < end ? (uint64_t)data : end;
			r = raw_emit(fn, ctx, ODX_SEG_HOLE, img->fd, pos, hole_end);
			pos = hole_end;
			if (r || pos >= end)
				break;
		}
		off_t hole = lseek(img->fd, (off_t)pos, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		uint64_t data_end = (uint64_t)hole < end ? (uint64_t)hole : end;
		if (data_end <= pos) /* the file shrank under us */
			data_end = end;
		r = raw_emit(fn, ctx, ODX_SEG_FD, img->fd, pos, data_end);
		pos = data_end;
	}
	return r;
}

static ssize_t raw_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
			struct odx_error *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(img->fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return odx_error_at(err, errno, img->name, off + done, "read: %s",
					    strerror(errno));
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t raw_write(struct odx_image *img, const void *buf, size_t len,
			 uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(img->fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : -errno;
		done += (size_t)n;
	}
	if (done && (img->flags & ODX_IMG_WRITE_THROUGH)) {
		/* Data on the device, as an O_DIRECT write leaves it (metadata
		 * is fsync's job there too), then out of the page cache. */
		unsigned how = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
			       SYNC_FILE_RANGE_WAIT_AFTER;
		if (sync_file_range(img->fd, (off_t)off, (off_t)done, how) < 0)
			return -errno;
		posix_fadvise(img->fd, (off_t)off, (off_t)done, POSIX_FADV_DONTNEED);
	}
	return (ssize_t)done;
}

static off_t raw_lseek(struct odx_image *img, off_t off, int whence)
{
	off_t r = lseek(img->fd, off, whence);
	return r < 0 ? -errno : r;
}

static int raw_truncate(struct odx_image *img, uint64_t size)
{
	return ftruncate(img->fd, (off_t)size) < 0 ? -errno : 0;
}

static int raw_fallocate(struct odx_image *img, int mode, uint64_t off, uint64_t len)
{
	return fallocate(img->fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

static int raw_fsync(struct odx_image *img, int datasync)
{
	int r = datasync ? fdatasync(img->fd) : fsync(img->fd);
	return r < 0 ? -errno : 0;
}

const struct odx_backend_ops odx_backend_raw = {
	.name = "raw",
	.caps = ODX_CAP_WRITE | ODX_CAP_FD_DATA | ODX_CAP_DIRECT_FD,
	.probe = raw_probe,
	.open = raw_open,
	.map = raw_map,
	.read = raw_read,
	.write = raw_write,
	.lseek = raw_lseek,
	.truncate = raw_truncate,
	.fallocate = raw_fallocate,
	.fsync = raw_fsync,
};
