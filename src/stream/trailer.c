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

int trailer_push(struct trailer *t, const uint64_t *chunks, uint32_t n, bool dict)
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
	if (h.length == 0 || h.length > ODX_TRAILER_MAX || h.length > at)
		return odx_error_at(err, EUCLEAN, name, at + 2,
				    "comp header gives a trailer length of %" PRIu64
				    " bytes, which does not fit the file",
				    h.length);
	*json_len = h.length;
	*json_off = at - h.length;
	return 0;
}

static int entry_u64(const cJSON *it, uint64_t *out)
{
	if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
	    it->valuedouble >= 9007199254740992.0 ||
	    it->valuedouble != (double)(uint64_t)it->valuedouble)
		return -1;
	*out = (uint64_t)it->valuedouble;
	return 0;
}

int trailer_read(int fd, uint64_t file_size, const char *name, struct trailer *t,
		 struct odx_error *err)
{
	uint64_t off, len;
	memset(t, 0, sizeof *t);
	int rc = trailer_locate(fd, file_size, name, &off, &len, err);
	if (rc)
		return rc;
	char *text = malloc(len);
	if (!text)
		return odx_error_set(err, ENOMEM, "out of memory");
	ssize_t n = io_pread_full(fd, text, len, off);
	if (n != (ssize_t)len) {
		free(text);
		return odx_error_at(err, EIO, name, off, "short read of the trailer");
	}
	cJSON *j = cJSON_ParseWithLength(text, len);
	free(text);
	if (!cJSON_IsArray(j)) {
		cJSON_Delete(j);
		return odx_error_at(err, EUCLEAN, name, off,
				    "invalid trailer JSON: expected a list of compressed sizes");
	}
	t->json_offset = off;
	t->json_length = len;
	int i = 0;
	uint64_t *chunks = NULL;
	cJSON *e;
	cJSON_ArrayForEach(e, j)
	{
		uint64_t v;
		if (entry_u64(e, &v) == 0) {
			rc = trailer_push(t, &v, 1, false);
		} else if (cJSON_IsObject(e) && cJSON_GetArraySize(e) == 1 &&
			   cJSON_IsArray(e->child) && cJSON_GetArraySize(e->child) > 0) {
			uint64_t key;
			char *endp;
			errno = 0;
			key = strtoull(e->child->string, &endp, 10);
			if (errno || *endp || endp == e->child->string) {
				rc = odx_error_at(err, EUCLEAN, name, off,
						  "trailer entry %d: key \"%s\" is not a payload size",
						  i, e->child->string);
				goto out;
			}
			int nc = cJSON_GetArraySize(e->child);
			free(chunks);
			chunks = malloc((size_t)nc * sizeof *chunks);
			if (!chunks) {
				rc = odx_error_set(err, ENOMEM, "out of memory");
				goto out;
			}
			int k = 0;
			cJSON *c;
			cJSON_ArrayForEach(c, e->child)
			{
				if (entry_u64(c, &chunks[k]) || chunks[k] == 0 || chunks[k] > UINT32_MAX) {
					rc = odx_error_at(err, EUCLEAN, name, off,
							  "trailer entry %d: chunk %d is not a valid compressed size",
							  i, k);
					goto out;
				}
				k++;
			}
			rc = trailer_push(t, chunks, (uint32_t)nc, true);
			if (rc == 0 && t->payload[t->count - 1] != key) {
				rc = odx_error_at(err, EUCLEAN, name, off,
						  "trailer entry %d: payload size %" PRIu64
						  " but its chunks add up to %" PRIu64,
						  i, key, t->payload[t->count - 1]);
				goto out;
			}
		} else {
			rc = odx_error_at(err, EUCLEAN, name, off,
					  "trailer entry %d: expected a size or {\"size\": [chunk sizes]}", i);
			goto out;
		}
		if (rc) {
			rc = odx_error_set(err, -rc, "%s: trailer entry %d: %s", name, i, strerror(-rc));
			goto out;
		}
		i++;
	}
	rc = 0;
out:
	free(chunks);
	cJSON_Delete(j);
	if (rc)
		trailer_free(t);
	return rc;
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
			n += (size_t)snprintf(s + n, cap - n, "%s%" PRIu64, k ? ", " : "",
					      t->csize[t->first[i] + k]);
		n += (size_t)snprintf(s + n, cap - n, "]}");
	}
	s[n++] = ']';
	s[n] = '\0';
	return s;
}
