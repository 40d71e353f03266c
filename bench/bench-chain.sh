#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of backup chains (issue 10).  Prints tables; asserts nothing.
#   bench/bench-chain.sh [BUILDDIR]     (root, /dev/fuse; RUNS=3 default)
#   BENCH_DIR=/var/tmp/odxfs-bench-chain  data, kept and reused between runs
#   SECTIONS="2 3 4"                      which parts (below) to run
#   FIO_RUNTIME=4                         seconds per fio run
#   MEM_CACHE=4G                          odxfs -o index_cache_size for part 4
#
# About 7 minutes here (4 with standalone views), plus 1.5 minutes to make
# the data the first time; the data takes 9.2 GB of disk.
#
# 1. Data (bench/mkchain.py, with test/tools/mkstream.py's stream writer;
# made once, reused while mkchain.py is unchanged):
#   none/, lz4/   a 4 GiB disk: sda.full.data with 1 GiB of data in 1000
#                 extents (data compresses about 2:1), then
#                 sda.inc.virtnbdbackup.1..10.data, each rewriting a
#                 different 10 % of the full's data (runs of 64-512 KiB) and
#                 writing 16 MiB of new data; uncompressed and LZ4 (one LZ4
#                 frame per data frame, 32 MiB chunks); meta as virtnbdbackup
#                 writes it (checkpointName virtnbdbackup.N, parentCheckpoint
#                 virtnbdbackup.N-1, incremental, diskName sda) and a
#                 vmconfig.*.xml for virtnbdrestore.  final.raw: the disk at
#                 virtnbdbackup.10, sparse.
#   chain30/      a 2 GiB disk: a full and 30 incrementals, each with 100,000
#                 data frames of 512 bytes at slots drawn at random (each
#                 member independently; ascending in the file; adjacent slots
#                 stay separate frames), so the last view has 2.2 million
#                 data extents from 31 files (3.25 million with its holes);
#                 uncompressed.
#   flat/         flat.full.data: one stream with the same bytes and the
#                 same data extents as chain30's last view (the "single
#                 stream" of the same fragmentation).  chain30-final.raw.
#
# 2. Restore of the disk at virtnbdbackup.10 (median of RUNS, page cache
#    dropped before each run, fsync of the result included):
#    (a) copy_file_range of the last view to a new file in the mount
#        (copy-seg whole: the loop cp 9.2+ or xfs_io copy_range makes),
#    (b) odxctl copy inside the mount,
#    (c) virtnbdrestore -i DIR -o OUT --until virtnbdbackup.10 (the real tool;
#        qcow2 through qemu-nbd; libvirt's in-process test driver as URI),
#    (d) the best native copy of final.raw (SEEK_DATA walk +
#        copy_file_range, copy-seg walk).
#    A fresh mount for (a) and (b); the timing starts after the mount, so it
#    includes the lookup that indexes the chain.  "identical": the result
#    compared with final.raw (cmp, or qemu-img compare for the qcow2).
# 3. Random 4 KiB reads (fio psync, O_DIRECT, 1 job, queue depth 1,
#    FIO_RUNTIME s, fresh mount, view opened once before, backing files warm;
#    RUNS rounds over the seven files in turn).
# 4. Mount plus first byte of chain30's last view, cold (page cache dropped,
#    odxfs started, first byte read), and the first byte again with the
#    member files in the page cache; then, in one mount, one byte read from
#    every view of chain30 (-o index_cache_size=MEM_CACHE, so that no index
#    is evicted): the daemon's VmRSS and `odxctl stats`, and the
#    memory per extent.  Extents of a view: `odxctl info` ("chain: ... in N
#    extents" of a chain member, else "extents:", the standalone map); for
#    the 31 views of chain30 the sum is mkchain's count of each merged map
#    (frames.json; `odxctl info` of every view takes minutes), checked
#    against `odxctl info` on the last view.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build-bench-chain}")
RUNS=${RUNS:-3}
SECTIONS=${SECTIONS:-"2 3 4"}
FIO_RUNTIME=${FIO_RUNTIME:-4}
MEM_CACHE=${MEM_CACHE:-4G}
BENCH_DIR=${BENCH_DIR:-/var/tmp/odxfs-bench-chain}
ODXFS=$build/src/fuse/odxfs
ODXCTL=$build/src/cli/odxctl
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # python3-lz4 is Debian's
[ -x "$ODXFS" ] && [ -x "$ODXCTL" ] || { echo "build first: meson setup $build --buildtype=release && ninja -C $build" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (mounts, drop_caches)" >&2; exit 2; }
for c in fusermount3 gcc fio qemu-img cmp; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done
have_vnr=1
command -v virtnbdrestore >/dev/null || { have_vnr=0; echo "# virtnbdrestore not installed: its rows are skipped" >&2; }

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(realpath "$BENCH_DIR")
run=$BENCH_DIR/run
mnt=$BENCH_DIR/mnt
rm -rf "$run"
mkdir -p "$run" "$mnt"
daemon_pid=
cleanup() {
	if grep -qs " $mnt fuse" /proc/self/mounts; then fusermount3 -uz "$mnt" 2>/dev/null || true; fi
	if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
	rm -f "$BENCH_DIR"/{none,lz4}/restored.raw
	rm -rf "$run"
}
trap cleanup EXIT

# ---- data -------------------------------------------------------------------

gen_sum=$(cat "$top/bench/mkchain.py" | sha256sum | cut -c1-16)
gen() { # restore|frames
	if [ -f "$BENCH_DIR/$1.json" ] && [ "$(cat "$BENCH_DIR/.gen-$1" 2>/dev/null)" = "$gen_sum" ]; then
		echo "# reusing $1 data in $BENCH_DIR" >&2
		return
	fi
	echo "# generating $1 data in $BENCH_DIR (once) ..." >&2
	local t0=$SECONDS
	rm -f "$BENCH_DIR/.gen-$1"
	$PY "$top/bench/mkchain.py" "$1" "$BENCH_DIR" >/dev/null
	echo "$gen_sum" >"$BENCH_DIR/.gen-$1"
	echo "# $1 data made in $((SECONDS - t0)) s" >&2
}
gen restore
gen frames
gcc -O2 -Wall -o "$run/copy-seg" "$top/bench/copy-seg.c"
COPYSEG=$run/copy-seg
LASTA=sda.inc.virtnbdbackup.10.data
LASTB=sda.inc.virtnbdbackup.30.data
final_data=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["final_data"])' "$BENCH_DIR/restore.json")

