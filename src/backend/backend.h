/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image backends: every kind of file the daemon serves (a raw file passed
 * through, a sparse stream shown as the disk it encodes, later a writable
 * stream or a merged backup chain) sits behind this one table, so the FUSE
 * layer and the offload engine never ask "what kind of file is this".
 *
 * `map` is the single source of layout truth: spliced reads (FD segments),
 * SEEK_DATA/SEEK_HOLE, st_blocks and what an offload token records all come
 * from it.  `read` exists for segments that must be decoded.
 *
 * A NULL write-side operation means the image is read-only: the odx_image_*
 * wrappers in backend.c turn it into -EROFS once, so callers never test for
 * NULL themselves.
 *
 * Internal to odxfs (not installed): backends are built in.  If they are
 * ever loaded at run time, add size and version fields to the table.
 *
 * Locking: an odx_image is reference counted (atomic).  Each backend guards
 * its own state and says how in its file comment; no lock is held across a
 * call into another layer.
 */
#ifndef ODXFS_BACKEND_H
#define ODXFS_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "odxfs/chain.h"
#include "odxfs/error.h"
#include "odxfs/stream.h"

enum odx_seg_kind {
	ODX_SEG_HOLE = 0,   /* reads as zeros; a hole for SEEK_HOLE and copies */
	ODX_SEG_FD = 1,     /* plain bytes at fd_offset in fd: can be spliced
			     * or copied with copy_file_range */
	ODX_SEG_DECODE = 2, /* bytes that must be decoded: use read() */
	ODX_SEG_BAD = 3,    /* unreadable (corruption): reads fail with EIO */
};

struct odx_seg {
	uint64_t offset;     /* logical start */
	uint64_t length;
	int kind;            /* enum odx_seg_kind */
	int extent_kind;     /* enum odx_extent_kind, for maps and tokens */
	int fd;              /* ODX_SEG_FD: descriptor holding the bytes */
	uint64_t fd_offset;  /* ODX_SEG_FD: file offset of byte `offset` */
};

/* Return 0 to continue, non-zero to stop (that value is returned by map). */
typedef int (*odx_seg_fn)(void *ctx, const struct odx_seg *seg);

/* Capability bits. */
#define ODX_CAP_WRITE 0x1   /* write/truncate/fallocate supported */
#define ODX_CAP_FD_DATA 0x2 /* map can return FD segments */
#define ODX_CAP_IMMUTABLE 0x4 /* content never changes while open: the
			       * kernel page cache may be kept */
#define ODX_CAP_DIRECT_FD 0x8 /* the image is its backing file byte for byte
			       * (logical offset N is offset N of img->fd), so
			       * reads may be answered from img->fd without
			       * asking map first */

struct odx_backend_config {
	struct odx_chunk_cache *cache; /* shared decompressed-chunk cache */
	unsigned stream_flags;         /* ODX_OPEN_* for stream backends */
};

struct odx_image;

/* ---- chain views (chain.c) ----
 *
 * A chain view is the disk at one member of a backup chain (odxfs/chain.h
 * has the rules): a read-only image made of the member's stream and its
 * ancestors' (each an image of the stream backend), with one merged map.
 * Views are kept in a process-wide registry, one per member file, so that
 * the view of member N is built from the live view of N-1 (sharing its
 * map) and a member's stream is indexed once for all views that use it.
 * The registry holds views weakly: a view lives while someone (an inode,
 * a handle, a token, a child view) holds it. */

/* The view of the file at `path` (an absolute or relative path to a
 * stream in a backup directory) whose own stream `own` (a stream image,
 * ownership passes) is already open.  On success *out is the view, its
 * problems (a member torn or damaged) as odx_image_problem says.  Fails
 * with -EIO and *err saying why (naming the missing checkpoint) when the
 * member's chain does not resolve; other errors as opening a stream. */
int odx_chain_view_open(const char *path, struct odx_image *own,
			const struct odx_backend_config *cfg, struct odx_image **out,
			struct odx_error *err);
