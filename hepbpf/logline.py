"""A captured frame rendered as the kernel's LOG-target line, byte for byte.

Calico users grep and parse the text ``-j LOG --log-prefix "calico-packet: "``
writes to the kernel log, so hepbpf prints the same text for its Log-rule hits
and drops. The format is the one of ``net/netfilter/nf_log_syslog.c`` (Linux
6.x, the logger behind both xt_LOG and nft ``log``) with the default flags: no
TCP sequence numbers, TCP or IP options, UID, MACDECODE, and no skb mark.

What the kernel sees is modelled, not only what it prints:

* ``hdr`` starts at the Ethernet header. The IP stack only ever sees the
  packet after the link layer: VLAN tags are removed first (``MAC=`` then
  shows destination, source and the inner ethertype, as after
  ``skb_vlan_untag``), and the packet is trimmed to the IP length (Ethernet
  padding is not part of it) before any netfilter hook runs. ``MAC=`` is the
  14 bytes of an Ethernet device; a VLAN device over a NIC without VLAN
  transmit offload declares an 18-byte header, and the kernel then prints 4
  bytes of the IP header too: that case is not modelled.
* ``skb->len`` is what the capture holds. Where a header does not fit, the
  kernel's own words for a packet that short are printed (``TRUNCATED``,
  ``INCOMPLETE [N bytes]``), including its unsigned wrap-around when an
  offset lies past the end.
* Fields print as the kernel prints them: ``TOS=``/``PREC=`` in upper-case
  hex, ``RES=`` in lower case, IPv6 addresses in full (``%pI6``), the IPv4
  fragment offset in 8-byte units but the IPv6 one in bytes, the ``AE`` flag
  and the 3-bit ``RES`` of kernels that know AccECN's AE bit (6.6 and 6.18
  do; older ones print no ``AE`` and count that bit in ``RES``). The line is
  cut where the kernel's 1 KiB buffer would cut it.

Pure: no I/O, stdlib only, and no input makes it raise.
"""

from __future__ import annotations

__all__ = ["log_line"]

ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_RARP = 0x0800, 0x86DD, 0x0806, 0x8035
VLAN_TYPES = (0x8100, 0x88A8)  # 802.1Q and 802.1ad: what skb_vlan_untag removes

PREFIX_MAX = 127  # nf_log_packet formats the prefix into char[NF_LOG_PREFIXLEN = 128]
LINE_MAX = 1016  # nf_log_buf holds S_SIZE - 1 = 1018 bytes, 2 of them the KERN_SOH level

# IPv4 (frag_off field) and TCP (byte 13) bits, in the kernel's print order.
IP_CE, IP_DF, IP_MF, IP_OFFSET = 0x8000, 0x4000, 0x2000, 0x1FFF
TCP_FLAGS = ((0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"),
             (0x08, "PSH"), (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN"))

IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 0, 1, 6, 17
IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_ESP, IPPROTO_AH = 43, 44, 50, 51
IPPROTO_ICMPV6, IPPROTO_NONE, IPPROTO_DSTOPTS, IPPROTO_UDPLITE = 58, 59, 60, 136
# nf_ip6_ext_hdr(): the headers the IPv6 walk steps over (NONE ends the walk).
IPV6_EXT = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT,
                      IPPROTO_ESP, IPPROTO_AH, IPPROTO_DSTOPTS})

# The bytes an ICMP message of each type must have before its fields are
# printed (counted from the ICMP header); errors need the quoted IP header.
ICMP_REQUIRED_LEN = {0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28,
                     13: 20, 14: 20, 17: 12, 18: 12}
ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_REDIRECT, ICMP_PARAMETERPROB = 3, 4, 5, 12
ICMP_QUOTES = frozenset({3, 4, 5, 11})  # dest-unreach, source-quench, redirect, time-exceeded
ICMPV6_ECHO = frozenset({128, 129})
ICMPV6_PKT_TOOBIG, ICMPV6_PARAMPROB = 2, 4
ICMPV6_QUOTES = frozenset({1, 2, 3, 4})  # dest-unreach, too-big, time-exceeded, param-problem


def log_line(hdr: bytes, *, in_dev: str, out_dev: str, prefix: str = "calico-packet: ",
             with_mac: bool | None = None) -> str:
    """The text the kernel's LOG target (no --log-tcp-sequence/--log-tcp-options/--log-ip-options/--log-uid flags, no skb mark)
    prints for this frame, without the syslog/kmsg header. hdr starts at the Ethernet header.
    with_mac None: MAC= is printed iff in_dev is non-empty (as the kernel: only with an input device).

    That is the rule for IPv4 and IPv6 frames. For the other ethertypes None
    also follows the kernel: ARP lines never carry MAC=, lines of unknown
    ethertypes always do. True or False forces it either way.
    """
    frame = bytes(hdr)
    mac, ethertype, l3 = _link_layer(frame)
    out = [_clip_prefix(prefix), f"IN={in_dev} OUT={out_dev} "]
    if with_mac is None:
        known_ip = ethertype in (ETH_P_IP, ETH_P_IPV6)
        with_mac = bool(in_dev) if known_ip else ethertype not in (ETH_P_ARP, ETH_P_RARP)
    if with_mac:
        out.append("MAC=" + ":".join(f"{b:02x}" for b in mac) + " ")
    if ethertype == ETH_P_IP:
        _ipv4(out, _Packet(l3, _ipv4_length(l3)), 0)
    elif ethertype == ETH_P_IPV6:
        _ipv6(out, _Packet(l3, _ipv6_length(l3)), 0, recurse=True)
    elif ethertype in (ETH_P_ARP, ETH_P_RARP):
        _arp(out, _Packet(l3, len(l3)))
    return _clip_line("".join(out))


class _Packet:
    """The network-layer bytes the kernel holds (skb->data from the IP header on):
    ``get`` answers as skb_header_pointer does, None when [off, off+n) is not all there."""

    __slots__ = ("data", "len")

    def __init__(self, data: bytes, length: int):
        self.len = length
        self.data = data[:length]

    def get(self, off: int, n: int) -> bytes | None:
        return self.data[off:off + n] if 0 <= off and off + n <= self.len else None

    def rest(self, off: int) -> int:
        """skb->len - off as the kernel's unsigned int (it wraps when off is past the end)."""
        return (self.len - off) & 0xFFFFFFFF


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 2], "big")


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "big")


