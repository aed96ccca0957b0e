"""Parse pass: YAML text -> validated ``PolicySet``.

Before: text in one or more YAML 1.2 documents (``yamlsrc`` keeps a position
for every node and never coerces). After: a ``PolicySet`` whose invariants
are stated in ``ir``. Every rejection is a ``Diagnostic`` with file:line:col,
the field path, the value and a reason; unknown kinds and unknown fields are
rejected, as calicoctl does. Nothing is dropped or coerced silently.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from . import felixfields, k8spolicy, netparse
from .alloc import builder, gc_paused
from .autohep import auto_host_endpoints
from .diagnostics import Diagnostic, PolicyError, Span
from .ir import (
    ACTIONS,
    EGRESS,
    ICMP_PROTOCOLS,
    INGRESS,
    PORT_PROTOCOLS,
    PROTOCOL_NUMBERS,
    BUILTIN_TIERS,
    EndpointPort,
    EntityRule,
    Failsafe,
    FelixConfiguration,
    HostEndpoint,
    IcmpMatch,
    IPNetwork,
    KubeControllersConfiguration,
    Node as CalicoNode,
    NamedPort,
    NetworkSet,
    Policy,
    PolicySet,
    Port,
    PortRange,
    Protocol,
    Rule,
    Tier,
)
from .selector import (
    Selector,
    SelectorError,
    all_of,
    parse_selector,
    validate_namespace_selector,
    validate_policy_selector,
    with_label_prefix,
)
from .yamlsrc import Mapping, Node, Scalar, Sequence, load_documents

API_VERSIONS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")
T = TypeVar("T")

# Kubernetes object metadata fields we accept and ignore (beyond name,
# namespace, labels, annotations).
_IGNORED_META = frozenset(
    {
        "uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
        "deletionGracePeriodSeconds", "ownerReferences", "finalizers", "managedFields",
        "generateName", "selfLink",
    }
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GNP_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NP_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?"
                      r"|(knp|ossg)\.default\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IFACE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_NAMED_PORT = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_PORT_NAME_K8S = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


_NAMESPACED = ("NetworkPolicy", "NetworkSet")
# Made once per rule and rule side (10,000 and 20,000 at scale): built, not __init__-ed.
_new_rule, _new_entity = builder(Rule), builder(EntityRule)


@gc_paused
def parse(text: str, *, source: str) -> PolicySet:
    """Parse and validate every resource in ``text``; raise ``PolicyError``
    listing all problems found."""
    out = _Builder()
    errors: list[Diagnostic] = []
    for doc in load_documents(text, source=source):
        for path, node in _resources(doc, errors):
            try:
                out.add(node, path)
            except PolicyError as e:
                errors.extend(e.diagnostics)
    if errors:
        raise PolicyError(errors)
    return out.build()


@gc_paused
def parse_files(texts: list[tuple[str, str]]) -> PolicySet:
    """Parse several (source, text) pairs into one PolicySet."""
    errors: list[Diagnostic] = []
    result = PolicySet()
    for source, text in texts:
        try:
            result = result.merge(parse(text, source=source))
        except PolicyError as e:
            errors.extend(e.diagnostics)
    if errors:
        raise PolicyError(errors)
    return auto_host_endpoints(check_unique(result))


def check_unique(ps: PolicySet) -> PolicySet:
    """Two resources of one kind with one name: calicoctl would keep the last;
    a firewall should say so instead."""
    seen: dict[tuple[str, str | None, str], object] = {}
    errors = []
    items = (
        [("Policy/" + p.kind, p.namespace, p.name, p.span) for p in ps.policies]
        + [("HostEndpoint", None, h.name, h.span) for h in ps.host_endpoints]
        + [(s.kind, s.namespace, s.name, s.span) for s in ps.network_sets]
        + [("FelixConfiguration", None, f.name, f.span) for f in ps.felix_configs]
        + [("Tier", None, t.name, t.span) for t in ps.tiers]
        + [("Node", None, n.name, n.span) for n in ps.nodes]
        + [("KubeControllersConfiguration", None, k.name, k.span) for k in ps.kube_controllers]
    )
    for kind, ns, name, span in items:
        key = (kind, ns, name)
        if key in seen:
            errors.append(
                Diagnostic(span, "metadata.name", name,
                           f"duplicate {kind.split('/')[-1]} (first defined at {seen[key]})")
            )
        else:
            seen[key] = span
    if errors:
        raise PolicyError(errors)
    return ps


def _resources(doc: Node, errors: list[Diagnostic]) -> Iterator[tuple[str, Mapping]]:
    """Yield (path, resource mapping), unpacking ``kind: List``."""
    if not isinstance(doc, Mapping):
        errors.append(Diagnostic(doc.span, "", None, "a resource must be a mapping"))
        return
    kind = doc.get("kind")
    if isinstance(kind, Scalar) and kind.value in ("List", "GlobalNetworkPolicyList",
                                                    "HostEndpointList", "GlobalNetworkSetList"):
        items = doc.get("items")
        for key in doc.keys():
            if key not in ("apiVersion", "kind", "items", "metadata"):
                errors.append(Diagnostic(doc.key_span(key), key, None, "unknown field"))
        if items is None:
            return
        if not isinstance(items, Sequence):
            errors.append(Diagnostic(items.span, "items", None, "must be a list"))
            return
        for i, item in enumerate(items.items):
            if not isinstance(item, Mapping):
                errors.append(Diagnostic(item.span, f"items[{i}]", None, "a resource must be a mapping"))
                continue
            yield f"items[{i}].", item
        return
    yield "", doc


class _Fields:
    """Reads a mapping's fields by name and rejects the ones never read."""

    def __init__(self, node: Node | None, path: str, span: Span):
        if node is not None and not isinstance(node, Mapping):
            raise _err(node, path, "must be a mapping")
        self.node = node
        self.path = path
        self.span = node.span if node is not None else span
        self.read: set[str] = set()
        # The keys written: a reader may skip get() for a key not among them
        # (done() only asks about these), as rules do for their many fields.
        self.present = node._index if node is not None else {}

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Node | None:
        self.read.add(key)
        if self.node is None:
            return None
        hit = self.present.get(key)  # Mapping.get, without its call (200,000 reads at scale)
        if hit is None:
            return None
        node = hit[1]
        if type(node) is Scalar and node.value is None and not node.quoted:
            return None  # `key:` or `key: null` means unset, as in Go's JSON
        return node

    def require(self, key: str) -> Node:
        node = self.get(key)
        if node is None:
            raise PolicyError(Diagnostic(self.span, self.sub(key), None, "required field is missing"))
        return node

    def ignore(self, *keys: str) -> None:
        self.read.update(keys)

    def done(self) -> None:
        if self.node is None:
            return
        for key in self.node.keys():
            if key not in self.read:
                raise PolicyError(Diagnostic(self.node.key_span(key), self.sub(key), None, "unknown field"))


