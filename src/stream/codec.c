/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Chunk codecs: an LZ4 frame (block and content checksums on, as the backup
 * tool writes them) or a zlib stream (RFC 1950, as compress2 writes it).
 * Everything else in the library goes through these functions.
 */
#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#define XXH_STATIC_LINKING_ONLY /* XXH32_state_t on the stack */
#include <xxhash.h>

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

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* At least n contiguous bytes at src->p; false when the chunk has fewer
 * left or a read failed (src->ioerr).  The buffer grows to n: an LZ4 block
 * (at most 4 MiB) or a whole zlib chunk (at most ODX_CHUNK_CSIZE_MAX). */
static bool csrc_need(struct csrc *src, size_t n)
{
	if (src->avail >= n)
		return true;
	if (src->fd < 0 || n > csrc_total_left(src))
		return false;
	if (src->p != src->buf && src->avail)
		memmove(src->buf, src->p, src->avail);
	src->p = src->buf;
	if (src->bufcap < n) {
		unsigned char *nb = realloc(src->buf, n);
		if (!nb) {
			src->ioerr = ENOMEM;
			return false;
		}
		src->p = src->buf = nb;
		src->bufcap = n;
	}
	while (src->avail < n) {
		size_t room = src->bufcap - src->avail;
		size_t want = src->left < room ? src->left : room;
		ssize_t got = io_pread_full(src->fd, src->buf + src->avail, want, src->off);
		if (got <= 0) {
			src->ioerr = got < 0 ? (int)-got : EIO;
			return false;
		}
		src->avail += (size_t)got;
		src->left -= (size_t)got;
		src->off += (uint64_t)got;
	}
	return true;
}

