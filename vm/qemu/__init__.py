"""`make vm-test`: the project's kernel tests under Debian's own kernels,
booted with qemu (software emulation) on the host's file tree.

kernels.py fetches and unpacks the pinned packages (vm/kernels.txt);
initramfs.py packs busybox, init.sh and the few modules needed to mount the
host's / (virtiofs, read-only, under a tmpfs overlay); guest.sh runs there
as PID 1 and calls guest.py for the load probe and pytest's summary; run.py
boots each kernel and prints the report.
"""