/* Whether `img` is a chain view. */
bool odx_image_is_view(const struct odx_image *img);
/* The members of a view, base first: their count, and for member k its
 * file name (in the view's directory, *dir), kind (enum odx_member_kind),
 * checkpoint and stream image (borrowed: valid while the view is held). */
struct odx_view_member {
	const char *name;
	const char *checkpoint;
	int kind;
	struct odx_image *img;
};
size_t odx_chain_view_members(struct odx_image *view, const char **dir,
			      const struct odx_view_member **members);
/* The view's merged map (borrowed). */
const struct odx_cmap *odx_chain_view_map(struct odx_image *view);

struct odx_image;

/* What a destination written as a stream (the sink backend) takes from an
 * offloaded copy: one extent of a token, at a destination offset. */
struct odx_put {
	uint64_t length;
	int kind;              /* ODX_SEG_HOLE, ODX_SEG_FD or ODX_SEG_DECODE */
	int fd;                /* ODX_SEG_FD: the descriptor and offset of */
	uint64_t fd_offset;    /* the plain bytes */
	struct odx_image *src; /* the token's source (NULL for a zero token) */
	uint64_t src_offset;   /* logical offset of the extent in src */
};

struct odx_backend_ops {
	const char *name; /* "raw", "stream": used in logs and errors */
	unsigned caps;
	/* > 0: this backend serves the file open on fd; 0: not; < 0: -errno. */
	int (*probe)(int fd, const struct stat *st);
	/* Fill img->priv for the file open on img->fd. */
	int (*open)(struct odx_image *img, const struct odx_backend_config *cfg,
		    struct odx_error *err);
	void (*close)(struct odx_image *img);
	/* Adjust *st (already filled by fstat of the backing file): st_size is
	 * the image size, st_blocks its allocated data in 512-byte units. */
	int (*getattr)(struct odx_image *img, struct stat *st);
	/* Describe [off, off+len), clipped at the image size, as segments in
	 * ascending order through fn.  Never copies data. */
	int (*map)(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		   void *ctx);
	/* Decoded bytes of [off, off+len); short only at the image size.
	 * On failure a negative errno and, for bad data, *err (may be NULL)
	 * names the file and offset. */
	ssize_t (*read)(struct odx_image *img, void *buf, size_t len, uint64_t off,
			struct odx_error *err);
	/* Zero-copy read: the decoded bytes of [off, off+len) handed out in
	 * place through fn, pinned in *pins until odx_pins_release (stream.h
	 * has the contract).  -EOPNOTSUPP when they are not held in memory:
	 * use read.  May be NULL (never in memory). */
	ssize_t (*borrow)(struct odx_image *img, uint64_t off, size_t len, struct odx_pins *pins,
			odx_borrow_fn fn, void *ctx, struct odx_error *err);
	ssize_t (*write)(struct odx_image *img, const void *buf, size_t len, uint64_t off);
	/* SEEK_DATA / SEEK_HOLE (other whence values are handled by the caller). */
	off_t (*lseek)(struct odx_image *img, off_t off, int whence);
	int (*truncate)(struct odx_image *img, uint64_t size);
	int (*fallocate)(struct odx_image *img, int mode, uint64_t off, uint64_t len);
	int (*fsync)(struct odx_image *img, int datasync);
	/* What was wrong with the image when it was opened, or NULL when
	 * nothing was; *kind says how it is served (enum odx_problem).
	 * May be NULL. */
	const char *(*problem)(struct odx_image *img, int *kind);
	/* Damage found after the open, while reading an image that is served
	 * whole or not at all (a strict stream whose chunk fails to decode):
	 * from then on every read of it fails with EIO and map answers BAD.
	 * One message naming the file and offset; NULL while none was found.
	 * May be NULL (never damaged). */
	const char *(*damage)(struct odx_image *img);
	/* Bytes of memory the opened image holds (its index), for callers
	 * that bound a cache of open images.  May be NULL (0). */
	size_t (*memory)(struct odx_image *img);
	/* An idle image need not hold a descriptor.  suspend closes it
	 * (img->fd becomes -1) and returns 0, or -EBUSY when the backend
	 * still uses it itself (a stream's queued prefetch); the caller
	 * guarantees that nobody else uses the image meanwhile: no other
	 * reference, no map, read or segment descriptor in use.  resume
	 * gives it one again: `fd`, open O_RDONLY on the same file, whose
	 * ownership passes to the image on success: -ESTALE, with *err,
	 * when the file changed since the image was opened (then it stays
	 * suspended and must be opened anew; the caller keeps fd).  Both
	 * NULL: the image is never suspended. */
	int (*suspend)(struct odx_image *img);
	int (*resume)(struct odx_image *img, int fd, struct odx_error *err);
	/* Whether the image no longer shows what its files hold now: a file
	 * it is made of was removed, replaced or changed since it was opened
	 * (a chain view whose member went).  From the first true on, map and
	 * read fail with -ESTALE.  A message naming the file, or NULL.  May be
	 * NULL (the image is its own file, which the caller watches). */
	const char *(*stale)(struct odx_image *img);
	/* A destination written as a stream (sink.c) takes the extents of an
	 * offloaded copy here, in ascending order, instead of bytes; *st
	 * grows by what moved which way.  May be NULL (bytes are written). */
	int (*put)(struct odx_image *img, uint64_t off, const struct odx_put *p,
		   struct odx_sink_stats *st, struct odx_error *err);
	/* The stream holding the image's bytes [off, off + *len) at the same
	 * offsets (a stream: itself; a chain view: the member that supplies
	 * them, *len cut to where it stops), so that a sink can copy its
	 * compressed chunks as they are; NULL when none does.  Borrowed
	 * while the image is held.  May be NULL. */
	struct odx_stream *(*stream_at)(struct odx_image *img, uint64_t off, uint64_t *len);
	/* The stream whose meta describes the image (a stream: itself; a
	 * chain view: its own member), or NULL.  Borrowed.  May be NULL. */
	struct odx_stream *(*meta_stream)(struct odx_image *img);
};

