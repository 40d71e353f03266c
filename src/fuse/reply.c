/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Replies: the one errno translation of the daemon, and the building of
 * read replies from an image's map.
 *
 * A read reply is a fuse_bufvec: FD segments become descriptor buffers
 * (FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK at the payload offset) that libfuse
 * splices into the device without the bytes entering the daemon; holes
 * point into one static zero buffer; compressed data is pointed at where
 * the chunk cache holds it decoded (pinned until the reply is sent); FD
 * segments so short that a splice per piece would cost more than the copy
 * are read into a per-request scratch buffer.  A reply made mostly of
 * memory is sent with writev instead of through the splice pipe
 * (read_send).  A BAD segment, or a decode error, fails the whole request
 * with EIO: a short read would make the kernel believe the file ends there.
 *
 * Locking: the "already logged" ring has its own mutex; nothing else here
 * is shared.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

int fs_errno(int neg)
{
	int e = neg < 0 ? -neg : neg;
	return e == EUCLEAN || e == EBADMSG ? EIO : e;
}

/* For data read from an image, a stream cut short (ENODATA) is corruption
 * too; elsewhere ENODATA keeps its meaning (no such xattr). */
static int data_errno(int neg)
{
	int e = neg < 0 ? -neg : neg;
	return e == ENODATA ? EIO : fs_errno(e);
}

void fs_reply_err(fuse_req_t req, int neg)
{
	fuse_reply_err(req, fs_errno(neg));
}

/* copy_file_range failures after which the kernel should copy the range
 * itself (through FUSE read and write) rather than fail the call. */
static bool copy_declined(int e)
{
	switch (e) {
	case ENFILE:       /* max_tokens */
	case ENOBUFS:      /* token_memory */
	case EMFILE:       /* max_tokens_per_user */
	case EDQUOT:       /* token_memory_per_user */
	case ENOMEM:
	case EXDEV:
	case EOPNOTSUPP:
	case ENOSYS:       /* never passed on: it would disable offload */
	case EPROTO:       /* token errors cannot come from our own tokens, */
	case ENOKEY:       /* unless one expired or its source changed */
	case EKEYEXPIRED:  /* during the copy: the kernel copies what the */
	case EKEYREJECTED: /* source holds now */
	case EKEYREVOKED:
		return true;
	default:
		return false;
	}
}

void fs_reply_copy(fuse_req_t req, int64_t r, const struct odx_error *err, bool may_decline)
{
	if (r >= 0) {
		fuse_reply_write(req, (size_t)r);
		return;
	}
	int e = fs_errno((int)r);
	if (e == ENOSYS)
		e = EIO; /* never: it would disable copy_file_range for the mount */
	if (may_decline && copy_declined(e)) {
		odx_debug("copy_file_range declined (%s): the kernel copies",
			  err && err->msg[0] ? err->msg : strerror(e));
		e = EOPNOTSUPP;
	}
	fuse_reply_err(req, e);
}

void fs_reply_ioctl(fuse_req_t req, int r, const void *out, size_t size)
{
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_ioctl(req, 0, size ? out : NULL, size);
}

void fs_reply_entry(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_entry(req, e);
}

void fs_reply_attr(fuse_req_t req, int r, const struct stat *st, double timeout)
{
	if (r < 0)
		fuse_reply_err(req, fs_errno(r));
	else
		fuse_reply_attr(req, st, timeout);
}

/* ---- logging data errors once per image and kind ---- */

/* A damaged region is read page by page by the kernel (and again by every
 * reader), and a file may be looked up again after the kernel forgot it,
 * so each (file, version, kind of message) is logged once, with the file
 * and offset of the first; `odxctl check` lists them all. */
#define LOGGED_RING 256

static struct {
	dev_t dev;
	ino_t ino;
	uint64_t version;
	int code; /* 0: free slot */
} logged[LOGGED_RING];
static unsigned logged_next;
static pthread_mutex_t logged_lock = PTHREAD_MUTEX_INITIALIZER;

