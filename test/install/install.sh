#!/bin/bash
# meson install into a DESTDIR puts every piece where it belongs, and the
# example systemd units pass systemd-analyze verify.
#   install.sh BUILDDIR SOURCEDIR
set -uo pipefail
build=$1 src=$2
dest=$(mktemp -d /tmp/odxfs-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
fails=0
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
if ! meson install -C "$build" --no-rebuild --destdir "$dest" >"$dest/log" 2>&1; then
	cat "$dest/log"
	exit 1
fi
prefix=$(meson introspect "$build" --buildoptions | python3 -c "import json,sys;print([o['value'] for o in json.load(sys.stdin) if o['name']=='prefix'][0])")
root=$dest$prefix
for f in bin/odxfs bin/odxctl include/odxfs/stream.h include/odxfs/extmap.h \
	include/odxfs/error.h include/odxfs/offload.h include/odxfs/token.h include/odxfs/ioctl.h \
	share/man/man8/odxfs.8 share/man/man1/odxctl.1 share/man/man5/odxfs-stream.5 \
	share/doc/odxfs/examples/systemd/mnt-backups.mount \
	share/doc/odxfs/examples/systemd/mnt-backups.automount; do
	[ -e "$root/$f" ] && echo "ok - $f" || fail "$f not installed"
done
for b in odxfs odxctl; do
	[ -x "$root/bin/$b" ] && "$root/bin/$b" --version >/dev/null || fail "$b not executable or --version fails"
done
# installed headers compile on their own, without FUSE
for h in "$root"/include/odxfs/*.h; do
	echo "#include <odxfs/$(basename "$h")>" | cc -std=gnu11 -fsyntax-only -I"$root/include" -x c - ||
		fail "$(basename "$h") does not compile alone"
done
if command -v systemd-analyze >/dev/null; then
	units=$(mktemp -d)
	cp "$src"/contrib/systemd/* "$units"/
	if (cd "$units" && systemd-analyze verify --man=no ./*.mount ./*.automount); then
		echo "ok - systemd-analyze verify"
	else
		fail "systemd-analyze verify"
	fi
	rm -rf "$units"
elif [ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ]; then
	fail "systemd-analyze missing"
fi
echo "install test: $fails failed"
[ "$fails" = 0 ]
