#!/bin/bash
# Modifying a file's data or size through the mount drops its setuid and
# setgid bits exactly as the kernel does on a local filesystem (Linux 6.x:
# setuid always; setgid when group-execute is set, or, when it is not, when
# the caller is not in the file's group; nothing for a caller with
# CAP_FSETID, i.e. root).
#
# For each path that changes data or size (write, ftruncate, truncate by
# path, open(O_TRUNC), fallocate in its default mode, PUNCH_HOLE|KEEP_SIZE
# and ZERO_RANGE, copy_file_range into the file, the offload-write ioctl)
# and each mode (4755, 2755, 6755, 6666, 2644), a real unprivileged user
# modifies a file of its own in the mount, and the same user the same file
# directly on ext4 (the reference; the ioctl has none there, it must give
# what write(2) gives).  The modes must agree, in the mount and on the
# backing file.  Three sets of files:
#   user-*   created by the user (open(O_CREAT), chmod MODE) in the mount,
#            and on ext4 for the reference: the whole path a user takes;
#   given-*  made by root on the backing filesystem and given to the user,
#            so the dropping of privileges is tested apart from the
#            credentials a create runs with; with one more: 2666 of
#            root:root, a group the user is not in ("other");
#   root-*   given files that root modifies: root keeps the bits
#            (CAP_FSETID), as on ext4.
#
# And the escalation end to end: a user offload-writes a root-owned
# program into a file it creates with mode 04755; another user running
# that file must never get euid 0.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 stat id

B=$T/back
M=$T/mnt
R=$T/ref
U1=odx$$a
U2=odx$$b
make_user "$U1"
make_user "$U2"
odx_ioctl_setup

OPS="write ftruncate truncate otrunc falloc fpunch fzero cfr ioctl"
MODES="4755 2755 6755 6666 2644"
head -c 65536 /dev/urandom >"$T/content"
head -c 131072 /dev/urandom >"$T/src"
chmod 0644 "$T/content"

# prepare DIR: U1's directory with the given files, one per (set,
# operation, mode), and a source for copy_file_range and offload reads;
# made by root on ext4.
prepare() {
	local d=$1/p set op m f
	mkdir -p "$d"
	chown "$U1:$U1" "$d"
	chmod 0755 "$d"
	cp "$T/src" "$d/src"
	chown "$U1:$U1" "$d/src"
	chmod 0644 "$d/src"
	for set in given root; do
		for op in $OPS; do
			for m in $MODES other; do
				f=$d/$set-$op-$m
				cp "$T/content" "$f"
				if [ "$m" = other ]; then
					chown root:root "$f"
					chmod 2666 "$f"
				else
					chown "$U1:$U1" "$f"
					chmod "$m" "$f"
				fi
			done
		done
	done
}
prepare "$B"
prepare "$R"
odxfs_mount "$B" "$M" -o allow_other,default_permissions,suid

