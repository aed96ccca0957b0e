"""kube-controllers' automatic host endpoints, derived from Nodes when the
default KubeControllersConfiguration enables them (seed 002)."""

from pathlib import Path

from hepbpf.compiler import compile_policy, evaluate, parse_files, parse_spec

SEEDS = Path(__file__).parent.parent / "seeds"


def _seed_002():
    return [(p.name, p.read_text()) for p in sorted(SEEDS.glob("002_*.yaml"))]


def test_auto_hep_is_derived_like_kube_controllers():
    ps = parse_files([(n, t) for n, t in _seed_002() if "kube_controllers" in n])
    (h, _) = sorted(ps.host_endpoints, key=lambda h: h.name)
    assert h.name == "ip-172-16-101-147.us-west-2.compute.internal-auto-hep"
    assert h.interface_name == "*" and h.profiles == ("projectcalico-default-allow",)
    assert [str(a) for a in h.expected_ips] == ["172.16.101.147", "192.168.228.128"]
    assert dict(h.labels) == {"kubernetes-host": "", "node-role.kubernetes.io/master": "",
                              "projectcalico.org/created-by": "calico-kube-controllers"}


def test_disabled_by_default():
    text = (SEEDS / "002_auto_from_kube_controllers.yaml").read_text().replace("Enabled", "Disabled")
    assert parse_files([("x.yaml", text)]).host_endpoints == ()


def test_seed_policies_apply_to_the_auto_heps():
    sources = _seed_002()
    node = "ip-172-16-101-54.us-west-2.compute.internal"
    comp = compile_policy(sources, node=node, iface="ens5")
    view = comp.views[0]
    assert view.hep.name == f"{node}-auto-hep"
    master = "172.16.101.147"
    got = evaluate(view, parse_spec(f"tcp {master}:40000 -> 172.16.101.54:10250"))
    assert (got.verdict, got.policy, got.rule) == ("allow", "ingress-k8s-workers", 1)
    got = evaluate(view, parse_spec("tcp 172.16.101.99:40000 -> 172.16.101.54:10250"))
    assert (got.verdict, got.reason) == ("deny", "end-of-tier")
