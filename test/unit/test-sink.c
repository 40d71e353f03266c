/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the sink (a stream written frame by frame in ascending
 * order) and of odx_stream_publish_at.  The sources the sink copies from
 * are built by hand (golden.h: headers by sprintf, chunks by liblz4 and
 * zlib directly), so that what is compared is never the sink's writer
 * against itself; every output is reopened strictly, read back byte for
 * byte against an image kept in memory, and run through odx_stream_check
 * (every chunk decoded, the .chksum verified).
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "golden.h"
#include "odxfs/stream.h"

#define MiB (UINT64_C(1) << 20)
#define CHUNK ((uint64_t)ODX_CHUNK_SIZE)

/* Bytes of a frame: different for each seed (so a frame that wins an
 * overlap is told from the one it hides), compressible enough that a
 * 32 MiB chunk is quick to encode, with zero runs as a disk has. */
static void fill(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (i >> 12) % 5 == 4 ? 0 : (char)((i * 7 + seed * 41) ^ (i >> 9) ^ seed);
}

/* ---- sources, built by hand ---- */

struct chunk_rec {
	void *p;  /* the compressed bytes as they are in the source file */
	size_t n;
};

struct src {
	enum odx_codec codec;
	bool incremental;
	uint64_t vsize;
	char *img;              /* the image the frames make (later wins) */
	struct gbuf body;       /* the frames after meta */
	char trailer[4096];     /* trailer entries so far */
	size_t tlen;
	uint64_t data_size;
	struct chunk_rec ch[64];
	int nch;
};

static void src_init(struct src *s, enum odx_codec codec, bool incremental, uint64_t vsize)
{
	memset(s, 0, sizeof *s);
	s->codec = codec;
	s->incremental = incremental;
	s->vsize = vsize;
	s->img = calloc(1, vsize);
	ck_assert_ptr_nonnull(s->img);
	s->tlen = (size_t)snprintf(s->trailer, sizeof s->trailer, "[");
}

static size_t src_comp(const struct src *s, const void *p, size_t n, void **out)
{
	return s->codec == ODX_CODEC_LZ4 ? g_lz4(p, n, out) : g_zlib(p, n, out);
}

/* A data frame of len bytes of seed at start: chunked at 32 MiB when it
 * is that long (a {"sum": [sizes]} trailer entry), as the backup tool
 * writes it.  Returns the index of its first chunk in s->ch. */
static int src_data(struct src *s, uint64_t start, uint64_t len, unsigned seed)
{
	char *d = malloc(len);
	ck_assert_ptr_nonnull(d);
	fill(d, len, seed);
	memcpy(s->img + start, d, len);
	s->data_size += len;
	g_hdr(&s->body, "data", start, len);
	int first = s->nch;
	if (s->codec == ODX_CODEC_NONE) {
		g_put(&s->body, d, len);
	} else {
		size_t sum = 0;
		char sizes[256] = "";
		for (uint64_t at = 0; at < len; at += CHUNK) {
			struct chunk_rec *c = &s->ch[s->nch++];
			c->n = src_comp(s, d + at, len - at < CHUNK ? len - at : CHUNK, &c->p);
			g_put(&s->body, c->p, c->n);
			sum += c->n;
			snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), "%s%zu",
				 at ? ", " : "", c->n);
		}
		const char *sep = s->tlen > 1 ? ", " : "";
		if (len >= CHUNK)
			s->tlen += (size_t)snprintf(s->trailer + s->tlen, sizeof s->trailer - s->tlen,
						    "%s{\"%zu\": [%s]}", sep, sum, sizes);
		else
			s->tlen += (size_t)snprintf(s->trailer + s->tlen, sizeof s->trailer - s->tlen,
						    "%s%zu", sep, sum);
	}
	g_put(&s->body, "\r\n", 2);
	free(d);
	return first;
}

static void src_zero(struct src *s, uint64_t start, uint64_t len)
{
	memset(s->img + start, 0, len);
	g_hdr(&s->body, "zero", start, len);
}

/* The meta keys are virtnbdbackup's plus two it does not know, which a
 * rewrite must keep. */
#define SRC_META                                                                            \
	"{\"virtualSize\": %" PRIu64 ", \"dataSize\": %" PRIu64                            \
	", \"date\": \"2026-01-01T00:00:00\", \"diskName\": \"sda\", \"diskFormat\": \"raw\", " \
	"\"checkpointName\": \"c1\", \"compressed\": %s, \"compressionMethod\": \"%s\", "   \
	"\"parentCheckpoint\": %s, \"incremental\": %s, \"streamVersion\": 2, "              \
	"\"custom\": {\"a\": [1, 2]}, \"note\": \"kept\"}"

static char *src_file(struct src *s)
{
	struct gbuf b = {0};
	char meta[1024];
	snprintf(meta, sizeof meta, SRC_META, s->vsize, s->data_size,
		 s->codec == ODX_CODEC_NONE ? "false" : "3",
		 s->codec == ODX_CODEC_ZLIB ? "zlib" : "lz4", s->incremental ? "\"c0\"" : "false",
		 s->incremental ? "true" : "false");
	g_meta(&b, meta);
	g_put(&b, s->body.p, s->body.len);
	g_hdr(&b, "stop", 0, 0);
	if (s->codec != ODX_CODEC_NONE) {
		snprintf(s->trailer + s->tlen, sizeof s->trailer - s->tlen, "]");
		g_trailer(&b, s->trailer);
	}
	char *path = g_file(&b);
	free(b.p);
	return path;
}

static void src_free(struct src *s)
{
	for (int i = 0; i < s->nch; i++)
		free(s->ch[i].p);
	free(s->img);
	free(s->body.p);
}

/* The source most tests copy from (sizes in the comments of the
 * compressed tests below), with `big` bytes in its first frame: 32 MiB
 * and more is chunked.  Frames overlap: F4 lies inside F2, F6 over the
 * start of F5, and a zero frame inside F5 after it. */
