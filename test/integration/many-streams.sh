#!/bin/bash
# Many streams under a low descriptor limit and a small index cache
# (-o index_cache_entries=256,index_cache_size=1M): every stream lists with
# its image size, reads right, reads right again after its index was
# evicted (indexed anew), stats right without being indexed again; the
# daemon's descriptors on stream files stay within the idle budget
# (index_cache_fds, 64) plus the handles open, and its memory within a
# bound.  Then, on a mount whose idle streams all keep a descriptor, the
# daemon's limit is lowered under it (prlimit): lookups and opens that hit
# EMFILE make it close the idle streams' descriptors and succeed.
#
# The descriptor limit: the daemon raises its limits to fs.nr_open when it
# has CAP_SYS_RESOURCE, so it is started under `ulimit -n 1024` (soft and
# hard).  Without that capability (a container) it can only raise its soft
# limit to the hard one, and every inode the kernel knows holds an O_PATH
# descriptor (as in passthrough_ll), so the hard limit bounds how many
# files one `ls -lR` may show: then the soft limit is 1024, the hard one is
# left, and the streams number the hard limit less 1500 (at most 20,000).
# Either way the old daemon (three descriptors per cached stream) ran out
# at a third of the limit.
#
# MANY_STREAMS=N overrides the count.  Figures (times, RSS, descriptors)
# are printed on stderr.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 prlimit ls

