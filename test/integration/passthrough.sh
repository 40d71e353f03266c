#!/bin/bash
# Everything that is not a stream passes through read-write: files and
# directories, rename (also RENAME_NOREPLACE and RENAME_EXCHANGE), links,
# modes, xattrs, truncate, fallocate and the holes of sparse raw files.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 xfs_io setfattr getfattr fallocate

B=$T/back
M=$T/mnt
mkdir -p "$B/dir"
head -c 3000000 /dev/urandom >"$B/dir/random.bin"
odxfs_mount "$B" "$M"

# Files: create, write, read back, append; the backing file agrees.
echo hello >"$M/a.txt"
[ "$(cat "$M/a.txt")" = hello ] || fail "read after write"
echo more >>"$M/a.txt"
same_bytes "$M/a.txt" "$B/a.txt"
same_bytes "$M/dir/random.bin" "$B/dir/random.bin"
dd if=/dev/urandom of="$M/big.bin" bs=1M count=8 status=none
same_bytes "$M/big.bin" "$B/big.bin"
dd if=/dev/zero of="$M/big.bin" bs=4096 seek=5 count=3 conv=notrunc status=none
same_bytes "$M/big.bin" "$B/big.bin"

# Directories.
mkdir -p "$M/d1/d2"
[ -d "$B/d1/d2" ] || fail "mkdir"
ls "$M/d1" | grep -qx d2 || fail "readdir"
[ "$(ls "$M/dir" | wc -l)" = 1 ] || fail "readdir count"
rmdir "$M/d1/d2" "$M/d1"
[ ! -e "$B/d1" ] || fail "rmdir"

# Rename, plain and with flags.
mv "$M/a.txt" "$M/b.txt"
[ -f "$B/b.txt" ] && [ ! -e "$B/a.txt" ] || fail "rename"
echo other >"$M/c.txt"
python3 - "$M" <<'PY' || fail "renameat2 flags"
import ctypes, errno, os, sys
m = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, NOREPLACE, EXCHANGE = -100, 1, 2
def ren(a, b, fl):
    r = libc.renameat2(AT_FDCWD, f"{m}/{a}".encode(), AT_FDCWD, f"{m}/{b}".encode(), fl)
    return 0 if r == 0 else ctypes.get_errno()
if ren("b.txt", "c.txt", NOREPLACE) != errno.EEXIST:
    sys.exit("RENAME_NOREPLACE onto an existing name did not fail with EEXIST")
if ren("b.txt", "e.txt", NOREPLACE) != 0:
    sys.exit("RENAME_NOREPLACE to a free name failed")
if ren("e.txt", "c.txt", EXCHANGE) != 0:
    sys.exit("RENAME_EXCHANGE failed")
if open(f"{m}/c.txt").read() != "hello\nmore\n" or open(f"{m}/e.txt").read() != "other\n":
    sys.exit("RENAME_EXCHANGE did not swap the contents")
PY

# Links.
ln -s c.txt "$M/sym"
[ "$(readlink "$M/sym")" = c.txt ] && [ "$(readlink "$B/sym")" = c.txt ] || fail "symlink"
[ "$(cat "$M/sym")" = "$(cat "$M/c.txt")" ] || fail "read through symlink"
ln "$M/c.txt" "$M/hard"
[ "$(stat -c %h "$M/c.txt")" = 2 ] || fail "link count after hard link"
[ "$(stat -c %i "$B/hard")" = "$(stat -c %i "$B/c.txt")" ] || fail "hard link on the backing side"
echo changed >"$M/hard"
[ "$(cat "$M/c.txt")" = changed ] || fail "write through a hard link"

# Unlink (also of an open file).
exec 7<"$M/e.txt"
rm "$M/e.txt" "$M/hard"
[ ! -e "$B/e.txt" ] || fail "unlink"
[ "$(cat <&7)" = other ] || fail "read of an unlinked open file"
exec 7<&-

# Modes, owners, times, xattrs.
chmod 640 "$M/c.txt"
[ "$(stat -c %a "$B/c.txt")" = 640 ] || fail "chmod"
chown 1234:4321 "$M/c.txt"
[ "$(stat -c %u:%g "$B/c.txt")" = 1234:4321 ] || fail "chown"
touch -d '2001-02-03 04:05:06' "$M/c.txt"
[ "$(stat -c %Y "$B/c.txt")" = "$(date -d '2001-02-03 04:05:06' +%s)" ] || fail "utimens"
if setfattr -n user.odx -v hello "$B/c.txt" 2>/dev/null; then
	setfattr -x user.odx "$B/c.txt"
	setfattr -n user.test -v 42 "$M/c.txt"
	[ "$(getfattr --absolute-names --only-values -n user.test "$B/c.txt")" = 42 ] || fail "setxattr"
	[ "$(getfattr --absolute-names --only-values -n user.test "$M/c.txt")" = 42 ] || fail "getxattr"
	getfattr --absolute-names -d "$M/c.txt" | grep -q 'user.test="42"' || fail "listxattr"
	setfattr -x user.test "$M/c.txt"
	! getfattr --absolute-names -n user.test "$B/c.txt" 2>/dev/null || fail "removexattr"
else
	log "backing filesystem without user xattrs: xattr checks skipped"
fi

# Size changes and holes.
truncate -s 5M "$M/c.txt"
[ "$(stat -c %s "$B/c.txt")" = 5242880 ] || fail "truncate up"
truncate -s 3 "$M/c.txt"
[ "$(cat "$M/c.txt")" = cha ] || fail "truncate down"
fallocate -l 2M "$M/alloc.bin"
[ "$(stat -c %s "$B/alloc.bin")" = 2097152 ] || fail "fallocate"
fallocate -p -o 1M -l 1M "$M/big.bin"
cmp -n 1048576 -i 1048576:0 "$M/big.bin" /dev/zero || fail "punched range reads as zeros"
same_bytes "$M/big.bin" "$B/big.bin"
# A sparse raw file keeps its holes in the mount.
truncate -s 64M "$B/sparse.raw"
printf data | dd of="$B/sparse.raw" bs=1 seek=$((32 << 20)) conv=notrunc status=none
xfs_io -r -c "seek -a -r 0" "$M/sparse.raw" >"$T/seek-mnt.txt"
xfs_io -r -c "seek -a -r 0" "$B/sparse.raw" >"$T/seek-back.txt"
cmp "$T/seek-mnt.txt" "$T/seek-back.txt" || fail "holes of a sparse raw file differ"
# A raw file written through the mount to look like a stream becomes one
# once written (content decides, not names).
make_image s --size 1M --extents 4 --seed pass
mkstream stream --layout "$T/s.raw.layout.json" "$T/s.raw" "$T/s.data" >/dev/null
cp "$T/s.data" "$M/copied.data"
sleep 1.2 # the attribute cache of the copy (1 s)
[ "$(stat -c %s "$M/copied.data")" = 1048576 ] || fail "a stream copied in is not shown as its image"
same_bytes "$M/copied.data" "$T/s.raw"

# statfs.
df "$M" >/dev/null || fail "statfs"
pass
