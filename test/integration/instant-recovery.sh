#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Instant recovery from a chain view (issue 10, item 7): a real backup chain
# (virtnbdbackup full + incremental of a VM with no OS), mounted read-only
# with allow_other (QEMU runs as libvirt-qemu); a qcow2 overlay OUTSIDE the
# mount whose backing file is the incremental's view:
#   - qemu-img/qemu-io read the view through the overlay, writes land in the
#     overlay only, the view itself refuses writes;
#   - a libvirt domain whose disk is the overlay starts, reads the backup's
#     data, writes and reads back its own;
#   - the disk is copied out while the VM runs (virsh blockcopy --pivot), after
#     which the backup can be unmounted under the running VM; and offline
#     (qemu-img convert of the overlay);
#   - qemu-img commit into the read-only base is refused and changes nothing;
#   - through all of it the backup files keep their bytes, size, owner, mode
#     and mtime (libvirt chowns a disk's backing files through a writable
#     mount: the read-only mount is what keeps them as they are).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vm-lib.sh"

vm_setup
require_cmd cmp sha256sum

BK=$T/bk
MNT=$T/mnt
mkdir -p "$T/img" "$BK" "$T/out"

# ---- a real chain: full, then incremental ------------------------------------
SRC=odxfs-irsrc-$$
qemu-img create -q -f qcow2 "$T/img/vda.qcow2" 64M || fail "qemu-img create failed"
truncate -s 64M "$T/model.raw"
vm_define "$SRC" "$T/img/vda.qcow2"
vm_start "$SRC"
w() { vm_write "$SRC" vda "$T/model.raw" "$1"; }
snap() { # snap LABEL LEVEL: capture the disk, then back it up
	vm_capture "$SRC" vda "$T/img/vda.qcow2" "$T/$1.raw"
	cmp -s "$T/$1.raw" "$T/model.raw" || fail "capture at $1 differs from the model of the writes"
	virtnbdbackup -n -d "$SRC" -l "$2" -o "$BK" >"$T/vnb-$1.log" 2>&1 || {
		tail -n 30 "$T/vnb-$1.log" >&2
		fail "virtnbdbackup -l $2 failed"
	}
}
w "write -P 0x41 0 1M"
w "write -P 0x42 4M 2M"
w "write -P 0x43 63M 1M"
snap full full
w "write -P 0x44 512k 1M"
w "write -P 0x45 20M 64k"
w "write -z 5M 64k"
snap inc1 inc
vm_remove "$SRC" || fail "could not remove $SRC"
VIEW=vda.inc.virtnbdbackup.1.data
[ -f "$BK/$VIEW" ] || fail "virtnbdbackup wrote no $VIEW: $(ls "$BK")"

# The backup files as they are: bytes, size, owner, mode, mtime.
backup_state() {
	(cd "$BK" && for f in *.data; do
		printf '%s %s %s\n' "$f" "$(sha256sum <"$f" | cut -d' ' -f1)" "$(stat -c '%s %u:%g %a %Y' "$f")"
	done)
}
backup_state >"$T/bk.before"
backup_untouched() {
	backup_state >"$T/bk.now"
	diff "$T/bk.before" "$T/bk.now" >&2 || fail "the backup files changed ($1)"
}

odxfs_mount "$BK" "$MNT" -o ro,allow_other
cmp "$MNT/$VIEW" "$T/inc1.raw" || problem "$VIEW is not the disk at its checkpoint"

# ---- an overlay on the view ---------------------------------------------------
OV=$T/out/overlay.qcow2
qemu-img create -q -f qcow2 -F raw -b "$MNT/$VIEW" "$OV" || fail "qemu-img create of the overlay failed"
qemu-img info "$OV" | grep -q "^backing file: $MNT/$VIEW\$" || fail "overlay's backing file is not the view"
out=$(qemu-img compare -f qcow2 -F raw "$OV" "$MNT/$VIEW" 2>&1) || fail "reads through the overlay differ from the view: $out"
out=$(qemu-img compare -f qcow2 -F raw "$OV" "$T/inc1.raw" 2>&1) || problem "the overlay differs from the disk at the incremental: $out"

cp "$T/inc1.raw" "$T/expect.raw"
ovw() { # ovw 'qemu-io command': on the overlay and on the expected image
	local o
	o=$(qemu-io -f qcow2 -c "$1" "$OV" 2>&1) || fail "qemu-io on the overlay: $1: $o"
	if grep -Eqi 'fail|error' <<<"$o"; then fail "qemu-io on the overlay: $1: $o"; fi
	model_io "$T/expect.raw" "$1"
}
ovw "write -P 0x5a 1M 64k"
ovw "write -P 0x5b 40M 4k"
if ! out=$(qemu-io -f qcow2 -r -c "read -P 0x5a 1M 64k" -c "read -P 0x5b 40M 4k" \
	-c "read -P 0x44 1114112 458752" -c "read -P 0x41 0 512k" -c "read -P 0 5M 64k" "$OV" 2>&1) ||
	grep -qi 'fail' <<<"$out"; then
	problem "reads through the overlay: ${out//$'\n'/; }"
