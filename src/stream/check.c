/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Full validation: the index walk in check mode (every header, CRLF,
 * dataSize, trailer entries, frames within virtualSize, reported one by one
 * and walked past where the next frame can still be found), then every
 * compressed chunk decompressed with its checksums verified, then the
 * .chksum file when there is one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream-internal.h"

static void report(struct walk_opts *w, uint64_t off, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void report(struct walk_opts *w, uint64_t off, const char *fmt, ...)
{
	char msg[ODX_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	w->problem(w->ctx, off, msg);
	w->nproblems++;
}

static int check_chunks(struct odx_stream *s, struct walk_opts *w, const struct odx_progress *p)
{
	uint32_t umax = 0;
	for (size_t i = 0; i < s->nchunks; i++)
		if (s->chunks[i].ulen > umax)
			umax = s->chunks[i].ulen;
	char *dst = malloc(umax ? umax : 1);
	if (!dst)
		return -ENOMEM;
	uint64_t total = s->info.payload_bytes, done = 0;
	for (size_t i = 0; i < s->nchunks; i++) {
		const struct chunk *c = &s->chunks[i];
		char why[256];
		int rc = codec_decompress_fd(s->info.codec, s->fd, c->file_off, c->csize, dst, c->ulen,
					     why, sizeof why);
		if (rc == -ENOMEM) {
			free(dst);
			return rc;
		}
		if (rc)
			report(w, c->file_off, "compressed chunk %zu (%u bytes, %u decoded): %s", i,
			       c->csize, c->ulen, why);
		done += c->csize;
		if (p && p->fn)
			p->fn(p->ctx, done, total);
	}
	free(dst);
	return 0;
}

int odx_chksum_parse(const char *text, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	while (*end == '\n' || *end == '\r' || *end == ' ')
		end++;
	if (errno || end == text || *end || v > UINT32_MAX || text[0] == '-')
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int check_chksum(struct odx_stream *s, const char *path, struct walk_opts *w)
{
	char cpath[PATH_MAX], text[64];
	snprintf(cpath, sizeof cpath, "%s.chksum", path);
	int fd = open(cpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	ssize_t n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n < 0)
		return -errno;
	text[n] = '\0';
	uint32_t want, got;
	if (odx_chksum_parse(text, &want)) {
		report(w, 0, "%s: expected a decimal Adler-32, found \"%.20s\"", cpath, text);
		return 0;
	}
	int rc = odx_file_adler32(s->fd, &got);
	if (rc)
		return rc;
	if (got != want)
		report(w, 0, "Adler-32 of the file is %u but %s says %u", got, cpath, want);
	return 0;
}

int odx_stream_check(const char *path, odx_problem_fn cb, void *ctx,
		     const struct odx_progress *p, struct odx_error *err)
{
	struct odx_stream *s;
	struct walk_opts w = {.problem = cb, .ctx = ctx};
	struct odx_error werr;
	odx_error_clear(&werr);
	int rc = stream_load(-1, path, NULL, &w, &s, &werr);
	if (rc < 0) {
		if (rc != -EUCLEAN && rc != -ENODATA && rc != -EOVERFLOW && rc != -EBADMSG &&
		    rc != -ENOTSUP) {
			*err = werr; /* the file could not be read at all */
			return rc;
		}
		/* Not even the meta frame: one problem, nothing more to walk. */
		report(&w, werr.offset, "%s", stream_error_reason(&werr));
		return w.nproblems;
	}
	if (s->info.codec != ODX_CODEC_NONE && (rc = check_chunks(s, &w, p)))
		goto fail;
	if ((rc = check_chksum(s, path, &w)))
		goto fail;
	odx_stream_close(s);
	return w.nproblems;
fail:
	odx_stream_close(s);
	return odx_error_set(err, -rc, "%s: %s", path, strerror(-rc));
}
