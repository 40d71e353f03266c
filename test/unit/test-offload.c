/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the offload engine (offload.h) against fake images: a temp
 * file on the real filesystem under a scripted segment list, so holes and
 * copy_file_range are real but no real backend is involved.
 *
 * The clock is injected (fake_now) so time to live is tested without
 * sleeping.  Each test runs in its own process (Check's fork mode), so the
 * process-wide modify hook starts clean each time.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odxfs/ioctl.h"
#include "odxfs/offload.h"
#include "src/backend/backend.h"

/* ---- fake images -------------------------------------------------------- */

struct fake_seg {
	uint64_t off, len;
	int kind;        /* ODX_SEG_* */
	uint64_t fd_off; /* FD and DECODE: where the bytes sit in the file */
};

#define FAKE_MAX_SEGS 16

struct fake {
	uint64_t size;
	size_t n;
	struct fake_seg seg[FAKE_MAX_SEGS];
};

static int fake_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		    void *ctx)
{
	struct fake *f = img->priv;
	uint64_t end = off + len < f->size ? off + len : f->size;
	for (size_t i = 0; i < f->n; i++) {
		const struct fake_seg *s = &f->seg[i];
		uint64_t a = s->off > off ? s->off : off;
		uint64_t b = s->off + s->len < end ? s->off + s->len : end;
		if (a >= b)
			continue;
		struct odx_seg seg = {
			.offset = a, .length = b - a, .kind = s->kind,
			.fd = s->kind == ODX_SEG_FD ? img->fd : -1,
			.fd_offset = s->kind == ODX_SEG_FD ? s->fd_off + (a - s->off) : 0,
		};
		int r = fn(ctx, &seg);
		if (r)
			return r;
	}
	return 0;
}

static int fake_getattr(struct odx_image *img, struct stat *st)
{
	struct fake *f = img->priv;
	st->st_size = (off_t)f->size;
	return 0;
}

static ssize_t fake_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
			 struct odx_error *err)
{
	struct fake *f = img->priv;
	for (size_t i = 0; i < f->n; i++) {
		const struct fake_seg *s = &f->seg[i];
		if (off < s->off || off >= s->off + s->len)
			continue;
		size_t n = len < s->off + s->len - off ? len : (size_t)(s->off + s->len - off);
		if (s->kind == ODX_SEG_HOLE) {
			memset(buf, 0, n);
			return (ssize_t)n;
		}
		ssize_t k = pread(img->fd, buf, n, (off_t)(s->fd_off + off - s->off));
		return k < 0 ? -errno : k;
	}
	return 0;
}

/* The writable fakes are identity-mapped files (like raw). */
static int fake_sync_size(struct odx_image *img)
{
	struct fake *f = img->priv;
	struct stat st;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	f->size = (uint64_t)st.st_size;
	f->n = 1;
	f->seg[0] = (struct fake_seg){ 0, f->size, ODX_SEG_FD, 0 };
	return 0;
}

static ssize_t fake_write(struct odx_image *img, const void *buf, size_t len, uint64_t off)
{
	ssize_t k = pwrite(img->fd, buf, len, (off_t)off);
	if (k < 0)
		return -errno;
	fake_sync_size(img);
	return k;
}

static int fake_truncate(struct odx_image *img, uint64_t size)
{
	if (ftruncate(img->fd, (off_t)size) < 0)
		return -errno;
	return fake_sync_size(img);
}

static int fake_fallocate(struct odx_image *img, int mode, uint64_t off, uint64_t len)
{
	if (fallocate(img->fd, mode, (off_t)off, (off_t)len) < 0)
		return -errno;
	return fake_sync_size(img);
}

static void fake_close(struct odx_image *img)
{
	free(img->priv);
}

/* Stream-like: immutable, plain and decoded data. */
static const struct odx_backend_ops fake_stream_ops = {
	.name = "fake-stream", .caps = ODX_CAP_FD_DATA | ODX_CAP_IMMUTABLE,
	.map = fake_map, .getattr = fake_getattr, .read = fake_read, .close = fake_close,
};
/* Raw-like: writable, identity-mapped, written directly by the engine. */
static const struct odx_backend_ops fake_raw_ops = {
	.name = "fake-raw", .caps = ODX_CAP_WRITE | ODX_CAP_FD_DATA | ODX_CAP_DIRECT_FD,
	.map = fake_map, .getattr = fake_getattr, .read = fake_read, .write = fake_write,
	.truncate = fake_truncate, .fallocate = fake_fallocate, .close = fake_close,
};
/* Writable but not identity-mapped: the engine must use the wrappers. */
static const struct odx_backend_ops fake_generic_ops = {
	.name = "fake-generic", .caps = ODX_CAP_WRITE,
	.map = fake_map, .getattr = fake_getattr, .read = fake_read, .write = fake_write,
	.truncate = fake_truncate, .fallocate = fake_fallocate, .close = fake_close,
};

static int tmp_fd(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/odx-offload-test.XXXXXX", dir);
	int fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	unlink(path);
	return fd;
}

static const char *tmp_dir(void)
{
	const char *d = getenv("TMPDIR");
	return d && *d ? d : "/tmp";
}

static struct odx_image *fake_image(const struct odx_backend_ops *ops, int fd,
				    const struct fake *script)
{
	struct odx_image *img = calloc(1, sizeof *img);
	struct fake *f = malloc(sizeof *f);
	struct stat st;
	ck_assert(img && f && fstat(fd, &st) == 0);
	*f = *script;
	img->ops = ops;
	img->fd = fd;
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	img->name = strdup(ops->name);
	img->priv = f;
	atomic_init(&img->refs, 1);
	if (ops != &fake_stream_ops && script->n == 0)
		fake_sync_size(img);
	return img;
}

/* A writable identity image over a new empty (or `size` bytes of pattern
 * `fill`) temp file. */
static struct odx_image *raw_image(const struct odx_backend_ops *ops, uint64_t size,
				   int fill)
{
	int fd = tmp_fd(tmp_dir());
	if (size) {
		uint8_t *b = malloc(size);
		memset(b, fill, size);
		ck_assert_int_eq(pwrite(fd, b, size, 0), (ssize_t)size);
		free(b);
	}
	struct fake none = { 0 };
	return fake_image(ops, fd, &none);
}

/* Byte i of the payload file: never zero, so holes stand out. */
static uint8_t pat(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13) | 1;
}

static void fill_pattern(int fd, uint64_t off, uint64_t len)
{
	uint8_t *b = malloc(len);
	for (uint64_t i = 0; i < len; i++)
		b[i] = pat(off + i);
	ck_assert_int_eq(pwrite(fd, b, len, (off_t)off), (ssize_t)len);
	free(b);
}

/* The source used by most tests: unaligned extents of every kind, the
 * payload at offsets unlike the logical ones, and a zero tail. */
