/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of src/chain: the merged map against a byte-by-byte model of
 * "newest frame wins, unmapped falls through", and chain discovery on
 * directories of streams written by the stream library.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odxfs/chain.h"
#include "odxfs/stream.h"

/* ---- the merged map against a model ---- */

struct cell {
	uint32_t member;
	uint8_t kind;
	uint64_t src; /* fd data: file offset of this byte */
};

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* A member's own map: `nframes` random frames over [0, size), and the
 * model updated the way a chain view sees them. */
static void random_member(struct odx_extmap *m, uint64_t size, unsigned nframes, bool fd,
			  uint32_t member, struct cell *model, uint64_t parent_size)
{
	odx_extmap_init(m, size);
	/* what falls through: the parent's cells up to its size */
	for (uint64_t x = parent_size; x < size; x++)
		model[x] = (struct cell){ ODX_CMAP_NO_MEMBER, ODX_EXTENT_UNMAPPED, 0 };
	uint64_t file = 1000 * (member + 1);
	for (unsigned i = 0; i < nframes; i++) {
		uint64_t off = rnd() % size;
		uint64_t len = 1 + rnd() % (size / 8 + 1);
		if (len > size - off)
			len = size - off;
		unsigned k = rnd() % 10;
		uint8_t kind = k < 7 ? ODX_EXTENT_DATA : k < 9 ? ODX_EXTENT_ZERO : ODX_EXTENT_BAD;
		struct odx_extent e = {
			.offset = off, .length = len, .kind = kind,
			.src = kind == ODX_EXTENT_DATA ? (fd ? file : off) : 0,
			.frame = kind == ODX_EXTENT_DATA && !fd ? i : ODX_NO_FRAME,
		};
		ck_assert_int_eq(odx_extmap_add(m, &e), 0);
		for (uint64_t x = off; x < off + len; x++)
			model[x] = (struct cell){ member, kind,
						  kind == ODX_EXTENT_DATA && fd ? file + (x - off) : 0 };
		file += len + 40;
	}
	ck_assert_int_eq(odx_extmap_finish(m), 0);
}

static void check_against(const struct odx_cmap *cm, const struct cell *model, uint64_t size)
{
	struct odx_cmap_iter it;
	struct odx_cext e;
	uint64_t pos = 0, data = 0;
	ck_assert_uint_eq(odx_cmap_size(cm), size);
	if (size == 0)
		return;
	ck_assert(odx_cmap_find(cm, 0, &it));
	while (odx_cmap_next(&it, &e)) {
		ck_assert_uint_eq(e.offset, pos);
		ck_assert_uint_gt(e.length, 0);
		for (uint64_t x = e.offset; x < e.offset + e.length; x++) {
			const struct cell *c = &model[x];
			ck_assert_uint_eq(e.kind, c->kind);
			if (c->kind != ODX_EXTENT_UNMAPPED)
				ck_assert_uint_eq(e.member, c->member);
			if (c->kind == ODX_EXTENT_DATA && e.fd)
				ck_assert_uint_eq(e.src + (x - e.offset), c->src);
		}
		if (e.kind == ODX_EXTENT_DATA || e.kind == ODX_EXTENT_BAD)
			data += e.length;
		pos += e.length;
	}
	ck_assert_uint_eq(pos, size);
	ck_assert_uint_eq(data, odx_cmap_data_bytes(cm));
	/* random lookups and seeks */
	for (int i = 0; i < 200; i++) {
		uint64_t x = rnd() % size;
		ck_assert(odx_cmap_find(cm, x, &it));
		ck_assert(odx_cmap_next(&it, &e));
		ck_assert(e.offset <= x && x < e.offset + e.length);
		ck_assert_uint_eq(e.kind, model[x].kind);
		int64_t want_data = -ENXIO, want_hole = (int64_t)size;
		for (uint64_t y = x; y < size; y++) {
			bool hole = model[y].kind == ODX_EXTENT_UNMAPPED ||
				    model[y].kind == ODX_EXTENT_ZERO;
			if (!hole && want_data < 0)
				want_data = (int64_t)y;
			if (hole && want_hole == (int64_t)size) {
				want_hole = (int64_t)y;
			}
			if (want_data >= 0 && want_hole < (int64_t)size)
				break;
		}
		ck_assert_int_eq(odx_cmap_seek(cm, x, SEEK_DATA), want_data);
		ck_assert_int_eq(odx_cmap_seek(cm, x, SEEK_HOLE), want_hole);
	}
	ck_assert_int_eq(odx_cmap_seek(cm, size, SEEK_DATA), -ENXIO);
}

