#!/bin/bash
# cp inside the mount, as GNU cp really behaves (REFERENCE.md section 3):
#   - a file without holes: one copy_file_range for the whole file, so the
#     copy is offloaded (tokens issued, bytes copied in the kernel);
#   - a file with holes (a stream image, a sparse raw file): cp 9.1 walks
#     SEEK_DATA/SEEK_HOLE and copies the data with read/write, keeping the
#     holes itself; later versions call copy_file_range per segment.  The
#     bytes and holes must be right whichever path cp takes;
#   - cp --sparse=never: copy_file_range per data segment (offloaded),
#     zeros written for the holes;
#   - -o blocks=full: st_blocks at least the size, so cp (9.1 as well as
#     later) calls copy_file_range on the whole of a sparse image too: the
#     copy is offloaded, sparse and byte-exact; SEEK_DATA/SEEK_HOLE (xfs_io,
#     qemu-img map) answer as without the option, only du sees full files;
#     without the option st_blocks counts the data;
#   - -o offload=off: every copy_file_range is declined with EOPNOTSUPP and
#     the kernel copies through FUSE read/write; nothing is offloaded and
#     the bytes are the same.
. "$(dirname "$0")/lib.sh"
. "$here/copy-lib.sh"
require_fuse
require_odxctl
require_cmd python3 xfs_io cp qemu-img du
# strace (optional) shows which calls cp made.
have_strace=false
command -v strace >/dev/null 2>&1 && have_strace=true

B=$T/back
M=$T/mnt
mkdir -p "$B"
make_image disk --size 32M --extents 200 --seed cp
L=$T/disk.raw.layout.json
SIZE=$(stat -c %s "$T/disk.raw")
mkstream stream --compress none --layout "$L" "$T/disk.raw" "$B/disk.data" >/dev/null
mkstream stream --compress lz4 --layout "$L" "$T/disk.raw" "$B/disk-lz4.data" >/dev/null
DATA=$(layout_data_bytes "$L")
head -c 24M /dev/urandom >"$B/dense.bin"
mkstream image --size 32M --extents 200 --seed cp --sparse "$B/sparse.raw" >/dev/null

odxfs_mount "$B" "$M"
blk=$(backing_block "$B")

# Dense: offloaded, one call.
i0=$(stat_of "$M" tokensIssued)
k0=$(stat_of "$M" bytesKernel)
if $have_strace; then
	strace -f -o "$T/cp.strace" -e trace=copy_file_range cp "$M/dense.bin" "$M/dense.copy" ||
		fail "cp dense.bin"
	grep -q '^[0-9]* *copy_file_range(.*) = 25165824$' "$T/cp.strace" ||
		fail "cp did not copy dense.bin with one copy_file_range: $(cat "$T/cp.strace")"
else
	cp "$M/dense.bin" "$M/dense.copy" || fail "cp dense.bin"
fi
same_bytes "$M/dense.copy" "$B/dense.bin"
same_bytes "$B/dense.copy" "$B/dense.bin"
[ "$(stat_of "$M" tokensIssued)" -gt "$i0" ] || fail "cp of a dense file issued no token"
[ $(( $(stat_of "$M" bytesKernel) - k0 )) = 25165824 ] ||
	fail "cp of a dense file: not all 24 MiB copied in the kernel"

# Sparse sources, cp's default: bytes and holes right, whatever path.
for src in disk.data sparse.raw; do
	cp "$M/$src" "$M/$src.cp" || fail "cp $src"
	check_copy "$M/$src.cp" "$B/$src.cp" "$T/disk.raw" "$L" "$SIZE"
	if $have_strace &&
		grep -q copy_file_range <(strace -f -e trace=copy_file_range cp "$M/$src" "$M/$src.cp2" 2>&1); then
		log "cp uses copy_file_range per segment (GNU cp 9.2 or later)"
		check_copy "$M/$src.cp2" "$B/$src.cp2" "$T/disk.raw" "$L" "$SIZE"
	fi
done

# --sparse=never: copy_file_range for each data segment, zeros for holes.
i0=$(stat_of "$M" tokensIssued)
cp --sparse=never "$M/disk.data" "$M/never.raw" || fail "cp --sparse=never"
same_bytes "$M/never.raw" "$T/disk.raw"
same_bytes "$B/never.raw" "$T/disk.raw"
[ "$(stat_of "$M" tokensIssued)" -gt "$i0" ] ||
	fail "cp --sparse=never issued no token (no copy_file_range reached the daemon)"

