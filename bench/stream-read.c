/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Benchmark helper (not installed): open and index a stream, then decode
 * the whole image sequentially in 1 MiB reads (as a reader of /dev/null
 * would), and print one JSON line with the timings and peak memory.
 *   stream-read FILE [--index-only | --shared-cache]
 * --shared-cache reads through a 64 MiB cache shared as the daemon's is,
 * so compressed chunks are decoded ahead by the cache's worker pool; the
 * default is a private cache (no prefetch, as odxctl uses it).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "odxfs/stream.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: stream-read FILE [--index-only]\n");
		return 2;
	}
	struct odx_error err;
	odx_error_clear(&err);
	struct odx_stream *s;
	double t0 = now();
	bool shared = argc > 2 && strcmp(argv[2], "--shared-cache") == 0;
	struct odx_chunk_cache *cache = shared ? odx_chunk_cache_new(64u << 20) : NULL;
	struct odx_stream_opts o = {.cache = cache};
	if (odx_stream_open(argv[1], &o, &s, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 3;
	}
	double t1 = now();
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	long rss_index_kb = ru.ru_maxrss;
	const struct odx_stream_info *in = odx_stream_info(s);
	uint64_t total = 0;
	if (argc < 3 || strcmp(argv[2], "--index-only") != 0) {
		enum { BL = 1 << 20 };
		char *buf = malloc(BL);
		for (uint64_t off = 0; off < in->virtual_size; off += BL) {
			ssize_t n = odx_stream_pread(s, buf, BL, off, &err);
			if (n < 0) {
				fprintf(stderr, "%s\n", err.msg);
				return 3;
			}
			total += (uint64_t)n;
		}
		free(buf);
	}
	double t2 = now();
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"frames\": %llu, \"extents\": %zu, \"index_s\": %.4f, \"index_rss_kib\": %ld, "
	       "\"read_s\": %.4f, \"bytes\": %llu, \"file_bytes\": %llu, \"rss_kib\": %ld, "
	       "\"cpu_s\": %.3f}\n",
	       (unsigned long long)(in->data_frames + in->zero_frames), in->extents, t1 - t0,
	       rss_index_kb, t2 - t1, (unsigned long long)total,
	       (unsigned long long)in->file_size, ru.ru_maxrss,
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	odx_stream_close(s);
	odx_chunk_cache_free(cache);
	return 0;
}
