#!/bin/bash
# The damage policy of the daemon (odxfs-stream(5), "Damage"): strict by
# default, -o salvage on request.
#   strict   a stream damaged where indexing sees it (a payload without its
#            CRLF, a wrong dataSize) is listed but fails to open with EIO,
#            logged once in one line naming the file, the offset and the
#            odxctl command; a compressed stream whose chunk fails to decode
#            fails that read with EIO, and from then on every read (also of
#            ranges read fine before, so the kernel's cached pages must be
#            gone) and every open fails with EIO too, logged once.
#   salvage  the same files open; the intact ranges read right, only the
#            damaged ones fail, and keep failing alone.
# A torn stream is served in both (not damage).  Other files keep working.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3

make_image disk --size 16M --extents 32 --seed policy
L=$T/disk.raw.layout.json
mkdir -p "$T/back"
mkstream stream --layout "$L" "$T/disk.raw" "$T/none.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/disk.raw" "$T/lz4.data" >/dev/null
mkstream corrupt --what crlf --frame 8 "$T/none.data" "$T/back/crlf.data" >"$T/crlf.json"
mkstream corrupt --what datasize "$T/none.data" "$T/back/datasize.data" >/dev/null
mkstream corrupt --what chunk --frame 6 "$T/lz4.data" "$T/back/chunk.data" >"$T/chunk.json"
mkstream corrupt --what no-stop "$T/none.data" "$T/back/torn.data" >/dev/null
cp "$T/none.data" "$T/back/good.data"
range() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["frame_start"], d["frame_length"])' "$1"; }
read -r crlf_off crlf_len < <(range "$T/crlf.json")
read -r chunk_off chunk_len < <(range "$T/chunk.json")

# reads.py FILE RAW CHECKS...: each check is OP:OFFSET, run in order on one
# descriptor opened first (OP ok: the 4 KiB there read as in RAW; eio: the
# read fails with EIO; eio-soon: fails with EIO within 5 s, the time the
# daemon may take to drop the kernel's cached pages; open-eio: opening the
# file again fails with EIO; open-ok: it opens).
cat >"$T/reads.py" <<'PY'
import errno, os, sys, time
img, raw = sys.argv[1], sys.argv[2]
fd = os.open(img, os.O_RDONLY)
exp = open(raw, "rb")
def want(o):
    exp.seek(o)
    return exp.read(4096)
def eio(o):
    try:
        os.pread(fd, 4096, o)
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit(f"{img}: read at {o}: {e}, expected EIO")
        return True
    return False
for check in sys.argv[3:]:
    op, o = check.split(":")
    o = int(o) - int(o) % 4096
    if op == "ok":
        try:
            got = os.pread(fd, 4096, o)
        except OSError as e:
            sys.exit(f"{img}: read at {o}: {e}")
        if got != want(o):
            sys.exit(f"{img}: read at {o}: wrong bytes")
    elif op == "eio":
        if not eio(o):
            sys.exit(f"{img}: read at {o} succeeded, expected EIO")
    elif op == "eio-soon":
        deadline = time.time() + 5
        while not eio(o):
            if time.time() > deadline:
                sys.exit(f"{img}: read at {o} still succeeds 5 s after the damage was found")
            time.sleep(0.05)
    elif op in ("open-eio", "open-ok"):
        try:
            os.close(os.open(img, os.O_RDONLY))
            if op == "open-eio":
                sys.exit(f"{img}: opened again after the damage was found")
        except OSError as e:
            if op == "open-ok" or e.errno != errno.EIO:
                sys.exit(f"{img}: open: {e}")
PY
reads() { python3 "$T/reads.py" "$@" || fail "reads of $(basename "$1") ($*)"; }
# The open of a damaged stream must fail with EIO.
open_eio() {
	expect_errno EIO "os.open('$1', os.O_RDONLY)"
}
# Exactly one log line matches.
logged_once() {
	local n
	n=$(grep -Ec -- "$2" "$1" || true)
	[ "$n" = 1 ] || fail "$n log lines match '$2', expected one"
}

# ---- strict (the default) ----
must_log 'crlf\.data: offset [0-9]+: .*not served \(strict\): opening it fails with EIO; `odxctl check .*crlf\.data` lists the problems, `odxctl repair .*crlf\.data -o OUT`.*-o salvage'
must_log 'datasize\.data: offset [0-9]+: .*not served \(strict\).*`odxctl check '
must_log 'chunk\.data: offset [0-9]+: .*not served any more \(strict\): every read and open of it fails with EIO.*`odxctl check '
must_log 'torn\.data: offset [0-9]+: .*served in part, up to its last complete frame.*`odxctl repair .*torn\.data -o OUT`'
odxfs_mount "$T/back" "$T/mnt"
log0=$T/odxfs-0.log
# Listed as their backing files, opening them fails.
[ "$(stat -c %s "$T/mnt/crlf.data")" = "$(stat -c %s "$T/back/crlf.data")" ] ||
	fail "a stream that does not open is not listed as its backing file"
for f in crlf datasize; do
	open_eio "$T/mnt/$f.data"
	open_eio "$T/mnt/$f.data"
done
# A damaged chunk: intact ranges read (and are cached by the kernel) until
# the read of the damaged one; then nothing of the file is served.
reads "$T/mnt/chunk.data" "$T/disk.raw" ok:0 ok:$((chunk_off + chunk_len + 65536)) \
	eio:$chunk_off eio:$((chunk_off + chunk_len / 2)) \
	eio-soon:0 eio-soon:$((chunk_off + chunk_len + 65536)) open-eio:0
open_eio "$T/mnt/chunk.data"
[ "$(sha "$T/mnt/good.data")" = "$(sha "$T/disk.raw")" ] || fail "an intact stream beside them reads wrong"
[ "$(sha "$T/mnt/torn.data")" = "$(sha "$T/disk.raw")" ] || fail "a stream without its stop frame reads wrong"
daemon_alive "$T/mnt"
for f in crlf datasize chunk torn; do
	logged_once "$log0" "$f\\.data: "
done
odxfs_umount "$T/mnt"

# ---- salvage ----
_expected=() _required=()
must_log 'crlf\.data: offset [0-9]+: .*served in part \(salvage\): its damaged ranges read with EIO; `odxctl check '
must_log 'datasize\.data: offset [0-9]+: .*served whole \(salvage\)'
must_log 'chunk\.data: offset [0-9]+: .*read of offset [0-9]+ failed'
expect_log 'crlf\.data: offset [0-9]+: image bytes lost to corruption'
expect_log 'torn\.data: offset [0-9]+: .*served in part, up to its last complete frame'
odxfs_mount "$T/back" "$T/mnt2" -o salvage
reads "$T/mnt2/crlf.data" "$T/disk.raw" ok:0 eio:$crlf_off ok:$((crlf_off + crlf_len + 65536)) \
	eio:$((crlf_off + crlf_len / 2)) ok:0 open-ok:0
[ "$(sha "$T/mnt2/datasize.data")" = "$(sha "$T/disk.raw")" ] || fail "salvage: a stream with a wrong dataSize reads wrong"
reads "$T/mnt2/chunk.data" "$T/disk.raw" ok:0 eio:$chunk_off ok:$((chunk_off + chunk_len + 65536)) \
	eio:$((chunk_off + chunk_len / 2)) ok:0 open-ok:0
reads "$T/mnt2/chunk.data" "$T/disk.raw" ok:$((chunk_off + chunk_len + 4096)) eio:$chunk_off
daemon_alive "$T/mnt2"
logged_once "$T/odxfs-1.log" 'chunk\.data: '
pass
