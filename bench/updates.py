"""Update latency: what `hepbpf apply` costs once the new policy is compiled.

Two changes on an unattached object (the same maps and switch as an
attached one): k CIDRs of a 100,000-CIDR GlobalNetworkSet replaced by
others, and one rule of a 10,000-rule policy edited. Each figure is split
into compile (not part of the update), encode+diff (Python), and the kernel
writes and switch; the wait for packets in flight after the switch is
reported beside it (the new verdict applies before it ends).
"""

from __future__ import annotations

import time

from hepbpf.compiler import compile_policy
from hepbpf.loader.datapath import load_image

from .rules import IFACE, NODE, host_endpoint_yaml

N_CIDRS = 100_000
K_CHANGED = (1, 100, 10_000)
N_RULES = 10_000

_HEP = host_endpoint_yaml("192.0.2.1")


def _net(i: int) -> str:
    # Map entries only, never traffic: 100,000 /32s need more room than the
    # documentation ranges have.
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"


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


def _row(what: str, k: int, res, compile_s: float) -> dict:
    return {"change": what, "k": k, "reloaded": res.reloaded, "reason": res.reason,
            "written": res.written, "deleted": res.deleted, "compile_s": compile_s,
            "effect_s": res.effect_seconds, "encode_s": res.encode_seconds,
            "kernel_s": res.effect_seconds - res.encode_seconds, "settle_s": res.settle_seconds}


def measure_updates() -> dict:
    rows = []
    base = [_net(i) for i in range(N_CIDRS)]
    base_img = _compile(set_policy(base))[0].image
    with load_image(base_img) as dp:
        for k in K_CHANGED:
            changed, cs = _compile(set_policy(base[k:] + [_net(N_CIDRS + i) for i in range(k)]))
            rows.append(_row("cidrs", k, dp.update(changed.image), cs))
            dp.update(base_img)
            dp.update(base_img)  # both generations hold the base again
    big = _compile(rules_policy())[0]
    one, cs = _compile(rules_policy(edited_port=29999))
    with load_image(big.image) as dp:
        rows.append(_row("one rule", 1, dp.update(one.image), cs))
    cidr = {str(r["k"]): r["effect_s"] for r in rows if r["change"] == "cidrs"}
    rule = next(r for r in rows if r["change"] == "one rule")
    return {"rows": rows, "cidr_s": cidr, "rule_s": rule["effect_s"],
            "rule_detail": f"kernel {1e3 * rule['kernel_s']:.1f} ms; compile {rule['compile_s']:.2f} s before it"}


def main() -> None:
    out = measure_updates()
    for r in out["rows"]:
        print(f"{r['change']:>8} k={r['k']:<6} {1e3 * r['effect_s']:8.2f} ms to take effect "
              f"(kernel {1e3 * r['kernel_s']:.2f} ms, {r['written']} written, {r['deleted']} deleted, "
              f"reload: {r['reloaded']}), +{1e3 * r['settle_s']:.1f} ms settle; compile {r['compile_s']:.2f} s")


if __name__ == "__main__":
    main()
