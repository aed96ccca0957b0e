"""The README's first command: `make demo` runs vm/demo.py on the lab."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_demo_runs_and_finds_what_it_expects(bpffs):
    res = subprocess.run([sys.executable, "-m", "hepbpf.vm.demo"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "RESULT: as expected" in res.stdout
    drops = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("calico-packet: IN=eth1 OUT= MAC=")]
    assert len(drops) == 2 and all("DPT=9091" in ln and "EVENT=drop" in ln for ln in drops), res.stdout
