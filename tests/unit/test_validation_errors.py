"""Bad input is rejected like calicoctl would, with file:line:col, the field
path, the value and a reason - never coerced or dropped."""

import pytest

from hepbpf.compiler import PolicyError, compile_policy, parse_files

HEAD = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: p
spec:
  ingress:
  - action: Allow
"""


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_files([("t.yaml", text)])
    return [str(d) for d in e.value.diagnostics]


def rule_error(extra: str) -> str:
    (err,) = errors(HEAD + extra)
    return err


@pytest.mark.parametrize("extra, expected", [
    ("    protocol: tcp\n", "t.yaml:8:15: spec.ingress[0].protocol = 'tcp': protocol must be one of TCP, UDP, "
     "ICMP, ICMPv6, SCTP, UDPLite or 1-255 (names are case-sensitive: did you mean TCP?)"),
    ("    protocol: 0\n", "t.yaml:8:15: spec.ingress[0].protocol = 0: protocol number must be between 1 and 255"),
    ("    protocol: 256\n", "t.yaml:8:15: spec.ingress[0].protocol = 256: protocol number must be between 1 and 255"),
    ("    protocol: TCP\n    destination: {ports: [65536]}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = 65536: port number must be between 1 and 65535"),
    ("    protocol: TCP\n    destination: {ports: [0]}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = 0: port number must be between 1 and 65535"),
    ("    protocol: TCP\n    destination: {ports: ['80:70']}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = '80:70': range is empty (min > max)"),
    ("    protocol: TCP\n    destination: {ports: ['80-90']}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = '80-90': invalid port name (a range is written 'min:max')"),
    ("    destination: {ports: [80]}\n",
     "t.yaml:8:27: spec.ingress[0].destination.ports = '80': ports are only valid with protocol TCP, UDP or SCTP"),
    ("    protocol: ICMP\n    destination: {ports: [80]}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports = '80': ports are only valid with protocol TCP, UDP or SCTP"),
    ("    ipVersion: 5\n", "t.yaml:8:16: spec.ingress[0].ipVersion = 5: ipVersion must be 4 or 6"),
    ("    source: {notNets: [0.0.0.0/0]}\n",
     "t.yaml:8:24: spec.ingress[0].source.notNets[0] = '0.0.0.0/0': notNets may not contain a catch-all CIDR "
     "(it would match nothing)"),
    ("    source: {nets: [10.0.0.0/8]}\n    destination: {nets: ['2001:db8::/32']}\n",
     "t.yaml:7:5: spec.ingress[0] = 'nets': rule mixes IPv4 and IPv6 CIDRs"),
    ("    source: {nets: [10.0.0.0/33]}\n",
     "t.yaml:8:21: spec.ingress[0].source.nets[0] = '10.0.0.0/33': not a valid IP address or CIDR"),
    ("    source: {selector: 'a = \"b\"'}\n",
     "t.yaml:8:24: spec.ingress[0].source.selector = 'a = \"b\"': invalid selector: expected an operator after "
     "a label (==, !=, in, not in, contains, starts with, ends with) (at offset 2)"),
    ("    source: {selector: 'global()'}\n",
     "t.yaml:8:24: spec.ingress[0].source.selector = 'global()': invalid selector: global() is only valid in a "
     "rule namespaceSelector (at offset 0)"),
    ("    protocol: ICMP\n    icmp: {code: 1}\n",
     "t.yaml:9:18: spec.ingress[0].icmp.code = 1: ICMP code specified without an ICMP type"),
    ("    protocol: ICMP\n    icmp: {type: 255}\n",
     "t.yaml:9:18: spec.ingress[0].icmp.type = 255: ICMP type must be between 0 and 254"),
    ("    icmp: {type: 8}\n", "t.yaml:8:11: spec.ingress[0].icmp: icmp requires protocol ICMP or ICMPv6"),
    ("    protocol: ICMPv6\n    ipVersion: 4\n",
     "t.yaml:8:15: spec.ingress[0].protocol = 'ICMPv6': ICMPv6 cannot be used with ipVersion 4"),
    ("    bogus: 1\n", "t.yaml:8:5: spec.ingress[0].bogus: unknown field"),
    ("    source: {serviceAccounts: {names: [\"it's\"]}}\n",
     "t.yaml:8:40: spec.ingress[0].source.serviceAccounts.names[0] = \"it's\": a service account name cannot "
     "contain '"),
])
def test_rule_errors(extra, expected):
    assert rule_error(extra) == expected


def test_action_is_case_sensitive():
    text = HEAD.replace("action: Allow", "action: allow")
    assert errors(text) == ["t.yaml:7:13: spec.ingress[0].action = 'allow': action must be one of Allow, Deny, "
                            "Log, Pass"]


@pytest.mark.parametrize("spec, expected", [
    ("  preDNAT: true\n", "t.yaml:8:12: spec.preDNAT = true: preDNAT requires applyOnForward: true"),
    ("  preDNAT: true\n  doNotTrack: true\n  applyOnForward: true\n",
     "t.yaml:8:12: spec.preDNAT = true: preDNAT and doNotTrack cannot both be true"),
    ("  preDNAT: true\n  applyOnForward: true\n  egress: [{action: Allow}]\n",
     "t.yaml:10:11: spec.egress: a preDNAT policy cannot have egress rules or the Egress type"),
    ("  types: [Ingress, Ingress]\n", "t.yaml:8:20: spec.types[1] = 'Ingress': duplicate policy type"),
    ("  order: '10'\n", "t.yaml:8:10: spec.order = '10': must be a number"),
    ("  tier: missing\n", "t.yaml:1:1: spec.tier = 'missing': tier is not defined (add a Tier resource)"),
])
def test_policy_errors(spec, expected):
    text = HEAD + spec
    with pytest.raises(PolicyError) as e:
        compile_policy([("t.yaml", text)], node="n", iface="eth0")
    assert [str(d) for d in e.value.diagnostics] == [expected]


def test_resource_level_errors():
    assert errors("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n") == [
        "t.yaml:1:13: apiVersion = 'v1': apiVersion must be projectcalico.org/v3 (or crd.projectcalico.org/v1)"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: Pod\nmetadata: {name: x}\n") == [
        "t.yaml:2:7: kind = 'Pod': unsupported kind (hepbpf reads GlobalNetworkPolicy, NetworkPolicy, "
        "HostEndpoint, GlobalNetworkSet, NetworkSet, FelixConfiguration, Tier, Node, "
        "KubeControllersConfiguration)"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {}\n") == [
        "t.yaml:3:11: metadata.name: required field is missing"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: Web}\n") == [
        "t.yaml:3:18: metadata.name = 'Web': invalid GlobalNetworkPolicy name: must be lower-case alphanumerics "
        "and '-', at most one '.', starting and ending with an alphanumeric"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n"
                  "spec: {node: n1}\n") == [
        "t.yaml:4:7: spec: at least one of interfaceName and expectedIPs is required"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n"
                  "spec: {node: n1, expectedIPs: [10.0.0.0/24]}\n") == [
        "t.yaml:4:32: spec.expectedIPs[0] = '10.0.0.0/24': not a valid IP address (expectedIPs take "
        "addresses, not CIDRs)"]
    assert errors("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h, labels: {a: on}}\n"
                  "spec: {node: n1, interfaceName: eth0}\n")[0].startswith("t.yaml:3:")
    assert errors("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n"
                  "spec: {node: n1, interfaceName: this-name-is-too-long}\n") == [
        "t.yaml:4:33: spec.interfaceName = 'this-name-is-too-long': must be '*' or an interface name of 1-15 "
        "characters [a-zA-Z0-9_.-]"]


def test_every_error_is_reported_at_once():
    bad = HEAD.replace("action: Allow", "action: Nope")
    errs = errors(bad + "---\n" + bad.replace("name: p", "name: q"))
    assert len(errs) == 2 and all("action = 'Nope'" in e for e in errs)


def test_duplicate_resources_are_an_error():
    errs = errors(HEAD + "---\n" + HEAD)
    assert errs == ["t.yaml:9:1: metadata.name = 'p': duplicate GlobalNetworkPolicy (first defined at t.yaml:1:1)"]
