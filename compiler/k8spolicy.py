"""Kubernetes NetworkPolicy (networking.k8s.io/v1) -> Calico NetworkPolicy,
as libcalico-go's K8sNetworkPolicyToCalico converts it.

Before: one validated-YAML mapping of kind NetworkPolicy. After: a
namespaced ``Policy`` in tier default with order 1000: its selector is
`projectcalico.org/orchestrator == 'k8s'` AND-ed with the podSelector; each
peer becomes one Allow rule per protocol (ipBlock -> nets/notNets,
podSelector -> selector, namespaceSelector -> namespaceSelector); ports
default to TCP, endPort gives a range, string ports are named ports. Such a
policy never selects a host endpoint, but users bring them in the same
files, so hepbpf validates and converts them rather than refusing them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from .diagnostics import Diagnostic, PolicyError
from .ir import EGRESS, INGRESS, EntityRule, NamedPort, Policy, PortRange, Protocol, Rule
from .selector import parse_selector
from .yamlsrc import Mapping, Node, Scalar

_PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _quote(v: str) -> str:
    return "'" + v + "'"


def label_selector(node: Node | None, path: str, fields_cls, *, pod: bool) -> str:
    """matchLabels (keys sorted) then matchExpressions, as Calico writes them."""
    terms = ["projectcalico.org/orchestrator == 'k8s'"] if pod else []
    f = fields_cls(node, path, node.span if node is not None else None)
    labels = f.get("matchLabels")
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise PolicyError(Diagnostic(labels.span, f.sub("matchLabels"), None, "must be a mapping"))
        for k, v in sorted((k.value, v.value if isinstance(v, Scalar) else None) for k, v in labels.items):
            if not isinstance(v, str):
                raise PolicyError(Diagnostic(labels.span, f.sub(f"matchLabels.{k}"), v, "must be a string"))
            terms.append(f"{k} == {_quote(v)}")
    for i, expr in enumerate(_items(f.get("matchExpressions"))):
        e = fields_cls(expr, f"{f.sub('matchExpressions')}[{i}]", expr.span)
        key, op = _text(e.require("key")), _text(e.require("operator"))
        values = [_text(v) for v in _items(e.get("values"))]
        e.done()
        if op == "In":
            terms.append(f"{key} in {{ {', '.join(_quote(v) for v in values)} }}")
        elif op == "NotIn":
            terms.append(f"{key} not in {{ {', '.join(_quote(v) for v in values)} }}")
        elif op == "Exists":
            terms.append(f"has({key})")
        elif op == "DoesNotExist":
            terms.append(f"! has({key})")
        else:
            raise PolicyError(Diagnostic(expr.span, e.sub("operator"), op,
                                         "must be In, NotIn, Exists or DoesNotExist"))
    f.done()
    return " && ".join(terms) if terms else "all()"


def _items(node: Node | None):
    if node is None:
        return ()
    if not hasattr(node, "items") or isinstance(node, (Mapping, Scalar)):
        raise PolicyError(Diagnostic(node.span, "", None, "must be a list"))
    return node.items


def _text(node: Node) -> str:
    if not isinstance(node, Scalar) or not isinstance(node.value, str):
        raise PolicyError(Diagnostic(node.span, "", getattr(node, "value", None), "must be a string"))
    return node.value


def convert(name: str, namespace: str, spec: Node | None, path: str, span, fields_cls) -> Policy:
    f = fields_cls(spec, path, span)
    selector = label_selector(f.require("podSelector"), f.sub("podSelector"), fields_cls, pod=True)
    types = tuple(_text(t) for t in _items(f.get("policyTypes")))
    for t in types:
        if t not in (INGRESS, EGRESS):
            raise PolicyError(Diagnostic(span, f.sub("policyTypes"), t, "must be Ingress or Egress"))
    ingress = _rules(f.get("ingress"), f.sub("ingress"), "from", fields_cls)
    egress = _rules(f.get("egress"), f.sub("egress"), "to", fields_cls)
    f.done()
    return Policy("KubernetesNetworkPolicy", name, namespace, "default", 1000.0, parse_selector(selector),
                  None, None, types or (INGRESS,), ingress, egress, span=span)


def _rules(node, path, peers_key, fields_cls) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for i, item in enumerate(_items(node)):
        f = fields_cls(item, f"{path}[{i}]", item.span)
        peers = [_peer(p, f"{f.sub(peers_key)}[{j}]", fields_cls) for j, p in enumerate(_items(f.get(peers_key)))]
        ports = _ports(f.get("ports"), f.sub("ports"), fields_cls)
        f.done()
        for proto, plist in ports or [(None, ())]:
            protocol = Protocol(proto, None) if proto is not None else None
            for peer in peers or [EntityRule()]:
                # Ingress: the peer is the source, the ports the destination's;
                # egress: both describe the destination.
                if peers_key == "from":
                    src, dst = peer, EntityRule(ports=tuple(plist), span=item.span)
                else:
                    src, dst = EntityRule(span=item.span), replace(peer, ports=tuple(plist))
                out.append(Rule("Allow", len(out), None, protocol, None, None, None, src, dst, item.span))
    return tuple(out)


def _peer(node, path, fields_cls) -> EntityRule:
    f = fields_cls(node, path, node.span)
    pod, ns, block = f.get("podSelector"), f.get("namespaceSelector"), f.get("ipBlock")
    if block is not None:
        b = fields_cls(block, f.sub("ipBlock"), block.span)
        cidr = _net(b.require("cidr"))
        excepts = tuple(_net(x) for x in _items(b.get("except")))
        b.done()
        f.done()
        return EntityRule(nets=(cidr,), not_nets=excepts, span=node.span)
    sel = label_selector(pod, f.sub("podSelector"), fields_cls, pod=True) if pod is not None else None
    ns_sel = label_selector(ns, f.sub("namespaceSelector"), fields_cls, pod=False) if ns is not None else None
    f.done()
    if sel is None and ns_sel is not None:
        sel = "projectcalico.org/orchestrator == 'k8s'"
    return EntityRule(selector=parse_selector(sel) if sel else None,
                      namespace_selector=parse_selector(ns_sel) if ns_sel else None, span=node.span)


def _net(node):
    try:
        return ipaddress.ip_network(_text(node), strict=False)
    except ValueError:
        raise PolicyError(Diagnostic(node.span, "", node.value, "not a valid CIDR")) from None


def _ports(node, path, fields_cls):
    """Ports grouped by protocol (TCP when unset); None for "any"."""
    if node is None:
        return None
    groups: dict[int, list] = {}
    for i, item in enumerate(_items(node)):
        f = fields_cls(item, f"{path}[{i}]", item.span)
        proto_text = _text(f.get("protocol")) if f.get("protocol") is not None else "TCP"
        if proto_text not in _PROTOCOLS:
            raise PolicyError(Diagnostic(item.span, f.sub("protocol"), proto_text, "must be TCP, UDP or SCTP"))
        port, end = f.get("port"), f.get("endPort")
        f.done()
        plist = groups.setdefault(_PROTOCOLS[proto_text], [])
        if port is None:
            continue  # every port of the protocol
        if isinstance(port.value, int) and not isinstance(port.value, bool):
            hi = end.value if end is not None else port.value
            if not (1 <= port.value <= hi <= 65535):
                raise PolicyError(Diagnostic(port.span, f.sub("port"), port.value, "invalid port or endPort"))
            plist.append(PortRange(port.value, hi, port.span))
        else:
            plist.append(NamedPort(_text(port), port.span))
    return sorted(groups.items())
