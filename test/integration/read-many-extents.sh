#!/bin/bash
# A stream of 100,000 extents at unaligned boundaries, and a 1 TiB virtual
# disk with a few extents: bytes, holes and SEEK_DATA/SEEK_HOLE.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 xfs_io

make_image many --size 64M --extents 100000 --unaligned --seed many
L=$T/many.raw.layout.json
mkdir -p "$T/back"
mkstream stream --layout "$L" "$T/many.raw" "$T/back/many.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/many.raw" "$T/back/many-lz4.data" >/dev/null
mkstream huge --virtual-size 1T --extents "0:1M,5G:3M,512G:64K,1099511562240:65536" \
	"$T/back/huge.data" >/dev/null
mkstream huge --compress zlib --virtual-size 1T --extents "4K:100000,700G:2M" \
	"$T/back/huge-zlib.data" >/dev/null

odxfs_mount "$T/back" "$T/mnt"
for s in many many-lz4; do
	f=$T/mnt/$s.data
	[ "$(sha "$f")" = "$(sha "$T/many.raw")" ] || fail "$f: sha256 differs"
	$CHECK randread "$f" "$T/many.raw" --count 500 --max-len 20000 --seed "$s" || fail "$f: random reads"
	xfs_io -r -c "seek -a -r 0" "$f" >"$T/seek-$s.txt" || fail "xfs_io seek $s"
	$CHECK holes "$T/seek-$s.txt" "$L" || fail "$f: holes differ from the zero regions"
done
for s in huge huge-zlib; do
	$CHECK sparse "$T/mnt/$s.data" "$T/back/$s.data.expect.json" || fail "$s: 1 TiB image"
done
pass
