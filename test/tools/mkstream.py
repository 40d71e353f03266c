#!/usr/bin/env python3
"""mkstream.py: independent generator and reference decoder of sparse streams.

The sparse stream format is the one virtnbdbackup writes (see
/work/shared/REFERENCE.md section 1 and test/tools/README.md).  This tool
shares no code with odxfs: tests use it to obtain expected bytes that were
not produced by odxfs's own writer, and to replay streams independently.

Python 3 standard library plus python3-lz4 (Debian package) only.
Run `mkstream.py SUBCOMMAND --help` for each subcommand.
"""

import argparse
import bisect
import hashlib
import json
import mmap
import os
import random
import re
import sys
import zlib

try:
    import lz4.frame as lz4frame
except ImportError:  # pragma: no cover - depends on the host
    lz4frame = None
    # A pyenv or venv interpreter does not see Debian's dist-packages: run
    # again under the system interpreter, which has python3-lz4.
    if (__name__ == "__main__" and os.environ.get("MKSTREAM_NO_REEXEC") is None
            and os.path.exists("/usr/bin/python3")
            and os.path.realpath(sys.executable)
            != os.path.realpath("/usr/bin/python3")):
        os.environ["MKSTREAM_NO_REEXEC"] = "1"
        os.execv("/usr/bin/python3",
                 ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

FRAME_LEN = 40
TERM = b"\r\n"
KINDS = (b"meta", b"data", b"zero", b"stop", b"comp")
DEFAULT_CHUNK = 32 * MiB          # virtnbdbackup's NBD maximum request size
DEFAULT_LEVEL = {"lz4": 2, "zlib": 6}   # lz4: virtnbdbackup's `-z` default
DEFAULT_DATE = "2024-01-01T00:00:00.000000"
U64 = (1 << 64) - 1
ACCEPT_UPPER = False     # raw-from-stream --accept-uppercase-hex

HDR_RE = re.compile(rb"(meta|data|zero|stop|comp) ([0-9a-f]{16}) ([0-9a-f]{16})\r\n\Z")
HDR_RE_UPPER = re.compile(rb"(meta|data|zero|stop|comp) ([0-9a-fA-F]{16}) ([0-9a-fA-F]{16})\r\n\Z")


class StreamError(Exception):
    """A stream that a strict reader must refuse; .offset is the file offset."""

    def __init__(self, msg, offset=None):
        super().__init__(msg if offset is None else "%s (at file offset %d)" % (msg, offset))
        self.offset = offset


def die(msg):
    print("mkstream: " + msg, file=sys.stderr)
    sys.exit(2)


def need_lz4():
    if lz4frame is None:
        die("python3-lz4 is missing: apt-get install -y python3-lz4")


# --------------------------------------------------------------------------
# small helpers

_SUFFIX = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB,
           "g": GiB, "gb": GiB, "gib": GiB, "t": TiB, "tb": TiB, "tib": TiB,
           "p": 1024 * TiB, "pib": 1024 * TiB, "s": 512}


def parse_size(text):
    """'4096', '0x1000', '4K', '32MiB', '1T', '7s' (512-byte sectors)."""
    t = text.strip().lower()
    if t.startswith("0x"):
        return int(t, 16)
    m = re.fullmatch(r"(\d+)\s*([a-z]*)", t)
    if not m or m.group(2) not in _SUFFIX:
        raise argparse.ArgumentTypeError("bad size: %r" % text)
    return int(m.group(1)) * _SUFFIX[m.group(2)]


def header(kind, start, length):
    return b"%s %016x %016x\r\n" % (kind, start, length)


def parse_header(buf, off):
    """Strictly parse the 40-byte header at off; returns (kind, start, length)."""
    h = bytes(buf[off:off + FRAME_LEN])
    if len(h) < FRAME_LEN:
        raise StreamError("torn frame header (%d of 40 bytes)" % len(h), off)
    m = (HDR_RE_UPPER if ACCEPT_UPPER else HDR_RE).match(h)
    if not m:
        raise StreamError("bad frame header %r" % h, off)
    return m.group(1), int(m.group(2), 16), int(m.group(3), 16)


def rng_for(seed, *salt):
    return random.Random("%s:%s" % (seed, ":".join(str(s) for s in salt)))


def random_bytes(rng, n):
    parts = []
    while n > 0:
        k = min(n, 16 * MiB)
        parts.append(rng.randbytes(k))
        n -= k
    return b"".join(parts)


def random_bytes_fast(rng, n):
    """rng.randbytes(n) in 1 MiB calls: the same bytes as one call (each call
    takes whole 32-bit words), far faster than 16 MiB calls."""
    return b"".join(rng.randbytes(min(MiB, n - o)) for o in range(0, n, MiB))


# Words of the text half of the mixed pattern: log- and config-like lines.
MIXED_WORDS = (
    "the of and to in is for on that with as at by from this be are was it not "
    "kernel: systemd[1]: Started Stopped Reached target service unit session "
    "user root /usr/lib /var/log /etc/fstab error warning info debug notice "
    "INFO WARN ERROR connection request response timeout retry failed ok done "
    "GET POST HTTP/1.1 200 404 500 127.0.0.1 localhost port pid uid gid mode "
    "0644 0755 size=4096 offset=0 length= status= block inode extent journal "
    "mount umount ext4 xfs nbd qemu libvirt backup checkpoint virtnbdbackup "
    "def return if else import class self None True False int char void "
    "struct static const #include <stdio.h> { } ( ) ; = == != += -> "
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua."
).split()


