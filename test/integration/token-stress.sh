#!/bin/bash
# The daemon's token table under concurrent use: several processes, two
# threads each, for a bounded time, issue offload reads with 1 to 200 ms
# times to live (so tokens expire and are swept while others use them),
# apply tokens with offload writes (their own and their sibling thread's),
# release them, copy with copy_file_range inside the mount, and write the
# raw source through the mount (invalidating tokens on it).  Every call
# must succeed or fail with an errno its situation allows; every offload
# write of a stream source must leave the stream's bytes; the daemon must
# survive, exit 0 at unmount and log nothing unexpected.
#
# Under the ThreadSanitizer build (test/run-all.sh --tsan) the daemon's
# reports go to its stderr, which is the log lib.sh checks, so a data race
# in the daemon fails this test.  The bytes are checked in the backing
# directory, not read back through the mount: libfuse sends read replies
# with splice(2), which ThreadSanitizer does not intercept, so it cannot
# see that the kernel orders a read's reply before the release of the
# file, and would report every read followed by a close (whatever the
# daemon does); this test is about the token table.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3
odx_ioctl_setup

SECONDS_RUN=${ODXFS_STRESS_SECONDS:-5}
PROCS=4

# A daemon built with ThreadSanitizer must report where lib.sh looks.
if ldd "$(command -v "$ODXFS")" 2>/dev/null | grep -q libtsan; then
	case "${TSAN_OPTIONS:-}" in
	*log_path*) fail "TSAN_OPTIONS sets log_path: reports would not reach the daemon log" ;;
	esac
	log "ThreadSanitizer daemon (TSAN_OPTIONS=${TSAN_OPTIONS:-})"
	SECONDS_RUN=${ODXFS_STRESS_SECONDS:-8}
fi

B=$T/back
M=$T/mnt
mkdir -p "$B"
make_image disk --size 8M --extents 24 --seed stress
mkstream stream --compress zlib --layout "$T/disk.raw.layout.json" "$T/disk.raw" \
	"$B/disk.data" >/dev/null
head -c 2M /dev/urandom >"$B/src.raw"
# A small count cap, so that the caps are reached too.
odxfs_mount "$B" "$M" -o max_tokens=64

python3 - "$M" "$B" "$T/disk.raw" "$SECONDS_RUN" "$PROCS" <<'PY' || fail "token stress"
import errno, os, random, sys, threading, time
import odx_ioctl as ox

mnt, back, ref_path = sys.argv[1:4]
run_s, procs = float(sys.argv[4]), int(sys.argv[5])
ref = open(ref_path, "rb").read()
SRC_SIZE = os.path.getsize(os.path.join(mnt, "src.raw"))
CAPS = {errno.ENFILE, errno.ENOBUFS, errno.EMFILE, errno.EDQUOT}
GONE = {errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED}


