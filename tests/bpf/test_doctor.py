"""`hepbpf doctor` detects, by asking this kernel: the object loads and
its verified instruction counts are shown; the egress hook named is the
one tc.attach would take; a missing object is a failure with the fix."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hepbpf import doctor
from hepbpf.loader import tc

pytestmark = pytest.mark.bpf


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hepbpf.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=120)


def test_doctor_loads_the_object_and_names_the_paths():
    res = _run("-o", "json")
    assert res.returncode == 0, res.stderr
    found = {c["name"]: c for c in json.loads(res.stdout)}
    assert found["datapath"]["ok"] is True
    assert "hep_xdp_ingress" in found["datapath"]["detail"] and "hep_tc_egress" in found["datapath"]["detail"]
    assert found["egress hook"]["ok"] is True
    assert ("tcx" if tc.tcx_supported() else "no tcx") in found["egress hook"]["detail"].split(" (")[0]
    assert found["bpffs"]["ok"] is True
    text = _run()
    assert text.returncode == 0 and "loads and verifies" in text.stdout


def test_a_missing_object_fails_with_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("hepbpf.loader.datapath.object_path", lambda: str(tmp_path / "hep.bpf.o"))
    assert doctor.run_doctor(SimpleNamespace(output="text")) == 1
    out = capsys.readouterr().out
    assert "FAIL  datapath" in out and "make -C bpf" in out
