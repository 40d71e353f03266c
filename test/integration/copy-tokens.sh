#!/bin/bash
# The token pair for programs: `odxctl offload-read` in one process,
# `odxctl offload-write` in another, as on Windows.  A token works until
# its time to live (-o token_ttl, or --ttl) and is refused after it; each
# kind of refusal has its own errno and message (odxctl(1) ERRORS):
# malformed, unknown (forged, released), expired, another mount's,
# invalidated (its raw source range written through the mount), transfer
# offset past its end, overlapping ranges, a read-only destination (a
# stream image), a descriptor not open for writing, the token caps.  The
# counters of `odxctl stats` follow, on the mount root and on a file.
. "$(dirname "$0")/lib.sh"
. "$here/copy-lib.sh"
require_fuse
require_odxctl
require_cmd python3 xfs_io

B=$T/back
M=$T/mnt
mkdir -p "$B" "$T/back2"
make_image disk --size 16M --extents 40 --seed tokens
L=$T/disk.raw.layout.json
SIZE=$(stat -c %s "$T/disk.raw")
mkstream stream --compress none --layout "$L" "$T/disk.raw" "$B/disk.data" >/dev/null
mkstream stream --compress zlib --layout "$L" "$T/disk.raw" "$B/zlib.data" >/dev/null
head -c 4M /dev/urandom >"$B/src.raw"
echo other >"$T/back2/x.raw"

# Bad values of the offload options are refused before mounting, naming
# the option and quoting the value.
for o in token_ttl=0 token_ttl=2h max_tokens=0 max_tokens=x token_memory=1K offload=maybe; do
	rc=0
	"$ODXFS" -f -o "$o" "$B" "$M" 2>"$T/err.txt" || rc=$?
	[ "$rc" = 1 ] && grep -q "bad value for -o ${o%%=*}: '${o#*=}'" "$T/err.txt" ||
		fail "odxfs -o $o: exit $rc, $(cat "$T/err.txt")"
done

odxfs_mount "$B" "$M" -o token_ttl=2500
odxfs_mount "$T/back2" "$T/mnt2"

# ioctl IOCTL FILE OPEN-FLAGS [TOKEN-HEX]: one raw ioctl from Python,
# printing the errno name (or OK): for what odxctl does not do (a
# read-only descriptor for an offload write, release, wrong sizes).
ioctl() {
	python3 - "$@" <<'PY'
import errno, fcntl, os, struct, sys
what, path, flags = sys.argv[1], sys.argv[2], sys.argv[3]
tok = bytes.fromhex(sys.argv[4]).ljust(512, b"\0") if len(sys.argv) > 4 else bytes(512)
def iowr(nr, size, d=3):
    return (d << 30) | (size << 16) | (ord("O") << 8) | nr
fd = os.open(path, {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[flags])
try:
    if what == "write":       # 1 MiB at 0 from the token's start
        buf = bytearray(struct.pack("<IIQQQ512sIIQ", 560, 0, 0, 1 << 20, 0, tok, 0, 0, 0))
        fcntl.ioctl(fd, iowr(0xA1, 560), buf)
    elif what == "release":
        fcntl.ioctl(fd, iowr(0xA2, 520, 1), struct.pack("<II512s", 520, 0, tok))
    elif what == "badsize":   # right number, wrong size field
        buf = bytearray(struct.pack("<IIQQQ512sIIQ", 559, 0, 0, 1 << 20, 0, tok, 0, 0, 0))
        fcntl.ioctl(fd, iowr(0xA1, 560), buf)
    elif what == "unknown":
        fcntl.ioctl(fd, iowr(0xAF, 16), bytearray(16))
    print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])
finally:
    os.close(fd)
PY
}

# Two processes: the token read by one is applied by another.
"$ODXCTL" offload-read "$M/disk.data" 0 16M >"$T/rd.txt" || fail "offload-read"
grep -qx "transfer length: $SIZE" "$T/rd.txt" || fail "offload-read: $(cat "$T/rd.txt")"
grep -qx 'flags: 0x0' "$T/rd.txt" || fail "offload-read flags: $(cat "$T/rd.txt")"
tok=$(token_of <"$T/rd.txt")
[[ $tok =~ ^4f445846[0-9a-f]{128}$ ]] || fail "token '$tok' is not an odxfs v1 token"
"$ODXCTL" offload-write "$M/restore.raw" 0 16M "$tok" >"$T/wr.txt" || fail "offload-write"
grep -qx "length written: $SIZE" "$T/wr.txt" || fail "offload-write: $(cat "$T/wr.txt")"
check_copy "$M/restore.raw" "$B/restore.raw" "$T/disk.raw" "$L" "$SIZE"
# Applied again, in part, at a transfer offset (a token may be used many
# times while it lives).
"$ODXCTL" offload-write "$M/part.raw" 1M 3M "$tok" --transfer-offset 5M >/dev/null ||
	fail "offload-write --transfer-offset"
