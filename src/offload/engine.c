/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The offload engine: the token table, time to live, caps, invalidation,
 * and the offload read / offload write / release entry points (offload.h
 * states the semantics).  Applying a token's extents to a destination is
 * apply.c's job.
 *
 * Table: a hash on the token's random key (its first 8 bytes are already
 * uniform) plus one list of every token for sweeps and invalidation.
 * Memory accounting covers each record and its extent array, for the
 * mount and for the record's owner (a uid): a small fixed hash maps each
 * owner with tokens to its counts, updated wherever a record enters or
 * leaves the table (table_insert, table_remove), the entry freed when its
 * last token goes.
 *
 * Locking: eng->lock guards the table, the list, the counts, the
 * tombstones and every token's `refs` and `invalid`.  It is never held while
 * data is copied or while calling into a backend (odx_image_map, _unref,
 * _modified): offload read maps the source before taking it; offload write
 * takes a reference on the token under it and copies after dropping it;
 * tokens whose last reference goes are freed after it is released.
 * Counters are atomics, readable without the lock.
 *
 * A record in the table belongs to the table: once the lock is dropped,
 * any other thread may sweep (expire), release or drop (invalidated) it
 * and free it, so nobody reads a record after unlocking unless it holds
 * a reference.  Offload read encodes the token before inserting the
 * record; release finds and removes it in one hold of the lock; the
 * fields a writer reads without the lock (type, extents, image, range)
 * never change after insertion.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"

/* ---- errors ------------------------------------------------------------ */

static const struct odx_offload_errinfo offload_errors[] = {
#define ODX_OFFLOAD_X_ROW(n, e, id, msg) { ODX_OFFLOAD_E_##n, e, id, msg },
	ODX_OFFLOAD_ERRORS(ODX_OFFLOAD_X_ROW)
#undef ODX_OFFLOAD_X_ROW
};

const struct odx_offload_errinfo *odx_offload_errinfo(enum odx_offload_errc code)
{
	if (code <= ODX_OFFLOAD_OK || code >= ODX_OFFLOAD_E_COUNT)
		return NULL;
	return &offload_errors[code - 1];
}

const char *odx_offload_strerror(int errnum)
{
	if (errnum < 0)
		errnum = -errnum;
	if (errnum == EINVAL)
		return "bad argument, or source and destination ranges overlap in the same file";
	for (size_t i = 0; i < sizeof offload_errors / sizeof offload_errors[0]; i++)
		if (offload_errors[i].errnum == errnum)
			return offload_errors[i].message;
	return strerror(errnum);
}

int engine_error(struct odx_error *err, enum odx_offload_errc code)
{
	const struct odx_offload_errinfo *e = odx_offload_errinfo(code);
	return odx_error_set(err, e->errnum, "%s", e->message);
}

/* ---- engine ------------------------------------------------------------ */

void odx_offload_config_init(struct odx_offload_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->token_ttl_ms = ODX_OFFLOAD_DEFAULT_TTL_MS;
	cfg->max_ttl_ms = ODX_OFFLOAD_DEFAULT_MAX_TTL_MS;
	cfg->max_tokens = ODX_OFFLOAD_DEFAULT_MAX_TOKENS;
	cfg->max_token_bytes = ODX_OFFLOAD_DEFAULT_MAX_TOKEN_BYTES;
	cfg->max_token_length = ODX_OFFLOAD_DEFAULT_MAX_TOKEN_LENGTH;
	cfg->max_token_extents = ODX_OFFLOAD_DEFAULT_MAX_TOKEN_EXTENTS;
	cfg->buffer_size = ODX_OFFLOAD_DEFAULT_BUFFER_SIZE;
	cfg->use_copy_file_range = true;
}

