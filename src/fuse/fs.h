/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal declarations of the odxfs daemon (src/fuse), grouped by the file
 * that defines them.  Nothing here is visible outside the daemon.
 *
 * The daemon mirrors a backing directory in the manner of libfuse's
 * passthrough_ll example: one struct fs_inode per backing (dev, ino), held
 * by an O_PATH descriptor, its address used as the FUSE inode number and
 * freed when the kernel forgets the last lookup.  Every regular file is
 * served through an odx_image (src/backend): a stream is shown as the disk
 * it encodes (read-only, one shared image per inode, kept in a bounded
 * index cache: icache.c), anything else passes through read-write (one raw
 * image per open handle, on a descriptor opened with the caller's flags).
 */
#ifndef ODXFS_FUSE_FS_H
#define ODXFS_FUSE_FS_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 14)

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "backend.h"
#include "odxfs/offload.h"

/* ---- options.c ---- */

struct fs_options {
	char *backing;        /* first non-option argument */
	char *mountpoint;     /* second non-option argument */
	uint64_t cache_size;  /* -o cache_size: decompressed-chunk cache */
	uint64_t read_ahead;  /* -o read_ahead: kernel readahead of the mount */
	uint32_t token_ttl_ms; /* -o token_ttl: default offload token lifetime */
	char *token_ttl_text; /* its value as given, NULL when not given */
	uint32_t max_token_ttl_ms; /* -o max_token_ttl: longest token lifetime */
	uint32_t max_tokens;  /* -o max_tokens: outstanding offload tokens */
	uint32_t max_tokens_per_user; /* -o max_tokens_per_user; 0: engine's */
	uint64_t token_memory; /* -o token_memory: memory of their records */
	uint64_t token_memory_per_user; /* -o token_memory_per_user; 0: engine's */
	bool offload;         /* -o offload: copy_file_range offloaded */
	bool salvage;         /* -o salvage: damaged streams served in part */
	bool chain;           /* -o chain: incrementals shown as chain views */
	bool blocks_full;     /* -o blocks=full: st_blocks at least the size */
	uint32_t index_cache_entries; /* -o index_cache_entries: indexed streams kept */
	uint64_t index_cache_size;    /* -o index_cache_size: memory of their indexes */
	uint32_t index_cache_fds;     /* -o index_cache_fds: idle ones keeping a descriptor */
	uint64_t max_inodes;          /* -o max_inodes; 0: 3/4 of the descriptor limit */
	bool bad;             /* a bad value was reported: exit before mounting */
};

/* Take our -o options, BACKING and MOUNTPOINT out of args (what remains is
 * for fuse_parse_cmdline and fuse_session_new).  Bad values are reported on
 * stderr and set o->bad.  Returns 0, or -1 if args could not be parsed. */
int fs_options_parse(struct fuse_args *args, struct fs_options *o);
/* Usage line and our option table (name, default, help), for --help. */
void fs_options_help(const char *prog);
void fs_options_free(struct fs_options *o);
/* On stderr: the options odxfs and FUSE accept (after an unknown one). */
void fs_options_list_valid(void);

/* ---- main.c ---- */

struct fs;

/* Work that must wait until the kernel has processed our INIT reply (the
 * read-ahead setting); cheap after the first call.  Called by the first
 * requests of a session (lookup, getattr). */
void fs_after_init(struct fs *fs);

/* ---- cred.c ---- */

/* The process a request comes from, as far as the backing filesystem's
 * rules need it.  Filled by fs_caller_begin from the request header; what
 * only /proc tells (groups, capabilities) is read on first need. */
struct fs_caller {
	struct fs *fs;
	fuse_ino_t ino;       /* the inode a modification is made to, or 0 */
	bool dropped;         /* its setuid/setgid were dropped (backend.h) */
	uid_t uid;
	gid_t gid;
	pid_t pid;            /* the calling thread; 0 for the kernel's own */
	mode_t umask;
	struct odx_actor actor; /* the backends' view of it (backend.h) */
	bool loaded;          /* the fields below were read */
	int load_err;
	pid_t tgid;
	bool cap_fsetid;
	gid_t *groups;
	size_t ngroups;
};

/* At INIT: whether the kernel leaves the umask to us (FUSE_CAP_DONT_MASK). */
void fs_cred_init(bool kernel_leaves_umask);
/* Describe req's caller and make it the backends' actor on this thread
 * (the privileges a modification of inode `ino` drops are judged for it;
 * 0 when nothing is modified); end with fs_caller_end before replying,
 * which tells the kernel when the inode's mode changed. */
void fs_caller_begin(struct fs_caller *c, fuse_req_t req, fuse_ino_t ino);
void fs_caller_end(struct fs_caller *c);
/* The caller's thread group (process) id.  Returns 0 or -errno. */
int fs_caller_tgid(struct fs_caller *c, pid_t *tgid);
/* Switch this thread to the caller's fsuid, fsgid, groups and umask
 * (0 or -errno, and then nothing changed), and back. */
int fs_as_caller(struct fs_caller *c);
void fs_as_daemon(void);
/* fs_caller_begin and fs_as_caller in one (nothing to undo on failure);
 * fs_caller_leave undoes both. */
int fs_caller_enter(struct fs_caller *c, fuse_req_t req);
void fs_caller_leave(struct fs_caller *c);

/* ---- inode.c ---- */

enum fs_kind {
	FS_KIND_UNKNOWN = 0, /* not classified yet, or the file changed */
	FS_KIND_RAW,         /* passed through */
	FS_KIND_STREAM,      /* shown as its disk image (in->img when cached) */
	FS_KIND_BROKEN,      /* looks like a stream but does not open: EIO */
	FS_KIND_SINK,        /* a stream being written by offloaded copies
			      * (in->sink; sink.c) */
};

/* A place on one of the index cache's lists (icache.c). */
struct fs_ilink {
	struct fs_ilink *prev, *next;
	bool on;
};

struct fs_ilist {
	struct fs_ilink *head, *tail; /* most recently used first */
	size_t count;
};

struct fs_inode {
	struct fs_inode *next; /* hash chain; table lock */
	int fd;                /* O_PATH | O_NOFOLLOW */
	dev_t dev;
	ino_t ino;
	mode_t type;           /* S_IFMT bits, fixed */
	uint64_t nlookup;      /* table lock */
	/* table lock: where it was last looked up (parent's FUSE inode
	 * number and the name), and when (the table's clock), so reclaim.c
	 * can ask the kernel to forget the least recently used */
	fuse_ino_t parent;
	uint64_t parent_serial; /* the parent's serial then: it may be gone */
	char *name;
	uint64_t stamp;
	uint64_t serial;       /* unique per inode (the clock at its creation) */

	pthread_mutex_t lock;  /* guards everything below but the icache part */
	enum fs_kind kind;
	struct timespec seen_mtime; /* backing identity when kind was decided */
	off_t seen_size;
	uint64_t gen;          /* bumped whenever kind goes back to UNKNOWN */
	uint64_t open_gen;     /* gen at the last open (keep_cache) */
	unsigned writers;      /* open handles that may write (raw only) */
	/* FS_KIND_STREAM: the backend, what stat shows (kept when the image
	 * is evicted, so stat never indexes again), and whether a read found
	 * damage in a strict stream (then every open fails with EIO). */
	const struct odx_backend_ops *ops;
	off_t img_size;
	blkcnt_t img_blocks;
	bool damaged;
	bool chain_failed;     /* the open failed for its chain: tried again
				* when its directory changes (chain_dir_mtime) */
	struct timespec chain_dir_mtime;
	struct odx_image *img; /* the cached image, or NULL (icache.c) */
	/* Streams written by offloaded copies (sink.c). */
	bool created;          /* created empty through this mount */
	struct odx_image *sink; /* FS_KIND_SINK: the stream being written */
	bool sink_explicit;    /* begun by ODX_IOC_STREAM_BEGIN: finished only
				* by ODX_IOC_STREAM_FINISH */
	int sink_dirfd;        /* its directory (O_PATH), for the renames */
	char *sink_name;       /* its name there; written as NAME.partial */

	/* icache.c, under the cache's lock */
	struct fs_ilink lru;   /* on the list of cached images */
	struct fs_ilink fdl;   /* on the list of those with a descriptor */
	size_t img_bytes;      /* memory of img, counted in the cache */
};

struct fs_itable {
	pthread_mutex_t lock;
	struct fs_inode **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
	uint64_t clock;  /* ticks once per lookup (fs_inode.stamp) */
};

/* ---- icache.c ---- */

/* The index cache: the stream inodes whose image is kept, least recently
 * used first out, and which of them keep a descriptor. */
struct fs_icache {
	pthread_mutex_t lock;
	struct fs_ilist lru;  /* inodes whose image is cached */
	struct fs_ilist fds;  /* of those, the images with a descriptor */
	uint64_t bytes;       /* odx_image_memory of the cached images */
	size_t max_entries, max_fds;
	uint64_t max_bytes;
	/* counters, under the lock */
	uint64_t evictions, suspends, resumes, reindexes;
};

struct fs_icache_stats {
	uint64_t entries, bytes, with_fd;
	uint64_t evictions, suspends, resumes, reindexes;
};

void fs_icache_init(struct fs_icache *c, size_t max_entries, uint64_t max_bytes,
		    size_t max_fds);
void fs_icache_destroy(struct fs_icache *c);
/* The calls below are made with in->lock held (the cache's lock nests
 * inside inode locks).  fs_icache_add: in->img was just opened (with a
 * descriptor; `again`: indexed again after an eviction): count it, then
 * trim the cache to its bounds.  use: in->img
 * serves a request now (most recently used).  resumed: in->img got its
 * descriptor back.  remove: in->img is about to be dropped by its owner
 * (or the inode freed). */
void fs_icache_add(struct fs *fs, struct fs_inode *in, bool again);
void fs_icache_use(struct fs *fs, struct fs_inode *in);
void fs_icache_resumed(struct fs *fs, struct fs_inode *in);
void fs_icache_remove(struct fs *fs, struct fs_inode *in);
/* Out of descriptors (EMFILE, ENFILE): close the descriptor of every idle
 * cached image.  Any thread, any locks but the cache's.  Returns how many
 * were closed. */
size_t fs_icache_relieve(struct fs *fs);
/* Whether a call that failed with r should be tried once more: r is
 * EMFILE or ENFILE and fs_icache_relieve closed something, or the kernel
 * forgot inodes when asked (fs_reclaim_wait). */
bool fs_retry_fds(struct fs *fs, int r);
void fs_icache_stats(struct fs *fs, struct fs_icache_stats *out);

/* ---- notify.c ---- */

/* Cache invalidations for the kernel, sent from a thread of their own (see
 * notify.c for why never from a request's thread). */
struct fs_notify {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stopping;
	fuse_ino_t *queue;
	size_t n, cap;
};

void fs_notify_init(struct fs_notify *n);
/* Drop every cached page of inode ino, soon (queued; never blocks on the
 * kernel). */
void fs_notify_inval(struct fs *fs, fuse_ino_t ino);
/* Send what is queued and end the thread (after the request loop ended). */
void fs_notify_stop(struct fs *fs);

/* ---- reclaim.c ---- */

struct fs_reclaim {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stopping, kicked, urgent;
	size_t high, low;        /* inodes: start at high, ask down to low */
	struct timespec last;    /* end of the last round */
	uint64_t asked;          /* forget requests sent, in all */
};

/* Set the marks (max_inodes: 0 means 3/4 of the descriptor limit). */
void fs_reclaim_init(struct fs *fs, uint64_t max_inodes);
/* Called after an inode was added: wakes the thread past the mark. */
void fs_reclaim_kick(struct fs *fs, size_t inodes);
/* Out of descriptors: run a round now and wait (up to a second) for the
 * kernel to forget some inodes.  Returns whether it did. */
bool fs_reclaim_wait(struct fs *fs);
void fs_reclaim_stop(struct fs *fs);

struct fs_handle;

/* Attribute and entry cache lifetime, seconds: short, so a file replaced
 * in the backing directory (a raw file that became a stream) shows soon. */
#define FS_TIMEOUT 1.0

/* The mount: one per daemon, reached with fs_of(req). */
struct fs {
	struct fs_options opt;
	struct fs_inode root;
	struct fs_itable itable;
	struct odx_backend_config bcfg;
	int proc_fd; /* /proc/self/fd, for reopening O_PATH descriptors */
	char ra_path[128];       /* the mount's bdi read_ahead_kb */
	atomic_bool ra_pending;  /* still to be written (fs_after_init) */
	/* The offload engine (copy_file_range, the ODX ioctls): created
	 * before any image is opened, destroyed before the images are. */
	struct odx_offload_engine *engine;
	struct fuse_session *se; /* for cache invalidation notices */
	struct fs_icache icache;
	struct fs_notify notify;
	struct fs_reclaim reclaim;
};

static inline struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

int fs_itable_init(struct fs_itable *t);
/* Free every inode (at unmount, single-threaded). */
void fs_itable_destroy(struct fs *fs);
struct fs_inode *fs_inode_of(struct fs *fs, fuse_ino_t ino);
/* Find or create the inode for the backing object open as `fd` (O_PATH),
 * described by *st, and count one lookup.  Takes ownership of fd.
 * Returns 0 or -errno. */
int fs_inode_lookup(struct fs *fs, int fd, const struct stat *st, struct fs_inode *parent,
		    const char *name, struct fs_inode **out);
/* Drop n lookups; the inode is freed at zero. */
void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n);
/* openat(2) that, out of descriptors, lets the index cache close idle
 * ones (fs_retry_fds) and tries once more.  Returns the descriptor or
 * -errno. */
