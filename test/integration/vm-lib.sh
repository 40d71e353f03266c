# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers for integration tests that run a real virtual machine under
# libvirt (real virtnbdbackup backups, instant recovery).  Source it after
# lib.sh.
#
# vm_setup prepares the host the way Debian's libvirt-daemon-system would,
# without needing that package or systemd (PID 1 here is not systemd):
#   - the kvm group and the libvirt-qemu user (libvirt's QEMU driver will not
#     start without it: it is the compiled-in default user);
#   - `namespaces = []` in /etc/libvirt/qemu.conf (created if missing), so a
#     FUSE mount is seen by QEMU as it is on the host and is not kept alive
#     by a copy in a VM's private mount namespace;
#   - /dev/kvm group kvm, mode 0660 (QEMU runs as libvirt-qemu); KVM when
#     libvirt reports it usable, else TCG (domain type qemu), or
#     ODXFS_TEST_VIRT_TYPE=qemu|kvm to choose;
#   - virtlogd and libvirtd started by hand when not running, and stopped
#     when the last test using them exits (tests running at the same time
#     share them; daemons nobody here started are never stopped).
# The user, the group, qemu.conf and /dev/kvm's mode are left as set (as a
# package installation would leave them); daemons, domains and mounts are not.
#
# A VM has no operating system: the firmware finds nothing to boot and
# idles, and the tests write to its disks through QEMU's monitor
# (vm_io DOMAIN vda 'write -P 0x5a 1M 64k', qemu-io syntax).  qemu-io's
# output goes to the domain's log, not to the monitor's reply: vm_io reads
# it back from there and fails on anything but success.
#
# CI=true (as in CI) makes a missing prerequisite a failure, like
# ODXFS_TEST_REQUIRE_ALL=1.

[ "${CI:-}" = true ] && export ODXFS_TEST_REQUIRE_ALL=1

