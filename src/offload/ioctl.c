/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon side of the ioctls of ioctl.h: check the fixed-size request,
 * call the engine, fill the reply fields.  The daemon's ioctl callback
 * copies the request in, calls one function here and replies with the
 * struct (or the errno), nothing more.
 */
#include <errno.h>
#include <string.h>

#include "odxfs/ioctl.h"
#include "internal.h"

int odx_offload_ioc_read(struct odx_offload_engine *eng, struct odx_image *img,
			 uint32_t owner, struct odx_ioc_offload_read *io,
			 struct odx_error *err)
{
	io->out_flags = 0;
	io->reserved2 = 0;
	io->transfer_length = 0;
	memset(io->token, 0, sizeof io->token);
	if (io->size != sizeof *io || io->reserved != 0)
		return engine_error(err, ODX_OFFLOAD_E_BAD_ARGUMENT);
	struct odx_offload_read_result res;
	int r = odx_offload_read(eng, img, owner, io->file_offset, io->copy_length,
				 io->token_ttl_ms, io->flags, &res, err);
	if (r < 0)
		return r;
	io->out_flags = res.flags;
	io->transfer_length = res.transfer_length;
	memcpy(io->token, res.token, sizeof io->token);
	return 0;
}

int odx_offload_ioc_write(struct odx_offload_engine *eng, struct odx_image *dst,
			  bool handle_writable, struct odx_ioc_offload_write *io,
			  struct odx_error *err)
{
	io->out_flags = 0;
	io->reserved = 0;
	io->length_written = 0;
	if (io->size != sizeof *io || io->flags != 0)
		return engine_error(err, ODX_OFFLOAD_E_BAD_ARGUMENT);
	struct odx_offload_write_result res;
	int r = odx_offload_write(eng, dst, io->file_offset, io->copy_length, io->token,
				  io->transfer_offset,
				  handle_writable ? ODX_OFFLOAD_WRITE_WRITABLE : 0, &res, err);
	if (r < 0)
		return r;
	io->out_flags = res.flags;
	io->length_written = res.length_written;
	return 0;
}

int odx_offload_ioc_release(struct odx_offload_engine *eng, const struct odx_ioc_release *io)
{
	if (io->size != sizeof *io || io->reserved != 0)
		return -EINVAL;
	return odx_offload_release(eng, io->token);
}

int odx_offload_ioc_stats(struct odx_offload_engine *eng, struct odx_ioc_stats *io)
{
	if (io->size != sizeof *io)
		return -EINVAL;
	struct odx_offload_stats st;
	odx_offload_get_stats(eng, &st);
	memset(io, 0, sizeof *io);
	io->size = sizeof *io;
	io->tokens_issued = st.tokens_issued;
	io->tokens_used = st.tokens_used;
	io->tokens_expired = st.tokens_expired;
	io->tokens_rejected = st.tokens_rejected;
	io->tokens_released = st.tokens_released;
	io->tokens_invalidated = st.tokens_invalidated;
	io->bytes_kernel = st.bytes_kernel;
	io->bytes_buffered = st.bytes_buffered;
	io->bytes_holes = st.bytes_holes;
	io->bytes_verbatim = st.bytes_verbatim;
	io->tokens_live = st.tokens_live;
	io->token_bytes = st.token_bytes;
	return 0;
}
