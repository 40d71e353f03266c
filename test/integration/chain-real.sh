#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Real backup chains (issue 10, item 8): a VM with no OS and two qcow2 disks
# under libvirt; known data written to its disks while it runs; real
# virtnbdbackup backups: two chains (uncompressed, and --compress), each a
# full, an incremental, an incremental with no changes, two differentials
# after the same checkpoint (one of the other compression: chains may mix),
# an incremental after them, and an incremental after vdb grew by 32 MiB
# (also of the other compression); then a copy backup (-l copy) of its own.
# Each disk's content is captured at each backup (the truth; checked
# against a model that replays the same writes on a local raw file).
#
# Then, through odxfs:
#   - every view (default, chain=on) equals the captured disk byte for byte,
#     its SEEK_HOLE ranges are zeros in the capture, its SEEK_DATA ranges lie
#     within the data frames of its chain's members, and its st_blocks is at
#     least the capture's non-zero sectors and at most those frames;
#   - virtnbdrestore --until CHECKPOINT gives the same disk (qemu-img
#     compare), except where virtnbdrestore is known to restore something
#     else (an empty incremental, differentials sharing one checkpoint name,
#     a disk that grew): then the captured disk is the truth, the test says
#     so, and --sequence with the member's chain must agree instead;
#   - -o chain=off: every member shows its own frames alone (the reference
#     decoder test/tools/mkstream.py replays each file);
#   - members whose chain lacks a file (vda.inc.virtnbdbackup.1.data
#     removed) fail to read with EIO and the log names the checkpoint;
#     the full and the other disk's chain still read right;
#   - every view merged into a new full (odxctl merge): equal to the view,
#     decoded independently, a full's meta, restored by virtnbdrestore;
#     and the retention step (odxctl fold) on the lz4 chain.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vm-lib.sh"

vm_setup
require_cmd cmp comm truncate

HELP=$T/chain-help.py
cat >"$HELP" <<'PY'
import errno, glob, json, os, sys
sys.path.insert(0, os.environ["MKSTREAM_DIR"])
os.environ["MKSTREAM_NO_REEXEC"] = "1"
import mkstream

def stream(path):
    return mkstream.Stream(path)

def data_frames(path):
    return [(f.start, f.start + f.length) for f in stream(path).frames if f.kind == b"data"]

