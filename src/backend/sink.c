/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sink backend: a new stream being written as the destination of
 * offloaded copies (a synthetic full backup made from a chain view, a
 * stream or a raw image), one more image behind the backend table.
 *
 * The offload engine hands it each extent of a token (put) instead of
 * bytes: holes become zero frames, plain data goes into the payload with
 * copy_file_range, data of a stream source goes through odx_sink_stream,
 * so compressed chunks of the destination's codec are copied as they are
 * (the source image says which stream holds the bytes: stream_at), and
 * the rest is decoded through the image and written through the sink's
 * buffers.  The stream's meta and codec are decided at the first put,
 * from its source (backend.h).
 *
 * A stream is written in order: a put before the end of what was written
 * fails with EINVAL.  While it is written the image has no bytes to read
 * (map and read: EBUSY) and takes no plain writes (EBUSY): the daemon
 * turns it into an ordinary stream once finished.
 *
 * Locking: one mutex around the sink; puts are serialised (a stream is
 * written in order anyway).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

#define PUT_BUF (1u << 20)

struct sink_img {
	pthread_mutex_t lock;
	struct odx_sink *s;    /* started at the first put */
	struct odx_sink_image_opts o;
	char *disk_name;
	bool started;
	/* the source of the puts, for odx_sink_image_whole */
	dev_t src_dev;
	ino_t src_ino;
	uint64_t src_size;
	bool one_source;       /* every put from that source, same offsets */
	uint64_t size;         /* set by truncate */
	uint64_t lead;         /* end of the holes put before the first data
				* (the stream starts at its first data: its
				* source names the meta) */
	char *buf;             /* decoded bytes of sources without a stream */
};

static struct sink_img *sink_of(struct odx_image *img)
{
	return img->priv;
}

static int sink_probe(int fd, const struct stat *st)
{
	(void)fd;
	(void)st;
	return 0; /* never chosen by content: the daemon makes sinks */
}

static int sink_open(struct odx_image *img, const struct odx_backend_config *cfg,
		     struct odx_error *err)
{
	(void)cfg;
	return odx_error_set(err, EINVAL, "%s: sinks are made by odx_sink_image_open",
			     img->name);
}

static void sink_close(struct odx_image *img)
{
	struct sink_img *k = sink_of(img);
	if (!k)
		return;
	odx_sink_free(k->s);
	free(k->disk_name);
	free(k->buf);
	pthread_mutex_destroy(&k->lock);
	free(k);
	img->priv = NULL;
}

static uint64_t sink_size_locked(const struct sink_img *k)
{
	uint64_t end = k->s ? odx_sink_end(k->s) : k->lead;
	return end > k->size ? end : k->size;
}

static int sink_getattr(struct odx_image *img, struct stat *st)
{
	struct sink_img *k = sink_of(img);
	pthread_mutex_lock(&k->lock);
	st->st_size = (off_t)sink_size_locked(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static int sink_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		    void *ctx)
{
	(void)img;
	(void)off;
	(void)len;
	(void)fn;
	(void)ctx;
	return -EBUSY;
}

static ssize_t sink_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
			 struct odx_error *err)
{
	(void)buf;
	(void)len;
	(void)off;
	return odx_error_set(err, EBUSY, "%s: a stream being written has nothing to read yet",
			     img->name);
}

static ssize_t sink_write(struct odx_image *img, const void *buf, size_t len, uint64_t off)
{
	(void)img;
	(void)buf;
	(void)len;
	(void)off;
	return -EBUSY;
}

static int sink_truncate(struct odx_image *img, uint64_t size)
{
	struct sink_img *k = sink_of(img);
	pthread_mutex_lock(&k->lock);
	int r = size < (k->s ? odx_sink_end(k->s) : k->lead) ? -EINVAL : 0;
	if (r == 0)
		k->size = size;
	pthread_mutex_unlock(&k->lock);
	return r;
}

static int sink_fallocate(struct odx_image *img, int mode, uint64_t off, uint64_t len)
{
	(void)img;
	(void)mode;
	(void)off;
	(void)len;
	return -EBUSY;
}

static int sink_fsync(struct odx_image *img, int datasync)
{
	return (datasync ? fdatasync(img->fd) : fsync(img->fd)) < 0 ? -errno : 0;
}

/* Whether src is the disk at the checkpoint its meta names: a full
 * backup, or the chain view of a full or incremental.  Not so: a copy
 * backup (it makes no checkpoint), a differential (it names the next
 * checkpoint, which the next incremental makes), an incremental shown
 * standalone (its frames over zeros).  A full made from those must not
 * claim the checkpoint: later incrementals would chain onto it. */