# modify SET DIR OP...: apply each operation to the set's file of every
# mode (user and given as U1, root as root; the user set is created first,
# by U1); one line per file, "NAME: OK" or "NAME: ERRNO" (for the user set
# "NAME: create ERRNO" when making it failed).
modify() {
	local set=$1 dir=$2 modes="$MODES other"
	shift 2
	local run="as_user $U1"
	[ "$set" = root ] && run=env
	[ "$set" = user ] && modes=$MODES
	$run python3 - "$dir/p" "$set" "$modes" "$T/content" "$@" <<'PY'
import ctypes, errno, os, sys
import odx_ioctl as ox
d, set_, modes, content, ops = (sys.argv[1], sys.argv[2], sys.argv[3].split(),
                                sys.argv[4], sys.argv[5:])
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10

def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def falloc(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def make(path, mode):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with open(content, "rb") as f:
        os.write(fd, f.read())
    os.close(fd)
    os.chmod(path, mode)

src = os.open(f"{d}/src", os.O_RDONLY)
token = None
if "ioctl" in ops:
    token = ox.offload_read(src, 0, 65536)["token"]

def modify(op, path):
    if op == "truncate":
        os.truncate(path, 100000)
        return
    if op == "otrunc":
        os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        if op == "write":
            os.pwrite(fd, b"w" * 4096, 4096)
        elif op == "ftruncate":
            os.ftruncate(fd, 100000)
        elif op == "falloc":             # default mode, growing the file
            falloc(fd, 0, 0, 1 << 20)
        elif op == "fpunch":
            falloc(fd, PUNCH_HOLE | KEEP_SIZE, 8192, 8192)
        elif op == "fzero":
            falloc(fd, ZERO_RANGE, 8192, 8192)
        elif op == "cfr":
            if os.copy_file_range(src, fd, 65536, 0, 4096) <= 0:
                raise SystemExit(f"{path}: copy_file_range copied nothing")
        elif op == "ioctl":
            if ox.offload_write(fd, 4096, 65536, token)["length_written"] != 65536:
                raise SystemExit(f"{path}: offload write wrote less than asked")
    finally:
        os.close(fd)

for op in ops:
    for m in modes:
        name = f"{set_}-{op}-{m}"
        path = f"{d}/{name}"
        if set_ == "user":
            try:
                make(path, int(m, 8))
            except OSError as e:
                print(f"{name}: create {ename(e)}")
                continue
        try:
            modify(op, path)
            print(f"{name}: OK")
        except OSError as e:
            print(f"{name}: {ename(e)}")
PY
}

# modes DIR: mode, owner and group of every test file.
modes() {
	(cd "$1/p" && stat -c '%n %a %u %g' user-* given-* root-* | LC_ALL=C sort)
}

# The reference: no ioctl on ext4; what write(2) gives stands for it.
REFOPS=${OPS% ioctl}
for set in user given root; do
	modify $set "$R" $REFOPS >>"$T/ops-ref.txt" || fail "$set: the operations failed to run (reference)"
	modify $set "$M" $OPS >>"$T/ops-mnt.txt" || fail "$set: the operations failed to run (mount)"
done
# with_ioctl FILE: FILE's lines plus its write lines renamed to ioctl.
with_ioctl() {
	{ cat "$1"; sed -n 's/^\([a-z]*\)-write-/\1-ioctl-/p' "$1"; } | LC_ALL=C sort
}
modes "$R" | grep -v -- '-ioctl-' >"$T/modes-ref0.txt"
with_ioctl "$T/modes-ref0.txt" >"$T/modes-ref.txt"
with_ioctl "$T/ops-ref.txt" >"$T/ops-ref-all.txt"
LC_ALL=C sort "$T/ops-mnt.txt" >"$T/ops-mnt-all.txt"
modes "$M" >"$T/modes-mnt.txt"
modes "$B" >"$T/modes-back.txt"

# The reference must show the kernel's rules, or the comparison is void.
uid1=$(id -u "$U1") gid1=$(id -g "$U1")
for want in "user-write-4755 755 $uid1 $gid1" "user-write-2755 755 $uid1 $gid1" \
	"user-write-6666 2666 $uid1 $gid1" "user-write-2644 2644 $uid1 $gid1" \
	"given-write-other 666 0 0" "given-otrunc-6755 755 $uid1 $gid1" \
	"root-write-6755 6755 $uid1 $gid1" "root-write-other 2666 0 0"; do
	grep -qx "$want" "$T/modes-ref.txt" ||
		fail "reference on ext4: expected '$want', got '$(grep "^${want%% *} " "$T/modes-ref.txt")'"
done
grep -qv ': OK$' "$T/ops-ref-all.txt" && fail "reference operations failed: $(grep -v ': OK$' "$T/ops-ref-all.txt")"

# A failed check is logged and the test goes on to the escalation; it
# fails at the end.
bad=0
for what in ops:mnt-all:ops-ref-all modes:mnt:modes-ref modes:back:modes-ref; do
	IFS=: read -r k side ref <<<"$what"
	if ! diff -u --label "reference (ext4)" --label "$k $side" "$T/$ref.txt" "$T/$k-$side.txt" >"$T/diff.txt"; then
		log "$k differ, reference vs $side:"
		cat "$T/diff.txt" >&2
		bad=1
	fi
done
[ $bad = 0 ] || problem "setuid/setgid after modifications through the mount differ from ext4's (diffs above)"

# The escalation, end to end.  A root-owned program in the mount; U1
# creates a file with mode 04755 and, through the descriptor of that
# create, offload-writes the program into it; U2 runs it.
mkdir "$B/esc" "$B/esc/u"
chown "$U1:$U1" "$B/esc/u"
at_exit "rm -f $B/esc/u/evil $B/esc/control"
cp /usr/bin/id "$M/esc/rootid"
chmod 0755 "$M/esc/rootid"
# Control: a setuid-root copy does run as root for U2 in this mount, so
# the check below can fail.
cp /usr/bin/id "$M/esc/control"
chmod 4755 "$M/esc/control"
as_user "$U2" "$M/esc/control" >"$T/control.txt" || fail "running the control copy as $U2 failed"
grep -q 'euid=0(' "$T/control.txt" ||
	fail "a setuid-root program does not run as root in this mount (nosuid?): $(cat "$T/control.txt")"
rm "$M/esc/control"
as_user "$U1" sh -c 'umask 022; exec python3 - "$@"' - "$M/esc" >"$T/esc.txt" <<'PY' ||
import errno, os, sys
import odx_ioctl as ox
d = sys.argv[1]
src = os.open(f"{d}/rootid", os.O_RDONLY)
size = os.fstat(src).st_size
tok = ox.offload_read(src, 0, size)["token"]
fd = os.open(f"{d}/u/evil", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o4755)
done = 0
try:
    while done < size:
        n = ox.offload_write(fd, done, size - done, tok, transfer_offset=done)["length_written"]
        if n == 0:
            break
        done += n
    print(f"written {done} of {size}")
except OSError as e:
    print(f"refused {errno.errorcode.get(e.errno, e.errno)}")
os.close(fd)
PY
	fail "the escalation attempt did not run"
log "escalation attempt: $(cat "$T/esc.txt")"
rc=0
as_user "$U2" "$M/esc/u/evil" >"$T/evil.txt" 2>&1 || rc=$?
log "$U2 running it: exit $rc, $(cat "$T/evil.txt")"
st=$(stat -c '%u %a' "$B/esc/u/evil")
! grep -q 'euid=0(' "$T/evil.txt" ||
	problem "ESCALATION: $U2 ran $U1's file with euid 0 (backing file owner and mode: $st)"
if grep -q '^written' "$T/esc.txt"; then
	[ "${st%% *}" = "$(id -u "$U1")" ] ||
		problem "the offload-written file is not $U1's: owner and mode $st"
	[ $((8#${st#* } & 04000)) = 0 ] ||
		problem "the offload-written file kept its setuid bit: mode ${st#* }"
fi
daemon_alive "$M"
no_problems
pass