def worker(n, deadline, tokens, lock, counts, failures):
    rnd = random.Random(n)
    src = {True: os.open(os.path.join(mnt, "disk.data"), os.O_RDONLY),
           False: os.open(os.path.join(mnt, "src.raw"), os.O_RDWR)}
    name = f"dst-{os.getpid()}-{n}.raw"
    dst = os.open(os.path.join(mnt, name), os.O_RDWR | os.O_CREAT, 0o644)
    dst_back = os.open(os.path.join(back, name), os.O_RDONLY)   # to check bytes

    def bump(k):
        counts[k] = counts.get(k, 0) + 1

    try:
        while time.monotonic() < deadline and not failures:
            op = rnd.randrange(16)
            if op < 6:                               # offload read
                stream = rnd.random() < 0.5
                size = len(ref) if stream else SRC_SIZE
                off = rnd.randrange(size // 4096) * 4096
                try:
                    r = ox.offload_read(src[stream], off, rnd.randrange(1, 256 << 10),
                                        ttl_ms=rnd.choice((1, 1, 2, 5, 50, 200)))
                except OSError as e:
                    if e.errno not in CAPS:
                        raise
                    bump("capped")
                    continue
                bump("read")
                with lock:
                    tokens.append((stream, off, r["transfer_length"], r["token"]))
                    del tokens[:-16]
            elif op < 11:                            # offload write
                with lock:
                    t = rnd.choice(tokens) if tokens else None
                if not t:
                    continue
                stream, off, length, tok = t
                try:
                    w = ox.offload_write(dst, off, length, tok)["length_written"]
                except OSError as e:
                    if e.errno not in GONE:
                        raise
                    bump("refused")
                    continue
                bump("written")
                if w != length:
                    failures.append(f"offload write: {w} of {length} bytes")
                elif stream and os.pread(dst_back, w, off) != ref[off:off + w]:
                    failures.append(f"offload write at {off}: wrong bytes")
            elif op < 14:                            # release
                with lock:
                    t = rnd.choice(tokens) if tokens else None
                if not t:
                    continue
                try:
                    ox.release(dst, t[3])
                    bump("released")
                except OSError as e:
                    if e.errno not in GONE:
                        raise
                    bump("refused")
            elif op < 15:                            # write the raw source
                off = rnd.randrange(SRC_SIZE // 4096) * 4096
                os.pwrite(src[False], os.urandom(4096), off)
                bump("source-written")
            else:                                    # copy_file_range
                off = rnd.randrange(len(ref) // 4096) * 4096
                n_ = min(1 << 20, len(ref) - off)
                os.lseek(src[True], off, os.SEEK_SET)
                os.lseek(dst, off, os.SEEK_SET)
                done = 0
                while done < n_:
                    k = os.copy_file_range(src[True], dst, n_ - done)
                    if k == 0:
                        break
                    done += k
                if os.pread(dst_back, n_, off) != ref[off:off + n_]:
                    failures.append(f"copy_file_range at {off}: wrong bytes")
                bump("copied")
    except OSError as e:
        failures.append(f"thread {n}: {errno.errorcode.get(e.errno, e.errno)}: {e}")
    finally:
        for fd in (*src.values(), dst, dst_back):
            os.close(fd)
        os.unlink(os.path.join(mnt, name))


def process(p, deadline):
    tokens, lock, failures = [], threading.Lock(), []
    counts = [{}, {}]
    ts = [threading.Thread(target=worker, args=(2 * p + i, deadline, tokens, lock,
                                                  counts[i], failures)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for f in failures:
        print(f"process {p}: {f}", file=sys.stderr)
    total = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    print(" ".join(f"{k}={v}" for k, v in sorted(total.items())))
    sys.stdout.flush()
    os._exit(1 if failures else 0)


deadline = time.monotonic() + run_s
pids = []
for p in range(procs):
    pid = os.fork()
    if pid == 0:
        process(p, deadline)
    pids.append(pid)
bad = 0
for pid in pids:
    _, status = os.waitpid(pid, 0)
    bad += status != 0
fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
st = ox.stats(fd)
os.close(fd)
print("daemon: " + " ".join(f"{k}={st[k]}" for k in (
    "tokens_issued", "tokens_used", "tokens_released", "tokens_expired",
    "tokens_invalidated", "tokens_rejected", "tokens_live")))
for k in ("tokens_issued", "tokens_used", "tokens_released", "tokens_expired",
          "tokens_invalidated", "tokens_rejected"):
    if st[k] == 0:
        print(f"no {k}: the stress did not reach every path", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
daemon_alive "$M"
# Still serving: a whole copy after the storm.
python3 - "$M" <<'PY' || fail "offload copy after the stress"
import os, sys
import odx_ioctl as ox
src = os.open(os.path.join(sys.argv[1], "disk.data"), os.O_RDONLY)
dst = os.open(os.path.join(sys.argv[1], "after.raw"), os.O_RDWR | os.O_CREAT, 0o644)
r = ox.offload_read(src, 0, 1 << 30, ttl_ms=60000)
assert ox.offload_write(dst, 0, r["transfer_length"], r["token"])["length_written"] == \
    r["transfer_length"] == os.fstat(src).st_size
ox.release(src, r["token"])
PY
same_bytes "$B/after.raw" "$T/disk.raw"
pass