#define SRC_SIZE (1048576 + 5000)
static const struct fake src_script = {
	.size = SRC_SIZE,
	.n = 6,
	.seg = {
		{ 0, 10000, ODX_SEG_FD, 100000 },
		{ 10000, 290000, ODX_SEG_HOLE, 0 },
		{ 300000, 100000, ODX_SEG_DECODE, 200000 },
		{ 400000, 300000, ODX_SEG_HOLE, 0 },
		{ 700000, 100123, ODX_SEG_FD, 300000 },
		{ 800123, SRC_SIZE - 800123, ODX_SEG_HOLE, 0 },
	},
};
#define SRC_DATA_FD (10000 + 100123)
#define SRC_DATA_DECODE 100000

static struct odx_image *src_image(const char *dir, const struct odx_backend_ops *ops)
{
	int fd = tmp_fd(dir);
	for (size_t i = 0; i < src_script.n; i++)
		if (src_script.seg[i].kind != ODX_SEG_HOLE)
			fill_pattern(fd, src_script.seg[i].fd_off, src_script.seg[i].len);
	return fake_image(ops, fd, &src_script);
}

/* Expected logical byte of the source. */
static uint8_t src_byte(uint64_t off)
{
	for (size_t i = 0; i < src_script.n; i++) {
		const struct fake_seg *s = &src_script.seg[i];
		if (off >= s->off && off < s->off + s->len)
			return s->kind == ODX_SEG_HOLE ? 0 : pat(s->fd_off + off - s->off);
	}
	return 0;
}

/* dst[dst_off, +len) equals source[src_off, +len). */
static void assert_copied(int fd, uint64_t dst_off, uint64_t src_off, uint64_t len)
{
	uint8_t *b = malloc(len);
	ck_assert_int_eq(pread(fd, b, len, (off_t)dst_off), (ssize_t)len);
	for (uint64_t i = 0; i < len; i++)
		if (b[i] != src_byte(src_off + i))
			ck_abort_msg("byte %llu of the copy: got %u, want %u",
				     (unsigned long long)i, b[i], src_byte(src_off + i));
	free(b);
}

/* ---- engine helpers ----------------------------------------------------- */

static uint64_t fake_now = 1000;

static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static struct odx_offload_engine *engine_with(struct odx_offload_config *cfg)
{
	struct odx_offload_config def;
	if (!cfg) {
		odx_offload_config_init(&def);
		cfg = &def;
	}
	cfg->clock_ms = fake_clock;
	struct odx_offload_engine *eng;
	ck_assert_int_eq(odx_offload_engine_create(cfg, &eng), 0);
	return eng;
}

/* An offload read that must succeed, for `owner`. */
static struct odx_offload_read_result do_read_as(struct odx_offload_engine *eng,
						 struct odx_image *img, uint32_t owner,
						 uint64_t off, uint64_t len, uint32_t ttl)
{
	struct odx_offload_read_result rd;
	struct odx_error err = { 0 };
	int r = odx_offload_read(eng, img, owner, off, len, ttl, 0, &rd, &err);
	ck_assert_msg(r == 0, "offload read: %d %s", r, err.msg);
	return rd;
}

/* The same for owner 0 (root). */
static struct odx_offload_read_result do_read(struct odx_offload_engine *eng,
					      struct odx_image *img, uint64_t off,
					      uint64_t len, uint32_t ttl)
{
	return do_read_as(eng, img, 0, off, len, ttl);
}

static uint64_t do_write(struct odx_offload_engine *eng, struct odx_image *dst, uint64_t off,
			 uint64_t len, const uint8_t *token, uint64_t toff)
{
	struct odx_offload_write_result wr;
	struct odx_error err = { 0 };
	int r = odx_offload_write(eng, dst, off, len, token, toff, ODX_OFFLOAD_WRITE_WRITABLE,
				  &wr, &err);
	ck_assert_msg(r == 0, "offload write: %d %s", r, err.msg);
	return wr.length_written;
}

static struct odx_offload_stats stats_of(struct odx_offload_engine *eng)
{
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	return s;
}

static uint32_t token_type(const uint8_t *tok)
{
	return (uint32_t)tok[0] << 24 | (uint32_t)tok[1] << 16 | (uint32_t)tok[2] << 8 | tok[3];
}

/* Offsets of the data regions of fd, as SEEK_DATA/SEEK_HOLE see them. */
static off_t seek(int fd, off_t off, int whence)
{
	off_t r = lseek(fd, off, whence);
	return r < 0 ? -errno : r;
}

/* ---- whole copies ------------------------------------------------------- */

START_TEST(test_copy_whole_sparse)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);

	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(rd.transfer_length, SRC_SIZE);
	ck_assert_uint_eq(rd.flags, 0);
	ck_assert_uint_eq(token_type(rd.token), ODX_TOKEN_TYPE_ODXFS);
	ck_assert_uint_eq(do_write(eng, dst, 0, SRC_SIZE, rd.token, 0), SRC_SIZE);

	struct stat st;
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, SRC_SIZE);
	assert_copied(dst->fd, 0, 0, SRC_SIZE);
	/* Holes where the source has them, at 4 KiB blocks. */
	ck_assert_int_eq(seek(dst->fd, 0, SEEK_HOLE), 12288);
	ck_assert_int_eq(seek(dst->fd, 12288, SEEK_DATA), 299008);
	ck_assert_int_eq(seek(dst->fd, 299008, SEEK_HOLE), 401408);
	ck_assert_int_eq(seek(dst->fd, 401408, SEEK_DATA), 696320);
	ck_assert_int_eq(seek(dst->fd, 696320, SEEK_HOLE), 802816);
	ck_assert_int_eq(seek(dst->fd, 802816, SEEK_DATA), -ENXIO);

	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_issued, 1);
	ck_assert_uint_eq(s.tokens_used, 1);
	ck_assert_uint_eq(s.bytes_kernel, SRC_DATA_FD);
	ck_assert_uint_eq(s.bytes_buffered, SRC_DATA_DECODE);
	ck_assert_uint_eq(s.bytes_holes, SRC_SIZE - SRC_DATA_FD - SRC_DATA_DECODE);
	ck_assert_uint_eq(s.tokens_live, 1);
	ck_assert_int_eq(odx_offload_release(eng, rd.token), 0);
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_live, 0);
	ck_assert_uint_eq(s.token_bytes, 0);
	ck_assert_uint_eq(s.tokens_released, 1);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Over a destination full of data: holes are punched (whole blocks), the
 * partial blocks at their edges are written as zeros. */
