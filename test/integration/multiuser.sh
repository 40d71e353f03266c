#!/bin/bash
# A multi-user mount (-o allow_other,default_permissions) acts with the
# caller's credentials: every name created or changed, every open, setattr
# and xattr call runs with the calling process's uid, gid, supplementary
# groups and umask, so the results are what the same user gets directly on
# the backing filesystem.
#
# Two real unprivileged users do the same operations, with umask 0, 022
# and 077, in a tree of the mount and in a reference tree directly on the
# same ext4 filesystem, both prepared identically: files created 0666 and
# 0777 and written twice, mkdir, mkfifo, mknod (a regular file; a device
# node: EPERM), symlink, hard link, rename, unlink, rmdir, chmod and chown
# (a group of the user's: allowed; root's group, another user: EPERM),
# xattrs (user.*: allowed; trusted.*: EPERM), a sticky directory (the own
# file may go, the other user's may not), a setgid directory (the group
# and, for directories, the bit are inherited) and directories with a
# default ACL (the ACL, not the umask, decides the mode), an access ACL set
# by the user on its setgid file of a group it is not in (the bit goes).  Every operation's
# outcome (OK or its errno) and every resulting name's owner, group, mode
# and type must be equal in both trees; the ACLs that new names inherit on
# the backing filesystem too.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3 setfacl getfacl stat

B=$T/back
M=$T/mnt
R=$T/ref
U1=odx$$a
U2=odx$$b
G=odx$$g
make_group "$G"
make_user "$U1" "$G"
make_user "$U2"
uid1=$(id -u "$U1") gid1=$(id -g "$U1") uid2=$(id -u "$U2") gid2=$(id -g "$U2")
gidG=$(getent group "$G" | cut -d: -f3)

# The backing filesystem must keep POSIX ACLs, or the ACL cases test
# nothing.
mkdir -p "$B" "$R"
setfacl -m u:"$U2":r "$R" && getfacl -c -p "$R" | grep -q "^user:$U2:r--" ||
	skip "no POSIX ACLs on $(df --output=target "$R" | tail -1)"
setfacl -b "$R"

# prepare DIR: one tree for one umask, made by root directly on ext4.
prepare() {
	local d=$1
	mkdir -p "$d"/{work,sticky,sgid,acl,aclnamed}
	chmod 0755 "$d"
	chown "$U1:$U1" "$d/work" "$d/acl" "$d/aclnamed"
	chmod 0755 "$d/work" "$d/acl" "$d/aclnamed"
	# The other user's file in a sticky directory.
	chmod 1777 "$d/sticky"
	echo theirs >"$d/sticky/theirs"
	chown "$U2:$U2" "$d/sticky/theirs"
	chmod 0666 "$d/sticky/theirs"
	# A setgid directory of a group U1 belongs to (not its primary one).
	chown "root:$G" "$d/sgid"
	chmod 2775 "$d/sgid"
	# U1's file in root's group: chmod g+s is silently dropped.
	echo x >"$d/work/rootgrp"
	chown "$U1:root" "$d/work/rootgrp"
	chmod 0644 "$d/work/rootgrp"
	# U1's setgid file in root's group: an ACL set by U1 drops the bit
	# (set with root's rights it would stay).
	echo x >"$d/work/sgidroot"
	chown "$U1:root" "$d/work/sgidroot"
	chmod 2755 "$d/work/sgidroot"
	setfacl -d -m u::rwx,g::rx,o::- "$d/acl"
	setfacl -d -m u::rwx,u:"$U2":rwx,g::rx,o::- "$d/aclnamed"
}
for u in 000 022 077; do
	prepare "$B/u$u"
	prepare "$R/u$u"
done

# A stream image is shared and indexed with the daemon's rights; opening
# it still needs the caller's own read access to the backing file.  On a
# mount without default_permissions the kernel checks nothing, so this is
# the daemon's own check.
make_image disk --size 1M --extents 4 --seed multiuser
mkdir -m 0755 "$T/streams"
for m in 0600 0644; do
	mkstream stream --layout "$T/disk.raw.layout.json" "$T/disk.raw" "$T/streams/s$m.data" >/dev/null
	chmod "$m" "$T/streams/s$m.data"
