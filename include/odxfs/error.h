/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * odxfs error reporting.
 *
 * Library functions return 0 (or a byte count) on success and a negative
 * errno on failure; they never print and never exit.  Functions that read
 * user data also take a `struct odx_error *` (which may be NULL) and fill it
 * with one human-readable line of the form
 *
 *     FILE: offset N: what was expected, what was found
 *
 * errno conventions (the only place they are decided):
 *   EINVAL     a bad argument from the caller (not from a file)
 *   EUCLEAN    a corrupt or malformed stream (what Linux filesystems use)
 *   EBADMSG    a checksum mismatch (LZ4 checksum, .chksum Adler-32)
 *   EOVERFLOW  a size past 2^63, or lengths whose sum wraps
 *   ENODATA    a stream cut short (torn tail, missing stop or trailer)
 *   ENOTSUP    a valid stream using a feature odxfs does not implement
 *   EIO        an I/O error from the backing file
 *   ENOMEM     allocation failure
 */
#ifndef ODXFS_ERROR_H
#define ODXFS_ERROR_H

#include <stdarg.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ODX_ERROR_MSG_MAX 512

struct odx_error {
	int code;                    /* positive errno of the first failure */
	uint64_t offset;             /* byte offset in the file, when known */
	char msg[ODX_ERROR_MSG_MAX]; /* full message, file and offset included */
};

/* Fill *err (if not NULL) with a printf-style message and errno `code`
 * (positive).  Returns -code so that a failure is one statement:
 *     return odx_error_set(err, EUCLEAN, "%s: offset %llu: ...", ...);
 * Does not overwrite an error that is already set (the first cause wins). */
int odx_error_set(struct odx_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Same, with the offset recorded in err->offset and the message prefixed
 * with "PATH: offset N: ". */
int odx_error_at(struct odx_error *err, int code, const char *path,
		 uint64_t offset, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Reset *err to "no error". */
void odx_error_clear(struct odx_error *err);

#ifdef __cplusplus
}
#endif
#endif