def union(ivals):
    out = []
    for a, b in sorted(ivals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out

def cmd_meta(path):
    m = stream(path).meta
    print("checkpointName=%s parentCheckpoint=%s dataSize=%s compressed=%s virtualSize=%s incremental=%s"
          % (json.dumps(m.get("checkpointName")), json.dumps(m.get("parentCheckpoint")), m.get("dataSize"),
             json.dumps(m.get("compressed")), m.get("virtualSize"), json.dumps(m.get("incremental"))))

def cmd_seek(view, truth, *members):
    """SEEK_DATA/SEEK_HOLE map and st_blocks of VIEW against the captured
    disk TRUTH and the data frames of the chain's MEMBERS."""
    problems = []
    fd = os.open(view, os.O_RDONLY)
    st = os.fstat(fd)
    size = st.st_size
    data = []
    off = 0
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        h = os.lseek(fd, d, os.SEEK_HOLE)
        if h <= d:
            problems.append("SEEK_HOLE(%d) = %d" % (d, h))
            break
        data.append((d, h))
        off = h
    os.close(fd)
    with open(truth, "rb") as f:
        t = f.read()
    if len(t) != size:
        problems.append("size %d, captured disk %d" % (size, len(t)))
    holes, prev = [], 0
    for a, b in data:
        if a > prev:
            holes.append((prev, a))
        prev = b
    if prev < size:
        holes.append((prev, size))
    for a, b in holes:
        seg = t[a:b]
        if seg.count(0) != len(seg):
            nz = next(i for i, c in enumerate(seg) if c)
            problems.append("hole [%d, %d) but the captured disk has data at %d" % (a, b, a + nz))
            break
    frames = union([iv for m in members for iv in data_frames(m)])
    fi = 0
    for a, b in data:
        while fi < len(frames) and frames[fi][1] <= a:
            fi += 1
        if fi >= len(frames) or not (frames[fi][0] <= a and b <= frames[fi][1]):
            problems.append("data [%d, %d) not within the members' data frames" % (a, b))
            break
    frame_bytes = sum((b - a + 511) // 512 * 512 for a, b in frames)
    nonzero = 0
    zero_block, zero_sector = bytes(65536), bytes(512)
    for b in range(0, len(t), 65536):
        blk = t[b:b + 65536]
        if blk == zero_block[:len(blk)]:
            continue
        for s in range(0, len(blk), 512):
            if blk[s:s + 512] != zero_sector[:len(blk[s:s + 512])]:
                nonzero += 512
    blocks = st.st_blocks * 512
    if blocks > frame_bytes:
        problems.append("st_blocks*512 = %d > the members' data frames (%d bytes)" % (blocks, frame_bytes))
    if blocks < nonzero:
        problems.append("st_blocks*512 = %d < the captured disk's non-zero sectors (%d bytes)" % (blocks, nonzero))
    data_bytes = sum(b - a for a, b in data)
    print("%d data extents, %d bytes; st_blocks*512 %d; non-zero sectors %d bytes; member frames %d bytes"
          % (len(data), data_bytes, blocks, nonzero, frame_bytes))
    if problems:
        print("; ".join(problems))
        sys.exit(1)

def cmd_plan(bdir, until, disk, member, ancestors):
    """What virtnbdrestore 1.9.15 --until UNTIL applies for DISK (its code:
    files by mtime, a file with dataSize 0 skipped before the --until test,
    stop after the first file whose checkpointName is UNTIL, target sized
    by the first file), compared with MEMBER's real chain ANCESTORS.
    Prints SAME, KNOWN: <why> when it restores something else for a known
    reason, or UNKNOWN: <what>."""
    files = [os.path.basename(f) for f in
             sorted(glob.glob("%s/%s*.data" % (bdir, disk)), key=os.path.getmtime)]
    meta = {f: stream(os.path.join(bdir, f)).meta for f in files}
    applied = []
    for f in files:
        if meta[f].get("dataSize") == 0:
            continue
        applied.append(f)
        if meta[f].get("checkpointName") == until:
            break
    anc = ancestors.split(",")
    want = [a for a in anc if meta[a].get("dataSize") != 0]
    why = []
    if applied != want:
        if meta[member].get("dataSize") == 0:
            why.append("%s has no data and virtnbdrestore skips such a file before its --until "
                       "test, so it goes on to later files" % member)
        same = [f for f in files if f != member and meta[f].get("checkpointName") == until]
        if same and member not in applied:
            why.append("%s shares checkpointName %s with %s (differentials carry the name of the "
                       "next checkpoint), and --until stops at the first of them"
                       % (member, until, ", ".join(same)))
        extra_diffs = [f for f in applied if f not in want and ".diff." in f]
        if extra_diffs:
            why.append("virtnbdrestore applies every file up to the checkpoint in mtime order, "
                       "differentials %s included" % ", ".join(extra_diffs))
        if not why:
            print("UNKNOWN: virtnbdrestore applies %s, the chain is %s" % (",".join(applied), ",".join(want)))
            return
    sizes = [meta[a].get("virtualSize") for a in anc]
    if max(sizes) > sizes[0]:
        why.append("the disk grew after the full (%d -> %d bytes) and virtnbdrestore creates the "
                   "target at the full's size, so data past it fails (ENOSPC)" % (sizes[0], max(sizes)))
    print("KNOWN: " + "; ".join(why) if why else "SAME")

def cmd_grew(bdir, ancestors):
    anc = ancestors.split(",")
    sizes = [stream(os.path.join(bdir, a)).meta.get("virtualSize") for a in anc]
    print(1 if max(sizes) > sizes[0] else 0)

def cmd_eio(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.pread(fd, 65536, 0)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == errno.EIO:
            return
        print("%s: %s, not EIO" % (path, errno.errorcode.get(e.errno, e.errno)))
        sys.exit(1)
    print("%s: read succeeded, expected EIO" % path)
    sys.exit(1)

def ranges(path):
    """The data ranges of PATH by SEEK_DATA/SEEK_HOLE."""
    fd = os.open(path, os.O_RDONLY)
    size, off, out = os.fstat(fd).st_size, 0, []
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h))
        off = h
    os.close(fd)
    return size, out

def cmd_sameholes(a, b):
    """A and B have the same size and the same data ranges."""
    ra, rb = ranges(a), ranges(b)
    if ra != rb:
        print("%s: size %d, %d data ranges; %s: size %d, %d data ranges; first differing: %s" % (
            a, ra[0], len(ra[1]), b, rb[0], len(rb[1]),
            next(((x, y) for x, y in zip(ra[1], rb[1]) if x != y), "(one list is longer)")))
        sys.exit(1)

def cmd_fullmeta(path, checkpoint, size):
    """PATH is a full backup at CHECKPOINT of SIZE bytes, as virtnbdbackup writes one."""
    s = stream(path)
    m = s.meta
    data = sum(f.length for f in s.frames if f.kind == b"data")
    want = {"checkpointName": checkpoint, "incremental": False, "parentCheckpoint": "",
            "virtualSize": int(size), "dataSize": data, "streamVersion": 2}
    bad = ["%s=%r (want %r)" % (k, m.get(k), v) for k, v in want.items() if m.get(k) != v]
    for k in ("date", "diskName", "diskFormat", "compressed", "compressionMethod"):
        if k not in m:
            bad.append("no %s" % k)
    if bad:
        print("%s: %s" % (path, ", ".join(bad)))
        sys.exit(1)

globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
# Debian's python3 (python3-lz4, and no version manager's shim to pay for
# at each of the hundred calls) when there is one.
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
helper() { MKSTREAM_DIR=$(dirname "$MKSTREAM") "$PY" "$HELP" "$@"; }

DOM=odxfs-chain-$$
IMG=$T/img
mkdir -p "$IMG" "$T/cap" "$T/model" "$T/vnb"
for d in vda vdb; do
	qemu-img create -q -f qcow2 "$IMG/$d.qcow2" 64M || fail "qemu-img create failed"
	truncate -s 64M "$T/model/$d.raw"
done
vm_define "$DOM" "$IMG/vda.qcow2" "$IMG/vdb.qcow2"
vm_start "$DOM"

w() { vm_write "$DOM" "$1" "$T/model/$1.raw" "$2"; }

MEMBERS=$T/members.txt # dir|disk|file|label|ancestors (comma list, the file last)|checkpointName
: >"$MEMBERS"
declare -A base        # "dir|disk" -> full and incrementals so far
last_diff_end=0

# backup DIR LEVEL LABEL [virtnbdbackup options]: capture both disks, take
# the backup, record the new file of each disk and its chain.
backup() {
	local dir=$1 level=$2 label=$3 d f
	shift 3
	mkdir -p "$dir"
	for d in vda vdb; do
		vm_capture "$DOM" "$d" "$IMG/$d.qcow2" "$T/cap/$label.$d.raw"
		cmp -s "$T/cap/$label.$d.raw" "$T/model/$d.raw" ||
			fail "$d captured at $label differs from the model of the writes (capture not consistent)"
	done
	# Differentials are named by the second they start in: never two in one.
	if [ "$level" = diff ]; then
		while [ "$(date +%s)" -le "$last_diff_end" ]; do sleep 0.1; done
	fi
	(cd "$dir" && ls -1 -- *.data 2>/dev/null || true) | sort >"$T/vnb/before"
	virtnbdbackup -n -d "$DOM" -l "$level" -o "$dir" "$@" >"$T/vnb/$label.log" 2>&1 || {
		tail -n 30 "$T/vnb/$label.log" >&2
		fail "virtnbdbackup -l $level $* ($label) failed"
	}
	[ "$level" = diff ] && last_diff_end=$(date +%s)
	(cd "$dir" && ls -1 -- *.data) | sort >"$T/vnb/after"
	for d in vda vdb; do
		f=$(comm -13 "$T/vnb/before" "$T/vnb/after" | grep "^$d\." || true)
		[ "$(printf '%s\n' "$f" | grep -c .)" = 1 ] ||
			fail "virtnbdbackup -l $level ($label) made not exactly one new $d file: '$f'"
		local anc
		case $level in
		full | copy) anc=$f; base[$dir|$d]=$f ;;
		inc) anc=${base[$dir|$d]},$f; base[$dir|$d]=$anc ;;
		diff) anc=${base[$dir|$d]},$f ;;
		esac
		local meta
		meta=$(helper meta "$dir/$f")
		echo "$dir|$d|$f|$label|$anc|$(sed -E 's/^checkpointName="([^"]*)".*/\1/' <<<"$meta")" >>"$MEMBERS"
		log "$label: $(basename "$dir")/$f $meta"
	done
}

# chain N DIR COMPRESS(0|1): writes and backups of one chain.  Patterns
# 0xN1..0xNd; the differential B and the last incremental use the other
# compression.
chain() {
	local n=$1 dir=$2 z=() other=(-z)
	[ "$3" = 1 ] && { z=(-z); other=(); }
	p() { printf '0x%x' $((n * 16 + $1)); }
	local tag
	tag=$(basename "$dir")
	w vda "write -P $(p 1) 0 1M"
	w vda "write -P $(p 2) 8389120 307200"      # 8M + 512, 300 KiB: unaligned
	w vda "write -P $(p 3) 66060288 1M"         # the last MiB
	w vdb "write -P $(p 4) 1M 2M"
	w vdb "write -P $(p 5) 32M 64k"
	backup "$dir" full "$tag-full" "${z[@]}"
	w vda "write -P $(p 6) 512k 1M"             # over data and hole
	w vdb "write -z 1114112 128k"               # zeros inside data
	backup "$dir" inc "$tag-inc1" "${z[@]}"
	backup "$dir" inc "$tag-inc2-empty" "${z[@]}"
	w vda "write -P $(p 7) 8M 4k"               # vdb unchanged: its diff is empty
	backup "$dir" diff "$tag-diffA" "${z[@]}"
	w vda "write -P $(p 8) 20M 64k"
	w vdb "write -P $(p 9) 40M 102400"
	backup "$dir" diff "$tag-diffB" "${other[@]}"
	w vda "write -P $(p 10) 0 4k"
	w vdb "discard 32M 64k"
	backup "$dir" inc "$tag-inc3" "${z[@]}"
	local size
	size=$(($(stat -c %s "$T/model/vdb.raw") + 32 * 1048576))
	"${VIRSH[@]}" blockresize "$DOM" vdb "${size}B" >/dev/null || fail "virsh blockresize vdb failed"
	truncate -s "$size" "$T/model/vdb.raw"
	w vdb "write -P $(p 11) $((size - 1048576)) 64k"
	w vda "write -P $(p 12) 10M 8k"
	backup "$dir" inc "$tag-inc4-grown" "${other[@]}"
}

t0=$SECONDS
chain 1 "$T/bk-plain" 0
chain 2 "$T/bk-lz4" 1
w vda "write -P 0x3d 30M 64k"
backup "$T/bk-copy" copy copy
vm_remove "$DOM" || fail "could not remove domain $DOM"
log "backups taken in $((SECONDS - t0)) s"

# The meta facts the chain code relies on, as the real tool wrote them.
for f in "$T"/bk-plain/vda.diff.*.data; do
	helper meta "$f" | grep -q 'checkpointName="virtnbdbackup.3" parentCheckpoint="virtnbdbackup.2"' ||
		fail "unexpected meta in $f: $(helper meta "$f")"
done
helper meta "$T/bk-copy/vda.copy.data" | grep -q 'parentCheckpoint="" .*incremental=false' ||
	fail "unexpected meta in vda.copy.data: $(helper meta "$T/bk-copy/vda.copy.data")"

# ---- chain views against the captured disks --------------------------------
t0=$SECONDS
for dir in "$T/bk-plain" "$T/bk-lz4" "$T/bk-copy"; do
	tag=$(basename "$dir")
	mnt=$T/mnt-$tag
	odxfs_mount "$dir" "$mnt"
	while IFS='|' read -r mdir d f label anc ck; do
		[ "$mdir" = "$dir" ] || continue
		view=$mnt/$f truth=$T/cap/$label.$d.raw
		if ! out=$(cmp "$view" "$truth" 2>&1); then
			problem "$tag/$f (view) differs from $d as captured at $label: $out"
			continue
		fi
		mems=()
		IFS=, read -r -a names <<<"$anc"
		for a in "${names[@]}"; do mems+=("$dir/$a"); done
		if out=$(helper seek "$view" "$truth" "${mems[@]}"); then
			log "$tag/$f = $d at $label: $out"
		else
			problem "$tag/$f: holes/extents: $out"
		fi
	done <"$MEMBERS"
	daemon_alive "$mnt"
done
log "views checked in $((SECONDS - t0)) s"

# ---- virtnbdrestore, for the same checkpoints -------------------------------
# Each run takes seconds, mostly waiting: they run side by side, then the
# outputs are compared.  --until CHECKPOINT for every checkpoint of each
# chain (both disks at once), the whole copy directory, and --sequence with
# the member's own chain (virtnbdrestore's semantics without the --until
# rule) for the members of the uncompressed chain that --until cannot
# restore.
t0=$SECONDS
RST=$T/rst
mkdir -p "$RST"
RJOBS=()
bg_restore() { # bg_restore OUTDIR virtnbdrestore-args...
	local out=$1 p n
	shift
	while :; do
		n=0
		for p in "${RJOBS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
		[ $n -lt 6 ] && break
		sleep 0.1
	done
	(
		rc=0
		virtnbdrestore -n "$@" -o "$out" -L "$out.log" >"$out.out" 2>&1 || rc=$?
		echo $rc >"$out.rc"
	) &
	RJOBS+=($!)
}
declare -A plan
while IFS='|' read -r dir d f label anc ck; do
	tag=$(basename "$dir")
	if [ "$tag" = bk-copy ]; then
		[ -d "$RST/$tag-all" ] || { mkdir "$RST/$tag-all"; bg_restore "$RST/$tag-all" -i "$dir"; }
		plan[$dir/$f]=SAME
		continue
	fi
	[ -d "$RST/$tag-$ck" ] || { mkdir "$RST/$tag-$ck"; bg_restore "$RST/$tag-$ck" -i "$dir" --until "$ck"; }
	plan[$dir/$f]=$(helper plan "$dir" "$ck" "$d" "$f" "$anc")
	if [ "$tag" = bk-plain ] && [ "${plan[$dir/$f]}" != SAME ]; then
		bg_restore "$RST/$tag-seq-$f" -i "$dir" --sequence "$anc"
	fi
done <"$MEMBERS"
for p in "${RJOBS[@]}"; do wait "$p" || true; done

while IFS='|' read -r dir d f label anc ck; do
	tag=$(basename "$dir")
	view=$T/mnt-$tag/$f
	if [ "$tag" = bk-copy ]; then
		out=$RST/$tag-all how="virtnbdrestore (everything)"
	else
		out=$RST/$tag-$ck how="virtnbdrestore --until $ck"
	fi
	[ "$(cat "$out.rc")" = 0 ] || problem "$how of $tag exited with status $(cat "$out.rc"): $(tail -n 5 "$out.out")"
	out=$out/$d.qcow2
	cmpout="no output image $out"
	if [ -f "$out" ] && cmpout=$(qemu-img compare -f qcow2 -F raw "$out" "$view" 2>&1); then
		log "$tag/$f: $how gives the same disk"
		continue
	fi
	case ${plan[$dir/$f]} in
	KNOWN:*)
		log "NOTE: $tag/$f: $how differs from $d as captured at $label (${cmpout//$'\n'/ }): ${plan[$dir/$f]#KNOWN: }; the captured disk is the truth"
		;;
	*)
		problem "$tag/$f: $how differs from the view (${cmpout//$'\n'/ }) and applies the member's own chain (${plan[$dir/$f]})"
		continue
		;;
	esac
	[ "$tag" = bk-plain ] || continue
	seq=$RST/$tag-seq-$f
	cmpout=
	if [ "$(cat "$seq.rc")" = 0 ] && [ -f "$seq/$d" ] &&
		cmpout=$(qemu-img compare -f qcow2 -F raw "$seq/$d" "$view" 2>&1); then
		log "$tag/$f: virtnbdrestore --sequence $anc gives the same disk"
	elif [ "$(helper grew "$dir" "$anc")" = 1 ]; then
		log "NOTE: $tag/$f: virtnbdrestore --sequence $anc cannot restore it either (the disk grew: target sized by the full; status $(cat "$seq.rc")); the captured disk is the truth"
	else
		problem "$tag/$f: virtnbdrestore --sequence $anc differs from the view: ${cmpout:-status $(cat "$seq.rc"): $(tail -n 3 "$seq.out")}"
	fi
