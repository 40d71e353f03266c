#!/bin/bash
# odxctl compact: streams whose frames overlap (uncompressed and LZ4, full
# and incremental, from the independent generator) rewritten without what
# later frames hide.  The image must not change (odxctl convert, the
# generator's own decoder on the new file, and a mount when FUSE is
# there), the frames and the file must shrink, check must be clean, an
# incremental must keep its unmapped ranges and zero frames, the LZ4 ones
# must have chunks copied as they were; damaged, torn and foreign files
# and an existing FILE.partial are refused with FILE left as it was.
. "$(dirname "$0")/lib.sh"
require_cmd python3 cmp
[ -n "$ODXCTL" ] || skip "odxctl was not built (ODXCTL unset)"

B=$T/back
mkdir -p "$B"
# The inline generator below imports mkstream.py, which needs python3-lz4
# (mkstream.py itself runs again under /usr/bin/python3 when it must).
PY=python3
"$PY" -c 'import lz4.frame' 2>/dev/null || PY=/usr/bin/python3

# ---- the streams ----
# Full, from the generator: random frames over 8 MiB, most of them
# overlapping earlier ones, about 30% zero frames (later frame wins).
mkstream overlap "$B/full.data" "$T/full.gen.raw" --zero-frames --virtual-size 8M \
	--frames 80 --max-len 512K --seed compact-full >/dev/null
mkstream overlap "$B/full-lz4.data" "$T/full-lz4.gen.raw" --zero-frames --compress lz4 \
	--virtual-size 8M --frames 80 --max-len 512K --seed compact-lz4 >/dev/null
# Incremental, written here with the generator's writer: a 33 MiB frame
# (two chunks when compressed) with a frame and a zero frame inside its
# first chunk, frames over each other's ends, a zero frame on its own,
# one range written six times, and an unknown meta key.
for c in none lz4; do
	"$PY" - "$here/../tools" "$B/inc-$c.data" "$c" <<'PY' >/dev/null || fail "writing inc-$c.data"
import random, sys
sys.path.insert(0, sys.argv[1])
import mkstream
M = 1 << 20
rng = random.Random("compact-inc")
frames = [(b"data", 1 * M, 33 * M), (b"data", 2 * M, 100000), (b"zero", 20 * M, 65536),
          (b"data", 40 * M, 262144), (b"data", 40 * M + 200000, 100000), (b"zero", 44 * M, M)]
frames += [(b"data", 46 * M, 4096)] * 6 + [(b"data", 47 * M, 10000)]
payload = [rng.randbytes(ln) if k == b"data" else b"" for k, s, ln in frames]
mkstream.write_stream(sys.argv[2], 48 * M, frames, lambda i, s, ln: payload[i],
                      {"compress": sys.argv[3], "extra_meta": {"backupTool": "compact-test"}},
                      incremental=True)
PY
done
streams="full.data full-lz4.data inc-none.data inc-lz4.data"

# info KEY FILE: one value of odxctl info --json (the stream alone)
info() {
	"$ODXCTL" info --json --standalone "$2" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
frames() { echo $(($(info dataFrames "$1") + $(info zeroFrames "$1"))); }
# runs FILE: the map as runs of one kind (adjacent extents of a kind
# merged: the new stream may cut data into other frames); in a full stream
# unmapped reads as zero does, and becomes zero frames
runs() {
	"$ODXCTL" map --json --standalone "$1" | python3 -c '
import json, sys
full = sys.argv[1] == "False"
out = []
for e in json.load(sys.stdin):
    k = "zero" if full and e["kind"] == "unmapped" else e["kind"]
    if out and out[-1][2] == k and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], k])
for r in out:
    print(*r)' "$(info incremental "$1")"
}
# counter NAME REPORT: a byte count from the report of odxctl compact
counter() { sed -n "s/^  $1: *\([0-9][0-9]*\) bytes.*/\1/p" "$2"; }

# ---- before ----
for s in $streams; do
	f=$B/$s
	"$ODXCTL" check "$f" >/dev/null || fail "$s: the generated stream is not clean"
	# the expected image, by the generator's own decoder (later frame wins)
	mkstream raw-from-stream "$f" "$T/$s.expect" >/dev/null || fail "$s: reference decoder"
	runs "$f" >"$T/$s.runs"
	frames "$f" >"$T/$s.frames"
	stat -c %s "$f" >"$T/$s.size"
	info incremental "$f" >"$T/$s.incremental"
	chmod 0640 "$f"
done
cmp -s "$T/full.data.expect" "$T/full.gen.raw" || fail "the generator disagrees with itself"
grep -q ' unmapped$' "$T/inc-lz4.data.runs" || fail "no unmapped range in the incremental"

