/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening a stream: read the meta frame, read the trailer of a compressed
 * stream, then walk the frame headers in file order WITHOUT reading
 * payloads (the next header is at a known offset) and build the extent map.
 *
 * Headers are read through a window (one pread serves every header that
 * falls inside it), so back-to-back zero frames and small data frames cost
 * a fraction of a syscall each, and large payloads are skipped over, never
 * read.  The window is 4 KiB where headers are far apart and 64 KiB where
 * the next header lay just past the last window (small frames: a chain of
 * 512-byte incrementals is indexed with 16 times fewer syscalls, and the
 * syscalls were a third of its indexing time).
 *
 * The same walk serves three callers (one parser, one set of rules):
 *   - odx_stream_open: strict by default; ODX_OPEN_ALLOW_TORN accepts a
 *     stream cut short, ODX_OPEN_SALVAGE keeps what precedes a bad
 *     header and turns the ranges the rest might have covered into BAD;
 *   - odx_stream_check: every problem reported, walking on where possible;
 *   - odx_stream_repair: the complete frames and their trailer entries.
 */
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream-internal.h"

#define WIN_SMALL 4096
#define WIN_BIG 65536

struct wreader {
	int fd;
	uint64_t size;
	uint64_t base;
	size_t len;
	char buf[WIN_BIG];
};

/* Pointer to n (<= 64) bytes at pos, or NULL when fewer are left in the
 * file (*avail says how many) or on an I/O error (*ioerr). */
static const char *wr_at(struct wreader *r, uint64_t pos, size_t n, size_t *avail, int *ioerr)
{
	*ioerr = 0;
	if (!(pos >= r->base && pos + n <= r->base + r->len)) {
		/* dense: pos is in or just past the last window */
		bool dense = r->len && pos >= r->base && pos - r->base < r->len + WIN_SMALL;
		ssize_t got = io_pread_full(r->fd, r->buf, dense ? WIN_BIG : WIN_SMALL, pos);
		if (got < 0) {
			*ioerr = (int)-got;
			r->len = 0;
			return NULL;
		}
		r->base = pos;
		r->len = (size_t)got;
	}
	size_t have = r->base + r->len - pos;
	*avail = have < n ? have : n;
	return have >= n ? r->buf + (pos - r->base) : NULL;
}

/* How bad a problem is, which decides what each caller does with it
 * (odxfs-stream(5), "Damage"):
 *   WARN     the frames are intact, something around them is off (the
 *            CRLF after the meta JSON): salvage walks past it;
 *   FIXABLE  WARN, and repair rewrites what is wrong (dataSize, the stop
 *            frame, the trailer's length or place, bytes after stop);
 *   TRAILER  the trailer cannot be used: chunk ends are measured as in a
 *            torn stream (salvage, repair);
 *   FRAME    one frame cannot be trusted: in salvage the range it covers
 *            inside the image becomes BAD, and the walk goes on after it;
 *   TORN     the stream ends early (not damage: served up to its last
 *            complete frame when ALLOW_TORN);
 *   CORRUPT  the next frame cannot be found: the walk stops, and in
 *            salvage every range no earlier frame covers becomes BAD.
 * A strict open accepts nothing but TORN. */
enum sev { WARN, FIXABLE, TRAILER, FRAME, TORN, CORRUPT };

/* Below this, measuring a torn compressed tail stops (odxfs-stream(5),
 * Limits): zlib must be inflated to find a chunk's end, and a few MB of
 * deflated zeros inflate to gigabytes. */
#define MEASURE_BUDGET_BASE ((uint64_t)64 << 20)
#define MEASURE_BUDGET_RATIO 16
/* The smallest chunk split accepted besides 32 MiB (an LZ4 block). */
#define MIN_SPLIT ((uint64_t)64 << 10)

struct walk {
	struct odx_stream *s;
	struct walk_opts *w;
	struct odx_error *err;
	struct trailer_rd *tr;  /* NULL: no usable trailer, chunks are measured */
	bool had_trailer;       /* a trailer was found at open */
	uint64_t frames_limit;  /* with a trailer: where its stop frame must be */
	uint32_t *cs;           /* chunk sizes of the frame being walked */
	size_t cs_cap;
	uint64_t measured_in, measured_out; /* torn tail measuring, bytes */
	uint64_t last_end;      /* end of the frames so far, and whether each */
	bool unordered;         /* started before it (overlapping frames) */
	bool lost;              /* the walk went on past bytes it could not
				 * confirm were one frame: frames may be lost */
};

/* Keep track of the frames' order (see stream_index: what a bad header
 * makes unreadable depends on it). */
static void note_order(struct walk *wk, const struct frame_hdr *h)
{
	uint64_t end = h->start + h->length < h->start ? UINT64_MAX : h->start + h->length;
	if (h->start < wk->last_end)
		wk->unordered = true;
	if (end > wk->last_end)
		wk->last_end = end;
}

/* Report a problem at file offset off.  Returns 0 to walk on, 1 to stop
 * walking (the problem is accepted: recorded in info), or a negative errno
 * to fail the open. */
