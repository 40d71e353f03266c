#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of synthetic fulls (issue 11).  Prints a table; asserts nothing.
#   bench/bench-merge.sh [BUILDDIR]     (root, /dev/fuse; RUNS=3 default)
#   BENCH_DIR=/var/tmp/odxfs-bench-chain  data, shared with bench-chain.sh
#
# Data (bench/mkchain.py restore, made once): a 4 GiB disk, a full with
# 1 GiB of data in 1000 extents (compressing about 2:1), then 10
# incrementals each rewriting a different 10 % of it plus 16 MiB of new
# data; uncompressed (none/) and LZ4 (lz4/); final.raw, the disk at the last
# checkpoint.  Side by side, medians of RUNS, fsync of the result included,
# each route twice: cold (page cache dropped before each run: the disk's
# read speed bounds every route) and warm (its input files read into the
# page cache first: what the route itself costs):
#   - native: the best copy of final.raw's data (SEEK_DATA walk +
#     copy_file_range, bench/copy-seg.c), the floor for moving that data;
#   - re-encoding: odxctl convert final.raw -> stream (none, lz4), every
#     byte read and written through user space (and compressed);
#   - odxfs merge: odxctl merge of the last view into a new full in the
#     mount (fresh mount, so indexing the chain is included), none -> none
#     and lz4 -> lz4, with the daemon's counters: bytes moved in the kernel,
#     in compressed chunks copied as they were, through its buffers; and
#     its peak memory;
#   - virtnbdrestore --until virtnbdbackup.10 into qcow2 (what users do
#     today), when installed.
# "user space" is the guest data that passed through a process's buffers:
# the merge's counter; all of the data for convert and virtnbdrestore.
# The .chksum of a merged stream reads the new file once (it is in the
# page cache then): that is in the merge's time, not in the counter.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build-bench-chain}")
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/odxfs-bench-chain}
ODXFS=$build/src/fuse/odxfs
ODXCTL=$build/src/cli/odxctl
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
[ -x "$ODXFS" ] && [ -x "$ODXCTL" ] || { echo "build first: meson setup $build --buildtype=release && ninja -C $build" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (mounts, drop_caches)" >&2; exit 2; }
for c in fusermount3 gcc cmp; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done
have_vnr=1
command -v virtnbdrestore >/dev/null || { have_vnr=0; echo "# virtnbdrestore not installed: its rows are skipped" >&2; }

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(realpath "$BENCH_DIR")
run=$BENCH_DIR/run-merge
mnt=$BENCH_DIR/mnt
rm -rf "$run"
mkdir -p "$run" "$mnt"
daemon_pid=
cleanup() {
	if grep -qs " $mnt fuse" /proc/self/mounts; then fusermount3 -uz "$mnt" 2>/dev/null || true; fi
	if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
	rm -f "$BENCH_DIR"/{none,lz4}/merged.data "$BENCH_DIR"/{none,lz4}/merged.data.chksum
	rm -rf "$run"
}
trap cleanup EXIT

gen_sum=$(sha256sum <"$top/bench/mkchain.py" | cut -c1-16)
if ! { [ -f "$BENCH_DIR/restore.json" ] && [ "$(cat "$BENCH_DIR/.gen-restore" 2>/dev/null)" = "$gen_sum" ]; }; then
	echo "# generating the chains in $BENCH_DIR (once) ..." >&2
	$PY "$top/bench/mkchain.py" restore "$BENCH_DIR" >/dev/null
	echo "$gen_sum" >"$BENCH_DIR/.gen-restore"
fi
gcc -O2 -Wall -o "$run/copy-seg" "$top/bench/copy-seg.c"
LAST=sda.inc.virtnbdbackup.10.data
final_data=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["final_data"])' "$BENCH_DIR/restore.json")

