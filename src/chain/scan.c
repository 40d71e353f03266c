/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Chain discovery: which stream in a backup directory builds on which
 * (chain.h states the rules).  virtnbdrestore orders a directory's files by
 * modification time and applies them all; odxfs links each member to its
 * parent by the checkpoint names in the meta instead, so that every member
 * has its own view, a differential sees only the checkpoint it was taken
 * against, and a file copied with a new time does not reorder the chain.
 *
 * Cost: one openat and a read of the meta frame per stream in the
 * directory (a few hundred bytes each); parents are found by binary search
 * in the entries that make checkpoints, sorted by (disk, checkpoint) once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odxfs/chain.h"
#include "odxfs/stream.h"

const char *odx_member_kind_name(int kind)
{
	switch (kind) {
	case ODX_MEMBER_FULL: return "full";
	case ODX_MEMBER_COPY: return "copy";
	case ODX_MEMBER_INC: return "incremental";
	case ODX_MEMBER_DIFF: return "differential";
	default: return "?";
	}
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool odx_chain_name_is_partial(const char *name)
{
	return ends_with(name, ".partial");
}

const char *odx_chain_split_path(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, len, ".");
	else if (slash == path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(slash - path), path);
	return slash ? slash + 1 : path;
}

static void entry_free(struct odx_chain_entry *e)
{
	free(e->name);
	free(e->disk);
	free(e->checkpoint);
	free(e->parent);
}

void odx_chain_dir_free(struct odx_chain_dir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		entry_free(&d->e[i]);
	free(d->e);
	free(d);
}

/* "" and NULL both mean "none" (virtnbdbackup writes "" for a full's
 * parent, odxfs false). */
static char *none_if_empty(char *s)
{
	if (s && !*s) {
		free(s);
		return NULL;
	}
	return s;
}

/* Read the meta of `name` into *e.  1: a member; 0: not a stream (or not
 * a regular file); -errno on failure to allocate. */
static int scan_one(int dirfd, const char *name, bool known_reg, struct odx_chain_entry *e,
		    unsigned *unreadable)
{
	struct stat st;
	/* Opening a device or a FIFO can have effects (a tape rewinds): only
	 * regular files are opened (readdir's type, or a stat when it gives
	 * none), checked again on the descriptor. */
	if (!known_reg &&
	    (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)))
		return 0;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < ODX_FRAME_HEADER_LEN ||
	    odx_stream_probe(fd) != 1) {
		close(fd);
		return 0;
	}
	struct odx_stream_peek p;
	struct odx_error err;
	odx_error_clear(&err);
	int r = odx_stream_peek(fd, name, &p, &err);
	close(fd);
	if (r < 0) {
		(*unreadable)++;
		return r == -ENOMEM ? r : 0;
	}
	memset(e, 0, sizeof *e);
	e->name = strdup(name);
	e->disk = p.disk_name;
	e->checkpoint = none_if_empty(p.checkpoint);
	e->parent = none_if_empty(p.parent);
	p.disk_name = p.checkpoint = p.parent = NULL;
	if (!e->name) {
		entry_free(e);
		return -ENOMEM;
	}
	if (p.ident.incremental)
		e->kind = strstr(name, ".diff.") ? ODX_MEMBER_DIFF : ODX_MEMBER_INC;
	else
		e->kind = strstr(name, ".copy.") ? ODX_MEMBER_COPY : ODX_MEMBER_FULL;
	e->virtual_size = p.ident.virtual_size;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->size = st.st_size;
	e->mtime = st.st_mtim;
	e->parent_idx = -1;
	return 1;
}

static int strcmp_null(const char *a, const char *b)
{
	if (!a || !b)
		return (a != NULL) - (b != NULL);
	return strcmp(a, b);
}

/* Entries that make checkpoints, sorted by (disk, checkpoint). */
struct maker {
	const char *disk, *checkpoint;
	int idx;
};

static int maker_cmp(const void *a, const void *b)
{
	const struct maker *x = a, *y = b;
	int c = strcmp_null(x->disk, y->disk);
	return c ? c : strcmp_null(x->checkpoint, y->checkpoint);
}

