/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of the stream reader: golden streams, every bad input of the
 * format, compressed chunks, trailers, torn and corrupt streams. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "golden.h"
#include "odxfs/stream.h"

static char pattern[1 << 16];

static void fill_pattern(void)
{
	for (size_t i = 0; i < sizeof pattern; i++)
		pattern[i] = (char)(i * 131 + (i >> 8) * 7 + 1);
}

/* ---- bad inputs: each row builds a file, opens it, expects errno, a
 * message fragment and the byte offset ---- */

struct bad_row {
	const char *name;
	void (*build)(struct gbuf *b);
	int code;
	const char *fragment;
	uint64_t offset;
};

static void b_empty(struct gbuf *b) { (void)b; }
static void b_not_stream(struct gbuf *b) { g_put(b, "hello, this is a text file and no stream at all\n", 48); }
static void b_trunc_header(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "false", "lz4");
	g_put(b, "data 00000000000", 15);
}
static void b_trunc_payload(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 4096, "false", "lz4");
	g_hdr(b, "data", 0, 4096);
	g_put(b, pattern, 100);
}
static void b_wrong_kind(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "false", "lz4");
	g_hdr(b, "dat4", 0, 4096);
	g_hdr(b, "stop", 0, 0);
}
static void b_non_hex(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "false", "lz4");
	g_put(b, "zero 00000000000g0000 0000000000001000\r\n", 40);
	g_hdr(b, "stop", 0, 0);
}
static void b_missing_crlf(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 16, "false", "lz4");
	g_hdr(b, "data", 0, 16);
	g_put(b, pattern, 16);
	g_put(b, "XX", 2);
	g_hdr(b, "stop", 0, 0);
}
static void b_bad_json(struct gbuf *b)
{
	g_meta(b, "{\"virtualSize\": 1048576, \"dataSize\": ");
	g_hdr(b, "stop", 0, 0);
}
static void b_no_json(struct gbuf *b)
{
	g_hdr(b, "meta", 0, 0);
	g_put(b, "\r\n", 2);
	g_hdr(b, "stop", 0, 0);
}
static void b_no_vsize(struct gbuf *b)
{
	g_meta(b, "{\"dataSize\": 0}");
	g_hdr(b, "stop", 0, 0);
}
static void b_datasize(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 999, "false", "lz4");
	g_data(b, 0, pattern, 100);
	g_hdr(b, "stop", 0, 0);
}
static void lz4_frame_stream(struct gbuf *b, int entries_delta, int size_delta)
{
	void *c;
	size_t n = g_lz4(pattern, 4096, &c);
	g_meta_std(b, 1 << 20, 4096, "2", "lz4");
	g_hdr(b, "data", 0, 4096);
	g_put(b, c, n);
	g_put(b, "\r\n", 2);
	g_hdr(b, "stop", 0, 0);
	char t[128];
	snprintf(t, sizeof t, "[%zu%s]", n + (size_t)size_delta,
		 entries_delta > 0 ? ", 77" : "");
	if (entries_delta < 0)
		snprintf(t, sizeof t, "[]");
	g_trailer(b, t);
	free(c);
}
static void b_trailer_more(struct gbuf *b) { lz4_frame_stream(b, 1, 0); }
static void b_trailer_fewer(struct gbuf *b) { lz4_frame_stream(b, -1, 0); }
static void b_trailer_size(struct gbuf *b) { lz4_frame_stream(b, 0, -5); }
static void b_beyond(struct gbuf *b)
{
	g_meta_std(b, 4096, 0, "false", "lz4");
	g_hdr(b, "zero", 0, 4096);
	g_hdr(b, "zero", 4096, 1);
	g_hdr(b, "stop", 0, 0);
}
static void b_sum_overflow(struct gbuf *b)
{
	g_meta_std(b, INT64_MAX, 0, "false", "lz4");
	for (int i = 0; i < 3; i++)
		g_hdr(b, "zero", 0, INT64_MAX);
	g_hdr(b, "stop", 0, 0);
}
static void b_start_overflow(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "false", "lz4");
	g_hdr(b, "zero", UINT64_MAX - 10, 100);
	g_hdr(b, "stop", 0, 0);
}
static void b_vsize_big(struct gbuf *b)
{
	g_meta(b, "{\"virtualSize\": 9223372036854775809, \"dataSize\": 0}");
	g_hdr(b, "stop", 0, 0);
}
static void b_vsize_huge(struct gbuf *b)
{
	g_meta(b, "{\"virtualSize\": 1e30, \"dataSize\": 0}");
	g_hdr(b, "stop", 0, 0);
}
static void b_no_stop(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "false", "lz4");
	g_hdr(b, "zero", 0, 4096);
}
static void b_no_trailer(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "2", "lz4");
	g_hdr(b, "zero", 0, 4096);
	g_hdr(b, "stop", 0, 0);
}
static void b_meta_trailing(struct gbuf *b)
{
	/* the meta length covers the JSON plus a whole data frame: cJSON
	 * would stop after the object, and that frame would vanish */
	g_meta(b, "{\"virtualSize\": 1048576, \"dataSize\": 16}\r\n"
		  "data 0000000000000000 0000000000000010\r\n0123456789abcdef");
	g_hdr(b, "stop", 0, 0);
}
static void b_meta_trailing2(struct gbuf *b)
{
	g_meta(b, "{\"virtualSize\": 1048576, \"dataSize\": 0} {}");
	g_hdr(b, "stop", 0, 0);
}
static void b_meta_leading_zero(struct gbuf *b)
{
	g_meta(b, "{\"virtualSize\": 04096, \"dataSize\": 0}"); /* cJSON reads 4096 */
	g_hdr(b, "stop", 0, 0);
}
static void b_unknown_codec(struct gbuf *b)
{
	g_meta_std(b, 1 << 20, 0, "2", "zstd");
	g_hdr(b, "stop", 0, 0);
}
static void b_chunk_too_big(struct gbuf *b)
{
	/* one chunk claiming 64 MiB: over the 32 MiB limit, never allocated */
	void *c;
	size_t n = g_lz4(pattern, 4096, &c);
	g_meta_std(b, 128 << 20, 64 << 20, "2", "lz4");
	g_hdr(b, "data", 0, 64 << 20);
	g_put(b, c, n);
	g_put(b, "\r\n", 2);
	g_hdr(b, "stop", 0, 0);
	char t[64];
	snprintf(t, sizeof t, "[%zu]", n);
	g_trailer(b, t);
	free(c);
}
static void b_trailer_number(struct gbuf *b)
{
	void *c;
	size_t n = g_lz4(pattern, 4096, &c);
	g_meta_std(b, 1 << 20, 4096, "2", "lz4");
	g_hdr(b, "data", 0, 4096);
	g_put(b, c, n);
	g_put(b, "\r\n", 2);
	g_hdr(b, "stop", 0, 0);
	char t[64];
	snprintf(t, sizeof t, "[%zue0]", n); /* json.dumps never writes 1e0 */
	g_trailer(b, t);
	free(c);
}
static void b_nested_key(struct gbuf *b)
{
	/* a size of 2^53 or more is read from the text: the top-level key,
	 * not the nested one (fuzz/regressions/meta-big-size-read-from-nested-key) */
	g_meta(b, "{\"virtualSize\": 1048576, \"x\": {\"dataSize\": 0}, \"dataSize\": 9007199254740993}");
	g_hdr(b, "stop", 0, 0);
}
static void b_chunk_past_end(struct gbuf *b)
{
	/* complete (stop, trailer, comp) but the entry runs past the end:
	 * damage, not a torn tail (fuzz/regressions/trailer-chunk-past-eof-served-as-torn) */
	g_meta_std(b, 1 << 20, 4096, "2", "lz4");
	g_hdr(b, "data", 0, 4096);
	g_put(b, "xxxx\r\n", 6);
	g_hdr(b, "stop", 0, 0);
	g_put(b, "[3370]\r\n", 8);
	g_hdr(b, "comp", 0, 6);
}

