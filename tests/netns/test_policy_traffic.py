"""The behaviour table as real traffic: scapy frames from a client
namespace, the policy attached with `hepbpf attach` inside the node
namespace, arrival observed behind XDP. Re-attaching for each case also
exercises the atomic policy replacement."""

import pytest

from hepbpf.compiler import parse_spec
from hepbpf.vm.probe import PacketSpec, probe

from ..behaviour import expectations
from ..cases import CASES
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("mode", ["native", "generic"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_traffic(lab, case, mode, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(case.policy)
    st = status(lab)
    if st and st["mode"] != mode:
        hepbpf(lab, "detach", "eth1")
    hepbpf(lab, "attach", "eth1", str(policy), "--node", "n1", "--mode", mode)
    assert status(lab)["mode"] == mode
    exp = list(expectations(case))
    specs = [PacketSpec.from_packet(parse_spec(spec)) for spec, _, _ in exp]
    arrived = probe(lab, lab.clients[0], specs)
    wrong = [f"{spec}: expected {verdict}, {'arrived' if got else 'dropped'}"
             for (spec, verdict, _), got in zip(exp, arrived) if got != (verdict == "allow")]
    assert not wrong, "\n".join(wrong)
