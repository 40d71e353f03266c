/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Chunk codecs: an LZ4 frame (block and content checksums on, as the backup
 * tool writes them) or a zlib stream (RFC 1950, as compress2 writes it).
 * Everything else in the library goes through these functions.
 */
#include <errno.h>
#include <lz4frame.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "stream-internal.h"

int codec_default_level(enum odx_codec c)
{
	return c == ODX_CODEC_ZLIB ? 6 : c == ODX_CODEC_LZ4 ? 1 : 0;
}

/* Where a chunk's compressed bytes come from: all in memory, or read from
 * a file through a small buffer (a reader then holds 1 MiB of compressed
 * input instead of the whole chunk beside its 32 MiB of output). */
struct csrc {
	const unsigned char *p; /* bytes available now */
	size_t avail;
	size_t left;            /* bytes of the chunk not yet made available */
	int fd;                 /* -1: memory only */
	uint64_t off;           /* file offset of the next bytes to read */
	unsigned char *buf;
	size_t bufcap;
	int ioerr;              /* a read failed (positive errno) */
};

/* Make more input available when none is; false at the end of the chunk
 * or on a read error (src->ioerr). */
static bool csrc_more(struct csrc *src)
{
	if (src->avail || !src->left || src->fd < 0)
		return src->avail != 0;
	size_t want = src->left < src->bufcap ? src->left : src->bufcap;
	ssize_t n = io_pread_full(src->fd, src->buf, want, src->off);
	if (n <= 0) {
		src->ioerr = n < 0 ? (int)-n : EIO;
		return false;
	}
	src->p = src->buf;
	src->avail = (size_t)n;
	src->left -= (size_t)n;
	src->off += (uint64_t)n;
	return true;
}

static size_t csrc_total_left(const struct csrc *src)
{
	return src->avail + src->left;
}

static int lz4_decompress(struct csrc *src, void *dst, size_t dlen, char *why, size_t whylen)
{
	LZ4F_dctx *d;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)))
		return -ENOMEM;
	char *out = dst;
	size_t out_left = dlen;
	int rc = 0;
	for (;;) {
		csrc_more(src);
		if (src->ioerr) {
			snprintf(why, whylen, "read failed: %s", strerror(src->ioerr));
			rc = -src->ioerr;
			break;
		}
		size_t isz = src->avail, osz = out_left;
		size_t r = LZ4F_decompress(d, out, &osz, src->p, &isz, NULL);
		if (LZ4F_isError(r)) {
			const char *e = LZ4F_getErrorName(r);
			rc = strstr(e, "hecksum") ? -EBADMSG : -EUCLEAN;
			snprintf(why, whylen, "LZ4 %s (%s)",
				 rc == -EBADMSG ? "checksum mismatch" : "frame is corrupt", e);
			break;
		}
		src->p += isz;
		src->avail -= isz;
		out += osz;
		out_left -= osz;
		if (r == 0) { /* frame complete */
			if (csrc_total_left(src)) {
				snprintf(why, whylen, "LZ4 frame ends %zu bytes before the chunk does",
					 csrc_total_left(src));
				rc = -EUCLEAN;
			} else if (out_left) {
				snprintf(why, whylen,
					 "LZ4 frame decodes to %zu bytes, expected %zu",
					 dlen - out_left, dlen);
				rc = -EUCLEAN;
			}
			break;
		}
		if (isz == 0 && osz == 0 && (!csrc_more(src) || out_left == 0)) {
			if (out_left == 0)
				snprintf(why, whylen, "LZ4 frame decodes to more than %zu bytes",
					 dlen);
			else
				snprintf(why, whylen, "LZ4 frame is truncated");
			rc = -EUCLEAN;
			break;
		}
	}
	LZ4F_freeDecompressionContext(d);
	return rc;
}

