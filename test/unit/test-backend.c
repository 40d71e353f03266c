/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the backend layer's modification bracket (backend.h):
 * odx_image_will_modify drops setuid/setgid by the kernel's rules for the
 * thread's actor, through every write-side wrapper, never for an actor
 * with CAP_FSETID, and always (as for an unprivileged stranger) when the
 * actor is unknown.  Raw images over temp files in $TMPDIR.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/backend/backend.h"

struct fake_actor {
	struct odx_actor a;
	int fsetid;       /* what fsetid() answers */
	gid_t group;      /* in_group() answers 1 for this gid only */
	int fsetid_calls; /* how often it was asked */
	int dropped;      /* dropped() calls */
};

static int fa_fsetid(const struct odx_actor *a)
{
	struct fake_actor *f = a->ctx;
	f->fsetid_calls++;
	return f->fsetid;
}

static int fa_in_group(const struct odx_actor *a, gid_t gid)
{
	const struct fake_actor *f = a->ctx;
	return gid == f->group;
}

static void fa_dropped(const struct odx_actor *a)
{
	struct fake_actor *f = a->ctx;
	f->dropped++;
}

static void fa_init(struct fake_actor *f, int fsetid, gid_t group)
{
	memset(f, 0, sizeof *f);
	f->a.uid = 4242;
	f->a.gid = 4242;
	f->a.fsetid = fa_fsetid;
	f->a.in_group = fa_in_group;
	f->a.dropped = fa_dropped;
	f->a.ctx = f;
	f->fsetid = fsetid;
	f->group = group;
}

/* A raw image over a new temp file of 8 KiB with mode `mode`. */
static struct odx_image *image_new(mode_t mode, char *path)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(path, 256, "%s/odxfs-backend-XXXXXX", dir);
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 8192), 0);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	struct odx_image *img;
	ck_assert_int_eq(odx_image_open_as(&odx_backend_raw, fd, path, NULL, &img, NULL), 0);
	return img;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static gid_t gid_of(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_gid;
}

/* The kernel's rule, one row per case. */
static const struct {
	mode_t before;
	int fsetid, in_group;
	mode_t after;
} rule[] = {
	{ 04755, 0, 1, 0755 },  /* setuid: always */
	{ 04755, 0, 0, 0755 },
	{ 02755, 0, 1, 0755 },  /* setgid and group-executable: always */
	{ 02755, 0, 0, 0755 },
	{ 06755, 0, 1, 0755 },
	{ 02644, 0, 1, 02644 }, /* setgid alone, a member: kept */
	{ 02644, 0, 0, 0644 },  /* setgid alone, not a member: dropped */
	{ 06666, 0, 1, 02666 },
	{ 06666, 0, 0, 0666 },
	{ 04755, 1, 0, 04755 }, /* CAP_FSETID: nothing */
	{ 06755, 1, 0, 06755 },
	{ 02644, 1, 0, 02644 },
	{ 0755, 0, 0, 0755 },   /* nothing to drop */
	{ 01777, 0, 0, 01777 }, /* sticky is not a privilege */
};

START_TEST(test_rule)
{
	char path[256];
	struct fake_actor f;
	struct odx_image *img = image_new(rule[_i].before, path);
	gid_t g = gid_of(path);
	fa_init(&f, rule[_i].fsetid, rule[_i].in_group ? g : g + 1);
	odx_actor_set(&f.a);
	ck_assert_int_eq(odx_image_will_modify(img), 0);
	odx_actor_set(NULL);
	ck_assert_msg(mode_of(path) == rule[_i].after, "row %d: 0%o -> 0%o, expected 0%o", _i,
		      (unsigned)rule[_i].before, (unsigned)mode_of(path),
		      (unsigned)rule[_i].after);
	ck_assert_int_eq(f.dropped, rule[_i].after != rule[_i].before);
	/* Files without the bits never ask about capabilities (one fstat). */
	if (!(rule[_i].before & (S_ISUID | S_ISGID)))
		ck_assert_int_eq(f.fsetid_calls, 0);
	odx_image_unref(img);
	unlink(path);
}
END_TEST

/* Every write-side wrapper brackets its change: the bits go before it. */
START_TEST(test_wrappers)
{
	char path[256];
	struct fake_actor f;
	for (int op = 0; op < 3; op++) {
		struct odx_image *img = image_new(06755, path);
		fa_init(&f, 0, gid_of(path));
		odx_actor_set(&f.a);
		if (op == 0)
			ck_assert_int_eq(odx_image_write(img, "x", 1, 100), 1);
		else if (op == 1)
			ck_assert_int_eq(odx_image_truncate(img, 4096), 0);
		else
			ck_assert_int_eq(odx_image_fallocate(img, 0, 0, 16384), 0);
		odx_actor_set(NULL);
		ck_assert_msg(mode_of(path) == 0755, "op %d: 0%o", op, (unsigned)mode_of(path));
		odx_image_unref(img);
		unlink(path);
	}
}
END_TEST

/* No actor: treated as an unprivileged stranger, never as root. */
START_TEST(test_unknown_actor)
{
	char path[256];
	odx_actor_set(NULL);
	struct odx_image *img = image_new(06644, path);
	ck_assert_int_eq(odx_image_write(img, "x", 1, 0), 1);
	ck_assert_int_eq(mode_of(path), 0644);
	odx_image_unref(img);
	unlink(path);
}
END_TEST

/* Reads and maps are not modifications. */
START_TEST(test_read_keeps)
{
	char path[256], buf[16];
	struct odx_image *img = image_new(06755, path);
	ck_assert_int_eq(odx_image_read(img, buf, sizeof buf, 0, NULL), (ssize_t)sizeof buf);
	ck_assert_int_eq(mode_of(path), 06755);
	odx_image_unref(img);
	unlink(path);
}
END_TEST

static Suite *backend_suite(void)
{
	Suite *s = suite_create("backend");
	TCase *tc = tcase_create("privileges");
	tcase_add_loop_test(tc, test_rule, 0, sizeof rule / sizeof rule[0]);
	tcase_add_test(tc, test_wrappers);
	tcase_add_test(tc, test_unknown_actor);
	tcase_add_test(tc, test_read_keeps);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(backend_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
