/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the compression trailer, through the public API.
 * Why: the trailer is the one place where a compressed stream says where
 * its chunks are; its sizes decide what is read from the file and what is
 * handed to the decoder.  fuzz-stream reaches it too, but rarely with a
 * trailer that still fits frames that decode, so here the frames are fixed
 * and valid and only the trailer JSON varies.  Going through
 * odx_stream_open_fd keeps this target independent of the library's
 * internal trailer API.
 *
 * Input: byte 0: bits 0-1 the number of data frames (0-3, see
 * trailer-stream.h), bits 2-7 mod 3 the open flags (0, ALLOW_TORN,
 * ALLOW_TORN|SALVAGE); the rest is the trailer JSON.  The file is the
 * fixed stream, INPUT, CRLF, and a comp header with INPUT's length.
 *
 * Whatever the trailer says, a read that succeeds must give the image's
 * own bytes: the frames are intact, so no trailer can make a reader serve
 * anything else (odxfs-stream(5), DAMAGE).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "trailer-stream.h"
#include "fuzz.h"

#define PIECE 40000u

static const unsigned open_flags[3] = {
	0, ODX_OPEN_ALLOW_TORN, ODX_OPEN_ALLOW_TORN | ODX_OPEN_SALVAGE,
};

static struct ts_stream streams[TS_FRAMES + 1];
static unsigned char buf[PIECE];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned n = data[0] & 3;
	unsigned flags = open_flags[(data[0] >> 2) % 3];
	struct ts_stream *t = &streams[n];
	if (!t->bytes)
		ts_build(t, n);

	int fd = memfd_create("fuzz-trailer", MFD_CLOEXEC);
	char comp[ODX_FRAME_HEADER_LEN + 1];
	snprintf(comp, sizeof comp, "comp %016llx %016llx\r\n", 0ull,
		 (unsigned long long)(size - 1));
	if (fd < 0 || write(fd, t->bytes, t->len) != (ssize_t)t->len ||
	    write(fd, data + 1, size - 1) != (ssize_t)(size - 1) || write(fd, "\r\n", 2) != 2 ||
	    write(fd, comp, ODX_FRAME_HEADER_LEN) != ODX_FRAME_HEADER_LEN)
		abort();

	struct odx_stream_opts opts = {.flags = flags, .cache_bytes = 1u << 20};
	struct odx_stream *s;
	struct odx_error err = {0};
	if (odx_stream_open_fd(fd, "fuzz", &opts, &s, &err) == 0) {
		for (uint64_t off = 0; off < TS_IMAGE; off += PIECE) {
			size_t want = TS_IMAGE - off < PIECE ? (size_t)(TS_IMAGE - off) : PIECE;
			memset(&err, 0, sizeof err);
			ssize_t r = odx_stream_pread(s, buf, PIECE, off, &err);
			if (r >= 0 && ((size_t)r != want || memcmp(buf, t->image + off, want))) {
				const struct odx_stream_info *i = odx_stream_info(s);
				fprintf(stderr,
					"fuzz-trailer: wrong bytes served in [%llu, +%zu) (opened "
					"with flags %u: torn %d, corrupt %d, problem \"%s\")\n",
					(unsigned long long)off, want, flags, i->torn, i->corrupt,
					i->problem);
				abort();
			}
		}
		odx_stream_close(s);
	}
	close(fd);
	return 0;
}