cap_resource=$(python3 -c 'import sys
for l in open("/proc/self/status"):
    if l.startswith("CapEff:"):
        print(1 if int(l.split()[1], 16) >> 24 & 1 else 0)')
hard=$(ulimit -Hn)
if [ "$cap_resource" = 1 ]; then
	n=${MANY_STREAMS:-20000}
	ulimit -Hn 1024
	ulimit -Sn 1024
else
	[ "$hard" = unlimited ] && hard=1048576
	n=$((hard - 1500))
	[ "$n" -gt 20000 ] && n=20000
	n=${MANY_STREAMS:-$n}
	[ "$n" -ge 1000 ] || skip "hard descriptor limit $hard leaves room for too few streams"
	ulimit -Sn 1024
fi
log "$n streams, descriptor limit $(ulimit -Sn) (hard $(ulimit -Hn)), CAP_SYS_RESOURCE: $cap_resource"

# gen.py DIR N: N tiny uncompressed streams in DIR/dNN/sNNNNN.data, 500 a
# directory: meta, one data frame, stop.  Stream k: a disk of 64 KiB +
# (k % 16) * 4 KiB with 512 + k % 7 bytes of data at 0 (at 4096 when k % 10
# is 0, so the first 512 bytes are a hole).  check.py computes the same.
cat >"$T/streams.py" <<'PY'
import json, os, struct
PER_DIR = 500
def name(k):
    return "d%02d/s%05d.data" % (k // PER_DIR, k)
def layout(k):
    vsize = 65536 + (k % 16) * 4096
    off = 4096 if k % 10 == 0 else 0
    data = (struct.pack("<I", k) * 200)[: 512 + k % 7]
    return vsize, off, data
def first512(k):
    vsize, off, data = layout(k)
    return data[:512] if off == 0 else bytes(512)
def write(top, k):
    vsize, off, data = layout(k)
    meta = json.dumps({"virtualSize": vsize, "dataSize": len(data), "date": "2026-11-29",
                       "diskName": "sda", "diskFormat": "qcow2", "checkpointName": "virtnbdbackup.0",
                       "compressed": False, "compressionMethod": "lz4",
                       "parentCheckpoint": False, "incremental": False,
                       "streamVersion": 2}).encode()
    with open(os.path.join(top, name(k)), "wb") as f:
        f.write(b"meta %016x %016x\r\n" % (0, len(meta)) + meta + b"\r\n" +
                b"data %016x %016x\r\n" % (off, len(data)) + data + b"\r\n" +
                b"stop %016x %016x\r\n" % (0, 0))
PY
PYTHONPATH=$T python3 - "$T/back" "$n" <<'PY' || fail "cannot generate the streams"
import os, sys, streams
top, n = sys.argv[1], int(sys.argv[2])
for d in range((n + streams.PER_DIR - 1) // streams.PER_DIR):
    os.makedirs(os.path.join(top, "d%02d" % d))
for k in range(n):
    streams.write(top, k)
PY
# A few lz4 streams (mkstream's writer) beside them.
make_image disk --size 1M --extents 6 --seed many
mkdir -p "$T/back/lz4"
mkstream stream --compress lz4 --chunk-size 64K "$T/disk.raw" "$T/lz4.data" >/dev/null
for i in $(seq 0 19); do cp "$T/lz4.data" "$T/back/lz4/l$i.data"; done

# check.py MNT N PID PHASE...: the checks, run against the mount and the
# daemon PID; prints figures, exits non-zero on the first wrong result.
cat >"$T/check.py" <<'PY'
import errno, os, random, stat, sys, time, streams
mnt, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raw = open(os.environ["RAW"], "rb").read()
budget = int(os.environ["BUDGET"])
O_PATH = 0o10000000
peak = {"fds": 0, "rss": 0, "sampling": 0.0}

def stream_fds():
    """Descriptors of the daemon on regular files that are not O_PATH."""
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            st = os.stat("/proc/%d/fd/%s" % (pid, fd))
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue  # closed meanwhile
        if stat.S_ISREG(st.st_mode) and not flags & O_PATH and st.st_size < 100000:
            count += 1
    return count

def rss():
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) * 1024

def sample():
    t = time.monotonic()
    peak["fds"] = max(peak["fds"], stream_fds())
    peak["rss"] = max(peak["rss"], rss())
    if peak["fds"] > budget:
        sys.exit("the daemon has %d descriptors on stream files, budget %d" % (peak["fds"], budget))
    peak["sampling"] += time.monotonic() - t

def read512(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 512, 0)
    finally:
        os.close(fd)

def check_stream(k):
    got = read512(os.path.join(mnt, streams.name(k)))
    if got != streams.first512(k):
        sys.exit("%s: wrong first 512 bytes" % streams.name(k))

def check_lz4():
    for i in range(20):
        if read512(os.path.join(mnt, "lz4/l%d.data" % i)) != raw[:512]:
            sys.exit("lz4/l%d.data: wrong first 512 bytes" % i)

def check_stat(k):
    st = os.stat(os.path.join(mnt, streams.name(k)))
    vsize, off, data = streams.layout(k)
    if st.st_size != vsize or st.st_blocks != (len(data) + 511) // 512:
        sys.exit("%s: size %d, blocks %d; expected %d, %d" % (streams.name(k), st.st_size,
                 st.st_blocks, vsize, (len(data) + 511) // 512))

for phase in sys.argv[4:]:
    t0 = time.monotonic()
    peak["sampling"] = 0.0
    if phase == "read-all":
        check_lz4()
        for k in range(n):
            check_stream(k)
            if k % 2500 == 2499:
                sample()
        check_lz4()
    elif phase == "read-some":
        random.seed(9)
        for k in random.sample(range(n), min(n, 2000)):
            check_stream(k)
        check_lz4()
    elif phase == "stat-all":
        time.sleep(1.1)  # the kernel's cached attributes expire (1 s): ask the daemon
        t0 += 1.1
        for k in range(n):
            check_stat(k)
    elif phase.startswith("read-dir:"):
        d = int(phase.split(":")[1])
        for k in range(d * streams.PER_DIR, min(n, (d + 1) * streams.PER_DIR)):
            check_stream(k)
    t1 = time.monotonic() - peak["sampling"]
    sample()
    print("%s: %.1f s, peak %d descriptors on stream files, peak VmRSS %.1f MiB" %
          (phase, t1 - t0, peak["fds"], peak["rss"] / 2**20), file=sys.stderr)
print(peak["fds"], peak["rss"])
PY
check() { RAW=$T/disk.raw PYTHONPATH=$T python3 "$T/check.py" "$@"; }
daemon_pid() { echo "${_pids[$1]}"; }

# ---- the small cache ----
odxfs_mount "$T/back" "$T/mnt" -o index_cache_entries=256,index_cache_size=1M
pid=$(daemon_pid 0)
base_rss=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$pid/status")
t0=$(date +%s.%N)
ls -lR "$T/mnt" >"$T/ls.out" 2>"$T/ls.err" || fail "ls -lR failed: $(head -3 "$T/ls.err")"
t1=$(date +%s.%N)
listed=$(grep -c '\.data$' "$T/ls.out" || true)
[ "$listed" = $((n + 20)) ] || fail "ls -lR listed $listed streams, expected $((n + 20))"
log "ls -lR of $((n + 20)) streams: $(python3 -c "print('%.1f' % ($t1 - $t0))") s"
# Budget: the idle ones (64) and the few handles whose release the kernel
# sends after close(2) returned.
out=$(BUDGET=$((64 + 4)) check "$T/mnt" "$n" "$pid" read-all read-some stat-all) ||
	fail "many streams: $out"
read -r peak_fds peak_rss <<<"$out"
# Memory: what the daemon had after mounting, its inode table (an inode
# is some 240 bytes, allocator included: 512 allowed), the index cache
# (1M), a few 64K chunks of the lz4 streams, and 24 MiB for libfuse's
# request buffers and the worker threads' stacks and allocator arenas
# (each thread frees into its own arena; measured here: 10 to 18 MiB in
# all for 18,500 streams).  Unbounded, the index of every stream (some
# 1.7 KiB each for these) would stay: n * 1.7 KiB more, 30 MiB for 18,500
# streams.  Not checked under a sanitizer, whose shadow memory (and
# quarantine) swell RSS.
limit=$((base_rss + n * 512 + (25 << 20)))
case "$(ldd "$ODXFS" 2>/dev/null || true)" in
*libasan* | *libtsan*)
	log "VmRSS at most $((peak_rss >> 20)) MiB (sanitizer build: not checked)" ;;
*)
	[ "$peak_rss" -le "$limit" ] || fail "VmRSS $peak_rss bytes, above $limit" ;;
esac
log "descriptors on stream files at most $peak_fds, VmRSS at most $((peak_rss >> 20)) MiB (bound $((limit >> 20)) MiB, $((base_rss >> 20)) MiB after mounting)"
# The cache's own figures (odxctl stats): within its bounds, evicting.
stat_of() { "$ODXCTL" stats --json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
if [ -n "$ODXCTL" ]; then
	"$ODXCTL" stats "$T/mnt" | grep -E '^(index|kept)' >&2
	[ "$(stat_of "$T/mnt" indexEntries)" -le 256 ] || fail "more than 256 indexes kept"
	[ "$(stat_of "$T/mnt" indexBytes)" -le $((1 << 20)) ] || fail "the indexes kept use more than 1M"
	[ "$(stat_of "$T/mnt" indexEvictions)" -ge "$n" ] || fail "fewer evictions than streams"
	[ "$(stat_of "$T/mnt" indexSuspended)" -ge $((256 - 64 - 4)) ] ||
		fail "idle kept indexes beyond index_cache_fds keep their descriptor"
fi
daemon_alive "$T/mnt"
odxfs_umount "$T/mnt"

# ---- out of descriptors ----
# Every idle stream keeps its descriptor (index_cache_fds as large as the
# directory), then the daemon's limit is cut to what it has open plus a
# few: the streams of the next directory still open and read right.
odxfs_mount "$T/back" "$T/mnt2" -o index_cache_fds=100000
pid=$(daemon_pid 1)
out=$(BUDGET=100000 check "$T/mnt2" "$n" "$pid" read-dir:0) || fail "first directory: $out"
read -r held _ <<<"$out"
[ "$held" -ge 400 ] || fail "only $held stream descriptors kept with index_cache_fds=100000"
open_now=$(ls "/proc/$pid/fd" | wc -l)
prlimit --pid "$pid" --nofile=$((open_now + 8)):$((open_now + 8)) || fail "prlimit failed"
out=$(BUDGET=100000 check "$T/mnt2" "$n" "$pid" read-dir:1 read-dir:0) ||
	fail "after the limit was lowered: $out"
read -r peak_after _ <<<"$out"
now=$(BUDGET=100000 check "$T/mnt2" "$n" "$pid") || true
log "kept $held stream descriptors; limit cut to $((open_now + 8)); after reading 1000 more: $(echo "$now" | cut -d' ' -f1)"
if [ -n "$ODXCTL" ]; then
	[ "$(stat_of "$T/mnt2" indexSuspended)" -ge 400 ] ||
		fail "the idle streams did not close their descriptors when the daemon ran out"
fi
daemon_alive "$T/mnt2"
pass
