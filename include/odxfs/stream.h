/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The virtnbdbackup sparse stream format: open and index, read, write,
 * check, repair.  No FUSE type appears here; the daemon and odxctl are both
 * clients of this library.  The format is described in odxfs-stream(5).
 *
 * An opened stream is immutable (frames are never rewritten in place) and
 * every function taking a `const struct odx_stream *` or reading data may be
 * called from any number of threads at once.
 */
#ifndef ODXFS_STREAM_H
#define ODXFS_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "odxfs/error.h"
#include "odxfs/extmap.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ODX_FRAME_HEADER_LEN 40
/* Chunk size for compressed frames: the NBD maximum request size the backup
 * tool used; frames of this length or more are split into chunks. */
#define ODX_CHUNK_SIZE (32u << 20)
/* Bounds on what one file can make a reader hold (odxfs-stream(5),
 * Limits): passing one is damage.  A chunk decodes to at most
 * ODX_CHUNK_SIZE bytes and takes at most ODX_CHUNK_CSIZE_MAX compressed
 * (the LZ4 and zlib bounds of 32 MiB are below it). */
#define ODX_META_MAX (64u << 10)
#define ODX_TRAILER_MAX (256u << 20)
#define ODX_CHUNK_CSIZE_MAX (33u << 20)

enum odx_codec {
	ODX_CODEC_NONE = 0,
	ODX_CODEC_LZ4 = 1,
	ODX_CODEC_ZLIB = 2,
};

const char *odx_codec_name(enum odx_codec c);
/* "none", "lz4", "zlib" -> codec; -EINVAL otherwise. */
int odx_codec_parse(const char *name, enum odx_codec *out);

/* What odx_stream_open learned.  All sizes in bytes. */
struct odx_stream_info {
	uint64_t virtual_size;     /* meta virtualSize: the image size */
	uint64_t meta_data_size;   /* meta dataSize as written */
	uint64_t file_size;        /* size of the stream file */
	uint64_t data_frames, zero_frames;
	uint64_t data_bytes;       /* sum of data frame lengths (uncompressed) */
	uint64_t zero_bytes;       /* sum of zero frame lengths */
	uint64_t payload_bytes;    /* sum of data payload sizes in the file */
	uint64_t mapped_bytes;     /* DATA bytes in the map after overlaps */
	uint64_t bad_bytes;        /* BAD bytes in the map (salvage): reads fail */
	uint64_t chunks;           /* compressed chunks */
	size_t extents;            /* entries in the extent map */
	int stream_version;        /* 1 or 2 */
	enum odx_codec codec;
	int level;                 /* compression level written in meta, 0 if none */
	bool incremental;
	bool complete;             /* stop frame (and trailer when compressed) seen */
	bool torn;                 /* cut short: served up to the last complete frame */
	uint64_t torn_at;          /* file offset where the torn tail starts */
	bool corrupt;              /* a bad frame header mid-stream (SALVAGE) */
	uint64_t corrupt_at;       /* its file offset */
	uint64_t stop_offset;      /* file offset of the stop frame (complete only) */
	unsigned warnings;         /* damage accepted and walked past (SALVAGE or
				    * repair): a frame beyond virtualSize made BAD,
				    * a wrong dataSize, ...; the first is in problem */
	char problem[ODX_ERROR_MSG_MAX]; /* why torn or corrupt, else "" */
};

/* A bounded cache of decompressed chunks, shareable between streams.
 * Thread-safe.  Least recently used chunks are evicted first. */
struct odx_chunk_cache;
struct odx_chunk_cache *odx_chunk_cache_new(size_t max_bytes);
void odx_chunk_cache_free(struct odx_chunk_cache *c);
struct odx_cache_stats {
	uint64_t hits, misses, evictions, bytes, max_bytes;
};
void odx_chunk_cache_stats(struct odx_chunk_cache *c, struct odx_cache_stats *out);

/* Open flags. */
#define ODX_OPEN_ALLOW_TORN 0x1 /* a stream cut short (no stop frame, a frame
				 * or header cut off by the end of the file,
				 * no trailer) is served up to its last
				 * complete frame (info->torn) */
#define ODX_OPEN_SALVAGE 0x2    /* damage does not fail the open: what cannot
				 * be trusted becomes BAD extents (EIO), the
				 * intact frames are served; see "DAMAGE" in
				 * odxfs-stream(5).  Without it (strict) any
				 * damage fails the open, and a chunk found
				 * damaged while reading makes every later
				 * read of the stream fail */
#define ODX_OPEN_META_TEXT 0x4   /* keep the meta JSON text for
				 * odx_stream_meta_text (readers otherwise
				 * keep only the fields they use) */