static uint64_t monotonic_ms(void *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t engine_now(const struct odx_offload_engine *eng)
{
	return eng->cfg.clock_ms(eng->cfg.clock_ctx);
}

static int engine_random(uint8_t *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = getrandom(buf + done, len - done, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

/* An owner's default cap: a quarter of the mount's, but not less than
 * `floor` (nor more than the mount's own cap), so that small caps set for
 * tests or tiny machines still let one user have a few tokens. */
static uint64_t owner_share(uint64_t total, uint64_t floor)
{
	uint64_t q = total / 4;
	uint64_t f = floor < total ? floor : total;
	return q > f ? q : f;
}

int odx_offload_engine_create(const struct odx_offload_config *cfg,
			      struct odx_offload_engine **out)
{
	struct odx_offload_config def;
	odx_offload_config_init(&def);
	struct odx_offload_engine *eng = calloc(1, sizeof *eng);
	if (!eng)
		return -ENOMEM;
	eng->cfg = cfg ? *cfg : def;
	struct odx_offload_config *c = &eng->cfg;
	if (!c->token_ttl_ms)
		c->token_ttl_ms = def.token_ttl_ms;
	if (!c->max_ttl_ms)
		c->max_ttl_ms = def.max_ttl_ms;
	if (c->token_ttl_ms > c->max_ttl_ms)
		c->token_ttl_ms = c->max_ttl_ms;
	if (!c->max_tokens)
		c->max_tokens = def.max_tokens;
	if (!c->max_token_bytes)
		c->max_token_bytes = def.max_token_bytes;
	if (!c->max_tokens_per_owner)
		c->max_tokens_per_owner =
			(uint32_t)owner_share(c->max_tokens, ODX_OFFLOAD_OWNER_MIN_TOKENS);
	if (!c->max_token_bytes_per_owner)
		c->max_token_bytes_per_owner =
			owner_share(c->max_token_bytes, ODX_OFFLOAD_OWNER_MIN_TOKEN_BYTES);
	if (!c->max_token_length)
		c->max_token_length = def.max_token_length;
	if (!c->max_token_extents)
		c->max_token_extents = def.max_token_extents;
	if (!c->buffer_size)
		c->buffer_size = def.buffer_size;
	if (!c->clock_ms) {
		c->clock_ms = monotonic_ms;
		c->clock_ctx = NULL;
	}

	eng->nbuckets = 64;
	while (eng->nbuckets < c->max_tokens / 2 && eng->nbuckets < 65536)
		eng->nbuckets *= 2;
	eng->buckets = calloc(eng->nbuckets, sizeof *eng->buckets);
	int r = eng->buckets ? engine_random(eng->mount_id, sizeof eng->mount_id) : -ENOMEM;
	if (r < 0) {
		free(eng->buckets);
		free(eng);
		return r;
	}
	pthread_mutex_init(&eng->lock, NULL);
	eng->earliest_expiry = UINT64_MAX;
	if (!c->no_modify_hook) {
		odx_backend_set_modify_hook(odx_offload_modify_hook, eng);
		eng->hook_installed = true;
	}
	*out = eng;
	return 0;
}

static void token_free(struct offload_token *tok)
{
	if (tok->img)
		odx_image_unref(tok->img);
	free(tok->ext);
	free(tok);
}

/* Free a list (chained through `next`) built under the lock, after it. */
static void token_free_list(struct offload_token *list)
{
	while (list) {
		struct offload_token *next = list->next;
		token_free(list);
		list = next;
	}
}

void odx_offload_engine_destroy(struct odx_offload_engine *eng)
{
	if (!eng)
		return;
	if (eng->hook_installed)
		odx_backend_set_modify_hook(NULL, NULL);
	/* No call is in progress (contract), so every ref is the table's. */
	token_free_list(eng->head);
	for (size_t b = 0; b < OFFLOAD_OWNER_BUCKETS; b++) {
		while (eng->owners[b]) {
			struct offload_owner *o = eng->owners[b];
			eng->owners[b] = o->next;
			free(o);
		}
	}
	free(eng->buckets);
	free(atomic_load(&eng->spare_buf));
	pthread_mutex_destroy(&eng->lock);
	free(eng);
}

const uint8_t *odx_offload_mount_id(const struct odx_offload_engine *eng)
{
	return eng->mount_id;
}

void odx_offload_get_stats(struct odx_offload_engine *eng, struct odx_offload_stats *st)
{
	memset(st, 0, sizeof *st);
	st->tokens_issued = atomic_load(&eng->st.issued);
	st->tokens_used = atomic_load(&eng->st.used);
	st->tokens_expired = atomic_load(&eng->st.expired);
	st->tokens_rejected = atomic_load(&eng->st.rejected);
	st->tokens_released = atomic_load(&eng->st.released);
	st->tokens_invalidated = atomic_load(&eng->st.invalidated);
	st->bytes_kernel = atomic_load(&eng->st.bytes_kernel);
	st->bytes_buffered = atomic_load(&eng->st.bytes_buffered);
	st->bytes_holes = atomic_load(&eng->st.bytes_holes);
	st->bytes_verbatim = atomic_load(&eng->st.bytes_verbatim);
	pthread_mutex_lock(&eng->lock);
	st->tokens_live = eng->ntokens;
	st->token_bytes = eng->mem;
	st->token_owners = eng->nowners;
	pthread_mutex_unlock(&eng->lock);
}

/* ---- the table (all under eng->lock) ----------------------------------- */

static size_t table_bucket(const struct odx_offload_engine *eng, const uint8_t *key)
{
	uint64_t h;
	memcpy(&h, key, sizeof h);
	return (size_t)(h & (eng->nbuckets - 1));
}

/* Whether a[0..n) equals b[0..n), in time that depends on n only: every
 * byte is looked at, whatever the first difference.  For everything that
 * compares a token (or its key) a caller handed in with a secret. */
static bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	volatile uint8_t diff = 0;
	for (size_t i = 0; i < n; i++)
		diff |= (uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

/* The 512 bytes the engine issued for `tok` (the record keeps no copy: the
 * encoding of its fields is the token). */
static void token_bytes_of(const struct odx_offload_engine *eng,
			   const struct offload_token *tok, uint8_t *out)
{
	odx_token_encode(out, tok->type, eng->mount_id, tok->key, tok->length);
}

/* The token with this key, or NULL.  The whole chain is walked and every
 * key compared in constant time, so the time taken says nothing about how
 * many bytes of a guessed key were right. */
static struct offload_token *table_find(struct odx_offload_engine *eng, const uint8_t *key)
{
	struct offload_token *found = NULL;
	for (struct offload_token *t = eng->buckets[table_bucket(eng, key)]; t; t = t->hnext)
		if (ct_equal(t->key, key, ODX_TOKEN_KEY_SIZE))
			found = t;
	return found;
}

/* ---- owners (all under eng->lock) -------------------------------------- */

static struct offload_owner **owner_slot(struct odx_offload_engine *eng, uint32_t uid)
{
	size_t b = (size_t)((uid * 2654435761u) >> 16) & (OFFLOAD_OWNER_BUCKETS - 1);
	struct offload_owner **pp = &eng->owners[b];
	while (*pp && (*pp)->uid != uid)
		pp = &(*pp)->next;
	return pp;
}

/* The entry of uid, or NULL when it has no token in the table. */
static struct offload_owner *owner_find(struct odx_offload_engine *eng, uint32_t uid)
{
	return *owner_slot(eng, uid);
}

/* The entry of uid, created (with no tokens) if needed; NULL: no memory. */
static struct offload_owner *owner_get(struct odx_offload_engine *eng, uint32_t uid)
{
	struct offload_owner **pp = owner_slot(eng, uid);
	if (!*pp) {
		*pp = calloc(1, sizeof **pp);
		if (!*pp)
			return NULL;
		(*pp)->uid = uid;
		eng->nowners++;
	}
	return *pp;
}

/* Count tok against its owner (+1) or take it off (-1); an owner left
 * with no token loses its entry. */
static void owner_account(struct odx_offload_engine *eng, const struct offload_token *tok,
			  int dir)
{
	struct offload_owner **pp = owner_slot(eng, tok->owner);
	struct offload_owner *o = *pp;
	if (!o)
		return; /* cannot be: owner_get made it before the insert */
	if (dir > 0) {
		o->ntokens++;
		o->mem += tok->mem;
		return;
	}
	o->ntokens--;
	o->mem -= tok->mem;
	if (o->ntokens == 0) {
		*pp = o->next;
		free(o);
		eng->nowners--;
	}
}

/* Which cap, if any, refuses a new record of `mem` bytes for `uid` now:
 * the mount's first, then the owner's. */
static enum odx_offload_errc table_cap(struct odx_offload_engine *eng, uint32_t uid,
				       size_t mem)
{
	const struct odx_offload_config *c = &eng->cfg;
	const struct offload_owner *o = owner_find(eng, uid);
	if (eng->ntokens >= c->max_tokens)
		return ODX_OFFLOAD_E_TOO_MANY;
	if (eng->mem + mem > c->max_token_bytes)
		return ODX_OFFLOAD_E_NO_TOKEN_MEMORY;
	if (o && o->ntokens >= c->max_tokens_per_owner)
		return ODX_OFFLOAD_E_OWNER_TOO_MANY;
	if ((o ? o->mem : 0) + mem > c->max_token_bytes_per_owner)
		return ODX_OFFLOAD_E_OWNER_NO_MEMORY;
	return ODX_OFFLOAD_OK;
}

/* ---- the table, continued ---------------------------------------------- */

/* Put tok in the table; its owner's entry exists (owner_get). */
static void table_insert(struct odx_offload_engine *eng, struct offload_token *tok)
{
	size_t b = table_bucket(eng, tok->key);
	tok->hnext = eng->buckets[b];
	eng->buckets[b] = tok;
	tok->prev = NULL;
	tok->next = eng->head;
	if (eng->head)
		eng->head->prev = tok;
	eng->head = tok;
	eng->ntokens++;
	eng->mem += tok->mem;
	owner_account(eng, tok, +1);
	if (tok->mutable_src)
		atomic_fetch_add(&eng->n_mutable, 1);
	if (tok->expires_ms < eng->earliest_expiry)
		eng->earliest_expiry = tok->expires_ms;
}

static void tombstone_add(struct odx_offload_engine *eng, const uint8_t *key,
			  enum odx_offload_errc why)
{
	struct offload_tombstone *t = &eng->tomb[eng->tomb_next++ % OFFLOAD_TOMBSTONES];
	memcpy(t->key, key, ODX_TOKEN_KEY_SIZE);
	t->errc = why;
}

static enum odx_offload_errc tombstone_find(const struct odx_offload_engine *eng,
					    const uint8_t *key)
{
	int errc = ODX_OFFLOAD_E_UNKNOWN;
	for (size_t i = 0; i < OFFLOAD_TOMBSTONES; i++)
		if (ct_equal(eng->tomb[i].key, key, ODX_TOKEN_KEY_SIZE) && eng->tomb[i].errc)
			errc = eng->tomb[i].errc;
	return (enum odx_offload_errc)errc;
}

/* Drop a token's reference; when it was the last, push the token on *dead
 * (to be freed once the lock is released). */
static void token_put_locked(struct offload_token *tok, struct offload_token **dead)
{
	if (--tok->refs == 0) {
		tok->next = *dead;
		*dead = tok;
	}
}

/* Take tok out of the table, remembering why in a tombstone (`why` is
 * EXPIRED or INVALIDATED; ODX_OFFLOAD_OK for a release). */
static void table_remove(struct odx_offload_engine *eng, struct offload_token *tok,
			 enum odx_offload_errc why, struct offload_token **dead)
{
	struct offload_token **pp = &eng->buckets[table_bucket(eng, tok->key)];
	while (*pp != tok)
		pp = &(*pp)->hnext;
	*pp = tok->hnext;
	if (tok->prev)
		tok->prev->next = tok->next;
	else
		eng->head = tok->next;
	if (tok->next)
		tok->next->prev = tok->prev;
	eng->ntokens--;
	eng->mem -= tok->mem;
	owner_account(eng, tok, -1);
	if (tok->mutable_src)
		atomic_fetch_sub(&eng->n_mutable, 1);
	if (why == ODX_OFFLOAD_E_EXPIRED)
		atomic_fetch_add(&eng->st.expired, 1);
	if (why != ODX_OFFLOAD_OK)
		tombstone_add(eng, tok->key, why);
	token_put_locked(tok, dead);
}

/* Drop expired and invalidated tokens; recompute earliest_expiry. */
static void table_sweep(struct odx_offload_engine *eng, uint64_t now,
			struct offload_token **dead)
{
	uint64_t earliest = UINT64_MAX;
	struct offload_token *t = eng->head;
	while (t) {
		struct offload_token *next = t->next;
		if (now >= t->expires_ms)
			table_remove(eng, t, ODX_OFFLOAD_E_EXPIRED, dead);
		else if (t->invalid)
			table_remove(eng, t, ODX_OFFLOAD_E_INVALIDATED, dead);
		else if (t->expires_ms < earliest)
			earliest = t->expires_ms;
		t = next;
	}
	eng->earliest_expiry = earliest;
}

void odx_offload_modify_hook(void *ctx, struct odx_image *img, uint64_t off,
			     uint64_t len)
{
	struct odx_offload_engine *eng = ctx;
	if (!eng || atomic_load(&eng->n_mutable) == 0)
		return;
	uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
	pthread_mutex_lock(&eng->lock);
	/* TODO: index mutable tokens by image if many tokens on raw sources
	 * ever live at once; today a write scans at most max_tokens records,
	 * and only while some exist. */
	for (struct offload_token *t = eng->head; t; t = t->next) {
		if (!t->mutable_src || t->invalid)
			continue;
		if (t->img != img && (t->dev != img->dev || t->ino != img->ino))
			continue;
		if (off < t->src_off + t->length && t->src_off < end) {
			t->invalid = true;
			atomic_fetch_add(&eng->st.invalidated, 1);
		}
	}
	pthread_mutex_unlock(&eng->lock);
}

/* ---- offload read ------------------------------------------------------- */

struct collect {
	struct tok_ext *ext;
	size_t n, cap, max;
	uint64_t start, pos, end; /* logical: token start, covered so far, goal */
	bool hit_bad, capped, any_data;
	int err;
};

#define COLLECT_STOP 1

static int collect_add(struct collect *c, int kind, uint64_t len, uint64_t src, int fd)
{
	uint64_t rel = c->pos - c->start;
	if (c->n) {
		struct tok_ext *last = &c->ext[c->n - 1];
		bool contiguous = last->kind == kind &&
				  (kind == TOK_HOLE ||
				   (last->src + last->length == src &&
				    (kind != TOK_FD || last->fd == fd)));
		if (contiguous) {
			last->length += len;
			c->pos += len;
			return 0;
		}
	}
	if (c->n == c->max) {
		c->capped = true;
		return COLLECT_STOP;
	}
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16;
		struct tok_ext *e = realloc(c->ext, ncap * sizeof *e);
		if (!e) {
			c->err = -ENOMEM;
			return COLLECT_STOP;
		}
		c->ext = e;
		c->cap = ncap;
	}
	c->ext[c->n++] = (struct tok_ext){
		.rel = rel, .length = len, .src = src, .fd = fd, .kind = kind
	};
	c->pos += len;
	return 0;
}

static int collect_seg(void *ctx, const struct odx_seg *seg)
{
	struct collect *c = ctx;
	uint64_t s = seg->offset, e = seg->offset + seg->length;
	if (e > c->end)
		e = c->end;
	if (s > c->pos) { /* a gap in the map reads as zeros */
		uint64_t gap_end = s < c->end ? s : c->end;
		int r = collect_add(c, TOK_HOLE, gap_end - c->pos, 0, -1);
		if (r || c->pos >= c->end)
			return COLLECT_STOP;
	}
	if (e <= c->pos)
		return c->pos >= c->end ? COLLECT_STOP : 0;
	uint64_t skip = c->pos > s ? c->pos - s : 0;
	uint64_t len = e - c->pos;
	int r;
	switch (seg->kind) {
	case ODX_SEG_HOLE:
		r = collect_add(c, TOK_HOLE, len, 0, -1);
		break;
	case ODX_SEG_FD:
		c->any_data = true;
		r = collect_add(c, TOK_FD, len, seg->fd_offset + skip, seg->fd);
		break;
	case ODX_SEG_DECODE:
		c->any_data = true;
		r = collect_add(c, TOK_DECODE, len, c->pos, -1);
		break;
	default:
		c->hit_bad = true;
		return COLLECT_STOP;
	}
	if (r || c->pos >= c->end)
		return COLLECT_STOP;
	return 0;
}

static int zero_beyond_seg(void *ctx, const struct odx_seg *seg)
{
	(void)ctx;
	return seg->kind == ODX_SEG_HOLE ? 0 : COLLECT_STOP;
}

/* Everything in [from, size) reads as zeros. */
static bool read_all_zero_beyond(struct odx_image *img, uint64_t from, uint64_t size)
{
	if (from >= size)
		return false;
	return odx_image_map(img, from, size - from, zero_beyond_seg, NULL) == 0;
}

int odx_offload_read(struct odx_offload_engine *eng, struct odx_image *img, uint32_t owner,
		     uint64_t offset, uint64_t length, uint32_t ttl_ms, uint32_t flags,
		     struct odx_offload_read_result *out, struct odx_error *err)
{
	memset(out, 0, sizeof *out);
	if (flags != 0 || length == 0)
		return engine_error(err, ODX_OFFLOAD_E_BAD_ARGUMENT);
	struct stat st;
	int r = fstat(img->fd, &st) < 0 ? -errno : odx_image_getattr(img, &st);
	if (r < 0)
		return odx_error_set(err, -r, "%s: cannot get the size", img->name);
	uint64_t size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
	if (offset >= size) {
		out->flags = ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL;
		return 0;
	}
	uint64_t want = size - offset;
	if (want > length)
		want = length;
	if (want > eng->cfg.max_token_length)
		want = eng->cfg.max_token_length;

	struct collect c = {
		.max = eng->cfg.max_token_extents,
		.start = offset, .pos = offset, .end = offset + want,
	};
	r = odx_image_map(img, offset, want, collect_seg, &c);
	if (r < 0 || c.err < 0) {
		free(c.ext);
		r = r < 0 ? r : c.err;
		return odx_error_at(err, -r, img->name, offset, "cannot map the source range");
	}
	uint64_t transfer = c.pos - offset;
	if (transfer == 0) {
		free(c.ext);
		if (c.hit_bad)
			return engine_error(err, ODX_OFFLOAD_E_SOURCE_BAD);
		out->flags = ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL;
		return 0;
	}
	if (c.hit_bad)
		out->flags |= ODX_OFFLOAD_READ_FLAG_CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE;
	else if (read_all_zero_beyond(img, c.pos, size))
		out->flags |= ODX_OFFLOAD_READ_FLAG_ALL_ZERO_BEYOND_CURRENT_RANGE;

	struct offload_token *tok = calloc(1, sizeof *tok);
	if (!tok) {
		free(c.ext);
		return -ENOMEM;
	}
	r = engine_random(tok->key, sizeof tok->key);
	if (r < 0) {
		free(c.ext);
		free(tok);
		return odx_error_set(err, -r, "getrandom: %s", strerror(-r));
	}
	tok->src_off = offset;
	tok->length = transfer;
	tok->owner = owner;
	tok->refs = 1;
	tok->dev = img->dev;
	tok->ino = img->ino;
	if (!c.any_data) {
		tok->type = ODX_TOKEN_TYPE_ZERO_DATA;
		free(c.ext);
	} else {
		tok->type = ODX_TOKEN_TYPE_ODXFS;
		tok->ext = c.n < c.cap ? realloc(c.ext, c.n * sizeof *c.ext) : c.ext;
		if (!tok->ext)
			tok->ext = c.ext;
		tok->n_ext = c.n;
		tok->img = odx_image_ref(img);
		tok->mutable_src = !(img->ops->caps & ODX_CAP_IMMUTABLE);
	}
	tok->mem = sizeof *tok + tok->n_ext * sizeof *tok->ext;

	/* The token's bytes, while the record is still ours alone: once it
	 * is in the table another thread may sweep (expire), release or
	 * invalidate it and free it, so nothing below reads *tok after the
	 * lock is dropped. */
	token_bytes_of(eng, tok, out->token);

	uint64_t ttl = ttl_ms ? ttl_ms : eng->cfg.token_ttl_ms;
	if (ttl > eng->cfg.max_ttl_ms)
		ttl = eng->cfg.max_ttl_ms;
	struct offload_token *dead = NULL;
	pthread_mutex_lock(&eng->lock);
	uint64_t now = engine_now(eng);
	tok->expires_ms = now + ttl < now ? UINT64_MAX : now + ttl;
	/* At a cap, expired and invalidated tokens may make room. */
	if (now >= eng->earliest_expiry || table_cap(eng, owner, tok->mem) != ODX_OFFLOAD_OK)
		table_sweep(eng, now, &dead);
	enum odx_offload_errc cap = table_cap(eng, owner, tok->mem);
	bool nomem = cap == ODX_OFFLOAD_OK && !owner_get(eng, owner);
	if (cap == ODX_OFFLOAD_OK && !nomem)
		table_insert(eng, tok);
	pthread_mutex_unlock(&eng->lock);
	token_free_list(dead);
	if (cap != ODX_OFFLOAD_OK || nomem) {
		token_free(tok); /* never in the table: still ours */
		memset(out, 0, sizeof *out);
		return nomem ? odx_error_set(err, ENOMEM, "out of memory") : engine_error(err, cap);
	}
	out->transfer_length = transfer;
	atomic_fetch_add(&eng->st.issued, 1);
	return 0;
}

/* ---- offload write and release ----------------------------------------- */

/* Decode `token` and find its live record, then, in the same hold of the
 * lock (so that of two releases of one token only one succeeds, and a
 * record a sweep frees is never touched after):
 *   release false  take a reference for an offload write: *tokp holds it
 *                  (drop it with token_put); the well-known zero token
 *                  gives *tokp NULL;
 *   release true   take the record out of the table (the well-known zero
 *                  token: nothing to do).
 * A token is accepted only when all its 512 bytes are those issued (a
 * constant-time comparison with the record's encoding): one whose key is
 * known but whose other bytes were edited (the type, the transfer length)
 * is refused as unknown, and leaves the record alone.
 * Returns 0 or a negative errno of the table (err filled). */
static int token_take(struct odx_offload_engine *eng, const uint8_t *token, bool release,
		      struct offload_token **tokp, struct odx_error *err)
{
	struct odx_token_info info;
	enum odx_offload_errc e = ODX_OFFLOAD_OK;
	struct offload_token *dead = NULL;
	uint8_t issued[ODX_TOKEN_SIZE];
	if (tokp)
		*tokp = NULL;
	if (odx_token_decode(token, &info) < 0)
		e = ODX_OFFLOAD_E_MALFORMED;
	else if (info.well_known)
		return 0;
	else if (!ct_equal(info.mount_id, eng->mount_id, sizeof eng->mount_id))
		e = ODX_OFFLOAD_E_OTHER_MOUNT;
	if (e == ODX_OFFLOAD_OK) {
		pthread_mutex_lock(&eng->lock);
		struct offload_token *t = table_find(eng, info.key);
		if (t)
			token_bytes_of(eng, t, issued);
		if (!t) {
			e = tombstone_find(eng, info.key);
		} else if (!ct_equal(issued, token, ODX_TOKEN_SIZE)) {
			e = ODX_OFFLOAD_E_UNKNOWN; /* edited */
		} else if (engine_now(eng) >= t->expires_ms) {
			table_remove(eng, t, ODX_OFFLOAD_E_EXPIRED, &dead);
			e = ODX_OFFLOAD_E_EXPIRED;
		} else if (t->invalid) {
			table_remove(eng, t, ODX_OFFLOAD_E_INVALIDATED, &dead);
			e = ODX_OFFLOAD_E_INVALIDATED;
		} else if (release) {
			table_remove(eng, t, ODX_OFFLOAD_OK, &dead);
			atomic_fetch_add(&eng->st.released, 1);
		} else {
			t->refs++;
			*tokp = t;
		}
		pthread_mutex_unlock(&eng->lock);
		token_free_list(dead);
	}
	if (e != ODX_OFFLOAD_OK) {
		atomic_fetch_add(&eng->st.rejected, 1);
		return engine_error(err, e);
	}
	return 0;
}

static void token_put(struct odx_offload_engine *eng, struct offload_token *tok)
{
	struct offload_token *dead = NULL;
	if (!tok)
		return;
	pthread_mutex_lock(&eng->lock);
	token_put_locked(tok, &dead);
	pthread_mutex_unlock(&eng->lock);
	token_free_list(dead);
}

int odx_offload_write(struct odx_offload_engine *eng, struct odx_image *dst,
		      uint64_t offset, uint64_t length, const uint8_t *token,
		      uint64_t transfer_offset, uint32_t flags,
		      struct odx_offload_write_result *out, struct odx_error *err)
{
	memset(out, 0, sizeof *out);
	if ((flags & ~ODX_OFFLOAD_WRITE_WRITABLE) || length == 0 ||
	    offset > (uint64_t)INT64_MAX || length > (uint64_t)INT64_MAX - offset)
		return engine_error(err, ODX_OFFLOAD_E_BAD_ARGUMENT);
	if (!(flags & ODX_OFFLOAD_WRITE_WRITABLE))
		return engine_error(err, ODX_OFFLOAD_E_NOT_WRITABLE);
	if (!(dst->ops->caps & ODX_CAP_WRITE))
		return engine_error(err, ODX_OFFLOAD_E_READONLY);

	struct offload_token *tok;
	int r = token_take(eng, token, false, &tok, err);
	if (r < 0)
		return r;
	/* A source made of other files (a chain view) goes stale when one of
	 * them is removed, replaced or changed: its token is void then. */
	if (tok && tok->img && odx_image_stale(tok->img)) {
		pthread_mutex_lock(&eng->lock);
		if (!tok->invalid) {
			tok->invalid = true;
			atomic_fetch_add(&eng->st.invalidated, 1);
		}
		pthread_mutex_unlock(&eng->lock);
		token_put(eng, tok);
		atomic_fetch_add(&eng->st.rejected, 1);
		return engine_error(err, ODX_OFFLOAD_E_INVALIDATED);
	}
	/* The well-known zero token stands for zeros of any length, from any
	 * transfer offset. */
	struct offload_token zero = { .type = ODX_TOKEN_TYPE_ZERO_DATA, .length = UINT64_MAX };
	const struct offload_token *use = tok ? tok : &zero;
	uint64_t n = length;
	if (transfer_offset >= use->length) {
		atomic_fetch_add(&eng->st.rejected, 1);
		token_put(eng, tok);
		return engine_error(err, ODX_OFFLOAD_E_RANGE);
	}
	if (n > use->length - transfer_offset)
		n = use->length - transfer_offset;
	if (use->img && use->dev == dst->dev && use->ino == dst->ino) {
		uint64_t s = use->src_off + transfer_offset;
		if (s < offset + n && offset < s + n) {
			token_put(eng, tok);
			return engine_error(err, ODX_OFFLOAD_E_OVERLAP);
		}
	}

	uint64_t written = 0;
	r = apply_token(eng, use, dst, offset, transfer_offset, n, &written, err);
	token_put(eng, tok);
	if (written > 0 && apply_is_direct(dst))
		odx_image_modified(dst, offset, written);
	if (written == 0 && r < 0)
		return odx_error_at(err, -r, dst->name, offset, "offload write: %s",
				    strerror(-r));
	out->length_written = written;
	if (written < length)
		out->flags |= ODX_OFFLOAD_WRITE_FLAG_RANGE_TRUNCATED;
	atomic_fetch_add(&eng->st.used, 1);
	return 0;
}

int odx_offload_release(struct odx_offload_engine *eng, const uint8_t *token)
{
	return token_take(eng, token, true, NULL, NULL);
}