/* Offsets below: meta frame = 40 + JSON + 2.  Computed at run time for
 * rows whose offset depends on it (offset UINT64_MAX means "first byte
 * after the meta frame", UINT64_MAX-1 "after meta plus one header"). */
#define AFTER_META UINT64_MAX
#define AFTER_META_1 (UINT64_MAX - 1)
#define AFTER_META_PAYLOAD16 (UINT64_MAX - 2) /* after a header and 16 bytes */
#define AFTER_META_2 (UINT64_MAX - 3)         /* after meta plus two headers */
#define AT_END (UINT64_MAX - 4)               /* the end of the file */

static const struct bad_row bad_rows[] = {
	{"zero-length file", b_empty, EUCLEAN, "empty file", 0},
	{"not a stream", b_not_stream, EUCLEAN, "not a stream", 0},
	{"truncated header", b_trunc_header, ENODATA, "truncated frame header", AFTER_META},
	{"truncated payload", b_trunc_payload, ENODATA, "truncated payload", AFTER_META},
	{"wrong kind word", b_wrong_kind, EUCLEAN, "expected a frame kind", AFTER_META},
	{"non-hex digits", b_non_hex, EUCLEAN, "16 hex digits", AFTER_META},
	{"missing CRLF after payload", b_missing_crlf, EUCLEAN, "expected CRLF after the payload",
	 AFTER_META_PAYLOAD16},
	{"invalid meta JSON", b_bad_json, EUCLEAN, "invalid meta JSON", 40 + 36},
	{"missing meta JSON", b_no_json, EUCLEAN, "missing meta JSON", 22},
	{"meta without virtualSize", b_no_vsize, EUCLEAN, "no virtualSize", 40},
	{"dataSize mismatch", b_datasize, EUCLEAN, "dataSize is 999", 40},
	{"trailer has more entries", b_trailer_more, EUCLEAN, "more entries than the 1 data frames", 0},
	{"trailer has fewer entries", b_trailer_fewer, EUCLEAN, "has no trailer entry", AFTER_META},
	{"trailer size wrong", b_trailer_size, EUCLEAN, "expected CRLF after the payload", 0},
	{"frame beyond virtualSize", b_beyond, EUCLEAN, "beyond virtualSize", AFTER_META_1},
	{"lengths sum overflows", b_sum_overflow, EOVERFLOW, "overflows 64 bits", AFTER_META_2},
	{"start + length overflows", b_start_overflow, EOVERFLOW, "overflows 64 bits", AFTER_META},
	{"virtualSize over 2^63", b_vsize_big, EOVERFLOW, "smaller than 2^63", 40},
	{"virtualSize far over 2^64", b_vsize_huge, EOVERFLOW, "smaller than 2^63", 40},
	{"missing stop frame", b_no_stop, ENODATA, "missing stop frame", AT_END},
	{"bytes after the meta JSON", b_meta_trailing, EUCLEAN, "invalid meta JSON", 0},
	{"bytes after the meta JSON object", b_meta_trailing2, EUCLEAN, "unexpected bytes after the object", 0},
	{"number with a leading zero", b_meta_leading_zero, EUCLEAN, "leading zero", 40 + 16},
	{"unknown compressionMethod", b_unknown_codec, ENOTSUP, "\"zstd\" is not supported", 40},
	{"chunk over 32 MiB", b_chunk_too_big, EUCLEAN, "chunks of at most 32 MiB", AFTER_META},
	{"size from a nested key", b_nested_key, EUCLEAN, "dataSize is 9007199254740993", 40},
	{"chunk past the end of a complete stream", b_chunk_past_end, EUCLEAN, "run into the stop frame",
	 AFTER_META},
	{"trailer number with exponent", b_trailer_number, EUCLEAN, "expected ',' or ']'", 0},
	{"compressed stream without trailer", b_no_trailer, ENODATA, "no trailer", AT_END},
};

static uint64_t meta_end(const struct gbuf *b)
{
	/* parse the meta header's length back out of the bytes */
	return 40 + strtoull(b->p + 22, NULL, 16) + 2;
}

/* Remove OUT and the OUT.chksum a writer left beside it. */
static void unlink_with_chksum(char *out)
{
	unlink(out);
	strcat(out, ".chksum");
	unlink(out);
}

