#!/bin/bash
# The odxfs demo: installs what is missing, builds, makes a backing
# directory with sample streams (a full uncompressed backup, a full LZ4
# backup, an incremental, an odxfs zlib stream and a raw file), mounts it,
# restores a disk with an offloaded copy (`cp` inside the mount) and shows
# what happened.  Leaves the mount in place and says how to unmount.
#   sudo contrib/demo.sh [DIR]     (default DIR: /tmp/odxfs-demo)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/odxfs-demo}
"$top/contrib/install-deps.sh"
if [ ! -f "$top/build/build.ninja" ]; then
	meson setup "$top/build" >/dev/null
fi
ninja -C "$top/build" >/dev/null
ODXCTL=$top/build/src/cli/odxctl
ODXFS=$top/build/src/fuse/odxfs
MK="python3 $top/test/tools/mkstream.py"
backing=$dir/backing
mnt=$dir/mnt
if mountpoint -q "$mnt" 2>/dev/null; then fusermount3 -u "$mnt"; fi
rm -rf "$backing"
mkdir -p "$backing" "$mnt"

echo "== making sample backups in $backing"
# A 256 MiB disk with 64 MiB of data spread over 40 extents, written by the
# independent test generator the way virtnbdbackup writes them.
$MK image "$dir/disk.raw" --size 256M --extents 80 --data-ratio 0.25 --sparse \
	--pattern compressible --seed demo >/dev/null
$MK stream "$dir/disk.raw" "$backing/sda.full.data" --layout "$dir/disk.raw.layout.json" >/dev/null
$MK stream "$dir/disk.raw" "$backing/sdb.full.data" --layout "$dir/disk.raw.layout.json" \
	--compress lz4 >/dev/null
"$ODXCTL" convert --quiet --changed 1M:4M,100M:2M "$dir/disk.raw" "$backing/sda.inc.virtnbdbackup.1.data"
"$ODXCTL" convert --quiet --compress zlib "$dir/disk.raw" "$backing/sdc.zlib.data"
echo "hello from a plain file" >"$backing/README.txt"
"$ODXCTL" info "$backing/sdb.full.data" | sed -n '1,8p'

echo "== mounting: odxfs $backing $mnt"
"$ODXFS" "$backing" "$mnt"
ls -ls "$mnt"

echo "== the mounted images are the disk"
for f in sda.full.data sdb.full.data sdc.zlib.data; do
	if cmp -s "$dir/disk.raw" "$mnt/$f"; then echo "$f: identical to disk.raw"; else echo "$f: DIFFERS"; fi
done

echo "== restoring sdb (LZ4) with cp inside the mount (copy_file_range -> offload read + write)"
rm -f "$mnt/restored.raw"
time cp --sparse=always "$mnt/sdb.full.data" "$mnt/restored.raw"
cmp -s "$dir/disk.raw" "$backing/restored.raw" && echo "restored.raw: identical to disk.raw"
echo "allocated on the backing filesystem: $(du -h "$backing/restored.raw" | cut -f1) of $(du -h --apparent-size "$backing/restored.raw" | cut -f1)"
if "$ODXCTL" stats --help >/dev/null 2>&1; then
	"$ODXCTL" stats "$mnt"
fi
echo
echo "The mount stays up: try  losetup -r -f --show $mnt/sda.full.data  or  qemu-img info $mnt/sda.full.data"
echo "Unmount with:  fusermount3 -u $mnt"
