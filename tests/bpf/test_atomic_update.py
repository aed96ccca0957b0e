"""Updates in place are atomic, and cost what changed.

A thread judges packets through BPF_PROG_TEST_RUN without pause while the
main thread switches the policy between A and B a thousand times: every
verdict (return value, deciding slot, generation) must be one that A or B
gives. A and B differ in both the address classes and the slot actions, so
a packet judged half by one and half by the other would get a verdict
neither gives (see POLICY_A/B). Then the cost of updates: k CIDRs changed
in a 100,000-CIDR GlobalNetworkSet, one rule changed in a 10,000-rule
policy (reported, not asserted on time), and what can fail: no reload,
entries written about the change, verdicts right after.
"""

from __future__ import annotations

import threading
import time

import pytest

from hepbpf.compiler import compile_policy, evaluate, parse_spec
from hepbpf.compiler.mapimage import CHAIN_INGRESS
from hepbpf.loader.datapath import load_image
from hepbpf.loader.frames import frame

from ..cases import gnp, hep
from ..scale import N_RULES, big_policy, rule_for

pytestmark = pytest.mark.bpf

# Mixed states give verdicts neither policy gives: .7 with A's address
# class (rules 0, 1) and B's slots is denied by rule 0; .200 with B's class
# (rules 0, 1) and A's slots is allowed by rule 0.
POLICY_A = hep() + gnp("p", """
selector: all()
ingress:
- {action: Allow, protocol: TCP, source: {nets: [198.51.100.0/25]}}
- {action: Deny, protocol: TCP, source: {nets: [198.51.100.0/24]}}
- {action: Allow, protocol: UDP}
""")
POLICY_B = hep() + gnp("p", """
selector: all()
ingress:
- {action: Deny, protocol: TCP, source: {nets: [198.51.100.128/25]}}
- {action: Allow, protocol: TCP, source: {nets: [198.51.100.0/24]}}
- {action: Deny, protocol: UDP}
""")
PACKETS = ["tcp 198.51.100.7:40000 -> 192.0.2.1:80", "tcp 198.51.100.200:40000 -> 192.0.2.1:80",
           "udp 198.51.100.7:40000 -> 192.0.2.1:53"]
UPDATES = 1000
RUN_LIMIT_S = 240


def _compile(text: str):
    return compile_policy([("p.yaml", text)], node="n1", iface="eth1")


def _judge(dp, frames):
    """(packet index, verdict, slot) of each frame, and the generations."""
    out, gens = [], set()
    for i, f in enumerate(frames):
        dp.forget_flows()  # an allowed packet starts a flow: judge each one anew
        kv = dp.run(f, CHAIN_INGRESS)
        out.append((i, kv.verdict, kv.slot))
        gens.add(kv.gen)
    return out, gens