/* Whether two file names start with the same text up to their first dot. */
static bool same_prefix(const char *a, const char *b)
{
	size_t n = strcspn(a, ".");
	return n == strcspn(b, ".") && strncmp(a, b, n) == 0;
}

static void resolve(struct odx_chain_dir *d, struct maker *mk, size_t nmk)
{
	for (size_t i = 0; i < d->n; i++) {
		struct odx_chain_entry *e = &d->e[i];
		if (e->kind == ODX_MEMBER_FULL || e->kind == ODX_MEMBER_COPY)
			continue;
		if (!e->parent) {
			e->status = -ENOENT;
			snprintf(e->why, sizeof e->why,
				 "an incremental backup that names no parent checkpoint");
			continue;
		}
		struct maker key = { .disk = e->disk, .checkpoint = e->parent };
		struct maker *hit = bsearch(&key, mk, nmk, sizeof *mk, maker_cmp);
		if (!hit) {
			e->status = -ENOENT;
			snprintf(e->why, sizeof e->why,
				 "its parent checkpoint \"%s\" (disk \"%s\") is in no stream of the "
				 "directory (missing, unreadable or damaged)",
				 e->parent, e->disk ? e->disk : "");
			continue;
		}
		size_t lo = (size_t)(hit - mk), hi = lo;
		while (lo > 0 && maker_cmp(&mk[lo - 1], &key) == 0)
			lo--;
		while (hi + 1 < nmk && maker_cmp(&mk[hi + 1], &key) == 0)
			hi++;
		if (hi > lo) {
			/* Several streams make the checkpoint (say, full
			 * backups of two disks that all call themselves
			 * "sda"): the one whose file name starts like this
			 * member's (virtnbdbackup names files
			 * <disk>.<kind>...) is meant, if it is just one. */
			int pick = -1, npick = 0, full = -1, nfull = 0;
			for (size_t k = lo; k <= hi; k++) {
				if (same_prefix(d->e[mk[k].idx].name, e->name)) {
					pick = mk[k].idx;
					npick++;
					if (d->e[pick].kind == ODX_MEMBER_FULL) {
						full = pick;
						nfull++;
					}
				}
			}
			/* A full backup and incrementals making the same
			 * checkpoint: a synthetic full folded from that
			 * incremental's view (odxctl fold), the same disk
			 * standing alone: the full is the parent, so the chain
			 * after it never depends on the members it replaces. */
			if (npick > 1 && nfull == 1) {
				pick = full;
				npick = 1;
			}
			if (npick == 1) {
				e->parent_idx = pick;
				continue;
			}
			e->status = -ENOTUNIQ;
			snprintf(e->why, sizeof e->why,
				 "its parent checkpoint \"%s\" is made by more than one stream "
				 "(%s and %s)",
				 e->parent, d->e[mk[lo].idx].name, d->e[mk[lo + 1].idx].name);
			continue;
		}
		e->parent_idx = hit->idx;
	}
	/* Depths, following parents, at most ODX_CHAIN_MAX_MEMBERS steps
	 * (so a hostile directory costs O(entries x that), not quadratic);
	 * a walk longer than the directory is a loop. */
	unsigned cap = d->n < ODX_CHAIN_MAX_MEMBERS ? (unsigned)d->n : ODX_CHAIN_MAX_MEMBERS;
	for (size_t i = 0; i < d->n; i++) {
		struct odx_chain_entry *e = &d->e[i];
		if (e->status < 0)
			continue;
		unsigned depth = 1;
		int j = e->parent_idx;
		while (j >= 0 && d->e[j].status == 0 && depth <= cap) {
			depth++;
			j = d->e[j].parent_idx;
		}
		if (j >= 0 && depth <= cap) {
			char why[sizeof e->why];
			memcpy(why, d->e[j].why, sizeof why);
			e->status = -EUCLEAN;
			snprintf(e->why, sizeof e->why, "its ancestor %.60s is unresolved: %.160s",
				 d->e[j].name, why);
		} else if (depth > d->n) {
			e->status = -ELOOP;
			snprintf(e->why, sizeof e->why,
				 "its chain of parent checkpoints loops (checkpoint \"%s\")",
				 e->parent ? e->parent : "");
		} else if (depth > ODX_CHAIN_MAX_MEMBERS) {
			e->status = -E2BIG;
			snprintf(e->why, sizeof e->why,
				 "its chain has more than the %u members a view may have "
				 "(or its parent checkpoints loop)",
				 ODX_CHAIN_MAX_MEMBERS);
		} else {
			e->depth = depth;
		}
	}
	/* An entry marked unresolved late (its ancestor is) may have been
	 * given a depth before its ancestor's status was known: redo. */
	for (bool again = true; again;) {
		again = false;
		for (size_t i = 0; i < d->n; i++) {
			struct odx_chain_entry *e = &d->e[i];
			if (e->status == 0 && e->parent_idx >= 0 && d->e[e->parent_idx].status < 0) {
				const struct odx_chain_entry *p = &d->e[e->parent_idx];
				char why[sizeof e->why];
				memcpy(why, p->why, sizeof why);
				e->status = -EUCLEAN;
				e->depth = 0;
				snprintf(e->why, sizeof e->why, "its ancestor %.60s is unresolved: %.160s",
					 p->name, why);
				again = true;
			}
		}
	}
}