/* How an image with a problem at open is served (odx_image_problem). */
enum odx_problem {
	ODX_PROBLEM_NONE = 0,
	ODX_PROBLEM_WHOLE,   /* something around the data is off, every byte
			      * is served (a salvaged stream's wrong dataSize) */
	ODX_PROBLEM_TORN,    /* cut short: served up to its last complete
			      * frame, what no frame covers reads as zeros */
	ODX_PROBLEM_DAMAGED, /* the ranges that cannot be trusted read with
			      * EIO, the rest is served (a salvaged stream) */
};

struct odx_image {
	const struct odx_backend_ops *ops;
	/* The backing descriptor, owned by the image; -1 while suspended.
	 * A backend's open may replace it (the stream backend lends the
	 * stream library's own descriptor, so a stream image holds one, not
	 * two); its close then sets it to -1 once it closed it. */
	int fd;
	dev_t dev;            /* backing identity, for logs and tokens */
	ino_t ino;
	char *name;           /* path for log messages */
	void *priv;           /* backend state */
	atomic_int refs;
	/* Bumped after every successful write, truncate or fallocate through
	 * the wrappers below, so holders of old layouts can tell. */
	atomic_uint_fast64_t generation;
	unsigned flags;       /* ODX_IMG_*, set by the opener before use */
};

/* Image flags. */
#define ODX_IMG_WRITE_THROUGH 0x1 /* a write returns once its range is on the
				   * device and out of the page cache (what
				   * O_DIRECT promises; raw backend) */

extern const struct odx_backend_ops odx_backend_raw;
extern const struct odx_backend_ops odx_backend_stream;
extern const struct odx_backend_ops odx_backend_chain;
extern const struct odx_backend_ops odx_backend_sink;

/* ---- streams being written (sink.c) ----
 *
 * A sink image is a new stream being written into `fd` (open read-write,
 * empty; ownership passes) as the destination of offloaded copies: its
 * `put` takes the extents of tokens in ascending order.  The stream itself
 * (meta, codec) is started at the first put, from its source: the meta of
 * the source's stream (odx_image_meta_stream; keys kept, checkpointName
 * kept, a full backup: incremental false, parentCheckpoint ""), the
 * source's codec unless opts->codec says otherwise.  Plain write, read
 * and map fail with EBUSY while it is written; truncate sets the size it
 * will have (at least what was written). */
