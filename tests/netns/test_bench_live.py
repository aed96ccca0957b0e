"""The end-to-end benchmark measures what it says it measures: each engine
drops the probe by the rule it should (the harness checks that before
timing, and the check has teeth), its counter grows while the sender runs,
and nothing of the run is left behind. No speed is asserted: the ratios are
the harness's output, not a test."""

import ipaddress
import os
import random
import subprocess
from pathlib import Path

import pytest

from hepbpf.bench import live
from hepbpf.bench.netfilter import disjoint_elements
from hepbpf.bench.rules import rule_set

pytestmark = pytest.mark.netns

PREFIX = f"hbt{os.getpid() % 1_000_000}-"
FAST = {"window_s": 0.3, "windows": 2, "warmup_s": 0.2}
EXPECTED_LAST = {"xdp-drop": "drop", "hepbpf": "rule 9", "ipt-legacy": "rule 9", "nft-linear": "rule 9",
                 "nft-set": "set tcp"}
EXPECTED_NONE = {"xdp-drop": "drop"}


def _leftovers(prefix: str) -> list[str]:
    """Namespaces, pins and state of ours still there."""
    out = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
           if ns.startswith(prefix)]
    for root in (Path("/sys/fs/bpf/hepbpf"), Path("/run/hepbpf")):
        if root.is_dir():
            out += [str(p) for p in root.rglob(f"*{prefix}*")]
    return out


@pytest.fixture(scope="module")
def results(bpffs):
    try:
        got = live.run_live(sizes=(10,), cases=("none", "last"), engines=live.ENGINES, prefix=PREFIX, **FAST)
        got += live.run_live(sizes=(1000,), cases=("last",), engines=("hepbpf", "nft-set"), prefix=PREFIX + "k",
                             **FAST)
    finally:
        left = _leftovers(PREFIX)
    assert left == []
    return got


@pytest.mark.parametrize("engine", live.ENGINES)
def test_every_engine_drops_both_probes_by_the_expected_rule(results, engine):
    mine = {r["case"]: r for r in results if r["engine"] == engine and r["n"] in (0, 10)}
    assert set(mine) == {"none", "last"}
    assert mine["last"]["counter"] == EXPECTED_LAST[engine]
    assert mine["none"]["counter"] == EXPECTED_NONE.get(engine, "default")
    for r in mine.values():
        # The counter grew in every window, so every rate is positive.
        assert len(r["windows"]) == FAST["windows"] and min(r["windows"]) > 0
        assert r["min"] <= r["mpps"] <= r["max"] and r["ns_per_pkt"] > 0
        assert r["sent_mpps"] > 0 and r["family"] == 4


def test_a_thousand_rules_measure_too(results):
    big = {r["engine"]: r for r in results if r["n"] == 1000}
    assert set(big) == {"hepbpf", "nft-set"}
    assert big["hepbpf"]["counter"] == "rule 999" and big["nft-set"]["counter"] == "set tcp"
    assert all(min(r["windows"]) > 0 for r in big.values())
    assert big["hepbpf"]["notes"]["xdp_mode"] == "native"
    assert big["nft-set"]["notes"]["set_elements"] > 0


def test_the_check_before_timing_refuses_a_wrong_rule(bpffs):
    """A probe that grows another rule than the expected one stops the run."""
    prefix = PREFIX + "x"
    rs = rule_set(10)
    try:
        with live.Pair(prefix, 4) as pair:
            engine = live.make_engine("ipt-legacy", pair, rs)
            engine.install()
            sender = live.Sender(pair)
            try:
                sender.frame(live.probe_frame(rs.probes("none")[0]))
                with pytest.raises(live.BenchError, match="should grow 'rule 9' only"):
                    live._check(engine, sender, "rule 9", "none")
                live._check(engine, sender, "default", "none")
            finally:
                sender.close()
    finally:
        assert _leftovers(prefix) == []


def test_the_set_elements_hold_exactly_the_rules():
    """nft-set's disjoint elements cover what the rules cover, each point
    once (the kernel refuses overlapping elements)."""
    rs = rule_set(1000)
    rnd = random.Random(7)
    for proto in ("TCP", "UDP"):
        rules = [r for r in rs.rules if r.proto == proto]
        elems = disjoint_elements(rs, proto)
        for r in rules[:300]:
            for _ in range(3):
                addr = r.src.network_address + rnd.randrange(r.src.num_addresses)
                port = rnd.randint(r.ports[0] - 20, r.ports[1] + 20)
                covered = any(addr in q.src and q.ports[0] <= port <= q.ports[1] for q in rules)
                hits = sum(addr in net and lo <= port <= hi for net, lo, hi in elems)
                assert hits == int(covered), (ipaddress.ip_address(addr), port)
