/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Round trips raw -> stream -> raw for random images with random extent
 * layouts, in every compression mode, full and incremental; and repair of
 * streams cut at random places. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odxfs/stream.h"

static uint64_t rng_state;
static int _i_global;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

struct image {
	char *bytes;
	uint64_t size;
	char path[64];
};

/* Random layout: data regions of random bytes, zero regions written as
 * zeros or left as holes, boundaries at arbitrary byte offsets. */
static void make_image(struct image *im, uint64_t size, bool big_region)
{
	im->size = size;
	im->bytes = calloc(1, size);
	snprintf(im->path, sizeof im->path, "/tmp/odxfs-rt-XXXXXX");
	int fd = mkstemp(im->path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	uint64_t off = rnd() % 5000;
	while (off < size) {
		uint64_t len = 1 + rnd() % (rnd() % 4 ? 5000 : 3u << 20);
		if (big_region && off < size / 8)
			len = (32u << 20) + 1 + rnd() % 100000; /* a chunked frame */
		if (len > size - off)
			len = size - off;
		int kind = (int)(rnd() % 3); /* 0 data, 1 zero bytes, 2 hole */
		if (kind == 0)
			for (uint64_t i = 0; i < len; i++)
				im->bytes[off + i] = (char)(rnd() | 1);
		if (kind != 2)
			ck_assert_int_eq(pwrite(fd, im->bytes + off, len, (off_t)off), (ssize_t)len);
		off += len;
		off += rnd() % 3 ? 0 : rnd() % 200000; /* some untouched gaps */
	}
	close(fd);
}

static char *tmpname(const char *suffix)
{
	char *p = malloc(96);
	snprintf(p, 96, "/tmp/odxfs-rt-%d-%llu%s", (int)getpid(), (unsigned long long)(rnd() % 1000000), suffix);
	return p;
}

static void unlink_stream(const char *p)
{
	char c[128];
	unlink(p);
	snprintf(c, sizeof c, "%s.chksum", p);
	unlink(c);
}

static void verify_stream(const char *path, const char *want, uint64_t size)
{
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_msg(odx_stream_open(path, NULL, &s, &err) == 0, "%s", err.msg);
	ck_assert_uint_eq(odx_stream_info(s)->virtual_size, size);
	char *buf = malloc(size + 1);
	ck_assert_int_eq(odx_stream_pread(s, buf, size, 0, &err), (ssize_t)size);
	ck_assert(memcmp(buf, want, size) == 0);
	for (int k = 0; k < 200; k++) {
		uint64_t off = rnd() % size, len = 1 + rnd() % (rnd() % 2 ? 100 : 1u << 20);
		if (len > size - off)
			len = size - off;
		ck_assert_int_eq(odx_stream_pread(s, buf, len, off, &err), (ssize_t)len);
		ck_assert(memcmp(buf, want + off, len) == 0);
	}
	/* holes of the map read as zeros; the map covers everything */
	const struct odx_extmap *m = odx_stream_map(s);
	for (size_t i = 0; i < m->count; i++)
		if (odx_extent_is_hole(&m->ext[i]))
			for (uint64_t b = m->ext[i].offset; b < m->ext[i].offset + m->ext[i].length; b += 997)
				ck_assert_int_eq(want[b], 0);
	/* export to a sparse raw file: byte-identical, holes where zero */
	char *raw = tmpname(".raw");
	int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_eq(odx_stream_export(s, fd, NULL, &err), 0);
	struct stat st;
	fstat(fd, &st);
	ck_assert_uint_eq((uint64_t)st.st_size, size);
	ck_assert_int_eq(pread(fd, buf, size, 0), (ssize_t)size);
	ck_assert(memcmp(buf, want, size) == 0);
	ck_assert_uint_le((uint64_t)st.st_blocks * 512, odx_stream_info(s)->mapped_bytes + 64 * 4096 + m->count * 8192);
	close(fd);
	unlink(raw);
	free(raw);
	odx_stream_close(s);
	int n = odx_stream_check(path, NULL, NULL, NULL, &err);
	ck_assert_msg(n == 0, "check found %d problems", n);
	free(buf);
}

static void roundtrip(enum odx_codec codec, bool incremental, bool big)
{
	struct image im;
	rng_state = 0x9e3779b97f4a7c15ull * (uint64_t)(_i_global + 1) + codec * 7 + incremental;
	make_image(&im, big ? (40u << 20) + rnd() % 1000 : 1 + rnd() % (6u << 20), big);
	struct odx_write_opts o = {.codec = codec};
	static const uint64_t zb[] = {512, 4096, 65536, 0};
	o.zero_block = zb[rnd() % 4];
	char *want = im.bytes;
	struct odx_range *ch = NULL;
	if (incremental) {
		/* random changed ranges; the stream holds only those */
		size_t n = 0, cap = 64;
		ch = malloc(cap * sizeof *ch);
		want = calloc(1, im.size);
		uint64_t off = rnd() % 10000;
		while (off < im.size && n < cap) {
			uint64_t len = 1 + rnd() % 300000;
			if (len > im.size - off)
				len = im.size - off;
			ch[n++] = (struct odx_range){off, len};
			memcpy(want + off, im.bytes + off, len);
			off += len + rnd() % 500000;
		}
		o.incremental = true;
		o.changed = ch;
		o.nchanged = n;
	}
	char *out = tmpname(".data");
	int fd = open(im.path, O_RDONLY);
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_msg(odx_stream_write(fd, 0, out, &o, &err) == 0, "%s", err.msg);
	close(fd);
	verify_stream(out, want, im.size);
	struct odx_stream *s;
	ck_assert_int_eq(odx_stream_open(out, NULL, &s, &err), 0);
	if (incremental)
		ck_assert_uint_eq(odx_stream_info(s)->zero_frames, 0);
	ck_assert(odx_stream_info(s)->incremental == incremental);
	ck_assert_int_eq(odx_stream_info(s)->codec, codec);
	odx_stream_close(s);
	unlink_stream(out);
	unlink(im.path);
	if (want != im.bytes)
		free(want);
	free(im.bytes);
	free(out);
	free(ch);
}


START_TEST(test_rt_none) { _i_global = _i; roundtrip(ODX_CODEC_NONE, false, false); }
END_TEST
START_TEST(test_rt_lz4) { _i_global = _i; roundtrip(ODX_CODEC_LZ4, false, false); }
END_TEST
START_TEST(test_rt_zlib) { _i_global = _i; roundtrip(ODX_CODEC_ZLIB, false, false); }
END_TEST
START_TEST(test_rt_none_inc) { _i_global = _i; roundtrip(ODX_CODEC_NONE, true, false); }
END_TEST
START_TEST(test_rt_lz4_inc) { _i_global = _i; roundtrip(ODX_CODEC_LZ4, true, false); }
END_TEST
START_TEST(test_rt_zlib_inc) { _i_global = _i; roundtrip(ODX_CODEC_ZLIB, true, false); }
END_TEST
START_TEST(test_rt_big_lz4) { _i_global = 100; roundtrip(ODX_CODEC_LZ4, false, true); }
END_TEST
START_TEST(test_rt_big_zlib) { _i_global = 101; roundtrip(ODX_CODEC_ZLIB, false, true); }
END_TEST

/* Cut a stream anywhere after its meta frame: ALLOW_TORN serves the same
 * bytes the repaired stream holds, and the repaired stream is clean. */
static void cut_and_repair(enum odx_codec codec)
{
	struct image im;
	rng_state = 0xabcdef12345ull + (uint64_t)_i_global * 31 + codec;
	make_image(&im, 1 + rnd() % (3u << 20), false);
	char *out = tmpname(".data");
	struct odx_write_opts o = {.codec = codec, .zero_block = 4096};
	struct odx_error err;
	odx_error_clear(&err);
	int fd = open(im.path, O_RDONLY);
	ck_assert_int_eq(odx_stream_write(fd, 0, out, &o, &err), 0);
	close(fd);
	struct stat st;
	stat(out, &st);
	uint64_t cut = 400 + rnd() % ((uint64_t)st.st_size - 400);
	ck_assert_int_eq(truncate(out, (off_t)cut), 0);
	struct odx_stream_opts so = {.flags = ODX_OPEN_ALLOW_TORN};
	struct odx_stream *s;
	ck_assert_msg(odx_stream_open(out, &so, &s, &err) == 0, "%s", err.msg);
	char *a = malloc(im.size), *b = malloc(im.size);
	ck_assert_int_eq(odx_stream_pread(s, a, im.size, 0, &err), (ssize_t)im.size);
	odx_stream_close(s);
	char *rep = tmpname(".repaired");
	ck_assert_msg(odx_stream_repair(out, rep, NULL, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(odx_stream_open(rep, NULL, &s, &err), 0);
	ck_assert_int_eq(odx_stream_pread(s, b, im.size, 0, &err), (ssize_t)im.size);
	ck_assert(memcmp(a, b, im.size) == 0);
	odx_stream_close(s);
	ck_assert_int_eq(odx_stream_check(rep, NULL, NULL, NULL, &err), 0);
	/* every byte served is the image's or a zero of the torn tail */
	for (uint64_t i = 0; i < im.size; i++)
		ck_assert(a[i] == im.bytes[i] || a[i] == 0);
	unlink_stream(out);
	unlink_stream(rep);
	unlink(im.path);
	free(a);
	free(b);
	free(im.bytes);
	free(out);
	free(rep);
}

START_TEST(test_repair_none) { _i_global = _i; cut_and_repair(ODX_CODEC_NONE); }
END_TEST
START_TEST(test_repair_lz4) { _i_global = _i; cut_and_repair(ODX_CODEC_LZ4); }
END_TEST
START_TEST(test_repair_zlib) { _i_global = _i; cut_and_repair(ODX_CODEC_ZLIB); }
END_TEST

static Suite *rt_suite(void)
{
	Suite *s = suite_create("roundtrip");
	TCase *t = tcase_create("roundtrip");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, test_rt_none, 0, 6);
	tcase_add_loop_test(t, test_rt_lz4, 0, 6);
	tcase_add_loop_test(t, test_rt_zlib, 0, 4);
	tcase_add_loop_test(t, test_rt_none_inc, 0, 4);
	tcase_add_loop_test(t, test_rt_lz4_inc, 0, 4);
	tcase_add_loop_test(t, test_rt_zlib_inc, 0, 3);
	tcase_add_test(t, test_rt_big_lz4);
	tcase_add_test(t, test_rt_big_zlib);
	suite_add_tcase(s, t);
	t = tcase_create("repair");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, test_repair_none, 0, 8);
	tcase_add_loop_test(t, test_repair_lz4, 0, 8);
	tcase_add_loop_test(t, test_repair_zlib, 0, 5);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(rt_suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
