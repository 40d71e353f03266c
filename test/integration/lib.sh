# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers for odxfs integration tests: source it from a test script.
#
# Each test gets its own directory ($T), mounts with odxfs_mount (the daemon
# runs in the foreground, its log in $T/odxfs-N.log), unmounts with
# odxfs_umount (fusermount3 -u, then the daemon must exit 0), and ends with
# pass.  An EXIT trap lazily unmounts and kills whatever is left, so a
# failing test never leaves a mount behind.  A daemon log line the test did
# not announce with expect_log fails the test.
#
# Environment (set by meson; defaults for running a script by hand):
#   ODXFS        the daemon            MKSTREAM  test/tools/mkstream.py
#   ODXCTL       odxctl (optional)     ODXFS_TEST_REQUIRE_ALL=1: skip = fail
#   ODXFS_TEST_KEEP=1 keeps $T for a post-mortem.

set -eu
set -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ODXFS=${ODXFS:-odxfs}
MKSTREAM=${MKSTREAM:-$here/../tools/mkstream.py}
ODXCTL=${ODXCTL:-}
test_name=$(basename "$0" .sh)

_mounts=()      # mount points we mounted
_pids=()        # their daemons
_logs=()        # their logs
_expected=()    # extended regexps of log lines the test expects

log() { printf '%s: %s\n' "$test_name" "$*" >&2; }

fail() {
	log "FAIL: $*"
	for l in "${_logs[@]:-}"; do
		[ -n "$l" ] && [ -s "$l" ] && { log "--- $l"; tail -n 40 "$l" >&2; }
	done
	exit 1
}

# A missing prerequisite: exit 77 (meson's skip), or fail in CI.
skip() {
	if [ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ]; then
		fail "prerequisite missing (ODXFS_TEST_REQUIRE_ALL=1): $*"
	fi
	log "SKIP: $*"
	exit 77
}

require_cmd() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "command '$c' not found"
	done
}

require_fuse() {
	[ -c /dev/fuse ] || skip "/dev/fuse missing"
	require_cmd fusermount3
	command -v "$ODXFS" >/dev/null 2>&1 || [ -x "$ODXFS" ] || fail "odxfs not found: $ODXFS"
}

require_root() {
	[ "$(id -u)" = 0 ] || skip "needs root"
}

