/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: meta_parse, the meta frame's JSON (src/stream/meta.c).
 * Why: it is the first thing read from any file in a backing directory
 * (probing decides by content), it re-reads large integers from the text
 * itself where cJSON's doubles are inexact, and repair writes what it
 * parsed back to disk.  Fed the JSON text directly, without a frame around
 * it, so every mutation lands in the parser.
 *
 * When the text parses: the sizes read must be the values of the keys the
 * object has (odxfs-stream(5): integers are read exactly; cJSON's double is
 * their correct rounding), and meta_print must give JSON that parses again
 * to the same sizes, version, codec and incremental flag (repair relies on
 * it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream-internal.h"
#include "fuzz.h"

/* The size a key holds, as cJSON read it (either spelling). */
static void expect_size(const cJSON *o, const char *a, const char *b, uint64_t v)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);
	if (!it)
		it = cJSON_GetObjectItemCaseSensitive(o, b);
	if (it)
		expect((double)v == it->valuedouble);
}

static void expect_same(const struct meta *a, const struct meta *b)
{
	expect(a->virtual_size == b->virtual_size && a->data_size == b->data_size);
	expect(a->has_data_size == b->has_data_size && a->version == b->version);
	expect(a->codec == b->codec && a->incremental == b->incremental);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct meta m, lean, again;
	struct odx_error err = {0}, err2 = {0};
	/* Readers parse without keeping the tree, writers and repair with it:
	 * both must come to the same answer. */
	int rc = meta_parse((const char *)data, size, "fuzz", 40, true, &m, &err);
	int rc2 = meta_parse((const char *)data, size, "fuzz", 40, false, &lean, &err2);
	expect(rc == rc2);
	if (rc != 0) {
		expect(err.code > 0 && m.json == NULL);
		return 0;
	}
	expect_same(&m, &lean);
	meta_free(&lean);
	expect(m.virtual_size < (UINT64_C(1) << 63));
	expect_size(m.json, "virtualSize", "virtual-size", m.virtual_size);
	/* a dataSize that is not an integer below 2^64 is reported by the
	 * walk as damage (bad_data_size), not by meta_parse */
	if (m.has_data_size && !m.bad_data_size)
		expect_size(m.json, "dataSize", "data-size", m.data_size);
	char *text = meta_print(&m, m.data_size, 0);
	if (text) {
		memset(&err, 0, sizeof err);
		rc = meta_parse(text, strlen(text), "fuzz-print", 40, false, &again, &err);
		if (rc != 0)
			fprintf(stderr, "fuzz-meta: printed meta does not parse: %s\n", err.msg);
		expect(rc == 0);
		/* meta_print always writes dataSize. */
		expect(again.has_data_size);
		again.has_data_size = m.has_data_size;
		expect_same(&m, &again);
		meta_free(&again);
		free(text);
	}
	meta_free(&m);
	return 0;
}