VIRSH=(virsh -q -c qemu:///system)
VM_LOGDIR=/var/log/libvirt/qemu
VIRT_TYPE=
_vm_domains=()

# The domains go first: their QEMU may hold files in a mount that lib.sh's
# exit handler is about to unmount.
_vm_exit() {
	local rc=$? d
	set +e
	for d in "${_vm_domains[@]:-}"; do
		[ -n "$d" ] && vm_remove "$d" >/dev/null 2>&1
	done
	(exit "$rc") # _cleanup takes the status from $?
	_cleanup
}
trap _vm_exit EXIT

_vm_pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Daemons started by these tests are shared by the tests running at the
# same time: each holds a shared lock on $_VM_USERS from vm_setup to its
# exit; the daemons a test started are listed in $_VM_STARTED; whichever
# test finds itself the last user at exit stops them (by pid, after
# checking the pid is still that daemon).  All of it under $_VM_SETUP.
_VM_SETUP=/run/lock/odxfs-vm-setup.lock
_VM_USERS=/run/lock/odxfs-vm-users.lock
_VM_STARTED=/run/lock/odxfs-vm-started

# _vm_stop_daemon PID NAME
_vm_stop_daemon() {
	local pid=$1 name=$2 i
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
	kill "$pid" 2>/dev/null || return 0
	for i in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name (pid $pid) did not stop within 15 s: killing it"
	kill -9 "$pid" 2>/dev/null || true
}

_vm_release() {
	exec 9>>"$_VM_SETUP"
	flock -w 60 9 || log "WARNING: $_VM_SETUP still locked after 60 s"
	if flock -n -x 8; then
		if [ -s "$_VM_STARTED" ]; then
			local pid name
			# libvirtd was started after virtlogd: stop it first.
			tac "$_VM_STARTED" | while read -r pid name; do
				_vm_stop_daemon "$pid" "$name"
			done
			log "stopped the libvirt daemons the tests started"
		fi
		rm -f "$_VM_STARTED"
	elif [ -s "$_VM_STARTED" ]; then
		log "libvirt daemons left running: another test is using them"
	fi
	exec 8>&- 9>&-
}

# _vm_spawn DAEMON: start it with a clean environment, none of our
# descriptors (not the locks), from /.
_vm_spawn() {
	(cd / && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$1" -d </dev/null >/dev/null 2>&1 8>&- 9>&-)
}

vm_setup() {
	require_root
	require_fuse
	require_cmd virsh libvirtd virtlogd qemu-system-x86_64 qemu-img qemu-io \
		virtnbdbackup virtnbdrestore useradd groupadd usermod flock tac python3
	chmod 0755 "$T" # QEMU runs as libvirt-qemu and must reach the test's files

	mkdir -p /run/lock
	exec 9>>"$_VM_SETUP" || fail "cannot open $_VM_SETUP"
	flock -w 300 9 || fail "another test holds $_VM_SETUP for 300 s"
	exec 8>>"$_VM_USERS" || fail "cannot open $_VM_USERS"
	flock -s 8 || fail "cannot lock $_VM_USERS"
	at_exit _vm_release

	getent group kvm >/dev/null || groupadd -r kvm || fail "groupadd kvm failed"
	if ! getent passwd libvirt-qemu >/dev/null; then
		useradd -r -g kvm -d /var/lib/libvirt -M -s /usr/sbin/nologin \
			-c "Libvirt Qemu" libvirt-qemu || fail "useradd libvirt-qemu failed"
	fi
	if ! getent group libvirt-qemu >/dev/null; then
		groupadd -r libvirt-qemu || fail "groupadd libvirt-qemu failed"
		usermod -aG libvirt-qemu libvirt-qemu || fail "usermod -aG libvirt-qemu failed"
	fi
	mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt

	local conf=/etc/libvirt/qemu.conf conf_changed=0
	if [ ! -e "$conf" ]; then
		printf '%s\n' "# Written by odxfs's test/integration/vm-lib.sh (no libvirt-daemon-system here)." \
			'namespaces = []' >"$conf" || fail "cannot write $conf"
		conf_changed=1
	elif ! grep -Eq '^[[:space:]]*namespaces[[:space:]]*=[[:space:]]*\[[[:space:]]*\]' "$conf"; then
		if grep -Eq '^[[:space:]]*namespaces[[:space:]]*=' "$conf"; then
			sed -i -E 's/^[[:space:]]*namespaces[[:space:]]*=.*/namespaces = []/' "$conf"
		else
			printf '%s\n' '# odxfs tests: FUSE mounts must be seen as they are on the host' \
				'namespaces = []' >>"$conf"
		fi || fail "cannot edit $conf"
		conf_changed=1
	fi

	if [ -c /dev/kvm ]; then
		chgrp kvm /dev/kvm || fail "cannot make /dev/kvm group kvm"
		chmod 0660 /dev/kvm || fail "cannot make /dev/kvm mode 0660"
	fi

	local i
	if ! _vm_pid_alive /run/virtlogd.pid || [ ! -S /run/libvirt/virtlogd-sock ]; then
		_vm_spawn virtlogd || fail "virtlogd -d failed"
		for i in $(seq 100); do
			_vm_pid_alive /run/virtlogd.pid && [ -S /run/libvirt/virtlogd-sock ] && break
			sleep 0.1
		done
		_vm_pid_alive /run/virtlogd.pid || fail "virtlogd did not start"
		echo "$(cat /run/virtlogd.pid) virtlogd" >>"$_VM_STARTED"
		log "started virtlogd (pid $(cat /run/virtlogd.pid))"
	fi
	if ! "${VIRSH[@]}" version >/dev/null 2>&1; then
		_vm_spawn libvirtd || fail "libvirtd -d failed (see /var/log/libvirt/libvirtd.log)"
		local deadline=$((SECONDS + 30))
		until "${VIRSH[@]}" version >/dev/null 2>&1; do
			if [ $SECONDS -ge $deadline ] || ! _vm_pid_alive /run/libvirtd.pid; then
				tail -n 20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
				fail "libvirtd did not come up (log above)"
			fi
			sleep 0.2
		done
		echo "$(cat /run/libvirtd.pid) libvirtd" >>"$_VM_STARTED"
		log "started libvirtd (pid $(cat /run/libvirtd.pid))"
	elif [ $conf_changed = 1 ]; then
		log "WARNING: libvirtd was already running: it reads namespaces = [] only when restarted"
	fi
	flock -u 9
	exec 9>&-

	case "${ODXFS_TEST_VIRT_TYPE:-}" in
	kvm | qemu) VIRT_TYPE=$ODXFS_TEST_VIRT_TYPE ;;
	"")
		if [ -c /dev/kvm ] && "${VIRSH[@]}" domcapabilities --virttype kvm >/dev/null 2>&1; then
			VIRT_TYPE=kvm
		else
			VIRT_TYPE=qemu
		fi
		;;
	*) fail "ODXFS_TEST_VIRT_TYPE must be kvm or qemu" ;;
	esac
	if [ "$VIRT_TYPE" = kvm ]; then
		log "virtualization: KVM"
	else
		log "virtualization: TCG (domain type qemu)${ODXFS_TEST_VIRT_TYPE:+, as ODXFS_TEST_VIRT_TYPE asks}"
	fi
}

