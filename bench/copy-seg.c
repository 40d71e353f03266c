/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * copy-seg: the copies bench-copy.sh times against odxfs.
 *
 *   copy-seg walk SRC DST    the best native copy of a sparse file: DST
 *                            sized to SRC, then for each data segment
 *                            SEEK_DATA/SEEK_HOLE find, copy_file_range
 *                            (holes stay holes; a whole-file
 *                            copy_file_range on ext4 would write them out)
 *   copy-seg whole SRC DST   what a program does inside an odxfs mount:
 *                            copy_file_range over the whole file, looping
 *                            on short counts (the daemon walks the extents)
 *
 * DST is created or truncated, and fsynced before exit (a restore is done
 * when its bytes are on disk; bench-copy.sh also fsyncs every destination
 * inside the timed region, whatever made it).  Exit 0, or 1 with a message.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_range(int in, int out, off_t off, off_t end)
{
	while (off < end) {
		off64_t i = off, o = off;
		ssize_t n = copy_file_range(in, &i, out, &o, (size_t)(end - off), 0);
		if (n < 0) {
			perror("copy_file_range");
			return -1;
		}
		if (n == 0)
			break;
		off += n;
	}
	return 0;
}

static int finish(int out)
{
	if (fsync(out) < 0 || close(out) < 0) {
		perror("fsync/close");
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "walk") && strcmp(argv[1], "whole"))) {
		fprintf(stderr, "usage: copy-seg walk|whole SRC DST\n");
		return 1;
	}
	int in = open(argv[2], O_RDONLY);
	int out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	struct stat st;
	if (in < 0 || out < 0 || fstat(in, &st) < 0 || ftruncate(out, st.st_size) < 0) {
		perror(in < 0 ? argv[2] : argv[3]);
		return 1;
	}
	if (strcmp(argv[1], "whole") == 0) {
		if (copy_range(in, out, 0, st.st_size) < 0)
			return 1;
		return finish(out);
	}
	off_t pos = 0;
	for (;;) {
		off_t d = lseek(in, pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;
			perror("SEEK_DATA");
			return 1;
		}
		off_t h = lseek(in, d, SEEK_HOLE);
		if (h < 0) {
			perror("SEEK_HOLE");
			return 1;
		}
		if (copy_range(in, out, d, h) < 0)
			return 1;
		pos = h;
	}
	return finish(out);
}
