/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of the extent map: appends and merges, overlaps against a
 * byte-by-byte model, 1-byte and unaligned extents, lookup and seek. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "odxfs/extmap.h"

static struct odx_extent ext(uint64_t off, uint64_t len, int kind, uint64_t src)
{
	return (struct odx_extent){.offset = off, .length = len, .src = src,
				   .frame = ODX_NO_FRAME, .kind = (uint8_t)kind};
}

static int add(struct odx_extmap *m, struct odx_extent e)
{
	return odx_extmap_add(m, &e);
}

static void assert_invariants(const struct odx_extmap *m)
{
	uint64_t at = 0;
	for (size_t i = 0; i < m->count; i++) {
		ck_assert_uint_eq(m->ext[i].offset, at);
		ck_assert_uint_gt(m->ext[i].length, 0);
		at += m->ext[i].length;
	}
	ck_assert_uint_eq(at, m->size);
}

START_TEST(test_append_merge_gaps)
{
	struct odx_extmap m;
	odx_extmap_init(&m, 1000);
	ck_assert_int_eq(add(&m, ext(10, 5, ODX_EXTENT_DATA, 100)), 0);
	/* contiguous in image and file: merged */
	ck_assert_int_eq(add(&m, ext(15, 5, ODX_EXTENT_DATA, 105)), 0);
	/* contiguous in image, not in file: separate */
	ck_assert_int_eq(add(&m, ext(20, 1, ODX_EXTENT_DATA, 999)), 0);
	ck_assert_int_eq(add(&m, ext(21, 9, ODX_EXTENT_ZERO, 0)), 0);
	ck_assert_int_eq(add(&m, ext(30, 70, ODX_EXTENT_ZERO, 0)), 0);
	ck_assert_int_eq(add(&m, ext(999, 1, ODX_EXTENT_DATA, 7)), 0);
	ck_assert_int_eq(add(&m, ext(999, 2, ODX_EXTENT_DATA, 7)), -EINVAL);
	ck_assert_int_eq(odx_extmap_finish(&m), 0);
	assert_invariants(&m);
	ck_assert_uint_eq(m.count, 6); /* unmapped data data zero unmapped data */
	ck_assert_int_eq(m.ext[0].kind, ODX_EXTENT_UNMAPPED);
	ck_assert_uint_eq(m.ext[1].length, 10);
	ck_assert_uint_eq(m.ext[2].src, 999);
	ck_assert_uint_eq(m.ext[3].length, 79);
	ck_assert_uint_eq(m.ext[5].offset, 999);
	ck_assert_uint_eq(odx_extmap_data_bytes(&m), 12);
	odx_extmap_free(&m);
}
END_TEST

START_TEST(test_find_and_slice)
{
	struct odx_extmap m;
	odx_extmap_init(&m, 100);
	for (uint64_t i = 0; i < 100; i += 2)
		add(&m, ext(i, 1, ODX_EXTENT_DATA, 1000 + 7 * i));
	odx_extmap_finish(&m);
	assert_invariants(&m);
	ck_assert_uint_eq(m.count, 100);
	for (uint64_t off = 0; off < 100; off++) {
		size_t i = odx_extmap_find(&m, off);
		ck_assert_uint_eq(m.ext[i].offset, off);
	}
	ck_assert_uint_eq(odx_extmap_find(&m, 100), m.count);
	struct odx_extmap n;
	odx_extmap_init(&n, 50);
	add(&n, ext(3, 40, ODX_EXTENT_DATA, 500));
	odx_extmap_finish(&n);
	struct odx_extent s = odx_extent_slice(&n.ext[1], 10, 100);
	ck_assert_uint_eq(s.offset, 10);
	ck_assert_uint_eq(s.length, 33);
	ck_assert_uint_eq(s.src, 507);
	ck_assert_int_eq(odx_extmap_seek(&n, 0, SEEK_DATA), 3);
	ck_assert_int_eq(odx_extmap_seek(&n, 5, SEEK_DATA), 5);
	ck_assert_int_eq(odx_extmap_seek(&n, 5, SEEK_HOLE), 43);
	ck_assert_int_eq(odx_extmap_seek(&n, 43, SEEK_DATA), -ENXIO);
	ck_assert_int_eq(odx_extmap_seek(&n, 49, SEEK_HOLE), 49);
	ck_assert_int_eq(odx_extmap_seek(&n, 50, SEEK_HOLE), -ENXIO);
	odx_extmap_free(&m);
	odx_extmap_free(&n);
}
END_TEST

