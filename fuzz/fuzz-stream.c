/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the whole reader of a stream file, as the daemon and odxctl
 * drive it.  Why: a stream file is untrusted input that odxfs opens by
 * content, whatever its name, so every byte of it reaches the frame walk,
 * the meta and trailer parsers, the extent map, the chunk table, the codecs
 * and the chunk cache.
 *
 * Input: byte 0 picks the open flags (mod 3: 0, ALLOW_TORN,
 * ALLOW_TORN|SALVAGE; bit 7: also META_TEXT, where the library has it);
 * the rest is the file, put in a memfd.  Then: odx_stream_probe, open,
 * info and map, reads of the image in pieces (all of it when small, the
 * ends of each extent otherwise), and odx_stream_check on the same file.
 *
 * Besides crashes, leaks and hangs, it aborts when a documented contract
 * breaks (stream.h, extmap.h, odxfs-stream(5) DAMAGE): the map covers
 * [0, virtualSize) without gaps; a strict open leaves no BAD extent and a
 * torn stream opens only with ALLOW_TORN; a read that succeeds returns the
 * full count, zeros for holes and the file's own bytes for uncompressed
 * data, and never covers a BAD extent; a zero-copy read of the same range
 * (odx_stream_borrow) hands out exactly the bytes the read returned, or
 * declines (-EOPNOTSUPP) only where uncompressed payload is, and fails
 * where the read failed.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "odxfs/stream.h"
#include "fuzz.h"

#define PIECE 40000u          /* odd-sized reads, to straddle chunk ends */
#define WHOLE_MAX (1u << 20)  /* images up to this size are read whole */
#define EDGE 4096u            /* otherwise: this much at each extent's ends */
#define EDGE_EXTENTS 256u

static const unsigned open_flags[3] = {
	0, ODX_OPEN_ALLOW_TORN, ODX_OPEN_ALLOW_TORN | ODX_OPEN_SALVAGE,
};

static unsigned char buf[PIECE], file_bytes[PIECE], lent[PIECE];

static void check_map(const struct odx_stream_info *info, const struct odx_extmap *m,
		      unsigned flags)
{
	uint64_t at = 0;
	expect(m->size == info->virtual_size);
	for (size_t i = 0; i < m->count; i++) {
		const struct odx_extent *e = &m->ext[i];
		expect(e->offset == at && e->length > 0 && e->kind <= ODX_EXTENT_BAD);
		expect(!__builtin_add_overflow(at, e->length, &at));
		if (e->kind == ODX_EXTENT_DATA && info->codec == ODX_CODEC_NONE)
			expect(e->src <= info->file_size &&
			       e->length <= info->file_size - e->src);
		if (!(flags & ODX_OPEN_SALVAGE))
			expect(e->kind != ODX_EXTENT_BAD);
	}
	expect(at == m->size);
	if (!(flags & ODX_OPEN_ALLOW_TORN))
		expect(!info->torn);
}

/* A read of [start, start+n) that succeeded into buf: compare with the map. */
static void check_bytes(int fd, const struct odx_stream_info *info,
			const struct odx_extmap *m, uint64_t start, size_t n)
{
	uint64_t pos = start, end = start + n;
	for (size_t i = odx_extmap_find(m, pos); i < m->count && pos < end; i++) {
		const struct odx_extent *e = &m->ext[i];
		uint64_t skip = pos - e->offset;
		size_t k = e->length - skip < end - pos ? (size_t)(e->length - skip)
							: (size_t)(end - pos);
		const unsigned char *got = buf + (pos - start);
		expect(e->kind != ODX_EXTENT_BAD);
		if (odx_extent_is_hole(e)) {
			for (size_t j = 0; j < k; j++)
				expect(got[j] == 0);
		} else if (info->codec == ODX_CODEC_NONE) {
			expect(pread(fd, file_bytes, k, (off_t)(e->src + skip)) == (ssize_t)k);
			expect(memcmp(got, file_bytes, k) == 0);
		}
		pos += k;
	}
	expect(pos == end);
}

