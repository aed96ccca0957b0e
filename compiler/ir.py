"""The compiler's intermediate representation: validated Calico resources.

Invariants (established by ``resources.parse`` and relied on by every later
pass):

* every node is a frozen dataclass carrying the ``Span`` it came from;
* CIDRs are ``ipaddress`` networks in canonical form (host bits cleared, as
  Calico does for matching), addresses are ``ipaddress`` addresses;
* protocols are numbers 1-255 (``Protocol.name`` keeps the spelling);
* port lists are tuples of inclusive ``PortRange``s or ``NamedPort``s;
* selectors are parsed ``Selector`` objects;
* ``Policy.types`` is never empty (Calico's API defaulting has been applied).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .diagnostics import NOWHERE, Diagnostic, Span
from .selector import Selector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ACTIONS = ("Allow", "Deny", "Log", "Pass")
INGRESS, EGRESS = "Ingress", "Egress"

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = frozenset({6, 17, 132})  # Calico's Protocol.SupportsPorts
ICMP_PROTOCOLS = {1: 4, 58: 6}  # ICMP implies IPv4, ICMPv6 implies IPv6


@dataclass(frozen=True, slots=True)
class Protocol:
    number: int
    name: str | None  # as written, if a name
    span: Span = NOWHERE

    def __str__(self) -> str:
        return self.name or str(self.number)


@dataclass(frozen=True, slots=True)
class PortRange:
    lo: int
    hi: int
    span: Span = NOWHERE

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"


@dataclass(frozen=True, slots=True)
class NamedPort:
    name: str
    span: Span = NOWHERE

    def __str__(self) -> str:
        return self.name


Port = PortRange | NamedPort


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    type: int | None
    code: int | None
    span: Span = NOWHERE

    def __str__(self) -> str:
        s = f"type={self.type}"
        return s if self.code is None else f"{s} code={self.code}"


@dataclass(frozen=True, slots=True)
class EntityRule:
    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ports: tuple[Port, ...] = ()
    not_ports: tuple[Port, ...] = ()
    span: Span = NOWHERE

    def net_fields(self) -> tuple[tuple[IPNetwork, ...], ...]:
        return (self.nets, self.not_nets)


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    index: int  # position in the policy's rules for its direction
    ip_version: int | None = None
    protocol: Protocol | None = None
    not_protocol: Protocol | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: EntityRule = EntityRule()
    destination: EntityRule = EntityRule()
    span: Span = NOWHERE


@dataclass(frozen=True, slots=True)
class Policy:
    kind: str  # GlobalNetworkPolicy or NetworkPolicy
    name: str
    namespace: str | None
    tier: str
    order: float | None
    selector: Selector
    namespace_selector: Selector | None
    service_account_selector: Selector | None
    types: tuple[str, ...]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    span: Span = NOWHERE
    audit: bool = False  # annotation hepbpf.io/audit: its Deny rules only report

    @property
    def stage(self) -> str:
        if self.do_not_track:
            return "untracked"
        if self.pre_dnat:
            return "preDNAT"
        return "normal"

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    order: float | None
    default_action: str  # Deny or Pass
    builtin: bool = False
    span: Span = NOWHERE


BUILTIN_TIERS = (
    Tier("kube-admin", 1000.0, "Pass", builtin=True),
    Tier("default", 1_000_000.0, "Deny", builtin=True),
    Tier("kube-baseline", 10_000_000.0, "Pass", builtin=True),
)


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    protocol: Protocol
    port: int
    span: Span = NOWHERE


@dataclass(frozen=True, slots=True)
class HostEndpoint:
    name: str
    labels: tuple[tuple[str, str], ...]
    node: str
    interface_name: str | None
    expected_ips: tuple[IPAddress, ...]
    profiles: tuple[str, ...]
    ports: tuple[EndpointPort, ...] = ()
    span: Span = NOWHERE

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class NetworkSet:
    kind: str  # GlobalNetworkSet or NetworkSet (namespaced)
    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IPNetwork, ...]
    span: Span = NOWHERE

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class Failsafe:
    protocol: str  # "tcp" or "udp" (felix accepts only these)
    port: int
    net: IPNetwork | None
    span: Span = NOWHERE

    @property
    def proto_number(self) -> int:
        return PROTOCOL_NUMBERS[self.protocol.upper()]

    def __str__(self) -> str:
        if self.net is None:
            return f"{self.protocol}:{self.port}"
        net = f"[{self.net}]" if self.net.version == 6 else str(self.net)
        return f"{self.protocol}:{net}:{self.port}"


def _defaults(spec: str) -> tuple[Failsafe, ...]:
    out = []
    for item in spec.split(","):
        proto, port = item.split(":")
        out.append(Failsafe(proto, int(port), None))
    return tuple(out)


# felix/config/config_params.go defaults (5473 is Typha; the docs table omits it).
DEFAULT_FAILSAFE_INBOUND = _defaults(
    "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
)
DEFAULT_FAILSAFE_OUTBOUND = _defaults(
    "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
)


@dataclass(frozen=True, slots=True)
class FelixConfiguration:
    name: str  # "default" or "node.<nodename>"
    failsafe_inbound: tuple[Failsafe, ...] | None  # None: not set here
    failsafe_outbound: tuple[Failsafe, ...] | None
    span: Span = NOWHERE


@dataclass(frozen=True, slots=True)
class Node:
    """A Calico Node: what kube-controllers builds an automatic HEP from."""

    name: str
    labels: tuple[tuple[str, str], ...]
    addresses: tuple[IPAddress, ...]  # BGP, tunnel, WireGuard, InternalIP..., in order, deduplicated
    span: Span = NOWHERE


@dataclass(frozen=True, slots=True)
class KubeControllersConfiguration:
    name: str
    auto_host_endpoints: bool  # controllers.node.hostEndpoint.autoCreate: Enabled
    span: Span = NOWHERE


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything read from the input files, validated."""

    policies: tuple[Policy, ...] = ()
    tiers: tuple[Tier, ...] = ()
    host_endpoints: tuple[HostEndpoint, ...] = ()
    network_sets: tuple[NetworkSet, ...] = ()
    felix_configs: tuple[FelixConfiguration, ...] = ()
    warnings: tuple[Diagnostic, ...] = field(default=())
    nodes: tuple[Node, ...] = ()
    kube_controllers: tuple[KubeControllersConfiguration, ...] = ()

    def merge(self, other: PolicySet) -> PolicySet:
        return PolicySet(
            self.policies + other.policies,
            self.tiers + other.tiers,
            self.host_endpoints + other.host_endpoints,
            self.network_sets + other.network_sets,
            self.felix_configs + other.felix_configs,
            self.warnings + other.warnings,
            self.nodes + other.nodes,
            self.kube_controllers + other.kube_controllers,
        )