struct odx_stream_opts {
	unsigned flags;                /* ODX_OPEN_* */
	struct odx_chunk_cache *cache; /* NULL: a private cache of cache_bytes */
	size_t cache_bytes;            /* 0: 64 MiB */
};

struct odx_stream;

/* Open and index the stream at `path` (read-only).  `opts` may be NULL.
 * Errors (negative errno, message in *err naming file and offset): see
 * error.h.  A file that is not a stream at all gives -EUCLEAN. */
int odx_stream_open(const char *path, const struct odx_stream_opts *opts,
		    struct odx_stream **out, struct odx_error *err);
/* Same on an open descriptor; the stream keeps its own dup of `fd`.
 * `name` is used in messages. */
int odx_stream_open_fd(int fd, const char *name, const struct odx_stream_opts *opts,
		       struct odx_stream **out, struct odx_error *err);
void odx_stream_close(struct odx_stream *s);

const struct odx_stream_info *odx_stream_info(const struct odx_stream *s);
const struct odx_extmap *odx_stream_map(const struct odx_stream *s);
int odx_stream_fd(const struct odx_stream *s);
const char *odx_stream_name(const struct odx_stream *s);
/* The meta JSON exactly as stored in the file (NUL-terminated), when
 * opened with ODX_OPEN_META_TEXT; NULL otherwise. */
const char *odx_stream_meta_text(const struct odx_stream *s);
/* The meta JSON as stored (NUL-terminated, malloc'd), read again from the
 * file when it was not kept; NULL on failure (*err says why). */
char *odx_stream_meta_copy(const struct odx_stream *s, struct odx_error *err);

/* What a stream's meta says about its place in a backup chain (the keys
 * virtnbdbackup writes: diskName, checkpointName, parentCheckpoint,
 * incremental).  A string key that is absent or not a string is NULL. */
struct odx_stream_ident {
	const char *disk_name;
	const char *checkpoint;
	const char *parent;
	bool incremental;
	uint64_t virtual_size;
	enum odx_codec codec;
};
/* The ident of the stream open on fd from its meta frame alone (no frame
 * walk: a few hundred bytes read), for scanning a directory of backups.
 * 0, or a negative errno with *err naming the file and offset: -EUCLEAN
 * for a file that is not a stream or whose meta is damaged.  Free with
 * odx_stream_peek_free. */
struct odx_stream_peek {
	struct odx_stream_ident ident; /* strings point into the fields below */
	char *disk_name, *checkpoint, *parent;
};
int odx_stream_peek(int fd, const char *name, struct odx_stream_peek *out,
		    struct odx_error *err);
void odx_stream_peek_free(struct odx_stream_peek *p);

/* Bytes of memory the opened stream holds (its index: extent map, chunk
 * table, name), for callers that bound a cache of open streams. */
size_t odx_stream_memory(const struct odx_stream *s);

/* An idle stream need not hold a descriptor.  detach closes it (the caller
 * guarantees no other thread uses the stream meanwhile, and no descriptor
 * from a map of it is still in use); it refuses with -EBUSY while the
 * library itself still holds the stream (a queued prefetch, which reads
 * the descriptor).  attach gives it one again, taking ownership of fd on
 * success: it must be the same file, unchanged since the open (device,
 * inode, size and modification time are compared: -ESTALE otherwise).
 * Reads of a detached stream fail with -EBADF. */
int odx_stream_detach_fd(struct odx_stream *s);
int odx_stream_attach_fd(struct odx_stream *s, int fd, struct odx_error *err);
bool odx_stream_attached(const struct odx_stream *s);

/* Strict streams (no ODX_OPEN_SALVAGE): the damage a read found in a
 * chunk (from then on every read fails with -EIO), as one message naming
 * the file and offset; NULL while none was found. */
const char *odx_stream_damage(const struct odx_stream *s);

/* Read decoded bytes [off, off+len) of the image; bytes past virtual_size
 * are not read (short count).  Decompresses through the chunk cache.
 * Returns bytes read, or a negative errno: -EIO (backing read error or a
 * BAD extent), -EBADMSG/-EUCLEAN (corrupt chunk) with *err saying where. */
ssize_t odx_stream_pread(struct odx_stream *s, void *buf, size_t len, uint64_t off,
			 struct odx_error *err);

/* Zero-copy reads.  A reader that passes decoded bytes on (a FUSE reply,
 * a pwrite) would otherwise copy them out of the chunk cache into a buffer
 * first; odx_stream_borrow hands it pointers into the cached chunks instead,
 * each chunk pinned (never freed or evicted) until odx_pins_release.
 * A zero-initialised odx_pins is empty; release leaves it empty. */