def _link_layer(frame: bytes) -> tuple[bytes, int | None, bytes]:
    """(the MAC header the kernel prints, the ethertype it dispatches on, the
    bytes after the link layer). VLAN tags are stepped over the way the
    receive path untags them; a frame cut inside the link header has no
    ethertype (the kernel never sees such a frame; it prints as unknown)."""
    if len(frame) < ETH_HLEN:
        return frame, None, b""
    ethertype, off = _u16(frame, 12), ETH_HLEN
    while ethertype in VLAN_TYPES:  # bounded: off grows by 4 until the frame ends
        if off + 4 > len(frame):
            return frame[:ETH_HLEN], None, b""
        ethertype, off = _u16(frame, off + 2), off + 4
    return frame[:12] + ethertype.to_bytes(2, "big"), ethertype, frame[off:]


def _ipv4_length(l3: bytes) -> int:
    """ip_rcv trims the packet to the IP total length (dropping Ethernet
    padding) before any hook; a length it would reject leaves the capture as is."""
    if len(l3) >= 20:
        tot_len, hlen = _u16(l3, 2), (l3[0] & 0x0F) * 4
        if hlen <= tot_len < len(l3):
            return tot_len
    return len(l3)


def _ipv6_length(l3: bytes) -> int:
    """ipv6_rcv trims to 40 + payload length likewise (0 is a jumbogram: not trimmed)."""
    if len(l3) >= 40:
        payload = _u16(l3, 4)
        if payload and 40 + payload < len(l3):
            return 40 + payload
    return len(l3)


def _clip_prefix(prefix: str) -> str:
    return prefix.encode("utf-8", "surrogateescape")[:PREFIX_MAX].decode("utf-8", "ignore")


def _clip_line(line: str) -> str:
    raw = line.encode("utf-8", "surrogateescape")
    return line if len(raw) <= LINE_MAX else raw[:LINE_MAX].decode("utf-8", "ignore")


