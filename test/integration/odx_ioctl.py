# SPDX-License-Identifier: LGPL-2.1-or-later
"""The odxfs ioctls of include/odxfs/ioctl.h, callable from Python tests.

Nothing is copied by hand: the request numbers and the struct layouts are
computed from the header itself when this module is imported (C's natural
alignment, each struct's size checked against the header's _Static_assert),
so a change of the header cannot leave the tests on an old ABI.

The header is looked for in $ODXFS_INCLUDE/odxfs/ioctl.h, else in
../../include next to this file (the source tree).  Tests that run it as an
unprivileged user copy this file and the two headers to a directory that
user can read (lib.sh's odx_ioctl_setup).

    import odx_ioctl as ox
    r = ox.offload_read(fd, offset, length)        # dict, r["token"] bytes
    w = ox.offload_write(fd, offset, length, r["token"], transfer_offset=0)
    ox.release(fd, r["token"])

Errors are OSError, as fcntl.ioctl raises them.

As a program (for shell scripts), printing the errno name on failure and
exiting 1:
    odx_ioctl.py read FILE OFFSET LENGTH [FLAGS]        -> token hex, length
    odx_ioctl.py write FILE OFFSET LENGTH TOKEN [FLAGS] -> length written
    odx_ioctl.py numbers                                -> request numbers
FLAGS is the open mode: r, w, rw, wa (write-only, O_APPEND), rwa.
"""
import errno
import fcntl
import os
import platform
import re
import struct
import sys

_TYPES = {"uint8_t": ("B", 1), "uint16_t": ("H", 2), "uint32_t": ("I", 4),
          "uint64_t": ("Q", 8), "int32_t": ("i", 4), "int64_t": ("q", 8)}


def _header_dir():
    env = os.environ.get("ODXFS_INCLUDE")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include")


def _read(name):
    with open(os.path.join(_header_dir(), "odxfs", name)) as f:
        # Comments out, so "/* in: 0 */" never looks like code.
        return re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)


def _defines(text):
    """Plain numeric and character #defines."""
    out = {}
    for name, val in re.findall(r"^#define\s+(\w+)\s+(\S+)\s*$", text, re.M):
        m = re.fullmatch(r"'(.)'", val)
        if m:
            out[name] = ord(m.group(1))
            continue
        m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)[uUlL]*", val)
        if m:
            out[name] = int(m.group(1), 0)
    return out


class Struct:
    """One C struct of fixed-width integer fields and arrays of them."""

    def __init__(self, name, body, consts):
        self.name = name
        self.fields = []            # (name, struct code, count)
        fmt, off, align = "<", 0, 1
        for ctype, fname, count in re.findall(r"(\w+)\s+(\w+)\s*(?:\[(\w+)\])?\s*;", body):
            if ctype not in _TYPES:
                raise ValueError(f"struct {name}: field type {ctype} not understood")
            code, size = _TYPES[ctype]
            n = 1
            if count:
                n = int(count, 0) if count[0].isdigit() else consts[count]
            pad = -off % size
            fmt += "x" * pad
            off += pad + size * n
            fmt += (f"{n}s" if code == "B" and n > 1 else f"{n}{code}")
            align = max(align, size)
            self.fields.append((fname, code, n))
        fmt += "x" * (-off % align)
        self.fmt = fmt
        self.size = struct.calcsize(fmt)

    def pack(self, **values):
        args = []
        for fname, code, n in self.fields:
            v = values.pop(fname, None)
            if code == "B" and n > 1:
                args.append(bytes(v or b""))
            elif n > 1:
                args.extend(v or [0] * n)
            else:
                args.append(self.size if fname == "size" and v is None else (v or 0))
        if values:
            raise TypeError(f"struct {self.name} has no field {', '.join(values)}")
        return bytearray(struct.pack(self.fmt, *args))

    def unpack(self, buf):
        vals = list(struct.unpack(self.fmt, bytes(buf)))
        out = {}
        for fname, code, n in self.fields:
            if code == "B" and n > 1 or n == 1:
                out[fname] = vals.pop(0)
            else:
                out[fname] = vals[:n]
                del vals[:n]
        return out