enum { F1, F2, F3, F4, F5, F6, NF };
static int chunk_of[NF]; /* first chunk of each frame in src.ch */
#define F1_AT 0
#define F2_AT (40 * MiB)
#define F2_LEN 300000
#define F3_AT (48 * MiB)
#define F3_LEN 65541
#define F4_AT (F2_AT + 100000)
#define F4_LEN 50000
#define F5_AT (60 * MiB)
#define F5_LEN 4096
#define F6_AT (F5_AT - 1000)
#define F6_LEN 2000
#define SRC_VSIZE (64 * MiB)

static char *build_source(struct src *s, enum odx_codec codec, uint64_t big)
{
	src_init(s, codec, false, SRC_VSIZE);
	chunk_of[F1] = src_data(s, F1_AT, big, 1);
	src_zero(s, 33 * MiB, MiB);
	chunk_of[F2] = src_data(s, F2_AT, F2_LEN, 2);
	chunk_of[F3] = src_data(s, F3_AT, F3_LEN, 3);
	chunk_of[F4] = src_data(s, F4_AT, F4_LEN, 4);
	chunk_of[F5] = src_data(s, F5_AT, F5_LEN, 5);
	chunk_of[F6] = src_data(s, F6_AT, F6_LEN, 6);
	src_zero(s, F5_AT + 3000, 500);
	return src_file(s);
}

/* Data bytes the map of build_source shows (what a copy keeps). */
static uint64_t visible_data(uint64_t big)
{
	return big + F2_LEN + F3_LEN + 1000 /* F6 past F5's start */ + F5_LEN - 500;
}

/* ---- outputs ---- */

struct out {
	char dir[64];
	char path[128];  /* dir/s.data once published */
	int dirfd, fd;
	struct odx_sink *sink;
};

