/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The STORAGE_OFFLOAD_TOKEN byte layout (token.h): encode, decode with a
 * strict structure check, hex form.  Pure functions, no state, any thread.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "odxfs/token.h"

static const uint8_t token_magic[4] = { 'o', 'd', 'x', '1' };

/* Offsets inside TokenId (version 1). */
#define TOK_ID_MAGIC 0
#define TOK_ID_MOUNT 4
#define TOK_ID_KEY (TOK_ID_MOUNT + ODX_TOKEN_MOUNT_ID_SIZE)
#define TOK_ID_LENGTH (TOK_ID_KEY + ODX_TOKEN_KEY_SIZE)
_Static_assert(TOK_ID_LENGTH + 8 == ODX_TOKEN_ID_LEN_V1, "token id layout");

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static bool token_all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int odx_token_encode(uint8_t *out, uint32_t type,
		     const uint8_t mount_id[ODX_TOKEN_MOUNT_ID_SIZE],
		     const uint8_t key[ODX_TOKEN_KEY_SIZE], uint64_t length)
{
	if (type != ODX_TOKEN_TYPE_ZERO_DATA && type != ODX_TOKEN_TYPE_ODXFS)
		return -EINVAL;
	memset(out, 0, ODX_TOKEN_SIZE);
	put_be32(out, type);
	out[6] = ODX_TOKEN_ID_LEN_V1 >> 8;
	out[7] = ODX_TOKEN_ID_LEN_V1 & 0xff;
	uint8_t *id = out + ODX_TOKEN_HEADER_SIZE;
	memcpy(id + TOK_ID_MAGIC, token_magic, sizeof token_magic);
	memcpy(id + TOK_ID_MOUNT, mount_id, ODX_TOKEN_MOUNT_ID_SIZE);
	memcpy(id + TOK_ID_KEY, key, ODX_TOKEN_KEY_SIZE);
	put_be64(id + TOK_ID_LENGTH, length);
	return 0;
}

void odx_token_encode_zero(uint8_t *out)
{
	memset(out, 0, ODX_TOKEN_SIZE);
	put_be32(out, ODX_TOKEN_TYPE_ZERO_DATA);
}

int odx_token_decode(const uint8_t *in, struct odx_token_info *info)
{
	memset(info, 0, sizeof *info);
	info->type = get_be32(in);
	info->id_length = (uint16_t)(in[6] << 8 | in[7]);
	if (info->type != ODX_TOKEN_TYPE_ZERO_DATA && info->type != ODX_TOKEN_TYPE_ODXFS)
		return -EPROTO;
	if (in[4] || in[5])
		return -EPROTO;
	const uint8_t *id = in + ODX_TOKEN_HEADER_SIZE;
	if (info->id_length == 0 && info->type == ODX_TOKEN_TYPE_ZERO_DATA) {
		if (!token_all_zero(id, ODX_TOKEN_ID_MAX))
			return -EPROTO;
		info->well_known = true;
		return 0;
	}
	if (info->id_length != ODX_TOKEN_ID_LEN_V1)
		return -EPROTO;
	if (memcmp(id + TOK_ID_MAGIC, token_magic, sizeof token_magic) != 0)
		return -EPROTO;
	if (!token_all_zero(id + ODX_TOKEN_ID_LEN_V1, ODX_TOKEN_ID_MAX - ODX_TOKEN_ID_LEN_V1))
		return -EPROTO;
	memcpy(info->mount_id, id + TOK_ID_MOUNT, ODX_TOKEN_MOUNT_ID_SIZE);
	memcpy(info->key, id + TOK_ID_KEY, ODX_TOKEN_KEY_SIZE);
	info->length = get_be64(id + TOK_ID_LENGTH);
	return 0;
}

size_t odx_token_to_hex(const uint8_t *tok, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t idlen = (size_t)(tok[6] << 8 | tok[7]);
	size_t n = ODX_TOKEN_HEADER_SIZE + (idlen < ODX_TOKEN_ID_MAX ? idlen : ODX_TOKEN_ID_MAX);
	/* Never drop a non-zero byte, even of a token that breaks the rules. */
	for (size_t i = n; i < ODX_TOKEN_SIZE; i++)
		if (tok[i])
			n = i + 1;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[tok[i] >> 4];
		out[2 * i + 1] = digits[tok[i] & 0xf];
	}
	out[2 * n] = '\0';
	return 2 * n;
}

static int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int odx_token_from_hex(const char *hex, uint8_t *out)
{
	while (isspace((unsigned char)*hex))
		hex++;
	size_t len = strlen(hex);
	while (len && isspace((unsigned char)hex[len - 1]))
		len--;
	if (len == 0 || len % 2 || len / 2 > ODX_TOKEN_SIZE)
		return -EINVAL;
	uint8_t tmp[ODX_TOKEN_SIZE] = { 0 };
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hex_digit((unsigned char)hex[2 * i]);
		int lo = hex_digit((unsigned char)hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(out, tmp, ODX_TOKEN_SIZE);
	return 0;
}