done <"$MEMBERS"
log "virtnbdrestore comparisons in $((SECONDS - t0)) s"

for dir in "$T/bk-plain" "$T/bk-lz4" "$T/bk-copy"; do
	odxfs_umount "$T/mnt-$(basename "$dir")"
done

# ---- chain=off: every member standalone --------------------------------------
t0=$SECONDS
mkdir -p "$T/dec"
for dir in "$T/bk-plain" "$T/bk-lz4"; do
	tag=$(basename "$dir")
	mnt=$T/off-$tag
	odxfs_mount "$dir" "$mnt" -o chain=off
	while IFS='|' read -r mdir d f label anc ck; do
		[ "$mdir" = "$dir" ] || continue
		dec=$T/dec/$tag-$f.raw
		"$PY" "$MKSTREAM" raw-from-stream "$dir/$f" "$dec" >/dev/null || fail "reference decoder refused $tag/$f"
		cmp -s "$mnt/$f" "$dec" || problem "chain=off: $tag/$f is not its own frames alone"
		case $f in
		*.full.data) cmp -s "$mnt/$f" "$T/cap/$label.$d.raw" || problem "chain=off: $tag/$f differs from the captured disk" ;;
		esac
		rm -f "$dec"
	done <"$MEMBERS"
	odxfs_umount "$mnt"
