"""The behaviour table: policy, packets it must allow, packets it must deny.

One table, three executors: the reference evaluator (tests/unit), the real
XDP object through BPF_PROG_TEST_RUN (tests/bpf), and scapy traffic over
veth in namespaces (tests/netns). Expanders re-run it with unrelated policy
added. Addresses: the node is 192.0.2.1 / 2001:db8::1 (documentation
ranges); node "n1", interface "eth1".
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE, IFACE = "n1", "eth1"


def hep(labels: str = 'role: "node"', ips: str = "[192.0.2.1, 2001:db8::1]", profiles: str = "[]",
        name: str = "n1-eth1", iface: str = IFACE, node: str = NODE) -> str:
    return f"""
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  node: {node}
  interfaceName: "{iface}"
  expectedIPs: {ips}
  profiles: {profiles}
---
"""


def gnp(name: str, spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
{body}
---
"""


def deny_then_allow(name: str, deny_port: int, allow_port: int) -> str:
    """The counting tests' policy: the host endpoint and one ingress policy,
    Deny TCP to ``deny_port`` (rule 0), Allow TCP to ``allow_port`` (rule 1)."""
    return hep() + gnp(name, f"""
selector: role == "node"
types: [Ingress]
ingress:
- action: Deny
  protocol: TCP
  destination: {{ports: [{deny_port}]}}
- action: Allow
  protocol: TCP
  destination: {{ports: [{allow_port}]}}
""")


@dataclass
class Case:
    name: str
    policy: str
    allowed: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    # (packet, policy, rule) triples: who must decide
    decided_by: list[tuple[str, str | None, int | None]] = field(default_factory=list)


def tcp(src: str, dport: int, sport: int = 40000, dst: str | None = None) -> str:
    if ":" in src:
        return f"tcp [{src}]:{sport} -> [{dst or '2001:db8::1'}]:{dport}"
    return f"tcp {src}:{sport} -> {dst or '192.0.2.1'}:{dport}"


def udp(src: str, dport: int, sport: int = 40000, dst: str | None = None) -> str:
    return tcp(src, dport, sport, dst).replace("tcp", "udp", 1)


C = "198.51.100.7"  # a client
D = "203.0.113.9"  # another client
C6 = "2001:db8::7"