def _err(node: Node, path: str, reason: str, value: object = None) -> PolicyError:
    if value is None and isinstance(node, Scalar):
        value = node.value
    return PolicyError(Diagnostic(node.span, path, value, reason))


def _str(node: Node | None, path: str, *, required: bool = False, span: Span | None = None) -> str | None:
    if node is None:
        if required:
            raise PolicyError(Diagnostic(span, path, None, "required field is missing"))
        return None
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        raise _err(node, path, "must be a string")
    return node.value


def _bool(node: Node | None, path: str) -> bool:
    if node is None:
        return False
    if not isinstance(node, Scalar) or not isinstance(node.value, bool):
        raise _err(node, path, "must be true or false")
    return node.value


def _int(node: Scalar, path: str) -> int:
    if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, int):
        raise _err(node, path, "must be an integer")
    return node.value


def _seq(node: Node | None, path: str) -> tuple[Node, ...]:
    if node is None:
        return ()
    if not isinstance(node, Sequence):
        raise _err(node, path, "must be a list")
    return node.items


def _list_of(node: Node | None, path: str, item: Callable[[Node, str], T], limit: int | None = None) -> tuple[T, ...]:
    items = _seq(node, path)
    if limit is not None and len(items) > limit:
        raise _err(node, path, f"too many entries: {len(items)} (at most {limit})", len(items))
    return tuple(item(n, f"{path}[{i}]") for i, n in enumerate(items))


def _labels(node: Node | None, path: str) -> tuple[tuple[str, str], ...]:
    """metadata.labels: Kubernetes qualified names and label values, as
    Calico's validateObjectMetaLabels checks them."""
    if node is None:
        return ()
    if not isinstance(node, Mapping):
        raise _err(node, path, "must be a mapping of label names to values")
    out = []
    for key, value in node.items:
        kpath = f"{path}.{key.value}"
        if not isinstance(key.value, str):
            raise _err(key, kpath, "label name must be a string")
        problem = qualified_name_problem(key.value)
        if problem:
            raise _err(key, kpath, f"invalid label name: {problem}")
        if not isinstance(value, Scalar) or not isinstance(value.value, str):
            raise _err(value, kpath, "label value must be a string (quote it)")
        if len(value.value) > 63:
            raise _err(value, kpath, f"invalid label value: {len(value.value)} characters (at most 63)")
        if not _LABEL_VALUE.match(value.value):
            raise _err(value, kpath, "invalid label value: alphanumerics, '-', '_' and '.', starting and "
                       "ending with an alphanumeric (or empty)")
        out.append((key.value, value.value))
    return tuple(sorted(out))


def qualified_name_problem(name: str) -> str | None:
    """Why ``name`` is not a Kubernetes qualified name (``[prefix/]name``,
    prefix a DNS subdomain), or None if it is one."""
    prefix, slash, base = name.rpartition("/")
    if "/" in prefix:
        return "at most one '/'"
    if slash and not prefix:
        return "the prefix before '/' is empty"
    if prefix and len(prefix) > 253:
        return f"the prefix is {len(prefix)} characters (at most 253)"
    if prefix and not _DNS_SUBDOMAIN.match(prefix):
        return "the prefix must be a lower-case DNS subdomain"
    if not base:
        return "the name part is empty"
    if len(base) > 63:
        return f"the name part is {len(base)} characters (at most 63)"
    if not _LABEL_NAME.match(base):
        return ("the name part takes alphanumerics, '-', '_' and '.', and must start and end with an "
                "alphanumeric")
    return None


# Calico's validateObjectMetaAnnotations: 256 KiB for all keys and values.
_ANNOTATIONS_LIMIT = 256 * 1024


def _annotations(node: Node | None, path: str) -> None:
    """Annotation keys are qualified names (checked lower-cased, so upper
    case is fine) and values strings; Calico caps their total size."""
    if node is None:
        return
    if not isinstance(node, Mapping):
        raise _err(node, path, "must be a mapping")
    total = 0
    for key, value in node.items:
        kpath = f"{path}.{key.value}"
        problem = qualified_name_problem(key.value.lower()) if isinstance(key.value, str) else "not a string"
        if problem:
            raise _err(key, kpath, f"invalid annotation name: {problem}")
        if not isinstance(value, Scalar) or not isinstance(value.value, str):
            raise _err(value, kpath, "annotation value must be a string (quote it)")
        total += len(key.value.encode()) + len(value.value.encode())
    if total > _ANNOTATIONS_LIMIT:
        raise _err(node, path, f"annotations total {total} bytes (at most {_ANNOTATIONS_LIMIT})", value=None)


AUDIT_ANNOTATION = "hepbpf.io/audit"


def _audit(meta: _Fields) -> bool:
    """A policy annotated hepbpf.io/audit: "true" is audited: its Deny
    rules report what they would drop and drop nothing (lower.py)."""
    ann = meta.get("annotations")
    if not isinstance(ann, Mapping):
        return False
    for key, value in ann.items:
        if key.value == AUDIT_ANNOTATION:
            if value.value not in ("true", "false"):
                raise _err(value, f"{meta.sub('annotations')}.{AUDIT_ANNOTATION}",
                           'must be "true" or "false"')
            return value.value == "true"
    return False


_NAME_RULES = {
    # kind: (pattern, maximum length, what the pattern means)
    "GlobalNetworkPolicy": (_GNP_NAME, 253, "lower-case alphanumerics and '-', at most one '.', starting and "
                            "ending with an alphanumeric"),
    "NetworkPolicy": (_NP_NAME, 253, "a DNS label, two DNS labels joined by '.', or knp.default. or "
                      "ossg.default. followed by a DNS subdomain"),
    "Tier": (_DNS_LABEL, 63, "a DNS label: lower-case alphanumerics and '-', no dots"),
}
_SUBDOMAIN_RULE = (_DNS_SUBDOMAIN, 253, "a DNS subdomain: lower-case alphanumerics, '-' and '.', starting "
                   "and ending with an alphanumeric")


