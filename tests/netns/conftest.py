"""Fixtures for traffic tests: a bpffs, a lab, and the hepbpf CLI run inside
the lab's node namespace the way users run it (`ip netns exec NS hepbpf`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hepbpf.loader.attach import SHARED_BPFFS
from hepbpf.vm.lab import Lab


def _is_bpffs(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path and " - bpf " in line for line in f)


@pytest.fixture(scope="session")
def bpffs():
    """The host bpffs most systems mount at boot, and one at
    /run/hepbpf/bpffs, which `ip netns exec` commands see too (they get a
    fresh /sys), so hepbpf's pins and tcx links outlive each command there
    as on a host. Each mounted (and later unmounted) only if missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    mounted = []
    for path in ("/sys/fs/bpf", str(SHARED_BPFFS)):
        if not _is_bpffs(path):
            os.makedirs(path, exist_ok=True)
            subprocess.run(["mount", "-t", "bpf", "bpf", path], check=True)
            mounted.append(path)
    yield "/sys/fs/bpf"
    for path in reversed(mounted):
        subprocess.run(["umount", path], check=False)


def hepbpf(lab: Lab, *args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", ns or lab.node_ns, sys.executable, "-m", "hepbpf.cli", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"hepbpf {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def status(lab: Lab) -> dict | None:
    res = hepbpf(lab, "status", "eth1", "-o", "json", check=False)
    return json.loads(res.stdout) if res.stdout.strip() else None


@pytest.fixture(scope="module")
def lab(bpffs):
    with Lab([["198.51.100.7", "2001:db8::7"], []]) as lab:
        try:
            yield lab
        finally:
            hepbpf(lab, "detach", "eth1", check=False)
