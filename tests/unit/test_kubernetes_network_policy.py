"""Kubernetes NetworkPolicy is converted as Calico converts it, and never
selects a host endpoint."""

from pathlib import Path

from hepbpf.compiler import compile_policy, parse_files

SEED = Path(__file__).parent.parent / "seeds" / "003_ibm_k8s_policies.yaml"


def test_conversion_like_calico():
    ps = parse_files([(SEED.name, SEED.read_text())])
    by = {p.name: p for p in ps.policies}
    backend = by["backend-allow"]
    assert (backend.kind, backend.namespace, backend.tier, backend.order) == \
        ("KubernetesNetworkPolicy", "default", "default", 1000.0)
    assert str(backend.selector) == \
        '(projectcalico.org/orchestrator == "k8s" && app == "Srv1" && tier == "backend")'
    (rule,) = backend.ingress
    assert rule.action == "Allow" and rule.protocol is None
    assert str(rule.source.selector) == \
        '(projectcalico.org/orchestrator == "k8s" && Tier == "frontend" && app == "Srv1")'
    (rule,) = by["accounts-allow"].ingress
    assert by["accounts-allow"].namespace == "accounts"
    assert rule.protocol.number == 6 and [str(p) for p in rule.destination.ports] == ["3111"]
    assert str(rule.source.namespace_selector) == 'usage == "finance"'


def test_never_selects_a_host_endpoint():
    hep = """apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h, labels: {app: Srv1, tier: backend, projectcalico.org/orchestrator: k8s}}
spec: {node: n1, interfaceName: eth1, profiles: [projectcalico-default-allow]}
"""
    comp = compile_policy([(SEED.name, SEED.read_text()), ("hep.yaml", hep)], node="n1", iface="eth1")
    assert comp.views[0].tiers == ()