START_TEST(test_bad_input)
{
	const struct bad_row *r = &bad_rows[_i];
	struct gbuf b = {0};
	fill_pattern();
	r->build(&b);
	char *path = g_file(&b);
	struct odx_stream *s = NULL;
	struct odx_error err;
	odx_error_clear(&err);
	int rc = odx_stream_open(path, NULL, &s, &err);
	ck_assert_msg(rc == -r->code, "%s: expected -%d, got %d (%s)", r->name, r->code, rc, err.msg);
	ck_assert_ptr_null(s);
	ck_assert_msg(strstr(err.msg, r->fragment), "%s: message \"%s\" lacks \"%s\"", r->name,
		      err.msg, r->fragment);
	ck_assert_msg(strstr(err.msg, path), "%s: message \"%s\" does not name the file", r->name,
		      err.msg);
	ck_assert_msg(strstr(err.msg, "offset "), "%s: no offset in \"%s\"", r->name, err.msg);
	if (r->offset == AFTER_META)
		ck_assert_uint_eq(err.offset, meta_end(&b));
	else if (r->offset == AFTER_META_1)
		ck_assert_uint_eq(err.offset, meta_end(&b) + 40);
	else if (r->offset == AFTER_META_2)
		ck_assert_uint_eq(err.offset, meta_end(&b) + 80);
	else if (r->offset == AT_END)
		ck_assert_uint_eq(err.offset, b.len);
	else if (r->offset == AFTER_META_PAYLOAD16)
		ck_assert_uint_eq(err.offset, meta_end(&b) + 40 + 16);
	else if (r->offset)
		ck_assert_uint_eq(err.offset, r->offset);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

static int problems;
static void count_problem(void *ctx, uint64_t off, const char *msg)
{
	(void)ctx;
	(void)off;
	(void)msg;
	problems++;
}

START_TEST(test_bad_input_check)
{
	const struct bad_row *r = &bad_rows[_i];
	struct gbuf b = {0};
	fill_pattern();
	r->build(&b);
	char *path = g_file(&b);
	struct odx_error err;
	odx_error_clear(&err);
	problems = 0;
	int n = odx_stream_check(path, count_problem, NULL, NULL, &err);
	ck_assert_msg(n >= 1, "%s: check found %d problems (%s)", r->name, n, err.msg);
	ck_assert_int_eq(n, problems);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* ---- golden streams ---- */

START_TEST(test_golden_uncompressed)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta_std(&b, 1 << 20, 4096 + 3, "false", "lz4");
	g_data(&b, 0, pattern, 4096);
	g_hdr(&b, "zero", 4096, 8192);
	g_data(&b, 100000, pattern + 7, 3); /* unaligned, tiny */
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	const struct odx_stream_info *in = odx_stream_info(s);
	ck_assert_uint_eq(in->virtual_size, 1 << 20);
	ck_assert_uint_eq(in->data_frames, 2);
	ck_assert_uint_eq(in->zero_frames, 1);
	ck_assert_uint_eq(in->data_bytes, 4099);
	ck_assert(in->complete && !in->torn && !in->corrupt);
	const struct odx_extmap *m = odx_stream_map(s);
	ck_assert_uint_eq(m->count, 5); /* data zero unmapped data unmapped */
	ck_assert_int_eq(m->ext[2].kind, ODX_EXTENT_UNMAPPED);
	ck_assert_uint_eq(m->ext[3].offset, 100000);
	ck_assert_uint_eq(m->ext[3].length, 3);
	char buf[200000];
	ck_assert_int_eq(odx_stream_pread(s, buf, sizeof buf, 0, &err), sizeof buf);
	ck_assert_mem_eq(buf, pattern, 4096);
	for (size_t i = 4096; i < 100000; i++)
		ck_assert_int_eq(buf[i], 0);
	ck_assert_mem_eq(buf + 100000, pattern + 7, 3);
	ck_assert_int_eq(buf[100003], 0);
	/* reads past the end are short, and at the end empty */
	ck_assert_int_eq(odx_stream_pread(s, buf, 100, (1 << 20) - 10, &err), 10);
	ck_assert_int_eq(odx_stream_pread(s, buf, 100, 1 << 20, &err), 0);
	ck_assert_int_eq(odx_extmap_seek(m, 5000, SEEK_DATA), 100000);
	ck_assert_int_eq(odx_extmap_seek(m, 100001, SEEK_HOLE), 100003);
	ck_assert_int_eq(odx_extmap_seek(m, 100003, SEEK_DATA), -ENXIO);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

START_TEST(test_hyphen_keys_and_version1)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta(&b, "{\"virtual-size\": 8192, \"data-size\": 10, \"date\": \"x\", \"custom\": [1,2]}");
	g_data(&b, 10, pattern, 10);
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	ck_assert_uint_eq(odx_stream_info(s)->virtual_size, 8192);
	ck_assert_int_eq(odx_stream_info(s)->stream_version, 1);
	char buf[30];
	ck_assert_int_eq(odx_stream_pread(s, buf, 30, 0, &err), 30);
	ck_assert_mem_eq(buf + 10, pattern, 10);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* Compressed stream with a chunked frame (>= 32 MiB: {"size": [a, b]})
 * and a small one, built with liblz4 or zlib directly. */
static char *build_compressed(const char *method, size_t (*comp)(const void *, size_t, void **),
			      char **big_out, size_t big_len)
{
	struct gbuf b = {0};
	char *big = malloc(big_len);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (i / 4096) % 3 ? (char)(i * 7) : 0;
	void *c1, *c2, *c3;
	size_t n1 = comp(big, 32u << 20, &c1);
	size_t n2 = comp(big + (32u << 20), big_len - (32u << 20), &c2);
	size_t n3 = comp(pattern, 5000, &c3);
	g_meta_std(&b, 1ull << 30, big_len + 5000, "3", method);
	g_hdr(&b, "data", 0, big_len);
	g_put(&b, c1, n1);
	g_put(&b, c2, n2);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "zero", big_len, 1 << 20);
	g_hdr(&b, "data", (1ull << 30) - 5000, 5000);
	g_put(&b, c3, n3);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "stop", 0, 0);
	char t[256];
	snprintf(t, sizeof t, "[{\"%zu\": [%zu, %zu]}, %zu]", n1 + n2, n1, n2, n3);
	g_trailer(&b, t);
	char *path = g_file(&b);
	free(c1);
	free(c2);
	free(c3);
	free(b.p);
	*big_out = big;
	return path;
}

static void check_compressed(const char *method, size_t (*comp)(const void *, size_t, void **))
{
	fill_pattern();
	char *big;
	size_t big_len = (32u << 20) + 12345;
	char *path = build_compressed(method, comp, &big, big_len);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_msg(odx_stream_open(path, NULL, &s, &err) == 0, "%s", err.msg);
	const struct odx_stream_info *in = odx_stream_info(s);
	ck_assert_uint_eq(in->chunks, 3);
	ck_assert_uint_eq(in->data_bytes, big_len + 5000);
	char *buf = malloc(big_len + 100);
	/* across the chunk boundary, unaligned */
	uint64_t at = (32u << 20) - 777;
	ck_assert_int_eq(odx_stream_pread(s, buf, 2000, at, &err), 2000);
	ck_assert_mem_eq(buf, big + at, 2000);
	ck_assert_int_eq(odx_stream_pread(s, buf, big_len + 100, 0, &err), big_len + 100);
	ck_assert_mem_eq(buf, big, big_len);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(buf[big_len + i], 0);
	ck_assert_int_eq(odx_stream_pread(s, buf, 6000, (1ull << 30) - 6000, &err), 6000);
	ck_assert_mem_eq(buf + 1000, pattern, 5000);
	odx_stream_close(s);
	problems = 0;
	ck_assert_int_eq(odx_stream_check(path, count_problem, NULL, NULL, &err), 0);
	unlink(path);
	free(path);
	free(buf);
	free(big);
}

