/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The compression trailer: after `stop`, a JSON list with one entry per
 * data frame (the compressed payload size, or for a frame split into
 * chunks {"<payload size>": [<chunk size>, ...]}), CRLF, and a final
 * `comp 0 <json length>` header.  The file therefore ends with that header
 * and the JSON ends two bytes before it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream-internal.h"

void trailer_free(struct trailer *t)
{
	free(t->payload);
	free(t->first);
	free(t->nchunks);
	free(t->dict);
	free(t->csize);
	memset(t, 0, sizeof *t);
}

int trailer_push(struct trailer *t, const uint32_t *chunks, uint32_t n, bool dict)
{
	if (t->count == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		void *a = realloc(t->payload, cap * sizeof *t->payload);
		if (a) t->payload = a;
		void *b = realloc(t->first, cap * sizeof *t->first);
		if (b) t->first = b;
		void *d = realloc(t->nchunks, cap * sizeof *t->nchunks);
		if (d) t->nchunks = d;
		void *e = realloc(t->dict, cap * sizeof *t->dict);
		if (e) t->dict = e;
		if (!a || !b || !d || !e)
			return -ENOMEM;
		t->cap = cap;
	}
	if (t->ncsize + n > UINT32_MAX)
		return -EOVERFLOW;
	if (t->ncsize + n > t->cscap) {
		size_t cap = t->cscap ? 2 * t->cscap : 16;
		while (cap < t->ncsize + n)
			cap *= 2;
		void *f = realloc(t->csize, cap * sizeof *t->csize);
		if (!f)
			return -ENOMEM;
		t->csize = f;
		t->cscap = cap;
	}
	uint64_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		t->csize[t->ncsize + i] = chunks[i];
		if (__builtin_add_overflow(total, chunks[i], &total))
			return -EOVERFLOW;
	}
	size_t c = t->count;
	t->payload[c] = total;
	t->first[c] = (uint32_t)t->ncsize;
	t->nchunks[c] = n;
	t->dict[c] = dict;
	t->ncsize += n;
	t->count++;
	return 0;
}

int trailer_locate(int fd, uint64_t file_size, const char *name, uint64_t *json_off,
		   uint64_t *json_len, struct odx_error *err)
{
	char buf[ODX_FRAME_HEADER_LEN + 2];
	if (file_size < sizeof buf)
		return odx_error_at(err, ENODATA, name, file_size,
				    "compressed stream has no trailer: the file ends before a comp header");
	uint64_t at = file_size - sizeof buf;
	ssize_t n = io_pread_full(fd, buf, sizeof buf, at);
	if (n < 0)
		return odx_error_at(err, (int)-n, name, at, "read failed: %s", strerror((int)-n));
	if (memcmp(buf + 2, "comp", 4) != 0)
		return odx_error_at(err, ENODATA, name, at + 2,
				    "compressed stream has no trailer: expected a comp header at the end of the file");
	struct frame_hdr h;
	char why[256];
	if (frame_parse(buf + 2, &h, why, sizeof why))
		return odx_error_at(err, EUCLEAN, name, at + 2, "%s", why);
	if (buf[0] != '\r' || buf[1] != '\n')
		return odx_error_at(err, EUCLEAN, name, at,
				    "expected CRLF after the trailer JSON, before the comp header");
	if (h.start != 0)
		return odx_error_at(err, EUCLEAN, name, at + 2,
				    "expected \"comp 0 <length>\", found a start of %" PRIu64, h.start);
	if (h.length == 0 || h.length > ODX_TRAILER_MAX || h.length > at)
		return odx_error_at(err, EUCLEAN, name, at + 2,
				    "comp header gives a trailer length of %" PRIu64
				    " bytes, which does not fit the file",
				    h.length);
	*json_len = h.length;
	*json_off = at - h.length;
	return 0;
}

/* ---- reading: one entry at a time ----
 *
 * The JSON is a list written by json.dumps: integers, and objects with one
 * key (the payload size, as a string of digits) whose value is a list of
 * integers.  It is parsed by hand through a small window so that memory
 * stays constant however long the trailer is (a cJSON tree of 10^7 entries
 * takes a gigabyte); the walk asks for one entry per data frame and keeps
 * only the chunk sizes it needs.  Numbers are plain decimal integers, as
 * the writers produce them: a sign, a fraction, an exponent or a leading
 * zero is damage. */

static int tr_fill(struct trailer_rd *t)
{
	if (t->pos >= t->base && t->pos < t->base + t->len)
		return 0;
	if (t->pos >= t->end)
		return -ENODATA;
	uint64_t want = t->end - t->pos < sizeof t->buf ? t->end - t->pos : sizeof t->buf;
	ssize_t n = io_pread_full(t->fd, t->buf, (size_t)want, t->pos);
	if (n < 0)
		return (int)n;
	if (n == 0)
		return -ENODATA;
	t->base = t->pos;
	t->len = (size_t)n;
	return 0;
}

/* The next byte that is not white space, without consuming it; -1 at the
 * end of the JSON, -2 on a read error (t->ioerr). */
static int tr_peek(struct trailer_rd *t)
{
	for (;;) {
		int rc = tr_fill(t);
		if (rc == -ENODATA)
			return -1;
		if (rc) {
			t->ioerr = -rc;
			return -2;
		}
		unsigned char c = t->buf[t->pos - t->base];
		if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			return c;
		t->pos++;
	}
}

static int tr_bad(struct trailer_rd *t, struct odx_error *err, const char *what)
{
	if (t->ioerr)
		return odx_error_at(err, t->ioerr, t->name, t->pos, "reading the trailer: %s",
				    strerror(t->ioerr));
	return odx_error_at(err, EUCLEAN, t->name, t->pos,
			    "invalid trailer JSON (entry %zu): %s", t->entries, what);
}

