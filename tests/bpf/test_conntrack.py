"""Connection tracking in the real object, through BPF_PROG_TEST_RUN: the
XDP program sees what arrives, the tc program what leaves, and both share
one table.

The policy: a server on TCP 8080 and UDP 5353 may be reached from outside;
the host may open TCP to port 443, UDP to 53 is a failsafe, and ICMP echo
out is allowed; nothing else either way (no profile). Replies pass only
because conntrack knows their flow.
"""

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from hepbpf.compiler import compile_policy
from hepbpf.loader import conntrack
from hepbpf.loader.datapath import load_image
from hepbpf.loader.mapnames import CT_STATS

from ..cases import gnp, hep

pytestmark = pytest.mark.bpf

NODE4, PEER4 = "192.0.2.1", "198.51.100.7"
NODE6, PEER6 = "2001:db8::1", "2001:db8::7"
IN, OUT = 0, 1

POLICY = hep() + gnp("server", """
selector: all()
types: [Ingress, Egress]
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [8080]}
- action: Allow
  protocol: UDP
  destination: {ports: [5353]}
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
""") + gnp("untracked", """
selector: all()
doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress:
- action: Allow
  protocol: TCP
  destination: {ports: [9000]}
""")


def frame(l3) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / l3)


def tcp(src, sport, dst, dport, flags, v6=False):
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    return frame(ip / TCP(sport=sport, dport=dport, flags=flags))


@pytest.fixture()
def dp():
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    with load_image(comp.image, trace=True, local_nets=None, ct_size=4096) as d:
        yield d


def verdicts(dp, steps):
    return [dp.run(data, chain).reason for chain, data in steps]


def ctstats(dp) -> dict:
    return conntrack.stats(dp.obj.map(CT_STATS))


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_inbound_tcp_handshake_data_and_close(dp, v6):
    node, peer = (NODE6, PEER6) if v6 else (NODE4, PEER4)
    c2s = lambda flags: (IN, tcp(peer, 40000, node, 8080, flags, v6))  # noqa: E731
    s2c = lambda flags: (OUT, tcp(node, 8080, peer, 40000, flags, v6))  # noqa: E731
    got = verdicts(dp, [c2s("S"), s2c("SA"), c2s("A"), c2s("PA"), s2c("PA")])
    assert got == ["rule-allow", "conntrack", "conntrack", "conntrack", "conntrack"]
    (entry,) = conntrack.entries(dp.ct_map())
    assert entry.state == "established" and entry.packets == 5
    got = verdicts(dp, [c2s("FA"), s2c("A"), s2c("FA"), c2s("A")])
    assert got == ["conntrack"] * 4
    assert conntrack.entries(dp.ct_map()) == []
    # The flow is gone: a late reply is judged as new, and egress denies it.
    assert verdicts(dp, [s2c("A")]) == ["end-of-tier"]


def test_replies_to_outbound_connections_pass(dp):
    out = (OUT, tcp(NODE4, 50000, PEER4, 443, "S"))
    back = (IN, tcp(PEER4, 443, NODE4, 50000, "SA"))
    assert verdicts(dp, [back]) == ["end-of-tier"]  # before the flow exists
    assert verdicts(dp, [out, back]) == ["rule-allow", "conntrack"]
    assert conntrack.entries(dp.ct_map())[0].state == "established"


def test_rst_removes_the_flow(dp):
    assert verdicts(dp, [(IN, tcp(PEER4, 40001, NODE4, 8080, "S")),
                         (OUT, tcp(NODE4, 8080, PEER4, 40001, "R"))]) == ["rule-allow", "conntrack"]
    assert conntrack.entries(dp.ct_map()) == []


def test_a_syn_on_a_closing_flow_is_judged_again(dp):
    steps = [(IN, tcp(PEER4, 40002, NODE4, 8080, "S")), (OUT, tcp(NODE4, 8080, PEER4, 40002, "SA")),
             (IN, tcp(PEER4, 40002, NODE4, 8080, "FA"))]
    assert verdicts(dp, steps) == ["rule-allow", "conntrack", "conntrack"]
    assert verdicts(dp, [(IN, tcp(PEER4, 40002, NODE4, 8080, "S"))]) == ["rule-allow"]
    assert conntrack.entries(dp.ct_map())[0].state == "syn-sent"