bool fs_log_first_time(dev_t dev, ino_t ino, uint64_t version, int code)
{
	bool first = true;
	pthread_mutex_lock(&logged_lock);
	for (unsigned i = 0; i < LOGGED_RING && first; i++)
		if (logged[i].code == code && logged[i].dev == dev && logged[i].ino == ino &&
		    logged[i].version == version)
			first = false;
	if (first) {
		logged[logged_next].dev = dev;
		logged[logged_next].ino = ino;
		logged[logged_next].version = version;
		logged[logged_next].code = code;
		logged_next = (logged_next + 1) % LOGGED_RING;
	}
	pthread_mutex_unlock(&logged_lock);
	return first;
}

void fs_log_data_error(struct odx_image *img, int neg, const struct odx_error *err,
		       uint64_t off)
{
	if (!fs_log_first_time(img->dev, img->ino, 0, neg))
		return;
	if (err && err->msg[0])
		odx_log(LOG_ERR, "%s (read of offset %llu failed: %s; further errors of "
				 "this kind in this file are not logged)",
			err->msg, (unsigned long long)off, strerror(data_errno(neg)));
	else
		odx_log(LOG_ERR, "%s: offset %llu: read failed: %s", img->name,
			(unsigned long long)off, strerror(-neg));
}

/* ---- read replies ---- */

/* FD segments shorter than this are copied rather than spliced. */
#define READ_COPY_MAX (16u << 10)

/* Written once (zeros_init) so that it is backed by pages of its own: a
 * page never written maps the kernel's shared zero page, which the fast
 * path of get_user_pages refuses, and every reply of a hole would then
 * pin its pages the slow way. */
static char read_zeros[FS_MAX_IO];
static pthread_once_t zeros_once = PTHREAD_ONCE_INIT;

static void zeros_init(void)
{
	/* volatile: the compiler may not drop a store of zeros to zeros */
	volatile char *p = read_zeros;
	for (size_t i = 0; i < sizeof read_zeros; i += 4096)
		p[i] = 0;
}

struct read_build {
	struct odx_image *img;
	struct fuse_bufvec *bv;
	size_t cap;           /* entries allocated in bv */
	char *scratch;        /* decoded and copied bytes (thread_scratch) */
	size_t size, used;
	uint64_t fd_bytes;    /* bytes in descriptor entries */
	struct odx_pins pins; /* cache chunks the reply points into */
	int err;              /* negative errno of the first failure */
	uint64_t err_off;     /* logical offset it concerns */
	struct odx_error oerr;
};

static int read_add(struct read_build *b, const struct fuse_buf *buf)
{
	struct fuse_bufvec *bv = b->bv;
	if (bv->count) {
		struct fuse_buf *last = &bv->buf[bv->count - 1];
		bool last_fd = last->flags & FUSE_BUF_IS_FD;
		bool fd = buf->flags & FUSE_BUF_IS_FD;
		if (!last_fd && !fd && (char *)last->mem + last->size == buf->mem) {
			last->size += buf->size;
			return 0;
		}
		if (last_fd && fd && last->fd == buf->fd &&
		    last->pos + (off_t)last->size == buf->pos) {
			last->size += buf->size;
			return 0;
		}
	}
	if (bv->count == b->cap) {
		size_t cap = b->cap * 2;
		bv = realloc(bv, sizeof *bv + (cap - 1) * sizeof bv->buf[0]);
		if (!bv)
			return -ENOMEM;
		b->bv = bv;
		b->cap = cap;
	}
	bv->buf[bv->count++] = *buf;
	return 0;
}

/* One scratch buffer per worker thread, kept between requests (a request
 * never needs more than its size, at most FS_MAX_IO). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_init(void)
{
	pthread_key_create(&scratch_key, free);
}

static char *thread_scratch(void)
{
	pthread_once(&scratch_once, scratch_key_init);
	char *p = pthread_getspecific(scratch_key);
	if (!p && (p = malloc(FS_MAX_IO)) && pthread_setspecific(scratch_key, p) != 0) {
		free(p);
		p = NULL;
	}
	return p;
}

static char *read_scratch(struct read_build *b, uint64_t len)
{
	if (!b->scratch && (b->size > FS_MAX_IO || !(b->scratch = thread_scratch())))
		return NULL;
	if (len > b->size - b->used)
		return NULL; /* cannot happen: segments never exceed the request */
	char *p = b->scratch + b->used;
	b->used += len;
	return p;
}

