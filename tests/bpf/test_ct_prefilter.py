"""The conntrack pre-filter (hep_ctseen_v1, bpf/include/ct.bpf.h) in the real
object: flows made by either program or seeded by the loader are still
found, a bucket stamped long ago makes the datapath skip the table, and the
loader hashes keys to the buckets the kernel uses.

The policy lets a server on UDP 5353 and TCP 8080 be reached, and the host
open TCP to 443 and ping; replies pass only by conntrack.
"""

import ipaddress
import sys

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from hepbpf.compiler import compile_policy
from hepbpf.compiler.packet import Packet
from hepbpf.loader import abi, conntrack, libbpf
from hepbpf.loader.datapath import load_image
from hepbpf.loader.mapnames import CT, CT_STATS, CTSEEN

from ..cases import gnp, hep

pytestmark = pytest.mark.bpf

NODE4, PEER4 = "192.0.2.1", "198.51.100.7"
NODE6, PEER6 = "2001:db8::1", "2001:db8::7"
IN, OUT = 0, 1
U32 = 0xFFFFFFFF

POLICY = hep() + gnp("server", """
selector: all()
types: [Ingress, Egress]
ingress:
- action: Allow
  protocol: UDP
  destination: {ports: [5353]}
- action: Allow
  protocol: TCP
  destination: {ports: [8080]}
egress:
- action: Allow
  protocol: TCP
  destination: {ports: [443]}
- action: Allow
  protocol: ICMP
  icmp: {type: 8}
- action: Allow
  protocol: ICMPv6
  icmp: {type: 128}
""")


def frame(l3) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / l3)


def udp(src, sport, dst, dport):
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return frame(ip / UDP(sport=sport, dport=dport))


def tcp(src, sport, dst, dport, flags):
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return frame(ip / TCP(sport=sport, dport=dport, flags=flags))


def packet(proto, src, sport, dst, dport) -> Packet:
    return Packet(proto, ipaddress.ip_address(src), ipaddress.ip_address(dst), sport, dport)


def load(**kw):
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    return load_image(comp.image, trace=True, ct_size=4096, **kw)


@pytest.fixture()
def dp():
    with load() as d:
        yield d


def seen_map(dp):
    return dp.obj.map(CTSEEN)


def bucket_of(dp, pkt: Packet) -> int:
    return conntrack.seen_index(conntrack.key_for(pkt), seen_map(dp).max_entries.bit_length() - 1)


def read_bucket(dp, idx: int) -> int:
    return int.from_bytes(seen_map(dp).lookup(idx.to_bytes(4, sys.byteorder)), sys.byteorder)


def write_bucket(dp, idx: int, unit: int) -> None:
    seen_map(dp).update(idx.to_bytes(4, sys.byteorder), (unit & U32).to_bytes(4, sys.byteorder))


def now_unit() -> int:
    return (conntrack.now_ns() >> abi.const("HEP_CTSEEN_SHIFT")) & U32


def long_ago() -> int:
    """A stamp older than any timeout (the longest is an hour), whatever
    the uptime: bucket arithmetic is modulo 2**32."""
    return now_unit() - 100_000


def ctstats(dp) -> dict:
    return conntrack.stats(dp.obj.map(CT_STATS))


def test_the_map_is_a_power_of_two_of_u32_buckets(dp):
    m = seen_map(dp)
    assert m.key_size == 4 and m.value_size == 4
    assert m.max_entries & (m.max_entries - 1) == 0 and m.max_entries >= 1 << 16


@pytest.mark.parametrize("node,peer", [(NODE4, PEER4), (NODE6, PEER6)], ids=["v4", "v6"])
def test_flows_the_datapath_creates_are_found(dp, node, peer):
    """A flow opened through XDP (inbound) and one through tc (outbound):
    their replies, which policy denies, pass by conntrack."""
    assert dp.run(udp(peer, 40000, node, 5353), IN).reason == "rule-allow"
    assert dp.run(udp(node, 5353, peer, 40000), OUT).reason == "conntrack"
    assert dp.run(tcp(node, 50000, peer, 443, "S"), OUT).reason == "rule-allow"
    assert dp.run(tcp(peer, 443, node, 50000, "SA"), IN).reason == "conntrack"
    # Their buckets carry the time of their last packet.
    for pkt in (packet(17, peer, 40000, node, 5353), packet(6, node, 50000, peer, 443)):
        assert 0 <= (now_unit() - read_bucket(dp, bucket_of(dp, pkt))) & U32 <= 1


