"""Golden text dumps: the resolved view and the MapImage of a few policies.
A change in either is reviewed as a diff; `pytest --update-golden` rewrites."""

from pathlib import Path

import pytest

from hepbpf.compiler import compile_policy
from hepbpf.compiler.dump import dump_view
from hepbpf.compiler.mapimage import CHAIN_INGRESS, dump

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def _args(case: str) -> dict:
    words = (GOLDEN / case / "args").read_text().split()
    return {"node": words[words.index("--node") + 1], "iface": words[words.index("--iface") + 1]}


@pytest.mark.parametrize("case", CASES)
def test_dumps_match_golden(case, update_golden):
    src = GOLDEN / case / "policy.yaml"
    comp = compile_policy([(src.name, src.read_text())], **_args(case))
    outputs = {"view.txt": dump_view(comp.views[CHAIN_INGRESS]), "maps.txt": dump(comp.image)}
    for name, text in outputs.items():
        path = GOLDEN / case / name
        if update_golden:
            path.write_text(text)
        assert path.read_text() == text, f"{path} differs (review, then pytest --update-golden)"


def test_dumps_are_deterministic():
    src = GOLDEN / "stages" / "policy.yaml"
    a = compile_policy([("p.yaml", src.read_text())], node="n1", iface="eth1")
    b = compile_policy([("p.yaml", src.read_text())], node="n1", iface="eth1")
    assert dump(a.image) == dump(b.image)