# _vm_disk_index vdX: libvirt's alias index (vda -> 0, vdb -> 1, ...).
_vm_disk_index() {
	local t=$1
	[[ $t =~ ^vd([a-z])$ ]] || fail "disk target must be vda..vdz: $t"
	printf '%d' $(($(printf '%d' "'${BASH_REMATCH[1]}") - 97))
}

# vm_define NAME IMAGE... : a persistent domain with no OS whose disks are
# the given qcow2 images, as vda, vdb, ...  Removed at exit.
vm_define() {
	local name=$1 xml=$T/$1.xml img t=0 letters=abcdefghijklmnopqrstuvwxyz
	shift
	{
		printf "<domain type='%s'>\n  <name>%s</name>\n" "$VIRT_TYPE" "$name"
		printf "  <memory unit='MiB'>64</memory>\n  <vcpu>1</vcpu>\n"
		printf "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
		printf "  <on_poweroff>destroy</on_poweroff>\n  <on_crash>destroy</on_crash>\n"
		printf "  <devices>\n"
		for img in "$@"; do
			printf "    <disk type='file' device='disk'>\n"
			printf "      <driver name='qemu' type='qcow2' discard='unmap'/>\n"
			printf "      <source file='%s'/>\n" "$img"
			printf "      <target dev='vd%s' bus='virtio'/>\n" "${letters:t:1}"
			printf "    </disk>\n"
			t=$((t + 1))
		done
		printf "    <memballoon model='none'/>\n  </devices>\n</domain>\n"
	} >"$xml"
	_vm_domains+=("$name")
	"${VIRSH[@]}" define "$xml" >/dev/null || fail "virsh define $name failed ($xml)"
}

vm_start() {
	"${VIRSH[@]}" start "$1" >/dev/null || {
		tail -n 20 "$VM_LOGDIR/$1.log" >&2 2>/dev/null || true
		fail "virsh start $1 failed"
	}
	[ "$("${VIRSH[@]}" domstate "$1")" = running ] || fail "domain $1 is not running after start"
}

