/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The meta frame's JSON.  Both key spellings are read (virtualSize and the
 * early virtual-size, ...); unknown keys are kept in the cJSON tree and
 * written back by meta_print.  cJSON keeps numbers as doubles, exact only
 * below 2^53, so sizes at or above that are re-read from the text itself.
 * Sizes are printed by us (cJSON "raw" items) so they never come out in
 * exponent notation.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "stream-internal.h"

static cJSON *get_either(cJSON *o, const char *a, const char *b, const char **used)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);
	*used = a;
	if (!it && b) {
		it = cJSON_GetObjectItemCaseSensitive(o, b);
		*used = b;
	}
	return it;
}

static bool json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Offset in text of the value of the first member `key` of the top-level
 * object (a key of a nested object must not count), or len when there is
 * none.  A string at depth 1 followed by ':' is a member name. */
static size_t top_member_value(const char *text, size_t len, const char *key)
{
	size_t kl = strlen(key);
	int depth = 0;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			depth--;
		} else if (c == '"') {
			size_t start = i + 1, j = start;
			while (j < len && text[j] != '"')
				j += text[j] == '\\' ? 2 : 1;
			if (j >= len)
				return len;
			size_t k = j + 1;
			while (k < len && json_space(text[k]))
				k++;
			if (depth == 1 && k < len && text[k] == ':' && j - start == kl &&
			    memcmp(text + start, key, kl) == 0) {
				for (k++; k < len && json_space(text[k]); k++)
					;
				return k;
			}
			i = j;
		}
	}
	return len;
}

/* Exact unsigned value of a number item; text is the JSON it came from. */
static int number_u64(const cJSON *it, const char *text, size_t len, const char *key,
		      uint64_t *out)
{
	if (!cJSON_IsNumber(it) || it->valuedouble < 0)
		return -EINVAL;
	double d = it->valuedouble;
	if (d < 9007199254740992.0) { /* 2^53: the double is exact */
		if (d != (double)(uint64_t)d)
			return -EINVAL;
		*out = (uint64_t)d;
		return 0;
	}
	/* Read the digits of the top-level member in the text itself. */
	size_t j = top_member_value(text, len, key);
	uint64_t v = 0;
	size_t k = j;
	for (; k < len && text[k] >= '0' && text[k] <= '9'; k++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(text[k] - '0'), &v))
			return -EOVERFLOW;
	}
	if (k == j || (k < len && (text[k] == '.' || text[k] == 'e' || text[k] == 'E')))
		return d >= 18446744073709551616.0 ? -EOVERFLOW : -EINVAL;
	*out = v;
	return 0;
}

/* A copy of a string member, when it is one of a sane length. */
static char *dup_string(cJSON *o, const char *key)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsString(it) || strlen(it->valuestring) > 1024)
		return NULL;
	return strdup(it->valuestring);
}

/* What cJSON lets through but JSON (RFC 8259, and Python's json module,
 * which wrote the meta) does not: a control character inside a string or
 * as white space (NUL, form feed, ...), and bytes that are not UTF-8.  Returns the offset of the first such
 * byte, or len. */
