#!/bin/bash
# `mount -t fuse.odxfs`, `umount` and an /etc/fstab line, after a real
# `meson setup --prefix=/usr && meson install`, with the reduced PATH that
# mount(8) and systemd give their helpers.  It installs into the system, so
# it runs only when ODXFS_TEST_SYSTEM_INSTALL=1 (CI sets it; a fresh CI
# machine is thrown away afterwards).
#   mount.sh SOURCEDIR
set -uo pipefail
src=$1
if [ "${ODXFS_TEST_SYSTEM_INSTALL:-0}" != 1 ] || [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
	echo "skipped: needs root, /dev/fuse and ODXFS_TEST_SYSTEM_INSTALL=1 (installs into /usr)"
	[ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ] && [ "${ODXFS_TEST_SYSTEM_INSTALL:-0}" = 1 ] && exit 1
	exit 77
fi
work=$(mktemp -d /tmp/odxfs-mount.XXXXXX)
mnt=$work/mnt
cleanup() {
	umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
ok() { echo "ok - $*"; }

build=$work/build
if ! { meson setup "$build" "$src" --prefix=/usr -Dtests=false && ninja -C "$build" &&
	meson install -C "$build" --no-rebuild; } >"$work/build.log" 2>&1; then
	tail -30 "$work/build.log"
	exit 1
fi
[ -x /usr/bin/odxfs ] && ok "installed /usr/bin/odxfs" || fail "/usr/bin/odxfs missing"
[ -f /usr/share/man/man8/odxfs.8 ] && ok "installed odxfs(8)" || fail "odxfs(8) missing"

mkdir -p "$work/back" "$mnt"
echo "plain file" >"$work/back/plain.txt"
python3 "$src/test/tools/mkstream.py" image "$work/disk.raw" --size 8M --extents 20 --seed mnt >/dev/null &&
	python3 "$src/test/tools/mkstream.py" stream "$work/disk.raw" "$work/back/sda.full.data" \
		--layout "$work/disk.raw.layout.json" --compress lz4 >/dev/null || fail "mkstream"

# mount(8) runs helpers with its own PATH: give it the minimal one.
MPATH=/usr/sbin:/usr/bin:/sbin:/bin
opts=ro,noatime,nodev,nosuid,_netdev,nofail,x-systemd.device-timeout=10,allow_other
if env -i PATH=$MPATH mount -t fuse.odxfs "$work/back" "$mnt" -o "$opts"; then
	ok "mount -t fuse.odxfs -o $opts"
	grep -q " $mnt fuse.odxfs " /proc/self/mounts && ok "listed as fuse.odxfs" ||
		fail "not listed in /proc/self/mounts: $(grep "$mnt" /proc/self/mounts)"
	cmp -s "$work/disk.raw" "$mnt/sda.full.data" && ok "stream served as its raw image" ||
		fail "mounted image differs"
	[ "$(cat "$mnt/plain.txt")" = "plain file" ] && ok "plain file passes through" || fail "plain file"
	touch "$mnt/new" 2>/dev/null && fail "ro mount accepted a write" || ok "ro honoured"
	env -i PATH=$MPATH umount "$mnt" && ok "umount" || fail "umount"
	grep -q " $mnt " /proc/self/mounts && fail "still mounted after umount"
else
	fail "mount -t fuse.odxfs failed"
fi

# An fstab line, mounted by its mount point alone (mount -T uses our file).
printf '%s %s fuse.odxfs defaults,noatime,nofail,allow_other 0 0\n' "$work/back" "$mnt" >"$work/fstab"
if env -i PATH=$MPATH mount -T "$work/fstab" "$mnt"; then
	ok "mount by fstab line"
	cmp -s "$work/disk.raw" "$mnt/sda.full.data" && ok "fstab mount serves the image" || fail "fstab image"
	env -i PATH=$MPATH umount "$mnt" || fail "umount after fstab mount"
else
	fail "fstab mount"
fi

# start-up errors reach mount(8) before the daemon detaches
if env -i PATH=$MPATH mount -t fuse.odxfs "$work/nonexistent" "$mnt" 2>"$work/err"; then
	fail "mount of a missing backing directory succeeded"
	umount "$mnt"
else
	grep -q "nonexistent" "$work/err" && ok "missing backing directory reported: $(head -1 "$work/err")" ||
		fail "error does not name the path: $(cat "$work/err")"
fi
echo "mount test: $fails failed"
[ "$fails" = 0 ]
