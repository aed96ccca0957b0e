"""Lower pass: ChainViews -> MapImage (the contents of every policy map).

Before: one resolved ``ChainView`` per chain (ingress, egress).
After: a ``MapImage`` in which

* each chain's decisions are numbered slots, in evaluation order (see
  ``_slots``): failsafes, every non-Log rule of every applicable policy tier
  by tier, an end-of-tier deny after each normal tier whose default action
  is Deny, the conntrack and forward steering slots, a catch-all allow for
  the default-allow profile, a catch-all deny, and the forward section - so
  every packet matches at least one slot on every path;
* every packet field is partitioned into classes: an address class per LPM
  entry (scoped by chain, side and family; every scope has a /0), a protocol
  class or a 65536-entry port table per (chain, side, protocol);
* each class carries the bit vector of the slots its values admit, so a slot
  matches a packet iff its bit is set in all four of the packet's classes;
* vectors are deduplicated; class 0 is the empty vector.

Log rules, and the Deny rules of audited policies (annotation
``hepbpf.io/audit: "true"``), take slots that never decide: a packet that
matches one is noted (counter, event) and goes on after the rule. So does
the end-of-tier deny of a tier whose every policy is audited. The kernel
spends one hop per such slot passed, so a chain holds at most MAX_NOTED.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, replace

from .diagnostics import PolicyError, Diagnostic
from .ir import ICMP_PROTOCOLS, INGRESS, IPNetwork, PortRange, Rule
from .mapimage import (
    CHAINS,
    SLOT_AUDIT,
    SLOT_DIVERT,
    SLOT_TRACK,
    SIDE_DST,
    SIDE_SRC,
    AddrEntry,
    MapImage,
    PortSegment,
    ProtoEntry,
    SlotEntry,
)
from .packet import ICMP, PORTED
from .reasons import REASONS
from .resolve import DEFAULT_ALLOW_PROFILE, ChainView, Peer, named_port_members, peer_selected

MAX_WORDS = 256  # enum hep_limits HEP_MAX_WORDS
MAX_HOPS = 16  # HEP_MAX_HOPS: Pass hops, so tiers per chain
MAX_NOTED = 64  # HEP_MAX_NOTED: Log and audited slots per chain
FULL = ((0, 65535),)


@dataclass(frozen=True, slots=True)
class SideMatch:
    """Address constraints on one side. ``pos`` lists must each contain the
    address (nets; a selector's IP set); ``neg`` lists must not."""

    pos: tuple[tuple[IPNetwork, ...], ...] = ()
    neg: tuple[tuple[IPNetwork, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """A slot's predicate, per packet field. Ports are tuples of inclusive
    (lo, hi); ``None`` means no constraint."""

    families: frozenset[int]
    src: SideMatch
    dst: SideMatch
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: tuple[int | None, int | None] | None = None
    not_icmp: tuple[int | None, int | None] | None = None
    dports: tuple[tuple[int, int], ...] | None = None
    not_dports: tuple[tuple[int, int], ...] | None = None
    sports: tuple[tuple[int, int], ...] | None = None
    not_sports: tuple[tuple[int, int], ...] | None = None


CATCH_ALL = Match(frozenset({4, 6}), SideMatch(), SideMatch())


@dataclass(slots=True)
class _Slot:
    match: Match
    entry: SlotEntry


def lower(views: dict[int, ChainView]) -> MapImage:
    """``views``: chain number -> ChainView (HEP_CHAIN_INGRESS = 0)."""
    has_policy = any(v.hep is not None for v in views.values())
    chains = {c: _slots(c, v) for c, v in views.items() if v.hep is not None}
    nslots = max((len(s) for s in chains.values()), default=1)
    nwords = max(1, -(-nslots // 64))
    if nwords > MAX_WORDS:
        raise PolicyError(Diagnostic(next(iter(views.values())).hep.span, "", None,
                                     f"policy needs {nslots} rule slots; at most {MAX_WORDS * 64} "
                                     f"per direction are supported"))
    classes = _Classes()
    addr: list[AddrEntry] = []
    proto: list[ProtoEntry] = []
    ports: list[PortSegment] = []
    ntables = 0
    for chain in CHAINS:
        slots = chains.get(chain, [])
        matches = [s.match for s in slots]
        for side in (SIDE_SRC, SIDE_DST):
            for fam in (4, 6):
                for net, vec in _addr_classes(matches, side, fam):
                    addr.append(AddrEntry(chain, side, net, classes.id(vec)))
            for p, segs in _l4_classes(matches, side):
                if len(segs) == 1:
                    proto.append(ProtoEntry(chain, side, p, classes.id(segs[0][2]), None))
                    continue
                proto.append(ProtoEntry(chain, side, p, 0, ntables))
                ports.extend(PortSegment(ntables, lo, hi, classes.id(v)) for lo, hi, v in segs)
                ntables += 1
    entries = tuple(s.entry for c in sorted(chains) for s in chains[c])
    names = ("",) + tuple(sorted({e.policy for e in entries if e.policy}))
    return MapImage(
        nwords=nwords,
        has_policy=has_policy,
        addr=tuple(addr),
        proto=tuple(proto),
        port_tables=ntables,
        ports=tuple(ports),
        classes=classes.vectors(),
        slots=entries,
        policy_names=names,
    )


class _Classes:
    def __init__(self):
        self._ids: dict[int, int] = {0: 0}

    def id(self, vec: int) -> int:
        return self._ids.setdefault(vec, len(self._ids))

    def vectors(self) -> tuple[int, ...]:
        return tuple(sorted(self._ids, key=self._ids.__getitem__))


# --- slots -------------------------------------------------------------------

def _slots(chain: int, view: ChainView) -> list[_Slot]:
    """A chain's slots; the layout reference.py's evaluation order asks for:

        egress only:  [Forward -> F]
        failsafes (Allow +track; ingress: +divert -> F)
        reverse failsafes (Pass -> C)
        untracked tiers
     C: Conntrack
        preDNAT tiers
        ingress only: [Forward -> F+1]
        normal tiers, default-allow profile, no-profile deny
     F: Conntrack, forward tiers, forward-allow (+track)

    Invariants: every path ends at a catch-all (no-profile or
    forward-allow); Pass and Forward targets lie after their slot."""
    out: list[_Slot] = []
    ingress = view.direction == INGRESS

    def add(match: Match, action: str, reason: str, flags: int = 0, **meta) -> _Slot:
        s = _Slot(match, SlotEntry(chain, len(out), action, REASONS[reason], 0, flags=flags, **meta))
        out.append(s)
        return s

    to_forward: list[tuple[_Slot, int]] = []  # (slot, offset into the forward section)
    if not ingress:
        to_forward.append((add(CATCH_ALL, "Forward", "none", stage="forward"), 0))
    for i, fs in enumerate(view.failsafes):
        s = add(_failsafe_match(fs, view.direction), "Allow", "failsafe",
                SLOT_TRACK | (SLOT_DIVERT if ingress else 0), stage="failsafe", rule=i)
        if ingress:
            to_forward.append((s, 0))
    # Only worth a slot when there are untracked tiers to skip.
    untracked = any(tv.stage == "untracked" for tv in view.tiers)
    reverse = [add(_failsafe_match(fs, view.direction, reply=True), "Pass", "failsafe", stage="failsafe")
               for fs in (view.reverse_failsafes if untracked else ())]
    hops = _tier_slots(view, "untracked", add, out)
    ct = add(CATCH_ALL, "Conntrack", "conntrack", stage="conntrack")
    for s in reverse:
        s.entry = s.entry.with_next(ct.entry.slot)
    hops += _tier_slots(view, "preDNAT", add, out)
    if ingress:
        to_forward.append((add(CATCH_ALL, "Forward", "none", stage="forward"), 1))
    normal = _tier_slots(view, "normal", add, out)
    if DEFAULT_ALLOW_PROFILE in view.profiles:
        add(CATCH_ALL, "Allow", "profile-allow", SLOT_TRACK, stage="profile", policy=DEFAULT_ALLOW_PROFILE)
    add(CATCH_ALL, "Deny", "no-profile", stage="profile")
    start = len(out)
    add(CATCH_ALL, "Conntrack", "conntrack", stage="conntrack")
    forward = _tier_slots(view, "forward", add, out)
    add(CATCH_ALL, "Allow", "forward-allow", SLOT_TRACK, stage="forward")
    for s, offset in to_forward:
        s.entry = s.entry.with_next(start + offset)
    if hops + max(normal, forward) > MAX_HOPS:
        raise PolicyError(Diagnostic(view.hep.span, "", None,
                                     f"{hops + max(normal, forward)} tiers with Pass rules apply; at most "
                                     f"{MAX_HOPS} are supported"))
    noted = sum(1 for s in out if s.entry.action == "Log" or s.entry.flags & SLOT_AUDIT)
    if noted > MAX_NOTED:
        raise PolicyError(Diagnostic(view.hep.span, "", None,
                                     f"{noted} Log rules and audited Deny rules apply {view.direction.lower()}; "
                                     f"at most {MAX_NOTED} per direction are supported (each costs the kernel "
                                     f"a lookup when matched)"))
    return out


def _tier_slots(view: ChainView, stage: str, add, out: list[_Slot]) -> int:
    """The slots of one stage's tiers (forward: view.forward_tiers).
    Returns: how many of its tiers have Pass rules (each costs a hop)."""
    tiers = view.forward_tiers if stage == "forward" else [tv for tv in view.tiers if tv.stage == stage]
    # Tracked stages start a flow on Allow; untracked ones never do.
    track = 0 if stage == "untracked" else SLOT_TRACK
    with_pass = 0
    for tv in tiers:
        passes = []
        for pol in tv.policies:
            for rule in pol.rules(view.direction):
                reason = {"Allow": "rule-allow", "Deny": "rule-deny", "Pass": "rule-allow",
                          "Log": "none"}[rule.action]
                flags = track if rule.action == "Allow" else 0
                if rule.action == "Deny" and pol.audit:
                    flags = SLOT_AUDIT
                # A rule may lower to several alternatives (named ports), one
                # slot each, consecutive: first match over them is their OR;
                # a noting slot goes on after the last (noted once).
                alts = [add(m, rule.action, reason, flags, stage=tv.stage, tier=tv.tier.name,
                            policy=pol.name, rule=rule.index) for m in _rule_matches(rule, view.peers)]
                for s in alts:
                    if rule.action == "Log" or flags & SLOT_AUDIT:
                        s.entry = s.entry.with_next(len(out))
                if rule.action == "Pass":
                    passes.extend(alts)
        # Untracked and preDNAT tiers fall through (Calico renders them
        # with defaultAction Pass); normal and forward ones end here - with
        # a note, not a drop, if every policy of the tier is audited.
        if stage in ("normal", "forward") and tv.tier.default_action == "Deny":
            audited = all(pol.audit for pol in tv.policies)
            s = add(CATCH_ALL, "Deny", "end-of-tier", SLOT_AUDIT if audited else 0, stage=tv.stage,
                    tier=tv.tier.name)
            if audited:
                s.entry = s.entry.with_next(len(out))
        for s in passes:
            s.entry = s.entry.with_next(len(out))
        with_pass += bool(passes)
    return with_pass


def _failsafe_match(fs, direction: str, reply: bool = False) -> Match:
    """Protocol, destination port (``reply``: source port, for the other
    direction's entries), and the net on the remote end (the source on
    ingress, the destination on egress)."""
    fams = frozenset({fs.net.version}) if fs.net is not None else frozenset({4, 6})
    nets = SideMatch(pos=((fs.net,),)) if fs.net is not None else SideMatch()
    port = {"sports" if reply else "dports": ((fs.port, fs.port),)}
    if direction == INGRESS:
        return Match(fams, nets, SideMatch(), protocol=fs.proto_number, **port)
    return Match(fams, SideMatch(), nets, protocol=fs.proto_number, **port)


def _ranges(ports) -> tuple[tuple[int, int], ...] | None:
    if not ports:
        return None
    return tuple((p.lo, p.hi) for p in ports if isinstance(p, PortRange))


def _side(ent, peers: tuple[Peer, ...]) -> SideMatch | None:
    pos, neg = [], []
    if ent.nets:
        pos.append(ent.nets)
    if ent.not_nets:
        neg.append(ent.not_nets)
    if ent.selector is not None or ent.namespace_selector is not None:
        ipset = tuple(n for p in peers if peer_selected(ent, p) for n in p.nets)
        if not ipset:
            return None
        pos.append(ipset)
    if ent.not_selector is not None:
        ipset = tuple(n for p in peers if ent.not_selector.evaluate(p.label_map()) for n in p.nets)
        if ipset:
            neg.append(ipset)
    return SideMatch(tuple(pos), tuple(neg))


def _rule_matches(rule: Rule, peers: tuple[Peer, ...]) -> list[Match]:
    """The rule as a list of Matches whose OR is the rule: one, or more
    where named ports add (address, protocol, port) alternatives. Empty if
    the rule can never match (e.g. a selector that picks no peer)."""
    fams = {4, 6}
    if rule.ip_version is not None:
        fams &= {rule.ip_version}
    if rule.protocol is not None and rule.protocol.number in ICMP_PROTOCOLS:
        fams &= {ICMP_PROTOCOLS[rule.protocol.number]}
    for nets in (rule.source.nets, rule.source.not_nets, rule.destination.nets, rule.destination.not_nets):
        if nets:
            fams &= {n.version for n in nets}
    src, dst = _side(rule.source, peers), _side(rule.destination, peers)
    if not fams or src is None or dst is None:
        return []
    icmp = lambda m: None if m is None else (m.type, m.code)  # noqa: E731
    base = Match(
        frozenset(fams), src, dst,
        protocol=rule.protocol.number if rule.protocol else None,
        not_protocol=rule.not_protocol.number if rule.not_protocol else None,
        icmp=icmp(rule.icmp), not_icmp=icmp(rule.not_icmp),
        dports=_ranges(rule.destination.ports), not_dports=_ranges(rule.destination.not_ports),
        sports=_ranges(rule.source.ports), not_sports=_ranges(rule.source.not_ports),
    )
    out = [base]
    for side, ent in (("src", rule.source), ("dst", rule.destination)):
        alts = _port_alternatives(ent, peers)
        if alts is not None:
            out = [a for m in out for a in _with_alternatives(m, side, alts)]
    return out


def _port_alternatives(ent, peers: tuple[Peer, ...]):
    """For a port list with named ports: its alternatives, each (addresses
    or None, protocol or None, port ranges). None if it has no named port."""
    named = [p for p in ent.ports if not isinstance(p, PortRange)]
    if not named:
        return None
    alts = []
    numeric = _ranges(ent.ports)
    if numeric:
        alts.append((None, None, numeric))
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for p in named:
        for net, proto, port in named_port_members(ent, p.name, peers):
            groups[(proto, port)].append(net)
    for (proto, port), nets in sorted(groups.items()):
        alts.append((tuple(dict.fromkeys(nets)), proto, ((port, port),)))
    return alts


def _with_alternatives(m: Match, side: str, alts) -> list[Match]:
    out = []
    for nets, proto, ranges in alts:
        if proto is not None and m.protocol is not None and proto != m.protocol:
            continue
        sm = m.src if side == "src" else m.dst
        if nets is not None:
            sm = SideMatch(sm.pos + (nets,), sm.neg)
        fields = {"src": sm} if side == "src" else {"dst": sm}
        fields["sports" if side == "src" else "dports"] = ranges
        if proto is not None:
            fields["protocol"] = proto
        out.append(replace(m, **fields))
    return out


# --- address classes ----------------------------------------------------------

def _addr_classes(matches: list[Match], side: int, fam: int) -> list[tuple[IPNetwork, int]]:
    """LPM entries for one (side, family) scope, each with the vector of the
    slots admitting the addresses whose longest match it is.

    CIDRs form a laminar family (two prefixes nest or are disjoint), so the
    addresses whose longest match is C are inside exactly C and its
    ancestors. A depth-first walk in (address, length) order keeps, per slot,
    how many of its positive lists and negative lists are hit on the path;
    entering or leaving a CIDR touches only the slots whose lists hold it."""
    root = ipaddress.ip_network("0.0.0.0/0" if fam == 4 else "::/0")
    need: list[int] = []
    have: list[int] = []
    negs: list[int] = []
    lists: dict[frozenset, int] = {}
    users: list[list[tuple[int, bool]]] = []
    vec = 0
    for s, m in enumerate(matches):
        sm = m.src if side == SIDE_SRC else m.dst
        eligible = fam in m.families
        pos = [frozenset(n for n in l if n.version == fam) for l in sm.pos]
        neg = [frozenset(n for n in l if n.version == fam) for l in sm.neg]
        if not eligible or any(not l for l in pos):
            need.append(-1)  # never satisfiable in this family
            have.append(0)
            negs.append(0)
            continue
        need.append(len(pos))
        have.append(0)
        negs.append(0)
        for l, positive in [(l, True) for l in pos] + [(l, False) for l in neg if l]:
            lid = lists.setdefault(l, len(lists))
            if lid == len(users):
                users.append([])
            users[lid].append((s, positive))
        if not pos:
            vec |= 1 << s
    members: dict[IPNetwork, list[int]] = defaultdict(list)
    for l, lid in lists.items():
        for n in l:
            members[n].append(lid)
    count = [0] * len(lists)

    def touch(lid: int, delta: int) -> None:
        nonlocal vec
        count[lid] += delta
        if count[lid] != (1 if delta > 0 else 0):
            return  # the list was already hit (or still is) on this path
        for s, positive in users[lid]:
            before = have[s] == need[s] and negs[s] == 0
            if positive:
                have[s] += delta
            else:
                negs[s] += delta
            if before != (have[s] == need[s] and negs[s] == 0):
                vec ^= 1 << s

    out: list[tuple[IPNetwork, int]] = []
    if root not in members:
        out.append((root, vec))
    stack: list[IPNetwork] = []
    for net in sorted(members, key=lambda n: (int(n.network_address), n.prefixlen)):
        while stack and not net.subnet_of(stack[-1]):
            for lid in members[stack.pop()]:
                touch(lid, -1)
        for lid in members[net]:
            touch(lid, +1)
        stack.append(net)
        out.append((net, vec))
    return out


# --- protocol and port classes --------------------------------------------------

def _complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, at = [], 0
    for lo, hi in _merge(ranges):
        if lo > at:
            out.append((at, lo - 1))
        at = max(at, hi + 1)
    if at <= 65535:
        out.append((at, 65535))
    return tuple(out)


def _merge(ranges) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent ranges (the sweep toggles a slot's bit
    at each edge, so overlapping ranges of one slot must be merged first)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _intersect(a, b):
    out = []
    for alo, ahi in _merge(a):
        for blo, bhi in _merge(b):
            lo, hi = max(alo, blo), min(ahi, bhi)
            if lo <= hi:
                out.append((lo, hi))
    return _merge(out)


def _icmp_ranges(m) -> tuple[tuple[int, int], ...]:
    t, c = m
    if t is None:
        return FULL
    return ((t << 8 | c, t << 8 | c),) if c is not None else ((t << 8, t << 8 | 255),)


def _port_accept(proto: int, ports, not_ports) -> tuple[tuple[int, int], ...]:
    """Values a port list pair admits: for a protocol without ports, a
    positive list admits nothing and a negative one everything."""
    acc = FULL
    if proto in PORTED:
        if ports is not None:
            acc = _intersect(acc, ports)
        if not_ports is not None:
            acc = _intersect(acc, _complement(not_ports))
    elif ports is not None:
        return ()
    return acc


def _accept(m: Match, side: int, proto: int) -> tuple[tuple[int, int], ...]:
    """The 16-bit values (port, or ICMP type << 8 | code) ``m`` admits for
    ``proto`` on ``side``. The destination side also carries the protocol
    test, so the source side only checks source ports."""
    if side == SIDE_SRC:
        return _port_accept(proto, m.sports, m.not_sports)
    if m.protocol is not None and m.protocol != proto:
        return ()
    if m.not_protocol is not None and m.not_protocol == proto:
        return ()
    acc = _port_accept(proto, m.dports, m.not_dports)
    if proto in ICMP:
        if m.icmp is not None:
            acc = _intersect(acc, _icmp_ranges(m.icmp))
        if m.not_icmp is not None:
            acc = _intersect(acc, _complement(_icmp_ranges(m.not_icmp)))
    elif m.icmp is not None:
        return ()
    return acc


def _sweep(accepts: list[tuple[tuple[int, int], ...]]) -> list[tuple[int, int, int]]:
    """Partition 0..65535 into segments of equal vectors: (lo, hi, vector)."""
    events: dict[int, int] = defaultdict(int)
    for s, acc in enumerate(accepts):
        for lo, hi in acc:
            events[lo] ^= 1 << s
            events[hi + 1] ^= 1 << s
    segs: list[tuple[int, int, int]] = []
    vec, at = 0, 0
    for pos in sorted(events):
        if pos > at and pos <= 65536:
            if segs and segs[-1][2] == vec:
                segs[-1] = (segs[-1][0], pos - 1, vec)
            else:
                segs.append((at, pos - 1, vec))
        vec ^= events[pos]
        at = pos
    if at <= 65535:
        if segs and segs[-1][2] == vec:
            segs[-1] = (segs[-1][0], 65535, vec)
        else:
            segs.append((at, 65535, vec))
    return segs


def _l4_classes(matches: list[Match], side: int):
    """Yield (protocol, segments) for all 256 protocols. Protocols no slot
    names share one computation."""
    named = set(PORTED) | set(ICMP)
    for m in matches:
        named.update(p for p in (m.protocol, m.not_protocol) if p is not None)
    generic = None
    for proto in range(256):
        if proto in named:
            yield proto, _sweep([_accept(m, side, proto) for m in matches])
            continue
        if generic is None:
            generic = _sweep([_accept(m, side, proto) for m in matches])
        yield proto, generic