def test_udp_replies_and_failsafe_flows(dp):
    q = (IN, frame(IP(src=PEER4, dst=NODE4) / UDP(sport=5000, dport=5353)))
    a = (OUT, frame(IP(src=NODE4, dst=PEER4) / UDP(sport=5353, dport=5000)))
    dns_q = (OUT, frame(IP(src=NODE4, dst=PEER4) / UDP(sport=33000, dport=53)))
    dns_a = (IN, frame(IP(src=PEER4, dst=NODE4) / UDP(sport=53, dport=33000)))
    assert verdicts(dp, [q, a, dns_q, dns_a]) == ["rule-allow", "conntrack", "failsafe", "conntrack"]
    assert {e.state for e in conntrack.entries(dp.ct_map())} == {"udp"}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_icmp_echo_reply_matches_its_request_only(dp, v6):
    if v6:
        req = (OUT, frame(IPv6(src=NODE6, dst=PEER6) / ICMPv6EchoRequest(id=77)))
        rep = (IN, frame(IPv6(src=PEER6, dst=NODE6) / ICMPv6EchoReply(id=77)))
        other = (IN, frame(IPv6(src=PEER6, dst=NODE6) / ICMPv6EchoReply(id=78)))
    else:
        req = (OUT, frame(IP(src=NODE4, dst=PEER4) / ICMP(type=8, id=77)))
        rep = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=0, id=77)))
        other = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=0, id=78)))
    assert verdicts(dp, [other, req, rep, other]) == ["end-of-tier", "rule-allow", "conntrack", "end-of-tier"]


def test_icmp_errors_about_a_flow_are_related(dp):
    out = (OUT, tcp(NODE4, 50001, PEER4, 443, "S"))
    quote = IPerror(src=NODE4, dst=PEER4) / TCPerror(sport=50001, dport=443, flags="S")
    err = (IN, frame(IP(src="203.0.113.9", dst=NODE4) / ICMP(type=3, code=1) / quote))
    stray = IPerror(src=NODE4, dst=PEER4) / TCPerror(sport=50002, dport=443)
    unrelated = (IN, frame(IP(src="203.0.113.9", dst=NODE4) / ICMP(type=3, code=1) / stray))
    assert verdicts(dp, [err, out, err, unrelated]) == ["end-of-tier", "rule-allow", "conntrack", "end-of-tier"]
    before = ctstats(dp)["related"]
    udp_out = (OUT, frame(IP(src=NODE4, dst=PEER4) / UDP(sport=33001, dport=53)))
    udp_err = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=3, code=3)
                         / IPerror(src=NODE4, dst=PEER4) / UDPerror(sport=33001, dport=53)))
    assert verdicts(dp, [udp_out, udp_err]) == ["failsafe", "conntrack"]
    assert ctstats(dp)["related"] == before + 1


def test_icmpv6_error_about_a_flow_is_related(dp):
    out = (OUT, tcp(NODE6, 50003, PEER6, 443, "S", v6=True))
    err = (IN, frame(IPv6(src="2001:db8::99", dst=NODE6) / ICMPv6DestUnreach(code=1)
                     / IPv6(src=NODE6, dst=PEER6) / TCP(sport=50003, dport=443, flags="S")))
    assert verdicts(dp, [out, err]) == ["rule-allow", "conntrack"]


def test_untracked_allow_creates_no_flow(dp):
    syn = (IN, tcp(PEER4, 40005, NODE4, 9000, "S"))
    synack = (OUT, tcp(NODE4, 9000, PEER4, 40005, "SA"))
    assert verdicts(dp, [syn, synack]) == ["rule-allow", "end-of-tier"]
    assert conntrack.entries(dp.ct_map()) == []


