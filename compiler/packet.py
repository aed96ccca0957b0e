"""Packets as policy sees them, and the SPEC syntax of ``hepbpf explain``.

    tcp 198.51.100.7:40000 -> 192.0.2.1:22
    udp [2001:db8::5]:53 -> [2001:db8::1]:53
    icmp 198.51.100.7 -> 192.0.2.1 type 8 code 0
    proto 47 198.51.100.7 -> 192.0.2.1

``icmp`` between IPv6 addresses means ICMPv6 (``icmp6`` and ``icmpv6`` are
accepted too). Ports are required for tcp, udp and sctp.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .ir import IPAddress

PROTO_BY_NAME = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "icmp6": 58, "icmpv6": 58}
PORTED = frozenset({6, 17, 132, 136})  # protocols whose header starts with two ports
ICMP = frozenset({1, 58})
ECHO_TYPES = {1: (8, 0), 58: (128, 129)}  # request, reply


@dataclass(frozen=True, slots=True)
class Packet:
    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int = 0
    dport: int = 0
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def family(self) -> int:
        return self.src.version

    @property
    def trackable(self) -> bool:
        """Whether conntrack can know this packet's flow: any protocol but
        ICMP, whose echo requests and replies only (errors are *related*
        to a flow, never part of one)."""
        if self.proto not in ICMP:
            return True
        return self.icmp_type in ECHO_TYPES[self.proto]

    def __str__(self) -> str:
        name = {v: k for k, v in PROTO_BY_NAME.items() if k not in ("icmpv6",)}.get(self.proto)
        head = name if name else f"proto {self.proto}"
        if self.proto in ICMP:
            head = "icmp"
        def ep(a, port):
            addr = f"[{a}]" if a.version == 6 else str(a)
            return f"{addr}:{port}" if self.proto in PORTED else (str(a))
        s = f"{head} {ep(self.src, self.sport)} -> {ep(self.dst, self.dport)}"
        if self.proto in ICMP and self.icmp_type is not None:
            s += f" type {self.icmp_type} code {self.icmp_code or 0}"
        return s


class SpecError(ValueError):
    pass


_EP = r"(?:\[(?P<{n}6>[0-9a-fA-F:.]+)\]|(?P<{n}4>[0-9.]+)|(?P<{n}x>[0-9a-fA-F:]+))(?::(?P<{n}port>[0-9]+))?"
_SPEC = re.compile(
    r"^\s*(?:proto\s+(?P<num>[0-9]+)|(?P<name>[a-zA-Z0-9]+))\s+"
    + _EP.format(n="s") + r"\s*->\s*" + _EP.format(n="d")
    + r"(?:\s+type\s+(?P<type>[0-9]+)(?:\s+code\s+(?P<code>[0-9]+))?)?\s*$"
)


def parse_spec(text: str) -> Packet:
    m = _SPEC.match(text)
    if not m:
        raise SpecError(f"cannot read packet {text!r}: expected e.g. 'tcp 198.51.100.7:40000 -> 192.0.2.1:22'")
    if m.group("num"):
        proto = int(m.group("num"))
        if not 0 <= proto <= 255:
            raise SpecError(f"protocol {proto} out of range 0-255")
    else:
        name = m.group("name").lower()
        if name not in PROTO_BY_NAME:
            raise SpecError(f"unknown protocol {m.group('name')!r} (use tcp, udp, sctp, icmp, icmp6 or proto N)")
        proto = PROTO_BY_NAME[name]
    addrs, ports = [], []
    for side in "sd":
        raw = m.group(f"{side}6") or m.group(f"{side}4") or m.group(f"{side}x")
        try:
            addrs.append(ipaddress.ip_address(raw))
        except ValueError:
            raise SpecError(f"not an IP address: {raw!r}") from None
        port = m.group(f"{side}port")
        ports.append(None if port is None else int(port))
    if addrs[0].version != addrs[1].version:
        raise SpecError("source and destination are of different IP families")
    if proto == 1 and addrs[0].version == 6:
        proto = 58
    elif proto == 58 and addrs[0].version == 4:
        raise SpecError("icmp6 needs IPv6 addresses")
    if proto in PORTED:
        if ports[0] is None or ports[1] is None:
            raise SpecError(f"{text!r}: tcp, udp and sctp packets need ports (addr:port, [v6]:port)")
        for p in ports:
            if not 0 <= p <= 65535:
                raise SpecError(f"port {p} out of range 0-65535")
        return Packet(proto, addrs[0], addrs[1], ports[0], ports[1])
    if ports[0] is not None or ports[1] is not None:
        raise SpecError(f"{text!r}: only tcp, udp and sctp packets have ports")
    if proto in ICMP:
        t = int(m.group("type")) if m.group("type") else 8 if proto == 1 else 128
        c = int(m.group("code")) if m.group("code") else 0
        if t > 255 or c > 255:
            raise SpecError("ICMP type and code are 0-255")
        return Packet(proto, addrs[0], addrs[1], icmp_type=t, icmp_code=c)
    if m.group("type"):
        raise SpecError("type/code only apply to icmp packets")
    return Packet(proto, addrs[0], addrs[1])
