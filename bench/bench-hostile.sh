#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Benchmark of hostile streams (issue 9).  Prints tables; asserts nothing.
#   bench/bench-hostile.sh [--quick] [--dir DIR] [--odxfs PATH] [--mount-opts OPTS]
#                          [--timeout SECONDS] [--keep] [BUILDDIR]
# (root, /dev/fuse; the odxfs binary defaults to BUILDDIR/src/fuse/odxfs,
# BUILDDIR to build/, as in the other bench scripts.)
#
# Each case gets its own backing directory holding the hostile file(s) and
# one small unrelated valid stream (1 MiB virtual, lz4, random bytes), and a
# fresh daemon (`odxfs BACKING MNT -f`, in the background).  Measured:
#   stat s    a stat(2) of the hostile file (its first lookup: the daemon
#             indexes it)
#   read s    a read of the whole image in 1 MiB reads, as cat does, until
#             its end or its first error (the result says which error, and
#             after how many MiB)
#   peak RSS  the daemon's VmHWM (and the highest VmRSS sampled every 50 ms,
#             should the daemon die), RSS after stat its VmRSS then
#   unrelated 4 KiB reads of the unrelated stream at random offsets, O_DIRECT
#             (so every read reaches the daemon), one every 5 ms from before
#             the stat until the read ends: median and max latency; a read
#             still waiting at the end counts with what it has waited
# Hostile files (bench/mkhostile.py builds them; --quick sizes in brackets):
#   1. zlib stream whose one data frame claims 4 GiB [1 GiB] as ONE chunk
#      (a plain-integer trailer entry), a zlib stream of zeros that really
#      inflates to that size (about 4 MB compressed);
#   2. a stream whose meta JSON is 1 MiB (about 50,000 small keys); and 20
#      such streams in one directory: `ls -l` (in the stat column; RSS after
#      the listing in "RSS after stat"), then a read of all 20;
#   3. lz4, 4 data frames, a trailer of 10^7 [10^6] entries; and lz4 with
#      10^7 [10^6] real data frames of 64 bytes (a valid stream, 1.1 GB;
#      10^6 when the disk has less than 3 GB free);
#   4. a torn zlib .partial of 12 MB: no trailer, no stop, one frame
#      claiming 375 x 32 MiB whose payload is 375 zlib streams of 32 MiB of
#      zeros (32 KiB each), cut in the middle of the last one;
#   5. directory scaling: 10,000 and 100,000 [10,000 only] small valid
#      streams (4 KiB virtual, one uncompressed data frame; 10,000 a
#      directory): `ls -lR`, then one process opens each, reads its first
#      512 bytes and closes it; peak RSS, the daemon's descriptors at the end
#      (and the most seen, sampled every 0.5 s), EMFILE anywhere (the
#      listing, the reads, the daemon's log).
# Targets (issue 9), printed beside the figures: no hostile file costs more
# than cache_size + 2 chunks (64 MiB + 2 x 32 MiB = 128 MiB, from the
# cache_size in --mount-opts) of memory or 2 s before its reads fail (stat
# plus the failing read; for a read that succeeds, stat alone); an
# unrelated stream's small read stays under 50 ms meanwhile; 100,000
# streams listed and touched with RSS under 128 MiB and no EMFILE.
# Every case has a deadline (--timeout, default 120 s, 60 s with --quick;
# twice that for a scaling case): a step still running then is reported
# ">N" and the daemon is killed, which fails its pending requests.  Every
# mount is undone on exit (fusermount3 -u, then umount -l).  Files go to a
# new directory in --dir (default $TMPDIR or /tmp), removed at the end
# unless --keep; backing files are warm in the page cache (just written),
# and each case's files are removed after it.  Full mode takes about 7
# minutes and 1.5 GB of disk at most.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
MKH=$top/bench/mkhostile.py

usage() { sed -n '3,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
quick=0 dir=${TMPDIR:-/tmp} odxfs='' mount_opts='' timeout='' keep=0 build=''
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--dir) dir=${2:?}; shift ;;
	--odxfs) odxfs=${2:?}; shift ;;
	--mount-opts) mount_opts=${2:?}; shift ;;
	--timeout) timeout=${2:?}; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage ;;
	-*) echo "unknown option: $1" >&2; usage ;;
	*) build=$1 ;;
	esac
	shift
