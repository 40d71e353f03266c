#!/bin/bash
# Fair use of the token table: per-user caps and the longest time to live.
#
# A multi-user mount (-o allow_other,default_permissions) with
# max_tokens_per_user=3 and token_memory_per_user=4K.  An unprivileged user
# (odxfs-tok) issues offload reads with a long time to live until the cap
# refuses with EMFILE ("too many outstanding offload tokens for this
# user"); root, another owner, still gets tokens; after the user releases
# one it gets one again; the user's copy_file_range at its cap is declined
# (the kernel copies: same bytes); a token record larger than the user's
# memory cap gives EDQUOT.  Through the ioctl, a released token gives
# ENOKEY, an expired one EKEYEXPIRED, another mount's EKEYREJECTED.
# max_token_ttl cuts the time to live asked for (and the default), and the
# new options' bad values are refused before mounting.
. "$(dirname "$0")/lib.sh"
require_fuse
require_root
require_cmd python3
U=odxfs-tok
make_user "$U"
odx_ioctl_setup

B=$T/back
M=$T/mnt
mkdir -p "$B" "$T/back2"
chmod 0755 "$B"
head -c 1M /dev/urandom >"$B/src.raw"
# 200 data blocks between holes: a token record of 200 extents (8 KiB),
# more than token_memory_per_user=4K.
python3 - "$B/frag.raw" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
for i in range(200):
    os.pwrite(fd, os.urandom(4096), i * 8192)
os.ftruncate(fd, 200 * 8192)
PY
chmod 0644 "$B/src.raw" "$B/frag.raw"
mkdir "$B/u" "$T/back2/u"
chown "$U:" "$B/u" "$T/back2/u"
echo other >"$T/back2/x.raw"
chmod 0755 "$T/back2"
chmod 0644 "$T/back2/x.raw"

# Bad values, refused before mounting, naming the option and the value.
for o in max_tokens_per_user=0 max_tokens_per_user=x token_memory_per_user=1K \
	max_token_ttl=0 max_token_ttl=25h token_ttl=2h token_ttl=20s,max_token_ttl=10s; do
	name=${o%%=*} val=${o#*=} val=${val%%,*}
	rc=0
	"$ODXFS" -f -o "$o" "$B" "$M" 2>"$T/err.txt" || rc=$?
	[ "$rc" = 1 ] && grep -q "bad value for -o $name: '$val'" "$T/err.txt" ||
		fail "odxfs -o $o: exit $rc, $(cat "$T/err.txt")"
done

odxfs_mount "$B" "$M" -o allow_other,default_permissions,max_tokens_per_user=3,token_memory_per_user=4K
odxfs_mount "$T/back2" "$T/mnt2" -o allow_other,default_permissions

# tok OP...: odx_ioctl operations in one Python process, as the user or
# root (tok_as USER ...).  Each prints OK or the errno name:
#   read FILE TTL          keep the token (in $T/NAME.tok with "save NAME")
#   save NAME              the last token read, to $T/NAME.tok
#   write FILE NAME        offload write of token NAME, 4 KiB at 0
#   release FILE NAME      (on a descriptor open for reading)
#   cfr SRC DST            copy_file_range of the whole file, then compare
tok_py=$T/py/tok.py
cat >"$tok_py" <<'PY'
import errno, os, sys
import odx_ioctl as ox
tdir, ops = sys.argv[1], sys.argv[2:]
last = None
def name_of(e):
    return errno.errorcode.get(e.errno, str(e.errno))
while ops:
    op = ops.pop(0)
    try:
        if op == "read":
            path, ttl = ops.pop(0), int(ops.pop(0))
            fd = os.open(path, os.O_RDONLY)
            try:
                last = ox.offload_read(fd, 0, 1 << 20, ttl_ms=ttl)["token"]
            finally:
                os.close(fd)
        elif op == "save":
            with open(os.path.join(tdir, ops.pop(0) + ".tok"), "wb") as f:
                f.write(last)
            continue
        elif op in ("write", "release"):
            path, name = ops.pop(0), ops.pop(0)
            tok = open(os.path.join(tdir, name + ".tok"), "rb").read()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644) if op == "write" \
                else os.open(path, os.O_RDONLY)
            try:
                if op == "write":
                    ox.offload_write(fd, 0, 4096, tok)
                else:
                    ox.release(fd, tok)
            finally:
                os.close(fd)
        elif op == "cfr":
            src, dst = ops.pop(0), ops.pop(0)
            with open(src, "rb") as fi, open(dst, "wb") as fo:
                n = os.fstat(fi.fileno()).st_size
                while os.copy_file_range(fi.fileno(), fo.fileno(), n) > 0:
                    pass
            if open(src, "rb").read() != open(dst, "rb").read():
                print("DIFFERENT")
                continue
        print("OK")
    except OSError as e:
        print(name_of(e))
