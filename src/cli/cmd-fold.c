/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxctl fold MEMBER: the retention step.  The base and every member of
 * MEMBER's chain up to MEMBER become one new full backup at MEMBER's
 * checkpoint, and the folded files go; later incrementals chain onto the
 * new full.  Everything goes through the odxfs mount MEMBER is in:
 *
 *   1. the chain, from the daemon (xattr user.odxfs.chain of MEMBER's
 *      view); refused when another backup in the directory builds on a
 *      member to be folded without building on MEMBER (a differential
 *      taken earlier, another branch): it would lose its base;
 *   2. odxctl merge of MEMBER's view into BASE.fold.partial (a name that
 *      is never a chain member), guest data moved by the daemon;
 *   3. verification: the new full read through the mount equals MEMBER's
 *      view, byte for byte and hole for hole;
 *   4. its modification time set to the old base's (virtnbdrestore orders
 *      a chain's files by it: the base first);
 *   5. renamed over the old base (its name ends in .full.data, which
 *      virtnbdbackup looks for before an incremental backup), with its
 *      .chksum: from here the checkpoints after MEMBER's are served from
 *      the new full (a full beats the incremental making the same
 *      checkpoint, odxfs-stream(5));
 *   6. the folded incrementals are removed, with their .chksum.
 * Stopped before 5, the old chain is whole and BASE.fold.partial is left
 * (removed by the next fold); after 5, every later checkpoint is whole and
 * what is left of the folded members no longer resolves (remove them).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cli.h"
#include "odxfs/ioctl.h"
#include "odxfs/stream.h"

#define XATTR_CHAIN "user.odxfs.chain"
#define MAX_MEMBERS 1024

struct member {
	char kind[8];
	char checkpoint[NAME_MAX + 1];
	char name[NAME_MAX + 1];
};

/* The chain of `path` (a view in an odxfs mount), base first. */
static int chain_of(const char *path, struct member **out, size_t *n)
{
	ssize_t len = getxattr(path, XATTR_CHAIN, NULL, 0);
	if (len < 0)
		return -errno;
	char *buf = malloc((size_t)len + 1);
	if (!buf)
		return -ENOMEM;
	len = getxattr(path, XATTR_CHAIN, buf, (size_t)len);
	if (len < 0) {
		int e = errno;
		free(buf);
		return -e;
	}
	buf[len] = '\0';
	struct member *m = calloc(MAX_MEMBERS, sizeof *m);
	size_t k = 0;
	for (char *line = buf, *nl; m && *line && k < MAX_MEMBERS; line = nl + 1) {
		if (!(nl = strchr(line, '\n')))
			break;
		*nl = '\0';
		char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
		if (!t2)
			break;
		*t1 = *t2 = '\0';
		snprintf(m[k].kind, sizeof m[k].kind, "%s", line);
		snprintf(m[k].checkpoint, sizeof m[k].checkpoint, "%s", t1 + 1);
		snprintf(m[k].name, sizeof m[k].name, "%s", t2 + 1);
		k++;
	}
	free(buf);
	if (!m)
		return -ENOMEM;
	*out = m;
	*n = k;
	return 0;
}

/* A path into buf; false (and a message) when it does not fit. */
static bool pathf(char *buf, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static bool pathf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= n) {
		cli_error("%s...: path too long", buf);
		return false;
	}
	return true;
}

static bool join(char *buf, size_t n, const char *dir, const char *name)
{
	return pathf(buf, n, "%s/%s", dir, name);
}

/* Whether another stream of the directory builds on one of the members
 * to be folded (m[0..n-2]) without building on MEMBER (m[n-1]).  Every
 * view of the directory is asked for its chain. */
static int find_dependents(const char *dir, const struct member *m, size_t n)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int bad = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 6 || strcmp(de->d_name + l - 5, ".data") != 0)
			continue;
		bool in_chain = false;
		for (size_t k = 0; k < n && !in_chain; k++)
			in_chain = strcmp(m[k].name, de->d_name) == 0;
		if (in_chain)
			continue;
		char p[PATH_MAX];
		struct member *o;
		size_t on;
		if (!join(p, sizeof p, dir, de->d_name) || chain_of(p, &o, &on) < 0)
			continue; /* not a view: a base, or unresolved */
		bool on_folded = false, on_member = false;
		for (size_t j = 0; j < on; j++) {
			for (size_t k = 0; k + 1 < n; k++)
				on_folded |= strcmp(o[j].name, m[k].name) == 0;
			on_member |= strcmp(o[j].name, m[n - 1].name) == 0;
		}
		free(o);
		if (on_folded && !on_member) {
			cli_error("%s: builds on a member to be folded but not on %s: it would lose "
				  "its base (fold up to a later checkpoint, or remove it first)",
				  p, m[n - 1].name);
			bad = 1;
		}
	}
	closedir(d);
	return bad;
}

