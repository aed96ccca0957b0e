#!/bin/sh
# The initramfs's PID 1 (busybox): mount the host's / read-only over
# virtiofs, put a tmpfs overlay on it so the guest can write without
# touching the host, and hand over to guest.sh on that tree.
# The kernel command line gives hepbpf_guest (guest.sh's path) and
# hepbpf_run (the run's settings file), as environment variables.
/bin/busybox --install -s /bin
export PATH=/bin

die() {
    echo "HEPBPF-VM-FAIL initramfs: $*"
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "HEPBPF-VM-STAGE initramfs $(cut -d' ' -f1 /proc/uptime)"
while read -r m; do
    insmod "/modules/$m" || die "insmod $m"
done < /modules/order

mount -t virtiofs -o ro hostroot /lower || die "mount virtiofs hostroot"
# Writes (pytest's cache, __pycache__, /var) land here and vanish at poweroff.
mount -t tmpfs -o size=1536m tmpfs /upper || die "mount tmpfs"
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot \
    || die "mount overlay"
[ -x "/newroot$hepbpf_guest" ] || die "no $hepbpf_guest on the host tree"

umount /proc /sys /dev
# guest.sh becomes PID 1 on the host's tree, so the kernel's module
# auto-loading finds the host's modprobe.
exec switch_root /newroot "$hepbpf_guest"
