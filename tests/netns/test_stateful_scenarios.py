"""Issue 4's stateful scenarios as real traffic, hepbpf attached by the CLI.

The lab has the backend behind the node and kube-proxy's NodePort DNAT
(``Lab(..., backend=True)``); every scenario sends real TCP and UDP with
data both ways, in native and in generic mode, and judges by what came back
(``echo()`` is None when nothing did) and, where that alone could mislead,
by what the far end saw. The semantics are Calico's:

* a host endpoint with no policy and no profile denies everything, both
  ways, except the failsafe ports;
* normal (tracked) policy judges the first packet of a flow: replies and
  later packets of an allowed flow pass by conntrack;
* preDNAT policy (ingress only) runs before normal policy and sees the
  NodePort, not the backend; an Allow there skips normal policy, and no
  decision falls through (no default deny);
* doNotTrack policy judges every packet, both ways, before conntrack; an
  Allow there creates no conntrack state, so replies need their own
  (egress) doNotTrack rule; no decision falls through.

Ports here are outside the failsafe lists on purpose.
"""

from __future__ import annotations

import itertools

import pytest

from hepbpf.vm.lab import (BACKEND4, BACKEND_TCP_PORT, BACKEND_UDP_PORT, NODE4, NODE6, NODEPORT_TCP,
                           NODEPORT_UDP, Lab)
from hepbpf.vm.probe import PacketSpec, echo, echo_server, echo_session, probe

from ..cases import NODE, gnp, hep
from .conftest import hepbpf, status

pytestmark = pytest.mark.netns

EXTRA4, EXTRA6 = "198.51.100.7", "2001:db8::7"  # client 1's extra sources
C2_4, C2_6 = "192.0.2.20", "2001:db8::20"  # client 2: just "an outside client"
DATA = bytes(range(256)) * 12  # 3 KiB: several TCP segments each way, after the handshake
DGRAM = b"hepbpf-udp-echo"  # well below the MTU: fragments are dropped by design
NO = 0.5  # seconds to wait for something that must not come back

HEP = hep(labels='ibm.role: "worker_public"')

# Seed 003 (IBM Cloud), as restored in tests/seeds/003_ibm_nodeports.yaml.
DENY_NODEPORTS = gnp("deny-nodeports", """
applyOnForward: true
preDNAT: true
ingress:
- action: Deny
  destination:
    ports:
    - 30000:32767
  protocol: TCP
  source: {}
- action: Deny
  destination:
    ports:
    - 30000:32767
  protocol: UDP
  source: {}
selector: ibm.role=='worker_public'
order: 1100
types:
- Ingress
""")

# The seed's whitelist, pointed at this lab's NodePorts (one family per rule,
# as Calico requires).
WHITELIST = gnp("whitelist", f"""
applyOnForward: true
preDNAT: true
ingress:
- action: Allow
  protocol: TCP
  source: {{nets: [{EXTRA4}/32]}}
  destination: {{ports: [{NODEPORT_TCP}]}}
- action: Allow
  protocol: TCP
  source: {{nets: [{EXTRA6}/128]}}
  destination: {{ports: [{NODEPORT_TCP}]}}
- action: Allow
  protocol: UDP
  source: {{nets: [{EXTRA4}/32]}}
  destination: {{ports: [{NODEPORT_UDP}]}}
- action: Allow
  protocol: UDP
  source: {{nets: [{EXTRA6}/128]}}
  destination: {{ports: [{NODEPORT_UDP}]}}
selector: ibm.role=='worker_public'
order: 500
types:
- Ingress
""")

# Normal policy letting everything in and out (forwarded traffic too).
ALLOW_ALL = gnp("allow-all", """
selector: ibm.role=='worker_public'
order: 2000
applyOnForward: true
types: [Ingress, Egress]
ingress:
- action: Allow
egress:
- action: Allow
""")


@pytest.fixture(scope="module")
def slab(bpffs):
    with Lab([[EXTRA4, EXTRA6], []], backend=True) as lab:
        try:
            yield lab
        finally:
            hepbpf(lab, "detach", "eth1", check=False)