def _check_name(kind: str, name: str, node: Node, path: str) -> None:
    """metadata.name as Calico's validator checks it for ``kind``."""
    pattern, limit, meaning = _NAME_RULES.get(kind, _SUBDOMAIN_RULE)
    if len(name) > limit:
        raise _err(node, path, f"name is {len(name)} characters (at most {limit})")
    if not pattern.match(name):
        raise _err(node, path, f"invalid {kind} name: must be {meaning}")
    if kind == "KubeControllersConfiguration" and name != "default":
        # clientv3 refuses any other name; kube-controllers reads only this one.
        raise _err(node, path, "a KubeControllersConfiguration must be named default")


def _cidr(node: Node, path: str) -> IPNetwork:
    text = _str(node, path)
    try:
        # Calico accepts bare IPs and CIDRs with host bits set (validator
        # "cidr"); matching uses the masked network. Go has no zone-indexed
        # ("fe80::1%eth0") addresses, Python does: refuse them.
        if "%" in text:
            raise ValueError(text)
        return netparse.network(text)
    except ValueError:
        raise _err(node, path, "not a valid IP address or CIDR") from None


def _cidrs(node: Node | None, path: str) -> tuple[IPNetwork, ...]:
    """``_list_of(node, path, _cidr)`` for a network set's nets, which may
    be 100,000 long: all at once, and item by item (for the error) only if
    that fails."""
    items = _seq(node, path)
    values = [item.value if type(item) is Scalar else None for item in items]
    try:
        if "%" not in "".join(values):  # a TypeError unless every item is a string
            return tuple(netparse.networks(values))
    except (TypeError, ValueError):
        pass
    return _list_of(node, path, _cidr)


def _rule_net(node: Node, path: str) -> IPNetwork:
    """A rule's nets/notNets entry: Calico's "net" validator wants the
    network address itself (a bare IP is a /32 or /128)."""
    text = _str(node, path)
    try:
        if "%" in text:
            raise ValueError(text)
        net, exact = netparse.network_exact(text)
    except ValueError:
        raise _err(node, path, "not a valid IP address or CIDR") from None
    if not exact:
        raise _err(node, path, f"host bits are set (a rule takes a network address: did you mean {net}?)")
    return net


def _cidr_host(node: Node, path: str):
    """An address written alone or with a prefix length (Node BGP fields)."""
    text = _str(node, path)
    try:
        return ipaddress.ip_interface(text).ip
    except ValueError:
        raise _err(node, path, "not a valid IP address") from None


def _address(node: Node, path: str):
    text = _str(node, path)
    try:
        if "%" in text:
            raise ValueError(text)  # no zone index in Go's net.ParseIP
        return ipaddress.ip_address(text)
    except ValueError:
        raise _err(node, path, "not a valid IP address (expectedIPs take addresses, not CIDRs)") from None


def _selector(node: Node | None, path: str, validate=validate_policy_selector):
    text = _str(node, path)
    if text is None:
        return None
    try:
        return validate(text)
    except SelectorError as e:
        raise _err(node, path, f"invalid selector: {e.reason} (at offset {e.offset})") from None


def _protocol(node: Node | None, path: str) -> Protocol | None:
    if node is None:
        return None
    if not isinstance(node, Scalar):
        raise _err(node, path, "must be a protocol name or number")
    value = node.value
    if isinstance(value, bool):
        raise _err(node, path, "must be a protocol name or number")
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # numorstring: a numeric string is the number
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise _err(node, path, "protocol number must be between 1 and 255")
        return Protocol(value, None, node.span)
    if isinstance(value, str):
        if value not in PROTOCOL_NUMBERS:
            hint = ""
            for name in PROTOCOL_NUMBERS:
                if name.lower() == value.lower():
                    hint = f" (names are case-sensitive: did you mean {name}?)"
            raise _err(node, path, "protocol must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255" + hint)
        return Protocol(PROTOCOL_NUMBERS[value], value, node.span)
    raise _err(node, path, "must be a protocol name or number")


def _port(node: Node, path: str) -> Port:
    """numorstring.Port: an integer, digits, 'min:max', or a named port."""
    value = node.value if isinstance(node, Scalar) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _err(node, path, "must be a port number, a range 'min:max' or a port name")
    if isinstance(value, int):
        lo = hi = value
    elif re.fullmatch(r"[0-9]+", value):
        lo = hi = int(value)
    elif re.fullmatch(r"[0-9]+:[0-9]+", value):
        lo, hi = (int(x) for x in value.split(":"))
        if lo > hi:
            raise _err(node, path, "range is empty (min > max)")
    elif _NAMED_PORT.match(value):
        if not _valid_port_name(value):
            hint = " (a range is written 'min:max')" if re.fullmatch(r"[0-9]+-[0-9]+", value) else ""
            raise _err(node, path, "invalid port name" + hint)
        return NamedPort(value, node.span)
    else:
        raise _err(node, path, "must be a port number, a range 'min:max' or a port name")
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise _err(node, path, "port number must be between 1 and 65535")
    return PortRange(lo, hi, node.span)


def _valid_port_name(name: str) -> bool:
    """Kubernetes IsValidPortName: at most 15 lowercase alphanumerics or '-',
    at least one letter, no leading, trailing or double '-'."""
    return (len(name) <= 15 and bool(_PORT_NAME_K8S.match(name)) and "--" not in name
            and bool(re.search("[a-z]", name)))


def _icmp(node: Node | None, path: str) -> IcmpMatch | None:
    if node is None:
        return None
    f = _Fields(node, path, node.span)
    t, c = f.get("type"), f.get("code")
    f.done()
    typ = code = None
    if t is not None:
        typ = _int(t, f.sub("type"))
        if not 0 <= typ <= 254:
            raise _err(t, f.sub("type"), "ICMP type must be between 0 and 254")
    if c is not None:
        code = _int(c, f.sub("code"))
        if not 0 <= code <= 255:
            raise _err(c, f.sub("code"), "ICMP code must be between 0 and 255")
        if typ is None:
            raise _err(c, f.sub("code"), "ICMP code specified without an ICMP type")
    return IcmpMatch(typ, code, node.span)


