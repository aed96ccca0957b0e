"""hepbpf.logline renders frames as the kernel's LOG target does.

Golden lines for hand-built frames, one per branch of the kernel's
nf_log_syslog.c format; the shapes the kernel can be made to print are also
checked against the real kernel in tests/netns/test_logline_kernel.py (which
found them byte-identical), the rest (captures cut short, which the kernel
only ever sees inside an ICMP error) follow the same source. Then a fuzz
test: no bytes make log_line raise.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (AH, ARP, ESP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6DestUnreach,
                       ICMPv6EchoRequest, ICMPv6MLQuery, ICMPv6PacketTooBig, ICMPv6ParamProblem,
                       ICMPv6TimeExceeded, IPOption_EOL, IPOption_NOP, IPOption_Router_Alert, IPv6,
                       IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, raw)

from hepbpf.logline import LINE_MAX, log_line

MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0b:01"  # sender, receiver
A4, B4, A6, B6 = "192.0.2.9", "192.0.2.1", "2001:db8::9", "2001:db8::1"
MAC4 = "MAC=02:00:00:00:0b:01:02:00:00:00:0a:01:08:00 "
MAC6 = "MAC=02:00:00:00:0b:01:02:00:00:00:0a:01:86:dd "
HEAD = "calico-packet: IN=eth1 OUT= "  # an ingress line, before MAC=
V4 = "SRC=192.0.2.9 DST=192.0.2.1 "
V6 = "SRC=2001:0db8:0000:0000:0000:0000:0000:0009 DST=2001:0db8:0000:0000:0000:0000:0000:0001 "
V6Q = "SRC=2001:0db8:0000:0000:0000:0000:0000:0001 DST=2001:0db8:0000:0000:0000:0000:0000:0009 "


def eth(payload) -> bytes:
    return raw(Ether(src=MAC_A, dst=MAC_B) / payload)


def ip(**kw) -> IP:
    return IP(src=A4, dst=B4, **kw)


def ip6(**kw) -> IPv6:
    return IPv6(src=A6, dst=B6, **kw)


def quoted4(**kw) -> IP:
    """The header of a packet B sent and an ICMP error quotes back."""
    return IP(src=B4, dst=A4, id=77, **kw)


def icmp_bytes(icmp_type: int, rest: bytes = b"\x00" * 4, code: int = 0) -> bytes:
    return bytes([icmp_type, code, 0, 0]) + rest


# name -> (frame, expected text after HEAD + MAC=...)
INGRESS_V4 = {
    "tcp-syn": (eth(ip(id=52866, flags="DF") / TCP(sport=42962, dport=22, flags="S", window=29200)),
                "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=52866 DF PROTO=TCP SPT=42962 DPT=22 WINDOW=29200 RES=0x00 "
                "SYN URGP=0 "),
    "tcp-every-flag-in-kernel-order": (
        eth(ip() / TCP(sport=1, dport=2, flags=0x1FF, window=0, urgptr=65535)),
        "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=0 RES=0x00 "
        "AE CWR ECE URG ACK PSH RST SYN FIN URGP=65535 "),
    "tcp-reserved-bits": (eth(ip() / TCP(sport=1, dport=2, flags="A", reserved=5)),
                          "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=8192 RES=0x28 ACK "
                          "URGP=0 "),
    "tcp-no-flags": (eth(ip() / TCP(sport=1, dport=2, flags=0)),
                     "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=8192 RES=0x00 URGP=0 "),
    "tos-prec-ce-df-mf": (eth(ip(tos=0xBB, flags="evil+DF+MF", ttl=255, id=65535) / UDP(sport=1, dport=2)),
                          "LEN=28 TOS=0x1A PREC=0xA0 TTL=255 ID=65535 CE DF MF PROTO=UDP SPT=1 DPT=2 LEN=8 "),
    "ip-options-skipped": (eth(ip(options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(),
                                           IPOption_EOL()]) / TCP(sport=1, dport=2, flags="S")),
                           "LEN=48 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=1 DPT=2 WINDOW=8192 RES=0x00 SYN "
                           "URGP=0 "),
    "udp": (eth(ip() / UDP(sport=5353, dport=53) / b"hello"),
            "LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP SPT=5353 DPT=53 LEN=13 "),
    "udplite": (eth(ip(proto=136) / UDP(sport=1000, dport=2000, len=8) / b"xy"),
                "LEN=30 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDPLITE SPT=1000 DPT=2000 LEN=8 "),
    "ah": (eth(ip() / AH(payloadlen=4, spi=0xDEADBEEF, seq=1, icv=b"\x00" * 12)),
           "LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=AH SPI=0xdeadbeef "),
    "esp": (eth(ip() / ESP(spi=0x100, seq=1, data=b"\x00" * 8)),
            "LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ESP SPI=0x100 "),
    "other-protocol": (eth(ip(proto=47) / b"\x00\x00\x08\x00"),
                       "LEN=24 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=47 "),
    # Fragments: the offset in 8-byte units, no transport part after the first.
    "fragment-first": (eth(ip(id=7, flags="MF") / UDP(sport=5, dport=6) / (b"f" * 16)),
                       "LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=7 MF PROTO=UDP SPT=5 DPT=6 LEN=24 "),
    "fragment-later-tcp": (eth(ip(id=7, frag=185, proto=6) / (b"f" * 24)),
                           "LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=7 FRAG:185 PROTO=TCP "),
    "fragment-later-udplite": (eth(ip(id=7, frag=8191, proto=136) / (b"f" * 8)),
                               "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=7 FRAG:8191 PROTO=UDPLITE "),
    "fragment-later-icmp": (eth(ip(id=7, frag=1, flags="MF", proto=1) / (b"f" * 8)),
                            "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=7 MF FRAG:1 PROTO=ICMP "),
    "fragment-later-ah-prints-no-proto": (eth(ip(id=7, frag=2, proto=51) / (b"f" * 16)),
                                          "LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=7 FRAG:2 "),
    "fragment-later-esp": (eth(ip(id=7, frag=2, proto=50) / (b"f" * 16)),
                           "LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=7 FRAG:2 PROTO=ESP "),
    "fragment-later-other": (eth(ip(id=7, frag=2, proto=47) / (b"f" * 16)),
                             "LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=7 FRAG:2 PROTO=47 "),
    # ICMP
    "icmp-echo": (eth(ip() / ICMP(type=8, id=0x1234, seq=7) / b"ping"),
                  "LEN=32 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=8 CODE=0 ID=4660 SEQ=7 "),
    "icmp-echo-reply": (eth(ip() / ICMP(type=0, id=1, seq=2)),
                        "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=0 CODE=0 ID=1 SEQ=2 "),
    "icmp-timestamp-complete-prints-nothing-more": (
        eth(ip(proto=1) / icmp_bytes(13, b"\x00" * 16)),
        "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=13 CODE=0 "),
    "icmp-timestamp-too-short": (eth(ip(proto=1) / icmp_bytes(13)),
                                 "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=13 CODE=0 "
                                 "INCOMPLETE [8 bytes] "),
    "icmp-address-mask-too-short": (eth(ip(proto=1) / icmp_bytes(18, b"\x00" * 7)),
                                    "LEN=31 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=18 CODE=0 "
                                    "INCOMPLETE [11 bytes] "),
    "icmp-router-advert-type-and-code-only": (eth(ip(proto=1) / icmp_bytes(9)),
                                              "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=9 CODE=0 "),
    "icmp-type-above-18": (eth(ip(proto=1) / icmp_bytes(40, code=3)),
                           "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=40 CODE=3 "),
    "icmp-frag-needed-quoting-8-bytes": (
        eth(ip() / ICMP(type=3, code=4, nexthopmtu=1400) / quoted4(flags="DF", proto=6)
            / raw(TCP(sport=22, dport=42962))[:8]),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=4 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 DF PROTO=TCP INCOMPLETE [8 bytes] ] MTU=1400 "),
    "icmp-port-unreachable-quoting-udp": (
        eth(ip() / ICMP(type=3, code=3) / quoted4() / UDP(sport=53, dport=33434)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=UDP SPT=53 DPT=33434 LEN=8 ] "),
    "icmp-source-quench-quoting-full-tcp": (
        eth(ip() / ICMP(type=4, code=0) / quoted4() / TCP(sport=22, dport=1022, flags="PA")),
        "LEN=68 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=4 CODE=0 [SRC=192.0.2.1 DST=192.0.2.9 LEN=40 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=TCP SPT=22 DPT=1022 WINDOW=8192 RES=0x00 ACK PSH URGP=0 ] "),
    "icmp-time-exceeded-quoting-icmp-echo": (
        eth(ip() / ICMP(type=11, code=0) / quoted4() / ICMP(type=8, id=9, seq=1)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=11 CODE=0 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=ICMP TYPE=8 CODE=0 ID=9 SEQ=1 ] "),
    "icmp-redirect-gateway": (
        eth(ip() / ICMP(type=5, code=1, gw="192.0.2.254") / IP(src=B4, dst="203.0.113.5") / UDP(sport=1, dport=2)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=5 CODE=1 GATEWAY=192.0.2.254 [SRC=192.0.2.1 "
        "DST=203.0.113.5 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP SPT=1 DPT=2 LEN=8 ] "),
    "icmp-parameter-problem-quotes-nothing": (
        eth(ip() / ICMP(type=12, code=0, ptr=20) / quoted4() / UDP()),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=12 CODE=0 PARAMETER=20 "),
    "icmp-error-quote-too-short": (eth(ip(proto=1) / icmp_bytes(3, b"\x00" * 4 + raw(quoted4())[:10])),
                                   "LEN=38 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=0 "
                                   "INCOMPLETE [18 bytes] "),
    "icmp-error-quoted-ihl-past-end-wraps": (
        eth(ip() / ICMP(type=3, code=1) / quoted4(ihl=15, proto=6) / (b"q" * 8)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=1 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=TCP INCOMPLETE [4294967264 bytes] ] "),
    "icmp-error-quoting-fragment": (
        eth(ip() / ICMP(type=3, code=3) / quoted4(frag=100, proto=17) / (b"q" * 8)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 FRAG:100 PROTO=UDP ] "),
    "icmp-error-quoting-icmp-error-recurses-once": (
        eth(ip() / ICMP(type=3, code=4, nexthopmtu=1300) / quoted4() / ICMP(type=3, code=4, nexthopmtu=1200)
            / quoted4(proto=6) / (b"q" * 8)),
        "LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=4 [SRC=192.0.2.1 DST=192.0.2.9 LEN=56 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=ICMP TYPE=3 CODE=4 MTU=1200 ] MTU=1300 "),
    "icmp-error-quoting-short-icmp": (
        eth(ip() / ICMP(type=3, code=3) / quoted4(proto=1) / icmp_bytes(5, b"")),
        "LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.1 DST=192.0.2.9 LEN=24 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=ICMP INCOMPLETE [4 bytes] ] "),
    "icmp-error-quoting-cut-ah": (
        eth(ip() / ICMP(type=3, code=2) / quoted4(proto=51) / (b"\x00" * 8)),
        "LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=2 [SRC=192.0.2.1 DST=192.0.2.9 LEN=28 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=AH INCOMPLETE [8 bytes] ] "),
    # The kernel trims the packet to the IP length: Ethernet padding never counts.
    "ethernet-padding-trimmed": (
        eth(ip() / ICMP(type=3, code=3) / quoted4(proto=17) / b"\x00\x35\x82\x9a") + b"\xaa" * 12,
        "LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.0.2.1 DST=192.0.2.9 LEN=24 "
        "TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=UDP INCOMPLETE [4 bytes] ] "),
}

INGRESS_V6 = {
    "tcp-tc-flowlabel": (eth(ip6(tc=0xB8, fl=0x12345, hlim=61) / TCP(sport=4, dport=22, flags="S")),
                         "LEN=60 TC=184 HOPLIMIT=61 FLOWLBL=74565 PROTO=TCP SPT=4 DPT=22 WINDOW=8192 RES=0x00 "
                         "SYN URGP=0 "),
    "udp": (eth(ip6() / UDP(sport=5353, dport=9) / b"hello"),
            "LEN=53 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=5353 DPT=9 LEN=13 "),
    "udplite": (eth(ip6(nh=136) / UDP(sport=1, dport=2, len=8)),
                "LEN=48 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDPLITE SPT=1 DPT=2 LEN=8 "),
    "icmpv6-echo": (eth(ip6() / ICMPv6EchoRequest(id=0x42, seq=3) / b"ping"),
                    "LEN=52 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=66 SEQ=3 "),
    "icmpv6-mld-query": (eth(ip6(hlim=1) / ICMPv6MLQuery()),
                         "LEN=64 TC=0 HOPLIMIT=1 FLOWLBL=0 PROTO=ICMPv6 TYPE=130 CODE=0 "),
    "icmpv6-neighbour-solicitation-type-and-code-only": (eth(ip6(nh=58) / icmp_bytes(135, b"\x00" * 20)),
                                                         "LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 "
                                                         "TYPE=135 CODE=0 "),
    "icmpv6-dest-unreach-quoting-udp": (
        eth(ip6() / ICMPv6DestUnreach(code=4) / IPv6(src=B6, dst=A6) / UDP(sport=9, dport=99)),
        "LEN=96 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=1 CODE=4 [" + V6Q
        + "LEN=48 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=9 DPT=99 LEN=8 ] "),
    "icmpv6-too-big-mtu-is-32-bit": (
        eth(ip6() / ICMPv6PacketTooBig(mtu=0x10000) / IPv6(src=B6, dst=A6) / TCP(flags="A")),
        "LEN=108 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=2 CODE=0 [" + V6Q
        + "LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=20 DPT=80 WINDOW=8192 RES=0x00 ACK URGP=0 ] "
          "MTU=65536 "),
    "icmpv6-param-problem-pointer": (
        eth(ip6() / ICMPv6ParamProblem(code=1, ptr=40) / IPv6(src=B6, dst=A6) / UDP()),
        "LEN=96 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=4 CODE=1 POINTER=00000028 [" + V6Q
        + "LEN=48 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=53 DPT=53 LEN=8 ] "),
    "icmpv6-error-quoting-error-recurses-once": (
        eth(ip6() / ICMPv6TimeExceeded() / IPv6(src=B6, dst=A6) / ICMPv6PacketTooBig(mtu=1280)
            / IPv6(src=A6, dst=B6)),
        "LEN=136 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=3 CODE=0 [" + V6Q
        + "LEN=88 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=2 CODE=0 MTU=1280 ] "),
    "icmpv6-error-truncated-quote": (eth(ip6() / ICMPv6TimeExceeded() / raw(IPv6(src=B6, dst=A6))[:20]),
                                     "LEN=68 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=3 CODE=0 [TRUNCATED] "),
    "icmpv6-too-short": (eth(ip6(nh=58) / b"\x80\x00\x00\x00"),
                         "LEN=44 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 INCOMPLETE [4 bytes] "),
    "other-protocol": (eth(ip6(nh=47) / (b"\x00" * 4)), "LEN=44 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=47 "),
    "no-next-header": (eth(ip6(nh=59)), "LEN=40 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=59 "),
    # Extension headers: stepped over silently, except the fragment header.
    "hop-by-hop-dstopts-tcp": (eth(ip6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(sport=5, dport=6)),
                               "LEN=76 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=5 DPT=6 WINDOW=8192 RES=0x00 SYN "
                               "URGP=0 "),
    "routing-header-udp": (eth(ip6() / IPv6ExtHdrRouting(addresses=[B6], segleft=1) / UDP(dport=9)),
                           "LEN=72 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=53 DPT=9 LEN=8 "),
    "ah-then-tcp": (eth(ip6() / AH(nh=6, payloadlen=4, spi=0x99, seq=1, icv=b"\x00" * 12) / TCP(flags="S")),
                    "LEN=84 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=20 DPT=80 WINDOW=8192 RES=0x00 SYN URGP=0 "),
    "esp-ends-the-line": (eth(ip6(nh=50) / (b"\x00\x00\x01\x00" + b"\x00" * 12)),
                          "LEN=56 TC=0 HOPLIMIT=64 FLOWLBL=0 "),
    "fragment-first": (eth(ip6() / IPv6ExtHdrFragment(m=1, offset=0, id=0xABCDEF) / UDP(dport=9) / (b"f" * 8)),
                       "LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:0 INCOMPLETE ID:00abcdef PROTO=UDP SPT=53 DPT=9 "
                       "LEN=16 "),
    "fragment-later-offset-in-bytes": (eth(ip6() / IPv6ExtHdrFragment(nh=17, offset=100, id=0x1234) / (b"f" * 16)),
                                       "LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:800 ID:00001234 PROTO=UDP "),
    "fragment-later-icmpv6": (eth(ip6() / IPv6ExtHdrFragment(nh=58, offset=1, id=1) / (b"f" * 8)),
                              "LEN=56 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:8 ID:00000001 PROTO=ICMPv6 "),
    "fragment-later-then-dstopts-ends-the-line": (
        eth(ip6() / IPv6ExtHdrFragment(nh=60, offset=10, m=1, id=7) / (b"\x06\x00" + b"\x01\x04" + b"\x00" * 4)),
        "LEN=56 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:80 INCOMPLETE ID:00000007 "),
    "fragment-later-then-ah-walks-on": (
        eth(ip6() / IPv6ExtHdrFragment(nh=51, offset=10, id=7) / AH(nh=6, payloadlen=1, spi=1) / (b"t" * 20)),
        "LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:80 ID:00000007 PROTO=TCP "),
    "two-fragment-headers": (
        eth(ip6() / IPv6ExtHdrFragment(nh=44, offset=0, m=1, id=1) / IPv6ExtHdrFragment(nh=17, offset=2, id=2)
            / (b"u" * 8)),
        "LEN=64 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:0 INCOMPLETE ID:00000001 FRAG:16 ID:00000002 PROTO=UDP "),
    "ethernet-padding-trimmed": (eth(ip6(nh=58) / b"\x80\x00\x00\x00") + b"\x00" * 8,
                                 "LEN=44 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 INCOMPLETE [4 bytes] "),
}


@pytest.mark.parametrize("name", sorted(INGRESS_V4))
def test_ipv4_ingress_line(name: str):
    frame, tail = INGRESS_V4[name]
    assert log_line(frame, in_dev="eth1", out_dev="") == HEAD + MAC4 + V4 + tail


@pytest.mark.parametrize("name", sorted(INGRESS_V6))
def test_ipv6_ingress_line(name: str):
    frame, tail = INGRESS_V6[name]
    assert log_line(frame, in_dev="eth1", out_dev="") == HEAD + MAC6 + V6 + tail


def test_the_calico_documentation_example():
    frame = raw(Ether(dst="08:00:27:d5:4e:57", src="0a:00:27:00:00:00")
                / IP(src="192.0.2.9", dst="192.0.2.1", id=52866, flags="DF", ttl=64)
                / TCP(sport=42962, dport=22, window=29200, flags="S",
                      options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]))
    assert log_line(frame, in_dev="eth1", out_dev="") == (
        "calico-packet: IN=eth1 OUT= MAC=08:00:27:d5:4e:57:0a:00:27:00:00:00:08:00 SRC=192.0.2.9 DST=192.0.2.1 "
        "LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=52866 DF PROTO=TCP SPT=42962 DPT=22 WINDOW=29200 RES=0x00 SYN URGP=0 ")


# --- the line's head: IN=, OUT=, MAC= ---------------------------------------

UDP4 = eth(ip() / UDP(sport=1, dport=2))
UDP4_TAIL = V4 + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP SPT=1 DPT=2 LEN=8 "


def test_egress_has_no_mac():
    assert log_line(UDP4, in_dev="", out_dev="eth1") == "calico-packet: IN= OUT=eth1 " + UDP4_TAIL


def test_forwarded_has_both_devices_and_mac():
    assert log_line(UDP4, in_dev="eth1", out_dev="eth2") == "calico-packet: IN=eth1 OUT=eth2 " + MAC4 + UDP4_TAIL


def test_with_mac_overrides_the_kernel_rule():
    assert log_line(UDP4, in_dev="", out_dev="eth1", with_mac=True) == \
        "calico-packet: IN= OUT=eth1 " + MAC4 + UDP4_TAIL
    assert log_line(UDP4, in_dev="eth1", out_dev="", with_mac=False) == HEAD + UDP4_TAIL


def test_prefix_is_the_callers_and_clipped_as_the_kernel_clips_it():
    assert log_line(UDP4, in_dev="eth1", out_dev="", prefix="") == "IN=eth1 OUT= " + MAC4 + UDP4_TAIL
    assert log_line(UDP4, in_dev="eth1", out_dev="", prefix="drop: ").startswith("drop: IN=eth1 ")
    # nf_log_packet formats the prefix into 128 bytes, NUL included.
    assert log_line(UDP4, in_dev="eth1", out_dev="", prefix="p" * 200).startswith("p" * 127 + "IN=eth1 ")


def test_input_may_be_any_bytes_like():
    want = HEAD + MAC4 + UDP4_TAIL
    assert log_line(bytearray(UDP4), in_dev="eth1", out_dev="") == want
    assert log_line(memoryview(UDP4), in_dev="eth1", out_dev="") == want


def test_vlan_tags_are_gone_as_after_untagging():
    """MAC= shows destination, source and the inner ethertype: the receive
    path removed the tag (or tags) before netfilter ran."""
    single = raw(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=100, prio=3) / ip() / UDP(sport=1, dport=2))
    double = raw(Ether(src=MAC_A, dst=MAC_B) / Dot1AD(vlan=10) / Dot1Q(vlan=100) / ip() / UDP(sport=1, dport=2))
    for frame in (single, double):
        assert log_line(frame, in_dev="eth1.100", out_dev="") == \
            "calico-packet: IN=eth1.100 OUT= " + MAC4 + UDP4_TAIL


def test_arp_line_has_no_mac_and_no_trailing_space():
    request = raw(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc=A4, pdst=B4))
    assert log_line(request, in_dev="eth1", out_dev="") == (
        "calico-packet: IN=eth1 OUT= ARP HTYPE=1 PTYPE=0x0800 OPCODE=1 MACSRC=02:00:00:00:0a:01 IPSRC=192.0.2.9 "
        "MACDST=00:00:00:00:00:00 IPDST=192.0.2.1")
    rarp = raw(Ether(src=MAC_A, dst=MAC_B, type=0x8035) / ARP(op=3, hwsrc=MAC_A, psrc=A4, hwdst=MAC_B, pdst=B4))
    assert log_line(rarp, in_dev="eth1", out_dev="") == (
        "calico-packet: IN=eth1 OUT= ARP HTYPE=1 PTYPE=0x0800 OPCODE=3 MACSRC=02:00:00:00:0a:01 IPSRC=192.0.2.9 "
        "MACDST=02:00:00:00:0b:01 IPDST=192.0.2.1")


def test_arp_payload_only_for_ethernet_and_ipv4():
    frame = raw(Ether(src=MAC_A, dst=MAC_B) / ARP(hwtype=6, op=2))
    assert log_line(frame, in_dev="eth1", out_dev="") == \
        "calico-packet: IN=eth1 OUT= ARP HTYPE=6 PTYPE=0x0800 OPCODE=2"


def test_unknown_ethertype_prints_the_mac_header_even_on_egress():
    frame = raw(Ether(src=MAC_A, dst=MAC_B, type=0x88B5) / b"hepbpf")
    mac = "MAC=02:00:00:00:0b:01:02:00:00:00:0a:01:88:b5 "
    assert log_line(frame, in_dev="eth1", out_dev="") == HEAD + mac
    assert log_line(frame, in_dev="", out_dev="eth1") == "calico-packet: IN= OUT=eth1 " + mac
    assert log_line(frame, in_dev="", out_dev="eth1", with_mac=False) == "calico-packet: IN= OUT=eth1 "


# --- captures cut short -------------------------------------------------------

TCP4 = eth(ip(id=5) / TCP(sport=1, dport=2, flags="S"))
TCP6 = eth(ip6() / TCP(sport=1, dport=2, flags="S"))
IP4_HEAD = V4 + "LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=5 "
IP6_HEAD = V6 + "LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 "

CUT = {
    "shorter-than-ethernet": (TCP4[:10], "MAC=02:00:00:00:0b:01:02:00:00:00 "),
    "nothing-at-all": (b"", "MAC= "),
    "ethernet-header-only": (TCP4[:14], MAC4 + "TRUNCATED"),
    "ipv4-header-cut": (TCP4[:14 + 19], MAC4 + "TRUNCATED"),
    "tcp-header-cut": (TCP4[:14 + 20 + 19], MAC4 + IP4_HEAD + "PROTO=TCP INCOMPLETE [19 bytes] "),
    "tcp-header-absent": (TCP4[:14 + 20], MAC4 + IP4_HEAD + "PROTO=TCP INCOMPLETE [0 bytes] "),
    "ipv4-options-past-the-end": (
        eth(ip(options=[IPOption_Router_Alert()] * 10) / TCP())[:14 + 30],
        MAC4 + V4 + "LEN=80 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP INCOMPLETE [4294967266 bytes] "),
    "udp-header-cut": (UDP4[:14 + 20 + 4], MAC4 + V4 + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP "
                                                       "INCOMPLETE [4 bytes] "),
    "icmp-header-cut": (eth(ip() / ICMP())[:14 + 20 + 7], MAC4 + V4 + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 "
                                                                      "PROTO=ICMP INCOMPLETE [7 bytes] "),
    "ah-header-cut": (eth(ip() / AH(spi=1))[:14 + 20 + 11], MAC4 + V4 + "LEN=32 TOS=0x00 PREC=0x00 TTL=64 ID=1 "
                                                                        "PROTO=AH INCOMPLETE [11 bytes] "),
    "esp-header-cut": (eth(ip() / ESP(spi=1))[:14 + 20 + 7], MAC4 + V4 + "LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=1 "
                                                                         "PROTO=ESP INCOMPLETE [7 bytes] "),
    # hepbpf captures 128 bytes: LEN= is the packet's, the rest what was captured.
    "long-packet-128-byte-capture": (
        eth(ip() / ICMP(type=3, code=4) / quoted4(options=[IPOption_Router_Alert()] * 10) / TCP()
            / (b"x" * 1000))[:128],
        MAC4 + V4 + "LEN=1108 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=ICMP TYPE=3 CODE=4 [SRC=192.0.2.1 "
                    "DST=192.0.2.9 LEN=1080 TOS=0x00 PREC=0x00 TTL=64 ID=77 PROTO=TCP SPT=20 DPT=80 WINDOW=8192 "
                    "RES=0x00 SYN URGP=0 ] MTU=0 "),
    "long-ipv6-packet-128-byte-capture": (
        eth(ip6() / ICMPv6PacketTooBig(mtu=1280) / IPv6(src=B6, dst=A6) / IPv6ExtHdrHopByHop() / TCP()
            / (b"x" * 1000))[:128],
        MAC6 + V6 + "LEN=1116 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=2 CODE=0 [" + V6Q
        + "LEN=1068 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP INCOMPLETE [18 bytes] ] MTU=1280 "),
    "ipv6-header-cut": (TCP6[:14 + 39], MAC6 + "TRUNCATED"),
    "ipv6-tcp-cut": (TCP6[:14 + 40 + 10], MAC6 + IP6_HEAD + "PROTO=TCP INCOMPLETE [10 bytes] "),
    "ipv6-extension-header-cut": (
        eth(ip6() / IPv6ExtHdrHopByHop() / TCP())[:14 + 40 + 1],
        MAC6 + V6 + "LEN=68 TC=0 HOPLIMIT=64 FLOWLBL=0 TRUNCATED"),
    "ipv6-fragment-header-cut": (
        eth(ip6() / IPv6ExtHdrFragment() / TCP())[:14 + 40 + 7],
        MAC6 + V6 + "LEN=68 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:TRUNCATED "),
    # The walk trusts a header's length; the next read is what fails.
    "ipv6-extension-header-length-past-the-end-wraps": (
        eth(ip6() / IPv6ExtHdrDestOpt(len=10) / TCP())[:14 + 40 + 8],
        MAC6 + V6 + "LEN=68 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP INCOMPLETE [4294967216 bytes] "),
    "ipv6-icmpv6-cut": (eth(ip6() / ICMPv6EchoRequest())[:14 + 40 + 5],
                        MAC6 + V6 + "LEN=48 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 INCOMPLETE [5 bytes] "),
    "arp-header-cut": (raw(Ether(src=MAC_A, dst=MAC_B) / ARP())[:14 + 7], "TRUNCATED"),
    "arp-payload-cut": (raw(Ether(src=MAC_A, dst=MAC_B) / ARP(op=1))[:14 + 20],
                        "ARP HTYPE=1 PTYPE=0x0800 OPCODE=1 INCOMPLETE [12 bytes]"),
    "vlan-tag-cut": (raw(Ether(src=MAC_A, dst=MAC_B) / Dot1Q(vlan=5) / ip())[:16],
                     "MAC=02:00:00:00:0b:01:02:00:00:00:0a:01:81:00 "),
}


@pytest.mark.parametrize("name", sorted(CUT))
def test_cut_capture_prints_what_the_kernel_prints_for_a_packet_that_short(name: str):
    frame, tail = CUT[name]
    assert log_line(frame, in_dev="eth1", out_dev="") == HEAD + tail


def test_line_is_cut_where_the_kernel_buffer_ends():
    """nf_log_buf keeps 1016 characters of text: past that the kernel drops the rest."""
    many = raw(IPv6ExtHdrFragment(nh=44, m=1, id=0xFFFFFFFF, offset=8191)) * 40
    frame = eth(ip6(nh=44) / many)  # 40 fragment headers, ~30 characters each
    line = log_line(frame, in_dev="eth1", out_dev="")
    assert len(line) == LINE_MAX
    assert line.startswith(HEAD + MAC6 + V6 + "LEN=360 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:65528 INCOMPLETE ID:ffffffff ")


# --- fuzz: never raises -------------------------------------------------------

ALL_FRAMES = ([f for f, _ in INGRESS_V4.values()] + [f for f, _ in INGRESS_V6.values()]
              + [f for f, _ in CUT.values()] + [UDP4, TCP4, TCP6])


def _check(frame: bytes, **kw) -> None:
    line = log_line(frame, in_dev=kw.get("in_dev", "eth1"), out_dev=kw.get("out_dev", ""))
    assert isinstance(line, str) and line.startswith("calico-packet: IN=")
    assert len(line.encode()) <= LINE_MAX


def test_every_truncation_of_every_frame():
    for frame in ALL_FRAMES:
        for n in range(len(frame) + 1):
            _check(frame[:n])
            _check(frame[:n], in_dev="", out_dev="eth1")


def test_random_byte_flips_of_every_frame():
    rng = random.Random(20240531)  # fixed: a failure reproduces
    for frame in ALL_FRAMES:
        for _ in range(200):
            mutated = bytearray(frame)
            for _ in range(rng.randint(1, 6)):
                if mutated:
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            _check(bytes(mutated[:rng.randint(0, len(mutated))]))


_ETHERTYPES = st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x80\x35", b"\x81\x00", b"\x88\xa8",
                               b"\x88\xb5", b"\x00\x2e"])


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes):
    _check(data)


@settings(max_examples=3000, deadline=None)
@given(_ETHERTYPES, st.lists(_ETHERTYPES, max_size=3), st.binary(max_size=180))
def test_fuzz_known_ethertypes(ethertype: bytes, tags: list[bytes], body: bytes):
    """Random bodies behind the ethertypes (and VLAN tags) the renderer parses."""
    head = bytes(12) + b"".join(t + b"\x00\x05" for t in tags)
    _check(head + ethertype + body)
    # Steer into IP: a plausible version/IHL byte, then random headers.
    if ethertype == b"\x08\x00" and body:
        _check(head + ethertype + bytes([0x40 | (body[0] & 0x0F)]) + body[1:])