__attribute__((format(printf, 5, 6))) static int problem(struct walk *wk, enum sev sev, int code,
							 uint64_t off, const char *fmt, ...)
{
	char msg[ODX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct odx_stream_info *in = &wk->s->info;
	unsigned fl = wk->w->flags;
	bool stop = sev == TORN || sev == CORRUPT;
	if (wk->w->problem) {
		wk->w->problem(wk->w->ctx, off, msg);
		wk->w->nproblems++;
	} else {
		bool accept = sev == TORN ? (fl & ODX_OPEN_ALLOW_TORN) != 0
					  : (fl & ODX_OPEN_SALVAGE) ||
						    ((fl & WALK_REPAIR) && (sev == FIXABLE || sev == TRAILER));
		if (!accept) {
			if (sev == TORN)
				return odx_error_at(wk->err, code, wk->s->name, off,
						    "%s (the stream was cut short; `odxctl repair` keeps its complete frames)",
						    msg);
			return odx_error_at(wk->err, code, wk->s->name, off, "%s", msg);
		}
		if (!in->problem[0])
			snprintf(in->problem, sizeof in->problem, "%.200s: offset %" PRIu64 ": %.280s",
				 wk->s->name, off, msg);
		if (!stop)
			in->warnings++;
	}
	if (sev == TORN) {
		in->torn = true;
		in->torn_at = off;
	} else if (sev == CORRUPT) {
		in->corrupt = true;
		in->corrupt_at = off;
	}
	return stop ? 1 : 0;
}

static int push_chunk(struct odx_stream *s, uint64_t file_off, uint64_t csize, uint64_t ulen)
{
	if (s->nchunks == s->chunks_cap) {
		size_t cap = s->chunks_cap ? s->chunks_cap * 2 : 64;
		struct chunk *c = realloc(s->chunks, cap * sizeof *c);
		if (!c)
			return -ENOMEM;
		s->chunks = c;
		s->chunks_cap = cap;
	}
	s->chunks[s->nchunks++] = (struct chunk){file_off, (uint32_t)csize, (uint32_t)ulen};
	return 0;
}

/* The decoded size of each chunk of a compressed data frame of `length`
 * bytes whose payload at `payload` holds n chunks.  The backup tool splits
 * at its NBD maximum request size (32 MiB); if the chunk count does not fit
 * that, the LZ4 frame header's content size of the first chunk gives the
 * split size (only the header is read: the chunk itself is checked when it
 * is decoded).  No chunk may decode to more than 32 MiB. */
static int chunk_split(struct odx_stream *s, uint64_t length, uint64_t payload, uint32_t n,
		       uint64_t *split)
{
	if (n == 1) {
		*split = length;
		return length <= ODX_CHUNK_SIZE ? 0 : -1;
	}
	uint64_t m = ODX_CHUNK_SIZE;
	if ((n - 1) * m < length && length <= n * m) {
		*split = m;
		return 0;
	}
	uint64_t ulen;
	if (s->info.codec == ODX_CODEC_LZ4 && codec_content_size(ODX_CODEC_LZ4, s->fd, payload, &ulen) == 0 &&
	    ulen >= MIN_SPLIT && ulen <= ODX_CHUNK_SIZE && (n - 1) * ulen < length &&
	    length <= n * ulen) {
		*split = ulen;
		return 0;
	}
	return -1;
}

static int add_extent(struct walk *wk, const struct odx_extent *e)
{
	int rc = odx_extmap_add(&wk->s->map, e);
	return rc ? odx_error_set(wk->err, -rc, "%s: out of memory building the extent map",
				  wk->s->name)
		  : 0;
}

/* A frame that cannot be trusted (salvage): what it covers inside the
 * image reads with EIO, unless a later frame covers it again. */
static int add_bad(struct walk *wk, uint64_t start, uint64_t length)
{
	uint64_t vs = wk->s->info.virtual_size;
	if (start >= vs || length == 0)
		return 0;
	uint64_t n = length < vs - start ? length : vs - start;
	struct odx_extent e = {.offset = start, .length = n, .frame = ODX_NO_FRAME,
			       .kind = ODX_EXTENT_BAD};
	return add_extent(wk, &e);
}

/* The chunk sizes of the data frame at pos from its trailer entry, into
 * wk->cs.  Returns 0 (sizes in wk->cs, *n, *plen, *dict; *bad when the
 * frame is not to be trusted), 2 when the frame is to be measured (its
 * entry is wrong, or the trailer was given up), or what problem() says. */
static int frame_chunks_trailer(struct walk *wk, uint64_t pos, const struct frame_hdr *h,
				uint32_t *n, uint64_t *plen, bool *dict, bool *bad)
{
	struct odx_stream_info *in = &wk->s->info;
	uint64_t max = h->length ? (h->length + MIN_SPLIT - 1) / MIN_SPLIT : 1;
	struct odx_error terr;
	odx_error_clear(&terr);
	bool fits;
	int rc = trailer_next(wk->tr, &wk->cs, &wk->cs_cap, max > UINT32_MAX ? UINT32_MAX : (uint32_t)max,
			      n, dict, plen, &fits, &terr);
	if (rc == 1 && !fits) {
		/* The entry and the frame disagree.  When CRLF follows the
		 * payload size the entry gives, the entry is taken to be right
		 * and the frame (its header) wrong: the frame is bad and the
		 * walk goes on after it.  Otherwise this frame's chunks are
		 * found by walking them, as in a torn stream; the trailer
		 * still serves the next frames. */
		char crlf[2];
		uint64_t end = pos + ODX_FRAME_HEADER_LEN + *plen;
		bool skip = *plen && *plen < in->file_size && end <= in->file_size - 2 &&
			    io_pread_full(wk->s->fd, crlf, 2, end) == 2 && crlf[0] == '\r' &&
			    crlf[1] == '\n';
		if ((rc = problem(wk, skip ? FRAME : TRAILER, EUCLEAN, pos,
				  "the trailer entry of data frame %" PRIu64 " does not fit it (%u chunks, "
				  "each of 1 byte to 33 MiB, adding up to its key)",
				  in->data_frames, *n)))
			return rc;
		*bad = skip;
		wk->lost |= skip;
		return skip ? 0 : 2;
	}
	if (rc == 1)
		return 0;
	if (rc == -ENOMEM)
		return odx_error_set(wk->err, ENOMEM, "out of memory");
	if (rc == 0)
		rc = problem(wk, TRAILER, EUCLEAN, pos,
			     "data frame %" PRIu64 " has no trailer entry (the trailer lists %zu)",
			     in->data_frames, wk->tr->entries);
	else
		rc = problem(wk, TRAILER, terr.code, terr.offset, "%s", stream_error_reason(&terr));
	if (rc)
		return rc;
	wk->tr = NULL; /* measure this frame and the rest */
	return 2;
}

/* The chunk sizes of the data frame at pos, measured (no trailer). */
static int frame_chunks_measure(struct walk *wk, uint64_t pos, const struct frame_hdr *h,
				uint32_t *n, uint64_t *plen, bool *bad)
{
	struct odx_stream *s = wk->s;
	struct odx_stream_info *in = &s->info;
	uint64_t payload = pos + ODX_FRAME_HEADER_LEN;
	uint64_t want = h->length ? (h->length + ODX_CHUNK_SIZE - 1) / ODX_CHUNK_SIZE : 1;
	uint64_t left = h->length;
	*n = 0;
	*plen = 0;
	for (uint64_t p = payload; *n < want; (*n)++) {
		uint64_t u = left < ODX_CHUNK_SIZE ? left : ODX_CHUNK_SIZE;
		if (wk->measured_out > MEASURE_BUDGET_BASE + MEASURE_BUDGET_RATIO * wk->measured_in)
			return problem(wk, TORN, ENODATA, pos,
				       "measuring the compressed chunks of a stream without trailer stopped here: "
				       "they decode to more than %d times their size plus 64 MiB",
				       MEASURE_BUDGET_RATIO);
		uint64_t clen, ulen;
		int rc = codec_measure(in->codec, s->fd, p,
				       wk->had_trailer ? wk->frames_limit : in->file_size,
				       ODX_CHUNK_SIZE, &clen, &ulen);
		if (rc == -ENODATA)
			return problem(wk, wk->had_trailer ? CORRUPT : TORN, ENODATA, pos,
				       "truncated payload: data frame's compressed chunk %u at offset %" PRIu64
				       " is cut off by the end of the file",
				       *n, p);
		if (rc == -ENOMEM)
			return odx_error_set(wk->err, ENOMEM, "out of memory");
		if (rc < 0 && rc != -EUCLEAN)
			return odx_error_at(wk->err, -rc, s->name, p, "read failed: %s", strerror(-rc));
		if (rc || clen > ODX_CHUNK_CSIZE_MAX)
			return problem(wk, CORRUPT, EUCLEAN, p,
				       "expected a %s compressed chunk of at most 32 MiB (data frame at offset %" PRIu64
				       "), found something else",
				       odx_codec_name(in->codec), pos);
		wk->measured_in += clen;
		if (in->codec == ODX_CODEC_ZLIB)
			wk->measured_out += ulen;
		/* LZ4 without a content size is checked when decoded. */
		if ((ulen || in->codec == ODX_CODEC_ZLIB) && ulen != u && !*bad) {
			rc = problem(wk, FRAME, EUCLEAN, p,
				     "compressed chunk %u of the data frame at offset %" PRIu64
				     " decodes to %" PRIu64 " bytes, expected %" PRIu64,
				     *n, pos, ulen, u);
			if (rc)
				return rc;
			*bad = true;
		}
		if (chunk_sizes_room(&wk->cs, &wk->cs_cap, *n))
			return odx_error_set(wk->err, ENOMEM, "out of memory");
		wk->cs[*n] = (uint32_t)clen;
		*plen += clen;
		p += clen;
		left -= u;
	}
	return 0;
}

/* One data frame at pos with header h; sets *next to the following header. */
static int walk_data(struct walk *wk, struct wreader *r, uint64_t pos, const struct frame_hdr *h,
		     uint64_t *next)
{
	struct odx_stream *s = wk->s;
	struct odx_stream_info *in = &s->info;
	uint64_t payload = pos + ODX_FRAME_HEADER_LEN, plen = 0;
	uint32_t n = 0;
	bool dict = false, bad = false;
	bool from_entry = false;   /* the payload size is the trailer entry's */
	bool fits_checked = false; /* ... and the entry was found not to fit */
	int rc;

	if (in->codec == ODX_CODEC_NONE) {
		plen = h->length;
	} else {
		rc = wk->tr ? frame_chunks_trailer(wk, pos, h, &n, &plen, &dict, &bad) : 2;
		from_entry = rc == 0;
		fits_checked = rc == 0 && bad;
		if (rc == 2) {
			rc = frame_chunks_measure(wk, pos, h, &n, &plen, &bad);
			dict = h->length >= ODX_CHUNK_SIZE;
		}
		if (rc)
			return rc;
	}
	uint64_t end;
	if (__builtin_add_overflow(payload, plen, &end) || end > INT64_MAX)
		return problem(wk, CORRUPT, EOVERFLOW, pos,
			       "data frame payload length %" PRIu64 " overflows the file offset", plen);
	if (wk->had_trailer && end + 2 > wk->frames_limit)
		/* a stream with its trailer is not cut short: its frames end
		 * before the stop frame and trailer at the end of the file */
		return problem(wk, CORRUPT, EUCLEAN, pos,
			       "data frame payload of %" PRIu64
			       " bytes and CRLF run into the stop frame and trailer at offset %" PRIu64,
			       plen, wk->frames_limit);
	if (end + 2 > in->file_size)
		return problem(wk, TORN, ENODATA, pos,
			       "truncated payload: data frame needs %" PRIu64
			       " payload bytes and CRLF, the file has %" PRIu64 " left",
			       plen, in->file_size - payload);
	size_t avail;
	int ioerr;
	const char *crlf = wr_at(r, end, 2, &avail, &ioerr);
	if (ioerr)
		return odx_error_at(wk->err, ioerr, s->name, end, "read failed: %s", strerror(ioerr));
	if (!crlf || crlf[0] != '\r' || crlf[1] != '\n') {
		if ((rc = problem(wk, FRAME, EUCLEAN, end,
				  "expected CRLF after the payload of the data frame at offset %" PRIu64
				  " (its length may be wrong)",
				  pos)))
			return rc;
		bad = true;
		wk->lost = true;
	}
	*next = end + 2;
	uint64_t lend;
	if (__builtin_add_overflow(h->start, h->length, &lend))
		return problem(wk, CORRUPT, EOVERFLOW, pos,
			       "data frame start %" PRIu64 " + length %" PRIu64 " overflows 64 bits",
			       h->start, h->length);
	if (__builtin_add_overflow(in->data_bytes, h->length, &in->data_bytes))
		return problem(wk, CORRUPT, EOVERFLOW, pos,
			       "the data frames' lengths add up to more than 2^64 bytes");
	in->data_frames++;
	in->payload_bytes += plen;
	if (in->codec != ODX_CODEC_NONE && (wk->w->flags & WALK_REPAIR) && !bad &&
	    (rc = trailer_push(&s->kept, wk->cs, n, dict)))
		return odx_error_set(wk->err, -rc, "%s: out of memory", s->name);
	if (lend > in->virtual_size) {
		if ((rc = problem(wk, FRAME, EUCLEAN, pos,
				  "data frame [%" PRIu64 ", %" PRIu64 ") lies beyond virtualSize %" PRIu64,
				  h->start, lend, in->virtual_size)))
			return rc;
		bad = true;
	}
	if (h->length == 0)
		return 0;

	/* Checked even for a frame already bad: when its trailer entry does
	 * not fit it, the walk went on by the entry's size, not the header's,
	 * and frames may be hidden in what it skipped (wk->lost). */
	uint64_t split = 0;
	if (in->codec != ODX_CODEC_NONE && !(fits_checked && bad) &&
	    chunk_split(s, h->length, payload, n, &split)) {
		if (!bad && (rc = problem(wk, FRAME, EUCLEAN, pos,
					  "data frame of %" PRIu64 " bytes cannot be split into the %u chunks of at most 32 MiB its trailer entry lists",
					  h->length, n)))
			return rc;
		bad = true;
		wk->lost |= from_entry;
	}
	if (bad)
		return add_bad(wk, h->start, h->length);
	struct odx_extent e = {.offset = h->start, .length = h->length, .src = payload,
			       .frame = ODX_NO_FRAME, .kind = ODX_EXTENT_DATA};
	if (in->codec != ODX_CODEC_NONE) {
		if (s->nchunks + n >= ODX_NO_FRAME)
			return problem(wk, CORRUPT, EOVERFLOW, pos, "too many compressed chunks");
		/* The extent names the frame by its first chunk and its
		 * logical start (src), which slicing keeps. */
		e.src = h->start;
		e.frame = (uint32_t)s->nchunks;
		uint64_t coff = payload, left = h->length;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t u = left < split ? left : split;
			if ((rc = push_chunk(s, coff, wk->cs[i], u)))
				return odx_error_set(wk->err, -rc, "%s: out of memory", s->name);
			coff += wk->cs[i];
			left -= u;
		}
		in->chunks += n;
	}
	return add_extent(wk, &e);
}

