#!/bin/bash
# O_DIRECT through the mount, both ways, on raw files: dd with
# oflag=direct and iflag=direct, 4 KiB and 1 MiB blocks, whole files and
# conv=notrunc writes into the middle of an existing file.  Every result is
# byte-exact: in the mount, on the backing file, against the source data.
# A reader of the file's cached pages sees what a direct write put there.
# A failed check does not stop the test: every check reports.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd dd cmp python3

B=$T/back
M=$T/mnt
mkdir -p "$B"
head -c 8M /dev/urandom >"$T/src"
head -c 1M /dev/urandom >"$T/patch"
odxfs_mount "$B" "$M"

# Direct writes of a whole file.
for bs in 4K 1M; do
	dd if="$T/src" of="$M/w$bs" bs=$bs oflag=direct status=none ||
		problem "dd oflag=direct bs=$bs into the mount failed"
	cmp "$M/w$bs" "$T/src" || problem "bs=$bs direct write: the mount's file differs from the source"
	cmp "$B/w$bs" "$T/src" || problem "bs=$bs direct write: the backing file differs from the source"
done

# Direct reads, of a file written normally and of one written directly.
cp "$T/src" "$B/plain"
for bs in 4K 1M; do
	for f in plain w1M; do
		dd if="$M/$f" of="$T/r$bs-$f" bs=$bs iflag=direct status=none ||
			problem "dd iflag=direct bs=$bs of $f failed"
		cmp "$T/r$bs-$f" "$T/src" || problem "bs=$bs direct read of $f differs from the source"
	done
done
# Both ways at once.
dd if="$M/plain" of="$M/both" bs=1M iflag=direct oflag=direct status=none ||
	problem "dd iflag=direct oflag=direct inside the mount failed"
cmp "$B/both" "$T/src" || problem "direct copy inside the mount differs from the source"

# Into the middle of an existing file, without truncating it; the expected
# bytes are built with pread/pwrite on a private copy.
expect() { # FILE OFFSET: the source with the patch at OFFSET
	python3 - "$T/src" "$T/patch" "$1" "$2" <<'PY'
import shutil, sys
src, patch, out, off = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
shutil.copyfile(src, out)
with open(out, "r+b") as f, open(patch, "rb") as p:
    f.seek(off)
    f.write(p.read())
PY
}
for bs in 4K 1M; do
	cp "$T/src" "$B/mid$bs"
	# The file's pages in the kernel's cache before the direct write.
	cmp "$M/mid$bs" "$T/src" || problem "mid$bs before the write"
	if [ $bs = 4K ]; then seek=300 count=256 off=$((300 * 4096)); else seek=3 count=1 off=$((3 << 20)); fi
	dd if="$T/patch" of="$M/mid$bs" bs=$bs seek=$seek count=$count oflag=direct conv=notrunc \
		status=none || problem "dd oflag=direct conv=notrunc bs=$bs into the middle failed"
	expect "$T/want$bs" $off
	[ "$(stat -c %s "$B/mid$bs")" = $((8 << 20)) ] || problem "mid$bs: size changed"
	cmp "$B/mid$bs" "$T/want$bs" || problem "bs=$bs direct write into the middle: backing file differs"
	cmp "$M/mid$bs" "$T/want$bs" || problem "bs=$bs direct write into the middle: cached reads are stale"
	dd if="$M/mid$bs" of="$T/rmid$bs" bs=$bs iflag=direct status=none ||
		problem "dd iflag=direct of mid$bs failed"
	cmp "$T/rmid$bs" "$T/want$bs" || problem "bs=$bs direct read after a direct write differs"
done
# A direct read of a range only: skip into the middle.
dd if="$M/plain" of="$T/part" bs=4K skip=513 count=100 iflag=direct status=none ||
	problem "dd iflag=direct skip=513 failed"
cmp "$T/part" <(tail -c +$((513 * 4096 + 1)) "$T/src" | head -c $((100 * 4096))) ||
	problem "direct read of a middle range differs"
daemon_alive "$M"
no_problems
pass
