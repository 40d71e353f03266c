#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of restores by copy (issues 4 and 12).  Prints a table; asserts
# nothing but the bytes of every copy (cmp).
#   bench/bench-copy.sh [BUILDDIR]    (root, /dev/fuse; RUNS=3, DATA=mixed default)
# It works in $TMPDIR (default /var/tmp), on whatever filesystem that is: on
# a shared virtual disk, writeback noise swamps the copy paths; an ext4 on a
# loop device in tmpfs (6 GiB free needed) measures them alone.
#
# A 4 GiB disk holding 1 GiB of data in 2000 extents, as a sparse raw file
# and as uncompressed (none), lz4 and zlib streams, copied to a new raw file.
# DATA=mixed (default): each 4 KiB block half random, half text-like bytes
# (mkstream.py --pattern mixed: lz4 and zlib keep about 0.55 of it);
# DATA=repeat: one random 4 KiB block repeated (--pattern compressible: the
# codecs' best case).
#   native cp            GNU cp (this machine's; Debian 12 has 9.1) of the
#                        raw file on the backing filesystem (read/write of
#                        each data segment)
#   native cfr           SEEK_DATA walk plus copy_file_range per segment
#                        (copy-seg walk): what cp 9.2 and later do
#   "vs best" is against the faster of the two: which one wins depends on
#   the backing store (copy_file_range lost to read/write on an ext4 in
#   memory here, and won on the virtual disk).
#   odxfs, for each stream (and the raw file), restored to a new raw file
#   inside the mount:
#     copy_file_range    one copy_file_range loop over the whole file
#                        (copy-seg whole: xfs_io copy_range, cp of a file
#                        without holes)
#     odxctl copy        the same loop over the offload ioctls
#     cp 9.1             plain `cp SRC DST`: cp 9.1 sees the holes (st_blocks
#                        below st_size) and copies each data segment with
#                        read/write
#     cp 9.1 blocks=full plain `cp SRC DST` with `-o blocks=full` (st_blocks
#                        at least st_size: cp 9.1 calls copy_file_range on
#                        the whole file); skipped when odxfs lacks the option
#     cp 9.2+ emulated   copy-seg walk inside the mount: SEEK_DATA plus
#                        copy_file_range per data segment, what cp 9.2 and
#                        later do with a sparse source
#     offload=off        copy_file_range with the offload declined: the
#                        kernel copies through FUSE read/write
# Every timing is the copy and then fsync of the destination (timed here for
# every row, whatever made the copy; copy-seg also fsyncs itself).  Backing
# files warm in the page cache, `sync` (untimed) before each run, a fresh
# mount for each odxfs run, whose lookup indexes the stream before timing.
# Daemon peak RSS: VmHWM after the copy (start-up and indexing included).
# Daemon CPU: its user+system time during the timed copy (/proc/PID/stat):
# the decoder's cost, per GiB since the disk holds 1 GiB of data.
# Medians of RUNS runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build}")
RUNS=${RUNS:-3}
DATA=${DATA:-mixed}
ODXFS=$build/src/fuse/odxfs
ODXCTL=$build/src/cli/odxctl
MK="python3 $top/test/tools/mkstream.py"
[ -x "$ODXFS" ] && [ -x "$ODXCTL" ] || { echo "build first: ninja -C $build" >&2; exit 2; }
for c in fusermount3 gcc python3 cp cmp; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done
case $DATA in
mixed) pattern=mixed ;;
repeat) pattern=compressible ;;
*) echo "DATA=mixed or DATA=repeat" >&2; exit 2 ;;
esac
blocks_full=
"$ODXFS" --help 2>&1 | grep -q 'blocks=' && blocks_full=1

