"""What Calico's validator (libcalico-go validator.go, the CRD CEL rules)
rejects, hepbpf rejects with file:line:col, path, value and reason; what it
accepts, hepbpf accepts.

Decisions where Calico accepts something hepbpf cannot enforce the same way:

* ``serviceAccounts`` is accepted and folded into the rule's selector as
  Calico's update processor does (names -> ``projectcalico.org/serviceaccount
  in {...}``, selector -> labels prefixed ``pcsa.``, AND-ed before the rule
  selector). Only workloads carry those labels, so for host traffic the rule
  normally matches nothing - exactly what Calico's IP sets give.
* ``http`` is validated like Calico and then ignored with a warning: only the
  application layer (Dikastes, beside workloads) reads it; felix renders the
  rule without it, so on a HEP it matches at L3/L4 alone, and so does hepbpf.
* ``services`` is validated like Calico, then refused: it stands for a
  Service's endpoint addresses, which may be host addresses (the kubernetes
  API service) and which hepbpf has no source for.
* A named port in ``notPorts`` is valid but refused (resolving a negated
  named port needs the resolve/lower passes).
* An SCTP failsafe entry passes calicoctl but makes felix reject the whole
  list and not start, so hepbpf refuses it.
* KubeControllersConfiguration host endpoint templates are validated like
  Calico, then refused (they need node interface names and addresses).
"""

import pytest

from hepbpf.compiler import PolicyError, parse_files

HEAD = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: p
spec:
  ingress:
  - action: Allow
