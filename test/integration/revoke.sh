#!/bin/bash
# Every modification revokes: a token on a raw source is invalidated by
# each way of changing the range it stands for through the mount, and by
# none that leaves the range alone.  Paths: write(2), pwrite through mmap,
# ftruncate, truncate(2) by path (setattr without a handle), open(O_TRUNC),
# fallocate (punch, zero range; FUSE passes no other mode that changes data), copy_file_range into the source
# (offloaded) and the offload-write ioctl into it.  The token must then be
# refused with the "invalidated" error; a token on a range the change did
# not touch still works.
. "$(dirname "$0")/lib.sh"
. "$here/copy-lib.sh"
require_fuse
require_odxctl
require_cmd python3 xfs_io

B=$T/back
M=$T/mnt
mkdir -p "$B"
head -c 2M /dev/urandom >"$T/data"
odxfs_mount "$B" "$M" -o token_ttl=60000

# fresh: the source anew, as 2 MiB of data, written outside the mount.
fresh() { cp "$T/data" "$B/src.raw"; }
# token OFF LEN: a token for that range of the source.
token() { "$ODXCTL" offload-read "$M/src.raw" "$1" "$2" | token_of; }

# One row per path: the command that changes [64K, 128K) or a superset.
declare -A change=(
	[write]='dd if=/dev/zero of="$M/src.raw" bs=64K seek=1 count=1 conv=notrunc status=none'
	[mmap]='xfs_io -c "mmap -w 64k 64k" -c "mwrite 64k 4k" -c "msync -s 64k 4k" "$M/src.raw"'
	[ftruncate]='xfs_io -c "truncate 100k" "$M/src.raw"'
	[truncate-path]='python3 -c "import os, sys; os.truncate(sys.argv[1], 100 * 1024)" "$M/src.raw"'
	[o_trunc]=': >"$M/src.raw"'
	[punch]='xfs_io -c "fpunch 64k 64k" "$M/src.raw"'
	[zero]='xfs_io -c "fzero 64k 64k" "$M/src.raw"'
	[copy_range]='xfs_io -c "copy_range -s 0 -d 64k -l 64k $M/other.raw" "$M/src.raw"'
	[offload_write]='offload_into_source'
)
offload_into_source() {
	local t
	t=$("$ODXCTL" offload-read "$M/other.raw" 0 64K | token_of)
	"$ODXCTL" offload-write "$M/src.raw" 64K 64K "$t" >/dev/null
}
head -c 1M /dev/urandom >"$B/other.raw"
for path in "${!change[@]}"; do
	fresh
	tok=$(token 64K 64K)
	[ -n "$tok" ] || fail "$path: no token"
	eval "${change[$path]}" || fail "$path: the change itself failed"
	odxctl_fails 'invalidated' offload-write "$M/dst-$path.raw" 0 64K "$tok"
	log "$path: token revoked"
done

# A change elsewhere leaves the token alone, for each kind of change that
# has a range (truncation cuts everything past the new size, so its
# control is a token below it).
declare -A elsewhere=(
	[write]='dd if=/dev/zero of="$M/src.raw" bs=64K seek=20 count=1 conv=notrunc status=none'
	[punch]='xfs_io -c "fpunch 1280k 64k" "$M/src.raw"'
	[ftruncate]='xfs_io -c "truncate 1536k" "$M/src.raw"'
	[truncate-path]='python3 -c "import os, sys; os.truncate(sys.argv[1], 1536 * 1024)" "$M/src.raw"'
)
for path in "${!elsewhere[@]}"; do
	fresh
	tok=$(token 64K 64K)
	eval "${elsewhere[$path]}" || fail "$path elsewhere: the change itself failed"
	"$ODXCTL" offload-write "$M/keep-$path.raw" 0 64K "$tok" >/dev/null ||
		fail "$path outside the token's range revoked it"
	cmp -n 65536 "$M/keep-$path.raw" <(tail -c +65537 "$T/data") || fail "$path: wrong bytes"
done
pass