/* What follows the stop frame at pos - 40: the trailer of a compressed
 * stream, else nothing; and the meta dataSize against the frames. */
static int walk_tail(struct walk *wk, uint64_t pos)
{
	struct odx_stream *s = wk->s;
	struct odx_stream_info *in = &s->info;
	int rc;
	if (in->codec != ODX_CODEC_NONE && wk->tr) {
		struct odx_error terr;
		odx_error_clear(&terr);
		if (trailer_finish(wk->tr, &terr) &&
		    (rc = problem(wk, FIXABLE, EUCLEAN, terr.offset, "%s",
				  stream_error_reason(&terr))) < 0)
			return rc;
		if (wk->tr->json_offset != pos &&
		    (rc = problem(wk, FIXABLE, EUCLEAN, pos,
				  "expected the trailer right after the stop frame, it starts at offset %" PRIu64,
				  wk->tr->json_offset)) < 0)
			return rc;
	} else if (in->codec != ODX_CODEC_NONE && !wk->had_trailer) {
		if ((rc = problem(wk, TORN, ENODATA, in->file_size,
				  "compressed stream has no trailer after its stop frame")) < 0)
			return rc;
	} else if (in->codec == ODX_CODEC_NONE && pos != in->file_size) {
		if ((rc = problem(wk, FIXABLE, EUCLEAN, pos,
				  "%" PRIu64 " unexpected bytes after the stop frame",
				  in->file_size - pos)) < 0)
			return rc;
	}
	if (s->meta.bad_data_size) {
		if ((rc = problem(wk, FIXABLE, EUCLEAN, ODX_FRAME_HEADER_LEN,
				  "meta dataSize is not an integer below 2^64")) < 0)
			return rc;
	} else if (s->meta.has_data_size && s->meta.data_size != in->data_bytes) {
		if ((rc = problem(wk, FIXABLE, EUCLEAN, ODX_FRAME_HEADER_LEN,
				  "meta dataSize is %" PRIu64 " but the data frames hold %" PRIu64 " bytes",
				  s->meta.data_size, in->data_bytes)) < 0)
			return rc;
	} else if (!s->meta.has_data_size) {
		if ((rc = problem(wk, FIXABLE, EUCLEAN, ODX_FRAME_HEADER_LEN,
				  "meta JSON has no dataSize")) < 0)
			return rc;
	}
	return 0;
}