/* The stream of build_compressed opened with a shared cache. */
struct big_stream {
	char *big, *path;
	size_t len;
	struct odx_chunk_cache *cache;
	struct odx_stream *s;
};

static void big_open(struct big_stream *b, const char *method,
		     size_t (*comp)(const void *, size_t, void **), size_t cache_bytes)
{
	fill_pattern();
	b->len = (32u << 20) + 12345;
	b->path = build_compressed(method, comp, &b->big, b->len);
	b->cache = odx_chunk_cache_new(cache_bytes);
	struct odx_stream_opts o = {.cache = b->cache};
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(b->path, &o, &b->s, &err), 0);
}

static void big_close(struct big_stream *b)
{
	odx_stream_close(b->s);
	odx_chunk_cache_free(b->cache);
	unlink(b->path);
	free(b->path);
	free(b->big);
}

/* Threads reading one compressed stream at once: every byte right, and
 * each chunk decoded once (waiters share the loader's result). */
struct reader_arg {
	struct odx_stream *s;
	const char *want;
	size_t len;
	unsigned seed;
	int bad;
};

static void *reader_thread(void *p)
{
	struct reader_arg *a = p;
	char *buf = malloc(1 << 16);
	for (int k = 0; k < 300; k++) {
		uint64_t off = (uint64_t)rand_r(&a->seed) % a->len;
		size_t n = 1 + (size_t)rand_r(&a->seed) % (1 << 16);
		if (n > a->len - off)
			n = a->len - off;
		struct odx_error err;
		odx_error_clear(&err);
		if (odx_stream_pread(a->s, buf, n, off, &err) != (ssize_t)n || memcmp(buf, a->want + off, n))
			a->bad++;
	}
	free(buf);
	return NULL;
}

