#!/bin/bash
# copy_file_range with unaligned offsets and lengths, through real clients:
# `xfs_io -c "copy_range -s -d -l"` and Python's os.copy_file_range, from an
# uncompressed stream, an lz4 stream and a sparse raw file, into fresh raw
# files.  Several ranges land in one destination (disjoint, some sharing a
# block), one runs past the source's end (a short copy), one copies the
# whole file.  After each set: bytes == a model built from the reference
# image, and a hole at exactly the destination blocks that received no
# data byte (in the mount and on the backing file).
. "$(dirname "$0")/lib.sh"
. "$here/copy-lib.sh"
require_fuse
require_odxctl
require_cmd python3 xfs_io

B=$T/back
M=$T/mnt
mkdir -p "$B"
make_image disk --size 24M --extents 300 --seed ranges
L=$T/disk.raw.layout.json
SIZE=$(stat -c %s "$T/disk.raw")
mkstream stream --compress none --layout "$L" "$T/disk.raw" "$B/none.data" >/dev/null
mkstream stream --compress lz4 --chunk-size 1M --layout "$L" "$T/disk.raw" "$B/lz4.data" >/dev/null
mkstream image --size 24M --extents 300 --seed ranges --sparse "$B/sparse.raw" >/dev/null
odxfs_mount "$B" "$M"

# SRC_OFF:DST_OFF:LEN, disjoint in the destination.  The second and third
# share the destination block at 2 MiB; the last runs past the end.
xfs_copies=(
	"0:0:1048699"
	"3000001:1048699:1048893"
	"12345678:2097592:3145728"
	"4096:6291456:4096"
	"$((SIZE - 100000)):8388613:1048576"
)
py_copies=(
	"777:10485761:2222222"
	"16777216:13000000:65536"
	"9999:14000000:1"
)
for src in none.data lz4.data sparse.raw; do
	dst=$src.ranges
	args=()
	for c in "${xfs_copies[@]}"; do
		IFS=: read -r s d n <<<"$c"
		xfs_io -f -c "copy_range -s $s -d $d -l $n $M/$src" "$M/$dst" ||
			fail "xfs_io copy_range $c from $src"
		[ $((s + n)) -le "$SIZE" ] || n=$((SIZE - s)) # the source ends
		args+=(--copy "$s:$d:$n")
	done
	for c in "${py_copies[@]}"; do
		IFS=: read -r s d n <<<"$c"
		$CC cfr "$M/$src" "$M/$dst" --src-off "$s" --dst-off "$d" --len "$n" >/dev/null ||
			fail "os.copy_file_range $c from $src"
		args+=(--copy "$s:$d:$n")
	done
	end=0
	for a in "${args[@]}"; do
		[ "$a" = --copy ] && continue
		IFS=: read -r s d n <<<"$a"
		[ $((d + n)) -gt $end ] && end=$((d + n))
	done
	check_copy "$M/$dst" "$B/$dst" "$T/disk.raw" "$L" "$end" "${args[@]}"

	# The whole file, xfs_io's defaults (no -s, -d, -l).
	xfs_io -f -c "copy_range $M/$src" "$M/$src.whole" || fail "xfs_io copy_range (whole) $src"
	check_copy "$M/$src.whole" "$B/$src.whole" "$T/disk.raw" "$L" "$SIZE"
done

# A copy at an offset far past the destination's end: the gap is a hole.
xfs_io -f -c "copy_range -s 8192 -d 1000000007 -l 12345 $M/none.data" "$M/far.raw" ||
	fail "copy_range far past the end"
check_copy "$M/far.raw" "$B/far.raw" "$T/disk.raw" "$L" 1000012352 --copy 8192:1000000007:12345
pass