def mixed_bytes(rng, n):
    """About 2:1 compressible data that is not one repeated block: each 4 KiB
    block is 2 KiB of fresh random bytes then 2 KiB of text-like bytes,
    a slice at a random offset of a pool of random words made for this call
    (4 KiB beyond the 2 KiB slice: lz4 -2 keeps 0.55, zlib -6 0.53)."""
    nblocks = (n + 4095) // 4096
    rnd = memoryview(random_bytes_fast(rng, nblocks * 2048))
    want = 2048 + min(4 * KiB, nblocks * 512)
    pool = b""
    while len(pool) < want:
        words = rng.choices(MIXED_WORDS, k=want // 5)
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        pool += "\n".join(lines).encode() + b"\n"
    pool = memoryview(pool)
    span = len(pool) - 2048
    parts = []
    for i in range(nblocks):
        o = rng.randrange(span + 1)
        parts.append(rnd[i * 2048:(i + 1) * 2048])
        parts.append(pool[o:o + 2048])
    out = b"".join(parts)
    return out[:n] if len(out) > n else out


PATTERNS = ("random", "compressible", "mixed")
PATTERN_HELP = ("data regions: random, compressible (one random 4 KiB block repeated) or "
                "mixed (each 4 KiB block half random, half text-like: about 2:1 with "
                "lz4 and zlib); default random")


def pattern_bytes(rng, n, pattern):
    if pattern == "random":
        return random_bytes(rng, n)
    if pattern == "mixed":
        return mixed_bytes(rng, n)
    # compressible: a random 4 KiB block repeated, rotated by a random amount
    base = rng.randbytes(4096)
    rot = rng.randrange(4096)
    base = base[rot:] + base[:rot]
    return (base * (n // 4096 + 1))[:n]


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def adler32_file(path):
    a = 1
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                break
            a = zlib.adler32(b, a)
    return a


def write_chksum(path, value=None):
    if value is None:
        value = adler32_file(path)
    with open(path + ".chksum", "w") as f:
        f.write("%d" % value)


def load_ranges(path):
    """[[off,len],...], [{"offset","length"[,"kind"]},...]: for a layout only
    the "data" entries count."""
    with open(path) as f:
        items = json.load(f)
    out = []
    for it in items:
        if isinstance(it, dict):
            if it.get("kind", "data") != "data":
                continue
            out.append((int(it["offset"]), int(it["length"])))
        else:
            out.append((int(it[0]), int(it[1])))
    return out


def parse_extra_meta(items):
    extra = {}
    for it in items or []:
        if "=" not in it:
            die("--extra-meta wants KEY=VALUE, got %r" % it)
        k, v = it.split("=", 1)
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    return extra


# --------------------------------------------------------------------------
# codecs

def compress_chunk(method, level, data):
    if method == "lz4":
        need_lz4()
        return lz4frame.compress(data, content_checksum=True, block_checksum=True,
                                 compression_level=level)
    if method == "zlib":
        return zlib.compress(data, level)
    raise ValueError(method)


def decompress_one(method, buf, off, limit=None):
    """Decode ONE self-delimiting compressed unit (LZ4 frame or zlib stream)
    starting at buf[off:] (not past limit); returns (data, bytes consumed).
    Checksums are verified by the codec."""
    end = len(buf) if limit is None else limit
    try:
        if method == "lz4":
            need_lz4()
            d = lz4frame.LZ4FrameDecompressor()
        elif method == "zlib":
            d = zlib.decompressobj()
        else:
            raise StreamError("unknown compressionMethod %r" % method)
        parts, pos, step = [], off, 256 * KiB
        while not d.eof:
            piece = bytes(buf[pos:min(pos + step, end)])
            if not piece:
                raise StreamError("%s unit truncated" % method, off)
            parts.append(d.decompress(piece))
            pos += len(piece)
            step = min(step * 2, 8 * MiB)
    except (RuntimeError, zlib.error) as e:
        raise StreamError("%s decode error: %s" % (method, e), off)
    return b"".join(parts), pos - off - len(d.unused_data or b"")


def decompress_exact(method, buf, off, size):
    """Decode compressed units filling exactly buf[off:off+size]."""
    if off + size > len(buf):
        raise StreamError("compressed payload truncated", off)
    parts, pos = [], off
    while pos < off + size:
        out, used = decompress_one(method, buf, pos, off + size)
        parts.append(out)
        pos += used
    return b"".join(parts)


# --------------------------------------------------------------------------
# writing streams

class Out:
    """Buffered writer that tracks the position and the Adler-32."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.parts, self.size, self.pos, self.adler = [], 0, 0, 1

    def write(self, b):
        self.parts.append(b)
        self.size += len(b)
        self.pos += len(b)
        if self.size >= 8 * MiB:
            self.flush()
        return len(b)

    def flush(self):
        if self.parts:
            b = b"".join(self.parts)
            self.adler = zlib.adler32(b, self.adler)
            self.f.write(b)
            self.parts, self.size = [], 0

    def close(self):
        self.flush()
        self.f.close()


def build_meta(opts, virtual_size, data_size, incremental):
    vkey, dkey, skey = ("virtual-size", "data-size", "stream-version") if opts.get("hyphen_keys") \
        else ("virtualSize", "dataSize", "streamVersion")
    method = opts.get("compress", "none")
    full_cp = opts.get("checkpoint") or ("virtnbdbackup.1" if incremental else "virtnbdbackup.0")
    parent = opts.get("parent")
    if parent is None:
        parent = "virtnbdbackup.0" if incremental else False
    meta = {
        vkey: virtual_size,
        dkey: data_size,
        "date": opts.get("date") or DEFAULT_DATE,
        "diskName": opts.get("disk_name") or "sda",
        "diskFormat": opts.get("disk_format") or "qcow2",
        "checkpointName": full_cp,
        "compressed": False if method == "none" else opts.get("level"),
        "compressionMethod": "lz4" if method == "none" else method,
        "parentCheckpoint": parent,
        "incremental": bool(incremental),
        skey: opts.get("stream_version", 2),
    }
    meta.update(opts.get("extra_meta") or {})
    return meta


def write_stream(path, virtual_size, frames, data_fn, opts, incremental=False):
    """frames: list of (kind, start, length), kind b"data" or b"zero";
    data_fn(index, start, length) -> bytes for data frames.
    opts: dict with compress (none|lz4|zlib), level, chunk_size, hyphen_keys,
    extra_meta, checkpoint, parent, date, disk_name, disk_format, chksum,
    data_size (override), stream_version.
    Returns a summary dict."""
    method = opts.get("compress", "none")
    if method != "none" and opts.get("level") is None:
        opts["level"] = DEFAULT_LEVEL[method]
    chunk = opts.get("chunk_size") or DEFAULT_CHUNK
    data_size = sum(f[2] for f in frames if f[0] == b"data")
    if opts.get("data_size") is not None:
        data_size = opts["data_size"]
    meta = build_meta(opts, virtual_size, data_size, incremental)
    mjson = json.dumps(meta, indent=4).encode("utf-8")
    out = Out(path)
    out.write(header(b"meta", 0, len(mjson)))
    out.write(mjson)
    out.write(TERM)
    trailer = []
    ndata = nzero = 0
    for i, (kind, start, length) in enumerate(frames):
        if kind == b"zero":
            out.write(header(b"zero", start, length))
            nzero += 1
            continue
        out.write(header(b"data", start, length))
        data = data_fn(i, start, length)
        if len(data) != length:
            raise RuntimeError("data_fn returned %d bytes for a %d-byte frame" % (len(data), length))
        if method == "none":
            out.write(data)
        elif length >= chunk:
            sizes = []
            for c in range(0, length, chunk):
                sizes.append(out.write(compress_chunk(method, opts["level"], data[c:c + chunk])))
            trailer.append({str(sum(sizes)): sizes})
        else:
            trailer.append(out.write(compress_chunk(method, opts["level"], data)))
        out.write(TERM)
        ndata += 1
    out.write(header(b"stop", 0, 0))
    if method != "none" and not opts.get("no_trailer"):
        tj = json.dumps(trailer).encode()
        out.write(tj)
        out.write(TERM)
        out.write(header(b"comp", 0, len(tj)))
    out.close()
    if opts.get("chksum", True):
        write_chksum(path, out.adler)
    return {"stream": path, "size": out.pos, "adler32": out.adler, "data_frames": ndata,
            "zero_frames": nzero, "dataSize": data_size, "virtualSize": virtual_size,
            "compress": method}


# --------------------------------------------------------------------------
# reading streams (the reference decoder)

def meta_get(meta, camel, hyphen, default=None):
    if camel in meta:
        return meta[camel]
    return meta.get(hyphen, default)


class Frame:
    __slots__ = ("index", "kind", "start", "length", "hdr_off", "payload_off",
                 "payload_len", "end_off", "chunks", "dindex")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__ if k != "kind"} | \
            {"kind": self.kind.decode()}


class Stream:
    """Index of a stream file.

    strict: every structural rule is checked (see README).
    partial: a torn tail (no stop frame, torn header or payload) ends the walk
    quietly instead of raising; .torn describes it.
    use_trailer: False decodes compressed payloads by their own framing
    (self-delimiting LZ4 frames / zlib streams), ignoring the trailer."""

    def __init__(self, path, partial=False, use_trailer=True):
        self.path = path
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        f.close()
        self.size = size
        self.frames = []
        self.torn = None
        self.trailer = None
        self.stop_off = None
        self._parse(partial, use_trailer)

    # -- meta
    def _parse_meta(self):
        kind, start, length = parse_header(self.buf, 0)
        if kind != b"meta":
            raise StreamError("first frame is %r, not meta" % kind.decode(), 0)
        if start != 0:
            raise StreamError("meta header start is not 0", 0)
        if FRAME_LEN + length + 2 > self.size:
            raise StreamError("meta payload truncated", FRAME_LEN)
        raw = bytes(self.buf[FRAME_LEN:FRAME_LEN + length])
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise StreamError("meta JSON: %s" % e, FRAME_LEN)
        if not isinstance(meta, dict):
            raise StreamError("meta JSON is not an object", FRAME_LEN)
        if self.buf[FRAME_LEN + length:FRAME_LEN + length + 2] != TERM:
            raise StreamError("meta payload not followed by CRLF", FRAME_LEN + length)
        self.meta = meta
        self.meta_end = FRAME_LEN + length + 2
        vs = meta_get(meta, "virtualSize", "virtual-size")
        if not isinstance(vs, int) or isinstance(vs, bool) or vs < 0:
            raise StreamError("meta virtualSize missing or not an integer", FRAME_LEN)
        if vs > (1 << 63) - 1:
            raise StreamError("meta virtualSize %d does not fit in off_t" % vs, FRAME_LEN)
        self.virtual_size = vs
        ds = meta_get(meta, "dataSize", "data-size")
        if ds is not None and (not isinstance(ds, int) or isinstance(ds, bool) or ds < 0):
            raise StreamError("meta dataSize not an integer", FRAME_LEN)
        self.data_size = ds
        ver = meta_get(meta, "streamVersion", "stream-version", 1)
        comp = meta.get("compressed", False)
        self.compressed = ver == 2 and comp is not False and comp is not None
        self.method = meta.get("compressionMethod", "lz4") if self.compressed else "none"
        if self.compressed and self.method not in ("lz4", "zlib"):
            raise StreamError("unknown compressionMethod %r" % self.method, FRAME_LEN)

    # -- trailer
    def _parse_trailer(self):
        end = self.size
        if end < FRAME_LEN + 2 or not self.buf[end - FRAME_LEN:end].startswith(b"comp "):
            return None
        off = end - FRAME_LEN
        kind, start, tlen = parse_header(self.buf, off)
        if start != 0:
            raise StreamError("comp header start is not 0", off)
        tstart = off - 2 - tlen
        if tstart < self.meta_end + FRAME_LEN:
            raise StreamError("comp length %d points before the stop frame" % tlen, off)
        if self.buf[off - 2:off] != TERM:
            raise StreamError("trailer JSON not followed by CRLF", off - 2)
        if bytes(self.buf[tstart - FRAME_LEN:tstart]) != header(b"stop", 0, 0):
            raise StreamError("trailer (comp length %d) not preceded by a stop frame" % tlen,
                              tstart)
        try:
            tr = json.loads(bytes(self.buf[tstart:off - 2]).decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise StreamError("trailer JSON: %s" % e, tstart)
        if not isinstance(tr, list):
            raise StreamError("trailer JSON is not a list", tstart)
        sizes = []
        for i, e in enumerate(tr):
            if isinstance(e, int) and not isinstance(e, bool) and e >= 0:
                sizes.append((e, None))
            elif isinstance(e, dict) and len(e) == 1:
                (k, v), = e.items()
                if not re.fullmatch(r"\d+", k) or not isinstance(v, list) or not v or \
                        not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
                    raise StreamError("trailer entry %d malformed: %r" % (i, e), tstart)
                if sum(v) != int(k):
                    raise StreamError("trailer entry %d: chunk sizes sum to %d, key says %s"
                                      % (i, sum(v), k), tstart)
                sizes.append((int(k), v))
            else:
                raise StreamError("trailer entry %d malformed: %r" % (i, e), tstart)
        self.trailer_off = tstart
        return sizes

    def _parse(self, partial, use_trailer):
        if self.size < FRAME_LEN:
            raise StreamError("file shorter than a frame header", 0)
        self._parse_meta()
        tr = None
        if self.compressed:
            tr = self._parse_trailer()
            self.trailer = tr
            if not use_trailer:
                tr = None
        data_end_limit = self.trailer_off if self.trailer is not None else self.size
        pos = self.meta_end
        dcount = 0
        buf = self.buf
        vsize = self.virtual_size
        frames = self.frames
        while True:
            if pos + FRAME_LEN > data_end_limit:
                if partial:
                    self.torn = {"where": "header", "offset": pos}
                    break
                raise StreamError("stream ends without a stop frame", pos)
            kind, start, length = parse_header(buf, pos)
            if kind == b"stop":
                if start != 0 or length != 0:
                    raise StreamError("stop frame is not 'stop 0 0'", pos)
                self.stop_off = pos
                pos += FRAME_LEN
                break
            if kind not in (b"data", b"zero"):
                raise StreamError("unexpected %r frame" % kind.decode(), pos)
            if start + length > vsize:
                raise StreamError("%s frame [%d, +%d) beyond virtualSize %d"
                                  % (kind.decode(), start, length, vsize), pos)
            fr = Frame(index=len(frames), kind=kind, start=start, length=length, hdr_off=pos,
                       payload_off=pos + FRAME_LEN)
            if kind == b"zero":
                fr.payload_len = 0
                fr.end_off = pos + FRAME_LEN
                frames.append(fr)
                pos = fr.end_off
                continue
            if length == 0:
                raise StreamError("data frame of length 0", pos)
            fr.dindex = dcount
            p = pos + FRAME_LEN
            try:
                if not self.compressed:
                    fr.payload_len = length
                elif tr is not None:
                    if dcount >= len(tr):
                        raise StreamError("more data frames than trailer entries (%d)" % len(tr), pos)
                    fr.payload_len, fr.chunks = tr[dcount]
                else:
                    # self-delimiting: decode units until `length` bytes come out
                    got, q, chunks = 0, p, []
                    while got < length:
                        out, used = decompress_one(self.method, buf, q)
                        got += len(out)
                        chunks.append(used)
                        q += used
                    if got != length:
                        raise StreamError("data frame decodes to %d bytes, header says %d"
                                          % (got, length), pos)
                    fr.payload_len = q - p
                    fr.chunks = chunks if len(chunks) > 1 else None
                end = p + fr.payload_len
                if end + 2 > data_end_limit:
                    raise StreamError("data payload truncated", p)
                if buf[end:end + 2] != TERM:
                    raise StreamError("data payload not followed by CRLF", end)
            except StreamError:
                if partial:
                    self.torn = {"where": "payload", "offset": pos, "frame": len(frames)}
                    break
                raise
            fr.end_off = end + 2
            frames.append(fr)
            dcount += 1
            pos = fr.end_off
        self.ndata = dcount
        if self.stop_off is not None:
            if self.compressed and self.trailer is not None:
                if pos != self.trailer_off:
                    raise StreamError("%d bytes between stop frame and trailer"
                                      % (self.trailer_off - pos), pos)
                if len(self.trailer) != dcount:
                    raise StreamError("trailer has %d entries for %d data frames"
                                      % (len(self.trailer), dcount), self.trailer_off)
            elif pos != self.size:
                if self.compressed and partial:
                    self.torn = {"where": "trailer", "offset": pos}
                elif self.compressed:
                    raise StreamError("compressed stream without a valid trailer", pos)
                else:
                    raise StreamError("%d bytes after the stop frame" % (self.size - pos), pos)
            elif self.compressed and not partial:
                raise StreamError("compressed stream without a trailer", pos)
        total = sum(f.length for f in frames if f.kind == b"data")
        if self.stop_off is not None and self.data_size is not None and total != self.data_size:
            raise StreamError("dataSize %d != sum of data frame lengths %d"
                              % (self.data_size, total), FRAME_LEN)

    def payload(self, fr):
        """Uncompressed bytes of data frame fr (codec checksums verified)."""
        p = fr.payload_off
        if not self.compressed:
            return bytes(self.buf[p:p + fr.length])
        if fr.chunks:
            parts, q = [], p
            for c in fr.chunks:
                parts.append(decompress_exact(self.method, self.buf, q, c))
                q += c
            out = b"".join(parts)
        else:
            out = decompress_exact(self.method, self.buf, p, fr.payload_len)
        if len(out) != fr.length:
            raise StreamError("data frame decodes to %d bytes, header says %d"
                              % (len(out), fr.length), fr.hdr_off)
        return out


class IntervalSet:
    """Disjoint sorted [start, end) intervals: where data has been written."""

    def __init__(self):
        self.s, self.e = [], []

    def add(self, a, b):
        i = bisect.bisect_left(self.e, a)       # first interval with end >= a
        j = bisect.bisect_right(self.s, b)      # first interval with start > b
        if i < j:
            a = min(a, self.s[i])
            b = max(b, self.e[j - 1])
        self.s[i:j] = [a]
        self.e[i:j] = [b]

    def take(self, a, b):
        """Remove [a,b) and return the removed pieces."""
        i = bisect.bisect_right(self.e, a)
        j = bisect.bisect_left(self.s, b)
        if i >= j:
            return []
        pieces = [(max(a, self.s[k]), min(b, self.e[k])) for k in range(i, j)]
        ns, ne = [], []
        if self.s[i] < a:
            ns.append(self.s[i]); ne.append(a)
        if self.e[j - 1] > b:
            ns.append(b); ne.append(self.e[j - 1])
        self.s[i:j] = ns
        self.e[i:j] = ne
        return pieces


def write_zeros(fd, a, b):
    z = bytes(min(b - a, 8 * MiB))
    while a < b:
        n = min(b - a, len(z))
        os.pwrite(fd, z[:n], a)
        a += n


def replay(st, out_path, zero_semantics="later-wins", upto_off=None, frames=None):
    """Replay the frames of Stream st into a sparse raw image of virtualSize.
    zero-semantics later-wins: a zero frame zeroes what earlier frames wrote;
    noop: zero frames are skipped (virtnbdbackup's restore onto a new image).
    Only frames that end at or before upto_off are applied when it is given."""
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, st.virtual_size)
        written = IntervalSet()
        applied = 0
        for fr in (frames if frames is not None else st.frames):
            if upto_off is not None and fr.end_off > upto_off:
                continue
            if fr.kind == b"zero":
                if zero_semantics == "later-wins":
                    for a, b in written.take(fr.start, fr.start + fr.length):
                        write_zeros(fd, a, b)
            else:
                data = st.payload(fr)
                os.pwrite(fd, data, fr.start)
                written.add(fr.start, fr.start + fr.length)
            applied += 1
    finally:
        os.close(fd)
    return applied


# --------------------------------------------------------------------------
# the damage policy (odxfs-stream(5), "Damage" and "Limits"): what a strict
# and a salvaging reader serve of a file that may be damaged
#
# Written from the manual page alone, apart from the Stream class above
# (which is strict in its own older way: it refuses a data frame of length
# 0 and upper-case hex, and calls any payload error of a --allow-partial
# stream torn).  policy_outcomes() walks a file as the page says and gives,
# for one policy, every outcome a reader may have: "plain" (not a stream:
# served as the file's own bytes), "reject" (open fails with EIO) or an
# image of virtualSize made of data, zero and BAD pieces (BAD: reads fail
# with EIO).  Where the page leaves a choice open (see POLICY_CHOICES in the
# README), every way of deciding it is walked and each gives one outcome.

POLICY_META_MAX = 64 * KiB
POLICY_TRAILER_MAX = 256 * MiB
POLICY_CHUNK_MAX = 32 * MiB         # decoded size of one chunk
POLICY_CCHUNK_MAX = 33 * MiB        # compressed size of one chunk
POLICY_VARIANTS = 64                # at most this many walks of one file
HDR_ANY = re.compile(rb"(meta|data|zero|stop|comp) ([0-9a-fA-F]{16}) ([0-9a-fA-F]{16})\r\n\Z")
_HEXB = set(b"0123456789abcdefABCDEF")


def header_any(buf, off):
    """(kind, start, length) of a valid header at off (either hex case), else None."""
    m = HDR_ANY.match(bytes(buf[off:off + FRAME_LEN]))
    return (m.group(1), int(m.group(2), 16), int(m.group(3), 16)) if m else None


def header_prefix_ok(b):
    """Whether b (shorter than a header) can be the start of a valid header."""
    if not any(k.startswith(bytes(b[:4])) for k in KINDS):
        return False
    for i, c in enumerate(b):
        if i < 4:
            continue
        if i in (4, 21):
            ok = c == 0x20
        elif i == 38:
            ok = c == 0x0d
        elif i == 39:
            ok = c == 0x0a
        else:
            ok = c in _HEXB
        if not ok:
            return False
    return True


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def json_rfc(raw, hook=None):
    """Parse raw bytes as one RFC 8259 JSON text (UTF-8, no NaN/Infinity,
    control characters escaped); raises ValueError."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("not UTF-8: %s" % e)
    return json.loads(text, object_pairs_hook=hook, parse_constant=_no_constant)


def _same(a, b):
    return type(a) is type(b) and a == b


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class Outcome:
    """What one policy serves of one file.

    kind "plain": not a stream, the file's bytes (pieces cover them);
    "reject": the open fails with EIO; "image": size bytes made of pieces
    [start, end, kind, src, off] ("data": src[off:off + end - start],
    "zero", "bad": EIO).  sticky: a strict image with damage found only
    when a chunk is decoded: after the first EIO every read may fail."""

    def __init__(self, kind, size=0, pieces=(), sticky=False, why=""):
        self.kind, self.size, self.pieces, self.sticky, self.why = kind, size, list(pieces), sticky, why
        self._starts = [p[0] for p in self.pieces]

    def block(self, a, b):
        """(bytes, has_bad) of [a, b) (b <= size); bytes is None where a
        piece is bad."""
        i = max(0, bisect.bisect_right(self._starts, a) - 1)
        parts, bad = [], False
        while i < len(self.pieces) and self.pieces[i][0] < b:
            s, e, kind, src, off = self.pieces[i][:5]
            lo, hi = max(s, a), min(e, b)
            if lo < hi:
                if kind == "bad":
                    bad = True
                elif kind == "zero":
                    parts.append(bytes(hi - lo))
                else:
                    parts.append(bytes(src[off + lo - s:off + hi - s]))
            i += 1
        return (None if bad else b"".join(parts)), bad

    def signature(self):
        if self.kind != "image":
            return (self.kind, self.size)
        return (self.kind, self.size, self.sticky,
                tuple((p[0], p[1], p[2], id(p[3]) if p[3] is not None else None,
                       p[4] - p[0] if p[2] == "data" else 0) for p in self.pieces))

    def map(self):
        """[[start, length, kind], ...], adjacent pieces of one kind merged."""
        out = []
        for p in self.pieces:
            if out and out[-1][2] == p[2] and out[-1][0] + out[-1][1] == p[0]:
                out[-1][1] += p[1] - p[0]
            else:
                out.append([p[0], p[1] - p[0], p[2]])
        return out


class Overlay:
    """The guest ranges frames give, later frames winning: sorted disjoint
    pieces [start, end, kind, src, off, why]."""

    def __init__(self, size):
        self.size = size
        self.p = []

    def put(self, a, b, kind, src=None, off=0, why=None):
        a, b = max(a, 0), min(b, self.size)
        if a >= b:
            return
        out = []
        for q in self.p:
            s, e = q[0], q[1]
            if e <= a or s >= b:
                out.append(q)
                continue
            if s < a:
                out.append([s, a] + q[2:])
            if e > b:
                out.append([b, e, q[2], q[3], q[4] + (b - s) if q[2] == "data" else 0, q[5]])
        out.append([a, b, kind, src, off, why])
        out.sort(key=lambda q: q[0])
        self.p = out

    def fill(self, gap):
        """Pieces covering [0, size): ranges no frame gave are `gap`."""
        out, pos = [], 0
        for q in self.p:
            if q[0] > pos:
                out.append([pos, q[0], gap, None, 0, None])
            out.append(q)
            pos = q[1]
        if pos < self.size:
            out.append([pos, self.size, gap, None, 0, None])
        return out


class _Stop(Exception):
    pass


class PolicyWalk:
    """One walk of a file by the rules of odxfs-stream(5); choose(name,
    options) decides the points the page leaves open (options[0] unless
    policy_outcomes says otherwise)."""

    def __init__(self, buf, choose, cache=None):
        self.buf = buf
        self.n = len(buf)
        self.choose = choose
        self.cache = {} if cache is None else cache
        self.result = None      # "plain", "reject" or "stream"
        self.why = ""
        self.damage = []        # (file offset, what): found while indexing
        self.torn = None        # (file offset, what)
        self.corrupt = None     # (file offset, what): the walk could not go on
        self.last_end = 0       # end of the in-bounds frames so far, and
        self.unordered = False  # whether one started before it (overlap)
        self.lost = False       # the walk went on past a length it could not confirm
        self.ov = None
        self.vs = 0
        self.method = "none"
        self.complete = False
        try:
            self._run()
        except _Stop:
            pass
        if self.result == "stream" and not self.complete and self.has_ds and \
                not (_is_int(self.ds) and 0 <= self.ds <= U64) and self.choose(
                    "torn stream with a dataSize that is not an integer below 2^64",
                    ("not damage", "damage")) == "damage":
            self.dmg(FRAME_LEN, "meta dataSize %r is not an integer" % (self.ds,))

    # -- helpers
    def dmg(self, off, what):
        self.damage.append((off, what))

    def _reject(self, off, what):
        self.result = "reject"
        self.why = "%s (at file offset %d)" % (what, off)
        raise _Stop()

    # -- meta
    def _run(self):
        buf, n = self.buf, self.n
        h = header_any(buf, 0) if n >= FRAME_LEN else None
        if h is None or h[0] != b"meta":
            self.result = "plain"
            self.why = "no meta frame header at the start: not a stream"
            return
        _, mstart, mlen = h
        if mstart != 0:
            c = self.choose("meta header start not 0", ("damage", "not damage", "not served"))
            if c == "not served":
                self._reject(5, "meta header start is not 0")
            if c == "damage":
                self.dmg(5, "meta header start is not 0")
        if mlen == 0 or mlen > POLICY_META_MAX:
            self._reject(22, "meta length %d outside 1..64 KiB" % mlen)
        if FRAME_LEN + mlen > n:
            self._reject(FRAME_LEN, "meta JSON cut by the end of the file")
        self._meta(buf[FRAME_LEN:FRAME_LEN + mlen])
        pos = FRAME_LEN + mlen + 2
        crlf = bytes(buf[FRAME_LEN + mlen:pos])
        if crlf != TERM:
            if len(crlf) < 2 and TERM.startswith(crlf):
                if self.choose("meta CRLF cut by the end of the file", ("torn", "damage")) == "damage":
                    self.dmg(FRAME_LEN + mlen, "meta JSON not followed by CRLF")
            else:
                self.dmg(FRAME_LEN + mlen, "meta JSON not followed by CRLF")
        self.result = "stream"
        self.ov = Overlay(self.vs)
        self.frames_start = pos
        self.has_comp = False
        self.tr = self.tr_entries = None
        if self.method != "none":
            self._trailer(pos)
        self._walk(pos)

    def _meta(self, raw):
        tops = []

        def hook(pairs):
            tops.append(pairs)
            return dict(pairs)
        try:
            obj = json_rfc(raw, hook)
        except ValueError as e:
            self._reject(FRAME_LEN, "meta JSON is not valid JSON: %s" % e)
        if not isinstance(obj, dict):
            self._reject(FRAME_LEN, "meta JSON is not an object")
        top = tops[-1]

        def get(camel, hyphen=None):
            found = []
            for key in (camel, hyphen):
                vals = [v for k, v in top if k == key] if key else []
                if not vals:
                    continue
                v = vals[-1]
                if any(not _same(vals[0], x) for x in vals[1:]):
                    if self.choose("meta key %s given twice" % key, ("last", "first")) == "first":
                        v = vals[0]
                found.append(v)
            if not found:
                return False, None
            if len(found) == 2 and not _same(found[0], found[1]):
                if self.choose("meta %s and %s differ" % (camel, hyphen), (camel, hyphen)) == hyphen:
                    return True, found[1]
            return True, found[0]

        has, vs = get("virtualSize", "virtual-size")
        if not has:
            self._reject(FRAME_LEN, "meta has no virtualSize")
        if isinstance(vs, float) and vs.is_integer() and 0 <= vs < 2.0 ** 63:
            if self.choose("meta virtualSize %r is a float" % vs, ("not served", "integer")) == "not served":
                self._reject(FRAME_LEN, "meta virtualSize %r is not an integer" % vs)
            vs = int(vs)
        if not _is_int(vs) or vs < 0:
            self._reject(FRAME_LEN, "meta virtualSize %r is not a non-negative integer" % (vs,))
        if vs >= 1 << 63:
            self._reject(FRAME_LEN, "meta virtualSize %d is not below 2^63" % vs)
        self.vs = vs
        self.has_ds, self.ds = get("dataSize", "data-size")
        has, ver = get("streamVersion", "stream-version")
        if not has:
            ver = 1
        elif not (_is_int(ver) and ver in (1, 2)):
            # "1 or 2", but not in the page's list of what is checked
            c = self.choose("meta streamVersion %r" % (ver,),
                            ("read as 2", "read as 1", "damage, read as 2", "damage, read as 1",
                             "not served"))
            if c == "not served":
                self._reject(FRAME_LEN, "meta streamVersion %r" % (ver,))
            if c.startswith("damage"):
                self.dmg(FRAME_LEN, "meta streamVersion %r is not 1 or 2" % (ver,))
            ver = 2 if c.endswith("2") else 1
        has, comp = get("compressed")
        compressed = ver == 2 and has and comp is not False and comp is not None
        has, m = get("compressionMethod")
        if compressed:
            if not has:
                m = "lz4"
            elif not isinstance(m, str):
                if self.choose("meta compressionMethod %r is not a string" % (m,),
                               ("not served", "lz4")) == "not served":
                    self._reject(FRAME_LEN, "meta compressionMethod %r" % (m,))
                m = "lz4"
            if m not in ("lz4", "zlib"):
                self._reject(FRAME_LEN, "meta compressionMethod %r is not supported" % m)
            self.method = m
            if m == "lz4":
                need_lz4()
        elif has and m not in ("lz4", "zlib"):
            c = self.choose("meta compressionMethod %r of an uncompressed stream" % (m,),
                            ("ignored", "damage", "not served"))
            if c == "not served":
                self._reject(FRAME_LEN, "meta compressionMethod %r" % (m,))
            if c == "damage":
                self.dmg(FRAME_LEN, "meta compressionMethod %r" % (m,))

    # -- trailer
    def _trailer(self, frames_start):
        buf, n = self.buf, self.n
        if n - FRAME_LEN < frames_start:
            return
        h = header_any(buf, n - FRAME_LEN)
        if h is None or h[0] != b"comp":
            return      # no trailer: chunk ends are measured, as in a torn stream
        self.has_comp = True
        _, cstart, tlen = h
        coff = n - FRAME_LEN
        if cstart != 0:
            c = self.choose("comp header start not 0", ("damage, trailer used", "not damage",
                                                        "damage, trailer ignored"))
            if c != "not damage":
                self.dmg(coff, "comp header start is not 0")
            if c.endswith("ignored"):
                return
        tstart = coff - 2 - tlen
        if tlen == 0 or tlen > POLICY_TRAILER_MAX or tstart < frames_start:
            self.dmg(coff, "comp length %d: no trailer there" % tlen)
            return
        if bytes(buf[coff - 2:coff]) != TERM:
            self.dmg(coff - 2, "trailer JSON not followed by CRLF")
            if self.choose("trailer JSON not followed by CRLF", ("trailer used", "trailer ignored")) != "trailer used":
                return
        entries, err = self._trailer_entries(bytes(buf[tstart:coff - 2]))
        if err is not None:
            self.dmg(tstart, "trailer: %s" % err)
            c = self.choose("trailer JSON invalid after %d entries" % len(entries),
                            ("trailer ignored", "entries before the error used",
                             "entries before the last one before the error used"))
            if c == "trailer ignored":
                return
            if c.startswith("entries before the last"):
                entries = entries[:-1]
        bad = next((i for i, e in enumerate(entries) if e[0] != "ok"), None)
        if bad is not None:
            self.dmg(tstart, "trailer entry %d: %s" % (bad, entries[bad][2]))
            if self.choose("trailer with a wrong entry", ("trailer used", "trailer ignored")) \
                    == "trailer ignored":
                return
        self.tr = entries
        self.tr_entries = entries
        self.tr_start = tstart
        self.tr_complete = err is None

    @staticmethod
    def _trailer_entries(raw):
        """The entries of trailer JSON raw, read one by one as a reader that
        never holds the trailer whole does; returns (entries, error or None).
        Entry: ("ok"|"limit"|"malformed", sizes or None, why)."""
        cut = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text, cut = raw[:e.start].decode("utf-8"), "trailer JSON is not UTF-8"
        dec = json.JSONDecoder(parse_constant=_no_constant)
        out = []

        def skip(i):
            while i < len(text) and text[i] in " \t\n\r":
                i += 1
            return i

        def end(i):
            i = skip(i)
            if i != len(text):
                return out, "bytes after the trailer list"
            return out, cut
        i = skip(0)
        if i >= len(text) or text[i] != "[":
            return out, cut or "trailer JSON is not a list"
        i = skip(i + 1)
        if i < len(text) and text[i] == "]":
            return end(i + 1)
        while True:
            try:
                v, j = dec.raw_decode(text, i)
            except ValueError as e:
                return out, cut or "trailer JSON: %s" % e
            out.append(PolicyWalk._entry(v))
            i = skip(j)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < len(text) and text[i] == "]":
                return end(i + 1)
            return out, cut or "trailer JSON: expected , or ] at character %d" % i

    @staticmethod
    def _entry(v):
        def size_ok(c):
            return _is_int(c) and 1 <= c < (1 << 32) and c <= POLICY_CCHUNK_MAX
        if _is_int(v):
            if size_ok(v):
                return ("ok", [v], "")
            if v < 1:
                return ("malformed", None, "chunk size %d" % v)
            return ("limit", [v], "chunk size %d over the limits" % v)
        if isinstance(v, dict) and len(v) == 1:
            (k, sizes), = v.items()
            if re.fullmatch(r"[0-9]+", k) and isinstance(sizes, list) and sizes and \
                    all(_is_int(c) and c >= 1 for c in sizes):
                if sum(sizes) != int(k):
                    return ("malformed", sizes, "chunk sizes sum to %d, key %s" % (sum(sizes), k))
                if not all(size_ok(c) for c in sizes):
                    return ("limit", sizes, "a chunk size over the limits")
                return ("ok", sizes, "")
        return ("malformed", None, "entry %.60r" % (v,))

    # -- codecs
    def _decode_exact(self, q, c, share):
        """Decode chunk buf[q:q+c] as ONE unit giving exactly share bytes:
        (bytes or None, why)."""
        key = ("x", self.method, q, c, share)
        if key in self.cache:
            return self.cache[key]
        region = bytes(self.buf[q:q + c])
        out, why = None, None
        try:
            if self.method == "lz4":
                d = lz4frame.LZ4FrameDecompressor()
                got = d.decompress(region, max_length=share + 1)
                done, rest = d.eof, d.unused_data
            else:
                d = zlib.decompressobj()
                got = d.decompress(region, share + 1)
                done, rest = d.eof, d.unused_data
            if not done:
                why = "chunk does not end where its size says (or decodes to more than %d bytes)" % share
            elif rest:
                why = "%d bytes after the end of the chunk's %s unit" % (len(rest), self.method)
            elif len(got) != share:
                why = "size:chunk decodes to %d bytes, its share is %d" % (len(got), share)
            else:
                out = got
        except (RuntimeError, zlib.error) as e:
            why = "%s decode error: %s" % (self.method, e)
        self.cache[key] = (out, why)
        return out, why

    def _measure(self, q):
        """One chunk at q in a frame without trailer entry: ("ok", used,
        decoded bytes or None, decoded size or None) | ("torn",) | ("bad", why)."""
        how = "decode"
        if self.method == "lz4":
            how = self.choose("LZ4 chunk of a frame without trailer entry measured by",
                              ("walking its blocks", "walking its blocks, header checksum checked",
                               "decoding it"))
        key = ("m", self.method, q, how)
        if key in self.cache:
            return self.cache[key]
        if how.startswith("walking"):
            r = self._lz4_walk(q, how.endswith("checked"))
        else:
            r = self._unit_decode(q)
        self.cache[key] = r
        return r

    def _unit_decode(self, q):
        region = bytes(self.buf[q:self.n])
        try:
            if self.method == "lz4":
                d = lz4frame.LZ4FrameDecompressor()
                got = d.decompress(region, max_length=POLICY_CHUNK_MAX + 1)
            else:
                d = zlib.decompressobj()
                got = d.decompress(region, POLICY_CHUNK_MAX + 1)
        except (RuntimeError, zlib.error) as e:
            return ("bad", "%s decode error: %s" % (self.method, e))
        if len(got) > POLICY_CHUNK_MAX:
            return ("bad", "chunk decodes to more than 32 MiB")
        if not d.eof:
            return ("torn",)
        return ("ok", len(region) - len(d.unused_data or b""), got, len(got))

    def _lz4_walk(self, q, check_hc):
        buf, n = self.buf, self.n
        if q + 7 > n:
            return ("torn",)
        if int.from_bytes(buf[q:q + 4], "little") != 0x184D2204:
            return ("bad", "no LZ4 frame magic")
        flg, bd = buf[q + 4], buf[q + 5]
        if flg >> 6 != 1 or (bd >> 4) & 7 < 4:
            return ("bad", "LZ4 frame descriptor")
        has_size, has_dict, bsum, csum = flg & 8, flg & 1, flg & 0x10, flg & 4
        hlen = 7 + (8 if has_size else 0) + (4 if has_dict else 0)
        if q + hlen > n:
            return ("torn",)
        if check_hc:
            try:
                lz4frame.get_frame_info(bytes(buf[q:q + hlen]))
            except RuntimeError as e:
                return ("bad", "LZ4 frame header: %s" % e)
        ulen = int.from_bytes(buf[q + 6:q + 14], "little") if has_size else None
        if ulen is not None and ulen > POLICY_CHUNK_MAX:
            return ("bad", "LZ4 content size over 32 MiB")
        bmax = 1 << (2 * ((bd >> 4) & 7) + 8)
        p = q + hlen
        while True:
            if p + 4 > n:
                return ("torn",)
            v = int.from_bytes(buf[p:p + 4], "little")
            p += 4
            if v == 0:
                break
            bl = v & 0x7fffffff
            if bl > bmax:
                return ("bad", "LZ4 block size %d over the maximum" % bl)
            p += bl + (4 if bsum else 0)
            if p > n:
                return ("torn",)
        if csum:
            p += 4
        if p > n:
            return ("torn",)
        return ("ok", p - q, None, ulen)

    def _lz4_content_size(self, q, c):
        """Content size in the LZ4 frame header of the chunk at q, or None."""
        if self.choose("LZ4 split size read from a header", ("header checksum checked", "as is")) == "as is":
            if q + 14 > self.n or int.from_bytes(self.buf[q:q + 4], "little") != 0x184D2204 \
                    or not self.buf[q + 4] & 8:
                return None
            return int.from_bytes(self.buf[q + 6:q + 14], "little")
        try:
            return lz4frame.get_frame_info(bytes(self.buf[q:q + min(c, 32)])).get("content_size") or None
        except RuntimeError:
            return None

    def _split(self, L, q, sizes):
        k = len(sizes)
        if k == 1:
            return L if L <= POLICY_CHUNK_MAX else None
        m = POLICY_CHUNK_MAX
        if (k - 1) * m < L <= k * m:
            return m
        if self.method == "lz4":
            cs = self._lz4_content_size(q, sizes[0])
            if cs and cs <= POLICY_CHUNK_MAX and (k - 1) * cs < L <= k * cs:
                return cs
        return None

    # -- frames
    def _eof(self, pos, what, frame_bad):
        """The file ends inside the frame at pos."""
        if self.has_comp:
            c = self.choose("frame cut by the end of a file with a trailer", ("torn", "damage"))
        elif frame_bad:
            c = self.choose("damaged frame cut by the end of the file", ("torn", "damage"))
        else:
            c = "torn"
        if c == "torn":
            # the frame is not complete: what its header says is moot
            del self.damage[self.frame_mark:]
            self.torn = (pos, what)
        else:
            self.dmg(pos, what)
            self.corrupt = (pos, what)
        raise _Stop()

    def _walk(self, pos):
        buf, n, vs, ov = self.buf, self.n, self.vs, self.ov
        self.dcount = 0
        self.total = self.zsum = 0
        self.complete = False
        tr = self.tr
        while True:
            if pos >= n:
                self.torn = (pos, "no stop frame")
                return
            if pos + FRAME_LEN > n:
                if header_prefix_ok(buf[pos:n]) or \
                        self.choose("bytes at the end too short for a header", ("torn", "damage")) == "torn":
                    self.torn = (pos, "frame header cut by the end of the file")
                    return
                self.dmg(pos, "not a frame header")
                self.corrupt = (pos, "not a frame header")
                return
            h = header_any(buf, pos)
            if h is None:
                self.dmg(pos, "invalid frame header")
                self.corrupt = (pos, "invalid frame header %r" % bytes(buf[pos:pos + FRAME_LEN]))
                return
            kind, s, L = h
            if kind in (b"meta", b"comp"):
                self.dmg(pos, "%s header before the stop frame" % kind.decode())
                self.corrupt = (pos, "%s header before the stop frame" % kind.decode())
                return
            if kind == b"stop":
                if s or L:
                    self.dmg(pos, "stop frame is not stop 0 0")
                self.complete = True
                self._tail(pos + FRAME_LEN)
                return
            if s + L > U64:
                self.dmg(pos, "start + length wraps")
                self.corrupt = (pos, "%s frame start + length wraps" % kind.decode())
                return
            if s + L <= vs:
                # odxfs-stream(5): after a bad header, overlapping frames
                # before it make the whole image bad (a lost frame may
                # have replaced any of them)
                if s < self.last_end:
                    self.unordered = True
                self.last_end = max(self.last_end, s + L)
            if kind == b"zero":
                self.zsum += L
                if self.zsum > U64:
                    self._sum_passed(pos, "zero")
                    ov.put(s, s + L, "bad", why="index")
                elif s + L > vs:
                    self.dmg(pos, "zero frame beyond virtualSize")
                    ov.put(s, s + L, "bad", why="index")
                else:
                    ov.put(s, s + L, "zero")
                pos += FRAME_LEN
                continue
            pos = self._data(pos, s, L, tr)
            tr = self.tr

    def _sum_passed(self, pos, kind):
        """The lengths of the kind's frames add up past 2^64 - 1 (Limits):
        damage; salvage stops the walk there or makes the frame bad (the
        page does not say)."""
        self.dmg(pos, "%s frame lengths add up past 2^64 - 1" % kind)
        if self.choose("sum of frame lengths past 2^64 - 1", ("walk stops", "frame bad")) \
                == "walk stops":
            self.corrupt = (pos, "%s frame lengths add up past 2^64 - 1" % kind)
            raise _Stop()

    def _data(self, pos, s, L, tr):
        vs = self.vs
        self.frame_mark = len(self.damage)
        dindex = self.dcount
        self.dcount += 1
        self.total += L
        payload = pos + FRAME_LEN
        bad = None
        if self.total > U64:
            self._sum_passed(pos, "data")
            bad = "sum of lengths"
        elif s + L > vs:
            self.dmg(pos, "data frame beyond virtualSize")
            bad = "beyond virtualSize"
        chunks = []             # (file offset, size, guest start, share, decoded or None)
        if self.method == "none":
            plen = L
            chunks.append((payload, L, s, L, None))
        elif tr is not None and dindex < len(tr):
            st, sizes, why = tr[dindex]
            if st != "ok":
                # the page: an entry over the limits makes its frame bad;
                # a wrong one makes the trailer unusable (from there on)
                opts = ("measured from that frame on", "that frame bad")
                if st == "limit":
                    opts = opts[::-1]
                if sizes is None or self.choose("trailer entry %d (%s)" % (dindex, st), opts) \
                        != "that frame bad":
                    self.tr = None
                    return self._data_measured(pos, s, L, bad)
            plen = sum(sizes)
            if st != "ok":
                bad = bad or why
                self.lost = True    # the entry's size trusted over the header
            else:
                split = self._split(L, payload, sizes)
                if split is None:
                    self.dmg(pos, "trailer entry does not fit the data frame")
                    bad = bad or "trailer entry does not fit"
                    self.lost = True    # the entry's size trusted over the header
                else:
                    q, g = payload, s
                    for c in sizes:
                        share = min(split, s + L - g)
                        chunks.append((q, c, g, share, None))
                        q += c
                        g += share
        else:
            self.tr = None          # no (more) entries: the rest is measured
            return self._data_measured(pos, s, L, bad)
        return self._data_end(pos, s, L, payload + plen, chunks, bad)

    def _data_measured(self, pos, s, L, bad):
        payload = pos + FRAME_LEN
        plen, chunks, mbad = self._measure_frame(pos, payload, s, L, bad)
        return self._data_end(pos, s, L, payload + plen, chunks, bad or mbad)

    def _data_end(self, pos, s, L, end, chunks, bad):
        buf, n = self.buf, self.n
        if end + 2 > n:
            self._eof(pos, "data frame cut by the end of the file", bad)
        if bytes(buf[end:end + 2]) != TERM:
            self.dmg(end, "data payload not followed by CRLF")
            bad = bad or "payload not followed by CRLF"
            self.lost = True    # the length may be wrong: frames may be lost
        if L == 0:
            return end + 2
        if bad:
            self.ov.put(s, s + L, "bad", why="index")
            return end + 2
        self._apply(pos, s, L, chunks)
        return end + 2

    def _measure_frame(self, pos, payload, s, L, bad):
        """Chunks of a data frame without trailer entry, found by walking
        them: (payload length, chunks, why bad or None)."""
        r = self._measure_chunks(pos, payload, s, L, bad, False)
        if r is None:
            r = self._measure_chunks(pos, payload, s, L, bad, True)
        return r

    def _measure_chunks(self, pos, payload, s, L, bad, anywhere):
        if L:
            want = -(-L // POLICY_CHUNK_MAX)
        else:
            want = 1 if self.choose("data frame of length 0 without trailer entry measured as",
                                    ("one chunk", "no chunk")) == "one chunk" else 0
        q, g, left, chunks, mbad = payload, s, L, [], None
        while (left > 0 or len(chunks) < want) if anywhere else len(chunks) < want:
            r = self._measure(q)
            if r[0] == "torn":
                self._eof(pos, "compressed chunk cut by the end of the file", bad or mbad)
            if r[0] == "bad":
                self.dmg(q, r[1])
                self.corrupt = (q, "chunk end not found: %s" % r[1])
                raise _Stop()
            _, used, data, ulen = r
            share = min(POLICY_CHUNK_MAX, left)
            if anywhere:
                share = left if ulen is None else ulen
                if share > left and not (bad or mbad):
                    self.dmg(q, "chunks decode to more than the frame's %d bytes" % L)
                    mbad = "chunk sizes"
                    share = left
            elif ulen is not None and ulen != share and not (bad or mbad):
                if self.choose("chunks of a frame without trailer entry split at",
                               ("32 MiB", "wherever they end")) != "32 MiB":
                    return None
                self.dmg(q, "chunk decodes to %d bytes, expected %d" % (ulen, share))
                mbad = "chunk size"
            chunks.append((q, used, g, share, data))
            q += used
            g += share
            left -= share
        return q - payload, chunks, mbad

    def _apply(self, pos, s, L, chunks):
        ov = self.ov
        if self.method == "none":
            ov.put(s, s + L, "data", self.buf, chunks[0][0])
            return
        sized = []
        for q, c, g, share, data in chunks:
            if data is not None and len(data) == share:
                ov.put(g, g + share, "data", data, 0)
                continue
            data, why = self._decode_exact(q, c, share)
            if data is not None:
                ov.put(g, g + share, "data", data, 0)
            elif why.startswith("size:"):
                sized.append((g, share))
            else:
                ov.put(g, g + share, "bad", why="decode")
        if sized:
            when = self.choose("chunk of the wrong decoded size found", ("when read", "when indexed"))
            whole = self.choose("chunk of the wrong decoded size makes bad", ("its range", "its frame"))
            if when == "when indexed":
                self.dmg(pos, "a chunk decodes to the wrong size")
            why = "index" if when == "when indexed" else "decode"
            if whole == "its frame":
                ov.put(s, s + L, "bad", why=why)
            else:
                for g, share in sized:
                    ov.put(g, g + share, "bad", why=why)

    def _tail(self, pos):
        n = self.n
        if self.method == "none":
            if pos != n:
                self.dmg(pos, "%d bytes after the stop frame" % (n - pos))
        elif self.tr_entries is not None:
            if self.tr_start != pos:
                self.dmg(pos, "trailer not right after the stop frame")
            if self.tr_complete and len(self.tr_entries) != self.dcount:
                self.dmg(self.tr_start, "trailer has %d entries for %d data frames"
                         % (len(self.tr_entries), self.dcount))
        elif not self.has_comp:
            if self.choose("compressed stream with a stop frame but no trailer",
                           ("torn", "damage")) == "damage":
                self.dmg(pos, "no trailer after the stop frame")
        if not self.has_ds:
            if self.choose("meta without dataSize", ("damage", "not damage")) == "damage":
                self.dmg(FRAME_LEN, "meta has no dataSize")
        elif isinstance(self.ds, float) and self.ds == self.total:
            if self.choose("meta dataSize is a float", ("damage", "not damage")) == "damage":
                self.dmg(FRAME_LEN, "meta dataSize %r is not an integer" % self.ds)
        elif not _is_int(self.ds) or self.ds != self.total:
            self.dmg(FRAME_LEN, "meta dataSize %r != %d" % (self.ds, self.total))

    # -- outcomes
    def outcome(self, mode):
        if self.result == "plain":
            return Outcome("plain", self.n, [[0, self.n, "data", self.buf, 0]], why=self.why)
        if self.result == "reject":
            return Outcome("reject", why=self.why)
        if mode == "strict":
            if self.damage:
                off, what = self.damage[0]
                return Outcome("reject", why="%s (at file offset %d)" % (what, off))
            pieces = self.ov.fill("zero")
            sticky = any(p[2] == "bad" for p in pieces)
            return Outcome("image", self.vs, pieces, sticky, why=self.summary())
        if (self.corrupt or self.lost) and self.unordered:
            return Outcome("image", self.vs, [[0, self.vs, "bad", None, 0, None]] if self.vs else [],
                           why=self.summary())
        return Outcome("image", self.vs, self.ov.fill("bad" if self.corrupt or self.lost else "zero"),
                       why=self.summary())

    def summary(self):
        parts = []
        if self.damage:
            parts.append("damage: " + "; ".join("%s at %d" % (w, o) for o, w in self.damage[:4]))
        if self.torn:
            parts.append("torn at %d (%s)" % self.torn)
        if self.corrupt:
            parts.append("walk stopped at %d (%s)" % self.corrupt)
        return ", ".join(parts) or "intact"


def policy_walks(buf, limit=POLICY_VARIANTS, cache=None):
    """Walk the file content buf once for every way of deciding the points
    the page leaves open that the walk meets: (walks, complete).  walks[0]
    decides each the first way; complete is False when more than limit
    walks would have been needed (the rest are not made)."""
    cache = {} if cache is None else cache
    todo, seen, walks, done = [{}], {()}, [], set()
    while todo and len(walks) < limit:
        fixed = todo.pop(0)
        asked = {}

        def choose(name, options, fixed=fixed, asked=asked):
            asked.setdefault(name, options)
            return fixed.get(name, options[0])
        w = PolicyWalk(buf, choose, cache)
        w.choices = {k: fixed.get(k, v[0]) for k, v in asked.items()}
        w.open_points = asked
        eff = tuple(sorted(w.choices.items()))
        if eff in done:
            continue        # the same decisions as a walk made already
        done.add(eff)
        walks.append(w)
        for name, options in asked.items():
            if name in fixed:
                continue
            for alt in options[1:]:
                nf = dict(fixed)
                nf[name] = alt
                key = tuple(sorted(nf.items()))
                if key not in seen:
                    seen.add(key)
                    todo.append(nf)
    return walks, not todo


def outcomes_of(walks, mode):
    """The distinct outcomes of policy mode ("strict" or "salvage")."""
    outs, sigs = [], set()
    for w in walks:
        o = w.outcome(mode)
        sig = o.signature()
        if sig not in sigs:
            sigs.add(sig)
            outs.append(o)
    return outs


def policy_outcomes(buf, mode, limit=POLICY_VARIANTS, cache=None):
    """(outcomes, walks, complete) of policy mode for the file content buf."""
    walks, complete = policy_walks(buf, limit, cache)
    return outcomes_of(walks, mode), walks, complete


# --------------------------------------------------------------------------
# image layouts

def split_total(rng, total, k):
    if k == 0:
        return []
    if k == 1:
        return [total]
    cuts = sorted(rng.sample(range(1, total), k - 1))
    prev, out = 0, []
    for c in cuts:
        out.append(c - prev)
        prev = c
    out.append(total - prev)
    return out


def make_layout(size, n, rng, unaligned, ratio, first):
    unit = 1 if unaligned else 4096
    units, tail = divmod(size, unit)
    if n < 1 or n > units:
        die("cannot place %d regions in %d %s" % (n, units, "bytes" if unaligned else "4 KiB units"))
    kinds = [(first if i % 2 == 0 else ("zero" if first == "data" else "data")) for i in range(n)]
    nd = kinds.count("data")
    nz = n - nd
    if nz == 0:
        du = units
    elif nd == 0:
        du = 0
    else:
        du = min(max(round(units * ratio), nd), units - nz)
    dl = split_total(rng, du, nd)
    zl = split_total(rng, units - du, nz)
    regions, off, di, zi = [], 0, 0, 0
    for k in kinds:
        if k == "data":
            ln = dl[di] * unit; di += 1
        else:
            ln = zl[zi] * unit; zi += 1
        regions.append([off, ln, k])
        off += ln
    regions[-1][1] += tail
    return [{"offset": o, "length": ln, "kind": k} for o, ln, k in regions]


def detect_layout(path, gran=64 * KiB):
    """Classify RAW in gran-sized aligned blocks: all-zero or data; merged."""
    size = os.path.getsize(path)
    zero = bytes(gran)
    regions = []
    with open(path, "rb") as f:
        off = 0
        while off < size:
            buf = f.read(16 * MiB)
            if not buf:
                break
            mv = memoryview(buf)
            for p in range(0, len(buf), gran):
                blk = mv[p:p + gran]
                kind = "zero" if blk == zero[:len(blk)] else "data"
                if regions and regions[-1][2] == kind:
                    regions[-1][1] += len(blk)
                else:
                    regions.append([off + p, len(blk), kind])
            off += len(buf)
    return [{"offset": o, "length": ln, "kind": k} for o, ln, k in regions]


# --------------------------------------------------------------------------
# subcommands

def cmd_image(a):
    rng = rng_for(a.seed, "layout")
    layout = make_layout(a.size, a.extents, rng, a.unaligned, a.data_ratio, a.first)
    drng = rng_for(a.seed, "data")
    fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    h = hashlib.sha256()
    try:
        if a.sparse:
            os.ftruncate(fd, a.size)
            zero_h = bytes(MiB)
            for r in layout:
                if r["kind"] == "data":
                    b = pattern_bytes(drng, r["length"], a.pattern)
                    os.pwrite(fd, b, r["offset"])
                    h.update(b)
                else:
                    n = r["length"]
                    while n:
                        k = min(n, MiB)
                        h.update(zero_h[:k])
                        n -= k
        else:
            parts, psize = [], 0
            zbuf = bytes(8 * MiB)

            def flush():
                nonlocal parts, psize
                b = b"".join(parts)
                h.update(b)
                os.write(fd, b)
                parts, psize = [], 0
            for r in layout:
                if r["kind"] == "data":
                    b = pattern_bytes(drng, r["length"], a.pattern)
                    parts.append(b); psize += len(b)
                else:
                    n = r["length"]
                    while n:
                        k = min(n, len(zbuf))
                        parts.append(zbuf if k == len(zbuf) else zbuf[:k]); psize += k
                        n -= k
                        if psize >= 8 * MiB:
                            flush()
                if psize >= 8 * MiB:
                    flush()
            flush()
    finally:
        os.close(fd)
    with open(a.out + ".layout.json", "w") as f:
        json.dump(layout, f, separators=(",", ":"))
    print(json.dumps({"image": a.out, "size": a.size, "regions": len(layout),
                      "data_bytes": sum(r["length"] for r in layout if r["kind"] == "data"),
                      "sha256": h.hexdigest(), "layout": a.out + ".layout.json"}))


def stream_opts(a):
    if a.compress == "lz4":
        need_lz4()
    return {"compress": a.compress, "level": a.level, "chunk_size": a.chunk_size,
            "hyphen_keys": a.hyphen_keys, "extra_meta": parse_extra_meta(a.extra_meta),
            "checkpoint": a.checkpoint, "parent": a.parent, "date": a.date,
            "disk_name": a.disk_name, "disk_format": a.disk_format,
            "chksum": not a.no_chksum, "data_size": a.data_size,
            "stream_version": a.stream_version, "no_trailer": a.no_trailer}


def cmd_stream(a):
    opts = stream_opts(a)
    vsize = os.path.getsize(a.raw) if a.virtual_size is None else a.virtual_size
    if a.incremental:
        if not a.changed:
            die("--incremental needs --changed RANGES.json")
        frames = [(b"data", o, ln) for o, ln in load_ranges(a.changed) if ln > 0]
    else:
        if a.changed:
            die("--changed needs --incremental")
        if a.layout:
            with open(a.layout) as f:
                layout = json.load(f)
        else:
            layout = detect_layout(a.raw)
        frames = [(b"data" if r["kind"] == "data" else b"zero", r["offset"], r["length"])
                  for r in layout if r["length"] > 0]
        frames.sort(key=lambda x: x[1])
    rawfd = os.open(a.raw, os.O_RDONLY)
    rawsize = os.fstat(rawfd).st_size

    def data_fn(i, start, length):
        b = os.pread(rawfd, length, start) if start < rawsize else b""
        return b + bytes(length - len(b))
    try:
        summary = write_stream(a.out, vsize, frames, data_fn, opts, incremental=a.incremental)
    finally:
        os.close(rawfd)
    print(json.dumps(summary))


def cmd_huge(a):
    opts = stream_opts(a)
    ext = []
    for item in a.extents.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            o, ln = item.split(":")
            ext.append((parse_size(o), parse_size(ln)))
        except (ValueError, argparse.ArgumentTypeError):
            die("bad extent %r: want OFFSET:LENGTH" % item)
    ext.sort()
    for (o1, l1), (o2, l2) in zip(ext, ext[1:]):
        if o1 + l1 > o2:
            die("extents overlap: %d+%d > %d" % (o1, l1, o2))
    if ext and ext[-1][0] + ext[-1][1] > a.virtual_size:
        die("an extent ends beyond --virtual-size")
    frames, pos = [], 0
    for o, ln in ext:
        if o > pos and not a.no_zero_frames:
            frames.append((b"zero", pos, o - pos))
        frames.append((b"data", o, ln))
        pos = o + ln
    if pos < a.virtual_size and not a.no_zero_frames:
        frames.append((b"zero", pos, a.virtual_size - pos))
    expect = []
    order = {}
    for k, (o, ln) in enumerate(ext):
        order[o] = k

    def data_fn(i, start, length):
        k = order[start]
        b = pattern_bytes(rng_for(a.seed, "huge", k), length, a.pattern)
        expect.append({"offset": start, "length": length, "sha256": sha256(b)})
        return b
    summary = write_stream(a.out, a.virtual_size, frames, data_fn, opts,
                           incremental=a.no_zero_frames)
    doc = {"virtualSize": a.virtual_size, "extents": expect,
           "stream_sha256": file_sha256(a.out), **summary}
    with open(a.out + ".expect.json", "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(summary))


def cmd_overlap(a):
    opts = stream_opts(a)
    rng = rng_for(a.seed, "overlap")
    V = a.virtual_size
    frames, payloads = [], {}
    maxlen = max(1, min(a.max_len, V))
    for i in range(a.frames):
        ln = rng.randint(1, maxlen)
        if frames and rng.random() < 0.6:
            # start inside an earlier frame so that they overlap
            _, po, pl = rng.choice(frames)
            start = rng.randrange(po, po + pl)
        else:
            start = rng.randrange(0, V)
        if not a.unaligned:
            start -= start % 512
            ln = max(512, ln - ln % 512)
        ln = min(ln, V - start)
        kind = b"zero" if a.zero_frames and rng.random() < 0.3 else b"data"
        frames.append((kind, start, ln))
        if kind == b"data":
            payloads[i] = pattern_bytes(rng_for(a.seed, "ovdata", i), ln, "random")
    img = bytearray(V)
    overlaps = ambiguous = 0
    for i, (kind, s, ln) in enumerate(frames):
        earlier = [fk for fk, fs, fl in frames[:i] if fs < s + ln and s < fs + fl]
        overlaps += bool(earlier)
        if kind == b"data":
            img[s:s + ln] = payloads[i]
        else:
            ambiguous += b"data" in earlier
            if a.zero_semantics == "later-wins":
                img[s:s + ln] = bytes(ln)
    summary = write_stream(a.out, V, frames, lambda i, s, ln: payloads[i], opts,
                           incremental=not a.zero_frames)
    with open(a.raw, "wb") as f:
        f.write(img)
    summary.update({"raw": a.raw, "raw_sha256": sha256(bytes(img)), "frames": len(frames),
                    "overlapping_frames": overlaps, "zero_after_data": ambiguous,
                    "zero_semantics": a.zero_semantics})
    print(json.dumps(summary))


def cmd_partial(a):
    st = Stream(a.input)
    frames = st.frames
    n = len(frames)
    info = {"input": a.input, "output": a.out}
    if a.cut is not None:
        cut = a.cut
        if a.mid_header or a.mid_payload:
            die("--mid-header/--mid-payload go with --cut-frames")
    else:
        k = a.cut_frames
        if k < 0:
            die("--cut-frames must be >= 0")
        base = frames[k - 1].end_off if 0 < k <= n else (st.meta_end if k == 0 else st.stop_off)
        if a.mid_header:
            cut = (frames[k].hdr_off if k < n else st.stop_off) + 20
        elif a.mid_payload:
            j = next((i for i in range(k, n) if frames[i].kind == b"data"), None)
            if j is None:
                die("no data frame at or after index %d for --mid-payload" % k)
            fr = frames[j]
            cut = fr.payload_off + max(1, fr.payload_len // 2) if fr.payload_len > 1 \
                else fr.payload_off
        else:
            cut = base
    if cut > st.size:
        die("--cut %d is beyond the file size %d" % (cut, st.size))
    with open(a.input, "rb") as fi, open(a.out, "wb") as fo:
        left = cut
        while left:
            b = fi.read(min(left, 8 * MiB))
            fo.write(b)
            left -= len(b)
    expect_path = a.expect or a.out + ".expect.raw"
    info["cut"] = cut
    if cut < st.meta_end:
        info.update({"readable": False, "expect": "reject: meta frame is torn",
                     "expect_raw": None})
        print(json.dumps(info))
        return
    complete = [fr for fr in frames if fr.end_off <= cut]
    torn = next((fr for fr in frames if fr.hdr_off < cut < fr.end_off), None)
    replay(st, expect_path, "later-wins", upto_off=cut)
    info.update({
        "readable": True, "expect_raw": expect_path,
        "expect_raw_sha256": file_sha256(expect_path),
        "virtualSize": st.virtual_size, "complete_frames": len(complete),
        "complete_data_frames": sum(1 for f in complete if f.kind == b"data"),
        "torn_frame": None if torn is None else torn.index,
        "torn_in": (
            "header" if cut < torn.hdr_off + FRAME_LEN else
            "crlf" if cut >= torn.payload_off + torn.payload_len else "payload")
        if torn is not None else ("stop header" if st.stop_off < cut < st.stop_off + FRAME_LEN
                                  else None),
        "stop_present": st.stop_off is not None and cut >= st.stop_off + FRAME_LEN,
        "tail": "torn trailer" if st.stop_off is not None and cut >= st.stop_off + FRAME_LEN
        and cut < st.size else ("complete" if cut == st.size else "no stop frame"),
    })
    if info["torn_in"] == "crlf":
        info["note"] = ("the torn frame's payload is complete but its CRLF is not: "
                        "the expected image does NOT apply it")
    print(json.dumps(info))


# corruption catalogue: name -> (description, expectation)
CORRUPTIONS = {
    "chunk": ("flip one byte in the middle of data frame K's payload (first chunk)",
              "compressed: open ok, reads of frame K's range fail (EIO) by codec checksum, "
              "other ranges read fine; uncompressed: undetectable except by .chksum"),
    "header": ("replace the space after frame K's kind with 'X'", "reject: bad frame header"),
    "crlf": ("replace the CRLF after data frame K's payload with 'XX'",
             "reject: payload not followed by CRLF"),
    "kind": ("replace frame K's kind with 'xxxx'", "reject: unknown frame kind"),
    "hex": ("put 'g' into frame K's start field", "reject: bad hex in header"),
    "uppercase-hex": ("write frame K's start field in upper case",
                      "ambiguous: format says lower-case; virtnbdbackup's int(x,16) accepts it"),
    "meta": ("replace the meta JSON's first '\"' with '#': invalid JSON",
             "reject: meta JSON invalid"),
    "meta-not-object": ("meta JSON is a list", "reject: meta JSON is not an object"),
    "meta-no-virtual": ("remove virtualSize from the meta", "reject: no virtualSize"),
    "meta-not-first": ("first frame header kind is 'zero' instead of 'meta'", "reject"),
    "meta-crlf": ("replace the CRLF after the meta JSON with 'XX'", "reject"),
    "datasize": ("meta dataSize = true value + 1", "reject: dataSize mismatch "
                 "(virtnbdbackup's restore fails with 'Data size mismatch')"),
    "trailer-count": ("drop the last trailer entry", "reject: trailer count != data frames"),
    "trailer-extra": ("append one extra trailer entry", "reject: trailer count != data frames"),
    "trailer-size": ("trailer entry of data frame K + 1 (for a chunked frame: its first "
                     "chunk size and the key, both + 1)",
                     "reject (or EIO on frame K): compressed size disagrees with the payload"),
    "trailer-sum": ("chunked frame K: dict key != sum of its chunk sizes", "reject"),
    "trailer-json": ("trailer JSON made invalid (same length)", "reject"),
    "comp-length": ("comp header length + 1", "reject: trailer not where comp says"),
    "no-trailer": ("remove the trailer and comp header of a compressed stream",
                   "reject (strict) or read by self-delimiting codec frames (lenient)"),
    "no-stop": ("remove the stop frame (and trailer): a torn stream ending on a frame boundary",
                "read as partial: all frames apply"),
    "trailing-garbage": ("append 'garbage\\r\\n' after the stop frame (uncompressed) or "
                         "between stop and trailer (compressed)", "reject"),
    "beyond-virtual": ("frame K's start moved so that it ends beyond virtualSize",
                       "reject: frame beyond virtualSize"),
    "overflow": ("frame K's start = 2^64 - 256: start + length overflows 64 bits",
                 "reject: frame beyond virtualSize / overflow"),
    "virtual-too-big": ("meta virtualSize = VALUE (default 2^63: not an off_t)", "reject"),
    "virtual-small": ("meta virtualSize = end of the last frame - 1", "reject: frame beyond "
                      "virtualSize"),
    "length-mismatch": ("data frame K's header length - 1 with the payload unchanged "
                        "(compressed: decoded size != header length)", "reject"),
    "zero-length-data": ("insert a 'data <start> 0' frame with an empty payload before frame K",
                         "ambiguous: virtnbdbackup never writes it; our reference decoder rejects"),
    "stop-not-zero": ("stop header 'stop 0 1'", "reject"),
    "chksum": ("stream unchanged, .chksum off by one", "open ok; chksum verification fails"),
}


def frame_arg(st, k, want_data=False, want_chunked=False):
    cands = [f for f in st.frames if (not want_data or f.kind == b"data")
             and (not want_chunked or f.chunks)]
    if not cands:
        die("no suitable frame (data=%s chunked=%s) in the input" % (want_data, want_chunked))
    if k is None:
        return cands[len(cands) // 2]
    if want_data or want_chunked:
        m = [f for f in cands if f.index == k]
        if not m:
            die("frame %d is not a suitable %s frame" % (k, "chunked data" if want_chunked else "data"))
        return m[0]
    if k >= len(st.frames):
        die("frame %d out of range (%d frames)" % (k, len(st.frames)))
    return st.frames[k]


def rebuild_meta(st, buf, mutate):
    meta = json.loads(bytes(buf[FRAME_LEN:st.meta_end - 2]).decode())
    mutate(meta)
    mj = json.dumps(meta, indent=4).encode()
    return header(b"meta", 0, len(mj)) + mj + TERM + bytes(buf[st.meta_end:]), len(mj) - (st.meta_end - 2 - FRAME_LEN)


def rebuild_trailer(st, buf, entries):
    tj = json.dumps(entries).encode()
    return bytes(buf[:st.trailer_off]) + tj + TERM + header(b"comp", 0, len(tj))


def raw_trailer_entries(st, buf):
    return json.loads(bytes(buf[st.trailer_off:st.size - FRAME_LEN - 2]).decode())


def cmd_corrupt(a):
    st = Stream(a.input)
    buf = bytearray(st.buf)
    what = a.what
    res = {"what": what, "input": a.input, "output": a.out,
           "description": CORRUPTIONS[what][0], "expect": CORRUPTIONS[what][1],
           "compressed": st.compressed}
    off = None
    fr = None
    vs_key = "virtualSize" if "virtualSize" in st.meta else "virtual-size"
    ds_key = "dataSize" if "dataSize" in st.meta else "data-size"

    def need_comp():
        if not st.compressed or st.trailer is None:
            die("--what %s needs a compressed stream with a trailer" % what)

    def set_start(f, new):
        h = header(f.kind, new, f.length)
        buf[f.hdr_off:f.hdr_off + FRAME_LEN] = h

    if what == "chunk":
        fr = frame_arg(st, a.frame, want_data=True)
        first = fr.chunks[0] if fr.chunks else fr.payload_len
        off = fr.payload_off + first // 2
        buf[off] ^= 0x55
        res["bad_range"] = [fr.start, fr.length]
        res["expect_kind"] = "eio-on-range" if st.compressed else "chksum-mismatch"
    elif what in ("header", "kind", "hex", "uppercase-hex"):
        fr = frame_arg(st, a.frame)
        if what == "header":
            off = fr.hdr_off + 4
            buf[off] = ord("X")
        elif what == "kind":
            off = fr.hdr_off
            buf[off:off + 4] = b"xxxx"
        elif what == "hex":
            off = fr.hdr_off + 5 + 7
            buf[off] = ord("g")
        else:
            def has_letters(f):
                return re.search(rb"[a-f]", b"%016x%016x" % (f.start, f.length))
            if a.frame is None:
                fr = next((f for f in st.frames if has_letters(f)), None)
                if fr is None:
                    die("no frame has a-f in its header fields")
            elif not has_letters(fr):
                die("frame %d has no a-f in its header fields" % fr.index)
            fld = 5 if re.search(rb"[a-f]", b"%016x" % fr.start) else 22
            off = fr.hdr_off + fld
            buf[off:off + 16] = bytes(buf[off:off + 16]).upper()
            res["expect_kind"] = "ambiguous"
    elif what == "crlf":
        fr = frame_arg(st, a.frame, want_data=True)
        off = fr.end_off - 2
        buf[off:off + 2] = b"XX"
    elif what == "meta":
        off = FRAME_LEN + bytes(buf[FRAME_LEN:st.meta_end]).index(b'"')
        buf[off] = ord("#")
    elif what == "meta-not-object":
        mj = json.dumps([st.meta]).encode()
        buf = bytearray(header(b"meta", 0, len(mj)) + mj + TERM + bytes(buf[st.meta_end:]))
        off = FRAME_LEN
    elif what == "meta-no-virtual":
        buf, _ = rebuild_meta(st, buf, lambda m: m.pop(vs_key))
        off = FRAME_LEN
    elif what == "meta-not-first":
        off = 0
        buf[0:4] = b"zero"
    elif what == "meta-crlf":
        off = st.meta_end - 2
        buf[off:off + 2] = b"XX"
    elif what == "datasize":
        buf, _ = rebuild_meta(st, buf, lambda m: m.__setitem__(ds_key, m[ds_key] + 1))
        off = FRAME_LEN
    elif what in ("virtual-too-big", "virtual-small"):
        if what == "virtual-too-big":
            val = a.value if a.value is not None else 1 << 63
        else:
            val = max(f.start + f.length for f in st.frames) - 1
        buf, _ = rebuild_meta(st, buf, lambda m: m.__setitem__(vs_key, val))
        off = FRAME_LEN
        res["value"] = val
    elif what in ("trailer-count", "trailer-extra", "trailer-size", "trailer-sum", "trailer-json",
                  "comp-length", "no-trailer"):
        need_comp()
        ent = raw_trailer_entries(st, buf)
        off = st.trailer_off
        if what == "trailer-count":
            ent = ent[:-1]
        elif what == "trailer-extra":
            ent.append(ent[-1] if ent else 1)
        elif what == "trailer-size":
            fr = frame_arg(st, a.frame, want_data=True)
            e = ent[fr.dindex]
            if isinstance(e, dict):
                (k, v), = e.items()
                v[0] += 1
                ent[fr.dindex] = {str(int(k) + 1): v}
            else:
                ent[fr.dindex] = e + 1
        elif what == "trailer-sum":
            fr = frame_arg(st, a.frame, want_chunked=True)
            (k, v), = ent[fr.dindex].items()
            ent[fr.dindex] = {str(int(k) + 7): v}
        if what == "trailer-json":
            tj = bytearray(buf[st.trailer_off:st.size - FRAME_LEN - 2])
            tj[0] = ord("{")
            buf[st.trailer_off:st.size - FRAME_LEN - 2] = tj
        elif what == "comp-length":
            tlen = st.size - FRAME_LEN - 2 - st.trailer_off
            off = st.size - FRAME_LEN
            buf[off:] = header(b"comp", 0, tlen + 1)
        elif what == "no-trailer":
            buf = buf[:st.trailer_off]
        else:
            buf = bytearray(rebuild_trailer(st, buf, ent))
    elif what == "no-stop":
        off = st.stop_off
        buf = buf[:st.stop_off]
        res["expect_kind"] = "partial"
    elif what == "trailing-garbage":
        off = st.stop_off + FRAME_LEN
        buf[off:off] = b"garbage\r\n"
    elif what in ("beyond-virtual", "overflow"):
        fr = frame_arg(st, a.frame)
        off = fr.hdr_off + 5
        if what == "overflow":
            set_start(fr, (1 << 64) - 256)
        else:
            set_start(fr, st.virtual_size - max(1, fr.length // 2))
    elif what == "length-mismatch":
        fr = frame_arg(st, a.frame, want_data=True)
        if fr.length < 2:
            die("frame too short")
        buf[fr.hdr_off:fr.hdr_off + FRAME_LEN] = header(b"data", fr.start, fr.length - 1)
        # keep dataSize consistent so that the only fault is the frame itself
        buf, delta = rebuild_meta(st, buf, lambda m: m.__setitem__(ds_key, m[ds_key] - 1))
        buf = bytearray(buf)
        off = fr.hdr_off + 22 + delta
        res["note"] = ("uncompressed: the walk desynchronises one byte early, the CRLF check "
                       "after the payload fails; compressed: decoded size != header length")
    elif what == "zero-length-data":
        fr = frame_arg(st, a.frame)
        off = fr.hdr_off
        ins = header(b"data", fr.start, 0) + TERM
        buf[off:off] = ins
        res["expect_kind"] = "ambiguous"
        if st.compressed:
            # the empty frame gets trailer entry 0, inserted at its data index
            ent = raw_trailer_entries(st, st.buf)
            ent.insert(sum(1 for f in st.frames[:fr.index] if f.kind == b"data"), 0)
            tj = json.dumps(ent).encode()
            t_off = st.trailer_off + len(ins)
            buf = buf[:t_off] + tj + TERM + header(b"comp", 0, len(tj))
    elif what == "stop-not-zero":
        off = st.stop_off
        buf[off:off + FRAME_LEN] = header(b"stop", 0, 1)
    elif what == "chksum":
        off = None
    else:  # pragma: no cover
        die("unknown --what")
    if fr is not None:
        res["frame"] = fr.index
        res["frame_kind"] = fr.kind.decode()
        res["frame_start"] = fr.start
        res["frame_length"] = fr.length
    res["offset"] = off
    res.setdefault("expect_kind", "reject")
    with open(a.out, "wb") as f:
        f.write(buf)
    orig = adler32_file(a.input)
    if what == "chksum":
        write_chksum(a.out, (orig + 1) & 0xffffffff)
        res["expect_kind"] = "chksum-mismatch"
    elif a.rechksum:
        write_chksum(a.out)
    else:
        # damage after the backup: the .chksum still describes the original
        write_chksum(a.out, orig)
    res["chksum_matches"] = a.rechksum and what != "chksum"
    print(json.dumps(res))


def cmd_raw_from_stream(a):
    global ACCEPT_UPPER
    ACCEPT_UPPER = a.accept_uppercase_hex
    try:
        st = Stream(a.input, partial=a.allow_partial, use_trailer=not a.ignore_trailer)
        if a.verify_chksum:
            want = open(a.input + ".chksum").read().strip()
            got = adler32_file(a.input)
            if want != str(got):
                raise StreamError(".chksum mismatch: file says %s, data gives %d" % (want, got))
        n = replay(st, a.out, a.zero_semantics)
    except StreamError as e:
        print(json.dumps({"ok": False, "error": str(e), "offset": e.offset}))
        sys.exit(1)
    print(json.dumps({"ok": True, "raw": a.out, "virtualSize": st.virtual_size,
                      "frames": len(st.frames), "applied": n, "data_frames": st.ndata,
                      "compressed": st.compressed, "method": st.method,
                      "torn": st.torn, "stop": st.stop_off is not None,
                      "sha256": file_sha256(a.out) if a.sha256 else None}))


def cmd_salvage(a):
    with open(a.input, "rb") as f:
        buf = f.read()
    walks, complete = policy_walks(buf, a.max_walks)
    mode = "strict" if a.strict else "salvage"
    outs = outcomes_of(walks, mode)
    w = walks[0]
    points = {}
    for x in walks:
        points.update(x.open_points)
    doc = {"mode": mode, "complete": complete, "walks": len(walks),
           "damage": [[o, what] for o, what in w.damage] if w.result == "stream" else [],
           "torn": list(w.torn) if w.torn else None,
           "walk_stopped": list(w.corrupt) if w.corrupt else None,
           "open_points": points, "outcomes": []}
    for o in outs:
        d = {"kind": o.kind}
        if o.kind == "reject":
            d["why"] = o.why
        else:
            d["size"] = o.size
        if o.kind == "image":
            d["sticky"] = o.sticky
            d["bad_bytes"] = sum(p[1] - p[0] for p in o.pieces if p[2] == "bad")
            d["map"] = o.map()
        doc["outcomes"].append(d)
    first = outs[0]
    if a.out and first.kind != "reject":
        fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, first.size)
            for p in first.pieces:
                if p[2] == "data":
                    for c in range(p[0], p[1], 8 * MiB):
                        e = min(p[1], c + 8 * MiB)
                        os.pwrite(fd, first.block(c, e)[0], c)
        finally:
            os.close(fd)
        doc["raw"] = a.out
    print(json.dumps(doc))
    sys.exit(1 if first.kind == "reject" else 0)


def cmd_info(a):
    try:
        st = Stream(a.input, partial=a.allow_partial, use_trailer=not a.ignore_trailer)
    except StreamError as e:
        print(json.dumps({"ok": False, "error": str(e), "offset": e.offset}))
        sys.exit(1)
    doc = {"ok": True, "meta": st.meta, "size": st.size, "frames": len(st.frames),
           "data_frames": st.ndata, "stop_off": st.stop_off, "torn": st.torn,
           "trailer": st.trailer is not None}
    if a.frames:
        doc["frame_list"] = [f.as_dict() for f in st.frames]
    print(json.dumps(doc, indent=1))


# --------------------------------------------------------------------------

def main(argv=None):
    sz = parse_size
    p = argparse.ArgumentParser(prog="mkstream.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", default="0", help="random seed (any string; default 0)")

    so = argparse.ArgumentParser(add_help=False)
    g = so.add_argument_group("stream options")
    g.add_argument("--compress", choices=("none", "lz4", "zlib"), default="none")
    g.add_argument("--level", type=int, default=None,
                   help="compression level, stored in meta 'compressed' (lz4: 2, zlib: 6)")
    g.add_argument("--chunk-size", type=sz, default=DEFAULT_CHUNK,
                   help="data frames this long or longer are compressed in chunks of this "
                        "size, with a dict trailer entry (default 32MiB)")
    g.add_argument("--no-chksum", action="store_true", help="do not write OUT.chksum")
    g.add_argument("--hyphen-keys", action="store_true",
                   help="meta spelled virtual-size, data-size, stream-version")
    g.add_argument("--extra-meta", action="append", metavar="KEY=VALUE",
                   help="add a meta key (VALUE parsed as JSON when it is JSON); repeatable")
    g.add_argument("--checkpoint", help="meta checkpointName")
    g.add_argument("--parent", help="meta parentCheckpoint (incremental default virtnbdbackup.0)")
    g.add_argument("--date", help="meta date (default %s)" % DEFAULT_DATE)
    g.add_argument("--disk-name", help="meta diskName (default sda)")
    g.add_argument("--disk-format", help="meta diskFormat (default qcow2)")
    g.add_argument("--data-size", type=int, help="override meta dataSize (makes a bad stream)")
    g.add_argument("--stream-version", type=int, default=2, help="meta streamVersion (default 2)")
    g.add_argument("--no-trailer", action="store_true",
                   help="compressed stream without trailer and comp header (what "
                        "virtnbdbackup -z 0 writes: it tests `if args.compress:`)")

    s = sub.add_parser("image", parents=[common], help="random raw image + layout")
    s.add_argument("out")
    s.add_argument("--size", type=sz, required=True)
    s.add_argument("--extents", type=int, required=True, help="number of regions")
    s.add_argument("--unaligned", action="store_true", help="boundaries at any byte")
    s.add_argument("--data-ratio", type=float, default=0.5, help="fraction of data bytes")
    s.add_argument("--sparse", action="store_true", help="zero regions left as holes")
    s.add_argument("--first", choices=("data", "zero"), default="data",
                   help="kind of the first region (default data)")
    s.add_argument("--pattern", choices=PATTERNS, default="random", help=PATTERN_HELP)
    s.set_defaults(fn=cmd_image)

    s = sub.add_parser("stream", parents=[common, so], help="stream of a raw image")
    s.add_argument("raw")
    s.add_argument("out")
    s.add_argument("--layout", help="layout JSON (from image); default: detect zero 64 KiB blocks")
    s.add_argument("--incremental", action="store_true")
    s.add_argument("--changed", help="JSON [[off,len],...] or a layout (its data entries)")
    s.add_argument("--virtual-size", type=sz, help="meta virtualSize (default: RAW's size)")
    s.set_defaults(fn=cmd_stream)

    s = sub.add_parser("huge", parents=[common, so], help="huge virtual size, few extents")
    s.add_argument("out")
    s.add_argument("--virtual-size", type=sz, required=True)
    s.add_argument("--extents", required=True, help='"off:len,off:len,..." (sizes: 4K, 1T, 0x...)')
    s.add_argument("--no-zero-frames", action="store_true",
                   help="incremental style: no zero frames for the gaps")
    s.add_argument("--pattern", choices=PATTERNS, default="random", help=PATTERN_HELP)
    s.set_defaults(fn=cmd_huge)

    s = sub.add_parser("overlap", parents=[common, so], help="stream whose frames overlap")
    s.add_argument("out")
    s.add_argument("raw")
    s.add_argument("--virtual-size", type=sz, default=4 * MiB)
    s.add_argument("--frames", type=int, default=48)
    s.add_argument("--max-len", type=sz, default=256 * KiB)
    s.add_argument("--unaligned", action="store_true")
    s.add_argument("--zero-frames", action="store_true",
                   help="also emit zero frames (some after overlapping data: ambiguous)")
    s.add_argument("--zero-semantics", choices=("later-wins", "noop"), default="later-wins",
                   help="how OUT.raw treats a zero frame after data it overlaps")
    s.set_defaults(fn=cmd_overlap)

    s = sub.add_parser("partial", help="torn copy of a stream + expected image")
    s.add_argument("input")
    s.add_argument("out")
    cg = s.add_mutually_exclusive_group(required=True)
    cg.add_argument("--cut", type=sz, help="keep this many bytes")
    cg.add_argument("--cut-frames", type=int, help="keep K complete data/zero frames")
    mg = s.add_mutually_exclusive_group()
    mg.add_argument("--mid-header", action="store_true", help="cut 20 bytes into frame K's header")
    mg.add_argument("--mid-payload", action="store_true",
                    help="cut in the middle of the first data frame at index >= K")
    s.add_argument("--expect", help="expected image path (default OUT.expect.raw)")
    s.set_defaults(fn=cmd_partial)

    s = sub.add_parser("corrupt", help="bad-input variant; JSON report on stdout")
    s.add_argument("input")
    s.add_argument("out")
    s.add_argument("--what", required=True, choices=sorted(CORRUPTIONS),
                   help="; ".join("%s: %s" % (k, v[0]) for k, v in sorted(CORRUPTIONS.items())))
    s.add_argument("--frame", type=int, help="frame index K (0 = first frame after meta)")
    s.add_argument("--value", type=int, help="virtual-too-big: the virtualSize to write")
    s.add_argument("--rechksum", action="store_true",
                   help="write OUT.chksum of the damaged file (default: the original's)")
    s.set_defaults(fn=cmd_corrupt)

    s = sub.add_parser("corruptions", help="print the corrupt --what catalogue as JSON")
    s.set_defaults(fn=lambda a: print(json.dumps(
        {k: {"description": v[0], "expect": v[1]} for k, v in sorted(CORRUPTIONS.items())},
        indent=1)))

    s = sub.add_parser("raw-from-stream", help="reference decoder: replay a stream")
    s.add_argument("input")
    s.add_argument("out")
    s.add_argument("--zero-semantics", choices=("later-wins", "noop"), default="later-wins")
    s.add_argument("--allow-partial", action="store_true", help="accept a torn tail")
    s.add_argument("--ignore-trailer", action="store_true",
                   help="find compressed payloads by codec framing, not the trailer")
    s.add_argument("--verify-chksum", action="store_true", help="check INPUT.chksum")
    s.add_argument("--accept-uppercase-hex", action="store_true",
                   help="accept A-F in header fields (virtnbdbackup's parser does)")
    s.add_argument("--sha256", action="store_true", help="print the image's sha256")
    s.set_defaults(fn=cmd_raw_from_stream)

    s = sub.add_parser("salvage", help="what the damage policy of odxfs-stream(5) serves of a file")
    s.add_argument("input")
    s.add_argument("--strict", action="store_true",
                   help="the strict policy (default: salvage, as odxfs -o salvage)")
    s.add_argument("--out", help="write the first outcome's image here (BAD ranges as zeros)")
    s.add_argument("--max-walks", type=int, default=POLICY_VARIANTS,
                   help="walk at most this many ways of deciding the open points (default %d)"
                   % POLICY_VARIANTS)
    s.set_defaults(fn=cmd_salvage)

    s = sub.add_parser("info", help="parse a stream, print meta and frames")
    s.add_argument("input")
    s.add_argument("--frames", action="store_true")
    s.add_argument("--allow-partial", action="store_true")
    s.add_argument("--ignore-trailer", action="store_true")
    s.set_defaults(fn=cmd_info)

    a = p.parse_args(argv)
    if a.cmd == "stream" and a.layout and a.incremental:
        die("--layout is for full streams; use --changed with --incremental")
    a.fn(a)


if __name__ == "__main__":
    main()
