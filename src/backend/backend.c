/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Choosing a backend for a file, image reference counting, and the
 * odx_image_* wrappers that turn a missing operation into EROFS (or a
 * generic answer) in this one place, so no caller tests for NULL.
 *
 * Locking: none here.  Reference counts are atomic; the modify hook is set
 * once before any image exists and only read afterwards; the actor is a
 * thread-local pointer, each thread's own.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

/* Probe order: the most specific first; raw takes every regular file. */
static const struct odx_backend_ops *const backend_table[] = {
	&odx_backend_stream,
	&odx_backend_raw,
};

static odx_modify_hook modify_hook;
static void *modify_hook_ctx;

void odx_backend_set_modify_hook(odx_modify_hook fn, void *ctx)
{
	modify_hook = fn;
	modify_hook_ctx = ctx;
}

int odx_image_probe(int fd, const struct stat *st, const struct odx_backend_ops **out)
{
	for (size_t i = 0; i < sizeof backend_table / sizeof backend_table[0]; i++) {
		int r = backend_table[i]->probe(fd, st);
		if (r < 0)
			return r;
		if (r > 0) {
			*out = backend_table[i];
			return 0;
		}
	}
	return -ENOTSUP;
}

int odx_image_open_as(const struct odx_backend_ops *ops, int fd, const char *name,
		      const struct odx_backend_config *cfg, struct odx_image **out,
		      struct odx_error *err)
{
	struct stat st;
	struct odx_image *img = NULL;
	int r;

	if (fstat(fd, &st) < 0) {
		r = odx_error_set(err, errno, "%s: %s", name, strerror(errno));
		goto fail;
	}
	img = calloc(1, sizeof *img);
	if (!img || !(img->name = strdup(name))) {
		r = odx_error_set(err, ENOMEM, "%s: out of memory", name);
		goto fail;
	}
	img->ops = ops;
	img->fd = fd;
	img->dev = st.st_dev;
	img->ino = st.st_ino;
	atomic_init(&img->refs, 1);
	atomic_init(&img->generation, 0);
	r = ops->open(img, cfg, err);
	if (r < 0)
		goto fail;
	*out = img;
	return 0;

fail:
	if (img)
		free(img->name);
	free(img);
	close(fd);
	return r;
}

int odx_image_open(int fd, const char *name, const struct odx_backend_config *cfg,
		   struct odx_image **out, struct odx_error *err)
{
	const struct odx_backend_ops *ops;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		r = -errno;
	else
		r = odx_image_probe(fd, &st, &ops);
	if (r < 0) {
		close(fd);
		return odx_error_set(err, -r, "%s: %s", name, strerror(-r));
	}
	return odx_image_open_as(ops, fd, name, cfg, out, err);
}

struct odx_image *odx_image_ref(struct odx_image *img)
{
	atomic_fetch_add(&img->refs, 1);
	return img;
}

void odx_image_unref(struct odx_image *img)
{
	if (!img || atomic_fetch_sub(&img->refs, 1) != 1)
		return;
	if (img->ops->close)
		img->ops->close(img);
	if (img->fd >= 0)
		close(img->fd);
	free(img->name);
	free(img);
}

/* ---- the actor and privileges ---- */

static __thread const struct odx_actor *thread_actor;

void odx_actor_set(const struct odx_actor *a)
{
	thread_actor = a;
}

static bool actor_fsetid(void)
{
	const struct odx_actor *a = thread_actor;
	return a && a->fsetid && a->fsetid(a) == 1;
}

static bool actor_in_group(gid_t gid)
{
	const struct odx_actor *a = thread_actor;
	if (!a)
		return false;
	return a->in_group ? a->in_group(a, gid) == 1 : gid == a->gid;
}

int odx_image_will_modify(struct odx_image *img)
{
	struct stat st;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	/* The common case costs this one fstat: nothing to drop. */
	if (!S_ISREG(st.st_mode) || !(st.st_mode & (S_ISUID | S_ISGID)))
		return 0;
	if (actor_fsetid())
		return 0;
	mode_t kill = st.st_mode & S_ISUID;
	if ((st.st_mode & S_ISGID) && ((st.st_mode & S_IXGRP) || !actor_in_group(st.st_gid)))
		kill |= S_ISGID;
	if (!kill)
		return 0;
	/* Security capabilities (security.capability) need no help: the
	 * backing filesystem removes them itself on every write, whoever
	 * writes. */
	if (fchmod(img->fd, st.st_mode & 07777 & ~kill) < 0)
		return -errno;
	if (thread_actor && thread_actor->dropped)
		thread_actor->dropped(thread_actor);
	return 0;
}

static void image_changed(struct odx_image *img, uint64_t off, uint64_t len)
{
	atomic_fetch_add(&img->generation, 1);
	if (modify_hook)
		modify_hook(modify_hook_ctx, img, off, len);
}

void odx_image_modified(struct odx_image *img, uint64_t off, uint64_t len)
{
	image_changed(img, off, len);
}

int odx_image_getattr(struct odx_image *img, struct stat *st)
{
	return img->ops->getattr ? img->ops->getattr(img, st) : 0;
}

