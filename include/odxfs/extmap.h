/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Extent map: the logical layout of an image as sorted, non-overlapping,
 * gap-free extents covering [0, size).  Built from the frames of a stream in
 * file order ("later frames win" where frames overlap), then read-only.
 *
 * One map answers every layout question: reads (which bytes live where),
 * SEEK_DATA/SEEK_HOLE, st_blocks, `odxctl map` and what an offload token
 * records.  Lookup is a binary search (O(log n)); an extent is 32 bytes.
 *
 * Thread safety: building is single-threaded; a finished map is immutable
 * and may be read by any number of threads.
 */
#ifndef ODXFS_EXTMAP_H
#define ODXFS_EXTMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum odx_extent_kind {
	ODX_EXTENT_UNMAPPED = 0, /* no frame covers it: reads as zeros (a hole) */
	ODX_EXTENT_ZERO = 1,     /* a zero frame: reads as zeros (a hole) */
	ODX_EXTENT_DATA = 2,     /* a data frame's payload */
	ODX_EXTENT_BAD = 3,      /* lost to corruption: reads fail with EIO */
};

#define ODX_NO_FRAME UINT32_MAX

struct odx_extent {
	uint64_t offset; /* logical start */
	uint64_t length; /* > 0 */
	/* DATA, uncompressed: file offset of the byte at `offset`.
	 * DATA, compressed: the logical start of its frame (slicing keeps
	 * it).  Other kinds: 0. */
	uint64_t src;
	/* DATA, compressed: the frame, as the index of its first chunk in the
	 * stream's chunk table; otherwise ODX_NO_FRAME. */
	uint32_t frame;
	uint8_t kind; /* enum odx_extent_kind */
	uint8_t pad[3];
};

struct odx_extmap {
	struct odx_extent *ext; /* sorted by offset, contiguous from 0 to size */
	size_t count;
	size_t cap;
	uint64_t size; /* logical size covered once finished */
	/* Building state: frames that arrived out of order wait here and are
	 * resolved by a sweep in odx_extmap_finish(). */
	struct odx_extent *pending;
	size_t npending;
	size_t pending_cap;
};

/* Start an empty map for an image of `size` bytes. */
void odx_extmap_init(struct odx_extmap *m, uint64_t size);
void odx_extmap_free(struct odx_extmap *m);

/* Add one frame's extent (kind ZERO, DATA or BAD), in file order.  Frames in
 * ascending order are appended in O(1) (amortised) and merged with their
 * predecessor when contiguous and of one kind (DATA: contiguous in the file
 * too, and the same compressed frame); an extent starting before the end of
 * what is already there is kept for the sweep in odx_extmap_finish(), which
 * gives it priority over everything added earlier.
 * The extent must lie within [0, size).  Returns 0, -EINVAL or -ENOMEM. */
int odx_extmap_add(struct odx_extmap *m, const struct odx_extent *e);

/* Resolve overlaps, fill gaps (and the tail up to size) with UNMAPPED
 * extents.  Returns 0 or -ENOMEM.  After this the map is read-only. */
int odx_extmap_finish(struct odx_extmap *m);

/* Index of the extent containing `offset` (offset < size); count if
 * offset >= size.  O(log n). */
size_t odx_extmap_find(const struct odx_extmap *m, uint64_t offset);

/* Slice of extent `e` from `offset` for at most `length` bytes, with `src`
 * adjusted for uncompressed DATA.  `offset` must lie inside e. */
struct odx_extent odx_extent_slice(const struct odx_extent *e, uint64_t offset,
				   uint64_t length);

/* True for kinds that read as zeros and count as holes. */
static inline int odx_extent_is_hole(const struct odx_extent *e)
{
	return e->kind == ODX_EXTENT_UNMAPPED || e->kind == ODX_EXTENT_ZERO;
}

/* lseek(2) semantics on the map: SEEK_DATA gives the first offset >= off in
 * a non-hole extent, SEEK_HOLE the first offset >= off in a hole (or size).
 * Returns the offset, or -ENXIO when off >= size or no data follows. */
int64_t odx_extmap_seek(const struct odx_extmap *m, uint64_t off, int whence);

/* Total bytes in DATA (and BAD) extents: what st_blocks counts. */
uint64_t odx_extmap_data_bytes(const struct odx_extmap *m);

const char *odx_extent_kind_name(int kind);

#ifdef __cplusplus
}
#endif
#endif
