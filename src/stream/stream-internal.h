/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Declarations shared inside the stream library, grouped by the file that
 * defines them.  Nothing here is installed.
 */
#ifndef ODXFS_STREAM_INTERNAL_H
#define ODXFS_STREAM_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "odxfs/stream.h"

/* ---- frame.c: the 40-byte frame header ---- */
enum frame_kind { FRAME_META, FRAME_DATA, FRAME_ZERO, FRAME_STOP, FRAME_COMP };

struct frame_hdr {
	enum frame_kind kind;
	uint64_t start;
	uint64_t length;
};

/* Parse the 40 bytes at buf.  On failure returns -EUCLEAN and writes what
 * was expected and what was found into why. */
int frame_parse(const char *buf, struct frame_hdr *h, char *why, size_t whylen);
/* Format a header into buf (ODX_FRAME_HEADER_LEN bytes, no NUL). */
void frame_format(char *buf, enum frame_kind kind, uint64_t start, uint64_t length);
const char *frame_kind_name(enum frame_kind k);

/* ---- meta.c: the meta JSON ---- */
struct meta {
	cJSON *json;            /* the whole object, unknown keys included
				 * (kept only when asked: writers, repair) */
	char *disk_name;        /* diskName, checkpointName, parentCheckpoint */
	char *checkpoint;       /* when they are strings (else NULL) */
	char *parent;
	uint64_t virtual_size;
	uint64_t data_size;
	bool has_data_size;
	bool bad_data_size;     /* present, but not an integer below 2^64 */
	int version;            /* streamVersion, 1 if absent */
	enum odx_codec codec;   /* NONE unless version 2 and compressed */
	int level;
	bool incremental;
};
/* Parse meta JSON (text need not be NUL-terminated; nothing but white
 * space may follow the object).  `where` is the file offset of the JSON,
 * for messages.  keep_json keeps the tree in out->json (meta_print needs
 * it). */
int meta_parse(const char *text, size_t len, const char *name, uint64_t where,
	       bool keep_json, struct meta *out, struct odx_error *err);
void meta_free(struct meta *m);
/* Read and parse the meta frame at the start of fd (a file of fsz bytes):
 * its header, the JSON (at most ODX_META_MAX bytes) and whether CRLF
 * follows it (*crlf_ok).  *json_len gets the JSON's length; text_out (may
 * be NULL) the JSON text, NUL-terminated and malloc'd.  0 or a negative
 * errno with *err naming the file and offset. */
int meta_load(int fd, uint64_t fsz, const char *name, bool keep_json, struct meta *m,
	      char **text_out, uint64_t *json_len, bool *crlf_ok, struct odx_error *err);
/* Print meta JSON with dataSize set (other keys kept, in order), padded with
 * spaces before the closing brace to at least pad_to bytes.  Malloc'd. */
char *meta_print(const struct meta *m, uint64_t data_size, size_t pad_to);
/* A fresh meta object for a stream written by odxfs. */
int meta_new(struct meta *m, uint64_t virtual_size, const struct odx_write_opts *o);
/* Set the keys a writer decides (compressed, compressionMethod,
 * incremental, streamVersion 2) and those given (not NULL) in m->json.
 * 0 or -ENOMEM. */
int meta_set(struct meta *m, enum odx_codec codec, int level, bool incremental,
	     const char *disk_name, const char *disk_format, const char *checkpoint,
	     const char *parent, const char *date);

/* ---- trailer.c: the compression trailer ---- */
struct trailer {
	size_t count;        /* entries == data frames */
	uint64_t *payload;   /* per frame: compressed payload size */
	uint32_t *first;     /* per frame: index of its first chunk in csize */
	uint32_t *nchunks;   /* per frame: chunks (1 for an integer entry) */
	bool *dict;          /* per frame: written as {"total": [...]} */
	uint32_t *csize;     /* all chunk sizes, frame after frame */
	size_t ncsize;
	size_t cap, cscap;   /* allocated entries / chunk sizes */
	uint64_t json_offset, json_length; /* where the JSON sits in the file */
};
/* Find the trailer from the end of the file: the last 40 bytes are a comp
 * header, the JSON ends 2 bytes (CRLF) before it.  -ENODATA if there is no
 * comp header at the end, -EUCLEAN if it is malformed. */
