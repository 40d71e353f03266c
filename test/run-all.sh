#!/bin/bash
# Build odxfs (if needed) and run the whole test suite: unit tests (Check)
# and the integration tests that really mount FUSE (root and /dev/fuse).
#
#   test/run-all.sh [--sanitize | --tsan] [--builddir DIR]
#
# --sanitize builds in build-asan with AddressSanitizer and
# UndefinedBehaviorSanitizer.  --tsan builds in build-tsan with
# ThreadSanitizer and runs only what is about threads: the offload unit
# tests (test-offload-stress among them), the daemon's token-stress
# integration test and chain (the unit test of the merged map, and views of
# one chain built and read by many requests at once) and merge (streams
# written by offloaded copies while views are read); a report stops the process with exit status 66
# (TSAN_OPTIONS), and a daemon's report lands in its log, which fails the
# test.  Ends with one line "N passed, M failed".
# Exit status 0 only when nothing failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
builddir=build
sanitize=0
tsan=0
while [ $# -gt 0 ]; do
	case "$1" in
	--sanitize) sanitize=1; builddir=build-asan ;;
	--tsan) tsan=1; builddir=build-tsan ;;
	--builddir) builddir=$2; shift ;;
	*) echo "usage: $0 [--sanitize | --tsan] [--builddir DIR]" >&2; exit 2 ;;
	esac
	shift
done
if [ "$sanitize" = 1 ] && [ "$tsan" = 1 ]; then
	echo "$0: --sanitize and --tsan need separate builds: run them one after the other" >&2
	exit 2
fi
contrib/install-deps.sh
opts=(-Dwerror=true)
mult=1
if [ "$sanitize" = 1 ]; then
	opts+=(-Db_sanitize=address,undefined -Db_lundef=false)
	mult=4
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
tests=()
if [ "$tsan" = 1 ]; then
	opts+=(-Db_sanitize=thread -Db_lundef=false)
	mult=4
	# Reports go to stderr (never log_path): a daemon's stderr is its log.
	export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66:second_deadlock_stack=1}
	tests=(token offload copy offload-stress token-stress chain merge)
fi
if [ ! -f "$builddir/build.ninja" ]; then
	meson setup "$builddir" "${opts[@]}" >/dev/null
fi
ninja -C "$builddir" >/dev/null
rc=0
meson test -C "$builddir" --print-errorlogs --timeout-multiplier "$mult" "${tests[@]}" || rc=$?
python3 - "$builddir/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $rc
