/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the token layout's parsers (src/offload/token.c).
 * Why: a token is handed from one process to another (ioctl, odxctl
 * offload-write) and is untrusted bytes until the engine has looked it up;
 * odx_token_decode is the structure check in front of that lookup, and
 * odx_token_from_hex reads the form users paste.
 *
 * Input: its first 512 bytes (zero-padded) are decoded as a token; the
 * whole input, as a string, is also parsed as hex.  A token that decodes
 * must be exactly what odx_token_encode (or _encode_zero) writes for the
 * fields decoded, and its hex form must parse back to the same 512 bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "odxfs/token.h"
#include "fuzz.h"

static void round_trip(const uint8_t *tok)
{
	struct odx_token_info info;
	uint8_t again[ODX_TOKEN_SIZE];
	char hex[ODX_TOKEN_HEX_MAX];
	if (odx_token_decode(tok, &info) != 0)
		return;
	if (info.well_known)
		odx_token_encode_zero(again);
	else
		expect(odx_token_encode(again, info.type, info.mount_id, info.key,
					info.length) == 0);
	expect(memcmp(again, tok, ODX_TOKEN_SIZE) == 0);
	size_t n = odx_token_to_hex(tok, hex);
	expect(n < sizeof hex && strlen(hex) == n);
	expect(odx_token_from_hex(hex, again) == 0);
	expect(memcmp(again, tok, ODX_TOKEN_SIZE) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t tok[ODX_TOKEN_SIZE] = {0};
	memcpy(tok, data, size < sizeof tok ? size : sizeof tok);
	round_trip(tok);

	char *text = malloc(size + 1);
	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	if (odx_token_from_hex(text, tok) == 0)
		round_trip(tok);
	free(text);
	return 0;
}
