"""Reference evaluator vs the real XDP object on random (policy, packet) pairs.

Quick in `make test`; `make stress` sets HEPBPF_STRESS_PAIRS and
HEPBPF_STRESS_SETS (default 1,000,000 packets over 1,000 policy sets).
Any disagreement is a bug in one of them: the failure prints the seed, the
packet and the policy so it can be replayed.
"""

import os

import pytest

from hepbpf.compiler import compile_policy, evaluate
from hepbpf.compiler.mapimage import CHAIN_INGRESS
from hepbpf.loader.datapath import load_image

from ..gen import IFACE, NODE, Gen

pytestmark = [pytest.mark.bpf, pytest.mark.stress]

PAIRS = int(os.environ.get("HEPBPF_STRESS_PAIRS", "6000"))
SETS = int(os.environ.get("HEPBPF_STRESS_SETS", str(max(1, PAIRS // 100))))
FIELDS = ("verdict", "reason", "stage", "tier", "policy", "rule")


def test_reference_and_kernel_agree(capsys):
    sets, per_set = SETS, max(1, PAIRS // SETS)
    checked = 0
    for seed in range(sets):
        draw = Gen(seed).draw(per_set)
        comp = compile_policy([(f"seed-{seed}.json", draw.text)], node=NODE, iface=IFACE)
        view = comp.views[CHAIN_INGRESS]
        with load_image(comp.image, trace=True) as dp:
            for pkt in draw.packets:
                want = evaluate(view, pkt).as_json()
                got = dp.explain(pkt)
                if any(want[f] != got[f] for f in FIELDS):
                    pytest.fail(f"seed {seed}: {pkt}\n reference {want}\n kernel    {got}\n"
                                f"policy:\n{draw.text}", pytrace=False)
                checked += 1
    with capsys.disabled():
        print(f"\ndifferential: {checked} (policy, packet) pairs over {sets} policy sets agree")
    assert checked == sets * per_set