static void out_new(struct out *o, const struct odx_sink_opts *so)
{
	struct odx_error err;
	odx_error_clear(&err);
	snprintf(o->dir, sizeof o->dir, "/tmp/odxfs-sink-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(o->dir));
	snprintf(o->path, sizeof o->path, "%s/s.data", o->dir);
	o->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(o->dirfd, 0);
	o->fd = openat(o->dirfd, "s.data.partial", O_RDWR | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(o->fd, 0);
	ck_assert_msg(odx_sink_new(o->fd, "s.data.partial", so, &o->sink, &err) == 0, "%s", err.msg);
}

static void out_free(struct out *o)
{
	odx_sink_free(o->sink);
	close(o->fd);
	unlinkat(o->dirfd, "s.data", 0);
	unlinkat(o->dirfd, "s.data.partial", 0);
	unlinkat(o->dirfd, "s.data.chksum", 0);
	close(o->dirfd);
	rmdir(o->dir);
}

static char first_problem[ODX_ERROR_MSG_MAX];
static int nproblems;
static void on_problem(void *ctx, uint64_t off, const char *msg)
{
	(void)ctx;
	if (!nproblems++)
		snprintf(first_problem, sizeof first_problem, "offset %" PRIu64 ": %s", off, msg);
}

static int check_file(const char *path)
{
	struct odx_error err;
	odx_error_clear(&err);
	nproblems = 0;
	first_problem[0] = '\0';
	int n = odx_stream_check(path, on_problem, NULL, NULL, &err);
	ck_assert_msg(n >= 0, "%s", err.msg);
	return n;
}

/* Finish at vsize, publish as dir/s.data with its .chksum, and require a
 * clean check, the .chksum being that of the file (the check verifies it
 * when it exists: that it exists is asserted here). */
static void out_finish(struct out *o, uint64_t vsize)
{
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_msg(odx_sink_finish(o->sink, vsize, &err) == 0, "%s", err.msg);
	ck_assert_msg(odx_stream_publish_at(o->fd, o->dirfd, "s.data.partial", "s.data", true, true,
					    &err) == 0,
		      "%s", err.msg);
	ck_assert_int_ne(faccessat(o->dirfd, "s.data.partial", F_OK, 0), 0);
	char text[32] = "";
	int cfd = openat(o->dirfd, "s.data.chksum", O_RDONLY);
	ck_assert_int_ge(cfd, 0);
	ck_assert_int_gt(read(cfd, text, sizeof text - 1), 0);
	close(cfd);
	uint32_t a;
	ck_assert_int_eq(odx_file_adler32(o->fd, &a), 0);
	ck_assert_uint_eq(strtoull(text, NULL, 10), a);
	int n = check_file(o->path);
	ck_assert_msg(n == 0, "%s: %d problems, the first at %s", o->path, n, first_problem);
}

static struct odx_stream *open_strict(const char *path, unsigned flags)
{
	struct odx_stream_opts so = {.flags = flags};
	struct odx_stream *s;
	struct odx_error err;
	odx_error_clear(&err);
	ck_assert_msg(odx_stream_open(path, &so, &s, &err) == 0, "%s", err.msg);
	return s;
}

/* The decoded bytes of s over [off, off + len) are want, read in 1 MiB
 * pieces (most reads cross chunk or frame boundaries). */
static void expect_bytes(struct odx_stream *s, uint64_t off, const char *want, uint64_t len)
{
	char *buf = malloc(MiB);
	struct odx_error err;
	for (uint64_t at = 0; at < len;) {
		size_t n = len - at < MiB ? (size_t)(len - at) : (size_t)MiB;
		odx_error_clear(&err);
		ck_assert_msg(odx_stream_pread(s, buf, n, off + at, &err) == (ssize_t)n, "%s", err.msg);
		if (memcmp(buf, want + at, n)) {
			size_t k = 0;
			while (buf[k] == want[at + k])
				k++;
			ck_abort_msg("%s: image offset %" PRIu64 ": read 0x%02x, expected 0x%02x",
				     odx_stream_name(s), off + at + k, (unsigned char)buf[k],
				     (unsigned char)want[at + k]);
		}
		at += n;
	}
	free(buf);
}

static void expect_zeros(struct odx_stream *s, uint64_t off, uint64_t len)
{
	char *z = calloc(1, len ? len : 1);
	expect_bytes(s, off, z, len);
	free(z);
}

struct row {
	uint64_t offset, length;
	int kind;
};

static void expect_map(struct odx_stream *s, const struct row *r, size_t n)
{
	const struct odx_extmap *m = odx_stream_map(s);
	for (size_t i = 0; i < n && i < m->count; i++)
		ck_assert_msg(m->ext[i].offset == r[i].offset && m->ext[i].length == r[i].length &&
				      m->ext[i].kind == r[i].kind,
			      "extent %zu: [%" PRIu64 ", +%" PRIu64 ") %s, expected [%" PRIu64
			      ", +%" PRIu64 ") %s",
			      i, m->ext[i].offset, m->ext[i].length,
			      odx_extent_kind_name(m->ext[i].kind), r[i].offset, r[i].length,
			      odx_extent_kind_name(r[i].kind));
	ck_assert_uint_eq(m->count, n);
}

/* Adjacent extents of one kind as one run (two maps of one image may cut
 * the same data differently); in a full stream no frame reads as a zero
 * frame does, and the sink writes it as one. */
static bool next_run(const struct odx_extmap *m, size_t *i, bool full, struct row *r)
{
	if (*i >= m->count)
		return false;
#define KIND(e) (full && (e)->kind == ODX_EXTENT_UNMAPPED ? ODX_EXTENT_ZERO : (e)->kind)
	*r = (struct row){m->ext[*i].offset, m->ext[*i].length, KIND(&m->ext[*i])};
	for ((*i)++; *i < m->count && KIND(&m->ext[*i]) == r->kind; (*i)++)
		r->length += m->ext[*i].length;
#undef KIND
	return true;
}

static void expect_same_runs(struct odx_stream *a, struct odx_stream *b, bool full)
{
	const struct odx_extmap *ma = odx_stream_map(a), *mb = odx_stream_map(b);
	size_t ia = 0, ib = 0;
	struct row ra, rb;
	for (;;) {
		bool ha = next_run(ma, &ia, full, &ra), hb = next_run(mb, &ib, full, &rb);
		ck_assert_int_eq(ha, hb);
		if (!ha)
			break;
		ck_assert_msg(ra.offset == rb.offset && ra.length == rb.length && ra.kind == rb.kind,
			      "[%" PRIu64 ", +%" PRIu64 ") %s against [%" PRIu64 ", +%" PRIu64 ") %s",
			      ra.offset, ra.length, odx_extent_kind_name(ra.kind), rb.offset,
			      rb.length, odx_extent_kind_name(rb.kind));
	}
}

static void expect_stats(const struct out *o, uint64_t kernel, uint64_t verbatim,
			 uint64_t buffered, uint64_t holes)
{
	struct odx_sink_stats st;
	odx_sink_stats(o->sink, &st);
	ck_assert_uint_eq(st.bytes_kernel, kernel);
	ck_assert_uint_eq(st.bytes_verbatim, verbatim);
	ck_assert_uint_eq(st.bytes_buffered, buffered);
	ck_assert_uint_eq(st.bytes_holes, holes);
}

static bool file_has(const char *path, const void *p, size_t n)
{
	struct gbuf b = {0};
	char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t r;
	ck_assert_int_ge(fd, 0);
	while ((r = read(fd, buf, sizeof buf)) > 0)
		g_put(&b, buf, (size_t)r);
	close(fd);
	bool found = b.len >= n && memmem(b.p, b.len, p, n) != NULL;
	free(b.p);
	return found;
}

/* Whether copy_file_range copies between two files of /tmp here (where
 * the kernel refuses, the sink copies through its buffer, and counts the
 * bytes there). */
static bool kernel_copies(void)
{
	struct gbuf b = {0};
	g_put(&b, "x", 1);
	char *a = g_file(&b), *c = g_file(&b);
	int in = open(a, O_RDONLY), out = open(c, O_WRONLY);
	loff_t io = 0, oo = 0;
	bool ok = in >= 0 && out >= 0 && copy_file_range(in, &io, out, &oo, 1, 0) == 1;
	close(in);
	close(out);
	unlink(a);
	unlink(c);
	free(a);
	free(c);
	free(b.p);
	return ok;
}

/* A file of n bytes of seed, for odx_sink_data_fd. */
static int data_file(size_t n, unsigned seed, char **img)
{
	struct gbuf b = {0};
	*img = malloc(n);
	fill(*img, n, seed);
	g_put(&b, *img, n);
	char *path = g_file(&b);
	int fd = open(path, O_RDONLY);
	unlink(path);
	free(path);
	free(b.p);
	ck_assert_int_ge(fd, 0);
	return fd;
}

/* ---- written call by call ---- */

/* A full uncompressed stream: data from memory and from a descriptor
 * (contiguous runs of both make one frame), zero frames, gaps (zero
 * frames too: a full stream covers its disk), and the tail up to the
 * virtual size.  _i: 0 with copy_file_range (where the kernel copies
 * between files of /tmp), 1 without. */
START_TEST(test_full_uncompressed)
{
	bool no_cfr = _i == 1, kernel = !no_cfr && kernel_copies();
	char *fimg, a[4096], tail[1000];
	int dfd = data_file(MiB, 9, &fimg);
	fill(a, sizeof a, 1);
	fill(tail, sizeof tail, 2);
	struct odx_sink_opts so = {.codec = ODX_CODEC_NONE, .no_copy_file_range = no_cfr,
				   .checkpoint = "cp1"};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_int_eq(odx_sink_data(o.sink, 0, a, sizeof a, &err), 0);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, 4096, 8192, dfd, 100, &err), 0);
	ck_assert_int_eq(odx_sink_zero(o.sink, 65536, 65536, &err), 0);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, 200000, 300000, dfd, 5000, &err), 0);
	ck_assert_int_eq(odx_sink_data(o.sink, 500000, tail, sizeof tail, &err), 0);
	ck_assert_int_eq(odx_sink_data(o.sink, 600000, "abc", 3, &err), 0);
	ck_assert_uint_eq(odx_sink_end(o.sink), 600003);
	uint64_t fd_bytes = 8192 + 300000, mem_bytes = 4096 + 1000 + 3;
	uint64_t holes = (200000 - 12288) + (600000 - 501000) + (4 * MiB - 600003);
	out_finish(&o, 4 * MiB);
	expect_stats(&o, kernel ? fd_bytes : 0, 0, mem_bytes + (kernel ? 0 : fd_bytes), holes);

	struct odx_stream *s = open_strict(o.path, 0);
	static const struct row want[] = {
		{0, 12288, ODX_EXTENT_DATA},
		{12288, 200000 - 12288, ODX_EXTENT_ZERO},
		{200000, 301000, ODX_EXTENT_DATA},
		{501000, 600000 - 501000, ODX_EXTENT_ZERO},
		{600000, 3, ODX_EXTENT_DATA},
		{600003, 4 * MiB - 600003, ODX_EXTENT_ZERO},
	};
	expect_map(s, want, sizeof want / sizeof want[0]);
	const struct odx_stream_info *in = odx_stream_info(s);
	ck_assert_uint_eq(in->virtual_size, 4 * MiB);
	ck_assert_uint_eq(in->data_frames, 3);
	ck_assert_uint_eq(in->zero_frames, 3);
	ck_assert_uint_eq(in->data_bytes, fd_bytes + mem_bytes);
	ck_assert_uint_eq(in->meta_data_size, fd_bytes + mem_bytes);
	ck_assert(in->complete && !in->incremental && in->codec == ODX_CODEC_NONE);
	expect_bytes(s, 0, a, sizeof a);
	expect_bytes(s, 4096, fimg + 100, 8192);
	expect_zeros(s, 12288, 200000 - 12288);
	expect_bytes(s, 200000, fimg + 5000, 300000);
	expect_bytes(s, 500000, tail, sizeof tail);
	expect_zeros(s, 501000, 600000 - 501000);
	expect_bytes(s, 600000, "abc", 3);
	expect_zeros(s, 600003, 4 * MiB - 600003);
	odx_stream_close(s);

	/* the check does read the .chksum: a wrong one is a problem */
	int cfd = openat(o.dirfd, "s.data.chksum", O_WRONLY | O_TRUNC);
	ck_assert_int_eq(write(cfd, "12345", 5), 5);
	close(cfd);
	ck_assert_int_eq(check_file(o.path), 1);
	ck_assert_ptr_nonnull(strstr(first_problem, "Adler-32"));
	out_free(&o);
	close(dfd);
	free(fimg);
}
END_TEST

