"""The namespace lab and the traffic probe themselves, without hepbpf.

A lab's shape, that every kind of packet arrives when nothing filters, that
a tiny XDP program's drops are seen as "not arrived" (XDP runs before the
AF_PACKET tap the sniffer uses; tc and nftables ingress would not be), real
TCP connections, and that namespaces never outlive their lab.

Marked ``netns``: tests/conftest.py skips them with the reason when not
root (and fails them under CI=true).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from hepbpf.vm.lab import Lab, run
from hepbpf.vm.probe import PacketSpec, listen, probe, tcp_connect

pytestmark = pytest.mark.netns

EXTRA4, EXTRA6 = "198.51.100.7", "2001:db8::7"

# Drops UDP, and TCP to port 9, over IPv4 and IPv6 (no extension headers);
# passes everything else.
XDP_SRC = r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

static __always_inline int judge(__u8 proto, void *l4, void *end)
{
    struct tcphdr *tcp = l4;

    if (proto == IPPROTO_UDP)
        return XDP_DROP;
    if (proto == IPPROTO_TCP && (void *)(tcp + 1) <= end && tcp->dest == bpf_htons(9))
        return XDP_DROP;
    return XDP_PASS;
}

SEC("xdp")
int drop_udp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return XDP_PASS;
        return judge(ip->protocol, (void *)ip + ip->ihl * 4, end);
    }
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return XDP_PASS;
        return judge(ip6->nexthdr, ip6 + 1, end);
    }
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""


def _netns() -> set[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return {n["name"] for n in json.loads(out)} if out else set()


@pytest.fixture(scope="module")
def plain_lab():
    with Lab([[EXTRA4, EXTRA6], []]) as lab:
        yield lab


@pytest.fixture(scope="module")
def xdp_obj(tmp_path_factory):
    if shutil.which("clang") is None:
        pytest.skip("needs clang to build the test XDP program")
    d = tmp_path_factory.mktemp("xdp")
    (d / "drop_udp.c").write_text(XDP_SRC)
    # asm/types.h lives under the multiarch include directory on Debian.
    incs = [f"-I{p}" for p in glob.glob("/usr/include/*-linux-gnu")]
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", *incs, "-c", str(d / "drop_udp.c"),
                    "-o", str(d / "drop_udp.o")], check=True, capture_output=True, timeout=60)
    return str(d / "drop_udp.o")


class _Xdp:
    """Generic-mode XDP on the node's eth1 for the ``with`` block."""

    def __init__(self, lab: Lab, obj: str):
        self.lab, self.obj = lab, obj

    def __enter__(self):
        run(["ip", "-n", self.lab.node_ns, "link", "set", "dev", "eth1", "xdpgeneric", "obj", self.obj,
             "sec", "xdp"])
        return self

    def __exit__(self, *exc):
        run(["ip", "-n", self.lab.node_ns, "link", "set", "dev", "eth1", "xdpgeneric", "off"], check=False)


def _mix(src4: str, src6: str) -> list[PacketSpec]:
    """TCP, UDP, ICMP and GRE (47) over IPv4 and IPv6, to the node."""
    return [PacketSpec("tcp", src4, "192.0.2.1", dport=22),
            PacketSpec("udp", src4, "192.0.2.1", 5353, 53),
            PacketSpec("icmp", src4, "192.0.2.1", icmp_type=8),
            PacketSpec(47, src4, "192.0.2.1"),
            PacketSpec("tcp", src6, "2001:db8::1", 40001, 443, tcp_flags="PA"),
            PacketSpec("udp", src6, "2001:db8::1", dport=123),
            PacketSpec("icmp6", src6, "2001:db8::1", icmp_type=128, icmp_code=5),
            PacketSpec(47, src6, "2001:db8::1")]


# --- the lab --------------------------------------------------------------------------

