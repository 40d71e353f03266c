#!/bin/bash
# The command line: --help (our options, then FUSE's), --version, bad
# option values and bad paths refused before detaching, mount(8)-style
# argument order and options, and SIGTERM unmounting cleanly.
. "$(dirname "$0")/lib.sh"
require_fuse

"$ODXFS" --help >"$T/help.txt" 2>&1 || fail "--help exited non-zero"
grep -q 'usage: .*BACKING MOUNTPOINT' "$T/help.txt" || fail "--help: no usage line"
for o in cache_size read_ahead; do
	grep -q -- "-o $o=" "$T/help.txt" || fail "--help does not list -o $o"
done
grep -q 'allow_other' "$T/help.txt" || fail "--help does not include FUSE's options"
"$ODXFS" --version >"$T/version.txt" 2>&1 || fail "--version exited non-zero"
grep -q '^odxfs version [0-9]' "$T/version.txt" || fail "--version: $(cat "$T/version.txt")"

mkdir -p "$T/back" "$T/mnt"
# refuse CMD... PATTERN: must exit non-zero, print PATTERN, leave no mount.
refuse() {
	local pat=${*: -1}
	local rc=0
	timeout 20 "${@:1:$#-1}" >"$T/out.txt" 2>&1 || rc=$?
	[ $rc != 0 ] || fail "accepted: ${*:1:$#-1}"
	[ $rc != 124 ] || fail "hung: ${*:1:$#-1}"
	grep -Eq -- "$pat" "$T/out.txt" || fail "${*:1:$#-1}: message '$(cat "$T/out.txt")' does not match '$pat'"
	! grep -qs " $T/mnt " /proc/self/mounts || fail "left a mount behind"
}
refuse "$ODXFS" -o cache_size=lots "$T/back" "$T/mnt" "cache_size.*'lots'"
refuse "$ODXFS" -o cache_size "$T/back" "$T/mnt" "cache_size.*needs a value"
refuse "$ODXFS" -o read_ahead=-1 "$T/back" "$T/mnt" "read_ahead.*'-1'"
refuse "$ODXFS" -o no_such_option "$T/back" "$T/mnt" "no_such_option"
refuse "$ODXFS" -o no_such_option "$T/back" "$T/mnt" "valid options: cache_size=SIZE.*token_ttl"
refuse "$ODXFS" "$T/missing" "$T/mnt" "missing: No such file"
refuse "$ODXFS" "$T/help.txt" "$T/mnt" "not a directory"
refuse "$ODXFS" "$T/back" "$T/nomnt" "nomnt"
refuse "$ODXFS" "$T/back" "usage"
refuse "$ODXFS" "$T/back" "$T/mnt" extra "unexpected argument 'extra'"

# mount(8) order (options last) and the options mount and systemd pass.
odxfs_mount "$T/back" "$T/mnt" -o _netdev,nofail,x-systemd.automount,noatime,cache_size=8M
echo hi >"$T/mnt/f"
[ "$(cat "$T/back/f")" = hi ] || fail "write through the mount"
odxfs_umount "$T/mnt"

# Daemonized (no -f): detaches only once mounted, exits 0 on unmount.
"$ODXFS" "$T/back" "$T/mnt" || fail "daemonizing mount failed"
at_exit "fusermount3 -uz $T/mnt"
grep -qs " $T/mnt fuse" /proc/self/mounts || fail "not mounted when odxfs returned"
[ "$(cat "$T/mnt/f")" = hi ] || fail "read through the daemonized mount"
fusermount3 -u "$T/mnt" || fail "fusermount3 -u"

# SIGTERM and SIGINT unmount and exit 0.  (A shell runs background jobs
# with SIGINT ignored, and an ignored signal stays ignored: reset it.)
for sig in TERM INT; do
	env --default-signal=INT "$ODXFS" -f "$T/back" "$T/mnt" 2>"$T/sig.log" &
	pid=$!
	at_exit "kill -KILL $pid"
	deadline=$((SECONDS + 10))
	until grep -qs " $T/mnt fuse" /proc/self/mounts; do
		[ $SECONDS -lt $deadline ] || fail "no mount"
		sleep 0.05
	done
	kill -$sig $pid
	deadline=$((SECONDS + 10))
	while kill -0 $pid 2>/dev/null; do
		[ $SECONDS -lt $deadline ] || fail "odxfs still running 10 s after SIG$sig"
		sleep 0.05
	done
	rc=0
	wait $pid || rc=$?
	[ $rc = 0 ] || fail "exit status $rc after SIG$sig: $(cat "$T/sig.log")"
	! grep -qs " $T/mnt fuse" /proc/self/mounts || fail "still mounted after SIG$sig"
done
pass
