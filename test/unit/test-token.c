/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the token layout (token.h): tokens are built byte by byte
 * here, not only with odx_token_encode, so the encoder is not checked
 * against itself.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "odxfs/ioctl.h"
#include "odxfs/offload.h"
#include "odxfs/token.h"

static const uint8_t mount_id[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

static void key_fill(uint8_t key[32])
{
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0xA0 + i);
}

/* A version 1 odxfs token of length 0x0102030405060708, by hand. */
static void golden(uint8_t *t)
{
	memset(t, 0, ODX_TOKEN_SIZE);
	t[0] = 0x4F; t[1] = 0x44; t[2] = 0x58; t[3] = 0x46; /* "ODXF" */
	t[6] = 0; t[7] = 60;
	memcpy(t + 8, "odx1", 4);
	memcpy(t + 12, mount_id, 16);
	key_fill(t + 28);
	for (int i = 0; i < 8; i++)
		t[60 + i] = (uint8_t)(i + 1);
}

START_TEST(test_encode_golden)
{
	uint8_t key[32], a[ODX_TOKEN_SIZE], b[ODX_TOKEN_SIZE];
	key_fill(key);
	ck_assert_int_eq(odx_token_encode(a, ODX_TOKEN_TYPE_ODXFS, mount_id, key,
					  0x0102030405060708ull), 0);
	golden(b);
	ck_assert(memcmp(a, b, ODX_TOKEN_SIZE) == 0);
	ck_assert_int_eq(odx_token_encode(a, ODX_TOKEN_TYPE_RESERVED_MIN, mount_id, key, 0),
			 -EINVAL);
}
END_TEST

START_TEST(test_decode_golden)
{
	uint8_t t[ODX_TOKEN_SIZE];
	struct odx_token_info info;
	golden(t);
	ck_assert_int_eq(odx_token_decode(t, &info), 0);
	ck_assert_uint_eq(info.type, ODX_TOKEN_TYPE_ODXFS);
	ck_assert_uint_eq(info.id_length, 60);
	ck_assert(!info.well_known);
	ck_assert(memcmp(info.mount_id, mount_id, 16) == 0);
	ck_assert_uint_eq(info.key[0], 0xA0);
	ck_assert_uint_eq(info.key[31], 0xBF);
	ck_assert_uint_eq(info.length, 0x0102030405060708ull);
	/* The ZERO_DATA type with a full id is also a well-formed token. */
	t[0] = 0xFF; t[1] = 0xFF; t[2] = 0x00; t[3] = 0x01;
	ck_assert_int_eq(odx_token_decode(t, &info), 0);
	ck_assert_uint_eq(info.type, ODX_TOKEN_TYPE_ZERO_DATA);
}
END_TEST

START_TEST(test_well_known_zero)
{
	uint8_t t[ODX_TOKEN_SIZE] = { 0xFF, 0xFF, 0x00, 0x01 };
	uint8_t e[ODX_TOKEN_SIZE];
	struct odx_token_info info;
	odx_token_encode_zero(e);
	ck_assert(memcmp(t, e, ODX_TOKEN_SIZE) == 0);
	ck_assert_int_eq(odx_token_decode(t, &info), 0);
	ck_assert(info.well_known);
	ck_assert_uint_eq(info.id_length, 0);
}
END_TEST

/* Malformed tokens: (what to change, expected result). */
static const struct bad_token {
	const char *what;
	size_t at;     /* byte to set */
	uint8_t value;
	bool from_zero; /* start from the well-known zero token */
	int want;
} bad_tokens[] = {
	{ "type reserved FFFF0002", 3, 0x02, true, -EPROTO },
	{ "type reserved FFFFFFFF", 3, 0xFF, true, -EPROTO },
	{ "type zero", 0, 0x00, false, -EPROTO },
	{ "reserved byte 4", 4, 0x01, false, -EPROTO },
	{ "reserved byte 5", 5, 0x80, false, -EPROTO },
	{ "id length 59", 7, 59, false, -EPROTO },
	{ "id length 504", 6, 0x01, false, -EPROTO },
	{ "id length 0 on odxfs type", 7, 0, false, -EPROTO },
	{ "magic", 8, 'O', false, -EPROTO },
	{ "version", 11, '2', false, -EPROTO },
	{ "padding first", 68, 0x01, false, -EPROTO },
	{ "padding last", ODX_TOKEN_SIZE - 1, 0x01, false, -EPROTO },
	{ "well-known zero with id bytes", 100, 0x01, true, -EPROTO },
	{ "well-known zero with id length", 7, 4, true, -EPROTO },
	{ "random id changed: still well formed", 40, 0x00, false, 0 },
	{ "length changed: still well formed", 67, 0xFF, false, 0 },
};

START_TEST(test_decode_bad)
{
	const struct bad_token *row = &bad_tokens[_i];
	uint8_t t[ODX_TOKEN_SIZE];
	struct odx_token_info info;
	if (row->from_zero)
		odx_token_encode_zero(t);
	else
		golden(t);
	t[row->at] = row->value;
	ck_assert_msg(odx_token_decode(t, &info) == row->want, "%s", row->what);
}
END_TEST

