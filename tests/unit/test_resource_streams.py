"""Resources arrive as multi-document streams, `kind: List`, and with either
API group; several files merge into one policy set."""

from hepbpf.compiler import compile_policy, parse_files

HEP = """apiVersion: {api}
kind: HostEndpoint
metadata: {{name: h, labels: {{role: node}}}}
spec: {{node: n1, interfaceName: eth1}}
"""
GNP = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: role == 'node'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
"""


def test_crd_api_group_is_accepted():
    ps = parse_files([("a.yaml", HEP.format(api="crd.projectcalico.org/v1"))])
    assert ps.host_endpoints[0].name == "h"


def test_kind_list():
    text = """apiVersion: projectcalico.org/v3
kind: List
items:
- apiVersion: projectcalico.org/v3
  kind: HostEndpoint
  metadata: {name: h, labels: {role: node}}
  spec: {node: n1, interfaceName: eth1}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: web}
  spec: {selector: role == 'node'}
"""
    ps = parse_files([("list.yaml", text)])
    assert [h.name for h in ps.host_endpoints] == ["h"] and [p.name for p in ps.policies] == ["web"]


def test_files_merge():
    comp = compile_policy([("hep.yaml", HEP.format(api="projectcalico.org/v3")), ("gnp.yaml", GNP)],
                          node="n1", iface="eth1")
    view = comp.views[0]
    assert view.hep.name == "h" and [p.name for t in view.tiers for p in t.policies] == ["web"]


def test_types_inferred_like_the_calico_api():
    text = GNP + "---\n" + GNP.replace("name: web", "name: out").replace("ingress:", "egress:") + \
        "---\n" + GNP.replace("name: web", "name: none").replace("  ingress: [{action: Allow, protocol: TCP, " \
                                                                  "destination: {ports: [80]}}]\n", "")
    ps = parse_files([("t.yaml", text)])
    assert {p.name: p.types for p in ps.policies} == {"web": ("Ingress",), "out": ("Egress",),
                                                      "none": ("Ingress",)}
