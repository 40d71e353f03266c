#!/bin/bash
# Crash safety of stream destinations (odxfs(8), STREAM DESTINATIONS):
# kill -9 at random moments while a new full is written from a chain view
# of a 256 MiB disk with 100 MiB of data (uncompressed and lz4 chains, the
# destination in the chain's own directory, in the codec of the source, none,
# lz4 or zlib).
#
#   - the odxctl merge process killed (>= 12 times): the destination is
#     absent (or the empty file odxctl created, killed before
#     ODX_IOC_STREAM_BEGIN), or NAME.partial (odxctl check calls it torn;
#     empty if killed before the first frame), or, killed after the daemon
#     took its ODX_IOC_STREAM_FINISH, the complete stream (byte-identical
#     to the view, its .chksum right); the sources are unchanged (sha256);
#     a later member's view still reads its disk (the .partial is never a
#     chain member); the daemon lives on;
#   - the daemon killed (>= 12 times) during odxctl merge or during an
#     implicit copy (xfs_io copy_range into a new .data file): the mount
#     lazily unmounted, the backing directory holds for the destination
#     only the complete stream (its .chksum right if there) or its
#     .partial (torn, or complete if the daemon died between its last
#     write and the rename: then it is the view), the sources are
#     unchanged (sha256), and a new mount serves the views right.
# Delays are drawn between 0 and the measured duration of that kind of
# copy; MERGE_KILL_SEED=N repeats a run.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 xfs_io cmp fusermount3
[ -n "$ODXCTL" ] || skip "odxctl not built"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -c 'import lz4.frame' 2>/dev/null || skip "python3-lz4 missing"
export MKSTREAM_DIR
MKSTREAM_DIR=$(cd "$(dirname "$MKSTREAM")" && pwd)

seed=${MERGE_KILL_SEED:-$(( $$ * 7919 % 32768 ))}
RANDOM=$seed
log "seed $seed (MERGE_KILL_SEED=$seed repeats this run)"

B=$T/back
M=$T/mnt
mkdir -p "$B/none" "$B/lz4"
make_image d0 --size 256M --extents 160 --data-ratio 0.4 --seed merge-kill
$PY - "$T" "$MKSTREAM" <<'PY' || fail "generating the chains"
import json, random, shutil, subprocess, sys
T, MK = sys.argv[1:]
rnd = random.Random(5)
M = 1 << 20

def change(src, dst, k):
    shutil.copy(src, dst)
    out = []
    with open(dst, "r+b") as f:
        for _ in range(k):
            n = rnd.choice([4096, 65536, 1 * M, 4 * M])
            off = rnd.randrange(0, 256 * M - n) // 4096 * 4096
            f.seek(off)
            f.write(rnd.randbytes(n))
            out.append([off, n])
    out.sort()
    merged = []
    for o, n in out:
        if merged and o <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], o + n - merged[-1][0])
        else:
            merged.append([o, n])
    json.dump(merged, open(dst + ".changed.json", "w"))

change(T + "/d0.raw", T + "/d1.raw", 40)
change(T + "/d1.raw", T + "/d2.raw", 40)
for c in ("none", "lz4"):
    B = "%s/back/%s/" % (T, c)
    def mk(*a):
        subprocess.run([sys.executable, MK, "stream", "--compress", c] + list(a), check=True,
                       stdout=subprocess.DEVNULL)
    mk("--layout", T + "/d0.raw.layout.json", "--checkpoint", "virtnbdbackup.0",
       T + "/d0.raw", B + "sda.full.data")
    for n in (1, 2):
        mk("--incremental", "--changed", "%s/d%d.raw.changed.json" % (T, n), "--checkpoint",
           "virtnbdbackup.%d" % n, "--parent", "virtnbdbackup.%d" % (n - 1),
           "%s/d%d.raw" % (T, n), B + "sda.inc.virtnbdbackup.%d.data" % n)
PY

cat >"$T/kh.py" <<'PY'
import hashlib, os, sys, zlib
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(8 << 20), b""):
            h.update(b)
    return h.hexdigest()
