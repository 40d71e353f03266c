/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mkseeds DIR: write the seeds that must come from our own code into
 * DIR/token, DIR/trailer and DIR/codec (which must exist).  Run by
 * fuzz/make-corpus.sh; the output is deterministic.
 *
 *   token:   tokens made by odx_token_encode / _encode_zero, raw (512
 *            bytes) and in hex form;
 *   trailer: the valid trailers of fuzz-trailer's fixed stream
 *            (trailer-stream.h), each frame count, three spellings;
 *   codec:   LZ4 frames and zlib streams as odxfs writes its chunks, with
 *            fuzz-codec's 4-byte prefix (codec, decoded size).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "odxfs/token.h"
#include "trailer-stream.h"

static const char *dir;

static void put(const char *sub, const char *name, const void *a, size_t alen,
		const void *b, size_t blen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen) ||
	    fclose(f) != 0) {
		fprintf(stderr, "mkseeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void tokens(void)
{
	static const uint8_t mount_id[ODX_TOKEN_MOUNT_ID_SIZE] = {
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	uint8_t key[ODX_TOKEN_KEY_SIZE], tok[ODX_TOKEN_SIZE];
	char hex[ODX_TOKEN_HEX_MAX], name[64];
	for (int i = 0; i < ODX_TOKEN_KEY_SIZE; i++)
		key[i] = (uint8_t)(0xA0 + i);
	static const struct {
		const char *name;
		uint32_t type;
		uint64_t length;
	} v[] = {
		{"odxfs-1m", ODX_TOKEN_TYPE_ODXFS, 1u << 20},
		{"odxfs-max", ODX_TOKEN_TYPE_ODXFS, UINT64_MAX},
		{"zero-data-4k", ODX_TOKEN_TYPE_ZERO_DATA, 4096},
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		if (odx_token_encode(tok, v[i].type, mount_id, key, v[i].length) != 0)
			exit(1);
		put("token", v[i].name, tok, sizeof tok, NULL, 0);
		size_t n = odx_token_to_hex(tok, hex);
		snprintf(name, sizeof name, "%s.hex", v[i].name);
		put("token", name, hex, n, "\n", 1);
	}
	odx_token_encode_zero(tok);
	put("token", "well-known-zero", tok, sizeof tok, NULL, 0);
	size_t n = odx_token_to_hex(tok, hex);
	put("token", "well-known-zero.hex", hex, n, NULL, 0);
}

static void trailers(void)
{
	char json[512], name[64];
	for (unsigned n = 0; n <= TS_FRAMES; n++) {
		struct ts_stream t;
		ts_build(&t, n);
		for (int form = 0; form < 3; form++) {
			int len = ts_trailer(&t, n, form, json, sizeof json);
			if (len < 0)
				exit(1);
			/* Strict for the plain spelling, salvage for the others. */
			unsigned char b0 = (unsigned char)(n | (form ? 2u << 2 : 0));
			snprintf(name, sizeof name, "frames%u-form%d", n, form);
			put("trailer", name, &b0, 1, json, (size_t)len);
		}
		ts_free(&t);
	}
}

static void codec_seed(const char *name, int zlib, const unsigned char *src, size_t n)
{
	unsigned char pre[4] = {(unsigned char)zlib, (unsigned char)n,
				(unsigned char)(n >> 8), (unsigned char)(n >> 16)};
	if (zlib) {
		uLongf cap = compressBound((uLong)n);
		unsigned char *dst = malloc(cap);
		if (!dst || compress2(dst, &cap, src, (uLong)n, 6) != Z_OK)
			exit(1);
		put("codec", name, pre, 4, dst, cap);
		free(dst);
	} else {
		struct ts_stream t = {0};
		ts_lz4(&t, src, n);
		put("codec", name, pre, 4, t.bytes, t.len);
		free(t.bytes);
	}
}

static void codecs(void)
{
	static unsigned char src[70000];
	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (unsigned char)((i * 7 + (i >> 9)) % 251);
	codec_seed("lz4-4k", 0, src, 4096);
	codec_seed("lz4-70000", 0, src, sizeof src);
	codec_seed("lz4-1", 0, src, 1);
	codec_seed("lz4-empty", 0, src, 0);
	codec_seed("zlib-4k", 1, src, 4096);
	codec_seed("zlib-70000", 1, src, sizeof src);
	codec_seed("zlib-1", 1, src, 1);
	codec_seed("zlib-empty", 1, src, 0);
	memset(src, 0, sizeof src);
	codec_seed("lz4-zeros", 0, src, sizeof src);
	codec_seed("zlib-zeros", 1, src, sizeof src);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkseeds DIR (writes DIR/token, DIR/trailer, DIR/codec)\n");
		return 2;
	}
	dir = argv[1];
	tokens();
	trailers();
	codecs();
	return 0;
}