int fs_openat(struct fs *fs, int dirfd, const char *name, int flags, mode_t mode);
/* Reopen the inode's backing object with `flags` (through /proc/self/fd,
 * with fs_openat).  Returns the new descriptor or -errno. */
int fs_inode_reopen(struct fs *fs, struct fs_inode *in, int flags);
/* The FUSE inode number of in. */
fuse_ino_t fs_inode_ino(struct fs *fs, struct fs_inode *in);
/* The backing path of the inode, for messages (best effort). */
void fs_inode_path(struct fs *fs, struct fs_inode *in, char *buf, size_t len);
/* stat of the inode as the mount shows it: for a stream the image's size
 * and data blocks (from the inode's summary: an evicted stream is not
 * indexed again).  Returns 0 or -errno. */
int fs_inode_stat(struct fs *fs, struct fs_inode *in, struct stat *st);
/* How a regular file is served, decided (or confirmed, from the cached
 * verdict and the backing identity in *st) without taking an image.
 * Returns the kind, or -errno. */
int fs_inode_kind(struct fs *fs, struct fs_inode *in, const struct stat *st);
/* The same, and for a stream *img gets a reference to the shared image
 * (indexed again when it was evicted, given its descriptor back when it
 * was suspended), *gen the verdict's generation (fs_inode_note_damage),
 * and *reused says whether the verdict served an earlier request already
 * (then cached pages are still valid).  Returns the kind, or -errno: EIO
 * for a stream that cannot be served or was found damaged (logged once). */
