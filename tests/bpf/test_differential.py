"""Reference evaluator vs the real object on random (policy, packet) pairs:
both chains (XDP ingress, tc egress), the host's own and forwarded packets,
new flows and packets of known ones.

Quick in `make test`; `make stress` sets HEPBPF_STRESS_PAIRS and
HEPBPF_STRESS_SETS (default 1,000,000 packets over 1,000 policy sets).
Any disagreement is a bug in one of them: the failure prints the seed, the
packet and the policy so it can be replayed.
"""

import collections
import os

import pytest

from hepbpf.compiler import compile_policy, evaluate
from hepbpf.loader.datapath import load_image

from ..gen import IFACE, NODE, Gen

pytestmark = [pytest.mark.bpf, pytest.mark.stress]

PAIRS = int(os.environ.get("HEPBPF_STRESS_PAIRS", "6000"))
SETS = int(os.environ.get("HEPBPF_STRESS_SETS", str(max(1, PAIRS // 100))))
FIELDS = ("verdict", "reason", "stage", "tier", "policy", "rule", "notes")


def test_reference_and_kernel_agree(capsys):
    sets, per_set = SETS, max(1, PAIRS // SETS)
    checked = 0
    counts = collections.Counter()
    for seed in range(sets):
        draw = Gen(seed).draw_cases(per_set)
        comp = compile_policy([(f"seed-{seed}.json", draw.text)], node=NODE, iface=IFACE)
        with load_image(comp.image, trace=True, local_nets=()) as dp:
            for c in draw.cases:
                want = evaluate(comp.views[c.chain], c.pkt, forwarded=c.forwarded,
                                known_flow=c.known_flow).as_json()
                got = dp.explain(c.pkt, c.chain, forwarded=c.forwarded, known_flow=c.known_flow)
                if any(want[f] != got[f] for f in FIELDS):
                    pytest.fail(f"seed {seed}: {c}\n reference {want}\n kernel    {got}\n"
                                f"policy:\n{draw.text}", pytrace=False)
                counts[c.chain, c.forwarded, c.known_flow] += 1
                for kind in {n["kind"] for n in want["notes"]}:
                    counts[kind] += 1
                checked += 1
    with capsys.disabled():
        print(f"\ndifferential: {checked} (policy, packet) pairs over {sets} policy sets agree")
        print(f"  with Log notes {counts.pop('log', 0)}, with audit notes {counts.pop('audit', 0)}")
        for (chain, fwd, known), n in sorted(counts.items()):
            print(f"  {('ingress', 'egress')[chain]:7} {'forwarded' if fwd else 'host':9} "
                  f"{'known flow' if known else 'new flow':10} {n}")
    assert checked == sets * per_set
