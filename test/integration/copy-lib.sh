# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers of the copy-*.sh tests (offloaded copies), sourced after lib.sh.
#
# A copy's expected result comes from copy-check.py, which knows only the
# reference raw image and its mkstream layout, never odxfs: the bytes (a
# file built by pread/pwrite), and the hole map (a hole at every block of
# the destination that received no byte of a data region).

CC="python3 $here/copy-check.py"

require_odxctl() {
	[ -n "$ODXCTL" ] && [ -x "$ODXCTL" ] || fail "odxctl not built (ODXCTL='$ODXCTL')"
}

# Block size of the backing filesystem of a path.
backing_block() { stat -f -c %S "$1"; }

# stat_of MOUNTPOINT KEY: one counter of `odxctl stats --json`.
stat_of() {
	"$ODXCTL" stats --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# token_of: the token from `odxctl offload-read` output on stdin.
token_of() { sed -n 's/^token: //p'; }

# check_copy MNT_FILE BACKING_FILE REF LAYOUT SIZE [--copy S:D:L ...]
# The destination (seen in the mount and as the backing file) holds the
# expected bytes, its holes are where copy-check.py says (both views, with
# xfs_io), and its allocation (du) is its data blocks, give or take the
# backing filesystem's own metadata blocks.
check_copy() {
	local mf=$1 bf=$2 ref=$3 layout=$4 size=$5
	shift 5
	local blk
	blk=$(backing_block "$bf")
	$CC expect "$ref" "$T/expect.bin" --size "$size" "$@" || fail "copy-check expect"
	[ "$(stat -c %s "$mf")" = "$size" ] || fail "$mf: size $(stat -c %s "$mf"), expected $size"
	cmp "$mf" "$T/expect.bin" || fail "$mf: bytes differ from the expected copy"
	[ "$(sha "$bf")" = "$(sha "$T/expect.bin")" ] || fail "$bf: sha256 differs"
	xfs_io -r -c "seek -a -r 0" "$mf" >"$T/seek-mnt.txt" || fail "xfs_io seek $mf"
	$CC holes "$T/seek-mnt.txt" "$layout" --size "$size" --block "$blk" "$@" ||
		fail "$mf: holes (in the mount) differ from the source's zero extents"
	xfs_io -r -c "seek -a -r 0" "$bf" >"$T/seek-back.txt" || fail "xfs_io seek $bf"
	$CC holes "$T/seek-back.txt" "$layout" --size "$size" --block "$blk" "$@" ||
		fail "$bf: holes (backing file) differ from the source's zero extents"
	local want got
	want=$($CC data-bytes "$layout" --size "$size" --block "$blk" "$@")
	got=$(( $(stat -c %b "$bf") * 512 ))
	# ext4 counts its extent tree blocks in st_blocks: allow 1% + 256 KiB.
	if [ "$got" -lt "$want" ] || [ "$got" -gt $((want + want / 100 + 262144)) ]; then
		fail "$bf: $got bytes allocated (du), expected $want"
	fi
	rm -f "$T/expect.bin"
}

# odxctl_fails MESSAGE-REGEX odxctl-arguments...: odxctl must exit 3 and
# print "odxctl: FILE: <message>" matching the regex.
odxctl_fails() {
	local want=$1 rc=0
	shift
	"$ODXCTL" "$@" >"$T/out.txt" 2>"$T/err.txt" || rc=$?
	[ "$rc" = 3 ] || fail "odxctl $*: exit $rc, expected 3 ($(cat "$T/err.txt"))"
	grep -Eq "^odxctl: .*: .*$want" "$T/err.txt" ||
		fail "odxctl $*: message '$(cat "$T/err.txt")' does not match '$want'"
}
