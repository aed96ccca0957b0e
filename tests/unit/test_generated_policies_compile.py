"""The differential generator only draws valid Calico, and the compiler
takes all of it (no kernel needed)."""

import pytest

from hepbpf.compiler import compile_policy, evaluate
from hepbpf.compiler.mapimage import CHAIN_INGRESS

from ..gen import IFACE, NODE, Gen


@pytest.mark.parametrize("seed", range(50))
def test_draw_compiles_and_evaluates(seed):
    draw = Gen(seed).draw(20)
    comp = compile_policy([(f"seed-{seed}.json", draw.text)], node=NODE, iface=IFACE)
    view = comp.views[CHAIN_INGRESS]
    verdicts = {evaluate(view, p).verdict for p in draw.packets}
    assert verdicts <= {"allow", "deny"}
    # Every path ends at a catch-all: no-profile for the host's packets,
    # forward-allow for forwarded ones, in both chains.
    for chain in (0, 1):
        slots = [s for s in comp.image.slots if s.chain == chain]
        assert slots[-1].reason_name == "forward-allow"
        assert any(s.reason_name == "no-profile" for s in slots)