static size_t json_text_invalid_at(const char *text, size_t len, const char **why)
{
	*why = "not UTF-8";
	const unsigned char *p = (const unsigned char *)text;
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		unsigned c = p[i];
		if (c < 0x80) {
			/* cJSON skips any byte up to 0x20 as white space */
			*why = "a control character";
			if (c < 0x20 && (in_string || (c != '\t' && c != '\r' && c != '\n')))
				return i;
			*why = "a number with a leading zero";
			if (c == '"')
				in_string = !in_string;
			else if (c == '\\' && in_string)
				i++; /* the escaped character (ASCII in valid JSON) */
			/* a number with a leading zero (cJSON reads 0719 as 719) */
			else if (!in_string && c == '0' && i + 1 < len && p[i + 1] >= '0' &&
				 p[i + 1] <= '9' &&
				 (i == 0 || !((p[i - 1] >= '0' && p[i - 1] <= '9') || p[i - 1] == '.' ||
					      p[i - 1] == 'e' || p[i - 1] == 'E' || p[i - 1] == '+' ||
					      p[i - 1] == '-')))
				return i;
			continue;
		}
		*why = "not UTF-8";
		/* a multi-byte UTF-8 sequence: lead byte, continuation bytes,
		 * no overlong forms, no surrogates, nothing above U+10FFFF */
		size_t n = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 ? 1 : 0;
		if (n == 0 || c > 0xf4 || i + n >= len)
			return i;
		unsigned c1 = p[i + 1];
		if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) ||
		    (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
			return i;
		for (size_t k = 1; k <= n; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return i;
		i += n;
	}
	return len;
}

int meta_parse(const char *text, size_t len, const char *name, uint64_t where,
	       bool keep_json, struct meta *out, struct odx_error *err)
{
	memset(out, 0, sizeof *out);
	const char *why;
	size_t bad = json_text_invalid_at(text, len, &why);
	if (bad < len)
		return odx_error_at(err, EUCLEAN, name, where + bad,
				    "invalid meta JSON: byte %zu of %zu is %s", bad, len, why);
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!j) {
		size_t at = end && end >= text ? (size_t)(end - text) : 0;
		return odx_error_at(err, EUCLEAN, name, where + at,
				    "invalid meta JSON: syntax error at byte %zu of %zu", at, len);
	}
	/* The frame length must end the JSON: cJSON stops after the object,
	 * so a length that is too long would hide the bytes after it (a
	 * first frame swallowed, and wrong bytes served). */
	for (const char *p = end; p < text + len; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			cJSON_Delete(j);
			return odx_error_at(err, EUCLEAN, name, where + (uint64_t)(p - text),
					    "meta JSON: unexpected bytes after the object (byte %zu of %zu)",
					    (size_t)(p - text), len);
		}
	}
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return odx_error_at(err, EUCLEAN, name, where,
				    "invalid meta JSON: expected an object");
	}
	out->json = j;
	const char *key;
	cJSON *it = get_either(j, "virtualSize", "virtual-size", &key);
	int rc;
	if (!it) {
		rc = odx_error_at(err, EUCLEAN, name, where,
				  "meta JSON has no virtualSize (or virtual-size)");
		goto fail;
	}
	rc = number_u64(it, text, len, key, &out->virtual_size);
	if (rc == -EOVERFLOW || (rc == 0 && out->virtual_size >= (UINT64_C(1) << 63))) {
		rc = odx_error_at(err, EOVERFLOW, name, where,
				  "meta %s is too large: a disk must be smaller than 2^63 bytes",
				  key);
		goto fail;
	}
	if (rc) {
		rc = odx_error_at(err, EUCLEAN, name, where,
				  "meta %s: expected a non-negative integer", key);
		goto fail;
	}
	/* dataSize only describes the frames: a bad one is damage the walk
	 * reports (and salvage walks past), not a reason to read nothing. */
	it = get_either(j, "dataSize", "data-size", &key);
	if (it) {
		out->has_data_size = true;
		out->bad_data_size = number_u64(it, text, len, key, &out->data_size) != 0;
	}
	out->version = 1;
	it = get_either(j, "streamVersion", "stream-version", &key);
	if (it) {
		if (!cJSON_IsNumber(it) || (it->valuedouble != 1 && it->valuedouble != 2)) {
			rc = odx_error_at(err, ENOTSUP, name, where,
					  "meta %s: only stream versions 1 and 2 are known", key);
			goto fail;
		}
		out->version = (int)it->valuedouble;
	}
	it = cJSON_GetObjectItemCaseSensitive(j, "incremental");
	out->incremental = cJSON_IsTrue(it);
	/* As the backup tool decides: compressed when the stream version is 2
	 * and "compressed" is anything but false (a level, even 0). */
	it = cJSON_GetObjectItemCaseSensitive(j, "compressed");
	bool compressed = it && !cJSON_IsFalse(it) && !cJSON_IsNull(it);
	if (out->version >= 2 && compressed) {
		/* informational only: a level no codec has is 0 (and the
		 * conversion of a huge one would be undefined) */
		out->level = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble <= 100
				     ? (int)it->valuedouble
				     : 0;
		cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "compressionMethod");
		const char *method = cJSON_IsString(m) ? m->valuestring : "lz4";
		if (strcmp(method, "lz4") == 0) {
			out->codec = ODX_CODEC_LZ4;
		} else if (strcmp(method, "zlib") == 0) {
			out->codec = ODX_CODEC_ZLIB;
		} else {
			rc = odx_error_at(err, ENOTSUP, name, where,
					  "meta compressionMethod \"%s\" is not supported (lz4, zlib)",
					  method);
			goto fail;
		}
	}
	out->disk_name = dup_string(j, "diskName");
	out->checkpoint = dup_string(j, "checkpointName");
	out->parent = dup_string(j, "parentCheckpoint");
	if (!keep_json) {
		/* Readers keep the fields above, not the tree (a hostile meta
		 * of 64 KiB can be a tree of megabytes). */
		cJSON_Delete(j);
		out->json = NULL;
	}
	return 0;