def test_no_packet_sees_a_mix_during_a_thousand_updates():
    a, b = _compile(POLICY_A), _compile(POLICY_B)
    frames = [frame(parse_spec(p)) for p in PACKETS]
    with load_image(a.image, trace=True) as dp:
        expect_a, _ = _judge(dp, frames)
        assert [v for _, v, _ in expect_a] == ["allow", "deny", "allow"]
        first = dp.update(b.image)
        assert not first.reloaded
        expect_b, _ = _judge(dp, frames)
        assert [v for _, v, _ in expect_b] == ["allow", "deny", "deny"]
        assert expect_a[0] != expect_b[0] and expect_a[1] != expect_b[1]
        allowed = set(expect_a) | set(expect_b)

        stop = threading.Event()
        seen: dict[tuple, int] = {}
        bad: list[tuple] = []
        gens_seen: set[int] = set()
        runs = [0]

        def judge_forever():
            deadline = time.monotonic() + RUN_LIMIT_S
            while not stop.is_set() and time.monotonic() < deadline:
                got, gens = _judge(dp, frames)
                gens_seen.update(gens)
                runs[0] += 1
                for v in got:
                    if v not in allowed:
                        bad.append(v)
                    seen[v] = seen.get(v, 0) + 1

        t = threading.Thread(target=judge_forever, daemon=True)
        t.start()
        # B again, then A twice, B twice, ...: each update rewrites what
        # A and B differ in (the generation written last held the other).
        images = [b.image if (i + 1) // 2 % 2 == 0 else a.image for i in range(UPDATES)]
        results = []
        t0 = time.monotonic()
        try:
            for img in images:
                results.append(dp.update(img))
        finally:
            stop.set()
            t.join(timeout=30)
        took = time.monotonic() - t0
        assert not t.is_alive()
        print(f"\n{UPDATES} updates in {took:.1f} s ({1000 * took / UPDATES:.1f} ms each, "
              f"{sum(r.settle_seconds for r in results) / UPDATES * 1000:.1f} ms of it waiting for packets in "
              f"flight); {runs[0]} rounds of {len(frames)} packets judged meanwhile")
        assert not bad, f"verdicts neither policy gives: {bad[:5]}"
        assert not any(r.reloaded for r in results)
        assert all(r.written > 0 for r in results)
        assert set(expect_a) - set(expect_b) <= set(seen) and set(expect_b) - set(expect_a) <= set(seen)
        assert gens_seen == {0, 1}
        assert runs[0] >= 100


def _netset(nets) -> str:
    body = "\n".join(f"  - {n}" for n in nets)
    return f"""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: big
  labels: {{role: big}}
spec:
  nets:
{body}
---
"""


# Map entries only, never traffic: 100,000 /32s need more room than the
# documentation ranges have.
def _set_policy(nets) -> str:
    return hep() + _netset(nets) + gnp("p", """
selector: all()
ingress:
- {action: Deny, protocol: TCP, source: {selector: role == 'big'}}
- {action: Allow, protocol: TCP}
""")


def _net(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"


N_CIDRS = 100_000


def test_update_cost_of_k_cidrs_and_one_rule(capsys):
    base = [_net(i) for i in range(N_CIDRS)]
    lines = []
    with load_image(_compile(_set_policy(base)).image, trace=True) as dp:
        for k in (1, 100, 10_000):
            # k CIDRs of the set replaced by others
            changed = base[k:] + [_net(N_CIDRS + i) for i in range(k)]
            img = _compile(_set_policy(changed)).image
            res = dp.update(img)
            assert not res.reloaded, res.reason
            # each replaced CIDR: one entry added and one deleted (hash or
            # trie), or two entries rewritten (the DIR array this dense set
            # gets), per generation written; the class vectors are unchanged
            assert res.written + res.deleted <= 2 * k + 8, res
            assert res.written + res.deleted >= k, res
            lines.append(f"{k:>6} of {N_CIDRS} CIDRs: {1000 * res.effect_seconds:.2f} ms to take effect, "
                         f"{1000 * (res.effect_seconds - res.encode_seconds):.2f} ms of it in the kernel "
                         f"({res.written} written, {res.deleted} deleted), "
                         f"+{1000 * res.settle_seconds:.2f} ms for packets in flight")
            new = parse_spec(f"tcp {_net(N_CIDRS)[:-3]}:1 -> 192.0.2.1:80")
            gone = parse_spec(f"tcp {_net(0)[:-3]}:1 -> 192.0.2.1:80")
            assert dp.explain(new)["verdict"] == "deny" and dp.explain(gone)["verdict"] == "allow"
            restore = _compile(_set_policy(base)).image
            dp.update(restore)
            dp.update(restore)  # both generations hold the base again

    big = _compile(big_policy())
    text = big_policy().replace("destination: {ports: [20000]}", "destination: {ports: [29999]}", 1)
    one = _compile(text)
    assert len(one.image.slots) == len(big.image.slots)
    with load_image(big.image, trace=True) as dp:
        res = dp.update(one.image)
        assert not res.reloaded, res.reason
        lines.append(f"one rule of {N_RULES}: {1000 * res.effect_seconds:.2f} ms to take effect, "
                     f"{1000 * (res.effect_seconds - res.encode_seconds):.2f} ms of it in the kernel "
                     f"({res.written} written, {res.deleted} deleted), "
                     f"+{1000 * res.settle_seconds:.2f} ms for packets in flight")
        view = one.views[CHAIN_INGRESS]
        for spec in ("tcp 198.51.100.1:1 -> 192.0.2.1:20000", "tcp 198.51.100.1:1 -> 192.0.2.1:29999",
                     "tcp 198.51.100.2:1 -> 192.0.2.1:20000"):
            pkt = parse_spec(spec)
            assert dp.explain(pkt) == evaluate(view, pkt).as_json(), spec
        assert dp.explain(parse_spec("tcp 198.51.100.2:1 -> 192.0.2.1:20000"))["rule"] == rule_for(2, 20000)
    with capsys.disabled():
        print("\nupdate cost (BPF_PROG_TEST_RUN object, in place):\n  " + "\n  ".join(lines))
