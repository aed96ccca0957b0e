"""`make demo`: seed 000's allow-list example, enforced by XDP on the lab.

Builds the namespace lab (a node whose eth1 is the host endpoint, three
clients), attaches vm/policies/metrics-allowlist.yaml with `hepbpf attach`
inside the node namespace, and shows with scapy traffic that only the
client in the GlobalNetworkSet reaches TCP 9091 while every client still
reaches TCP 22 (a failsafe port). Prints the verdicts `hepbpf explain`
gives next to what the traffic showed, then detaches and tears down.
Exits non-zero if anything differs from the expectation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hepbpf.vm.lab import Lab
from hepbpf.vm.probe import PacketSpec, probe

POLICY = Path(__file__).parent / "policies" / "metrics-allowlist.yaml"
GRANTED = "198.51.100.7"  # in the GlobalNetworkSet calico-prometheus-set
OTHERS = ["203.0.113.9", "192.0.2.30"]


def hepbpf(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def main() -> int:
    print(f"policy: {POLICY}")
    with Lab([[GRANTED], [OTHERS[0]], []]) as lab:
        print(f"lab: node namespace {lab.node_ns} (eth1 = 192.0.2.1, the host endpoint), "
              f"clients {', '.join(c.ns for c in lab.clients)}")
        res = hepbpf(lab, "attach", "eth1", str(POLICY), "--node", "lab-node")
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        if res.returncode != 0:
            return 1
        try:
            ok = _exercise(lab)
            ok = _show_drops(lab) and ok
            st = json.loads(hepbpf(lab, "status", "eth1", "-o", "json").stdout)
            print(f"\nstatus: {'enforcing' if st['attached'] else 'NOT ATTACHED'} in XDP {st['mode']} mode, "
                  f"prog id {st['prog_id']}")
            for reason, c in st["reasons"].items():
                if c["packets"]:
                    print(f"  {reason:<14} {c['packets']:>4} packets")
            for r in st["rules"]:
                if r["packets"] and r["policy"]:
                    print(f"  {r['chain']:<7} policy {r['policy']} rule {r['rule']} ({r['action']}): "
                          f"{r['packets']} packets")
        finally:
            res = hepbpf(lab, "detach", "eth1")
            sys.stdout.write(res.stdout)
    print("lab torn down")
    print("\nRESULT: " + ("as expected: only the granted client reaches 9091; everyone reaches SSH"
                          if ok else "UNEXPECTED verdicts (see above)"))
    return 0 if ok else 1


def _exercise(lab: Lab) -> bool:
    sources = [(lab.clients[0], GRANTED), (lab.clients[1], OTHERS[0]), (lab.clients[2], lab.clients[2].addrs4[0])]
    rows = []
    for client, src in sources:
        specs = [PacketSpec("tcp", src, lab.node_addr4, 40000, port) for port in (9091, 22)]
        arrived = probe(lab, client, specs)
        for spec, got in zip(specs, arrived):
            pkt = f"tcp {src}:40000 -> 192.0.2.1:{spec.dport}"
            ex = subprocess.run([sys.executable, "-m", "hepbpf.cli", "explain", str(POLICY), "--node", "lab-node",
                                 "--iface", "eth1", "--packet", pkt], capture_output=True, text=True, check=True)
            verdict = json.loads(ex.stdout)
            expected = spec.dport == 22 or src == GRANTED
            rows.append((pkt, verdict, got, got == expected and (verdict["verdict"] == "allow") == expected))
    print(f"\n{'packet':<42} {'explain says':<52} {'traffic':<8}")
    for pkt, v, got, ok in rows:
        who = v["policy"] or (f"tier {v['tier']}" if v["tier"] else None)
        says = f"{v['verdict']} ({v['reason']}{', ' + who if who else ''})"
        print(f"{pkt:<42} {says:<52} {'arrived' if got else 'dropped':<8} {'ok' if ok else 'WRONG'}")
    return all(ok for *_, ok in rows)


def _show_drops(lab: Lab) -> bool:
    """What `hepbpf log` says about the two SYNs to 9091 that were dropped."""
    res = hepbpf(lab, "log", "eth1", "--direction", "ingress", "--port", "9091")
    lines = res.stdout.splitlines()
    print("\nhepbpf log eth1 --direction ingress --port 9091 (the drops, attributed):")
    for line in lines:
        print(f"  {line}")
    others = [ln for ln in lines if any(f"SRC={o} " in ln for o in OTHERS[:1] + [lab.clients[2].addrs4[0]])]
    return res.returncode == 0 and len(lines) == 2 and len(others) == 2 and all("EVENT=drop" in ln for ln in lines)


if __name__ == "__main__":
    sys.exit(main())