/* Holes of fd as the list of its data ranges (SEEK_DATA/SEEK_HOLE). */
static int next_data(int fd, off_t at, off_t size, off_t *d, off_t *h)
{
	*d = lseek(fd, at, SEEK_DATA);
	if (*d < 0 && errno == ENXIO)
		*d = size;
	else if (*d < 0)
		return -errno;
	*h = *d < size ? lseek(fd, *d, SEEK_HOLE) : size;
	return *h < 0 ? -errno : 0;
}

/* The new full equals the view: size, data ranges, bytes. */
static int verify(const char *view, const char *full, bool quiet)
{
	int a = open(view, O_RDONLY | O_CLOEXEC), b = open(full, O_RDONLY | O_CLOEXEC);
	struct stat sa, sb;
	int r = 0;
	enum { BUF = 4 << 20 };
	char *x = malloc(BUF), *y = malloc(BUF);
	if (!x || !y) {
		r = -ENOMEM;
		goto out;
	}
	if (a < 0 || b < 0 || fstat(a, &sa) < 0 || fstat(b, &sb) < 0) {
		r = -errno;
		cli_error("%s: %s", a < 0 ? view : full, strerror(errno));
		goto out;
	}
	if (sa.st_size != sb.st_size) {
		cli_error("%s: %lld bytes, the view has %lld", full, (long long)sb.st_size,
			  (long long)sa.st_size);
		r = -EIO;
		goto out;
	}
	struct cli_progress pr;
	cli_progress_init(&pr, "verify", quiet);
	off_t at = 0;
	while (r == 0 && at < sa.st_size) {
		off_t da, ha, db, hb;
		if ((r = next_data(a, at, sa.st_size, &da, &ha)) < 0 ||
		    (r = next_data(b, at, sb.st_size, &db, &hb)) < 0)
			break;
		if (da != db || ha != hb) {
			cli_error("%s: its data and holes differ from the view's after byte %lld "
				  "(data at %lld-%lld, the view's at %lld-%lld)",
				  full, (long long)at, (long long)db, (long long)hb, (long long)da,
				  (long long)ha);
			r = -EIO;
			break;
		}
		for (off_t p = da; r == 0 && p < ha;) {
			size_t want = ha - p < BUF ? (size_t)(ha - p) : BUF;
			ssize_t na = pread(a, x, want, p), nb = pread(b, y, want, p);
			if (na < 0 || nb < 0) {
				r = -errno;
				cli_error("%s: %s", na < 0 ? view : full, strerror(errno));
			} else if (na != (ssize_t)want || nb != (ssize_t)want ||
				   memcmp(x, y, want) != 0) {
				cli_error("%s: differs from the view in the %zu bytes at %lld", full,
					  want, (long long)p);
				r = -EIO;
			}
			p += (off_t)want;
			cli_progress_fn(&pr, (uint64_t)p, (uint64_t)sa.st_size);
		}
		at = ha;
	}
	cli_progress_done(&pr);
out:
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	free(x);
	free(y);
	return r;
}

struct fold_args {
	int codec;
	int level;
	bool quiet, dry_run;
};

