/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Acting for the caller.  The daemon runs as root for every user of an
 * allow_other mount, so an operation that the backing filesystem must judge
 * as the caller's (creating, linking, renaming or removing a name, opening,
 * changing attributes or extended attributes) runs with the calling
 * process's fsuid, fsgid, supplementary groups and umask, between
 * fs_as_caller() and fs_as_daemon().  The backing filesystem then applies
 * its own rules for that user: permission bits and ACLs, sticky
 * directories, setgid-directory inheritance, default ACLs instead of the
 * umask, the owner and group of new objects, and the capabilities a
 * non-root fsuid loses (CAP_CHOWN, CAP_FOWNER, CAP_FSETID, CAP_MKNOD,
 * CAP_DAC_*: the kernel drops them from the thread's effective set while
 * its fsuid is not 0).
 *
 * Why this is race-free with many worker threads: every piece of state
 * switched here is the calling thread's own.  fsuid, fsgid and the
 * supplementary group list belong to the thread's credentials; glibc's
 * setgroups() would broadcast the change to every thread of the process
 * (POSIX semantics), so the raw system calls are used, and they change only
 * the caller.  The umask lives in the fs_struct, which threads share: each
 * worker thread unshares its own (unshare(CLONE_FS)) before it first
 * switches, so one thread's umask never applies to another's create.  A
 * thread switches back before it replies, so no request ever runs with
 * another request's identity.
 *
 * The umask: the daemon asks the kernel not to apply it (FUSE_CAP_DONT_MASK)
 * and sets the caller's umask on the thread instead, so the backing
 * filesystem applies it exactly once, or not at all under a default ACL, as
 * it would for the caller.  The daemon's own umask is 0 (main.c).
 *
 * Facts about the caller that need /proc (supplementary groups,
 * CAP_FSETID, thread group, user namespace) are read from
 * /proc/PID/status, where PID is the thread the kernel names in the
 * request; that thread waits for our reply, so the PID cannot be reused
 * meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

/* CAP_FSETID's bit in CapEff (linux/capability.h). */
#define FS_CAP_FSETID 4

static bool dont_mask;          /* the kernel leaves the umask to us */
static bool can_switch;         /* we run as root: callers can be acted for */
static uid_t daemon_uid;
static gid_t daemon_gid;
static gid_t daemon_groups[64]; /* the daemon's own supplementary groups */
static int daemon_ngroups;
static ino_t daemon_userns;     /* inode of /proc/self/ns/user */

static __thread bool thread_fs_private; /* this thread has its own umask */

void fs_cred_init(bool kernel_leaves_umask)
{
	struct stat st;
	dont_mask = kernel_leaves_umask;
	daemon_uid = geteuid();
	daemon_gid = getegid();
	/* A daemon run by an ordinary user can only ever act as that user
	 * (the kernel lets other users in only with allow_other, and then
	 * with this user's rights, as for any FUSE filesystem of theirs). */
	can_switch = daemon_uid == 0;
	int n = getgroups(sizeof daemon_groups / sizeof daemon_groups[0], daemon_groups);
	daemon_ngroups = n > 0 ? n : 0;
	daemon_userns = stat("/proc/self/ns/user", &st) == 0 ? st.st_ino : 0;
}

/* ---- /proc/PID/status -------------------------------------------------- */

static int parse_groups(const char *s, struct fs_caller *c)
{
	size_t n = 0, cap = 0;
	gid_t *g = NULL;
	for (;;) {
		char *end;
		while (*s == ' ' || *s == '\t')
			s++;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s)
			break;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			gid_t *ng = ncap <= NGROUPS_MAX ? realloc(g, ncap * sizeof *g) : NULL;
			if (!ng) {
				free(g);
				return -ENOMEM;
			}
			g = ng;
			cap = ncap;
		}
		g[n++] = (gid_t)v;
		s = end;
	}
	c->groups = g;
	c->ngroups = n;
	return 0;
}

/* Read what the request header does not carry; once per request. */
static int caller_load(struct fs_caller *c)
{
	char path[64];
	struct stat st;

	if (c->loaded)
		return c->load_err;
	c->loaded = true;
	c->tgid = c->pid;
	c->cap_fsetid = false;
	if (c->pid <= 0) {
		/* The kernel's own request (no process): no capabilities. */
		return c->load_err = 0;
	}
	snprintf(path, sizeof path, "/proc/%d/status", (int)c->pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return c->load_err = -errno;
	int r = 0;
	bool groups = false;
	/* getline: the Groups line of a user in many groups is long, and a
	 * number cut at a buffer's end would name another group. */
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "Tgid:", 5) == 0) {
			c->tgid = (pid_t)strtol(line + 5, NULL, 10);
		} else if (strncmp(line, "CapEff:", 7) == 0) {
			unsigned long long caps = strtoull(line + 7, NULL, 16);
			c->cap_fsetid = (caps >> FS_CAP_FSETID) & 1;
		} else if (strncmp(line, "Groups:", 7) == 0 && !groups) {
			groups = true;
			r = parse_groups(line + 7, c);
		}
	}
	free(line);
	fclose(f);
	/* Capabilities count only in the mount's user namespace (ours): a
	 * root inside a container is not root here. */
	snprintf(path, sizeof path, "/proc/%d/ns/user", (int)c->pid);
	if (c->cap_fsetid && (stat(path, &st) < 0 || st.st_ino != daemon_userns))
		c->cap_fsetid = false;
	return c->load_err = r;
}

/* ---- the caller -------------------------------------------------------- */

