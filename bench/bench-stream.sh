#!/bin/bash
# Benchmark of the stream library and odxctl (issue 2).  Prints a table;
# asserts nothing.  Warm page cache, medians of RUNS runs (default 3).
#   bench/bench-stream.sh [BUILDDIR]
# Figures: open+index time and peak memory for 1,000,000 frames;
# sequential decode throughput (none, lz4, zlib) beside `cat` of the stream
# file; odxctl convert raw->stream and stream->raw throughput.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build}")
RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
MK="python3 $top/test/tools/mkstream.py"
ODXCTL=$build/src/cli/odxctl
READ=$build/bench/stream-read
[ -x "$ODXCTL" ] && [ -x "$READ" ] || { echo "build first: ninja -C $build" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/odxbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# median_time CMD...: median wall time of RUNS runs, in seconds
median_time() {
	python3 - "$RUNS" "$@" <<'PY'
import subprocess, sys, time, statistics
runs = int(sys.argv[1]); cmd = sys.argv[2:]
ts = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ts.append(time.perf_counter() - t)
print(f"{statistics.median(ts):.4f}")
PY
}
# median_json KEY CMD...: median of a key of stream-read's JSON output
median_json() {
	python3 - "$RUNS" "$@" <<'PY'
import json, subprocess, sys, statistics
runs = int(sys.argv[1]); key = sys.argv[2]; cmd = sys.argv[3:]
vals = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)[key]
        for _ in range(runs)]
print(statistics.median(vals))
PY
}
mbs() { python3 -c "print(f'{$1 / 1e6 / $2:8.0f}')"; }
fsize() { stat -c %s "$1"; }

echo "# generating test data in $work (1,000,000-frame stream, ${SIZE} images)" >&2
$MK image many.raw --size 1G --extents 1000000 --unaligned --sparse --seed bench >/dev/null
$MK stream many.raw many.data --layout many.raw.layout.json --no-chksum >/dev/null
rm -f many.raw
frames=$($ODXCTL info --json many.data | python3 -c "import json,sys;i=json.load(sys.stdin);print(i['dataFrames']+i['zeroFrames'])")
idx=$(median_json index_s "$READ" many.data --index-only)
rss=$(median_json index_rss_kib "$READ" many.data --index-only)

# A disk that compresses about 2:1, like real VM disks: 64 extents, 90%
# data, each 4 KiB block half random and half text-like.
$MK image dense.raw --size "$SIZE" --extents 64 --data-ratio 0.9 --seed bench >/dev/null
python3 - dense.raw.layout.json dense.raw <<'PY'
import json, os, sys
lay = json.load(open(sys.argv[1]))
text = (b"odxfs benchmark: the quick brown fox jumps over the lazy dog. " * 40)[:2048]
with open(sys.argv[2], "r+b") as f:
    for r in lay:
        if r["kind"] != "data":
            continue
        f.seek(r["offset"])
        left = r["length"]
        while left:
            n = min(left, 8 << 20)
            blocks = bytearray()
            rnd = os.urandom(n // 2 + 4096)
            for i in range(0, n, 4096):
                blocks += rnd[i // 2:i // 2 + 2048] + text
            f.write(bytes(blocks[:n]))
            left -= n
PY
rawsz=$(fsize dense.raw)
cat dense.raw >/dev/null

printf '\n## odxfs stream library benchmark (%s runs, median; %s cores)\n\n' "$RUNS" "$(nproc)"
printf '| measure | value |\n|---|---|\n'
printf '| open+index, %s frames | %.3f s |\n' "$frames" "$idx"
printf '| peak RSS after index (whole process) | %.1f MiB |\n' "$(python3 -c "print($rss/1024)")"
printf '\n| codec | convert raw->stream MB/s | stream file size | cat stream MB/s | decode MB/s (file bytes) | decode/cat | decode MB/s (image bytes) | convert stream->raw MB/s |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for c in none lz4 zlib; do
	t_conv=$(RUNS=1 median_time "$ODXCTL" convert --quiet --compress $c dense.raw d.$c.data)
	sz=$(fsize d.$c.data)
	cat d.$c.data >/dev/null
	t_cat=$(median_time cat d.$c.data)
	t_dec=$(median_json read_s "$READ" d.$c.data)
	t_back=$(RUNS=1 median_time "$ODXCTL" convert --quiet d.$c.data back.$c.raw)
	cmp -s dense.raw back.$c.raw || echo "WARNING: $c round trip differs" >&2
	rm -f back.$c.raw
	printf '| %s | %s | %s | %s | %s | %.2f | %s | %s |\n' "$c" "$(mbs "$rawsz" "$t_conv")" "$sz" \
		"$(mbs "$sz" "$t_cat")" "$(mbs "$sz" "$t_dec")" \
		"$(python3 -c "print($t_cat / $t_dec)")" "$(mbs "$rawsz" "$t_dec")" "$(mbs "$rawsz" "$t_back")"
done
t_cp=$(median_time cp --sparse=always dense.raw cp.raw)
printf '\nreference: cp --sparse=always of the %s-byte raw image: %s MB/s\n' "$rawsz" "$(mbs "$rawsz" "$t_cp")"
