"""`hepbpf explain --kernel` (BPF_PROG_TEST_RUN on the real object) prints
what the reference evaluator prints, for every packet of the table."""

import json
import subprocess
import sys

import pytest

from ..behaviour import expectations
from ..cases import CASES, IFACE, NODE

pytestmark = pytest.mark.bpf


def explain(path, specs, kernel):
    args = [sys.executable, "-m", "hepbpf.cli", "explain", str(path), "--node", NODE, "--iface", IFACE]
    for s in specs:
        args += ["--packet", s]
    if kernel:
        args.append("--kernel")
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_and_reference_explain_agree(case, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(case.policy)
    specs = [spec for spec, _, _ in expectations(case)]
    assert explain(path, specs, kernel=True) == explain(path, specs, kernel=False)