/* Incremental: a range nothing was written to has no frame (unchanged
 * since the parent), an explicit zero frame stays one, the meta says
 * incremental. */
START_TEST(test_incremental)
{
	char *fimg, a[1000];
	int dfd = data_file(MiB, 3, &fimg);
	fill(a, sizeof a, 4);
	struct odx_sink_opts so = {.codec = _i ? ODX_CODEC_LZ4 : ODX_CODEC_NONE,
				   .incremental = true, .checkpoint = "cp2", .parent = "cp1"};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_int_eq(odx_sink_data(o.sink, 4096, a, sizeof a, &err), 0);
	ck_assert_int_eq(odx_sink_zero(o.sink, 100000, 5000, &err), 0);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, MiB, 70000, dfd, 123, &err), 0);
	out_finish(&o, 2 * MiB);
	bool kernel = !_i && kernel_copies();
	expect_stats(&o, kernel ? 70000 : 0, 0, kernel ? 1000 : 71000, 5000);

	struct odx_stream *s = open_strict(o.path, ODX_OPEN_META_TEXT);
	const struct row want[] = {
		{0, 4096, ODX_EXTENT_UNMAPPED},
		{4096, 1000, ODX_EXTENT_DATA},
		{5096, 100000 - 5096, ODX_EXTENT_UNMAPPED},
		{100000, 5000, ODX_EXTENT_ZERO},
		{105000, MiB - 105000, ODX_EXTENT_UNMAPPED},
		{MiB, 70000, ODX_EXTENT_DATA},
		{MiB + 70000, MiB - 70000, ODX_EXTENT_UNMAPPED},
	};
	expect_map(s, want, sizeof want / sizeof want[0]);
	const struct odx_stream_info *in = odx_stream_info(s);
	ck_assert(in->incremental);
	ck_assert_uint_eq(in->data_frames, 2);
	ck_assert_uint_eq(in->zero_frames, 1);
	ck_assert_uint_eq(in->meta_data_size, 71000);
	expect_bytes(s, 4096, a, sizeof a);
	expect_bytes(s, MiB, fimg + 123, 70000);
	cJSON *m = cJSON_Parse(odx_stream_meta_text(s));
	ck_assert_ptr_nonnull(m);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "incremental")));
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "parentCheckpoint")->valuestring, "cp1");
	ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "checkpointName")->valuestring, "cp2");
	cJSON_Delete(m);
	odx_stream_close(s);
	out_free(&o);
	close(dfd);
	free(fimg);
}
END_TEST

/* A stream is written in ascending order: a write before the end of what
 * was written fails with EINVAL naming the sink and the offset, and (as
 * every failed call) leaves the sink failed: nothing more is taken, not
 * even a write in order, and finish fails too. */
START_TEST(test_backwards)
{
	static const uint64_t at[] = {500 /* before */, 1050 /* inside */, 1099};
	struct odx_sink_opts so = {.codec = _i ? ODX_CODEC_ZLIB : ODX_CODEC_NONE};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	char buf[100] = {1};
	ck_assert_int_eq(odx_sink_data(o.sink, 1000, buf, sizeof buf, &err), 0);
	for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
		odx_error_clear(&err);
		int rc = k == 1 ? odx_sink_zero(o.sink, at[k], 10, &err)
				: odx_sink_data(o.sink, at[k], buf, 10, &err);
		ck_assert_int_eq(rc, -EINVAL);
		ck_assert_int_eq(err.code, EINVAL);
		ck_assert_ptr_nonnull(strstr(err.msg, "s.data.partial"));
		if (k == 0)
			ck_assert_ptr_nonnull(strstr(err.msg, "500"));
	}
	odx_error_clear(&err);
	ck_assert_int_eq(odx_sink_data(o.sink, 2000, buf, sizeof buf, &err), -EINVAL);
	odx_error_clear(&err);
	ck_assert_int_eq(odx_sink_finish(o.sink, MiB, &err), -EINVAL);
	out_free(&o);
}
END_TEST

