#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# check-man.sh ODXCTL [ODXFS]: the man pages render cleanly and say the same
# as --help, both ways (in the spirit of nbdkit's tests/test-synopsis.sh).
#
#   (a) every page in man/ renders with `groff -ww -z -mandoc` with no output
#       at all, and with `mandoc -T lint -W warning` when mandoc is installed;
#   (b) odxctl: the subcommands of `odxctl --help` and the SUBCOMMANDS .SS
#       entries (and SYNOPSIS) of odxctl.1 are the same set, and for each
#       subcommand the long options `odxctl SUB --help` prints are exactly
#       those odxctl.1 documents as .TP entries under that subcommand;
#   (c) odxfs: the -o options of the "odxfs options:" block of `odxfs --help`
#       each have an entry (.TP/.IP/.It tag) in odxfs.8, every -o option
#       odxfs.8 documents in a tag is printed by --help, and the same both
#       ways for --long options.  Skipped with a note while the odxfs binary
#       or man/odxfs.8 does not exist.
#
# How options are found (so that the pages can be written to match):
#   --help side: every token --[a-z][a-z0-9-]* of the output; for odxfs,
#     "-o name" tokens.
#   page side:   tag lines only (the line after .TP or .TQ, the first
#     argument of .IP, an .It line), with \- read as -, font escapes and
#     quotes dropped, and for mdoc "Fl x" read as -x and "Ns" as a join.
#     odxctl.1: a tag inside SUBCOMMANDS belongs to the subcommand of the
#     enclosing .SS, whose title is the subcommand's name.
#     odxfs.8: a tag documents a mount option when it reads "-o name..." or
#     starts with "name=".
#   --help itself is accepted by every odxctl subcommand; odxctl.1 describes
#   it once, in DESCRIPTION, so it is left out of the per-subcommand sets.
#
# Exit 0 pass, 1 fail, 77 skip (groff missing); ODXFS_TEST_REQUIRE_ALL=1
# turns the skip into a failure.  ODXFS_MAN_DIR overrides the man directory.

# Lists here are of names without spaces, so word splitting is what we want.
# shellcheck disable=SC2013
set -u

ODXCTL=${1:-}
ODXFS=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
MAN_DIR=${ODXFS_MAN_DIR:-$here/../../man}

# odxctl.1 documents these long options; odxctl's --help does not print
# them yet (src/cli/odxctl.c synopsis strings).  Each one is reported as a
# note, not a failure, while the gap lasts; once --help prints it, it is
# checked like any other.  Form: "subcommand --option".
KNOWN_HELP_GAPS='repair --output'

# Subcommands odxctl has only when it is built with the offload layer
# (src/cli/meson.build).  odxctl.1 documents them always; a binary without
# them gets a note.  A binary with them is checked in full.
OFFLOAD_SUBCOMMANDS='offload-read offload-write copy stats'

# Options of mount(8), fstab and systemd that odxfs accepts (or leaves to
# the kernel) without printing them in --help: odxfs.8 may describe them
# in tags.  A trailing * matches any suffix.
GENERIC_MOUNT_OPTIONS='rw ro defaults auto noauto user users nouser owner group
_netdev nofail atime noatime relatime strictatime nodiratime dev nodev suid
nosuid exec noexec sync async dirsync x-* comment'

failures=0
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}
note() {
	echo "note: $*"
}

skip_or_fail() {
	if [ "${ODXFS_TEST_REQUIRE_ALL:-0}" = 1 ]; then
		echo "FAIL: $* (ODXFS_TEST_REQUIRE_ALL=1)"
		exit 1
	fi
	echo "SKIP: $*"
	exit 77
}

command -v groff >/dev/null 2>&1 || skip_or_fail "groff is not installed"
[ -d "$MAN_DIR" ] || { echo "FAIL: no man directory at $MAN_DIR"; exit 1; }
if [ -z "$ODXCTL" ] || [ ! -x "$ODXCTL" ]; then
	echo "FAIL: usage: $0 ODXCTL [ODXFS] (odxctl binary '$ODXCTL' not executable)"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-man.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# ---------------------------------------------------------------------------
# (a) rendering

