#!/bin/bash
# More files than the daemon may hold descriptors for: every inode the
# kernel has looked up costs the daemon an O_PATH descriptor, and the
# kernel forgets inodes only when asked or short of memory.  With
# -o max_inodes=1500 and a descriptor limit of 2048 (soft and hard, lowered
# in this shell so the daemon inherits it; a daemon with CAP_SYS_RESOURCE
# raises it again, and max_inodes still applies), `ls -lR` of 8,000 streams
# in 8 directories and then reading every one must work without EMFILE and
# give every stream's own bytes, while the daemon's descriptors stay near
# max_inodes (it asks the kernel to forget the least recently used inodes,
# src/fuse/reclaim.c).
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3 ls

DIRS=8 PER=1000
mkdir -p "$T/back"
python3 - "$T/back" "$DIRS" "$PER" <<'PY'
import json, os, sys
top, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def hdr(k, s, l):
    return b"%s %016x %016x\r\n" % (k, s, l)
for d in range(dirs):
    os.makedirs(f"{top}/d{d}")
    for i in range(per):
        data = (b"%08d" % (d * per + i)) * 64
        meta = json.dumps({"virtualSize": 4096, "dataSize": len(data),
                           "streamVersion": 2, "compressed": False}).encode()
        with open(f"{top}/d{d}/s{i}.data", "wb") as f:
            f.write(hdr(b"meta", 0, len(meta)) + meta + b"\r\n" + hdr(b"data", 0, len(data))
                    + data + b"\r\n" + hdr(b"stop", 0, 0))
PY
ulimit -n 2048
odxfs_mount "$T/back" "$T/mnt" -o max_inodes=1500
pid=${_pids[0]}
ls -lR "$T/mnt" >"$T/ls.out" 2>"$T/ls.err" || fail "ls -lR failed: $(head -3 "$T/ls.err")"
n=$(grep -c '\.data$' "$T/ls.out")
[ "$n" = $((DIRS * PER)) ] || fail "ls -lR listed $n streams, expected $((DIRS * PER))"
grep '\.data$' "$T/ls.out" | awk '$5 != 4096 {bad++} END {exit bad > 0}' ||
	fail "a stream listed with a size other than its image's 4096"
after_ls=$(ls /proc/"$pid"/fd | wc -l)
python3 - "$T/mnt" "$DIRS" "$PER" <<'PY' || fail "reading every stream failed"
import sys
top, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad = 0
for d in range(dirs):
    for i in range(per):
        p = f"{top}/d{d}/s{i}.data"
        try:
            with open(p, "rb") as f:
                got = f.read(4096)
        except OSError as e:
            bad += 1
            if bad <= 3:
                print(f"{p}: {e}", file=sys.stderr)
            continue
        want = (b"%08d" % (d * per + i)) * 64  # the data frame, then unmapped zeros
        if got != want + bytes(4096 - len(want)):
            bad += 1
            if bad <= 3:
                print(f"{p}: wrong bytes", file=sys.stderr)
sys.exit(bad > 0)
PY
after_read=$(ls /proc/"$pid"/fd | wc -l)
echo "descriptors: $after_ls after ls -lR, $after_read after reading all $((DIRS * PER))" >&2
# max_inodes plus a margin for what a round takes to be forgotten (rounds
# are 100 ms apart) and the daemon's own descriptors
[ "$after_read" -le 1800 ] || fail "the daemon holds $after_read descriptors (max_inodes 1500)"
daemon_alive "$T/mnt"
odxfs_umount "$T/mnt"
pass