static int walk_frames(struct walk *wk)
{
	struct odx_stream *s = wk->s;
	struct odx_stream_info *in = &s->info;
	struct wreader *r = malloc(sizeof *r);
	if (!r)
		return odx_error_set(wk->err, ENOMEM, "out of memory");
	r->fd = s->fd;
	r->size = in->file_size;
	r->base = r->len = 0;
	uint64_t pos = s->frames_start;
	int rc = 0;
	char why[300];
	for (;;) {
		size_t avail;
		int ioerr;
		s->frames_end = pos;
		const char *b = wr_at(r, pos, ODX_FRAME_HEADER_LEN, &avail, &ioerr);
		if (ioerr) {
			rc = odx_error_at(wk->err, ioerr, s->name, pos, "read failed: %s",
					  strerror(ioerr));
			break;
		}
		if (!b) {
			if (avail == 0)
				rc = problem(wk, TORN, ENODATA, pos,
					     "missing stop frame: the file ends after the last complete frame");
			else
				rc = problem(wk, TORN, ENODATA, pos,
					     "truncated frame header: the file ends %zu bytes into it",
					     avail);
			break;
		}
		struct frame_hdr h;
		if (frame_parse(b, &h, why, sizeof why)) {
			rc = problem(wk, CORRUPT, EUCLEAN, pos, "%s", why);
			break;
		}
		if ((h.kind == FRAME_DATA || h.kind == FRAME_ZERO) &&
		    h.start + h.length >= h.start && h.start + h.length <= in->virtual_size)
			note_order(wk, &h); /* (a frame out of bounds is damage itself) */
		if (h.kind == FRAME_DATA) {
			uint64_t next = 0;
			rc = walk_data(wk, r, pos, &h, &next);
			if (rc)
				break;
			pos = next;
			continue;
		}
		if (h.kind == FRAME_ZERO) {
			uint64_t lend;
			if (__builtin_add_overflow(h.start, h.length, &lend) ||
			    __builtin_add_overflow(in->zero_bytes, h.length, &in->zero_bytes)) {
				rc = problem(wk, CORRUPT, EOVERFLOW, pos,
					     "zero frame start + length, or the sum of lengths, overflows 64 bits");
				break;
			}
			in->zero_frames++;
			struct odx_extent e = {.offset = h.start, .length = h.length,
					       .frame = ODX_NO_FRAME, .kind = ODX_EXTENT_ZERO};
			if (lend > in->virtual_size) {
				rc = problem(wk, FRAME, EUCLEAN, pos,
					     "zero frame [%" PRIu64 ", %" PRIu64
					     ") lies beyond virtualSize %" PRIu64,
					     h.start, lend, in->virtual_size);
				if (!rc)
					rc = add_bad(wk, h.start, h.length);
			} else {
				rc = add_extent(wk, &e);
			}
			if (rc)
				break;
			pos += ODX_FRAME_HEADER_LEN;
			continue;
		}
		if (h.kind == FRAME_STOP) {
			if ((h.start || h.length) &&
			    (rc = problem(wk, FIXABLE, EUCLEAN, pos,
					  "expected \"stop 0 0\", found a stop frame with start %" PRIu64
					  " and length %" PRIu64,
					  h.start, h.length)))
				break;
			in->complete = true;
			in->stop_offset = pos;
			s->frames_end = pos;
			pos += ODX_FRAME_HEADER_LEN;
			break;
		}
		rc = problem(wk, CORRUPT, EUCLEAN, pos, "unexpected %s frame before the stop frame",
			     frame_kind_name(h.kind));
		break;
	}
	free(r);
	if (rc < 0)
		return rc;
	return in->complete ? walk_tail(wk, pos) : 0;
}

