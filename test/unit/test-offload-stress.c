/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The offload engine under concurrent use: several threads at once issue
 * tokens (1 to 20 ms times to live, on the real clock, so tokens expire
 * and are swept while others use them), apply them with offload writes,
 * release them (their own and each other's), and invalidate them by
 * writing to a raw source through the backend wrappers (odx_image_write
 * calls the engine's modify hook).  Bounded in time (STRESS_MS) and in
 * iterations, so it stays a few seconds under the sanitizers too.
 *
 * Checked afterwards, with the engine quiet:
 *   - every call returned 0 or an errno that its situation allows (a token
 *     another thread released, that expired, or whose source was written;
 *     the count caps, the engine's and the owner's);
 *   - every successful offload write left the right bytes: those of the
 *     stable source exactly, of the written source only non-zero bytes
 *     (its range may change while it is copied, documented);
 *   - the engine's counters agree with what the threads saw, and every
 *     token that left the table left it one way (released, expired or
 *     dropped as invalidated), none twice;
 *   - every path was taken at least once (expiry, release, invalidation,
 *     use, a cap); no owner entry is left once its tokens are gone.
 * Run plain, under ASan (test/run-all.sh --sanitize) and under TSan
 * (test/run-all.sh --tsan): the sanitizers see the races and
 * use-after-frees the assertions cannot.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "odxfs/offload.h"
#include "src/backend/backend.h"

#define STRESS_MS 2000         /* wall time of one run */
#define STRESS_MAX_ITER 50000  /* per thread */
#define STRESS_THREADS 4
#define STRESS_MAX_TOKENS 16   /* small, so the count caps are reached */
#define STRESS_OWNERS 3        /* thread i issues tokens for owner i % 3 */
#define STRESS_PER_OWNER 6     /* 3 owners x 6 > 16: both caps can bind */
#define STRESS_MAX_TTL 100     /* ms, the longest time to live asked for */
#define RING 64                /* tokens shared between the threads */

/* The stable source: 1 MiB, 16 KiB of data at the start of every 64 KiB,
 * holes between (ZERO_DATA tokens there).  Never written. */
#define STABLE_SIZE (1u << 20)
#define STABLE_STRIDE 65536u
#define STABLE_DATA 16384u
/* The volatile source: 256 KiB of non-zero bytes, overwritten 4 KiB at a
 * time with other non-zero bytes while tokens on it are in use. */
#define VOLATILE_SIZE (256u << 10)

static uint8_t stable_byte(uint64_t off)
{
	if (off % STABLE_STRIDE >= STABLE_DATA)
		return 0;
	return (uint8_t)((off * 2654435761u) >> 11) | 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *tmp_dir(void)
{
	const char *d = getenv("TMPDIR");
	return d && *d ? d : "/tmp";
}

/* A raw-backend image over a new unlinked temp file. */
static struct odx_image *raw_tmp_image(void)
{
	char path[256];
	snprintf(path, sizeof path, "%s/odx-stress.XXXXXX", tmp_dir());
	int fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	unlink(path);
	struct odx_image *img;
	ck_assert_int_eq(odx_image_open_as(&odx_backend_raw, fd, path, NULL, &img, NULL), 0);
	return img;
}

/* ---- shared state ------------------------------------------------------- */

struct held {
	uint8_t token[ODX_TOKEN_SIZE];
	bool stable;         /* which source */
	uint64_t src_off, length;
};

struct stress {
	struct odx_offload_engine *eng;
	struct odx_image *stable, *vol;
	uint64_t deadline;

	pthread_mutex_t ring_lock; /* the test's, guards ring and ring_n only */
	struct held ring[RING];
	unsigned ring_n;

	/* What the threads saw. */
	atomic_uint_fast64_t issued, used, released, rejected, capped, capped_owner;
	atomic_uint_fast64_t written_bytes, vol_writes;
	pthread_mutex_t fail_lock;
	char failure[256]; /* the first unexpected result, "" if none */
};

__attribute__((format(printf, 2, 3)))
static void stress_fail(struct stress *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&s->fail_lock);
	if (!s->failure[0])
		vsnprintf(s->failure, sizeof s->failure, fmt, ap);
	pthread_mutex_unlock(&s->fail_lock);
	va_end(ap);
}

static bool stress_failed(struct stress *s)
{
	pthread_mutex_lock(&s->fail_lock);
	bool f = s->failure[0] != 0;
	pthread_mutex_unlock(&s->fail_lock);
	return f;
}

/* Token errors a write or release may meet here: another thread released
 * the token (or it expired or was dropped long enough ago that its
 * tombstone was reused), it expired, its source was written. */
static bool token_error_expected(int r)
{
	return r == -ENOKEY || r == -EKEYEXPIRED || r == -EKEYREVOKED;
}

struct worker {
	struct stress *s;
	unsigned seed;
	uint32_t owner;        /* whose caps its offload reads count against */
	struct odx_image *dst; /* this thread's own destination */
	uint8_t *buf;
	pthread_t thread;
};

static void ring_put(struct stress *s, const struct held *h, unsigned slot)
{
	pthread_mutex_lock(&s->ring_lock);
	if (s->ring_n < RING)
		s->ring[s->ring_n++] = *h;
	else
		s->ring[slot % RING] = *h;
	pthread_mutex_unlock(&s->ring_lock);
}

static bool ring_get(struct stress *s, unsigned slot, struct held *out)
{
	pthread_mutex_lock(&s->ring_lock);
	bool any = s->ring_n > 0;
	if (any)
		*out = s->ring[slot % s->ring_n];
	pthread_mutex_unlock(&s->ring_lock);
	return any;
}

static void op_issue(struct worker *w)
{
	struct stress *s = w->s;
	static const uint32_t ttls[] = { 1, 1, 1, 2, 5, 20, STRESS_MAX_TTL };
	struct held h = { .stable = rand_r(&w->seed) % 2 };
	uint64_t size = h.stable ? STABLE_SIZE : VOLATILE_SIZE;
	h.src_off = (uint64_t)(rand_r(&w->seed) % (size / 512)) * 512;
	uint64_t len = 1 + (uint64_t)rand_r(&w->seed) % 65536;
	struct odx_offload_read_result rd;
	int r = odx_offload_read(s->eng, h.stable ? s->stable : s->vol, w->owner, h.src_off,
				 len, ttls[rand_r(&w->seed) % 7], 0, &rd, NULL);
	if (r == -ENFILE || r == -EMFILE) {
		atomic_fetch_add(r == -ENFILE ? &s->capped : &s->capped_owner, 1);
		return;
	}
	if (r < 0 || rd.transfer_length == 0 || rd.transfer_length > len) {
		stress_fail(s, "offload read: %d, transfer length %llu", r,
			    (unsigned long long)rd.transfer_length);
		return;
	}
	atomic_fetch_add(&s->issued, 1);
	h.length = rd.transfer_length;
	memcpy(h.token, rd.token, ODX_TOKEN_SIZE);
	ring_put(s, &h, (unsigned)rand_r(&w->seed));
}

/* dst[off, off + n) holds what the token's source held. */
static void check_written(struct worker *w, const struct held *h, uint64_t off, uint64_t n)
{
	ssize_t k = pread(w->dst->fd, w->buf, n, (off_t)off);
	if (k != (ssize_t)n) {
		stress_fail(w->s, "pread of the destination: %zd of %llu bytes", k,
			    (unsigned long long)n);
		return;
	}
	for (uint64_t i = 0; i < n; i++) {
		bool ok = h->stable ? w->buf[i] == stable_byte(off + i) : w->buf[i] != 0;
		if (!ok) {
			stress_fail(w->s, "wrong byte at destination offset %llu: %u (%s source)",
				    (unsigned long long)(off + i), w->buf[i],
				    h->stable ? "stable" : "volatile");
			return;
		}
	}
}

static void op_use(struct worker *w)
{
	struct stress *s = w->s;
	struct held h;
	if (!ring_get(s, (unsigned)rand_r(&w->seed), &h))
		return;
	/* A part of the token (from a transfer offset) or all of it, at the
	 * source's own offset so the expected bytes are easy to tell. */
	uint64_t toff = rand_r(&w->seed) % 2 ? 0 : (uint64_t)rand_r(&w->seed) % h.length;
	uint64_t off = h.src_off + toff;
	struct odx_offload_write_result wr;
	int r = odx_offload_write(s->eng, w->dst, off, h.length - toff, h.token, toff,
				  ODX_OFFLOAD_WRITE_WRITABLE, &wr, NULL);
	if (token_error_expected(r)) {
		atomic_fetch_add(&s->rejected, 1);
		return;
	}
	if (r < 0 || wr.length_written != h.length - toff) {
		stress_fail(s, "offload write: %d, %llu bytes written", r,
			    (unsigned long long)wr.length_written);
		return;
	}
	atomic_fetch_add(&s->used, 1);
	atomic_fetch_add(&s->written_bytes, wr.length_written);
	check_written(w, &h, off, wr.length_written);
}

static void op_release(struct worker *w)
{
	struct stress *s = w->s;
	struct held h;
	if (!ring_get(s, (unsigned)rand_r(&w->seed), &h))
		return;
	int r = odx_offload_release(s->eng, h.token);
	if (r == 0)
		atomic_fetch_add(&s->released, 1);
	else if (token_error_expected(r))
		atomic_fetch_add(&s->rejected, 1);
	else
		stress_fail(s, "release: %d", r);
}

static void op_invalidate(struct worker *w)
{
	struct stress *s = w->s;
	uint8_t block[4096];
	memset(block, 2 + rand_r(&w->seed) % 254, sizeof block);
	uint64_t off = (uint64_t)(rand_r(&w->seed) % (VOLATILE_SIZE / 4096)) * 4096;
	ssize_t k = odx_image_write(s->vol, block, sizeof block, off);
	if (k != (ssize_t)sizeof block)
		stress_fail(s, "write to the volatile source: %zd", k);
	else
		atomic_fetch_add(&s->vol_writes, 1);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (unsigned i = 0; i < STRESS_MAX_ITER && now_ms() < w->s->deadline; i++) {
		if (stress_failed(w->s))
			break;
		unsigned op = (unsigned)rand_r(&w->seed) % 16;
		if (op < 6)
			op_issue(w);
		else if (op < 12)
			op_use(w);
		else if (op < 15)
			op_release(w);
		else
			op_invalidate(w);
	}
	return NULL;
}

/* ---- the test ------------------------------------------------------------ */

static uint8_t volatile_initial_byte(uint64_t off)
{
	return 1;
}

/* A raw image of `size` bytes, byte(i) at offset i; 4 KiB blocks of zeros
 * are left as holes. */
static struct odx_image *source_image(uint64_t size, uint8_t (*byte)(uint64_t))
{
	struct odx_image *img = raw_tmp_image();
	uint8_t b[4096];
	for (uint64_t off = 0; off < size; off += sizeof b) {
		uint8_t any = 0;
		for (uint64_t i = 0; i < sizeof b; i++)
			any |= b[i] = byte(off + i);
		if (any)
			ck_assert_int_eq(pwrite(img->fd, b, sizeof b, (off_t)off), sizeof b);
	}
	ck_assert_int_eq(ftruncate(img->fd, (off_t)size), 0);
	return img;
}

/* _i: 0 copy_file_range, 1 the bounded buffer for everything. */
START_TEST(test_stress)
{
	static struct stress st; /* large: not on the stack */
	struct stress *s = &st;
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->ring_lock, NULL);
	pthread_mutex_init(&s->fail_lock, NULL);
	struct odx_offload_config cfg;
	odx_offload_config_init(&cfg);
	cfg.max_tokens = STRESS_MAX_TOKENS;
	cfg.max_tokens_per_owner = STRESS_PER_OWNER;
	cfg.use_copy_file_range = _i == 0;
	cfg.buffer_size = 16384; /* several rounds through the buffer */
	ck_assert_int_eq(odx_offload_engine_create(&cfg, &s->eng), 0);
	s->stable = source_image(STABLE_SIZE, stable_byte);
	s->vol = source_image(VOLATILE_SIZE, volatile_initial_byte);

	struct worker w[STRESS_THREADS];
	s->deadline = now_ms() + STRESS_MS;
	for (unsigned i = 0; i < STRESS_THREADS; i++) {
		w[i] = (struct worker){ .s = s, .seed = 1234567u * (i + 1) + (unsigned)_i,
					.owner = 1000 + i % STRESS_OWNERS,
					.dst = raw_tmp_image(), .buf = malloc(65536) };
		ck_assert_ptr_nonnull(w[i].buf);
	}
	for (unsigned i = 0; i < STRESS_THREADS; i++)
		ck_assert_int_eq(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
	for (unsigned i = 0; i < STRESS_THREADS; i++)
		ck_assert_int_eq(pthread_join(w[i].thread, NULL), 0);
	ck_assert_msg(!s->failure[0], "%s", s->failure);

	/* Every token issued during the run has expired by now; one more
	 * offload read sweeps them all, and whatever was invalidated with
	 * them. */
	usleep((STRESS_MAX_TTL + 10) * 1000);
	struct odx_offload_read_result rd;
	ck_assert_int_eq(odx_offload_read(s->eng, s->stable, 0, 0, 4096, 60000, 0, &rd, NULL), 0);
	struct odx_offload_stats c;
	odx_offload_get_stats(s->eng, &c);
	uint64_t issued = atomic_load(&s->issued) + 1;
	printf("%s: %llu issued, %llu used, %llu released, %llu expired, %llu invalidated, "
	       "%llu rejected, %llu at the cap, %llu at an owner's\n",
	       _i ? "buffer" : "copy_file_range",
	       (unsigned long long)c.tokens_issued, (unsigned long long)c.tokens_used,
	       (unsigned long long)c.tokens_released, (unsigned long long)c.tokens_expired,
	       (unsigned long long)c.tokens_invalidated, (unsigned long long)c.tokens_rejected,
	       (unsigned long long)atomic_load(&s->capped),
	       (unsigned long long)atomic_load(&s->capped_owner));
	ck_assert_uint_eq(c.tokens_issued, issued);
	ck_assert_uint_eq(c.tokens_used, atomic_load(&s->used));
	ck_assert_uint_eq(c.tokens_released, atomic_load(&s->released));
	ck_assert_uint_eq(c.tokens_rejected, atomic_load(&s->rejected));
	ck_assert_uint_eq(c.tokens_live, 1);
	ck_assert_uint_gt(c.token_bytes, 0);
	ck_assert_uint_eq(c.token_owners, 1);
	/* Out of the table once each: released, expired, or dropped when
	 * found invalidated (at most as many as were invalidated). */
	ck_assert_uint_le(c.tokens_released + c.tokens_expired + c.tokens_live, issued);
	ck_assert_uint_le(issued - c.tokens_released - c.tokens_expired - c.tokens_live,
			  c.tokens_invalidated);
	ck_assert_uint_ge(c.bytes_kernel + c.bytes_buffered + c.bytes_holes,
			  atomic_load(&s->written_bytes));
	if (_i)
		ck_assert_uint_eq(c.bytes_kernel, 0);
	/* Every path was taken. */
	ck_assert_uint_gt(c.tokens_used, 0);
	ck_assert_uint_gt(c.tokens_released, 0);
	ck_assert_uint_gt(c.tokens_expired, 0);
	ck_assert_uint_gt(c.tokens_invalidated, 0);
	ck_assert_uint_gt(c.tokens_rejected, 0);
	ck_assert_uint_gt(atomic_load(&s->capped) + atomic_load(&s->capped_owner), 0);
	ck_assert_uint_gt(atomic_load(&s->vol_writes), 0);

	ck_assert_int_eq(odx_offload_release(s->eng, rd.token), 0);
	odx_offload_get_stats(s->eng, &c);
	ck_assert_uint_eq(c.tokens_live, 0);
	ck_assert_uint_eq(c.token_bytes, 0);
	ck_assert_uint_eq(c.token_owners, 0);
	for (unsigned i = 0; i < STRESS_THREADS; i++) {
		odx_image_unref(w[i].dst);
		free(w[i].buf);
	}
	odx_offload_engine_destroy(s->eng);
	odx_image_unref(s->stable);
	odx_image_unref(s->vol);
	pthread_mutex_destroy(&s->ring_lock);
	pthread_mutex_destroy(&s->fail_lock);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("offload-stress");
	TCase *tc = tcase_create("threads");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_stress, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(stress_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