static int read_fail(struct read_build *b, int neg, uint64_t off)
{
	b->err = neg;
	b->err_off = off;
	return 1;
}

static int read_copy_fd(struct read_build *b, const struct odx_seg *seg)
{
	char *p = read_scratch(b, seg->length);
	if (!p)
		return read_fail(b, -ENOMEM, seg->offset);
	size_t done = 0;
	while (done < seg->length) {
		ssize_t n = pread(seg->fd, p + done, seg->length - done,
				  (off_t)(seg->fd_offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO; /* short: the file shrank */
			odx_error_at(&b->oerr, e, b->img->name, seg->offset + done,
				     "backing read at file offset %llu: %s",
				     (unsigned long long)(seg->fd_offset + done),
				     n < 0 ? strerror(e) : "unexpected end of file");
			return read_fail(b, -e, seg->offset + done);
		}
		done += (size_t)n;
	}
	struct fuse_buf buf = { .size = seg->length, .mem = p };
	return read_add(b, &buf) < 0 ? read_fail(b, -ENOMEM, seg->offset) : 0;
}

/* A piece of decoded bytes handed out in place (odx_image_borrow). */
static int read_borrowed(void *ctx, const void *p, size_t n)
{
	struct fuse_buf buf = { .size = n, .mem = (void *)p };
	return read_add(ctx, &buf) < 0 ? -ENOMEM : 0;
}

static int read_seg(void *ctx, const struct odx_seg *seg)
{
	struct read_build *b = ctx;
	struct fuse_buf buf = { .size = seg->length };

	switch (seg->kind) {
	case ODX_SEG_HOLE:
		for (uint64_t left = seg->length; left;) {
			buf.size = left < sizeof read_zeros ? left : sizeof read_zeros;
			buf.mem = read_zeros;
			if (read_add(b, &buf) < 0)
				return read_fail(b, -ENOMEM, seg->offset);
			left -= buf.size;
		}
		return 0;
	case ODX_SEG_FD:
		if (seg->length < READ_COPY_MAX)
			return read_copy_fd(b, seg);
		buf.flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		buf.fd = seg->fd;
		buf.pos = (off_t)seg->fd_offset;
		b->fd_bytes += seg->length;
		return read_add(b, &buf) < 0 ? read_fail(b, -ENOMEM, seg->offset) : 0;
	case ODX_SEG_DECODE: {
		/* The reply points into the decoded chunks (pinned until it is
		 * sent) rather than copying them into the scratch buffer: one
		 * copy of every byte less, which is what a reader of a
		 * compressed stream spends its core on besides decoding.  What
		 * the image does not hold in memory is decoded into scratch. */
		size_t count = b->bv->count;
		size_t last = count ? b->bv->buf[count - 1].size : 0;
		ssize_t n = odx_image_borrow(b->img, seg->offset, seg->length, &b->pins,
					     read_borrowed, b, &b->oerr);
		char *p = NULL;
		if (n == -EOPNOTSUPP) {
			b->bv->count = count; /* drop what was handed out */
			if (count)
				b->bv->buf[count - 1].size = last;
			if (!(p = read_scratch(b, seg->length)))
				return read_fail(b, -ENOMEM, seg->offset);
			n = odx_image_read(b->img, p, seg->length, seg->offset, &b->oerr);
		}
		if (n < 0)
			return read_fail(b, (int)n, seg->offset);
		if ((uint64_t)n != seg->length) {
			odx_error_at(&b->oerr, EIO, b->img->name, seg->offset + (uint64_t)n,
				     "decoded %zd of %llu bytes", n,
				     (unsigned long long)seg->length);
			return read_fail(b, -EIO, seg->offset);
		}
		if (!p)
			return 0;
		buf.mem = p;
		return read_add(b, &buf) < 0 ? read_fail(b, -ENOMEM, seg->offset) : 0;
	}
	default: /* ODX_SEG_BAD */
		odx_error_at(&b->oerr, EIO, b->img->name, seg->offset,
			     "image bytes lost to corruption in the stream");
		return read_fail(b, -EIO, seg->offset);
	}
}

/* Replace the descriptor entries of b->bv by their bytes, read into the
 * scratch buffer.  Returns 0 or -errno. */
static int read_fd_to_memory(struct read_build *b)
{
	for (size_t i = 0; i < b->bv->count; i++) {
		struct fuse_buf *buf = &b->bv->buf[i];
		if (!(buf->flags & FUSE_BUF_IS_FD))
			continue;
		char *p = read_scratch(b, buf->size);
		if (!p)
			return -ENOMEM;
		size_t done = 0;
		while (done < buf->size) {
			ssize_t n = pread(buf->fd, p + done, buf->size - done,
					  buf->pos + (off_t)done);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			done += (size_t)n;
		}
		buf->flags = 0;
		buf->mem = p;
	}
	return 0;
}

/* Send the reply.  Descriptor entries are spliced (the bytes go from the
 * backing file's page cache to the request without a copy in between), but
 * memory entries then cost two copies (into the pipe, out of it) where a
 * plain writev costs one.  So: splice when most bytes are on descriptors,
 * otherwise read those few into memory and writev everything. */
static void read_send(fuse_req_t req, struct read_build *b)
{
	struct fuse_bufvec *bv = b->bv;
	uint64_t total = 0;
	for (size_t i = 0; i < bv->count; i++)
		total += bv->buf[i].size;

	if (b->fd_bytes * 2 > total) {
		fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	int r = read_fd_to_memory(b);
	if (r == 0 && bv->count >= IOV_MAX) {
		/* More pieces than writev takes (with the reply's header): an
		 * image of tiny extents.  Gathered into one buffer. */
		char *flat = malloc(total ? total : 1);
		if (!flat) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		size_t o = 0;
		for (size_t i = 0; i < bv->count; o += bv->buf[i].size, i++)
			memcpy(flat + o, bv->buf[i].mem, bv->buf[i].size);
		fuse_reply_buf(req, flat, o);
		free(flat);
		return;
	}
	struct iovec *iov = r < 0 ? NULL : malloc(bv->count * sizeof *iov);
	if (!iov) {
		fuse_reply_err(req, r < 0 ? -r : ENOMEM);
		return;
	}
	for (size_t i = 0; i < bv->count; i++) {
		iov[i].iov_base = bv->buf[i].mem;
		iov[i].iov_len = bv->buf[i].size;
	}
	fuse_reply_iov(req, iov, (int)bv->count);
	free(iov);
}

void fs_reply_read(fuse_req_t req, struct fs_handle *h, size_t size, off_t off)
{
	struct odx_image *img = fs_handle_img(h);

	if ((img->ops->caps & ODX_CAP_DIRECT_FD) && size < READ_COPY_MAX) {
		/* Small: a copy costs less than setting up a splice.  Aligned,
		 * for a descriptor opened with O_DIRECT. */
		_Alignas(4096) char buf[READ_COPY_MAX];
		ssize_t n = pread(img->fd, buf, size, off);
		if (n < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_buf(req, buf, (size_t)n);
		return;
	}
	if (img->ops->caps & ODX_CAP_DIRECT_FD) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = img->fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}

	pthread_once(&zeros_once, zeros_init);
	struct read_build b = { .img = img, .cap = 16, .size = size };
	odx_error_clear(&b.oerr);
	b.bv = calloc(1, sizeof *b.bv + (b.cap - 1) * sizeof b.bv->buf[0]);
	if (!b.bv) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	int r = off < 0 ? -EINVAL : odx_image_map(img, (uint64_t)off, size, read_seg, &b);
	if (r < 0 && !b.err) {
		b.err = r;
		b.err_off = (uint64_t)off;
	}
	if (b.err) {
		/* Damage of a strict stream is the inode's to log (once), and
		 * to act on before this reply lets the reader go on. */
		bool damage = h->stream && fs_inode_note_damage(fs_of(req), h->inode, h->gen, img);
		if (data_errno(b.err) == EIO && !damage)
			fs_log_data_error(img, b.err, &b.oerr, b.err_off);
		fuse_reply_err(req, data_errno(b.err));
	} else if (b.bv->count == 0) {
		fuse_reply_buf(req, NULL, 0); /* at or past the end */
	} else {
		read_send(req, &b);
	}
	odx_pins_release(&b.pins);
	free(b.bv);
}