@pytest.mark.parametrize("node,peer", [(NODE4, PEER4), (NODE6, PEER6)], ids=["v4", "v6"])
def test_a_flow_the_loader_seeds_is_found(dp, node, peer):
    flow = packet(17, peer, 41000, node, 6000)  # no rule allows it either way
    back = udp(node, 6000, peer, 41000)
    assert dp.run(back, OUT).reason == "end-of-tier"
    conntrack.seed(dp.ct_map(), flow)
    assert read_bucket(dp, bucket_of(dp, flow)) == now_unit()
    assert dp.run(back, OUT).reason == "conntrack"
    assert dp.run(udp(peer, 41000, node, 6000), IN).reason == "conntrack"


def test_an_unrelated_packet_is_judged_by_policy(dp):
    conntrack.seed(dp.ct_map(), packet(17, PEER4, 41000, NODE4, 6000))
    hits = ctstats(dp)["hit"]
    assert dp.run(udp(PEER4, 41001, NODE4, 6000), IN).reason == "end-of-tier"
    assert dp.run(udp(PEER4, 41002, NODE4, 5353), IN).reason == "rule-allow"
    assert ctstats(dp)["hit"] == hits


@pytest.mark.parametrize("proto", [17, 6], ids=["udp", "tcp"])
def test_a_stale_bucket_skips_the_table(dp, proto):
    """An entry is in hep_ct_v1, but its bucket says nothing of it was seen
    for longer than any timeout: the datapath does not look, and policy
    judges the packet. A fresh stamp makes it look again."""
    flow = packet(proto, PEER4, 42000, NODE4, 6000)
    back = udp(NODE4, 6000, PEER4, 42000) if proto == 17 else tcp(NODE4, 6000, PEER4, 42000, "A")
    conntrack.seed(dp.ct_map(), flow)
    idx = bucket_of(dp, flow)
    write_bucket(dp, idx, long_ago())
    before = ctstats(dp)
    assert dp.run(back, OUT).reason == "end-of-tier"
    assert ctstats(dp) == before  # no hit, no expiry: the table was not consulted
    assert len(conntrack.entries(dp.ct_map())) == 1
    write_bucket(dp, idx, now_unit())
    assert dp.run(back, OUT).reason == "conntrack"


def test_a_stale_bucket_skips_the_related_lookup_too(dp):
    assert dp.run(udp(NODE4, 33001, PEER4, 53), OUT).reason == "failsafe"
    err = frame(IP(src=PEER4, dst=NODE4) / ICMP(type=3, code=3)
                / IPerror(src=NODE4, dst=PEER4) / UDPerror(sport=33001, dport=53))
    assert dp.run(err, IN).reason == "conntrack"
    write_bucket(dp, bucket_of(dp, packet(17, NODE4, 33001, PEER4, 53)), long_ago())
    assert dp.run(err, IN).reason == "end-of-tier"


def test_a_bucket_a_moment_ahead_is_live(dp):
    """Another CPU may stamp the next unit just before this one reads the
    clock: that bucket is young, not 2**32 units old."""
    flow = packet(17, PEER4, 42001, NODE4, 6000)
    conntrack.seed(dp.ct_map(), flow)
    write_bucket(dp, bucket_of(dp, flow), now_unit() + 1)
    assert dp.run(udp(NODE4, 6000, PEER4, 42001), OUT).reason == "conntrack"


def test_the_window_follows_the_protocols_timeouts():
    """UDP flows live 60 s idle: a UDP bucket 2 minutes old is stale, while
    a TCP one is not (an established TCP flow lives an hour)."""
    with load() as d:
        for proto, reason in ((17, "end-of-tier"), (6, "conntrack")):
            flow = packet(proto, PEER4, 42002, NODE4, 6000)
            conntrack.seed(d.ct_map(), flow)
            write_bucket(d, bucket_of(d, flow), now_unit() - 120)
            back = udp(NODE4, 6000, PEER4, 42002) if proto == 17 else tcp(NODE4, 6000, PEER4, 42002, "A")
            assert d.run(back, OUT).reason == reason, proto
    with load(ct_timeouts={"HEP_CT_UDP": 600}) as d:
        flow = packet(17, PEER4, 42002, NODE4, 6000)
        conntrack.seed(d.ct_map(), flow)
        write_bucket(d, bucket_of(d, flow), now_unit() - 120)
        assert d.run(udp(NODE4, 6000, PEER4, 42002), OUT).reason == "conntrack"


