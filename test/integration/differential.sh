#!/bin/bash
# Differential test of the damage policy (odxfs-stream(5), "Damage"):
# thousands of mutated streams (bit flips, bytes set, truncations, frame
# headers copied over others, header fields, meta and trailer JSON edited,
# frames duplicated or moved), made from small none/lz4/zlib seeds (full,
# incremental, overlapping, 64K chunks, without trailer, torn), read through
# a strict mount and a -o salvage mount and compared block by block with
# mkstream.py's policy decoder (an independent reading of the manual page):
#   strict:  the open fails with EIO, or every read gives the reference's
#            bytes or EIO (EIO only where the reference has a damaged chunk,
#            and from then on on every read and open);
#   salvage: every block gives the reference's bytes, or EIO where the
#            reference has a BAD range (never bytes there);
#   both:    no errno but EIO, stat works, st_size is the virtual size,
#            SEEK_DATA/SEEK_HOLE give valid offsets (or ENXIO, EIO) and no
#            hole over non-zero bytes, no read takes longer than
#            ODXFS_DIFF_TIMEOUT seconds, the daemons never die.
# Where the page leaves a choice open the reference accepts every way of
# deciding it (test/tools/README.md, `mkstream.py salvage`).
#
# Environment: ODXFS_DIFF_COUNT mutated files (default 2000: 4000 file reads
# over both mounts), ODXFS_DIFF_SEED (default fixed: the same files every
# run; the seed is printed), ODXFS_DIFF_BATCH files per mount (300),
# ODXFS_DIFF_TIMEOUT seconds per file (10).  A failing file is kept in
# $T/failed with the reason, and $T is kept; one file is made again with
#   differential.py gen --seed SEED --first N --count 1 --out DIR
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3

count=${ODXFS_DIFF_COUNT:-2000}
seed=${ODXFS_DIFF_SEED:-odxfs-differential-1}
batch=${ODXFS_DIFF_BATCH:-300}
timeout=${ODXFS_DIFF_TIMEOUT:-10}
driver="python3 $here/differential.py"
log "seed '$seed', $count mutated files (+ the seeds), $batch per mount, ${timeout}s per file"

# Damaged streams are logged (one line a file): expected here.
expect_log '.'
failed=0
first=0
b=0
while [ "$first" -lt "$count" ]; do
	n=$((count - first < batch ? count - first : batch))
	d=$T/b$b
	$driver gen --seed "$seed" --first "$first" --count "$n" --out "$d/back" \
		--manifest "$d/manifest.jsonl" || fail "generating files $first..$((first + n - 1)) failed"
	# Every file against the reference decoder of that file alone: the
	# generated incrementals are not chain members (test/chain.sh is).
	odxfs_mount "$d/back" "$d/strict" -o chain=off
	odxfs_mount "$d/back" "$d/salvage" -o salvage,chain=off
	rc=0
	$driver check --seed "$seed" --manifest "$d/manifest.jsonl" --back "$d/back" \
		--strict "$d/strict" --salvage "$d/salvage" --keep "$T/failed" \
		--timeout "$timeout" --record "$T/record.jsonl" || rc=$?
	[ $rc = 0 ] || failed=$((failed + 1))
	daemon_alive "$d/strict"
	daemon_alive "$d/salvage"
	odxfs_umount "$d/strict"
	odxfs_umount "$d/salvage"
	for l in "$T"/odxfs-*.log; do
		! grep -Eq 'Sanitizer|runtime error' "$l" || fail "sanitizer report in $l"
	done
	rm -rf "$d/back"
	first=$((first + n))
	b=$((b + 1))
done
$driver report "$T/record.jsonl" >&2
[ "$failed" = 0 ] || fail "$failed of $b batches had failures (seed '$seed'; files and reasons in $T/failed)"
pass
