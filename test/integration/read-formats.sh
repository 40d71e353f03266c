#!/bin/bash
# Uncompressed, lz4 (also in small chunks) and zlib streams of one image
# read back byte for byte: sha256, qemu-img compare, random reads, st_size
# and st_blocks, and the holes xfs_io finds == the image's zero regions.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 xfs_io qemu-img

make_image disk --size 48M --extents 300 --seed formats --pattern compressible
L=$T/disk.raw.layout.json
mkdir -p "$T/back"
mkstream stream --compress none --layout "$L" "$T/disk.raw" "$T/back/none.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/disk.raw" "$T/back/lz4.data" >/dev/null
mkstream stream --compress lz4 --chunk-size 256K --layout "$L" "$T/disk.raw" "$T/back/lz4-chunked.data" >/dev/null
mkstream stream --compress zlib --layout "$L" "$T/disk.raw" "$T/back/zlib.data" >/dev/null

odxfs_mount "$T/back" "$T/mnt"
want_sha=$(sha "$T/disk.raw")
want_size=$(stat -c %s "$T/disk.raw")
want_blocks=$(( ($(layout_data_bytes "$L") + 511) / 512 ))
for s in none lz4 lz4-chunked zlib; do
	f=$T/mnt/$s.data
	[ "$(stat -c %s "$f")" = "$want_size" ] || fail "$f: st_size $(stat -c %s "$f"), expected $want_size"
	[ "$(stat -c %b "$f")" = "$want_blocks" ] || fail "$f: st_blocks $(stat -c %b "$f"), expected $want_blocks"
	[ "$(sha "$f")" = "$want_sha" ] || fail "$f: sha256 differs from the raw image"
	qemu-img compare -q -f raw -F raw "$f" "$T/disk.raw" || fail "$f: qemu-img compare"
	$CHECK randread "$f" "$T/disk.raw" --count 300 --seed "$s" || fail "$f: random reads"
	xfs_io -r -c "seek -a -r 0" "$f" >"$T/seek-$s.txt" || fail "$f: xfs_io seek"
	$CHECK holes "$T/seek-$s.txt" "$L" || fail "$f: holes differ from the zero regions"
	# The map odxctl prints comes from the same extent map as SEEK_HOLE.
	if [ -n "$ODXCTL" ] && "$ODXCTL" map --help >/dev/null 2>&1; then
		"$ODXCTL" map --json "$T/back/$s.data" >"$T/map-$s.json" || fail "odxctl map $s"
		$CHECK map-holes "$T/map-$s.json" "$L" || fail "$s: odxctl map holes differ"
	fi
done
pass