int fs_inode_classify(struct fs *fs, struct fs_inode *in, const struct stat *st,
		      struct odx_image **img, uint64_t *gen, bool *reused);
/* A read of img (a stream image of verdict generation gen, held by the
 * caller) failed: if the image recorded damage (odx_image_damage), mark
 * the inode so every later open fails with EIO, log it once and queue the
 * invalidation of the kernel's cached pages.  Returns whether img is
 * damaged (then the failed read needs no message of its own). */
bool fs_inode_note_damage(struct fs *fs, struct fs_inode *in, uint64_t gen,
			  struct odx_image *img);
/* Look up name in parent and fill *e (attributes as the mount shows them).
 * Returns 0 or -errno. */
int fs_entry_lookup(struct fs *fs, struct fs_inode *parent, const char *name,
		    struct fuse_entry_param *e);
/* Apply a setattr (mode, owner, size, times) to the backing object as
 * caller c; h is the open handle when the kernel gave one.  Returns 0 or
 * -errno. */
int fs_inode_setattr(struct fs *fs, struct fs_inode *in, const struct stat *attr,
		     int to_set, struct fs_handle *h, struct fs_caller *c);

/* ---- handle.c ---- */

struct fs_handle {
	struct fs_inode *inode;
	struct odx_image *img; /* one reference */
	/* Once this handle's file became a stream being written (sink.c):
	 * that image (one reference), which every request on the handle uses
	 * from then on (fs_handle_img).  Set once, dropped at close. */
	_Atomic(struct odx_image *) sink;
	/* The kernel's (from open to RELEASE) and each request's that uses
	 * the handle (fs_handle_hold): the kernel sends RELEASE as soon as a
	 * request's reply is out, maybe before that request's thread is done
	 * with the handle, and that order is not one ThreadSanitizer sees. */
	atomic_int refs;
	int flags;             /* of the open(2): access mode, O_APPEND, ... */
	bool stream;
	bool writer;           /* counted in inode->writers */
	uint64_t gen;          /* stream: the inode's verdict generation */
};

