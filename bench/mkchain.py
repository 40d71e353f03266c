#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mkchain.py: backup chains for bench/bench-chain.sh.

Writes virtnbdbackup-style chains (a full backup and incrementals, meta as
virtnbdbackup 1.9.15 writes it) with test/tools/mkstream.py's stream writer,
plus the raw disk at the last checkpoint (sparse).  Nothing here is timed.

  mkchain.py restore OUT [--size 4G] [--data 1G] [--extents 2000] [--incs 10]
                         [--new 16M] [--seed S]
      OUT/none/ and OUT/lz4/: sda.full.data and sda.inc.virtnbdbackup.N.data
      (N = 1..incs), uncompressed and LZ4 (one LZ4 frame per data frame,
      chunked at 32 MiB, as virtnbdbackup -z writes them), each with a
      vmconfig.virtnbdbackup.0.xml naming disk sda (qcow2) for virtnbdrestore,
      members' mtimes ascending (virtnbdrestore orders files by mtime);
      OUT/final.raw: the disk at the last checkpoint, sparse.
      Layout (64 KiB granularity, like virtnbdbackup's dirty bitmaps): the
      full has `extents` regions alternating data/zero (data first), `data`
      bytes of data in them, as data and zero frames; the full's data blocks
      are cut into runs of 1..8 blocks (64-512 KiB), the runs are dealt out
      to the incrementals at random, balanced, so each incremental rewrites a
      different 1/incs of the full's data (10 % with 10; adjacent rewritten
      blocks are one frame); each incremental also writes about `new` bytes in 1..16
      block ranges in space that was zero until then.  Data compresses about
      2:1 (each 4 KiB block: 2 KiB random, 2 KiB of text).

  mkchain.py frames OUT [--members 30] [--frames 100000] [--frame-size 512]
                        [--size 2G] [--seed S]
      OUT/chain30/: sda.full.data + sda.inc.virtnbdbackup.1..members.data,
      uncompressed; OUT/flat/flat.full.data: one stream with the same content
      and the same fragmentation as the last view; OUT/chain30-final.raw.
      Placement: the disk is cut into frame-size slots; every member (the
      full too) has `frames` data frames of frame-size random bytes, one per
      slot, in `frames` slots drawn at random without replacement (each
      member independently, so later members overwrite about 2.4 % of the
      slots earlier ones wrote), ascending; adjacent slots stay separate
      frames.  The full has zero frames over the slots between its data.
      The flat stream has one data frame for each slot written by any member
      (its newest bytes) and zero frames between: as many data extents as
      the last view.  frames.json gives each view's extents as the merged
      map has them (each written slot one data extent, each run of slots no
      member wrote one zero extent: a piece of one of the full's zero frames).

Each command writes OUT/<command>.json (parameters and counts) last; the
bench script reuses OUT when that file matches the parameters.
"""

import argparse
import array
import json
import os
import random
import sys
import time

try:
    import lz4.frame  # noqa: F401  (mkstream needs it for LZ4)
except ImportError:
    if os.environ.get("MKCHAIN_NO_REEXEC") is None and os.path.exists("/usr/bin/python3") \
            and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.environ["MKCHAIN_NO_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "tools"))
import mkstream  # noqa: E402

KiB, MiB, GiB = 1024, 1 << 20, 1 << 30
BLOCK = 64 * KiB
TEXT = (b"odxfs benchmark: the quick brown fox jumps over the lazy dog. " * 40)[:2048]
T0 = 1704067200  # 2024-01-01: members' mtimes and dates count up from here

VMCONFIG = """<domain type='kvm'>
  <name>odxfs-bench</name>
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
"""


def log(msg):
    print("mkchain: " + msg, file=sys.stderr, flush=True)


def member_name(n):
    return "sda.full.data" if n == 0 else "sda.inc.virtnbdbackup.%d.data" % n


def member_opts(n, compress, disk="sda"):
    return {"compress": compress, "checkpoint": "virtnbdbackup.%d" % n,
            "parent": "" if n == 0 else "virtnbdbackup.%d" % (n - 1),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime(T0 + 3600 * n)),
            "disk_name": disk, "disk_format": "qcow2", "chksum": False}


def compressible(rng, n):
    """n bytes (a multiple of 4 KiB): each 4 KiB block half random, half text."""
    rnd = mkstream.random_bytes(rng, n // 2)
    mv = memoryview(rnd)
    parts = []
    for i in range(0, n // 2, 2048):
        parts.append(mv[i:i + 2048])
        parts.append(TEXT)
    return b"".join(parts)


def runs_to_frames(blocks):
    """sorted block numbers -> [(b"data", offset, length)], contiguous merged"""
    frames = []
    for b in blocks:
        if frames and frames[-1][1] + frames[-1][2] == b * BLOCK:
            frames[-1][2] += BLOCK
        else:
            frames.append([b"data", b * BLOCK, BLOCK])
    return [tuple(f) for f in frames]


def set_mtimes(d, n_members):
    for n in range(n_members):
        p = os.path.join(d, member_name(n))
        os.utime(p, (T0 + 3600 * n, T0 + 3600 * n))


def cmd_restore(a):
    out = a.out
    os.makedirs(os.path.join(out, "none"), exist_ok=True)
    os.makedirs(os.path.join(out, "lz4"), exist_ok=True)
    stamp = os.path.join(out, "restore.json")
    if os.path.exists(stamp):
        os.unlink(stamp)
    rng = mkstream.rng_for(a.seed, "layout")
    nblocks = a.size // BLOCK
    dblocks = a.data // BLOCK
    nd = (a.extents + 1) // 2
    nz = a.extents - nd
    dl = mkstream.split_total(rng, dblocks, nd)
    zl = mkstream.split_total(rng, nblocks - dblocks, nz)
    full_frames, data_blocks, zero_blocks = [], [], []
    b = 0
    for i in range(a.extents):
        if i % 2 == 0:
            ln = dl[i // 2]
            full_frames.append((b"data", b * BLOCK, ln * BLOCK))
            data_blocks.extend(range(b, b + ln))
        else:
            ln = zl[i // 2]
            full_frames.append((b"zero", b * BLOCK, ln * BLOCK))
            zero_blocks.extend(range(b, b + ln))
        b += ln
    # the full's data cut into runs of 1..8 blocks, dealt to the incrementals
    runs, i = [], 0
    while i < len(data_blocks):
        k = rng.randint(1, 8)
        runs.append(data_blocks[i:i + k])
        i += k
    labels = [j % a.incs for j in range(len(runs))]
    rng.shuffle(labels)
    rewritten = [[] for _ in range(a.incs)]
    for run, lab in zip(runs, labels):
        rewritten[lab].extend(run)
    # new data: ranges of 1..16 blocks in space still zero
    free = set(zero_blocks)
    zero_sorted = zero_blocks
    inc_blocks = []
    for n in range(a.incs):
        want = a.new // BLOCK
        got = []
        while want > 0:
            k = min(want, rng.randint(1, 16))
            s = zero_sorted[rng.randrange(len(zero_sorted))]
            rngs = range(s, s + k)
            if all(x in free for x in rngs):
                for x in rngs:
                    free.discard(x)
                got.extend(rngs)
                want -= k
        inc_blocks.append(sorted(rewritten[n] + got))

    raw_path = os.path.join(out, "final.raw")
    rawfd = os.open(raw_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(rawfd, a.size)
    members = [(full_frames, False)] + [(runs_to_frames(bl), True) for bl in inc_blocks]
    summary = {"members": []}
    try:
        for n, (frames, inc) in enumerate(members):
            drng = mkstream.rng_for(a.seed, "data", n)

            def data_fn(i, start, length):
                d = compressible(drng, length)
                os.pwrite(rawfd, d, start)
                return d
            p_none = os.path.join(out, "none", member_name(n))
            s = mkstream.write_stream(p_none, a.size, frames, data_fn, member_opts(n, "none"),
                                      incremental=inc)
            st = mkstream.Stream(p_none)
            s2 = mkstream.write_stream(os.path.join(out, "lz4", member_name(n)), a.size, frames,
                                       lambda i, start, length: st.payload(st.frames[i]),
                                       member_opts(n, "lz4"), incremental=inc)
            log("%s: %d data frames, %d MiB data, lz4 %d MiB" % (
                member_name(n), s["data_frames"], s["dataSize"] >> 20, s2["size"] >> 20))
            summary["members"].append({"name": member_name(n), "data_frames": s["data_frames"],
                                       "zero_frames": s["zero_frames"], "dataSize": s["dataSize"],
                                       "size_none": s["size"], "size_lz4": s2["size"]})
        os.fsync(rawfd)
    finally:
        os.close(rawfd)
    for c in ("none", "lz4"):
        d = os.path.join(out, c)
        set_mtimes(d, len(members))
        with open(os.path.join(d, "vmconfig.virtnbdbackup.0.xml"), "w") as f:
            f.write(VMCONFIG)
    summary["params"] = params_of(a)
    summary["final_data"] = (dblocks + sum(a.new // BLOCK for _ in range(a.incs))) * BLOCK
    with open(stamp, "w") as f:
        json.dump(summary, f, indent=1)


def cmd_frames(a):
    out = a.out
    cdir, fdir = os.path.join(out, "chain30"), os.path.join(out, "flat")
    os.makedirs(cdir, exist_ok=True)
    os.makedirs(fdir, exist_ok=True)
    stamp = os.path.join(out, "frames.json")
    if os.path.exists(stamp):
        os.unlink(stamp)
    fs = a.frame_size
    nslots = a.size // fs
    # newest writer of each slot: (member << 24 | frame index within member) + 1, 0 = none
    owner = array.array("q", bytes(8 * nslots))
    raw_path = os.path.join(out, "chain30-final.raw")
    rawfd = os.open(raw_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(rawfd, a.size)
    covered = zero_runs = 0
    summary = {"members": []}
    try:
        for n in range(a.members + 1):
            rng = mkstream.rng_for(a.seed, "slots", n)
            slots = sorted(rng.sample(range(nslots), a.frames))
            buf = mkstream.random_bytes(mkstream.rng_for(a.seed, "data", n), a.frames * fs)
            mv = memoryview(buf)
            frames = []
            if n == 0:
                prev = 0
                for s in slots:
                    if s > prev:
                        frames.append((b"zero", prev * fs, (s - prev) * fs))
                    frames.append((b"data", s * fs, fs))
                    prev = s + 1
                if prev < nslots:
                    frames.append((b"zero", prev * fs, (nslots - prev) * fs))
            else:
                frames = [(b"data", s * fs, fs) for s in slots]
            for j, s in enumerate(slots):
                if owner[s] == 0:
                    covered += 1
                    if n > 0:
                        # a slot of a zero run taken: the run splits (+1),
                        # shrinks (0) or goes (-1)
                        left = s > 0 and owner[s - 1] == 0
                        right = s + 1 < nslots and owner[s + 1] == 0
                        zero_runs += (left and right) - (not left and not right)
                owner[s] = j + 1
                os.pwrite(rawfd, mv[j * fs:(j + 1) * fs], s * fs)
            if n == 0:
                zero_runs = sum(1 for f in frames if f[0] == b"zero")
            idx = {}
            k = 0
            for i, f in enumerate(frames):
                if f[0] == b"data":
                    idx[i] = k
                    k += 1

            def data_fn(i, start, length, mv=mv, idx=idx):
                j = idx[i]
                return bytes(mv[j * fs:(j + 1) * fs])
            s = mkstream.write_stream(os.path.join(cdir, member_name(n)), a.size, frames, data_fn,
                                      member_opts(n, "none"), incremental=n > 0)
            summary["members"].append({"name": member_name(n), "data_frames": s["data_frames"],
                                       "zero_frames": s["zero_frames"], "size": s["size"],
                                       "view_data_slots": covered,
                                       "view_extents": covered + zero_runs})
            log("chain30 %s: %d frames, view: %d extents" % (member_name(n), len(frames),
                                                            covered + zero_runs))
        os.fsync(rawfd)
    finally:
        os.close(rawfd)
    set_mtimes(cdir, a.members + 1)
    # the flat stream: one data frame per written slot, zero frames between
    frames, prev = [], 0
    for s in range(nslots):
        if owner[s]:
            if s > prev:
                frames.append((b"zero", prev * fs, (s - prev) * fs))
            frames.append((b"data", s * fs, fs))
            prev = s + 1
    if prev < nslots:
        frames.append((b"zero", prev * fs, (nslots - prev) * fs))
    rawfd = os.open(raw_path, os.O_RDONLY)
    try:
        s = mkstream.write_stream(os.path.join(fdir, "flat.full.data"), a.size, frames,
                                  lambda i, start, length: os.pread(rawfd, length, start),
                                  dict(member_opts(0, "none", disk="flat")))
    finally:
        os.close(rawfd)
    log("flat.full.data: %d data frames, %d zero frames" % (s["data_frames"], s["zero_frames"]))
    summary["flat"] = {"data_frames": s["data_frames"], "zero_frames": s["zero_frames"],
                       "size": s["size"]}
    summary["params"] = params_of(a)
    with open(stamp, "w") as f:
        json.dump(summary, f, indent=1)


def params_of(a):
    return {k: v for k, v in sorted(vars(a).items()) if k not in ("out", "fn")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restore", help="the 4 GiB chain, uncompressed and lz4, and its final raw")
    r.add_argument("out")
    r.add_argument("--size", type=mkstream.parse_size, default=4 * GiB)
    r.add_argument("--data", type=mkstream.parse_size, default=1 * GiB)
    r.add_argument("--extents", type=int, default=2000)
    r.add_argument("--incs", type=int, default=10)
    r.add_argument("--new", type=mkstream.parse_size, default=16 * MiB)
    r.add_argument("--seed", default="bench-chain")
    r.set_defaults(fn=cmd_restore)
    f = sub.add_parser("frames", help="the 30-member chain of 100,000-frame members, and a flat stream")
    f.add_argument("out")
    f.add_argument("--members", type=int, default=30)
    f.add_argument("--frames", type=int, default=100000)
    f.add_argument("--frame-size", type=mkstream.parse_size, default=512)
    f.add_argument("--size", type=mkstream.parse_size, default=2 * GiB)
    f.add_argument("--seed", default="bench-chain-30")
    f.set_defaults(fn=cmd_frames)
    a = ap.parse_args()
    if a.cmd == "restore" and (a.size % BLOCK or a.data % BLOCK or a.new % BLOCK):
        ap.error("sizes must be multiples of 64 KiB")
    a.fn(a)
    print(json.dumps(params_of(a)))


if __name__ == "__main__":
    main()
