"""The lab's backend and NodePort DNAT, and the echo helpers, without hepbpf.

What the stateful scenarios rely on, shown with nothing attached: a client's
TCP and UDP to a NodePort reach the backend's echo through the DNAT (the
backend sees the client's own address: no SNAT) and the data comes back
through the node's conntrack; a client reaches the backend directly
(forwarded through eth1); the node's own outbound connections work; and the
helpers tell "nothing came back" (None) from "refused" (raises).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from hepbpf.vm.lab import (BACKEND4, BACKEND6, BACKEND_TCP_PORT, BACKEND_UDP_PORT, NAT_TABLE, NODE4, NODE6,
                           NODEPORT_TCP, NODEPORT_UDP, Lab, run)
from hepbpf.vm.probe import echo, echo_server, echo_session

pytestmark = pytest.mark.netns

EXTRA4, EXTRA6 = "198.51.100.7", "2001:db8::7"
BIG = bytes(range(256)) * 40  # 10 KiB: several segments each way


@pytest.fixture(scope="module")
def blab():
    with Lab([[EXTRA4, EXTRA6], []], backend=True) as lab:
        yield lab


@pytest.fixture
def backend_echo(blab):
    with echo_server(blab, blab.backend, tcp=BACKEND_TCP_PORT, udp=BACKEND_UDP_PORT, lifetime=30) as srv:
        yield srv


def test_backend_shape(blab):
    be = blab.backend
    assert blab.namespaces[-1] == be.ns == f"{blab.prefix}-be"
    assert (be.addrs4, be.addrs6) == ([BACKEND4], [BACKEND6])
    link = json.loads(run(["ip", "-n", be.ns, "-j", "addr", "show", "dev", "eth1"]).stdout)[0]
    assert link["address"] == be.mac and link["operstate"] == "UP"
    assert not any(a.get("tentative") or a.get("dadfailed") for a in link["addr_info"])
    eth2 = json.loads(run(["ip", "-n", blab.node_ns, "-j", "addr", "show", "dev", "eth2"]).stdout)[0]
    assert {a["local"] for a in eth2["addr_info"]} >= {"203.0.113.1", "2001:db8:b::1"}
    neigh = json.loads(run(["ip", "-n", blab.node_ns, "-j", "neigh", "show", "dev", "eth2"]).stdout)
    assert {n["dst"] for n in neigh if "PERMANENT" in n.get("state", [])} >= {BACKEND4, BACKEND6}
    fwd = run(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"], ns=blab.node_ns).stdout
    assert fwd.split() == ["1", "1"]
    assert "via 192.0.2.1" in run(["ip", "route", "get", BACKEND4], ns=blab.clients[1].ns).stdout
    assert NAT_TABLE in run(["nft", "list", "tables"], ns=blab.node_ns).stdout


def test_default_lab_has_no_backend():
    with Lab(clients=1) as lab:
        assert lab.backend is None and len(lab.namespaces) == 3
        assert NAT_TABLE not in run(["nft", "list", "tables"], ns=lab.node_ns).stdout


def test_extra_addresses_stay_off_the_backend_link():
    for bad in ("203.0.113.9", "2001:db8:b::9"):
        with pytest.raises(ValueError, match="backend"):
            Lab([[bad]], backend=True)
    with pytest.raises(ValueError, match="already used"):
        Lab([["192.0.2.1"]], backend=True)


def test_nodeport_tcp_reaches_the_backend_both_families(blab, backend_echo):
    c1, c2 = blab.clients
    assert echo(blab, c2, NODE4, NODEPORT_TCP, BIG) == BIG
    assert echo(blab, c2, NODE6, NODEPORT_TCP, BIG) == BIG
    assert echo(blab, c1, NODE4, NODEPORT_TCP, b"from-extra-4", src=EXTRA4) == b"from-extra-4"
    assert echo(blab, c1, NODE6, NODEPORT_TCP, b"from-extra-6", src=EXTRA6) == b"from-extra-6"
    # The backend saw the clients themselves (DNAT only, no SNAT).
    assert backend_echo.wait_peers(4) == [("tcp", "192.0.2.20"), ("tcp", "2001:db8::20"),
                                          ("tcp", EXTRA4), ("tcp", EXTRA6)]


def test_nodeport_udp_reaches_the_backend_both_families(blab, backend_echo):
    c1, c2 = blab.clients
    # A connected UDP socket takes only replies from node:30053: the node's
    # conntrack reversed the DNAT on the way back.
    assert echo(blab, c2, NODE4, NODEPORT_UDP, b"udp-4", proto="udp") == b"udp-4"
    assert echo(blab, c2, NODE6, NODEPORT_UDP, b"udp-6", proto="udp") == b"udp-6"
    assert echo(blab, c1, NODE4, NODEPORT_UDP, b"udp-x4", proto="udp", src=EXTRA4) == b"udp-x4"
    assert echo(blab, c1, NODE6, NODEPORT_UDP, b"udp-x6", proto="udp", src=EXTRA6) == b"udp-x6"
    assert backend_echo.wait_peers(4) == [("udp", "192.0.2.20"), ("udp", "2001:db8::20"),
                                          ("udp", EXTRA4), ("udp", EXTRA6)]


def test_client_reaches_the_backend_directly(blab, backend_echo):
    """Forwarded traffic: to the backend's own address, through eth1 and eth2."""
    c1, c2 = blab.clients
    for dst in (BACKEND4, BACKEND6):
        assert echo(blab, c2, dst, BACKEND_TCP_PORT, BIG) == BIG
        assert echo(blab, c2, dst, BACKEND_UDP_PORT, b"direct", proto="udp") == b"direct"
    assert echo(blab, c1, BACKEND4, BACKEND_TCP_PORT, b"x4", src=EXTRA4) == b"x4"
    assert echo(blab, c1, BACKEND6, BACKEND_UDP_PORT, b"x6", proto="udp", src=EXTRA6) == b"x6"


