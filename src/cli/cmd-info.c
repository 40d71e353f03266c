/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* odxctl info and odxctl map: what a stream holds, from the one index. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "util/parse.h"

/* Shared command line of info and map: FILE [--json] [--salvage].
 * Returns 0 to go on, or 1 with *status set to the exit code to return
 * now.  *flags gets the ODX_OPEN_* flags: strict, or with --salvage the
 * daemon's -o salvage policy (torn tails and damage accepted, what cannot
 * be trusted shown as bad). */
static int parse_file_json(const char *cmd, int argc, char **argv, const char **file,
			   bool *json, unsigned *flags, int *status)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"salvage", no_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	int c;
	*json = false;
	*flags = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j') {
			*json = true;
		} else if (c == 's') {
			*flags |= ODX_OPEN_ALLOW_TORN | ODX_OPEN_SALVAGE;
		} else if (c == 'h') {
			cli_print_usage(cmd);
			*status = EXIT_OK;
			return 1;
		} else {
			*status = EXIT_USAGE;
			return 1;
		}
	}
	if (optind + 1 != argc) {
		*status = cli_usage(cmd, "expected exactly one FILE");
		return 1;
	}
	*file = argv[optind];
	return 0;
}

static int open_stream(const char *path, unsigned flags, struct odx_stream **s)
{
	struct odx_error err;
	struct odx_stream_opts o = {.flags = flags | ODX_OPEN_META_TEXT};
	odx_error_clear(&err);
	if (odx_stream_open(path, &o, s, &err)) {
		cli_error("%s", err.msg);
		return EXIT_FAILURE_RT;
	}
	return 0;
}

static void print_info_json(const char *path, struct odx_stream *s)
{
	const struct odx_stream_info *in = odx_stream_info(s);
	cJSON *o = cJSON_CreateObject();
	char num[24];
#define U64(key, v) (snprintf(num, sizeof num, "%" PRIu64, (uint64_t)(v)), \
		     cJSON_AddItemToObject(o, key, cJSON_CreateRaw(num)))
	cJSON_AddStringToObject(o, "file", path);
	U64("virtualSize", in->virtual_size);
	U64("dataSize", in->data_bytes);
	U64("metaDataSize", in->meta_data_size);
	U64("fileSize", in->file_size);
	U64("dataFrames", in->data_frames);
	U64("zeroFrames", in->zero_frames);
	U64("zeroBytes", in->zero_bytes);
	U64("payloadBytes", in->payload_bytes);
	U64("mappedBytes", in->mapped_bytes);
	U64("extents", in->extents);
	U64("chunks", in->chunks);
	cJSON_AddStringToObject(o, "compression", odx_codec_name(in->codec));
	cJSON_AddNumberToObject(o, "level", in->level);
	cJSON_AddNumberToObject(o, "streamVersion", in->stream_version);
	cJSON_AddBoolToObject(o, "incremental", in->incremental);
	cJSON_AddNumberToObject(o, "allocationRatio",
				in->virtual_size ? (double)in->mapped_bytes / (double)in->virtual_size : 0);
	cJSON_AddNumberToObject(o, "compressionRatio",
				in->payload_bytes ? (double)in->data_bytes / (double)in->payload_bytes : 0);
	cJSON_AddBoolToObject(o, "complete", in->complete);
	cJSON *meta = cJSON_Parse(odx_stream_meta_text(s));
	if (meta)
		cJSON_AddItemToObject(o, "meta", meta);
#undef U64
	char *t = cJSON_Print(o);
	puts(t);
	cJSON_free(t);
	cJSON_Delete(o);
}

