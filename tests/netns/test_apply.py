"""`hepbpf apply` (and attach again) on an attached interface, over real
veth traffic: the verdict changes with no reload (same program), counters
start over for the new policy, and status and `top --once` show the new
policy's rules. A change that needs other settings reloads, and says why."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest

from hepbpf.vm.lab import NODE4
from hepbpf.vm.probe import PacketSpec, probe

from ..addrscopes import netset_policy
from ..cases import IFACE, NODE, deny_then_allow
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns

PORT_A, PORT_B = 7777, 8080  # outside the failsafe ports


def send(lab, dport: int, n: int, first_sport: int) -> list[bool]:
    """``n`` TCP SYNs, each its own flow (so each meets a rule, not conntrack)."""
    c = lab.clients[0]
    return probe(lab, c, [PacketSpec("tcp", c.addrs4[0], NODE4, sport=first_sport + i, dport=dport)
                          for i in range(n)])


def _rules(st: dict, policy: str) -> dict[int, dict]:
    return {r["rule"]: r for r in st["rules"] if r["policy"] == policy and r["chain"] == "ingress"}


def test_apply_changes_the_verdict_in_place(lab, tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(deny_then_allow("guard", PORT_A, PORT_B))   # deny 7777, allow 8080
    second.write_text(deny_then_allow("guard", PORT_B, PORT_A))  # the other way round
    try:
        hepbpf(lab, "attach", IFACE, str(first), "--node", NODE)
        prog = status(lab)["prog_id"]
        assert send(lab, PORT_A, 2, 41000) == [False, False]
        assert send(lab, PORT_B, 3, 42000) == [True] * 3

        out = hepbpf(lab, "apply", IFACE, str(second), "--node", NODE).stdout
        m = re.search(r"updated eth1 in ([\d.]+) ms: (\d+) entries written, (\d+) deleted, generation 1 "
                      r"\(no reload", out)
        assert m, out
        assert int(m.group(2)) > 0
        st = status(lab)
        assert st["prog_id"] == prog and st["attached"] and st["generation"] == 1
        # the new generation's counters start at 0
        assert [_rules(st, "guard")[i]["packets"] for i in (0, 1)] == [0, 0]
        assert send(lab, PORT_A, 4, 43000) == [True] * 4
        assert send(lab, PORT_B, 1, 44000) == [False]
        st = status(lab)
        rules = _rules(st, "guard")
        assert rules[0]["action"] == "Deny" and rules[0]["packets"] == 1
        assert rules[1]["action"] == "Allow" and rules[1]["packets"] == 4

        top = hepbpf(lab, "top", IFACE, "--once", "-d", "0.1").stdout
        assert re.search(r"ingress\s+\d+\s+Deny\b.*\bguard\s+0\b", top), top
        assert re.search(r"ingress\s+\d+\s+Allow\b.*\bguard\s+1\b", top), top
        text = hepbpf(lab, "status", IFACE).stdout
        assert "generation 1" in text

        # attach again with the first policy: in place too, back to generation 0
        out = hepbpf(lab, "attach", IFACE, str(first), "--node", NODE).stdout
        assert "generation 0 (no reload" in out, out
        assert send(lab, PORT_A, 1, 45000) == [False]
        # other settings (here the conntrack size) need a reload, and say so
        out = hepbpf(lab, "apply", IFACE, str(second), "--node", NODE, "--conntrack-size", "1024").stdout
        assert "replaced policy on eth1 (reload: conntrack size changed to 1024)" in out, out
        st = status(lab)
        assert st["prog_id"] != prog and st["generation"] == 0 and st["conntrack"]["size"] == 1024
        assert send(lab, PORT_A, 1, 46000) == [True]
        # and the reloaded object updates in place again
        out = hepbpf(lab, "apply", IFACE, str(first), "--node", NODE, "--conntrack-size", "1024").stdout
        assert "(no reload" in out, out
        assert send(lab, PORT_A, 1, 47000) == [False]
    finally:
        hepbpf(lab, "detach", IFACE, check=False)


def test_apply_needs_an_attached_interface(lab, tmp_path):
    pol = tmp_path / "a.yaml"
    pol.write_text(deny_then_allow("guard", PORT_A, PORT_B))
    res = hepbpf(lab, "apply", IFACE, str(pol), "--node", NODE, check=False)
    assert res.returncode == 1 and "not attached" in res.stderr


def test_apply_patches_a_large_set_from_the_record(lab, tmp_path):
    """One CIDR in or out of a 5,000-CIDR GlobalNetworkSet through `hepbpf
    apply` (a new process each time, starting from the generation record):
    the verdict for the client it names flips, in place."""
    client = lab.clients[0].addrs4[0]
    # Around the client (map entries only, no traffic), so adding it keeps
    # the bits the set's addresses share: a patch, not a new plan.
    near = ipaddress.ip_network(f"{client}/18", strict=False)
    others = [f"{a}/32" for a in itertools.islice((h for h in near.hosts() if str(h) != client), 5000)]
    plain, blocked = tmp_path / "plain.yaml", tmp_path / "blocked.yaml"
    to_a = f"destination: {{ports: [{PORT_A}]}}"
    plain.write_text(netset_policy(others, allow=to_a))
    blocked.write_text(netset_policy(others[1:] + [f"{client}/32"], allow=to_a))
    try:
        hepbpf(lab, "attach", IFACE, str(plain), "--node", NODE)
        assert send(lab, PORT_A, 2, 41000) == [True, True]
        for policy, passes, port in ((blocked, False, 42000), (plain, True, 43000), (blocked, False, 44000)):
            out = hepbpf(lab, "apply", IFACE, str(policy), "--node", NODE).stdout
            m = re.search(r"updated eth1 in [\d.]+ ms: (\d+) entries written, (\d+) deleted, generation \d "
                          r"\(no reload", out)
            assert m and int(m.group(1)) < 100, out  # a few DIR entries, not the set's
            assert send(lab, PORT_A, 2, port) == [passes] * 2
    finally:
        hepbpf(lab, "detach", IFACE, check=False)