done
odxfs_mount "$T/streams" "$T/smnt" -o allow_other
chmod 0755 "$T/smnt"
cmp "$T/smnt/s0600.data" "$T/disk.raw" || fail "root reads a 0600 stream image"
as_user "$U1" cmp "$T/smnt/s0644.data" "$T/disk.raw" || fail "a user reads a 0644 stream image"
as_user "$U1" cat "$T/smnt/s0600.data" >/dev/null 2>"$T/err.txt" &&
	fail "a user opened root's 0600 stream image"
grep -q "Permission denied" "$T/err.txt" || fail "0600 stream image: $(cat "$T/err.txt")"
odxfs_umount "$T/smnt"

odxfs_mount "$B" "$M" -o allow_other,default_permissions

# ops ROOT UMASK: run as U1; one line per operation, "name: OK" or
# "name: ERRNO".
ops() {
	as_user "$U1" python3 - "$1" "$2" "$gidG" "$uid2" <<'PY'
import ctypes, errno, os, stat, struct, sys
root, um, gid_g, uid2 = sys.argv[1], int(sys.argv[2], 8), int(sys.argv[3]), int(sys.argv[4])
os.umask(um)
def op(name, f, *a):
    try:
        f(*a)
        print(f"{name}: OK")
    except OSError as e:
        print(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
def create(path, mode):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    os.write(fd, b"first\n")
    os.close(fd)
def write_again(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"second\n")
    os.close(fd)

w = f"{root}/work"
os.chdir(w)
op("create f666", create, "f666", 0o666)
op("write again f666", write_again, "f666")
op("create f777", create, "f777", 0o777)
op("write again f777", write_again, "f777")
op("create f2777", create, "f2777", 0o2777)
op("mkdir d777", os.mkdir, "d777", 0o777)
op("create d777/inner", create, "d777/inner", 0o666)
op("mkdir d700", os.mkdir, "d700", 0o700)
# Reading a directory needs read permission on it, not search (pjdfstest
# open/06.t): one that is readable only, one that is searchable only.
op("mkdir ronly", os.mkdir, "ronly", 0o755)
op("chmod ronly 0600", os.chmod, "ronly", 0o600)
op("list ronly", os.listdir, "ronly")
op("mkdir xonly", os.mkdir, "xonly", 0o755)
op("chmod xonly 0300", os.chmod, "xonly", 0o300)
op("list xonly", os.listdir, "xonly")
op("mkfifo fifo", os.mkfifo, "fifo", 0o666)
op("mknod regular", os.mknod, "mknod-reg", stat.S_IFREG | 0o666)
op("mknod char device", os.mknod, "chr", stat.S_IFCHR | 0o666, os.makedev(1, 3))
op("mknod block device", os.mknod, "blk", stat.S_IFBLK | 0o666, os.makedev(7, 0))
op("symlink", os.symlink, "f666", "sym")
op("hard link", os.link, "f666", "hard")
op("rename", os.rename, "f777", "renamed")
op("create gone", create, "gone", 0o644)
op("unlink own", os.unlink, "gone")
op("mkdir gonedir", os.mkdir, "gonedir", 0o755)
op("rmdir own", os.rmdir, "gonedir")
op("create cm", create, "cm", 0o600)
op("chmod own 0640", os.chmod, "cm", 0o640)
op("chown own to a group of mine", os.chown, "cm", -1, gid_g)
op("chown own to root's group", os.chown, "cm", -1, 0)
op("chown own to another user", os.chown, "cm", uid2, -1)
op("chmod 2755 of a file in root's group", os.chmod, "rootgrp", 0o2755)
op("setxattr user.*", os.setxattr, "cm", "user.odx", b"1")
op("setxattr trusted.*", os.setxattr, "cm", "trusted.odx", b"1")
# system.posix_acl_access (version 2; entries tag, perm, id): u::rwx,
# u:U2:r--, g::r-x, m::r-x, o::r-x.
ANY = 0xFFFFFFFF
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in (
    (0x01, 7, ANY), (0x02, 4, uid2), (0x04, 5, ANY), (0x10, 5, ANY), (0x20, 5, ANY)))
op("set an access ACL on a setgid file of root's group", os.setxattr, "sgidroot",
   "system.posix_acl_access", acl)

s = f"{root}/sticky"
op("sticky: create mine", create, f"{s}/mine", 0o666)
op("sticky: create kept", create, f"{s}/kept", 0o666)
op("sticky: unlink mine", os.unlink, f"{s}/mine")
op("sticky: unlink theirs", os.unlink, f"{s}/theirs")
op("sticky: rename theirs", os.rename, f"{s}/theirs", f"{s}/stolen")

g = f"{root}/sgid"
op("sgid: create file", create, f"{g}/file", 0o666)
op("sgid: create f2775", create, f"{g}/f2775", 0o2775)
op("sgid: mkdir sub", os.mkdir, f"{g}/sub", 0o777)
op("sgid: create sub/deep", create, f"{g}/sub/deep", 0o666)
op("sgid: mkfifo", os.mkfifo, f"{g}/fifo", 0o666)

for d in ("acl", "aclnamed"):
    a = f"{root}/{d}"
    op(f"{d}: create file", create, f"{a}/file", 0o666)
    op(f"{d}: create exe", create, f"{a}/exe", 0o777)
    op(f"{d}: mkdir dir", os.mkdir, f"{a}/dir", 0o777)
    op(f"{d}: create dir/inner", create, f"{a}/dir/inner", 0o666)
PY
}

