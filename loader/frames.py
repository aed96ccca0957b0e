"""Ethernet frames for BPF_PROG_TEST_RUN, built from a policy Packet.

``explain --kernel`` needs real frames without pulling scapy into the
product; these are plain wire formats (not ABI types). Checksums are left
zero: the XDP program never reads them.
"""

from __future__ import annotations

import struct

from hepbpf.compiler.packet import ICMP, Packet

SRC_MAC = bytes.fromhex("020000000002")
DST_MAC = bytes.fromhex("020000000001")
PAYLOAD = b"hepbpf-explain\x00\x00"


def l4_header(pkt: Packet) -> bytes:
    if pkt.proto == 6:
        # ports, seq, ack, data offset 5 words, SYN, window
        return struct.pack("!HHIIBBHHH", pkt.sport, pkt.dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    if pkt.proto in (17, 136):
        return struct.pack("!HHHH", pkt.sport, pkt.dport, 8 + len(PAYLOAD), 0)
    if pkt.proto == 132:
        return struct.pack("!HHII", pkt.sport, pkt.dport, 0, 0)
    if pkt.proto in ICMP:
        return struct.pack("!BBHI", pkt.icmp_type or 0, pkt.icmp_code or 0, 0, 0)
    return b""


def frame(pkt: Packet) -> bytes:
    payload = l4_header(pkt) + PAYLOAD
    if pkt.family == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, pkt.proto, 0,
                         pkt.src.packed, pkt.dst.packed)
        return DST_MAC + SRC_MAC + b"\x08\x00" + ip + payload
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(payload), pkt.proto, 64, pkt.src.packed, pkt.dst.packed)
    return DST_MAC + SRC_MAC + b"\x86\xdd" + ip6 + payload