# ---- refusals: FILE untouched, no FILE.partial left ----
# refuse PATTERN FILE [OPTIONS]: compact must fail (status 3), say
# PATTERN, and leave FILE and its .chksum as they were
refuse() {
	local pat=$1 f=$2 rc=0
	shift 2
	local before
	before=$(state "$f")
	timeout 120 "$ODXCTL" compact "$@" "$f" >"$T/out.txt" 2>&1 || rc=$?
	[ $rc != 124 ] || fail "compact $* $f: hung"
	[ $rc = 3 ] || fail "compact $* $f: exit $rc, expected 3: $(cat "$T/out.txt")"
	grep -Eq -- "$pat" "$T/out.txt" || fail "compact $f: '$(cat "$T/out.txt")' does not match '$pat'"
	[ "$(state "$f")" = "$before" ] || fail "compact $f changed it"
}
# state FILE: its bytes and its .chksum (what compact must leave alone)
state() {
	if [ -f "$1" ]; then
		sha "$1"
		cat "$1.chksum" 2>/dev/null || true
	else
		stat -c %F "$1"
	fi
}
mkdir -p "$T/bad"
mkstream partial --cut-frames 20 "$B/full.data" "$T/bad/torn.data" >/dev/null
refuse 'odxctl repair' "$T/bad/torn.data"
mkstream corrupt "$B/full-lz4.data" "$T/bad/kind.data" --what kind --rechksum >/dev/null
refuse "kind.data: offset [0-9]+: expected a frame kind" "$T/bad/kind.data"
grep -q 'odxctl repair' "$T/out.txt" || fail "a damaged stream's refusal does not point at odxctl repair"
mkstream corrupt "$B/full-lz4.data" "$T/bad/trailer.data" --what trailer-count --rechksum >/dev/null
refuse "trailer.data: offset [0-9]+" "$T/bad/trailer.data"
# a flipped byte in uncompressed data: only its .chksum tells, and a new
# checksum must not bless it
mkstream corrupt "$B/full.data" "$T/bad/flip.data" --what chunk >/dev/null
refuse 'flip.data: offset 0: the Adler-32 .*changed since its backup' "$T/bad/flip.data"
# the same in LZ4 without a .chksum, in the last frame (47 MiB, seen
# whole): the sink copies the chunk as it is, without decoding it, and
# --verify, decoding both streams, finds the damage
mkstream corrupt "$B/inc-lz4.data" "$T/bad/lz4flip.data" --what chunk --frame 12 >"$T/flip.json"
grep -q "\"frame_start\": $((47 << 20))," "$T/flip.json" || fail "not the frame at 47 MiB: $(cat "$T/flip.json")"
rm "$T/bad/lz4flip.data.chksum"
refuse 'lz4flip.data: offset [0-9]+' "$T/bad/lz4flip.data" --verify
refuse 'not a stream.*odxfs mount' "$T/full.gen.raw"
refuse 'not a regular file' "$T/bad"
mkfifo "$T/bad/fifo"
refuse 'not a regular file' "$T/bad/fifo"
: >"$B/full.data.partial"
refuse 'full.data.partial exists' "$B/full.data"
[ -f "$B/full.data.partial" ] && [ ! -s "$B/full.data.partial" ] ||
	fail "compact touched a FILE.partial that was not its own"
rm "$B/full.data.partial"
"$ODXCTL" compact --level 3 "$B/full.data" >"$T/out.txt" 2>&1 && fail "--level on an uncompressed stream accepted"
grep -q 'needs --compress' "$T/out.txt" || fail "--level: $(cat "$T/out.txt")"
"$ODXCTL" compact --compress brotli "$B/full.data" 2>/dev/null && fail "--compress brotli accepted"
ls "$T/bad" "$B" | grep -q '\.partial$' && fail "a .partial was left behind: $(ls "$T/bad" "$B")"

