"""Packets for the tests, described once, with scapy.

Documentation addresses only (RFC 5737, RFC 3849) and fixed MACs. The
malformed frames are what the XDP parser must judge without crashing or
letting anything through that policy would deny.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

NODE_MAC, CLIENT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
NODE4, CLIENT4 = "192.0.2.1", "198.51.100.7"
NODE6, CLIENT6 = "2001:db8::1", "2001:db8::7"


def eth() -> Ether:
    return Ether(src=CLIENT_MAC, dst=NODE_MAC)


def tcp4(dport: int, **ip) -> bytes:
    return bytes(eth() / IP(src=CLIENT4, dst=NODE4, **ip) / TCP(sport=40000, dport=dport, flags="S"))


def tcp6(dport: int, *ext) -> bytes:
    pkt = IPv6(src=CLIENT6, dst=NODE6)
    for e in ext:
        pkt = pkt / e
    return bytes(eth() / pkt / TCP(sport=40000, dport=dport, flags="S"))


# name -> (frame bytes, expected verdict, expected reason) under a policy
# that allows TCP 22 (failsafe) and denies everything else.
MALFORMED = {
    "arp-is-not-ip": (bytes(eth() / ARP(psrc=CLIENT4, pdst=NODE4)), "allow", "not-ip"),
    "vlan-tagged-is-not-ip": (bytes(eth() / Dot1Q(vlan=7) / IP(src=CLIENT4, dst=NODE4) / TCP(dport=80)),
                              "allow", "not-ip"),
    # (Frames shorter than an Ethernet header never reach XDP, and
    # BPF_PROG_TEST_RUN refuses them: the parser still checks, see parse.bpf.h.)
    "ethernet-only": (bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC, type=0x0800)), "deny", "malformed"),
    "ipv4-truncated-header": (tcp4(22)[:14 + 12], "deny", "malformed"),
    "ipv4-ihl-below-5": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, ihl=4) / TCP(dport=22)), "deny", "malformed"),
    "ipv4-version-6-in-ipv4-frame": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, version=6) / TCP(dport=22)),
                                     "deny", "malformed"),
    "ipv4-total-length-beyond-frame": (tcp4(22, len=1500), "deny", "malformed"),
    "ipv4-total-length-below-header": (tcp4(22, len=19), "deny", "malformed"),
    "ipv4-total-length-cuts-tcp": (tcp4(22, len=30), "deny", "malformed"),
    "ipv4-options-then-allowed-port": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, options=b"\x01" * 8)
                                             / TCP(sport=40000, dport=22)), "allow", "failsafe"),
    "ipv4-options-then-denied-port": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, options=b"\x01" * 40)
                                            / TCP(sport=40000, dport=80)), "deny", "no-profile"),
    "ipv4-first-fragment": (tcp4(22, flags="MF"), "deny", "fragment"),
    "ipv4-later-fragment": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, frag=100, proto=6) / Raw(b"x" * 20)),
                            "deny", "fragment"),
    "ipv4-padding-after-packet": (tcp4(22) + b"\x00" * 20, "allow", "failsafe"),
    "tcp-truncated": (tcp4(22)[:14 + 20 + 10], "deny", "malformed"),
    "tcp-data-offset-below-5": (bytes(eth() / IP(src=CLIENT4, dst=NODE4) / TCP(dport=22, dataofs=3)),
                                "deny", "malformed"),
    "udp-truncated": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, proto=17) / Raw(b"\x00\x35\x00")),
                      "deny", "malformed"),
    "icmp-truncated": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, proto=1) / Raw(b"\x08")), "deny", "malformed"),
    "gre-no-l4-needed": (bytes(eth() / IP(src=CLIENT4, dst=NODE4, proto=47)), "deny", "no-profile"),
    "ipv6-truncated-header": (tcp6(22)[:14 + 30], "deny", "malformed"),
    "ipv6-payload-length-beyond-frame": (bytes(eth() / IPv6(src=CLIENT6, dst=NODE6, plen=400) / TCP(dport=22)),
                                         "deny", "malformed"),
    "ipv6-hop-by-hop-then-allowed-port": (tcp6(22, IPv6ExtHdrHopByHop()), "allow", "failsafe"),
    "ipv6-three-ext-headers-then-denied-port": (
        tcp6(80, IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt()), "deny", "no-profile"),
    "ipv6-three-ext-headers-then-allowed-port": (
        tcp6(22, IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt()), "allow", "failsafe"),
    "ipv6-fragment-header": (tcp6(22, IPv6ExtHdrFragment()), "deny", "fragment"),
    "ipv6-too-many-ext-headers": (tcp6(22, *[IPv6ExtHdrDestOpt() for _ in range(7)]), "deny", "malformed"),
    "ipv6-ext-header-truncated": (tcp6(22, IPv6ExtHdrHopByHop())[:14 + 40 + 4], "deny", "malformed"),
    "ipv6-ext-header-length-beyond-packet": (
        bytes(eth() / IPv6(src=CLIENT6, dst=NODE6) / IPv6ExtHdrDestOpt(len=200) / TCP(dport=22)),
        "deny", "malformed"),
}
