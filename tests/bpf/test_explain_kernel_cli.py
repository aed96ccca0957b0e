"""`hepbpf explain --kernel` (BPF_PROG_TEST_RUN on the real object) prints
what the reference evaluator prints, for every packet of the table."""

import json
import subprocess
import sys

import pytest

from ..behaviour import expectations
from ..cases import CASES, IFACE, NODE

pytestmark = pytest.mark.bpf


def explain(path, specs, kernel, *extra):
    args = [sys.executable, "-m", "hepbpf.cli", "explain", str(path), "--node", NODE, "--iface", IFACE, *extra]
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


# The same packets as seen by the other hook and in the other situations:
# egress (tc), forwarded, and as packets of a flow conntrack knows.
MODES = [("--direction", "egress"), ("--forwarded",), ("--established",),
         ("--direction", "egress", "--forwarded"), ("--direction", "egress", "--established")]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "".join(m).replace("--", "+"))
def test_kernel_and_reference_agree_on_egress_forwarded_and_known_flows(mode, tmp_path):
    for case in CASES:
        path = tmp_path / f"{case.name}.yaml"
        path.write_text(case.policy)
        specs = [spec for spec, _, _ in expectations(case)]
        if "--established" in mode:
            specs = [s for s in specs if "type" not in s or " type 8" in s or " type 128" in s]
        got, want = explain(path, specs, True, *mode), explain(path, specs, False, *mode)
        assert got == want, case.name


def test_explain_names_conntrack_for_a_known_flow(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(CASES[0].policy)
    spec = "udp 192.0.2.1:5000 -> 198.51.100.7:9999"
    (new,) = explain(path, [spec], True, "--direction", "egress")
    (known,) = explain(path, [spec], True, "--direction", "egress", "--established")
    assert new["reason"] != "conntrack"
    assert known["reason"] == "conntrack" and known["stage"] == "conntrack" and known["verdict"] == "allow"