START_TEST(test_parallel_readers_share_chunks)
{
	struct big_stream b;
	big_open(&b, "lz4", g_lz4, 256u << 20);
	pthread_t t[8];
	struct reader_arg a[8];
	for (int i = 0; i < 8; i++) {
		a[i] = (struct reader_arg){b.s, b.big, b.len, (unsigned)i * 77 + 1, 0};
		pthread_create(&t[i], NULL, reader_thread, &a[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(a[i].bad, 0);
	}
	struct odx_cache_stats st;
	odx_chunk_cache_stats(b.cache, &st);
	ck_assert_uint_le(st.misses, 3); /* each of the three chunks decoded once */
	ck_assert_uint_gt(st.hits, 100);
	big_close(&b);
}
END_TEST

/* A reader that decodes chunk k gets the chunks after it decoded ahead
 * (k+1 at least), by the cache's workers, so reading on finds them ready. */
START_TEST(test_prefetch_next_chunk)
{
	struct big_stream b;
	big_open(&b, "zlib", g_zlib, 256u << 20);
	struct odx_error err;
	odx_error_clear(&err);
	char buf[4096];
	ck_assert_int_eq(odx_stream_pread(b.s, buf, sizeof buf, 0, &err), sizeof buf);
	struct odx_cache_stats st;
	uint64_t seen = 0;
	for (int i = 0, still = 0; i < 500 && still < 20; i++) { /* up to 5 s */
		odx_chunk_cache_stats(b.cache, &st);
		/* settled: chunk 1 is in, and no decode started for 200 ms */
		still = st.misses >= 2 && st.bytes >= (32u << 20) + 12345 && st.misses == seen
				? still + 1 : 0;
		seen = st.misses;
		usleep(10000);
	}
	uint64_t misses = st.misses;
	ck_assert_uint_ge(misses, 2);
	ck_assert_int_eq(odx_stream_pread(b.s, buf, sizeof buf, (32u << 20) + 100, &err),
			 sizeof buf);
	ck_assert_mem_eq(buf, b.big + (32u << 20) + 100, sizeof buf);
	odx_chunk_cache_stats(b.cache, &st);
	ck_assert_uint_eq(st.misses, misses); /* it was ready */
	/* closing the stream with jobs possibly queued is safe */
	big_close(&b);
}
END_TEST

/* Pieces handed out by odx_stream_borrow, kept to be checked later. */
struct borrowed {
	const char *p[64];
	size_t n[64], count, total;
};

static int note_borrowed(void *ctx, const void *p, size_t n)
{
	struct borrowed *b = ctx;
	if (b->count == 64)
		return 1;
	b->p[b->count] = p;
	b->n[b->count++] = n;
	b->total += n;
	return 0;
}

/* Zero-copy reads: the pieces are the right bytes, in order, and stay
 * valid until released even when the cache cannot keep the chunks (each
 * is larger than the whole cache) and other reads come in between. */
START_TEST(test_borrow)
{
	struct big_stream bs;
	big_open(&bs, "lz4", g_lz4, 1u << 20);
	struct odx_stream *s = bs.s;
	const char *big = bs.big;
	size_t big_len = bs.len;
	struct odx_error err;
	odx_error_clear(&err);
	/* from inside chunk 1, across chunk 2, into the zero extent */
	uint64_t at = (32u << 20) - 777;
	size_t len = big_len - at + 70000;
	struct odx_pins pins = {0};
	struct borrowed b = {0};
	ck_assert_int_eq(odx_stream_borrow(s, at, len, &pins, note_borrowed, &b, &err),
			 (ssize_t)len);
	ck_assert_uint_eq(b.total, len);
	ck_assert_uint_eq(pins.n, 2); /* both chunks pinned */
	char *other = malloc(1 << 20);
	for (int i = 0; i < 4; i++) /* other chunks decoded meanwhile */
		ck_assert_int_eq(odx_stream_pread(s, other, 1 << 20, (uint64_t)i << 20, &err),
				 1 << 20);
	ck_assert_int_eq(odx_stream_pread(s, other, 5000, (1ull << 30) - 5000, &err), 5000);
	size_t o2 = 0;
	for (size_t i = 0; i < b.count; o2 += b.n[i], i++) {
		size_t k = b.n[i];
		if (at + o2 < big_len) {
			ck_assert_uint_le(at + o2 + k, big_len); /* no piece spans kinds */
			ck_assert_mem_eq(b.p[i], big + at + o2, k);
		} else {
			for (size_t j = 0; j < k; j++)
				ck_assert_int_eq(b.p[i][j], 0);
		}
	}
	odx_pins_release(&pins);
	ck_assert_uint_eq(pins.n, 0);
	ck_assert_ptr_null(pins.v);
	/* past the end: short */
	memset(&b, 0, sizeof b);
	ck_assert_int_eq(odx_stream_borrow(s, (1ull << 30) - 100, 4096, &pins, note_borrowed, &b,
					   &err), 100);
	ck_assert_mem_eq(b.p[0], pattern + 4900, 100);
	odx_pins_release(&pins);
	big_close(&bs);
	free(other);

	/* plain payload is not in memory: the caller reads it */
	struct gbuf g = {0};
	g_meta_std(&g, 1 << 20, 4096, "false", "lz4");
	g_data(&g, 8192, pattern, 4096);
	g_hdr(&g, "stop", 0, 0);
	char *path = g_file(&g);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	memset(&b, 0, sizeof b);
	ck_assert_int_eq(odx_stream_borrow(s, 0, 100, &pins, note_borrowed, &b, &err), 100);
	ck_assert_int_eq(b.p[0][99], 0);
	ck_assert_int_eq(odx_stream_borrow(s, 0, 9000, &pins, note_borrowed, &b, &err),
			 -EOPNOTSUPP);
	ck_assert_ptr_null(odx_stream_damage(s)); /* not damage */
	odx_pins_release(&pins);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(g.p);
}
END_TEST

START_TEST(test_lz4_chunked) { check_compressed("lz4", g_lz4); }
END_TEST
START_TEST(test_zlib_chunked) { check_compressed("zlib", g_zlib); }
END_TEST

/* A corrupt chunk: open succeeds (payloads are not read), reads touching
 * it fail with EBADMSG/EUCLEAN naming the chunk's offset, others work, and
 * check reports it. */
static void corrupt_chunk(const char *method, size_t (*comp)(const void *, size_t, void **),
			  int flip_at_end)
{
	struct gbuf b = {0};
	fill_pattern();
	void *c1, *c2;
	size_t n1 = comp(pattern, 8192, &c1), n2 = comp(pattern + 100, 8192, &c2);
	g_meta_std(&b, 1 << 20, 16384, "1", method);
	g_hdr(&b, "data", 0, 8192);
	size_t c1_at = b.len;
	g_put(&b, c1, n1);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "data", 65536, 8192);
	g_put(&b, c2, n2);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "stop", 0, 0);
	char t[64];
	snprintf(t, sizeof t, "[%zu, %zu]", n1, n2);
	g_trailer(&b, t);
	b.p[c1_at + (flip_at_end ? n1 - 3 : n1 / 2)] ^= 0x55;
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	/* strict: once the damage is found, nothing more is served */
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	char buf[8192];
	ck_assert_int_eq(odx_stream_pread(s, buf, 8192, 65536, &err), 8192);
	ck_assert_ptr_null(odx_stream_damage(s));
	ssize_t r = odx_stream_pread(s, buf, 100, 10, &err);
	ck_assert_msg(r == -EBADMSG || r == -EUCLEAN, "got %zd", r);
	ck_assert_uint_eq(err.offset, c1_at);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_ptr_nonnull(odx_stream_damage(s));
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_pread(s, buf, 8192, 65536, &err), -EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	odx_stream_close(s);
	/* a zero-copy read finds the damage the same way */
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	struct odx_pins pins = {0};
	struct borrowed bw = {0};
	r = odx_stream_borrow(s, 10, 100, &pins, note_borrowed, &bw, &err);
	ck_assert_msg(r == -EBADMSG || r == -EUCLEAN, "got %zd", r);
	ck_assert_uint_eq(err.offset, c1_at);
	ck_assert_ptr_nonnull(odx_stream_damage(s));
	odx_pins_release(&pins);
	odx_stream_close(s);
	/* salvage: only the reads touching the damaged chunk fail */
	struct odx_stream_opts so = {.flags = ODX_OPEN_SALVAGE};
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, &so, &s, &err), 0);
	r = odx_stream_pread(s, buf, 100, 10, &err);
	ck_assert_msg(r == -EBADMSG || r == -EUCLEAN, "got %zd", r);
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_pread(s, buf, 8192, 65536, &err), 8192);
	ck_assert_mem_eq(buf, pattern + 100, 8192);
	ck_assert_ptr_null(odx_stream_damage(s));
	odx_stream_close(s);
	problems = 0;
	ck_assert_int_eq(odx_stream_check(path, count_problem, NULL, NULL, &err), 1);
	unlink(path);
	free(path);
	free(b.p);
	free(c1);
	free(c2);
}

START_TEST(test_lz4_corrupt_checksum) { corrupt_chunk("lz4", g_lz4, 1); }
END_TEST
START_TEST(test_lz4_corrupt_middle) { corrupt_chunk("lz4", g_lz4, 0); }
END_TEST
START_TEST(test_zlib_corrupt) { corrupt_chunk("zlib", g_zlib, 0); }
END_TEST
START_TEST(test_zlib_corrupt_adler) { corrupt_chunk("zlib", g_zlib, 1); }
END_TEST

/* Torn tail: strict open refuses, ALLOW_TORN serves the complete frames,
 * repair produces a clean stream with the same content. */
START_TEST(test_torn_and_repair)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta(&b, "{\"virtualSize\": 1048576, \"dataSize\": 99999, \"custom\": \"kept\"}");
	g_data(&b, 0, pattern, 1000);
	g_hdr(&b, "zero", 1000, 3000);
	g_data(&b, 4000, pattern + 5, 2000);
	size_t cut = b.len;
	g_data(&b, 8000, pattern, 5000);
	b.len = cut + 40 + 1234; /* torn inside the last payload */
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), -ENODATA);
	ck_assert_ptr_nonnull(strstr(err.msg, "repair"));
	struct odx_stream_opts o = {.flags = ODX_OPEN_ALLOW_TORN};
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, &o, &s, &err), 0);
	ck_assert(odx_stream_info(s)->torn);
	ck_assert_uint_eq(odx_stream_info(s)->torn_at, cut);
	char buf[20000];
	ck_assert_int_eq(odx_stream_pread(s, buf, sizeof buf, 0, &err), sizeof buf);
	odx_stream_close(s);
	char out[300];
	snprintf(out, sizeof out, "%s.repaired", path);
	struct odx_repair_report r;
	ck_assert_int_eq(odx_stream_repair(path, out, &r, &err), 0);
	ck_assert_uint_eq(r.frames_kept, 3);
	ck_assert_uint_eq(r.new_data_size, 3000);
	ck_assert_uint_eq(r.bytes_dropped, 40 + 1234);
	struct odx_stream_opts mo = {.flags = ODX_OPEN_META_TEXT};
	ck_assert_int_eq(odx_stream_open(out, &mo, &s, &err), 0);
	char buf2[20000];
	ck_assert_int_eq(odx_stream_pread(s, buf2, sizeof buf2, 0, &err), sizeof buf2);
	ck_assert_mem_eq(buf, buf2, sizeof buf);
	ck_assert_ptr_nonnull(strstr(odx_stream_meta_text(s), "\"custom\""));
	odx_stream_close(s);
	problems = 0;
	ck_assert_int_eq(odx_stream_check(out, count_problem, NULL, NULL, &err), 0);
	/* the original is untouched */
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_size, cut + 40 + 1234);
	unlink_with_chksum(out);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* A complete stream with a wrong dataSize, a bad stop frame and bytes
 * after it: repair rewrites them; check is clean afterwards. */