# ---- helpers ----------------------------------------------------------------

mount_odxfs() { # DIR [odxfs options]
	local dir=$1
	shift
	"$ODXFS" -f "$@" "$dir" "$mnt" 2>>"$run/odxfs.log" &
	daemon_pid=$!
	local deadline=$((SECONDS + 60))
	until grep -qs " $mnt fuse" /proc/self/mounts; do
		[ $SECONDS -lt $deadline ] && kill -0 "$daemon_pid" 2>/dev/null ||
			{ echo "mount of $dir failed" >&2; tail "$run/odxfs.log" >&2; exit 1; }
		sleep 0.01
	done
}
umount_odxfs() {
	fusermount3 -u "$mnt"
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
seconds() { # CMD...: wall time of one run
	$PY - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { $PY -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
calc() { $PY -c "print($1)"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
alloc_mib() { echo $(($(stat -c %b "$1") * 512 >> 20)); }
# view_extents FILE: the extents of FILE's view as `odxctl info` counts them
view_extents() {
	"$ODXCTL" info "$1" | awk '/^chain:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^extents/) c = $i }
		/^extents:/ && e == "" { e = $2 } END { print (c != "" ? c : e) }'
}
same() { if cmp -s "$1" "$2"; then echo yes; else echo NO; fi; }

# ---- 2. restore ---------------------------------------------------------------

declare -A rt rid
restore_rows=()
if [[ " $SECTIONS " == *" 2 "* ]]; then
	echo "# restore, $RUNS runs each, page cache dropped before each run" >&2
	mkdir -p "$run/native"
	ts=()
	for _ in $(seq "$RUNS"); do
		rm -f "$run/native/out.raw"
		drop_caches
		ts+=("$(seconds bash -c "'$COPYSEG' walk '$BENCH_DIR/final.raw' '$run/native/out.raw' && sync '$run/native/out.raw'")")
	done
	rt[native]=$(median "${ts[@]}")
	rid[native]=$(same "$run/native/out.raw" "$BENCH_DIR/final.raw")
	rm -f "$run/native/out.raw"
	restore_rows+=("native|native: SEEK_DATA walk + copy_file_range of final.raw")

	for c in none lz4; do
		for how in cfr odxctl; do
			ts=()
			for _ in $(seq "$RUNS"); do
				rm -f "$BENCH_DIR/$c/restored.raw"
				drop_caches
				mount_odxfs "$BENCH_DIR/$c"
				if [ $how = cfr ]; then
					ts+=("$(seconds bash -c "'$COPYSEG' whole '$mnt/$LASTA' '$mnt/restored.raw' && sync '$mnt/restored.raw'")")
				else
					ts+=("$(seconds bash -c "'$ODXCTL' copy --quiet '$mnt/$LASTA' '$mnt/restored.raw' && sync '$mnt/restored.raw'")")
				fi
				umount_odxfs
			done
			rt[$c-$how]=$(median "${ts[@]}")
			rid[$c-$how]=$(same "$BENCH_DIR/$c/restored.raw" "$BENCH_DIR/final.raw")
			rm -f "$BENCH_DIR/$c/restored.raw"
		done
		restore_rows+=("$c-cfr|odxfs $c: copy_file_range of the view in the mount")
		restore_rows+=("$c-odxctl|odxfs $c: odxctl copy in the mount")
		if [ $have_vnr = 1 ]; then
			sock=$run/vnr.sock
			cat >"$run/vnr.sh" <<EOF
set -e
virtnbdrestore -U test:///default -i '$BENCH_DIR/$c' -o '$run/vrest' --until virtnbdbackup.10 \
	-n -f '$sock' -L '$run/vnr.log' >/dev/null 2>>'$run/vnr.err'
while pgrep -f '^qemu-nbd .*$sock' >/dev/null; do sleep 0.01; done
sync '$run/vrest/sda.qcow2'
EOF
			ts=()
			for _ in $(seq "$RUNS"); do
				rm -rf "$run/vrest"
				drop_caches
				ts+=("$(seconds bash "$run/vnr.sh")")
			done
			rt[$c-vnr]=$(median "${ts[@]}")
			if qemu-img compare -q -f qcow2 -F raw "$run/vrest/sda.qcow2" "$BENCH_DIR/final.raw"; then
				rid[$c-vnr]=yes
			else
				rid[$c-vnr]=NO
			fi
			rm -rf "$run/vrest"
			restore_rows+=("$c-vnr|virtnbdrestore $c --until virtnbdbackup.10 (qcow2)")
		fi
	done
fi

# ---- 3. random reads -------------------------------------------------------------

declare -A iops
iops_rows=()
fio_once() { # DIR FILE: IOPS of one fio run in a fresh mount
	mount_odxfs "$1"
	head -c 1 "$mnt/$2" >/dev/null
	fio --name=rand --filename="$mnt/$2" --rw=randread --bs=4k --direct=1 \
		--ioengine=psync --numjobs=1 --iodepth=1 --runtime="$FIO_RUNTIME" --time_based \
		--output-format=json >"$run/fio.json" 2>>"$run/fio.err"
	$PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' "$run/fio.json"
	umount_odxfs
}
if [[ " $SECTIONS " == *" 3 "* ]]; then
	echo "# random reads, $RUNS rounds of 7 x ${FIO_RUNTIME} s" >&2
	# key|reference key|directory|file|label
	iops_rows=(
		"none-full|none-full|none|sda.full.data|4 GiB chain, none: sda.full.data alone"
		"none-view|none-full|none|$LASTA|4 GiB chain, none: view of member 11 ($LASTA)"
		"lz4-full|lz4-full|lz4|sda.full.data|4 GiB chain, lz4: sda.full.data alone"
		"lz4-view|lz4-full|lz4|$LASTA|4 GiB chain, lz4: view of member 11 ($LASTA)"
		"b-full|b-flat|chain30|sda.full.data|chain30: sda.full.data alone (100,000 data frames)"
		"b-flat|b-flat|flat|flat.full.data|single stream with the same extents as chain30's last view"
		"b-view|b-flat|chain30|$LASTB|chain30: last view ($LASTB, 31 members)"
	)
	declare -A iops_runs
	# rounds of every target in turn, so that the machine's noise spreads
	# over all of them; backing files warm
	for _ in $(seq "$RUNS"); do
		for r in "${iops_rows[@]}"; do
			IFS='|' read -r k _ d f _ <<<"$r"
			cat "$BENCH_DIR/$d"/*.data >/dev/null
			iops_runs[$k]+=" $(fio_once "$BENCH_DIR/$d" "$f")"
		done
	done
	for r in "${iops_rows[@]}"; do
		IFS='|' read -r k _ <<<"$r"
		# shellcheck disable=SC2086
		iops[$k]=$(median ${iops_runs[$k]})
	done
fi

# ---- 4. first byte, memory --------------------------------------------------------

if [[ " $SECTIONS " == *" 4 "* ]]; then
	echo "# first byte and memory" >&2
	fb_total=() fb_mount=()
	for _ in $(seq "$RUNS"); do
		drop_caches
		out=$($PY - "$ODXFS" "$BENCH_DIR/chain30" "$mnt" "$LASTB" "$run/odxfs.log" <<'PY'
import os, subprocess, sys, time
odxfs, back, mnt, view, logf = sys.argv[1:]
def mounted():
    with open("/proc/self/mounts") as f:
        return any(l.split()[1] == mnt and l.split()[2].startswith("fuse") for l in f)
t0 = time.perf_counter()
p = subprocess.Popen([odxfs, "-f", back, mnt], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=open(logf, "a"))
while not mounted():
    if p.poll() is not None:
        sys.exit("odxfs exited")
    time.sleep(0.001)
t1 = time.perf_counter()
with open(os.path.join(mnt, view), "rb") as f:
    f.read(1)
t2 = time.perf_counter()
subprocess.run(["fusermount3", "-u", mnt], check=True)
p.wait()
print(f"{t2 - t0:.4f} {t1 - t0:.4f}")
PY
)
		read -r tot mt <<<"$out"
		fb_total+=("$tot")
		fb_mount+=("$mt")
	done
	# the same with the member files in the page cache: the indexing alone
	cat "$BENCH_DIR"/chain30/*.data >/dev/null
	fb_warm=()
	for _ in $(seq "$RUNS"); do
		mount_odxfs "$BENCH_DIR/chain30"
		fb_warm+=("$(seconds head -c 1 "$mnt/$LASTB")")
		umount_odxfs
	done
	# an index cache big enough for every view (the default 64M evicts)
	mount_odxfs "$BENCH_DIR/chain30" -o index_cache_size=$MEM_CACHE
	rss0=$(rss_kib "$daemon_pid")
	n_views=0
	for f in "$BENCH_DIR"/chain30/*.data; do
		head -c 1 "$mnt/$(basename "$f")" >/dev/null
		n_views=$((n_views + 1))
	done
	rss1=$(rss_kib "$daemon_pid")
	hwm1=$(hwm_kib "$daemon_pid")
	stats=$("$ODXCTL" stats "$mnt" 2>&1 || true)
	umount_odxfs
	ext_all=0 ext_how=
	ext_last=$(view_extents "$BENCH_DIR/chain30/$LASTB")
	if "$ODXCTL" info "$BENCH_DIR/chain30/$LASTB" | grep -q '^chain:'; then
		ext_all=$($PY -c 'import json,sys; print(sum(m["view_extents"] for m in json.load(open(sys.argv[1]))["members"]))' "$BENCH_DIR/frames.json")
		ext_model_last=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["members"][-1]["view_extents"])' "$BENCH_DIR/frames.json")
		ext_how="mkchain's count of each merged map; last view: odxctl info $ext_last, mkchain $ext_model_last"
	else
		for f in "$BENCH_DIR"/chain30/*.data; do
			ext_all=$((ext_all + $(view_extents "$f")))
		done
		ext_how="odxctl info of each member: standalone maps"
	fi
	ext_flat=$(view_extents "$BENCH_DIR/flat/flat.full.data")
fi

# ---- tables ------------------------------------------------------------------------

# whether the mount shows chains: the allocated size of the last view
chain_state() {
	mount_odxfs "$BENCH_DIR/none"
	local a s
	a=$(alloc_mib "$mnt/$LASTA")
	s=$(stat -c %s "$mnt/$LASTA")
	umount_odxfs
	echo "$LASTA in the mount: $((s >> 20)) MiB, $a MiB allocated (final image: $((final_data >> 20)) MiB of data) -> $([ "$a" -ge $((final_data >> 20)) ] && echo "chain view" || echo "standalone")"
}
printf '\n# bench-chain: %s, build %s (work tree at %s), medians of %s runs, %s\n' "$(uname -r)" "$build" \
	"$(git -C "$top" log -1 --format=%h 2>/dev/null || echo '?')" "$RUNS" "$(date -u +%FT%TZ)"
echo "# $(chain_state)"

if [ ${#restore_rows[@]} -gt 0 ]; then
	printf '\n## Restore of the disk at virtnbdbackup.10 (4 GiB disk, %d MiB of data, %s extents in the view; cold cache, fsync included)\n\n' \
		$((final_data >> 20)) "$(view_extents "$BENCH_DIR/none/$LASTA")"
	printf '| restore | s | MiB/s (data) | time vs native | speed vs native | identical to final.raw |\n|---|---:|---:|---:|---:|---|\n'
	for r in "${restore_rows[@]}"; do
		IFS='|' read -r k label <<<"$r"
		t=${rt[$k]}
		printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$t" \
			"$(calc "f'{$final_data / 1048576 / $t:.0f}'")" "$(calc "f'{$t / ${rt[native]}:.2f}x'")" \
			"$(calc "f'{${rt[native]} / $t:.2f}'")" "${rid[$k]}"
	done
fi

if [ ${#iops_rows[@]} -gt 0 ]; then
	printf '\n## Random 4 KiB reads (fio psync, O_DIRECT, 1 job, %s s, backing files warm)\n\n' "$FIO_RUNTIME"
	printf '| file | reads/s | vs the full alone (4 GiB chain) / the single stream (chain30) |\n|---|---:|---:|\n'
	for r in "${iops_rows[@]}"; do
		IFS='|' read -r k ref _ _ label <<<"$r"
		printf '| %s | %.0f | %s |\n' "$label" "${iops[$k]}" "$(calc "f'{${iops[$k]} / ${iops[$ref]}:.2f}'")"
	done
fi

if [[ " $SECTIONS " == *" 4 "* ]]; then
	printf '\n## chain30: first byte and memory\n\n| what | value |\n|---|---:|\n'
	printf '| odxfs start until mounted (cold) | %s s |\n' "$(median "${fb_mount[@]}")"
	printf '| odxfs start until first byte of the last view read (cold) | %s s |\n' "$(median "${fb_total[@]}")"
	printf '| first byte of the last view after mounting, member files in the page cache | %s s |\n' "$(median "${fb_warm[@]}")"
	printf '| daemon VmRSS after mount | %.1f MiB |\n' "$(calc "$rss0 / 1024")"
	printf '| daemon VmRSS after one byte of each of the %d views (index_cache_size=%s) | %.1f MiB (peak %.1f MiB) |\n' \
		"$n_views" "$MEM_CACHE" "$(calc "$rss1 / 1024")" "$(calc "$hwm1 / 1024")"
	kept=$(awk '/^indexed streams kept/ { print $NF }' <<<"$stats")
	imem=$(awk '/^index memory/ { print $NF }' <<<"$stats")
	printf '| indexes kept / index memory (odxctl stats) | %s / %s MiB |\n' "${kept:-?}" "$(calc "f'{${imem:-0} / 1048576:.1f}'")"
	printf '| extents in all %d views (%s) | %d |\n' "$n_views" "$ext_how" "$ext_all"
	printf '| extents of the last view / of the flat single stream (odxctl info) | %s / %s |\n' "$ext_last" "$ext_flat"
	if [ "$ext_all" -gt 0 ]; then
		printf '| RSS growth per extent, all views | %.1f bytes |\n' "$(calc "($rss1 - $rss0) * 1024 / $ext_all")"
		printf '| index memory per extent, all views (odxctl stats) | %.1f bytes |\n' "$(calc "${imem:-0} / $ext_all")"
		printf '| index memory per extent of the last view alone | %.1f bytes |\n' "$(calc "${imem:-0} / $ext_last")"
	fi
	printf '\nodxctl stats after reading the views:\n%s\n' "$stats"
fi
echo
echo "time vs native: restore time over the native copy's (1.00x = as fast).  speed vs native:"
echo "the inverse.  MiB/s: data bytes of the final image per second.  IOPS ratios: against"
echo "the full alone of the same chain, or for chain30 against the single stream."
