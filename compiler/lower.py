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

from .alloc import builder, gc_paused
from .diagnostics import PolicyError, Diagnostic
from .ir import ICMP_PROTOCOLS, INGRESS, IPNetwork, PortRange, Rule
from .mapimage import (
    CHAINS,
    SLOT_AUDIT,
    SLOT_DIVERT,
    SLOT_TRACK,
    SIDE_DST,
    SIDE_SRC,
    AddrScope,
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


# An address list is a tuple of chunks, each a tuple of networks: a rule's
# nets are one chunk; a selector's IP set is one chunk per peer it picks,
# the peer's own tuple, shared by every rule that picks the peer. Lowering
# walks chunks, so a network set costs the same whether one rule selects it
# or a thousand do.
NetList = tuple[tuple[IPNetwork, ...], ...]


@dataclass(frozen=True, slots=True)
class SideMatch:
    """Address constraints on one side. Each ``pos`` list must contain the
    address (nets; a selector's IP set); no ``neg`` list may."""

    pos: tuple[NetList, ...] = ()
    neg: tuple[NetList, ...] = ()


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

# Made once per rule (10,000 at the scale target): built, not __init__-ed.
_match, _side_match, _slot_entry = builder(Match), builder(SideMatch), builder(SlotEntry)


@dataclass(slots=True)
class _Slot:
    match: Match
    entry: SlotEntry


@gc_paused
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
    nets = _Nets()
    addr: list[AddrScope] = []
    proto: list[ProtoEntry] = []
    ports: list[PortSegment] = []
    ntables = 0
    for chain in CHAINS:
        slots = chains.get(chain, [])
        matches = [s.match for s in slots]
        for side in (SIDE_SRC, SIDE_DST):
            for fam in (4, 6):
                addr.append(_addr_scope(matches, chain, side, fam, classes, nets))
            for p, segs in _l4_classes(matches, side):
                if len(segs) == 1:
                    proto.append(ProtoEntry(chain, side, p, classes.id(segs[0][2]), None))
                    continue
                proto.append(ProtoEntry(chain, side, p, 0, ntables))
                ports.extend(_port_segment(ntables, lo, hi, classes.id(v)) for lo, hi, v in segs)
                ntables += 1
    entries = tuple(s.entry for c in sorted(chains) for s in chains[c])
    names = ("",) + tuple(sorted({e.policy for e in entries if e.policy}))
    return MapImage(
        nwords=nwords,
        has_policy=has_policy,
        addr_scopes=tuple(addr),
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
        return tuple(self._ids)  # insertion order is id order


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

    def add(match: Match, action: str, reason: str, flags: int = 0, stage: str | None = None,
            tier: str | None = None, policy: str | None = None, rule: int | None = None) -> _Slot:
        s = _Slot(match, _slot_entry(chain, len(out), action, REASONS[reason], 0, stage, tier, policy, rule, flags))
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
    picks = _Picks(view.peers)
    hops = _tier_slots(view, "untracked", add, out, picks)
    ct = add(CATCH_ALL, "Conntrack", "conntrack", stage="conntrack")
    for s in reverse:
        s.entry = s.entry.with_next(ct.entry.slot)
    hops += _tier_slots(view, "preDNAT", add, out, picks)
    if ingress:
        to_forward.append((add(CATCH_ALL, "Forward", "none", stage="forward"), 1))
    normal = _tier_slots(view, "normal", add, out, picks)
    if DEFAULT_ALLOW_PROFILE in view.profiles:
        add(CATCH_ALL, "Allow", "profile-allow", SLOT_TRACK, stage="profile", policy=DEFAULT_ALLOW_PROFILE)
    add(CATCH_ALL, "Deny", "no-profile", stage="profile")
    start = len(out)
    add(CATCH_ALL, "Conntrack", "conntrack", stage="conntrack")
    forward = _tier_slots(view, "forward", add, out, picks)
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


_RULE_REASONS = {"Allow": "rule-allow", "Deny": "rule-deny", "Pass": "rule-allow", "Log": "none"}


def _tier_slots(view: ChainView, stage: str, add, out: list[_Slot], picks: _Picks) -> int:
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
                reason = _RULE_REASONS[rule.action]
                flags = track if rule.action == "Allow" else 0
                if rule.action == "Deny" and pol.audit:
                    flags = SLOT_AUDIT
                # A rule may lower to several alternatives (named ports), one
                # slot each, consecutive: first match over them is their OR;
                # a noting slot goes on after the last (noted once).
                alts = [add(m, rule.action, reason, flags, stage=tv.stage, tier=tv.tier.name,
                            policy=pol.name, rule=rule.index) for m in _rule_matches(rule, view.peers, picks)]
                if rule.action == "Log" or flags & SLOT_AUDIT:
                    for s in alts:
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
    nets = SideMatch(pos=(((fs.net,),),)) if fs.net is not None else SideMatch()
    port = {"sports" if reply else "dports": ((fs.port, fs.port),)}
    if direction == INGRESS:
        return Match(fams, nets, SideMatch(), protocol=fs.proto_number, **port)
    return Match(fams, SideMatch(), nets, protocol=fs.proto_number, **port)


def _ranges(ports) -> tuple[tuple[int, int], ...] | None:
    if not ports:
        return None
    return tuple((p.lo, p.hi) for p in ports if isinstance(p, PortRange))


class _Picks:
    """What each rule selector picks among a view's peers, as an address
    list. Rules repeat selectors (many rules, few network sets), so each
    selector is evaluated against the peers once."""

    def __init__(self, peers: tuple[Peer, ...]):
        self.peers = peers
        self.labels = [p.label_map() for p in peers]
        self.selected: dict[tuple, NetList] = {}
        self.not_selected: dict[object, NetList] = {}

    def pos(self, ent) -> NetList:
        key = (ent.selector, ent.namespace_selector)
        hit = self.selected.get(key)
        if hit is None:
            hit = self.selected[key] = tuple(p.nets for p in self.peers if p.nets and peer_selected(ent, p))
        return hit

    def neg(self, sel) -> NetList:
        hit = self.not_selected.get(sel)
        if hit is None:
            hit = self.not_selected[sel] = tuple(p.nets for p, labels in zip(self.peers, self.labels)
                                                 if p.nets and sel.evaluate(labels))
        return hit


def _side(ent, picks: _Picks) -> SideMatch | None:
    pos, neg = [], []
    if ent.nets:
        pos.append((ent.nets,))
    if ent.not_nets:
        neg.append((ent.not_nets,))
    if ent.selector is not None or ent.namespace_selector is not None:
        ipset = picks.pos(ent)
        if not ipset:
            return None
        pos.append(ipset)
    if ent.not_selector is not None:
        ipset = picks.neg(ent.not_selector)
        if ipset:
            neg.append(ipset)
    return _side_match(tuple(pos), tuple(neg))


def _rule_matches(rule: Rule, peers: tuple[Peer, ...], picks: _Picks) -> list[Match]:
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
    src, dst = _side(rule.source, picks), _side(rule.destination, picks)
    if not fams or src is None or dst is None:
        return []
    icmp = lambda m: None if m is None else (m.type, m.code)  # noqa: E731
    base = _match(
        frozenset(fams), src, dst,
        rule.protocol.number if rule.protocol else None,  # protocol
        rule.not_protocol.number if rule.not_protocol else None,  # not_protocol
        icmp(rule.icmp), icmp(rule.not_icmp),  # icmp, not_icmp
        _ranges(rule.destination.ports), _ranges(rule.destination.not_ports),  # dports, not_dports
        _ranges(rule.source.ports), _ranges(rule.source.not_ports),  # sports, not_sports
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
        alts.append(((tuple(dict.fromkeys(nets)),), proto, ((port, port),)))
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

_port_segment = builder(PortSegment)  # 15,000 at the scale target


class _Part:
    """A chunk's networks of one family, as their sort keys (address << 8 |
    prefix length: (address, length) order, one int), sorted once here so
    a scope's sort merges runs. ``_Nets.net_of`` maps them back."""

    __slots__ = ("keys",)

    def __init__(self, keys: list[int]):
        self.keys = keys


class _Nets:
    """Per-chunk facts every address scope needs, computed once per lower():
    each chunk's ``_Part`` of each family (the two split in one pass), and
    per family the network of every sort key."""

    def __init__(self):
        self._split: dict[tuple[int, int], _Part] = {}
        self.net_of: dict[int, dict[int, IPNetwork]] = {4: {}, 6: {}}

    def of(self, chunk: tuple[IPNetwork, ...], fam: int) -> _Part:
        hit = self._split.get((id(chunk), fam))
        if hit is None:
            v4 = [n for n in chunk if n.version == 4]
            v6 = [n for n in chunk if n.version == 6] if len(v4) < len(chunk) else []
            for f, nets in ((4, v4), (6, v6)):
                # int(address) and .prefixlen are Python-level calls; the
                # attributes behind them (which netparse sets too) are not.
                by_key = {n.network_address._ip << 8 | n._prefixlen: n for n in nets}
                self.net_of[f].update(by_key)
                self._split[(id(chunk), f)] = _Part(sorted(by_key))
            hit = self._split[(id(chunk), fam)]
        return hit


def _addr_scope(matches: list[Match], chain: int, side: int, fam: int, classes: _Classes,
                nets: _Nets) -> AddrScope:
    """The LPM entries of one (chain, side, family) scope, each with the
    class of the slots admitting the addresses whose longest match it is.

    CIDRs form a laminar family (two prefixes nest or are disjoint), so the
    addresses whose longest match is C are inside exactly C and its
    ancestors, and a slot admits them iff each of its positive lists and
    none of its negative lists holds C or an ancestor. A depth-first walk
    in (address, length) order keeps, per CIDR on the path, the state "which
    lists are hit": a slot with one positive list (most) is admitted by the
    OR of its list's vector over the hit lists, one with several checks
    them all; negative lists mask. A CIDR's state depends only on the sets
    of lists holding it and its ancestors, so it is computed once per
    distinct (parent state, lists holding it) pair, and its vectors once
    per distinct collection of such sets."""
    lids: dict[tuple[int, ...], int] = {}  # the list's chunk ids -> list id (-1: empty in this family)
    chunks: list[tuple[_Part, ...]] = []  # list id -> its chunks, this family's networks only
    single: list[int] = []  # list id -> slots whose one positive list it is
    negative: list[int] = []  # list id -> slots it must not hold
    used: list[bool] = []
    multi: dict[int, list[tuple[int, frozenset[int]]]] = defaultdict(list)  # list id -> (slot, its lists)
    base = 0  # slots with no positive list

    def lid(netlist: NetList) -> int:
        key = tuple(map(id, netlist))
        found = lids.get(key)
        if found is None:
            parts = tuple(part for part in (nets.of(c, fam) for c in netlist) if part.keys)
            found = lids[key] = len(chunks) if parts else -1
            if parts:
                chunks.append(parts)
                single.append(0)
                negative.append(0)
                used.append(False)
        return found

    for s, m in enumerate(matches):
        if fam not in m.families:
            continue
        sm = m.src if side == SIDE_SRC else m.dst
        if not sm.pos and not sm.neg:  # most slots, on the local side: no address constraint
            base |= 1 << s
            continue
        pos = [lid(nl) for nl in sm.pos]
        if -1 in pos:
            continue  # never satisfiable in this family
        bit = 1 << s
        for n in sm.neg:
            n = lid(n)
            if n >= 0:
                negative[n] |= bit
                used[n] = True
        need = frozenset(pos)
        for p in need:
            used[p] = True
        if not need:
            base |= bit
        elif len(need) == 1:
            single[pos[0]] |= bit
        else:
            for p in need:
                multi[p].append((bit, need))

    # Which lists hold each CIDR (a CIDR may be in several chunks), as an
    # index into ``holders``: the CIDRs of one chunk share their lists.
    owners: dict[int, tuple[_Part, list[int]]] = {}
    for i, parts in enumerate(chunks):
        if used[i]:
            for part in parts:
                owners.setdefault(id(part), (part, []))[1].append(i)
    holders: dict[tuple[int, ...], int] = {}
    lists_of: list[tuple[int, ...]] = []  # holders index -> list ids

    def holder(ls) -> int:
        ls = tuple(sorted(set(ls)))
        h = holders.get(ls)
        if h is None:
            h = holders[ls] = len(lists_of)
            lists_of.append(ls)
        return h

    held: dict[int, int] = {}  # sort key -> index into holders
    for part, ls in owners.values():
        h = holder(ls)
        if held.keys().isdisjoint(part.keys):  # the usual case, a whole chunk at C speed
            held.update(dict.fromkeys(part.keys, h))
            continue
        for k in part.keys:
            prev = held.get(k)
            if prev is None:
                held[k] = h
            elif prev != h:
                held[k] = holder(lists_of[prev] + lists_of[h])

    # What a set of lists contributes: (positive OR, negative OR, the lists
    # multi-list slots use).
    contrib: dict[int, tuple[int, int, tuple[int, ...]]] = {}

    def contribution(h: int) -> tuple[int, int, tuple[int, ...]]:
        pos = neg = 0
        for i in lists_of[h]:
            pos |= single[i]
            neg |= negative[i]
        c = contrib[h] = (pos, neg, tuple(i for i in lists_of[h] if i in multi))
        return c

    # States: 0 is the root's (no list hit). Each: (positive OR, negative OR,
    # satisfied multi-list slots, hit lists that multi-list slots use), all
    # functions of the holders on its path, so one state per set of them.
    states: list[tuple[int, int, int, frozenset[int]]] = [(0, 0, 0, frozenset())]
    on_path: list[frozenset[int]] = [frozenset()]  # state -> its holders
    by_path: dict[frozenset[int], int] = {frozenset(): 0}
    klass: list[int] = [-1]  # state -> class id, -1 until asked
    memo: dict[int, tuple[int, int]] = {}  # parent state * len(holders) + holders index -> (state, class)
    nh = len(holders)

    def child(parent: int, h: int) -> tuple[int, int]:
        path = on_path[parent]
        if h in path:
            state = parent
        else:
            path = path.union((h,))
            state = by_path.get(path)
            if state is None:
                ppos, pneg, ok, hit = states[parent]
                cpos, cneg, cmulti = contrib.get(h) or contribution(h)
                fresh = [i for i in cmulti if i not in hit] if cmulti else None
                if fresh:
                    hit = hit.union(fresh)
                    for i in fresh:
                        for bit, need in multi[i]:
                            if need <= hit:
                                ok |= bit
                states.append((ppos | cpos if cpos else ppos, pneg | cneg if cneg else pneg, ok, hit))
                on_path.append(path)
                klass.append(-1)
                state = by_path[path] = len(states) - 1
        c = klass[state]
        hit = memo[parent * nh + h] = (state, c if c >= 0 else class_of(state))
        return hit

    def class_of(state: int) -> int:
        pos, neg, ok, _ = states[state]
        admitted = base | pos | ok if ok else base | pos
        k = klass[state] = classes.id((admitted | neg) ^ neg if neg else admitted)
        return k

    net_of = nets.net_of[fam]
    keys: list[int] = []
    ids: list[int] = []  # class of each key
    if 0 not in held:
        net_of.setdefault(0, ipaddress.ip_network("0.0.0.0/0" if fam == 4 else "::/0"))
        keys.append(0)
        ids.append(class_of(0))
    width = 32 if fam == 4 else 128
    span = [(1 << (width - plen)) - 1 for plen in range(width + 1)]  # host part by prefix length
    # The path from the root: (last address, state) of each CIDR on it whose
    # state differs from its parent's (one that adds no list changes nothing
    # below it); the root's is above every address.
    top_hi, top_state = 1 << 129, 0
    stack: list[tuple[int, int]] = []
    push, pop = stack.append, stack.pop
    get_state = memo.get
    add_id = ids.append
    ordered = sorted(held)
    for k in ordered:
        lo = k >> 8
        while lo > top_hi:
            top_hi, top_state = pop()
        h = held[k]
        hit = get_state(top_state * nh + h)
        state, c = hit if hit is not None else child(top_state, h)
        add_id(c)
        if state != top_state and k & 0xFF != width:  # a full-length prefix holds no other
            push((top_hi, top_state))
            top_hi, top_state = lo | span[k & 0xFF], state
    keys.extend(ordered)
    return AddrScope.of(chain, side, fam, tuple(keys), tuple(ids), net_of)


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
    if a is FULL:  # the usual first step (a port list against every port): b, merged, if it lies within
        merged = _merge(b)
        if all(0 <= lo <= hi <= 65535 for lo, hi in merged):
            return merged
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


def _sweep(accepts) -> list[tuple[int, int, int]]:
    """Partition 0..65535 into segments of equal vectors: (lo, hi, vector).
    ``accepts``: (ranges, slots) pairs, the slots of disjoint pairs."""
    events: dict[int, int] = defaultdict(int)
    for ranges, slots in accepts:
        for lo, hi in ranges:
            events[lo] ^= slots
            events[hi + 1] ^= slots
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
    names share one computation. Slots are grouped by the fields that decide
    what they admit, so each group's values are computed once per protocol
    and swept as one (rules repeat port lists; most name one protocol)."""
    groups: dict[tuple, list] = {}  # L4 fields -> [a match with them, its slots]
    for s, m in enumerate(matches):
        key = (m.sports, m.not_sports) if side == SIDE_SRC else \
            (m.protocol, m.not_protocol, m.icmp, m.not_icmp, m.dports, m.not_dports)
        group = groups.get(key)
        if group is None:
            groups[key] = [m, 1 << s]
        else:
            group[1] |= 1 << s
    # The destination side tests the protocol: a group naming another one admits nothing.
    by_proto: dict[int | None, list] = defaultdict(list)
    for m, slots in groups.values():
        by_proto[m.protocol if side == SIDE_DST else None].append((m, slots))

    def segments(proto: int) -> list[tuple[int, int, int]]:
        admitted: dict[tuple, int] = {}
        for m, slots in by_proto.get(None, []) + (by_proto.get(proto, []) if proto is not None else []):
            acc = _accept(m, side, proto)
            if acc:
                admitted[acc] = admitted.get(acc, 0) | slots
        return _sweep(admitted.items())

    named = set(PORTED) | set(ICMP)
    for m in matches:
        named.update(p for p in (m.protocol, m.not_protocol) if p is not None)
    generic = None
    for proto in range(256):
        if proto in named:
            yield proto, segments(proto)
            continue
        if generic is None:
            generic = segments(proto)
        yield proto, generic