START_TEST(test_cmap_model)
{
	for (int round = 0; round < 25; round++) {
		/* long chains too: levels carry and the oldest are merged
		 * when a map has ODX_CMAP_MAX_LEVELS */
		unsigned members = round % 5 == 4 ? 60 : 1 + rnd() % 12;
		uint64_t maxsize = 12000;
		struct cell *model = calloc(maxsize, sizeof *model);
		struct odx_cmap *prev = NULL;
		uint64_t psize = 0;
		for (unsigned k = 0; k < members; k++) {
			/* the size may change along the chain */
			uint64_t size = k == 0 || rnd() % 4 ? (psize ? psize : 1 + rnd() % maxsize)
							    : 1 + rnd() % maxsize;
			struct odx_extmap own;
			bool fd = rnd() % 2;
			random_member(&own, size, k == 0 ? 30 : 1 + rnd() % 40, fd, k, model, psize);
			struct odx_cmap *cm;
			ck_assert_int_eq(odx_cmap_build(prev, &own, fd, k, rnd() % 3 != 0, &cm), 0);
			odx_extmap_free(&own);
			check_against(cm, model, size);
			/* the parent stays intact when its child is freed */
			odx_cmap_free(prev);
			prev = cm;
			psize = size;
		}
		odx_cmap_free(prev);
		free(model);
	}
}
END_TEST

/* A small change over a big map shares nearly all of it. */
START_TEST(test_cmap_sharing)
{
	uint64_t size = 1 << 30;
	struct odx_extmap base;
	odx_extmap_init(&base, size);
	/* 100000 data extents of 4 KiB every 8 KiB */
	for (uint64_t i = 0; i < 100000; i++) {
		struct odx_extent e = { .offset = i * 8192, .length = 4096, .kind = ODX_EXTENT_DATA,
					.src = i * 5000, .frame = ODX_NO_FRAME };
		ck_assert_int_eq(odx_extmap_add(&base, &e), 0);
	}
	ck_assert_int_eq(odx_extmap_finish(&base), 0);
	struct odx_cmap *b, *c;
	ck_assert_int_eq(odx_cmap_build(NULL, &base, true, 0, true, &b), 0);
	ck_assert_uint_eq(odx_cmap_count(b), odx_extmap_find(&base, size));
	struct odx_extmap inc;
	odx_extmap_init(&inc, size);
	struct odx_extent e = { .offset = 4096 * 1000, .length = 4096 * 10,
				.kind = ODX_EXTENT_DATA, .src = 77, .frame = ODX_NO_FRAME };
	ck_assert_int_eq(odx_extmap_add(&inc, &e), 0);
	ck_assert_int_eq(odx_extmap_finish(&inc), 0);
	ck_assert_int_eq(odx_cmap_build(b, &inc, true, 1, true, &c), 0);
	size_t full = odx_cmap_memory(b), delta = odx_cmap_memory(c);
	/* the base: 32 bytes per data extent (16 per extent, holes
	 * included); the child its one piece over the base's level */
	ck_assert_uint_lt(full / odx_cmap_count(b), 20);
	ck_assert_uint_lt(delta, 1024);
	ck_assert_uint_eq(odx_cmap_levels(c), 2);
	odx_cmap_free(b); /* c still reads its shared level */
	struct odx_cmap_iter it;
	struct odx_cext x;
	ck_assert(odx_cmap_find(c, 8192 * 50000 + 100, &it));
	ck_assert(odx_cmap_next(&it, &x));
	ck_assert_uint_eq(x.member, 0);
	ck_assert_uint_eq(x.offset, 8192ull * 50000 + 100); /* the walk starts there */
	ck_assert_uint_eq(x.length, 4096 - 100);
	ck_assert_uint_eq(x.src, 50000ull * 5000 + 100);
	odx_cmap_free(c);
	odx_extmap_free(&base);
	odx_extmap_free(&inc);
}
END_TEST

/* ---- discovery ---- */

static char dir[64];

static void put_stream(const char *name, bool incremental, const char *disk, const char *cp,
		       const char *parent)
{
	char raw[128], out[160];
	snprintf(raw, sizeof raw, "%s/raw.tmp", dir);
	int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
	ck_assert_int_eq(pwrite(fd, "x", 1, 4096), 1);
	struct odx_range ch = { 0, 65536 };
	struct odx_write_opts o = {
		.incremental = incremental, .changed = &ch, .nchanged = 1,
		.disk_name = disk, .checkpoint = cp, .parent = parent, .no_chksum = true,
	};
	struct odx_error err;
	snprintf(out, sizeof out, "%s/%s", dir, name);
	ck_assert_msg(odx_stream_write(fd, 0, out, &o, &err) == 0, "%s", err.msg);
	close(fd);
	unlink(raw);
}

