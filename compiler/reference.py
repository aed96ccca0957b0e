"""The reference evaluator: one packet against a ChainView, rule by rule.

This is the oracle the BPF classifier is tested against, so it is written
straight from Calico's semantics (``shared/reference/calico-semantics.md``)
and shares nothing with ``lower`` beyond the ChainView: selectors are
evaluated against peers here, never through the IP sets ``lower`` builds.

Order, for a packet the host sends or receives (§4.2 of the reference):

1. failsafes (allow); the other direction's failsafes, matched on the
   source port, skip step 2 (Calico's raw-table failsafe chains);
2. untracked (doNotTrack) tiers, on every packet: Allow or Deny decide, and
   nothing falls through to a default;
3. conntrack: a packet of a known flow (or an ICMP error about one) passes;
4. ingress only: preDNAT tiers, falling through like untracked ones;
5. normal tiers (each ends in its default action), then the profiles, then
   "no profile" deny.

A forwarded packet takes steps 1-4 on ingress (a failsafe match skips 2
and 4 instead of allowing) and only step 3 on egress; then, instead of 5,
the forward tiers (applyOnForward policies; end-of-tier defaults apply, no
profiles) and, if nothing decided, allow.

An Allow at step 1, 4, 5 or in a forward tier starts a tracked flow
(``Verdict.tracked``); an untracked Allow does not.

Notes (``Verdict.notes``, in the order met): a matching Log rule, and a
matching Deny rule of an audited policy (``hepbpf.io/audit``), are noted
and evaluation goes on with the next rule; so is the end-of-tier deny of a
tier whose every policy is audited (it goes on with the next tier).
"""

from __future__ import annotations

from dataclasses import dataclass

from .ir import ICMP_PROTOCOLS, INGRESS, EntityRule, Failsafe, NamedPort, PortRange, Rule
from .packet import ICMP, Packet
from .resolve import DEFAULT_ALLOW_PROFILE, ChainView, Peer, TierView, named_port_members, peer_selected


@dataclass(frozen=True, slots=True)
class Note:
    kind: str  # "log" or "audit"
    stage: str
    tier: str
    policy: str | None  # None: an audited end-of-tier
    rule: int | None

    def as_json(self) -> dict:
        return {"kind": self.kind, "stage": self.stage, "tier": self.tier, "policy": self.policy,
                "rule": self.rule}


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # "allow" or "deny"
    reason: str  # a key of reasons.REASONS
    stage: str | None = None
    tier: str | None = None
    policy: str | None = None
    rule: int | None = None
    notes: tuple[Note, ...] = ()  # Log rules and audited denies passed, in order
    tracked: bool = False  # an allow that starts a conntrack flow

    def as_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "stage": self.stage,
            "tier": self.tier,
            "policy": self.policy,
            "rule": self.rule,
            "notes": [n.as_json() for n in self.notes],
        }


def evaluate(view: ChainView, pkt: Packet, *, forwarded: bool = False, known_flow: bool = False) -> Verdict:
    """``forwarded``: the packet is routed through the host, not to or from
    it. ``known_flow``: it belongs to a flow conntrack knows (or is an ICMP
    error about one)."""
    if view.hep is None:
        return Verdict("allow", "no-policy")
    ingress = view.direction == INGRESS
    notes: list[Note] = []
    skip_untracked = skip_prednat = False
    if ingress or not forwarded:
        for i, fs in enumerate(view.failsafes):
            if failsafe_matches(fs, pkt, view.direction):
                if not forwarded:
                    return Verdict("allow", "failsafe", stage="failsafe", rule=i, tracked=True)
                skip_untracked = skip_prednat = True
                break
        if any(failsafe_matches(fs, pkt, view.direction, reply=True) for fs in view.reverse_failsafes):
            skip_untracked = True
        if not skip_untracked:
            v = _stage(view, pkt, "untracked", notes)
            if v is not None:
                return v
    if known_flow:
        return Verdict("allow", "conntrack", stage="conntrack", notes=tuple(notes))
    if not skip_prednat:
        v = _stage(view, pkt, "preDNAT", notes)
        if v is not None:
            return v
    if forwarded:
        v = _tiers(view, pkt, view.forward_tiers, notes)
        if v is not None:
            return v
        return Verdict("allow", "forward-allow", stage="forward", notes=tuple(notes), tracked=True)
    v = _stage(view, pkt, "normal", notes)
    if v is not None:
        return v
    for profile in view.profiles:
        if profile == DEFAULT_ALLOW_PROFILE:
            return Verdict("allow", "profile-allow", "profile", policy=profile, notes=tuple(notes),
                           tracked=True)
    return Verdict("deny", "no-profile", "profile", notes=tuple(notes))


def _stage(view: ChainView, pkt: Packet, stage: str, notes: list) -> Verdict | None:
    return _tiers(view, pkt, [tv for tv in view.tiers if tv.stage == stage], notes)


