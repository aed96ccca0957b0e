"""The pinned kernels (vm/kernels.txt): parsed, fetched with apt-get download,
unpacked with dpkg-deb into a cache outside the git tree."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

KERNELS_TXT = Path(__file__).resolve().parent.parent / "kernels.txt"
# Outside the repo: a kernel package is 30 MB and the tree is shared by
# the guest, which must not see the cache as a source change.
CACHE = Path(os.environ.get("HEPBPF_VM_CACHE", "/var/cache/hepbpf-vm"))


@dataclass(frozen=True)
class Kernel:
    name: str
    package: str
    version: str

    @property
    def root(self) -> Path:
        """Where the package is unpacked (boot/, lib/modules/)."""
        return CACHE / "kernels" / f"{self.package}_{self.version}"

    @property
    def release(self) -> str:
        """uname -r, the one directory under lib/modules."""
        (rel,) = os.listdir(self.root / "lib" / "modules")
        return rel

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def parse(text: str) -> list[Kernel]:
    """One kernel a line: name, package, version; '#' starts a comment."""
    out: list[Kernel] = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(f"kernels.txt:{n}: want 'name package version', got {line.strip()!r}")
        k = Kernel(*fields)
        if any(k.name == o.name for o in out):
            raise ValueError(f"kernels.txt:{n}: {k.name} listed twice")
        out.append(k)
    return out


def load(path: Path = KERNELS_TXT) -> list[Kernel]:
    return parse(path.read_text())


def select(kernels: list[Kernel], wanted: str) -> list[Kernel]:
    """'all' or a comma-separated list of names."""
    if wanted in ("", "all"):
        return kernels
    by_name = {k.name: k for k in kernels}
    names = [w for w in wanted.split(",") if w]
    unknown = [w for w in names if w not in by_name]
    if unknown:
        raise ValueError(f"unknown kernel {', '.join(unknown)}: vm/kernels.txt has {', '.join(by_name)}")
    return [by_name[w] for w in names]


def fetch(k: Kernel) -> None:
    """Download and unpack once; depmod so modprobe works inside the guest
    (the package's postinst would do it, and we never install it)."""
    if (k.root / ".ready").exists():
        return
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"{k.package}_{k.version.replace(':', '%3a')}_amd64.deb"
    if not deb.exists():
        # apt's sandbox user cannot write to a root-owned cache: download as root.
        subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{k.package}={k.version}"],
                       cwd=debs, check=True)
    subprocess.run(["rm", "-rf", str(k.root)], check=True)
    k.root.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(k.root)], check=True)
    subprocess.run(["depmod", "-b", str(k.root), k.release], check=True)
    (k.root / ".ready").touch()