mount_odxfs() {
	"$ODXFS" -f "$1" "$mnt" 2>>"$run/odxfs.log" &
	daemon_pid=$!
	until grep -qs " $mnt fuse" /proc/self/mounts; do
		kill -0 "$daemon_pid" 2>/dev/null || { echo "mount failed" >&2; tail "$run/odxfs.log" >&2; exit 1; }
		sleep 0.01
	done
}
umount_odxfs() {
	fusermount3 -u "$mnt"
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
seconds() {
	$PY - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { $PY -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
calc() { $PY -c "print($1)"; }
stat_of() { # the counter NAME of `odxctl stats --json`
	"$ODXCTL" stats --json "$mnt" | $PY -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

declare -A t w user mem ident note
rows=()
echo "# $RUNS runs each, cold and warm" >&2

# time_route KEY INPUTS CMD: medians of RUNS cold and RUNS warm runs of the
# bash command line CMD; around each run: CLEAN, PRE (a fresh mount), POST
# (when set); INPUTS: the files to warm.  Sets t[KEY] (cold), w[KEY] (warm).
time_route() {
	local key=$1 inputs=$2 cmd=$3 mode ts
	for mode in cold warm; do
		ts=()
		for _ in $(seq "$RUNS"); do
			eval "${CLEAN:-true}"
			drop_caches
			# shellcheck disable=SC2086
			if [ $mode = warm ]; then cat $inputs >/dev/null; fi
			eval "${PRE:-true}"
			ts+=("$(seconds bash -c "$cmd")")
			eval "${POST:-true}"
		done
		if [ $mode = cold ]; then t[$key]=$(median "${ts[@]}"); else w[$key]=$(median "${ts[@]}"); fi
	done
}

# native
CLEAN="rm -f '$run/native.raw'"
time_route native "$BENCH_DIR/final.raw" "'$run/copy-seg' walk '$BENCH_DIR/final.raw' '$run/native.raw' && sync '$run/native.raw'"
user[native]=0
rm -f "$run/native.raw"
rows+=("native|native: SEEK_DATA walk + copy_file_range of final.raw")

# re-encoding
for c in none lz4; do
	CLEAN="rm -f '$run/conv.data' '$run/conv.data.chksum'"
	time_route "conv-$c" "$BENCH_DIR/final.raw" "'$ODXCTL' convert --quiet --compress $c '$BENCH_DIR/final.raw' '$run/conv.data' && sync '$run/conv.data'"
	user[conv-$c]=$final_data
	rm -f "$run/conv.data" "$run/conv.data.chksum"
	rows+=("conv-$c|re-encoding: odxctl convert final.raw -> $c stream")
done

# odxfs merge (a fresh mount each run: indexing the chain is included)
merge_post() {
	kern+=("$(stat_of bytesKernel)")
	verb+=("$(stat_of bytesVerbatim)")
	buf+=("$(stat_of bytesBuffered)")
	hwm+=("$(awk '/^VmHWM/ { print $2 }' "/proc/$daemon_pid/status")")
	if [ -z "${ident[merge-$c]:-}" ]; then
		if cmp -s "$mnt/merged.data" "$BENCH_DIR/final.raw"; then ident[merge-$c]=yes; else ident[merge-$c]=NO; fi
	fi
	umount_odxfs
}
for c in none lz4; do
	kern=() verb=() buf=() hwm=()
	CLEAN="rm -f '$BENCH_DIR/$c/merged.data' '$BENCH_DIR/$c/merged.data.chksum'"
	PRE="mount_odxfs '$BENCH_DIR/$c'" POST=merge_post
	time_route "merge-$c" "$BENCH_DIR/$c/*.data" "'$ODXCTL' merge --quiet --compress $c '$mnt/$LAST' '$mnt/merged.data' && sync '$mnt/merged.data'"
	PRE= POST=
	user[merge-$c]=$(median "${buf[@]}")
	mem[merge-$c]=$(($(median "${hwm[@]}" | cut -d. -f1) / 1024))
	note[merge-$c]="kernel $(($(median "${kern[@]}" | cut -d. -f1) >> 20)) MiB, verbatim $(($(median "${verb[@]}" | cut -d. -f1) >> 20)) MiB"
	rm -f "$BENCH_DIR/$c/merged.data" "$BENCH_DIR/$c/merged.data.chksum"
	rows+=("merge-$c|odxfs: odxctl merge of the last view, $c -> $c")
done

# virtnbdrestore
if [ $have_vnr = 1 ]; then
	for c in none lz4; do
		sock=$run/vnr.sock
		{
			echo "set -e"
			echo "virtnbdrestore -U test:///default -i '$BENCH_DIR/$c' -o '$run/vrest' --until virtnbdbackup.10 -n -f '$sock' -L '$run/vnr.log' >/dev/null 2>>'$run/vnr.err'"
			echo "while pgrep -f '^qemu-nbd .*$sock' >/dev/null; do sleep 0.01; done"
			echo "sync '$run/vrest/sda.qcow2'"
		} >"$run/vnr-$c.sh"
		CLEAN="rm -rf '$run/vrest'"
		time_route "vnr-$c" "$BENCH_DIR/$c/*.data" "bash '$run/vnr-$c.sh'"
		user[vnr-$c]=$final_data
		rm -rf "$run/vrest"
		rows+=("vnr-$c|virtnbdrestore $c --until virtnbdbackup.10 (qcow2)")
	done
fi
CLEAN=

printf '\n# bench-merge: %s, build %s (work tree at %s), medians of %s runs, %s\n' \
	"$(uname -r)" "$build" "$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')" \
	"$RUNS" "$(date -u +%FT%TZ)"
printf '# the disk at virtnbdbackup.10: 4096 MiB, %d MiB of data\n\n' $((final_data >> 20))
printf '| route | cold s | speed vs native, cold | warm s | speed vs native, warm | guest data through user space | daemon peak memory | identical | moved |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---|---|\n'
for r in "${rows[@]}"; do
	IFS='|' read -r k label <<<"$r"
	printf '| %s | %s | %s | %s | %s | %s MiB | %s | %s | %s |\n' "$label" "${t[$k]}" \
		"$(calc "round(${t[native]} / ${t[$k]}, 2)")" "${w[$k]}" \
		"$(calc "round(${w[native]} / ${w[$k]}, 2)")" "$((${user[$k]%.*} >> 20))" \
		"${mem[$k]:+${mem[$k]} MiB}" "${ident[$k]:-}" "${note[$k]:-}"
done
printf '\nspeed vs native: the native copy'"'"'s time over the route'"'"'s (1.00 = as fast).\n'
printf 'Targets (issue 11): merge none >= 0.8 of native with 0 MiB through user space;\n'
printf 'merge lz4 >= 3 times as fast as re-encoding to lz4: %s cold, %s warm.\n' \
	"$(calc "round(${t[conv-lz4]} / ${t[merge-lz4]}, 2)")" "$(calc "round(${w[conv-lz4]} / ${w[merge-lz4]}, 2)")"
