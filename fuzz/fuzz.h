/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What every fuzz target shares: libFuzzer's entry point, and expect(),
 * which aborts (a crash to libFuzzer, so it keeps the input) when a
 * documented contract of the code under test is broken.
 */
#ifndef ODXFS_FUZZ_H
#define ODXFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define expect(cond)                                                             \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, \
				__LINE__, #cond);                                \
			abort();                                                 \
		}                                                                \
	} while (0)

#endif
