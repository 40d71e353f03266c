#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of the odxfs mount (issues 3 and 12).  Prints tables; asserts nothing.
#   bench/bench-mount.sh [BUILDDIR]        (root, /dev/fuse; RUNS=3 default)
#
# The disk: 4 GiB holding 1 GiB of data in 1,000 data extents (2,000
# regions), mkstream.py --pattern mixed (each 4 KiB block half random, half
# text-like: lz4 and zlib keep about 0.55 of it), as a sparse raw file and
# as uncompressed (none), lz4 and zlib streams (odxctl convert).
# 1. Sequential read (dd bs=1M) of the disk: the backing raw file read
#    directly, libfuse's passthrough_ll example (compiled here from
#    /usr/share/doc/libfuse3-dev/examples) reading the raw file, and odxfs
#    reading the raw file and the three streams.  Every FUSE figure is the
#    first read after a fresh mount (so the kernel page cache of the mount
#    is cold) with the backing files warm in the page cache; one extra row
#    shows a second read through odxfs, which the kernel serves from the
#    pages it kept (streams are immutable).
# 2. Random 4 KiB reads (fio psync, one job, queue depth 1, every read
#    reaching the daemon: O_DIRECT on odxfs, -o cache=never on
#    passthrough_ll): the disk's three streams through odxfs against
#    passthrough_ll reading the raw disk (the same bytes and holes; 3/4 of
#    the reads land in holes); the disk's data extents back to back (1 GiB,
#    no holes, the same frames: every read decodes or copies data) likewise;
#    uncompressed streams of 1,000 and 1,000,000 extents; and the data-only
#    lz4 stream with -o cache_size=2G after one sequential read (the cache
#    then holds every decoded chunk: what instant recovery of a compressed
#    backup can ask for).  Measured in rounds, each row once a round.
# 3. Time to first byte after mounting the 1,000,000-extent stream (the
#    lookup indexes it), and the daemon's memory.
# Medians of RUNS runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build}")
RUNS=${RUNS:-3}
ODXFS=$build/src/fuse/odxfs
ODXCTL=$build/src/cli/odxctl
MK="python3 $top/test/tools/mkstream.py"
[ -x "$ODXFS" ] || { echo "build first: ninja -C $build" >&2; exit 2; }
[ "$(id -u)" = 0 ] || echo "# not root: read-ahead cannot be raised, figures will be lower" >&2
for c in fio dd fusermount3 gcc pkg-config; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/odxbench-mount.XXXXXX")
mounts=()
cleanup() {
	for m in "${mounts[@]:-}"; do
		[ -n "$m" ] && fusermount3 -uz "$m" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# private copies of the binaries: a rebuild during the run changes nothing
mkdir bin
for b in ODXFS ODXCTL; do
	[ ! -x "${!b}" ] || { cp "${!b}" bin/ && printf -v $b %s "$work/bin/${!b##*/}"; }
done
mkdir back mnt

# ---- helpers ----------------------------------------------------------

# mount_odxfs [odxfs options]: mount back/ on mnt/, set $daemon_pid
mount_odxfs() {
	"$ODXFS" -f "$@" "$work/back" "$work/mnt" 2>>"$work/odxfs.log" &
	daemon_pid=$!
	mounts+=("$work/mnt")
	wait_mounted "$work/mnt"
}
wait_mounted() {
	local deadline=$((SECONDS + 60))
	until grep -qs " $1 fuse" /proc/self/mounts; do
		[ $SECONDS -lt $deadline ] || { echo "mount of $1 failed" >&2; cat "$work/odxfs.log" >&2; exit 1; }
		sleep 0.02
	done
}
umount_wait() {
	fusermount3 -u "$1"
	wait "$daemon_pid" 2>/dev/null || true
}
# bdi of a mount point (major:minor from mountinfo)
bdi_of() {
	awk -v mp="$1" '$5 == mp { d = $3 } END { print d }' /proc/self/mountinfo
}
# seconds CMD...: wall time of one run
seconds() {
	python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
mbs() { python3 -c "print(f'{$1 / 1e6 / $2:.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

# ---- data ---------------------------------------------------------------

echo "# generating data in $work (4 GiB disk with 1 GiB of data; streams of 1,000 and 1,000,000 extents)" >&2
# Data that compresses about 2:1, like real VM disks.
$MK image --size 4G --extents 2000 --data-ratio 0.25 --sparse --seed bench --pattern mixed disk.raw >/dev/null
if [ -x "$ODXCTL" ]; then
	for c in none lz4 zlib; do
		"$ODXCTL" convert --quiet --compress $c disk.raw back/disk-$c.data
	done
else
	for c in none lz4 zlib; do
		$MK stream --no-chksum --compress $c --layout disk.raw.layout.json disk.raw back/disk-$c.data >/dev/null
	done
fi
cp --sparse=always disk.raw back/disk.raw
# The disk's data extents back to back: 1 GiB without holes, one frame per
# extent as in the disk's streams (lz4 at odxctl convert's level 1, zlib 6).
python3 - disk.raw.layout.json disk.raw back/dense.raw <<'PY'
import json, sys
layout, pos = [], 0
with open(sys.argv[2], "rb") as src, open(sys.argv[3], "wb") as dst:
    for r in json.load(open(sys.argv[1])):
        if r["kind"] == "data":
            src.seek(r["offset"])
            dst.write(src.read(r["length"]))
            layout.append({"offset": pos, "length": r["length"], "kind": "data"})
            pos += r["length"]
json.dump(layout, open("dense.layout.json", "w"))
PY
for c in none lz4 zlib; do
	lvl=()
	[ $c != lz4 ] || lvl=(--level 1)
	$MK stream --no-chksum --compress $c "${lvl[@]}" \
		--layout dense.layout.json back/dense.raw back/dense-$c.data >/dev/null
done
$MK image --size 1G --extents 1000 --sparse --seed k1 k1.raw >/dev/null
$MK stream --no-chksum --layout k1.raw.layout.json k1.raw back/ext-1k.data >/dev/null
$MK image --size 1G --extents 1000000 --unaligned --sparse --seed m1 m1.raw >/dev/null
$MK stream --no-chksum --layout m1.raw.layout.json m1.raw back/ext-1m.data >/dev/null
rm -f k1.raw m1.raw
size=$(stat -c %s disk.raw)
cat back/* >/dev/null # warm the backing files

# passthrough_ll, built here (not part of odxfs)
mkdir ptll
cp /usr/share/doc/libfuse3-dev/examples/passthrough_ll.c /usr/share/doc/libfuse3-dev/examples/passthrough_helpers.h ptll/
gcc -O2 -o ptll/passthrough_ll ptll/passthrough_ll.c $(pkg-config fuse3 --cflags --libs)

# ---- 1. sequential read ---------------------------------------------------

declare -A seq
run_seq() { # label file-in-mount mount-command...
	local label=$1 file=$2
	shift 2
	local ts=()
	for _ in $(seq "$RUNS"); do
		"$@"
		ts+=("$(seconds dd if="$file" of=/dev/null bs=1M)")
		umount_wait "$work/mnt"
	done
	seq[$label]=$(median "${ts[@]}")
}
mount_ptll() { # [read-ahead KiB or "" [passthrough_ll -o option]]
	"$work/ptll/passthrough_ll" -f -o source="$work/back" ${2:+-o "$2"} "$work/mnt" 2>>"$work/ptll.log" &
	daemon_pid=$!
	mounts+=("$work/mnt")
	wait_mounted "$work/mnt"
	if [ -n "${1:-}" ]; then
		echo "$1" >"/sys/class/bdi/$(bdi_of "$work/mnt")/read_ahead_kb" 2>/dev/null || true
	fi
}
echo "# sequential reads" >&2
ts=()
for _ in $(seq "$RUNS"); do ts+=("$(seconds dd if=back/disk.raw of=/dev/null bs=1M)"); done
seq[direct]=$(median "${ts[@]}")
run_seq ptll "$work/mnt/disk.raw" mount_ptll
run_seq ptll-ra "$work/mnt/disk.raw" mount_ptll 1024
run_seq raw "$work/mnt/disk.raw" mount_odxfs
for c in none lz4 zlib; do
	run_seq $c "$work/mnt/disk-$c.data" mount_odxfs
done
# second read through one mount: the kernel's cached pages
mount_odxfs
dd if="$work/mnt/disk-none.data" of=/dev/null bs=1M status=none
ts=()
for _ in $(seq "$RUNS"); do ts+=("$(seconds dd if="$work/mnt/disk-none.data" of=/dev/null bs=1M)"); done
seq[none-cached]=$(median "${ts[@]}")
umount_wait "$work/mnt"

printf '\n## Sequential read, 4 GiB disk with 1 GiB of data (dd bs=1M, median of %s)\n\n' "$RUNS"
printf '| reader | what | MB/s (image bytes) | vs passthrough_ll (read-ahead 1 MiB) | vs uncompressed stream |\n|---|---|---:|---:|---:|\n'
row() {
	printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(mbs "$size" "${seq[$3]}")" \
		"$(ratio "${seq[ptll-ra]}" "${seq[$3]}")" "$(ratio "${seq[none]}" "${seq[$3]}")"
}
row "backing file, no FUSE" "raw file" direct
row "passthrough_ll (read-ahead 128 KiB)" "raw file" ptll
row "passthrough_ll (read-ahead 1 MiB)" "raw file" ptll-ra
row "odxfs" "raw file" raw
row "odxfs" "stream, uncompressed" none
row "odxfs" "stream, lz4" lz4
row "odxfs" "stream, zlib" zlib
row "odxfs, second read" "stream, uncompressed (kernel cache kept)" none-cached

# ---- 2. random 4 KiB reads -------------------------------------------------

echo "# random reads" >&2
declare -A runs iops p50
# rand_once KEY FILE-IN-MOUNT FIO-DIRECT MOUNT-COMMAND...: one fio run
# (2 s of warm-up, then 8 s measured) on a fresh mount; appends
# "reads/s,p50 latency us" to runs[KEY]
rand_once() {
	local key=$1 file=$2 direct=$3
	shift 3
	"$@"
	fio --name=rand --filename="$work/mnt/$file" --rw=randread --bs=4k --direct="$direct" \
		--ioengine=psync --numjobs=1 --iodepth=1 --ramp_time=2 --runtime=8 --time_based \
		--output-format=json >"$work/fio.json" 2>/dev/null
	runs[$key]+=" $(python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["jobs"][0]["read"]; print("%s,%s" % (r["iops"], r["clat_ns"]["percentile"]["50.000000"] / 1000))' "$work/fio.json")"
	umount_wait "$work/mnt"
}
# mount_warm FILE: odxfs with a cache as large as the file's decoded data,
# filled by one sequential read (O_DIRECT: the kernel keeps no pages)
mount_warm() {
	mount_odxfs -o cache_size=2G
	dd if="$work/mnt/$1" of=/dev/null bs=1M iflag=direct status=none
}
# passthrough_ll with cache=never sends every read to the daemon whether
# the file is opened with O_DIRECT or not, but opens the backing file with
# the flags it gets: with O_DIRECT every read of data goes to the disk
# under the backing filesystem.  Its reference row is therefore fio without
# O_DIRECT (backing file read from the page cache, as odxfs reads its
# backing files); the O_DIRECT row is shown for comparison.  The rows are
# measured in rounds (each row once per round), so that a slow spell of the
# machine does not fall on one row only.
for _ in $(seq "$RUNS"); do
	for d in disk dense; do
		rand_once ptll-$d $d.raw 0 mount_ptll "" cache=never
		rand_once ptll-direct-$d $d.raw 1 mount_ptll "" cache=never
		for c in none lz4 zlib; do
			rand_once $d-$c $d-$c.data 1 mount_odxfs
		done
	done
	for s in ext-1k ext-1m; do
		rand_once $s $s.data 1 mount_odxfs
	done
	rand_once dense-lz4-warm dense-lz4.data 1 mount_warm dense-lz4.data
done
for k in "${!runs[@]}"; do
	# shellcheck disable=SC2046,SC2086
	iops[$k]=$(median $(printf '%s\n' ${runs[$k]} | cut -d, -f1))
	# shellcheck disable=SC2046,SC2086
	p50[$k]=$(median $(printf '%s\n' ${runs[$k]} | cut -d, -f2))
done
printf '\n## Random 4 KiB reads (fio psync, iodepth 1, 1 job, 8 s after 2 s of warm-up, median of %s)\n\n' "$RUNS"
printf 'odxfs rows: O_DIRECT (every read reaches the daemon).  disk: 4 GiB, 1 GiB of data,\n'
printf '3/4 of the reads land in holes.  data only: the disk'"'"'s data extents back to back\n'
printf '(1 GiB, same bytes and frames, no holes).\n\n'
printf '| reader | file | reads/s | median latency us | vs passthrough_ll (cache=never) |\n|---|---|---:|---:|---:|\n'
rrow() {
	printf '| %s | %s | %.0f | %.0f | %s |\n' "$1" "$2" "${iops[$3]}" "${p50[$3]}" \
		"$(ratio "${iops[$3]}" "${iops[$4]}")"
}
for d in disk dense; do
	case $d in
	disk) what=disk ;;
	dense) what="data only" ;;
	esac
	rrow "passthrough_ll -o cache=never, fio buffered" "$what, raw file" ptll-$d ptll-$d
	rrow "passthrough_ll -o cache=never, fio O_DIRECT (backing O_DIRECT)" "$what, raw file" ptll-direct-$d ptll-$d
	rrow odxfs "$what, stream uncompressed" $d-none ptll-$d
	rrow odxfs "$what, stream lz4" $d-lz4 ptll-$d
	rrow odxfs "$what, stream zlib" $d-zlib ptll-$d
done
rrow "odxfs -o cache_size=2G, after one sequential read" "data only, stream lz4" dense-lz4-warm ptll-dense
printf '\n| stream (uncompressed, odxfs) | reads/s | vs 1,000 extents |\n|---|---:|---:|\n'
for s in ext-1k ext-1m; do
	printf '| %s | %.0f | %s |\n' "$s" "${iops[$s]}" "$(ratio "${iops[$s]}" "${iops[ext-1k]}")"
done

# ---- 3. first byte and memory ----------------------------------------------

echo "# first byte and memory" >&2
mnt_t=() fb_t=() rss=() hwm=()
for _ in $(seq "$RUNS"); do
	t0=$(date +%s.%N)
	mount_odxfs
	t1=$(date +%s.%N)
	fb_t+=("$(seconds head -c 1 "$work/mnt/ext-1m.data")")
	mnt_t+=("$(python3 -c "print($t1 - $t0)")")
	rss+=("$(rss_kib "$daemon_pid")")
	hwm+=("$(hwm_kib "$daemon_pid")")
	umount_wait "$work/mnt"
done
mount_odxfs
dd if="$work/mnt/disk-lz4.data" of=/dev/null bs=1M status=none
dd if="$work/mnt/disk-zlib.data" of=/dev/null bs=1M status=none
rss_cache=$(rss_kib "$daemon_pid")
umount_wait "$work/mnt"
frames=$(python3 -c 'import json,sys; print(sum(1 for r in json.load(open(sys.argv[1])) if r["length"]))' m1.raw.layout.json)
printf '\n## Time to first byte, memory (median of %s)\n\n' "$RUNS"
printf '| what | value |\n|---|---:|\n'
printf '| mount (odxfs start until mounted) | %.3f s |\n' "$(median "${mnt_t[@]}")"
printf '| first byte of the %s-frame stream after mount (lookup indexes it) | %.3f s |\n' "$frames" "$(median "${fb_t[@]}")"
printf '| daemon RSS with that stream indexed | %.1f MiB |\n' "$(python3 -c "print($(median "${rss[@]}") / 1024)")"
printf '| daemon peak RSS (VmHWM) | %.1f MiB |\n' "$(python3 -c "print($(median "${hwm[@]}") / 1024)")"
printf '| daemon RSS after reading the lz4 and zlib disks (cache_size 64M) | %.1f MiB |\n' "$(python3 -c "print($rss_cache / 1024)")"
printf '\n(stream files: none %s MB, lz4 %s MB, zlib %s MB for 1 GiB of data)\n' \
	"$(($(stat -c %s back/disk-none.data) / 1000000))" "$(($(stat -c %s back/disk-lz4.data) / 1000000))" \
	"$(($(stat -c %s back/disk-zlib.data) / 1000000))"