done
log "chain=off: every member is its own frames alone (checked in $((SECONDS - t0)) s)"

# ---- synthetic fulls and retention (odxctl merge, odxctl fold) -------------
# Every view of both chains (full, incrementals, differentials, the disk
# that grew) merged into a new full stream, in the mount of a copy of the
# directory (named m-..., a prefix no chain member has, so the chains stay
# as they were): it equals the view byte for byte and hole for hole, the
# reference decoder replays it to the captured disk, its meta is a full's
# at the view's checkpoint (a differential's: its own name, it makes no
# checkpoint), and virtnbdrestore restores it alone to the captured disk.
t0=$SECONDS
MRG=$T/mrg
mkdir -p "$MRG"
RJOBS=()
for dir in "$T/bk-plain" "$T/bk-lz4"; do
	tag=$(basename "$dir")
	work=$T/m-$tag
	cp -a "$dir" "$work"
	mnt=$T/mnt-m-$tag
	odxfs_mount "$work" "$mnt"
	while IFS='|' read -r mdir d f label anc ck; do
		[ "$mdir" = "$dir" ] || continue
		m=m-$f truth=$T/cap/$label.$d.raw
		"$ODXCTL" merge -q "$mnt/$f" "$mnt/$m" || { problem "odxctl merge $tag/$f failed"; continue; }
		cmp -s "$mnt/$m" "$mnt/$f" || problem "$tag: merged $f differs from its view"
		out=$(helper sameholes "$mnt/$f" "$mnt/$m") || problem "$tag: merged $f: holes differ: $out"
		dec=$MRG/$tag-$f.raw
		"$PY" "$MKSTREAM" raw-from-stream "$work/$m" "$dec" >/dev/null ||
			problem "reference decoder refused the merged $tag/$f"
		cmp -s "$dec" "$truth" || problem "$tag: merged $f, decoded independently, differs from $d at $label"
		rm -f "$dec"
		want=$ck
		case $f in *.diff.*) want=${f%.data} ;; esac # makes no checkpoint
		out=$(helper fullmeta "$work/$m" "$want" "$(stat -c %s "$truth")") || problem "$tag: $out"
		"$ODXCTL" check -q "$work/$m" || problem "odxctl check: merged $tag/$f"
		# virtnbdrestore of the new full alone
		rd=$MRG/$tag-$f
		mkdir -p "$rd/in" "$rd/out"
		cp "$work/$m" "$rd/in/$d.full.data"
		cp "$dir"/vmconfig.*.xml "$rd/in/"
		bg_restore "$rd/out" -i "$rd/in" -d "$d"
		echo "$rd|$d|$truth|$tag/$f" >>"$MRG/restores"
	done <"$MEMBERS"
	daemon_alive "$mnt"
	odxfs_umount "$mnt"