def test_only_the_nodeports_are_translated(blab, backend_echo):
    c2 = blab.clients[1]
    # Nothing listens on the node's own 8080 or 5353: the DNAT is only for
    # the NodePorts, and the node answers the rest itself.
    with pytest.raises(ConnectionRefusedError):
        echo(blab, c2, NODE4, BACKEND_TCP_PORT, b"x")
    with pytest.raises(ConnectionRefusedError):
        echo(blab, c2, NODE6, BACKEND_UDP_PORT, b"x", proto="udp")
    assert backend_echo.peers == []


def test_node_connects_out_to_a_client(blab):
    c2 = blab.clients[1]
    with echo_server(blab, c2, tcp=7000, udp=7001, lifetime=30) as srv:
        for dst in c2.addrs:
            assert echo(blab, blab.node_ns, dst, 7000, BIG) == BIG
            assert echo(blab, blab.node_ns, dst, 7001, b"node-udp", proto="udp") == b"node-udp"
        assert srv.wait_peers(4) == [("tcp", NODE4), ("udp", NODE4), ("tcp", NODE6), ("udp", NODE6)]
    # and the backend reaches a client through the node (its default route)
    with echo_server(blab, c2, tcp=7000, lifetime=30):
        assert echo(blab, blab.backend, "192.0.2.20", 7000, b"be-out") == b"be-out"
        assert echo(blab, blab.backend, "2001:db8::20", 7000, b"be-out6") == b"be-out6"


def test_session_keeps_one_connection(blab, backend_echo):
    with echo_session(blab, blab.clients[1], NODE4, NODEPORT_TCP) as s:
        assert s.connected
        assert s.send(b"one") == b"one"
        assert s.send(BIG) == BIG
    assert backend_echo.wait_peers(1) == [("tcp", "192.0.2.20")]
    time.sleep(0.1)
    assert len(backend_echo.peers) == 1  # both payloads on the same connection


def test_silence_is_none_and_refusal_raises(blab):
    c2 = blab.clients[1]
    # No server behind the NodePort: the backend refuses, through the DNAT.
    with pytest.raises(ConnectionRefusedError):
        echo(blab, c2, NODE4, NODEPORT_TCP, b"x")
    with pytest.raises(ConnectionRefusedError):
        echo(blab, c2, NODE6, NODEPORT_UDP, b"x", proto="udp")
    # An address nobody has (no neighbour answers): nothing comes back, in time.
    t = time.monotonic()
    assert echo(blab, c2, "192.0.2.99", 80, b"x", timeout=0.5) is None
    assert echo(blab, c2, "192.0.2.99", 80, b"x", proto="udp", timeout=0.5) is None
    assert time.monotonic() - t < 3
    with echo_session(blab, c2, "192.0.2.99", 80, timeout=0.5) as s:
        assert not s.connected
    with pytest.raises(RuntimeError):  # not an address of c2
        echo(blab, c2, NODE4, NODEPORT_TCP, b"x", src=EXTRA4)
    with pytest.raises(ValueError):
        echo(blab, c2, "10.0.0.1", 80, b"x")
    with pytest.raises(ValueError):
        echo(blab, "not-a-lab-namespace", NODE4, 80, b"x")


def test_echo_server_is_killed_with_its_block(blab):
    with echo_server(blab, blab.backend, tcp=BACKEND_TCP_PORT, lifetime=30) as srv:
        assert echo(blab, blab.clients[1], NODE4, NODEPORT_TCP, b"x") == b"x"
        pid = srv.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_backend_lab_goes_entirely():
    with Lab(clients=1, backend=True) as lab:
        names = lab.namespaces
        assert names[-1].endswith("-be")
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    assert not set(names) & ({n["name"] for n in json.loads(out)} if out else set())