static bool is_checkpoint_disk(struct odx_image *src, const struct odx_stream_info *si)
{
	if (odx_image_is_view(src)) {
		const char *dir;
		const struct odx_view_member *m;
		size_t n = odx_chain_view_members(src, &dir, &m);
		return n && (m[n - 1].kind == ODX_MEMBER_FULL || m[n - 1].kind == ODX_MEMBER_INC);
	}
	const char *base = strrchr(src->name, '/') ? strrchr(src->name, '/') + 1 : src->name;
	return !si->incremental && !strstr(base, ".copy.");
}

/* The new stream, from the first put's source: its stream's meta (keys
 * kept) as a full backup at the same checkpoint, in its codec unless the
 * options say otherwise.  A source that is not the disk at its checkpoint
 * gives the full its own file name as checkpointName, a name no backup
 * makes. */
static int sink_start(struct odx_image *img, struct sink_img *k, struct odx_image *src,
		      struct odx_error *err)
{
	struct odx_stream *ms = src ? odx_image_meta_stream(src) : NULL;
	const struct odx_stream_info *si = ms ? odx_stream_info(ms) : NULL;
	char *meta = NULL, own[256] = "";
	if (ms && !(meta = odx_stream_meta_copy(ms, err)))
		return -EIO;
	if (ms && !is_checkpoint_disk(src, si)) {
		const char *base = strrchr(src->name, '/') ? strrchr(src->name, '/') + 1 : src->name;
		size_t n = strlen(base);
		if (n > 5 && strcmp(base + n - 5, ".data") == 0)
			n -= 5;
		snprintf(own, sizeof own, "%.*s", (int)(n < sizeof own - 1 ? n : sizeof own - 1),
			 base);
	}
	int codec = k->o.codec >= 0 ? k->o.codec : si ? (int)si->codec : ODX_CODEC_NONE;
	int level = k->o.level;
	if (!level && si && (int)si->codec == codec)
		level = si->level;
	struct odx_sink_opts so = {
		.codec = (enum odx_codec)codec,
		.level = level,
		.meta_text = meta,
		.parent = "",  /* as virtnbdbackup writes it for a full */
		.disk_name = meta ? NULL : k->disk_name,
		.disk_format = meta ? NULL : "raw",
		.checkpoint = !meta ? "odxfs" : own[0] ? own : NULL,
	};
	if (src) {
		struct stat st;
		k->src_dev = src->dev;
		k->src_ino = src->ino;
		k->one_source = odx_image_getattr(src, &st) == 0;
		k->src_size = k->one_source ? (uint64_t)st.st_size : 0;
	}
	/* the size it will have, for the meta a crash leaves (torn) */
	so.virtual_size = k->src_size > k->size ? k->src_size : k->size;
	int r = odx_sink_new(img->fd, img->name, &so, &k->s, err);
	free(meta);
	if (r < 0)
		return r;
	k->started = true;
	return 0;
}

/* Decoded bytes of src through the buffer (a source with no stream
 * holding them: a raw file's data the kernel would not copy). */
static int put_decoded(struct sink_img *k, uint64_t off, struct odx_image *src, uint64_t soff,
		       uint64_t len, struct odx_error *err)
{
	if (!k->buf && !(k->buf = malloc(PUT_BUF)))
		return odx_error_set(err, ENOMEM, "out of memory");
	while (len) {
		size_t want = len < PUT_BUF ? (size_t)len : PUT_BUF;
		ssize_t n = odx_image_read(src, k->buf, want, soff, err);
		if (n < 0)
			return (int)n;
		if ((size_t)n < want)
			return odx_error_set(err, EIO, "%s: shorter than its map", src->name);
		int r = odx_sink_data(k->s, off, k->buf, want, err);
		if (r < 0)
			return r;
		off += want;
		soff += want;
		len -= want;
	}
	return 0;
}