def test_lab_shape(plain_lab):
    lab = plain_lab
    c1, c2 = lab.clients
    assert lab.prefix.startswith("hl") and len(lab.prefix) == 6
    assert lab.namespaces == [lab.sw_ns, lab.node_ns, c1.ns, c2.ns]
    assert set(lab.namespaces) <= _netns()
    assert (c1.ns, c2.ns) == (f"{lab.prefix}-c1", f"{lab.prefix}-c2")
    assert lab.node_iface == c1.iface == "eth1"
    assert (c1.addrs4, c1.addrs6) == (["192.0.2.10", EXTRA4], ["2001:db8::10", EXTRA6])
    assert (c2.addrs4, c2.addrs6) == (["192.0.2.20"], ["2001:db8::20"])
    assert len({lab.node_mac, c1.mac, c2.mac}) == 3

    link = json.loads(run(["ip", "-n", lab.node_ns, "-j", "addr", "show", "dev", "eth1"]).stdout)[0]
    assert link["ifindex"] == lab.node_ifindex and link["address"] == lab.node_mac
    assert link["operstate"] == "UP"
    addrs = {a["local"]: a for a in link["addr_info"]}
    assert {"192.0.2.1", "2001:db8::1"} <= set(addrs)
    assert not any(a.get("tentative") or a.get("dadfailed") for a in addrs.values())

    # Every lab address has a permanent neighbour entry on every other member.
    for ns, others in ((lab.node_ns, c1.addrs + c2.addrs),
                       (c2.ns, [lab.node_addr4, lab.node_addr6] + c1.addrs)):
        neigh = json.loads(run(["ip", "-n", ns, "-j", "neigh", "show", "dev", "eth1"]).stdout)
        perm = {n["dst"] for n in neigh if "PERMANENT" in n.get("state", [])}
        assert set(others) <= perm, (ns, set(others) - perm)
    routes = run(["ip", "-n", lab.node_ns, "route", "get", EXTRA4]).stdout
    assert "via 192.0.2.10" in routes


