/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hand-built streams for the unit tests: frames are written byte by byte
 * here (sprintf and liblz4/zlib directly), never with odxfs's own writer, so
 * the reader is not checked against itself.
 */
#ifndef ODXFS_TEST_GOLDEN_H
#define ODXFS_TEST_GOLDEN_H

#include <inttypes.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

struct gbuf {
	char *p;
	size_t len, cap;
};

static inline void g_put(struct gbuf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static inline void g_hdr(struct gbuf *b, const char *kind, uint64_t start, uint64_t len)
{
	char h[64];
	snprintf(h, sizeof h, "%s %016" PRIx64 " %016" PRIx64 "\r\n", kind, start, len);
	g_put(b, h, 40);
}

static inline void g_meta(struct gbuf *b, const char *json)
{
	g_hdr(b, "meta", 0, strlen(json));
	g_put(b, json, strlen(json));
	g_put(b, "\r\n", 2);
}

static inline void g_data(struct gbuf *b, uint64_t start, const void *d, size_t n)
{
	g_hdr(b, "data", start, n);
	g_put(b, d, n);
	g_put(b, "\r\n", 2);
}

/* An LZ4 frame with block and content checksums, as the backup tool
 * writes it (python lz4.frame.compress defaults plus both checksums). */
static inline size_t g_lz4(const void *src, size_t n, void **out)
{
	LZ4F_preferences_t p;
	memset(&p, 0, sizeof p);
	p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	p.frameInfo.contentSize = n;
	size_t cap = LZ4F_compressFrameBound(n, &p);
	*out = malloc(cap);
	return LZ4F_compressFrame(*out, cap, src, n, &p);
}

static inline size_t g_zlib(const void *src, size_t n, void **out)
{
	uLongf cap = compressBound(n);
	*out = malloc(cap);
	compress2(*out, &cap, src, n, 6);
	return cap;
}

/* Write b to a new temporary file; returns its path (static buffer per
 * call site is fine: tests run forked). */
static inline char *g_file(const struct gbuf *b)
{
	char *path = strdup("/tmp/odxfs-unit-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	if (b->len && write(fd, b->p, b->len) != (ssize_t)b->len)
		abort();
	close(fd);
	return path;
}

#define G_META_FMT                                                                          \
	"{\"virtualSize\": %" PRIu64 ", \"dataSize\": %" PRIu64                            \
	", \"date\": \"2026-01-01T00:00:00\", \"diskName\": \"sda\", \"diskFormat\": \"raw\", " \
	"\"checkpointName\": \"c1\", \"compressed\": %s, \"compressionMethod\": \"%s\", "   \
	"\"parentCheckpoint\": false, \"incremental\": false, \"streamVersion\": 2}"

/* The tail of a compressed stream after its stop frame: the trailer JSON,
 * CRLF and the comp header giving its length. */
static inline void g_trailer(struct gbuf *b, const char *json)
{
	size_t n = strlen(json);
	g_put(b, json, n);
	g_put(b, "\r\n", 2);
	g_hdr(b, "comp", 0, n);
}

static inline void g_meta_std(struct gbuf *b, uint64_t vsize, uint64_t dsize, const char *compressed,
			      const char *method)
{
	char j[512];
	snprintf(j, sizeof j, G_META_FMT, vsize, dsize, compressed, method);
	g_meta(b, j);
}

#endif
