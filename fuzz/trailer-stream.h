/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fixed LZ4 stream that fuzz-trailer.c puts in front of its input, and
 * the valid trailers for it (mkseeds.c writes those as seeds).  Shared so
 * that the seeds always match the stream the target builds.
 *
 * Image: 256 KiB.  Data frames, the first n of (n = 0..3):
 *   0: guest 0,      4096 bytes, one chunk          trailer entry c0
 *   1: guest 65536,  8192 bytes, two 4 KiB chunks   {"c1a+c1b": [c1a, c1b]}
 *   2: guest 131072, 20000 bytes, one chunk         c2
 * then a zero frame at 196608 of 65536 bytes, and the stop frame.  Each
 * chunk is one LZ4 frame as odxfs writes it (block and content checksums,
 * content size, 4 MiB blocks); frame 1's chunks are 4 KiB where the format
 * splits at 32 MiB, which readers take because each chunk's LZ4 header
 * gives its content size (odxfs-stream(5), The trailer).
 */
#ifndef ODXFS_FUZZ_TRAILER_STREAM_H
#define ODXFS_FUZZ_TRAILER_STREAM_H

#include <lz4frame.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "odxfs/stream.h"

#define TS_IMAGE (256u << 10)
#define TS_FRAMES 3
#define TS_MAX_CHUNKS 2

struct ts_frame {
	uint64_t start, length;
	unsigned nchunks;
};

static const struct ts_frame ts_frames[TS_FRAMES] = {
	{0, 4096, 1},
	{65536, 8192, 2},
	{131072, 20000, 1},
};

struct ts_stream {
	unsigned char *image;   /* TS_IMAGE bytes: what a reader must show */
	unsigned char *bytes;   /* the stream up to and including stop */
	size_t len, cap;
	size_t csize[TS_FRAMES][TS_MAX_CHUNKS]; /* compressed chunk sizes */
};

static inline void ts_put(struct ts_stream *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2;
		t->bytes = realloc(t->bytes, t->cap);
		if (!t->bytes)
			abort();
	}
	memcpy(t->bytes + t->len, p, n);
	t->len += n;
}

static inline void ts_header(struct ts_stream *t, const char *kind, uint64_t start, uint64_t len)
{
	char h[ODX_FRAME_HEADER_LEN + 1];
	snprintf(h, sizeof h, "%s %016llx %016llx\r\n", kind, (unsigned long long)start,
		 (unsigned long long)len);
	ts_put(t, h, ODX_FRAME_HEADER_LEN);
}

static inline size_t ts_lz4(struct ts_stream *t, const unsigned char *src, size_t n)
{
	LZ4F_preferences_t p;
	memset(&p, 0, sizeof p);
	p.frameInfo.blockSizeID = LZ4F_max4MB;
	p.frameInfo.blockMode = LZ4F_blockLinked;
	p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	p.frameInfo.contentSize = n;
	size_t cap = LZ4F_compressFrameBound(n, &p);
	void *dst = malloc(cap);
	if (!dst)
		abort();
	size_t r = LZ4F_compressFrame(dst, cap, src, n, &p);
	if (LZ4F_isError(r))
		abort();
	ts_put(t, dst, r);
	free(dst);
	return r;
}

/* The stream with the first n data frames, up to its stop frame. */
static inline void ts_build(struct ts_stream *t, unsigned n)
{
	memset(t, 0, sizeof *t);
	t->image = calloc(1, TS_IMAGE);
	if (!t->image)
		abort();
	uint64_t data_size = 0;
	for (unsigned f = 0; f < n; f++) {
		const struct ts_frame *fr = &ts_frames[f];
		for (uint64_t i = 0; i < fr->length; i++) /* compressible, not uniform */
			t->image[fr->start + i] = (unsigned char)((i * 7 + (i >> 9) + f) % 251);
		data_size += fr->length;
	}
	char meta[256];
	int ml = snprintf(meta, sizeof meta,
			  "{\"virtualSize\": %u, \"dataSize\": %llu, \"streamVersion\": 2, "
			  "\"compressed\": 2, \"compressionMethod\": \"lz4\"}",
			  TS_IMAGE, (unsigned long long)data_size);
	ts_header(t, "meta", 0, (uint64_t)ml);
	ts_put(t, meta, (size_t)ml);
	ts_put(t, "\r\n", 2);
	for (unsigned f = 0; f < n; f++) {
		const struct ts_frame *fr = &ts_frames[f];
		ts_header(t, "data", fr->start, fr->length);
		size_t part = fr->length / fr->nchunks;
		for (unsigned c = 0; c < fr->nchunks; c++) {
			size_t len = c + 1 < fr->nchunks ? part : fr->length - part * c;
			t->csize[f][c] = ts_lz4(t, t->image + fr->start + part * c, len);
		}
		ts_put(t, "\r\n", 2);
	}
	ts_header(t, "zero", 196608, 65536);
	ts_header(t, "stop", 0, 0);
}

static inline void ts_free(struct ts_stream *t)
{
	free(t->image);
	free(t->bytes);
}

/* The trailer JSON odxfs itself would write for t with n frames; form 1
 * gives every entry the object form, form 2 leaves out the spaces. */
static inline int ts_trailer(const struct ts_stream *t, unsigned n, int form, char *out, size_t cap)
{
	size_t o = 0;
	o += (size_t)snprintf(out + o, cap - o, "[");
	for (unsigned f = 0; f < n && o < cap; f++) {
		const char *sep = f ? (form == 2 ? "," : ", ") : "";
		if (ts_frames[f].nchunks == 1 && form != 1) {
			o += (size_t)snprintf(out + o, cap - o, "%s%zu", sep, t->csize[f][0]);
			continue;
		}
		size_t sum = 0;
		for (unsigned c = 0; c < ts_frames[f].nchunks; c++)
			sum += t->csize[f][c];
		o += (size_t)snprintf(out + o, cap - o, form == 2 ? "%s{\"%zu\":[" : "%s{\"%zu\": [",
				      sep, sum);
		for (unsigned c = 0; c < ts_frames[f].nchunks && o < cap; c++)
			o += (size_t)snprintf(out + o, cap - o, "%s%zu",
					      c ? (form == 2 ? "," : ", ") : "", t->csize[f][c]);
		o += (size_t)snprintf(out + o, cap - o, "]}");
	}
	if (o < cap)
		o += (size_t)snprintf(out + o, cap - o, "]");
	return o < cap ? (int)o : -1;
}

#endif