pages=0
for page in "$MAN_DIR"/*.[1-9]; do
	[ -f "$page" ] || continue
	pages=$((pages + 1))
	name=${page##*/}
	# A page that needs tbl says so on its first line ('\" t).
	pre=
	head -n 1 "$page" | grep -q "^'\\\\\" *t" && pre=-t
	# shellcheck disable=SC2086
	out=$(groff -ww -z $pre -mandoc "$page" 2>&1)
	rc=$?
	if [ $rc -ne 0 ] || [ -n "$out" ]; then
		fail "$name: groff -ww -z -mandoc (exit $rc) says:"
		printf '%s\n' "$out" | sed 's/^/    /'
	fi
	if command -v mandoc >/dev/null 2>&1; then
		# The note about the system's own mandoc.db is not about the page.
		out=$(mandoc -T lint -W warning "$page" 2>&1 | grep -v 'mandoc\.db')
		if [ -n "$out" ]; then
			fail "$name: mandoc -T lint -W warning says:"
			printf '%s\n' "$out" | sed 's/^/    /'
		fi
	fi
done
[ "$pages" -gt 0 ] || fail "no man pages found in $MAN_DIR"
command -v mandoc >/dev/null 2>&1 || note "mandoc is not installed: lint skipped"

# ---------------------------------------------------------------------------
# Page parsing (awk, shared by (b) and (c)).
#
# Prints one line per finding:
#   SH <section>                 a section heading
#   SUB <name>                   an .SS title inside SUBCOMMANDS
#   SYN <name>                   a subcommand named in SYNOPSIS
#   TAG <section> <sub> <text>   a normalized tag line (<sub> "-" outside
#                                SUBCOMMANDS)
#   TXT <text>                   every normalized text line
parse_page() {
	awk '
	function norm(s) {
		gsub(/\\-/, "-", s)
		gsub(/\\\(aq/, "\047", s)
		gsub(/\\\(lq|\\\(rq|\\\(dq/, "\"", s)
		gsub(/\\f\[[^]]*\]/, "", s)
		gsub(/\\f\(../, "", s)
		gsub(/\\f./, "", s)
		gsub(/\\[&%]/, "", s)
		gsub(/\\ /, " ", s)
		gsub(/"/, " ", s)
		# A request line: drop the request name, unless it is an mdoc
		# callable macro that stands for text (Fl).
		if (s ~ /^[.\047]/) {
			s = substr(s, 2)
			sub(/^[ \t]+/, "", s)
			if (s !~ /^Fl([ \t]|$)/)
				sub(/^[A-Za-z][A-Za-z]?[A-Za-z]?([ \t]+|$)/, "", s)
		}
		# mdoc: Fl x is -x, Ns joins its neighbours.
		gsub(/(^|[ \t])Fl[ \t]+/, " -", s)
		gsub(/[ \t]+Ns[ \t]+/, "", s)
		n = split("It Cm Ar Op Oo Oc Ic Li Sy Em Pa Xo Xc Va Ev Dq Qq Sq Ql Pq Bq No", m, " ")
		for (i = 1; i <= n; i++)
			gsub("(^|[ \t])" m[i] "([ \t]|$)", " ", s)
		gsub(/[ \t]+/, " ", s)
		sub(/^ /, "", s)
		sub(/ $/, "", s)
		return s
	}
	/^\.\\"/ || /^\047\\"/ { next }          # comments
	/^\.(SH|Sh)[ \t]/ {
		sec = $0; sub(/^\.(SH|Sh)[ \t]+/, "", sec); gsub(/"/, "", sec)
		print "SH " sec
		sub_ = "-"; tag_next = 0; syn_next = 0
		next
	}
	/^\.(SS|Ss)[ \t]/ {
		t = $0; sub(/^\.(SS|Ss)[ \t]+/, "", t); t = norm(t)
		split(t, w, " ")
		if (sec == "SUBCOMMANDS") { sub_ = w[1]; print "SUB " sub_ }
		tag_next = 0
		next
	}
	/^\.(TP|TQ)([ \t]|$)/ { tag_next = 1; next }
	/^\.SY([ \t]|$)/ { syn_next = 1; next }
	{
		line = norm($0)
		if (line != "") print "TXT " line
	}
	/^\.IP[ \t]/ {
		a = $0; sub(/^\.IP[ \t]+/, "", a)
		if (a ~ /^"/) { sub(/^"/, "", a); sub(/".*/, "", a) } else sub(/[ \t].*/, "", a)
		a = norm(a)
		if (a != "") print "TAG " sec "\t" sub_ "\t" a
		next
	}
	/^\.It([ \t]|$)/ {
		print "TAG " sec "\t" sub_ "\t" norm($0)
		next
	}
	tag_next && !/^\.(PD|br|sp)([ \t]|$)/ {
		print "TAG " sec "\t" sub_ "\t" norm($0)
		tag_next = 0
		next
	}
	syn_next && sec == "SYNOPSIS" && /^\.(B|BR)[ \t]/ {
		w1 = norm($0); split(w1, w, " ")
		if (w[1] !~ /^-/) print "SYN " w[1]
		syn_next = 0
		next
	}
	' "$1"
}

# Long options (--x) in stdin, one per line, sorted.
all_long_opts() {
	grep -o -e '--[a-z][a-z0-9-]*' | sort -u
}
# The same without --help (odxctl: described once, not per subcommand).
long_opts() {
	all_long_opts | grep -v -x -e '--help'
}

# Words of $2 that are not lines of file $1.
missing() {
	for w in $2; do
		grep -q -x -F -e "$w" "$1" || echo "$w"
	done
}

in_list() { # word list
	for x in $2; do
		case $x in
		*\*) case $1 in "${x%\*}"*) return 0 ;; esac ;;
		*) [ "$1" = "$x" ] && return 0 ;;
		esac
	done
	return 1
}

# ---------------------------------------------------------------------------
# (b) odxctl.1 against odxctl --help

page="$MAN_DIR/odxctl.1"
if [ ! -f "$page" ]; then
	fail "man/odxctl.1 is missing"
else
	parse_page "$page" >"$tmp/odxctl.parsed"
	sed -n 's/^SUB //p' "$tmp/odxctl.parsed" | sort -u >"$tmp/man.subs"
	sed -n 's/^SYN //p' "$tmp/odxctl.parsed" | sort -u >"$tmp/man.syn"
	[ -s "$tmp/man.subs" ] ||
		fail "odxctl.1: no .SS entries found under SUBCOMMANDS (page layout changed?)"

	if ! "$ODXCTL" --help >"$tmp/help.main" 2>&1; then
		fail "odxctl --help exits non-zero"
	fi
	awk '/^Subcommands:/ { on = 1; next }
	     on && /^$/ { exit }
	     on && /^ +[a-z][a-z0-9-]* / { print $1 }' "$tmp/help.main" |
		sort -u >"$tmp/help.subs"
	[ -s "$tmp/help.subs" ] ||
		fail "odxctl --help lists no subcommands (expected a 'Subcommands:' block)"

	for s in $(cat "$tmp/help.subs"); do
		grep -q -x -F -e "$s" "$tmp/man.subs" ||
			fail "odxctl --help lists '$s'; odxctl.1 has no .SS $s under SUBCOMMANDS"
		grep -q -x -F -e "$s" "$tmp/man.syn" ||
			fail "odxctl --help lists '$s'; odxctl.1's SYNOPSIS does not show it"
	done
	for s in $(missing "$tmp/man.subs" "$(cat "$tmp/man.syn")"); do
		fail "odxctl.1's SYNOPSIS shows '$s'; SUBCOMMANDS has no .SS $s"
	done
	for s in $(cat "$tmp/man.subs"); do
		grep -q -x -F -e "$s" "$tmp/man.syn" ||
			fail "odxctl.1 documents '$s' under SUBCOMMANDS but not in SYNOPSIS"
		if ! grep -q -x -F -e "$s" "$tmp/help.subs"; then
			if in_list "$s" "$OFFLOAD_SUBCOMMANDS"; then
				note "odxctl.1 documents '$s'; this odxctl does not have it (built without the offload subcommands?)"
			else
				fail "odxctl.1 documents subcommand '$s'; odxctl --help does not list it"
			fi
			continue
		fi
		if ! "$ODXCTL" "$s" --help >"$tmp/help.$s" 2>&1; then
			fail "odxctl $s --help exits non-zero"
			continue
		fi
		long_opts <"$tmp/help.$s" >"$tmp/help.$s.opts"
		awk -F '\t' -v s="$s" '$1 == "TAG SUBCOMMANDS" && $2 == s { print $3 }' \
			"$tmp/odxctl.parsed" | long_opts >"$tmp/man.$s.opts"
		for o in $(missing "$tmp/man.$s.opts" "$(cat "$tmp/help.$s.opts")"); do
			fail "odxctl $s --help prints $o; odxctl.1 has no .TP entry for it under .SS $s"
		done
		for o in $(missing "$tmp/help.$s.opts" "$(cat "$tmp/man.$s.opts")"); do
			if printf '%s\n' "$KNOWN_HELP_GAPS" | grep -q -x -F -e "$s $o"; then
				note "odxctl.1 documents $o for $s; 'odxctl $s --help' does not print it (known gap in src/cli/odxctl.c)"
			else
				fail "odxctl.1 documents $o under .SS $s; 'odxctl $s --help' does not print it"
			fi
		done
	done
	n=$(awk -F '\t' '$1 == "TAG SUBCOMMANDS"' "$tmp/odxctl.parsed" | long_opts | wc -l)
	[ "$n" -gt 0 ] || fail "odxctl.1: no options found in SUBCOMMANDS tags (page layout changed?)"
fi

# ---------------------------------------------------------------------------
# (c) odxfs.8 against odxfs --help

page="$MAN_DIR/odxfs.8"
if [ -z "$ODXFS" ] || [ ! -x "$ODXFS" ]; then
	note "odxfs binary not given or not built: odxfs.8 against odxfs --help skipped"
elif [ ! -f "$page" ]; then
	note "man/odxfs.8 does not exist yet: odxfs.8 against odxfs --help skipped"
else
	timeout 30 "$ODXFS" --help >"$tmp/odxfs.help" 2>&1
	rc=$?
	[ $rc -eq 0 ] || fail "odxfs --help exits $rc"
	# Our own block, up to the next "... options:" heading (FUSE's).
	awk '/^odxfs options:/ { on = 1; next }
	     on && /^[A-Za-z].*options:$/ { exit }
	     on { print }' "$tmp/odxfs.help" |
		grep -o -e '-o *[a-z_][a-z0-9_]*' | sed 's/^-o *//' | sort -u >"$tmp/help.own"
	[ -s "$tmp/help.own" ] ||
		fail "odxfs --help: no -o options in an 'odxfs options:' block"
	grep -o -e '-o *[a-z_][a-z0-9_]*' "$tmp/odxfs.help" | sed 's/^-o *//' |
		sort -u >"$tmp/help.allo"
	all_long_opts <"$tmp/odxfs.help" >"$tmp/help.long"

	parse_page "$page" >"$tmp/odxfs.parsed"
	awk -F '\t' '$1 ~ /^TAG / { print $3 }' "$tmp/odxfs.parsed" >"$tmp/man.tags"
	{
		grep -o -e '-o *[a-z_][a-z0-9_]*' "$tmp/man.tags" | sed 's/^-o *//'
		grep -o -e '^[a-z_][a-z0-9_]*=' "$tmp/man.tags" | sed 's/=$//'
	} | sort -u >"$tmp/man.o"
	all_long_opts <"$tmp/man.tags" >"$tmp/man.long"
	sed -n 's/^TXT //p' "$tmp/odxfs.parsed" >"$tmp/man.text"

	for o in $(missing "$tmp/man.o" "$(cat "$tmp/help.own")"); do
		fail "odxfs --help prints -o $o; odxfs.8 has no entry (tag) for it"
	done
	for o in $(missing "$tmp/help.allo" "$(cat "$tmp/man.o")"); do
		in_list "$o" "$GENERIC_MOUNT_OPTIONS" && continue
		fail "odxfs.8 documents -o $o; odxfs --help does not print it"
	done
	for o in $(cat "$tmp/help.long"); do
		grep -q -F -e "$o" "$tmp/man.text" ||
			fail "odxfs --help prints $o; odxfs.8 does not mention it"
	done
	for o in $(missing "$tmp/help.long" "$(cat "$tmp/man.long")"); do
		fail "odxfs.8 documents $o; odxfs --help does not print it"
	done
fi

if [ "$failures" -gt 0 ]; then
	echo "$failures problem(s)"
	exit 1
fi
echo "man pages OK"
exit 0
