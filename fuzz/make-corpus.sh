#!/bin/bash
# Regenerate the seed corpus in fuzz/corpus/: fuzz/make-corpus.sh [BUILDDIR]
#
# Deterministic (fixed mkstream seeds, fixed token fields), so running it
# again changes nothing unless the generators changed.  The files are
# committed; fuzz/run.sh only ever copies them.
#
#   stream/   byte 0 (open flags: 0 strict, 1 ALLOW_TORN, 2 ALLOW_TORN|SALVAGE)
#             then a stream from test/tools/mkstream.py: a 256 KiB image
#             with ~5 KiB of data, uncompressed, lz4 and zlib, chunked
#             (--chunk-size 1K), incremental, overlapping, hyphen keys,
#             version 1, no trailer, a 1 TiB sparse one; every entry of
#             `mkstream.py corruptions` applied to an uncompressed (strict)
#             and a chunked lz4 (salvage) stream; torn copies (partial)
#   meta/     the meta JSON of those streams, and a few edge cases
#   trailer/, codec/, token/   written by mkseeds (fuzz/mkseeds.c)
#
# BUILDDIR (default build-fuzz) is built with fuzz/build.sh for mkseeds.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-build-fuzz}
case "$builddir" in /*) ;; *) builddir=$top/$builddir ;; esac
"$top/fuzz/build.sh" "$builddir"

mk() { python3 "$top/test/tools/mkstream.py" "$@" >/dev/null; }
out=$top/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"
mkdir -p "$out"/{stream,meta,trailer,codec,token}

# seed FLAGBYTE STREAM NAME: byte 0 then the stream, into corpus/stream.
seed() { { printf "\\x$(printf %02x "$1")"; cat "$2"; } >"$out/stream/$3"; }

cd "$tmp"
mk image img.raw --size 256K --extents 10 --data-ratio 0.02 --unaligned \
	--pattern compressible --seed 1
lay=(--layout img.raw.layout.json)
mk stream img.raw none.data "${lay[@]}"
mk stream img.raw lz4.data "${lay[@]}" --compress lz4
mk stream img.raw zlib.data "${lay[@]}" --compress zlib
mk stream img.raw lz4-chunked.data "${lay[@]}" --compress lz4 --chunk-size 1K
mk stream img.raw zlib-chunked.data "${lay[@]}" --compress zlib --chunk-size 1K
mk stream img.raw none-incremental.data --incremental --changed img.raw.layout.json
mk stream img.raw lz4-incremental.data --incremental --changed img.raw.layout.json \
	--compress lz4
mk stream img.raw none-hyphen.data "${lay[@]}" --hyphen-keys \
	--extra-meta 'odxfsTest={"nested": [1, 2.5, null]}'
mk stream img.raw none-v1.data "${lay[@]}" --stream-version 1
mk stream img.raw lz4-no-trailer.data "${lay[@]}" --compress lz4 --no-trailer
mk overlap none-overlap.data overlap.raw --virtual-size 256K --frames 12 --max-len 2K \
	--zero-frames --unaligned --seed 2
mk overlap lz4-overlap.data overlap2.raw --virtual-size 256K --frames 12 --max-len 2K \
	--zero-frames --unaligned --seed 3 --compress lz4
mk huge none-huge.data --virtual-size 1T --extents "0:1K,512G:2K,1099511625728:2K" --seed 4
mk huge lz4-huge.data --virtual-size 1T --extents "4K:1K,700G:2K" --no-zero-frames \
	--compress lz4 --seed 5
for f in *.data; do
	seed 0 "$f" "${f%.data}"
done

# Every damaged case, on an uncompressed stream (opened strict) and a
# chunked lz4 one (opened with salvage).  A case that does not apply to an
# input (the trailer ones to an uncompressed stream) is skipped.
whats=$(python3 "$top/test/tools/mkstream.py" corruptions |
	python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin))))')
for w in $whats; do
	if mk corrupt none.data "bad.data" --what "$w" 2>/dev/null; then
		seed 0 bad.data "corrupt-none-$w"
	fi
	if mk corrupt lz4-chunked.data "bad.data" --what "$w" 2>/dev/null; then
		seed 2 bad.data "corrupt-lz4-$w"
	fi
done
mk corrupt zlib.data bad.data --what chunk && seed 2 bad.data corrupt-zlib-chunk

# Torn streams (opened with ALLOW_TORN).
for base in none lz4-chunked zlib; do
	mk partial "$base.data" t.partial --cut-frames 3 && seed 1 t.partial "torn-$base-frames3"
	mk partial "$base.data" t.partial --cut-frames 2 --mid-header &&
		seed 1 t.partial "torn-$base-mid-header"
	mk partial "$base.data" t.partial --cut-frames 1 --mid-payload &&
		seed 1 t.partial "torn-$base-mid-payload"
done
mk partial lz4.data t.partial --cut 100 && seed 1 t.partial torn-lz4-in-meta
mk partial lz4.data t.partial --cut-frames 10 && seed 1 t.partial torn-lz4-no-trailer

# Hostile files of issue 9 and the bad inputs of the unit tests (small
# versions: a claim of a huge chunk, a long trailer, a zlib bomb in a torn
# tail), each opened strict (0) and with salvage (2).
CORPUS=$out python3 - <<'PY'
import json, zlib
def hdr(k, s, l):
    return b"%s %016x %016x\r\n" % (k, s, l)
def meta(text):
    t = text.encode() if isinstance(text, str) else text
    return hdr(b"meta", 0, len(t)) + t + b"\r\n"
def std(vs, ds, comp="2", method="lz4"):
    return meta('{"virtualSize": %d, "dataSize": %d, "streamVersion": 2, "compressed": %s, '
                '"compressionMethod": "%s"}' % (vs, ds, comp, method))
def tail(trailer):
    return hdr(b"stop", 0, 0) + trailer + b"\r\n" + hdr(b"comp", 0, len(trailer))
z4k = zlib.compress(b"\0" * 4096)
zbig = zlib.compress(b"\0" * (1 << 20), 9)
out = {
    # the meta length swallows the first frame (cJSON stops after the object)
    "meta-swallows-frame": meta('{"virtualSize": 1048576, "dataSize": 16}\r\n'
                                'data 0000000000000000 0000000000000010\r\n0123456789abcdef')
                           + hdr(b"stop", 0, 0),
    "meta-leading-zero": meta('{"virtualSize": 04096, "dataSize": 0}') + hdr(b"stop", 0, 0),
    "meta-nested-size": meta('{"virtualSize": 1048576, "x": {"dataSize": 0}, '
                             '"dataSize": 9007199254740993}') + hdr(b"stop", 0, 0),
    "meta-nul-space": meta(b'{"virtualSize": 4096,\0"dataSize": 0}') + hdr(b"stop", 0, 0),
    "meta-infinite-level": std(4096, 0, "5e432") + tail(b"[]"),
    "meta-unknown-codec": std(4096, 0, "2", "zstd") + tail(b"[]"),
    # one chunk claiming 4 GiB (over the 32 MiB limit)
    "zlib-chunk-claims-4g": std(1 << 33, 1 << 32, "6", "zlib") + hdr(b"data", 0, 1 << 32)
                            + z4k + b"\r\n" + tail(b"[%d]" % len(z4k)),
    # a trailer of 20,000 entries for one data frame
    "trailer-too-long": std(1 << 20, 4096, "6", "zlib") + hdr(b"data", 0, 4096) + z4k
                        + b"\r\n" + tail(b"[%d" % len(z4k) + b", 1" * 20000 + b"]"),
    "trailer-exponent": std(1 << 20, 4096, "6", "zlib") + hdr(b"data", 0, 4096) + z4k
                        + b"\r\n" + tail(b"[%de0]" % len(z4k)),
    # complete, but the entry runs past the end of the file
    "trailer-past-end": std(1 << 20, 4096, "6", "zlib") + hdr(b"data", 0, 4096) + b"xxxx\r\n"
                        + tail(b"[3370]"),
    # a torn zlib tail whose chunks inflate 1000-fold
    "torn-zlib-bomb": std(1 << 40, 0, "9", "zlib") + hdr(b"data", 0, 1 << 38) + zbig * 8,
}
for name, b in out.items():
    for flags in (0, 2):
        open("%s/stream/hostile-%s-%d" % (__import__("os").environ["CORPUS"], name, flags),
             "wb").write(bytes([flags]) + b)
PY

# Meta JSON: from the streams above, then edge cases.
for f in none lz4 zlib none-incremental none-hyphen none-v1 lz4-no-trailer none-huge; do
	python3 - "$f.data" "$out/meta/$f.json" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
n = int(b[22:38], 16)
open(sys.argv[2], "wb").write(b[40:40 + n])
PY
done
m() { printf '%s' "$2" >"$out/meta/$1.json"; }
m man-example '{"virtualSize": 8192, "dataSize": 4, "streamVersion": 2, "compressed": false, "incremental": false}'
m big-sizes '{"virtualSize": 9223372036854775807, "dataSize": 18446744073709551615}'
m above-2-53 '{"virtual-size": 9007199254740993, "data-size": 9007199254740993, "stream-version": 2, "compressed": 9, "compressionMethod": "zlib"}'
m zero-level '{"virtualSize": 0, "streamVersion": 2, "compressed": 0}'
m padded '{"virtualSize": 1048576, "dataSize": 0, "streamVersion": 2, "compressed": null                                }'
m minimal '{"virtualSize":1}'
# the chain keys (odxfs-stream(5) Chains) of other types, or too long to keep
m chain-keys-odd '{"virtualSize": 65536, "incremental": true, "diskName": 7, "checkpointName": ["a"], "parentCheckpoint": {"x": "y"}}'
m chain-keys-long "{\"virtualSize\": 65536, \"incremental\": true, \"checkpointName\": \"$(head -c 1100 /dev/zero | tr '\0' c)\", \"parentCheckpoint\": \"\"}"

"$builddir/fuzz/mkseeds" "$out"
du -sh "$out"
for d in "$out"/*; do echo "$(basename "$d"): $(find "$d" -type f | wc -l) files"; done
