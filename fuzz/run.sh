#!/bin/bash
# Fuzz each target for a short fixed time, then replay fuzz/regressions/.
#
#   fuzz/run.sh [--time SECONDS] [--builddir DIR]
#
# Builds with fuzz/build.sh (DIR, default build-fuzz), then runs every
# fuzz-<target> for SECONDS (default 20) on a copy of fuzz/corpus/<target>
# (new inputs land in the copy, never in fuzz/corpus) and prints, per
# target, the executions, coverage (libFuzzer's cov: and ft:) and crashes.
# Then every file fuzz/regressions/<target>-<name> is run once through its
# target: none may crash.
#
# The run's files are in DIR/fuzz-run/ (replaced by the next run): a
# crash, leak, timeout or out-of-memory leaves a reproducer there, whose
# path is printed with the command that replays it.
#
# Exit status: 0 clean; 1 a target crashed, leaked, timed out, ran out of
# memory, or a regression file failed; 77 (meson's SKIP) when clang's
# libFuzzer is missing, unless ODXFS_TEST_REQUIRE_ALL=1 (CI), which makes
# that a failure.  The 'fuzz' test of a sanitized build runs this script.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=20
builddir=build-fuzz
while [ $# -gt 0 ]; do
	case "$1" in
	--time) secs=$2; shift ;;
	--builddir) builddir=$2; shift ;;
	*) echo "usage: $0 [--time SECONDS] [--builddir DIR]" >&2; exit 2 ;;
	esac
	shift
done
case "$builddir" in /*) ;; *) builddir=$top/$builddir ;; esac

# target:max_len:dictionary
targets="stream:16384:odx.dict meta:4096:odx.dict trailer:1024:odx.dict codec:16384: token:1100:"

skip() {
	echo "fuzz: $*"
	if [ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ]; then
		echo "fuzz: FAIL: prerequisite missing (ODXFS_TEST_REQUIRE_ALL=1)"
		exit 1
	fi
	exit 77
}
cc=${FUZZ_CC:-$(command -v clang || command -v clang-14 || true)}
[ -n "$cc" ] || skip "clang not found (Debian: clang-14 libclang-rt-14-dev)"
probe=$(mktemp -d)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' >"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" 2>/dev/null; then
	rm -rf "$probe"
	skip "$cc cannot link -fsanitize=fuzzer (Debian: libclang-rt-14-dev)"
fi
rm -rf "$probe"

FUZZ_CC=$cc "$top/fuzz/build.sh" "$builddir" || { echo "fuzz: FAIL: build failed"; exit 1; }

# Every report is fatal; libFuzzer turns it into a reproducer.
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for s in llvm-symbolizer /usr/lib/llvm-14/bin/llvm-symbolizer; do
	s=$(command -v "$s") && { export ASAN_SYMBOLIZER_PATH=$s; break; }
done

run=$builddir/fuzz-run
rm -rf "$run"
mkdir -p "$run"
failed=0
for spec in $targets; do
	IFS=: read -r t maxlen dict <<<"$spec"
	bin=$builddir/fuzz/fuzz-$t
	cp -r "$top/fuzz/corpus/$t" "$run/corpus-$t"
	args=(-max_total_time="$secs" -max_len="$maxlen" -rss_limit_mb=2048 -timeout=10
		-print_final_stats=1 -artifact_prefix="$run/$t-")
	[ -n "$dict" ] && args+=(-dict="$top/fuzz/$dict")
	"$bin" "${args[@]}" "$run/corpus-$t" >"$run/$t.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/$t.log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$run/$t.log" | tail -1 | cut -d' ' -f2)
	ft=$(grep -o 'ft: [0-9]*' "$run/$t.log" | tail -1 | cut -d' ' -f2)
	repro=$(find "$run" -maxdepth 1 -name "$t-*" -type f ! -name "$t-slow-unit-*" | head -1)
	crashes=$(find "$run" -maxdepth 1 -name "$t-*" -type f ! -name "$t-slow-unit-*" | wc -l)
	printf 'fuzz-%-8s %10s executions  cov %6s  ft %6s  %s crashes  (%s s)\n' \
		"$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes" "$secs"
	if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
		failed=1
		echo "fuzz-$t: FAIL (exit status $rc):"
		grep -E '^(SUMMARY|==[0-9]+==ERROR)|runtime error|contract broken|fuzz-[a-z]+: ' \
			"$run/$t.log" | head -5 | sed 's/^/    /'
		echo "    log: $run/$t.log"
		if [ -n "$repro" ]; then
			echo "    reproducer: $repro"
			echo "    replay: $bin $repro"
		fi
	fi
done

# Inputs that once crashed a target: each must now run clean.
nreg=0
for f in "$top"/fuzz/regressions/*; do
	[ -f "$f" ] || continue
	t=$(basename "$f")
	t=${t%%-*}
	bin=$builddir/fuzz/fuzz-$t
	nreg=$((nreg + 1))
	if [ ! -x "$bin" ]; then
		echo "regression $f: FAIL: no target fuzz-$t"
		failed=1
		continue
	fi
	log=$run/regression-$(basename "$f").log
	if ! "$bin" -rss_limit_mb=2048 -timeout=10 "$f" >"$log" 2>&1; then
		failed=1
		echo "regression $f: FAIL:"
		grep -E '^(SUMMARY|==[0-9]+==ERROR)|runtime error|contract broken|fuzz-[a-z]+: ' \
			"$log" | head -5 | sed 's/^/    /'
		echo "    log: $log"
		echo "    replay: $bin $f"
	fi
done
echo "fuzz: $nreg regression inputs replayed"
[ "$failed" = 0 ] && echo "fuzz: no crash, leak, timeout or out-of-memory"
exit "$failed"