fi
out=$(qemu-img compare -f qcow2 -F raw "$OV" "$T/expect.raw" 2>&1) || problem "overlay after writes: $out"
# Written clusters are the overlay's own (depth 0), nothing else is.
qemu-img map --output=json "$OV" | "${PY:-python3}" -c '
import json, sys
m = json.load(sys.stdin)
own = [(e["start"], e["start"] + e["length"]) for e in m if e["depth"] == 0 and e["data"]]
want = [(1 << 20, (1 << 20) + 65536), (40 << 20, (40 << 20) + 65536)]
sys.exit(0 if own == want else "overlay allocates %s, expected %s" % (own, want))
' || problem "the overlay's own clusters are not exactly the written ones"
cmp -s "$MNT/$VIEW" "$T/inc1.raw" || problem "the view changed after writes to the overlay"
if out=$(qemu-io -f raw -c "write -P 0x99 0 4k" "$MNT/$VIEW" 2>&1) && ! grep -qi 'fail\|error' <<<"$out"; then
	problem "a write to the view itself succeeded: $out"
fi
backup_untouched "after qemu-io on the overlay"

# ---- a VM on the overlay ------------------------------------------------------
DOM=odxfs-ir-$$
vm_define "$DOM" "$OV"
vm_start "$DOM"
vm_io "$DOM" vda "read -P 0x41 0 512k"            # the full, through the view
vm_io "$DOM" vda "read -P 0x44 1114112 458752"    # the incremental
vm_io "$DOM" vda "read -P 0 5M 64k"               # zeroed in the incremental
vm_io "$DOM" vda "read -P 0x5a 1M 64k"            # the overlay's own
vm_io "$DOM" vda "write -P 0x6c 2M 64k"
model_io "$T/expect.raw" "write -P 0x6c 2M 64k"
vm_io "$DOM" vda "read -P 0x6c 2M 64k"
vm_io "$DOM" vda flush
cmp -s "$MNT/$VIEW" "$T/inc1.raw" || problem "the view changed while the VM ran on the overlay"
backup_untouched "while the VM runs on the overlay"
out=$(qemu-img compare -U -f qcow2 -F raw "$OV" "$T/expect.raw" 2>&1) || problem "overlay after the VM's write: $out"

# Copy the disk out while the VM runs: a full copy (the backing chain
# flattened), then the VM switches to it.
LIVE=$T/out/restored-live.qcow2
out=$("${VIRSH[@]}" blockcopy "$DOM" vda "$LIVE" --format qcow2 --wait --pivot --transient-job 2>&1) ||
	fail "virsh blockcopy --pivot failed: $out"
"${VIRSH[@]}" domblklist "$DOM" | grep -q "vda *$LIVE\$" || fail "the VM's disk is not $LIVE after the pivot"
qemu-img info -U "$LIVE" | grep -q '^backing file' && fail "$LIVE still has a backing file"
odxfs_umount "$MNT" # the VM no longer needs the backup: the mount is not busy
vm_io "$DOM" vda "read -P 0x41 0 512k"
vm_io "$DOM" vda "read -P 0x6c 2M 64k"
vm_io "$DOM" vda "read -P 0x5b 40M 4k"
cp "$T/expect.raw" "$T/expect-live.raw"
vm_io "$DOM" vda "write -P 0x7d 3M 4k"
model_io "$T/expect-live.raw" "write -P 0x7d 3M 4k"
vm_io "$DOM" vda flush
out=$(qemu-img compare -U -f qcow2 -F raw "$LIVE" "$T/expect-live.raw" 2>&1) || problem "the live copy: $out"
vm_remove "$DOM" || fail "could not remove $DOM"
backup_untouched "after the VM"

# ---- copy out offline, and no commit into the backup --------------------------
odxfs_mount "$BK" "$MNT" -o ro,allow_other
ovsum=$(sha "$OV")
OUT=$T/out/restored.qcow2
qemu-img convert -O qcow2 "$OV" "$OUT" || fail "qemu-img convert of the overlay failed"
qemu-img info "$OUT" | grep -q '^backing file' && fail "$OUT has a backing file"
out=$(qemu-img compare -f qcow2 -F raw "$OUT" "$T/expect.raw" 2>&1) || problem "the converted disk: $out"
if out=$(qemu-img commit "$OV" 2>&1); then
	problem "qemu-img commit into the backup succeeded: $out"
else
	log "qemu-img commit refused, as it must be: $out"
fi
[ "$(sha "$OV")" = "$ovsum" ] || problem "the overlay changed under a refused commit"
cmp -s "$MNT/$VIEW" "$T/inc1.raw" || problem "the view changed"
backup_untouched "after convert and the refused commit"

no_problems
pass
