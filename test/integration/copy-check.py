#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Expected results of copies inside an odxfs mount, for the copy-*.sh tests.

Standard library only.  A copy is SRC_OFF:DST_OFF:LEN (bytes) from a source
whose content is the raw image REF and whose zero regions are those of a
mkstream layout.  The destination starts empty (a file of holes, or none).

  expect REF OUT --size N [--copy S:D:L ...]
      write OUT: SIZE bytes, zeros except the copied ranges of REF (the
      bytes the destination must hold afterwards)
  holes XFS_IO_OUTPUT LAYOUT --size N [--block B] [--copy S:D:L ...]
      `xfs_io -c "seek -a -r 0"` of the destination shows a hole at every
      block of B bytes (default 4096) that received no byte of a data
      region, and data at every other block; exit 1 naming the first
      difference.  Without --copy: one whole-file copy 0:0:SIZE.
  data-bytes LAYOUT --size N [--block B] [--copy S:D:L ...]
      print the bytes of the destination's data blocks (for du checks)
  cfr SRC DST [--src-off S] [--dst-off D] [--len L] [--max-calls N]
      copy with os.copy_file_range, looping on short counts as every
      caller must; prints the calls made and the largest count one call
      returned, as JSON
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import xfs_io_holes  # noqa: E402  (one parser of xfs_io seek output)


def die(msg):
    print(f"copy-check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_copies(copies, size):
    out = []
    for c in copies or [f"0:0:{size}"]:
        try:
            s, d, n = (int(x, 0) for x in c.split(":"))
        except ValueError:
            die(f"bad --copy '{c}' (expected SRC_OFF:DST_OFF:LEN)")
        out.append((s, d, n))
    return out


def data_blocks(layout_path, size, block, copies):
    """Sorted list of [start, end) block-aligned data ranges of the
    destination (clipped at size), merged."""
    with open(layout_path) as f:
        data = [(r["offset"], r["offset"] + r["length"])
                for r in json.load(f) if r["kind"] == "data" and r["length"]]
    ranges = []
    for s, d, n in copies:
        for a, b in data:
            lo, hi = max(a, s), min(b, s + n)
            if lo >= hi:
                continue
            ds, de = d + (lo - s), d + (hi - s)
            ranges.append([ds // block * block, min(size, -(-de // block) * block)])
    ranges.sort()
    merged = []
    for a, b in ranges:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def holes_of(data, size):
    holes, pos = [], 0
    for a, b in data:
        if a > pos:
            holes.append([pos, a])
        pos = b
    if pos < size:
        holes.append([pos, size])
    return holes


def cmd_expect(a):
    fo = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fr = os.open(a.ref, os.O_RDONLY)
    try:
        os.ftruncate(fo, a.size)
        for s, d, n in parse_copies(a.copy, a.size):
            while n > 0:
                b = os.pread(fr, min(n, 8 << 20), s)
                if not b:
                    break
                os.pwrite(fo, b, d)
                s, d, n = s + len(b), d + len(b), n - len(b)
    finally:
        os.close(fo)
        os.close(fr)


def cmd_holes(a):
    want = holes_of(data_blocks(a.layout, a.size, a.block, parse_copies(a.copy, a.size)),
                    a.size)
    got = xfs_io_holes(a.xfs_io_output, a.size)
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                die(f"{a.xfs_io_output}: hole {i} is {g}, expected {w}")
        die(f"{a.xfs_io_output}: {len(got)} holes, expected {len(want)} "
            f"(first extra: {(got[len(want):] or want[len(got):])[0]})")


def cmd_data_bytes(a):
    data = data_blocks(a.layout, a.size, a.block, parse_copies(a.copy, a.size))
    print(sum(b - a_ for a_, b in data))


def cmd_cfr(a):
    fi = os.open(a.src, os.O_RDONLY)
    fo = os.open(a.dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        n = a.len if a.len is not None else os.fstat(fi).st_size - a.src_off
        s, d, calls, biggest = a.src_off, a.dst_off, 0, 0
        while n > 0:
            if calls >= a.max_calls:
                die(f"{a.dst}: still {n} bytes to copy after {calls} calls")
            got = os.copy_file_range(fi, fo, n, s, d)
            calls += 1
            if got == 0:
                break
            biggest = max(biggest, got)
            s, d, n = s + got, d + got, n - got
        print(json.dumps({"calls": calls, "largest": biggest, "left": n}))
    finally:
        os.close(fi)
        os.close(fo)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("expect")
    r.add_argument("ref")
    r.add_argument("out")
    r.add_argument("--size", type=int, required=True)
    r.add_argument("--copy", action="append")
    r.set_defaults(fn=cmd_expect)
    for name, fn in (("holes", cmd_holes), ("data-bytes", cmd_data_bytes)):
        r = sub.add_parser(name)
        if name == "holes":
            r.add_argument("xfs_io_output")
        r.add_argument("layout")
        r.add_argument("--size", type=int, required=True)
        r.add_argument("--block", type=int, default=4096)
        r.add_argument("--copy", action="append")
        r.set_defaults(fn=fn)
    r = sub.add_parser("cfr")
    r.add_argument("src")
    r.add_argument("dst")
    r.add_argument("--src-off", type=int, default=0)
    r.add_argument("--dst-off", type=int, default=0)
    r.add_argument("--len", type=int)
    r.add_argument("--max-calls", type=int, default=10000)
    r.set_defaults(fn=cmd_cfr)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
