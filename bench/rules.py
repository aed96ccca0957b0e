"""The rule sets every engine in the benchmark gets, and the packets sent.

One neutral description (`RuleSet`) is rendered for each engine: hepbpf
YAML here, iptables/nftables text in netfilter.py, straight-line C in
linear.py. So every engine judges the same rules, in the same order.

Shape, as in the perf probe: N rules, each (protocol, source CIDR,
destination port range) -> Deny. The first N-1 never match a benchmark
packet (their CIDRs avoid the packets' sources), though half of them share
the packets' first octet, so a linear matcher gets past the address
compare; rule N matches the "last" packet. Cases:

    none    the packet matches no rule and falls to the default (dropped)
    last    the packet matches the last rule
    mix     64 packets, each matching a random rule (in-kernel only)

Addresses are documentation ranges for the packets (traffic stays in the
harness's own namespaces); rule CIDRs are arbitrary, they are only
compared against.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

CASES = ("none", "last", "mix")
MIX_PACKETS = 64

# Packet endpoints per family: (source of "none", source of "last", the
# last rule's CIDR, destination).
_ENDPOINTS = {
    4: ("203.0.113.200", "198.51.100.7", "198.51.100.0/24", "192.0.2.1"),
    6: ("2001:db8:ffff::200", "2001:db8:100::7", "2001:db8:100::/48", "2001:db8::1"),
}
DPORT = 443
LAST_PORTS = (400, 500)


@dataclass(frozen=True, slots=True)
class Rule:
    proto: str  # "TCP" | "UDP"
    src: ipaddress.IPv4Network | ipaddress.IPv6Network
    ports: tuple[int, int]  # destination port range, inclusive


@dataclass(frozen=True, slots=True)
class Probe:
    """One benchmark packet: a TCP SYN (or UDP datagram) to DPORT."""

    proto: str
    src: str
    dst: str
    dport: int


@dataclass(frozen=True, slots=True)
class RuleSet:
    family: int
    rules: tuple[Rule, ...]
    seed: int

    @property
    def n(self) -> int:
        return len(self.rules)

    def probes(self, case: str) -> tuple[Probe, ...]:
        none_src, last_src, _, dst = _ENDPOINTS[self.family]
        if case == "none":
            return (Probe("TCP", none_src, dst, DPORT),)
        if case == "last":
            return (Probe("TCP", last_src, dst, DPORT),)
        if case == "mix":
            rnd = random.Random(self.seed + 1)
            out = []
            for _ in range(MIX_PACKETS):
                r = self.rules[rnd.randrange(self.n)]
                host = r.src.network_address + rnd.randrange(r.src.num_addresses)
                out.append(Probe(r.proto, str(host), dst, rnd.randint(*r.ports)))
            return tuple(out)
        raise ValueError(f"unknown case {case!r}")

    def first_match(self, p: Probe) -> int | None:
        """Index of the first rule matching ``p`` (the harness checks every
        engine's verdict against this before timing it)."""
        src = ipaddress.ip_address(p.src)
        for i, r in enumerate(self.rules):
            if r.proto == p.proto and src in r.src and r.ports[0] <= p.dport <= r.ports[1]:
                return i
        return None


def _random_cidr(rnd: random.Random, family: int, avoid: list) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    bits = 32 if family == 4 else 128
    first = 8 if family == 4 else 16  # prefix lengths drawn from [first, bits]
    anchor = ipaddress.ip_address(_ENDPOINTS[family][0])
    while True:
        plen = rnd.randint(first, bits)
        if rnd.random() < 0.5:  # share the packets' first octet (v6: first 16 bits)
            top = int(anchor) >> (bits - first)
            addr = (top << (bits - first)) | rnd.getrandbits(bits - first)
        else:
            addr = rnd.getrandbits(bits)
        cls = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
        net = cls((addr >> (bits - plen) << (bits - plen), plen))
        if not any(a in net for a in avoid):
            return net


def rule_set(n: int, family: int = 4, seed: int = 1) -> RuleSet:
    """N rules: N-1 that no "none"/"last" packet matches, then the last
    rule. Deterministic for (n, family, seed)."""
    if n < 1:
        raise ValueError("a rule set needs at least one rule")
    rnd = random.Random(seed * 1_000_003 + n * 10 + family)
    none_src, last_src, last_cidr, _ = _ENDPOINTS[family]
    avoid = [ipaddress.ip_address(none_src), ipaddress.ip_address(last_src)]
    rules = []
    for _ in range(n - 1):
        lo = rnd.randint(1024, 63000)
        rules.append(Rule(rnd.choice(("TCP", "UDP")), _random_cidr(rnd, family, avoid),
                          (lo, lo + rnd.randint(0, 2000))))
    rules.append(Rule("TCP", ipaddress.ip_network(last_cidr), LAST_PORTS))
    return RuleSet(family, tuple(rules), seed)


NODE, IFACE = "bench-node", "hb-bench0"


def host_endpoint_yaml(address: str, iface: str = IFACE, node: str = NODE) -> str:
    """The benchmarks' HostEndpoint (label role: bench), one document
    ending in ``---``."""
    return f"""apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: {node}-{iface}
  labels: {{role: bench}}
spec:
  node: {node}
  interfaceName: "{iface}"
  expectedIPs: ["{address}"]
---
"""


def hepbpf_yaml(rs: RuleSet, iface: str = IFACE, node: str = NODE) -> str:
    """The rule set as one Calico GlobalNetworkPolicy on a HostEndpoint."""
    out = [host_endpoint_yaml(_ENDPOINTS[rs.family][3], iface, node) + f"""apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: bench-{rs.n}
spec:
  selector: role == 'bench'
  types: [Ingress, Egress]
  ingress:"""]
    for r in rs.rules:
        lo, hi = r.ports
        ports = f"{lo}" if lo == hi else f'"{lo}:{hi}"'
        out.append(f"  - action: Deny\n    protocol: {r.proto}\n    source: {{nets: [{r.src}]}}\n"
                   f"    destination: {{ports: [{ports}]}}")
    # Egress judged by the same rules with the roles swapped (tc benchmark).
    out.append("  egress:")
    for r in rs.rules:
        lo, hi = r.ports
        ports = f"{lo}" if lo == hi else f'"{lo}:{hi}"'
        out.append(f"  - action: Deny\n    protocol: {r.proto}\n    destination: {{nets: [{r.src}], "
                   f"ports: [{ports}]}}")
    return "\n".join(out) + "\n"