/* A source that ends before the bytes asked for: EIO, and the sink is
 * failed whichever way the bytes were to go (into the payload by
 * copy_file_range, or through the buffer to be compressed): what it
 * wrote is part of a frame the caller did not get. */
START_TEST(test_source_ends_early)
{
	char *fimg;
	int dfd = data_file(3 * MiB, 5, &fimg);
	struct odx_sink_opts so = {.codec = _i ? ODX_CODEC_LZ4 : ODX_CODEC_NONE};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, 0, 4 * MiB, dfd, 0, &err), -EIO);
	ck_assert_int_eq(err.code, EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "s.data.partial"));
	odx_error_clear(&err);
	ck_assert_int_eq(odx_sink_zero(o.sink, 8 * MiB, 4096, &err), -EIO);
	odx_error_clear(&err);
	ck_assert_int_eq(odx_sink_finish(o.sink, 16 * MiB, &err), -EIO);
	out_free(&o);
	close(dfd);
	free(fimg);
}
END_TEST

/* Offsets and sizes a stream cannot have (2^63 and more: no reader takes
 * such a virtual size) are refused, and never wrap around. */
START_TEST(test_offset_limits)
{
	struct odx_sink_opts so = {.codec = ODX_CODEC_NONE, .incremental = true};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_int_eq(odx_sink_zero(o.sink, UINT64_C(1) << 63, 4096, &err), -EFBIG);
	out_free(&o);
	out_new(&o, &so);
	odx_error_clear(&err);
	ck_assert_int_eq(odx_sink_data(o.sink, UINT64_MAX - 10, "0123456789abcdef", 16, &err),
			 -EFBIG);
	out_free(&o);
}
END_TEST

/* ---- odx_sink_stream ---- */

/* Copies from a compressed source into a sink of the same codec (_i: 0
 * LZ4, 1 zlib).  The source (build_source) has a chunked frame F1 of
 * 32 MiB + 100000 bytes (chunks of 32 MiB and 100000), frames of 300000
 * (F2), 65541 (F3), 50000 (F4, inside F2), 4096 (F5) and 2000 (F6, over
 * F5's start) bytes and a zero frame inside F5.  The sink's level differs
 * from the source's, so a chunk it encoded again would not have the
 * source's bytes. */
static enum odx_codec loop_codec(int i)
{
	return i ? ODX_CODEC_ZLIB : ODX_CODEC_LZ4;
}

static struct odx_sink_opts same_codec_opts(int i)
{
	return (struct odx_sink_opts){.codec = loop_codec(i), .level = i ? 1 : 3};
}

/* All of it: whole chunks (F1's two, F3, F4, F6) copied as they are,
 * the parts of F2 and F5 left visible decoded and encoded. */
START_TEST(test_stream_whole)
{
	struct src src;
	uint64_t big = CHUNK + 100000;
	char *sp = build_source(&src, loop_codec(_i), big);
	struct odx_stream *s = open_strict(sp, 0);
	expect_bytes(s, 0, src.img, SRC_VSIZE); /* the hand-built source is right */
	struct odx_sink_opts so = same_codec_opts(_i);
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, SRC_VSIZE, &err) == 0, "%s", err.msg);
	out_finish(&o, SRC_VSIZE);
	uint64_t verbatim = big + F3_LEN + F4_LEN + F6_LEN;
	uint64_t buffered = (F2_LEN - F4_LEN) + (F5_LEN - 1000 - 500);
	ck_assert_uint_eq(verbatim + buffered, visible_data(big));
	expect_stats(&o, 0, verbatim, buffered, SRC_VSIZE - visible_data(big));

	struct odx_stream *d = open_strict(o.path, 0);
	const struct odx_stream_info *in = odx_stream_info(d);
	ck_assert_uint_eq(in->data_bytes, visible_data(big));
	ck_assert_uint_eq(in->chunks, 2 + 1 + 1 + 1 + 2 /* F2 */ + 2 /* F5 */);
	/* F1 | F2 first part | F4 | F2 second part | F3 | F6 | F5 twice */
	ck_assert_uint_eq(in->data_frames, 8);
	expect_same_runs(s, d, true);
	expect_bytes(d, 0, src.img, SRC_VSIZE);
	odx_stream_close(d);
	for (int f = F1; f < NF; f++) {
		bool whole = f != F2 && f != F5;
		ck_assert_msg(file_has(o.path, src.ch[chunk_of[f]].p, src.ch[chunk_of[f]].n) == whole,
			      "frame F%d: its chunk is %s the output", f + 1,
			      whole ? "not in" : "(encoded the same) in");
	}
	ck_assert(file_has(o.path, src.ch[chunk_of[F1] + 1].p, src.ch[chunk_of[F1] + 1].n));
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* A range starting inside F1's first chunk and ending inside F4, written
 * 9 MiB lower than it was: only F1's second chunk is whole; both ends
 * are decoded. */