int trailer_locate(int fd, uint64_t file_size, const char *name, uint64_t *json_off,
		   uint64_t *json_len, struct odx_error *err);
/* Reading a trailer entry by entry (trailer.c explains why). */
struct trailer_rd {
	int fd;
	const char *name;
	uint64_t json_offset, json_length; /* where the JSON sits in the file */
	uint64_t end, pos;    /* end of the JSON; next byte to parse */
	uint64_t base;        /* file offset of buf[0] */
	size_t len;           /* bytes valid in buf */
	size_t entries;       /* entries returned so far */
	bool closed;          /* the closing ']' was read */
	int ioerr;
	unsigned char buf[16384];
};
/* Locate the trailer (trailer_locate) and read its opening '['. */
int trailer_open(struct trailer_rd *t, int fd, uint64_t file_size, const char *name,
		 struct odx_error *err);
/* The next entry: its chunk sizes into *cs (an array of *cap, grown as
 * needed), their count in *n, *dict when written as {"size": [...]},
 * their sum (the payload size) in *payload.  *fits is false when the entry
 * parses but cannot describe a frame (more than max chunks: those are
 * counted, not stored; a size of 0 or over the limit; a key that is not
 * the sum).  1: an entry; 0: the list has ended; negative errno when the
 * trailer itself is malformed (*err names the offset). */
int trailer_next(struct trailer_rd *t, uint32_t **cs, size_t *cap, uint32_t max, uint32_t *n,
		 bool *dict, uint64_t *payload, bool *fits, struct odx_error *err);
/* Make room for chunk size number n (0-based) in *cs, an array of *cap
 * (grown by doubling).  0 or -ENOMEM. */
int chunk_sizes_room(uint32_t **cs, size_t *cap, size_t n);
/* After the last data frame: the list must have ended, with nothing but
 * white space after it.  0 or -EUCLEAN. */
int trailer_finish(struct trailer_rd *t, struct odx_error *err);
void trailer_free(struct trailer *t);
/* JSON text for a trailer: entries as written by virtnbdbackup. Malloc'd. */
char *trailer_print(const struct trailer *t);
/* Append one entry (chunk sizes of one data frame). */
int trailer_push(struct trailer *t, const uint32_t *chunks, uint32_t n, bool dict);

/* ---- codec.c: LZ4 frames and zlib streams behind one interface ---- */
/* Decompress exactly one chunk.  -EBADMSG on a checksum mismatch, -EUCLEAN
 * on anything else wrong (why says what); the output must be exactly dlen. */
int codec_decompress(enum odx_codec c, const void *src, size_t slen, void *dst,
		     size_t dlen, char *why, size_t whylen);
/* Same, reading the slen compressed bytes at file offset off of fd through
 * a 1 MiB buffer; a read error gives its negative errno. */
int codec_decompress_fd(enum odx_codec c, int fd, uint64_t off, size_t slen, void *dst,
			size_t dlen, char *why, size_t whylen);
size_t codec_bound(enum odx_codec c, size_t slen);
/* Compress one chunk into dst (codec_bound bytes).  Returns the size or
 * -errno. */
ssize_t codec_compress(enum odx_codec c, int level, const void *src, size_t slen,
		       void *dst, size_t dcap);
int codec_default_level(enum odx_codec c);
/* Find the end of one compressed chunk starting at file offset off without
 * a trailer (a torn stream): LZ4 frames are walked block header by block
 * header (linear in the file bytes), zlib streams inflated into a small
 * window (linear in the decoded bytes, never more than max_ulen).  *clen
 * gets its size, *ulen the decoded size (for an LZ4 frame its content size
 * field, 0 when absent).  -ENODATA if the file ends first, -EUCLEAN if it
 * is not a chunk or decodes to more than max_ulen. */