static int zlib_decompress(struct csrc *src, void *dst, size_t dlen, char *why, size_t whylen)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	if (inflateInit(&z) != Z_OK)
		return -ENOMEM;
	int rc = 0;
	/* avail_in/out are 32-bit: feed in pieces (chunks are far smaller). */
	unsigned char *out = dst;
	size_t out_left = dlen;
	int zr;
	do {
		csrc_more(src);
		if (src->ioerr)
			break;
		unsigned ia = src->avail > UINT32_MAX ? UINT32_MAX : (unsigned)src->avail;
		unsigned oa = out_left > UINT32_MAX ? UINT32_MAX : (unsigned)out_left;
		z.next_in = (unsigned char *)src->p;
		z.avail_in = ia;
		z.next_out = out;
		z.avail_out = oa;
		zr = inflate(&z, Z_NO_FLUSH);
		src->p += ia - z.avail_in;
		src->avail -= ia - z.avail_in;
		out += oa - z.avail_out;
		out_left -= oa - z.avail_out;
		if (zr == Z_BUF_ERROR && (out_left == 0 || !csrc_total_left(src)))
			break;
	} while (zr == Z_OK);
	if (src->ioerr) {
		snprintf(why, whylen, "read failed: %s", strerror(src->ioerr));
		rc = -src->ioerr;
	} else if (zr == Z_DATA_ERROR) {
		const char *msg = z.msg ? z.msg : "data error";
		rc = strstr(msg, "check") ? -EBADMSG : -EUCLEAN;
		snprintf(why, whylen, "zlib %s (%s)",
			 rc == -EBADMSG ? "checksum mismatch" : "stream is corrupt", msg);
	} else if (zr != Z_STREAM_END) {
		if (out_left == 0)
			snprintf(why, whylen, "zlib stream decodes to more than %zu bytes", dlen);
		else
			snprintf(why, whylen, "zlib stream is truncated");
		rc = -EUCLEAN;
	} else if (csrc_total_left(src)) {
		snprintf(why, whylen, "zlib stream ends %zu bytes before the chunk does",
			 csrc_total_left(src));
		rc = -EUCLEAN;
	} else if (out_left) {
		snprintf(why, whylen, "zlib stream decodes to %zu bytes, expected %zu",
			 dlen - out_left, dlen);
		rc = -EUCLEAN;
	}
	inflateEnd(&z);
	return rc;
}

static int decompress(enum odx_codec c, struct csrc *src, void *dst, size_t dlen, char *why,
		      size_t whylen)
{
	switch (c) {
	case ODX_CODEC_LZ4: return lz4_decompress(src, dst, dlen, why, whylen);
	case ODX_CODEC_ZLIB: return zlib_decompress(src, dst, dlen, why, whylen);
	default: snprintf(why, whylen, "not a compressed stream"); return -EINVAL;
	}
}

int codec_decompress(enum odx_codec c, const void *src, size_t slen, void *dst,
		     size_t dlen, char *why, size_t whylen)
{
	struct csrc in = {.p = src, .avail = slen, .fd = -1};
	return decompress(c, &in, dst, dlen, why, whylen);
}

int codec_decompress_fd(enum odx_codec c, int fd, uint64_t off, size_t slen, void *dst,
			size_t dlen, char *why, size_t whylen)
{
	enum { BUF = 1 << 20 };
	struct csrc in = {.left = slen, .fd = fd, .off = off,
			  .bufcap = slen < BUF ? (slen ? slen : 1) : BUF};
	in.buf = malloc(in.bufcap);
	if (!in.buf) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	int rc = decompress(c, &in, dst, dlen, why, whylen);
	free(in.buf);
	return rc;
}

static void lz4_prefs(LZ4F_preferences_t *p, int level, size_t slen)
{
	memset(p, 0, sizeof *p);
	p->frameInfo.blockSizeID = LZ4F_max4MB;
	p->frameInfo.blockMode = LZ4F_blockLinked;
	p->frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p->frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	p->frameInfo.contentSize = slen;
	p->compressionLevel = level;
}