START_TEST(test_stream_mid_chunk)
{
	struct src src;
	uint64_t big = CHUNK + 100000;
	char *sp = build_source(&src, loop_codec(_i), big);
	struct odx_stream *s = open_strict(sp, 0);
	struct odx_sink_opts so = same_codec_opts(_i);
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	uint64_t soff = 10 * MiB, len = F4_AT + 20000 - soff, off = MiB;
	ck_assert_msg(odx_sink_stream(o.sink, off, s, soff, len, &err) == 0, "%s", err.msg);
	out_finish(&o, SRC_VSIZE);
	uint64_t buffered = (CHUNK - soff) + 100000 /* F2 before F4 */ + 20000;
	expect_stats(&o, 0, 100000, buffered, SRC_VSIZE - buffered - 100000);
	ck_assert(file_has(o.path, src.ch[chunk_of[F1] + 1].p, src.ch[chunk_of[F1] + 1].n));
	ck_assert(!file_has(o.path, src.ch[chunk_of[F1]].p, src.ch[chunk_of[F1]].n));

	struct odx_stream *d = open_strict(o.path, 0);
	expect_zeros(d, 0, off);
	expect_bytes(d, off, src.img + soff, len);
	expect_zeros(d, off + len, SRC_VSIZE - off - len);
	odx_stream_close(d);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* From F1's start to inside its second chunk: the 32 MiB chunk is copied
 * as it is and the frame goes on with the rest, decoded and encoded (a
 * frame of whole 32 MiB chunks may take more). */
START_TEST(test_stream_chunk_then_part)
{
	struct src src;
	uint64_t big = CHUNK + 100000;
	char *sp = build_source(&src, loop_codec(_i), big);
	struct odx_stream *s = open_strict(sp, 0);
	struct odx_sink_opts so = same_codec_opts(_i);
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, CHUNK + 50000, &err) == 0, "%s", err.msg);
	out_finish(&o, 40 * MiB);
	expect_stats(&o, 0, CHUNK, 50000, 40 * MiB - CHUNK - 50000);
	ck_assert(file_has(o.path, src.ch[chunk_of[F1]].p, src.ch[chunk_of[F1]].n));

	struct odx_stream *d = open_strict(o.path, 0);
	ck_assert_uint_eq(odx_stream_info(d)->data_frames, 1);
	ck_assert_uint_eq(odx_stream_info(d)->chunks, 2);
	expect_bytes(d, 0, src.img, CHUNK + 50000);
	expect_zeros(d, CHUNK + 50000, 40 * MiB - CHUNK - 50000);
	odx_stream_close(d);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* Between codecs nothing is copied as it is: LZ4 to none (decoded), none
 * to LZ4 (encoded), LZ4 to zlib, and none to none (in the kernel).  The
 * decoded image is the same every time.  A small source: the chunking is
 * the business of the tests above. */
static const struct {
	enum odx_codec from, to;
} cross[] = {
	{ODX_CODEC_LZ4, ODX_CODEC_NONE},
	{ODX_CODEC_NONE, ODX_CODEC_LZ4},
	{ODX_CODEC_LZ4, ODX_CODEC_ZLIB},
	{ODX_CODEC_NONE, ODX_CODEC_NONE},
};

START_TEST(test_stream_cross_codec)
{
	struct src src;
	uint64_t big = MiB + 100000;
	char *sp = build_source(&src, cross[_i].from, big);
	struct odx_stream *s = open_strict(sp, 0);
	expect_bytes(s, 0, src.img, SRC_VSIZE);
	struct odx_sink_opts so = {.codec = cross[_i].to};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, SRC_VSIZE, &err) == 0, "%s", err.msg);
	out_finish(&o, SRC_VSIZE);
	bool kernel = cross[_i].from == ODX_CODEC_NONE && cross[_i].to == ODX_CODEC_NONE &&
		      kernel_copies();
	uint64_t v = visible_data(big);
	expect_stats(&o, kernel ? v : 0, 0, kernel ? 0 : v, SRC_VSIZE - v);

	struct odx_stream *d = open_strict(o.path, 0);
	ck_assert_int_eq(odx_stream_info(d)->codec, cross[_i].to);
	ck_assert_uint_eq(odx_stream_info(d)->data_bytes, v);
	expect_same_runs(s, d, true);
	expect_bytes(d, 0, src.img, SRC_VSIZE);
	odx_stream_close(d);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* An incremental source into an incremental sink: the ranges no frame
 * covers stay without frame, the zero frame stays a zero frame. */
START_TEST(test_stream_incremental)
{
	struct src src;
	src_init(&src, _i ? ODX_CODEC_LZ4 : ODX_CODEC_NONE, true, 8 * MiB);
	src_data(&src, MiB, 200000, 1);
	src_data(&src, 3 * MiB, 100000, 2);
	src_data(&src, MiB + 150000, 100000, 3); /* over the end of the first */
	src_zero(&src, 3 * MiB + 50000, 10000);   /* inside the second */
	char *sp = src_file(&src);
	struct odx_stream *s = open_strict(sp, ODX_OPEN_META_TEXT);
	ck_assert(odx_stream_info(s)->incremental);
	struct odx_sink_opts so = {.codec = src.codec, .incremental = true,
				   .meta_text = odx_stream_meta_text(s)};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, 8 * MiB, &err) == 0, "%s", err.msg);
	out_finish(&o, 8 * MiB);
	struct odx_stream *d = open_strict(o.path, 0);
	ck_assert(odx_stream_info(d)->incremental);
	ck_assert_uint_eq(odx_stream_info(d)->zero_frames, 1);
	ck_assert_uint_eq(odx_stream_info(d)->zero_bytes, 10000);
	expect_same_runs(s, d, false);
	const struct row want[] = {
		{0, MiB, ODX_EXTENT_UNMAPPED},
		{MiB, 250000, ODX_EXTENT_DATA},
		{MiB + 250000, 2 * MiB - 250000, ODX_EXTENT_UNMAPPED},
		{3 * MiB, 50000, ODX_EXTENT_DATA},
		{3 * MiB + 50000, 10000, ODX_EXTENT_ZERO},
		{3 * MiB + 60000, 40000, ODX_EXTENT_DATA},
		{3 * MiB + 100000, 5 * MiB - 100000, ODX_EXTENT_UNMAPPED},
	};
	if (src.codec == ODX_CODEC_NONE) /* one frame, contiguous in the file */
		expect_map(d, want, sizeof want / sizeof want[0]);
	expect_bytes(d, 0, src.img, 8 * MiB);
	odx_stream_close(d);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* ---- meta ---- */

static const char *str_of(cJSON *o, const char *key)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* The meta of the source as the sink's start: unknown keys kept, keys in
 * their order, virtualSize and dataSize those of the new stream, the
 * given chain keys set. */