# cp onto an existing file truncates it first: the copy's result only.
head -c 40M /dev/urandom >"$M/over.raw"
cp --sparse=never "$M/disk.data" "$M/over.raw" || fail "cp over an existing file"
same_bytes "$B/over.raw" "$T/disk.raw"

# cp into a stream image: it cannot be opened for writing.
cp "$M/dense.bin" "$M/disk.data" 2>"$T/err.txt" && fail "cp into a stream image succeeded"
grep -q 'Read-only file system' "$T/err.txt" || fail "cp into a stream: $(cat "$T/err.txt")"

# Default st_blocks: the image's data, as du should say.
for src in disk.data disk-lz4.data; do
	[ $(( $(stat -c %b "$M/$src") * 512 )) = "$DATA" ] ||
		fail "$src: st_blocks $(stat -c %b "$M/$src"), expected the data's $DATA bytes"
	xfs_io -r -c "seek -a -r 0" "$M/$src" >"$T/seek-data-$src.txt" || fail "xfs_io seek $src"
done
qemu-img map --output=json -f raw "$M/disk-lz4.data" >"$T/map-data.json" || fail "qemu-img map"
odxfs_umount "$M"

# -o blocks=full: plain cp offloads sparse images whole.
odxfs_mount "$B" "$M" -o blocks=full
for src in disk.data disk-lz4.data sparse.raw; do
	[ "$(stat -c %b "$M/$src")" -ge $((SIZE / 512)) ] ||
		fail "blocks=full: $src has st_blocks $(stat -c %b "$M/$src") below its size"
	rm -f "$M/$src.full"
	i0=$(stat_of "$M" tokensIssued)
	if $have_strace; then
		strace -f -o "$T/full.strace" -e trace=copy_file_range,read cp "$M/$src" "$M/$src.full" ||
			fail "blocks=full: cp $src"
		grep -q "^[0-9]* *copy_file_range(.*) = $SIZE\$" "$T/full.strace" ||
			fail "blocks=full: cp did not copy $src with one copy_file_range: $(grep -v 'read(.*= [0-9]\{1,4\}$' "$T/full.strace" | head)"
		! grep -q 'read(.*) = [0-9]\{5,\}$' "$T/full.strace" ||
			fail "blocks=full: cp read the data of $src itself"
	else
		cp "$M/$src" "$M/$src.full" || fail "blocks=full: cp $src"
	fi
	[ "$(stat_of "$M" tokensIssued)" -gt "$i0" ] || fail "blocks=full: cp of $src was not offloaded"
	check_copy "$M/$src.full" "$B/$src.full" "$T/disk.raw" "$L" "$SIZE"
done
for src in disk.data disk-lz4.data; do
	xfs_io -r -c "seek -a -r 0" "$M/$src" >"$T/seek-full.txt" || fail "xfs_io seek $src"
	cmp -s "$T/seek-full.txt" "$T/seek-data-$src.txt" ||
		fail "blocks=full changed SEEK_DATA/SEEK_HOLE of $src"
done
qemu-img map --output=json -f raw "$M/disk-lz4.data" >"$T/map-full.json" || fail "qemu-img map"
cmp -s "$T/map-full.json" "$T/map-data.json" || fail "blocks=full changed qemu-img map"
[ "$(du -B1 "$M/disk.data" | cut -f1)" -ge "$SIZE" ] || fail "blocks=full: du below the size"
# Out of the mount cp sees a full file and would write the holes out; the
# documented way to keep them is --sparse=always.
cp --sparse=always "$M/disk-lz4.data" "$T/out.raw" || fail "cp --sparse=always out of the mount"
same_bytes "$T/out.raw" "$T/disk.raw"
[ $(( $(stat -c %b "$T/out.raw") * 512 )) -le $((DATA + DATA / 100 + 262144)) ] ||
	fail "cp --sparse=always out of a blocks=full mount did not keep the holes"
odxfs_umount "$M"

# offload=off: declined, the kernel copies; no token, same bytes.
odxfs_mount "$B" "$M" -o offload=off
cp "$M/dense.bin" "$M/off.copy" || fail "cp with offload=off"
same_bytes "$B/off.copy" "$B/dense.bin"
xfs_io -f -c "copy_range -s 4097 -d 0 -l 1000000 $M/disk.data" "$M/off2.raw" ||
	fail "xfs_io copy_range with offload=off"
cmp -n 1000000 "$B/off2.raw" <(tail -c +4098 "$T/disk.raw") || fail "offload=off: copy_range bytes"
[ "$(stat_of "$M" tokensIssued)" = 0 ] || fail "offload=off still issued tokens"
[ "$(stat_of "$M" bytesKernel)" = 0 ] || fail "offload=off still offloaded"
pass