START_TEST(test_copy_over_data)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 2 * SRC_SIZE, 0xAA);

	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(do_write(eng, dst, 0, SRC_SIZE, rd.token, 0), SRC_SIZE);
	assert_copied(dst->fd, 0, 0, SRC_SIZE);
	ck_assert_int_eq(seek(dst->fd, 0, SEEK_HOLE), 12288);
	ck_assert_int_eq(seek(dst->fd, 12288, SEEK_DATA), 299008);
	/* Past the copy the old bytes stay, and so does the size. */
	uint8_t b;
	ck_assert_int_eq(pread(dst->fd, &b, 1, SRC_SIZE), 1);
	ck_assert_uint_eq(b, 0xAA);
	struct stat st;
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, 2 * SRC_SIZE);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Unaligned destination offset, through the generic (wrapper) path too. */
START_TEST(test_copy_unaligned_and_generic)
{
	const struct odx_backend_ops *ops = _i ? &fake_generic_ops : &fake_raw_ops;
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(ops, 50000, 0x55);

	struct odx_offload_read_result rd = do_read(eng, src, 5000, 800000, 0);
	ck_assert_uint_eq(do_write(eng, dst, 777, 800000, rd.token, 0), 800000);
	assert_copied(dst->fd, 777, 5000, 800000);
	uint8_t b[777];
	ck_assert_int_eq(pread(dst->fd, b, sizeof b, 0), (ssize_t)sizeof b);
	for (size_t i = 0; i < sizeof b; i++)
		ck_assert_uint_eq(b[i], 0x55);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	if (_i)
		ck_assert_uint_eq(s.bytes_kernel, 0);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* copy_file_range path against the bounded buffer path: counters. */
START_TEST(test_counters_kernel_vs_buffer)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.use_copy_file_range = false;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(do_write(eng, dst, 0, SRC_SIZE, rd.token, 0), SRC_SIZE);
	assert_copied(dst->fd, 0, 0, SRC_SIZE);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.bytes_kernel, 0);
	ck_assert_uint_eq(s.bytes_buffered, SRC_DATA_FD + SRC_DATA_DECODE);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* A source on another filesystem type (tmpfs): copy_file_range says EXDEV
 * and the engine falls back to the buffer. */
START_TEST(test_exdev_fallback)
{
	struct stat st;
	if (stat("/dev/shm", &st) != 0 || access("/dev/shm", W_OK) != 0)
		return; /* nothing to cross to here */
	struct stat tst;
	ck_assert_int_eq(stat(tmp_dir(), &tst), 0);
	if (tst.st_dev == st.st_dev)
		return;
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image("/dev/shm", &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(do_write(eng, dst, 0, SRC_SIZE, rd.token, 0), SRC_SIZE);
	assert_copied(dst->fd, 0, 0, SRC_SIZE);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	/* Kernels that copy across filesystem types would count it here. */
	ck_assert_uint_eq(s.bytes_kernel + s.bytes_buffered, SRC_DATA_FD + SRC_DATA_DECODE);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* ---- partial transfers, zero tokens, transfer offsets ------------------- */

START_TEST(test_partial_length_cap)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_token_length = 65536;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(rd.transfer_length, 65536);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

START_TEST(test_partial_extent_cap)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_token_extents = 2;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(rd.transfer_length, 300000); /* data, hole */
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

START_TEST(test_partial_eof)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_offload_read_result rd = do_read(eng, src, 700000, 10u << 20, 0);
	ck_assert_uint_eq(rd.transfer_length, SRC_SIZE - 700000);
	rd = do_read(eng, src, SRC_SIZE, 100, 0);
	ck_assert_uint_eq(rd.transfer_length, 0);
	ck_assert_uint_eq(rd.flags, ODX_OFFLOAD_READ_FLAG_FILE_TOO_SMALL);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_issued, 1);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

START_TEST(test_zero_token)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	/* Inside the first hole. */
	struct odx_offload_read_result rd = do_read(eng, src, 20000, 100000, 0);
	ck_assert_uint_eq(rd.transfer_length, 100000);
	ck_assert_uint_eq(token_type(rd.token), ODX_TOKEN_TYPE_ZERO_DATA);
	ck_assert_uint_eq(rd.flags, 0);
	ck_assert_uint_eq(do_write(eng, dst, 8192, 100000, rd.token, 0), 100000);
	struct stat st;
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, 108192);
	ck_assert_int_eq(st.st_blocks, 0);
	/* The tail: all zeros beyond, flagged. */
	rd = do_read(eng, src, 900000, 1000, 0);
	ck_assert_uint_eq(token_type(rd.token), ODX_TOKEN_TYPE_ZERO_DATA);
	ck_assert_uint_eq(rd.flags, ODX_OFFLOAD_READ_FLAG_ALL_ZERO_BEYOND_CURRENT_RANGE);
	rd = do_read(eng, src, 700000, 100123, 0);
	ck_assert_uint_eq(token_type(rd.token), ODX_TOKEN_TYPE_ODXFS);
	ck_assert_uint_eq(rd.flags, ODX_OFFLOAD_READ_FLAG_ALL_ZERO_BEYOND_CURRENT_RANGE);
	rd = do_read(eng, src, 0, 1000, 0);
	ck_assert_uint_eq(rd.flags, 0);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* The well-known zero token zeroes any length, needs no offload read. */
START_TEST(test_well_known_zero)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *dst = raw_image(&fake_raw_ops, 100000, 0x77);
	uint8_t tok[ODX_TOKEN_SIZE];
	odx_token_encode_zero(tok);
	ck_assert_uint_eq(do_write(eng, dst, 4096, 65536, tok, 1u << 30), 65536);
	ck_assert_int_eq(seek(dst->fd, 0, SEEK_HOLE), 4096);
	ck_assert_int_eq(seek(dst->fd, 4096, SEEK_DATA), 69632);
	ck_assert_int_eq(odx_offload_release(eng, tok), 0);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

START_TEST(test_transfer_offset)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = do_read(eng, src, 1000, 400000, 0);
	/* Several writes from one token, pieces out of order. */
	ck_assert_uint_eq(do_write(eng, dst, 300000, 100000, rd.token, 300000), 100000);
	ck_assert_uint_eq(do_write(eng, dst, 0, 5000, rd.token, 0), 5000);
	ck_assert_uint_eq(do_write(eng, dst, 5000, 295000, rd.token, 5000), 295000);
	assert_copied(dst->fd, 0, 1000, 400000);
	/* Asking past the token's end writes what remains, flagged short. */
	struct odx_offload_write_result wr;
	ck_assert_int_eq(odx_offload_write(eng, dst, 0, 1u << 20, rd.token, 399000,
					   ODX_OFFLOAD_WRITE_WRITABLE, &wr, NULL), 0);
	ck_assert_uint_eq(wr.length_written, 1000);
	ck_assert_uint_eq(wr.flags, ODX_OFFLOAD_WRITE_FLAG_RANGE_TRUNCATED);
	assert_copied(dst->fd, 0, 400000, 1000);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* ---- refused tokens: one row per error ---------------------------------- */

