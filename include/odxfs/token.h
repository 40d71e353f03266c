/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 512-byte offload token, laid out as Windows' STORAGE_OFFLOAD_TOKEN
 * ([MS-FSCC] 2.1.11), and its encoding.  Pure byte layout: no engine state,
 * no I/O, usable by the daemon and by odxctl alike.
 *
 *   offset  size  field
 *        0     4  TokenType, big-endian
 *        4     2  Reserved, zero
 *        6     2  TokenIdLength, big-endian
 *        8   504  TokenId
 *
 * TokenType is ODX_TOKEN_TYPE_ZERO_DATA (0xFFFF0001) when the range the
 * token stands for is all zeros or unmapped, ODX_TOKEN_TYPE_ODXFS for any
 * other odxfs token.  0xFFFF0002..0xFFFFFFFF are reserved by Microsoft and
 * always refused.
 *
 * odxfs TokenId, version 1 (TokenIdLength = ODX_TOKEN_ID_LEN_V1 = 60):
 *
 *   offset  size  field (offsets inside TokenId)
 *        0     4  "odx1": format and version
 *        4    16  mount id: random per mount, says which mount issued it
 *       20    32  token id: 256 random bits from getrandom(2); the key the
 *                 issuing engine looks the token up by.  Unguessable, so a
 *                 token cannot be forged; no MAC is needed because the
 *                 engine keeps everything the token stands for in memory.
 *       52     8  transfer length, big-endian: what the engine recorded
 *                 (odxctl prints it).  It cannot be edited either: the
 *                 engine accepts a token only when all 512 bytes equal
 *                 the encoding of its record (offload.h), so a changed
 *                 length (or type) is refused as unknown.
 *   60..503       zero (outside TokenIdLength)
 *
 * Every byte after TokenIdLength must be zero, so a token that was cut or
 * padded is refused as malformed rather than looked up.
 *
 * A ZERO_DATA token with TokenIdLength 0 is the "well-known" zero token: it
 * needs no offload read and stands for zeros of any length (Windows allows
 * the same).  The engine accepts it for offload write, whatever the transfer
 * offset, and releasing it does nothing.
 */
#ifndef ODXFS_TOKEN_H
#define ODXFS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ODX_TOKEN_SIZE 512
#define ODX_TOKEN_HEADER_SIZE 8
#define ODX_TOKEN_ID_MAX 504

#define ODX_TOKEN_TYPE_ZERO_DATA 0xFFFF0001u
#define ODX_TOKEN_TYPE_RESERVED_MIN 0xFFFF0002u /* ..0xFFFFFFFF reserved */
#define ODX_TOKEN_TYPE_ODXFS 0x4F445846u        /* "ODXF" */

#define ODX_TOKEN_ID_LEN_V1 60
#define ODX_TOKEN_MOUNT_ID_SIZE 16
#define ODX_TOKEN_KEY_SIZE 32

/* Longest hex form: header and the whole TokenId, plus the NUL. */
#define ODX_TOKEN_HEX_MAX (2 * ODX_TOKEN_SIZE + 1)

/* A token decoded into its fields. */
struct odx_token_info {
	uint32_t type;       /* ODX_TOKEN_TYPE_* */
	uint16_t id_length;  /* TokenIdLength */
	bool well_known;     /* ZERO_DATA with TokenIdLength 0: no fields below */
	uint8_t mount_id[ODX_TOKEN_MOUNT_ID_SIZE];
	uint8_t key[ODX_TOKEN_KEY_SIZE];
	uint64_t length;     /* transfer length, as issued */
};

/* Write an odxfs version 1 token into out[ODX_TOKEN_SIZE].  `type` must be
 * ODX_TOKEN_TYPE_ZERO_DATA or ODX_TOKEN_TYPE_ODXFS.  Returns 0 or -EINVAL. */
int odx_token_encode(uint8_t *out, uint32_t type,
		     const uint8_t mount_id[ODX_TOKEN_MOUNT_ID_SIZE],
		     const uint8_t key[ODX_TOKEN_KEY_SIZE], uint64_t length);

/* Write the well-known zero token (ZERO_DATA, TokenIdLength 0). */
void odx_token_encode_zero(uint8_t *out);

/* Check the structure of in[ODX_TOKEN_SIZE] and fill *info.  Returns 0, or
 * -EPROTO (malformed: reserved or unknown type, non-zero reserved bytes,
 * wrong TokenIdLength, bad magic, non-zero padding).  Says nothing about
 * whether any engine knows the token. */
int odx_token_decode(const uint8_t *in, struct odx_token_info *info);

/* Hex form for printing and passing between programs: the header and the
 * TokenIdLength bytes of TokenId, lower case, no separators (the zero
 * padding is implied).  `out` holds at least ODX_TOKEN_HEX_MAX bytes.
 * Returns the number of characters written (without the NUL). */
size_t odx_token_to_hex(const uint8_t *tok, char *out);

/* Parse a hex token (the form above, or all 1024 digits; surrounding
 * whitespace allowed) into out[ODX_TOKEN_SIZE], zero-padding the rest.
 * Returns 0, or -EINVAL for non-hex characters, an odd digit count or more
 * than ODX_TOKEN_SIZE bytes.  Does not check the structure: call
 * odx_token_decode for that. */
int odx_token_from_hex(const char *hex, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
