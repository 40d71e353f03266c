/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * codec-speed: decoder CPU per GiB for each decoding option odxfs could
 * use (issue 12).  Prints a table; asserts only that every option decodes
 * the same bytes.
 *   codec-speed [MiB] [CHUNK-KiB]      (default 256 MiB in 4096 KiB chunks)
 *
 * Data: each 4 KiB block half fresh pseudo-random bytes, half text with a
 * varying word order (lz4 keeps 1/1.4 of it, zlib 1/1.7), not one
 * repeated block.  Encoded as virtnbdbackup writes it (LZ4 frame, 64 KiB linked
 * blocks, block and content checksums), as odxctl writes it (4 MiB
 * blocks), and as zlib level 6.  Each option decodes every chunk on one
 * thread; the figure is the thread's CPU time (median of 5 passes) per GiB
 * of decoded bytes, and the rate that makes on one core.
 */
#include <lz4.h>
#include <lz4frame.h>
#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "../src/stream/stream-internal.h"

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_data(unsigned char *p, size_t n)
{
	static const char *words[] = {"odxfs ", "offload ", "token ", "extent ", "the ",
				      "quick ", "brown ", "fox ", "backup ", "chain "};
	uint64_t x = 0x9e3779b97f4a7c15u;
	for (size_t b = 0; b < n; b += 4096) {
		size_t half = (n - b < 4096 ? n - b : 4096) / 2;
		for (size_t i = 0; i + 8 <= half; i += 8) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(p + b + i, &x, 8);
		}
		size_t i = half, end = n - b < 4096 ? n - b : 4096;
		while (i < end) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			const char *w = words[x % 10];
			size_t l = strlen(w) < end - i ? strlen(w) : end - i;
			memcpy(p + b + i, w, l);
			i += l;
		}
	}
}

struct enc {
	const char *name;
	size_t nchunks;
	unsigned char **c;
	size_t *clen;
};

static void encode_lz4(struct enc *e, const unsigned char *d, size_t chunk, size_t n,
		       LZ4F_blockSizeID_t bs)
{
	LZ4F_preferences_t p;
	memset(&p, 0, sizeof p);
	p.frameInfo.blockSizeID = bs;
	p.frameInfo.blockMode = LZ4F_blockLinked;
	p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	p.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
	p.frameInfo.contentSize = chunk;
	for (size_t i = 0; i < e->nchunks; i++) {
		size_t cap = LZ4F_compressFrameBound(chunk, &p);
		e->c[i] = malloc(cap);
		e->clen[i] = LZ4F_compressFrame(e->c[i], cap, d + i * chunk, chunk, &p);
	}
	(void)n;
}

static void encode_zlib(struct enc *e, const unsigned char *d, size_t chunk)
{
	for (size_t i = 0; i < e->nchunks; i++) {
		uLongf cap = compressBound(chunk);
		e->c[i] = malloc(cap);
		compress2(e->c[i], &cap, d + i * chunk, chunk, 6);
		e->clen[i] = cap;
	}
}

enum opt { LZ4F_CHECKED, LZ4F_NOCHECK, LZ4_BLOCK_XXH, LZ4_BLOCK_ONLY, ZLIB_INFLATE, DEFLATE };

/* LZ4 blocks without any check: the floor a checked decoder is held to. */
static int lz4_blocks_only(const unsigned char *s, size_t slen, unsigned char *out, size_t dlen)
{
	size_t pos = 7 + ((s[4] & 0x08) ? 8 : 0), prod = 0;
	int bsum = (s[4] & 0x10) != 0;
	while (pos + 4 <= slen) {
		uint32_t v;
		memcpy(&v, s + pos, 4);
		pos += 4;
		if (!v)
			return prod == dlen ? 0 : -1;
		uint32_t bl = v & 0x7fffffffu;
		size_t dict = prod < 65536 ? prod : 65536;
		int k = LZ4_decompress_safe_usingDict((const char *)s + pos, (char *)out + prod,
						      (int)bl, (int)(dlen - prod),
						      (const char *)out + prod - dict, (int)dict);
		if (k < 0)
			return -1;
		prod += (size_t)k;
		pos += bl + (bsum ? 4 : 0);
	}
	return -1;
}

