/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the one copy loop (odx_copy_run): against scripted halves
 * (short tokens, short writes, no progress, failures, cancel), and end to
 * end through the engine on identity-mapped fake images over sparse temp
 * files (holes from the real filesystem).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odxfs/offload.h"
#include "src/backend/backend.h"

/* ---- scripted halves ---------------------------------------------------- */

struct script {
	uint64_t src_size;     /* offload read returns 0 bytes from here */
	uint64_t token_max;    /* transfer length at most */
	uint64_t write_max;    /* length written at most per call */
	int read_fail_at;      /* n-th read fails (1-based; 0: never) */
	int write_fail_at;     /* n-th write fails */
	int write_zero_at;     /* n-th write writes nothing */
	uint64_t cancel_after; /* progress asks to stop once done >= this */
	/* What happened. */
	int reads, writes, releases, outstanding;
	uint64_t last_done;
	uint64_t dst_next;     /* the next destination offset expected */
	uint64_t src_of_token; /* source offset of the current token */
};

static int s_read(void *ctx, uint64_t src_off, uint64_t len, struct odx_offload_read_result *out)
{
	struct script *s = ctx;
	memset(out, 0, sizeof *out);
	if (++s->reads == s->read_fail_at)
		return -EIO;
	uint64_t n = src_off >= s->src_size ? 0 : s->src_size - src_off;
	if (n > len)
		n = len;
	if (n > s->token_max)
		n = s->token_max;
	out->transfer_length = n;
	memcpy(out->token, &src_off, sizeof src_off);
	s->src_of_token = src_off;
	if (n)
		s->outstanding++;
	return 0;
}

static int s_write(void *ctx, uint64_t dst_off, uint64_t len, const uint8_t *token,
		   uint64_t toff, struct odx_offload_write_result *out)
{
	struct script *s = ctx;
	uint64_t src_off;
	memcpy(&src_off, token, sizeof src_off);
	ck_assert_uint_eq(src_off, s->src_of_token);
	ck_assert_uint_eq(dst_off, s->dst_next);
	out->flags = 0;
	out->length_written = 0;
	if (++s->writes == s->write_fail_at)
		return -ENOSPC;
	if (s->writes == s->write_zero_at)
		return 0;
	uint64_t n = len < s->write_max ? len : s->write_max;
	out->length_written = n;
	s->dst_next += n;
	return 0;
}

static int s_release(void *ctx, const uint8_t *token)
{
	struct script *s = ctx;
	s->releases++;
	s->outstanding--;
	return 0;
}

static int s_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct script *s = ctx;
	ck_assert_uint_gt(done, s->last_done);
	ck_assert_uint_le(done, total);
	s->last_done = done;
	return s->cancel_after && done >= s->cancel_after;
}

static const struct odx_copy_ops script_ops = {
	.offload_read = s_read, .offload_write = s_write,
	.release = s_release, .progress = s_progress,
};

static const struct loop_row {
	const char *what;
	struct script s;
	uint64_t len;
	int64_t want_ret;
	int want_stop;
	int want_reads, want_writes;
} loop_rows[] = {
	{ "one token", { .src_size = 1000, .token_max = 1000, .write_max = 1000 },
	  1000, 1000, 0, 1, 1 },
	{ "short tokens", { .src_size = 1000, .token_max = 300, .write_max = 1000 },
	  1000, 1000, 0, 4, 4 },
	{ "short writes", { .src_size = 1000, .token_max = 1000, .write_max = 256 },
	  1000, 1000, 0, 1, 4 },
	{ "source ends", { .src_size = 700, .token_max = 300, .write_max = 1000 },
	  1000, 700, 0, 4, 3 },
	{ "source empty", { .src_size = 0, .token_max = 300, .write_max = 1000 },
	  1000, 0, 0, 1, 0 },
	{ "first read fails", { .src_size = 1000, .token_max = 300, .write_max = 1000,
				.read_fail_at = 1 },
	  1000, -EIO, -EIO, 1, 0 },
	{ "later read fails", { .src_size = 1000, .token_max = 300, .write_max = 1000,
				.read_fail_at = 3 },
	  1000, 600, -EIO, 3, 2 },
	{ "first write fails", { .src_size = 1000, .token_max = 300, .write_max = 1000,
				 .write_fail_at = 1 },
	  1000, -ENOSPC, -ENOSPC, 1, 1 },
	{ "write fails inside a token", { .src_size = 1000, .token_max = 1000,
					  .write_max = 400, .write_fail_at = 2 },
	  1000, 400, -ENOSPC, 1, 2 },
	{ "no progress", { .src_size = 1000, .token_max = 300, .write_max = 1000,
			   .write_zero_at = 2 },
	  1000, 300, -EIO, 2, 2 },
	{ "cancelled", { .src_size = 1000, .token_max = 300, .write_max = 1000,
			 .cancel_after = 500 },
	  1000, 600, -ECANCELED, 2, 2 },
};