def _entity(node: Node | None, path: str, span: Span) -> tuple[EntityRule, Node | None]:
    """One side of a rule, plus its ``services`` node (validated here as far
    as the side alone allows; the rule and policy checks come later)."""
    if node is None:
        return _new_entity((), (), None, None, None, (), (), span), None
    f = _Fields(node, path, span)
    # Most sides set one or two fields: the absent ones cost a lookup, not a
    # path string and a call each (a rule side is read 20,000 times at scale).
    get, sub, present = f.get, f.sub, f.present
    nets = not_nets = ports = not_ports = ()
    sel = not_sel = ns_sel = sa = None
    if "nets" in present and (n := get("nets")) is not None:
        nets = _list_of(n, sub("nets"), _rule_net, limit=256)
    if "notNets" in present and (n := get("notNets")) is not None:
        not_nets = _list_of(n, sub("notNets"), _rule_net, limit=256)
    for i, net in enumerate(not_nets):
        if net.prefixlen == 0:
            raise _err(_seq(f.get("notNets"), "")[i], f"{f.sub('notNets')}[{i}]",
                       "notNets may not contain a catch-all CIDR (it would match nothing)")
    if "selector" in present and (n := get("selector")) is not None:
        sel = _selector(n, sub("selector"))
    # Calico's global() check covers `selector` only; notSelector takes any selector.
    if "notSelector" in present and (n := get("notSelector")) is not None:
        not_sel = _selector(n, sub("notSelector"), parse_selector)
    if "namespaceSelector" in present and (n := get("namespaceSelector")) is not None:
        ns_sel = _selector(n, sub("namespaceSelector"), validate_namespace_selector)
    if "ports" in present and (n := get("ports")) is not None:
        ports = _list_of(n, sub("ports"), _port, limit=50)
    if "notPorts" in present and (n := get("notPorts")) is not None:
        not_ports = _list_of(n, sub("notPorts"), _port, limit=50)
    if "serviceAccounts" in present and (n := get("serviceAccounts")) is not None:
        sa = _service_accounts(n, sub("serviceAccounts"))
    services = get("services") if "services" in present else None
    if services is not None:
        _services(services, f)
    f.done()
    # Calico folds the service-account clause into the rule's selector
    # (updateprocessors/rules.go): `(<sa clause>) && (<selector>)`. Only
    # endpoints carrying those labels - workloads - match it, so for host
    # traffic such a rule matches what its selector matches among peers
    # that carry them, normally nothing.
    return _new_entity(nets, not_nets, all_of(sa, sel), not_sel, ns_sel, ports, not_ports, f.span), services


_SA_LABEL = "projectcalico.org/serviceaccount"


def _service_accounts(node: Node | None, path: str) -> Selector | None:
    """serviceAccounts {names, selector} as the selector Calico makes of it:
    names -> `projectcalico.org/serviceaccount in {...}`, selector -> its
    labels prefixed `pcsa.` (all() stays all()), the two AND-ed."""
    if node is None:
        return None
    f = _Fields(node, path, node.span)
    names = _list_of(f.get("names"), f.sub("names"), lambda n, p: _str(n, p))
    for i, name in enumerate(names):
        if "'" in name:
            # Calico quotes names with ' to build the selector; this one
            # would not parse and Calico would silently drop the clause.
            raise _err(_seq(f.get("names"), "")[i], f"{f.sub('names')}[{i}]",
                       "a service account name cannot contain '")
    sel = _selector(f.get("selector"), f.sub("selector"), parse_selector)
    f.done()
    quoted = ", ".join("'" + n + "'" for n in names)
    by_name = parse_selector(f"{_SA_LABEL} in {{{quoted}}}") if names else None
    return all_of(with_label_prefix(sel, "pcsa.") if sel is not None else None, by_name)


def _services(node: Node, f: _Fields) -> None:
    """The checks Calico's EntityRule validation makes of ``services``."""
    path = f.sub("services")
    sf = _Fields(node, path, node.span)
    name = _str(sf.get("name"), sf.sub("name"))
    namespace = _str(sf.get("namespace"), sf.sub("namespace"))
    sf.done()
    if not name:
        raise _err(node, path, "services must specify a service name", value=None)
    for key, value in (("name", name), ("namespace", namespace)):
        if value and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
            raise _err(sf.get(key), sf.sub(key), "must be a DNS subdomain (lower-case alphanumerics, '-' "
                       "and '.')")
    for others, keys in (("NamespaceSelector", ("namespaceSelector",)),
                         ("Selector/NotSelector", ("selector", "notSelector")),
                         ("ServiceAccounts", ("serviceAccounts",)),
                         ("Nets/NotNets", ("nets", "notNets"))):
        if any(_present(f.node.get(k)) for k in keys):
            raise _err(node, path, f"cannot specify {others} and services on the same rule side", value=None)


def _present(node: Node | None) -> bool:
    """Set to something: Calico's CEL treats "" and [] as unset."""
    if node is None:
        return False
    if isinstance(node, Scalar):
        return node.value not in (None, "")
    return not (isinstance(node, Sequence) and not node.items)


_HTTP_LIMIT = 20  # methods and paths, each (CRD MaxItems)


def _http(node: Node, path: str) -> None:
    """Rule ``http``: HTTPMatch as Calico validates it."""
    f = _Fields(node, path, node.span)
    methods = _list_of(f.get("methods"), f.sub("methods"), lambda n, p: _str(n, p), limit=_HTTP_LIMIT)
    for i, m in enumerate(methods):
        if m in methods[:i]:
            raise _err(_seq(f.get("methods"), "")[i], f"{f.sub('methods')}[{i}]", "duplicate HTTP method")
    for i, item in enumerate(_seq(f.get("paths"), f.sub("paths"))):
        if i >= _HTTP_LIMIT:
            raise _err(f.get("paths"), f.sub("paths"), f"too many entries: {i + 1}+ (at most {_HTTP_LIMIT})",
                       value=None)
        ipath = f"{f.sub('paths')}[{i}]"
        pf = _Fields(item, ipath, item.span)
        exact, prefix = _str(pf.get("exact"), pf.sub("exact")), _str(pf.get("prefix"), pf.sub("prefix"))
        pf.done()
        if exact and prefix:
            raise _err(item, ipath, "set exact or prefix, not both", value=None)
        if not exact and not prefix:
            raise _err(item, ipath, "exact or prefix is required", value=None)
        key, value = ("exact", exact) if exact else ("prefix", prefix)
        vnode, vpath = pf.get(key), pf.sub(key)
        if len(value) > 1024:
            raise _err(vnode, vpath, f"path is {len(value)} characters (at most 1024)")
        if not value.startswith("/") or any(c in value for c in "? #"):
            raise _err(vnode, vpath, "a path must start with '/' and contain no '?', '#' or space")
    f.done()


