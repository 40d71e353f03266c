#!/bin/bash
# CLI tests: the real odxctl binary on streams made by the independent
# generator (test/tools/mkstream.py), checked against the generator's own
# reference decoder.  Usage: odxctl.sh ODXCTL
set -uo pipefail
ODXCTL=$(realpath "${1:?usage: $0 ODXCTL}")
top=$(cd "$(dirname "$0")/../.." && pwd)
MK="python3 $top/test/tools/mkstream.py"
work=$(mktemp -d /tmp/odxctl-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
fails=0
pass() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
# expect STATUS CMD...: run, compare the exit status
expect() {
	local want=$1; shift
	"$@" >out.txt 2>err.txt
	local got=$?
	if [ "$got" = "$want" ]; then pass "$* -> $got"; else
		fail "$* -> $got, expected $want"; sed 's/^/    /' out.txt err.txt | head -20; fi
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

if ! $MK --help >/dev/null 2>&1; then
	echo "mkstream.py does not run (python3-lz4 missing?)"
	[ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ] && exit 1
	exit 77
fi

# --- help and usage ---
expect 0 "$ODXCTL" --help
for c in info map check repair convert; do expect 0 "$ODXCTL" "$c" --help; done
expect 2 "$ODXCTL" no-such-command
expect 2 "$ODXCTL" info
expect 2 "$ODXCTL" convert only-one-arg
expect 2 "$ODXCTL" convert --compress brotli a b
expect 2 "$ODXCTL" convert --zero-block 1000 a b

# --- streams written by the generator read back exactly ---
$MK image img.raw --size 24M --extents 3000 --unaligned --sparse --seed cli >/dev/null
for c in none lz4 zlib; do
	$MK stream img.raw s.$c.data --layout img.raw.layout.json --compress $c --chunk-size 32M >/dev/null
	expect 0 "$ODXCTL" check s.$c.data
	grep -q ": OK" out.txt || fail "check did not say OK for $c"
	expect 0 "$ODXCTL" convert s.$c.data back.$c.raw
	if cmp -s img.raw back.$c.raw; then pass "generator $c stream -> raw identical"; else fail "generator $c stream -> raw differs"; fi
	# holes of the exported raw file where the stream has zero extents
	alloc=$(du -k back.$c.raw | cut -f1)
	[ "$alloc" -lt 20000 ] && pass "export of $c is sparse (${alloc} KiB)" || fail "export of $c is not sparse (${alloc} KiB)"
	expect 0 "$ODXCTL" info --json s.$c.data
	python3 - out.txt img.raw.layout.json "$c" <<'PY' && pass "info --json for $c" || fail "info --json for $c"
import json, sys
info = json.load(open(sys.argv[1])); lay = json.load(open(sys.argv[2]))
data = sum(r["length"] for r in lay if r["kind"] == "data")
assert info["dataSize"] == data, (info["dataSize"], data)
assert info["virtualSize"] == 24 << 20
assert info["compression"] == sys.argv[3]
assert info["meta"]["diskName"]
PY
	expect 0 "$ODXCTL" map --json s.$c.data
	python3 - out.txt img.raw.layout.json <<'PY' && pass "map --json data ranges for $c" || fail "map --json for $c"
import json, sys
m = json.load(open(sys.argv[1])); lay = json.load(open(sys.argv[2]))
def merge(rs):
    out = []
    for s, l in rs:
        if out and out[-1][0] + out[-1][1] == s: out[-1][1] += l
        else: out.append([s, l])
    return out
got = merge([(e["start"], e["length"]) for e in m if e["data"]])
want = merge([(r["offset"], r["length"]) for r in lay if r["kind"] == "data"])
assert got == want, (got[:3], want[:3])
assert sum(e["length"] for e in m) == 24 << 20
PY
done

# --- streams written by odxctl decode with the reference decoder ---
for c in none lz4 zlib; do
	expect 0 "$ODXCTL" convert --quiet --compress $c img.raw o.$c.data
	$MK raw-from-stream o.$c.data ref.$c.raw --verify-chksum >/dev/null 2>&1 &&
		cmp -s img.raw ref.$c.raw && pass "odxctl $c stream decodes with the reference decoder" ||
		fail "odxctl $c stream does not decode with the reference decoder"
done
expect 0 "$ODXCTL" convert --zero-block 4K --compress lz4 --level 9 img.raw o.z4k.data
cmp -s <($MK raw-from-stream o.z4k.data /dev/stdout 2>/dev/null; true) img.raw 2>/dev/null
$MK raw-from-stream o.z4k.data ref.z4k.raw >/dev/null 2>&1 && cmp -s img.raw ref.z4k.raw &&
	pass "--zero-block 4K --level 9 round trip" || fail "--zero-block 4K --level 9 round trip"

# --- incremental ---
expect 0 "$ODXCTL" convert --changed 4096:1M,8M:12345,20M:4K img.raw inc.data
expect 0 "$ODXCTL" info --json inc.data
python3 -c "import json;i=json.load(open('out.txt'));assert i['incremental'] and i['zeroFrames']==0 and i['dataSize']==(1<<20)+12345+4096" &&
	pass "incremental info" || fail "incremental info"
expect 0 "$ODXCTL" convert inc.data inc.raw
python3 - img.raw inc.raw <<'PY' && pass "incremental content" || fail "incremental content"
import sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
assert len(a) == len(b)
ranges = [(4096, 1 << 20), (8 << 20, 12345), (20 << 20, 4096)]
exp = bytearray(len(a))
for o, l in ranges: exp[o:o + l] = a[o:o + l]
assert bytes(exp) == b
PY

# --- bad inputs: clear error naming file and offset, input untouched ---
$MK stream img.raw base.none.data --layout img.raw.layout.json >/dev/null
# few large regions, small chunks: the trailer has {"size": [chunks]} entries
$MK image big.raw --size 24M --extents 7 --seed chunky >/dev/null
$MK stream big.raw base.lz4.data --layout big.raw.layout.json --compress lz4 --chunk-size 1M >/dev/null
for what in kind hex header crlf meta meta-no-virtual meta-not-object datasize beyond-virtual \
	overflow virtual-too-big stop-not-zero trailing-garbage; do
	$MK corrupt base.none.data bad.$what.data --what $what >/dev/null 2>&1 || { fail "mkstream corrupt $what"; continue; }
	before=$(sha bad.$what.data)
	expect 3 "$ODXCTL" info bad.$what.data
	grep -q "bad.$what.data" err.txt && grep -q "offset [0-9]" err.txt &&
		pass "$what: message names file and offset" || fail "$what: message lacks file/offset: $(cat err.txt)"
	expect 1 "$ODXCTL" check bad.$what.data
	grep -q "offset [0-9]" out.txt || fail "$what: check output lacks an offset"
	[ "$(sha bad.$what.data)" = "$before" ] || fail "$what: input modified"
done
for what in trailer-count trailer-extra trailer-json trailer-size trailer-sum comp-length; do
	$MK corrupt base.lz4.data bad.$what.data --what $what >/dev/null 2>&1 || { fail "mkstream corrupt $what"; continue; }
	expect 3 "$ODXCTL" info bad.$what.data
	grep -q "offset [0-9]" err.txt && pass "$what: offset given" || fail "$what: no offset: $(cat err.txt)"
	expect 1 "$ODXCTL" check bad.$what.data
done
# a corrupt compressed chunk: info still works (payloads are not read),
# check and convert fail naming the chunk's offset
$MK corrupt base.lz4.data bad.chunk.data --what chunk >off.json 2>/dev/null
expect 0 "$ODXCTL" info bad.chunk.data
expect 1 "$ODXCTL" check bad.chunk.data
grep -qi "lz4" out.txt && pass "chunk corruption reported as LZ4 error" || fail "chunk: $(cat out.txt)"
expect 3 "$ODXCTL" convert bad.chunk.data bad.chunk.raw
[ -e bad.chunk.raw ] && fail "a failed convert left its output" || pass "failed convert leaves no output"
# chksum mismatch only matters to check
$MK corrupt base.none.data bad.chksum.data --what chksum >/dev/null 2>&1
expect 1 "$ODXCTL" check bad.chksum.data
grep -q "Adler-32" out.txt && pass "chksum mismatch reported" || fail "chksum: $(cat out.txt)"
: >empty.data
expect 3 "$ODXCTL" info empty.data
grep -q "empty file" err.txt || fail "zero-length file message: $(cat err.txt)"
expect 1 "$ODXCTL" check empty.data img.raw

# --- repair of a .partial ---
for c in none lz4 zlib; do
	$MK stream img.raw full.$c.data --layout img.raw.layout.json --compress $c --chunk-size 4M >/dev/null
	$MK partial full.$c.data p.$c.data.partial --cut-frames 700 --mid-payload >/dev/null
	before=$(sha p.$c.data.partial)
	expect 3 "$ODXCTL" info p.$c.data.partial
	grep -q "repair" err.txt || fail "partial info does not suggest repair"
	expect 2 "$ODXCTL" repair p.$c.data.partial
	expect 0 "$ODXCTL" repair p.$c.data.partial -o r.$c.data
	[ "$(sha p.$c.data.partial)" = "$before" ] && pass "repair -o leaves the input alone" || fail "repair modified input"
	expect 0 "$ODXCTL" check r.$c.data
	expect 0 "$ODXCTL" convert r.$c.data r.$c.raw
	cmp -s r.$c.raw p.$c.data.partial.expect.raw && pass "repaired $c partial = expected image" ||
		fail "repaired $c partial differs from the expected image"
	cp p.$c.data.partial inplace.$c.data
	expect 0 "$ODXCTL" repair --in-place inplace.$c.data
	expect 0 "$ODXCTL" check inplace.$c.data
done

# --- meta: both spellings, unknown keys kept through repair ---
$MK stream img.raw hy.data --layout img.raw.layout.json --hyphen-keys --extra-meta owner=backup-team >/dev/null
expect 0 "$ODXCTL" convert hy.data hy.raw
cmp -s hy.raw img.raw && pass "hyphen-key meta read" || fail "hyphen-key meta"
$MK partial hy.data hy.partial --cut-frames 100 >/dev/null
expect 0 "$ODXCTL" repair hy.partial -o hy.fixed
grep -q '"owner"' hy.fixed && grep -q '"virtual-size"' hy.fixed && pass "unknown keys and spelling kept" || fail "meta keys lost in repair"

echo "odxctl CLI tests: $fails failed"
[ "$fails" = 0 ]