int codec_measure(enum odx_codec c, int fd, uint64_t off, uint64_t file_size,
		  uint64_t max_ulen, uint64_t *clen, uint64_t *ulen);
/* The content size in the header of the LZ4 frame at file offset off
 * (nothing after the header is read).  -ENODATA when it has none. */
int codec_content_size(enum odx_codec c, int fd, uint64_t off, uint64_t *ulen);

/* ---- chunk-cache.c ---- */
struct cache_entry;
/* The decompressed chunk (sid, idx), pinned until cache_release.  On a
 * hit it is ready (or known damaged: cache_error).  On a miss *load is
 * set: the caller decodes the chunk and hands it over with cache_fill (or
 * cache_fail, or gives up with cache_abort); other threads asking for it
 * meanwhile wait.  *loaders counts the decodes of the caller's stream
 * under the cache's lock: a stream has at most one per worker plus one at
 * once, so one stream cannot take every decode slot of the mount.  NULL
 * when out of memory, or (!wait, for prefetch) when the caller would have
 * to wait: the chunk is there or being decoded, or no slot is free. */
struct cache_entry *cache_acquire(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx,
				  unsigned *loaders, bool wait, bool *load);
/* The chunk does not decode: remember that (errno err) instead of data,
 * and drop the caller's pin. */
void cache_fail(struct odx_chunk_cache *c, struct cache_entry *e, int err);
/* 0, or the positive errno of a chunk remembered as damaged. */
int cache_error(const struct cache_entry *e);
/* data is malloc'd; ownership passes to the cache.  The entry stays pinned. */
void cache_fill(struct odx_chunk_cache *c, struct cache_entry *e, void *data, size_t len);
/* Drop a placeholder whose decoding failed (and the caller's pin). */
void cache_abort(struct odx_chunk_cache *c, struct cache_entry *e);
const void *cache_data(const struct cache_entry *e);
void cache_release(struct odx_chunk_cache *c, struct cache_entry *e);
/* cache_release by a sequential reader that has read the chunk to its
 * end: it goes to the cold end of the LRU list and is the first evicted,
 * before the chunks decoded ahead of that reader. */
void cache_release_done(struct odx_chunk_cache *c, struct cache_entry *e);
/* Queue fn(arg, true) on the cache's worker thread; false when the queue
 * is full (the caller keeps arg).  Jobs never run get fn(arg, false) when
 * the cache is freed. */
bool cache_prefetch(struct odx_chunk_cache *c, void (*fn)(void *arg, bool run), void *arg);
/* Worth prefetching: absent (neither cached nor being decoded), and the
 * cache holds at least two chunks of len bytes. */
bool cache_wants(struct odx_chunk_cache *c, uint64_t sid, uint64_t idx, size_t len);
/* The decoded bytes read-ahead may hold ahead of a reader. */
size_t cache_ahead_budget(const struct odx_chunk_cache *c);
/* Forget every chunk of stream sid (it is being closed). */
void cache_drop_stream(struct odx_chunk_cache *c, uint64_t sid);
uint64_t cache_new_stream_id(void);

/* ---- index.c: the stream object and the frame walk ---- */
struct chunk {
	uint64_t file_off;   /* where the compressed chunk starts */
	uint32_t csize;      /* compressed size */
	uint32_t ulen;       /* decoded size */
};

