"""A small initramfs: busybox, init.sh as /init, and the modules that
mounting the host's / needs (virtio PCI, virtiofs, overlayfs) on kernels
where they are modular. Written as a newc cpio here, so no root-owned
staging tree, no cpio tool and no device-node privileges are needed."""

from __future__ import annotations

import gzip
import lzma
import stat
import subprocess
from pathlib import Path

from .kernels import CACHE, Kernel

BUSYBOX = Path("/bin/busybox")  # busybox-static: no libraries to copy
INIT = Path(__file__).resolve().parent / "init.sh"
# What init.sh needs before the host's / is mounted; the rest (veth, tc, ...)
# the guest loads with the host's modprobe from the bind-mounted tree.
BOOT_MODULES = ("virtio_pci", "virtiofs", "overlay")


def module_files(k: Kernel) -> list[Path]:
    """BOOT_MODULES and their dependencies, in load order, without the
    built-in ones."""
    out: list[Path] = []
    for mod in BOOT_MODULES:
        res = subprocess.run(["modprobe", "-d", str(k.root), "-S", k.release, "--show-depends", mod],
                             capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and Path(words[1]) not in out:
                out.append(Path(words[1]))
    return out


class Cpio:
    """newc ("070701") archive writer."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        nb = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0)
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts += [hdr, nb, b"\0" * (-(len(hdr) + len(nb)) % 4), data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def build(k: Kernel) -> Path:
    """Write CACHE/initrd/<name>.cpio.gz (rebuilt every run: it is small,
    and init.sh may have changed)."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lower", "upper", "newroot", "modules"):
        c.dir(d)
    # The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", INIT.read_bytes(), 0o755)
    order = []
    for i, path in enumerate(module_files(k)):
        data = path.read_bytes()
        if path.suffix == ".xz":  # busybox insmod takes plain .ko only
            data = lzma.decompress(data)
        name = f"{i:02d}-{path.name.split('.')[0]}.ko"
        c.file(f"modules/{name}", data)
        order.append(name)
    c.file("modules/order", "".join(f"{n}\n" for n in order).encode())
    out = CACHE / "initrd" / f"{k.name}.cpio.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(c.bytes(), 6))
    return out