work=$(mktemp -d "${TMPDIR:-/var/tmp}/odxbench-copy.XXXXXX")
daemon_pid=
cleanup() {
	mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -uz "$work/mnt" 2>/dev/null || true
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# private copies of the binaries: a rebuild during the run changes nothing
mkdir bin
for b in ODXFS ODXCTL; do
	[ ! -x "${!b}" ] || { cp "${!b}" bin/ && printf -v $b %s "$work/bin/${!b##*/}"; }
done
mkdir back mnt native
gcc -O2 -Wall -o copy-seg "$top/bench/copy-seg.c"

echo "# preparing a 4 GiB disk with 1 GiB of data ($DATA) in $work ..." >&2
$MK image --size 4G --extents 2000 --data-ratio 0.25 --seed bench-copy \
	--pattern $pattern --sparse native/disk.raw >/dev/null
L=native/disk.raw.layout.json
cp --sparse=always native/disk.raw back/disk.raw
for z in none lz4 zlib; do
	"$ODXCTL" convert --quiet --compress $z native/disk.raw back/disk-$z.data
done
rm -f back/*.chksum
data=$(python3 -c 'import json,sys; print(sum(r["length"] for r in json.load(open(sys.argv[1])) if r["kind"] == "data"))' $L)
cat back/* native/disk.raw >/dev/null # warm

mount_odxfs() {
	"$ODXFS" -f "$@" "$work/back" "$work/mnt" 2>>"$work/odxfs.log" &
	daemon_pid=$!
	local deadline=$((SECONDS + 60))
	until grep -qs " $work/mnt fuse" /proc/self/mounts; do
		[ $SECONDS -lt $deadline ] || { echo "mount failed" >&2; cat "$work/odxfs.log" >&2; exit 1; }
		sleep 0.02
	done
}
umount_odxfs() {
	fusermount3 -u "$work/mnt"
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=
}
# timed DST CMD...: seconds to run CMD and then fsync DST
timed() {
	python3 - "$@" <<'PY'
import os, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.close(fd)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime
alloc_mib() { echo $(( $(stat -c %b "$1") * 512 >> 20 )); }

# results: NAME|CODEC|SECONDS|RSS MiB|ALLOC MiB|DAEMON CPU s
results=()
# run_native NAME CMD...: copy native/disk.raw to native/out.raw
run_native() {
	local name=$1 t=()
	shift
	for _ in $(seq "$RUNS"); do
		rm -f native/out.raw
		sync
		t+=("$(timed native/out.raw "$@")")
	done
	cmp native/out.raw native/disk.raw || { echo "$name: wrong bytes" >&2; exit 1; }
	results+=("$name|-|$(median "${t[@]}")|-|$(alloc_mib native/out.raw)|-")
	rm -f native/out.raw
}
# run_mount NAME CODEC SRC MOUNT-OPTIONS CMD...: copy mnt/SRC to mnt/out.raw
# (the command sees {SRC} and {DST} replaced), fresh mount each run.
run_mount() {
	local name=$1 codec=$2 src=$3 opts=$4 t=() hwm=() cpu=() a=() c0
	shift 4
	for _ in $(seq "$RUNS"); do
		rm -f back/out.raw
		sync
		# shellcheck disable=SC2086
		mount_odxfs $opts
		stat "mnt/$src" >/dev/null # lookup: index the stream before timing
		a=()
		for x in "$@"; do
			x=${x//\{SRC\}/mnt/$src}
			a+=("${x//\{DST\}/mnt/out.raw}")
		done
		c0=$(cpu_ticks "$daemon_pid")
		t+=("$(timed mnt/out.raw "${a[@]}")")
		cpu+=("$(python3 -c "print(($(cpu_ticks "$daemon_pid") - $c0) / $ticks)")")
		hwm+=("$(hwm_kib "$daemon_pid")")
		umount_odxfs
	done
	cmp back/out.raw native/disk.raw || { echo "$name: wrong bytes" >&2; exit 1; }
	results+=("$name|$codec|$(median "${t[@]}")|$(( $(median "${hwm[@]}" | cut -d. -f1) / 1024 ))|$(alloc_mib back/out.raw)|$(python3 -c "print(f'{$(median "${cpu[@]}"):.2f}')")")
	rm -f back/out.raw
}

cpv=$(cp --version | awk 'NR == 1 { print $NF }')
echo "# measuring, $RUNS runs each ..." >&2
run_native "native cp $cpv (raw, backing fs)" cp native/disk.raw native/out.raw
run_native "native cfr: SEEK_DATA + copy_file_range" ./copy-seg walk native/disk.raw native/out.raw
run_mount "odxfs raw -> raw, copy_file_range" raw disk.raw "" ./copy-seg whole {SRC} {DST}
for z in none lz4 zlib; do
	s=disk-$z.data
	run_mount "odxfs $z: copy_file_range (whole file)" $z $s "" ./copy-seg whole {SRC} {DST}
	run_mount "odxfs $z: odxctl copy" $z $s "" "$ODXCTL" copy --quiet {SRC} {DST}
	run_mount "odxfs $z: cp $cpv" $z $s "" cp {SRC} {DST}
	[ -z "$blocks_full" ] ||
		run_mount "odxfs $z: cp $cpv, -o blocks=full" $z $s "-o blocks=full" cp {SRC} {DST}
	run_mount "odxfs $z: cp 9.2+ emulated (copy-seg walk)" $z $s "" ./copy-seg walk {SRC} {DST}
done
for z in none lz4 zlib; do
	run_mount "odxfs $z: offload=off (FUSE read/write)" $z disk-$z.data "-o offload=off" \
		./copy-seg whole {SRC} {DST}
done

best=$(python3 -c 'import sys; print(min(float(x) for x in sys.argv[1:]))' \
	"$(echo "${results[0]}" | cut -d'|' -f3)" "$(echo "${results[1]}" | cut -d'|' -f3)")
declare -A off
for r in "${results[@]}"; do
	IFS='|' read -r name codec t _ <<<"$r"
	case $name in *offload=off*) off[$codec]=$t ;; esac
done
mib() { echo $(( $(stat -c %s "back/$1") >> 20 )); }
printf '\n4 GiB disk, %d MiB of data (%s), 2000 extents; streams: none %s MiB, lz4 %s MiB, zlib %s MiB\n' \
	$((data >> 20)) "$DATA" "$(mib disk-none.data)" "$(mib disk-lz4.data)" "$(mib disk-zlib.data)"
printf 'medians of %d runs, each copy + fsync of the destination; %s, %s cores\n\n' \
	"$RUNS" "$(uname -r)" "$(nproc)"
fmt='%-50s %8s %7s %8s %9s %6s %8s %10s\n'
# shellcheck disable=SC2059
printf "$fmt" copy seconds 'MiB/s' 'CPU s' 'RSS MiB' alloc 'vs best' 'vs rw path'
for r in "${results[@]}"; do
	IFS='|' read -r name codec t rss alloc cpu <<<"$r"
	vs_rw=-
	case $name in
	*offload=off* | *cp*) ;;
	odxfs*) [ -n "${off[$codec]:-}" ] && vs_rw=$(python3 -c "print(f'{$t and ${off[$codec]} / $t:.1f}x faster')") ;;
	esac
	# shellcheck disable=SC2059
	printf "$fmt" "$name" "$t" \
		"$(python3 -c "print(f'{$data / 1048576 / $t:.0f}')")" "$cpu" "$rss" "$alloc" \
		"$(python3 -c "print(f'{$best / $t:.2f}')")" "$vs_rw"
done
echo
cat <<'EOF'
MiB/s: data bytes (not the 4 GiB) per second.  CPU s: the daemon's user+system
seconds during the copy, per GiB of data (decoding, and the kernel's copying done
on its behalf in its copy_file_range calls).  RSS: the daemon's peak, MiB.
alloc: the destination's allocated MiB.  vs best: speed as a share of the faster
native copy of the raw file (cp, or SEEK_DATA + copy_file_range).  vs rw path: against the same
source with -o offload=off.  cp 9.1 copies each data segment of a file with holes
by read/write, and a file without holes (-o blocks=full) by copy_file_range.
EOF
[ -n "$blocks_full" ] ||
	echo "cp with -o blocks=full: not measured, this odxfs has no blocks= option."
