/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one copy loop (offload read, offload write, release, advance) and
 * its two sets of halves: the engine's functions, for the daemon's
 * copy_file_range, and the ioctls, for `odxctl copy`.  No state, no lock;
 * any thread.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "odxfs/ioctl.h"
#include "internal.h"

int64_t odx_copy_run(const struct odx_copy_ops *ops, void *ctx, uint64_t src_off,
		     uint64_t dst_off, uint64_t len, int *stop)
{
	uint64_t done = 0;
	int why = 0;
	struct odx_offload_read_result rd;
	while (done < len) {
		int r = ops->offload_read(ctx, src_off + done, len - done, &rd);
		if (r < 0) {
			why = r;
			break;
		}
		if (rd.transfer_length == 0)
			break; /* the source ends here */
		uint64_t toff = 0;
		while (toff < rd.transfer_length && why == 0) {
			struct odx_offload_write_result wr;
			r = ops->offload_write(ctx, dst_off + done, rd.transfer_length - toff,
					       rd.token, toff, &wr);
			if (r < 0)
				why = r;
			else if (wr.length_written == 0)
				why = -EIO; /* no progress: do not spin */
			else if (wr.length_written > rd.transfer_length - toff)
				why = -EPROTO; /* a broken half; never trust it */
			if (why)
				break;
			toff += wr.length_written;
			done += wr.length_written;
			if (ops->progress && ops->progress(ctx, done, len))
				why = -ECANCELED;
		}
		if (ops->release)
			ops->release(ctx, rd.token);
		if (why)
			break;
	}
	if (stop)
		*stop = why;
	return done > 0 || why == 0 ? (int64_t)done : why;
}

/* ---- engine halves ---------------------------------------------------- */

static int copy_engine_read(void *ctx, uint64_t src_off, uint64_t len,
			    struct odx_offload_read_result *out)
{
	struct odx_offload_copy_ctx *c = ctx;
	return odx_offload_read(c->eng, c->src, c->owner, src_off, len, c->ttl_ms, 0, out,
				c->err);
}

static int copy_engine_write(void *ctx, uint64_t dst_off, uint64_t len, const uint8_t *token,
			     uint64_t transfer_offset, struct odx_offload_write_result *out)
{
	struct odx_offload_copy_ctx *c = ctx;
	return odx_offload_write(c->eng, c->dst, dst_off, len, token, transfer_offset,
				 c->write_flags, out, c->err);
}

static int copy_engine_release(void *ctx, const uint8_t *token)
{
	struct odx_offload_copy_ctx *c = ctx;
	return odx_offload_release(c->eng, token);
}

static int copy_engine_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct odx_offload_copy_ctx *c = ctx;
	return c->progress ? c->progress(c->progress_arg, done, total) : 0;
}

const struct odx_copy_ops odx_offload_copy_ops = {
	.offload_read = copy_engine_read,
	.offload_write = copy_engine_write,
	.release = copy_engine_release,
	.progress = copy_engine_progress,
};

int64_t odx_offload_copy(struct odx_offload_engine *eng, struct odx_image *src,
			 uint64_t src_off, struct odx_image *dst, uint64_t dst_off,
			 uint32_t owner, uint64_t len, int *stop, struct odx_error *err)
{
	struct odx_offload_copy_ctx c = {
		.eng = eng, .src = src, .dst = dst, .owner = owner,
		.write_flags = ODX_OFFLOAD_WRITE_WRITABLE, .err = err,
	};
	return odx_copy_run(&odx_offload_copy_ops, &c, src_off, dst_off, len, stop);
}

/* ---- ioctl halves ----------------------------------------------------- */

static int copy_ioctl_read(void *ctx, uint64_t src_off, uint64_t len,
			   struct odx_offload_read_result *out)
{
	struct odx_copy_ioctl_ctx *c = ctx;
	struct odx_ioc_offload_read io = {
		.size = sizeof io, .token_ttl_ms = c->ttl_ms,
		.file_offset = src_off, .copy_length = len,
	};
	if (ioctl(c->src_fd, ODX_IOC_OFFLOAD_READ, &io) < 0)
		return -errno;
	out->transfer_length = io.transfer_length;
	out->flags = io.out_flags;
	memcpy(out->token, io.token, ODX_TOKEN_SIZE);
	return 0;
}

static int copy_ioctl_write(void *ctx, uint64_t dst_off, uint64_t len, const uint8_t *token,
			    uint64_t transfer_offset, struct odx_offload_write_result *out)
{
	struct odx_copy_ioctl_ctx *c = ctx;
	struct odx_ioc_offload_write io = {
		.size = sizeof io, .file_offset = dst_off, .copy_length = len,
		.transfer_offset = transfer_offset,
	};
	memcpy(io.token, token, ODX_TOKEN_SIZE);
	if (ioctl(c->dst_fd, ODX_IOC_OFFLOAD_WRITE, &io) < 0)
		return -errno;
	out->length_written = io.length_written;
	out->flags = io.out_flags;
	return 0;
}

static int copy_ioctl_release(void *ctx, const uint8_t *token)
{
	struct odx_copy_ioctl_ctx *c = ctx;
	struct odx_ioc_release io = { .size = sizeof io };
	memcpy(io.token, token, ODX_TOKEN_SIZE);
	return ioctl(c->src_fd, ODX_IOC_RELEASE, &io) < 0 ? -errno : 0;
}

static int copy_ioctl_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct odx_copy_ioctl_ctx *c = ctx;
	return c->progress ? c->progress(c->progress_arg, done, total) : 0;
}

const struct odx_copy_ops odx_copy_ioctl_ops = {
	.offload_read = copy_ioctl_read,
	.offload_write = copy_ioctl_write,
	.release = copy_ioctl_release,
	.progress = copy_ioctl_progress,
};