done
for p in "${RJOBS[@]}"; do wait "$p" || true; done
while IFS='|' read -r rd d truth what; do
	if [ "$(cat "$rd/out.rc")" != 0 ]; then
		problem "virtnbdrestore of the full merged from $what failed: $(tail -n 3 "$rd/out.out")"
	elif ! out=$(qemu-img compare -f qcow2 -F raw "$rd/out/$d.qcow2" "$truth" 2>&1); then
		problem "virtnbdrestore of the full merged from $what differs from the captured disk: $out"
	fi
	rm -rf "$rd"
done <"$MRG/restores"
log "every view merged into a full, checked and restored by virtnbdrestore in $((SECONDS - t0)) s"

# Retention: fold the lz4 chain of vda and vdb up to checkpoint 2 (an empty
# incremental: the new full is the disk at 2), in a copy.  Afterwards the
# folded files are gone, every remaining checkpoint reads as captured, and
# virtnbdrestore --until gives the same disks as before the fold.
t0=$SECONDS
dir=$T/bk-lz4
work=$T/fold-lz4
cp -a "$dir" "$work"
mnt=$T/mnt-fold
odxfs_mount "$work" "$mnt"
for d in vda vdb; do
	"$ODXCTL" fold -q "$mnt/$d.inc.virtnbdbackup.2.data" || problem "odxctl fold of $d up to checkpoint 2 failed"
	for f in "$d.inc.virtnbdbackup.1.data" "$d.inc.virtnbdbackup.2.data"; do
		[ ! -e "$work/$f" ] || problem "fold: $f is still there"
	done
	[ "$(stat -c %Y "$work/$d.full.data")" = "$(stat -c %Y "$dir/$d.full.data")" ] ||
		problem "fold: the new $d.full.data does not have the old one's time"
	out=$(helper fullmeta "$work/$d.full.data" virtnbdbackup.2 "$(stat -c %s "$mnt/$d.full.data")") ||
		problem "fold: $out"
