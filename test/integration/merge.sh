#!/bin/bash
# Stream destinations, odxctl merge and odxctl fold (odxfs(8), STREAM
# DESTINATIONS), on backup chains made by the independent test writer
# (test/tools/mkstream.py): a 64 MiB disk, a full with data and zeros (a
# frame of 34 MiB: chunked), four incrementals (one frame of exactly
# 32 MiB, one range the guest zeroed, one frame of 40 MiB) and a
# differential, as three chains (uncompressed, lz4, zlib), and a chain of
# mixed codecs whose disk grows to 96 MiB.
#
#   - every view (the full, each incremental, the differential) merged by
#     odxctl merge with --compress source, none and lz4: the new full equals
#     the view byte for byte and hole for hole through the mount, decodes
#     to the disk with the reference decoder, odxctl check is clean, its
#     meta is a full at the view's checkpoint (a differential's: its file
#     name), its .chksum is the Adler-32 of the file, its frames cover the
#     disk in order with chunks of 32 MiB but the last; the counters (and
#     the deltas of odxctl stats) are the bytes each way must take: plain
#     data into a plain stream in the kernel, whole compressed chunks still
#     visible in the view copied as they are (byte-identical in the new
#     file), the rest through the buffers;
#   - implicit: xfs_io copy_range and odxctl copy of a view into a new
#     .data file make a stream; half a copy leaves NAME.partial (the
#     close fails with EIO; odxctl check calls it torn; the mount shows
#     it as a stream, read-only);
#   - errors: an existing destination, NAME.partial in the way (EEXIST),
#     a second open of a stream being written (EBUSY);
#   - odxctl fold at checkpoint 2 of the lz4 chain: every later checkpoint
#     reads the same, folded files gone, the old full's mtime kept; and
#     the real virtnbdrestore restores the last checkpoint the same before
#     and after the fold.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 xfs_io cmp
[ -n "$ODXCTL" ] || skip "odxctl not built"
# Debian's python3 (python3-lz4; no version manager's shim to pay for on
# every call): the checkers import mkstream.py
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -c 'import lz4.frame' 2>/dev/null || skip "python3-lz4 missing"

B=$T/back
M=$T/mnt
mkdir -p "$B/out"
MKDIR=$(cd "$(dirname "$MKSTREAM")" && pwd)

# ---- the chains -------------------------------------------------------------
cat >"$T/gen.py" <<'PY'
import hashlib, json, os, random, shutil, subprocess, sys
T, MK = sys.argv[1], sys.argv[2]
B = T + "/back"
M = 1 << 20
SIZE = 64 * M
rnd = random.Random(20261130)

def fill(n):
    """Half random, half compressible (a random 4 KiB block repeated)."""
    if rnd.random() < 0.5:
        return rnd.randbytes(n)
    blk = rnd.randbytes(4096)
    return (blk * (n // 4096 + 1))[:n]

def write_state(src, dst, ranges, size=None, zeros=()):
    if src:
        shutil.copy(src, dst)
    with open(dst, "r+b" if src else "wb") as f:
        if size:
            f.truncate(size)
        for off, n in ranges:
            f.seek(off)
            f.write(bytes(n) if [off, n] in zeros else fill(n))

def ranges(k, size=SIZE):
    out = []
    for _ in range(k):
        ln = rnd.choice([512, 4096, 65536, 200000, 1 << 20])
        off = rnd.randrange(0, size - ln) // 512 * 512
        out.append([off, ln])
    out.sort()
    merged = []
    for o, n in out:
        if merged and o <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], o + n - merged[-1][0])
        else:
            merged.append([o, n])
    return merged

def add(rs, extra):
    """ranges rs plus extra ones, merged (extra are kept whole)."""
    out = sorted(rs + extra)
    merged = []
    for o, n in out:
        if merged and o <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], o + n - merged[-1][0])
        else:
            merged.append([o, n])
    return merged

# d0: the full's disk, its data regions by hand (64 KiB granularity)
data0 = [[0, 256 << 10], [1 * M, 34 * M + (100 << 10)]]
pos = 40 * M
while len(data0) < 18:
    ln = rnd.choice([64, 128, 320, 512, 1024]) << 10
    data0.append([pos, ln])
    pos += ln + (rnd.choice([64, 192, 512]) << 10)
assert pos < 60 * M
lay, p = [], 0
for o, n in data0:
    if o > p:
        lay.append({"offset": p, "length": o - p, "kind": "zero"})
    lay.append({"offset": o, "length": n, "kind": "data"})
    p = o + n
lay.append({"offset": p, "length": SIZE - p, "kind": "zero"})
json.dump(lay, open(T + "/d0.layout.json", "w"))
with open(T + "/d0.raw", "wb") as f:
    f.truncate(SIZE)
    for o, n in data0:
        f.seek(o)
        f.write(fill(n))

chg = {}
# inc1: scattered; inc2: one frame of exactly 32 MiB (chunked, one chunk)
# and a range the guest zeroed (a data frame of zeros)
chg["d1"] = ranges(12)
write_state(T + "/d0.raw", T + "/d1.raw", chg["d1"])
z2 = [46 * M, 1 * M]
chg["d2"] = add(ranges(10, 8 * M) + [[r[0] + 41 * M, r[1]] for r in ranges(4, 18 * M)],
                [[8 * M, 32 * M]])