START_TEST(test_repair_complete_stream)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta_std(&b, 1 << 20, 12345, "false", "lz4");
	g_data(&b, 0, pattern, 3000);
	g_hdr(&b, "stop", 0, 1);
	g_put(&b, "junk\r\n", 6);
	char *path = g_file(&b);
	char out[300];
	snprintf(out, sizeof out, "%s.fixed", path);
	struct odx_error err;
	odx_error_clear(&err);
	struct odx_repair_report r;
	ck_assert_msg(odx_stream_repair(path, out, &r, &err) == 0, "%s", err.msg);
	ck_assert(!r.was_complete);
	ck_assert_uint_eq(r.old_data_size, 12345);
	ck_assert_uint_eq(r.new_data_size, 3000);
	problems = 0;
	ck_assert_int_eq(odx_stream_check(out, count_problem, NULL, NULL, &err), 0);
	struct odx_stream *s;
	ck_assert_int_eq(odx_stream_open(out, NULL, &s, &err), 0);
	char buf[3000];
	ck_assert_int_eq(odx_stream_pread(s, buf, 3000, 0, &err), 3000);
	ck_assert_mem_eq(buf, pattern, 3000);
	odx_stream_close(s);
	unlink_with_chksum(out);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* Corrupt header mid-stream with ALLOW_CORRUPT: what precedes it is served,
 * ranges no earlier frame covers read as EIO. */
START_TEST(test_corrupt_mid_stream)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta_std(&b, 1 << 20, 0, "false", "lz4");
	g_data(&b, 0, pattern, 4096);
	size_t bad = b.len;
	g_put(&b, "garbage garbage garbage garbage garbage!", 40);
	g_data(&b, 8192, pattern, 4096);
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	struct odx_stream_opts o = {.flags = ODX_OPEN_SALVAGE | ODX_OPEN_ALLOW_TORN};
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, &o, &s, &err), 0);
	ck_assert(odx_stream_info(s)->corrupt);
	ck_assert_uint_eq(odx_stream_info(s)->corrupt_at, bad);
	char buf[4096];
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 0, &err), 4096);
	ck_assert_mem_eq(buf, pattern, 4096);
	ck_assert_int_eq(odx_stream_pread(s, buf, 10, 8192, &err), -EIO);
	ck_assert_uint_eq(err.offset, bad);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* Overlapping frames: the later frame wins, as the restore tool replays. */
START_TEST(test_overlap_later_wins)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta(&b, "{\"virtualSize\": 20000, \"dataSize\": 16000}");
	g_data(&b, 0, pattern, 10000);
	g_hdr(&b, "zero", 2000, 1000);
	g_data(&b, 5000, pattern + 50000, 6000);
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	char buf[20000], want[20000];
	memset(want, 0, sizeof want);
	memcpy(want, pattern, 10000);
	memset(want + 2000, 0, 1000);
	memcpy(want + 5000, pattern + 50000, 6000);
	ck_assert_int_eq(odx_stream_pread(s, buf, sizeof buf, 0, &err), sizeof buf);
	ck_assert_mem_eq(buf, want, sizeof want);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* Open with flags; returns the stream or NULL (rc in *rc). */
static struct odx_stream *open_with(const char *path, unsigned flags, int *rc, struct odx_error *err)
{
	struct odx_stream_opts o = {.flags = flags, .cache_bytes = 8 << 20};
	struct odx_stream *s = NULL;
	odx_error_clear(err);
	*rc = odx_stream_open(path, &o, &s, err);
	return s;
}

/* Salvage: a frame that cannot be trusted (its payload not followed by
 * CRLF, reaching past virtualSize) reads with EIO, every other frame is
 * served; the strict open refuses the same file. */
START_TEST(test_salvage_bad_frames)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta_std(&b, 65536, 4 * 4096, "false", "lz4");
	g_data(&b, 0, pattern, 4096);
	g_hdr(&b, "data", 8192, 4096);
	g_put(&b, pattern + 1, 4096);
	g_put(&b, "XX", 2);
	g_hdr(&b, "zero", 16384, 4096);
	g_data(&b, 20480, pattern + 2, 4096);
	g_data(&b, 65536 - 2048, pattern + 3, 4096); /* reaches past virtualSize */
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_error err;
	int rc;
	ck_assert_ptr_null(open_with(path, ODX_OPEN_ALLOW_TORN, &rc, &err));
	ck_assert_int_eq(rc, -EUCLEAN);
	ck_assert_ptr_nonnull(strstr(err.msg, "expected CRLF after the payload"));
	struct odx_stream *s = open_with(path, ODX_OPEN_SALVAGE, &rc, &err);
	ck_assert_msg(s, "salvage open: %s", err.msg);
	const struct odx_stream_info *in = odx_stream_info(s);
	/* the two bad frames, and (frames may hide in what the walk skipped
	 * after the missing CRLF) every range no frame covers */
	ck_assert_uint_eq(in->bad_bytes, 65536 - 3 * 4096);
	ck_assert_uint_ge(in->warnings, 2);
	char buf[4096];
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 0, &err), 4096);
	ck_assert_mem_eq(buf, pattern, 4096);
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 20480, &err), 4096);
	ck_assert_mem_eq(buf, pattern + 2, 4096);
	ck_assert_int_eq(odx_stream_pread(s, buf, 1, 8192 + 4095, &err), -EIO);
	ck_assert_int_eq(odx_stream_pread(s, buf, 1, 65535, &err), -EIO);
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 16384, &err), 4096);
	ck_assert_int_eq(odx_stream_pread(s, buf, 1, 4096, &err), -EIO);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* A chunk over the 32 MiB limit: strict refuses, salvage serves its range
 * as bad; nothing of its claimed size is ever allocated. */