static void csrc_skip(struct csrc *src, size_t n)
{
	src->p += n;
	src->avail -= n;
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

/* An LZ4 frame decoded block by block: LZ4_decompress_safe into the
 * output (linked blocks use the 64 KiB before them as their dictionary),
 * block and content checksums verified with libxxhash's XXH32, the content
 * hashed block by block while the block is still in cache.  LZ4F makes the
 * same checks at 1.2 GB/s on a core here, this at 1.6-1.7 (bench/codec-speed;
 * decoding with no check at all would run at 3.1-3.9); every check LZ4F
 * makes is made here too (fuzz/fuzz-codec compares the two). */
static int lz4_decompress(struct csrc *src, void *dst, size_t dlen, char *why, size_t whylen)
{
	unsigned char *out = dst;
	size_t produced = 0, total = csrc_total_left(src);
	struct lz4_hdr h;
	size_t hwant = csrc_total_left(src) < 19 ? csrc_total_left(src) : 19;
	int rc = csrc_need(src, hwant) ? lz4_header(src->p, src->avail, &h) : -ENODATA;
	if (src->ioerr)
		goto ioerr;
	if (rc == -ENODATA || (rc == 0 && !csrc_need(src, h.len))) {
		if (src->ioerr)
			goto ioerr;
		snprintf(why, whylen, "LZ4 frame is truncated");
		return -EUCLEAN;
	}
	if (rc) {
		snprintf(why, whylen, "LZ4 frame is corrupt (not an LZ4 frame header)");
		return -EUCLEAN;
	}
	const unsigned char *p = src->p;
	if ((p[4] & 0x02) || (p[5] & 0x8f)) {
		snprintf(why, whylen, "LZ4 frame is corrupt (reserved header bits set)");
		return -EUCLEAN;
	}
	if (((XXH32(p + 4, h.len - 5, 0) >> 8) & 0xff) != p[h.len - 1]) {
		snprintf(why, whylen, "LZ4 checksum mismatch (frame header)");
		return -EBADMSG;
	}
	/* As LZ4F: a content size of 0 means unknown, and a dictionary ID is
	 * only a name (a block that reaches before the frame fails). */
	if ((p[4] & 0x08) && h.content && h.content != dlen) {
		snprintf(why, whylen, "LZ4 frame decodes to %" PRIu64 " bytes, expected %zu",
			 h.content, dlen);
		return -EUCLEAN;
	}
	bool linked = !(p[4] & 0x20);
	csrc_skip(src, h.len); /* h.len ends with the header checksum */
	XXH32_state_t cs;
	XXH32_reset(&cs, 0);
	for (;;) {
		if (!csrc_need(src, 4))
			goto truncated;
		uint32_t v = le32(src->p);
		csrc_skip(src, 4);
		if (v == 0)
			break; /* EndMark */
		size_t bl = v & 0x7fffffffu;
		if (bl > h.bmax) {
			snprintf(why, whylen, "LZ4 frame is corrupt (a block of %zu bytes, more than %" PRIu64 ")",
				 bl, h.bmax);
			return -EUCLEAN;
		}
		if (!csrc_need(src, bl + (h.bsum ? 4 : 0)))
			goto truncated;
		p = src->p;
		if (h.bsum && XXH32(p, bl, 0) != le32(p + bl)) {
			snprintf(why, whylen, "LZ4 checksum mismatch (block at chunk byte %zu)",
				 total - csrc_total_left(src) - 4);
			return -EBADMSG;
		}
		size_t cap = dlen - produced < h.bmax ? dlen - produced : (size_t)h.bmax;
		int n;
		if (v & 0x80000000u) { /* stored uncompressed */
			n = bl <= cap ? (int)bl : -1;
			if (n >= 0)
				memcpy(out + produced, p, bl);
		} else if (linked && produced) {
			size_t dict = produced < 65536 ? produced : 65536;
			n = LZ4_decompress_safe_usingDict((const char *)p, (char *)out + produced,
							  (int)bl, (int)cap,
							  (const char *)out + produced - dict, (int)dict);
		} else {
			n = LZ4_decompress_safe((const char *)p, (char *)out + produced, (int)bl,
						(int)cap);
		}
		if (n < 0) {
			if (cap < h.bmax)
				snprintf(why, whylen, "LZ4 frame is corrupt or decodes to more than %zu bytes",
					 dlen);
			else
				snprintf(why, whylen, "LZ4 frame is corrupt (a block does not decode)");
			return -EUCLEAN;
		}
		if (h.csum)
			XXH32_update(&cs, out + produced, (size_t)n);
		produced += (size_t)n;
		csrc_skip(src, bl + (h.bsum ? 4 : 0));
	}
	if (h.csum) {
		if (!csrc_need(src, 4))
			goto truncated;
		uint32_t want = le32(src->p);
		csrc_skip(src, 4);
		if (XXH32_digest(&cs) != want) {
			snprintf(why, whylen, "LZ4 checksum mismatch (content)");
			return -EBADMSG;
		}
	}
	if (csrc_total_left(src)) {
		snprintf(why, whylen, "LZ4 frame ends %zu bytes before the chunk does",
			 csrc_total_left(src));
		return -EUCLEAN;
	}
	if (produced != dlen) {
		snprintf(why, whylen, "LZ4 frame decodes to %zu bytes, expected %zu", produced, dlen);
		return -EUCLEAN;
	}
	return 0;
truncated:
	if (src->ioerr)
		goto ioerr;
	snprintf(why, whylen, "LZ4 frame is truncated");
	return -EUCLEAN;
ioerr:
	snprintf(why, whylen, "read failed: %s", strerror(src->ioerr));
	return -src->ioerr;
}

/* zlib's inflate: the reference, and the diagnosis when libdeflate refuses
 * a chunk (it says only "bad data"). */
static int zlib_inflate(struct csrc *src, void *dst, size_t dlen, char *why, size_t whylen)
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

/* A zlib chunk: libdeflate inflates it whole (the output size is known)
 * several times faster than zlib (bench/codec-speed); it verifies the
 * Adler-32 too.  It needs the whole chunk in memory (at most
 * ODX_CHUNK_CSIZE_MAX); anything it refuses goes to zlib, which names the
 * damage. */
static int zlib_decompress(struct csrc *src, void *dst, size_t dlen, char *why, size_t whylen)
{
	if (!csrc_need(src, csrc_total_left(src)) && src->ioerr) {
		snprintf(why, whylen, "read failed: %s", strerror(src->ioerr));
		return -src->ioerr;
	}
	struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
	if (!d)
		return -ENOMEM;
	size_t used = 0, got = 0;
	enum libdeflate_result r =
		libdeflate_zlib_decompress_ex(d, src->p, src->avail, dst, dlen, &used, &got);
	libdeflate_free_decompressor(d);
	if (r == LIBDEFLATE_SUCCESS && used == src->avail && got == dlen) {
		csrc_skip(src, used);
		return 0;
	}
	return zlib_inflate(src, dst, dlen, why, whylen);
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