def _tiers(view: ChainView, pkt: Packet, tiers, notes: list) -> Verdict | None:
    """The first verdict of a run of tiers, or None to fall through. Only
    normal and forward tiers end in their default action; untracked and
    preDNAT ones pass on (Calico renders them with defaultAction Pass)."""
    for tv in tiers:
        v = _tier(view, pkt, tv, notes)
        if v == "pass":
            continue
        if v is not None:
            return v
        if tv.stage in ("normal", "forward") and tv.tier.default_action == "Deny":
            if all(pol.audit for pol in tv.policies):
                notes.append(Note("audit", tv.stage, tv.tier.name, None, None))
                continue
            return Verdict("deny", "end-of-tier", tv.stage, tv.tier.name, notes=tuple(notes))
    return None


def _tier(view: ChainView, pkt: Packet, tv: TierView, notes: list):
    """A rule's verdict, "pass", or None when no rule decided."""
    for pol in tv.policies:
        for rule in pol.rules(view.direction):
            if not rule_matches(rule, pkt, view.peers):
                continue
            if rule.action == "Log" or (rule.action == "Deny" and pol.audit):
                kind = "log" if rule.action == "Log" else "audit"
                notes.append(Note(kind, tv.stage, tv.tier.name, pol.name, rule.index))
                continue
            if rule.action == "Pass":
                return "pass"
            allow = rule.action == "Allow"
            return Verdict("allow" if allow else "deny", "rule-allow" if allow else "rule-deny",
                           tv.stage, tv.tier.name, pol.name, rule.index, tuple(notes),
                           tracked=allow and tv.stage != "untracked")
    return None


def failsafe_matches(fs: Failsafe, pkt: Packet, direction: str = INGRESS, *, reply: bool = False) -> bool:
    """Protocol and destination port; if a net is set, the remote end (the
    source inbound, the destination outbound) must be in it (STATIC
    failsafeInChain). ``reply``: the other direction's entry seen on its
    replies, by source port (the raw-table failsafe chains)."""
    port = pkt.sport if reply else pkt.dport
    if pkt.proto != fs.proto_number or port != fs.port:
        return False
    if fs.net is None:
        return True
    remote = pkt.src if direction == INGRESS else pkt.dst
    return fs.net.version == pkt.family and remote in fs.net


def rule_matches(rule: Rule, pkt: Packet, peers: tuple[Peer, ...]) -> bool:
    fam = pkt.family
    if rule.ip_version is not None and rule.ip_version != fam:
        return False
    # Protocol ICMP implies IPv4, ICMPv6 implies IPv6 (felix rule_convert).
    if rule.protocol is not None and ICMP_PROTOCOLS.get(rule.protocol.number, fam) != fam:
        return False
    # A rule is skipped for a family if any net field is set but has no CIDR
    # of that family (felix FilterRuleToIPVersion) - notNets included.
    for nets in (rule.source.nets, rule.source.not_nets, rule.destination.nets, rule.destination.not_nets):
        if nets and not any(n.version == fam for n in nets):
            return False
    if rule.protocol is not None and pkt.proto != rule.protocol.number:
        return False
    if rule.not_protocol is not None and pkt.proto == rule.not_protocol.number:
        return False
    if rule.icmp is not None and not _icmp_matches(rule.icmp, pkt):
        return False
    if rule.not_icmp is not None and _icmp_matches(rule.not_icmp, pkt):
        return False
    return (_entity_matches(rule.source, pkt.src, pkt.sport, pkt, peers)
            and _entity_matches(rule.destination, pkt.dst, pkt.dport, pkt, peers))


def _icmp_matches(m, pkt: Packet) -> bool:
    if pkt.proto not in ICMP:
        return False
    if m.type is not None and pkt.icmp_type != m.type:
        return False
    return m.code is None or pkt.icmp_code == m.code


def _entity_matches(ent: EntityRule, addr, port: int, pkt: Packet, peers: tuple[Peer, ...]) -> bool:
    if ent.nets and not any(addr in n for n in ent.nets if n.version == addr.version):
        return False
    if any(addr in n for n in ent.not_nets if n.version == addr.version):
        return False
    if ent.selector is not None or ent.namespace_selector is not None:
        if not any(addr in n for p in peers if peer_selected(ent, p) for n in p.nets if n.version == addr.version):
            return False
    if ent.not_selector is not None:
        # Not namespace-scoped; also true for addresses Calico knows nothing of.
        if any(addr in n for p in peers if ent.not_selector.evaluate(p.label_map())
               for n in p.nets if n.version == addr.version):
            return False
    if ent.ports and not _ports_match(ent, addr, port, pkt.proto, peers):
        return False
    if ent.not_ports and _port_in(ent.not_ports, port):
        return False
    return True


def _port_in(ports, port: int) -> bool:
    return any(isinstance(r, PortRange) and r.lo <= port <= r.hi for r in ports)


def _ports_match(ent: EntityRule, addr, port: int, proto: int, peers) -> bool:
    """Numeric ports and named ports of one list are OR-ed; a named port
    matches the (address, protocol, port) of an endpoint that declares it."""
    if _port_in(ent.ports, port):
        return True
    return any(proto == mproto and port == mport and addr in net
               for p in ent.ports if isinstance(p, NamedPort)
               for net, mproto, mport in named_port_members(ent, p.name, peers))