int meta_load(int fd, uint64_t fsz, const char *name, bool keep_json, struct meta *m,
	      char **text_out, uint64_t *json_len, bool *crlf_ok, struct odx_error *err)
{
	char hb[ODX_FRAME_HEADER_LEN], why[300];
	if (fsz == 0)
		return odx_error_at(err, EUCLEAN, name, 0,
				    "empty file: not a stream (expected a meta frame header)");
	ssize_t n = io_pread_full(fd, hb, sizeof hb, 0);
	if (n < 0)
		return odx_error_at(err, (int)-n, name, 0, "read failed: %s", strerror((int)-n));
	if (n < (ssize_t)sizeof hb) {
		if (n >= 4 && memcmp(hb, "meta", 4) == 0)
			return odx_error_at(err, ENODATA, name, 0,
					    "truncated meta frame header: the file has only %zd bytes",
					    n);
		return odx_error_at(err, EUCLEAN, name, 0,
				    "not a stream: %zd bytes, too short for a meta frame header", n);
	}
	struct frame_hdr h;
	if (frame_parse(hb, &h, why, sizeof why) || h.kind != FRAME_META) {
		if (memcmp(hb, "meta", 4) == 0)
			return odx_error_at(err, EUCLEAN, name, 0, "%s", why);
		return odx_error_at(err, EUCLEAN, name, 0,
				    "not a stream: expected a meta frame header at the start of the file");
	}
	if (h.length == 0)
		return odx_error_at(err, EUCLEAN, name, 22, "missing meta JSON: the meta frame is empty");
	if (h.length > ODX_META_MAX)
		return odx_error_at(err, EUCLEAN, name, 22,
				    "meta frame length %" PRIu64 " exceeds the %u byte limit",
				    h.length, ODX_META_MAX);
	if (ODX_FRAME_HEADER_LEN + h.length > fsz)
		return odx_error_at(err, ENODATA, name, ODX_FRAME_HEADER_LEN,
				    "truncated meta JSON: %" PRIu64 " bytes announced, %" PRIu64 " present",
				    h.length, fsz - ODX_FRAME_HEADER_LEN);
	char *text = malloc(h.length + 3);
	if (!text)
		return odx_error_set(err, ENOMEM, "out of memory");
	n = io_pread_full(fd, text, h.length + 2, ODX_FRAME_HEADER_LEN);
	if (n < (ssize_t)h.length) {
		free(text);
		return odx_error_at(err, EIO, name, ODX_FRAME_HEADER_LEN, "short read of meta JSON");
	}
	int rc = meta_parse(text, h.length, name, ODX_FRAME_HEADER_LEN, keep_json, m, err);
	*crlf_ok = n == (ssize_t)h.length + 2 && text[h.length] == '\r' &&
		   text[h.length + 1] == '\n';
	text[h.length] = '\0';
	*json_len = h.length;
	if (rc == 0 && text_out)
		*text_out = text;
	else
		free(text);
	return rc;
}

