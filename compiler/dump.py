"""Canonical text of a resolved ChainView: what `hepbpf check --dump view`
shows and golden tests diff. (MapImage has its own, in mapimage.dump.)"""

from __future__ import annotations

from .ir import EntityRule, Rule
from .resolve import ChainView


def _entity(name: str, e: EntityRule) -> list[str]:
    out = []
    for field, value in (("nets", e.nets), ("notNets", e.not_nets), ("ports", e.ports), ("notPorts", e.not_ports)):
        if value:
            out.append(f"{name}.{field}=[{', '.join(str(v) for v in value)}]")
    for field, sel in (("selector", e.selector), ("notSelector", e.not_selector),
                       ("namespaceSelector", e.namespace_selector)):
        if sel is not None:
            out.append(f"{name}.{field}={sel}")
    return out


def dump_rule(r: Rule) -> str:
    parts = [r.action]
    for field, value in (("ipVersion", r.ip_version), ("protocol", r.protocol), ("notProtocol", r.not_protocol),
                         ("icmp", r.icmp), ("notICMP", r.not_icmp)):
        if value is not None:
            parts.append(f"{field}={value}")
    parts += _entity("src", r.source) + _entity("dst", r.destination)
    return " ".join(parts)


def dump_view(view: ChainView) -> str:
    lines = [f"node {view.node} iface {view.iface} direction {view.direction}"]
    if view.hep is None:
        return "\n".join(lines + ["no host endpoint: not policed"]) + "\n"
    labels = ", ".join(f"{k}={v}" for k, v in view.hep.labels)
    lines.append(f"host endpoint {view.hep.name} labels {{{labels}}} profiles {list(view.hep.profiles)}")
    lines.append("failsafes " + (", ".join(str(f) for f in view.failsafes) or "none"))
    for tv in view.tiers:
        # Untracked and preDNAT tiers fall through when nothing decides.
        end = tv.tier.default_action if tv.stage == "normal" else "fall-through"
        lines.append(f"tier {tv.tier.name} stage {tv.stage} end {end}")
        for p in tv.policies:
            order = "none" if p.order is None else f"{p.order:g}"
            lines.append(f"  policy {p.name} order {order} selector {p.selector}")
            for r in p.rules(view.direction):
                lines.append(f"    [{r.index}] {dump_rule(r)}")
    lines.append(f"then profiles {list(view.profiles)}, then deny")
    return "\n".join(lines) + "\n"