done
build=$(realpath "${build:-$top/build}")
ODXFS=$(realpath "${odxfs:-$build/src/fuse/odxfs}")
[ -x "$ODXFS" ] || { echo "no odxfs at $ODXFS: build first (ninja -C $build) or give --odxfs" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (mounts, /proc of the daemon)" >&2; exit 2; }
[ -c /dev/fuse ] || { echo "/dev/fuse missing" >&2; exit 2; }
for c in fusermount3 umount ls df awk; do
	command -v $c >/dev/null || { echo "missing: $c" >&2; exit 2; }
done
# python3 with lz4: a pyenv/venv python3 does not see Debian's python3-lz4
PY=python3
python3 -c 'import lz4.frame' 2>/dev/null || PY=/usr/bin/python3
$PY -c 'import lz4.frame' 2>/dev/null || { echo "python3-lz4 missing (contrib/install-deps.sh)" >&2; exit 2; }
[ -n "$timeout" ] || timeout=$([ $quick = 1 ] && echo 60 || echo 120)
case $timeout in '' | *[!0-9]*) echo "--timeout takes whole seconds" >&2; exit 2 ;; esac
case $dir in *[[:space:]]*) echo "--dir must not contain white space" >&2; exit 2 ;; esac
mkdir -p "$dir"
dir=$(realpath "$dir")

# cache_size of the mount, for the memory target
cache_size=64M
if [[ ,$mount_opts, =~ ,cache_size=([^,]+), ]]; then cache_size=${BASH_REMATCH[1]}; fi

# ---- sizes, from what the disk has ------------------------------------------------
avail=$(df --output=avail -B1 "$dir" | tail -1)
ifree=$(df --output=iavail "$dir" | tail -1)
if [ $quick = 1 ]; then
	bomb=1G entries=1000000 frames=1000000 counts=(10000)
else
	bomb=4G entries=10000000 frames=10000000 counts=(10000 100000)
fi
notes=()
if [ "$frames" = 10000000 ] && [ "$avail" -lt $((3 << 30)) ]; then
	frames=1000000
	notes+=("only $((avail >> 20)) MiB free in $dir: the real-frames stream has 10^6 frames, not 10^7")
fi
[ "$avail" -ge $((1 << 30)) ] || { echo "less than 1 GiB free in $dir" >&2; exit 2; }
if [ "${counts[-1]}" = 100000 ] && [ "$ifree" -lt 150000 ]; then
	counts=(10000)
	notes+=("only $ifree inodes free in $dir: no 100,000-stream case")
fi
pow10() { case $1 in 1000000) echo '10^6' ;; 10000000) echo '10^7' ;; *) echo "$1" ;; esac; }

# ---- work directory, mounts, cleanup -------------------------------------------
work=$(mktemp -d "$dir/odxbench-hostile.XXXXXX")
mnt=$work/mnt
mkdir "$mnt" "$work/res"
daemon_pid='' mon_pid='' step_pid='' orphans=() daemon_exit=