# Native XDP with a tcx egress link, generic XDP with a clsact egress filter:
# both XDP modes and both egress mechanisms carry every scenario.
@pytest.fixture(params=[("native", "tcx"), ("generic", "clsact")], ids=lambda p: f"{p[0]}-{p[1]}")
def attach(slab, request, tmp_path):
    """``attach(*policies)``: the HEP plus these documents, attached (the
    first time) or atomically replaced (later) in this test's modes;
    detached when the test ends, whatever happened."""
    mode, egress = request.param
    n = itertools.count()

    def attach_(*docs: str) -> None:
        path = tmp_path / f"policy{next(n)}.yaml"
        path.write_text(HEP + "".join(docs))
        hepbpf(slab, "attach", "eth1", str(path), "--node", NODE, "--mode", mode, "--egress", egress)
        st = status(slab)
        assert st["mode"] == mode and st["tc_mechanism"] == egress

    hepbpf(slab, "detach", "eth1", check=False)
    try:
        yield attach_
    finally:
        hepbpf(slab, "detach", "eth1", check=False)


# --- a. NodePorts closed by preDNAT policy, but for a whitelisted source --------------

def test_a_prednat_deny_nodeports_with_whitelist(slab, attach):
    c1, c2 = slab.clients
    attach(DENY_NODEPORTS, WHITELIST, ALLOW_ALL)
    with echo_server(slab, slab.backend, tcp=BACKEND_TCP_PORT, udp=BACKEND_UDP_PORT, lifetime=30) as be:
        # The outside client: neither NodePort, either family.
        for node in (NODE4, NODE6):
            assert echo(slab, c2, node, NODEPORT_TCP, DATA, timeout=NO) is None, node
            assert echo(slab, c2, node, NODEPORT_UDP, DGRAM, proto="udp", timeout=NO) is None, node
        assert be.peers == []
        # ... while the same client reaches the backend's own address
        # (forwarded, not a NodePort): the deny is about the NodePorts.
        assert echo(slab, c2, BACKEND4, BACKEND_TCP_PORT, DATA) == DATA
        # The whitelisted source gets through the DNAT to the backend, and back.
        for src, node in ((EXTRA4, NODE4), (EXTRA6, NODE6)):
            assert echo(slab, c1, node, NODEPORT_TCP, DATA, src=src) == DATA, src
            assert echo(slab, c1, node, NODEPORT_UDP, DGRAM, proto="udp", src=src) == DGRAM, src
        assert be.wait_peers(5) == [("tcp", C2_4), ("tcp", EXTRA4), ("udp", EXTRA4), ("tcp", EXTRA6),
                                    ("udp", EXTRA6)]
        # Another source on the same client is not whitelisted.
        assert echo(slab, c1, NODE4, NODEPORT_TCP, DATA, src="192.0.2.10", timeout=NO) is None


# --- b. the node's own outbound connections get their replies -------------------------

def test_b_outbound_replies_pass_by_conntrack(slab, attach):
    c2 = slab.clients[1]
    attach(gnp("node-out", """
selector: ibm.role=='worker_public'
types: [Egress]
egress:
- action: Allow
  protocol: TCP
  destination: {ports: [7000]}
- action: Allow
  protocol: UDP
  destination: {ports: [7001]}
"""))
    with echo_server(slab, c2, tcp=7000, udp=7001, lifetime=30), \
            echo_server(slab, c2, tcp=7002, udp=7003, lifetime=30) as other:
        for dst in (C2_4, C2_6):
            # No ingress rule at all: the SYN-ACK, the echoed data and the
            # UDP reply come in as replies of allowed outbound flows.
            assert echo(slab, slab.node_ns, dst, 7000, DATA) == DATA, dst
            assert echo(slab, slab.node_ns, dst, 7001, DGRAM, proto="udp") == DGRAM, dst
            # Other ports stay closed outbound (egress default deny).
            assert echo(slab, slab.node_ns, dst, 7002, DATA, timeout=NO) is None, dst
            assert echo(slab, slab.node_ns, dst, 7003, DGRAM, proto="udp", timeout=NO) is None, dst
        assert other.peers == []  # not even the datagrams left the node
    # Nothing gets in that the node did not start (ingress default deny).
    with echo_server(slab, slab.node_ns, tcp=7000, udp=7001, lifetime=30) as node_srv:
        assert echo(slab, c2, NODE4, 7000, DATA, timeout=NO) is None
        assert echo(slab, c2, NODE4, 7001, DGRAM, proto="udp", timeout=NO) is None
        assert node_srv.peers == []


# --- c. an allowed inbound connection's replies, with egress default deny --------------