def test_node_hears_nothing_unsolicited():
    """Right after the build (when the members join their multicast groups),
    the node's eth1 receives nothing: no ARP, ND, RS, MLD or IGMP."""
    with Lab(clients=2) as lab:
        sniff = subprocess.Popen(["ip", "netns", "exec", lab.node_ns, sys.executable, "-m", "hepbpf.vm.probe",
                                  "sniff", "--iface", "eth1", "--nonce", "none", "--count", "1",
                                  "--seconds", "1.5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            sniff.wait(timeout=15)
            ready, result = sniff.stdout.read().splitlines()
        finally:
            sniff.kill()
            sniff.wait()
            sniff.stdin.close()
            sniff.stdout.close()
    assert ready == "ready" and json.loads(result)["frames"] == 0


def test_exec_runs_inside_a_lab_namespace_only(plain_lab):
    out = plain_lab.exec(plain_lab.node_ns, ["cat", "/sys/class/net/eth1/ifindex"]).stdout
    assert int(out) == plain_lab.node_ifindex
    with pytest.raises(ValueError):
        plain_lab.exec("not-a-lab-namespace", ["true"])


# --- the probe ------------------------------------------------------------------------

def test_every_protocol_arrives_when_nothing_filters(plain_lab):
    c1, c2 = plain_lab.clients
    specs = _mix("192.0.2.10", "2001:db8::10") + _mix(EXTRA4, EXTRA6)
    # Malformed frames: a truncated IPv4 header, an IPv6 header whose payload
    # length lies, a frame of another ethertype.
    specs += [PacketSpec.from_raw(bytes.fromhex("4500001c")),
              PacketSpec.from_raw(bytes.fromhex("6000000005dc1140") + bytes(32)),
              PacketSpec.from_raw(bytes(20), ethertype=0x88B5)]
    assert probe(plain_lab, c1, specs) == [True] * len(specs)
    assert probe(plain_lab, c2, _mix("192.0.2.20", "2001:db8::20")) == [True] * 8


def test_xdp_drops_are_reported_as_not_arrived(plain_lab, xdp_obj):
    c1 = plain_lab.clients[0]
    specs = _mix(EXTRA4, EXTRA6) + [PacketSpec("tcp", EXTRA4, "192.0.2.1", dport=9),
                                    PacketSpec("tcp", EXTRA6, "2001:db8::1", dport=9)]
    with _Xdp(plain_lab, xdp_obj):
        t = time.monotonic()
        got = probe(plain_lab, c1, specs)
        took = time.monotonic() - t
    assert got == [True, False, True, True, True, False, True, True, False, False]
    assert took < 5
    # Detached: the same packets all arrive again.
    assert probe(plain_lab, c1, specs) == [True] * len(specs)


def test_empty_probe_and_spec_validation(plain_lab):
    assert probe(plain_lab, plain_lab.clients[0], []) == []
    with pytest.raises(ValueError, match="documentation"):
        PacketSpec("tcp", "10.0.0.1", "192.0.2.1", dport=80)
    with pytest.raises(ValueError, match="mixed"):
        PacketSpec("udp", "192.0.2.10", "2001:db8::1")
    with pytest.raises(ValueError, match="icmp6"):
        PacketSpec("icmp6", "192.0.2.10", "192.0.2.1")
    with pytest.raises(ValueError):
        PacketSpec("gre", "192.0.2.10", "192.0.2.1")
    assert PacketSpec("icmp", "2001:db8::10", "2001:db8::1").number == 58


# --- real TCP -------------------------------------------------------------------------

def test_tcp_connect_and_listen(plain_lab, xdp_obj):
    c1, c2 = plain_lab.clients
    with listen(plain_lab, 8080) as srv, listen(plain_lab, 9, lifetime=20):
        assert tcp_connect(plain_lab, c1, "192.0.2.1", 8080)
        assert tcp_connect(plain_lab, c1, "2001:db8::1", 8080)
        assert tcp_connect(plain_lab, c1, "192.0.2.1", 8080, src=EXTRA4)
        assert tcp_connect(plain_lab, c1, "2001:db8::1", 8080, src=EXTRA6)
        assert tcp_connect(plain_lab, c2, "192.0.2.1", 8080)
        assert srv.wait_peers(5) == ["192.0.2.10", "2001:db8::10", EXTRA4, EXTRA6, "192.0.2.20"]
        assert tcp_connect(plain_lab, c1, "192.0.2.1", 9, timeout=0.5)
        # A closed port is refused at once; an address the client lacks is unusable.
        t = time.monotonic()
        assert not tcp_connect(plain_lab, c1, "192.0.2.1", 8081)
        assert time.monotonic() - t < 2
        assert not tcp_connect(plain_lab, c2, "192.0.2.1", 8080, src=EXTRA4)
        # SYNs to port 9 dropped by XDP: the connection times out.
        with _Xdp(plain_lab, xdp_obj):
            assert not tcp_connect(plain_lab, c1, "192.0.2.1", 9, timeout=0.5)
            assert not tcp_connect(plain_lab, c1, "2001:db8::1", 9, timeout=0.5)
            assert tcp_connect(plain_lab, c1, "192.0.2.1", 8080)
        pid = srv.pid
    # The listener was killed with the block.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not tcp_connect(plain_lab, c1, "192.0.2.1", 8080)


# --- lifetime -------------------------------------------------------------------------

def test_namespaces_go_even_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with Lab(clients=2) as lab:
            names = lab.namespaces
            assert len(names) == 4 and set(names) <= _netns()
            raise RuntimeError("boom")
    assert not set(names) & _netns()
    lab.close()  # idempotent
    assert lab.namespaces == []


def test_a_failed_build_deletes_only_what_it_made():
    probe_lab = Lab(clients=1)  # only to get a fresh, unused prefix
    prefix = probe_lab.prefix
    probe_lab.close()
    squatter = f"{prefix}-c2"
    run(["ip", "netns", "add", squatter])
    try:
        with pytest.raises(subprocess.CalledProcessError):
            Lab(clients=2, prefix=prefix)
        left = {n for n in _netns() if n.startswith(prefix + "-")}
        assert left == {squatter}  # the lab never adopts a namespace it did not create
    finally:
        run(["ip", "netns", "del", squatter], check=False)


def test_two_labs_coexist(xdp_obj):
    with Lab(clients=1) as a, Lab(clients=1) as b:
        assert a.prefix != b.prefix and not set(a.namespaces) & set(b.namespaces)
        assert a.node_iface == b.node_iface == "eth1"
        udp = [PacketSpec("udp", "192.0.2.10", "192.0.2.1", dport=53),
               PacketSpec("tcp", "192.0.2.10", "192.0.2.1", dport=22)]
        with _Xdp(a, xdp_obj):
            assert probe(a, a.clients[0], udp) == [False, True]
            assert probe(b, b.clients[0], udp) == [True, True]
        b_names = b.namespaces
        a.close()
        assert set(b_names) <= _netns()
        assert probe(b, b.clients[0], udp) == [True, True]


def test_destroy_by_prefix():
    lab = Lab(clients=2)
    try:
        names = set(lab.namespaces)
        assert set(Lab.destroy_by_prefix(lab.prefix)) == names
        assert not names & _netns()
    finally:
        lab.close()  # nothing left to delete: no error
    for bad in ("hl", "hl123", "hlxyzw", "hl1234-node", "", "*"):
        with pytest.raises(ValueError):
            Lab.destroy_by_prefix(bad)