"""
V3 = "apiVersion: projectcalico.org/v3\n"


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        parse_files([("t.yaml", text)])
    return [str(d) for d in e.value.diagnostics]


def accepted(text: str):
    return parse_files([("t.yaml", text)])


@pytest.mark.parametrize("extra, expected", [
    # nets: Calico's "net" validator wants the network address itself
    ("    source: {nets: [10.0.0.1/8]}\n",
     "t.yaml:8:21: spec.ingress[0].source.nets[0] = '10.0.0.1/8': host bits are set (a rule takes a network "
     "address: did you mean 10.0.0.0/8?)"),
    ("    source: {nets: ['fe80::1%eth0']}\n",
     "t.yaml:8:21: spec.ingress[0].source.nets[0] = 'fe80::1%eth0': not a valid IP address or CIDR"),
    ("    source: {notNets: ['::/0']}\n",
     "t.yaml:8:24: spec.ingress[0].source.notNets[0] = '::/0': notNets may not contain a catch-all CIDR "
     "(it would match nothing)"),
    ("    source: {nets: [10.0.0.0/8]}\n    ipVersion: 6\n",
     "t.yaml:7:5: spec.ingress[0] = 'nets': CIDRs do not match ipVersion 6"),
    # ports
    ("    protocol: UDPLite\n    destination: {ports: [80]}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports = '80': ports are only valid with protocol TCP, UDP or SCTP"),
    ("    destination: {ports: [http], notPorts: [80]}\n",
     "t.yaml:8:45: spec.ingress[0].destination.notPorts = '80': ports are only valid with protocol TCP, UDP "
     "or SCTP"),
    ("    protocol: TCP\n    destination: {ports: ['1:65536']}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = '1:65536': port number must be between 1 and 65535"),
    ("    protocol: TCP\n    destination: {ports: ['Http']}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = 'Http': invalid port name"),
    ("    protocol: TCP\n    destination: {ports: ['a-very-long-port-name']}\n",
     "t.yaml:9:27: spec.ingress[0].destination.ports[0] = 'a-very-long-port-name': invalid port name"),
    ("    protocol: TCP\n    destination: {notPorts: [http]}\n",
     "t.yaml:9:30: spec.ingress[0].destination.notPorts = 'http': valid, but not supported by hepbpf yet: a "
     "named port in notPorts (write the port numbers instead)"),
    # icmp and ipVersion
    ("    protocol: ICMP\n    icmp: {type: 8, code: 256}\n",
     "t.yaml:9:27: spec.ingress[0].icmp.code = 256: ICMP code must be between 0 and 255"),
    ("    notProtocol: ICMP\n    ipVersion: 6\n",
     "t.yaml:8:18: spec.ingress[0].notProtocol = 'ICMP': ICMP cannot be used with ipVersion 6"),
    # selectors: global() only alone in a rule namespaceSelector
    ("    source: {namespaceSelector: 'global() && all()'}\n",
     "t.yaml:8:33: spec.ingress[0].source.namespaceSelector = 'global() && all()': invalid selector: global() "
     "cannot be combined with other selectors (at offset 0)"),
    # services
    ("    source: {services: {name: kubernetes, namespace: default}}\n",
     "t.yaml:8:24: spec.ingress[0].source.services: valid, but not supported by hepbpf: it matches a "
     "Kubernetes Service's endpoints, which hepbpf has no source for"),
    ("    source: {services: {namespace: default}}\n",
     "t.yaml:8:24: spec.ingress[0].source.services: services must specify a service name"),
    ("    source: {services: {name: kubernetes}}\n",
     "t.yaml:8:24: spec.ingress[0].source.services: must specify a namespace in a GlobalNetworkPolicy"),
    ("    destination: {services: {name: kubernetes, namespace: default}}\n",
     "t.yaml:8:29: spec.ingress[0].destination.services: not allowed in ingress rule destination"),
    ("    source: {services: {name: kubernetes, namespace: default}, selector: 'a == \"b\"'}\n",
     "t.yaml:8:24: spec.ingress[0].source.services: cannot specify Selector/NotSelector and services on the "
     "same rule side"),
    ("    source: {services: {name: Kube, namespace: default}}\n",
     "t.yaml:8:31: spec.ingress[0].source.services.name = 'Kube': must be a DNS subdomain (lower-case "
     "alphanumerics, '-' and '.')"),
    # http
    ("    http: {methods: [GET, GET]}\n",
     "t.yaml:8:27: spec.ingress[0].http.methods[1] = 'GET': duplicate HTTP method"),
    ("    http: {paths: [{exact: /a, prefix: /b}]}\n",
     "t.yaml:8:20: spec.ingress[0].http.paths[0]: set exact or prefix, not both"),
    ("    http: {paths: [{exact: 'a'}]}\n",
     "t.yaml:8:28: spec.ingress[0].http.paths[0].exact = 'a': a path must start with '/' and contain no '?', "
     "'#' or space"),
    ("    http: {paths: [{prefix: '/a?b'}]}\n",
     "t.yaml:8:29: spec.ingress[0].http.paths[0].prefix = '/a?b': a path must start with '/' and contain no "
     "'?', '#' or space"),
    ("    protocol: UDP\n    http: {methods: [GET]}\n",
     "t.yaml:9:11: spec.ingress[0].http: rules with an HTTP match must have protocol TCP or none, not UDP"),
    # rule metadata annotations
    ("    metadata: {annotations: {'...': x}}\n",
     "t.yaml:8:30: spec.ingress[0].metadata.annotations.... = '...': invalid annotation name: the name part "
     "takes alphanumerics, '-', '_' and '.', and must start and end with an alphanumeric"),
])
def test_rule_rejections(extra, expected):
    assert errors(HEAD + extra) == [expected]


def test_list_size_limits():
    nets = ", ".join(f"10.0.{i // 256}.{i % 256}" for i in range(257))
    assert errors(HEAD + f"    source: {{nets: [{nets}]}}\n") == [
        "t.yaml:8:20: spec.ingress[0].source.nets = 257: too many entries: 257 (at most 256)"]
    ports = ", ".join(str(p) for p in range(1, 52))
    assert errors(HEAD + f"    protocol: TCP\n    destination: {{notPorts: [{ports}]}}\n") == [
        "t.yaml:9:29: spec.ingress[0].destination.notPorts = 51: too many entries: 51 (at most 50)"]
    methods = ", ".join(f"M{i}" for i in range(21))
    assert errors(HEAD + f"    http: {{methods: [{methods}]}}\n") == [
        "t.yaml:8:21: spec.ingress[0].http.methods = 21: too many entries: 21 (at most 20)"]


@pytest.mark.parametrize("extra", [
    "    source: {nets: [10.0.0.1]}\n",  # a bare IP is a /32
    "    source: {notSelector: 'global()'}\n",  # Calico checks global() in `selector` only
    "    source: {selector: '!a == \"x\"'}\n",
    "    source: {namespaceSelector: '  global()  '}\n",
    "    protocol: '6'\n    destination: {ports: [80, '1000:2000', http]}\n",
    "    protocol: SCTP\n    destination: {ports: [9]}\n",
    "    destination: {ports: [http]}\n",  # named port, no protocol: valid since v3.32
    "    protocol: 1\n    icmp: {type: 8, code: 0}\n",
    "    protocol: ICMPv6\n    notICMP: {type: 1}\n",
    "    icmp: {type: 254}\n    protocol: ICMP\n    ipVersion: 4\n",
    "    notICMP: {type: 3}\n",  # notICMP has no protocol requirement
    "    metadata: {annotations: {'Example.COM/Note': x}}\n",
])
def test_rule_acceptances(extra):
    accepted(HEAD + extra)


def test_service_accounts_fold_into_the_selector_as_calico_does():
    ps = accepted(HEAD + "    source: {selector: 'a == \"b\"', serviceAccounts: {names: [x, y], "
                         "selector: 'role == \"db\"'}}\n")
    assert str(ps.policies[0].ingress[0].source.selector) == (
        '((pcsa.role == "db" && projectcalico.org/serviceaccount in {"x", "y"}) && a == "b")')


def test_http_is_ignored_with_a_warning():
    ps = accepted(HEAD + "    http: {methods: [GET], paths: [{prefix: /api}]}\n")
    assert [str(w) for w in ps.warnings] == [
        "t.yaml:8:11: warning: spec.ingress[0].http: ignored on host endpoints: Calico enforces http only in "
        "application-layer policy for workloads, so this rule matches as if http were absent"]


@pytest.mark.parametrize("text, expected", [
    ("kind: NetworkPolicy\nmetadata: {name: t.h.i.ng}\n",
     "t.yaml:3:18: metadata.name = 't.h.i.ng': invalid NetworkPolicy name: must be a DNS label, two DNS labels "
     "joined by '.', or knp.default. or ossg.default. followed by a DNS subdomain"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: knp.default.thing}\n",
     "t.yaml:3:18: metadata.name = 'knp.default.thing': invalid GlobalNetworkPolicy name: must be lower-case "
     "alphanumerics and '-', at most one '.', starting and ending with an alphanumeric"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: " + "a" * 254 + "}\n",
     "t.yaml:3:18: metadata.name = '" + "a" * 254 + "': name is 254 characters (at most 253)"),
    ("kind: GlobalNetworkSet\nmetadata: {name: test$set}\nspec: {nets: [10.0.0.1]}\n",
     "t.yaml:3:18: metadata.name = 'test$set': invalid GlobalNetworkSet name: must be a DNS subdomain: "
     "lower-case alphanumerics, '-' and '.', starting and ending with an alphanumeric"),
    ("kind: Tier\nmetadata: {name: a.b}\n",
     "t.yaml:3:18: metadata.name = 'a.b': invalid Tier name: must be a DNS label: lower-case alphanumerics and "
     "'-', no dots"),
    ("kind: KubeControllersConfiguration\nmetadata: {name: other}\n",
     "t.yaml:3:18: metadata.name = 'other': a KubeControllersConfiguration must be named default"),
    ("kind: NetworkSet\nmetadata: {name: s, namespace: Bad_NS}\nspec: {nets: [10.0.0.1]}\n",
     "t.yaml:3:32: metadata.namespace = 'Bad_NS': a namespace name must be a DNS label"),
    ("kind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {nets: [garbage]}\n",
     "t.yaml:4:15: spec.nets[0] = 'garbage': not a valid IP address or CIDR"),
    ("kind: GlobalNetworkSet\nmetadata: {name: s, labels: {projectcalico.org/namespace: foo}}\n"
     "spec: {nets: [10.0.0.1]}\n",
     "t.yaml:3:29: metadata.labels: label projectcalico.org/namespace is reserved"),
    # labels and annotations
    ("kind: HostEndpoint\nmetadata: {name: h, labels: {a: " + "x" * 64 + "}}\n"
     "spec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:33: metadata.labels.a = '" + "x" * 64 + "': invalid label value: 64 characters (at most 63)"),
    ("kind: HostEndpoint\nmetadata: {name: h, labels: {ProjectCalico.org/label: v}}\n"
     "spec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:30: metadata.labels.ProjectCalico.org/label = 'ProjectCalico.org/label': invalid label name: the "
     "prefix must be a lower-case DNS subdomain"),
    ("kind: HostEndpoint\nmetadata: {name: h, labels: {.mylabel: v}}\nspec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:30: metadata.labels..mylabel = '.mylabel': invalid label name: the name part takes "
     "alphanumerics, '-', '_' and '.', and must start and end with an alphanumeric"),
    ("kind: HostEndpoint\nmetadata: {name: h, labels: {/a: v}}\nspec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:30: metadata.labels./a = '/a': invalid label name: the prefix before '/' is empty"),
    ("kind: HostEndpoint\nmetadata: {name: h, labels: {a: -v}}\nspec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:33: metadata.labels.a = '-v': invalid label value: alphanumerics, '-', '_' and '.', starting "
     "and ending with an alphanumeric (or empty)"),
    ("kind: HostEndpoint\nmetadata: {name: h, annotations: {projectcalico.org$label: v}}\n"
     "spec: {node: n1, interfaceName: eth0}\n",
     "t.yaml:3:35: metadata.annotations.projectcalico.org$label = 'projectcalico.org$label': invalid annotation "
     "name: the name part takes alphanumerics, '-', '_' and '.', and must start and end with an alphanumeric"),
    # host endpoints
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: '', interfaceName: eth0}\n",
     "t.yaml:4:14: spec.node = '': no node has been specified"),
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {interfaceName: eth0}\n",
     "t.yaml:4:7: spec.node: required field is missing"),
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: eth0, profiles: [.fun]}\n",
     "t.yaml:4:50: spec.profiles[0] = '.fun': invalid profile name: must be a DNS subdomain (lower-case "
     "alphanumerics, '-' and '.', starting and ending with an alphanumeric)"),
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: 'Invalid:Intface'}\n",
     "t.yaml:4:33: spec.interfaceName = 'Invalid:Intface': must be '*' or an interface name of 1-15 characters "
     "[a-zA-Z0-9_.-]"),
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, expectedIPs: ['fe80::1%eth0']}\n",
     "t.yaml:4:32: spec.expectedIPs[0] = 'fe80::1%eth0': not a valid IP address (expectedIPs take addresses, "
     "not CIDRs)"),
    ("kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: '*', ports: [{name: p, "
     "protocol: ICMP, port: 1}]}\n",
     "t.yaml:4:66: spec.ports[0].protocol = 'ICMP': protocol must be TCP, UDP or SCTP"),
    # policy level
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {namespaceSelector: 'global()'}\n",
     "t.yaml:4:27: spec.namespaceSelector = 'global()': invalid selector: global() is only valid in a rule "
     "namespaceSelector (at offset 0)"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {serviceAccountSelector: 'global()'}\n",
     "t.yaml:4:32: spec.serviceAccountSelector = 'global()': invalid selector: global() is only valid in a "
     "rule namespaceSelector (at offset 0)"),
    ("kind: NetworkPolicy\nmetadata: {name: p}\nspec: {doNotTrack: true}\n",
     "t.yaml:4:8: spec.doNotTrack: unknown field"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {types: [unexpected]}\n",
     "t.yaml:4:16: spec.types[0] = 'unexpected': must be Ingress or Egress"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {preDNAT: true, applyOnForward: true, "
     "types: [Ingress, Egress]}\n",
     "t.yaml:4:52: spec.types: a preDNAT policy cannot have egress rules or the Egress type"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {doNotTrack: true}\n",
     "t.yaml:4:20: spec.doNotTrack = true: doNotTrack requires applyOnForward: true"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {egress: [{action: Allow, http: {methods: [GET]}}]}\n",
     "t.yaml:4:39: spec.egress[0].http: HTTP match is not allowed in egress rules"),
    ("kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Deny, http: {methods: [GET]}}]}\n",
     "t.yaml:4:39: spec.ingress[0].http: HTTP match is only valid on Allow rules"),
    ("kind: NetworkPolicy\nmetadata: {name: p}\nspec: {egress: [{action: Allow, source: {services: "
     "{name: s, namespace: d}}}]}\n",
     "t.yaml:4:52: spec.egress[0].source.services: not allowed in egress rule source"),
    # FelixConfiguration and KubeControllersConfiguration
    ("kind: FelixConfiguration\nmetadata: {name: default}\n"
     "spec: {failsafeInboundHostPorts: [{protocol: SCTP, port: 22}]}\n",
     "t.yaml:4:46: spec.failsafeInboundHostPorts[0].protocol = 'SCTP': felix accepts only tcp and udp failsafe "
     "entries (an sctp entry makes it reject the whole list)"),
    ("kind: FelixConfiguration\nmetadata: {name: default}\n"
     "spec: {failsafeInboundHostPorts: [{protocol: ICMP, port: 22}]}\n",
     "t.yaml:4:46: spec.failsafeInboundHostPorts[0].protocol = 'ICMP': protocol must be TCP, UDP or SCTP"),
    ("kind: KubeControllersConfiguration\nmetadata: {name: default}\nspec: {controllers: {node: {hostEndpoint: "
     "{autoCreate: Enabled, templates: [{generateName: t}]}}}}\n",
     "t.yaml:4:77: spec.controllers.node.hostEndpoint.templates[0]: at least one of interfaceCIDRs and "
     "interfacePattern is required"),
    ("kind: KubeControllersConfiguration\nmetadata: {name: default}\nspec: {controllers: {node: {hostEndpoint: "
     "{autoCreate: Enabled, templates: [{generateName: Bad_Name, interfaceCIDRs: [10.0.0.0/8]}]}}}}\n",
     "t.yaml:4:92: spec.controllers.node.hostEndpoint.templates[0].generateName = 'Bad_Name': must be a DNS "
     "subdomain (lower-case alphanumerics, '-' and '.')"),
    ("kind: KubeControllersConfiguration\nmetadata: {name: default}\nspec: {controllers: {node: {hostEndpoint: "
     "{autoCreate: Enabled, templates: [{generateName: t, interfacePattern: 'eth.*'}]}}}}\n",
     "t.yaml:4:76: spec.controllers.node.hostEndpoint.templates: valid, but not supported by hepbpf yet: "
     "template host endpoints need the nodes' interface names and addresses, which hepbpf does not read"),
])
def test_resource_rejections(text, expected):
    assert errors(V3 + text) == [expected]


def test_kubernetes_policy_name():
    assert errors("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad}\n"
                  "spec: {podSelector: {}}\n") == [
        "t.yaml:3:18: metadata.name = 'Bad': invalid Kubernetes NetworkPolicy name: must be a DNS subdomain: "
        "lower-case alphanumerics, '-' and '.', starting and ending with an alphanumeric"]


@pytest.mark.parametrize("text", [
    "kind: NetworkPolicy\nmetadata: {name: knp.default.thing.x}\n",
    "kind: NetworkPolicy\nmetadata: {name: a.b}\n",
    "kind: GlobalNetworkPolicy\nmetadata: {name: tier1.p}\n",
    "kind: GlobalNetworkPolicy\nmetadata: {name: " + "a" * 253 + "}\n",
    "kind: GlobalNetworkSet\nmetadata: {name: my.set-1}\n"
    "spec: {nets: [10.0.0.1, 11.0.0.1/8, 'dead:beef::', 'dead:beef::/96']}\n",
    "kind: HostEndpoint\nmetadata: {name: h.example.com, labels: {projectcalico.org/Label: " + "x" * 63 + ", "
    "empty: ''}, annotations: {ProjectCalico.org/Label: v}}\n"
    "spec: {node: n1, interfaceName: Valid_Iface.0-9, profiles: [knp.default.fun, fun-funner1234]}\n",
    "kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, expectedIPs: [192.0.2.1, '2001:db8::1']}\n",
    "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {preDNAT: true, applyOnForward: true, "
    "ingress: [{action: Allow}]}\n",
    "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {types: [], ingress: [{action: Allow}], "
    "egress: [{action: Allow}]}\n",
    "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {types: [Egress], ingress: [{action: Allow}]}\n",
    "kind: FelixConfiguration\nmetadata: {name: node.n1}\nspec: {failsafeInboundHostPorts: []}\n",
])
def test_resource_acceptances(text):
    accepted(V3 + text)