static int decode(enum opt o, const unsigned char *s, size_t slen, unsigned char *out,
		  size_t dlen)
{
	char why[256];
	switch (o) {
	case LZ4F_CHECKED:
	case LZ4F_NOCHECK: {
		LZ4F_dctx *d;
		LZ4F_createDecompressionContext(&d, LZ4F_VERSION);
		LZ4F_decompressOptions_t opts = {.skipChecksums = o == LZ4F_NOCHECK};
		size_t isz = slen, osz = dlen;
		size_t r = LZ4F_decompress(d, out, &osz, s, &isz, &opts);
		LZ4F_freeDecompressionContext(d);
		return r == 0 && osz == dlen ? 0 : -1;
	}
	case LZ4_BLOCK_XXH: return codec_decompress(ODX_CODEC_LZ4, s, slen, out, dlen, why, sizeof why);
	case LZ4_BLOCK_ONLY: return lz4_blocks_only(s, slen, out, dlen);
	case ZLIB_INFLATE: {
		uLongf dl = dlen;
		return uncompress(out, &dl, s, slen) == Z_OK && dl == dlen ? 0 : -1;
	}
	case DEFLATE: return codec_decompress(ODX_CODEC_ZLIB, s, slen, out, dlen, why, sizeof why);
	}
	return -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 256;
	size_t chunk = (argc > 2 ? strtoul(argv[2], NULL, 0) : 4096) << 10;
	size_t n = (mib << 20) / chunk * chunk;
	if (!n || chunk > ODX_CHUNK_SIZE) {
		fprintf(stderr, "usage: codec-speed [MiB] [CHUNK-KiB <= 32768]\n");
		return 2;
	}
	unsigned char *data = malloc(n), *out = malloc(n);
	make_data(data, n);
	size_t nc = n / chunk;
	struct enc encs[3] = {
		{"lz4, 64 KiB linked blocks (virtnbdbackup)", nc, calloc(nc, sizeof(void *)), calloc(nc, sizeof(size_t))},
		{"lz4, 4 MiB linked blocks (odxctl)", nc, calloc(nc, sizeof(void *)), calloc(nc, sizeof(size_t))},
		{"zlib level 6", nc, calloc(nc, sizeof(void *)), calloc(nc, sizeof(size_t))},
	};
	encode_lz4(&encs[0], data, chunk, n, LZ4F_max64KB);
	encode_lz4(&encs[1], data, chunk, n, LZ4F_max4MB);
	encode_zlib(&encs[2], data, chunk);
	static const struct {
		int enc;
		enum opt o;
		const char *name;
	} rows[] = {
		{0, LZ4F_CHECKED, "LZ4F_decompress, checksums verified (before)"},
		{0, LZ4F_NOCHECK, "LZ4F_decompress, skipChecksums (unsafe)"},
		{0, LZ4_BLOCK_XXH, "blocks + libxxhash XXH32 (odxfs now)"},
		{0, LZ4_BLOCK_ONLY, "blocks, no checks (floor, unsafe)"},
		{1, LZ4F_CHECKED, "LZ4F_decompress, checksums verified (before)"},
		{1, LZ4F_NOCHECK, "LZ4F_decompress, skipChecksums (unsafe)"},
		{1, LZ4_BLOCK_XXH, "blocks + libxxhash XXH32 (odxfs now)"},
		{1, LZ4_BLOCK_ONLY, "blocks, no checks (floor, unsafe)"},
		{2, ZLIB_INFLATE, "zlib inflate (before)"},
		{2, DEFLATE, "libdeflate, Adler-32 verified (odxfs now)"},
	};
	printf("%zu MiB of data in %zu KiB chunks (each 4 KiB half random, half text)\n\n", n >> 20,
	       chunk >> 10);
	printf("| encoding | ratio | decoder | CPU s per GiB | GB/s on one core |\n");
	printf("|---|---:|---|---:|---:|\n");
	for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
		struct enc *e = &encs[rows[r].enc];
		size_t csum = 0;
		for (size_t i = 0; i < nc; i++)
			csum += e->clen[i];
		double t[5];
		for (int pass = 0; pass < 5; pass++) {
			memset(out, 0xa5, n);
			double t0 = cpu_now();
			for (size_t i = 0; i < nc; i++)
				if (decode(rows[r].o, e->c[i], e->clen[i], out + i * chunk, chunk)) {
					fprintf(stderr, "%s / %s: chunk %zu does not decode\n", e->name,
						rows[r].name, i);
					return 1;
				}
			t[pass] = cpu_now() - t0;
			if (memcmp(out, data, n)) {
				fprintf(stderr, "%s / %s: wrong bytes\n", e->name, rows[r].name);
				return 1;
			}
		}
		qsort(t, 5, sizeof t[0], cmp_double);
		printf("| %s | %.2f | %s | %.3f | %.2f |\n", e->name, (double)n / (double)csum,
		       rows[r].name, t[2] / ((double)n / (1 << 30)), (double)n / t[2] / 1e9);
	}
	return 0;
}