struct odx_stream {
	int fd;
	char *name;
	char *meta_text;
	struct meta meta;
	struct odx_stream_info info;
	struct odx_extmap map;
	struct chunk *chunks;
	size_t nchunks, chunks_cap;
	struct odx_chunk_cache *cache;
	bool own_cache;
	uint64_t sid;           /* key of this stream in the chunk cache */
	unsigned loaders;       /* its chunks being decoded (cache lock) */
	/* Read-ahead (read.c): the chunk read last (a sequential reader reads
	 * it or the next), and the first chunk not queued for prefetch yet. */
	_Atomic size_t last_chunk, ahead_next;
	uint64_t frames_start;  /* file offset of the first frame after meta */
	uint64_t frames_end;    /* end of the last complete frame */
	struct trailer kept;    /* trailer entries of the complete data frames,
				 * rebuilt during the walk (repair writes it) */
	unsigned flags;         /* ODX_OPEN_* it was opened with */
	dev_t dev;              /* identity of the file at open (attach) */
	ino_t ino;
	struct timespec mtime;
	/* Strict streams: damage found while reading.  0 none, 1 being
	 * recorded, 2 recorded in damage_msg (then never changes). */
	_Atomic int damage_state;
	char damage_msg[ODX_ERROR_MSG_MAX];
	/* References: the opener's, plus one per queued prefetch job, so a
	 * stream closed while the worker still holds a job stays alive until
	 * the job is done.  The last release frees it. */
	_Atomic int refs;
};
void stream_unref(struct odx_stream *s);

/* Walk modes for stream_index.  WALK_REPAIR (beside the ODX_OPEN_* flags)
 * accepts the problems repair rewrites. */
#define WALK_REPAIR 0x100
struct walk_opts {
	unsigned flags;          /* ODX_OPEN_* */
	odx_problem_fn problem;  /* check mode: report and go on where possible */
	void *ctx;
	int nproblems;
};
int stream_index(struct odx_stream *s, struct walk_opts *w, struct odx_error *err);
/* Open (fd, or path when fd < 0), allocate and index a stream with the
 * given walk; on failure nothing is left allocated. */
int stream_load(int fd, const char *path, const struct odx_stream_opts *opts,
		struct walk_opts *w, struct odx_stream **out, struct odx_error *err);
/* The message of an odx_error_at() without its "FILE: offset N: " prefix. */
const char *stream_error_reason(const struct odx_error *e);
/* Allocate a stream on a dup of fd with no index yet. */
int stream_alloc(int fd, const char *name, const struct odx_stream_opts *opts,
		 struct odx_stream **out, struct odx_error *err);

/* ---- read.c ---- */
/* Record damage found while reading a strict stream (first one wins);
 * returns -EIO. */
int stream_set_damage(struct odx_stream *s, const struct odx_error *e);
/* Decoded bytes of compressed chunk `ci` of s, pinned in the cache. */
int chunk_load(struct odx_stream *s, size_t ci, struct cache_entry **out,
	       struct odx_error *err);

/* ---- write.c ---- */
/* Create PATH.tmpXXXXXX (name in tmp) for writing; returns its fd or
 * -errno with *err set. */
int stream_tmpfile(const char *path, char *tmp, size_t len, struct odx_error *err);
/* fsync fd (written under the temporary name tmp), rename it to path and
 * write path.chksum (when chksum) the same crash-safe way. */
int stream_publish(int fd, const char *tmp, const char *path, bool chksum,
		   struct odx_error *err);
/* Write the stop frame at `at` and, for a compressed stream, the trailer
 * JSON, CRLF and comp header after it. */
int stream_write_tail(int fd, uint64_t at, enum odx_codec codec, const struct trailer *t,
		      struct odx_error *err);

/* ---- shared I/O helpers (read.c) ---- */
/* pread/pwrite until done; -EIO style negative errno; short pread at EOF
 * returns the count. */
ssize_t io_pread_full(int fd, void *buf, size_t len, uint64_t off);
int io_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Copy len bytes between descriptors, copy_file_range first, then a
 * bounded buffer. */
int io_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len);
/* The same, copy_file_range only when `kernel` (else, and where the
 * kernel refuses, through the buffer: *kernel becomes false); *done gets
 * the bytes copied, also when it fails part way. */
int io_copy_range_ex(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len,
		     bool use_cfr, uint64_t *done, bool *kernel);

#endif
