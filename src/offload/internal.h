/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Declarations shared inside the offload layer, grouped by the file that
 * defines them.  Not installed.
 *
 * A token record (struct offload_token) says what [src_off, src_off +
 * length) of its source image was made of at the offload read, as extents
 * relative to the token's start:
 *   HOLE    reads as zeros
 *   FD      `length` bytes at `src` in descriptor `fd` (owned by the source
 *           image, which the token holds a reference on)
 *   DECODE  `length` bytes at logical offset `src` of the source image, to
 *           be read with odx_image_read (stream images are immutable, so the
 *           logical offset keeps meaning the same bytes)
 * A ZERO_DATA token has no extents and no image.
 */
#ifndef ODXFS_OFFLOAD_INTERNAL_H
#define ODXFS_OFFLOAD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "odxfs/offload.h"
#include "src/backend/backend.h"

/* ---- engine.c -------------------------------------------------------- */

enum tok_ext_kind { TOK_HOLE = 0, TOK_FD = 1, TOK_DECODE = 2 };

struct tok_ext {
	uint64_t rel;    /* offset from the token's start */
	uint64_t length;
	uint64_t src;    /* TOK_FD: offset in fd; TOK_DECODE: logical offset */
	int fd;          /* TOK_FD only */
	int kind;        /* enum tok_ext_kind */
};

struct offload_token {
	uint8_t key[ODX_TOKEN_KEY_SIZE];
	uint32_t type;             /* ODX_TOKEN_TYPE_* */
	struct odx_image *img;     /* NULL for ZERO_DATA tokens */
	dev_t dev;                 /* source identity, for the overlap check */
	ino_t ino;
	uint64_t src_off, length;
	uint64_t expires_ms;
	uint32_t owner;            /* uid its caps are counted against */
	bool mutable_src;          /* invalidated by source modifications */
	bool invalid;              /* its source range changed */
	int refs;                  /* the table's + offload writes in progress;
				    * under eng->lock */
	size_t mem;                /* bytes accounted to max_token_bytes */
	size_t n_ext;
	struct tok_ext *ext;       /* sorted by rel, contiguous from 0 */
	struct offload_token *hnext;       /* hash chain */
	struct offload_token *prev, *next; /* list of all tokens in the table */
};

/* What one owner (uid) has in the table: an entry exists while it has at
 * least one token, in a small hash of its own (owner_buckets). */
struct offload_owner {
	uint32_t uid;
	uint32_t ntokens;
	uint64_t mem;
	struct offload_owner *next; /* hash chain */
};

#define OFFLOAD_OWNER_BUCKETS 256 /* a power of two */

#define OFFLOAD_TOMBSTONES 256

struct offload_tombstone {
	uint8_t key[ODX_TOKEN_KEY_SIZE];
	int errc; /* enum odx_offload_errc: EXPIRED or INVALIDATED; 0: empty */
};

struct offload_counters {
	atomic_uint_fast64_t issued, used, expired, rejected, released, invalidated;
	atomic_uint_fast64_t bytes_kernel, bytes_buffered, bytes_holes, bytes_verbatim;
};

struct odx_offload_engine {
	struct odx_offload_config cfg;
	uint8_t mount_id[ODX_TOKEN_MOUNT_ID_SIZE];
	bool hook_installed;

	pthread_mutex_t lock; /* guards everything down to `tomb_next` */
	struct offload_token **buckets;
	size_t nbuckets;          /* a power of two */
	struct offload_token *head; /* all tokens in the table */
	size_t ntokens;
	uint64_t mem;
	uint64_t earliest_expiry; /* no token expires before this */
	struct offload_owner *owners[OFFLOAD_OWNER_BUCKETS];
	size_t nowners;
	struct offload_tombstone tomb[OFFLOAD_TOMBSTONES];
	unsigned tomb_next;

	/* Tokens on mutable sources in the table: lets the modify hook return
	 * without the lock when there are none. */
	atomic_uint n_mutable;
	/* One spare bounded buffer, reused by the next offload write. */
	_Atomic(uint8_t *) spare_buf;
	struct offload_counters st;
};

uint64_t engine_now(const struct odx_offload_engine *eng);
int engine_error(struct odx_error *err, enum odx_offload_errc code);

/* ---- apply.c --------------------------------------------------------- */

/* Apply [toff, toff + len) of `tok` to dst at dst_off.  *written gets the
 * bytes done (a prefix); returns 0 or the -errno that stopped it.  Does
 * not call odx_image_modified (the caller does, once).  `err` (may be NULL)
 * gets the message of a decoding failure. */
int apply_token(struct odx_offload_engine *eng, const struct offload_token *tok,
		struct odx_image *dst, uint64_t dst_off, uint64_t toff, uint64_t len,
		uint64_t *written, struct odx_error *err);

/* Whether apply_token writes dst->fd directly. */
bool apply_is_direct(const struct odx_image *dst);

#endif