/* Open the inode for the flags of an open(2), as caller c.  Streams refuse
 * writing and O_TRUNC with -EROFS.  *keep_cache says the kernel may keep
 * cached pages.  Returns 0 or -errno. */
int fs_handle_open(struct fs *fs, struct fs_inode *in, int flags, struct fs_caller *c,
		   struct fs_handle **out, bool *keep_cache);
/* Create name in parent (O_CREAT semantics of open(2)) as caller c, look it
 * up into *e and open a handle.  Returns 0 or -errno. */
int fs_handle_create(struct fs *fs, struct fs_inode *parent, const char *name,
		     mode_t mode, int flags, struct fs_caller *c, struct fuse_entry_param *e,
		     struct fs_handle **out, bool *keep_cache);
void fs_handle_close(struct fs *fs, struct fs_handle *h);
/* Whether caller c may read the stream image img of inode in (shared, opened
 * with the daemon's rights): it opens the file, and each member of a chain
 * view, as the caller.  0 or -errno. */
int fs_handle_may_read(struct fs *fs, struct fs_inode *in, struct odx_image *img,
		       struct fs_caller *c);

static inline struct fs_handle *fs_handle_of(const struct fuse_file_info *fi)
{
	return (struct fs_handle *)(uintptr_t)fi->fh;
}