# vm_remove NAME: destroy (if running) and undefine, checkpoints included.
vm_remove() {
	local name=$1 i
	"${VIRSH[@]}" domstate "$name" >/dev/null 2>&1 || return 0
	if [ "$("${VIRSH[@]}" domstate "$name" 2>/dev/null)" != "shut off" ]; then
		"${VIRSH[@]}" destroy "$name" >/dev/null 2>&1 || true
	fi
	"${VIRSH[@]}" undefine --checkpoints-metadata "$name" >/dev/null 2>&1 ||
		"${VIRSH[@]}" undefine "$name" >/dev/null 2>&1 || return 1
	for i in "${!_vm_domains[@]}"; do
		[ "${_vm_domains[$i]}" = "$name" ] && _vm_domains[$i]=""
	done
	return 0
}

# vm_io NAME vdX 'qemu-io command': run it on the running domain's disk
# through the monitor (HMP qemu-io on the virtio device's block backend).
# write, read (with -P: the pattern must verify), discard and flush are
# understood; their output must appear in the domain log and say success.
VM_IO_OUT=
vm_io() {
	local name=$1 disk=$2 cmd=$3 logf=$VM_LOGDIR/$1.log
	local dev
	dev=/machine/peripheral/virtio-disk$(_vm_disk_index "$disk")/virtio-backend
	local before reply want i
	before=$(stat -c %s "$logf") || fail "no domain log $logf"
	reply=$("${VIRSH[@]}" qemu-monitor-command "$name" --hmp "qemu-io -d $dev \"$cmd\"") ||
		fail "monitor command failed on $name: qemu-io $disk \"$cmd\""
	[ -z "$(printf '%s' "$reply" | tr -d '[:space:]')" ] ||
		fail "qemu-io $disk \"$cmd\" on $name: $reply"
	case $cmd in
	write*) want='^wrote ([0-9]+)/([0-9]+) bytes' ;;
	read*) want='^read ([0-9]+)/([0-9]+) bytes' ;;
	discard*) want='^discard ([0-9]+)/([0-9]+) bytes' ;;
	flush*) VM_IO_OUT=; return 0 ;;
	*) fail "vm_io: unsupported command: $cmd" ;;
	esac
	# The monitor command has completed; its output reaches the log
	# through virtlogd, maybe a moment later.
	for i in $(seq 200); do
		VM_IO_OUT=$(tail -c +$((before + 1)) "$logf")
		grep -Eq "$want" <<<"$VM_IO_OUT" && break
		sleep 0.05
	done
	grep -Eq "$want" <<<"$VM_IO_OUT" || fail "qemu-io $disk \"$cmd\" on $name: no result in $logf: $VM_IO_OUT"
	if grep -Eqi 'fail|error' <<<"$VM_IO_OUT"; then
		fail "qemu-io $disk \"$cmd\" on $name: $VM_IO_OUT"
	fi
	local n
	n=$(grep -E "$want" <<<"$VM_IO_OUT" | head -1 | sed -E "s|$want.*|\\1 \\2|")
	[ "${n% *}" = "${n#* }" ] || fail "qemu-io $disk \"$cmd\" on $name: short: $VM_IO_OUT"
}

# vm_capture NAME vdX IMAGE OUT.raw: the disk's content now.  QEMU's qcow2
# metadata cache is flushed first (without the flush, clusters allocated
# since the last flush read as zeros from outside); the VM runs no OS, so
# nothing changes the disk between the flush and the read (-U: QEMU holds
# the image's lock).
vm_capture() {
	vm_io "$1" "$2" flush
	qemu-img convert -U -f qcow2 -O raw "$3" "$4" || fail "qemu-img convert -U $3 failed"
}

# model_io RAW 'qemu-io command': the same command on a local raw image,
# a model of what the VM's disk must hold.
model_io() {
	local out
	out=$(qemu-io -f raw -c "$2" "$1" 2>&1) || fail "qemu-io on model $1: $2: $out"
	if grep -Eqi 'fail|error' <<<"$out"; then fail "qemu-io on model $1: $2: $out"; fi
}

# vm_write NAME vdX MODEL.raw 'qemu-io command': on the VM's disk and its model.
vm_write() {
	vm_io "$1" "$2" "$4"
	model_io "$3" "$4"
}