static int actor_fsetid(const struct odx_actor *a)
{
	struct fs_caller *c = a->ctx;
	return caller_load(c) == 0 && c->cap_fsetid;
}

static int actor_in_group(const struct odx_actor *a, gid_t gid)
{
	struct fs_caller *c = a->ctx;
	if (gid == c->gid)
		return 1;
	if (caller_load(c) < 0)
		return 0;
	for (size_t i = 0; i < c->ngroups; i++)
		if (c->groups[i] == gid)
			return 1;
	return 0;
}

static void actor_dropped(const struct odx_actor *a)
{
	struct fs_caller *c = a->ctx;
	c->dropped = true;
}

void fs_caller_begin(struct fs_caller *c, fuse_req_t req, fuse_ino_t ino)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	memset(c, 0, sizeof *c);
	c->fs = fs_of(req);
	c->ino = ino;
	c->uid = ctx->uid;
	c->gid = ctx->gid;
	c->pid = ctx->pid;
	c->umask = ctx->umask;
	c->actor.uid = ctx->uid;
	c->actor.gid = ctx->gid;
	c->actor.fsetid = actor_fsetid;
	c->actor.in_group = actor_in_group;
	c->actor.dropped = actor_dropped;
	c->actor.ctx = c;
	odx_actor_set(&c->actor);
}

void fs_caller_end(struct fs_caller *c)
{
	odx_actor_set(NULL);
	/* The kernel caches the mode we just changed: make it ask again.
	 * (Attributes only: no page is touched, so this cannot wait for the
	 * request we are serving.) */
	if (c->dropped && c->ino)
		fuse_lowlevel_notify_inval_inode(c->fs->se, c->ino, -1, 0);
	free(c->groups);
	c->groups = NULL;
}

int fs_caller_tgid(struct fs_caller *c, pid_t *tgid)
{
	int r = caller_load(c);
	*tgid = c->tgid;
	return r;
}

/* ---- switching the thread ---------------------------------------------- */

static int set_groups(size_t n, const gid_t *g)
{
	return syscall(SYS_setgroups, n, g) < 0 ? -errno : 0;
}

/* setfsuid/setfsgid return the previous value and cannot report failure:
 * ask again (with an invalid id, which changes nothing) to see what holds. */
static int set_fsuid(uid_t uid)
{
	syscall(SYS_setfsuid, uid);
	return (uid_t)syscall(SYS_setfsuid, (uid_t)-1) == uid ? 0 : -EPERM;
}

static int set_fsgid(gid_t gid)
{
	syscall(SYS_setfsgid, gid);
	return (gid_t)syscall(SYS_setfsgid, (gid_t)-1) == gid ? 0 : -EPERM;
}

/* What this thread has switched away from the daemon's own. */
static __thread bool thread_fsuid_set, thread_fsgid_set, thread_groups_set;

int fs_as_caller(struct fs_caller *c)
{
	int r;
	if (!thread_fs_private) {
		if (unshare(CLONE_FS) < 0) {
			r = -errno;
			odx_log(LOG_ERR, "unshare(CLONE_FS): %s: cannot act for callers",
				strerror(errno));
			return r;
		}
		thread_fs_private = true;
	}
	umask(dont_mask ? c->umask & 0777 : 0);
	if (!can_switch)
		return 0;
	/* Only what differs from the daemon's own is switched: every change
	 * of a credential makes the kernel copy the thread's credentials
	 * (measured: six changes per request cost a quarter of the 4 KiB
	 * random-write rate, through the kernel's getxattr before each
	 * write).  Root's groups matter only to root, which may do anything
	 * anyway: a root caller keeps the daemon's and they are not read. */
	bool root = c->uid == 0;
	r = root ? 0 : caller_load(c);
	if (r == 0 && !root) {
		r = set_groups(c->ngroups, c->groups);
		thread_groups_set = r == 0;
	}
	if (r == 0 && c->gid != daemon_gid) {
		r = set_fsgid(c->gid);
		thread_fsgid_set = true; /* whatever it holds now, restore it */
	}
	if (r == 0 && c->uid != daemon_uid) {
		r = set_fsuid(c->uid);
		thread_fsuid_set = true;
	}
	if (r < 0) {
		odx_log(LOG_ERR, "cannot act as uid %u gid %u: %s", (unsigned)c->uid,
			(unsigned)c->gid, strerror(-r));
		fs_as_daemon();
	}
	return r;
}

void fs_as_daemon(void)
{
	/* fsuid first: back to the daemon's gives the thread its file
	 * capabilities again, which setting groups and fsgid do not need
	 * (CAP_SETGID is not one of them) but the next request may. */
	bool ok = true;
	if (thread_fsuid_set)
		ok = set_fsuid(daemon_uid) == 0;
	thread_fsuid_set = !ok;
	if (ok && thread_fsgid_set)
		ok = set_fsgid(daemon_gid) == 0;
	thread_fsgid_set = thread_fsgid_set && !ok;
	if (ok && thread_groups_set)
		ok = set_groups((size_t)daemon_ngroups, daemon_groups) == 0;
	thread_groups_set = thread_groups_set && !ok;
	if (!ok) {
		/* Never go on with a caller's identity. */
		odx_log(LOG_CRIT, "cannot switch back to the daemon's credentials");
		abort();
	}
	umask(0);
}

int fs_caller_enter(struct fs_caller *c, fuse_req_t req)
{
	fs_caller_begin(c, req, 0);
	int r = fs_as_caller(c);
	if (r < 0)
		fs_caller_end(c);
	return r;
}

void fs_caller_leave(struct fs_caller *c)
{
	fs_as_daemon();
	fs_caller_end(c);
}
