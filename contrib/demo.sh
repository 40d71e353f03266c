#!/bin/bash
# The odxfs demo: installs what is missing, builds, makes a backing
# directory with sample streams (a full uncompressed backup, a full LZ4
# backup, an incremental, an odxfs zlib stream and a raw file), mounts it,
# restores disks with offloaded copies inside the mount (odxctl copy, and
# a plain copy_file_range) and shows what happened: bytes offloaded, holes
# left, tokens; then writes a synthetic full backup (odxctl merge).  Leaves
# the mount in place and says how to unmount.
#   contrib/demo.sh [DIR]     (as root; default DIR: /tmp/odxfs-demo)
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
# independent test generator the way virtnbdbackup writes them (checkpoint
# virtnbdbackup.0); then the disk one day later (6 MiB rewritten) and its
# incremental backup, which continues the full's checkpoint.
$MK image "$dir/disk.raw" --size 256M --extents 80 --data-ratio 0.25 --sparse \
	--pattern compressible --seed demo >/dev/null
$MK stream "$dir/disk.raw" "$backing/sda.full.data" --layout "$dir/disk.raw.layout.json" >/dev/null
$MK stream "$dir/disk.raw" "$backing/sdb.full.data" --layout "$dir/disk.raw.layout.json" \
	--compress lz4 --disk-name sdb >/dev/null
cp --sparse=always "$dir/disk.raw" "$dir/disk1.raw"
head -c 4M /dev/urandom | dd of="$dir/disk1.raw" bs=1M seek=1 conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$dir/disk1.raw" bs=1M seek=100 conv=notrunc status=none
"$ODXCTL" convert --quiet --changed 1M:4M,100M:2M --checkpoint virtnbdbackup.1 \
	--parent virtnbdbackup.0 "$dir/disk1.raw" "$backing/sda.inc.virtnbdbackup.1.data"
"$ODXCTL" convert --quiet --compress zlib --disk-name sdc "$dir/disk.raw" "$backing/sdc.zlib.data"
echo "hello from a plain file" >"$backing/README.txt"
"$ODXCTL" info "$backing/sdb.full.data" | sed -n '1,8p'

echo "== mounting: odxfs $backing $mnt"
"$ODXFS" "$backing" "$mnt"
ls -ls "$mnt"

echo "== the mounted images are the disk"
for f in sda.full.data sdb.full.data sdc.zlib.data; do
	if cmp -s "$dir/disk.raw" "$mnt/$f"; then echo "$f: identical to disk.raw"; else echo "$f: DIFFERS"; fi
done
echo "== the incremental is the disk at its checkpoint: its 6 MiB over the full"
if cmp -s "$dir/disk1.raw" "$mnt/sda.inc.virtnbdbackup.1.data"; then
	echo "sda.inc.virtnbdbackup.1.data: identical to disk1.raw (the disk a day later)"
else
	echo "sda.inc.virtnbdbackup.1.data: DIFFERS"
fi
"$ODXCTL" info "$backing/sda.inc.virtnbdbackup.1.data" | sed -n '/^chain:/,$p'
"$ODXCTL" map "$backing/sda.inc.virtnbdbackup.1.data" | head -6

echo "== restoring sdb (LZ4) inside the mount: offload read (token) + offload write"
rm -f "$mnt/restored-lz4.raw" "$mnt/restored-xfsio.raw"
time "$ODXCTL" copy --quiet "$mnt/sdb.full.data" "$mnt/restored-lz4.raw"
cmp -s "$dir/disk.raw" "$backing/restored-lz4.raw" && echo "restored-lz4.raw: identical to disk.raw"
echo "allocated on the backing filesystem: $(du -h "$backing/restored-lz4.raw" | cut -f1) of $(du -h --apparent-size "$backing/restored-lz4.raw" | cut -f1)"
"$ODXCTL" stats "$mnt"

echo "== restoring sda (uncompressed): one copy_file_range call (xfs_io copy_range)"
# Any program calling copy_file_range gets the same token pair.  (GNU cp 9.1
# copies a source that shows holes with read/write itself; cp 9.2 and later
# call copy_file_range per data segment.)
size=$(stat -c %s "$mnt/sda.full.data")
time xfs_io -f -c "copy_range -s 0 -d 0 -l $size $mnt/sda.full.data" "$mnt/restored-xfsio.raw"
cmp -s "$dir/disk.raw" "$backing/restored-xfsio.raw" && echo "restored-xfsio.raw: identical to disk.raw"
echo "allocated on the backing filesystem: $(du -h "$backing/restored-xfsio.raw" | cut -f1) of $(du -h --apparent-size "$backing/restored-xfsio.raw" | cut -f1)"
"$ODXCTL" stats "$mnt"
echo
echo "== restoring the disk at checkpoint 1 (full + incremental) by one copy"
rm -f "$mnt/restored-cp1.raw"
time "$ODXCTL" copy --quiet "$mnt/sda.inc.virtnbdbackup.1.data" "$mnt/restored-cp1.raw"
cmp -s "$dir/disk1.raw" "$backing/restored-cp1.raw" && echo "restored-cp1.raw: identical to disk1.raw"
echo
echo "== a synthetic full backup of the disk at checkpoint 1 (odxctl merge): a new"
echo "   stream written by the daemon, guest data moved backing file to backing file"
rm -f "$mnt/sda.full.at1.data" "$mnt/sda.full.at1.data.chksum"
"$ODXCTL" merge "$mnt/sda.inc.virtnbdbackup.1.data" "$mnt/sda.full.at1.data"
cmp -s "$dir/disk1.raw" "$mnt/sda.full.at1.data" && echo "sda.full.at1.data (read through the mount): identical to disk1.raw"
"$ODXCTL" info "$backing/sda.full.at1.data" | sed -n '1,4p'
echo
echo "The mount stays up: try  losetup -r -f --show $mnt/sda.full.data  or  qemu-img info $mnt/sda.full.data"
echo "Unmount with:  fusermount3 -u $mnt"