chg["d2"] = [r for r in chg["d2"] if not (r[0] < z2[0] + z2[1] and z2[0] < r[0] + r[1])] + [z2]
chg["d2"].sort()
write_state(T + "/d1.raw", T + "/d2.raw", chg["d2"], zeros=[z2])
chg["da"] = ranges(8)
write_state(T + "/d2.raw", T + "/da.raw", chg["da"])
chg["d3"] = ranges(10)
write_state(T + "/d2.raw", T + "/d3.raw", chg["d3"])
# inc4: a frame of 40 MiB (chunks of 32 and 8 MiB) over most of the disk
chg["d4"] = add(ranges(6), [[20 * M, 40 * M]])
write_state(T + "/d3.raw", T + "/d4.raw", chg["d4"])
# the growing chain: full d0 (lz4), g1 (none), g2 (zlib, 96 MiB, data in
# the new tail), g3 (lz4)
chg["g1"] = ranges(10)
write_state(T + "/d0.raw", T + "/g1.raw", chg["g1"])
chg["g2"] = add(ranges(6, 96 * M), [[70 * M, 5 * M]])
write_state(T + "/g1.raw", T + "/g2.raw", chg["g2"], size=96 * M)
chg["g3"] = add(ranges(6, 96 * M), [[90 * M, 1 * M]])
write_state(T + "/g2.raw", T + "/g3.raw", chg["g3"])

def mk(*args):
    subprocess.run([sys.executable, MK] + list(args), check=True, stdout=subprocess.DEVNULL)

FULL = "sda.full.data"
def inc(n):
    return "sda.inc.virtnbdbackup.%d.data" % n
DIFF = "sda.diff.1700000001.data"
# name -> (state, parent state, checkpoint, parent checkpoint)
members = [
    (FULL, "d0", None, "virtnbdbackup.0", None),
    (inc(1), "d1", "d0", "virtnbdbackup.1", "virtnbdbackup.0"),
    (inc(2), "d2", "d1", "virtnbdbackup.2", "virtnbdbackup.1"),
    (DIFF, "da", "d2", "virtnbdbackup.3", "virtnbdbackup.2"),
    (inc(3), "d3", "d2", "virtnbdbackup.3", "virtnbdbackup.2"),
    (inc(4), "d4", "d3", "virtnbdbackup.4", "virtnbdbackup.3"),
]
chains = {FULL: [FULL], inc(1): [FULL, inc(1)], inc(2): [FULL, inc(1), inc(2)]}
chains[DIFF] = chains[inc(2)] + [DIFF]
chains[inc(3)] = chains[inc(2)] + [inc(3)]
chains[inc(4)] = chains[inc(3)] + [inc(4)]
T0 = 1700000000

def write_member(d, name, state, cp, parent, codec):
    path = "%s/%s/%s" % (B, d, name)
    common = ["--checkpoint", cp, "--compress", codec, "--extra-meta", "odxTest=" + name]
    if parent is None:
        mk("stream", "--layout", T + "/d0.layout.json", *common, T + "/d0.raw", path)
    else:
        json.dump(chg[state], open(T + "/" + state + ".changed.json", "w"))
        mk("stream", "--incremental", "--changed", T + "/" + state + ".changed.json",
           "--parent", parent, *common, T + "/" + state + ".raw", path)
    return path

views = []
def data_union(chain_ranges):
    out = []
    for a, b in sorted(chain_ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(8 << 20), b""):
            h.update(b)
    return h.hexdigest()

shas = {}
def state_sha(s):
    if s not in shas:
        shas[s] = sha(T + "/" + s + ".raw")
    return shas[s]

def own_ranges(name, state):
    return [[o, o + n] for o, n in (data0 if state == "d0" else chg[state])]

for codec in ("none", "lz4", "zlib"):
    os.makedirs(B + "/" + codec)
    for i, (name, state, pstate, cp, parent) in enumerate(members):
        p = write_member(codec, name, state, cp, parent, codec)
        os.utime(p, (T0 + 3600 * i, T0 + 3600 * i))
    for name, state, pstate, cp, parent in members:
        st = {n: s for n, s, _, _, _ in members}
        views.append({
            "dir": codec, "view": name, "state": state,
            "raw": T + "/" + state + ".raw", "sha": state_sha(state),
            "size": os.path.getsize(T + "/" + state + ".raw"),
            "data": data_union([r for m in chains[name] for r in own_ranges(m, st[m])]),
            "members": [[B + "/" + codec + "/" + m, codec] for m in chains[name]],
            "checkpoint": cp if name != DIFF else name[:-5],
            "own": name, "own_codec": codec,
            "own_level": {"none": 0, "lz4": 2, "zlib": 6}[codec],
        })

os.makedirs(B + "/grow")
gm = [(FULL, "d0", None, "virtnbdbackup.0", None, "lz4"),
      (inc(1), "g1", "d0", "virtnbdbackup.1", "virtnbdbackup.0", "none"),
      (inc(2), "g2", "g1", "virtnbdbackup.2", "virtnbdbackup.1", "zlib"),
      (inc(3), "g3", "g2", "virtnbdbackup.3", "virtnbdbackup.2", "lz4")]