# listing DIR: owner, group, mode and type of every name under DIR.
listing() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r n; do
		stat -c '%n %u %g %a %F' "$n"
	done)
}

# acls DIR: the ACL of every name under the ACL directories (numeric).
acls() {
	(cd "$1" && { find acl aclnamed -mindepth 1 ! -type l; echo work/sgidroot; } |
		LC_ALL=C sort | xargs -d '\n' getfacl -n -p)
}

bad=0
for u in 000 022 077; do
	ops "$R/u$u" "$u" >"$T/ops-ref-$u.txt" || fail "umask $u: the operations failed to run (reference)"
	ops "$M/u$u" "$u" >"$T/ops-mnt-$u.txt" || fail "umask $u: the operations failed to run (mount)"
	listing "$R/u$u" >"$T/ls-ref-$u.txt"
	listing "$M/u$u" >"$T/ls-mnt-$u.txt"
	listing "$B/u$u" >"$T/ls-back-$u.txt"
	acls "$R/u$u" >"$T/acl-ref-$u.txt"
	acls "$B/u$u" >"$T/acl-back-$u.txt"

	# The reference itself must show what an unprivileged user gets, or
	# the comparison proves nothing.
	rf=$T/ops-ref-$u.txt rl=$T/ls-ref-$u.txt
	grep -qx "mknod char device: EPERM" "$rf" && grep -qx "chown own to root's group: EPERM" "$rf" &&
		grep -qx "sticky: unlink theirs: EPERM" "$rf" && grep -qx "write again f666: OK" "$rf" &&
		grep -qx "list ronly: OK" "$rf" && grep -qx "list xonly: EACCES" "$rf" ||
		fail "umask $u: the reference does not look unprivileged: $(cat "$rf")"
	want=$(printf '%o' $((0666 & ~8#$u)))
	grep -qx "./work/f666 $uid1 $gid1 $want regular file" "$rl" ||
		fail "umask $u: reference f666 is not $uid1 $gid1 $want: $(grep f666 "$rl")"
	grep -qx "./sgid/sub $uid1 $gidG 2$(printf '%o' $((0777 & ~8#$u))) directory" "$rl" ||
		fail "umask $u: reference setgid subdirectory: $(grep sgid/sub "$rl")"
	grep -qx "./acl/file $uid1 $gid1 640 regular file" "$rl" ||
		fail "umask $u: reference file under a default ACL: $(grep acl/file "$rl")"
	grep -qx "./work/sgidroot $uid1 0 755 regular file" "$rl" ||
		fail "umask $u: reference setgid file after the user's ACL: $(grep sgidroot "$rl")"

	for what in ops:mnt ls:mnt ls:back acl:back; do
		k=${what%:*} side=${what#*:}
		if ! diff -u --label "reference (ext4, umask $u)" --label "$side (umask $u)" \
			"$T/$k-ref-$u.txt" "$T/$k-$side-$u.txt" >"$T/diff.txt"; then
			log "umask $u: $k differ, reference vs $side:"
			cat "$T/diff.txt" >&2
			bad=1
		fi
	done
done
[ $bad = 0 ] || fail "results in the mount differ from the same user's on ext4 (diffs above)"
daemon_alive "$M"
pass
