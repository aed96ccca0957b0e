"""10,000 rules load (the verifier's work does not grow with rules) and the
kernel agrees with the reference on rules at the start, middle and end."""

import pytest

from hepbpf.compiler import compile_policy, evaluate, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS
from hepbpf.loader.datapath import load_image

from ..scale import N_RULES, big_policy, rule_for

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def big():
    return compile_policy([("big.yaml", big_policy())], node="n1", iface="eth1")


def test_ten_thousand_rules_load_and_decide(big, capsys):
    view = big.views[CHAIN_INGRESS]
    packets = [
        (f"tcp 198.51.100.1:1 -> 192.0.2.1:20000", rule_for(1, 20000), "deny"),
        (f"tcp 198.51.100.130:1 -> 192.0.2.1:20020", rule_for(130, 20020), "deny"),
        (f"tcp 198.51.100.250:1 -> 192.0.2.1:20039", rule_for(250, 20039), "deny"),
        (f"tcp 198.51.100.251:1 -> 192.0.2.1:20039", N_RULES, "allow"),
        (f"tcp 198.51.100.8:1 -> 192.0.2.1:19999", N_RULES, "allow"),
        (f"udp 198.51.100.8:1 -> 192.0.2.1:20000", None, "deny"),
    ]
    with load_image(big.image, trace=True) as dp:
        info, tc_info = dp.prog.info(), dp.tc_prog.info()
        for spec, rule, verdict in packets:
            pkt = parse_spec(spec)
            got = dp.explain(pkt)
            assert got == evaluate(view, pkt).as_json()
            assert (got["verdict"], got["rule"]) == (verdict, rule), spec
    with capsys.disabled():
        print(f"\n10k rules: {len(big.image.slots)} slots, {big.image.nwords} words, "
              f"{len(big.image.classes)} classes, verifier processed {info['verified_insns']} insns "
              f"(tc {tc_info['verified_insns']})")
    # The program is the same at any size, but the verifier walks its hop
    # loop per hop: a fifth of the kernel's 1M-instruction budget is the
    # margin kept (each hop saved by a check inside the loop costs some).
    assert info["verified_insns"] < 200_000 and tc_info["verified_insns"] < 200_000