struct odx_sink_image_opts {
	int codec;          /* enum odx_codec, or -1: the source's */
	int level;          /* 0: the codec's default (or the source's level
			     * when the codec is the source's) */
	const char *disk_name; /* for sources without a stream (raw files) */
};
int odx_sink_image_open(int fd, const char *name, const struct odx_sink_image_opts *opts,
			struct odx_image **out, struct odx_error *err);
/* Whether the sink holds a whole copy of its source: every put so far came
 * from one source image at the same offsets, and the size written (or set
 * by truncate) reaches the source's size.  *size gets that size. */
bool odx_sink_image_whole(struct odx_image *img, uint64_t *size);
/* Finish the stream at `size` (0: the larger of the end written and the
 * size set).  It is complete, not synced, not published.  The counters of
 * the whole stream in *st (may be NULL). */
int odx_sink_image_finish(struct odx_image *img, uint64_t size, struct odx_sink_stats *st,
			  struct odx_error *err);

/* Which backend serves the file open (readable) on fd: the backends are
 * probed in order (stream first, raw last; detection is by content).  On
 * success *out is set and 0 returned; a negative errno if probing failed. */
int odx_image_probe(int fd, const struct stat *st, const struct odx_backend_ops **out);

/* Open an image on `fd` (ownership of fd passes to the image, also on
 * failure): probe the backends in order (stream first, raw last) and open
 * the first that takes the file.  `name` is copied for messages. */
int odx_image_open(int fd, const char *name, const struct odx_backend_config *cfg,
		   struct odx_image **out, struct odx_error *err);
/* Same with the backend already chosen (by an earlier odx_image_probe, or
 * raw for a descriptor opened write-only, which cannot be probed). */
int odx_image_open_as(const struct odx_backend_ops *ops, int fd, const char *name,
		      const struct odx_backend_config *cfg, struct odx_image **out,
		      struct odx_error *err);
struct odx_image *odx_image_ref(struct odx_image *img);
void odx_image_unref(struct odx_image *img);

/* Wrappers: NULL operations become -EROFS (write side), 0 (fsync of an
 * image with nothing to write back), or a generic implementation (lseek
 * from map); modifications call odx_image_will_modify first and, when they
 * succeed, bump `generation` and call the modify hook.  Any thread may
 * call them. */
int odx_image_getattr(struct odx_image *img, struct stat *st);
int odx_image_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		  void *ctx);
ssize_t odx_image_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
		       struct odx_error *err);
ssize_t odx_image_borrow(struct odx_image *img, uint64_t off, size_t len, struct odx_pins *pins,
		       odx_borrow_fn fn, void *ctx, struct odx_error *err);
ssize_t odx_image_write(struct odx_image *img, const void *buf, size_t len,
			uint64_t off);
off_t odx_image_lseek(struct odx_image *img, off_t off, int whence);
int odx_image_truncate(struct odx_image *img, uint64_t size);
int odx_image_fallocate(struct odx_image *img, int mode, uint64_t off, uint64_t len);
int odx_image_fsync(struct odx_image *img, int datasync);
/* See odx_backend_ops.problem; NULL (and *kind ODX_PROBLEM_NONE) when the
 * image opened whole. */
const char *odx_image_problem(struct odx_image *img, int *kind);
/* See odx_backend_ops.damage; NULL while none was found. */
const char *odx_image_damage(struct odx_image *img);
/* See odx_backend_ops.stale: NULL while the image still shows its files. */
const char *odx_image_stale(struct odx_image *img);
/* See odx_backend_ops.memory: bytes the image holds (0 when unknown). */
size_t odx_image_memory(struct odx_image *img);
/* See odx_backend_ops.put: -EROFS when img takes no extents. */
int odx_image_put(struct odx_image *img, uint64_t off, const struct odx_put *p,
		  struct odx_sink_stats *st, struct odx_error *err);
