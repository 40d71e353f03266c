#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Differential test of the damage policy (odxfs-stream(5), "Damage").

  differential.py gen --seed S --first I --count N --out DIR
      Writes N mutated streams (numbers I .. I+N-1) into DIR and their
      mutations into DIR/../manifest-I.jsonl.  Each file is made from one
      small seed stream (none/lz4/zlib, full, incremental, overlapping,
      chunked, without trailer, torn) by one or two mutations: bit flips,
      bytes set, truncation, frame headers copied over or into other
      headers, header fields edited, meta JSON edited, trailer JSON edited,
      whole frames duplicated or moved.  File I depends on S and I only:
      `gen --seed S --first I --count 1` makes it again.

  differential.py check --manifest M --back DIR --strict MNT --salvage MNT
        [--keep DIR] [--timeout SEC]
      Reads every file of the manifest through both mounts (a strict one and
      one with -o salvage) and compares each 64 KiB block with what
      mkstream.py's policy decoder (test/tools/mkstream.py, policy_walks:
      written from the manual page, no code shared with odxfs) says the
      policy may serve.  The reads run in two child processes (one per
      mount) under a watchdog: a file that takes longer than --timeout
      seconds is a hang.  Failures are printed with the file, the mutation,
      the block and both values; the files are copied into --keep.

  differential.py reader
      (internal) the child: reads the files named on stdin.
