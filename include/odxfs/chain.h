/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backup chains: which streams of a backup directory build on which
 * (discovery), and the merged extent map of the disk at one checkpoint.
 * No FUSE type appears here; the daemon's chain backend and odxctl are
 * clients.  The rules are described in odxfs-stream(5), CHAINS.
 *
 * Discovery (odx_chain_scan) reads the meta of every stream in one
 * directory, as virtnbdbackup writes them:
 *   - a stream whose meta says incremental false is a BASE: a full backup,
 *     or a copy backup when its name holds ".copy." (a copy makes no
 *     checkpoint, so nothing chains onto it);
 *   - an incremental true stream is an INCREMENTAL, or a DIFFERENTIAL when
 *     its name holds ".diff.": both build on the member whose
 *     checkpointName is their parentCheckpoint (same diskName).  Only full
 *     backups and incrementals make checkpoints: a differential carries the
 *     name of a checkpoint that is never created, so a later differential
 *     never builds on an earlier one (it supersedes it) and an incremental
 *     taken after differentials builds on the last real checkpoint;
 *   - files whose name ends in ".partial" are never members.
 * When several streams make the parent checkpoint, the one whose file name
 * starts like the member's (up to the first dot: virtnbdbackup's
 * <disk>.<kind>... names) is its parent, if exactly one does; among those,
 * a full rather than incrementals making the same checkpoint (a synthetic
 * full folded from that view: the same disk, standing alone).  A member
 * whose parent no stream provides, or several (by that rule too), or
 * whose ancestry loops, is unresolved: its view is not served.
 *
 * The merged map (struct odx_cmap) of the disk at member N is built from
 * the map of its parent's view plus N's own frames: where N has a frame
 * (data, zero or bad) that wins, everything else falls through to the
 * parent.  Maps are immutable and share structure: a map is a short stack
 * of levels, newest first, each a sorted array of the pieces some members'
 * frames cover (32 bytes a piece), reference counted.  View N takes its
 * parent's levels and pushes its own frames as a new level.  A SETTLED
 * map (one a reader asked for) then merges the newest level into the one
 * below while it is at least a quarter of that one's size (newest wins),
 * and so on down, as a counter carries: so each frame is copied O(log N)
 * times over a chain of N members, however its changes are spread, and a
 * lookup is a binary search in each of a few levels.  A map built only as
 * the way to a later member's (the views between the last one open and
 * the one asked for) is not settled: it merges only when it would have
 * more than ODX_CMAP_MAX_LEVELS levels.  Opening the newest view of a long
 * chain so writes its merged map once, not the maps of every view before
 * it; such a map is settled when its own view is asked for (a new map
 * built over its parent's, odx_cmap_build with settle).
 *
 * Thread safety: a finished map is immutable and may be read by any number
 * of threads; building and freeing maps that share levels may happen in
 * different threads (level counts are atomic).
 */
#ifndef ODXFS_CHAIN_H
#define ODXFS_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "odxfs/error.h"
#include "odxfs/extmap.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- discovery ---- */

/* Members a view may have (its depth).  A view holds a descriptor and the
 * index of each, and every view lists its members, so the views of one
 * chain cost O(depth^2) bytes of lists: 1024 members (years of daily
 * incrementals) stay under 40 MiB of them.  A deeper chain is unresolved
 * (-E2BIG). */
#define ODX_CHAIN_MAX_MEMBERS 1024

enum odx_member_kind {
	ODX_MEMBER_FULL = 0, /* a base that makes a checkpoint */
	ODX_MEMBER_COPY = 1, /* a base that makes none (".copy." in its name) */
	ODX_MEMBER_INC = 2,
	ODX_MEMBER_DIFF = 3, /* ".diff." in its name */
};

struct odx_chain_entry {
	char *name;             /* file name in the directory */
	int kind;               /* enum odx_member_kind */
	char *disk, *checkpoint, *parent; /* meta; NULL when absent */
	uint64_t virtual_size;
	dev_t dev;              /* the file scanned */
	ino_t ino;
	off_t size;
	struct timespec mtime;
	/* Resolution: the entry this one builds on (-1 for a base), how
	 * many members its view has (1 for a base), and, when unresolved,
	 * status < 0 (-ENOENT no parent, -ENOTUNIQ several, -ELOOP a loop,
	 * -EUCLEAN an ancestor unresolved, -E2BIG more than
	 * ODX_CHAIN_MAX_MEMBERS) and why[] says it naming the checkpoint. */
	int parent_idx;
	unsigned depth;
	int status;
	char why[256];
};

struct odx_chain_dir {
	struct odx_chain_entry *e;
	size_t n;
	dev_t dev;              /* the directory scanned, and its modification */
	ino_t ino;              /* time then: a later scan is needed when it */
	struct timespec mtime;  /* changed (files added, removed, renamed) */
	unsigned unreadable;    /* streams whose meta could not be read */
};

/* Scan the directory open on dirfd (`path` for messages).  Files that are
 * not streams, cannot be opened, or whose meta is damaged are left out
 * (counted in unreadable when they looked like streams).  0 or -errno. */
int odx_chain_scan(int dirfd, const char *path, struct odx_chain_dir **out,
		   struct odx_error *err);
void odx_chain_dir_free(struct odx_chain_dir *d);
/* Index of the entry named `name`, or -1. */
int odx_chain_find(const struct odx_chain_dir *d, const char *name);
/* The members of entry i's view, base first: idx[0..depth) (idx has room
 * for e[i].depth entries).  Returns the count, or e[i].status when the
 * entry is unresolved. */
int odx_chain_members(const struct odx_chain_dir *d, int i, int *idx);
const char *odx_member_kind_name(int kind);
/* Whether a file of this name (or path) is a backup being written or torn
 * by a crash (".partial"): never a chain member, always shown standalone. */
bool odx_chain_name_is_partial(const char *name);
/* The directory of `path` ("." for a bare name, "/" at the root) into dir
 * (truncated to len), and the file name in it (a pointer into path). */
const char *odx_chain_split_path(const char *path, char *dir, size_t len);

/* ---- the merged map ---- */

#define ODX_CMAP_MAX_LEVELS 24 /* levels of one map at most */
#define ODX_CMAP_NO_MEMBER UINT32_MAX

/* One extent of a merged map, as lookups return it. */
struct odx_cext {
	uint64_t offset, length;
	/* DATA from an uncompressed member: file offset of byte `offset` in
	 * that member's stream (fd is true); otherwise not used. */
	uint64_t src;
	uint32_t member;  /* position in the chain, base 0; NO_MEMBER for
			   * UNMAPPED extents */
	uint8_t kind;     /* enum odx_extent_kind */
	bool fd;
};

struct odx_cmap;

/* The map of member `member` (its position in the chain) over `parent`
 * (NULL for a base): `own` is the member's own extent map (its size is
 * the view's size), `own_fd` whether its DATA extents are plain bytes in
 * the file (an uncompressed stream), `settle` whether the map is to be
 * read (levels merged) or only built on (see above).  0 or -ENOMEM. */
int odx_cmap_build(const struct odx_cmap *parent, const struct odx_extmap *own, bool own_fd,
		   uint32_t member, bool settle, struct odx_cmap **out);
void odx_cmap_free(struct odx_cmap *m);

uint64_t odx_cmap_size(const struct odx_cmap *m);
/* Extents (counted once, on the first call: O(n)). */
size_t odx_cmap_count(const struct odx_cmap *m);
size_t odx_cmap_levels(const struct odx_cmap *m);
/* DATA + BAD bytes (counted once, on the first call: O(n)). */
uint64_t odx_cmap_data_bytes(const struct odx_cmap *m);
/* Bytes this map holds that its parent does not share: the levels it
 * made. */
size_t odx_cmap_memory(const struct odx_cmap *m);
/* Bytes per member: data bytes of the extents each member supplies
 * (out[0..members)), for odxctl info. */
void odx_cmap_contrib(const struct odx_cmap *m, uint64_t *out, size_t members);

/* Walking a map: start at `offset` (false when offset >= size), then
 * read extents in order; the first starts at `offset` (the rest of the
 * extent that contains it). */
struct odx_cmap_iter {
	const struct odx_cmap *m;
	uint64_t pos;
	size_t cur[ODX_CMAP_MAX_LEVELS]; /* per level: first piece ending past pos */
};
bool odx_cmap_find(const struct odx_cmap *m, uint64_t offset, struct odx_cmap_iter *it);
bool odx_cmap_next(struct odx_cmap_iter *it, struct odx_cext *out);

/* lseek(2) SEEK_DATA / SEEK_HOLE on the map (BAD counts as data):
 * the offset, or -ENXIO. */
int64_t odx_cmap_seek(const struct odx_cmap *m, uint64_t off, int whence);

#ifdef __cplusplus
}
#endif
#endif
