"""The benchmark's rule sets as netfilter rules: the baselines hepbpf is
measured against end to end (live.py loads them; this module only writes
and reads text).

Three renderings of one RuleSet, each in the raw/prerouting position (the
earliest netfilter hook, so netfilter's cost is as low as it gets):

    ipt-legacy   iptables-restore input for `-t raw` PREROUTING, one rule per
                 rule (ip6tables for IPv6): a linear scan
    nft-linear   an nft `prerouting` chain at raw priority, one rule per rule
    nft-set      one nft rule per protocol matching `saddr . th dport`
                 against a concatenated interval set (pipapo): no per-rule
                 scan, the fastest netfilter way to hold these rules

Every rendering ends in a catch-all drop, so a packet that matches no rule
is dropped too, as hepbpf's default deny drops it: each engine then does
the same work for the "none" probe (a full scan, then drop).

Every rule counts its packets, so the harness can check that the rule it
expects is the one that grows. Rules are named in the filter's order
(``Filter.rules``): "rule <i>" for the RuleSet's rule i, "set tcp"/"set udp"
for the set rules, "default" for the catch-all. The rules a probe can hit
also carry an nft named counter (``Filter.named``), read cheaply during the
timed windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .rules import Probe, RuleSet

KINDS = ("ipt-legacy", "nft-linear", "nft-set")
TABLE = "hepbpf_bench"  # nft table (family ip or ip6)
CHAIN = "prerouting"
DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Filter:
    kind: str
    family: int
    text: str  # iptables-restore or `nft -f` input
    rules: tuple[str, ...]  # rule names, in the filter's order
    named: dict[str, str] = field(default_factory=dict)  # rule name -> nft named counter
    elements: int = 0  # nft-set: how many set elements hold the rules

    @property
    def loader(self) -> list[str]:
        """The command that reads ``text`` on stdin."""
        if self.kind == "ipt-legacy":
            return [_ipt(self.family, "restore")]
        return ["nft", "-f", "-"]

    def position(self, rule: str) -> int:
        """1-based position of a rule in its chain (iptables' rule number)."""
        return self.rules.index(rule) + 1


def _ipt(family: int, what: str = "") -> str:
    base = "iptables" if family == 4 else "ip6tables"
    return f"{base}-legacy-{what}" if what else f"{base}-legacy"


def _nft_family(family: int) -> tuple[str, str, str]:
    """(table family, address match, set element address type)."""
    return ("ip", "ip saddr", "ipv4_addr") if family == 4 else ("ip6", "ip6 saddr", "ipv6_addr")


def _ports(lo: int, hi: int, sep: str) -> str:
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


def render(kind: str, rs: RuleSet) -> Filter:
    if kind == "ipt-legacy":
        return iptables_restore(rs)
    if kind == "nft-linear":
        return nft_linear(rs)
    if kind == "nft-set":
        return nft_set(rs)
    raise ValueError(f"unknown netfilter kind {kind!r} (one of {', '.join(KINDS)})")


def iptables_restore(rs: RuleSet) -> Filter:
    """`iptables-legacy-restore` input (ip6tables for IPv6): the raw table's
    PREROUTING, one rule per rule, then a catch-all DROP."""
    out = [f"# hepbpf bench: {rs.n} rules (IPv{rs.family}), raw PREROUTING, linear;",
           "# the last rule is a catch-all DROP, so a packet no rule matches is dropped too",
           "*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for r in rs.rules:
        p = r.proto.lower()
        out.append(f"-A {CHAIN.upper()} -p {p} -s {r.src} -m {p} --dport {_ports(*r.ports, ':')} -j DROP")
    out += [f"-A {CHAIN.upper()} -j DROP", "COMMIT", ""]
    names = tuple(f"rule {i}" for i in range(rs.n)) + (DEFAULT,)
    return Filter("ipt-legacy", rs.family, "\n".join(out), names)


def _nft_head(rs: RuleSet, what: str, counters: list[str]) -> list[str]:
    fam, _, _ = _nft_family(rs.family)
    out = [f"# hepbpf bench: {rs.n} rules (IPv{rs.family}), {what};",
           "# the chain ends in a catch-all drop, so a packet no rule matches is dropped too",
           f"table {fam} {TABLE} {{"]
    out += [f"    counter {c} {{ }}" for c in counters]
    return out


def _chain_open() -> list[str]:
    return [f"    chain {CHAIN} {{", "        type filter hook prerouting priority raw; policy accept;"]


def nft_linear(rs: RuleSet) -> Filter:
    """An nft prerouting chain at raw priority, one rule per rule, each with
    a counter (named for the last rule and the catch-all)."""
    _, saddr, _ = _nft_family(rs.family)
    last = f"rule {rs.n - 1}"
    named = {last: f"rule_{rs.n - 1}", DEFAULT: DEFAULT}
    out = _nft_head(rs, "linear prerouting chain", list(named.values())) + _chain_open()
    for i, r in enumerate(rs.rules):
        counter = f'counter name "{named[last]}"' if i == rs.n - 1 else "counter"
        out.append(f"        {saddr} {r.src} {r.proto.lower()} dport {_ports(*r.ports, '-')} {counter} drop")
    out += [f'        counter name "{DEFAULT}" drop', "    }", "}", ""]
    names = tuple(f"rule {i}" for i in range(rs.n)) + (DEFAULT,)
    return Filter("nft-linear", rs.family, "\n".join(out), names, named)


def nft_set(rs: RuleSet) -> Filter:
    """One rule per protocol matching `saddr . th dport` in a concatenated
    interval set (all the rules deny, so their order does not matter), then
    a catch-all drop. The set's elements are the rules made disjoint (see
    disjoint_elements): the kernel's pipapo set refuses an element whose
    corner lies inside another."""
    _, saddr, addr_type = _nft_family(rs.family)
    protos = sorted({r.proto for r in rs.rules})
    named = {f"set {p.lower()}": f"set_{p.lower()}" for p in protos} | {DEFAULT: DEFAULT}
    sets = {p: disjoint_elements(rs, p) for p in protos}
    total = sum(len(e) for e in sets.values())
    out = _nft_head(rs, f"interval sets of saddr . dport ({total} disjoint elements)", list(named.values()))
    for p, elems in sets.items():
        out += [f"    set rules_{p.lower()} {{", f"        type {addr_type} . inet_service", "        flags interval",
                "        elements = {",
                *(f"            {net} . {_ports(lo, hi, '-')}," for net, lo, hi in elems), "        }", "    }"]
    out += _chain_open()
    for p in protos:
        out.append(f"        meta l4proto {p.lower()} {saddr} . th dport @rules_{p.lower()} "
                   f'counter name "set_{p.lower()}" drop')
    out += [f'        counter name "{DEFAULT}" drop', "    }", "}", ""]
    return Filter("nft-set", rs.family, "\n".join(out), tuple(named), named, elements=total)


def _subtract(ranges: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for a, b in ranges:
        if hi < a or lo > b:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if hi < b:
            out.append((hi + 1, b))
    return out


def disjoint_elements(rs: RuleSet, proto: str) -> list[tuple]:
    """The union of ``proto``'s rules (CIDR x port range) as pairwise
    disjoint (CIDR, lo, hi) elements. Two CIDRs are nested or disjoint, so
    it is enough to take from each rule the ports of every rule whose CIDR
    contains its own (or equals it, if that rule comes first): what is
    taken away stays covered by the containing rule, or by whatever covers
    that, up to a rule nothing contains, which keeps all of its ports."""
    rules = [r for r in rs.rules if r.proto == proto]
    by_net: dict = {}
    for i, r in enumerate(rules):
        by_net.setdefault(r.src, []).append((i, r.ports))
    out = []
    for i, r in enumerate(rules):
        left = [r.ports]
        for plen in range(r.src.prefixlen, -1, -1):
            for j, (lo, hi) in by_net.get(r.src.supernet(new_prefix=plen), ()):
                if plen < r.src.prefixlen or j < i:
                    left = _subtract(left, lo, hi)
        out += [(r.src, lo, hi) for lo, hi in left]
    return out


def expected_rule(f: Filter, rs: RuleSet, probe: Probe) -> str:
    """The name of the rule that drops ``probe`` in ``f``."""
    i = rs.first_match(probe)
    if i is None:
        return DEFAULT
    if f.kind == "nft-set":
        return f"set {rs.rules[i].proto.lower()}"
    return f"rule {i}"


# --- reading counters back -----------------------------------------------------------


def parse_iptables_save(text: str, chain: str = CHAIN.upper()) -> list[int]:
    """Packet counts of ``chain``'s rules, in order, from `iptables-save -c`
    output (each rule line starts with ``[packets:bytes]``)."""
    out = []
    for line in text.splitlines():
        if line.startswith("[") and f"-A {chain} " in line:
            out.append(int(line[1:line.index(":")]))
    return out


def parse_iptables_list(text: str) -> int:
    """The packet count of the one rule `iptables -L CHAIN N -v -x -n`
    prints (no header with a rule number: the first field is packets)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            return int(fields[0])
    raise ValueError(f"no rule counter in {text!r}")


def parse_nft_rules(json_text: str) -> list[int]:
    """Packet counts of the chain's rules, in order, from
    `nft -j list table ...` (named counters resolved)."""
    items = json.loads(json_text)["nftables"]
    named = {o["counter"]["name"]: o["counter"]["packets"] for o in items
             if "counter" in o and isinstance(o["counter"], dict) and "name" in o["counter"]}
    out = []
    for o in items:
        rule = o.get("rule")
        if not rule or rule.get("chain") != CHAIN:
            continue
        pk = 0
        for expr in rule.get("expr", []):
            c = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(c, dict):
                pk = c["packets"]
            elif isinstance(c, str):
                pk = named[c]
        out.append(pk)
    return out


def parse_nft_counter(json_text: str) -> int:
    """The packets of the one named counter `nft -j list counter ...` prints."""
    for o in json.loads(json_text)["nftables"]:
        if isinstance(o.get("counter"), dict):
            return o["counter"]["packets"]
    raise ValueError("no counter in nft's answer")
