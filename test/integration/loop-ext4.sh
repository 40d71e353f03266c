#!/bin/bash
# Instant access: an ext4 filesystem image, made into a stream, is attached
# read-only to a loop device straight from the mount, mounted, its files
# read; e2fsck -n finds it clean.  Needs root and loop devices.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 losetup mkfs.ext4 e2fsck mount umount

# A filesystem with files, built from a directory (no mount needed).
mkdir -p "$T/tree/sub"
head -c 5000000 /dev/urandom >"$T/tree/random.bin"
seq 1 200000 >"$T/tree/sub/numbers.txt"
echo hello >"$T/tree/hello.txt"
truncate -s 64M "$T/fs.raw"
mkfs.ext4 -q -F -d "$T/tree" "$T/fs.raw" || fail "mkfs.ext4"
mkdir -p "$T/back"
mkstream stream --compress lz4 "$T/fs.raw" "$T/back/fs.data" >/dev/null
mkstream stream "$T/fs.raw" "$T/back/fs-plain.data" >/dev/null

odxfs_mount "$T/back" "$T/mnt"
same_bytes "$T/mnt/fs.data" "$T/fs.raw"
for s in fs fs-plain; do
	dev=$(losetup -r -f --show "$T/mnt/$s.data" 2>"$T/losetup.err") ||
		skip "no loop device: $(cat "$T/losetup.err")"
	at_exit "losetup -d $dev"
	e2fsck -n -f "$dev" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out" >&2; fail "e2fsck -n on $s"; }
	mkdir -p "$T/fs-$s"
	mount -o ro "$dev" "$T/fs-$s" || fail "mount $dev"
	at_exit "umount -l $T/fs-$s"
	diff -r "$T/tree" "$T/fs-$s" -x lost+found || fail "files in the $s filesystem differ"
	umount "$T/fs-$s"
	losetup -d "$dev"
done
pass
