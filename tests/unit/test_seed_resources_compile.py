"""Every Calico resource of the four seed documents (restored in
tests/seeds/) parses, validates and compiles for each host endpoint in it."""

from pathlib import Path

import pytest

from hepbpf.compiler import compile_policy, parse_files
from hepbpf.compiler.mapimage import CHAIN_INGRESS

SEEDS = sorted((Path(__file__).parent.parent / "seeds").glob("*.yaml"))


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_seed_compiles(path):
    text = path.read_text()
    ps = parse_files([(path.name, text)])
    assert ps.policies or ps.host_endpoints
    for hep in ps.host_endpoints:
        iface = "eth9" if hep.interface_name == "*" else hep.interface_name
        comp = compile_policy([(path.name, text)], node=hep.node, iface=iface)
        assert comp.views[CHAIN_INGRESS].hep is not None
        assert comp.image.slots[-1].reason_name == "forward-allow"
        assert any(s.reason_name == "no-profile" for s in comp.image.slots)


def test_felix_string_failsafes_are_read_with_a_warning():
    path = next(p for p in SEEDS if p.name.startswith("001_home_firewall.yaml"))
    ps = parse_files([(path.name, path.read_text())])
    assert [str(f) for f in ps.felix_configs[0].failsafe_inbound][:2] == ["tcp:22", "udp:68"]
    assert len(ps.warnings) == 8 and "calicoctl expects {protocol: TCP, port: 22}" in str(ps.warnings[0])


def test_seed_003_nodeport_range_is_a_range():
    path = next(p for p in SEEDS if p.name == "003_ibm_nodeports.yaml")
    ps = parse_files([(path.name, path.read_text())])
    deny = next(p for p in ps.policies if p.name == "deny-nodeports")
    assert str(deny.ingress[0].destination.ports[0]) == "30000:32767"