fail:
	meta_free(out);
	return rc;
}

void meta_free(struct meta *m)
{
	cJSON_Delete(m->json);
	m->json = NULL;
	free(m->disk_name);
	free(m->checkpoint);
	free(m->parent);
	m->disk_name = m->checkpoint = m->parent = NULL;
}

/* Set key to it (replacing an item of that name); NULL it: out of memory. */
static int set_item(cJSON *o, const char *key, cJSON *it)
{
	if (!it)
		return -ENOMEM;
	if (cJSON_GetObjectItemCaseSensitive(o, key))
		return cJSON_ReplaceItemInObjectCaseSensitive(o, key, it) ? 0 : -ENOMEM;
	return cJSON_AddItemToObject(o, key, it) ? 0 : -ENOMEM;
}

static int set_raw_u64(cJSON *o, const char *key, const char *alt, uint64_t v)
{
	char num[24];
	snprintf(num, sizeof num, "%" PRIu64, v);
	if (alt && !cJSON_GetObjectItemCaseSensitive(o, key) &&
	    cJSON_GetObjectItemCaseSensitive(o, alt))
		key = alt;
	return set_item(o, key, cJSON_CreateRaw(num));
}

char *meta_print(const struct meta *m, uint64_t data_size, size_t pad_to)
{
	cJSON *o = cJSON_Duplicate(m->json, 1);
	char *txt = NULL;
	if (!o)
		return NULL;
	if (set_raw_u64(o, "virtualSize", "virtual-size", m->virtual_size) ||
	    set_raw_u64(o, "dataSize", "data-size", data_size))
		goto out;
	/* cJSON prints a number it cannot print (infinite) as null, which
	 * would make a compressed stream uncompressed: print the level read */
	cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "compressed");
	if (cJSON_IsNumber(c) && !isfinite(c->valuedouble)) {
		char lv[16];
		snprintf(lv, sizeof lv, "%d", m->level);
		cJSON *raw = cJSON_CreateRaw(lv);
		if (!raw || !cJSON_ReplaceItemInObjectCaseSensitive(o, "compressed", raw))
			goto out;
	}
	txt = cJSON_Print(o);
	if (txt && strlen(txt) < pad_to) {
		/* Pad with spaces before the closing brace (still valid JSON):
		 * lets a writer reserve the meta frame before dataSize is known. */
		size_t n = strlen(txt);
		char *p = malloc(pad_to + 1);
		if (!p) {
			free(txt);
			txt = NULL;
			goto out;
		}
		char *brace = strrchr(txt, '}');
		size_t head = (size_t)(brace - txt);
		memcpy(p, txt, head);
		memset(p + head, ' ', pad_to - n);
		memcpy(p + head + (pad_to - n), brace, n - head);
		p[pad_to] = '\0';
		free(txt);
		txt = p;
	}
