"""attach / status / detach as separate processes inside namespaces, the
way labs and containers use them; two namespaces with an eth1 each."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hepbpf.vm.lab import Lab
from hepbpf.vm.probe import PacketSpec, probe

from ..cases import hep
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns


def _policy(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _xdp_prog_id(lab):
    out = subprocess.run(["ip", "-n", lab.node_ns, "-j", "link", "show", "eth1"], capture_output=True,
                         text=True, check=True).stdout
    xdp = json.loads(out)[0].get("xdp")
    return xdp["prog"]["id"] if xdp and "prog" in xdp else None


def test_attach_then_status_and_detach_in_new_processes(lab, tmp_path):
    pol = _policy(tmp_path, hep())
    out = hepbpf(lab, "attach", "eth1", pol, "--node", "n1", "--mode", "generic")
    assert "generic mode" in out.stdout
    st = status(lab)
    assert st["attached"] and st["mode"] == "generic" and st["host_endpoint"] == "n1-eth1"
    assert st["prog_id"] == _xdp_prog_id(lab)
    # enforcement outlived the attach process: traffic still judged
    c = lab.clients[0]
    got = probe(lab, c, [PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=22),
                         PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=80)])
    assert got == [True, False]
    st = status(lab)
    assert st["reasons"]["failsafe"]["packets"] >= 1 and st["reasons"]["no-profile"]["packets"] >= 1
    failsafe22 = [r for r in st["rules"] if r["reason"] == "failsafe" and r["rule"] == 0]
    assert failsafe22 and failsafe22[0]["packets"] >= 1
    # replacing keeps the mode; a policy that fits the loaded object
    # updates it in place (the program stays), one that does not (here:
    # audit, a rodata setting) swaps the program
    old = st["prog_id"]
    out = hepbpf(lab, "attach", "eth1", _policy(tmp_path, hep(profiles="[projectcalico-default-allow]"), "q.yaml"),
                 "--node", "n1")
    assert "updated eth1" in out.stdout and "(no reload" in out.stdout
    st = status(lab)
    assert st["prog_id"] == old and st["mode"] == "generic"
    assert probe(lab, c, [PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=80)]) == [True]
    out = hepbpf(lab, "attach", "eth1", _policy(tmp_path, hep(profiles="[projectcalico-default-allow]"), "q.yaml"),
                 "--node", "n1", "--audit")
    assert "replaced policy" in out.stdout and "reload: settings changed: audit" in out.stdout
    st = status(lab)
    assert st["prog_id"] != old and st["mode"] == "generic"
    assert probe(lab, c, [PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=80)]) == [True]
    # detach removes everything it created
    assert "detached" in hepbpf(lab, "detach", "eth1").stdout
    assert _xdp_prog_id(lab) is None
    res = hepbpf(lab, "status", "eth1", check=False)
    assert res.returncode == 1 and "not attached" in res.stdout
    assert "was not attached" in hepbpf(lab, "detach", "eth1").stdout


def test_refuses_another_programs_interface(lab, tmp_path):
    pol = _policy(tmp_path, hep())
    hepbpf(lab, "attach", "eth1", pol, "--node", "n1", "--mode", "native")
    res = hepbpf(lab, "attach", "eth1", pol, "--node", "n1", "--mode", "generic", check=False)
    assert res.returncode == 1 and "detach first" in res.stderr
    hepbpf(lab, "detach", "eth1")


def test_invalid_policy_changes_nothing(lab, tmp_path):
    good = _policy(tmp_path, hep())
    hepbpf(lab, "attach", "eth1", good, "--node", "n1")
    before = status(lab)["prog_id"]
    bad = _policy(tmp_path, hep() + "\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
                  "metadata: {name: x}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
                  "    destination: {ports: ['80:70']}\n", "bad.yaml")
    res = hepbpf(lab, "attach", "eth1", bad, "--node", "n1", check=False)
    assert res.returncode == 1
    assert "bad.yaml:22:27: " in res.stderr and "spec.ingress[0].destination.ports[0] = '80:70': range is empty" \
        in res.stderr and "nothing was changed" in res.stderr
    assert status(lab)["prog_id"] == before == _xdp_prog_id(lab)
    res = hepbpf(lab, "attach", "eth1", good, "--node", "other-node", check=False)
    assert res.returncode == 1 and "no HostEndpoint for eth1 on node other-node" in res.stderr
    assert status(lab)["prog_id"] == before
    hepbpf(lab, "detach", "eth1")


def test_two_namespaces_with_eth1_never_collide(bpffs, tmp_path):
    pol_a = _policy(tmp_path, hep(), "a.yaml")
    pol_b = _policy(tmp_path, hep(profiles="[projectcalico-default-allow]"), "b.yaml")
    with Lab([[]]) as a, Lab([[]]) as b:
        try:
            ra = hepbpf(a, "attach", "eth1", pol_a, "--node", "n1")
            rb = hepbpf(b, "attach", "eth1", pol_b, "--node", "n1")
            pin_a = ra.stdout.split("pinned under ")[1].strip()
            pin_b = rb.stdout.split("pinned under ")[1].strip()
            assert pin_a != pin_b
            sa, sb = status(a), status(b)
            assert sa["prog_id"] != sb["prog_id"] and sa["attached"] and sb["attached"]
            pkt = [PacketSpec("tcp", "198.51.100.7", "192.0.2.1", dport=80)]
            assert probe(a, a.clients[0], pkt) == [False]
            assert probe(b, b.clients[0], pkt) == [True]
            hepbpf(a, "detach", "eth1")
            assert status(b)["attached"] and probe(b, b.clients[0], pkt) == [True]
        finally:
            hepbpf(a, "detach", "eth1", check=False)
            hepbpf(b, "detach", "eth1", check=False)


def test_hep_found_by_expected_ip_on_the_interface(lab, tmp_path):
    """A HostEndpoint with expectedIPs and no interfaceName governs the
    interface that holds one of those addresses (EPMGR resolveHostEndpoints)."""
    text = """apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: by-ip}
spec: {node: n1, expectedIPs: [192.0.2.1]}
"""
    out = hepbpf(lab, "attach", "eth1", _policy(tmp_path, text), "--node", "n1")
    assert "host endpoint by-ip" in out.stdout
    hepbpf(lab, "detach", "eth1")


def test_status_and_detach_without_run_state(lab, tmp_path):
    """The interface, not /run, is the truth: with the state file gone,
    status still reports the program and detach still removes it."""
    hepbpf(lab, "attach", "eth1", _policy(tmp_path, hep()), "--node", "n1")
    where = subprocess.run(["ip", "netns", "exec", lab.node_ns, sys.executable, "-c",
                            "from hepbpf.loader.attach import state_path; print(state_path('eth1'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    os.unlink(where)
    st = status(lab)
    assert st["attached"] and st["state"] == "missing" and st["prog_id"] == _xdp_prog_id(lab)
    assert "detached" in hepbpf(lab, "detach", "eth1").stdout
    assert _xdp_prog_id(lab) is None