done
while IFS='|' read -r mdir d f label anc ck; do
	[ "$mdir" = "$dir" ] || continue
	case $f in
	*.full.data | *.inc.virtnbdbackup.1.data) continue ;;
	*.inc.virtnbdbackup.2.data) view=$mnt/$d.full.data ;;
	*) view=$mnt/$f ;;
	esac
	cmp -s "$view" "$T/cap/$label.$d.raw" || problem "after the fold: $(basename "$view") differs from $d at $label"
done <"$MEMBERS"
RJOBS=()
for ck in virtnbdbackup.2 virtnbdbackup.3 virtnbdbackup.4; do
	mkdir -p "$MRG/fold-$ck"
	bg_restore "$MRG/fold-$ck" -i "$work" --until "$ck"
done
for p in "${RJOBS[@]}"; do wait "$p" || true; done
for ck in virtnbdbackup.2 virtnbdbackup.3 virtnbdbackup.4; do
	[ "$(cat "$MRG/fold-$ck.rc")" = 0 ] || { problem "virtnbdrestore --until $ck after the fold failed: $(tail -n 3 "$MRG/fold-$ck.out")"; continue; }
	for d in vda vdb; do
		# the captured disk at ck; where virtnbdrestore restored something
		# else before the fold (see above), the same as before will do
		label=$(awk -F'|' -v dir="$dir" -v d="$d" -v ck="$ck" \
			'$1 == dir && $2 == d && $6 == ck && $3 ~ /\.inc\./ { print $4 }' "$MEMBERS")
		after=$MRG/fold-$ck/$d.qcow2
		if qemu-img compare -q -f qcow2 -F raw "$after" "$T/cap/$label.$d.raw" 2>/dev/null; then
			log "after the fold: virtnbdrestore --until $ck gives $d as captured"
		elif out=$(qemu-img compare -f qcow2 -F qcow2 "$after" "$RST/bk-lz4-$ck/$d.qcow2" 2>&1); then
			log "NOTE: after the fold: virtnbdrestore --until $ck gives $d as it did before (not as captured: see above)"
		else
			problem "virtnbdrestore --until $ck of $d after the fold: neither as captured nor as before: $out"
		fi
	done
done
daemon_alive "$mnt"
odxfs_umount "$mnt"
log "fold up to checkpoint 2: later checkpoints read and restore as before ($((SECONDS - t0)) s)"

# ---- a chain with a member missing --------------------------------------------
orph=$T/orphan
mkdir -p "$orph"
cp -p "$T"/bk-plain/*.data "$orph"/
rm "$orph/vda.inc.virtnbdbackup.1.data"
must_log 'virtnbdbackup\.1'
expect_log 'vda\.'
odxfs_mount "$orph" "$T/mnt-orphan"
while IFS='|' read -r dir d f label anc ck; do
	[ "$dir" = "$T/bk-plain" ] || continue
	[ -e "$orph/$f" ] || continue
	view=$T/mnt-orphan/$f
	if [ "$d" = vda ] && [[ ,$anc, == *,vda.inc.virtnbdbackup.1.data,* ]]; then
		out=$(helper eio "$view") || problem "member missing from its chain: $out"
	else
		cmp -s "$view" "$T/cap/$label.$d.raw" || problem "orphan directory: $f (chain complete) differs from $d at $label"
	fi
done <"$MEMBERS"
log "a chain without vda.inc.virtnbdbackup.1.data: its descendants fail with EIO"

no_problems
pass