for i, (name, state, pstate, cp, parent, codec) in enumerate(gm):
    write_member("grow", name, state, cp, parent, codec)
    chain = gm[:i + 1]
    views.append({
        "dir": "grow", "view": name, "state": state,
        "raw": T + "/" + state + ".raw", "sha": state_sha(state),
        "size": os.path.getsize(T + "/" + state + ".raw"),
        "data": data_union([r for m in chain for r in own_ranges(m[0], m[1])]),
        "members": [[B + "/grow/" + m[0], m[5]] for m in chain],
        "checkpoint": cp, "own": name, "own_codec": codec,
        "own_level": {"none": 0, "lz4": 2, "zlib": 6}[codec],
    })

# the chain to fold: a copy of the lz4 chain, files in mtime order with
# the differential last (virtnbdrestore --until applies files by mtime),
# and a vmconfig for virtnbdrestore
os.makedirs(B + "/fold")
order = [FULL, inc(1), inc(2), inc(3), inc(4), DIFF]
for i, name in enumerate(order):
    shutil.copy(B + "/lz4/" + name, B + "/fold/" + name)
    shutil.copy(B + "/lz4/" + name + ".chksum", B + "/fold/" + name + ".chksum")
    os.utime(B + "/fold/" + name, (T0 + 3600 * i, T0 + 3600 * i))
with open(B + "/fold/vmconfig.virtnbdbackup.0.xml", "w") as f:
    f.write("""<domain type='kvm'>
  <name>odxfs-merge</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/sda.qcow2'/>
      <target dev='sda' bus='sata'/>
    </disk>
  </devices>
</domain>
""")
for v in views:
    v["id"] = v["dir"] + "." + v["view"][:-5]
json.dump(views, open(T + "/views.json", "w"), indent=1)
PY
t0=$SECONDS
$PY "$T/gen.py" "$T" "$MKSTREAM" || fail "generating the chains"
log "chains generated in $((SECONDS - t0)) s"

# ---- the checker ---------------------------------------------------------------
cat >"$T/mh.py" <<'PY'
"""Checks of a new full stream against the view it was made from."""
import errno, json, os, re, subprocess, sys, zlib
sys.path.insert(0, os.environ["MKSTREAM_DIR"])
os.environ["MKSTREAM_NO_REEXEC"] = "1"
import mkstream

CHUNK = 32 << 20
problems = []

def bad(msg):
    problems.append(msg)
    print("mh.py: " + msg, file=sys.stderr)

def union(iv):
    out = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out

def subtract(a, b, cut):
    """[a, b) minus the sorted disjoint intervals cut."""
    out, p = [], a
    for s, e in cut:
        if e <= p or s >= b:
            continue
        if s > p:
            out.append([p, s])
        p = max(p, e)
    if p < b:
        out.append([p, b])
    return out

