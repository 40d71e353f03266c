#!/bin/bash
# Build the libFuzzer targets: fuzz/build.sh [BUILDDIR]  (default build-fuzz)
#
# A meson build of its own: clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (every report fatal), every library compiled
# with -fsanitize=fuzzer-no-link so libFuzzer sees their coverage, and
# -Dfuzz=true for fuzz/meson.build.  Only the fuzz targets and mkseeds are
# built; the daemon, odxctl and the tests are not.  Prints nothing but
# errors; exit status 0 when the targets are built.
#
# FUZZ_CC picks the compiler (default: clang, else clang-14; CC is not
# looked at, so a CC=gcc in the environment does not break it).  Debian 12:
# apt-get install clang-14 libclang-rt-14-dev (contrib/install-deps.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-build-fuzz}
case "$builddir" in /*) ;; *) builddir=$top/$builddir ;; esac
cd "$top"
CC=${FUZZ_CC:-$(command -v clang || command -v clang-14 || true)}
[ -n "$CC" ] || { echo "fuzz/build.sh: clang not found (apt-get install clang-14)" >&2; exit 1; }
export CC
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ ! -f "$builddir/build.ninja" ]; then
	meson setup "$builddir" -Dfuzz=true -Dtests=false -Dintegration_tests=false \
		-Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
fi
ninja -C "$builddir" fuzz/fuzz-stream fuzz/fuzz-meta fuzz/fuzz-trailer fuzz/fuzz-codec \
	fuzz/fuzz-token fuzz/mkseeds >"$log" 2>&1 || { grep -v '^\[' "$log" >&2; exit 1; }