_cleanup() {
	local rc=$?
	local i
	for i in "${!_mounts[@]}"; do
		[ -n "${_mounts[$i]}" ] || continue
		# /proc/self/mounts, not mountpoint(1): a dead daemon's mount
		# cannot be stat'ed (ENOTCONN) but must be unmounted too.
		if grep -qs " $(realpath -m "${_mounts[$i]}") fuse" /proc/self/mounts; then
			fusermount3 -uz "${_mounts[$i]}" 2>/dev/null || umount -l "${_mounts[$i]}" 2>/dev/null || true
		fi
		kill "${_pids[$i]}" 2>/dev/null || true
	done
	for i in "${_cleanups[@]:-}"; do
		[ -n "$i" ] && eval "$i" >/dev/null 2>&1 || true
	done
	if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
		log "failed (exit $rc); test directory $T"
	elif [ "${ODXFS_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$T"
	fi
	exit "$rc"
}

_cleanups=()
# Run a shell command at exit, before the test directory is removed
# (detach a loop device, unmount a filesystem in the mount, ...).
at_exit() { _cleanups=("$*" "${_cleanups[@]:-}"); }

T=$(mktemp -d "${TMPDIR:-/tmp}/odxfs-$test_name.XXXXXX")
trap _cleanup EXIT
trap 'exit 130' INT TERM

# Announce a log line (extended regexp) the test may provoke on purpose;
# must_log: and that must appear before the unmount.
_required=()
expect_log() { _expected+=("$1"); }
must_log() { _expected+=("$1"); _required+=("$1"); }

# odxfs_mount BACKING MOUNTPOINT [odxfs options...]
odxfs_mount() {
	local backing=$1 mnt=$2
	shift 2
	local n=${#_mounts[@]}
	local logf=$T/odxfs-$n.log
	mkdir -p "$mnt"
	"$ODXFS" -f "$@" "$backing" "$mnt" >"$logf" 2>&1 &
	local pid=$!
	_mounts+=("$mnt")
	_pids+=("$pid")
	_logs+=("$logf")
	local deadline=$((SECONDS + 15))
	until grep -qs " $(realpath "$mnt") fuse" /proc/self/mounts; do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; fail "odxfs died before mounting $mnt"; }
		[ $SECONDS -lt $deadline ] || fail "odxfs did not mount $mnt within 15 s"
		sleep 0.05
	done
}

# Fail on daemon log lines nobody expected.
_check_log() {
	local logf=$1 line pat ok
	while IFS= read -r line; do
		ok=0
		for pat in "${_expected[@]:-}"; do
			[ -n "$pat" ] && [[ $line =~ $pat ]] && { ok=1; break; }
		done
		# Only warnings and worse must be announced by the test.
		[[ $line =~ ^odxfs:\ (notice|info|debug): ]] && ok=1
		[ $ok = 1 ] || fail "unexpected daemon log line: $line"
	done <"$logf"
	for pat in "${_required[@]:-}"; do
		[ -z "$pat" ] || grep -Eq -- "$pat" "$logf" || fail "no daemon log line matches: $pat"
	done
}

# odxfs_umount MOUNTPOINT: unmount, the daemon must exit 0.
odxfs_umount() {
	local mnt=$1 i
	for i in "${!_mounts[@]}"; do
		[ "${_mounts[$i]}" = "$mnt" ] || continue
		fusermount3 -u "$mnt" || fail "fusermount3 -u $mnt failed"
		local pid=${_pids[$i]} rc=0
		local deadline=$((SECONDS + 15))
		while kill -0 "$pid" 2>/dev/null; do
			[ $SECONDS -lt $deadline ] || fail "odxfs still running 15 s after unmount"
			sleep 0.05
		done
		wait "$pid" || rc=$?
		[ $rc = 0 ] || fail "odxfs exited with status $rc after unmount"
		_check_log "${_logs[$i]}"
		# Emptied, not unset: the arrays stay parallel by index for the
		# next odxfs_mount (an unset last element would make += reuse
		# its index in _mounts only).
		_mounts[$i]=""
		return 0
	done
	fail "odxfs_umount: $mnt was not mounted by this test"
}

# The daemon of MOUNTPOINT must still be running.
daemon_alive() {
	local i
	for i in "${!_mounts[@]}"; do
		[ "${_mounts[$i]}" = "$1" ] && kill -0 "${_pids[$i]}" 2>/dev/null && return 0
	done
	fail "the daemon serving $1 died"
}

pass() {
	local m
	for m in "${_mounts[@]:-}"; do
		[ -n "$m" ] && odxfs_umount "$m"
	done
	log "PASS"
	exit 0
}

mkstream() { python3 "$MKSTREAM" "$@"; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

same_bytes() {
	cmp "$1" "$2" || fail "$1 and $2 differ"
}

# expect_errno ERRNO-NAME python-statement... : the statement must raise
# OSError with that errno.
expect_errno() {
	local want=$1
	shift
	python3 - "$want" "$@" <<'PY' || fail "expected $want from: $*"
import errno, os, sys
want = getattr(errno, sys.argv[1])
try:
    exec(sys.argv[2])
except OSError as e:
    if e.errno != want:
        print(f"got {errno.errorcode.get(e.errno, e.errno)}: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
print("no error", file=sys.stderr)
sys.exit(1)
PY
}

CHECK="python3 $here/check.py"

# make_image NAME mkstream-image-args...: $T/NAME.raw and its layout
# $T/NAME.raw.layout.json (an independent generator: expected bytes).
make_image() {
	local name=$1
	shift
	mkstream image "$@" "$T/$name.raw" >/dev/null || fail "mkstream image $name failed"
}

# Sum of the data regions of a layout.
layout_data_bytes() {
	python3 -c 'import json,sys; print(sum(r["length"] for r in json.load(open(sys.argv[1])) if r["kind"] == "data"))' "$1"
}

# ---- Unprivileged users (multi-user tests) --------------------------------
# Real system users, made by the test and removed at exit.  Their names
# carry the test's process id, so runs never share one.  $T becomes 0755
# (mktemp made it 0700) so they can reach their directories inside it.

# make_group NAME: a system group.
make_group() {
	require_root
	require_cmd groupadd groupdel
	groupadd -r "$1" || fail "groupadd $1 failed"
	at_exit "groupdel $1"
}

# make_user NAME [GROUP[,GROUP...]]: a system user with a group of its own
# (its primary group, same name) and the given supplementary groups; no
# home directory, no login shell.
make_user() {
	local name=$1 groups=${2:-}
	require_root
	require_cmd useradd userdel setpriv
	useradd -r -U -M -d /nonexistent -s /usr/sbin/nologin ${groups:+-G "$groups"} "$name" ||
		fail "useradd $name failed"
	# userdel also removes the user's own group; groupdel covers the case
	# where it stayed (it had other members).
	at_exit "userdel $name; groupdel $name"
	chmod 0755 "$T"
}

# as_user USER CMD...: run CMD as USER, with its uid, primary gid and
# supplementary groups, and no capabilities (setpriv drops them with the
# uid change).  HOME=/ and the system's PATH, so nothing is looked for in
# root's home (a python3 shim there is not the user's to run).  The umask
# is the caller's: set it inside CMD.
as_user() {
	local u=$1
	shift
	HOME=/ PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
		setpriv --reuid="$(id -u "$u")" --regid="$(id -g "$u")" --init-groups -- "$@"
}

# odx_ioctl_setup: odx_ioctl.py and the headers it reads, copied where any
# user can import them ($T/py, on PYTHONPATH from now on).
odx_ioctl_setup() {
	mkdir -p "$T/py/odxfs"
	cp "$here/odx_ioctl.py" "$T/py/"
	cp "$here/../../include/odxfs/ioctl.h" "$here/../../include/odxfs/token.h" "$T/py/odxfs/"
	chmod -R a+rX "$T/py"
	export PYTHONPATH="$T/py${PYTHONPATH:+:$PYTHONPATH}" ODXFS_INCLUDE="$T/py"
	python3 -c 'import odx_ioctl' || fail "odx_ioctl.py cannot compute the ioctls from the header"
}

# problem MESSAGE: a failed check that lets the test go on, so the checks
# after it still run and report; no_problems, before pass, fails the test
# if there was any.
_problems=0
problem() {
	log "FAIL: $*"
	_problems=$((_problems + 1))
}
no_problems() {
	[ "$_problems" = 0 ] || fail "$_problems check(s) failed (see above)"
}