def data_walk(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        out, off = [], 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append([d, h])
            off = h
        return union(out)
    finally:
        os.close(fd)

def same_bytes(a, b, c, size):
    fa, fb, fc = open(a, "rb"), open(b, "rb"), open(c, "rb")
    off = 0
    while True:
        x, y, z = fa.read(8 << 20), fb.read(8 << 20), fc.read(8 << 20)
        if x != y or x != z:
            for i in range(min(len(x), len(y), len(z))):
                if not (x[i] == y[i] == z[i]):
                    break
            return "first difference at byte %d (%s / %s / %s)" % (off + i, a, b, c)
        if not x:
            break
        off += len(x)
    return None if off == size else "read %d bytes, size %d" % (off, size)

def chunks_of(st, fr):
    """(guest start, decoded length, file offset, compressed size) of each
    chunk of a data frame of a compressed stream."""
    sizes = fr.chunks if fr.chunks else [fr.payload_len]
    out, at = [], fr.payload_off
    for i, c in enumerate(sizes):
        g = fr.start + i * CHUNK
        out.append((g, min(CHUNK, fr.start + fr.length - g), at, c))
        at += c
    return out

def expected_ways(v, dst):
    """Bytes each way must take when the view v is merged into codec dst:
    kernel (plain data into a plain stream), verbatim (whole chunks of the
    dst codec still visible in the view), buffered (the rest); and those
    chunks' (guest start, length) -> compressed bytes."""
    mem = [(mkstream.Stream(p), codec) for p, codec in v["members"]]
    later = []
    kernel = verbatim = buffered = 0
    whole = {}
    for st, codec in reversed(mem):
        for fr in st.frames:
            if fr.kind != b"data":
                continue
            vis = sum(e - s for s, e in subtract(fr.start, fr.start + fr.length, later))
            if dst == "none":
                if codec == "none":
                    kernel += vis
                else:
                    buffered += vis
                continue
            if codec != dst:
                buffered += vis
                continue
            for g, n, at, c in chunks_of(st, fr):
                if subtract(g, g + n, later) == [[g, g + n]]:
                    verbatim += n
                    whole[(g, n)] = bytes(st.buf[at:at + c])
            buffered += vis
        later = union(later + [[f.start, f.start + f.length] for f in st.frames
                               if f.kind == b"data"])
    return kernel, verbatim, buffered - verbatim, whole

def counters(path):
    text = open(path).read()
    keys = {"kernel": r"data copied in the kernel: +(\d+)",
            "verbatim": r"data in chunks copied as they were: +(\d+)",
            "buffered": r"data through the daemon's buffers: +(\d+)",
            "holes": r"zeros \(zero frames\): +(\d+)"}
    out = {}
    for k, rx in keys.items():
        m = re.search(rx, text)
        if not m:
            bad("%s: no counter %r in: %s" % (path, k, text))
            return None
        out[k] = int(m.group(1))
    return out

def stats(path):
    return json.load(open(path))

def verify(v, back, mnt, dst, cmpview, ctr_file=None, stats_before=None, stats_after=None):
    """back: the new stream's backing file; mnt: it in the mount; dst: its
    codec (none, lz4, zlib)."""
    what = "%s (%s of %s)" % (os.path.basename(back), dst, v["id"])
    view = os.path.join(os.environ["MNT"], v["dir"], v["view"])
    n0 = len(problems)
    for junk in (back + ".partial", back + ".chksum.partial"):
        if os.path.exists(junk):
            bad("%s: %s left behind" % (what, junk))
    size = os.stat(mnt).st_size
    if size != v["size"] or os.stat(view).st_size != v["size"]:
        bad("%s: size %d in the mount, the view %d, the disk %d"
            % (what, size, os.stat(view).st_size, v["size"]))
        return
    if cmpview == "cmp":
        # cmp with the view through the mount (and the disk)
        d = same_bytes(mnt, view, v["raw"], size)
        if d:
            bad("%s: the new full, the view and the disk differ: %s" % (what, d))
    elif mkstream.file_sha256(mnt) != v["sha"]:
        # the view was compared with the disk at the start
        bad("%s: read through the mount, the new full is not the disk (nor the view)" % what)
    want = union(v["data"])
    got, gv = data_walk(mnt), data_walk(view)
    if got != gv or got != want:
        bad("%s: data ranges (SEEK_DATA/SEEK_HOLE) %s..., the view's %s..., expected %s..."
            % (what, got[:4], gv[:4], want[:4]))
    # the stream itself, by the reference decoder
    try:
        st = mkstream.Stream(back)
        out = os.environ["TMPRAW"]
        mkstream.replay(st, out)
        if mkstream.file_sha256(out) != v["sha"]:
            bad("%s: the reference decoder's image differs from the disk" % what)
        os.unlink(out)
    except mkstream.StreamError as e:
        bad("%s: the reference decoder refuses it: %s" % (what, e))
        return
    m = st.meta
    exp = {"incremental": False, "checkpointName": v["checkpoint"], "parentCheckpoint": "",
           "virtualSize": v["size"], "streamVersion": 2,
           "compressionMethod": "lz4" if dst == "none" else dst,
           "odxTest": v["own"], "date": mkstream.DEFAULT_DATE, "diskName": "sda"}
    if dst == "none":
        exp["compressed"] = False
    else:
        exp["compressed"] = v["own_level"] if dst == v["own_codec"] else {"lz4": 1, "zlib": 6}[dst]
    for k, val in exp.items():
        if m.get(k, "(missing)") != val or type(m.get(k)) != type(val):
            bad("%s: meta %s is %r, expected %r" % (what, k, m.get(k, "(missing)"), val))
    data = sum(e - s for s, e in want)
    dframes = [f for f in st.frames if f.kind == b"data"]
    if m.get("dataSize") != sum(f.length for f in dframes) or m.get("dataSize") != data:
        bad("%s: dataSize %r, data frames %d, the view's data %d"
            % (what, m.get("dataSize"), sum(f.length for f in dframes), data))
    # a full backup: frames in order covering the disk, data where the view has data
    pos = 0
    for f in st.frames:
        if f.start != pos:
            bad("%s: frame %d starts at %d, the previous ended at %d" % (what, f.index, f.start, pos))
            break
        pos = f.start + f.length
    if pos != v["size"]:
        bad("%s: frames end at %d, the disk is %d" % (what, pos, v["size"]))
    if union([[f.start, f.start + f.length] for f in dframes]) != want:
        bad("%s: data frames are not the view's data ranges" % what)
    if (dst != "none") != st.compressed:
        bad("%s: compressed %s, asked %s" % (what, st.compressed, dst))
    if st.compressed:
        for f in dframes:
            if (f.length >= CHUNK) != (f.chunks is not None):
                bad("%s: frame %d of %d bytes has trailer entry %r" % (what, f.index, f.length, f.chunks))
            for i, (g, n, at, c) in enumerate(chunks_of(st, f)):
                got_n = len(mkstream.decompress_exact(st.method, st.buf, at, c))
                if got_n != n:
                    bad("%s: frame %d chunk %d decodes to %d bytes, expected %d (chunks of 32 MiB but the last)"
                        % (what, f.index, i, got_n, n))
    want_sum = str(zlib.adler32(open(back, "rb").read()))
    try:
        have = open(back + ".chksum").read().strip()
    except OSError as e:
        have = str(e)
    if have != want_sum:
        bad("%s: .chksum says %r, the file's Adler-32 is %s" % (what, have, want_sum))
    r = subprocess.run([os.environ["ODXCTL"], "check", back], capture_output=True, text=True)
    if r.returncode != 0:
        bad("%s: odxctl check: %s%s" % (what, r.stdout, r.stderr))
    # the ways the bytes took
    kernel, verbatim, buffered, whole = expected_ways(v, dst)
    if dst != "none":
        outc = {}
        for f in dframes:
            for g, n, at, c in chunks_of(st, f):
                outc[(g, n)] = bytes(st.buf[at:at + c])
        for key, b in whole.items():
            if outc.get(key) != b:
                bad("%s: the chunk at %d (%d bytes) is not the source's, as it was" % (what, key[0], key[1]))
                break
    if ctr_file:
        c = counters(ctr_file)
        if c:
            e = {"kernel": kernel, "verbatim": verbatim, "buffered": buffered, "holes": v["size"] - data}
            if c != e:
                bad("%s: counters %s, expected %s" % (what, c, e))
            if v["own_codec"] == dst == "lz4" and c["verbatim"] == 0:
                bad("%s: no chunk copied as it was" % what)
            if stats_before:
                s0, s1 = stats(stats_before), stats(stats_after)
                for k, j in (("kernel", "bytesKernel"), ("verbatim", "bytesVerbatim"),
                             ("buffered", "bytesBuffered"), ("holes", "bytesHoles")):
                    if s1[j] - s0[j] != c[k]:
                        bad("%s: odxctl stats %s grew by %d, the merge says %d"
                            % (what, j, s1[j] - s0[j], c[k]))
    if len(problems) == n0:
        print("ok %s: kernel %d, verbatim %d, buffered %d" % (what, kernel, verbatim, buffered))

def main():
    views = {v["id"]: v for v in json.load(open(os.environ["VIEWS"]))}
    cmd = sys.argv[1]
    if cmd == "verify":
        # verify VIEW-ID BACK MNT DST cmp|sha [COUNTERS STATS-BEFORE STATS-AFTER]
        a = sys.argv[2:]
        verify(views[a[0]], a[1], a[2], a[3], a[4], *a[5:8])
    elif cmd == "ids":
        for v in views.values():
            print(v["id"], v["dir"], v["view"], v["own_codec"])
    elif cmd == "view":
        # the view is the disk: bytes and holes
        v = views[sys.argv[2]]
        view = os.path.join(os.environ["MNT"], v["dir"], v["view"])
        d = same_bytes(view, v["raw"], v["raw"], v["size"])
        if d:
            bad("%s: %s" % (view, d))
        if data_walk(view) != union(v["data"]):
            bad("%s: data ranges %s..., expected %s..." % (view, data_walk(view)[:4], v["data"][:4]))
    sys.exit(1 if problems else 0)

main()
PY
# the reference decoder's images: in memory when /dev/shm is there
TMPRAW=$T/decoded.raw
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	TMPRAW=/dev/shm/odxfs-merge-$$.raw
	at_exit "rm -f $TMPRAW"
fi
export MKSTREAM_DIR=$MKDIR MNT=$M VIEWS=$T/views.json TMPRAW ODXCTL
mh() { $PY "$T/mh.py" "$@"; }

odxfs_mount "$B" "$M"
expect_log 'left unfinished \(a torn stream, never a chain member\)'
mh ids >"$T/ids.txt"
# The views themselves first: if one is wrong, nothing after means much.
while read -r id dir view codec; do
	mh view "$id" || fail "the view $dir/$view is not its disk"
done <"$T/ids.txt"

# ---- odxctl merge of every view, in each codec -------------------------------
log "odxctl merge of every view with --compress source, none, lz4"
t0=$SECONDS
nmerge=0
while read -r id dir view codec; do
	for mode in source none lz4; do
		dst=$mode
		[ $mode = source ] && dst=$codec
		out=$id.$mode.data
		"$ODXCTL" stats --json "$M" >"$T/s0.json"
		if ! "$ODXCTL" merge --compress $mode "$M/$dir/$view" "$M/out/$out" >"$T/merge.txt" 2>&1; then
			problem "odxctl merge --compress $mode $dir/$view: $(cat "$T/merge.txt")"
			continue
		fi
		"$ODXCTL" stats --json "$M" >"$T/s1.json"
		grep -q "a full backup of $M/$dir/$view" "$T/merge.txt" || problem "merge output: $(cat "$T/merge.txt")"
		how=sha
		[ $mode = source ] && how=cmp
		mh verify "$id" "$B/out/$out" "$M/out/$out" $dst $how "$T/merge.txt" "$T/s0.json" "$T/s1.json" ||
			problem "odxctl merge --compress $mode of $dir/$view"
		nmerge=$((nmerge + 1))
		rm -f "$B/out/$out" "$B/out/$out.chksum"
	done
done <"$T/ids.txt"
log "$nmerge merges checked in $((SECONDS - t0)) s"
[ "$nmerge" -ge 60 ] || problem "only $nmerge merges ran"
daemon_alive "$M"

# ---- implicit: a copy into a new .data file ------------------------------------
log "xfs_io copy_range and odxctl copy into a new .data file write a stream"
size4=$(stat -c %s "$M/lz4/sda.inc.virtnbdbackup.4.data")
xfs_io -f -c "copy_range -s 0 -d 0 -l $size4 $M/lz4/sda.inc.virtnbdbackup.4.data" "$M/out/x.data" ||
	problem "xfs_io copy_range into x.data"
"$ODXCTL" info "$B/out/x.data" >"$T/info.txt" 2>&1 || problem "odxctl info x.data: $(cat "$T/info.txt")"
grep -q 'format: *sparse stream' "$T/info.txt" || problem "x.data is not a stream: $(cat "$T/info.txt")"
mh verify lz4.sda.inc.virtnbdbackup.4 "$B/out/x.data" "$M/out/x.data" lz4 cmp || problem "implicit copy x.data"
# odxctl copy sizes the destination first (ftruncate): still a new stream
"$ODXCTL" copy -q "$M/none/sda.diff.1700000001.data" "$M/out/y.data" || problem "odxctl copy into y.data"
mh verify none.sda.diff.1700000001 "$B/out/y.data" "$M/out/y.data" none cmp || problem "implicit copy y.data"
# the grown disk, zlib at its own checkpoint
sizeg=$(stat -c %s "$M/grow/sda.inc.virtnbdbackup.2.data")
xfs_io -f -c "copy_range -s 0 -d 0 -l $sizeg $M/grow/sda.inc.virtnbdbackup.2.data" "$M/out/g.data" ||
	problem "xfs_io copy_range into g.data"
mh verify grow.sda.inc.virtnbdbackup.2 "$B/out/g.data" "$M/out/g.data" zlib cmp || problem "implicit copy g.data"
# a copy into a name not ending in .data: raw bytes, as before
xfs_io -f -c "copy_range -s 0 -d 0 -l $size4 $M/lz4/sda.inc.virtnbdbackup.4.data" "$M/out/x.raw" ||
	problem "xfs_io copy_range into x.raw"
cmp "$B/out/x.raw" "$T/d4.raw" || problem "x.raw (a copy into a non-.data name) is not the raw disk"

log "half a copy: NAME.partial, torn"
half=$((size4 / 2))
xfs_io -f -c "copy_range -s 0 -d 0 -l $half $M/lz4/sda.inc.virtnbdbackup.4.data" "$M/out/x2.data" || true
[ -e "$B/out/x2.data.partial" ] || problem "half a copy: no x2.data.partial in the backing directory: $(ls "$B/out")"
[ ! -e "$B/out/x2.data" ] || problem "half a copy: x2.data exists in the backing directory"
# (the mount may show the old name until its entry times out: 1 s)
[ -e "$M/out/x2.data" ] && log "note: x2.data still shown in the mount right after the copy (cached entry)"
sleep 1.2
[ ! -e "$M/out/x2.data" ] || problem "half a copy: x2.data still in the mount after the entry timeout"
[ ! -e "$B/out/x2.data.chksum" ] || problem "half a copy: x2.data.chksum exists"
# What odxctl check says of a stream cut short (the TORN problems of
# odxfs-stream(5): a truncated payload, header or meta, a missing stop
# frame), as opposed to damage
TORN_RE='torn|cut short|cut off|truncated|missing stop frame|the file ends'
partial_torn() { # FILE: odxctl check calls it torn (cut short)
	local rc=0
	"$ODXCTL" check "$1" >"$T/check.txt" 2>&1 || rc=$?
	[ $rc != 0 ] || { problem "odxctl check $1: exit 0 for a torn stream"; return; }
	grep -Eqi "$TORN_RE" "$T/check.txt" ||
		problem "odxctl check $1 does not call it torn or cut short: $(cat "$T/check.txt")"
}
# (opening a torn stream is logged: served in part, or not at all)
expect_log 'out/x[23]\.data\.partial: offset [0-9]+: '
partial_torn "$B/out/x2.data.partial"
# the same by a program that sees close(2): EIO
python3 - "$M/lz4/sda.inc.virtnbdbackup.4.data" "$M/out/x3.data" "$half" <<'PY' || problem "close after half a copy"
import errno, os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
fd = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
n = os.copy_file_range(src, fd, int(sys.argv[3]), 0, 0)
assert n == int(sys.argv[3]), n
try:
    os.close(fd)
    sys.exit("close after half a copy succeeded")
except OSError as e:
    if e.errno != errno.EIO:
        sys.exit("close after half a copy: %s, expected EIO" % e)
PY
[ -e "$B/out/x3.data.partial" ] && [ ! -e "$B/out/x3.data" ] || problem "x3: $(ls "$B/out")"
partial_torn "$B/out/x3.data.partial"
# a torn stream is shown as one (standalone, read-only), never as a raw
# file open to writes
python3 - "$M/out/x3.data.partial" <<'PY' || problem "x3.data.partial in the mount"
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY)
    os.close(fd)
    sys.exit("%s opens for writing: the mount shows it as a plain file, not as a (torn) stream" % sys.argv[1])