def _rule(node: Node, path: str, index: int, direction: str, *, kind: str = "GlobalNetworkPolicy",
          warnings: list[Diagnostic] | None = None) -> Rule:
    f = _Fields(node, path, node.span)
    action = _str(f.get("action"), f.sub("action"), required=True, span=node.span)
    if action not in ACTIONS:
        raise _err(f.get("action"), f.sub("action"), "action must be one of Allow, Deny, Log, Pass")
    ipv = f.get("ipVersion") if "ipVersion" in f.present else None
    ip_version = None
    if ipv is not None:
        ip_version = _int(ipv, f.sub("ipVersion"))
        if ip_version not in (4, 6):
            raise _err(ipv, f.sub("ipVersion"), "ipVersion must be 4 or 6")
    protocol = not_protocol = icmp = not_icmp = None  # read only if set (as _entity reads its fields)
    if "protocol" in f.present and (n := f.get("protocol")) is not None:
        protocol = _protocol(n, f.sub("protocol"))
    if "notProtocol" in f.present and (n := f.get("notProtocol")) is not None:
        not_protocol = _protocol(n, f.sub("notProtocol"))
    if "icmp" in f.present and (n := f.get("icmp")) is not None:
        icmp = _icmp(n, f.sub("icmp"))
    if "notICMP" in f.present and (n := f.get("notICMP")) is not None:
        not_icmp = _icmp(n, f.sub("notICMP"))
    src, src_services = _entity(f.get("source"), f.sub("source"), node.span)
    dst, dst_services = _entity(f.get("destination"), f.sub("destination"), node.span)
    http = f.get("http") if "http" in f.present else None
    if http is not None:
        _http(http, f.sub("http"))
    meta_node = f.get("metadata") if "metadata" in f.present else None
    if meta_node is not None:
        meta = _Fields(meta_node, f.sub("metadata"), node.span)
        _annotations(meta.get("annotations"), meta.sub("annotations"))
        meta.done()
    f.done()
    rule = _new_rule(action, index, ip_version, protocol, not_protocol, icmp, not_icmp, src, dst, node.span)
    _check_rule(rule, node, path)
    if http is not None:
        _check_http(rule, http, f.sub("http"), direction, warnings)
    _check_services(rule, path, direction, kind, src_services, dst_services)
    return rule


def _check_http(rule: Rule, http: Node, path: str, direction: str, warnings: list[Diagnostic] | None) -> None:
    if rule.action != "Allow":
        raise _err(http, path, "HTTP match is only valid on Allow rules", value=None)
    if rule.protocol is not None and rule.protocol.number != 6:
        raise _err(http, path, f"rules with an HTTP match must have protocol TCP or none, not {rule.protocol}",
                   value=None)
    if direction == EGRESS:
        raise _err(http, path, "HTTP match is not allowed in egress rules", value=None)
    if warnings is not None:
        # Only Calico's application-layer policy (a Dikastes sidecar next to
        # a workload) reads http; felix renders the rule without it, so on a
        # host endpoint it matches at L3/L4 alone - and so does hepbpf.
        warnings.append(Diagnostic(http.span, path, None,
                                   "ignored on host endpoints: Calico enforces http only in application-"
                                   "layer policy for workloads, so this rule matches as if http were absent",
                                   "warning"))


def _check_services(rule: Rule, path: str, direction: str, kind: str, src: Node | None,
                    dst: Node | None) -> None:
    """Calico's rule- and policy-level services checks; a valid services
    match is still refused: it stands for a Service's endpoint addresses
    (EndpointSlices), which hepbpf does not read, and those may well be host
    addresses (the kubernetes API service), so it cannot be assumed empty."""
    if dst is not None and (rule.destination.ports or rule.destination.not_ports):
        raise _err(dst, f"{path}.destination.services", "ports and notPorts cannot be specified with services",
                   value=None)
    for side, node, wrong in (("source", src, EGRESS), ("destination", dst, INGRESS)):
        if node is None:
            continue
        spath = f"{path}.{side}.services"
        if direction == wrong:
            raise _err(node, spath, f"not allowed in {direction.lower()} rule {side}", value=None)
        if kind == "GlobalNetworkPolicy" and node.get("namespace") is None:
            raise _err(node, spath, "must specify a namespace in a GlobalNetworkPolicy", value=None)
        raise _err(node, spath, "valid, but not supported by hepbpf: it matches a Kubernetes Service's "
                   "endpoints, which hepbpf has no source for", value=None)


def _check_rule(rule: Rule, node: Node, path: str) -> None:
    """Cross-field rules of Calico's validator (VAL.validateRule, CEL on Rule)."""
    for side, ent in (("source", rule.source), ("destination", rule.destination)):
        for key, plist in (("ports", ent.ports), ("notPorts", ent.not_ports)):
            if not plist or (rule.protocol is not None and rule.protocol.number in PORT_PROTOCOLS):
                continue
            if rule.protocol is None and all(isinstance(p, NamedPort) for p in plist):
                continue  # Calico >= 3.32: a named port with no protocol matches any protocol
            bad = next((p for p in plist if isinstance(p, PortRange)), plist[0]) if rule.protocol is None \
                else plist[0]
            raise PolicyError(Diagnostic(bad.span, f"{path}.{side}.{key}", str(bad),
                                         "ports are only valid with protocol TCP, UDP or SCTP"))
        for p in ent.not_ports:
            if isinstance(p, NamedPort):
                raise PolicyError(Diagnostic(p.span, f"{path}.{side}.notPorts", p.name,
                                             "valid, but not supported by hepbpf yet: a named port in "
                                             "notPorts (write the port numbers instead)"))
    if rule.icmp is not None and (rule.protocol is None or rule.protocol.number not in ICMP_PROTOCOLS):
        raise PolicyError(Diagnostic(rule.icmp.span, f"{path}.icmp", None,
                                     "icmp requires protocol ICMP or ICMPv6"))
    for field_, proto in (("protocol", rule.protocol), ("notProtocol", rule.not_protocol)):
        if proto is not None and proto.number in ICMP_PROTOCOLS and rule.ip_version is not None:
            if ICMP_PROTOCOLS[proto.number] != rule.ip_version:
                raise PolicyError(Diagnostic(proto.span, f"{path}.{field_}", str(proto),
                                             f"{proto} cannot be used with ipVersion {rule.ip_version}"))
    versions = {n.version for e in (rule.source, rule.destination) for n in e.nets + e.not_nets}
    if len(versions) > 1:
        raise _err(node, path, "rule mixes IPv4 and IPv6 CIDRs", value="nets")
    if versions and rule.ip_version is not None and versions != {rule.ip_version}:
        raise _err(node, path, f"CIDRs do not match ipVersion {rule.ip_version}", value="nets")