START_TEST(test_hex_roundtrip)
{
	uint8_t t[ODX_TOKEN_SIZE], u[ODX_TOKEN_SIZE];
	char hex[ODX_TOKEN_HEX_MAX];
	golden(t);
	size_t n = odx_token_to_hex(t, hex);
	ck_assert_uint_eq(n, 2 * (8 + 60));
	ck_assert_uint_eq(strlen(hex), n);
	ck_assert(strncmp(hex, "4f445846000000", 14) == 0);
	memset(u, 0xEE, sizeof u);
	ck_assert_int_eq(odx_token_from_hex(hex, u), 0);
	ck_assert(memcmp(t, u, ODX_TOKEN_SIZE) == 0);

	/* A non-zero byte past the id is never dropped from the hex form. */
	t[300] = 0x5A;
	n = odx_token_to_hex(t, hex);
	ck_assert_uint_eq(n, 602);
	ck_assert_int_eq(odx_token_from_hex(hex, u), 0);
	ck_assert(memcmp(t, u, ODX_TOKEN_SIZE) == 0);

	/* All 1024 digits, upper case, surrounded by whitespace. */
	char full[2 * ODX_TOKEN_SIZE + 8];
	full[0] = ' ';
	for (size_t i = 0; i < ODX_TOKEN_SIZE; i++)
		sprintf(full + 1 + 2 * i, "%02X", t[i]);
	strcat(full, "\n");
	ck_assert_int_eq(odx_token_from_hex(full, u), 0);
	ck_assert(memcmp(t, u, ODX_TOKEN_SIZE) == 0);
}
END_TEST

static const struct bad_hex {
	const char *hex;
} bad_hexes[] = {
	{ "" }, { "   " }, { "4" }, { "4f44584g" }, { "4f 44" }, { "0x4f44" },
};

START_TEST(test_hex_bad)
{
	uint8_t u[ODX_TOKEN_SIZE];
	memset(u, 0xEE, sizeof u);
	ck_assert_int_eq(odx_token_from_hex(bad_hexes[_i].hex, u), -EINVAL);
	ck_assert_uint_eq(u[0], 0xEE); /* untouched on failure */
}
END_TEST

START_TEST(test_hex_too_long)
{
	char *hex = malloc(2 * ODX_TOKEN_SIZE + 3);
	memset(hex, 'a', 2 * ODX_TOKEN_SIZE + 2);
	hex[2 * ODX_TOKEN_SIZE + 2] = '\0';
	uint8_t u[ODX_TOKEN_SIZE];
	ck_assert_int_eq(odx_token_from_hex(hex, u), -EINVAL);
	hex[2 * ODX_TOKEN_SIZE] = '\0';
	ck_assert_int_eq(odx_token_from_hex(hex, u), 0);
	free(hex);
}
END_TEST

/* The error table: every row distinct by name and message, errno set. */
START_TEST(test_error_table)
{
	for (int i = 1; i < ODX_OFFLOAD_E_COUNT; i++) {
		const struct odx_offload_errinfo *a = odx_offload_errinfo(i);
		ck_assert_ptr_nonnull(a);
		ck_assert_int_eq(a->code, i);
		ck_assert_int_gt(a->errnum, 0);
		for (int j = 1; j < i; j++) {
			const struct odx_offload_errinfo *b = odx_offload_errinfo(j);
			ck_assert_str_ne(a->name, b->name);
			ck_assert_str_ne(a->message, b->message);
		}
	}
	ck_assert_ptr_null(odx_offload_errinfo(ODX_OFFLOAD_OK));
	ck_assert_ptr_null(odx_offload_errinfo(ODX_OFFLOAD_E_COUNT));
	ck_assert_str_eq(odx_offload_strerror(-EKEYEXPIRED),
			 odx_offload_errinfo(ODX_OFFLOAD_E_EXPIRED)->message);
	ck_assert_str_eq(odx_offload_strerror(ENOENT), strerror(ENOENT));
}
END_TEST

/* The ioctl ABI: sizes and numbers never change silently. */
START_TEST(test_ioctl_abi)
{
	ck_assert_uint_eq(_IOC_SIZE(ODX_IOC_OFFLOAD_READ), 560);
	ck_assert_uint_eq(_IOC_SIZE(ODX_IOC_OFFLOAD_WRITE), 560);
	ck_assert_uint_eq(_IOC_DIR(ODX_IOC_OFFLOAD_READ), _IOC_READ | _IOC_WRITE);
	ck_assert_uint_eq(_IOC_DIR(ODX_IOC_RELEASE), _IOC_WRITE);
	ck_assert_uint_eq(ODX_IOC_OFFLOAD_READ, 0xC2304FA0u);
	ck_assert_uint_eq(ODX_IOC_OFFLOAD_WRITE, 0xC2304FA1u);
	ck_assert_uint_eq(ODX_IOC_RELEASE, 0x42084FA2u);
	ck_assert_uint_eq(ODX_IOC_STATS, 0xC0884FA3u);
}
END_TEST

static Suite *token_suite(void)
{
	Suite *s = suite_create("token");
	TCase *tc = tcase_create("layout");
	tcase_add_test(tc, test_encode_golden);
	tcase_add_test(tc, test_decode_golden);
	tcase_add_test(tc, test_well_known_zero);
	tcase_add_loop_test(tc, test_decode_bad, 0,
			    (int)(sizeof bad_tokens / sizeof bad_tokens[0]));
	suite_add_tcase(s, tc);
	tc = tcase_create("hex");
	tcase_add_test(tc, test_hex_roundtrip);
	tcase_add_loop_test(tc, test_hex_bad, 0, (int)(sizeof bad_hexes / sizeof bad_hexes[0]));
	tcase_add_test(tc, test_hex_too_long);
	suite_add_tcase(s, tc);
	tc = tcase_create("abi");
	tcase_add_test(tc, test_error_table);
	tcase_add_test(tc, test_ioctl_abi);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(token_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
