/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: codec_decompress, one compressed chunk (src/stream/codec.c).
 * Why: every chunk of a compressed stream goes through it with sizes taken
 * from the file, and the decoded bytes are served to readers; a decoder
 * that writes past dlen, or says yes to a chunk that does not fill dlen
 * exactly, would serve wrong bytes.  Directly, without a stream around the
 * chunk, so mutations hit the LZ4 frame and zlib stream parsing.
 *
 * Input: byte 0 bit 0 picks LZ4 (0) or zlib (1); bytes 1-3, little-endian,
 * are the decoded size, at most 4 MiB; the rest is the chunk.  The output
 * buffer is exactly the decoded size (ASan sees one byte past it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream-internal.h"
#include "fuzz.h"

#define DLEN_MAX (4u << 20)

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
	free(dst);
	return 0;
}
