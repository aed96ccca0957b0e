"""CIDR text -> ``ipaddress`` network, as ``ipaddress.ip_network(text,
strict=False)`` reads it, at a fifth of the cost.

Why: ``ip_network`` takes 5 us for an IPv4 CIDR and 10 us for an IPv6 one
on the 2-core machine the scale target is set on, so a 100,000-CIDR network
set spent 0.6 s here alone. The common spellings (dotted quad, colon hex
with at most one ``::``, a decimal prefix length) are read here; anything
else (netmasks, leading zeros, embedded IPv4, errors) is handed to
``ip_network``, so what is accepted, how, and what is refused never differs
from it (tests/unit/test_compile_speed_shape.py compares the two).
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["network", "network_exact", "networks"]

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?[0-9]))?")
_V6 = re.compile(r"([0-9a-fA-F:]+)(?:/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?")


def _v6_int(addr: str) -> int | None:
    """Colon-hex text (hex digits and colons only: what _V6 matched) as an
    int; None if it is not one ``ipaddress`` would read as such."""
    head, skip, tail = addr.partition("::")
    if "::" in tail:
        return None
    hi = head.split(":") if head else []
    lo = tail.split(":") if tail else []
    if (len(hi) + len(lo) > 7) if skip else (len(hi) != 8):
        return None
    # _V6 lets only hex digits and colons through, so a group is a hextet
    # exactly when it has one to four characters.
    value = 0
    for group in hi:
        if not 0 < len(group) < 5:
            return None
        value = value << 16 | int(group, 16)
    value <<= 16 * (8 - len(hi) - len(lo))
    for group in lo:
        if not 0 < len(group) < 5:
            return None
        value = value << 16 | int(group, 16)
    return value


def _parts(text: str) -> tuple[int, int, int] | None:
    """(family, address as written, prefix length), or None for the
    spellings left to ``ipaddress``."""
    m = _V4.fullmatch(text)
    if m is not None:
        a, b, c, d, plen = m.groups()
        return 4, int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d), 32 if plen is None else int(plen)
    m = _V6.fullmatch(text)
    if m is not None:
        value = _v6_int(m.group(1))
        if value is not None:
            plen = m.group(2)
            return 6, value, 128 if plen is None else int(plen)
    return None


# --- building the objects ----------------------------------------------------
#
# IPv4Network((address, length)) still costs 2 us. The constructor only sets
# network_address, netmask and _prefixlen (and hosts for the two longest
# lengths); _network() sets the same attributes directly. _check() below
# compares its objects with the constructor's at import, attribute by
# attribute, and if a Python release changes the class, the constructor is
# used instead.

_new = object.__new__
_masks = {4: [IPv4Network._make_netmask(n) for n in range(33)],
          6: [IPv6Network._make_netmask(n) for n in range(129)]}
_width = {4: 32, 6: 128}


def _address(fam: int, value: int):
    if fam == 4:
        a = _new(IPv4Address)
        a._ip = value
        return a
    a = _new(IPv6Address)
    a._ip = value
    a._scope_id = None
    return a


def _fast_network(fam: int, value: int, plen: int):
    width = _width[fam]
    netmask, _ = _masks[fam][plen]
    n = _new(IPv4Network if fam == 4 else IPv6Network)
    n.network_address = _address(fam, value & ~((1 << (width - plen)) - 1))
    n.netmask = netmask
    n._prefixlen = plen
    if plen == width - 1:
        n.hosts = n.__iter__
    elif plen == width:
        host = IPv4Address if fam == 4 else IPv6Address
        n.hosts = lambda: [host(value)]
    return n


def _public_network(fam: int, value: int, plen: int):
    return (IPv4Network if fam == 4 else IPv6Network)((value, plen), strict=False)


def _check() -> bool:
    for text in ("192.0.2.0/24", "192.0.2.7/24", "192.0.2.1", "192.0.2.0/31", "0.0.0.0/0",
                 "2001:db8::/32", "2001:db8::1/64", "2001:db8::1", "::/0", "2001:db8::/127"):
        fam, value, plen = _parts(text)
        want, got = ipaddress.ip_network(text, strict=False), _fast_network(fam, value, plen)
        if (type(got) is not type(want) or got != want or hash(got) != hash(want) or str(got) != str(want)
                or vars(got).keys() != vars(want).keys()
                or (want.num_addresses <= 4 and list(got.hosts()) != list(want.hosts()))
                or any(getattr(got, k) != getattr(want, k) for k in vars(want) if k != "hosts")):
            return False
    return True


_build = _fast_network if _check() else _public_network


def network(text: str):
    """``ipaddress.ip_network(text, strict=False)``; ValueError alike."""
    p = _parts(text)
    if p is None:
        return ipaddress.ip_network(text, strict=False)
    return _build(*p)


def network_exact(text: str):
    """(``network(text)``, whether ``text`` names its network address, i.e.
    has no host bits set)."""
    p = _parts(text)
    if p is None:
        net = ipaddress.ip_network(text, strict=False)
        return net, ipaddress.ip_interface(text).ip == net.network_address
    fam, value, plen = p
    return _build(fam, value, plen), not value & ((1 << (_width[fam] - plen)) - 1)


# A network set's list, read in one loop: the dotted-quad CIDRs _V4 takes,
# read by table (_V4's octets and lengths are exactly the canonical decimal
# spellings of 0-255 and 0-32) and built as _fast_network builds them; the
# rest through network().
_OCTETS = {str(n): n for n in range(256)}
_V4_LENGTHS = {str(n): n for n in range(33)}
_V4_NETMASKS = [m for m, _ in _masks[4]]
_V4_KEEP = [(1 << 32) - (1 << (32 - n)) for n in range(33)]  # the network bits, by prefix length


def _one_host(value: int):
    return lambda: [IPv4Address(value)]  # a /32's hosts, as _fast_network sets it


def networks(texts: list[str]) -> list:
    """``[network(t) for t in texts]``, at half the cost for a 100,000-entry
    network set (one call per entry instead of five)."""
    if _build is not _fast_network:
        return [network(t) for t in texts]
    out = []
    append = out.append
    octets, lengths, netmasks, keep, new = _OCTETS, _V4_LENGTHS, _V4_NETMASKS, _V4_KEEP, _new
    for text in texts:
        addr, slash, plen = text.partition("/")
        parts = addr.split(".")
        if len(parts) != 4 or (slash and plen not in lengths):
            append(network(text))
            continue
        a, b, c, d = parts
        if a not in octets or b not in octets or c not in octets or d not in octets:
            append(network(text))
            continue
        value = octets[a] << 24 | octets[b] << 16 | octets[c] << 8 | octets[d]
        plen = lengths[plen] if slash else 32
        address = new(IPv4Address)
        address._ip = value & keep[plen]
        n = new(IPv4Network)
        n.network_address = address
        n.netmask = netmasks[plen]
        n._prefixlen = plen
        if plen >= 31:
            n.hosts = n.__iter__ if plen == 31 else _one_host(value)
        append(n)
    return out