int cmd_info(int argc, char **argv)
{
	const char *path;
	bool json;
	int rc;
	unsigned flags;
	if (parse_file_json("info", argc, argv, &path, &json, &flags, &rc))
		return rc;
	struct odx_stream *s;
	if ((rc = open_stream(path, flags, &s)))
		return rc;
	if (json) {
		print_info_json(path, s);
		odx_stream_close(s);
		return EXIT_OK;
	}
	const struct odx_stream_info *in = odx_stream_info(s);
	char a[32], b[32], c[32];
	printf("file:           %s\n", path);
	printf("format:         sparse stream v%d, %s", in->stream_version,
	       in->codec == ODX_CODEC_NONE ? "uncompressed" : odx_codec_name(in->codec));
	if (in->codec != ODX_CODEC_NONE)
		printf(" (level %d, %" PRIu64 " chunks)", in->level, in->chunks);
	printf("\n%-16s%s\n", "backup:", in->incremental ? "incremental (ranges no frame covers fall through to the parent)" : "full");
	printf("virtual size:   %" PRIu64 " (%s)\n", in->virtual_size,
	       odx_format_size(in->virtual_size, a, sizeof a));
	printf("data size:      %" PRIu64 " (%s) in %" PRIu64 " data frames\n", in->data_bytes,
	       odx_format_size(in->data_bytes, b, sizeof b), in->data_frames);
	printf("zero frames:    %" PRIu64 " (%s)\n", in->zero_frames,
	       odx_format_size(in->zero_bytes, c, sizeof c));
	printf("file size:      %" PRIu64 " (payload %" PRIu64 ")\n", in->file_size,
	       in->payload_bytes);
	printf("allocation:     %.2f%% of the virtual size is data\n",
	       in->virtual_size ? 100.0 * (double)in->mapped_bytes / (double)in->virtual_size : 0.0);
	if (in->codec != ODX_CODEC_NONE && in->payload_bytes)
		printf("compression:    %.2fx\n", (double)in->data_bytes / (double)in->payload_bytes);
	printf("extents:        %zu\n", in->extents);
	if (in->torn || in->warnings || in->bad_bytes)
		printf("damage:         %s%s (%" PRIu64 " bytes unreadable)\n", in->torn ? "torn; " : "",
		       in->problem, in->bad_bytes);
	printf("meta:           %s\n", odx_stream_meta_text(s));
	odx_stream_close(s);
	return EXIT_OK;
}

int cmd_map(int argc, char **argv)
{
	const char *path;
	bool json;
	int rc;
	unsigned flags;
	if (parse_file_json("map", argc, argv, &path, &json, &flags, &rc))
		return rc;
	struct odx_stream *s;
	if ((rc = open_stream(path, flags, &s)))
		return rc;
	const struct odx_extmap *m = odx_stream_map(s);
	if (json)
		printf("[");
	else
		printf("%-20s %-20s %-9s %s\n", "Offset", "Length", "Kind", "File offset");
	for (size_t i = 0; i < m->count; i++) {
		const struct odx_extent *e = &m->ext[i];
		bool plain = e->kind == ODX_EXTENT_DATA && e->frame == ODX_NO_FRAME;
		if (json) {
			/* Keys in the spirit of qemu-img map --output=json. */
			printf("%s\n{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
			       ", \"kind\": \"%s\", \"data\": %s, \"zero\": %s, \"compressed\": %s",
			       i ? "," : "", e->offset, e->length, odx_extent_kind_name(e->kind),
			       odx_extent_is_hole(e) ? "false" : "true",
			       odx_extent_is_hole(e) ? "true" : "false",
			       e->kind == ODX_EXTENT_DATA && !plain ? "true" : "false");
			if (plain)
				printf(", \"offset\": %" PRIu64, e->src);
			printf(" }");
		} else if (plain) {
			printf("0x%-18" PRIx64 " 0x%-18" PRIx64 " %-9s 0x%" PRIx64 "\n", e->offset,
			       e->length, "data", e->src);
		} else {
			printf("0x%-18" PRIx64 " 0x%-18" PRIx64 " %-9s %s\n", e->offset, e->length,
			       odx_extent_kind_name(e->kind),
			       e->kind == ODX_EXTENT_DATA ? "(compressed)" : "-");
		}
	}
	if (json)
		printf("\n]\n");
	odx_stream_close(s);
	return EXIT_OK;
}
