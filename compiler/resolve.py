"""Resolve pass: PolicySet + (node, interface, direction) -> ChainView.

Before: a validated ``PolicySet``. After: the ordered policy an interface
enforces in one direction, as Calico's felix would render it:

* the governing host endpoint (a named HEP beats the ``*`` wildcard; among
  several, the alphabetically smallest name wins; only this node's HEPs);
* failsafe entries (per-node FelixConfiguration over ``default`` over the
  built-in defaults), ahead of all policy; and the other direction's
  entries, which in Calico's raw table let replies (matched on the source
  port) skip untracked policy;
* stages in evaluation order (ingress: untracked, preDNAT, normal; egress:
  untracked, normal), each a list of tiers in tier order, each tier the
  policies that select the endpoint and govern the direction, in policy
  order (missing order last, ties by name/namespace/kind);
* the forward tiers: the same for forwarded traffic, which only
  ``applyOnForward`` policies of the normal stage judge;
* the profiles tried after the last tier;
* the peers (host endpoints with expectedIPs, network sets) that rule
  selectors resolve against.

Nothing here evaluates packets; ``reference`` and ``lower`` both start from
a ChainView.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from .diagnostics import Diagnostic, PolicyError
from .ir import (
    BUILTIN_TIERS,
    DEFAULT_FAILSAFE_INBOUND,
    DEFAULT_FAILSAFE_OUTBOUND,
    EGRESS,
    INGRESS,
    Failsafe,
    HostEndpoint,
    IPAddress,
    IPNetwork,
    Policy,
    PolicySet,
    Tier,
)
from .selector import Selector

STAGES = {INGRESS: ("untracked", "preDNAT", "normal"), EGRESS: ("untracked", "normal")}
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


@dataclass(frozen=True, slots=True)
class Peer:
    """Something a rule selector can match: its labels and its addresses."""

    kind: str
    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IPNetwork, ...]
    ports: tuple[tuple[str, int, int], ...] = ()  # named ports: (name, protocol, port)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class TierView:
    tier: Tier
    stage: str
    policies: tuple[Policy, ...]


@dataclass(frozen=True, slots=True)
class ChainView:
    node: str
    iface: str
    direction: str
    hep: HostEndpoint | None
    failsafes: tuple[Failsafe, ...]
    tiers: tuple[TierView, ...]  # all stages, in evaluation order
    profiles: tuple[str, ...]
    peers: tuple[Peer, ...]
    warnings: tuple[Diagnostic, ...] = ()
    reverse_failsafes: tuple[Failsafe, ...] = ()  # the other direction's, on the source port
    forward_tiers: tuple[TierView, ...] = ()  # stage "forward": applyOnForward policies


def tiers_in_order(ps: PolicySet) -> tuple[Tier, ...]:
    """Calico's TierLess: order ascending, missing order last, then name."""
    by_name = {t.name: t for t in BUILTIN_TIERS}
    by_name.update({t.name: t for t in ps.tiers})
    return tuple(sorted(by_name.values(), key=lambda t: (t.order is None, t.order or 0.0, t.name)))


def policy_sort_key(p: Policy) -> tuple:
    """SORTER: order ascending (missing = +Inf), then "name/namespace/kind"."""
    order = math.inf if p.order is None else p.order
    return (order, f"{p.name}/{p.namespace or ''}/{p.kind}")


def check_references(ps: PolicySet) -> None:
    """Cross-resource checks: every policy's tier exists."""
    names = {t.name for t in tiers_in_order(ps)}
    errors = [
        Diagnostic(p.span, "spec.tier", p.tier, "tier is not defined (add a Tier resource)")
        for p in ps.policies
        if p.tier not in names
    ]
    if errors:
        raise PolicyError(errors)


def selection_warnings(ps: PolicySet) -> tuple[Diagnostic, ...]:
    """Valid but almost certainly a mistake: a GlobalNetworkPolicy that
    selects none of the host endpoints given (only checked when some are)."""
    if not ps.host_endpoints:
        return ()
    return tuple(
        Diagnostic(p.span, "spec.selector", str(p.selector),
                   "selects none of the host endpoints in the given files", "warning")
        for p in ps.policies
        if p.kind == "GlobalNetworkPolicy" and not any(policy_selects(p, h) for h in ps.host_endpoints)
    )


def host_endpoint_for(ps: PolicySet, node: str, iface: str,
                      iface_addrs: tuple[IPAddress, ...] = ()) -> HostEndpoint | None:
    """The HEP that governs ``iface`` on ``node`` (EPMGR resolveHostEndpoints)."""
    mine = [h for h in ps.host_endpoints if h.node == node]
    addrs = set(iface_addrs)
    specific = [
        h for h in mine
        if h.interface_name == iface or (h.interface_name is None and addrs & set(h.expected_ips))
    ]
    if specific:
        return min(specific, key=lambda h: h.name)
    wildcard = [h for h in mine if h.interface_name == "*"]
    return min(wildcard, key=lambda h: h.name) if wildcard else None