static int sink_put(struct odx_image *img, uint64_t off, const struct odx_put *p,
		    struct odx_sink_stats *st, struct odx_error *err)
{
	struct sink_img *k = sink_of(img);
	int r = 0;
	pthread_mutex_lock(&k->lock);
	if (!k->started && p->kind == ODX_SEG_HOLE) {
		/* zeros before any data: the stream (and its meta) starts at
		 * the first data, whose gap before it becomes zero frames */
		if (off < k->lead)
			r = odx_error_set(err, EINVAL, "%s: a stream is written in order", img->name);
		else
			k->lead = off + p->length;
		pthread_mutex_unlock(&k->lock);
		return r;
	}
	if (!k->started)
		r = sink_start(img, k, p->src, err);
	struct odx_sink_stats before = {0};
	if (r == 0) {
		odx_sink_stats(k->s, &before);
		/* holes are the same from any source */
		if (p->kind != ODX_SEG_HOLE &&
		    (!p->src || p->src->dev != k->src_dev || p->src->ino != k->src_ino ||
		     p->src_offset != off))
			k->one_source = false;
		if (odx_sink_end(k->s) < k->lead)
			r = odx_sink_zero(k->s, 0, k->lead, err);
	}
	if (r < 0) {
		/* nothing more */
	} else if (p->kind == ODX_SEG_HOLE) {
		r = odx_sink_zero(k->s, off, p->length, err);
	} else if (p->kind == ODX_SEG_FD) {
		r = odx_sink_data_fd(k->s, off, p->length, p->fd, p->fd_offset, err);
	} else {
		/* decoded data: from the stream that holds it, whole chunks
		 * as they are, in pieces as the source's map cuts it */
		uint64_t done = 0;
		while (r == 0 && done < p->length) {
			uint64_t n = p->length - done;
			struct odx_stream *s = odx_image_stream_at(p->src, p->src_offset + done, &n);
			r = s ? odx_sink_stream(k->s, off + done, s, p->src_offset + done, n, err)
			      : put_decoded(k, off + done, p->src, p->src_offset + done, n, err);
			done += n;
		}
	}
	if (k->s) {
		struct odx_sink_stats after;
		odx_sink_stats(k->s, &after);
		st->bytes_kernel += after.bytes_kernel - before.bytes_kernel;
		st->bytes_verbatim += after.bytes_verbatim - before.bytes_verbatim;
		st->bytes_buffered += after.bytes_buffered - before.bytes_buffered;
		st->bytes_holes += after.bytes_holes - before.bytes_holes;
	}
	pthread_mutex_unlock(&k->lock);
	return r;
}

const struct odx_backend_ops odx_backend_sink = {
	.name = "sink",
	.caps = ODX_CAP_WRITE,
	.probe = sink_probe,
	.open = sink_open,
	.close = sink_close,
	.getattr = sink_getattr,
	.map = sink_map,
	.read = sink_read,
	.write = sink_write,
	.truncate = sink_truncate,
	.fallocate = sink_fallocate,
	.fsync = sink_fsync,
	.put = sink_put,
};

int odx_sink_image_open(int fd, const char *name, const struct odx_sink_image_opts *opts,
			struct odx_image **out, struct odx_error *err)
{
	struct sink_img *k = calloc(1, sizeof *k);
	if (!k) {
		close(fd);
		return odx_error_set(err, ENOMEM, "out of memory");
	}
	pthread_mutex_init(&k->lock, NULL);
	k->o = *opts;
	/* virtnbdbackup names a disk's files <disk>.<kind>...: the disk's
	 * name for sources that have none */
	const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
	k->disk_name = opts->disk_name ? strdup(opts->disk_name)
				       : strndup(base, strcspn(base, ".") ? strcspn(base, ".") : 1);
	k->o.disk_name = NULL;
	if (!k->disk_name) {
		free(k);
		close(fd);
		return odx_error_set(err, ENOMEM, "out of memory");
	}
	struct stat st;
	struct odx_image *img = calloc(1, sizeof *img);
	if (!img || !(img->name = strdup(name)) || fstat(fd, &st) < 0) {
		int e = img && img->name ? errno : ENOMEM;
		if (img)
			free(img->name);
		free(img);
		free(k->disk_name);
		pthread_mutex_destroy(&k->lock);
		free(k);
		close(fd);
		return odx_error_set(err, e, "%s: %s", name, strerror(e));
	}
	img->ops = &odx_backend_sink;
	img->fd = fd;
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	img->priv = k;
	atomic_init(&img->refs, 1);
	atomic_init(&img->generation, 0);
	*out = img;
	return 0;
}

bool odx_sink_image_whole(struct odx_image *img, uint64_t *size)
{
	struct sink_img *k = sink_of(img);
	pthread_mutex_lock(&k->lock);
	*size = sink_size_locked(k);
	bool whole = k->started && k->one_source && *size == k->src_size;
	pthread_mutex_unlock(&k->lock);
	return whole;
}

int odx_sink_image_finish(struct odx_image *img, uint64_t size, struct odx_sink_stats *st,
			  struct odx_error *err)
{
	struct sink_img *k = sink_of(img);
	int r = 0;
	pthread_mutex_lock(&k->lock);
	if (!k->started)
		r = sink_start(img, k, NULL, err); /* nothing but zeros was copied */
	if (r == 0 && odx_sink_end(k->s) < k->lead)
		r = odx_sink_zero(k->s, 0, k->lead, err);
	if (r == 0)
		r = odx_sink_finish(k->s, size ? size : sink_size_locked(k), err);
	if (st && k->s)
		odx_sink_stats(k->s, st);
	pthread_mutex_unlock(&k->lock);
	return r;
}