static int read_meta(struct walk *wk)
{
	struct odx_stream *s = wk->s;
	uint64_t len;
	bool crlf_ok;
	char *text = NULL;
	int rc = meta_load(s->fd, s->info.file_size, s->name, (wk->w->flags & WALK_REPAIR) != 0,
			   &s->meta, (wk->w->flags & ODX_OPEN_META_TEXT) ? &text : NULL, &len,
			   &crlf_ok, wk->err);
	if (rc)
		return rc;
	s->meta_text = text;
	s->frames_start = ODX_FRAME_HEADER_LEN + len + 2;
	struct odx_stream_info *in = &s->info;
	in->virtual_size = s->meta.virtual_size;
	in->meta_data_size = s->meta.data_size;
	in->stream_version = s->meta.version;
	in->codec = s->meta.codec;
	in->level = s->meta.level;
	in->incremental = s->meta.incremental;
	if (!crlf_ok) {
		rc = problem(wk, WARN, EUCLEAN, ODX_FRAME_HEADER_LEN + len,
			     "expected CRLF after the meta JSON");
		if (rc)
			return rc < 0 ? rc : 0;
	}
	return 0;
}

const char *stream_error_reason(const struct odx_error *e)
{
	const char *p = strstr(e->msg, ": offset ");
	const char *q = p ? strstr(p + 9, ": ") : NULL;
	return q ? q + 2 : e->msg;
}