def peers(ps: PolicySet) -> tuple[Peer, ...]:
    """What rule selectors resolve to: HEP expectedIPs (a HEP without them is
    never a peer) and network-set nets."""
    out = []
    for h in ps.host_endpoints:
        if h.expected_ips:
            nets = tuple(ipaddress.ip_network(a) for a in h.expected_ips)
            ports = tuple((p.name, p.protocol.number, p.port) for p in h.ports)
            out.append(Peer("HostEndpoint", h.name, None, h.labels, nets, ports))
    for s in ps.network_sets:
        labels = s.labels
        if s.namespace is not None:
            # NetworkSets get their namespace as a label (networksetprocessor.go).
            labels = tuple(sorted(dict(labels + (("projectcalico.org/namespace", s.namespace),)).items()))
        out.append(Peer(s.kind, s.name, s.namespace, labels, s.nets))
    return tuple(out)


def policy_selects(p: Policy, hep: HostEndpoint) -> bool:
    """Only GlobalNetworkPolicy selects host endpoints. A namespaceSelector
    or serviceAccountSelector is AND-ed in through labels a HEP never has:
    positive terms exclude it, purely negative ones do not."""
    if p.kind != "GlobalNetworkPolicy":
        return False
    labels = hep.label_map
    if not p.selector.evaluate(labels):
        return False
    for extra in (p.namespace_selector, p.service_account_selector):
        if extra is not None and not scope_selector_matches_global(extra):
            return False
    return True


def scope_selector_matches_global(sel: Selector) -> bool:
    """Evaluate a namespace (or service-account) selector for a resource that
    is not namespaced. Calico rewrites all() to has(projectcalico.org/namespace)
    and global() to its negation and prefixes every label, so for a HEP or a
    GlobalNetworkSet: all() is false, global() true, every label absent."""
    return sel.evaluate({}, all_value=False, global_value=True)


def peer_selected(ent, p: Peer) -> bool:
    """Whether a rule's (positive) selector picks a peer. A rule
    namespaceSelector scopes the selector to namespaces; global() picks the
    non-namespaced peers (HEPs, GlobalNetworkSets). notSelector is never
    scoped and is evaluated on its own."""
    if ent.namespace_selector is not None:
        if p.namespace is None:
            if not scope_selector_matches_global(ent.namespace_selector):
                return False
        # A namespaced peer: hepbpf reads no Namespace objects, so the only
        # namespace label it knows is projectcalico.org/name.
        elif not ent.namespace_selector.evaluate({"projectcalico.org/name": p.namespace},
                                                 all_value=True, global_value=False):
            return False
    return ent.selector is None or ent.selector.evaluate(p.label_map())


def named_port_members(ent, name: str, peers: tuple[Peer, ...]) -> list[tuple[IPNetwork, int, int]]:
    """(address, protocol, port) of a named port: the endpoints that declare
    it, among those the rule's positive selector on that side picks (all
    endpoints if it has none), as felix's rule scanner builds the set."""
    return [(n, proto, port) for p in peers if peer_selected(ent, p)
            for (pname, proto, port) in p.ports if pname == name for n in p.nets]


def failsafes(ps: PolicySet, node: str, direction: str) -> tuple[Failsafe, ...]:
    configs = {f.name: f for f in ps.felix_configs}
    attr = "failsafe_inbound" if direction == INGRESS else "failsafe_outbound"
    for name in (f"node.{node}", "default"):
        cfg = configs.get(name)
        if cfg is not None and getattr(cfg, attr) is not None:
            return getattr(cfg, attr)
    return DEFAULT_FAILSAFE_INBOUND if direction == INGRESS else DEFAULT_FAILSAFE_OUTBOUND


def resolve(ps: PolicySet, *, node: str, iface: str, direction: str = INGRESS,
            iface_addrs: tuple[IPAddress, ...] = ()) -> ChainView:
    hep = host_endpoint_for(ps, node, iface, iface_addrs)
    warnings: list[Diagnostic] = []
    if hep is None:
        return ChainView(node, iface, direction, None, (), (), (), peers(ps), ())
    applicable = [p for p in ps.policies if direction in p.types and policy_selects(p, hep)]
    if hep.interface_name == "*":
        for p in applicable:
            if p.do_not_track:
                warnings.append(Diagnostic(p.span, "spec.doNotTrack", True,
                                           f"ignored: doNotTrack policy does not apply to wildcard host "
                                           f"endpoint {hep.name} (as in Calico)", "warning"))
        applicable = [p for p in applicable if not p.do_not_track]
    tiers = []
    for stage in STAGES[direction]:
        tiers.extend(_tiers(ps, stage, [p for p in applicable if p.stage == stage]))
    forward = _tiers(ps, "forward", [p for p in applicable if p.stage == "normal" and p.apply_on_forward])
    if not applicable and not hep.profiles:
        warnings.append(Diagnostic(hep.span, "", None,
                                   f"host endpoint {hep.name} has no policy and no profile for "
                                   f"{direction.lower()}: everything but failsafe traffic is denied",
                                   "warning"))
    other = EGRESS if direction == INGRESS else INGRESS
    return ChainView(node, iface, direction, hep, failsafes(ps, node, direction), tuple(tiers),
                     hep.profiles, peers(ps), tuple(warnings),
                     reverse_failsafes=failsafes(ps, node, other), forward_tiers=tuple(forward))


def _tiers(ps: PolicySet, stage: str, pols: list[Policy]) -> list[TierView]:
    out = []
    for tier in tiers_in_order(ps):
        mine = sorted((p for p in pols if p.tier == tier.name), key=policy_sort_key)
        if mine:
            out.append(TierView(tier, stage, tuple(mine)))
    return out