START_TEST(test_chunk_limit)
{
	struct gbuf b = {0};
	fill_pattern();
	b_chunk_too_big(&b);
	char *path = g_file(&b);
	struct odx_error err;
	int rc;
	ck_assert_ptr_null(open_with(path, 0, &rc, &err));
	ck_assert_int_eq(rc, -EUCLEAN);
	struct odx_stream *s = open_with(path, ODX_OPEN_SALVAGE, &rc, &err);
	ck_assert_msg(s, "salvage open: %s", err.msg);
	char buf[512];
	ck_assert_int_eq(odx_stream_pread(s, buf, 512, 0, &err), -EIO);
	/* the walk went on by the entry's size, not the header's: frames may
	 * hide in what it skipped, so no range is served as a hole either */
	ck_assert_int_eq(odx_stream_pread(s, buf, 512, 100 << 20, &err), -EIO);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* A damaged chunk is decoded once: later reads of it fail from the cache. */
START_TEST(test_damaged_chunk_remembered)
{
	struct gbuf b = {0};
	fill_pattern();
	void *c;
	size_t n = g_lz4(pattern, 8192, &c);
	g_meta_std(&b, 1 << 20, 8192, "1", "lz4");
	g_hdr(&b, "data", 0, 8192);
	size_t at = b.len;
	g_put(&b, c, n);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "stop", 0, 0);
	char t[32];
	snprintf(t, sizeof t, "[%zu]", n);
	g_trailer(&b, t);
	b.p[at + n / 2] ^= 0x5a;
	char *path = g_file(&b);
	struct odx_chunk_cache *cache = odx_chunk_cache_new(8 << 20);
	struct odx_stream_opts o = {.flags = ODX_OPEN_SALVAGE, .cache = cache};
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, &o, &s, &err), 0);
	char buf[64];
	ck_assert_int_lt(odx_stream_pread(s, buf, 64, 0, &err), 0);
	struct odx_cache_stats st1, st2;
	odx_chunk_cache_stats(cache, &st1);
	odx_error_clear(&err);
	ck_assert_int_lt(odx_stream_pread(s, buf, 64, 100, &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "earlier read"));
	odx_chunk_cache_stats(cache, &st2);
	ck_assert_uint_eq(st2.misses, st1.misses);
	odx_stream_close(s);
	odx_chunk_cache_free(cache);
	unlink(path);
	free(path);
	free(b.p);
	free(c);
}
END_TEST

/* A trailer of 300,000 entries for one data frame: read entry by entry
 * (constant memory), refused by a strict open, walked past in salvage. */
START_TEST(test_long_trailer)
{
	struct gbuf b = {0};
	fill_pattern();
	void *c;
	size_t n = g_lz4(pattern, 4096, &c);
	g_meta_std(&b, 1 << 20, 4096, "2", "lz4");
	g_hdr(&b, "data", 0, 4096);
	g_put(&b, c, n);
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "stop", 0, 0);
	size_t t0 = b.len;
	char num[32];
	int k = snprintf(num, sizeof num, "[%zu", n);
	g_put(&b, num, (size_t)k);
	for (int i = 0; i < 300000; i++)
		g_put(&b, ", 1", 3);
	g_put(&b, "]", 1);
	size_t tl = b.len - t0;
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "comp", 0, tl);
	char *path = g_file(&b);
	struct odx_error err;
	int rc;
	ck_assert_ptr_null(open_with(path, 0, &rc, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "more entries"));
	struct odx_stream *s = open_with(path, ODX_OPEN_SALVAGE, &rc, &err);
	ck_assert_msg(s, "%s", err.msg);
	char buf[4096];
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 0, &err), 4096);
	ck_assert_mem_eq(buf, pattern, 4096);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
	free(c);
}
END_TEST

/* A torn zlib stream whose chunks are deflated zeros (a "zip bomb"):
 * measuring stops at the budget and the stream is torn there, instead of
 * inflating gigabytes to find where it ends. */
START_TEST(test_torn_zlib_budget)
{
	size_t z = 32u << 20;
	char *zeros = calloc(1, z);
	void *c;
	size_t n = g_zlib(zeros, z, &c);
	struct gbuf b = {0};
	g_meta_std(&b, (uint64_t)1 << 41, 0, "6", "zlib");
	g_hdr(&b, "data", 0, (uint64_t)1 << 40);
	for (int i = 0; i < 40; i++)
		g_put(&b, c, n);
	char *path = g_file(&b);
	struct odx_error err;
	int rc;
	struct odx_stream *s = open_with(path, ODX_OPEN_ALLOW_TORN, &rc, &err);
	ck_assert_msg(s, "%s", err.msg);
	const struct odx_stream_info *in = odx_stream_info(s);
	ck_assert(in->torn);
	ck_assert_ptr_nonnull(strstr(in->problem, "measuring"));
	ck_assert_uint_eq(in->mapped_bytes, 0);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
	free(c);
	free(zeros);
}
END_TEST

/* 20,000 tiny compressed frames through a small shared cache: the cache
 * counts what its entries cost (not only their data), so it stays within
 * its size, and lookups stay fast however many entries it holds. */
START_TEST(test_cache_tiny_chunks)
{
	struct gbuf b = {0};
	fill_pattern();
	enum { N = 20000, L = 64 };
	void *c;
	size_t n = g_lz4(pattern, L, &c);
	g_meta_std(&b, (uint64_t)N * L, (uint64_t)N * L, "1", "lz4");
	for (int i = 0; i < N; i++) {
		g_hdr(&b, "data", (uint64_t)i * L, L);
		g_put(&b, c, n);
		g_put(&b, "\r\n", 2);
	}
	g_hdr(&b, "stop", 0, 0);
	size_t t0 = b.len;
	g_put(&b, "[", 1);
	char num[32];
	for (int i = 0; i < N; i++) {
		int k = snprintf(num, sizeof num, "%s%zu", i ? ", " : "", n);
		g_put(&b, num, (size_t)k);
	}
	g_put(&b, "]", 1);
	size_t tl = b.len - t0;
	g_put(&b, "\r\n", 2);
	g_hdr(&b, "comp", 0, tl);
	char *path = g_file(&b);
	struct odx_chunk_cache *cache = odx_chunk_cache_new(1 << 20);
	struct odx_stream_opts o = {.cache = cache};
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, &o, &s, &err), 0);
	char *img = malloc((size_t)N * L);
	ck_assert_int_eq(odx_stream_pread(s, img, (size_t)N * L, 0, &err), N * L);
	for (int i = 0; i < N; i++)
		ck_assert_mem_eq(img + (size_t)i * L, pattern, L);
	struct odx_cache_stats st;
	odx_chunk_cache_stats(cache, &st);
	ck_assert_uint_le(st.bytes, st.max_bytes);
	ck_assert_uint_gt(st.evictions, 0);
	odx_stream_close(s);
	odx_chunk_cache_free(cache);
	unlink(path);
	free(path);
	free(img);
	free(b.p);
	free(c);
}
END_TEST