/* Random overlapping frames against a model that replays them byte by
 * byte: each byte records the frame that last wrote it. */
START_TEST(test_overlaps_random)
{
	enum { SIZE = 4000, FRAMES = 300 };
	srand(1234 + (unsigned)_i);
	static int owner[SIZE];
	static struct odx_extent frames[FRAMES];
	for (int i = 0; i < SIZE; i++)
		owner[i] = -1;
	struct odx_extmap m;
	odx_extmap_init(&m, SIZE);
	for (int f = 0; f < FRAMES; f++) {
		uint64_t off = (uint64_t)(rand() % SIZE);
		uint64_t len = 1 + (uint64_t)(rand() % (f % 10 == 0 ? 1000 : 40));
		if (off + len > SIZE)
			len = SIZE - off;
		int kind = rand() % 3 ? ODX_EXTENT_DATA : ODX_EXTENT_ZERO;
		frames[f] = ext(off, len, kind, kind == ODX_EXTENT_DATA ? 100000 * (uint64_t)(f + 1) : 0);
		ck_assert_int_eq(odx_extmap_add(&m, &frames[f]), 0);
		for (uint64_t b = off; b < off + len; b++)
			owner[b] = f;
	}
	ck_assert_int_eq(odx_extmap_finish(&m), 0);
	assert_invariants(&m);
	for (uint64_t b = 0; b < SIZE; b++) {
		const struct odx_extent *e = &m.ext[odx_extmap_find(&m, b)];
		int f = owner[b];
		if (f < 0) {
			ck_assert_int_eq(e->kind, ODX_EXTENT_UNMAPPED);
			continue;
		}
		ck_assert_int_eq(e->kind, frames[f].kind);
		if (e->kind == ODX_EXTENT_DATA) {
			/* the byte comes from frame f at the right payload offset */
			uint64_t src = e->src + (b - e->offset);
			ck_assert_uint_eq(src, frames[f].src + (b - frames[f].offset));
		}
	}
	/* adjacent extents that could merge are merged */
	for (size_t i = 1; i < m.count; i++) {
		const struct odx_extent *a = &m.ext[i - 1], *c = &m.ext[i];
		ck_assert(!(a->kind == c->kind && a->kind != ODX_EXTENT_DATA));
		ck_assert(!(a->kind == ODX_EXTENT_DATA && c->kind == ODX_EXTENT_DATA &&
			    a->src + a->length == c->src));
	}
	odx_extmap_free(&m);
}
END_TEST

START_TEST(test_extent_size)
{
	/* memory per extent stays small (target: 48 bytes or less) */
	ck_assert_uint_le(sizeof(struct odx_extent), 32);
}
END_TEST

START_TEST(test_many_extents_lookup)
{
	enum { N = 1000000 };
	struct odx_extmap m;
	odx_extmap_init(&m, (uint64_t)N * 3);
	for (uint64_t i = 0; i < N; i++)
		add(&m, ext(i * 3, 2, i % 2 ? ODX_EXTENT_DATA : ODX_EXTENT_ZERO, i * 10));
	odx_extmap_finish(&m);
	assert_invariants(&m);
	ck_assert_uint_eq(m.count, 2 * N);
	for (uint64_t k = 0; k < 100000; k++) {
		uint64_t off = (k * 2654435761u) % ((uint64_t)N * 3);
		const struct odx_extent *e = &m.ext[odx_extmap_find(&m, off)];
		ck_assert(e->offset <= off && off < e->offset + e->length);
	}
	odx_extmap_free(&m);
}
END_TEST

static Suite *extmap_suite(void)
{
	Suite *s = suite_create("extmap");
	TCase *t = tcase_create("core");
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_append_merge_gaps);
	tcase_add_test(t, test_find_and_slice);
	tcase_add_loop_test(t, test_overlaps_random, 0, 20);
	tcase_add_test(t, test_extent_size);
	tcase_add_test(t, test_many_extents_lookup);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(extmap_suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