/* A request's hold on the handle of fi, and its end (the last one closes
 * the handle: fs_handle_close). */
static inline struct fs_handle *fs_handle_hold(const struct fuse_file_info *fi)
{
	struct fs_handle *h = fs_handle_of(fi);
	atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
	return h;
}
void fs_handle_drop(struct fs *fs, struct fs_handle *h);

/* The image requests on h go to. */
static inline struct odx_image *fs_handle_img(struct fs_handle *h)
{
	struct odx_image *s = atomic_load_explicit(&h->sink, memory_order_acquire);
	return s ? s : h->img;
}

/* ---- sink.c: streams written by offloaded copies ---- */

/* The image an offload write through h writes to: the stream h's file is
 * becoming, when it is one or becomes one now (a file created empty
 * through the mount whose name ends in ".data", written by an offloaded
 * copy of an image of the mount: implicitly, in the source's codec), else
 * h's own.  Borrowed: valid while h is.  NULL with *err when the file
 * should become a stream and cannot (then nothing was changed). */
struct odx_image *fs_sink_dst(struct fs *fs, struct fs_handle *h, struct fs_caller *c,
			      struct odx_error *err);
/* ODX_IOC_STREAM_BEGIN: make h's file (new, empty, h the only writer) a
 * stream being written, finished by fs_sink_finish only.  0 or -errno. */