def _ioc_params():
    """Direction bits and field widths of _IOC on this architecture."""
    m = platform.machine()
    if m.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
        return {"_IO": 1, "_IOR": 2, "_IOW": 4, "_IOWR": 6}, 13, 29
    return {"_IO": 0, "_IOR": 2, "_IOW": 1, "_IOWR": 3}, 14, 30


def _load():
    token_h, ioctl_h = _read("token.h"), _read("ioctl.h")
    consts = _defines(token_h)
    consts.update(_defines(ioctl_h))
    structs = {n: Struct(n, body, consts)
               for n, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", ioctl_h, re.S)}
    for n, size in re.findall(r"_Static_assert\s*\(\s*sizeof\s*\(\s*struct\s+(\w+)\s*\)"
                              r"\s*==\s*(\d+)", ioctl_h):
        if structs[n].size != int(size):
            raise RuntimeError(f"struct {n}: computed size {structs[n].size}, "
                               f"the header asserts {size}")
    dirs, sizebits, dirshift = _ioc_params()
    reqs = {}
    for name, kind, magic, nr, sname in re.findall(
            r"#define\s+(ODX_IOC_\w+)\s+(_IO\w*)\s*\(\s*(\w+)\s*,\s*(\w+)\s*,"
            r"\s*struct\s+(\w+)\s*\)", ioctl_h):
        size = structs[sname].size
        if size >= 1 << sizebits:
            raise RuntimeError(f"{name}: struct too big for _IOC")
        typ = int(magic, 0) if magic[0].isdigit() else consts[magic]
        reqs[name] = ((dirs[kind] << dirshift) | (size << 16) | (typ << 8) | int(nr, 0),
                      structs[sname])
    return consts, structs, reqs


CONSTS, STRUCTS, REQUESTS = _load()
TOKEN_SIZE = CONSTS["ODX_TOKEN_SIZE"]
OFFLOAD_READ, _RD = REQUESTS["ODX_IOC_OFFLOAD_READ"]
OFFLOAD_WRITE, _WR = REQUESTS["ODX_IOC_OFFLOAD_WRITE"]
RELEASE, _REL = REQUESTS["ODX_IOC_RELEASE"]
STATS, _ST = REQUESTS["ODX_IOC_STATS"]


def _token(tok):
    if isinstance(tok, str):
        tok = bytes.fromhex(tok)
    if len(tok) > TOKEN_SIZE:
        raise ValueError("token longer than ODX_TOKEN_SIZE")
    return bytes(tok).ljust(TOKEN_SIZE, b"\0")


def offload_read(fd, offset, length, ttl_ms=0):
    buf = _RD.pack(token_ttl_ms=ttl_ms, file_offset=offset, copy_length=length)
    fcntl.ioctl(fd, OFFLOAD_READ, buf)
    return _RD.unpack(buf)


def offload_write(fd, offset, length, token, transfer_offset=0):
    buf = _WR.pack(file_offset=offset, copy_length=length,
                   transfer_offset=transfer_offset, token=_token(token))
    fcntl.ioctl(fd, OFFLOAD_WRITE, buf)
    return _WR.unpack(buf)


def release(fd, token):
    fcntl.ioctl(fd, RELEASE, bytes(_REL.pack(token=_token(token))))


def stats(fd):
    buf = _ST.pack()
    fcntl.ioctl(fd, STATS, buf)
    return _ST.unpack(buf)


OPEN_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR,
              "wa": os.O_WRONLY | os.O_APPEND, "rwa": os.O_RDWR | os.O_APPEND}


def _size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s, 0)


def main(argv):
    if argv[:1] == ["numbers"]:
        for name, (num, st) in sorted(REQUESTS.items()):
            print(f"{name} 0x{num:08x} struct {st.name} {st.size}")
        return 0
    if len(argv) < 4 or argv[0] not in ("read", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    what, path, off, length = argv[0], argv[1], _size(argv[2]), _size(argv[3])
    rest = argv[4:]
    tok = rest.pop(0) if what == "write" else None
    flags = OPEN_FLAGS[rest[0] if rest else ("r" if what == "read" else "rw")]
    try:
        fd = os.open(path, flags)
        try:
            if what == "read":
                r = offload_read(fd, off, length)
                print(r["token"].hex(), r["transfer_length"])
            else:
                print(offload_write(fd, off, length, tok)["length_written"])
        finally:
            os.close(fd)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