START_TEST(test_meta_text)
{
	struct src src;
	uint64_t big = MiB;
	char *sp = build_source(&src, ODX_CODEC_LZ4, big);
	struct odx_stream *s = open_strict(sp, ODX_OPEN_META_TEXT);
	struct odx_sink_opts so = {.codec = ODX_CODEC_LZ4, .meta_text = odx_stream_meta_text(s),
				   .checkpoint = "cp9", .parent = "cp8", .disk_name = "vdb"};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, 50 * MiB, &err) == 0, "%s", err.msg);
	out_finish(&o, 50 * MiB);
	struct odx_stream *d = open_strict(o.path, ODX_OPEN_META_TEXT);
	ck_assert_uint_eq(odx_stream_info(d)->virtual_size, 50 * MiB);
	cJSON *a = cJSON_Parse(odx_stream_meta_text(s)), *b = cJSON_Parse(odx_stream_meta_text(d));
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "custom"),
				cJSON_GetObjectItemCaseSensitive(b, "custom"), true));
	ck_assert_str_eq(str_of(b, "note"), "kept");
	ck_assert_str_eq(str_of(b, "date"), "2026-01-01T00:00:00");
	ck_assert_str_eq(str_of(b, "diskFormat"), "raw");
	ck_assert_str_eq(str_of(b, "checkpointName"), "cp9");
	ck_assert_str_eq(str_of(b, "parentCheckpoint"), "cp8");
	ck_assert_str_eq(str_of(b, "diskName"), "vdb");
	ck_assert_str_eq(str_of(b, "compressionMethod"), "lz4");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "incremental")));
	ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(b, "virtualSize")->valuedouble,
			    (double)(50 * MiB));
	/* what is left of the frames below 50 MiB: F1 to F4 */
	uint64_t data = big + F2_LEN + F3_LEN;
	ck_assert_uint_eq(odx_stream_info(d)->data_bytes, data);
	ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(b, "dataSize")->valuedouble,
			    (double)data);
	/* the original's keys, in the original's order */
	cJSON *kb = b->child;
	for (cJSON *ka = a->child; ka; ka = ka->next) {
		while (kb && strcmp(kb->string, ka->string))
			kb = kb->next;
		ck_assert_msg(kb != NULL, "key \"%s\" is missing or out of order", ka->string);
	}
	cJSON_Delete(a);
	cJSON_Delete(b);
	odx_stream_close(d);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	src_free(&src);
}
END_TEST

/* A version 1 meta with the hyphenated spellings: the sizes are written
 * under the spelling it has, never twice. */
START_TEST(test_meta_hyphen_keys)
{
	struct gbuf b = {0};
	char d[3000];
	fill(d, sizeof d, 7);
	g_meta(&b, "{\"virtual-size\": 1048576, \"data-size\": 3000, \"stream-version\": 1, "
		   "\"custom\": 5}");
	g_data(&b, 5000, d, sizeof d);
	g_hdr(&b, "stop", 0, 0);
	char *sp = g_file(&b);
	struct odx_stream *s = open_strict(sp, ODX_OPEN_META_TEXT);
	struct odx_sink_opts so = {.meta_text = odx_stream_meta_text(s)};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_msg(odx_sink_stream(o.sink, 0, s, 0, MiB, &err) == 0, "%s", err.msg);
	out_finish(&o, 2 * MiB);
	struct odx_stream *t = open_strict(o.path, ODX_OPEN_META_TEXT);
	ck_assert_uint_eq(odx_stream_info(t)->virtual_size, 2 * MiB);
	ck_assert_uint_eq(odx_stream_info(t)->meta_data_size, 3000);
	cJSON *m = cJSON_Parse(odx_stream_meta_text(t));
	ck_assert_ptr_nonnull(m);
	int sizes = 0;
	for (cJSON *k = m->child; k; k = k->next)
		sizes += !strcmp(k->string, "virtualSize") + !strcmp(k->string, "virtual-size") +
			 !strcmp(k->string, "dataSize") + !strcmp(k->string, "data-size") +
			 !strcmp(k->string, "stream-version");
	ck_assert_int_eq(sizes, 2);
	ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(m, "custom")->valuedouble, 5);
	cJSON_Delete(m);
	expect_bytes(t, 5000, d, sizeof d);
	odx_stream_close(t);
	out_free(&o);
	odx_stream_close(s);
	unlink(sp);
	free(sp);
	free(b.p);
}
END_TEST

/* ---- publishing ---- */

/* noreplace never replaces: EEXIST, the file there untouched, the new
 * stream still under its own name, no .chksum written. */