int odx_image_map(struct odx_image *img, uint64_t off, uint64_t len, odx_seg_fn fn,
		  void *ctx)
{
	return img->ops->map(img, off, len, fn, ctx);
}

ssize_t odx_image_read(struct odx_image *img, void *buf, size_t len, uint64_t off,
		       struct odx_error *err)
{
	return img->ops->read(img, buf, len, off, err);
}

ssize_t odx_image_borrow(struct odx_image *img, uint64_t off, size_t len, struct odx_pins *pins,
		       odx_borrow_fn fn, void *ctx, struct odx_error *err)
{
	if (!img->ops->borrow)
		return -EOPNOTSUPP;
	return img->ops->borrow(img, off, len, pins, fn, ctx, err);
}

ssize_t odx_image_write(struct odx_image *img, const void *buf, size_t len,
			uint64_t off)
{
	if (!img->ops->write)
		return -EROFS;
	int r = odx_image_will_modify(img);
	if (r < 0)
		return r;
	ssize_t n = img->ops->write(img, buf, len, off);
	if (n > 0)
		image_changed(img, off, (uint64_t)n);
	return n;
}

/* Generic SEEK_DATA/SEEK_HOLE from map: the first segment that is (or is
 * not) a hole at or after off. */
struct seek_ctx {
	int want_hole;
	uint64_t found;
};

static int seek_seg(void *ctx, const struct odx_seg *seg)
{
	struct seek_ctx *c = ctx;
	if ((seg->kind == ODX_SEG_HOLE) == c->want_hole) {
		c->found = seg->offset;
		return 1;
	}
	return 0;
}

off_t odx_image_lseek(struct odx_image *img, off_t off, int whence)
{
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (img->ops->lseek)
		return img->ops->lseek(img, off, whence);

	struct stat st;
	if (fstat(img->fd, &st) < 0)
		return -errno;
	int r = odx_image_getattr(img, &st);
	if (r < 0)
		return r;
	uint64_t size = (uint64_t)st.st_size;
	if (off < 0 || (uint64_t)off >= size)
		return -ENXIO;
	struct seek_ctx c = { .want_hole = whence == SEEK_HOLE, .found = size };
	r = odx_image_map(img, (uint64_t)off, size - (uint64_t)off, seek_seg, &c);
	if (r < 0)
		return r;
	if (r == 0 && whence == SEEK_DATA)
		return -ENXIO;
	return (off_t)c.found;
}

int odx_image_truncate(struct odx_image *img, uint64_t size)
{
	if (!img->ops->truncate)
		return -EROFS;
	int r = odx_image_will_modify(img);
	if (r == 0)
		r = img->ops->truncate(img, size);
	/* What changed is everything from the new size on: cut away when it
	 * shrank, zeros where nothing was when it grew. */
	if (r == 0)
		image_changed(img, size, UINT64_MAX);
	return r;
}

int odx_image_fallocate(struct odx_image *img, int mode, uint64_t off, uint64_t len)
{
	if (!img->ops->fallocate)
		return -EROFS;
	int r = odx_image_will_modify(img);
	if (r == 0)
		r = img->ops->fallocate(img, mode, off, len);
	if (r == 0)
		image_changed(img, off, len);
	return r;
}

int odx_image_fsync(struct odx_image *img, int datasync)
{
	return img->ops->fsync ? img->ops->fsync(img, datasync) : 0;
}

const char *odx_image_problem(struct odx_image *img, int *kind)
{
	*kind = ODX_PROBLEM_NONE;
	return img->ops->problem ? img->ops->problem(img, kind) : NULL;
}

const char *odx_image_damage(struct odx_image *img)
{
	return img->ops->damage ? img->ops->damage(img) : NULL;
}

const char *odx_image_stale(struct odx_image *img)
{
	return img->ops->stale ? img->ops->stale(img) : NULL;
}

size_t odx_image_memory(struct odx_image *img)
{
	return img->ops->memory ? img->ops->memory(img) : 0;
}

bool odx_image_suspend(struct odx_image *img)
{
	if (!img->ops->suspend || img->fd < 0)
		return false;
	return img->ops->suspend(img) == 0;
}

int odx_image_resume(struct odx_image *img, int fd, struct odx_error *err)
{
	if (img->fd >= 0)
		return 0;
	return img->ops->resume ? img->ops->resume(img, fd, err) : -EBADF;
}

int odx_image_put(struct odx_image *img, uint64_t off, const struct odx_put *p,
		  struct odx_sink_stats *st, struct odx_error *err)
{
	if (!img->ops->put)
		return -EROFS;
	int r = img->ops->put(img, off, p, st, err);
	if (r == 0)
		atomic_fetch_add(&img->generation, 1);
	return r;
}

struct odx_stream *odx_image_stream_at(struct odx_image *img, uint64_t off, uint64_t *len)
{
	return img->ops->stream_at ? img->ops->stream_at(img, off, len) : NULL;
}

struct odx_stream *odx_image_meta_stream(struct odx_image *img)
{
	return img->ops->meta_stream ? img->ops->meta_stream(img) : NULL;
}