enum bad_setup {
	BAD_TYPE_RESERVED, BAD_TYPE_OTHER, BAD_ID_LENGTH, BAD_RESERVED_BYTES, BAD_PADDING,
	BAD_MAGIC, BAD_TYPE_EDITED, BAD_LENGTH_EDITED, BAD_FORGED, BAD_OTHER_MOUNT, BAD_EXPIRED,
	BAD_RELEASED, BAD_RANGE_AT_END, BAD_RANGE_PAST, BAD_NOT_WRITABLE, BAD_READONLY,
	BAD_OVERLAP, BAD_INVALIDATED, BAD_ZERO_LENGTH, BAD_FLAGS,
};

static const struct bad_row {
	const char *what;
	enum bad_setup setup;
	int err;        /* expected negative errno */
	const char *msg; /* fragment of the message */
	bool rejected;  /* counted in tokens_rejected */
} bad_rows[] = {
	{ "reserved type", BAD_TYPE_RESERVED, -EPROTO, "malformed", true },
	{ "unknown type", BAD_TYPE_OTHER, -EPROTO, "malformed", true },
	{ "id length", BAD_ID_LENGTH, -EPROTO, "malformed", true },
	{ "reserved bytes", BAD_RESERVED_BYTES, -EPROTO, "malformed", true },
	{ "padding", BAD_PADDING, -EPROTO, "malformed", true },
	{ "magic", BAD_MAGIC, -EPROTO, "malformed", true },
	{ "type edited", BAD_TYPE_EDITED, -ENOKEY, "edited", true },
	{ "transfer length edited", BAD_LENGTH_EDITED, -ENOKEY, "edited", true },
	{ "forged id", BAD_FORGED, -ENOKEY, "unknown", true },
	{ "another mount", BAD_OTHER_MOUNT, -EKEYREJECTED, "another mount", true },
	{ "expired", BAD_EXPIRED, -EKEYEXPIRED, "expired", true },
	{ "released", BAD_RELEASED, -ENOKEY, "unknown", true },
	{ "transfer offset at end", BAD_RANGE_AT_END, -ERANGE, "transfer offset", true },
	{ "transfer offset past", BAD_RANGE_PAST, -ERANGE, "transfer offset", true },
	{ "handle not writable", BAD_NOT_WRITABLE, -EBADF, "not open for writing", false },
	{ "read-only image", BAD_READONLY, -EROFS, "read-only", false },
	{ "overlap", BAD_OVERLAP, -EINVAL, "overlap", false },
	{ "invalidated", BAD_INVALIDATED, -EKEYREVOKED, "invalidated", true },
	{ "zero length", BAD_ZERO_LENGTH, -EINVAL, "bad argument", false },
	{ "unknown flags", BAD_FLAGS, -EINVAL, "bad argument", false },
};

START_TEST(test_bad_tokens)
{
	const struct bad_row *row = &bad_rows[_i];
	struct odx_offload_engine *eng = engine_with(NULL);
	int fd = tmp_fd(tmp_dir());
	fill_pattern(fd, 0, 65536);
	/* A raw source (mutable), also usable as the destination. */
	struct fake script = { .size = 65536, .n = 1, .seg = { { 0, 65536, ODX_SEG_FD, 0 } } };
	struct odx_image *src = fake_image(&fake_raw_ops, fd, &script);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = do_read(eng, src, 0, 65536, 1000);
	uint8_t *t = rd.token;
	uint64_t len = 4096, toff = 0, off = 0;
	uint32_t flags = ODX_OFFLOAD_WRITE_WRITABLE;
	struct odx_image *target = dst;

	switch (row->setup) {
	case BAD_TYPE_RESERVED: t[0] = 0xFF; t[1] = 0xFF; t[2] = 0x00; t[3] = 0x02; break;
	case BAD_TYPE_OTHER: t[3] ^= 1; break;
	case BAD_ID_LENGTH: t[7] += 1; break;
	case BAD_RESERVED_BYTES: t[5] = 1; break;
	case BAD_PADDING: t[ODX_TOKEN_SIZE - 1] = 1; break;
	case BAD_MAGIC: t[8] = 'X'; break;
	case BAD_TYPE_EDITED: t[0] = 0xFF; t[1] = 0xFF; t[2] = 0x00; t[3] = 0x01; break;
	/* A longer transfer length (TokenId 52..59, big-endian): its key is
	 * right, the rest is not what was issued. */
	case BAD_LENGTH_EDITED: t[8 + 52 + 5] += 1; len = 1u << 20; break;
	case BAD_FORGED: t[8 + 20] ^= 0x80; break; /* first byte of the random id */
	case BAD_OTHER_MOUNT: {
		struct odx_offload_config cfg;
		odx_offload_config_init(&cfg);
		cfg.no_modify_hook = true;
		struct odx_offload_engine *other = engine_with(&cfg);
		rd = do_read(other, src, 0, 65536, 0);
		odx_offload_engine_destroy(other);
		break;
	}
	case BAD_EXPIRED: fake_now += 1000; break;
	case BAD_RELEASED: ck_assert_int_eq(odx_offload_release(eng, t), 0); break;
	case BAD_RANGE_AT_END: toff = 65536; break;
	case BAD_RANGE_PAST: toff = 1u << 30; break;
	case BAD_NOT_WRITABLE: flags = 0; break;
	case BAD_READONLY: {
		struct fake none = { 0 };
		target = fake_image(&fake_stream_ops, tmp_fd(tmp_dir()), &none);
		break;
	}
	case BAD_OVERLAP: target = src; off = 2048; break;
	case BAD_INVALIDATED:
		ck_assert_int_eq(odx_image_write(src, "x", 1, 65535), 1);
		break;
	case BAD_ZERO_LENGTH: len = 0; break;
	case BAD_FLAGS: flags |= 0x100; break;
	}

	struct odx_offload_write_result wr = { .length_written = 99 };
	struct odx_error err = { 0 };
	int r = odx_offload_write(eng, target, off, len, t, toff, flags, &wr, &err);
	ck_assert_msg(r == row->err, "%s: got %d, want %d", row->what, r, row->err);
	ck_assert_uint_eq(wr.length_written, 0);
	ck_assert_msg(strstr(err.msg, row->msg), "%s: message '%s'", row->what, err.msg);
	ck_assert_int_eq(err.code, -row->err);
	ck_assert_str_eq(odx_offload_strerror(row->err), row->err == -EINVAL
				 ? odx_offload_strerror(EINVAL) : err.msg);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_rejected, row->rejected ? 1 : 0);
	/* Refused twice the same way (tombstones keep "expired" and
	 * "invalidated" apart from "unknown"). */
	r = odx_offload_write(eng, target, off, len, t, toff, flags, &wr, NULL);
	ck_assert_int_eq(r, row->err);
	if (target != dst && target != src)
		odx_image_unref(target);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Every single-bit change of an issued token is refused, by offload write
 * and by release, with one of the documented token errors; a flip in the
 * transfer length (TokenId 52..59) as unknown, though its key is right.
 * The token itself still works afterwards.  _i: 0 an ODXFS token, 1 a
 * ZERO_DATA token. */