def test_c_inbound_replies_pass_by_conntrack(slab, attach):
    c2 = slab.clients[1]
    attach(gnp("node-in", """
selector: ibm.role=='worker_public'
types: [Ingress]
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [7080]}
- action: Allow
  protocol: UDP
  destination: {ports: [7081]}
"""))
    with echo_server(slab, slab.node_ns, tcp=7080, udp=7081, lifetime=30) as srv:
        for node in (NODE4, NODE6):
            assert echo(slab, c2, node, 7080, DATA) == DATA, node
            assert echo(slab, c2, node, 7081, DGRAM, proto="udp") == DGRAM, node
        assert srv.wait_peers(4) == [("tcp", C2_4), ("udp", C2_4), ("tcp", C2_6), ("udp", C2_6)]
    # Egress really is default deny: a datagram the node starts never leaves.
    with echo_server(slab, c2, udp=7001, lifetime=30) as out:
        for dst in (C2_4, C2_6):
            assert echo(slab, slab.node_ns, dst, 7001, DGRAM, proto="udp", timeout=NO) is None, dst
        assert out.peers == []


# --- d. a doNotTrack deny list, before conntrack --------------------------------------

DNT_DENY = gnp("untracked-deny", f"""
selector: ibm.role=='worker_public'
order: 10
doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress:
- action: Deny
  source: {{nets: [{EXTRA4}/32]}}
- action: Deny
  source: {{nets: [{EXTRA6}/128]}}
""")


def test_d_untracked_deny_cuts_a_source(slab, attach):
    c1, c2 = slab.clients
    attach(ALLOW_ALL)
    with echo_server(slab, slab.node_ns, tcp=7080, udp=7081, lifetime=30):
        with echo_session(slab, c1, NODE4, 7080, src=EXTRA4) as s4, \
                echo_session(slab, c1, NODE6, 7080, src=EXTRA6) as s6:
            assert s4.connected and s6.connected
            assert s4.send(DATA) == DATA and s6.send(DATA) == DATA
            # The deny list is added: an atomic replace of the whole policy.
            attach(DNT_DENY, ALLOW_ALL)
            # Established connections from the listed source are cut: their
            # next packets are judged again, before conntrack, and dropped.
            assert s4.send(b"after", timeout=NO) is None
            assert s6.send(b"after", timeout=NO) is None
        for src, node in ((EXTRA4, NODE4), (EXTRA6, NODE6)):
            assert echo(slab, c1, node, 7080, DATA, src=src, timeout=NO) is None, src
            assert echo(slab, c1, node, 7081, DGRAM, proto="udp", src=src, timeout=NO) is None, src
        # Everyone else, the same client's primary addresses included, gets through.
        for c, node in ((c2, NODE4), (c2, NODE6), (c1, NODE4), (c1, NODE6)):
            assert echo(slab, c, node, 7080, DATA) == DATA, (c.name, node)
            assert echo(slab, c, node, 7081, DGRAM, proto="udp") == DGRAM, (c.name, node)


# --- e. replies to a doNotTrack-allowed flow need their own untracked rule ------------

DNT_IN = gnp("untracked-in", """
selector: ibm.role=='worker_public'
order: 10
doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [9000]}
- action: Allow
  protocol: UDP
  destination: {ports: [9000]}
""")

DNT_OUT = gnp("untracked-out", """
selector: ibm.role=='worker_public'
order: 10
doNotTrack: true
applyOnForward: true
types: [Egress]
egress:
- action: Allow
  protocol: TCP
  source: {ports: [9000]}
- action: Allow
  protocol: UDP
  source: {ports: [9000]}
""")


def test_e_untracked_allow_needs_untracked_replies(slab, attach):
    c2 = slab.clients[1]
    attach(DNT_IN)
    with echo_server(slab, slab.node_ns, tcp=9000, udp=9000, lifetime=30) as srv:
        # In: allowed; out: the replies meet egress default deny.
        for node in (NODE4, NODE6):
            assert echo(slab, c2, node, 9000, DATA, timeout=NO) is None, node
            assert echo(slab, c2, node, 9000, DGRAM, proto="udp", timeout=NO) is None, node
        # The way in was open: the datagrams reached the server, and SYNs
        # get past XDP. (A SYN-ACK dropped by tc leaves no half-open
        # connection to look at: the kernel frees the request when its
        # transmission fails.)
        assert srv.wait_peers(2) == [("udp", C2_4), ("udp", C2_6)]
        assert probe(slab, c2, [PacketSpec("tcp", C2_4, NODE4, dport=9000),
                                PacketSpec("tcp", C2_6, NODE6, dport=9000)]) == [True, True]
        # With an untracked egress rule for the replies, both complete.
        attach(DNT_IN, DNT_OUT)
        for node in (NODE4, NODE6):
            assert echo(slab, c2, node, 9000, DATA) == DATA, node
            assert echo(slab, c2, node, 9000, DGRAM, proto="udp") == DGRAM, node