size_t codec_bound(enum odx_codec c, size_t slen)
{
	if (c == ODX_CODEC_LZ4) {
		LZ4F_preferences_t p;
		lz4_prefs(&p, 0, slen);
		return LZ4F_compressFrameBound(slen, &p);
	}
	return compressBound((uLong)slen);
}

ssize_t codec_compress(enum odx_codec c, int level, const void *src, size_t slen,
		       void *dst, size_t dcap)
{
	if (c == ODX_CODEC_LZ4) {
		LZ4F_preferences_t p;
		lz4_prefs(&p, level, slen);
		size_t r = LZ4F_compressFrame(dst, dcap, src, slen, &p);
		return LZ4F_isError(r) ? -EIO : (ssize_t)r;
	}
	if (c == ODX_CODEC_ZLIB) {
		uLongf dlen = (uLongf)dcap;
		int zr = compress2(dst, &dlen, src, (uLong)slen, level);
		return zr == Z_OK ? (ssize_t)dlen : zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
	}
	return -EINVAL;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Measuring reads through a window: an LZ4 frame of tiny blocks must not
 * cost a pread per block. */
struct mwin {
	int fd;
	uint64_t base;
	size_t len;
	unsigned char buf[1 << 16];
};

/* n (<= 16) bytes at pos, or NULL when the file ends first (*ioerr on a
 * read error). */
static const unsigned char *mwin_at(struct mwin *w, uint64_t pos, size_t n, int *ioerr)
{
	if (!(pos >= w->base && pos + n <= w->base + w->len)) {
		ssize_t got = io_pread_full(w->fd, w->buf, sizeof w->buf, pos);
		if (got < 0) {
			*ioerr = (int)-got;
			return NULL;
		}
		w->base = pos;
		w->len = (size_t)got;
		if (w->len < n)
			return NULL;
	}
	return w->buf + (pos - w->base);
}

/* The LZ4 frame header at h (avail bytes): its length, block size and
 * flags, and the content size when it has one (else 0).  -ENODATA when
 * more bytes are needed, -EUCLEAN when it is not an LZ4 frame header. */
struct lz4_hdr {
	size_t len;
	uint64_t bmax, content;
	bool bsum, csum;
};

static int lz4_header(const unsigned char *h, size_t avail, struct lz4_hdr *o)
{
	if (avail < 7)
		return -ENODATA;
	if (le32(h) != 0x184D2204)
		return -EUCLEAN;
	unsigned flg = h[4], bd = h[5];
	unsigned bid = (bd >> 4) & 7;
	if ((flg >> 6) != 1 || bid < 4)
		return -EUCLEAN; /* not version 01, or no valid block size */
	bool has_size = flg & 0x08, has_dict = flg & 0x01;
	o->bsum = flg & 0x10;
	o->csum = flg & 0x04;
	o->bmax = (uint64_t)1 << (2 * bid + 8); /* 64 KiB .. 4 MiB */
	o->len = 7 + (has_size ? 8 : 0) + (has_dict ? 4 : 0);
	if (avail < o->len)
		return -ENODATA;
	o->content = 0;
	if (has_size)
		for (int i = 7; i >= 0; i--)
			o->content = o->content << 8 | h[6 + i];
	return 0;
}

int codec_content_size(enum odx_codec c, int fd, uint64_t off, uint64_t *ulen)
{
	unsigned char h[19];
	struct lz4_hdr lh;
	if (c != ODX_CODEC_LZ4)
		return -EINVAL;
	ssize_t n = io_pread_full(fd, h, sizeof h, off);
	if (n < 0)
		return (int)n;
	int rc = lz4_header(h, (size_t)n, &lh);
	if (rc)
		return rc;
	if (!lh.content)
		return -ENODATA;
	*ulen = lh.content;
	return 0;
}

static int lz4_measure(struct mwin *w, uint64_t off, uint64_t file_size, uint64_t max_ulen,
		       uint64_t *clen, uint64_t *ulen)
{
	int ioerr = 0;
	struct lz4_hdr lh;
	if (off >= file_size)
		return -ENODATA;
	size_t want = file_size - off < 19 ? (size_t)(file_size - off) : 19;
	const unsigned char *h = mwin_at(w, off, want, &ioerr);
	if (!h)
		return ioerr ? -ioerr : -ENODATA;
	int rc = lz4_header(h, want, &lh);
	if (rc)
		return rc;
	*ulen = lh.content;
	if (*ulen > max_ulen)
		return -EUCLEAN;
	bool bsum = lh.bsum, csum = lh.csum;
	uint64_t bmax = lh.bmax;
	size_t hlen = lh.len;
	uint64_t pos = off + hlen, blocks = 0;
	for (;;) {
		const unsigned char *b = mwin_at(w, pos, 4, &ioerr);
		if (!b)
			return ioerr ? -ioerr : -ENODATA;
		uint32_t v = le32(b);
		pos += 4;
		if (v == 0)
			break; /* EndMark */
		uint64_t bl = v & 0x7fffffffu;
		/* a block decodes to at least one byte and at most bmax */
		if (bl > bmax || ++blocks > max_ulen)
			return -EUCLEAN;
		pos += bl + (bsum ? 4 : 0);
		if (pos > file_size)
			return -ENODATA;
	}
	if (csum)
		pos += 4;
	if (pos > file_size)
		return -ENODATA;
	*clen = pos - off;
	return 0;
}

static int zlib_measure(struct mwin *w, uint64_t off, uint64_t file_size, uint64_t max_ulen,
			uint64_t *clen, uint64_t *ulen)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	if (inflateInit(&z) != Z_OK)
		return -ENOMEM;
	enum { OUT = 1 << 16 };
	unsigned char *out = malloc(OUT);
	int rc = -ENOMEM, zr = Z_OK;
	uint64_t pos = off;
	if (!out)
		goto done;
	while (zr != Z_STREAM_END) {
		if (z.avail_in == 0) {
			ssize_t n = io_pread_full(w->fd, w->buf, sizeof w->buf, pos);
			if (n <= 0) {
				rc = n < 0 ? (int)n : -ENODATA;
				goto done;
			}
			pos += (uint64_t)n;
			z.next_in = w->buf;
			z.avail_in = (unsigned)n;
		}
		z.next_out = out;
		z.avail_out = OUT;
		zr = inflate(&z, Z_NO_FLUSH);
		if ((zr != Z_OK && zr != Z_STREAM_END) || z.total_out > max_ulen) {
			rc = -EUCLEAN;
			goto done;
		}
	}
	*clen = z.total_in;
	*ulen = z.total_out;
	rc = off + *clen <= file_size ? 0 : -ENODATA;
done:
	inflateEnd(&z);
	free(out);
	return rc;
}

int codec_measure(enum odx_codec c, int fd, uint64_t off, uint64_t file_size,
		  uint64_t max_ulen, uint64_t *clen, uint64_t *ulen)
{
	struct mwin *w = malloc(sizeof *w);
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->base = w->len = 0;
	int rc = c == ODX_CODEC_LZ4	 ? lz4_measure(w, off, file_size, max_ulen, clen, ulen)
		 : c == ODX_CODEC_ZLIB ? zlib_measure(w, off, file_size, max_ulen, clen, ulen)
				       : -EINVAL;
	free(w);
	return rc;
}

const char *odx_codec_name(enum odx_codec c)
{
	switch (c) {
	case ODX_CODEC_NONE: return "none";
	case ODX_CODEC_LZ4: return "lz4";
	case ODX_CODEC_ZLIB: return "zlib";
	}
	return "?";
}

int odx_codec_parse(const char *name, enum odx_codec *out)
{
	for (int c = ODX_CODEC_NONE; c <= ODX_CODEC_ZLIB; c++)
		if (strcmp(name, odx_codec_name((enum odx_codec)c)) == 0) {
			*out = (enum odx_codec)c;
			return 0;
		}
	return -EINVAL;
}
