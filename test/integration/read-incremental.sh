#!/bin/bash
# An incremental stream standing alone (-o chain=off: unchanged ranges read
# as zeros and are holes; by default, with its parent missing, it is not
# served at all), and .partial streams cut short after a frame and inside a
# payload: served up to the last complete frame, with a warning (never
# chain members).
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 xfs_io

make_image disk --size 32M --extents 64 --seed incr
mkdir -p "$T/back"
changed='[[0,65536],[1048576,300000],[20971520,4096],[33550336,4096]]'
echo "$changed" >"$T/changed.json"
mkstream stream --incremental --changed "$T/changed.json" "$T/disk.raw" "$T/back/sda.inc.cp2.data" >/dev/null
mkstream stream --incremental --compress lz4 --changed "$T/changed.json" "$T/disk.raw" "$T/back/sda.inc-lz4.cp2.data" >/dev/null
# Expected: the changed ranges of disk.raw, zeros elsewhere.
python3 - "$T/disk.raw" "$T/incr.expect" "$changed" <<'PY'
import json, sys
src, dst, ch = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with open(src, "rb") as f, open(dst, "wb") as g:
    g.truncate(f.seek(0, 2))
    for off, n in ch:
        f.seek(off); g.seek(off); g.write(f.read(n))
PY
python3 - "$T/incr.layout" "$changed" 33554432 <<'PY'
import json, sys
out, ch, size = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
lay, pos = [], 0
for off, n in sorted(ch):
    if off > pos: lay.append({"offset": pos, "length": off - pos, "kind": "zero"})
    lay.append({"offset": off, "length": n, "kind": "data"}); pos = off + n
if pos < size: lay.append({"offset": pos, "length": size - pos, "kind": "zero"})
json.dump(lay, open(out, "w"))
PY

mkstream stream --layout "$T/disk.raw.layout.json" "$T/disk.raw" "$T/full.data" >/dev/null
mkstream partial --cut-frames 20 "$T/full.data" "$T/back/sda.full.data.partial" \
	--expect "$T/cut.expect" >/dev/null
mkstream stream --compress zlib --layout "$T/disk.raw.layout.json" "$T/disk.raw" "$T/full-zlib.data" >/dev/null
mkstream partial --cut-frames 31 --mid-payload "$T/full-zlib.data" "$T/back/sda.zlib.data.partial" \
	--expect "$T/cut-zlib.expect" >/dev/null

must_log 'sda\.full\.data\.partial: offset [0-9]+: .*served in part'
must_log 'sda\.zlib\.data\.partial: offset [0-9]+: .*served in part'
odxfs_mount "$T/back" "$T/mnt" -o chain=off
for s in sda.inc.cp2.data sda.inc-lz4.cp2.data; do
	f=$T/mnt/$s
	[ "$(sha "$f")" = "$(sha "$T/incr.expect")" ] || fail "$f: sha256 differs"
	xfs_io -r -c "seek -a -r 0" "$f" >"$T/seek-$s.txt" || fail "xfs_io seek"
	$CHECK holes "$T/seek-$s.txt" "$T/incr.layout" || fail "$f: holes"
done
same_bytes "$T/mnt/sda.full.data.partial" "$T/cut.expect"
same_bytes "$T/mnt/sda.zlib.data.partial" "$T/cut-zlib.expect"
odxfs_umount "$T/mnt"

# By default an incremental is the disk at its checkpoint: with no stream
# making its parent checkpoint it fails to open, naming the checkpoint.
must_log 'sda\.inc\.cp2\.data: not served as the disk at its checkpoint: its parent checkpoint "virtnbdbackup\.0" .*is in no stream'
expect_log 'sda\.inc-lz4\.cp2\.data: not served as the disk at its checkpoint'
must_log 'sda\.full\.data\.partial: offset [0-9]+: .*served in part'
odxfs_mount "$T/back" "$T/mnt2"
expect_errno EIO "open(\"$T/mnt2/sda.inc.cp2.data\", \"rb\").read(1)"
same_bytes "$T/mnt2/sda.full.data.partial" "$T/cut.expect"
same_bytes "$T/mnt2/sda.zlib.data.partial" "$T/cut-zlib.expect"
pass