int odx_chain_scan(int dirfd, const char *path, struct odx_chain_dir **out,
		   struct odx_error *err)
{
	struct stat dst;
	if (fstat(dirfd, &dst) < 0)
		return odx_error_set(err, errno, "%s: %s", path, strerror(errno));
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return odx_error_set(err, errno, "%s: %s", path, strerror(errno));
	DIR *dir = fdopendir(fd);
	if (!dir) {
		int e = errno;
		close(fd);
		return odx_error_set(err, e, "%s: %s", path, strerror(e));
	}
	struct odx_chain_dir *d = calloc(1, sizeof *d);
	size_t cap = 0;
	int r = d ? 0 : -ENOMEM;
	struct dirent *de;
	while (r == 0 && (de = readdir(dir))) {
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		if (odx_chain_name_is_partial(de->d_name))
			continue;
		if (d->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct odx_chain_entry *ne = realloc(d->e, ncap * sizeof *ne);
			if (!ne) {
				r = -ENOMEM;
				break;
			}
			d->e = ne;
			cap = ncap;
		}
		int k = scan_one(dirfd, de->d_name, de->d_type == DT_REG, &d->e[d->n],
				 &d->unreadable);
		if (k < 0)
			r = k;
		else if (k > 0)
			d->n++;
	}
	closedir(dir);
	struct maker *mk = NULL;
	size_t nmk = 0;
	if (r == 0 && d->n) {
		mk = malloc(d->n * sizeof *mk);
		if (!mk)
			r = -ENOMEM;
	}
	if (r < 0) {
		odx_chain_dir_free(d);
		return odx_error_set(err, -r, "%s: %s", path, strerror(-r));
	}
	for (size_t i = 0; i < d->n; i++)
		if (d->e[i].kind == ODX_MEMBER_FULL || d->e[i].kind == ODX_MEMBER_INC)
			mk[nmk++] = (struct maker){ d->e[i].disk, d->e[i].checkpoint, (int)i };
	qsort(mk, nmk, sizeof *mk, maker_cmp);
	resolve(d, mk, nmk);
	free(mk);
	d->dev = dst.st_dev;
	d->ino = dst.st_ino;
	d->mtime = dst.st_mtim;
	*out = d;
	return 0;
}

int odx_chain_find(const struct odx_chain_dir *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->e[i].name, name) == 0)
			return (int)i;
	return -1;
}

int odx_chain_members(const struct odx_chain_dir *d, int i, int *idx)
{
	const struct odx_chain_entry *e = &d->e[i];
	if (e->status < 0)
		return e->status;
	int n = (int)e->depth;
	for (int k = n - 1, j = i; k >= 0; k--, j = d->e[j].parent_idx)
		idx[k] = j;
	return n;
}