START_TEST(test_every_bit_flip)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = _i ? do_read(eng, src, 20000, 100000, 0)
					       : do_read(eng, src, 0, 65536, 0);
	ck_assert_uint_eq(token_type(rd.token), _i ? ODX_TOKEN_TYPE_ZERO_DATA
						   : ODX_TOKEN_TYPE_ODXFS);
	unsigned counts[3] = { 0 }; /* EPROTO, ENOKEY, EKEYREJECTED */
	for (unsigned bit = 0; bit < 8 * ODX_TOKEN_SIZE; bit++) {
		uint8_t t[ODX_TOKEN_SIZE];
		memcpy(t, rd.token, sizeof t);
		t[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		struct odx_offload_write_result wr = { .length_written = 99 };
		int w = odx_offload_write(eng, dst, 0, 4096, t, 0, ODX_OFFLOAD_WRITE_WRITABLE,
					  &wr, NULL);
		int r = odx_offload_release(eng, t);
		ck_assert_msg(w == r, "bit %u: write %d, release %d", bit, w, r);
		ck_assert_msg(w == -EPROTO || w == -ENOKEY || w == -EKEYREJECTED,
			      "bit %u (byte %u): accepted or refused with %d", bit, bit / 8, w);
		ck_assert_uint_eq(wr.length_written, 0);
		unsigned byte = bit / 8;
		if (byte >= 8 + 52 && byte < 8 + 60)
			ck_assert_msg(w == -ENOKEY, "length bit %u: %d", bit, w);
		counts[w == -EPROTO ? 0 : w == -ENOKEY ? 1 : 2]++;
	}
	/* Header, magic and padding: malformed; mount id: another mount's;
	 * key and transfer length: unknown. */
	ck_assert_uint_eq(counts[2], 8 * ODX_TOKEN_MOUNT_ID_SIZE);
	ck_assert_uint_eq(counts[1], 8 * (ODX_TOKEN_KEY_SIZE + 8));
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_rejected, 2 * 8 * ODX_TOKEN_SIZE);
	ck_assert_uint_eq(s.tokens_used, 0);
	ck_assert_uint_eq(s.tokens_live, 1);
	ck_assert_uint_eq(do_write(eng, dst, 0, 4096, rd.token, 0), 4096);
	assert_copied(dst->fd, 0, _i ? 20000 : 0, 4096);
	ck_assert_int_eq(odx_offload_release(eng, rd.token), 0);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* The errors of release follow the same table. */
START_TEST(test_release_errors)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_offload_read_result rd = do_read(eng, src, 0, 4096, 0);
	ck_assert_int_eq(odx_offload_release(eng, rd.token), 0);
	ck_assert_int_eq(odx_offload_release(eng, rd.token), -ENOKEY);
	rd.token[4] = 1;
	ck_assert_int_eq(odx_offload_release(eng, rd.token), -EPROTO);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* ---- time to live ------------------------------------------------------- */

START_TEST(test_ttl)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	fake_now = 1000;
	struct odx_offload_read_result a = do_read(eng, src, 0, 4096, 500);
	struct odx_offload_read_result b = do_read(eng, src, 0, 4096, 0); /* default */
	fake_now = 1499;
	do_write(eng, dst, 0, 4096, a.token, 0);
	fake_now = 1500;
	struct odx_offload_write_result wr;
	ck_assert_int_eq(odx_offload_write(eng, dst, 0, 4096, a.token, 0,
					   ODX_OFFLOAD_WRITE_WRITABLE, &wr, NULL), -EKEYEXPIRED);
	fake_now = 1000 + ODX_OFFLOAD_DEFAULT_TTL_MS - 1;
	do_write(eng, dst, 0, 4096, b.token, 0);
	fake_now = 1000 + ODX_OFFLOAD_DEFAULT_TTL_MS;
	ck_assert_int_eq(odx_offload_write(eng, dst, 0, 4096, b.token, 0,
					   ODX_OFFLOAD_WRITE_WRITABLE, &wr, NULL), -EKEYEXPIRED);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_expired, 2);
	ck_assert_uint_eq(s.tokens_live, 0);
	ck_assert_uint_eq(s.token_bytes, 0);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Asked-for times to live are cut to max_ttl_ms, and so is a longer
 * default (token_ttl_ms); shorter ones are kept. */
START_TEST(test_ttl_max)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_ttl_ms = 2000;
	cfg.token_ttl_ms = 5000;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	fake_now = 0;
	struct odx_offload_read_result a = do_read(eng, src, 0, 4096, UINT32_MAX);
	struct odx_offload_read_result d = do_read(eng, src, 0, 4096, 0);
	struct odx_offload_read_result b = do_read(eng, src, 0, 4096, 1999);
	fake_now = 1999;
	ck_assert_int_eq(odx_offload_release(eng, b.token), -EKEYEXPIRED);
	ck_assert_int_eq(odx_offload_release(eng, a.token), 0);
	fake_now = 2000;
	ck_assert_int_eq(odx_offload_release(eng, d.token), -EKEYEXPIRED);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Expired tokens are swept when tokens are issued, without being used. */
START_TEST(test_lazy_sweep)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	fake_now = 0;
	for (int i = 0; i < 10; i++)
		do_read(eng, src, 0, 4096, 100);
	do_read(eng, src, 0, 4096, 10000);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_live, 11);
	fake_now = 100;
	do_read(eng, src, 0, 4096, 10000);
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_live, 2);
	ck_assert_uint_eq(s.tokens_expired, 10);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* ---- caps --------------------------------------------------------------- */

START_TEST(test_cap_count)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_tokens = 3;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	fake_now = 0;
	struct odx_offload_read_result a = do_read(eng, src, 0, 4096, 100);
	do_read(eng, src, 0, 4096, 0);
	do_read(eng, src, 0, 4096, 0);
	struct odx_offload_read_result rd;
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_read(eng, src, 0, 0, 4096, 0, 0, &rd, &err), -ENFILE);
	ck_assert_ptr_nonnull(strstr(err.msg, "too many"));
	ck_assert_int_eq(odx_offload_release(eng, a.token), 0);
	do_read(eng, src, 0, 4096, 100);
	ck_assert_int_eq(odx_offload_read(eng, src, 0, 0, 4096, 0, 0, &rd, NULL), -ENFILE);
	/* Expired tokens make room. */
	fake_now = 100;
	do_read(eng, src, 0, 4096, 0);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Memory of the record of a token on the whole of src (a probe engine). */
static uint64_t whole_token_bytes(struct odx_image *src)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.no_modify_hook = true;
	struct odx_offload_engine *probe = engine_with(&cfg);
	do_read(probe, src, 0, SRC_SIZE, 0);
	struct odx_offload_stats s;
	odx_offload_get_stats(probe, &s);
	odx_offload_engine_destroy(probe);
	return s.token_bytes;
}

