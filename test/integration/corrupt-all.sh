#!/bin/bash
# Every damaged stream in the generator's corruption catalogue, made from
# an uncompressed, an lz4 and a zlib stream, served side by side, under
# both damage policies (strict, the default, and -o salvage): every open
# and read either succeeds or fails with EIO, SEEK_DATA/SEEK_HOLE answer,
# the daemon survives them all and unmounts cleanly (under the sanitizer
# build, any memory error fails the run), and odxctl never crashes on them.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd python3

make_image disk --size 8M --extents 9 --seed corrupt-all
L=$T/disk.raw.layout.json
mkdir -p "$T/back"
for c in none lz4 zlib; do
	mkstream stream --compress $c --chunk-size 1M --layout "$L" "$T/disk.raw" "$T/base.$c" >/dev/null
done
whats=$(mkstream corruptions | python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)))')
n=0
for c in none lz4 zlib; do
	for w in $whats; do
		mkstream corrupt "$T/base.$c" "$T/back/$w.$c" --what "$w" >/dev/null 2>&1 && n=$((n + 1))
	done
done
[ "$n" -ge 60 ] || fail "only $n damaged streams made"
# Damage is logged (warnings and errors naming the file): expected here.
expect_log '.'
# reads.py MOUNT: opens, reads and seeks of every file.
cat >"$T/reads.py" <<'PY'
import errno, os, random, sys
random.seed(7)
for name in sorted(os.listdir(sys.argv[1])):
    path = os.path.join(sys.argv[1], name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit(f"{name}: open: {e}")
        continue
    size = os.fstat(fd).st_size
    reads = [(0, 1 << 20)] + [(random.randrange(max(size, 1)), random.randint(1, 300000)) for _ in range(30)]
    for off, n in reads:
        try:
            os.pread(fd, n, off)
        except OSError as e:
            if e.errno != errno.EIO:
                sys.exit(f"{name}: read at {off}: {e}")
    off = 0
    try:
        while off < size:
            off = os.lseek(fd, off, os.SEEK_DATA)
            off = os.lseek(fd, off, os.SEEK_HOLE)
    except OSError as e:
        if e.errno not in (errno.ENXIO, errno.EIO):
            sys.exit(f"{name}: seek: {e}")
    os.close(fd)
PY
for policy in strict salvage; do
	mnt=$T/mnt-$policy
	if [ $policy = salvage ]; then
		odxfs_mount "$T/back" "$mnt" -o salvage
	else
		odxfs_mount "$T/back" "$mnt"
	fi
	python3 "$T/reads.py" "$mnt" || fail "$policy: an open or read failed with something other than EIO"
	daemon_alive "$mnt"
	odxfs_umount "$mnt"
done
if [ -n "${ODXCTL:-}" ]; then
	for f in "$T"/back/*; do
		for cmd in info check "map --json"; do
			rc=0
			# shellcheck disable=SC2086
			"$ODXCTL" $cmd "$f" >/dev/null 2>&1 || rc=$?
			[ $rc -le 3 ] || fail "odxctl $cmd $(basename "$f") exited $rc"
		done
		rc=0
		"$ODXCTL" repair "$f" -o "$T/repaired" >/dev/null 2>&1 || rc=$?
		[ $rc -le 3 ] || fail "odxctl repair $(basename "$f") exited $rc"
	done
fi
pass
