/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* odxctl info and odxctl map: what a stream holds, from the one index;
 * for a chain member, what its chain view holds, from the merged map the
 * daemon serves (the same backend code). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "src/backend/backend.h"
#include "util/parse.h"

/* Shared command line of info and map: FILE [--json] [--salvage]
 * [--standalone].
 * Returns 0 to go on, or 1 with *status set to the exit code to return
 * now.  *flags gets the ODX_OPEN_* flags: strict, or with --salvage the
 * daemon's -o salvage policy (torn tails and damage accepted, what cannot
 * be trusted shown as bad). */
static int parse_file_json(const char *cmd, int argc, char **argv, const char **file,
			   bool *json, unsigned *flags, bool *standalone, int *status)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"salvage", no_argument, NULL, 's'},
					     {"standalone", no_argument, NULL, 'S'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	int c;
	*json = false;
	*flags = 0;
	*standalone = false;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j') {
			*json = true;
		} else if (c == 's') {
			*flags |= ODX_OPEN_ALLOW_TORN | ODX_OPEN_SALVAGE;
		} else if (c == 'S') {
			*standalone = true;
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

/* The chain view of the incremental or differential at path, as the
 * daemon shows it: 1 with *view set, 0 when path is no chain member (a
 * full or copy backup), or -1 with *why saying why its chain does not
 * resolve. */
static int open_view(const char *path, unsigned flags, struct odx_image **view,
		     struct odx_error *why)
{
	struct odx_backend_config cfg = {.stream_flags = flags};
	struct odx_image *own;
	odx_error_clear(why);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		odx_error_set(why, errno, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (odx_image_open_as(&odx_backend_stream, fd, path, &cfg, &own, why) < 0)
		return -1;
	/* As the daemon: a ".partial" (a backup being written, or torn) is
	 * never a chain member. */
	if (odx_chain_name_is_partial(path) || !odx_stream_info(own->priv)->incremental) {
		odx_image_unref(own);
		return 0;
	}
	return odx_chain_view_open(path, own, &cfg, view, why) < 0 ? -1 : 1;
}

/* The members of a view and what each supplies to it (data bytes). */
static void print_chain(struct odx_image *view)
{
	const char *dir;
	const struct odx_view_member *m;
	size_t n = odx_chain_view_members(view, &dir, &m);
	const struct odx_cmap *map = odx_chain_view_map(view);
	uint64_t *sup = calloc(n, sizeof *sup);
	char a[32], b[32];
	if (!sup)
		return;
	odx_cmap_contrib(map, sup, n);
	printf("chain:          %zu members in %s; the view: %s of data in %zu extents, size %s\n",
	       n, dir, odx_format_size(odx_cmap_data_bytes(map), a, sizeof a),
	       odx_cmap_count(map), odx_format_size(odx_cmap_size(map), b, sizeof b));
	for (size_t k = 0; k < n; k++)
		printf("  %2zu %-12s %-24s supplies %s  %s\n", k, odx_member_kind_name(m[k].kind),
		       m[k].checkpoint, odx_format_size(sup[k], a, sizeof a), m[k].name);
	free(sup);
}

static cJSON *chain_json(struct odx_image *view)
{
	const char *dir;
	const struct odx_view_member *m;
	size_t n = odx_chain_view_members(view, &dir, &m);
	const struct odx_cmap *map = odx_chain_view_map(view);
	uint64_t *sup = calloc(n ? n : 1, sizeof *sup);
	cJSON *o = cJSON_CreateObject(), *list = cJSON_CreateArray();
	char num[24];
	if (!sup)
		return o;
	odx_cmap_contrib(map, sup, n);
#define U64(obj, key, v) (snprintf(num, sizeof num, "%" PRIu64, (uint64_t)(v)), \
			  cJSON_AddItemToObject(obj, key, cJSON_CreateRaw(num)))
	cJSON_AddStringToObject(o, "directory", dir);
	U64(o, "virtualSize", odx_cmap_size(map));
	U64(o, "dataBytes", odx_cmap_data_bytes(map));
	U64(o, "extents", odx_cmap_count(map));
	for (size_t k = 0; k < n; k++) {
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "file", m[k].name);
		cJSON_AddStringToObject(e, "kind", odx_member_kind_name(m[k].kind));
		cJSON_AddStringToObject(e, "checkpoint", m[k].checkpoint);
		U64(e, "suppliesBytes", sup[k]);
		cJSON_AddItemToArray(list, e);
	}
#undef U64
	cJSON_AddItemToObject(o, "members", list);
	free(sup);
	return o;
}

