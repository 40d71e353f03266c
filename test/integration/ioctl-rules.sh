#!/bin/bash
# The offload ioctls obey the rules of read(2), write(2) and
# copy_file_range(2), errno for errno:
#   ODX_IOC_OFFLOAD_READ on a descriptor open O_WRONLY        EBADF
#   ODX_IOC_OFFLOAD_WRITE on a descriptor open O_RDONLY       EBADF
#     open O_WRONLY|O_APPEND or O_RDWR|O_APPEND                EBADF
#     the destination made immutable (chattr +i) after the open EPERM
#     the destination made append-only (chattr +a) after an
#       open without O_APPEND                                  EPERM
#     RLIMIT_FSIZE of the caller (SIGXFSZ ignored): at or past
#       the limit                                              EFBIG
#       from below it: written up to the limit, no further
# with a data token and with the zero token (which punches holes), and the
# destination's bytes unchanged by every refusal.  copy_file_range on ext4
# is checked too, as the reference (it has no append-only rule for a
# descriptor opened before chattr +a: write(2) goes through there; the
# offload write refuses, as fallocate refuses to punch holes).
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 chattr lsattr

B=$T/back
M=$T/mnt
R=$T/ref
mkdir -p "$B" "$R"
odx_ioctl_setup
head -c 4M /dev/urandom >"$B/src.raw"
cp "$B/src.raw" "$R/src.raw"
for f in imm app; do
	head -c 1M /dev/urandom >"$B/$f.raw"
	cp "$B/$f.raw" "$R/$f.raw"
done
# The attributes must not outlive the test (rm -rf could not remove it).
at_exit "chattr -i -a $B/imm.raw $B/app.raw $R/imm.raw $R/app.raw"
chattr +i "$R/imm.raw" && chattr -i "$R/imm.raw" ||
	skip "the backing filesystem has no immutable attribute"
odxfs_mount "$B" "$M"

python3 - "$M" "$B" "$R" >"$T/results.txt" <<'PY' || fail "the checks did not run to their end"
import errno, hashlib, os, resource, signal, subprocess, sys
import odx_ioctl as ox
M, B, R = sys.argv[1:4]
ZERO = bytes.fromhex("ffff000100000000")     # the well-known zero token
MiB = 1 << 20

def ename(n):
    return errno.errorcode.get(n, str(n)) if n else "OK"

def check(name, got, want):
    print(f"{'PASS' if got == want else 'FAIL'} {name}: got {got}, expected {want}")

def outcome(f):
    """'OK' or the errno name of f(), and its result."""
    try:
        return "OK", f()
    except OSError as e:
        return ename(e.errno), None

def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

def owrite(fd, off, length, tok, toff=0):
    return ox.offload_write(fd, off, length, tok, transfer_offset=toff)["length_written"]

sfd = os.open(f"{M}/src.raw", os.O_RDONLY)
token = ox.offload_read(sfd, 0, 4 * MiB)["token"]

# Offload read needs a descriptor open for reading.
for mode, want in (("r", "OK"), ("rw", "OK"), ("w", "EBADF")):
    fd = os.open(f"{M}/src.raw", ox.OPEN_FLAGS[mode])
    check(f"offload read, open {mode}", outcome(lambda: ox.offload_read(fd, 0, MiB))[0], want)
    os.close(fd)

# Offload write needs one open for writing, without O_APPEND (as
# copy_file_range: its reference on ext4 first).
open(f"{B}/dst.raw", "wb").write(b"d" * MiB)
open(f"{R}/dst.raw", "wb").write(b"d" * MiB)
rsrc = os.open(f"{R}/src.raw", os.O_RDONLY)
for mode in ("wa", "rwa"):
    fd = os.open(f"{R}/dst.raw", ox.OPEN_FLAGS[mode])
    check(f"reference: copy_file_range on ext4, open {mode}",
          outcome(lambda: os.copy_file_range(rsrc, fd, 4096, 0, 0))[0], "EBADF")
    os.close(fd)
before = digest(f"{B}/dst.raw")
for mode in ("r", "wa", "rwa"):
    for kind, tok in (("data", token), ("zero", ZERO)):
        fd = os.open(f"{M}/dst.raw", ox.OPEN_FLAGS[mode])
        check(f"offload write ({kind} token), open {mode}",
              outcome(lambda: owrite(fd, 0, 65536, tok))[0], "EBADF")
        os.close(fd)
