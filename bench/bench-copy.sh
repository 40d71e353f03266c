#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of offloaded copies (issue 4).  Prints a table; asserts nothing.
#   bench/bench-copy.sh [BUILDDIR]          (root, /dev/fuse; RUNS=3 default)
#
# A 4 GiB disk holding 1 GiB of data (2000 extents, about 2:1
# compressible), as a sparse raw file and as uncompressed, lz4 and zlib
# streams, copied to a new raw file:
#   native cp            GNU cp of the raw file on the backing filesystem
#                        (cp 9.1 walks the data segments with read/write)
#   native best          the best native copy of the raw file: SEEK_DATA
#                        walk plus copy_file_range per segment (copy-seg.c)
#   odxfs                inside the mount, one copy_file_range loop over
#                        the whole file (copy-seg whole: what cp does with a
#                        file without holes, or xfs_io copy_range); and
#                        `odxctl copy` (the same loop over the ioctls)
#   odxfs offload=off    the same loop with the offload declined: the
#                        kernel copies through FUSE read/write
# Backing files warm in the page cache, `sync` (untimed) before each run,
# a fresh mount for each odxfs run.  Peak RSS: the daemon's VmHWM after the
# copy (it includes start-up and the lookup that indexes the stream).
# Ratios: odxfs against the best native copy of the same raw file, and the
# offloaded copy against the read/write path.  Medians of RUNS runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$top/build}")
RUNS=${RUNS:-3}
ODXFS=$build/src/fuse/odxfs
ODXCTL=$build/src/cli/odxctl
MK="python3 $top/test/tools/mkstream.py"
[ -x "$ODXFS" ] && [ -x "$ODXCTL" ] || { echo "build first: ninja -C $build" >&2; exit 2; }
for c in fusermount3 gcc python3 cp; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/odxbench-copy.XXXXXX")
daemon_pid=
cleanup() {
	mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -uz "$work/mnt" 2>/dev/null || true
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir back mnt native
gcc -O2 -Wall -o copy-seg "$top/bench/copy-seg.c"

echo "# preparing a 4 GiB disk with 1 GiB of data in $work ..." >&2
$MK image --size 4G --extents 2000 --data-ratio 0.25 --seed bench-copy \
	--pattern compressible --sparse native/disk.raw >/dev/null
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
seconds() {
	python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
alloc_mib() { echo $(( $(stat -c %b "$1") * 512 >> 20 )); }

# run_native NAME CMD...: copy native/disk.raw to native/out.raw
results=()
run_native() {
	local name=$1 t=()
	shift
	for _ in $(seq "$RUNS"); do
		rm -f native/out.raw
		sync
		t+=("$(seconds "$@")")
	done
	cmp native/out.raw native/disk.raw || { echo "$name: wrong bytes" >&2; exit 1; }
	results+=("$name|$(median "${t[@]}")|-|$(alloc_mib native/out.raw)")
	rm -f native/out.raw
}
# run_mount NAME SRC MOUNT-OPTIONS CMD...: copy mnt/SRC to mnt/out.raw
# (the command sees {SRC} and {DST} replaced), fresh mount each run.
run_mount() {
	local name=$1 src=$2 opts=$3 t=() hwm=() a=()
	shift 3
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
		t+=("$(seconds "${a[@]}")")
		hwm+=("$(hwm_kib "$daemon_pid")")
		umount_odxfs
	done
	cmp back/out.raw native/disk.raw || { echo "$name: wrong bytes" >&2; exit 1; }
	results+=("$name|$(median "${t[@]}")|$(( $(median "${hwm[@]}" | cut -d. -f1) / 1024 ))|$(alloc_mib back/out.raw)")
	rm -f back/out.raw
}

echo "# measuring, $RUNS runs each ..." >&2
run_native "native cp (raw, ext4)" cp native/disk.raw native/out.raw
run_native "native best: SEEK_DATA + copy_file_range" ./copy-seg walk native/disk.raw native/out.raw
run_mount "odxfs raw -> raw, copy_file_range" disk.raw "" ./copy-seg whole {SRC} {DST}
for z in none lz4 zlib; do
	run_mount "odxfs $z stream -> raw, copy_file_range" disk-$z.data "" ./copy-seg whole {SRC} {DST}
	run_mount "odxfs $z stream -> raw, odxctl copy" disk-$z.data "" "$ODXCTL" copy --quiet {SRC} {DST}
done
run_mount "odxfs none stream -> raw, cp (9.1: read/write)" disk-none.data "" cp {SRC} {DST}
for z in none lz4 zlib; do
	run_mount "odxfs $z stream -> raw, offload=off" disk-$z.data "-o offload=off" \
		./copy-seg whole {SRC} {DST}
done

best=$(echo "${results[1]}" | cut -d'|' -f2)
declare -A off
for r in "${results[@]}"; do
	IFS='|' read -r name t _ _ <<<"$r"
	case $name in *offload=off*) z=${name#odxfs }; off[${z%% *}]=$t ;; esac
done
printf '\n4 GiB disk, %d MiB of data, 2000 extents; medians of %d runs; %s\n' \
	$((data >> 20)) "$RUNS" "$(uname -r)"
printf '%-48s %8s %9s %8s %10s %9s %10s\n' copy seconds 'MiB/s' 'RSS MiB' 'alloc MiB' 'vs best' 'vs rw path'
for r in "${results[@]}"; do
	IFS='|' read -r name t rss alloc <<<"$r"
	z=${name#odxfs }
	z=${z%% *}
	vs_rw=-
	case $name in
	*offload=off* | *cp*) ;;
	odxfs*) [ -n "${off[$z]:-}" ] && vs_rw=$(python3 -c "print(f'{$t and ${off[$z]} / $t:.1f}x faster')") ;;
	esac
	printf '%-48s %8s %9s %8s %10s %9s %10s\n' "$name" "$t" \
		"$(python3 -c "print(f'{$data / 1048576 / $t:.0f}')")" "$rss" "$alloc" \
		"$(python3 -c "print(f'{$best / $t * 100:.0f}%')")" "$vs_rw"
done
echo
echo "MiB/s: data bytes (not the 4 GiB) per second.  vs best: speed as a share of the"
echo "native SEEK_DATA + copy_file_range copy of the raw file.  vs rw path: against the"
echo "same source with -o offload=off.  alloc: the destination's allocated MiB."