static void print_info_json(const char *path, struct odx_stream *s, struct odx_image *view,
			    const char *chain_error)
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
	if (view)
		cJSON_AddItemToObject(o, "chain", chain_json(view));
	else if (chain_error)
		cJSON_AddStringToObject(o, "chainError", chain_error);
#undef U64
	char *t = cJSON_Print(o);
	puts(t);
	cJSON_free(t);
	cJSON_Delete(o);
}

int cmd_info(int argc, char **argv)
{
	const char *path;
	bool json, standalone;
	int rc;
	unsigned flags;
	if (parse_file_json("info", argc, argv, &path, &json, &flags, &standalone, &rc))
		return rc;
	struct odx_stream *s;
	if ((rc = open_stream(path, flags, &s)))
		return rc;
	struct odx_image *view = NULL;
	struct odx_error why;
	int v = standalone ? 0 : open_view(path, flags, &view, &why);
	if (json) {
		print_info_json(path, s, view, v < 0 ? why.msg : NULL);
		odx_stream_close(s);
		odx_image_unref(view);
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
	if (view)
		print_chain(view);
	else if (v < 0)
		printf("chain:          not resolved: %s\n", why.msg);
	odx_stream_close(s);
	odx_image_unref(view);
	return EXIT_OK;
}

/* The merged map of a chain view: each extent names the member that
 * supplies it. */
static void print_view_map(struct odx_image *view, bool json)
{
	const char *dir;
	const struct odx_view_member *m;
	size_t n = odx_chain_view_members(view, &dir, &m);
	const struct odx_cmap *map = odx_chain_view_map(view);
	struct odx_cmap_iter it;
	struct odx_cext e;
	bool first = true;
	if (json)
		printf("[");
	else
		printf("%-20s %-20s %-9s %-20s %s\n", "Offset", "Length", "Kind", "File offset",
		       "Member");
	odx_cmap_find(map, 0, &it);
	while (odx_cmap_next(&it, &e)) {
		const char *who = e.member < n ? m[e.member].name : NULL;
		bool hole = e.kind == ODX_EXTENT_UNMAPPED || e.kind == ODX_EXTENT_ZERO;
		bool plain = e.kind == ODX_EXTENT_DATA && e.fd;
		if (json) {
			printf("%s\n{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
			       ", \"kind\": \"%s\", \"data\": %s, \"zero\": %s, \"compressed\": %s",
			       first ? "" : ",", e.offset, e.length, odx_extent_kind_name(e.kind),
			       hole ? "false" : "true", hole ? "true" : "false",
			       e.kind == ODX_EXTENT_DATA && !plain ? "true" : "false");
			if (plain)
				printf(", \"offset\": %" PRIu64, e.src);
			if (who) {
				/* a file name may hold anything JSON must escape */
				cJSON *str = cJSON_CreateString(who);
				char *q = str ? cJSON_PrintUnformatted(str) : NULL;
				printf(", \"member\": %u, \"file\": %s", e.member, q ? q : "null");
				cJSON_free(q);
				cJSON_Delete(str);
			}
			printf(" }");
		} else {
			char fo[32];
			if (plain)
				snprintf(fo, sizeof fo, "0x%" PRIx64, e.src);
			else
				snprintf(fo, sizeof fo, "%s",
					 e.kind == ODX_EXTENT_DATA ? "(compressed)" : "-");
			printf("0x%-18" PRIx64 " 0x%-18" PRIx64 " %-9s %-20s %s\n", e.offset, e.length,
			       odx_extent_kind_name(e.kind), fo, who ? who : "-");
		}
		first = false;
	}
	if (json)
		printf("\n]\n");
}

int cmd_map(int argc, char **argv)
{
	const char *path;
	bool json, standalone;
	int rc;
	unsigned flags;
	if (parse_file_json("map", argc, argv, &path, &json, &flags, &standalone, &rc))
		return rc;
	struct odx_image *view = NULL;
	struct odx_error why;
	int v = standalone ? 0 : open_view(path, flags, &view, &why);
	if (v < 0) {
		cli_error("%s", why.msg);
		return EXIT_FAILURE_RT;
	}
	if (view) {
		print_view_map(view, json);
		odx_image_unref(view);
		return EXIT_OK;
	}
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