struct odx_pin {
	struct odx_chunk_cache *cache;
	void *entry;
	bool done; /* read to its end by a sequential reader: evict first */
};
struct odx_pins {
	struct odx_pin *v;
	size_t n, cap;
};
void odx_pins_release(struct odx_pins *pins);
/* The bytes of [off, off+len) in order, as fn(ctx, p, n) pieces pointing
 * into pinned memory (pins grows).  Returns the bytes handed out (short
 * only at the image size), a non-zero return of fn, -EOPNOTSUPP when part
 * of the range is plain payload (not held in memory: read it with
 * odx_stream_pread or splice it), or the errors of odx_stream_pread.  On
 * failure pieces may already have been handed out; the pins taken stay
 * to be released. */
typedef int (*odx_borrow_fn)(void *ctx, const void *p, size_t n);
ssize_t odx_stream_borrow(struct odx_stream *s, uint64_t off, size_t len, struct odx_pins *pins,
			odx_borrow_fn fn, void *ctx, struct odx_error *err);
/* Hand out len zero bytes through fn (pieces of one shared, static zero
 * buffer): for borrow implementations.  Returns 0 or fn's non-zero return. */
int odx_borrow_zeros(odx_borrow_fn fn, void *ctx, uint64_t len);

/* Does `fd` start with a valid meta frame header?  1 yes (a stream, which
 * may still be damaged: odx_stream_open judges the rest), 0 no, negative
 * errno on I/O error.  Reads 40 bytes; used by the daemon to decide which
 * backend serves a file, by content and not by name. */
int odx_stream_probe(int fd);

/* ---- progress reporting for long operations ---- */
struct odx_progress {
	void (*fn)(void *ctx, uint64_t done, uint64_t total);
	void *ctx;
};

/* ---- writing ---- */
struct odx_range {
	uint64_t offset, length;
};

struct odx_write_opts {
	enum odx_codec codec;
	int level;                /* 0: codec default */
	uint64_t zero_block;      /* zero-detection granularity; 0: 64 KiB */
	/* Incremental mode: write only these ranges of the source as data
	 * frames (sorted, non-overlapping), no zero frames, meta incremental. */
	bool incremental;
	const struct odx_range *changed;
	size_t nchanged;
	const char *disk_name;     /* meta diskName, default "sda" */
	const char *checkpoint;    /* meta checkpointName, default "odxfs" */
	const char *parent;        /* meta parentCheckpoint, NULL: false */
	bool no_chksum;            /* do not write OUT.chksum */
	struct odx_progress progress;
};

/* Create a stream at `out_path` from the raw image in `raw_fd` (its first
 * `size` bytes; size 0 means the whole file).  Holes of the source
 * (SEEK_HOLE) and blocks of zero_block bytes that read as zeros become zero
 * frames; adjacent extents of one kind are merged.  The stream is written to
 * a temporary name and renamed into place, so a crash never leaves a
 * half-written OUT; OUT.chksum gets the Adler-32 of the file. */
int odx_stream_write(int raw_fd, uint64_t size, const char *out_path,
		     const struct odx_write_opts *o, struct odx_error *err);

/* ---- a stream being written (sink) ----
 *
 * Frames in ascending order into `fd` (open for writing, empty), the meta
 * frame first (reserved; final at odx_sink_finish).  A full stream (the
 * default) covers its disk: a range nothing was written to becomes a zero
 * frame; an incremental one (opts.incremental) leaves it without a frame
 * (unchanged since the parent).  Plain bytes of an uncompressed stream go
 * from their descriptor into the payload with copy_file_range, and
 * compressed chunks of the stream's codec that are taken whole are copied
 * as they are; the counters say which way each byte went.  A call that
 * fails leaves the sink failed: every later one fails with the same errno.
 * Not thread-safe: one writer at a time. */
struct odx_sink;
struct odx_sink_opts {
	enum odx_codec codec;
	int level;                /* 0: the codec's default */
	bool incremental;         /* unwritten ranges: no frame (not zeros) */
	bool no_copy_file_range;  /* copy through the buffer (tests, benchmarks) */
	/* Meta: start from this JSON (its keys kept, in order), else a fresh
	 * object; then compressed, compressionMethod, incremental and
	 * streamVersion are set from the above, and each of these that is
	 * not NULL.  virtualSize and dataSize are written at finish. */
	const char *meta_text;
	const char *disk_name, *disk_format, *checkpoint, *parent, *date;
	/* The size the stream will have, when known (0: not known): the
	 * virtualSize of the meta written first, which a stream cut short
	 * keeps (it is read as torn).  odx_sink_finish sets the real one. */
	uint64_t virtual_size;
};
struct odx_sink_stats {
	uint64_t bytes_kernel;    /* data copied into payloads by copy_file_range */
	uint64_t bytes_verbatim;  /* data in compressed chunks copied as they were */
	uint64_t bytes_buffered;  /* data that went through the sink's buffers */
	uint64_t bytes_holes;     /* written as zero frames */
};
int odx_sink_new(int fd, const char *name, const struct odx_sink_opts *opts,
		 struct odx_sink **out, struct odx_error *err);