START_TEST(test_publish_noreplace)
{
	struct odx_sink_opts so = {.codec = ODX_CODEC_NONE};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	int tfd = openat(o.dirfd, "s.data", O_WRONLY | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(tfd, 0);
	ck_assert_int_eq(write(tfd, "old", 3), 3);
	close(tfd);
	ck_assert_int_eq(odx_sink_data(o.sink, 0, "new", 3, &err), 0);
	ck_assert_int_eq(odx_sink_finish(o.sink, 4096, &err), 0);
	ck_assert_int_eq(odx_stream_publish_at(o.fd, o.dirfd, "s.data.partial", "s.data", true,
					       true, &err),
			 -EEXIST);
	ck_assert_int_eq(err.code, EEXIST);
	ck_assert_ptr_nonnull(strstr(err.msg, "s.data.partial"));
	char buf[8] = "";
	tfd = openat(o.dirfd, "s.data", O_RDONLY);
	ck_assert_int_eq(read(tfd, buf, sizeof buf), 3);
	close(tfd);
	ck_assert_mem_eq(buf, "old", 3);
	ck_assert_int_eq(faccessat(o.dirfd, "s.data.chksum", F_OK, 0), -1);
	char partial[160];
	snprintf(partial, sizeof partial, "%s/s.data.partial", o.dir);
	ck_assert_int_eq(check_file(partial), 0);
	/* and without noreplace it does replace */
	odx_error_clear(&err);
	ck_assert_int_eq(odx_stream_publish_at(o.fd, o.dirfd, "s.data.partial", "s.data", true,
					       false, &err),
			 0);
	ck_assert_int_eq(check_file(o.path), 0);
	ck_assert_int_eq(faccessat(o.dirfd, "s.data.chksum", F_OK, 0), 0);
	struct odx_stream *s = open_strict(o.path, 0);
	expect_bytes(s, 0, "new", 3);
	odx_stream_close(s);
	out_free(&o);
}
END_TEST

/* What test_cut_short wrote where: the bytes at image offset `at`, and
 * where that piece ends. */
static const char *cut_want(const char *a, const char *fimg, uint64_t at, uint64_t *end)
{
	if (at < 5000) {
		*end = 5000;
		return a + at;
	}
	if (at < 305000) {
		*end = 305000;
		return fimg + (at - 5000);
	}
	if (at >= 600000 && at < 800000) {
		*end = 800000;
		return fimg + 300000 + (at - 600000);
	}
	ck_assert_msg(at >= 900000 && at < 901000, "data served at %" PRIu64, at);
	*end = 901000;
	return a + (at - 900000);
}

/* The file of o as it is now, and that file cut at every `step`th byte:
 * each opens as torn (never damaged) with the size it will have, and
 * serves only bytes written there.  Returns the data bytes the uncut file
 * serves. */
static uint64_t check_cuts(struct out *o, const char *a, const char *fimg, off_t step)
{
	struct stat st;
	struct odx_error err;
	ck_assert_int_eq(fstat(o->fd, &st), 0);
	char *file = malloc((size_t)st.st_size + 1), cut[160];
	ck_assert_int_eq(pread(o->fd, file, (size_t)st.st_size, 0), st.st_size);
	snprintf(cut, sizeof cut, "%s/cut.data.partial", o->dir);
	uint64_t whole = 0;
	for (off_t n = st.st_size; n > ODX_FRAME_HEADER_LEN; n -= n > step ? step : n) {
		int fd = open(cut, O_RDWR | O_CREAT | O_TRUNC, 0644);
		ck_assert_int_eq(pwrite(fd, file, (size_t)n, 0), n);
		close(fd);
		struct odx_stream_opts oo = {.flags = ODX_OPEN_ALLOW_TORN};
		struct odx_stream *t;
		odx_error_clear(&err);
		int r = odx_stream_open(cut, &oo, &t, &err);
		if (r < 0 && n < 440)
			continue; /* cut inside the meta frame: no stream at all */
		ck_assert_msg(r == 0, "cut at %lld of %lld: %s", (long long)n, (long long)st.st_size,
			      err.msg);
		ck_assert(!odx_stream_info(t)->complete);
		ck_assert_uint_eq(odx_stream_info(t)->virtual_size, 4 * MiB);
		const struct odx_extmap *m = odx_stream_map(t);
		for (size_t i = 0; i < m->count; i++) {
			const struct odx_extent *e = &m->ext[i];
			if (e->kind != ODX_EXTENT_DATA)
				continue;
			if (n == st.st_size)
				whole += e->length;
			for (uint64_t at = e->offset, end; at < e->offset + e->length; at = end) {
				const char *want = cut_want(a, fimg, at, &end);
				if (end > e->offset + e->length)
					end = e->offset + e->length;
				expect_bytes(t, at, want, end - at);
			}
		}
		odx_stream_close(t);
	}
	unlink(cut);
	free(file);
	return whole;
}

/* A stream cut short anywhere (the daemon or its caller killed while a
 * stream destination is written) is torn, never damaged.  The file is
 * taken as a crash would leave it after each call of an unfinished sink
 * (uncompressed, data copied by descriptor: the header of a run reaches
 * the file before its payload, and must already say it), then cut again.
 * (Compressed streams cut short: merge-kill.sh kills the daemon writing
 * LZ4 ones.) */
START_TEST(test_cut_short)
{
	char *fimg, a[5000];
	int dfd = data_file(MiB, 11, &fimg);
	fill(a, sizeof a, 12);
	struct odx_sink_opts so = {.codec = ODX_CODEC_NONE, .virtual_size = 4 * MiB};
	struct out o;
	struct odx_error err;
	odx_error_clear(&err);
	out_new(&o, &so);
	ck_assert_int_eq(odx_sink_data(o.sink, 0, a, sizeof a, &err), 0);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, sizeof a, 300000, dfd, 0, &err), 0);
	/* the run is still open (no CRLF yet: not served), but its header on
	 * the file already covers the copy: torn, not damaged */
	check_cuts(&o, a, fimg, 4999);
	ck_assert_int_eq(odx_sink_zero(o.sink, 400000, 100000, &err), 0);
	ck_assert_int_eq(odx_sink_data_fd(o.sink, 600000, 200000, dfd, 300000, &err), 0);
	/* the first run is whole now, the second open */
	ck_assert_uint_ge(check_cuts(&o, a, fimg, 997), sizeof a + 300000);
	ck_assert_int_eq(odx_sink_data(o.sink, 900000, a, 1000, &err), 0);
	check_cuts(&o, a, fimg, 4999);
	free(fimg);
	close(dfd);
	out_free(&o);
}
END_TEST


static Suite *sink_suite(void)
{
	Suite *s = suite_create("sink");
	TCase *t = tcase_create("calls");
	tcase_set_timeout(t, 60);
	tcase_add_loop_test(t, test_full_uncompressed, 0, 2);
	tcase_add_loop_test(t, test_incremental, 0, 2);
	tcase_add_loop_test(t, test_backwards, 0, 2);
	tcase_add_loop_test(t, test_source_ends_early, 0, 2);
	tcase_add_test(t, test_offset_limits);
	tcase_add_test(t, test_cut_short);
	tcase_add_test(t, test_publish_noreplace);
	suite_add_tcase(s, t);
	/* 32 MiB chunks: encoded by the builder, decoded and encoded by the
	 * sink; a few seconds on a loaded machine, more under sanitizers */
	t = tcase_create("stream");
	tcase_set_timeout(t, 300);
	tcase_add_loop_test(t, test_stream_whole, 0, 2);
	tcase_add_loop_test(t, test_stream_mid_chunk, 0, 2);
	tcase_add_loop_test(t, test_stream_chunk_then_part, 0, 2);
	tcase_add_loop_test(t, test_stream_cross_codec, 0, (int)(sizeof cross / sizeof cross[0]));
	tcase_add_loop_test(t, test_stream_incremental, 0, 2);
	tcase_add_test(t, test_meta_text);
	tcase_add_test(t, test_meta_hyphen_keys);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(sink_suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
