"""Update latency: what `hepbpf apply` costs once the new policy is compiled.

Two changes on an unattached object (the same maps and switch as an
attached one): k CIDRs of a 100,000-CIDR GlobalNetworkSet replaced by
others, and one rule of a 10,000-rule policy edited. The k CIDRs are
either a run (the k lowest go, k new ones come above the highest: a feed
rotating its oldest entries) or scattered (k at random positions go, k new
ones come at random free addresses between the others: each is its own
place to find in the diff). Each change is made ROUNDS times, back to the
base policy in between, and reported as the median with min and max; each
figure is split into compile (not part of the update), encode+diff
(Python), and the kernel writes and switch; the wait for packets in flight
after the switch is reported beside it (the new verdict applies before it
ends).
"""

from __future__ import annotations

import random
import statistics
import time

from hepbpf.compiler import compile_policy
from hepbpf.loader.datapath import load_image

from .rules import IFACE, NODE, host_endpoint_yaml

N_CIDRS = 100_000
K_CHANGED = (1, 100, 10_000)
PATTERNS = ("run", "scattered")
N_RULES = 10_000
ROUNDS = 5
SEED = 6

_HEP = host_endpoint_yaml("192.0.2.1")


def _net(i: int) -> str:
    # Map entries only, never traffic: 100,000 /32s need more room than the
    # documentation ranges have. The set holds the even i; odd ones are free.
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"


def changed_set(base: list[int], k: int, pattern: str, rnd: random.Random) -> list[int]:
    """``base`` (even address numbers, ascending) with k replaced."""
    if pattern == "run":
        top = base[-1]
        return base[k:] + [top + 2 * (i + 1) for i in range(k)]
    gone = set(rnd.sample(range(len(base)), k))
    fresh = {2 * i + 1 for i in rnd.sample(range(len(base)), k)}  # odd: free, between the others
    return sorted([a for i, a in enumerate(base) if i not in gone] + list(fresh))


def set_policy(nets) -> str:
    body = "\n".join(f"  - {n}" for n in nets)
    return _HEP + f"""apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: big
  labels: {{role: big}}
spec:
  nets:
{body}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: p
spec:
  selector: role == 'bench'
  ingress:
  - {{action: Deny, protocol: TCP, source: {{selector: role == 'big'}}}}
  - {{action: Allow, protocol: TCP}}
"""


def rules_policy(edited_port: int = 20000) -> str:
    rules = []
    for i in range(N_RULES):
        port = 20000 + i // 250
        if i == 0:
            port = edited_port
        rules.append(f"  - {{action: Deny, protocol: TCP, source: {{nets: [198.51.100.{i % 250 + 1}/32]}}, "
                     f"destination: {{ports: [{port}]}}}}")
    return _HEP + """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: big
spec:
  selector: role == 'bench'
  ingress:
""" + "\n".join(rules) + "\n  - {action: Allow, protocol: TCP}\n"


def _compile(text: str):
    t0 = time.perf_counter()
    c = compile_policy([("bench.yaml", text)], node=NODE, iface=IFACE)
    return c, time.perf_counter() - t0


def _summary(rows: list[dict]) -> dict:
    """One change's ROUNDS rows: the median row's figures, with min/max."""
    effect = [r["effect_s"] for r in rows]
    med = sorted(rows, key=lambda r: r["effect_s"])[len(rows) // 2]
    return dict(med, effect_s=statistics.median(effect), effect_min_s=min(effect), effect_max_s=max(effect),
                rounds=len(rows))


def _row(what: str, k: int, res, compile_s: float) -> dict:
    return {"change": what, "k": k, "reloaded": res.reloaded, "reason": res.reason,
            "written": res.written, "deleted": res.deleted, "compile_s": compile_s,
            "effect_s": res.effect_seconds, "encode_s": res.encode_seconds,
            "kernel_s": res.effect_seconds - res.encode_seconds, "settle_s": res.settle_seconds}


def _rounds(dp, base_img, changed_img, what: str, k: int, compile_s: float) -> dict:
    rows = []
    for _ in range(ROUNDS):
        rows.append(_row(what, k, dp.update(changed_img), compile_s))
        dp.update(base_img)
        dp.update(base_img)  # both generations hold the base again
    return _summary(rows)


def measure_updates() -> dict:
    rnd = random.Random(SEED)
    rows = []
    base = [2 * i for i in range(N_CIDRS)]
    base_img = _compile(set_policy(map(_net, base)))[0].image
    with load_image(base_img) as dp:
        for pattern in PATTERNS:
            for k in K_CHANGED:
                changed, cs = _compile(set_policy(map(_net, changed_set(base, k, pattern, rnd))))
                rows.append(dict(_rounds(dp, base_img, changed.image, "cidrs", k, cs), pattern=pattern))
    big = _compile(rules_policy())[0]
    one, cs = _compile(rules_policy(edited_port=29999))
    with load_image(big.image) as dp:
        rows.append(_rounds(dp, big.image, one.image, "one rule", 1, cs))
    cidr = {p: {str(r["k"]): r["effect_s"] for r in rows if r["change"] == "cidrs" and r["pattern"] == p}
            for p in PATTERNS}
    rule = next(r for r in rows if r["change"] == "one rule")
    return {"rows": rows, "cidr_s": cidr, "rule_s": rule["effect_s"],
            "rule_detail": f"median of {rule['rounds']} ({1e3 * rule['effect_min_s']:.1f}-"
                           f"{1e3 * rule['effect_max_s']:.1f} ms); kernel {1e3 * rule['kernel_s']:.1f} ms; "
                           f"compile {rule['compile_s']:.2f} s before it"}


def main() -> None:
    out = measure_updates()
    for r in out["rows"]:
        print(f"{r['change']:>8} {r.get('pattern', ''):>9} k={r['k']:<6} {1e3 * r['effect_s']:8.2f} ms to take effect "
              f"({1e3 * r['effect_min_s']:.2f}-{1e3 * r['effect_max_s']:.2f}) "
              f"(kernel {1e3 * r['kernel_s']:.2f} ms, {r['written']} written, {r['deleted']} deleted, "
              f"reload: {r['reloaded']}), +{1e3 * r['settle_s']:.1f} ms settle; compile {r['compile_s']:.2f} s")


if __name__ == "__main__":
    main()