mounted() { awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
unmount() {
	mounted || return 0
	fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null ||
		fusermount3 -uz "$mnt" 2>/dev/null || true
}
# exit_text STATUS: "0", "1", "signal 6 (ABRT)"
exit_text() {
	if [ "$1" -gt 128 ]; then echo "signal $(($1 - 128)) ($(kill -l $(($1 - 128)) 2>/dev/null || echo ?))"; else echo "$1"; fi
}
# end_daemon: wait for the daemon (after an unmount) up to 15 s, then kill
# it; $daemon_exit says how it ended
end_daemon() {
	[ -n "$daemon_pid" ] || return 0
	local deadline=$((SECONDS + 15)) rc=0
	while kill -0 "$daemon_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
	if kill -9 "$daemon_pid" 2>/dev/null; then
		daemon_exit="still running 15 s after the unmount, killed"
		wait "$daemon_pid" 2>/dev/null || true
	else
		wait "$daemon_pid" 2>/dev/null || rc=$?
		daemon_exit=$(exit_text $rc)
	fi
	daemon_pid=''
}
cleanup() {
	local rc=$?
	set +e
	if [ -n "$daemon_pid" ] && mounted; then
		kill -9 "$daemon_pid" 2>/dev/null # fails the requests of stuck steps
	fi
	for p in $mon_pid $step_pid; do
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	unmount
	end_daemon
	for p in "${orphans[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
	if mounted; then
		echo "WARNING: $mnt is still mounted; $work left in place" >&2
	elif [ $keep = 1 ]; then
		echo "# kept $work" >&2
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mount_fresh BACKING LOG: a new daemon for BACKING on $mnt, $daemon_pid
mount_fresh() {
	local opts=()
	[ -n "$mount_opts" ] && opts=(-o "$mount_opts")
	"$ODXFS" "$1" "$mnt" -f "${opts[@]}" >>"$2" 2>&1 &
	daemon_pid=$!
	local deadline=$((SECONDS + 30))
	until mounted; do
		if ! kill -0 "$daemon_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
			echo "odxfs did not mount $1:" >&2
			cat "$2" >&2
			exit 1
		fi
		sleep 0.02
	done
}
# start_monitor RESDIR [--fds]: sample the daemon, probe the unrelated stream
start_monitor() {
	local res=$1
	shift
	$PY "$MKH" monitor --pid "$daemon_pid" --out "$res/monitor.json" \
		--probe "$mnt/unrelated.data" --ready "$res/ready" "$@" &
	mon_pid=$!
	local deadline=$((SECONDS + 30))
	until [ -s "$res/ready" ] || [ $SECONDS -ge $deadline ]; do sleep 0.02; done
}
stop_monitor() {
	local res=$1 deadline=$((SECONDS + 10))
	kill -TERM "$mon_pid" 2>/dev/null || true
	until [ -s "$res/monitor.json" ] || [ $SECONDS -ge $deadline ]; do sleep 0.05; done
	# its probe thread may still sleep in a read the daemon holds: not waited for
	orphans+=("$mon_pid")
	mon_pid=
}
# step OUT.json SECONDS WHAT ARGS...: one timed step (mkhostile.py do ...).
# Returns 1 on timeout: the caller stops the monitor, then kills the daemon
# (kill_daemon), which fails the request the step is stuck in.
step() {
	local out=$1 t=$2
	shift 2
	[ "$t" -ge 1 ] || t=1
	# in the background, so that a signal to this script is handled at once
	$PY "$MKH" step --timeout "$t" --out "$out" "$@" >"$out.result" &
	step_pid=$!
	wait $step_pid || true
	step_pid=''
	local r
	r=$(cat "$out.result")
	if [ "$r" = timeout ]; then
		orphans+=("$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["child_pid"])' "$out")")
		return 1
	fi
	return 0
}
kill_daemon() {
	kill -9 "$daemon_pid" 2>/dev/null || true
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=''
	daemon_state="killed after the deadline"
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$daemon_pid/status" 2>/dev/null || true; }
# finish_case RESDIR KIND LABEL [extra JSON members]: daemon state, unmount, info.json
finish_case() {
	local res=$1 kind=$2 label=$3 extra=${4:-} rc=0
	if [ -n "$daemon_pid" ] && ! kill -0 "$daemon_pid" 2>/dev/null; then
		wait "$daemon_pid" 2>/dev/null || rc=$?
		daemon_state="died during the case, exit status $(exit_text $rc)"
		daemon_pid=''
	fi
	daemon_exit=''
	unmount
	end_daemon
	printf '{"kind": "%s", "label": "%s", "daemon": "%s", "daemon_exit": "%s", "rss_after_stat_kib": %s%s}\n' \
		"$kind" "$label" "$daemon_state" "$daemon_exit" "${rss_after:-null}" "$extra" >"$res/info.json"
}
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { if (b < 1e9) printf "%.1f MB", b / 1e6; else printf "%.2f GB", b / 1e9 }'; }

# run_hostile ID LABEL: the case in $work/ID/back; stat_cmd and read_cmd
# (mkhostile.py `do` commands) set by the caller
run_hostile() {
	local id=$1 label=$2 res=$work/res/$1 back=$work/$1/back
	mkdir -p "$res"
	echo "# case $id: $label" >&2
	mount_fresh "$back" "$res/odxfs.log"
	daemon_state=running rss_after=
	start_monitor "$res"
	local deadline=$((SECONDS + timeout)) late=0
	if step "$res/stat.json" $((deadline - SECONDS)) "${stat_cmd[@]}"; then
		rss_after=$(rss_kib)
		step "$res/read.json" $((deadline - SECONDS)) "${read_cmd[@]}" || late=1
	else
		late=1
	fi
	stop_monitor "$res"
	[ $late = 0 ] || kill_daemon
	finish_case "$res" hostile "$label"
	[ $keep = 1 ] || rm -rf "${work:?}/${id:?}"
}
# new_back ID: an empty backing directory with the unrelated stream
new_back() {
	mkdir -p "$work/$1/back"
	$PY "$MKH" small "$work/$1/back/unrelated.data" >/dev/null
	echo "$work/$1/back"
}
gen() { $PY "$MKH" "$@" >/dev/null; }

# ---- header --------------------------------------------------------------------------
changed=$(git -C "$top" status --porcelain -- src include 2>/dev/null | wc -l)
printf '# odxfs hostile-stream benchmark (issue 9)%s\n\n' "$([ $quick = 1 ] && echo ', --quick')"
printf -- '- commit %s%s\n' "$(git -C "$top" log -1 --format='%h (%s)' 2>/dev/null | cut -c1-100 || echo unknown)" \
	"$([ "$changed" -gt 0 ] && echo "; $changed uncommitted change(s) under src/ and include/ in the work tree")"
printf -- '- odxfs %s (built %s), mount options: %s\n' "$ODXFS" "$(date -r "$ODXFS" '+%F %T')" "${mount_opts:-none}"
printf -- '- %s, %s cores, %s GiB RAM, work directory %s\n' "$(uname -r)" "$(nproc)" \
	"$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)" "$work"
printf -- '- deadline per case %s s (scaling cases %s s); load average at the start %s\n' \
	"$timeout" $((2 * timeout)) "$(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${notes[@]:-}"; do [ -n "$n" ] && printf -- '- note: %s\n' "$n"; done
t_all=$SECONDS

# ---- 1. zlib chunk claiming 4 GiB ------------------------------------------------------
b=$(new_back c1-zlib-bomb)
gen zlib-bomb "$b/bomb.data" --inflate $bomb
stat_cmd=(stat "$mnt/bomb.data") read_cmd=(read "$mnt/bomb.data")
run_hostile c1-zlib-bomb "1. zlib, one chunk claiming ${bomb%G} GiB ($(mb "$b/bomb.data"))"

# ---- 2. meta JSON of 1 MiB, alone and 20 in a directory --------------------------------------
b=$(new_back c2-meta)
gen big-meta "$b/meta.data"
stat_cmd=(stat "$mnt/meta.data") read_cmd=(read "$mnt/meta.data")
run_hostile c2-meta "2. meta JSON of 1 MiB ($(mb "$b/meta.data"))"

b=$(new_back c3-meta20)
gen big-meta "$b/meta-01.data"
read_cmd=(read)
for i in $(seq -w 1 20); do
	[ "$i" = 01 ] || cp "$b/meta-01.data" "$b/meta-$i.data"
	read_cmd+=("$mnt/meta-$i.data")
done
stat_cmd=(ls -l "$mnt")
run_hostile c3-meta20 "2b. 20 x meta JSON of 1 MiB: ls -l, read all"

# ---- 3. huge trailer; many real frames ---------------------------------------------------------
b=$(new_back c4-trailer)
gen trailer "$b/trailer.data" --entries $entries
stat_cmd=(stat "$mnt/trailer.data") read_cmd=(read "$mnt/trailer.data")
run_hostile c4-trailer "3. lz4, 4 frames, trailer of $(pow10 $entries) entries ($(mb "$b/trailer.data"))"

b=$(new_back c5-frames)
gen frames "$b/frames.data" --frames $frames
stat_cmd=(stat "$mnt/frames.data") read_cmd=(read "$mnt/frames.data")
run_hostile c5-frames "3b. lz4, $(pow10 $frames) real 64-byte frames ($(mb "$b/frames.data"))"

# ---- 4. torn zlib .partial ----------------------------------------------------------------------
b=$(new_back c6-torn)
gen torn "$b/sda.full.data.partial" --chunks 375
stat_cmd=(stat "$mnt/sda.full.data.partial") read_cmd=(read "$mnt/sda.full.data.partial")
run_hostile c6-torn "4. torn zlib .partial, 375 x 32 MiB chunks ($(mb "$b/sda.full.data.partial"))"

# ---- 5. directory scaling -------------------------------------------------------------------------
for n in "${counts[@]}"; do
	id=c7-scale-$n res=$work/res/c7-scale-$(printf '%06d' "$n")
	echo "# case $id: $n streams" >&2
	b=$(new_back "$id")
	gen many "$b/streams" --count "$n" --per-dir 10000
	mkdir -p "$res"
	mount_fresh "$b" "$res/odxfs.log"
	daemon_state=running rss_after=
	fd_limit=$(awk '/^Max open files/ { print $4 }' "/proc/$daemon_pid/limits")
	start_monitor "$res" --fds
	deadline=$((SECONDS + 2 * timeout)) late=0
	if step "$res/ls.json" $((deadline - SECONDS)) ls -lR "$mnt"; then
		step "$res/touch.json" $((deadline - SECONDS)) touch "$mnt" "$b" || late=1
	else
		late=1
	fi
	stop_monitor "$res"
	[ $late = 0 ] || kill_daemon
	emfile=$(grep -ciE 'EMFILE|too many open files' "$res/odxfs.log" || true)
	finish_case "$res" scale "$n streams" ", \"streams\": $n, \"fd_limit\": \"$fd_limit\", \"log_emfile\": ${emfile:-0}"
	[ $keep = 1 ] || rm -rf "${work:?}/${id:?}"
done

# ---- tables -------------------------------------------------------------------------------------------
$PY "$MKH" report "$work/res" --cache-size "$cache_size" --workdir "$work"
printf '\n(total run time %d s; load average at the end %s)\n' $((SECONDS - t_all)) "$(cut -d' ' -f1-3 /proc/loadavg)"
