"""An independent Python reading of a frame, as the XDP parser is specified
(bpf/include/parse.bpf.h's header comment and the README), for the fuzz
test: it decides malformed / fragment / not-ip, else the policy Packet."""

from __future__ import annotations

import ipaddress
import struct

from hepbpf.compiler.packet import Packet

EXT = {0, 43, 60, 51}  # hop-by-hop, routing, destination options, AH
FRAGMENT6 = 44
MAX_EXT = 6
L4_MIN = {6: 20, 17: 8, 136: 8, 132: 12, 1: 4, 58: 4}


def read(frame: bytes) -> str | Packet:
    """'malformed', 'fragment', 'not-ip', or the Packet policy judges."""
    if len(frame) < 14:
        return "malformed"
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800:
        return _ipv4(frame, 14)
    if ethertype == 0x86DD:
        return _ipv6(frame, 14)
    return "not-ip"


def _ipv4(f: bytes, at: int):
    if len(f) < at + 20:
        return "malformed"
    version, ihl = f[at] >> 4, f[at] & 15
    total = struct.unpack_from("!H", f, at + 2)[0]
    if version != 4 or ihl < 5 or total < ihl * 4 or at + total > len(f):
        return "malformed"
    if struct.unpack_from("!H", f, at + 6)[0] & 0x3FFF:
        return "fragment"
    proto = f[at + 9]
    src, dst = ipaddress.IPv4Address(f[at + 12:at + 16]), ipaddress.IPv4Address(f[at + 16:at + 20])
    return _l4(f, at + ihl * 4, at + total, proto, src, dst)


def _ipv6(f: bytes, at: int):
    if len(f) < at + 40 or f[at] >> 4 != 6:
        return "malformed"
    plen = struct.unpack_from("!H", f, at + 4)[0]
    end = at + 40 + plen
    if end > len(f):
        return "malformed"
    nh = f[at + 6]
    src, dst = ipaddress.IPv6Address(f[at + 8:at + 24]), ipaddress.IPv6Address(f[at + 24:at + 40])
    pos = at + 40
    for _ in range(MAX_EXT):
        if nh == FRAGMENT6:
            return "fragment"
        if nh not in EXT:
            break
        if pos + 8 > end:
            return "malformed"
        length = (f[pos + 1] + 2) * 4 if nh == 51 else (f[pos + 1] + 1) * 8
        nh = f[pos]
        if pos + length > end:
            return "malformed"
        pos += length
    if nh in EXT or nh == FRAGMENT6:
        return "malformed"
    return _l4(f, pos, end, nh, src, dst)


def _l4(f: bytes, at: int, end: int, proto: int, src, dst):
    need = L4_MIN.get(proto, 0)
    if at + need > end:
        return "malformed"
    if proto == 6 and f[at + 12] >> 4 < 5:
        return "malformed"
    if proto in (1, 58):
        return Packet(proto, src, dst, icmp_type=f[at], icmp_code=f[at + 1])
    if proto in (6, 17, 136, 132):
        sport, dport = struct.unpack_from("!HH", f, at)
        return Packet(proto, src, dst, sport, dport)
    return Packet(proto, src, dst)