PY
chmod 0644 "$tok_py"
chmod 0777 "$T/py"   # the user saves its tokens there
tok() { python3 "$tok_py" "$T/py" "$@" | tr '\n' ' ' | sed 's/ $//'; }
tok_as() { local u=$1; shift; as_user "$u" python3 "$tok_py" "$T/py" "$@" | tr '\n' ' ' | sed 's/ $//'; }
expect() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }

# The user's cap: three tokens with a long life, then EMFILE.
r=$(tok_as "$U" read "$M/src.raw" 3600000 save u1 read "$M/src.raw" 3600000 save u2 \
	read "$M/src.raw" 3600000 save u3 read "$M/src.raw" 3600000)
expect "$r" "OK OK OK EMFILE" "the user's offload reads up to its cap"
# odxctl says why, in the user's words.
if as_user "$U" test -x "${ODXCTL:-/nonexistent}"; then
	as_user "$U" "$ODXCTL" offload-read "$M/src.raw" 0 1M >/dev/null 2>"$T/err.txt" &&
		fail "odxctl offload-read past the user's cap succeeded"
	grep -q "too many outstanding offload tokens for this user" "$T/err.txt" ||
		fail "odxctl offload-read at the cap: $(cat "$T/err.txt")"
fi
# Another owner (root) still gets tokens; the user's tokens work for root
# too (a token is a capability, only issuing counts).
expect "$(tok read "$M/src.raw" 60000 save r1 write "$M/root.raw" u1)" "OK OK" \
	"root's offload read while the user is at its cap"
cmp -n 4096 "$B/root.raw" "$B/src.raw" || fail "root's offload write of the user's token"
# The user's copy_file_range at its cap is declined; the kernel copies.
expect "$(tok_as "$U" cfr "$M/src.raw" "$M/u/copy.raw")" "OK" "copy_file_range at the cap"
same_bytes "$B/u/copy.raw" "$B/src.raw"
# A release makes room: the user gets a token again, then the cap again.
expect "$(tok_as "$U" release "$M/u/copy.raw" u1 read "$M/src.raw" 3600000 save u4 \
	read "$M/src.raw" 3600000)" "OK OK EMFILE" "the user after a release"
# A released token is unknown; an expired one expired; another mount's is
# refused as such.
expect "$(tok_as "$U" write "$M/u/w.raw" u1 release "$M/u/w.raw" u2 \
	write "$M/u/w.raw" u2)" "ENOKEY OK ENOKEY" "released tokens"
expect "$(tok_as "$U" read "$M/src.raw" 1 save e1)" "OK" "a token living 1 ms"
sleep 0.05
expect "$(tok_as "$U" write "$M/u/w.raw" e1)" "EKEYEXPIRED" "an expired token"
expect "$(tok_as "$U" write "$T/mnt2/u/w.raw" u3 release "$T/mnt2/x.raw" u3)" \
	"EKEYREJECTED EKEYREJECTED" "another mount's token"
expect "$(tok_as "$U" write "$M/u/w.raw" u3)" "OK" "the user's live token"
# The user's token memory: a record of 200 extents does not fit in 4K.
expect "$(tok_as "$U" release "$M/u/w.raw" u3 read "$M/frag.raw" 60000)" "OK EDQUOT" \
	"a token record over the user's memory cap"
odxfs_umount "$T/mnt2"
odxfs_umount "$M"

# max_token_ttl cuts the time to live asked for, and the default one.
odxfs_mount "$B" "$M" -o max_token_ttl=1500
expect "$(tok read "$M/src.raw" 3600000 save long read "$M/src.raw" 0 save default)" \
	"OK OK" "offload reads under max_token_ttl"
sleep 1.7
expect "$(tok write "$M/late.raw" long write "$M/late.raw" default)" \
	"EKEYEXPIRED EKEYEXPIRED" "tokens past max_token_ttl"
pass