def _ipv4_addr(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _ipv6_addr(b: bytes) -> str:
    # %pI6: all eight groups, zero-padded, never compressed.
    return ":".join(f"{_u16(b, i):04x}" for i in range(0, 16, 2))


def _mac_addr(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _ipv4(out: list[str], pkt: _Packet, off: int) -> None:
    """dump_ipv4_packet: the IPv4 header, then the transport part. off is
    the IP header's offset: 0 for the packet, past the ICMP header for the
    packet an ICMP error quotes (the only recursion the kernel allows)."""
    ih = pkt.get(off, 20)
    if ih is None:
        out.append("TRUNCATED")
        return
    tos, frag_off, proto = ih[1], _u16(ih, 6), ih[9]
    out.append(f"SRC={_ipv4_addr(ih[12:16])} DST={_ipv4_addr(ih[16:20])} ")
    out.append(f"LEN={_u16(ih, 2)} TOS=0x{tos & 0x1E:02X} PREC=0x{tos & 0xE0:02X} "
               f"TTL={ih[8]} ID={_u16(ih, 4)} ")
    for bit, name in ((IP_CE, "CE"), (IP_DF, "DF"), (IP_MF, "MF")):
        if frag_off & bit:
            out.append(name + " ")
    fragment = frag_off & IP_OFFSET
    if fragment:
        out.append(f"FRAG:{fragment} ")  # in 8-byte units, as on the wire
    # Options are skipped, not printed: the transport header is at ihl * 4,
    # which the kernel takes as it stands (a quoted header is not validated).
    l4 = off + (ih[0] & 0x0F) * 4
    if proto == IPPROTO_TCP:
        _tcp(out, pkt, l4, fragment)
    elif proto in (IPPROTO_UDP, IPPROTO_UDPLITE):
        _udp(out, pkt, l4, fragment, proto)
    elif proto == IPPROTO_ICMP:
        _icmp(out, pkt, l4, fragment, quoted=off != 0)
    elif proto == IPPROTO_AH:
        # The kernel tests for a fragment before it names AH: a later
        # fragment of AH prints no PROTO= at all.
        if not fragment:
            out.append("PROTO=AH ")
            _spi(out, pkt, l4, 12, 4)
    elif proto == IPPROTO_ESP:
        out.append("PROTO=ESP ")
        if not fragment:
            _spi(out, pkt, l4, 8, 0)
    else:
        out.append(f"PROTO={proto} ")


def _spi(out: list[str], pkt: _Packet, l4: int, size: int, at: int) -> None:
    h = pkt.get(l4, size)
    out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] " if h is None else f"SPI=0x{_u32(h, at):x} ")


def _tcp(out: list[str], pkt: _Packet, l4: int, fragment: int) -> None:
    out.append("PROTO=TCP ")
    if fragment:
        return
    th = pkt.get(l4, 20)
    if th is None:
        out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] ")
        return
    out.append(f"SPT={_u16(th, 0)} DPT={_u16(th, 2)} WINDOW={_u16(th, 14)} ")
    # Byte 12 is doff:4, three reserved bits, AE: the kernel masks the flag
    # word with 0x0E000000 and shifts it right by 22.
    out.append(f"RES=0x{(th[12] & 0x0E) << 2:02x} ")
    if th[12] & 0x01:
        out.append("AE ")
    out.extend(name + " " for bit, name in TCP_FLAGS if th[13] & bit)
    out.append(f"URGP={_u16(th, 18)} ")


def _udp(out: list[str], pkt: _Packet, l4: int, fragment: int, proto: int) -> None:
    out.append("PROTO=UDP " if proto == IPPROTO_UDP else "PROTO=UDPLITE ")
    if fragment:
        return
    uh = pkt.get(l4, 8)
    if uh is None:
        out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] ")
        return
    out.append(f"SPT={_u16(uh, 0)} DPT={_u16(uh, 2)} LEN={_u16(uh, 4)} ")


def _icmp(out: list[str], pkt: _Packet, l4: int, fragment: int, quoted: bool) -> None:
    out.append("PROTO=ICMP ")
    if fragment:
        return
    ich = pkt.get(l4, 8)
    if ich is None:
        out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] ")
        return
    itype, code = ich[0], ich[1]
    out.append(f"TYPE={itype} CODE={code} ")
    if pkt.rest(l4) < ICMP_REQUIRED_LEN.get(itype, 0):
        out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] ")
        return
    if itype in (0, 8):
        out.append(f"ID={_u16(ich, 4)} SEQ={_u16(ich, 6)} ")
    elif itype == ICMP_PARAMETERPROB:
        out.append(f"PARAMETER={ich[4]} ")  # no quoted packet for this one in IPv4
    elif itype in ICMP_QUOTES:
        if itype == ICMP_REDIRECT:
            out.append(f"GATEWAY={_ipv4_addr(ich[4:8])} ")
        if not quoted:  # one level only: an error quoting an error shows no second [..]
            out.append("[")
            _ipv4(out, pkt, l4 + 8)
            out.append("] ")
        if itype == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED:
            out.append(f"MTU={_u16(ich, 6)} ")


