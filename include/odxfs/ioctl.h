/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ioctls on files inside an odxfs mount: the offload token pair for
 * programs (Windows' FSCTL_OFFLOAD_READ / FSCTL_OFFLOAD_WRITE), token
 * release and the engine's counters.
 *
 * Every request is one fixed-size struct passed with _IOWR/_IOW/_IOR, so
 * FUSE's restricted ioctl carries it to the daemon and back (REFERENCE.md:
 * a 528-byte _IOWR does).  Each struct starts with `size`, which the caller
 * sets to sizeof the struct; the daemon refuses any other value with
 * EINVAL, so the layout can grow later under a new request number.
 *
 * Input fields mirror FSCTL_OFFLOAD_READ_INPUT / FSCTL_OFFLOAD_WRITE_INPUT,
 * output fields FSCTL_OFFLOAD_READ_OUTPUT / FSCTL_OFFLOAD_WRITE_OUTPUT
 * ([MS-FSCC] 2.3.41-2.3.44); flag values are those of offload.h.
 *
 *   ODX_IOC_OFFLOAD_READ   on a regular file open for reading (EBADF
 *                          otherwise)
 *   ODX_IOC_OFFLOAD_WRITE  on a regular file open for WRITING and not
 *                          O_APPEND (the daemon checks: FUSE delivers
 *                          ioctls on any descriptor; EBADF otherwise), not
 *                          immutable or append-only (EPERM), within the
 *                          caller's RLIMIT_FSIZE (EFBIG at or past it; a
 *                          write crossing it is cut there)
 *   ODX_IOC_RELEASE        on any file or directory of the mount
 *   ODX_IOC_STATS          on any file or directory of the mount (odxctl
 *                          stats uses the mount root)
 *   ODX_IOC_STREAM_BEGIN   on a handle open for writing of a new, empty
 *                          file (one name, no other writer): it becomes a
 *                          stream being written, as NAME.partial, by the
 *                          offload writes through this handle (EBUSY when
 *                          another handle writes it or it is one already,
 *                          EINVAL when it is not empty, EEXIST when
 *                          NAME.partial exists)
 *   ODX_IOC_STREAM_FINISH  on that handle: end the stream, fsync it and
 *                          rename it back to NAME with NAME.chksum (EEXIST
 *                          when a file took the name meanwhile: it stays
 *                          NAME.partial); the counters of the stream.
 *                          Closing the handle without it leaves
 *                          NAME.partial, torn
 *
 * Errors are the engine's (offload.h): EPROTO, ENOKEY, EKEYEXPIRED,
 * EKEYREJECTED, EKEYREVOKED, ERANGE, EROFS, EBADF, EINVAL, ENFILE, ENOBUFS,
 * EMFILE and EDQUOT (the caller's per-user caps, on offload read), EIO;
 * and the checks above: EBADF, EPERM, EFBIG.
 * ENOTTY: not an odxfs mount (or a daemon without offload).
 *
 * No FUSE type appears here; the header needs only the C library.
 */
#ifndef ODXFS_IOCTL_H
#define ODXFS_IOCTL_H

#include <stdint.h>
#include <sys/ioctl.h>

#include "odxfs/token.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ODX_IOC_MAGIC 'O'

struct odx_ioc_offload_read {
	uint32_t size;            /* in: sizeof(struct odx_ioc_offload_read) */
	uint32_t flags;           /* in: 0 (reserved) */
	uint32_t token_ttl_ms;    /* in: 0 = the mount's token_ttl */
	uint32_t reserved;        /* in: 0 */
	uint64_t file_offset;     /* in */
	uint64_t copy_length;     /* in */
	uint32_t out_flags;       /* out: ODX_OFFLOAD_READ_FLAG_* */
	uint32_t reserved2;       /* out: 0 */
	uint64_t transfer_length; /* out */
	uint8_t token[ODX_TOKEN_SIZE]; /* out */
};

struct odx_ioc_offload_write {
	uint32_t size;            /* in: sizeof(struct odx_ioc_offload_write) */
	uint32_t flags;           /* in: 0 (reserved) */
	uint64_t file_offset;     /* in: destination offset */
	uint64_t copy_length;     /* in */
	uint64_t transfer_offset; /* in: where in the token's data to start */
	uint8_t token[ODX_TOKEN_SIZE]; /* in */
	uint32_t out_flags;       /* out: ODX_OFFLOAD_WRITE_FLAG_* */
	uint32_t reserved;        /* out: 0 */
	uint64_t length_written;  /* out */
};

struct odx_ioc_release {
	uint32_t size;            /* in: sizeof(struct odx_ioc_release) */
	uint32_t reserved;        /* in: 0 */
	uint8_t token[ODX_TOKEN_SIZE]; /* in */
};

/* The engine's counters (struct odx_offload_stats in offload.h). */
struct odx_ioc_stats {
	uint32_t size;            /* in: sizeof(struct odx_ioc_stats) */
	uint32_t reserved;
	uint64_t tokens_issued;   /* out, all below */
	uint64_t tokens_used;
	uint64_t tokens_expired;
	uint64_t tokens_rejected;
	uint64_t tokens_released;
	uint64_t tokens_invalidated;
	uint64_t bytes_kernel;
	uint64_t bytes_buffered;
	uint64_t bytes_holes;
	uint64_t tokens_live;
	uint64_t token_bytes;
	/* The daemon's index cache (odxfs(8), -o index_cache_*); 0 from a
	 * daemon without one. */
	uint64_t index_entries;   /* streams whose index is kept now */
	uint64_t index_bytes;     /* memory of those indexes */
	uint64_t index_evictions; /* indexes dropped for the bounds so far */
	uint64_t index_suspended; /* kept indexes without a descriptor now */
	/* Streams written by offloaded copies (odxfs(8), STREAM
	 * DESTINATIONS): data of compressed chunks copied as they were, not
	 * decoded (bytes of data they hold).  0 from older daemons. */
	uint64_t bytes_verbatim;
};

/* ODX_IOC_STREAM_BEGIN and ODX_IOC_STREAM_FINISH (odxfs(8), STREAM
 * DESTINATIONS). */
struct odx_ioc_stream {
	uint32_t size;            /* in: sizeof(struct odx_ioc_stream) */
	uint32_t flags;           /* in: 0 */
	int32_t codec;            /* BEGIN, in: -1 the source's (that of the
				   * first offload write's source), 0 none,
				   * 1 lz4, 2 zlib */
	int32_t level;            /* BEGIN, in: 0 the codec's default */
	uint64_t virtual_size;    /* FINISH, in: the disk's size; 0: the end
				   * of what was written */
	uint64_t bytes_kernel;    /* FINISH, out: data copied into payloads
				   * by copy_file_range */
	uint64_t bytes_verbatim;  /* data of compressed chunks copied as
				   * they were */
	uint64_t bytes_buffered;  /* data through the daemon's buffers */
	uint64_t bytes_holes;     /* written as zero frames */
	uint64_t data_size;       /* the stream's dataSize */
	uint64_t reserved[3];     /* 0 */
};

#define ODX_IOC_OFFLOAD_READ _IOWR(ODX_IOC_MAGIC, 0xA0, struct odx_ioc_offload_read)
#define ODX_IOC_OFFLOAD_WRITE _IOWR(ODX_IOC_MAGIC, 0xA1, struct odx_ioc_offload_write)
#define ODX_IOC_RELEASE _IOW(ODX_IOC_MAGIC, 0xA2, struct odx_ioc_release)
#define ODX_IOC_STATS _IOWR(ODX_IOC_MAGIC, 0xA3, struct odx_ioc_stats)
#define ODX_IOC_STREAM_BEGIN _IOW(ODX_IOC_MAGIC, 0xA4, struct odx_ioc_stream)
#define ODX_IOC_STREAM_FINISH _IOWR(ODX_IOC_MAGIC, 0xA5, struct odx_ioc_stream)

_Static_assert(sizeof(struct odx_ioc_offload_read) == 560, "ioctl ABI");
_Static_assert(sizeof(struct odx_ioc_offload_write) == 560, "ioctl ABI");
_Static_assert(sizeof(struct odx_ioc_release) == 520, "ioctl ABI");
_Static_assert(sizeof(struct odx_ioc_stats) == 136, "ioctl ABI");
_Static_assert(sizeof(struct odx_ioc_stream) == 88, "ioctl ABI");

#ifdef __cplusplus
}
#endif
#endif
