#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Byte and hole checks for the odxfs integration tests.

Standard library only.  Every subcommand exits 0 when the check holds and
1 with a message naming the file and offset when it does not.

  randread IMAGE EXPECTED [--count N] [--seed S] [--max-len L]
      random preads of IMAGE at random offsets and lengths == EXPECTED's
  parallel EXPECTED IMAGE... [--threads N] [--count N]
      the same from N threads at once, over all IMAGEs (all equal EXPECTED)
  holes XFS_IO_OUTPUT LAYOUT_JSON
      `xfs_io -c "seek -a -r 0"` output == the zero regions of the layout
  sparse IMAGE EXPECT_JSON [--spots N]
      a huge sparse image: hash the data extents of EXPECT_JSON (from
      mkstream huge), read spots of the holes, check SEEK_DATA/SEEK_HOLE
  map-holes ODXCTL_MAP_JSON LAYOUT_JSON
      holes in `odxctl map --json` output == the zero regions of the layout
"""
import argparse
import hashlib
import json
import os
import random
import sys
import threading


def die(msg):
    print(f"check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def pread_all(fd, n, off):
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def random_reads(image, expected, count, seed, max_len, errors):
    rnd = random.Random(seed)
    size = os.path.getsize(expected)
    if os.stat(image).st_size != size:
        errors.append(f"{image}: size {os.stat(image).st_size}, expected {size}")
        return
    fi = os.open(image, os.O_RDONLY)
    fe = os.open(expected, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rnd.randrange(0, size)
            n = rnd.randrange(1, max_len + 1)
            got = pread_all(fi, n, off)
            want = pread_all(fe, n, off)
            if got != want:
                bad = next((i for i in range(min(len(got), len(want)))
                            if got[i] != want[i]), min(len(got), len(want)))
                errors.append(f"{image}: read of {n} at {off}: first difference at "
                              f"offset {off + bad} (got {len(got)} bytes, "
                              f"expected {len(want)})")
                return
    finally:
        os.close(fi)
        os.close(fe)


def cmd_randread(a):
    errors = []
    random_reads(a.image, a.expected, a.count, a.seed, a.max_len, errors)
    if errors:
        die(errors[0])


def cmd_parallel(a):
    errors = []
    threads = []
    for t in range(a.threads):
        img = a.images[t % len(a.images)]
        th = threading.Thread(target=random_reads,
                              args=(img, a.expected, a.count, f"{a.seed}-{t}",
                                    a.max_len, errors))
        threads.append(th)
        th.start()
    for th in threads:
        th.join()
    if errors:
        die("; ".join(errors))


def layout_holes(path):
    """Merged [start, end) of the zero regions of a mkstream layout."""
    with open(path) as f:
        layout = json.load(f)
    holes = []
    for r in sorted(layout, key=lambda r: r["offset"]):
        if r["kind"] == "data" or r["length"] == 0:
            continue
        s, e = r["offset"], r["offset"] + r["length"]
        if holes and holes[-1][1] == s:
            holes[-1][1] = e
        else:
            holes.append([s, e])
    return holes


def xfs_io_holes(path, size):
    """Holes from `seek -a -r 0` output: each HOLE runs to the next DATA."""
    marks = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 2 and p[0] in ("DATA", "HOLE") and p[1].isdigit():
                marks.append((p[0], int(p[1])))
    holes = []
    for i, (kind, off) in enumerate(marks):
        if kind != "HOLE":
            continue
        end = marks[i + 1][1] if i + 1 < len(marks) else size
        if end > off:
            holes.append([off, end])
    return holes


def compare_holes(got, want, what):
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                die(f"{what}: hole {i} is {g}, expected {w}")
        die(f"{what}: {len(got)} holes, expected {len(want)}")


def cmd_holes(a):
    with open(a.layout) as f:
        size = max(r["offset"] + r["length"] for r in json.load(f))
    compare_holes(xfs_io_holes(a.xfs_io_output, size), layout_holes(a.layout),
                  a.xfs_io_output)


def cmd_map_holes(a):
    with open(a.map_json) as f:
        m = json.load(f)
    ext = m["extents"] if isinstance(m, dict) else m
    holes = []
    for e in ext:
        # qemu-img map style: "start" is the image offset ("offset" is
        # where the bytes live in the file).
        start = e["start"] if "start" in e else e["offset"]
        if e.get("kind") in ("zero", "unmapped", "hole"):
            s, t = start, start + e["length"]
            if holes and holes[-1][1] == s:
                holes[-1][1] = t
            else:
                holes.append([s, t])
    compare_holes(holes, layout_holes(a.layout), a.map_json)


def cmd_sparse(a):
    with open(a.expect) as f:
        exp = json.load(f)
    size = exp["virtualSize"]
    st = os.stat(a.image)
    if st.st_size != size:
        die(f"{a.image}: size {st.st_size}, expected {size}")
    data = sorted(exp["extents"], key=lambda e: e["offset"])
    fd = os.open(a.image, os.O_RDONLY)
    try:
        for e in data:
            h = hashlib.sha256()
            off, left = e["offset"], e["length"]
            while left:
                b = os.pread(fd, min(left, 1 << 20), off)
                if not b:
                    die(f"{a.image}: end of file at {off}")
                h.update(b)
                off += len(b)
                left -= len(b)
            if h.hexdigest() != e["sha256"]:
                die(f"{a.image}: data extent at {e['offset']} has the wrong bytes")
        # Holes: the gaps between data extents, spot-checked at both ends
        # and at random places.
        gaps = []
        pos = 0
        for e in data:
            if e["offset"] > pos:
                gaps.append((pos, e["offset"]))
            pos = max(pos, e["offset"] + e["length"])
        if pos < size:
            gaps.append((pos, size))
        rnd = random.Random(1)
        for s, t in gaps:
            spots = [s, max(s, t - 4096)] + [rnd.randrange(s, t) for _ in range(a.spots)]
            for off in spots:
                n = min(4096, t - off)
                if pread_all(fd, n, off) != bytes(n):
                    die(f"{a.image}: hole at {off} does not read as zeros")
            got = os.lseek(fd, s, os.SEEK_HOLE)
            if got != s:
                die(f"{a.image}: SEEK_HOLE from {s} gave {got}")
            try:
                nxt = os.lseek(fd, s, os.SEEK_DATA)
            except OSError:
                nxt = size
            if nxt != t:
                die(f"{a.image}: SEEK_DATA from {s} gave {nxt}, expected {t}")
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("randread")
    r.add_argument("image")
    r.add_argument("expected")
    r.add_argument("--count", type=int, default=2000)
    r.add_argument("--seed", default="0")
    r.add_argument("--max-len", type=int, default=256 << 10)
    r.set_defaults(fn=cmd_randread)
    r = sub.add_parser("parallel")
    r.add_argument("expected")
    r.add_argument("images", nargs="+")
    r.add_argument("--threads", type=int, default=8)
    r.add_argument("--count", type=int, default=500)
    r.add_argument("--seed", default="0")
    r.add_argument("--max-len", type=int, default=256 << 10)
    r.set_defaults(fn=cmd_parallel)
    r = sub.add_parser("holes")
    r.add_argument("xfs_io_output")
    r.add_argument("layout")
    r.set_defaults(fn=cmd_holes)
    r = sub.add_parser("map-holes")
    r.add_argument("map_json")
    r.add_argument("layout")
    r.set_defaults(fn=cmd_map_holes)
    r = sub.add_parser("sparse")
    r.add_argument("image")
    r.add_argument("expect")
    r.add_argument("--spots", type=int, default=8)
    r.set_defaults(fn=cmd_sparse)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
