/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Repair of a stream cut short (a .partial left by an interrupted backup):
 * the index walk finds the complete frames (and, for a compressed stream
 * without its trailer, measures each chunk); the repaired stream is the
 * meta frame with dataSize fixed (unknown keys kept), those frames copied
 * byte for byte (copy_file_range), then stop and the rebuilt trailer.  The
 * same rewrite fixes a complete stream whose dataSize, stop frame or
 * trailer is wrong, or that has bytes after its end.  A
 * stream corrupt in the middle is refused: cutting it there would throw
 * away frames that might be fine, silently.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream-internal.h"

int odx_stream_repair(const char *path, const char *out_path,
		      struct odx_repair_report *rep, struct odx_error *err)
{
	struct odx_repair_report r = {0};
	struct odx_stream *s;
	struct walk_opts w = {.flags = ODX_OPEN_ALLOW_TORN | WALK_REPAIR};
	int rc = stream_load(-1, path, NULL, &w, &s, err);
	if (rc) {
		if (rep)
			*rep = r;
		return rc;
	}
	const struct odx_stream_info *in = &s->info;
	r.frames_kept = in->data_frames + in->zero_frames;
	r.old_data_size = in->meta_data_size;
	r.new_data_size = in->data_bytes;
	r.bytes_dropped = in->torn ? in->file_size - s->frames_end : 0;
	r.was_complete = in->complete && !in->torn && in->warnings == 0;
	if (r.was_complete && !out_path)
		goto out; /* nothing to do in place */

	const char *dst = out_path ? out_path : path;
	char tmp[PATH_MAX];
	int ofd = stream_tmpfile(dst, tmp, sizeof tmp, err);
	if (ofd < 0) {
		rc = ofd;
		goto out;
	}
	char *text = meta_print(&s->meta, in->data_bytes, 0);
	char h[ODX_FRAME_HEADER_LEN];
	if (!text) {
		rc = odx_error_set(err, ENOMEM, "out of memory");
	} else {
		size_t n = strlen(text);
		uint64_t at = ODX_FRAME_HEADER_LEN + n + 2;
		uint64_t body = s->frames_end - s->frames_start;
		frame_format(h, FRAME_META, 0, n);
		if ((rc = io_pwrite_full(ofd, h, sizeof h, 0)) ||
		    (rc = io_pwrite_full(ofd, text, n, ODX_FRAME_HEADER_LEN)) ||
		    (rc = io_pwrite_full(ofd, "\r\n", 2, ODX_FRAME_HEADER_LEN + n)) ||
		    (rc = io_copy_range(s->fd, s->frames_start, ofd, at, body)))
			rc = odx_error_set(err, -rc, "%s: %s", tmp, strerror(-rc));
		else if (!(rc = stream_write_tail(ofd, at + body, in->codec, &s->kept, err)))
			rc = stream_publish(ofd, tmp, dst, true, err);
	}
	free(text);
	close(ofd);
	if (rc)
		unlink(tmp);
out:
	odx_stream_close(s);
	if (rep)
		*rep = r;
	return rc;
}
