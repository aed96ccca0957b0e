"""hepbpf's policy compiler: Calico v3 YAML in, BPF map contents out.

Pure: text in, values out; no I/O, no kernel. The passes, in order:

    resources.parse   YAML text -> PolicySet (validated IR)
    resolve.resolve   PolicySet + node + interface -> ChainView
    lower.lower       ChainViews -> MapImage
    reference.evaluate ChainView + Packet -> Verdict (the oracle)
"""

from __future__ import annotations

from dataclasses import dataclass

from .alloc import gc_paused
from .diagnostics import Diagnostic, PolicyError, Span
from .ir import EGRESS, INGRESS, PolicySet
from .lower import lower
from .mapimage import CHAIN_EGRESS, CHAIN_INGRESS, MapImage
from .packet import Packet, SpecError, parse_spec
from .reference import Verdict, evaluate
from .resolve import ChainView, check_references, resolve
from .resources import parse, parse_files

__all__ = [
    "Compiled", "ChainView", "Diagnostic", "MapImage", "Packet", "PolicyError", "PolicySet", "Span",
    "SpecError", "Verdict", "compile_policy", "evaluate", "lower", "parse", "parse_files",
    "parse_spec", "resolve", "INGRESS", "EGRESS",
]


@dataclass(frozen=True, slots=True)
class Compiled:
    policy_set: PolicySet
    views: dict  # chain number -> ChainView
    image: MapImage

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        out = list(self.policy_set.warnings)
        for v in self.views.values():
            out.extend(v.warnings)
        return tuple(out)


@gc_paused
def compile_policy(sources: list[tuple[str, str]], *, node: str, iface: str,
                   iface_addrs: tuple = ()) -> Compiled:
    """(source name, text) pairs -> everything the loader needs for one
    interface. Raises PolicyError."""
    ps = parse_files(sources)
    check_references(ps)
    views = {chain: resolve(ps, node=node, iface=iface, direction=d, iface_addrs=iface_addrs)
             for chain, d in ((CHAIN_INGRESS, INGRESS), (CHAIN_EGRESS, EGRESS))}
    return Compiled(ps, views, lower(views))