except OSError as e:
    if e.errno != errno.EROFS:
        sys.exit("%s: open for writing: %s, expected EROFS" % (sys.argv[1], e))
PY

# ---- errors --------------------------------------------------------------------
log "errors: an existing destination, NAME.partial in the way, a second open"
V=$M/lz4/sda.inc.virtnbdbackup.3.data
echo "not a backup" >"$B/out/exists.data"
cp "$B/lz4/sda.full.data" "$B/out/stream.data"
for f in exists.data stream.data; do
	before=$(sha "$B/out/$f")
	"$ODXCTL" merge "$V" "$M/out/$f" >"$T/err.txt" 2>&1 && problem "merge onto an existing $f succeeded"
	grep -q 'exists' "$T/err.txt" || problem "merge onto $f: $(cat "$T/err.txt")"
	[ "$(sha "$B/out/$f")" = "$before" ] || problem "merge onto an existing $f changed it"
	[ ! -e "$B/out/$f.partial" ] || problem "merge onto an existing $f left $f.partial"
done
echo "someone's partial" >"$B/out/pp.data.partial"
before=$(sha "$B/out/pp.data.partial")
"$ODXCTL" merge "$V" "$M/out/pp.data" >"$T/err.txt" 2>&1 && problem "merge with pp.data.partial in the way succeeded"
grep -qi 'exists' "$T/err.txt" || problem "merge with pp.data.partial in the way: $(cat "$T/err.txt")"
[ "$(sha "$B/out/pp.data.partial")" = "$before" ] || problem "merge changed pp.data.partial"
[ ! -e "$B/out/pp.data" ] || problem "merge with pp.data.partial in the way left pp.data"
# the same for an implicit copy: EEXIST, the file stays a plain empty file
expect_errno EEXIST "
s = os.open('$V', os.O_RDONLY)
d = os.open('$M/out/pq.data', os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
open('$B/out/pq.data.partial', 'w').write('in the way')
os.copy_file_range(s, d, 1 << 20, 0, 0)"
[ "$(cat "$B/out/pq.data.partial")" = "in the way" ] || problem "a copy changed pq.data.partial"
[ -f "$B/out/pq.data" ] && [ ! -s "$B/out/pq.data" ] || problem "pq.data: $(ls -l "$B/out")"
python3 - "$V" "$M/out/busy.data" "$B/out/busy.data" <<'PY' || problem "a stream being written"
import errno, os, sys
view, dst, back = sys.argv[1:]
src = os.open(view, os.O_RDONLY)
fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
n = os.copy_file_range(src, fd, 8 << 20, 0, 0)
assert n == 8 << 20, n
assert os.path.exists(back + ".partial") and not os.path.exists(back), os.listdir(os.path.dirname(back))
for p in (dst, dst + ".partial"):
    for fl in (os.O_RDONLY, os.O_RDWR):
        try:
            g = os.open(p, fl)
            os.close(g)
            sys.exit("%s: a second open (flags %d) of a stream being written succeeded" % (p, fl))
        except OSError as e:
            if e.errno != errno.EBUSY:
                sys.exit("%s: a second open: %s, expected EBUSY" % (p, e))
for what, fn in (("write", lambda: os.pwrite(fd, b"x", 100 << 20)),
                 ("read", lambda: os.pread(fd, 10, 0))):
    try:
        fn()
        sys.exit("a plain %s of a stream being written succeeded" % what)
    except OSError as e:
        if e.errno != errno.EBUSY:
            sys.exit("a plain %s of a stream being written: %s, expected EBUSY" % (what, e))
# a copy that goes on where it stopped finishes it
n = os.copy_file_range(src, fd, os.fstat(src).st_size - (8 << 20), 8 << 20, 8 << 20)
os.close(fd)
assert os.path.exists(back) and not os.path.exists(back + ".partial"), os.listdir(os.path.dirname(back))
PY
mh verify lz4.sda.inc.virtnbdbackup.3 "$B/out/busy.data" "$M/out/busy.data" lz4 cmp || problem "busy.data, finished"
daemon_alive "$M"

# ---- fold ----------------------------------------------------------------------
F=$B/fold
vnr_ok=1
if ! command -v virtnbdrestore >/dev/null || ! command -v qemu-img >/dev/null; then
	vnr_ok=0
	if [ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ]; then
		problem "virtnbdrestore or qemu-img is not installed: the restores before and after the fold cannot run"
	else
		log "NOT CHECKED: virtnbdrestore or qemu-img is not installed (no restore before and after the fold)"
	fi
fi
restore() { # restore TAG CHECKPOINT STATE: virtnbdrestore --until CHECKPOINT equals STATE.raw
	local out=$T/vrest-$1 sock=$T/vnr-$1.sock rc=0
	[ $vnr_ok = 1 ] || return 0
	virtnbdrestore -U test:///default -i "$F" -o "$out" --until "$2" -n -f "$sock" \
		-L "$T/vnr-$1.log" >"$T/vnr-$1.out" 2>&1 || rc=$?
	local deadline=$((SECONDS + 20))
	while pgrep -f "qemu-nbd .*$sock" >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
	if [ $rc != 0 ] || [ ! -f "$out/sda.qcow2" ]; then
		problem "virtnbdrestore --until $2 ($1) failed (exit $rc): $(tail -5 "$T/vnr-$1.out")"
		return 0
	fi
	qemu-img compare -q "$out/sda.qcow2" "$T/$3.raw" ||
		problem "virtnbdrestore --until $2 ($1): not the disk at that checkpoint ($3.raw)"
	rm -rf "$out"
}
log "virtnbdrestore before the fold"
restore before virtnbdbackup.4 d4
"$ODXCTL" fold --dry-run "$M/fold/sda.inc.virtnbdbackup.2.data" >"$T/dry.txt" 2>&1 ||
	problem "fold --dry-run: $(cat "$T/dry.txt")"
grep -q 'sda.full.data sda.inc.virtnbdbackup.1.data sda.inc.virtnbdbackup.2.data' "$T/dry.txt" ||
	problem "fold --dry-run: $(cat "$T/dry.txt")"
[ -e "$F/sda.inc.virtnbdbackup.1.data" ] || problem "fold --dry-run removed a member"
for f in sda.inc.virtnbdbackup.3.data sda.inc.virtnbdbackup.4.data sda.diff.1700000001.data; do
	sha "$F/$f" >"$T/fold-$f.sha"
done
old_mtime=$(python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime_ns)' "$F/sda.full.data")
# views opened before the fold (an open view must not hold it up)
mh view lz4.sda.inc.virtnbdbackup.4 || problem "view before the fold"
log "odxctl fold at checkpoint 2"
# once the new full is in place, what is left of the folded members no
# longer resolves (their parent checkpoint is gone) until fold removes them
expect_log 'fold/sda\.inc\.virtnbdbackup\.[12]\.data: not served as the disk at its checkpoint'

"$ODXCTL" fold "$M/fold/sda.inc.virtnbdbackup.2.data" >"$T/fold.txt" 2>&1 ||
	problem "odxctl fold: $(cat "$T/fold.txt")"
for f in sda.inc.virtnbdbackup.1.data sda.inc.virtnbdbackup.2.data; do
	[ ! -e "$F/$f" ] && [ ! -e "$F/$f.chksum" ] || problem "fold: $f (or its .chksum) is still there"
done
ls "$F" | grep -q 'partial' && problem "fold left a partial: $(ls "$F")"
[ "$(python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime_ns)' "$F/sda.full.data")" = "$old_mtime" ] ||
	problem "the new full does not have the old full's mtime"
for f in sda.inc.virtnbdbackup.3.data sda.inc.virtnbdbackup.4.data sda.diff.1700000001.data; do
	[ "$(sha "$F/$f")" = "$(cat "$T/fold-$f.sha")" ] || problem "fold changed $f"
done
$PY - "$F/sda.full.data" "$T/d2.raw" <<'PY' || problem "the new full"
import json, os, subprocess, sys, zlib
sys.path.insert(0, os.environ["MKSTREAM_DIR"])
os.environ["MKSTREAM_NO_REEXEC"] = "1"
import mkstream
st = mkstream.Stream(sys.argv[1])
m = st.meta
assert m["checkpointName"] == "virtnbdbackup.2" and m["incremental"] is False and \
    m["parentCheckpoint"] == "" and m["compressionMethod"] == "lz4", m
mkstream.replay(st, os.environ["TMPRAW"])
assert mkstream.file_sha256(os.environ["TMPRAW"]) == mkstream.file_sha256(sys.argv[2]), "not d2"
os.unlink(os.environ["TMPRAW"])
assert open(sys.argv[1] + ".chksum").read().strip() == str(zlib.adler32(open(sys.argv[1], "rb").read()))
PY
"$ODXCTL" check "$F/sda.full.data" >/dev/null || problem "odxctl check of the new full"
# every checkpoint left, through the mount: the new full is d2, the later
# members their disks (the fold chain is the lz4 chain's copy)
python3 - <<'PY' || problem "views after the fold"
import json, os, sys
views = json.load(open(os.environ["VIEWS"]))
for v in views:
    if v["dir"] == "lz4":
        v["dir"] = "fold"
        v["id"] = "fold." + v["view"][:-5]
        if v["view"] == "sda.full.data":
            base = [x for x in views if x["dir"] == "lz4" and x["view"] == "sda.inc.virtnbdbackup.2.data"][0]
            v.update({k: base[k] for k in ("state", "raw", "sha", "size", "data")})
json.dump(views, open(os.environ["VIEWS"] + ".fold", "w"))
PY
for v in sda.full sda.inc.virtnbdbackup.3 sda.inc.virtnbdbackup.4 sda.diff.1700000001; do
	VIEWS=$T/views.json.fold mh view "fold.$v" || problem "fold: the view $v after the fold"
done
for v in sda.inc.virtnbdbackup.1 sda.inc.virtnbdbackup.2; do
	[ ! -e "$M/fold/$v.data" ] || problem "fold: $v.data still in the mount"
done
"$ODXCTL" check --chain "$F/sda.inc.virtnbdbackup.4.data" >"$T/chain.txt" 2>&1 ||
	problem "check --chain after the fold: $(cat "$T/chain.txt")"
grep -q 'chain of 3 members links up' "$T/chain.txt" || problem "check --chain: $(cat "$T/chain.txt")"
log "virtnbdrestore after the fold"
restore after virtnbdbackup.4 d4
restore after2 virtnbdbackup.2 d2

no_problems
pass