def test_creating_over_an_expired_entry_still_counts_it():
    """An allowed packet whose bucket is stale inserts without looking; an
    expired entry of its key fails that insert, and is removed and counted
    on the way to the new one."""
    with load(ct_timeouts={"HEP_CT_UDP": 0}) as d:
        q = udp(PEER4, 5001, NODE4, 5353)
        assert d.run(q, IN).reason == "rule-allow"
        write_bucket(d, bucket_of(d, packet(17, PEER4, 5001, NODE4, 5353)), long_ago())
        assert d.run(q, IN).reason == "rule-allow"
        s = ctstats(d)
        assert (s["created"], s["expired"], len(conntrack.entries(d.ct_map()))) == (2, 1, 1)
        # A stale bucket and no entry: a plain insert.
        write_bucket(d, bucket_of(d, packet(17, PEER4, 5001, NODE4, 5353)), long_ago())
        conntrack.clear(d.ct_map())
        assert d.run(q, IN).reason == "rule-allow"
        assert ctstats(d)["created"] == 3 and len(conntrack.entries(d.ct_map())) == 1


def test_the_loader_and_the_kernel_hash_keys_alike(dp):
    """Flows of every kind the datapath tracks, opened by the programs on a
    fresh object: the buckets the kernel stamped are exactly those the
    loader computes for the keys in the table."""
    ported = []
    for i in range(40):
        p4, p6 = f"198.51.100.{10 + i}", f"2001:db8::{10 + i:x}"
        for node, peer in ((NODE4, p4), (NODE6, p6)):
            assert dp.run(udp(peer, 30000 + i, node, 5353), IN).verdict == "allow"
            assert dp.run(tcp(peer, 31000 + i, node, 8080, "S"), IN).verdict == "allow"
            assert dp.run(tcp(node, 32000 + i, peer, 443, "S"), OUT).verdict == "allow"
            ported += [packet(17, peer, 30000 + i, node, 5353), packet(6, peer, 31000 + i, node, 8080),
                       packet(6, node, 32000 + i, peer, 443)]
        assert dp.run(frame(IP(src=NODE4, dst=p4) / ICMP(type=8, id=100 + i)), OUT).verdict == "allow"
        assert dp.run(frame(IPv6(src=NODE6, dst=p6) / ICMPv6EchoRequest(id=100 + i)), OUT).verdict == "allow"
    keys = set(dp.ct_map().keys())
    assert len(keys) == 40 * 8 and {conntrack.key_for(p) for p in ported} <= keys
    bits = seen_map(dp).max_entries.bit_length() - 1
    got = {int.from_bytes(k, sys.byteorder) for k, v in seen_map(dp).items() if v != bytes(4)}
    assert got == {conntrack.seen_index(k, bits) for k in keys}
    # Replies, through those buckets.
    assert dp.run(frame(IPv6(src="2001:db8::a", dst=NODE6) / ICMPv6EchoReply(id=100)), IN).reason == "conntrack"
    assert dp.run(udp(NODE6, 5353, "2001:db8::a", 30000), OUT).reason == "conntrack"


def test_flows_survive_a_new_object_that_reuses_both_maps():
    """What attach does on a policy replacement: the new object shares the
    conntrack table and its pre-filter, so known flows stay known."""
    with load() as old:
        assert old.run(tcp(NODE4, 50001, PEER4, 443, "S"), OUT).reason == "rule-allow"
        reuse = {CT: old.ct_map().fd, CTSEEN: seen_map(old).fd}
        with load(reuse=reuse) as new:
            assert new.run(tcp(PEER4, 443, NODE4, 50001, "SA"), IN).reason == "conntrack"


def test_seed_without_an_object_needs_the_map(dp):
    """A map opened by id has no object to find the pre-filter in."""
    with libbpf.Map.from_id(libbpf.map_info(dp.ct_map().fd)["id"]) as bare:
        flow = packet(17, PEER4, 43000, NODE4, 6000)
        with pytest.raises(ValueError):
            conntrack.seed(bare, flow)
        conntrack.seed(bare, flow, seen_map=seen_map(dp))
    assert dp.run(udp(NODE4, 6000, PEER4, 43000), OUT).reason == "conntrack"


def test_restamp_makes_a_kept_table_seen():
    """A table kept beside a fresh pre-filter (an object from before it, or
    a reload that reused only hep_ct_v1): its flows are unseen until the
    loader stamps their buckets from the entries."""
    with load() as old:
        assert old.run(udp(PEER4, 40100, NODE4, 5353), IN).reason == "rule-allow"
        with load(reuse={CT: old.ct_map().fd}) as new:
            back = udp(NODE4, 5353, PEER4, 40100)
            write_bucket(new, bucket_of(new, packet(17, PEER4, 40100, NODE4, 5353)), long_ago())
            assert new.run(back, OUT).reason == "end-of-tier"
            assert conntrack.restamp(new.ct_map(), seen_map(new)) == 1
            assert new.run(back, OUT).reason == "conntrack"
