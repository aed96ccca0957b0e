"""Random Calico policy sets and packets for the differential tests.

Everything generated is valid Calico (the generator respects the
validator's cross-field rules), written as JSON documents (JSON is YAML 1.2),
so each draw also exercises the parser. Addresses come from documentation
ranges; packets are drawn near the CIDRs the policy mentions so that prefix
edges and port-range edges are hit often.
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass

from hepbpf.compiler.packet import Packet

NODE, IFACE = "n1", "eth1"
V4_POOLS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
V6_POOLS = [ipaddress.ip_network(n) for n in ("2001:db8::/64", "2001:db8:1::/64", "2001:db8:ff::/64")]
LABEL_KEYS = ["role", "env", "tier", "zone"]
LABEL_VALUES = ["a", "b", "c"]
PORTS = [1, 22, 53, 68, 80, 443, 1000, 1500, 2000, 5473, 8080, 30000, 32767, 65535]
PROTOCOLS = ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", 47, 6, 17, "UDPLite", 50]
PORT_NAMES = ["web", "dns", "metrics"]


@dataclass
class Draw:
    text: str
    packets: list[Packet]
    cidrs: list
    cases: list = None  # [Case], when drawn with draw_cases


@dataclass(frozen=True)
class Case:
    """A packet and where it meets the policy: chain 0 (ingress, XDP) or 1
    (egress, tc), forwarded or the host's own, new or of a known flow."""

    pkt: Packet
    chain: int
    forwarded: bool
    known_flow: bool