int cmd_fold(int argc, char **argv)
{
	static const struct option opts[] = {
		{"compress", required_argument, NULL, 'c'}, {"level", required_argument, NULL, 'l'},
		{"dry-run", no_argument, NULL, 'n'}, {"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'}, {0}};
	struct fold_args a = {.codec = -1};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:nqh", opts, NULL)) != -1) {
		enum odx_codec codec;
		switch (c) {
		case 'c':
			if (strcmp(optarg, "source") == 0) {
				a.codec = -1;
			} else if (odx_codec_parse(optarg, &codec) == 0) {
				a.codec = (int)codec;
			} else {
				return cli_usage("fold", "--compress: \"%s\" is not none, lz4, zlib or "
							 "source", optarg);
			}
			break;
		case 'l':
			a.level = atoi(optarg);
			if (a.level < 1 || a.level > 22)
				return cli_usage("fold", "--level: \"%s\" is not a level from 1 to 22",
						 optarg);
			break;
		case 'n':
			a.dry_run = true;
			break;
		case 'q':
			a.quiet = true;
			break;
		case 'h':
			cli_print_usage("fold");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage("fold", "expected 1 operand (a chain member in an odxfs mount)");
	const char *member = argv[optind];
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", member);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof dir, ".");

	struct member *m;
	size_t n;
	int r = chain_of(member, &m, &n);
	if (r == -ENODATA || r == -ENOTSUP || r == -EOPNOTSUPP) {
		cli_error("%s: not a chain member's view in an odxfs mount (a full backup, or "
			  "-o chain=off)", member);
		return EXIT_FAILURE_RT;
	}
	if (r < 0) {
		cli_error("%s: %s", member, strerror(-r));
		return EXIT_FAILURE_RT;
	}
	int rc = EXIT_FAILURE_RT;
	if (n < 2 || strcmp(m[0].kind, "full") != 0) {
		cli_error("%s: nothing to fold (its chain does not start with a full backup)",
			  member);
		goto out;
	}
	for (size_t k = 1; k < n; k++) {
		if (strcmp(m[k].kind, "inc") != 0) {
			cli_error("%s: a differential in the folded members: only incrementals are "
				  "folded (a differential makes no checkpoint to chain onto)",
				  m[k].name);
			goto out;
		}
	}
	if (find_dependents(dir, m, n) != 0)
		goto out;
	char base[PATH_MAX], fold[PATH_MAX], foldsum[PATH_MAX], basesum[PATH_MAX];
	if (!join(base, sizeof base, dir, m[0].name) ||
	    !pathf(fold, sizeof fold, "%s.fold.partial", base) ||
	    !pathf(foldsum, sizeof foldsum, "%s.chksum", fold) ||
	    !pathf(basesum, sizeof basesum, "%s.chksum", base))
		goto out;
	if (!a.quiet || a.dry_run) {
		printf("fold into a full backup at checkpoint %s:", m[n - 1].checkpoint);
		for (size_t k = 0; k < n; k++)
			printf(" %s", m[k].name);
		printf("\n");
	}
	if (a.dry_run) {
		rc = EXIT_OK;
		goto out;
	}
	/* what a fold stopped before its rename left: never a member */
	unlink(fold);
	unlink(foldsum);
	struct odx_ioc_stream io;
	if ((rc = cli_merge(member, fold, a.codec, a.level, a.quiet, &io)) != EXIT_OK)
		goto out;
	if (!a.quiet)
		cli_merge_report(fold, member, &io);
	rc = EXIT_FAILURE_RT;
	if (verify(member, fold, a.quiet) < 0) {
		cli_error("%s: not the view it came from: removed, nothing else changed", fold);
		unlink(fold);
		unlink(foldsum);
		goto out;
	}
	struct stat bst;
	if (stat(base, &bst) < 0) {
		cli_error("%s: %s", base, strerror(errno));
		goto out;
	}
	struct timespec ts[2] = {bst.st_atim, bst.st_mtim};
	if (utimensat(AT_FDCWD, fold, ts, 0) < 0) {
		cli_error("%s: setting its time: %s", fold, strerror(errno));
		goto out;
	}
	if (rename(fold, base) < 0) {
		cli_error("%s: renaming it to %s: %s", fold, base, strerror(errno));
		goto out;
	}
	if (rename(foldsum, basesum) < 0 && errno != ENOENT)
		cli_error("%s: %s (the new full is in place)", foldsum, strerror(errno));
	if (!a.quiet)
		printf("%s: the new full backup at checkpoint %s\n", base, m[n - 1].checkpoint);
	rc = EXIT_OK;
	for (size_t k = n - 1; k >= 1; k--) {
		char p[PATH_MAX], ps[PATH_MAX];
		if (!join(p, sizeof p, dir, m[k].name) || !pathf(ps, sizeof ps, "%s.chksum", p)) {
			rc = EXIT_FAILURE_RT;
			continue;
		}
		if (unlink(p) < 0) {
			cli_error("%s: not removed: %s (remove it by hand)", p, strerror(errno));
			rc = EXIT_FAILURE_RT;
		} else if (!a.quiet) {
			printf("%s: removed\n", p);
		}
		if (unlink(ps) < 0 && errno != ENOENT)
			cli_error("%s: %s", ps, strerror(errno));
	}
out:
	free(m);
	return rc;
}
