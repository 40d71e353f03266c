#!/bin/bash
# Restores by offloaded copy inside the mount: uncompressed, lz4 (also in
# small chunks) and zlib streams of an image with 2000 extents, and a
# sparse raw file, each copied to a new raw file with `odxctl copy` and
# with os.copy_file_range.  After each: the bytes, the holes (in the mount
# and on the backing file) and the allocation match the source's zero
# extents; the counters say the data went through the kernel (plain data)
# or the buffer (compressed).  Also a copy of 30000 extents, and one of a
# 9 GiB image, which needs several copy_file_range calls (each reply is
# 32 bits).
. "$(dirname "$0")/lib.sh"
. "$here/copy-lib.sh"
require_fuse
require_odxctl
require_cmd python3 xfs_io

B=$T/back
M=$T/mnt
mkdir -p "$B"
make_image disk --size 64M --extents 2000 --seed restore --pattern compressible
L=$T/disk.raw.layout.json
SIZE=$(stat -c %s "$T/disk.raw")
mkstream stream --compress none --layout "$L" "$T/disk.raw" "$B/none.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/disk.raw" "$B/lz4.data" >/dev/null
mkstream stream --compress lz4 --chunk-size 256K --layout "$L" "$T/disk.raw" "$B/lz4c.data" >/dev/null
mkstream stream --compress zlib --layout "$L" "$T/disk.raw" "$B/zlib.data" >/dev/null
mkstream image --size 64M --extents 2000 --seed restore --pattern compressible --sparse \
	"$B/sparse.raw" >/dev/null
cmp "$B/sparse.raw" "$T/disk.raw" || fail "mkstream --sparse gave other bytes"

odxfs_mount "$B" "$M"
data=$(layout_data_bytes "$L")
for s in none lz4 lz4c zlib sparse; do
	src=$s.data
	[ $s = sparse ] && src=sparse.raw
	k0=$(stat_of "$M" bytesKernel)
	b0=$(stat_of "$M" bytesBuffered)
	"$ODXCTL" copy --quiet "$M/$src" "$M/$s-odxctl.raw" || fail "odxctl copy $src"
	check_copy "$M/$s-odxctl.raw" "$B/$s-odxctl.raw" "$T/disk.raw" "$L" "$SIZE"
	k1=$(stat_of "$M" bytesKernel)
	b1=$(stat_of "$M" bytesBuffered)
	case $s in
	none | sparse)
		[ $((k1 - k0)) = "$data" ] || fail "$src: $((k1 - k0)) bytes copied in the kernel, expected $data"
		[ "$b1" = "$b0" ] || fail "$src: $((b1 - b0)) bytes went through the buffer" ;;
	*)
		[ $((b1 - b0)) = "$data" ] || fail "$src: $((b1 - b0)) bytes decoded through the buffer, expected $data" ;;
	esac
	$CC cfr "$M/$src" "$M/$s-cfr.raw" >"$T/cfr.json" || fail "os.copy_file_range $src"
	check_copy "$M/$s-cfr.raw" "$B/$s-cfr.raw" "$T/disk.raw" "$L" "$SIZE"
	rm -f "$M/$s-odxctl.raw" "$M/$s-cfr.raw"
done
[ "$(stat_of "$M" tokensLive)" = 0 ] || fail "tokens left outstanding after the copies"

# Many extents: one copy_file_range over 30000 of them (several tokens,
# each capped at the engine's extent count or length).
make_image many --size 128M --extents 30000 --seed many
mkstream stream --compress none --layout "$T/many.raw.layout.json" "$T/many.raw" \
	"$B/many.data" >/dev/null
$CC cfr "$M/many.data" "$M/many.raw" >/dev/null || fail "copy of 30000 extents"
check_copy "$M/many.raw" "$B/many.raw" "$T/many.raw" "$T/many.raw.layout.json" \
	"$(stat -c %s "$T/many.raw")"
rm -f "$M/many.raw" "$T/many.raw"

# A 9 GiB image with a few data extents: one call copies less than 4 GiB.
mkstream huge --virtual-size 9G --extents 0:1M,3G:2M,4095M:2M,5G:64K,8G:3M,9215M:1M --seed huge "$B/huge.data" >/dev/null || fail "mkstream huge"
mv "$B/huge.data.expect.json" "$T/huge.json"
$CC cfr "$M/huge.data" "$M/huge.raw" >"$T/cfr.json" || fail "copy of 9 GiB"
python3 - "$T/cfr.json" <<'PY' || fail "copy_file_range counts of the 9 GiB copy"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["left"] == 0, r
assert r["calls"] >= 3 and r["largest"] < 1 << 32, r
PY
$CHECK sparse "$M/huge.raw" "$T/huge.json" || fail "9 GiB copy (in the mount)"
$CHECK sparse "$B/huge.raw" "$T/huge.json" || fail "9 GiB copy (backing file)"
pass