class Gen:
    def __init__(self, seed: int, max_rules: int = 6):
        self.r = random.Random(seed)
        self.max_rules = max_rules
        self.cidrs: list = []

    # --- small pieces -----------------------------------------------------

    def cidr(self, fam: int):
        r = self.r
        if fam == 4:
            pool = r.choice(V4_POOLS)
            plen = r.choice([0, 8, 16, 24, 25, 26, 28, 30, 31, 32]) if r.random() < 0.3 else r.choice([24, 25, 28, 32])
        else:
            pool = r.choice(V6_POOLS)
            plen = r.choice([0, 32, 48, 64, 100, 120, 127, 128])
        plen = min(plen, pool.max_prefixlen)
        addr = int(pool.network_address) + r.randrange(pool.num_addresses)
        net = ipaddress.ip_network((addr, plen), strict=False)
        if net.prefixlen > 0:
            self.cidrs.append(net)
        return net

    def labels(self) -> dict:
        return {k: self.r.choice(LABEL_VALUES) for k in self.r.sample(LABEL_KEYS, self.r.randint(0, 3))}

    def selector(self) -> str:
        r = self.r
        k, v = r.choice(LABEL_KEYS), r.choice(LABEL_VALUES)
        atoms = [f'{k} == "{v}"', f"has({k})", f"!has({k})", f"{k} != '{v}'",
                 f'{k} in {{"{v}", "{r.choice(LABEL_VALUES)}"}}', "all()", f'{k} not in {{"{v}"}}',
                 f'{k} starts with "{v[0]}"']
        s = r.choice(atoms)
        if r.random() < 0.3:
            s = f"({s}) {r.choice(['&&', '||'])} {r.choice(atoms)}"
        return s

    def ports(self, named: bool = False) -> list:
        out = []
        if named and self.r.random() < 0.4:
            out.append(self.r.choice(PORT_NAMES))
        for _ in range(self.r.randint(1, 3)):
            a = self.r.choice(PORTS)
            if self.r.random() < 0.4:
                b = min(65535, a + self.r.choice([0, 1, 100, 1000, 5000]))
                out.append(f"{a}:{b}")
            else:
                out.append(a if self.r.random() < 0.7 else str(a))
        return out

    # --- rules and resources ----------------------------------------------

    def rule(self, stage: str) -> dict:
        r = self.r
        actions = ["Allow", "Deny", "Pass", "Log"]
        rule: dict = {"action": r.choices(actions, weights=[4, 3, 1, 1])[0]}
        fam = r.choice([None, None, 4, 6])
        proto = r.choice(PROTOCOLS) if r.random() < 0.6 else None
        if proto in ("ICMP", 1):
            fam = 4 if fam is not None else fam
        if proto == "ICMPv6":
            fam = 6 if fam is not None else fam
        if fam is not None and r.random() < 0.5:
            rule["ipVersion"] = fam
        if proto is not None:
            rule["protocol"] = proto
        if r.random() < 0.15:
            np_ = r.choice(PROTOCOLS)
            if not (np_ in ("ICMP", "ICMPv6") and "ipVersion" in rule
                    and {"ICMP": 4, "ICMPv6": 6}[np_] != rule["ipVersion"]):
                rule["notProtocol"] = np_
        net_fam = fam or (4 if proto == "ICMP" else 6 if proto == "ICMPv6" else r.choice([4, 6]))
        ported = proto in ("TCP", "UDP", "SCTP", 6, 17)
        for side in ("source", "destination"):
            ent: dict = {}
            if r.random() < 0.35:
                ent["nets"] = [str(self.cidr(net_fam)) for _ in range(r.randint(1, 3))]
            if r.random() < 0.2:
                nn = [self.cidr(net_fam) for _ in range(r.randint(1, 2))]
                nn = [str(n) for n in nn if n.prefixlen > 0]
                if nn:
                    ent["notNets"] = nn
            if r.random() < 0.25:
                ent["selector"] = self.selector()
            if r.random() < 0.15:
                ent["notSelector"] = self.selector()
            if r.random() < 0.1:
                ent["namespaceSelector"] = r.choice(["global()", "projectcalico.org/name == 'prod'", "all()",
                                                     "!has(team)"])
            if ported and r.random() < 0.5:
                ent["ports"] = self.ports(named=True)
            elif proto is None and r.random() < 0.1:
                ent["ports"] = [r.choice(PORT_NAMES)]  # named ports need no protocol
            if ported and r.random() < 0.2:
                ent["notPorts"] = self.ports()
            if ent:
                rule[side] = ent
        if proto in ("ICMP", "ICMPv6") and r.random() < 0.6:
            icmp = {"type": r.choice([0, 3, 8, 128, 129, 13])}
            if r.random() < 0.5:
                icmp["code"] = r.choice([0, 1])
            rule["icmp" if r.random() < 0.6 else "notICMP"] = icmp
        return rule

    def policy(self, i: int, tiers: list[str]) -> dict:
        r = self.r
        stage = r.choices(["normal", "preDNAT", "doNotTrack"], weights=[6, 1, 1])[0]
        spec: dict = {"selector": self.selector() if r.random() < 0.7 else "all()"}
        if r.random() < 0.8:
            spec["order"] = r.choice([1, 10, 10, 100, 500.5])
        if tiers and r.random() < 0.4:
            spec["tier"] = r.choice(tiers)
        spec["ingress"] = [self.rule(stage) for _ in range(r.randint(0, self.max_rules))]
        if r.random() < 0.2:
            spec["types"] = r.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
        if stage != "normal":
            spec["applyOnForward"] = True
            spec["preDNAT" if stage == "preDNAT" else "doNotTrack"] = True
            if stage == "preDNAT" and "types" in spec:
                spec["types"] = ["Ingress"]  # preDNAT never has egress
        elif r.random() < 0.3:
            spec["applyOnForward"] = True
        if stage != "preDNAT" and r.random() < 0.5:
            spec["egress"] = [self.rule(stage) for _ in range(r.randint(1, self.max_rules))]
        meta: dict = {"name": f"p{i}"}
        if r.random() < 0.15:  # audited: its denies only note (hepbpf.io/audit)
            meta["annotations"] = {"hepbpf.io/audit": "true"}
        return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": meta, "spec": spec}

    def draw(self, n_packets: int) -> Draw:
        r = self.r
        self.cidrs = []
        docs = []
        tiers = []
        for t in range(r.randint(0, 2)):
            name = f"t{t}"
            tiers.append(name)
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name},
                         "spec": {"order": r.choice([10, 100, 2000000]),
                                  "defaultAction": r.choice(["Deny", "Pass"])}})
        iface = r.choice([IFACE, IFACE, "*"])
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                     "metadata": {"name": "target", "labels": self.labels()},
                     "spec": {"node": NODE, "interfaceName": iface, "expectedIPs": ["192.0.2.1", "2001:db8::1"],
                              "profiles": r.choice([[], ["projectcalico-default-allow"]]),
                              "ports": [{"name": n, "protocol": r.choice(["TCP", "UDP"]), "port": r.choice(PORTS)}
                                        for n in r.sample(PORT_NAMES, r.randint(0, 2))]}})
        for h in range(r.randint(0, 3)):
            ips = [str(self.cidr(r.choice([4, 6])).network_address) for _ in range(r.randint(0, 2))]
            spec = {"node": f"n{h + 2}", "interfaceName": "eth0"}
            if ips:
                spec["expectedIPs"] = ips
            if r.random() < 0.6:
                spec["ports"] = [{"name": r.choice(PORT_NAMES), "protocol": r.choice(["TCP", "UDP", "SCTP"]),
                                  "port": r.choice(PORTS)} for _ in range(r.randint(1, 3))]
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                         "metadata": {"name": f"peer{h}", "labels": self.labels()}, "spec": spec})
        for s in range(r.randint(0, 3)):
            nets = [str(self.cidr(r.choice([4, 6]))) for _ in range(r.randint(1, 4))]
            meta = {"name": f"set{s}", "labels": self.labels()}
            kind = r.choice(["GlobalNetworkSet", "NetworkSet"])
            if kind == "NetworkSet":
                meta["namespace"] = r.choice(["prod", "dev"])
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                         "spec": {"nets": nets}})
        if r.random() < 0.3:
            fs = [{"protocol": r.choice(["TCP", "UDP"]), "port": r.choice(PORTS)} for _ in range(r.randint(0, 3))]
            for f in fs:
                if r.random() < 0.3:
                    f["net"] = str(self.cidr(r.choice([4, 6])))
            out = [{"protocol": r.choice(["TCP", "UDP"]), "port": r.choice(PORTS)} for _ in range(r.randint(0, 3))]
            for f in out:
                if r.random() < 0.3:
                    f["net"] = str(self.cidr(r.choice([4, 6])))
            spec = {"failsafeInboundHostPorts": fs}
            if r.random() < 0.5:
                spec["failsafeOutboundHostPorts"] = out
            docs.append({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                         "metadata": {"name": r.choice(["default", f"node.{NODE}"])}, "spec": spec})
        for i in range(r.randint(0, 5)):
            docs.append(self.policy(i, tiers))
        text = "\n---\n".join(json.dumps(d) for d in docs)
        return Draw(text, [self.packet() for _ in range(n_packets)], list(self.cidrs))

    def draw_cases(self, n: int) -> Draw:
        """A policy set and ``n`` cases over both chains: egress packets
        leave from the host's address, a quarter are forwarded, some are
        packets of a known flow."""
        d = self.draw(0)
        r = self.r
        d.cases = []
        for _ in range(n):
            pkt = self.packet()
            chain = 0 if r.random() < 0.55 else 1
            if chain == 1:
                pkt = Packet(pkt.proto, pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.icmp_type, pkt.icmp_code) \
                    if pkt.proto not in (1, 58) else Packet(pkt.proto, pkt.dst, pkt.src, icmp_type=pkt.icmp_type,
                                                             icmp_code=pkt.icmp_code)
            d.cases.append(Case(pkt, chain, r.random() < 0.25, pkt.trackable and r.random() < 0.15))
        d.packets = [c.pkt for c in d.cases]
        return d

    def addr(self, fam: int):
        r = self.r
        cands = [c for c in self.cidrs if c.version == fam]
        if cands and r.random() < 0.7:
            c = r.choice(cands)
            off = r.choice([0, c.num_addresses - 1, r.randrange(c.num_addresses), c.num_addresses])
            n = int(c.network_address) + off
            maxv = 2 ** (32 if fam == 4 else 128) - 1
            return ipaddress.ip_address(min(n, maxv)) if fam == 4 else ipaddress.IPv6Address(min(n, maxv))
        pool = r.choice(V4_POOLS if fam == 4 else V6_POOLS)
        return pool.network_address + r.randrange(min(pool.num_addresses, 2 ** 32))

    def packet(self) -> Packet:
        r = self.r
        fam = r.choice([4, 4, 6])
        proto = r.choice([6, 6, 17, 17, 132, 1 if fam == 4 else 58, 47, 50, 136])
        src, dst = self.addr(fam), self.addr(fam) if r.random() < 0.3 else (
            ipaddress.ip_address("192.0.2.1") if fam == 4 else ipaddress.ip_address("2001:db8::1"))
        if proto in (1, 58):
            return Packet(proto, src, dst, icmp_type=r.choice([0, 3, 8, 13, 128, 129]), icmp_code=r.choice([0, 1]))
        if proto in (6, 17, 132, 136):
            def port():
                p = r.choice(PORTS)
                return max(0, min(65535, p + r.choice([-1, 0, 0, 0, 1, 100, 1000])))
            return Packet(proto, src, dst, port(), port())
        return Packet(proto, src, dst)