int fs_sink_begin(struct fs *fs, struct fs_handle *h, struct fs_caller *c, int codec,
		  int level, struct odx_error *err);
/* Finish the stream h is writing at `size` (0: what was written) and
 * publish it under its name: ODX_IOC_STREAM_FINISH (explicit), or the
 * close of an implicit one (flush; only when it holds a whole copy of
 * its source: else it is left as NAME.partial, torn).  *st (may be NULL)
 * gets the stream's counters.  0 (also when h writes no stream) or
 * -errno. */
int fs_sink_finish(struct fs *fs, struct fs_handle *h, struct fs_caller *c, bool explicit_call,
		   uint64_t size, struct odx_sink_stats *st, struct odx_error *err);
/* The handle goes (release): a stream it began and did not finish is
 * left as NAME.partial (torn), logged. */
void fs_sink_release(struct fs *fs, struct fs_handle *h);
/* The inode goes: the same for a stream still being written. */
void fs_sink_inode_free(struct fs *fs, struct fs_inode *in);

/* ---- reply.c ---- */

/* The one errno translation for replies: corrupt-data codes from the
 * stream library (EUCLEAN, EBADMSG) become EIO; read replies also turn
 * ENODATA (a stream cut short) into EIO. */
int fs_errno(int neg);
/* Reply helpers: each answers the request exactly once. */
void fs_reply_err(fuse_req_t req, int neg);
void fs_reply_entry(fuse_req_t req, int r, const struct fuse_entry_param *e);
void fs_reply_attr(fuse_req_t req, int r, const struct stat *st, double timeout);
/* Answer a read of [off, off+size) of h's image: FD segments as
 * descriptors the kernel can splice, holes from a zero buffer, compressed
 * data decoded. */
void fs_reply_read(fuse_req_t req, struct fs_handle *h, size_t size, off_t off);
/* Log a data error of img (file and offset) once per image and kind. */
void fs_log_data_error(struct odx_image *img, int neg, const struct odx_error *err,
		       uint64_t off);
/* Whether a message about (dev, ino, version, code) is logged for the
 * first time (remembered for the last FS_LOGGED_RING of them).  Codes:
 * a negative errno for data errors, FS_LOG_* for whole files. */
bool fs_log_first_time(dev_t dev, ino_t ino, uint64_t version, int code);
#define FS_LOG_BROKEN 1  /* a stream that does not open */
#define FS_LOG_PROBLEM 2 /* opened with a problem (odx_image_problem) */
#define FS_LOG_DAMAGE 3  /* damage found while reading a strict stream */

/* Answer a copy_file_range with the bytes copied (r >= 0) or the failure
 * (r < 0): failures that only mean "not offloaded this time" (token caps,
 * EXDEV, EOPNOTSUPP, token errors, ENOMEM) become EOPNOTSUPP, so the kernel
 * copies that range itself (unless !may_decline: a stream destination,
 * which takes no bytes); never ENOSYS, which would switch the kernel's
 * copy_file_range off for the rest of the mount.  `err` (may be NULL)
 * carries the engine's message for the debug log. */
void fs_reply_copy(fuse_req_t req, int64_t r, const struct odx_error *err, bool may_decline);
/* Answer an ioctl with `size` bytes of `out` (r == 0) or the failure. */
void fs_reply_ioctl(fuse_req_t req, int r, const void *out, size_t size);

/* Size of the requests we ask the kernel for (max_write, and through
 * max_pages the largest read), and a bound on any request we answer. */
#define FS_MAX_REQUEST (512u << 10)
#define FS_MAX_IO (1u << 20)

/* ---- ops tables ---- */
void fs_ops_entry(struct fuse_lowlevel_ops *ops);
void fs_ops_dir(struct fuse_lowlevel_ops *ops);
void fs_ops_file(struct fuse_lowlevel_ops *ops);
void fs_ops_xattr(struct fuse_lowlevel_ops *ops);
void fs_ops_copy(struct fuse_lowlevel_ops *ops);
void fs_ops_ioctl(struct fuse_lowlevel_ops *ops);

#endif