cmd = sys.argv[1]
if cmd == "sha":            # sha FILE...: "sha256  FILE" lines
    for p in sys.argv[2:]:
        print(sha(p), p)
elif cmd == "is":           # is FILE SHA256: exit 0 when FILE (read whole) has it
    try:
        got = sha(sys.argv[2])
    except OSError as e:
        print("%s: %s" % (sys.argv[2], e), file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if got == sys.argv[3] else 1)
elif cmd == "chksum":       # chksum FILE: FILE.chksum is the file's Adler-32
    want = str(zlib.adler32(open(sys.argv[2], "rb").read()))
    have = open(sys.argv[2] + ".chksum").read().strip()
    sys.exit(0 if want == have else 1)
PY
kh() { $PY "$T/kh.py" "$@"; }

sources=$(ls "$B"/*/*.data "$B"/*/*.chksum)
kh sha $sources >"$T/sources.sha"
d1sha=$(kh sha "$T/d1.raw" | cut -d' ' -f1)
d2sha=$(kh sha "$T/d2.raw" | cut -d' ' -f1)
sources_same() { # WHAT: every source file as it was (sha256)
	kh sha $sources | cmp -s - "$T/sources.sha" || problem "$1: a source file changed (sha256)"
}
views_right() { # MNT WHAT: the views of inc2 (and inc1) read their disks
	local c
	for c in none lz4; do
		kh is "$1/$c/sda.inc.virtnbdbackup.2.data" "$d2sha" ||
			problem "$2: the view of $c/sda.inc.virtnbdbackup.2.data is not its disk"
	done
	kh is "$1/lz4/sda.inc.virtnbdbackup.1.data" "$d1sha" ||
		problem "$2: the view of lz4/sda.inc.virtnbdbackup.1.data is not its disk"
}

