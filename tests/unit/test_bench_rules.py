"""The benchmark's rule sets and its verdict arithmetic (no kernel needed):
a wrong rule set or a ratio read the wrong way round would make every
figure of `make bench` meaningless."""

import ipaddress
import math

import pytest

from hepbpf.bench import linear, report
from hepbpf.bench.rules import MIX_PACKETS, IFACE, NODE, hepbpf_yaml, rule_set
from hepbpf.compiler import compile_policy, evaluate, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS


@pytest.mark.parametrize("family", [4, 6])
def test_rule_sets_are_deterministic_and_probes_hit_what_they_say(family):
    rs = rule_set(500, family)
    assert rs == rule_set(500, family) and rs != rule_set(500, family, seed=2)
    assert rs.n == 500 and all(r.src.version == family for r in rs.rules)
    assert rs.first_match(rs.probes("none")[0]) is None
    assert rs.first_match(rs.probes("last")[0]) == 499
    mix = rs.probes("mix")
    assert len(mix) == MIX_PACKETS and all(rs.first_match(p) is not None for p in mix)
    # Half the rules share the probes' leading bits, so a linear matcher
    # compares addresses, not just the first octet.
    lead = {4: 8, 6: 16}[family]
    anchor = ipaddress.ip_network(f"{rs.probes('none')[0].src}/{lead}", strict=False)
    assert 0.3 < sum(1 for r in rs.rules if r.src.subnet_of(anchor) or anchor.subnet_of(r.src)) / rs.n < 0.7


@pytest.mark.parametrize("family", [4, 6])
def test_the_reference_evaluator_agrees_with_first_match(family):
    """The YAML hepbpf gets is the same rule set: the compiler's reference
    evaluator denies the rule-matching probes and ends the tier on the other."""
    rs = rule_set(40, family)
    compiled = compile_policy([("bench.yaml", hepbpf_yaml(rs))], node=NODE, iface=IFACE)
    view = compiled.views[CHAIN_INGRESS]
    for p in rs.probes("none") + rs.probes("last") + rs.probes("mix")[:16]:
        src, dst = (p.src, p.dst) if family == 4 else (f"[{p.src}]", f"[{p.dst}]")
        v = evaluate(view, parse_spec(f"{p.proto.lower()} {src}:40000 -> {dst}:{p.dport}"))
        assert v.verdict == "deny"
        assert v.reason == ("end-of-tier" if rs.first_match(p) is None else "rule-deny"), p


def test_lin_assembles_one_block_per_rule():
    small, big = rule_set(10), rule_set(1000)
    n_small = len(linear.assemble(small, 3)) // 8
    n_big = len(linear.assemble(big, 3)) // 8
    assert len(linear.assemble(small, 3)) % 8 == 0
    assert 5 * 990 < n_big - n_small < 15 * 990  # a handful of instructions per rule


def test_verdicts_never_call_a_missing_figure_met():
    data = {"micro": [
        {"engine": "P", "hook": "xdp", "family": 4, "n": 0, "case": "-", "median": 30.0},
        {"engine": "hepbpf", "hook": "xdp", "family": 4, "n": 10, "case": "none", "median": 60.0},
        {"engine": "hepbpf", "hook": "xdp", "family": 4, "n": 10, "case": "last", "median": 120.0},
        {"engine": "hepbpf", "hook": "xdp", "family": 4, "n": 1000, "case": "none", "median": 100.0},
        {"engine": "LIN", "hook": "xdp", "family": 4, "n": 1000, "case": "none", "median": 1500.0},
        {"engine": "LIN", "hook": "xdp", "family": 4, "n": 1000, "case": "last", "median": math.nan},
    ], "live": [
        {"engine": "xdp-drop", "n": 0, "case": "-", "family": 4, "mpps": 4.0},
        {"engine": "hepbpf", "n": 10, "case": "none", "family": 4, "mpps": 3.0},
        {"engine": "hepbpf", "n": 1000, "case": "none", "family": 4, "mpps": 2.0},
        {"engine": "ipt-legacy", "n": 1000, "case": "none", "family": 4, "mpps": 0.2},
    ]}
    by_goal = {v.goal: v for v in report.verdicts(data)}
    assert by_goal["in-kernel hepbpf/P, IPv4, 10 rules, none"].met is True  # 2x <= 3x
    assert by_goal["in-kernel hepbpf/P, IPv4, 10 rules, last"].met is False  # 4x > 3x
    assert by_goal["in-kernel hepbpf/P, IPv6, 10 rules, none"].met is None
    assert by_goal["LIN/hepbpf at 1,000 rules, none (faster)"].measured == 15.0
    assert by_goal["LIN/hepbpf at 1,000 rules, last (faster)"].met is None  # LIN did not load
    assert by_goal["veth rate hepbpf/XDP-drop floor, 10 rules, none"].measured == 0.75
    assert by_goal["veth rate hepbpf/XDP-drop floor, 10 rules, none"].met is False
    assert by_goal["veth rate hepbpf/ipt-legacy, 1000 rules, none"].met is False  # 10x < 20x
    assert by_goal["compile + load + fill 10k rules + 100k CIDRs (to enforcing)"].met is None
    assert by_goal["100k-CIDR set / plain LPM trie, IPv4, members keys"].met is None
    data["scale"] = {"seconds": {"parse": 0.5, "total": 2.5}}
    data["cidr_set"] = [{"family": 4, "mix": "members", "lpm_ns": 900.0, "hepbpf_ns": 400.0},
                        {"family": 4, "mix": "uniform", "lpm_ns": 900.0, "hepbpf_ns": 600.0}]
    by_goal = {v.goal: v for v in report.verdicts(data)}
    assert by_goal["compile + load + fill 10k rules + 100k CIDRs (to enforcing)"].met is False
    assert by_goal["100k-CIDR set / plain LPM trie, IPv4, members keys"].met is True
    assert by_goal["100k-CIDR set / plain LPM trie, IPv4, uniform keys"].measured == 600 / 900
    assert "MISSED" in report.text(data) and "not measured" in report.text(data)
    data["updates"] = {"cidr_s": {"run": {"100": 0.0009}, "scattered": {"100": 0.003}}, "rule_s": 0.02,
                       "rows": [{"change": "cidrs", "pattern": "scattered", "k": 100, "effect_s": 0.003,
                                 "effect_min_s": 0.002, "effect_max_s": 0.004, "rounds": 5, "kernel_s": 1e-4,
                                 "written": 200, "deleted": 0, "reloaded": False}]}
    by_goal = {v.goal: v for v in report.verdicts(data)}
    assert by_goal["update of 100 CIDRs (run) in a 100k set (diff+write+switch)"].met is True  # 0.9 <= 1.1 ms
    scattered = by_goal["update of 100 CIDRs (scattered) in a 100k set (diff+write+switch)"]
    assert scattered.met is False and "2.00-4.00 ms of 5" in scattered.detail
    assert by_goal["update of 1 rule in a 10,000-rule policy"].met is True
    lin = next(r for r in data["micro"] if r["engine"] == "LIN" and r["n"] == 1000 and r["case"] == "none")
    lin["note"] = "per-load medians 1490, 1500, 1510"  # three loads, not a rejection
    row = next(line for line in report.markdown(data).splitlines() if line.startswith("| 1,000 | IPv4 |"))
    assert "rejected" not in row and "1500" in row
