#!/bin/sh
# PID 1 in the guest, on the host's tree (read-only, tmpfs overlay): the
# mounts a booted system has, the kernel's own modules where modprobe looks,
# then the load probe and pytest, each reported on the console between
# HEPBPF-VM-* markers that run.py reads. Powers off when done.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

off() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 60  # PID 1 must not exit before the power goes
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "HEPBPF-VM-STAGE guest $(cut -d' ' -f1 /proc/uptime)"

# shellcheck disable=SC1090  # written by run.py: REPO, SOURCE, PYTHON, MODULES, PYTEST_ARGS
. "$hepbpf_run" || { echo "HEPBPF-VM-FAIL guest: cannot read $hepbpf_run"; off; }
mkdir -p "/lib/modules/$(uname -r)"
mount --bind "$MODULES" "/lib/modules/$(uname -r)"
hostname hepbpf-vm
ip link set lo up

# Run on a snapshot of the tree taken now (3 MB: no .git, the venv stays
# shared): others edit and rebuild the live tree, and a file replaced on
# the host mid-run would turn the guest's open handles stale (ESTALE).
mkdir -p /run/hepbpf-vm/tree /run/hepbpf-vm/venv
tar -C "$SOURCE" --exclude=./.git --exclude=./.venv -cf - . | tar -C /run/hepbpf-vm/tree -xf - \
    || { echo "HEPBPF-VM-FAIL guest: cannot snapshot $SOURCE"; off; }
mkdir -p /run/hepbpf-vm/tree/.venv
mount --bind "$REPO/.venv" /run/hepbpf-vm/venv
# Only now, with the snapshot taken and the venv held: SOURCE and REPO (a CI
# clone) may be under the host's /tmp, which this tmpfs hides.
mount -t tmpfs tmpfs /tmp
mkdir -p "$REPO"
mount --bind /run/hepbpf-vm/tree "$REPO"
mount --bind /run/hepbpf-vm/venv "$REPO/.venv"
cd "$REPO" || { echo "HEPBPF-VM-FAIL guest: no $REPO"; off; }
echo "HEPBPF-VM-BEGIN load"
"$PYTHON" -m hepbpf.vm.qemu.guest load
echo "HEPBPF-VM-END load"

echo "HEPBPF-VM-BEGIN pytest $(cut -d' ' -f1 /proc/uptime)"
set -f  # PYTEST_ARGS is a word list; test ids hold [brackets], not globs
# shellcheck disable=SC2086
"$PYTHON" -m pytest $PYTEST_ARGS --junitxml=/tmp/hepbpf-vm-junit.xml
rc=$?
echo "HEPBPF-VM-END pytest $(cut -d' ' -f1 /proc/uptime)"
"$PYTHON" -m hepbpf.vm.qemu.guest junit /tmp/hepbpf-vm-junit.xml "$rc"
echo "HEPBPF-VM-DONE $(cut -d' ' -f1 /proc/uptime)"
off