"""

import argparse
import errno
import importlib.util
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

if importlib.util.find_spec("lz4") is None:
    # A pyenv or venv python3 does not see Debian's python3-lz4.
    if os.environ.get("MKSTREAM_NO_REEXEC") is None and os.path.exists("/usr/bin/python3") \
            and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.environ["MKSTREAM_NO_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])

import mkstream as m  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
BS = 64 * KiB               # the read block
READ_ALL_BELOW = 8 * MiB    # images up to this size are read whole
U64 = (1 << 64) - 1


# --------------------------------------------------------------------------
# seeds

def _data_fn(rng_seed, name, mix):
    """Payload of frame i: random bytes, or a compressible pattern."""
    def fn(i, start, length):
        r = m.rng_for(rng_seed, name, "payload", i)
        pattern = "random" if r.random() < mix else "compressible"
        return m.pattern_bytes(r, length, pattern)
    return fn


def _opts(method, chunk=None, hyphen=False, no_trailer=False):
    o = {"compress": method, "chksum": False, "hyphen_keys": hyphen, "no_trailer": no_trailer}
    if chunk:
        o["chunk_size"] = chunk
    return o


def seed_full(path, rs, name, method, vs, regions, chunk=None, unaligned=False, hyphen=False,
              no_trailer=False, mix=0.5):
    rng = m.rng_for(rs, name, "layout")
    layout = m.make_layout(vs, regions, rng, unaligned, 0.5, rng.choice(("data", "zero")))
    frames = [(b"data" if r["kind"] == "data" else b"zero", r["offset"], r["length"])
              for r in layout if r["length"]]
    m.write_stream(path, vs, frames, _data_fn(rs, name, mix),
                   _opts(method, chunk, hyphen, no_trailer))


def seed_incremental(path, rs, name, method, vs, count, chunk=None, mix=0.5):
    rng = m.rng_for(rs, name, "ranges")
    frames = []
    for _ in range(count):
        ln = rng.choice((4096, 512, rng.randrange(1, 300 * KiB)))
        start = rng.randrange(0, vs - ln)
        if rng.random() < 0.7:
            start -= start % 4096
        frames.append((b"data", start, ln))
    m.write_stream(path, vs, frames, _data_fn(rs, name, mix), _opts(method, chunk),
                   incremental=True)


def seed_overlap(path, rs, name, method, vs, count, chunk=None, mix=0.5):
    """Data and zero frames in any order, many overlapping (later wins)."""
    rng = m.rng_for(rs, name, "overlap")
    frames = []
    for _ in range(count):
        ln = rng.randrange(1, 160 * KiB)
        if frames and rng.random() < 0.6:
            _, ps, pl = rng.choice(frames)
            start = rng.randrange(ps, ps + pl)
        else:
            start = rng.randrange(0, vs)
        ln = max(1, min(ln, vs - start))
        frames.append((b"zero" if rng.random() < 0.3 else b"data", start, ln))
    m.write_stream(path, vs, frames, _data_fn(rs, name, mix), _opts(method, chunk))


SEEDS = [
    # name, maker, arguments
    ("none-full", seed_full, dict(method="none", vs=1 * MiB, regions=9)),
    ("none-full-u", seed_full, dict(method="none", vs=3 * MiB // 2 + 777, regions=17,
                                    unaligned=True, hyphen=True)),
    ("none-inc", seed_incremental, dict(method="none", vs=2 * MiB, count=10)),
    ("none-ovl", seed_overlap, dict(method="none", vs=1 * MiB, count=24)),
    ("lz4-full", seed_full, dict(method="lz4", vs=1 * MiB, regions=9)),
    ("lz4-full-c", seed_full, dict(method="lz4", vs=2 * MiB, regions=11, chunk=64 * KiB)),
    ("lz4-inc-c", seed_incremental, dict(method="lz4", vs=2 * MiB, count=10, chunk=64 * KiB)),
    ("lz4-ovl-c", seed_overlap, dict(method="lz4", vs=1 * MiB, count=24, chunk=64 * KiB)),
    ("lz4-notrailer", seed_full, dict(method="lz4", vs=1 * MiB, regions=7, no_trailer=True)),
    ("zlib-full", seed_full, dict(method="zlib", vs=3 * MiB // 2, regions=11)),
    ("zlib-inc", seed_incremental, dict(method="zlib", vs=1 * MiB, count=8)),
    ("zlib-torn", seed_full, dict(method="zlib", vs=1 * MiB, regions=9)),   # cut below
]


class Seed:
    """A seed stream and where its parts are."""

    def __init__(self, name, path):
        self.name = name
        self.buf = open(path, "rb").read()
        st = m.Stream(path, partial=True)
        self.st = st
        self.vs = st.virtual_size
        self.compressed = st.compressed
        self.frames = st.frames
        self.meta_end = st.meta_end
        self.headers = [(0, "meta")] + [(f.hdr_off, f.kind.decode()) for f in st.frames]
        if st.stop_off is not None:
            self.headers.append((st.stop_off, "stop"))
        self.trailer = None
        if st.trailer is not None:
            self.trailer = (st.trailer_off, len(self.buf) - m.FRAME_LEN - 2)
            self.headers.append((len(self.buf) - m.FRAME_LEN, "comp"))
        self.crlfs = [st.meta_end - 2] + [f.end_off - 2 for f in st.frames if f.kind == b"data"]
        self.chunks = []
        for f in st.frames:
            if f.kind != b"data":
                continue
            if f.chunks:
                q = f.payload_off
                for c in f.chunks:
                    self.chunks.append((q, c))
                    q += c
            else:
                self.chunks.append((f.payload_off, f.payload_len))
        self.boundaries = sorted({0, 40, st.meta_end, len(self.buf)}
                                 | {f.hdr_off for f in st.frames} | {f.end_off for f in st.frames}
                                 | {f.payload_off for f in st.frames}
                                 | ({st.stop_off} if st.stop_off is not None else set()))


def make_seeds(rs, d):
    os.makedirs(d, exist_ok=True)
    seeds = []
    for name, maker, kw in SEEDS:
        path = os.path.join(d, name + ".data")
        maker(path, rs, name, **kw)
        if name == "zlib-torn":
            st = m.Stream(path)
            fr = [f for f in st.frames if f.kind == b"data"][-2]
            cut = fr.payload_off + fr.payload_len // 2
            with open(path, "r+b") as f:
                f.truncate(cut)
        seeds.append(Seed(name, path))
    return seeds


# --------------------------------------------------------------------------
# mutations: each returns (new content, description)

def _where(seed, off):
    """What the byte at file offset off of the seed is, in words."""
    if off < m.FRAME_LEN:
        return "meta header"
    if off < seed.meta_end - 2:
        return "meta JSON"
    if off < seed.meta_end:
        return "CRLF after meta"
    for f in seed.frames:
        if f.hdr_off <= off < f.hdr_off + m.FRAME_LEN:
            return "header of frame #%d (%s)" % (f.index, f.kind.decode())
        if f.kind == b"data" and f.payload_off <= off < f.end_off:
            if off >= f.end_off - 2:
                return "CRLF after frame #%d" % f.index
            return "payload of frame #%d +%d" % (f.index, off - f.payload_off)
    st = seed.st
    if st.stop_off is not None and st.stop_off <= off < st.stop_off + m.FRAME_LEN:
        return "stop header"
    if seed.trailer and seed.trailer[0] <= off < seed.trailer[1]:
        return "trailer JSON"
    if seed.trailer and off >= len(seed.buf) - m.FRAME_LEN:
        return "comp header"
    return "after the frames"


def _structural_offset(rng, seed, buf):
    """A byte offset in a part of the file the reader parses."""
    n = len(buf)
    choice = rng.random()
    if choice < 0.35:
        off, _ = rng.choice(seed.headers)
        off += rng.randrange(m.FRAME_LEN)
    elif choice < 0.55:
        off = rng.randrange(m.FRAME_LEN, max(m.FRAME_LEN + 1, seed.meta_end))
    elif choice < 0.65:
        off = rng.choice(seed.crlfs) + rng.randrange(2)
    elif choice < 0.8 and seed.trailer:
        off = rng.randrange(seed.trailer[0], len(buf))
    elif seed.chunks:
        q, c = rng.choice(seed.chunks)
        off = q + (rng.randrange(min(c, 24)) if rng.random() < 0.5 else rng.randrange(max(c, 1)))
    else:
        off = rng.randrange(n)
    return min(off, n - 1)


def mut_flip(rng, seed, buf):
    buf = bytearray(buf)
    k = rng.choice((1, 1, 1, 1, 2, 3, 8))
    done = []
    for _ in range(k):
        off = _structural_offset(rng, seed, buf) if rng.random() < 0.6 else rng.randrange(len(buf))
        bit = rng.randrange(8)
        buf[off] ^= 1 << bit
        done.append("bit %d of byte %d (%s)" % (bit, off, _where(seed, off)))
    return bytes(buf), "flip " + ", ".join(done)


INTERESTING = b" 0f9FgG{}[]\",:\r\n\x00\x7f\xff-."


def mut_byte(rng, seed, buf):
    buf = bytearray(buf)
    off = _structural_offset(rng, seed, buf) if rng.random() < 0.7 else rng.randrange(len(buf))
    v = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
    old = buf[off]
    buf[off] = v
    return bytes(buf), "byte %d (%s) 0x%02x -> 0x%02x" % (off, _where(seed, off), old, v)


def mut_cut(rng, seed, buf):
    n = len(buf)
    if rng.random() < 0.4:
        cut = rng.randrange(n)
    else:
        cut = rng.choice(seed.boundaries) + rng.choice((0, 0, -1, 1, -2, 2, 20, -20, 39, 41))
        cut = max(0, min(n - 1, cut))
    return buf[:cut], "cut to %d bytes (of %d; %s)" % (cut, n, _where(seed, cut) if cut < n else "end")


def mut_splice(rng, seed, buf):
    (src, sk), (dst, dk) = rng.sample(seed.headers, 2)
    h = buf[src:src + m.FRAME_LEN]
    if rng.random() < 0.25:
        return buf[:dst] + h + buf[dst:], "header of %s @%d inserted before %s @%d" % (sk, src, dk, dst)
    return buf[:dst] + h + buf[dst + m.FRAME_LEN:], "header of %s @%d copied over %s @%d" % (sk, src, dk, dst)


def _rebuild_meta(seed, buf, meta, rng, fix_length=True, text=None):
    """buf with its meta JSON replaced by meta (or by text)."""
    if text is None:
        text = json.dumps(meta, indent=4 if rng.random() < 0.7 else None).encode()
    n = len(text) if fix_length else seed.meta_end - 2 - m.FRAME_LEN
    return m.header(b"meta", 0, n) + text + m.TERM + buf[seed.meta_end:]


def _new_value(rng, seed, v, field):
    ends = [f.start + f.length for f in seed.frames]
    cands = [v + 1, v - 1, v + 4096, v - 4096, v + 65536, v - 65536, 0, v * 2, v // 2,
             seed.vs, seed.vs - 1, seed.vs + 1, rng.randrange(max(seed.vs, 1)),
             1 << 63, U64, (1 << 64) - 256, rng.getrandbits(64), rng.getrandbits(24)]
    if seed.frames:
        f = rng.choice(seed.frames)
        cands += [f.start, f.length, rng.choice(ends)]
    return max(0, min(U64, rng.choice(cands)))


def mut_field(rng, seed, buf):
    off, kind = rng.choice(seed.headers)
    h = m.header_any(buf, off)
    if h is None:
        return mut_flip(rng, seed, buf)
    _, start, length = h
    if kind in ("meta", "comp", "stop") or rng.random() < 0.5:
        field, v = "length", length
    else:
        field, v = "start", start
    new = _new_value(rng, seed, v, field)
    digits = b"%016x" % new
    if rng.random() < 0.1:
        digits = digits.upper()
    pos = off + (22 if field == "length" else 5)
    out = buf[:pos] + digits + buf[pos + 16:]
    desc = "%s header @%d: %s 0x%x -> 0x%x" % (kind, off, field, v, new)
    if kind == "data" and field == "length" and rng.random() < 0.5:
        meta = json.loads(out[m.FRAME_LEN:seed.meta_end - 2])
        key = "dataSize" if "dataSize" in meta else "data-size"
        meta[key] = meta[key] - v + new
        out = _rebuild_meta(seed, out, meta, rng)
        desc += ", dataSize changed to match"
    return out, desc


def mut_meta(rng, seed, buf):
    text = buf[m.FRAME_LEN:seed.meta_end - 2]
    meta = json.loads(text)
    hy = "virtual-size" in meta
    vkey = "virtual-size" if hy else "virtualSize"
    dkey = "data-size" if hy else "dataSize"
    skey = "stream-version" if hy else "streamVersion"
    ends = [f.start + f.length for f in seed.frames] or [0]
    op = rng.choice(("virtualSize", "virtualSize", "dataSize", "dataSize", "compressed",
                     "compressionMethod", "streamVersion", "incremental", "delete", "rename",
                     "both", "unknown", "pad", "garbage", "duplicate", "length"))
    new_text, fix = None, True
    if op in ("virtualSize", "dataSize", "compressed", "compressionMethod", "streamVersion"):
        key = {"virtualSize": vkey, "dataSize": dkey, "streamVersion": skey}.get(op, op)
        ds = meta.get(dkey, 0)
        v = rng.choice({
            "virtualSize": (seed.vs - 1, seed.vs + 1, seed.vs // 2, seed.vs * 2, seed.vs + 4096,
                            max(ends) - 1, max(ends), 0, 1 << 40, (1 << 63) - 1, 1 << 63, 1 << 64,
                            -1, str(seed.vs), float(seed.vs), True, None, 1 << 70),
            "dataSize": (ds + 1, ds - 1, 0, "x", -1, float(ds), 1 << 64, None, ds + (1 << 32), "DEL"),
            "compressed": (False, True, 0, None, "no", 2, "DEL"),
            "compressionMethod": ("lz4", "zlib", "xz", "LZ4", None, 5, "DEL"),
            "streamVersion": (1, 2, 3, 0, "2", None, 2.0, "DEL"),
        }[op])
        desc = "meta %s %r -> %r" % (key, meta.get(key, "(absent)"), v)
        if v == "DEL":
            meta.pop(key, None)
        else:
            meta[key] = v
    elif op == "incremental":
        meta["incremental"] = not meta.get("incremental")
        desc = "meta incremental -> %r" % meta["incremental"]
    elif op == "delete":
        k = rng.choice(sorted(meta))
        del meta[k]
        desc = "meta key %s deleted" % k
    elif op == "rename":
        k = rng.choice(sorted(meta))
        other = {"virtualSize": "virtual-size", "virtual-size": "virtualSize",
                 "dataSize": "data-size", "data-size": "dataSize",
                 "streamVersion": "stream-version", "stream-version": "streamVersion"}
        nk = other.get(k) if rng.random() < 0.6 and k in other else k + "X"
        meta = {(nk if kk == k else kk): vv for kk, vv in meta.items()}
        desc = "meta key %s renamed %s" % (k, nk)
    elif op == "both":
        other = "virtualSize" if hy else "virtual-size"
        v = rng.choice((meta[vkey], meta[vkey] + 1, max(ends) - 1))
        meta[other] = v
        desc = "meta %s added = %r (%s is %r)" % (other, v, vkey, meta[vkey])
    elif op == "unknown":
        v = rng.choice(("x" * rng.randrange(1, 3000), {"a": [1, 2, {"b": None}]}, 1 << 80, -0.5))
        meta["odxfsTestKey"] = v
        desc = "meta unknown key added (%s)" % type(v).__name__
    elif op == "pad":
        t = json.dumps(meta, indent=4)
        new_text = (t[:-1] + " " * rng.randrange(1, 500) + "}").encode()
        desc = "meta JSON padded with spaces before its closing brace"
    elif op == "garbage":
        g = rng.choice((b"x", b"{}", b"\x00", b" ,", b"\n\t "))
        new_text = text + g
        desc = "meta JSON followed by %r inside the frame" % g
    elif op == "duplicate":
        k = rng.choice((vkey, dkey, "compressionMethod", "compressed"))
        v = rng.choice((0, 1, max(ends) - 1, "zlib", False, meta.get(k)))
        dup = ('"%s": %s, ' % (k, json.dumps(v))).encode()
        i = text.index(b"{") + 1
        new_text = text[:i] + dup + text[i:] if rng.random() < 0.5 else \
            text[:text.rindex(b"}")] + b", " + dup[:-2] + b"}"
        desc = "meta key %s given twice (extra value %r)" % (k, v)
    else:
        fix = False
        desc = "meta rewritten, header length left as it was"
        meta["diskName"] = str(meta.get("diskName", "")) + "x" * rng.randrange(1, 40)
    if fix and rng.random() < 0.1:
        fix = False
        desc += ", header length left as it was"
    return _rebuild_meta(seed, buf, meta, rng, fix, new_text), desc


def mut_trailer(rng, seed, buf):
    if not seed.trailer:
        return mut_cut(rng, seed, buf)
    t0, t1 = seed.trailer
    text = buf[t0:t1]
    ent = json.loads(text)
    i = rng.randrange(len(ent)) if ent else 0
    op = rng.choice(("inc", "inc", "zero", "limit", "type", "objform", "key", "chunk",
                     "drop", "add", "swap", "invalid", "notlist", "space", "length"))
    new_text, fix = None, True
    e = ent[i] if ent else None
    if op in ("inc", "chunk") and ent:
        d = rng.choice((1, -1, 2, 100, -100))
        if isinstance(e, dict):
            (k, v), = e.items()
            j = rng.randrange(len(v))
            v[j] += d
            if rng.random() < 0.5:
                ent[i] = {str(int(k) + d): v}
                desc = "trailer entry %d chunk %d and key %+d" % (i, j, d)
            else:
                desc = "trailer entry %d chunk %d %+d (key unchanged)" % (i, j, d)
        else:
            ent[i] = e + d
            desc = "trailer entry %d %d -> %d" % (i, e, e + d)
    elif op in ("zero", "limit", "type") and ent:
        v = {"zero": 0, "limit": rng.choice((1 << 32, 33 * MiB + 1, 1 << 40)),
             "type": rng.choice((-1, "12", None, [12], 1.5, True, {"a": [1]}, {}))}[op]
        ent[i] = v
        desc = "trailer entry %d %r -> %r" % (i, e, v)
    elif op == "objform" and ent:
        if isinstance(e, dict):
            ent[i] = sum(next(iter(e.values())))
            desc = "trailer entry %d: object form -> its sum %d" % (i, ent[i])
        else:
            ent[i] = {str(e): [e]}
            desc = "trailer entry %d: %d -> object form of one chunk" % (i, e)
    elif op == "key" and ent and isinstance(e, dict):
        (k, v), = e.items()
        ent[i] = {str(int(k) + rng.choice((1, -1, 7))): v} if rng.random() < 0.7 else {k + "x": v}
        desc = "trailer entry %d key %s -> %s" % (i, k, next(iter(ent[i])))
    elif op == "drop" and ent:
        del ent[i]
        desc = "trailer entry %d dropped" % i
    elif op == "add":
        ent.insert(i, rng.choice((ent[i] if ent else 5, 1, 100)))
        desc = "trailer entry inserted at %d" % i
    elif op == "swap" and len(ent) > 1:
        j = rng.randrange(len(ent))
        ent[i], ent[j] = ent[j], ent[i]
        desc = "trailer entries %d and %d swapped" % (i, j)
    elif op == "invalid":
        tb = bytearray(text)
        k = rng.randrange(len(tb))
        tb[k] = rng.choice(b"{}[],x\x00 ")
        new_text = bytes(tb)
        desc = "trailer JSON byte %d -> %r" % (k, bytes(tb[k:k + 1]))
    elif op == "notlist":
        new_text = json.dumps({"0": ent}).encode()
        desc = "trailer JSON is an object"
    elif op == "space":
        new_text = rng.choice((b" ", b"\n")) + text + b" "
        desc = "trailer JSON with white space around it"
    else:
        new_text = text[:-1] if len(text) > 1 else text
        fix = rng.random() < 0.5
        desc = "trailer JSON one byte shorter (comp length %s)" % ("fixed" if fix else "kept")
    if new_text is None:
        new_text = json.dumps(ent, separators=(", ", ": ") if rng.random() < 0.7 else (",", ":")).encode()
    if fix and rng.random() < 0.1:
        fix = False
        desc += ", comp length left as it was"
    tlen = len(new_text) if fix else t1 - t0
    return buf[:t0] + new_text + m.TERM + m.header(b"comp", 0, tlen), desc


def mut_frames(rng, seed, buf):
    """Duplicate or move a whole frame (its trailer entry and dataSize
    kept right most of the time): often a valid stream with another image."""
    frames = seed.frames
    if len(frames) < 2:
        return mut_flip(rng, seed, buf)
    st = seed.st
    f = rng.choice(frames)
    end_of_frames = st.stop_off if st.stop_off is not None else len(buf)
    dests = [g.hdr_off for g in frames] + [end_of_frames]
    dst = rng.choice(dests)
    body = buf[f.hdr_off:f.end_off]
    move = rng.random() < 0.4
    if move:
        if dst in (f.hdr_off, f.end_off):
            dst = dests[-1] if dst != dests[-1] else dests[0]
        rest = buf[:f.hdr_off] + buf[f.end_off:]
        d = dst if dst < f.hdr_off else dst - len(body)
        out = rest[:d] + body + rest[d:]
        desc = "frame #%d (%s) moved to offset %d" % (f.index, f.kind.decode(), dst)
    else:
        out = buf[:dst] + body + buf[dst:]
        desc = "frame #%d (%s) copied to offset %d" % (f.index, f.kind.decode(), dst)
    if f.kind != b"data":
        return out, desc
    # data frames: the trailer entry follows the frame, dataSize grows
    if seed.trailer and rng.random() < 0.85:
        t0 = seed.trailer[0] + (0 if move else len(body))
        t1 = len(out) - m.FRAME_LEN - 2
        ent = json.loads(out[t0:t1])
        new_di = sum(1 for g in frames if g.kind == b"data" and g.hdr_off < dst)
        e = ent[f.dindex]
        if move:
            del ent[f.dindex]
            if new_di > f.dindex:
                new_di -= 1
        ent.insert(new_di, e)
        tj = json.dumps(ent).encode()
        out = out[:t0] + tj + m.TERM + m.header(b"comp", 0, len(tj))
        desc += ", trailer entry moved along"
    if not move and rng.random() < 0.85:
        meta = json.loads(out[m.FRAME_LEN:seed.meta_end - 2])
        key = "dataSize" if "dataSize" in meta else "data-size"
        if isinstance(meta.get(key), int):
            meta[key] += f.length
            out = _rebuild_meta(seed, out, meta, rng)
            desc += ", dataSize grown"
    return out, desc


MUTATIONS = [
    ("flip", mut_flip, 26), ("byte", mut_byte, 8), ("cut", mut_cut, 14),
    ("splice", mut_splice, 10), ("field", mut_field, 14), ("meta", mut_meta, 12),
    ("trailer", mut_trailer, 8), ("frames", mut_frames, 8),
]


def mutate(rng, seed):
    names = [x[0] for x in MUTATIONS]
    weights = [x[2] for x in MUTATIONS]
    if not seed.trailer:
        weights[names.index("trailer")] = 0
    name = rng.choices(names, weights)[0]
    fn = dict((x[0], x[1]) for x in MUTATIONS)[name]
    buf, desc = fn(rng, seed, seed.buf)
    if rng.random() < 0.12 and buf:
        # a second, blind mutation (the seed's offsets no longer all hold)
        name2 = rng.choice(("flip", "cut"))
        if name2 == "cut":
            c = rng.randrange(len(buf))
            buf, d2 = buf[:c], "cut to %d bytes" % c
        else:
            b = bytearray(buf)
            o = rng.randrange(len(b))
            bit = rng.randrange(8)
            b[o] ^= 1 << bit
            buf, d2 = bytes(b), "flip bit %d of byte %d" % (bit, o)
        name += "+" + name2
        desc += "; then " + d2
    return buf, name, desc


def cmd_gen(a):
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    seeds = make_seeds(a.seed, os.path.join(os.path.dirname(out), "seeds"))
    manifest = a.manifest or os.path.join(os.path.dirname(out), "manifest-%d.jsonl" % a.first)
    with open(manifest, "w") as mf:
        if a.first == 0 and not a.no_seeds:
            for s in seeds:
                name = "seed.%s.data" % s.name
                with open(os.path.join(out, name), "wb") as f:
                    f.write(s.buf)
                mf.write(json.dumps({"name": name, "index": -1, "seed": s.name, "op": "none",
                                     "mutation": "none (the seed itself)"}) + "\n")
        for i in range(a.first, a.first + a.count):
            rng = random.Random("%s:%d" % (a.seed, i))
            s = seeds[rng.randrange(len(seeds))]
            buf, op, desc = mutate(rng, s)
            name = "f%05d.%s.%s.data" % (i, s.name, op)
            with open(os.path.join(out, name), "wb") as f:
                f.write(buf)
            mf.write(json.dumps({"name": name, "index": i, "seed": s.name, "op": op,
                                 "mutation": desc}) + "\n")


# --------------------------------------------------------------------------
# the reader (child process)

def _send(obj, data=b""):
    line = json.dumps(obj).encode() + b"\n"
    sys.stdout.buffer.write(line)
    if data:
        sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _err(e):
    return -(e.errno or errno.EIO)


def seek_walk(fd, size, seq):
    """SEEK_DATA then SEEK_HOLE from 0 to the end: [whence, from, result
    or -errno] into seq, stopping at an error or an offset out of range."""
    off = 0
    while off < size and len(seq) < 20000:
        for whence, tag in ((os.SEEK_DATA, "D"), (os.SEEK_HOLE, "H")):
            try:
                r = os.lseek(fd, off, whence)
            except OSError as e:
                seq.append([tag, off, _err(e)])
                return
            seq.append([tag, off, r])
            if not (off <= r < size if tag == "D" else off < r <= size):
                return
            off = r


def read_one(req):
    path = req["path"]
    res = {"name": req["name"], "stat": 0, "open": 0, "size": None, "blocks": [], "seek": [],
           "reopen": None}
    data = []
    try:
        res["stat_size"] = os.stat(path).st_size
    except OSError as e:
        res["stat"] = _err(e)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        res["open"] = _err(e)
        return res, b""
    try:
        size = os.fstat(fd).st_size
        res["size"] = size
        try:
            # exactly the blocks asked for go to the daemon: no read-ahead
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except OSError:
            pass
        offs = set(range(0, min(size, req["limit"]), BS))
        offs |= {o for o in req["extra"] if o < size}
        if size:
            offs.add((size - 1) // BS * BS)
        eio = False
        for off in sorted(offs):
            # a short read goes on where it stopped, as cat or cp would:
            # parts are the byte counts (0: end of file) and -errno
            want, got, parts = min(BS, size - off), 0, []
            while got < want:
                try:
                    b = os.pread(fd, want - got, off + got)
                except OSError as e:
                    parts.append(_err(e))
                    eio = eio or e.errno == errno.EIO
                    break
                parts.append(len(b))
                data.append(b)
                if not b:
                    break
                got += len(b)
            res["blocks"].append([off, parts])
            if parts and parts[-1] == -errno.ENOTCONN:
                break
        seek_walk(fd, size, res["seek"])
    finally:
        os.close(fd)
    if eio and req.get("reopen"):
        try:
            os.close(os.open(path, os.O_RDONLY))
            res["reopen"] = 0
        except OSError as e:
            res["reopen"] = _err(e)
    return res, b"".join(data)


def cmd_reader(a):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for line in sys.stdin:
        req = json.loads(line)
        _send({"begin": req["name"]})
        t = time.monotonic()
        res, data = read_one(req)
        res["seconds"] = round(time.monotonic() - t, 3)
        res["nbytes"] = len(data)
        _send(res, data)


class Reader:
    """A child reading files through one mount, with a watchdog."""

    def __init__(self, label, timeout):
        self.label = label
        self.timeout = timeout
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "reader"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.fd = self.p.stdout.fileno()
        self.buf = bytearray()
        self.current = None

    def send(self, req):
        self.p.stdin.write(json.dumps(req).encode() + b"\n")
        self.p.stdin.flush()

    def _fill(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise EOFError()
                self.buf += chunk
                return

    def _line(self, deadline):
        while b"\n" not in self.buf:
            self._fill(deadline)
        i = self.buf.index(b"\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 1]
        return json.loads(line)

    def _bytes(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        b = bytes(self.buf[:n])
        del self.buf[:n]
        return b

    def result(self):
        """(result, data) of the next file; raises TimeoutError (hang, the
        file being read is in .current) or EOFError."""
        deadline = time.monotonic() + self.timeout
        self.current = self._line(deadline)["begin"]
        deadline = time.monotonic() + self.timeout
        res = self._line(deadline)
        data = self._bytes(res["nbytes"], deadline)
        self.current = None
        return res, data

    def kill(self):
        try:
            self.p.kill()
        except OSError:
            pass


# --------------------------------------------------------------------------
# the comparison

def _hex(b, n=8):
    return " ".join("%02x" % x for x in b[:n])


def _ename(e):
    return errno.errorcode.get(e, str(e))


class Checker:
    def __init__(self, a):
        self.a = a
        self.failures = []          # (rule, mode, op, text)
        self.by_rule = {}
        self.warnings = {}
        self.files = 0
        self.kept = set()
        self.printed = 0

    def fail(self, mode, rule, ent, text, ref):
        key = (mode, rule)
        self.by_rule.setdefault(key, []).append(ent)
        self.failures.append((rule, mode, ent["op"], text))
        if self.a.record:
            with open(self.a.record, "a") as f:
                f.write(json.dumps({"kind": "fail", "mode": mode, "rule": rule, "name": ent["name"],
                                    "op": ent["op"], "mutation": ent["mutation"], "text": text,
                                    "reference": ref}) + "\n")
        if self.printed < self.a.max_print:
            self.printed += 1
            print("FAIL [%s] %s: %s: %s" % (mode, ent["name"], rule, text))
            print("     mutation of seed %s: %s" % (ent["seed"], ent["mutation"]))
            if ent["index"] >= 0:
                print("     remake: differential.py gen --seed '%s' --first %d --count 1 --out DIR"
                      % (self.a.seed, ent["index"]))
            print("     reference (%s): %s" % (mode, ref))
        self.keep(ent, "[%s] %s: %s\n  reference: %s\n" % (mode, rule, text, ref))

    def warn(self, mode, rule, ent, text):
        self.warnings.setdefault((mode, rule), []).append((ent["name"], text))
        if self.a.record:
            with open(self.a.record, "a") as f:
                f.write(json.dumps({"kind": "note", "mode": mode, "rule": rule, "name": ent["name"],
                                    "op": ent["op"], "text": text}) + "\n")

    def keep(self, ent, text):
        if not self.a.keep:
            return
        os.makedirs(self.a.keep, exist_ok=True)
        dst = os.path.join(self.a.keep, ent["name"])
        if ent["name"] not in self.kept and len(self.kept) < 300:
            shutil.copyfile(os.path.join(self.a.back, ent["name"]), dst)
            self.kept.add(ent["name"])
            with open(dst + ".txt", "a") as f:
                f.write("mutation of seed %s: %s\n" % (ent["seed"], ent["mutation"]))
        if ent["name"] in self.kept:
            with open(dst + ".txt", "a") as f:
                f.write(text)

    @staticmethod
    def describe(outs, walks, complete):
        kinds = []
        for o in outs:
            if o.kind == "image":
                bad = sum(p[1] - p[0] for p in o.pieces if p[2] == "bad")
                kinds.append("image of %d bytes%s%s" % (o.size, ", %d bad" % bad if bad else "",
                                                         ", sticky" if o.sticky else ""))
            elif o.kind == "plain":
                kinds.append("plain file of %d bytes" % o.size)
            else:
                kinds.append("reject (%s)" % o.why)
        w = walks[0]
        s = " | ".join(kinds) + "; walk: " + w.summary()
        points = {}
        for x in walks:
            for k, v in x.open_points.items():
                points[k] = v
        if points:
            s += "; open points: " + "; ".join("%s: %s" % (k, "/".join(v)) for k, v in points.items())
        if not complete:
            s += " (more than %d ways: not all walked)" % len(walks)
        return s

    @staticmethod
    def plan(outs):
        extra = set()
        for o in outs:
            if o.kind == "image" and o.size > READ_ALL_BELOW:
                for p in o.pieces[:200]:
                    extra.add(p[0] // BS * BS)
                    extra.add(max(p[1] - 1, 0) // BS * BS)
        return sorted(extra)[:400]

    def judge(self, mode, ent, outs, ref, res, data):
        if res["stat"]:
            self.fail(mode, "stat failed", ent, "stat: %s" % _ename(-res["stat"]), ref)
        if res["open"]:
            e = -res["open"]
            if e == errno.ENOTCONN:
                raise ConnectionError(ent["name"])
            if e != errno.EIO:
                self.fail(mode, "open failed with another errno than EIO", ent, _ename(e), ref)
            elif not any(o.kind == "reject" for o in outs):
                self.fail(mode, "open failed (EIO), the reference serves it", ent, "open: EIO", ref)
            return
        cands = [o for o in outs if o.kind in ("image", "plain")]
        if not cands:
            self.fail(mode, "opened, the reference does not serve it" if mode == "salvage"
                      else "strict: damaged stream opened", ent,
                      "open succeeded (st_size %d)" % res["size"], ref)
            return
        size = res["size"]
        sized = [o for o in cands if o.size == size]
        if not sized:
            self.fail(mode, "st_size differs", ent, "fstat st_size %d, reference %s"
                      % (size, " or ".join(str(o.size) for o in cands)), ref)
            return
        pos, first_eio, reported = 0, None, set()
        for off, parts in res["blocks"]:
            end = min(off + BS, size)
            p = off
            for r in parts:
                if r < 0:
                    e = -r
                    if e == errno.ENOTCONN:
                        raise ConnectionError(ent["name"])
                    if first_eio is None:
                        first_eio = p
                    if e != errno.EIO:
                        self.fail(mode, "read failed with another errno than EIO", ent,
                                  "read at 0x%x: %s" % (p, _ename(e)), ref)
                    elif not any(o.sticky or o.block(p, end)[1] for o in sized):
                        rule = "EIO where the reference has bytes"
                        if rule not in reported:
                            reported.add(rule)
                            self.fail(mode, rule, ent, "read of [0x%x, 0x%x): EIO; reference: bytes %s"
                                      % (p, end, _hex(sized[0].block(p, end)[0] or b"")), ref)
                    break
                if r == 0:
                    self.fail(mode, "end of file before st_size", ent,
                              "read at 0x%x returned 0 bytes (st_size %d)" % (p, size), ref)
                    break
                b = data[pos:pos + r]
                pos += r
                if p != off or r != end - off:
                    self.warn(mode, "short read", ent, "[0x%x, 0x%x) gave %d bytes" % (p, end, r))
                if mode == "strict" and first_eio is not None and "sticky" not in reported:
                    reported.add("sticky")
                    self.fail(mode, "strict: bytes served after an EIO", ent,
                              "read at 0x%x returned bytes after EIO at 0x%x" % (p, first_eio), ref)
                self.compare(mode, ent, p, p + r, b, sized, ref, reported)
                p += r
        if mode == "strict" and first_eio is not None and res["reopen"] is not None \
                and res["reopen"] != -errno.EIO:
            self.fail(mode, "strict: reopened after a read failed", ent,
                      "read EIO at 0x%x, then open: %s" % (first_eio, "ok" if res["reopen"] == 0
                                                          else _ename(-res["reopen"])), ref)
        self.check_seek(mode, ent, res, data, sized, ref)

    def compare(self, mode, ent, a, b, got, sized, ref, reported):
        exps = [o.block(a, b) for o in sized]
        if any(x[0] == got for x in exps):
            return
        good = [x[0] for x in exps if x[0] is not None]
        if not good:
            rule = "bytes served for a BAD range"
            bad = [p for p in sized[0].pieces if p[2] == "bad" and p[0] < b and p[1] > a]
            text = "[0x%x, 0x%x): %s..., reference: EIO for [0x%x, 0x%x)" % (
                a, b, _hex(got), max(a, bad[0][0]) if bad else a, min(b, bad[0][1]) if bad else b)
        else:
            rule = "wrong bytes"
            x = good[0]
            i = next(k for k in range(len(got)) if got[k] != x[k])
            text = ("[0x%x, 0x%x), first difference at 0x%x: odxfs %s..., reference %s..."
                    % (a, b, a + i, _hex(got[i:]), _hex(x[i:])))
            if len(good) > 1:
                text += " (%d reference candidates, none equal)" % len(good)
        if rule not in reported:
            reported.add(rule)
            self.fail(mode, rule, ent, text, ref)

    def check_seek(self, mode, ent, res, data, sized, ref):
        size = res["size"]
        holes, off = [], 0
        for whence, frm, r in res["seek"]:
            if r < 0:
                e = -r
                if e == errno.ENXIO and whence == "D":
                    holes.append((frm, size))
                elif e != errno.EIO and not (e == errno.ENXIO and whence == "H"):
                    self.fail(mode, "SEEK_%s failed with %s" % ("DATA" if whence == "D" else "HOLE",
                                                                _ename(e)), ent,
                              "lseek(%d): %s" % (frm, _ename(e)), ref)
                break
            if whence == "D":
                if not frm <= r < size:
                    self.fail(mode, "SEEK_DATA gave an invalid offset", ent,
                              "SEEK_DATA from %d gave %d (size %d)" % (frm, r, size), ref)
                    break
                if r > frm:
                    holes.append((frm, r))
            else:
                if not frm < r <= size:
                    self.fail(mode, "SEEK_HOLE gave an invalid offset", ent,
                              "SEEK_HOLE from %d gave %d (size %d)" % (frm, r, size), ref)
                    break
        if not holes:
            return
        # a hole reads as zeros: the bytes read there must be zeros, and
        # a range read with EIO should not be shown as a hole
        pos = 0
        for off, parts in res["blocks"]:
            p = off
            for r in parts:
                n = max(r, 0)
                b = data[pos:pos + n] if r > 0 else None
                pos += n
                hi_end = p + n if r > 0 else min(off + BS, size)
                for h0, h1 in holes:
                    lo, hi = max(h0, p), min(h1, hi_end)
                    if lo >= hi:
                        continue
                    if b is not None and any(b[lo - p:hi - p]):
                        self.fail(mode, "hole over bytes that are not zero", ent,
                                  "SEEK_HOLE says [%d, %d) is a hole, [0x%x, 0x%x) read has data there"
                                  % (h0, h1, p, p + n), ref)
                        return
                    if r < 0 and all(o.block(lo, hi)[1] for o in sized):
                        self.warn(mode, "a BAD range is shown as a hole", ent,
                                  "[%d, %d) within hole [%d, %d)" % (lo, hi, h0, h1))
                p += n

    def summary(self):
        print("differential: %d files, each read through the strict and the salvage mount"
              % self.files)
        if self.warnings:
            for (mode, rule), items in sorted(self.warnings.items()):
                print("note [%s] %s: %d files (first: %s %s)" % (mode, rule, len(items), *items[0]))
        if not self.failures:
            print("differential: no failures")
            return
        print("differential: %d failures in %d files" % (len(self.failures),
                                                          len({f for v in self.by_rule.values() for f in
                                                               (e["name"] for e in v)})))
        for (mode, rule), ents in sorted(self.by_rule.items(), key=lambda x: -len(x[1])):
            ops = {}
            for e in ents:
                ops[e["op"].split("+")[0]] = ops.get(e["op"].split("+")[0], 0) + 1
            print("  [%s] %s: %d (%s); e.g. %s: %s" % (
                mode, rule, len(ents), ", ".join("%s %d" % kv for kv in sorted(ops.items())),
                ents[0]["name"], ents[0]["mutation"]))


def cmd_check(a):
    ents = [json.loads(x) for x in open(a.manifest)]
    ck = Checker(a)
    readers = {"strict": Reader("strict", a.timeout), "salvage": Reader("salvage", a.timeout)}
    mounts = {"strict": a.strict, "salvage": a.salvage}
    cache = {}
    window = 6
    sent = 0
    rc = 0

    def send_next():
        nonlocal sent
        ent = ents[sent]
        buf = open(os.path.join(a.back, ent["name"]), "rb").read()
        walks, complete = m.policy_walks(buf)
        refs = {mode: m.outcomes_of(walks, mode) for mode in readers}
        cache[sent] = (buf, walks, complete, refs)
        extra = sorted(set(Checker.plan(refs["strict"]) + Checker.plan(refs["salvage"])))
        for mode, rd in readers.items():
            rd.send({"name": ent["name"], "path": os.path.join(mounts[mode], ent["name"]),
                     "limit": READ_ALL_BELOW, "extra": extra, "reopen": mode == "strict"})
        sent += 1
    try:
        for i, ent in enumerate(ents):
            while sent < len(ents) and sent < i + window:
                send_next()
            buf, walks, complete, refs = cache.pop(i)
            for mode, rd in readers.items():
                try:
                    res, data = rd.result()
                except TimeoutError:
                    ck.fail(mode, "hang", ent, "no answer within %g s while reading %s"
                            % (a.timeout, rd.current), "-")
                    raise
                except EOFError:
                    ck.fail(mode, "reader died", ent, "the reader process ended", "-")
                    raise
                ref = Checker.describe(refs[mode], walks, complete)
                ck.judge(mode, ent, refs[mode], ref, res, data)
            ck.files += 1
    except ConnectionError as e:
        print("FAIL: a mount stopped answering (ENOTCONN) at %s: the daemon died on it or before"
              % e)
        rc = 1
    except (TimeoutError, EOFError):
        rc = 1
    finally:
        for rd in readers.values():
            if rc:
                rd.kill()
            else:
                rd.p.stdin.close()
                rd.p.wait()
    ck.summary()
    if ck.failures:
        rc = 1
    return rc


def cmd_report(a):
    """The failures and notes of every batch (check --record), by rule."""
    recs = [json.loads(x) for x in open(a.record)] if os.path.exists(a.record) else []
    groups = {}
    for r in recs:
        groups.setdefault((r["kind"], r["mode"], r["rule"]), []).append(r)
    files = {r["name"] for r in recs if r["kind"] == "fail"}
    print("differential: %d failures in %d files over all batches" %
          (sum(1 for r in recs if r["kind"] == "fail"), len(files)))
    for (kind, mode, rule), rs in sorted(groups.items(), key=lambda x: (x[0][0], -len(x[1]))):
        ops = {}
        for r in rs:
            op = r["op"].split("+")[0]
            ops[op] = ops.get(op, 0) + 1
        print("  %s [%s] %s: %d (%s)" % ("FAIL" if kind == "fail" else "note", mode, rule, len(rs),
                                       ", ".join("%s %d" % kv for kv in sorted(ops.items()))))
        for r in rs[:a.examples]:
            print("      %s: %s -- %s" % (r["name"], r.get("mutation", ""), r["text"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("gen")
    s.add_argument("--seed", required=True)
    s.add_argument("--first", type=int, default=0)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--manifest")
    s.add_argument("--no-seeds", action="store_true", help="do not add the unmutated seeds")
    s = sub.add_parser("check")
    s.add_argument("--manifest", required=True)
    s.add_argument("--back", required=True)
    s.add_argument("--strict", required=True, help="mount point of the strict mount")
    s.add_argument("--salvage", required=True, help="mount point of the -o salvage mount")
    s.add_argument("--keep", help="copy failing files (and why) here")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per file (a hang)")
    s.add_argument("--seed", default="?", help="the gen seed, for the messages")
    s.add_argument("--max-print", type=int, default=40)
    s.add_argument("--record", help="append failures and notes here (JSON lines) for report")
    s = sub.add_parser("report")
    s.add_argument("record")
    s.add_argument("--examples", type=int, default=3)
    sub.add_parser("reader")
    a = p.parse_args()
    if a.cmd == "gen":
        cmd_gen(a)
    elif a.cmd == "check":
        sys.exit(cmd_check(a))
    elif a.cmd == "report":
        cmd_report(a)
    else:
        cmd_reader(a)


if __name__ == "__main__":
    main()