static void unlink_in_dir(const char *name)
{
	char p[160];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	ck_assert_int_eq(unlink(p), 0);
}

static struct odx_chain_dir *scan(void)
{
	struct odx_chain_dir *d;
	struct odx_error err;
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(fd, 0);
	ck_assert_msg(odx_chain_scan(fd, dir, &d, &err) == 0, "%s", err.msg);
	close(fd);
	return d;
}

static const struct odx_chain_entry *entry(const struct odx_chain_dir *d, const char *name)
{
	int i = odx_chain_find(d, name);
	ck_assert_msg(i >= 0, "%s not found", name);
	return &d->e[i];
}

static void members_are(const struct odx_chain_dir *d, const char *name, const char *want)
{
	int idx[64];
	int i = odx_chain_find(d, name);
	ck_assert_int_ge(i, 0);
	int n = odx_chain_members(d, i, idx);
	char got[512] = "";
	for (int k = 0; k < n; k++) {
		strcat(got, k ? " " : "");
		strcat(got, d->e[idx[k]].name);
	}
	ck_assert_msg(n > 0, "%s: unresolved: %s", name, d->e[i].why);
	ck_assert_str_eq(got, want);
}

static void setup_dir(void)
{
	snprintf(dir, sizeof dir, "/tmp/odxfs-test-chain-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_scan_virtnbdbackup)
{
	/* what virtnbdbackup writes: full, inc 1, two differentials after
	 * checkpoint 1 (both named for checkpoint 2, never created), then
	 * inc 2 (making checkpoint 2) and inc 3 */
	put_stream("sda.full.data", false, "sda", "virtnbdbackup.0", "");
	put_stream("sda.inc.virtnbdbackup.1.data", true, "sda", "virtnbdbackup.1", "virtnbdbackup.0");
	put_stream("sda.diff.1700000001.data", true, "sda", "virtnbdbackup.2", "virtnbdbackup.1");
	put_stream("sda.diff.1700000002.data", true, "sda", "virtnbdbackup.2", "virtnbdbackup.1");
	put_stream("sda.inc.virtnbdbackup.2.data", true, "sda", "virtnbdbackup.2", "virtnbdbackup.1");
	put_stream("sda.inc.virtnbdbackup.3.data", true, "sda", "virtnbdbackup.3", "virtnbdbackup.2");
	/* another disk of the same VM, and things that are not members */
	put_stream("sdb.full.data", false, "sdb", "virtnbdbackup.0", "");
	put_stream("sdb.inc.virtnbdbackup.1.data", true, "sdb", "virtnbdbackup.1", "virtnbdbackup.0");
	put_stream("sda.inc.virtnbdbackup.4.data.partial", true, "sda", "virtnbdbackup.4",
		   "virtnbdbackup.3");
	char p[128];
	snprintf(p, sizeof p, "%s/vmconfig.virtnbdbackup.0.xml", dir);
	FILE *f = fopen(p, "w");
	fputs("<domain/>", f);
	fclose(f);

	struct odx_chain_dir *d = scan();
	ck_assert_uint_eq(d->n, 8);
	ck_assert_int_lt(odx_chain_find(d, "sda.inc.virtnbdbackup.4.data.partial"), 0);
	ck_assert_int_eq(entry(d, "sda.full.data")->kind, ODX_MEMBER_FULL);
	ck_assert_int_eq(entry(d, "sda.diff.1700000001.data")->kind, ODX_MEMBER_DIFF);
	members_are(d, "sda.full.data", "sda.full.data");
	members_are(d, "sda.diff.1700000001.data",
		    "sda.full.data sda.inc.virtnbdbackup.1.data sda.diff.1700000001.data");
	members_are(d, "sda.diff.1700000002.data",
		    "sda.full.data sda.inc.virtnbdbackup.1.data sda.diff.1700000002.data");
	members_are(d, "sda.inc.virtnbdbackup.3.data",
		    "sda.full.data sda.inc.virtnbdbackup.1.data sda.inc.virtnbdbackup.2.data "
		    "sda.inc.virtnbdbackup.3.data");
	members_are(d, "sdb.inc.virtnbdbackup.1.data", "sdb.full.data sdb.inc.virtnbdbackup.1.data");
	odx_chain_dir_free(d);
}
END_TEST

/* A fold in progress (odxctl fold): a synthetic full at checkpoint 2 beside
 * the incremental that makes checkpoint 2 and the old full; the chain
 * after checkpoint 2 takes the new full, the old members still read. */
START_TEST(test_scan_folded)
{
	put_stream("sda.full.data", false, "sda", "virtnbdbackup.0", "");
	put_stream("sda.inc.virtnbdbackup.1.data", true, "sda", "virtnbdbackup.1", "virtnbdbackup.0");
	put_stream("sda.inc.virtnbdbackup.2.data", true, "sda", "virtnbdbackup.2", "virtnbdbackup.1");
	put_stream("sda.inc.virtnbdbackup.3.data", true, "sda", "virtnbdbackup.3", "virtnbdbackup.2");
	put_stream("sda.full.virtnbdbackup.2.data", false, "sda", "virtnbdbackup.2", "");
	struct odx_chain_dir *d = scan();
	members_are(d, "sda.inc.virtnbdbackup.3.data",
		    "sda.full.virtnbdbackup.2.data sda.inc.virtnbdbackup.3.data");
	members_are(d, "sda.inc.virtnbdbackup.2.data",
		    "sda.full.data sda.inc.virtnbdbackup.1.data sda.inc.virtnbdbackup.2.data");
	odx_chain_dir_free(d);
	/* two incrementals making one checkpoint stay ambiguous */
	put_stream("sda.inc.virtnbdbackup.2b.data", true, "sda", "virtnbdbackup.2",
		   "virtnbdbackup.1");
	unlink_in_dir("sda.full.virtnbdbackup.2.data");
	d = scan();
	ck_assert_int_eq(entry(d, "sda.inc.virtnbdbackup.3.data")->status, -ENOTUNIQ);
	odx_chain_dir_free(d);
}
END_TEST

START_TEST(test_scan_unresolved)
{
	put_stream("sda.full.data", false, "sda", "virtnbdbackup.0", "");
	/* a copy backup says checkpoint 0 too, but makes none */
	put_stream("sda.copy.data", false, "sda", "virtnbdbackup.0", "");
	put_stream("sda.inc.virtnbdbackup.1.data", true, "sda", "virtnbdbackup.1", "virtnbdbackup.0");
	/* parent missing (inc 2 lost), and what builds on it */
	put_stream("sda.inc.virtnbdbackup.3.data", true, "sda", "virtnbdbackup.3", "virtnbdbackup.2");
	put_stream("sda.inc.virtnbdbackup.4.data", true, "sda", "virtnbdbackup.4", "virtnbdbackup.3");
	/* two streams claim checkpoint 5 */
	put_stream("x5a.data", true, "sda", "virtnbdbackup.5", "virtnbdbackup.1");
	put_stream("x5b.data", true, "sda", "virtnbdbackup.5", "virtnbdbackup.1");
	put_stream("x6.data", true, "sda", "virtnbdbackup.6", "virtnbdbackup.5");
	/* two disks whose fulls both call themselves sda: told apart by the
	 * file names */
	put_stream("vdb.full.data", false, "sda", "virtnbdbackup.0", "");
	put_stream("vdb.inc.virtnbdbackup.1.data", true, "sda", "virtnbdbackup.1x",
		   "virtnbdbackup.0");
	/* a loop */
	put_stream("l1.data", true, "sda", "L1", "L2");
	put_stream("l2.data", true, "sda", "L2", "L1");
	/* no parent named */
	put_stream("orphan.data", true, "sda", "O", NULL);

	struct odx_chain_dir *d = scan();
	members_are(d, "sda.inc.virtnbdbackup.1.data", "sda.full.data sda.inc.virtnbdbackup.1.data");
	members_are(d, "x5a.data", "sda.full.data sda.inc.virtnbdbackup.1.data x5a.data");
	members_are(d, "vdb.inc.virtnbdbackup.1.data", "vdb.full.data vdb.inc.virtnbdbackup.1.data");
	const struct odx_chain_entry *e = entry(d, "sda.inc.virtnbdbackup.3.data");
	ck_assert_int_eq(e->status, -ENOENT);
	ck_assert_ptr_nonnull(strstr(e->why, "\"virtnbdbackup.2\""));
	e = entry(d, "sda.inc.virtnbdbackup.4.data");
	ck_assert_int_eq(e->status, -EUCLEAN);
	ck_assert_ptr_nonnull(strstr(e->why, "virtnbdbackup.2"));
	e = entry(d, "x6.data");
	ck_assert_int_eq(e->status, -ENOTUNIQ);
	ck_assert_ptr_nonnull(strstr(e->why, "x5a.data"));
	/* the first of the loop walked finds the loop, the other its
	 * unresolved ancestor */
	int s1 = entry(d, "l1.data")->status, s2 = entry(d, "l2.data")->status;
	ck_assert(s1 < 0 && s2 < 0 && (s1 == -ELOOP || s2 == -ELOOP));
	ck_assert_int_eq(entry(d, "orphan.data")->status, -ENOENT);
	int idx[8];
	ck_assert_int_eq(odx_chain_members(d, odx_chain_find(d, "l1.data"), idx), s1);
	odx_chain_dir_free(d);
}
END_TEST

/* A chain deeper than a view may be: its deep members are unresolved,
 * the shallow ones are served. */
START_TEST(test_scan_too_deep)
{
	char name[64], cp[32], parent[32];
	put_stream("sda.full.data", false, "sda", "c0", "");
	for (int k = 1; k <= ODX_CHAIN_MAX_MEMBERS + 1; k++) {
		snprintf(name, sizeof name, "sda.inc.c%d.data", k);
		snprintf(cp, sizeof cp, "c%d", k);
		snprintf(parent, sizeof parent, "c%d", k - 1);
		put_stream(name, true, "sda", cp, parent);
	}
	struct odx_chain_dir *d = scan();
	snprintf(name, sizeof name, "sda.inc.c%d.data", ODX_CHAIN_MAX_MEMBERS - 1);
	ck_assert_int_eq(entry(d, name)->status, 0);
	ck_assert_uint_eq(entry(d, name)->depth, ODX_CHAIN_MAX_MEMBERS);
	snprintf(name, sizeof name, "sda.inc.c%d.data", ODX_CHAIN_MAX_MEMBERS);
	ck_assert_int_eq(entry(d, name)->status, -E2BIG);
	ck_assert_ptr_nonnull(strstr(entry(d, name)->why, "more than the 1024"));
	odx_chain_dir_free(d);
}
END_TEST

/* A stream of meta `json` and no frame, written by hand. */
static void put_raw_meta(const char *name, const char *json)
{
	char path[160], hdr[64];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	snprintf(hdr, sizeof hdr, "meta %016x %016zx\r\n", 0, strlen(json));
	fputs(hdr, f);
	fputs(json, f);
	fputs("\r\nstop 0000000000000000 0000000000000000\r\n", f);
	fclose(f);
}

/* Hostile chain keys: of other types, too long, damaged meta, and files
 * that are not regular: never members by mistake, never a crash. */
START_TEST(test_scan_odd_meta)
{
	put_stream("sda.full.data", false, "sda", "c0", "");
	put_raw_meta("types.data", "{\"virtualSize\": 65536, \"incremental\": true, "
				   "\"diskName\": 7, \"checkpointName\": [\"c0\"], "
				   "\"parentCheckpoint\": {\"c0\": 1}}");
	char big[1200], json[1400];
	memset(big, 'c', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	snprintf(json, sizeof json, "{\"virtualSize\": 65536, \"incremental\": true, "
				     "\"diskName\": \"sda\", \"checkpointName\": \"x\", "
				     "\"parentCheckpoint\": \"%s\"}", big);
	put_raw_meta("long.data", json);
	put_raw_meta("broken.data", "{\"virtualSize\": ");
	char p[128];
	snprintf(p, sizeof p, "%s/fifo.data", dir);
	ck_assert_int_eq(mkfifo(p, 0644), 0);

	struct odx_chain_dir *d = scan();
	ck_assert_uint_eq(d->n, 3); /* the full and the two with odd keys */
	ck_assert_uint_eq(d->unreadable, 1);
	ck_assert_int_lt(odx_chain_find(d, "fifo.data"), 0);
	const struct odx_chain_entry *e = entry(d, "types.data");
	ck_assert_ptr_null(e->disk);
	ck_assert_ptr_null(e->checkpoint);
	ck_assert_int_eq(e->status, -ENOENT); /* a parent that is no string: none */
	e = entry(d, "long.data");
	ck_assert_int_eq(e->status, -ENOENT); /* over 1024 bytes: not kept */
	members_are(d, "sda.full.data", "sda.full.data");
	odx_chain_dir_free(d);
}
END_TEST

static Suite *chain_suite(void)
{
	Suite *s = suite_create("chain");
	TCase *tc = tcase_create("cmap");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_cmap_model);
	tcase_add_test(tc, test_cmap_sharing);
	suite_add_tcase(s, tc);
	tc = tcase_create("scan");
	tcase_set_timeout(tc, 120); /* test_scan_too_deep writes 1026 streams */
	tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
	tcase_add_test(tc, test_scan_virtnbdbackup);
	tcase_add_test(tc, test_scan_unresolved);
	tcase_add_test(tc, test_scan_folded);
	tcase_add_test(tc, test_scan_too_deep);
	tcase_add_test(tc, test_scan_odd_meta);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(chain_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