/* A non-negative decimal integer below 2^53 (what json.dumps writes). */
static int tr_number(struct trailer_rd *t, uint64_t *out)
{
	uint64_t v = 0;
	size_t digits = 0;
	bool zero_first = false;
	if (tr_peek(t) < 0)
		return -1;
	for (;;) {
		int rc = tr_fill(t);
		if (rc == -ENODATA)
			break;
		if (rc) {
			t->ioerr = -rc;
			return -1;
		}
		unsigned char c = t->buf[t->pos - t->base];
		if (c < '0' || c > '9')
			break;
		if (digits == 0)
			zero_first = c == '0';
		else if (zero_first)
			return -1;
		v = v * 10 + (uint64_t)(c - '0');
		if (++digits > 15)
			return -1;
		t->pos++;
	}
	if (digits == 0)
		return -1;
	*out = v;
	return 0;
}

static bool tr_eat(struct trailer_rd *t, char c)
{
	if (tr_peek(t) != c)
		return false;
	t->pos++;
	return true;
}

int trailer_open(struct trailer_rd *t, int fd, uint64_t file_size, const char *name,
		 struct odx_error *err)
{
	uint64_t off, len;
	memset(t, 0, sizeof *t);
	int rc = trailer_locate(fd, file_size, name, &off, &len, err);
	if (rc)
		return rc;
	t->fd = fd;
	t->name = name;
	t->json_offset = t->pos = off;
	t->json_length = len;
	t->end = off + len;
	if (!tr_eat(t, '['))
		return tr_bad(t, err, "expected '[' (a list of compressed sizes)");
	if (tr_eat(t, ']'))
		t->closed = true;
	return 0;
}

int chunk_sizes_room(uint32_t **cs, size_t *cap, size_t n)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	uint32_t *v = realloc(*cs, nc * sizeof *v);
	if (!v)
		return -ENOMEM;
	*cs = v;
	*cap = nc;
	return 0;
}

int trailer_next(struct trailer_rd *t, uint32_t **cs, size_t *cap, uint32_t max, uint32_t *n,
		 bool *dict, uint64_t *payload, bool *fits, struct odx_error *err)
{
	*n = 0;
	*fits = true;
	if (t->closed)
		return 0;
	if (t->entries && !tr_eat(t, ','))
		return tr_bad(t, err, "expected ',' or ']' after an entry");
	/* An entry that parses is consumed whole, even when it cannot
	 * describe its frame (too many chunks, a size out of bounds, a key
	 * that is not their sum): the frame is damage then, not the trailer,
	 * and the walk goes on with the next entry.  Sizes past `max` are
	 * counted, not kept. */
	uint64_t v, key = 0, sum = 0;
	bool obj = tr_peek(t) == '{';
	if (obj) {
		t->pos++;
		if (!tr_eat(t, '"') || tr_number(t, &key) || !tr_eat(t, '"') || !tr_eat(t, ':') ||
		    !tr_eat(t, '['))
			return tr_bad(t, err, "expected {\"<payload size>\": [chunk sizes]}");
	}
	do {
		if (tr_number(t, &v))
			return tr_bad(t, err, obj ? "expected a chunk size"
						  : "expected a compressed size, or {\"size\": [chunk sizes]}");
		if (v == 0 || v > ODX_CHUNK_CSIZE_MAX || *n >= max)
			*fits = false;
		else if (chunk_sizes_room(cs, cap, *n))
			return odx_error_set(err, ENOMEM, "out of memory");
		else
			(*cs)[*n] = (uint32_t)v;
		if (__builtin_add_overflow(sum, v, &sum)) { /* (saturates: damage) */
			sum = UINT64_MAX;
			*fits = false;
		}
		if (*n < UINT32_MAX)
			(*n)++;
	} while (obj && tr_eat(t, ','));
	if (obj && (!tr_eat(t, ']') || !tr_eat(t, '}')))
		return tr_bad(t, err, "expected ']}' after the chunk sizes");
	if (obj && sum != key)
		*fits = false;
	*dict = obj;
	*payload = sum;
	t->entries++;
	if (tr_eat(t, ']'))
		t->closed = true;
	else if (tr_peek(t) != ',')
		return tr_bad(t, err, "expected ',' or ']' after an entry");
	return 1;
}

int trailer_finish(struct trailer_rd *t, struct odx_error *err)
{
	if (!t->closed)
		return odx_error_at(err, EUCLEAN, t->name, t->pos,
				    "the trailer lists more entries than the %zu data frames",
				    t->entries);
	if (tr_peek(t) != -1)
		return tr_bad(t, err, "unexpected bytes after the list");
	return 0;
}

char *trailer_print(const struct trailer *t)
{
	/* Same shape as json.dumps: "[a, {"n": [x, y]}, b]". */
	size_t cap = 64 + t->count * 24 + t->ncsize * 24, n = 0;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	s[n++] = '[';
	for (size_t i = 0; i < t->count; i++) {
		if (i)
			n += (size_t)snprintf(s + n, cap - n, ", ");
		if (!t->dict[i]) {
			n += (size_t)snprintf(s + n, cap - n, "%" PRIu64, t->payload[i]);
			continue;
		}
		n += (size_t)snprintf(s + n, cap - n, "{\"%" PRIu64 "\": [", t->payload[i]);
		for (uint32_t k = 0; k < t->nchunks[i]; k++)
			n += (size_t)snprintf(s + n, cap - n, "%s%" PRIu32, k ? ", " : "",
					      t->csize[t->first[i] + k]);
		n += (size_t)snprintf(s + n, cap - n, "]}");
	}
	s[n++] = ']';
	s[n] = '\0';
	return s;
}
