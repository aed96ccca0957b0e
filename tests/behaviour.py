"""Run the behaviour table (tests/cases.py) through any executor."""

from __future__ import annotations

from hepbpf.compiler import compile_policy, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS

from .cases import IFACE, NODE, Case


def compiled(case: Case, extra: str = ""):
    return compile_policy([(f"{case.name}.yaml", case.policy + "\n---\n" + extra)], node=NODE, iface=IFACE)


def expectations(case: Case):
    """(spec, expected verdict, expected (policy, rule) or None) for every packet."""
    decided = {spec: (pol, rule) for spec, pol, rule in case.decided_by}
    for spec in case.allowed:
        yield spec, "allow", decided.get(spec)
    for spec in case.denied:
        yield spec, "deny", decided.get(spec)


def check_case(case: Case, judge_for, extra: str = "") -> None:
    """``judge_for(compiled)`` is a context manager giving ``judge(packet)
    -> dict`` with verdict/policy/rule (so a kernel judge loads once)."""
    comp = compiled(case, extra)
    failures = []
    with judge_for(comp) as judge:
        results = [(spec, verdict, who, judge(parse_spec(spec))) for spec, verdict, who in expectations(case)]
    for spec, verdict, who, got in results:
        if got["verdict"] != verdict:
            failures.append(f"{spec}: expected {verdict}, got {got}")
        elif who is not None and (got["policy"], got["rule"]) != who:
            failures.append(f"{spec}: expected decided by {who}, got {got}")
    assert not failures, f"{case.name}:\n  " + "\n  ".join(failures)


def chain_view(comp):
    return comp.views[CHAIN_INGRESS]
