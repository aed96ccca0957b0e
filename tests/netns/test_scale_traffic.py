"""A 10,000-rule policy attaches and enforces real traffic."""

import pytest

from hepbpf.vm.probe import PacketSpec, probe

from ..scale import big_policy
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns


def test_ten_thousand_rules_attach_and_enforce(lab, tmp_path):
    pol = tmp_path / "big.yaml"
    pol.write_text(big_policy())
    out = hepbpf(lab, "attach", "eth1", str(pol), "--node", "n1")
    assert "10030 slots" in out.stdout
    specs = [PacketSpec("tcp", "198.51.100.1", "192.0.2.1", dport=20000),     # rule 0: deny
             PacketSpec("tcp", "198.51.100.250", "192.0.2.1", dport=20039),   # rule 9999: deny
             PacketSpec("tcp", "198.51.100.251", "192.0.2.1", dport=20039),   # final allow
             PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=22),        # failsafe
             PacketSpec("udp", "198.51.100.7", "192.0.2.1", dport=20000)]     # end of tier
    assert probe(lab, lab.clients[0], specs) == [False, False, True, True, False]
    rules = {(r["policy"], r["rule"]): r["packets"] for r in status(lab)["rules"]}
    assert rules[("big", 0)] >= 1 and rules[("big", 9999)] >= 1 and rules[("big", 10000)] >= 1
    hepbpf(lab, "detach", "eth1")