out:
	cJSON_Delete(o);
	return txt;
}

int meta_new(struct meta *m, uint64_t virtual_size, const struct odx_write_opts *o)
{
	memset(m, 0, sizeof *m);
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return -ENOMEM;
	char date[64];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(date + n, sizeof date - n, ".%06ld", (long)tv.tv_usec);
	m->json = j;
	m->virtual_size = virtual_size;
	m->version = 2;
	m->codec = o->codec;
	m->level = o->level;
	m->incremental = o->incremental;
	if (set_raw_u64(j, "virtualSize", NULL, virtual_size) ||
	    set_raw_u64(j, "dataSize", NULL, 0) ||
	    !cJSON_AddStringToObject(j, "date", date) ||
	    !cJSON_AddStringToObject(j, "diskName", o->disk_name ? o->disk_name : "sda") ||
	    !cJSON_AddStringToObject(j, "diskFormat", "raw") ||
	    !cJSON_AddStringToObject(j, "checkpointName",
				     o->checkpoint ? o->checkpoint : "odxfs") ||
	    !(o->codec == ODX_CODEC_NONE ? cJSON_AddFalseToObject(j, "compressed")
					 : cJSON_AddNumberToObject(j, "compressed", o->level)) ||
	    !cJSON_AddStringToObject(j, "compressionMethod",
				     o->codec == ODX_CODEC_ZLIB ? "zlib" : "lz4") ||
	    !(o->parent ? cJSON_AddStringToObject(j, "parentCheckpoint", o->parent)
			: cJSON_AddFalseToObject(j, "parentCheckpoint")) ||
	    !cJSON_AddBoolToObject(j, "incremental", o->incremental) ||
	    !cJSON_AddNumberToObject(j, "streamVersion", 2)) {
		meta_free(m);
		return -ENOMEM;
	}
	return 0;
}

static int set_string(cJSON *o, const char *key, const char *v)
{
	return v ? set_item(o, key, cJSON_CreateString(v)) : 0;
}


int meta_set(struct meta *m, enum odx_codec codec, int level, bool incremental,
	     const char *disk_name, const char *disk_format, const char *checkpoint,
	     const char *parent, const char *date)
{
	cJSON *o = m->json;
	char lv[16];
	snprintf(lv, sizeof lv, "%d", level);
	/* as virtnbdbackup writes them: "compressed" false or the level,
	 * "compressionMethod" "lz4" even when not compressed */
	int rc = set_item(o, "compressed", codec == ODX_CODEC_NONE ? cJSON_CreateFalse()
								  : cJSON_CreateRaw(lv));
	if (!rc)
		rc = set_string(o, "compressionMethod", codec == ODX_CODEC_ZLIB ? "zlib" : "lz4");
	if (!rc)
		rc = set_item(o, "incremental", cJSON_CreateBool(incremental));
	if (!rc)
		rc = set_item(o, "streamVersion", cJSON_CreateNumber(2));
	if (!rc)
		rc = set_string(o, "diskName", disk_name);
	if (!rc)
		rc = set_string(o, "diskFormat", disk_format);
	if (!rc)
		rc = set_string(o, "checkpointName", checkpoint);
	if (!rc)
		rc = set_string(o, "parentCheckpoint", parent);
	if (!rc)
		rc = set_string(o, "date", date);
	/* the spelling with hyphens of old streams would say it twice */
	cJSON_DeleteItemFromObjectCaseSensitive(o, "stream-version");
	m->codec = codec;
	m->level = codec == ODX_CODEC_NONE ? 0 : level;
	m->incremental = incremental;
	m->version = 2;
	return rc;
}