/* Zeros over [off, off + len): a zero frame. */
int odx_sink_zero(struct odx_sink *s, uint64_t off, uint64_t len, struct odx_error *err);
/* Data bytes at off. */
int odx_sink_data(struct odx_sink *s, uint64_t off, const void *buf, size_t len,
		  struct odx_error *err);
/* Data: len plain bytes at foff of fd. */
int odx_sink_data_fd(struct odx_sink *s, uint64_t off, uint64_t len, int fd, uint64_t foff,
		     struct odx_error *err);
/* One compressed chunk of the sink's codec, clen bytes at coff of fd,
 * decoding to ulen bytes (at most ODX_CHUNK_SIZE), copied as it is. */
int odx_sink_chunk(struct odx_sink *s, uint64_t off, uint64_t ulen, int fd, uint64_t coff,
		   uint64_t clen, struct odx_error *err);
/* [soff, soff + len) of the stream src, to off: its map decides (plain
 * bytes by descriptor, whole chunks of the sink's codec as they are,
 * other compressed data decoded, zero frames as zeros; unmapped ranges as
 * zeros in a full stream and as nothing in an incremental one; damaged
 * ranges fail with EIO). */
int odx_sink_stream(struct odx_sink *s, uint64_t off, struct odx_stream *src, uint64_t soff,
		    uint64_t len, struct odx_error *err);
/* Decoded bytes of src [soff, soff + len), to off. */
int odx_sink_decoded(struct odx_sink *s, uint64_t off, struct odx_stream *src, uint64_t soff,
		     uint64_t len, struct odx_error *err);
/* The end of what was written (the next write starts there or later). */
uint64_t odx_sink_end(const struct odx_sink *s);
void odx_sink_stats(const struct odx_sink *s, struct odx_sink_stats *out);
/* End the stream at virtual_size (at least the end written): the last
 * frames, stop frame, trailer, and the meta with virtualSize and
 * dataSize.  The file is complete but neither synced nor published. */
int odx_sink_finish(struct odx_sink *s, uint64_t virtual_size, struct odx_error *err);
void odx_sink_free(struct odx_sink *s);
/* Publish a finished stream written under the name `from` in dirfd:
 * fsync, then rename it to `to` (never replacing a file of that name when
 * noreplace: -EEXIST), then write to.chksum (when chksum) the same way
 * (a temporary name, fsync, rename), and fsync the directory. */
int odx_stream_publish_at(int fd, int dirfd, const char *from, const char *to, bool chksum,
			  bool noreplace, struct odx_error *err);

/* Write the image encoded by `s` to `out_fd` as a sparse raw file: data
 * extents written, zero and unmapped extents left as holes, size set to
 * virtual_size. */
int odx_stream_export(struct odx_stream *s, int out_fd, const struct odx_progress *p,
		      struct odx_error *err);

/* ---- check ---- */
/* Called once per problem found, in file order. */
typedef void (*odx_problem_fn)(void *ctx, uint64_t offset, const char *msg);

/* Validate everything: every header and CRLF, meta, dataSize, trailer entry
 * count and sizes, every compressed chunk decompresses (checksums verified)
 * to its stated size, frames within virtualSize, and PATH.chksum when it
 * exists.  Returns the number of problems (0: clean), or a negative errno if
 * the file could not be read at all (*err says why). */
int odx_stream_check(const char *path, odx_problem_fn cb, void *ctx,
		     const struct odx_progress *p, struct odx_error *err);

/* ---- repair ---- */
struct odx_repair_report {
	uint64_t frames_kept;     /* data + zero frames kept */
	uint64_t bytes_dropped;   /* torn tail bytes dropped */
	uint64_t old_data_size, new_data_size;
	bool was_complete;        /* nothing to repair */
};

/* Repair a stream cut short: keep every complete frame, drop the torn tail,
 * append stop (and the trailer if compressed), fix dataSize, write
 * OUT.chksum.  out_path NULL repairs in place (via a temporary file and
 * rename); otherwise `path` is never modified. */
int odx_stream_repair(const char *path, const char *out_path,
		      struct odx_repair_report *rep, struct odx_error *err);

/* Adler-32 of a whole file (the .chksum value).  Returns 0 or -errno. */
int odx_file_adler32(int fd, uint32_t *out);
/* The value of a .chksum file's text: a decimal below 2^32, white space
 * after it allowed.  0 or -EINVAL. */
int odx_chksum_parse(const char *text, uint32_t *out);

#ifdef __cplusplus
}
#endif
#endif