START_TEST(test_cap_memory)
{
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	uint64_t one = whole_token_bytes(src);

	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_token_bytes = 2 * one + one / 2;
	cfg.no_modify_hook = true;
	struct odx_offload_engine *eng = engine_with(&cfg);
	fake_now = 0;
	do_read(eng, src, 0, SRC_SIZE, 100);
	do_read(eng, src, 0, SRC_SIZE, 0);
	struct odx_offload_read_result rd;
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_read(eng, src, 0, 0, SRC_SIZE, 0, 0, &rd, &err), -ENOBUFS);
	ck_assert_ptr_nonnull(strstr(err.msg, "memory"));
	fake_now = 100;
	do_read(eng, src, 0, SRC_SIZE, 0);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* An engine with these count caps (0: the default). */
static struct odx_offload_engine *engine_count_caps(uint32_t max_tokens, uint32_t per_owner)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_tokens = max_tokens;
	cfg.max_tokens_per_owner = per_owner;
	return engine_with(&cfg);
}

/* Per-owner count caps: an owner at its cap gets EMFILE while another
 * still gets tokens; a release or an expiry makes room again; an owner's
 * entry goes with its last token.  The mount's cap comes first. */
START_TEST(test_cap_per_owner)
{
	struct odx_offload_engine *eng = engine_count_caps(7, 3);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	const uint32_t A = 1000, B = 2000, C = 3000;
	fake_now = 0;
	struct odx_offload_read_result a[3], rd;
	for (int i = 0; i < 3; i++)
		a[i] = do_read_as(eng, src, A, 0, 4096, i == 2 ? 100 : 0);
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_read(eng, src, A, 0, 4096, 0, 0, &rd, &err), -EMFILE);
	ck_assert_ptr_nonnull(strstr(err.msg, "for this user"));
	ck_assert_uint_eq(rd.transfer_length, 0);
	for (int i = 0; i < 3; i++)
		do_read_as(eng, src, B, 0, 4096, 0);
	ck_assert_int_eq(odx_offload_read(eng, src, B, 0, 4096, 0, 0, &rd, NULL), -EMFILE);
	ck_assert_uint_eq(stats_of(eng).tokens_live, 6);
	ck_assert_uint_eq(stats_of(eng).token_owners, 2);
	/* A release makes room for A. */
	ck_assert_int_eq(odx_offload_release(eng, a[0].token), 0);
	a[0] = do_read_as(eng, src, A, 0, 4096, 0);
	/* Seven tokens: the mount's cap, checked before C's own. */
	do_read_as(eng, src, C, 0, 4096, 0);
	ck_assert_int_eq(odx_offload_read(eng, src, C, 0, 4096, 0, 0, &rd, NULL), -ENFILE);
	ck_assert_int_eq(odx_offload_read(eng, src, A, 0, 4096, 0, 0, &rd, NULL), -ENFILE);
	/* A's token with a short life expires: room for A (and the sweep
	 * happens because A is at its cap). */
	fake_now = 100;
	do_read_as(eng, src, A, 0, 4096, 0);
	ck_assert_int_eq(odx_offload_read(eng, src, A, 0, 4096, 0, 0, &rd, NULL), -ENFILE);
	ck_assert_uint_eq(stats_of(eng).tokens_expired, 1);
	ck_assert_uint_eq(stats_of(eng).token_owners, 3);
	/* Owners leave with their last token. */
	ck_assert_int_eq(odx_offload_release(eng, a[0].token), 0);
	ck_assert_int_eq(odx_offload_release(eng, a[1].token), 0);
	ck_assert_uint_eq(stats_of(eng).token_owners, 3);
	fake_now = 100 + ODX_OFFLOAD_DEFAULT_TTL_MS;
	do_read_as(eng, src, C, 0, 4096, 0); /* sweeps all the others */
	struct odx_offload_stats s = stats_of(eng);
	ck_assert_uint_eq(s.tokens_live + s.token_owners, 2); /* C's, and C */
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Per-owner memory caps: EDQUOT for the owner past it, others go on. */
START_TEST(test_cap_per_owner_memory)
{
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	uint64_t one = whole_token_bytes(src);

	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_token_bytes_per_owner = one + one / 2;
	cfg.no_modify_hook = true;
	struct odx_offload_engine *eng = engine_with(&cfg);
	struct odx_offload_read_result a = do_read_as(eng, src, 1000, 0, SRC_SIZE, 0), rd;
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_read(eng, src, 1000, 0, SRC_SIZE, 0, 0, &rd, &err),
			 -EDQUOT);
	ck_assert_ptr_nonnull(strstr(err.msg, "this user's"));
	ck_assert_str_eq(odx_offload_strerror(EDQUOT), err.msg);
	do_read_as(eng, src, 2000, 0, SRC_SIZE, 0);
	ck_assert_int_eq(odx_offload_release(eng, a.token), 0);
	do_read_as(eng, src, 1000, 0, SRC_SIZE, 0);
	ck_assert_uint_eq(stats_of(eng).token_bytes, 2 * one);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* The per-owner caps default to a quarter of the mount's, but to at least
 * ODX_OFFLOAD_OWNER_MIN_TOKENS (or the mount's cap when smaller). */
START_TEST(test_cap_per_owner_default)
{
	static const struct { uint32_t max_tokens, per_owner; int past; } rows[] = {
		{ 200, 50, -EMFILE },   /* a quarter */
		{ 40, 16, -EMFILE },    /* the floor */
		{ 8, 8, -ENFILE },      /* the mount's own cap */
	};
	struct odx_offload_engine *eng = engine_count_caps(rows[_i].max_tokens, 0);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	for (uint32_t i = 0; i < rows[_i].per_owner; i++)
		do_read_as(eng, src, 1000, 0, 4096, 0);
	struct odx_offload_read_result rd;
	ck_assert_int_eq(odx_offload_read(eng, src, 1000, 0, 4096, 0, 0, &rd, NULL),
			 rows[_i].past);
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* ---- snapshot semantics ------------------------------------------------- */

/* An immutable source: the token stays valid over time (within its TTL)
 * and is not affected by modification reports. */
START_TEST(test_snapshot_immutable)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	fake_now = 0;
	struct odx_offload_read_result rd = do_read(eng, src, 0, SRC_SIZE, 3600000);
	odx_image_modified(src, 0, SRC_SIZE);
	fake_now = 3599999;
	ck_assert_uint_eq(do_write(eng, dst, 0, SRC_SIZE, rd.token, 0), SRC_SIZE);
	assert_copied(dst->fd, 0, 0, SRC_SIZE);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

enum raw_change { CH_WRITE_IN, CH_WRITE_OUT, CH_TRUNCATE_IN, CH_TRUNCATE_OUT, CH_PUNCH_IN,
		  CH_PUNCH_OUT, CH_OFFLOAD_IN, CH_OFFLOAD_OUT, CH_HOOK_OTHER_ENGINE };

static const struct raw_change_row {
	const char *what;
	enum raw_change change;
	bool invalidates;
} raw_rows[] = {
	{ "write inside", CH_WRITE_IN, true },
	{ "write outside", CH_WRITE_OUT, false },
	{ "truncate into the range", CH_TRUNCATE_IN, true },
	{ "truncate past the range", CH_TRUNCATE_OUT, false },
	{ "punch inside", CH_PUNCH_IN, true },
	{ "punch outside", CH_PUNCH_OUT, false },
	{ "offload write inside", CH_OFFLOAD_IN, true },
	{ "offload write outside", CH_OFFLOAD_OUT, false },
	{ "hook of an unrelated engine", CH_HOOK_OTHER_ENGINE, false },
};

/* A raw (mutable) source: changes of its range through the mount
 * invalidate the token; changes elsewhere do not. */
START_TEST(test_snapshot_raw)
{
	const struct raw_change_row *row = &raw_rows[_i];
	struct odx_offload_engine *eng = engine_with(NULL);
	int fd = tmp_fd(tmp_dir());
	fill_pattern(fd, 0, 262144);
	struct fake script = { .size = 262144, .n = 1, .seg = { { 0, 262144, ODX_SEG_FD, 0 } } };
	struct odx_image *src = fake_image(&fake_raw_ops, fd, &script);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	/* The token covers [65536, 131072). */
	struct odx_offload_read_result rd = do_read(eng, src, 65536, 65536, 0);
	uint8_t zero[ODX_TOKEN_SIZE];
	odx_token_encode_zero(zero);

	switch (row->change) {
	case CH_WRITE_IN: odx_image_write(src, "x", 1, 131071); break;
	case CH_WRITE_OUT: odx_image_write(src, "x", 1, 131072); break;
	case CH_TRUNCATE_IN: odx_image_truncate(src, 100000); break;
	case CH_TRUNCATE_OUT: odx_image_truncate(src, 200000); break;
	case CH_PUNCH_IN:
		ck_assert_int_eq(odx_image_fallocate(src, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						     61440, 8192), 0);
		break;
	case CH_PUNCH_OUT:
		ck_assert_int_eq(odx_image_fallocate(src, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						     0, 65536), 0);
		break;
	case CH_OFFLOAD_IN: do_write(eng, src, 100000, 10, zero, 0); break;
	case CH_OFFLOAD_OUT: do_write(eng, src, 200000, 10, zero, 0); break;
	case CH_HOOK_OTHER_ENGINE: {
		struct odx_offload_config cfg;
		odx_offload_config_init(&cfg);
		cfg.no_modify_hook = true;
		struct odx_offload_engine *other = engine_with(&cfg);
		odx_offload_modify_hook(other, src, 0, UINT64_MAX);
		odx_offload_engine_destroy(other);
		break;
	}
	}
	struct odx_offload_write_result wr;
	int r = odx_offload_write(eng, dst, 0, 65536, rd.token, 0, ODX_OFFLOAD_WRITE_WRITABLE,
				  &wr, NULL);
	ck_assert_msg(r == (row->invalidates ? -EKEYREVOKED : 0), "%s: %d", row->what, r);
	struct odx_offload_stats s;
	odx_offload_get_stats(eng, &s);
	ck_assert_uint_eq(s.tokens_invalidated, row->invalidates ? 1 : 0);
	if (!row->invalidates) {
		uint8_t a[65536], b[65536];
		ck_assert_int_eq(pread(dst->fd, a, sizeof a, 0), (ssize_t)sizeof a);
		for (size_t i = 0; i < sizeof b; i++)
			b[i] = pat(65536 + i);
		ck_assert(memcmp(a, b, sizeof a) == 0);
	}
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* The same file as source and destination: fine when the ranges are
 * apart (the token stays valid), refused when they overlap. */
START_TEST(test_same_file)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	int fd = tmp_fd(tmp_dir());
	fill_pattern(fd, 0, 65536);
	struct fake script = { .size = 65536, .n = 1, .seg = { { 0, 65536, ODX_SEG_FD, 0 } } };
	struct odx_image *img = fake_image(&fake_raw_ops, fd, &script);
	struct odx_offload_read_result rd = do_read(eng, img, 0, 16384, 0);
	ck_assert_uint_eq(do_write(eng, img, 16384, 16384, rd.token, 0), 16384);
	ck_assert_uint_eq(do_write(eng, img, 65536, 16384, rd.token, 0), 16384);
	uint8_t a[16384];
	ck_assert_int_eq(pread(fd, a, sizeof a, 65536), (ssize_t)sizeof a);
	for (size_t i = 0; i < sizeof a; i++)
		ck_assert_uint_eq(a[i], pat(i));
	struct odx_offload_write_result wr;
	ck_assert_int_eq(odx_offload_write(eng, img, 16383, 16384, rd.token, 0,
					   ODX_OFFLOAD_WRITE_WRITABLE, &wr, NULL), -EINVAL);
	/* Non-overlapping thanks to the transfer offset. */
	ck_assert_uint_eq(do_write(eng, img, 8192, 8192, rd.token, 0) , 8192);
	odx_image_unref(img);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* A corrupt extent: the token stops before it; starting in it is EIO. */
START_TEST(test_bad_source)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	int fd = tmp_fd(tmp_dir());
	fill_pattern(fd, 0, 8192);
	struct fake script = {
		.size = 12288, .n = 2,
		.seg = { { 0, 8192, ODX_SEG_FD, 0 }, { 8192, 4096, ODX_SEG_BAD, 0 } },
	};
	struct odx_image *src = fake_image(&fake_stream_ops, fd, &script);
	struct odx_offload_read_result rd = do_read(eng, src, 0, 12288, 0);
	ck_assert_uint_eq(rd.transfer_length, 8192);
	ck_assert_uint_eq(rd.flags, ODX_OFFLOAD_READ_FLAG_CANNOT_OFFLOAD_BEYOND_CURRENT_RANGE);
	struct odx_error err = { 0 };
	ck_assert_int_eq(odx_offload_read(eng, src, 0, 8192, 4096, 0, 0, &rd, &err), -EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "unreadable"));
	odx_image_unref(src);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* A write that grows the destination sizes it to the write's end first
 * (apply.c); one that stops early (here the source turns out shorter than
 * its map) leaves the file at the end of what it wrote, holes included,
 * not at the end it was going to reach. */
START_TEST(test_failed_write_size)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	int fd = tmp_fd(tmp_dir());
	fill_pattern(fd, 0, 1 << 20);
	struct fake script = {
		.size = 3 << 20, .n = 3,
		.seg = { { 0, 1 << 20, ODX_SEG_FD, 0 }, { 1 << 20, 1 << 20, ODX_SEG_HOLE, 0 },
			 { 2 << 20, 1 << 20, ODX_SEG_DECODE, 1ull << 40 } },
	};
	struct odx_image *src = fake_image(&fake_stream_ops, fd, &script);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);
	struct odx_offload_read_result rd = do_read(eng, src, 0, 3 << 20, 0);
	ck_assert_uint_eq(rd.transfer_length, 3 << 20);
	struct odx_offload_write_result wr;
	struct odx_error err = { 0 };
	int r = odx_offload_write(eng, dst, 0, 3 << 20, rd.token, 0, ODX_OFFLOAD_WRITE_WRITABLE,
				  &wr, &err);
	/* Either the error, or the part written: never more than was written. */
	ck_assert(r < 0 || wr.length_written == 2u << 20);
	struct stat st;
	ck_assert_int_eq(fstat(dst->fd, &st), 0);
	ck_assert_int_eq(st.st_size, 2 << 20);
	uint8_t *b = malloc(1 << 20);
	ck_assert_int_eq(pread(dst->fd, b, 1 << 20, 0), 1 << 20);
	for (uint64_t i = 0; i < (1 << 20); i++)
		ck_assert_uint_eq(b[i], pat(i));
	free(b);
	ck_assert_int_eq(seek(dst->fd, 1 << 20, SEEK_DATA), -ENXIO);
	odx_offload_release(eng, rd.token);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

/* Tokens from different engines never collide, and each engine's mount
 * id is random. */
START_TEST(test_mount_ids)
{
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.no_modify_hook = true;
	struct odx_offload_engine *a = engine_with(&cfg);
	struct odx_offload_engine *b = engine_with(&cfg);
	ck_assert(memcmp(odx_offload_mount_id(a), odx_offload_mount_id(b),
			 ODX_TOKEN_MOUNT_ID_SIZE) != 0);
	odx_offload_engine_destroy(a);
	odx_offload_engine_destroy(b);
}
END_TEST

/* ---- ioctl glue ---------------------------------------------------------- */

/* The daemon's side of the ioctls: size checks, the engine underneath,
 * output fields filled (or cleared on failure). */
START_TEST(test_ioctl_glue)
{
	struct odx_offload_engine *eng = engine_with(NULL);
	struct odx_image *src = src_image(tmp_dir(), &fake_stream_ops);
	struct odx_image *dst = raw_image(&fake_raw_ops, 0, 0);

	struct odx_ioc_offload_read rd = { .size = sizeof rd - 1, .file_offset = 0,
					   .copy_length = 20000, .transfer_length = 7 };
	ck_assert_int_eq(odx_offload_ioc_read(eng, src, 0, &rd, NULL), -EINVAL);
	ck_assert_uint_eq(rd.transfer_length, 0);
	rd.size = sizeof rd;
	ck_assert_int_eq(odx_offload_ioc_read(eng, src, 0, &rd, NULL), 0);
	ck_assert_uint_eq(rd.transfer_length, 20000);
	ck_assert_uint_eq(token_type(rd.token), ODX_TOKEN_TYPE_ODXFS);

	struct odx_ioc_offload_write wr = { .size = sizeof wr, .file_offset = 100,
					    .copy_length = 20000, .transfer_offset = 0 };
	memcpy(wr.token, rd.token, ODX_TOKEN_SIZE);
	ck_assert_int_eq(odx_offload_ioc_write(eng, dst, false, &wr, NULL), -EBADF);
	wr.flags = 1;
	ck_assert_int_eq(odx_offload_ioc_write(eng, dst, true, &wr, NULL), -EINVAL);
	wr.flags = 0;
	ck_assert_int_eq(odx_offload_ioc_write(eng, dst, true, &wr, NULL), 0);
	ck_assert_uint_eq(wr.length_written, 20000);
	ck_assert_uint_eq(wr.out_flags, 0);
	assert_copied(dst->fd, 100, 0, 20000);

	struct odx_ioc_stats st = { .size = sizeof st };
	ck_assert_int_eq(odx_offload_ioc_stats(eng, &st), 0);
	ck_assert_uint_eq(st.size, sizeof st);
	ck_assert_uint_eq(st.tokens_issued, 1);
	ck_assert_uint_eq(st.tokens_used, 1);
	ck_assert_uint_eq(st.tokens_live, 1);
	ck_assert_uint_eq(st.bytes_kernel, 10000);
	ck_assert_uint_eq(st.bytes_holes, 10000);
	st.size = 8;
	ck_assert_int_eq(odx_offload_ioc_stats(eng, &st), -EINVAL);

	struct odx_ioc_release rel = { .size = sizeof rel };
	memcpy(rel.token, rd.token, ODX_TOKEN_SIZE);
	ck_assert_int_eq(odx_offload_ioc_release(eng, &rel), 0);
	ck_assert_int_eq(odx_offload_ioc_release(eng, &rel), -ENOKEY);
	rel.size = 0;
	ck_assert_int_eq(odx_offload_ioc_release(eng, &rel), -EINVAL);
	odx_image_unref(src);
	odx_image_unref(dst);
	odx_offload_engine_destroy(eng);
}
END_TEST

static Suite *offload_suite(void)
{
	Suite *s = suite_create("offload");
	TCase *tc = tcase_create("copy");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_copy_whole_sparse);
	tcase_add_test(tc, test_copy_over_data);
	tcase_add_loop_test(tc, test_copy_unaligned_and_generic, 0, 2);
	tcase_add_test(tc, test_counters_kernel_vs_buffer);
	tcase_add_test(tc, test_exdev_fallback);
	tcase_add_test(tc, test_same_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("tokens");
	tcase_add_test(tc, test_partial_length_cap);
	tcase_add_test(tc, test_partial_extent_cap);
	tcase_add_test(tc, test_partial_eof);
	tcase_add_test(tc, test_zero_token);
	tcase_add_test(tc, test_well_known_zero);
	tcase_add_test(tc, test_transfer_offset);
	tcase_add_test(tc, test_bad_source);
	tcase_add_test(tc, test_failed_write_size);
	tcase_add_test(tc, test_mount_ids);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_bad_tokens, 0, (int)(sizeof bad_rows / sizeof bad_rows[0]));
	tcase_add_test(tc, test_release_errors);
	tcase_add_loop_test(tc, test_every_bit_flip, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("ioctl");
	tcase_add_test(tc, test_ioctl_glue);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifetime");
	tcase_add_test(tc, test_ttl);
	tcase_add_test(tc, test_ttl_max);
	tcase_add_test(tc, test_lazy_sweep);
	tcase_add_test(tc, test_cap_count);
	tcase_add_test(tc, test_cap_memory);
	tcase_add_test(tc, test_cap_per_owner);
	tcase_add_test(tc, test_cap_per_owner_memory);
	tcase_add_loop_test(tc, test_cap_per_owner_default, 0, 3);
	tcase_add_test(tc, test_snapshot_immutable);
	tcase_add_loop_test(tc, test_snapshot_raw, 0, (int)(sizeof raw_rows / sizeof raw_rows[0]));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(offload_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
