/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: codec_decompress, one compressed chunk (src/stream/codec.c).
 * Why: every chunk of a compressed stream goes through it with sizes taken
 * from the file, and the decoded bytes are served to readers; a decoder
 * that writes past dlen, or says yes to a chunk that does not fill dlen
 * exactly, would serve wrong bytes.  Directly, without a stream around the
 * chunk, so mutations hit the LZ4 frame and zlib stream parsing.
 *
 * Differential: odxfs decodes LZ4 frames block by block itself and zlib
 * with libdeflate, not with the libraries' reference decoders.  Whatever
 * it accepts, LZ4F_decompress (checksums verified) or zlib's uncompress
 * must accept too, whole and with the same bytes; and a chunk the
 * reference decodes to exactly dlen bytes, all input used, odxfs must
 * accept.  So a damaged chunk never passes, and a good one never fails.
 *
 * Input: byte 0 bit 0 picks LZ4 (0) or zlib (1); bytes 1-3, little-endian,
 * are the decoded size, at most 4 MiB; the rest is the chunk.  The output
 * buffer is exactly the decoded size (ASan sees one byte past it).
 */
#include <lz4frame.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "stream-internal.h"
#include "fuzz.h"

#define DLEN_MAX (4u << 20)

/* The reference decoders: true when src is one whole chunk that decodes
 * to exactly dlen bytes (into out). */
static bool reference(enum odx_codec c, const uint8_t *src, size_t slen, uint8_t *out,
		      size_t dlen)
{
	if (c == ODX_CODEC_ZLIB) {
		z_stream z;
		memset(&z, 0, sizeof z);
		if (inflateInit(&z) != Z_OK)
			abort();
		z.next_in = (uint8_t *)src;
		z.avail_in = (uInt)slen;
		z.next_out = out;
		z.avail_out = (uInt)dlen;
		int r = inflate(&z, Z_FINISH);
		bool ok = r == Z_STREAM_END && z.avail_in == 0 && z.avail_out == 0;
		inflateEnd(&z);
		return ok;
	}
	/* A chunk is one LZ4 frame: LZ4F would also skip skippable frames. */
	if (slen < 4 || src[0] != 0x04 || src[1] != 0x22 || src[2] != 0x4d || src[3] != 0x18)
		return false;
	LZ4F_dctx *d;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)))
		abort();
	size_t in = 0, outn = 0, r = 1;
	/* Fed whole; called again while it makes progress (it may stop at a
	 * block boundary), stopped at the frame's end or an error. */
	while (r != 0 && !LZ4F_isError(r)) {
		size_t isz = slen - in, osz = dlen - outn;
		r = LZ4F_decompress(d, out + outn, &osz, src + in, &isz, NULL);
		in += isz;
		outn += osz;
		if (!LZ4F_isError(r) && r != 0 && isz == 0 && osz == 0)
			break;
	}
	LZ4F_freeDecompressionContext(d);
	return r == 0 && in == slen && outn == dlen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	enum odx_codec c = data[0] & 1 ? ODX_CODEC_ZLIB : ODX_CODEC_LZ4;
	size_t dlen = ((size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16) %
		      (DLEN_MAX + 1);
	/* At least one byte: malloc(0) may return NULL. */
	unsigned char *dst = malloc(dlen ? dlen : 1);
	char why[256];
	if (!dst)
		abort();
	memset(why, 'x', sizeof why); /* a failure must leave a message here */
	int rc = codec_decompress(c, data + 4, size - 4, dst, dlen, why, sizeof why);
	expect(rc == 0 || memchr(why, '\0', sizeof why) != NULL);
	unsigned char *ref = malloc(dlen ? dlen : 1);
	if (!ref)
		abort();
	bool ref_ok = reference(c, data + 4, size - 4, ref, dlen);
	expect((rc == 0) == ref_ok);
	expect(rc != 0 || memcmp(dst, ref, dlen) == 0);
	free(ref);
	free(dst);
	return 0;
}
