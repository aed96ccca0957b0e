"""The benchmark's kernel baselines judge like the rules they stand for:
LIN(N) (the straight-line program) must pick the same first rule as
RuleSet.first_match, or comparing hepbpf with it would be comparing with a
different firewall. Timing is `make bench`'s business, not asserted here."""

import pytest

from hepbpf.bench import micro
from hepbpf.bench.rules import rule_set

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("family", [4, 6])
def test_lin_matches_the_first_rule_for_every_probe(family):
    rs = rule_set(300, family)
    m = micro._Lin()
    try:
        m.install(rs)
        probes = rs.probes("none") + rs.probes("last") + rs.probes("mix")
        for p in probes:
            want = rs.first_match(p)
            assert m.hit(micro.frame(p, family)) == (rs.n if want is None else want), p
    finally:
        m.close()


def test_lin_is_refused_past_the_verifiers_limit_and_says_why():
    m = micro._Lin()
    try:
        with pytest.raises(micro.linear.LoadError, match="jumps is too complex|too large"):
            m.install(rule_set(10000))
    finally:
        m.close()


def test_hepbpf_results_are_checked_before_they_are_timed():
    """micro.hepbpf checks each frame's reason counter before timing it:
    on the real object every case passes that check."""
    rs = rule_set(20)
    res, timing = micro.hepbpf(rs, hooks=("xdp", "tc"), cases=("none", "last"))
    assert {(r.hook, r.case) for r in res} == {("xdp", "none"), ("xdp", "last"), ("tc", "none"), ("tc", "last")}
    assert all(r.median > 0 and r.min <= r.median <= r.max for r in res)
    assert timing["compile_s"] > 0 and timing["load_s"] > 0


def test_baselines_run_both_hooks():
    res = micro.baselines((4,))
    assert {r.engine for r in res} == {"E", "P", "TC_E", "TC_P"}
    assert all(r.median > 0 for r in res)
