#!/bin/bash
# Stream images are read-only (EROFS for every way of writing) while the
# namespace around them is not: a stream can be renamed and removed.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 truncate fallocate

make_image disk --size 4M --extents 8 --seed ro
mkdir -p "$T/back"
mkstream stream --layout "$T/disk.raw.layout.json" "$T/disk.raw" "$T/back/s.data" >/dev/null
before=$(sha "$T/back/s.data")

odxfs_mount "$T/back" "$T/mnt"
f=$T/mnt/s.data
expect_errno EROFS "os.open('$f', os.O_WRONLY)"
expect_errno EROFS "os.open('$f', os.O_RDWR)"
expect_errno EROFS "os.open('$f', os.O_RDONLY | os.O_TRUNC)"
expect_errno EROFS "os.truncate('$f', 0)"
expect_errno EROFS "os.truncate('$f', 1 << 30)"
! truncate -s 0 "$f" 2>/dev/null || fail "truncate succeeded"
! fallocate -l 1M "$f" 2>/dev/null || fail "fallocate succeeded"
! sh -c "echo x >>'$f'" 2>/dev/null || fail "append succeeded"
[ "$(sha "$T/back/s.data")" = "$before" ] || fail "the backing stream changed"
[ "$(sha "$f")" = "$(sha "$T/disk.raw")" ] || fail "the image reads wrong"
# Metadata and names are the backing directory's.
chmod 600 "$f" && [ "$(stat -c %a "$T/back/s.data")" = 600 ] || fail "chmod"
mv "$f" "$T/mnt/t.data" && [ -f "$T/back/t.data" ] || fail "rename"
[ "$(stat -c %s "$T/mnt/t.data")" = "$(stat -c %s "$T/disk.raw")" ] || fail "size after rename"
rm "$T/mnt/t.data" && [ ! -e "$T/back/t.data" ] || fail "unlink"
pass