# ---- copies, and how long each kind takes ---------------------------------------
# kind: SOURCE-CHAIN:HOW, HOW = a --compress of odxctl merge, or xfs (an
# implicit copy by xfs_io copy_range, in the source's codec)
copy_cmd() { # copy_cmd KIND MNT DSTNAME: the copy's command line in CMD
	local c=${1%%:*} how=${1#*:}
	local src=$2/$c/sda.inc.virtnbdbackup.1.data dst=$2/$c/$3
	if [ "$how" = xfs ]; then
		CMD=(xfs_io -f -c "copy_range -s 0 -d 0 -l 268435456 $src" "$dst")
	else
		CMD=("$ODXCTL" merge -q --compress "$how" "$src" "$dst")
	fi
}
# (in the background as "${CMD[@]}" &, so that $! is the copying process
# itself, not a subshell)
run_copy() { copy_cmd "$@"; "${CMD[@]}"; }
declare -A dur
kinds="none:source lz4:source none:lz4 lz4:none none:zlib lz4:zlib none:xfs lz4:xfs"
odxfs_mount "$B" "$M"
mainlog=${_logs[${#_logs[@]} - 1]}
views_right "$M" "before any copy"
for k in $kinds; do
	c=${k%%:*}
	# (a name of its own: the mount may know a removed name for a second)
	name=sda.measure-${k/:/-}.data
	t0=$(date +%s%N)
	run_copy "$k" "$M" $name >"$T/copy.txt" 2>&1 || fail "$k: the copy failed: $(cat "$T/copy.txt")"
	dur[$k]=$((($(date +%s%N) - t0) / 1000000))
	[ -s "$B/$c/$name" ] && [ ! -e "$B/$c/$name.partial" ] || fail "$k: no stream written: $(ls "$B/$c")"
	"$ODXCTL" check "$B/$c/$name" >/dev/null || fail "$k: odxctl check of the new stream"
	kh chksum "$B/$c/$name" || fail "$k: .chksum"
	cmp "$M/$c/$name" "$T/d1.raw" || fail "$k: the new stream is not the view"
	rm -f "$B/$c/$name" "$B/$c/$name.chksum"
	log "$k: ${dur[$k]} ms"
done
sources_same "after the measured copies"

# ---- the states a destination may be left in --------------------------------------
# dst_state DIR NAME: absent, empty (created, killed before the stream
# began), partial, complete (the stream under its name, no .partial) or
# mixed (anything else); prints the state
dst_state() {
	local d=$1 n=$2
	if [ -e "$d/$n.partial" ]; then
		[ -e "$d/$n" ] && { echo mixed; return; }
		echo partial
	elif [ -e "$d/$n" ]; then
		if [ -s "$d/$n" ]; then echo complete; else echo empty; fi
	else
		echo absent
	fi
}
# What odxctl check says of a stream cut short (the TORN problems of
# odxfs-stream(5): a truncated payload, header or meta, a missing stop
# frame), as opposed to damage
TORN_RE='torn|cut short|cut off|truncated|missing stop frame|the file ends'
# check_left KIND DIR NAME MNT WHAT ORIGIN: what a kill left for the
# destination; the state in $left
declare -A seen
left=
check_left() {
	local k=$1 d=$2 n=$3 mnt=$4 what=$5 origin=$6 st rc
	st=$(dst_state "$d" "$n")
	left=$st
	seen[$origin-$st]=$((${seen[$origin-$st]:-0} + 1))
	case $st in
	absent | empty) ;;
	partial)
		rc=0
		"$ODXCTL" check "$d/$n.partial" >"$T/check.txt" 2>&1 || rc=$?
		if [ $rc = 0 ]; then
			# written whole and fsynced, the daemon killed before its
			# rename: a complete stream; then it must be the view
			[ "$origin" = daemon ] || problem "$what: $n.partial checks clean after odxctl was killed"
			log "$what: $n.partial is complete (killed before the rename)"
			$PY "$MKSTREAM" raw-from-stream "$d/$n.partial" "$T/decoded.raw" >/dev/null &&
				cmp -s "$T/decoded.raw" "$T/d1.raw" ||
				problem "$what: $n.partial checks clean but is not the view"
			rm -f "$T/decoded.raw"
		elif [ ! -s "$d/$n.partial" ]; then
			# killed between the rename at the start and the meta
			seen[$origin-empty-partial]=$((${seen[$origin-empty-partial]:-0} + 1))
			grep -q 'empty file' "$T/check.txt" || problem "$what: odxctl check of an empty $n.partial: $(cat "$T/check.txt")"
		elif ! grep -Eqi "$TORN_RE" "$T/check.txt"; then
			problem "$what: odxctl check does not call $n.partial torn: $(head -3 "$T/check.txt")"
		fi
		;;
	complete)
		"$ODXCTL" check "$d/$n" >"$T/check.txt" 2>&1 || problem "$what: odxctl check $n: $(cat "$T/check.txt")"
		if [ -e "$d/$n.chksum" ]; then
			kh chksum "$d/$n" || problem "$what: $n.chksum is not the file's Adler-32"
		elif [ "$origin" = odxctl ]; then
			problem "$what: $n complete without $n.chksum"
		fi
		if [ -n "$mnt" ]; then
			kh is "$mnt/${d##*/}/$n" "$d1sha" || problem "$what: the complete $n is not the view"
		fi
		;;
	*) problem "$what: $n and $n.partial both exist: $(ls -l "$d")" ;;
	esac
}
cleanup_dst() { rm -f "$1/$2" "$1/$2.chksum" "$1/$2.partial" "$1/$2.chksum.partial"; }
rand_kind() { # a random kind; odxctl only when $1 = merge
	local ks=($kinds) k
	while :; do
		k=${ks[RANDOM % ${#ks[@]}]}
		[ "${1:-}" = merge ] && [ "${k#*:}" = xfs ] && continue
		echo "$k"
		return
	done
}
rand_delay() { # a delay in seconds between 0 and the kind's duration
	local ms=$(( ${dur[$1]} * RANDOM / 32768 ))
	printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# ---- kill odxctl ---------------------------------------------------------------
expect_log 'left unfinished \(a torn stream, never a chain member\)'
NK=${MERGE_KILL_N:-12}
for i in $(seq 1 "$NK"); do
	k=$(rand_kind merge)
	c=${k%%:*}
	n=sda.kill$i.data
	delay=$(rand_delay "$k")
	copy_cmd "$k" "$M" $n
	"${CMD[@]}" >"$T/copy.txt" 2>&1 &
	pid=$!
	sleep "$delay"
	kill -9 $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
	# The daemon goes on with a request in flight (the offload write of
	# the whole rest, or the finish) and releases the handle after: wait
	# until the destination settles.
	deadline=$((SECONDS + 60))
	t0=$(date +%s%N)
	prev= stable=0
	while :; do
		st=$(dst_state "$B/$c" $n)
		case $st in
		partial) grep -q "$n.partial: left unfinished" "$mainlog" && break ;;
		complete) [ -e "$B/$c/$n.chksum" ] && break ;;
		esac
		if [ "$st" = "$prev" ]; then stable=$((stable + 1)); else stable=0; fi
		[ "$st" != partial ] && [ $stable -ge 10 ] && break
		prev=$st
		[ $SECONDS -lt $deadline ] || { problem "odxctl kill $i: the destination did not settle ($st)"; break; }
		sleep 0.05
	done
	settled=$((($(date +%s%N) - t0) / 1000000))
	check_left "$k" "$B/$c" $n "$M" "odxctl kill $i ($k after ${delay}s)" odxctl
	log "odxctl kill $i: $k after ${delay}s: $left (settled $settled ms after odxctl exited)"
	sources_same "odxctl kill $i"
	views_right "$M" "odxctl kill $i"
	daemon_alive "$M"
	cleanup_dst "$B/$c" $n
done
odxfs_umount "$M"
sources_same "after the odxctl kills"

# ---- kill the daemon -----------------------------------------------------------
ND=${MERGE_KILL_N:-12}
for i in $(seq 1 "$ND"); do
	odxfs_mount "$B" "$M"
	idx=$((${#_mounts[@]} - 1))
	dpid=${_pids[$idx]}
	k=$(rand_kind)
	c=${k%%:*}
	n=sda.dkill$i.data
	delay=$(rand_delay "$k")
	copy_cmd "$k" "$M" $n
	"${CMD[@]}" >"$T/copy.txt" 2>&1 &
	pid=$!
	sleep "$delay"
	kill -9 "$dpid"
	wait "$dpid" 2>/dev/null || true
	wait $pid 2>/dev/null || true
	fusermount3 -u -z "$M" || problem "daemon kill $i: fusermount3 -u -z failed"
	_check_log "${_logs[$idx]}"
	_mounts[$idx]=""
	what="daemon kill $i ($k after ${delay}s)"
	# nothing else of the destination's in the directory
	extra=$(ls "$B/$c" | grep -v -e '^sda\.full\.data' -e '^sda\.inc\.virtnbdbackup\.[12]\.data' \
		-e "^$n\$" -e "^$n\\.partial\$" -e "^$n\\.chksum\$" -e "^$n\\.chksum\\.partial\$" || true)
	[ -z "$extra" ] || problem "$what: unexpected files: $extra"
	odxfs_mount "$B" "$M"
	check_left "$k" "$B/$c" $n "$M" "$what" daemon
	log "daemon kill $i: $k after ${delay}s: $left"
	sources_same "$what"
	views_right "$M" "$what"
	cleanup_dst "$B/$c" $n
	odxfs_umount "$M"
done

summary=""
for s in "${!seen[@]}"; do summary+=" $s=${seen[$s]}"; done
log "outcomes:$summary"
# the kills must have hit copies at work, not only before or after them
[ $((${seen[odxctl-partial]:-0} + ${seen[daemon-partial]:-0})) -ge 1 ] ||
	problem "no kill left a .partial: the delays never fell inside a copy"
no_problems
pass