/* Borrowed pieces, gathered into lent. */
static int gather(void *ctx, const void *p, size_t n)
{
	size_t *at = ctx;
	expect(*at + n <= sizeof lent);
	memcpy(lent + *at, p, n);
	*at += n;
	return 0;
}

/* The same range borrowed: the bytes pread gave (r: its result). */
static void borrow_piece(struct odx_stream *s, uint64_t off, size_t len, ssize_t r)
{
	struct odx_pins pins = {0};
	struct odx_error err = {0};
	size_t at = 0;
	ssize_t n = odx_stream_borrow(s, off, len, &pins, gather, &at, &err);
	odx_pins_release(&pins);
	expect(pins.n == 0 && pins.v == NULL);
	if (n == -EOPNOTSUPP) {
		expect(odx_stream_info(s)->codec == ODX_CODEC_NONE);
		return;
	}
	if (r < 0) {
		expect(n < 0);
		return;
	}
	expect(n == r && at == (size_t)n);
	expect(memcmp(lent, buf, at) == 0);
}

static void read_piece(struct odx_stream *s, int fd, uint64_t off, size_t len)
{
	const struct odx_stream_info *info = odx_stream_info(s);
	uint64_t vs = info->virtual_size;
	size_t want = off >= vs ? 0 : vs - off < len ? (size_t)(vs - off) : len;
	struct odx_error err = {0};
	ssize_t n = odx_stream_pread(s, buf, len, off, &err);
	borrow_piece(s, off, len, n);
	if (n < 0)
		return;
	expect((size_t)n == want);
	check_bytes(fd, info, odx_stream_map(s), off, want);
}

static void read_image(struct odx_stream *s, int fd)
{
	const struct odx_stream_info *info = odx_stream_info(s);
	const struct odx_extmap *m = odx_stream_map(s);
	uint64_t vs = info->virtual_size;
	if (vs <= WHOLE_MAX) {
		for (uint64_t off = 0; off < vs; off += PIECE)
			read_piece(s, fd, off, PIECE);
	} else {
		for (size_t i = 0; i < m->count && i < EDGE_EXTENTS; i++) {
			const struct odx_extent *e = &m->ext[i];
			read_piece(s, fd, e->offset, EDGE);
			if (e->length > EDGE)
				read_piece(s, fd, e->offset + e->length - EDGE, EDGE);
		}
	}
	read_piece(s, fd, vs > 1 ? vs - 1 : 0, 16); /* the short count at the end */
	read_piece(s, fd, vs, 16);                  /* nothing past it */
}

static void count_problem(void *ctx, uint64_t offset, const char *msg)
{
	(void)offset;
	++*(unsigned *)ctx;
	expect(msg && strlen(msg) < 4096);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned flags = open_flags[(data[0] & 0x7f) % 3];
#ifdef ODX_OPEN_META_TEXT
	if (data[0] & 0x80)
		flags |= ODX_OPEN_META_TEXT;
#endif
	int fd = memfd_create("fuzz-stream", MFD_CLOEXEC);
	if (fd < 0 || write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
		abort();

	struct odx_stream_opts opts = {.flags = flags, .cache_bytes = 4u << 20};
	struct odx_stream *s = NULL;
	struct odx_error err = {0};
	int probe = odx_stream_probe(fd);
	if (odx_stream_open_fd(fd, "fuzz", &opts, &s, &err) == 0) {
		const struct odx_stream_info *info = odx_stream_info(s);
		expect(probe == 1);
		const char *meta = odx_stream_meta_text(s);
		expect(!meta || strlen(meta) <= ODX_META_MAX);
		check_map(info, odx_stream_map(s), flags);
		read_image(s, fd);
		odx_stream_close(s);
	} else {
		expect(s == NULL && err.code > 0);
	}

	char path[64];
	unsigned problems = 0;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	memset(&err, 0, sizeof err);
	odx_stream_check(path, count_problem, &problems, NULL, &err);
	close(fd);
	return 0;
}