START_TEST(test_loop)
{
	const struct loop_row *row = &loop_rows[_i];
	struct script s = row->s;
	s.dst_next = 5000;
	int stop = 12345;
	int64_t r = odx_copy_run(&script_ops, &s, 0, 5000, row->len, &stop);
	ck_assert_msg(r == row->want_ret, "%s: returned %lld", row->what, (long long)r);
	ck_assert_msg(stop == row->want_stop, "%s: stop %d", row->what, stop);
	ck_assert_int_eq(s.reads, row->want_reads);
	ck_assert_int_eq(s.writes, row->want_writes);
	ck_assert_int_eq(s.outstanding, 0); /* every token released */
	if (r > 0)
		ck_assert_uint_eq(s.last_done, (uint64_t)r);
}
END_TEST

/* Without release and progress halves, and without a stop pointer. */
START_TEST(test_loop_minimal_ops)
{
	struct odx_copy_ops ops = { .offload_read = s_read, .offload_write = s_write };
	struct script s = { .src_size = 1000, .token_max = 300, .write_max = 1000 };
	ck_assert_int_eq(odx_copy_run(&ops, &s, 0, 0, 1000, NULL), 1000);
}
END_TEST

/* ---- end to end through the engine -------------------------------------- */

static int id_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn, void *ctx)
{
	struct stat st;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	uint64_t end = off + len < (uint64_t)st.st_size ? off + len : (uint64_t)st.st_size;
	while (off < end) {
		off_t d = lseek(img->fd, (off_t)off, SEEK_DATA);
		uint64_t data = d < 0 ? end : ((uint64_t)d < end ? (uint64_t)d : end);
		struct odx_seg seg = { .offset = off, .length = data - off, .kind = ODX_SEG_HOLE,
				       .fd = -1 };
		int r = data > off ? fn(ctx, &seg) : 0;
		if (r || data >= end)
			return r;
		off_t h = lseek(img->fd, (off_t)data, SEEK_HOLE);
		uint64_t hole = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
		seg = (struct odx_seg){ .offset = data, .length = hole - data,
					.kind = ODX_SEG_FD, .fd = img->fd, .fd_offset = data };
		r = fn(ctx, &seg);
		if (r)
			return r;
		off = hole;
	}
	return 0;
}

static int id_getattr(struct odx_image *img, struct stat *st)
{
	return 0; /* st already holds fstat's answer */
}

static ssize_t id_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
		       struct odx_error *err)
{
	ssize_t k = pread(img->fd, buf, len, (off_t)off);
	return k < 0 ? -errno : k;
}

static ssize_t id_write(struct odx_image *img, const void *buf, size_t len, uint64_t off)
{
	ssize_t k = pwrite(img->fd, buf, len, (off_t)off);
	return k < 0 ? -errno : k;
}

static const struct odx_backend_ops id_ops = {
	.name = "identity", .caps = ODX_CAP_WRITE | ODX_CAP_FD_DATA | ODX_CAP_DIRECT_FD,
	.map = id_map, .getattr = id_getattr, .read = id_read, .write = id_write,
};

static struct odx_image *id_image(void)
{
	const char *dir = getenv("TMPDIR");
	char path[256];
	snprintf(path, sizeof path, "%s/odx-copy-test.XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	struct odx_image *img = calloc(1, sizeof *img);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	img->ops = &id_ops;
	img->fd = fd;
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	img->name = strdup("identity");
	atomic_init(&img->refs, 1);
	return img;
}

static uint8_t pat(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 11) | 0x80;
}

/* A 16 MiB sparse file: data runs of assorted sizes between holes. */
#define E2E_SIZE (16u << 20)
static const struct { uint64_t off, len; } e2e_data[] = {
	{ 0, 4096 }, { 65536, 3 * 4096 }, { 1048576, 2 << 20 },
	{ 5u << 20, 40960 }, { (12u << 20) + 8192, 1 << 20 },
};

static int e2e_progress(void *arg, uint64_t done, uint64_t total)
{
	(*(int *)arg)++;
	return 0;
}

