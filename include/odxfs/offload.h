/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The offload engine: Windows ODX (offloaded data transfer) semantics on top
 * of Linux copy_file_range, independent of FUSE.
 *
 *   offload read   records what a range of a source image is made of, as of
 *                  now, and returns a 512-byte token standing for it
 *                  (token.h has the layout).
 *   offload write  applies (part of) a token to a destination image: zero
 *                  extents become holes, plain data goes from backing file to
 *                  backing file with copy_file_range inside the kernel,
 *                  compressed data is decoded through one bounded buffer.
 *   release        forgets a token before its time to live runs out.
 *
 * The engine keeps every token's record in memory; the token itself carries
 * only random bits (see token.h), so it cannot be forged.  Nor can it be
 * edited: offload write and release accept a token only when all its 512
 * bytes equal those of a live token this engine issued (compared in
 * constant time, as is the key looked up in the table), so a token whose
 * transfer length or type was changed is refused (ENOKEY) even though its
 * key is right.
 *
 * SNAPSHOT SEMANTICS.  A token stands for the data as it was at the offload
 * read:
 *   - zero tokens (ZERO_DATA) need no source and stay valid until they
 *     expire;
 *   - tokens on an immutable source (ODX_CAP_IMMUTABLE: stream images) are a
 *     point-in-time snapshot for free and stay valid until they expire;
 *     except a chain view's: made of several files, it is INVALIDATED when
 *     one of them is removed, replaced or rewritten (odx_image_stale,
 *     checked at every offload write);
 *   - tokens on a mutable source (raw files) are INVALIDATED when any byte of
 *     their source range is written, truncated away, punched or otherwise
 *     modified through the mount (the backends' modify hook).  Using one then
 *     fails with ODX_OFFLOAD_E_INVALIDATED (EKEYREVOKED).  Modifications of
 *     other ranges of the same file do not invalidate it.  Writes made
 *     directly to the backing directory, outside the mount, cannot be seen:
 *     an offload write then copies whatever the backing file holds at that
 *     moment (as a plain copy_file_range would).  A write through the mount
 *     that races with an offload write of the same range may or may not be
 *     seen by it.
 *
 * TOKEN LIFETIME.  A token lives until the first of: its time to live passes
 * (checked at use; expired tokens are swept lazily when tokens are issued),
 * it is released, it is invalidated (then it is dropped at its next use or
 * sweep), or the engine is destroyed.  A token may be used any number of
 * times (several offload writes, from any process) while it lives.  Its
 * time to live is the one its offload read asked for (0: token_ttl_ms),
 * cut to max_ttl_ms.
 *
 * Caps: `max_tokens` outstanding tokens and `max_token_bytes` of memory for
 * their records, for the whole engine; and, so that one user cannot fill
 * the table for everyone, `max_tokens_per_owner` and
 * `max_token_bytes_per_owner` for the tokens of one owner (the uid the
 * offload read was made for: the daemon passes the caller's).  Past any
 * cap (after sweeping expired and invalidated tokens) offload read fails
 * with that cap's error; the engine's caps are checked first.  Owners
 * matter only for the caps: a token, once issued, may be used and released
 * by anyone who holds it (it is a capability; the daemon's permission
 * checks on the files still apply).  Recently expired or invalidated
 * tokens are remembered (a small ring) so that using one reports
 * "expired"/"invalidated" rather than "unknown".
 *
 * THREADS.  Every function may be called from any thread, any number at
 * once (except engine_destroy, see there).  One mutex guards the token
 * table; it is never held while data is copied (a token in use holds a
 * reference, so release, expiry or invalidation during an offload write is
 * safe: the write finishes with the data of the record it started with).
 * Each check-and-change of a token is one hold of the mutex: of two
 * concurrent releases of one token exactly one returns 0, the other gets
 * the token errors below; a token is never counted both released and
 * expired.  Counters are atomics.  Tested under ThreadSanitizer
 * (test/unit/test-offload-stress.c, test/integration/token-stress.sh).
 * Memory stays flat whatever the copy size: one bounded buffer per offload
 * write in progress that needs one, and a small record per token.
 *
 * ERRORS (for the man page's ERRORS section; the table below is the source):
 *   EPROTO        malformed token: unknown or reserved TokenType, non-zero
 *                 reserved bytes, wrong TokenIdLength, bad magic or padding
 *   ENOKEY        unknown token: well formed, but this mount holds no live
 *                 token equal to it in all 512 bytes (never issued,
 *                 released, forged, or edited: a right key with another
 *                 transfer length or type)
 *   EKEYEXPIRED   the token's time to live has passed
 *   EKEYREJECTED  the token was issued by another mount (or an earlier
 *                 mount of this one)
 *   EKEYREVOKED   the token was invalidated: its (raw) source range was
 *                 written, truncated or punched through the mount
 *   ERANGE        transfer offset at or past the end of the token's data
 *   EROFS         the destination image is read-only (streams, ro mounts)
 *   EBADF         the caller's handle on the destination is not open for
 *                 writing
 *   EINVAL        source and destination ranges overlap in the same file
 *                 (as copy_file_range(2)); also a bad argument (zero length,
 *                 unknown flags, a wrong ioctl struct size)
 *   ENFILE        too many outstanding tokens (max_tokens)
 *   ENOBUFS       token memory cap reached (max_token_bytes)
 *   EMFILE        too many outstanding tokens of this owner
 *                 (max_tokens_per_owner; the mount option max_tokens_per_user)
 *   EDQUOT        this owner's token memory cap reached
 *                 (max_token_bytes_per_owner; token_memory_per_user)
 *   EIO           the source range starts in an unreadable (corrupt) extent,
 *                 or a backing file returned less than its map promised
 * Other errno values come from the backing files (ENOSPC, EFBIG, ...).
 */
#ifndef ODXFS_OFFLOAD_H
#define ODXFS_OFFLOAD_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "odxfs/error.h"
#include "odxfs/token.h"

#ifdef __cplusplus
extern "C" {
#endif

struct odx_image; /* src/backend/backend.h */
struct odx_offload_engine;

/* ---- Errors ---------------------------------------------------------- */

/* X(NAME, errno, stable name, message): the one table of engine errors. */
#define ODX_OFFLOAD_ERRORS(X)                                                   \
	X(MALFORMED, EPROTO, "token-malformed",                                 \
	  "malformed offload token (bad type, length or structure)")            \
	X(UNKNOWN, ENOKEY, "token-unknown",                                     \
	  "unknown offload token (never issued by this mount, released, edited or forged)") \
	X(EXPIRED, EKEYEXPIRED, "token-expired",                                \
	  "offload token expired (its time to live has passed)")                \
	X(OTHER_MOUNT, EKEYREJECTED, "token-other-mount",                       \
	  "offload token was issued by another mount")                          \
	X(INVALIDATED, EKEYREVOKED, "token-invalidated",                        \
	  "offload token invalidated: its source changed (its range was "       \
	  "modified, or a member of its chain was removed or replaced)")        \
	X(RANGE, ERANGE, "transfer-offset-range",                               \
	  "transfer offset at or past the end of the token's data")             \
	X(READONLY, EROFS, "destination-read-only",                             \
	  "destination image is read-only")                                     \
	X(NOT_WRITABLE, EBADF, "destination-not-open-for-writing",              \
	  "destination handle is not open for writing")                         \
	X(OVERLAP, EINVAL, "ranges-overlap",                                    \
	  "source and destination ranges overlap in the same file")             \
	X(TOO_MANY, ENFILE, "too-many-tokens",                                  \
	  "too many outstanding offload tokens")                                \
	X(NO_TOKEN_MEMORY, ENOBUFS, "token-memory-cap",                         \
	  "offload token memory cap reached")                                   \
	X(OWNER_TOO_MANY, EMFILE, "too-many-tokens-user",                       \
	  "too many outstanding offload tokens for this user")                  \
	X(OWNER_NO_MEMORY, EDQUOT, "token-memory-cap-user",                     \
	  "this user's offload token memory cap reached")                       \
	X(SOURCE_BAD, EIO, "source-unreadable",                                 \
	  "source range starts in an unreadable (corrupt) extent")              \
	X(BAD_ARGUMENT, EINVAL, "bad-argument",                                 \
	  "bad argument (zero length, unknown flags or wrong struct size)")

enum odx_offload_errc {
	ODX_OFFLOAD_OK = 0,
#define ODX_OFFLOAD_X_ENUM(name, errnum, id, msg) ODX_OFFLOAD_E_##name,
	ODX_OFFLOAD_ERRORS(ODX_OFFLOAD_X_ENUM)
#undef ODX_OFFLOAD_X_ENUM
	ODX_OFFLOAD_E_COUNT
};

struct odx_offload_errinfo {
	enum odx_offload_errc code;
	int errnum;          /* positive errno returned (negated) by the engine */
	const char *name;    /* stable identifier, for logs and scripts */
	const char *message; /* one line for users */
};

/* The table entry of `code`, or NULL for ODX_OFFLOAD_OK or out of range. */
const struct odx_offload_errinfo *odx_offload_errinfo(enum odx_offload_errc code);

/* A message for an errno (positive or negative) returned by the engine or
 * by an offload ioctl: the table's message when the errno is one of the
 * table's (EINVAL gives the overlap message's generic sibling), else
 * strerror's.  Never NULL; the string is static. */
const char *odx_offload_strerror(int errnum);

/* ---- Engine ---------------------------------------------------------- */

#define ODX_OFFLOAD_DEFAULT_TTL_MS 60000u        /* 1 minute */
#define ODX_OFFLOAD_DEFAULT_MAX_TTL_MS 3600000u  /* 1 hour */
#define ODX_OFFLOAD_DEFAULT_MAX_TOKENS 4096u
#define ODX_OFFLOAD_DEFAULT_MAX_TOKEN_BYTES (64u << 20)
#define ODX_OFFLOAD_DEFAULT_MAX_TOKEN_LENGTH (1ull << 30)
#define ODX_OFFLOAD_DEFAULT_MAX_TOKEN_EXTENTS 65536u
#define ODX_OFFLOAD_DEFAULT_BUFFER_SIZE (1u << 20)
/* An owner's caps default to a quarter of the engine's, but to no less
 * than these (or the engine's cap, if smaller). */
#define ODX_OFFLOAD_OWNER_MIN_TOKENS 16u
#define ODX_OFFLOAD_OWNER_MIN_TOKEN_BYTES (1u << 20)

struct odx_offload_config {
	/* Time to live of a token whose offload read asked for 0.  Mount
	 * option token_ttl.  Default ODX_OFFLOAD_DEFAULT_TTL_MS; cut to
	 * max_ttl_ms. */
	uint32_t token_ttl_ms;
	/* Longer times to live asked for are cut to this.  Mount option
	 * max_token_ttl.  Default ODX_OFFLOAD_DEFAULT_MAX_TTL_MS. */
	uint32_t max_ttl_ms;
	/* Outstanding tokens at most; and memory their records may use. */
	uint32_t max_tokens;
	uint64_t max_token_bytes;
	/* The same for the tokens of one owner.  0: a quarter of the above,
	 * at least ODX_OFFLOAD_OWNER_MIN_TOKENS and
	 * ODX_OFFLOAD_OWNER_MIN_TOKEN_BYTES (at most the above). */
	uint32_t max_tokens_per_owner;
	uint64_t max_token_bytes_per_owner;
	/* One token stands for at most this many bytes, and this many extents
	 * (a longer or more fragmented range gives a shorter transfer length). */
	uint64_t max_token_length;
	uint32_t max_token_extents;
	/* Bounded buffer for decoded data and copy_file_range fallbacks. */
	uint32_t buffer_size;
	/* false: never call copy_file_range, copy plain data through the
	 * buffer (for tests and benchmarks). */
	bool use_copy_file_range;
	/* true: do not install the process-wide backend modify hook (tests
	 * with several engines call odx_offload_modify_hook themselves). */
	bool no_modify_hook;
	/* Monotonic clock in milliseconds; NULL: CLOCK_MONOTONIC. */
	uint64_t (*clock_ms)(void *ctx);
	void *clock_ctx;
};

/* Fill *cfg with the defaults above. */
void odx_offload_config_init(struct odx_offload_config *cfg);

/* Create an engine (one per mount).  `cfg` may be NULL for the defaults;
 * zero fields take their defaults.  Draws a random mount id with
 * getrandom(2) and, unless cfg->no_modify_hook, installs
 * odx_offload_modify_hook as the backends' modify hook.  Returns 0 or
 * -ENOMEM / -errno from getrandom. */
int odx_offload_engine_create(const struct odx_offload_config *cfg,
			      struct odx_offload_engine **out);

/* Forget every token (dropping their image references), remove the modify
 * hook if this engine installed it, free the engine.  No other call may be
 * in progress or follow.  NULL is accepted. */
void odx_offload_engine_destroy(struct odx_offload_engine *eng);

/* The random mount id (ODX_TOKEN_MOUNT_ID_SIZE bytes). */
const uint8_t *odx_offload_mount_id(const struct odx_offload_engine *eng);

/* The backends' modify hook (odx_modify_hook signature, ctx = engine):
 * invalidates the tokens of mutable sources whose range meets
 * [off, off + len) of img (len UINT64_MAX or an end past 2^64: to the end).
 * Cheap when no such token exists (one atomic load). */
void odx_offload_modify_hook(void *eng, struct odx_image *img, uint64_t off,
			     uint64_t len);

/* ---- Offload read ------------------------------------------------------ */

/* Output flags, with Windows' values ([MS-FSCC] 2.3.42 and winioctl.h for
 * the first; ntifs.h for the second).  ntifs.h documents FILE_TOO_SMALL as 1,
 * which collides with MS-FSCC's ALL_ZERO_BEYOND_CURRENT_RANGE; odxfs gives it
 * its own bit. */
#define ODX_OFFLOAD_READ_FLAG_ALL_ZERO_BEYOND_CURRENT_RANGE 0x1u
#define ODX_OFFLOAD_READ_FLAG_CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE 0x4u
#define ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL 0x8u

struct odx_offload_read_result {
	uint64_t transfer_length;        /* bytes the token stands for */
	uint32_t flags;                  /* ODX_OFFLOAD_READ_FLAG_* */
	uint8_t token[ODX_TOKEN_SIZE];
};

/* Record [offset, offset + length) of `img` as of now and issue a token for
 * it, alive for ttl_ms (0: the configured default; cut to max_ttl_ms),
 * counted against the caps of `owner` (a uid: the daemon passes the
 * caller's).  `flags` must be 0 (reserved, as Windows' input Flags).
 *
 * out->transfer_length may be less than `length`: clipped at the image size,
 * at max_token_length and max_token_extents, and before an unreadable
 * (corrupt) extent, which also sets CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE.
 * ALL_ZERO_BEYOND_CURRENT_RANGE is set when the range was cut short and
 * everything from its end to the end of the image reads as zeros.  When
 * `offset` is at or past the image size: returns 0 with transfer_length 0,
 * FILE_TOO_SMALL, an all-zero token buffer and no token issued.
 *
 * The token type is ZERO_DATA when the whole transfer range is zero or
 * unmapped (such a token keeps no reference on img), else ODX_TOKEN_TYPE_ODXFS
 * (the engine holds a reference on img while the token lives).
 *
 * Returns 0, or -errno (table above: BAD_ARGUMENT, SOURCE_BAD, TOO_MANY,
 * NO_TOKEN_MEMORY, OWNER_TOO_MANY, OWNER_NO_MEMORY; ENOMEM; or from the
 * backend).  `err` (may be NULL) gets one line. */
int odx_offload_read(struct odx_offload_engine *eng, struct odx_image *img, uint32_t owner,
		     uint64_t offset, uint64_t length, uint32_t ttl_ms, uint32_t flags,
		     struct odx_offload_read_result *out, struct odx_error *err);

/* ---- Offload write ----------------------------------------------------- */

/* Input flags. */
#define ODX_OFFLOAD_WRITE_WRITABLE 0x1u /* the caller's handle on dst is open
					 * for writing (without it: EBADF) */
/* Output flags (STORAGE_OFFLOAD_WRITE_RANGE_TRUNCATED's value). */
#define ODX_OFFLOAD_WRITE_FLAG_RANGE_TRUNCATED 0x1u /* wrote less than asked */

struct odx_offload_write_result {
	uint64_t length_written;
	uint32_t flags; /* ODX_OFFLOAD_WRITE_FLAG_* */
};

/* Write the token's data from transfer_offset on to dst at `offset`, for at
 * most `length` bytes (and at most what the token holds after
 * transfer_offset).  Zero extents become holes in dst (punched at dst's
 * block size; partial blocks at their edges are written as zeros only when
 * dst held data there; dst grows with ftruncate as needed), plain data is
 * copied backing fd to backing fd with copy_file_range (falling back to the
 * buffer on EXDEV, EOPNOTSUPP, EINVAL, ENOSYS), decoded data goes through
 * the bounded buffer.  The modification is reported with
 * odx_image_modified, so tokens on dst's range are invalidated.
 *
 * out->length_written may be less than asked (an I/O error after some
 * bytes were written: the error is dropped and RANGE_TRUNCATED set; the
 * caller continues, and sees it next time).
 *
 * Returns 0, or -errno: the token errors of the table, NOT_WRITABLE (no
 * ODX_OFFLOAD_WRITE_WRITABLE in flags), READONLY (dst lacks ODX_CAP_WRITE),
 * OVERLAP, RANGE, BAD_ARGUMENT (length 0, unknown flags), or from the
 * backing files when nothing was written. */
int odx_offload_write(struct odx_offload_engine *eng, struct odx_image *dst,
		      uint64_t offset, uint64_t length, const uint8_t *token,
		      uint64_t transfer_offset, uint32_t flags,
		      struct odx_offload_write_result *out, struct odx_error *err);

/* Release a token now.  Returns 0, or the token errors (MALFORMED,
 * OTHER_MOUNT, UNKNOWN, EXPIRED, INVALIDATED).  The well-known zero token
 * releases as a no-op.  An offload write in progress with the token
 * finishes normally. */
int odx_offload_release(struct odx_offload_engine *eng, const uint8_t *token);

/* ---- Counters ---------------------------------------------------------- */

struct odx_offload_stats {
	uint64_t tokens_issued;      /* successful offload reads with a token */
	uint64_t tokens_used;        /* successful offload writes */
	uint64_t tokens_expired;     /* dropped because their TTL passed */
	uint64_t tokens_rejected;    /* token errors returned by write/release */
	uint64_t tokens_released;
	uint64_t tokens_invalidated; /* by a modification of their source */
	uint64_t bytes_kernel;       /* copied with copy_file_range */
	uint64_t bytes_buffered;     /* copied through the bounded buffer */
	uint64_t bytes_holes;        /* written as holes (punched or past EOF;
				      * zero frames of a stream destination) */
	uint64_t bytes_verbatim;     /* stream destinations: data of compressed
				      * chunks copied as they were */
	uint64_t tokens_live;        /* now outstanding */
	uint64_t token_bytes;        /* memory their records use now */
	uint64_t token_owners;       /* owners with outstanding tokens now */
};

/* A consistent-enough snapshot (each counter read atomically). */
void odx_offload_get_stats(struct odx_offload_engine *eng, struct odx_offload_stats *st);

/* ---- ioctl glue (the daemon's ioctl handler; structs in ioctl.h) ------- */

struct odx_ioc_offload_read;
struct odx_ioc_offload_write;
struct odx_ioc_release;
struct odx_ioc_stats;

/* Each checks io->size and the reserved fields (-EINVAL), calls the engine
 * function above and fills the output fields of *io (zeroed on failure), so
 * the daemon copies the request in, calls one of these and replies with *io.
 * `owner`: the caller's uid (odx_offload_read).  `handle_writable`: the
 * descriptor the ioctl came on is open for writing. */
int odx_offload_ioc_read(struct odx_offload_engine *eng, struct odx_image *img,
			 uint32_t owner, struct odx_ioc_offload_read *io,
			 struct odx_error *err);
int odx_offload_ioc_write(struct odx_offload_engine *eng, struct odx_image *dst,
			  bool handle_writable, struct odx_ioc_offload_write *io,
			  struct odx_error *err);
int odx_offload_ioc_release(struct odx_offload_engine *eng,
			    const struct odx_ioc_release *io);
int odx_offload_ioc_stats(struct odx_offload_engine *eng, struct odx_ioc_stats *io);

/* ---- The copy loop ----------------------------------------------------- */

/* The two halves of an offloaded copy, as function pointers, so one loop
 * serves the daemon's copy_file_range (engine functions: see
 * odx_offload_copy_ops) and `odxctl copy` (ioctl wrappers: see
 * odx_copy_ioctl_ops).  Each returns 0 or -errno. */
struct odx_copy_ops {
	int (*offload_read)(void *ctx, uint64_t src_off, uint64_t len,
			    struct odx_offload_read_result *out);
	int (*offload_write)(void *ctx, uint64_t dst_off, uint64_t len,
			     const uint8_t *token, uint64_t transfer_offset,
			     struct odx_offload_write_result *out);
	/* May be NULL; its result is ignored (a token that expired or was
	 * invalidated meanwhile needs no release). */
	int (*release)(void *ctx, const uint8_t *token);
	/* May be NULL.  Called after each offload write with the bytes
	 * copied so far and the total asked; non-zero stops the copy
	 * (reported as -ECANCELED). */
	int (*progress)(void *ctx, uint64_t done, uint64_t total);
};

/* Copy [src_off, src_off + len) to dst_off: offload read, offload write(s)
 * of the whole token, release, advance, until len is done, the source ends
 * (transfer length 0) or an offload write makes no progress.
 *
 * Returns the bytes copied (>= 0), or -errno when a failure stopped it
 * before any byte was copied.  *stop (may be NULL) gets 0 when the copy
 * ended because it was done or the source ended, or the -errno that cut a
 * copy short (-EIO when an offload write made no progress). */
int64_t odx_copy_run(const struct odx_copy_ops *ops, void *ctx, uint64_t src_off,
		     uint64_t dst_off, uint64_t len, int *stop);

/* Engine halves: ctx is a struct odx_offload_copy_ctx. */
struct odx_offload_copy_ctx {
	struct odx_offload_engine *eng;
	struct odx_image *src, *dst;
	uint32_t owner;       /* whose caps the tokens count against (uid) */
	uint32_t write_flags; /* ODX_OFFLOAD_WRITE_* (WRITABLE normally) */
	uint32_t ttl_ms;      /* 0: default */
	/* Optional progress callback and its argument. */
	int (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
	struct odx_error *err; /* may be NULL: the first failure's message */
};
extern const struct odx_copy_ops odx_offload_copy_ops;

/* The daemon's copy_file_range in one call: odx_copy_run with the engine
 * halves and flags ODX_OFFLOAD_WRITE_WRITABLE (the kernel checked the open
 * modes), its tokens counted against `owner` (the caller's uid).  Same
 * results as odx_copy_run. */
int64_t odx_offload_copy(struct odx_offload_engine *eng, struct odx_image *src,
			 uint64_t src_off, struct odx_image *dst, uint64_t dst_off,
			 uint32_t owner, uint64_t len, int *stop, struct odx_error *err);

/* ioctl halves (odxctl copy): ctx is a struct odx_copy_ioctl_ctx; the
 * descriptors are open files inside an odxfs mount (ioctl.h). */
struct odx_copy_ioctl_ctx {
	int src_fd, dst_fd;
	uint32_t ttl_ms;
	int (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
};
extern const struct odx_copy_ops odx_copy_ioctl_ops;

#ifdef __cplusplus
}
#endif
#endif
