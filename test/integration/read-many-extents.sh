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
# Extents of about 200 bytes: a 1 MiB read is more pieces (data and holes)
# than one writev takes (IOV_MAX); the reply must still come, whole.  It
# used to be lost, and the reader hung unkillably until the daemon died
# (hence the watchdog: the EXIT trap then kills the daemon).
make_image tiny --size 8M --extents 20000 --unaligned --seed tiny
L=$T/tiny.raw.layout.json
mkstream stream --layout "$L" "$T/tiny.raw" "$T/back/tiny.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/tiny.raw" "$T/back/tiny-lz4.data" >/dev/null
for s in tiny tiny-lz4; do
	dd if="$T/mnt/$s.data" of="$T/$s.out" bs=1M status=none iflag=direct &
	reader=$!
	for _ in $(seq 600); do kill -0 $reader 2>/dev/null || break; sleep 0.1; done
	kill -0 $reader 2>/dev/null && fail "$s: a 1 MiB read of tiny extents got no reply"
	wait $reader || fail "$s: 1 MiB reads of tiny extents failed"
	cmp "$T/$s.out" "$T/tiny.raw" || fail "$s: bytes differ"
done
for s in huge huge-zlib; do
	$CHECK sparse "$T/mnt/$s.data" "$T/back/$s.data.expect.json" || fail "$s: 1 TiB image"
done
pass