CASES = [
    Case(
        "hep-without-policy-denies-all-but-failsafe",
        hep(),
        allowed=[tcp(C, 22), udp(C, 68), tcp(C, 179), tcp(C, 5473), tcp(C, 6443), tcp(C6, 22)],
        denied=[tcp(C, 80), udp(C, 22), f"icmp {C} -> 192.0.2.1 type 8 code 0", f"proto 47 {C} -> 192.0.2.1",
                tcp(C6, 80), udp(C, 53)],
    ),
    Case(
        "default-allow-profile",
        hep(profiles="[projectcalico-default-allow]"),
        allowed=[tcp(C, 80), udp(C6, 53), f"proto 47 {C} -> 192.0.2.1"],
    ),
    Case(
        "allow-one-port-end-of-tier",
        hep() + gnp("web", """
selector: role == "node"
ingress:
- action: Allow
  protocol: TCP
  destination:
    ports: [80, "8000:8080"]
"""),
        allowed=[tcp(C, 80), tcp(C, 8000), tcp(C, 8080), tcp(C6, 8042)],
        denied=[tcp(C, 81), tcp(C, 7999), tcp(C, 8081), udp(C, 80)],
        decided_by=[(tcp(C, 80), "web", 0), (tcp(C, 81), None, None)],
    ),
    Case(
        "order-decides-then-name",
        hep() + gnp("b-allow", """
selector: all()
order: 10
ingress:
- action: Allow
  protocol: TCP
""") + gnp("a-deny-80", """
selector: all()
order: 10
ingress:
- action: Deny
  protocol: TCP
  destination:
    ports: [80]
""") + gnp("z-first", """
selector: all()
order: 1
ingress:
- action: Allow
  source:
    nets: [203.0.113.0/24]
"""),
        allowed=[tcp(C, 81), tcp(D, 80)],
        denied=[tcp(C, 80)],
        decided_by=[(tcp(C, 80), "a-deny-80", 0), (tcp(D, 80), "z-first", 0), (tcp(C, 81), "b-allow", 0)],
    ),
    Case(
        "missing-order-sorts-last",
        hep() + gnp("no-order", """
selector: all()
ingress:
- action: Deny
""") + gnp("with-order", """
selector: all()
order: 1000000
ingress:
- action: Allow
  protocol: UDP
"""),
        allowed=[udp(C, 53)],
        denied=[tcp(C, 53)],
        decided_by=[(udp(C, 53), "with-order", 0), (tcp(C, 53), "no-order", 0)],
    ),
    Case(
        "nets-and-notnets-skip-other-family",
        hep() + gnp("nets", """
selector: all()
ingress:
- action: Allow
  source:
    nets: [198.51.100.0/24]
    notNets: [198.51.100.128/25]
- action: Allow
  source:
    notNets: [203.0.113.0/24]
  protocol: UDP
"""),
        allowed=[tcp(C, 80), udp("192.0.2.99", 53)],
        # notNets of IPv4 only: the rule never matches IPv6 (felix FilterRuleToIPVersion).
        denied=[tcp("198.51.100.200", 80), udp(D, 53), udp(C6, 53), tcp(C6, 80)],
    ),
    Case(
        "protocol-names-numbers-and-notprotocol",
        hep() + gnp("protos", """
selector: all()
ingress:
- action: Allow
  protocol: 47
- action: Allow
  protocol: "132"
  destination:
    ports: [9]
- action: Allow
  notProtocol: TCP
  source:
    nets: [203.0.113.0/24]
"""),
        allowed=[f"proto 47 {C} -> 192.0.2.1", f"sctp {C}:5 -> 192.0.2.1:9", udp(D, 1),
                 f"icmp {D} -> 192.0.2.1 type 8 code 0"],
        denied=[f"proto 50 {C} -> 192.0.2.1", f"sctp {C}:5 -> 192.0.2.1:10", tcp(D, 1)],
    ),
    Case(
        "icmp-type-code-and-noticmp",
        hep() + gnp("icmp", """
selector: all()
ingress:
- action: Allow
  protocol: ICMP
  icmp: {type: 8, code: 0}
- action: Allow
  protocol: ICMPv6
  icmp: {type: 128}
- action: Allow
  protocol: ICMP
  notICMP: {type: 13}
  source:
    nets: [203.0.113.0/24]
"""),
        allowed=[f"icmp {C} -> 192.0.2.1 type 8 code 0", f"icmp {C6} -> 2001:db8::1 type 128 code 5",
                 f"icmp {D} -> 192.0.2.1 type 3 code 1"],
        denied=[f"icmp {C} -> 192.0.2.1 type 8 code 1", f"icmp {C} -> 192.0.2.1 type 0 code 0",
                f"icmp {C6} -> 2001:db8::1 type 129 code 0", f"icmp {D} -> 192.0.2.1 type 13 code 0"],
    ),
    Case(
        "selectors-resolve-to-sets-and-expected-ips",
        hep() + gnp("sel", """
selector: all()
ingress:
- action: Allow
  protocol: TCP
  source:
    selector: trusted == "yes"
  destination:
    ports: [9091]
- action: Deny
  protocol: TCP
  source:
    notSelector: trusted == "yes"
  destination:
    ports: [9092]
- action: Allow
  protocol: TCP
  destination:
    ports: [9092]
""") + """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: trusted-set, labels: {trusted: "yes"}}
spec: {nets: [198.51.100.0/28, "2001:db8::7"]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: other-node, labels: {trusted: "yes"}}
spec: {node: n2, interfaceName: eth0, expectedIPs: [203.0.113.9]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: no-ips, labels: {trusted: "yes"}}
spec: {node: n3, interfaceName: eth0}
""",
        allowed=[tcp(C, 9091), tcp(C6, 9091), tcp(D, 9091), tcp(C, 9092), tcp(D, 9092)],
        denied=[tcp("198.51.100.99", 9091), tcp("192.0.2.50", 9092), tcp("2001:db8::8", 9092)],
        decided_by=[(tcp("192.0.2.50", 9092), "sel", 1)],
    ),
    Case(
        "pass-goes-to-next-tier-then-profiles",
        hep(profiles="[projectcalico-default-allow]") + """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
""" + gnp("sec-pass", """
tier: security
selector: all()
ingress:
- action: Pass
  source:
    nets: [198.51.100.0/24]
- action: Deny
  protocol: TCP
""") + gnp("default-web", """
selector: all()
ingress:
- action: Deny
  protocol: UDP
  destination:
    ports: [53]
- action: Pass
"""),
        allowed=[tcp(C, 80), udp(C, 54)],
        denied=[tcp(D, 80), udp(C, 53)],
        decided_by=[(tcp(D, 80), "sec-pass", 1), (udp(C, 53), "default-web", 0),
                    (tcp(C, 80), "projectcalico-default-allow", None)],
    ),
    Case(
        "pass-out-of-last-tier-without-profile-denies",
        hep() + gnp("pass-all", """
selector: all()
ingress:
- action: Pass
"""),
        denied=[tcp(C, 80)],
    ),
    Case(
        "tier-default-action-pass",
        hep() + """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: soft}
spec: {order: 50, defaultAction: Pass}
---
""" + gnp("soft-allow", """
tier: soft
selector: all()
ingress:
- action: Allow
  protocol: UDP
""") + gnp("hard", """
selector: all()
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [443]}
"""),
        allowed=[udp(C, 1), tcp(C, 443)],
        denied=[tcp(C, 444)],
    ),
    Case(
        "log-continues",
        hep() + gnp("log-then-allow", """
selector: all()
ingress:
- action: Log
  protocol: TCP
- action: Allow
  protocol: TCP
  destination: {ports: [80]}
"""),
        allowed=[tcp(C, 80)],
        denied=[tcp(C, 81)],
        decided_by=[(tcp(C, 80), "log-then-allow", 1)],
    ),
    Case(
        "ip-version-and-icmp-implied-family",
        hep() + gnp("v6-only", """
selector: all()
ingress:
- action: Allow
  ipVersion: 6
  protocol: UDP
- action: Allow
  protocol: 1
"""),
        allowed=[udp(C6, 53), f"icmp {C} -> 192.0.2.1 type 0 code 0"],
        denied=[udp(C, 53), f"icmp {C6} -> 2001:db8::1 type 128 code 0"],
    ),
    Case(
        "source-ports-and-notports",
        hep() + gnp("sports", """
selector: all()
ingress:
- action: Allow
  protocol: UDP
  source:
    ports: ["1000:2000"]
    notPorts: [1500]
"""),
        allowed=[udp(C, 9, sport=1000), udp(C, 9, sport=2000)],
        denied=[udp(C, 9, sport=1500), udp(C, 9, sport=999), tcp(C, 9, sport=1000)],
    ),
    Case(
        "overlapping-port-ranges-merge",
        hep() + gnp("overlap", """
selector: all()
ingress:
- action: Allow
  protocol: UDP
  source:
    ports: ["443:5443", 2000, "5000:6000"]
  destination:
    ports: [53, "50:60", 53]
"""),
        allowed=[udp(C, 53, sport=2000), udp(C, 50, sport=6000), udp(C, 60, sport=443)],
        denied=[udp(C, 53, sport=442), udp(C, 61, sport=2000), udp(C, 53, sport=6001)],
    ),
    Case(
        "named-ports-resolve-to-endpoint-ports",
        hep(name="n1-eth1") + """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth1-ports, labels: {role: "node"}}
spec:
  node: n9
  interfaceName: eth9
  expectedIPs: [192.0.2.1, "2001:db8::1"]
  ports:
  - {name: metrics, protocol: TCP, port: 9091}
  - {name: dns, protocol: UDP, port: 53}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: peer-ports, labels: {role: "peer"}}
spec:
  node: n2
  interfaceName: eth0
  expectedIPs: [203.0.113.9]
  ports:
  - {name: metrics, protocol: TCP, port: 9100}
---
""" + gnp("named", """
selector: all()
ingress:
- action: Allow
  protocol: TCP
  destination:
    ports: [metrics, 8080]
- action: Allow
  destination:
    ports: [dns]
- action: Allow
  protocol: TCP
  source:
    ports: [metrics]
"""),
        allowed=[tcp(C, 9091), tcp(C6, 9091), tcp(C, 8080), udp(C, 53), udp(C6, 53),
                 tcp(D, 1, sport=9100)],
        denied=[tcp(C, 9100), tcp(C, 53), udp(C, 9091), tcp(C, 1, sport=9100), tcp(D, 1, sport=9091)],
        decided_by=[(tcp(C, 9091), "named", 0), (udp(C, 53), "named", 1), (tcp(D, 1, sport=9100), "named", 2)],
    ),
    Case(
        "auto-host-endpoint-from-node",
        """
apiVersion: projectcalico.org/v3
kind: KubeControllersConfiguration
metadata: {name: default}
spec:
  controllers:
    node:
      hostEndpoint: {autoCreate: Enabled}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {kubernetes-host: "", node-role.kubernetes.io/master: ""}}
spec:
  bgp: {ipv4Address: 192.0.2.1/24, ipv6Address: "2001:db8::1/64"}
  addresses: [{address: 192.0.2.1, type: InternalIP}]
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2, labels: {kubernetes-host: ""}}
spec:
  bgp: {ipv4Address: 203.0.113.9/24}
---
""" + gnp("ingress-k8s-masters", """
selector: has(node-role.kubernetes.io/master)
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [6443]}
- action: Allow
  protocol: TCP
  source: {selector: has(kubernetes-host)}
  destination: {ports: [10250]}
"""),
        allowed=[tcp(C, 6443), tcp(D, 10250), tcp(C6, 6443)],
        # The auto HEP carries projectcalico-default-allow, but the policy's
        # tier ends in a deny, so the profile is never reached.
        denied=[tcp(C, 10250), tcp(C, 80)],
        decided_by=[(tcp(D, 10250), "ingress-k8s-masters", 1)],
    ),
    Case(
        "network-sets-global-and-namespaced",
        hep() + gnp("sets", """
selector: all()
ingress:
- action: Allow
  protocol: TCP
  source:
    selector: team == "blue"
  destination: {ports: [80]}
- action: Allow
  protocol: TCP
  source:
    namespaceSelector: projectcalico.org/name == "prod"
  destination: {ports: [81]}
- action: Allow
  protocol: TCP
  source:
    namespaceSelector: global()
    selector: team == "blue"
  destination: {ports: [82]}
""") + """
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: blue-prod, namespace: prod, labels: {team: blue}}
spec: {nets: [198.51.100.0/28]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: red-dev, namespace: dev, labels: {team: red}}
spec: {nets: [198.51.100.16/28]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blue-global, labels: {team: blue}}
spec: {nets: [203.0.113.0/28]}
""",
        allowed=[tcp(C, 80), tcp(D, 80), tcp(C, 81), tcp(D, 82)],
        denied=[tcp("198.51.100.20", 80), tcp("198.51.100.20", 81), tcp(D, 81), tcp(C, 82)],
    ),
    Case(
        "failsafes-configured-none-and-with-nets",
        hep() + """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: []
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.n1}
spec:
  failsafeInboundHostPorts:
  - {protocol: TCP, port: 2222, net: 198.51.100.0/24}
  - {protocol: UDP, port: 4789}
""",
        allowed=[tcp(C, 2222), udp(D, 4789), udp(C6, 4789)],
        denied=[tcp(C, 22), tcp(D, 2222), tcp(C6, 2222)],
    ),
    Case(
        "failsafe-beats-deny",
        hep() + gnp("deny-all", """
selector: all()
order: 1
ingress:
- action: Deny
"""),
        allowed=[tcp(C, 22)],
        denied=[tcp(C, 23)],
    ),
    Case(
        "specific-hep-beats-wildcard",
        hep(name="a-wild", iface="*", profiles="[projectcalico-default-allow]", labels='wild: "yes"')
        + hep(name="z-specific", labels='specific: "yes"') + gnp("on-specific", """
selector: has(specific)
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [80]}
"""),
        allowed=[tcp(C, 80)],
        denied=[tcp(C, 81)],
    ),
    Case(
        "smallest-hep-name-wins",
        hep(name="b-hep", labels='x: "b"') + hep(name="a-hep", labels='x: "a"') + gnp("for-a", """
selector: x == "a"
ingress:
- action: Allow
  protocol: UDP
""") + gnp("for-b", """
selector: x == "b"
ingress:
- action: Allow
  protocol: TCP
"""),
        allowed=[udp(C, 1)],
        denied=[tcp(C, 1)],
    ),
    Case(
        "stages-untracked-then-predNAT-then-normal",
        hep() + gnp("untracked-allow", """
selector: all()
doNotTrack: true
applyOnForward: true
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [8080]}
- action: Deny
  source: {nets: [203.0.113.0/24]}
""") + gnp("prednat-deny-nodeports", """
selector: all()
preDNAT: true
applyOnForward: true
ingress:
- action: Deny
  protocol: TCP
  destination: {ports: ["30000:32767"]}
""") + gnp("normal", """
selector: all()
ingress:
- action: Allow
  protocol: TCP
"""),
        allowed=[tcp(C, 8080), tcp(C, 80), tcp(C, 22)],
        denied=[tcp(D, 8081), tcp(C, 30080), udp(C, 30080)],
        decided_by=[(tcp(D, 8081), "untracked-allow", 1), (tcp(C, 30080), "prednat-deny-nodeports", 0),
                    (tcp(D, 8080), "untracked-allow", 0)],
    ),
    Case(
        "types-egress-only-leaves-ingress-to-profiles",
        hep() + gnp("egress-only", """
selector: all()
types: [Egress]
egress:
- action: Allow
ingress:
- action: Allow
"""),
        denied=[tcp(C, 80)],
    ),
    Case(
        "namespaced-policy-never-selects-a-hep",
        hep(profiles="[projectcalico-default-allow]") + """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ns-deny, namespace: default}
spec:
  selector: all()
  ingress:
  - action: Deny
""",
        allowed=[tcp(C, 80)],
    ),
]


# Unrelated policy that must change no verdict (Calico's "expanders").
EXPANDERS = {
    "other-node-policy": gnp("zz-other-node", """
selector: role == "elsewhere"
order: 0
ingress:
- action: Deny
- action: Allow
  protocol: TCP
"""),
    "other-hep-and-sets": """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: zz-other, labels: {role: elsewhere}}
spec: {node: n9, interfaceName: eth7, expectedIPs: [192.0.2.77]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: zz-unrelated, labels: {unrelated: "1"}}
spec: {nets: [10.0.0.0/8, "2001:db8:ffff::/48", 198.51.100.64/26]}
---
""",
}