check_copy "$M/part.raw" "$B/part.raw" "$T/disk.raw" "$L" $((4 << 20)) --copy $((5 << 20)):$((1 << 20)):$((3 << 20))
# A compressed source, and an applied token read from a file's middle.
tokz=$("$ODXCTL" offload-read "$M/zlib.data" 1M 2M | token_of)
"$ODXCTL" offload-write "$M/z.raw" 0 2M "$tokz" >/dev/null || fail "offload-write zlib token"
check_copy "$M/z.raw" "$B/z.raw" "$T/disk.raw" "$L" $((2 << 20)) --copy $((1 << 20)):0:$((2 << 20))

# A reader holding the destination open with its pages cached sees the
# bytes of an offload write made by another process (the daemon drops the
# kernel's cached pages of the range before replying).
head -c 4M /dev/urandom >"$M/cached.raw"
python3 - "$M/cached.raw" "$ODXCTL" "$tokz" "$T/disk.raw" <<'PY' || fail "stale pages after an offload write"
import os, subprocess, sys
path, odxctl, tok, ref = sys.argv[1:]
fd = os.open(path, os.O_RDONLY)
before = os.pread(fd, 1 << 20, 1 << 20)           # cached now
subprocess.run([odxctl, "offload-write", path, "1M", "1M", tok], check=True,
               stdout=subprocess.DEVNULL)
after = os.pread(fd, 1 << 20, 1 << 20)
with open(ref, "rb") as f:
    f.seek(1 << 20)
    want = f.read(1 << 20)                            # the token's first MiB
if before == want:
    sys.exit("test is void: the old and new bytes are the same")
if after != want:
    sys.exit("the open descriptor still reads the old bytes")
PY

# Time to live: the mount's (2.5 s here), and --ttl.
sleep 3
odxctl_fails 'expired' offload-write "$M/late.raw" 0 1M "$tok"
t1=$("$ODXCTL" offload-read --ttl 300ms "$M/disk.data" 0 1M | token_of)
sleep 0.6
odxctl_fails 'expired' offload-write "$M/late.raw" 0 1M "$t1"
t2=$("$ODXCTL" offload-read --ttl 1m "$M/disk.data" 0 1M | token_of)
sleep 3
"$ODXCTL" offload-write "$M/late.raw" 0 1M "$t2" >/dev/null || fail "--ttl 1m token expired after 3 s"

# Malformed: a reserved type; bad padding.  Unknown: a forged key.
odxctl_fails 'malformed' offload-write "$M/x.raw" 0 1M ffff000200000000
odxctl_fails 'malformed' offload-write "$M/x.raw" 0 1M "${t2}01"
forged=${t2:0:60}$(printf '%s' "${t2:60:2}" | tr 0-9a-f 1-9a-f0)${t2:62}
odxctl_fails 'unknown' offload-write "$M/x.raw" 0 1M "$forged"
# Another mount's token.
odxctl_fails 'another mount' offload-write "$T/mnt2/x.raw" 0 1M "$t2"
# Transfer offset at the token's end.
odxctl_fails 'transfer offset' offload-write "$M/x.raw" 0 1M "$t2" --transfer-offset 1M
# Destination read-only: a stream image.
odxctl_fails 'read-only' offload-write "$M/zlib.data" 0 1M "$t2"
odxctl_fails 'read-only' copy "$M/src.raw" "$M/zlib.data"
xfs_io -c "copy_range -l 4096 $M/src.raw" "$M/zlib.data" 2>"$T/err.txt" &&
	fail "copy_range into a stream image succeeded"