int stream_index(struct odx_stream *s, struct walk_opts *w, struct odx_error *err)
{
	struct walk wk = {.s = s, .w = w, .err = err};
	struct stat st;
	if (fstat(s->fd, &st) < 0)
		return odx_error_at(err, errno, s->name, 0, "cannot stat: %s", strerror(errno));
	s->info.file_size = (uint64_t)st.st_size;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->mtime = st.st_mtim;
	s->flags = w->flags;
	int rc = read_meta(&wk);
	if (rc)
		return rc;
	struct trailer_rd *tr = NULL;
	if (s->info.codec != ODX_CODEC_NONE) {
		struct odx_error terr;
		odx_error_clear(&terr);
		if (!(tr = malloc(sizeof *tr)))
			return odx_error_set(err, ENOMEM, "out of memory");
		rc = trailer_open(tr, s->fd, s->info.file_size, s->name, &terr);
		if (rc == 0) {
			wk.tr = tr;
			wk.had_trailer = true;
			wk.frames_limit = tr->json_offset >= ODX_FRAME_HEADER_LEN
						  ? tr->json_offset - ODX_FRAME_HEADER_LEN
						  : 0;
		} else if (rc == -ENODATA) {
			/* No trailer: a torn stream, or worse; the walk finds out
			 * (measuring each chunk) and says which. */
		} else if (rc != -ENODATA) {
			if (terr.code != EUCLEAN) { /* could not be read */
				free(tr);
				return odx_error_set(err, terr.code, "%s", terr.msg);
			}
			wk.had_trailer = true; /* there, but unusable */
			wk.frames_limit = s->info.file_size >= 2 * ODX_FRAME_HEADER_LEN
						  ? s->info.file_size - 2 * ODX_FRAME_HEADER_LEN
						  : 0;
			rc = problem(&wk, TRAILER, terr.code, terr.offset, "%s",
				     stream_error_reason(&terr));
			if (rc < 0) {
				free(tr);
				return rc;
			}
		}
	}
	odx_extmap_init(&s->map, s->info.virtual_size);
	rc = walk_frames(&wk);
	free(tr);
	free(wk.cs);
	if (rc < 0)
		return rc;
	if ((rc = odx_extmap_finish(&s->map)))
		return odx_error_set(err, -rc, "%s: out of memory building the extent map", s->name);
	if (s->nchunks && s->nchunks < s->chunks_cap) { /* give back the growth slack */
		struct chunk *c = realloc(s->chunks, s->nchunks * sizeof *c);
		if (c) {
			s->chunks = c;
			s->chunks_cap = s->nchunks;
		}
	}
	if (s->info.corrupt || wk.lost) {
		/* Frames after the bad header are lost, or frames inside bytes
		 * the walk skipped on a length it could not confirm (a payload
		 * without its CRLF, a trailer entry trusted over its header).
		 * When the frames came in ascending order (as virtnbdbackup
		 * writes them), whatever lost frames covered is among the ranges
		 * no frame covers.  When frames overlapped, a lost frame may
		 * have replaced anything: nothing is served. */
		for (size_t i = 0; i < s->map.count; i++)
			if (s->map.ext[i].kind == ODX_EXTENT_UNMAPPED || wk.unordered) {
				s->map.ext[i].kind = ODX_EXTENT_BAD;
				s->map.ext[i].src = 0;
				s->map.ext[i].frame = ODX_NO_FRAME;
			}
	}
	s->info.extents = s->map.count;
	s->info.mapped_bytes = s->info.bad_bytes = 0;
	for (size_t i = 0; i < s->map.count; i++) {
		if (s->map.ext[i].kind == ODX_EXTENT_DATA)
			s->info.mapped_bytes += s->map.ext[i].length;
		else if (s->map.ext[i].kind == ODX_EXTENT_BAD)
			s->info.bad_bytes += s->map.ext[i].length;
	}
	return 0;
}

int stream_alloc(int fd, const char *name, const struct odx_stream_opts *opts,
		 struct odx_stream **out, struct odx_error *err)
{
	struct odx_stream *s = calloc(1, sizeof *s);
	if (!s)
		return odx_error_set(err, ENOMEM, "out of memory");
	atomic_init(&s->refs, 1);
	s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	s->name = strdup(name ? name : "(stream)");
	if (s->fd < 0 || !s->name) {
		int e = s->fd < 0 ? errno : ENOMEM;
		if (s->fd >= 0)
			close(s->fd);
		free(s->name);
		free(s);
		return odx_error_set(err, e, "%s: %s", name, strerror(e));
	}
	if (opts && opts->cache) {
		s->cache = opts->cache;
	} else {
		s->cache = odx_chunk_cache_new(opts && opts->cache_bytes ? opts->cache_bytes
								     : (size_t)64 << 20);
		s->own_cache = true;
		if (!s->cache) {
			odx_stream_close(s);
			return odx_error_set(err, ENOMEM, "out of memory");
		}
	}
	s->sid = cache_new_stream_id();
	*out = s;
	return 0;
}