# ---- compact ----
for s in $streams; do
	f=$B/$s
	verify=
	case $s in *lz4*) verify=--verify ;; esac
	"$ODXCTL" compact $verify "$f" >"$T/$s.report" 2>&1 || fail "compact $s: $(cat "$T/$s.report")"
	log "$(cat "$T/$s.report")"
	[ ! -e "$f.partial" ] || fail "$s.partial left behind"
	"$ODXCTL" check "$f" >"$T/out.txt" || fail "$s: check after compact: $(cat "$T/out.txt")"
	grep -q ': OK$' "$T/out.txt" || fail "$s: check did not say OK"
	# the image, by odxctl and by the generator's decoder (which also
	# checks the new .chksum and refuses anything the format does not allow)
	"$ODXCTL" convert "$f" "$T/$s.after" || fail "$s: convert"
	same_bytes "$T/$s.after" "$T/$s.expect"
	mkstream raw-from-stream --verify-chksum "$f" "$T/$s.ref" >/dev/null ||
		fail "$s: the reference decoder refuses the compacted stream"
	same_bytes "$T/$s.ref" "$T/$s.expect"
	runs "$f" >"$T/$s.runs.after"
	cmp -s "$T/$s.runs" "$T/$s.runs.after" ||
		fail "$s: the map changed: $(diff "$T/$s.runs" "$T/$s.runs.after" | head)"
	[ "$(info incremental "$f")" = "$(cat "$T/$s.incremental")" ] || fail "$s: incremental changed"
	before=$(cat "$T/$s.frames") after=$(frames "$f")
	[ "$after" -lt "$before" ] || fail "$s: $before frames before, $after after"
	grep -Eq "frames: +[0-9]+ data \+ [0-9]+ zero -> [0-9]+ data \+ [0-9]+ zero" "$T/$s.report" ||
		fail "$s: no frames line in the report"
	size=$(stat -c %s "$f")
	[ "$size" -lt "$(cat "$T/$s.size")" ] || fail "$s: $(cat "$T/$s.size") bytes before, $size after"
	grep -q "file size: *$(cat "$T/$s.size") .* -> $size " "$T/$s.report" ||
		fail "$s: the report's file sizes are not $(cat "$T/$s.size") -> $size"
	[ "$(stat -c %a "$f")" = 640 ] || fail "$s: mode $(stat -c %a "$f"), expected 640 as before"
	case $s in
	*lz4*)
		v=$(counter verbatim "$T/$s.report")
		[ -n "$v" ] && [ "$v" -gt 0 ] || fail "$s: no chunk copied as it was (verbatim: '$v')"
		[ "$(counter kernel "$T/$s.report")" = 0 ] || fail "$s: kernel copies into a compressed stream"
		;;
	*)
		k=$(counter kernel "$T/$s.report")
		[ -n "$k" ] && [ "$k" -gt 0 ] || fail "$s: nothing copied in the kernel (kernel: '$k')"
		[ "$(counter verbatim "$T/$s.report")" = 0 ] || fail "$s: verbatim chunks in an uncompressed stream"
		;;
	esac
done
# zero frames of an incremental stay zero frames, and its meta keeps the
# key it does not know
for c in none lz4; do
	grep -q "^$((20 << 20)) 65536 zero$" "$T/inc-$c.data.runs.after" || fail "inc-$c: zero frame lost"
	"$ODXCTL" info --json --standalone "$B/inc-$c.data" | grep -Eq '"backupTool":[[:space:]]*"compact-test"' ||
		fail "inc-$c: an unknown meta key was dropped"
done

# Compacting again finds nothing to drop: same image, same frames.
"$ODXCTL" compact -q "$B/inc-lz4.data" >"$T/out.txt" 2>&1 || fail "second compact: $(cat "$T/out.txt")"
[ ! -s "$T/out.txt" ] || fail "-q printed: $(cat "$T/out.txt")"
"$ODXCTL" convert "$B/inc-lz4.data" "$T/again.raw" && same_bytes "$T/again.raw" "$T/inc-lz4.data.expect"

# Another codec: nothing can be copied as it is, the image stays.
"$ODXCTL" compact --compress zlib --level 9 --verify "$B/full-lz4.data" >"$T/zlib.report" 2>&1 ||
	fail "compact --compress zlib: $(cat "$T/zlib.report")"
[ "$(info compression "$B/full-lz4.data")" = zlib ] || fail "--compress zlib: not zlib"
[ "$(counter verbatim "$T/zlib.report")" = 0 ] || fail "--compress zlib: chunks copied as they were"
"$ODXCTL" check "$B/full-lz4.data" >/dev/null || fail "check after --compress zlib"
"$ODXCTL" convert "$B/full-lz4.data" "$T/zlib.raw" && same_bytes "$T/zlib.raw" "$T/full-lz4.data.expect"

# Through a mount, when there is one: the file shows as the image it
# decodes to (compact refuses it: not a stream), which is the same bytes.
if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null && [ "$(id -u)" = 0 ]; then
	mkdir -p "$T/m"
	cp "$B/full.data" "$B/full.data.chksum" "$B/inc-lz4.data" "$B/inc-lz4.data.chksum" "$T/m/"
	odxfs_mount "$T/m" "$T/mnt" -o chain=off
	same_bytes "$T/mnt/full.data" "$T/full.data.expect"
	same_bytes "$T/mnt/inc-lz4.data" "$T/inc-lz4.data.expect"
	refuse 'not a stream.*odxfs mount' "$T/mnt/full.data"
	odxfs_umount "$T/mnt"
else
	log "no FUSE here: the mounted image is not compared"
fi
pass