def test_forwarded_ingress_and_its_replies():
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    with load_image(comp.image, trace=True, local_nets=(ipaddress.ip_network(f"{NODE4}/32"),)) as d:
        there = (IN, tcp(PEER4, 40006, "203.0.113.2", 8443, "S"))
        back_fwd = tcp("203.0.113.2", 8443, PEER4, 40006, "SA")
        assert verdicts(d, [there]) == ["forward-allow"]
        assert d.run(back_fwd, OUT, ingress_ifindex=7).reason == "conntrack"


def test_idle_flows_expire():
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    with load_image(comp.image, trace=True, ct_timeouts={"HEP_CT_UDP": 0}) as d:
        q = (IN, frame(IP(src=PEER4, dst=NODE4) / UDP(sport=5001, dport=5353)))
        a = (OUT, frame(IP(src=NODE4, dst=PEER4) / UDP(sport=5353, dport=5001)))
        assert verdicts(d, [q, a]) == ["rule-allow", "end-of-tier"]
        assert ctstats(d)["expired"] == 1 and conntrack.entries(d.ct_map()) == []


def test_ten_thousand_flows_open_and_close_and_the_table_ends_clean(capsys):
    """10,000 TCP connections, each a full handshake, data both ways and a
    FIN/ACK close, alternating which side closes first: every packet after
    the SYN passes by conntrack, and no entry is left."""
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    n = 10_000
    with load_image(comp.image, trace=True, ct_size=n + 1024) as d:
        reasons: dict[str, int] = {}
        for i in range(n):
            sport = 20000 + i  # clear of the failsafe ports, which would decide first
            peer = f"198.51.100.{7 + i % 200}"
            c2s = lambda flags: d.run(tcp(peer, sport, NODE4, 8080, flags), IN)  # noqa: E731
            s2c = lambda flags: d.run(tcp(NODE4, 8080, peer, sport, flags), OUT)  # noqa: E731
            first = c2s("S")
            assert first.reason == "rule-allow", i
            steps = [s2c("SA"), c2s("A"), c2s("PA"), s2c("PA")]
            if i % 2:
                steps += [c2s("FA"), s2c("A"), s2c("FA"), c2s("A")]
            else:
                steps += [s2c("FA"), c2s("FA"), s2c("A")]
            for v in steps:
                reasons[v.reason] = reasons.get(v.reason, 0) + 1
        stats = ctstats(d)
        left = conntrack.entries(d.ct_map())
    assert reasons == {"conntrack": sum(reasons.values())}
    assert stats["created"] == n and stats["closed"] == n and left == []
    with capsys.disabled():
        print(f"\nconntrack: {n} TCP flows opened and closed, {sum(reasons.values())} packets by conntrack, "
              f"table empty; events {stats}")


def test_a_full_table_evicts_and_counts():
    comp = compile_policy([("p.yaml", POLICY)], node="n1", iface="eth1")
    size, n = 256, 2000
    with load_image(comp.image, trace=True, ct_size=size) as d:
        for i in range(n):
            assert d.run(tcp(f"198.51.100.{1 + i % 250}", 1024 + i, NODE4, 8080, "S"), IN).verdict == "allow"
        stats = ctstats(d)
        live = len(conntrack.entries(d.ct_map()))
    assert stats["created"] == n and live <= size
    assert stats["created"] - stats["closed"] - stats["expired"] - live >= n - size


def test_echo_flows_are_keyed_by_code_and_direction(dp):
    """As in Linux: an echo flow is (addresses, id, code), requests go one
    way and replies the other."""
    req = (OUT, frame(IP(src=NODE4, dst=PEER4) / ICMP(type=8, code=0, id=5)))
    other_code = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=0, code=1, id=5)))
    wrong_way = (OUT, frame(IP(src=NODE4, dst=PEER4) / ICMP(type=0, code=0, id=5)))
    peer_request = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=8, code=0, id=5)))
    reply = (IN, frame(IP(src=PEER4, dst=NODE4) / ICMP(type=0, code=0, id=5)))
    assert verdicts(dp, [req, other_code, wrong_way, peer_request, reply]) == \
        ["rule-allow", "end-of-tier", "end-of-tier", "end-of-tier", "conntrack"]
