/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The frame header: `<kind> <16 hex start> <16 hex length>\r\n`, 40 bytes.
 * The one parser every reader (index, check, repair) goes through.
 * Lower-case hex is what the writer produces; upper case is accepted.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "stream-internal.h"

static const char *const kind_words[] = {"meta", "data", "zero", "stop", "comp"};

const char *frame_kind_name(enum frame_kind k)
{
	return (unsigned)k < 5 ? kind_words[k] : "?";
}

/* Show up to n bytes printably for messages. */
static void show(char *out, size_t outlen, const char *p, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
}

/* Hex digit values plus one, 0 for anything else: a table, not a chain
 * of range tests, because the digits of offsets are as good as random and
 * those branches mispredicted on most of them (header parsing was a tenth
 * of indexing a chain of small frames). */
static const unsigned char hexval1[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
	['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* 16 hex digits at p: 0, or -(1 + the index of the first bad one). */
static int parse_hex16(const char *p, uint64_t *out)
{
	uint64_t v = 0;
	unsigned bad = 0;
	for (int i = 0; i < 16; i++) {
		unsigned d = hexval1[(unsigned char)p[i]];
		bad |= d == 0;
		v = v << 4 | ((d - 1) & 0xf);
	}
	for (int i = 0; bad && i < 16; i++)
		if (hexval1[(unsigned char)p[i]] == 0)
			return -(i + 1);
	*out = v;
	return 0;
}

int frame_parse(const char *buf, struct frame_hdr *h, char *why, size_t whylen)
{
	char shown[200];
	int k;
	for (k = 0; k < 5; k++)
		if (memcmp(buf, kind_words[k], 4) == 0)
			break;
	if (k == 5) {
		show(shown, sizeof shown, buf, 4);
		snprintf(why, whylen,
			 "expected a frame kind (meta, data, zero, stop, comp), found \"%s\"",
			 shown);
		return -EUCLEAN;
	}
	h->kind = (enum frame_kind)k;
	if (buf[4] != ' ' || buf[21] != ' ') {
		show(shown, sizeof shown, buf, ODX_FRAME_HEADER_LEN);
		snprintf(why, whylen, "malformed %s header: expected spaces at bytes 4 and 21, found \"%s\"",
			 kind_words[k], shown);
		return -EUCLEAN;
	}
	int bad = parse_hex16(buf + 5, &h->start);
	int at = 5;
	if (!bad) {
		bad = parse_hex16(buf + 22, &h->length);
		at = 22;
	}
	if (bad) {
		int i = at + (-bad) - 1;
		show(shown, sizeof shown, buf + i, 1);
		snprintf(why, whylen,
			 "malformed %s header: expected 16 hex digits for the %s, found \"%s\" at byte %d of the header",
			 kind_words[k], at == 5 ? "start" : "length", shown, i);
		return -EUCLEAN;
	}
	if (buf[38] != '\r' || buf[39] != '\n') {
		show(shown, sizeof shown, buf + 38, 2);
		snprintf(why, whylen, "malformed %s header: expected CRLF at its end, found \"%s\"",
			 kind_words[k], shown);
		return -EUCLEAN;
	}
	return 0;
}

void frame_format(char *buf, enum frame_kind kind, uint64_t start, uint64_t length)
{
	char tmp[ODX_FRAME_HEADER_LEN + 1];
	snprintf(tmp, sizeof tmp, "%s %016llx %016llx\r\n", frame_kind_name(kind),
		 (unsigned long long)start, (unsigned long long)length);
	memcpy(buf, tmp, ODX_FRAME_HEADER_LEN);
}