START_TEST(test_engine_copy)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_token_length = 1 << 20; /* several rounds of the loop */
	struct odx_offload_engine *eng;
	ck_assert_int_eq(odx_offload_engine_create(&cfg, &eng), 0);
	struct odx_image *src = id_image(), *dst = id_image();
	ck_assert_int_eq(ftruncate(src->fd, E2E_SIZE), 0);
	for (size_t i = 0; i < sizeof e2e_data / sizeof e2e_data[0]; i++) {
		uint8_t *b = malloc(e2e_data[i].len);
		for (uint64_t j = 0; j < e2e_data[i].len; j++)
			b[j] = pat(e2e_data[i].off + j);
		ck_assert_int_eq(pwrite(src->fd, b, e2e_data[i].len, (off_t)e2e_data[i].off),
				 (ssize_t)e2e_data[i].len);
		free(b);
	}

	int calls = 0;
	struct odx_offload_copy_ctx c = {
		.eng = eng, .src = src, .dst = dst, .write_flags = ODX_OFFLOAD_WRITE_WRITABLE,
		.progress = e2e_progress, .progress_arg = &calls,
	};
	int stop = -1;
	int64_t n = odx_copy_run(&odx_offload_copy_ops, &c, 0, 0, E2E_SIZE + 4096, &stop);
	ck_assert_int_eq(n, E2E_SIZE);
	ck_assert_int_eq(stop, 0);
	ck_assert_int_ge(calls, 16);

	/* Same bytes, same holes. */
	uint8_t *a = malloc(E2E_SIZE), *b = malloc(E2E_SIZE);
	ck_assert_int_eq(pread(src->fd, a, E2E_SIZE, 0), E2E_SIZE);
	ck_assert_int_eq(pread(dst->fd, b, E2E_SIZE, 0), E2E_SIZE);
	ck_assert(memcmp(a, b, E2E_SIZE) == 0);
	free(a);
	free(b);
	for (off_t off = 0; off < E2E_SIZE;) {
		off_t ds = lseek(src->fd, off, SEEK_DATA), dd = lseek(dst->fd, off, SEEK_DATA);
		ck_assert_int_eq(ds, dd);
		if (ds < 0)
			break;
		off_t hs = lseek(src->fd, ds, SEEK_HOLE), hd = lseek(dst->fd, ds, SEEK_HOLE);
		ck_assert_int_eq(hs, hd);
		off = hs;
	}
	struct stat st;
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, E2E_SIZE);

	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_live, 0); /* all released */
	ck_assert_uint_eq(s.tokens_issued, 16);
	ck_assert_uint_eq(s.tokens_released, 16);
	ck_assert_uint_eq(s.bytes_kernel + s.bytes_buffered, 4096 + 3 * 4096 + (2 << 20) +
			  40960 + (1 << 20));
	ck_assert_uint_eq(s.bytes_kernel + s.bytes_buffered + s.bytes_holes, E2E_SIZE);

	/* The daemon's one call: a second copy at an offset. */
	n = odx_offload_copy(eng, src, 65536, dst, E2E_SIZE, 0, 1 << 20, &stop, NULL);
	ck_assert_int_eq(n, 1 << 20);
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, E2E_SIZE + (1 << 20));

	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* The daemon's call refuses read-only destinations with EROFS, untouched. */
START_TEST(test_engine_copy_readonly)
{
	static const struct odx_backend_ops ro_ops = {
		.name = "ro", .caps = ODX_CAP_FD_DATA, .map = id_map, .getattr = id_getattr,
		.read = id_read,
	};
	struct odx_offload_engine *eng;
	ck_assert_int_eq(odx_offload_engine_create(NULL, &eng), 0);
	struct odx_image *src = id_image(), *dst = id_image();
	dst->ops = &ro_ops;
	ck_assert_int_eq(pwrite(src->fd, "abc", 3, 0), 3);
	int stop;
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_copy(eng, src, 0, dst, 0, 0, 3, &stop, &err), -EROFS);
	ck_assert_int_eq(stop, -EROFS);
	ck_assert_ptr_nonnull(strstr(err.msg, "read-only"));
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_live, 0);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

static Suite *copy_suite(void)
{
	Suite *s = suite_create("copy");
	TCase *tc = tcase_create("loop");
	tcase_add_loop_test(tc, test_loop, 0, (int)(sizeof loop_rows / sizeof loop_rows[0]));
	tcase_add_test(tc, test_loop_minimal_ops);
	suite_add_tcase(s, tc);
	tc = tcase_create("engine");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_engine_copy);
	tcase_add_test(tc, test_engine_copy_readonly);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(copy_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