def _types(node: Node | None, path: str) -> tuple[str, ...] | None:
    if node is None:
        return None
    out = []
    for i, item in enumerate(_seq(node, path)):
        t = _str(item, f"{path}[{i}]")
        if t not in (INGRESS, EGRESS):
            raise _err(item, f"{path}[{i}]", "must be Ingress or Egress")
        if t in out:
            raise _err(item, f"{path}[{i}]", "duplicate policy type")
        out.append(t)
    return tuple(out)


def _order(node: Node | None, path: str) -> float | None:
    if node is None:
        return None
    if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise _err(node, path, "must be a number")
    if math.isnan(node.value):
        raise _err(node, path, "must be a number")
    return float(node.value)


class _Builder:
    def __init__(self):
        self.policies: list[Policy] = []
        self.tiers: list[Tier] = []
        self.heps: list[HostEndpoint] = []
        self.sets: list[NetworkSet] = []
        self.felix: list[FelixConfiguration] = []
        self.warnings: list[Diagnostic] = []
        self.nodes: list[CalicoNode] = []
        self.kcc: list[KubeControllersConfiguration] = []

    def build(self) -> PolicySet:
        return PolicySet(tuple(self.policies), tuple(self.tiers), tuple(self.heps),
                         tuple(self.sets), tuple(self.felix), tuple(self.warnings),
                         tuple(self.nodes), tuple(self.kcc))

    def add(self, doc: Mapping, path: str) -> None:
        top = _Fields(doc, path.rstrip("."), doc.span)
        p = (lambda key: f"{path}{key}")
        api = _str(top.get("apiVersion"), p("apiVersion"), required=True, span=doc.span)
        if api == "networking.k8s.io/v1":
            self._kubernetes(top, p, doc)
            return
        if api not in API_VERSIONS:
            raise _err(top.get("apiVersion"), p("apiVersion"), "apiVersion must be projectcalico.org/v3 "
                       "(or crd.projectcalico.org/v1)")
        kind_node = top.get("kind")
        kind = _str(kind_node, p("kind"), required=True, span=doc.span)
        handler = {
            "GlobalNetworkPolicy": self._policy,
            "NetworkPolicy": self._policy,
            "HostEndpoint": self._hep,
            "GlobalNetworkSet": self._netset,
            "NetworkSet": self._netset,
            "FelixConfiguration": self._felix,
            "Tier": self._tier,
            "Node": self._node,
            "KubeControllersConfiguration": self._kube_controllers,
        }.get(kind)
        if handler is None:
            raise _err(kind_node, p("kind"), "unsupported kind (hepbpf reads GlobalNetworkPolicy, "
                       "NetworkPolicy, HostEndpoint, GlobalNetworkSet, NetworkSet, FelixConfiguration, "
                       "Tier, Node, KubeControllersConfiguration)")
        meta = _Fields(top.get("metadata"), p("metadata"), doc.span)
        name = _str(meta.get("name"), meta.sub("name"), required=True, span=meta.span)
        namespace = _str(meta.get("namespace"), meta.sub("namespace"))
        _check_name(kind, name, meta.get("name"), meta.sub("name"))
        if namespace is not None and not _namespace_ok(namespace):
            raise _err(meta.get("namespace"), meta.sub("namespace"), "a namespace name must be a DNS label")
        labels = _labels(meta.get("labels"), meta.sub("labels"))
        _annotations(meta.get("annotations"), meta.sub("annotations"))
        meta.ignore(*_IGNORED_META)
        meta.done()
        spec = top.get("spec")
        top.ignore("status")
        top.done()
        if spec is not None and not isinstance(spec, Mapping):
            raise _err(spec, p("spec"), "must be a mapping")
        if namespace is not None and kind not in _NAMESPACED:
            raise _err(meta.get("namespace"), meta.sub("namespace"), f"{kind} is not namespaced")
        handler(kind, name, namespace, labels, spec, p("spec"), doc.span, meta)

    def _kubernetes(self, top: _Fields, p, doc: Mapping) -> None:
        """networking.k8s.io/v1 NetworkPolicy, converted as Calico does."""
        kind = _str(top.get("kind"), p("kind"), required=True, span=doc.span)
        if kind != "NetworkPolicy":
            raise _err(top.get("kind"), p("kind"), "hepbpf reads only NetworkPolicy from networking.k8s.io/v1")
        meta = _Fields(top.get("metadata"), p("metadata"), doc.span)
        name = _str(meta.get("name"), meta.sub("name"), required=True, span=meta.span)
        _check_name("Kubernetes NetworkPolicy", name, meta.get("name"), meta.sub("name"))
        namespace = _str(meta.get("namespace"), meta.sub("namespace")) or "default"
        if not _namespace_ok(namespace):
            raise _err(meta.get("namespace"), meta.sub("namespace"), "a namespace name must be a DNS label")
        _labels(meta.get("labels"), meta.sub("labels"))
        _annotations(meta.get("annotations"), meta.sub("annotations"))
        meta.ignore(*_IGNORED_META)
        meta.done()
        spec = top.get("spec")
        top.ignore("status")
        top.done()
        self.policies.append(k8spolicy.convert(name, namespace, spec, p("spec"), doc.span, _Fields))

    def _policy(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        order = _order(f.get("order"), f.sub("order"))
        tier = _str(f.get("tier"), f.sub("tier")) or "default"
        selector = _selector(f.get("selector"), f.sub("selector")) or parse_selector("")
        ns_sel = sa_sel = None
        if kind == "GlobalNetworkPolicy":
            ns_sel = _selector(f.get("namespaceSelector"), f.sub("namespaceSelector"))
        sa_sel = _selector(f.get("serviceAccountSelector"), f.sub("serviceAccountSelector"))
        types = _types(f.get("types"), f.sub("types"))
        ingress = tuple(_rule(n, f"{f.sub('ingress')}[{i}]", i, INGRESS, kind=kind, warnings=self.warnings)
                        for i, n in enumerate(_seq(f.get("ingress"), f.sub("ingress"))))
        egress = tuple(_rule(n, f"{f.sub('egress')}[{i}]", i, EGRESS, kind=kind, warnings=self.warnings)
                       for i, n in enumerate(_seq(f.get("egress"), f.sub("egress"))))
        dnt = pdn = aof = False
        if kind == "GlobalNetworkPolicy":
            dnt = _bool(f.get("doNotTrack"), f.sub("doNotTrack"))
            pdn = _bool(f.get("preDNAT"), f.sub("preDNAT"))
            aof = _bool(f.get("applyOnForward"), f.sub("applyOnForward"))
        f.ignore("performanceHints")
        f.done()
        if types is None:
            # API defaulting (api/pkg/defaults): egress rules only -> Egress;
            # both -> both; otherwise Ingress, even with no rules at all.
            if egress and ingress:
                types = (INGRESS, EGRESS)
            elif egress:
                types = (EGRESS,)
            else:
                types = (INGRESS,)
        if dnt and pdn:
            raise _err(f.get("preDNAT"), f.sub("preDNAT"), "preDNAT and doNotTrack cannot both be true")
        if (dnt or pdn) and not aof:
            key = "doNotTrack" if dnt else "preDNAT"
            raise _err(f.get(key), f.sub(key), f"{key} requires applyOnForward: true")
        if pdn and (egress or EGRESS in types):
            key = "egress" if egress else "types"
            raise PolicyError(Diagnostic(f.get(key).span, f.sub(key), None,
                                         "a preDNAT policy cannot have egress rules or the Egress type"))
        ns = (namespace or "default") if kind == "NetworkPolicy" else None
        self.policies.append(Policy(kind, name, ns, tier, order, selector, ns_sel, sa_sel, types, ingress,
                                    egress, dnt, pdn, aof, span, audit=_audit(meta)))

    def _hep(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        node = _str(f.get("node"), f.sub("node"), required=True, span=f.span)
        if not node:
            raise _err(f.get("node"), f.sub("node"), "no node has been specified")
        iface = _str(f.get("interfaceName"), f.sub("interfaceName"))
        if iface is not None and iface != "*" and not _IFACE.match(iface):
            raise _err(f.get("interfaceName"), f.sub("interfaceName"),
                       "must be '*' or an interface name of 1-15 characters [a-zA-Z0-9_.-]")
        ips = _list_of(f.get("expectedIPs"), f.sub("expectedIPs"), _address)
        if not iface and not ips:
            raise _err(spec if spec is not None else f.get("node"), path,
                       "at least one of interfaceName and expectedIPs is required", value=None)
        profiles = _list_of(f.get("profiles"), f.sub("profiles"), _profile_name)
        ports = _list_of(f.get("ports"), f.sub("ports"), _endpoint_port)
        f.done()
        self.heps.append(HostEndpoint(name, labels, node, iface or None, ips, profiles, ports, span))

    def _netset(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        nets = _cidrs(f.get("nets"), f.sub("nets"))
        f.done()
        if any(k == "projectcalico.org/namespace" for k, _ in labels):
            raise _err(meta.node.get("labels"), meta.sub("labels"),
                       "label projectcalico.org/namespace is reserved", value=None)
        ns = (namespace or "default") if kind == "NetworkSet" else None
        self.sets.append(NetworkSet(kind, name, ns, labels, nets, span))

    def _node(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        """Node addresses, in kube-controllers' order: BGP, tunnel and
        WireGuard addresses, then spec.addresses (InternalIP and others)."""
        f = _Fields(spec, path, span)
        found: list[tuple[Node, str]] = []
        bgp = _Fields(f.get("bgp"), f.sub("bgp"), span)
        for key in ("ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr"):
            found.append((bgp.get(key), bgp.sub(key)))
        bgp.ignore("asNumber", "routeReflectorClusterID")
        bgp.done()
        for key in ("ipv4VXLANTunnelAddr", "ipv6VXLANTunnelAddr"):
            found.append((f.get(key), f.sub(key)))
        wg = _Fields(f.get("wireguard"), f.sub("wireguard"), span)
        for key in ("interfaceIPv4Address", "interfaceIPv6Address"):
            found.append((wg.get(key), wg.sub(key)))
        wg.done()
        for i, item in enumerate(_seq(f.get("addresses"), f.sub("addresses"))):
            af = _Fields(item, f"{f.sub('addresses')}[{i}]", item.span)
            found.append((af.require("address"), af.sub("address")))
            af.ignore("type")
            af.done()
        f.ignore("orchRefs", "vxlanTunnelMACAddr", "vxlanTunnelMACAddrV6", "interfaces")
        f.done()
        addrs: list = []
        for node, npath in found:
            if node is not None:
                # BGP addresses carry a prefix length ("10.0.0.1/24"): the host is the address.
                a = _cidr_host(node, npath)
                if a not in addrs:
                    addrs.append(a)
        self.nodes.append(CalicoNode(name, labels, tuple(addrs), span))

    def _kube_controllers(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        ctl = _Fields(f.get("controllers"), f.sub("controllers"), span)
        node = _Fields(ctl.get("node"), ctl.sub("node"), span)
        hep = _Fields(node.get("hostEndpoint"), node.sub("hostEndpoint"), span)
        auto = _str(hep.get("autoCreate"), hep.sub("autoCreate")) or "Disabled"
        if auto not in ("Enabled", "Disabled"):
            raise _err(hep.get("autoCreate"), hep.sub("autoCreate"), "must be Enabled or Disabled")
        templates = _list_of(hep.get("templates"), hep.sub("templates"), _hep_template)
        if templates:
            # Validated like Calico first, so a broken template gets its own reason.
            raise _err(hep.get("templates"), hep.sub("templates"),
                       "valid, but not supported by hepbpf yet: template host endpoints need the "
                       "nodes' interface names and addresses, which hepbpf does not read", value=None)
        hep.ignore("createDefaultHostEndpoint")
        hep.done()
        node.ignore("reconcilerPeriod", "syncLabels", "leakGracePeriod")
        node.done()
        ctl.ignore("policy", "workloadEndpoint", "serviceAccount", "namespace", "loadBalancer")
        ctl.done()
        f.ignore("logSeverityScreen", "healthChecks", "etcdV3CompactionPeriod", "prometheusMetricsPort",
                 "debugProfilePort")
        f.done()
        self.kcc.append(KubeControllersConfiguration(name, auto == "Enabled", span))

    def _tier(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        order = _order(f.get("order"), f.sub("order"))
        action = _str(f.get("defaultAction"), f.sub("defaultAction")) or "Deny"
        if action not in ("Deny", "Pass"):
            raise _err(f.get("defaultAction"), f.sub("defaultAction"), "must be Deny or Pass")
        f.done()
        for b in BUILTIN_TIERS:
            if b.name == name and (order != b.order or action != b.default_action):
                raise _err(spec if spec is not None else meta.node, path,
                           f"built-in tier {name} must have order {b.order:g} and defaultAction "
                           f"{b.default_action}", value=None)
        self.tiers.append(Tier(name, order, action, False, span))

    def _felix(self, kind, name, namespace, labels, spec, path, span, meta) -> None:
        f = _Fields(spec, path, span)
        inbound = _failsafes(f.get("failsafeInboundHostPorts"), f.sub("failsafeInboundHostPorts"), self.warnings)
        outbound = _failsafes(f.get("failsafeOutboundHostPorts"), f.sub("failsafeOutboundHostPorts"), self.warnings)
        f.ignore(*felixfields.FELIX_CONFIGURATION_FIELDS)
        f.done()
        self.felix.append(FelixConfiguration(name, inbound, outbound, span))


def _hep_template(node: Node, path: str) -> bool:
    """KubeControllersConfiguration hostEndpoint.templates[i], as Calico
    validates it (api Template tags)."""
    f = _Fields(node, path, node.span)
    gen = _str(f.get("generateName"), f.sub("generateName"))
    if gen and (len(gen) > 253 or not _DNS_SUBDOMAIN.match(gen)):
        raise _err(f.get("generateName"), f.sub("generateName"), "must be a DNS subdomain (lower-case "
                   "alphanumerics, '-' and '.')")
    cidrs = _list_of(f.get("interfaceCIDRs"), f.sub("interfaceCIDRs"), _cidr)
    pattern = _str(f.get("interfacePattern"), f.sub("interfacePattern"))
    if pattern:
        try:
            re.compile(pattern)  # close enough to Go's RE2 for "is it a regex at all"
        except re.error as e:
            raise _err(f.get("interfacePattern"), f.sub("interfacePattern"), f"not a valid regex: {e}") from None
    if not cidrs and not pattern:
        raise _err(node, path, "at least one of interfaceCIDRs and interfacePattern is required", value=None)
    _labels(f.get("labels"), f.sub("labels"))
    _selector(f.get("nodeSelector"), f.sub("nodeSelector"), parse_selector)
    f.done()
    return True


def _namespace_ok(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def _profile_name(node: Node, path: str) -> str:
    name = _str(node, path)
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise _err(node, path, "invalid profile name: must be a DNS subdomain (lower-case alphanumerics, '-' "
                   "and '.', starting and ending with an alphanumeric)")
    return name


def _endpoint_port(node: Node, path: str) -> EndpointPort:
    f = _Fields(node, path, node.span)
    name = _str(f.get("name"), f.sub("name"), required=True, span=node.span)
    if not _valid_port_name(name):
        raise _err(f.get("name"), f.sub("name"), "invalid port name")
    proto = _protocol(f.require("protocol"), f.sub("protocol"))
    if proto.number not in PORT_PROTOCOLS:
        raise _err(f.get("protocol"), f.sub("protocol"), "protocol must be TCP, UDP or SCTP")
    pnode = f.require("port")
    port = _int(pnode, f.sub("port"))
    if not 1 <= port <= 65535:
        raise _err(pnode, f.sub("port"), "port number must be between 1 and 65535")
    f.done()
    return EndpointPort(name, proto, port, node.span)


_FELIX_PORT = re.compile(r"^(?:(?P<proto>[A-Za-z]+):)?(?:(?P<net>\[[^\]]+\]|[0-9.]+(?:/[0-9]+)?):)?(?P<port>[0-9]+)$")


def _failsafes(node: Node | None, path: str, warnings: list[Diagnostic]) -> tuple[Failsafe, ...] | None:
    """FelixConfiguration failsafe list. ``[]`` means none (Calico converts
    it to "none"); unset means the defaults."""
    if node is None:
        return None
    out = []
    for i, item in enumerate(_seq(node, path)):
        ipath = f"{path}[{i}]"
        if isinstance(item, Scalar) and isinstance(item.value, str):
            out.extend(_felix_string_port(item, ipath, warnings))
            continue
        f = _Fields(item, ipath, item.span)
        proto_node = f.get("protocol")
        proto = (_str(proto_node, f.sub("protocol")) or "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            raise _err(proto_node, f.sub("protocol"), "protocol must be TCP, UDP or SCTP")
        if proto == "SCTP":
            raise _err(proto_node, f.sub("protocol"),
                       "felix accepts only tcp and udp failsafe entries (an sctp entry makes it reject "
                       "the whole list)")
        pnode = f.require("port")
        port = _int(pnode, f.sub("port"))
        if not 0 <= port <= 65535:
            raise _err(pnode, f.sub("port"), "port number must be between 0 and 65535")
        net_node = f.get("net")
        net = _cidr(net_node, f.sub("net")) if net_node is not None else None
        f.done()
        out.append(Failsafe(proto.lower(), port, net, item.span))
    return tuple(out)


def _felix_string_port(item: Scalar, path: str, warnings: list[Diagnostic]) -> list[Failsafe]:
    """Felix's config-file syntax ("tcp:22", "none") written in a
    FelixConfiguration resource. calicoctl rejects it (the field takes
    {protocol, port, net} objects), but felix's own parser reads it and the
    intent is unambiguous, so accept it with a warning naming the API form."""
    text = item.value.strip()
    if text.lower() == "none":
        warnings.append(Diagnostic(item.span, path, item.value,
                                   "felix syntax in a FelixConfiguration resource; the API form of "
                                   "'none' is an empty list: []", "warning"))
        return []
    m = _FELIX_PORT.match(text)
    if not m:
        raise _err(item, path, "must be {protocol, port, net} (or felix's 'proto:port' form)")
    proto = (m.group("proto") or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise _err(item, path, "felix accepts only tcp and udp failsafe entries")
    port = int(m.group("port"))
    if port > 65535:
        raise _err(item, path, "port number must be between 0 and 65535")
    net = None
    if m.group("net"):
        try:
            net = ipaddress.ip_network(m.group("net").strip("[]"), strict=False)
        except ValueError:
            raise _err(item, path, "not a valid IP address or CIDR") from None
    fs = Failsafe(proto, port, net, item.span)
    api = f"{{protocol: {proto.upper()}, port: {port}" + (f", net: {net}" if net else "") + "}"
    warnings.append(Diagnostic(item.span, path, item.value,
                               f"felix syntax in a FelixConfiguration resource; calicoctl expects {api}",
                               "warning"))
    return [fs]
