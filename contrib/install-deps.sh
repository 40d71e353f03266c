#!/bin/sh
# Install what odxfs needs to build, test and demo on Debian 12, if missing.
# Used by the README's two commands and by CI.  Needs root (apt-get).
# clang-14, libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) and
# llvm-14 (llvm-symbolizer, for readable reports) are for fuzz/.
# libvirt, QEMU and virtnbdbackup are for the real-backup tests
# (test/integration/vm-lib.sh): their Depends are enough (SeaBIOS and the
# iPXE ROMs come with qemu-system-x86; no libvirt-daemon-system, no dnsmasq,
# no OVMF: vm-lib.sh makes the libvirt-qemu user and qemu.conf itself).
set -eu
PKGS="gcc pkg-config meson ninja-build libfuse3-dev fuse3 libcjson-dev zlib1g-dev libdeflate-dev libxxhash-dev
liblz4-dev check python3 python3-lz4 xfsprogs qemu-utils fio e2fsprogs util-linux
attr acl passwd groff-base mandoc systemd coreutils strace
clang-14 libclang-rt-14-dev llvm-14
libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 virtnbdbackup"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "odxfs: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi
echo "odxfs: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