def _ipv6(out: list[str], pkt: _Packet, off: int, recurse: bool) -> None:
    """dump_ipv6_packet: the fixed header, the extension-header walk, then the
    transport part. recurse is False inside the packet an ICMPv6 error quotes."""
    ih = pkt.get(off, 40)
    if ih is None:
        out.append("TRUNCATED")
        return
    word0 = _u32(ih, 0)
    out.append(f"SRC={_ipv6_addr(ih[8:24])} DST={_ipv6_addr(ih[24:40])} ")
    out.append(f"LEN={_u16(ih, 4) + 40} TC={(word0 >> 20) & 0xFF} HOPLIMIT={ih[7]} "
               f"FLOWLBL={word0 & 0xFFFFF} ")
    walked = _ipv6_ext_walk(out, pkt, off + 40, ih[6])
    if walked is None:
        return
    nexthdr, ptr, fragment = walked
    if nexthdr == IPPROTO_TCP:
        _tcp(out, pkt, ptr, fragment)
    elif nexthdr in (IPPROTO_UDP, IPPROTO_UDPLITE):
        _udp(out, pkt, ptr, fragment, nexthdr)
    elif nexthdr == IPPROTO_ICMPV6:
        _icmpv6(out, pkt, ptr, fragment, recurse)
    else:
        out.append(f"PROTO={nexthdr} ")


def _ipv6_ext_walk(out: list[str], pkt: _Packet, ptr: int, nexthdr: int) -> tuple[int, int, int] | None:
    """Step over extension headers as the kernel does without --log-ip-options:
    only the fragment header prints anything. Returns (upper protocol, its
    offset, later-fragment flag), or None where the kernel stops the line
    (a cut header, ESP, or options after a later fragment's header).
    Bounded: every step advances ptr by 8 bytes or more until get() fails."""
    fragment = 0
    while nexthdr in IPV6_EXT:
        hp = pkt.get(ptr, 2)
        if hp is None:
            out.append("TRUNCATED")
            return None
        if nexthdr == IPPROTO_FRAGMENT:
            out.append("FRAG:")
            fh = pkt.get(ptr, 8)
            if fh is None:
                out.append("TRUNCATED ")
                return None
            frag_off = _u16(fh, 2)
            out.append(f"{frag_off & 0xFFF8} ")  # the offset in bytes, unlike IPv4
            if frag_off & 0x0001:
                out.append("INCOMPLETE ")  # the M (more fragments) flag
            out.append(f"ID:{_u32(fh, 4):08x} ")
            fragment = fragment or frag_off & 0xFFF8
            hdrlen = 8
        elif nexthdr == IPPROTO_ESP:
            return None
        elif nexthdr == IPPROTO_AH:
            hdrlen = (hp[1] + 2) * 4
        else:  # hop-by-hop, routing, destination options
            if fragment:
                return None
            hdrlen = (hp[1] + 1) * 8
        nexthdr, ptr = hp[0], ptr + hdrlen
    return nexthdr, ptr, fragment


def _icmpv6(out: list[str], pkt: _Packet, l4: int, fragment: int, recurse: bool) -> None:
    out.append("PROTO=ICMPv6 ")
    if fragment:
        return
    ic = pkt.get(l4, 8)
    if ic is None:
        out.append(f"INCOMPLETE [{pkt.rest(l4)} bytes] ")
        return
    itype = ic[0]
    out.append(f"TYPE={itype} CODE={ic[1]} ")
    if itype in ICMPV6_ECHO:
        out.append(f"ID={_u16(ic, 4)} SEQ={_u16(ic, 6)} ")
    elif itype in ICMPV6_QUOTES:
        if itype == ICMPV6_PARAMPROB:
            out.append(f"POINTER={_u32(ic, 4):08x} ")
        if recurse:
            out.append("[")
            _ipv6(out, pkt, l4 + 8, recurse=False)
            out.append("] ")
        if itype == ICMPV6_PKT_TOOBIG:
            out.append(f"MTU={_u32(ic, 4)} ")


def _arp(out: list[str], pkt: _Packet) -> None:
    """dump_arp_packet. Unlike the IP lines this one has no trailing space."""
    ah = pkt.get(0, 8)
    if ah is None:
        out.append("TRUNCATED")
        return
    hrd, pro, hln, pln, op = _u16(ah, 0), _u16(ah, 2), ah[4], ah[5], _u16(ah, 6)
    out.append(f"ARP HTYPE={hrd} PTYPE=0x{pro:04x} OPCODE={op}")
    if hrd != 1 or hln != 6 or pln != 4:  # only Ethernet/IPv4 payloads are decoded
        return
    ap = pkt.get(8, 20)
    if ap is None:
        out.append(f" INCOMPLETE [{pkt.len - 8} bytes]")
        return
    out.append(f" MACSRC={_mac_addr(ap[0:6])} IPSRC={_ipv4_addr(ap[6:10])} "
               f"MACDST={_mac_addr(ap[10:16])} IPDST={_ipv4_addr(ap[16:20])}")