check("destination unchanged by the refused offload writes", digest(f"{B}/dst.raw"), before)
for mode in ("w", "rw"):
    fd = os.open(f"{M}/dst.raw", ox.OPEN_FLAGS[mode])
    check(f"offload write (data token), open {mode}", outcome(lambda: owrite(fd, 0, 65536, token)),
          ("OK", 65536))
    os.close(fd)

# Attributes set after the open: immutable, append-only.
for f, attr, want, ref_want in (("imm", "+i", "EPERM", "EPERM"), ("app", "+a", "EPERM", None)):
    rfd = os.open(f"{R}/{f}.raw", os.O_RDWR)
    subprocess.run(["chattr", attr, f"{R}/{f}.raw"], check=True)
    got = outcome(lambda: os.copy_file_range(rsrc, rfd, 65536, 0, 0))[0]
    if ref_want:
        check(f"reference: copy_file_range on ext4 after chattr {attr}", got, ref_want)
    else:
        print(f"NOTE reference: copy_file_range on ext4 after chattr {attr}: {got}")
    os.close(rfd)
    fds = {m: os.open(f"{M}/{f}.raw", ox.OPEN_FLAGS[m]) for m in ("w", "rw")}
    subprocess.run(["chattr", attr, f"{B}/{f}.raw"], check=True)
    before = digest(f"{B}/{f}.raw")
    for m, fd in fds.items():
        for kind, tok in (("data", token), ("zero", ZERO)):
            check(f"offload write ({kind} token), open {m}, then chattr {attr}",
                  outcome(lambda: owrite(fd, 0, 65536, tok))[0], want)
            check(f"offload write ({kind} token), open {m}, then chattr {attr}: appending",
                  outcome(lambda: owrite(fd, MiB, 65536, tok))[0], want)
        os.close(fd)
    check(f"chattr {attr}: destination unchanged", digest(f"{B}/{f}.raw"), before)
    subprocess.run(["chattr", "-" + attr[1], f"{B}/{f}.raw", f"{R}/{f}.raw"], check=True)

# RLIMIT_FSIZE: the caller's, with SIGXFSZ ignored (as the kernel sends it).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
with open(f"{B}/src.raw", "rb") as f:
    srcbytes = f.read()
for lim, off in ((2 * MiB + 300000, 2 * MiB), (3 * MiB, 2 * MiB + MiB // 2)):
    name = f"RLIMIT_FSIZE {lim}"
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim, resource.RLIM_INFINITY))
    # Each case on a new empty destination: the reference (copy_file_range
    # on ext4), copy_file_range inside the mount, the offload write.
    for o, want in ((lim, ("EFBIG", None)), (lim + 4096, ("EFBIG", None)),
                    (lim - 1, ("OK", 1)), (off, ("OK", lim - off))):
        for where in ("ref", "cfr", "ioctl"):
            path = f"{R if where == 'ref' else M}/lim-{where}-{lim}-{o}.raw"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            if where == "ioctl":
                got = outcome(lambda: owrite(fd, o, MiB, token, o))
            else:
                got = outcome(lambda: os.copy_file_range(rsrc if where == "ref" else sfd,
                                                         fd, MiB, o, o))
            what = "offload write" if where == "ioctl" else f"copy_file_range ({where})"
            check(f"{name}: {what} at {o}", got, want)
            check(f"{name}: {what} at {o}: size", os.fstat(fd).st_size,
                  o + want[1] if want[0] == "OK" else 0)
            os.close(fd)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with open(f"{B}/lim-ioctl-{lim}-{off}.raw", "rb") as f:
        f.seek(off)
        check(f"{name}: offload write at {off}: the bytes up to the limit",
              f.read(lim - off) == srcbytes[off:lim], True)
print("END")
PY
cat "$T/results.txt" >&2
grep -qx END "$T/results.txt" || fail "the checks stopped early"
while IFS= read -r line; do
	problem "${line#FAIL }"
done < <(grep '^FAIL ' "$T/results.txt")
daemon_alive "$M"
no_problems
pass