/* Whether img is written by put (a sink). */
static inline bool odx_image_takes_puts(const struct odx_image *img)
{
	return img->ops->put != NULL;
}
/* See odx_backend_ops.stream_at and meta_stream (NULL when none). */
struct odx_stream *odx_image_stream_at(struct odx_image *img, uint64_t off, uint64_t *len);
struct odx_stream *odx_image_meta_stream(struct odx_image *img);

/* Descriptors of idle images (odx_backend_ops.suspend and resume).
 * odx_image_suspend returns whether a descriptor was closed (false for a
 * backend that never suspends, an image already suspended, or one its
 * backend still uses);
 * odx_image_resume returns 0 (also for an image that is not suspended)
 * or a negative errno.  The caller serialises both against every other
 * use of the image (odx_image_refs() == 1 under the owner's lock). */
bool odx_image_suspend(struct odx_image *img);
int odx_image_resume(struct odx_image *img, int fd, struct odx_error *err);
static inline bool odx_image_suspended(const struct odx_image *img)
{
	return img->fd < 0;
}
/* References held right now (a snapshot: others may drop theirs). */
static inline int odx_image_refs(struct odx_image *img)
{
	return atomic_load(&img->refs);
}
/* Report a modification made behind the wrappers' back (for example a
 * copy_file_range straight into img->fd by the offload engine). */
void odx_image_modified(struct odx_image *img, uint64_t off, uint64_t len);

/* ---- Who modifies: the actor, and the privileges a modification drops ----
 *
 * Every modification of an image's data or size (write, truncate,
 * fallocate of any mode, and what the offload engine writes straight into
 * img->fd) is bracketed: odx_image_will_modify() before it, which drops the
 * privileges the kernel drops on a local filesystem, and
 * odx_image_modified() after it, which bumps the generation and revokes the
 * offload tokens on the changed range.  The odx_image_* wrappers below do
 * both themselves; code that writes img->fd directly calls the pair.
 *
 * The kernel's rule (Linux 6.x, setattr_should_drop_suidgid): a write or
 * truncate of a regular file by a caller without CAP_FSETID clears
 * setuid, and clears setgid when the file is group-executable or when the
 * caller is not in the file's group.  Whose capability and groups count is
 * the actor's: the daemon sets one per request on the thread serving it
 * (odx_actor_set); without one (NULL) the actor is unknown and treated as
 * unprivileged and in no group, so the bits are cleared: never kept by
 * mistake. */
struct odx_actor {
	uid_t uid;
	gid_t gid;                 /* its fsgid */
	/* 1 when the actor has CAP_FSETID (in the user namespace that
	 * matters), else 0.  Asked only when a file has a bit to clear. */
	int (*fsetid)(const struct odx_actor *a);
	/* 1 when gid is the actor's fsgid or one of its groups. */
	int (*in_group)(const struct odx_actor *a, gid_t gid);
	/* May be NULL.  Told after a file's mode was changed (so cached
	 * attributes can be dropped). */
	void (*dropped)(const struct odx_actor *a);
	void *ctx;
};

/* The actor of the calling thread from now on (NULL: unknown).  The
 * pointer is kept, not copied: keep *a alive until it is reset. */
void odx_actor_set(const struct odx_actor *a);

/* Drop the privileges a modification of img by the current actor drops
 * (the rule above), with the daemon's own rights (a kernel does it with
 * ATTR_FORCE: the writer need not own the file).  Returns 0 or -errno;
 * callers must not modify img when it fails. */
int odx_image_will_modify(struct odx_image *img);

/* One process-wide hook told of every modification of any image (the
 * offload engine uses it to invalidate tokens of a changed raw source). */
typedef void (*odx_modify_hook)(void *ctx, struct odx_image *img, uint64_t off,
				uint64_t len);
/* Set it before any image is opened (it is read without a lock). */
void odx_backend_set_modify_hook(odx_modify_hook fn, void *ctx);

#endif