int stream_load(int fd, const char *path, const struct odx_stream_opts *opts,
		struct walk_opts *w, struct odx_stream **out, struct odx_error *err)
{
	int own = -1;
	if (fd < 0) {
		own = fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return odx_error_set(err, errno, "%s: %s", path, strerror(errno));
	}
	struct odx_stream *s;
	int rc = stream_alloc(fd, path, opts, &s, err);
	if (own >= 0)
		close(own);
	if (rc)
		return rc;
	rc = stream_index(s, w, err);
	if (rc < 0) {
		odx_stream_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

int odx_stream_open_fd(int fd, const char *name, const struct odx_stream_opts *opts,
		       struct odx_stream **out, struct odx_error *err)
{
	struct walk_opts w = {.flags = opts ? opts->flags : 0};
	int rc = stream_load(fd, name, opts, &w, out, err);
	if (rc)
		return rc;
	/* Repair's bookkeeping is not needed by readers. */
	trailer_free(&(*out)->kept);
	return 0;
}

int odx_stream_open(const char *path, const struct odx_stream_opts *opts,
		    struct odx_stream **out, struct odx_error *err)
{
	return odx_stream_open_fd(-1, path, opts, out, err);
}

static void stream_free(struct odx_stream *s)
{
	if (s->cache) {
		if (s->own_cache)
			odx_chunk_cache_free(s->cache);
		else
			cache_drop_stream(s->cache, s->sid);
	}
	odx_extmap_free(&s->map);
	meta_free(&s->meta);
	trailer_free(&s->kept);
	free(s->chunks);
	free(s->meta_text);
	free(s->name);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

void stream_unref(struct odx_stream *s)
{
	if (atomic_fetch_sub(&s->refs, 1) == 1)
		stream_free(s);
}

void odx_stream_close(struct odx_stream *s)
{
	if (s)
		stream_unref(s);
}

size_t odx_stream_memory(const struct odx_stream *s)
{
	return sizeof *s + strlen(s->name) + 1 + (s->meta_text ? strlen(s->meta_text) + 1 : 0) +
	       s->map.cap * sizeof *s->map.ext +
	       s->chunks_cap * sizeof *s->chunks;
}

int odx_stream_detach_fd(struct odx_stream *s)
{
	/* The caller's is the only reference unless a prefetch job holds
	 * one; no new job can be queued without a reader, which the caller
	 * excludes, so the check stays true until the close. */
	if (atomic_load(&s->refs) > 1)
		return -EBUSY;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	return 0;
}

int odx_stream_attach_fd(struct odx_stream *s, int fd, struct odx_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return odx_error_at(err, errno, s->name, 0, "cannot stat: %s", strerror(errno));
	if (st.st_dev != s->dev || st.st_ino != s->ino ||
	    (uint64_t)st.st_size != s->info.file_size || st.st_mtim.tv_sec != s->mtime.tv_sec ||
	    st.st_mtim.tv_nsec != s->mtime.tv_nsec)
		return odx_error_at(err, ESTALE, s->name, 0,
				    "the file changed since it was indexed");
	if (s->fd >= 0)
		close(s->fd);
	s->fd = fd;
	return 0;
}

bool odx_stream_attached(const struct odx_stream *s)
{
	return s->fd >= 0;
}

const char *odx_stream_damage(const struct odx_stream *s)
{
	return atomic_load(&s->damage_state) == 2 ? s->damage_msg : NULL;
}

const struct odx_stream_info *odx_stream_info(const struct odx_stream *s)
{
	return &s->info;
}

const struct odx_extmap *odx_stream_map(const struct odx_stream *s)
{
	return &s->map;
}

int odx_stream_peek(int fd, const char *name, struct odx_stream_peek *out,
		    struct odx_error *err)
{
	struct stat st;
	struct meta m;
	uint64_t len;
	bool crlf_ok;

	memset(out, 0, sizeof *out);
	memset(&m, 0, sizeof m);
	if (fstat(fd, &st) < 0)
		return odx_error_at(err, errno, name, 0, "cannot stat: %s", strerror(errno));
	int rc = meta_load(fd, (uint64_t)st.st_size, name, false, &m, NULL, &len, &crlf_ok, err);
	if (rc) {
		meta_free(&m);
		return rc;
	}
	out->disk_name = m.disk_name;
	out->checkpoint = m.checkpoint;
	out->parent = m.parent;
	m.disk_name = m.checkpoint = m.parent = NULL;
	out->ident.disk_name = out->disk_name;
	out->ident.checkpoint = out->checkpoint;
	out->ident.parent = out->parent;
	out->ident.incremental = m.incremental;
	out->ident.virtual_size = m.virtual_size;
	out->ident.codec = m.codec;
	meta_free(&m);
	return 0;
}

void odx_stream_peek_free(struct odx_stream_peek *p)
{
	free(p->disk_name);
	free(p->checkpoint);
	free(p->parent);
	memset(p, 0, sizeof *p);
}

int odx_stream_fd(const struct odx_stream *s)
{
	return s->fd;
}

const char *odx_stream_name(const struct odx_stream *s)
{
	return s->name;
}

const char *odx_stream_meta_text(const struct odx_stream *s)
{
	return s->meta_text;
}

char *odx_stream_meta_copy(const struct odx_stream *s, struct odx_error *err)
{
	if (s->meta_text)
		return strdup(s->meta_text);
	struct meta m;
	char *text = NULL;
	uint64_t len;
	bool crlf;
	/* the file is the one indexed (immutable while open): read it again
	 * rather than keep every stream's meta text */
	int rc = meta_load(s->fd, s->info.file_size, s->name, false, &m, &text, &len, &crlf, err);
	if (rc)
		return NULL;
	meta_free(&m);
	return text;
}

int odx_stream_probe(int fd)
{
	/* A valid meta frame header is what makes a file a stream: nothing
	 * else starts with one by accident.  What follows it is judged when
	 * the stream is opened, so damaged meta JSON (or an unknown
	 * compression) makes a stream that fails to open, not a plain file
	 * whose stream bytes would be served as if they were the disk. */
	char hb[ODX_FRAME_HEADER_LEN], why[200];
	ssize_t n = io_pread_full(fd, hb, sizeof hb, 0);
	if (n < 0)
		return (int)n;
	struct frame_hdr h;
	return n == (ssize_t)sizeof hb && memcmp(hb, "meta ", 5) == 0 &&
	       frame_parse(hb, &h, why, sizeof why) == 0 && h.kind == FRAME_META;
}
