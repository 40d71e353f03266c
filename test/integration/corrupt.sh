#!/bin/bash
# Damaged streams served with -o salvage: a corrupt compressed chunk, and
# a bad frame header in the middle.  Reads that touch the damage fail with
# EIO and are logged with file and offset; every other read, and other
# files, keep working; the daemon stays up.  (The default, strict, policy:
# damage-policy.sh.)
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3

make_image disk --size 16M --extents 32 --seed corrupt
L=$T/disk.raw.layout.json
mkdir -p "$T/back"
mkstream stream --compress lz4 --layout "$L" "$T/disk.raw" "$T/lz4.data" >/dev/null
mkstream corrupt --what chunk --frame 6 "$T/lz4.data" "$T/back/chunk.data" >"$T/chunk.json"
mkstream stream --layout "$L" "$T/disk.raw" "$T/none.data" >/dev/null
mkstream corrupt --what header --frame 10 "$T/none.data" "$T/back/header.data" >"$T/header.json"
cp "$T/none.data" "$T/back/good.data"
# Whole despite a problem: a wrong dataSize is logged, every byte served.
mkstream corrupt --what datasize "$T/none.data" "$T/back/datasize.data" >/dev/null

# Frame 6 of the lz4 stream (frames alternate data/zero from offset 0:
# the fourth data region of the layout).
read -r bad_off bad_len < <(python3 -c '
import json, sys
d = [r for r in json.load(open(sys.argv[1])) if r["kind"] == "data"]
print(d[3]["offset"], d[3]["length"])' "$L")

must_log 'chunk\.data: .*offset [0-9]+'
must_log 'header\.data: .*served in part'
must_log 'header\.data: offset [0-9]+: image bytes lost to corruption'
must_log 'datasize\.data: offset [0-9]+: meta dataSize is .*; served whole'
odxfs_mount "$T/back" "$T/mnt" -o salvage
python3 - "$T/mnt/chunk.data" "$T/disk.raw" "$bad_off" "$bad_len" <<'PY' || fail "corrupt chunk"
import errno, os, sys
img, raw, off, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(img, os.O_RDONLY | os.O_DIRECT) if False else os.open(img, os.O_RDONLY)
exp = open(raw, "rb")
for o in (off, off + n // 2, off + n - 4096):
    try:
        os.pread(fd, 4096, o)
        sys.exit(f"read at {o} in the corrupt chunk succeeded")
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit(f"read at {o}: {e}, expected EIO")
# Ranges away from it read right.
for o in (0, off - 65536 if off >= 65536 else 0, off + n + 65536):
    o -= o % 4096
    exp.seek(o)
    if os.pread(fd, 4096, o) != exp.read(4096):
        sys.exit(f"read at {o} away from the damage is wrong")
PY
daemon_alive "$T/mnt"

# Bad header mid-stream: frames before it are served, the rest is EIO.
python3 - "$T/mnt/header.data" "$T/disk.raw" "$L" <<'PY' || fail "bad header"
import errno, json, os, sys
img, raw, lay = sys.argv[1:4]
frames = sorted(json.load(open(lay)), key=lambda r: r["offset"])
frames = [r for r in frames if r["length"]]
fd = os.open(img, os.O_RDONLY)
exp = open(raw, "rb")
first_bad = frames[10]["offset"]
o = 0
while o + 4096 <= first_bad:
    exp.seek(o)
    if os.pread(fd, 4096, o) != exp.read(4096):
        sys.exit(f"read at {o}, before the bad header, is wrong")
    o += 4096 * 17
# Data regions after the bad header must not come back as wrong bytes.
for r in frames[10:]:
    if r["kind"] != "data":
        continue
    try:
        b = os.pread(fd, 4096, r["offset"])
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit(f"read at {r['offset']}: {e}, expected EIO")
        continue
    exp.seek(r["offset"])
    if b != exp.read(4096):
        sys.exit(f"read at {r['offset']} after the bad header returned wrong bytes")
PY
daemon_alive "$T/mnt"

[ "$(sha "$T/mnt/good.data")" = "$(sha "$T/disk.raw")" ] || fail "an intact stream beside them reads wrong"
[ "$(sha "$T/mnt/datasize.data")" = "$(sha "$T/disk.raw")" ] || fail "a stream with a wrong dataSize reads wrong"
pass
