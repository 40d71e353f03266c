#!/bin/bash
# Parallel readers: many threads on one image, and on different images
# (uncompressed, lz4, zlib) at once, against the expected bytes.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3

make_image disk --size 32M --extents 500 --unaligned --seed parallel --pattern compressible
L=$T/disk.raw.layout.json
mkdir -p "$T/back"
for c in none lz4 zlib; do
	mkstream stream --compress $c --chunk-size 1M --layout "$L" "$T/disk.raw" "$T/back/$c.data" >/dev/null
done
cp "$T/disk.raw" "$T/back/raw.img"

# A small chunk cache, so threads evict each other's chunks.
odxfs_mount "$T/back" "$T/mnt" -o cache_size=4M
$CHECK parallel "$T/disk.raw" "$T/mnt/lz4.data" --threads 8 --count 300 --seed same ||
	fail "parallel readers of one image"
$CHECK parallel "$T/disk.raw" "$T/mnt/none.data" "$T/mnt/lz4.data" "$T/mnt/zlib.data" \
	"$T/mnt/raw.img" --threads 10 --count 300 --seed different ||
	fail "parallel readers of different images"
# Whole-file readers at once, as separate processes.
pids=()
for c in none lz4 zlib none lz4 zlib; do
	sha256sum "$T/mnt/$c.data" >"$T/sum-$c-${#pids[@]}" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a reader failed"; done
want=$(sha "$T/disk.raw")
for f in "$T"/sum-*; do
	[ "$(cut -d' ' -f1 "$f")" = "$want" ] || fail "$(cat "$f"): wrong sha256"
done
pass