grep -q 'Read-only file system' "$T/err.txt" || fail "copy_range into a stream: $(cat "$T/err.txt")"
# A descriptor not open for writing.
[ "$(ioctl write "$M/restore.raw" r "$t2")" = EBADF ] || fail "offload write on a read-only descriptor"
[ "$(ioctl write "$M/restore.raw" w "$t2")" = OK ] || fail "offload write on a write-only descriptor"
[ "$(ioctl badsize "$M/restore.raw" rw "$t2")" = EINVAL ] || fail "wrong size field"
[ "$(ioctl unknown "$M/restore.raw" r)" = ENOTTY ] || fail "unknown ioctl"
# Overlapping ranges of one file.
t3=$("$ODXCTL" offload-read "$M/src.raw" 0 2M | token_of)
odxctl_fails 'overlap' offload-write "$M/src.raw" 1M 2M "$t3"
"$ODXCTL" offload-write "$M/src.raw" 2M 2M "$t3" >/dev/null || fail "offload-write to the same file, disjoint"
cmp -n 2M "$B/src.raw" <(tail -c +2097153 "$B/src.raw") || fail "copy inside one file"
# Invalidated: the raw source range written through the mount.  A write
# elsewhere in the file leaves the token alone.
t4=$("$ODXCTL" offload-read "$M/src.raw" 0 1M | token_of)
dd if=/dev/zero of="$M/src.raw" bs=4096 seek=700 count=1 conv=notrunc status=none
"$ODXCTL" offload-write "$M/inv.raw" 0 1M "$t4" >/dev/null || fail "token invalidated by a write outside its range"
dd if=/dev/zero of="$M/src.raw" bs=4096 seek=100 count=1 conv=notrunc status=none
odxctl_fails 'invalidated' offload-write "$M/inv.raw" 0 1M "$t4"
# open(O_TRUNC) through the mount empties the source: its tokens are void.
cp "$B/src.raw" "$B/trunc.raw"
t6=$("$ODXCTL" offload-read "$M/trunc.raw" 0 1M | token_of)
: >"$M/trunc.raw"
odxctl_fails 'invalidated' offload-write "$M/inv.raw" 0 1M "$t6"
# Released: unknown afterwards.  The well-known zero token needs no read.
t5=$("$ODXCTL" offload-read "$M/disk.data" 0 1M | token_of)
[ "$(ioctl release "$M" r "$t5")" = OK ] || fail "release on the mount root"
odxctl_fails 'unknown' offload-write "$M/x.raw" 0 1M "$t5"
"$ODXCTL" offload-write "$M/inv.raw" 4096 1M ffff000100000000 >/dev/null || fail "zero token"
xfs_io -r -c "seek -a -r 0" "$B/inv.raw" >"$T/seek.txt"
grep -qE '^HOLE[[:space:]]+4096$' "$T/seek.txt" || fail "zero token left no hole: $(cat "$T/seek.txt")"
# Past the end of the file: FILE_TOO_SMALL, no token.
"$ODXCTL" offload-read "$M/disk.data" 16M 1M >"$T/rd.txt" || fail "offload-read past the end"
grep -qx 'flags: 0x8 (FILE_TOO_SMALL)' "$T/rd.txt" && grep -qx 'token: none' "$T/rd.txt" ||
	fail "offload-read past the end: $(cat "$T/rd.txt")"
# Not in an odxfs mount.
odxctl_fails 'not a file in an odxfs mount' stats "$T"

# Counters, from the root and from a file.
"$ODXCTL" stats "$M" >"$T/stats.txt" || fail "odxctl stats"
"$ODXCTL" stats --json "$M/disk.data" >"$T/stats.json" || fail "odxctl stats --json on a file"
python3 - "$T/stats.json" <<'PY' || fail "counters: $(cat "$T/stats.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["tokensIssued"] >= 7, s
assert s["tokensUsed"] >= 7, s
assert s["tokensExpired"] >= 2, s
assert s["tokensRejected"] >= 8, s
assert s["tokensReleased"] >= 1, s
assert s["tokensInvalidated"] >= 1, s
assert s["bytesKernel"] > 0 and s["bytesBuffered"] > 0 and s["bytesHoles"] > 0, s
assert s["tokensLive"] >= 1 and s["tokenMemory"] > 0, s
PY
grep -q '^tokens expired  *[1-9]' "$T/stats.txt" || fail "odxctl stats text: $(cat "$T/stats.txt")"
odxfs_umount "$T/mnt2"
odxfs_umount "$M"

# Caps: max_tokens=2 refuses a third token (ENFILE), and a copy_file_range
# meanwhile is declined, so the kernel copies it: same bytes.
odxfs_mount "$B" "$M" -o max_tokens=2,token_memory=64K
"$ODXCTL" offload-read --ttl 1m "$M/disk.data" 0 1M >/dev/null || fail "first token"
"$ODXCTL" offload-read --ttl 1m "$M/disk.data" 1M 1M >/dev/null || fail "second token"
odxctl_fails 'too many' offload-read "$M/disk.data" 2M 1M
cp "$M/src.raw" "$M/capped.raw" || fail "cp while the token cap is reached"
same_bytes "$B/capped.raw" "$B/src.raw"
odxfs_umount "$M"
# token_memory: a token record over many extents does not fit in 64K.
make_image many --size 64M --extents 8000 --seed tokmem
mkstream stream --compress none --layout "$T/many.raw.layout.json" "$T/many.raw" \
	"$B/many.data" >/dev/null
odxfs_mount "$B" "$M" -o token_memory=64K
odxctl_fails 'memory' offload-read "$M/many.data" 0 64M
$CC cfr "$M/many.data" "$M/many.raw" >/dev/null || fail "copy while tokens do not fit"
same_bytes "$B/many.raw" "$T/many.raw"
pass
