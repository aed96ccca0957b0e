"""The pinned kernels (vm/kernels.txt): parsed, fetched with apt-get download,
unpacked with dpkg-deb into a cache outside the git tree."""

from __future__ import annotations

import os
import re
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


# apt's own defaults retry and wait for minutes on a dead network; a CI run
# should say so and stop instead. Every apt call is also killed past its
# wall-clock bound.
APT_NET = ("-o", "Acquire::http::Timeout=30", "-o", "Acquire::https::Timeout=30", "-o", "Acquire::Retries=2")
DOWNLOAD_S = 300  # one kernel package is about 30 MB
UPDATE_S = 120


class FetchError(RuntimeError):
    """A pinned kernel could not be downloaded (the message says what to do)."""


def _apt(argv: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str]:
    """Run apt-get with bounded network waits: (exit status, its errors and
    warnings; apt-get update exits 0 when no index could be fetched)."""
    try:
        res = subprocess.run(["apt-get", *APT_NET, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"apt-get {argv[0]} still running after {timeout:.0f} s, stopped"
    lines = [x for x in res.stderr.splitlines() if x.startswith(("E:", "W:", "Err:"))]
    return res.returncode, "\n".join(lines[:4] or res.stderr.strip().splitlines()[-3:])


def download(k: Kernel, debs: Path) -> Path:
    """The package's .deb in DEBS, fetched with apt-get download (which
    checks it against the archive's signed index). A version the lists do
    not know usually means stale lists: update them once and retry. A
    failed or stalled transfer is not retried (apt already did)."""
    deb = debs / f"{k.package}_{k.version.replace(':', '%3a')}_amd64.deb"
    if deb.exists():
        return deb
    # Into a scratch directory first: an interrupted download must not
    # leave a partial .deb that the next run takes for the package.
    part = debs / f".partial-{os.getpid()}"
    subprocess.run(["rm", "-rf", str(part)], check=True)
    part.mkdir(parents=True)
    try:
        # apt's sandbox user cannot write to a root-owned cache: download as root.
        get = ["download", "-q", "-o", "APT::Sandbox::User=root", f"{k.package}={k.version}"]
        print(f"downloading {k.package}={k.version}", flush=True)
        rc, words = _apt(get, DOWNLOAD_S, cwd=part)
        if rc > 0 and "Failed to fetch" not in words:
            print(f"apt-get download failed ({words.splitlines()[0] if words else rc}); "
                  "updating the package lists and trying again", flush=True)
            urc, uwords = _apt(["update", "-q"], UPDATE_S)
            rc, words = _apt(get, DOWNLOAD_S, cwd=part)
            if rc != 0 and (urc != 0 or uwords):
                words += "\napt-get update: " + uwords.replace("\n", "\n  ")
        got = list(part.glob("*.deb"))
        if rc != 0 or len(got) != 1:
            raise FetchError(
                f"cannot download {k.package}={k.version} from the Debian archive:\n  "
                + "\n  ".join(words.splitlines() or [f"exit {rc}"])
                + f"\nEither the network is down (the package is then needed in {debs}/, as {deb.name}) "
                "or the archive no longer holds this version (`apt-cache search --names-only "
                f"'^linux-image-{re.escape(k.name)}\\..*-cloud-amd64-unsigned$'` and `apt-cache madison "
                "PACKAGE` list what it holds; re-pin vm/kernels.txt).")
        got[0].rename(deb)
    finally:
        subprocess.run(["rm", "-rf", str(part)], check=True)
    return deb


def fetch(k: Kernel) -> None:
    """Download and unpack once; depmod so modprobe works inside the guest
    (the package's postinst would do it, and we never install it)."""
    if (k.root / ".ready").exists():
        return
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = download(k, debs)
    subprocess.run(["rm", "-rf", str(k.root)], check=True)
    k.root.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(k.root)], check=True)
    subprocess.run(["depmod", "-b", str(k.root), k.release], check=True)
    (k.root / ".ready").touch()