/* A compression level no codec has is 0, with no undefined conversion
 * (fuzz/regressions/meta-compressed-level-overflow), and an infinite one
 * survives a repair's rewrite of the meta as compressed (cJSON prints it as
 * null: fuzz/regressions/meta-infinite-compressed-lost-in-print). */
START_TEST(test_level_out_of_range)
{
	struct gbuf b = {0};
	g_meta(&b, "{\"virtualSize\": 4096, \"dataSize\": 0, \"streamVersion\": 2, "
		   "\"compressed\": 6854775807, \"compressionMethod\": \"lz4\"}");
	g_hdr(&b, "stop", 0, 0);
	g_trailer(&b, "[]");
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	ck_assert_int_eq(odx_stream_info(s)->level, 0);
	ck_assert_int_eq(odx_stream_info(s)->codec, ODX_CODEC_LZ4);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
	b = (struct gbuf){0};
	g_meta(&b, "{\"virtualSize\": 4096, \"dataSize\": 7, \"streamVersion\": 2, "
		   "\"compressed\": 5e432, \"compressionMethod\": \"lz4\"}");
	g_hdr(&b, "stop", 0, 0);
	g_trailer(&b, "[]");
	path = g_file(&b);
	char out[300];
	snprintf(out, sizeof out, "%s.fixed", path);
	struct odx_repair_report rep;
	ck_assert_int_eq(odx_stream_repair(path, out, &rep, &err), 0); /* fixes dataSize */
	ck_assert_int_eq(odx_stream_open(out, NULL, &s, &err), 0);
	ck_assert_int_eq(odx_stream_info(s)->codec, ODX_CODEC_LZ4);
	odx_stream_close(s);
	unlink_with_chksum(out);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

/* An idle stream gives up its descriptor and takes one back, but only one
 * on the same, unchanged file. */
START_TEST(test_detach_attach)
{
	struct gbuf b = {0};
	fill_pattern();
	g_meta_std(&b, 1 << 20, 4096, "false", "lz4");
	g_data(&b, 0, pattern, 4096);
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), 0);
	ck_assert_int_eq(odx_stream_detach_fd(s), 0);
	ck_assert(!odx_stream_attached(s));
	char buf[4096];
	ck_assert_int_lt(odx_stream_pread(s, buf, 4096, 0, &err), 0);
	int other = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(odx_stream_attach_fd(s, other, &err), -ESTALE);
	close(other);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(odx_stream_attach_fd(s, fd, &err), 0); /* takes fd */
	ck_assert_int_eq(odx_stream_fd(s), fd);
	ck_assert_int_eq(odx_stream_pread(s, buf, 4096, 0, &err), 4096);
	ck_assert_mem_eq(buf, pattern, 4096);
	odx_stream_close(s);
	unlink(path);
	free(path);
	free(b.p);
}
END_TEST

START_TEST(test_probe)
{
	struct gbuf b = {0};
	g_meta_std(&b, 4096, 0, "false", "lz4");
	g_hdr(&b, "stop", 0, 0);
	char *path = g_file(&b);
	int fd = open(path, O_RDONLY);
	ck_assert_int_eq(odx_stream_probe(fd), 1);
	close(fd);
	unlink(path);
	free(path);
	struct gbuf c = {0};
	g_put(&c, "meta 0000000000000000 0000000000000005\r\nhello\r\n", 47);
	path = g_file(&c);
	fd = open(path, O_RDONLY);
	/* A meta header makes a stream; its bad JSON makes it fail to open
	 * (served as EIO), never a plain file showing the stream's bytes. */
	ck_assert_int_eq(odx_stream_probe(fd), 1);
	close(fd);
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_open(path, NULL, &s, &err), -EUCLEAN);
	ck_assert_ptr_nonnull(strstr(err.msg, "invalid meta JSON"));
	struct gbuf d = {0};
	g_put(&d, "mets 0000000000000000 0000000000000005\r\nhello\r\n", 47);
	char *p2 = g_file(&d);
	fd = open(p2, O_RDONLY);
	ck_assert_int_eq(odx_stream_probe(fd), 0);
	close(fd);
	unlink(p2);
	free(p2);
	free(d.p);
	unlink(path);
	free(path);
	free(b.p);
	free(c.p);
}
END_TEST

static Suite *stream_suite(void)
{
	Suite *s = suite_create("stream");
	TCase *t = tcase_create("bad-input");
	size_t nrows = sizeof bad_rows / sizeof bad_rows[0];
	tcase_add_loop_test(t, test_bad_input, 0, (int)nrows);
	tcase_add_loop_test(t, test_bad_input_check, 0, (int)nrows);
	suite_add_tcase(s, t);
	t = tcase_create("golden");
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_golden_uncompressed);
	tcase_add_test(t, test_hyphen_keys_and_version1);
	tcase_add_test(t, test_lz4_chunked);
	tcase_add_test(t, test_zlib_chunked);
	tcase_add_test(t, test_parallel_readers_share_chunks);
	tcase_add_test(t, test_prefetch_next_chunk);
	tcase_add_test(t, test_borrow);
	tcase_add_test(t, test_lz4_corrupt_checksum);
	tcase_add_test(t, test_lz4_corrupt_middle);
	tcase_add_test(t, test_zlib_corrupt);
	tcase_add_test(t, test_zlib_corrupt_adler);
	tcase_add_test(t, test_torn_and_repair);
	tcase_add_test(t, test_corrupt_mid_stream);
	tcase_add_test(t, test_repair_complete_stream);
	tcase_add_test(t, test_overlap_later_wins);
	tcase_add_test(t, test_probe);
	tcase_add_test(t, test_salvage_bad_frames);
	tcase_add_test(t, test_chunk_limit);
	tcase_add_test(t, test_damaged_chunk_remembered);
	tcase_add_test(t, test_long_trailer);
	tcase_add_test(t, test_torn_zlib_budget);
	tcase_add_test(t, test_cache_tiny_chunks);
	tcase_add_test(t, test_level_out_of_range);
	tcase_add_test(t, test_detach_attach);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(stream_suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
